//! Key rotation under continuous handoff traffic: two rotations, not one failed handoff.
//!
//! The servers run on a manual clock: a rotated key activates, and SERVER1 looks at its key
//! manifest again (at most once a clock-second), when the test moves the clock.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use handoff::Clock as _;
use handoff_tests::*;

/// What the handoff traffic has done so far.
#[derive(Default)]
struct Traffic {
    attempts: u32,
    failures: Vec<u16>,
    /// The tokens' headers (one per signing key).
    headers: BTreeSet<String>,
}

/// Waits until `done` holds for the traffic (at most 30 s).
async fn wait_for(traffic: &Mutex<Traffic>, what: &str, done: impl Fn(&Traffic) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done(&traffic.lock().unwrap()) {
        assert!(Instant::now() < deadline, "the traffic never {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until the traffic has made `n` more handoffs.
async fn more_handoffs(traffic: &Mutex<Traffic>, n: u32) {
    let from = traffic.lock().unwrap().attempts;
    wait_for(traffic, "went on", |t| t.attempts >= from + n).await;
}

#[tokio::test]
async fn two_rotations_under_traffic_fail_no_handoff() {
    let clock = manual_clock();
    let s = spawn_clocked(&clock).await;
    // SERVER2 fetched SERVER1's keys while starting.
    let mut fetched = Instant::now();
    let keys_dir = s.dir.path().join("keys");
    let c = client();
    sign_in(&c, &s.server1, "alice").await;

    // Continuous traffic: mint through the portal, hand over, until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = Arc::new(Mutex::new(Traffic::default()));
    let task = {
        let (c, s1, s2) = (c.clone(), s.server1.clone(), s.server2.clone());
        let (stop, traffic) = (stop.clone(), traffic.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let id = traffic.lock().unwrap().attempts % 999 + 1;
                let token =
                    open_handoff(&c, &s1, &format!("/handoff/partner/report.view?report_id={id}"))
                        .await;
                let header = token.split('.').next().unwrap().to_owned();
                traffic.lock().unwrap().headers.insert(header);
                let status = submit(&c, &s2, &token).await.status();
                let mut t = traffic.lock().unwrap();
                t.attempts += 1;
                if status != 303 {
                    t.failures.push(status.as_u16());
                }
            }
        })
    };

    let list = || {
        let ring = server1::keyring::KeyRing::load(&keys_dir).unwrap();
        let now = clock.now();
        ring.states(now).iter().map(|(e, st)| (e.kid.clone(), st.name())).collect::<Vec<_>>()
    };
    more_handoffs(&traffic, 5).await;
    let started = Instant::now();
    for round in 1..=2 {
        // Published now, signing two seconds later.
        let entry = server1::keyring::rotate(&keys_dir, 2, clock.now()).unwrap();
        assert!(
            list().iter().any(|(kid, st)| *kid == entry.kid && *st == "pending"),
            "round {round}"
        );
        // A second later SERVER1 looks at the manifest and publishes the new key; the traffic
        // goes on with the old one.
        clock.advance(1);
        more_handoffs(&traffic, 5).await;
        // SERVER2 looks for a key it lacks at most once per refresh interval (1 s of real time
        // in tests): that much has passed since its last fetch when the new key starts signing.
        tokio::time::sleep_until((fetched + Duration::from_secs(1)).into()).await;
        clock.advance(1);
        wait_for(&traffic, "used the new key", |t| t.headers.len() == round + 1).await;
        more_handoffs(&traffic, 5).await;
        // SERVER2 fetched the new key for the first token signed with it, before answering it.
        fetched = Instant::now();
        assert!(
            list().iter().any(|(kid, st)| *kid == entry.kid && *st == "active"),
            "round {round}"
        );
    }
    stop.store(true, Ordering::SeqCst);
    task.await.unwrap();
    let (attempts, failures, headers) = {
        let t = traffic.lock().unwrap();
        (t.attempts, t.failures.clone(), t.headers.len())
    };
    eprintln!(
        "rotation under traffic: {attempts} handoffs over {:.1} s, {} failed, signed with {headers} keys",
        started.elapsed().as_secs_f64(),
        failures.len()
    );
    assert!(failures.is_empty(), "failed handoffs: {failures:?}");
    assert_eq!(headers, 3, "tokens were signed by the original key and both new ones");
    assert!(attempts >= 20, "only {attempts} handoffs");
    // Every key is still published: the replaced ones until their tokens have expired.
    let jwks: serde_json::Value = serde_json::from_str(&jwks_of(&s.server1).await).unwrap();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 3);
    let states: Vec<_> = list().into_iter().map(|(_, st)| st).collect();
    assert_eq!(states, ["retiring", "retiring", "active"]);
}

/// Two SERVER1s sharing the keys directory and database switch keys at the same moment: every
/// state follows from the manifest and the clock.
#[tokio::test]
async fn replicas_sharing_the_keys_directory_agree_on_the_active_key() {
    let clock = manual_clock();
    let s = spawn_clocked(&clock).await;
    let (l, port) = listener();
    let mut config = server1_config(s.dir.path(), port);
    config.public_url = handoff::Issuer::parse(&s.server1).unwrap();
    config.clock = clock.clone();
    let _replica = serve_server1(config, l).await;
    let replica_url = format!("http://127.0.0.1:{port}");

    let kid_of = |token: &str| token_header(token)["kid"].as_str().unwrap().to_owned();
    let mint_on = |base: String| async move {
        let c = client();
        sign_in(&c, &base, "alice").await;
        open_handoff(&c, &base, "/handoff/partner/report.view?report_id=1").await
    };
    let before =
        (kid_of(&mint_on(s.server1.clone()).await), kid_of(&mint_on(replica_url.clone()).await));
    assert_eq!(before.0, before.1);

    let entry = server1::keyring::rotate(&s.dir.path().join("keys"), 2, clock.now()).unwrap();
    // Both publish the new key at once (they look at the manifest once a second)...
    clock.advance(1);
    for base in [&s.server1, &replica_url] {
        let jwks = jwks_of(base).await;
        assert!(jwks.contains(&entry.kid), "{base} publishes the pending key");
    }
    // ...and both sign with it once it is active.
    clock.advance(1);
    let after =
        (kid_of(&mint_on(s.server1.clone()).await), kid_of(&mint_on(replica_url.clone()).await));
    assert_eq!(after, (entry.kid.clone(), entry.kid.clone()));
}

/// A key manifest that turns to garbage under a running SERVER1 is not taken: it keeps signing
/// with the keys it has, says so in its log, and handoffs go on working.
#[tokio::test]
async fn a_broken_manifest_leaves_the_running_keys_in_place() {
    let clock = manual_clock();
    let s = spawn_clocked(&clock).await;
    let c = client();
    sign_in(&c, &s.server1, "alice").await;
    std::fs::write(s.dir.path().join("keys").join("keys.json"), "{ not a manifest").unwrap();
    // The manifest is looked at once a second.
    clock.advance(1);
    let token = open_handoff(&c, &s.server1, "/handoff/partner/report.view?report_id=42").await;
    assert_eq!(submit(&c, &s.server2, &token).await.status(), 303);
    assert!(s.server1_logs().contains("cannot reload signing keys"));
    let jwks = jwks_of(&s.server1).await;
    assert!(jwks.contains(s.key.kid().as_str()), "the key is still published");
}
