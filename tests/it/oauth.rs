//! The API for the portal's own apps, over HTTP: the device authorization grant end to end
//! (approved, denied, expired, polled too fast), access tokens on `GET /api/v1/me`, refresh
//! tokens that rotate and whose reuse revokes their family (raced 1,000 times), revocation by
//! time (`tokens_valid_after`) and by list (`server1 tokens revoke`).

use std::time::Duration;

use handoff_tests::*;
use serde_json::Value;

const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

async fn post(url: &str, form: &[(&str, &str)]) -> (u16, Value) {
    let resp = plain_client().post(url).form(form).send().await.unwrap();
    let status = resp.status().as_u16();
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let text = resp.text().await.unwrap();
    let body =
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("{url} {form:?}: {status} {text}"));
    (status, body)
}

/// Starts a device authorization for `handoff-cli`.
async fn start(s: &Servers) -> Value {
    let (status, body) =
        post(&format!("{}/oauth/device_authorization", s.server1), &[("client_id", "handoff-cli")])
            .await;
    assert_eq!(status, 200, "{body}");
    body
}

/// Polls the token endpoint once with the device code.
async fn poll(s: &Servers, device_code: &str) -> (u16, Value) {
    post(
        &format!("{}/oauth/token", s.server1),
        &[("grant_type", DEVICE_GRANT), ("client_id", "handoff-cli"), ("device_code", device_code)],
    )
    .await
}

/// `user` (signed in with `browser`) types `user_code` on /device and decides.
async fn decide(
    browser: &reqwest::Client,
    s: &Servers,
    user_code: &str,
    decision: &str,
) -> reqwest::Response {
    let page = text_of(browser, &format!("{}/device?user_code={user_code}", s.server1)).await;
    let csrf = form_value(&page, "csrf").expect("the /device form");
    assert_eq!(form_value(&page, "user_code").as_deref(), Some(user_code), "prefilled");
    let consent = browser
        .post(format!("{}/device", s.server1))
        .form(&[("csrf", csrf.as_str()), ("user_code", user_code)])
        .send()
        .await
        .unwrap();
    assert_eq!(consent.status(), 200);
    let consent = consent.text().await.unwrap();
    assert!(
        consent.contains("Handoff command line") && consent.contains("handoff-cli"),
        "{consent}"
    );
    let csrf = form_value(&consent, "csrf").unwrap();
    browser
        .post(format!("{}/device/decide", s.server1))
        .form(&[("csrf", csrf.as_str()), ("user_code", user_code), ("decision", decision)])
        .send()
        .await
        .unwrap()
}

/// The device flow for `user` through to tokens.
async fn tokens_for(s: &Servers, user: &str) -> Value {
    let started = start(s).await;
    let browser = client();
    sign_in(&browser, &s.server1, user).await;
    assert_eq!(
        decide(&browser, s, started["user_code"].as_str().unwrap(), "approve").await.status(),
        200
    );
    let (status, tokens) = poll(s, started["device_code"].as_str().unwrap()).await;
    assert_eq!(status, 200, "{tokens}");
    tokens
}

async fn me(s: &Servers, access: &str) -> reqwest::Response {
    plain_client().get(format!("{}/api/v1/me", s.server1)).bearer_auth(access).send().await.unwrap()
}

async fn refresh(s: &Servers, token: &str) -> (u16, Value) {
    post(
        &format!("{}/oauth/token", s.server1),
        &[("grant_type", "refresh_token"), ("client_id", "handoff-cli"), ("refresh_token", token)],
    )
    .await
}

#[tokio::test]
async fn the_device_flow_end_to_end() {
    let clock = manual_clock();
    let s = spawn_clocked(&clock).await;
    let started = start(&s).await;
    let user_code = started["user_code"].as_str().unwrap();
    assert_eq!(user_code.len(), 9, "BCDF-GHJK");
    assert_eq!(started["verification_uri"], format!("{}/device", s.server1));
    assert_eq!(started["interval"], 5);
    let device_code = started["device_code"].as_str().unwrap();
    // Not approved yet; polled again at once: slow down.
    assert_eq!(poll(&s, device_code).await.1["error"], "authorization_pending");
    assert_eq!(poll(&s, device_code).await.1["error"], "slow_down");
    // The interval grew from 5 to 10 s: 9 s later is still too soon, 10 s is not.
    clock.advance(9);
    assert_eq!(poll(&s, device_code).await.1["error"], "slow_down");
    clock.advance(15);
    assert_eq!(poll(&s, device_code).await.1["error"], "authorization_pending");
    // /device wants a signed-in person, and comes back to the code.
    let browser = client();
    let resp =
        browser.get(format!("{}/device?user_code={user_code}", s.server1)).send().await.unwrap();
    assert_eq!(resp.status(), 303);
    assert!(resp.headers()["location"].to_str().unwrap().contains("next=%2Fdevice%3Fuser_code%3D"));
    sign_in(&browser, &s.server1, "alice").await;
    let done = decide(&browser, &s, user_code, "approve").await;
    assert_eq!(done.status(), 200);
    assert!(done.text().await.unwrap().contains("App approved"));
    // Once approved, the next poll gets the tokens.
    let (status, tokens) = poll(&s, device_code).await;
    assert_eq!(status, 200, "{tokens}");
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["scope"], "profile");
    assert!(tokens["expires_in"].as_u64().unwrap() <= 600);
    let access = tokens["access_token"].as_str().unwrap();
    assert_eq!(token_header(access)["typ"], "at+jwt");
    let claims = token_claims(access);
    assert_eq!(claims["aud"], format!("{}/api", s.server1));
    assert_eq!(claims["client_id"], "handoff-cli");
    // The code gave tokens once.
    assert_eq!(poll(&s, device_code).await.1["error"], "invalid_grant");

    let resp = me(&s, access).await;
    assert_eq!(resp.status(), 200);
    let who: Value = resp.json().await.unwrap();
    assert_eq!(who["name"], "alice");
    assert_eq!(who["email"], "alice@example.com");
    assert_eq!(who["roles"], serde_json::json!(["billing", "reports"]));
    assert_eq!(who["targets"][0]["id"], "partner");
    assert_eq!(
        who["targets"][0]["operations"],
        serde_json::json!(["report.view", "invoice.approve"])
    );

    // Rotation: each refresh gives a new refresh token and retires the old one; using a retired
    // one revokes the whole family.
    let first = tokens["refresh_token"].as_str().unwrap().to_owned();
    let (status, second) = refresh(&s, &first).await;
    assert_eq!(status, 200);
    let second = second["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(first, second);
    let (status, third) = refresh(&s, &second).await;
    assert_eq!(status, 200);
    let third = third["refresh_token"].as_str().unwrap().to_owned();
    assert_eq!(refresh(&s, &first).await.1["error"], "invalid_grant", "reuse");
    assert_eq!(refresh(&s, &third).await.1["error"], "invalid_grant", "the family is revoked");
    assert!(s.server1_logs().contains("security.refresh_reuse"));
    let logs = s.server1_logs();
    assert!(!logs.contains(&first) && !logs.contains(access) && !logs.contains(device_code));
}

#[tokio::test]
async fn denied_expired_and_unknown_codes() {
    let clock = manual_clock();
    let s = spawn_clocked(&clock).await;
    let browser = client();
    sign_in(&browser, &s.server1, "bob").await;
    let denied = start(&s).await;
    let resp = decide(&browser, &s, denied["user_code"].as_str().unwrap(), "deny").await;
    assert!(resp.text().await.unwrap().contains("App denied"));
    assert_eq!(poll(&s, denied["device_code"].as_str().unwrap()).await.1["error"], "access_denied");

    let expiring = start(&s).await;
    clock.advance(601);
    assert_eq!(
        poll(&s, expiring["device_code"].as_str().unwrap()).await.1["error"],
        "expired_token"
    );
    // An expired code cannot be approved either.
    let page = text_of(&browser, &format!("{}/device", s.server1)).await;
    let csrf = form_value(&page, "csrf").unwrap();
    let wrong = browser
        .post(format!("{}/device", s.server1))
        .form(&[("csrf", csrf.as_str()), ("user_code", expiring["user_code"].as_str().unwrap())])
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 400);
    assert!(wrong.text().await.unwrap().contains("That code does not work"));

    for (form, error) in [
        (vec![("client_id", "nobody")], "invalid_client"),
        (vec![("client_id", "handoff-cli"), ("scope", "admin")], "invalid_scope"),
        (vec![("scope", "profile")], "invalid_request"),
    ] {
        let (status, body) =
            post(&format!("{}/oauth/device_authorization", s.server1), &form).await;
        assert_eq!((status, body["error"].as_str().unwrap()), (400, error));
    }
    for (form, error) in [
        (vec![("grant_type", "password"), ("client_id", "handoff-cli")], "unsupported_grant_type"),
        (
            vec![
                ("grant_type", DEVICE_GRANT),
                ("client_id", "handoff-cli"),
                ("device_code", "made-up"),
            ],
            "invalid_grant",
        ),
        (
            vec![
                ("grant_type", "refresh_token"),
                ("client_id", "handoff-cli"),
                ("refresh_token", "made-up"),
            ],
            "invalid_grant",
        ),
        (vec![("grant_type", DEVICE_GRANT), ("client_id", "handoff-cli")], "invalid_request"),
    ] {
        let (status, body) = post(&format!("{}/oauth/token", s.server1), &form).await;
        assert_eq!((status, body["error"].as_str().unwrap()), (400, error));
    }
    // Without the page's token, no decision is taken.
    let pending = start(&s).await;
    let forged = browser
        .post(format!("{}/device/decide", s.server1))
        .form(&[
            ("csrf", "x"),
            ("user_code", pending["user_code"].as_str().unwrap()),
            ("decision", "approve"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    assert_eq!(
        poll(&s, pending["device_code"].as_str().unwrap()).await.1["error"],
        "authorization_pending"
    );
}

#[tokio::test]
async fn bearer_errors_follow_rfc_6750() {
    let clock = manual_clock();
    let s = spawn_clocked(&clock).await;
    let c = plain_client();
    let resp = c.get(format!("{}/api/v1/me", s.server1)).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.headers()["www-authenticate"], r#"Bearer realm="handoff""#);
    let handoff_token = {
        let browser = client();
        sign_in(&browser, &s.server1, "alice").await;
        open_handoff(&browser, &s.server1, "/handoff/partner/report.view?report_id=1").await
    };
    for bad in ["garbage", handoff_token.as_str()] {
        let resp = me(&s, bad).await;
        assert_eq!(resp.status(), 401, "{bad}");
        let challenge = resp.headers()["www-authenticate"].to_str().unwrap().to_owned();
        assert!(challenge.contains(r#"error="invalid_token""#), "{challenge}");
    }
    let tokens = tokens_for(&s, "alice").await;
    let access = tokens["access_token"].as_str().unwrap();
    assert_eq!(me(&s, access).await.status(), 200);
    clock.advance(606);
    let resp = me(&s, access).await;
    assert_eq!(resp.status(), 401);
    assert!(resp.headers()["www-authenticate"].to_str().unwrap().contains("expired"));
}

/// Two refreshes with the same token at the same instant: exactly one gets tokens, every time
/// (1,000 times; the suite runs on SQLite and on PostgreSQL).
#[tokio::test]
async fn racing_refreshes_one_wins() {
    let s = spawn().await;
    let url = std::fs::read_to_string(s.dir.path().join("database_url")).unwrap();
    let db = server1::db::Db::open(
        &server1::db::DatabaseUrl::parse(&url).unwrap(),
        server1::db::OpenMode::Existing,
        server1::db::PoolSettings { size: 2, timeout: Duration::from_secs(10) },
    )
    .await
    .unwrap();
    let (alice, _) =
        db.user_by_name(&server1::names::UserName::parse("alice").unwrap()).await.unwrap().unwrap();
    let mut outcomes = std::collections::BTreeMap::new();
    for i in 0..1000 {
        // A family of its own for each race (the loser's reuse revokes the family).
        let token = format!("race-{i}-{}", fresh_jti());
        let family = format!("family-{i}");
        let hash = server1::links::hash_of(&token);
        let far = handoff::UnixTime::from_secs(now_secs() + 3600);
        let new = server1::db::NewRefresh {
            hash: &hash,
            family: &family,
            user: &alice.id,
            client_id: "handoff-cli",
            scope: "profile",
            expires: far,
            family_expires: far,
        };
        db.start_family(&new, now()).await.unwrap();
        let (a, b) = tokio::join!(refresh(&s, &token), refresh(&s, &token));
        *outcomes.entry((a.0, b.0)).or_insert(0u32) += 1;
    }
    let one: u32 = [(200, 400), (400, 200)].iter().filter_map(|k| outcomes.get(k)).sum();
    assert_eq!(one, 1000, "outcomes: {outcomes:?}");
}

/// Revocation by time and by list: "sign out everywhere" moves `tokens_valid_after`, so access
/// tokens and refresh tokens issued before it stop working; `server1 tokens revoke --jti` puts
/// one access token on the deny list; `--user` and `--client` end refresh families.
#[tokio::test]
async fn revocation_by_time_and_by_list() {
    let s = spawn().await;
    let cli = |args: &[&str]| {
        let out = server1_command(&s, &[&["tokens", "revoke"][..], args].concat());
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    // By list: one access token.
    let tokens = tokens_for(&s, "alice").await;
    let access = tokens["access_token"].as_str().unwrap();
    let other = tokens_for(&s, "alice").await;
    // A token id may begin with `-` (one in 64 do): the CLI takes it as a value, not a flag.
    cli(&["--jti", "-AAAAAAAAAAAAAAAAAAAAA"]);
    cli(&["--jti", token_claims(access)["jti"].as_str().unwrap()]);
    assert_eq!(me(&s, access).await.status(), 401, "denied");
    assert_eq!(
        me(&s, other["access_token"].as_str().unwrap()).await.status(),
        200,
        "only that one"
    );

    // By user: every family and every access token until now.
    cli(&["--user", "alice"]);
    assert_eq!(me(&s, other["access_token"].as_str().unwrap()).await.status(), 401);
    assert_eq!(
        refresh(&s, other["refresh_token"].as_str().unwrap()).await.1["error"],
        "invalid_grant"
    );

    // By client.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let bobs = tokens_for(&s, "bob").await;
    cli(&["--client", "handoff-cli"]);
    assert_eq!(
        refresh(&s, bobs["refresh_token"].as_str().unwrap()).await.1["error"],
        "invalid_grant"
    );

    // By time: signing out everywhere.
    let carols_browser = client();
    let fresh = tokens_for(&s, "bob").await;
    assert_eq!(me(&s, fresh["access_token"].as_str().unwrap()).await.status(), 200);
    sign_in(&carols_browser, &s.server1, "bob").await;
    let page = text_of(&carols_browser, &format!("{}/account", s.server1)).await;
    let csrf = form_value(&page, "csrf").unwrap();
    carols_browser
        .post(format!("{}/account/sessions/end-all", s.server1))
        .form(&[("csrf", csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(me(&s, fresh["access_token"].as_str().unwrap()).await.status(), 401);
    assert_eq!(
        refresh(&s, fresh["refresh_token"].as_str().unwrap()).await.1["error"],
        "invalid_grant"
    );
}

/// An app approved by a session that is then signed out everywhere gets nothing, and guessing
/// codes on the approval form is throttled.
#[tokio::test]
async fn approvals_end_with_the_sessions_and_codes_cannot_be_guessed() {
    // SERVER1's clock stands still: blocks do not run out while the test goes on.
    let clock = manual_clock();
    let s = spawn_clocked(&clock).await;
    let browser = client();
    sign_in(&browser, &s.server1, "alice").await;
    let started = start(&s).await;
    assert_eq!(
        decide(&browser, &s, started["user_code"].as_str().unwrap(), "approve").await.status(),
        200
    );
    let page = text_of(&browser, &format!("{}/account", s.server1)).await;
    let csrf = form_value(&page, "csrf").unwrap();
    browser
        .post(format!("{}/account/sessions/end-all", s.server1))
        .form(&[("csrf", csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(
        poll(&s, started["device_code"].as_str().unwrap()).await.1["error"],
        "invalid_grant"
    );

    sign_in(&browser, &s.server1, "alice").await;
    let page = text_of(&browser, &format!("{}/device", s.server1)).await;
    let csrf = form_value(&page, "csrf").unwrap();
    let mut statuses = Vec::new();
    for _ in 0..7 {
        let resp = browser
            .post(format!("{}/device/decide", s.server1))
            .form(&[("csrf", csrf.as_str()), ("user_code", "BCDF-GHJK"), ("decision", "approve")])
            .send()
            .await
            .unwrap();
        statuses.push(resp.status().as_u16());
    }
    assert_eq!(statuses, [400, 400, 400, 400, 400, 429, 429]);
}
