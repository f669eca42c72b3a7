//! SERVER2's configuration: `SERVER2_*` environment variables, read once into typed values.
//! Start-up fails once, naming every bad variable and what it expects.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use handoff::protocol::JWKS_PATH;
use handoff::{Audience, Clock, Issuer, Leeway, SystemClock, Ttl};
use handoff_web::config::{is_https_or_loopback, public_url_problems};

/// Where the issuer's public keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeysFrom {
    /// Fetched from the issuer's JWKS URL, cached, refreshed on an unknown `kid`.
    Url(url::Url),
    /// A pinned JWKS file; no network at all.
    File(PathBuf),
    /// A secret shared with the issuer: its tokens are HS256, checked with this file's bytes.
    Secret(PathBuf),
}

impl KeysFrom {
    /// The algorithm the issuer's tokens must use: fixed by where the keys come from.
    pub fn alg(&self) -> handoff::Alg {
        match self {
            Self::Url(_) | Self::File(_) => handoff::Alg::EdDsa,
            Self::Secret(_) => handoff::Alg::Hs256,
        }
    }
}

/// Where SERVER2 keeps the ids of used tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplayStoreSetting {
    /// In this process (the default): one SERVER2 per audience.
    Memory,
    /// In Redis, shared by every replica serving the audience.
    Redis(RedisUrl),
}

/// Whether SERVER2 accepts tokens that carry no browser nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnboundHandoffs {
    /// Accept them: for clients that are not browsers, or an issuer that cannot bind. A token
    /// an attacker minted for their own account, posted from their page, then signs a victim's
    /// browser in as the attacker (session swap); see docs/security.md.
    Accept,
    /// Accept only tokens bound to the browser that presents them by the nonce cookie this
    /// server set (the default: every handoff, also those started on the portal, passes
    /// through `/handoff/start` first).
    Refuse,
}

pub use handoff_web::CookieSecurity;

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Where `/metrics` is served: its own listener, loopback by default.
    pub metrics_listen: SocketAddr,
    /// SERVER2's public URL: the only `aud` it accepts.
    pub public_url: Audience,
    /// The issuers it trusts, each with its keys and operations; the first is the primary one
    /// (where `/handoff/start` sends browsers). Never empty.
    pub issuers: Vec<IssuerConfig>,
    /// Shortest time between two JWKS fetches triggered by unknown `kid`s.
    pub jwks_refresh_interval: Duration,
    /// Longest a JWKS fetch may take, connection included.
    pub jwks_timeout: Duration,
    /// Bounds on how long the issuer's `Cache-Control: max-age` may keep a key set.
    pub jwks_cache_bounds: (Duration, Duration),
    /// How long keys the issuer has not confirmed (no good fetch) stay trusted.
    pub jwks_max_stale: Duration,
    /// Clock-skew allowance.
    pub leeway: Leeway,
    /// Longest token lifetime accepted (`exp - iat`).
    pub max_token_lifetime: Ttl,
    /// How long an operation cookie lasts.
    pub grant_ttl: Ttl,
    /// Bound on the in-memory replay store.
    pub replay_capacity: usize,
    /// Where used token ids are kept.
    pub replay_store: ReplayStoreSetting,
    /// Longest a request to a shared replay store may take, connecting included.
    pub replay_timeout: Duration,
    /// File with the operation-cookie HMAC key (≥ 32 bytes); random per process when absent.
    pub cookie_key_file: Option<PathBuf>,
    /// Cookie attributes.
    pub cookies: CookieSecurity,
    /// Whether tokens without a browser nonce are accepted (refused by default).
    pub unbound_handoffs: UnboundHandoffs,
    /// Whether signatures of handoffs served at the same moment are checked together
    /// (`SERVER2_SIGNATURE_BATCHES`, on by default; see `batch.rs`).
    pub signature_batches: bool,
    /// A help page linked from the operation pages (another site; no Referer is sent to it).
    pub help_url: Option<url::Url>,
    /// Most log lines a second for refusals of tokens whose signature never held (garbage
    /// anyone can send); the rest are counted in a summary line. Metrics count every refusal.
    pub unsigned_refusal_logs_per_sec: u32,
    /// Proxies whose `Forwarded` / `X-Forwarded-For` headers name the client (for logs); none
    /// by default.
    pub trusted_proxies: TrustedProxies,
    /// The clock.
    pub clock: Arc<dyn Clock>,
}

pub use handoff_web::config::{ConfigError, EnvConfig};
use handoff_web::env::Vars;
use handoff_web::TrustedProxies;

pub use crate::issuers::IssuerConfig;
pub use crate::replay_redis::RedisUrl;

impl Config {
    /// The primary issuer: the only one, or the first of the issuers file.
    pub fn primary(&self) -> &IssuerConfig {
        &self.issuers[0]
    }
}

impl EnvConfig for Config {
    const PREFIX: &'static str = "SERVER2_";

    fn from_raw(raw: Vars) -> Result<Self, ConfigError> {
        let mut errors: Vec<String> = Vec::new();
        macro_rules! check {
            ($var:literal, $expected:expr, $value:expr) => {
                match $value {
                    Some(v) => Some(v),
                    None => {
                        errors.push(format!("SERVER2_{}: expected {}", $var, $expected));
                        None
                    }
                }
            };
        }
        let secs = |v: Option<&str>, default: u64| {
            v.unwrap_or("").trim().parse::<u64>().ok().or(if v.is_none() {
                Some(default)
            } else {
                None
            })
        };

        let listen = check!(
            "LISTEN",
            "an IP address and port, e.g. 127.0.0.1:8002",
            raw.get("listen").unwrap_or("127.0.0.1:8002").parse::<SocketAddr>().ok()
        );
        let metrics_listen = check!(
            "METRICS_LISTEN",
            "an IP address and port for /metrics, e.g. 127.0.0.1:9002",
            raw.get("metrics_listen").unwrap_or("127.0.0.1:9002").parse::<SocketAddr>().ok()
        );
        let public_url = check!(
            "PUBLIC_URL",
            "this server's public base URL, e.g. https://partner.example",
            Audience::parse(raw.get("public_url").unwrap_or("http://localhost:8002")).ok()
        );
        let issuer = check!(
            "ISSUER",
            "the issuer's public URL exactly as it writes `iss`, e.g. https://portal.example",
            Issuer::parse(raw.get("issuer").unwrap_or("http://127.0.0.1:8001")).ok()
        );
        let keys_from = match (
            raw.get("jwks_file").filter(|s| !s.is_empty()),
            raw.get("jwks_url").filter(|s| !s.is_empty()),
            raw.get("issuer_secret_file").filter(|s| !s.is_empty()),
        ) {
            (Some(_), Some(_), _) | (Some(_), _, Some(_)) | (_, Some(_), Some(_)) => {
                errors.push(
                    "SERVER2_JWKS_FILE, SERVER2_JWKS_URL and SERVER2_ISSUER_SECRET_FILE: expected at most one of them".into(),
                );
                None
            }
            (Some(file), None, None) => Some(KeysFrom::File(PathBuf::from(file))),
            (None, None, Some(file)) => Some(KeysFrom::Secret(PathBuf::from(file))),
            (None, url, None) => {
                let url = match (url, &issuer) {
                    (Some(u), _) => url::Url::parse(u).ok(),
                    (None, Some(iss)) => url::Url::parse(&iss.join(JWKS_PATH)).ok(),
                    (None, None) => None,
                };
                let url = url.filter(is_https_or_loopback);
                check!(
                    "JWKS_URL",
                    "an https:// URL of the issuer's JWKS (http only on loopback)",
                    url
                )
                .map(KeysFrom::Url)
            }
        };
        // The issuers file replaces the single-issuer variables; it cannot be mixed with them.
        let issuers_file = raw.get("issuers_file").filter(|s| !s.is_empty());
        let issuers = match issuers_file {
            Some(file) => {
                let short =
                    ["issuer", "jwks_url", "jwks_file", "issuer_secret_file", "issuer_target_id"];
                let mixed: Vec<String> = short
                    .iter()
                    .filter(|v| raw.get(v).is_some_and(|s| !s.is_empty()))
                    .map(|v| format!("SERVER2_{}", v.to_uppercase()))
                    .collect();
                if !mixed.is_empty() {
                    errors.push(format!(
                        "SERVER2_ISSUERS_FILE: expected alone; also set: {} (put those in the file)",
                        mixed.join(", ")
                    ));
                    None
                } else {
                    match crate::issuers::load_file(std::path::Path::new(file)) {
                        Ok(list) => Some(list),
                        Err(e) => {
                            errors.push(format!("SERVER2_ISSUERS_FILE: {e}"));
                            None
                        }
                    }
                }
            }
            None => None,
        };
        let jwks_refresh = check!(
            "JWKS_REFRESH_SECS",
            "1 to 3600 seconds",
            secs(raw.get("jwks_refresh_secs"), 30).filter(|s| (1..=3600).contains(s))
        );
        let jwks_timeout = check!(
            "JWKS_TIMEOUT_SECS",
            "1 to 60 seconds",
            secs(raw.get("jwks_timeout_secs"), 5).filter(|s| (1..=60).contains(s))
        );
        let cache_low = check!(
            "JWKS_MIN_CACHE_SECS",
            "1 to 86400 seconds",
            secs(raw.get("jwks_min_cache_secs"), 60).filter(|s| (1..=86_400).contains(s))
        );
        let cache_high = check!(
            "JWKS_MAX_CACHE_SECS",
            "1 to 86400 seconds, not below SERVER2_JWKS_MIN_CACHE_SECS",
            secs(raw.get("jwks_max_cache_secs"), 3600)
                .filter(|s| (1..=86_400).contains(s) && cache_low.is_none_or(|low| *s >= low))
        );
        let max_stale = check!(
            "JWKS_MAX_STALE_SECS",
            "60 to 604800 seconds, not below SERVER2_JWKS_MAX_CACHE_SECS",
            secs(raw.get("jwks_max_stale_secs"), 86_400).filter(|s| {
                (60..=604_800).contains(s) && cache_high.is_none_or(|high| *s >= high)
            })
        );
        let leeway = check!(
            "LEEWAY_SECS",
            "0 to 60 seconds",
            secs(raw.get("leeway_secs"), 5).and_then(|s| Leeway::from_secs(s).ok())
        );
        let max_lifetime = check!(
            "MAX_TOKEN_LIFETIME_SECS",
            "1 to 600 seconds",
            secs(raw.get("max_token_lifetime_secs"), 120).and_then(|s| Ttl::from_secs(s).ok())
        );
        let grant_ttl = check!(
            "GRANT_TTL_SECS",
            "1 to 600 seconds",
            secs(raw.get("grant_ttl_secs"), 600).and_then(|s| Ttl::from_secs(s).ok())
        );
        let replay_capacity = check!(
            "REPLAY_CAPACITY",
            "1000 to 100000000 entries",
            secs(raw.get("replay_capacity"), 1_000_000)
                .filter(|n| (1000..=100_000_000).contains(n))
                .map(|n| n as usize)
        );
        let cookies = check!(
            "INSECURE_COOKIES",
            "true or false",
            CookieSecurity::from_setting(raw.get("insecure_cookies"))
        );
        if let Some(url) = &public_url {
            errors.extend(public_url_problems("SERVER2_", url.as_str(), cookies));
        }
        let unbound = check!(
            "UNBOUND_HANDOFFS",
            "accept or refuse",
            match raw.get("unbound_handoffs").unwrap_or("refuse") {
                "accept" => Some(UnboundHandoffs::Accept),
                "refuse" => Some(UnboundHandoffs::Refuse),
                _ => None,
            }
        );
        let batches = check!(
            "SIGNATURE_BATCHES",
            "on or off",
            match raw.get("signature_batches").unwrap_or("on") {
                "on" => Some(true),
                "off" => Some(false),
                _ => None,
            }
        );
        let target_id = check!(
            "ISSUER_TARGET_ID",
            "this server's target id in the issuer's targets file (a-z 0-9 - _, up to 32, starting with a letter or digit)",
            Some(raw.get("issuer_target_id").unwrap_or("partner").to_owned())
                .filter(|id| handoff::values::is_short_id(id, 32))
        );
        let help_url = match raw.get("help_url").filter(|s| !s.is_empty()) {
            None => Some(None),
            Some(u) => check!(
                "HELP_URL",
                "an absolute https:// URL (http only on loopback)",
                url::Url::parse(u).ok().filter(is_https_or_loopback).map(Some)
            ),
        };
        let unsigned_refusal_logs = check!(
            "UNSIGNED_REFUSAL_LOGS_PER_SEC",
            "0 to 1000000 log lines a second",
            secs(raw.get("unsigned_refusal_logs_per_sec"), 100)
                .and_then(|n| u32::try_from(n).ok())
                .filter(|n| *n <= 1_000_000)
        );
        let cookie_key_file =
            raw.get("cookie_key_file").filter(|s| !s.is_empty()).map(PathBuf::from);
        let replay_store = check!(
            "REPLAY_STORE",
            "memory, or the redis:// or rediss:// URL of the replay store the replicas share",
            match raw.get("replay_store").unwrap_or("memory") {
                "memory" => Some(ReplayStoreSetting::Memory),
                url => RedisUrl::parse(url).ok().map(ReplayStoreSetting::Redis),
            }
        );
        let trusted_proxies = check!(
            "TRUSTED_PROXIES",
            "a comma-separated list of addresses or CIDRs",
            TrustedProxies::parse(raw.get("trusted_proxies").unwrap_or("")).ok()
        );
        let replay_timeout = check!(
            "REPLAY_TIMEOUT_MS",
            "10 to 10000 milliseconds",
            secs(raw.get("replay_timeout_ms"), 500).filter(|ms| (10..=10_000).contains(ms))
        );

        // The short form: one issuer from the single-issuer variables.
        let issuers = match (issuers_file, issuers) {
            (Some(_), found) => found,
            (None, _) => match (&issuer, &keys_from, &target_id) {
                (Some(issuer), Some(keys_from), Some(target_id)) => Some(vec![IssuerConfig {
                    issuer: issuer.clone(),
                    keys_from: keys_from.clone(),
                    target_id: target_id.clone(),
                    operations: None,
                }]),
                _ => None,
            },
        };
        let (
            Some(listen),
            Some(metrics_listen),
            Some(public_url),
            Some(issuers),
            Some(refresh),
            Some(leeway),
            Some(max_token_lifetime),
            Some(grant_ttl),
            Some(replay_capacity),
            Some(cookies),
            Some(unbound_handoffs),
            Some(signature_batches),
            Some(help_url),
            Some(jwks_timeout),
            Some(cache_low),
            Some(cache_high),
            Some(max_stale),
            Some(unsigned_refusal_logs_per_sec),
            Some(replay_store),
            Some(replay_timeout),
            Some(trusted_proxies),
        ) = (
            listen,
            metrics_listen,
            public_url,
            issuers,
            jwks_refresh,
            leeway,
            max_lifetime,
            grant_ttl,
            replay_capacity,
            cookies,
            unbound,
            batches,
            help_url,
            jwks_timeout,
            cache_low,
            cache_high,
            max_stale,
            unsigned_refusal_logs,
            replay_store,
            replay_timeout,
            trusted_proxies,
        )
        else {
            return Err(ConfigError(errors));
        };
        if !errors.is_empty() {
            return Err(ConfigError(errors));
        }
        Ok(Self {
            listen,
            metrics_listen,
            public_url,
            issuers,
            jwks_refresh_interval: Duration::from_secs(refresh),
            jwks_timeout: Duration::from_secs(jwks_timeout),
            jwks_cache_bounds: (Duration::from_secs(cache_low), Duration::from_secs(cache_high)),
            jwks_max_stale: Duration::from_secs(max_stale),
            leeway,
            max_token_lifetime,
            grant_ttl,
            replay_capacity,
            replay_store,
            replay_timeout: Duration::from_millis(replay_timeout),
            cookie_key_file,
            cookies,
            unbound_handoffs,
            signature_batches,
            help_url,
            unsigned_refusal_logs_per_sec,
            trusted_proxies,
            clock: Arc::new(SystemClock),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_serve_the_demo() {
        let c = Config::from_pairs([]).expect("defaults");
        assert_eq!(c.listen.to_string(), "127.0.0.1:8002");
        assert_eq!(c.public_url.as_str(), "http://localhost:8002");
        assert_eq!(c.primary().issuer.as_str(), "http://127.0.0.1:8001");
        assert_eq!(
            c.primary().keys_from,
            KeysFrom::Url(
                url::Url::parse("http://127.0.0.1:8001/.well-known/jwks.json").expect("url")
            )
        );
        assert_eq!(c.cookies, CookieSecurity::Secure);
        assert_eq!(c.unbound_handoffs, UnboundHandoffs::Refuse, "browser handoffs are bound");
        assert!(c.signature_batches);
        assert!(
            !Config::from_pairs([("signature_batches", "off")]).expect("off").signature_batches
        );
        assert_eq!(c.replay_store, ReplayStoreSetting::Memory);
        assert_eq!(c.replay_timeout, Duration::from_millis(500));
    }

    #[test]
    fn the_replay_store_setting() {
        let c = Config::from_pairs([("replay_store", "redis://127.0.0.1:6379/0")]).expect("redis");
        assert!(matches!(c.replay_store, ReplayStoreSetting::Redis(_)));
        for (var, value) in [
            ("replay_store", "redis"),
            ("replay_store", "http://cache.example"),
            ("replay_store", "redis://:s3cret@"),
            ("replay_timeout_ms", "5"),
            ("replay_timeout_ms", "10001"),
        ] {
            let err = Config::from_pairs([(var, value)]).unwrap_err().to_string();
            assert!(err.contains(&format!("SERVER2_{}", var.to_uppercase())), "{value}: {err}");
            assert!(!err.contains("s3cret"), "{err}");
        }
    }

    #[test]
    fn pinned_file_and_bad_values() {
        let c = Config::from_pairs([("jwks_file", "/etc/handoff/jwks.json")]).expect("file");
        assert_eq!(c.primary().keys_from, KeysFrom::File("/etc/handoff/jwks.json".into()));
        let err = Config::from_pairs([
            ("listen", "x"),
            ("metrics_listen", "x"),
            ("public_url", "http://partner.example"),
            ("issuer", "portal"),
            ("leeway_secs", "600"),
            ("max_token_lifetime_secs", "0"),
            ("replay_capacity", "5"),
            ("insecure_cookies", "yes"),
            ("jwks_refresh_secs", "-1"),
            ("unbound_handoffs", "sometimes"),
            ("signature_batches", "yes"),
            ("issuer_target_id", "Partner!"),
            ("help_url", "javascript:alert(1)"),
            ("trusted_proxies", "not-an-address"),
        ])
        .unwrap_err()
        .to_string();
        for var in [
            "LISTEN",
            "METRICS_LISTEN",
            "PUBLIC_URL",
            "ISSUER",
            "LEEWAY_SECS",
            "MAX_TOKEN_LIFETIME_SECS",
            "REPLAY_CAPACITY",
            "INSECURE_COOKIES",
            "JWKS_REFRESH_SECS",
            "JWKS_URL",
            "UNBOUND_HANDOFFS",
            "SIGNATURE_BATCHES",
            "ISSUER_TARGET_ID",
            "HELP_URL",
            "TRUSTED_PROXIES",
        ] {
            assert!(err.contains(&format!("SERVER2_{var}")), "{var}: {err}");
        }
        assert!(
            Config::from_pairs([("jwks_file", "a"), ("jwks_url", "https://x.example/j")]).is_err()
        );
        let c = Config::from_pairs([("issuer_secret_file", "/etc/handoff/portal.secret")])
            .expect("secret");
        assert_eq!(c.primary().keys_from, KeysFrom::Secret("/etc/handoff/portal.secret".into()));
        assert_eq!(c.primary().keys_from.alg(), handoff::Alg::Hs256);
        for other in [("jwks_file", "a"), ("jwks_url", "https://x.example/j")] {
            let err =
                Config::from_pairs([("issuer_secret_file", "s"), other]).unwrap_err().to_string();
            assert!(err.contains("SERVER2_ISSUER_SECRET_FILE"), "{err}");
        }
        assert!(Config::from_pairs([("jwks_url", "http://portal.example/jwks.json")]).is_err());
        // Bounds and their relations, each refused with its own variable.
        for (var, value) in [
            ("jwks_timeout_secs", "0"),
            ("jwks_timeout_secs", "61"),
            ("jwks_min_cache_secs", "0"),
            ("jwks_max_stale_secs", "59"),
            ("jwks_max_stale_secs", "604801"),
            ("grant_ttl_secs", "601"),
            ("unsigned_refusal_logs_per_sec", "1000001"),
            ("unsigned_refusal_logs_per_sec", "-1"),
        ] {
            let err = Config::from_pairs([(var, value)]).unwrap_err().to_string();
            assert!(
                err.contains(&format!("SERVER2_{}", var.to_uppercase())),
                "{var}={value}: {err}"
            );
        }
        let err =
            Config::from_pairs([("jwks_min_cache_secs", "600"), ("jwks_max_cache_secs", "60")])
                .unwrap_err()
                .to_string();
        assert!(err.contains("SERVER2_JWKS_MAX_CACHE_SECS"), "{err}");
        // Insecure cookies only for a public URL on loopback.
        let err = Config::from_pairs([
            ("public_url", "https://partner.example"),
            ("insecure_cookies", "true"),
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("SERVER2_INSECURE_COOKIES"), "{err}");
        assert!(
            Config::from_pairs([("insecure_cookies", "true")]).is_ok(),
            "the default is loopback"
        );
        // The same rule as SERVER1's target ids: a leading `-` could never name a target there.
        let base =
            [("issuer", "https://portal.example"), ("public_url", "https://partner.example")];
        assert!(
            Config::from_pairs(base.into_iter().chain([("issuer_target_id", "-partner")])).is_err()
        );
        assert!(
            Config::from_pairs(base.into_iter().chain([("issuer_target_id", "partner-2")])).is_ok()
        );
    }
}
