//! The one operation a handoff token authorizes, and the catalog that says which operations
//! exist and what their arguments may be.
//!
//! In the token an operation is the single entry of `authorization_details` (RFC 9396): an
//! object with a `type` and one string member per argument, e.g.
//! `{"type": "report.view", "report_id": "42"}`. Issuer and relying party each hold a
//! [`Catalog`]; an operation is authorized only when it matches a spec exactly: every declared
//! argument present and valid, nothing else.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::values::{checked_string, ValueError};

/// Most arguments an operation may carry.
pub const MAX_ARGS: usize = 16;
/// Longest argument value, in bytes.
pub const MAX_ARG_LEN: usize = 256;

fn check_operation_type(value: &str) -> Result<(), ValueError> {
    const ERR: ValueError = ValueError::new(
        "an operation type",
        "is up to 64 characters of dot-separated lower-case words, e.g. report.view",
    );
    if value.is_empty() || value.len() > 64 {
        return Err(ERR);
    }
    let mut parts = 0;
    for part in value.split('.') {
        parts += 1;
        let mut bytes = part.bytes();
        let first_ok = bytes.next().is_some_and(|b| b.is_ascii_lowercase());
        if !first_ok || !bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') {
            return Err(ERR);
        }
    }
    if parts < 2 {
        return Err(ERR);
    }
    Ok(())
}

checked_string!(
    /// An operation's type, e.g. `report.view`.
    OperationType,
    check_operation_type
);

fn check_arg_name(value: &str) -> Result<(), ValueError> {
    let mut bytes = value.bytes();
    let ok = value.len() <= 32
        && value != "type"
        && bytes.next().is_some_and(|b| b.is_ascii_lowercase())
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(ValueError::new(
            "an argument name",
            "is up to 32 characters of a-z 0-9 _, starting with a letter, and not `type`",
        ))
    }
}

checked_string!(
    /// An operation argument's name, e.g. `report_id`.
    ArgName,
    check_arg_name
);

/// What an argument's value may be.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "rule", rename_all = "snake_case", deny_unknown_fields)]
pub enum ArgRule {
    /// A decimal integer in `min..=max`, written canonically (no sign for positives, no leading
    /// zeros, no spaces).
    Integer {
        /// Smallest allowed value.
        min: i64,
        /// Largest allowed value.
        max: i64,
    },
    /// 1 to `max_len` characters of `A-Z a-z 0-9 - _`.
    Slug {
        /// Longest allowed value (at most 256).
        max_len: usize,
    },
    /// One of a fixed list of values.
    OneOf {
        /// The allowed values.
        values: Vec<String>,
    },
}

impl ArgRule {
    /// Checks the rule itself (for rules read from a file).
    ///
    /// # Errors
    ///
    /// An empty integer range, a slug length of 0 or over 256, an empty list.
    pub fn validate(&self) -> Result<(), ValueError> {
        let ok = match self {
            Self::Integer { min, max } => min <= max,
            Self::Slug { max_len } => (1..=MAX_ARG_LEN).contains(max_len),
            Self::OneOf { values } => {
                !values.is_empty() && values.iter().all(|v| !v.is_empty() && v.len() <= MAX_ARG_LEN)
            }
        };
        if ok {
            Ok(())
        } else {
            Err(ValueError::new(
                "an argument rule",
                "needs min <= max, a max_len of 1 to 256, or a non-empty list of values",
            ))
        }
    }

    /// True when `value` satisfies the rule.
    pub fn accepts(&self, value: &str) -> bool {
        match self {
            Self::Integer { min, max } => {
                canonical_integer(value).is_some_and(|n| (*min..=*max).contains(&n))
            }
            Self::Slug { max_len } => {
                (1..=*max_len).contains(&value.len())
                    && value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            }
            Self::OneOf { values } => values.iter().any(|v| v == value),
        }
    }
}

fn canonical_integer(value: &str) -> Option<i64> {
    let digits = value.strip_prefix('-').unwrap_or(value);
    let canonical = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'))
        && value != "-0";
    if canonical {
        value.parse().ok()
    } else {
        None
    }
}

/// One operation with its arguments: what a token authorizes.
#[derive(Clone, PartialEq, Eq)]
pub struct Operation {
    kind: OperationType,
    args: BTreeMap<ArgName, String>,
}

impl Operation {
    /// Builds an operation from a type and arguments, checking only their shape (names, sizes,
    /// printable values); [`Catalog::check`] decides whether it is a known, valid operation.
    ///
    /// # Errors
    ///
    /// More than [`MAX_ARGS`] arguments, a value over [`MAX_ARG_LEN`] bytes or with control
    /// characters.
    pub fn new(
        kind: OperationType,
        args: impl IntoIterator<Item = (ArgName, String)>,
    ) -> Result<Self, ValueError> {
        let mut map = BTreeMap::new();
        for (name, value) in args {
            check_arg_value(&value)?;
            if map.insert(name, value).is_some() {
                return Err(ValueError::new("an operation", "names each argument once"));
            }
            if map.len() > MAX_ARGS {
                return Err(ValueError::new("an operation", "has at most 16 arguments"));
            }
        }
        Ok(Self { kind, args: map })
    }

    /// The operation's type.
    pub fn kind(&self) -> &OperationType {
        &self.kind
    }

    /// The value of argument `name`, if present.
    pub fn arg(&self, name: &str) -> Option<&str> {
        self.args.iter().find(|(k, _)| k.as_str() == name).map(|(_, v)| v.as_str())
    }

    /// All arguments, sorted by name.
    pub fn args(&self) -> impl Iterator<Item = (&ArgName, &str)> {
        self.args.iter().map(|(k, v)| (k, v.as_str()))
    }
}

fn check_arg_value(value: &str) -> Result<(), ValueError> {
    if value.len() <= MAX_ARG_LEN && !value.chars().any(char::is_control) {
        Ok(())
    } else {
        Err(ValueError::new("an argument value", "is at most 256 bytes with no control characters"))
    }
}

impl fmt::Debug for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Operation").field("type", &self.kind).field("args", &self.args).finish()
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind.as_str())?;
        for (i, (name, value)) in self.args.iter().enumerate() {
            f.write_str(if i == 0 { " " } else { ", " })?;
            write!(f, "{name}={value}")?;
        }
        Ok(())
    }
}

impl Serialize for Operation {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(1 + self.args.len()))?;
        map.serialize_entry("type", &self.kind)?;
        for (name, value) in &self.args {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Operation {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct OperationVisitor;

        impl<'de> Visitor<'de> for OperationVisitor {
            type Value = Operation;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an authorization detail: {\"type\": ..., argument: \"value\", ...}")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Operation, A::Error> {
                use serde::de::Error;
                let mut kind = None;
                let mut args = BTreeMap::new();
                while let Some(key) = map.next_key::<String>()? {
                    // serde's maps keep the last of duplicate keys; a signed token that says two
                    // things about one argument is refused instead.
                    if key == "type" {
                        if kind.replace(map.next_value::<OperationType>()?).is_some() {
                            return Err(A::Error::custom("duplicate `type`"));
                        }
                        continue;
                    }
                    let name = ArgName::try_from(key).map_err(A::Error::custom)?;
                    let value: String = map.next_value()?;
                    if args.insert(name, value).is_some() {
                        return Err(A::Error::custom("duplicate argument"));
                    }
                    if args.len() > MAX_ARGS {
                        return Err(A::Error::custom("too many arguments"));
                    }
                }
                let kind = kind.ok_or_else(|| A::Error::missing_field("type"))?;
                Operation::new(kind, args).map_err(A::Error::custom)
            }
        }

        deserializer.deserialize_map(OperationVisitor)
    }
}

/// One argument of an operation spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgSpec {
    /// The argument's name.
    pub name: ArgName,
    /// What its value may be.
    pub rule: ArgRule,
}

/// An operation type and its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperationSpec {
    kind: OperationType,
    args: Vec<ArgSpec>,
}

impl OperationSpec {
    /// A spec for `kind` with exactly the arguments `args`.
    ///
    /// # Errors
    ///
    /// A rule that is itself invalid, an argument declared twice, or more than [`MAX_ARGS`].
    pub fn new(kind: OperationType, args: Vec<ArgSpec>) -> Result<Self, ValueError> {
        if args.len() > MAX_ARGS {
            return Err(ValueError::new("an operation", "has at most 16 arguments"));
        }
        for (i, arg) in args.iter().enumerate() {
            arg.rule.validate()?;
            if args[..i].iter().any(|other| other.name == arg.name) {
                return Err(ValueError::new("an operation", "declares each argument once"));
            }
        }
        Ok(Self { kind, args })
    }

    /// The operation type.
    pub fn kind(&self) -> &OperationType {
        &self.kind
    }

    /// The declared arguments.
    pub fn args(&self) -> &[ArgSpec] {
        &self.args
    }

    /// Checks that `op` is this operation with valid arguments.
    ///
    /// # Errors
    ///
    /// [`OperationError::WrongType`], or [`OperationError::BadArgument`] naming the argument.
    pub fn check(&self, op: &Operation) -> Result<(), OperationError> {
        if op.kind != self.kind {
            return Err(OperationError::WrongType);
        }
        if op.args.len() != self.args.len() {
            let extra = op.args.keys().find(|name| !self.args.iter().any(|s| &s.name == *name));
            let missing = self.args.iter().find(|s| !op.args.contains_key(&s.name));
            let name = extra.or(missing.map(|s| &s.name)).map(ToString::to_string);
            return Err(OperationError::BadArgument(name.unwrap_or_default()));
        }
        for spec in &self.args {
            match op.args.get(&spec.name) {
                Some(value) if spec.rule.accepts(value) => {}
                _ => return Err(OperationError::BadArgument(spec.name.to_string())),
            }
        }
        Ok(())
    }

    /// Builds an operation of this type from raw (name, value) pairs, e.g. query parameters.
    ///
    /// # Errors
    ///
    /// As [`OperationSpec::check`], plus unknown or repeated argument names.
    pub fn build<'a>(
        &self,
        raw: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Operation, OperationError> {
        let mut args = Vec::new();
        for (name, value) in raw {
            let name = ArgName::parse(name)
                .map_err(|_| OperationError::BadArgument(String::from("(invalid name)")))?;
            if args.iter().any(|(n, _): &(ArgName, String)| *n == name) {
                return Err(OperationError::BadArgument(name.to_string()));
            }
            args.push((name, value.to_owned()));
        }
        let op = Operation::new(self.kind.clone(), args)
            .map_err(|_| OperationError::BadArgument(String::from("(invalid value)")))?;
        self.check(&op)?;
        Ok(op)
    }
}

/// Why an operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OperationError {
    /// No operation of this type exists here.
    #[error("unknown operation")]
    Unknown,
    /// The operation is of another type than the spec.
    #[error("operation of another type")]
    WrongType,
    /// An argument is missing, unexpected or invalid (its name is given; never its value).
    #[error("bad operation argument {0:?}")]
    BadArgument(String),
}

/// The operations a party knows, by type.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    specs: BTreeMap<OperationType, OperationSpec>,
}

impl Catalog {
    /// A catalog of these specs.
    ///
    /// # Errors
    ///
    /// When two specs share a type.
    pub fn new(specs: impl IntoIterator<Item = OperationSpec>) -> Result<Self, ValueError> {
        let mut map = BTreeMap::new();
        for spec in specs {
            if map.insert(spec.kind.clone(), spec).is_some() {
                return Err(ValueError::new("a catalog", "declares each operation type once"));
            }
        }
        Ok(Self { specs: map })
    }

    /// The spec for `kind`.
    pub fn get(&self, kind: &str) -> Option<&OperationSpec> {
        self.specs.iter().find(|(k, _)| k.as_str() == kind).map(|(_, v)| v)
    }

    /// Checks that `op` is a known operation with valid arguments.
    ///
    /// # Errors
    ///
    /// [`OperationError::Unknown`] or [`OperationError::BadArgument`].
    pub fn check(&self, op: &Operation) -> Result<(), OperationError> {
        self.specs.get(&op.kind).ok_or(OperationError::Unknown)?.check(op)
    }

    /// Every spec, by type.
    pub fn specs(&self) -> impl Iterator<Item = &OperationSpec> {
        self.specs.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report_spec() -> OperationSpec {
        OperationSpec::new(
            OperationType::parse("report.view").expect("type"),
            vec![ArgSpec {
                name: ArgName::parse("report_id").expect("name"),
                rule: ArgRule::Integer { min: 1, max: 1_000_000 },
            }],
        )
        .expect("spec")
    }

    #[test]
    fn operation_types() {
        for good in ["report.view", "invoice.approve", "a.b.c", "x1.y_2"] {
            assert!(OperationType::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "report",
            "Report.view",
            "report..view",
            ".report",
            "report.",
            "1a.b",
            "a.b-c",
            &format!("a.{}", "b".repeat(63)),
        ] {
            assert!(OperationType::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn arg_names() {
        assert!(ArgName::parse("report_id").is_ok());
        for bad in ["", "type", "Report", "1x", "a-b", &"a".repeat(33)] {
            assert!(ArgName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn integer_rule_is_canonical() {
        let rule = ArgRule::Integer { min: -5, max: 100 };
        for good in ["0", "1", "100", "-5"] {
            assert!(rule.accepts(good), "{good}");
        }
        for bad in
            ["", "101", "-6", "01", "+1", " 1", "1.0", "1e2", "-0", "-", "99999999999999999999"]
        {
            assert!(!rule.accepts(bad), "{bad}");
        }
    }

    #[test]
    fn slug_and_one_of_rules() {
        let slug = ArgRule::Slug { max_len: 4 };
        assert!(slug.accepts("ab-_"));
        assert!(!slug.accepts("abcde"));
        assert!(!slug.accepts(""));
        assert!(!slug.accepts("a b"));
        let one = ArgRule::OneOf { values: vec!["eu".into(), "us".into()] };
        assert!(one.accepts("eu"));
        assert!(!one.accepts("EU"));
        assert!(ArgRule::Integer { min: 2, max: 1 }.validate().is_err());
        assert!(ArgRule::Slug { max_len: 0 }.validate().is_err());
        assert!(ArgRule::OneOf { values: vec![] }.validate().is_err());
    }

    #[test]
    fn spec_builds_and_checks() {
        let spec = report_spec();
        let op = spec.build([("report_id", "42")]).expect("valid");
        assert_eq!(op.arg("report_id"), Some("42"));
        assert_eq!(op.to_string(), "report.view report_id=42");
        let bad = |raw: Vec<(&'static str, &'static str)>| spec.build(raw).unwrap_err();
        assert_eq!(bad(vec![]), OperationError::BadArgument("report_id".into()));
        assert_eq!(bad(vec![("report_id", "x")]), OperationError::BadArgument("report_id".into()));
        assert_eq!(
            bad(vec![("report_id", "1"), ("extra", "1")]),
            OperationError::BadArgument("extra".into())
        );
        assert!(matches!(
            bad(vec![("report_id", "1"), ("report_id", "2")]),
            OperationError::BadArgument(_)
        ));
        assert!(matches!(bad(vec![("Bad-Name", "1")]), OperationError::BadArgument(_)));
    }

    #[test]
    fn catalog_lookup() {
        let catalog = Catalog::new([report_spec()]).expect("catalog");
        let op = report_spec().build([("report_id", "7")]).expect("op");
        assert_eq!(catalog.check(&op), Ok(()));
        let other =
            Operation::new(OperationType::parse("invoice.approve").expect("t"), []).expect("op");
        assert_eq!(catalog.check(&other), Err(OperationError::Unknown));
        assert!(Catalog::new([report_spec(), report_spec()]).is_err());
    }

    #[test]
    fn json_form() {
        let op = report_spec().build([("report_id", "42")]).expect("op");
        let json = serde_json::to_string(&op).expect("serialise");
        assert_eq!(json, r#"{"type":"report.view","report_id":"42"}"#);
        let back: Operation = serde_json::from_str(&json).expect("parse");
        assert_eq!(back, op);
        for bad in [
            r#"{"report_id":"42"}"#,
            r#"{"type":"report.view","type":"report.view"}"#,
            r#"{"type":"report.view","report_id":"1","report_id":"2"}"#,
            r#"{"type":"report.view","report_id":42}"#,
            r#"{"type":"report.view","Bad":"1"}"#,
            r#"{"type":"Report"}"#,
            r#"["type","report.view"]"#,
            r#"{"type":"report.view","x":"a\u0000b"}"#,
        ] {
            assert!(serde_json::from_str::<Operation>(bad).is_err(), "{bad}");
        }
    }
}
