//! SERVER1's database: users and their roles, sign-in sessions, the sign-in throttle's counts
//! and the shared secrets, on SQLite (one host; the embedded default) or PostgreSQL (several
//! replicas). [`Db`] is the one async interface both engines sit behind; each engine has its own
//! schema migrations, applied at start-up.

mod postgres;
mod sqlite;

use std::path::PathBuf;
use std::time::Duration;

use handoff::{Subject, UnixTime};

use crate::names::{Role, UserName};
pub use postgres::{PgDb, PgUrl};
pub use sqlite::SqliteDb;

/// A database failure. Messages name the fix; never a password, a session id or the URL's
/// credentials.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The database could not be opened, reached or migrated at start-up.
    #[error("cannot open database {what}: {why} (check SERVER1_DATABASE_URL, that the database exists and that this user may use it)")]
    Open {
        /// Which database (a file path, or host and database name).
        what: String,
        /// Why.
        why: String,
    },
    /// The SQLite file does not exist and may not be created here.
    #[error("no database at {0}: create it with `server1 users add NAME --password-stdin`, or check SERVER1_DATABASE_URL")]
    Missing(String),
    /// A user with that name exists.
    #[error("a user with that name already exists")]
    Conflict,
    /// The database is down, locked, read-only or failing.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// Randomness failed.
    #[error("the system random number generator failed")]
    Random,
}

/// Whether opening may create the database's schema (SQLite: the file too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// The database must exist (serving, minting).
    Existing,
    /// Create an empty database if there is none (adding users).
    CreateIfMissing,
}

/// Where the database is: `SERVER1_DATABASE_URL`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// `sqlite://PATH`: a file on this host.
    Sqlite(PathBuf),
    /// `postgres://user:pass@host:port/db`.
    Postgres(PgUrl),
}

impl DatabaseUrl {
    /// Parses `sqlite://PATH` (or `sqlite:PATH`) and `postgres://…` (or `postgresql://…`).
    ///
    /// # Errors
    ///
    /// Anything else; the message never repeats the value (it may hold a password).
    pub fn parse(value: &str) -> Result<Self, &'static str> {
        if let Some(path) =
            value.strip_prefix("sqlite://").or_else(|| value.strip_prefix("sqlite:"))
        {
            if path.trim().is_empty() || path.contains('\0') {
                return Err("a file path after sqlite://");
            }
            return Ok(Self::Sqlite(PathBuf::from(path)));
        }
        if value.starts_with("postgres://") || value.starts_with("postgresql://") {
            return PgUrl::parse(value).map(Self::Postgres);
        }
        Err("sqlite://PATH or postgres://USER:PASSWORD@HOST:PORT/DATABASE")
    }
}

/// How the PostgreSQL pool behaves (ignored for SQLite).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSettings {
    /// Most connections open at once.
    pub size: usize,
    /// Longest a statement (or waiting for a connection, or connecting) may take.
    pub timeout: Duration,
}

/// A user as SERVER1 knows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Stable opaque id: the `sub` of their tokens.
    pub id: Subject,
    /// Sign-in name.
    pub name: UserName,
    /// Roles, sorted.
    pub roles: Vec<Role>,
}

impl User {
    /// True when the user has `role`.
    pub fn has_role(&self, role: &Role) -> bool {
        self.roles.contains(role)
    }
}

/// A user from stored text. Ids, names and roles are written only by `add_user`, checked; one
/// that fails the check now means a tampered database, and that user simply does not exist (a
/// role that fails it is not held).
fn user_from_row(id: &str, name: &str, roles: &str) -> Option<User> {
    let mut roles: Vec<Role> =
        roles.split(' ').filter(|r| !r.is_empty()).filter_map(|r| Role::parse(r).ok()).collect();
    roles.sort();
    Some(User { id: Subject::parse(id).ok()?, name: UserName::parse(name).ok()?, roles })
}

/// A new user's id: `u_` and 128 random bits.
fn new_user_id() -> Result<Subject, DbError> {
    use base64::Engine as _;
    use ring::rand::SecureRandom as _;
    let mut raw = [0u8; 16];
    ring::rand::SystemRandom::new().fill(&mut raw).map_err(|_| DbError::Random)?;
    let id = format!("u_{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw));
    Subject::parse(&id).map_err(|_| DbError::Random)
}

/// The database, on either engine.
#[derive(Debug)]
pub enum Db {
    /// SQLite.
    Sqlite(SqliteDb),
    /// PostgreSQL.
    Postgres(PgDb),
}

/// What a throttle key's count is now, after a failure was counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counted {
    /// Failures within the idle window, this one included.
    pub failures: u32,
}

impl Db {
    /// Opens (and migrates) the database at `url`.
    ///
    /// # Errors
    ///
    /// [`DbError::Missing`] for a missing SQLite file with [`OpenMode::Existing`];
    /// [`DbError::Open`] when the database cannot be reached, opened or migrated.
    pub async fn open(
        url: &DatabaseUrl,
        mode: OpenMode,
        pool: PoolSettings,
    ) -> Result<Self, DbError> {
        Ok(match url {
            DatabaseUrl::Sqlite(path) => Self::Sqlite(SqliteDb::open(path, mode)?),
            DatabaseUrl::Postgres(url) => Self::Postgres(PgDb::open(url, mode, pool).await?),
        })
    }

    /// True when the database answers.
    pub async fn ping(&self) -> bool {
        match self {
            Self::Sqlite(db) => db.ping(),
            Self::Postgres(db) => db.ping().await,
        }
    }

    /// The named 32-byte secret, created on first use (shared by every SERVER1 on this
    /// database).
    ///
    /// # Errors
    ///
    /// When the database fails or randomness fails.
    pub async fn secret(&self, name: &str) -> Result<Vec<u8>, DbError> {
        match self {
            Self::Sqlite(db) => db.secret(name),
            Self::Postgres(db) => db.secret(name).await,
        }
    }

    /// Adds a user with roles, all or nothing.
    ///
    /// # Errors
    ///
    /// [`DbError::Conflict`] when the name is taken; [`DbError::Unavailable`] otherwise.
    pub async fn add_user(
        &self,
        name: &UserName,
        password_hash: &str,
        roles: &[Role],
        now: UnixTime,
    ) -> Result<User, DbError> {
        match self {
            Self::Sqlite(db) => db.add_user(name, password_hash, roles, now),
            Self::Postgres(db) => db.add_user(name, password_hash, roles, now).await,
        }
    }

    /// The user called `name` and their password hash.
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub async fn user_by_name(&self, name: &UserName) -> Result<Option<(User, String)>, DbError> {
        match self {
            Self::Sqlite(db) => db.user_by_name(name),
            Self::Postgres(db) => db.user_by_name(name).await,
        }
    }

    /// Records a session (by the hash of its id) for `user`.
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub async fn create_session(
        &self,
        id_hash: &[u8],
        user: &Subject,
        now: UnixTime,
        expires: UnixTime,
    ) -> Result<(), DbError> {
        match self {
            Self::Sqlite(db) => db.create_session(id_hash, user, now, expires),
            Self::Postgres(db) => db.create_session(id_hash, user, now, expires).await,
        }
    }

    /// The user of a live session.
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub async fn session_user(
        &self,
        id_hash: &[u8],
        now: UnixTime,
    ) -> Result<Option<User>, DbError> {
        match self {
            Self::Sqlite(db) => db.session_user(id_hash, now),
            Self::Postgres(db) => db.session_user(id_hash, now).await,
        }
    }

    /// Ends a session.
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub async fn delete_session(&self, id_hash: &[u8]) -> Result<(), DbError> {
        match self {
            Self::Sqlite(db) => db.delete_session(id_hash),
            Self::Postgres(db) => db.delete_session(id_hash).await,
        }
    }

    /// Deletes expired sessions and throttle counts idle for `idle_secs` with no block left;
    /// returns how many rows.
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub async fn purge(&self, now: UnixTime, idle_secs: u64) -> Result<usize, DbError> {
        match self {
            Self::Sqlite(db) => db.purge(now, idle_secs),
            Self::Postgres(db) => db.purge(now, idle_secs).await,
        }
    }

    /// The latest `blocked_until` (seconds) of any of `keys`, 0 when none is blocked.
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub async fn throttle_blocked_until(&self, keys: &[String]) -> Result<u64, DbError> {
        match self {
            Self::Sqlite(db) => db.throttle_blocked_until(keys),
            Self::Postgres(db) => db.throttle_blocked_until(keys).await,
        }
    }

    /// Counts one failure against `key` at `now` (a count idle for `idle_secs` starts again)
    /// and returns the count; atomic, so replicas counting at once lose no failure.
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub async fn throttle_count(
        &self,
        key: &str,
        now: UnixTime,
        idle_secs: u64,
    ) -> Result<Counted, DbError> {
        match self {
            Self::Sqlite(db) => db.throttle_count(key, now, idle_secs),
            Self::Postgres(db) => db.throttle_count(key, now, idle_secs).await,
        }
    }

    /// Blocks `key` until `until` (seconds), unless it is blocked longer already.
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub async fn throttle_block(&self, key: &str, until: u64) -> Result<(), DbError> {
        match self {
            Self::Sqlite(db) => db.throttle_block(key, until),
            Self::Postgres(db) => db.throttle_block(key, until).await,
        }
    }

    /// Forgets `key`'s failures (a successful sign-in clears the account's).
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub async fn throttle_clear(&self, key: &str) -> Result<(), DbError> {
        match self {
            Self::Sqlite(db) => db.throttle_clear(key),
            Self::Postgres(db) => db.throttle_clear(key).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls() {
        assert_eq!(
            DatabaseUrl::parse("sqlite://.demo/x.sqlite3"),
            Ok(DatabaseUrl::Sqlite(".demo/x.sqlite3".into()))
        );
        assert_eq!(DatabaseUrl::parse("sqlite:/tmp/x"), Ok(DatabaseUrl::Sqlite("/tmp/x".into())));
        assert!(matches!(
            DatabaseUrl::parse("postgres://u:p@127.0.0.1:5432/handoff"),
            Ok(DatabaseUrl::Postgres(_))
        ));
        for bad in ["", "sqlite://", "mysql://x", "postgres://", "/tmp/x"] {
            assert!(DatabaseUrl::parse(bad).is_err(), "{bad:?}");
        }
    }
}
