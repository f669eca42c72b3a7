//! The operation grant: what SERVER2 keeps in its operation cookie after a handoff succeeds.
//!
//! A grant is SERVER2's own short-lived token, HMAC-signed with a key only SERVER2 holds, scoped
//! to exactly the operation the handoff authorized. Operation pages accept nothing else. It uses
//! its own `typ` so that it can never be mistaken for a handoff token, nor one for it.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, Header};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

use crate::operation::Operation;
use crate::time::UnixTime;
use crate::values::{Audience, Issuer, Jti, SessionRef, Subject};

/// The `typ` of a grant.
pub const GRANT_TYP: &str = "handoff-grant+jwt";
/// Longest grant accepted, in bytes.
const MAX_GRANT_LEN: usize = 4096;
/// Shortest HMAC key accepted, in bytes.
pub const MIN_GRANT_KEY_LEN: usize = 32;

/// What a grant says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// The party that issued the grant (SERVER2 itself).
    pub aud: Audience,
    /// The user.
    pub sub: Subject,
    /// Who handed the user over (the handoff token's issuer).
    pub handed_by: Issuer,
    /// The one operation allowed.
    pub op: Operation,
    /// When the handoff was accepted.
    pub iat: UnixTime,
    /// When the grant ends.
    pub exp: UnixTime,
    /// The handoff token's id.
    pub jti: Jti,
    /// The issuer-side session the handoff came from, when the token named one: a logout of
    /// that session ends the grant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<SessionRef>,
    /// When the issuer made the handoff token (its `iat`, on the issuer's clock, as its
    /// logouts are): a logout of every session of the user up to a time ends the grants whose
    /// token was made by then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_iat: Option<UnixTime>,
    /// The user's display name, when the handoff token carried one (its `name` claim).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl Grant {
    /// Who the grant is for, as a person reads it: the display name with the opaque id (a name
    /// alone could be anyone's: people choose their own), else the id.
    pub fn shown_as(&self) -> String {
        match &self.name {
            Some(name) => format!("{name} ({})", self.sub),
            None => self.sub.to_string(),
        }
    }
}

/// Why a grant was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    /// Not a well-formed grant, or its signature does not verify.
    #[error("invalid grant")]
    Invalid,
    /// Issued for another party.
    #[error("grant for another party")]
    WrongAudience,
    /// Past its `exp`.
    #[error("grant expired")]
    Expired,
    /// Signing failed (not expected).
    #[error("cannot sign grant")]
    Sign,
}

/// The purposes a relying party's cookie secret serves, each with a key of its own derived
/// from it (HKDF-SHA-256, RFC 5869, with ring): no MAC made for one purpose can pass for
/// another's, whatever the inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Signing operation grants (the grant cookie).
    Grant,
    /// Signing holder notes (who holds a grant in this browser).
    Holder,
    /// Comparing a nonce cookie with a token's nonce.
    Nonce,
    /// Anti-forgery tokens of the forms acting under a grant.
    Forms,
}

impl Purpose {
    /// The HKDF `info` of the purpose's key.
    const fn label(self) -> &'static [u8] {
        match self {
            Self::Grant => b"handoff relying party v2: grant",
            Self::Holder => b"handoff relying party v2: holder note",
            Self::Nonce => b"handoff relying party v2: nonce comparison",
            Self::Forms => b"handoff relying party v2: forms",
        }
    }
}

/// The 32-byte key for `purpose` derived from a relying party's cookie `secret`.
pub fn derive_key(secret: &[u8], purpose: Purpose) -> [u8; 32] {
    struct Len32;
    impl ring::hkdf::KeyType for Len32 {
        fn len(&self) -> usize {
            32
        }
    }
    let prk =
        ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, b"handoff relying party").extract(secret);
    let mut key = [0u8; 32];
    // 32 bytes is far below HKDF-SHA-256's limit (255 blocks): expansion cannot fail.
    if let Ok(okm) = prk.expand(&[purpose.label()], Len32) {
        let _ = okm.fill(&mut key);
    }
    key
}

/// The HMAC key grants are signed with. `Debug` never shows it.
pub struct GrantKey {
    /// Signs holder notes.
    holder: hmac::Key,
    /// Compares nonces.
    nonce: hmac::Key,
    mac: hmac::Key,
    encoded_header: String,
}

impl GrantKey {
    /// A fresh random key (grants then die with the process).
    ///
    /// # Errors
    ///
    /// Only when the random source fails.
    pub fn generate() -> Result<Self, GrantError> {
        let mut bytes = [0u8; 32];
        SystemRandom::new().fill(&mut bytes).map_err(|_| GrantError::Sign)?;
        Self::from_bytes(&bytes)
    }

    /// A key from secret bytes (at least [`MIN_GRANT_KEY_LEN`]).
    ///
    /// # Errors
    ///
    /// Fewer than [`MIN_GRANT_KEY_LEN`] bytes.
    pub fn from_bytes(secret: &[u8]) -> Result<Self, GrantError> {
        if secret.len() < MIN_GRANT_KEY_LEN {
            return Err(GrantError::Invalid);
        }
        crate::crypto::install().map_err(|_| GrantError::Sign)?;
        let key = |purpose| hmac::Key::new(hmac::HMAC_SHA256, &derive_key(secret, purpose));
        // The header is the same for every grant: serialised (by jsonwebtoken's own type) once.
        let header = serde_json::to_vec(&grant_header()).map_err(|_| GrantError::Sign)?;
        Ok(Self {
            holder: key(Purpose::Holder),
            nonce: key(Purpose::Nonce),
            mac: key(Purpose::Grant),
            encoded_header: URL_SAFE_NO_PAD.encode(header),
        })
    }

    /// Signs a grant: the compact HS256 JWS that jsonwebtoken's `encode` would produce (a test
    /// checks they are byte for byte the same), with the header encoded and the HMAC key
    /// scheduled once rather than for every grant.
    ///
    /// # Errors
    ///
    /// [`GrantError::Sign`] if the claims cannot be serialised (not expected).
    pub fn seal(&self, grant: &Grant) -> Result<String, GrantError> {
        let claims = serde_json::to_vec(grant).map_err(|_| GrantError::Sign)?;
        let mut out = String::with_capacity(self.encoded_header.len() + claims.len() * 4 / 3 + 48);
        out.push_str(&self.encoded_header);
        out.push('.');
        URL_SAFE_NO_PAD.encode_string(&claims, &mut out);
        let tag = hmac::sign(&self.mac, out.as_bytes());
        out.push('.');
        URL_SAFE_NO_PAD.encode_string(tag.as_ref(), &mut out);
        Ok(out)
    }

    /// Opens a grant for `audience` at time `now`.
    ///
    /// # Errors
    ///
    /// [`GrantError::Invalid`], [`GrantError::WrongAudience`] or [`GrantError::Expired`].
    pub fn open(
        &self,
        sealed: &str,
        audience: &Audience,
        now: UnixTime,
    ) -> Result<Grant, GrantError> {
        const INVALID: GrantError = GrantError::Invalid;
        if sealed.len() > MAX_GRANT_LEN || !crate::token::is_token_text(sealed.as_bytes()) {
            return Err(INVALID);
        }
        // The mirror of `seal`: only the header it writes, the tag over exactly what it signed,
        // then the claims, decoded once.
        let (signed, tag) = sealed.rsplit_once('.').ok_or(INVALID)?;
        let payload = signed
            .strip_prefix(self.encoded_header.as_str())
            .and_then(|rest| rest.strip_prefix('.'))
            .filter(|payload| !payload.contains('.'))
            .ok_or(INVALID)?;
        let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| INVALID)?;
        hmac::verify(&self.mac, signed.as_bytes(), &tag).map_err(|_| INVALID)?;
        let json = URL_SAFE_NO_PAD.decode(payload).map_err(|_| INVALID)?;
        // serde would also read a struct from a JSON array; claims are an object.
        if json.trim_ascii_start().first() != Some(&b'{') {
            return Err(INVALID);
        }
        let grant: Grant = serde_json::from_slice(&json).map_err(|_| INVALID)?;
        if &grant.aud != audience {
            return Err(GrantError::WrongAudience);
        }
        if now >= grant.exp {
            return Err(GrantError::Expired);
        }
        Ok(grant)
    }
}

fn grant_header() -> Header {
    let mut header = Header::new(Algorithm::HS256);
    header.typ = Some(GRANT_TYP.to_owned());
    header
}

impl GrantKey {
    /// A signed note of who holds a grant in this browser, until when: `sub.exp.tag`. It gives
    /// no access to anything; it lets a cross-site POST (which carries no SameSite=Lax grant)
    /// tell that the browser is signed in as someone else.
    pub fn seal_holder(&self, grant: &Grant) -> String {
        use std::fmt::Write as _;
        let mut note = String::with_capacity(grant.sub.as_str().len() + 64);
        // Writing to a String cannot fail.
        let _ = write!(note, "{}.{}", grant.sub, grant.exp.as_secs());
        let mut mac = hmac::Context::with_key(&self.holder);
        mac.update(b"holder\0");
        mac.update(note.as_bytes());
        note.push('.');
        URL_SAFE_NO_PAD.encode_string(mac.sign(), &mut note);
        note
    }

    /// The user a [`GrantKey::seal_holder`] note names, if it is genuine and unexpired at `now`.
    pub fn open_holder(&self, note: &str, now: UnixTime) -> Option<Subject> {
        let (body, tag) = note.rsplit_once('.')?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        hmac::verify(&self.holder, format!("holder\0{body}").as_bytes(), &tag).ok()?;
        let (sub, exp) = body.rsplit_once('.')?;
        let exp = UnixTime::from_secs(exp.parse().ok()?);
        if now >= exp {
            return None;
        }
        Subject::parse(sub).ok()
    }

    /// True when `a` and `b` are the same non-empty secret (a nonce cookie and a token's
    /// nonce), compared in constant time: both are MACed and the tags compared by ring.
    pub fn same_secret(&self, a: &str, b: &str) -> bool {
        if a.is_empty() || b.is_empty() {
            return false;
        }
        let tag = hmac::sign(&self.nonce, &[b"nonce\0", a.as_bytes()].concat());
        hmac::verify(&self.nonce, &[b"nonce\0", b.as_bytes()].concat(), tag.as_ref()).is_ok()
    }
}

impl fmt::Debug for GrantKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("GrantKey([redacted])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operation::OperationType;

    fn grant(now: UnixTime) -> Grant {
        Grant {
            aud: Audience::parse("http://localhost:8002").expect("aud"),
            sub: Subject::parse("u_1").expect("sub"),
            handed_by: Issuer::parse("http://127.0.0.1:8001").expect("iss"),
            op: Operation::new(OperationType::parse("report.view").expect("t"), []).expect("op"),
            iat: now,
            exp: now.plus(600),
            jti: Jti::generate(&SystemRandom::new()).expect("rng"),
            sid: None,
            token_iat: None,
            name: None,
        }
    }

    #[test]
    fn seal_open_and_refusals() {
        let key = GrantKey::generate().expect("key");
        let now = UnixTime::from_secs(10_000);
        let g = grant(now);
        let sealed = key.seal(&g).expect("seal");
        assert_eq!(key.open(&sealed, &g.aud, now), Ok(g.clone()));
        assert_eq!(key.open(&sealed, &g.aud, now.plus(600)), Err(GrantError::Expired));
        let other = Audience::parse("https://other.example").expect("aud");
        assert_eq!(key.open(&sealed, &other, now), Err(GrantError::WrongAudience));
        let stranger = GrantKey::generate().expect("key");
        assert_eq!(stranger.open(&sealed, &g.aud, now), Err(GrantError::Invalid));
        let mut tampered = sealed.clone();
        tampered.push('A');
        assert_eq!(key.open(&tampered, &g.aud, now), Err(GrantError::Invalid));
        assert_eq!(key.open("", &g.aud, now), Err(GrantError::Invalid));
        assert_eq!(key.open("a b", &g.aud, now), Err(GrantError::Invalid));
        assert!(GrantKey::from_bytes(&[0; 31]).is_err());
    }

    #[test]
    fn each_purpose_has_its_own_key() {
        let secret = [9u8; 32];
        let keys = [Purpose::Grant, Purpose::Holder, Purpose::Nonce, Purpose::Forms]
            .map(|p| derive_key(&secret, p));
        for (i, a) in keys.iter().enumerate() {
            assert_ne!(a, &secret, "never the secret itself");
            for b in &keys[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert_eq!(derive_key(&secret, Purpose::Forms), derive_key(&secret, Purpose::Forms));
        assert_ne!(derive_key(&[8u8; 32], Purpose::Forms), keys[3]);
    }

    #[test]
    fn seal_is_what_jsonwebtoken_encodes() {
        let cookie_secret = [9u8; 32];
        let key = GrantKey::from_bytes(&cookie_secret).expect("key");
        // Grants are signed with the grant key derived from the cookie secret, not the secret.
        let secret = derive_key(&cookie_secret, Purpose::Grant);
        let g = grant(UnixTime::from_secs(77));
        let ours = key.seal(&g).expect("seal");
        let raw = jsonwebtoken::encode(
            &grant_header(),
            &g,
            &jsonwebtoken::EncodingKey::from_secret(&cookie_secret),
        )
        .expect("encode");
        assert_eq!(key.open(&raw, &g.aud, UnixTime::from_secs(77)), Err(GrantError::Invalid));
        let theirs = jsonwebtoken::encode(
            &grant_header(),
            &g,
            &jsonwebtoken::EncodingKey::from_secret(&secret),
        )
        .expect("encode");
        assert_eq!(ours, theirs);
        assert_eq!(key.open(&theirs, &g.aud, UnixTime::from_secs(77)), Ok(g.clone()));
        // Signed with the key but under another header (one more member, or another `typ`):
        // not something `seal` wrote, so refused.
        let mut with_kid = grant_header();
        with_kid.kid = Some("k".into());
        let mut other_typ = grant_header();
        other_typ.typ = Some("JWT".into());
        for header in [with_kid, other_typ] {
            let forged =
                jsonwebtoken::encode(&header, &g, &jsonwebtoken::EncodingKey::from_secret(&secret))
                    .expect("encode");
            assert_eq!(
                key.open(&forged, &g.aud, UnixTime::from_secs(77)),
                Err(GrantError::Invalid)
            );
        }
    }

    #[test]
    fn holder_notes() {
        let key = GrantKey::generate().expect("key");
        let now = UnixTime::from_secs(100);
        let g = grant(now);
        let note = key.seal_holder(&g);
        assert_eq!(key.open_holder(&note, now), Some(g.sub.clone()));
        assert_eq!(key.open_holder(&note, g.exp), None, "expired");
        assert_eq!(GrantKey::generate().expect("key").open_holder(&note, now), None, "other key");
        assert_eq!(key.open_holder(&note.replace("u_1", "u_2"), now), None, "tampered");
        assert_eq!(key.open_holder("garbage", now), None);
    }

    #[test]
    fn same_secret() {
        let key = GrantKey::generate().expect("key");
        assert!(key.same_secret("abc", "abc"));
        assert!(!key.same_secret("abc", "abd"));
        assert!(!key.same_secret("", ""));
        assert!(!key.same_secret("abc", ""));
    }
}
