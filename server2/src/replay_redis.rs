//! The replay store several SERVER2 replicas share: Redis. One atomic script per handoff
//! records the token's `jti` with `SET NX PX` (expiring when the token could no longer pass its
//! `exp` check, as the memory store does) and checks the store's epoch.
//!
//! **The epoch.** A Redis that restarts without its data has forgotten every token used before;
//! it must not let one through again. Each shard of the key space keeps an epoch key: the time
//! its memory began, written once (`SET NX`) by the first SERVER2 to touch it. A token issued
//! before the epoch is refused ([`Freshness::Unvouched`]), as SERVER2 does with its own fresh
//! memory store. The epoch and the `jti` are read and written by one script, so no restart can
//! fall between them.
//!
//! **Keys** are namespaced by issuer and audience (`handoff:<hash of both>:…`) and spread over
//! [`SHARDS`] hash tags (`{s07}`): each shard's epoch and `jti` keys share a slot, so the script
//! stays atomic on a Redis Cluster while the shards spread over its nodes.
//!
//! **Failures** fail closed: a timeout or an error is [`ReplayStoreError::Unavailable`], the
//! handoff is refused with 503, readiness turns 503, and the connection is made again on the next
//! request or probe.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use handoff::logout::Ended;
use handoff::replay::{ProbeFuture, ReplayFuture};
use handoff::revocation::{RevocationFuture, RevocationStore};
use handoff::{
    Audience, Clock, Freshness, Issuer, Jti, ReplayStore, ReplayStoreError, SessionRef, Subject,
    UnixTime,
};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// How many hash tags the keys are spread over.
pub const SHARDS: u128 = 16;

/// Records the use (KEYS[2]) unless the token was issued before the shard's epoch (KEYS[1]),
/// which is written now when missing. ARGV: now (s), the token's `iat` (s), expiry (ms).
/// Returns 1 fresh, 0 replayed, 2 issued before the epoch.
const RECORD_USE: &str = r"
local epoch = redis.call('GET', KEYS[1])
if not epoch then
  redis.call('SET', KEYS[1], ARGV[1])
  epoch = ARGV[1]
end
if tonumber(ARGV[2]) < tonumber(epoch) then
  return 2
end
if redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[3]) then
  return 1
end
return 0
";

/// A `redis://` or `rediss://` URL. `Debug` and `Display` never show its password.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl(url::Url);

impl RedisUrl {
    /// Checks `value`: `redis://` or `rediss://` (TLS) with a host, or `redis+unix:///PATH` (a
    /// Redis on this host, through its socket file; `?db=N` picks the database).
    ///
    /// # Errors
    ///
    /// Any other URL; the message never repeats it (it may hold a password).
    pub fn parse(value: &str) -> Result<Self, &'static str> {
        let url = url::Url::parse(value).map_err(|_| "not a URL")?;
        match url.scheme() {
            "redis" | "rediss" if url.host_str().is_some_and(|h| !h.is_empty()) => Ok(Self(url)),
            "redis" | "rediss" => Err("no host"),
            "redis+unix" if url.path().len() > 1 => Ok(Self(url)),
            "redis+unix" => Err("no socket path"),
            _ => Err("the scheme is redis://, rediss:// or redis+unix://"),
        }
    }

    fn shown(&self) -> String {
        let host = self.0.host_str().unwrap_or_default();
        let port = self.0.port().map(|p| format!(":{p}")).unwrap_or_default();
        format!("{}://{host}{port}{}", self.0.scheme(), self.0.path())
    }
}

impl std::fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RedisUrl({})", self.shown())
    }
}

impl std::fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown())
    }
}

/// The Redis replay store.
pub struct RedisReplayStore {
    conn: ConnectionManager,
    record_use: redis::Script,
    namespace: String,
    /// Each shard's epoch key, made once.
    epochs: Vec<String>,
    timeout: Duration,
    available: AtomicBool,
    shown: String,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for RedisReplayStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisReplayStore")
            .field("url", &self.shown)
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl RedisReplayStore {
    /// A store at `url` for tokens from `issuer` to `audience`, each request bounded by
    /// `timeout` (connecting included); epochs are written with `clock`'s time. Connects
    /// lazily: a Redis that is down now is not an error here (SERVER2 starts not ready and keeps
    /// trying). Must be called inside a Tokio runtime.
    ///
    /// # Errors
    ///
    /// When the client cannot be set up from the URL.
    pub fn new(
        url: &RedisUrl,
        issuer: &Issuer,
        audience: &Audience,
        timeout: Duration,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, String> {
        let client = redis::Client::open(url.0.as_str()).map_err(|e| e.to_string())?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            // Each request is bounded by `bounded` (one timer per request, not two).
            .set_response_timeout(None)
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(100));
        let conn =
            ConnectionManager::new_lazy_with_config(client, config).map_err(|e| e.to_string())?;
        let namespace = namespace(issuer, audience);
        let epochs = epoch_keys(&namespace, 's');
        Ok(Self {
            conn,
            record_use: redis::Script::new(RECORD_USE),
            namespace,
            epochs,
            timeout,
            available: AtomicBool::new(false),
            shown: url.to_string(),
            clock,
        })
    }

    /// The shard `jti` falls in (its id is random: shards fill evenly), its epoch key, and the
    /// `jti`'s key there.
    fn keys(&self, jti: Jti) -> (&str, String) {
        let shard = jti.as_u128() % SHARDS;
        let epoch = self.epochs.get(shard as usize).map_or("", String::as_str);
        (epoch, format!("{}:{{s{shard:02}}}:jti:{jti}", self.namespace))
    }

    /// Runs `request` within the timeout, keeping [`ReplayStore::is_available`] up to date.
    async fn bounded<T>(
        &self,
        request: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, ReplayStoreError> {
        let outcome = within(self.timeout, request).await;
        let was = self.available.swap(outcome.is_ok(), Ordering::Relaxed);
        match (&outcome, was) {
            (Err(e), true) => tracing::error!(error = %e, store = %self.shown, "replay store lost"),
            (Ok(_), false) => tracing::info!(store = %self.shown, "replay store available"),
            _ => {}
        }
        outcome
    }
}

/// Each shard's epoch key, under the hash tag `{` `tag` `NN}` of `namespace`.
fn epoch_keys(namespace: &str, tag: char) -> Vec<String> {
    (0..SHARDS).map(|shard| format!("{namespace}:{{{tag}{shard:02}}}:epoch")).collect()
}

/// One round trip writing every epoch in `keys` that is missing, as `now`.
fn missing_epochs(keys: &[String], now: UnixTime) -> redis::Pipeline {
    let mut pipe = redis::pipe();
    for key in keys {
        pipe.cmd("SET").arg(key).arg(now.as_secs()).arg("NX").ignore();
    }
    pipe
}

/// `request`, bounded by `timeout`; a Redis error or a timeout is the store being unavailable.
async fn within<T>(
    timeout: Duration,
    request: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, ReplayStoreError> {
    match tokio::time::timeout(timeout, request).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(ReplayStoreError::Unavailable(format!("redis: {:?}", e.kind()))),
        Err(_) => Err(ReplayStoreError::Unavailable("redis: timed out".into())),
    }
}

/// `handoff:` and 16 hex digits of SHA-256 over the issuer and audience: one namespace per
/// pair, of fixed length whatever the URLs.
fn namespace(issuer: &Issuer, audience: &Audience) -> String {
    let both = format!("{}\n{}", issuer.as_str(), audience.as_str());
    let digest = ring::digest::digest(&ring::digest::SHA256, both.as_bytes());
    let hex: String = digest.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("handoff:{hex}")
}

impl ReplayStore for RedisReplayStore {
    /// `SET NX PX` alone, without the epoch: for callers that do not know the token's issue
    /// time. SERVER2 records uses through [`ReplayStore::record_use`].
    fn check_and_set(&self, jti: Jti, until: UnixTime, now: UnixTime) -> ReplayFuture<'_> {
        Box::pin(async move {
            let (_, key) = self.keys(jti);
            let ms = until.as_secs().saturating_sub(now.as_secs()).max(1) * 1000;
            let mut conn = self.conn.clone();
            let set: Option<String> = self
                .bounded(
                    redis::cmd("SET")
                        .arg(&key)
                        .arg(1)
                        .arg("NX")
                        .arg("PX")
                        .arg(ms)
                        .query_async(&mut conn),
                )
                .await?;
            Ok(if set.is_some() { Freshness::Fresh } else { Freshness::Replayed })
        })
    }

    fn record_use(
        &self,
        jti: Jti,
        issued_at: UnixTime,
        until: UnixTime,
        now: UnixTime,
    ) -> ReplayFuture<'_> {
        Box::pin(async move {
            let (epoch, key) = self.keys(jti);
            let ms = until.as_secs().saturating_sub(now.as_secs()).max(1) * 1000;
            let mut conn = self.conn.clone();
            let mut invocation = self.record_use.prepare_invoke();
            invocation.key(epoch).key(key).arg(now.as_secs()).arg(issued_at.as_secs()).arg(ms);
            let outcome: i64 = self.bounded(invocation.invoke_async(&mut conn)).await?;
            match outcome {
                1 => Ok(Freshness::Fresh),
                0 => Ok(Freshness::Replayed),
                2 => Ok(Freshness::Unvouched),
                other => {
                    Err(ReplayStoreError::Unavailable(format!("redis: script answered {other}")))
                }
            }
        })
    }

    /// Writes every shard's epoch that is missing (a Redis that restarted empty gets its epochs
    /// back within one probe, not at the first handoff of each shard), in one round trip.
    fn probe(&self) -> ProbeFuture<'_> {
        Box::pin(async move {
            let pipe = missing_epochs(&self.epochs, self.clock.now());
            let mut conn = self.conn.clone();
            self.bounded(pipe.query_async::<()>(&mut conn)).await
        })
    }

    fn is_available(&self) -> bool {
        self.available.load(Ordering::Relaxed)
    }
}

/// Ends a session (KEYS[2], when ARGV[3] is 1) or a user up to ARGV[2] (KEYS[3], keeping the
/// latest), remembered for ARGV[4] ms; writes the shard's epoch (KEYS[1]) when it is missing.
/// ARGV[1]: now (s).
const RECORD_LOGOUT: &str = r"
if not redis.call('GET', KEYS[1]) then
  redis.call('SET', KEYS[1], ARGV[1])
end
if ARGV[3] == '1' then
  redis.call('SET', KEYS[2], '1', 'PX', ARGV[4])
else
  local before = redis.call('GET', KEYS[3])
  if (not before) or tonumber(before) < tonumber(ARGV[2]) then
    redis.call('SET', KEYS[3], ARGV[2], 'PX', ARGV[4])
  else
    redis.call('PEXPIRE', KEYS[3], ARGV[4], 'GT')
  end
end
return 1
";

/// Whether something issued at ARGV[2] in session KEYS[2] (when ARGV[3] is 1) of the user whose
/// logouts are KEYS[3] has ended: also when it was issued before the shard's memory began
/// (KEYS[1], written now when missing). ARGV[1]: now (s). Returns 1 ended, 0 not.
const IS_ENDED: &str = r"
local epoch = redis.call('GET', KEYS[1])
if not epoch then
  redis.call('SET', KEYS[1], ARGV[1])
  epoch = ARGV[1]
end
if tonumber(ARGV[2]) < tonumber(epoch) then
  return 1
end
if ARGV[3] == '1' and redis.call('EXISTS', KEYS[2]) == 1 then
  return 1
end
local before = redis.call('GET', KEYS[3])
if before and tonumber(ARGV[2]) <= tonumber(before) then
  return 1
end
return 0
";

/// The revocation store several SERVER2 replicas share: the same Redis as the replay store.
///
/// Keys are spread over [`SHARDS`] hash tags by the user (`{rNN}`): a user's session and user
/// entries and their shard's epoch share a slot, so each script stays atomic on a Cluster.
/// Like the replay store, each shard keeps an **epoch** (when its memory began): a Redis that
/// restarted empty has forgotten logouts, so anything issued before its epoch counts as ended
/// (fail closed: the person opens the link again). The epochs are written by every probe, so
/// they exist before the first grant a new Redis could cover.
pub struct RedisRevocationStore {
    conn: ConnectionManager,
    record: redis::Script,
    is_ended: redis::Script,
    namespace: String,
    epochs: Vec<String>,
    timeout: Duration,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for RedisRevocationStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisRevocationStore")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl RedisRevocationStore {
    /// The store for logouts to the same issuer and audience as `replay`, on its connection
    /// (one connection to Redis per SERVER2, reconnected by whichever store needs it first).
    pub fn beside(replay: &RedisReplayStore) -> Self {
        let namespace = format!("{}:rev", replay.namespace);
        let epochs = epoch_keys(&namespace, 'r');
        Self {
            conn: replay.conn.clone(),
            record: redis::Script::new(RECORD_LOGOUT),
            is_ended: redis::Script::new(IS_ENDED),
            namespace,
            epochs,
            timeout: replay.timeout,
            clock: Arc::clone(&replay.clock),
        }
    }

    /// The user's shard: its epoch key, and the prefix of its keys.
    fn shard(&self, sub: &Subject) -> (&str, String) {
        let digest = ring::digest::digest(&ring::digest::SHA256, sub.as_str().as_bytes());
        let shard = u128::from(digest.as_ref()[0]) % SHARDS;
        let epoch = self.epochs.get(shard as usize).map_or("", String::as_str);
        (epoch, format!("{}:{{r{shard:02}}}", self.namespace))
    }

    async fn bounded<T>(
        &self,
        request: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, ReplayStoreError> {
        within(self.timeout, request).await
    }
}

impl RevocationStore for RedisRevocationStore {
    fn record(&self, ended: &Ended, before: UnixTime, until: UnixTime) -> RevocationFuture<'_, ()> {
        let ended = ended.clone();
        Box::pin(async move {
            // Every logout SERVER1 sends names the user; the key space is sharded by it.
            let Some(sub) = &ended.sub else {
                return Err(ReplayStoreError::Unavailable("a logout without `sub`".into()));
            };
            let (epoch, prefix) = self.shard(sub);
            let now = self.clock.now();
            let ms = until.as_secs().saturating_sub(now.as_secs()).max(1) * 1000;
            let session = ended.sid.as_ref().map(|sid| format!("{prefix}:s:{sid}"));
            let mut invocation = self.record.prepare_invoke();
            invocation
                .key(epoch)
                .key(session.as_deref().unwrap_or(epoch))
                .key(format!("{prefix}:u:{sub}"))
                .arg(now.as_secs())
                .arg(before.as_secs())
                .arg(if session.is_some() { "1" } else { "0" })
                .arg(ms);
            let mut conn = self.conn.clone();
            self.bounded(invocation.invoke_async::<i64>(&mut conn)).await.map(drop)
        })
    }

    fn is_ended<'a>(
        &'a self,
        sub: &'a Subject,
        sid: Option<&'a SessionRef>,
        issued_at: UnixTime,
        now: UnixTime,
    ) -> RevocationFuture<'a, bool> {
        Box::pin(async move {
            let (epoch, prefix) = self.shard(sub);
            let session = sid.map(|sid| format!("{prefix}:s:{sid}"));
            let mut invocation = self.is_ended.prepare_invoke();
            invocation
                .key(epoch)
                .key(session.as_deref().unwrap_or(epoch))
                .key(format!("{prefix}:u:{sub}"))
                .arg(now.as_secs())
                .arg(issued_at.as_secs())
                .arg(if session.is_some() { "1" } else { "0" });
            let mut conn = self.conn.clone();
            let ended: i64 = self.bounded(invocation.invoke_async(&mut conn)).await?;
            Ok(ended == 1)
        })
    }

    /// Writes every shard's missing epoch, in one round trip.
    fn probe(&self) -> RevocationFuture<'_, ()> {
        Box::pin(async move {
            let pipe = missing_epochs(&self.epochs, self.clock.now());
            let mut conn = self.conn.clone();
            self.bounded(pipe.query_async::<()>(&mut conn)).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_and_never_shown_with_their_password() {
        let unix = RedisUrl::parse("redis+unix:///run/redis/redis.sock?db=1").expect("unix");
        assert_eq!(unix.to_string(), "redis+unix:///run/redis/redis.sock");
        let url = RedisUrl::parse("rediss://user:s3cret@cache.example:6380/2").expect("url");
        for shown in [format!("{url}"), format!("{url:?}")] {
            assert!(!shown.contains("s3cret") && !shown.contains("user"), "{shown}");
            assert!(shown.contains("rediss://cache.example:6380/2"), "{shown}");
        }
        for bad in ["http://x", "redis://", "redis:x", "memory", "", "redis+unix://"] {
            assert!(RedisUrl::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn namespaces_differ_by_issuer_and_audience() {
        let iss = Issuer::parse("https://portal.example").expect("iss");
        let other_iss = Issuer::parse("https://other.example").expect("iss");
        let aud = Audience::parse("https://partner.example").expect("aud");
        let a = namespace(&iss, &aud);
        assert_eq!(a.len(), "handoff:".len() + 16);
        assert_ne!(a, namespace(&other_iss, &aud));
        // The keys a running Redis already holds keep their names.
        let keys = epoch_keys("handoff:ns", 's');
        assert_eq!((keys.len(), keys[3].as_str()), (16, "handoff:ns:{s03}:epoch"));
        assert_eq!(epoch_keys("handoff:ns:rev", 'r')[15], "handoff:ns:rev:{r15}:epoch");
    }
}
