//! The server skeleton, written once: a server brings its state (a [`Service`]), its routes
//! and its metrics; [`App::build`] adds `/healthz`, `/readyz` and `/metrics`, the error pages
//! for routing and extractor failures, and the request guard (limits, security headers, latency
//! by route, one log line per request), binds the listener, and [`App::run`] serves with the
//! server's background tasks until a shutdown future completes.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use poem::endpoint::{make, make_sync, BoxEndpoint};
use poem::http::StatusCode;
use poem::listener::TcpAcceptor;
use poem::{get, EndpointExt, IntoEndpoint, Response, Route, Server};
use prometheus::Registry;

use crate::guard::{Guard, Hardening, Limits, RequestMetrics};

/// How long in-flight requests may take to finish once shutdown starts.
pub const GRACE: Duration = Duration::from_secs(10);

/// A server's handler error type: rendered in one place, and made from the statuses produced
/// outside any handler (routing, extractors, the guard's limits), so that those pages look like
/// the server's own.
pub trait ErrorPage:
    poem::error::ResponseError
    + std::error::Error
    + From<crate::pages::StatusClass>
    + Send
    + Sync
    + 'static
{
    /// The page for this error, without logging it (the guard already counts what anyone can
    /// cause at will; handlers' errors log through `ResponseError::as_response`).
    fn page(&self) -> Response;
}

/// What a server supplies to the skeleton besides its routes: the state handlers share.
pub trait Service: Send + Sync + 'static {
    /// The error its handlers return.
    type Error: ErrorPage;

    /// `Ok` when the server can do its work; else why not (`/readyz` answers 503 with it).
    fn readiness(&self) -> impl Future<Output = Result<(), &'static str>> + Send {
        async { Ok(()) }
    }

    /// Brings gauges up to date just before `/metrics` is rendered.
    fn refresh_metrics(&self) {}
}

/// The page for a status produced outside any handler. Anyone can cause these at will: not
/// logged (the guard counts them).
fn status_page<S: Service>(status: StatusCode) -> Response {
    S::Error::from(crate::pages::StatusClass::of(status)).page()
}

/// The response for an error a handler or extractor returned: the server's own error as it
/// renders itself (and logs); anything else (routing, extractors) a fixed page, never poem's
/// error text, which may quote the input.
fn error_response<S: Service>(err: &poem::Error) -> Response {
    match err.downcast_ref::<S::Error>() {
        Some(own) => poem::error::ResponseError::as_response(own),
        None => status_page::<S>(err.status()),
    }
}

/// A server's routes, written once: the router, and the patterns it was given, which label
/// the latency metric (so the label set is the route table, and cannot drift from it).
pub struct Routes {
    route: Route,
    patterns: Vec<&'static str>,
}

impl std::fmt::Debug for Routes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Routes").field("patterns", &self.patterns).finish_non_exhaustive()
    }
}

impl Default for Routes {
    fn default() -> Self {
        Self::new()
    }
}

impl Routes {
    /// No routes yet.
    pub fn new() -> Self {
        Self { route: Route::new(), patterns: Vec::new() }
    }

    /// Serves `ep` at `pattern` (poem's syntax: `/reports/:id`).
    #[must_use]
    pub fn at<E>(mut self, pattern: &'static str, ep: E) -> Self
    where
        E: IntoEndpoint,
        E::Endpoint: 'static,
    {
        self.route = self.route.at(pattern, ep);
        self.patterns.push(pattern);
        self
    }

    /// The labels of these routes.
    pub fn labels(&self) -> RouteLabels {
        RouteLabels::new(&self.patterns)
    }
}

/// Maps a request path to the pattern of the route that serves it, written `/reports/{id}`;
/// `other` for a path no route matches.
#[derive(Debug, Clone)]
pub struct RouteLabels {
    routes: Arc<[(Vec<Segment>, String)]>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Fixed(&'static str),
    Param,
}

impl RouteLabels {
    /// The label for paths that match no route.
    pub const OTHER: &'static str = "other";

    fn new(patterns: &[&'static str]) -> Self {
        let routes = patterns
            .iter()
            .map(|pattern| {
                let segments: Vec<Segment> = pattern
                    .split('/')
                    .map(|s| if s.starts_with(':') { Segment::Param } else { Segment::Fixed(s) })
                    .collect();
                let label = pattern
                    .split('/')
                    .map(|s| match s.strip_prefix(':') {
                        Some(name) => format!("{{{name}}}"),
                        None => s.to_owned(),
                    })
                    .collect::<Vec<_>>()
                    .join("/");
                (segments, label)
            })
            .collect();
        Self { routes }
    }

    /// The label of the route serving `path`.
    pub fn label(&self, path: &str) -> &str {
        for (segments, label) in self.routes.iter() {
            let mut parts = path.split('/');
            let matched = segments.iter().all(|segment| match (segment, parts.next()) {
                (Segment::Fixed(fixed), Some(part)) => *fixed == part,
                (Segment::Param, Some(part)) => !part.is_empty(),
                (_, None) => false,
            }) && parts.next().is_none();
            if matched {
                return label;
            }
        }
        Self::OTHER
    }
}

type Task = Pin<Box<dyn Future<Output = ()> + Send>>;
type Readiness = Pin<Box<dyn Future<Output = Result<(), &'static str>> + Send>>;

/// A built server, bound to its listener, ready to run.
pub struct App {
    acceptor: TcpAcceptor,
    local_addr: SocketAddr,
    endpoint: BoxEndpoint<'static, Response>,
    /// `/metrics` on a listener of its own (loopback by default): operations data stays off
    /// the public port.
    metrics: Option<(TcpAcceptor, SocketAddr, BoxEndpoint<'static, Response>)>,
    readiness: Arc<dyn Fn() -> Readiness + Send + Sync>,
    background: Vec<Task>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App").field("local_addr", &self.local_addr).finish_non_exhaustive()
    }
}

/// What [`App::build`] needs besides the state and routes.
#[derive(Debug)]
pub struct Settings {
    /// Where every metric is registered; `/metrics` renders it.
    pub registry: Registry,
    /// Where `/metrics` is served, and the setting that names it (for the error message).
    /// Never on the public listener.
    pub metrics_listen: (SocketAddr, &'static str),
    /// The one budget for log lines that unauthenticated requests can cause (see
    /// [`crate::guard::RefusalNote`]); a server may share it with its own such lines.
    pub refusal_logs: Arc<crate::telemetry::LogBudget>,
    /// Security headers.
    pub hardening: Hardening,
    /// Request bounds.
    pub limits: Limits,
}

impl App {
    /// Adds the health, readiness and metrics routes to `routes`, wraps them in the error pages
    /// and the request guard, and binds `listener`. Must be called inside a Tokio runtime.
    ///
    /// # Errors
    ///
    /// When the listener cannot be used, or the request metric cannot be registered (a metric
    /// of that name already is).
    pub fn build<S: Service>(
        listener: std::net::TcpListener,
        state: Arc<S>,
        routes: Routes,
        settings: Settings,
    ) -> Result<Self, BuildError> {
        let Settings { registry, metrics_listen, refusal_logs, hardening, limits } = settings;
        let ready = Arc::clone(&state);
        let measured = Arc::clone(&state);
        let rendered = registry.clone();
        let routes = routes.at("/healthz", get(make_sync(|_| "ok"))).at(
            "/readyz",
            get(make(move |_| {
                let ready = Arc::clone(&ready);
                async move { crate::respond::readiness(ready.readiness().await) }
            })),
        );
        let (metrics_at, setting) = metrics_listen;
        let metrics_listener = std::net::TcpListener::bind(metrics_at)
            .map_err(|e| BuildError::MetricsListen(setting, metrics_at, e))?;
        let (metrics_acceptor, metrics_addr) = crate::net::acceptor(metrics_listener)
            .map_err(|e| BuildError::MetricsListen(setting, metrics_at, e))?;
        let metrics_endpoint = Route::new()
            .at(
                "/metrics",
                get(make_sync(move |_| {
                    measured.refresh_metrics();
                    crate::respond::render_metrics(&rendered)
                })),
            )
            .boxed();
        let metrics = RequestMetrics::new(&registry, routes.labels(), refusal_logs)
            .map_err(BuildError::Metrics)?;
        let endpoint = routes
            .route
            .data(Arc::clone(&state))
            .catch_all_error(|err: poem::Error| {
                let response = error_response::<S>(&err);
                async move { response }
            })
            .with(Guard { limits, hardening, metrics, refuse: Arc::new(status_page::<S>) })
            .boxed();
        let (acceptor, local_addr) = crate::net::acceptor(listener).map_err(BuildError::Listen)?;
        let readiness = Arc::new(move || -> Readiness {
            let state = Arc::clone(&state);
            Box::pin(async move { state.readiness().await })
        });
        Ok(Self {
            acceptor,
            local_addr,
            endpoint,
            metrics: Some((metrics_acceptor, metrics_addr, metrics_endpoint)),
            readiness,
            background: Vec::new(),
        })
    }

    /// Runs `task` beside the server while it serves (sweeping expired entries, refreshing keys);
    /// it is stopped when the server stops.
    #[must_use]
    pub fn with_background(mut self, task: impl Future<Output = ()> + Send + 'static) -> Self {
        self.background.push(Box::pin(task));
        self
    }

    /// The address the app listens on (the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address `/metrics` is served on (the real port when bound to port 0).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(|(_, addr, _)| *addr)
    }

    /// True when the server can do its work (what `/readyz` says).
    pub async fn is_ready(&self) -> bool {
        (self.readiness)().await.is_ok()
    }

    /// Serves until `shutdown` completes, then finishes in-flight requests (up to [`GRACE`]).
    ///
    /// # Errors
    ///
    /// When the listener fails.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let mut tasks: Vec<_> = self.background.into_iter().map(tokio::spawn).collect();
        if let Some((acceptor, _, endpoint)) = self.metrics {
            tasks.push(tokio::spawn(async move {
                if let Err(e) = Server::new_with_acceptor(acceptor).run(endpoint).await {
                    tracing::error!(error = %e, "the metrics listener failed");
                }
            }));
        }
        let served = Server::new_with_acceptor(self.acceptor)
            .run_with_graceful_shutdown(self.endpoint, shutdown, Some(GRACE))
            .await;
        for task in tasks {
            task.abort();
        }
        served
    }
}

/// Why [`App::build`] failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The listener cannot be used.
    #[error("cannot listen: {0}")]
    Listen(std::io::Error),
    /// A metric could not be registered.
    #[error("cannot register metrics: {0}")]
    Metrics(prometheus::Error),
    /// The metrics listener cannot be bound.
    #[error("{0}: cannot listen on {1}: {2}")]
    MetricsListen(&'static str, SocketAddr, std::io::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_the_route_patterns() {
        let labels = RouteLabels::new(&["/", "/reports/:id", "/invoices/:id/approve", "/handoff"]);
        assert_eq!(labels.label("/"), "/");
        assert_eq!(labels.label("/reports/42"), "/reports/{id}");
        assert_eq!(labels.label("/invoices/INV-1/approve"), "/invoices/{id}/approve");
        assert_eq!(labels.label("/handoff"), "/handoff");
        for other in ["/reports", "/reports/", "/reports/1/x", "/handoffs", "", "/invoices/1"] {
            assert_eq!(labels.label(other), RouteLabels::OTHER, "{other:?}");
        }
    }
}
