//! The issuer's public keys, as SERVER2 sees them.
//!
//! Either a pinned JWKS file (read once, no network), or the issuer's JWKS URL: fetched at
//! start-up, kept in memory, and fetched again when a token names a `kid` the cache lacks —
//! by one request at a time (single flight) and at most once per refresh interval, so a flood
//! of made-up `kid`s costs the issuer at most one request per interval. A failed fetch (timeout,
//! error status, oversized or malformed document) keeps the last good keys.

use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use handoff::protocol::JWKS_MAX_AGE_SECS;

use handoff::{Jwks, KeySet, Rejection};
use tokio::sync::Mutex;
use tokio::time::Instant;

/// Largest JWKS document accepted.
const MAX_JWKS_BYTES: usize = 64 * 1024;

/// Why keys could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    /// The pinned file cannot be read.
    #[error("cannot read JWKS file {0}: {1}")]
    File(String, std::io::Error),
    /// The document is not a usable JWKS.
    #[error("unusable JWKS from {0}: {1}")]
    Invalid(String, handoff::keys::KeyError),
    /// The HTTP fetch failed.
    #[error("cannot fetch JWKS from {0}: {1}")]
    Fetch(String, String),
}

/// Where keys come from, and the cache.
#[derive(Debug)]
pub struct KeySource {
    current: RwLock<Option<Arc<KeySet>>>,
    remote: Option<Remote>,
    fetches: Option<prometheus::IntCounterVec>,
    /// How long the last good key set may be kept before fetching again: the issuer's
    /// `Cache-Control: max-age`, clamped to the configured bounds.
    cache_for: std::sync::Mutex<Duration>,
    cache_bounds: (Duration, Duration),
}

/// How long keys the issuer has not confirmed stay trusted, measured on `clock`.
#[derive(Debug, Clone)]
pub struct Staleness {
    /// Longest time since the last good fetch.
    pub max: Duration,
    /// The clock (the server's, so tests can move it).
    pub clock: Arc<dyn handoff::Clock>,
}

#[derive(Debug)]
struct Remote {
    url: url::Url,
    staleness: Staleness,
    /// When the issuer last confirmed its keys (a good fetch), in seconds; 0: never.
    confirmed_at: std::sync::atomic::AtomicU64,
    client: reqwest::Client,
    min_interval: Duration,
    /// Held while fetching: waiters queue here instead of fetching again. Holds the time of the
    /// last attempt, successful or not.
    last_attempt: Mutex<Option<Instant>>,
}

impl KeySource {
    /// Keys from a pinned JWKS file.
    ///
    /// # Errors
    ///
    /// When the file is unreadable or not a usable JWKS.
    pub fn pinned(path: &Path) -> Result<Self, KeysError> {
        let shown = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| KeysError::File(shown.clone(), e))?;
        let set = parse(&bytes).map_err(|e| KeysError::Invalid(shown, e))?;
        Ok(Self {
            current: RwLock::new(Some(Arc::new(set))),
            remote: None,
            fetches: None,
            cache_for: std::sync::Mutex::new(Duration::MAX),
            cache_bounds: (Duration::MAX, Duration::MAX),
        })
    }

    /// The issuer's shared secret, from a file (mode 0600, at least 32 random bytes): its
    /// tokens are HS256 and nothing is ever fetched.
    ///
    /// # Errors
    ///
    /// When the file is unreadable, readable by others or too weak a secret.
    pub fn shared_secret(path: &Path) -> Result<Self, KeysError> {
        let shown = path.display().to_string();
        let secret = handoff::SharedSecret::load(path).map_err(|e| KeysError::Invalid(shown, e))?;
        Ok(Self {
            current: RwLock::new(Some(Arc::new(KeySet::shared_secret(&secret)))),
            remote: None,
            fetches: None,
            cache_for: std::sync::Mutex::new(Duration::MAX),
            cache_bounds: (Duration::MAX, Duration::MAX),
        })
    }

    /// Keys from `url`, not fetched yet (call [`KeySource::refresh`]).
    ///
    /// # Errors
    ///
    /// When the HTTP client cannot be built.
    pub fn remote(
        url: url::Url,
        min_interval: Duration,
        timeout: Duration,
        cache_bounds: (Duration, Duration),
        staleness: Staleness,
        fetches: Option<prometheus::IntCounterVec>,
    ) -> Result<Self, KeysError> {
        let client = reqwest::Client::builder()
            .connect_timeout(timeout.min(Duration::from_secs(2)))
            .timeout(timeout)
            // A JWKS URL that redirects elsewhere is a misconfiguration or an attack.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("handoff-server2/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| KeysError::Fetch(url.to_string(), e.to_string()))?;
        let remote = Remote {
            url,
            staleness,
            confirmed_at: std::sync::atomic::AtomicU64::new(0),
            client,
            min_interval,
            last_attempt: Mutex::new(None),
        };
        Ok(Self {
            current: RwLock::new(None),
            remote: Some(remote),
            fetches,
            cache_for: std::sync::Mutex::new(
                cache_bounds.0.max(Duration::from_secs(JWKS_MAX_AGE_SECS)).min(cache_bounds.1),
            ),
            cache_bounds,
        })
    }

    /// The current key set: the last one loaded, unless the issuer has not confirmed it for
    /// longer than the staleness bound (`SERVER2_JWKS_MAX_STALE_SECS`). Keys a down issuer can
    /// no longer withdraw are not trusted forever.
    pub fn current(&self) -> Option<Arc<KeySet>> {
        if self.unconfirmed_for().is_some_and(|age| {
            self.remote.as_ref().is_some_and(|r| age > r.staleness.max.as_secs())
        }) {
            return None;
        }
        self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Seconds since the issuer last confirmed its keys, for a remote source that has loaded
    /// some (`None` for a pinned file or secret, or before the first good fetch).
    pub fn unconfirmed_for(&self) -> Option<u64> {
        let remote = self.remote.as_ref()?;
        let at = remote.confirmed_at.load(std::sync::atomic::Ordering::Relaxed);
        (at != 0).then(|| remote.staleness.clock.now().as_secs().saturating_sub(at))
    }

    /// How long to keep the current key set before fetching it again (`None` for a pinned file).
    pub fn cache_for(&self) -> Option<Duration> {
        self.remote.as_ref()?;
        Some(*self.cache_for.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// True once keys are loaded.
    pub fn is_ready(&self) -> bool {
        self.current().is_some()
    }

    /// A key set holding `kid`, refreshing once if the cache lacks it and the interval allows.
    ///
    /// # Errors
    ///
    /// [`Rejection::UnknownKid`] when no key set has it; [`Rejection::KeysUnavailable`] when no
    /// keys were ever loaded.
    pub async fn for_kid(&self, kid: &str) -> Result<Arc<KeySet>, Rejection> {
        if let Some(set) = self.current().filter(|s| s.get(kid).is_some()) {
            return Ok(set);
        }
        if let Some(remote) = &self.remote {
            let mut last = remote.last_attempt.lock().await;
            // Someone else may have fetched while this request waited.
            if let Some(set) = self.current().filter(|s| s.get(kid).is_some()) {
                return Ok(set);
            }
            let due = last.is_none_or(|t| t.elapsed() >= remote.min_interval);
            if due {
                *last = Some(Instant::now());
                if let Err(e) = self.fetch(remote).await {
                    tracing::warn!(error = %e, "JWKS refresh failed; keeping the last good keys");
                }
            }
        }
        match self.current() {
            Some(set) if set.get(kid).is_some() => Ok(set),
            Some(_) => Err(Rejection::UnknownKid),
            None => Err(Rejection::KeysUnavailable),
        }
    }

    /// Fetches the JWKS now (start-up, background retry), ignoring the interval.
    ///
    /// # Errors
    ///
    /// When the fetch fails; the last good keys stay.
    pub async fn refresh(&self) -> Result<usize, KeysError> {
        let Some(remote) = &self.remote else {
            return Ok(self.current().map_or(0, |s| s.len()));
        };
        let mut last = remote.last_attempt.lock().await;
        *last = Some(Instant::now());
        self.fetch(remote).await
    }

    async fn fetch(&self, remote: &Remote) -> Result<usize, KeysError> {
        let outcome = self.fetch_once(remote).await;
        if let Some(fetches) = &self.fetches {
            fetches.with_label_values(&[if outcome.is_ok() { "ok" } else { "error" }]).inc();
        }
        outcome
    }

    async fn fetch_once(&self, remote: &Remote) -> Result<usize, KeysError> {
        let shown = remote.url.to_string();
        let fail = |e: String| KeysError::Fetch(shown.clone(), e);
        let mut resp =
            remote.client.get(remote.url.clone()).send().await.map_err(|e| fail(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(fail(format!("status {}", resp.status())));
        }
        let max_age = resp
            .headers()
            .get(reqwest::header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.split(',')
                    .filter_map(|d| d.trim().strip_prefix("max-age="))
                    .find_map(|secs| secs.parse::<u64>().ok())
            });
        if resp.content_length().is_some_and(|n| n > MAX_JWKS_BYTES as u64) {
            return Err(fail("document larger than 64 KiB".into()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| fail(e.to_string()))? {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(fail("document larger than 64 KiB".into()));
            }
            body.extend_from_slice(&chunk);
        }
        let set = parse(&body).map_err(|e| KeysError::Invalid(shown.clone(), e))?;
        let count = set.len();
        *self.current.write().unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some(Arc::new(set));
        let now = remote.staleness.clock.now().as_secs().max(1);
        remote.confirmed_at.store(now, std::sync::atomic::Ordering::Relaxed);
        if let Some(secs) = max_age {
            let (low, high) = self.cache_bounds;
            *self.cache_for.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
                Duration::from_secs(secs).clamp(low, high);
        }
        tracing::info!(keys = count, url = %shown, "JWKS loaded");
        Ok(count)
    }
}

fn parse(bytes: &[u8]) -> Result<KeySet, handoff::keys::KeyError> {
    KeySet::from_jwks(&Jwks::parse(bytes)?)
}
