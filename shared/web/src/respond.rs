//! Small responses every server writes the same way.

use poem::http::{header, StatusCode};
use poem::Response;
use prometheus::{Registry, TextEncoder};

/// A 303 See Other to `location`.
pub fn see_other(location: &str) -> Response {
    Response::builder().status(StatusCode::SEE_OTHER).header(header::LOCATION, location).finish()
}

/// A complete HTML page.
pub fn html(status: StatusCode, body: String) -> Response {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
        .body(body)
}

/// A JSON answer no cache keeps (API answers and errors: tokens, refusals).
pub fn json(status: StatusCode, body: impl Into<poem::Body>) -> Response {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-store")
        .body(body)
}

/// A static asset compiled into the binary, cacheable for an hour.
pub fn asset(content_type: &'static str, body: &'static str) -> Response {
    Response::builder()
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CACHE_CONTROL, "public, max-age=3600")
        .body(body)
}

/// `/readyz`: 200 "ready", or 503 with the reason the server is not ready.
pub fn readiness(ready: Result<(), &'static str>) -> Response {
    match ready {
        Ok(()) => Response::builder().body("ready"),
        Err(why_not) => Response::builder().status(StatusCode::SERVICE_UNAVAILABLE).body(why_not),
    }
}

/// `/metrics`: everything in `registry`, in the Prometheus text format.
pub fn render_metrics(registry: &Registry) -> Response {
    match TextEncoder::new().encode_to_string(&registry.gather()) {
        Ok(text) => Response::builder()
            .header(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")
            .body(text),
        Err(e) => {
            tracing::error!(error = %e, "cannot render metrics");
            Response::builder().status(StatusCode::INTERNAL_SERVER_ERROR).finish()
        }
    }
}
