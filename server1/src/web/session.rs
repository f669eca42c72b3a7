//! SERVER1's cookies: the session (an opaque id; see [`crate::accounts`]) and the pre-sign-in
//! anti-forgery value. Both HttpOnly and SameSite=Lax; `Secure` with the `__Host-` prefix unless
//! development mode says otherwise.

use handoff_web::cookies::{CookieName, SameSite};
use handoff_web::{cookie_name, Jar};
use poem::http::HeaderValue;
use poem::Request;

/// The session cookie.
pub const SESSION: CookieName = cookie_name!("handoff_session");
/// A one-use approval of one handoff, carried across the round trip through the target's
/// start URL (see `web::handoff`).
pub const APPROVAL: CookieName = cookie_name!("handoff_approval");
/// The pre-sign-in anti-forgery cookie.
pub const LOGIN: CookieName = cookie_name!("handoff_login");

/// Reads and sets SERVER1's cookies.
#[derive(Debug, Clone, Copy)]
pub struct Cookies {
    jar: Jar,
}

impl Cookies {
    /// Cookies set the way `jar` says.
    pub fn new(jar: Jar) -> Self {
        Self { jar }
    }

    /// The value of `name` in `req`.
    pub fn read(&self, req: &Request, name: CookieName) -> Option<String> {
        self.jar.read(req, name)
    }

    /// A `Set-Cookie` header for `name`; `max_age` None deletes the cookie.
    pub fn set(&self, name: CookieName, value: &str, max_age: Option<u64>) -> Option<HeaderValue> {
        self.jar.set(name, SameSite::Lax, value, max_age)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use handoff_web::CookieSecurity;

    #[test]
    fn secure_cookies_by_default() {
        let c = Cookies::new(Jar::new(CookieSecurity::Secure));
        let set = c.set(SESSION, "abc", Some(60)).expect("header");
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
        let dev = Cookies::new(Jar::new(CookieSecurity::InsecureDevelopment));
        let set = dev.set(SESSION, "abc", None).expect("header");
        let set = set.to_str().expect("ascii");
        assert!(!set.contains("Secure") && !set.contains("__Host-") && set.contains("Max-Age=0"));
    }
}
