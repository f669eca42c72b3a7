//! Minting: `GET /handoff/{target}/{operation}?ARG=VALUE…` turns a signed-in user's request into
//! a token for exactly that operation on that target, and a page that posts it there (or, with
//! `mode=redirect`, a 303 to the target's handoff URL with the token in the query).
//!
//! Two more parameters are reserved: `nonce`, set by a target that started the handoff itself
//! (the token then carries it and only the browser holding the matching cookie can use it), and
//! `confirm`, the person's consent when another site sent their browser here.

use ::handoff::protocol::start_param;
use ::handoff::Nonce;
use handoff_web::see_other;
use poem::http::{header, StatusCode};
use poem::web::{Data, Path};
use poem::{handler, Request, Response};

use super::{current_session, pages, AppError, State};
use handoff_web::client::client_shown;

/// What the reserved parameters of a start URL asked for.
#[derive(Debug, Default)]
struct Reserved {
    redirect_mode: bool,
    nonce: Option<Nonce>,
    confirm: Option<String>,
}

/// Splits a start URL's query into the reserved parameters and the operation's arguments.
fn parse_query(query: &str) -> Result<(Reserved, Vec<(String, String)>), AppError> {
    let mut reserved = Reserved::default();
    let mut args = Vec::new();
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
                let parsed = Nonce::parse(&v)
                    .map_err(|_| AppError::BadRequest("This link is not valid".into()))?;
                if reserved.nonce.replace(parsed).is_some() {
                    return Err(AppError::BadRequest("This link is not valid".into()));
                }
            }
            start_param::CONFIRM => reserved.confirm = Some(v.into_owned()),
            _ => args.push((k.into_owned(), v.into_owned())),
        }
    }
    Ok((reserved, args))
}

#[handler]
pub(super) async fn start(
    req: &Request,
    Path((target_id, operation)): Path<(String, String)>,
    Data(state): Data<&State>,
) -> Result<Response, AppError> {
    let Some(session) = current_session(state, req).await? else {
        let here = req.uri().path_and_query().map_or("/", |p| p.as_str());
        let next: String = url::form_urlencoded::byte_serialize(here.as_bytes()).collect();
        return Ok(see_other(&format!("/login?next={next}")));
    };
    let (user, hash) = (&session.user, session.hash);
    // Target, operation and role first: a link to something that does not exist, or that this
    // user may not open, says so whatever its arguments.
    state.handoffs.permit(user, &target_id, &operation)?;
    if state.accounts.settings().require_verified_email && !user.email_verified {
        return Err(AppError::Unverified);
    }
    let query = req.uri().query().unwrap_or("");
    let (reserved, args) = parse_query(query)?;
    let args = args.iter().map(|(k, v)| (k.as_str(), v.as_str()));
    let authorized = state.handoffs.authorize(user, &target_id, &operation, args)?;
    let shown_args = authorized.shown_args();
    let (target, offered) = (authorized.target, authorized.offered);

    // Another site sent this browser here and the target did not start it: a page elsewhere
    // must not be able to hand the user over without them knowing. Ask first.
    let cross_site = req.headers().get("sec-fetch-site").is_some_and(|v| v == "cross-site");
    let confirmed = || {
        reserved
            .confirm
            .as_ref()
            .is_some_and(|c| state.csrf.check("handoff-confirm", hash.as_bytes(), c))
    };
    if cross_site && reserved.nonce.is_none() && !confirmed() {
        let token = state.csrf.token("handoff-confirm", hash.as_bytes());
        let path = req.uri().path();
        let continue_href = format!("{path}?{query}&{}={token}", start_param::CONFIRM);
        tracing::info!(event = "handoff.confirm_asked", sub = %user.id, "cross-site handoff needs confirmation");
        return Ok(pages::html_response(
            StatusCode::OK,
            pages::confirm_page(target, offered, &shown_args, &continue_href),
        ));
    }

    let now = state.config.clock.now();
    let minted = state.handoffs.mint(
        user,
        &authorized,
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
    let page = pages::handoff_page(target, offered, &shown_args, minted.token.as_str(), ttl);
    let mut resp = pages::html_response(StatusCode::OK, page);
    resp.headers_mut().insert(header::CONTENT_SECURITY_POLICY, target.handoff_csp.clone());
    Ok(resp)
}
