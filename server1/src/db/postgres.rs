//! The PostgreSQL engine: one database several SERVER1 replicas share.
//!
//! A pool of connections (`SERVER1_DATABASE_POOL_SIZE`), each statement bounded by
//! `SERVER1_DATABASE_TIMEOUT_MS` (waiting for a connection and connecting included), so a
//! database that is down or hung answers 503 at once instead of holding requests; connections
//! that broke are replaced on their next use, so service resumes by itself. The schema is
//! migrated at start-up under an advisory lock, so replicas starting together migrate once.

use std::future::Future;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use handoff::{Subject, UnixTime};
use ring::rand::{SecureRandom, SystemRandom};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};

use super::{new_user_id, user_from_row, Counted, DbError, OpenMode, PoolSettings, User};
use crate::names::{Role, UserName};

/// A `postgres://` URL. `Debug` and `Display` never show its password.
#[derive(Clone, PartialEq, Eq)]
pub struct PgUrl {
    url: String,
    shown: String,
}

impl PgUrl {
    /// Checks `value` as a PostgreSQL connection URL.
    ///
    /// # Errors
    ///
    /// When it is not one; the message never repeats it.
    pub fn parse(value: &str) -> Result<Self, &'static str> {
        let config: tokio_postgres::Config =
            value.parse().map_err(|_| "postgres://USER:PASSWORD@HOST:PORT/DATABASE")?;
        if config.get_hosts().is_empty() || config.get_dbname().is_none() {
            return Err("postgres://USER:PASSWORD@HOST:PORT/DATABASE, with a host and a database");
        }
        let host = match config.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
            None => String::new(),
        };
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let db = config.get_dbname().unwrap_or_default();
        Ok(Self { url: value.to_owned(), shown: format!("postgres://{host}:{port}/{db}") })
    }
}

impl std::fmt::Debug for PgUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PgUrl({})", self.shown)
    }
}

impl std::fmt::Display for PgUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

/// The schema, one step per version. Applied in order, each once, recorded in
/// `handoff_schema`.
const MIGRATIONS: &[&str] = &[
    // v1: what SQLite's v1 and v2 hold.
    "CREATE TABLE users (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        password_hash TEXT NOT NULL,
        created_at BIGINT NOT NULL
     );
     CREATE TABLE user_roles (
        user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        role TEXT NOT NULL,
        PRIMARY KEY (user_id, role)
     );
     CREATE TABLE sessions (
        id_hash BYTEA PRIMARY KEY,
        user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        created_at BIGINT NOT NULL,
        expires_at BIGINT NOT NULL
     );
     CREATE INDEX sessions_expiry ON sessions(expires_at);
     CREATE TABLE secrets (
        name TEXT PRIMARY KEY,
        value BYTEA NOT NULL
     );
     CREATE TABLE signin_throttle (
        key TEXT PRIMARY KEY,
        failures INTEGER NOT NULL,
        blocked_until BIGINT NOT NULL,
        last_seen BIGINT NOT NULL
     );
     CREATE INDEX signin_throttle_last_seen ON signin_throttle(last_seen);",
];

/// The advisory lock migrations run under (any constant all SERVER1s agree on).
const MIGRATION_LOCK: i64 = 0x4841_4e44_4f46_4631;

/// A PostgreSQL database.
pub struct PgDb {
    pool: Pool,
    timeout: Duration,
    shown: String,
}

impl std::fmt::Debug for PgDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgDb").field("url", &self.shown).finish_non_exhaustive()
    }
}

fn unavailable(e: impl std::fmt::Display) -> DbError {
    DbError::Unavailable(e.to_string())
}

fn secs(t: UnixTime) -> i64 {
    i64::try_from(t.as_secs()).unwrap_or(i64::MAX)
}

impl PgDb {
    /// Connects, checks the database answers, and migrates it (creating the schema only with
    /// [`OpenMode::CreateIfMissing`]; serving needs it made already).
    ///
    /// # Errors
    ///
    /// [`DbError::Open`] when the database cannot be reached, has no schema to serve from, or
    /// cannot be migrated.
    pub async fn open(url: &PgUrl, mode: OpenMode, pool: PoolSettings) -> Result<Self, DbError> {
        let shown = url.shown.clone();
        let open_err = |why: String| DbError::Open { what: shown.clone(), why };
        let mut config: tokio_postgres::Config =
            url.url.parse().map_err(|_| open_err("not a PostgreSQL URL".into()))?;
        config.connect_timeout(pool.timeout);
        config.application_name("handoff-server1");
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig { recycling_method: RecyclingMethod::Fast },
        );
        let built = Pool::builder(manager)
            .max_size(pool.size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(pool.timeout))
            .create_timeout(Some(pool.timeout))
            .recycle_timeout(Some(pool.timeout))
            .build()
            .map_err(|e| open_err(e.to_string()))?;
        let db = Self { pool: built, timeout: pool.timeout, shown: url.shown.clone() };
        db.migrate(mode).await.map_err(|e| open_err(e.to_string()))?;
        Ok(db)
    }

    /// Runs `work` on a pooled connection within the timeout.
    async fn with<T, F, Fut>(&self, work: F) -> Result<T, DbError>
    where
        F: FnOnce(deadpool_postgres::Object) -> Fut,
        Fut: Future<Output = Result<T, DbError>>,
    {
        let run = async {
            let conn = self.pool.get().await.map_err(unavailable)?;
            work(conn).await
        };
        tokio::time::timeout(self.timeout, run)
            .await
            .unwrap_or_else(|_| Err(DbError::Unavailable("timed out".into())))
    }

    async fn migrate(&self, mode: OpenMode) -> Result<(), DbError> {
        self.with(|mut conn| async move {
            let tx = conn.transaction().await.map_err(unavailable)?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
                .await
                .map_err(unavailable)?;
            tx.batch_execute("CREATE TABLE IF NOT EXISTS handoff_schema (version INTEGER NOT NULL)")
                .await
                .map_err(unavailable)?;
            let version: Option<i32> = tx
                .query_opt("SELECT version FROM handoff_schema", &[])
                .await
                .map_err(unavailable)?
                .map(|row| row.get(0));
            let version = usize::try_from(version.unwrap_or(0)).unwrap_or(usize::MAX);
            if version > MIGRATIONS.len() {
                return Err(DbError::Unavailable(format!(
                    "database schema v{version} is newer than this server (v{})",
                    MIGRATIONS.len()
                )));
            }
            if version == 0 && mode == OpenMode::Existing {
                return Err(DbError::Unavailable(
                    "no Handoff schema here: create it with `server1 users add NAME --password-stdin`"
                        .into(),
                ));
            }
            for sql in &MIGRATIONS[version..] {
                tx.batch_execute(sql).await.map_err(unavailable)?;
            }
            let now = i32::try_from(MIGRATIONS.len()).unwrap_or(i32::MAX);
            tx.execute("DELETE FROM handoff_schema", &[]).await.map_err(unavailable)?;
            tx.execute("INSERT INTO handoff_schema (version) VALUES ($1)", &[&now])
                .await
                .map_err(unavailable)?;
            tx.commit().await.map_err(unavailable)
        })
        .await
    }

    /// See [`super::Db::ping`].
    pub async fn ping(&self) -> bool {
        self.with(|conn| async move { conn.simple_query("SELECT 1").await.map_err(unavailable) })
            .await
            .is_ok()
    }

    /// Runs one statement (prepared once per connection) within the timeout; the rows it
    /// changed.
    async fn execute(
        &self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, DbError> {
        self.with(|conn| async move {
            let statement = conn.prepare_cached(sql).await.map_err(unavailable)?;
            conn.execute(&statement, params).await.map_err(unavailable)
        })
        .await
    }

    /// Runs one query (prepared once per connection) within the timeout; its row, if any.
    async fn query_opt(
        &self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, DbError> {
        self.with(|conn| async move {
            let statement = conn.prepare_cached(sql).await.map_err(unavailable)?;
            conn.query_opt(&statement, params).await.map_err(unavailable)
        })
        .await
    }

    /// As [`PgDb::query_opt`], for a query that always answers one row.
    async fn query_one(
        &self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, DbError> {
        self.query_opt(sql, params).await?.ok_or_else(|| {
            DbError::Unavailable("a query that answers one row answered none".into())
        })
    }

    /// See [`super::Db::secret`].
    ///
    /// # Errors
    ///
    /// When the database fails or randomness fails.
    pub async fn secret(&self, name: &str) -> Result<Vec<u8>, DbError> {
        let mut fresh = [0u8; 32];
        SystemRandom::new().fill(&mut fresh).map_err(|_| DbError::Random)?;
        let fresh = &fresh[..];
        self.execute(
            "INSERT INTO secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
            &[&name, &fresh],
        )
        .await?;
        let row = self.query_one("SELECT value FROM secrets WHERE name = $1", &[&name]).await?;
        Ok(row.get::<_, Vec<u8>>(0))
    }

    /// See [`super::Db::add_user`].
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
        let id = new_user_id()?;
        let mut roles = roles.to_vec();
        roles.sort();
        roles.dedup();
        let (id2, roles2) = (id.clone(), roles.clone());
        self.with(|mut conn| async move {
            let tx = conn.transaction().await.map_err(unavailable)?;
            let inserted = tx
                .execute(
                    "INSERT INTO users (id, name, password_hash, created_at) \
                     VALUES ($1, $2, $3, $4)",
                    &[&id2.as_str(), &name.as_str(), &password_hash, &secs(now)],
                )
                .await;
            match inserted {
                Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                    return Err(DbError::Conflict)
                }
                other => other.map_err(unavailable)?,
            };
            for role in &roles2 {
                tx.execute(
                    "INSERT INTO user_roles (user_id, role) VALUES ($1, $2)",
                    &[&id2.as_str(), &role.as_str()],
                )
                .await
                .map_err(unavailable)?;
            }
            tx.commit().await.map_err(unavailable)
        })
        .await?;
        Ok(User { id, name: name.clone(), roles })
    }

    /// See [`super::Db::user_by_name`].
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub async fn user_by_name(&self, name: &UserName) -> Result<Option<(User, String)>, DbError> {
        let row = self
            .query_opt(
                "SELECT u.id, u.password_hash,
                        (SELECT string_agg(r.role, ' ') FROM user_roles r WHERE r.user_id = u.id)
                 FROM users u WHERE u.name = $1",
                &[&name.as_str()],
            )
            .await?;
        Ok(row.and_then(|row| {
            let (id, hash, roles): (String, String, Option<String>) =
                (row.get(0), row.get(1), row.get(2));
            user_from_row(&id, name.as_str(), roles.as_deref().unwrap_or_default())
                .map(|u| (u, hash))
        }))
    }

    /// See [`super::Db::create_session`].
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
        self.execute(
            "INSERT INTO sessions (id_hash, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4)",
            &[&id_hash, &user.as_str(), &secs(now), &secs(expires)],
        )
        .await
        .map(drop)
    }

    /// See [`super::Db::session_user`].
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub async fn session_user(
        &self,
        id_hash: &[u8],
        now: UnixTime,
    ) -> Result<Option<User>, DbError> {
        let row = self
            .query_opt(
                "SELECT u.id, u.name,
                        (SELECT string_agg(r.role, ' ') FROM user_roles r WHERE r.user_id = u.id)
                 FROM sessions s JOIN users u ON u.id = s.user_id
                 WHERE s.id_hash = $1 AND s.expires_at > $2",
                &[&id_hash, &secs(now)],
            )
            .await?;
        Ok(row.and_then(|row| {
            let (id, name, roles): (String, String, Option<String>) =
                (row.get(0), row.get(1), row.get(2));
            user_from_row(&id, &name, roles.as_deref().unwrap_or_default())
        }))
    }

    /// See [`super::Db::delete_session`].
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub async fn delete_session(&self, id_hash: &[u8]) -> Result<(), DbError> {
        self.execute("DELETE FROM sessions WHERE id_hash = $1", &[&id_hash]).await.map(drop)
    }

    /// See [`super::Db::purge`].
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub async fn purge(&self, now: UnixTime, idle_secs: u64) -> Result<usize, DbError> {
        let now = secs(now);
        let idle = now.saturating_sub(i64::try_from(idle_secs).unwrap_or(i64::MAX));
        let sessions = self.execute("DELETE FROM sessions WHERE expires_at <= $1", &[&now]).await?;
        let counts = self
            .execute(
                "DELETE FROM signin_throttle WHERE last_seen <= $1 AND blocked_until <= $2",
                &[&idle, &now],
            )
            .await?;
        Ok(usize::try_from(sessions + counts).unwrap_or(usize::MAX))
    }

    /// See [`super::Db::throttle_blocked_until`].
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub async fn throttle_blocked_until(&self, keys: &[String]) -> Result<u64, DbError> {
        let row = self
            .query_one(
                "SELECT COALESCE(MAX(blocked_until), 0) FROM signin_throttle WHERE key = ANY($1)",
                &[&keys],
            )
            .await?;
        Ok(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0))
    }

    /// See [`super::Db::throttle_count`].
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
        let (now, idle) = (secs(now), i64::try_from(idle_secs).unwrap_or(i64::MAX));
        let row = self
            .query_one(
                "INSERT INTO signin_throttle AS t (key, failures, blocked_until, last_seen)
                 VALUES ($1, 1, 0, $2)
                 ON CONFLICT (key) DO UPDATE SET
                    failures = CASE WHEN $2 - t.last_seen >= $3 THEN 1 ELSE t.failures + 1 END,
                    last_seen = $2
                 RETURNING failures",
                &[&key, &now, &idle],
            )
            .await?;
        Ok(Counted { failures: u32::try_from(row.get::<_, i32>(0)).unwrap_or(u32::MAX) })
    }

    /// See [`super::Db::throttle_block`].
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub async fn throttle_block(&self, key: &str, until: u64) -> Result<(), DbError> {
        let until = i64::try_from(until).unwrap_or(i64::MAX);
        self.execute(
            "UPDATE signin_throttle SET blocked_until = GREATEST(blocked_until, $2) WHERE key = $1",
            &[&key, &until],
        )
        .await
        .map(drop)
    }

    /// See [`super::Db::throttle_clear`].
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub async fn throttle_clear(&self, key: &str) -> Result<(), DbError> {
        self.execute("DELETE FROM signin_throttle WHERE key = $1", &[&key]).await.map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_never_show_their_password() {
        let url = PgUrl::parse("postgres://handoff:s3cret@db.example:5433/portal").expect("url");
        for shown in [format!("{url}"), format!("{url:?}")] {
            assert!(
                !shown.contains("s3cret") && shown.contains("db.example:5433/portal"),
                "{shown}"
            );
        }
        assert!(PgUrl::parse("postgres://db.example").is_err(), "no database");
        assert!(PgUrl::parse("postgres://u:p@h:notaport/db").is_err());
    }
}
