//! SERVER1's database: users and their roles, sign-in sessions, one-time links, the outbox of
//! mail to send, the sign-in throttle's counts and the shared secrets, on SQLite (one host; the embedded default) or PostgreSQL (several
//! replicas). [`Db`] is the one async interface both engines sit behind; each engine has its own
//! schema migrations, applied at start-up.

mod postgres;
mod sqlite;

use std::path::PathBuf;
use std::time::Duration;

use handoff::{Subject, UnixTime};

use crate::names::{Email, Role, UserName};
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
    /// Another user has that e-mail address.
    #[error("another user has that e-mail address")]
    EmailTaken,
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

/// One object a user may open: the value an operation's argument may take for them, when the
/// targets file says that argument is `entitled`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entitlement {
    /// Who.
    pub user: Subject,
    /// The target's id.
    pub target: String,
    /// The operation type.
    pub operation: String,
    /// The argument's name.
    pub arg: String,
    /// Its value.
    pub value: String,
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
    /// Their e-mail address, if they have one.
    pub email: Option<Email>,
    /// True when the address was verified (by a link, or by the operator who added the user).
    pub email_verified: bool,
    /// A disabled user cannot sign in and has no sessions.
    pub disabled: bool,
    /// How they are shown ("Alice Example"), if they set a name.
    pub display_name: Option<String>,
}

impl User {
    /// True when the user has `role`.
    pub fn has_role(&self, role: &Role) -> bool {
        self.roles.contains(role)
    }
}

/// What a new user is made of.
#[derive(Debug, Clone)]
pub struct NewUser<'a> {
    /// Sign-in name.
    pub name: &'a UserName,
    /// The argon2 hash of their password.
    pub password_hash: &'a str,
    /// Roles.
    pub roles: &'a [Role],
    /// E-mail address.
    pub email: Option<&'a Email>,
    /// Whether the address counts as verified already.
    pub email_verified: bool,
    /// How they are shown, checked by [`handoff::token::is_display_name`].
    pub display_name: Option<&'a str>,
}

/// The columns every user query selects, in this order (`u` is the users table): id, name,
/// roles (space-separated), email, email_verified, disabled, password_hash, display_name.
struct UserRow {
    id: String,
    name: String,
    roles: Option<String>,
    email: Option<String>,
    email_verified: bool,
    disabled: bool,
    password_hash: String,
    display_name: Option<String>,
}

impl UserRow {
    /// The user, from stored text. Ids, names, roles and addresses are written only checked;
    /// one that fails the check now means a tampered database, and that user simply does not
    /// exist (a role that fails it is not held, an address that fails it is none).
    fn into_user(self) -> Option<(User, String)> {
        let mut roles: Vec<Role> = self
            .roles
            .as_deref()
            .unwrap_or_default()
            .split(' ')
            .filter(|r| !r.is_empty())
            .filter_map(|r| Role::parse(r).ok())
            .collect();
        roles.sort();
        let user = User {
            id: Subject::parse(&self.id).ok()?,
            name: UserName::parse(&self.name).ok()?,
            roles,
            email: self.email.as_deref().and_then(|e| Email::parse(e).ok()),
            email_verified: self.email_verified,
            disabled: self.disabled,
            display_name: self.display_name.filter(|n| handoff::token::is_display_name(n)),
        };
        Some((user, self.password_hash))
    }
}

/// A time as the databases store it (seconds, signed).
fn secs(t: UnixTime) -> i64 {
    i64::try_from(t.as_secs()).unwrap_or(i64::MAX)
}

/// A stored time (a negative one, from a tampered database, is the epoch).
fn time(secs: i64) -> UnixTime {
    UnixTime::from_secs(u64::try_from(secs).unwrap_or(0))
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

/// What is kept of a session besides its hash, for the account page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionMeta {
    /// An id the account page names the session by (never its cookie or hash).
    pub public_id: String,
    /// The client address it was opened from.
    pub client: Option<String>,
    /// The browser's `User-Agent`, shortened.
    pub user_agent: Option<String>,
}

/// What a session lookup brings besides the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveSession {
    /// When it was last used (to the minute).
    pub last_seen: UnixTime,
    /// Its public id (empty for a session from before public ids).
    pub public_id: String,
}

/// A live session, as the account page lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// The hash of its id (to mark the browser's own).
    pub id_hash: Vec<u8>,
    /// See [`SessionMeta`].
    pub meta: SessionMeta,
    /// When it was opened.
    pub created: UnixTime,
    /// When it was last used (to the minute).
    pub last_seen: UnixTime,
}

/// A one-time link's purpose: a link for one purpose never serves another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkPurpose {
    /// Verify the account's address.
    VerifyEmail,
    /// Set a new password.
    ResetPassword,
    /// Confirm a new address before it replaces the old one.
    ChangeEmail,
}

impl LinkPurpose {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::VerifyEmail => "verify_email",
            Self::ResetPassword => "reset_password",
            Self::ChangeEmail => "change_email",
        }
    }
}

/// A live one-time link's owner, and the address it confirms (for [`LinkPurpose::ChangeEmail`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkOwner {
    /// The user it was issued to.
    pub user: Subject,
    /// The address it confirms.
    pub address: Option<Email>,
}

/// One piece of mail to send, as the outbox keeps it: what to send and to whom, never a link
/// (links are made when the mail is sent, so the database never holds one that works).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// What to send (see [`crate::mail::Kind`]).
    pub kind: String,
    /// The user it is about, when there is one.
    pub user: Option<Subject>,
    /// The address it goes to (for a back-channel logout: the target's id).
    pub address: String,
    /// For a back-channel logout, the session that ended (none: every session of the user).
    pub sid: Option<String>,
}

/// A job taken from the outbox to work on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedJob {
    /// Its row.
    pub id: i64,
    /// What it is.
    pub job: Job,
    /// Attempts so far, this one included.
    pub attempts: u32,
    /// When it was queued.
    pub created: UnixTime,
}

/// A device authorization request to record (RFC 8628).
#[derive(Debug, Clone, Copy)]
pub struct NewDevice<'a> {
    /// The SHA-256 of the device code (the app's secret).
    pub device_hash: &'a [u8],
    /// The code the person types (normalised: upper-case letters, no dash).
    pub user_code: &'a str,
    /// The app.
    pub client_id: &'a str,
    /// What it asks for.
    pub scope: &'a str,
    /// When the codes stop working.
    pub expires: UnixTime,
    /// The polling interval the app was told.
    pub interval_secs: u64,
}

/// A pending device request, as the approval page shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingDevice {
    /// The app.
    pub client_id: String,
    /// What it asks for.
    pub scope: String,
}

/// What a poll of the token endpoint with a device code finds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DevicePoll {
    /// No such code (never issued, used, or for another app).
    Unknown,
    /// The codes expired (and are now forgotten).
    Expired,
    /// Not decided yet; `too_fast` when polled before the interval passed (the interval then
    /// grows by 5 s).
    Pending {
        /// Polled too soon.
        too_fast: bool,
    },
    /// The person denied it (forgotten now).
    Denied,
    /// Approved by `user`: used up by this poll.
    Approved {
        /// Who approved.
        user: Subject,
        /// What was approved.
        scope: String,
        /// When.
        decided: UnixTime,
    },
}

/// A new refresh family and its first token.
#[derive(Debug, Clone, Copy)]
pub struct NewRefresh<'a> {
    /// The SHA-256 of the token.
    pub hash: &'a [u8],
    /// The family it belongs to (every token rotated from one grant).
    pub family: &'a str,
    /// The user.
    pub user: &'a Subject,
    /// The app.
    pub client_id: &'a str,
    /// The scopes.
    pub scope: &'a str,
    /// When this token stops working if unused (the idle lifetime).
    pub expires: UnixTime,
    /// When the whole family stops working (the absolute lifetime).
    pub family_expires: UnixTime,
}

/// What presenting a refresh token did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotation {
    /// It was live and is now used; the family's next token was recorded with it.
    Rotated {
        /// The family.
        family: String,
        /// The user.
        user: Subject,
        /// The app.
        client_id: String,
        /// The scopes.
        scope: String,
        /// When the token was issued.
        created: UnixTime,
        /// When the family ends.
        family_expires: UnixTime,
    },
    /// It was used before: the whole family is now revoked.
    Reused {
        /// The family.
        family: String,
        /// The user.
        user: Subject,
    },
    /// Unknown, expired or revoked.
    Invalid,
}

/// Which refresh-token families to revoke.
#[derive(Debug, Clone, Copy)]
pub enum RevokeBy<'a> {
    /// One family.
    Family(&'a str),
    /// Every family of a user.
    User(&'a Subject),
    /// Every family of an app.
    Client(&'a str),
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

/// Calls the same method on whichever engine this is (SQLite's are synchronous: each is one
/// short statement or transaction).
macro_rules! on_engine {
    ($self:ident . $method:ident ( $($arg:expr),* $(,)? )) => {
        match $self {
            Db::Sqlite(db) => db.$method($($arg),*),
            Db::Postgres(db) => db.$method($($arg),*).await,
        }
    };
}

/// Every method fails with [`DbError::Unavailable`] when the database does; other errors are
/// named where they can happen.
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
        on_engine!(self.ping())
    }

    /// The named 32-byte secret, created on first use (shared by every SERVER1 on this
    /// database).
    ///
    /// # Errors
    ///
    /// Also [`DbError::Random`].
    pub async fn secret(&self, name: &str) -> Result<Vec<u8>, DbError> {
        on_engine!(self.secret(name))
    }

    /// Adds a user with roles, all or nothing.
    ///
    /// # Errors
    ///
    /// [`DbError::Conflict`] when the name is taken, [`DbError::EmailTaken`] when the address
    /// is.
    pub async fn add_user(&self, user: &NewUser<'_>, now: UnixTime) -> Result<User, DbError> {
        on_engine!(self.add_user(user, now))
    }

    /// The user called `name` and their password hash.
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub async fn user_by_name(&self, name: &UserName) -> Result<Option<(User, String)>, DbError> {
        on_engine!(self.user_by("u.name", name.as_str()))
    }

    /// The user with address `email` and their password hash.
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub async fn user_by_email(&self, email: &Email) -> Result<Option<(User, String)>, DbError> {
        on_engine!(self.user_by("u.email", email.as_str()))
    }

    /// The user with id `id` and their password hash.
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub async fn user_by_id(&self, id: &Subject) -> Result<Option<(User, String)>, DbError> {
        on_engine!(self.user_by("u.id", id.as_str()))
    }

    /// Every user, by name.
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub async fn users(&self) -> Result<Vec<User>, DbError> {
        on_engine!(self.users())
    }

    /// Disables (ending every session at once) or enables a user; false when there is none.
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub async fn set_disabled(&self, user: &Subject, disabled: bool) -> Result<bool, DbError> {
        on_engine!(self.set_disabled(user, disabled))
    }

    /// Replaces a user's roles; false when there is no such user.
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub async fn set_roles(&self, user: &Subject, roles: &[Role]) -> Result<bool, DbError> {
        on_engine!(self.set_roles(user, roles))
    }

    /// Sets (or with `None` clears) a user's display name; false when there is no such user.
    /// The name was checked by [`handoff::token::is_display_name`].
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub async fn set_display_name(
        &self,
        user: &Subject,
        name: Option<&str>,
    ) -> Result<bool, DbError> {
        on_engine!(self.set_display_name(user, name))
    }

    /// Remembers that `user` was handed off to `target`, where they are `subject` (pairwise or
    /// public): the partner API answers only for users so remembered. Idempotent.
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
        on_engine!(self.record_partner_subject(target, subject, user, now))
    }

    /// The user `target` knows as `subject`, if they were ever handed off to it.
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub async fn partner_subject_user(
        &self,
        target: &str,
        subject: &Subject,
    ) -> Result<Option<User>, DbError> {
        on_engine!(self.partner_subject_user(target, subject))
    }

    /// Grants `e` (the user may open the operation with that argument value); false when it
    /// was granted already.
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub async fn grant_entitlement(&self, e: &Entitlement, now: UnixTime) -> Result<bool, DbError> {
        on_engine!(self.grant_entitlement(e, now))
    }

    /// Revokes `e`; false when there was none.
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub async fn revoke_entitlement(&self, e: &Entitlement) -> Result<bool, DbError> {
        on_engine!(self.revoke_entitlement(e))
    }

    /// Whether `e` is granted.
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub async fn is_entitled(&self, e: &Entitlement) -> Result<bool, DbError> {
        on_engine!(self.is_entitled(e))
    }

    /// Every entitlement (of `user`, if given), with the user's name, in name order.
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub async fn entitlements(
        &self,
        user: Option<&Subject>,
    ) -> Result<Vec<(String, Entitlement)>, DbError> {
        on_engine!(self.entitlements(user))
    }

    /// Records a client token's id until `until`: true the first time, false when it is
    /// already recorded and unexpired at `now` (a replay). Shared by every replica.
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
        on_engine!(self.use_jti(jti, until, now))
    }

    /// Removes a user with their sessions and links; false when there is none.
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub async fn remove_user(&self, user: &Subject) -> Result<bool, DbError> {
        on_engine!(self.remove_user(user))
    }

    /// Sets a user's address and whether it is verified; false when there is no such user.
    ///
    /// # Errors
    ///
    /// [`DbError::EmailTaken`] when another user has it.
    pub async fn set_email(
        &self,
        user: &Subject,
        email: &Email,
        verified: bool,
    ) -> Result<bool, DbError> {
        on_engine!(self.set_email(user, email, verified))
    }

    /// Replaces a user's password hash, ends every session of theirs but `keep`, and moves
    /// their `tokens_valid_after` to `now`: all or nothing.
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
        on_engine!(self.set_password(user, password_hash, keep, now))
    }

    /// Ends every session of `user` but `keep`, and with `revoke_at` moves their
    /// `tokens_valid_after` there; how many sessions ended.
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
        on_engine!(self.end_sessions(user, keep, revoke_at))
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
        meta: &SessionMeta,
        now: UnixTime,
        expires: UnixTime,
    ) -> Result<(), DbError> {
        on_engine!(self.create_session(id_hash, user, meta, now, expires))
    }

    /// The user of a live session (never a disabled one), when it was last seen and its
    /// public id.
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub async fn session_user(
        &self,
        id_hash: &[u8],
        now: UnixTime,
    ) -> Result<Option<(User, LiveSession)>, DbError> {
        on_engine!(self.session_user(id_hash, now))
    }

    /// Records that a session was used at `now`.
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub async fn touch_session(&self, id_hash: &[u8], now: UnixTime) -> Result<(), DbError> {
        on_engine!(self.touch_session(id_hash, now))
    }

    /// The live sessions of `user`, newest first.
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub async fn sessions_of(
        &self,
        user: &Subject,
        now: UnixTime,
    ) -> Result<Vec<SessionInfo>, DbError> {
        on_engine!(self.sessions_of(user, now))
    }

    /// Ends the session of `user` named `public_id` on the account page; false when there is
    /// none (another user's is none).
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub async fn end_session_by_public_id(
        &self,
        user: &Subject,
        public_id: &str,
    ) -> Result<bool, DbError> {
        on_engine!(self.end_session_by_public_id(user, public_id))
    }

    /// Ends a session.
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub async fn delete_session(&self, id_hash: &[u8]) -> Result<(), DbError> {
        on_engine!(self.delete_session(id_hash))
    }

    /// Records a one-time link for `user` and `purpose` by the hash of its token, replacing
    /// the one issued before (only the latest works).
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
        on_engine!(self.issue_link(user, purpose, token_hash, address, now, expires))
    }

    /// Who a live link belongs to, leaving it live.
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub async fn peek_link(
        &self,
        purpose: LinkPurpose,
        token_hash: &[u8],
        now: UnixTime,
    ) -> Result<Option<LinkOwner>, DbError> {
        on_engine!(self.link(purpose, token_hash, now, false))
    }

    /// Uses up a live link, atomically (of two requests with one link, one gets its owner).
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub async fn consume_link(
        &self,
        purpose: LinkPurpose,
        token_hash: &[u8],
        now: UnixTime,
    ) -> Result<Option<LinkOwner>, DbError> {
        on_engine!(self.link(purpose, token_hash, now, true))
    }

    /// Queues mail to send.
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub async fn enqueue(&self, job: &Job, now: UnixTime) -> Result<(), DbError> {
        on_engine!(self.enqueue(job, now))
    }

    /// Takes up to `limit` jobs that are due at `now`, counting an attempt for each and
    /// holding them until `lease_until` (another replica takes a job only once its lease ran
    /// out: a replica that died mid-send loses no mail).
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
        on_engine!(self.claim_jobs(now, lease_until, limit))
    }

    /// Removes a job that is done (sent, or given up).
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub async fn finish_job(&self, id: i64) -> Result<(), DbError> {
        on_engine!(self.finish_job(id))
    }

    /// Schedules a failed job's next attempt.
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub async fn retry_job(&self, id: i64, at: UnixTime) -> Result<(), DbError> {
        on_engine!(self.retry_job(id, at))
    }

    /// How many jobs wait in the outbox.
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub async fn outbox_len(&self) -> Result<u64, DbError> {
        on_engine!(self.outbox_len())
    }

    /// Records a device authorization request.
    ///
    /// # Errors
    ///
    /// [`DbError::Conflict`] when the user code is taken (make another).
    pub async fn create_device(
        &self,
        device: &NewDevice<'_>,
        now: UnixTime,
    ) -> Result<(), DbError> {
        on_engine!(self.create_device(device, now))
    }

    /// The pending, live request with `user_code`.
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub async fn pending_device(
        &self,
        user_code: &str,
        now: UnixTime,
    ) -> Result<Option<PendingDevice>, DbError> {
        on_engine!(self.pending_device(user_code, now))
    }

    /// Approves or denies the pending, live request with `user_code` as `user`; false when
    /// there is none.
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
        on_engine!(self.decide_device(user_code, user, approve, now))
    }

    /// A poll with `device_hash` by `client_id`, atomically (an approved code is used once).
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
        on_engine!(self.poll_device(device_hash, client_id, now))
    }

    /// Starts a refresh family with its first token.
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub async fn start_family(&self, token: &NewRefresh<'_>, now: UnixTime) -> Result<(), DbError> {
        on_engine!(self.start_family(token, now))
    }

    /// Uses the refresh token `hash` and records its successor `next_hash` (unused for
    /// `idle_secs` it stops working; never past the family's end), in one transaction that
    /// holds the family: of two requests with one token, one rotates it; the other — and any
    /// later use — finds it used, which revokes the whole family. A family revoked while a
    /// rotation runs takes the successor with it.
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
        on_engine!(self.rotate_refresh(hash, next_hash, idle_secs, now))
    }

    /// Revokes refresh-token families: one (`family`), a user's, or an app's; how many
    /// families.
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub async fn revoke_refresh(&self, by: RevokeBy<'_>) -> Result<u64, DbError> {
        on_engine!(self.revoke_refresh(by))
    }

    /// Puts an access token's id on the deny list until `until`.
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub async fn deny_token(&self, jti: &str, until: UnixTime) -> Result<(), DbError> {
        on_engine!(self.deny_token(jti, until))
    }

    /// True when `jti` is on the deny list.
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub async fn is_denied(&self, jti: &str, now: UnixTime) -> Result<bool, DbError> {
        on_engine!(self.is_denied(jti, now))
    }

    /// The user's `tokens_valid_after`: tokens issued before it do not count.
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub async fn tokens_valid_after(&self, user: &Subject) -> Result<Option<UnixTime>, DbError> {
        on_engine!(self.tokens_valid_after(user))
    }

    /// Moves the user's `tokens_valid_after` to `at` (never back).
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub async fn revoke_tokens_before(&self, user: &Subject, at: UnixTime) -> Result<(), DbError> {
        on_engine!(self.end_sessions_keeping_all(user, at))
    }

    /// Deletes expired sessions and links, and throttle counts idle for `idle_secs` with no
    /// block left; returns how many rows.
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub async fn purge(&self, now: UnixTime, idle_secs: u64) -> Result<usize, DbError> {
        on_engine!(self.purge(now, idle_secs))
    }

    /// The latest `blocked_until` (seconds) of any of `keys`, 0 when none is blocked.
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub async fn throttle_blocked_until(&self, keys: &[String]) -> Result<u64, DbError> {
        on_engine!(self.throttle_blocked_until(keys))
    }

    /// The failures counted against `key` that are not idle at `now` (0 when there are none).
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
        on_engine!(self.throttle_failures(key, now, idle_secs))
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
        on_engine!(self.throttle_count(key, now, idle_secs))
    }

    /// Blocks `key` until `until` (seconds), unless it is blocked longer already.
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub async fn throttle_block(&self, key: &str, until: u64) -> Result<(), DbError> {
        on_engine!(self.throttle_block(key, until))
    }

    /// Forgets `key`'s failures (a successful sign-in clears the account's).
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`].
    pub async fn throttle_clear(&self, key: &str) -> Result<(), DbError> {
        on_engine!(self.throttle_clear(key))
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
