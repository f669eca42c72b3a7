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
    let s = spawn_with(move |c| c.help_url = Some(help_url)).await;
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
    let s = spawn().await;
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
    // Redirect delivery: the token URL is answered with a 303, so it is never an entry.
    b.goto(&format!("{}/handoff/partner/report.view?report_id=9&mode=redirect", s.server1)).await;
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
    b.goto(&format!("{}/handoff/partner/report.view?report_id=11", s.server1)).await;
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
    let s = spawn().await;
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
    let s = spawn().await;
    let b = Browser::start(true).await;
    b.sign_in(&s, "alice").await;
    b.goto(&format!("{}/reports/77", s.server2)).await;
    b.click_link("Get access from the portal").await;
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
    let s = spawn().await;
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
    let s = spawn().await;
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
    assert!(b.url().await.ends_with("/handoff"), "answered on the handoff POST itself");
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
    let s = spawn().await;
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
