//! What SERVER1 mails, in plain text and HTML (maud escapes every value). Links are built from
//! `SERVER1_PUBLIC_URL` only, never from a request's `Host` header.

use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::Message;
use maud::html;

use super::{MailError, Outgoing};

/// What a queued job sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A link that verifies the account's address.
    VerifyEmail,
    /// A link to set a new password (sent only when an account has the address).
    PasswordReset,
    /// A link that confirms a new address, sent to the new address.
    ConfirmNewEmail,
    /// A notice to the old address that the account's address changed.
    EmailChanged,
    /// A notice that the account's password changed.
    PasswordChanged,
    /// A notice that someone tried to sign up with an address that has an account already.
    SignupExists,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 6] = [
        Kind::VerifyEmail,
        Kind::PasswordReset,
        Kind::ConfirmNewEmail,
        Kind::EmailChanged,
        Kind::PasswordChanged,
        Kind::SignupExists,
    ];

    /// The name the outbox stores.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::VerifyEmail => "verify_email",
            Self::PasswordReset => "password_reset",
            Self::ConfirmNewEmail => "confirm_new_email",
            Self::EmailChanged => "email_changed",
            Self::PasswordChanged => "password_changed",
            Self::SignupExists => "signup_exists",
        }
    }

    /// The kind called `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

/// What a message says besides its kind.
#[derive(Debug, Clone)]
pub struct Details<'a> {
    /// The site's name.
    pub site: &'a str,
    /// The account's user name.
    pub user: &'a str,
    /// The link to follow, for the kinds that have one.
    pub link: Option<&'a str>,
    /// How long the link works, in minutes.
    pub link_minutes: u64,
    /// The portal's address, for the notices.
    pub portal: &'a str,
}

/// The message of `kind` to `to`.
pub fn render(kind: Kind, to: &str, d: &Details<'_>) -> Outgoing {
    let link = d.link.unwrap_or(d.portal);
    let valid = match d.link_minutes {
        m if m % 60 == 0 && m >= 120 => format!("{} hours", m / 60),
        60 => "1 hour".to_owned(),
        m => format!("{m} minutes"),
    };
    let (subject, lines, action): (String, Vec<String>, Option<&str>) = match kind {
        Kind::VerifyEmail => (
            format!("Verify your e-mail address for {}", d.site),
            vec![
                format!("Hello {},", d.user),
                format!("please confirm that this is your address for your {} account by opening this link within {valid}:", d.site),
                "If you did not create an account, ignore this message: nothing happens without the link.".into(),
            ],
            Some("Verify my address"),
        ),
        Kind::PasswordReset => (
            format!("Reset your {} password", d.site),
            vec![
                format!("Hello {},", d.user),
                format!("someone (we hope you) asked to reset the password of your {} account. Open this link within {valid} to choose a new one; it works once:", d.site),
                "If you did not ask, ignore this message: your password stays as it is.".into(),
            ],
            Some("Choose a new password"),
        ),
        Kind::ConfirmNewEmail => (
            format!("Confirm your new e-mail address for {}", d.site),
            vec![
                format!("Hello {},", d.user),
                format!("open this link within {valid} to make this the address of your {} account:", d.site),
                "If you did not ask for this, ignore this message: the account keeps its old address.".into(),
            ],
            Some("Use this address"),
        ),
        Kind::EmailChanged => (
            format!("The e-mail address of your {} account changed", d.site),
            vec![
                format!("Hello {},", d.user),
                format!("the e-mail address of your {} account was changed, and mail now goes to the new address.", d.site),
                "If you did not do this, reset your password and tell your administrator at once.".into(),
            ],
            None,
        ),
        Kind::PasswordChanged => (
            format!("Your {} password changed", d.site),
            vec![
                format!("Hello {},", d.user),
                format!("the password of your {} account was changed, and your other sessions were signed out.", d.site),
                "If you did not do this, reset your password and tell your administrator at once.".into(),
            ],
            None,
        ),
        Kind::SignupExists => (
            format!("Someone tried to sign up for {} with your address", d.site),
            vec![
                "Hello,".into(),
                format!("someone tried to create a {} account with this address, which has an account already. Nothing was changed.", d.site),
                "If it was you, sign in instead, or use \"Forgot your password?\" on the sign-in page.".into(),
            ],
            None,
        ),
    };
    let mut text = String::new();
    for (i, line) in lines.iter().enumerate() {
        text.push_str(line);
        text.push_str("\r\n\r\n");
        if i == 1 && action.is_some() {
            text.push_str(link);
            text.push_str("\r\n\r\n");
        }
    }
    text.push_str(&format!("-- \r\n{} ({})\r\n", d.site, d.portal));
    let html = html! {
        (maud::DOCTYPE)
        html lang="en" {
            head { meta charset="utf-8"; title { (subject) } }
            body {
                @for (i, line) in lines.iter().enumerate() {
                    p { (line) }
                    @if i == 1 {
                        @if let Some(action) = action {
                            p { a href=(link) { (action) } }
                        }
                    }
                }
                p { "— " a href=(d.portal) { (d.site) } }
            }
        }
    };
    Outgoing { to: to.to_owned(), subject, text, html: html.into_string() }
}

/// The MIME message: a plain-text part and an HTML part, each encoded as its content needs
/// (lines of a link are quoted-printable once they pass 76 characters).
pub(super) fn build(from: &Mailbox, m: &Outgoing) -> Result<Message, MailError> {
    let to: Mailbox =
        m.to.parse().map_err(|_| MailError::Permanent("not an e-mail address".into()))?;
    Message::builder()
        .from(from.clone())
        .to(to)
        .subject(m.subject.clone())
        .multipart(
            MultiPart::alternative()
                .singlepart(SinglePart::plain(m.text.clone()))
                .singlepart(SinglePart::html(m.html.clone())),
        )
        .map_err(|e| MailError::Permanent(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip() {
        for kind in Kind::ALL {
            assert_eq!(Kind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(Kind::parse("nope"), None);
    }

    #[test]
    fn messages_carry_their_link_once_per_part_and_escape_everything() {
        let link = "http://127.0.0.1:8001/reset-password?token=abc";
        let d = Details {
            site: "Portal <b>",
            user: "alice",
            link: Some(link),
            link_minutes: 30,
            portal: "http://127.0.0.1:8001/",
        };
        let m = render(Kind::PasswordReset, "alice@example.com", &d);
        assert_eq!(m.text.matches(link).count(), 1);
        assert!(m.text.contains("within 30 minutes"));
        assert!(m.html.contains(&format!("href=\"{link}\"")));
        assert!(!m.html.contains("<b>") && m.html.contains("Portal &lt;b&gt;"));
        let notice =
            render(Kind::PasswordChanged, "alice@example.com", &Details { link: None, ..d });
        assert!(!notice.text.contains("token="));
        let from: Mailbox = "Portal <no-reply@portal.example>".parse().expect("from");
        let built = build(&from, &m).expect("message");
        let raw = String::from_utf8(built.formatted()).expect("utf-8");
        assert!(raw.contains("To: alice@example.com") && raw.contains("multipart/alternative"));
        assert!(matches!(
            build(&from, &Outgoing { to: "not an address".into(), ..m }),
            Err(MailError::Permanent(_))
        ));
    }
}
