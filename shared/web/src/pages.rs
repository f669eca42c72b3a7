//! The page frame, message pages and the error pages both servers show, rendered with maud
//! (which escapes every interpolated value). Each server brings its own name and stylesheet.

use maud::{html, Markup, DOCTYPE};
use poem::http::StatusCode;
use poem::Response;

/// A complete HTML response.
pub fn html_response(status: StatusCode, body: Markup) -> Response {
    crate::respond::html(status, body.into_string())
}

/// How a server's pages look: its name, shown in the bar and in every title.
#[derive(Debug, Clone, Copy)]
pub struct Brand {
    /// The site's name, e.g. "Handoff Portal".
    pub name: &'static str,
}

impl Brand {
    /// The page frame: `/static/style.css`, the bar with the site's name and `bar_extra` (a
    /// sign-out form, say), then `content`.
    pub fn layout(&self, title: &str, bar_extra: Option<Markup>, content: Markup) -> Markup {
        self.page(title, None, bar_extra, content)
    }

    /// As [`Brand::layout`], with `head_extra` early in the head (before the title and
    /// stylesheet: a referrer policy, a script).
    pub fn page(
        &self,
        title: &str,
        head_extra: Option<Markup>,
        bar_extra: Option<Markup>,
        content: Markup,
    ) -> Markup {
        html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    meta name="viewport" content="width=device-width, initial-scale=1";
                    @if let Some(extra) = head_extra { (extra) }
                    title { (title) " · " (self.name) }
                    link rel="stylesheet" href="/static/style.css";
                }
                body {
                    header.bar {
                        span.brand { (self.name) }
                        @if let Some(extra) = bar_extra { (extra) }
                    }
                    main { (content) }
                }
            }
        }
    }

    /// A message with a heading and, when given, a way forward (`(href, label)`).
    pub fn message(&self, title: &str, text: &str, link: Option<(&str, &str)>) -> Markup {
        self.layout(
            title,
            None,
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
}

/// What a status produced outside any handler (routing, extractors, the request guard's limits)
/// says to a person. Each server turns it into its own error type, so that such pages and its
/// handlers' errors are rendered in one place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusClass {
    /// 404 or 405: nothing here.
    NotFound,
    /// 413, 414 or 431: a limit was broken.
    TooLarge(StatusCode),
    /// Any 5xx.
    ServerError(StatusCode),
    /// Anything else: the request could not be understood. The status is the original one
    /// when it is a client error (415 for a body that is not a form, say), 400 otherwise.
    BadRequest(StatusCode),
}

impl StatusClass {
    /// The class of `status`.
    pub fn of(status: StatusCode) -> Self {
        match status {
            StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED => Self::NotFound,
            StatusCode::PAYLOAD_TOO_LARGE
            | StatusCode::URI_TOO_LONG
            | StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => Self::TooLarge(status),
            s if s.is_server_error() => Self::ServerError(s),
            s if s.is_client_error() => Self::BadRequest(s),
            _ => Self::BadRequest(StatusCode::BAD_REQUEST),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classed() {
        assert_eq!(StatusClass::of(StatusCode::METHOD_NOT_ALLOWED), StatusClass::NotFound);
        assert_eq!(
            StatusClass::of(StatusCode::URI_TOO_LONG),
            StatusClass::TooLarge(StatusCode::URI_TOO_LONG)
        );
        assert_eq!(
            StatusClass::of(StatusCode::BAD_GATEWAY),
            StatusClass::ServerError(StatusCode::BAD_GATEWAY)
        );
        assert_eq!(
            StatusClass::of(StatusCode::LENGTH_REQUIRED),
            StatusClass::BadRequest(StatusCode::LENGTH_REQUIRED)
        );
        assert_eq!(
            StatusClass::of(StatusCode::OK),
            StatusClass::BadRequest(StatusCode::BAD_REQUEST)
        );
    }

    #[test]
    fn pages_escape_and_carry_the_brand() {
        let page = Brand { name: "Site" }
            .message("<t>", "a & b", Some(("/x?a=1&b=2", "Go")))
            .into_string();
        assert!(page.contains("&lt;t&gt; · Site") && page.contains("a &amp; b"), "{page}");
        assert!(page.contains("href=\"/x?a=1&amp;b=2\""), "{page}");
    }
}
