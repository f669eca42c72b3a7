//! SERVER1's names, parsed once at the edge (a form, the command line, the targets file) and
//! passed around as types from then on: [`UserName`], [`Role`] and [`TargetId`].

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
}
