//! SERVER2's HTTP surface: routes and the middleware around them. The handoff itself lives in
//! [`handoff`], the operation pages in [`operations`].

mod handoff;
mod operations;
pub mod pages;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use ::handoff::grant::GrantKey;
use ::handoff::web::{see_other, CookieAttrs, Guard, Hardening, Limits, RequestMetrics};
use ::handoff::{Rejection, ReplayStore, Verifier};
use cookie::SameSite;
use poem::http::StatusCode;
use poem::web::Data;
use poem::{get, handler, post, Endpoint, EndpointExt, Response, Route};
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

use crate::config::{Config, CookieSecurity};
use crate::keys::KeySource;
pub(crate) use handoff::{log_suppressed, Refusals};
pub use operations::Approval;

/// Everything handlers share.
#[derive(Debug)]
pub struct AppState {
    pub(crate) config: Config,
    pub(crate) verifier: Verifier,
    pub(crate) keys: KeySource,
    pub(crate) replay: Arc<dyn ReplayStore>,
    pub(crate) grants: GrantKey,
    pub(crate) approvals: Mutex<HashMap<String, Approval>>,
    pub(crate) metrics: Metrics,
    /// The refusal pages, rendered once.
    pub(crate) refusals: handoff::Refusals,
    /// Log lines for refusals of unsigned garbage.
    pub(crate) unsigned_refusal_logs: ::handoff::telemetry::LogBudget,
}

type State = Arc<AppState>;

/// What `/metrics` reports.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    requests: RequestMetrics,
    pub(crate) accepted: IntCounter,
    /// `handoff_rejected_total`, one counter per [`Rejection::ALL`] entry, in that order.
    rejected_by_reason: Vec<IntCounter>,
    /// JWKS fetches by outcome (`ok`, `error`).
    pub jwks_fetches: IntCounterVec,
    replay_entries: IntGauge,
    jwks_keys: IntGauge,
    /// How far ahead of this server's clock the issuer's was, seen on the last token refused as
    /// not yet valid.
    pub(crate) issuer_clock_ahead: IntGauge,
}

impl Metrics {
    /// Counts one refusal for `reason`.
    pub(crate) fn rejected(&self, reason: &Rejection) {
        if let Some(counter) = self.rejected_by_reason.get(reason.index()) {
            counter.inc();
        }
    }

    /// A fresh registry with every SERVER2 metric, rejection reasons pre-registered at zero.
    ///
    /// # Errors
    ///
    /// Only on a programming error (a metric registered twice).
    pub fn new() -> prometheus::Result<Self> {
        let registry = Registry::new();
        let requests = RequestMetrics::new(&registry, route_of)?;
        let accepted = IntCounter::new("handoff_accepted_total", "Handoff tokens accepted")?;
        let rejected = IntCounterVec::new(
            Opts::new("handoff_rejected_total", "Handoff tokens refused, by reason code"),
            &["reason"],
        )?;
        // One counter per reason, resolved once: a flood of refusals needs no label lookups.
        let rejected_by_reason =
            Rejection::ALL.iter().map(|r| rejected.with_label_values(&[r.code()])).collect();
        let jwks_fetches = IntCounterVec::new(
            Opts::new("jwks_fetches_total", "Fetches of the issuer's JWKS, by outcome"),
            &["outcome"],
        )?;
        jwks_fetches.with_label_values(&["ok"]);
        jwks_fetches.with_label_values(&["error"]);
        let replay_entries =
            IntGauge::new("replay_store_entries", "Token ids held by the replay store")?;
        let jwks_keys = IntGauge::new("jwks_keys", "Issuer keys currently trusted")?;
        let issuer_clock_ahead = IntGauge::new(
            "issuer_clock_ahead_seconds",
            "How far ahead the issuer's clock was on the last token refused as not yet valid",
        )?;
        registry.register(Box::new(issuer_clock_ahead.clone()))?;
        registry.register(Box::new(accepted.clone()))?;
        registry.register(Box::new(rejected.clone()))?;
        registry.register(Box::new(jwks_fetches.clone()))?;
        registry.register(Box::new(replay_entries.clone()))?;
        registry.register(Box::new(jwks_keys.clone()))?;
        Ok(Self {
            registry,
            requests,
            accepted,
            rejected_by_reason,
            jwks_fetches,
            replay_entries,
            jwks_keys,
            issuer_clock_ahead,
        })
    }
}

/// The route a path belongs to: a fixed set, so the metric's labels stay bounded.
fn route_of(path: &str) -> &'static str {
    match path {
        "/" => "/",
        "/handoff" => "/handoff",
        "/handoff/start" => "/handoff/start",
        "/handoff/switch" => "/handoff/switch",
        "/healthz" => "/healthz",
        "/readyz" => "/readyz",
        "/metrics" => "/metrics",
        p if p.starts_with("/reports/") => "/reports/{id}",
        p if p.starts_with("/invoices/") => "/invoices/{id}/approve",
        p if p.starts_with("/static/") => "/static",
        _ => "other",
    }
}

/// SERVER2's cookies. All HttpOnly, `Path=/`; `Secure` with the `__Host-` prefix unless
/// development mode says otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Jar {
    /// The operation grant (SameSite=Lax: set on the 303 after a cross-site POST, sent on the
    /// top-level navigation that follows).
    Grant,
    /// The browser-binding nonce of a handoff SERVER2 started (SameSite=None: it must come back
    /// with the cross-site form POST from SERVER1, which Lax cookies do not).
    Nonce,
    /// A grant for another user, waiting for the person to confirm the switch.
    Pending,
    /// A signed note of which user holds the grant (SameSite=None, no authority): SERVER1's
    /// cross-site form POST does not carry the Lax grant, but must learn that the browser is
    /// signed in as someone else, to ask before switching.
    Holder,
}

impl AppState {
    pub(crate) fn cookie_name(&self, jar: Jar) -> &'static str {
        let secure = self.config.cookies == CookieSecurity::Secure;
        match (jar, secure) {
            (Jar::Grant, true) => "__Host-handoff_grant",
            (Jar::Grant, false) => "handoff_grant",
            (Jar::Nonce, true) => "__Host-handoff_nonce",
            (Jar::Nonce, false) => "handoff_nonce",
            (Jar::Pending, true) => "__Host-handoff_pending",
            (Jar::Pending, false) => "handoff_pending",
            (Jar::Holder, true) => "__Host-handoff_holder",
            (Jar::Holder, false) => "handoff_holder",
        }
    }

    /// A `Set-Cookie` header for `jar`; `max_age` None deletes the cookie.
    pub(crate) fn set_cookie(
        &self,
        jar: Jar,
        value: &str,
        max_age: Option<u64>,
    ) -> Option<poem::http::HeaderValue> {
        let secure = self.config.cookies == CookieSecurity::Secure;
        // SameSite=None requires Secure; without it (development mode) the nonce falls back to
        // Lax, which binds only redirect-mode handoffs.
        let same_site = match jar {
            Jar::Nonce | Jar::Holder if secure => SameSite::None,
            _ => SameSite::Lax,
        };
        CookieAttrs { secure, same_site }.header(self.cookie_name(jar), value, max_age)
    }
}

/// The routes, with middleware.
pub fn routes(state: State) -> impl Endpoint<Output = Response> {
    let hardening = Hardening {
        csp: pages::CSP,
        hsts: state.config.public_url.as_str().starts_with("https://"),
    };
    let request_metrics = state.metrics.requests.clone();
    Route::new()
        .at("/", get(home))
        .at("/handoff", get(handoff::by_get).post(handoff::by_post))
        .at("/handoff/start", get(handoff::start))
        .at("/handoff/switch", post(handoff::switch))
        .at("/reports/:id", get(operations::report))
        .at("/invoices/:id/approve", get(operations::invoice).post(operations::approve_invoice))
        .at("/healthz", get(healthz))
        .at("/readyz", get(readyz))
        .at("/metrics", get(metrics_text))
        .at("/static/style.css", get(style))
        .data(state)
        .catch_all_error(|err: poem::Error| async move {
            // Routing and extractor errors get a fixed page: poem's error text may quote input.
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
    let (title, text) = match status {
        StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED => {
            ("Not found", "There is nothing here.")
        }
        StatusCode::PAYLOAD_TOO_LARGE
        | StatusCode::URI_TOO_LONG
        | StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => {
            ("Too large", "The request was too large.")
        }
        s if s.is_server_error() => {
            ("Unavailable", "Something went wrong on our side. Please try again.")
        }
        _ => ("Bad request", "The request could not be understood."),
    };
    let status = if status.is_client_error() || status.is_server_error() {
        status
    } else {
        StatusCode::BAD_REQUEST
    };
    pages::html_response(status, pages::message(title, text, None))
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
fn healthz() -> &'static str {
    "ok"
}

#[handler]
fn readyz(Data(state): Data<&State>) -> Response {
    ::handoff::web::readiness(state.keys.is_ready(), "issuer keys not loaded")
}

#[handler]
fn metrics_text(Data(state): Data<&State>) -> Response {
    let m = &state.metrics;
    m.replay_entries
        .set(state.replay.entries().map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX)));
    m.jwks_keys.set(state.keys.current().map_or(0, |k| i64::try_from(k.len()).unwrap_or(i64::MAX)));
    ::handoff::web::render_metrics(&m.registry)
}

#[handler]
fn style() -> Response {
    ::handoff::web::asset("text/css; charset=utf-8", include_str!("../../static/style.css"))
}
