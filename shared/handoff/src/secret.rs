//! Shared secrets: the HMAC keys of partners that verify with a secret instead of a public key
//! (HS256 handoff tokens, client-secret JWTs for the partner API).
//!
//! A secret lives in a file of its own, mode 0600 or stricter, holding at least
//! [`MIN_SECRET_LEN`] bytes used as they are (no trimming, no decoding: a hex or base64 string is
//! its own bytes). The file is checked like a private key: readable by others, too short, too
//! long or plainly not random (a run of one byte, a short word repeated) is refused at start-up
//! with the path and the fix. Its `Debug` output never shows the bytes.

use std::fmt;
use std::io::Write;
use std::path::Path;

use jsonwebtoken::DecodingKey;
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

use crate::keys::KeyError;

/// Fewest bytes a shared secret may have (RFC 7518 §3.2: at least the hash's size).
pub const MIN_SECRET_LEN: usize = 32;
/// Most bytes read from a secret file.
pub const MAX_SECRET_LEN: usize = 1024;
/// Fewest different byte values in a secret: a random 32-byte secret has about 30, its hex
/// form 16; `aaaa…` or `abcabc…` has a handful.
const MIN_DISTINCT_BYTES: usize = 12;

/// An HMAC-SHA-256 key shared with one partner.
pub struct SharedSecret {
    key: hmac::Key,
    decoding: DecodingKey,
    /// SHA-256 of the bytes: tells two secrets apart without keeping the bytes around.
    fingerprint: [u8; 32],
}

impl SharedSecret {
    /// A secret made of `bytes`, checked for length and variety.
    ///
    /// # Errors
    ///
    /// [`KeyError::WeakSecret`] naming the rule broken (`origin` names the source).
    pub fn from_bytes(bytes: &[u8], origin: &str) -> Result<Self, KeyError> {
        let weak = |why: String| KeyError::WeakSecret(origin.to_owned(), why);
        if bytes.len() < MIN_SECRET_LEN {
            return Err(weak(format!(
                "holds {} bytes; a shared secret needs at least {MIN_SECRET_LEN} random bytes",
                bytes.len()
            )));
        }
        if bytes.len() > MAX_SECRET_LEN {
            return Err(weak(format!("holds more than {MAX_SECRET_LEN} bytes")));
        }
        let mut seen = [false; 256];
        bytes.iter().for_each(|&b| seen[usize::from(b)] = true);
        if seen.iter().filter(|&&s| s).count() < MIN_DISTINCT_BYTES {
            return Err(weak("does not look random (too few different bytes)".into()));
        }
        let mut fingerprint = [0u8; 32];
        fingerprint.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref());
        Ok(Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, bytes),
            decoding: DecodingKey::from_secret(bytes),
            fingerprint,
        })
    }

    /// Reads a secret file: mode 0600 or stricter, then as [`SharedSecret::from_bytes`].
    ///
    /// # Errors
    ///
    /// A missing or unreadable file, one others can read, or a weak secret.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let shown = path.display().to_string();
        let io =
            |source| KeyError::Io { action: "cannot read secret", path: shown.clone(), source };
        let meta = std::fs::metadata(path).map_err(io)?;
        if meta.len() > MAX_SECRET_LEN as u64 {
            return Err(KeyError::WeakSecret(
                shown,
                format!("holds more than {MAX_SECRET_LEN} bytes"),
            ));
        }
        crate::keys::check_private_mode(path, &shown)?;
        let bytes = std::fs::read(path).map_err(io)?;
        Self::from_bytes(&bytes, &shown)
    }

    /// Writes 32 fresh random bytes to a new file with mode 0600 and returns the secret. Never
    /// overwrites a file.
    ///
    /// # Errors
    ///
    /// When the file exists or cannot be written, or randomness fails.
    pub fn create(path: &Path) -> Result<Self, KeyError> {
        let shown = path.display().to_string();
        let mut bytes = [0u8; MIN_SECRET_LEN];
        // 32 random bytes have fewer than 12 distinct values with negligible probability; draw
        // again rather than write a file the loader would refuse.
        loop {
            SystemRandom::new().fill(&mut bytes).map_err(|_| KeyError::Random)?;
            if let Ok(secret) = Self::from_bytes(&bytes, &shown) {
                let mut options = std::fs::OpenOptions::new();
                options.write(true).create_new(true);
                #[cfg(unix)]
                {
                    use std::os::unix::fs::OpenOptionsExt;
                    options.mode(0o600);
                }
                let io = |source| KeyError::Io {
                    action: "cannot create secret file",
                    path: shown.clone(),
                    source,
                };
                let mut file = options.open(path).map_err(io)?;
                file.write_all(&bytes).and_then(|()| file.sync_all()).map_err(io)?;
                return Ok(secret);
            }
        }
    }

    /// True when `other` holds the same bytes.
    pub fn same_as(&self, other: &Self) -> bool {
        self.fingerprint == other.fingerprint
    }

    /// HMAC-SHA-256 of `message` under this secret.
    pub fn sign(&self, message: &[u8]) -> hmac::Tag {
        hmac::sign(&self.key, message)
    }

    /// The key as jsonwebtoken's verifier takes it.
    pub(crate) fn decoding(&self) -> &DecodingKey {
        &self.decoding
    }
}

/// Reads a file of secret key material the way every secret file is read: mode 0600 or
/// stricter (no access for group or others), at least `min_len` and at most
/// [`MAX_SECRET_LEN`] bytes, used as they are.
///
/// # Errors
///
/// A missing or unreadable file, one others can read, or one of the wrong size; the message
/// names the file and the fix.
pub fn read_key_file(path: &Path, min_len: usize) -> Result<Vec<u8>, KeyError> {
    let shown = path.display().to_string();
    let io = |source| KeyError::Io { action: "cannot read secret", path: shown.clone(), source };
    let meta = std::fs::metadata(path).map_err(io)?;
    if meta.len() > MAX_SECRET_LEN as u64 {
        return Err(KeyError::WeakSecret(shown, format!("holds more than {MAX_SECRET_LEN} bytes")));
    }
    crate::keys::check_private_mode(path, &shown)?;
    let bytes = std::fs::read(path).map_err(io)?;
    if bytes.len() < min_len {
        return Err(KeyError::WeakSecret(
            shown,
            format!("holds {} bytes; it needs at least {min_len} random bytes", bytes.len()),
        ));
    }
    Ok(bytes)
}

impl fmt::Debug for SharedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SharedSecret(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weak_secrets_are_refused_with_the_rule() {
        let short = SharedSecret::from_bytes(b"0123456789abcdef", "s").unwrap_err().to_string();
        assert!(short.contains("at least 32"), "{short}");
        let same = SharedSecret::from_bytes(&[b'a'; 64], "s").unwrap_err().to_string();
        assert!(same.contains("does not look random"), "{same}");
        let repeated = SharedSecret::from_bytes(&b"abc".repeat(20), "s").unwrap_err();
        assert!(repeated.to_string().contains("does not look random"));
        assert!(SharedSecret::from_bytes(&[7u8; MAX_SECRET_LEN + 1], "s").is_err());
        // A hex-encoded random secret is fine: its own 64 bytes, 16 different values.
        assert!(SharedSecret::from_bytes(
            b"00112233445566778899aabbccddeeff0f1e2d3c4b5a69788796a5b4c3d2e1f0",
            "s"
        )
        .is_ok());
    }

    #[test]
    fn files_are_checked_like_private_keys() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("partner.secret");
        let made = SharedSecret::create(&path).expect("create");
        assert_eq!(std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777, 0o600);
        let loaded = SharedSecret::load(&path).expect("load");
        assert_eq!(made.sign(b"m").as_ref(), loaded.sign(b"m").as_ref());
        assert!(SharedSecret::create(&path).is_err(), "never overwrites");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        let open = SharedSecret::load(&path).unwrap_err().to_string();
        assert!(open.contains("chmod 600"), "{open}");
        assert!(SharedSecret::load(&dir.path().join("missing")).is_err());
        assert_eq!(format!("{made:?}"), "SharedSecret(..)");
    }
}
