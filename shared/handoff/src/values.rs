//! Validated values that go into a handoff token.
//!
//! Each is a newtype with a private field and one fallible constructor, `parse`; serde goes
//! through the same constructor, so a value read from a token, a config file or a form has passed
//! the same checks as one built in code.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::rand::{SecureRandom, SystemRandom};

use crate::keys::is_base64url_byte;

/// Why a value was refused. The message names the rule, never the refused input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} {rule}")]
pub struct ValueError {
    what: &'static str,
    rule: &'static str,
}

impl ValueError {
    pub(crate) const fn new(what: &'static str, rule: &'static str) -> Self {
        Self { what, rule }
    }
}

/// Declares a string newtype whose only way in is `$check`.
macro_rules! checked_string {
    ($(#[$meta:meta])* $name:ident, $check:path) => {
        $(#[$meta])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Deserialize)]
        #[serde(try_from = "String")]
        pub struct $name(String);

        // Written as the string it holds, without the copy `into = "String"` would make.
        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl $name {
            /// Checks and wraps a value.
            ///
            /// # Errors
            ///
            /// When the value breaks the type's rule; the error names the rule.
            pub fn parse(value: &str) -> Result<Self, ValueError> {
                $check(value)?;
                Ok(Self(value.to_owned()))
            }

            /// The value as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = ValueError;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                $check(&value)?;
                Ok(Self(value))
            }
        }

        impl std::str::FromStr for $name {
            type Err = ValueError;
            fn from_str(value: &str) -> Result<Self, Self::Err> {
                Self::parse(value)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> Self {
                value.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }
    };
}
pub(crate) use checked_string;

/// True for a short identifier (a target id, a role): 1 to `max` characters of a-z 0-9 - _,
/// starting with a letter or digit.
pub fn is_short_id(value: &str, max: usize) -> bool {
    let mut bytes = value.bytes();
    value.len() <= max
        && bytes.next().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

const MAX_URL_LEN: usize = 256;

/// A party's identifying URL: `http` or `https`, a host, an optional port and path, nothing
/// else, and no trailing slash, so that string equality is identity.
fn check_party_url(value: &str) -> Result<(), ValueError> {
    const WHAT: &str = "an issuer or audience URL";
    if value.is_empty() || value.len() > MAX_URL_LEN {
        return Err(ValueError::new(WHAT, "must be 1 to 256 characters"));
    }
    let url = url::Url::parse(value)
        .map_err(|_| ValueError::new(WHAT, "must be an absolute http(s) URL"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(ValueError::new(WHAT, "must be an absolute http(s) URL with a host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ValueError::new(WHAT, "must not carry user information"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(ValueError::new(WHAT, "must not have a query or fragment"));
    }
    // The parsed form must be the given form: no case folding, default ports, dot segments or
    // percent-encoding differences that would let two spellings name one party.
    let canonical = url.as_str();
    let canonical = canonical.strip_suffix('/').unwrap_or(canonical);
    if canonical != value || value.ends_with('/') {
        return Err(ValueError::new(
            WHAT,
            "must be in canonical form: lower-case scheme and host, no default port, no trailing slash",
        ));
    }
    Ok(())
}

checked_string!(
    /// The token issuer: SERVER1's public URL, e.g. `https://portal.example.com`.
    Issuer,
    check_party_url
);
checked_string!(
    /// The one party a token is for: the target's public URL, e.g. `https://partner.example`.
    Audience,
    check_party_url
);

impl Issuer {
    /// This issuer's URL with `path` appended (`path` starts with `/`).
    pub fn join(&self, path: &str) -> String {
        format!("{}{}", self.0, path)
    }
}

impl Audience {
    /// This audience's URL with `path` appended (`path` starts with `/`).
    pub fn join(&self, path: &str) -> String {
        format!("{}{}", self.0, path)
    }
}

fn check_subject(value: &str) -> Result<(), ValueError> {
    let ok = (1..=128).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
    if ok {
        Ok(())
    } else {
        Err(ValueError::new("a subject", "is 1 to 128 characters of A-Z a-z 0-9 - _ . :"))
    }
}

checked_string!(
    /// The user a token speaks for: a stable, opaque id (never a name or an e-mail address).
    Subject,
    check_subject
);

fn check_session_ref(value: &str) -> Result<(), ValueError> {
    if (1..=128).contains(&value.len()) && value.bytes().all(is_base64url_byte) {
        Ok(())
    } else {
        Err(ValueError::new("a session reference (sid)", "is 1 to 128 base64url characters"))
    }
}

checked_string!(
    /// The issuer-side session a token came from (`sid`), for logout propagation.
    SessionRef,
    check_session_ref
);

fn check_nonce(value: &str) -> Result<(), ValueError> {
    if (22..=64).contains(&value.len()) && value.bytes().all(is_base64url_byte) {
        Ok(())
    } else {
        Err(ValueError::new("a nonce", "is 22 to 64 base64url characters"))
    }
}

checked_string!(
    /// A browser-binding nonce (at least 128 bits, base64url).
    Nonce,
    check_nonce
);

impl Nonce {
    /// A fresh 128-bit random nonce.
    ///
    /// # Errors
    ///
    /// Only when the system random source fails.
    pub fn generate(rng: &SystemRandom) -> Result<Self, ValueError> {
        let mut bytes = [0u8; 16];
        rng.fill(&mut bytes).map_err(|_| ValueError::new("a nonce", "needs working randomness"))?;
        Ok(Self(URL_SAFE_NO_PAD.encode(bytes)))
    }
}

/// A token's unique id: exactly 128 random bits, base64url (22 characters).
#[derive(Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(try_from = "String")]
pub struct Jti([u8; 16]);

impl Jti {
    /// A fresh random id.
    ///
    /// # Errors
    ///
    /// Only when the system random source fails.
    pub fn generate(rng: &SystemRandom) -> Result<Self, ValueError> {
        let mut bytes = [0u8; 16];
        rng.fill(&mut bytes).map_err(|_| ValueError::new("a jti", "needs working randomness"))?;
        Ok(Self(bytes))
    }

    /// Parses the 22-character form.
    ///
    /// # Errors
    ///
    /// Anything but 22 base64url characters encoding 16 bytes.
    pub fn parse(value: &str) -> Result<Self, ValueError> {
        const ERR: ValueError = ValueError::new("a jti", "is 22 base64url characters (128 bits)");
        if value.len() != 22 {
            return Err(ERR);
        }
        let mut bytes = [0u8; 16];
        match URL_SAFE_NO_PAD.decode_slice(value.as_bytes(), &mut bytes) {
            // Re-encoding must give the input back: rejects non-canonical trailing bits.
            Ok(16) if Self(bytes).encode(&mut [0; 22]) == value => Ok(Self(bytes)),
            _ => Err(ERR),
        }
    }

    /// The 128 bits as a number, the replay store's key.
    pub fn as_u128(&self) -> u128 {
        u128::from_be_bytes(self.0)
    }
}

impl TryFrom<String> for Jti {
    type Error = ValueError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<Jti> for String {
    fn from(jti: Jti) -> Self {
        jti.to_string()
    }
}

impl Jti {
    /// The 22-character form, encoded on the stack.
    fn encode<'b>(&self, buf: &'b mut [u8; 22]) -> &'b str {
        // 16 bytes always encode to exactly 22 base64url characters.
        let n = URL_SAFE_NO_PAD.encode_slice(self.0, buf).unwrap_or(0);
        std::str::from_utf8(buf.get(..n).unwrap_or_default()).unwrap_or_default()
    }
}

impl serde::Serialize for Jti {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.encode(&mut [0; 22]))
    }
}

impl fmt::Display for Jti {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.encode(&mut [0; 22]))
    }
}

impl fmt::Debug for Jti {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Jti({self})")
    }
}

/// A token lifetime in seconds, between 1 second and 10 minutes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ttl(u64);

impl Ttl {
    /// The longest lifetime any handoff token may have.
    pub const MAX_SECS: u64 = 600;

    /// Checks a lifetime.
    ///
    /// # Errors
    ///
    /// Zero, or over [`Ttl::MAX_SECS`].
    pub fn from_secs(secs: u64) -> Result<Self, ValueError> {
        if (1..=Self::MAX_SECS).contains(&secs) {
            Ok(Self(secs))
        } else {
            Err(ValueError::new("a token lifetime", "is 1 to 600 seconds"))
        }
    }

    /// The lifetime in seconds.
    pub const fn as_secs(self) -> u64 {
        self.0
    }
}

/// The clock-skew allowance of the verifier, 0 to 60 seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leeway(u64);

impl Leeway {
    /// Checks a leeway.
    ///
    /// # Errors
    ///
    /// Over 60 seconds: a wide leeway silently lengthens every token's life.
    pub fn from_secs(secs: u64) -> Result<Self, ValueError> {
        if secs <= 60 {
            Ok(Self(secs))
        } else {
            Err(ValueError::new("a clock-skew leeway", "is 0 to 60 seconds"))
        }
    }

    /// The leeway in seconds.
    pub const fn as_secs(self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_ids() {
        for ok in ["partner", "a", "r2-d2_x", &"a".repeat(32)] {
            assert!(is_short_id(ok, 32), "{ok}");
        }
        for bad in ["", "-x", "_x", "Partner", "a b", "a.b", &"a".repeat(33)] {
            assert!(!is_short_id(bad, 32), "{bad}");
        }
    }

    #[test]
    fn party_urls() {
        for good in [
            "http://localhost:8002",
            "https://partner.example",
            "https://partner.example/tenant-7",
            "http://127.0.0.1:8001",
        ] {
            assert!(Audience::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "partner.example",
            "ftp://partner.example",
            "https://partner.example/",
            "https://Partner.example",
            "HTTPS://partner.example",
            "https://partner.example:443",
            "https://user:pw@partner.example",
            "https://partner.example?x=1",
            "https://partner.example#frag",
            "https://partner.example/a/../b",
            "javascript:alert(1)",
            &format!("https://{}.example", "a".repeat(260)),
        ] {
            assert!(Audience::parse(bad).is_err(), "{bad}");
            assert!(Issuer::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn subjects_and_sessions() {
        assert!(Subject::parse("u_AbC-12.x:y").is_ok());
        for bad in ["", "has space", "é", "a/b", &"a".repeat(129)] {
            assert!(Subject::parse(bad).is_err(), "{bad}");
        }
        assert!(SessionRef::parse("abc_-").is_ok());
        assert!(SessionRef::parse("a.b").is_err());
    }

    #[test]
    fn jti_round_trip_and_rejects() {
        let rng = SystemRandom::new();
        let jti = Jti::generate(&rng).expect("rng");
        let text = jti.to_string();
        assert_eq!(text.len(), 22);
        assert_eq!(Jti::parse(&text).expect("parse"), jti);
        for bad in [
            "",
            "short",
            &"A".repeat(23),
            "AAAAAAAAAAAAAAAAAAAAA=",
            "AAAAAAAAAAAAAAAAAAAAA+",
            "AAAAAAAAAAAAAAAAAAAAAB",
        ] {
            assert!(Jti::parse(bad).is_err(), "{bad}");
        }
        let json = serde_json::to_string(&jti).expect("serialise");
        let back: Jti = serde_json::from_str(&json).expect("deserialise");
        assert_eq!(back, jti);
        assert!(serde_json::from_str::<Jti>("\"nope\"").is_err());
    }

    #[test]
    fn nonce_rules() {
        let nonce = Nonce::generate(&SystemRandom::new()).expect("rng");
        assert!(Nonce::parse(nonce.as_str()).is_ok());
        assert!(Nonce::parse("short").is_err());
        assert!(Nonce::parse(&"a".repeat(65)).is_err());
    }

    #[test]
    fn bounded_durations() {
        assert!(Ttl::from_secs(0).is_err());
        assert!(Ttl::from_secs(601).is_err());
        assert_eq!(Ttl::from_secs(60).expect("ttl").as_secs(), 60);
        assert!(Leeway::from_secs(61).is_err());
        assert!(Leeway::from_secs(0).is_ok());
    }

    #[test]
    fn serde_goes_through_the_checks() {
        assert!(serde_json::from_str::<Audience>("\"https://ok.example\"").is_ok());
        assert!(serde_json::from_str::<Audience>("\"https://ok.example/\"").is_err());
        assert!(serde_json::from_str::<Subject>("\"bad subject\"").is_err());
    }
}
