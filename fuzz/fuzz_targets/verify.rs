//! Any bytes into the verifier, as SERVER2 receives them: must never panic.
//! The first byte picks the path: raw text, or a header and claims set signed with the
//! verifier's own trusted key (so the claim checks are reached too).
#![no_main]

use std::sync::{Arc, OnceLock};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

use handoff::keys::KeySet;
use handoff::operation::{ArgRule, ArgSpec};
use handoff::{
    ArgName, Audience, Catalog, Issuer, Jwks, Leeway, OperationSpec, OperationType, SigningKey,
    Ttl, UnixTime, Verifier, VerifierSettings,
};
use libfuzzer_sys::fuzz_target;

struct World {
    key: Arc<SigningKey>,
    keys: KeySet,
    verifier: Verifier,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let key = Arc::new(SigningKey::generate().expect("key"));
        let keys = KeySet::from_jwks(&Jwks { keys: vec![key.public_jwk()] }).expect("keys");
        let spec = OperationSpec::new(
            OperationType::parse("report.view").expect("type"),
            vec![ArgSpec {
                name: ArgName::parse("report_id").expect("name"),
                rule: ArgRule::Integer { min: 1, max: 999 },
            }],
        )
        .expect("spec");
        let verifier = Verifier::new(VerifierSettings {
            issuer: Issuer::parse("https://portal.example").expect("iss"),
            audience: Audience::parse("https://partner.example").expect("aud"),
            leeway: Leeway::from_secs(5).expect("leeway"),
            max_lifetime: Ttl::from_secs(120).expect("ttl"),
            catalog: Catalog::new([spec]).expect("catalog"),
            algorithm: handoff::Alg::EdDsa,
        })
        .expect("verifier");
        World { key, keys, verifier }
    })
}

fuzz_target!(|data: &[u8]| {
    let w = world();
    let now = UnixTime::from_secs(1_800_000_000);
    match data.split_first() {
        Some((0, rest)) => {
            // Split the rest into a header and claims at the first 0xff and sign it for real.
            let cut = rest.iter().position(|&b| b == 0xff).unwrap_or(rest.len());
            let (header, claims) = rest.split_at(cut);
            let claims = claims.get(1..).unwrap_or_default();
            let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
            // Seeds write the key id as `KID`; put the trusted key's id there.
            let header = String::from_utf8_lossy(header).replace("KID", w.key.kid().as_str());
            let input = format!("{}.{}", b64(header.as_bytes()), b64(claims));
            let sig = w.key.sign(input.as_bytes());
            let token = format!("{input}.{}", b64(sig.as_ref()));
            let _ = w.verifier.verify_with(&token, &w.keys, now);
        }
        _ => {
            let text = String::from_utf8_lossy(data);
            let _ = w.verifier.verify_with(&text, &w.keys, now);
        }
    }
});

