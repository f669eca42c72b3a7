//! Helpers for the integration tests: start both servers in-process on port 0 with fresh keys,
//! database and targets; make cookie-keeping HTTP clients; capture logs.
#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used, missing_debug_implementations)]

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use handoff::{SigningKey, Ttl};
use tokio::sync::oneshot;

/// Password of every test user.
pub const PASSWORD: &str = "correct horse battery staple";

static LOGS: Mutex<Vec<u8>> = Mutex::new(Vec::new());

/// Everything logged in this test process so far.
pub fn captured_logs() -> String {
    String::from_utf8_lossy(&LOGS.lock().unwrap()).into_owned()
}

struct CaptureWriter;

impl Write for CaptureWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOGS.lock().unwrap().extend_from_slice(buf);
        if std::env::var_os("TEST_LOG").is_some() {
            std::io::stderr().write_all(buf)?;
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Captures every log line of the process (debug level unless RUST_LOG says otherwise).
pub fn init_logs() {
    handoff::telemetry::init("debug", || CaptureWriter, false);
}

/// Two running servers and what the tests need to talk to them.
pub struct Servers {
    /// SERVER1's base URL (http://127.0.0.1:PORT).
    pub server1: String,
    /// SERVER2's base URL (http://localhost:PORT): another site.
    pub server2: String,
    /// SERVER1's signing key (for tests that sign the way an attacker with the key would).
    pub key: Arc<SigningKey>,
    /// The working directory (keys, database, targets).
    pub dir: tempfile::TempDir,
    stop: Vec<oneshot::Sender<()>>,
}

impl Servers {
    /// Stops SERVER1 (its listener closes; SERVER2 keeps running).
    pub async fn stop_server1(&mut self) {
        if !self.stop.is_empty() {
            let _ = self.stop.remove(0).send(());
        }
        // Wait until its port refuses connections.
        let addr = self.server1.trim_start_matches("http://").to_owned();
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(&addr).await.is_err() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("SERVER1 did not stop");
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        for stop in self.stop.drain(..) {
            let _ = stop.send(());
        }
    }
}

/// The example targets file, pointed at SERVER2's real address.
pub fn targets_for(server2: &str) -> String {
    include_str!("../server1/targets.example.toml").replace("http://localhost:8002", server2)
}

/// Writes a key, targets and users (alice: reports+billing; bob: reports) into `dir`.
pub fn prepare_dir(dir: &Path, server2: &str) -> Arc<SigningKey> {
    let keys = dir.join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    let key = SigningKey::generate().unwrap();
    key.save(&keys.join("signing.pk8")).unwrap();
    std::fs::write(dir.join("targets.toml"), targets_for(server2)).unwrap();
    let db =
        server1::db::Db::open(&dir.join("server1.sqlite3"), server1::db::OpenMode::CreateIfMissing)
            .unwrap();
    let passwords = server1::passwords::Passwords::new(1).unwrap();
    let hash = passwords.hash(PASSWORD).unwrap();
    let now = now();
    db.add_user("alice", &hash, &["reports".into(), "billing".into()], now).unwrap();
    db.add_user("bob", &hash, &["reports".into()], now).unwrap();
    Arc::new(key)
}

/// Binds a loopback listener on a free port.
pub fn listener() -> (TcpListener, u16) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    (l, port)
}

/// SERVER1's configuration for a test directory.
pub fn server1_config(dir: &Path, port: u16) -> server1::Config {
    let url = format!("http://127.0.0.1:{port}");
    let db = format!("sqlite://{}", dir.join("server1.sqlite3").display());
    let keys = dir.join("keys").display().to_string();
    let targets = dir.join("targets.toml").display().to_string();
    server1::Config::from_pairs([
        ("public_url", url.as_str()),
        ("database_url", db.as_str()),
        ("keys_dir", keys.as_str()),
        ("targets_file", targets.as_str()),
    ])
    .unwrap()
}

/// SERVER2's configuration for SERVER1 at `server1` and itself at `server2`.
pub fn server2_config(server1: &str, server2: &str) -> server2::Config {
    server2::Config::from_pairs([
        ("public_url", server2),
        ("issuer", server1),
        ("jwks_refresh_secs", "1"),
        ("jwks_timeout_secs", "1"),
    ])
    .unwrap()
}

/// Starts both servers in-process on free ports, SERVER2 on the `localhost` site.
pub async fn spawn() -> Servers {
    spawn_with(|_| {}).await
}

/// As [`spawn`], letting the caller adjust SERVER2's configuration.
pub async fn spawn_with(adjust: impl FnOnce(&mut server2::Config)) -> Servers {
    spawn_both(|_| {}, adjust).await
}

/// As [`spawn`], letting the caller adjust both servers' configurations.
pub async fn spawn_both(
    adjust1: impl FnOnce(&mut server1::Config),
    adjust: impl FnOnce(&mut server2::Config),
) -> Servers {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let (l1, p1) = listener();
    let (l2, p2) = listener();
    let server1_url = format!("http://127.0.0.1:{p1}");
    let server2_url = format!("http://localhost:{p2}");
    let key = prepare_dir(dir.path(), &server2_url);
    let mut stop = Vec::new();

    let mut config1 = server1_config(dir.path(), p1);
    adjust1(&mut config1);
    let app1 = server1::build_app(config1, l1).unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    stop.push(tx);
    tokio::spawn(app1.run(async move {
        let _ = rx.await;
    }));

    let mut config2 = server2_config(&server1_url, &server2_url);
    adjust(&mut config2);
    let app2 = server2::build_app(config2, l2).await.unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    stop.push(tx);
    tokio::spawn(app2.run(async move {
        let _ = rx.await;
    }));
    Servers { server1: server1_url, server2: server2_url, key, dir, stop }
}

/// A browser-like client: keeps cookies, does not follow redirects.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The value of `name="…" value="…"` in an HTML form.
pub fn form_value(html: &str, name: &str) -> Option<String> {
    let start = html.find(&format!("name=\"{name}\""))?;
    let rest = &html[start..];
    let value = rest.find("value=\"")? + 7;
    let end = rest[value..].find('"')?;
    Some(rest[value..value + end].replace("&amp;", "&").replace("&quot;", "\""))
}

/// The whole `Set-Cookie` header of a response whose value starts with `prefix` (a cookie's
/// `name=`), attributes included.
pub fn set_cookie_header(resp: &reqwest::Response, prefix: &str) -> Option<String> {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(prefix))
        .map(str::to_owned)
}

/// The `name=value` of the cookie starting with `prefix` that a response sets; panics if it
/// sets none.
pub fn set_cookie(resp: &reqwest::Response, prefix: &str) -> String {
    let header = set_cookie_header(resp, prefix).expect("the response sets the cookie");
    header.split(';').next().unwrap_or_default().to_owned()
}

/// Signs in to SERVER1 as `user`; panics unless it works.
pub async fn sign_in(client: &reqwest::Client, server1: &str, user: &str) {
    let resp = try_sign_in(client, server1, user, PASSWORD, None).await;
    assert_eq!(resp.status(), 303, "sign-in as {user} failed");
}

/// Submits SERVER1's sign-in form; returns the response.
pub async fn try_sign_in(
    client: &reqwest::Client,
    server1: &str,
    user: &str,
    password: &str,
    next: Option<&str>,
) -> reqwest::Response {
    let login = match next {
        Some(n) => format!(
            "{server1}/login?next={}",
            url::form_urlencoded::byte_serialize(n.as_bytes()).collect::<String>()
        ),
        None => format!("{server1}/login"),
    };
    let page = client.get(&login).send().await.unwrap().text().await.unwrap();
    let csrf = form_value(&page, "csrf").expect("login form has a csrf field");
    let next = form_value(&page, "next").unwrap_or_default();
    client
        .post(format!("{server1}/login"))
        .form(&[("username", user), ("password", password), ("csrf", &csrf), ("next", &next)])
        .send()
        .await
        .unwrap()
}

/// Opens a handoff on SERVER1 and returns the token from the auto-submitting page.
pub async fn open_handoff(client: &reqwest::Client, server1: &str, path: &str) -> String {
    let resp = client.get(format!("{server1}{path}")).send().await.unwrap();
    assert_eq!(resp.status(), 200, "handoff page for {path}");
    let page = resp.text().await.unwrap();
    form_value(&page, "token").expect("handoff page carries a token")
}

/// A minter like SERVER1's, for tokens the UI would not make.
pub fn minter(servers: &Servers, ttl: u64) -> handoff::Minter {
    handoff::Minter::new(
        servers.key.clone(),
        handoff::Issuer::parse(&servers.server1).unwrap(),
        Ttl::from_secs(ttl).unwrap(),
    )
}

/// Path to a workspace binary built next to the test executable.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap();
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --bins` first (`make test` does)",
        path.display()
    );
    path
}

/// One pair of servers for the whole test process, running on a runtime of its own, for suites
/// of many small independent requests (the attack suite). Each request there uses a fresh
/// client, so tests cannot see each other's cookies.
pub fn shared_servers() -> &'static Servers {
    static SHARED: std::sync::OnceLock<Servers> = std::sync::OnceLock::new();
    SHARED.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                tx.send(spawn().await).unwrap();
                std::future::pending::<()>().await;
            });
        });
        rx.recv().unwrap()
    })
}

/// A third site on loopback that records the request heads it receives and answers with a
/// small page: for checking what a browser sends elsewhere (e.g. `Referer`).
pub struct Recorder {
    /// Its base URL.
    pub url: String,
    heads: Arc<Mutex<Vec<String>>>,
}

impl Recorder {
    /// Starts the recorder on a free port, serving until the process ends.
    pub async fn start() -> Recorder {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
        let heads = Arc::new(Mutex::new(Vec::new()));
        let seen = heads.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let seen = seen.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 2048];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 64 * 1024 {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    seen.lock().unwrap().push(String::from_utf8_lossy(&head).into_owned());
                    let body = "<!DOCTYPE html><title>Help</title><p>Help centre</p>";
                    let reply = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = stream.write_all(reply.as_bytes()).await;
                });
            }
        });
        Recorder { url, heads }
    }

    /// Every request head received so far.
    pub fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }
}

/// How a [`FaultyJwks`] server answers.
#[derive(Debug, Clone)]
pub enum JwksFault {
    /// Serves this document.
    Serve(String),
    /// Serves this document with `Cache-Control: max-age=N`.
    ServeFor(String, u64),
    /// Accepts the connection and never answers.
    Hang,
    /// Answers 500.
    ServerError,
    /// Answers 200 with bytes that are not a JWKS.
    Garbage,
    /// Answers 200 with this document padded with spaces (still valid JSON) to 10 MB.
    Huge(String),
    /// As `Huge`, with no length: the body ends when the connection closes.
    HugeUnframed(String),
    /// Answers 302 to this URL.
    Redirect(String),
}

/// `doc` followed by spaces up to 10 MB: the same JSON document, far too large.
fn padded(doc: String) -> Vec<u8> {
    let mut body = doc.into_bytes();
    body.resize(10 * 1024 * 1024, b' ');
    body
}

/// A JWKS endpoint on loopback whose behaviour a test switches, counting the requests it gets.
pub struct FaultyJwks {
    /// The JWKS URL.
    pub url: url::Url,
    mode: Arc<Mutex<JwksFault>>,
    hits: Arc<std::sync::atomic::AtomicUsize>,
}

impl FaultyJwks {
    /// Starts serving `mode`.
    pub async fn start(mode: JwksFault) -> FaultyJwks {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = url::Url::parse(&format!(
            "http://127.0.0.1:{}/jwks.json",
            listener.local_addr().unwrap().port()
        ))
        .unwrap();
        let mode = Arc::new(Mutex::new(mode));
        let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (m, h) = (mode.clone(), hits.clone());
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                h.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let mode = m.lock().unwrap().clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let mut extra_headers = String::new();
                    let mut framed = true;
                    let (status, body) = match mode {
                        JwksFault::Serve(doc) => ("200 OK", doc.into_bytes()),
                        JwksFault::ServeFor(doc, secs) => {
                            extra_headers = format!("cache-control: public, max-age={secs}\r\n");
                            ("200 OK", doc.into_bytes())
                        }
                        JwksFault::Hang => {
                            tokio::time::sleep(std::time::Duration::from_secs(60)).await;
                            return;
                        }
                        JwksFault::ServerError => ("500 Internal Server Error", b"oops".to_vec()),
                        JwksFault::Garbage => ("200 OK", b"{\"keys\": \"not a list\"".to_vec()),
                        JwksFault::Huge(doc) => ("200 OK", padded(doc)),
                        JwksFault::HugeUnframed(doc) => {
                            framed = false;
                            ("200 OK", padded(doc))
                        }
                        JwksFault::Redirect(to) => {
                            extra_headers = format!("location: {to}\r\n");
                            ("302 Found", Vec::new())
                        }
                    };
                    let length = if framed {
                        format!("content-length: {}\r\n", body.len())
                    } else {
                        String::new()
                    };
                    let head = format!(
                        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\n{extra_headers}{length}connection: close\r\n\r\n"
                    );
                    let _ = stream.write_all(head.as_bytes()).await;
                    let _ = stream.write_all(&body).await;
                });
            }
        });
        FaultyJwks { url, mode, hits }
    }

    /// Switches how it answers from now on.
    pub fn set(&self, mode: JwksFault) {
        *self.mode.lock().unwrap() = mode;
    }

    /// Requests received so far.
    pub fn hits(&self) -> usize {
        self.hits.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// A `report.view report_id=ID` token from `minter`, for `sub`, addressed to `audience` (a
/// SERVER2 URL), issued at `at`.
pub fn report_token(
    minter: &handoff::Minter,
    audience: &str,
    sub: &str,
    id: &str,
    at: handoff::UnixTime,
) -> handoff::MintedToken {
    let op = server2::operations::catalog()
        .get("report.view")
        .unwrap()
        .build([("report_id", id)])
        .unwrap();
    let audience = handoff::Audience::parse(audience).unwrap();
    let subject = handoff::Subject::parse(sub).unwrap();
    let request = handoff::MintRequest {
        audience: &audience,
        subject: &subject,
        operation: &op,
        sid: None,
        nonce: None,
    };
    minter.mint(&request, at).unwrap()
}

/// The current time.
pub fn now() -> handoff::UnixTime {
    handoff::Clock::now(&handoff::SystemClock)
}

/// Submits a handoff token to SERVER2 as its form POST.
pub async fn submit(c: &reqwest::Client, server2: &str, token: &str) -> reqwest::Response {
    c.post(format!("{server2}/handoff")).form(&[("token", token)]).send().await.unwrap()
}

/// The status of a GET.
pub async fn status_of(c: &reqwest::Client, url: &str) -> reqwest::StatusCode {
    c.get(url).send().await.unwrap().status()
}

/// The body of a GET.
pub async fn text_of(c: &reqwest::Client, url: &str) -> String {
    c.get(url).send().await.unwrap().text().await.unwrap()
}
