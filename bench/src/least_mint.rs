//! `least-mint`: the least work a mint can be on this machine, as a server to load like SERVER1.
//!
//! Each `GET /mint` looks the session cookie up in SERVER1's own database with SERVER1's own
//! query, mints a handoff token with the product's own minter (claims, a fresh `jti` from the
//! system's randomness, ring's Ed25519 sign) and answers with a page of the size SERVER1's
//! handoff page has, over poem as SERVER1 does (`GET /healthz` says it is up). It leaves out
//! everything else a mint is: the request guard, the target's policy and the operation's
//! arguments, consent, pairwise subjects, security headers, metrics and the audit line. No
//! mint by a server that keeps its sessions in this database, speaks HTTP through poem and
//! signs with ring can cost less here, so its rate beside ring's sign is the ceiling SERVER1's
//! mint is measured against.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use handoff::{
    Audience, Clock, Issuer, MintRequest, Minter, Operation, SigningKey, SystemClock, Ttl,
};
use poem::http::{header, StatusCode};
use poem::listener::TcpListener;
use poem::{handler, EndpointExt as _, Request, Response, Route};
use server1::accounts::SessionHash;
use server1::db::{DatabaseUrl, Db, OpenMode, PoolSettings};

/// The session cookie `prepare-server1` hands out.
const SESSION_COOKIE: &str = "__Host-handoff_session";

/// Static HTML around the token, about as long as SERVER1's handoff page around its token.
const PAGE_HEAD: &str = concat!(
    "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" ",
    "content=\"width=device-width, initial-scale=1\"><meta name=\"referrer\" content=\"no-referrer\">",
    "<script src=\"/static/handoff.js\"></script><title>Continuing to Partner Analytics · Handoff ",
    "Portal</title><link rel=\"stylesheet\" href=\"/static/style.css\"></head><body><header ",
    "class=\"bar\"><span class=\"brand\">Handoff Portal</span></header><main><div class=\"card\">",
    "<h1>Continuing to Partner Analytics</h1><p>You are being signed in to <strong>Partner ",
    "Analytics</strong> to <strong>View report</strong> report_id 42.</p><p class=\"muted\">This ",
    "sign-in link works once, within 60 seconds.</p><form id=\"handoff-form\" method=\"post\" ",
    "action=\"http://127.0.0.1:18102/handoff\"><input type=\"hidden\" name=\"token\" value=\""
);
const PAGE_TAIL: &str = concat!(
    "\"><button type=\"submit\">Continue to Partner Analytics</button></form></div></main>",
    "</body></html>"
);

struct Mint {
    db: Db,
    minter: Minter,
    audience: Audience,
    operation: Operation,
}

/// Serves `GET /mint` on `listen` for the SERVER1 prepared in `dir` (by `prepare-server1`)
/// until stopped.
pub fn serve(dir: &Path, database_url: Option<&str>, listen: SocketAddr) -> anyhow::Result<()> {
    let key = SigningKey::load(&dir.join("keys").join("signing.pk8"))?;
    let sqlite = format!("sqlite://{}", dir.join("server1.sqlite3").display());
    let url = DatabaseUrl::parse(database_url.unwrap_or(&sqlite)).map_err(anyhow::Error::msg)?;
    // The same runtime as SERVER1's: one worker per core it may run on.
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async {
        let pool = PoolSettings { size: 4, timeout: std::time::Duration::from_secs(10) };
        let db = Db::open(&url, OpenMode::Existing, pool).await?;
        // The issuer and audience `scripts/bench.py` gives SERVER1 and SERVER2.
        let mint = Arc::new(Mint {
            db,
            minter: Minter::new(
                Arc::new(key),
                Issuer::parse("http://127.0.0.1:18101")?,
                Ttl::from_secs(60)?,
            ),
            audience: Audience::parse("http://127.0.0.1:18102")?,
            operation: crate::report_op(42)?,
        });
        let app = Route::new()
            .at("/mint", poem::get(mint_page))
            .at("/healthz", poem::get(healthz))
            .data(mint);
        poem::Server::new(TcpListener::bind(listen)).run(app).await?;
        anyhow::Ok(())
    })
}

/// Ready to be measured.
#[handler]
fn healthz() -> &'static str {
    "ok"
}

#[handler]
async fn mint_page(req: &Request, poem::web::Data(mint): poem::web::Data<&Arc<Mint>>) -> Response {
    match page(req, mint).await {
        Ok(Some(page)) => {
            Response::builder().header(header::CONTENT_TYPE, "text/html; charset=utf-8").body(page)
        }
        Ok(None) => StatusCode::FORBIDDEN.into(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into(),
    }
}

async fn page(req: &Request, mint: &Mint) -> anyhow::Result<Option<String>> {
    let Some(session) =
        req.headers().get(header::COOKIE).and_then(|v| v.to_str().ok()).and_then(|cookies| {
            cookies
                .split(';')
                .find_map(|c| c.trim().strip_prefix(SESSION_COOKIE)?.strip_prefix('='))
        })
    else {
        return Ok(None);
    };
    let now = SystemClock.now();
    let hash = SessionHash::of(session);
    let Some((user, _)) = mint.db.session_user(hash.as_bytes(), now).await? else {
        return Ok(None);
    };
    let request = MintRequest {
        audience: &mint.audience,
        subject: &user.id,
        operation: &mint.operation,
        sid: None,
        nonce: None,
        profile: None,
        lifetime: None,
    };
    let token = mint.minter.mint(&request, now)?;
    let token = token.as_str();
    let mut page = String::with_capacity(PAGE_HEAD.len() + token.len() + PAGE_TAIL.len());
    page.push_str(PAGE_HEAD);
    page.push_str(token);
    page.push_str(PAGE_TAIL);
    Ok(Some(page))
}
