//! The protocol's constants: what an issuer and a relying party must agree on besides the
//! token itself. Written here once, so the two sides cannot drift apart.

/// Where an issuer publishes its JWKS, relative to its public URL (`iss`).
pub const JWKS_PATH: &str = "/.well-known/jwks.json";

/// How long a relying party may cache an issuer's JWKS, in seconds: the issuer's
/// `Cache-Control: max-age`, the least delay between publishing a new key and signing with it
/// (so every cache has seen the key first), and the relying party's refresh period when a JWKS
/// response carries no `max-age`.
pub const JWKS_MAX_AGE_SECS: u64 = 300;

/// The form field (and query parameter, in redirect mode) that carries a token to a relying
/// party's handoff URL.
pub const TOKEN_FIELD: &str = "token";

/// The issuer's path prefix for starting a handoff: `/handoff/{target}/{operation}?ARG=VALUE…`.
pub const START_PREFIX: &str = "/handoff/";

/// Query parameters of the issuer's start URL that are not operation arguments; no operation
/// may name an argument after one of them.
pub mod start_param {
    /// `form` (the default: a page that POSTs the token) or `redirect` (a 303 with the token in
    /// the query; only for targets that do not bind tokens to the browser).
    pub const MODE: &str = "mode";
    /// The browser-binding nonce the relying party set in this browser; the token carries it.
    pub const NONCE: &str = "nonce";
    /// Set by the issuer itself on a start URL it returns to after sign-in: the sign-in was
    /// the person's click, not consent to the handoff, so the issuer asks first.
    pub const ASK: &str = "ask";
    /// All of them.
    pub const ALL: [&str; 3] = [MODE, NONCE, ASK];
}

/// Query parameters of the relying party's start URL (`/handoff/start` on SERVER2) that are
/// not operation arguments; no operation may name an argument after one of them either.
pub mod relying_start_param {
    /// The operation type.
    pub const TYPE: &str = "type";
    /// The issuer to start the handoff at, when the relying party trusts several.
    pub const ISSUER: &str = "iss";
    /// All of them.
    pub const ALL: [&str; 2] = [TYPE, ISSUER];
}

/// The relying party's start path, where a browser gets its binding nonce.
pub const RELYING_START_PATH: &str = "/handoff/start";

/// The issuer's start path for `operation` on `target`: `/handoff/{target}/{operation}`. Both
/// are short ids and operation types (no character in them needs escaping in a path).
pub fn start_path(target: &str, operation: &str) -> String {
    format!("{START_PREFIX}{target}/{operation}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_start_path_has_the_prefix() {
        assert_eq!(start_path("partner", "report.view"), "/handoff/partner/report.view");
        assert!(start_param::ALL.iter().all(|p| !p.is_empty()));
        assert!(relying_start_param::ALL.iter().all(|p| !start_param::ALL.contains(p)));
    }
}
