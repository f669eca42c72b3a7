//! Key rotation under continuous handoff traffic: two rotations, not one failed handoff.

use std::time::{Duration, Instant};

use handoff_tests::*;

#[tokio::test]
async fn two_rotations_under_traffic_fail_no_handoff() {
    let s = spawn().await;
    let keys_dir = s.dir.path().join("keys");
    let c = client();
    sign_in(&c, &s.server1, "alice").await;

    // Continuous traffic: mint through the portal, hand over, until told to stop.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let traffic = {
        let (c, s1, s2, stop) = (c.clone(), s.server1.clone(), s.server2.clone(), stop.clone());
        tokio::spawn(async move {
            let (mut attempts, mut failures, mut kids) =
                (0u32, Vec::new(), std::collections::BTreeSet::new());
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let id = attempts % 999 + 1;
                let token =
                    open_handoff(&c, &s1, &format!("/handoff/partner/report.view?report_id={id}"))
                        .await;
                let header = token.split('.').next().unwrap().to_owned();
                kids.insert(header);
                let resp = c
                    .post(format!("{s2}/handoff"))
                    .form(&[("token", &token)])
                    .send()
                    .await
                    .unwrap();
                attempts += 1;
                if resp.status() != 303 {
                    failures.push(resp.status().as_u16());
                }
            }
            (attempts, failures, kids.len())
        })
    };

    let list = || {
        let ring = server1::keyring::KeyRing::load(&keys_dir).unwrap();
        let now = handoff_tests::now();
        ring.states(now).iter().map(|(e, st)| (e.kid.clone(), st.name())).collect::<Vec<_>>()
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let started = Instant::now();
    for round in 1..=2 {
        // Published now, signing two seconds later.
        let now = handoff_tests::now();
        let entry = server1::keyring::rotate(&keys_dir, 2, now).unwrap();
        assert!(
            list().iter().any(|(kid, st)| *kid == entry.kid && *st == "pending"),
            "round {round}"
        );
        tokio::time::sleep(Duration::from_millis(3500)).await;
        assert!(
            list().iter().any(|(kid, st)| *kid == entry.kid && *st == "active"),
            "round {round}"
        );
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (attempts, failures, headers) = traffic.await.unwrap();
    eprintln!(
        "rotation under traffic: {attempts} handoffs over {:.1} s, {} failed, signed with {headers} keys",
        started.elapsed().as_secs_f64(),
        failures.len()
    );
    assert!(failures.is_empty(), "failed handoffs: {failures:?}");
    assert_eq!(headers, 3, "tokens were signed by the original key and both new ones");
    assert!(attempts >= 20, "only {attempts} handoffs");
    // Every key is still published: the replaced ones until their tokens have expired.
    let jwks: serde_json::Value = reqwest::get(format!("{}/.well-known/jwks.json", s.server1))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 3);
    let states: Vec<_> = list().into_iter().map(|(_, st)| st).collect();
    assert_eq!(states, ["retiring", "retiring", "active"]);
}

/// Two SERVER1s sharing the keys directory and database switch keys at the same moment: every
/// state follows from the manifest and the clock.
#[tokio::test]
async fn replicas_sharing_the_keys_directory_agree_on_the_active_key() {
    let s = spawn().await;
    let (l, port) = listener();
    let mut config = server1_config(s.dir.path(), port);
    config.public_url = handoff::Issuer::parse(&s.server1).unwrap();
    let replica = server1::build_app(config, l).unwrap();
    tokio::spawn(replica.run(std::future::pending()));
    let replica_url = format!("http://127.0.0.1:{port}");

    let kid_of = |token: &str| {
        use base64::Engine as _;
        let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token.split('.').next().unwrap())
            .unwrap();
        serde_json::from_slice::<serde_json::Value>(&header).unwrap()["kid"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let mint_on = |base: String| async move {
        let c = client();
        sign_in(&c, &base, "alice").await;
        open_handoff(&c, &base, "/handoff/partner/report.view?report_id=1").await
    };
    let before =
        (kid_of(&mint_on(s.server1.clone()).await), kid_of(&mint_on(replica_url.clone()).await));
    assert_eq!(before.0, before.1);

    let now = handoff_tests::now();
    let entry = server1::keyring::rotate(&s.dir.path().join("keys"), 2, now).unwrap();
    // Both publish the new key at once...
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for base in [&s.server1, &replica_url] {
        let jwks = reqwest::get(format!("{base}/.well-known/jwks.json"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(jwks.contains(&entry.kid), "{base} publishes the pending key");
    }
    // ...and both sign with it once it is active.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let after =
        (kid_of(&mint_on(s.server1.clone()).await), kid_of(&mint_on(replica_url.clone()).await));
    assert_eq!(after, (entry.kid.clone(), entry.kid.clone()));
}

/// A key manifest that turns to garbage under a running SERVER1 is not taken: it keeps signing
/// with the keys it has, says so in its log, and handoffs go on working.
#[tokio::test]
async fn a_broken_manifest_leaves_the_running_keys_in_place() {
    let s = spawn().await;
    let c = client();
    sign_in(&c, &s.server1, "alice").await;
    std::fs::write(s.dir.path().join("keys").join("keys.json"), "{ not a manifest").unwrap();
    // The manifest is looked at once a second.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let token = open_handoff(&c, &s.server1, "/handoff/partner/report.view?report_id=42").await;
    assert_eq!(submit(&c, &s.server2, &token).await.status(), 303);
    assert!(captured_logs().contains("cannot reload signing keys"));
    let jwks = text_of(&c, &format!("{}/.well-known/jwks.json", s.server1)).await;
    assert!(jwks.contains(s.key.kid().as_str()), "the key is still published");
}
