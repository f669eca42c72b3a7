//! Handoffs: which operations a user may open on which target, and minting the token for one.
//! The web handler (`/handoff/{target}/{operation}`) and the `server1 mint` command both come
//! here; nothing in this module knows HTTP.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, OnceLock};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use handoff::logout::Ended;
use handoff::mint::MintKey;
use handoff::token::Profile;
use handoff::{
    Jti, Kid, MintRequest, MintedToken, Minter, Nonce, Operation, SessionRef, Subject, Ttl,
    UnixTime,
};
use ring::hmac;

use crate::db::User;
use crate::names::Role;
use crate::signing::Keys;
use crate::targets::{Signing, SubjectKind, Target, TargetOperation, Targets};

/// How many (target, subject) pairs a process remembers having recorded, so that a user's
/// repeated handoffs write the database once; forgotten all at once when full.
const RECORDED_CAPACITY: usize = 100_000;

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
    /// The user holds no entitlement to this value of the argument.
    #[error("not entitled to this {arg}")]
    NotEntitled {
        /// The argument's name.
        arg: String,
    },
    /// The entitlements could not be read.
    #[error("database: {0}")]
    Db(#[from] crate::db::DbError),
    /// Signing failed (not expected).
    #[error("cannot mint: {0}")]
    Mint(String),
    /// The pairwise-subject secret is not loaded (a bug: it is loaded with the database).
    #[error("the pairwise-subject secret is not loaded")]
    NoPairwiseSecret,
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
    /// The key that signed it (none for a shared secret).
    pub kid: Option<Kid>,
    /// Its lifetime.
    pub ttl: Ttl,
    /// The user's id as the target sees it.
    pub subject: Subject,
}

/// The handoffs service.
#[derive(Debug)]
pub struct Handoffs {
    targets: Targets,
    keys: Keys,
    /// A minter per target that signs with a shared secret, by target id.
    shared: HashMap<String, Minter>,
    /// The key pairwise subjects are derived with; set once the database is open.
    pairwise: OnceLock<hmac::Key>,
    recorded: Mutex<HashSet<(String, Subject)>>,
}

impl Handoffs {
    /// Handoffs to `targets`, signed with `keys` (or each target's shared secret).
    pub fn new(targets: Targets, keys: Keys) -> Self {
        let shared = targets
            .iter()
            .filter_map(|t| match &t.signing {
                Signing::Hs256(secret) => {
                    let ttl = t.lifetime.unwrap_or(keys.ttl());
                    let minter =
                        Minter::new(MintKey::Hs256(secret.clone()), keys.issuer().clone(), ttl);
                    Some((t.id.as_str().to_owned(), minter))
                }
                Signing::EdDsa => None,
            })
            .collect();
        Self {
            targets,
            keys,
            shared,
            pairwise: OnceLock::new(),
            recorded: Mutex::new(HashSet::new()),
        }
    }

    /// Sets the secret pairwise subjects are derived from (the database's `pairwise` secret,
    /// the same on every replica). Only the first call counts.
    pub fn set_pairwise_secret(&self, secret: &[u8]) {
        let _ = self.pairwise.set(hmac::Key::new(hmac::HMAC_SHA256, secret));
    }

    /// A pairwise value: the first 24 bytes of an HMAC of `kind`, the target's audience and
    /// `value`, base64url.
    fn pairwise(&self, kind: &str, target: &Target, value: &str) -> Result<String, HandoffError> {
        let key = self.pairwise.get().ok_or(HandoffError::NoPairwiseSecret)?;
        let mut context = hmac::Context::with_key(key);
        for part in [kind, target.audience.as_str(), value] {
            context.update(part.as_bytes());
            context.update(&[0]);
        }
        let tag = context.sign();
        Ok(URL_SAFE_NO_PAD.encode(&tag.as_ref()[..24]))
    }

    /// The id `target` knows `user` by: theirs for a public target, else a pairwise one,
    /// stable per (partner, user) and unrelated across partners.
    ///
    /// # Errors
    ///
    /// [`HandoffError::NoPairwiseSecret`].
    pub fn subject_for(&self, target: &Target, user: &Subject) -> Result<Subject, HandoffError> {
        match target.subject {
            SubjectKind::Public => Ok(user.clone()),
            SubjectKind::Pairwise => {
                let derived = format!("p{}", self.pairwise("sub", target, user.as_str())?);
                Subject::parse(&derived).map_err(|e| HandoffError::Mint(e.to_string()))
            }
        }
    }

    /// The session reference `target` sees: a pairwise one for a pairwise target, so two
    /// partners cannot match their users by a shared session id either.
    ///
    /// # Errors
    ///
    /// [`HandoffError::NoPairwiseSecret`].
    pub fn sid_for(&self, target: &Target, sid: &SessionRef) -> Result<SessionRef, HandoffError> {
        match target.subject {
            SubjectKind::Public => Ok(sid.clone()),
            SubjectKind::Pairwise => {
                SessionRef::parse(&self.pairwise("sid", target, sid.as_str())?)
                    .map_err(|e| HandoffError::Mint(e.to_string()))
            }
        }
    }

    /// The profile claims `target` receives about `user`: only those its policy lists, and of
    /// those only the ones the user has.
    pub fn profile_for(&self, target: &Target, user: &User) -> Profile {
        let listed = target.claims;
        Profile {
            name: user.display_name.clone().filter(|_| listed.name),
            email: user.email.as_ref().filter(|_| listed.email).map(|e| e.as_str().to_owned()),
            email_verified: user
                .email
                .as_ref()
                .filter(|_| listed.email_verified)
                .map(|_| user.email_verified),
            groups: listed
                .groups
                .then(|| user.roles.iter().map(|r| r.as_str().to_owned()).collect()),
        }
    }

    /// True the first time this process sees (`target`, `subject`): the caller then records
    /// the pair in the database for the partner API.
    pub fn first_sighting(&self, target: &Target, subject: &Subject) -> bool {
        let mut seen = self.recorded.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if seen.len() >= RECORDED_CAPACITY {
            seen.clear();
        }
        seen.insert((target.id.as_str().to_owned(), subject.clone()))
    }

    /// Forgets a sighting whose recording failed, so the next handoff tries again.
    pub fn forget_sighting(&self, target: &Target, subject: &Subject) {
        let mut seen = self.recorded.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        seen.remove(&(target.id.as_str().to_owned(), subject.clone()));
    }

    /// Mints the back-channel logout token telling `target` that `user`'s session `sid` (or
    /// all of them) ended, signed as its handoffs are and naming the user as it knows them.
    ///
    /// # Errors
    ///
    /// When signing fails or the pairwise secret is missing.
    pub fn mint_logout(
        &self,
        target: &Target,
        user: Option<&Subject>,
        sid: Option<&SessionRef>,
        now: UnixTime,
    ) -> Result<(String, Jti), HandoffError> {
        let ended = Ended {
            sub: user.map(|u| self.subject_for(target, u)).transpose()?,
            sid: sid.map(|s| self.sid_for(target, s)).transpose()?,
        };
        let mint = |minter: &Minter| {
            minter
                .mint_logout(&target.audience, &ended, now)
                .map_err(|e| HandoffError::Mint(e.to_string()))
        };
        match self.shared.get(target.id.as_str()) {
            Some(minter) => mint(minter),
            None => mint(self.keys.current(now).minter(now)),
        }
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
        for narrowed in &offered.narrowed {
            let Some(value) = operation.arg(narrowed.name.as_str()) else { continue };
            if !narrowed.matches(value) {
                return Err(HandoffError::BadArguments(format!(
                    "argument {} is not one this partner takes",
                    narrowed.name
                )));
            }
        }
        Ok(Authorized { target, offered, operation })
    }

    /// Checks that `user` holds an entitlement to each value of `authorized` whose argument
    /// the targets file marks `entitled`.
    ///
    /// # Errors
    ///
    /// [`HandoffError::NotEntitled`], or [`HandoffError::Db`] (fail closed).
    pub async fn check_entitlements(
        &self,
        db: &crate::db::Db,
        user: &User,
        authorized: &Authorized<'_>,
    ) -> Result<(), HandoffError> {
        for narrowed in authorized.offered.narrowed.iter().filter(|n| n.entitled) {
            let Some(value) = authorized.operation.arg(narrowed.name.as_str()) else { continue };
            let wanted = crate::db::Entitlement {
                user: user.id.clone(),
                target: authorized.target.id.as_str().to_owned(),
                operation: authorized.operation.kind().as_str().to_owned(),
                arg: narrowed.name.as_str().to_owned(),
                value: value.to_owned(),
            };
            if !db.is_entitled(&wanted).await? {
                return Err(HandoffError::NotEntitled { arg: wanted.arg });
            }
        }
        Ok(())
    }

    /// Whether `user` may open `offered`'s example on `target`: they hold the entitlements its
    /// arguments need (the targets file already refuses an example off its rules or patterns,
    /// and [`Self::offers`] the operations the user lacks the role for). The dashboard shows
    /// the quick link only then.
    ///
    /// # Errors
    ///
    /// [`HandoffError::Db`] when the entitlements cannot be read.
    pub async fn example_opens(
        &self,
        db: &crate::db::Db,
        user: &User,
        target: &Target,
        offered: &TargetOperation,
    ) -> Result<bool, HandoffError> {
        let Some(example) = &offered.example else { return Ok(false) };
        let args = example.iter().map(|(k, v)| (k.as_str(), v.as_str()));
        // Cannot fail for an example the targets file took; if it did, no link.
        let Ok(authorized) =
            self.authorize(user, target.id.as_str(), offered.spec.kind().as_str(), args)
        else {
            return Ok(false);
        };
        match self.check_entitlements(db, user, &authorized).await {
            Ok(()) => Ok(true),
            Err(HandoffError::NotEntitled { .. }) => Ok(false),
            Err(e) => Err(e),
        }
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
        let target = authorized.target;
        let subject = self.subject_for(target, &user.id)?;
        let sid = sid.map(|s| self.sid_for(target, s)).transpose()?;
        let profile = self.profile_for(target, user);
        let request = MintRequest {
            audience: &target.audience,
            subject: &subject,
            operation: &authorized.operation,
            sid: sid.as_ref(),
            nonce,
            profile: (!profile.is_empty()).then_some(&profile),
            lifetime: target.lifetime,
        };
        let keys;
        let minter = match self.shared.get(target.id.as_str()) {
            Some(minter) => minter,
            None => {
                keys = self.keys.current(now);
                keys.minter(now)
            }
        };
        let token = minter.mint(&request, now).map_err(|e| HandoffError::Mint(e.to_string()))?;
        let ttl = target.lifetime.unwrap_or(minter.ttl());
        Ok(Minted { token, kid: minter.kid().cloned(), ttl, subject })
    }
}
