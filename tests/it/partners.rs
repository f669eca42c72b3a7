//! Several partners, each with its own policy: the example's second partner ("desk") checks
//! HS256 tokens with a secret it shares with SERVER1, receives the user's name and nothing else,
//! knows users by pairwise ids, and its back end calls the partner API with client tokens.
//! Everything over HTTP against both servers, with a second SERVER2 as the desk.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;

use handoff::client_auth::{mint_client_auth, ClientRequest};
use handoff::mint::MintKey;
use handoff::{Issuer, SharedSecret, UnixTime};
use handoff_tests::*;
use serde_json::Value;

/// Both servers and the desk: a second SERVER2 trusting SERVER1 by the desk's shared secret.
struct WithDesk {
    s: Servers,
    desk: String,
    running: InProcess,
}

impl WithDesk {
    fn logs(&self) -> String {
        self.running.logs()
    }

    fn secret(&self, name: &str) -> Arc<SharedSecret> {
        Arc::new(SharedSecret::load(&self.s.dir.path().join(name)).unwrap())
    }
}

/// Starts both servers with the desk partner pointed at a second SERVER2 on its own port;
/// `edit` may change the targets file first (it gets the text and the desk's URL).
async fn spawn_with_desk(edit: impl FnOnce(String, &str) -> String) -> WithDesk {
    let (l3, p3) = listener();
    let desk = format!("http://127.0.0.1:{p3}");
    let desk_for_targets = desk.clone();
    let s = spawn_both(
        move |c| {
            let text = std::fs::read_to_string(&c.targets_file).unwrap();
            let text =
                edit(text.replace("http://127.0.0.1:8003", &desk_for_targets), &desk_for_targets);
            std::fs::write(&c.targets_file, text).unwrap();
        },
        |_| {},
    )
    .await;
    let mut config = server2_config(&s.server1, &desk);
    config.issuers[0].keys_from =
        server2::config::KeysFrom::Secret(s.dir.path().join("desk.secret"));
    config.issuers[0].target_id = "desk".into();
    let running = serve_server2(config, l3).await;
    WithDesk { s, desk, running }
}

/// Saves `name` as the signed-in user's display name on SERVER1's account page.
async fn set_display_name(c: &reqwest::Client, server1: &str, name: &str) {
    let page = text_of(c, &format!("{server1}/account")).await;
    let csrf = form_value(&page, "csrf").expect("the account page's forms");
    let resp = c
        .post(format!("{server1}/account/name"))
        .form(&[("csrf", csrf.as_str()), ("display_name", name)])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303, "saved");
}

#[tokio::test]
async fn an_hs256_partner_gets_the_name_and_a_pairwise_id_and_nothing_else() {
    let w = spawn_with_desk(|t, _| t).await;
    let s = &w.s;
    let alice = client();
    sign_in(&alice, &s.server1, "alice").await;
    set_display_name(&alice, &s.server1, "Alice Example").await;
    let account = text_of(&alice, &format!("{}/account", s.server1)).await;
    assert!(account.contains("value=\"Alice Example\""), "shown on the account page");

    let token = open_handoff(&alice, &s.server1, "/handoff/desk/report.view?report_id=7").await;
    assert_eq!(token_header(&token), serde_json::json!({"typ": "handoff+jwt", "alg": "HS256"}));
    let claims = token_claims(&token);
    assert_eq!(claims["name"], "Alice Example");
    for absent in ["email", "email_verified", "groups"] {
        assert!(claims.get(absent).is_none(), "{absent} is not on the desk's list: {claims}");
    }
    assert_eq!(claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(), 30);
    let desk_sub = claims["sub"].as_str().unwrap().to_owned();
    assert!(desk_sub.starts_with('p'), "pairwise: {desk_sub}");

    assert_eq!(submit(&alice, &w.desk, &token).await.status(), 303, "{}", w.logs());
    let report = text_of(&alice, &format!("{}/reports/7", w.desk)).await;
    assert!(report.contains("Alice Example"), "the desk shows the name: {report}");

    // The first partner lists no claims: it gets none, and another id for the same user.
    let token = open_handoff(&alice, &s.server1, "/handoff/partner/report.view?report_id=42").await;
    let claims = token_claims(&token);
    assert_eq!(token_header(&token)["alg"], "EdDSA");
    for absent in ["name", "email", "email_verified", "groups"] {
        assert!(claims.get(absent).is_none(), "{absent}: {claims}");
    }
    let partner_sub = claims["sub"].as_str().unwrap().to_owned();
    assert!(partner_sub.starts_with('p') && partner_sub != desk_sub, "{partner_sub} {desk_sub}");
    assert_eq!(submit(&alice, &s.server2, &token).await.status(), 303);
    let report = text_of(&alice, &format!("{}/reports/42", s.server2)).await;
    assert!(report.contains(&partner_sub) && !report.contains("Alice Example"), "{report}");

    // Stable per user and partner, different per user.
    let again = open_handoff(&alice, &s.server1, "/handoff/desk/report.view?report_id=8").await;
    assert_eq!(token_claims(&again)["sub"], desk_sub.as_str());
    let bob = client();
    sign_in(&bob, &s.server1, "bob").await;
    let bobs = open_handoff(&bob, &s.server1, "/handoff/desk/report.view?report_id=7").await;
    let bob_sub = token_claims(&bobs)["sub"].as_str().unwrap().to_owned();
    assert!(bob_sub != desk_sub && bob_sub.starts_with('p'));
    assert!(token_claims(&bobs).get("name").is_none(), "bob has no display name");

    // A partner listed as public sees SERVER1's own id.
    drop(w);
    let w = spawn_with_desk(|t, _| {
        t.replace(
            "claims = [\"name\"]",
            "claims = [\"name\", \"email\", \"email_verified\", \"groups\"]\nsubject = \"public\"",
        )
    })
    .await;
    let c = client();
    sign_in(&c, &w.s.server1, "alice").await;
    let token = open_handoff(&c, &w.s.server1, "/handoff/desk/report.view?report_id=7").await;
    let claims = token_claims(&token);
    assert!(claims["sub"].as_str().unwrap().starts_with("u_"), "{claims}");
    assert_eq!(claims["email"], "alice@example.com");
    assert_eq!(claims["email_verified"], true);
    assert_eq!(claims["groups"], serde_json::json!(["billing", "reports"]));
    assert!(claims.get("name").is_none(), "no display name set in this run");
    assert_eq!(submit(&c, &w.desk, &token).await.status(), 303);
}

#[tokio::test]
async fn the_algorithm_is_fixed_per_issuer_whatever_the_token_says() {
    let w = spawn_with_desk(|t, _| t).await;
    let s = &w.s;
    let c = client();
    sign_in(&c, &s.server1, "alice").await;
    let reason_in = |logs: String, reason: &str| logs.contains(&format!("reason=\"{reason}\""));

    // An EdDSA token (the first partner's) at the desk, and the desk's HS256 token at the
    // first partner: each refused for its algorithm before anything else is read.
    let eddsa = open_handoff(&c, &s.server1, "/handoff/partner/report.view?report_id=42").await;
    assert_eq!(submit(&c, &w.desk, &eddsa).await.status(), 401);
    assert!(reason_in(w.logs(), "wrong_algorithm"), "{}", w.logs());
    let hs256 = open_handoff(&c, &s.server1, "/handoff/desk/report.view?report_id=7").await;
    assert_eq!(submit(&c, &s.server2, &hs256).await.status(), 401);
    assert!(reason_in(s.server2_logs(), "wrong_algorithm"), "{}", s.server2_logs());

    // Forgeries at the desk: the desk's claims signed with another secret, with SERVER1's
    // public key as the HMAC key, and with no signature at all.
    let claims = token_claims(&hs256).to_string();
    let header = r#"{"typ":"handoff+jwt","alg":"HS256"}"#;
    let other = jsonwebtoken::EncodingKey::from_secret(b"not the desk's secret, 32+ bytes!");
    let forged = sign_raw(header, &claims, jsonwebtoken::Algorithm::HS256, &other);
    assert_eq!(submit(&c, &w.desk, &forged).await.status(), 401);
    assert!(reason_in(w.logs(), "bad_signature"));
    let public = jsonwebtoken::EncodingKey::from_secret(s.key.public_key_bytes());
    let confused = sign_raw(header, &claims, jsonwebtoken::Algorithm::HS256, &public);
    assert_eq!(submit(&c, &w.desk, &confused).await.status(), 401);
    let none =
        format!("{}.{}.", b64(br#"{"typ":"handoff+jwt","alg":"none"}"#), b64(claims.as_bytes()));
    assert_eq!(submit(&c, &w.desk, &none).await.status(), 400, "no signature: not even a token");
    let none_signed = format!("{none}AAAA");
    assert_eq!(submit(&c, &w.desk, &none_signed).await.status(), 401);
    // The genuine one still works: none of the above used it up.
    assert_eq!(submit(&c, &w.desk, &hs256).await.status(), 303);
}

/// A client token for `GET {server1}{path}` from the desk's back end.
fn client_token(
    w: &WithDesk,
    path: &str,
    edit: impl FnOnce(&mut ClientRequest<'_>, &mut UnixTime),
) -> String {
    let server1 = Issuer::parse(&w.s.server1).unwrap();
    let htu = format!("{}{path}", w.s.server1);
    let mut request = ClientRequest {
        client_id: "desk-backend",
        audience: &server1,
        htm: "GET",
        htu: &htu,
        lifetime_secs: 60,
    };
    let mut at = now();
    edit(&mut request, &mut at);
    mint_client_auth(&MintKey::Hs256(w.secret("desk-api.secret")), &request, at).unwrap()
}

/// `GET {server1}{path}` with `token` as the bearer: status, `WWW-Authenticate`, body.
async fn call(w: &WithDesk, path: &str, token: Option<&str>) -> (u16, String, Value) {
    let mut request = client().get(format!("{}{path}", w.s.server1));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let resp = request.send().await.unwrap();
    let status = resp.status().as_u16();
    let challenge = resp
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, challenge, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn the_partner_api_answers_one_request_per_token_for_users_handed_off() {
    let w = spawn_with_desk(|t, _| t).await;
    let s = &w.s;
    let alice = client();
    sign_in(&alice, &s.server1, "alice").await;
    set_display_name(&alice, &s.server1, "Alice Example").await;
    let token = open_handoff(&alice, &s.server1, "/handoff/desk/report.view?report_id=7").await;
    let sub = token_claims(&token)["sub"].as_str().unwrap().to_owned();
    let path = format!("/api/v1/users/{sub}");

    let (status, _, body) = call(&w, &path, Some(&client_token(&w, &path, |_, _| {}))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, serde_json::json!({"sub": sub, "name": "Alice Example"}), "its claims only");

    let refused = |expected: &'static str| {
        move |(status, challenge, body): (u16, String, Value)| {
            assert_eq!(status, 401, "{expected}: {body}");
            assert!(
                challenge.contains(r#"error="invalid_token""#)
                    && challenge.contains(&format!(r#"error_description="{expected}""#)),
                "{expected}: {challenge}"
            );
            assert_eq!(body["error"], "invalid_token");
        }
    };
    // Replayed: the same token twice.
    let once = client_token(&w, &path, |_, _| {});
    assert_eq!(call(&w, &path, Some(&once)).await.0, 200);
    refused("replayed")(call(&w, &path, Some(&once)).await);
    // Made for another URL, another method, another audience; expired; from a stranger.
    let other_path = "/api/v1/users/pSomebodyElse000000000000000000";
    refused("wrong_request")(call(&w, other_path, Some(&client_token(&w, &path, |_, _| {}))).await);
    refused("wrong_request")(
        call(&w, &path, Some(&client_token(&w, &path, |r, _| r.htm = "POST"))).await,
    );
    let elsewhere = Issuer::parse("https://portal.example").unwrap();
    let token = client_token(&w, &path, |r, _| r.audience = Box::leak(Box::new(elsewhere)));
    refused("wrong_audience")(call(&w, &path, Some(&token)).await);
    let token = client_token(&w, &path, |_, at| *at = UnixTime::from_secs(now_secs() - 400));
    refused("expired")(call(&w, &path, Some(&token)).await);
    let token = client_token(&w, &path, |r, _| r.client_id = "someone-else");
    refused("unknown_client")(call(&w, &path, Some(&token)).await);
    // Signed with the wrong secret, or with an EdDSA key for a client registered with a secret.
    let server1 = Issuer::parse(&s.server1).unwrap();
    let htu = format!("{}{path}", s.server1);
    let request = ClientRequest {
        client_id: "desk-backend",
        audience: &server1,
        htm: "GET",
        htu: &htu,
        lifetime_secs: 60,
    };
    let wrong = w.secret("desk.secret");
    let token = mint_client_auth(&MintKey::Hs256(wrong), &request, now()).unwrap();
    refused("bad_signature")(call(&w, &path, Some(&token)).await);
    let token = mint_client_auth(&MintKey::Ed25519(s.key.clone()), &request, now()).unwrap();
    refused("wrong_algorithm")(call(&w, &path, Some(&token)).await);
    // A handoff token is not a client token, even one for the desk: it names the portal as
    // its issuer, which is no client (the typ check is in the handoff crate's tests).
    let handoff = open_handoff(&alice, &s.server1, "/handoff/desk/report.view?report_id=7").await;
    refused("unknown_client")(call(&w, &path, Some(&handoff)).await);
    // No token: the challenge alone (RFC 6750 §3.1).
    let (status, challenge, _) = call(&w, &path, None).await;
    assert_eq!((status, challenge.as_str()), (401, r#"Bearer realm="handoff""#));

    // A user never handed off to the desk is not there, exactly like one who does not exist.
    let bob = client();
    sign_in(&bob, &s.server1, "bob").await;
    let bobs = open_handoff(&bob, &s.server1, "/handoff/partner/report.view?report_id=42").await;
    let bob_elsewhere = token_claims(&bobs)["sub"].as_str().unwrap().to_owned();
    for missing in [bob_elsewhere.as_str(), "pNobody0000000000000000000000000", "u_not!valid"] {
        let path = format!("/api/v1/users/{missing}");
        let (status, challenge, body) =
            call(&w, &path, Some(&client_token(&w, &path, |_, _| {}))).await;
        assert_eq!((status, body), (404, serde_json::json!({"error": "not_found"})), "{missing}");
        assert!(challenge.is_empty());
    }
    // A user who may no longer open anything at the desk is not there any more either.
    let url = std::fs::read_to_string(s.dir.path().join("database_url")).unwrap();
    let pool = server1::db::PoolSettings { size: 1, timeout: std::time::Duration::from_secs(10) };
    let db = server1::db::Db::open(
        &server1::db::DatabaseUrl::parse(&url).unwrap(),
        server1::db::OpenMode::Existing,
        pool,
    )
    .await
    .unwrap();
    let name = server1::names::UserName::parse("alice").unwrap();
    let (user, _) = db.user_by_name(&name).await.unwrap().unwrap();
    assert!(db.set_roles(&user.id, &[]).await.unwrap());
    let (status, _, _) = call(&w, &path, Some(&client_token(&w, &path, |_, _| {}))).await;
    assert_eq!(status, 404, "no role for any of the desk's operations");

    let metrics = text_of(&client(), &s.metrics1()).await;
    assert!(
        metrics.contains(r#"partner_api_requests_total{outcome="replayed",reason="replayed"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"partner_api_requests_total{outcome="not_found",reason=""} 4"#));
}

#[tokio::test]
async fn a_logout_reaches_the_hs256_partner_signed_with_its_secret() {
    let w = spawn_with_desk(|t, desk| {
        let entry = format!("handoff_url = \"{desk}/handoff\"");
        t.replace(
            &entry,
            &format!("{entry}\nbackchannel_logout_url = \"{desk}/backchannel-logout\""),
        )
    })
    .await;
    let c = client();
    sign_in(&c, &w.s.server1, "alice").await;
    let token = open_handoff(&c, &w.s.server1, "/handoff/desk/report.view?report_id=7").await;
    assert_eq!(submit(&c, &w.desk, &token).await.status(), 303);
    let report = format!("{}/reports/7", w.desk);
    assert_eq!(status_of(&c, &report).await, 200);

    // Signing out on the portal: the desk hears of it (an HS256 logout token naming the
    // session as the desk knows it) and ends the grant.
    let page = text_of(&c, &format!("{}/", w.s.server1)).await;
    let csrf = form_value(&page, "csrf").expect("the sign-out form");
    let resp =
        c.post(format!("{}/logout", w.s.server1)).form(&[("csrf", csrf)]).send().await.unwrap();
    assert_eq!(resp.status(), 303);
    let started = std::time::Instant::now();
    while status_of(&c, &report).await != 403 {
        assert!(started.elapsed() < std::time::Duration::from_secs(10), "{}", w.logs());
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(w.logs().contains("backchannel"), "{}", w.logs());
}

#[test]
fn server2_explains_an_hs256_token() {
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("portal.secret");
    let secret = Arc::new(SharedSecret::create(&secret_file).unwrap());
    let (issuer, audience) = ("http://127.0.0.1:8001", "http://127.0.0.1:8003");
    let minter = handoff::Minter::new(
        MintKey::Hs256(secret),
        Issuer::parse(issuer).unwrap(),
        handoff::Ttl::from_secs(30).unwrap(),
    );
    let explain = |token: &str| {
        let mut child = Command::new(binary("server2"))
            .env_clear()
            .env("SERVER2_PUBLIC_URL", audience)
            .env("SERVER2_ISSUER", issuer)
            .env("SERVER2_ISSUER_SECRET_FILE", &secret_file)
            .env("SERVER2_UNBOUND_HANDOFFS", "accept")
            .args(["explain", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(format!("{token}\n").as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        (out.status.code(), String::from_utf8(out.stdout).unwrap())
    };
    let valid = report_token(&minter, audience, "p_alice", "7", now()).into_string();
    let (code, text) = explain(&valid);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("(handoff+jwt, HS256, the shared secret)"), "{text}");

    let key = Arc::new(handoff::SigningKey::generate().unwrap());
    let eddsa = handoff::Minter::new(
        key,
        Issuer::parse(issuer).unwrap(),
        handoff::Ttl::from_secs(30).unwrap(),
    );
    let (code, text) = explain(report_token(&eddsa, audience, "p_alice", "7", now()).as_str());
    assert_eq!(code, Some(1));
    assert!(
        text.contains("FAIL  size, shape and header: wrong_algorithm")
            && text.contains("this issuer's tokens are HS256")
            && text.contains(r#"received alg "EdDSA""#),
        "{text}"
    );

    let other =
        Arc::new(SharedSecret::from_bytes(b"another secret, thirty-two bytes!", "t").unwrap());
    let forger = handoff::Minter::new(
        MintKey::Hs256(other),
        Issuer::parse(issuer).unwrap(),
        handoff::Ttl::from_secs(30).unwrap(),
    );
    let (code, text) = explain(report_token(&forger, audience, "p_alice", "7", now()).as_str());
    assert_eq!(code, Some(1));
    assert!(text.contains("bad_signature") && text.contains("byte for byte"), "{text}");
}

/// One of the partner examples in `examples/`: its command line, by language.
fn example(language: &str, program: &str) -> Command {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("examples");
    match language {
        "python" => {
            let mut cmd = Command::new("python3");
            cmd.arg(root.join("python").join(format!("{program}.py")));
            cmd
        }
        "node" => {
            assert!(
                root.join("node/node_modules/jose").exists(),
                "run `npm ci --prefix examples/node` first (.ci/run does)"
            );
            let mut cmd = Command::new("node");
            cmd.arg(root.join("node").join(format!("{program}.mjs")));
            cmd
        }
        _ => Command::new(binary(&program.replace('_', "-"))),
    }
}

/// Runs `cmd`: exit code, stdout, stderr.
fn run(mut cmd: Command) -> (Option<i32>, String, String) {
    let out = cmd.stdin(Stdio::null()).output().unwrap();
    let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
    (out.status.code(), text(out.stdout), text(out.stderr))
}

/// The examples docs/partners.md shows, run against the real SERVER1: each language accepts
/// the desk's HS256 handoff and the first partner's EdDSA one, refuses the wrong algorithm and
/// a replay, and calls the partner API with the desk's client secret.
#[tokio::test]
async fn the_partner_examples_work_against_the_real_portal_in_three_languages() {
    let w = spawn_with_desk(|t, _| t).await;
    let s = &w.s;
    let alice = client();
    sign_in(&alice, &s.server1, "alice").await;
    set_display_name(&alice, &s.server1, "Alice Example").await;
    let desk_token =
        open_handoff(&alice, &s.server1, "/handoff/desk/report.view?report_id=7").await;
    let desk_sub = token_claims(&desk_token)["sub"].as_str().unwrap().to_owned();
    let partner_token =
        open_handoff(&alice, &s.server1, "/handoff/partner/report.view?report_id=42").await;
    let secret = s.dir.path().join("desk.secret");
    let api_secret = s.dir.path().join("desk-api.secret");
    let jwks = format!("{}/.well-known/jwks.json", s.server1);

    for language in ["python", "node", "rust"] {
        let seen = s.dir.path().join(format!("seen-{language}"));
        let verify = |audience: &str, keys: [&str; 2], token: &str| {
            let mut cmd = example(language, "verify_handoff");
            cmd.args(["--issuer", &s.server1, "--audience", audience])
                .args(keys)
                .args(["--operation", "report.view", "--seen-file"])
                .arg(&seen)
                .arg(token);
            run(cmd)
        };
        let secret_arg = ["--secret-file", secret.to_str().unwrap()];
        let (code, out, err) = verify(&w.desk, secret_arg, &desk_token);
        assert_eq!(code, Some(0), "{language}: {err}");
        let accepted: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(accepted["sub"], desk_sub.as_str(), "{language}: {out}");
        assert_eq!(accepted["claims"], serde_json::json!({"name": "Alice Example"}), "{language}");
        assert_eq!(accepted["operation"]["report_id"], "7", "{language}");
        assert!(!out.contains(&desk_token) && !err.contains(&desk_token), "{language}");
        let (code, _, err) = verify(&w.desk, secret_arg, &desk_token);
        assert_eq!((code, err.trim()), (Some(1), "refused: replayed"), "{language}");
        let (code, _, err) = verify(&w.desk, secret_arg, &partner_token);
        assert_eq!((code, err.trim()), (Some(1), "refused: wrong algorithm"), "{language}");
        let (code, out, err) = verify(&s.server2, ["--jwks-url", &jwks], &partner_token);
        assert_eq!(code, Some(0), "{language}: {err}");
        assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["claims"], serde_json::json!({}));
        let (code, _, err) = verify(&s.server2, ["--jwks-url", &jwks], &desk_token);
        assert_eq!((code, err.trim()), (Some(1), "refused: wrong algorithm"), "{language}");

        let call = |sub: &str| {
            let mut cmd = example(language, "call_api");
            cmd.args(["--server1", &s.server1, "--client-id", "desk-backend", "--secret-file"])
                .arg(&api_secret)
                .args(["--sub", sub]);
            run(cmd)
        };
        let (code, out, err) = call(&desk_sub);
        assert_eq!(code, Some(0), "{language}: {err}");
        let answer: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(answer, serde_json::json!({"sub": desk_sub, "name": "Alice Example"}));
        let (code, _, err) = call("pNeverHandedOff000000000000000000");
        assert_eq!(code, Some(1), "{language}");
        assert!(err.contains("HTTP 404"), "{language}: {err}");
    }
}

/// A token for `op` with `args` from `minter`, to `audience`.
fn op_token(minter: &handoff::Minter, audience: &str, op: &str, args: &[(&str, &str)]) -> String {
    let op = server2::operations::catalog().get(op).unwrap().build(args.iter().copied()).unwrap();
    let request = handoff::MintRequest {
        audience: &handoff::Audience::parse(audience).unwrap(),
        subject: &handoff::Subject::parse("p_someone").unwrap(),
        operation: &op,
        sid: None,
        nonce: None,
        profile: None,
        lifetime: None,
    };
    minter.mint(&request, now()).unwrap().into_string()
}

/// SERVER2 trusting two issuers, each with its own keys, algorithm and operations: the portal
/// (EdDSA, its JWKS) may open reports, a billing system (HS256, a shared secret) may approve
/// invoices. Neither can grant the other's operation, sign with the other's algorithm, or pass
/// for a third issuer.
#[tokio::test]
async fn two_issuers_each_grant_only_their_own_operations() {
    let dir = tempfile::tempdir().unwrap();
    let billing_secret = dir.path().join("billing.secret");
    let secret = Arc::new(SharedSecret::create(&billing_secret).unwrap());
    let billing = "https://billing.example";
    let file = billing_secret.clone();
    let s = spawn_with(move |c| {
        c.issuers[0].operations = Some(vec!["report.view".into()]);
        c.issuers.push(server2::config::IssuerConfig {
            issuer: Issuer::parse(billing).unwrap(),
            keys_from: server2::config::KeysFrom::Secret(file),
            target_id: "partner".into(),
            operations: Some(vec!["invoice.approve".into()]),
        });
    })
    .await;
    let ttl = handoff::Ttl::from_secs(60).unwrap();
    let billing_minter =
        handoff::Minter::new(MintKey::Hs256(secret), Issuer::parse(billing).unwrap(), ttl);
    let portal_minter = minter(&s, 60);
    let reason = |reason: &str| s.server2_logs().contains(&format!("reason=\"{reason}\""));
    let c = client();

    let report = op_token(&portal_minter, &s.server2, "report.view", &[("report_id", "42")]);
    assert_eq!(submit(&c, &s.server2, &report).await.status(), 303);
    let invoice =
        op_token(&billing_minter, &s.server2, "invoice.approve", &[("invoice_id", "INV-9")]);
    let billed = client();
    let resp = submit(&billed, &s.server2, &invoice).await;
    assert_eq!(resp.status(), 303);
    assert_eq!(resp.headers()["location"], "/invoices/INV-9/approve");

    // The billing system logs out "its" p_someone: its own grant ends, the portal's grant for
    // a user with the same id does not (logouts are kept per issuer).
    let ended = handoff::logout::Ended {
        sid: None,
        sub: Some(handoff::Subject::parse("p_someone").unwrap()),
    };
    let shared = Arc::new(SharedSecret::load(&billing_secret).unwrap());
    let (logout, _) = handoff::logout::mint_logout(
        &MintKey::Hs256(shared),
        &Issuer::parse(billing).unwrap(),
        &handoff::Audience::parse(&s.server2).unwrap(),
        &ended,
        now(),
    )
    .unwrap();
    let resp = client()
        .post(format!("{}/backchannel-logout", s.server2))
        .form(&[("logout_token", logout.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", s.server2_logs());
    assert_eq!(status_of(&billed, &format!("{}/invoices/INV-9/approve", s.server2)).await, 403);
    assert_eq!(status_of(&c, &format!("{}/reports/42", s.server2)).await, 200);

    // Each other's operations.
    let portal_invoice =
        op_token(&portal_minter, &s.server2, "invoice.approve", &[("invoice_id", "INV-9")]);
    assert_eq!(submit(&client(), &s.server2, &portal_invoice).await.status(), 401);
    assert!(reason("unknown_operation"));
    let billing_report =
        op_token(&billing_minter, &s.server2, "report.view", &[("report_id", "1")]);
    assert_eq!(submit(&client(), &s.server2, &billing_report).await.status(), 401);

    // The billing system's `iss` with the portal's algorithm, and the reverse.
    let forged = handoff::Minter::new(s.key.clone(), Issuer::parse(billing).unwrap(), ttl);
    let eddsa_billing =
        op_token(&forged, &s.server2, "invoice.approve", &[("invoice_id", "INV-9")]);
    assert_eq!(submit(&client(), &s.server2, &eddsa_billing).await.status(), 401);
    assert!(reason("wrong_algorithm"));
    let shared = Arc::new(SharedSecret::load(&billing_secret).unwrap());
    let hs_portal =
        handoff::Minter::new(MintKey::Hs256(shared), Issuer::parse(&s.server1).unwrap(), ttl);
    let hs_report = op_token(&hs_portal, &s.server2, "report.view", &[("report_id", "42")]);
    assert_eq!(submit(&client(), &s.server2, &hs_report).await.status(), 401);

    // A third issuer is nobody here, whatever it signs with.
    let stranger = handoff::Minter::new(
        s.key.clone(),
        Issuer::parse("https://stranger.example").unwrap(),
        ttl,
    );
    let token = op_token(&stranger, &s.server2, "report.view", &[("report_id", "42")]);
    assert_eq!(submit(&client(), &s.server2, &token).await.status(), 401);
    assert!(reason("unknown_issuer"));
    let metrics = text_of(&client(), &s.metrics2()).await;
    assert!(metrics.contains(r#"handoff_rejected_total{reason="unknown_issuer"} 1"#), "{metrics}");
}

/// `SERVER2_ISSUERS_FILE` on the real binary: `explain` picks the issuer a token claims.
#[test]
fn server2_reads_an_issuers_file() {
    let dir = tempfile::tempdir().unwrap();
    let secret = Arc::new(SharedSecret::create(&dir.path().join("billing.secret")).unwrap());
    let key = Arc::new(handoff::SigningKey::generate().unwrap());
    let jwks = handoff::Jwks { keys: vec![key.public_jwk()] };
    std::fs::write(dir.path().join("portal.jwks"), serde_json::to_string(&jwks).unwrap()).unwrap();
    let issuers = dir.path().join("issuers.toml");
    std::fs::write(
        &issuers,
        "[[issuer]]\niss = \"https://portal.example\"\njwks_file = \"portal.jwks\"\n\
         operations = [\"report.view\"]\n\n\
         [[issuer]]\niss = \"https://billing.example\"\nsecret_file = \"billing.secret\"\n\
         operations = [\"invoice.approve\"]\n",
    )
    .unwrap();
    let audience = "http://localhost:8002";
    let explain = |token: &str, extra: &[(&str, &str)]| {
        let mut cmd = Command::new(binary("server2"));
        cmd.env_clear()
            .env("SERVER2_PUBLIC_URL", audience)
            .env("SERVER2_ISSUERS_FILE", &issuers)
            .env("SERVER2_UNBOUND_HANDOFFS", "accept")
            .envs(extra.iter().copied())
            .args(["explain", token]);
        run(cmd)
    };
    let ttl = handoff::Ttl::from_secs(60).unwrap();
    let billing = handoff::Minter::new(
        MintKey::Hs256(secret),
        Issuer::parse("https://billing.example").unwrap(),
        ttl,
    );
    let token = op_token(&billing, audience, "invoice.approve", &[("invoice_id", "INV-1")]);
    let (code, out, err) = explain(&token, &[]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("ok    the issuer (https://billing.example)"), "{out}");
    assert!(out.contains("HS256"), "{out}");
    let portal = handoff::Minter::new(key, Issuer::parse("https://portal.example").unwrap(), ttl);
    let token = op_token(&portal, audience, "invoice.approve", &[("invoice_id", "INV-1")]);
    let (code, out, _) = explain(&token, &[]);
    assert_eq!(code, Some(1));
    assert!(out.contains("unknown_operation"), "the portal may not approve invoices: {out}");
    let stranger = handoff::Minter::new(
        Arc::new(handoff::SigningKey::generate().unwrap()),
        Issuer::parse("https://stranger.example").unwrap(),
        ttl,
    );
    let token = op_token(&stranger, audience, "report.view", &[("report_id", "1")]);
    let (code, out, _) = explain(&token, &[]);
    assert_eq!(code, Some(1));
    assert!(
        out.contains("FAIL  the issuer: unknown_issuer")
            && out.contains(r#"received iss "https://stranger.example""#),
        "{out}"
    );
    // The file and the single-issuer variables do not mix.
    let (code, _, err) = explain(&token, &[("SERVER2_ISSUER", "https://portal.example")]);
    assert_eq!(code, Some(1));
    assert!(err.contains("SERVER2_ISSUERS_FILE") && err.contains("SERVER2_ISSUER"), "{err}");
}
