//! The targets registry: which partners SERVER1 hands users to, where, and for what.
//!
//! Read once at start-up from a TOML file (see `server1/targets.example.toml`). A handoff can
//! only go to a URL listed here, which is what makes an open redirect impossible: no request
//! parameter ever names a destination.

use std::collections::BTreeMap;
use std::path::Path;

use handoff::protocol::start_param;
use handoff::{ArgName, ArgRule, ArgSpec, Audience, OperationSpec, OperationType};
use poem::http::HeaderValue;
use serde::Deserialize;

use crate::names::{Role, TargetId};

/// Largest targets file read.
const MAX_FILE_LEN: u64 = 1024 * 1024;

/// A partner SERVER1 can hand users to.
#[derive(Debug, Clone)]
pub struct Target {
    /// Short id used in URLs (`/handoff/{id}/...`).
    pub id: TargetId,
    /// Display name.
    pub name: String,
    /// The partner's audience (its public URL).
    pub audience: Audience,
    /// Where tokens are delivered.
    pub handoff_url: url::Url,
    /// Where logout tokens are posted when a user's session ends (OpenID Connect Back-Channel
    /// Logout), if the partner takes them.
    pub backchannel_logout_url: Option<url::Url>,
    /// The operations users may open there.
    pub operations: Vec<TargetOperation>,
    /// The Content-Security-Policy of this target's handoff page (its form may post only to the
    /// handoff URL's origin), built once.
    pub handoff_csp: HeaderValue,
}

impl Target {
    /// The operation of type `kind`.
    pub fn operation(&self, kind: &str) -> Option<&TargetOperation> {
        self.operations.iter().find(|o| o.spec.kind().as_str() == kind)
    }
}

/// The handoff page's policy: the portal's own, except that its form posts to `origin` only.
fn handoff_csp(origin: &str) -> Option<HeaderValue> {
    let csp = crate::web::pages::DEFAULT_CSP
        .replace("form-action 'self'", &format!("form-action {origin}"));
    HeaderValue::from_str(&csp).ok()
}

/// An operation offered on a target.
#[derive(Debug, Clone)]
pub struct TargetOperation {
    /// Type and argument rules.
    pub spec: OperationSpec,
    /// Human title, e.g. "View report".
    pub title: String,
    /// The role a user needs.
    pub role: Role,
    /// Example arguments for the dashboard's quick link, if every argument has one.
    pub example: Option<Vec<(String, String)>>,
}

/// The registry.
#[derive(Debug, Clone, Default)]
pub struct Targets {
    targets: Vec<Target>,
}

/// A targets file problem, naming the file and the entry.
#[derive(Debug, thiserror::Error)]
#[error("targets file {path}: {message}")]
pub struct TargetsError {
    path: String,
    message: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    target: Vec<RawTarget>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    id: String,
    name: String,
    audience: String,
    handoff_url: String,
    #[serde(default)]
    backchannel_logout_url: Option<String>,
    #[serde(default)]
    operation: Vec<RawOperation>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOperation {
    #[serde(rename = "type")]
    kind: String,
    title: String,
    role: String,
    #[serde(default)]
    args: BTreeMap<String, RawArg>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawArg {
    rule: String,
    min: Option<i64>,
    max: Option<i64>,
    max_len: Option<usize>,
    values: Option<Vec<String>>,
    example: Option<String>,
}

impl Targets {
    /// Reads and checks a targets file.
    ///
    /// # Errors
    ///
    /// A missing, unreadable, oversized or invalid file; the message names the entry at fault.
    pub fn load(path: &Path) -> Result<Self, TargetsError> {
        let shown = path.display().to_string();
        let err = |message: String| TargetsError { path: shown.clone(), message };
        let meta = std::fs::metadata(path).map_err(|e| {
            err(format!(
                "{e} (copy server1/targets.example.toml there, or set SERVER1_TARGETS_FILE)"
            ))
        })?;
        if meta.len() > MAX_FILE_LEN {
            return Err(err("larger than 1 MiB".into()));
        }
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        Self::parse(&text).map_err(err)
    }

    /// Parses the TOML text of a targets file.
    ///
    /// # Errors
    ///
    /// A message naming the entry at fault.
    pub fn parse(text: &str) -> Result<Self, String> {
        let raw: RawFile = toml::from_str(text).map_err(|e| e.to_string())?;
        if raw.target.is_empty() {
            return Err("declares no [[target]]".into());
        }
        if raw.target.len() > 64 {
            return Err("declares more than 64 targets".into());
        }
        let mut targets: Vec<Target> = Vec::new();
        for t in raw.target {
            let target = convert_target(t)?;
            if targets.iter().any(|other| other.id == target.id) {
                return Err(format!("target {:?} is declared twice", target.id.as_str()));
            }
            targets.push(target);
        }
        Ok(Self { targets })
    }

    /// The target with this id.
    pub fn get(&self, id: &str) -> Option<&Target> {
        self.targets.iter().find(|t| t.id == id)
    }

    /// All targets, in file order.
    pub fn iter(&self) -> impl Iterator<Item = &Target> {
        self.targets.iter()
    }
}

fn convert_target(t: RawTarget) -> Result<Target, String> {
    let Ok(id) = TargetId::parse(&t.id) else {
        return Err(format!("target id {:?}: use 1 to 32 characters of a-z 0-9 - _", t.id));
    };
    let at = format!("target {:?}", t.id);
    if t.name.trim().is_empty() || t.name.len() > 80 {
        return Err(format!("{at}: name must be 1 to 80 characters"));
    }
    let audience = Audience::parse(&t.audience).map_err(|e| format!("{at}: audience: {e}"))?;
    let handoff_url = partner_url(&at, "handoff_url", &t.handoff_url, &audience)?;
    let backchannel_logout_url = t
        .backchannel_logout_url
        .as_deref()
        .map(|url| partner_url(&at, "backchannel_logout_url", url, &audience))
        .transpose()?;
    if t.operation.is_empty() {
        return Err(format!("{at}: declares no [[target.operation]]"));
    }
    let mut operations: Vec<TargetOperation> = Vec::new();
    for op in t.operation {
        let op = convert_operation(op).map_err(|e| format!("{at}: {e}"))?;
        if operations.iter().any(|o| o.spec.kind() == op.spec.kind()) {
            return Err(format!("{at}: operation {} is declared twice", op.spec.kind()));
        }
        operations.push(op);
    }
    let handoff_csp =
        handoff_csp(&handoff_url.origin().ascii_serialization()).ok_or_else(|| {
            format!("{at}: handoff_url cannot go in a Content-Security-Policy header")
        })?;
    Ok(Target {
        id,
        name: t.name,
        audience,
        handoff_url,
        backchannel_logout_url,
        operations,
        handoff_csp,
    })
}

/// A URL of the partner's (`name` in the file): absolute, on the audience's origin, without
/// query or fragment, and https (http only on loopback).
fn partner_url(at: &str, name: &str, value: &str, audience: &Audience) -> Result<url::Url, String> {
    let url =
        url::Url::parse(value).map_err(|_| format!("{at}: {name} must be an absolute URL"))?;
    let audience_origin = url::Url::parse(audience.as_str()).map(|u| u.origin());
    if audience_origin.ok() != Some(url.origin()) {
        return Err(format!(
            "{at}: {name} must be on the audience's origin ({})",
            audience.as_str()
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("{at}: {name} must have no query or fragment"));
    }
    if url.scheme() == "http" && !handoff_web::config::is_loopback(&url) {
        return Err(format!("{at}: {name} must be https:// (http is allowed only on loopback)"));
    }
    Ok(url)
}

fn convert_operation(op: RawOperation) -> Result<TargetOperation, String> {
    let kind =
        OperationType::parse(&op.kind).map_err(|e| format!("operation {:?}: {e}", op.kind))?;
    let at = format!("operation {kind}");
    if op.title.trim().is_empty() || op.title.len() > 80 {
        return Err(format!("{at}: title must be 1 to 80 characters"));
    }
    let Ok(role) = Role::parse(&op.role) else {
        return Err(format!("{at}: role must be 1 to 32 characters of a-z 0-9 - _"));
    };
    let mut args = Vec::new();
    let mut example = Some(Vec::new());
    for (name, raw) in op.args {
        let arg = ArgName::parse(&name).map_err(|e| format!("{at}: argument {name:?}: {e}"))?;
        if start_param::ALL.contains(&name.as_str()) {
            return Err(format!(
                "{at}: argument {name:?} is reserved (mode, nonce and confirm are)"
            ));
        }
        let at = format!("{at}: argument {name}");
        let rule = match (raw.rule.as_str(), raw.min, raw.max, raw.max_len, raw.values) {
            ("integer", Some(min), Some(max), None, None) => ArgRule::Integer { min, max },
            ("slug", None, None, Some(max_len), None) => ArgRule::Slug { max_len },
            ("one_of", None, None, None, Some(values)) => ArgRule::OneOf { values },
            _ => {
                return Err(format!(
                    "{at}: rule must be `integer` with min and max, `slug` with max_len, or `one_of` with values"
                ))
            }
        };
        rule.validate().map_err(|e| format!("{at}: {e}"))?;
        match (&mut example, raw.example) {
            (Some(list), Some(value)) if rule.accepts(&value) => list.push((name.clone(), value)),
            (_, Some(_)) => return Err(format!("{at}: the example breaks the argument's rule")),
            (slot, None) => *slot = None,
        }
        args.push(ArgSpec { name: arg, rule });
    }
    let spec = OperationSpec::new(kind, args).map_err(|e| format!("{at}: {e}"))?;
    Ok(TargetOperation { spec, title: op.title, role, example })
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../targets.example.toml");

    #[test]
    fn the_shipped_example_loads() {
        let targets = Targets::parse(EXAMPLE).expect("example");
        let partner = targets.get("partner").expect("partner");
        assert_eq!(partner.audience.as_str(), "http://localhost:8002");
        assert_eq!(partner.handoff_url.as_str(), "http://localhost:8002/handoff");
        assert_eq!(
            partner.backchannel_logout_url.as_ref().map(url::Url::as_str),
            Some("http://localhost:8002/backchannel-logout")
        );
        let report = partner.operation("report.view").expect("report.view");
        assert_eq!(
            report.example.as_deref(),
            Some(&[("report_id".to_owned(), "42".to_owned())][..])
        );
        assert!(partner.operations.len() >= 2);
        // The handoff page's policy is the portal's own with the form pointed at the partner.
        let csp = partner.handoff_csp.to_str().expect("ascii");
        assert_eq!(
            csp,
            crate::web::pages::DEFAULT_CSP
                .replace("form-action 'self'", "form-action http://localhost:8002")
        );
        assert!(!csp.contains("form-action 'self'"));
    }

    fn with(edit: &str, replacement: &str) -> Result<Targets, String> {
        assert!(EXAMPLE.contains(edit), "fixture lacks {edit}");
        Targets::parse(&EXAMPLE.replacen(edit, replacement, 1))
    }

    #[test]
    fn bad_files_name_the_fault() {
        let cases = [
            ("id = \"partner\"", "id = \"Partner!\"", "target id"),
            (
                "audience = \"http://localhost:8002\"",
                "audience = \"http://localhost:8002/\"",
                "audience",
            ),
            (
                "handoff_url = \"http://localhost:8002/handoff\"",
                "handoff_url = \"http://evil.example/handoff\"",
                "origin",
            ),
            (
                "backchannel_logout_url = \"http://localhost:8002/backchannel-logout\"",
                "backchannel_logout_url = \"http://evil.example/logout\"",
                "backchannel_logout_url must be on the audience's origin",
            ),
            (
                "backchannel_logout_url = \"http://localhost:8002/backchannel-logout\"",
                "backchannel_logout_url = \"http://localhost:8002/logout?x=1\"",
                "no query",
            ),
            ("type = \"report.view\"", "type = \"report\"", "operation"),
            ("role = \"reports\"", "role = \"\"", "role"),
            ("rule = \"integer\"", "rule = \"regex\"", "rule must be"),
            ("example = \"42\"", "example = \"0\"", "example"),
            ("title = \"View report\"", "title = \"View report\"\nsurprise = 1", "unknown field"),
            ("[target.operation.args.report_id]", "[target.operation.args.nonce]", "reserved"),
        ];
        for (from, to, expected) in cases {
            let err = with(from, to).unwrap_err();
            assert!(err.contains(expected), "{from} -> {to}: {err}");
        }
        assert!(Targets::parse("").unwrap_err().contains("no [[target]]"));
        assert!(Targets::parse("not toml [").is_err());
        let twice =
            format!("{EXAMPLE}\n{}", &EXAMPLE[EXAMPLE.find("[[target]]").expect("target")..]);
        assert!(Targets::parse(&twice).unwrap_err().contains("declared twice"));
    }

    #[test]
    fn missing_file_says_what_to_do() {
        let err = Targets::load(Path::new("/nonexistent/targets.toml")).unwrap_err();
        assert!(err.to_string().contains("targets.example.toml"));
    }
}
