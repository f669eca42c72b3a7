//! The happy paths: sign in, open an operation, land on SERVER2 signed in for exactly that.

use handoff_tests::*;

#[tokio::test]
async fn sign_in_open_report_and_land_on_it() {
    let s = spawn().await;
    let c = client();
    sign_in(&c, &s.server1, "alice").await;

    let dashboard = c.get(format!("{}/", s.server1)).send().await.unwrap();
    assert_eq!(dashboard.status(), 200);
    let html = dashboard.text().await.unwrap();
    assert!(html.contains("Welcome, alice"));
    assert!(html.contains("View report 42"), "quick link shown");
    assert!(html.contains("/handoff/partner/report.view?report_id=42"));
    assert!(html.contains("Approve invoice"));

    let page =
        follow_handoff(&c, &format!("{}/handoff/partner/report.view?report_id=42", s.server1))
            .await;
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["cache-control"], "no-store");
    assert_eq!(page.headers()["referrer-policy"], "no-referrer");
    let csp = page.headers()["content-security-policy"].to_str().unwrap().to_owned();
    assert!(csp.contains(&format!("form-action {}", s.server2)), "{csp}");
    let html = page.text().await.unwrap();
    assert!(html.contains(&format!("action=\"{}/handoff\"", s.server2)));
    let token = form_value(&html, "token").unwrap();

    let landed = submit(&c, &s.server2, &token).await;
    assert_eq!(landed.status(), 303);
    assert_eq!(landed.headers()["location"], "/reports/42");
    let set_cookie = landed.headers()["set-cookie"].to_str().unwrap().to_owned();
    for attribute in ["__Host-handoff_grant=", "HttpOnly", "SameSite=Lax", "Secure", "Path=/"] {
        assert!(set_cookie.contains(attribute), "{attribute} missing: {set_cookie}");
    }

    let report = c.get(format!("{}/reports/42", s.server2)).send().await.unwrap();
    assert_eq!(report.status(), 200);
    let html = report.text().await.unwrap();
    assert!(html.contains("Report 42"));
    assert!(html.contains(&s.server1), "shows who handed the user over");
    assert!(html.contains("report.view report_id=42"));
    assert!(!html.contains(&token), "the token never appears in a page");

    // Signed in for report 42 only.
    let other = c.get(format!("{}/reports/43", s.server2)).send().await.unwrap();
    assert_eq!(other.status(), 403);
}

#[tokio::test]
async fn redirect_mode_and_clean_url() {
    // Only for a target that does not bind its tokens (a bound token never goes in a URL).
    let s = spawn_with_targets(unbinding_partner).await;
    let c = client();
    sign_in(&c, &s.server1, "alice").await;
    let resp = c
        .get(format!("{}/handoff/partner/report.view?report_id=7&mode=redirect", s.server1))
        .header("sec-fetch-site", "same-origin")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    let location = resp.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.starts_with(&format!("{}/handoff?token=", s.server2)), "{location}");
    let landed = c.get(&location).send().await.unwrap();
    assert_eq!(landed.status(), 303, "GET /handoff answers at once with a clean URL");
    assert_eq!(landed.headers()["location"], "/reports/7");
    assert_eq!(landed.headers()["referrer-policy"], "no-referrer");
    assert_eq!(landed.headers()["cache-control"], "no-store");
    assert_eq!(status_of(&c, &format!("{}/reports/7", s.server2)).await, 200);
}

#[tokio::test]
async fn invoice_approval_behind_a_confirm_form() {
    let s = spawn().await;
    let c = client();
    sign_in(&c, &s.server1, "alice").await;
    let token =
        open_handoff(&c, &s.server1, "/handoff/partner/invoice.approve?invoice_id=INV-7").await;
    let landed = submit(&c, &s.server2, &token).await;
    assert_eq!(landed.headers()["location"], "/invoices/INV-7/approve");

    let page = text_of(&c, &format!("{}/invoices/INV-7/approve", s.server2)).await;
    assert!(page.contains("Approve invoice"));
    let csrf = form_value(&page, "csrf").unwrap();

    // Without the form token nothing changes.
    let forged = c
        .post(format!("{}/invoices/INV-7/approve", s.server2))
        .form(&[("csrf", "")])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    let still = text_of(&c, &format!("{}/invoices/INV-7/approve", s.server2)).await;
    assert!(!still.contains("Approved by"));

    let done = c
        .post(format!("{}/invoices/INV-7/approve", s.server2))
        .form(&[("csrf", &csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), 303);
    let after = text_of(&c, &format!("{}/invoices/INV-7/approve", s.server2)).await;
    assert!(after.contains("Approved by"));
}

#[tokio::test]
async fn jwks_health_and_sign_out() {
    let s = spawn().await;
    let c = client();
    let jwks = c.get(format!("{}/.well-known/jwks.json", s.server1)).send().await.unwrap();
    assert_eq!(jwks.status(), 200);
    assert!(jwks.headers()["cache-control"].to_str().unwrap().contains("max-age"));
    let body: serde_json::Value = jwks.json().await.unwrap();
    assert_eq!(body["keys"][0]["kid"], s.key.kid().as_str());
    assert_eq!(body["keys"][0]["kty"], "OKP");
    assert!(body["keys"][0].get("d").is_none(), "no private part");
    assert_eq!(status_of(&c, &format!("{}/healthz", s.server1)).await, 200);
    assert_eq!(status_of(&c, &format!("{}/readyz", s.server1)).await, 200);
    assert_eq!(status_of(&c, &format!("{}/healthz", s.server2)).await, 200);
    assert_eq!(status_of(&c, &format!("{}/readyz", s.server2)).await, 200);

    sign_in(&c, &s.server1, "bob").await;
    let html = text_of(&c, &format!("{}/", s.server1)).await;
    assert!(html.contains("View report"));
    assert!(!html.contains("Approve invoice"), "bob lacks the billing role");
    let csrf = form_value(&html, "csrf").unwrap();
    let out =
        c.post(format!("{}/logout", s.server1)).form(&[("csrf", &csrf)]).send().await.unwrap();
    assert_eq!(out.status(), 303);
    let after = c.get(format!("{}/", s.server1)).send().await.unwrap();
    assert_eq!(after.status(), 303, "signed out");
}

#[tokio::test]
async fn session_id_is_renewed_at_sign_in() {
    let s = spawn().await;
    // A plain client, so the test decides exactly which cookies each request carries.
    let raw =
        reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let sign_in_with = |cookie: String| {
        let raw = raw.clone();
        let server1 = s.server1.clone();
        async move {
            let form = raw.get(format!("{server1}/login")).send().await.unwrap();
            let login = set_cookie(&form, "__Host-handoff_login=");
            let csrf = form_value(&form.text().await.unwrap(), "csrf").unwrap();
            let resp = raw
                .post(format!("{server1}/login"))
                .header("cookie", format!("{login}; {cookie}"))
                .form(&[
                    ("username", "alice"),
                    ("password", PASSWORD),
                    ("csrf", &csrf),
                    ("next", "/"),
                ])
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 303);
            set_cookie(&resp, "__Host-handoff_session=")
        }
    };
    let get_home =
        |cookie: String| raw.get(format!("{}/", s.server1)).header("cookie", cookie).send();

    // A session id planted before sign-in is not the one that gets signed in (no fixation).
    let planted = "__Host-handoff_session=AttackerChosenValueAttackerChosenValue1234567".to_owned();
    let first = sign_in_with(planted.clone()).await;
    assert_ne!(first, planted);
    assert_eq!(get_home(planted).await.unwrap().status(), 303);
    assert_eq!(get_home(first.clone()).await.unwrap().status(), 200);

    // Signing in again replaces the session: the old id stops working.
    let second = sign_in_with(first.clone()).await;
    assert_ne!(first, second);
    assert_eq!(get_home(first).await.unwrap().status(), 303);
    assert_eq!(get_home(second).await.unwrap().status(), 200);
}

#[tokio::test]
async fn metrics_count_mints_accepts_and_rejections() {
    let s = spawn().await;
    let c = client();
    sign_in(&c, &s.server1, "alice").await;
    let token = open_handoff(&c, &s.server1, "/handoff/partner/report.view?report_id=42").await;
    for _ in 0..2 {
        let _ = submit(&c, &s.server2, &token).await;
    }
    let m2 = c.get(s.metrics2()).send().await.unwrap();
    assert_eq!(m2.status(), 200);
    assert!(m2.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let m2 = m2.text().await.unwrap();
    for line in [
        "handoff_accepted_total 1",
        "handoff_rejected_total{reason=\"replayed\"} 1",
        "handoff_rejected_total{reason=\"bad_signature\"} 0",
        "jwks_fetches_total{outcome=\"ok\"} 1",
        "jwks_keys 1",
        "replay_store_entries 1",
        "http_request_duration_seconds_count{route=\"/handoff\",status=\"3xx\"} 1",
        "http_request_duration_seconds_count{route=\"/handoff\",status=\"4xx\"} 1",
    ] {
        assert!(m2.lines().any(|l| l == line), "missing `{line}` in:\n{m2}");
    }
    let m1 = text_of(&c, &s.metrics1()).await;
    for line in [
        "handoff_minted_total{operation=\"report.view\",target=\"partner\"} 1",
        "signin_total{outcome=\"ok\"} 1",
        "signin_total{outcome=\"failed\"} 0",
    ] {
        assert!(m1.lines().any(|l| l == line), "missing `{line}` in:\n{m1}");
    }
    assert!(m1.contains("signing_key_age_seconds "));
    let signature = token.rsplit('.').next().unwrap();
    assert!(!m1.contains(signature) && !m2.contains(signature));
}

/// Replicas of SERVER2 behind one address share `SERVER2_COOKIE_KEY_FILE`: an operation cookie
/// set by one is honoured by the other; without the shared key it is not.
#[tokio::test]
async fn replicas_sharing_the_cookie_key_honour_each_others_grants() {
    let key_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(key_file.path(), [42u8; 32]).unwrap();
    let key_path = key_file.path().to_path_buf();
    let s = spawn_with({
        let key_path = key_path.clone();
        move |c| c.cookie_key_file = Some(key_path)
    })
    .await;
    let c = client();
    sign_in(&c, &s.server1, "alice").await;
    let token = open_handoff(&c, &s.server1, "/handoff/partner/report.view?report_id=42").await;
    let landed = submit(&c, &s.server2, &token).await;
    let grant = set_cookie(&landed, "__Host-handoff_grant=");

    // A second replica: same public URL and issuer, its own listener.
    let replica = |shared: bool| {
        let (l, port) = listener();
        let mut config = server2_config(&s.server1, &s.server2);
        config.cookie_key_file = shared.then(|| key_path.clone());
        (l, port, config)
    };
    for (shared, expected) in [(true, 200), (false, 403)] {
        let (l, port, config) = replica(shared);
        let _replica = serve_server2(config, l).await;
        let resp = reqwest::Client::new()
            .get(format!("http://127.0.0.1:{port}/reports/42"))
            .header("cookie", &grant)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), expected, "shared key: {shared}");
    }
}
