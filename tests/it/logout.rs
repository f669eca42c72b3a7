//! Sign-out that reaches SERVER2: OpenID Connect Back-Channel Logout, adapted. SERVER1 posts a
//! logout token to SERVER2 when a session ends; SERVER2 refuses the grants and handoff tokens of
//! that session from then on.

use handoff::mint::MintKey;
use std::time::{Duration, Instant};

use handoff::logout::{mint_logout, Ended, BACKCHANNEL_EVENT, LOGOUT_TYP};
use handoff_tests::*;

/// Signs in as `user` on SERVER1 with `c` and opens report `id` on SERVER2 (the grant lands in
/// `c`'s cookie jar); returns the report's URL.
async fn granted(c: &reqwest::Client, s: &Servers, user: &str, id: &str) -> String {
    sign_in(c, &s.server1, user).await;
    let token =
        open_handoff(c, &s.server1, &format!("/handoff/partner/report.view?report_id={id}")).await;
    assert_eq!(submit(c, &s.server2, &token).await.status(), 303);
    let report = format!("{}/reports/{id}", s.server2);
    assert_eq!(status_of(c, &report).await, 200);
    report
}

/// Posts SERVER1's sign-out form with `c`.
async fn sign_out(c: &reqwest::Client, s: &Servers) {
    let page = text_of(c, &format!("{}/", s.server1)).await;
    let csrf = form_value(&page, "csrf").expect("the sign-out form");
    let resp =
        c.post(format!("{}/logout", s.server1)).form(&[("csrf", csrf)]).send().await.unwrap();
    assert_eq!(resp.status(), 303);
}

/// Waits up to `within` for `url` to answer 403 to `c`; returns how long it took.
async fn until_refused(c: &reqwest::Client, url: &str, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        if status_of(c, url).await == 403 {
            return started.elapsed();
        }
        assert!(started.elapsed() < within, "{url} still answers after {within:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The value of a server's counter `name` (a full series name with labels), from its metrics
/// URL.
async fn counter(metrics_url: &str, series: &str) -> u64 {
    let metrics = text_of(&plain_client(), metrics_url).await;
    let prefix = format!("{series} ");
    metrics.lines().find_map(|l| l.strip_prefix(&prefix)).map_or(0, |v| v.trim().parse().unwrap())
}

#[tokio::test]
async fn sign_out_on_the_portal_ends_the_grant_on_the_partner_within_a_second() {
    let s = spawn().await;
    let (browser, other) = (client(), client());
    let report = granted(&browser, &s, "alice", "42").await;
    let elsewhere = granted(&other, &s, "alice", "43").await;
    // A token minted in this session, not used yet.
    let pending =
        open_handoff(&browser, &s.server1, "/handoff/partner/report.view?report_id=44").await;

    sign_out(&browser, &s).await;
    until_refused(&browser, &report, Duration::from_secs(1)).await;
    let page = text_of(&browser, &report).await;
    assert!(page.contains("You signed out of the portal"), "{page}");
    // The token of the ended session is refused too, and says why.
    let resp = submit(&browser, &s.server2, &pending).await;
    assert_eq!(resp.status(), 401);
    assert!(resp.text().await.unwrap().contains("You signed out of the portal"));
    // Another session of the same user was not signed out: its grant stays.
    assert_eq!(status_of(&other, &elsewhere).await, 200);
    assert_eq!(counter(&s.metrics1(), "backchannel_logout_total{outcome=\"sent\"}").await, 1);
    assert_eq!(
        counter(&s.metrics2(), "backchannel_logout_received_total{outcome=\"recorded\"}").await,
        1
    );
    let logs = s.all_logs();
    assert!(
        logs.contains("back-channel logout delivered")
            && logs.contains("back-channel logout recorded")
    );
    assert!(logs.contains("reason=\"session_ended\""));
}

#[tokio::test]
async fn signing_out_everywhere_ends_every_grant_of_the_user_only() {
    let s = spawn().await;
    let (laptop, phone, bob) = (client(), client(), client());
    let on_laptop = granted(&laptop, &s, "alice", "42").await;
    let on_phone = granted(&phone, &s, "alice", "43").await;
    let bobs = granted(&bob, &s, "bob", "42").await;
    let page = text_of(&laptop, &format!("{}/account", s.server1)).await;
    let csrf = form_value(&page, "csrf").unwrap();
    let resp = laptop
        .post(format!("{}/account/sessions/end-all", s.server1))
        .form(&[("csrf", csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    until_refused(&laptop, &on_laptop, Duration::from_secs(1)).await;
    until_refused(&phone, &on_phone, Duration::from_secs(1)).await;
    assert_eq!(status_of(&bob, &bobs).await, 200, "another user keeps theirs");
}

/// SERVER2 is down when the user signs out: the logout waits in SERVER1's outbox and arrives
/// once SERVER2 is back (sharing its cookie key, so the old grant would still open).
#[tokio::test]
async fn a_logout_reaches_a_server2_that_was_down() {
    let key_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(key_file.path(), [7u8; 32]).unwrap();
    let key_path = key_file.path().to_path_buf();
    let mut s = spawn_with({
        let key_path = key_path.clone();
        move |c| c.cookie_key_file = Some(key_path)
    })
    .await;
    let browser = client();
    let report = granted(&browser, &s, "alice", "42").await;
    s.stop_server2().await;
    sign_out(&browser, &s).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while counter(&s.metrics1(), "backchannel_logout_total{outcome=\"retried\"}").await == 0 {
        assert!(Instant::now() < deadline, "the logout was never tried");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // SERVER2 again, on the same address.
    let port: u16 = s.server2.rsplit(':').next().unwrap().parse().unwrap();
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let mut config = server2_config(&s.server1, &s.server2);
    config.cookie_key_file = Some(key_path);
    let _back = serve_server2(config, listener).await;
    until_refused(&browser, &report, Duration::from_secs(30)).await;
}

/// What SERVER2 refuses at `/backchannel-logout`: a forged, replayed, wrong-`typ`,
/// nonce-bearing, foreign or malformed logout token; nothing it refuses ends anything.
#[tokio::test]
async fn bad_logout_tokens_are_refused() {
    let s = spawn().await;
    let browser = client();
    let report = granted(&browser, &s, "alice", "42").await;
    let token =
        open_handoff(&browser, &s.server1, "/handoff/partner/report.view?report_id=1").await;
    let sub = handoff::Subject::parse(token_claims(&token)["sub"].as_str().unwrap()).unwrap();
    let iss = handoff::Issuer::parse(&s.server1).unwrap();
    let aud = handoff::Audience::parse(&s.server2).unwrap();
    let everything = Ended { sid: None, sub: Some(sub.clone()) };
    let post = |token: String| {
        let url = format!("{}/backchannel-logout", s.server2);
        async move { plain_client().post(url).form(&[("logout_token", token)]).send().await.unwrap() }
    };
    let sign = |header: serde_json::Value, claims: serde_json::Value| signed(&s, &header, &claims);
    let header =
        serde_json::json!({"typ": LOGOUT_TYP, "alg": "EdDSA", "kid": s.key.kid().as_str()});
    let claims = serde_json::json!({
        "iss": s.server1, "aud": s.server2, "iat": now_secs(), "exp": now_secs() + 60,
        "jti": fresh_jti(), "events": { BACKCHANNEL_EVENT: {} }, "sub": sub.as_str(),
    });
    let forger = MintKey::from(std::sync::Arc::new(handoff::SigningKey::generate().unwrap()));
    let other_aud = handoff::Audience::parse("http://localhost:1").unwrap();
    let bad: Vec<(&str, String)> = vec![
        ("with a bad signature", {
            let (good, _) =
                mint_logout(&MintKey::from(s.key.clone()), &iss, &aud, &everything, now()).unwrap();
            let (head, sig) = good.rsplit_once('.').unwrap();
            let flipped = if sig.starts_with('A') { "B" } else { "A" };
            format!("{head}.{flipped}{}", &sig[1..])
        }),
        (
            "for another audience",
            mint_logout(&MintKey::from(s.key.clone()), &iss, &other_aud, &everything, now())
                .unwrap()
                .0,
        ),
        (
            "a handoff token",
            open_handoff(&browser, &s.server1, "/handoff/partner/report.view?report_id=2").await,
        ),
        (
            "with a nonce",
            sign(header.clone(), {
                let mut c = claims.clone();
                c["nonce"] = "abc".into();
                c
            }),
        ),
        (
            "without the event",
            sign(header.clone(), {
                let mut c = claims.clone();
                c["events"] = serde_json::json!({});
                c
            }),
        ),
        (
            "a handoff typ",
            sign(
                {
                    let mut h = header.clone();
                    h["typ"] = "handoff+jwt".into();
                    h
                },
                claims.clone(),
            ),
        ),
        (
            "expired",
            sign(header.clone(), {
                let mut c = claims.clone();
                c["iat"] = (now_secs() - 600).into();
                c["exp"] = (now_secs() - 540).into();
                c
            }),
        ),
        ("garbage", "not.a.token".into()),
        ("empty", String::new()),
    ];
    for (what, token) in bad {
        let resp = post(token).await;
        assert_eq!(resp.status(), 400, "{what}");
        assert_eq!(resp.text().await.unwrap(), r#"{"error":"invalid_request"}"#, "{what}");
    }
    // Signed by a key SERVER2 does not know: maybe a key it has not fetched yet, so "try
    // again" (503), which the issuer's outbox does; a forger gains nothing by it.
    let forged = mint_logout(&forger, &iss, &aud, &everything, now()).unwrap().0;
    assert_eq!(post(forged).await.status(), 503);
    assert_eq!(status_of(&browser, &report).await, 200, "nothing refused ended the grant");
    // A good one works once; its replay is refused.
    let good = sign(header, claims);
    assert_eq!(post(good.clone()).await.status(), 200);
    assert_eq!(post(good).await.status(), 400, "replayed");
    assert_eq!(status_of(&browser, &report).await, 403);
    assert!(!s.server2_logs().contains("eyJ"), "no token in the logs");
}
