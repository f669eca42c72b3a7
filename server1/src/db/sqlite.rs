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

use super::{new_user_id, user_from_row, Counted, DbError, OpenMode, User};
use crate::names::{Role, UserName};

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
];

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

    /// Adds a user with roles, all or nothing.
    ///
    /// # Errors
    ///
    /// [`DbError::Conflict`] when the name is taken; [`DbError::Unavailable`] otherwise.
    pub fn add_user(
        &self,
        name: &UserName,
        password_hash: &str,
        roles: &[Role],
        now: UnixTime,
    ) -> Result<User, DbError> {
        let id = new_user_id()?;
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let inserted = tx.execute(
            "INSERT INTO users (id, name, password_hash, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![id.as_str(), name.as_str(), password_hash, now.as_secs() as i64],
        );
        match inserted {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == ErrorCode::ConstraintViolation =>
            {
                return Err(DbError::Conflict)
            }
            other => other?,
        };
        let mut roles = roles.to_vec();
        roles.sort();
        roles.dedup();
        for role in &roles {
            tx.execute(
                "INSERT INTO user_roles (user_id, role) VALUES (?1, ?2)",
                params![id.as_str(), role.as_str()],
            )?;
        }
        tx.commit()?;
        Ok(User { id, name: name.clone(), roles })
    }

    /// The user called `name` and their password hash.
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub fn user_by_name(&self, name: &UserName) -> Result<Option<(User, String)>, DbError> {
        let conn = self.conn();
        let row: Option<(String, String)> = conn
            .query_row(
                "SELECT id, password_hash FROM users WHERE name = ?1",
                [name.as_str()],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let Some((id, hash)) = row else { return Ok(None) };
        let user = load_user(&conn, &id, name)?;
        Ok(user.map(|u| (u, hash)))
    }

    /// Records a session (by the hash of its id) for `user`.
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub fn create_session(
        &self,
        id_hash: &[u8],
        user: &Subject,
        now: UnixTime,
        expires: UnixTime,
    ) -> Result<(), DbError> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO sessions (id_hash, user_id, created_at, expires_at) VALUES (?1, ?2, ?3, ?4)",
            params![id_hash, user.as_str(), now.as_secs() as i64, expires.as_secs() as i64],
        )?;
        Ok(())
    }

    /// The user of a live session.
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub fn session_user(&self, id_hash: &[u8], now: UnixTime) -> Result<Option<User>, DbError> {
        let conn = self.conn();
        // Every signed-in request runs this: one statement, compiled once and cached, brings
        // the user and their roles (space-separated; a role is lower-case letters, digits, `-`
        // and `_`).
        let row: Option<(String, String, Option<String>)> = conn
            .prepare_cached(
                "SELECT u.id, u.name,
                        (SELECT group_concat(r.role, ' ') FROM user_roles r WHERE r.user_id = u.id)
                 FROM sessions s JOIN users u ON u.id = s.user_id
                 WHERE s.id_hash = ?1 AND s.expires_at > ?2",
            )?
            .query_row(params![id_hash, now.as_secs() as i64], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .optional()?;
        let Some((id, name, roles)) = row else { return Ok(None) };
        Ok(user_from_row(&id, &name, roles.as_deref().unwrap_or_default()))
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

    /// Deletes expired sessions and idle, unblocked throttle counts; returns how many rows.
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub fn purge(&self, now: UnixTime, idle_secs: u64) -> Result<usize, DbError> {
        let conn = self.conn();
        let now = now.as_secs() as i64;
        let sessions = conn.execute("DELETE FROM sessions WHERE expires_at <= ?1", [now])?;
        let counts = conn.execute(
            "DELETE FROM signin_throttle WHERE last_seen <= ?1 AND blocked_until <= ?2",
            [now.saturating_sub(idle_secs as i64), now],
        )?;
        Ok(sessions + counts)
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

fn load_user(conn: &Connection, id: &str, name: &UserName) -> Result<Option<User>, DbError> {
    let mut stmt =
        conn.prepare_cached("SELECT role FROM user_roles WHERE user_id = ?1 ORDER BY role")?;
    let roles = stmt.query_map([id], |r| r.get::<_, String>(0))?.collect::<Result<Vec<_>, _>>()?;
    Ok(user_from_row(id, name.as_str(), &roles.join(" ")))
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

    fn name(n: &str) -> UserName {
        UserName::parse(n).expect("name")
    }

    fn roles(names: &[&str]) -> Vec<Role> {
        names.iter().map(|r| Role::parse(r).expect("role")).collect()
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
        let user = db.add_user(&name("alice"), "hash", &roles(&["b", "a", "a"]), now).expect("add");
        assert_eq!(user.roles, vec!["a", "b"]);
        assert!(matches!(db.add_user(&name("alice"), "h", &[], now), Err(DbError::Conflict)));
        let (found, hash) = db.user_by_name(&name("alice")).expect("query").expect("found");
        assert_eq!(found, user);
        assert_eq!(hash, "hash");
        assert!(db.user_by_name(&name("bob")).expect("query").is_none());

        db.create_session(b"h1", &user.id, now, now.plus(60)).expect("session");
        assert_eq!(db.session_user(b"h1", now).expect("q"), Some(user.clone()));
        assert_eq!(db.session_user(b"h1", now.plus(60)).expect("q"), None, "expired");
        assert_eq!(db.session_user(b"h2", now).expect("q"), None);
        db.delete_session(b"h1").expect("delete");
        assert_eq!(db.session_user(b"h1", now).expect("q"), None);
        // A user without roles, and one with several, come back from a session as they went in.
        let carol = db.add_user(&name("carol"), "hash", &[], now).expect("add");
        db.create_session(b"h3", &carol.id, now, now.plus(60)).expect("session");
        assert_eq!(
            db.session_user(b"h3", now).expect("q").expect("carol").roles,
            Vec::<String>::new()
        );
        let dave = db
            .add_user(&name("dave"), "hash", &roles(&["reports", "billing", "a-b_c"]), now)
            .expect("add");
        db.create_session(b"h4", &dave.id, now, now.plus(60)).expect("session");
        assert_eq!(db.session_user(b"h4", now).expect("q"), Some(dave));

        let s1 = db.secret("csrf").expect("secret");
        assert_eq!(s1.len(), 32);
        assert_eq!(db.secret("csrf").expect("secret"), s1, "stable");
        drop(db);
        // Re-opening keeps data and does not re-run migrations.
        let db = SqliteDb::open(&path, OpenMode::Existing).expect("reopen");
        assert!(db.user_by_name(&name("alice")).expect("q").is_some());
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
