//! Integration tests: both servers, driven over real HTTP.
#![allow(clippy::unwrap_used)]

mod binaries;
mod flow;
mod rejections;
