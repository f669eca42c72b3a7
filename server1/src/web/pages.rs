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
                span.muted { "Signed in as " a href="/account" { strong { (user.name) } } " " }
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

/// The sign-in form; with `signup_open`, a link to create an account.
pub fn login_page(csrf: &str, next: &str, error: Option<&str>, signup_open: bool) -> Markup {
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
                    label for="username" { "User name or e-mail address" }
                    input #username type="text" name="username" autocomplete="username" required autofocus;
                    label for="password" { "Password" }
                    input #password type="password" name="password" autocomplete="current-password" required;
                    button type="submit" { "Sign in" }
                }
                p.links {
                    a href="/forgot-password" { "Forgot your password?" }
                    @if signup_open {
                        " · " a href="/signup" { "Create an account" }
                    }
                }
            }
        },
    )
}

/// A form's error line, if any.
fn error_line(error: Option<&str>) -> Markup {
    html! {
        @if let Some(error) = error {
            p.error role="alert" { (error) }
        }
    }
}

/// What the sign-up form was filled in with, to show it again after an error.
#[derive(Debug, Default)]
pub struct SignupValues<'a> {
    /// The user name typed.
    pub username: &'a str,
    /// The address typed.
    pub email: &'a str,
}

/// The sign-up form.
pub fn signup_page(csrf: &str, values: &SignupValues<'_>, error: Option<&str>) -> Markup {
    layout(
        "Create an account",
        None,
        html! {
            div.card {
                h1 { "Create an account" }
                (error_line(error))
                form method="post" action="/signup" {
                    input type="hidden" name="csrf" value=(csrf);
                    label for="email" { "E-mail address" }
                    input #email type="email" name="email" autocomplete="email" value=(values.email) required autofocus;
                    label for="username" { "User name" }
                    input #username type="text" name="username" autocomplete="username" value=(values.username) required;
                    p.muted { "a-z, 0-9, dots, dashes and underscores" }
                    label for="password" { "Password" }
                    input #password type="password" name="password" autocomplete="new-password" minlength="12" required;
                    p.muted { "At least 12 characters; not your name or address, and not a common password." }
                    button type="submit" { "Create account" }
                }
                p.links { "Have an account? " a href="/login" { "Sign in" } }
            }
        },
    )
}

/// After sign-up, whether the address was new or not: the same words.
pub fn signup_done(email: &str) -> Markup {
    layout(
        "Check your mail",
        None,
        html! {
            div.card {
                h1 { "Check your mail" }
                p { "We sent a message to " strong { (email) } ". Open the link in it to verify your address." }
                p.muted { "You can sign in now; opening partner links waits until the address is verified. Nothing arrived? Check the spam folder, or sign in and ask for another message on your account page." }
                p { a.button href="/login" { "Sign in" } }
            }
        },
    )
}

/// A page that turns a link from a mail into a POST: a link opened by a mail scanner or a
/// preview is not used up, only the person's click does it.
pub fn link_confirm_page(
    title: &str,
    text: &str,
    action: &str,
    token: &str,
    csrf: &str,
    button: &str,
) -> Markup {
    layout(
        title,
        None,
        html! {
            div.card {
                h1 { (title) }
                p { (text) }
                form method="post" action=(action) {
                    input type="hidden" name="csrf" value=(csrf);
                    input type="hidden" name="token" value=(token);
                    button type="submit" { (button) }
                }
            }
        },
    )
}

/// The form that asks for the address to send a reset link to.
pub fn forgot_page(csrf: &str, error: Option<&str>) -> Markup {
    layout(
        "Forgot your password?",
        None,
        html! {
            div.card {
                h1 { "Forgot your password?" }
                p { "Enter your account's e-mail address and we will send you a link to choose a new password." }
                (error_line(error))
                form method="post" action="/forgot-password" {
                    input type="hidden" name="csrf" value=(csrf);
                    label for="email" { "E-mail address" }
                    input #email type="email" name="email" autocomplete="email" required autofocus;
                    button type="submit" { "Send the link" }
                }
                p.links { a href="/login" { "Back to sign-in" } }
            }
        },
    )
}

/// The answer to a reset request: the same whether or not an account has the address.
pub fn forgot_done(minutes: u64) -> Markup {
    BRAND.message(
        "Check your mail",
        &format!("If an account uses that address, a message with a link is on its way. The link works once, for {minutes} minutes."),
        Some(("/login", "Back to sign-in")),
    )
}

/// The form for a new password, from a reset link.
pub fn reset_page(csrf: &str, token: &str, user: &User, error: Option<&str>) -> Markup {
    layout(
        "Choose a new password",
        None,
        html! {
            div.card {
                h1 { "Choose a new password" }
                p { "For the account " strong { (user.name) } ". Every session of this account will be signed out." }
                (error_line(error))
                form method="post" action="/reset-password" {
                    input type="hidden" name="csrf" value=(csrf);
                    input type="hidden" name="token" value=(token);
                    input type="text" name="username" autocomplete="username" value=(user.name) hidden;
                    label for="password" { "New password" }
                    input #password type="password" name="password" autocomplete="new-password" minlength="12" required autofocus;
                    p.muted { "At least 12 characters; not your name or address, and not a common password." }
                    button type="submit" { "Set the new password" }
                }
            }
        },
    )
}

/// Fixed notices the account page shows after a change (chosen by a code in its URL, never by
/// text from it).
pub fn account_notice(code: &str) -> Option<&'static str> {
    Some(match code {
        "verification-sent" => "A new verification message is on its way; the link in any earlier one no longer works.",
        "email-sent" => "A confirmation link is on its way to the new address. Your address changes when you open it.",
        "password-changed" => "Your password was changed, and your other sessions were signed out.",
        "session-ended" => "That session was signed out.",
        "name-changed" => "Your display name was saved. Partners that receive it see it from your next handoff.",
        _ => return None,
    })
}

/// The page where a signed-in person types an app's code.
pub fn device_page(user: &User, csrf: &str, code: &str, error: Option<&str>) -> Markup {
    layout(
        "Connect an app",
        Some((user, csrf)),
        html! {
            div.card {
                h1 { "Connect an app" }
                p { "Type the code the app shows you. You will see what it asks for before anything happens." }
                (error_line(error))
                form method="post" action="/device" {
                    input type="hidden" name="csrf" value=(csrf);
                    label for="user_code" { "Code" }
                    input #user_code type="text" name="user_code" value=(code) autocomplete="off" autocapitalize="characters" placeholder="BCDF-GHJK" required autofocus;
                    button type="submit" { "Continue" }
                }
            }
        },
    )
}

/// The question: this app asks for this, as you.
pub fn device_consent(
    user: &User,
    csrf: &str,
    client: &crate::clients::Client,
    scope: &str,
    code: &str,
) -> Markup {
    layout(
        "Approve this app?",
        Some((user, csrf)),
        html! {
            div.card {
                h1 { "Approve " (client.name) "?" }
                p { strong { (client.name) } " (" code { (client.id) } ") asks to act as " strong { (user.name) } " and to:" }
                ul {
                    @for s in scope.split(' ') {
                        li { (crate::clients::describe(s)) }
                    }
                }
                p.muted { "Only approve if you started this in the app yourself and it shows the code " strong { (code) } "." }
                form.inline method="post" action="/device/decide" {
                    input type="hidden" name="csrf" value=(csrf);
                    input type="hidden" name="user_code" value=(code);
                    button type="submit" name="decision" value="approve" { "Approve" }
                    " "
                    button.secondary type="submit" name="decision" value="deny" { "Deny" }
                }
            }
        },
    )
}

/// A duration in words, for "last seen".
fn ago(now: u64, then: u64) -> String {
    match now.saturating_sub(then) {
        s if s < 120 => "just now".into(),
        s if s < 7200 => format!("{} minutes ago", s / 60),
        s if s < 172_800 => format!("{} hours ago", s / 3600),
        s => format!("{} days ago", s / 86_400),
    }
}

/// What the account page needs.
#[derive(Debug)]
pub struct AccountView<'a> {
    /// Who.
    pub user: &'a User,
    /// The session anti-forgery token.
    pub csrf: &'a str,
    /// Their live sessions.
    pub sessions: &'a [crate::db::SessionInfo],
    /// The hash of this browser's session.
    pub current: &'a [u8],
    /// Now, in seconds.
    pub now: u64,
    /// A notice to show.
    pub notice: Option<&'static str>,
    /// An error to show.
    pub error: Option<&'a str>,
    /// Whether handoffs wait for a verified address.
    pub verification_required: bool,
}

/// The account page: name, address, password, and every session.
pub fn account_page(v: &AccountView<'_>) -> Markup {
    let user = v.user;
    layout(
        "Your account",
        Some((user, v.csrf)),
        html! {
            h1 { "Your account" }
            @if let Some(notice) = v.notice { p.notice role="status" { (notice) } }
            (error_line(v.error))
            section.card {
                h2 { "Profile" }
                p { "User name: " strong { (user.name) } }
                form method="post" action="/account/name" {
                    input type="hidden" name="csrf" value=(v.csrf);
                    label for="display-name" { "Display name" }
                    input #display-name type="text" name="display_name" autocomplete="name" maxlength="80"
                        value=(user.display_name.as_deref().unwrap_or(""));
                    p.muted { "How partners that may receive your name show you. Leave it empty to share none." }
                    button.secondary type="submit" { "Save the display name" }
                }
                @match &user.email {
                    Some(email) => {
                        p { "E-mail address: " strong { (email) } " "
                            @if user.email_verified { span.muted { "(verified)" } } @else { span.error { "(not verified)" } }
                        }
                    }
                    None => { p.muted { "No e-mail address." } }
                }
                @if user.email.is_some() && !user.email_verified {
                    @if v.verification_required {
                        p { "Partner links open once your address is verified." }
                    }
                    form method="post" action="/account/verify" {
                        input type="hidden" name="csrf" value=(v.csrf);
                        button.secondary type="submit" { "Send the verification e-mail again" }
                    }
                }
            }
            section.card {
                h2 { "Change e-mail address" }
                p.muted { "We send a link to the new address; the change takes effect when you open it, and the old address is told." }
                form method="post" action="/account/email" {
                    input type="hidden" name="csrf" value=(v.csrf);
                    label for="new-email" { "New e-mail address" }
                    input #new-email type="email" name="email" autocomplete="email" required;
                    label for="email-password" { "Current password" }
                    input #email-password type="password" name="password" autocomplete="current-password" required;
                    button type="submit" { "Send the confirmation link" }
                }
            }
            section.card {
                h2 { "Change password" }
                form method="post" action="/account/password" {
                    input type="hidden" name="csrf" value=(v.csrf);
                    input type="text" name="username" autocomplete="username" value=(user.name) hidden;
                    label for="current-password" { "Current password" }
                    input #current-password type="password" name="current" autocomplete="current-password" required;
                    label for="new-password" { "New password" }
                    input #new-password type="password" name="new" autocomplete="new-password" minlength="12" required;
                    p.muted { "Your other sessions are signed out." }
                    button type="submit" { "Change password" }
                }
            }
            section.card {
                h2 { "Where you are signed in" }
                table.sessions {
                    thead { tr { th { "Signed in" } th { "Last seen" } th { "From" } th { "Browser" } th {} } }
                    tbody {
                        @for s in v.sessions {
                            tr {
                                td { (ago(v.now, s.created.as_secs())) }
                                td { (ago(v.now, s.last_seen.as_secs())) }
                                td { (s.meta.client.as_deref().unwrap_or("unknown")) }
                                td { (s.meta.user_agent.as_deref().unwrap_or("unknown")) }
                                td {
                                    @if s.id_hash == v.current {
                                        strong { "This browser" }
                                    } @else {
                                        form.inline method="post" action="/account/sessions/end" {
                                            input type="hidden" name="csrf" value=(v.csrf);
                                            input type="hidden" name="session" value=(s.meta.public_id);
                                            button.secondary type="submit" { "Sign out" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                form method="post" action="/account/sessions/end-all" {
                    input type="hidden" name="csrf" value=(v.csrf);
                    button type="submit" { "Sign out everywhere" }
                }
                p.muted { "Signing out everywhere ends every session, this one too." }
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

/// The dashboard: who you are and what you may open where; each operation comes with whether
/// its example's quick link is shown.
pub fn dashboard(
    user: &User,
    csrf: &str,
    offers: &[(&Target, Vec<(&TargetOperation, bool)>)],
) -> Markup {
    layout(
        "Dashboard",
        Some((user, csrf)),
        html! {
            h1 { "Welcome, " (user.name) }
            @if user.email.is_some() && !user.email_verified {
                p.notice role="status" {
                    "Verify your e-mail address to open partner links: open the link we sent, or "
                    a href="/account" { "send it again from your account page" } "."
                }
            }
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
                            @for (op, quick) in ops {
                                li {
                                    @if let (true, Some(example)) = (*quick, &op.example) {
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
    user: &User,
    action: &str,
    approval: &str,
) -> Markup {
    let who = match &user.display_name {
        Some(name) => format!("{name} ({})", user.name),
        None => user.name.to_string(),
    };
    layout(
        "Continue?",
        None,
        html! {
            div.card {
                h1 { "Open " (op.title) " in " (target.name) "?" }
                p { "This will sign you in to " strong { (target.name) } " as " strong { (who) }
                    " to " strong { (op.title) } " " (args) "." }
                p { "You did not start this from the portal: a link, another site or a sign-in brought you here. Continue only if you meant to." }
                form method="post" action=(action) {
                    input type="hidden" name="approval" value=(approval);
                    button type="submit" { "Continue to " (target.name) }
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
        let example = include_str!("../../targets.example.toml");
        // The first partner only: the second names secret files.
        let example = example[..example.find("\n[[target]]\nid = \"desk\"").expect("desk")]
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
            email: None,
            email_verified: true,
            disabled: false,
            display_name: Some("<img src=x onerror=alert(1)>".into()),
        };
        let offers = vec![(target, target.operations.iter().map(|op| (op, true)).collect())];
        let html = dashboard(&user, "csrf\"><x", &offers).into_string();
        assert!(!html.contains("<script>alert(1)</script>"));
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt; &amp; Co"));
        assert!(!html.contains("<b>now</b>") && html.contains("&lt;b&gt;now&lt;/b&gt;"));
        assert!(!html.contains("csrf\"><x"), "attribute values are escaped too");
        let quick = "href=\"/handoff/partner/report.view?report_id=42\"";
        assert!(html.contains(quick), "the example's quick link");
        // An example the user may not open: its operation stays, its quick link goes.
        let offers = vec![(target, target.operations.iter().map(|op| (op, false)).collect())];
        let html = dashboard(&user, "c", &offers).into_string();
        assert!(!html.contains(quick) && html.contains("action=\"/handoff/partner/report.view\""));
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
