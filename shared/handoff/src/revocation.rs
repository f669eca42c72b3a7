//! What a relying party remembers of the issuer's logouts: sessions that ended, and users all
//! of whose sessions ended before some time. Every grant and handoff token carries its user,
//! its issuer-side session (`sid`) and when it was issued; one that a logout covers is refused.
//!
//! Entries live only as long as something they cover could still be honoured (the longest
//! grant plus the leeway), so the memory they take is bounded by the logout rate.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;

use crate::logout::Ended;
use crate::replay::ReplayStoreError;
use crate::time::UnixTime;
use crate::values::{SessionRef, Subject};

/// The future a [`RevocationStore`] returns.
pub type RevocationFuture<'a, T> =
    Pin<Box<dyn Future<Output = Result<T, ReplayStoreError>> + Send + 'a>>;

/// Remembers logouts. An error means "cannot tell": the caller refuses (fail closed).
pub trait RevocationStore: Send + Sync + std::fmt::Debug + 'static {
    /// Records `ended`: its session, or (without one) everything of its user issued at or
    /// before `before`; remembered until `until`.
    fn record(&self, ended: &Ended, before: UnixTime, until: UnixTime) -> RevocationFuture<'_, ()>;

    /// Whether something of `sub`, from session `sid`, issued at `issued_at`, has been ended by
    /// a logout (or was issued before the store's memory begins, for a store that can tell).
    fn is_ended<'a>(
        &'a self,
        sub: &'a Subject,
        sid: Option<&'a SessionRef>,
        issued_at: UnixTime,
        now: UnixTime,
    ) -> RevocationFuture<'a, bool>;

    /// Entries held, when the store can tell cheaply.
    fn entries(&self) -> Option<usize> {
        None
    }

    /// Checks the store answers (and a shared store that restarted gets back what it needs
    /// before it is asked); for a periodic task.
    fn probe(&self) -> RevocationFuture<'_, ()> {
        Box::pin(async { Ok(()) })
    }
}

/// The in-memory store: one process's memory, bounded. It starts empty with the process, and
/// cannot share what it learns with replicas: several SERVER2s need the shared (Redis) store.
/// A look-up (on every handoff and operation request) takes the lock and two map probes by
/// borrowed keys: nothing is allocated.
#[derive(Debug)]
pub struct MemoryRevocationStore {
    capacity: usize,
    ended: Mutex<Maps>,
}

/// The ended sessions (until when to remember them) and users (everything issued up to
/// `before`; until when).
#[derive(Debug, Default)]
struct Maps {
    sessions: HashMap<String, u64>,
    users: HashMap<String, (u64, u64)>,
}

impl Maps {
    fn len(&self) -> usize {
        self.sessions.len() + self.users.len()
    }

    fn forget_expired(&mut self, now: u64) {
        self.sessions.retain(|_, until| *until > now);
        self.users.retain(|_, (_, until)| *until > now);
    }
}

impl MemoryRevocationStore {
    /// A store holding at most `capacity` live entries (at least one).
    pub fn new(capacity: usize) -> Self {
        Self { capacity: capacity.max(1), ended: Mutex::new(Maps::default()) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Maps> {
        // A panic while holding the lock leaves the maps consistent (each write is one insert).
        self.ended.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn record_now(&self, ended: &Ended, before: u64, until: u64) -> Result<(), ReplayStoreError> {
        let mut maps = self.lock();
        let known = match (&ended.sid, &ended.sub) {
            (Some(sid), _) => maps.sessions.contains_key(sid.as_str()),
            (None, Some(sub)) => maps.users.contains_key(sub.as_str()),
            (None, None) => return Ok(()),
        };
        if !known && maps.len() >= self.capacity {
            // Make room from what has expired (`before` is the logout's time, near enough to
            // now); a store full of live entries refuses, and the issuer retries later.
            maps.forget_expired(before);
            if maps.len() >= self.capacity {
                return Err(ReplayStoreError::Full);
            }
        }
        match (&ended.sid, &ended.sub) {
            (Some(sid), _) => {
                let entry = maps.sessions.entry(sid.as_str().to_owned()).or_insert(0);
                *entry = (*entry).max(until);
            }
            (None, Some(sub)) => {
                let entry = maps.users.entry(sub.as_str().to_owned()).or_insert((0, 0));
                *entry = (entry.0.max(before), entry.1.max(until));
            }
            (None, None) => {}
        }
        Ok(())
    }
}

impl RevocationStore for MemoryRevocationStore {
    fn record(&self, ended: &Ended, before: UnixTime, until: UnixTime) -> RevocationFuture<'_, ()> {
        let outcome = self.record_now(ended, before.as_secs(), until.as_secs());
        Box::pin(async move { outcome })
    }

    fn is_ended<'a>(
        &'a self,
        sub: &'a Subject,
        sid: Option<&'a SessionRef>,
        issued_at: UnixTime,
        now: UnixTime,
    ) -> RevocationFuture<'a, bool> {
        let (now, issued) = (now.as_secs(), issued_at.as_secs());
        let maps = self.lock();
        let session =
            sid.and_then(|sid| maps.sessions.get(sid.as_str())).is_some_and(|until| *until > now);
        let user = maps
            .users
            .get(sub.as_str())
            .is_some_and(|(before, until)| *until > now && issued <= *before);
        drop(maps);
        Box::pin(async move { Ok(session || user) })
    }

    fn entries(&self) -> Option<usize> {
        Some(self.lock().len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: u64) -> UnixTime {
        UnixTime::from_secs(s)
    }

    fn block<F: Future>(f: F) -> F::Output {
        // The memory store's futures are ready at once; poll once with a no-op waker.
        let mut f = std::pin::pin!(f);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match f.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(out) => out,
            std::task::Poll::Pending => panic!("memory store future was pending"),
        }
    }

    #[test]
    fn sessions_and_users_end_and_are_forgotten_when_nothing_they_cover_lives() {
        let store = MemoryRevocationStore::new(2);
        let alice = Subject::parse("u_alice").expect("sub");
        let (s1, s2) =
            (SessionRef::parse("s1").expect("sid"), SessionRef::parse("s2").expect("sid"));
        let ended = |sid: Option<&SessionRef>, sub: Option<&Subject>| Ended {
            sid: sid.cloned(),
            sub: sub.cloned(),
        };
        block(store.record(&ended(Some(&s1), Some(&alice)), t(100), t(200))).expect("record");
        assert!(
            block(store.is_ended(&alice, Some(&s1), t(150), t(150))).expect("q"),
            "that session"
        );
        assert!(
            !block(store.is_ended(&alice, Some(&s2), t(50), t(150))).expect("q"),
            "another session"
        );
        assert!(!block(store.is_ended(&alice, None, t(50), t(150))).expect("q"));
        assert!(
            !block(store.is_ended(&alice, Some(&s1), t(150), t(200))).expect("q"),
            "forgotten at `until`"
        );
        // Every session of the user, issued up to `before`.
        block(store.record(&ended(None, Some(&alice)), t(120), t(300))).expect("record");
        assert!(block(store.is_ended(&alice, Some(&s2), t(120), t(150))).expect("q"));
        assert!(
            !block(store.is_ended(&alice, Some(&s2), t(121), t(150))).expect("q"),
            "issued after"
        );
        let bob = Subject::parse("u_bob").expect("sub");
        assert!(!block(store.is_ended(&bob, None, t(1), t(150))).expect("q"));
        // Full of live entries: refused; once some expire, room again.
        let s3 = SessionRef::parse("s3").expect("sid");
        assert_eq!(
            block(store.record(&ended(Some(&s3), None), t(150), t(400))),
            Err(ReplayStoreError::Full)
        );
        block(store.record(&ended(Some(&s3), None), t(250), t(400)))
            .expect("s1 expired at 200: room");
        assert_eq!(store.entries(), Some(2));
        assert!(block(store.record(&ended(None, None), t(1), t(2))).is_ok(), "nothing to record");
    }
}
