//! Minting handoff tokens (SERVER1's side).
//!
//! The header is the same for every token of a key, so it is serialised and encoded once. The
//! key pair is parsed once, when the [`Minter`] is made: signing then costs one Ed25519
//! signature. jsonwebtoken's `encode` would re-parse the PKCS#8 document for every token (its
//! crypto-provider interface hands the signer raw key bytes), doubling the cost; the compact form
//! written here is byte-for-byte what `encode` produces, which a test checks.

use std::fmt;
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, Header};
use ring::rand::SystemRandom;

use crate::keys::{Alg, Kid, SigningKey};
use crate::operation::Operation;
use crate::secret::SharedSecret;
use crate::time::UnixTime;
use crate::token::{ClaimsOut, Profile, HANDOFF_TYP};
use crate::values::{Audience, Issuer, Jti, Nonce, SessionRef, Subject, Ttl};

/// What a minter signs with: the issuer's Ed25519 key (the default, verified with its JWKS) or
/// a secret shared with one partner (HS256).
#[derive(Debug, Clone)]
pub enum MintKey {
    /// An Ed25519 key of the issuer's ring.
    Ed25519(Arc<SigningKey>),
    /// A partner's shared secret.
    Hs256(Arc<SharedSecret>),
}

impl MintKey {
    /// The algorithm it signs with.
    pub fn alg(&self) -> Alg {
        match self {
            Self::Ed25519(_) => Alg::EdDsa,
            Self::Hs256(_) => Alg::Hs256,
        }
    }

    /// The key id written in headers: the key's thumbprint; none for a shared secret.
    pub fn kid(&self) -> Option<&Kid> {
        match self {
            Self::Ed25519(key) => Some(key.kid()),
            Self::Hs256(_) => None,
        }
    }

    /// Signs `message` (on the stack: no allocation).
    fn sign(&self, message: &[u8]) -> Signature {
        match self {
            Self::Ed25519(key) => Signature::Ed25519(key.sign(message)),
            Self::Hs256(secret) => Signature::Hs256(secret.sign(message)),
        }
    }

    /// The protected header of a token of type `typ` signed with this key.
    fn header(&self, typ: &str) -> serde_json::Value {
        match self.kid() {
            Some(kid) => {
                serde_json::json!({"typ": typ, "alg": self.alg().name(), "kid": kid.as_str()})
            }
            None => serde_json::json!({"typ": typ, "alg": self.alg().name()}),
        }
    }
}

/// A signature of either kind, as bytes.
enum Signature {
    Ed25519(ring::signature::Signature),
    Hs256(ring::hmac::Tag),
}

impl AsRef<[u8]> for Signature {
    fn as_ref(&self) -> &[u8] {
        match self {
            Self::Ed25519(s) => s.as_ref(),
            Self::Hs256(t) => t.as_ref(),
        }
    }
}

impl From<Arc<SigningKey>> for MintKey {
    fn from(key: Arc<SigningKey>) -> Self {
        Self::Ed25519(key)
    }
}

/// Mints handoff tokens for one issuer with one key.
pub struct Minter {
    key: MintKey,
    issuer: Issuer,
    ttl: Ttl,
    encoded_header: String,
    rng: SystemRandom,
}

/// What a token is minted for.
#[derive(Debug, Clone, Copy)]
pub struct MintRequest<'a> {
    /// The target the token is for.
    pub audience: &'a Audience,
    /// The user.
    pub subject: &'a Subject,
    /// The one operation it authorizes.
    pub operation: &'a Operation,
    /// The issuer-side session, for logout propagation.
    pub sid: Option<&'a SessionRef>,
    /// The target's browser-binding nonce, when the target started the flow.
    pub nonce: Option<&'a Nonce>,
    /// The profile claims this target receives (only those its policy lists).
    pub profile: Option<&'a Profile>,
    /// The token's lifetime, when the target's policy sets one; else the minter's.
    pub lifetime: Option<Ttl>,
}

/// A freshly minted token. `Debug` shows its id, never the token.
pub struct MintedToken {
    token: String,
    jti: Jti,
    expires_at: UnixTime,
}

impl MintedToken {
    /// The compact JWS.
    pub fn as_str(&self) -> &str {
        &self.token
    }

    /// The compact JWS, by value.
    pub fn into_string(self) -> String {
        self.token
    }

    /// The token's id.
    pub fn jti(&self) -> Jti {
        self.jti
    }

    /// When it expires.
    pub fn expires_at(&self) -> UnixTime {
        self.expires_at
    }
}

impl fmt::Debug for MintedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MintedToken")
            .field("jti", &self.jti)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// Why minting failed.
#[derive(Debug, thiserror::Error)]
pub enum MintError {
    /// The system random source failed (no `jti` could be made).
    #[error("the system random number generator failed")]
    Random,
    /// The claims could not be serialised (not expected with validated values).
    #[error("cannot serialise claims: {0}")]
    Serialize(#[from] serde_json::Error),
    /// A logout token would name neither a session nor a user.
    #[error("a logout token names a session, a user, or both")]
    NothingEnded,
}

/// Signs `claims` as a compact JWS with `key` under the header `{"typ","alg","kid"?}`: the
/// issuer's other token types (logout, access), which are minted rarely enough to build their
/// header each time.
pub(crate) fn sign_compact(
    key: &MintKey,
    typ: &str,
    claims: &impl serde::Serialize,
) -> Result<String, MintError> {
    let mut token = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&key.header(typ))?);
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(serde_json::to_vec(claims)?, &mut token);
    let signature = key.sign(token.as_bytes());
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(signature, &mut token);
    Ok(token)
}

impl Minter {
    /// A minter for `issuer`, signing with `key`, giving tokens a lifetime of `ttl`.
    pub fn new(key: impl Into<MintKey>, issuer: Issuer, ttl: Ttl) -> Self {
        let key = key.into();
        let encoded_header = encode_header(&key);
        Self { key, issuer, ttl, encoded_header, rng: SystemRandom::new() }
    }

    /// The issuer this minter writes into `iss`.
    pub fn issuer(&self) -> &Issuer {
        &self.issuer
    }

    /// The id of the key it signs with (none for a shared secret).
    pub fn kid(&self) -> Option<&Kid> {
        self.key.kid()
    }

    /// The algorithm it signs with.
    pub fn alg(&self) -> Alg {
        self.key.alg()
    }

    /// The lifetime of the tokens it mints.
    pub fn ttl(&self) -> Ttl {
        self.ttl
    }

    /// Mints a token valid from `now` for the configured lifetime.
    ///
    /// # Errors
    ///
    /// Only when randomness fails; the inputs are validated by their types.
    pub fn mint(&self, request: &MintRequest<'_>, now: UnixTime) -> Result<MintedToken, MintError> {
        let jti = Jti::generate(&self.rng).map_err(|_| MintError::Random)?;
        let expires_at = now.plus(request.lifetime.unwrap_or(self.ttl).as_secs());
        let profile = request.profile.unwrap_or(&Profile::NONE);
        let claims = ClaimsOut {
            iss: &self.issuer,
            sub: request.subject,
            aud: request.audience,
            iat: now,
            nbf: now,
            exp: expires_at,
            jti,
            authorization_details: request.operation,
            sid: request.sid,
            nonce: request.nonce,
            name: profile.name.as_deref(),
            email: profile.email.as_deref(),
            email_verified: profile.email_verified,
            groups: profile.groups.as_deref(),
        };
        let json = serde_json::to_vec(&claims)?;
        let mut token = String::with_capacity(self.encoded_header.len() + json.len() * 4 / 3 + 90);
        token.push_str(&self.encoded_header);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(&json, &mut token);
        let signature = self.key.sign(token.as_bytes());
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(signature, &mut token);
        Ok(MintedToken { token, jti, expires_at })
    }
}

impl Minter {
    /// Mints a back-channel logout token to `audience` saying `ended`, signed with this
    /// minter's key (see [`crate::logout`]).
    ///
    /// # Errors
    ///
    /// When randomness fails or `ended` names nothing.
    pub fn mint_logout(
        &self,
        audience: &Audience,
        ended: &crate::logout::Ended,
        now: UnixTime,
    ) -> Result<(String, Jti), MintError> {
        crate::logout::mint_logout(&self.key, &self.issuer, audience, ended, now)
    }

    /// Mints an access token for the issuer's own API, signed with this minter's key (see
    /// [`crate::access`]).
    ///
    /// # Errors
    ///
    /// When randomness fails.
    pub fn mint_access(
        &self,
        request: &crate::access::AccessRequest<'_>,
        now: UnixTime,
    ) -> Result<(String, crate::access::AccessClaims), MintError> {
        crate::access::mint_access(&self.key, &self.issuer, request, now)
    }
}

impl fmt::Debug for Minter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Minter")
            .field("issuer", &self.issuer)
            .field("alg", &self.key.alg())
            .field("kid", &self.key.kid())
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

/// The base64url header for a key, serialised by jsonwebtoken's own `Header` type.
fn encode_header(key: &MintKey) -> String {
    let header = match key {
        MintKey::Ed25519(key) => profile_header(key.kid()),
        MintKey::Hs256(_) => {
            let mut header = Header::new(Algorithm::HS256);
            header.typ = Some(HANDOFF_TYP.to_owned());
            header
        }
    };
    // A header of two or three strings always serialises.
    let json = serde_json::to_vec(&header).unwrap_or_default();
    URL_SAFE_NO_PAD.encode(json)
}

/// jsonwebtoken's `Header` for tokens of this profile: used by tests that build tokens the way
/// a third-party implementation would.
pub fn profile_header(kid: &Kid) -> Header {
    let mut header = Header::new(Algorithm::EdDSA);
    header.typ = Some(HANDOFF_TYP.to_owned());
    header.kid = Some(kid.to_string());
    header
}
