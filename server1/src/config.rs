//! SERVER1's configuration: read once from `SERVER1_*` environment variables, turned into typed
//! values, and checked as a whole so that start-up fails once, naming every bad variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use handoff::{Clock, Issuer, SystemClock, Ttl};

use crate::accounts::AccountSettings;
use crate::db::{DatabaseUrl, PoolSettings};
use crate::mail::{MailTransport, SmtpUrl};
use crate::throttle::MailLimits;
use handoff_web::config::public_url_problems;
use handoff_web::TrustedProxies;

pub use handoff_web::CookieSecurity;

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Where `/metrics` is served: its own listener, loopback by default.
    pub metrics_listen: SocketAddr,
    /// Most log lines a second for refused requests nobody authenticated (a form without its
    /// token, a link to nothing); the rest are summed up, and metrics count all.
    pub refusal_logs_per_sec: u32,
    /// SERVER1's public URL: the `iss` of every token.
    pub public_url: Issuer,
    /// The database: a SQLite file, or PostgreSQL.
    pub database: DatabaseUrl,
    /// The PostgreSQL pool's size and timeouts.
    pub database_pool: PoolSettings,
    /// Directory holding the signing key.
    pub keys_dir: PathBuf,
    /// The targets registry (TOML).
    pub targets_file: PathBuf,
    /// Lifetime of handoff tokens.
    pub token_ttl: Ttl,
    /// Lifetime of a sign-in session, in seconds.
    pub session_ttl_secs: u64,
    /// Cookie attributes.
    pub cookies: CookieSecurity,
    /// How many argon2 password checks may run at once (each holds 19 MiB); sign-ins beyond
    /// that are answered 503.
    pub password_slots: usize,
    /// Proxies whose `Forwarded` / `X-Forwarded-For` headers name the client (for the sign-in
    /// throttle and logs); none by default.
    pub trusted_proxies: TrustedProxies,
    /// Sign-up, verified addresses and mail limits.
    pub accounts: AccountSettings,
    /// How mail is sent, and its links.
    pub mail: MailSettings,
    /// The apps registered for the API (`SERVER1_CLIENTS_FILE`; a missing file registers none).
    pub clients_file: PathBuf,
    /// Token lifetimes of the API.
    pub oauth: crate::oauth::OAuthSettings,
    /// The clock (tests pass a manual one).
    pub clock: Arc<dyn Clock>,
}

/// How SERVER1 sends mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailSettings {
    /// SMTP (`SERVER1_SMTP_URL`), or files in `SERVER1_MAIL_DIR`.
    pub transport: MailTransport,
    /// The sender (`SERVER1_MAIL_FROM`).
    pub from: String,
    /// Certificates of authorities to trust for the SMTP server besides the system's
    /// (`SERVER1_SMTP_CA_FILE`, PEM): a mail server with a private CA.
    pub smtp_ca_file: Option<PathBuf>,
    /// Lifetime of verification links (`SERVER1_VERIFY_LINK_TTL_SECS`).
    pub verify_ttl_secs: u64,
    /// Lifetime of reset links (`SERVER1_RESET_LINK_TTL_SECS`).
    pub reset_ttl_secs: u64,
}

/// The default sender when mail goes to files: fine for the demo, and SMTP needs a real one.
pub const DEFAULT_MAIL_FROM: &str = "Handoff Portal <no-reply@localhost>";

/// `raw`'s `name` as a whole number within `range`, or `default`; on anything else, `fail`
/// is told what was expected.
fn number_in(
    raw: &Vars,
    name: &str,
    default: u64,
    range: std::ops::RangeInclusive<u64>,
    expected: &str,
    fail: &mut impl FnMut(&str, &str),
) -> Result<u64, ()> {
    match raw.get(name) {
        None => Ok(default),
        Some(value) => value
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|n| range.contains(n))
            .ok_or_else(|| fail(&name.to_ascii_uppercase(), expected)),
    }
}

/// The account and mail settings.
fn accounts_and_mail(
    raw: &Vars,
    fail: &mut impl FnMut(&str, &str),
) -> Result<(AccountSettings, MailSettings), ()> {
    let signup_open = match raw.get("signup").map(str::trim) {
        None | Some("closed") => Ok(false),
        Some("open") => Ok(true),
        Some(_) => {
            fail("SIGNUP", "open or closed");
            Err(())
        }
    };
    let require_verified_email = match raw.get("require_verified_email").map(str::trim) {
        None | Some("true" | "1") => Ok(true),
        Some("false" | "0") => Ok(false),
        Some(_) => {
            fail("REQUIRE_VERIFIED_EMAIL", "true or false");
            Err(())
        }
    };
    let signup_roles = raw
        .get("signup_roles")
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(crate::names::Role::parse)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| fail("SIGNUP_ROLES", "a comma-separated list of roles (a-z 0-9 - _)"));
    let per_address =
        number_in(raw, "mail_limit_per_address", 5, 1..=1000, "1 to 1000 messages an hour", fail);
    let per_client = number_in(
        raw,
        "mail_limit_per_client",
        20,
        1..=100_000,
        "1 to 100000 messages an hour",
        fail,
    );
    let verify_ttl_secs = number_in(
        raw,
        "verify_link_ttl_secs",
        86_400,
        300..=604_800,
        "300 to 604800 seconds",
        fail,
    );
    let reset_ttl_secs =
        number_in(raw, "reset_link_ttl_secs", 1800, 300..=86_400, "300 to 86400 seconds", fail);
    let transport = match raw.get("smtp_url").filter(|v| !v.trim().is_empty()) {
        Some(url) => SmtpUrl::parse(url.trim()).map(MailTransport::Smtp).map_err(|why| {
            fail(
                "SMTP_URL",
                &format!("smtp://[USER:PASSWORD@]HOST[:PORT][?tls=starttls] or smtps://… ({why})"),
            )
        }),
        None => non_empty_path(raw.get("mail_dir").unwrap_or(".demo/mail"))
            .map(MailTransport::Dir)
            .map_err(|()| fail("MAIL_DIR", "a directory path")),
    };
    let from = match (raw.get("mail_from"), &transport) {
        (Some(from), _) => from
            .trim()
            .parse::<lettre::message::Mailbox>()
            .map(|_| from.trim().to_owned())
            .map_err(|_| {
                fail("MAIL_FROM", "a sender such as \"Handoff Portal <no-reply@portal.example>\"")
            }),
        (None, Ok(MailTransport::Smtp(_))) => {
            fail("MAIL_FROM", "the sender of the portal's mail, required with SERVER1_SMTP_URL");
            Err(())
        }
        (None, _) => Ok(DEFAULT_MAIL_FROM.to_owned()),
    };
    let smtp_ca_file = match raw.get("smtp_ca_file").map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(path) => non_empty_path(path)
            .map(Some)
            .map_err(|()| fail("SMTP_CA_FILE", "the path of a PEM file of CA certificates")),
    };
    let accounts = AccountSettings {
        signup_open: signup_open?,
        signup_roles: signup_roles?,
        require_verified_email: require_verified_email?,
        mail_limits: MailLimits {
            per_address: u32::try_from(per_address?).map_err(drop)?,
            per_client: u32::try_from(per_client?).map_err(drop)?,
        },
    };
    let mail = MailSettings {
        transport: transport?,
        from: from?,
        smtp_ca_file: smtp_ca_file?,
        verify_ttl_secs: verify_ttl_secs?,
        reset_ttl_secs: reset_ttl_secs?,
    };
    Ok((accounts, mail))
}

pub use handoff_web::config::{ConfigError, EnvConfig};
use handoff_web::env::Vars;

/// The most argon2 runs at once that `SERVER1_PASSWORD_SLOTS` allows (19 GiB of memory).
pub const MAX_PASSWORD_SLOTS: usize = 1024;

/// The default for `SERVER1_PASSWORD_SLOTS`: two argon2 runs at once per CPU.
pub fn default_password_slots() -> usize {
    2 * std::thread::available_parallelism().map_or(1, usize::from)
}

/// Default public URL and listen address: what `make demo` serves.
pub const DEFAULT_PUBLIC_URL: &str = "http://127.0.0.1:8001";

impl EnvConfig for Config {
    const PREFIX: &'static str = "SERVER1_";

    fn from_raw(raw: Vars) -> Result<Self, ConfigError> {
        let mut errors = Vec::new();
        let mut fail = |var: &str, expected: &str| {
            errors.push(format!("SERVER1_{var}: expected {expected}"));
        };

        let listen = raw.get("listen").unwrap_or("127.0.0.1:8001");
        let listen = listen.parse::<SocketAddr>().map_err(|_| {
            fail("LISTEN", "an IP address and port, e.g. 127.0.0.1:8001 or [::]:8001")
        });
        let metrics_listen = raw
            .get("metrics_listen")
            .unwrap_or("127.0.0.1:9001")
            .parse::<SocketAddr>()
            .map_err(|_| {
                fail("METRICS_LISTEN", "an IP address and port for /metrics, e.g. 127.0.0.1:9001")
            });
        let refusal_logs_per_sec = match raw.get("refusal_logs_per_sec") {
            None => Ok(100),
            Some(v) => v
                .trim()
                .parse::<u32>()
                .ok()
                .filter(|n| *n <= 1_000_000)
                .ok_or_else(|| fail("REFUSAL_LOGS_PER_SEC", "0 to 1000000 log lines a second")),
        };
        let public_url = Issuer::parse(raw.get("public_url").unwrap_or(DEFAULT_PUBLIC_URL))
            .map_err(|e| fail("PUBLIC_URL", &format!("the public base URL of this server ({e})")));
        let database =
            DatabaseUrl::parse(raw.get("database_url").unwrap_or("sqlite://.demo/server1.sqlite3"))
                .map_err(|why| {
                    fail(
                        "DATABASE_URL",
                        &format!("{why} (e.g. sqlite:///var/lib/handoff/server1.sqlite3)"),
                    )
                });
        let pool_size = raw
            .get("database_pool_size")
            .unwrap_or("8")
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=100).contains(n))
            .ok_or_else(|| {
                fail("DATABASE_POOL_SIZE", "a whole number of connections from 1 to 100")
            });
        let pool_timeout = raw
            .get("database_timeout_ms")
            .unwrap_or("2000")
            .parse::<u64>()
            .ok()
            .filter(|n| (100..=60_000).contains(n))
            .ok_or_else(|| fail("DATABASE_TIMEOUT_MS", "100 to 60000 milliseconds"));
        let keys_dir = non_empty_path(raw.get("keys_dir").unwrap_or(".demo/keys"))
            .map_err(|()| fail("KEYS_DIR", "a directory path"));
        let targets_file = non_empty_path(raw.get("targets_file").unwrap_or(".demo/targets.toml"))
            .map_err(|()| fail("TARGETS_FILE", "a file path"));
        let token_ttl = raw
            .get("token_ttl_secs")
            .unwrap_or("60")
            .parse::<u64>()
            .ok()
            .and_then(|s| Ttl::from_secs(s).ok())
            .ok_or_else(|| fail("TOKEN_TTL_SECS", "a whole number of seconds from 1 to 600"));
        let session_ttl_secs = raw
            .get("session_ttl_secs")
            .unwrap_or("28800")
            .parse::<u64>()
            .ok()
            .filter(|s| (60..=30 * 86_400).contains(s))
            .ok_or_else(|| {
                fail("SESSION_TTL_SECS", "a whole number of seconds from 60 to 2592000")
            });
        let cookies = CookieSecurity::from_setting(raw.get("insecure_cookies")).ok_or_else(|| {
            fail("INSECURE_COOKIES", "true or false");
        });
        let password_slots = match raw.get("password_slots") {
            None => Ok(default_password_slots()),
            Some(value) => value
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=MAX_PASSWORD_SLOTS).contains(n))
                .ok_or_else(|| {
                    fail(
                        "PASSWORD_SLOTS",
                        "a whole number from 1 to 1024: password checks at once, 19 MiB each",
                    );
                }),
        };

        let accounts_and_mail = accounts_and_mail(&raw, &mut fail);
        let clients_file = non_empty_path(raw.get("clients_file").unwrap_or(".demo/clients.toml"))
            .map_err(|()| fail("CLIENTS_FILE", "a file path"));
        let access_ttl =
            number_in(&raw, "access_token_ttl_secs", 600, 60..=600, "60 to 600 seconds", &mut fail);
        let refresh_idle = number_in(
            &raw,
            "refresh_idle_secs",
            14 * 86_400,
            300..=90 * 86_400,
            "300 to 7776000 seconds",
            &mut fail,
        );
        let refresh_max = number_in(
            &raw,
            "refresh_max_secs",
            30 * 86_400,
            300..=365 * 86_400,
            "300 to 31536000 seconds",
            &mut fail,
        );
        let oauth = match (access_ttl, refresh_idle, refresh_max) {
            (Ok(access_ttl_secs), Ok(refresh_idle_secs), Ok(refresh_max_secs)) => {
                Ok(crate::oauth::OAuthSettings {
                    access_ttl_secs,
                    refresh_idle_secs,
                    refresh_max_secs,
                })
            }
            _ => Err(()),
        };
        let trusted_proxies = TrustedProxies::parse(raw.get("trusted_proxies").unwrap_or(""))
            .map_err(|why| {
                fail(
                    "TRUSTED_PROXIES",
                    &format!("a comma-separated list of addresses or CIDRs ({why})"),
                )
            });
        if let Ok(url) = &public_url {
            errors.extend(public_url_problems(
                "SERVER1_",
                url.as_str(),
                cookies.as_ref().ok().copied(),
            ));
        }

        let database_pool = match (pool_size, pool_timeout) {
            (Ok(size), Ok(ms)) => Ok(PoolSettings { size, timeout: Duration::from_millis(ms) }),
            _ => Err(()),
        };
        match (
            (listen, metrics_listen, refusal_logs_per_sec),
            public_url,
            database,
            database_pool,
            keys_dir,
            targets_file,
            token_ttl,
            session_ttl_secs,
            cookies,
            password_slots,
            trusted_proxies,
            accounts_and_mail,
            (clients_file, oauth),
        ) {
            (
                (Ok(listen), Ok(metrics_listen), Ok(refusal_logs_per_sec)),
                Ok(public_url),
                Ok(database),
                Ok(database_pool),
                Ok(keys_dir),
                Ok(targets_file),
                Ok(token_ttl),
                Ok(session_ttl_secs),
                Ok(cookies),
                Ok(password_slots),
                Ok(trusted_proxies),
                Ok((accounts, mail)),
                (Ok(clients_file), Ok(oauth)),
            ) if errors.is_empty() => Ok(Self {
                listen,
                metrics_listen,
                refusal_logs_per_sec,
                public_url,
                database,
                database_pool,
                keys_dir,
                targets_file,
                token_ttl,
                session_ttl_secs,
                cookies,
                password_slots,
                trusted_proxies,
                accounts,
                mail,
                clients_file,
                oauth,
                clock: Arc::new(SystemClock),
            }),
            _ => Err(ConfigError(errors)),
        }
    }
}

fn non_empty_path(value: &str) -> Result<PathBuf, ()> {
    if value.trim().is_empty() || value.contains('\0') {
        Err(())
    } else {
        Ok(PathBuf::from(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_serve_the_demo() {
        let config = Config::from_pairs([("insecure_cookies", "true")]).expect("defaults");
        assert_eq!(config.listen.to_string(), "127.0.0.1:8001");
        assert_eq!(config.public_url.as_str(), DEFAULT_PUBLIC_URL);
        assert_eq!(config.database, DatabaseUrl::Sqlite(PathBuf::from(".demo/server1.sqlite3")));
        assert_eq!(config.token_ttl.as_secs(), 60);
        assert_eq!(config.cookies, CookieSecurity::InsecureDevelopment);
        assert_eq!(config.password_slots, default_password_slots());
        assert_eq!(Config::from_pairs([]).expect("secure default").cookies, CookieSecurity::Secure);
        assert!(!config.accounts.signup_open && config.accounts.require_verified_email);
        assert_eq!(config.accounts.mail_limits, MailLimits { per_address: 5, per_client: 20 });
        assert_eq!(config.mail.transport, MailTransport::Dir(PathBuf::from(".demo/mail")));
        assert_eq!((config.mail.verify_ttl_secs, config.mail.reset_ttl_secs), (86_400, 1800));
        assert_eq!(config.mail.from, DEFAULT_MAIL_FROM);
    }

    #[test]
    fn account_and_mail_settings() {
        let config = Config::from_pairs([
            ("signup", "open"),
            ("signup_roles", "reports, billing"),
            ("require_verified_email", "false"),
            ("smtp_url", "smtps://mailer:s3cret@mail.example"),
            ("mail_from", "Portal <portal@example.com>"),
            ("reset_link_ttl_secs", "600"),
            ("mail_limit_per_address", "2"),
        ])
        .expect("settings");
        assert!(config.accounts.signup_open && !config.accounts.require_verified_email);
        assert_eq!(config.accounts.signup_roles, vec!["reports", "billing"]);
        assert!(matches!(config.mail.transport, MailTransport::Smtp(_)));
        assert_eq!((config.mail.reset_ttl_secs, config.accounts.mail_limits.per_address), (600, 2));
        assert!(!format!("{config:?}").contains("s3cret"), "the SMTP password never shows");
        let err = Config::from_pairs([
            ("signup", "maybe"),
            ("signup_roles", "Admins"),
            ("require_verified_email", "sometimes"),
            ("smtp_url", "smtp://mail.example:25"),
            ("reset_link_ttl_secs", "10"),
            ("verify_link_ttl_secs", "x"),
            ("mail_limit_per_address", "0"),
            ("mail_limit_per_client", "-1"),
            ("mail_from", "nobody"),
        ])
        .unwrap_err()
        .to_string();
        for var in [
            "SIGNUP",
            "SIGNUP_ROLES",
            "REQUIRE_VERIFIED_EMAIL",
            "SMTP_URL",
            "RESET_LINK_TTL_SECS",
            "VERIFY_LINK_TTL_SECS",
            "MAIL_LIMIT_PER_ADDRESS",
            "MAIL_LIMIT_PER_CLIENT",
            "MAIL_FROM",
        ] {
            assert!(err.contains(&format!("SERVER1_{var}")), "{var} missing from: {err}");
        }
        let err = Config::from_pairs([("smtp_url", "smtp://127.0.0.1:2525")]).unwrap_err();
        assert!(err.to_string().contains("SERVER1_MAIL_FROM"), "SMTP needs a real sender");
    }

    #[test]
    fn every_bad_variable_is_named() {
        let err = Config::from_pairs([
            ("listen", "nope"),
            ("metrics_listen", "everywhere"),
            ("refusal_logs_per_sec", "-1"),
            ("public_url", "ftp://x"),
            ("database_url", "mysql://x"),
            ("token_ttl_secs", "0"),
            ("session_ttl_secs", "abc"),
            ("insecure_cookies", "maybe"),
            ("password_slots", "0"),
            ("trusted_proxies", "10.0.0.0/8, proxy.example"),
        ])
        .unwrap_err();
        let text = err.to_string();
        for var in [
            "LISTEN",
            "METRICS_LISTEN",
            "REFUSAL_LOGS_PER_SEC",
            "PUBLIC_URL",
            "DATABASE_URL",
            "TOKEN_TTL_SECS",
            "SESSION_TTL_SECS",
            "INSECURE_COOKIES",
            "PASSWORD_SLOTS",
            "TRUSTED_PROXIES",
        ] {
            assert!(text.contains(&format!("SERVER1_{var}")), "{var} missing from: {text}");
        }
    }

    #[test]
    fn password_slots_are_bounded() {
        let slots = |v: &str| Config::from_pairs([("password_slots", v)]).map(|c| c.password_slots);
        assert_eq!(slots("1").expect("one"), 1);
        assert_eq!(slots("1024").expect("the most"), MAX_PASSWORD_SLOTS);
        for bad in ["0", "1025", "-1", "two", ""] {
            let err = slots(bad).unwrap_err().to_string();
            assert!(err.contains("SERVER1_PASSWORD_SLOTS"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn plain_http_and_insecure_cookies_only_on_loopback() {
        assert!(Config::from_pairs([("public_url", "http://portal.example")]).is_err());
        assert!(Config::from_pairs([("public_url", "https://portal.example")]).is_ok());
        let err = Config::from_pairs([
            ("public_url", "https://portal.example"),
            ("insecure_cookies", "true"),
        ]);
        assert!(err.unwrap_err().to_string().contains("SERVER1_INSECURE_COOKIES"));
        assert!(Config::from_pairs([
            ("public_url", "http://localhost:8001"),
            ("insecure_cookies", "1")
        ])
        .is_ok());
    }
}
