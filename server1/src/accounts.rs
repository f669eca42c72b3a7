//! Accounts: users, passwords, sign-in with its throttle, and sessions. The web handlers and
//! the command line both come here; nothing in this module knows HTTP.
//!
//! A session id is 256 random bits the browser keeps; the database stores only its SHA-256
//! ([`SessionHash`]), so a leaked database holds no usable session. Every sign-in makes a new
//! id (no fixation) and ends the session the browser had.

use std::net::IpAddr;
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use handoff::Clock;
use ring::digest;
use ring::rand::{SecureRandom, SystemRandom};

use crate::db::{Db, DbError, User};
use crate::names::{Role, UserName};
use crate::passwords::{PasswordError, Passwords};
use crate::throttle::{self, Key};

/// What the database keeps of a session id: its SHA-256.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionHash([u8; 32]);

impl SessionHash {
    /// The hash of the session id a browser sent.
    pub fn of(session_id: &str) -> Self {
        let mut out = [0u8; 32];
        out.copy_from_slice(digest::digest(&digest::SHA256, session_id.as_bytes()).as_ref());
        Self(out)
    }

    /// The hash's bytes (anti-forgery tokens are bound to them).
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

/// 256 random bits, base64url: a session id, or a pre-sign-in anti-forgery value.
pub fn random_token() -> Option<String> {
    let mut bytes = [0u8; 32];
    SystemRandom::new().fill(&mut bytes).ok()?;
    Some(URL_SAFE_NO_PAD.encode(bytes))
}

/// A successful sign-in.
#[derive(Debug)]
pub struct SignedIn {
    /// Who.
    pub user: User,
    /// The new session's id, for the browser's cookie (the database has only its hash).
    pub session_id: String,
}

/// Why a sign-in did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    /// Too many recent failures for this name or client: try again after `wait` seconds.
    #[error("throttled for {wait} s")]
    Throttled {
        /// Seconds until the next attempt is allowed.
        wait: u64,
    },
    /// Unknown user or wrong password (the two are indistinguishable, in answer and in time).
    #[error("wrong user name or password")]
    WrongCredentials,
    /// Every password slot is busy.
    #[error("too many sign-ins at once")]
    Busy,
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// Something that should not happen (randomness, a failed task).
    #[error("internal: {0}")]
    Internal(String),
}

/// Why a user could not be added.
#[derive(Debug, thiserror::Error)]
pub enum AddUserError {
    /// The password breaks the policy, or cannot be hashed.
    #[error(transparent)]
    Password(#[from] PasswordError),
    /// The database refused (the name is taken) or failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

/// The accounts service.
#[derive(Debug)]
pub struct Accounts {
    db: Arc<Db>,
    passwords: Arc<Passwords>,
    session_ttl_secs: u64,
    clock: Arc<dyn Clock>,
}

impl Accounts {
    /// Accounts over `db`, checking passwords with `passwords`; sessions last
    /// `session_ttl_secs`.
    pub fn new(
        db: Arc<Db>,
        passwords: Passwords,
        session_ttl_secs: u64,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self { db, passwords: Arc::new(passwords), session_ttl_secs, clock }
    }

    /// How long a session lasts, in seconds.
    pub fn session_ttl_secs(&self) -> u64 {
        self.session_ttl_secs
    }

    /// Adds a user with `password` and `roles`.
    ///
    /// # Errors
    ///
    /// A password outside the policy, a name that is taken, or a database failure.
    pub async fn add_user(
        &self,
        name: &UserName,
        password: &str,
        roles: &[Role],
    ) -> Result<User, AddUserError> {
        let hash = self.passwords.hash(password)?;
        Ok(self.db.add_user(name, &hash, roles, self.clock.now()).await?)
    }

    /// The user called `name`.
    ///
    /// # Errors
    ///
    /// When the database fails.
    pub async fn user(&self, name: &UserName) -> Result<Option<User>, DbError> {
        Ok(self.db.user_by_name(name).await?.map(|(user, _)| user))
    }

    /// Signs in with what a person typed as their name and password, from `client`. Throttled
    /// by the typed name (whether or not it exists) and by the client address; argon2 runs off
    /// the async threads, a bounded number at a time, and an unknown name costs the same as a
    /// wrong password. On success the browser's previous session (`previous`), if any, ends.
    ///
    /// # Errors
    ///
    /// Any [`SignInError`].
    pub async fn sign_in(
        &self,
        typed_name: &str,
        password: String,
        client: Option<IpAddr>,
        previous: Option<SessionHash>,
    ) -> Result<SignedIn, SignInError> {
        let now = self.clock.now();
        let name = typed_name.trim().to_ascii_lowercase();
        let mut keys = vec![Key::Account(name.chars().take(64).collect())];
        keys.extend(client.map(Key::client));
        if let Err(wait) = throttle::check(&self.db, &keys, now).await? {
            tracing::warn!(event = "signin.throttled", wait, "sign-in throttled");
            return Err(SignInError::Throttled { wait });
        }
        let found = match UserName::parse(&name) {
            Ok(name) => self.db.user_by_name(&name).await?,
            Err(_) => None,
        };
        let ok = {
            let _slot = self.passwords.slot().map_err(|_| SignInError::Busy)?;
            let passwords = Arc::clone(&self.passwords);
            let stored = found.as_ref().map(|(_, h)| h.clone());
            tokio::task::spawn_blocking(move || passwords.verify(&password, stored.as_deref()))
                .await
                .map_err(|e| SignInError::Internal(e.to_string()))?
        };
        let user = match (ok, found) {
            (true, Some((user, _))) => user,
            _ => {
                throttle::failure(&self.db, &keys, now).await?;
                tracing::warn!(event = "signin.failed", "sign-in failed");
                return Err(SignInError::WrongCredentials);
            }
        };
        throttle::success(&self.db, &keys[0]).await?;
        if let Some(previous) = previous {
            self.db.delete_session(previous.as_bytes()).await?;
        }
        let session_id =
            random_token().ok_or_else(|| SignInError::Internal("randomness failed".into()))?;
        let expires = now.plus(self.session_ttl_secs);
        let hash = SessionHash::of(&session_id);
        self.db.create_session(hash.as_bytes(), &user.id, now, expires).await?;
        tracing::info!(event = "signin", sub = %user.id, "signed in");
        Ok(SignedIn { user, session_id })
    }

    /// The user signed in with session `session_id`, if it is live.
    ///
    /// # Errors
    ///
    /// When the database fails.
    pub async fn session_user(
        &self,
        session_id: &str,
    ) -> Result<Option<(User, SessionHash)>, DbError> {
        let hash = SessionHash::of(session_id);
        Ok(self.db.session_user(hash.as_bytes(), self.clock.now()).await?.map(|u| (u, hash)))
    }

    /// Ends the session with hash `hash`.
    ///
    /// # Errors
    ///
    /// When the database fails.
    pub async fn sign_out(&self, user: &User, hash: SessionHash) -> Result<(), DbError> {
        self.db.delete_session(hash.as_bytes()).await?;
        tracing::info!(event = "signout", sub = %user.id, "signed out");
        Ok(())
    }

    /// Forgets expired sessions and idle throttle counts.
    ///
    /// # Errors
    ///
    /// When the database fails.
    pub async fn purge(&self) -> Result<usize, DbError> {
        self.db.purge(self.clock.now(), throttle::IDLE_SECS).await
    }

    /// How many argon2 verifications ran (an unknown user must cost one too).
    pub fn password_checks(&self) -> u64 {
        self.passwords.verifications()
    }
}
