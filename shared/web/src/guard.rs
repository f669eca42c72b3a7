//! The request guard around every route: request limits, security headers on every response,
//! latency by route, and one log line per request that never contains a query string.
//!
//! The request log records the method, the path and the outcome — never the query, where a
//! handoff token may ride (`GET /handoff?token=…`), and never headers or cookies. This is also
//! why neither server uses poem's stock `Tracing` middleware: it records the whole URI.

use crate::telemetry::LogBudget;
use std::sync::Arc;
use std::time::Instant;

use poem::http::{header, HeaderName, HeaderValue, StatusCode};
use poem::{Endpoint, IntoResponse, Request, Response};
use prometheus::{HistogramOpts, HistogramVec, Registry};

use crate::app::RouteLabels;

/// Bounds on what a request may carry, checked before any handler runs.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest body, in bytes (declared by `Content-Length`; bodies without one are refused).
    pub max_body: u64,
    /// Largest request line target (path and query), in bytes.
    pub max_uri: usize,
    /// Largest total size of all header names and values, in bytes.
    pub max_headers: usize,
}

impl Limits {
    /// Limits for servers whose bodies are small forms: 16 KiB bodies, 16 KiB URIs (a token in
    /// a query is at most 8 KiB), 32 KiB of headers.
    pub const FORMS: Limits =
        Limits { max_body: 16 * 1024, max_uri: 16 * 1024, max_headers: 32 * 1024 };

    /// The status to refuse `req` with, if it breaks a limit.
    pub fn check(&self, req: &Request) -> Option<StatusCode> {
        if displayed_len(req.uri()) > self.max_uri {
            return Some(StatusCode::URI_TOO_LONG);
        }
        let headers = req.headers();
        let header_bytes: usize = headers.iter().map(|(k, v)| k.as_str().len() + v.len()).sum();
        if header_bytes > self.max_headers {
            return Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        }
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .map(|v| v.to_str().ok().and_then(|v| v.parse::<u64>().ok()));
        // A body must declare its length, so it can be refused before it is read: HTTP/1.1
        // chunked bodies and HTTP/2 bodies without `content-length` are refused with 411.
        let may_have_body =
            !matches!(*req.method(), poem::http::Method::GET | poem::http::Method::HEAD);
        match declared {
            Some(Some(n)) if n > self.max_body => Some(StatusCode::PAYLOAD_TOO_LARGE),
            Some(None) => Some(StatusCode::BAD_REQUEST),
            None if may_have_body || headers.contains_key(header::TRANSFER_ENCODING) => {
                Some(StatusCode::LENGTH_REQUIRED)
            }
            _ => None,
        }
    }
}

/// The length of `value` as displayed, counted without building the string.
fn displayed_len(value: &impl std::fmt::Display) -> usize {
    struct Count(usize);
    impl std::fmt::Write for Count {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            self.0 += s.len();
            Ok(())
        }
    }
    let mut count = Count(0);
    // Counting cannot fail.
    let _ = std::fmt::write(&mut count, format_args!("{value}"));
    count.0
}

/// Response headers every page gets unless its handler set them first.
#[derive(Debug, Clone, Copy)]
pub struct Hardening {
    /// The default Content-Security-Policy.
    pub csp: &'static str,
    /// Whether to send `Strict-Transport-Security` (when the public URL is `https`).
    pub hsts: bool,
}

impl Hardening {
    /// Adds the security headers `resp` lacks.
    pub fn apply(&self, resp: &mut Response) {
        const FIXED: [(HeaderName, &str); 5] = [
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::CACHE_CONTROL, "no-store"),
            (HeaderName::from_static("cross-origin-opener-policy"), "same-origin"),
        ];
        let headers = resp.headers_mut();
        for (name, value) in FIXED {
            headers.entry(name).or_insert(HeaderValue::from_static(value));
        }
        headers
            .entry(header::CONTENT_SECURITY_POLICY)
            .or_insert(HeaderValue::from_static(self.csp));
        if self.hsts {
            headers
                .entry(header::STRICT_TRANSPORT_SECURITY)
                .or_insert(HeaderValue::from_static("max-age=63072000; includeSubDomains"));
        }
    }
}

/// Request latency by route, for `/metrics`.
#[derive(Debug, Clone)]
pub struct RequestMetrics {
    duration: HistogramVec,
    routes: RouteLabels,
    /// The one budget for log lines that requests nobody authenticated can cause.
    refusal_logs: Arc<LogBudget>,
    /// Those lines, by outcome: `written`, `suppressed`.
    refusal_lines: prometheus::IntCounterVec,
}

/// A refusal a handler wants logged (put in the response's extensions): the guard writes it
/// within the server's refusal log budget, so that requests anyone can send — a page without a
/// grant, a form without its token, garbage — cannot flood the log. Every refusal is counted
/// in the request metrics whatever the budget.
#[derive(Debug, Clone)]
pub struct RefusalNote {
    /// The event name, e.g. `operation.denied`.
    pub event: &'static str,
    /// What was refused and why (never a token, cookie or password).
    pub message: String,
}

impl RequestMetrics {
    /// Registers `http_request_duration_seconds{route,status}` in `registry`. `routes` maps a
    /// path to one of the router's own patterns (so an attacker cannot grow the label set).
    ///
    /// # Errors
    ///
    /// When the registry already has the metric.
    pub fn new(
        registry: &Registry,
        routes: RouteLabels,
        refusal_logs: Arc<LogBudget>,
    ) -> prometheus::Result<Self> {
        let opts = HistogramOpts::new(
            "http_request_duration_seconds",
            "Time to answer a request, by route",
        )
        .buckets(vec![
            0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
        ]);
        let duration = HistogramVec::new(opts, &["route", "status"])?;
        registry.register(Box::new(duration.clone()))?;
        let refusal_lines = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "refusal_log_lines_total",
                "Log lines of refused requests, by outcome: written, or suppressed by the log budget",
            ),
            &["outcome"],
        )?;
        refusal_lines.with_label_values(&["written"]);
        refusal_lines.with_label_values(&["suppressed"]);
        registry.register(Box::new(refusal_lines.clone()))?;
        Ok(Self { duration, routes, refusal_logs, refusal_lines })
    }
}

/// Runs `ep` for `req` with the limits checked first and the hardening applied to whatever comes
/// back (errors included), records its latency, and logs one line: method, path, status,
/// duration.
///
/// `refuse` renders the page for a broken limit.
pub async fn serve_one<E: Endpoint>(
    ep: &E,
    req: Request,
    limits: &Limits,
    hardening: &Hardening,
    metrics: &RequestMetrics,
    refuse: &(dyn Fn(StatusCode) -> Response + Send + Sync),
) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let route = metrics.routes.label(req.uri().path());
    // The full path only when the per-request line will be written.
    let path = tracing::enabled!(tracing::Level::DEBUG).then(|| {
        let path = req.uri().path();
        path.get(..256).unwrap_or(path).to_owned()
    });
    let mut resp = match limits.check(&req) {
        Some(status) => refuse(status),
        None => match ep.call(req).await {
            Ok(out) => out.into_response(),
            Err(e) => e.into_response(),
        },
    };
    hardening.apply(&mut resp);
    let status = resp.status();
    let elapsed = started.elapsed();
    let class = match status.as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    };
    metrics.duration.with_label_values(&[route, class]).observe(elapsed.as_secs_f64());
    if let Some(note) = resp.extensions_mut().remove::<RefusalNote>() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let allowance = metrics.refusal_logs.take(now);
        if allowance.suppressed_before > 0 {
            tracing::warn!(
                event = "refusals.suppressed",
                lines = allowance.suppressed_before,
                "refusal log lines suppressed by the log budget (metrics count them all)"
            );
        }
        if allowance.log {
            metrics.refusal_lines.with_label_values(&["written"]).inc();
            tracing::warn!(event = note.event, route, status = status.as_u16(), "{}", note.message);
        } else {
            metrics.refusal_lines.with_label_values(&["suppressed"]).inc();
        }
    }
    let us = elapsed.as_micros() as u64;
    // Per-request lines at debug: the hot paths (mint, accept, reject) have their own audit
    // events, and a second line per request costs as much again — and would let a flood of
    // garbage double the log volume. Server failures are logged at warn, with their route.
    if status.is_server_error() {
        tracing::warn!(%method, route, path, status = status.as_u16(), us, "request failed");
    } else {
        tracing::debug!(%method, path, status = status.as_u16(), us, "request");
    }
    resp
}

/// [`serve_one`] as poem middleware: `.with(Guard { … })` around a server's routes.
#[derive(Clone)]
pub struct Guard {
    /// Request bounds.
    pub limits: Limits,
    /// Response headers.
    pub hardening: Hardening,
    /// Latency by route.
    pub metrics: RequestMetrics,
    /// The page for a request that breaks a limit.
    pub refuse: Arc<dyn Fn(StatusCode) -> Response + Send + Sync>,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard").field("limits", &self.limits).finish_non_exhaustive()
    }
}

impl<E: Endpoint> poem::Middleware<E> for Guard {
    type Output = Guarded<E>;

    fn transform(&self, ep: E) -> Self::Output {
        Guarded { inner: ep, guard: self.clone() }
    }
}

/// An endpoint wrapped by [`Guard`].
#[derive(Debug)]
pub struct Guarded<E> {
    inner: E,
    guard: Guard,
}

impl<E: Endpoint> Endpoint for Guarded<E> {
    type Output = Response;

    async fn call(&self, req: Request) -> poem::Result<Response> {
        let g = &self.guard;
        Ok(serve_one(&self.inner, req, &g.limits, &g.hardening, &g.metrics, &*g.refuse).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits() {
        let l = Limits::FORMS;
        let ok = Request::builder().uri_str("/x?a=b").finish();
        assert_eq!(l.check(&ok), None);
        let long = Request::builder().uri_str(format!("/x?t={}", "a".repeat(17 * 1024))).finish();
        assert_eq!(l.check(&long), Some(StatusCode::URI_TOO_LONG));
        // The bound is exact: the whole target, counted without being built.
        let at =
            |n: usize| Request::builder().uri_str(format!("/x?t={}", "a".repeat(n - 5))).finish();
        assert_eq!(l.check(&at(l.max_uri)), None);
        assert_eq!(l.check(&at(l.max_uri + 1)), Some(StatusCode::URI_TOO_LONG));
        let body = Request::builder().header("content-length", "99999").finish();
        assert_eq!(l.check(&body), Some(StatusCode::PAYLOAD_TOO_LARGE));
        let bad = Request::builder().header("content-length", "x").finish();
        assert_eq!(l.check(&bad), Some(StatusCode::BAD_REQUEST));
        let chunked = Request::builder().header("transfer-encoding", "chunked").finish();
        assert_eq!(l.check(&chunked), Some(StatusCode::LENGTH_REQUIRED));
        let undeclared = Request::builder().method(poem::http::Method::POST).finish();
        assert_eq!(
            l.check(&undeclared),
            Some(StatusCode::LENGTH_REQUIRED),
            "a body with no length"
        );
        let declared = Request::builder()
            .method(poem::http::Method::POST)
            .header("content-length", "5")
            .finish();
        assert_eq!(l.check(&declared), None);
        let mut big = Request::builder();
        for i in 0..40 {
            big = big.header(format!("x-h{i}"), "v".repeat(1000));
        }
        assert_eq!(l.check(&big.finish()), Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE));
    }

    #[test]
    fn hardening_and_hsts() {
        let mut resp = Response::builder().header(header::CACHE_CONTROL, "public").finish();
        Hardening { csp: "default-src 'none'", hsts: true }.apply(&mut resp);
        let h = resp.headers();
        assert_eq!(h[header::CACHE_CONTROL], "public", "handler's own value kept");
        assert_eq!(h[header::REFERRER_POLICY], "no-referrer");
        assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(h[header::CONTENT_SECURITY_POLICY], "default-src 'none'");
        assert!(h.contains_key(header::STRICT_TRANSPORT_SECURITY));
        let mut plain = Response::builder().finish();
        Hardening { csp: "x", hsts: false }.apply(&mut plain);
        assert!(!plain.headers().contains_key(header::STRICT_TRANSPORT_SECURITY));
        assert_eq!(plain.headers()[header::CACHE_CONTROL], "no-store");
    }
}
