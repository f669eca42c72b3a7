//! The API for the portal's own apps: the OAuth 2.0 Device Authorization Grant (RFC 8628),
//! access tokens per RFC 9068 and rotating refresh tokens. Nothing here knows HTTP.
//!
//! - **Device codes**: the app's `device_code` (256 bits) is stored only as a hash; the
//!   person's `user_code` is 8 letters from an alphabet without vowels or look-alikes
//!   (`BCDF-GHJK`), typed on `/device` by a signed-in person who then approves or denies it.
//!   Codes live 10 minutes; polling faster than the interval answers `slow_down` and adds 5 s.
//!   An approved code gives tokens once.
//! - **Access tokens**: JWTs (`typ` `at+jwt`) signed by SERVER1's key ring, 10 minutes at most.
//!   Refused when their `iat` is before the user's `tokens_valid_after`, or their `jti` is on
//!   the deny list, or the user is disabled or gone.
//! - **Refresh tokens**: opaque, 256 bits, stored hashed, in a family per approval. Each use
//!   rotates it (the old one is used up, a new one issued) within an idle and an absolute
//!   lifetime. Using a rotated token again revokes the whole family and is logged as a security
//!   event: either the app or a thief holds a copy, and neither should go on. A refresh token
//!   not in the database is never valid (the families are the allow list).

use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use handoff::access::{AccessClaims, AccessRequest, AccessVerifier};
use handoff::{Audience, Clock, Issuer, Leeway, Subject, UnixTime};
use ring::rand::{SecureRandom, SystemRandom};

use crate::clients::Clients;
use crate::db::{Db, DbError, DevicePoll, NewDevice, NewRefresh, RevokeBy, Rotation, User};
use crate::handoffs::Handoffs;
use crate::links::hash_of;

/// The device-code grant type (RFC 8628 §3.4).
pub const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";
/// How long device and user codes live.
pub const DEVICE_TTL_SECS: u64 = 600;
/// The polling interval apps are told.
pub const POLL_INTERVAL_SECS: u64 = 5;
/// The user code's alphabet: consonants without look-alikes (RFC 8628 §6.1).
const USER_CODE_ALPHABET: &[u8] = b"BCDFGHJKLMNPQRSTVWXZ";

/// Lifetimes (see the README).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OAuthSettings {
    /// Access tokens (`SERVER1_ACCESS_TOKEN_TTL_SECS`, at most 600).
    pub access_ttl_secs: u64,
    /// A refresh token unused this long stops working (`SERVER1_REFRESH_IDLE_SECS`).
    pub refresh_idle_secs: u64,
    /// A refresh family ends this long after its approval (`SERVER1_REFRESH_MAX_SECS`).
    pub refresh_max_secs: u64,
}

/// An OAuth error (RFC 6749 §5.2, RFC 8628 §3.5), by its code.
#[derive(Debug, thiserror::Error)]
pub enum OAuthError {
    /// A parameter is missing or wrong.
    #[error("invalid_request")]
    InvalidRequest(&'static str),
    /// Unknown app.
    #[error("invalid_client")]
    InvalidClient,
    /// The code or refresh token does not work.
    #[error("invalid_grant")]
    InvalidGrant,
    /// A scope the app may not ask for.
    #[error("invalid_scope")]
    InvalidScope,
    /// Another grant type.
    #[error("unsupported_grant_type")]
    UnsupportedGrantType,
    /// Not decided yet: poll again.
    #[error("authorization_pending")]
    AuthorizationPending,
    /// Polled too fast: wait 5 s more between polls.
    #[error("slow_down")]
    SlowDown,
    /// The person denied it.
    #[error("access_denied")]
    AccessDenied,
    /// The codes expired.
    #[error("expired_token")]
    ExpiredToken,
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// Something that should not happen.
    #[error("server_error: {0}")]
    Internal(String),
}

impl OAuthError {
    /// The `error` code of the JSON answer.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidRequest(_) => "invalid_request",
            Self::InvalidClient => "invalid_client",
            Self::InvalidGrant => "invalid_grant",
            Self::InvalidScope => "invalid_scope",
            Self::UnsupportedGrantType => "unsupported_grant_type",
            Self::AuthorizationPending => "authorization_pending",
            Self::SlowDown => "slow_down",
            Self::AccessDenied => "access_denied",
            Self::ExpiredToken => "expired_token",
            Self::Db(_) => "temporarily_unavailable",
            Self::Internal(_) => "server_error",
        }
    }
}

/// A started device authorization: what the app shows and polls with.
#[derive(Debug)]
pub struct DeviceStart {
    /// The app's secret for polling.
    pub device_code: String,
    /// What the person types, `BCDF-GHJK`.
    pub user_code: String,
    /// Seconds until both expire.
    pub expires_in: u64,
    /// Seconds between polls.
    pub interval: u64,
}

/// Tokens for an app.
#[derive(Debug)]
pub struct Tokens {
    /// The access token.
    pub access_token: String,
    /// Its lifetime.
    pub expires_in: u64,
    /// The next refresh token.
    pub refresh_token: String,
    /// The scopes.
    pub scope: String,
}

/// Why a bearer token was not accepted (RFC 6750 §3.1).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BearerError {
    /// No `Authorization: Bearer` header.
    #[error("no bearer token")]
    Missing,
    /// The token does not pass, is revoked, or its user is gone; the text says which, for the
    /// `error_description`.
    #[error("invalid_token: {0}")]
    Invalid(&'static str),
    /// The token lacks the scope the endpoint needs.
    #[error("insufficient_scope")]
    InsufficientScope(&'static str),
    /// The database failed.
    #[error("unavailable")]
    Unavailable,
}

/// The API service.
#[derive(Debug)]
pub struct OAuth {
    db: Arc<Db>,
    clients: Clients,
    handoffs: Arc<Handoffs>,
    issuer: Issuer,
    api: Audience,
    verifier: AccessVerifier,
    settings: OAuthSettings,
    clock: Arc<dyn Clock>,
}

/// 256 random bits, base64url.
fn secret() -> Result<String, OAuthError> {
    crate::accounts::random_token().ok_or_else(|| OAuthError::Internal("randomness failed".into()))
}

/// A user code: 8 letters of [`USER_CODE_ALPHABET`] (about 34.6 bits).
fn user_code() -> Result<String, OAuthError> {
    let mut bytes = [0u8; 8];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| OAuthError::Internal("randomness failed".into()))?;
    Ok(bytes
        .iter()
        .map(|b| char::from(USER_CODE_ALPHABET[usize::from(*b) % USER_CODE_ALPHABET.len()]))
        .collect())
}

/// What a person typed as a user code, as stored: letters upper-cased, dashes and spaces
/// dropped; None when it cannot be one.
pub fn normalize_user_code(typed: &str) -> Option<String> {
    let code: String =
        typed.chars().filter(|c| !matches!(c, '-' | ' ')).map(|c| c.to_ascii_uppercase()).collect();
    (code.len() == 8 && code.bytes().all(|b| USER_CODE_ALPHABET.contains(&b))).then_some(code)
}

/// A user code as shown: `BCDF-GHJK`.
pub fn show_user_code(code: &str) -> String {
    match code.get(..4).zip(code.get(4..)) {
        Some((a, b)) => format!("{a}-{b}"),
        None => code.to_owned(),
    }
}

impl OAuth {
    /// The API of `issuer` (its audience is `{issuer}/api`), for the apps in `clients`.
    ///
    /// # Errors
    ///
    /// When the API audience cannot be made from the issuer.
    pub fn new(
        db: Arc<Db>,
        clients: Clients,
        handoffs: Arc<Handoffs>,
        issuer: Issuer,
        settings: OAuthSettings,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, String> {
        let api = Audience::parse(&format!("{}/api", issuer.as_str().trim_end_matches('/')))
            .map_err(|e| format!("API audience: {e}"))?;
        let leeway = Leeway::from_secs(5).map_err(|e| e.to_string())?;
        let verifier = AccessVerifier::new(issuer.clone(), api.clone(), leeway);
        Ok(Self { db, clients, handoffs, issuer, api, verifier, settings, clock })
    }

    /// The registered apps.
    pub fn clients(&self) -> &Clients {
        &self.clients
    }

    /// The scope `client_id` gets when it asks for `requested` (space-separated; empty: all
    /// it may have).
    fn scope_for(&self, client_id: &str, requested: &str) -> Result<String, OAuthError> {
        let client = self.clients.get(client_id).ok_or(OAuthError::InvalidClient)?;
        let mut scopes: Vec<&str> = requested.split(' ').filter(|s| !s.is_empty()).collect();
        if scopes.is_empty() {
            scopes = client.scopes.iter().map(String::as_str).collect();
        }
        if scopes.iter().any(|s| !client.scopes.iter().any(|c| c == s)) {
            return Err(OAuthError::InvalidScope);
        }
        scopes.sort_unstable();
        scopes.dedup();
        Ok(scopes.join(" "))
    }

    /// Starts a device authorization for `client_id` asking for `scope` (RFC 8628 §3.1).
    ///
    /// # Errors
    ///
    /// `invalid_client`, `invalid_scope`, or a database failure.
    pub async fn start_device(
        &self,
        client_id: &str,
        scope: &str,
    ) -> Result<DeviceStart, OAuthError> {
        let scope = self.scope_for(client_id, scope)?;
        let device_code = secret()?;
        let now = self.clock.now();
        // A user code that happens to be taken is drawn again.
        for _ in 0..5 {
            let code = user_code()?;
            let device = NewDevice {
                device_hash: &hash_of(&device_code),
                user_code: &code,
                client_id,
                scope: &scope,
                expires: now.plus(DEVICE_TTL_SECS),
                interval_secs: POLL_INTERVAL_SECS,
            };
            match self.db.create_device(&device, now).await {
                Ok(()) => {
                    tracing::info!(
                        event = "device.started",
                        client_id,
                        "device authorization started"
                    );
                    return Ok(DeviceStart {
                        device_code,
                        user_code: show_user_code(&code),
                        expires_in: DEVICE_TTL_SECS,
                        interval: POLL_INTERVAL_SECS,
                    });
                }
                Err(DbError::Conflict) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(OAuthError::Internal("no free user code".into()))
    }

    /// The app and scope of the pending request with `user_code`, for the approval page.
    ///
    /// # Errors
    ///
    /// When the database fails.
    pub async fn pending(
        &self,
        user_code: &str,
    ) -> Result<Option<(crate::clients::Client, String)>, DbError> {
        let Some(code) = normalize_user_code(user_code) else { return Ok(None) };
        let Some(pending) = self.db.pending_device(&code, self.clock.now()).await? else {
            return Ok(None);
        };
        Ok(self.clients.get(&pending.client_id).cloned().map(|c| (c, pending.scope)))
    }

    /// `user` approves or denies the request with `user_code`; false when there is none.
    ///
    /// # Errors
    ///
    /// When the database fails.
    pub async fn decide(
        &self,
        user_code: &str,
        user: &User,
        approve: bool,
    ) -> Result<bool, DbError> {
        let Some(code) = normalize_user_code(user_code) else { return Ok(false) };
        let done = self.db.decide_device(&code, &user.id, approve, self.clock.now()).await?;
        if done {
            tracing::info!(event = if approve { "device.approved" } else { "device.denied" }, sub = %user.id, "device authorization decided");
        }
        Ok(done)
    }

    /// The token endpoint with the device-code grant (RFC 8628 §3.4).
    ///
    /// # Errors
    ///
    /// The RFC's errors: `authorization_pending`, `slow_down`, `access_denied`,
    /// `expired_token`, `invalid_grant`, `invalid_client`.
    pub async fn token_for_device(
        &self,
        client_id: &str,
        device_code: &str,
    ) -> Result<Tokens, OAuthError> {
        self.clients.get(client_id).ok_or(OAuthError::InvalidClient)?;
        let now = self.clock.now();
        match self.db.poll_device(&hash_of(device_code), client_id, now).await? {
            DevicePoll::Unknown => Err(OAuthError::InvalidGrant),
            DevicePoll::Expired => Err(OAuthError::ExpiredToken),
            DevicePoll::Denied => Err(OAuthError::AccessDenied),
            DevicePoll::Pending { too_fast: true } => Err(OAuthError::SlowDown),
            DevicePoll::Pending { too_fast: false } => Err(OAuthError::AuthorizationPending),
            DevicePoll::Approved { user, scope, decided } => {
                // An approval from before the user's tokens were revoked (a stolen session that
                // approved, then "sign out everywhere") gives nothing.
                let valid_after = self.db.tokens_valid_after(&user).await?;
                if valid_after.is_some_and(|t| decided <= t) {
                    return Err(OAuthError::InvalidGrant);
                }
                self.check_user(&user).await?;
                let family =
                    family_id().ok_or_else(|| OAuthError::Internal("randomness failed".into()))?;
                let refresh_token = secret()?;
                let family_expires = now.plus(self.settings.refresh_max_secs);
                let first = NewRefresh {
                    hash: &hash_of(&refresh_token),
                    family: &family,
                    user: &user,
                    client_id,
                    scope: &scope,
                    expires: now.plus(self.settings.refresh_idle_secs).min(family_expires),
                    family_expires,
                };
                self.db.start_family(&first, now).await?;
                self.tokens(&user, client_id, &scope, refresh_token, now)
            }
        }
    }

    /// The token endpoint with a refresh token: rotates it.
    ///
    /// # Errors
    ///
    /// `invalid_grant` for a token that is unknown, expired, revoked, issued up to the user's
    /// `tokens_valid_after`, for another app, of a disabled user — or used before, which
    /// revokes its family.
    pub async fn refresh(
        &self,
        client_id: &str,
        refresh_token: &str,
    ) -> Result<Tokens, OAuthError> {
        self.clients.get(client_id).ok_or(OAuthError::InvalidClient)?;
        let now = self.clock.now();
        let next = secret()?;
        let idle = self.settings.refresh_idle_secs;
        match self.db.rotate_refresh(&hash_of(refresh_token), &hash_of(&next), idle, now).await? {
            Rotation::Invalid => Err(OAuthError::InvalidGrant),
            Rotation::Reused { family, user } => {
                tracing::warn!(
                    event = "security.refresh_reuse",
                    sub = %user,
                    family = %family,
                    client_id,
                    "a rotated refresh token was used again: its whole family is revoked"
                );
                Err(OAuthError::InvalidGrant)
            }
            Rotation::Rotated { family, user, client_id: owner, scope, created, .. } => {
                let valid_after = self.db.tokens_valid_after(&user).await?;
                // Times are whole seconds: a token from the very second of a revocation is
                // taken as from before it.
                let revoked = valid_after.is_some_and(|t| created <= t);
                if owner != client_id || revoked || self.check_user(&user).await.is_err() {
                    // The successor was recorded with the rotation: the family takes it along.
                    self.db.revoke_refresh(RevokeBy::Family(&family)).await?;
                    return Err(OAuthError::InvalidGrant);
                }
                self.tokens(&user, client_id, &scope, next, now)
            }
        }
    }

    /// The user exists and is not disabled.
    async fn check_user(&self, user: &Subject) -> Result<(), OAuthError> {
        match self.db.user_by_id(user).await? {
            Some((u, _)) if !u.disabled => Ok(()),
            _ => Err(OAuthError::InvalidGrant),
        }
    }

    /// An access token for `user`, with `refresh_token` (recorded already).
    fn tokens(
        &self,
        user: &Subject,
        client_id: &str,
        scope: &str,
        refresh_token: String,
        now: UnixTime,
    ) -> Result<Tokens, OAuthError> {
        let keys = self.handoffs.keys().current(now);
        let request = AccessRequest {
            audience: &self.api,
            subject: user,
            client_id,
            scope,
            ttl_secs: self.settings.access_ttl_secs,
        };
        let (access_token, claims) = keys
            .minter(now)
            .mint_access(&request, now)
            .map_err(|e| OAuthError::Internal(e.to_string()))?;
        tracing::info!(event = "token.issued", sub = %user, client_id, jti = %claims.jti, "access token issued");
        Ok(Tokens {
            access_token,
            expires_in: claims.exp.as_secs().saturating_sub(now.as_secs()),
            refresh_token,
            scope: scope.to_owned(),
        })
    }

    /// The user and claims behind a bearer token that needs `scope`.
    ///
    /// # Errors
    ///
    /// [`BearerError`], by RFC 6750's codes.
    pub async fn authenticate(
        &self,
        token: &str,
        scope: &'static str,
    ) -> Result<(User, AccessClaims), BearerError> {
        let now = self.clock.now();
        let keys = self.handoffs.keys().current(now);
        let set =
            handoff::KeySet::from_jwks(&keys.jwks(now)).map_err(|_| BearerError::Unavailable)?;
        let claims = self.verifier.verify_with(token, &set, now).map_err(|r| {
            BearerError::Invalid(if r == handoff::Rejection::Expired {
                "expired"
            } else {
                "invalid"
            })
        })?;
        let unavailable = |_| BearerError::Unavailable;
        if self.db.is_denied(&claims.jti.to_string(), now).await.map_err(unavailable)? {
            return Err(BearerError::Invalid("revoked"));
        }
        let valid_after = self.db.tokens_valid_after(&claims.sub).await.map_err(unavailable)?;
        if valid_after.is_some_and(|t| claims.iat <= t) {
            return Err(BearerError::Invalid("revoked"));
        }
        let user = match self.db.user_by_id(&claims.sub).await.map_err(unavailable)? {
            Some((user, _)) if !user.disabled => user,
            _ => return Err(BearerError::Invalid("revoked")),
        };
        if !claims.has_scope(scope) {
            return Err(BearerError::InsufficientScope(scope));
        }
        Ok((user, claims))
    }

    /// What `GET /api/v1/me` answers for `user`.
    pub fn me(&self, user: &User) -> serde_json::Value {
        let offers: Vec<serde_json::Value> = self
            .handoffs
            .offers(user)
            .into_iter()
            .filter(|(_, ops)| !ops.is_empty())
            .map(|(target, ops)| {
                serde_json::json!({
                    "id": target.id.as_str(),
                    "name": target.name,
                    "audience": target.audience.as_str(),
                    "operations": ops.iter().map(|o| o.spec.kind().as_str()).collect::<Vec<_>>(),
                })
            })
            .collect();
        serde_json::json!({
            "sub": user.id.as_str(),
            "name": user.name.as_str(),
            "email": user.email.as_ref().map(|e| e.as_str()),
            "email_verified": user.email_verified,
            "roles": user.roles.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
            "targets": offers,
        })
    }

    /// Puts the access token `jti` on the deny list for as long as it could live.
    ///
    /// # Errors
    ///
    /// When the database fails.
    pub async fn deny(&self, jti: &str) -> Result<(), DbError> {
        let until = self.clock.now().plus(handoff::access::MAX_ACCESS_LIFETIME_SECS + 60);
        self.db.deny_token(jti, until).await
    }

    /// Ends every refresh family of `user` and every access token issued to them until now.
    ///
    /// # Errors
    ///
    /// When the database fails.
    pub async fn revoke_user(&self, user: &Subject) -> Result<u64, DbError> {
        self.db.revoke_tokens_before(user, self.clock.now()).await?;
        self.db.revoke_refresh(RevokeBy::User(user)).await
    }

    /// Ends every refresh family of the app `client_id`.
    ///
    /// # Errors
    ///
    /// When the database fails.
    pub async fn revoke_client(&self, client_id: &str) -> Result<u64, DbError> {
        self.db.revoke_refresh(RevokeBy::Client(client_id)).await
    }

    /// The API's audience.
    pub fn audience(&self) -> &Audience {
        &self.api
    }

    /// The issuer.
    pub fn issuer(&self) -> &Issuer {
        &self.issuer
    }
}

/// A family's id: random, not secret (it names the family in logs).
pub fn family_id() -> Option<String> {
    let mut bytes = [0u8; 12];
    SystemRandom::new().fill(&mut bytes).ok()?;
    Some(URL_SAFE_NO_PAD.encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_codes() {
        for _ in 0..100 {
            let code = user_code().expect("random");
            assert_eq!(normalize_user_code(&show_user_code(&code)).as_deref(), Some(code.as_str()));
        }
        assert_eq!(normalize_user_code("bcdf-ghjk").as_deref(), Some("BCDFGHJK"));
        assert_eq!(normalize_user_code(" BCDF GHJK ").as_deref(), Some("BCDFGHJK"));
        for bad in ["", "BCDF-GHJ", "BCDF-GHJKL", "ABCD-EFGH", "BCDF-GHJ1", "BCDF-GHJ!"] {
            assert_eq!(normalize_user_code(bad), None, "{bad:?}");
        }
    }
}
