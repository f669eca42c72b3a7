//! SERVER2 keeps working when the issuer's JWKS endpoint misbehaves: handoffs signed by keys it
//! already has still pass, unknown keys are refused with a 4xx (never a 5xx), the last good key
//! set stays, and the failure is logged once per refresh interval, not once per request.

use std::time::Instant;

use handoff::{Clock, Issuer, Minter, SigningKey, Ttl};
use handoff_tests::*;
use std::sync::Arc;

/// SERVER2 loads its issuer's keys from an endpoint that then breaks as `fault` makes it. The
/// fault is given a JWKS that also holds a new key: were the fault not noticed, tokens of that
/// key would pass, so each refusal below shows the fault was caught.
async fn with_fault(fault: impl FnOnce(String) -> JwksFault) {
    let issuer_key = Arc::new(SigningKey::generate().unwrap());
    let unknown_key = Arc::new(SigningKey::generate().unwrap());
    let jwks =
        serde_json::to_string(&handoff::Jwks { keys: vec![issuer_key.public_jwk()] }).unwrap();
    let both = serde_json::to_string(&handoff::Jwks {
        keys: vec![issuer_key.public_jwk(), unknown_key.public_jwk()],
    })
    .unwrap();
    let endpoint = FaultyJwks::start(JwksFault::Serve(jwks)).await;
    let jwks_url = endpoint.url.clone();
    let issuer = "https://portal.example";
    let s = spawn_with(move |c| {
        c.issuers[0].keys_from = server2::config::KeysFrom::Url(jwks_url);
        c.issuers[0].issuer = Issuer::parse(issuer).unwrap();
    })
    .await;
    assert_eq!(endpoint.hits(), 1);
    // ...then the endpoint breaks.
    endpoint.set(fault(both));

    let known = Minter::new(
        issuer_key.clone(),
        Issuer::parse(issuer).unwrap(),
        Ttl::from_secs(60).unwrap(),
    );
    let unknown =
        Minter::new(unknown_key, Issuer::parse(issuer).unwrap(), Ttl::from_secs(60).unwrap());

    let c = client();
    let round = |n| one_round(&s, &c, &known, &unknown, n);
    // The refresh interval (1 s in tests) runs from the start-up fetch: unknown kids are refused
    // without a look until it has passed, then one makes SERVER2 try the broken endpoint. The
    // count below starts with the round that did.
    let deadline = Instant::now() + std::time::Duration::from_secs(15);
    let mut rounds = 0;
    let started = loop {
        let started = Instant::now();
        round(rounds).await;
        rounds += 1;
        if endpoint.hits() > 1 {
            break started;
        }
        assert!(Instant::now() < deadline, "SERVER2 never tried the broken endpoint");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let unknown_kids = rounds + 5;
    for n in rounds..unknown_kids {
        round(n).await;
    }
    // The refresh interval is 1 s in tests: at most one fetch (and one logged failure) per
    // started second, however many unknown kids arrived.
    let allowed = 1 + started.elapsed().as_secs() as usize + 1;
    let fetches = endpoint.hits() - 1;
    assert!(fetches >= 1, "the broken endpoint was tried");
    assert!(
        fetches <= allowed,
        "{fetches} fetches for {unknown_kids} unknown kids (allowed {allowed})"
    );
    let failures = s
        .server2_logs()
        .lines()
        .filter(|l| l.contains("JWKS refresh failed") && l.contains(endpoint.url.as_str()))
        .count();
    assert!(failures >= 1 && failures <= allowed, "{failures} failure lines (allowed {allowed})");
    let metrics = text_of(&c, &s.metrics2()).await;
    let errors: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("jwks_fetches_total{outcome=\"error\"} "))
        .and_then(|v| v.parse().ok())
        .expect("the error counter");
    assert!(
        errors >= 1 && errors <= fetches as u64,
        "{errors} failed fetches counted, {fetches} made"
    );
    assert!(metrics.lines().any(|l| l == "jwks_keys 1"), "the good key set is still there");
}

/// One round of [`with_fault`]: a token of the `unknown` key is refused, one of the `known` key
/// passes.
async fn one_round(s: &Servers, c: &reqwest::Client, known: &Minter, unknown: &Minter, n: usize) {
    let report_id = "42";
    // A token from a key SERVER2 has never seen: at most one refresh attempt (it fails), then 401.
    let t = report_token(unknown, &s.server2, "u_alice", report_id, now());
    let resp = submit(c, &s.server2, t.as_str()).await;
    assert_eq!(resp.status(), 401, "round {n}: an unknown key is a refusal, not an outage");
    // A token from the known key still passes: the last good keys stayed.
    let t = report_token(known, &s.server2, "u_alice", report_id, now());
    let resp = submit(&client(), &s.server2, t.as_str()).await;
    assert_eq!(resp.status(), 303, "round {n}: known keys keep working");
}

#[tokio::test]
async fn jwks_endpoint_returning_500() {
    with_fault(|_| JwksFault::ServerError).await;
}

#[tokio::test]
async fn jwks_endpoint_returning_garbage() {
    with_fault(|_| JwksFault::Garbage).await;
}

#[tokio::test]
async fn jwks_endpoint_returning_10_mb() {
    with_fault(JwksFault::Huge).await;
}

/// The same without a `Content-Length`: the 64 KiB bound holds while the body streams in.
#[tokio::test]
async fn jwks_endpoint_streaming_10_mb() {
    with_fault(JwksFault::HugeUnframed).await;
}

/// A JWKS URL that redirects is not followed: the keys come from the configured URL or not at
/// all.
#[tokio::test]
async fn jwks_endpoint_redirecting_elsewhere() {
    // Where the redirect points serves the JWKS with the new key, which must not be taken.
    let trap = FaultyJwks::start(JwksFault::Garbage).await;
    with_fault(|doc| {
        trap.set(JwksFault::Serve(doc));
        JwksFault::Redirect(trap.url.to_string())
    })
    .await;
    assert_eq!(trap.hits(), 0, "the redirect was followed");
}

#[tokio::test]
async fn jwks_endpoint_that_hangs() {
    with_fault(|_| JwksFault::Hang).await;
}

#[tokio::test]
async fn jwks_endpoint_down_at_start_up_means_not_ready() {
    let endpoint = FaultyJwks::start(JwksFault::ServerError).await;
    let jwks_url = endpoint.url.clone();
    let s = spawn_with(move |c| c.issuers[0].keys_from = server2::config::KeysFrom::Url(jwks_url))
        .await;
    let c = client();
    assert_eq!(status_of(&c, &format!("{}/readyz", s.server2)).await, 503);
    assert_eq!(status_of(&c, &format!("{}/healthz", s.server2)).await, 200);
    // Handoffs are refused as "unavailable" (503), not as invalid.
    let minter = minter(&s, 60);
    let report_id = "1";
    let t = report_token(&minter, &s.server2, "u_alice", report_id, now());
    let resp = submit(&c, &s.server2, t.as_str()).await;
    assert_eq!(resp.status(), 503);
    // When the issuer comes back, the background retry loads the keys and SERVER2 is ready.
    endpoint.set(JwksFault::Serve(jwks_of(&s.server1).await));
    let deadline = Instant::now() + std::time::Duration::from_secs(15);
    loop {
        if status_of(&c, &format!("{}/readyz", s.server2)).await == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "SERVER2 never became ready");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn server2_keeps_accepting_known_keys_while_server1_is_down() {
    let mut s = spawn().await;
    let c = client();
    sign_in(&c, &s.server1, "alice").await;
    let token = open_handoff(&c, &s.server1, "/handoff/partner/report.view?report_id=5").await;
    s.stop_server1().await;
    let landed = submit(&c, &s.server2, &token).await;
    assert_eq!(landed.status(), 303);
    assert_eq!(status_of(&c, &format!("{}/reports/5", s.server2)).await, 200);
    assert_eq!(status_of(&c, &format!("{}/readyz", s.server2)).await, 200);
    // An unknown kid now cannot be looked up: a refusal (401), not an outage (5xx).
    let other = Arc::new(SigningKey::generate().unwrap());
    let minter =
        Minter::new(other, Issuer::parse(&s.server1).unwrap(), Ttl::from_secs(60).unwrap());
    let report_id = "6";
    // Until its refresh interval (1 s in tests) has passed since its last fetch, SERVER2 refuses
    // without looking; each attempt is refused, and the test goes on until one did look (and
    // could not reach SERVER1).
    let deadline = Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let t = report_token(&minter, &s.server2, "u_alice", report_id, now());
        let resp = submit(&client(), &s.server2, t.as_str()).await;
        assert_eq!(resp.status(), 401);
        if s.server2_logs().contains("JWKS refresh failed") {
            break;
        }
        assert!(Instant::now() < deadline, "SERVER2 never tried to refresh its keys");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// SERVER2 fetches the key set again when the issuer's `max-age` runs out (within its bounds):
/// a key the issuer withdraws stops being trusted without a restart.
#[tokio::test]
async fn jwks_max_age_is_honoured() {
    let key = SigningKey::generate().unwrap();
    let jwks = serde_json::to_string(&handoff::Jwks { keys: vec![key.public_jwk()] }).unwrap();
    let endpoint = FaultyJwks::start(JwksFault::ServeFor(jwks, 1)).await;
    let jwks_url = endpoint.url.clone();
    let s = spawn_with(move |c| {
        c.issuers[0].keys_from = server2::config::KeysFrom::Url(jwks_url);
        c.jwks_cache_bounds =
            (std::time::Duration::from_secs(1), std::time::Duration::from_secs(3600));
    })
    .await;
    assert_eq!(endpoint.hits(), 1);
    // The background loop looks every 5 s; with max-age=1 it fetches at the next look.
    let deadline = Instant::now() + std::time::Duration::from_secs(15);
    while endpoint.hits() < 2 {
        assert!(Instant::now() < deadline, "no refetch after max-age");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    drop(s);
}

/// A database another process holds locked: SERVER1 answers "temporarily unavailable" (503)
/// after its busy timeout, stores nothing half-way, and works again once the lock is gone.
#[tokio::test]
async fn locked_database_is_a_clear_503() {
    let s = spawn_sqlite().await;
    let c = client();
    let page = text_of(&c, &format!("{}/login", s.server1)).await;
    let csrf = form_value(&page, "csrf").unwrap();
    let db = s.dir.path().join("server1.sqlite3");
    let locker = rusqlite::Connection::open(&db).unwrap();
    locker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let resp = c
        .post(format!("{}/login", s.server1))
        .form(&[("username", "alice"), ("password", PASSWORD), ("csrf", &csrf), ("next", "/")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    let body = resp.text().await.unwrap();
    assert!(
        body.contains("Temporarily unavailable") && !body.contains("database is locked"),
        "{body}"
    );
    locker.execute_batch("ROLLBACK").unwrap();
    drop(locker);
    // Nothing was stored half-way, nor later once the lock was gone: the refused sign-in left
    // no session behind.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let sessions: i64 = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row("SELECT count(*) FROM sessions", [], |r| r.get(0))
        .unwrap();
    assert_eq!(sessions, 0);
    sign_in(&c, &s.server1, "alice").await;
}

/// Keys the issuer has not confirmed for longer than `SERVER2_JWKS_MAX_STALE_SECS` are no longer
/// trusted (security round two, finding 9): a withdrawn key cannot live on because SERVER1 is
/// down. Handoffs are then refused as "unavailable" (503), `/readyz` says so, the metric shows
/// how long, and a good fetch brings everything back.
#[tokio::test]
async fn keys_the_issuer_stopped_confirming_expire() {
    let key = Arc::new(SigningKey::generate().unwrap());
    let jwks = serde_json::to_string(&handoff::Jwks { keys: vec![key.public_jwk()] }).unwrap();
    let endpoint = FaultyJwks::start(JwksFault::Serve(jwks.clone())).await;
    let jwks_url = endpoint.url.clone();
    let clock = manual_clock();
    let s = spawn_clocked_with(&clock, move |c| {
        c.issuers[0].keys_from = server2::config::KeysFrom::Url(jwks_url);
        c.jwks_cache_bounds =
            (std::time::Duration::from_secs(60), std::time::Duration::from_secs(60));
        c.jwks_max_stale = std::time::Duration::from_secs(120);
    })
    .await;
    let minter = Minter::new(key, Issuer::parse(&s.server1).unwrap(), Ttl::from_secs(60).unwrap());
    let token = |at| report_token(&minter, &s.server2, "p_x", "42", at).into_string();
    assert_eq!(submit(&client(), &s.server2, &token(clock.now())).await.status(), 303);

    // The issuer goes down; two minutes and a second later its keys are no longer trusted.
    endpoint.set(JwksFault::ServerError);
    clock.advance(121);
    let refused = submit(&client(), &s.server2, &token(clock.now())).await;
    assert_eq!(refused.status(), 503);
    assert!(s.server2_logs().contains("reason=\"keys_unavailable\""));
    let ready = client().get(format!("{}/readyz", s.server2)).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let metrics = text_of(&client(), &s.metrics2()).await;
    let unconfirmed: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("jwks_unconfirmed_seconds "))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(unconfirmed >= 121, "{metrics}");
    assert!(metrics.contains("jwks_keys 0"), "{metrics}");

    // The issuer answers again: the background loop (retrying every second or so while not
    // ready) confirms the keys, and handoffs pass.
    endpoint.set(JwksFault::Serve(jwks));
    let deadline = Instant::now() + std::time::Duration::from_secs(15);
    while client().get(format!("{}/readyz", s.server2)).send().await.unwrap().status() != 200 {
        assert!(Instant::now() < deadline, "keys never confirmed again");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(submit(&client(), &s.server2, &token(clock.now())).await.status(), 303);
}
