//! SERVER2's pages, rendered with maud (every interpolated value is escaped).

use maud::{html, Markup, DOCTYPE};
use poem::http::StatusCode;
use poem::Response;

/// The Content-Security-Policy of every page.
pub const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
     frame-ancestors 'none'; base-uri 'none'";

/// A complete HTML response.
pub fn html_response(status: StatusCode, body: Markup) -> Response {
    handoff::web::html(status, body.into_string())
}

/// The page frame.
pub fn layout(title: &str, content: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Partner Analytics" }
                link rel="stylesheet" href="/static/style.css";
            }
            body {
                header.bar { span.brand { "Partner Analytics" } }
                main { (content) }
            }
        }
    }
}

/// A message with a way forward.
pub fn message(title: &str, text: &str, link: Option<(&str, &str)>) -> Markup {
    layout(
        title,
        html! {
            div.card {
                h1 { (title) }
                p { (text) }
                @if let Some((href, label)) = link {
                    p { a.button href=(href) { (label) } }
                }
            }
        },
    )
}
