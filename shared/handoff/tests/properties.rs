//! Property tests: minting and verifying agree for any valid input, any single-byte change to a
//! token is refused, and no parser panics on any input.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, OnceLock};

use handoff::keys::KeySet;
use handoff::operation::{ArgRule, ArgSpec};
use handoff::{
    ArgName, Audience, Catalog, Issuer, Jwks, Leeway, MintRequest, Minter, Nonce, Operation,
    OperationSpec, OperationType, SessionRef, SigningKey, Subject, Ttl, UnixTime, Verifier,
    VerifierSettings,
};
use proptest::prelude::*;

struct World {
    minter: Minter,
    verifier: Verifier,
    keys: KeySet,
    audience: Audience,
    catalog: Catalog,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let key = Arc::new(SigningKey::generate().unwrap());
        let keys = KeySet::from_jwks(&Jwks { keys: vec![key.public_jwk()] }).unwrap();
        let issuer = Issuer::parse("https://portal.example").unwrap();
        let audience = Audience::parse("https://partner.example").unwrap();
        let spec = |kind: &str, arg: &str, rule| {
            OperationSpec::new(
                OperationType::parse(kind).unwrap(),
                vec![ArgSpec { name: ArgName::parse(arg).unwrap(), rule }],
            )
            .unwrap()
        };
        let catalog = Catalog::new([
            spec("report.view", "report_id", ArgRule::Integer { min: 1, max: 999_999_999 }),
            spec("invoice.approve", "invoice_id", ArgRule::Slug { max_len: 32 }),
        ])
        .unwrap();
        let verifier = Verifier::new(VerifierSettings {
            issuer: issuer.clone(),
            audience: audience.clone(),
            leeway: Leeway::from_secs(5).unwrap(),
            max_lifetime: Ttl::from_secs(120).unwrap(),
            catalog: catalog.clone(),
            algorithm: handoff::Alg::EdDsa,
        })
        .unwrap();
        let minter = Minter::new(key, issuer, Ttl::from_secs(60).unwrap());
        World { minter, verifier, keys, audience, catalog }
    })
}

fn chars_of(extra: &'static [char], min: usize, max: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            proptest::char::range('a', 'z'),
            proptest::char::range('A', 'Z'),
            proptest::char::range('0', '9'),
            proptest::sample::select(extra),
        ],
        min..=max,
    )
    .prop_map(|c| c.into_iter().collect())
}

fn subject() -> impl Strategy<Value = Subject> {
    chars_of(&['-', '_', '.', ':'], 1, 128).prop_map(|s| Subject::parse(&s).unwrap())
}

fn b64url(min: usize, max: usize) -> impl Strategy<Value = String> {
    chars_of(&['-', '_'], min, max)
}

fn operation() -> impl Strategy<Value = Operation> {
    prop_oneof![
        (1i64..=999_999_999).prop_map(|id| {
            let spec = world().catalog.get("report.view").unwrap();
            spec.build([("report_id", id.to_string().as_str())]).unwrap()
        }),
        b64url(1, 32).prop_map(|id| {
            let spec = world().catalog.get("invoice.approve").unwrap();
            spec.build([("invoice_id", id.as_str())]).unwrap()
        }),
    ]
}

fn mint(
    sub: &Subject,
    op: &Operation,
    sid: Option<&SessionRef>,
    nonce: Option<&Nonce>,
    now: u64,
) -> String {
    let w = world();
    let request = MintRequest {
        audience: &w.audience,
        subject: sub,
        operation: op,
        sid,
        nonce,
        profile: None,
        lifetime: None,
    };
    w.minter.mint(&request, UnixTime::from_secs(now)).unwrap().into_string()
}

const NOW: u64 = 1_800_000_000;

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn mint_then_verify_round_trips(
        sub in subject(),
        op in operation(),
        sid in proptest::option::of(b64url(1, 128)),
        nonce in proptest::option::of(b64url(22, 64)),
        now in 1_000_000u64..4_000_000_000,
        after in 0u64..65,
    ) {
        let sid = sid.map(|s| SessionRef::parse(&s).unwrap());
        let nonce = nonce.map(|n| Nonce::parse(&n).unwrap());
        let token = mint(&sub, &op, sid.as_ref(), nonce.as_ref(), now);
        let w = world();
        let ok = w.verifier.verify_with(&token, &w.keys, UnixTime::from_secs(now + after)).unwrap();
        prop_assert_eq!(ok.subject(), &sub);
        prop_assert_eq!(ok.operation(), &op);
        prop_assert_eq!(ok.sid(), sid.as_ref());
        prop_assert_eq!(ok.nonce(), nonce.as_ref());
        prop_assert_eq!(ok.issued_at(), UnixTime::from_secs(now));
    }

    #[test]
    fn any_single_byte_change_is_refused(
        sub in subject(),
        op in operation(),
        position in any::<prop::sample::Index>(),
        replacement in any::<u8>(),
    ) {
        let token = mint(&sub, &op, None, None, NOW);
        let mut bytes = token.into_bytes();
        let i = position.index(bytes.len());
        prop_assume!(bytes[i] != replacement);
        bytes[i] = replacement;
        let changed = String::from_utf8_lossy(&bytes);
        let w = world();
        prop_assert!(w.verifier.verify_with(&changed, &w.keys, UnixTime::from_secs(NOW)).is_err());
    }

    #[test]
    fn verifier_never_panics_on_any_string(input in ".{0,600}") {
        let w = world();
        let _ = w.verifier.verify_with(&input, &w.keys, UnixTime::from_secs(NOW));
    }

    #[test]
    fn verifier_never_panics_on_token_shaped_input(
        h in b64url(0, 200),
        p in b64url(0, 400),
        s in b64url(0, 120),
    ) {
        let w = world();
        let _ = w.verifier.verify_with(&format!("{h}.{p}.{s}"), &w.keys, UnixTime::from_secs(NOW));
    }

    #[test]
    fn verifier_never_panics_on_any_header_or_claims_json(claims in ".{0,300}", extra in ".{0,60}") {
        use base64::Engine as _;
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let w = world();
        let header =
            format!(r#"{{"typ":"handoff+jwt","alg":"EdDSA","kid":"{}"{extra}}}"#, w.minter.kid().expect("an Ed25519 minter has a kid"));
        let token = format!("{}.{}.AAAA", b64(&header), b64(&claims));
        let _ = w.verifier.verify_with(&token, &w.keys, UnixTime::from_secs(NOW));
    }

    #[test]
    fn jwks_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600), text in ".{0,300}") {
        let shaped = format!(r#"{{"keys":[{{"kty":"OKP","crv":"Ed25519","x":"{text}"}}]}}"#);
        for input in [&bytes[..], text.as_bytes(), shaped.as_bytes()] {
            if let Ok(jwks) = Jwks::parse(input) {
                let _ = KeySet::from_jwks(&jwks);
            }
        }
    }

    #[test]
    fn value_parsers_never_panic(s in ".{0,300}") {
        let _ = Issuer::parse(&s);
        let _ = Audience::parse(&s);
        let _ = Subject::parse(&s);
        let _ = SessionRef::parse(&s);
        let _ = Nonce::parse(&s);
        let _ = handoff::Jti::parse(&s);
        let _ = handoff::Kid::parse(&s);
        let _ = OperationType::parse(&s);
        let _ = ArgName::parse(&s);
        let _ = serde_json::from_str::<Operation>(&s);
        let rules = [
            ArgRule::Integer { min: -5, max: 5 },
            ArgRule::Slug { max_len: 8 },
            ArgRule::OneOf { values: vec!["a".into()] },
        ];
        for rule in rules {
            let _ = rule.accepts(&s);
        }
    }

    #[test]
    fn operation_json_never_panics(keys in proptest::collection::vec((".{0,12}", ".{0,12}"), 0..20)) {
        let object: serde_json::Map<String, serde_json::Value> =
            keys.into_iter().map(|(k, v)| (k, serde_json::Value::String(v))).collect();
        if let Ok(op) = serde_json::from_value::<Operation>(serde_json::Value::Object(object)) {
            let _ = world().catalog.check(&op);
        }
    }
}
