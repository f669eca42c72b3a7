//! Helpers for the integration tests: start both servers in-process on port 0 with fresh keys,
//! database and targets, each on a runtime of its own that captures its logs; make cookie-keeping
//! HTTP clients; sign tokens the way an attacker with the key would.
#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used, missing_debug_implementations)]

use std::cell::RefCell;
use std::future::Future;
use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use handoff::{ManualClock, SigningKey, Ttl};
use handoff_web::config::EnvConfig as _;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{json, Value};
use tokio::sync::oneshot;

/// Password of every test user.
pub const PASSWORD: &str = "violet harbour tangent 42";

/// The log of one in-process server: every line it wrote (debug level unless `RUST_LOG` says
/// otherwise), also echoed to standard error when `TEST_LOG` is set.
#[derive(Clone)]
pub struct LogBuffer {
    name: &'static str,
    bytes: Arc<Mutex<Vec<u8>>>,
}

impl LogBuffer {
    /// An empty log for the server called `name` (the prefix of its echoed lines).
    pub fn new(name: &'static str) -> LogBuffer {
        LogBuffer { name, bytes: Arc::default() }
    }

    /// Everything logged so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes.lock().unwrap()).into_owned()
    }

    /// A tracing dispatcher writing to this log.
    fn dispatch(&self) -> tracing::Dispatch {
        use tracing_subscriber::EnvFilter;
        let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("debug"));
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(false)
            .with_writer(self.clone())
            .finish();
        tracing::Dispatch::new(subscriber)
    }
}

impl Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.bytes.lock().unwrap().extend_from_slice(buf);
        if std::env::var_os("TEST_LOG").is_some() {
            // One write is one formatted event.
            let mut line = format!("[{}] ", self.name).into_bytes();
            line.extend_from_slice(buf);
            std::io::stderr().write_all(&line)?;
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogBuffer {
    type Writer = LogBuffer;
    fn make_writer(&'a self) -> LogBuffer {
        self.clone()
    }
}

thread_local! {
    /// The log this thread writes to, for the threads of an in-process server's runtime.
    static THREAD_LOG: RefCell<Option<tracing::dispatcher::DefaultGuard>> =
        const { RefCell::new(None) };
}

/// Sends this thread's log events to `dispatch` until [`log_this_thread_nowhere`].
fn log_this_thread_to(dispatch: &tracing::Dispatch) {
    let guard = tracing::dispatcher::set_default(dispatch);
    THREAD_LOG.with(|slot| *slot.borrow_mut() = Some(guard));
}

/// Drops this thread's log (before its thread-locals are torn down).
fn log_this_thread_nowhere() {
    let _ = THREAD_LOG.try_with(|slot| slot.borrow_mut().take());
}

/// One server running in-process on a Tokio runtime of its own, in a thread of its own, whose
/// threads (workers and blocking pool) all log to [`InProcess::logs`]. Stopped when dropped.
pub struct InProcess {
    /// The address it listens on.
    pub addr: SocketAddr,
    /// The address its `/metrics` listener is on.
    pub metrics_addr: Option<SocketAddr>,
    /// Whether it was ready once built (SERVER2: the issuer's keys were loaded).
    pub ready_at_start: bool,
    log: LogBuffer,
    stop: Option<oneshot::Sender<()>>,
}

/// What an in-process server's body gets: where to report that it is built (and whether it is
/// ready), and the signal to stop.
struct Started {
    built: oneshot::Sender<(bool, Option<SocketAddr>)>,
    stop: oneshot::Receiver<()>,
}

impl Started {
    /// Reports the app built, then serves it with `run` until told to stop.
    async fn serve<F>(
        self,
        ready: bool,
        metrics: Option<SocketAddr>,
        run: impl FnOnce(oneshot::Receiver<()>) -> F,
    ) where
        F: Future<Output = std::io::Result<()>>,
    {
        let _ = self.built.send((ready, metrics));
        run(self.stop).await.expect("the server runs until stopped");
    }
}

impl InProcess {
    /// Runs `body` (which builds the app, reports it built and serves it) on a new runtime in a
    /// new thread; returns once the app is built. The thread owns the runtime and drops it when
    /// the server has stopped.
    async fn start<F>(
        name: &'static str,
        addr: SocketAddr,
        body: impl FnOnce(Started) -> F + Send + 'static,
    ) -> InProcess
    where
        F: Future<Output = ()>,
    {
        let log = LogBuffer::new(name);
        let dispatch = log.dispatch();
        let (built, built_rx) = oneshot::channel();
        let (stop, stop_rx) = oneshot::channel();
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                log_this_thread_to(&dispatch);
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name(name)
                    .enable_all()
                    .on_thread_start(move || log_this_thread_to(&dispatch))
                    .on_thread_stop(log_this_thread_nowhere)
                    .build()
                    .unwrap();
                runtime.block_on(body(Started { built, stop: stop_rx }));
                drop(runtime);
                log_this_thread_nowhere();
            })
            .unwrap();
        let (ready_at_start, metrics_addr) =
            built_rx.await.unwrap_or_else(|_| panic!("{name} did not start (see its panic)"));
        InProcess { addr, metrics_addr, ready_at_start, log, stop: Some(stop) }
    }

    /// Everything this server logged so far.
    pub fn logs(&self) -> String {
        self.log.text()
    }

    /// Its `/metrics` URL (on the metrics listener, not the public one).
    pub fn metrics_url(&self) -> String {
        format!("http://{}/metrics", self.metrics_addr.expect("a metrics listener"))
    }

    /// Tells the server to stop (it closes its listener and finishes what is in flight).
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Stops the server and waits until its port refuses connections.
    pub async fn stop_and_wait(&mut self) {
        self.stop();
        let deadline = Instant::now() + Duration::from_secs(5);
        while tokio::net::TcpStream::connect(self.addr).await.is_ok() {
            assert!(Instant::now() < deadline, "the server on {} did not stop", self.addr);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Builds and runs SERVER1 with `config` on `listener`, in-process (see [`InProcess`]).
pub async fn serve_server1(config: server1::Config, listener: TcpListener) -> InProcess {
    let addr = listener.local_addr().unwrap();
    InProcess::start("server1", addr, move |started| async move {
        let app = server1::build_app(config, listener).await.unwrap();
        let metrics = app.metrics_addr();
        started
            .serve(true, metrics, |stop| {
                app.run(async move {
                    let _ = stop.await;
                })
            })
            .await;
    })
    .await
}

/// Builds and runs SERVER2 with `config` on `listener`, in-process (see [`InProcess`]).
pub async fn serve_server2(config: server2::Config, listener: TcpListener) -> InProcess {
    let addr = listener.local_addr().unwrap();
    InProcess::start("server2", addr, move |started| async move {
        let app = server2::build_app(config, listener).await.unwrap();
        let ready = app.is_ready().await;
        let metrics = app.metrics_addr();
        started
            .serve(ready, metrics, |stop| {
                app.run(async move {
                    let _ = stop.await;
                })
            })
            .await;
    })
    .await
}

/// Two running servers and what the tests need to talk to them.
pub struct Servers {
    /// SERVER1's base URL (http://127.0.0.1:PORT).
    pub server1: String,
    /// SERVER2's base URL (http://localhost:PORT): another site.
    pub server2: String,
    /// SERVER1's signing key (for tests that sign the way an attacker with the key would).
    pub key: Arc<SigningKey>,
    running1: InProcess,
    running2: InProcess,
    /// The working directory (keys, database, targets).
    pub dir: tempfile::TempDir,
}

impl Servers {
    /// Everything SERVER1 logged so far.
    pub fn server1_logs(&self) -> String {
        self.running1.logs()
    }

    /// Everything SERVER2 logged so far.
    pub fn server2_logs(&self) -> String {
        self.running2.logs()
    }

    /// SERVER1's `/metrics` URL (its own listener).
    pub fn metrics1(&self) -> String {
        self.running1.metrics_url()
    }

    /// SERVER2's `/metrics` URL (its own listener).
    pub fn metrics2(&self) -> String {
        self.running2.metrics_url()
    }

    /// Everything both servers logged so far (SERVER1's lines, then SERVER2's).
    pub fn all_logs(&self) -> String {
        self.server1_logs() + &self.server2_logs()
    }

    /// Stops SERVER1 (its listener closes; SERVER2 keeps running).
    pub async fn stop_server1(&mut self) {
        self.running1.stop_and_wait().await;
    }

    /// Stops SERVER2 (its listener closes; SERVER1 keeps running).
    pub async fn stop_server2(&mut self) {
        self.running2.stop_and_wait().await;
    }
}

/// The example targets file, pointed at SERVER2's real address.
pub fn targets_for(server2: &str) -> String {
    include_str!("../server1/targets.example.toml").replace("http://localhost:8002", server2)
}

/// The shared-secret files the example targets file names (its `desk` partner's).
pub const EXAMPLE_SECRETS: [&str; 2] = ["desk.secret", "desk-api.secret"];

/// Writes the example targets file into `dir` as `targets.toml`, pointed at SERVER2's real
/// address, and makes the secret files it names (when missing).
pub fn write_targets(dir: &Path, server2: &str) {
    write_targets_text(dir, &targets_for(server2));
}

/// Writes `text` as `dir/targets.toml` and makes the example's secret files (when missing).
pub fn write_targets_text(dir: &Path, text: &str) {
    std::fs::write(dir.join("targets.toml"), text).unwrap();
    for name in EXAMPLE_SECRETS {
        let path = dir.join(name);
        if !path.exists() {
            handoff::SharedSecret::create(&path).unwrap();
        }
    }
}

/// Writes a key, targets and users (alice: reports+billing; bob: reports; each with a verified
/// address NAME@example.com) into `dir`, with
/// SERVER1's database a SQLite file there, or a fresh PostgreSQL database when the run is
/// [`on_postgres`] (its URL kept in `dir/database_url` for [`server1_config`]).
pub async fn prepare_dir(dir: &Path, server2: &str) -> Arc<SigningKey> {
    let url = if on_postgres() {
        PgServer::shared().fresh_database().await
    } else {
        format!("sqlite://{}", dir.join("server1.sqlite3").display())
    };
    prepare_dir_on(dir, server2, &url).await
}

/// As [`prepare_dir`], with SERVER1's database at `database_url`.
pub async fn prepare_dir_on(dir: &Path, server2: &str, database_url: &str) -> Arc<SigningKey> {
    let keys = dir.join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    let key = SigningKey::generate().unwrap();
    key.save(&keys.join("signing.pk8")).unwrap();
    write_targets(dir, server2);
    std::fs::write(dir.join("clients.toml"), include_str!("../server1/clients.example.toml"))
        .unwrap();
    std::fs::write(dir.join("database_url"), database_url).unwrap();
    let url = server1::db::DatabaseUrl::parse(database_url).unwrap();
    let pool = server1::db::PoolSettings { size: 2, timeout: Duration::from_secs(10) };
    let db =
        server1::db::Db::open(&url, server1::db::OpenMode::CreateIfMissing, pool).await.unwrap();
    let accounts = server1::accounts::Accounts::new(
        Arc::new(db),
        server1::passwords::Passwords::new(1).unwrap(),
        3600,
        Arc::new(handoff::SystemClock),
    );
    for (name, roles) in [("alice", &["reports", "billing"][..]), ("bob", &["reports"][..])] {
        let roles: Vec<_> = roles.iter().map(|r| server1::names::Role::parse(r).unwrap()).collect();
        let email = server1::names::Email::parse(&format!("{name}@example.com")).unwrap();
        let name = server1::names::UserName::parse(name).unwrap();
        accounts.add_user(&name, PASSWORD, &roles, Some(&email), None).await.unwrap();
    }
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
    let db = std::fs::read_to_string(dir.join("database_url"))
        .unwrap_or_else(|_| format!("sqlite://{}", dir.join("server1.sqlite3").display()));
    let keys = dir.join("keys").display().to_string();
    let targets = dir.join("targets.toml").display().to_string();
    let mail = dir.join("mail").display().to_string();
    let clients = dir.join("clients.toml").display().to_string();
    server1::Config::from_pairs([
        ("clients_file", clients.as_str()),
        ("public_url", url.as_str()),
        ("database_url", db.as_str()),
        ("keys_dir", keys.as_str()),
        ("targets_file", targets.as_str()),
        ("mail_dir", mail.as_str()),
        ("metrics_listen", "127.0.0.1:0"),
    ])
    .unwrap()
}

/// SERVER2's configuration for SERVER1 at `server1` and itself at `server2`.
/// SERVER2's configuration for the tests. It accepts unbound tokens, as it would for clients
/// that are not browsers: most tests submit tokens they minted themselves, without a browser
/// nonce. Handoffs through SERVER1 are bound all the same (SERVER1 decides that), and the tests
/// of the browser binding run on the product's default (`spawn_default`, which refuses them).
pub fn server2_config(server1: &str, server2: &str) -> server2::Config {
    server2::Config::from_pairs([
        ("public_url", server2),
        ("issuer", server1),
        ("unbound_handoffs", "accept"),
        ("metrics_listen", "127.0.0.1:0"),
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

/// What SERVER2 does with unbound tokens when nothing is configured.
pub fn product_default_unbound_handoffs() -> server2::config::UnboundHandoffs {
    server2::Config::from_pairs([]).unwrap().unbound_handoffs
}

/// Both servers on the product's defaults for browser binding (SERVER2 refuses tokens without
/// its nonce).
pub async fn spawn_default() -> Servers {
    spawn_default_with(|_| {}).await
}

/// [`spawn_default`], adjusted.
pub async fn spawn_default_with(adjust: impl FnOnce(&mut server2::Config)) -> Servers {
    spawn_with(|c| {
        c.unbound_handoffs = product_default_unbound_handoffs();
        adjust(c);
    })
    .await
}

/// A clock for [`spawn_clocked`], showing the current time until moved.
pub fn manual_clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(now()))
}

/// As [`spawn`], both servers reading `clock`.
pub async fn spawn_clocked(clock: &Arc<ManualClock>) -> Servers {
    spawn_clocked_with(clock, |_| {}).await
}

/// As [`spawn_clocked`], letting the caller adjust SERVER2's configuration.
pub async fn spawn_clocked_with(
    clock: &Arc<ManualClock>,
    adjust: impl FnOnce(&mut server2::Config),
) -> Servers {
    let (clock1, clock2) = (clock.clone(), clock.clone());
    spawn_both(
        move |c| c.clock = clock1,
        move |c| {
            c.clock = clock2;
            adjust(c);
        },
    )
    .await
}

/// As [`spawn`], letting the caller adjust both servers' configurations.
pub async fn spawn_both(
    adjust1: impl FnOnce(&mut server1::Config),
    adjust: impl FnOnce(&mut server2::Config),
) -> Servers {
    spawn_both_on(None, adjust1, adjust).await
}

/// As [`spawn`], with SERVER1 on a SQLite file whatever the run's engine (for tests of
/// SQLite's own failure modes).
pub async fn spawn_sqlite() -> Servers {
    spawn_both_on(Some(Engine::Sqlite), |_| {}, |_| {}).await
}

/// As [`spawn`], with SERVER1's database on `database_url` (a PostgreSQL database a test
/// controls, say).
pub async fn spawn_on(database_url: &str) -> Servers {
    spawn_both_on(Some(Engine::At(database_url.to_owned())), |_| {}, |_| {}).await
}

/// As [`spawn_on`], letting the caller adjust SERVER1's configuration.
pub async fn spawn_both_on_database(
    database_url: &str,
    adjust1: impl FnOnce(&mut server1::Config),
) -> Servers {
    spawn_both_on(Some(Engine::At(database_url.to_owned())), adjust1, |_| {}).await
}

/// Which database [`spawn_both_on`] gives SERVER1.
pub enum Engine {
    /// A SQLite file in the test's directory.
    Sqlite,
    /// This database URL.
    At(String),
}

/// Both servers, the targets file edited first by `edit` (given the example's text, pointed at
/// SERVER2).
pub async fn spawn_with_targets(edit: impl FnOnce(String) -> String + 'static) -> Servers {
    spawn_both_targets(None, |_| {}, |_| {}, Some(Box::new(edit))).await
}

/// The example targets file with `binding = "none"` for its `partner` target.
pub fn unbinding_partner(targets: String) -> String {
    targets.replacen("id = \"partner\"\n", "id = \"partner\"\nbinding = \"none\"\n", 1)
}

/// A targets-file edit: [`spawn_with_targets`].
type TargetsEdit = Box<dyn FnOnce(String) -> String>;

async fn spawn_both_on(
    engine: Option<Engine>,
    adjust1: impl FnOnce(&mut server1::Config),
    adjust: impl FnOnce(&mut server2::Config),
) -> Servers {
    spawn_both_targets(engine, adjust1, adjust, None).await
}

async fn spawn_both_targets(
    engine: Option<Engine>,
    adjust1: impl FnOnce(&mut server1::Config),
    adjust: impl FnOnce(&mut server2::Config),
    targets: Option<TargetsEdit>,
) -> Servers {
    let dir = tempfile::tempdir().unwrap();
    let (l1, p1) = listener();
    let (l2, p2) = listener();
    let server1_url = format!("http://127.0.0.1:{p1}");
    let server2_url = format!("http://localhost:{p2}");
    let sqlite = format!("sqlite://{}", dir.path().join("server1.sqlite3").display());
    let key = match engine {
        None => prepare_dir(dir.path(), &server2_url).await,
        Some(Engine::Sqlite) => prepare_dir_on(dir.path(), &server2_url, &sqlite).await,
        Some(Engine::At(url)) => prepare_dir_on(dir.path(), &server2_url, &url).await,
    };
    if let Some(edit) = targets {
        write_targets_text(dir.path(), &edit(targets_for(&server2_url)));
    }

    let mut config1 = server1_config(dir.path(), p1);
    adjust1(&mut config1);
    let running1 = serve_server1(config1, l1).await;

    let mut config2 = server2_config(&server1_url, &server2_url);
    adjust(&mut config2);
    let running2 = serve_server2(config2, l2).await;
    Servers { server1: server1_url, server2: server2_url, key, running1, running2, dir }
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

/// Opens a handoff on SERVER1 and returns the token from the auto-submitting page (bound to
/// `client`'s nonce cookie at SERVER2).
pub async fn open_handoff(client: &reqwest::Client, server1: &str, path: &str) -> String {
    let resp = follow_handoff(client, &format!("{server1}{path}")).await;
    assert_eq!(resp.status(), 200, "handoff page for {path}");
    let page = resp.text().await.unwrap();
    form_value(&page, "token").expect("handoff page carries a token")
}

/// Follows a handoff link as a click on SERVER1's own page would (`Sec-Fetch-Site:
/// same-origin`), through the target's start URL that binds the handoff to `client` and back
/// (`cross-site`, as a browser says after leaving SERVER1); returns the first answer that is
/// not a 303 (the handoff page, or a refusal).
pub async fn follow_handoff(client: &reqwest::Client, url: &str) -> reqwest::Response {
    let mut url = url::Url::parse(url).unwrap();
    let mut site = "same-origin";
    for _ in 0..4 {
        let resp = client.get(url.as_str()).header("sec-fetch-site", site).send().await.unwrap();
        if resp.status() != 303 {
            return resp;
        }
        let location = resp.headers()["location"].to_str().unwrap();
        url = url.join(location).unwrap();
        site = "cross-site";
    }
    panic!("a handoff link redirected more than 3 times")
}

/// The action of the form holding the field `name` in an HTML page.
pub fn form_action(html: &str, name: &str) -> Option<String> {
    let field = html.find(&format!("name=\"{name}\""))?;
    let form = html[..field].rfind("<form")?;
    let rest = &html[form..field];
    let at = rest.find("action=\"")? + 8;
    let end = rest[at..].find('"')?;
    Some(rest[at..at + end].replace("&amp;", "&"))
}

/// The person's click on SERVER1's "Open … in …?" page: posts its approval form and follows
/// the handoff from there (through the target's start URL when the handoff is not bound yet).
pub async fn confirm_handoff(c: &reqwest::Client, server1: &str, page: &str) -> reqwest::Response {
    let action = form_action(page, "approval").expect("a confirmation form");
    let approval = form_value(page, "approval").expect("an approval");
    let resp = c
        .post(format!("{server1}{action}"))
        .header("sec-fetch-site", "same-origin")
        .form(&[("approval", approval)])
        .send()
        .await
        .unwrap();
    if resp.status() != 303 {
        return resp;
    }
    let location = resp.headers()["location"].to_str().unwrap().to_owned();
    follow_handoff(c, &location).await
}

/// The "Switch user?" prompt a handoff answered with: checks the answer is a 303 to SERVER2's
/// `/handoff/switch` and returns that page.
pub async fn switch_prompt(
    c: &reqwest::Client,
    server2: &str,
    answer: reqwest::Response,
) -> String {
    assert_eq!(answer.status(), 303, "a switch prompt is reached by a redirect");
    assert_eq!(answer.headers()["location"], "/handoff/switch");
    let page = c.get(format!("{server2}/handoff/switch")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    page.text().await.unwrap()
}

/// `server1 ARGS…` as an operator runs it against these servers' directory and database.
pub fn server1_command(servers: &Servers, args: &[&str]) -> std::process::Output {
    let dir = servers.dir.path();
    std::process::Command::new(binary("server1"))
        .env_clear()
        .env("SERVER1_PUBLIC_URL", &servers.server1)
        .env("SERVER1_DATABASE_URL", std::fs::read_to_string(dir.join("database_url")).unwrap())
        .env("SERVER1_KEYS_DIR", dir.join("keys"))
        .env("SERVER1_TARGETS_FILE", dir.join("targets.toml"))
        .env("SERVER1_CLIENTS_FILE", dir.join("clients.toml"))
        .env("SERVER1_MAIL_DIR", dir.join("mail"))
        .env("RUST_LOG", "warn")
        .args(args)
        .output()
        .unwrap()
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

/// One pair of servers for the whole test process, for suites of many small independent
/// requests (the attack suite). Each request there uses a fresh client, so tests cannot see each
/// other's cookies; their logs are these servers' logs, shared by the suite.
pub fn shared_servers() -> &'static Servers {
    static SHARED: std::sync::OnceLock<Servers> = std::sync::OnceLock::new();
    SHARED.get_or_init(|| {
        // Called from a test's runtime, which cannot block on another: start them from a thread.
        // The servers run on runtimes of their own, which outlive this one.
        std::thread::spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(spawn())
        })
        .join()
        .unwrap()
    })
}

/// Reads an HTTP request head (up to its blank line, or 64 KiB) from `stream`; `None` if the
/// connection ends or fails first.
async fn read_head(stream: &mut tokio::net::TcpStream) -> Option<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::new();
    let mut buf = [0u8; 2048];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 64 * 1024 {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    Some(head)
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
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
        let heads = Arc::new(Mutex::new(Vec::new()));
        let seen = heads.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let seen = seen.clone();
                tokio::spawn(async move {
                    let Some(head) = read_head(&mut stream).await else { return };
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

/// A page on another site, as an attacker would put up: every request gets `body`. Served on
/// 127.0.0.1; browsers reach it as `attacker.test` (see `ATTACKER_HOST`), a site of its own
/// beside SERVER1's `127.0.0.1` and SERVER2's `localhost`.
pub struct AttackerSite {
    /// The page's URL, on the attacker's site.
    pub url: String,
    task: tokio::task::JoinHandle<()>,
}

/// The host name browsers in the tests resolve to 127.0.0.1 for [`AttackerSite`].
pub const ATTACKER_HOST: &str = "attacker.test";

impl AttackerSite {
    /// Serves `body` until dropped.
    pub async fn start(body: String) -> AttackerSite {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{ATTACKER_HOST}:{}/", listener.local_addr().unwrap().port());
        let body = Arc::new(body);
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let body = Arc::clone(&body);
                tokio::spawn(async move {
                    if read_head(&mut stream).await.is_none() {
                        return;
                    }
                    let reply = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: text/html; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = stream.write_all(reply.as_bytes()).await;
                });
            }
        });
        AttackerSite { url, task }
    }
}

impl Drop for AttackerSite {
    fn drop(&mut self) {
        self.task.abort();
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
        use tokio::io::AsyncWriteExt;
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
                    if read_head(&mut stream).await.is_none() {
                        return;
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
    bound_report_token(minter, audience, sub, id, None, at)
}

/// [`report_token`] carrying a browser nonce.
pub fn bound_report_token(
    minter: &handoff::Minter,
    audience: &str,
    sub: &str,
    id: &str,
    nonce: Option<&handoff::Nonce>,
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
        nonce,
        profile: None,
        lifetime: None,
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

/// The current time in whole seconds, as a JWT writes it.
pub fn now_secs() -> u64 {
    now().as_secs()
}

/// A fresh random `jti`.
pub fn fresh_jti() -> String {
    handoff::Jti::generate(&ring::rand::SystemRandom::new()).unwrap().to_string()
}

/// base64url without padding, as JWTs are written.
pub fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The JSON of a compact JWS's segment `index` (0: header, 1: claims).
fn segment(token: &str, index: usize) -> Value {
    use base64::Engine as _;
    let text = token.split('.').nth(index).expect("a compact JWS");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text).unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// The header of a token, as JSON.
pub fn token_header(token: &str) -> Value {
    segment(token, 0)
}

/// The claims of a token, as JSON (unverified).
pub fn token_claims(token: &str) -> Value {
    segment(token, 1)
}

/// Claims SERVER2 of `s` would accept from its SERVER1: `sub` viewing report 42, from now for a
/// minute, with a fresh `jti`.
pub fn claims_for(s: &Servers, sub: &str) -> Value {
    let t = now_secs();
    json!({
        "iss": s.server1, "sub": sub, "aud": s.server2,
        "iat": t, "nbf": t, "exp": t + 60, "jti": fresh_jti(),
        "authorization_details": [{"type": "report.view", "report_id": "42"}],
    })
}

/// The header SERVER1 writes, naming the key `kid`.
pub fn profile_header(kid: &str) -> Value {
    json!({"typ": "handoff+jwt", "alg": "EdDSA", "kid": kid})
}

/// The header SERVER1 of `s` writes, naming its key.
pub fn server_header(s: &Servers) -> Value {
    profile_header(s.key.kid().as_str())
}

/// SERVER1's signing key, for jsonwebtoken.
pub fn server_key(s: &Servers) -> EncodingKey {
    EncodingKey::from_ed_der(s.key.pkcs8_for_tests())
}

/// `header.claims.signature` over raw JSON texts (as given, byte for byte), signed with `alg` by
/// `key` — through the same jsonwebtoken + ring stack an attacker could use.
pub fn sign_raw(header: &str, claims: &str, alg: Algorithm, key: &EncodingKey) -> String {
    handoff::crypto::install().unwrap();
    let input = format!("{}.{}", b64(header.as_bytes()), b64(claims.as_bytes()));
    let sig = jsonwebtoken::crypto::sign(input.as_bytes(), key, alg).unwrap();
    format!("{input}.{sig}")
}

/// `header` and `claims` signed by SERVER1's real key (EdDSA): only the claim and header checks
/// stand in the way.
pub fn signed(s: &Servers, header: &Value, claims: &Value) -> String {
    sign_raw(&header.to_string(), &claims.to_string(), Algorithm::EdDSA, &server_key(s))
}

/// Claims for `sub` (see [`claims_for`]) changed by `edit`, signed by SERVER1's real key under
/// its own header.
pub fn signed_claims(s: &Servers, sub: &str, edit: impl FnOnce(&mut Value)) -> String {
    let mut claims = claims_for(s, sub);
    edit(&mut claims);
    signed(s, &server_header(s), &claims)
}

/// SERVER1's header changed by `edit`, over claims for `sub` (see [`claims_for`]), signed by
/// SERVER1's real key.
pub fn signed_header(s: &Servers, sub: &str, edit: impl FnOnce(&mut Value)) -> String {
    let mut header = server_header(s);
    edit(&mut header);
    signed(s, &header, &claims_for(s, sub))
}

/// The JWKS SERVER1 at `server1` publishes, as text.
pub async fn jwks_of(server1: &str) -> String {
    reqwest::get(format!("{server1}/.well-known/jwks.json")).await.unwrap().text().await.unwrap()
}

/// A real `redis-server` on a free loopback port, run from a temporary directory without
/// persistence, so a restart starts empty. `.ci/run` installs it (Debian's `redis-server`).
/// Killed when dropped.
pub struct RedisServer {
    /// Its port on 127.0.0.1.
    pub port: u16,
    child: Option<std::process::Child>,
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts it and waits until it answers `PING`.
    pub async fn start() -> RedisServer {
        let mut server = RedisServer::not_started();
        server.launch().await;
        server
    }

    /// One with a free port and a directory, not started yet ([`RedisServer::restart`] starts
    /// it): for a SERVER2 that starts before its Redis does.
    pub fn not_started() -> RedisServer {
        let (l, port) = listener();
        drop(l);
        RedisServer { port, child: None, dir: tempfile::tempdir().unwrap() }
    }

    /// `redis://127.0.0.1:PORT/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// `redis+unix:///DIR/redis.sock`: the same server through its socket file.
    pub fn unix_url(&self) -> String {
        format!("redis+unix://{}", self.dir.path().join("redis.sock").display())
    }

    async fn launch(&mut self) {
        let child = std::process::Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--unixsocket")
            .arg(self.dir.path().join("redis.sock"))
            .args(["--unixsocketperm", "700"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server runs (apt-get install redis-server; .ci/run installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.answers().await {
            assert!(Instant::now() < deadline, "redis-server did not answer PING");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Whether it answers `PING` now.
    pub async fn answers(&self) -> bool {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await else {
            return false;
        };
        let mut reply = [0u8; 7];
        stream.write_all(b"PING\r\n").await.is_ok()
            && stream.read_exact(&mut reply).await.is_ok()
            && &reply == b"+PONG\r\n"
    }

    /// Kills it (no shutdown, no save) and waits for it to be gone.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops it (if it runs) and starts it again on the same port: empty, as a Redis without
    /// persistence comes back.
    pub async fn restart(&mut self) {
        self.stop();
        self.launch().await;
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A client that keeps no cookies and follows no redirects: each request alone.
pub fn plain_client() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

/// A real PostgreSQL cluster for the whole test process, started on first use from a temporary
/// data directory on a free loopback port, as the unprivileged `postgres` user when the tests
/// run as root (PostgreSQL refuses root). A watcher stops it once this process is gone. Each
/// test gets a database of its own ([`PgServer::fresh_database`]). `.ci/run` installs it
/// (Debian's `postgresql`).
pub struct PgServer {
    /// Its port on 127.0.0.1.
    pub port: u16,
    dir: tempfile::TempDir,
    bin: PathBuf,
    root: bool,
}

impl PgServer {
    /// The cluster, started on first use.
    pub fn shared() -> &'static PgServer {
        static SHARED: std::sync::OnceLock<PgServer> = std::sync::OnceLock::new();
        SHARED.get_or_init(PgServer::start)
    }

    /// A cluster of the caller's own (to stop and start again); stopped when dropped.
    pub fn start() -> PgServer {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL is installed (apt-get install postgresql; .ci/run installs it)")
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .filter(|p| p.join("initdb").exists())
            .max()
            .expect("an initdb under /usr/lib/postgresql/*/bin");
        let dir = tempfile::Builder::new().prefix("handoff-pg-").tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let root = std::process::Command::new("id").arg("-u").output().unwrap().stdout == b"0\n";
        if root {
            let owner = std::process::Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(owner.success(), "chown the data directory to postgres");
        }
        let (bin, data_s) = (bin.display().to_string(), data.display().to_string());
        let mut init = std::process::Command::new(if root { "runuser" } else { "sh" });
        if root {
            init.args(["-u", "postgres", "--", "sh"]);
        }
        let init = init
            .arg("-c")
            .arg(format!(
                "'{bin}/initdb' -D '{data_s}' -U postgres --auth=trust --no-sync >'{data_s}/../initdb.log' 2>&1"
            ))
            .status()
            .unwrap();
        assert!(init.success(), "initdb failed: see {}/initdb.log", dir.path().display());
        let (l, port) = listener();
        drop(l);
        let server = PgServer { port, dir, bin: PathBuf::from(bin), root };
        server.launch();
        server
    }

    /// A shell command run as the data directory's owner (`runuser` when root).
    fn as_owner(&self, script: String) -> std::process::Command {
        let mut cmd = if self.root {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--", "sh", "-c"]);
            c
        } else {
            let mut c = std::process::Command::new("sh");
            c.arg("-c");
            c
        };
        cmd.arg(script)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        cmd
    }

    /// Starts the server on the data directory and waits until it listens. A watcher stops it
    /// (fast shutdown) once this test process has exited.
    fn launch(&self) {
        let (bin, data) = (self.bin.display(), self.dir.path().join("data"));
        let (data, port, me) = (data.display(), self.port, std::process::id());
        let dir = self.dir.path().display();
        let mut watcher = self
            .as_owner(format!(
                "'{bin}/postgres' -D '{data}' -p {port} -k '{data}' -c listen_addresses=127.0.0.1 \
             -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300 \
             >>'{data}/../server.log' 2>&1 & pg=$!; \
             while [ -d /proc/{me} ] && kill -0 $pg 2>/dev/null; do sleep 1; done; kill -INT $pg; \
             wait $pg; [ -d /proc/{me} ] || rm -rf '{dir}'"
            ))
            .spawn()
            .unwrap();
        // Reaped when it ends (with the server, or with this process).
        std::thread::spawn(move || watcher.wait());
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            let log = self.dir.path().join("server.log");
            assert!(Instant::now() < deadline, "postgres did not start: see {}", log.display());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the server now (fast shutdown) and waits until its port is closed.
    pub fn stop(&self) {
        let (bin, data) = (self.bin.display(), self.dir.path().join("data"));
        let data = data.display();
        let _ = self.as_owner(format!("'{bin}/pg_ctl' -D '{data}' stop -m fast -w")).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
            assert!(Instant::now() < deadline, "postgres did not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts it again after [`PgServer::stop`], with its data.
    pub fn restart(&self) {
        self.launch();
    }

    /// `postgres://postgres@127.0.0.1:PORT/NAME`.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// A new, empty database; returns its URL.
    pub async fn fresh_database(&self) -> String {
        let name = format!("t_{}", fresh_jti().to_ascii_lowercase().replace('-', "_"));
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = loop {
            match tokio_postgres::connect(&self.url("postgres"), tokio_postgres::NoTls).await {
                Ok((client, connection)) => {
                    tokio::spawn(connection);
                    break client;
                }
                Err(e) => {
                    assert!(Instant::now() < deadline, "postgres does not accept connections: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        };
        client.batch_execute(&format!("CREATE DATABASE \"{name}\"")).await.unwrap();
        self.url(&name)
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether this run puts SERVER1 on PostgreSQL (`HANDOFF_TEST_DATABASE=postgres`, as the second
/// pass of `make test` does) rather than SQLite.
pub fn on_postgres() -> bool {
    std::env::var("HANDOFF_TEST_DATABASE").is_ok_and(|v| v == "postgres")
}

/// Points SERVER1's `config` at the SMTP server `url`, with sign-up open (new accounts get the
/// `reports` role).
pub fn with_mail(config: &mut server1::Config, url: &str) {
    config.mail.transport =
        server1::mail::MailTransport::Smtp(server1::mail::SmtpUrl::parse(url).unwrap());
    config.mail.from = "Handoff Portal <portal@example.com>".into();
    config.accounts.signup_open = true;
    config.accounts.signup_roles = vec![server1::names::Role::parse("reports").unwrap()];
}

/// A real SMTP server on a free loopback port (`tests/smtp_sink.py`, on Python's aiosmtpd;
/// `.ci/run` installs Debian's python3-aiosmtpd). It keeps every message it accepts as a file;
/// [`SmtpServer::refuse`] makes it answer 451 (try later), [`SmtpServer::stop`] takes it down.
/// Killed when dropped.
pub struct SmtpServer {
    /// Its port on 127.0.0.1.
    pub port: u16,
    child: Option<std::process::Child>,
    dir: tempfile::TempDir,
    tls: Option<SmtpTls>,
}

/// How a test SMTP server speaks TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// STARTTLS, required before mail is accepted.
    StartTls,
    /// TLS from the first byte (`smtps://`).
    Implicit,
}

/// A message the SMTP server accepted.
#[derive(Debug, Clone)]
pub struct Mail {
    /// The `To` header.
    pub to: String,
    /// The `Subject` header (unfolded).
    pub subject: String,
    /// The whole message, quoted-printable decoded.
    pub text: String,
}

impl Mail {
    /// The links in the message that carry a one-time token, each once.
    pub fn links(&self) -> Vec<String> {
        let mut found: Vec<String> = Vec::new();
        let mut rest = self.text.as_str();
        while let Some(at) = rest.find("http") {
            let end = rest[at..]
                .find(|c: char| c.is_whitespace() || c == '"' || c == '<')
                .map_or(rest.len(), |e| at + e);
            let link = rest[at..end].replace("&amp;", "&");
            if link.contains("token=") && !found.contains(&link) {
                found.push(link);
            }
            rest = &rest[end..];
        }
        found
    }

    /// The one link in the message (panics when there is not exactly one).
    pub fn link(&self) -> String {
        let links = self.links();
        assert_eq!(links.len(), 1, "one link in {self:?}");
        links[0].clone()
    }

    /// The token in the message's link.
    pub fn token(&self) -> String {
        self.link().split("token=").nth(1).unwrap().to_owned()
    }
}

/// Parses a message as the SMTP server stored it.
pub fn parse_mail(raw: &str) -> Mail {
    let raw = raw.replace("\r\n", "\n");
    let (head, _) = raw.split_once("\n\n").unwrap_or((&raw, ""));
    let head = head.replace("\n ", " ").replace("\n\t", " ");
    let header = |name: &str| {
        head.lines()
            .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned()))
            .unwrap_or_default()
    };
    // Quoted-printable: soft line breaks go, =XX become their byte.
    let joined = raw.replace("=\n", "");
    let mut text = Vec::with_capacity(joined.len());
    let bytes = joined.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'=', Some(byte)) => {
                text.push(byte);
                i += 3;
            }
            (b, _) => {
                text.push(b);
                i += 1;
            }
        }
    }
    Mail {
        to: header("To:"),
        subject: header("Subject:"),
        text: String::from_utf8_lossy(&text).into_owned(),
    }
}

impl SmtpServer {
    /// Starts it and waits until it accepts connections.
    pub async fn start() -> SmtpServer {
        let mut server = SmtpServer::not_started();
        server.launch().await;
        server
    }

    /// One with a free port and a directory, not started yet ([`SmtpServer::start_again`]
    /// starts it): a mail server that is down.
    pub fn not_started() -> SmtpServer {
        let (l, port) = listener();
        drop(l);
        SmtpServer { port, child: None, dir: tempfile::tempdir().unwrap(), tls: None }
    }

    /// Starts one that speaks TLS with a certificate for `localhost` and 127.0.0.1, issued by
    /// a certificate authority made for it (`openssl`), whose certificate is
    /// [`SmtpServer::ca_file`].
    pub async fn start_tls(mode: SmtpTls) -> SmtpServer {
        let mut server = SmtpServer::not_started();
        server.tls = Some(mode);
        let dir = server.dir.path().join("pki");
        std::fs::create_dir(&dir).unwrap();
        let openssl = |args: &[&str]| {
            let out = std::process::Command::new("openssl")
                .args(args)
                .current_dir(&dir)
                .output()
                .expect("openssl runs");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
        openssl(
            &[
                &["req", "-x509"][..],
                &ec,
                &[
                    "-keyout",
                    "ca.key",
                    "-out",
                    "ca.pem",
                    "-days",
                    "2",
                    "-subj",
                    "/CN=Handoff test mail CA",
                ],
            ]
            .concat(),
        );
        openssl(
            &[
                &["req"][..],
                &ec,
                &["-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost"],
            ]
            .concat(),
        );
        std::fs::write(
            dir.join("ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
        )
        .unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "ext",
        ]);
        server.launch().await;
        server
    }

    /// The certificate of the authority that issued a TLS server's certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("pki").join("ca.pem")
    }

    /// The server's URL for SERVER1, by the name its certificate carries.
    pub fn tls_url(&self) -> String {
        match self.tls {
            Some(SmtpTls::StartTls) => format!("smtp://localhost:{}?tls=starttls", self.port),
            Some(SmtpTls::Implicit) => format!("smtps://localhost:{}", self.port),
            None => self.url(),
        }
    }

    /// `smtp://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    async fn launch(&mut self) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("smtp_sink.py");
        // Debian's Python, which python3-aiosmtpd installs into (a pyenv or venv `python3`
        // earlier on PATH would not have it).
        let python =
            if Path::new("/usr/bin/python3").exists() { "/usr/bin/python3" } else { "python3" };
        let mut command = std::process::Command::new(python);
        command.arg(script).arg(self.port.to_string()).arg(self.dir.path());
        if let Some(mode) = self.tls {
            let pki = self.dir.path().join("pki");
            command
                .arg(if mode == SmtpTls::StartTls { "starttls" } else { "tls" })
                .arg(pki.join("server.pem"))
                .arg(pki.join("server.key"));
        }
        // Its log (a TLS handshake a test makes fail on purpose prints a traceback) stays out
        // of the test output.
        let child = command
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("python3 runs (with python3-aiosmtpd; .ci/run installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.is_err() {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("the SMTP server exited ({status}): is python3-aiosmtpd installed?");
            }
            assert!(Instant::now() < deadline, "the SMTP server did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Starts it (again) on the same port, keeping the messages it had.
    pub async fn start_again(&mut self) {
        self.stop();
        self.launch().await;
    }

    /// Kills it and waits for it to be gone.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// While `refusing`, every message is answered 451.
    pub fn refuse(&self, refusing: bool) {
        let flag = self.dir.path().join("refuse");
        if refusing {
            std::fs::write(flag, b"").unwrap();
        } else {
            let _ = std::fs::remove_file(flag);
        }
    }

    /// Every message accepted so far, oldest first.
    pub fn messages(&self) -> Vec<Mail> {
        let mut files: Vec<_> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "eml"))
            .collect();
        files.sort();
        files.iter().map(|f| parse_mail(&std::fs::read_to_string(f).unwrap())).collect()
    }

    /// The messages to `to`, oldest first.
    pub fn messages_to(&self, to: &str) -> Vec<Mail> {
        self.messages().into_iter().filter(|m| m.to == to).collect()
    }

    /// Waits (up to `secs`) until `to` has `count` messages, and returns them.
    pub async fn wait_for(&self, to: &str, count: usize, secs: u64) -> Vec<Mail> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let got = self.messages_to(to);
            if got.len() >= count {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "{to} got {} of {count} messages within {secs} s: {got:?}",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        self.stop();
    }
}
