//! Accounts: users, passwords, sign-in with its throttle, sessions, sign-up with e-mail
//! verification, password reset and changes of address. The web handlers and the command line
//! both come here; nothing in this module knows HTTP.
//!
//! A session id is 256 random bits the browser keeps; the database stores only its SHA-256
//! ([`SessionHash`]), so a leaked database holds no usable session. Every sign-in makes a new
//! id (no fixation) and ends the session the browser had.

use std::net::IpAddr;
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use handoff::{Clock, SessionRef};
use ring::digest;
use ring::rand::{SecureRandom, SystemRandom};

use crate::db::{Db, DbError, LinkPurpose, NewUser, SessionInfo, SessionMeta, User};
use crate::links;
use crate::mail::{Kind, Outbox};
use crate::names::{Email, Role, UserName};
use crate::passwords::{check_policy, PasswordError, Passwords};
use crate::throttle::{self, Attempt, MailLimits};

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

/// Who is asking, as far as the request tells.
#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    /// The client address (see `SERVER1_TRUSTED_PROXIES`).
    pub ip: Option<IpAddr>,
    /// The browser's `User-Agent`.
    pub user_agent: Option<String>,
}

impl ClientInfo {
    /// What a new session keeps of this client: the address, and the user agent shortened to
    /// 200 bytes of printable text.
    fn session_meta(&self) -> Option<SessionMeta> {
        let public_id = random_token()?.chars().take(22).collect();
        let user_agent = self.user_agent.as_deref().map(|ua| {
            let printable: String = ua.chars().filter(|c| !c.is_control()).collect();
            let mut end = printable.len().min(200);
            while !printable.is_char_boundary(end) {
                end -= 1;
            }
            printable[..end].to_owned()
        });
        Some(SessionMeta { public_id, client: self.ip.map(|ip| ip.to_string()), user_agent })
    }
}

/// A live session: its user, the hash of its id, and its public id, which handoff tokens
/// carry as `sid` (never the cookie's value or its hash) and back-channel logouts name.
#[derive(Debug, Clone)]
pub struct Session {
    /// Who.
    pub user: User,
    /// What the database keeps of its id.
    pub hash: SessionHash,
    /// Its public id, as a token's `sid` (none for a session from before public ids).
    pub sid: Option<SessionRef>,
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
    /// The password was right, but an operator disabled the account.
    #[error("the account is disabled")]
    Disabled,
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

/// Why an account request (sign-up, reset, a change on the account page) did not succeed.
/// Every message is safe to show: none repeats a password, a token or whether an address has
/// an account.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// The new password breaks the policy.
    #[error("{0}")]
    Password(PasswordError),
    /// The user name is not valid.
    #[error("a user name is 1 to 64 characters of a-z 0-9 . _ -")]
    BadName,
    /// The e-mail address is not valid.
    #[error("that is not an e-mail address (name@example.com)")]
    BadEmail,
    /// Someone has that user name.
    #[error("that user name is taken")]
    NameTaken,
    /// The current password given to confirm a change is wrong.
    #[error("your current password is not right")]
    WrongPassword,
    /// The new address is the current one.
    #[error("that is your address already")]
    SameEmail,
    /// The new address cannot be used (another account has it by now).
    #[error("that address cannot be used for this account")]
    EmailUnavailable,
    /// The link is unknown, used, replaced by a newer one or expired.
    #[error("this link does not work any more")]
    LinkInvalid,
    /// This client asked for too much mail within the hour.
    #[error("too many requests from your network; try again in an hour")]
    Limited,
    /// Too many wrong current passwords: try again after this many seconds.
    #[error("too many wrong passwords; wait {0} seconds")]
    Throttled(u64),
    /// Sign-up is closed.
    #[error("sign-up is closed")]
    SignupClosed,
    /// Every password slot is busy.
    #[error("too many requests at once")]
    Busy,
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// Something that should not happen.
    #[error("internal: {0}")]
    Internal(String),
}

impl From<PasswordError> for AccountError {
    fn from(e: PasswordError) -> Self {
        match e {
            PasswordError::Busy => Self::Busy,
            PasswordError::Hash => Self::Internal("cannot hash password".into()),
            policy @ PasswordError::Policy(_) => Self::Password(policy),
        }
    }
}

/// The account settings (see the README).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountSettings {
    /// Whether anyone may create an account (`SERVER1_SIGNUP`).
    pub signup_open: bool,
    /// The roles a new account gets (`SERVER1_SIGNUP_ROLES`).
    pub signup_roles: Vec<Role>,
    /// Whether handoffs need a verified address (`SERVER1_REQUIRE_VERIFIED_EMAIL`).
    pub require_verified_email: bool,
    /// Mail the forms may cause.
    pub mail_limits: MailLimits,
}

/// The accounts service.
#[derive(Debug)]
pub struct Accounts {
    db: Arc<Db>,
    passwords: Arc<Passwords>,
    session_ttl_secs: u64,
    clock: Arc<dyn Clock>,
    outbox: Option<Arc<Outbox>>,
    settings: AccountSettings,
}

/// How long a session may go unrecorded as used: "last seen" is kept to the minute, so a busy
/// session writes at most once a minute.
const LAST_SEEN_GRANULARITY_SECS: u64 = 60;

impl Accounts {
    /// Accounts over `db`, checking passwords with `passwords`; sessions last
    /// `session_ttl_secs`. Without an outbox (the command line), nothing that sends mail works.
    pub fn new(
        db: Arc<Db>,
        passwords: Passwords,
        session_ttl_secs: u64,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let settings = AccountSettings {
            signup_open: false,
            signup_roles: Vec::new(),
            require_verified_email: true,
            mail_limits: MailLimits { per_address: 5, per_client: 20 },
        };
        Self { db, passwords: Arc::new(passwords), session_ttl_secs, clock, outbox: None, settings }
    }

    /// The same, sending mail through `outbox` and with `settings`.
    #[must_use]
    pub fn with_mail(mut self, outbox: Arc<Outbox>, settings: AccountSettings) -> Self {
        self.outbox = Some(outbox);
        self.settings = settings;
        self
    }

    /// The account settings.
    pub fn settings(&self) -> &AccountSettings {
        &self.settings
    }

    /// The database the accounts live in.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// How long a session lasts, in seconds.
    pub fn session_ttl_secs(&self) -> u64 {
        self.session_ttl_secs
    }

    fn outbox(&self) -> Result<&Outbox, AccountError> {
        self.outbox.as_deref().ok_or_else(|| AccountError::Internal("no mail outbox".into()))
    }

    /// Adds a user with `password`, `roles` and, optionally, an address the operator vouches
    /// for (verified) and a display name (checked by the caller with
    /// [`handoff::token::is_display_name`]).
    ///
    /// # Errors
    ///
    /// A password outside the policy, a name or address that is taken, or a database failure.
    pub async fn add_user(
        &self,
        name: &UserName,
        password: &str,
        roles: &[Role],
        email: Option<&Email>,
        display_name: Option<&str>,
    ) -> Result<User, AddUserError> {
        check_policy(password, name.as_str(), email.map(Email::as_str))?;
        let hash = self.passwords.hash(password)?;
        let new = NewUser {
            name,
            password_hash: &hash,
            roles,
            email,
            email_verified: true,
            display_name,
        };
        Ok(self.db.add_user(&new, self.clock.now()).await?)
    }

    /// The user called `name`.
    ///
    /// # Errors
    ///
    /// When the database fails.
    pub async fn user(&self, name: &UserName) -> Result<Option<User>, DbError> {
        Ok(self.db.user_by_name(name).await?.map(|(user, _)| user))
    }

    /// Every user, by name.
    ///
    /// # Errors
    ///
    /// When the database fails.
    pub async fn users(&self) -> Result<Vec<User>, DbError> {
        self.db.users().await
    }

    /// Disables (ending their sessions at once) or enables the user called `name`; false when
    /// there is none.
    ///
    /// # Errors
    ///
    /// When the database fails.
    pub async fn set_disabled(&self, name: &UserName, disabled: bool) -> Result<bool, DbError> {
        let Some(user) = self.user(name).await? else { return Ok(false) };
        let done = self.db.set_disabled(&user.id, disabled).await?;
        tracing::info!(event = if disabled { "user.disabled" } else { "user.enabled" }, sub = %user.id, "user changed");
        if disabled {
            self.session_ended(&user, None).await?;
        }
        Ok(done)
    }

    /// Replaces the roles of the user called `name`; false when there is none.
    ///
    /// # Errors
    ///
    /// When the database fails.
    pub async fn set_roles(&self, name: &UserName, roles: &[Role]) -> Result<bool, DbError> {
        let Some(user) = self.user(name).await? else { return Ok(false) };
        self.db.set_roles(&user.id, roles).await
    }

    /// Sets or clears the display name of the user called `name`; false when there is none.
    ///
    /// # Errors
    ///
    /// When the database fails.
    pub async fn set_display_name(
        &self,
        name: &UserName,
        display_name: Option<&str>,
    ) -> Result<bool, DbError> {
        let Some(user) = self.user(name).await? else { return Ok(false) };
        self.db.set_display_name(&user.id, display_name).await
    }

    /// Removes the user called `name` with their sessions; false when there is none.
    ///
    /// # Errors
    ///
    /// When the database fails.
    pub async fn remove(&self, name: &UserName) -> Result<bool, DbError> {
        let Some(user) = self.user(name).await? else { return Ok(false) };
        let done = self.db.remove_user(&user.id).await?;
        tracing::info!(event = "user.removed", sub = %user.id, "user removed");
        self.session_ended(&user, None).await?;
        Ok(done)
    }

    /// Sets the address of the user called `name`, verified by the operator; false when there
    /// is no such user.
    ///
    /// # Errors
    ///
    /// [`DbError::EmailTaken`], or when the database fails.
    pub async fn set_email(&self, name: &UserName, email: &Email) -> Result<bool, DbError> {
        let Some(user) = self.user(name).await? else { return Ok(false) };
        self.db.set_email(&user.id, email, true).await
    }

    /// Runs argon2 for `password` against `stored` off the async threads, holding a slot.
    async fn verify_password(
        &self,
        password: String,
        stored: Option<String>,
    ) -> Result<bool, PasswordError> {
        let _slot = self.passwords.slot()?;
        let passwords = Arc::clone(&self.passwords);
        tokio::task::spawn_blocking(move || passwords.verify(&password, stored.as_deref()))
            .await
            .map_err(|_| PasswordError::Hash)
    }

    /// Hashes a new password off the async threads, holding a slot.
    async fn hash_password(&self, password: String) -> Result<String, PasswordError> {
        let _slot = self.passwords.slot()?;
        let passwords = Arc::clone(&self.passwords);
        tokio::task::spawn_blocking(move || passwords.hash(&password))
            .await
            .map_err(|_| PasswordError::Hash)?
    }

    /// Signs in with what a person typed as their name (or address) and password, from
    /// `client`. Throttled by the typed name (whether or not it exists) and by the client
    /// address; argon2 runs off the async threads, a bounded number at a time, and an unknown
    /// name costs the same as a wrong password. On success the browser's previous session
    /// (`previous`), if any, ends.
    ///
    /// # Errors
    ///
    /// Any [`SignInError`].
    pub async fn sign_in(
        &self,
        typed_name: &str,
        password: String,
        client: &ClientInfo,
        previous: Option<SessionHash>,
    ) -> Result<SignedIn, SignInError> {
        let now = self.clock.now();
        let name = typed_name.trim().to_ascii_lowercase();
        let mut attempt = Attempt::new(name.chars().take(254).collect(), client.ip);
        if let Err(wait) = throttle::check(&self.db, &attempt, now).await? {
            tracing::warn!(event = "signin.throttled", wait, "sign-in throttled");
            return Err(SignInError::Throttled { wait });
        }
        let found = if name.contains('@') {
            match Email::parse(&name) {
                Ok(email) => self.db.user_by_email(&email).await?,
                Err(_) => None,
            }
        } else {
            match UserName::parse(&name) {
                Ok(name) => self.db.user_by_name(&name).await?,
                Err(_) => None,
            }
        };
        // One account, counted whatever it was typed as (its name or its address).
        if let Some((user, _)) = &found {
            attempt.also_known_as(format!("id:{}", user.id));
            if let Err(wait) = throttle::check(&self.db, &attempt, now).await? {
                tracing::warn!(event = "signin.throttled", wait, "sign-in throttled");
                return Err(SignInError::Throttled { wait });
            }
        }
        let stored = found.as_ref().map(|(_, h)| h.clone());
        let ok = match self.verify_password(password, stored).await {
            Ok(ok) => ok,
            Err(PasswordError::Busy) => return Err(SignInError::Busy),
            Err(e) => return Err(SignInError::Internal(e.to_string())),
        };
        let user = match (ok, found) {
            (true, Some((user, _))) => user,
            _ => {
                throttle::failure(&self.db, &attempt, now).await?;
                tracing::warn!(event = "signin.failed", "sign-in failed");
                return Err(SignInError::WrongCredentials);
            }
        };
        throttle::success(&self.db, &attempt).await?;
        if user.disabled {
            tracing::warn!(event = "signin.disabled", sub = %user.id, "sign-in to a disabled account");
            return Err(SignInError::Disabled);
        }
        if let Some(previous) = previous {
            self.db.delete_session(previous.as_bytes()).await?;
        }
        let session_id =
            random_token().ok_or_else(|| SignInError::Internal("randomness failed".into()))?;
        let meta = client
            .session_meta()
            .ok_or_else(|| SignInError::Internal("randomness failed".into()))?;
        let expires = now.plus(self.session_ttl_secs);
        let hash = SessionHash::of(&session_id);
        self.db.create_session(hash.as_bytes(), &user.id, &meta, now, expires).await?;
        tracing::info!(event = "signin", sub = %user.id, "signed in");
        Ok(SignedIn { user, session_id })
    }

    /// The session `session_id`, if it is live (and its user not disabled). Records the use,
    /// to the minute.
    ///
    /// # Errors
    ///
    /// When the database fails.
    pub async fn session(&self, session_id: &str) -> Result<Option<Session>, DbError> {
        let hash = SessionHash::of(session_id);
        let now = self.clock.now();
        let Some((user, live)) = self.db.session_user(hash.as_bytes(), now).await? else {
            return Ok(None);
        };
        if now.as_secs().saturating_sub(live.last_seen.as_secs()) >= LAST_SEEN_GRANULARITY_SECS {
            self.db.touch_session(hash.as_bytes(), now).await?;
        }
        let sid = SessionRef::parse(&live.public_id).ok();
        Ok(Some(Session { user, hash, sid }))
    }

    /// Ends `session`, and tells the partners.
    ///
    /// # Errors
    ///
    /// When the database fails.
    pub async fn sign_out(&self, session: &Session) -> Result<(), DbError> {
        self.db.delete_session(session.hash.as_bytes()).await?;
        tracing::info!(event = "signout", sub = %session.user.id, "signed out");
        self.session_ended(&session.user, session.sid.as_ref()).await
    }

    /// Tells every partner that takes back-channel logouts that `sid` of `user` ended (or,
    /// without a session, every session of the user up to now). Queued in the outbox with the
    /// mail, so a partner that is down gets it when it is back.
    async fn session_ended(&self, user: &User, sid: Option<&SessionRef>) -> Result<(), DbError> {
        match &self.outbox {
            Some(outbox) => outbox.enqueue_logouts(&user.id, sid).await,
            None => Ok(()),
        }
    }

    /// The live sessions of `user`, newest first.
    ///
    /// # Errors
    ///
    /// When the database fails.
    pub async fn sessions(&self, user: &User) -> Result<Vec<SessionInfo>, DbError> {
        self.db.sessions_of(&user.id, self.clock.now()).await
    }

    /// Ends `user`'s session named `public_id` on the account page; false when they have
    /// none by that name.
    ///
    /// # Errors
    ///
    /// When the database fails.
    pub async fn end_session(&self, user: &User, public_id: &str) -> Result<bool, DbError> {
        let ended = self.db.end_session_by_public_id(&user.id, public_id).await?;
        if ended {
            tracing::info!(event = "session.ended", sub = %user.id, "session ended from the account page");
            self.session_ended(user, SessionRef::parse(public_id).ok().as_ref()).await?;
        }
        Ok(ended)
    }

    /// Signs `user` out everywhere: every session ends and tokens issued until now stop
    /// counting (`tokens_valid_after`).
    ///
    /// # Errors
    ///
    /// When the database fails.
    pub async fn sign_out_everywhere(&self, user: &User) -> Result<u64, DbError> {
        let ended = self.db.end_sessions(&user.id, None, Some(self.clock.now())).await?;
        tracing::info!(event = "signout.everywhere", sub = %user.id, sessions = ended, "signed out everywhere");
        self.session_ended(user, None).await?;
        Ok(ended)
    }

    /// Counts mail `client` asks for against its hourly limit.
    async fn client_may_mail(&self, client: &ClientInfo) -> Result<(), AccountError> {
        let limits = self.settings.mail_limits;
        if throttle::mail_from_client(&self.db, client.ip, limits, self.clock.now()).await? {
            Ok(())
        } else {
            tracing::warn!(event = "mail.limited", scope = "client", "mail limit reached");
            Err(AccountError::Limited)
        }
    }

    /// Queues `kind` to `address` unless the address had its hourly share of mail; a request
    /// over that limit gets the same answer as one within it (the limit tells nothing about
    /// the address).
    async fn mail(
        &self,
        kind: Kind,
        user: Option<&User>,
        address: &str,
    ) -> Result<(), AccountError> {
        let limits = self.settings.mail_limits;
        if !throttle::mail_to_address(&self.db, address, limits, self.clock.now()).await? {
            tracing::warn!(event = "mail.limited", scope = "address", "mail limit reached");
            return Ok(());
        }
        self.outbox()?.enqueue(kind, user.map(|u| &u.id), address).await?;
        Ok(())
    }

    /// Creates an account from the sign-up form and mails a verification link. The account
    /// can sign in at once; handoffs wait for the address to be verified (when so configured).
    /// An address that has an account already gets a notice instead, and the answer is the
    /// same as for a new one: the form tells nobody which addresses have accounts.
    ///
    /// # Errors
    ///
    /// Sign-up closed, a bad or taken name, a bad address, a password outside the policy, the
    /// client's mail limit, or a database failure.
    pub async fn sign_up(
        &self,
        typed_name: &str,
        typed_email: &str,
        password: String,
        client: &ClientInfo,
    ) -> Result<Email, AccountError> {
        if !self.settings.signup_open {
            return Err(AccountError::SignupClosed);
        }
        let name = UserName::normalize(typed_name).map_err(|_| AccountError::BadName)?;
        let email = Email::normalize(typed_email).map_err(|_| AccountError::BadEmail)?;
        check_policy(&password, name.as_str(), Some(email.as_str()))?;
        self.client_may_mail(client).await?;
        let hash = self.hash_password(password).await?;
        let new = NewUser {
            name: &name,
            password_hash: &hash,
            roles: &self.settings.signup_roles,
            email: Some(&email),
            email_verified: false,
            display_name: None,
        };
        match self.db.add_user(&new, self.clock.now()).await {
            Ok(user) => {
                tracing::info!(event = "signup", sub = %user.id, "account created");
                self.mail(Kind::VerifyEmail, Some(&user), email.as_str()).await?;
            }
            Err(DbError::Conflict) => return Err(AccountError::NameTaken),
            Err(DbError::EmailTaken) => {
                tracing::info!(
                    event = "signup.existing_address",
                    "sign-up with an address that has an account"
                );
                self.mail(Kind::SignupExists, None, email.as_str()).await?;
            }
            Err(e) => return Err(e.into()),
        }
        Ok(email)
    }

    /// Mails `user` a new verification link (the one before stops working once it is sent).
    ///
    /// # Errors
    ///
    /// The client's mail limit, or a database failure.
    pub async fn resend_verification(
        &self,
        user: &User,
        client: &ClientInfo,
    ) -> Result<(), AccountError> {
        let Some(email) = user.email.as_ref().filter(|_| !user.email_verified) else {
            return Ok(());
        };
        self.client_may_mail(client).await?;
        self.mail(Kind::VerifyEmail, Some(user), email.as_str()).await
    }

    /// The user a link of `purpose` belongs to, leaving it live.
    async fn link_owner(
        &self,
        purpose: LinkPurpose,
        token: &str,
        consume: bool,
    ) -> Result<(User, Option<Email>), AccountError> {
        if !links::is_well_formed(token) {
            return Err(AccountError::LinkInvalid);
        }
        let hash = links::hash_of(token);
        let now = self.clock.now();
        let owner = if consume {
            self.db.consume_link(purpose, &hash, now).await?
        } else {
            self.db.peek_link(purpose, &hash, now).await?
        };
        let owner = owner.ok_or(AccountError::LinkInvalid)?;
        match self.db.user_by_id(&owner.user).await? {
            Some((user, _)) if !user.disabled => Ok((user, owner.address)),
            _ => Err(AccountError::LinkInvalid),
        }
    }

    /// Uses up a verification link: the address it was sent to is verified, if it is still
    /// the account's.
    ///
    /// # Errors
    ///
    /// [`AccountError::LinkInvalid`], or a database failure.
    pub async fn verify_email(&self, token: &str) -> Result<User, AccountError> {
        let (mut user, address) = self.link_owner(LinkPurpose::VerifyEmail, token, true).await?;
        match (&user.email, address) {
            (Some(current), Some(sent_to)) if *current == sent_to => {
                self.db.set_email(&user.id, current, true).await?;
                user.email_verified = true;
                tracing::info!(event = "email.verified", sub = %user.id, "address verified");
                Ok(user)
            }
            _ => Err(AccountError::LinkInvalid),
        }
    }

    /// Asks for a reset link for `typed_email`. Whether or not an account has the address,
    /// this does the same work and succeeds the same way: the outbox finds out later, and
    /// mails only an account's address.
    ///
    /// # Errors
    ///
    /// A malformed address, the client's mail limit, or a database failure.
    pub async fn request_reset(
        &self,
        typed_email: &str,
        client: &ClientInfo,
    ) -> Result<(), AccountError> {
        let email = Email::normalize(typed_email).map_err(|_| AccountError::BadEmail)?;
        self.client_may_mail(client).await?;
        tracing::info!(event = "reset.requested", "password reset requested");
        self.mail(Kind::PasswordReset, None, email.as_str()).await
    }

    /// The user a live reset link belongs to (the form for a new password is shown only for
    /// a link that works).
    ///
    /// # Errors
    ///
    /// [`AccountError::LinkInvalid`], or a database failure.
    pub async fn reset_link_user(&self, token: &str) -> Result<User, AccountError> {
        Ok(self.link_owner(LinkPurpose::ResetPassword, token, false).await?.0)
    }

    /// Sets a new password with a reset link: the link is used up, every session of the user
    /// ends, tokens issued before now stop counting, and a notice goes to their address.
    ///
    /// # Errors
    ///
    /// [`AccountError::LinkInvalid`], a password outside the policy, or a database failure.
    pub async fn reset_password(
        &self,
        token: &str,
        password: String,
    ) -> Result<User, AccountError> {
        let (user, _) = self.link_owner(LinkPurpose::ResetPassword, token, false).await?;
        check_policy(&password, user.name.as_str(), user.email.as_ref().map(Email::as_str))?;
        let hash = self.hash_password(password).await?;
        let (user, _) = self.link_owner(LinkPurpose::ResetPassword, token, true).await?;
        self.db.set_password(&user.id, &hash, None, self.clock.now()).await?;
        tracing::info!(event = "password.reset", sub = %user.id, "password reset; every session ended");
        self.session_ended(&user, None).await?;
        if let Some(email) = &user.email {
            self.outbox()?.enqueue(Kind::PasswordChanged, Some(&user.id), email.as_str()).await?;
        }
        Ok(user)
    }

    /// Checks `password` as `user`'s current one (to confirm a change), throttled as sign-ins
    /// are: by the account and by the client address, so a stolen session cannot guess it.
    async fn check_current_password(
        &self,
        user: &User,
        password: String,
        client: &ClientInfo,
    ) -> Result<(), AccountError> {
        let now = self.clock.now();
        let attempt = Attempt::new(format!("id:{}", user.id), client.ip);
        if let Err(wait) = throttle::check(&self.db, &attempt, now).await? {
            tracing::warn!(event = "password.check_throttled", sub = %user.id, wait, "current-password checks throttled");
            return Err(AccountError::Throttled(wait));
        }
        let stored = self.db.user_by_id(&user.id).await?.map(|(_, hash)| hash);
        if !self.verify_password(password, stored).await? {
            throttle::failure(&self.db, &attempt, now).await?;
            tracing::warn!(event = "password.check_failed", sub = %user.id, "wrong current password");
            return Err(AccountError::WrongPassword);
        }
        throttle::success(&self.db, &attempt).await?;
        Ok(())
    }

    /// Changes `user`'s password, given the current one: their other sessions end (the one
    /// in `keep` stays), tokens issued before now stop counting, and a notice goes to their
    /// address.
    ///
    /// # Errors
    ///
    /// [`AccountError::WrongPassword`], a password outside the policy, or a database failure.
    pub async fn change_password(
        &self,
        user: &User,
        keep: SessionHash,
        current: String,
        new: String,
        client: &ClientInfo,
    ) -> Result<(), AccountError> {
        self.check_current_password(user, current, client).await?;
        check_policy(&new, user.name.as_str(), user.email.as_ref().map(Email::as_str))?;
        let hash = self.hash_password(new).await?;
        let others: Vec<SessionInfo> = self
            .sessions(user)
            .await?
            .into_iter()
            .filter(|s| s.id_hash != keep.as_bytes())
            .collect();
        self.db.set_password(&user.id, &hash, Some(keep.as_bytes()), self.clock.now()).await?;
        tracing::info!(event = "password.changed", sub = %user.id, "password changed; other sessions ended");
        for other in &others {
            self.session_ended(user, SessionRef::parse(&other.meta.public_id).ok().as_ref())
                .await?;
        }
        if let Some(email) = &user.email {
            self.outbox()?.enqueue(Kind::PasswordChanged, Some(&user.id), email.as_str()).await?;
        }
        Ok(())
    }

    /// Asks to change `user`'s address to `typed_email`, given their password: a link goes to
    /// the new address, and the address changes only when it is opened.
    ///
    /// # Errors
    ///
    /// [`AccountError::WrongPassword`], a bad or unchanged address, the client's mail limit,
    /// or a database failure.
    pub async fn request_email_change(
        &self,
        user: &User,
        typed_email: &str,
        password: String,
        client: &ClientInfo,
    ) -> Result<Email, AccountError> {
        let email = Email::normalize(typed_email).map_err(|_| AccountError::BadEmail)?;
        if user.email.as_ref() == Some(&email) {
            return Err(AccountError::SameEmail);
        }
        self.check_current_password(user, password, client).await?;
        self.client_may_mail(client).await?;
        self.mail(Kind::ConfirmNewEmail, Some(user), email.as_str()).await?;
        Ok(email)
    }

    /// Uses up a new address's confirmation link: the account takes the address (verified)
    /// and the old address gets a notice.
    ///
    /// # Errors
    ///
    /// [`AccountError::LinkInvalid`], [`AccountError::EmailUnavailable`] when another account
    /// has the address by now, or a database failure.
    pub async fn confirm_email_change(&self, token: &str) -> Result<User, AccountError> {
        let (mut user, address) = self.link_owner(LinkPurpose::ChangeEmail, token, true).await?;
        let new = address.ok_or(AccountError::LinkInvalid)?;
        match self.db.set_email(&user.id, &new, true).await {
            Ok(_) => {}
            Err(DbError::EmailTaken) => return Err(AccountError::EmailUnavailable),
            Err(e) => return Err(e.into()),
        }
        tracing::info!(event = "email.changed", sub = %user.id, "address changed");
        let old = user.email.replace(new);
        user.email_verified = true;
        if let Some(old) = old {
            self.outbox()?.enqueue(Kind::EmailChanged, Some(&user.id), old.as_str()).await?;
        }
        Ok(user)
    }

    /// Forgets expired sessions and links, and idle throttle counts.
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
