//! The API for the portal's own apps: `POST /oauth/device_authorization` and `POST /oauth/token`
//! (RFC 8628, RFC 6749 errors as JSON), the `/device` pages where a signed-in person approves a
//! code, and `GET /api/v1/me` behind a bearer token (RFC 6750 errors with `WWW-Authenticate`).
//! The rules are in [`crate::oauth`].

use handoff_web::see_other;
use poem::http::{header, HeaderValue, StatusCode};
use poem::web::{Data, Form};
use poem::{handler, Request, Response};
use serde::Deserialize;

use super::{current_user, pages, AppError, AppState, State};
use crate::oauth::{
    normalize_user_code, show_user_code, BearerError, OAuthError, Tokens, DEVICE_GRANT,
};
use crate::throttle::{self, Attempt};

/// What a request body that is not a form is told.
const FORM_BODY: &str = "the body must be application/x-www-form-urlencoded";

/// A JSON answer that no cache keeps.
fn json(status: StatusCode, body: &serde_json::Value) -> Response {
    handoff_web::respond::json(status, body.to_string())
}

/// An OAuth error as JSON (RFC 6749 §5.2): 400, or 503 when the database is down.
fn oauth_error(e: &OAuthError) -> Response {
    let status = match e {
        OAuthError::Db(_) => StatusCode::SERVICE_UNAVAILABLE,
        OAuthError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::BAD_REQUEST,
    };
    if status.is_server_error() {
        tracing::error!(error = %e, "oauth request failed");
    }
    let mut body = serde_json::json!({ "error": e.code() });
    if let OAuthError::InvalidRequest(why) = e {
        body["error_description"] = (*why).into();
    }
    json(status, &body)
}

#[derive(Debug, Deserialize)]
pub(super) struct DeviceForm {
    #[serde(default)]
    client_id: String,
    #[serde(default)]
    scope: String,
}

#[handler]
pub(super) async fn device_authorization(
    Data(state): Data<&State>,
    form: poem::Result<Form<DeviceForm>>,
) -> Response {
    let Ok(Form(form)) = form else {
        return oauth_error(&OAuthError::InvalidRequest(FORM_BODY));
    };
    if form.client_id.is_empty() {
        return oauth_error(&OAuthError::InvalidRequest("client_id is required"));
    }
    match state.oauth.start_device(&form.client_id, &form.scope).await {
        Ok(start) => {
            let base = state.config.public_url.as_str().trim_end_matches('/');
            let complete = format!("{base}/device?user_code={}", start.user_code);
            json(
                StatusCode::OK,
                &serde_json::json!({
                    "device_code": start.device_code,
                    "user_code": start.user_code,
                    "verification_uri": format!("{base}/device"),
                    "verification_uri_complete": complete,
                    "expires_in": start.expires_in,
                    "interval": start.interval,
                }),
            )
        }
        Err(e) => oauth_error(&e),
    }
}

#[derive(Deserialize)]
pub(super) struct TokenForm {
    #[serde(default)]
    grant_type: String,
    #[serde(default)]
    client_id: String,
    #[serde(default)]
    device_code: String,
    #[serde(default)]
    refresh_token: String,
}

handoff_web::redacted_debug!(TokenForm: grant_type, client_id);

fn tokens(t: &Tokens) -> Response {
    json(
        StatusCode::OK,
        &serde_json::json!({
            "access_token": t.access_token,
            "token_type": "Bearer",
            "expires_in": t.expires_in,
            "refresh_token": t.refresh_token,
            "scope": t.scope,
        }),
    )
}

#[handler]
pub(super) async fn token(
    Data(state): Data<&State>,
    form: poem::Result<Form<TokenForm>>,
) -> Response {
    let Ok(Form(form)) = form else {
        return oauth_error(&OAuthError::InvalidRequest(FORM_BODY));
    };
    if form.client_id.is_empty() {
        return oauth_error(&OAuthError::InvalidRequest("client_id is required"));
    }
    let outcome = match form.grant_type.as_str() {
        DEVICE_GRANT if form.device_code.is_empty() => {
            Err(OAuthError::InvalidRequest("device_code is required"))
        }
        DEVICE_GRANT => state.oauth.token_for_device(&form.client_id, &form.device_code).await,
        "refresh_token" if form.refresh_token.is_empty() => {
            Err(OAuthError::InvalidRequest("refresh_token is required"))
        }
        "refresh_token" => state.oauth.refresh(&form.client_id, &form.refresh_token).await,
        "" => Err(OAuthError::InvalidRequest("grant_type is required")),
        _ => Err(OAuthError::UnsupportedGrantType),
    };
    match outcome {
        Ok(t) => tokens(&t),
        Err(e) => oauth_error(&e),
    }
}

/// The sign-in page, coming back to this request's path.
fn sign_in_first(req: &Request) -> Response {
    let here = req.uri().path_and_query().map_or("/device", |p| p.as_str());
    let next: String = url::form_urlencoded::byte_serialize(here.as_bytes()).collect();
    see_other(&format!("/login?next={next}"))
}

#[handler]
pub(super) async fn device_page(
    req: &Request,
    Data(state): Data<&State>,
) -> Result<Response, AppError> {
    let Some((user, hash)) = current_user(state, req).await? else {
        return Ok(sign_in_first(req));
    };
    let query = req.uri().query().unwrap_or("");
    let typed = url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "user_code")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    let code = normalize_user_code(&typed).map(|c| show_user_code(&c)).unwrap_or_default();
    let csrf = state.csrf.token("session", hash.as_bytes());
    Ok(pages::html_response(StatusCode::OK, pages::device_page(&user, &csrf, &code, None)))
}

#[derive(Debug, Deserialize)]
pub(super) struct CodeForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    user_code: String,
    #[serde(default)]
    decision: String,
}

/// The signed-in user of a `/device` form, its anti-forgery token checked.
async fn device_user(
    state: &AppState,
    req: &Request,
    csrf: &str,
) -> Result<Result<(crate::db::User, String), Response>, AppError> {
    let Some((user, hash)) = current_user(state, req).await? else {
        return Ok(Err(see_other("/login?next=%2Fdevice")));
    };
    if !state.csrf.check("session", hash.as_bytes(), csrf) {
        return Err(AppError::Csrf);
    }
    Ok(Ok((user, state.csrf.token("session", hash.as_bytes()))))
}

/// What wrong codes count against: the signed-in user and the client address, as failed
/// sign-ins do (guessing codes is throttled like guessing passwords).
fn code_keys(state: &AppState, req: &Request, user: &crate::db::User) -> Attempt {
    let client = state.config.trusted_proxies.client_ip(req);
    Attempt::new(format!("device:{}", user.id), client)
}

#[handler]
pub(super) async fn device_code(
    req: &Request,
    Data(state): Data<&State>,
    Form(form): Form<CodeForm>,
) -> Result<Response, AppError> {
    let (user, csrf) = match device_user(state, req, &form.csrf).await? {
        Ok(found) => found,
        Err(to_login) => return Ok(to_login),
    };
    let keys = code_keys(state, req, &user);
    let now = state.config.clock.now();
    if let Err(wait) = throttle::check(&state.db, &keys, now).await? {
        let mut resp = pages::html_response(
            StatusCode::TOO_MANY_REQUESTS,
            pages::device_page(
                &user,
                &csrf,
                "",
                Some(&format!("Too many wrong codes. Wait {wait} seconds, then try again.")),
            ),
        );
        resp.headers_mut().insert(header::RETRY_AFTER, wait.into());
        return Ok(resp);
    }
    match state.oauth.pending(&form.user_code).await? {
        Some((client, scope)) => {
            let code = normalize_user_code(&form.user_code)
                .map(|c| show_user_code(&c))
                .unwrap_or_default();
            Ok(pages::html_response(
                StatusCode::OK,
                pages::device_consent(&user, &csrf, &client, &scope, &code),
            ))
        }
        None => {
            throttle::failure(&state.db, &keys, now).await?;
            tracing::warn!(event = "device.wrong_code", sub = %user.id, "a device code that does not work");
            Ok(pages::html_response(
                StatusCode::BAD_REQUEST,
                pages::device_page(
                    &user,
                    &csrf,
                    "",
                    Some("That code does not work. Check it, or start again in the app: codes work for 10 minutes."),
                ),
            ))
        }
    }
}

#[handler]
pub(super) async fn device_decide(
    req: &Request,
    Data(state): Data<&State>,
    Form(form): Form<CodeForm>,
) -> Result<Response, AppError> {
    let (user, _) = match device_user(state, req, &form.csrf).await? {
        Ok(found) => found,
        Err(to_login) => return Ok(to_login),
    };
    let approve = match form.decision.as_str() {
        "approve" => true,
        "deny" => false,
        _ => return Err(AppError::BadRequest("Choose approve or deny".into())),
    };
    // The decision names the code again: it is throttled like the code form.
    let keys = code_keys(state, req, &user);
    let now = state.config.clock.now();
    if let Err(wait) = throttle::check(&state.db, &keys, now).await? {
        return Err(AppError::Throttled(wait));
    }
    if !state.oauth.decide(&form.user_code, &user, approve).await? {
        throttle::failure(&state.db, &keys, now).await?;
        return Err(AppError::BadRequest("That code does not work any more".into()));
    }
    let (title, text) = if approve {
        ("App approved", "You can go back to the app: it is signed in as you now.")
    } else {
        ("App denied", "The app was not given access. You can close this page.")
    };
    Ok(pages::html_response(StatusCode::OK, pages::message_page(title, text)))
}

/// A bearer-token failure with its `WWW-Authenticate` challenge (RFC 6750 §3).
fn bearer_error(e: &BearerError) -> Response {
    let (status, challenge, code) = match e {
        BearerError::Missing => {
            (StatusCode::UNAUTHORIZED, r#"Bearer realm="handoff""#.to_owned(), "invalid_request")
        }
        BearerError::Invalid(why) => (
            StatusCode::UNAUTHORIZED,
            format!(
                r#"Bearer realm="handoff", error="invalid_token", error_description="the access token is {why}""#
            ),
            "invalid_token",
        ),
        BearerError::InsufficientScope(scope) => (
            StatusCode::FORBIDDEN,
            format!(r#"Bearer realm="handoff", error="insufficient_scope", scope="{scope}""#),
            "insufficient_scope",
        ),
        BearerError::Unavailable => (
            StatusCode::SERVICE_UNAVAILABLE,
            r#"Bearer realm="handoff""#.to_owned(),
            "temporarily_unavailable",
        ),
    };
    let mut resp = json(status, &serde_json::json!({ "error": code }));
    if let Ok(value) = HeaderValue::from_str(&challenge) {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, value);
    }
    resp
}

/// The `Authorization: Bearer` credential, if the request has one.
fn bearer_of(req: &Request) -> Option<&str> {
    req.headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, value)| value.trim())
        .filter(|value| !value.is_empty())
}

#[handler]
pub(super) async fn me(req: &Request, Data(state): Data<&State>) -> Response {
    let Some(bearer) = bearer_of(req) else {
        return bearer_error(&BearerError::Missing);
    };
    match state.oauth.authenticate(bearer, "profile").await {
        Ok((user, _)) => json(StatusCode::OK, &state.oauth.me(&user)),
        Err(e) => {
            if !matches!(e, BearerError::Missing) {
                tracing::debug!(error = %e, "bearer token refused");
            }
            bearer_error(&e)
        }
    }
}

/// Clock-skew allowance for partners' client tokens.
const CLIENT_LEEWAY_SECS: u64 = 5;

/// Why a partner API request was refused.
enum PartnerRefusal {
    /// No bearer token (401 without an error code, RFC 6750 §3.1).
    Missing,
    /// The token failed a check: the reason code (also the `error_description`).
    Invalid(&'static str),
    /// The token's `jti` was used before.
    Replayed,
    /// No such user for this partner (or none handed off to it): 404, the same either way.
    NotFound,
    /// The database failed.
    Unavailable,
}

impl PartnerRefusal {
    fn outcome(&self) -> (&'static str, &'static str) {
        match self {
            Self::Missing => ("unauthenticated", ""),
            Self::Invalid(code) => ("refused", code),
            Self::Replayed => ("replayed", "replayed"),
            Self::NotFound => ("not_found", ""),
            Self::Unavailable => ("unavailable", ""),
        }
    }

    fn response(&self) -> Response {
        let invalid = |why: &str| {
            (
                StatusCode::UNAUTHORIZED,
                Some(format!(
                    r#"Bearer realm="handoff", error="invalid_token", error_description="{why}""#
                )),
                serde_json::json!({"error": "invalid_token", "error_description": why}),
            )
        };
        let (status, challenge, body) = match self {
            Self::Missing => (
                StatusCode::UNAUTHORIZED,
                Some(r#"Bearer realm="handoff""#.to_owned()),
                serde_json::json!({"error": "invalid_request", "error_description": "send Authorization: Bearer with a client token"}),
            ),
            Self::Invalid(code) => invalid(code),
            Self::Replayed => invalid("replayed"),
            Self::NotFound => {
                (StatusCode::NOT_FOUND, None, serde_json::json!({"error": "not_found"}))
            }
            Self::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                None,
                serde_json::json!({"error": "temporarily_unavailable"}),
            ),
        };
        let mut resp = json(status, &body);
        if let Some(value) = challenge.and_then(|c| HeaderValue::from_str(&c).ok()) {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, value);
        }
        resp
    }
}

/// `GET /api/v1/users/{sub}`: a partner's back end asks about a user it knows by `sub`,
/// authenticated by a client token signed for exactly this request (see
/// [`::handoff::client_auth`]). It learns the profile claims its policy lists, and only for
/// users handed off to it; any other `sub` is 404, like one that does not exist.
#[handler]
pub(super) async fn partner_user(
    req: &Request,
    poem::web::Path(sub): poem::web::Path<String>,
    Data(state): Data<&State>,
) -> Response {
    let result = serve_partner_user(state, req, &sub).await;
    let (outcome, reason) = match &result {
        Ok(_) => ("ok", ""),
        Err(refusal) => refusal.outcome(),
    };
    state.metrics.partner_api.with_label_values(&[outcome, reason]).inc();
    match result {
        Ok(body) => json(StatusCode::OK, &body),
        Err(refusal) => refusal.response(),
    }
}

async fn serve_partner_user(
    state: &AppState,
    req: &Request,
    sub: &str,
) -> Result<serde_json::Value, PartnerRefusal> {
    use ::handoff::client_auth::{claimed_client, ClientAuthVerifier, Expected};
    let bearer = bearer_of(req).ok_or(PartnerRefusal::Missing)?;
    let client_id = claimed_client(bearer).ok_or(PartnerRefusal::Invalid("malformed"))?;
    let (target, client) = state
        .handoffs
        .targets()
        .by_client(&client_id)
        .ok_or(PartnerRefusal::Invalid("unknown_client"))?;
    // The URL as this request reached SERVER1, without its query: what `htu` must name.
    let htu = state.config.public_url.join(req.uri().path());
    let expected = Expected { client_id: &client.client_id, htm: req.method().as_str(), htu: &htu };
    let leeway = ::handoff::Leeway::from_secs(CLIENT_LEEWAY_SECS)
        .map_err(|_| PartnerRefusal::Unavailable)?;
    let verifier = ClientAuthVerifier::new(state.config.public_url.clone(), leeway);
    let now = state.config.clock.now();
    let verified = verifier
        .verify(bearer, &client.keys, &expected, now)
        .map_err(|r| PartnerRefusal::Invalid(r.code()))?;
    let scoped_jti = format!("{} {}", verified.client_id, verified.jti);
    match state.db.use_jti(&scoped_jti, verified.replay_until, now).await {
        Ok(true) => {}
        Ok(false) => return Err(PartnerRefusal::Replayed),
        Err(_) => return Err(PartnerRefusal::Unavailable),
    }
    let subject = ::handoff::Subject::parse(sub).map_err(|_| PartnerRefusal::NotFound)?;
    let user = state
        .db
        .partner_subject_user(target.id.as_str(), &subject)
        .await
        .map_err(|_| PartnerRefusal::Unavailable)?
        .filter(|user| !user.disabled)
        // Only while the user may still open something there: a role taken away ends what
        // the partner may learn of them.
        .filter(|user| target.operations.iter().any(|op| user.has_role(&op.role)))
        .ok_or(PartnerRefusal::NotFound)?;
    tracing::info!(
        event = "partner_api.served",
        client = %client.client_id,
        target = %target.id,
        sub = %user.id,
        partner_sub = %subject,
        "partner API answered"
    );
    let mut body = serde_json::to_value(state.handoffs.profile_for(target, &user))
        .map_err(|_| PartnerRefusal::Unavailable)?;
    body["sub"] = serde_json::Value::String(subject.to_string());
    Ok(body)
}
