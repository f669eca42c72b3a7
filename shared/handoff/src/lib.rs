//! `handoff`: the protocol, everything SERVER1 and SERVER2 must agree on. It knows no server
//! and no web framework, so a partner can embed it to verify handoffs in their own service.
//!
//! - [`keys`]: Ed25519 signing keys, JWK, JWKS and RFC 7638 key ids;
//! - [`crypto`]: the ring-backed crypto provider for jsonwebtoken;
//! - [`values`] and [`operation`]: the validated values a token carries;
//! - [`mint`] and [`verify`]: the handoff token profile, both ways;
//! - [`replay`]: single use;
//! - [`grant`]: a relying party's operation cookie;
//! - [`protocol`]: the constants both sides share (paths, cache times, reserved parameters);
//! - [`time`]: the clock.
#![forbid(unsafe_code)]

pub mod access;
pub mod client_auth;
mod codes;
pub mod crypto;
pub mod ed25519;
pub mod grant;
pub mod keys;
pub mod logout;
pub mod mint;
pub mod operation;
pub mod protocol;
pub mod replay;
pub mod revocation;
pub mod secret;
pub mod time;
pub mod token;
pub mod values;
pub mod verify;

pub use keys::{Alg, Jwks, KeySet, Kid, PublicJwk, SigningKey};
pub use mint::{MintRequest, MintedToken, Minter};
pub use operation::{ArgName, ArgRule, ArgSpec, Catalog, Operation, OperationSpec, OperationType};
pub use replay::{Freshness, MemoryReplayStore, ReplayStore, ReplayStoreError};
pub use secret::SharedSecret;
pub use time::{Clock, ManualClock, SystemClock, UnixTime};
pub use values::{Audience, Issuer, Jti, Leeway, Nonce, SessionRef, Subject, Ttl, ValueError};
pub use verify::{Inspected, Rejection, VerifiedHandoff, Verifier, VerifierSettings};
