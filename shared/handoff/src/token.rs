//! The handoff token profile, v1: header and claims as types.
//!
//! ```text
//! header  {"typ":"handoff+jwt","alg":"EdDSA","kid":"<RFC 7638 thumbprint>"}
//! claims  {"iss","sub","aud","iat","nbf","exp","jti","authorization_details":[{...}],
//!          "sid"?, "nonce"?, "name"?, "email"?, "email_verified"?, "groups"?}
//! ```
//!
//! Claims are strict: every required claim present exactly once, nothing unknown, times as
//! non-negative integers, `aud` one string, exactly one authorization detail.

use serde::de::{SeqAccess, Visitor};
use serde::ser::SerializeSeq;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::operation::Operation;
use crate::time::UnixTime;
use crate::values::{Audience, Issuer, Jti, Nonce, SessionRef, Subject};

/// The `typ` header of a handoff token (explicit typing, RFC 8725 §3.11).
pub const HANDOFF_TYP: &str = "handoff+jwt";
/// Longest token accepted, in bytes; longer input is refused before any parsing.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// True when `bytes` could be a compact token: base64url characters and dots only, so it needs no
/// percent-decoding in a form or query string. A cheap screen, not a check of the shape.
pub fn is_token_text(bytes: &[u8]) -> bool {
    bytes.iter().all(|&b| b == b'.' || crate::keys::is_base64url_byte(b))
}

/// The claims as they are written by the minter (borrowing, so minting copies nothing).
#[derive(Serialize)]
pub(crate) struct ClaimsOut<'a> {
    pub iss: &'a Issuer,
    pub sub: &'a Subject,
    pub aud: &'a Audience,
    pub iat: UnixTime,
    pub nbf: UnixTime,
    pub exp: UnixTime,
    pub jti: Jti,
    #[serde(serialize_with = "serialize_one")]
    pub authorization_details: &'a Operation,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sid: Option<&'a SessionRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nonce: Option<&'a Nonce>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email_verified: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub groups: Option<&'a [String]>,
}

/// Profile claims about the user (OpenID Connect's names), for targets whose policy lists them:
/// only the listed ones are ever set. Each is checked on the way in, like every claim.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    /// How the user is shown ("Alice Example"): 1 to 80 characters, no control characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The user's e-mail address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Whether the user proved they read that address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email_verified: Option<bool>,
    /// The user's groups (the issuer's roles): short ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups: Option<Vec<String>>,
}

/// Longest display name, in characters.
pub const MAX_NAME_CHARS: usize = 80;
/// Most groups a token may carry.
pub const MAX_GROUPS: usize = 64;

impl Profile {
    /// No claims at all.
    pub const NONE: Self = Self { name: None, email: None, email_verified: None, groups: None };

    /// True when it sets no claim.
    pub fn is_empty(&self) -> bool {
        *self == Self::NONE
    }

    /// True when every claim it sets is well formed: a name of 1 to 80 characters without
    /// control characters, an address of at most 254 bytes with one `@` and no spaces or
    /// controls, at most 64 groups of short ids.
    pub fn is_valid(&self) -> bool {
        let name_ok = self.name.as_deref().is_none_or(is_display_name);
        let email_ok = self.email.as_deref().is_none_or(|e| {
            e.len() <= 254
                && e.bytes().filter(|&b| b == b'@').count() == 1
                && !e.starts_with('@')
                && !e.ends_with('@')
                && !e.chars().any(|c| c.is_control() || c.is_whitespace())
        });
        let groups_ok = self.groups.as_deref().is_none_or(|g| {
            g.len() <= MAX_GROUPS && g.iter().all(|g| crate::values::is_short_id(g, 32))
        });
        name_ok && email_ok && groups_ok
    }
}

/// True for a display name: 1 to 80 characters, not blank, no control characters and no
/// invisible formatting ones (direction overrides and isolates, zero-width characters, the soft
/// hyphen, the byte-order mark) with which one name could pass for another.
pub fn is_display_name(name: &str) -> bool {
    let chars = name.chars().count();
    (1..=MAX_NAME_CHARS).contains(&chars)
        && !name.trim().is_empty()
        && !name.chars().any(|c| c.is_control() || is_invisible_format(c))
}

/// Unicode format characters (category Cf) that change how text looks without being seen.
fn is_invisible_format(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{061C}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}'
            | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFB}'
    )
}

/// The claims as they are read by the verifier, after the signature has been checked.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ClaimsIn {
    /// Compared byte for byte with the one configured issuer, which was validated when the
    /// verifier was set up, so an exact match needs no URL parsing here.
    pub iss: String,
    pub sub: Subject,
    /// Compared byte for byte with this party's configured audience, like `iss`.
    pub aud: String,
    pub iat: UnixTime,
    pub nbf: UnixTime,
    pub exp: UnixTime,
    pub jti: Jti,
    #[serde(deserialize_with = "deserialize_one")]
    pub authorization_details: Operation,
    #[serde(default)]
    pub sid: Option<SessionRef>,
    #[serde(default)]
    pub nonce: Option<Nonce>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub email_verified: Option<bool>,
    #[serde(default)]
    pub groups: Option<Vec<String>>,
}

impl ClaimsIn {
    /// The profile claims it carries.
    pub fn profile(&self) -> Profile {
        Profile {
            name: self.name.clone(),
            email: self.email.clone(),
            email_verified: self.email_verified,
            groups: self.groups.clone(),
        }
    }
}

/// The protected header as the verifier reads it: these three members and nothing else, so
/// `crit`, `jku`, `x5u`, `jwk`, `b64` and friends are refused rather than ignored.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HeaderIn {
    pub alg: String,
    #[serde(default)]
    pub typ: Option<String>,
    #[serde(default)]
    pub kid: Option<String>,
}

fn serialize_one<S: Serializer>(op: &&Operation, serializer: S) -> Result<S::Ok, S::Error> {
    let mut seq = serializer.serialize_seq(Some(1))?;
    seq.serialize_element(*op)?;
    seq.end()
}

fn deserialize_one<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Operation, D::Error> {
    struct One;

    impl<'de> Visitor<'de> for One {
        type Value = Operation;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an array holding exactly one authorization detail")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Operation, A::Error> {
            use serde::de::Error;
            let first = seq
                .next_element::<Operation>()?
                .ok_or_else(|| A::Error::invalid_length(0, &self))?;
            if seq.next_element::<serde::de::IgnoredAny>()?.is_some() {
                return Err(A::Error::custom("more than one authorization detail"));
            }
            Ok(first)
        }
    }

    deserializer.deserialize_seq(One)
}
