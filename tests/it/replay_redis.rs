//! SERVER2 replicas sharing a real Redis as their replay store: each token is accepted once,
//! whichever replica it reaches and however close together; a Redis that stops makes SERVER2
//! refuse (503, not ready) and accept nothing; one that comes back empty does not let a token
//! used before its restart through again.

use handoff::Clock;
use handoff_tests::*;

/// Points SERVER2 at `redis`.
fn on(redis: &RedisServer) -> impl FnOnce(&mut server2::Config) {
    at(&redis.url())
}

/// Points SERVER2 at the Redis at `url`.
fn at(url: &str) -> impl FnOnce(&mut server2::Config) {
    let url = server2::config::RedisUrl::parse(url).unwrap();
    move |c| c.replay_store = server2::config::ReplayStoreSetting::Redis(url)
}

#[tokio::test]
async fn a_redis_on_this_host_is_reached_through_its_socket_file() {
    let redis = RedisServer::start().await;
    let s = spawn_with(at(&redis.unix_url())).await;
    let token = report_token(&minter(&s, 60), &s.server2, "alice", "7", now()).into_string();
    let c = plain_client();
    assert_eq!(submit(&c, &s.server2, &token).await.status(), 303);
    assert_eq!(submit(&c, &s.server2, &token).await.status(), 401, "used once");
    assert!(s.server2_logs().contains("replay store available store=redis+unix://"));
}

#[tokio::test]
async fn two_replicas_accept_each_token_once_even_at_the_same_instant() {
    let redis = RedisServer::start().await;
    let s = spawn_with(on(&redis)).await;
    // A second replica for the same audience, on its own port, sharing the Redis.
    let (l, port) = listener();
    let mut config = server2_config(&s.server1, &s.server2);
    on(&redis)(&mut config);
    let replica = serve_server2(config, l).await;
    assert!(replica.ready_at_start, "the replica loaded keys and reached Redis");
    let (a, b) = (s.server2.clone(), format!("http://127.0.0.1:{port}"));
    let m = minter(&s, 60);
    let (ca, cb) = (plain_client(), plain_client());
    let mut outcomes = std::collections::BTreeMap::new();
    for i in 0..1000u32 {
        let token = report_token(&m, &s.server2, "alice", &(i % 999 + 1).to_string(), now());
        let token = token.as_str();
        let (ra, rb) = tokio::join!(submit(&ca, &a, token), submit(&cb, &b, token));
        let statuses = (ra.status().as_u16(), rb.status().as_u16());
        *outcomes.entry(statuses).or_insert(0u32) += 1;
    }
    // Exactly one of each pair accepted (303), the other refused as already used (401).
    let once: u32 = [(303, 401), (401, 303)].iter().filter_map(|k| outcomes.get(k)).sum();
    assert_eq!(once, 1000, "outcomes by (replica A, replica B): {outcomes:?}");
    assert!(outcomes.len() == 2, "both replicas won some races: {outcomes:?}");
    assert!(replica.logs().contains("reason=\"replayed\""));
}

#[tokio::test]
async fn a_redis_that_stops_refuses_everything_and_one_that_restarts_empty_forgets_nothing() {
    let mut redis = RedisServer::start().await;
    let clock = manual_clock();
    let s = spawn_clocked_with(&clock, on(&redis)).await;
    let m = minter(&s, 60);
    let c = plain_client();
    let token = |id: &str| report_token(&m, &s.server2, "alice", id, clock.now()).into_string();
    let used = token("1");
    assert_eq!(submit(&c, &s.server2, &used).await.status(), 303);
    assert_eq!(status_of(&c, &format!("{}/readyz", s.server2)).await, 200);

    // Redis gone: every handoff refused as unavailable, nothing accepted, not ready.
    redis.stop();
    for id in ["2", "3", "4"] {
        let resp = submit(&c, &s.server2, &token(id)).await;
        assert_eq!(resp.status(), 503, "token {id}");
        assert!(resp.text().await.unwrap().contains("temporarily unavailable"));
    }
    assert_eq!(status_of(&c, &format!("{}/readyz", s.server2)).await, 503);
    assert!(s.server2_logs().contains("reason=\"replay_store_unavailable\""));

    // Back, empty, a second later: the token used before is refused (its use was forgotten,
    // and it was issued before the store's new epoch); tokens issued since pass again.
    redis.restart().await;
    clock.advance(1);
    let resp = submit(&c, &s.server2, &used).await;
    assert_eq!(resp.status(), 401, "a token used before the restart");
    assert!(s.server2_logs().contains("reason=\"issued_before_start\""));
    assert_eq!(submit(&c, &s.server2, &token("5")).await.status(), 303);
    assert_eq!(status_of(&c, &format!("{}/readyz", s.server2)).await, 200);
    let again = token("6");
    assert_eq!(submit(&c, &s.server2, &again).await.status(), 303);
    assert_eq!(submit(&c, &s.server2, &again).await.status(), 401, "and used once only");
}

#[tokio::test]
async fn a_server2_whose_redis_is_not_up_yet_starts_not_ready_and_recovers_by_itself() {
    let mut redis = RedisServer::not_started();
    let s = spawn_with(on(&redis)).await;
    let c = plain_client();
    let token = |id: &str| report_token(&minter(&s, 60), &s.server2, "alice", id, now());
    assert_eq!(status_of(&c, &format!("{}/readyz", s.server2)).await, 503, "no Redis yet");
    assert_eq!(submit(&c, &s.server2, token("1").as_str()).await.status(), 503, "fails closed");
    redis.restart().await;
    // The next handoff reconnects (the background probe would within 5 s too); its token was
    // issued after the store's epoch, which this first use writes.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let fresh = loop {
        let t = token("2");
        let status = submit(&c, &s.server2, t.as_str()).await.status();
        if status == 303 {
            break t;
        }
        assert!(std::time::Instant::now() < deadline, "SERVER2 did not recover: {status}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert_eq!(submit(&c, &s.server2, fresh.as_str()).await.status(), 401, "used once");
    assert_eq!(status_of(&c, &format!("{}/readyz", s.server2)).await, 200);
}

/// Replicas sharing a Redis share what logouts ended: SERVER1's logout reaches one replica, and
/// the grant is refused on the other. A Redis that restarts empty forgets logouts, so grants
/// from before its restart are refused (fail closed) and new ones work.
#[tokio::test]
async fn a_logout_on_one_replica_ends_the_grant_on_every_replica() {
    let mut redis = RedisServer::start().await;
    let key_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(key_file.path(), [9u8; 32]).unwrap();
    let key_path = key_file.path().to_path_buf();
    let shared = |redis: &RedisServer, key: std::path::PathBuf| {
        let on = on(redis);
        move |c: &mut server2::Config| {
            on(c);
            c.cookie_key_file = Some(key);
        }
    };
    let s = spawn_with(shared(&redis, key_path.clone())).await;
    let (l, port) = listener();
    let mut config = server2_config(&s.server1, &s.server2);
    shared(&redis, key_path.clone())(&mut config);
    let _b = serve_server2(config, l).await;
    let b = format!("http://127.0.0.1:{port}");

    let browser = client();
    sign_in(&browser, &s.server1, "alice").await;
    let token =
        open_handoff(&browser, &s.server1, "/handoff/partner/report.view?report_id=42").await;
    let landed = submit(&browser, &s.server2, &token).await;
    let grant = set_cookie(&landed, "__Host-handoff_grant=");
    let on_b = |grant: String| {
        let url = format!("{b}/reports/42");
        async move {
            reqwest::Client::new().get(url).header("cookie", grant).send().await.unwrap().status()
        }
    };
    assert_eq!(on_b(grant.clone()).await, 200, "replica B honours replica A's grant");
    let page = text_of(&browser, &format!("{}/", s.server1)).await;
    let csrf = form_value(&page, "csrf").unwrap();
    browser.post(format!("{}/logout", s.server1)).form(&[("csrf", csrf)]).send().await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while on_b(grant.clone()).await != 403 {
        assert!(std::time::Instant::now() < deadline, "replica B never learnt of the logout");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    // A fresh grant (a new session), then Redis restarts empty: the grant is from before the
    // store's new memory, so it is refused; a handoff after the restart works again.
    sign_in(&browser, &s.server1, "alice").await;
    let token =
        open_handoff(&browser, &s.server1, "/handoff/partner/report.view?report_id=42").await;
    let landed = submit(&browser, &s.server2, &token).await;
    let grant = set_cookie(&landed, "__Host-handoff_grant=");
    assert_eq!(on_b(grant.clone()).await, 200);
    redis.restart().await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    // The first request on a broken connection may find the store unavailable (503); never is
    // the grant honoured.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let status = on_b(grant.clone()).await;
        assert_ne!(status, 200, "forgotten logouts fail closed");
        if status == 403 {
            break;
        }
        assert_eq!(status, 503);
        assert!(std::time::Instant::now() < deadline, "the store never answered again");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // A token issued in the second the store's new epochs were written may still be refused
    // as from before them; the next one passes.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let landed = loop {
        let path = "/handoff/partner/report.view?report_id=42";
        let landed =
            submit(&browser, &s.server2, &open_handoff(&browser, &s.server1, path).await).await;
        if landed.status() == 303 {
            break landed;
        }
        assert!(std::time::Instant::now() < deadline, "no handoff after the restart");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    let grant = set_cookie(&landed, "__Host-handoff_grant=");
    assert_eq!(on_b(grant).await, 200);
}

/// With the Redis stores down, an operation page cannot ask whether a logout ended its grant:
/// it answers 503 (fail closed), never the page; back up, the grant works again.
#[tokio::test]
async fn an_operation_request_fails_closed_while_redis_is_down() {
    let mut redis = RedisServer::start().await;
    let s = spawn_with(on(&redis)).await;
    let browser = client();
    sign_in(&browser, &s.server1, "alice").await;
    let token =
        open_handoff(&browser, &s.server1, "/handoff/partner/report.view?report_id=42").await;
    assert_eq!(submit(&browser, &s.server2, &token).await.status(), 303);
    let report = format!("{}/reports/42", s.server2);
    assert_eq!(status_of(&browser, &report).await, 200);
    // Epochs are whole seconds: a grant from the very second a Redis comes back counts as
    // after it. Let that second pass.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    redis.stop();
    let resp = browser.get(&report).send().await.unwrap();
    assert_eq!(resp.status(), 503);
    assert!(!resp.text().await.unwrap().contains("Report 42"), "no page without the check");
    redis.restart().await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    // The grant is from before the Redis that came back empty: refused (403), never the page.
    loop {
        let status = status_of(&browser, &report).await;
        assert_ne!(status, 200, "a grant from before an empty Redis fails closed");
        if status == 403 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the store never answered again");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
