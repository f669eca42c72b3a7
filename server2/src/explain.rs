//! `server2 explain TOKEN`: every check SERVER2 makes of a handoff token, in order, with its
//! outcome — without recording the `jti`, so the token stays usable. For the first failure it
//! prints the reason code and a hint a partner's developer can act on: the clock difference
//! for time errors, the expected and received `iss`/`aud`, the known key ids for an unknown one.
//! Every reason code is explained in `docs/errors.md`.

use std::fmt::Write as _;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use handoff::Rejection;

use crate::config::{Config, IssuerConfig, UnboundHandoffs};
use crate::issuers::Issuers;
use crate::refusal::{Policy, Refusal};

/// What `explain` found.
#[derive(Debug)]
pub struct Report {
    /// The checks, in order: name, and `Ok(detail)` or `Err(reason)`.
    pub lines: String,
    /// The first refusal, if any.
    pub refusal: Option<Refusal>,
}

/// The token's claims, read without trusting them (for hints only).
fn claims_of(token: &str) -> Option<serde_json::Value> {
    let payload = token.split('.').nth(1)?;
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()
}

fn hint(
    refusal: Refusal,
    config: &Config,
    issuer: &IssuerConfig,
    token: &str,
    keys: &[String],
) -> String {
    let claims = claims_of(token).unwrap_or_default();
    let now = config.clock.now().as_secs();
    let num = |name: &str| claims.get(name).and_then(serde_json::Value::as_u64);
    let text = |name: &str| claims.get(name).map_or_else(|| "(none)".to_owned(), |v| v.to_string());
    match refusal {
        Refusal::Token(Rejection::Expired) => match num("exp") {
            Some(exp) => format!(
                "the token expired {} s ago by this server's clock (exp {exp}, now {now}, leeway {} s); ask the portal for a new one, and check both clocks if this happens to fresh tokens",
                now.saturating_sub(exp),
                config.leeway.as_secs()
            ),
            None => "the token has no usable exp".into(),
        },
        Refusal::Token(Rejection::NotYetValid | Rejection::IssuedInFuture) => {
            let ahead = num("iat").max(num("nbf")).unwrap_or(0).saturating_sub(now);
            format!(
                "the issuer's clock is {ahead} s ahead of this server's (leeway {} s): synchronise both with NTP",
                config.leeway.as_secs()
            )
        }
        Refusal::Token(Rejection::WrongAudience) => format!(
            "expected aud \"{}\" (SERVER2_PUBLIC_URL), received {}",
            config.public_url.as_str(),
            text("aud")
        ),
        Refusal::Token(Rejection::WrongIssuer) => format!(
            "expected iss \"{}\" (SERVER2_ISSUER), received {}",
            issuer.issuer.as_str(),
            text("iss")
        ),
        Refusal::Token(Rejection::UnknownIssuer) => format!(
            "this server trusts the issuers [{}] (SERVER2_ISSUERS_FILE), received iss {}",
            config.issuers.iter().map(|i| format!("\"{}\"", i.issuer)).collect::<Vec<_>>().join(", "),
            text("iss")
        ),
        Refusal::Token(Rejection::UnknownKid) => format!(
            "the issuer's keys are [{}]; a newer key is fetched within the JWKS cache time, an older one may have been retired",
            keys.join(", ")
        ),
        Refusal::Token(Rejection::LifetimeTooLong) => format!(
            "exp - iat is {} s; this server accepts at most {} s (SERVER2_MAX_TOKEN_LIFETIME_SECS)",
            num("exp").unwrap_or(0).saturating_sub(num("iat").unwrap_or(0)),
            config.max_token_lifetime.as_secs()
        ),
        Refusal::Token(Rejection::UnknownOperation | Rejection::BadOperationArgument) => format!(
            "authorization_details is {}; see the operations this server performs in the README",
            text("authorization_details")
        ),
        Refusal::Token(Rejection::WrongAlgorithm) => {
            let header = token
                .split('.')
                .next()
                .and_then(|h| URL_SAFE_NO_PAD.decode(h).ok())
                .and_then(|h| serde_json::from_slice::<serde_json::Value>(&h).ok())
                .and_then(|h| h.get("alg").map(ToString::to_string))
                .unwrap_or_else(|| "(none)".to_owned());
            let alg = issuer.keys_from.alg();
            format!(
                "this issuer's tokens are {alg} (fixed by SERVER2_{}), received alg {header}; the token's header never chooses the algorithm",
                if alg == handoff::Alg::Hs256 { "ISSUER_SECRET_FILE" } else { "JWKS_URL or SERVER2_JWKS_FILE" }
            )
        }
        Refusal::Token(Rejection::BadSignature) if issuer.keys_from.alg() == handoff::Alg::Hs256 => {
            "the signature does not match this server's shared secret (SERVER2_ISSUER_SECRET_FILE): check both sides hold the same file, byte for byte".into()
        }
        Refusal::Policy(Policy::UnboundRefused) => {
            "the token carries no browser nonce, and this server takes only browser-bound handoffs (the default; SERVER2_UNBOUND_HANDOFFS=accept takes unbound tokens from clients that are not browsers): start at /handoff/start".into()
        }
        _ => String::new(),
    }
}

/// Runs every check of `token` against `config`, loading the issuer's keys (the pinned file, or
/// one fetch of the JWKS).
///
/// # Errors
///
/// When the verifier cannot be set up or the keys cannot be loaded.
pub async fn explain(config: &Config, token: &str) -> Result<Report, String> {
    let issuers = Issuers::new(config, None).map_err(|e| e.to_string())?;
    let mut lines = String::new();
    let fail = |step: &'static str, refusal: Refusal| Some((step, refusal));
    // The issuer first: the only one, or the one the token claims.
    let trusted = match issuers.for_token(token) {
        Ok(t) => t,
        Err(r) => {
            let refusal = Refusal::from(r);
            let _ = writeln!(lines, "FAIL  the issuer: {}", refusal.code());
            let hint = hint(refusal, config, &issuers.primary().config, token, &[]);
            if !hint.is_empty() {
                let _ = writeln!(lines, "      hint: {hint}");
            }
            let _ = writeln!(lines, "      see docs/errors.md#{}", refusal.code());
            return Ok(Report { lines, refusal: Some(refusal) });
        }
    };
    if issuers.iter().count() > 1 {
        let _ = writeln!(lines, "ok    the issuer ({})", trusted.config.issuer);
    }
    trusted.keys.refresh().await.map_err(|e| format!("cannot load the issuer's keys: {e}"))?;
    let keys = &trusted.keys;
    let verifier = &trusted.verifier;
    let known: Vec<String> =
        keys.current().map(|set| set.kids().map(str::to_owned).collect()).unwrap_or_default();
    let failure = 'checks: {
        let inspected = match verifier.inspect(token) {
            Ok(i) => i,
            Err(r) => break 'checks fail("size, shape and header", r.into()),
        };
        let kid = inspected.kid().as_str().to_owned();
        let alg = trusted.config.keys_from.alg();
        let named = if alg == handoff::Alg::Hs256 {
            "the shared secret".to_owned()
        } else {
            format!("kid {kid}")
        };
        let _ = writeln!(lines, "ok    size, shape and header (handoff+jwt, {alg}, {named})");
        let Some(key) = keys.current().and_then(|set| set.get(&kid).cloned()) else {
            break 'checks fail("the issuer's key", Rejection::UnknownKid.into());
        };
        let _ = writeln!(lines, "ok    the issuer's key ({} known)", known.len());
        let verified = match verifier.verify(inspected, &key, config.clock.now()) {
            Ok(v) => v,
            Err(r) => break 'checks fail("signature and claims", r.into()),
        };
        let _ = writeln!(
            lines,
            "ok    signature and claims (sub {}, {}, expires {})",
            verified.subject(),
            verified.operation().kind(),
            verified.expires_at()
        );
        match (verified.nonce(), config.unbound_handoffs) {
            (Some(_), _) => {
                let _ = writeln!(lines, "note  bound to a browser: only the browser with the matching nonce cookie can use it");
            }
            (None, UnboundHandoffs::Refuse) => {
                break 'checks fail("browser binding", Policy::UnboundRefused.into());
            }
            (None, UnboundHandoffs::Accept) => {
                let _ = writeln!(lines, "ok    browser binding (unbound tokens are accepted here)");
            }
        }
        let _ = writeln!(
            lines,
            "skip  single use: explain never records the jti, so the token stays usable"
        );
        None
    };
    if let Some((step, refusal)) = failure {
        let _ = writeln!(lines, "FAIL  {step}: {}", refusal.code());
        let hint = hint(refusal, config, &trusted.config, token, &known);
        if !hint.is_empty() {
            let _ = writeln!(lines, "      hint: {hint}");
        }
        let _ = writeln!(lines, "      see docs/errors.md#{}", refusal.code());
    }
    Ok(Report { lines, refusal: failure.map(|(_, r)| r) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_code_is_explained_in_the_docs() {
        let docs = include_str!("../../docs/errors.md");
        for refusal in Refusal::all() {
            assert!(
                docs.contains(&format!("\n## {}\n", refusal.code())),
                "docs/errors.md has no entry for {}",
                refusal.code()
            );
        }
    }
}
