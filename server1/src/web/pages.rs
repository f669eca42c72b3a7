//! SERVER1's pages, rendered with maud (which escapes every interpolated value).

use handoff::protocol::start_path;
use handoff_web::Brand;
use maud::{html, Markup, PreEscaped};

use crate::db::User;
use crate::targets::{Target, TargetOperation};

/// The default Content-Security-Policy: same-origin styles and scripts, forms post only here.
pub const DEFAULT_CSP: &str =
    "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; \
     form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

pub use handoff_web::pages::html_response;

/// The site's name on every page.
pub const BRAND: Brand = Brand { name: "Handoff Portal" };

fn layout(title: &str, user: Option<(&User, &str)>, content: Markup) -> Markup {
    let sign_out = user.map(|(user, csrf)| {
        html! {
            form.inline method="post" action="/logout" {
                span.muted { "Signed in as " strong { (user.name) } " " }
                input type="hidden" name="csrf" value=(csrf);
                button.secondary type="submit" { "Sign out" }
            }
        }
    });
    BRAND.layout(title, sign_out, content)
}

/// A page with a heading, a message and the way back to the portal.
pub fn message_page(title: &str, message: &str) -> Markup {
    BRAND.message(title, message, Some(("/", "Back to the portal")))
}

/// The sign-in form.
pub fn login_page(csrf: &str, next: &str, error: Option<&str>) -> Markup {
    layout(
        "Sign in",
        None,
        html! {
            div.card {
                h1 { "Sign in" }
                @if let Some(error) = error {
                    p.error role="alert" { (error) }
                }
                form method="post" action="/login" {
                    input type="hidden" name="csrf" value=(csrf);
                    input type="hidden" name="next" value=(next);
                    label for="username" { "User name" }
                    input #username type="text" name="username" autocomplete="username" required autofocus;
                    label for="password" { "Password" }
                    input #password type="password" name="password" autocomplete="current-password" required;
                    button type="submit" { "Sign in" }
                }
            }
        },
    )
}

/// The link that opens `op` on `target` with its example arguments.
pub fn example_href(target: &Target, op: &TargetOperation, args: &[(String, String)]) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in args {
        query.append_pair(k, v);
    }
    let query = query.finish();
    let path = start_path(target.id.as_str(), op.spec.kind().as_str());
    if query.is_empty() {
        path
    } else {
        format!("{path}?{query}")
    }
}

/// The dashboard: who you are and what you may open where.
pub fn dashboard(user: &User, csrf: &str, offers: &[(&Target, Vec<&TargetOperation>)]) -> Markup {
    layout(
        "Dashboard",
        Some((user, csrf)),
        html! {
            h1 { "Welcome, " (user.name) }
            p.muted {
                "Your roles: "
                @if user.roles.is_empty() { "none" } @else {
                    (user.roles.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(", "))
                }
            }
            @if offers.iter().all(|(_, ops)| ops.is_empty()) {
                div.card { p { "There is nothing you can open on a partner yet." } }
            }
            @for (target, ops) in offers {
                @if !ops.is_empty() {
                    section.card {
                        h2 { (target.name) }
                        p.muted { "Opens at " code { (target.audience) } }
                        ul.ops {
                            @for op in ops {
                                li {
                                    @if let Some(example) = &op.example {
                                        a.button href=(example_href(target, op, example)) {
                                            (op.title)
                                            @for (_, value) in example { " " (value) }
                                        }
                                    }
                                    form.args method="get" action=(start_path(target.id.as_str(), op.spec.kind().as_str())) {
                                        @for arg in op.spec.args() {
                                            div {
                                                label for=(format!("{}-{}-{}", target.id, op.spec.kind(), arg.name)) { (label_for(arg.name.as_str())) }
                                                input id=(format!("{}-{}-{}", target.id, op.spec.kind(), arg.name))
                                                    type="text" name=(arg.name) required;
                                            }
                                        }
                                        button.secondary type="submit" { (op.title) " …" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}

/// Asks before handing the user over when another site sent them here.
pub fn confirm_page(
    target: &Target,
    op: &TargetOperation,
    args: &str,
    continue_href: &str,
) -> Markup {
    layout(
        "Continue?",
        None,
        html! {
            div.card {
                h1 { "Open " (op.title) " in " (target.name) "?" }
                p { "Another site sent you here to open " strong { (op.title) } " " (args) " in "
                    strong { (target.name) } ", signed in as you." }
                p { "Continue only if you meant to." }
                p {
                    a.button href=(continue_href) { "Continue to " (target.name) }
                    " "
                    a href="/" { "Back to the portal" }
                }
            }
        },
    )
}

/// The page that carries the token to the target in a POST body.
pub fn handoff_page(
    target: &Target,
    op: &TargetOperation,
    args: &str,
    token: &str,
    ttl_secs: u64,
) -> Markup {
    // No referrer for anything this page loads or posts, and the script that submits the form.
    let head = html! {
        meta name="referrer" content="no-referrer";
        script src="/static/handoff.js" {}
    };
    let content = html! {
        div.card {
            h1 { "Continuing to " (target.name) }
            p { "You are being signed in to " strong { (target.name) } " to " strong { (op.title) } " " (args) "." }
            p.muted { "This sign-in link works once, within " (ttl_secs) " seconds." }
            form #handoff-form method="post" action=(target.handoff_url.as_str()) {
                input type="hidden" name="token" value=(token_attr(token));
                button type="submit" { "Continue to " (target.name) }
            }
        }
    };
    BRAND.page(&format!("Continuing to {}", target.name), Some(head), None, content)
}

/// A token as an attribute value. A compact token is base64url and dots, which HTML never needs
/// escaped, so the escaper's byte-by-byte pass is skipped for it; anything else is escaped.
fn token_attr(token: &str) -> PreEscaped<std::borrow::Cow<'_, str>> {
    if handoff::token::is_token_text(token.as_bytes()) {
        PreEscaped(std::borrow::Cow::Borrowed(token))
    } else {
        PreEscaped(std::borrow::Cow::Owned(html! { (token) }.into_string()))
    }
}

/// A person-readable label for an argument name: `report_id` → "Report id".
fn label_for(name: &str) -> String {
    let spaced = name.replace('_', " ");
    let mut chars = spaced.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => spaced,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::targets::Targets;

    #[test]
    fn every_value_shown_is_escaped() {
        let example = include_str!("../../targets.example.toml")
            .replace("Partner Analytics", "<script>alert(1)</script> & Co")
            .replace("View report", "View 'report' <b>now</b>");
        let targets = Targets::parse(&example).expect("targets");
        let target = targets.get("partner").expect("partner");
        let user = User {
            id: handoff::Subject::parse("u_1").expect("sub"),
            name: crate::names::UserName::parse("alice").expect("name"),
            roles: ["reports", "billing"]
                .iter()
                .map(|r| crate::names::Role::parse(r).expect("role"))
                .collect(),
        };
        let offers = vec![(target, target.operations.iter().collect::<Vec<_>>())];
        let html = dashboard(&user, "csrf\"><x", &offers).into_string();
        assert!(!html.contains("<script>alert(1)</script>"));
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt; &amp; Co"));
        assert!(!html.contains("<b>now</b>") && html.contains("&lt;b&gt;now&lt;/b&gt;"));
        assert!(!html.contains("csrf\"><x"), "attribute values are escaped too");
        let page =
            handoff_page(target, &target.operations[0], "report_id 42", "tok\"<", 60).into_string();
        assert!(page.contains("tok&quot;&lt;") && !page.contains("tok\"<"));
        let page = handoff_page(target, &target.operations[0], "", "aB-_.c9.Z0", 60).into_string();
        assert!(page.contains("name=\"token\" value=\"aB-_.c9.Z0\""), "a token goes in as it is");
    }

    #[test]
    fn labels() {
        assert_eq!(label_for("report_id"), "Report id");
        assert_eq!(label_for("x"), "X");
    }
}
