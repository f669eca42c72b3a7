//! The handoff endpoint: verify the token, check the browser binding, record the `jti`, then
//! turn it into an operation grant — or, when this browser already holds a grant for another
//! user, ask before switching. Also the start of SERVER2-initiated handoffs.

use std::borrow::Cow;

use ::handoff::grant::Grant;
use ::handoff::protocol::{relying_start_param, start_param, start_path, TOKEN_FIELD};
use ::handoff::{Freshness, Nonce, Rejection, VerifiedHandoff};
use handoff_web::client::client_shown;
use handoff_web::{see_other, ErrorPage as _, StatusClass};
use maud::html;
use poem::http::{header, StatusCode};
use poem::web::{Data, Form};
use poem::{handler, FromRequest, Request, RequestBody, Response};
use ring::rand::SystemRandom;
use serde::Deserialize;

use super::pages::{html_response, BRAND};
use super::FormPurpose;
use super::{AppError, AppState, Cookie, State};
use crate::config::UnboundHandoffs;
use crate::operations;
use crate::refusal::{Policy, Refusal};

/// How long a started handoff may take to come back, in seconds.
const NONCE_TTL: u64 = 300;
/// How long a switch prompt stays answerable, in seconds.
const PENDING_TTL: u64 = 300;
/// Where the switch prompt is shown and answered.
const SWITCH_PATH: &str = "/handoff/switch";

#[derive(Deserialize)]
pub(super) struct TokenForm {
    #[serde(default)]
    token: String,
}

/// The `token` field of a posted form: read from the body directly when it is a plain form
/// (`token_field` then needs no decoding for a token); any other content type goes through
/// poem's form reading, content type checks included.
pub(super) struct PostedToken(String);

impl<'a> FromRequest<'a> for PostedToken {
    async fn from_request(req: &'a Request, body: &mut RequestBody) -> poem::Result<Self> {
        let plain_form = req.headers().get(header::CONTENT_TYPE).is_some_and(|v| {
            v.as_bytes().eq_ignore_ascii_case(b"application/x-www-form-urlencoded")
        });
        if !plain_form {
            let Form(form) = Form::<TokenForm>::from_request(req, body).await?;
            return Ok(Self(form.token));
        }
        let bytes = body.take()?.into_bytes().await?;
        Ok(Self(token_field(&bytes).into_owned()))
    }
}

/// The one `token` field of a form body or query string; empty when it is missing or given
/// more than once (which the verifier then refuses as malformed).
fn token_field(form: &[u8]) -> Cow<'_, str> {
    // A token is base64url and dots: nothing in it needs decoding.
    if let Some(value) =
        form.strip_prefix(TOKEN_FIELD.as_bytes()).and_then(|f| f.strip_prefix(b"="))
    {
        if ::handoff::token::is_token_text(value) {
            return Cow::Borrowed(std::str::from_utf8(value).unwrap_or_default());
        }
    }
    let mut tokens =
        url::form_urlencoded::parse(form).filter(|(k, _)| k == TOKEN_FIELD).map(|(_, v)| v);
    match (tokens.next(), tokens.next()) {
        (Some(t), None) => t,
        _ => Cow::Borrowed(""),
    }
}

#[handler]
pub(super) async fn by_post(
    req: &Request,
    Data(state): Data<&State>,
    PostedToken(token): PostedToken,
) -> Response {
    accept(state, req, &token).await
}

#[handler]
pub(super) async fn by_get(req: &Request, Data(state): Data<&State>) -> Response {
    let token = token_field(req.uri().query().unwrap_or("").as_bytes());
    accept(state, req, &token).await
}

/// Sums up unsigned refusals that were over the log budget, if there were any.
pub(crate) fn log_suppressed(state: &AppState, count: u64) {
    if count > 0 {
        tracing::warn!(
            event = "handoff.rejected.suppressed",
            count,
            aud = %state.config.public_url,
            "more unsigned tokens refused than SERVER2_UNSIGNED_REFUSAL_LOGS_PER_SEC allows; see handoff_rejected_total"
        );
    }
}

/// Whether the token was bound to this browser.
#[derive(Debug, Clone, Copy)]
enum Binding {
    Bound,
    Unbound,
}

/// Verifies a token in DESIGN.md's order, checks the browser binding, and records its `jti`.
async fn verify_and_record(
    state: &AppState,
    req: &Request,
    token: &str,
) -> Result<(VerifiedHandoff, Binding), (Refusal, Option<VerifiedHandoff>)> {
    let unsigned = |r: Rejection| (Refusal::Token(r), None);
    let issuer = state.issuers.for_token(token).map_err(unsigned)?;
    let inspected = issuer.verifier.inspect(token).map_err(unsigned)?;
    let set = issuer.keys.for_kid(inspected.kid().as_str()).await.map_err(unsigned)?;
    let key = set.get(inspected.kid().as_str()).ok_or(unsigned(Rejection::UnknownKid))?;
    let now = state.config.clock.now();
    let verified = if state.config.signature_batches {
        issuer.verifier.verify_with_checker(inspected, key, now, &state.batcher).await
    } else {
        issuer.verifier.verify(inspected, key, now)
    };
    let verified = verified.map_err(|r| (r.into(), None))?;
    // The browser binding. A token refused for it is used up all the same: whoever saw it
    // (a URL in a history or a proxy's log, a page that posted it here) cannot try it again
    // in another browser.
    let binding = match verified.nonce() {
        Some(nonce) => {
            let cookie = state.read_cookie(req, Cookie::Nonce).unwrap_or_default();
            if state.grants.same_secret(&cookie, nonce.as_str()) {
                Ok(Binding::Bound)
            } else {
                Err(Policy::NonceMismatch)
            }
        }
        None if state.config.unbound_handoffs == UnboundHandoffs::Refuse => {
            Err(Policy::UnboundRefused)
        }
        None => Ok(Binding::Unbound),
    };
    // A store that started empty (this process's memory store, a Redis that lost its data)
    // cannot know whether a token issued before then was used: refused (the person opens the
    // link again; tokens live a minute).
    let recorded =
        state.replay.record_use(verified.jti(), verified.issued_at(), verified.replay_until(), now);
    let recorded = recorded.await;
    let binding = match (binding, &recorded) {
        (Ok(binding), _) => binding,
        // Used before, and now in the wrong browser: the use is the clearer reason (a page
        // submitted again after the nonce was spent).
        (Err(_), Ok(Freshness::Replayed)) => {
            return Err((Policy::Replayed.into(), Some(verified)));
        }
        (Err(refused), _) => {
            if let Err(e) = &recorded {
                tracing::error!(error = %e, "replay store cannot record a token refused for its binding");
            }
            return Err((refused.into(), Some(verified)));
        }
    };
    match recorded {
        Ok(Freshness::Fresh) => {}
        Ok(Freshness::Replayed) => return Err((Policy::Replayed.into(), Some(verified))),
        Ok(Freshness::Unvouched) => {
            return Err((Policy::IssuedBeforeStart.into(), Some(verified)));
        }
        Err(e) => {
            tracing::error!(error = %e, "replay store cannot record; refusing handoffs");
            return Err((Policy::ReplayStoreUnavailable.into(), Some(verified)));
        }
    }
    // A logout on the portal ended the session the token came from (or every session of the
    // user up to then). After the replay store, so a token issued before a store's memory
    // began is refused as such.
    // Kept per issuer: another issuer's logout never ends this issuer's handoffs.
    let Some((Some(sub), sid)) =
        state.issuers.scoped(verified.issuer(), Some(verified.subject()), verified.sid())
    else {
        return Err((Policy::ReplayStoreUnavailable.into(), Some(verified)));
    };
    let ended = state.revocations.is_ended(&sub, sid.as_ref(), verified.issued_at(), now);
    match ended.await {
        Ok(false) => Ok((verified, binding)),
        Ok(true) => Err((Policy::SessionEnded.into(), Some(verified))),
        Err(e) => {
            tracing::error!(error = %e, "revocation store cannot answer; refusing handoffs");
            Err((Policy::ReplayStoreUnavailable.into(), Some(verified)))
        }
    }
}

/// Counts, logs and answers a refused handoff. What is known of the token is logged only once
/// its signature has held (`signed`).
fn refuse(
    state: &AppState,
    req: &Request,
    token: &str,
    rejection: Refusal,
    signed: Option<&VerifiedHandoff>,
) -> Response {
    let jti = signed.map(|v| v.jti().to_string());
    let sub = signed.map(|v| v.subject().to_string());
    let operation = signed.map(|v| v.operation().kind().to_string());
    state.metrics.rejected(rejection);
    if matches!(rejection, Refusal::Token(Rejection::NotYetValid | Rejection::IssuedInFuture)) {
        let now = state.config.clock.now();
        if let Some(ahead) = ::handoff::verify::issued_ahead_by(token, now) {
            state.metrics.issuer_clock_ahead.set(i64::try_from(ahead).unwrap_or(i64::MAX));
            tracing::warn!(event = "clock.skew", issuer_ahead_secs = ahead, "issuer clock ahead");
        }
    }
    // Anyone can send garbage: refusals of tokens whose signature never held are logged
    // within a budget (and all counted above); the rest are always logged.
    let log = if rejection.is_unsigned() {
        let allowance = state.unsigned_refusal_logs.take(state.config.clock.now().as_secs());
        log_suppressed(state, allowance.suppressed_before);
        allowance.log
    } else {
        true
    };
    if log {
        tracing::warn!(
            event = "handoff.rejected",
            reason = rejection.code(),
            jti,
            sub,
            aud = %state.config.public_url,
            operation,
            client = %client_shown(state.config.trusted_proxies.client_ip(req)),
            "handoff rejected"
        );
    }
    state.refusals.response(rejection, wants_json(req))
}

async fn accept(state: &AppState, req: &Request, token: &str) -> Response {
    let (verified, binding) = match verify_and_record(state, req, token).await {
        Ok(v) => v,
        Err((rejection, signed)) => return refuse(state, req, token, rejection, signed.as_ref()),
    };
    let now = state.config.clock.now();
    let grant = Grant {
        aud: state.config.public_url.clone(),
        sub: verified.subject().clone(),
        handed_by: verified.issuer().clone(),
        op: verified.operation().clone(),
        iat: now,
        exp: now.plus(state.config.grant_ttl.as_secs()),
        jti: verified.jti(),
        sid: verified.sid().cloned(),
        token_iat: Some(verified.issued_at()),
        name: verified.name().map(str::to_owned),
    };
    state.metrics.accepted.inc();
    tracing::info!(
        event = "handoff.accepted",
        jti = %verified.jti(),
        sub = %verified.subject(),
        aud = %state.config.public_url,
        iss = %verified.issuer(),
        operation = %verified.operation().kind(),
        kid = %verified.kid(),
        bound = matches!(binding, Binding::Bound),
        client = %client_shown(state.config.trusted_proxies.client_ip(req)),
        "handoff accepted"
    );
    let Ok(sealed) = state.grants.seal(&grant) else {
        return internal_error();
    };
    let current_holder = current_holder(state, req, now);
    let mut resp = match current_holder {
        // Someone else is signed in here: ask before replacing their access, on a page of its
        // own address (the token's URL, if it came in one, answers only with a redirect).
        Some((holder, _)) if holder != grant.sub => {
            let mut resp = see_other(SWITCH_PATH);
            add_cookie(&mut resp, state.set_cookie(Cookie::Pending, &sealed, Some(PENDING_TTL)));
            resp
        }
        _ => {
            let Some(landing) = operations::landing_path(&grant.op) else {
                return internal_error();
            };
            let mut resp = see_other(&landing);
            set_grant(state, &mut resp, &grant, &sealed, state.config.grant_ttl.as_secs());
            resp
        }
    };
    if matches!(binding, Binding::Bound) {
        add_cookie(&mut resp, state.set_cookie(Cookie::Nonce, "", None));
    }
    resp
}

/// Sets the grant and the holder note that goes with it.
fn set_grant(state: &AppState, resp: &mut Response, grant: &Grant, sealed: &str, ttl: u64) {
    add_cookie(resp, state.set_cookie(Cookie::Grant, sealed, Some(ttl)));
    add_cookie(resp, state.set_cookie(Cookie::Holder, &state.grants.seal_holder(grant), Some(ttl)));
}

/// `handoff_web`'s `add_cookie`, for cookies that can always be written: names are constants and
/// values base64url.
fn add_cookie(resp: &mut Response, value: Option<poem::http::HeaderValue>) {
    let _ = handoff_web::cookies::add_cookie(resp, value);
}

fn internal_error() -> Response {
    tracing::error!(event = "handoff.failed", "cannot complete an accepted handoff");
    AppError::Internal("cannot complete an accepted handoff".into()).page()
}

fn switch_page(state: &AppState, current: &str, new: &Grant) -> maud::Markup {
    let csrf = state.forms.token(FormPurpose::Switch, new.jti);
    BRAND.layout(
        "Switch user?",
        None,
        html! {
            div.card {
                h1 { "Switch user?" }
                p { "This browser is signed in here as " code { (current) } "." }
                p { "The link you followed signs you in as " code { (new.shown_as()) } " for " strong { (new.op) } "." }
                form method="post" action="/handoff/switch" {
                    input type="hidden" name="csrf" value=(csrf);
                    button type="submit" name="choice" value="switch" { "Switch to " (new.shown_as()) }
                    " "
                    button.secondary type="submit" name="choice" value="stay" { "Stay as " (current) }
                }
            }
        },
    )
}

/// Who holds a grant in this browser now: from the grant itself (sent on same-site requests
/// and top-level GETs) or from the holder note (sent on SERVER1's cross-site form POST too).
fn current_holder(
    state: &AppState,
    req: &Request,
    now: ::handoff::UnixTime,
) -> Option<(::handoff::Subject, Option<String>)> {
    state
        .read_cookie(req, Cookie::Grant)
        .and_then(|g| state.grants.open(&g, &state.config.public_url, now).ok())
        .map(|g| (g.sub, g.name))
        .or_else(|| {
            state
                .read_cookie(req, Cookie::Holder)
                .and_then(|note| state.grants.open_holder(&note, now))
                .map(|sub| (sub, None))
        })
}

/// The pending grant of a switch prompt, sealed and opened.
fn pending(state: &AppState, req: &Request, now: ::handoff::UnixTime) -> Option<(String, Grant)> {
    state
        .read_cookie(req, Cookie::Pending)
        .and_then(|p| state.grants.open(&p, &state.config.public_url, now).ok().map(|g| (p, g)))
}

/// `GET /handoff/switch`: the prompt for the pending grant.
#[handler]
pub(super) fn switch_prompt(
    req: &Request,
    Data(state): Data<&State>,
) -> Result<Response, AppError> {
    let now = state.config.clock.now();
    let Some((_, grant)) = pending(state, req, now) else {
        return Err(AppError::NothingToSwitch {
            portal: state.config.primary().issuer.as_str().to_owned(),
        });
    };
    let current = match current_holder(state, req, now) {
        Some((holder, Some(name))) => format!("{name} ({holder})"),
        Some((holder, None)) => holder.to_string(),
        None => "nobody".to_owned(),
    };
    let mut resp = html_response(StatusCode::OK, switch_page(state, &current, &grant));
    resp.headers_mut().insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
    Ok(resp)
}

#[derive(Deserialize)]
pub(super) struct SwitchForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    choice: String,
}

#[handler]
pub(super) fn switch(
    Data(state): Data<&State>,
    Form(form): Form<SwitchForm>,
    req: &Request,
) -> Result<Response, AppError> {
    let now = state.config.clock.now();
    let Some((sealed, grant)) = pending(state, req, now) else {
        return Err(AppError::NothingToSwitch {
            portal: state.config.primary().issuer.as_str().to_owned(),
        });
    };
    if !state.forms.check(FormPurpose::Switch, grant.jti, &form.csrf) {
        return Err(AppError::FormExpired("Open the link again from the portal."));
    }
    let (mut resp, keep) = match form.choice.as_str() {
        "switch" => match operations::landing_path(&grant.op) {
            Some(landing) => (see_other(&landing), true),
            None => return Ok(internal_error()),
        },
        "stay" => (see_other("/"), false),
        _ => return Err(AppError::Status(StatusClass::BadRequest(StatusCode::BAD_REQUEST))),
    };
    if keep {
        tracing::info!(event = "grant.switched", sub = %grant.sub, jti = %grant.jti, "user switched");
        let ttl = grant.exp.as_secs().saturating_sub(now.as_secs());
        set_grant(state, &mut resp, &grant, &sealed, ttl);
    }
    add_cookie(&mut resp, state.set_cookie(Cookie::Pending, "", None));
    Ok(resp)
}

/// `GET /handoff/start?type=…&ARG=…`: SERVER2 starts a handoff for an operation page the
/// browser has no grant for. It sets a fresh nonce cookie and sends the browser to SERVER1, which
/// mints a token carrying that nonce; only this browser can then present it.
#[handler]
pub(super) fn start(req: &Request, Data(state): Data<&State>) -> Response {
    let query = req.uri().query().unwrap_or("");
    let (mut kind, mut iss) = (None, None);
    let mut args = Vec::new();
    let mut repeated = false;
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        let slot = match k.as_ref() {
            relying_start_param::TYPE => &mut kind,
            relying_start_param::ISSUER => &mut iss,
            _ => {
                args.push((k.into_owned(), v.into_owned()));
                continue;
            }
        };
        repeated |= slot.replace(v.into_owned()).is_some();
    }
    // The issuer named (the portal that sent the browser here), else the first that may grant
    // this operation here.
    let found = kind.as_deref().filter(|_| !repeated).and_then(|k| {
        state
            .issuers
            .iter()
            .filter(|t| iss.as_deref().is_none_or(|iss| t.config.issuer.as_str() == iss))
            .find_map(|t| t.verifier.settings().catalog.get(k).map(|spec| (t, spec)))
    });
    let op = found.and_then(|(issuer, spec)| {
        spec.build(args.iter().map(|(k, v)| (k.as_str(), v.as_str()))).ok().map(|op| (issuer, op))
    });
    let (Some((issuer, op)), Ok(nonce)) = (op, Nonce::generate(&SystemRandom::new())) else {
        return html_response(
            StatusCode::BAD_REQUEST,
            BRAND.message("That did not work", "This page does not exist here.", None),
        );
    };
    let path = start_path(&issuer.config.target_id, op.kind().as_str());
    let Ok(mut target) = url::Url::parse(&issuer.config.issuer.join(&path)) else {
        return internal_error();
    };
    {
        let mut pairs = target.query_pairs_mut();
        for (name, value) in op.args() {
            pairs.append_pair(name.as_str(), value);
        }
        pairs.append_pair(start_param::NONCE, nonce.as_str());
    }
    let mut resp = see_other(target.as_str());
    add_cookie(&mut resp, state.set_cookie(Cookie::Nonce, nonce.as_str(), Some(NONCE_TTL)));
    resp
}

/// How a rejection looks from outside: a class, never the precise reason (that is in the log).
fn rejection_class(r: Refusal) -> (StatusCode, &'static str, &'static str, &'static str) {
    const INVALID: &str = "This sign-in link is not valid";
    match r {
        Refusal::Token(Rejection::Expired) => (
            StatusCode::UNAUTHORIZED,
            "expired",
            "This sign-in link has expired",
            "Links from the portal work for a short time only. Go back to the portal and try again.",
        ),
        Refusal::Policy(Policy::Replayed) => (
            StatusCode::UNAUTHORIZED,
            "already-used",
            "This sign-in link was already used",
            "Each link works once. Go back to the portal and open it again.",
        ),
        Refusal::Policy(Policy::IssuedBeforeStart) => (
            StatusCode::UNAUTHORIZED,
            "expired",
            "This sign-in link has expired",
            "Partner Analytics restarted since it was made. Go back to the portal and try again.",
        ),
        Refusal::Token(Rejection::NotYetValid | Rejection::IssuedInFuture) => (
            StatusCode::UNAUTHORIZED,
            "not-yet-valid",
            "This sign-in link is not valid yet",
            "The portal's clock and ours disagree. Wait a moment, then go back to the portal and try again.",
        ),
        Refusal::Policy(Policy::SessionEnded) => (
            StatusCode::UNAUTHORIZED,
            "session-ended",
            "You signed out of the portal",
            "This link came from a portal session that has ended. Sign in to the portal again and open what you need from there.",
        ),
        Refusal::Policy(Policy::NonceMismatch | Policy::UnboundRefused) => (
            StatusCode::UNAUTHORIZED,
            "wrong-browser",
            "This sign-in link belongs to another browser",
            "It was started somewhere else, or someone sent it to you. Open what you need from the portal yourself.",
        ),
        Refusal::Token(Rejection::Malformed | Rejection::BadHeader) => (
            StatusCode::BAD_REQUEST,
            "invalid",
            INVALID,
            "It is incomplete or damaged. Go back to the portal and open it again.",
        ),
        Refusal::Token(Rejection::TooLarge) => {
            (StatusCode::PAYLOAD_TOO_LARGE, "invalid", INVALID, "Go back to the portal and open the link again.")
        }
        r if r.is_server_side() => (
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "Sign-in is temporarily unavailable",
            "We cannot check sign-in links right now. Please try again in a minute.",
        ),
        _ => (
            StatusCode::UNAUTHORIZED,
            "invalid",
            INVALID,
            "It may have been changed or be meant for another site. Go back to the portal and open it again.",
        ),
    }
}

fn wants_json(req: &Request) -> bool {
    req.headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json") || v.contains("application/problem+json"))
}

/// The refusal pages, HTML and problem+json, rendered once at start-up: they depend only on the
/// reason and the portal's URL, and a flood of bad tokens should cost as little as possible.
#[derive(Debug)]
pub(crate) struct Refusals {
    /// One entry per refusal, in [`Refusal::index`] order.
    pages: Vec<RefusalPage>,
}

#[derive(Debug)]
struct RefusalPage {
    status: StatusCode,
    html: bytes::Bytes,
    json: bytes::Bytes,
}

impl Refusals {
    /// Renders every refusal, pointing people back to `portal` and developers to the entry of
    /// its class in the reason codes served at `errors` (docs/errors.md). The class, not the
    /// precise reason: that is in the log, the metrics and `server2 explain`, for whoever runs
    /// the integration, and not for whoever probes it.
    pub(crate) fn new(portal: &str, errors: &str) -> Self {
        let pages = Refusal::all()
            .map(|rejection| {
                let (status, class, title, text) = rejection_class(rejection);
                let about = format!("{errors}#class-{class}");
                let json = serde_json::json!({
                    "type": about,
                    "title": title,
                    "status": status.as_u16(),
                    "detail": text,
                    "retry_at": portal,
                });
                let html = BRAND.layout(
                    title,
                    None,
                    maud::html! {
                        div.card {
                            h1 { (title) }
                            p { (text) }
                            p { a.button href=(portal) { "Back to the portal" } }
                            p.muted { "For developers: " a href=(about) rel="help" { "what \u{201c}" (class) "\u{201d} means" } "." }
                        }
                    },
                );
                RefusalPage {
                    status,
                    html: html.into_string().into(),
                    json: json.to_string().into(),
                }
            })
            .collect();
        Self { pages }
    }

    fn response(&self, rejection: Refusal, json: bool) -> Response {
        let Some(page) = self.pages.get(rejection.index()) else {
            return internal_error();
        };
        let (content_type, body) = if json {
            ("application/problem+json", page.json.clone())
        } else {
            ("text/html; charset=utf-8", page.html.clone())
        };
        Response::builder()
            .status(page.status)
            .header(header::CONTENT_TYPE, content_type)
            .body(body)
    }
}

#[cfg(test)]
mod tests {
    use super::token_field;

    /// Every refusal's class has its entry in docs/errors.md, and that entry names the code.
    #[test]
    fn every_class_is_documented_with_its_codes() {
        let docs = include_str!("../../../docs/errors.md");
        for refusal in crate::refusal::Refusal::all() {
            let class = super::rejection_class(refusal).1;
            let heading = format!("\n### class-{class}\n");
            let at = docs.find(&heading).unwrap_or_else(|| panic!("no entry for class {class}"));
            let entry = &docs[at + heading.len()..];
            let entry = &entry[..entry.find("\n#").unwrap_or(entry.len())];
            assert!(
                entry.contains(&format!("`{}`", refusal.code())),
                "class-{class} does not list {}",
                refusal.code()
            );
        }
    }

    #[test]
    fn the_token_field_is_found_with_or_without_decoding() {
        assert_eq!(token_field(b"token=a-b_c.d.e"), "a-b_c.d.e");
        assert!(matches!(token_field(b"token=a.b.c"), std::borrow::Cow::Borrowed(_)));
        assert_eq!(token_field(b"token=a%2Eb.c"), "a.b.c");
        assert_eq!(token_field(b"x=1&token=a.b.c&y=2"), "a.b.c");
        assert_eq!(token_field(b"token=a+b"), "a b");
        for none in
            [&b""[..], b"token=", b"tok=a.b.c", b"token=a&token=b", b"token=a.b.c&token=a.b.c"]
        {
            assert_eq!(token_field(none), "", "{:?}", String::from_utf8_lossy(none));
        }
    }
}
