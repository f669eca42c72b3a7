//! Why SERVER2 refused a handoff: the protocol's verification reasons ([`Rejection`], from the
//! `handoff` crate) or this server's own policy ([`Policy`]: browser binding, single use, the
//! replay store). Both lists are kept by the compiler ([`handoff::coded_enum!`]), and so is the
//! table of every refusal built from them ([`Refusal::all`]).

use handoff::Rejection;

handoff::coded_enum! {
    /// SERVER2's policy reasons, checked once the token itself has passed verification.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Policy {
        /// The browser-binding nonce does not match this browser's nonce cookie.
        NonceMismatch = "nonce_mismatch",
        /// The token carries no browser binding and this server accepts only bound handoffs.
        UnboundRefused = "unbound_refused",
        /// Issued before the replay store started: it cannot know whether the token was used.
        IssuedBeforeStart = "issued_before_start",
        /// The `jti` was seen before.
        Replayed = "replayed",
        /// The replay store cannot take the entry (full, or unreachable): fail closed.
        ReplayStoreUnavailable = "replay_store_unavailable",
        /// The session the token came from ended on the issuer (a back-channel logout).
        SessionEnded = "session_ended",
    }
}

/// Why a handoff was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The token failed verification.
    Token(Rejection),
    /// The token is valid, and this server's policy refuses it.
    Policy(Policy),
}

impl From<Rejection> for Refusal {
    fn from(r: Rejection) -> Self {
        Self::Token(r)
    }
}

impl From<Policy> for Refusal {
    fn from(p: Policy) -> Self {
        Self::Policy(p)
    }
}

impl Refusal {
    /// Every refusal: the verifier's reasons, then the policy's, in [`Refusal::index`] order.
    pub fn all() -> impl Iterator<Item = Refusal> {
        let token = Rejection::ALL.iter().copied().map(Self::Token);
        token.chain(Policy::ALL.iter().copied().map(Self::Policy))
    }

    /// How many refusals there are.
    pub const COUNT: usize = Rejection::ALL.len() + Policy::ALL.len();

    /// The stable reason code, for logs and metrics.
    pub const fn code(&self) -> &'static str {
        match self {
            Self::Token(r) => r.code(),
            Self::Policy(p) => p.code(),
        }
    }

    /// This refusal's place in [`Refusal::all`], for tables built once per reason.
    pub const fn index(&self) -> usize {
        match self {
            Self::Token(r) => r.index(),
            Self::Policy(p) => Rejection::ALL.len() + p.index(),
        }
    }

    /// True when the fault is on this side (keys or replay store unavailable), not the token's.
    pub const fn is_server_side(&self) -> bool {
        match self {
            Self::Token(r) => r.is_server_side(),
            Self::Policy(p) => matches!(p, Policy::ReplayStoreUnavailable),
        }
    }

    /// True when the refusal came before the signature held (anyone can cause it at will).
    pub const fn is_unsigned(&self) -> bool {
        match self {
            Self::Token(r) => r.is_unsigned(),
            Self::Policy(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_has_one_place_per_refusal_and_distinct_codes() {
        let all: Vec<Refusal> = Refusal::all().collect();
        assert_eq!(all.len(), Refusal::COUNT);
        for (i, r) in all.iter().enumerate() {
            assert_eq!(r.index(), i, "{r:?}");
        }
        let codes: std::collections::HashSet<_> = all.iter().map(Refusal::code).collect();
        assert_eq!(codes.len(), all.len());
        assert!(Refusal::from(Policy::ReplayStoreUnavailable).is_server_side());
        assert!(Refusal::from(Rejection::KeysUnavailable).is_server_side());
        assert!(!Refusal::from(Policy::Replayed).is_unsigned());
    }
}
