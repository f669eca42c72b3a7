//! Minting: `GET /handoff/{target}/{operation}?ARG=VALUE…` turns a signed-in user's request into
//! a token for exactly that operation on that target, and a page that posts it there (or, with
//! `mode=redirect` and a target that does not bind its tokens, a 303 with the token in the
//! query).
//!
//! Two rules decide what a request may do without asking:
//!
//! - **Consent.** Only a click on SERVER1's own pages (`Sec-Fetch-Site: same-origin`) hands
//!   the person over directly. Anything else — another site, a sibling site, a link opened from
//!   a mail (`none`), a browser that does not say (no header), the target's start URL (a
//!   `nonce`), the way back from signing in (`ask`) — gets a page that says what will happen
//!   and for whom, and its button POSTs a one-use approval bound to this session, target,
//!   operation and arguments.
//! - **Binding.** A target that binds its tokens (the default) gets only tokens carrying the
//!   nonce it set in this browser. A handoff that starts here therefore passes through the
//!   target's start URL first; an approval cookie (one use, the same binding) carries the
//!   person's consent across that round trip. Bound tokens travel only in a form's body.

use ::handoff::protocol::{relying_start_param, start_param};
use ::handoff::{Nonce, UnixTime};
use handoff_web::cookies::add_cookie;
use handoff_web::see_other;
use poem::http::{header, StatusCode};
use poem::web::{Data, Form, Path};
use poem::{handler, Request, Response};
use serde::Deserialize;

use super::session::APPROVAL;
use super::{current_session, pages, AppError, AppState, State};
use crate::accounts::Session;
use crate::handoffs::Authorized;
use crate::targets::Binding;
use handoff_web::client::client_shown;

/// How long an approval stays usable, in seconds: the confirmation page's button, or the round
/// trip through the target's start URL.
const APPROVAL_TTL: u64 = 300;

/// What the reserved parameters of a start URL asked for.
#[derive(Debug, Default)]
struct Reserved {
    redirect_mode: bool,
    nonce: Option<Nonce>,
    ask: bool,
}

/// Splits a start URL's query into the reserved parameters and the operation's arguments.
fn parse_query(query: &str) -> Result<(Reserved, Vec<(String, String)>), AppError> {
    let mut reserved = Reserved::default();
    let mut args = Vec::new();
    let invalid = || AppError::BadRequest("This link is not valid".into());
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        match k.as_ref() {
            start_param::MODE => {
                reserved.redirect_mode = match v.as_ref() {
                    "redirect" => true,
                    "form" => false,
                    _ => return Err(AppError::BadRequest("`mode` is `form` or `redirect`".into())),
                }
            }
            start_param::NONCE => {
                let parsed = Nonce::parse(&v).map_err(|_| invalid())?;
                if reserved.nonce.replace(parsed).is_some() {
                    return Err(invalid());
                }
            }
            start_param::ASK => reserved.ask = true,
            _ => args.push((k.into_owned(), v.into_owned())),
        }
    }
    Ok((reserved, args))
}

/// A start request checked as far as it can be without consent: the user may open this
/// operation with these arguments.
struct Prepared<'a> {
    authorized: Authorized<'a>,
    reserved: Reserved,
}

impl<'a> Prepared<'a> {
    async fn new(
        state: &'a AppState,
        session: &Session,
        req: &Request,
        target_id: &str,
        operation: &str,
    ) -> Result<Self, AppError> {
        let user = &session.user;
        // Target, operation and role first: a link to something that does not exist, or that
        // this user may not open, says so whatever its arguments.
        state.handoffs.permit(user, target_id, operation)?;
        if state.accounts.settings().require_verified_email && !user.email_verified {
            return Err(AppError::Unverified);
        }
        let (reserved, args) = parse_query(req.uri().query().unwrap_or(""))?;
        let args = args.iter().map(|(k, v)| (k.as_str(), v.as_str()));
        let authorized = state.handoffs.authorize(user, target_id, operation, args)?;
        state.handoffs.check_entitlements(&state.db, user, &authorized).await?;
        let binds = matches!(authorized.target.binding, Binding::Nonce { .. });
        if reserved.redirect_mode && (binds || reserved.nonce.is_some()) {
            return Err(AppError::BadRequest(
                "`mode=redirect` would put a token bound to this browser in a URL: it is only for targets with binding = \"none\"".into(),
            ));
        }
        Ok(Self { authorized, reserved })
    }

    /// The bytes an approval is bound to: the session, the target, the operation and each
    /// argument, each length-prefixed so no two requests share them.
    fn approval_context(&self, session: &Session, id: &str, expires: UnixTime) -> Vec<u8> {
        let mut context = Vec::with_capacity(256);
        let mut put = |part: &[u8]| {
            context.extend_from_slice(&(part.len() as u64).to_be_bytes());
            context.extend_from_slice(part);
        };
        put(session.hash.as_bytes());
        put(self.authorized.target.id.as_str().as_bytes());
        put(self.authorized.operation.kind().as_str().as_bytes());
        for (name, value) in self.authorized.operation.args() {
            put(name.as_str().as_bytes());
            put(value.as_bytes());
        }
        put(id.as_bytes());
        put(&expires.as_secs().to_be_bytes());
        context
    }
}

const APPROVAL_PURPOSE: &str = "handoff-approval";

/// A new approval for `prepared` in `session`: `ID.EXPIRES.TAG`.
fn issue_approval(
    state: &AppState,
    session: &Session,
    prepared: &Prepared<'_>,
) -> Result<String, AppError> {
    let id = crate::accounts::random_token()
        .ok_or_else(|| AppError::Internal("the system's random source failed".into()))?;
    let expires = state.config.clock.now().plus(APPROVAL_TTL);
    let context = prepared.approval_context(session, &id, expires);
    let tag = state.csrf.token(APPROVAL_PURPOSE, &context);
    Ok(format!("{id}.{}.{tag}", expires.as_secs()))
}

/// Whether `approval` approves `prepared` in `session` and was not used before (it is used up
/// now, in the database every replica shares).
async fn take_approval(
    state: &AppState,
    session: &Session,
    prepared: &Prepared<'_>,
    approval: &str,
) -> Result<bool, AppError> {
    let mut parts = approval.splitn(3, '.');
    let (Some(id), Some(expires), Some(tag)) = (parts.next(), parts.next(), parts.next()) else {
        return Ok(false);
    };
    let Ok(expires) = expires.parse::<u64>().map(UnixTime::from_secs) else {
        return Ok(false);
    };
    let now = state.config.clock.now();
    let context = prepared.approval_context(session, id, expires);
    if id.len() > 64 || expires <= now || !state.csrf.check(APPROVAL_PURPOSE, &context, tag) {
        return Ok(false);
    }
    Ok(state.db.use_jti(&format!("approval:{id}"), expires, now).await?)
}

/// `GET /handoff/{target}/{operation}`.
#[handler]
pub(super) async fn start(
    req: &Request,
    Path((target_id, operation)): Path<(String, String)>,
    Data(state): Data<&State>,
) -> Result<Response, AppError> {
    let Some(session) = current_session(state, req).await? else {
        // Back here after signing in, with `ask` (see `auth::safe_next`).
        let here = req.uri().path_and_query().map_or("/", |p| p.as_str());
        let next: String = url::form_urlencoded::byte_serialize(here.as_bytes()).collect();
        return Ok(see_other(&format!("/login?next={next}")));
    };
    let prepared = Prepared::new(state, &session, req, &target_id, &operation).await?;
    // The person's own click on a page of ours. Not `none` (an address typed, a bookmark, but
    // also a link opened from a mail or a chat, and a browser-started navigation keeps `none`
    // across a relying party's redirect); not a request with a nonce (a relying party's start
    // URL sent it, whoever sent the browser there); not the way back from signing in (`ask`).
    let own_click = req.headers().get("sec-fetch-site").is_some_and(|v| v == "same-origin");
    let reserved = &prepared.reserved;
    if own_click && reserved.nonce.is_none() && !reserved.ask {
        return proceed(state, req, &session, &prepared).await;
    }
    // Back from the target's start URL, approved before the round trip.
    if let Some(approval) = state.cookies.read(req, APPROVAL) {
        if take_approval(state, &session, &prepared, &approval).await? {
            return proceed(state, req, &session, &prepared).await;
        }
    }
    let approval = issue_approval(state, &session, &prepared)?;
    let authorized = &prepared.authorized;
    tracing::info!(event = "handoff.confirm_asked", sub = %session.user.id, target = %authorized.target.id, "handoff needs the person's confirmation");
    let action = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let mut resp = pages::html_response(
        StatusCode::OK,
        pages::confirm_page(
            authorized.target,
            authorized.offered,
            &authorized.shown_args(),
            &session.user,
            action,
            &approval,
        ),
    );
    // The approval must not outlive the page in a cache.
    resp.headers_mut().insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
    resp.headers_mut()
        .insert(header::CONTENT_SECURITY_POLICY, authorized.target.confirm_csp.clone());
    Ok(resp)
}

#[derive(Deserialize)]
pub(super) struct ApprovalForm {
    #[serde(default)]
    approval: String,
}

/// `POST /handoff/{target}/{operation}`: the confirmation page's button.
#[handler]
pub(super) async fn approve(
    req: &Request,
    Path((target_id, operation)): Path<(String, String)>,
    Data(state): Data<&State>,
    Form(form): Form<ApprovalForm>,
) -> Result<Response, AppError> {
    let Some(session) = current_session(state, req).await? else {
        return Ok(see_other("/login"));
    };
    let prepared = Prepared::new(state, &session, req, &target_id, &operation).await?;
    if !take_approval(state, &session, &prepared, &form.approval).await? {
        return Err(AppError::Csrf);
    }
    proceed(state, req, &session, &prepared).await
}

/// Hands the person over, consent given: through the target's start URL first when the target
/// binds its tokens and this browser has no nonce yet, else with a token.
async fn proceed(
    state: &AppState,
    req: &Request,
    session: &Session,
    prepared: &Prepared<'_>,
) -> Result<Response, AppError> {
    let authorized = &prepared.authorized;
    let target = authorized.target;
    if let (Binding::Nonce { start_url }, None) = (&target.binding, &prepared.reserved.nonce) {
        let mut location = start_url.clone();
        {
            let mut pairs = location.query_pairs_mut();
            pairs.append_pair(relying_start_param::TYPE, authorized.operation.kind().as_str());
            for (name, value) in authorized.operation.args() {
                pairs.append_pair(name.as_str(), value);
            }
            pairs.append_pair(relying_start_param::ISSUER, state.config.public_url.as_str());
        }
        let mut resp = see_other(location.as_str());
        let approval = issue_approval(state, session, prepared)?;
        add_cookie(&mut resp, state.cookies.set(APPROVAL, &approval, Some(APPROVAL_TTL)))?;
        return Ok(resp);
    }
    let mut resp = mint(state, req, session, prepared).await?;
    if state.cookies.read(req, APPROVAL).is_some() {
        add_cookie(&mut resp, state.cookies.set(APPROVAL, "", None))?;
    }
    Ok(resp)
}

async fn mint(
    state: &AppState,
    req: &Request,
    session: &Session,
    prepared: &Prepared<'_>,
) -> Result<Response, AppError> {
    let (user, authorized, reserved) = (&session.user, &prepared.authorized, &prepared.reserved);
    let (target, offered) = (authorized.target, authorized.offered);
    let now = state.config.clock.now();
    let minted = state.handoffs.mint(
        user,
        authorized,
        session.sid.as_ref(),
        reserved.nonce.as_ref(),
        now,
    )?;
    if target.client.is_some() && state.handoffs.first_sighting(target, &minted.subject) {
        // The partner API answers for users handed off to the partner: remember this one. A
        // failure here does not stop the handoff (the next one records it again).
        if let Err(e) = state
            .db
            .record_partner_subject(target.id.as_str(), &minted.subject, &user.id, now)
            .await
        {
            state.handoffs.forget_sighting(target, &minted.subject);
            tracing::warn!(error = %e, target = %target.id, "could not record the partner's subject");
        }
    }
    let kind = authorized.operation.kind();
    state.metrics.minted.with_label_values(&[target.id.as_str(), kind.as_str()]).inc();
    tracing::info!(
        event = "handoff.minted",
        jti = %minted.token.jti(),
        sub = %user.id,
        partner_sub = %minted.subject,
        aud = %target.audience,
        operation = %kind,
        alg = %target.signing.alg(),
        kid = minted.kid.as_ref().map_or("-", |k| k.as_str()),
        bound = reserved.nonce.is_some(),
        client = %client_shown(state.config.trusted_proxies.client_ip(req)),
        "handoff minted"
    );
    if reserved.redirect_mode {
        let mut location = target.handoff_url.clone();
        location
            .query_pairs_mut()
            .append_pair(::handoff::protocol::TOKEN_FIELD, minted.token.as_str());
        return Ok(see_other(location.as_str()));
    }
    let ttl = minted.ttl.as_secs();
    let shown_args = authorized.shown_args();
    let page = pages::handoff_page(target, offered, &shown_args, minted.token.as_str(), ttl);
    let mut resp = pages::html_response(StatusCode::OK, page);
    resp.headers_mut().insert(header::CONTENT_SECURITY_POLICY, target.handoff_csp.clone());
    Ok(resp)
}
