//! Accounts on SERVER1: sign-up with e-mail verification, password reset, changes of address
//! and password, the account page's sessions, and the mail behind them — over HTTP against
//! the real servers, with a real SMTP server on loopback.

use std::time::Duration;

use handoff_tests::*;

const NEW_PASSWORD: &str = "amber lantern orchard 77";

/// Both servers, SERVER1 sending mail to `smtp` with sign-up open (new accounts get the
/// `reports` role), adjusted further by `adjust`.
async fn spawn_mail(smtp: &SmtpServer, adjust: impl FnOnce(&mut server1::Config)) -> Servers {
    let url = smtp.url();
    spawn_both(
        move |c| {
            with_mail(c, &url);
            adjust(c);
        },
        |_| {},
    )
    .await
}

/// GETs `path` and returns the page's anti-forgery token.
async fn csrf_of(c: &reqwest::Client, url: &str) -> String {
    let page = c.get(url).send().await.unwrap().text().await.unwrap();
    form_value(&page, "csrf").unwrap_or_else(|| panic!("a form with a csrf field at {url}: {page}"))
}

async fn sign_up(
    c: &reqwest::Client,
    s: &Servers,
    name: &str,
    email: &str,
    password: &str,
) -> reqwest::Response {
    let csrf = csrf_of(c, &format!("{}/signup", s.server1)).await;
    c.post(format!("{}/signup", s.server1))
        .form(&[
            ("csrf", csrf.as_str()),
            ("username", name),
            ("email", email),
            ("password", password),
        ])
        .send()
        .await
        .unwrap()
}

/// Opens a link from a mail (its page has a button) and presses the button.
async fn follow(c: &reqwest::Client, link: &str) -> reqwest::Response {
    let page = c.get(link).send().await.unwrap();
    assert_eq!(page.status(), 200, "{link}");
    let page = page.text().await.unwrap();
    let csrf = form_value(&page, "csrf").unwrap();
    let token = form_value(&page, "token").unwrap();
    let action = page.split("action=\"").nth(1).unwrap().split('"').next().unwrap().to_owned();
    let origin = link.split('/').take(3).collect::<Vec<_>>().join("/");
    c.post(format!("{origin}{action}"))
        .form(&[("csrf", csrf.as_str()), ("token", token.as_str())])
        .send()
        .await
        .unwrap()
}

async fn ask_reset(c: &reqwest::Client, s: &Servers, email: &str) -> reqwest::Response {
    let csrf = csrf_of(c, &format!("{}/forgot-password", s.server1)).await;
    c.post(format!("{}/forgot-password", s.server1))
        .form(&[("csrf", csrf.as_str()), ("email", email)])
        .send()
        .await
        .unwrap()
}

async fn set_new_password(c: &reqwest::Client, link: &str, password: &str) -> reqwest::Response {
    let page = c.get(link).send().await.unwrap();
    assert_eq!(page.status(), 200, "the reset form for {link}");
    let page = page.text().await.unwrap();
    let csrf = form_value(&page, "csrf").unwrap();
    let token = form_value(&page, "token").unwrap();
    let origin = link.split('/').take(3).collect::<Vec<_>>().join("/");
    c.post(format!("{origin}/reset-password"))
        .form(&[("csrf", csrf.as_str()), ("token", token.as_str()), ("password", password)])
        .send()
        .await
        .unwrap()
}

/// The value of SERVER1's `mail_jobs_total{outcome}`.
async fn mail_jobs(s: &Servers, outcome: &str) -> u64 {
    let metrics = text_of(&plain_client(), &s.metrics1()).await;
    let prefix = format!("mail_jobs_total{{outcome=\"{outcome}\"}} ");
    metrics.lines().find_map(|l| l.strip_prefix(&prefix)).map_or(0, |v| v.trim().parse().unwrap())
}

/// Waits until `mail_jobs_total{outcome}` reaches `n`.
async fn wait_jobs(s: &Servers, outcome: &str, n: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while mail_jobs(s, outcome).await < n {
        assert!(std::time::Instant::now() < deadline, "{n} jobs {outcome} never came");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn handoff_status(c: &reqwest::Client, s: &Servers) -> reqwest::StatusCode {
    c.get(format!("{}/handoff/partner/report.view?report_id=7", s.server1))
        .send()
        .await
        .unwrap()
        .status()
}

/// The account page as `c` sees it.
async fn account_page(c: &reqwest::Client, s: &Servers) -> String {
    let resp = c.get(format!("{}/account", s.server1)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.text().await.unwrap()
}

async fn post_account(
    c: &reqwest::Client,
    s: &Servers,
    path: &str,
    fields: &[(&str, &str)],
) -> reqwest::Response {
    let csrf = form_value(&account_page(c, s).await, "csrf").unwrap();
    let mut form = vec![("csrf", csrf.as_str())];
    form.extend_from_slice(fields);
    c.post(format!("{}{path}", s.server1)).form(&form).send().await.unwrap()
}

/// Everything a person does from sign-up to a handoff: the account signs in at once, hands off
/// only once its address is verified, and the link works once.
#[tokio::test]
async fn sign_up_verify_and_hand_off() {
    let smtp = SmtpServer::start().await;
    let s = spawn_mail(&smtp, |_| {}).await;
    let c = client();
    let resp = sign_up(&c, &s, "Carol", " Carol@Example.COM ", NEW_PASSWORD).await;
    assert_eq!(resp.status(), 200);
    let page = resp.text().await.unwrap();
    assert!(page.contains("Check your mail") && page.contains("carol@example.com"), "{page}");

    assert_eq!(try_sign_in(&c, &s.server1, "carol", NEW_PASSWORD, None).await.status(), 303);
    assert_eq!(handoff_status(&c, &s).await, 403, "no handoff before the address is verified");
    let dashboard = text_of(&c, &format!("{}/", s.server1)).await;
    assert!(dashboard.contains("Verify your e-mail address"), "{dashboard}");

    let mail = smtp.wait_for("carol@example.com", 1, 10).await.remove(0);
    assert!(mail.subject.contains("Verify your e-mail address"), "{mail:?}");
    let link = mail.link();
    assert!(link.starts_with(&format!("{}/verify-email?token=", s.server1)), "{link}");
    // Opening the link (a mail scanner does) spends nothing; the button does.
    assert_eq!(c.get(&link).send().await.unwrap().status(), 200);
    let verified = follow(&client(), &link).await;
    assert_eq!(verified.status(), 200);
    assert!(verified.text().await.unwrap().contains("Address verified"));
    assert_eq!(handoff_status(&c, &s).await, 200, "verified: the handoff works");
    assert_eq!(follow(&c, &link).await.status(), 400, "a used link does not work again");
    // Signing in by address works too.
    let other = client();
    assert_eq!(
        try_sign_in(&other, &s.server1, "carol@example.com", NEW_PASSWORD, None).await.status(),
        303
    );
    let logs = s.all_logs();
    assert!(
        !logs.contains(&mail.token()) && !logs.contains(NEW_PASSWORD),
        "no token or password in the logs"
    );
}

/// "Send it again" issues a new link and kills the old one.
#[tokio::test]
async fn only_the_latest_link_works() {
    let smtp = SmtpServer::start().await;
    let s = spawn_mail(&smtp, |_| {}).await;
    let c = client();
    assert_eq!(sign_up(&c, &s, "dora", "dora@example.com", NEW_PASSWORD).await.status(), 200);
    let first = smtp.wait_for("dora@example.com", 1, 10).await.remove(0).link();
    assert_eq!(try_sign_in(&c, &s.server1, "dora", NEW_PASSWORD, None).await.status(), 303);
    let resp = post_account(&c, &s, "/account/verify", &[]).await;
    assert_eq!(resp.status(), 303);
    let second = smtp.wait_for("dora@example.com", 2, 10).await.remove(1).link();
    assert_ne!(first, second);
    let dead = follow(&client(), &first).await;
    assert_eq!(dead.status(), 400, "the older link was replaced");
    assert!(dead.text().await.unwrap().contains("does not work"));
    assert_eq!(follow(&client(), &second).await.status(), 200, "the newer one works");
    // A well-formed token nobody issued opens the page (it cannot tell without using it) and
    // fails on the button; a malformed one fails at once.
    let made_up = format!("{}/verify-email?token={}", s.server1, "A".repeat(43));
    assert_eq!(status_of(&client(), &made_up).await, 200);
    assert_eq!(follow(&client(), &made_up).await.status(), 400);
    for bad in ["short", "", &"A".repeat(44)] {
        let url = format!("{}/verify-email?token={bad}", s.server1);
        assert_eq!(status_of(&client(), &url).await, 400, "{bad:?}");
    }
    // A reset link is not a verification link.
    assert_eq!(ask_reset(&client(), &s, "dora@example.com").await.status(), 200);
    let reset = smtp.wait_for("dora@example.com", 3, 10).await.remove(2).token();
    let as_verification = format!("{}/verify-email?token={reset}", s.server1);
    assert_eq!(follow(&client(), &as_verification).await.status(), 400);
}

/// A link past its lifetime is refused (the clock is moved, not waited for).
#[tokio::test]
async fn an_expired_link_is_refused() {
    let smtp = SmtpServer::start().await;
    let clock = manual_clock();
    let (url, clock1) = (smtp.url(), clock.clone());
    let s = spawn_both(
        move |c| {
            with_mail(c, &url);
            c.clock = clock1;
        },
        |_| {},
    )
    .await;
    assert_eq!(ask_reset(&client(), &s, "alice@example.com").await.status(), 200);
    let link = smtp.wait_for("alice@example.com", 1, 10).await.remove(0).link();
    clock.advance(1800);
    assert_eq!(client().get(&link).send().await.unwrap().status(), 400, "30 minutes later");
    // A fresh one works at this (moved) time.
    assert_eq!(ask_reset(&client(), &s, "alice@example.com").await.status(), 200);
    let link = smtp.wait_for("alice@example.com", 2, 10).await.remove(1).link();
    clock.advance(1799);
    assert_eq!(set_new_password(&client(), &link, NEW_PASSWORD).await.status(), 200);
}

/// A reset ends every session of the account (another browser's too), the new password works
/// and the old does not, the link works once, and a notice follows. Known and unknown
/// addresses get the same answer, and only the known one gets mail.
#[tokio::test]
async fn password_reset() {
    let smtp = SmtpServer::start().await;
    let s = spawn_mail(&smtp, |_| {}).await;
    let elsewhere = client();
    sign_in(&elsewhere, &s.server1, "alice").await;
    assert_eq!(handoff_status(&elsewhere, &s).await, 200);

    let known = ask_reset(&client(), &s, "Alice@example.com").await;
    let unknown = ask_reset(&client(), &s, "nobody@example.com").await;
    assert_eq!(known.status(), 200);
    assert_eq!(unknown.status(), 200);
    assert_eq!(known.text().await.unwrap(), unknown.text().await.unwrap(), "the same answer");
    let mail = smtp.wait_for("alice@example.com", 1, 10).await.remove(0);
    assert!(mail.subject.contains("Reset your"), "{mail:?}");
    wait_jobs(&s, "skipped", 1).await;
    assert!(smtp.messages_to("nobody@example.com").is_empty(), "no account, no mail");

    let link = mail.link();
    assert!(link.starts_with(&format!("{}/reset-password?token=", s.server1)));
    let weak = set_new_password(&client(), &link, "password1234").await;
    assert_eq!(weak.status(), 400);
    assert!(weak.text().await.unwrap().contains("most common"), "the rule is named");
    let resp = set_new_password(&client(), &link, NEW_PASSWORD).await;
    assert_eq!(resp.status(), 200, "a refused password did not use the link up");

    let back = elsewhere.get(format!("{}/", s.server1)).send().await.unwrap();
    assert_eq!(back.status(), 303, "the other browser's session ended");
    assert_eq!(handoff_status(&elsewhere, &s).await, 303);
    assert_eq!(try_sign_in(&client(), &s.server1, "alice", PASSWORD, None).await.status(), 401);
    assert_eq!(try_sign_in(&client(), &s.server1, "alice", NEW_PASSWORD, None).await.status(), 303);
    assert_eq!(client().get(&link).send().await.unwrap().status(), 400, "used");
    let notice = smtp.wait_for("alice@example.com", 2, 10).await.remove(1);
    assert!(notice.subject.contains("password changed"), "{notice:?}");
    assert!(notice.links().is_empty());
}

/// Links come from SERVER1_PUBLIC_URL, whatever Host the request named.
#[tokio::test]
async fn links_ignore_the_host_header() {
    let smtp = SmtpServer::start().await;
    let s = spawn_mail(&smtp, |_| {}).await;
    let c = client();
    let csrf = csrf_of(&c, &format!("{}/forgot-password", s.server1)).await;
    let resp = c
        .post(format!("{}/forgot-password", s.server1))
        .header("host", "evil.example")
        .header("x-forwarded-host", "evil.example")
        .form(&[("csrf", csrf.as_str()), ("email", "bob@example.com")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mail = smtp.wait_for("bob@example.com", 1, 10).await.remove(0);
    assert!(mail.link().starts_with(&s.server1), "{mail:?}");
    assert!(!mail.text.contains("evil.example"));
}

/// A mail server that is down, then one that refuses (451), delays mail but loses none.
#[tokio::test]
async fn mail_survives_a_mail_server_that_is_down_or_refuses() {
    let mut smtp = SmtpServer::not_started();
    let s = spawn_mail(&smtp, |_| {}).await;
    assert_eq!(
        ask_reset(&client(), &s, "alice@example.com").await.status(),
        200,
        "the request does not wait for mail"
    );
    wait_jobs(&s, "retried", 1).await;
    smtp.start_again().await;
    let mail = smtp.wait_for("alice@example.com", 1, 30).await.remove(0);
    assert!(mail.subject.contains("Reset your"));

    smtp.refuse(true);
    assert_eq!(ask_reset(&client(), &s, "bob@example.com").await.status(), 200);
    wait_jobs(&s, "retried", 2).await;
    assert!(smtp.messages_to("bob@example.com").is_empty());
    smtp.refuse(false);
    let mail = smtp.wait_for("bob@example.com", 1, 30).await.remove(0);
    assert_eq!(
        set_new_password(&client(), &mail.link(), NEW_PASSWORD).await.status(),
        200,
        "the delayed link works"
    );
    assert!(s.server1_logs().contains("will retry"));
}

/// The forms cannot flood a mailbox: past the hourly limit for an address, requests get the
/// same answer and no mail; past the limit for a client, they are refused.
#[tokio::test]
async fn mail_is_limited_per_address_and_per_client() {
    let smtp = SmtpServer::start().await;
    let s = spawn_mail(&smtp, |c| {
        c.accounts.mail_limits = server1::throttle::MailLimits { per_address: 2, per_client: 4 };
    })
    .await;
    for _ in 0..3 {
        assert_eq!(ask_reset(&client(), &s, "alice@example.com").await.status(), 200);
    }
    smtp.wait_for("alice@example.com", 2, 10).await;
    assert_eq!(ask_reset(&client(), &s, "bob@example.com").await.status(), 200);
    smtp.wait_for("bob@example.com", 1, 10).await;
    assert_eq!(smtp.messages_to("alice@example.com").len(), 2, "the third was not sent");
    let limited = ask_reset(&client(), &s, "bob@example.com").await;
    assert_eq!(limited.status(), 429, "the fifth request from this client");
    assert!(limited.text().await.unwrap().contains("Too many requests"));
}

/// The sign-up form's rules, and an address that has an account already: the same answer, a
/// notice to the address, no second account.
#[tokio::test]
async fn sign_up_rules() {
    let smtp = SmtpServer::start().await;
    let s = spawn_mail(&smtp, |_| {}).await;
    let c = client();
    for (name, email, password, expected) in [
        ("erin", "erin@example.com", "short", "at least 12 characters"),
        ("erin", "erin@example.com", "qwertyuiop123", "most common"),
        ("erin", "erin@example.com", "erin@example.com", "user name or e-mail"),
        ("alice", "erin@example.com", NEW_PASSWORD, "user name is taken"),
        ("Erin Example", "erin@example.com", NEW_PASSWORD, "a-z 0-9"),
        ("erin", "not-an-address", NEW_PASSWORD, "not an e-mail address"),
    ] {
        let resp = sign_up(&c, &s, name, email, password).await;
        assert_eq!(resp.status(), 400, "{name} {email} {password}");
        let page = resp.text().await.unwrap();
        assert!(page.contains(expected), "{expected:?} in {page}");
        assert!(!page.contains(password) || password == email, "the password is never shown");
    }
    let taken = sign_up(&c, &s, "alice2", "alice@example.com", NEW_PASSWORD).await;
    let fresh = sign_up(&c, &s, "erin", "erin@example.com", NEW_PASSWORD).await;
    assert_eq!((taken.status().as_u16(), fresh.status().as_u16()), (200, 200));
    let (taken, fresh) = (taken.text().await.unwrap(), fresh.text().await.unwrap());
    assert_eq!(taken.replace("alice@example.com", "X"), fresh.replace("erin@example.com", "X"));
    let notice = smtp.wait_for("alice@example.com", 1, 10).await.remove(0);
    assert!(notice.subject.contains("tried to sign up"), "{notice:?}");
    assert!(notice.links().is_empty());
    assert_eq!(
        try_sign_in(&client(), &s.server1, "alice2", NEW_PASSWORD, None).await.status(),
        401
    );
    // No anti-forgery token, no account.
    let forged = client()
        .post(format!("{}/signup", s.server1))
        .form(&[("username", "mallory"), ("email", "m@example.com"), ("password", NEW_PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
}

/// With sign-up closed (the default) there is no sign-up page and no link to one; the
/// sign-in page always offers "Forgot your password?".
#[tokio::test]
async fn sign_up_closed_by_default() {
    let s = spawn().await;
    let login = text_of(&client(), &format!("{}/login", s.server1)).await;
    assert!(login.contains("Forgot your password?") && !login.contains("Create an account"));
    assert_eq!(status_of(&client(), &format!("{}/signup", s.server1)).await, 404);
    let smtp = SmtpServer::start().await;
    let open = spawn_mail(&smtp, |_| {}).await;
    let login = text_of(&client(), &format!("{}/login", open.server1)).await;
    assert!(login.contains("href=\"/signup\"") && login.contains("Create an account"));
}

/// The account page lists every session; one can be signed out, or all of them; another user
/// cannot end them.
#[tokio::test]
async fn account_page_controls_every_session() {
    let s = spawn().await;
    let (laptop, phone, bob) = (client(), client(), client());
    sign_in(&laptop, &s.server1, "alice").await;
    let resp = phone
        .get(format!("{}/login", s.server1))
        .header("user-agent", "PhoneBrowser/1.0")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let csrf = csrf_of(&phone, &format!("{}/login", s.server1)).await;
    let resp = phone
        .post(format!("{}/login", s.server1))
        .header("user-agent", "PhoneBrowser/1.0 <script>")
        .form(&[("username", "alice"), ("password", PASSWORD), ("csrf", &csrf), ("next", "/")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    sign_in(&bob, &s.server1, "bob").await;

    let page = account_page(&laptop, &s).await;
    assert!(page.contains("alice@example.com") && page.contains("This browser"));
    assert!(page.contains("PhoneBrowser/1.0 &lt;script&gt;"), "the user agent, escaped");
    assert_eq!(page.matches("name=\"session\"").count(), 1, "the other session can be ended");
    let phone_id = form_value(&page, "session").unwrap();

    let resp = post_account(&bob, &s, "/account/sessions/end", &[("session", &phone_id)]).await;
    assert_eq!(resp.status(), 404, "bob cannot end alice's session");
    assert_eq!(status_of(&phone, &format!("{}/account", s.server1)).await, 200);
    let resp = post_account(&laptop, &s, "/account/sessions/end", &[("session", &phone_id)]).await;
    assert_eq!(resp.status(), 303);
    assert_eq!(status_of(&phone, &format!("{}/account", s.server1)).await, 303, "signed out");
    assert!(text_of(&laptop, &format!("{}/account?notice=session-ended", s.server1))
        .await
        .contains("That session was signed out"));

    sign_in(&phone, &s.server1, "alice").await;
    let resp = post_account(&laptop, &s, "/account/sessions/end-all", &[]).await;
    assert_eq!(resp.status(), 303);
    for browser in [&laptop, &phone] {
        assert_eq!(status_of(browser, &format!("{}/account", s.server1)).await, 303, "everywhere");
    }
    assert_eq!(status_of(&bob, &format!("{}/account", s.server1)).await, 200, "bob stays");
    // Without the page's token, nothing happens.
    sign_in(&laptop, &s.server1, "alice").await;
    let forged = laptop
        .post(format!("{}/account/sessions/end-all", s.server1))
        .form(&[("csrf", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    assert_eq!(status_of(&laptop, &format!("{}/account", s.server1)).await, 200);
}

/// Changing the password needs the current one and ends the other sessions; changing the
/// address takes effect only from the new address's link, and the old address is told.
#[tokio::test]
async fn change_password_and_address() {
    let smtp = SmtpServer::start().await;
    let s = spawn_mail(&smtp, |_| {}).await;
    let (here, there) = (client(), client());
    sign_in(&here, &s.server1, "alice").await;
    sign_in(&there, &s.server1, "alice").await;
    let wrong = post_account(
        &here,
        &s,
        "/account/password",
        &[("current", "not my password"), ("new", NEW_PASSWORD)],
    )
    .await;
    assert_eq!(wrong.status(), 400);
    assert!(wrong.text().await.unwrap().contains("current password is not right"));
    let ok = post_account(
        &here,
        &s,
        "/account/password",
        &[("current", PASSWORD), ("new", NEW_PASSWORD)],
    )
    .await;
    assert_eq!(ok.status(), 303);
    assert_eq!(
        status_of(&here, &format!("{}/account", s.server1)).await,
        200,
        "this session stays"
    );
    assert_eq!(status_of(&there, &format!("{}/account", s.server1)).await, 303, "the other ends");
    assert!(smtp.wait_for("alice@example.com", 1, 10).await[0]
        .subject
        .contains("password changed"));

    let resp = post_account(
        &here,
        &s,
        "/account/email",
        &[("email", "alice.new@example.com"), ("password", PASSWORD)],
    )
    .await;
    assert_eq!(resp.status(), 400, "the old password no longer confirms anything");
    let resp = post_account(
        &here,
        &s,
        "/account/email",
        &[("email", "alice.new@example.com"), ("password", NEW_PASSWORD)],
    )
    .await;
    assert_eq!(resp.status(), 303);
    let link = smtp.wait_for("alice.new@example.com", 1, 10).await.remove(0).link();
    assert!(
        account_page(&here, &s).await.contains("alice@example.com"),
        "not changed before the link"
    );
    let done = follow(&client(), &link).await;
    assert_eq!(done.status(), 200);
    assert!(account_page(&here, &s).await.contains("alice.new@example.com"));
    let notice = smtp.wait_for("alice@example.com", 2, 10).await.remove(1);
    assert!(notice.subject.contains("address of your"), "{notice:?}");
    // An address another account has cannot be taken, even with a link.
    let resp = post_account(
        &here,
        &s,
        "/account/email",
        &[("email", "bob@example.com"), ("password", NEW_PASSWORD)],
    )
    .await;
    assert_eq!(resp.status(), 303, "asking reveals nothing");
    let link = smtp.wait_for("bob@example.com", 1, 10).await.remove(0).link();
    assert_eq!(follow(&client(), &link).await.status(), 409);
}

/// A disabled user cannot sign in (and is told so only after the right password), and their
/// sessions end at once.
#[tokio::test]
async fn disabled_users_are_out() {
    let s = spawn().await;
    let c = client();
    sign_in(&c, &s.server1, "bob").await;
    let accounts = accounts_of(&s).await;
    let bob = server1::names::UserName::parse("bob").unwrap();
    assert!(accounts.set_disabled(&bob, true).await.unwrap());
    assert_eq!(status_of(&c, &format!("{}/", s.server1)).await, 303, "the session ended");
    assert_eq!(
        try_sign_in(&client(), &s.server1, "bob", "wrong password here", None).await.status(),
        401
    );
    let resp = try_sign_in(&client(), &s.server1, "bob", PASSWORD, None).await;
    assert_eq!(resp.status(), 403);
    assert!(resp.text().await.unwrap().contains("disabled"));
    assert!(accounts.set_disabled(&bob, false).await.unwrap());
    sign_in(&client(), &s.server1, "bob").await;
}

/// The accounts service over the servers' database (as the operator's command uses it).
async fn accounts_of(s: &Servers) -> server1::accounts::Accounts {
    let url = std::fs::read_to_string(s.dir.path().join("database_url")).unwrap();
    let url = server1::db::DatabaseUrl::parse(&url).unwrap();
    let pool = server1::db::PoolSettings { size: 1, timeout: Duration::from_secs(10) };
    let db = server1::db::Db::open(&url, server1::db::OpenMode::Existing, pool).await.unwrap();
    server1::accounts::Accounts::new(
        std::sync::Arc::new(db),
        server1::passwords::Passwords::new(1).unwrap(),
        3600,
        std::sync::Arc::new(handoff::SystemClock),
    )
}

/// Mail over STARTTLS and over TLS from the first byte reaches a server whose certificate
/// chains to the CA in SERVER1_SMTP_CA_FILE; without that CA, nothing is sent in clear or to an
/// unverified server: the mail waits.
#[tokio::test]
async fn mail_goes_over_verified_tls() {
    for mode in [SmtpTls::StartTls, SmtpTls::Implicit] {
        let smtp = SmtpServer::start_tls(mode).await;
        let (url, ca) = (smtp.tls_url(), smtp.ca_file());
        let s = spawn_both(
            move |c| {
                with_mail(c, &url);
                c.mail.smtp_ca_file = Some(ca);
            },
            |_| {},
        )
        .await;
        assert_eq!(ask_reset(&client(), &s, "alice@example.com").await.status(), 200);
        let mail = smtp.wait_for("alice@example.com", 1, 15).await.remove(0);
        assert!(mail.subject.contains("Reset your"), "{mode:?}");

        let url = smtp.tls_url();
        let untrusting = spawn_both(move |c| with_mail(c, &url), |_| {}).await;
        assert_eq!(ask_reset(&client(), &untrusting, "bob@example.com").await.status(), 200);
        wait_jobs(&untrusting, "retried", 1).await;
        assert!(
            smtp.messages_to("bob@example.com").is_empty(),
            "{mode:?}: not to an unverified server"
        );
    }
}

/// Mail that still cannot be sent a day after it was queued is given up (and counted), so the
/// outbox does not grow for ever; until then it is retried with growing waits.
#[tokio::test]
async fn mail_that_fails_for_a_day_is_dropped() {
    let smtp = SmtpServer::not_started();
    let clock = manual_clock();
    let (url, clock1) = (smtp.url(), clock.clone());
    let s = spawn_both(
        move |c| {
            with_mail(c, &url);
            c.clock = clock1;
        },
        |_| {},
    )
    .await;
    assert_eq!(ask_reset(&client(), &s, "alice@example.com").await.status(), 200);
    wait_jobs(&s, "retried", 1).await;
    // Not due again until the first wait (5 s) has passed on SERVER1's clock.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(mail_jobs(&s, "retried").await, 1, "no retry before the wait is over");
    clock.advance(5);
    wait_jobs(&s, "retried", 2).await;
    clock.advance(86_400);
    wait_jobs(&s, "dropped", 1).await;
    assert!(s.server1_logs().contains("mail dropped after a day of retries"));
    let metrics = text_of(&plain_client(), &s.metrics1()).await;
    assert!(metrics.contains("mail_outbox_pending 0"), "{metrics}");
}

/// Confirming a change with the current password is throttled like signing in: a stolen
/// session cannot guess the password on the account page.
#[tokio::test]
async fn the_current_password_cannot_be_guessed_on_the_account_page() {
    // SERVER1's clock stands still, so a block does not run out while the test goes on.
    let clock = manual_clock();
    let s = spawn_clocked(&clock).await;
    let c = client();
    sign_in(&c, &s.server1, "alice").await;
    for i in 0..5 {
        let resp = post_account(
            &c,
            &s,
            "/account/password",
            &[("current", "guess wrong 1234"), ("new", NEW_PASSWORD)],
        )
        .await;
        assert_eq!(resp.status(), 400, "guess {i}");
    }
    let resp = post_account(
        &c,
        &s,
        "/account/email",
        &[("email", "x@example.com"), ("password", "guess wrong 1234")],
    )
    .await;
    assert_eq!(resp.status(), 429, "throttled, on either form");
    let resp =
        post_account(&c, &s, "/account/password", &[("current", PASSWORD), ("new", NEW_PASSWORD)])
            .await;
    assert_eq!(resp.status(), 429, "even the right password waits");
    clock.advance(2);
    let resp =
        post_account(&c, &s, "/account/password", &[("current", PASSWORD), ("new", NEW_PASSWORD)])
            .await;
    assert_eq!(resp.status(), 303, "after the wait, the right password works");
}

/// A change-of-address link does not survive a password reset: whoever asked for it no
/// longer speaks for the account.
#[tokio::test]
async fn a_reset_kills_a_pending_change_of_address() {
    let smtp = SmtpServer::start().await;
    let s = spawn_mail(&smtp, |_| {}).await;
    let c = client();
    sign_in(&c, &s.server1, "alice").await;
    let resp = post_account(
        &c,
        &s,
        "/account/email",
        &[("email", "thief@example.com"), ("password", PASSWORD)],
    )
    .await;
    assert_eq!(resp.status(), 303);
    let change = smtp.wait_for("thief@example.com", 1, 10).await.remove(0).link();
    assert_eq!(ask_reset(&client(), &s, "alice@example.com").await.status(), 200);
    let reset = smtp.wait_for("alice@example.com", 1, 10).await.remove(0).link();
    assert_eq!(set_new_password(&client(), &reset, NEW_PASSWORD).await.status(), 200);
    assert_eq!(client().get(&change).send().await.unwrap().status(), 200, "the page opens");
    assert_eq!(follow(&client(), &change).await.status(), 400, "but the link is dead");
}
