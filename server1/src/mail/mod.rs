//! Mail: what SERVER1 sends ([`messages`]), the outbox every message goes through
//! ([`outbox`]), and the two ways mail leaves: SMTP (`SERVER1_SMTP_URL`) or, the embedded
//! default, one `.eml` file per message in `SERVER1_MAIL_DIR`.
//!
//! Requests never send mail themselves: they queue a job in the database and the outbox worker
//! sends it, retrying with backoff, so a mail server that is slow or down neither holds a
//! request nor loses a message.

pub mod messages;
pub mod outbox;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

pub use messages::Kind;
pub use outbox::Outbox;

/// How long one SMTP conversation may take.
const SMTP_TIMEOUT: Duration = Duration::from_secs(15);

/// How an SMTP connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpSecurity {
    /// None: only to a server on this host (`smtp://127.0.0.1:…`).
    Plain,
    /// Upgraded with STARTTLS, which must succeed (`smtp://…?tls=starttls`).
    StartTls,
    /// TLS from the start (`smtps://…`).
    Tls,
}

/// `SERVER1_SMTP_URL`: `smtp://[user:pass@]host[:port][?tls=starttls]` or `smtps://…`.
/// `Debug` and `Display` never show the password.
#[derive(Clone, PartialEq, Eq)]
pub struct SmtpUrl {
    host: String,
    port: u16,
    security: SmtpSecurity,
    credentials: Option<(String, String)>,
}

impl SmtpUrl {
    /// Checks `value`. Plain SMTP is accepted only to a loopback host: anywhere else, mail
    /// with a password-reset link would cross the network in clear.
    ///
    /// # Errors
    ///
    /// Anything else; the message never repeats the value (it may hold a password).
    pub fn parse(value: &str) -> Result<Self, &'static str> {
        let url = url::Url::parse(value).map_err(|_| "not a URL")?;
        let host = url.host_str().filter(|h| !h.is_empty()).ok_or("no host")?;
        let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        let mut tls = None;
        for (key, value) in url.query_pairs() {
            match (key.as_ref(), value.as_ref()) {
                ("tls", "starttls") if tls.is_none() => tls = Some(SmtpSecurity::StartTls),
                _ => return Err("the only parameter is ?tls=starttls"),
            }
        }
        let (security, default_port) = match (url.scheme(), tls) {
            ("smtp", Some(starttls)) => (starttls, 587),
            ("smtp", None) => (SmtpSecurity::Plain, 25),
            ("smtps", None) => (SmtpSecurity::Tls, 465),
            ("smtps", Some(_)) => return Err("smtps:// is TLS already: drop ?tls=starttls"),
            _ => return Err("the scheme is smtp:// or smtps://"),
        };
        if security == SmtpSecurity::Plain && !is_loopback_host(&host) {
            return Err("plain smtp:// only to this host (127.0.0.1, ::1, localhost): use ?tls=starttls or smtps://");
        }
        if !url.path().is_empty() && url.path() != "/" {
            return Err("no path after the host and port");
        }
        let credentials = match (url.username(), url.password()) {
            ("", None) => None,
            (user, Some(pass)) if !user.is_empty() => {
                let decode = |s: &str| {
                    percent_decode(s).ok_or("the user name and password must be UTF-8 when decoded")
                };
                Some((decode(user)?, decode(pass)?))
            }
            _ => return Err("a user name needs a password (smtp://user:pass@host)"),
        };
        Ok(Self { host, port: url.port().unwrap_or(default_port), security, credentials })
    }

    /// How the connection is protected.
    pub fn security(&self) -> SmtpSecurity {
        self.security
    }
}

fn percent_decode(s: &str) -> Option<String> {
    url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
}

fn is_loopback_host(host: &str) -> bool {
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

impl std::fmt::Display for SmtpUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.security == SmtpSecurity::Tls { "smtps" } else { "smtp" };
        let tls = if self.security == SmtpSecurity::StartTls { "?tls=starttls" } else { "" };
        let host =
            if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        write!(f, "{scheme}://{host}:{}{tls}", self.port)
    }
}

impl std::fmt::Debug for SmtpUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SmtpUrl({self})")
    }
}

/// Where mail goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MailTransport {
    /// An SMTP server.
    Smtp(SmtpUrl),
    /// One `.eml` file per message in this directory (the embedded default: `make demo` prints
    /// the links in them on its console).
    Dir(PathBuf),
}

/// A message ready to send.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The recipient.
    pub to: String,
    /// The subject line.
    pub subject: String,
    /// The plain-text part.
    pub text: String,
    /// The HTML part.
    pub html: String,
}

/// Why a message was not sent.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    /// Worth another try later (the server is down, busy or answered 4xx).
    #[error("mail not sent, will retry: {0}")]
    Transient(String),
    /// Never going to work (the server answered 5xx for this recipient, or the address or
    /// message is malformed).
    #[error("mail refused: {0}")]
    Permanent(String),
}

/// Sends mail one way or the other.
pub struct Mailer {
    from: Mailbox,
    sender: Sender,
    shown: String,
}

enum Sender {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    Dir(PathBuf),
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer").field("to", &self.shown).finish_non_exhaustive()
    }
}

impl Mailer {
    /// A mailer sending from `from` through `transport`, trusting the certificates in
    /// `ca_file` (PEM) for the SMTP server besides the system's. Connects only when sending.
    ///
    /// # Errors
    ///
    /// When `from` is not an address, the CA file cannot be read or holds no certificate, or
    /// TLS cannot be set up for the SMTP host.
    pub fn new(
        transport: &MailTransport,
        from: &str,
        ca_file: Option<&Path>,
    ) -> Result<Self, String> {
        let from: Mailbox =
            from.parse().map_err(|_| "SERVER1_MAIL_FROM: expected an address such as \"Handoff Portal <no-reply@portal.example>\"".to_owned())?;
        let (sender, shown) = match transport {
            MailTransport::Dir(dir) => (Sender::Dir(dir.clone()), dir.display().to_string()),
            MailTransport::Smtp(url) => {
                let mut builder =
                    AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&url.host)
                        .port(url.port)
                        .timeout(Some(SMTP_TIMEOUT));
                if url.security != SmtpSecurity::Plain {
                    // The certificate must name the host and chain to a root the system (or
                    // the CA file) trusts; rustls on ring, TLS 1.2 at least.
                    let mut tls = TlsParameters::builder(url.host.clone());
                    if let Some(path) = ca_file {
                        let pem = std::fs::read(path).map_err(|e| {
                            format!("SERVER1_SMTP_CA_FILE: cannot read {}: {e}", path.display())
                        })?;
                        let has_cert = pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----");
                        let cert = Certificate::from_pem(&pem)
                            .ok()
                            .filter(|_| has_cert)
                            .ok_or_else(|| {
                                format!(
                                    "SERVER1_SMTP_CA_FILE: {} holds no PEM certificate",
                                    path.display()
                                )
                            })?;
                        tls = tls.add_root_certificate(cert);
                    }
                    let params =
                        tls.build_rustls().map_err(|e| format!("SERVER1_SMTP_URL: TLS: {e}"))?;
                    builder = builder.tls(match url.security {
                        SmtpSecurity::Tls => Tls::Wrapper(params),
                        _ => Tls::Required(params),
                    });
                }
                if let Some((user, pass)) = &url.credentials {
                    builder = builder.credentials(Credentials::new(user.clone(), pass.clone()));
                }
                (Sender::Smtp(builder.build()), url.to_string())
            }
        };
        Ok(Self { from, sender, shown })
    }

    /// Where mail goes, for logs (never a password).
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// Sends one message.
    ///
    /// # Errors
    ///
    /// [`MailError`]: transient or permanent.
    pub async fn send(&self, message: &Outgoing) -> Result<(), MailError> {
        let email = messages::build(&self.from, message)?;
        match &self.sender {
            Sender::Smtp(smtp) => smtp.send(email).await.map(drop).map_err(|e| {
                if e.is_permanent() {
                    MailError::Permanent(e.to_string())
                } else {
                    MailError::Transient(e.to_string())
                }
            }),
            Sender::Dir(dir) => write_eml(dir, &email.formatted())
                .await
                .map_err(|e| MailError::Transient(format!("{}: {e}", dir.display()))),
        }
    }
}

/// Writes `bytes` as a new `.eml` file in `dir` (made if missing), readable by its owner only
/// (the file holds a working link), whole or not at all: written under a temporary name, then
/// renamed.
async fn write_eml(dir: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = dir.to_owned();
    let bytes = bytes.to_vec();
    tokio::task::spawn_blocking(move || {
        use std::io::Write as _;
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(&dir)?;
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let unique = crate::accounts::random_token()
            .ok_or_else(|| std::io::Error::other("randomness failed"))?;
        let name = format!("{stamp:024}-{}", &unique[..8]);
        let tmp = dir.join(format!(".{name}.tmp"));
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&tmp)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, dir.join(format!("{name}.eml")))
    })
    .await
    .map_err(std::io::Error::other)?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smtp_urls() {
        let url = SmtpUrl::parse("smtp://127.0.0.1:2525").expect("loopback");
        assert_eq!(
            (url.security, url.port, url.to_string().as_str()),
            (SmtpSecurity::Plain, 2525, "smtp://127.0.0.1:2525")
        );
        let url =
            SmtpUrl::parse("smtp://mailer:p%40ss@mail.example?tls=starttls").expect("starttls");
        assert_eq!((url.security, url.port), (SmtpSecurity::StartTls, 587));
        assert_eq!(url.credentials, Some(("mailer".into(), "p@ss".into())));
        let url = SmtpUrl::parse("smtps://u:s3cret@mail.example").expect("tls");
        assert_eq!((url.security, url.port), (SmtpSecurity::Tls, 465));
        for shown in [url.to_string(), format!("{url:?}")] {
            assert!(!shown.contains("s3cret") && !shown.contains("u:"), "{shown}");
        }
        assert!(SmtpUrl::parse("smtp://[::1]:25").is_ok());
        for bad in [
            "",
            "smtp://",
            "http://mail.example",
            "smtp://mail.example",
            "smtp://mail.example:25",
            "smtp://mail.example?tls=none",
            "smtp://localhost?tls=starttls&tls=starttls",
            "smtps://mail.example?tls=starttls",
            "smtp://user@localhost",
            "smtp://localhost/path",
        ] {
            assert!(SmtpUrl::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn the_directory_transport_writes_one_private_file_per_message() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mail_dir = dir.path().join("mail");
        let transport = MailTransport::Dir(mail_dir.clone());
        let mailer =
            Mailer::new(&transport, "Portal <no-reply@portal.example>", None).expect("mailer");
        let message = Outgoing {
            to: "alice@example.com".into(),
            subject: "Hello".into(),
            text: "Hi Alice".into(),
            html: "<p>Hi Alice</p>".into(),
        };
        mailer.send(&message).await.expect("sent");
        mailer.send(&message).await.expect("sent");
        let files: Vec<_> =
            std::fs::read_dir(&mail_dir).expect("dir").map(|e| e.expect("entry").path()).collect();
        assert_eq!(files.len(), 2);
        for file in &files {
            assert_eq!(file.extension().and_then(|e| e.to_str()), Some("eml"));
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                assert_eq!(
                    std::fs::metadata(file).expect("meta").permissions().mode() & 0o777,
                    0o600
                );
            }
            let text = std::fs::read_to_string(file).expect("read");
            assert!(text.contains("To: alice@example.com") && text.contains("Hi Alice"), "{text}");
        }
        assert!(Mailer::new(&MailTransport::Dir(mail_dir), "not an address", None).is_err());
        // A directory that cannot be made (a file stands there): the message waits, it is not
        // lost (transient, so the outbox retries).
        let blocked = dir.path().join("blocked");
        std::fs::write(&blocked, "a file").expect("write");
        let mailer =
            Mailer::new(&MailTransport::Dir(blocked), "p@portal.example", None).expect("mailer");
        assert!(matches!(mailer.send(&message).await, Err(MailError::Transient(_))));
        let smtps = MailTransport::Smtp(SmtpUrl::parse("smtps://mail.example").expect("url"));
        let missing = dir.path().join("missing.pem");
        let err = Mailer::new(&smtps, "p@portal.example", Some(&missing)).unwrap_err();
        assert!(err.contains("SERVER1_SMTP_CA_FILE") && err.contains("cannot read"), "{err}");
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "not a certificate").expect("write");
        let err = Mailer::new(&smtps, "p@portal.example", Some(&garbage)).unwrap_err();
        assert!(err.contains("no PEM certificate"), "{err}");
    }
}
