//! Sign-in throttling: growing delays per account and per client address.
//!
//! Every failed sign-in counts against the submitted account name — whether or not the account
//! exists, so the throttle reveals nothing about which names are real — and against the client
//! address. Past a number of free attempts each further failure blocks that key for twice as
//! long as the last (1 s, 2 s, 4 s … up to 15 minutes). A success clears the account's count.
//! The counts live in the database, so every SERVER1 replica on it counts toward one throttle;
//! counts idle for an hour start again, and are swept with the expired sessions. A key that is
//! blocked is never swept, so a flood of made-up names cannot lift a block.

use std::net::IpAddr;

use handoff::UnixTime;

use crate::db::{Db, DbError};

/// Free failures per account before delays start.
const ACCOUNT_FREE: u32 = 5;
/// Free failures per client address (higher: many users may share one address).
const CLIENT_FREE: u32 = 20;
/// Longest block.
const MAX_BLOCK_SECS: u64 = 15 * 60;
/// Counts idle this long start again (and are swept).
pub const IDLE_SECS: u64 = 3600;

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

    /// The key's row in the database.
    fn id(&self) -> String {
        match self {
            Self::Account(name) => format!("account:{name}"),
            Self::Client(ip) => format!("client:{ip}"),
        }
    }

    /// Until when a key with `failures` is blocked, if it is.
    fn blocked_until(&self, failures: u32, now: u64) -> Option<u64> {
        let free = self.free();
        (failures >= free).then(|| {
            let doublings = (failures - free).min(20);
            now + (1u64 << doublings).min(MAX_BLOCK_SECS)
        })
    }
}

/// `Ok(Err(seconds to wait))` when any of `keys` is blocked at `now`.
///
/// # Errors
///
/// When the database fails (the sign-in is then refused: fail closed).
pub async fn check(db: &Db, keys: &[Key], now: UnixTime) -> Result<Result<(), u64>, DbError> {
    let ids: Vec<String> = keys.iter().map(Key::id).collect();
    let wait = db.throttle_blocked_until(&ids).await?.saturating_sub(now.as_secs());
    Ok(if wait > 0 { Err(wait) } else { Ok(()) })
}

/// Counts a failed sign-in against every key.
///
/// # Errors
///
/// When the database fails.
pub async fn failure(db: &Db, keys: &[Key], now: UnixTime) -> Result<(), DbError> {
    for key in keys {
        let id = key.id();
        let counted = db.throttle_count(&id, now, IDLE_SECS).await?;
        if let Some(until) = key.blocked_until(counted.failures, now.as_secs()) {
            db.throttle_block(&id, until).await?;
        }
    }
    Ok(())
}

/// A successful sign-in clears the account's failures (not the client's).
///
/// # Errors
///
/// When the database fails.
pub async fn success(db: &Db, account: &Key) -> Result<(), DbError> {
    db.throttle_clear(&account.id()).await
}

/// How much mail the account forms may cause per hour: to one address, and for one client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MailLimits {
    /// Messages to one address (`SERVER1_MAIL_LIMIT_PER_ADDRESS`).
    pub per_address: u32,
    /// Messages caused by one client address (`SERVER1_MAIL_LIMIT_PER_CLIENT`).
    pub per_client: u32,
}

/// Counts one message that `client` asks for and answers whether it is within the limit
/// (counts idle for an hour start again). A request without a known client address counts
/// against one shared key, so it is limited too.
///
/// # Errors
///
/// When the database fails (the request is then refused: fail closed).
pub async fn mail_from_client(
    db: &Db,
    client: Option<IpAddr>,
    limits: MailLimits,
    now: UnixTime,
) -> Result<bool, DbError> {
    let key = match client.map(Key::client) {
        Some(Key::Client(ip)) => format!("mail-from:{ip}"),
        _ => "mail-from:unknown".to_owned(),
    };
    let counted = db.throttle_count(&key, now, IDLE_SECS).await?;
    Ok(counted.failures <= limits.per_client)
}

/// Counts one message to `address` and answers whether it is within the limit.
///
/// # Errors
///
/// When the database fails.
pub async fn mail_to_address(
    db: &Db,
    address: &str,
    limits: MailLimits,
    now: UnixTime,
) -> Result<bool, DbError> {
    let counted = db.throttle_count(&format!("mail-to:{address}"), now, IDLE_SECS).await?;
    Ok(counted.failures <= limits.per_address)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::{DatabaseUrl, OpenMode, PoolSettings};

    #[tokio::test]
    async fn mail_limits_count_per_address_and_per_client_for_an_hour() {
        let (t, _dir) = db().await;
        let limits = MailLimits { per_address: 2, per_client: 3 };
        let now = UnixTime::from_secs(5000);
        let to = |a: &'static str, at: UnixTime| {
            let t = &t;
            async move { mail_to_address(t, a, limits, at).await.expect("count") }
        };
        assert!(to("a@example.com", now).await && to("a@example.com", now).await);
        assert!(!to("a@example.com", now).await, "the third to one address");
        assert!(to("b@example.com", now).await, "another address has its own count");
        assert!(to("a@example.com", now.plus(IDLE_SECS)).await, "an hour later it starts again");
        let ip: IpAddr = "198.51.100.4".parse().expect("ip");
        for _ in 0..3 {
            assert!(mail_from_client(&t, Some(ip), limits, now).await.expect("count"));
        }
        assert!(!mail_from_client(&t, Some(ip), limits, now).await.expect("count"));
        for _ in 0..3 {
            assert!(mail_from_client(&t, None, limits, now).await.expect("count"));
        }
        assert!(
            !mail_from_client(&t, None, limits, now).await.expect("count"),
            "unknown clients share one count"
        );
    }

    async fn db() -> (Db, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = DatabaseUrl::Sqlite(dir.path().join("t.sqlite3"));
        let pool = PoolSettings { size: 1, timeout: std::time::Duration::from_secs(2) };
        (Db::open(&url, OpenMode::CreateIfMissing, pool).await.expect("db"), dir)
    }

    async fn fail(db: &Db, keys: &[Key], now: UnixTime) {
        failure(db, keys, now).await.expect("count");
    }

    async fn wait(db: &Db, keys: &[Key], now: UnixTime) -> Result<(), u64> {
        check(db, keys, now).await.expect("check")
    }

    #[tokio::test]
    async fn delays_grow_and_clear() {
        let (t, _dir) = db().await;
        let alice = Key::Account("alice".into());
        let now = UnixTime::from_secs(1000);
        for _ in 0..ACCOUNT_FREE - 1 {
            fail(&t, std::slice::from_ref(&alice), now).await;
            assert_eq!(wait(&t, std::slice::from_ref(&alice), now).await, Ok(()));
        }
        fail(&t, std::slice::from_ref(&alice), now).await;
        assert_eq!(wait(&t, std::slice::from_ref(&alice), now).await, Err(1));
        fail(&t, std::slice::from_ref(&alice), now.plus(1)).await;
        assert_eq!(wait(&t, std::slice::from_ref(&alice), now.plus(1)).await, Err(2));
        fail(&t, std::slice::from_ref(&alice), now.plus(3)).await;
        assert_eq!(wait(&t, std::slice::from_ref(&alice), now.plus(3)).await, Err(4));
        assert_eq!(wait(&t, std::slice::from_ref(&alice), now.plus(7)).await, Ok(()));
        success(&t, &alice).await.expect("clear");
        fail(&t, std::slice::from_ref(&alice), now.plus(8)).await;
        assert_eq!(wait(&t, std::slice::from_ref(&alice), now.plus(8)).await, Ok(()));
    }

    #[tokio::test]
    async fn blocks_cap_at_fifteen_minutes_and_idle_resets() {
        let (t, _dir) = db().await;
        let k = Key::Account("x".into());
        let now = UnixTime::from_secs(10);
        for _ in 0..100 {
            fail(&t, std::slice::from_ref(&k), now).await;
        }
        assert_eq!(wait(&t, std::slice::from_ref(&k), now).await, Err(MAX_BLOCK_SECS));
        let later = now.plus(IDLE_SECS + 1);
        fail(&t, std::slice::from_ref(&k), later).await;
        assert_eq!(wait(&t, std::slice::from_ref(&k), later).await, Ok(()));
    }

    /// A spray of made-up names lifts no block, and the address spraying them is slowed down;
    /// sweeping idle counts keeps the blocked ones.
    #[tokio::test]
    async fn a_spray_lifts_no_block_and_blocks_its_address() {
        let (t, _dir) = db().await;
        let now = UnixTime::from_secs(50);
        let blocked = Key::Account("victim".into());
        for _ in 0..ACCOUNT_FREE {
            fail(&t, std::slice::from_ref(&blocked), now).await;
        }
        let client = Key::client("192.0.2.9".parse().expect("ip"));
        for i in 0..CLIENT_FREE {
            fail(&t, &[Key::Account(format!("spray{i}")), client.clone()], now).await;
        }
        assert!(wait(&t, std::slice::from_ref(&blocked), now).await.is_err(), "still blocked");
        assert!(wait(&t, std::slice::from_ref(&client), now).await.is_err(), "the address too");
        // A sweep with every count idle forgets the sprayed names, not the blocks.
        let swept = t.purge(now, 0).await.expect("purge");
        assert_eq!(swept, CLIENT_FREE as usize, "the sprayed names");
        assert!(wait(&t, std::slice::from_ref(&blocked), now).await.is_err(), "still blocked");
        assert!(wait(&t, std::slice::from_ref(&client), now).await.is_err(), "the address too");
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
