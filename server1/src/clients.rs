//! The apps registered to use the portal's API (`SERVER1_CLIENTS_FILE`, TOML): a command line,
//! a desktop or mobile app. Each is a public client of the OAuth 2.0 Device Authorization Grant
//! (RFC 8628): it has an id, a name people see when they approve it, and the scopes it may ask
//! for.
//!
//! ```toml
//! [[client]]
//! id = "handoff-cli"
//! name = "Handoff command line"
//! scopes = ["profile"]
//! ```

use std::path::Path;

use serde::Deserialize;

/// The scopes the API knows, with what a person is told they allow.
pub const SCOPES: &[(&str, &str)] =
    &[("profile", "see your user name, e-mail address, roles, and what you may open on partners")];

/// A registered app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    /// Its `client_id`.
    pub id: String,
    /// Its name, shown when a person approves it.
    pub name: String,
    /// The scopes it may ask for.
    pub scopes: Vec<String>,
}

/// Every registered app.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Clients {
    list: Vec<Client>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    client: Vec<RawClient>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClient {
    id: String,
    name: String,
    scopes: Vec<String>,
}

impl Clients {
    /// Loads the file at `path`; a file that does not exist registers no app (the API then
    /// answers `invalid_client` to everyone).
    ///
    /// # Errors
    ///
    /// A file that cannot be read or is not valid, naming the fault.
    pub fn load(path: &Path) -> Result<Self, String> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text).map_err(|e| format!("{}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    /// Parses and checks a clients file.
    ///
    /// # Errors
    ///
    /// The first fault found.
    pub fn parse(text: &str) -> Result<Self, String> {
        let raw: RawFile = toml::from_str(text).map_err(|e| e.message().to_owned())?;
        let mut list: Vec<Client> = Vec::new();
        for c in raw.client {
            if !handoff::values::is_short_id(&c.id, 64) {
                return Err(format!("client id {:?}: 1 to 64 characters of a-z 0-9 - _", c.id));
            }
            if c.name.trim().is_empty() || c.name.len() > 80 {
                return Err(format!("client {:?}: name must be 1 to 80 characters", c.id));
            }
            if c.scopes.is_empty() {
                return Err(format!("client {:?}: lists no scopes", c.id));
            }
            if let Some(bad) = c.scopes.iter().find(|s| !SCOPES.iter().any(|(k, _)| k == s)) {
                return Err(format!("client {:?}: unknown scope {bad:?}", c.id));
            }
            if list.iter().any(|o| o.id == c.id) {
                return Err(format!("client {:?} is declared twice", c.id));
            }
            list.push(Client { id: c.id, name: c.name, scopes: c.scopes });
        }
        Ok(Self { list })
    }

    /// The app with `client_id`.
    pub fn get(&self, client_id: &str) -> Option<&Client> {
        self.list.iter().find(|c| c.id == client_id)
    }
}

/// What a scope allows, in words.
pub fn describe(scope: &str) -> &'static str {
    SCOPES.iter().find(|(k, _)| *k == scope).map_or("(unknown)", |(_, d)| d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_loads_and_bad_files_name_the_fault() {
        let clients = Clients::parse(include_str!("../clients.example.toml")).expect("example");
        let cli = clients.get("handoff-cli").expect("handoff-cli");
        assert_eq!(cli.scopes, vec!["profile"]);
        assert!(clients.get("other").is_none());
        for (text, fault) in [
            ("[[client]]\nid = \"Bad Id\"\nname = \"x\"\nscopes = [\"profile\"]", "client id"),
            ("[[client]]\nid = \"a\"\nname = \"\"\nscopes = [\"profile\"]", "name"),
            ("[[client]]\nid = \"a\"\nname = \"A\"\nscopes = []", "no scopes"),
            ("[[client]]\nid = \"a\"\nname = \"A\"\nscopes = [\"admin\"]", "unknown scope"),
            ("[[client]]\nid = \"a\"\nname = \"A\"\nscopes = [\"profile\"]\nsecret = \"x\"", "unknown field"),
            ("[[client]]\nid = \"a\"\nname = \"A\"\nscopes = [\"profile\"]\n[[client]]\nid = \"a\"\nname = \"B\"\nscopes = [\"profile\"]", "twice"),
        ] {
            let err = Clients::parse(text).unwrap_err();
            assert!(err.contains(fault), "{fault}: {err}");
        }
        assert_eq!(Clients::load(Path::new("/nonexistent/clients.toml")), Ok(Clients::default()));
    }
}
