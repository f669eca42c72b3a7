//! Any bytes as a JWKS document, as SERVER2 fetches or reads it: must never panic.
#![no_main]

use handoff::keys::KeySet;
use handoff::Jwks;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(jwks) = Jwks::parse(data) {
        if let Ok(set) = KeySet::from_jwks(&jwks) {
            for jwk in &jwks.keys {
                let _ = set.get(jwk.kid.as_deref().unwrap_or_default());
            }
        }
    }
});
