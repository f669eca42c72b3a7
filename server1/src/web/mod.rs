//! SERVER1's HTTP surface: routes, handlers and the middleware around them.

mod error;
pub mod pages;
pub mod session;

use std::sync::Arc;
use std::time::Instant;

use handoff::{MintRequest, Minter, SessionRef};
use poem::http::{header, HeaderValue, StatusCode};
use poem::web::{Data, Form, Path};
use poem::{get, handler, post, Endpoint, EndpointExt, IntoResponse, Request, Response, Route};
use serde::Deserialize;

pub use error::AppError;

use crate::config::Config;
use crate::db::{Db, User};
use crate::passwords::Passwords;
use crate::targets::Targets;
use session::{random_token, read_cookie, session_hash, Cookies, Csrf};

/// Largest request body accepted (the sign-in form is the largest legitimate one).
const MAX_BODY: usize = 16 * 1024;

/// Everything handlers share. Built once at start-up.
#[derive(Debug)]
pub struct AppState {
    pub(crate) config: Config,
    pub(crate) db: Db,
    pub(crate) targets: Targets,
    pub(crate) minter: Minter,
    pub(crate) jwks_json: String,
    pub(crate) passwords: Passwords,
    pub(crate) csrf: Csrf,
    pub(crate) cookies: Cookies,
}

type State = Arc<AppState>;

/// The routes, with middleware.
pub fn routes(state: State) -> impl Endpoint<Output = Response> {
    Route::new()
        .at("/", get(dashboard))
        .at("/login", get(login_page).post(login))
        .at("/logout", post(logout))
        .at("/handoff/:target/:operation", get(start_handoff))
        .at("/.well-known/jwks.json", get(jwks))
        .at("/healthz", get(healthz))
        .at("/static/style.css", get(style))
        .at("/static/handoff.js", get(script))
        .data(state)
        .before(|req| async move {
            // Bodies are small forms: a declared length over the cap is refused before reading,
            // and a body without a declared length (chunked) is not accepted at all.
            let headers = req.headers();
            let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).map(str::parse::<u64>);
            match declared {
                Some(Ok(n)) if n > MAX_BODY as u64 => Err(poem::Error::from_status(StatusCode::PAYLOAD_TOO_LARGE)),
                Some(Err(_)) => Err(poem::Error::from_status(StatusCode::BAD_REQUEST)),
                None if headers.contains_key(header::TRANSFER_ENCODING) => {
                    Err(poem::Error::from_status(StatusCode::LENGTH_REQUIRED))
                }
                _ => Ok(req),
            }
        })
        .catch_all_error(|err: poem::Error| async move {
            if let Some(app) = err.downcast_ref::<AppError>() {
                return poem::error::ResponseError::as_response(app);
            }
            // Extractor and routing errors: a fixed page, never poem's error text.
            let status = err.status();
            let error = match status {
                StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED => AppError::NotFound,
                StatusCode::PAYLOAD_TOO_LARGE => AppError::BadRequest("The request was too large".into()),
                s if s.is_server_error() => AppError::Internal(err.to_string()),
                _ => AppError::BadRequest("The request could not be understood".into()),
            };
            poem::error::ResponseError::as_response(&error)
        })
        .around(|ep, req| async move {
            // One log line per request: method, path (never the query) and outcome.
            let started = Instant::now();
            let method = req.method().clone();
            let path = req.uri().path().to_owned();
            let mut resp = ep.call(req).await.map(IntoResponse::into_response).unwrap_or_else(|e| e.into_response());
            harden(&mut resp);
            tracing::info!(%method, path, status = resp.status().as_u16(), ms = started.elapsed().as_millis() as u64, "request");
            Ok::<_, poem::Error>(resp)
        })
}

/// Security headers on every response; handlers may set stricter ones first.
fn harden(resp: &mut Response) {
    let headers = resp.headers_mut();
    let defaults = [
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::CACHE_CONTROL, "no-store"),
        (header::CONTENT_SECURITY_POLICY, pages::DEFAULT_CSP),
    ];
    for (name, value) in defaults {
        if !headers.contains_key(&name) {
            headers.insert(name, HeaderValue::from_static(value));
        }
    }
}

fn redirect(location: &str) -> Response {
    Response::builder().status(StatusCode::SEE_OTHER).header(header::LOCATION, location).finish()
}

/// The signed-in user and their session hash, if the request carries a live session.
fn current_user(state: &AppState, req: &Request) -> Result<Option<(User, [u8; 32])>, AppError> {
    let Some(id) = read_cookie(req, state.cookies.session_name()) else {
        return Ok(None);
    };
    let hash = session_hash(&id);
    let now = state.config.clock.now();
    Ok(state.db.session_user(&hash, now)?.map(|u| (u, hash)))
}

/// A local path to return to after sign-in; anything else becomes `/`.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && !n.contains('\\')
                && n.len() <= 2048
                && !n.chars().any(char::is_control) =>
        {
            n.to_owned()
        }
        _ => "/".to_owned(),
    }
}

#[handler]
fn dashboard(req: &Request, Data(state): Data<&State>) -> Result<Response, AppError> {
    let Some((user, hash)) = current_user(state, req)? else {
        return Ok(redirect("/login"));
    };
    let offers: Vec<_> = state
        .targets
        .iter()
        .map(|t| (t, t.operations.iter().filter(|op| user.has_role(&op.role)).collect::<Vec<_>>()))
        .collect();
    let csrf = state.csrf.token("session", &hash);
    Ok(pages::html_response(StatusCode::OK, pages::dashboard(&user, &csrf, &offers)))
}

#[handler]
fn login_page(req: &Request, Data(state): Data<&State>) -> Result<Response, AppError> {
    let query = req.uri().query().unwrap_or("");
    let next =
        url::form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == "next").map(|(_, v)| v);
    let next = safe_next(next.as_deref());
    if current_user(state, req)?.is_some() {
        return Ok(redirect(&next));
    }
    render_login(state, &next, None, StatusCode::OK)
}

/// The sign-in form with a fresh pre-session anti-forgery pair.
fn render_login(
    state: &AppState,
    next: &str,
    error: Option<&str>,
    status: StatusCode,
) -> Result<Response, AppError> {
    let nonce = random_token().ok_or_else(|| AppError::Internal("randomness failed".into()))?;
    let csrf = state.csrf.token("login", nonce.as_bytes());
    let mut resp = pages::html_response(status, pages::login_page(&csrf, next, error));
    let cookie = state.cookies.set(state.cookies.login_name(), &nonce, Some(3600));
    resp.headers_mut().append(header::SET_COOKIE, header_value(&cookie)?);
    Ok(resp)
}

fn header_value(value: &str) -> Result<HeaderValue, AppError> {
    HeaderValue::from_str(value).map_err(|_| AppError::Internal("unrepresentable header".into()))
}

#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    next: String,
}

impl std::fmt::Debug for LoginForm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginForm").field("username", &self.username).finish_non_exhaustive()
    }
}

#[handler]
async fn login(
    req: &Request,
    Data(state): Data<&State>,
    Form(form): Form<LoginForm>,
) -> Result<Response, AppError> {
    let login_cookie = read_cookie(req, state.cookies.login_name()).unwrap_or_default();
    if login_cookie.is_empty() || !state.csrf.check("login", login_cookie.as_bytes(), &form.csrf) {
        return Err(AppError::Csrf);
    }
    let next = safe_next(Some(&form.next));
    let name = form.username.trim().to_ascii_lowercase();
    let found = if crate::is_valid_user_name(&name) { state.db.user_by_name(&name)? } else { None };
    // argon2 runs off the async threads; an unknown name costs the same as a wrong password.
    let ok = {
        let _slot = state.passwords.slot().map_err(|_| AppError::Busy)?;
        let state2 = Arc::clone(state);
        let stored = found.as_ref().map(|(_, h)| h.clone());
        let password = form.password;
        tokio::task::spawn_blocking(move || state2.passwords.verify(&password, stored.as_deref()))
            .await
            .map_err(|e| AppError::Internal(e.to_string()))?
    };
    let user = match (ok, found) {
        (true, Some((user, _))) => user,
        _ => {
            tracing::warn!(event = "signin.failed", "sign-in failed");
            return render_login(
                state,
                &next,
                Some("Wrong user name or password."),
                StatusCode::UNAUTHORIZED,
            );
        }
    };
    // A new session id at every sign-in (no fixation); the old session, if any, ends.
    if let Some(old) = read_cookie(req, state.cookies.session_name()) {
        state.db.delete_session(&session_hash(&old))?;
    }
    let id = random_token().ok_or_else(|| AppError::Internal("randomness failed".into()))?;
    let now = state.config.clock.now();
    let ttl = state.config.session_ttl_secs;
    state.db.create_session(&session_hash(&id), &user.id, now, now.plus(ttl))?;
    tracing::info!(event = "signin", sub = %user.id, "signed in");
    let mut resp = redirect(&next);
    let cookies = &state.cookies;
    resp.headers_mut().append(
        header::SET_COOKIE,
        header_value(&cookies.set(cookies.session_name(), &id, Some(ttl)))?,
    );
    resp.headers_mut()
        .append(header::SET_COOKIE, header_value(&cookies.set(cookies.login_name(), "", None))?);
    Ok(resp)
}

#[derive(Debug, Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

#[handler]
fn logout(
    req: &Request,
    Data(state): Data<&State>,
    Form(form): Form<CsrfForm>,
) -> Result<Response, AppError> {
    let Some((user, hash)) = current_user(state, req)? else {
        return Ok(redirect("/login"));
    };
    if !state.csrf.check("session", &hash, &form.csrf) {
        return Err(AppError::Csrf);
    }
    state.db.delete_session(&hash)?;
    tracing::info!(event = "signout", sub = %user.id, "signed out");
    let mut resp = redirect("/login");
    let cookies = &state.cookies;
    resp.headers_mut()
        .append(header::SET_COOKIE, header_value(&cookies.set(cookies.session_name(), "", None))?);
    Ok(resp)
}

#[handler]
fn start_handoff(
    req: &Request,
    Path((target_id, operation)): Path<(String, String)>,
    Data(state): Data<&State>,
) -> Result<Response, AppError> {
    let Some((user, hash)) = current_user(state, req)? else {
        let here = req.uri().path_and_query().map_or("/", |p| p.as_str());
        let next: String = url::form_urlencoded::byte_serialize(here.as_bytes()).collect();
        return Ok(redirect(&format!("/login?next={next}")));
    };
    let target = state.targets.get(&target_id).ok_or(AppError::NotFound)?;
    let op = target.operation(&operation).ok_or(AppError::NotFound)?;
    if !user.has_role(&op.role) {
        return Err(AppError::MissingRole(op.role.clone()));
    }
    let query = req.uri().query().unwrap_or("");
    let mut redirect_mode = false;
    let mut args = Vec::new();
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        if k == "mode" {
            redirect_mode = match v.as_ref() {
                "redirect" => true,
                "form" => false,
                _ => return Err(AppError::BadRequest("`mode` is `form` or `redirect`".into())),
            };
        } else {
            args.push((k.into_owned(), v.into_owned()));
        }
    }
    let operation = op
        .spec
        .build(args.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .map_err(|e| AppError::BadRequest(format!("This link is not valid: {e}")))?;
    let sid = SessionRef::parse(&base64_url(&hash[..16])).ok();
    let now = state.config.clock.now();
    let request = MintRequest {
        audience: &target.audience,
        subject: &user.id,
        operation: &operation,
        sid: sid.as_ref(),
        nonce: None,
    };
    let minted = state.minter.mint(&request, now).map_err(|e| AppError::Internal(e.to_string()))?;
    tracing::info!(
        event = "handoff.minted",
        jti = %minted.jti(),
        sub = %user.id,
        aud = %target.audience,
        operation = %operation.kind(),
        kid = %state.minter.kid(),
        "handoff minted"
    );
    if redirect_mode {
        let mut location = target.handoff_url.clone();
        location.query_pairs_mut().append_pair("token", minted.as_str());
        return Ok(redirect(location.as_str()));
    }
    let shown_args: Vec<String> = operation.args().map(|(k, v)| format!("{k} {v}")).collect();
    let page = pages::handoff_page(
        target,
        op,
        &shown_args.join(", "),
        minted.as_str(),
        state.minter.ttl().as_secs(),
    );
    let mut resp = pages::html_response(StatusCode::OK, page);
    let csp = format!(
        "default-src 'none'; style-src 'self'; script-src 'self'; form-action {}; frame-ancestors 'none'; base-uri 'none'",
        target.origin()
    );
    resp.headers_mut().insert(header::CONTENT_SECURITY_POLICY, header_value(&csp)?);
    Ok(resp)
}

fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[handler]
fn jwks(Data(state): Data<&State>) -> Response {
    Response::builder()
        .header(header::CONTENT_TYPE, "application/jwk-set+json")
        .header(header::CACHE_CONTROL, "public, max-age=300")
        .header(header::ACCESS_CONTROL_ALLOW_ORIGIN, "*")
        .body(state.jwks_json.clone())
}

#[handler]
fn healthz() -> &'static str {
    "ok"
}

#[handler]
fn style() -> Response {
    Response::builder()
        .header(header::CONTENT_TYPE, "text/css; charset=utf-8")
        .header(header::CACHE_CONTROL, "public, max-age=3600")
        .body(include_str!("../../static/style.css"))
}

#[handler]
fn script() -> Response {
    Response::builder()
        .header(header::CONTENT_TYPE, "text/javascript; charset=utf-8")
        .header(header::CACHE_CONTROL, "public, max-age=3600")
        .body(include_str!("../../static/handoff.js"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_must_be_local() {
        assert_eq!(
            safe_next(Some("/handoff/partner/report.view?report_id=42")),
            "/handoff/partner/report.view?report_id=42"
        );
        for bad in
            ["https://evil.example", "//evil.example", "/\\evil.example", "evil", "", "/a\nb"]
        {
            assert_eq!(safe_next(Some(bad)), "/", "{bad:?}");
        }
        assert_eq!(safe_next(None), "/");
    }
}
