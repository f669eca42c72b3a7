//! Back-channel logout tokens (OpenID Connect Back-Channel Logout 1.0, adapted): the issuer
//! tells a relying party, server to server, that a session — or every session of a user up to
//! now — ended, so the relying party stops honouring what that session handed over.
//!
//! ```text
//! header  {"typ":"logout+jwt","alg":"EdDSA","kid":"<RFC 7638 thumbprint>"}
//! claims  {"iss","aud","iat","exp","jti",
//!          "events":{"http://schemas.openid.net/event/backchannel-logout":{}},
//!          "sid"?, "sub"?}          (at least one of sid and sub; never a nonce)
//! ```
//!
//! The token is checked as strictly as a handoff: its own `typ` (a handoff token is never a
//! logout token, nor the reverse), the pinned algorithm, a known key, issuer and audience byte
//! for byte, a short lifetime, the event present, no `nonce`, nothing unknown. Single use of
//! the `jti` is the caller's (through its replay store).

use ring::rand::SystemRandom;
use serde::{Deserialize, Serialize};

use crate::keys::{Alg, KeySet, VerificationKey};
use crate::mint::MintKey;
use crate::mint::{sign_compact, MintError};
use crate::time::UnixTime;
use crate::values::{Audience, Issuer, Jti, Leeway, SessionRef, Subject};
use crate::verify::{inspect_typed, signed_claims, Inspected, Rejection, Window};

/// The `typ` header of a logout token.
pub const LOGOUT_TYP: &str = "logout+jwt";
/// The event a logout token carries in `events`.
pub const BACKCHANNEL_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";
/// Longest `exp - iat` a logout token may have, and the lifetime the issuer gives them.
pub const LOGOUT_LIFETIME_SECS: u64 = 120;

/// What ended: one session, or every session of a user up to the token's `iat`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    /// The session that ended.
    pub sid: Option<SessionRef>,
    /// The user whose sessions ended (all of them when `sid` is absent).
    pub sub: Option<Subject>,
}

#[derive(Serialize)]
struct LogoutOut<'a> {
    iss: &'a Issuer,
    aud: &'a Audience,
    iat: UnixTime,
    exp: UnixTime,
    jti: Jti,
    events: serde_json::Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    sid: Option<&'a SessionRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sub: Option<&'a Subject>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LogoutIn {
    iss: String,
    aud: String,
    iat: UnixTime,
    exp: UnixTime,
    jti: Jti,
    events: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    sid: Option<SessionRef>,
    #[serde(default)]
    sub: Option<Subject>,
    // Named so that its presence is a refusal of its own, not just an unknown claim.
    #[serde(default)]
    nonce: Option<serde::de::IgnoredAny>,
}

/// Mints a logout token from `issuer` to `audience` saying `ended`, valid from `now` for
/// [`LOGOUT_LIFETIME_SECS`].
///
/// # Errors
///
/// When randomness fails, or when `ended` names neither a session nor a user.
pub fn mint_logout(
    key: &MintKey,
    issuer: &Issuer,
    audience: &Audience,
    ended: &Ended,
    now: UnixTime,
) -> Result<(String, Jti), MintError> {
    if ended.sid.is_none() && ended.sub.is_none() {
        return Err(MintError::NothingEnded);
    }
    let jti = Jti::generate(&SystemRandom::new()).map_err(|_| MintError::Random)?;
    let claims = LogoutOut {
        iss: issuer,
        aud: audience,
        iat: now,
        exp: now.plus(LOGOUT_LIFETIME_SECS),
        jti,
        events: serde_json::json!({ BACKCHANNEL_EVENT: {} }),
        sid: ended.sid.as_ref(),
        sub: ended.sub.as_ref(),
    };
    Ok((sign_compact(key, LOGOUT_TYP, &claims)?, jti))
}

/// A logout token that passed every check but single use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedLogout {
    /// What ended.
    pub ended: Ended,
    /// When the issuer said so: for a user, every session issued before this ended.
    pub issued_at: UnixTime,
    /// The token's id, for single use.
    pub jti: Jti,
    /// Until when the `jti` must be remembered: the last moment the token could pass.
    pub replay_until: UnixTime,
}

/// Verifies logout tokens from one issuer to this party.
#[derive(Debug, Clone)]
pub struct LogoutVerifier {
    window: Window,
    alg: Alg,
}

impl LogoutVerifier {
    /// A verifier accepting tokens from `issuer` to `audience`, with `leeway` for clock skew.
    pub fn new(issuer: Issuer, audience: Audience, leeway: Leeway) -> Self {
        Self {
            window: Window { issuer, audience, leeway, max_lifetime_secs: LOGOUT_LIFETIME_SECS },
            alg: Alg::EdDsa,
        }
    }

    /// The same verifier for an issuer whose tokens use `alg` (HS256: its shared secret).
    #[must_use]
    pub fn with_algorithm(mut self, alg: Alg) -> Self {
        self.alg = alg;
        self
    }

    /// Size, shape and header, as for a handoff but with the logout `typ`.
    ///
    /// # Errors
    ///
    /// The first check that fails.
    pub fn inspect<'t>(&self, token: &'t str) -> Result<Inspected<'t>, Rejection> {
        inspect_typed(token, LOGOUT_TYP, self.alg)
    }

    /// The signature with `key`, then every claim at `now`.
    ///
    /// # Errors
    ///
    /// The first check that fails: a token with a `nonce`, without the event, naming neither a
    /// session nor a user, or with a lifetime over [`LOGOUT_LIFETIME_SECS`] is
    /// [`Rejection::MalformedClaims`] or [`Rejection::LifetimeTooLong`].
    pub fn verify(
        &self,
        inspected: Inspected<'_>,
        key: &VerificationKey,
        now: UnixTime,
    ) -> Result<VerifiedLogout, Rejection> {
        let json = signed_claims(&inspected, key)?;
        let claims: LogoutIn =
            serde_json::from_slice(&json).map_err(|_| Rejection::MalformedClaims)?;
        let replay_until =
            self.window.check(&claims.iss, &claims.aud, claims.iat, claims.exp, now)?;
        let event_ok =
            claims.events.get(BACKCHANNEL_EVENT).is_some_and(serde_json::Value::is_object);
        if !event_ok || claims.nonce.is_some() || (claims.sid.is_none() && claims.sub.is_none()) {
            return Err(Rejection::MalformedClaims);
        }
        Ok(VerifiedLogout {
            ended: Ended { sid: claims.sid, sub: claims.sub },
            issued_at: claims.iat,
            jti: claims.jti,
            replay_until,
        })
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
    ) -> Result<VerifiedLogout, Rejection> {
        let inspected = self.inspect(token)?;
        let key = keys.get(inspected.kid().as_str()).ok_or(Rejection::UnknownKid)?;
        self.verify(inspected, key, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{Jwks, SigningKey};
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    use std::sync::Arc;

    fn setup() -> (Arc<SigningKey>, KeySet, LogoutVerifier, Issuer, Audience) {
        crate::crypto::install().expect("ring provider");
        let key = Arc::new(SigningKey::generate().expect("key"));
        let keys = KeySet::from_jwks(&Jwks { keys: vec![key.public_jwk()] }).expect("keys");
        let iss = Issuer::parse("https://portal.example").expect("iss");
        let aud = Audience::parse("https://partner.example").expect("aud");
        let verifier =
            LogoutVerifier::new(iss.clone(), aud.clone(), Leeway::from_secs(5).expect("leeway"));
        (key, keys, verifier, iss, aud)
    }

    fn sid() -> SessionRef {
        SessionRef::parse("s3ss10n").expect("sid")
    }

    #[test]
    fn a_logout_token_round_trips() {
        let (key, keys, verifier, iss, aud) = setup();
        let now = UnixTime::from_secs(1_000_000);
        let ended = Ended { sid: Some(sid()), sub: Some(Subject::parse("u_1").expect("sub")) };
        let (token, jti) =
            mint_logout(&MintKey::from(key.clone()), &iss, &aud, &ended, now).expect("mint");
        let verified = verifier.verify_with(&token, &keys, now.plus(10)).expect("verify");
        assert_eq!((verified.ended, verified.jti, verified.issued_at), (ended, jti, now));
        assert_eq!(
            verifier.verify_with(&token, &keys, now.plus(LOGOUT_LIFETIME_SECS + 5)),
            Err(Rejection::Expired)
        );
        let nobody = Ended { sid: None, sub: None };
        assert!(matches!(
            mint_logout(&MintKey::from(key.clone()), &iss, &aud, &nobody, now),
            Err(MintError::NothingEnded)
        ));
    }

    #[test]
    fn logout_tokens_are_strict() {
        let (key, keys, verifier, iss, _) = setup();
        let now = UnixTime::from_secs(1_000_000);
        let other = Audience::parse("https://other.example").expect("aud");
        let (token, _) = mint_logout(
            &MintKey::from(key.clone()),
            &iss,
            &other,
            &Ended { sid: Some(sid()), sub: None },
            now,
        )
        .expect("mint");
        assert_eq!(verifier.verify_with(&token, &keys, now), Err(Rejection::WrongAudience));
        let sign = |header: serde_json::Value, claims: serde_json::Value| {
            let mut t = URL_SAFE_NO_PAD.encode(header.to_string());
            t.push('.');
            t.push_str(&URL_SAFE_NO_PAD.encode(claims.to_string()));
            let s = key.sign(t.as_bytes());
            format!("{t}.{}", URL_SAFE_NO_PAD.encode(s.as_ref()))
        };
        let header =
            serde_json::json!({"typ": LOGOUT_TYP, "alg": "EdDSA", "kid": key.kid().as_str()});
        let good = serde_json::json!({
            "iss": "https://portal.example", "aud": "https://partner.example",
            "iat": 1_000_000, "exp": 1_000_060, "jti": "AAAAAAAAAAAAAAAAAAAAAA",
            "events": { BACKCHANNEL_EVENT: {} }, "sid": "s3ss10n"
        });
        assert!(verifier.verify_with(&sign(header.clone(), good.clone()), &keys, now).is_ok());
        type Edit = Box<dyn Fn(&mut serde_json::Value)>;
        let edits: Vec<(&str, Edit, Rejection)> = vec![
            ("a nonce", Box::new(|c| c["nonce"] = "n".into()), Rejection::MalformedClaims),
            (
                "no event",
                Box::new(|c| c["events"] = serde_json::json!({})),
                Rejection::MalformedClaims,
            ),
            (
                "an event that is not an object",
                Box::new(|c| c["events"] = serde_json::json!({ BACKCHANNEL_EVENT: 1 })),
                Rejection::MalformedClaims,
            ),
            (
                "neither sid nor sub",
                Box::new(|c| {
                    c.as_object_mut().map(|o| o.remove("sid"));
                }),
                Rejection::MalformedClaims,
            ),
            ("an unknown claim", Box::new(|c| c["x"] = 1.into()), Rejection::MalformedClaims),
            (
                "a long life",
                Box::new(|c| c["exp"] = (1_000_000 + LOGOUT_LIFETIME_SECS + 1).into()),
                Rejection::LifetimeTooLong,
            ),
            (
                "from the future",
                Box::new(|c| {
                    c["iat"] = 1_000_100.into();
                    c["exp"] = 1_000_150.into();
                }),
                Rejection::IssuedInFuture,
            ),
            (
                "another issuer",
                Box::new(|c| c["iss"] = "https://evil.example".into()),
                Rejection::WrongIssuer,
            ),
        ];
        for (what, edit, expected) in edits {
            let mut claims = good.clone();
            edit(&mut claims);
            assert_eq!(
                verifier.verify_with(&sign(header.clone(), claims), &keys, now),
                Err(expected),
                "{what}"
            );
        }
        // A handoff token's type, or none, is not a logout token's.
        for typ in [serde_json::json!("handoff+jwt"), serde_json::Value::Null] {
            let mut h = header.clone();
            h["typ"] = typ;
            assert_eq!(
                verifier.verify_with(&sign(h, good.clone()), &keys, now),
                Err(Rejection::WrongType)
            );
        }
        // Another key's signature.
        let forger = SigningKey::generate().expect("key");
        let forged_header =
            serde_json::json!({"typ": LOGOUT_TYP, "alg": "EdDSA", "kid": key.kid().as_str()});
        let mut t = URL_SAFE_NO_PAD.encode(forged_header.to_string());
        t.push('.');
        t.push_str(&URL_SAFE_NO_PAD.encode(good.to_string()));
        let s = forger.sign(t.as_bytes());
        let forged = format!("{t}.{}", URL_SAFE_NO_PAD.encode(s.as_ref()));
        assert_eq!(verifier.verify_with(&forged, &keys, now), Err(Rejection::BadSignature));
    }
}
