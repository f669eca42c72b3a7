//! SERVER1's HTTP surface: routes and the middleware around them. Signing in and out lives in
//! [`auth`], minting in [`handoff`].

mod auth;
mod error;
mod handoff;
mod keys;
pub mod pages;
pub mod session;

use std::sync::Arc;

use ::handoff::web::{Guard, Hardening, Limits, RequestMetrics};
use poem::http::{header, HeaderValue, StatusCode};
use poem::web::Data;
use poem::{get, handler, post, Endpoint, EndpointExt, Request, Response, Route};
use prometheus::{IntCounterVec, IntGauge, Opts, Registry};

pub use error::AppError;
pub use keys::Keys;

use crate::config::Config;
use crate::db::{Db, User};
use crate::passwords::Passwords;
use crate::targets::Targets;
use crate::throttle::Throttle;
use session::{read_cookie, session_hash, Cookies, Csrf};

/// Everything handlers share. Built once at start-up.
#[derive(Debug)]
pub struct AppState {
    pub(crate) config: Config,
    pub(crate) db: Db,
    pub(crate) targets: Targets,
    pub(crate) keys: Keys,
    pub(crate) passwords: Passwords,
    pub(crate) csrf: Csrf,
    pub(crate) cookies: Cookies,
    pub(crate) throttle: Throttle,
    pub(crate) metrics: Metrics,
}

type State = Arc<AppState>;

/// What `/metrics` reports.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    requests: RequestMetrics,
    pub(crate) minted: IntCounterVec,
    pub(crate) signins: IntCounterVec,
    key_age: IntGauge,
}

impl Metrics {
    /// A fresh registry with every SERVER1 metric.
    ///
    /// # Errors
    ///
    /// Only on a programming error (a metric registered twice).
    pub fn new() -> prometheus::Result<Self> {
        let registry = Registry::new();
        let requests = RequestMetrics::new(&registry, route_of)?;
        let minted = IntCounterVec::new(
            Opts::new("handoff_minted_total", "Handoff tokens minted, by target and operation"),
            &["target", "operation"],
        )?;
        let signins = IntCounterVec::new(
            Opts::new("signin_total", "Sign-in attempts, by outcome"),
            &["outcome"],
        )?;
        for outcome in ["ok", "failed", "throttled", "busy"] {
            signins.with_label_values(&[outcome]);
        }
        let key_age = IntGauge::new("signing_key_age_seconds", "Age of the signing key file")?;
        registry.register(Box::new(minted.clone()))?;
        registry.register(Box::new(signins.clone()))?;
        registry.register(Box::new(key_age.clone()))?;
        Ok(Self { registry, requests, minted, signins, key_age })
    }
}

/// The route a path belongs to: a fixed set, so the metric's labels stay bounded.
fn route_of(path: &str) -> &'static str {
    match path {
        "/" => "/",
        "/login" => "/login",
        "/logout" => "/logout",
        "/.well-known/jwks.json" => "/.well-known/jwks.json",
        "/healthz" => "/healthz",
        "/readyz" => "/readyz",
        "/metrics" => "/metrics",
        p if p.starts_with("/handoff/") => "/handoff/{target}/{operation}",
        p if p.starts_with("/static/") => "/static",
        _ => "other",
    }
}

/// The routes, with middleware.
pub fn routes(state: State) -> impl Endpoint<Output = Response> {
    let hardening = Hardening {
        csp: pages::DEFAULT_CSP,
        hsts: state.config.public_url.as_str().starts_with("https://"),
    };
    let request_metrics = state.metrics.requests.clone();
    Route::new()
        .at("/", get(auth::dashboard))
        .at("/login", get(auth::login_page).post(auth::login))
        .at("/logout", post(auth::logout))
        .at("/handoff/:target/:operation", get(handoff::start))
        .at("/.well-known/jwks.json", get(jwks))
        .at("/healthz", get(healthz))
        .at("/readyz", get(readyz))
        .at("/metrics", get(metrics_text))
        .at("/static/style.css", get(style))
        .at("/static/handoff.js", get(script))
        .data(state)
        .catch_all_error(|err: poem::Error| async move {
            if let Some(app) = err.downcast_ref::<AppError>() {
                return poem::error::ResponseError::as_response(app);
            }
            // Extractor and routing errors: a fixed page, never poem's error text.
            error_page(err.status())
        })
        .with(Guard {
            limits: Limits::FORMS,
            hardening,
            metrics: request_metrics,
            refuse: error_page,
        })
}

fn error_page(status: StatusCode) -> Response {
    let error = match status {
        StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED => AppError::NotFound,
        StatusCode::PAYLOAD_TOO_LARGE
        | StatusCode::URI_TOO_LONG
        | StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => AppError::TooLarge(status),
        s if s.is_server_error() => AppError::Internal(format!("status {s}")),
        _ => AppError::BadRequest("The request could not be understood".into()),
    };
    // Not logged here: the request guard records every response (a flood of junk requests must
    // not fill the log); handlers' own errors still log through `as_response`.
    error.page()
}

fn add_cookie(resp: &mut Response, value: Option<HeaderValue>) -> Result<(), AppError> {
    let value = value.ok_or_else(|| AppError::Internal("unrepresentable cookie".into()))?;
    resp.headers_mut().append(header::SET_COOKIE, value);
    Ok(())
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

#[handler]
fn jwks(Data(state): Data<&State>) -> Result<Response, AppError> {
    let now = state.config.clock.now();
    let jwks = state.keys.current(now).jwks(now);
    let body = serde_json::to_string(&jwks).map_err(|e| AppError::Internal(e.to_string()))?;
    Ok(Response::builder()
        .header(header::CONTENT_TYPE, "application/jwk-set+json")
        .header(header::CACHE_CONTROL, "public, max-age=300")
        .header(header::ACCESS_CONTROL_ALLOW_ORIGIN, "*")
        .body(body))
}

#[handler]
fn metrics_text(Data(state): Data<&State>) -> Response {
    let now = state.config.clock.now();
    let keys = state.keys.current(now);
    let active = keys.ring().active_entry(now);
    // Keys from before the manifest have no recorded birth: their file's age stands in.
    let age = if active.created > 0 {
        i64::try_from(now.as_secs().saturating_sub(active.created)).unwrap_or(i64::MAX)
    } else {
        std::fs::metadata(state.config.keys_dir.join(&active.file))
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .map_or(-1, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
    };
    state.metrics.key_age.set(age);
    ::handoff::web::render_metrics(&state.metrics.registry)
}

#[handler]
fn healthz() -> &'static str {
    "ok"
}

/// Ready when the database answers (the keys were loaded at start-up and stay loaded).
#[handler]
fn readyz(Data(state): Data<&State>) -> Response {
    ::handoff::web::readiness(state.db.ping(), "database unavailable")
}

#[handler]
fn style() -> Response {
    ::handoff::web::asset("text/css; charset=utf-8", include_str!("../../static/style.css"))
}

#[handler]
fn script() -> Response {
    ::handoff::web::asset("text/javascript; charset=utf-8", include_str!("../../static/handoff.js"))
}
