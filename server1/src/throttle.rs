//! Sign-in throttling: growing delays per account *and client address*, per client address,
//! and a slower ceiling per account.
//!
//! Every failed sign-in counts against the submitted account name (under each name it is known
//! by, whether or not the account exists, so the throttle reveals nothing about which names are
//! real) paired with the client address, against the client address alone, and against the
//! account alone. Past a number of free attempts each further failure blocks that key for twice
//! as long as the last (1 s, 2 s, 4 s … up to 15 minutes):
//!
//! - **account and client**: 5 free failures. One client guessing one account is slowed at
//!   once, and nobody else is: failing five sign-ins as someone no longer locks them out.
//! - **client**: 20 free failures, across any names (one address spraying many accounts).
//! - **account**: 20 free failures from all clients together (guessing spread over many
//!   addresses). This ceiling stops only clients that have themselves failed on the account
//!   (and clients without a known address): the owner, signing in from a client that did not
//!   fail, is let through.
//!
//! A success clears the account-and-client counts of that client, not the others (an owner
//! signing in does not give an attacker elsewhere new attempts). The counts live in the database,
//! so every SERVER1 replica on it counts toward one throttle; counts idle for an hour start again,
//! and are swept with the expired sessions. A key that is blocked is never swept, so a flood of
//! made-up names cannot lift a block.

use std::net::IpAddr;

use handoff::UnixTime;

use crate::db::{Db, DbError};

/// Free failures per account from one client before delays start.
const ACCOUNT_CLIENT_FREE: u32 = 5;
/// Free failures per client address (higher: many users may share one address).
const CLIENT_FREE: u32 = 20;
/// Free failures per account from all clients together: the ceiling on spread-out guessing.
const ACCOUNT_CEILING_FREE: u32 = 20;
/// Longest block.
const MAX_BLOCK_SECS: u64 = 15 * 60;
/// Counts idle this long start again (and are swept).
pub const IDLE_SECS: u64 = 3600;

/// What a failure is counted against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    /// A submitted account name (normalised), from any client: the ceiling.
    Account(String),
    /// A submitted account name from one client address.
    AccountClient(String, IpAddr),
    /// A client address.
    Client(IpAddr),
}

/// A client address as the throttle counts it: IPv6 addresses by their /64 (one host usually
/// has the whole /64), IPv4-mapped ones as IPv4.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
        IpAddr::V4(v4) => IpAddr::V4(v4),
    }
}

impl Key {
    fn free(&self) -> u32 {
        match self {
            Self::Account(_) => ACCOUNT_CEILING_FREE,
            Self::AccountClient(..) => ACCOUNT_CLIENT_FREE,
            Self::Client(_) => CLIENT_FREE,
        }
    }

    /// The key's row in the database.
    fn id(&self) -> String {
        match self {
            Self::Account(name) => format!("account:{name}"),
            Self::AccountClient(name, ip) => format!("account-client:{ip} {name}"),
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

/// A sign-in attempt (or a check of the current password) as the throttle sees it: the names
/// the account goes by and the client's address, if known.
#[derive(Debug, Clone)]
pub struct Attempt {
    accounts: Vec<String>,
    client: Option<IpAddr>,
}

impl Attempt {
    /// An attempt on `account` from `client`.
    pub fn new(account: String, client: Option<IpAddr>) -> Self {
        Self { accounts: vec![account], client: client.map(client_key) }
    }

    /// The same account under another name (its id, once the account is found).
    pub fn also_known_as(&mut self, account: String) {
        self.accounts.push(account);
    }

    /// The keys whose blocks always apply: this client's, on its own and on each name.
    fn client_keys(&self) -> Vec<Key> {
        let Some(ip) = self.client else { return Vec::new() };
        let mut keys = vec![Key::Client(ip)];
        keys.extend(self.accounts.iter().map(|a| Key::AccountClient(a.clone(), ip)));
        keys
    }

    fn account_keys(&self) -> impl Iterator<Item = Key> + '_ {
        self.accounts.iter().cloned().map(Key::Account)
    }
}

/// `Ok(Err(seconds to wait))` when the attempt is blocked at `now`.
///
/// # Errors
///
/// When the database fails (the sign-in is then refused: fail closed).
pub async fn check(db: &Db, attempt: &Attempt, now: UnixTime) -> Result<Result<(), u64>, DbError> {
    let ids: Vec<String> = attempt.client_keys().iter().map(Key::id).collect();
    let wait = db.throttle_blocked_until(&ids).await?.saturating_sub(now.as_secs());
    if wait > 0 {
        return Ok(Err(wait));
    }
    // The account's ceiling, for a client that has failed on it (or one without an address).
    let ids: Vec<String> = attempt.account_keys().map(|k| k.id()).collect();
    let wait = db.throttle_blocked_until(&ids).await?.saturating_sub(now.as_secs());
    if wait == 0 {
        return Ok(Ok(()));
    }
    let failed_here = match attempt.client {
        None => true,
        Some(ip) => {
            let mut failed = false;
            for account in &attempt.accounts {
                let key = Key::AccountClient(account.clone(), ip);
                failed |= db.throttle_failures(&key.id(), now, IDLE_SECS).await? > 0;
            }
            failed
        }
    };
    Ok(if failed_here { Err(wait) } else { Ok(()) })
}

/// Counts a failed attempt against every key.
///
/// # Errors
///
/// When the database fails.
pub async fn failure(db: &Db, attempt: &Attempt, now: UnixTime) -> Result<(), DbError> {
    for key in attempt.client_keys().into_iter().chain(attempt.account_keys()) {
        let id = key.id();
        let counted = db.throttle_count(&id, now, IDLE_SECS).await?;
        if let Some(until) = key.blocked_until(counted.failures, now.as_secs()) {
            db.throttle_block(&id, until).await?;
        }
    }
    Ok(())
}

/// A success clears this client's counts on the account (not the account's ceiling, and not
/// the client's own count).
///
/// # Errors
///
/// When the database fails.
pub async fn success(db: &Db, attempt: &Attempt) -> Result<(), DbError> {
    for key in attempt.client_keys().into_iter().filter(|k| matches!(k, Key::AccountClient(..))) {
        db.throttle_clear(&key.id()).await?;
    }
    Ok(())
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
    let key = match client.map(client_key) {
        Some(ip) => format!("mail-from:{ip}"),
        None => "mail-from:unknown".to_owned(),
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

    async fn fail(db: &Db, attempt: &Attempt, now: UnixTime) {
        failure(db, attempt, now).await.expect("count");
    }

    async fn wait(db: &Db, attempt: &Attempt, now: UnixTime) -> Result<(), u64> {
        check(db, attempt, now).await.expect("check")
    }

    fn from(account: &str, ip: &str) -> Attempt {
        Attempt::new(account.into(), Some(ip.parse().expect("ip")))
    }

    #[tokio::test]
    async fn delays_grow_and_clear() {
        let (t, _dir) = db().await;
        let alice = from("alice", "192.0.2.1");
        let now = UnixTime::from_secs(1000);
        for _ in 0..ACCOUNT_CLIENT_FREE - 1 {
            fail(&t, &alice, now).await;
            assert_eq!(wait(&t, &alice, now).await, Ok(()));
        }
        fail(&t, &alice, now).await;
        assert_eq!(wait(&t, &alice, now).await, Err(1));
        fail(&t, &alice, now.plus(1)).await;
        assert_eq!(wait(&t, &alice, now.plus(1)).await, Err(2));
        fail(&t, &alice, now.plus(3)).await;
        assert_eq!(wait(&t, &alice, now.plus(3)).await, Err(4));
        assert_eq!(wait(&t, &alice, now.plus(7)).await, Ok(()));
        success(&t, &alice).await.expect("clear");
        fail(&t, &alice, now.plus(8)).await;
        assert_eq!(wait(&t, &alice, now.plus(8)).await, Ok(()));
    }

    /// Security round two, finding 10: failing five sign-ins as someone no longer locks them
    /// out; guessing spread over many addresses meets the account's ceiling, which stops the
    /// clients that failed and not the owner's.
    #[tokio::test]
    async fn failures_elsewhere_do_not_lock_the_owner_out() {
        let (t, _dir) = db().await;
        let now = UnixTime::from_secs(2000);
        let attacker = from("alice", "203.0.113.1");
        for _ in 0..ACCOUNT_CLIENT_FREE {
            fail(&t, &attacker, now).await;
        }
        assert!(wait(&t, &attacker, now).await.is_err(), "the guessing client waits");
        let owner = from("alice", "198.51.100.7");
        assert_eq!(wait(&t, &owner, now).await, Ok(()), "the owner does not");
        // Spread over many addresses: the ceiling.
        for i in 0..ACCOUNT_CEILING_FREE {
            fail(&t, &from("alice", &format!("203.0.113.{}", 10 + i)), now).await;
        }
        assert!(
            wait(&t, &from("alice", "203.0.113.12"), now).await.is_err(),
            "a client that failed"
        );
        assert!(wait(&t, &Attempt::new("alice".into(), None), now).await.is_err(), "no address");
        assert_eq!(wait(&t, &owner, now).await, Ok(()), "still not the owner's client");
        // The owner's success clears nothing of the attackers'.
        success(&t, &owner).await.expect("clear");
        assert!(wait(&t, &attacker, now).await.is_err());
        // Another account is untouched by all of it.
        assert_eq!(wait(&t, &from("bob", "203.0.113.12"), now).await, Ok(()));
    }

    #[tokio::test]
    async fn blocks_cap_at_fifteen_minutes_and_idle_resets() {
        let (t, _dir) = db().await;
        let k = from("x", "192.0.2.2");
        let now = UnixTime::from_secs(10);
        for _ in 0..100 {
            fail(&t, &k, now).await;
        }
        assert_eq!(wait(&t, &k, now).await, Err(MAX_BLOCK_SECS));
        let later = now.plus(IDLE_SECS + 1);
        fail(&t, &k, later).await;
        assert_eq!(wait(&t, &k, later).await, Ok(()));
    }

    /// A spray of made-up names lifts no block, and the address spraying them is slowed down;
    /// sweeping idle counts keeps the blocked ones.
    #[tokio::test]
    async fn a_spray_lifts_no_block_and_blocks_its_address() {
        let (t, _dir) = db().await;
        let now = UnixTime::from_secs(50);
        let blocked = from("victim", "192.0.2.3");
        for _ in 0..ACCOUNT_CLIENT_FREE {
            fail(&t, &blocked, now).await;
        }
        for i in 0..CLIENT_FREE {
            fail(&t, &from(&format!("spray{i}"), "192.0.2.9"), now).await;
        }
        let sprayer = from("anyone", "192.0.2.9");
        assert!(wait(&t, &blocked, now).await.is_err(), "still blocked");
        assert!(wait(&t, &sprayer, now).await.is_err(), "the address too");
        // A sweep with every count idle forgets the sprayed names, not the blocks.
        let swept = t.purge(now, 0).await.expect("purge");
        assert_eq!(
            swept,
            2 * CLIENT_FREE as usize + 2,
            "the sprayed names (alone and with the address), the victim's unblocked counts (its ceiling, its address)"
        );
        assert!(wait(&t, &blocked, now).await.is_err(), "still blocked");
        assert!(wait(&t, &sprayer, now).await.is_err(), "the address too");
    }

    #[test]
    fn ipv6_clients_count_by_slash_64() {
        let a: IpAddr = "2001:db8::1".parse().expect("ip");
        let b: IpAddr = "2001:db8::ffff:1234".parse().expect("ip");
        let c: IpAddr = "2001:db8:0:1::1".parse().expect("ip");
        assert_eq!(client_key(a), client_key(b));
        assert_ne!(client_key(a), client_key(c));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().expect("ip");
        assert_eq!(client_key(mapped), "192.0.2.7".parse::<IpAddr>().expect("ip"));
    }
}
