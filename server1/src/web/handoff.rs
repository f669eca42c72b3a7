//! Minting: `GET /handoff/{target}/{operation}?ARG=VALUE…` turns a signed-in user's request into
//! a token for exactly that operation on that target, and a page that posts it there (or, with
//! `mode=redirect`, a 303 to the target's handoff URL with the token in the query).
//!
//! Two more parameters are reserved: `nonce`, set by a target that started the handoff itself
//! (the token then carries it and only the browser holding the matching cookie can use it), and
//! `confirm`, the person's consent when another site sent their browser here.

use ::handoff::{MintRequest, Nonce, SessionRef};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use poem::http::{header, StatusCode};
use poem::web::{Data, Path};
use poem::{handler, Request, Response};

use super::{current_user, pages, AppError, State};
use std::fmt::Write as _;

use ::handoff::web::see_other;

#[handler]
pub(super) fn start(
    req: &Request,
    Path((target_id, operation)): Path<(String, String)>,
    Data(state): Data<&State>,
) -> Result<Response, AppError> {
    let Some((user, hash)) = current_user(state, req)? else {
        let here = req.uri().path_and_query().map_or("/", |p| p.as_str());
        let next: String = url::form_urlencoded::byte_serialize(here.as_bytes()).collect();
        return Ok(see_other(&format!("/login?next={next}")));
    };
    let target = state.targets.get(&target_id).ok_or(AppError::NotFound)?;
    let offered = target.operation(&operation).ok_or(AppError::NotFound)?;
    if !user.has_role(&offered.role) {
        return Err(AppError::MissingRole(offered.role.clone()));
    }
    let query = req.uri().query().unwrap_or("");
    let mut redirect_mode = false;
    let mut nonce = None;
    let mut confirm = None;
    let mut args = Vec::new();
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        match k.as_ref() {
            "mode" => {
                redirect_mode = match v.as_ref() {
                    "redirect" => true,
                    "form" => false,
                    _ => return Err(AppError::BadRequest("`mode` is `form` or `redirect`".into())),
                }
            }
            "nonce" => {
                let parsed = Nonce::parse(&v)
                    .map_err(|_| AppError::BadRequest("This link is not valid".into()))?;
                if nonce.replace(parsed).is_some() {
                    return Err(AppError::BadRequest("This link is not valid".into()));
                }
            }
            "confirm" => confirm = Some(v),
            _ => args.push((k, v)),
        }
    }
    let operation = offered
        .spec
        .build(args.iter().map(|(k, v)| (k.as_ref(), v.as_ref())))
        .map_err(|e| AppError::BadRequest(format!("This link is not valid: {e}")))?;
    let mut shown_args = String::new();
    for (i, (k, v)) in operation.args().enumerate() {
        let sep = if i == 0 { "" } else { ", " };
        // Writing to a String cannot fail.
        let _ = write!(shown_args, "{sep}{k} {v}");
    }

    // Another site sent this browser here and the target did not start it: a page elsewhere
    // must not be able to hand the user over without them knowing. Ask first.
    let cross_site = req.headers().get("sec-fetch-site").is_some_and(|v| v == "cross-site");
    let confirmed = || confirm.is_some_and(|c| state.csrf.check("handoff-confirm", &hash, &c));
    if cross_site && nonce.is_none() && !confirmed() {
        let token = state.csrf.token("handoff-confirm", &hash);
        let path = req.uri().path();
        let continue_href = format!("{path}?{query}&confirm={token}");
        tracing::info!(event = "handoff.confirm_asked", sub = %user.id, "cross-site handoff needs confirmation");
        return Ok(pages::html_response(
            StatusCode::OK,
            pages::confirm_page(target, offered, &shown_args, &continue_href),
        ));
    }

    let sid = SessionRef::try_from(URL_SAFE_NO_PAD.encode(&hash[..16])).ok();
    let now = state.config.clock.now();
    let request = MintRequest {
        audience: &target.audience,
        subject: &user.id,
        operation: &operation,
        sid: sid.as_ref(),
        nonce: nonce.as_ref(),
    };
    let keys = state.keys.current(now);
    let minter = keys.minter(now);
    let minted = minter.mint(&request, now).map_err(|e| AppError::Internal(e.to_string()))?;
    state.metrics.minted.with_label_values(&[target.id.as_str(), operation.kind().as_str()]).inc();
    tracing::info!(
        event = "handoff.minted",
        jti = %minted.jti(),
        sub = %user.id,
        aud = %target.audience,
        operation = %operation.kind(),
        kid = %minter.kid(),
        bound = nonce.is_some(),
        client = %req.remote_addr(),
        "handoff minted"
    );
    if redirect_mode {
        let mut location = target.handoff_url.clone();
        location.query_pairs_mut().append_pair("token", minted.as_str());
        return Ok(see_other(location.as_str()));
    }
    let page =
        pages::handoff_page(target, offered, &shown_args, minted.as_str(), minter.ttl().as_secs());
    let mut resp = pages::html_response(StatusCode::OK, page);
    resp.headers_mut().insert(header::CONTENT_SECURITY_POLICY, target.handoff_csp.clone());
    Ok(resp)
}
