//! `cargo bench -p handoff`: minting and verifying beside ring's raw Ed25519 sign and verify, in
//! one run, then the ratios (how much of each operation's cost is the signature itself).
#![allow(clippy::unwrap_used, clippy::print_stdout, missing_docs)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use criterion::{black_box, Criterion};
use handoff::keys::KeySet;
use handoff::operation::{ArgRule, ArgSpec};
use handoff::{
    ArgName, Audience, Catalog, Issuer, Jwks, Leeway, MintRequest, Minter, OperationSpec,
    OperationType, SigningKey, Subject, Ttl, UnixTime, Verifier, VerifierSettings,
};
use ring::signature::{UnparsedPublicKey, ED25519};

const NOW: UnixTime = UnixTime::from_secs(1_800_000_000);

fn benches(c: &mut Criterion) {
    let key = Arc::new(SigningKey::generate().unwrap());
    let keys = KeySet::from_jwks(&Jwks { keys: vec![key.public_jwk()] }).unwrap();
    let issuer = Issuer::parse("https://portal.example").unwrap();
    let audience = Audience::parse("https://partner.example").unwrap();
    let spec = OperationSpec::new(
        OperationType::parse("report.view").unwrap(),
        vec![ArgSpec {
            name: ArgName::parse("report_id").unwrap(),
            rule: ArgRule::Integer { min: 1, max: 999_999_999 },
        }],
    )
    .unwrap();
    let op = spec.build([("report_id", "42")]).unwrap();
    let verifier = Verifier::new(VerifierSettings {
        issuer: issuer.clone(),
        audience: audience.clone(),
        leeway: Leeway::from_secs(5).unwrap(),
        max_lifetime: Ttl::from_secs(120).unwrap(),
        catalog: Catalog::new([spec]).unwrap(),
        algorithm: handoff::Alg::EdDsa,
    })
    .unwrap();
    let minter = Minter::new(key.clone(), issuer, Ttl::from_secs(60).unwrap());
    let subject = Subject::parse("u_8Eap1pJNrQsrksk4fxUUxQ").unwrap();
    let request = MintRequest {
        audience: &audience,
        subject: &subject,
        operation: &op,
        sid: None,
        nonce: None,
        profile: None,
        lifetime: None,
    };
    let token = minter.mint(&request, NOW).unwrap().into_string();
    let (input, sig) = token.rsplit_once('.').unwrap();
    let signature = URL_SAFE_NO_PAD.decode(sig).unwrap();
    let public = key.public_key_bytes().to_vec();
    let raw = UnparsedPublicKey::new(&ED25519, &public);

    let mut g = c.benchmark_group("handoff");
    g.measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    g.bench_function("ring_sign", |b| b.iter(|| key.sign(black_box(input.as_bytes()))));
    g.bench_function("mint", |b| b.iter(|| minter.mint(black_box(&request), NOW).unwrap()));
    g.bench_function("ring_verify", |b| {
        b.iter(|| raw.verify(black_box(input.as_bytes()), black_box(&signature)).unwrap())
    });
    g.bench_function("verify", |b| {
        b.iter(|| verifier.verify_with(black_box(&token), &keys, NOW).unwrap())
    });
    g.bench_function("reject_garbage", |b| {
        b.iter(|| verifier.verify_with(black_box("not-a-token"), &keys, NOW).unwrap_err())
    });
    g.finish();
}

/// The mean time of one benchmark, in nanoseconds, from criterion's own report.
fn mean_ns(dir: &std::path::Path, name: &str) -> Option<f64> {
    let text =
        std::fs::read_to_string(dir.join("handoff").join(name).join("new").join("estimates.json"))
            .ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    json["mean"]["point_estimate"].as_f64()
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    benches(&mut c);
    c.final_summary();
    // target/release/deps/handoff-… → target/criterion
    let dir = std::env::var_os("CRITERION_HOME").map(PathBuf::from).unwrap_or_else(|| {
        let exe = std::env::current_exe().unwrap();
        exe.ancestors().nth(3).unwrap().join("criterion")
    });
    let m = |n| mean_ns(&dir, n);
    if let (Some(sign), Some(mint), Some(ring), Some(verify), Some(garbage)) =
        (m("ring_sign"), m("mint"), m("ring_verify"), m("verify"), m("reject_garbage"))
    {
        println!();
        println!(
            "mint:    {mint:>8.0} ns = {:.0}% of ring's sign rate ({sign:.0} ns)",
            100.0 * sign / mint
        );
        println!(
            "verify:  {verify:>8.0} ns = {:.0}% of ring's verify rate ({ring:.0} ns)",
            100.0 * ring / verify
        );
        println!("garbage: {garbage:>8.0} ns = {:.0}x faster than a verify", verify / garbage);
    }
}
