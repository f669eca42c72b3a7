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

use super::{
    new_user_id, secs, time, ClaimedJob, Counted, DbError, DevicePoll, Entitlement, Job, LinkOwner,
    LinkPurpose, LiveSession, NewDevice, NewRefresh, NewUser, OpenMode, PendingDevice,
    PoolSettings, RevokeBy, Rotation, SessionInfo, SessionMeta, User, UserRow,
};
use crate::names::{Email, Role};

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
    // v2: what SQLite's v3 adds (accounts, session details, one-time links, the outbox).
    "ALTER TABLE users ADD COLUMN email TEXT;
     ALTER TABLE users ADD COLUMN email_verified BOOLEAN NOT NULL DEFAULT TRUE;
     ALTER TABLE users ADD COLUMN disabled BOOLEAN NOT NULL DEFAULT FALSE;
     ALTER TABLE users ADD COLUMN tokens_valid_after BIGINT NOT NULL DEFAULT 0;
     CREATE UNIQUE INDEX users_email ON users(email);
     ALTER TABLE sessions ADD COLUMN public_id TEXT NOT NULL DEFAULT '';
     ALTER TABLE sessions ADD COLUMN last_seen BIGINT NOT NULL DEFAULT 0;
     ALTER TABLE sessions ADD COLUMN client TEXT;
     ALTER TABLE sessions ADD COLUMN user_agent TEXT;
     CREATE INDEX sessions_user ON sessions(user_id);
     CREATE TABLE one_time_links (
        user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        purpose TEXT NOT NULL,
        token_hash BYTEA NOT NULL UNIQUE,
        address TEXT,
        created_at BIGINT NOT NULL,
        expires_at BIGINT NOT NULL,
        PRIMARY KEY (user_id, purpose)
     );
     CREATE INDEX one_time_links_expiry ON one_time_links(expires_at);
     CREATE TABLE outbox (
        id BIGSERIAL PRIMARY KEY,
        kind TEXT NOT NULL,
        user_id TEXT,
        address TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at BIGINT NOT NULL,
        created_at BIGINT NOT NULL
     );
     CREATE INDEX outbox_due ON outbox(next_attempt_at);",
    // v3: what SQLite's v4 adds (the session a back-channel logout names).
    "ALTER TABLE outbox ADD COLUMN sid TEXT;",
    // v4: what SQLite's v5 adds (the API: device requests, refresh families, the deny list).
    "CREATE TABLE device_codes (
        device_hash BYTEA PRIMARY KEY,
        user_code TEXT NOT NULL UNIQUE,
        client_id TEXT NOT NULL,
        scope TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        expires_at BIGINT NOT NULL,
        interval_secs BIGINT NOT NULL,
        last_poll BIGINT NOT NULL DEFAULT 0,
        state TEXT NOT NULL DEFAULT 'pending',
        user_id TEXT REFERENCES users(id) ON DELETE CASCADE
     );
     CREATE INDEX device_codes_expiry ON device_codes(expires_at);
     CREATE TABLE refresh_tokens (
        token_hash BYTEA PRIMARY KEY,
        family TEXT NOT NULL,
        user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        client_id TEXT NOT NULL,
        scope TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        expires_at BIGINT NOT NULL,
        family_expires_at BIGINT NOT NULL,
        used_at BIGINT,
        revoked BOOLEAN NOT NULL DEFAULT FALSE
     );
     CREATE INDEX refresh_tokens_family ON refresh_tokens(family);
     CREATE INDEX refresh_tokens_user ON refresh_tokens(user_id);
     CREATE INDEX refresh_tokens_client ON refresh_tokens(client_id);
     CREATE INDEX refresh_tokens_expiry ON refresh_tokens(family_expires_at);
     CREATE TABLE denied_tokens (
        jti TEXT PRIMARY KEY,
        expires_at BIGINT NOT NULL
     );",
    // v5: what SQLite's v6 adds (refresh families as rows, when a device request was decided).
    "CREATE TABLE refresh_families (
        id TEXT PRIMARY KEY,
        user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        client_id TEXT NOT NULL,
        revoked BOOLEAN NOT NULL DEFAULT FALSE,
        expires_at BIGINT NOT NULL
     );
     INSERT INTO refresh_families (id, user_id, client_id, revoked, expires_at)
        SELECT family, min(user_id), min(client_id), bool_or(revoked), max(family_expires_at)
        FROM refresh_tokens GROUP BY family;
     CREATE INDEX refresh_families_user ON refresh_families(user_id);
     CREATE INDEX refresh_families_client ON refresh_families(client_id);
     ALTER TABLE device_codes ADD COLUMN decided_at BIGINT;",
    // v6: display names, and which partner knows which user by which subject.
    "ALTER TABLE users ADD COLUMN display_name TEXT;
     CREATE TABLE partner_subjects (
        target_id TEXT NOT NULL,
        subject TEXT NOT NULL,
        user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        first_seen BIGINT NOT NULL,
        PRIMARY KEY (target_id, subject)
     );
     CREATE INDEX partner_subjects_user ON partner_subjects(user_id);
     CREATE TABLE used_jtis (
        jti TEXT PRIMARY KEY,
        expires_at BIGINT NOT NULL
     );",
    // v7: which objects a user may open (an operation argument's entitled values).
    "CREATE TABLE entitlements (
        user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        target_id TEXT NOT NULL,
        operation TEXT NOT NULL,
        arg TEXT NOT NULL,
        value TEXT NOT NULL,
        granted_at BIGINT NOT NULL,
        PRIMARY KEY (user_id, target_id, operation, arg, value)
     );",
];

/// The user columns [`UserRow`] reads, and `FROM users u`.
macro_rules! select_user {
    ($($rest:literal)*) => {
        concat!(
            "SELECT u.id, u.name, (SELECT string_agg(r.role, ' ') FROM user_roles r WHERE r.user_id = u.id),
                    u.email, u.email_verified, u.disabled, u.password_hash, u.display_name",
            $($rest),*
        )
    };
}

fn user_row(row: &Row) -> UserRow {
    UserRow {
        id: row.get(0),
        name: row.get(1),
        roles: row.get(2),
        email: row.get(3),
        email_verified: row.get(4),
        disabled: row.get(5),
        password_hash: row.get(6),
        display_name: row.get(7),
    }
}

/// A unique-constraint failure, by the constraint it names.
fn conflict(e: &tokio_postgres::Error) -> Option<DbError> {
    let db = e.as_db_error()?;
    (db.code() == &SqlState::UNIQUE_VIOLATION).then(|| {
        if db.constraint() == Some("users_email") {
            DbError::EmailTaken
        } else {
            DbError::Conflict
        }
    })
}

/// Ends the sessions of `user` but `keep`, and moves `tokens_valid_after` to `revoke_at`.
async fn end_sessions(
    tx: &deadpool_postgres::Transaction<'_>,
    user: &Subject,
    keep: Option<&[u8]>,
    revoke_at: Option<UnixTime>,
) -> Result<u64, DbError> {
    let ended = tx
        .execute(
            "DELETE FROM sessions WHERE user_id = $1 AND id_hash IS DISTINCT FROM $2",
            &[&user.as_str(), &keep],
        )
        .await
        .map_err(unavailable)?;
    if let Some(at) = revoke_at {
        tx.execute(
            "UPDATE users SET tokens_valid_after = GREATEST(tokens_valid_after, $2) WHERE id = $1",
            &[&user.as_str(), &secs(at)],
        )
        .await
        .map_err(unavailable)?;
        // App approvals not collected yet go with the sessions.
        tx.execute("DELETE FROM device_codes WHERE user_id = $1", &[&user.as_str()])
            .await
            .map_err(unavailable)?;
    }
    Ok(ended)
}

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
    /// [`DbError::Conflict`], [`DbError::EmailTaken`] or [`DbError::Unavailable`].
    pub async fn add_user(&self, new: &NewUser<'_>, now: UnixTime) -> Result<User, DbError> {
        let id = new_user_id()?;
        let mut roles = new.roles.to_vec();
        roles.sort();
        roles.dedup();
        let (id2, roles2) = (id.clone(), roles.clone());
        let email = new.email.map(Email::as_str);
        self.with(|mut conn| async move {
            let tx = conn.transaction().await.map_err(unavailable)?;
            tx.execute(
                "INSERT INTO users (id, name, password_hash, created_at, email, email_verified, \
                 display_name) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[
                    &id2.as_str(),
                    &new.name.as_str(),
                    &new.password_hash,
                    &secs(now),
                    &email,
                    &new.email_verified,
                    &new.display_name,
                ],
            )
            .await
            .map_err(|e| conflict(&e).unwrap_or_else(|| unavailable(e)))?;
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
        Ok(User {
            id,
            name: new.name.clone(),
            roles,
            email: new.email.cloned(),
            email_verified: new.email_verified,
            disabled: false,
            display_name: new.display_name.map(str::to_owned),
        })
    }

    /// See [`super::SqliteDb::user_by`].
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub async fn user_by(
        &self,
        column: &str,
        value: &str,
    ) -> Result<Option<(User, String)>, DbError> {
        let sql = match column {
            "u.name" => select_user!(" FROM users u WHERE u.name = $1"),
            "u.email" => select_user!(" FROM users u WHERE u.email = $1"),
            _ => select_user!(" FROM users u WHERE u.id = $1"),
        };
        let row = self.query_opt(sql, &[&value]).await?;
        Ok(row.and_then(|row| user_row(&row).into_user()))
    }

    /// See [`super::Db::users`].
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub async fn users(&self) -> Result<Vec<User>, DbError> {
        let rows = self
            .with(|conn| async move {
                conn.query(select_user!(" FROM users u ORDER BY u.name"), &[])
                    .await
                    .map_err(unavailable)
            })
            .await?;
        Ok(rows.iter().filter_map(|r| user_row(r).into_user()).map(|(u, _)| u).collect())
    }

    /// See [`super::Db::set_disabled`].
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub async fn set_disabled(&self, user: &Subject, disabled: bool) -> Result<bool, DbError> {
        self.with(|mut conn| async move {
            let tx = conn.transaction().await.map_err(unavailable)?;
            let found = tx
                .execute(
                    "UPDATE users SET disabled = $2 WHERE id = $1",
                    &[&user.as_str(), &disabled],
                )
                .await
                .map_err(unavailable)?;
            if disabled {
                tx.execute("DELETE FROM sessions WHERE user_id = $1", &[&user.as_str()])
                    .await
                    .map_err(unavailable)?;
            }
            tx.commit().await.map_err(unavailable)?;
            Ok(found > 0)
        })
        .await
    }

    /// See [`super::Db::set_roles`].
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub async fn set_roles(&self, user: &Subject, roles: &[Role]) -> Result<bool, DbError> {
        self.with(|mut conn| async move {
            let tx = conn.transaction().await.map_err(unavailable)?;
            let found = tx
                .query_opt("SELECT 1 FROM users WHERE id = $1 FOR UPDATE", &[&user.as_str()])
                .await
                .map_err(unavailable)?
                .is_some();
            if found {
                tx.execute("DELETE FROM user_roles WHERE user_id = $1", &[&user.as_str()])
                    .await
                    .map_err(unavailable)?;
                for role in roles {
                    tx.execute(
                        "INSERT INTO user_roles (user_id, role) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                        &[&user.as_str(), &role.as_str()],
                    )
                    .await
                    .map_err(unavailable)?;
                }
            }
            tx.commit().await.map_err(unavailable)?;
            Ok(found)
        })
        .await
    }

    /// See [`super::Db::set_display_name`].
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub async fn set_display_name(
        &self,
        user: &Subject,
        name: Option<&str>,
    ) -> Result<bool, DbError> {
        let sql = "UPDATE users SET display_name = $2 WHERE id = $1";
        Ok(self.execute(sql, &[&user.as_str(), &name]).await? > 0)
    }

    /// See [`super::Db::record_partner_subject`].
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub async fn record_partner_subject(
        &self,
        target: &str,
        subject: &Subject,
        user: &Subject,
        now: UnixTime,
    ) -> Result<(), DbError> {
        let sql = "INSERT INTO partner_subjects (target_id, subject, user_id, first_seen) \
                   VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING";
        self.execute(sql, &[&target, &subject.as_str(), &user.as_str(), &secs(now)]).await?;
        Ok(())
    }

    /// See [`super::Db::partner_subject_user`].
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub async fn partner_subject_user(
        &self,
        target: &str,
        subject: &Subject,
    ) -> Result<Option<User>, DbError> {
        let sql = select_user!(
            " FROM partner_subjects p JOIN users u ON u.id = p.user_id"
            " WHERE p.target_id = $1 AND p.subject = $2"
        );
        let row = self.query_opt(sql, &[&target, &subject.as_str()]).await?;
        Ok(row.and_then(|row| user_row(&row).into_user()).map(|(user, _)| user))
    }

    /// See [`super::Db::grant_entitlement`].
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub async fn grant_entitlement(&self, e: &Entitlement, now: UnixTime) -> Result<bool, DbError> {
        let added = self
            .execute(
                "INSERT INTO entitlements (user_id, target_id, operation, arg, value, granted_at)
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
                &[&e.user.as_str(), &e.target, &e.operation, &e.arg, &e.value, &secs(now)],
            )
            .await?;
        Ok(added == 1)
    }

    /// See [`super::Db::revoke_entitlement`].
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub async fn revoke_entitlement(&self, e: &Entitlement) -> Result<bool, DbError> {
        let removed = self
            .execute(
                "DELETE FROM entitlements
                 WHERE user_id = $1 AND target_id = $2 AND operation = $3 AND arg = $4 AND value = $5",
                &[&e.user.as_str(), &e.target, &e.operation, &e.arg, &e.value],
            )
            .await?;
        Ok(removed == 1)
    }

    /// See [`super::Db::is_entitled`].
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub async fn is_entitled(&self, e: &Entitlement) -> Result<bool, DbError> {
        let row = self
            .query_opt(
                "SELECT 1 FROM entitlements
                 WHERE user_id = $1 AND target_id = $2 AND operation = $3 AND arg = $4 AND value = $5",
                &[&e.user.as_str(), &e.target, &e.operation, &e.arg, &e.value],
            )
            .await?;
        Ok(row.is_some())
    }

    /// See [`super::Db::entitlements`].
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub async fn entitlements(
        &self,
        user: Option<&Subject>,
    ) -> Result<Vec<(String, Entitlement)>, DbError> {
        let user = user.map(|u| u.as_str().to_owned());
        let rows = self
            .with(|conn| async move {
                conn.query(
                    "SELECT u.name, e.user_id, e.target_id, e.operation, e.arg, e.value
                     FROM entitlements e JOIN users u ON u.id = e.user_id
                     WHERE $1::TEXT IS NULL OR e.user_id = $1
                     ORDER BY u.name, e.target_id, e.operation, e.arg, e.value",
                    &[&user],
                )
                .await
                .map_err(unavailable)
            })
            .await?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                let user = Subject::parse(r.get::<_, &str>(1)).ok()?;
                Some((
                    r.get::<_, String>(0),
                    Entitlement {
                        user,
                        target: r.get(2),
                        operation: r.get(3),
                        arg: r.get(4),
                        value: r.get(5),
                    },
                ))
            })
            .collect())
    }

    /// See [`super::Db::remove_user`].
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub async fn remove_user(&self, user: &Subject) -> Result<bool, DbError> {
        Ok(self.execute("DELETE FROM users WHERE id = $1", &[&user.as_str()]).await? > 0)
    }

    /// See [`super::Db::set_email`].
    ///
    /// # Errors
    ///
    /// [`DbError::EmailTaken`] or [`DbError::Unavailable`].
    pub async fn set_email(
        &self,
        user: &Subject,
        email: &Email,
        verified: bool,
    ) -> Result<bool, DbError> {
        self.with(|conn| async move {
            conn.execute(
                "UPDATE users SET email = $2, email_verified = $3 WHERE id = $1",
                &[&user.as_str(), &email.as_str(), &verified],
            )
            .await
            .map(|n| n > 0)
            .map_err(|e| conflict(&e).unwrap_or_else(|| unavailable(e)))
        })
        .await
    }

    /// See [`super::Db::set_password`].
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub async fn set_password(
        &self,
        user: &Subject,
        password_hash: &str,
        keep: Option<&[u8]>,
        now: UnixTime,
    ) -> Result<(), DbError> {
        self.with(|mut conn| async move {
            let tx = conn.transaction().await.map_err(unavailable)?;
            tx.execute(
                "UPDATE users SET password_hash = $2 WHERE id = $1",
                &[&user.as_str(), &password_hash],
            )
            .await
            .map_err(unavailable)?;
            // A reset or change-of-address link from before no longer speaks for the account.
            tx.execute(
                "DELETE FROM one_time_links WHERE user_id = $1 AND purpose <> 'verify_email'",
                &[&user.as_str()],
            )
            .await
            .map_err(unavailable)?;
            end_sessions(&tx, user, keep, Some(now)).await?;
            tx.commit().await.map_err(unavailable)
        })
        .await
    }

    /// See [`super::Db::end_sessions`].
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub async fn end_sessions(
        &self,
        user: &Subject,
        keep: Option<&[u8]>,
        revoke_at: Option<UnixTime>,
    ) -> Result<u64, DbError> {
        self.with(|mut conn| async move {
            let tx = conn.transaction().await.map_err(unavailable)?;
            let ended = end_sessions(&tx, user, keep, revoke_at).await?;
            tx.commit().await.map_err(unavailable)?;
            Ok(ended)
        })
        .await
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
        meta: &SessionMeta,
        now: UnixTime,
        expires: UnixTime,
    ) -> Result<(), DbError> {
        self.execute(
            "INSERT INTO sessions (id_hash, user_id, created_at, expires_at, public_id, last_seen,
                                   client, user_agent)
             VALUES ($1, $2, $3, $4, $5, $3, $6, $7)",
            &[
                &id_hash,
                &user.as_str(),
                &secs(now),
                &secs(expires),
                &meta.public_id,
                &meta.client,
                &meta.user_agent,
            ],
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
    ) -> Result<Option<(User, LiveSession)>, DbError> {
        let row = self
            .query_opt(
                select_user!(
                    ", s.last_seen, s.public_id FROM sessions s JOIN users u ON u.id = s.user_id
                     WHERE s.id_hash = $1 AND s.expires_at > $2 AND NOT u.disabled"
                ),
                &[&id_hash, &secs(now)],
            )
            .await?;
        Ok(row.and_then(|row| {
            let live = LiveSession { last_seen: time(row.get(8)), public_id: row.get(9) };
            user_row(&row).into_user().map(|(u, _)| (u, live))
        }))
    }

    /// See [`super::Db::touch_session`].
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub async fn touch_session(&self, id_hash: &[u8], now: UnixTime) -> Result<(), DbError> {
        self.execute(
            "UPDATE sessions SET last_seen = $2 WHERE id_hash = $1",
            &[&id_hash, &secs(now)],
        )
        .await
        .map(drop)
    }

    /// See [`super::Db::sessions_of`].
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub async fn sessions_of(
        &self,
        user: &Subject,
        now: UnixTime,
    ) -> Result<Vec<SessionInfo>, DbError> {
        let rows = self
            .with(|conn| async move {
                conn.query(
                    "SELECT id_hash, public_id, client, user_agent, created_at, last_seen
                     FROM sessions WHERE user_id = $1 AND expires_at > $2
                     ORDER BY created_at DESC, public_id",
                    &[&user.as_str(), &secs(now)],
                )
                .await
                .map_err(unavailable)
            })
            .await?;
        Ok(rows
            .iter()
            .map(|r| SessionInfo {
                id_hash: r.get(0),
                meta: SessionMeta { public_id: r.get(1), client: r.get(2), user_agent: r.get(3) },
                created: time(r.get(4)),
                last_seen: time(r.get(5)),
            })
            .collect())
    }

    /// See [`super::Db::end_session_by_public_id`].
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub async fn end_session_by_public_id(
        &self,
        user: &Subject,
        public_id: &str,
    ) -> Result<bool, DbError> {
        let ended = self
            .execute(
                "DELETE FROM sessions WHERE user_id = $1 AND public_id = $2 AND public_id <> ''",
                &[&user.as_str(), &public_id],
            )
            .await?;
        Ok(ended > 0)
    }

    /// See [`super::Db::delete_session`].
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub async fn delete_session(&self, id_hash: &[u8]) -> Result<(), DbError> {
        self.execute("DELETE FROM sessions WHERE id_hash = $1", &[&id_hash]).await.map(drop)
    }

    /// See [`super::Db::issue_link`].
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub async fn issue_link(
        &self,
        user: &Subject,
        purpose: LinkPurpose,
        token_hash: &[u8],
        address: Option<&Email>,
        now: UnixTime,
        expires: UnixTime,
    ) -> Result<(), DbError> {
        self.execute(
            "INSERT INTO one_time_links (user_id, purpose, token_hash, address, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (user_id, purpose) DO UPDATE SET
                token_hash = excluded.token_hash, address = excluded.address,
                created_at = excluded.created_at, expires_at = excluded.expires_at",
            &[
                &user.as_str(),
                &purpose.as_str(),
                &token_hash,
                &address.map(Email::as_str),
                &secs(now),
                &secs(expires),
            ],
        )
        .await
        .map(drop)
    }

    /// See [`super::SqliteDb::link`].
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub async fn link(
        &self,
        purpose: LinkPurpose,
        token_hash: &[u8],
        now: UnixTime,
        consume: bool,
    ) -> Result<Option<LinkOwner>, DbError> {
        let sql = if consume {
            "DELETE FROM one_time_links WHERE token_hash = $1 AND purpose = $2 AND expires_at > $3
             RETURNING user_id, address"
        } else {
            "SELECT user_id, address FROM one_time_links
             WHERE token_hash = $1 AND purpose = $2 AND expires_at > $3"
        };
        let row = self.query_opt(sql, &[&token_hash, &purpose.as_str(), &secs(now)]).await?;
        Ok(row.and_then(|row| {
            let (user, address): (String, Option<String>) = (row.get(0), row.get(1));
            Some(LinkOwner {
                user: Subject::parse(&user).ok()?,
                address: address.and_then(|a| Email::parse(&a).ok()),
            })
        }))
    }

    /// See [`super::Db::enqueue`].
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub async fn enqueue(&self, job: &Job, now: UnixTime) -> Result<(), DbError> {
        self.execute(
            "INSERT INTO outbox (kind, user_id, address, sid, next_attempt_at, created_at)
             VALUES ($1, $2, $3, $4, $5, $5)",
            &[
                &job.kind,
                &job.user.as_ref().map(Subject::as_str),
                &job.address,
                &job.sid,
                &secs(now),
            ],
        )
        .await
        .map(drop)
    }

    /// See [`super::Db::claim_jobs`]. `SKIP LOCKED`: replicas claiming at once take different
    /// jobs instead of waiting on each other.
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub async fn claim_jobs(
        &self,
        now: UnixTime,
        lease_until: UnixTime,
        limit: u32,
    ) -> Result<Vec<ClaimedJob>, DbError> {
        let limit = i64::from(limit);
        let rows = self
            .with(|conn| async move {
                conn.query(
                    "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = $2
                     WHERE id IN (SELECT id FROM outbox WHERE next_attempt_at <= $1
                                  ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED)
                     RETURNING id, kind, user_id, address, attempts, created_at, sid",
                    &[&secs(now), &secs(lease_until), &limit],
                )
                .await
                .map_err(unavailable)
            })
            .await?;
        let mut jobs: Vec<ClaimedJob> = rows
            .iter()
            .map(|r| ClaimedJob {
                id: r.get(0),
                job: Job {
                    kind: r.get(1),
                    user: r.get::<_, Option<String>>(2).and_then(|u| Subject::parse(&u).ok()),
                    address: r.get(3),
                    sid: r.get(6),
                },
                attempts: u32::try_from(r.get::<_, i32>(4)).unwrap_or(u32::MAX),
                created: time(r.get(5)),
            })
            .collect();
        jobs.sort_by_key(|j| j.id);
        Ok(jobs)
    }

    /// See [`super::Db::finish_job`].
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub async fn finish_job(&self, id: i64) -> Result<(), DbError> {
        self.execute("DELETE FROM outbox WHERE id = $1", &[&id]).await.map(drop)
    }

    /// See [`super::Db::retry_job`].
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub async fn retry_job(&self, id: i64, at: UnixTime) -> Result<(), DbError> {
        self.execute("UPDATE outbox SET next_attempt_at = $2 WHERE id = $1", &[&id, &secs(at)])
            .await
            .map(drop)
    }

    /// See [`super::Db::outbox_len`].
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub async fn outbox_len(&self) -> Result<u64, DbError> {
        let row = self.query_one("SELECT count(*) FROM outbox", &[]).await?;
        Ok(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0))
    }

    /// See [`super::Db::create_device`].
    ///
    /// # Errors
    ///
    /// [`DbError::Conflict`] or [`DbError::Unavailable`].
    pub async fn create_device(&self, d: &NewDevice<'_>, now: UnixTime) -> Result<(), DbError> {
        let interval = i64::try_from(d.interval_secs).unwrap_or(i64::MAX);
        self.with(|conn| async move {
            conn.execute(
                "INSERT INTO device_codes (device_hash, user_code, client_id, scope, created_at,
                                           expires_at, interval_secs)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[
                    &d.device_hash,
                    &d.user_code,
                    &d.client_id,
                    &d.scope,
                    &secs(now),
                    &secs(d.expires),
                    &interval,
                ],
            )
            .await
            .map(drop)
            .map_err(|e| conflict(&e).unwrap_or_else(|| unavailable(e)))
        })
        .await
    }

    /// See [`super::Db::pending_device`].
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub async fn pending_device(
        &self,
        user_code: &str,
        now: UnixTime,
    ) -> Result<Option<PendingDevice>, DbError> {
        let row = self
            .query_opt(
                "SELECT client_id, scope FROM device_codes
                 WHERE user_code = $1 AND state = 'pending' AND expires_at > $2",
                &[&user_code, &secs(now)],
            )
            .await?;
        Ok(row.map(|r| PendingDevice { client_id: r.get(0), scope: r.get(1) }))
    }

    /// See [`super::Db::decide_device`].
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub async fn decide_device(
        &self,
        user_code: &str,
        user: &Subject,
        approve: bool,
        now: UnixTime,
    ) -> Result<bool, DbError> {
        let state = if approve { "approved" } else { "denied" };
        let changed = self
            .execute(
                "UPDATE device_codes SET state = $3, user_id = $2, decided_at = $4
                 WHERE user_code = $1 AND state = 'pending' AND expires_at > $4",
                &[&user_code, &user.as_str(), &state, &secs(now)],
            )
            .await?;
        Ok(changed > 0)
    }

    /// See [`super::Db::poll_device`].
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub async fn poll_device(
        &self,
        device_hash: &[u8],
        client_id: &str,
        now: UnixTime,
    ) -> Result<DevicePoll, DbError> {
        let now = secs(now);
        self.with(|mut conn| async move {
            let tx = conn.transaction().await.map_err(unavailable)?;
            let row = tx
                .query_opt(
                    "SELECT scope, expires_at, interval_secs, last_poll, state, user_id, decided_at
                     FROM device_codes WHERE device_hash = $1 AND client_id = $2 FOR UPDATE",
                    &[&device_hash, &client_id],
                )
                .await
                .map_err(unavailable)?;
            let Some(row) = row else { return Ok(DevicePoll::Unknown) };
            let (scope, expires, interval, last_poll, state, user): (
                String,
                i64,
                i64,
                i64,
                String,
                Option<String>,
            ) = (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4), row.get(5));
            let poll = if expires <= now {
                DevicePoll::Expired
            } else {
                match (state.as_str(), user.and_then(|u| Subject::parse(&u).ok())) {
                    ("approved", Some(user)) => {
                        let decided: Option<i64> = row.get(6);
                        DevicePoll::Approved { user, scope, decided: time(decided.unwrap_or(0)) }
                    }
                    ("denied", _) => DevicePoll::Denied,
                    _ => {
                        let too_fast = now - last_poll < interval;
                        let next = if too_fast { interval + 5 } else { interval };
                        tx.execute(
                            "UPDATE device_codes SET last_poll = $2, interval_secs = $3 WHERE device_hash = $1",
                            &[&device_hash, &now, &next],
                        )
                        .await
                        .map_err(unavailable)?;
                        tx.commit().await.map_err(unavailable)?;
                        return Ok(DevicePoll::Pending { too_fast });
                    }
                }
            };
            tx.execute("DELETE FROM device_codes WHERE device_hash = $1", &[&device_hash])
                .await
                .map_err(unavailable)?;
            tx.commit().await.map_err(unavailable)?;
            Ok(poll)
        })
        .await
    }

    /// See [`super::Db::start_family`].
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub async fn start_family(&self, t: &NewRefresh<'_>, now: UnixTime) -> Result<(), DbError> {
        self.with(|mut conn| async move {
            let tx = conn.transaction().await.map_err(unavailable)?;
            tx.execute(
                "INSERT INTO refresh_families (id, user_id, client_id, expires_at) VALUES ($1, $2, $3, $4)",
                &[&t.family, &t.user.as_str(), &t.client_id, &secs(t.family_expires)],
            )
            .await
            .map_err(unavailable)?;
            tx.execute(
                "INSERT INTO refresh_tokens (token_hash, family, user_id, client_id, scope, created_at,
                                             expires_at, family_expires_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                &[
                    &t.hash,
                    &t.family,
                    &t.user.as_str(),
                    &t.client_id,
                    &t.scope,
                    &secs(now),
                    &secs(t.expires),
                    &secs(t.family_expires),
                ],
            )
            .await
            .map_err(unavailable)?;
            tx.commit().await.map_err(unavailable)
        })
        .await
    }

    /// See [`super::Db::rotate_refresh`]. `FOR UPDATE OF t, f` holds the token and its family
    /// for the transaction: rotations and revocations of one family take turns. A second
    /// request with the same token waits, then reads the token as the first left it (locking
    /// `t` too makes PostgreSQL read its newest version; with only `f` locked it would see
    /// `used_at` from before the wait, and both would win), and finds it used. A revocation
    /// that comes during a rotation waits and then covers the successor too (it marks the
    /// family, not the tokens).
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub async fn rotate_refresh(
        &self,
        hash: &[u8],
        next_hash: &[u8],
        idle_secs: u64,
        now: UnixTime,
    ) -> Result<Rotation, DbError> {
        let now = secs(now);
        let idle = i64::try_from(idle_secs).unwrap_or(i64::MAX);
        self.with(|mut conn| async move {
            let tx = conn.transaction().await.map_err(unavailable)?;
            let row = tx
                .query_opt(
                    "SELECT t.family, t.user_id, t.client_id, t.scope, t.created_at, t.used_at,
                            t.expires_at, f.revoked, f.expires_at
                     FROM refresh_tokens t JOIN refresh_families f ON f.id = t.family
                     WHERE t.token_hash = $1 FOR UPDATE OF t, f",
                    &[&hash],
                )
                .await
                .map_err(unavailable)?;
            let Some(r) = row else { return Ok(Rotation::Invalid) };
            let family: String = r.get(0);
            let Ok(user) = Subject::parse(&r.get::<_, String>(1)) else {
                return Ok(Rotation::Invalid);
            };
            let (client_id, scope): (String, String) = (r.get(2), r.get(3));
            let (created, used, expires): (i64, Option<i64>, i64) = (r.get(4), r.get(5), r.get(6));
            let (revoked, family_expires): (bool, i64) = (r.get(7), r.get(8));
            if used.is_some() {
                tx.execute("UPDATE refresh_families SET revoked = TRUE WHERE id = $1", &[&family])
                    .await
                    .map_err(unavailable)?;
                tx.commit().await.map_err(unavailable)?;
                return Ok(Rotation::Reused { family, user });
            }
            if revoked || expires <= now || family_expires <= now {
                return Ok(Rotation::Invalid);
            }
            tx.execute("UPDATE refresh_tokens SET used_at = $2 WHERE token_hash = $1", &[&hash, &now])
                .await
                .map_err(unavailable)?;
            let next_expires = now.saturating_add(idle).min(family_expires);
            tx.execute(
                "INSERT INTO refresh_tokens (token_hash, family, user_id, client_id, scope, created_at,
                                             expires_at, family_expires_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                &[&next_hash, &family, &user.as_str(), &client_id, &scope, &now, &next_expires, &family_expires],
            )
            .await
            .map_err(unavailable)?;
            tx.commit().await.map_err(unavailable)?;
            Ok(Rotation::Rotated {
                family,
                user,
                client_id,
                scope,
                created: time(created),
                family_expires: time(family_expires),
            })
        })
        .await
    }

    /// See [`super::Db::revoke_refresh`].
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub async fn revoke_refresh(&self, by: RevokeBy<'_>) -> Result<u64, DbError> {
        match by {
            RevokeBy::Family(f) => {
                self.execute("UPDATE refresh_families SET revoked = TRUE WHERE id = $1 AND NOT revoked", &[&f]).await
            }
            RevokeBy::User(u) => {
                self.execute("UPDATE refresh_families SET revoked = TRUE WHERE user_id = $1 AND NOT revoked", &[&u.as_str()]).await
            }
            RevokeBy::Client(c) => {
                self.execute("UPDATE refresh_families SET revoked = TRUE WHERE client_id = $1 AND NOT revoked", &[&c]).await
            }
        }
    }

    /// See [`super::Db::deny_token`].
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub async fn deny_token(&self, jti: &str, until: UnixTime) -> Result<(), DbError> {
        self.execute(
            "INSERT INTO denied_tokens (jti, expires_at) VALUES ($1, $2)
             ON CONFLICT (jti) DO UPDATE SET expires_at = GREATEST(denied_tokens.expires_at, excluded.expires_at)",
            &[&jti, &secs(until)],
        )
        .await
        .map(drop)
    }

    /// See [`super::Db::use_jti`].
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub async fn use_jti(
        &self,
        jti: &str,
        until: UnixTime,
        now: UnixTime,
    ) -> Result<bool, DbError> {
        // One statement: an expired entry is taken over, a live one stays and nothing changes.
        let sql = "INSERT INTO used_jtis (jti, expires_at) VALUES ($1, $2) \
                   ON CONFLICT (jti) DO UPDATE SET expires_at = EXCLUDED.expires_at \
                   WHERE used_jtis.expires_at <= $3";
        Ok(self.execute(sql, &[&jti, &secs(until), &secs(now)]).await? == 1)
    }

    /// See [`super::Db::is_denied`].
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub async fn is_denied(&self, jti: &str, now: UnixTime) -> Result<bool, DbError> {
        Ok(self
            .query_opt(
                "SELECT 1 FROM denied_tokens WHERE jti = $1 AND expires_at > $2",
                &[&jti, &secs(now)],
            )
            .await?
            .is_some())
    }

    /// See [`super::Db::tokens_valid_after`].
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub async fn tokens_valid_after(&self, user: &Subject) -> Result<Option<UnixTime>, DbError> {
        let row = self
            .query_opt("SELECT tokens_valid_after FROM users WHERE id = $1", &[&user.as_str()])
            .await?;
        Ok(row.map(|r| time(r.get(0))))
    }

    /// Moves `tokens_valid_after` to `at`, ending no session.
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub async fn end_sessions_keeping_all(
        &self,
        user: &Subject,
        at: UnixTime,
    ) -> Result<(), DbError> {
        self.execute(
            "UPDATE users SET tokens_valid_after = GREATEST(tokens_valid_after, $2) WHERE id = $1",
            &[&user.as_str(), &secs(at)],
        )
        .await
        .map(drop)
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
        let links =
            self.execute("DELETE FROM one_time_links WHERE expires_at <= $1", &[&now]).await?;
        let api = self.execute("DELETE FROM device_codes WHERE expires_at <= $1", &[&now]).await?
            + self
                .execute("DELETE FROM refresh_tokens WHERE family_expires_at <= $1", &[&now])
                .await?
            + self.execute("DELETE FROM denied_tokens WHERE expires_at <= $1", &[&now]).await?
            + self.execute("DELETE FROM used_jtis WHERE expires_at <= $1", &[&now]).await?;
        let counts = self
            .execute(
                "DELETE FROM signin_throttle WHERE last_seen <= $1 AND blocked_until <= $2",
                &[&idle, &now],
            )
            .await?;
        Ok(usize::try_from(sessions + links + api + counts).unwrap_or(usize::MAX))
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

    /// See [`super::Db::throttle_failures`].
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub async fn throttle_failures(
        &self,
        key: &str,
        now: UnixTime,
        idle_secs: u64,
    ) -> Result<u32, DbError> {
        let (now, idle) = (secs(now), i64::try_from(idle_secs).unwrap_or(i64::MAX));
        let row = self
            .query_opt(
                "SELECT failures FROM signin_throttle WHERE key = $1 AND $2 - last_seen < $3",
                &[&key, &now, &idle],
            )
            .await?;
        Ok(row.map_or(0, |r| u32::try_from(r.get::<_, i32>(0)).unwrap_or(u32::MAX)))
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
