//! How both servers read their configuration, and the rules both follow.

use crate::env::Vars;

/// Everything wrong with a configuration, one line per variable.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n  {}", .0.join("\n  "))]
pub struct ConfigError(pub Vec<String>);

/// A server's configuration: read once from the `PREFIX*` variables of the environment as text
/// ([`Vars`]), then turned into typed values by [`EnvConfig::from_raw`], which names every bad
/// variable at once.
pub trait EnvConfig: Sized {
    /// The variables' prefix, e.g. `SERVER1_`.
    const PREFIX: &'static str;
    /// Typed values from the raw text, or every problem.
    ///
    /// # Errors
    ///
    /// One line per bad variable, naming it and what it expects.
    fn from_raw(raw: Vars) -> Result<Self, ConfigError>;

    /// Reads the `PREFIX*` variables of the process environment. Not envy's `from_env`: it
    /// panics on any non-UTF-8 variable in the environment.
    ///
    /// # Errors
    ///
    /// Every variable with a bad value, each named with what it expects.
    fn from_env() -> Result<Self, ConfigError> {
        let raw = crate::env::read_prefixed(Self::PREFIX).map_err(|e| ConfigError(vec![e]))?;
        Self::from_raw(raw)
    }

    /// Reads `(name, value)` pairs, names without the prefix (tests build configurations this
    /// way instead of setting process variables).
    ///
    /// # Errors
    ///
    /// As [`EnvConfig::from_env`].
    fn from_pairs<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, ConfigError> {
        Self::from_raw(crate::env::read_pairs(pairs))
    }
}

/// True when `url`'s host is `localhost` or a loopback address: where plain http and
/// development settings are allowed.
pub fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// True when `url` may be used as written: `https://`, or `http://` on loopback only.
pub fn is_https_or_loopback(url: &url::Url) -> bool {
    url.scheme() == "https" || (url.scheme() == "http" && is_loopback(url))
}

/// What a server's public URL (`PREFIX_PUBLIC_URL`) and `PREFIX_INSECURE_COOKIES` together
/// break: plain http off loopback, and insecure cookies off loopback. One message per broken
/// rule, naming the variable, for the configuration's error list.
pub fn public_url_problems(
    prefix: &str,
    public_url: &str,
    cookies: Option<crate::cookies::CookieSecurity>,
) -> Vec<String> {
    let loopback = url::Url::parse(public_url).ok().is_some_and(|u| is_loopback(&u));
    let mut problems = Vec::new();
    if public_url.starts_with("http://") && !loopback {
        problems.push(format!(
            "{prefix}PUBLIC_URL: expected an https:// URL (plain http is allowed only on loopback addresses)"
        ));
    }
    if cookies == Some(crate::cookies::CookieSecurity::InsecureDevelopment) && !loopback {
        problems.push(format!(
            "{prefix}INSECURE_COOKIES: expected false when {prefix}PUBLIC_URL is not a loopback address (insecure cookies are for local development only)"
        ));
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cookies::CookieSecurity;

    #[test]
    fn plain_http_and_insecure_cookies_only_on_loopback() {
        let dev = Some(CookieSecurity::InsecureDevelopment);
        assert!(public_url_problems("S_", "http://localhost:1", dev).is_empty());
        assert!(public_url_problems("S_", "http://[::1]:1", dev).is_empty());
        assert!(
            public_url_problems("S_", "https://x.example", Some(CookieSecurity::Secure)).is_empty()
        );
        let both = public_url_problems("S_", "http://x.example", dev);
        assert_eq!(both.len(), 2, "{both:?}");
        assert!(both[0].starts_with("S_PUBLIC_URL") && both[1].starts_with("S_INSECURE_COOKIES"));
        assert!(!is_https_or_loopback(&url::Url::parse("http://x.example").expect("url")));
        assert!(is_https_or_loopback(&url::Url::parse("http://127.0.0.1:9").expect("url")));
    }
}
