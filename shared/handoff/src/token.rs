//! The handoff token profile, v1: header and claims as types.
//!
//! ```text
//! header  {"typ":"handoff+jwt","alg":"EdDSA","kid":"<RFC 7638 thumbprint>"}
//! claims  {"iss","sub","aud","iat","nbf","exp","jti","authorization_details":[{...}],
//!          "sid"?, "nonce"?}
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
