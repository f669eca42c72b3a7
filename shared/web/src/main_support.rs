//! What a server's `main` does besides building its app, written once: bind the configured
//! address, warn about development settings, serve until Ctrl-C or SIGTERM, and turn an error
//! into a message and an exit code.

use std::fmt::Display;
use std::net::SocketAddr;
use std::process::ExitCode;

use crate::app::App;
use crate::cookies::CookieSecurity;

/// Exit status 0 for `Ok`; otherwise the error on standard error as `NAME: error` (`{:#}`, so
/// an error chain prints whole) and status 1.
pub fn exit_code<E: Display>(name: &str, result: Result<(), E>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Why [`bind`] failed, naming the setting to change.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} ({variable}): {source}")]
pub struct BindError {
    addr: SocketAddr,
    variable: &'static str,
    source: std::io::Error,
}

/// Binds `addr`, the value of setting `variable`; warns when `cookies` is the development mode
/// (its setting is `PREFIX_INSECURE_COOKIES`, next to `variable`).
///
/// # Errors
///
/// When the address cannot be bound.
pub fn bind(
    addr: SocketAddr,
    variable: &'static str,
    cookies: CookieSecurity,
) -> Result<std::net::TcpListener, BindError> {
    if cookies == CookieSecurity::InsecureDevelopment {
        let prefix = variable.split_once('_').map_or("", |(p, _)| p);
        tracing::warn!(
            "{prefix}_INSECURE_COOKIES is set: cookies lack Secure; for local development only"
        );
    }
    std::net::TcpListener::bind(addr).map_err(|source| BindError { addr, variable, source })
}

/// Serves `app` until Ctrl-C or SIGTERM, logging when it listens (with `public_url`) and when it
/// has stopped.
///
/// # Errors
///
/// When the listener fails.
pub async fn serve(name: &'static str, app: App, public_url: &str) -> std::io::Result<()> {
    let ready = app.is_ready().await;
    let metrics = app.metrics_addr().map(|a| a.to_string()).unwrap_or_default();
    tracing::info!(addr = %app.local_addr(), public_url, ready, metrics, "{name} listening");
    app.run(crate::net::shutdown_signal()).await?;
    tracing::info!("{name} stopped");
    Ok(())
}
