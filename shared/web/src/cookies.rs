//! Cookies: reading them, setting them with the attributes this product always uses, their
//! names (with the `__Host-` prefix when secure), and anti-forgery tokens for forms.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use cookie::Cookie;
pub use cookie::SameSite;
use poem::http::{header, HeaderValue};
use poem::Request;
use ring::hmac;

/// Whether cookies carry the `Secure` attribute (and the `__Host-` prefix).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CookieSecurity {
    /// `Secure` and `__Host-`: the only choice for anything reachable over a network.
    Secure,
    /// Plain-HTTP development on one machine (`SERVERn_INSECURE_COOKIES=true`).
    InsecureDevelopment,
}

impl CookieSecurity {
    /// Reads an `…_INSECURE_COOKIES` setting: unset, empty, `false` or `0` is secure; `true`
    /// or `1` is development; anything else is no answer.
    pub fn from_setting(value: Option<&str>) -> Option<Self> {
        match value.unwrap_or("false") {
            "false" | "0" | "" => Some(Self::Secure),
            "true" | "1" => Some(Self::InsecureDevelopment),
            _ => None,
        }
    }
}

/// The value of cookie `name` in the request (the first one, if sent twice).
pub fn read_cookie(req: &Request, name: &str) -> Option<String> {
    req.headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == name)
        .map(|c| c.value().to_owned())
}

/// How a cookie is set.
#[derive(Debug, Clone, Copy)]
pub struct CookieAttrs {
    /// `Secure` (and the caller's `__Host-` name).
    pub secure: bool,
    /// The SameSite rule.
    pub same_site: SameSite,
}

impl CookieAttrs {
    /// A `Set-Cookie` value: HttpOnly, `Path=/`, no `Domain`; `max_age` None deletes it.
    pub fn header(&self, name: &str, value: &str, max_age: Option<u64>) -> Option<HeaderValue> {
        let age = max_age.map_or(0, |s| i64::try_from(s).unwrap_or(i64::MAX));
        let cookie = Cookie::build((name, value))
            .http_only(true)
            .secure(self.secure)
            .same_site(self.same_site)
            .path("/")
            .max_age(cookie::time::Duration::seconds(age))
            .build();
        HeaderValue::from_str(&cookie.to_string()).ok()
    }
}

/// A cookie's two names: with the `__Host-` prefix (secure: no `Domain`, `Path=/`, `Secure`,
/// so no other host can set or shadow it) and without (plain-HTTP development). Made with
/// [`cookie_name!`](crate::cookie_name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CookieName {
    secure: &'static str,
    plain: &'static str,
}

impl CookieName {
    /// Both names; use [`cookie_name!`](crate::cookie_name), which writes the prefix once.
    #[doc(hidden)]
    pub const fn new(secure: &'static str, plain: &'static str) -> Self {
        Self { secure, plain }
    }
}

/// A [`CookieName`] from its base name: `cookie_name!("handoff_session")` is
/// `__Host-handoff_session` when secure, `handoff_session` otherwise.
#[macro_export]
macro_rules! cookie_name {
    ($base:literal) => {
        $crate::cookies::CookieName::new(concat!("__Host-", $base), $base)
    };
}

/// How this deployment sets its cookies: every one HttpOnly, `Path=/`, no `Domain`; `Secure`
/// with the `__Host-` prefix unless development mode says otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Jar {
    security: CookieSecurity,
}

impl Jar {
    /// Cookies set with `security`.
    pub const fn new(security: CookieSecurity) -> Self {
        Self { security }
    }

    /// Whether cookies are `Secure`.
    pub fn is_secure(&self) -> bool {
        self.security == CookieSecurity::Secure
    }

    /// The name `name` goes by here.
    pub fn name(&self, name: CookieName) -> &'static str {
        if self.is_secure() {
            name.secure
        } else {
            name.plain
        }
    }

    /// The value of cookie `name` in `req`.
    pub fn read(&self, req: &Request, name: CookieName) -> Option<String> {
        read_cookie(req, self.name(name))
    }

    /// A `Set-Cookie` value for `name`; `max_age` None deletes it. `SameSite=None` needs
    /// `Secure`: without it (development mode) such a cookie falls back to `Lax`.
    pub fn set(
        &self,
        name: CookieName,
        same_site: SameSite,
        value: &str,
        max_age: Option<u64>,
    ) -> Option<HeaderValue> {
        let secure = self.is_secure();
        let same_site =
            if same_site == SameSite::None && !secure { SameSite::Lax } else { same_site };
        CookieAttrs { secure, same_site }.header(self.name(name), value, max_age)
    }
}

/// Appends a `Set-Cookie` header made by [`Jar::set`].
///
/// # Errors
///
/// When the cookie could not be represented as a header value (not expected: names are
/// constants and values are base64url).
pub fn add_cookie(
    resp: &mut poem::Response,
    value: Option<HeaderValue>,
) -> Result<(), UnrepresentableCookie> {
    let value = value.ok_or(UnrepresentableCookie)?;
    resp.headers_mut().append(header::SET_COOKIE, value);
    Ok(())
}

/// A cookie value that cannot be a header.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("unrepresentable cookie")]
pub struct UnrepresentableCookie;

/// Issues and checks anti-forgery tokens for forms: an HMAC-SHA256 over a purpose and the
/// context the form is bound to (a session, a grant, a pre-sign-in cookie). The one scheme both
/// servers use.
pub struct Csrf {
    key: hmac::Key,
}

impl std::fmt::Debug for Csrf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Csrf(..)")
    }
}

impl Csrf {
    /// A signer keyed with `secret` (32 bytes or more).
    pub fn new(secret: &[u8]) -> Self {
        Self { key: hmac::Key::new(hmac::HMAC_SHA256, secret) }
    }

    /// The token for forms of `purpose` bound to `context`.
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
    fn cookie_security_settings() {
        use CookieSecurity::{InsecureDevelopment, Secure};
        for (value, expected) in [
            (None, Some(Secure)),
            (Some(""), Some(Secure)),
            (Some("false"), Some(Secure)),
            (Some("0"), Some(Secure)),
            (Some("true"), Some(InsecureDevelopment)),
            (Some("1"), Some(InsecureDevelopment)),
            (Some("yes"), None),
            (Some("TRUE"), None),
        ] {
            assert_eq!(CookieSecurity::from_setting(value), expected, "{value:?}");
        }
    }

    #[test]
    fn cookies() {
        let attrs = CookieAttrs { secure: true, same_site: SameSite::Lax };
        let set = attrs.header("__Host-a", "v", Some(60)).expect("header");
        let set = set.to_str().expect("ascii");
        for part in ["__Host-a=v", "HttpOnly", "Secure", "SameSite=Lax", "Path=/", "Max-Age=60"] {
            assert!(set.contains(part), "{part}: {set}");
        }
        let gone = attrs.header("__Host-a", "", None).expect("header");
        assert!(gone.to_str().expect("ascii").contains("Max-Age=0"));
        let req = Request::builder().header("cookie", "a=1; __Host-a=2; __Host-a=3").finish();
        assert_eq!(read_cookie(&req, "__Host-a").as_deref(), Some("2"));
        assert_eq!(read_cookie(&req, "b"), None);
    }

    #[test]
    fn names_and_the_jar() {
        const SESSION: CookieName = crate::cookie_name!("handoff_session");
        let secure = Jar::new(CookieSecurity::Secure);
        assert_eq!(secure.name(SESSION), "__Host-handoff_session");
        let set = secure.set(SESSION, SameSite::None, "v", Some(5)).expect("header");
        assert!(set.to_str().expect("ascii").contains("SameSite=None"));
        let dev = Jar::new(CookieSecurity::InsecureDevelopment);
        assert_eq!(dev.name(SESSION), "handoff_session");
        let set = dev.set(SESSION, SameSite::None, "v", Some(5)).expect("header");
        let set = set.to_str().expect("ascii");
        assert!(set.contains("SameSite=Lax") && !set.contains("Secure"), "{set}");
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
