//! Reading configuration variables from the process environment without panicking.
//!
//! `std::env::vars` (and envy's `from_env`, built on it) panics when *any* variable in the
//! environment is not UTF-8. Servers read only their own prefix, through this.

use std::collections::BTreeMap;

/// Every `PREFIX*` variable as text.
///
/// # Errors
///
/// The name of a `PREFIX*` variable whose value is not UTF-8, in a message.
fn vars_with_prefix(prefix: &str) -> Result<Vec<(String, String)>, String> {
    let mut pairs = Vec::new();
    for (name, value) in std::env::vars_os() {
        let Some(name) = name.to_str().filter(|n| n.starts_with(prefix)) else { continue };
        match value.into_string() {
            Ok(value) => pairs.push((name.to_owned(), value)),
            Err(_) => return Err(format!("{name}: expected UTF-8 text")),
        }
    }
    Ok(pairs)
}

/// A server's settings as text: its `PREFIX*` variables, named without the prefix, lower-case
/// (`SERVER2_LEEWAY_SECS` is `leeway_secs`). Typed values are made from it in one place per
/// server, which names every bad variable.
#[derive(Debug, Clone, Default)]
pub struct Vars(BTreeMap<String, String>);

impl Vars {
    /// The value of setting `name` (lower-case, without the prefix), if it is set.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }
}

/// Every `PREFIX*` variable of the process environment, without panicking on non-UTF-8 ones.
///
/// # Errors
///
/// A message naming the variable at fault.
pub fn read_prefixed(prefix: &str) -> Result<Vars, String> {
    let pairs = vars_with_prefix(prefix)?;
    let vars = envy::prefixed(prefix).from_iter(pairs).map_err(|e| format!("{prefix}*: {e}"))?;
    Ok(Vars(vars))
}

/// Settings from `(name, value)` pairs whose names lack the prefix (tests build configurations
/// this way instead of setting process variables).
pub fn read_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Vars {
    Vars(pairs.into_iter().map(|(k, v)| (k.to_ascii_lowercase(), v.to_owned())).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_lower_case_without_the_prefix() {
        let vars = read_pairs([("LEEWAY_SECS", "5"), ("listen", "x")]);
        assert_eq!(vars.get("leeway_secs"), Some("5"));
        assert_eq!(vars.get("listen"), Some("x"));
        assert_eq!(vars.get("other"), None);
    }
}
