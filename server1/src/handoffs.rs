//! Handoffs: which operations a user may open on which target, and minting the token for one.
//! The web handler (`/handoff/{target}/{operation}`) and the `server1 mint` command both come
//! here; nothing in this module knows HTTP.

use handoff::{Kid, MintRequest, MintedToken, Nonce, Operation, SessionRef, Ttl, UnixTime};

use crate::db::User;
use crate::names::Role;
use crate::signing::Keys;
use crate::targets::{Target, TargetOperation, Targets};

/// Why a handoff cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum HandoffError {
    /// No target with that id.
    #[error("no target {0:?}")]
    NoSuchTarget(String),
    /// The target offers no operation of that type.
    #[error("target {target:?} has no operation {operation:?}")]
    NoSuchOperation {
        /// The target.
        target: String,
        /// The type asked for.
        operation: String,
    },
    /// The user lacks the role the operation needs.
    #[error("missing role {0}")]
    MissingRole(Role),
    /// The arguments break the operation's rules; the text names the argument, never its
    /// value.
    #[error("{0}")]
    BadArguments(String),
    /// Signing failed (not expected).
    #[error("cannot mint: {0}")]
    Mint(String),
}

/// An operation a user may open on a target, its arguments checked.
#[derive(Debug)]
pub struct Authorized<'a> {
    /// Where.
    pub target: &'a Target,
    /// What the target offers.
    pub offered: &'a TargetOperation,
    /// The operation with its arguments.
    pub operation: Operation,
}

impl Authorized<'_> {
    /// The arguments as a person reads them: `report_id 42, format pdf`.
    pub fn shown_args(&self) -> String {
        self.operation.args().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ")
    }
}

/// A minted token and what the audit log says of it.
#[derive(Debug)]
pub struct Minted {
    /// The token.
    pub token: MintedToken,
    /// The key that signed it.
    pub kid: Kid,
    /// Its lifetime.
    pub ttl: Ttl,
}

/// The handoffs service.
#[derive(Debug)]
pub struct Handoffs {
    targets: Targets,
    keys: Keys,
}

impl Handoffs {
    /// Handoffs to `targets`, signed with `keys`.
    pub fn new(targets: Targets, keys: Keys) -> Self {
        Self { targets, keys }
    }

    /// The signing keys.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// The targets.
    pub fn targets(&self) -> &Targets {
        &self.targets
    }

    /// Every target with the operations `user` may open there, in file order.
    pub fn offers(&self, user: &User) -> Vec<(&Target, Vec<&TargetOperation>)> {
        let may = |op: &&TargetOperation| user.has_role(&op.role);
        self.targets.iter().map(|t| (t, t.operations.iter().filter(may).collect())).collect()
    }

    /// The target and operation, if they exist, without checking the user or arguments.
    ///
    /// # Errors
    ///
    /// [`HandoffError::NoSuchTarget`] or [`HandoffError::NoSuchOperation`].
    pub fn find(
        &self,
        target: &str,
        operation: &str,
    ) -> Result<(&Target, &TargetOperation), HandoffError> {
        let t =
            self.targets.get(target).ok_or_else(|| HandoffError::NoSuchTarget(target.into()))?;
        let op = t.operation(operation).ok_or_else(|| HandoffError::NoSuchOperation {
            target: t.id.to_string(),
            operation: operation.into(),
        })?;
        Ok((t, op))
    }

    /// The target and operation, if they exist and `user` has the role the operation needs.
    ///
    /// # Errors
    ///
    /// No such target or operation, or a missing role.
    pub fn permit(
        &self,
        user: &User,
        target: &str,
        operation: &str,
    ) -> Result<(&Target, &TargetOperation), HandoffError> {
        let (target, offered) = self.find(target, operation)?;
        if !user.has_role(&offered.role) {
            return Err(HandoffError::MissingRole(offered.role.clone()));
        }
        Ok((target, offered))
    }

    /// Checks that `user` may open `operation` on `target` with `args`.
    ///
    /// # Errors
    ///
    /// No such target or operation, a missing role, or arguments that break the rules.
    pub fn authorize<'a, 'v>(
        &self,
        user: &User,
        target: &str,
        operation: &str,
        args: impl IntoIterator<Item = (&'v str, &'v str)>,
    ) -> Result<Authorized<'_>, HandoffError> {
        let (target, offered) = self.permit(user, target, operation)?;
        let operation =
            offered.spec.build(args).map_err(|e| HandoffError::BadArguments(e.to_string()))?;
        Ok(Authorized { target, offered, operation })
    }

    /// Mints the token for `authorized`, for `user`, with the session reference and browser
    /// binding given, signed by the key active at `now`.
    ///
    /// # Errors
    ///
    /// [`HandoffError::Mint`] when signing fails.
    pub fn mint(
        &self,
        user: &User,
        authorized: &Authorized<'_>,
        sid: Option<&SessionRef>,
        nonce: Option<&Nonce>,
        now: UnixTime,
    ) -> Result<Minted, HandoffError> {
        let request = MintRequest {
            audience: &authorized.target.audience,
            subject: &user.id,
            operation: &authorized.operation,
            sid,
            nonce,
        };
        let keys = self.keys.current(now);
        let minter = keys.minter(now);
        let token = minter.mint(&request, now).map_err(|e| HandoffError::Mint(e.to_string()))?;
        Ok(Minted { token, kid: minter.kid().clone(), ttl: minter.ttl() })
    }
}
