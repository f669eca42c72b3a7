//! A straightforward handoff endpoint, written as a Rust user would on a first day with axum and
//! jsonwebtoken: the yardstick `make bench` holds SERVER2 against. It verifies the EdDSA token
//! (key from a JWKS file), requires `iss`, `aud` and `exp`, keeps the seen `jti`s in a
//! `Mutex<HashMap>` until they expire, and answers a 303 to the report. No cookies, no audit log,
//! no browser binding.
//!
//! `PEER_LISTEN`, `PEER_JWKS_FILE`, `PEER_ISSUER`, `PEER_AUDIENCE`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{Form, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use serde::Deserialize;

struct App {
    keys: HashMap<String, DecodingKey>,
    validation: Validation,
    seen: Mutex<HashMap<String, u64>>,
}

#[derive(Deserialize)]
struct TokenForm {
    token: String,
}

#[derive(Deserialize)]
struct Claims {
    jti: String,
    exp: u64,
    authorization_details: Vec<serde_json::Value>,
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn handoff(app: &App, token: &str) -> Response {
    let refused = |status: StatusCode| (status, "refused").into_response();
    let Ok(header) = decode_header(token) else { return refused(StatusCode::BAD_REQUEST) };
    let Some(key) = header.kid.as_ref().and_then(|kid| app.keys.get(kid)) else {
        return refused(StatusCode::UNAUTHORIZED);
    };
    let Ok(data) = decode::<Claims>(token, key, &app.validation) else {
        return refused(StatusCode::UNAUTHORIZED);
    };
    let claims = data.claims;
    {
        let mut seen = app.seen.lock().unwrap_or_else(|e| e.into_inner());
        let now = now();
        if seen.len() > 1_000_000 {
            seen.retain(|_, exp| *exp + 5 > now);
        }
        if seen.insert(claims.jti, claims.exp).is_some() {
            return refused(StatusCode::UNAUTHORIZED);
        }
    }
    let report = claims
        .authorization_details
        .first()
        .and_then(|d| d.get("report_id"))
        .and_then(|v| v.as_str())
        .unwrap_or("0")
        .to_owned();
    (StatusCode::SEE_OTHER, [(header::LOCATION, format!("/reports/{report}"))]).into_response()
}

async fn by_post(State(app): State<Arc<App>>, Form(form): Form<TokenForm>) -> Response {
    handoff(&app, &form.token)
}

async fn by_get(State(app): State<Arc<App>>, Query(form): Query<TokenForm>) -> Response {
    handoff(&app, &form.token)
}

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"))
}

#[tokio::main]
async fn main() {
    let jwks: JwkSet =
        serde_json::from_slice(&std::fs::read(var("PEER_JWKS_FILE")).expect("the JWKS file"))
            .expect("a JWKS");
    let keys = jwks
        .keys
        .iter()
        .filter_map(|jwk| Some((jwk.common.key_id.clone()?, DecodingKey::from_jwk(jwk).ok()?)))
        .collect();
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.set_issuer(&[var("PEER_ISSUER")]);
    validation.set_audience(&[var("PEER_AUDIENCE")]);
    validation.leeway = 5;
    let app = Arc::new(App { keys, validation, seen: Mutex::new(HashMap::new()) });
    let router = Router::new().route("/handoff", get(by_get).post(by_post)).with_state(app);
    let listener = tokio::net::TcpListener::bind(var("PEER_LISTEN")).await.expect("listen");
    axum::serve(listener, router).await.expect("serve");
}
