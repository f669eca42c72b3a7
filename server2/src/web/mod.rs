//! SERVER2's HTTP surface: the handoff endpoint, the operation pages, health, and the
//! middleware around them.

pub mod pages;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use handoff::grant::{Grant, GrantError, GrantKey};
use handoff::{Freshness, Rejection, ReplayStore, Subject, UnixTime, VerifiedHandoff, Verifier};
use maud::html;
use poem::http::{header, HeaderValue, StatusCode};
use poem::web::{Data, Form, Path};
use poem::{get, handler, Endpoint, EndpointExt, IntoResponse, Request, Response, Route};
use serde::Deserialize;

use crate::config::{Config, CookieSecurity};
use crate::keys::KeySource;
use crate::operations::{self, INVOICE_APPROVE, REPORT_VIEW};

/// Largest request body accepted: a token (8 KiB) in a form, with room to spare.
const MAX_BODY: usize = 16 * 1024;

/// Everything handlers share.
#[derive(Debug)]
pub struct AppState {
    pub(crate) config: Config,
    pub(crate) verifier: Verifier,
    pub(crate) keys: KeySource,
    pub(crate) replay: Arc<dyn ReplayStore>,
    pub(crate) grants: GrantKey,
    pub(crate) approvals: Mutex<HashMap<String, Approval>>,
}

/// A recorded invoice approval (the demo's state-changing operation).
#[derive(Debug, Clone)]
pub struct Approval {
    by: Subject,
    at: UnixTime,
}

type State = Arc<AppState>;

impl AppState {
    fn cookie_name(&self) -> &'static str {
        match self.config.cookies {
            CookieSecurity::Secure => "__Host-handoff_grant",
            CookieSecurity::InsecureDevelopment => "handoff_grant",
        }
    }
}

/// The routes, with middleware.
pub fn routes(state: State) -> impl Endpoint<Output = Response> {
    Route::new()
        .at("/", get(home))
        .at("/handoff", get(handoff_get).post(handoff_post))
        .at("/reports/:id", get(report))
        .at("/invoices/:id/approve", get(invoice).post(approve_invoice))
        .at("/healthz", get(healthz))
        .at("/readyz", get(readyz))
        .at("/static/style.css", get(style))
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
            // Routing and extractor errors get a fixed page: poem's error text may quote input.
            let status = err.status();
            let (title, text) = match status {
                StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED => ("Not found", "There is nothing here."),
                StatusCode::PAYLOAD_TOO_LARGE => ("Too large", "The request was too large."),
                s if s.is_server_error() => ("Unavailable", "Something went wrong on our side. Please try again."),
                _ => ("Bad request", "The request could not be understood."),
            };
            let status = if status.is_client_error() || status.is_server_error() { status } else { StatusCode::BAD_REQUEST };
            pages::html_response(status, pages::message(title, text, None))
        })
        .around(|ep, req| async move {
            // One line per request with the path only: the query may hold a token.
            let started = Instant::now();
            let method = req.method().clone();
            let path = req.uri().path().to_owned();
            let mut resp = ep.call(req).await.map(IntoResponse::into_response).unwrap_or_else(|e| e.into_response());
            harden(&mut resp);
            tracing::info!(%method, path, status = resp.status().as_u16(), us = started.elapsed().as_micros() as u64, "request");
            Ok::<_, poem::Error>(resp)
        })
}

fn harden(resp: &mut Response) {
    let headers = resp.headers_mut();
    let defaults = [
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::CACHE_CONTROL, "no-store"),
        (header::CONTENT_SECURITY_POLICY, pages::CSP),
    ];
    for (name, value) in defaults {
        if !headers.contains_key(&name) {
            headers.insert(name, HeaderValue::from_static(value));
        }
    }
}

fn see_other(location: &str) -> Response {
    Response::builder().status(StatusCode::SEE_OTHER).header(header::LOCATION, location).finish()
}

#[derive(Deserialize)]
struct TokenForm {
    #[serde(default)]
    token: String,
}

#[handler]
async fn handoff_post(
    req: &Request,
    Data(state): Data<&State>,
    Form(form): Form<TokenForm>,
) -> Response {
    accept(state, req, &form.token).await
}

#[handler]
async fn handoff_get(req: &Request, Data(state): Data<&State>) -> Response {
    let query = req.uri().query().unwrap_or("");
    let mut tokens =
        url::form_urlencoded::parse(query.as_bytes()).filter(|(k, _)| k == "token").map(|(_, v)| v);
    let token = match (tokens.next(), tokens.next()) {
        (Some(t), None) => t,
        _ => std::borrow::Cow::Borrowed(""),
    };
    accept(state, req, &token).await
}

/// Verifies a token in DESIGN.md's order and records its `jti`.
async fn verify_and_record(state: &AppState, token: &str) -> Result<VerifiedHandoff, Rejection> {
    let inspected = state.verifier.inspect(token)?;
    let set = state.keys.for_kid(inspected.kid().as_str()).await?;
    let key = set.get(inspected.kid().as_str()).ok_or(Rejection::UnknownKid)?;
    let now = state.config.clock.now();
    let verified = state.verifier.verify(inspected, key, now)?;
    match state.replay.check_and_set(verified.jti(), verified.replay_until(), now).await {
        Ok(Freshness::Fresh) => Ok(verified),
        Ok(Freshness::Replayed) => Err(Rejection::Replayed),
        Err(e) => {
            tracing::error!(error = %e, "replay store cannot record; refusing handoffs");
            Err(Rejection::ReplayStoreUnavailable)
        }
    }
}

async fn accept(state: &AppState, req: &Request, token: &str) -> Response {
    let client = req.remote_addr().to_string();
    let verified = match verify_and_record(state, token).await {
        Ok(v) => v,
        Err(rejection) => {
            tracing::warn!(
                event = "handoff.rejected",
                reason = rejection.code(),
                client,
                "handoff rejected"
            );
            return rejection_response(state, req, &rejection);
        }
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
    };
    let (Some(landing), Ok(sealed)) =
        (operations::landing_path(&grant.op), state.grants.seal(&grant))
    else {
        tracing::error!(
            event = "handoff.rejected",
            reason = "internal",
            "cannot complete an accepted handoff"
        );
        return pages::html_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            pages::message(
                "Unavailable",
                "Something went wrong on our side. Please try again.",
                None,
            ),
        );
    };
    tracing::info!(
        event = "handoff.accepted",
        jti = %verified.jti(),
        sub = %verified.subject(),
        iss = %verified.issuer(),
        operation = %verified.operation().kind(),
        kid = %verified.kid(),
        client,
        "handoff accepted"
    );
    let cookie = grant_cookie(state, &sealed, Some(state.config.grant_ttl.as_secs()));
    let mut resp = see_other(&landing);
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().append(header::SET_COOKIE, value);
    }
    resp
}

fn grant_cookie(state: &AppState, value: &str, max_age: Option<u64>) -> String {
    let secure = state.config.cookies == CookieSecurity::Secure;
    let age = cookie::time::Duration::seconds(max_age.unwrap_or(0).min(86_400) as i64);
    cookie::Cookie::build((state.cookie_name(), value.to_owned()))
        .http_only(true)
        .secure(secure)
        .same_site(cookie::SameSite::Lax)
        .path("/")
        .max_age(age)
        .build()
        .to_string()
}

/// How a rejection looks from outside: a class, never the precise reason (that is in the log).
fn rejection_class(r: &Rejection) -> (StatusCode, &'static str, &'static str, &'static str) {
    match r {
        Rejection::Expired => (
            StatusCode::UNAUTHORIZED,
            "expired",
            "This sign-in link has expired",
            "Links from the portal work for a short time only. Go back to the portal and try again.",
        ),
        Rejection::Replayed => (
            StatusCode::UNAUTHORIZED,
            "already-used",
            "This sign-in link was already used",
            "Each link works once. Go back to the portal and open it again.",
        ),
        Rejection::NotYetValid | Rejection::IssuedInFuture => (
            StatusCode::UNAUTHORIZED,
            "not-yet-valid",
            "This sign-in link is not valid yet",
            "The portal's clock and ours disagree. Wait a moment, then go back to the portal and try again.",
        ),
        Rejection::Malformed | Rejection::BadHeader => (
            StatusCode::BAD_REQUEST,
            "invalid",
            "This sign-in link is not valid",
            "It is incomplete or damaged. Go back to the portal and open it again.",
        ),
        Rejection::TooLarge => (
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid",
            "This sign-in link is not valid",
            "Go back to the portal and open the link again.",
        ),
        r if r.is_server_side() => (
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "Sign-in is temporarily unavailable",
            "We cannot check sign-in links right now. Please try again in a minute.",
        ),
        _ => (
            StatusCode::UNAUTHORIZED,
            "invalid",
            "This sign-in link is not valid",
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

fn rejection_response(state: &AppState, req: &Request, rejection: &Rejection) -> Response {
    let (status, class, title, text) = rejection_class(rejection);
    let portal = state.config.issuer.as_str();
    if wants_json(req) {
        let body = serde_json::json!({
            "type": format!("urn:handoff:problem:{class}"),
            "title": title,
            "status": status.as_u16(),
            "detail": text,
            "retry_at": portal,
        });
        return Response::builder()
            .status(status)
            .header(header::CONTENT_TYPE, "application/problem+json")
            .body(body.to_string());
    }
    pages::html_response(status, pages::message(title, text, Some((portal, "Back to the portal"))))
}

/// Why an operation page refused.
enum Denied {
    NoGrant,
    Expired,
    OtherOperation,
}

/// The grant in the request if it is for exactly `kind` with `arg` = `value`.
fn grant_for(
    state: &AppState,
    req: &Request,
    kind: &str,
    arg: &str,
    value: &str,
) -> Result<Grant, Denied> {
    let now = state.config.clock.now();
    let sealed = req
        .headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(cookie::Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == state.cookie_name())
        .map(|c| c.value().to_owned())
        .ok_or(Denied::NoGrant)?;
    match state.grants.open(&sealed, &state.config.public_url, now) {
        Ok(g) if g.op.kind().as_str() == kind && g.op.arg(arg) == Some(value) => Ok(g),
        Ok(_) => Err(Denied::OtherOperation),
        Err(GrantError::Expired) => Err(Denied::Expired),
        Err(_) => Err(Denied::NoGrant),
    }
}

/// The 403 page for an operation page opened without the right grant.
fn denied(state: &AppState, kind: &str, why: Denied) -> Response {
    let text = match why {
        Denied::NoGrant => "You have not been signed in for this page. Open it from the portal.",
        Denied::Expired => "Your access to this page has ended. Open it again from the portal.",
        Denied::OtherOperation => {
            "You were signed in for something else. Open this page from the portal to get access to it."
        }
    };
    tracing::warn!(event = "operation.denied", operation = kind, "operation page refused");
    pages::html_response(
        StatusCode::FORBIDDEN,
        pages::message(
            "Not allowed",
            text,
            Some((state.config.issuer.as_str(), "Back to the portal")),
        ),
    )
}

fn when(t: UnixTime) -> String {
    let format = time::format_description::well_known::Rfc3339;
    i64::try_from(t.as_secs())
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .and_then(|d| d.format(&format).ok())
        .unwrap_or_else(|| t.to_string())
}

fn grant_details(grant: &Grant) -> maud::Markup {
    html! {
        dl {
            dt { "Signed in as" } dd { code { (grant.sub) } }
            dt { "Handed over by" } dd { (grant.handed_by) }
            dt { "For" } dd { (grant.op) }
            dt { "Until" } dd { (when(grant.exp)) }
        }
    }
}

#[handler]
fn home(Data(state): Data<&State>) -> Response {
    let portal = state.config.issuer.as_str();
    pages::html_response(
        StatusCode::OK,
        pages::message(
            "Partner Analytics",
            "Open reports and invoices from your portal: it signs you in here for exactly what you opened.",
            Some((portal, "Go to the portal")),
        ),
    )
}

#[handler]
fn report(req: &Request, Path(id): Path<String>, Data(state): Data<&State>) -> Response {
    let grant = match grant_for(state, req, REPORT_VIEW, "report_id", &id) {
        Ok(g) => g,
        Err(why) => return denied(state, REPORT_VIEW, why),
    };
    // Demo content derived from the id, so each report looks different.
    let seed: u64 = id.bytes().fold(7, |a, b| a.wrapping_mul(31).wrapping_add(u64::from(b)));
    let rows = [
        ("North", seed % 900 + 100),
        ("South", seed / 7 % 900 + 100),
        ("East", seed / 13 % 900 + 100),
    ];
    pages::html_response(
        StatusCode::OK,
        pages::layout(
            &format!("Report {id}"),
            html! {
                div.card {
                    h1 { "Report " (id) }
                    table {
                        thead { tr { th { "Region" } th { "Orders" } } }
                        tbody { @for (region, orders) in rows { tr { td { (region) } td { (orders) } } } }
                    }
                }
                div.card { (grant_details(&grant)) }
            },
        ),
    )
}

#[handler]
fn invoice(req: &Request, Path(id): Path<String>, Data(state): Data<&State>) -> Response {
    let grant = match grant_for(state, req, INVOICE_APPROVE, "invoice_id", &id) {
        Ok(g) => g,
        Err(why) => return denied(state, INVOICE_APPROVE, why),
    };
    let approved =
        state.approvals.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(&id).cloned();
    let csrf = state.grants.csrf_token(&grant);
    pages::html_response(
        StatusCode::OK,
        pages::layout(
            &format!("Invoice {id}"),
            html! {
                div.card {
                    h1 { "Invoice " (id) }
                    @if let Some(a) = approved {
                        p.ok { "Approved by " code { (a.by) } " at " (when(a.at)) "." }
                    } @else {
                        p { "Approve invoice " strong { (id) } "? This cannot be undone." }
                        form method="post" action=(format!("/invoices/{}/approve", url::form_urlencoded::byte_serialize(id.as_bytes()).collect::<String>())) {
                            input type="hidden" name="csrf" value=(csrf);
                            button type="submit" { "Approve invoice " (id) }
                        }
                    }
                }
                div.card { (grant_details(&grant)) }
            },
        ),
    )
}

#[derive(Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

#[handler]
fn approve_invoice(
    req: &Request,
    Path(id): Path<String>,
    Data(state): Data<&State>,
    Form(form): Form<CsrfForm>,
) -> Response {
    let grant = match grant_for(state, req, INVOICE_APPROVE, "invoice_id", &id) {
        Ok(g) => g,
        Err(why) => return denied(state, INVOICE_APPROVE, why),
    };
    if !state.grants.check_csrf(&grant, &form.csrf) {
        tracing::warn!(event = "operation.denied", reason = "csrf", "approval form refused");
        return pages::html_response(
            StatusCode::FORBIDDEN,
            pages::message("This form has expired", "Reload the page and try again.", None),
        );
    }
    let now = state.config.clock.now();
    let mut approvals = state.approvals.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if !approvals.contains_key(&id) {
        approvals.insert(id.clone(), Approval { by: grant.sub.clone(), at: now });
        tracing::info!(event = "invoice.approved", sub = %grant.sub, jti = %grant.jti, "invoice approved");
    }
    drop(approvals);
    see_other(&format!(
        "/invoices/{}/approve",
        url::form_urlencoded::byte_serialize(id.as_bytes()).collect::<String>()
    ))
}

#[handler]
fn healthz() -> &'static str {
    "ok"
}

#[handler]
fn readyz(Data(state): Data<&State>) -> Response {
    if state.keys.is_ready() {
        Response::builder().body("ready")
    } else {
        Response::builder().status(StatusCode::SERVICE_UNAVAILABLE).body("issuer keys not loaded")
    }
}

#[handler]
fn style() -> Response {
    Response::builder()
        .header(header::CONTENT_TYPE, "text/css; charset=utf-8")
        .header(header::CACHE_CONTROL, "public, max-age=3600")
        .body(include_str!("../../static/style.css"))
}
