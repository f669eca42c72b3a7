//! Verifies a handoff token the way a partner's handoff endpoint would, with the `handoff`
//! crate alone doing the token work:
//!
//! ```text
//! verify-handoff --issuer URL --audience URL (--secret-file PATH | --jwks-url URL)
//!                [--operation TYPE] [--seen-file PATH] TOKEN|-
//! ```
//!
//! Exit 0 prints the accepted handoff as JSON; 1 prints `refused: <reason>` on stderr; 2 is a
//! usage error. The token itself is never printed.

use std::io::{Read, Write};

use handoff::{
    Audience, Clock, Issuer, Jwks, KeySet, Leeway, SharedSecret, SystemClock, Ttl, Verifier,
    VerifierSettings,
};
use handoff_partner_example::{catalog, option, usage};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let need =
        |name: &str| option(&args, name).unwrap_or_else(|| usage(&format!("{name} is required")));
    let issuer =
        Issuer::parse(&need("--issuer")).unwrap_or_else(|e| usage(&format!("--issuer: {e}")));
    let audience =
        Audience::parse(&need("--audience")).unwrap_or_else(|e| usage(&format!("--audience: {e}")));
    let mut token = args.last().cloned().unwrap_or_else(|| usage("the token is required"));
    if token == "-" {
        token.clear();
        std::io::stdin().read_to_string(&mut token).unwrap_or_else(|_| usage("cannot read stdin"));
        token = token.trim().to_owned();
    }

    // The issuer's keys fix the algorithm: a secret file means HS256 only, a JWKS EdDSA only.
    let keys = match (option(&args, "--secret-file"), option(&args, "--jwks-url")) {
        (Some(path), None) => SharedSecret::load(path.as_ref())
            .map(|secret| KeySet::shared_secret(&secret))
            .unwrap_or_else(|e| usage(&e.to_string())),
        (None, Some(url)) => match fetch_jwks(&url).await {
            Some(keys) => keys,
            None => refuse("keys unavailable"),
        },
        _ => usage("give exactly one of --secret-file and --jwks-url"),
    };
    handoff::crypto::install().unwrap_or_else(|e| usage(&e.to_string()));
    let verifier = Verifier::new(VerifierSettings {
        issuer,
        audience,
        leeway: Leeway::from_secs(5).expect("5 s is a valid leeway"),
        max_lifetime: Ttl::from_secs(120).expect("120 s is a valid lifetime"),
        catalog: catalog(),
        algorithm: keys.alg(),
    })
    .unwrap_or_else(|e| usage(&e.to_string()));

    // Every check in the protocol's order: size, header, algorithm, key, signature, iss, aud,
    // times, lifetime, the one operation and its arguments.
    let verified = verifier
        .verify_with(&token, &keys, SystemClock.now())
        .unwrap_or_else(|rejection| refuse(&rejection.code().replace('_', " ")));
    let kind = verified.operation().kind().as_str().to_owned();
    if option(&args, "--operation").is_some_and(|wanted| wanted != kind) {
        refuse("wrong operation");
    }
    // Single use, last. A real service records the jti in a store its replicas share, until
    // `verified.replay_until()` (handoff's ReplayStore; SERVER2 uses Redis SET NX).
    if let Some(path) = option(&args, "--seen-file") {
        let seen = std::fs::read_to_string(&path).unwrap_or_default();
        let jti = verified.jti().to_string();
        if seen.lines().any(|line| line == jti) {
            refuse("replayed");
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap_or_else(|e| usage(&format!("--seen-file: {e}")));
        writeln!(file, "{jti}").unwrap_or_else(|e| usage(&format!("--seen-file: {e}")));
    }
    let result = serde_json::json!({
        "sub": verified.subject(),
        "operation": verified.operation(),
        "claims": verified.profile(),
        "jti": verified.jti().to_string(),
    });
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{result}");
}

/// The issuer's key set from its JWKS URL (no redirects, at most 64 KiB), or `None`.
async fn fetch_jwks(url: &str) -> Option<KeySet> {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(std::time::Duration::from_secs(5))
        .build()
        .ok()?;
    let resp = client.get(url).send().await.ok()?.error_for_status().ok()?;
    let bytes = resp.bytes().await.ok()?;
    if bytes.len() > 64 * 1024 {
        return None;
    }
    KeySet::from_jwks(&Jwks::parse(&bytes).ok()?).ok()
}

fn refuse(reason: &str) -> ! {
    eprintln!("refused: {reason}");
    std::process::exit(1)
}
