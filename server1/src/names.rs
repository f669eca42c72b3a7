//! SERVER1's names, parsed once at the edge (a form, the command line, the targets file) and
//! passed around as types from then on: [`UserName`], [`Role`], [`TargetId`] and [`Email`].

use std::fmt;

/// Why a name was refused; the text says what a valid one looks like.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NameError(&'static str);

macro_rules! name_type {
    ($(#[$meta:meta])* $name:ident, $check:expr, $expected:literal) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            /// Checks `value`.
            ///
            /// # Errors
            ///
            #[doc = concat!("When it is not ", $expected, ".")]
            pub fn parse(value: &str) -> Result<Self, NameError> {
                let check: fn(&str) -> bool = $check;
                if check(value) {
                    Ok(Self(value.to_owned()))
                } else {
                    Err(NameError(concat!("expected ", $expected)))
                }
            }

            /// The name as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        // Tests compare names with the text they expect.
        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl PartialEq<String> for $name {
            fn eq(&self, other: &String) -> bool {
                &self.0 == other
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

name_type!(
    /// A sign-in name: 1 to 64 characters of a-z 0-9 . _ - (see [`UserName::normalize`]).
    UserName,
    |n| {
        (1..=64).contains(&n.len())
            && n.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
            })
    },
    "1 to 64 characters of a-z 0-9 . _ -"
);

name_type!(
    /// A role a user holds and an operation needs: 1 to 32 characters of a-z 0-9 - _, starting
    /// with a letter or digit.
    Role,
    |r| handoff::values::is_short_id(r, 32),
    "1 to 32 characters of a-z 0-9 - _, starting with a letter or digit"
);

name_type!(
    /// A target's id in the targets file and in `/handoff/{target}/…`: 1 to 32 characters of
    /// a-z 0-9 - _, starting with a letter or digit.
    TargetId,
    |t| handoff::values::is_short_id(t, 32),
    "1 to 32 characters of a-z 0-9 - _, starting with a letter or digit"
);

name_type!(
    /// An e-mail address as SERVER1 stores it (see [`Email::normalize`]): lower-case ASCII, at
    /// most 254 characters, a local part of 1 to 64 characters of letters, digits and
    /// `.!#$%&'*+/=?^_`{|}~-` (no leading, trailing or doubled dot), and a domain of at least two
    /// labels of a-z 0-9 and inner hyphens.
    Email,
    is_email,
    "an e-mail address such as name@example.com"
);

fn is_email(value: &str) -> bool {
    let Some((local, domain)) = value.split_once('@') else { return false };
    let local_ok = (1..=64).contains(&local.len())
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b"!#$%&'*+/=?^_`{|}~.-".contains(&b)
        });
    let labels: Vec<&str> = domain.split('.').collect();
    let domain_ok = labels.len() >= 2
        && labels.iter().all(|label| {
            (1..=63).contains(&label.len())
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        });
    value.len() <= 254 && local_ok && domain_ok
}

impl Email {
    /// What a person typed, as the address it stands for: surrounding white space dropped and
    /// lower-cased (one mailbox, one account, however it is spelled), then checked.
    ///
    /// # Errors
    ///
    /// When the result is not a valid address.
    pub fn normalize(typed: &str) -> Result<Self, NameError> {
        Self::parse(&typed.trim().to_ascii_lowercase())
    }
}

impl UserName {
    /// What a person typed, as the name it stands for: surrounding white space dropped,
    /// lower-cased (sign-in names are case-insensitive), then checked.
    ///
    /// # Errors
    ///
    /// When the result is not a valid name.
    pub fn normalize(typed: &str) -> Result<Self, NameError> {
        Self::parse(&typed.trim().to_ascii_lowercase())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(UserName::normalize("  Alice ").expect("name").as_str(), "alice");
        assert!(UserName::parse("Alice").is_err(), "stored names are lower-case");
        for bad in ["", "a b", "ä", &"a".repeat(65)] {
            assert!(UserName::parse(bad).is_err(), "{bad:?}");
        }
        assert!(UserName::parse(&"a".repeat(64)).is_ok());
        assert!(Role::parse("billing").is_ok());
        for bad in ["", "-x", "Reports", &"r".repeat(33)] {
            assert!(Role::parse(bad).is_err(), "{bad:?}");
            assert!(TargetId::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(TargetId::parse("partner-2").expect("id").to_string(), "partner-2");
    }

    #[test]
    fn emails() {
        assert_eq!(
            Email::normalize("  Alice.Example+tag@Mail.Example.COM ").expect("email").as_str(),
            "alice.example+tag@mail.example.com"
        );
        for bad in [
            "",
            "alice",
            "@example.com",
            "alice@",
            "alice@localhost",
            "alice@@example.com",
            "a@b@example.com",
            ".alice@example.com",
            "alice.@example.com",
            "al..ice@example.com",
            "alice@-example.com",
            "alice@example-.com",
            "alice@exa_mple.com",
            "alice@example..com",
            "al ice@example.com",
            "alice@exämple.com",
            "\"alice\"@example.com",
            "alice@example.com\r\nBcc: x@example.com",
        ] {
            assert!(Email::normalize(bad).is_err(), "{bad:?}");
        }
        assert!(Email::parse(&format!("{}@example.com", "a".repeat(64))).is_ok());
        assert!(Email::parse(&format!("{}@example.com", "a".repeat(65))).is_err());
        let long_domain = format!("a@{}.com", vec!["x".repeat(63); 4].join("."));
        assert!(long_domain.len() > 254 && Email::parse(&long_domain).is_err());
    }
}
