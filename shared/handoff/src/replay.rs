//! Single use: the replay store remembers every accepted `jti` until its token could no longer
//! pass the `exp` check, and refuses a second use.
//!
//! [`ReplayStore::check_and_set`] is atomic: of two concurrent uses of one token exactly one is
//! [`Freshness::Fresh`]. The in-memory store is the default for a single SERVER2; several replicas
//! need a shared store (SERVER2's Redis store) behind the same trait.
//!
//! A store can only vouch for uses it could have seen: one that started empty (a new process, a
//! Redis that restarted without its data) knows nothing of tokens used before. A relying party
//! records uses through [`ReplayStore::record_use`], which answers [`Freshness::Unvouched`] for a
//! token issued before the store's memory begins.

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;

use crate::time::UnixTime;
use crate::values::Jti;

/// The outcome of recording a `jti`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// First use: recorded.
    Fresh,
    /// Seen before: refuse.
    Replayed,
    /// Issued before the store's memory begins: it cannot know whether the token was used, so
    /// refuse (the person opens the link again; tokens live a minute).
    Unvouched,
}

/// Why the store could not decide. Callers must refuse the token (fail closed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplayStoreError {
    /// The store is at its bound and holds only live entries.
    #[error("replay store full")]
    Full,
    /// The store is unreachable or failed.
    #[error("replay store unavailable: {0}")]
    Unavailable(String),
}

/// The future returned by [`ReplayStore::check_and_set`].
pub type ReplayFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Freshness, ReplayStoreError>> + Send + 'a>>;

/// The future returned by [`ReplayStore::probe`].
pub type ProbeFuture<'a> = Pin<Box<dyn Future<Output = Result<(), ReplayStoreError>> + Send + 'a>>;

/// Remembers used token ids.
pub trait ReplayStore: Send + Sync + std::fmt::Debug + 'static {
    /// Atomically records `jti` until `until`, or reports that it is already recorded.
    /// `now` lets the store drop entries that have expired.
    fn check_and_set(&self, jti: Jti, until: UnixTime, now: UnixTime) -> ReplayFuture<'_>;

    /// Number of entries held (expired ones may linger until swept), when the store can tell
    /// cheaply.
    fn entries(&self) -> Option<usize> {
        None
    }

    /// The earliest issue time this store can vouch for. A store that starts empty with the
    /// process cannot know whether a token issued before then was used with the process before,
    /// so such tokens must be refused. `None`: the store remembers every live token (it is
    /// shared and outlives processes).
    fn remembers_since(&self) -> Option<UnixTime> {
        None
    }

    /// Drops every expired entry now, for a periodic task; stores that expire entries on their
    /// own need not do anything.
    fn purge_expired(&self, now: UnixTime) {
        let _ = now;
    }

    /// Records a use of the token `jti`, issued at `issued_at`, until `until`: as
    /// [`ReplayStore::check_and_set`], but [`Freshness::Unvouched`] when the token was issued
    /// before the store's memory begins. A shared store that can lose its memory (a restart)
    /// must decide this atomically with the write; the default uses
    /// [`ReplayStore::remembers_since`].
    fn record_use(
        &self,
        jti: Jti,
        issued_at: UnixTime,
        until: UnixTime,
        now: UnixTime,
    ) -> ReplayFuture<'_> {
        if self.remembers_since().is_some_and(|since| issued_at < since) {
            return Box::pin(std::future::ready(Ok(Freshness::Unvouched)));
        }
        self.check_and_set(jti, until, now)
    }

    /// Checks that the store can take writes now (a round trip for a remote one), for a periodic
    /// task; the result is what [`ReplayStore::is_available`] reports until the next check.
    fn probe(&self) -> ProbeFuture<'_> {
        Box::pin(std::future::ready(Ok(())))
    }

    /// Whether the store answered its last request or probe: what readiness reports.
    fn is_available(&self) -> bool {
        true
    }
}

const SHARDS: usize = 16;

/// An in-memory replay store: sharded sets of `jti`s, each also filed by the second it expires,
/// bounded in size.
///
/// A shard forgets what has expired whenever it is used, at the cost of what expired (ids are
/// filed by second: no use ever scans the live ones), so a full shard holds only live entries.
/// At the bound with every entry still live, it answers [`ReplayStoreError::Full`] rather than
/// evict a live entry: evicting would let that token be replayed.
#[derive(Debug)]
pub struct MemoryReplayStore {
    shards: Box<[Mutex<Shard>]>,
    per_shard: usize,
    created: UnixTime,
}

/// One lock's worth of the store: the ids, and the same ids by the second they expire, so
/// expiring costs what expires (a second's worth of ids), never a scan of every live one.
#[derive(Debug, Default)]
struct Shard {
    /// Every id whose `until` is still ahead (after the sweep of the current second).
    ids: HashSet<u128>,
    /// The ids by the second they stop mattering (`until`), earliest first.
    expiring: BTreeMap<u64, Vec<u128>>,
}

impl Shard {
    /// Forgets every id whose `until` is at or before `now`.
    fn sweep(&mut self, now: u64) {
        let mut swept = false;
        while let Some(entry) = self.expiring.first_entry() {
            if *entry.key() > now {
                break;
            }
            for id in entry.remove() {
                self.ids.remove(&id);
            }
            swept = true;
        }
        // Give memory back once a burst has passed.
        if swept && self.ids.capacity() > 1024 && self.ids.len() < self.ids.capacity() / 4 {
            self.ids.shrink_to(self.ids.len() * 2);
        }
    }
}

impl MemoryReplayStore {
    /// An empty store, made at `now`, holding at most `capacity` live entries (rounded up to a
    /// multiple of 16).
    pub fn new(capacity: usize, now: UnixTime) -> Self {
        let per_shard = capacity.div_ceil(SHARDS).max(1);
        let shards = (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect();
        Self { shards, per_shard, created: now }
    }

    /// The bound on live entries.
    pub fn capacity(&self) -> usize {
        self.per_shard * SHARDS
    }

    fn record(
        &self,
        jti: Jti,
        until: UnixTime,
        now: UnixTime,
    ) -> Result<Freshness, ReplayStoreError> {
        let key = jti.as_u128();
        // jti values are random, so their low bits spread entries evenly over the shards.
        let index = (key as usize) % SHARDS;
        let mut shard = match self.shards[index].lock() {
            Ok(guard) => guard,
            // A panic while holding the lock cannot leave the map half-updated in a way that
            // matters here (insert is the only mutation); keep serving.
            Err(poisoned) => poisoned.into_inner(),
        };
        let now = now.as_secs();
        // Costs what has expired since the last use of this shard (nothing, mostly).
        shard.sweep(now);
        if shard.ids.contains(&key) {
            return Ok(Freshness::Replayed);
        }
        if shard.ids.len() >= self.per_shard {
            return Err(ReplayStoreError::Full);
        }
        shard.ids.insert(key);
        shard.expiring.entry(until.as_secs()).or_default().push(key);
        Ok(Freshness::Fresh)
    }

    fn live_entries(&self) -> usize {
        self.shards
            .iter()
            .map(|s| match s.lock() {
                Ok(guard) => guard.ids.len(),
                Err(poisoned) => poisoned.into_inner().ids.len(),
            })
            .sum()
    }
}

impl ReplayStore for MemoryReplayStore {
    fn check_and_set(&self, jti: Jti, until: UnixTime, now: UnixTime) -> ReplayFuture<'_> {
        let outcome = self.record(jti, until, now);
        Box::pin(std::future::ready(outcome))
    }

    fn entries(&self) -> Option<usize> {
        Some(self.live_entries())
    }

    /// Made empty with this process: it knows nothing used before.
    fn remembers_since(&self) -> Option<UnixTime> {
        Some(self.created)
    }

    /// Sweeps every shard (the store also does this lazily, shard by shard).
    fn purge_expired(&self, now: UnixTime) {
        for shard in self.shards.iter() {
            match shard.lock() {
                Ok(mut guard) => guard.sweep(now.as_secs()),
                Err(poisoned) => poisoned.into_inner().sweep(now.as_secs()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;

    fn block<F: Future>(f: F) -> F::Output {
        // The memory store's futures are ready at once; poll once with a no-op waker.
        let mut f = std::pin::pin!(f);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match f.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(out) => out,
            std::task::Poll::Pending => panic!("memory store future was pending"),
        }
    }

    /// A store that is not the in-memory one: the trait's defaults.
    #[derive(Debug)]
    struct Shared;

    impl ReplayStore for Shared {
        fn check_and_set(&self, _: Jti, _: UnixTime, _: UnixTime) -> ReplayFuture<'_> {
            Box::pin(std::future::ready(Ok(Freshness::Fresh)))
        }
    }

    #[test]
    fn only_a_store_made_with_the_process_limits_what_it_vouches_for() {
        let made = UnixTime::from_secs(5_000);
        assert_eq!(MemoryReplayStore::new(16, made).remembers_since(), Some(made));
        assert_eq!(Shared.remembers_since(), None);
        Shared.purge_expired(made);
    }

    #[test]
    fn a_use_from_before_the_store_began_is_unvouched() {
        let made = UnixTime::from_secs(5_000);
        let store = MemoryReplayStore::new(16, made);
        let rng = SystemRandom::new();
        let jti = Jti::generate(&rng).expect("rng");
        let until = made.plus(60);
        let before = made.minus(1);
        assert_eq!(block(store.record_use(jti, before, until, made)), Ok(Freshness::Unvouched));
        assert_eq!(block(store.record_use(jti, made, until, made)), Ok(Freshness::Fresh));
        assert_eq!(block(store.record_use(jti, made, until, made)), Ok(Freshness::Replayed));
        // A store that outlives processes vouches for everything.
        assert_eq!(block(Shared.record_use(jti, before, until, made)), Ok(Freshness::Fresh));
        assert!(Shared.is_available() && block(Shared.probe()).is_ok());
    }

    #[test]
    fn second_use_is_replayed_until_expiry() {
        let store = MemoryReplayStore::new(100, UnixTime::from_secs(0));
        let jti = Jti::generate(&SystemRandom::new()).expect("rng");
        let t = UnixTime::from_secs(1000);
        assert_eq!(block(store.check_and_set(jti, t.plus(60), t)), Ok(Freshness::Fresh));
        assert_eq!(
            block(store.check_and_set(jti, t.plus(60), t.plus(59))),
            Ok(Freshness::Replayed)
        );
        // After expiry the entry is gone (and the token itself would fail the exp check).
        assert_eq!(block(store.check_and_set(jti, t.plus(200), t.plus(60))), Ok(Freshness::Fresh));
    }

    #[test]
    fn full_store_refuses_instead_of_evicting() {
        let store = MemoryReplayStore::new(SHARDS, UnixTime::from_secs(0));
        let rng = SystemRandom::new();
        let t = UnixTime::from_secs(1000);
        let mut fresh = 0;
        let mut full = 0;
        let mut accepted = Vec::new();
        for _ in 0..200 {
            let jti = Jti::generate(&rng).expect("rng");
            match block(store.check_and_set(jti, t.plus(60), t)) {
                Ok(Freshness::Fresh) => {
                    fresh += 1;
                    accepted.push(jti);
                }
                Err(ReplayStoreError::Full) => full += 1,
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(fresh <= store.capacity());
        assert!(full >= 200 - store.capacity());
        // Every accepted entry is still remembered: nothing was evicted.
        for jti in accepted {
            assert_eq!(block(store.check_and_set(jti, t.plus(60), t)), Ok(Freshness::Replayed));
        }
        // Once they expire, room comes back.
        let later = t.plus(61);
        let jti = Jti::generate(&rng).expect("rng");
        assert_eq!(block(store.check_and_set(jti, later.plus(60), later)), Ok(Freshness::Fresh));
        store.purge_expired(later);
        assert_eq!(store.entries(), Some(1));
    }

    #[test]
    fn entries_expire_by_their_own_second_in_any_order() {
        let store = MemoryReplayStore::new(10_000, UnixTime::from_secs(0));
        let rng = SystemRandom::new();
        let t = UnixTime::from_secs(1000);
        // Expiries out of order, as tokens of several lifetimes arrive.
        let mut ids = Vec::new();
        for n in 0..100u64 {
            let jti = Jti::generate(&rng).expect("rng");
            let until = t.plus(1 + (n * 37) % 100);
            assert_eq!(block(store.check_and_set(jti, until, t)), Ok(Freshness::Fresh));
            ids.push((jti, until));
        }
        let middle = t.plus(50);
        store.purge_expired(middle);
        assert_eq!(store.entries(), Some(50), "those with until > now stay");
        for (jti, until) in &ids {
            let expected = if *until > middle { Freshness::Replayed } else { Freshness::Fresh };
            assert_eq!(block(store.check_and_set(*jti, t.plus(200), middle)), Ok(expected));
        }
        // The first uses are all gone at t + 100; the 50 used again expire at t + 200.
        store.purge_expired(t.plus(100));
        assert_eq!(store.entries(), Some(50));
        store.purge_expired(t.plus(199));
        assert_eq!(store.entries(), Some(50));
        store.purge_expired(t.plus(200));
        assert_eq!(store.entries(), Some(0));
    }

    #[test]
    fn concurrent_uses_have_one_winner() {
        let store = std::sync::Arc::new(MemoryReplayStore::new(1000, UnixTime::from_secs(0)));
        let jti = Jti::generate(&SystemRandom::new()).expect("rng");
        let t = UnixTime::from_secs(5);
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let store = store.clone();
                std::thread::spawn(move || block(store.check_and_set(jti, t.plus(60), t)))
            })
            .collect();
        let fresh = handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .filter(|r| *r == Ok(Freshness::Fresh))
            .count();
        assert_eq!(fresh, 1);
    }
}
