//! Security round two, finding 11: scope narrowed down to the object. An argument's rule in the
//! targets file may add a `pattern`, or `entitled = true`: the user then needs an entitlement to
//! the value (`server1 entitlements grant|revoke|list`), checked before anything is minted — on
//! the web and by `server1 mint`.

use std::process::Output;

use handoff_tests::*;

/// The example's invoice approval, narrowed to `INV-` numbers each user is entitled to.
fn narrowed(targets: String) -> String {
    let rule = "[target.operation.args.invoice_id]\nrule = \"slug\"\nmax_len = 32\n";
    assert!(targets.contains(rule));
    targets.replacen(rule, &format!("{rule}pattern = \"INV-[0-9-]+\"\nentitled = true\n"), 1)
}

fn server1(s: &Servers, args: &[&str]) -> Output {
    server1_command(s, args)
}

fn ok(out: &Output) -> String {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn refused(out: &Output, why: &str) {
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(why), "{why}: {stderr}");
}

async fn open(c: &reqwest::Client, s: &Servers, invoice: &str) -> reqwest::Response {
    c.get(format!("{}/handoff/partner/invoice.approve?invoice_id={invoice}", s.server1))
        .header("sec-fetch-site", "same-origin")
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn an_argument_narrowed_to_a_pattern_and_to_entitlements() {
    let s = spawn_with_targets(narrowed).await;
    let c = client();
    sign_in(&c, &s.server1, "alice").await;

    // The dashboard links to the example invoice only once alice may open it.
    let quick = "href=\"/handoff/partner/invoice.approve?invoice_id=INV-2026-0042\"";
    let dashboard = || async {
        let resp = c.get(format!("{}/", s.server1)).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        resp.text().await.unwrap()
    };
    let page = dashboard().await;
    assert!(!page.contains(quick), "no quick link to an invoice alice may not open");
    assert!(page.contains("action=\"/handoff/partner/invoice.approve\""), "the operation stays");
    let example =
        ["--target", "partner", "--op", "invoice.approve", "--arg", "invoice_id=INV-2026-0042"];
    ok(&server1(&s, &[&["entitlements", "grant", "alice"][..], &example[..]].concat()));
    assert!(dashboard().await.contains(quick), "entitled now: the quick link is back");
    ok(&server1(&s, &[&["entitlements", "revoke", "alice"][..], &example[..]].concat()));
    assert!(!dashboard().await.contains(quick));

    // Not entitled: refused before anything is minted or asked.
    let resp = open(&c, &s, "INV-7").await;
    assert_eq!(resp.status(), 403);
    assert!(resp.text().await.unwrap().contains("may not open this invoice_id"));
    // Off the pattern: not a link this partner takes, entitled or not.
    let resp = open(&c, &s, "EVIL-7").await;
    assert_eq!(resp.status(), 400);
    assert!(resp
        .text()
        .await
        .unwrap()
        .contains("argument invoice_id is not one this partner takes"));

    let grant =
        ["entitlements", "grant", "alice", "--target", "partner", "--op", "invoice.approve"];
    ok(&server1(&s, &[&grant[..], &["--arg", "invoice_id=INV-7"]].concat()));
    // Granting again says so and changes nothing.
    let again = server1(&s, &[&grant[..], &["--arg", "invoice_id=INV-7"]].concat());
    assert!(String::from_utf8_lossy(&again.stderr).contains("could already open"));

    // Entitled to INV-7: on to the handoff (through SERVER2's start URL), and only INV-7.
    let resp = open(&c, &s, "INV-7").await;
    assert_eq!(resp.status(), 303);
    let page = follow_handoff(
        &c,
        &format!("{}/handoff/partner/invoice.approve?invoice_id=INV-7", s.server1),
    )
    .await;
    let token = form_value(&page.text().await.unwrap(), "token").expect("a handoff page");
    assert_eq!(token_claims(&token)["authorization_details"][0]["invoice_id"], "INV-7");
    assert_eq!(open(&c, &s, "INV-8").await.status(), 403);
    // bob (no billing role) is refused for the role, entitlement or not.
    let bob = client();
    sign_in(&bob, &s.server1, "bob").await;
    assert_eq!(open(&bob, &s, "INV-7").await.status(), 403);

    // The command line mints only what the web would.
    let mint = |invoice: &str| {
        server1(
            &s,
            &[
                "mint",
                "--target",
                "partner",
                "--user",
                "alice",
                "--op",
                "invoice.approve",
                "--arg",
                &format!("invoice_id={invoice}"),
            ],
        )
    };
    assert_eq!(ok(&mint("INV-7")).trim().split('.').count(), 3);
    refused(&mint("INV-8"), "holds no entitlement to this invoice_id");
    refused(&mint("EVIL-7"), "not one this partner takes");

    let list = ok(&server1(&s, &["entitlements", "list"]));
    assert!(
        list.lines().any(|l| l.starts_with("alice") && l.ends_with("invoice_id=INV-7")),
        "{list}"
    );
    let bobs = ok(&server1(&s, &["entitlements", "list", "--user", "bob"]));
    assert_eq!(bobs.lines().count(), 1, "only the heading: {bobs}");

    // Revoked: refused again.
    let revoke =
        ["entitlements", "revoke", "alice", "--target", "partner", "--op", "invoice.approve"];
    ok(&server1(&s, &[&revoke[..], &["--arg", "invoice_id=INV-7"]].concat()));
    assert_eq!(open(&c, &s, "INV-7").await.status(), 403);
    refused(&server1(&s, &[&revoke[..], &["--arg", "invoice_id=INV-7"]].concat()), "held no such");

    // What the command refuses, each with its reason.
    for (args, why) in [
        (vec!["--arg", "invoice_id=EVIL-1"], "is not a value argument"),
        (vec!["--arg", "invoice_id"], "KEY=VALUE"),
        (vec!["--arg", "amount=5"], "is not `entitled = true`"),
    ] {
        refused(&server1(&s, &[&grant[..], &args].concat()), why);
    }
    let report = ["entitlements", "grant", "alice", "--target", "partner", "--op", "report.view"];
    refused(
        &server1(&s, &[&report[..], &["--arg", "report_id=5"]].concat()),
        "is not `entitled = true`",
    );
    let nobody =
        ["entitlements", "grant", "nobody", "--target", "partner", "--op", "invoice.approve"];
    refused(&server1(&s, &[&nobody[..], &["--arg", "invoice_id=INV-1"]].concat()), "no user");
    let elsewhere =
        ["entitlements", "grant", "alice", "--target", "nowhere", "--op", "invoice.approve"];
    refused(&server1(&s, &[&elsewhere[..], &["--arg", "invoice_id=INV-1"]].concat()), "no target");
}
