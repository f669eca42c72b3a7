//! Ed25519 signing keys, their public JWK form and the JWKS document.
//!
//! A signing key lives on disk as a PKCS#8 document (mode 0600), is parsed once into a ring key
//! pair and is identified everywhere by its RFC 7638 thumbprint, which doubles as the JWS `kid`.
//! Verifiers receive only [`PublicJwk`]s inside a [`Jwks`]; [`KeySet`] turns one into the lookup
//! table the verifier uses.

use std::collections::HashMap;
use std::fmt;
use std::io::Write;
use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::DecodingKey;
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde::{Deserialize, Serialize};

/// Length in characters of a base64url SHA-256 thumbprint.
const THUMBPRINT_LEN: usize = 43;
/// Largest key set a verifier accepts; a JWKS is a handful of keys, never hundreds.
pub const MAX_JWKS_KEYS: usize = 32;

/// Why key material was refused.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file could not be read or written.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being attempted.
        action: &'static str,
        /// The file concerned.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The bytes are not an Ed25519 PKCS#8 document.
    #[error("{0} is not an Ed25519 PKCS#8 private key")]
    NotEd25519Pkcs8(String),
    /// The private key file can be read by other users.
    #[error("{0} is readable by other users (mode {1:o}); run `chmod 600` on it")]
    TooOpen(String, u32),
    /// The system random number generator failed.
    #[error("the system random number generator failed")]
    Random,
    /// A JWK or JWKS document is not what this profile accepts.
    #[error("invalid JWKS: {0}")]
    InvalidJwks(String),
    /// A shared secret is too short, too long or not random.
    #[error("secret {0} {1}")]
    WeakSecret(String, String),
}

/// The one signature algorithm an issuer's tokens are checked with: fixed by configuration per
/// issuer (or per partner), never taken from a token's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Alg {
    /// Ed25519 (RFC 8037): the issuer's key pair, its public half in a JWKS. The default.
    #[default]
    EdDsa,
    /// HMAC-SHA-256 with a secret both sides hold.
    Hs256,
}

impl Alg {
    /// The name in a JOSE header.
    pub const fn name(self) -> &'static str {
        match self {
            Self::EdDsa => "EdDSA",
            Self::Hs256 => "HS256",
        }
    }

    /// The algorithm named `name` exactly (`EdDSA` or `HS256`).
    pub fn parse(name: &str) -> Option<Self> {
        [Self::EdDsa, Self::Hs256].into_iter().find(|a| a.name() == name)
    }

    pub(crate) const fn jwt(self) -> jsonwebtoken::Algorithm {
        match self {
            Self::EdDsa => jsonwebtoken::Algorithm::EdDSA,
            Self::Hs256 => jsonwebtoken::Algorithm::HS256,
        }
    }
}

impl fmt::Display for Alg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A key id: the RFC 7638 SHA-256 thumbprint of the public key, base64url without padding.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Kid(String);

impl Kid {
    /// Parses a key id as it appears in a JWS header or a JWKS.
    ///
    /// # Errors
    ///
    /// Anything other than 43 base64url characters.
    pub fn parse(value: &str) -> Result<Self, KeyError> {
        if value.len() == THUMBPRINT_LEN && value.bytes().all(is_base64url_byte) {
            Ok(Self(value.to_owned()))
        } else {
            Err(KeyError::InvalidJwks("a kid is 43 base64url characters".into()))
        }
    }

    /// The key id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id under which a key set holds a shared secret (HS256 tokens carry no `kid`; the
    /// issuer has exactly one secret). Not a thumbprint, so no JWKS key can ever have it.
    pub fn shared_secret() -> Self {
        Self("shared-secret".to_owned())
    }
}

impl TryFrom<String> for Kid {
    type Error = KeyError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<Kid> for String {
    fn from(kid: Kid) -> Self {
        kid.0
    }
}

impl fmt::Debug for Kid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Kid({})", self.0)
    }
}

impl fmt::Display for Kid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

pub(crate) fn is_base64url_byte(b: u8) -> bool {
    BASE64URL[usize::from(b)]
}

/// Which bytes are in the base64url alphabet: a table, since tokens are scanned byte by byte.
static BASE64URL: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric() || c == b'-' || c == b'_';
        b += 1;
    }
    table
};

/// RFC 7638 thumbprint over a key's required members, given as (name, value) pairs.
///
/// The members are sorted by name and serialised without whitespace, as §3 requires; values are
/// JSON-escaped by serde, which matters only for keys this crate did not make.
pub fn thumbprint(members: &[(&str, &str)]) -> String {
    let mut sorted: Vec<_> = members.to_vec();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let mut canonical = String::from("{");
    for (i, (name, value)) in sorted.iter().enumerate() {
        if i > 0 {
            canonical.push(',');
        }
        // Serialising a &str cannot fail.
        canonical.push_str(&serde_json::to_string(name).unwrap_or_default());
        canonical.push(':');
        canonical.push_str(&serde_json::to_string(value).unwrap_or_default());
    }
    canonical.push('}');
    let digest = ring::digest::digest(&ring::digest::SHA256, canonical.as_bytes());
    URL_SAFE_NO_PAD.encode(digest.as_ref())
}

fn ed25519_kid(public: &[u8]) -> Kid {
    let x = URL_SAFE_NO_PAD.encode(public);
    Kid(thumbprint(&[("crv", "Ed25519"), ("kty", "OKP"), ("x", &x)]))
}

/// An Ed25519 private key, parsed once. Its `Debug` output never shows key material.
pub struct SigningKey {
    pair: Ed25519KeyPair,
    pkcs8: Vec<u8>,
    kid: Kid,
}

impl SigningKey {
    /// Generates a new key from the system's secure random source.
    ///
    /// # Errors
    ///
    /// Only when the random source fails.
    pub fn generate() -> Result<Self, KeyError> {
        let rng = SystemRandom::new();
        let doc = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| KeyError::Random)?;
        Self::from_pkcs8(doc.as_ref(), "generated key")
    }

    /// Parses a PKCS#8 document (v1, or v2 whose public key must match the private one).
    ///
    /// # Errors
    ///
    /// When the bytes are not an Ed25519 PKCS#8 private key; `origin` names it in the message.
    pub fn from_pkcs8(der: &[u8], origin: &str) -> Result<Self, KeyError> {
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
            .map_err(|_| KeyError::NotEd25519Pkcs8(origin.to_owned()))?;
        let kid = ed25519_kid(pair.public_key().as_ref());
        Ok(Self { pair, pkcs8: der.to_vec(), kid })
    }

    /// Loads a key file written by [`SigningKey::save`].
    ///
    /// # Errors
    ///
    /// When the file is missing or unreadable, readable by group or others, or not a key.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let shown = path.display().to_string();
        let der = std::fs::read(path).map_err(|source| KeyError::Io {
            action: "cannot read signing key",
            path: shown.clone(),
            source,
        })?;
        check_private_mode(path, &shown)?;
        Self::from_pkcs8(&der, &shown)
    }

    /// Writes the key as PKCS#8 DER to a new file with mode 0600. Never overwrites a file.
    ///
    /// # Errors
    ///
    /// When the file exists or cannot be created.
    pub fn save(&self, path: &Path) -> Result<(), KeyError> {
        let shown = path.display().to_string();
        let io = |action| {
            let shown = shown.clone();
            move |source| KeyError::Io { action, path: shown, source }
        };
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        // Write to a temporary name and rename, so a crash never leaves half a key behind.
        let mut suffix = [0u8; 6];
        ring::rand::SecureRandom::fill(&SystemRandom::new(), &mut suffix)
            .map_err(|_| KeyError::Random)?;
        let tmp = path.with_extension(format!("tmp-{}", URL_SAFE_NO_PAD.encode(suffix)));
        let mut file = options.open(&tmp).map_err(io("cannot create key file"))?;
        let written = file.write_all(&self.pkcs8).and_then(|()| file.sync_all());
        if let Err(source) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(io("cannot write key file")(source));
        }
        // A hard link fails when the target exists: an existing key is never replaced.
        let linked = std::fs::hard_link(&tmp, path);
        let _ = std::fs::remove_file(&tmp);
        linked.map_err(io("cannot move key file into place (does it already exist?)"))
    }

    /// The key's id (its RFC 7638 thumbprint).
    pub fn kid(&self) -> &Kid {
        &self.kid
    }

    /// The raw 32-byte Ed25519 public key.
    pub fn public_key_bytes(&self) -> &[u8] {
        self.pair.public_key().as_ref()
    }

    /// The public half as a JWK.
    pub fn public_jwk(&self) -> PublicJwk {
        PublicJwk {
            kty: "OKP".into(),
            crv: "Ed25519".into(),
            x: URL_SAFE_NO_PAD.encode(self.public_key_bytes()),
            kid: Some(self.kid.to_string()),
            alg: Some("EdDSA".into()),
            key_use: Some("sig".into()),
        }
    }

    /// The PKCS#8 document, for tests that sign the way a third-party implementation would.
    /// Only with the `danger-test-signers` feature: no server can read its key's bytes back.
    #[cfg(any(test, feature = "danger-test-signers"))]
    pub fn pkcs8_for_tests(&self) -> &[u8] {
        &self.pkcs8
    }

    /// Signs `message` with the already-parsed key pair. Tokens are made by
    /// [`crate::Minter`]; this is for tools and fuzzing that need raw signatures.
    pub fn sign(&self, message: &[u8]) -> ring::signature::Signature {
        self.pair.sign(message)
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey").field("kid", &self.kid).finish_non_exhaustive()
    }
}

#[cfg(unix)]
pub(crate) fn check_private_mode(path: &Path, shown: &str) -> Result<(), KeyError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|source| KeyError::Io {
        action: "cannot inspect key file",
        path: shown.to_owned(),
        source,
    })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyError::TooOpen(shown.to_owned(), mode));
    }
    Ok(())
}

#[cfg(not(unix))]
pub(crate) fn check_private_mode(_: &Path, _: &str) -> Result<(), KeyError> {
    Ok(())
}

/// A public key as published in the JWKS (RFC 7517, with the OKP key type of RFC 8037).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicJwk {
    /// Key type; this profile publishes only `OKP`.
    pub kty: String,
    /// Curve; this profile publishes only `Ed25519`.
    #[serde(default)]
    pub crv: String,
    /// The public key, base64url.
    #[serde(default)]
    pub x: String,
    /// The key id. Ours is the RFC 7638 thumbprint; other key types in a set may carry any id,
    /// so it is checked only for the keys this profile uses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// The algorithm the key is for (`EdDSA`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    /// Intended use (`sig`).
    #[serde(default, rename = "use", skip_serializing_if = "Option::is_none")]
    pub key_use: Option<String>,
}

impl PublicJwk {
    /// This key's RFC 7638 thumbprint, computed from its members (not read from `kid`).
    pub fn thumbprint(&self) -> String {
        thumbprint(&[("crv", &self.crv), ("kty", &self.kty), ("x", &self.x)])
    }
}

/// A JWK Set document (RFC 7517 §5), as served at `/.well-known/jwks.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwks {
    /// The keys.
    pub keys: Vec<PublicJwk>,
}

impl Jwks {
    /// Parses and checks a JWKS document.
    ///
    /// # Errors
    ///
    /// When the bytes are not a JWKS, hold more than [`MAX_JWKS_KEYS`] keys, or no usable key.
    pub fn parse(bytes: &[u8]) -> Result<Self, KeyError> {
        let jwks: Jwks =
            serde_json::from_slice(bytes).map_err(|e| KeyError::InvalidJwks(e.to_string()))?;
        if jwks.keys.len() > MAX_JWKS_KEYS {
            return Err(KeyError::InvalidJwks(format!("more than {MAX_JWKS_KEYS} keys")));
        }
        Ok(jwks)
    }
}

/// A public key ready for the verifier: its id and the decoded key, built once per JWKS load.
#[derive(Clone)]
pub struct VerificationKey {
    kid: Kid,
    alg: Alg,
    decoding: DecodingKey,
    /// An Ed25519 key, decoded for [`crate::ed25519`]; `None` for a shared secret.
    ed25519: Option<crate::ed25519::PublicKey>,
}

impl VerificationKey {
    /// The key id.
    pub fn kid(&self) -> &Kid {
        &self.kid
    }

    /// The one algorithm this key verifies.
    pub fn alg(&self) -> Alg {
        self.alg
    }

    pub(crate) fn decoding(&self) -> &DecodingKey {
        &self.decoding
    }

    pub(crate) fn ed25519(&self) -> Option<&crate::ed25519::PublicKey> {
        self.ed25519.as_ref()
    }
}

impl fmt::Debug for VerificationKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerificationKey").field("kid", &self.kid).finish_non_exhaustive()
    }
}

/// The issuer's public keys by id: what the verifier looks a `kid` up in.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    keys: HashMap<Kid, VerificationKey>,
}

impl KeySet {
    /// Builds a key set from a JWKS, checking every key this profile can use.
    ///
    /// Keys of other types (`kty` other than `OKP`, curves other than `Ed25519`) are skipped, as
    /// RFC 7517 §5 asks; an Ed25519 key that is malformed, meant for another use or algorithm, or
    /// whose `kid` is not its thumbprint makes the whole document invalid.
    ///
    /// # Errors
    ///
    /// As above, and when no usable key remains.
    pub fn from_jwks(jwks: &Jwks) -> Result<Self, KeyError> {
        let mut keys = HashMap::new();
        for jwk in &jwks.keys {
            if jwk.kty != "OKP" || jwk.crv != "Ed25519" {
                continue;
            }
            let bad = |why: &str| KeyError::InvalidJwks(why.to_owned());
            if jwk.key_use.as_deref().is_some_and(|u| u != "sig") {
                return Err(bad("an Ed25519 key has a `use` other than `sig`"));
            }
            if jwk.alg.as_deref().is_some_and(|a| a != "EdDSA") {
                return Err(bad("an Ed25519 key has an `alg` other than `EdDSA`"));
            }
            let raw: [u8; 32] = URL_SAFE_NO_PAD
                .decode(jwk.x.as_bytes())
                .ok()
                .and_then(|raw| raw.try_into().ok())
                .ok_or_else(|| bad("an Ed25519 `x` must be 32 bytes of base64url"))?;
            let kid = ed25519_kid(&raw);
            if jwk.kid.as_deref().is_some_and(|k| k != kid.as_str()) {
                return Err(bad("a `kid` is not the RFC 7638 thumbprint of its key"));
            }
            let decoding = DecodingKey::from_ed_der(&raw);
            let ed25519 = Some(crate::ed25519::PublicKey::new(raw));
            let key = VerificationKey { kid: kid.clone(), alg: Alg::EdDsa, decoding, ed25519 };
            keys.insert(kid, key);
        }
        if keys.is_empty() {
            return Err(KeyError::InvalidJwks("no Ed25519 signing key in the set".into()));
        }
        Ok(Self { keys })
    }

    /// A set holding one shared secret, for an issuer whose tokens are HS256: it verifies HS256
    /// only, under [`Kid::shared_secret`].
    pub fn shared_secret(secret: &crate::secret::SharedSecret) -> Self {
        let kid = Kid::shared_secret();
        let key = VerificationKey {
            kid: kid.clone(),
            alg: Alg::Hs256,
            decoding: secret.decoding().clone(),
            ed25519: None,
        };
        Self { keys: HashMap::from([(kid, key)]) }
    }

    /// The algorithm of the set's keys (a set never mixes them).
    pub fn alg(&self) -> Alg {
        self.keys.values().next().map_or(Alg::EdDsa, VerificationKey::alg)
    }

    /// The key with this id, if the set has it.
    pub fn get(&self, kid: &str) -> Option<&VerificationKey> {
        self.keys.get(kid)
    }

    /// How many keys the set holds.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// The ids of the keys, sorted.
    pub fn kids(&self) -> impl Iterator<Item = &str> {
        let mut kids: Vec<&str> = self.keys.keys().map(Kid::as_str).collect();
        kids.sort_unstable();
        kids.into_iter()
    }

    /// True when the set holds no key (never the case for one built by [`KeySet::from_jwks`]).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

impl std::borrow::Borrow<str> for Kid {
    fn borrow(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 8037 Appendix A.1 (private key), A.3 (thumbprint) and A.4 (signature).
    const RFC8037_D: &str = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A";
    const RFC8037_X: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
    const RFC8037_KID: &str = "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k";
    const RFC8037_INPUT: &str = "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc";
    const RFC8037_SIG: &str =
        "hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg";

    /// A PKCS#8 v1 document (RFC 8410) around a raw Ed25519 seed.
    pub(crate) fn pkcs8_from_seed(seed: &[u8]) -> Vec<u8> {
        let mut der = vec![
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20,
        ];
        der.extend_from_slice(seed);
        der
    }

    fn rfc8037_key() -> SigningKey {
        let seed = URL_SAFE_NO_PAD.decode(RFC8037_D).expect("vector");
        SigningKey::from_pkcs8(&pkcs8_from_seed(&seed), "rfc8037").expect("vector key")
    }

    #[test]
    fn rfc8037_public_key_and_thumbprint() {
        let key = rfc8037_key();
        let jwk = key.public_jwk();
        assert_eq!(jwk.x, RFC8037_X);
        assert_eq!(key.kid().as_str(), RFC8037_KID);
        assert_eq!(jwk.thumbprint(), RFC8037_KID);
    }

    #[test]
    fn rfc8037_signature() {
        let sig = rfc8037_key().sign(RFC8037_INPUT.as_bytes());
        assert_eq!(URL_SAFE_NO_PAD.encode(sig.as_ref()), RFC8037_SIG);
    }

    #[test]
    fn rfc7638_thumbprint_example() {
        let n = concat!(
            "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_B",
            "JECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_",
            "FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhA",
            "I4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
        );
        let tp = thumbprint(&[("kty", "RSA"), ("n", n), ("e", "AQAB")]);
        assert_eq!(tp, "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
    }

    #[test]
    fn save_is_0600_and_never_overwrites() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("signing.pk8");
        let key = SigningKey::generate().expect("generate");
        key.save(&path).expect("save");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let loaded = SigningKey::load(&path).expect("load");
        assert_eq!(loaded.kid(), key.kid());
        let again = SigningKey::generate().expect("generate");
        assert!(matches!(again.save(&path), Err(KeyError::Io { .. })));
        assert_eq!(SigningKey::load(&path).expect("still there").kid(), key.kid());
    }

    #[test]
    fn load_refuses_missing_garbage_and_open_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("nope.pk8");
        assert!(matches!(SigningKey::load(&missing), Err(KeyError::Io { .. })));
        let garbage = dir.path().join("garbage.pk8");
        std::fs::write(&garbage, b"not a key").expect("write");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&garbage, std::fs::Permissions::from_mode(0o600))
                .expect("chmod");
            assert!(matches!(SigningKey::load(&garbage), Err(KeyError::NotEd25519Pkcs8(_))));
            let open = dir.path().join("open.pk8");
            SigningKey::generate().expect("generate").save(&open).expect("save");
            std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).expect("chmod");
            assert!(matches!(SigningKey::load(&open), Err(KeyError::TooOpen(_, 0o644))));
        }
    }

    #[test]
    fn debug_never_shows_key_material() {
        let key = rfc8037_key();
        let shown = format!("{key:?}");
        assert!(shown.contains(RFC8037_KID));
        assert!(!shown.contains(RFC8037_D));
    }

    #[test]
    fn jwks_round_trip() {
        let key = rfc8037_key();
        let jwks = Jwks { keys: vec![key.public_jwk()] };
        let text = serde_json::to_string(&jwks).expect("serialise");
        assert_eq!(
            text,
            format!(
                r#"{{"keys":[{{"kty":"OKP","crv":"Ed25519","x":"{RFC8037_X}","kid":"{RFC8037_KID}","alg":"EdDSA","use":"sig"}}]}}"#
            )
        );
        let parsed = Jwks::parse(text.as_bytes()).expect("parse");
        assert_eq!(parsed, jwks);
        let set = KeySet::from_jwks(&parsed).expect("key set");
        assert!(set.get(RFC8037_KID).is_some());
    }

    #[test]
    fn key_set_rejects_bad_keys() {
        let good = rfc8037_key().public_jwk();
        type Edit = Box<dyn Fn(&mut PublicJwk)>;
        let cases: Vec<(&str, Edit)> = vec![
            ("short x", Box::new(|k| k.x = "AAAA".into())),
            ("not base64", Box::new(|k| k.x = "!".repeat(43))),
            ("wrong kid", Box::new(|k| k.kid = Some("A".repeat(43)))),
            ("free-form kid", Box::new(|k| k.kid = Some("key-2024".into()))),
            ("enc use", Box::new(|k| k.key_use = Some("enc".into()))),
            ("other alg", Box::new(|k| k.alg = Some("ES256".into()))),
        ];
        for (name, mutate) in cases {
            let mut jwk = good.clone();
            mutate(&mut jwk);
            let err = KeySet::from_jwks(&Jwks { keys: vec![jwk] });
            assert!(matches!(err, Err(KeyError::InvalidJwks(_))), "{name}");
        }
        assert!(KeySet::from_jwks(&Jwks::default()).is_err(), "empty set");
        // Keys of other types, with ids of any shape and members this type lacks, are skipped.
        let mixed = format!(
            r#"{{"keys":[{{"kty":"RSA","kid":"rsa-2024","n":"AQAB","e":"AQAB","use":"sig"}},
                {{"kty":"EC","crv":"P-256","kid":"ec 1","x":"a","y":"b"}},{}]}}"#,
            serde_json::to_string(&good).expect("json")
        );
        let set = KeySet::from_jwks(&Jwks::parse(mixed.as_bytes()).expect("parse")).expect("set");
        assert_eq!(set.len(), 1);
    }

    #[test]
    fn jwks_parse_rejects_garbage_and_huge_sets() {
        assert!(Jwks::parse(b"not json").is_err());
        assert!(Jwks::parse(b"{\"keys\": 3}").is_err());
        let many = Jwks { keys: vec![rfc8037_key().public_jwk(); MAX_JWKS_KEYS + 1] };
        let text = serde_json::to_vec(&many).expect("serialise");
        assert!(Jwks::parse(&text).is_err());
    }

    #[test]
    fn kid_parse() {
        assert!(Kid::parse(RFC8037_KID).is_ok());
        for bad in
            ["", "short", &"A".repeat(44), "../../dev/null", &format!("{}=", &RFC8037_KID[..42])]
        {
            assert!(Kid::parse(bad).is_err(), "{bad}");
        }
    }
}
