//! Browser sessions and anti-forgery tokens.
//!
//! A session id is 256 random bits in an HttpOnly, SameSite=Lax cookie (`Secure` and `__Host-`
//! unless development mode says otherwise); the database stores only its SHA-256, so a leaked
//! database holds no usable session. Anti-forgery tokens are HMACs under a key kept in the
//! database: for a signed-in user over their session, before sign-in over a random value in a
//! separate cookie (double submit, signed).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use cookie::SameSite;
use handoff::web::CookieAttrs;
use poem::http::HeaderValue;
use ring::rand::{SecureRandom, SystemRandom};
use ring::{digest, hmac};

use crate::config::CookieSecurity;
pub use ::handoff::web::read_cookie;

/// Cookie names and attributes for this deployment.
#[derive(Debug, Clone)]
pub struct Cookies {
    attrs: CookieAttrs,
    session: &'static str,
    login: &'static str,
}

impl Cookies {
    /// Names and attributes for `security`: HttpOnly and SameSite=Lax always; `Secure` with the
    /// `__Host-` prefix unless development mode says otherwise.
    pub fn new(security: CookieSecurity) -> Self {
        let secure = security == CookieSecurity::Secure;
        let attrs = CookieAttrs { secure, same_site: SameSite::Lax };
        if secure {
            Self { attrs, session: "__Host-handoff_session", login: "__Host-handoff_login" }
        } else {
            Self { attrs, session: "handoff_session", login: "handoff_login" }
        }
    }

    /// The session cookie's name.
    pub fn session_name(&self) -> &'static str {
        self.session
    }

    /// The pre-sign-in anti-forgery cookie's name.
    pub fn login_name(&self) -> &'static str {
        self.login
    }

    /// A `Set-Cookie` header for `name`; `max_age` None deletes the cookie.
    pub fn set(
        &self,
        name: &'static str,
        value: &str,
        max_age: Option<u64>,
    ) -> Option<HeaderValue> {
        self.attrs.header(name, value, max_age)
    }
}

/// 256 random bits, base64url.
pub fn random_token() -> Option<String> {
    let mut bytes = [0u8; 32];
    SystemRandom::new().fill(&mut bytes).ok()?;
    Some(URL_SAFE_NO_PAD.encode(bytes))
}

/// What the database keeps of a session id.
pub fn session_hash(session_id: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, session_id.as_bytes()).as_ref());
    out
}

/// Issues and checks anti-forgery tokens.
#[derive(Debug)]
pub struct Csrf {
    key: hmac::Key,
}

impl Csrf {
    /// A CSRF signer with a 32-byte secret.
    pub fn new(secret: &[u8]) -> Self {
        Self { key: hmac::Key::new(hmac::HMAC_SHA256, secret) }
    }

    /// The token for forms bound to `context` (a session hash, or a login cookie value).
    pub fn token(&self, purpose: &str, context: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(hmac::sign(&self.key, &message(purpose, context)))
    }

    /// Checks a token in constant time.
    pub fn check(&self, purpose: &str, context: &[u8], token: &str) -> bool {
        match URL_SAFE_NO_PAD.decode(token) {
            Ok(tag) => hmac::verify(&self.key, &message(purpose, context), &tag).is_ok(),
            Err(_) => false,
        }
    }
}

fn message(purpose: &str, context: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(purpose.len() + 1 + context.len());
    m.extend_from_slice(purpose.as_bytes());
    m.push(0);
    m.extend_from_slice(context);
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secure_cookies_by_default() {
        let c = Cookies::new(CookieSecurity::Secure);
        let set = c.set(c.session_name(), "abc", Some(60)).expect("header");
        let set = set.to_str().expect("ascii");
        for part in [
            "__Host-handoff_session=abc",
            "HttpOnly",
            "Secure",
            "SameSite=Lax",
            "Path=/",
            "Max-Age=60",
        ] {
            assert!(set.contains(part), "{part} missing in {set}");
        }
        assert!(!set.contains("Domain"), "__Host- cookies must not have a Domain");
        let dev = Cookies::new(CookieSecurity::InsecureDevelopment);
        let set = dev.set(dev.session_name(), "abc", None).expect("header");
        let set = set.to_str().expect("ascii");
        assert!(!set.contains("Secure") && !set.contains("__Host-") && set.contains("Max-Age=0"));
    }

    #[test]
    fn csrf_tokens() {
        let csrf = Csrf::new(&[1; 32]);
        let t = csrf.token("session", b"ctx");
        assert!(csrf.check("session", b"ctx", &t));
        assert!(!csrf.check("session", b"other", &t));
        assert!(!csrf.check("login", b"ctx", &t));
        assert!(!csrf.check("session", b"ctx", ""));
        assert!(!csrf.check("session", b"ctx", "%%%"));
        assert!(!Csrf::new(&[2; 32]).check("session", b"ctx", &t));
    }
}
