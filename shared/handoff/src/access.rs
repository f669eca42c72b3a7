//! Access tokens for the portal's own API (RFC 9068, "JWT Profile for OAuth 2.0 Access Tokens"):
//! the issuer mints them for its apps and checks them itself.
//!
//! ```text
//! header  {"typ":"at+jwt","alg":"EdDSA","kid":"<RFC 7638 thumbprint>"}
//! claims  {"iss","aud","sub","client_id","scope","iat","exp","jti"}
//! ```
//!
//! Checked as strictly as a handoff: its own `typ` (no handoff or logout token passes as one),
//! the pinned algorithm, a known key, `iss` and `aud` byte for byte, `exp` with the leeway, a
//! lifetime of at most [`MAX_ACCESS_LIFETIME_SECS`], nothing unknown.

use ring::rand::SystemRandom;
use serde::{Deserialize, Serialize};

use crate::keys::{KeySet, VerificationKey};
use crate::mint::MintKey;
use crate::mint::{sign_compact, MintError};
use crate::time::UnixTime;
use crate::values::{Audience, Issuer, Jti, Leeway, Subject};
use crate::verify::{inspect_typed, signed_claims, Inspected, Rejection, Window};

/// The `typ` header of an access token (RFC 9068 §2.1).
pub const ACCESS_TYP: &str = "at+jwt";
/// The longest lifetime an access token may have.
pub const MAX_ACCESS_LIFETIME_SECS: u64 = 600;

/// What an access token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessClaims {
    /// The issuer.
    pub iss: String,
    /// The API it is for.
    pub aud: String,
    /// The user.
    pub sub: Subject,
    /// The app it was issued to.
    pub client_id: String,
    /// Space-separated scopes.
    pub scope: String,
    /// Issued at.
    pub iat: UnixTime,
    /// Expires at.
    pub exp: UnixTime,
    /// Its id (the deny list's key).
    pub jti: Jti,
}

impl AccessClaims {
    /// True when `scope` is among the token's scopes.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scope.split(' ').any(|s| s == scope)
    }
}

/// What a new access token is for.
#[derive(Debug, Clone, Copy)]
pub struct AccessRequest<'a> {
    /// The API.
    pub audience: &'a Audience,
    /// The user.
    pub subject: &'a Subject,
    /// The app.
    pub client_id: &'a str,
    /// Space-separated scopes.
    pub scope: &'a str,
    /// Lifetime, at most [`MAX_ACCESS_LIFETIME_SECS`].
    pub ttl_secs: u64,
}

/// Mints an access token from `issuer` with `key`, valid from `now`.
///
/// # Errors
///
/// When randomness fails.
pub fn mint_access(
    key: &MintKey,
    issuer: &Issuer,
    request: &AccessRequest<'_>,
    now: UnixTime,
) -> Result<(String, AccessClaims), MintError> {
    let claims = AccessClaims {
        iss: issuer.as_str().to_owned(),
        aud: request.audience.as_str().to_owned(),
        sub: request.subject.clone(),
        client_id: request.client_id.to_owned(),
        scope: request.scope.to_owned(),
        iat: now,
        exp: now.plus(request.ttl_secs.min(MAX_ACCESS_LIFETIME_SECS)),
        jti: Jti::generate(&SystemRandom::new()).map_err(|_| MintError::Random)?,
    };
    Ok((sign_compact(key, ACCESS_TYP, &claims)?, claims))
}

/// Verifies access tokens from one issuer for one API.
#[derive(Debug, Clone)]
pub struct AccessVerifier {
    window: Window,
}

impl AccessVerifier {
    /// A verifier for tokens from `issuer` to `audience`.
    pub fn new(issuer: Issuer, audience: Audience, leeway: Leeway) -> Self {
        let max_lifetime_secs = MAX_ACCESS_LIFETIME_SECS;
        Self { window: Window { issuer, audience, leeway, max_lifetime_secs } }
    }

    /// Size, shape and header, with the access token `typ`.
    ///
    /// # Errors
    ///
    /// The first check that fails.
    pub fn inspect<'t>(&self, token: &'t str) -> Result<Inspected<'t>, Rejection> {
        inspect_typed(token, ACCESS_TYP, crate::keys::Alg::EdDsa)
    }

    /// The signature with `key`, then every claim at `now`.
    ///
    /// # Errors
    ///
    /// The first check that fails.
    pub fn verify(
        &self,
        inspected: Inspected<'_>,
        key: &VerificationKey,
        now: UnixTime,
    ) -> Result<AccessClaims, Rejection> {
        let json = signed_claims(&inspected, key)?;
        let claims: AccessClaims =
            serde_json::from_slice(&json).map_err(|_| Rejection::MalformedClaims)?;
        self.window.check(&claims.iss, &claims.aud, claims.iat, claims.exp, now)?;
        Ok(claims)
    }

    /// Both steps with a key from `keys`.
    ///
    /// # Errors
    ///
    /// As the two steps; [`Rejection::UnknownKid`] when `keys` lacks the key.
    pub fn verify_with(
        &self,
        token: &str,
        keys: &KeySet,
        now: UnixTime,
    ) -> Result<AccessClaims, Rejection> {
        let inspected = self.inspect(token)?;
        let key = keys.get(inspected.kid().as_str()).ok_or(Rejection::UnknownKid)?;
        self.verify(inspected, key, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{Jwks, SigningKey};

    #[test]
    fn access_tokens_round_trip_and_are_strict() {
        crate::crypto::install().expect("ring provider");
        let key = std::sync::Arc::new(SigningKey::generate().expect("key"));
        let keys = KeySet::from_jwks(&Jwks { keys: vec![key.public_jwk()] }).expect("keys");
        let key = MintKey::from(key);
        let iss = Issuer::parse("https://portal.example").expect("iss");
        let api = Audience::parse("https://portal.example/api").expect("aud");
        let verifier =
            AccessVerifier::new(iss.clone(), api.clone(), Leeway::from_secs(5).expect("leeway"));
        let sub = Subject::parse("u_1").expect("sub");
        let request = AccessRequest {
            audience: &api,
            subject: &sub,
            client_id: "handoff-cli",
            scope: "profile",
            ttl_secs: 3600,
        };
        let now = UnixTime::from_secs(1_000_000);
        let (token, claims) = mint_access(&key, &iss, &request, now).expect("mint");
        assert_eq!(claims.exp, now.plus(MAX_ACCESS_LIFETIME_SECS), "capped at 10 minutes");
        let verified = verifier.verify_with(&token, &keys, now).expect("verify");
        assert_eq!(verified, claims);
        assert!(verified.has_scope("profile") && !verified.has_scope("prof"));
        assert_eq!(
            verifier.verify_with(&token, &keys, now.plus(MAX_ACCESS_LIFETIME_SECS + 5)),
            Err(Rejection::Expired)
        );
        let elsewhere = Audience::parse("https://other.example/api").expect("aud");
        let (other, _) =
            mint_access(&key, &iss, &AccessRequest { audience: &elsewhere, ..request }, now)
                .expect("mint");
        assert_eq!(verifier.verify_with(&other, &keys, now), Err(Rejection::WrongAudience));
        // A logout token is not an access token.
        let ended = crate::logout::Ended { sid: None, sub: Some(sub.clone()) };
        let (logout, _) = crate::logout::mint_logout(&key, &iss, &api, &ended, now).expect("mint");
        assert_eq!(verifier.verify_with(&logout, &keys, now), Err(Rejection::WrongType));
        let forger = MintKey::from(std::sync::Arc::new(SigningKey::generate().expect("key")));
        let (forged, _) = mint_access(&forger, &iss, &request, now).expect("mint");
        assert!(verifier.verify_with(&forged, &keys, now).is_err());
    }
}
