//! SERVER2, the relying party: verifies handoff tokens from SERVER1 with SERVER1's public keys
//! and serves exactly the one operation each token authorizes, without any shared session or
//! database.
#![forbid(unsafe_code)]

pub mod config;
pub mod explain;
pub mod keys;
pub mod operations;
pub mod refusal;
pub mod replay_redis;
pub mod web;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use handoff::grant::{GrantKey, MIN_GRANT_KEY_LEN};
use handoff::logout::LogoutVerifier;
use handoff::protocol::JWKS_MAX_AGE_SECS;
use handoff::revocation::{MemoryRevocationStore, RevocationStore};
use handoff::{MemoryReplayStore, ReplayStore, Verifier, VerifierSettings};
use handoff_web::{Hardening, Jar, Limits, Settings};
use prometheus::Registry;
use ring::rand::{SecureRandom, SystemRandom};

pub use config::Config;
use config::{KeysFrom, ReplayStoreSetting};
pub use handoff_web::App;
use keys::KeySource;
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
    let verifier = Verifier::new(VerifierSettings {
        issuer: config.issuer.clone(),
        audience: config.public_url.clone(),
        leeway: config.leeway,
        max_lifetime: config.max_token_lifetime,
        catalog: operations::catalog(),
        algorithm: config.keys_from.alg(),
    })
    .map_err(|e| StartupError::Crypto(e.to_string()))?;
    let registry = Registry::new();
    let metrics = web::Metrics::new(&registry).map_err(|e| StartupError::Crypto(e.to_string()))?;
    let keys = load_keys(&config, &metrics).await?;
    let secret = cookie_secret(&config)?;
    let grants = GrantKey::from_bytes(&secret).map_err(|_| {
        StartupError::CookieKey("(generated)".into(), format!("needs {MIN_GRANT_KEY_LEN} bytes"))
    })?;
    // Forms get their own key, derived from the cookie secret under another label.
    let forms = web::GrantForms::new(
        ring::hmac::sign(
            &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &secret),
            b"handoff server2 forms v1",
        )
        .as_ref(),
    );
    let (replay, revocations) = stores(&config).await?;
    let logout_verifier =
        LogoutVerifier::new(config.issuer.clone(), config.public_url.clone(), config.leeway)
            .with_algorithm(config.keys_from.alg());
    let hardening = Hardening {
        csp: web::pages::CSP,
        hsts: config.public_url.as_str().starts_with("https://"),
    };
    let state = Arc::new(AppState {
        refusals: web::Refusals::new(config.issuer.as_str()),
        unsigned_refusal_logs: handoff_web::telemetry::LogBudget::new(
            config.unsigned_refusal_logs_per_sec,
        ),
        jar: Jar::new(config.cookies),
        forms,
        config,
        verifier,
        keys,
        replay,
        revocations,
        logout_verifier,
        grants,
        approvals: Mutex::new(HashMap::new()),
        metrics,
    });
    let settings = Settings { registry, hardening, limits: Limits::FORMS };
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
                &config.issuer,
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

/// The issuer's keys: the pinned file, or a first fetch (which may fail: the background task
/// keeps trying).
async fn load_keys(config: &Config, metrics: &web::Metrics) -> Result<KeySource, StartupError> {
    Ok(match &config.keys_from {
        KeysFrom::File(path) => KeySource::pinned(path)?,
        KeysFrom::Secret(path) => KeySource::shared_secret(path)?,
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
    })
}

/// The secret behind operation cookies and forms: `SERVER2_COOKIE_KEY_FILE`, or random.
fn cookie_secret(config: &Config) -> Result<Vec<u8>, StartupError> {
    match &config.cookie_key_file {
        Some(path) => {
            let shown = path.display().to_string();
            let bytes = std::fs::read(path)
                .map_err(|e| StartupError::CookieKey(shown.clone(), e.to_string()))?;
            if bytes.len() < MIN_GRANT_KEY_LEN {
                return Err(StartupError::CookieKey(
                    shown,
                    format!("needs at least {MIN_GRANT_KEY_LEN} bytes"),
                ));
            }
            Ok(bytes)
        }
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
    let mut backoff = Duration::from_secs(1);
    let mut next_fetch =
        tokio::time::Instant::now() + state.keys.cache_for().unwrap_or(KEY_REFRESH);
    loop {
        tick.tick().await;
        let now_secs = state.config.clock.now();
        state.replay.purge_expired(now_secs);
        // A shared store that fails is refused loudly by every handoff; the probe brings
        // readiness back (and a restarted Redis its epochs) without waiting for one.
        let _ = state.replay.probe().await;
        let _ = state.revocations.probe().await;
        web::log_suppressed(&state, state.unsigned_refusal_logs.overdue(now_secs.as_secs()));
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
}
