//! Sign-in throttling: growing delays per account and per client address.
//!
//! Every failed sign-in counts against the submitted account name — whether or not the account
//! exists, so the throttle reveals nothing about which names are real — and against the client
//! address. Past a number of free attempts each further failure blocks that key for twice as
//! long as the last (1 s, 2 s, 4 s … up to 15 minutes). A success clears the account's count.
//! Memory is bounded: entries idle for an hour go first, then unblocked ones; entries that are
//! blocked right now are never evicted (that would let a flood of made-up names lift a block).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use handoff::UnixTime;

/// Free failures per account before delays start.
const ACCOUNT_FREE: u32 = 5;
/// Free failures per client address (higher: many users may share one address).
const CLIENT_FREE: u32 = 20;
/// Longest block.
const MAX_BLOCK_SECS: u64 = 15 * 60;
/// Entries idle this long are forgotten.
const IDLE_SECS: u64 = 3600;

/// What a failure is counted against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    /// A submitted account name (normalised).
    Account(String),
    /// A client address (IPv6 addresses by their /64: one host usually has the whole /64).
    Client(IpAddr),
}

impl Key {
    /// The key for a client address.
    pub fn client(ip: IpAddr) -> Key {
        match ip {
            IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                Key::Client(IpAddr::V6(prefix.into()))
            }
            IpAddr::V6(v6) => Key::Client(IpAddr::V4(
                v6.to_ipv4_mapped().unwrap_or(std::net::Ipv4Addr::UNSPECIFIED),
            )),
            IpAddr::V4(v4) => Key::Client(IpAddr::V4(v4)),
        }
    }
}

impl Key {
    fn free(&self) -> u32 {
        match self {
            Self::Account(_) => ACCOUNT_FREE,
            Self::Client(_) => CLIENT_FREE,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    blocked_until: u64,
    last: u64,
}

/// The throttle.
#[derive(Debug)]
pub struct Throttle {
    entries: Mutex<HashMap<Key, Entry>>,
    capacity: usize,
}

impl Throttle {
    /// A throttle remembering at most `capacity` keys.
    pub fn new(capacity: usize) -> Self {
        Self { entries: Mutex::new(HashMap::new()), capacity }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Entry>> {
        self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `Err(seconds to wait)` when any of `keys` is blocked at `now`.
    pub fn check(&self, keys: &[Key], now: UnixTime) -> Result<(), u64> {
        let entries = self.lock();
        let now = now.as_secs();
        let wait = keys
            .iter()
            .filter_map(|k| entries.get(k))
            .map(|e| e.blocked_until.saturating_sub(now))
            .max()
            .unwrap_or(0);
        if wait > 0 {
            Err(wait)
        } else {
            Ok(())
        }
    }

    /// Counts a failed sign-in against every key.
    pub fn failure(&self, keys: &[Key], now: UnixTime) {
        let mut entries = self.lock();
        let now = now.as_secs();
        // Room is needed only for keys not remembered yet, and the keys being counted are never
        // the ones making room: otherwise, in a full table, a key would be forgotten and start
        // again from one failure each time it failed, and never reach its delay.
        let incoming = keys.iter().filter(|k| !entries.contains_key(*k)).count();
        let full = |entries: &HashMap<Key, Entry>| entries.len() + incoming > self.capacity;
        if full(&entries) {
            // Make room, least valuable first: idle entries, then those that never reached a
            // delay, then — only if a flood of fresh keys left nothing else — the longest idle.
            // Entries that have earned a delay keep their count while active.
            entries.retain(|k, e| keys.contains(k) || now.saturating_sub(e.last) < IDLE_SECS);
            if full(&entries) {
                entries.retain(|k, e| {
                    keys.contains(k) || e.blocked_until > now || e.failures >= k.free()
                });
            }
            if full(&entries) {
                let mut by_age: Vec<(u64, Key)> = entries
                    .iter()
                    .filter(|(k, _)| !keys.contains(k))
                    .map(|(k, e)| (e.last, k.clone()))
                    .collect();
                by_age.sort_unstable_by_key(|(last, _)| *last);
                let excess = (entries.len() + incoming).saturating_sub(self.capacity);
                for (_, key) in by_age.into_iter().take(excess) {
                    entries.remove(&key);
                }
            }
        }
        for key in keys {
            let free = key.free();
            let entry = entries.entry(key.clone()).or_insert(Entry {
                failures: 0,
                blocked_until: 0,
                last: now,
            });
            if now.saturating_sub(entry.last) >= IDLE_SECS {
                entry.failures = 0;
            }
            entry.failures = entry.failures.saturating_add(1);
            entry.last = now;
            if entry.failures >= free {
                let doublings = (entry.failures - free).min(20);
                entry.blocked_until = now + (1u64 << doublings).min(MAX_BLOCK_SECS);
            }
        }
    }

    /// A successful sign-in clears the account's failures (not the client's).
    pub fn success(&self, account: &Key) {
        self.lock().remove(account);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_and_clear() {
        let t = Throttle::new(100);
        let alice = Key::Account("alice".into());
        let now = UnixTime::from_secs(1000);
        for _ in 0..ACCOUNT_FREE - 1 {
            t.failure(std::slice::from_ref(&alice), now);
            assert_eq!(t.check(std::slice::from_ref(&alice), now), Ok(()));
        }
        t.failure(std::slice::from_ref(&alice), now);
        assert_eq!(t.check(std::slice::from_ref(&alice), now), Err(1));
        t.failure(std::slice::from_ref(&alice), now.plus(1));
        assert_eq!(t.check(std::slice::from_ref(&alice), now.plus(1)), Err(2));
        t.failure(std::slice::from_ref(&alice), now.plus(3));
        assert_eq!(t.check(std::slice::from_ref(&alice), now.plus(3)), Err(4));
        assert_eq!(t.check(std::slice::from_ref(&alice), now.plus(7)), Ok(()));
        t.success(&alice);
        t.failure(std::slice::from_ref(&alice), now.plus(8));
        assert_eq!(t.check(std::slice::from_ref(&alice), now.plus(8)), Ok(()));
    }

    #[test]
    fn blocks_cap_at_fifteen_minutes_and_idle_resets() {
        let t = Throttle::new(100);
        let k = Key::Account("x".into());
        let now = UnixTime::from_secs(10);
        for _ in 0..100 {
            t.failure(std::slice::from_ref(&k), now);
        }
        assert_eq!(t.check(std::slice::from_ref(&k), now), Err(MAX_BLOCK_SECS));
        let later = now.plus(IDLE_SECS + 1);
        t.failure(std::slice::from_ref(&k), later);
        assert_eq!(t.check(std::slice::from_ref(&k), later), Ok(()));
    }

    #[test]
    fn bounded_without_lifting_blocks() {
        let t = Throttle::new(10);
        let now = UnixTime::from_secs(50);
        let blocked = Key::Account("victim".into());
        for _ in 0..ACCOUNT_FREE {
            t.failure(std::slice::from_ref(&blocked), now);
        }
        for i in 0..100 {
            t.failure(&[Key::Account(format!("spray{i}"))], now);
        }
        assert!(t.lock().len() <= 10);
        assert!(
            t.check(std::slice::from_ref(&blocked), now).is_err(),
            "a spray does not lift a block"
        );
    }

    /// One address spraying more names than the table holds is still slowed down: its own
    /// count is never what makes room for the next name.
    #[test]
    fn a_spray_that_fills_the_table_still_blocks_its_address() {
        let t = Throttle::new(10);
        let now = UnixTime::from_secs(50);
        let client = Key::client("192.0.2.9".parse().expect("ip"));
        for i in 0..CLIENT_FREE {
            t.failure(&[Key::Account(format!("spray{i}")), client.clone()], now);
        }
        assert!(t.lock().len() <= 10);
        assert!(t.check(std::slice::from_ref(&client), now).is_err(), "the address is blocked");
    }

    /// When every remembered key has earned a delay, the one idle longest makes room.
    #[test]
    fn full_of_earned_delays_the_longest_idle_goes() {
        let t = Throttle::new(3);
        let keys: Vec<Key> = (0..3).map(|i| Key::Account(format!("user{i}"))).collect();
        // Each blocked for about 17 minutes (capped at 15), a second apart.
        for (i, key) in keys.iter().enumerate() {
            for _ in 0..ACCOUNT_FREE + 10 {
                t.failure(std::slice::from_ref(key), UnixTime::from_secs(100 + i as u64));
            }
        }
        // The table filled up at the third key: its later failures still counted.
        assert_eq!(t.lock()[&keys[2]].failures, ACCOUNT_FREE + 10);
        let now = UnixTime::from_secs(104);
        t.failure(&[Key::Account("newcomer".into())], now);
        assert!(t.lock().len() <= 3);
        assert_eq!(t.check(&keys[..1], now), Ok(()), "the longest idle was forgotten");
        for key in &keys[1..] {
            assert!(t.check(std::slice::from_ref(key), now).is_err(), "{key:?} keeps its delay");
        }
    }

    #[test]
    fn ipv6_clients_count_by_slash_64() {
        let a: IpAddr = "2001:db8::1".parse().expect("ip");
        let b: IpAddr = "2001:db8::ffff:1234".parse().expect("ip");
        let c: IpAddr = "2001:db8:0:1::1".parse().expect("ip");
        assert_eq!(Key::client(a), Key::client(b));
        assert_ne!(Key::client(a), Key::client(c));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().expect("ip");
        assert_eq!(Key::client(mapped), Key::Client("192.0.2.7".parse().expect("ip")));
    }
}
