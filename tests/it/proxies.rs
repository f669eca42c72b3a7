//! The client's address behind proxies (`SERVER1_TRUSTED_PROXIES`): a forwarding header counts
//! only when the peer is a trusted proxy, so nobody escapes the per-address sign-in throttle by
//! writing one, and a real load balancer's clients are throttled one by one, not all together.

use handoff_tests::*;

/// A failed sign-in as `name` whose request claims to come from `forwarded_for`.
async fn fail_as(s: &Servers, name: &str, forwarded_for: &str) -> u16 {
    sign_in_from(s, name, "guess", forwarded_for).await
}

/// Signs in as `name` with the right password, the request claiming `forwarded_for`.
async fn sign_in_as(s: &Servers, name: &str, forwarded_for: &str) -> u16 {
    sign_in_from(s, name, PASSWORD, forwarded_for).await
}

/// A sign-in whose request claims to come from `forwarded_for`; its status.
async fn sign_in_from(s: &Servers, name: &str, password: &str, forwarded_for: &str) -> u16 {
    let c = client();
    let page = text_of(&c, &format!("{}/login", s.server1)).await;
    let csrf = form_value(&page, "csrf").expect("a csrf field");
    let form = [("username", name), ("password", password), ("csrf", &csrf), ("next", "/")];
    let resp = c
        .post(format!("{}/login", s.server1))
        .header("x-forwarded-for", forwarded_for)
        .form(&form)
        .send()
        .await
        .unwrap();
    resp.status().as_u16()
}

#[tokio::test]
async fn a_forwarding_header_from_anyone_else_changes_nothing() {
    // A manual clock: the first block lasts one second, which a slow run could otherwise outlive.
    let clock = manual_clock();
    let s = spawn_clocked(&clock).await;
    // Twenty failures, each claiming another address: all are this one client's.
    for i in 0..20 {
        assert_eq!(fail_as(&s, &format!("spray{i}"), &format!("203.0.113.{i}")).await, 401);
    }
    assert_eq!(fail_as(&s, "someone", "198.51.100.1").await, 429, "the header was ignored");
}

/// Both servers, SERVER1 trusting 127.0.0.1 as its proxy and on a clock that stands still (the
/// first block lasts one second, which a slow run could otherwise outlive).
async fn behind_a_trusted_proxy() -> Servers {
    let proxies = handoff_web::TrustedProxies::parse("127.0.0.1").unwrap();
    let clock = manual_clock();
    spawn_both(
        move |c| {
            c.trusted_proxies = proxies;
            c.clock = clock;
        },
        |_| {},
    )
    .await
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_client_is_throttled_on_its_own() {
    let s = behind_a_trusted_proxy().await;
    for i in 0..20 {
        assert_eq!(fail_as(&s, &format!("spray{i}"), "203.0.113.7").await, 401);
    }
    assert_eq!(fail_as(&s, "someone", "203.0.113.7").await, 429, "that client is slowed down");
    assert_eq!(fail_as(&s, "someone", "203.0.113.8").await, 401, "another client is not");
}

/// Security round two, finding 10: failing sign-ins as someone slows the client that fails,
/// not the account's owner; guessing spread over many addresses meets the account's ceiling,
/// which stops the clients that failed and still not the owner's.
#[tokio::test]
async fn failed_sign_ins_elsewhere_do_not_lock_the_owner_out() {
    let s = behind_a_trusted_proxy().await;
    for _ in 0..5 {
        assert_eq!(fail_as(&s, "alice", "203.0.113.7").await, 401);
    }
    assert_eq!(fail_as(&s, "alice", "203.0.113.7").await, 429, "the guessing client waits");
    assert_eq!(sign_in_as(&s, "alice", "198.51.100.1").await, 303, "the owner signs in");
    // Twenty more failures, each from an address of its own: the account's ceiling.
    for i in 0..20 {
        assert_eq!(fail_as(&s, "alice", &format!("203.0.113.{}", 20 + i)).await, 401);
    }
    assert_eq!(fail_as(&s, "alice", "203.0.113.21").await, 429, "a client that failed waits");
    assert_eq!(sign_in_as(&s, "alice", "203.0.113.21").await, 429, "even with the password");
    assert_eq!(sign_in_as(&s, "alice", "198.51.100.2").await, 303, "a client that did not fail");
}
