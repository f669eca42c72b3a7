//! How SERVER2's pages look; the frame itself is `handoff-web`'s.

pub use handoff_web::pages::html_response;
use handoff_web::Brand;

/// The site's name on every page.
pub const BRAND: Brand = Brand { name: "Partner Analytics" };

/// The Content-Security-Policy of every page.
pub const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
     frame-ancestors 'none'; base-uri 'none'";
