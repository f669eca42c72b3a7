//! Login CSRF and session swap: handoffs SERVER2 starts are bound to the browser that started
//! them; a browser already signed in as someone else is asked before switching; SERVER1 asks
//! before handing a user over on another site's say-so.

use handoff_tests::*;

/// Follows SERVER2's own start link for report `id` and returns SERVER1's handoff page token.
async fn start_from_server2(s: &Servers, c: &reqwest::Client, id: &str) -> String {
    let denied = c.get(format!("{}/reports/{id}", s.server2)).send().await.unwrap();
    assert_eq!(denied.status(), 403);
    let page = denied.text().await.unwrap();
    let start = format!("/handoff/start?type=report.view&amp;report_id={id}");
    assert!(page.contains(&start), "the 403 page offers to start a handoff: {page}");
    let started =
        c.get(format!("{}{}", s.server2, start.replace("&amp;", "&"))).send().await.unwrap();
    assert_eq!(started.status(), 303);
    let nonce_cookie =
        set_cookie_header(&started, "__Host-handoff_nonce=").expect("a nonce cookie");
    for attribute in ["HttpOnly", "Secure", "SameSite=None", "Path=/", "Max-Age=300"] {
        assert!(nonce_cookie.contains(attribute), "{attribute}: {nonce_cookie}");
    }
    let location = started.headers()["location"].to_str().unwrap().to_owned();
    let prefix = format!("{}/handoff/partner/report.view?report_id={id}&nonce=", s.server1);
    assert!(location.starts_with(&prefix), "{location}");
    let nonce = location[prefix.len()..].to_owned();
    // SERVER1 cannot tell SERVER2's own link from another site's: it asks, and nothing is
    // minted until the person agrees.
    let asked = c.get(&location).header("sec-fetch-site", "cross-site").send().await.unwrap();
    assert_eq!(asked.status(), 200);
    let page = asked.text().await.unwrap();
    assert!(page.contains("Open View report in Partner Analytics?"), "{page}");
    assert!(!page.contains("name=\"token\""), "nothing minted before the person agrees");
    let page = confirm_handoff(c, &s.server1, &page).await;
    assert_eq!(page.status(), 200);
    let token = form_value(&page.text().await.unwrap(), "token").expect("a handoff page");
    let claims = token_claims(&token);
    assert_eq!(claims["nonce"], nonce, "the token carries the browser's nonce");
    token
}

#[tokio::test]
async fn a_handoff_server2_starts_is_bound_to_its_browser() {
    let s = spawn().await;
    let c = client();
    sign_in(&c, &s.server1, "alice").await;
    let token = start_from_server2(&s, &c, "43").await;
    let landed = submit(&c, &s.server2, &token).await;
    assert_eq!(landed.status(), 303);
    assert_eq!(landed.headers()["location"], "/reports/43");
    let cleared = set_cookie_header(&landed, "__Host-handoff_nonce=;")
        .is_some_and(|v| v.contains("Max-Age=0"));
    assert!(cleared, "the nonce is used once");
    assert_eq!(status_of(&c, &format!("{}/reports/43", s.server2)).await, 200);
}

#[tokio::test]
async fn a_bound_token_in_another_browser_is_refused() {
    let s = spawn().await;
    // The attacker starts a handoff in their own browser and keeps the token...
    let attacker = client();
    sign_in(&attacker, &s.server1, "bob").await;
    let token = start_from_server2(&s, &attacker, "44").await;
    // ...and gets the victim's browser to submit it (login CSRF). Refused, nothing set.
    let victim = client();
    let started = victim
        .get(format!("{}/handoff/start?type=report.view&report_id=44", s.server2))
        .send()
        .await
        .unwrap();
    assert_eq!(started.status(), 303, "the victim's browser holds a nonce of its own");
    assert!(started
        .headers()
        .get_all("set-cookie")
        .iter()
        .any(|v| v.to_str().unwrap().contains("handoff_nonce=")));
    let resp = submit(&victim, &s.server2, &token).await;
    assert_eq!(resp.status(), 401);
    assert!(resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .all(|v| !v.to_str().unwrap().contains("handoff_grant")));
    assert!(resp.text().await.unwrap().contains("belongs to another browser"));
    assert_eq!(status_of(&victim, &format!("{}/reports/44", s.server2)).await, 403);
    // A browser with no nonce cookie at all is refused too.
    let bare = submit(&client(), &s.server2, &token).await;
    assert_eq!(bare.status(), 401);
    // The refusal used the token up (security round two, finding 3): not even the browser
    // that started it can use it now.
    let own = submit(&attacker, &s.server2, &token).await;
    assert_eq!(own.status(), 401);
    assert!(own.text().await.unwrap().contains("already used"));
    assert!(s.server2_logs().contains("reason=\"nonce_mismatch\""));
}

/// Security round two, finding 2: on the product's defaults every browser handoff is bound,
/// also one that starts on SERVER1, and a token without a nonce is refused.
#[tokio::test]
async fn unbound_tokens_are_refused_by_default() {
    let s = spawn_default().await;
    let c = client();
    sign_in(&c, &s.server1, "alice").await;
    // Started on SERVER1: it passes through SERVER2's start URL first, which sets the nonce.
    let first = c
        .get(format!("{}/handoff/partner/report.view?report_id=45", s.server1))
        .header("sec-fetch-site", "same-origin")
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 303);
    let location = first.headers()["location"].to_str().unwrap();
    assert_eq!(
        location,
        format!(
            "{}/handoff/start?type=report.view&report_id=45&iss={}",
            s.server2,
            url::form_urlencoded::byte_serialize(s.server1.as_bytes()).collect::<String>()
        )
    );
    let approval = set_cookie_header(&first, "__Host-handoff_approval=").expect("an approval");
    for attribute in ["HttpOnly", "Secure", "SameSite=Lax", "Max-Age=300"] {
        assert!(approval.contains(attribute), "{attribute}: {approval}");
    }
    let bound = open_handoff(&c, &s.server1, "/handoff/partner/report.view?report_id=45").await;
    assert!(token_claims(&bound)["nonce"].is_string(), "the token carries the nonce");
    assert_eq!(submit(&c, &s.server2, &bound).await.status(), 303);
    // A token without a nonce (here minted as `server1 mint` would): refused.
    let unbound = token_for(&s, "u_alice", "46").await;
    let resp = submit(&c, &s.server2, &unbound).await;
    assert_eq!(resp.status(), 401);
    assert!(resp.text().await.unwrap().contains("belongs to another browser"));
    assert!(s.server2_logs().contains("unbound_refused"));
}

/// Security round two, finding 3: a token refused for its binding is used up, so whoever saw
/// it cannot redeem it in the browser it was bound to.
#[tokio::test]
async fn a_token_refused_for_its_binding_is_used_up() {
    let s = spawn_default().await;
    let owner = client();
    sign_in(&owner, &s.server1, "alice").await;
    let token = open_handoff(&owner, &s.server1, "/handoff/partner/report.view?report_id=47").await;
    let elsewhere = submit(&client(), &s.server2, &token).await;
    assert_eq!(elsewhere.status(), 401, "another browser");
    let owner_try = submit(&owner, &s.server2, &token).await;
    assert_eq!(owner_try.status(), 401, "used up");
    assert!(owner_try.text().await.unwrap().contains("already used"));
    assert!(s.server2_logs().contains("replayed"), "the owner's try was logged as a replay");
    // An unbound token refused on this server is used up as well: tried again, it was used.
    let unbound = token_for(&s, "u_alice", "48").await;
    let first = submit(&client(), &s.server2, &unbound).await;
    assert_eq!(first.status(), 401);
    assert!(first.text().await.unwrap().contains("belongs to another browser"));
    let again = submit(&client(), &s.server2, &unbound).await;
    assert_eq!(again.status(), 401);
    assert!(again.text().await.unwrap().contains("already used"), "recorded the first time");
}

/// Security round two, finding 3: SERVER1 never puts a token bound to a browser in a URL, so an
/// attacker's nonce with `mode=redirect` gets no live token into the victim's history.
#[tokio::test]
async fn a_bound_token_never_goes_in_a_url() {
    let s = spawn_default().await;
    let c = client();
    sign_in(&c, &s.server1, "alice").await;
    let nonce = "B".repeat(22);
    for query in
        [format!("report_id=42&nonce={nonce}&mode=redirect"), "report_id=42&mode=redirect".into()]
    {
        for site in ["same-origin", "cross-site"] {
            let resp = c
                .get(format!("{}/handoff/partner/report.view?{query}", s.server1))
                .header("sec-fetch-site", site)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 400, "{query} {site}");
            assert!(resp.headers().get("location").is_none());
            let page = resp.text().await.unwrap();
            assert!(!page.contains("name=\"token\"") && !page.contains("eyJ"), "{query} {site}");
        }
    }
    let minted = text_of(&client(), &s.metrics1()).await;
    assert!(!minted.contains("handoff_minted_total{"), "nothing minted: {minted}");
}

async fn token_for(s: &Servers, sub: &str, id: &str) -> String {
    report_token(&minter(s, 60), &s.server2, sub, id, now()).into_string()
}

#[tokio::test]
async fn switching_to_another_user_asks_first() {
    let s = spawn().await;
    let c = client();
    let alice = token_for(&s, "u_alice", "42").await;
    assert_eq!(submit(&c, &s.server2, &alice).await.status(), 303);

    // A link for another user: SERVER2 asks, and alice's access stays meanwhile.
    let bob = token_for(&s, "u_bob", "7").await;
    let ask = submit(&c, &s.server2, &bob).await;
    let page = switch_prompt(&c, &s.server2, ask).await;
    assert!(
        page.contains("Switch user?") && page.contains("u_alice") && page.contains("u_bob"),
        "{page}"
    );
    assert_eq!(status_of(&c, &format!("{}/reports/42", s.server2)).await, 200);
    assert_eq!(status_of(&c, &format!("{}/reports/7", s.server2)).await, 403);

    // Without the form's token nothing changes.
    let forged = c
        .post(format!("{}/handoff/switch", s.server2))
        .form(&[("choice", "switch")])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    assert_eq!(status_of(&c, &format!("{}/reports/7", s.server2)).await, 403);

    let csrf = form_value(&page, "csrf").unwrap();
    let switched = c
        .post(format!("{}/handoff/switch", s.server2))
        .form(&[("choice", "switch"), ("csrf", &csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(switched.status(), 303);
    assert_eq!(switched.headers()["location"], "/reports/7");
    assert_eq!(status_of(&c, &format!("{}/reports/7", s.server2)).await, 200);
    assert_eq!(status_of(&c, &format!("{}/reports/42", s.server2)).await, 403);
}

#[tokio::test]
async fn staying_keeps_the_current_user() {
    let s = spawn().await;
    let c = client();
    let alice = token_for(&s, "u_alice", "42").await;
    assert_eq!(submit(&c, &s.server2, &alice).await.status(), 303);
    let bob = token_for(&s, "u_bob", "7").await;
    let page = switch_prompt(&c, &s.server2, submit(&c, &s.server2, &bob).await).await;
    let csrf = form_value(&page, "csrf").unwrap();
    // An answer that is neither: refused, and the question stays open.
    let neither = c
        .post(format!("{}/handoff/switch", s.server2))
        .form(&[("choice", "both"), ("csrf", &csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(neither.status(), 400);
    assert_eq!(status_of(&c, &format!("{}/reports/7", s.server2)).await, 403);
    let stay = c
        .post(format!("{}/handoff/switch", s.server2))
        .form(&[("choice", "stay"), ("csrf", &csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(stay.status(), 303);
    assert_eq!(status_of(&c, &format!("{}/reports/42", s.server2)).await, 200);
    assert_eq!(status_of(&c, &format!("{}/reports/7", s.server2)).await, 403);
    // The pending switch is gone: answering again does nothing, and there is no prompt.
    let again = c
        .post(format!("{}/handoff/switch", s.server2))
        .form(&[("choice", "switch"), ("csrf", &csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 403);
    assert_eq!(status_of(&c, &format!("{}/handoff/switch", s.server2)).await, 403);
}

/// Security round two, finding 1: only a click on SERVER1's own pages (or an address typed)
/// hands the person over without asking; another site, a sibling site, a browser that does not
/// say, and the way back from signing in all get the question, and its answer is a one-use
/// approval of exactly that operation, sent in a POST body.
#[tokio::test]
async fn a_handoff_another_site_triggers_needs_confirmation() {
    let s = spawn_default().await;
    let c = client();
    sign_in(&c, &s.server1, "alice").await;
    let path = "/handoff/partner/invoice.approve?invoice_id=INV-9";
    let url = format!("{}{path}", s.server1);
    let mut pages = Vec::new();
    for site in [Some("cross-site"), Some("same-site"), Some("none"), None] {
        let mut req = c.get(&url);
        if let Some(site) = site {
            req = req.header("sec-fetch-site", site);
        }
        let asked = req.send().await.unwrap();
        assert_eq!(asked.status(), 200, "{site:?}");
        assert_eq!(asked.headers()["cache-control"], "no-store");
        // Its form posts here and may be redirected to SERVER2's start URL: both allowed.
        let csp = asked.headers()["content-security-policy"].to_str().unwrap();
        assert!(csp.contains(&format!("form-action 'self' {};", s.server2)), "{csp}");
        let page = asked.text().await.unwrap();
        assert!(page.contains("Open Approve invoice in Partner Analytics?"), "{page}");
        assert!(page.contains("as <strong>alice</strong>") && page.contains("INV-9"), "{page}");
        assert!(!page.contains("name=\"token\""), "nothing minted before the person agrees");
        assert!(page.contains("method=\"post\""), "the answer goes in a POST body");
        pages.push(page);
    }
    let approve = |approval: &str, path: &str| {
        c.post(format!("{}{path}", s.server1))
            .header("sec-fetch-site", "same-origin")
            .form(&[("approval", approval)])
            .send()
    };
    // A made-up approval, or one for another invoice, is not one.
    let forged = approve("AAAA.1.AAAA", path).await.unwrap();
    assert_eq!(forged.status(), 403);
    let approval = form_value(&pages[0], "approval").unwrap();
    let other = approve(&approval, "/handoff/partner/invoice.approve?invoice_id=INV-10").await;
    assert_eq!(other.unwrap().status(), 403, "bound to the operation's arguments");
    // The person's click: on to SERVER2 for the nonce, then the token.
    let page = confirm_handoff(&c, &s.server1, &pages[0]).await;
    let token = form_value(&page.text().await.unwrap(), "token").expect("a handoff page");
    assert_eq!(token_claims(&token)["authorization_details"][0]["invoice_id"], "INV-9");
    // Used once.
    let again = approve(&approval, path).await.unwrap();
    assert_eq!(again.status(), 403, "an approval is used once");
    // Another session's approval is not this one's.
    let other_session = client();
    sign_in(&other_session, &s.server1, "alice").await;
    let approval = form_value(&pages[1], "approval").unwrap();
    let resp = other_session
        .post(&url)
        .header("sec-fetch-site", "same-origin")
        .form(&[("approval", approval.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403, "bound to the session");
    // Whatever the browser says, a start URL with a nonce came through the relying party's
    // start URL, where anyone can send a browser (a link in a mail is `none`): asked.
    for site in ["same-origin", "none"] {
        let nonce = "C".repeat(22);
        let page = c
            .get(format!("{url}&nonce={nonce}"))
            .header("sec-fetch-site", site)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(page.contains("name=\"approval\"") && !page.contains("name=\"token\""), "{site}");
    }
    // A click on the dashboard needs no question.
    let direct = c.get(&url).header("sec-fetch-site", "same-origin").send().await.unwrap();
    assert_eq!(direct.status(), 303, "straight on to the binding round trip");
    // Signed out, the way back from signing in asks too: the sign-in was a click, but not on
    // this handoff.
    let fresh = client();
    let to_login = fresh.get(&url).header("sec-fetch-site", "cross-site").send().await.unwrap();
    assert_eq!(to_login.status(), 303);
    let login = to_login.headers()["location"].to_str().unwrap().to_owned();
    assert!(login.starts_with("/login?next="), "{login}");
    let next = url::form_urlencoded::parse(login.split_once('?').unwrap().1.as_bytes())
        .find(|(k, _)| k == "next")
        .unwrap()
        .1
        .into_owned();
    let signed_in = try_sign_in(&fresh, &s.server1, "alice", PASSWORD, Some(&next)).await;
    assert_eq!(signed_in.status(), 303);
    let back = signed_in.headers()["location"].to_str().unwrap().to_owned();
    let page = fresh
        .get(format!("{}{back}", s.server1))
        .header("sec-fetch-site", "same-origin")
        .send()
        .await
        .unwrap();
    let page = page.text().await.unwrap();
    assert!(page.contains("Open Approve invoice in Partner Analytics?"), "{page}");
}

#[tokio::test]
async fn sign_in_is_throttled_per_account_without_telling_which_exist() {
    let clock = manual_clock();
    let s = spawn_clocked(&clock).await;
    let c = client();
    for name in ["alice", "mallory"] {
        for _ in 0..5 {
            let resp = try_sign_in(&c, &s.server1, name, "wrong password", None).await;
            assert_eq!(resp.status(), 401);
        }
        // Now even the right password waits, with the same answer for a real and a made-up name.
        let resp = try_sign_in(&c, &s.server1, name, PASSWORD, None).await;
        assert_eq!(resp.status(), 429, "{name}");
        assert!(resp.headers().contains_key("retry-after"));
        assert!(resp.text().await.unwrap().contains("Too many failed sign-ins. Wait 1 seconds"));
    }
    clock.advance(2);
    let resp = try_sign_in(&c, &s.server1, "alice", PASSWORD, None).await;
    assert_eq!(resp.status(), 303, "after the wait the right password works");
}

#[tokio::test]
async fn sign_in_is_throttled_per_client_address() {
    // A manual clock: the first block lasts one second, which a slow run could otherwise outlive.
    let clock = manual_clock();
    let s = spawn_clocked(&clock).await;
    let c = client();
    for i in 0..20 {
        let resp = try_sign_in(&c, &s.server1, &format!("spray{i}"), "guess", None).await;
        assert_eq!(resp.status(), 401);
    }
    let resp = try_sign_in(&c, &s.server1, "bob", PASSWORD, None).await;
    assert_eq!(resp.status(), 429, "one address spraying many names is slowed down");
}

/// With every argon2 slot taken, a sign-in is answered 503 "busy" at once instead of queueing
/// (each check holds 19 MiB), the refusal is counted, and sign-in works again afterwards.
#[tokio::test]
async fn sign_ins_beyond_the_password_slots_are_answered_busy() {
    let s = spawn_both(|c| c.password_slots = 1, |_| {}).await;
    // Each browser loads the form first, so the eight posts can go out together.
    let mut browsers = Vec::new();
    for _ in 0..8 {
        let c = client();
        let page =
            c.get(format!("{}/login", s.server1)).send().await.unwrap().text().await.unwrap();
        let csrf = form_value(&page, "csrf").expect("a csrf field");
        browsers.push((c, csrf));
    }
    let posts: Vec<_> = browsers
        .into_iter()
        .map(|(c, csrf)| {
            let url = format!("{}/login", s.server1);
            tokio::spawn(async move {
                let form = [("username", "alice"), ("password", PASSWORD), ("csrf", &csrf)];
                c.post(url).form(&form).send().await.unwrap()
            })
        })
        .collect();
    let (mut signed_in, mut busy) = (0, 0);
    for post in posts {
        let resp = post.await.unwrap();
        match resp.status().as_u16() {
            303 => signed_in += 1,
            503 => {
                busy += 1;
                let page = resp.text().await.unwrap();
                assert!(page.contains("Too many sign-ins are in progress"), "{page}");
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert!(signed_in >= 1 && busy >= 1, "{signed_in} signed in, {busy} busy");
    let metrics = text_of(&client(), &s.metrics1()).await;
    let line = format!("signin_total{{outcome=\"busy\"}} {busy}");
    assert!(metrics.lines().any(|l| l == line), "missing `{line}` in:\n{metrics}");
    sign_in(&client(), &s.server1, "alice").await;
}

#[tokio::test]
async fn every_response_carries_the_security_headers() {
    let s = spawn().await;
    let c = client();
    let paths = [
        format!("{}/", s.server1),
        format!("{}/login", s.server1),
        format!("{}/healthz", s.server1),
        format!("{}/nope", s.server1),
        format!("{}/.well-known/jwks.json", s.server1),
        format!("{}/", s.server2),
        format!("{}/handoff", s.server2),
        format!("{}/reports/1", s.server2),
        format!("{}/nope", s.server2),
        format!("{}/readyz", s.server2),
    ];
    for url in paths {
        let resp = c.get(&url).send().await.unwrap();
        let h = resp.headers();
        assert_eq!(h["x-content-type-options"], "nosniff", "{url}");
        assert_eq!(h["referrer-policy"], "no-referrer", "{url}");
        assert_eq!(h["x-frame-options"], "DENY", "{url}");
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(
            csp.contains("frame-ancestors 'none'") && !csp.contains("unsafe-inline"),
            "{url}: {csp}"
        );
        assert!(h.contains_key("cache-control"), "{url}");
        assert!(!h.contains_key("strict-transport-security"), "no HSTS over plain http: {url}");
    }
    // Oversized headers are refused before any handler runs.
    for base in [&s.server1, &s.server2] {
        let resp = c
            .get(format!("{base}/healthz"))
            .header("x-filler", "v".repeat(40 * 1024))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 431, "{base}");
    }
}

/// `/handoff/start` for something that is not one operation of the catalog: 400, with no nonce
/// set and nowhere to go.
#[tokio::test]
async fn starting_a_handoff_for_no_real_operation_is_refused() {
    let s = spawn().await;
    let c = client();
    for query in [
        "",
        "type=admin.everything",
        "type=report.view",
        "type=report.view&report_id=abc",
        "type=report.view&type=report.view&report_id=4",
        // An issuer this server does not trust, or two of them.
        "type=report.view&report_id=4&iss=https%3A%2F%2Fevil.example",
        "type=report.view&report_id=4&iss=a&iss=b",
    ] {
        let resp = c.get(format!("{}/handoff/start?{query}", s.server2)).send().await.unwrap();
        assert_eq!(resp.status(), 400, "{query}");
        assert!(resp.headers().get("location").is_none(), "{query}");
        assert!(resp.headers().get("set-cookie").is_none(), "{query}");
    }
}

/// SERVER1 refuses a nonce that cannot be one, or two of them, and mints nothing.
#[tokio::test]
async fn server1_refuses_a_malformed_or_repeated_nonce() {
    let s = spawn().await;
    let c = client();
    sign_in(&c, &s.server1, "alice").await;
    let good = "A".repeat(22);
    for nonce in [
        "nonce=x".to_owned(),
        format!("nonce={good}&nonce={good}"),
        "nonce=".to_owned() + &"%".repeat(3),
    ] {
        let url = format!("{}/handoff/partner/report.view?report_id=42&{nonce}", s.server1);
        let resp = c.get(&url).send().await.unwrap();
        assert_eq!(resp.status(), 400, "{nonce}");
        assert!(!resp.text().await.unwrap().contains("name=\"token\""), "{nonce}");
    }
    let url = format!("{}/handoff/partner/report.view?report_id=42&nonce={good}", s.server1);
    let page = text_of(&c, &url).await;
    assert!(page.contains("name=\"approval\""), "a well-formed nonce gets the question: {page}");
}

/// One grant, two forms, two anti-forgery tokens (security round two, finding 6): the token of
/// the "Switch user?" form for an invoice grant does not approve that invoice.
#[tokio::test]
async fn the_switch_forms_token_does_not_approve_an_invoice() {
    let s = spawn().await;
    let c = client();
    let alice = token_for(&s, "u_alice", "42").await;
    assert_eq!(submit(&c, &s.server2, &alice).await.status(), 303);
    let op = server2::operations::catalog()
        .get("invoice.approve")
        .unwrap()
        .build([("invoice_id", "INV-66")])
        .unwrap();
    let request = handoff::MintRequest {
        audience: &handoff::Audience::parse(&s.server2).unwrap(),
        subject: &handoff::Subject::parse("u_bob").unwrap(),
        operation: &op,
        sid: None,
        nonce: None,
        profile: None,
        lifetime: None,
    };
    let bob = minter(&s, 60).mint(&request, now()).unwrap().into_string();
    let page = switch_prompt(&c, &s.server2, submit(&c, &s.server2, &bob).await).await;
    let switch_csrf = form_value(&page, "csrf").expect("the switch form");
    let switched = c
        .post(format!("{}/handoff/switch", s.server2))
        .form(&[("choice", "switch"), ("csrf", &switch_csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(switched.status(), 303);
    let approve = format!("{}/invoices/INV-66/approve", s.server2);
    let reused = c.post(&approve).form(&[("csrf", &switch_csrf)]).send().await.unwrap();
    assert_eq!(reused.status(), 403, "the switch form's token is not the approval form's");
    let page = text_of(&c, &approve).await;
    assert!(page.contains("Approve invoice"), "{page}");
    let own = form_value(&page, "csrf").expect("the approval form");
    assert_ne!(own, switch_csrf);
    let approved = c.post(&approve).form(&[("csrf", &own)]).send().await.unwrap();
    assert!(approved.status().is_success() || approved.status() == 303, "{}", approved.status());
}

/// What an approval does not do: outlive its five minutes, approve another request from the
/// cookie it rides in, parse when mangled, or act without a session.
#[tokio::test]
async fn an_approval_expires_fits_one_request_and_needs_the_session() {
    let clock = manual_clock();
    let s = spawn_clocked(&clock).await;
    let c = client();
    sign_in(&c, &s.server1, "alice").await;
    let path = "/handoff/partner/invoice.approve?invoice_id=INV-9";
    let ask = |path: String| {
        c.get(format!("{}{path}", s.server1)).header("sec-fetch-site", "cross-site").send()
    };
    let page = ask(path.to_owned()).await.unwrap().text().await.unwrap();
    let approval = form_value(&page, "approval").unwrap();
    let post = |approval: String| {
        c.post(format!("{}{path}", s.server1))
            .header("sec-fetch-site", "same-origin")
            .form(&[("approval", approval)])
            .send()
    };
    // Mangled: refused as a stale form, whatever part is wrong.
    let (id, rest) = approval.split_once('.').unwrap();
    let (expires, tag) = rest.split_once('.').unwrap();
    for bad in [
        String::new(),
        id.to_owned(),
        format!("{id}.{expires}"),
        format!("{id}.soon.{tag}"),
        format!("{id}.{}.{tag}", expires.parse::<u64>().unwrap() + 60),
        format!("{}.{expires}.{tag}", "A".repeat(65)),
    ] {
        assert_eq!(post(bad.clone()).await.unwrap().status(), 403, "{bad:?}");
    }
    // Expired: five minutes on, the genuine one is refused too.
    clock.advance(301);
    assert_eq!(post(approval).await.unwrap().status(), 403, "expired");

    // The approval cookie of a click on INV-9 does not carry a return for INV-10.
    let clicked = c
        .get(format!("{}{path}", s.server1))
        .header("sec-fetch-site", "same-origin")
        .send()
        .await
        .unwrap();
    assert_eq!(clicked.status(), 303);
    let nonce = "D".repeat(22);
    let other = ask(format!("/handoff/partner/invoice.approve?invoice_id=INV-10&nonce={nonce}"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(other.contains("name=\"approval\"") && !other.contains("name=\"token\""), "{other}");
    // Its own request still goes through with it.
    let back = ask(format!("{path}&nonce={nonce}")).await.unwrap().text().await.unwrap();
    assert!(back.contains("name=\"token\""), "{back}");

    // Without a session the button only leads to signing in.
    let stranger = client();
    let resp = stranger
        .post(format!("{}{path}", s.server1))
        .form(&[("approval", "x.1.y")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    assert_eq!(resp.headers()["location"], "/login");
}
