//! Password hashing with argon2id (OWASP's parameters: 19 MiB, 2 passes, 1 lane), salted from
//! ring's system random source.
//!
//! Checking a sign-in for a user that does not exist runs the same argon2 work against a dummy
//! hash, so the answer's timing does not reveal which user names exist.

use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::Argon2;
use ring::rand::{SecureRandom, SystemRandom};

/// Shortest password accepted for new users.
pub const MIN_PASSWORD_LEN: usize = 8;
/// Longest password accepted (argon2 would take more, but a bound keeps requests small).
pub const MAX_PASSWORD_LEN: usize = 1024;

/// Why a password was not hashed.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    /// Too short or too long.
    #[error("a password is 8 to 1024 characters")]
    Policy,
    /// The hasher failed (randomness or argon2 itself).
    #[error("cannot hash password")]
    Hash,
}

/// Hashes and checks passwords.
#[derive(Debug)]
pub struct Passwords {
    argon: Argon2<'static>,
    dummy_hash: String,
}

impl Passwords {
    /// A hasher with the default argon2id parameters.
    ///
    /// # Errors
    ///
    /// When the dummy hash cannot be made (randomness failing).
    pub fn new() -> Result<Self, PasswordError> {
        let argon = Argon2::default();
        let mut this = Self { argon, dummy_hash: String::new() };
        this.dummy_hash = this.hash("dummy password for unknown users")?;
        Ok(this)
    }

    /// Hashes a new password.
    ///
    /// # Errors
    ///
    /// [`PasswordError::Policy`] for a password of the wrong length.
    pub fn hash(&self, password: &str) -> Result<String, PasswordError> {
        if !(MIN_PASSWORD_LEN..=MAX_PASSWORD_LEN).contains(&password.chars().count()) {
            return Err(PasswordError::Policy);
        }
        let mut salt = [0u8; 16];
        SystemRandom::new().fill(&mut salt).map_err(|_| PasswordError::Hash)?;
        let salt = SaltString::encode_b64(&salt).map_err(|_| PasswordError::Hash)?;
        let hash = self
            .argon
            .hash_password(password.as_bytes(), &salt)
            .map_err(|_| PasswordError::Hash)?;
        Ok(hash.to_string())
    }

    /// True when `password` matches `stored`. With `stored` absent (unknown user) it does the
    /// same work against a dummy hash and answers false.
    pub fn verify(&self, password: &str, stored: Option<&str>) -> bool {
        let password = if password.len() > MAX_PASSWORD_LEN { "" } else { password };
        let (hash, real) = match stored {
            Some(h) => (h, true),
            None => (self.dummy_hash.as_str(), false),
        };
        let Ok(parsed) = PasswordHash::new(hash) else {
            return false;
        };
        let matches = self.argon.verify_password(password.as_bytes(), &parsed).is_ok();
        matches && real
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_and_verify() {
        let p = Passwords::new().expect("hasher");
        let hash = p.hash("correct horse").expect("hash");
        assert!(hash.starts_with("$argon2id$"));
        assert!(p.verify("correct horse", Some(&hash)));
        assert!(!p.verify("wrong horse", Some(&hash)));
        assert!(!p.verify("correct horse", None));
        assert!(!p.verify("dummy password for unknown users", None));
        assert!(!p.verify("x", Some("not a hash")));
        assert!(matches!(p.hash("short"), Err(PasswordError::Policy)));
        assert!(matches!(p.hash(&"x".repeat(1025)), Err(PasswordError::Policy)));
    }
}
