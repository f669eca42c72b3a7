//! Integration tests: both servers, driven over real HTTP.
#![allow(clippy::unwrap_used)]

mod accounts;
mod attacks;
mod binaries;
mod browser;
mod browser_binding;
mod entitlements;
mod faults;
mod flow;
mod logout;
mod oauth;
mod partners;
mod postgres;
mod proxies;
mod rejections;
mod replay_redis;
mod rotation;
