//! Calls SERVER1's partner API as a partner's back end: one client token per request, signed
//! with the client secret (HS256) or the partner's own Ed25519 key, naming exactly this request.
//!
//! ```text
//! call-api --server1 URL --client-id ID (--secret-file PATH | --key-file PKCS8_DER) --sub SUB
//! ```
//!
//! Exit 0 prints the answer's JSON; 1 prints `HTTP <status>: <challenge> <body>` on stderr; 2 is
//! a usage error.

use std::io::Write;
use std::sync::Arc;

use handoff::client_auth::{mint_client_auth, ClientRequest};
use handoff::mint::MintKey;
use handoff::{Clock, Issuer, SharedSecret, SigningKey, Subject, SystemClock};
use handoff_partner_example::{option, usage};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let need =
        |name: &str| option(&args, name).unwrap_or_else(|| usage(&format!("{name} is required")));
    // SERVER1's public URL, exactly as it writes `iss` (no trailing slash): the tokens' `aud`.
    let server1 =
        Issuer::parse(&need("--server1")).unwrap_or_else(|e| usage(&format!("--server1: {e}")));
    let client_id = need("--client-id");
    let sub = Subject::parse(&need("--sub")).unwrap_or_else(|e| usage(&format!("--sub: {e}")));
    let key = match (option(&args, "--secret-file"), option(&args, "--key-file")) {
        (Some(path), None) => {
            SharedSecret::load(path.as_ref()).map(|s| MintKey::Hs256(Arc::new(s)))
        }
        (None, Some(path)) => {
            SigningKey::load(path.as_ref()).map(|k| MintKey::Ed25519(Arc::new(k)))
        }
        _ => usage("give exactly one of --secret-file and --key-file"),
    }
    .unwrap_or_else(|e| usage(&e.to_string()));

    // A subject is letters, digits and `-_.:`, all allowed in a path segment as they are.
    let url = server1.join(&format!("/api/v1/users/{sub}"));
    let request = ClientRequest {
        client_id: &client_id,
        audience: &server1,
        htm: "GET",
        htu: &url,
        lifetime_secs: 60,
    };
    let token = mint_client_auth(&key, &request, SystemClock.now())
        .unwrap_or_else(|e| usage(&e.to_string()));
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .unwrap_or_else(|e| usage(&e.to_string()));
    let resp = match client.get(&url).bearer_auth(&token).send().await {
        Ok(resp) => resp,
        Err(e) => {
            eprintln!("cannot reach SERVER1: {}", e.without_url());
            std::process::exit(1)
        }
    };
    let status = resp.status();
    let challenge = resp
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = resp.text().await.unwrap_or_default();
    if status.is_success() {
        let _ = writeln!(std::io::stdout().lock(), "{body}");
    } else {
        eprintln!("HTTP {}: {challenge} {body}", status.as_u16());
        std::process::exit(1)
    }
}
