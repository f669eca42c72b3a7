//! The SQLite engine: one file on this host, the embedded default.
//!
//! One connection behind a mutex: every statement here is a primary-key lookup or a single-row
//! write that takes microseconds, so callers run it directly. The schema is migrated at
//! start-up, inside a transaction, keyed on SQLite's `user_version`.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use handoff::{Subject, UnixTime};
use ring::rand::{SecureRandom, SystemRandom};
use rusqlite::{params, Connection, ErrorCode, OpenFlags, OptionalExtension};

use super::{
    new_user_id, secs, time, ClaimedJob, Counted, DbError, DevicePoll, Entitlement, Job, LinkOwner,
    LinkPurpose, LiveSession, NewDevice, NewRefresh, NewUser, OpenMode, PendingDevice, RevokeBy,
    Rotation, SessionInfo, SessionMeta, User, UserRow,
};
use crate::names::{Email, Role};

impl From<rusqlite::Error> for DbError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Unavailable(e.to_string())
    }
}

fn create_private_file(path: &Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path).map(drop)
}

/// A SQLite database.
#[derive(Debug)]
pub struct SqliteDb {
    conn: Mutex<Connection>,
}

const MIGRATIONS: &[&str] = &[
    // v1
    "CREATE TABLE users (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        password_hash TEXT NOT NULL,
        created_at INTEGER NOT NULL
     ) STRICT;
     CREATE TABLE user_roles (
        user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        role TEXT NOT NULL,
        PRIMARY KEY (user_id, role)
     ) STRICT;
     CREATE TABLE sessions (
        id_hash BLOB PRIMARY KEY,
        user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL
     ) STRICT;
     CREATE INDEX sessions_expiry ON sessions(expires_at);
     CREATE TABLE secrets (
        name TEXT PRIMARY KEY,
        value BLOB NOT NULL
     ) STRICT;",
    // v2: the sign-in throttle's counts, shared by every SERVER1 on this database.
    "CREATE TABLE signin_throttle (
        key TEXT PRIMARY KEY,
        failures INTEGER NOT NULL,
        blocked_until INTEGER NOT NULL,
        last_seen INTEGER NOT NULL
     ) STRICT;
     CREATE INDEX signin_throttle_last_seen ON signin_throttle(last_seen);",
    // v3: accounts (addresses, disabling, revocation time), what the account page shows of a
    // session, one-time links and the outbox. Users from before were added by an operator:
    // their (absent) address counts as verified.
    "ALTER TABLE users ADD COLUMN email TEXT;
     ALTER TABLE users ADD COLUMN email_verified INTEGER NOT NULL DEFAULT 1;
     ALTER TABLE users ADD COLUMN disabled INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE users ADD COLUMN tokens_valid_after INTEGER NOT NULL DEFAULT 0;
     CREATE UNIQUE INDEX users_email ON users(email);
     ALTER TABLE sessions ADD COLUMN public_id TEXT NOT NULL DEFAULT '';
     ALTER TABLE sessions ADD COLUMN last_seen INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE sessions ADD COLUMN client TEXT;
     ALTER TABLE sessions ADD COLUMN user_agent TEXT;
     CREATE INDEX sessions_user ON sessions(user_id);
     CREATE TABLE one_time_links (
        user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        purpose TEXT NOT NULL,
        token_hash BLOB NOT NULL UNIQUE,
        address TEXT,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        PRIMARY KEY (user_id, purpose)
     ) STRICT;
     CREATE INDEX one_time_links_expiry ON one_time_links(expires_at);
     CREATE TABLE outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        kind TEXT NOT NULL,
        user_id TEXT,
        address TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at INTEGER NOT NULL,
        created_at INTEGER NOT NULL
     ) STRICT;
     CREATE INDEX outbox_due ON outbox(next_attempt_at);",
    // v4: back-channel logouts go through the outbox too: the session that ended.
    "ALTER TABLE outbox ADD COLUMN sid TEXT;",
    // v5: the API: device authorization requests, refresh-token families, the deny list.
    "CREATE TABLE device_codes (
        device_hash BLOB PRIMARY KEY,
        user_code TEXT NOT NULL UNIQUE,
        client_id TEXT NOT NULL,
        scope TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        interval_secs INTEGER NOT NULL,
        last_poll INTEGER NOT NULL DEFAULT 0,
        state TEXT NOT NULL DEFAULT 'pending',
        user_id TEXT REFERENCES users(id) ON DELETE CASCADE
     ) STRICT;
     CREATE INDEX device_codes_expiry ON device_codes(expires_at);
     CREATE TABLE refresh_tokens (
        token_hash BLOB PRIMARY KEY,
        family TEXT NOT NULL,
        user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        client_id TEXT NOT NULL,
        scope TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        family_expires_at INTEGER NOT NULL,
        used_at INTEGER,
        revoked INTEGER NOT NULL DEFAULT 0
     ) STRICT;
     CREATE INDEX refresh_tokens_family ON refresh_tokens(family);
     CREATE INDEX refresh_tokens_user ON refresh_tokens(user_id);
     CREATE INDEX refresh_tokens_client ON refresh_tokens(client_id);
     CREATE INDEX refresh_tokens_expiry ON refresh_tokens(family_expires_at);
     CREATE TABLE denied_tokens (
        jti TEXT PRIMARY KEY,
        expires_at INTEGER NOT NULL
     ) STRICT;",
    // v6: refresh families as rows of their own (a rotation holds its family; a revocation
    // marks it), and when a device request was decided.
    "CREATE TABLE refresh_families (
        id TEXT PRIMARY KEY,
        user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        client_id TEXT NOT NULL,
        revoked INTEGER NOT NULL DEFAULT 0,
        expires_at INTEGER NOT NULL
     ) STRICT;
     INSERT INTO refresh_families (id, user_id, client_id, revoked, expires_at)
        SELECT family, min(user_id), min(client_id), max(revoked), max(family_expires_at)
        FROM refresh_tokens GROUP BY family;
     CREATE INDEX refresh_families_user ON refresh_families(user_id);
     CREATE INDEX refresh_families_client ON refresh_families(client_id);
     ALTER TABLE device_codes ADD COLUMN decided_at INTEGER;",
    // v7: display names, and which partner knows which user by which subject.
    "ALTER TABLE users ADD COLUMN display_name TEXT;
     CREATE TABLE partner_subjects (
        target_id TEXT NOT NULL,
        subject TEXT NOT NULL,
        user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        first_seen INTEGER NOT NULL,
        PRIMARY KEY (target_id, subject)
     ) STRICT;
     CREATE INDEX partner_subjects_user ON partner_subjects(user_id);
     CREATE TABLE used_jtis (
        jti TEXT PRIMARY KEY,
        expires_at INTEGER NOT NULL
     ) STRICT;",
    // v8: which objects a user may open (an operation argument's entitled values).
    "CREATE TABLE entitlements (
        user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        target_id TEXT NOT NULL,
        operation TEXT NOT NULL,
        arg TEXT NOT NULL,
        value TEXT NOT NULL,
        granted_at INTEGER NOT NULL,
        PRIMARY KEY (user_id, target_id, operation, arg, value)
     ) STRICT;",
];

/// The user columns [`UserRow`] reads, and `FROM users u`.
macro_rules! select_user {
    ($($rest:literal)*) => {
        concat!(
            "SELECT u.id, u.name, (SELECT group_concat(r.role, ' ') FROM user_roles r WHERE r.user_id = u.id),
                    u.email, u.email_verified, u.disabled, u.password_hash, u.display_name",
            $($rest),*
        )
    };
}

fn user_row(r: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<UserRow> {
    Ok(UserRow {
        id: r.get(first)?,
        name: r.get(first + 1)?,
        roles: r.get(first + 2)?,
        email: r.get(first + 3)?,
        email_verified: r.get(first + 4)?,
        disabled: r.get(first + 5)?,
        password_hash: r.get(first + 6)?,
        display_name: r.get(first + 7)?,
    })
}

/// A unique-constraint failure, by the column it names.
fn conflict(e: rusqlite::Error) -> DbError {
    match &e {
        rusqlite::Error::SqliteFailure(f, Some(message))
            if f.code == ErrorCode::ConstraintViolation && message.contains("users.email") =>
        {
            DbError::EmailTaken
        }
        rusqlite::Error::SqliteFailure(f, _) if f.code == ErrorCode::ConstraintViolation => {
            DbError::Conflict
        }
        _ => e.into(),
    }
}

impl SqliteDb {
    /// Opens and migrates the database at `path`; with [`OpenMode::CreateIfMissing`] a missing
    /// file is created first, readable by its owner only (it holds password hashes and the
    /// anti-forgery secret).
    ///
    /// # Errors
    ///
    /// [`DbError::Missing`] for a missing file with [`OpenMode::Existing`]; [`DbError::Open`]
    /// when the file cannot be opened, is not a database, or cannot be migrated (read-only,
    /// locked).
    pub fn open(path: &Path, mode: OpenMode) -> Result<Self, DbError> {
        let shown = path.display().to_string();
        if !path.exists() {
            match mode {
                OpenMode::Existing => return Err(DbError::Missing(shown)),
                OpenMode::CreateIfMissing => create_private_file(path)
                    .map_err(|e| DbError::Open { what: shown.clone(), why: e.to_string() })?,
            }
        }
        let open_err =
            |e: rusqlite::Error| DbError::Open { what: shown.clone(), why: e.to_string() };
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut conn = Connection::open_with_flags(path, flags).map_err(open_err)?;
        conn.busy_timeout(std::time::Duration::from_secs(2)).map_err(open_err)?;
        conn.execute_batch(
            "PRAGMA foreign_keys = ON; PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;",
        )
        .map_err(open_err)?;
        migrate(&mut conn).map_err(open_err)?;
        Ok(Self { conn: Mutex::new(conn) })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite itself consistent (statements are atomic).
        self.conn.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// True when the database answers.
    pub fn ping(&self) -> bool {
        self.conn().query_row("SELECT 1", [], |_| Ok(())).is_ok()
    }

    /// The named 32-byte secret, created on first use (shared by every SERVER1 on this database).
    ///
    /// # Errors
    ///
    /// When the database fails or randomness fails.
    pub fn secret(&self, name: &str) -> Result<Vec<u8>, DbError> {
        let conn = self.conn();
        let mut fresh = [0u8; 32];
        SystemRandom::new().fill(&mut fresh).map_err(|_| DbError::Random)?;
        conn.execute(
            "INSERT OR IGNORE INTO secrets (name, value) VALUES (?1, ?2)",
            params![name, &fresh[..]],
        )?;
        Ok(conn.query_row("SELECT value FROM secrets WHERE name = ?1", [name], |r| r.get(0))?)
    }

    /// See [`super::Db::add_user`].
    ///
    /// # Errors
    ///
    /// [`DbError::Conflict`], [`DbError::EmailTaken`] or [`DbError::Unavailable`].
    pub fn add_user(&self, new: &NewUser<'_>, now: UnixTime) -> Result<User, DbError> {
        let id = new_user_id()?;
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT INTO users (id, name, password_hash, created_at, email, email_verified,
                                display_name)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                id.as_str(),
                new.name.as_str(),
                new.password_hash,
                secs(now),
                new.email.map(Email::as_str),
                new.email_verified,
                new.display_name
            ],
        )
        .map_err(conflict)?;
        let mut roles = new.roles.to_vec();
        roles.sort();
        roles.dedup();
        for role in &roles {
            tx.execute(
                "INSERT INTO user_roles (user_id, role) VALUES (?1, ?2)",
                params![id.as_str(), role.as_str()],
            )?;
        }
        tx.commit()?;
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

    /// The user whose `column` (`u.name`, `u.email` or `u.id`) is `value`, and their password
    /// hash.
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub fn user_by(&self, column: &str, value: &str) -> Result<Option<(User, String)>, DbError> {
        let sql = match column {
            "u.name" => select_user!(" FROM users u WHERE u.name = ?1"),
            "u.email" => select_user!(" FROM users u WHERE u.email = ?1"),
            _ => select_user!(" FROM users u WHERE u.id = ?1"),
        };
        let row =
            self.conn().prepare_cached(sql)?.query_row([value], |r| user_row(r, 0)).optional()?;
        Ok(row.and_then(UserRow::into_user))
    }

    /// See [`super::Db::users`].
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub fn users(&self) -> Result<Vec<User>, DbError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(select_user!(" FROM users u ORDER BY u.name"))?;
        let rows = stmt.query_map([], |r| user_row(r, 0))?.collect::<Result<Vec<_>, _>>()?;
        Ok(rows.into_iter().filter_map(UserRow::into_user).map(|(u, _)| u).collect())
    }

    /// See [`super::Db::set_disabled`].
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub fn set_disabled(&self, user: &Subject, disabled: bool) -> Result<bool, DbError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let found = tx.execute(
            "UPDATE users SET disabled = ?2 WHERE id = ?1",
            params![user.as_str(), disabled],
        )?;
        if disabled {
            tx.execute("DELETE FROM sessions WHERE user_id = ?1", [user.as_str()])?;
        }
        tx.commit()?;
        Ok(found > 0)
    }

    /// See [`super::Db::set_roles`].
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub fn set_roles(&self, user: &Subject, roles: &[Role]) -> Result<bool, DbError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let found: bool = tx
            .query_row("SELECT 1 FROM users WHERE id = ?1", [user.as_str()], |_| Ok(true))
            .optional()?
            .unwrap_or(false);
        if found {
            tx.execute("DELETE FROM user_roles WHERE user_id = ?1", [user.as_str()])?;
            for role in roles {
                tx.execute(
                    "INSERT OR IGNORE INTO user_roles (user_id, role) VALUES (?1, ?2)",
                    params![user.as_str(), role.as_str()],
                )?;
            }
        }
        tx.commit()?;
        Ok(found)
    }

    /// See [`super::Db::set_display_name`].
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub fn set_display_name(&self, user: &Subject, name: Option<&str>) -> Result<bool, DbError> {
        let changed = self.conn().execute(
            "UPDATE users SET display_name = ?2 WHERE id = ?1",
            params![user.as_str(), name],
        )?;
        Ok(changed > 0)
    }

    /// See [`super::Db::record_partner_subject`].
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub fn record_partner_subject(
        &self,
        target: &str,
        subject: &Subject,
        user: &Subject,
        now: UnixTime,
    ) -> Result<(), DbError> {
        self.conn()
            .prepare_cached(
                "INSERT OR IGNORE INTO partner_subjects (target_id, subject, user_id, first_seen)
                 VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![target, subject.as_str(), user.as_str(), secs(now)])?;
        Ok(())
    }

    /// See [`super::Db::partner_subject_user`].
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub fn partner_subject_user(
        &self,
        target: &str,
        subject: &Subject,
    ) -> Result<Option<User>, DbError> {
        let sql = select_user!(
            " FROM partner_subjects p JOIN users u ON u.id = p.user_id"
            " WHERE p.target_id = ?1 AND p.subject = ?2"
        );
        let row = self
            .conn()
            .prepare_cached(sql)?
            .query_row(params![target, subject.as_str()], |r| user_row(r, 0))
            .optional()?;
        Ok(row.and_then(UserRow::into_user).map(|(user, _)| user))
    }

    /// See [`super::Db::grant_entitlement`].
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub fn grant_entitlement(&self, e: &Entitlement, now: UnixTime) -> Result<bool, DbError> {
        let added = self.conn().execute(
            "INSERT OR IGNORE INTO entitlements (user_id, target_id, operation, arg, value, granted_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![e.user.as_str(), e.target, e.operation, e.arg, e.value, secs(now)],
        )?;
        Ok(added == 1)
    }

    /// See [`super::Db::revoke_entitlement`].
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub fn revoke_entitlement(&self, e: &Entitlement) -> Result<bool, DbError> {
        let removed = self.conn().execute(
            "DELETE FROM entitlements
             WHERE user_id = ?1 AND target_id = ?2 AND operation = ?3 AND arg = ?4 AND value = ?5",
            params![e.user.as_str(), e.target, e.operation, e.arg, e.value],
        )?;
        Ok(removed == 1)
    }

    /// See [`super::Db::is_entitled`].
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub fn is_entitled(&self, e: &Entitlement) -> Result<bool, DbError> {
        Ok(self
            .conn()
            .prepare_cached(
                "SELECT 1 FROM entitlements
                 WHERE user_id = ?1 AND target_id = ?2 AND operation = ?3 AND arg = ?4 AND value = ?5",
            )?
            .query_row(params![e.user.as_str(), e.target, e.operation, e.arg, e.value], |_| Ok(()))
            .optional()?
            .is_some())
    }

    /// See [`super::Db::entitlements`].
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub fn entitlements(
        &self,
        user: Option<&Subject>,
    ) -> Result<Vec<(String, Entitlement)>, DbError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT u.name, e.user_id, e.target_id, e.operation, e.arg, e.value
             FROM entitlements e JOIN users u ON u.id = e.user_id
             WHERE ?1 IS NULL OR e.user_id = ?1
             ORDER BY u.name, e.target_id, e.operation, e.arg, e.value",
        )?;
        let rows = stmt.query_map([user.map(Subject::as_str)], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                (r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?),
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (name, id, (target, operation, arg, value)) = row?;
            let Ok(user) = Subject::parse(&id) else { continue };
            out.push((name, Entitlement { user, target, operation, arg, value }));
        }
        Ok(out)
    }

    /// See [`super::Db::remove_user`].
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub fn remove_user(&self, user: &Subject) -> Result<bool, DbError> {
        Ok(self.conn().execute("DELETE FROM users WHERE id = ?1", [user.as_str()])? > 0)
    }

    /// See [`super::Db::set_email`].
    ///
    /// # Errors
    ///
    /// [`DbError::EmailTaken`] or [`DbError::Unavailable`].
    pub fn set_email(
        &self,
        user: &Subject,
        email: &Email,
        verified: bool,
    ) -> Result<bool, DbError> {
        let changed = self
            .conn()
            .execute(
                "UPDATE users SET email = ?2, email_verified = ?3 WHERE id = ?1",
                params![user.as_str(), email.as_str(), verified],
            )
            .map_err(conflict)?;
        Ok(changed > 0)
    }

    /// See [`super::Db::set_password`].
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub fn set_password(
        &self,
        user: &Subject,
        password_hash: &str,
        keep: Option<&[u8]>,
        now: UnixTime,
    ) -> Result<(), DbError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "UPDATE users SET password_hash = ?2 WHERE id = ?1",
            params![user.as_str(), password_hash],
        )?;
        // A reset or change-of-address link from before no longer speaks for the account.
        tx.execute(
            "DELETE FROM one_time_links WHERE user_id = ?1 AND purpose <> 'verify_email'",
            [user.as_str()],
        )?;
        end_sessions(&tx, user, keep, Some(now))?;
        tx.commit()?;
        Ok(())
    }

    /// See [`super::Db::end_sessions`].
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub fn end_sessions(
        &self,
        user: &Subject,
        keep: Option<&[u8]>,
        revoke_at: Option<UnixTime>,
    ) -> Result<u64, DbError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let ended = end_sessions(&tx, user, keep, revoke_at)?;
        tx.commit()?;
        Ok(ended)
    }

    /// See [`super::Db::create_session`].
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub fn create_session(
        &self,
        id_hash: &[u8],
        user: &Subject,
        meta: &SessionMeta,
        now: UnixTime,
        expires: UnixTime,
    ) -> Result<(), DbError> {
        self.conn().execute(
            "INSERT INTO sessions (id_hash, user_id, created_at, expires_at, public_id, last_seen,
                                   client, user_agent)
             VALUES (?1, ?2, ?3, ?4, ?5, ?3, ?6, ?7)",
            params![
                id_hash,
                user.as_str(),
                secs(now),
                secs(expires),
                meta.public_id,
                meta.client,
                meta.user_agent
            ],
        )?;
        Ok(())
    }

    /// See [`super::Db::session_user`].
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub fn session_user(
        &self,
        id_hash: &[u8],
        now: UnixTime,
    ) -> Result<Option<(User, LiveSession)>, DbError> {
        // Every signed-in request runs this: one statement, compiled once and cached, brings
        // the user and their roles (space-separated; a role is lower-case letters, digits, `-`
        // and `_`).
        let row = self
            .conn()
            .prepare_cached(select_user!(
                ", s.last_seen, s.public_id FROM sessions s JOIN users u ON u.id = s.user_id
                 WHERE s.id_hash = ?1 AND s.expires_at > ?2 AND u.disabled = 0"
            ))?
            .query_row(params![id_hash, secs(now)], |r| {
                Ok((user_row(r, 0)?, r.get::<_, i64>(8)?, r.get::<_, String>(9)?))
            })
            .optional()?;
        Ok(row.and_then(|(row, seen, public_id)| {
            row.into_user().map(|(u, _)| (u, LiveSession { last_seen: time(seen), public_id }))
        }))
    }

    /// See [`super::Db::touch_session`].
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub fn touch_session(&self, id_hash: &[u8], now: UnixTime) -> Result<(), DbError> {
        self.conn()
            .prepare_cached("UPDATE sessions SET last_seen = ?2 WHERE id_hash = ?1")?
            .execute(params![id_hash, secs(now)])?;
        Ok(())
    }

    /// See [`super::Db::sessions_of`].
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub fn sessions_of(&self, user: &Subject, now: UnixTime) -> Result<Vec<SessionInfo>, DbError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT id_hash, public_id, client, user_agent, created_at, last_seen FROM sessions
             WHERE user_id = ?1 AND expires_at > ?2 ORDER BY created_at DESC, public_id",
        )?;
        let rows = stmt.query_map(params![user.as_str(), secs(now)], |r| {
            Ok(SessionInfo {
                id_hash: r.get(0)?,
                meta: SessionMeta {
                    public_id: r.get(1)?,
                    client: r.get(2)?,
                    user_agent: r.get(3)?,
                },
                created: time(r.get(4)?),
                last_seen: time(r.get(5)?),
            })
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// See [`super::Db::end_session_by_public_id`].
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub fn end_session_by_public_id(
        &self,
        user: &Subject,
        public_id: &str,
    ) -> Result<bool, DbError> {
        let ended = self.conn().execute(
            "DELETE FROM sessions WHERE user_id = ?1 AND public_id = ?2 AND public_id <> ''",
            params![user.as_str(), public_id],
        )?;
        Ok(ended > 0)
    }

    /// Ends a session.
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub fn delete_session(&self, id_hash: &[u8]) -> Result<(), DbError> {
        self.conn().execute("DELETE FROM sessions WHERE id_hash = ?1", [id_hash])?;
        Ok(())
    }

    /// See [`super::Db::issue_link`].
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub fn issue_link(
        &self,
        user: &Subject,
        purpose: LinkPurpose,
        token_hash: &[u8],
        address: Option<&Email>,
        now: UnixTime,
        expires: UnixTime,
    ) -> Result<(), DbError> {
        self.conn().execute(
            "INSERT INTO one_time_links (user_id, purpose, token_hash, address, created_at, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (user_id, purpose) DO UPDATE SET
                token_hash = excluded.token_hash, address = excluded.address,
                created_at = excluded.created_at, expires_at = excluded.expires_at",
            params![
                user.as_str(),
                purpose.as_str(),
                token_hash,
                address.map(Email::as_str),
                secs(now),
                secs(expires)
            ],
        )?;
        Ok(())
    }

    /// See [`super::Db::peek_link`] and [`super::Db::consume_link`].
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub fn link(
        &self,
        purpose: LinkPurpose,
        token_hash: &[u8],
        now: UnixTime,
        consume: bool,
    ) -> Result<Option<LinkOwner>, DbError> {
        let sql = if consume {
            "DELETE FROM one_time_links WHERE token_hash = ?1 AND purpose = ?2 AND expires_at > ?3
             RETURNING user_id, address"
        } else {
            "SELECT user_id, address FROM one_time_links
             WHERE token_hash = ?1 AND purpose = ?2 AND expires_at > ?3"
        };
        let row: Option<(String, Option<String>)> = self
            .conn()
            .query_row(sql, params![token_hash, purpose.as_str(), secs(now)], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?;
        Ok(row.and_then(|(user, address)| {
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
    pub fn enqueue(&self, job: &Job, now: UnixTime) -> Result<(), DbError> {
        self.conn().execute(
            "INSERT INTO outbox (kind, user_id, address, sid, next_attempt_at, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
            params![
                job.kind,
                job.user.as_ref().map(Subject::as_str),
                job.address,
                job.sid,
                secs(now)
            ],
        )?;
        Ok(())
    }

    /// See [`super::Db::claim_jobs`].
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub fn claim_jobs(
        &self,
        now: UnixTime,
        lease_until: UnixTime,
        limit: u32,
    ) -> Result<Vec<ClaimedJob>, DbError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ?2
             WHERE id IN (SELECT id FROM outbox WHERE next_attempt_at <= ?1 ORDER BY id LIMIT ?3)
             RETURNING id, kind, user_id, address, attempts, created_at, sid",
        )?;
        let rows = stmt.query_map(params![secs(now), secs(lease_until), limit], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<String>>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, i64>(5)?,
                r.get::<_, Option<String>>(6)?,
            ))
        })?;
        let mut jobs = Vec::new();
        for row in rows {
            let (id, kind, user, address, attempts, created, sid) = row?;
            jobs.push(ClaimedJob {
                id,
                job: Job { kind, user: user.and_then(|u| Subject::parse(&u).ok()), address, sid },
                attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
                created: time(created),
            });
        }
        jobs.sort_by_key(|j| j.id);
        Ok(jobs)
    }

    /// See [`super::Db::finish_job`].
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub fn finish_job(&self, id: i64) -> Result<(), DbError> {
        self.conn().execute("DELETE FROM outbox WHERE id = ?1", [id])?;
        Ok(())
    }

    /// See [`super::Db::retry_job`].
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub fn retry_job(&self, id: i64, at: UnixTime) -> Result<(), DbError> {
        self.conn().execute(
            "UPDATE outbox SET next_attempt_at = ?2 WHERE id = ?1",
            params![id, secs(at)],
        )?;
        Ok(())
    }

    /// See [`super::Db::outbox_len`].
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub fn outbox_len(&self) -> Result<u64, DbError> {
        let n: i64 = self.conn().query_row("SELECT count(*) FROM outbox", [], |r| r.get(0))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// See [`super::Db::create_device`].
    ///
    /// # Errors
    ///
    /// [`DbError::Conflict`] or [`DbError::Unavailable`].
    pub fn create_device(&self, d: &NewDevice<'_>, now: UnixTime) -> Result<(), DbError> {
        self.conn()
            .execute(
                "INSERT INTO device_codes (device_hash, user_code, client_id, scope, created_at,
                                           expires_at, interval_secs)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    d.device_hash,
                    d.user_code,
                    d.client_id,
                    d.scope,
                    secs(now),
                    secs(d.expires),
                    d.interval_secs as i64
                ],
            )
            .map_err(conflict)?;
        Ok(())
    }

    /// See [`super::Db::pending_device`].
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub fn pending_device(
        &self,
        user_code: &str,
        now: UnixTime,
    ) -> Result<Option<PendingDevice>, DbError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT client_id, scope FROM device_codes
                 WHERE user_code = ?1 AND state = 'pending' AND expires_at > ?2",
                params![user_code, secs(now)],
                |r| Ok(PendingDevice { client_id: r.get(0)?, scope: r.get(1)? }),
            )
            .optional()?)
    }

    /// See [`super::Db::decide_device`].
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub fn decide_device(
        &self,
        user_code: &str,
        user: &Subject,
        approve: bool,
        now: UnixTime,
    ) -> Result<bool, DbError> {
        let state = if approve { "approved" } else { "denied" };
        let changed = self.conn().execute(
            "UPDATE device_codes SET state = ?3, user_id = ?2, decided_at = ?4
             WHERE user_code = ?1 AND state = 'pending' AND expires_at > ?4",
            params![user_code, user.as_str(), state, secs(now)],
        )?;
        Ok(changed > 0)
    }

    /// See [`super::Db::poll_device`].
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub fn poll_device(
        &self,
        device_hash: &[u8],
        client_id: &str,
        now: UnixTime,
    ) -> Result<DevicePoll, DbError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        type Row = (String, i64, i64, i64, String, Option<String>, Option<i64>);
        let row: Option<Row> = tx
            .query_row(
                "SELECT scope, expires_at, interval_secs, last_poll, state, user_id, decided_at
                 FROM device_codes WHERE device_hash = ?1 AND client_id = ?2",
                params![device_hash, client_id],
                |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                        r.get(6)?,
                    ))
                },
            )
            .optional()?;
        let Some((scope, expires, interval, last_poll, state, user, decided)) = row else {
            return Ok(DevicePoll::Unknown);
        };
        let now = secs(now);
        let poll = if expires <= now {
            DevicePoll::Expired
        } else {
            match (state.as_str(), user.and_then(|u| Subject::parse(&u).ok())) {
                ("approved", Some(user)) => {
                    DevicePoll::Approved { user, scope, decided: time(decided.unwrap_or(0)) }
                }
                ("denied", _) => DevicePoll::Denied,
                _ => {
                    let too_fast = now - last_poll < interval;
                    tx.execute(
                        "UPDATE device_codes SET last_poll = ?2, interval_secs = ?3 WHERE device_hash = ?1",
                        params![device_hash, now, if too_fast { interval + 5 } else { interval }],
                    )?;
                    tx.commit()?;
                    return Ok(DevicePoll::Pending { too_fast });
                }
            }
        };
        // Decided or expired: the codes are used up.
        tx.execute("DELETE FROM device_codes WHERE device_hash = ?1", [device_hash])?;
        tx.commit()?;
        Ok(poll)
    }

    /// See [`super::Db::start_family`].
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub fn start_family(&self, t: &NewRefresh<'_>, now: UnixTime) -> Result<(), DbError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT INTO refresh_families (id, user_id, client_id, expires_at) VALUES (?1, ?2, ?3, ?4)",
            params![t.family, t.user.as_str(), t.client_id, secs(t.family_expires)],
        )?;
        tx.execute(
            "INSERT INTO refresh_tokens (token_hash, family, user_id, client_id, scope, created_at,
                                         expires_at, family_expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                t.hash,
                t.family,
                t.user.as_str(),
                t.client_id,
                t.scope,
                secs(now),
                secs(t.expires),
                secs(t.family_expires)
            ],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// See [`super::Db::rotate_refresh`]. SQLite runs one transaction at a time, so the
    /// family is held for the whole of it.
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub fn rotate_refresh(
        &self,
        hash: &[u8],
        next_hash: &[u8],
        idle_secs: u64,
        now: UnixTime,
    ) -> Result<Rotation, DbError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        type Row = (String, String, String, String, i64, Option<i64>, i64, bool, i64);
        let row: Option<Row> = tx
            .query_row(
                "SELECT t.family, t.user_id, t.client_id, t.scope, t.created_at, t.used_at,
                        t.expires_at, f.revoked, f.expires_at
                 FROM refresh_tokens t JOIN refresh_families f ON f.id = t.family
                 WHERE t.token_hash = ?1",
                [hash],
                |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                        r.get(6)?,
                        r.get(7)?,
                        r.get(8)?,
                    ))
                },
            )
            .optional()?;
        let Some((family, user, client_id, scope, created, used, expires, revoked, family_expires)) =
            row
        else {
            return Ok(Rotation::Invalid);
        };
        let Ok(user) = Subject::parse(&user) else { return Ok(Rotation::Invalid) };
        let now_s = secs(now);
        if used.is_some() {
            tx.execute("UPDATE refresh_families SET revoked = 1 WHERE id = ?1", [&family])?;
            tx.commit()?;
            return Ok(Rotation::Reused { family, user });
        }
        if revoked || expires <= now_s || family_expires <= now_s {
            return Ok(Rotation::Invalid);
        }
        tx.execute(
            "UPDATE refresh_tokens SET used_at = ?2 WHERE token_hash = ?1",
            params![hash, now_s],
        )?;
        let next_expires =
            now_s.saturating_add(i64::try_from(idle_secs).unwrap_or(i64::MAX)).min(family_expires);
        tx.execute(
            "INSERT INTO refresh_tokens (token_hash, family, user_id, client_id, scope, created_at,
                                         expires_at, family_expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                next_hash,
                family,
                user.as_str(),
                client_id,
                scope,
                now_s,
                next_expires,
                family_expires
            ],
        )?;
        tx.commit()?;
        Ok(Rotation::Rotated {
            family,
            user,
            client_id,
            scope,
            created: time(created),
            family_expires: time(family_expires),
        })
    }

    /// See [`super::Db::revoke_refresh`].
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub fn revoke_refresh(&self, by: RevokeBy<'_>) -> Result<u64, DbError> {
        let (sql, value) = match by {
            RevokeBy::Family(f) => {
                ("UPDATE refresh_families SET revoked = 1 WHERE id = ?1 AND revoked = 0", f)
            }
            RevokeBy::User(u) => (
                "UPDATE refresh_families SET revoked = 1 WHERE user_id = ?1 AND revoked = 0",
                u.as_str(),
            ),
            RevokeBy::Client(c) => {
                ("UPDATE refresh_families SET revoked = 1 WHERE client_id = ?1 AND revoked = 0", c)
            }
        };
        Ok(u64::try_from(self.conn().execute(sql, [value])?).unwrap_or(u64::MAX))
    }

    /// See [`super::Db::deny_token`].
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub fn deny_token(&self, jti: &str, until: UnixTime) -> Result<(), DbError> {
        self.conn().execute(
            "INSERT INTO denied_tokens (jti, expires_at) VALUES (?1, ?2)
             ON CONFLICT (jti) DO UPDATE SET expires_at = max(expires_at, excluded.expires_at)",
            params![jti, secs(until)],
        )?;
        Ok(())
    }

    /// See [`super::Db::use_jti`].
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub fn use_jti(&self, jti: &str, until: UnixTime, now: UnixTime) -> Result<bool, DbError> {
        let conn = self.conn();
        // An expired entry no longer counts: the token it names cannot pass anyway.
        conn.prepare_cached("DELETE FROM used_jtis WHERE jti = ?1 AND expires_at <= ?2")?
            .execute(params![jti, secs(now)])?;
        let added = conn
            .prepare_cached("INSERT OR IGNORE INTO used_jtis (jti, expires_at) VALUES (?1, ?2)")?
            .execute(params![jti, secs(until)])?;
        Ok(added == 1)
    }

    /// See [`super::Db::is_denied`].
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub fn is_denied(&self, jti: &str, now: UnixTime) -> Result<bool, DbError> {
        Ok(self
            .conn()
            .prepare_cached("SELECT 1 FROM denied_tokens WHERE jti = ?1 AND expires_at > ?2")?
            .query_row(params![jti, secs(now)], |_| Ok(()))
            .optional()?
            .is_some())
    }

    /// See [`super::Db::tokens_valid_after`].
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub fn tokens_valid_after(&self, user: &Subject) -> Result<Option<UnixTime>, DbError> {
        let at: Option<i64> = self
            .conn()
            .prepare_cached("SELECT tokens_valid_after FROM users WHERE id = ?1")?
            .query_row([user.as_str()], |r| r.get(0))
            .optional()?;
        Ok(at.map(time))
    }

    /// Moves `tokens_valid_after` to `at`, ending no session.
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub fn end_sessions_keeping_all(&self, user: &Subject, at: UnixTime) -> Result<(), DbError> {
        let conn = self.conn();
        conn.execute(
            "UPDATE users SET tokens_valid_after = max(tokens_valid_after, ?2) WHERE id = ?1",
            params![user.as_str(), secs(at)],
        )?;
        conn.execute("DELETE FROM device_codes WHERE user_id = ?1", [user.as_str()])?;
        Ok(())
    }

    /// Deletes expired sessions and links, and idle, unblocked throttle counts; returns how many
    /// rows.
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub fn purge(&self, now: UnixTime, idle_secs: u64) -> Result<usize, DbError> {
        let conn = self.conn();
        let now = now.as_secs() as i64;
        let sessions = conn.execute("DELETE FROM sessions WHERE expires_at <= ?1", [now])?;
        let links = conn.execute("DELETE FROM one_time_links WHERE expires_at <= ?1", [now])?;
        let api = conn.execute("DELETE FROM device_codes WHERE expires_at <= ?1", [now])?
            + conn.execute("DELETE FROM refresh_tokens WHERE family_expires_at <= ?1", [now])?
            + conn.execute("DELETE FROM refresh_families WHERE expires_at <= ?1", [now])?
            + conn.execute("DELETE FROM denied_tokens WHERE expires_at <= ?1", [now])?
            + conn.execute("DELETE FROM used_jtis WHERE expires_at <= ?1", [now])?;
        let counts = conn.execute(
            "DELETE FROM signin_throttle WHERE last_seen <= ?1 AND blocked_until <= ?2",
            [now.saturating_sub(idle_secs as i64), now],
        )?;
        Ok(sessions + links + api + counts)
    }

    /// See [`super::Db::throttle_blocked_until`].
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub fn throttle_blocked_until(&self, keys: &[String]) -> Result<u64, DbError> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare_cached("SELECT blocked_until FROM signin_throttle WHERE key = ?1")?;
        let mut latest = 0u64;
        for key in keys {
            let until: Option<i64> = stmt.query_row([key], |r| r.get(0)).optional()?;
            latest = latest.max(until.map_or(0, |u| u64::try_from(u).unwrap_or(0)));
        }
        Ok(latest)
    }

    /// See [`super::Db::throttle_failures`].
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub fn throttle_failures(
        &self,
        key: &str,
        now: UnixTime,
        idle_secs: u64,
    ) -> Result<u32, DbError> {
        let failures: Option<i64> = self
            .conn()
            .prepare_cached(
                "SELECT failures FROM signin_throttle WHERE key = ?1 AND ?2 - last_seen < ?3",
            )?
            .query_row(params![key, now.as_secs() as i64, idle_secs as i64], |r| r.get(0))
            .optional()?;
        Ok(failures.map_or(0, |f| u32::try_from(f).unwrap_or(u32::MAX)))
    }

    /// See [`super::Db::throttle_count`].
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub fn throttle_count(
        &self,
        key: &str,
        now: UnixTime,
        idle_secs: u64,
    ) -> Result<Counted, DbError> {
        let failures: i64 = self.conn().query_row(
            "INSERT INTO signin_throttle (key, failures, blocked_until, last_seen)
             VALUES (?1, 1, 0, ?2)
             ON CONFLICT (key) DO UPDATE SET
                failures = CASE WHEN ?2 - last_seen >= ?3 THEN 1 ELSE failures + 1 END,
                last_seen = ?2
             RETURNING failures",
            params![key, now.as_secs() as i64, idle_secs as i64],
            |r| r.get(0),
        )?;
        Ok(Counted { failures: u32::try_from(failures).unwrap_or(u32::MAX) })
    }

    /// See [`super::Db::throttle_block`].
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub fn throttle_block(&self, key: &str, until: u64) -> Result<(), DbError> {
        self.conn().execute(
            "UPDATE signin_throttle SET blocked_until = max(blocked_until, ?2) WHERE key = ?1",
            params![key, until as i64],
        )?;
        Ok(())
    }

    /// See [`super::Db::throttle_clear`].
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub fn throttle_clear(&self, key: &str) -> Result<(), DbError> {
        self.conn().execute("DELETE FROM signin_throttle WHERE key = ?1", [key])?;
        Ok(())
    }
}

/// Ends the sessions of `user` but `keep`, and moves `tokens_valid_after` to `revoke_at`.
fn end_sessions(
    tx: &rusqlite::Transaction<'_>,
    user: &Subject,
    keep: Option<&[u8]>,
    revoke_at: Option<UnixTime>,
) -> Result<u64, DbError> {
    let ended = tx.execute(
        "DELETE FROM sessions WHERE user_id = ?1 AND id_hash IS NOT ?2",
        params![user.as_str(), keep],
    )?;
    if let Some(at) = revoke_at {
        tx.execute(
            "UPDATE users SET tokens_valid_after = max(tokens_valid_after, ?2) WHERE id = ?1",
            params![user.as_str(), secs(at)],
        )?;
        // App approvals not collected yet go with the sessions.
        tx.execute("DELETE FROM device_codes WHERE user_id = ?1", [user.as_str()])?;
    }
    Ok(u64::try_from(ended).unwrap_or(u64::MAX))
}

fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    let version: usize = tx
        .query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))?
        .try_into()
        .unwrap_or(usize::MAX);
    if version > MIGRATIONS.len() {
        return Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_MISMATCH),
            Some(format!(
                "database schema v{version} is newer than this server (v{})",
                MIGRATIONS.len()
            )),
        ));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i as i64 + 1)?;
    }
    tx.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::names::UserName;

    fn name(n: &str) -> UserName {
        UserName::parse(n).expect("name")
    }

    fn roles(names: &[&str]) -> Vec<Role> {
        names.iter().map(|r| Role::parse(r).expect("role")).collect()
    }

    fn email(e: &str) -> Email {
        Email::parse(e).expect("email")
    }

    fn meta(id: &str) -> SessionMeta {
        SessionMeta { public_id: id.into(), client: Some("192.0.2.1".into()), user_agent: None }
    }

    fn add(
        db: &SqliteDb,
        n: &str,
        r: &[&str],
        e: Option<&str>,
        now: UnixTime,
    ) -> Result<User, DbError> {
        let (n, r, e) = (name(n), roles(r), e.map(email));
        let new = NewUser {
            name: &n,
            password_hash: "hash",
            roles: &r,
            email: e.as_ref(),
            email_verified: false,
            display_name: None,
        };
        db.add_user(&new, now)
    }

    #[test]
    fn users_sessions_and_secrets() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("db.sqlite3");
        assert!(matches!(SqliteDb::open(&path, OpenMode::Existing), Err(DbError::Missing(_))));
        let db = SqliteDb::open(&path, OpenMode::CreateIfMissing).expect("open");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "the database is private");
        }
        let now = UnixTime::from_secs(1000);
        let user =
            add(&db, "alice", &["b", "a", "a"], Some("alice@example.com"), now).expect("add");
        assert_eq!(user.roles, vec!["a", "b"]);
        assert!(matches!(add(&db, "alice", &[], None, now), Err(DbError::Conflict)));
        assert!(matches!(
            add(&db, "alice2", &[], Some("alice@example.com"), now),
            Err(DbError::EmailTaken)
        ));
        let (found, hash) = db.user_by("u.name", "alice").expect("query").expect("found");
        assert_eq!(found, user);
        assert_eq!(hash, "hash");
        assert_eq!(
            db.user_by("u.email", "alice@example.com").expect("q").map(|(u, _)| u),
            Some(user.clone())
        );
        assert_eq!(
            db.user_by("u.id", user.id.as_str()).expect("q").map(|(u, _)| u),
            Some(user.clone())
        );
        assert!(db.user_by("u.name", "bob").expect("query").is_none());

        db.create_session(b"h1", &user.id, &meta("p1"), now, now.plus(60)).expect("session");
        let live = LiveSession { last_seen: now, public_id: "p1".into() };
        assert_eq!(db.session_user(b"h1", now).expect("q"), Some((user.clone(), live)));
        assert_eq!(db.session_user(b"h1", now.plus(60)).expect("q"), None, "expired");
        assert_eq!(db.session_user(b"h2", now).expect("q"), None);
        db.touch_session(b"h1", now.plus(30)).expect("touch");
        assert_eq!(
            db.session_user(b"h1", now).expect("q").map(|(_, seen)| seen),
            Some(LiveSession { last_seen: now.plus(30), public_id: "p1".into() })
        );
        db.delete_session(b"h1").expect("delete");
        assert_eq!(db.session_user(b"h1", now).expect("q"), None);
        // A user without roles, and one with several, come back from a session as they went in.
        let carol = add(&db, "carol", &[], None, now).expect("add");
        db.create_session(b"h3", &carol.id, &meta("p3"), now, now.plus(60)).expect("session");
        assert_eq!(
            db.session_user(b"h3", now).expect("q").expect("carol").0.roles,
            Vec::<String>::new()
        );
        let dave = add(&db, "dave", &["reports", "billing", "a-b_c"], None, now).expect("add");
        db.create_session(b"h4", &dave.id, &meta("p4"), now, now.plus(60)).expect("session");
        assert_eq!(db.session_user(b"h4", now).expect("q").map(|(u, _)| u), Some(dave));

        let s1 = db.secret("csrf").expect("secret");
        assert_eq!(s1.len(), 32);
        assert_eq!(db.secret("csrf").expect("secret"), s1, "stable");
        drop(db);
        // Re-opening keeps data and does not re-run migrations.
        let db = SqliteDb::open(&path, OpenMode::Existing).expect("reopen");
        assert!(db.user_by("u.name", "alice").expect("q").is_some());
    }

    #[test]
    fn accounts_sessions_links_and_the_outbox() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = SqliteDb::open(&dir.path().join("db.sqlite3"), OpenMode::CreateIfMissing)
            .expect("open");
        let now = UnixTime::from_secs(10_000);
        let alice = add(&db, "alice", &["a"], Some("alice@example.com"), now).expect("add");
        let bob = add(&db, "bob", &[], Some("bob@example.com"), now).expect("add");
        for (hash, id, who) in
            [(&b"a1"[..], "pa1", &alice), (b"a2", "pa2", &alice), (b"b1", "pb1", &bob)]
        {
            db.create_session(hash, &who.id, &meta(id), now, now.plus(600)).expect("session");
        }
        let listed = db.sessions_of(&alice.id, now).expect("list");
        assert_eq!(listed.len(), 2);
        assert_eq!(listed[0].meta.client.as_deref(), Some("192.0.2.1"));
        // Bob cannot end Alice's session by its public id; Alice can.
        assert!(!db.end_session_by_public_id(&bob.id, "pa1").expect("end"));
        assert!(db.end_session_by_public_id(&alice.id, "pa1").expect("end"));
        assert!(
            !db.end_session_by_public_id(&alice.id, "").expect("end"),
            "an empty id names nothing"
        );
        // A new password ends every other session and moves tokens_valid_after.
        db.create_session(b"a3", &alice.id, &meta("pa3"), now, now.plus(600)).expect("session");
        db.set_password(&alice.id, "new-hash", Some(b"a3"), now.plus(5)).expect("password");
        assert_eq!(db.user_by("u.id", alice.id.as_str()).expect("q").expect("alice").1, "new-hash");
        assert!(db.session_user(b"a2", now).expect("q").is_none());
        assert!(db.session_user(b"a3", now).expect("q").is_some(), "the kept one");
        let after: i64 = db
            .conn()
            .query_row(
                "SELECT tokens_valid_after FROM users WHERE id = ?1",
                [alice.id.as_str()],
                |r| r.get(0),
            )
            .expect("q");
        assert_eq!(after, 10_005);
        assert_eq!(db.end_sessions(&alice.id, None, None).expect("end"), 1);
        // Disabling ends sessions and hides the user from session lookups.
        assert!(db.set_disabled(&bob.id, true).expect("disable"));
        assert!(db.session_user(b"b1", now).expect("q").is_none());
        assert!(db.user_by("u.name", "bob").expect("q").expect("bob").0.disabled);
        assert!(db.set_disabled(&bob.id, false).expect("enable"));
        assert!(db.set_roles(&bob.id, &roles(&["x", "y"])).expect("roles"));
        assert_eq!(db.user_by("u.name", "bob").expect("q").expect("bob").0.roles, vec!["x", "y"]);
        assert!(matches!(
            db.set_email(&bob.id, &email("alice@example.com"), true),
            Err(DbError::EmailTaken)
        ));
        assert!(db.set_email(&bob.id, &email("robert@example.com"), true).expect("email"));
        assert_eq!(db.users().expect("list").len(), 2);

        // Links: only the latest per user and purpose, single use, until expiry, by purpose.
        let p = LinkPurpose::ResetPassword;
        db.issue_link(&alice.id, p, b"t1", None, now, now.plus(60)).expect("issue");
        db.issue_link(&alice.id, p, b"t2", None, now, now.plus(60)).expect("issue");
        assert!(db.link(p, b"t1", now, false).expect("q").is_none(), "replaced");
        assert!(
            db.link(LinkPurpose::VerifyEmail, b"t2", now, false).expect("q").is_none(),
            "another purpose"
        );
        assert!(db.link(p, b"t2", now.plus(60), false).expect("q").is_none(), "expired");
        assert_eq!(
            db.link(p, b"t2", now, false).expect("q").map(|o| o.user),
            Some(alice.id.clone())
        );
        assert!(db.link(p, b"t2", now, true).expect("q").is_some());
        assert!(db.link(p, b"t2", now, true).expect("q").is_none(), "used");
        db.issue_link(
            &alice.id,
            LinkPurpose::ChangeEmail,
            b"t3",
            Some(&email("new@example.com")),
            now,
            now.plus(60),
        )
        .expect("issue");
        assert_eq!(
            db.link(LinkPurpose::ChangeEmail, b"t3", now, true).expect("q").and_then(|o| o.address),
            Some(email("new@example.com"))
        );

        // The outbox: claimed with a lease, retried when due, removed when done.
        let job = Job {
            sid: None,
            kind: "verify_email".into(),
            user: Some(alice.id.clone()),
            address: "alice@example.com".into(),
        };
        db.enqueue(&job, now).expect("enqueue");
        db.enqueue(&Job { user: None, ..job.clone() }, now).expect("enqueue");
        let claimed = db.claim_jobs(now, now.plus(120), 10).expect("claim");
        assert_eq!(claimed.len(), 2);
        assert_eq!((claimed[0].job.clone(), claimed[0].attempts), (job, 1));
        assert!(
            db.claim_jobs(now.plus(119), now.plus(240), 10).expect("claim").is_empty(),
            "leased"
        );
        db.retry_job(claimed[0].id, now.plus(5)).expect("retry");
        db.finish_job(claimed[1].id).expect("finish");
        assert_eq!(db.outbox_len().expect("len"), 1);
        let again = db.claim_jobs(now.plus(5), now.plus(125), 10).expect("claim");
        assert_eq!((again.len(), again[0].attempts), (1, 2));

        // Removing a user removes their sessions and links.
        db.create_session(b"a9", &alice.id, &meta("pa9"), now, now.plus(600)).expect("session");
        db.issue_link(&alice.id, p, b"t9", None, now, now.plus(60)).expect("issue");
        assert!(db.remove_user(&alice.id).expect("remove"));
        assert!(!db.remove_user(&alice.id).expect("remove"));
        assert!(db.session_user(b"a9", now).expect("q").is_none());
        assert!(db.link(p, b"t9", now, false).expect("q").is_none());
        // Purge forgets expired links.
        db.issue_link(&bob.id, p, b"t10", None, now, now.plus(60)).expect("issue");
        assert!(db.purge(now.plus(61), 3600).expect("purge") >= 1);
    }

    #[test]
    fn unopenable_database_is_a_clear_error() {
        let missing = Path::new("/nonexistent-dir/x/db.sqlite3");
        let err = SqliteDb::open(missing, OpenMode::CreateIfMissing).unwrap_err();
        assert!(err.to_string().contains("SERVER1_DATABASE_URL"));
        let err = SqliteDb::open(missing, OpenMode::Existing).unwrap_err();
        assert!(err.to_string().contains("server1 users add"), "{err}");
        let dir = tempfile::tempdir().expect("tempdir");
        let garbage = dir.path().join("garbage.sqlite3");
        std::fs::write(&garbage, vec![b'x'; 4096]).expect("write");
        assert!(matches!(SqliteDb::open(&garbage, OpenMode::Existing), Err(DbError::Open { .. })));
        // A database from a newer server is refused, not migrated backwards or written to.
        let newer = dir.path().join("newer.sqlite3");
        drop(SqliteDb::open(&newer, OpenMode::CreateIfMissing).expect("create"));
        rusqlite::Connection::open(&newer)
            .and_then(|c| c.pragma_update(None, "user_version", 999))
            .expect("bump");
        let err = SqliteDb::open(&newer, OpenMode::Existing).unwrap_err().to_string();
        assert!(err.contains("newer than this server"), "{err}");
        // Read-only: migrating or writing fails with a clear error, not a panic.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let ro = dir.path().join("ro.sqlite3");
            drop(SqliteDb::open(&ro, OpenMode::CreateIfMissing).expect("create"));
            std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o400)).expect("chmod");
            // root ignores file modes; only assert where the mode is enforced.
            if std::fs::OpenOptions::new().write(true).open(&ro).is_err() {
                assert!(SqliteDb::open(&ro, OpenMode::Existing).is_err());
            }
        }
    }
}
