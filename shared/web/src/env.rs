//! Reading configuration variables from the process environment without panicking.
//!
//! `std::env::vars` (and envy's `from_env`, built on it) panics when *any* variable in the
//! environment is not UTF-8. Servers read only their own prefix, through this.

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

/// Reads a raw configuration struct (all `Option<String>` fields) from the `PREFIX*` variables
/// of the environment, without panicking on non-UTF-8 ones.
///
/// # Errors
///
/// A message naming the variable at fault.
pub fn read_prefixed<T: serde::de::DeserializeOwned>(prefix: &str) -> Result<T, String> {
    let pairs = vars_with_prefix(prefix)?;
    envy::prefixed(prefix).from_iter(pairs).map_err(|e| format!("{prefix}*: {e}"))
}

/// Reads a raw configuration struct from `(name, value)` pairs whose names lack the prefix
/// (tests build configurations this way instead of setting process variables).
///
/// # Errors
///
/// A message naming the field at fault.
pub fn read_pairs<'a, T: serde::de::DeserializeOwned>(
    pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<T, String> {
    envy::from_iter(pairs.into_iter().map(|(k, v)| (k.to_ascii_uppercase(), v.to_owned())))
        .map_err(|e| e.to_string())
}
