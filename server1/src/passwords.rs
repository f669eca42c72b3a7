//! Password hashing with argon2id (OWASP's parameters: 19 MiB, 2 passes, 1 lane), salted from
//! ring's system random source.
//!
//! Checking a sign-in for a user that does not exist runs the same argon2 work against a dummy
//! hash, so the answer's timing does not reveal which user names exist.
//!
//! Every new password — added by an operator, chosen at sign-up, reset or changed — passes
//! [`check_policy`]: at least 12 characters, not the user's name or address, and not among the
//! common passwords shipped in `server1/data/common-passwords.txt`.

use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use std::sync::atomic::{AtomicU64, Ordering};

use argon2::Argon2;
use ring::rand::{SecureRandom, SystemRandom};
use tokio::sync::{Semaphore, SemaphorePermit};

/// Shortest password accepted for new users, in characters.
pub const MIN_PASSWORD_LEN: usize = 12;
/// Longest password accepted, in bytes (argon2 would take more; a bound keeps requests small).
pub const MAX_PASSWORD_LEN: usize = 1024;

/// Why a password was not hashed.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    /// The password breaks the policy; the text says how, and is safe to show (it never
    /// repeats the password).
    #[error("{0}")]
    Policy(&'static str),
    /// The hasher failed (randomness or argon2 itself).
    #[error("cannot hash password")]
    Hash,
    /// Every argon2 slot is busy: the server is overloaded (or under a sign-in flood).
    #[error("too many sign-ins at once")]
    Busy,
}

/// Hashes and checks passwords.
///
/// Each argon2 run holds 19 MiB for tens of milliseconds, so concurrent runs are bounded by a
/// semaphore (`SERVER1_PASSWORD_SLOTS`, two per CPU by default): a flood of sign-in attempts gets
/// "busy" answers, not the server's memory.
#[derive(Debug)]
pub struct Passwords {
    argon: Argon2<'static>,
    dummy_hash: String,
    slots: Semaphore,
    runs: AtomicU64,
}

impl Passwords {
    /// A hasher with the default argon2id parameters, running at most `slots` checks at once
    /// (at least one).
    ///
    /// # Errors
    ///
    /// When the dummy hash cannot be made (randomness failing).
    pub fn new(slots: usize) -> Result<Self, PasswordError> {
        let argon = Argon2::default();
        let slots = Semaphore::new(slots.max(1));
        let mut this = Self { argon, dummy_hash: String::new(), slots, runs: AtomicU64::new(0) };
        this.dummy_hash = this.hash("dummy password for unknown users")?;
        Ok(this)
    }

    /// Hashes a new password.
    ///
    /// # Errors
    ///
    /// [`PasswordError::Policy`] for a password of the wrong length.
    pub fn hash(&self, password: &str) -> Result<String, PasswordError> {
        check_length(password)?;
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
        self.runs.fetch_add(1, Ordering::Relaxed);
        let matches = self.argon.verify_password(password.as_bytes(), &parsed).is_ok();
        matches && real
    }

    /// A slot for one argon2 run, if one is free now.
    ///
    /// # Errors
    ///
    /// [`PasswordError::Busy`] when every slot is taken.
    pub fn slot(&self) -> Result<SemaphorePermit<'_>, PasswordError> {
        self.slots.try_acquire().map_err(|_| PasswordError::Busy)
    }

    /// How many argon2 verifications ran (for tests: an unknown user must cost one too).
    pub fn verifications(&self) -> u64 {
        self.runs.load(Ordering::Relaxed)
    }
}

const TOO_SHORT: &str = "a password is at least 12 characters";
const TOO_LONG: &str = "a password is at most 1024 bytes";
const PERSONAL: &str = "a password must not be your user name or e-mail address";
const COMMON: &str = "that password is among the most common ones, which attackers try first";

/// At least 12 characters, at most 1024 bytes: the bound `verify` applies too.
fn check_length(password: &str) -> Result<(), PasswordError> {
    if password.chars().count() < MIN_PASSWORD_LEN {
        return Err(PasswordError::Policy(TOO_SHORT));
    }
    if password.len() > MAX_PASSWORD_LEN {
        return Err(PasswordError::Policy(TOO_LONG));
    }
    Ok(())
}

/// Whether `password` may be set for the user called `name` with address `email`: its length,
/// then that it is neither their name, their address nor its local part, then that it is not
/// a common password or one character repeated (all compared case-insensitively).
///
/// # Errors
///
/// [`PasswordError::Policy`], saying which rule.
pub fn check_policy(password: &str, name: &str, email: Option<&str>) -> Result<(), PasswordError> {
    check_length(password)?;
    let lower = password.trim().to_lowercase();
    let personal = std::iter::once(name)
        .chain(email)
        .chain(email.and_then(|e| e.split_once('@')).map(|(local, _)| local))
        .map(str::to_lowercase);
    if personal.into_iter().any(|p| p == lower) {
        return Err(PasswordError::Policy(PERSONAL));
    }
    let mut chars = lower.chars();
    let first = chars.next();
    if chars.all(|c| Some(c) == first) || is_common(&lower) {
        return Err(PasswordError::Policy(COMMON));
    }
    Ok(())
}

/// True when `lower` (lower-cased) is on the shipped list.
fn is_common(lower: &str) -> bool {
    static LIST: std::sync::OnceLock<std::collections::HashSet<&'static str>> =
        std::sync::OnceLock::new();
    LIST.get_or_init(|| {
        include_str!("../data/common-passwords.txt")
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect()
    })
    .contains(lower)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_and_verify() {
        let p = Passwords::new(4).expect("hasher");
        let hash = p.hash("violet harbour").expect("hash");
        assert!(hash.starts_with("$argon2id$"));
        assert!(p.verify("violet harbour", Some(&hash)));
        assert!(!p.verify("wrong harbour", Some(&hash)));
        assert!(!p.verify("violet harbour", None));
        assert!(!p.verify("dummy password for unknown users", None));
        assert!(!p.verify("x", Some("not a hash")));
        // Unknown users cost an argon2 run like known ones.
        let before = p.verifications();
        p.verify("guess", Some(&hash));
        p.verify("guess", None);
        assert_eq!(p.verifications(), before + 2);
        // The length bound is the same for setting and checking: bytes, not characters.
        let long = "é".repeat(600);
        assert!(matches!(p.hash(&long), Err(PasswordError::Policy(TOO_LONG))));
        let max = "x".repeat(1024);
        assert!(p.verify(&max, Some(&p.hash(&max).expect("hash"))));
        assert!(matches!(p.hash("eleven char"), Err(PasswordError::Policy(TOO_SHORT))));
        assert!(matches!(p.hash(&"x".repeat(1025)), Err(PasswordError::Policy(TOO_LONG))));
    }

    #[test]
    fn policy() {
        let ok = |pw: &str| check_policy(pw, "alice", Some("alice.example@mail.example"));
        let reason = |pw: &str| match ok(pw) {
            Err(PasswordError::Policy(why)) => why,
            other => panic!("{pw:?}: {other:?}"),
        };
        assert!(ok("violet harbour tangent").is_ok());
        assert_eq!(reason("ünïcødé 11c"), TOO_SHORT, "characters, not bytes: 11 is too few");
        assert!(ok("ünïcødé 12ch").is_ok());
        assert_eq!(reason(&"y".repeat(1025)), TOO_LONG);
        assert_eq!(reason("ALICE.EXAMPLE@mail.example"), PERSONAL);
        assert_eq!(reason("Alice.Example"), PERSONAL, "the address's local part");
        assert!(check_policy("longusername", "longusername", None).is_err());
        for common in
            ["Password1234", "qwertyuiop123", "123456789012", "zzzzzzzzzzzzzz", "Iloveyou2024"]
        {
            assert_eq!(reason(common), COMMON, "{common:?}");
        }
        // The shipped list is read, and each entry on it is refused.
        let listed = include_str!("../data/common-passwords.txt")
            .lines()
            .filter(|l| !l.starts_with('#') && l.chars().count() >= MIN_PASSWORD_LEN)
            .count();
        assert!(listed > 1000, "{listed}");
        assert_eq!(reason("correct horse battery staple"), COMMON);
    }

    #[test]
    fn argon2_slots_are_bounded() {
        let p = Passwords::new(3).expect("hasher");
        let held: Vec<_> = (0..3).map(|_| p.slot().expect("a free slot")).collect();
        assert!(matches!(p.slot(), Err(PasswordError::Busy)), "a flood gets `busy`, not memory");
        drop(held);
        assert!(p.slot().is_ok(), "slots come back");
        let none = Passwords::new(0).expect("hasher");
        assert!(none.slot().is_ok(), "never fewer than one slot");
    }
}
