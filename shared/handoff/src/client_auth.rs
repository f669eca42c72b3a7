//! Client-authentication JWTs for the partner API: a partner's back end signs one per request
//! with its client secret (HS256) or its own Ed25519 key, and the issuer checks it.
//!
//! ```text
//! header  {"typ":"partner-api+jwt","alg":"HS256"}            (or "EdDSA" with its "kid")
//! claims  {"iss": CLIENT_ID, "sub": CLIENT_ID, "aud": ISSUER_URL, "iat", "exp", "nbf"?,
//!          "jti", "htm": "GET", "htu": "https://portal.example/api/v1/users/…"}
//! ```
//!
//! `exp` is at most [`MAX_CLIENT_AUTH_LIFETIME_SECS`] after `iat`; the `jti` is single use (the
//! caller records it); `htm` and `htu` name the one request the token authorizes, as DPoP's do
//! (RFC 9449 §4.2): the method, and the request URL without query or fragment, compared byte
//! for byte with the URL as the issuer received it. A token made for one endpoint or method is
//! refused on any other, so a token that leaks (a proxy's log, say) opens nothing else.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::rand::SystemRandom;
use serde::{Deserialize, Serialize};

use crate::keys::KeySet;
use crate::mint::{sign_compact, MintError, MintKey};
use crate::time::UnixTime;
use crate::token::MAX_TOKEN_LEN;
use crate::values::{Issuer, Jti, Leeway};
use crate::verify::{inspect_typed, signed_claims, Rejection};

/// The `typ` header of a client-authentication JWT.
pub const CLIENT_AUTH_TYP: &str = "partner-api+jwt";
/// Longest `exp - iat` accepted: five minutes.
pub const MAX_CLIENT_AUTH_LIFETIME_SECS: u64 = 300;

/// What a partner's back end signs a token for.
#[derive(Debug, Clone, Copy)]
pub struct ClientRequest<'a> {
    /// Its `client_id`.
    pub client_id: &'a str,
    /// The issuer it calls (the API's `aud`).
    pub audience: &'a Issuer,
    /// The request's method, e.g. `GET`.
    pub htm: &'a str,
    /// The request's URL without query or fragment.
    pub htu: &'a str,
    /// The token's lifetime (capped at [`MAX_CLIENT_AUTH_LIFETIME_SECS`]).
    pub lifetime_secs: u64,
}

#[derive(Serialize)]
struct ClaimsOut<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a Issuer,
    iat: UnixTime,
    exp: UnixTime,
    jti: Jti,
    htm: &'a str,
    htu: &'a str,
}

/// Mints a client-authentication JWT for one request (what a partner written in Rust calls).
///
/// # Errors
///
/// When randomness fails.
pub fn mint_client_auth(
    key: &MintKey,
    request: &ClientRequest<'_>,
    now: UnixTime,
) -> Result<String, MintError> {
    let jti = Jti::generate(&SystemRandom::new()).map_err(|_| MintError::Random)?;
    let lifetime = request.lifetime_secs.clamp(1, MAX_CLIENT_AUTH_LIFETIME_SECS);
    let claims = ClaimsOut {
        iss: request.client_id,
        sub: request.client_id,
        aud: request.audience,
        iat: now,
        exp: now.plus(lifetime),
        jti,
        htm: request.htm,
        htu: request.htu,
    };
    sign_compact(key, CLIENT_AUTH_TYP, &claims)
}

/// The `iss` a token claims, read before any check: only to pick the client whose keys then
/// check everything. `None` for anything that is not a token with a string `iss`.
pub fn claimed_client(token: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Iss {
        iss: String,
    }
    if token.len() > MAX_TOKEN_LEN {
        return None;
    }
    let payload = token.split('.').nth(1)?;
    let json = URL_SAFE_NO_PAD.decode(payload).ok()?;
    serde_json::from_slice::<Iss>(&json).ok().map(|c| c.iss)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClaimsIn {
    iss: String,
    sub: String,
    aud: String,
    iat: UnixTime,
    exp: UnixTime,
    #[serde(default)]
    nbf: Option<UnixTime>,
    jti: String,
    htm: String,
    htu: String,
}

/// A client-authentication JWT that passed every check but single use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedClientAuth {
    /// The client it speaks for.
    pub client_id: String,
    /// Its id, to record once.
    pub jti: String,
    /// Until when the `jti` must be remembered.
    pub replay_until: UnixTime,
}

/// True for a `jti` a partner may choose: 16 to 128 characters of A-Z a-z 0-9 - _ . (a
/// base64url or hex random string, a UUID).
fn is_client_jti(jti: &str) -> bool {
    (16..=128).contains(&jti.len())
        && jti.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Checks client-authentication JWTs sent to one issuer.
#[derive(Debug, Clone)]
pub struct ClientAuthVerifier {
    audience: Issuer,
    leeway: Leeway,
}

/// The request a token must name.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    /// The client whose keys check it.
    pub client_id: &'a str,
    /// The method received.
    pub htm: &'a str,
    /// The URL received, without query or fragment.
    pub htu: &'a str,
}

impl ClientAuthVerifier {
    /// A verifier for tokens to `audience` (the issuer's public URL), with `leeway`.
    pub fn new(audience: Issuer, leeway: Leeway) -> Self {
        Self { audience, leeway }
    }

    /// Checks `token` for the request `expected`, with the client's `keys` (whose algorithm is
    /// the only one accepted), at `now`: shape and header, signature, `iss` and `sub` (the
    /// client), `aud`, times, lifetime, `jti`, then `htm` and `htu`.
    ///
    /// # Errors
    ///
    /// The first check that fails; a token for another request is
    /// [`Rejection::WrongRequest`].
    pub fn verify(
        &self,
        token: &str,
        keys: &KeySet,
        expected: &Expected<'_>,
        now: UnixTime,
    ) -> Result<VerifiedClientAuth, Rejection> {
        let inspected = inspect_typed(token, CLIENT_AUTH_TYP, keys.alg())?;
        let key = keys.get(inspected.kid().as_str()).ok_or(Rejection::UnknownKid)?;
        let json = signed_claims(&inspected, key)?;
        let claims: ClaimsIn =
            serde_json::from_slice(&json).map_err(|_| Rejection::MalformedClaims)?;
        if claims.iss != expected.client_id || claims.sub != expected.client_id {
            return Err(Rejection::WrongIssuer);
        }
        if claims.aud != self.audience.as_str() {
            return Err(Rejection::WrongAudience);
        }
        let leeway = self.leeway.as_secs();
        if now >= claims.exp.plus(leeway) {
            return Err(Rejection::Expired);
        }
        if claims.nbf.is_some_and(|nbf| nbf > now.plus(leeway)) {
            return Err(Rejection::NotYetValid);
        }
        if claims.iat > now.plus(leeway) {
            return Err(Rejection::IssuedInFuture);
        }
        if claims.exp <= claims.iat || !is_client_jti(&claims.jti) {
            return Err(Rejection::MalformedClaims);
        }
        if claims.exp.as_secs() - claims.iat.as_secs() > MAX_CLIENT_AUTH_LIFETIME_SECS {
            return Err(Rejection::LifetimeTooLong);
        }
        if claims.htm != expected.htm || claims.htu != expected.htu {
            return Err(Rejection::WrongRequest);
        }
        Ok(VerifiedClientAuth {
            client_id: claims.iss,
            jti: claims.jti,
            replay_until: claims.exp.plus(leeway),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use super::*;
    use crate::keys::{Jwks, SigningKey};
    use crate::secret::SharedSecret;

    const NOW: UnixTime = UnixTime::from_secs(1_800_000_000);
    const HTU: &str = "https://portal.example/api/v1/users/p123";

    fn secret() -> Arc<SharedSecret> {
        Arc::new(SharedSecret::from_bytes(b"k7Qp2Zs9Wm4Xv8Rt1Ly6Nc3Bh5Jd0Gf!", "t").expect("s"))
    }

    fn portal() -> Issuer {
        Issuer::parse("https://portal.example").expect("iss")
    }

    fn request(portal: &Issuer) -> ClientRequest<'_> {
        ClientRequest {
            client_id: "desk",
            audience: portal,
            htm: "GET",
            htu: HTU,
            lifetime_secs: 60,
        }
    }

    fn verifier() -> ClientAuthVerifier {
        crate::crypto::install().expect("ring");
        ClientAuthVerifier::new(portal(), Leeway::from_secs(5).expect("leeway"))
    }

    const EXPECTED: Expected<'static> = Expected { client_id: "desk", htm: "GET", htu: HTU };

    #[test]
    fn a_client_token_round_trips_with_a_secret_and_with_a_key() {
        let portal = portal();
        let keys = KeySet::shared_secret(&secret());
        let token = mint_client_auth(&MintKey::Hs256(secret()), &request(&portal), NOW).expect("m");
        assert_eq!(claimed_client(&token).as_deref(), Some("desk"));
        let ok = verifier().verify(&token, &keys, &EXPECTED, NOW).expect("valid");
        assert_eq!(ok.client_id, "desk");
        assert_eq!(ok.replay_until, NOW.plus(65));
        let ed = Arc::new(SigningKey::generate().expect("key"));
        let jwks = KeySet::from_jwks(&Jwks { keys: vec![ed.public_jwk()] }).expect("jwks");
        let token = mint_client_auth(&MintKey::Ed25519(ed), &request(&portal), NOW).expect("m");
        assert!(verifier().verify(&token, &jwks, &EXPECTED, NOW).is_ok());
        // Each key type checks only its own algorithm.
        assert_eq!(
            verifier().verify(&token, &keys, &EXPECTED, NOW),
            Err(Rejection::WrongAlgorithm)
        );
    }

    #[test]
    fn a_token_opens_only_its_own_request() {
        let portal = portal();
        let keys = KeySet::shared_secret(&secret());
        let key = MintKey::Hs256(secret());
        let token = mint_client_auth(&key, &request(&portal), NOW).expect("m");
        let v = verifier();
        let other_url = Expected { htu: "https://portal.example/api/v1/users/p999", ..EXPECTED };
        assert_eq!(v.verify(&token, &keys, &other_url, NOW), Err(Rejection::WrongRequest));
        let other_method = Expected { htm: "DELETE", ..EXPECTED };
        assert_eq!(v.verify(&token, &keys, &other_method, NOW), Err(Rejection::WrongRequest));
        let other_client = Expected { client_id: "analytics", ..EXPECTED };
        assert_eq!(v.verify(&token, &keys, &other_client, NOW), Err(Rejection::WrongIssuer));
        assert_eq!(v.verify(&token, &keys, &EXPECTED, NOW.plus(60 + 5)), Err(Rejection::Expired));
        let elsewhere = Issuer::parse("https://other.example").expect("iss");
        let token = mint_client_auth(
            &key,
            &ClientRequest { audience: &elsewhere, ..request(&portal) },
            NOW,
        )
        .expect("m");
        assert_eq!(v.verify(&token, &keys, &EXPECTED, NOW), Err(Rejection::WrongAudience));
        let wrong = SharedSecret::from_bytes(b"Z0x9C8v7B6n5M4a3S2d1F0g9H8j7K6l5", "t").expect("s");
        let token =
            mint_client_auth(&MintKey::Hs256(Arc::new(wrong)), &request(&portal), NOW).expect("m");
        assert_eq!(v.verify(&token, &keys, &EXPECTED, NOW), Err(Rejection::BadSignature));
    }

    #[test]
    fn claims_are_strict() {
        let keys = KeySet::shared_secret(&secret());
        let good = json!({"iss": "desk", "sub": "desk", "aud": "https://portal.example",
            "iat": NOW.as_secs(), "exp": NOW.as_secs() + 60, "jti": "0123456789abcdef",
            "htm": "GET", "htu": HTU});
        let sign = |claims: &serde_json::Value| {
            let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
            header.typ = Some(CLIENT_AUTH_TYP.into());
            jsonwebtoken::encode(
                &header,
                claims,
                &jsonwebtoken::EncodingKey::from_secret(b"k7Qp2Zs9Wm4Xv8Rt1Ly6Nc3Bh5Jd0Gf!"),
            )
            .expect("encode")
        };
        let v = verifier();
        assert!(v.verify(&sign(&good), &keys, &EXPECTED, NOW).is_ok());
        for (claim, value, expected) in [
            ("sub", json!("other"), Rejection::WrongIssuer),
            ("exp", json!(NOW.as_secs() + 301), Rejection::LifetimeTooLong),
            ("iat", json!(NOW.as_secs() + 60), Rejection::IssuedInFuture),
            ("nbf", json!(NOW.as_secs() + 60), Rejection::NotYetValid),
            ("jti", json!("short"), Rejection::MalformedClaims),
            ("jti", json!("has spaces in it, sixteen+"), Rejection::MalformedClaims),
            ("aud", json!(["https://portal.example"]), Rejection::MalformedClaims),
            ("scope", json!("admin"), Rejection::MalformedClaims),
            ("htu", json!(format!("{HTU}?x=1")), Rejection::WrongRequest),
        ] {
            let mut claims = good.clone();
            claims[claim] = value;
            assert_eq!(v.verify(&sign(&claims), &keys, &EXPECTED, NOW), Err(expected), "{claim}");
        }
        // A handoff token is not a client token, whatever it holds.
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        header.typ = Some(crate::token::HANDOFF_TYP.into());
        let handoff = jsonwebtoken::encode(
            &header,
            &good,
            &jsonwebtoken::EncodingKey::from_secret(b"k7Qp2Zs9Wm4Xv8Rt1Ly6Nc3Bh5Jd0Gf!"),
        )
        .expect("encode");
        assert_eq!(v.verify(&handoff, &keys, &EXPECTED, NOW), Err(Rejection::WrongType));
        assert_eq!(claimed_client("not a token"), None);
    }
}
