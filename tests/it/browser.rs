//! The handoff in a real browser: Debian's Chromium, headless, driven through chromedriver
//! (WebDriver) with fantoccini, against both servers on two different sites (127.0.0.1 and
//! localhost). Cookies, SameSite, redirects after a cross-site POST, history and Referer are the
//! browser's decisions, so they are checked here, not with an HTTP client.
//!
//! Needs `/usr/bin/chromium` and `/usr/bin/chromedriver` (or `CHROMIUM` / `CHROMEDRIVER`);
//! `.ci/run` installs them. The tests do not skip themselves when they are missing: they fail
//! and say what to install. Screenshots of every page go to `target/screenshots/`.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use handoff_tests::*;
use serde_json::json;

struct Chromedriver(Child);

impl Drop for Chromedriver {
    fn drop(&mut self) {
        // chromedriver runs in its own process group with the browsers it starts: end them all,
        // even when a failed test never closed its session.
        let group = format!("-{}", self.0.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A browser session and the chromedriver behind it.
struct Browser {
    client: Client,
    _driver: Chromedriver,
    _profile: tempfile::TempDir,
}

fn tool(var: &str, default: &str) -> PathBuf {
    let path = std::env::var_os(var).map_or_else(|| PathBuf::from(default), PathBuf::from);
    assert!(
        path.exists(),
        "{} is missing: install Debian's chromium and chromium-driver (`.ci/run` does), or set {var}",
        path.display()
    );
    path
}

impl Browser {
    async fn start(javascript: bool) -> Browser {
        let chromium = tool("CHROMIUM", "/usr/bin/chromium");
        let port = listener().1;
        let driver = Command::new(tool("CHROMEDRIVER", "/usr/bin/chromedriver"))
            .arg(format!("--port={port}"))
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let driver = Chromedriver(driver);
        let profile = tempfile::tempdir().unwrap();
        let mut prefs = json!({});
        if !javascript {
            prefs["profile.managed_default_content_settings.javascript"] = json!(2);
        }
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--disable-dev-shm-usage", "--window-size=1100,860",
                    format!("--host-resolver-rules=MAP {ATTACKER_HOST} 127.0.0.1"),
                    format!("--user-data-dir={}", profile.path().display()),
                ],
                "prefs": prefs,
            }
        });
        let caps = match caps {
            serde_json::Value::Object(map) => map,
            _ => unreachable!("a JSON object literal"),
        };
        let webdriver = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        let client = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector).capabilities(caps.clone()).connect(&webdriver).await
            {
                Ok(client) => break client,
                Err(e) if Instant::now() > deadline => {
                    panic!("cannot start a browser session: {e}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        };
        Browser { client, _driver: driver, _profile: profile }
    }

    async fn goto(&self, url: &str) {
        self.client.goto(url).await.unwrap();
    }

    async fn url(&self) -> String {
        self.client.current_url().await.unwrap().to_string()
    }

    /// Waits until the current URL satisfies `ok` (navigations after clicks and form posts).
    async fn wait_url(&self, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let url = self.url().await;
            if ok(&url) {
                return url;
            }
            assert!(Instant::now() < deadline, "waited for {what}, still at {url}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The page's text, once the page has one (a navigation may still be replacing it).
    async fn text(&self) -> String {
        self.wait_text("any page", |_| true).await
    }

    /// Waits until the page's text satisfies `ok`, riding out pages still loading.
    async fn wait_text(&self, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = match self.client.find(Locator::Css("body")).await {
                Ok(body) => body.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            if !text.is_empty() && ok(&text) {
                return text;
            }
            assert!(Instant::now() < deadline, "waited for {what}; the page says: {text}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn title(&self) -> String {
        self.client.title().await.unwrap()
    }

    /// Types `text` into the field with id `id`.
    async fn type_into(&self, id: &str, text: &str) {
        self.client.find(Locator::Id(id)).await.unwrap().send_keys(text).await.unwrap();
    }

    async fn click_link(&self, text: &str) {
        self.client.find(Locator::LinkText(text)).await.unwrap().click().await.unwrap();
    }

    async fn click(&self, css: &str) {
        self.client.find(Locator::Css(css)).await.unwrap().click().await.unwrap();
    }

    async fn js(&self, script: &str) -> serde_json::Value {
        self.client.execute(script, vec![]).await.unwrap()
    }

    async fn sign_in(&self, s: &Servers, user: &str) {
        self.sign_in_with(s, user, PASSWORD).await;
    }

    async fn sign_in_with(&self, s: &Servers, user: &str, password: &str) {
        self.goto(&format!("{}/login", s.server1)).await;
        self.type_into("username", user).await;
        self.type_into("password", password).await;
        self.click("button[type=submit]").await;
        let dashboard = format!("{}/", s.server1);
        self.wait_url("the dashboard", |u| u == dashboard).await;
    }

    /// Clicks the dashboard's report link and waits to land on report 42; returns that URL.
    async fn open_report_42(&self) -> String {
        self.click_link("View report 42").await;
        self.wait_url("report 42", |u| u.ends_with("/reports/42")).await
    }

    /// Saves a screenshot as `target/screenshots/{name}.png`.
    async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.unwrap();
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }

    async fn close(self) {
        let _ = self.client.close().await;
    }
}

fn screenshot_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/debug/deps/it-… → target/screenshots
    exe.ancestors().nth(3).unwrap().join("screenshots")
}

async fn servers_with_help() -> (Servers, Recorder) {
    let help = Recorder::start().await;
    let help_url = url::Url::parse(&format!("{}/help", help.url)).unwrap();
    let s = spawn_default_with(move |c| c.help_url = Some(help_url)).await;
    (s, help)
}

#[tokio::test]
async fn walkthrough_sign_in_open_and_act() {
    let (s, _help) = servers_with_help().await;
    let b = Browser::start(true).await;
    b.goto(&format!("{}/", s.server1)).await;
    b.wait_url("the sign-in page", |u| u.ends_with("/login")).await;
    b.screenshot("01-sign-in").await;
    b.sign_in(&s, "alice").await;
    let dashboard = b.text().await;
    assert!(dashboard.contains("Welcome, alice") && dashboard.contains("Partner Analytics"));
    b.screenshot("02-dashboard").await;

    let landed = b.open_report_42().await;
    assert!(landed.starts_with(&s.server2), "{landed}");
    let report = b.text().await;
    assert!(
        report.contains("Report 42")
            && report.contains("Handed over by")
            && report.contains(&s.server1)
    );
    b.screenshot("04-report").await;

    // Act on something: approve an invoice behind SERVER2's confirm form.
    b.goto(&format!("{}/", s.server1)).await;
    b.click_link("Approve invoice INV-2026-0042").await;
    b.wait_url("the invoice page", |u| u.ends_with("/invoices/INV-2026-0042/approve")).await;
    b.wait_text("This cannot be undone", |t| t.contains("This cannot be undone")).await;
    b.screenshot("05-invoice-confirm").await;
    b.click("form button[type=submit]").await;
    b.wait_url("the invoice page again", |u| u.ends_with("/approve")).await;
    b.wait_text("the approval", |t| t.contains("Approved by")).await;
    b.screenshot("06-invoice-approved").await;
    b.close().await;
}

#[tokio::test]
async fn cookies_are_http_only_secure_lax_and_survive_the_cross_site_post() {
    let s = spawn_default().await;
    let b = Browser::start(true).await;
    b.sign_in(&s, "alice").await;
    // SERVER1's session: invisible to scripts, Secure, Lax, host-only.
    assert_eq!(b.js("return document.cookie").await, json!(""));
    let cookies = b.client.get_all_cookies().await.unwrap();
    let session =
        cookies.iter().find(|c| c.name() == "__Host-handoff_session").expect("session cookie");
    assert_eq!(session.http_only(), Some(true));
    assert_eq!(session.secure(), Some(true));
    assert_eq!(session.same_site(), Some(cookie::SameSite::Lax));
    assert_eq!(session.path(), Some("/"));

    b.open_report_42().await;
    // The grant was set on the 303 answering a cross-site POST and sent on the navigation that
    // followed: the page rendered, so it arrived (SameSite=Strict would have dropped it).
    b.wait_text("Report 42", |t| t.contains("Report 42")).await;
    assert_eq!(b.js("return document.cookie").await, json!(""));
    let cookies = b.client.get_all_cookies().await.unwrap();
    let grant = cookies.iter().find(|c| c.name() == "__Host-handoff_grant").expect("grant cookie");
    assert_eq!(grant.http_only(), Some(true));
    assert_eq!(grant.secure(), Some(true));
    assert_eq!(grant.same_site(), Some(cookie::SameSite::Lax));
    assert!(
        cookies.iter().all(|c| !c.name().contains("session")),
        "no SERVER1 cookie on SERVER2's site"
    );
    b.close().await;
}

#[tokio::test]
async fn the_token_is_in_no_url_history_storage_or_referer() {
    let (s, help) = servers_with_help().await;
    let b = Browser::start(true).await;
    b.sign_in(&s, "alice").await;
    let start_len = b.js("return history.length").await;

    // Form-post delivery.
    let landed = b.open_report_42().await;
    assert!(!landed.contains("token"), "{landed}");
    for storage in ["localStorage", "sessionStorage"] {
        assert_eq!(b.js(&format!("return window.{storage}.length")).await, json!(0), "{storage}");
    }
    // SERVER1 never puts a bound token in a URL; a relying party's GET delivery still answers
    // with a 303, so a token URL is never an entry. This browser gets a nonce from SERVER2's
    // start URL, and a token carrying it goes in the query.
    b.goto(&format!("{}/handoff/start?type=report.view&report_id=9", s.server2)).await;
    b.wait_text("SERVER1's question", |t| t.contains("Open View report in Partner Analytics?"))
        .await;
    b.goto(&format!("{}/", s.server2)).await;
    let cookies = b.client.get_all_cookies().await.unwrap();
    let nonce = cookies
        .iter()
        .find(|c| c.name() == "__Host-handoff_nonce")
        .map(|c| handoff::Nonce::parse(c.value()).unwrap())
        .expect("SERVER2 set a nonce");
    // alice as the partner knows her (a pairwise id), as the grant this browser holds says.
    let c = client();
    sign_in(&c, &s.server1, "alice").await;
    let sub = token_claims(
        &open_handoff(&c, &s.server1, "/handoff/partner/report.view?report_id=1").await,
    )["sub"]
        .as_str()
        .unwrap()
        .to_owned();
    let token = bound_report_token(&minter(&s, 60), &s.server2, &sub, "9", Some(&nonce), now());
    b.goto(&format!("{}/handoff?token={}", s.server2, token.as_str())).await;
    let landed = b.wait_url("report 9", |u| u.ends_with("/reports/9")).await;
    assert!(!landed.contains("token"), "{landed}");

    // Walk back through the whole history: no entry holds a token.
    let entries = b.js("return history.length").await.as_u64().unwrap();
    assert!(entries > start_len.as_u64().unwrap());
    let mut seen = Vec::new();
    for _ in 0..entries {
        let url = b.url().await;
        assert!(!url.contains("token="), "history entry with a token: {url}");
        seen.push(url);
        b.client.back().await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // The operation page links to a third site: it gets no Referer, so no URL of ours.
    // A typed start URL gets SERVER1's question (it may have come from a mail): answered.
    b.goto(&format!("{}/handoff/partner/report.view?report_id=11", s.server1)).await;
    b.wait_text("SERVER1's question", |t| t.contains("Open View report in Partner Analytics?"))
        .await;
    b.click("form button[type=submit]").await;
    b.wait_url("report 11", |u| u.ends_with("/reports/11")).await;
    b.click_link("Partner Analytics help").await;
    b.wait_url("the help site", |u| u.starts_with(&help.url)).await;
    let heads = help.heads();
    let visit =
        heads.iter().find(|h| h.starts_with("GET /help ")).expect("the help page was requested");
    assert!(!visit.to_ascii_lowercase().contains("\r\nreferer:"), "a Referer was sent: {visit}");
    // Nothing the browser sent there (the page, its favicon) names our servers or a token.
    let port2 = s.server2.rsplit(':').next().unwrap();
    for head in &heads {
        let lower = head.to_ascii_lowercase();
        assert!(
            !lower.contains("token") && !lower.contains(&format!("localhost:{port2}")),
            "{head}"
        );
    }
    b.close().await;
}

#[tokio::test]
async fn back_after_a_handoff_shows_a_clear_page() {
    let s = spawn_default().await;
    let b = Browser::start(true).await;
    b.sign_in(&s, "alice").await;
    b.open_report_42().await;
    b.client.back().await.unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let title = b.title().await;
    let text = b.text().await;
    let url = b.url().await;
    assert!(!url.contains("token"), "{url}");
    assert!(
        !title.contains("not valid")
            && !title.contains("already used")
            && !text.contains("panicked"),
        "back shows a clear page, not a refused token: {title} at {url}"
    );
    assert!(
        title.starts_with("Dashboard") || title.starts_with("Report 42"),
        "back lands on the portal or the report again: {title} at {url}"
    );
    b.close().await;
}

#[tokio::test]
async fn expired_replayed_and_foreign_links_explain_the_way_forward() {
    // Tokens minted here carry no nonce: this server takes them as from a non-browser client.
    let s = spawn().await;
    let b = Browser::start(true).await;
    let minter = minter(&s, 60);
    let mint = |sub: &str, at: u64| {
        report_token(&minter, &s.server2, sub, "42", handoff::UnixTime::from_secs(at)).into_string()
    };
    let now = now().as_secs();

    b.goto(&format!("{}/handoff?token={}", s.server2, mint("u_alice", now - 600))).await;
    assert_eq!(b.title().await, "This sign-in link has expired · Partner Analytics");
    b.wait_text("Go back to the portal and try again", |t| {
        t.contains("Go back to the portal and try again")
    })
    .await;
    let back = b.client.find(Locator::LinkText("Back to the portal")).await.unwrap();
    assert_eq!(back.attr("href").await.unwrap().as_deref(), Some(s.server1.as_str()));
    b.screenshot("07-expired-link").await;

    let token = mint("u_alice", now);
    b.goto(&format!("{}/handoff?token={token}", s.server2)).await;
    b.wait_url("report 42", |u| u.ends_with("/reports/42")).await;
    b.goto(&format!("{}/handoff?token={token}", s.server2)).await;
    assert_eq!(b.title().await, "This sign-in link was already used · Partner Analytics");
    b.wait_text("Each link works once", |t| t.contains("Each link works once")).await;
    b.screenshot("08-used-link").await;

    // A link for another user while signed in here as alice: asked, not switched.
    b.goto(&format!("{}/handoff?token={}", s.server2, mint("u_bob", now))).await;
    assert_eq!(b.title().await, "Switch user? · Partner Analytics");
    b.screenshot("09-switch-user").await;
    b.click("button[value=stay]").await;
    let home = format!("{}/", s.server2);
    b.wait_url("SERVER2's home after staying", |u| u == home).await;
    b.goto(&format!("{}/reports/42", s.server2)).await;
    b.wait_text("report 42 for alice", |t| t.contains("Report 42") && t.contains("u_alice")).await;

    // No access: the 403 page offers the way in.
    b.goto(&format!("{}/reports/77", s.server2)).await;
    assert_eq!(b.title().await, "Not allowed · Partner Analytics");
    b.screenshot("10-not-allowed").await;
    b.close().await;
}

#[tokio::test]
async fn a_server2_started_handoff_completes_in_the_browser() {
    let s = spawn_default().await;
    let b = Browser::start(true).await;
    b.sign_in(&s, "alice").await;
    b.goto(&format!("{}/reports/77", s.server2)).await;
    b.click_link("Get access from the portal").await;
    // SERVER1 cannot tell SERVER2's link from another site's: it asks, naming the user.
    let question = b
        .wait_text("SERVER1's question", |t| t.contains("Open View report in Partner Analytics?"))
        .await;
    assert!(question.contains("as alice") && question.contains("report_id 77"), "{question}");
    b.screenshot("04-confirm-handoff").await;
    b.click("form button[type=submit]").await;
    let landed = b.wait_url("report 77", |u| u.ends_with("/reports/77")).await;
    assert!(landed.starts_with(&s.server2));
    b.wait_text("Report 77", |t| t.contains("Report 77")).await;
    // The nonce cookie was used up.
    let cookies = b.client.get_all_cookies().await.unwrap();
    assert!(cookies.iter().all(|c| c.name() != "__Host-handoff_nonce"), "{cookies:?}");
    b.close().await;
}

#[tokio::test]
async fn without_javascript_the_handoff_still_completes() {
    let s = spawn_default().await;
    let b = Browser::start(false).await;
    b.sign_in(&s, "alice").await;
    b.click_link("View report 42").await;
    b.wait_url("the handoff page", |u| u.contains("/handoff/partner/report.view")).await;
    b.wait_text("Continuing to Partner Analytics", |t| {
        t.contains("Continuing to Partner Analytics")
    })
    .await;
    b.screenshot("03-handoff-page").await;
    b.click("#handoff-form button").await;
    b.wait_url("report 42", |u| u.ends_with("/reports/42")).await;
    b.wait_text("Report 42", |t| t.contains("Report 42")).await;
    b.close().await;
}

/// The session-swap defence in a real browser, where SERVER1's cross-site form POST carries no
/// SameSite=Lax cookie: SERVER2 still notices the browser is signed in as someone else (the
/// holder note is SameSite=None) and asks before switching.
#[tokio::test]
async fn a_posted_handoff_for_another_user_asks_before_switching() {
    let s = spawn_default().await;
    let b = Browser::start(true).await;
    b.sign_in(&s, "alice").await;
    b.open_report_42().await;
    b.wait_text("alice's report", |t| t.contains("Report 42")).await;
    // Someone else signs in on SERVER1 in this browser and opens a report on SERVER2.
    b.goto(&format!("{}/", s.server1)).await;
    b.click("header form button[type=submit]").await;
    b.wait_url("the sign-in page", |u| u.ends_with("/login")).await;
    b.sign_in(&s, "bob").await;
    b.click_link("View report 42").await;
    b.wait_text("the switch question", |t| t.contains("Switch user?")).await;
    // On a clean URL of its own (security round two, finding 7), not the handoff's.
    assert!(b.url().await.ends_with("/handoff/switch"), "{}", b.url().await);
    b.click("button[value=stay]").await;
    let home = format!("{}/", s.server2);
    b.wait_url("SERVER2's home", |u| u == home).await;
    b.close().await;
}

/// A newcomer signs up, opens the verification link from the mail, signs in and hands off.
#[tokio::test]
async fn sign_up_verify_and_hand_off_in_the_browser() {
    let smtp = SmtpServer::start().await;
    let url = smtp.url();
    let s = spawn_both(move |c| with_mail(c, &url), |_| {}).await;
    let b = Browser::start(true).await;
    b.goto(&format!("{}/login", s.server1)).await;
    b.click_link("Create an account").await;
    b.wait_url("the sign-up page", |u| u.ends_with("/signup")).await;
    b.type_into("email", "nina@example.com").await;
    b.type_into("username", "nina").await;
    b.type_into("password", "walnut ferry compass 19").await;
    b.screenshot("11-sign-up").await;
    b.click("form button[type=submit]").await;
    b.wait_text("Check your mail", |t| t.contains("Check your mail")).await;
    b.screenshot("12-check-your-mail").await;

    let link = smtp.wait_for("nina@example.com", 1, 10).await.remove(0).link();
    b.goto(&link).await;
    b.wait_text("the verification page", |t| t.contains("Verify my address")).await;
    b.screenshot("13-verify-address").await;
    b.click("form button[type=submit]").await;
    b.wait_text("Address verified", |t| t.contains("Address verified")).await;
    b.screenshot("14-address-verified").await;

    b.sign_in_with(&s, "nina", "walnut ferry compass 19").await;
    let landed = b.open_report_42().await;
    assert!(landed.starts_with(&s.server2), "{landed}");
    b.wait_text("Report 42", |t| t.contains("Report 42")).await;
    b.close().await;
}

/// "Forgot your password?" from the sign-in page to a new password, and the account page with
/// its sessions.
#[tokio::test]
async fn reset_the_password_in_the_browser() {
    let smtp = SmtpServer::start().await;
    let url = smtp.url();
    let s = spawn_both(move |c| with_mail(c, &url), |_| {}).await;
    let other = client();
    sign_in(&other, &s.server1, "alice").await;
    let b = Browser::start(true).await;
    b.goto(&format!("{}/login", s.server1)).await;
    b.click_link("Forgot your password?").await;
    b.wait_url("the forgot page", |u| u.ends_with("/forgot-password")).await;
    b.type_into("email", "alice@example.com").await;
    b.screenshot("15-forgot-password").await;
    b.click("form button[type=submit]").await;
    b.wait_text("the answer", |t| t.contains("If an account uses that address")).await;

    let link = smtp.wait_for("alice@example.com", 1, 10).await.remove(0).link();
    b.goto(&link).await;
    b.wait_text("the reset form", |t| t.contains("Choose a new password")).await;
    b.type_into("password", "amber lantern orchard 77").await;
    b.screenshot("16-reset-password").await;
    b.click("form button[type=submit]").await;
    b.wait_text("Password changed", |t| t.contains("Password changed")).await;
    assert_eq!(status_of(&other, &format!("{}/", s.server1)).await, 303, "the other session ended");

    b.sign_in_with(&s, "alice", "amber lantern orchard 77").await;
    b.goto(&format!("{}/account", s.server1)).await;
    let page = b.wait_text("the account page", |t| t.contains("Where you are signed in")).await;
    assert!(page.contains("alice@example.com") && page.contains("This browser"), "{page}");
    b.js("document.querySelector('table.sessions').scrollIntoView({block: 'center'})").await;
    b.screenshot("17-account").await;
    b.close().await;
}

/// Signing out of the portal ends the partner's page in the same browser: SERVER1's logout
/// reaches SERVER2 over the back channel.
#[tokio::test]
async fn signing_out_of_the_portal_ends_the_partner_page() {
    let s = spawn_default().await;
    let b = Browser::start(true).await;
    b.sign_in(&s, "alice").await;
    let report = b.open_report_42().await;
    b.wait_text("Report 42", |t| t.contains("Report 42")).await;
    b.goto(&format!("{}/", s.server1)).await;
    b.click("form.inline button[type=submit]").await;
    b.wait_url("the sign-in page", |u| u.ends_with("/login")).await;
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        b.goto(&report).await;
        if b.text().await.contains("You signed out of the portal") {
            break;
        }
        assert!(Instant::now() < deadline, "the partner page still shows the report");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    b.screenshot("18-signed-out-on-partner").await;
    b.close().await;
}

// Security round two: what a page on another site (`attacker.test`) can make the victim's
// browser do. Each of these failed on the code before the fix.

/// A page that sends the browser to `url` as soon as it loads.
fn navigating_page(url: &str) -> String {
    let url = serde_json::to_string(url).unwrap();
    format!("<!DOCTYPE html><title>Cute cats</title><script>location.href = {url};</script>")
}

/// Finding 1: a page elsewhere starts an invoice approval through SERVER2's start URL. SERVER1
/// asks, naming the user and the invoice; nothing is minted, the grant the victim holds stays,
/// and the approval page is never reached.
#[tokio::test]
async fn another_site_cannot_start_a_handoff_without_a_click() {
    let s = spawn_default().await;
    let b = Browser::start(true).await;
    b.sign_in(&s, "alice").await;
    b.open_report_42().await;
    let evil = AttackerSite::start(navigating_page(&format!(
        "{}/handoff/start?type=invoice.approve&invoice_id=EVIL-1",
        s.server2
    )))
    .await;
    b.goto(&evil.url).await;
    let question = b
        .wait_text("SERVER1's question", |t| {
            t.contains("Open Approve invoice in Partner Analytics?")
        })
        .await;
    assert!(question.contains("as alice") && question.contains("EVIL-1"), "{question}");
    assert!(b.url().await.starts_with(&s.server1), "{}", b.url().await);
    b.screenshot("20-attack-start-asks").await;
    // Nothing changed on SERVER2: the grant for report 42 holds, no approval page opens.
    b.goto(&format!("{}/reports/42", s.server2)).await;
    b.wait_text("report 42", |t| t.contains("Report 42")).await;
    b.goto(&format!("{}/invoices/EVIL-1/approve", s.server2)).await;
    b.wait_text("no access to the invoice", |t| !t.contains("Approve invoice EVIL-1")).await;
    assert!(!b.text().await.contains("Approve invoice EVIL-1?"));
    let minted = text_of(&client(), &s.metrics1()).await;
    assert!(!minted.contains("operation=\"invoice.approve\""), "nothing minted: {minted}");

    // The same straight at SERVER1, and a signed-out victim signing in on the way: asked too.
    let direct = AttackerSite::start(navigating_page(&format!(
        "{}/handoff/partner/invoice.approve?invoice_id=EVIL-2",
        s.server1
    )))
    .await;
    b.goto(&direct.url).await;
    b.wait_text("SERVER1's question", |t| t.contains("EVIL-2") && t.contains("Continue")).await;
    b.close().await;

    let b = Browser::start(true).await;
    b.goto(&evil.url).await;
    b.wait_url("SERVER1's sign-in", |u| u.contains("/login")).await;
    b.type_into("username", "alice").await;
    b.type_into("password", PASSWORD).await;
    b.click("button[type=submit]").await;
    let question = b
        .wait_text("SERVER1's question after signing in", |t| {
            t.contains("Open Approve invoice in Partner Analytics?")
        })
        .await;
    assert!(question.contains("EVIL-1"), "{question}");
    b.close().await;
}

/// Finding 2: the attacker takes a token for their own account and posts it from their page.
/// The victim's browser has no nonce for it, so SERVER2 refuses it and the victim is not
/// signed in as the attacker.
#[tokio::test]
async fn another_site_cannot_sign_the_victim_in_as_the_attacker() {
    let s = spawn_default().await;
    let attacker = client();
    sign_in(&attacker, &s.server1, "bob").await;
    let token =
        open_handoff(&attacker, &s.server1, "/handoff/partner/report.view?report_id=42").await;
    // And one without a nonce, as `server1 mint` or a target with binding = "none" makes.
    let unbound = report_token(&minter(&s, 60), &s.server2, "u_bob", "43", now()).into_string();
    let b = Browser::start(true).await;
    for (token, report) in [(token, "42"), (unbound, "43")] {
        let page = format!(
            "<!DOCTYPE html><title>Win a prize</title>\
             <form id=f method=post action=\"{}/handoff\"><input type=hidden name=token value=\"{token}\"></form>\
             <script>document.getElementById('f').submit();</script>",
            s.server2
        );
        let evil = AttackerSite::start(page).await;
        b.goto(&evil.url).await;
        b.wait_text("the refusal", |t| t.contains("belongs to another browser")).await;
        b.goto(&format!("{}/reports/{report}", s.server2)).await;
        let text = b.wait_text("report page", |t| !t.is_empty()).await;
        assert!(!text.contains(&format!("Report {report}")), "signed in as the attacker: {text}");
    }
    b.close().await;
}

/// Finding 3: the attacker's own nonce and `mode=redirect` on a start link would put a live
/// token for the victim into a URL. SERVER1 refuses: no URL in the victim's browser holds a
/// token, and the form delivery's token (after the question) is refused and used up.
#[tokio::test]
async fn another_sites_nonce_gets_no_live_token_into_a_url() {
    let s = spawn_default().await;
    let attacker = client();
    let started = attacker
        .get(format!("{}/handoff/start?type=report.view&report_id=42", s.server2))
        .send()
        .await
        .unwrap();
    let nonce = set_cookie(&started, "__Host-handoff_nonce=");
    let nonce = nonce.split_once('=').unwrap().1.to_owned();
    let b = Browser::start(true).await;
    b.sign_in(&s, "alice").await;
    let evil = AttackerSite::start(navigating_page(&format!(
        "{}/handoff/partner/report.view?report_id=42&nonce={nonce}&mode=redirect",
        s.server1
    )))
    .await;
    b.goto(&evil.url).await;
    b.wait_url("off the attacker's page", |u| !u.starts_with(&evil.url)).await;
    let text = b.text().await;
    assert!(!b.url().await.contains("token="), "{}", b.url().await);
    assert!(!text.contains("eyJ"), "{text}");
    let minted = text_of(&client(), &s.metrics1()).await;
    assert!(!minted.contains("handoff_minted_total{"), "nothing minted: {minted}");

    // Without `mode=redirect` SERVER1 asks; a victim who goes on carries a token bound to the
    // attacker's nonce, in a form's body, to SERVER2, which refuses it and uses it up.
    let form = AttackerSite::start(navigating_page(&format!(
        "{}/handoff/partner/report.view?report_id=42&nonce={nonce}",
        s.server1
    )))
    .await;
    b.goto(&form.url).await;
    b.wait_text("SERVER1's question", |t| t.contains("Open View report in Partner Analytics?"))
        .await;
    b.click("form button[type=submit]").await;
    b.wait_text("the refusal", |t| t.contains("belongs to another browser")).await;
    assert!(!b.url().await.contains("token="));
    let m2 = text_of(&client(), &s.metrics2()).await;
    assert!(m2.lines().any(|l| l == "handoff_rejected_total{reason=\"nonce_mismatch\"} 1"), "{m2}");
    assert!(m2.lines().any(|l| l == "replay_store_entries 1"), "used up: {m2}");
    b.close().await;
}
