//! The issuers SERVER2 trusts: one, from the short settings (`SERVER2_ISSUER` with
//! `SERVER2_JWKS_URL`, `SERVER2_JWKS_FILE` or `SERVER2_ISSUER_SECRET_FILE`), or several, from
//! `SERVER2_ISSUERS_FILE`:
//!
//! ```toml
//! [[issuer]]
//! iss = "https://portal.example"          # exactly as it writes `iss`
//! jwks_url = "https://portal.example/.well-known/jwks.json"   # or jwks_file, or secret_file
//! target_id = "partner"                   # this server's id in that issuer's targets file
//! operations = ["report.view"]            # what it may grant here (default: everything)
//! ```
//!
//! Each issuer has its own key source, and with it its own algorithm (EdDSA for a JWKS, HS256
//! for a secret): a token's header never chooses it. A token is matched to its issuer by the
//! `iss` it claims, read before any check; then that issuer's verifier checks everything,
//! `iss` included, with that issuer's keys and operations only.

use std::path::{Path, PathBuf};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use handoff::logout::LogoutVerifier;
use handoff::{Alg, Catalog, Issuer, Rejection, SessionRef, Subject, Verifier, VerifierSettings};
use serde::Deserialize;

use crate::config::{Config, KeysFrom};
use crate::keys::KeySource;

/// Most issuers one SERVER2 trusts.
pub const MAX_ISSUERS: usize = 16;
/// Largest issuers file read.
const MAX_FILE_LEN: u64 = 256 * 1024;

/// One trusted issuer, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuerConfig {
    /// Its `iss`.
    pub issuer: Issuer,
    /// Where its keys come from (and so its algorithm).
    pub keys_from: KeysFrom,
    /// This server's target id in its registry (where `/handoff/start` sends browsers).
    pub target_id: String,
    /// The operation types it may grant here; `None`: every one this server performs.
    pub operations: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    issuer: Vec<RawIssuer>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIssuer {
    iss: String,
    #[serde(default)]
    jwks_url: Option<String>,
    #[serde(default)]
    jwks_file: Option<String>,
    #[serde(default)]
    secret_file: Option<String>,
    #[serde(default)]
    target_id: Option<String>,
    #[serde(default)]
    operations: Option<Vec<String>>,
}

/// Reads `SERVER2_ISSUERS_FILE`: relative file names in it are relative to the file.
///
/// # Errors
///
/// A message naming the file and the entry at fault.
pub fn load_file(path: &Path) -> Result<Vec<IssuerConfig>, String> {
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| format!("{shown}: {e}"))?;
    if meta.len() > MAX_FILE_LEN {
        return Err(format!("{shown}: larger than 256 KiB"));
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("{shown}: {e}"))?;
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    parse(&text, &dir).map_err(|e| format!("{shown}: {e}"))
}

/// Parses the TOML text of an issuers file, file names relative to `dir`.
///
/// # Errors
///
/// A message naming the entry at fault.
pub fn parse(text: &str, dir: &Path) -> Result<Vec<IssuerConfig>, String> {
    let raw: RawFile = toml::from_str(text).map_err(|e| e.to_string())?;
    if raw.issuer.is_empty() {
        return Err("declares no [[issuer]]".into());
    }
    if raw.issuer.len() > MAX_ISSUERS {
        return Err(format!("declares more than {MAX_ISSUERS} issuers"));
    }
    let known: Vec<String> =
        crate::operations::catalog().specs().map(|s| s.kind().to_string()).collect();
    let mut issuers: Vec<IssuerConfig> = Vec::new();
    for raw in raw.issuer {
        let at = format!("issuer {:?}", raw.iss);
        let issuer = Issuer::parse(&raw.iss).map_err(|e| format!("{at}: iss: {e}"))?;
        if issuers.iter().any(|i| i.issuer == issuer) {
            return Err(format!("{at} is declared twice"));
        }
        let file = |name: String| -> PathBuf { dir.join(name) };
        let keys_from = match (raw.jwks_url, raw.jwks_file, raw.secret_file) {
            (Some(url), None, None) => {
                let url = url::Url::parse(&url)
                    .ok()
                    .filter(handoff_web::config::is_https_or_loopback)
                    .ok_or_else(|| {
                        format!("{at}: jwks_url must be https:// (http only on loopback)")
                    })?;
                KeysFrom::Url(url)
            }
            (None, Some(name), None) => KeysFrom::File(file(name)),
            (None, None, Some(name)) => KeysFrom::Secret(file(name)),
            _ => {
                return Err(format!(
                    "{at}: give exactly one of jwks_url, jwks_file and secret_file"
                ))
            }
        };
        let target_id = raw.target_id.unwrap_or_else(|| "partner".to_owned());
        if !handoff::values::is_short_id(&target_id, 32) {
            return Err(format!("{at}: target_id is 1 to 32 characters of a-z 0-9 - _"));
        }
        if let Some(ops) = &raw.operations {
            if ops.is_empty() {
                return Err(format!("{at}: operations is empty (leave it out for all)"));
            }
            if let Some(unknown) = ops.iter().find(|op| !known.contains(op)) {
                return Err(format!(
                    "{at}: this server performs no operation {unknown:?} (it performs {})",
                    known.join(", ")
                ));
            }
        }
        issuers.push(IssuerConfig { issuer, keys_from, target_id, operations: raw.operations });
    }
    Ok(issuers)
}

/// A trusted issuer, ready to check its tokens.
#[derive(Debug)]
pub struct TrustedIssuer {
    /// Its settings.
    pub config: IssuerConfig,
    /// Its handoff tokens' verifier: its `iss`, its algorithm, its operations.
    pub verifier: Verifier,
    /// Its logout tokens' verifier.
    pub logout: LogoutVerifier,
    /// Its keys.
    pub keys: KeySource,
}

/// Every trusted issuer, the first being the primary one (where `/handoff/start` goes).
#[derive(Debug)]
pub struct Issuers {
    list: Vec<TrustedIssuer>,
}

/// The `iss` a token claims, read before any check: only to pick the issuer whose verifier then
/// checks everything.
fn claimed_issuer(token: &str) -> Option<String> {
    handoff::client_auth::claimed_client(token)
}

impl Issuers {
    /// Builds the verifiers and key sources of `config`'s issuers (keys are fetched by the
    /// caller: see [`KeySource::refresh`]).
    ///
    /// # Errors
    ///
    /// A pinned file or a secret that cannot be used, or crypto set-up failing.
    pub fn new(
        config: &Config,
        fetches: Option<&prometheus::IntCounterVec>,
    ) -> Result<Self, crate::StartupError> {
        let mut list = Vec::new();
        for issuer in &config.issuers {
            let all = crate::operations::catalog();
            let catalog = match &issuer.operations {
                None => all,
                Some(ops) => Catalog::new(
                    all.specs().filter(|s| ops.iter().any(|op| op == s.kind().as_str())).cloned(),
                )
                .map_err(|e| crate::StartupError::Crypto(e.to_string()))?,
            };
            let alg = issuer.keys_from.alg();
            let verifier = Verifier::new(VerifierSettings {
                issuer: issuer.issuer.clone(),
                audience: config.public_url.clone(),
                leeway: config.leeway,
                max_lifetime: config.max_token_lifetime,
                catalog,
                algorithm: alg,
            })
            .map_err(|e| crate::StartupError::Crypto(e.to_string()))?;
            let logout = LogoutVerifier::new(
                issuer.issuer.clone(),
                config.public_url.clone(),
                config.leeway,
            )
            .with_algorithm(alg);
            let keys = match &issuer.keys_from {
                KeysFrom::File(path) => KeySource::pinned(path)?,
                KeysFrom::Secret(path) => KeySource::shared_secret(path)?,
                KeysFrom::Url(url) => KeySource::remote(
                    url.clone(),
                    config.jwks_refresh_interval,
                    config.jwks_timeout,
                    config.jwks_cache_bounds,
                    crate::keys::Staleness {
                        max: config.jwks_max_stale,
                        clock: config.clock.clone(),
                    },
                    fetches.cloned(),
                )?,
            };
            list.push(TrustedIssuer { config: issuer.clone(), verifier, logout, keys });
        }
        if list.is_empty() {
            return Err(crate::StartupError::Crypto("no issuer configured".into()));
        }
        Ok(Self { list })
    }

    /// The primary issuer (the first).
    pub fn primary(&self) -> &TrustedIssuer {
        &self.list[0]
    }

    /// Every issuer, in configuration order.
    pub fn iter(&self) -> impl Iterator<Item = &TrustedIssuer> {
        self.list.iter()
    }

    /// The issuer whose token this is: the only one, or the one whose `iss` it claims.
    ///
    /// # Errors
    ///
    /// [`Rejection::Malformed`] for a token without a readable `iss` when several issuers are
    /// trusted, [`Rejection::UnknownIssuer`] for an `iss` none of them has.
    pub fn for_token(&self, token: &str) -> Result<&TrustedIssuer, Rejection> {
        if let [only] = self.list.as_slice() {
            return Ok(only);
        }
        let claimed = claimed_issuer(token).ok_or(Rejection::Malformed)?;
        self.list
            .iter()
            .find(|t| t.config.issuer.as_str() == claimed)
            .ok_or(Rejection::UnknownIssuer)
    }

    /// The user and session under which the revocation store keeps `issuer`'s logouts: the
    /// primary issuer's ids as they are, another issuer's hashed together with its `iss`, so
    /// that one issuer's logout can never end grants another issuer made (even for the same
    /// `sub`). Returns `None` for an issuer this server does not trust.
    pub fn scoped(
        &self,
        issuer: &Issuer,
        sub: Option<&Subject>,
        sid: Option<&SessionRef>,
    ) -> Option<(Option<Subject>, Option<SessionRef>)> {
        let index = self.list.iter().position(|t| &t.config.issuer == issuer)?;
        if index == 0 {
            return Some((sub.cloned(), sid.cloned()));
        }
        let hashed = |kind: &str, value: &str| {
            let mut context = ring::digest::Context::new(&ring::digest::SHA256);
            for part in [kind, issuer.as_str(), value] {
                context.update(part.as_bytes());
                context.update(&[0]);
            }
            URL_SAFE_NO_PAD.encode(&context.finish().as_ref()[..24])
        };
        let sub =
            sub.and_then(|s| Subject::parse(&format!("i:{}", hashed("sub", s.as_str()))).ok());
        let sid = sid.and_then(|s| SessionRef::parse(&hashed("sid", s.as_str())).ok());
        Some((sub, sid))
    }

    /// True when every issuer's keys are loaded.
    pub fn is_ready(&self) -> bool {
        self.list.iter().all(|t| t.keys.is_ready())
    }

    /// The longest time any issuer has not confirmed its keys, in seconds (0 when all are
    /// pinned or fresh).
    pub fn unconfirmed_for(&self) -> u64 {
        self.list.iter().filter_map(|t| t.keys.unconfirmed_for()).max().unwrap_or(0)
    }

    /// How many keys are trusted, over all issuers.
    pub fn key_count(&self) -> usize {
        self.list.iter().map(|t| t.keys.current().map_or(0, |k| k.len())).sum()
    }

    /// The algorithms in use, for logs.
    pub fn algorithms(&self) -> Vec<Alg> {
        self.list.iter().map(|t| t.config.keys_from.alg()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO: &str = r#"
[[issuer]]
iss = "https://portal.example"
jwks_url = "https://portal.example/.well-known/jwks.json"

[[issuer]]
iss = "https://billing.example"
secret_file = "billing.secret"
target_id = "reports-partner"
operations = ["report.view"]
"#;

    #[test]
    fn an_issuers_file_names_each_issuer_and_its_keys() {
        let issuers = parse(TWO, Path::new("/etc/handoff")).expect("parse");
        assert_eq!(issuers.len(), 2);
        assert_eq!(issuers[0].keys_from.alg(), Alg::EdDsa);
        assert_eq!(issuers[0].target_id, "partner");
        assert_eq!(issuers[0].operations, None);
        assert_eq!(issuers[1].keys_from, KeysFrom::Secret("/etc/handoff/billing.secret".into()));
        assert_eq!(issuers[1].operations.as_deref(), Some(&["report.view".to_owned()][..]));
    }

    #[test]
    fn bad_issuers_files_name_the_fault() {
        let dir = Path::new("/etc/handoff");
        for (from, to, expected) in [
            ("iss = \"https://billing.example\"", "iss = \"https://billing.example/\"", "iss"),
            ("iss = \"https://billing.example\"", "iss = \"https://portal.example\"", "twice"),
            ("secret_file = \"billing.secret\"", "", "exactly one of"),
            (
                "secret_file = \"billing.secret\"",
                "secret_file = \"b\"\njwks_file = \"j\"",
                "exactly one of",
            ),
            ("target_id = \"reports-partner\"", "target_id = \"Reports!\"", "target_id"),
            ("operations = [\"report.view\"]", "operations = [\"payroll.run\"]", "no operation"),
            ("operations = [\"report.view\"]", "operations = []", "empty"),
            ("operations = [\"report.view\"]", "surprise = 1", "unknown field"),
            (
                "jwks_url = \"https://portal.example/.well-known/jwks.json\"",
                "jwks_url = \"http://portal.example/jwks.json\"",
                "https",
            ),
        ] {
            assert!(TWO.contains(from), "{from}");
            let err = parse(&TWO.replacen(from, to, 1), dir).unwrap_err();
            assert!(err.contains(expected), "{from} -> {to}: {err}");
        }
        assert!(parse("", dir).unwrap_err().contains("no [[issuer]]"));
        let many: String = (0..=MAX_ISSUERS)
            .map(|i| format!("[[issuer]]\niss = \"https://i{i}.example\"\njwks_file = \"k\"\n"))
            .collect();
        assert!(parse(&many, dir).unwrap_err().contains("more than 16"));
    }
}
