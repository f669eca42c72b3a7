//! Verifying handoff tokens (SERVER2's side), in the order DESIGN.md fixes: cheap checks first,
//! the signature before any claim is believed, the replay store last.
//!
//! 1. [`Verifier::inspect`]: size cap, shape (three base64url segments), header members, `typ`,
//!    `alg` against the pinned algorithm (never taken from the token), `kid` present.
//! 2. The caller looks the `kid` up (and may refresh its key set once).
//! 3. [`Verifier::verify`]: signature, then `iss`, `aud`, `exp`/`nbf`/`iat` with the leeway,
//!    lifetime, and the operation against the catalog.
//! 4. The caller records the `jti` in its [`crate::replay::ReplayStore`].

use std::fmt;
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::{DecodeSliceError, Engine as _};
use jsonwebtoken::errors::ErrorKind;

use crate::ed25519::{self, Check, SignatureChecker};
use crate::keys::{is_base64url_byte, Alg, KeySet, Kid, VerificationKey};
use crate::operation::{Catalog, Operation, OperationError};
use crate::time::UnixTime;
use crate::token::{ClaimsIn, HeaderIn, Profile, HANDOFF_TYP, MAX_TOKEN_LEN};
use crate::values::{Audience, Issuer, Jti, Leeway, Nonce, SessionRef, Subject, Ttl};

crate::coded_enum! {
    /// Why a token was refused: the protocol's own reasons, each with a stable code for logs and
    /// metrics. A relying party adds its policy's reasons (browser binding, single use) on top.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
    pub enum Rejection {
        /// Over [`MAX_TOKEN_LEN`] bytes.
        #[error("token too large")]
        TooLarge = "token_too_large",
        /// Not three base64url segments.
        #[error("malformed token")]
        Malformed = "malformed",
        /// The header is not JSON, or has members this profile does not allow.
        #[error("malformed or unsupported header")]
        BadHeader = "bad_header",
        /// `typ` is not `handoff+jwt`.
        #[error("wrong token type")]
        WrongType = "wrong_type",
        /// `alg` is not the pinned algorithm.
        #[error("wrong algorithm")]
        WrongAlgorithm = "wrong_algorithm",
        /// No `kid` in the header.
        #[error("missing key id")]
        MissingKid = "missing_kid",
        /// The `kid` names no key of the issuer.
        #[error("unknown key id")]
        UnknownKid = "unknown_kid",
        /// The token claims an issuer this party does not trust (when it trusts several).
        #[error("unknown issuer")]
        UnknownIssuer = "unknown_issuer",
        /// The issuer's keys are not available (never loaded).
        #[error("issuer keys unavailable")]
        KeysUnavailable = "keys_unavailable",
        /// The signature does not verify.
        #[error("bad signature")]
        BadSignature = "bad_signature",
        /// The claims are not the profile's (missing, duplicated, unknown or mistyped claims).
        #[error("malformed claims")]
        MalformedClaims = "malformed_claims",
        /// `iss` is not the configured issuer.
        #[error("wrong issuer")]
        WrongIssuer = "wrong_issuer",
        /// `aud` is not this party.
        #[error("wrong audience")]
        WrongAudience = "wrong_audience",
        /// `exp` has passed.
        #[error("expired")]
        Expired = "expired",
        /// `nbf` is in the future.
        #[error("not yet valid")]
        NotYetValid = "not_yet_valid",
        /// `iat` is in the future.
        #[error("issued in the future")]
        IssuedInFuture = "issued_in_future",
        /// `exp - iat` exceeds the configured maximum.
        #[error("lifetime too long")]
        LifetimeTooLong = "lifetime_too_long",
        /// The operation type is not in the catalog.
        #[error("unknown operation")]
        UnknownOperation = "unknown_operation",
        /// An operation argument is missing, unexpected or invalid.
        #[error("bad operation argument")]
        BadOperationArgument = "bad_operation_argument",
        /// A client token's `htm` or `htu` names another request than the one it came with.
        #[error("made for another request")]
        WrongRequest = "wrong_request",
    }
}

impl Rejection {
    /// True when the fault is on this side (the issuer's keys unavailable), not the token's.
    pub const fn is_server_side(&self) -> bool {
        matches!(self, Self::KeysUnavailable)
    }

    /// True when the same token may pass later, unchanged: the issuer's keys not loaded yet, a
    /// key newer than the ones fetched (just after a rotation), or the issuer's clock ahead. A
    /// sender that can retry (SERVER1's outbox) should; people are told to open the link
    /// again.
    pub const fn may_pass_later(&self) -> bool {
        matches!(
            self,
            Self::KeysUnavailable | Self::UnknownKid | Self::NotYetValid | Self::IssuedInFuture
        )
    }

    /// True when the refusal came before the signature held: anyone can cause it at will, with
    /// no key (the shape, the header, an unknown key, a wrong signature). Every other refusal is
    /// about a token the issuer really signed.
    pub const fn is_unsigned(&self) -> bool {
        matches!(
            self,
            Self::TooLarge
                | Self::Malformed
                | Self::BadHeader
                | Self::WrongType
                | Self::WrongAlgorithm
                | Self::MissingKid
                | Self::UnknownKid
                | Self::UnknownIssuer
                | Self::BadSignature
        )
    }
}

/// What the verifier is configured to accept.
#[derive(Debug, Clone)]
pub struct VerifierSettings {
    /// The one issuer accepted.
    pub issuer: Issuer,
    /// This party: the only `aud` accepted.
    pub audience: Audience,
    /// Clock-skew allowance for `exp`, `nbf` and `iat`.
    pub leeway: Leeway,
    /// Longest `exp - iat` accepted.
    pub max_lifetime: Ttl,
    /// The operations this party performs.
    pub catalog: Catalog,
    /// The issuer's algorithm, pinned: EdDSA with its JWKS, or HS256 with a shared secret.
    pub algorithm: Alg,
}

/// Verifies handoff tokens for one issuer and one audience.
#[derive(Debug)]
pub struct Verifier {
    settings: Arc<VerifierSettings>,
}

/// A token that passed [`Verifier::inspect`]: shape and header are right, signature unchecked.
#[derive(Debug)]
pub struct Inspected<'t> {
    token: &'t str,
    kid: Kid,
    alg: Alg,
}

impl Inspected<'_> {
    /// The key id the token names.
    pub fn kid(&self) -> &Kid {
        &self.kid
    }
}

/// A token that passed every check but the replay store. Only [`Verifier::verify`] makes one.
#[derive(Clone)]
pub struct VerifiedHandoff {
    claims: ClaimsIn,
    // The verifier's settings, whose issuer and audience the claims matched exactly.
    settings: Arc<VerifierSettings>,
    kid: Kid,
    replay_until: UnixTime,
}

impl VerifiedHandoff {
    /// The issuer.
    pub fn issuer(&self) -> &Issuer {
        &self.settings.issuer
    }
    /// The user.
    pub fn subject(&self) -> &Subject {
        &self.claims.sub
    }
    /// The audience (this party).
    pub fn audience(&self) -> &Audience {
        &self.settings.audience
    }
    /// The one authorized operation.
    pub fn operation(&self) -> &Operation {
        &self.claims.authorization_details
    }
    /// The token's unique id.
    pub fn jti(&self) -> Jti {
        self.claims.jti
    }
    /// When it was issued.
    pub fn issued_at(&self) -> UnixTime {
        self.claims.iat
    }
    /// When it expires.
    pub fn expires_at(&self) -> UnixTime {
        self.claims.exp
    }
    /// The issuer-side session, if given.
    pub fn sid(&self) -> Option<&SessionRef> {
        self.claims.sid.as_ref()
    }
    /// The browser-binding nonce, if given.
    pub fn nonce(&self) -> Option<&Nonce> {
        self.claims.nonce.as_ref()
    }
    /// The profile claims the token carries (none unless the issuer's policy for this party
    /// lists them).
    pub fn profile(&self) -> Profile {
        self.claims.profile()
    }
    /// The user's display name, if the token carries one.
    pub fn name(&self) -> Option<&str> {
        self.claims.name.as_deref()
    }
    /// The key that signed it.
    pub fn kid(&self) -> &Kid {
        &self.kid
    }
    /// Until when the replay store must remember the `jti`: the last moment the token could
    /// still pass the `exp` check, leeway included.
    pub fn replay_until(&self) -> UnixTime {
        self.replay_until
    }
}

impl fmt::Debug for VerifiedHandoff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifiedHandoff")
            .field("iss", &self.settings.issuer)
            .field("sub", &self.claims.sub)
            .field("operation", &self.claims.authorization_details)
            .field("jti", &self.claims.jti)
            .field("exp", &self.claims.exp)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// A verifier with these settings; the algorithm is the settings' (pinned: a token's header
    /// never chooses it).
    ///
    /// # Errors
    ///
    /// When a crypto provider other than ring's is installed in the process.
    pub fn new(settings: VerifierSettings) -> Result<Self, crate::crypto::ForeignProvider> {
        crate::crypto::install()?;
        Ok(Self { settings: Arc::new(settings) })
    }

    /// The settings.
    pub fn settings(&self) -> &VerifierSettings {
        &self.settings
    }

    /// Checks everything that can be checked without a key: size, shape and header.
    ///
    /// # Errors
    ///
    /// [`Rejection::TooLarge`], [`Rejection::Malformed`], [`Rejection::BadHeader`],
    /// [`Rejection::WrongType`], [`Rejection::WrongAlgorithm`], [`Rejection::MissingKid`] or
    /// [`Rejection::UnknownKid`] (a `kid` that cannot be a thumbprint).
    pub fn inspect<'t>(&self, token: &'t str) -> Result<Inspected<'t>, Rejection> {
        inspect_typed(token, HANDOFF_TYP, self.settings.algorithm)
    }

    /// Checks the signature with `key` and then every claim, at time `now`.
    ///
    /// # Errors
    ///
    /// The first check that fails, as a [`Rejection`].
    pub fn verify(
        &self,
        inspected: Inspected<'_>,
        key: &VerificationKey,
        now: UnixTime,
    ) -> Result<VerifiedHandoff, Rejection> {
        let json = signed_claims(&inspected, key)?;
        self.claims(inspected, &json, now)
    }

    /// [`Verifier::verify`] with the Ed25519 signature check handed to `checker`, which may
    /// check it together with others (a batch); everything else is as `verify` does it.
    ///
    /// # Errors
    ///
    /// The first check that fails, as a [`Rejection`].
    pub async fn verify_with_checker<C: SignatureChecker>(
        &self,
        inspected: Inspected<'_>,
        key: &VerificationKey,
        now: UnixTime,
        checker: &C,
    ) -> Result<VerifiedHandoff, Rejection> {
        let genuine = match signature_check(&inspected, key)? {
            Check::Decided(genuine) => genuine,
            Check::Pending(pending) => checker.check(pending).await,
        };
        let json = claims_json(&inspected, genuine)?;
        self.claims(inspected, &json, now)
    }

    /// Every claim check, in order, on the claims of a token whose signature held.
    fn claims(
        &self,
        inspected: Inspected<'_>,
        json: &[u8],
        now: UnixTime,
    ) -> Result<VerifiedHandoff, Rejection> {
        let claims: ClaimsIn =
            serde_json::from_slice(json).map_err(|_| Rejection::MalformedClaims)?;
        let s = &self.settings;
        if claims.iss != s.issuer.as_str() {
            return Err(Rejection::WrongIssuer);
        }
        if claims.aud != s.audience.as_str() {
            return Err(Rejection::WrongAudience);
        }
        let leeway = s.leeway.as_secs();
        // Accepted while now < exp + leeway (RFC 7519 §4.1.4: "on or after" exp is expired).
        if now >= claims.exp.plus(leeway) {
            return Err(Rejection::Expired);
        }
        if claims.nbf > now.plus(leeway) {
            return Err(Rejection::NotYetValid);
        }
        if claims.iat > now.plus(leeway) {
            return Err(Rejection::IssuedInFuture);
        }
        if claims.exp <= claims.iat || claims.nbf > claims.exp {
            return Err(Rejection::MalformedClaims);
        }
        if claims.exp.as_secs() - claims.iat.as_secs() > s.max_lifetime.as_secs() {
            return Err(Rejection::LifetimeTooLong);
        }
        let has_profile = claims.name.is_some()
            || claims.email.is_some()
            || claims.email_verified.is_some()
            || claims.groups.is_some();
        if has_profile && !claims.profile().is_valid() {
            return Err(Rejection::MalformedClaims);
        }
        s.catalog.check(&claims.authorization_details).map_err(|e| match e {
            OperationError::Unknown => Rejection::UnknownOperation,
            OperationError::WrongType | OperationError::BadArgument(_) => {
                Rejection::BadOperationArgument
            }
        })?;
        let replay_until = claims.exp.plus(leeway);
        Ok(VerifiedHandoff {
            claims,
            settings: Arc::clone(&self.settings),
            kid: inspected.kid,
            replay_until,
        })
    }

    /// [`Verifier::inspect`] then [`Verifier::verify`] with a key from `keys`: for callers with
    /// a fixed key set (tests, tools). A server with a refreshing key cache calls the two steps.
    ///
    /// # Errors
    ///
    /// As the two steps; [`Rejection::UnknownKid`] when `keys` lacks the key.
    pub fn verify_with(
        &self,
        token: &str,
        keys: &KeySet,
        now: UnixTime,
    ) -> Result<VerifiedHandoff, Rejection> {
        let inspected = self.inspect(token)?;
        let key = keys.get(inspected.kid().as_str()).ok_or(Rejection::UnknownKid)?;
        self.verify(inspected, key, now)
    }
}

/// Who a token of the issuer's other types (logout, access) must come from and be for, and
/// how long it may live: the checks they share, in the handoff's order.
#[derive(Debug, Clone)]
pub(crate) struct Window {
    pub issuer: Issuer,
    pub audience: Audience,
    pub leeway: Leeway,
    /// Longest `exp - iat`, in seconds.
    pub max_lifetime_secs: u64,
}

impl Window {
    /// `iss` and `aud` byte for byte, then the times at `now`; returns until when the token
    /// could still pass (`exp` plus the leeway: how long a replay store keeps its `jti`).
    pub fn check(
        &self,
        iss: &str,
        aud: &str,
        iat: UnixTime,
        exp: UnixTime,
        now: UnixTime,
    ) -> Result<UnixTime, Rejection> {
        if iss != self.issuer.as_str() {
            return Err(Rejection::WrongIssuer);
        }
        if aud != self.audience.as_str() {
            return Err(Rejection::WrongAudience);
        }
        let leeway = self.leeway.as_secs();
        if now >= exp.plus(leeway) {
            return Err(Rejection::Expired);
        }
        if iat > now.plus(leeway) {
            return Err(Rejection::IssuedInFuture);
        }
        if exp <= iat {
            return Err(Rejection::MalformedClaims);
        }
        if exp.as_secs() - iat.as_secs() > self.max_lifetime_secs {
            return Err(Rejection::LifetimeTooLong);
        }
        Ok(exp.plus(leeway))
    }
}

/// Checks what can be checked of a token of type `typ` without a key: size, shape and header
/// (its `typ`, the algorithm `alg` pinned for its issuer, a `kid` that can be a thumbprint for
/// EdDSA, nothing else). An HS256 token needs no `kid` (its issuer has one secret): one it
/// carries is read like any header member and otherwise not used.
pub(crate) fn inspect_typed<'t>(
    token: &'t str,
    typ: &str,
    alg: Alg,
) -> Result<Inspected<'t>, Rejection> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(Rejection::TooLarge);
    }
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Rejection::Malformed);
    };
    let segment_ok = |s: &str| !s.is_empty() && s.bytes().all(is_base64url_byte);
    if !(segment_ok(header) && segment_ok(payload) && segment_ok(signature)) {
        return Err(Rejection::Malformed);
    }
    let header_json = URL_SAFE_NO_PAD.decode(header).map_err(|_| Rejection::Malformed)?;
    if typ == HANDOFF_TYP {
        match alg {
            Alg::EdDsa => {
                if let Some(kid) = profile_header_kid(&header_json) {
                    let kid = Kid::parse(kid).map_err(|_| Rejection::UnknownKid)?;
                    return Ok(Inspected { token, kid, alg });
                }
            }
            Alg::Hs256 => {
                if header_json == br#"{"typ":"handoff+jwt","alg":"HS256"}"# {
                    return Ok(Inspected { token, kid: Kid::shared_secret(), alg });
                }
            }
        }
    }
    // serde would also read a struct from a JSON array; a header is an object or nothing.
    if header_json.trim_ascii_start().first() != Some(&b'{') {
        return Err(Rejection::BadHeader);
    }
    let header: HeaderIn =
        serde_json::from_slice(&header_json).map_err(|_| Rejection::BadHeader)?;
    if header.typ.as_deref() != Some(typ) {
        return Err(Rejection::WrongType);
    }
    if header.alg != alg.name() {
        return Err(Rejection::WrongAlgorithm);
    }
    let kid = match alg {
        Alg::EdDsa => {
            let kid = header.kid.ok_or(Rejection::MissingKid)?;
            Kid::parse(&kid).map_err(|_| Rejection::UnknownKid)?
        }
        Alg::Hs256 => Kid::shared_secret(),
    };
    Ok(Inspected { token, kid, alg })
}

/// Checks an inspected token's signature with `key` and returns its claims' JSON (an object,
/// not yet read). The header was checked by [`inspect_typed`] and is not parsed again, and the
/// claims are decoded once, straight into their strict types by the caller (jsonwebtoken's
/// `decode` would parse the header twice and the claims twice, and check times against the
/// wall clock).
pub(crate) fn signed_claims(
    inspected: &Inspected<'_>,
    key: &VerificationKey,
) -> Result<Vec<u8>, Rejection> {
    claims_json(inspected, signature_check(inspected, key)?.decide())
}

/// The first half of a signature check: what can be decided at once (a wrong key, a
/// malformed signature, an HMAC), or an Ed25519 check prepared for [`ed25519::Pending::check`]
/// or a batch.
pub(crate) fn signature_check(
    inspected: &Inspected<'_>,
    key: &VerificationKey,
) -> Result<Check, Rejection> {
    if key.kid() != &inspected.kid {
        return Err(Rejection::UnknownKid);
    }
    // The key's algorithm is the pinned one: a set never holds a key of another (this is
    // belt and braces; `inspect_typed` refused any other `alg`).
    if key.alg() != inspected.alg {
        return Err(Rejection::WrongAlgorithm);
    }
    let (message, signature) = inspected.token.rsplit_once('.').ok_or(Rejection::Malformed)?;
    if let Some(public) = key.ed25519() {
        // Room for a signature somewhat too long, which is a bad signature (as ring would
        // say), like one too short; text that is not base64url is malformed.
        let mut raw = [0u8; 96];
        return match URL_SAFE_NO_PAD.decode_slice(signature, &mut raw) {
            Ok(64) => Ok(ed25519::prepare(public, message.as_bytes(), &raw[..64])),
            Ok(_) | Err(DecodeSliceError::OutputSliceTooSmall) => Ok(Check::Decided(false)),
            Err(DecodeSliceError::DecodeError(_)) => Err(Rejection::Malformed),
        };
    }
    // HMAC keys (and anything else) through jsonwebtoken's crypto API, running on ring.
    let genuine = jsonwebtoken::crypto::verify(
        signature,
        message.as_bytes(),
        key.decoding(),
        key.alg().jwt(),
    )
    .map_err(|e| match e.kind() {
        ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm | ErrorKind::InvalidKeyFormat => {
            Rejection::WrongAlgorithm
        }
        _ => Rejection::Malformed,
    })?;
    Ok(Check::Decided(genuine))
}

/// The second half: the claims' JSON of a token whose signature check said `genuine`.
fn claims_json(inspected: &Inspected<'_>, genuine: bool) -> Result<Vec<u8>, Rejection> {
    if !genuine {
        return Err(Rejection::BadSignature);
    }
    let message = inspected.token.rsplit_once('.').map(|(m, _)| m).ok_or(Rejection::Malformed)?;
    let payload = message.split_once('.').map(|(_, p)| p).ok_or(Rejection::Malformed)?;
    let json = URL_SAFE_NO_PAD.decode(payload).map_err(|_| Rejection::Malformed)?;
    // A claims set is a JSON object (serde would also read a struct from an array).
    if json.trim_ascii_start().first() != Some(&b'{') {
        return Err(Rejection::MalformedClaims);
    }
    Ok(json)
}

/// The `kid` of a header written exactly as our minter writes it —
/// `{"typ":"handoff+jwt","alg":"EdDSA","kid":"…"}` with a base64url `kid` — or `None` for any
/// other header, which then goes through the strict JSON reading. Such a header has the right
/// `typ` and `alg`, no other member, no escapes and no duplicates, so reading it byte for byte
/// gives what the JSON reading would, without a parser on every request.
fn profile_header_kid(json: &[u8]) -> Option<&str> {
    const OPEN: &[u8] = br#"{"typ":"handoff+jwt","alg":"EdDSA","kid":""#;
    const CLOSE: &[u8] = br#""}"#;
    let kid = json.strip_prefix(OPEN)?.strip_suffix(CLOSE)?;
    if kid.is_empty() || !kid.iter().copied().all(is_base64url_byte) {
        return None;
    }
    std::str::from_utf8(kid).ok()
}

/// How far in the future a token's `iat`/`nbf` lies at `now`, in seconds — for measuring clock
/// skew after [`Rejection::NotYetValid`] or [`Rejection::IssuedInFuture`]. Those come only after
/// the signature check, so the claims read here are the issuer's.
pub fn issued_ahead_by(token: &str, now: UnixTime) -> Option<u64> {
    #[derive(serde::Deserialize)]
    struct Times {
        iat: u64,
        nbf: u64,
    }
    let payload = token.split('.').nth(1)?;
    let json = URL_SAFE_NO_PAD.decode(payload).ok()?;
    let times: Times = serde_json::from_slice(&json).ok()?;
    Some(times.iat.max(times.nbf).saturating_sub(now.as_secs()))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use std::collections::HashSet;

    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::{json, Value};

    use super::*;
    use crate::keys::{Jwks, SigningKey};
    use crate::mint::{profile_header, MintRequest, Minter};
    use crate::operation::{ArgName, ArgRule, ArgSpec, OperationSpec, OperationType};

    const NOW: UnixTime = UnixTime::from_secs(1_800_000_000);

    struct Fixture {
        key: Arc<SigningKey>,
        keys: KeySet,
        minter: Minter,
        verifier: Verifier,
        audience: Audience,
        subject: Subject,
        op: Operation,
    }

    fn catalog() -> Catalog {
        let spec = OperationSpec::new(
            OperationType::parse("report.view").expect("type"),
            vec![ArgSpec {
                name: ArgName::parse("report_id").expect("name"),
                rule: ArgRule::Integer { min: 1, max: 999 },
            }],
        )
        .expect("spec");
        Catalog::new([spec]).expect("catalog")
    }

    fn fixture() -> Fixture {
        let key = Arc::new(SigningKey::generate().expect("key"));
        let keys = KeySet::from_jwks(&Jwks { keys: vec![key.public_jwk()] }).expect("keys");
        let issuer = Issuer::parse("https://issuer.example").expect("iss");
        let audience = Audience::parse("https://partner.example").expect("aud");
        let minter = Minter::new(key.clone(), issuer.clone(), Ttl::from_secs(60).expect("ttl"));
        let verifier = Verifier::new(VerifierSettings {
            issuer,
            audience: audience.clone(),
            leeway: Leeway::from_secs(5).expect("leeway"),
            max_lifetime: Ttl::from_secs(120).expect("ttl"),
            catalog: catalog(),
            algorithm: crate::keys::Alg::EdDsa,
        })
        .expect("verifier");
        let op =
            catalog().get("report.view").expect("spec").build([("report_id", "42")]).expect("op");
        let subject = Subject::parse("u_alice").expect("sub");
        Fixture { key, keys, minter, verifier, audience, subject, op }
    }

    impl Fixture {
        fn mint_at(&self, now: UnixTime) -> String {
            let request = MintRequest {
                audience: &self.audience,
                subject: &self.subject,
                operation: &self.op,
                sid: None,
                nonce: None,
                profile: None,
                lifetime: None,
            };
            self.minter.mint(&request, now).expect("mint").into_string()
        }

        fn claims(&self) -> Value {
            json!({
                "iss": "https://issuer.example",
                "sub": "u_alice",
                "aud": "https://partner.example",
                "iat": NOW.as_secs(),
                "nbf": NOW.as_secs(),
                "exp": NOW.as_secs() + 60,
                "jti": "AAAAAAAAAAAAAAAAAAAAAA",
                "authorization_details": [{"type": "report.view", "report_id": "42"}],
            })
        }

        /// Signs arbitrary claims with the real key, the way another implementation would.
        fn sign(&self, header: &Header, claims: &Value) -> String {
            let der = self.key_der();
            jsonwebtoken::encode(header, claims, &EncodingKey::from_ed_der(&der)).expect("encode")
        }

        fn key_der(&self) -> Vec<u8> {
            self.key.pkcs8_for_tests().to_vec()
        }

        fn check(&self, token: &str) -> Result<VerifiedHandoff, Rejection> {
            self.verifier.verify_with(token, &self.keys, NOW)
        }
    }

    #[test]
    fn minted_token_verifies() {
        let f = fixture();
        let token = f.mint_at(NOW);
        let ok = f.check(&token).expect("valid");
        assert_eq!(ok.subject(), &f.subject);
        assert_eq!(ok.operation(), &f.op);
        assert_eq!(ok.kid(), f.key.kid());
        assert_eq!(ok.replay_until(), NOW.plus(65));
    }

    #[test]
    fn refusals_before_the_signature_are_the_unsigned_ones() {
        let f = fixture();
        // Every refusal `verify` gives after the signature held is a signed one.
        let header = profile_header(f.key.kid());
        let mut claims = f.claims();
        claims["exp"] = json!(NOW.as_secs() - 100);
        claims["iat"] = json!(NOW.as_secs() - 200);
        claims["nbf"] = json!(NOW.as_secs() - 200);
        let expired = f.check(&f.sign(&header, &claims)).map(|_| ()).unwrap_err();
        assert_eq!(expired, Rejection::Expired);
        assert!(!expired.is_unsigned());
        let token = f.mint_at(NOW);
        let mut forged = token.clone().into_bytes();
        let i = forged.len() - 10;
        forged[i] = if forged[i] == b'A' { b'B' } else { b'A' };
        let forged = String::from_utf8(forged).expect("ascii");
        let bad = f.check(&forged).map(|_| ()).unwrap_err();
        assert!(bad.is_unsigned(), "{bad:?}");
        let unsigned: Vec<_> =
            Rejection::ALL.iter().filter(|r| r.is_unsigned()).map(Rejection::code).collect();
        assert_eq!(
            unsigned,
            [
                "token_too_large",
                "malformed",
                "bad_header",
                "wrong_type",
                "wrong_algorithm",
                "missing_kid",
                "unknown_kid",
                "unknown_issuer",
                "bad_signature"
            ]
        );
    }

    #[test]
    fn only_the_minters_exact_header_skips_the_json_reading() {
        let f = fixture();
        let kid = f.key.kid().as_str();
        let minted = serde_json::to_vec(&profile_header(f.key.kid())).expect("header");
        assert_eq!(profile_header_kid(&minted), Some(kid));
        let others = [
            format!(r#"{{"alg":"EdDSA","typ":"handoff+jwt","kid":"{kid}"}}"#),
            format!(r#"{{"typ":"handoff+jwt","alg":"EdDSA","kid":"{kid}","jku":"x"}}"#),
            format!(r#"{{"typ":"handoff+jwt","alg":"EdDSA","kid":"{kid}","kid":"{kid}"}}"#),
            format!(r#"{{"typ":"handoff+jwt","alg":"EdDSA","kid":"\u0041{kid}"}}"#),
            format!(r#"{{"typ":"handoff+jwt","alg":"EdDSA","kid":"{kid}"}} "#),
            r#"{"typ":"handoff+jwt","alg":"EdDSA","kid":""}"#.to_owned(),
            r#"{"typ":"handoff+jwt","alg":"EdDSA","kid":"a"b"}"#.to_owned(),
            format!(r#"{{"typ":"JWT","alg":"EdDSA","kid":"{kid}"}}"#),
        ];
        for other in &others {
            assert_eq!(profile_header_kid(other.as_bytes()), None, "{other}");
        }
        // The strict reading still decides those: reordered members and trailing whitespace are
        // valid JSON for the same header; the rest are refused.
        let token = f.mint_at(NOW);
        let rest = token.split_once('.').expect("dot").1;
        for (i, other) in others.iter().enumerate() {
            let forged = format!("{}.{rest}", URL_SAFE_NO_PAD.encode(other));
            assert_eq!(f.verifier.inspect(&forged).is_ok(), i == 0 || i == 4, "{other}");
        }
    }

    #[test]
    fn minter_output_is_what_jsonwebtoken_encodes() {
        let f = fixture();
        let token = f.mint_at(NOW);
        let payload = token.split('.').nth(1).expect("payload");
        let claims: ClaimsIn =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("b64")).expect("json");
        let out = crate::token::ClaimsOut {
            iss: &Issuer::parse(&claims.iss).expect("issuer"),
            sub: &claims.sub,
            aud: &Audience::parse(&claims.aud).expect("audience"),
            iat: claims.iat,
            nbf: claims.nbf,
            exp: claims.exp,
            jti: claims.jti,
            authorization_details: &claims.authorization_details,
            sid: None,
            nonce: None,
            name: None,
            email: None,
            email_verified: None,
            groups: None,
        };
        let der = f.key_der();
        let again = jsonwebtoken::encode(
            &profile_header(f.key.kid()),
            &out,
            &EncodingKey::from_ed_der(&der),
        )
        .expect("encode");
        assert_eq!(again, token);
    }

    #[test]
    fn claim_checks_in_order_with_exact_reasons() {
        let f = fixture();
        let header = profile_header(f.key.kid());
        let with = |edit: &dyn Fn(&mut Value)| {
            let mut claims = f.claims();
            edit(&mut claims);
            f.check(&f.sign(&header, &claims)).map(|_| ()).unwrap_err()
        };
        let t = NOW.as_secs();
        type Edit = Box<dyn Fn(&mut Value)>;
        let cases: Vec<(&str, Edit, Rejection)> = vec![
            (
                "wrong iss",
                Box::new(|c| c["iss"] = json!("https://evil.example")),
                Rejection::WrongIssuer,
            ),
            (
                "wrong aud",
                Box::new(|c| c["aud"] = json!("https://other.example")),
                Rejection::WrongAudience,
            ),
            (
                "aud array",
                Box::new(|c| c["aud"] = json!(["https://partner.example"])),
                Rejection::MalformedClaims,
            ),
            (
                "expired",
                Box::new(move |c| {
                    c["iat"] = json!(t - 100);
                    c["nbf"] = json!(t - 100);
                    c["exp"] = json!(t - 5)
                }),
                Rejection::Expired,
            ),
            (
                "nbf future",
                Box::new(move |c| {
                    c["nbf"] = json!(t + 6);
                    c["exp"] = json!(t + 60)
                }),
                Rejection::NotYetValid,
            ),
            (
                "iat future",
                Box::new(move |c| {
                    c["iat"] = json!(t + 6);
                    c["exp"] = json!(t + 60)
                }),
                Rejection::IssuedInFuture,
            ),
            ("lifetime", Box::new(move |c| c["exp"] = json!(t + 121)), Rejection::LifetimeTooLong),
            (
                "exp at iat",
                Box::new(move |c| {
                    c["iat"] = json!(t);
                    c["exp"] = json!(t)
                }),
                Rejection::MalformedClaims,
            ),
            (
                "nbf after exp",
                Box::new(move |c| {
                    c["nbf"] = json!(t + 3);
                    c["exp"] = json!(t + 2);
                    c["iat"] = json!(t - 10)
                }),
                Rejection::MalformedClaims,
            ),
            (
                "exp missing",
                Box::new(|c| {
                    c.as_object_mut().expect("obj").remove("exp");
                }),
                Rejection::MalformedClaims,
            ),
            (
                "exp string",
                Box::new(move |c| c["exp"] = json!((t + 60).to_string())),
                Rejection::MalformedClaims,
            ),
            (
                "exp float",
                Box::new(move |c| c["exp"] = json!(t as f64 + 60.5)),
                Rejection::MalformedClaims,
            ),
            ("exp huge", Box::new(|c| c["exp"] = json!(u64::MAX)), Rejection::LifetimeTooLong),
            ("unknown claim", Box::new(|c| c["admin"] = json!(true)), Rejection::MalformedClaims),
            (
                "two details",
                Box::new(
                    |c| c["authorization_details"] = json!([{"type": "report.view", "report_id": "1"}, {"type": "report.view", "report_id": "2"}]),
                ),
                Rejection::MalformedClaims,
            ),
            (
                "no details",
                Box::new(|c| c["authorization_details"] = json!([])),
                Rejection::MalformedClaims,
            ),
            (
                "unknown op",
                Box::new(|c| c["authorization_details"] = json!([{"type": "admin.everything"}])),
                Rejection::UnknownOperation,
            ),
            (
                "bad arg",
                Box::new(|c| {
                    c["authorization_details"] = json!([{"type": "report.view", "report_id": "0"}])
                }),
                Rejection::BadOperationArgument,
            ),
            (
                "extra arg",
                Box::new(|c| {
                    c["authorization_details"] =
                        json!([{"type": "report.view", "report_id": "1", "x": "y"}])
                }),
                Rejection::BadOperationArgument,
            ),
            ("bad jti", Box::new(|c| c["jti"] = json!("short")), Rejection::MalformedClaims),
        ];
        for (name, edit, expected) in cases {
            assert_eq!(with(&*edit), expected, "{name}");
        }
    }

    #[test]
    fn leeway_is_exact() {
        let f = fixture();
        let token = f.mint_at(NOW);
        // Valid until exp + leeway (65 s after minting), not a second more.
        assert!(f.verifier.verify_with(&token, &f.keys, NOW.plus(64)).is_ok());
        assert_eq!(
            f.verifier.verify_with(&token, &f.keys, NOW.plus(65)).unwrap_err(),
            Rejection::Expired
        );
        let early = f.mint_at(NOW.plus(5));
        assert!(f.verifier.verify_with(&early, &f.keys, NOW).is_ok());
        let too_early = f.mint_at(NOW.plus(6));
        assert_eq!(
            f.verifier.verify_with(&too_early, &f.keys, NOW).unwrap_err(),
            Rejection::NotYetValid
        );
    }

    #[test]
    fn header_checks() {
        let f = fixture();
        let good_claims = f.claims();
        let b64 = |v: &Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).expect("json"));
        let token = f.sign(&profile_header(f.key.kid()), &good_claims);
        let parts: Vec<&str> = token.split('.').collect();
        let with_header = |h: Value| format!("{}.{}.{}", b64(&h), parts[1], parts[2]);
        let kid = f.key.kid().to_string();
        let cases = [
            (json!({"alg": "none", "typ": "handoff+jwt", "kid": kid}), Rejection::WrongAlgorithm),
            (json!({"alg": "HS256", "typ": "handoff+jwt", "kid": kid}), Rejection::WrongAlgorithm),
            (json!({"alg": "EdDSA", "typ": "JWT", "kid": kid}), Rejection::WrongType),
            (json!({"alg": "EdDSA", "kid": kid}), Rejection::WrongType),
            (json!({"alg": "EdDSA", "typ": "handoff+jwt"}), Rejection::MissingKid),
            (
                json!({"alg": "EdDSA", "typ": "handoff+jwt", "kid": "../../dev/null"}),
                Rejection::UnknownKid,
            ),
            (
                json!({"alg": "EdDSA", "typ": "handoff+jwt", "kid": "A".repeat(43)}),
                Rejection::UnknownKid,
            ),
            (
                json!({"alg": "EdDSA", "typ": "handoff+jwt", "kid": kid, "crit": ["exp"]}),
                Rejection::BadHeader,
            ),
            (
                json!({"alg": "EdDSA", "typ": "handoff+jwt", "kid": kid, "jku": "http://x"}),
                Rejection::BadHeader,
            ),
            (
                json!({"alg": "EdDSA", "typ": "handoff+jwt", "kid": kid, "b64": false}),
                Rejection::BadHeader,
            ),
            (json!(["alg"]), Rejection::BadHeader),
        ];
        for (header, expected) in cases {
            assert_eq!(f.check(&with_header(header.clone())).unwrap_err(), expected, "{header}");
        }
        // The genuine header with the signature still attached: the signature covers the header,
        // so even a header change that passes the checks fails on the signature.
        let reordered = json!({"typ": "handoff+jwt", "kid": kid, "alg": "EdDSA"});
        assert_eq!(f.check(&with_header(reordered)).unwrap_err(), Rejection::BadSignature);
    }

    #[test]
    fn shape_and_signature_checks() {
        let f = fixture();
        let token = f.mint_at(NOW);
        let parts: Vec<&str> = token.split('.').collect();
        let cases = [
            (String::new(), Rejection::Malformed),
            ("a.b".to_owned(), Rejection::Malformed),
            (format!("{token}.x"), Rejection::Malformed),
            (format!("{token}="), Rejection::Malformed),
            (format!(" {token}"), Rejection::Malformed),
            (format!("{}.{}.", parts[0], parts[1]), Rejection::Malformed),
            (token.replace('-', "+").replace('_', "/") + "+", Rejection::Malformed),
            ("a".repeat(MAX_TOKEN_LEN + 1), Rejection::TooLarge),
            (format!("{}.{}.{}", parts[0], parts[1], flip_bit(parts[2])), Rejection::BadSignature),
            (
                format!("{}.{}.{}", parts[0], parts[1], &parts[2][..parts[2].len() - 2]),
                Rejection::BadSignature,
            ),
        ];
        for (bad, expected) in cases {
            assert_eq!(f.check(&bad).unwrap_err(), expected, "{}", bad.get(..40).unwrap_or(&bad));
        }
        // Tampered claim under the original signature.
        let mut claims: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).expect("b64")).expect("json");
        claims["authorization_details"][0]["report_id"] = json!("43");
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).expect("json")),
            parts[2]
        );
        assert_eq!(f.check(&forged).unwrap_err(), Rejection::BadSignature);
    }

    #[test]
    fn other_keys_and_algorithms_are_refused() {
        let f = fixture();
        // Signed by another Ed25519 key that claims our kid.
        let other = SigningKey::generate().expect("key");
        let header = profile_header(f.key.kid());
        let forged = jsonwebtoken::encode(
            &header,
            &f.claims(),
            &EncodingKey::from_ed_der(other.pkcs8_for_tests()),
        )
        .expect("encode");
        assert_eq!(f.check(&forged).unwrap_err(), Rejection::BadSignature);
        // Signed by another key under its own kid: unknown.
        let mut own = profile_header(other.kid());
        own.kid = Some(other.kid().to_string());
        let forged = jsonwebtoken::encode(
            &own,
            &f.claims(),
            &EncodingKey::from_ed_der(other.pkcs8_for_tests()),
        )
        .expect("encode");
        assert_eq!(f.check(&forged).unwrap_err(), Rejection::UnknownKid);
        // HS256 keyed with the public key (algorithm confusion).
        let public = f.key.public_key_bytes().to_vec();
        let mut hs = Header::new(jsonwebtoken::Algorithm::HS256);
        hs.typ = Some(HANDOFF_TYP.into());
        hs.kid = Some(f.key.kid().to_string());
        let forged = jsonwebtoken::encode(&hs, &f.claims(), &EncodingKey::from_secret(&public))
            .expect("encode");
        assert_eq!(f.check(&forged).unwrap_err(), Rejection::WrongAlgorithm);
    }

    fn flip_bit(segment: &str) -> String {
        let mut raw = URL_SAFE_NO_PAD.decode(segment).expect("b64");
        raw[10] ^= 1;
        URL_SAFE_NO_PAD.encode(raw)
    }

    #[test]
    fn rejection_codes_are_unique() {
        let codes: HashSet<_> = Rejection::ALL.iter().map(Rejection::code).collect();
        assert_eq!(codes.len(), Rejection::ALL.len());
    }
}

#[cfg(test)]
mod later {
    use super::Rejection;

    #[test]
    fn only_what_time_or_a_fetch_can_mend_may_pass_later() {
        let later: Vec<&str> =
            Rejection::ALL.iter().filter(|r| r.may_pass_later()).map(|r| r.code()).collect();
        assert_eq!(later, ["unknown_kid", "keys_unavailable", "not_yet_valid", "issued_in_future"]);
    }
}

/// Partners that verify with a shared secret: HS256 both ways, the algorithm fixed by the
/// verifier's settings whatever a token's header says.
#[cfg(test)]
mod shared_secret {
    use std::sync::Arc;

    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    use super::*;
    use crate::mint::{MintKey, MintRequest, Minter};
    use crate::operation::{ArgName, ArgRule, ArgSpec, OperationSpec, OperationType};
    use crate::secret::SharedSecret;
    use crate::token::Profile;

    const NOW: UnixTime = UnixTime::from_secs(1_800_000_000);
    const SECRET: &[u8] = b"k7Qp2Zs9Wm4Xv8Rt1Ly6Nc3Bh5Jd0Gf!";
    const OTHER: &[u8] = b"Z0x9C8v7B6n5M4a3S2d1F0g9H8j7K6l5";

    fn catalog() -> Catalog {
        let spec = OperationSpec::new(
            OperationType::parse("report.view").expect("type"),
            vec![ArgSpec {
                name: ArgName::parse("report_id").expect("name"),
                rule: ArgRule::Integer { min: 1, max: 999 },
            }],
        )
        .expect("spec");
        Catalog::new([spec]).expect("catalog")
    }

    fn verifier(algorithm: Alg) -> Verifier {
        Verifier::new(VerifierSettings {
            issuer: Issuer::parse("https://issuer.example").expect("iss"),
            audience: Audience::parse("https://partner.example").expect("aud"),
            leeway: Leeway::from_secs(5).expect("leeway"),
            max_lifetime: Ttl::from_secs(120).expect("ttl"),
            catalog: catalog(),
            algorithm,
        })
        .expect("verifier")
    }

    fn secret(bytes: &[u8]) -> Arc<SharedSecret> {
        Arc::new(SharedSecret::from_bytes(bytes, "test").expect("secret"))
    }

    fn mint(key: MintKey, profile: Option<&Profile>) -> String {
        let minter = Minter::new(
            key,
            Issuer::parse("https://issuer.example").expect("iss"),
            Ttl::from_secs(60).expect("ttl"),
        );
        let op =
            catalog().get("report.view").expect("spec").build([("report_id", "7")]).expect("op");
        let request = MintRequest {
            audience: &Audience::parse("https://partner.example").expect("aud"),
            subject: &Subject::parse("p_abc").expect("sub"),
            operation: &op,
            sid: None,
            nonce: None,
            profile,
            lifetime: None,
        };
        minter.mint(&request, NOW).expect("mint").into_string()
    }

    #[test]
    fn hs256_round_trips_with_its_profile_claims() {
        let keys = KeySet::shared_secret(&secret(SECRET));
        let profile = Profile {
            name: Some("Alice Example".into()),
            groups: Some(vec!["reports".into()]),
            ..Profile::NONE
        };
        let token = mint(MintKey::Hs256(secret(SECRET)), Some(&profile));
        let header = token.split('.').next().expect("header");
        assert_eq!(
            URL_SAFE_NO_PAD.decode(header).expect("b64"),
            br#"{"typ":"handoff+jwt","alg":"HS256"}"#,
            "no kid: the partner has one secret"
        );
        let verified = verifier(Alg::Hs256).verify_with(&token, &keys, NOW).expect("valid");
        assert_eq!(verified.profile(), profile);
        assert_eq!(verified.name(), Some("Alice Example"));
        // The same token is what jsonwebtoken itself accepts with the secret.
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
        validation.set_audience(&["https://partner.example"]);
        validation.validate_exp = false;
        jsonwebtoken::decode::<serde_json::Value>(
            &token,
            &jsonwebtoken::DecodingKey::from_secret(SECRET),
            &validation,
        )
        .expect("jsonwebtoken agrees");
    }

    #[test]
    fn the_algorithm_is_the_verifiers_never_the_tokens() {
        let ed = Arc::new(crate::keys::SigningKey::generate().expect("key"));
        let jwks =
            KeySet::from_jwks(&crate::keys::Jwks { keys: vec![ed.public_jwk()] }).expect("keys");
        let hs_keys = KeySet::shared_secret(&secret(SECRET));
        // An HS256 token to an EdDSA issuer, even keyed with the issuer's public key.
        let hs = mint(MintKey::Hs256(secret(SECRET)), None);
        assert_eq!(
            verifier(Alg::EdDsa).verify_with(&hs, &jwks, NOW).unwrap_err(),
            Rejection::WrongAlgorithm
        );
        let mut confused = Header::new(jsonwebtoken::Algorithm::HS256);
        confused.typ = Some(HANDOFF_TYP.into());
        confused.kid = Some(ed.kid().to_string());
        let claims: serde_json::Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD.decode(hs.split('.').nth(1).expect("claims")).expect("b64"),
        )
        .expect("json");
        let forged = jsonwebtoken::encode(
            &confused,
            &claims,
            &EncodingKey::from_secret(ed.public_key_bytes()),
        )
        .expect("encode");
        assert_eq!(
            verifier(Alg::EdDsa).verify_with(&forged, &jwks, NOW).unwrap_err(),
            Rejection::WrongAlgorithm
        );
        // An EdDSA token to an HS256 issuer.
        let eddsa = mint(MintKey::Ed25519(ed.clone()), None);
        assert_eq!(
            verifier(Alg::Hs256).verify_with(&eddsa, &hs_keys, NOW).unwrap_err(),
            Rejection::WrongAlgorithm
        );
        // `alg: none`, with and without a signature.
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(r#"{"typ":"handoff+jwt","alg":"none"}"#),
            hs.split('.').nth(1).expect("claims")
        );
        for token in [none.clone(), format!("{none}AAAA")] {
            let refused = verifier(Alg::Hs256).verify_with(&token, &hs_keys, NOW).unwrap_err();
            assert!(
                matches!(refused, Rejection::Malformed | Rejection::WrongAlgorithm),
                "{refused:?}"
            );
        }
        // The wrong secret.
        let other = mint(MintKey::Hs256(secret(OTHER)), None);
        assert_eq!(
            verifier(Alg::Hs256).verify_with(&other, &hs_keys, NOW).unwrap_err(),
            Rejection::BadSignature
        );
        // A set holding a secret never verifies an EdDSA signature, and the reverse.
        let inspected = verifier(Alg::Hs256).inspect(&hs).expect("inspect");
        let ed_key = jwks.get(ed.kid().as_str()).expect("key");
        assert!(verifier(Alg::Hs256).verify(inspected, ed_key, NOW).is_err());
    }

    #[test]
    fn malformed_profile_claims_are_refused() {
        let keys = KeySet::shared_secret(&secret(SECRET));
        let token = mint(MintKey::Hs256(secret(SECRET)), None);
        let mut claims: serde_json::Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD.decode(token.split('.').nth(1).expect("claims")).expect("b64"),
        )
        .expect("json");
        let mut header = Header::new(jsonwebtoken::Algorithm::HS256);
        header.typ = Some(HANDOFF_TYP.into());
        let sign = |claims: &serde_json::Value| {
            jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(SECRET))
                .expect("encode")
        };
        assert!(verifier(Alg::Hs256).verify_with(&sign(&claims), &keys, NOW).is_ok());
        for (claim, value) in [
            ("name", json!("")),
            ("name", json!("Alice\u{0007}")),
            ("name", json!("Alice\u{202E}elpmaxE")),
            ("name", json!("Ali\u{200B}ce")),
            ("name", json!("x".repeat(81))),
            ("name", json!(42)),
            ("email", json!("alice")),
            ("email", json!("a@b@c")),
            ("email", json!("al ice@example.com")),
            ("email_verified", json!("yes")),
            ("groups", json!(["Admins!"])),
            ("groups", json!("reports")),
            ("groups", json!(vec!["g"; 65])),
        ] {
            let mut bad = claims.clone();
            bad[claim] = value.clone();
            assert_eq!(
                verifier(Alg::Hs256).verify_with(&sign(&bad), &keys, NOW).unwrap_err(),
                Rejection::MalformedClaims,
                "{claim} = {value}"
            );
        }
        claims["email"] = json!("alice@example.com");
        claims["email_verified"] = json!(true);
        let ok = verifier(Alg::Hs256).verify_with(&sign(&claims), &keys, NOW).expect("valid");
        assert_eq!(ok.profile().email.as_deref(), Some("alice@example.com"));
    }
}
