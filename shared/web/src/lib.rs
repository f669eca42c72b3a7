//! `handoff-web`: what both servers share as web services, kept out of the protocol crate so a
//! partner embedding `handoff` pulls in no web framework.
//!
//! - [`app`]: the server skeleton (routes, health, readiness, metrics, error pages, graceful
//!   shutdown);
//! - [`guard`]: request limits, security headers, latency by route, the request log line;
//! - [`cookies`]: cookie names, attributes and anti-forgery tokens;
//! - [`pages`] and [`respond`]: the page frame and small responses;
//! - [`config`] and [`env`]: configuration rules and reading the environment;
//! - [`client`]: the client's address behind trusted proxies;
//! - [`net`]: the listener and the shutdown signal;
//! - [`telemetry`]: log set-up, batched writing, log budgets.
#![forbid(unsafe_code)]

pub mod app;
pub mod client;
pub mod config;
pub mod cookies;
pub mod env;
pub mod guard;
pub mod main_support;
pub mod net;
pub mod pages;
pub mod respond;
pub mod telemetry;

pub use app::{App, BuildError, ErrorPage, Routes, Service, Settings};
pub use client::TrustedProxies;
pub use cookies::{CookieName, CookieSecurity, Csrf, Jar, SameSite};
pub use guard::{Hardening, Limits, RefusalNote};
pub use pages::{Brand, StatusClass};
pub use respond::see_other;

/// `Debug` for a form that carries secrets (passwords, tokens): its name and only the fields
/// listed, so a form in a log line or an error never shows the rest.
///
/// ```
/// struct LoginForm { username: String, password: String }
/// handoff_web::redacted_debug!(LoginForm: username);
/// let form = LoginForm { username: "alice".into(), password: "s3cret".into() };
/// assert_eq!(format!("{form:?}"), r#"LoginForm { username: "alice", .. }"#);
/// ```
#[macro_export]
macro_rules! redacted_debug {
    ($type:ident $(: $($field:ident),+)?) => {
        impl ::std::fmt::Debug for $type {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.debug_struct(stringify!($type))
                    $($(.field(stringify!($field), &self.$field))+)?
                    .finish_non_exhaustive()
            }
        }
    };
}
