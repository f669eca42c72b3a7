//! SERVER2, the relying party: verifies handoff tokens from SERVER1 with SERVER1's public keys
//! and serves exactly the one operation each token authorizes, without any shared session or
//! database.
#![forbid(unsafe_code)]

pub mod config;
pub mod keys;
pub mod operations;
pub mod web;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use handoff::grant::{GrantKey, MIN_GRANT_KEY_LEN};
use handoff::{MemoryReplayStore, ReplayStore, Verifier, VerifierSettings};
use poem::listener::TcpAcceptor;
use poem::Server;

pub use config::Config;
use config::KeysFrom;
use keys::KeySource;
use web::AppState;

/// How often the issuer's keys are fetched again when its JWKS gives no `max-age`.
const KEY_REFRESH: Duration = Duration::from_secs(300);

/// Why SERVER2 could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// The pinned JWKS file is unusable.
    #[error("{0} (check SERVER2_JWKS_FILE)")]
    Keys(#[from] keys::KeysError),
    /// The operation-cookie key file is unusable.
    #[error("cannot use SERVER2_COOKIE_KEY_FILE {0}: {1}")]
    CookieKey(String, String),
    /// The listener cannot be used.
    #[error("cannot listen: {0}")]
    Listen(std::io::Error),
    /// Crypto set-up failed.
    #[error("crypto set-up failed: {0}")]
    Crypto(String),
}

/// A built SERVER2, bound to its listener.
pub struct App {
    acceptor: TcpAcceptor,
    local_addr: SocketAddr,
    state: Arc<AppState>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App").field("local_addr", &self.local_addr).finish_non_exhaustive()
    }
}

/// Builds SERVER2 on `listener`: loads (or starts fetching) the issuer's keys. Must run inside
/// a Tokio runtime.
///
/// # Errors
///
/// Any [`StartupError`]. An unreachable issuer is not one: SERVER2 starts not-ready and keeps
/// trying.
pub async fn build_app(
    config: Config,
    listener: std::net::TcpListener,
) -> Result<App, StartupError> {
    let verifier = Verifier::new(VerifierSettings {
        issuer: config.issuer.clone(),
        audience: config.public_url.clone(),
        leeway: config.leeway,
        max_lifetime: config.max_token_lifetime,
        catalog: operations::catalog(),
    })
    .map_err(|e| StartupError::Crypto(e.to_string()))?;
    let metrics = web::Metrics::new().map_err(|e| StartupError::Crypto(e.to_string()))?;
    let keys = match &config.keys_from {
        KeysFrom::File(path) => KeySource::pinned(path)?,
        KeysFrom::Url(url) => {
            let fetches = Some(metrics.jwks_fetches.clone());
            let source = KeySource::remote(
                url.clone(),
                config.jwks_refresh_interval,
                config.jwks_timeout,
                config.jwks_cache_bounds,
                fetches,
            )?;
            if let Err(e) = source.refresh().await {
                tracing::error!(error = %e, "issuer keys not loaded yet; will keep trying");
            }
            source
        }
    };
    let grants = match &config.cookie_key_file {
        Some(path) => {
            let shown = path.display().to_string();
            let bytes = std::fs::read(path)
                .map_err(|e| StartupError::CookieKey(shown.clone(), e.to_string()))?;
            GrantKey::from_bytes(&bytes).map_err(|_| {
                StartupError::CookieKey(shown, format!("needs at least {MIN_GRANT_KEY_LEN} bytes"))
            })?
        }
        None => GrantKey::generate().map_err(|e| StartupError::Crypto(e.to_string()))?,
    };
    // Made now, it remembers nothing from before this process: see `remembers_since`.
    let replay: Arc<dyn ReplayStore> =
        Arc::new(MemoryReplayStore::new(config.replay_capacity, config.clock.now()));
    let (acceptor, local_addr) = handoff::web::acceptor(listener).map_err(StartupError::Listen)?;
    let refusals = web::Refusals::new(config.issuer.as_str());
    let unsigned_refusal_logs =
        handoff::telemetry::LogBudget::new(config.unsigned_refusal_logs_per_sec);
    let state = Arc::new(AppState {
        refusals,
        unsigned_refusal_logs,
        config,
        verifier,
        keys,
        replay,
        grants,
        approvals: Mutex::new(HashMap::new()),
        metrics,
    });
    Ok(App { acceptor, local_addr, state })
}

impl App {
    /// The address the app listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// True once the issuer's keys are loaded.
    pub fn is_ready(&self) -> bool {
        self.state.keys.is_ready()
    }

    /// Serves until `shutdown` completes, then finishes in-flight requests (up to 10 s).
    ///
    /// # Errors
    ///
    /// When the listener fails.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let state = Arc::clone(&self.state);
        let background = tokio::spawn(async move {
            // Every 5 s: drop expired replay entries, and sum up unsigned refusals the log
            // budget held back if no later one did. Keys: retried with backoff (1 s to 30 s)
            // while none are loaded, then fetched again when the issuer's `max-age` (within the
            // configured bounds) runs out, so a key the issuer stops publishing stops being
            // trusted here too.
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            let mut backoff = Duration::from_secs(1);
            let mut next_fetch =
                tokio::time::Instant::now() + state.keys.cache_for().unwrap_or(KEY_REFRESH);
            loop {
                tick.tick().await;
                let now_secs = state.config.clock.now();
                state.replay.purge_expired(now_secs);
                web::log_suppressed(
                    &state,
                    state.unsigned_refusal_logs.overdue(now_secs.as_secs()),
                );
                let now = tokio::time::Instant::now();
                if state.keys.is_ready() && now < next_fetch {
                    continue;
                }
                match state.keys.refresh().await {
                    Ok(_) => {
                        backoff = Duration::from_secs(1);
                        next_fetch = now + state.keys.cache_for().unwrap_or(KEY_REFRESH);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "issuer keys not refreshed; keeping the last good keys");
                        next_fetch = now + backoff;
                        backoff = (backoff * 2).min(Duration::from_secs(30));
                    }
                }
            }
        });
        let app = web::routes(self.state);
        let served = Server::new_with_acceptor(self.acceptor)
            .run_with_graceful_shutdown(app, shutdown, Some(Duration::from_secs(10)))
            .await;
        background.abort();
        served
    }
}
