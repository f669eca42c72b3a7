//! Reading configuration variables from the process environment without panicking.
//!
//! `std::env::vars` (and envy's `from_env`, built on it) panics when *any* variable in the
//! environment is not UTF-8. Servers read only their own prefix, through this.

/// Every `PREFIX*` variable as text.
///
/// # Errors
///
/// The name of a `PREFIX*` variable whose value is not UTF-8, in a message.
pub fn vars_with_prefix(prefix: &str) -> Result<Vec<(String, String)>, String> {
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
