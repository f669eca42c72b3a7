//! The targets registry: which partners SERVER1 hands users to, where, and for what.
//!
//! Read once at start-up from a TOML file (see `server1/targets.example.toml`). A handoff can
//! only go to a URL listed here, which is what makes an open redirect impossible: no request
//! parameter ever names a destination.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use handoff::protocol::{relying_start_param, start_param};
use handoff::{
    Alg, ArgName, ArgRule, ArgSpec, Audience, KeySet, OperationSpec, OperationType, SharedSecret,
    Ttl,
};
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
    /// Whether its tokens are bound to the browser, and where the browser gets its nonce.
    pub binding: Binding,
    /// Where logout tokens are posted when a user's session ends (OpenID Connect Back-Channel
    /// Logout), if the partner takes them.
    pub backchannel_logout_url: Option<url::Url>,
    /// The operations users may open there.
    pub operations: Vec<TargetOperation>,
    /// The Content-Security-Policy of this target's handoff page (its form may post only to the
    /// handoff URL's origin), built once.
    pub handoff_csp: HeaderValue,
    /// The Content-Security-Policy of this target's confirmation page, built once.
    pub confirm_csp: HeaderValue,
    /// How its tokens are signed: with the issuer's Ed25519 keys (the default) or a secret
    /// shared with this partner.
    pub signing: Signing,
    /// Its tokens' lifetime, when it sets one (else `SERVER1_TOKEN_TTL_SECS`).
    pub lifetime: Option<Ttl>,
    /// The profile claims it receives.
    pub claims: ClaimSet,
    /// How it sees the user's id.
    pub subject: SubjectKind,
    /// Its back end's credentials for the partner API, if it may call it.
    pub client: Option<PartnerClient>,
}

/// Whether a target's browser handoffs are bound to the browser that carries them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Binding {
    /// Every browser handoff carries a nonce the target set in that browser: a handoff started
    /// on SERVER1 first passes through this start URL (the target's, which sets the nonce and
    /// sends the browser back), so a token can only be used in the browser it was made for.
    Nonce {
        /// The target's start URL (`/handoff/start` on its origin by default).
        start_url: url::Url,
    },
    /// Tokens are not bound (`binding = "none"`): for a target that cannot set a nonce. Anyone
    /// who gets such a token to a victim's browser signs the victim in as themselves there
    /// (session swap); see docs/security.md.
    None,
}

/// How a target's tokens are signed.
#[derive(Debug, Clone)]
pub enum Signing {
    /// With the issuer's key ring, verified with its JWKS.
    EdDsa,
    /// HS256 with this secret, which the partner also holds.
    Hs256(Arc<SharedSecret>),
}

impl Signing {
    /// The algorithm.
    pub fn alg(&self) -> Alg {
        match self {
            Self::EdDsa => Alg::EdDsa,
            Self::Hs256(_) => Alg::Hs256,
        }
    }
}

/// Which profile claims a target receives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClaimSet {
    /// `name`: the user's display name, when they have one.
    pub name: bool,
    /// `email`, when they have an address.
    pub email: bool,
    /// `email_verified`, when they have an address.
    pub email_verified: bool,
    /// `groups`: their roles.
    pub groups: bool,
}

impl ClaimSet {
    /// The claim names a targets file may list.
    pub const NAMES: [&'static str; 4] = ["name", "email", "email_verified", "groups"];

    fn set(&mut self, name: &str) -> bool {
        let slot = match name {
            "name" => &mut self.name,
            "email" => &mut self.email,
            "email_verified" => &mut self.email_verified,
            "groups" => &mut self.groups,
            _ => return false,
        };
        !std::mem::replace(slot, true)
    }
}

/// How a target sees the user's id (`sub`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubjectKind {
    /// A different stable id per partner (the default): partners cannot correlate users.
    Pairwise,
    /// SERVER1's own user id.
    Public,
}

/// A partner's back end, allowed to call the partner API with JWTs it signs itself.
#[derive(Debug, Clone)]
pub struct PartnerClient {
    /// Its `client_id`: the `iss` and `sub` of its JWTs.
    pub client_id: String,
    /// What its JWTs are checked with: its client secret (HS256 only) or the public keys it
    /// registered (EdDSA only).
    pub keys: Arc<KeySet>,
}

impl Target {
    /// The operation of type `kind`.
    pub fn operation(&self, kind: &str) -> Option<&TargetOperation> {
        self.operations.iter().find(|o| o.spec.kind().as_str() == kind)
    }
}

/// The portal's own Content-Security-Policy with the forms allowed to post (and be redirected)
/// to `sources` only: the handoff page's posts to the partner's origin; the confirmation page's
/// posts here, and the answer may redirect to the partner's start URL (or, for a target that
/// does not bind, its token URL), which `form-action` governs too.
fn form_action_csp(sources: &str) -> Option<HeaderValue> {
    let csp = crate::web::pages::DEFAULT_CSP
        .replace("form-action 'self'", &format!("form-action {sources}"));
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
    /// The arguments narrowed further than their rule: by a pattern, or to the values the
    /// user is entitled to (`server1 entitlements`). Checked before minting.
    pub narrowed: Vec<Narrowed>,
}

/// An argument narrowed to the objects a user may open.
#[derive(Debug, Clone)]
pub struct Narrowed {
    /// Its name.
    pub name: ArgName,
    /// A pattern the whole value must match.
    pub pattern: Option<regex::Regex>,
    /// Whether the user needs an entitlement to the value.
    pub entitled: bool,
}

impl Narrowed {
    /// Whether `value` matches the argument's pattern (any value does when it has none).
    pub fn matches(&self, value: &str) -> bool {
        self.pattern.as_ref().is_none_or(|p| p.is_match(value))
    }
}

impl TargetOperation {
    /// Whether argument `name` may take `value`: its rule and any pattern allow it.
    pub fn takes(&self, name: &str, value: &str) -> bool {
        let rule = self.spec.args().iter().find(|spec| spec.name.as_str() == name);
        rule.is_some_and(|spec| spec.rule.accepts(value))
            && self.narrowed.iter().filter(|n| n.name.as_str() == name).all(|n| n.matches(value))
    }
}

/// Longest pattern accepted in the targets file.
const MAX_PATTERN_LEN: usize = 256;

/// Compiles an argument's pattern, anchored at both ends, within a size limit (the regex crate
/// matches in linear time: no pattern can make a value slow to check).
fn compile_pattern(pattern: &str) -> Result<regex::Regex, String> {
    if pattern.is_empty() || pattern.len() > MAX_PATTERN_LEN {
        return Err(format!("pattern must be 1 to {MAX_PATTERN_LEN} characters"));
    }
    regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
        .size_limit(64 * 1024)
        .dfa_size_limit(256 * 1024)
        .build()
        .map_err(|e| {
            format!(
                "pattern does not compile: {}",
                e.to_string().lines().last().unwrap_or("invalid")
            )
        })
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
    binding: Option<String>,
    #[serde(default)]
    start_url: Option<String>,
    #[serde(default)]
    algorithm: Option<String>,
    #[serde(default)]
    secret_file: Option<String>,
    #[serde(default)]
    token_ttl_secs: Option<u64>,
    #[serde(default)]
    claims: Vec<String>,
    #[serde(default)]
    subject: Option<String>,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    client_secret_file: Option<String>,
    #[serde(default)]
    client_jwks_file: Option<String>,
    #[serde(default)]
    operation: Vec<RawOperation>,
}

/// Turns a file name from the targets file into a path (relative names are relative to the
/// targets file's directory), or refuses files altogether.
type FileResolver<'a> = &'a dyn Fn(&str) -> Result<PathBuf, String>;

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
    pattern: Option<String>,
    #[serde(default)]
    entitled: bool,
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
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let resolve = |name: &str| {
            if name.is_empty() || name.len() > 4096 {
                return Err("a file name is 1 to 4096 bytes".to_owned());
            }
            Ok(dir.join(name))
        };
        Self::parse_with(&text, &resolve).map_err(err)
    }

    /// Parses the TOML text of a targets file that names no secret or key file (those are read
    /// only by [`Targets::load`], relative to the file).
    ///
    /// # Errors
    ///
    /// A message naming the entry at fault.
    pub fn parse(text: &str) -> Result<Self, String> {
        Self::parse_with(text, &|_| {
            Err("secret and key files are read only from a targets file on disk".to_owned())
        })
    }

    /// Parses the TOML text of a targets file, reading the files it names through `resolve`.
    fn parse_with(text: &str, resolve: FileResolver<'_>) -> Result<Self, String> {
        let raw: RawFile = toml::from_str(text).map_err(|e| e.to_string())?;
        if raw.target.is_empty() {
            return Err("declares no [[target]]".into());
        }
        if raw.target.len() > 64 {
            return Err("declares more than 64 targets".into());
        }
        let mut targets: Vec<Target> = Vec::new();
        // Every shared secret read so far, by where it was named: no two may be the same bytes.
        let mut secrets: Vec<(String, Arc<SharedSecret>)> = Vec::new();
        for t in raw.target {
            let target = convert_target(t, resolve, &mut secrets)?;
            if targets.iter().any(|other| other.id == target.id) {
                return Err(format!("target {:?} is declared twice", target.id.as_str()));
            }
            let client_id = target.client.as_ref().map(|c| c.client_id.as_str());
            if client_id.is_some()
                && targets
                    .iter()
                    .any(|o| o.client.as_ref().map(|c| c.client_id.as_str()) == client_id)
            {
                return Err(format!(
                    "target {:?}: client_id is another target's",
                    target.id.as_str()
                ));
            }
            targets.push(target);
        }
        Ok(Self { targets })
    }

    /// The target with this id.
    pub fn get(&self, id: &str) -> Option<&Target> {
        self.targets.iter().find(|t| t.id == id)
    }

    /// The target whose back end is `client_id`.
    pub fn by_client(&self, client_id: &str) -> Option<(&Target, &PartnerClient)> {
        self.targets
            .iter()
            .find_map(|t| t.client.as_ref().filter(|c| c.client_id == client_id).map(|c| (t, c)))
    }

    /// All targets, in file order.
    pub fn iter(&self) -> impl Iterator<Item = &Target> {
        self.targets.iter()
    }
}

fn convert_target(
    t: RawTarget,
    resolve: FileResolver<'_>,
    secrets: &mut Vec<(String, Arc<SharedSecret>)>,
) -> Result<Target, String> {
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
    let binding = match (t.binding.as_deref().unwrap_or("nonce"), t.start_url.as_deref()) {
        ("nonce", start_url) => {
            let start_url = match start_url {
                Some(url) => partner_url(&at, "start_url", url, &audience)?,
                None => {
                    let mut url = handoff_url.clone();
                    url.set_path(::handoff::protocol::RELYING_START_PATH);
                    url
                }
            };
            Binding::Nonce { start_url }
        }
        ("none", None) => Binding::None,
        ("none", Some(_)) => {
            return Err(format!("{at}: start_url is only for binding = \"nonce\""));
        }
        _ => return Err(format!("{at}: binding must be \"nonce\" or \"none\"")),
    };
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
    let origin = handoff_url.origin().ascii_serialization();
    let (Some(handoff_csp), Some(confirm_csp)) =
        (form_action_csp(&origin), form_action_csp(&format!("'self' {origin}")))
    else {
        return Err(format!("{at}: handoff_url cannot go in a Content-Security-Policy header"));
    };
    // A secret is used for one purpose with one partner: the same bytes as another target's
    // (or this target's other secret) would let one partner forge what the other accepts.
    let seen = std::cell::RefCell::new(secrets);
    let secret = |field: &str, name: &str| -> Result<Arc<SharedSecret>, String> {
        let path = resolve(name).map_err(|e| format!("{at}: {field}: {e}"))?;
        let loaded = SharedSecret::load(&path)
            .map(Arc::new)
            .map_err(|e| format!("{at}: {field}: {e} (make one with `server1 secret new FILE`)"))?;
        let mut seen = seen.borrow_mut();
        if let Some((other, _)) = seen.iter().find(|(_, s)| s.same_as(&loaded)) {
            return Err(format!(
                "{at}: {field} holds the same secret as {other}: give each its own (`server1 secret new FILE`)"
            ));
        }
        seen.push((format!("{at}'s {field}"), Arc::clone(&loaded)));
        Ok(loaded)
    };
    let signing = match (t.algorithm.as_deref().unwrap_or("EdDSA"), t.secret_file.as_deref()) {
        ("EdDSA", None) => Signing::EdDsa,
        ("EdDSA", Some(_)) => {
            return Err(format!("{at}: secret_file is only for algorithm = \"HS256\""))
        }
        ("HS256", Some(file)) => Signing::Hs256(secret("secret_file", file)?),
        ("HS256", None) => return Err(format!("{at}: algorithm = \"HS256\" needs secret_file")),
        _ => return Err(format!("{at}: algorithm must be \"EdDSA\" or \"HS256\"")),
    };
    let lifetime = t
        .token_ttl_secs
        .map(|secs| {
            Ttl::from_secs(secs).map_err(|_| format!("{at}: token_ttl_secs must be 1 to 600"))
        })
        .transpose()?;
    let mut claims = ClaimSet::default();
    for name in &t.claims {
        if !ClaimSet::NAMES.contains(&name.as_str()) {
            return Err(format!(
                "{at}: claims may list {}",
                ClaimSet::NAMES.map(|n| format!("{n:?}")).join(", ")
            ));
        }
        if !claims.set(name) {
            return Err(format!("{at}: claim {name:?} is listed twice"));
        }
    }
    let subject = match t.subject.as_deref().unwrap_or("pairwise") {
        "pairwise" => SubjectKind::Pairwise,
        "public" => SubjectKind::Public,
        _ => return Err(format!("{at}: subject must be \"pairwise\" or \"public\"")),
    };
    let client = match (t.client_id, t.client_secret_file, t.client_jwks_file) {
        (None, None, None) => None,
        (Some(client_id), secret_file, jwks_file) => {
            let ok = (1..=64).contains(&client_id.len())
                && client_id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
            if !ok {
                return Err(format!(
                    "{at}: client_id must be 1 to 64 characters of A-Z a-z 0-9 - _ ."
                ));
            }
            let keys = match (secret_file, jwks_file) {
                (Some(file), None) => {
                    Arc::new(KeySet::shared_secret(&*secret("client_secret_file", &file)?))
                }
                (None, Some(file)) => {
                    let path =
                        resolve(&file).map_err(|e| format!("{at}: client_jwks_file: {e}"))?;
                    let bytes = std::fs::read(&path)
                        .map_err(|e| format!("{at}: client_jwks_file {}: {e}", path.display()))?;
                    let keys = handoff::Jwks::parse(&bytes)
                        .and_then(|jwks| KeySet::from_jwks(&jwks))
                        .map_err(|e| format!("{at}: client_jwks_file {}: {e}", path.display()))?;
                    Arc::new(keys)
                }
                _ => {
                    return Err(format!(
                    "{at}: client_id needs exactly one of client_secret_file and client_jwks_file"
                ))
                }
            };
            Some(PartnerClient { client_id, keys })
        }
        (None, _, _) => {
            return Err(format!("{at}: client_secret_file and client_jwks_file need client_id"))
        }
    };
    Ok(Target {
        id,
        name: t.name,
        audience,
        handoff_url,
        binding,
        backchannel_logout_url,
        operations,
        handoff_csp,
        confirm_csp,
        signing,
        lifetime,
        claims,
        subject,
        client,
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
    let mut narrowed = Vec::new();
    let mut example = Some(Vec::new());
    for (name, raw) in op.args {
        let arg = ArgName::parse(&name).map_err(|e| format!("{at}: argument {name:?}: {e}"))?;
        if start_param::ALL.contains(&name.as_str())
            || relying_start_param::ALL.contains(&name.as_str())
        {
            return Err(format!(
                "{at}: argument {name:?} is reserved ({} are)",
                start_param::ALL
                    .iter()
                    .chain(&relying_start_param::ALL)
                    .copied()
                    .collect::<Vec<_>>()
                    .join(", ")
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
        let pattern = raw
            .pattern
            .as_deref()
            .map(compile_pattern)
            .transpose()
            .map_err(|e| format!("{at}: {e}"))?;
        let fits =
            |value: &str| rule.accepts(value) && pattern.as_ref().is_none_or(|p| p.is_match(value));
        match (&mut example, raw.example) {
            (Some(list), Some(value)) if fits(&value) => list.push((name.clone(), value)),
            (_, Some(_)) => return Err(format!("{at}: the example breaks the argument's rule")),
            (slot, None) => *slot = None,
        }
        if pattern.is_some() || raw.entitled {
            narrowed.push(Narrowed { name: arg.clone(), pattern, entitled: raw.entitled });
        }
        args.push(ArgSpec { name: arg, rule });
    }
    let spec = OperationSpec::new(kind, args).map_err(|e| format!("{at}: {e}"))?;
    Ok(TargetOperation { spec, title: op.title, role, example, narrowed })
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../targets.example.toml");

    /// The example file in a directory of its own, beside the secret files it names.
    fn example_on_disk(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("dir");
        for secret in ["desk.secret", "desk-api.secret"] {
            SharedSecret::create(&dir.path().join(secret)).expect("secret");
        }
        let path = dir.path().join("targets.toml");
        std::fs::write(&path, text).expect("write");
        (dir, path)
    }

    #[test]
    fn the_shipped_example_loads() {
        let (_dir, path) = example_on_disk(EXAMPLE);
        let targets = Targets::load(&path).expect("example");
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

    #[test]
    fn targets_bind_their_handoffs_by_default() {
        let (_dir, path) = example_on_disk(EXAMPLE);
        let targets = Targets::load(&path).expect("example");
        let start = |t: &Target| match &t.binding {
            Binding::Nonce { start_url } => Some(start_url.to_string()),
            Binding::None => None,
        };
        let partner = targets.get("partner").expect("partner");
        assert_eq!(start(partner).as_deref(), Some("http://localhost:8002/handoff/start"));
        assert_eq!(
            partner.confirm_csp.to_str().expect("ascii"),
            crate::web::pages::DEFAULT_CSP
                .replace("form-action 'self'", "form-action 'self' http://localhost:8002")
        );
        let id = "id = \"partner\"\n";
        let own = with(id, &format!("{id}start_url = \"http://localhost:8002/begin\"\n"));
        let own = own.expect("a start URL of its own");
        assert_eq!(
            start(own.get("partner").expect("partner")).as_deref(),
            Some("http://localhost:8002/begin")
        );
        let none = with(id, &format!("{id}binding = \"none\"\n")).expect("unbound");
        assert_eq!(none.get("partner").expect("partner").binding, Binding::None);
        for (bad, why) in [
            ("binding = \"sometimes\"\n", "binding must be"),
            (
                "binding = \"none\"\nstart_url = \"http://localhost:8002/begin\"\n",
                "start_url is only for",
            ),
            (
                "start_url = \"http://evil.example/start\"\n",
                "start_url must be on the audience's origin",
            ),
        ] {
            let err = with(id, &format!("{id}{bad}")).expect_err(bad);
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn arguments_narrow_to_a_pattern_or_to_entitlements() {
        let rule = "[target.operation.args.invoice_id]\nrule = \"slug\"\nmax_len = 32\n";
        let narrowed = with(rule, &format!("{rule}pattern = \"INV-[0-9-]+\"\nentitled = true\n"))
            .expect("narrowed");
        let op = narrowed.get("partner").and_then(|t| t.operation("invoice.approve")).expect("op");
        let [n] = &op.narrowed[..] else { panic!("one narrowed argument: {:?}", op.narrowed) };
        assert!(n.entitled && n.name.as_str() == "invoice_id");
        let pattern = n.pattern.as_ref().expect("pattern");
        // The whole value must match: the pattern is anchored at both ends.
        assert!(pattern.is_match("INV-2026-0042"));
        for bad in ["XINV-1", "INV-1X", "INV-", ""] {
            assert!(!pattern.is_match(bad), "{bad}");
        }
        let plain = with(rule, rule).expect("plain");
        let op = plain.get("partner").and_then(|t| t.operation("invoice.approve")).expect("op");
        assert!(op.narrowed.is_empty(), "no narrowing unless asked");
        for (extra, why) in [
            ("pattern = \"INV-[\"\n", "pattern does not compile"),
            ("pattern = \"\"\n", "pattern must be 1 to 256"),
            (&format!("pattern = \"{}\"\n", "a".repeat(257)), "pattern must be 1 to 256"),
            ("pattern = \"[a-z]+\"\n", "the example breaks the argument's rule"),
            ("pattern = \"a{1000}{1000}\"\n", "pattern does not compile"),
            ("entitled = \"yes\"\n", "invalid type"),
        ] {
            let err = with(rule, &format!("{rule}{extra}")).expect_err(extra);
            assert!(err.contains(why), "{extra}: {err}");
        }
    }

    fn with(edit: &str, replacement: &str) -> Result<Targets, String> {
        assert!(EXAMPLE.contains(edit), "fixture lacks {edit}");
        let (_dir, path) = example_on_disk(&EXAMPLE.replacen(edit, replacement, 1));
        Targets::load(&path).map_err(|e| e.to_string())
    }

    #[test]
    fn each_partner_has_its_own_policy() {
        let (_dir, path) = example_on_disk(EXAMPLE);
        let targets = Targets::load(&path).expect("example");
        let partner = targets.get("partner").expect("partner");
        assert_eq!(partner.signing.alg(), Alg::EdDsa);
        assert_eq!(partner.subject, SubjectKind::Pairwise, "pairwise is the default");
        assert_eq!(partner.claims, ClaimSet::default(), "no profile claims unless listed");
        assert!(partner.lifetime.is_none() && partner.client.is_none());
        let desk = targets.get("desk").expect("desk");
        assert_eq!(desk.signing.alg(), Alg::Hs256);
        assert_eq!(desk.claims, ClaimSet { name: true, ..ClaimSet::default() });
        assert_eq!(desk.lifetime.map(Ttl::as_secs), Some(30));
        let (found, client) = targets.by_client("desk-backend").expect("client");
        assert_eq!(found.id.as_str(), "desk");
        assert_eq!(client.keys.alg(), Alg::Hs256);
        assert!(targets.by_client("partner").is_none());
        // Without the files on disk, a text naming secrets is refused, not half-loaded.
        assert!(Targets::parse(EXAMPLE).unwrap_err().contains("secret_file"));
    }

    #[test]
    fn an_api_client_may_register_public_keys_instead_of_a_secret() {
        let key = handoff::SigningKey::generate().expect("key");
        let text = EXAMPLE.replace(
            "client_secret_file = \"desk-api.secret\"",
            "client_jwks_file = \"desk-api.jwks\"",
        );
        let (dir, path) = example_on_disk(&text);
        let jwks = handoff::Jwks { keys: vec![key.public_jwk()] };
        let jwks_path = dir.path().join("desk-api.jwks");
        std::fs::write(&jwks_path, serde_json::to_vec(&jwks).expect("json")).expect("write");
        let targets = Targets::load(&path).expect("loads");
        let (_, client) = targets.by_client("desk-backend").expect("client");
        assert_eq!(client.keys.alg(), Alg::EdDsa);
        assert!(client.keys.get(key.kid().as_str()).is_some());
        // A key whose kid is not its thumbprint, or no file at all, is refused by name.
        let mut wrong = key.public_jwk();
        wrong.kid = Some("A".repeat(43));
        let bad = handoff::Jwks { keys: vec![wrong] };
        std::fs::write(&jwks_path, serde_json::to_vec(&bad).expect("json")).expect("write");
        let err = Targets::load(&path).unwrap_err().to_string();
        assert!(err.contains("client_jwks_file") && err.contains("thumbprint"), "{err}");
        std::fs::remove_file(&jwks_path).expect("rm");
        assert!(Targets::load(&path).unwrap_err().to_string().contains("desk-api.jwks"));
    }

    #[test]
    fn bad_policies_name_the_fault() {
        let cases = [
            ("algorithm = \"HS256\"", "algorithm = \"HS512\"", "algorithm must be"),
            ("algorithm = \"HS256\"", "algorithm = \"none\"", "algorithm must be"),
            ("algorithm = \"HS256\"", "algorithm = \"EdDSA\"", "secret_file is only for"),
            ("secret_file = \"desk.secret\"", "", "needs secret_file"),
            ("secret_file = \"desk.secret\"", "secret_file = \"missing.secret\"", "missing.secret"),
            ("token_ttl_secs = 30", "token_ttl_secs = 601", "token_ttl_secs"),
            ("token_ttl_secs = 30", "token_ttl_secs = 0", "token_ttl_secs"),
            ("claims = [\"name\"]", "claims = [\"password\"]", "claims may list"),
            ("claims = [\"name\"]", "claims = [\"name\", \"name\"]", "listed twice"),
            ("claims = [\"name\"]", "subject = \"shared\"", "subject must be"),
            ("client_id = \"desk-backend\"", "client_id = \"desk backend\"", "client_id must be"),
            ("client_id = \"desk-backend\"", "", "need client_id"),
            (
                "client_secret_file = \"desk-api.secret\"",
                "client_secret_file = \"desk-api.secret\"\nclient_jwks_file = \"x.json\"",
                "exactly one of",
            ),
            ("client_secret_file = \"desk-api.secret\"", "", "exactly one of"),
        ];
        for (from, to, expected) in cases {
            let err = with(from, to).unwrap_err();
            assert!(err.contains(expected), "{from} -> {to}: {err}");
        }
        // A weak or world-readable secret is refused with its path and the fix.
        let (dir, path) = example_on_disk(EXAMPLE);
        std::fs::remove_file(dir.path().join("desk.secret")).expect("rm");
        std::fs::write(dir.path().join("desk.secret"), "changeme").expect("write");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            dir.path().join("desk.secret"),
            std::fs::Permissions::from_mode(0o600),
        )
        .expect("chmod");
        let weak = Targets::load(&path).unwrap_err().to_string();
        assert!(weak.contains("desk.secret") && weak.contains("at least 32"), "{weak}");
        std::fs::write(
            dir.path().join("desk.secret"),
            [
                7u8, 1, 2, 3, 4, 5, 6, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22,
                23, 24, 25, 26, 27, 28, 29, 30, 31, 32,
            ],
        )
        .expect("write");
        std::fs::set_permissions(
            dir.path().join("desk.secret"),
            std::fs::Permissions::from_mode(0o644),
        )
        .expect("chmod");
        let open = Targets::load(&path).unwrap_err().to_string();
        assert!(open.contains("chmod 600"), "{open}");
        // Two targets may not share a client id.
        // One secret for two purposes is refused.
        let reused = EXAMPLE.replace(
            "client_secret_file = \"desk-api.secret\"",
            "client_secret_file = \"desk.secret\"",
        );
        let (_d, path) = example_on_disk(&reused);
        let err = Targets::load(&path).unwrap_err().to_string();
        assert!(err.contains("holds the same secret as"), "{err}");
        let twice = EXAMPLE.replacen("id = \"partner\"", "id = \"partner\"\nclient_id = \"desk-backend\"\nclient_secret_file = \"partner-api.secret\"", 1);
        let (d, path) = example_on_disk(&twice);
        SharedSecret::create(&d.path().join("partner-api.secret")).expect("secret");
        assert!(Targets::load(&path)
            .unwrap_err()
            .to_string()
            .contains("client_id is another target's"));
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
        let (_dir, path) = example_on_disk(&twice);
        assert!(Targets::load(&path).unwrap_err().to_string().contains("declared twice"));
    }

    #[test]
    fn missing_file_says_what_to_do() {
        let err = Targets::load(Path::new("/nonexistent/targets.toml")).unwrap_err();
        assert!(err.to_string().contains("targets.example.toml"));
    }
}
