//! One-time links (e-mail verification, password reset, a new address's confirmation): a token
//! of 256 random bits in the link, only its SHA-256 in the database — a leaked database holds no
//! link that works. Each is single use, short-lived, and only the latest one issued to an
//! account for a purpose works (the database keeps one per account and purpose).

use crate::accounts::{random_token, SessionHash};

/// A new link's token and the hash the database keeps.
#[derive(Debug)]
pub struct LinkToken {
    /// What goes into the link.
    pub token: String,
    /// What the database keeps.
    pub hash: [u8; 32],
}

impl LinkToken {
    /// A fresh token, or None when randomness failed.
    pub fn new() -> Option<Self> {
        let token = random_token()?;
        let hash = hash_of(&token);
        Some(Self { token, hash })
    }
}

/// The hash of a token from a link: the SHA-256 that session ids are kept as too.
pub fn hash_of(token: &str) -> [u8; 32] {
    *SessionHash::of(token).as_bytes()
}

/// True when `token` looks like one of ours (43 base64url characters): anything else is
/// refused before the database is asked.
pub fn is_well_formed(token: &str) -> bool {
    token.len() == 43 && token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_only_their_hash_is_kept() {
        let a = LinkToken::new().expect("random");
        let b = LinkToken::new().expect("random");
        assert_ne!(a.token, b.token);
        assert!(is_well_formed(&a.token));
        assert_eq!(a.hash, hash_of(&a.token));
        assert_ne!(a.hash[..], a.token.as_bytes()[..32]);
        for bad in ["", "short", &"a".repeat(44), &format!("{}=", "a".repeat(42))] {
            assert!(!is_well_formed(bad), "{bad:?}");
        }
    }
}
