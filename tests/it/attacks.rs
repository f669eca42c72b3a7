//! The attack suite: every known way to forge, bend or abuse a handoff token, one test each.
//!
//! Every test submits its token to SERVER2 both as a form POST and as `GET /handoff?token=`, and
//! asserts a 4xx, that nothing was authorized (no cookie, no redirect), that the token is echoed
//! in no response, and that it reached no log line. The servers are shared by the whole suite.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use handoff_tests::*;
use jsonwebtoken::{Algorithm, EncodingKey};
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::{json, Value};

/// Claims SERVER2 would accept.
fn claims(s: &Servers) -> Value {
    claims_for(s, "u_attacker")
}

fn with_claims(s: &Servers, edit: impl FnOnce(&mut Value)) -> String {
    signed_claims(s, "u_attacker", edit)
}

fn with_header(s: &Servers, edit: impl FnOnce(&mut Value)) -> String {
    signed_header(s, "u_attacker", edit)
}

fn percent(bytes: &[u8]) -> String {
    url::form_urlencoded::byte_serialize(bytes).collect()
}

/// Submits `token` both ways and asserts that it was refused and left no trace.
async fn refused(s: &Servers, token: impl AsRef<[u8]>) {
    let token = token.as_ref();
    let c = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let post = c
        .post(format!("{}/handoff", s.server2))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={}", percent(token)))
        .send();
    let path = format!("/handoff?token={}", percent(token));
    if path.len() > 32 * 1024 {
        // Beyond what HTTP clients send (reqwest refuses such URLs): write the request by hand.
        let status = raw_get(&s.server2, &path).await;
        assert!((400..500).contains(&status), "huge GET: expected a 4xx, got {status}");
    } else {
        let resp = c.get(format!("{}{path}", s.server2)).send().await;
        check_refusal("GET", resp, token).await;
    }
    check_refusal("POST", post.await, token).await;
    if token.len() >= 16 {
        let logs = s.all_logs();
        let text = String::from_utf8_lossy(token);
        let tail = text.rsplit('.').next().unwrap_or(&text);
        assert!(!logs.contains(&*text), "the token reached the logs");
        if tail.len() >= 16 {
            assert!(!logs.contains(tail), "the token's signature reached the logs");
        }
    }
}

/// The control for every test below: the helpers, unedited, make tokens SERVER2 accepts, by form
/// POST and by GET (their header goes through the strict JSON reading: serde_json writes its
/// members sorted, not in the minter's order). So each refusal below is the edit's doing.
#[tokio::test]
async fn the_unedited_attack_tokens_are_accepted() {
    let s = spawn().await;
    let c = client();
    let resp = submit(&c, &s.server2, &signed(&s, &server_header(&s), &claims(&s))).await;
    assert_eq!(resp.status(), 303, "form POST");
    let resp = c
        .get(format!("{}/handoff?token={}", s.server2, with_claims(&s, |_| {})))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303, "GET");
    assert_eq!(submit(&c, &s.server2, &with_header(&s, |_| {})).await.status(), 303);
}

/// The status of a GET written by hand on a fresh connection.
async fn raw_get(base: &str, path: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let port = base.rsplit(':').next().unwrap();
    let mut stream = tokio::net::TcpStream::connect(format!("127.0.0.1:{port}")).await.unwrap();
    let request =
        format!("GET {path} HTTP/1.1\r\nhost: localhost:{port}\r\nconnection: close\r\n\r\n");
    // The server may answer and close before reading everything: ignore write errors.
    let _ = stream.write_all(request.as_bytes()).await;
    let mut reply = Vec::new();
    let _ = stream.read_to_end(&mut reply).await;
    let line = String::from_utf8_lossy(&reply[..reply.len().min(64)]).into_owned();
    line.split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {line:?}"))
}

async fn check_refusal(how: &str, resp: reqwest::Result<reqwest::Response>, token: &[u8]) {
    let resp = resp.unwrap_or_else(|e| panic!("{how}: no answer: {e}"));
    let status = resp.status().as_u16();
    assert!((400..500).contains(&status), "{how}: expected a 4xx, got {status}");
    assert!(resp.headers().get("set-cookie").is_none(), "{how}: a cookie was set");
    assert!(resp.headers().get("location").is_none(), "{how}: redirected");
    let body = resp.bytes().await.unwrap();
    if token.len() >= 16 {
        assert!(!contains(&body, token), "{how}: the token was echoed");
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

macro_rules! attack {
    ($(#[$doc:meta])* $name:ident, |$s:ident| $build:expr) => {
        $(#[$doc])*
        #[tokio::test]
        async fn $name() {
            let $s = shared_servers();
            for token in $build {
                refused($s, token).await;
            }
        }
    };
}

fn all<T>(items: impl IntoIterator<Item = T>) -> Vec<T> {
    items.into_iter().collect()
}

fn one(token: String) -> Vec<String> {
    vec![token]
}

// --- algorithm attacks ---

attack!(
    /// `alg: none` in every letter case, with no, a garbage and a genuine signature.
    alg_none_in_every_case, |s| {
        let genuine = signed(s, &server_header(s), &claims(s));
        let real_sig = genuine.rsplit('.').next().unwrap().to_owned();
        let mut tokens = Vec::new();
        for alg in ["none", "None", "NONE", "nOnE"] {
            let h = b64(json!({"typ": "handoff+jwt", "alg": alg, "kid": s.key.kid().as_str()}).to_string().as_bytes());
            let c = b64(claims(s).to_string().as_bytes());
            for sig in ["", "AAAA", real_sig.as_str()] {
                tokens.push(format!("{h}.{c}.{sig}"));
            }
        }
        tokens
    }
);

attack!(
    /// A genuine token with its signature removed.
    signature_stripped, |s| {
        let genuine = signed(s, &server_header(s), &claims(s));
        let (input, _) = genuine.rsplit_once('.').unwrap();
        all([format!("{input}."), input.to_owned()])
    }
);

attack!(
    /// Signed by an Ed25519 key that is not SERVER1's, under its own kid and under SERVER1's.
    signed_by_another_ed25519_key, |s| {
        let other = handoff::SigningKey::generate().unwrap();
        let key = EncodingKey::from_ed_der(other.pkcs8_for_tests());
        let own = json!({"typ": "handoff+jwt", "alg": "EdDSA", "kid": other.kid().as_str()});
        all([
            sign_raw(&own.to_string(), &claims(s).to_string(), Algorithm::EdDSA, &key),
            sign_raw(&server_header(s).to_string(), &claims(s).to_string(), Algorithm::EdDSA, &key),
        ])
    }
);

fn es256_key() -> (Vec<u8>, Vec<u8>) {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let pair =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
    (pkcs8.as_ref().to_vec(), pair.public_key().as_ref().to_vec())
}

attack!(
    /// Signed by an ES256 key.
    signed_by_an_es256_key, |s| {
        let (pkcs8, _) = es256_key();
        let h = json!({"typ": "handoff+jwt", "alg": "ES256", "kid": s.key.kid().as_str()});
        one(sign_raw(&h.to_string(), &claims(s).to_string(), Algorithm::ES256, &EncodingKey::from_ec_der(&pkcs8)))
    }
);

attack!(
    /// ES256 with r = s = 0 (CVE-2022-21449, "psychic signatures").
    es256_psychic_signature, |s| {
        let h = json!({"typ": "handoff+jwt", "alg": "ES256", "kid": s.key.kid().as_str()});
        let input = format!("{}.{}", b64(h.to_string().as_bytes()), b64(claims(s).to_string().as_bytes()));
        all([format!("{input}.{}", b64(&[0u8; 64])), format!("{input}.{}", b64(&[0x30, 0x06, 0x02, 0x01, 0x00, 0x02, 0x01, 0x00]))])
    }
);

/// HS256/384/512 tokens keyed with `secret` (a form of SERVER1's public key).
fn hmac_with(s: &Servers, secret: &[u8]) -> Vec<String> {
    [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512]
        .into_iter()
        .map(|alg| {
            let h = json!({"typ": "handoff+jwt", "alg": format!("{alg:?}"), "kid": s.key.kid().as_str()});
            sign_raw(&h.to_string(), &claims(s).to_string(), alg, &EncodingKey::from_secret(secret))
        })
        .collect()
}

fn public_raw(s: &Servers) -> Vec<u8> {
    s.key.public_key_bytes().to_vec()
}

attack!(
    /// HMAC keyed with the raw 32-byte public key (algorithm confusion).
    hmac_keyed_with_raw_public_key, |s| hmac_with(s, &public_raw(s))
);

attack!(
    /// HMAC keyed with the public key in PEM (SubjectPublicKeyInfo) form.
    hmac_keyed_with_pem_public_key, |s| {
        let mut spki = vec![0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];
        spki.extend_from_slice(&public_raw(s));
        let mut tokens = Vec::new();
        for ending in ["\n", ""] {
            let pem = format!("-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----{ending}", STANDARD.encode(&spki));
            tokens.extend(hmac_with(s, pem.as_bytes()));
        }
        tokens
    }
);

attack!(
    /// HMAC keyed with the public key's JWK text, as published and as served in the JWKS.
    hmac_keyed_with_jwk_public_key, |s| {
        let jwk = serde_json::to_string(&s.key.public_jwk()).unwrap();
        let jwks = serde_json::to_string(&handoff::Jwks { keys: vec![s.key.public_jwk()] }).unwrap();
        let mut tokens = hmac_with(s, jwk.as_bytes());
        tokens.extend(hmac_with(s, jwks.as_bytes()));
        tokens
    }
);

// --- key-selection attacks ---

attack!(
    /// A `jwk` header carrying the attacker's own key.
    embedded_jwk_header, |s| {
        let other = handoff::SigningKey::generate().unwrap();
        let key = EncodingKey::from_ed_der(other.pkcs8_for_tests());
        let jwk = serde_json::to_value(other.public_jwk()).unwrap();
        let mut tokens = Vec::new();
        for kid in [other.kid().as_str(), s.key.kid().as_str()] {
            let h = json!({"typ": "handoff+jwt", "alg": "EdDSA", "kid": kid, "jwk": jwk});
            tokens.push(sign_raw(&h.to_string(), &claims(s).to_string(), Algorithm::EdDSA, &key));
        }
        tokens
    }
);

async fn key_url_header(member: &str) {
    let s = shared_servers();
    let other = handoff::SigningKey::generate().unwrap();
    let jwks = serde_json::to_string(&handoff::Jwks { keys: vec![other.public_jwk()] }).unwrap();
    // A server the attacker runs, which would serve the attacker's key.
    let trap = FaultyJwks::start(JwksFault::Serve(jwks)).await;
    let key = EncodingKey::from_ed_der(other.pkcs8_for_tests());
    for kid in [other.kid().as_str(), s.key.kid().as_str()] {
        let mut h = json!({"typ": "handoff+jwt", "alg": "EdDSA", "kid": kid});
        h[member] = json!(trap.url.as_str());
        refused(s, sign_raw(&h.to_string(), &claims(s).to_string(), Algorithm::EdDSA, &key)).await;
    }
    assert_eq!(trap.hits(), 0, "SERVER2 fetched the URL in `{member}`");
}

/// A `jku` header pointing at a server the attacker runs: refused, and never fetched.
#[tokio::test]
async fn jku_header_is_never_fetched() {
    key_url_header("jku").await;
}

/// An `x5u` header pointing at a server the attacker runs: refused, and never fetched.
#[tokio::test]
async fn x5u_header_is_never_fetched() {
    key_url_header("x5u").await;
}

attack!(
    /// A `kid` SERVER1 never published (but of the right shape).
    kid_unknown, |s| one(with_header(s, |h| h["kid"] = json!(b64(&[7u8; 32]))))
);

attack!(
    /// An empty `kid`, and none at all.
    kid_empty_or_missing, |s| all([
        with_header(s, |h| h["kid"] = json!("")),
        with_header(s, |h| { h.as_object_mut().unwrap().remove("kid"); }),
        with_header(s, |h| h["kid"] = json!(null)),
        with_header(s, |h| h["kid"] = json!(12)),
    ])
);

attack!(
    /// Path-like `kid`s.
    kid_path_like, |s| all(["../../dev/null", "/etc/passwd", "..\\..\\keys\\signing.pk8", "file:///dev/null"]
        .map(|k| with_header(s, |h| h["kid"] = json!(k))))
);

attack!(
    /// Quote-laden and injection-shaped `kid`s.
    kid_quote_laden, |s| all([r#"x" OR "1"="1"#, "' OR 1=1 --", "\"}]}", "kid\u{0000}", "<script>alert(1)</script>"]
        .map(|k| with_header(s, |h| h["kid"] = json!(k))))
);

attack!(
    /// `crit` naming an extension the verifier does not understand.
    crit_with_unknown_extension, |s| all([
        with_header(s, |h| { h["crit"] = json!(["urn:example:must-understand"]); h["urn:example:must-understand"] = json!(true); }),
        with_header(s, |h| h["crit"] = json!(["exp"])),
        with_header(s, |h| h["crit"] = json!([])),
    ])
);

attack!(
    /// RFC 7797 unencoded payload (`b64: false`).
    b64_false, |s| {
        let h = json!({"typ": "handoff+jwt", "alg": "EdDSA", "kid": s.key.kid().as_str(), "b64": false, "crit": ["b64"]});
        let key = server_key(s);
        let c = claims(s).to_string();
        let h64 = b64(h.to_string().as_bytes());
        let sig = jsonwebtoken::crypto::sign(format!("{h64}.{c}").as_bytes(), &key, Algorithm::EdDSA).unwrap();
        all([signed(s, &h, &claims(s)), format!("{h64}.{c}.{sig}"), format!("{h64}..{sig}")])
    }
);

// --- structure attacks ---

attack!(
    /// Duplicate members in the header: parsers disagree on which one wins.
    duplicate_header_keys, |s| {
        let kid = s.key.kid().as_str();
        let key = server_key(s);
        let c = claims(s).to_string();
        all([
            format!(r#"{{"typ":"handoff+jwt","alg":"EdDSA","alg":"none","kid":"{kid}"}}"#),
            format!(r#"{{"typ":"handoff+jwt","alg":"none","alg":"EdDSA","kid":"{kid}"}}"#),
            format!(r#"{{"typ":"JWT","typ":"handoff+jwt","alg":"EdDSA","kid":"{kid}"}}"#),
            format!(r#"{{"typ":"handoff+jwt","alg":"EdDSA","kid":"{kid}","kid":"{kid}"}}"#),
        ]
        .map(|h| sign_raw(&h, &c, Algorithm::EdDSA, &key)))
    }
);

attack!(
    /// Duplicate claims, signed with the real key.
    duplicate_claim_keys, |s| {
        let key = server_key(s);
        let h = server_header(s).to_string();
        let t = now_secs();
        let base = |extra: &str| format!(
            r#"{{"iss":"{}","sub":"u_a","aud":"{}","iat":{t},"nbf":{t},"exp":{},"jti":"{}","authorization_details":[{{"type":"report.view","report_id":"42"}}]{extra}}}"#,
            s.server1, s.server2, t + 60, fresh_jti()
        );
        all([
            base(r#","aud":"https://evil.example""#),
            base(&format!(r#","exp":{}"#, t + 100_000)),
            base(r#","sub":"u_admin""#),
            base(r#","authorization_details":[{"type":"report.view","report_id":"43"}]"#),
        ]
        .map(|c| sign_raw(&h, &c, Algorithm::EdDSA, &key)))
    }
);

attack!(
    /// Claims changed under the original signature.
    claims_tampered_under_the_signature, |s| {
        let genuine = signed(s, &server_header(s), &claims(s));
        let parts: Vec<&str> = genuine.split('.').collect();
        let mut tokens = Vec::new();
        for (field, value) in [("sub", json!("u_admin")), ("exp", json!(now_secs() + 100_000)), ("aud", json!("https://evil.example"))] {
            let mut c = claims(s);
            c[field] = value;
            tokens.push(format!("{}.{}.{}", parts[0], b64(c.to_string().as_bytes()), parts[2]));
        }
        let mut c = token_claims(&genuine);
        c["authorization_details"][0]["report_id"] = json!("43");
        tokens.push(format!("{}.{}.{}", parts[0], b64(c.to_string().as_bytes()), parts[2]));
        tokens
    }
);

// --- claim attacks (all signed with SERVER1's real key) ---

attack!(exp_missing, |s| one(with_claims(s, |c| {
    c.as_object_mut().unwrap().remove("exp");
})));
attack!(exp_in_the_past, |s| one(with_claims(s, |c| {
    let t = now_secs();
    c["iat"] = json!(t - 100);
    c["nbf"] = json!(t - 100);
    c["exp"] = json!(t - 30);
})));
attack!(exp_as_a_string, |s| one(
    with_claims(s, |c| c["exp"] = json!((now_secs() + 60).to_string()))
));
attack!(exp_as_a_float, |s| all([
    with_claims(s, |c| c["exp"] = json!(now_secs() as f64 + 60.5)),
    with_claims(s, |c| c["exp"] = json!(now_secs() as f64 + 60.0)),
    with_claims(s, |c| c["exp"] = json!(1e300)),
]));
attack!(exp_absurdly_large, |s| all([
    with_claims(s, |c| c["exp"] = json!(u64::MAX)),
    with_claims(s, |c| c["exp"] = json!(i64::MAX)),
    with_claims(s, |c| c["exp"] = json!(-1)),
    sign_raw(
        &server_header(s).to_string(),
        &claims(s)
            .to_string()
            .replace(&format!("\"exp\":{}", now_secs() + 60), "\"exp\":99999999999999999999999999"),
        Algorithm::EdDSA,
        &server_key(s)
    ),
]));
attack!(nbf_in_the_future, |s| one(with_claims(s, |c| {
    let t = now_secs();
    c["nbf"] = json!(t + 90);
    c["exp"] = json!(t + 100);
})));
attack!(iat_in_the_future, |s| one(with_claims(s, |c| {
    let t = now_secs();
    c["iat"] = json!(t + 90);
    c["exp"] = json!(t + 100);
})));
attack!(wrong_issuer, |s| all([
    with_claims(s, |c| c["iss"] = json!("https://evil.example")),
    with_claims(s, |c| c["iss"] = json!(format!("{}/", s.server1))),
    with_claims(s, |c| c["iss"] = json!([s.server1])),
]));
attack!(wrong_audience, |s| all([
    with_claims(s, |c| c["aud"] = json!("https://evil.example")),
    with_claims(s, |c| c["aud"] = json!(format!("{}/", s.server2))),
    with_claims(s, |c| c["aud"] = json!(s.server2.to_uppercase())),
]));
attack!(audience_as_an_array, |s| all([
    with_claims(s, |c| c["aud"] = json!([s.server2])),
    with_claims(s, |c| c["aud"] = json!([s.server2, "https://evil.example"])),
]));
attack!(wrong_typ, |s| all([
    with_header(s, |h| h["typ"] = json!("JWT")),
    with_header(s, |h| h["typ"] = json!("HANDOFF+JWT")),
    with_header(s, |h| h["typ"] = json!("application/handoff+jwt")),
    with_header(s, |h| {
        h.as_object_mut().unwrap().remove("typ");
    }),
    with_header(s, |h| h["typ"] = json!("handoff-grant+jwt")),
]));

// --- encoding attacks ---

attack!(
    /// More or fewer than three segments.
    extra_segments, |s| {
        let t = signed(s, &server_header(s), &claims(s));
        all([format!("{t}.{}", t.rsplit('.').next().unwrap()), format!("{t}."), format!(".{t}"), t.replacen('.', "..", 1), t.replace('.', "")])
    }
);

attack!(
    /// Bytes after a genuine token.
    trailing_bytes, |s| {
        let t = signed(s, &server_header(s), &claims(s));
        all([format!("{t}A"), format!("{t}AAAA"), format!("{t}\0"), format!("{t};"), format!("{t}.")])
    }
);

attack!(
    /// base64 padding on any segment.
    padding_characters, |s| {
        let t = signed(s, &server_header(s), &claims(s));
        let p: Vec<&str> = t.split('.').collect();
        all([format!("{}=.{}.{}", p[0], p[1], p[2]), format!("{}.{}=.{}", p[0], p[1], p[2]), format!("{t}=="), format!("{}.{}.{}=", p[0], p[1], p[2])])
    }
);

attack!(
    /// The standard base64 alphabet (`+`, `/`) instead of base64url.
    standard_base64_alphabet, |s| {
        // Make sure every segment has a character that differs between the alphabets.
        let mut tokens = Vec::new();
        for _ in 0..8 {
            let t = signed(s, &server_header(s), &claims(s));
            if t.contains('-') || t.contains('_') {
                tokens.push(t.replace('-', "+").replace('_', "/"));
            }
        }
        let c = STANDARD.encode(claims(s).to_string());
        let h = STANDARD.encode(server_header(s).to_string());
        tokens.push(format!("{h}.{c}.AAAA"));
        tokens
    }
);

attack!(
    /// Whitespace around or inside the token.
    whitespace, |s| {
        let t = signed(s, &server_header(s), &claims(s));
        let (a, b) = t.split_at(10);
        all([format!(" {t}"), format!("{t} "), format!("{t}\n"), format!("{a}\n{b}"), format!("{a} {b}"), t.replace('.', " . "), format!("\t{t}")])
    }
);

attack!(
    /// A 1 MiB token (refused before any parsing).
    one_mebibyte_token, |s| {
        let t = signed(s, &server_header(s), &claims(s));
        let big = format!("{t}{}", "A".repeat(1024 * 1024));
        all([big, "A".repeat(1024 * 1024), format!("{}.{}.{}", "e".repeat(350_000), "e".repeat(350_000), "e".repeat(350_000))])
    }
);

#[tokio::test]
async fn non_utf8_bytes() {
    let s = shared_servers();
    let t = signed(s, &server_header(s), &claims(s));
    let mut raw = t.clone().into_bytes();
    raw.insert(20, 0xff);
    refused(s, &raw).await;
    refused(s, [0xff_u8, 0xfe, b'.', 0xc0, 0x80, b'.', 0xed, 0xa0, 0x80]).await;
    let h = [&b"{\"typ\":\"handoff+jwt\",\"alg\":\"EdDSA\",\"kid\":\"\xff\"}"[..]].concat();
    refused(s, format!("{}.{}.AAAA", b64(&h), b64(claims(s).to_string().as_bytes()))).await;
}

attack!(
    /// Deeply nested JSON in the header and, signed, in the claims.
    deeply_nested_json, |s| {
        let depth = 3000;
        let nested = format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
        let h = format!(r#"{{"typ":"handoff+jwt","alg":"EdDSA","kid":"{}","x":{nested}}}"#, s.key.kid());
        let key = server_key(s);
        let c = claims(s).to_string().replacen('{', &format!(r#"{{"deep":{nested},"#), 1);
        let op_nested = format!("{}\"42\"{}", "[".repeat(200), "]".repeat(200));
        let c2 = claims(s).to_string().replace("\"42\"", &op_nested);
        all([
            sign_raw(&h, &claims(s).to_string(), Algorithm::EdDSA, &key),
            sign_raw(&server_header(s).to_string(), &c, Algorithm::EdDSA, &key),
            sign_raw(&server_header(s).to_string(), &c2, Algorithm::EdDSA, &key),
        ])
    }
);

attack!(
    /// An operation the catalog lacks, a bad argument, extra and missing arguments, two operations.
    operation_abuse, |s| all([
        with_claims(s, |c| c["authorization_details"] = json!([{"type": "admin.everything"}])),
        with_claims(s, |c| c["authorization_details"] = json!([{"type": "report.view", "report_id": "-1"}])),
        with_claims(s, |c| c["authorization_details"] = json!([{"type": "report.view", "report_id": "42", "admin": "1"}])),
        with_claims(s, |c| c["authorization_details"] = json!([{"type": "report.view"}])),
        with_claims(s, |c| c["authorization_details"] = json!([{"type": "report.view", "report_id": "1"}, {"type": "invoice.approve", "invoice_id": "A"}])),
        with_claims(s, |c| c["authorization_details"] = json!({"type": "report.view", "report_id": "42"})),
        with_claims(s, |c| c["authorization_details"] = json!([])),
    ])
);

attack!(
    /// SERVER2's own operation grant presented as a handoff token.
    grant_presented_as_handoff, |s| {
        let grant = handoff::grant::GrantKey::generate().unwrap();
        let g = handoff::grant::Grant {
            aud: handoff::Audience::parse(&s.server2).unwrap(),
            sub: handoff::Subject::parse("u_a").unwrap(),
            handed_by: handoff::Issuer::parse(&s.server1).unwrap(),
            op: server2::operations::catalog().get("report.view").unwrap().build([("report_id", "42")]).unwrap(),
            iat: handoff::UnixTime::from_secs(now_secs()),
            exp: handoff::UnixTime::from_secs(now_secs() + 60),
            jti: handoff::Jti::generate(&SystemRandom::new()).unwrap(),
            sid: None,
            token_iat: None,
            name: None,
        };
        one(grant.seal(&g).unwrap())
    }
);

/// A flood of made-up `kid`s costs the issuer at most one JWKS request per refresh interval.
#[tokio::test]
async fn random_kid_flood_is_rate_limited() {
    // SERVER2's JWKS URL points at a counting server (serving some key set).
    let some_key = handoff::SigningKey::generate().unwrap();
    let jwks = serde_json::to_string(&handoff::Jwks { keys: vec![some_key.public_jwk()] }).unwrap();
    let counter = FaultyJwks::start(JwksFault::Serve(jwks)).await;
    let jwks_url = counter.url.clone();
    let s = spawn_with(|c| c.issuers[0].keys_from = server2::config::KeysFrom::Url(jwks_url)).await;
    assert_eq!(counter.hits(), 1, "one fetch at start-up");
    let started = std::time::Instant::now();
    let c = client();
    let flood = (0..200u8).map(|i| {
        let token = with_header(&s, |h| h["kid"] = json!(b64(&[i; 32])));
        let c = c.clone();
        let url = format!("{}/handoff", s.server2);
        async move { c.post(url).form(&[("token", token)]).send().await.unwrap().status().as_u16() }
    });
    let statuses = futures_join_all(flood).await;
    assert!(statuses.iter().all(|&st| st == 401), "{statuses:?}");
    // The refresh interval is 1 s here: at most one fetch per started second of the flood.
    let allowed = 1 + started.elapsed().as_secs() as usize + 1;
    let fetched = counter.hits();
    assert!(fetched <= allowed, "{fetched} JWKS fetches for 200 unknown kids (allowed {allowed})");
}

/// Handoffs arriving together are checked together (a batch) unless batches are off; either
/// way each gets its own answer: forged signatures among them are refused, and they make no
/// genuine one refused. The batches are seen forming in `handoff_signatures_batched_total`.
#[tokio::test]
async fn concurrent_handoffs_with_forged_signatures_each_get_their_own_answer() {
    for batches in [true, false] {
        let s = spawn_with(|c| c.signature_batches = batches).await;
        let minter = minter(&s, 60);
        let forged = |i: usize| i % 5 == 2;
        let tokens: Vec<String> = (0..40)
            .map(|i| {
                let id = (i + 1).to_string();
                let token =
                    report_token(&minter, &s.server2, "alice", &id, now()).as_str().to_owned();
                if !forged(i) {
                    return token;
                }
                // One bit of the signature's `s` half changed, still base64url.
                let mut bytes = token.into_bytes();
                let at = bytes.len() - 10;
                bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
                String::from_utf8(bytes).unwrap()
            })
            .collect();
        let posts = tokens.into_iter().map(|token| {
            let url = format!("{}/handoff", s.server2);
            async move {
                let c = plain_client();
                c.post(url).form(&[("token", token)]).send().await.unwrap().status().as_u16()
            }
        });
        let statuses = futures_join_all(posts).await;
        let expected: Vec<u16> = (0..40).map(|i| if forged(i) { 401 } else { 303 }).collect();
        assert_eq!(statuses, expected, "batches {batches}");
        let metrics = plain_client().get(s.metrics2()).send().await.unwrap().text().await.unwrap();
        let batched: u64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix("handoff_signatures_batched_total "))
            .and_then(|v| v.parse().ok())
            .expect("the batch counter is exported");
        if batches {
            assert!(batched >= 2, "forty handoffs at once formed no batch");
        } else {
            assert_eq!(batched, 0, "batches are off");
        }
    }
}

/// Runs futures concurrently as tasks of their own and collects their answers in order (no extra
/// dependency for `join_all`).
async fn futures_join_all<F: std::future::Future<Output = u16> + Send + 'static>(
    futures: impl Iterator<Item = F>,
) -> Vec<u16> {
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}
