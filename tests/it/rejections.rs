//! Every way a handoff must fail, one test each: each asserts the rejection and that nothing was
//! authorized (no operation cookie, no access to the operation page).

use handoff::{Issuer, Minter, SigningKey, Ttl, UnixTime};
use handoff_tests::*;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{json, Value};
use std::sync::Arc;

fn claims(s: &Servers) -> Value {
    claims_for(s, "u_alice")
}

/// [`claims`] changed by `edit`, signed by SERVER1's real key.
fn with_claims(s: &Servers, edit: impl FnOnce(&mut Value)) -> String {
    signed_claims(s, "u_alice", edit)
}

/// Submits `token` with a fresh client; asserts a 4xx and that nothing was authorized.
async fn assert_refused(s: &Servers, token: &str) -> (u16, String) {
    let c = client();
    let resp = submit(&c, &s.server2, token).await;
    let status = resp.status().as_u16();
    assert!((400..500).contains(&status), "expected a 4xx, got {status}");
    assert!(resp.headers().get("set-cookie").is_none(), "a refused handoff sets no cookie");
    assert!(resp.headers().get("location").is_none(), "a refused handoff redirects nowhere");
    let body = resp.text().await.unwrap();
    if token.len() > 20 {
        assert!(!body.contains(token), "the token is never echoed");
    }
    let page = c.get(format!("{}/reports/42", s.server2)).send().await.unwrap();
    assert_eq!(page.status(), 403, "nothing was authorized");
    (status, body)
}

/// The positive control for the forged-token tests below: the same helpers, unmodified, make a
/// token SERVER2 accepts, so each refusal is down to the one thing its test changes.
#[tokio::test]
async fn baseline_signed_token_is_accepted() {
    let s = spawn().await;
    let token = signed(&s, &server_header(&s), &claims(&s));
    let c = client();
    let resp = submit(&c, &s.server2, &token).await;
    assert_eq!(resp.status(), 303);
    assert_eq!(status_of(&c, &format!("{}/reports/42", s.server2)).await, 200);
}

#[tokio::test]
async fn expired_operation_cookie_is_refused() {
    let clock = manual_clock();
    let s = spawn_clocked(&clock).await;
    let c = client();
    sign_in(&c, &s.server1, "alice").await;
    let token = open_handoff(&c, &s.server1, "/handoff/partner/report.view?report_id=42").await;
    let landed = submit(&c, &s.server2, &token).await;
    assert_eq!(landed.status(), 303);
    assert_eq!(status_of(&c, &format!("{}/reports/42", s.server2)).await, 200);
    clock.advance(600);
    let later = c.get(format!("{}/reports/42", s.server2)).send().await.unwrap();
    assert_eq!(later.status(), 403);
    assert!(later.text().await.unwrap().contains("has ended"));
}

#[tokio::test]
async fn replayed_token_is_refused() {
    let s = spawn().await;
    let c = client();
    sign_in(&c, &s.server1, "alice").await;
    let token = open_handoff(&c, &s.server1, "/handoff/partner/report.view?report_id=42").await;
    let first = submit(&c, &s.server2, &token).await;
    assert_eq!(first.status(), 303);
    let (_, body) = assert_refused(&s, &token).await;
    assert!(body.contains("already used"), "{body}");
}

#[tokio::test]
async fn expired_token_says_go_back_and_try_again() {
    let s = spawn().await;
    let minter = minter(&s, 60);
    let token =
        report_token(&minter, &s.server2, "u_alice", "42", UnixTime::from_secs(now_secs() - 600));
    let (status, body) = assert_refused(&s, token.as_str()).await;
    assert_eq!(status, 401);
    assert!(body.contains("expired"), "{body}");
    assert!(body.contains("Go back to the portal and try again"));
    assert!(body.contains(&format!("href=\"{}\"", s.server1)), "links back to SERVER1");
    // And developers to the class's entry among the reason codes, which SERVER2 serves.
    let about = format!("{}/errors#class-expired", s.server2);
    assert!(body.contains(&format!("href=\"{about}\"")), "{body}");
    assert!(!body.contains("expired\u{201d} means") || body.contains("class-expired"));
    // The same as problem+json for API clients.
    let json = client()
        .post(format!("{}/handoff", s.server2))
        .header("accept", "application/json")
        .form(&[("token", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(json.headers()["content-type"], "application/problem+json");
    let problem: Value = json.json().await.unwrap();
    assert_eq!(problem["type"], about.as_str());
    let docs = client().get(format!("{}/errors", s.server2)).send().await.unwrap();
    assert_eq!(docs.status(), 200);
    assert_eq!(docs.headers()["content-type"], "text/markdown; charset=utf-8");
    let docs = docs.text().await.unwrap();
    assert!(docs.contains("\n### class-expired\n") && docs.contains("\n## expired\n"));
    assert_eq!(problem["status"], 401);
    assert!(problem["title"].is_string() && problem["detail"].is_string());
}

#[tokio::test]
async fn not_yet_valid_token_is_refused() {
    let s = spawn().await;
    let t = now_secs();
    let token = with_claims(&s, |c| {
        c["nbf"] = json!(t + 120);
        c["exp"] = json!(t + 150);
    });
    let (_, body) = assert_refused(&s, &token).await;
    assert!(body.contains("not valid yet"));
    // The skew is measured for operators.
    let metrics = text_of(&client(), &s.metrics2()).await;
    let ahead: i64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("issuer_clock_ahead_seconds "))
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!((118..=121).contains(&ahead), "{ahead}");
}

#[tokio::test]
async fn wrong_audience_is_refused() {
    let s = spawn().await;
    let token = with_claims(&s, |c| c["aud"] = json!("https://someone-else.example"));
    assert_refused(&s, &token).await;
}

#[tokio::test]
async fn wrong_issuer_is_refused() {
    let s = spawn().await;
    let token = with_claims(&s, |c| c["iss"] = json!("https://evil.example"));
    assert_refused(&s, &token).await;
}

#[tokio::test]
async fn token_from_another_key_is_refused() {
    let s = spawn().await;
    let other = Arc::new(SigningKey::generate().unwrap());
    let minter =
        Minter::new(other.clone(), Issuer::parse(&s.server1).unwrap(), Ttl::from_secs(60).unwrap());
    let own_kid = report_token(&minter, &s.server2, "u_alice", "42", now());
    assert_refused(&s, own_kid.as_str()).await;
    // Another key claiming SERVER1's kid.
    let forged = sign_raw(
        &server_header(&s).to_string(),
        &claims(&s).to_string(),
        Algorithm::EdDSA,
        &EncodingKey::from_ed_der(other.pkcs8_for_tests()),
    );
    assert_refused(&s, &forged).await;
}

#[tokio::test]
async fn tampered_claim_is_refused() {
    let s = spawn().await;
    let token = signed(&s, &server_header(&s), &claims(&s));
    let parts: Vec<&str> = token.split('.').collect();
    let mut c = token_claims(&token);
    c["authorization_details"][0]["report_id"] = json!("43");
    let payload = b64(&serde_json::to_vec(&c).unwrap());
    assert_refused(&s, &format!("{}.{payload}.{}", parts[0], parts[2])).await;
}

#[tokio::test]
async fn alg_none_is_refused() {
    let s = spawn().await;
    let header = json!({"alg": "none", "typ": "handoff+jwt", "kid": s.key.kid().as_str()});
    let h = b64(&serde_json::to_vec(&header).unwrap());
    let p = b64(&serde_json::to_vec(&claims(&s)).unwrap());
    assert_refused(&s, &format!("{h}.{p}.")).await;
    assert_refused(&s, &format!("{h}.{p}.AAAA")).await;
}

#[tokio::test]
async fn hs256_signed_with_the_public_key_is_refused() {
    let s = spawn().await;
    let public = s.key.public_key_bytes().to_vec();
    let mut header = server_header(&s);
    header["alg"] = json!("HS256");
    let forged = sign_raw(
        &header.to_string(),
        &claims(&s).to_string(),
        Algorithm::HS256,
        &EncodingKey::from_secret(&public),
    );
    assert_refused(&s, &forged).await;
}

#[tokio::test]
async fn wrong_typ_is_refused() {
    let s = spawn().await;
    assert_refused(&s, &signed_header(&s, "u_alice", |h| h["typ"] = json!("JWT"))).await;
}

#[tokio::test]
async fn lifetime_over_the_maximum_is_refused() {
    let s = spawn().await;
    // SERVER2 accepts at most 120 s between iat and exp.
    let long = minter(&s, 600);
    let token = report_token(&long, &s.server2, "u_alice", "42", now());
    assert_refused(&s, token.as_str()).await;
}

#[tokio::test]
async fn unknown_operation_is_refused() {
    let s = spawn().await;
    let token = with_claims(&s, |c| {
        c["authorization_details"] = json!([{"type": "admin.delete_everything"}])
    });
    assert_refused(&s, &token).await;
}

#[tokio::test]
async fn bad_operation_argument_is_refused_on_both_sides() {
    let s = spawn().await;
    let token = with_claims(&s, |c| {
        c["authorization_details"] =
            json!([{"type": "report.view", "report_id": "42; DROP TABLE"}]);
    });
    assert_refused(&s, &token).await;

    let browser = client();
    sign_in(&browser, &s.server1, "alice").await;
    for query in [
        "report_id=abc",
        "report_id=0",
        "",
        "report_id=1&report_id=2",
        "report_id=1&extra=1",
        "report_id=1&mode=teleport",
    ] {
        let resp = browser
            .get(format!("{}/handoff/partner/report.view?{query}", s.server1))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{query}");
        let body = resp.text().await.unwrap();
        assert!(!body.contains("name=\"token\""), "no token minted for {query}");
    }
}

#[tokio::test]
async fn grant_for_one_operation_does_not_open_another() {
    let s = spawn().await;
    let c = client();
    sign_in(&c, &s.server1, "alice").await;
    let token = open_handoff(&c, &s.server1, "/handoff/partner/report.view?report_id=42").await;
    let landed = submit(&c, &s.server2, &token).await;
    assert_eq!(landed.status(), 303);
    assert_eq!(status_of(&c, &format!("{}/reports/42", s.server2)).await, 200);
    let other = c.get(format!("{}/invoices/42/approve", s.server2)).send().await.unwrap();
    assert_eq!(other.status(), 403);
    let post = c
        .post(format!("{}/invoices/42/approve", s.server2))
        .form(&[("csrf", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 403);
    // Refused for the missing grant, before the form's token is even looked at.
    let body = post.text().await.unwrap();
    assert!(body.contains("Not allowed") && !body.contains("form has expired"), "{body}");
    // A forged cookie is no grant either.
    let forged = reqwest::Client::new()
        .get(format!("{}/reports/42", s.server2))
        .header("cookie", format!("__Host-handoff_grant={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
}

#[tokio::test]
async fn target_not_in_registry_is_404_without_redirect() {
    let s = spawn().await;
    let c = client();
    sign_in(&c, &s.server1, "alice").await;
    for path in [
        "/handoff/evil/report.view?report_id=1",
        "/handoff/partner/admin.everything",
        "/handoff/https%3A%2F%2Fevil.example/report.view",
    ] {
        let resp = c.get(format!("{}{path}", s.server1)).send().await.unwrap();
        assert_eq!(resp.status(), 404, "{path}");
        assert!(resp.headers().get("location").is_none());
        assert!(!resp.text().await.unwrap().contains("name=\"token\""));
    }
}

#[tokio::test]
async fn missing_role_is_refused() {
    let s = spawn().await;
    let c = client();
    sign_in(&c, &s.server1, "bob").await;
    let resp = c
        .get(format!("{}/handoff/partner/invoice.approve?invoice_id=X1", s.server1))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert!(resp.text().await.unwrap().contains("billing"));
}

#[tokio::test]
async fn not_signed_in_goes_to_sign_in_and_back() {
    let s = spawn().await;
    let c = client();
    let path = "/handoff/partner/report.view?report_id=42";
    let resp = c.get(format!("{}{path}", s.server1)).send().await.unwrap();
    assert_eq!(resp.status(), 303);
    let location = resp.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.starts_with("/login?next="), "{location}");
    let back = try_sign_in(&c, &s.server1, "alice", PASSWORD, Some(path)).await;
    assert_eq!(back.status(), 303);
    // Back to the handoff, which asks first: the click was on "Sign in", not on the handoff.
    let back_to = format!("{path}&ask=1");
    assert_eq!(back.headers()["location"], back_to.as_str());
    let page = c
        .get(format!("{}{back_to}", s.server1))
        .header("sec-fetch-site", "same-origin")
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("name=\"approval\""));
    // An off-site `next` is ignored.
    let c2 = client();
    let off = try_sign_in(&c2, &s.server1, "alice", PASSWORD, Some("//evil.example/")).await;
    assert_eq!(off.headers()["location"], "/");
}

#[tokio::test]
async fn wrong_password_and_unknown_user_look_the_same() {
    let s = spawn().await;
    let c = client();
    let wrong = try_sign_in(&c, &s.server1, "alice", "not the password", None).await;
    assert_eq!(wrong.status(), 401);
    let wrong_body = wrong.text().await.unwrap();
    assert!(wrong_body.contains("Wrong user name or password."));
    let unknown = try_sign_in(&c, &s.server1, "mallory", "not the password", None).await;
    assert_eq!(unknown.status(), 401);
    assert!(unknown.text().await.unwrap().contains("Wrong user name or password."));
    assert_eq!(status_of(&c, &format!("{}/", s.server1)).await, 303, "not signed in");
}

#[tokio::test]
async fn csrf_token_missing_is_refused() {
    let s = spawn().await;
    let c = client();
    // Sign-in without the form's token (the login cookie alone is not enough).
    let _ = c.get(format!("{}/login", s.server1)).send().await.unwrap();
    let resp = c
        .post(format!("{}/login", s.server1))
        .form(&[("username", "alice"), ("password", PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert_eq!(status_of(&c, &format!("{}/", s.server1)).await, 303, "not signed in");
    // A token from another browser's login cookie does not work either.
    let other = client();
    let page =
        other.get(format!("{}/login", s.server1)).send().await.unwrap().text().await.unwrap();
    let stolen = form_value(&page, "csrf").unwrap();
    let resp = c
        .post(format!("{}/login", s.server1))
        .form(&[("username", "alice"), ("password", PASSWORD), ("csrf", &stolen)])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    // Sign-out without the token keeps the session.
    sign_in(&c, &s.server1, "alice").await;
    let out = c.post(format!("{}/logout", s.server1)).form(&[("csrf", "")]).send().await.unwrap();
    assert_eq!(out.status(), 403);
    assert_eq!(status_of(&c, &format!("{}/", s.server1)).await, 200, "still signed in");
}

#[tokio::test]
async fn oversized_and_garbage_tokens_are_4xx() {
    let s = spawn().await;
    let big = "a".repeat(9 * 1024);
    let (status, _) = assert_refused(&s, &big).await;
    assert_eq!(status, 413);
    for garbage in ["", "x", "a.b.c", "....", "\u{00e9}.\u{00e9}.\u{00e9}"] {
        assert_refused(&s, garbage).await;
    }
    // GET with no token, or two.
    let c = client();
    assert_eq!(status_of(&c, &format!("{}/handoff", s.server2)).await, 400);
    assert_eq!(status_of(&c, &format!("{}/handoff?token=a&token=b", s.server2)).await, 400);
    // A body over the limit, around a valid token: refused for its size (413) before the token
    // is read, so the token is still good afterwards.
    let token = report_token(&minter(&s, 60), &s.server2, "alice", "8", now()).into_string();
    let padded = c
        .post(format!("{}/handoff", s.server2))
        .form(&[("token", token.as_str()), ("pad", &"p".repeat(20 * 1024))])
        .send()
        .await
        .unwrap();
    assert_eq!(padded.status(), 413);
    assert_eq!(submit(&c, &s.server2, &token).await.status(), 303, "the token was not used up");
}

#[tokio::test]
async fn tokens_never_reach_the_logs() {
    // Both deliveries: the redirect is only for a target that does not bind its tokens.
    let s = spawn_with_targets(unbinding_partner).await;
    let c = client();
    sign_in(&c, &s.server1, "alice").await;
    let mut tokens = Vec::new();
    for mode in ["", "&mode=redirect"] {
        let resp = c
            .get(format!("{}/handoff/partner/report.view?report_id=9{mode}", s.server1))
            .header("sec-fetch-site", "same-origin")
            .send()
            .await
            .unwrap();
        let token = if mode.is_empty() {
            form_value(&resp.text().await.unwrap(), "token").unwrap()
        } else {
            let location = resp.headers()["location"].to_str().unwrap().to_owned();
            let _ = c.get(&location).send().await.unwrap();
            location.split("token=").nth(1).unwrap().to_owned()
        };
        tokens.push(token);
    }
    let _ = c
        .post(format!("{}/handoff", s.server2))
        .form(&[("token", &tokens[0])])
        .send()
        .await
        .unwrap();
    let _ = c
        .post(format!("{}/handoff", s.server2))
        .form(&[("token", &tokens[0])])
        .send()
        .await
        .unwrap();
    let logs = s.all_logs();
    // One audit event per accept and per reject, naming the token by its jti (never the token).
    let jti = token_claims(&tokens[0])["jti"].as_str().unwrap().to_owned();
    let events: Vec<&str> = logs.lines().filter(|l| l.contains(&jti)).collect();
    assert!(events.iter().any(|l| l.contains("event=\"handoff.minted\"")), "{events:?}");
    assert!(
        // The partner knows the user by a pairwise id (`p…`), never SERVER1's own.
        events.iter().any(|l| l.contains("event=\"handoff.accepted\"") && l.contains("sub=p")),
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .any(|l| l.contains("event=\"handoff.rejected\"") && l.contains("reason=\"replayed\"")),
        "{events:?}"
    );

    for token in &tokens {
        let signature = token.rsplit('.').next().unwrap();
        assert!(!logs.contains(signature), "a token signature reached the logs");
    }
    assert!(!logs.contains(PASSWORD), "a password reached the logs");
}

/// The in-memory replay store starts empty with the process, so a token issued before SERVER2
/// started is refused: it may have been used with the previous process.
#[tokio::test]
async fn tokens_issued_before_a_restart_are_refused() {
    let clock = manual_clock();
    let start = handoff::Clock::now(&*clock);
    let s = spawn_clocked(&clock).await;
    let minter = minter(&s, 60);
    let before = report_token(&minter, &s.server2, "u_alice", "42", start.minus(5));
    let (status, body) = assert_refused(&s, before.as_str()).await;
    assert_eq!(status, 401);
    assert!(body.contains("restarted"), "{body}");
    assert!(s.server2_logs().contains(&format!("jti=\"{}\"", before.jti())));
    let after = report_token(&minter, &s.server2, "u_alice", "42", start);
    let ok = submit(&client(), &s.server2, after.as_str()).await;
    assert_eq!(ok.status(), 303);
}

#[tokio::test]
async fn posted_tokens_are_read_however_the_form_is_written() {
    let s = spawn().await;
    let m = minter(&s, 60);
    let fresh = |id: &str| report_token(&m, &s.server2, "alice", id, now()).into_string();
    let c = client();
    let post = |body: String, content_type: Option<&'static str>| {
        let mut req = c.post(format!("{}/handoff", s.server2)).body(body);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        req.send()
    };
    const FORM: &str = "application/x-www-form-urlencoded";
    // Percent-encoded dots and another field before it: decoded like any form.
    let encoded = fresh("11").replace('.', "%2E");
    let resp = post(format!("lang=en&token={encoded}"), Some(FORM)).await.unwrap();
    assert_eq!(resp.status(), 303, "percent-encoded token");
    // A content type with parameters goes through the general form reader.
    let resp = post(
        format!("token={}", fresh("12")),
        Some("application/x-www-form-urlencoded; charset=utf-8"),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 303, "content type with a charset");
    // Not a form at all, or no content type: 415, and the token is not used up.
    let kept = fresh("13");
    for ct in [Some("text/plain"), Some("application/json"), None] {
        let resp = post(format!("token={kept}"), ct).await.unwrap();
        assert_eq!(resp.status(), 415, "{ct:?}");
    }
    assert_eq!(
        post(format!("token={kept}"), Some(FORM)).await.unwrap().status(),
        303,
        "still usable"
    );
    // Two tokens, an empty one, or none: refused as malformed.
    let two = format!("token={}&token={}", fresh("14"), fresh("15"));
    for body in [two, "token=".to_owned(), "other=1".to_owned()] {
        let resp = post(body.clone(), Some(FORM)).await.unwrap();
        assert_eq!(resp.status(), 400, "{body}");
    }
}

/// Servers whose SERVER2 logs `per_sec` unsigned refusals a second, on a manual clock.
async fn with_log_budget(per_sec: u32) -> (Arc<handoff::ManualClock>, Servers) {
    let clock = manual_clock();
    let s = spawn_clocked_with(&clock, |c| c.unsigned_refusal_logs_per_sec = per_sec).await;
    (clock, s)
}

/// The log lines of `event` this test's SERVER2 wrote.
fn log_lines(s: &Servers, event: &str) -> Vec<String> {
    let event = format!("event=\"{event}\"");
    s.server2_logs().lines().filter(|l| l.contains(&event)).map(str::to_owned).collect()
}

#[tokio::test]
async fn a_garbage_flood_is_counted_in_full_but_logged_within_its_budget() {
    let (clock, s) = with_log_budget(2).await;
    let c = client();
    let lines = |event: &str| log_lines(&s, event).len();
    for _ in 0..10 {
        assert_eq!(submit(&c, &s.server2, "this-is-not-a-token").await.status(), 400);
    }
    // A token whose signature held is always logged, budget or not.
    let token = report_token(&minter(&s, 60), &s.server2, "alice", "5", now()).into_string();
    assert_eq!(submit(&c, &s.server2, &token).await.status(), 303);
    // Each refusal is logged before its response is sent: no waiting for the lines.
    assert_eq!(submit(&c, &s.server2, &token).await.status(), 401);
    assert_eq!(lines("handoff.rejected"), 3, "two garbage lines and the replay");
    assert_eq!(lines("handoff.rejected.suppressed"), 0);
    // The next second: the suppressed eight are reported once.
    clock.advance(1);
    assert_eq!(submit(&c, &s.server2, "still-not-a-token").await.status(), 400);
    assert_eq!(lines("handoff.rejected"), 4);
    let summary =
        log_lines(&s, "handoff.rejected.suppressed").into_iter().next().expect("a summary line");
    assert!(summary.contains("count=8"), "{summary}");
    let metrics = text_of(&c, &s.metrics2()).await;
    assert!(
        metrics.contains("handoff_rejected_total{reason=\"malformed\"} 11"),
        "every refusal counted"
    );
}

/// A flood that stops is still summed up: with no later refusal to carry the count, SERVER2's
/// 5-second background task writes the summary line.
#[tokio::test]
async fn held_back_refusals_are_summed_up_by_the_background_task_when_the_flood_stops() {
    let (clock, s) = with_log_budget(1).await;
    let c = client();
    let summaries = || log_lines(&s, "handoff.rejected.suppressed");
    for _ in 0..5 {
        assert_eq!(submit(&c, &s.server2, "this-is-not-a-token").await.status(), 400);
    }
    // Same second: nothing to report yet, and no request follows to report it.
    clock.advance(1);
    let waited = std::time::Instant::now();
    let summary = loop {
        if let Some(line) = summaries().into_iter().next() {
            break line;
        }
        assert!(
            waited.elapsed() < std::time::Duration::from_secs(12),
            "no summary line from the background task"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert!(summary.contains("count=4"), "{summary}");
}

/// A full replay store refuses new handoffs (503) rather than forget a live one: every token it
/// did take stays refused as a replay, and the refusal is counted.
#[tokio::test]
async fn a_full_replay_store_refuses_instead_of_forgetting() {
    // 16 shards of one entry each.
    let s = spawn_with(|c| c.replay_capacity = 16).await;
    let m = minter(&s, 60);
    let c = client();
    let (mut taken, mut refused) = (Vec::new(), 0);
    for i in 0..40 {
        let token =
            report_token(&m, &s.server2, "alice", &(100 + i).to_string(), now()).into_string();
        // A browser each, so no handoff meets another user's grant.
        let resp = submit(&client(), &s.server2, &token).await;
        match resp.status().as_u16() {
            303 => taken.push(token),
            503 => {
                refused += 1;
                let body = resp.text().await.unwrap();
                assert!(body.contains("temporarily unavailable"), "{body}");
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert!(refused > 0 && taken.len() <= 16, "{} taken, {refused} refused", taken.len());
    for token in &taken {
        assert_eq!(submit(&c, &s.server2, token).await.status(), 401, "still remembered");
    }
    let metrics = text_of(&c, &s.metrics2()).await;
    let line = format!("handoff_rejected_total{{reason=\"replay_store_unavailable\"}} {refused}");
    assert!(metrics.lines().any(|l| l == line), "{line}");
}

/// Every log line a request nobody authenticated can cause shares one budget (security round
/// two, finding 4): operation pages without a grant and forms without their token on SERVER2,
/// forms without their token on SERVER1. Beyond it, lines are summed up; metrics count all.
#[tokio::test]
async fn unauthenticated_refusals_share_one_log_budget() {
    let s =
        spawn_both(|c| c.refusal_logs_per_sec = 2, |c| c.unsigned_refusal_logs_per_sec = 2).await;
    let c = client();
    // A signed-in browser that a page elsewhere makes post forms without their token.
    sign_in(&c, &s.server1, "alice").await;
    let started = std::time::Instant::now();
    for i in 0..40 {
        assert_eq!(status_of(&c, &format!("{}/reports/{}", s.server2, i + 1)).await, 403);
        let resp = c
            .post(format!("{}/invoices/INV-{i}/approve", s.server2))
            .form(&[("csrf", "x")])
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_client_error());
        let resp = c
            .post(format!("{}/logout", s.server1))
            .form(&[("csrf", "forged")])
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 403);
    }
    let seconds = started.elapsed().as_secs() + 2;
    let written = |logs: String, event: &str| {
        logs.lines().filter(|l| l.contains(&format!("event=\"{event}\""))).count() as u64
    };
    let s2_lines = written(s.server2_logs(), "operation.denied")
        + written(s.server2_logs(), "request.refused");
    assert!(s2_lines <= 2 * seconds, "{s2_lines} lines in {seconds} s: {}", s.server2_logs());
    assert!(written(s.server1_logs(), "csrf.refused") <= 2 * seconds, "{}", s.server1_logs());
    let counter = |metrics: &str, series: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{series} ")))
            .map_or(0, |v| v.trim().parse().unwrap())
    };
    let m2 = text_of(&client(), &s.metrics2()).await;
    let m1 = text_of(&client(), &s.metrics1()).await;
    let total2 = counter(&m2, r#"refusal_log_lines_total{outcome="written"}"#)
        + counter(&m2, r#"refusal_log_lines_total{outcome="suppressed"}"#);
    assert_eq!(total2, 80, "every refusal is counted: {m2}");
    let total1 = counter(&m1, r#"refusal_log_lines_total{outcome="written"}"#)
        + counter(&m1, r#"refusal_log_lines_total{outcome="suppressed"}"#);
    assert_eq!(total1, 40, "{m1}");
}
