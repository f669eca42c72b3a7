//! SERVER2, the relying party: verifies handoff tokens from SERVER1 with SERVER1's public keys
//! and serves exactly the one operation each token authorizes, without any shared session or
//! database.
#![forbid(unsafe_code)]

mod batch;
pub mod config;
pub mod explain;
pub mod issuers;
pub mod keys;
pub mod operations;
pub mod refusal;
pub mod replay_redis;
pub mod web;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use handoff::grant::{GrantKey, MIN_GRANT_KEY_LEN};
use handoff::protocol::JWKS_MAX_AGE_SECS;
use handoff::revocation::{MemoryRevocationStore, RevocationStore};
use handoff::{MemoryReplayStore, ReplayStore};
use handoff_web::{Hardening, Jar, Limits, Settings};
use prometheus::Registry;
use ring::rand::{SecureRandom, SystemRandom};

pub use config::Config;
use config::ReplayStoreSetting;
pub use handoff_web::App;
use issuers::Issuers;
use replay_redis::{RedisReplayStore, RedisRevocationStore};
use web::AppState;

/// How often the issuer's keys are fetched again when its JWKS gives no `max-age`.
const KEY_REFRESH: Duration = Duration::from_secs(JWKS_MAX_AGE_SECS);

/// Why SERVER2 could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// The pinned JWKS file or the issuer's secret file is unusable.
    #[error("{0} (check SERVER2_JWKS_FILE or SERVER2_ISSUER_SECRET_FILE)")]
    Keys(#[from] keys::KeysError),
    /// The operation-cookie key file is unusable.
    #[error("cannot use SERVER2_COOKIE_KEY_FILE {0}: {1}")]
    CookieKey(String, String),
    /// The listener or the metrics cannot be set up.
    #[error(transparent)]
    Build(#[from] handoff_web::BuildError),
    /// Crypto set-up failed.
    #[error("crypto set-up failed: {0}")]
    Crypto(String),
    /// The replay store cannot be set up (check SERVER2_REPLAY_STORE).
    #[error("cannot use SERVER2_REPLAY_STORE: {0}")]
    ReplayStore(String),
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
    let registry = Registry::new();
    let metrics = web::Metrics::new(&registry).map_err(|e| StartupError::Crypto(e.to_string()))?;
    let issuers = Issuers::new(&config, Some(&metrics.jwks_fetches))?;
    // A first fetch of every remote key set; one that fails is retried in the background
    // (SERVER2 starts not ready).
    for trusted in issuers.iter() {
        if let Err(e) = trusted.keys.refresh().await {
            tracing::error!(error = %e, iss = %trusted.config.issuer, "issuer keys not loaded yet; will keep trying");
        }
    }
    let secret = cookie_secret(&config)?;
    let grants = GrantKey::from_bytes(&secret).map_err(|_| {
        StartupError::CookieKey("(generated)".into(), format!("needs {MIN_GRANT_KEY_LEN} bytes"))
    })?;
    // Every use of the cookie secret has its own derived key (HKDF): forms, grants, holder
    // notes, nonce comparisons.
    let forms =
        web::GrantForms::new(&handoff::grant::derive_key(&secret, handoff::grant::Purpose::Forms));
    let (replay, revocations) = stores(&config).await?;
    // One budget for every log line a request nobody authenticated can cause: refused tokens
    // whose signature never held, pages without a grant, forms without their token, refused
    // logouts.
    let refusal_logs =
        Arc::new(handoff_web::telemetry::LogBudget::new(config.unsigned_refusal_logs_per_sec));
    let hardening = Hardening {
        csp: web::pages::CSP,
        hsts: config.public_url.as_str().starts_with("https://"),
    };
    let state = Arc::new(AppState {
        refusals: web::Refusals::new(
            config.primary().issuer.as_str(),
            &config.public_url.join(web::ERRORS_PATH),
        ),
        unsigned_refusal_logs: Arc::clone(&refusal_logs),
        batcher: batch::Batcher::new(metrics.signatures_batched.clone()),
        jar: Jar::new(config.cookies),
        forms,
        config,
        issuers,
        replay,
        revocations,
        grants,
        approvals: Mutex::new(HashMap::new()),
        metrics,
    });
    let settings = Settings {
        registry,
        metrics_listen: (state.config.metrics_listen, "SERVER2_METRICS_LISTEN"),
        refusal_logs,
        hardening,
        limits: Limits::FORMS,
    };
    let app = App::build(listener, Arc::clone(&state), web::routes(), settings)?;
    Ok(app.with_background(background(state)))
}

/// The replay store the configuration names, and where logouts are remembered beside it. The
/// memory stores are made now and remember nothing from before this process (see
/// `remembers_since`); the Redis stores share one connection and are probed once, so their
/// epochs exist before the first handoff (a Redis that is down is not a start-up error: SERVER2
/// starts not ready, and the background task keeps probing). With Redis every replica sees
/// every logout.
async fn stores(
    config: &Config,
) -> Result<(Arc<dyn ReplayStore>, Arc<dyn RevocationStore>), StartupError> {
    Ok(match &config.replay_store {
        ReplayStoreSetting::Memory => (
            Arc::new(MemoryReplayStore::new(config.replay_capacity, config.clock.now())),
            Arc::new(MemoryRevocationStore::new(config.replay_capacity)),
        ),
        ReplayStoreSetting::Redis(url) => {
            let store = RedisReplayStore::new(
                url,
                &config.primary().issuer,
                &config.public_url,
                config.replay_timeout,
                config.clock.clone(),
            )
            .map_err(StartupError::ReplayStore)?;
            let revocations = RedisRevocationStore::beside(&store);
            if let Err(e) = store.probe().await {
                tracing::error!(error = %e, "replay store unavailable; refusing handoffs until it answers");
            }
            let _ = revocations.probe().await;
            (Arc::new(store), Arc::new(revocations))
        }
    })
}

/// The secret behind operation cookies and forms: `SERVER2_COOKIE_KEY_FILE` (checked like every
/// secret file: mode 0600 or stricter, at least 32 bytes), or random.
fn cookie_secret(config: &Config) -> Result<Vec<u8>, StartupError> {
    match &config.cookie_key_file {
        Some(path) => handoff::secret::read_key_file(path, MIN_GRANT_KEY_LEN).map_err(|e| {
            StartupError::CookieKey(
                path.display().to_string(),
                format!(
                    "{e} (make one with `server1 secret new FILE`, or `head -c 32 /dev/urandom`)"
                ),
            )
        }),
        None => {
            let mut bytes = vec![0u8; 32];
            SystemRandom::new()
                .fill(&mut bytes)
                .map_err(|e| StartupError::Crypto(e.to_string()))?;
            Ok(bytes)
        }
    }
}

/// Every 5 s: drop expired replay entries, and sum up unsigned refusals the log budget held
/// back if no later one did. Keys: retried with backoff (1 s to 30 s) while none are loaded,
/// then fetched again when the issuer's `max-age` (within the configured bounds) runs out, so a
/// key the issuer stops publishing stops being trusted here too.
async fn background(state: Arc<AppState>) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    // Per issuer: when its keys are due again, and the backoff while they fail.
    let start = tokio::time::Instant::now();
    let mut schedule: Vec<(tokio::time::Instant, Duration)> = state
        .issuers
        .iter()
        .map(|t| (start + t.keys.cache_for().unwrap_or(KEY_REFRESH), Duration::from_secs(1)))
        .collect();
    loop {
        tick.tick().await;
        let now_secs = state.config.clock.now();
        state.replay.purge_expired(now_secs);
        // A shared store that fails is refused loudly by every handoff; the probe brings
        // readiness back (and a restarted Redis its epochs) without waiting for one.
        let _ = state.replay.probe().await;
        let _ = state.revocations.probe().await;
        web::log_suppressed(&state, state.unsigned_refusal_logs.overdue(now_secs.as_secs()));
        for (trusted, (next_fetch, backoff)) in state.issuers.iter().zip(schedule.iter_mut()) {
            let now = tokio::time::Instant::now();
            if trusted.keys.is_ready() && now < *next_fetch {
                continue;
            }
            match trusted.keys.refresh().await {
                Ok(_) => {
                    *backoff = Duration::from_secs(1);
                    *next_fetch = now + trusted.keys.cache_for().unwrap_or(KEY_REFRESH);
                }
                Err(e) => {
                    tracing::warn!(error = %e, iss = %trusted.config.issuer, "issuer keys not refreshed; keeping the last good keys");
                    *next_fetch = now + *backoff;
                    *backoff = (*backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
    }
}
