//! SERVER1 on a real PostgreSQL: two replicas on one database behave as one (a session made on
//! one is valid on the other, failed sign-ins on both count toward one throttle), and a
//! database that goes down gives 503 pages and a 503 readiness, never a panic, and service
//! comes back by itself when the database does.

use handoff_tests::*;

/// A second SERVER1 on the same directory (keys, targets) and database as `s`'s, with the same
/// public URL (the issuer), on a port of its own, on `clock`: a replica.
async fn replica(s: &Servers, clock: std::sync::Arc<handoff::ManualClock>) -> (InProcess, String) {
    let (l, port) = listener();
    let mut config = server1_config(s.dir.path(), port);
    config.public_url = handoff::Issuer::parse(&s.server1).unwrap();
    config.clock = clock;
    let running = serve_server1(config, l).await;
    (running, format!("http://127.0.0.1:{port}"))
}

#[tokio::test]
async fn two_server1_replicas_on_one_database_behave_as_one() {
    // A manual clock on both replicas: the first block lasts one second, which a slow run
    // could otherwise outlive.
    let clock = manual_clock();
    let on_clock = clock.clone();
    let database = PgServer::shared().fresh_database().await;
    let s = spawn_both_on_database(&database, move |c| c.clock = on_clock).await;
    let (_b, b) = replica(&s, clock.clone()).await;
    // SERVER2 (on the real clock) takes tokens issued after it started: move SERVER1's past that.
    clock.advance(2);
    // Signed in on A, the handoff is minted by B: the session is in the shared database.
    let c = client();
    sign_in(&c, &s.server1, "alice").await;
    let token = open_handoff(&c, &b, "/handoff/partner/report.view?report_id=42").await;
    assert_eq!(submit(&c, &s.server2, &token).await.status(), 303);
    // Signing out on B ends the session on A too.
    let page = text_of(&c, &format!("{b}/")).await;
    let csrf = form_value(&page, "csrf").expect("the dashboard's sign-out form");
    let out = c.post(format!("{b}/logout")).form(&[("csrf", csrf)]).send().await.unwrap();
    assert_eq!(out.status(), 303);
    let resp = c.get(format!("{}/", s.server1)).send().await.unwrap();
    assert_eq!(resp.headers()["location"], "/login", "signed out everywhere");

    // Failed sign-ins alternate between the replicas and count toward one throttle: after five
    // for one name, the sixth is throttled on whichever replica it reaches.
    let attacker = client();
    for attempt in 0..5 {
        let on = if attempt % 2 == 0 { &s.server1 } else { &b };
        let resp = try_sign_in(&attacker, on, "bob", "wrong password", None).await;
        assert_eq!(resp.status(), 401, "attempt {attempt}");
    }
    for on in [&s.server1, &b] {
        let resp = try_sign_in(&attacker, on, "bob", PASSWORD, None).await;
        assert_eq!(resp.status(), 429, "throttled on {on}");
    }
}

/// Two replicas share one outbox: every queued message is sent once, whichever replica's
/// worker claims it, and a link mailed through one works on the other, the latest only.
#[tokio::test]
async fn two_replicas_send_each_message_once() {
    let smtp = SmtpServer::start().await;
    let url = smtp.url();
    let database = PgServer::shared().fresh_database().await;
    let s = spawn_both_on_database(&database, move |c| {
        with_mail(c, &url);
        c.accounts.mail_limits.per_address = 50;
        c.accounts.mail_limits.per_client = 50;
    })
    .await;
    let (l, port) = listener();
    let mut config = server1_config(s.dir.path(), port);
    config.public_url = handoff::Issuer::parse(&s.server1).unwrap();
    with_mail(&mut config, &smtp.url());
    config.accounts.mail_limits.per_address = 50;
    config.accounts.mail_limits.per_client = 50;
    let _b = serve_server1(config, l).await;
    let b = format!("http://127.0.0.1:{port}");
    for i in 0..12 {
        let on = if i % 2 == 0 { &s.server1 } else { &b };
        let c = client();
        let page = text_of(&c, &format!("{on}/forgot-password")).await;
        let csrf = form_value(&page, "csrf").unwrap();
        let resp = c
            .post(format!("{on}/forgot-password"))
            .form(&[("csrf", csrf.as_str()), ("email", "alice@example.com")])
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    let mails = smtp.wait_for("alice@example.com", 12, 20).await;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert_eq!(smtp.messages_to("alice@example.com").len(), 12, "each job sent once");
    let tokens: std::collections::HashSet<String> = mails.iter().map(Mail::token).collect();
    assert_eq!(tokens.len(), 12, "every message its own link");
    // Only the last link issued works, on either replica (the newest is the one mailed last).
    let links: Vec<String> = smtp.messages_to("alice@example.com").iter().map(Mail::link).collect();
    let status = |link: &str| {
        let link = link.to_owned();
        async move { client().get(link).send().await.unwrap().status().as_u16() }
    };
    let live: Vec<&String> = {
        let mut live = Vec::new();
        for link in &links {
            if status(link).await == 200 {
                live.push(link);
            }
        }
        live
    };
    assert_eq!(live.len(), 1, "exactly one live link of 12");
    let on_b = live[0].replace(&s.server1, &b);
    assert_eq!(status(&on_b).await, 200, "a link works on the other replica too");
}

#[tokio::test]
async fn a_database_that_goes_down_gives_503_and_service_resumes_by_itself() {
    let pg = PgServer::start();
    let s = spawn_on(&pg.fresh_database().await).await;
    let c = client();
    sign_in(&c, &s.server1, "alice").await;
    assert_eq!(status_of(&c, &format!("{}/readyz", s.server1)).await, 200);

    pg.stop();
    let resp = c.get(format!("{}/", s.server1)).send().await.unwrap();
    assert_eq!(resp.status(), 503, "the dashboard needs the session");
    let body = resp.text().await.unwrap();
    assert!(body.contains("Temporarily unavailable"), "{body}");
    assert!(!body.contains("postgres") && !body.contains("connection"), "no library text: {body}");
    assert_eq!(status_of(&c, &format!("{}/readyz", s.server1)).await, 503);
    let signin = try_sign_in(&client(), &s.server1, "bob", PASSWORD, None).await;
    assert_eq!(signin.status(), 503, "sign-in refused, not let through");
    // The API answers in its own terms: JSON, no cache, try later.
    let resp = plain_client()
        .post(format!("{}/oauth/device_authorization", s.server1))
        .form(&[("client_id", "handoff-cli")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.text().await.unwrap(), r#"{"error":"temporarily_unavailable"}"#);
    assert_eq!(status_of(&c, &format!("{}/account", s.server1)).await, 503);

    pg.restart();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while status_of(&c, &format!("{}/readyz", s.server1)).await != 200 {
        assert!(std::time::Instant::now() < deadline, "SERVER1 did not recover");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // The session made before the outage is still there, and so is everything else.
    let page = text_of(&c, &format!("{}/", s.server1)).await;
    assert!(page.contains("Welcome, alice"), "{page}");
    sign_in(&client(), &s.server1, "bob").await;
}

/// A database SERVER1 cannot use stops start-up with a message that names the setting (and
/// never the password); one without the schema says which command makes it.
#[tokio::test]
async fn server1_refuses_to_start_on_a_database_it_cannot_use() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = format!("sqlite://{}", dir.path().join("server1.sqlite3").display());
    prepare_dir_on(dir.path(), "http://localhost:1", &sqlite).await;
    let start = |url: String| {
        let (l, port) = listener();
        let mut config = server1_config(dir.path(), port);
        config.database = server1::db::DatabaseUrl::parse(&url).unwrap();
        async move { server1::build_app(config, l).await.map(drop).unwrap_err().to_string() }
    };
    let (closed, port) = listener();
    drop(closed);
    let err = start(format!("postgres://handoff:s3cret@127.0.0.1:{port}/portal")).await;
    assert!(err.contains("cannot open database") && err.contains("SERVER1_DATABASE_URL"), "{err}");
    assert!(err.contains("127.0.0.1") && !err.contains("s3cret"), "{err}");
    let err = start(PgServer::shared().fresh_database().await).await;
    assert!(err.contains("server1 users add"), "no schema: {err}");
}
