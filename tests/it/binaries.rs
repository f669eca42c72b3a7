//! The real binaries as processes: the CLI commands, both servers, and start-up refusals.

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use handoff_tests::*;

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn server1(dir: &std::path::Path, port: u16) -> Command {
    let mut cmd = Command::new(binary("server1"));
    cmd.env_clear()
        .env("SERVER1_LISTEN", format!("127.0.0.1:{port}"))
        .env("SERVER1_PUBLIC_URL", format!("http://127.0.0.1:{port}"))
        .env("SERVER1_DATABASE_URL", format!("sqlite://{}", dir.join("db.sqlite3").display()))
        .env("SERVER1_KEYS_DIR", dir.join("keys"))
        .env("SERVER1_TARGETS_FILE", dir.join("targets.toml"))
        .env("SERVER1_METRICS_LISTEN", "127.0.0.1:0")
        .env("RUST_LOG", "warn");
    cmd
}

/// `server1 mint` of operation `op` with argument `arg` for carol at the partner target.
fn mint_for_carol(dir: &std::path::Path, port: u16, op: &str, arg: &str) -> std::process::Output {
    let args = ["mint", "--target", "partner", "--user", "carol", "--op", op, "--arg", arg];
    server1(dir, port).args(args).output().unwrap()
}

fn free_port() -> u16 {
    listener().1
}

async fn wait_until_up(url: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if reqwest::get(url).await.is_ok_and(|r| r.status().is_success()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{url} did not come up");
}

#[tokio::test]
async fn real_processes_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let (p1, p2, m2) = (free_port(), free_port(), free_port());
    let server2_url = format!("http://localhost:{p2}");
    write_targets(dir.path(), &server2_url);

    let out = server1(dir.path(), p1).args(["keys", "generate"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let again = server1(dir.path(), p1).args(["keys", "generate"]).output().unwrap();
    assert!(!again.status.success(), "never overwrites a key");
    let rotated =
        server1(dir.path(), p1).args(["keys", "rotate", "--delay-secs", "3600"]).output().unwrap();
    assert!(rotated.status.success(), "{}", String::from_utf8_lossy(&rotated.stderr));
    let listed = server1(dir.path(), p1).args(["keys", "list"]).output().unwrap();
    let listed = String::from_utf8(listed.stdout).unwrap();
    assert_eq!(listed.lines().filter(|l| l.contains(" active ")).count(), 1, "{listed}");
    assert_eq!(listed.lines().filter(|l| l.contains(" pending ")).count(), 1, "{listed}");

    let mut add = server1(dir.path(), p1)
        .args(["users", "add", "carol", "--password-stdin", "--role", "reports"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    add.stdin.take().unwrap().write_all(format!("{PASSWORD}\n").as_bytes()).unwrap();
    assert!(add.wait_with_output().unwrap().status.success());

    let _s1 = Running(server1(dir.path(), p1).stderr(Stdio::null()).spawn().unwrap());
    wait_until_up(&format!("http://127.0.0.1:{p1}/healthz")).await;
    let _s2 = Running(
        Command::new(binary("server2"))
            .env_clear()
            .env("SERVER2_LISTEN", format!("127.0.0.1:{p2}"))
            .env("SERVER2_PUBLIC_URL", &server2_url)
            .env("SERVER2_ISSUER", format!("http://127.0.0.1:{p1}"))
            .env("SERVER2_METRICS_LISTEN", format!("127.0.0.1:{m2}"))
            .env("RUST_LOG", "warn")
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_until_up(&format!("http://127.0.0.1:{p2}/readyz")).await;
    // Operations data is on its own listener, not on the public port.
    assert_eq!(status_of(&client(), &format!("http://127.0.0.1:{p2}/metrics")).await, 404);
    let metrics = text_of(&client(), &format!("http://127.0.0.1:{m2}/metrics")).await;
    assert!(metrics.contains("handoff_rejected_total"), "{metrics}");

    // Minted after SERVER2 started: it refuses tokens issued before its start (see docs/security.md).
    let minted = mint_for_carol(dir.path(), p1, "report.view", "report_id=5");
    assert!(minted.status.success(), "{}", String::from_utf8_lossy(&minted.stderr));
    let token = String::from_utf8(minted.stdout).unwrap();
    let token = token.trim_end();
    assert_eq!(token.split('.').count(), 3, "only the token on stdout");

    let refused = mint_for_carol(dir.path(), p1, "invoice.approve", "invoice_id=A");
    assert!(!refused.status.success(), "carol lacks the billing role");
    assert!(refused.stdout.is_empty());

    // A token the CLI minted carries no browser nonce: SERVER2 refuses it by default (and it
    // is used up all the same).
    let c = client();
    let resp =
        c.post(format!("{server2_url}/handoff")).form(&[("token", token)]).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert!(resp.text().await.unwrap().contains("belongs to another browser"));
    assert_eq!(status_of(&c, &format!("{server2_url}/reports/5")).await, 403);

    // And through the browser flow.
    let browser = client();
    sign_in(&browser, &format!("http://127.0.0.1:{p1}"), "carol").await;
    let token = open_handoff(
        &browser,
        &format!("http://127.0.0.1:{p1}"),
        "/handoff/partner/report.view?report_id=6",
    )
    .await;
    let resp = browser
        .post(format!("{server2_url}/handoff"))
        .form(&[("token", &token)])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
}

/// `server1 users …` with `password` on standard input.
fn users(dir: &std::path::Path, port: u16, args: &[&str], password: &str) -> std::process::Output {
    let mut cmd = server1(dir, port)
        .arg("users")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _ = cmd.stdin.take().unwrap().write_all(format!("{password}\n").as_bytes());
    cmd.wait_with_output().unwrap()
}

/// The operator's user commands: add with an address, list, disable (sessions end at once),
/// enable, set roles, set an address, remove; each failure names its reason.
#[tokio::test]
async fn operators_manage_users_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let p1 = free_port();
    write_targets(dir.path(), "http://localhost:8002");
    assert!(server1(dir.path(), p1).args(["keys", "generate"]).output().unwrap().status.success());
    let add = [
        "add",
        "carol",
        "--password-stdin",
        "--role",
        "reports",
        "--email",
        "Carol@Example.com",
        "--display-name",
        "Carol Example",
    ];
    let out = users(dir.path(), p1, &add, PASSWORD);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let weak = users(dir.path(), p1, &["add", "dave", "--password-stdin"], "dave1234");
    assert!(!weak.status.success());
    assert!(String::from_utf8_lossy(&weak.stderr).contains("at least 12 characters"));
    let out = users(
        dir.path(),
        p1,
        &["add", "erin", "--password-stdin", "--email", "carol@example.com"],
        PASSWORD,
    );
    assert!(!out.status.success(), "the address is taken");
    let list = |expect: &str| {
        let out = users(dir.path(), p1, &["list"], "");
        assert!(out.status.success());
        let text = String::from_utf8(out.stdout).unwrap();
        let line = text.lines().find(|l| l.starts_with("carol ")).unwrap_or_default().to_owned();
        assert!(
            line.split_whitespace().collect::<Vec<_>>().join(" ").contains(expect),
            "{expect:?} in {text}"
        );
    };
    list("carol carol@example.com yes active \"Carol Example\" reports");

    let _s1 = Running(server1(dir.path(), p1).stderr(Stdio::null()).spawn().unwrap());
    let base = format!("http://127.0.0.1:{p1}");
    wait_until_up(&format!("{base}/healthz")).await;
    let browser = client();
    sign_in(&browser, &base, "carol").await;
    assert_eq!(status_of(&browser, &format!("{base}/")).await, 200);

    assert!(users(dir.path(), p1, &["disable", "carol"], "").status.success());
    list("disabled");
    assert_eq!(status_of(&browser, &format!("{base}/")).await, 303, "the session ended at once");
    assert_eq!(try_sign_in(&client(), &base, "carol", PASSWORD, None).await.status(), 403);
    assert!(users(dir.path(), p1, &["enable", "carol"], "").status.success());
    sign_in(&browser, &base, "carol").await;

    assert!(users(
        dir.path(),
        p1,
        &["set-roles", "carol", "--role", "billing", "--role", "reports"],
        ""
    )
    .status
    .success());
    list("billing,reports");
    assert!(users(dir.path(), p1, &["set-email", "carol", "carol.new@example.com"], "")
        .status
        .success());
    list("carol.new@example.com yes");
    assert!(users(dir.path(), p1, &["set-display-name", "carol", "Carol Q. Example"], "")
        .status
        .success());
    list("\"Carol Q. Example\"");
    assert!(users(dir.path(), p1, &["set-display-name", "carol", ""], "").status.success());
    list("active - billing,reports");
    for (args, why) in [
        (&["set-display-name", "carol", "   "][..], "a display name is"),
        (&["set-display-name", "carol", "Bell\u{7}"][..], "a display name is"),
        (&["set-display-name", "nobody", "Nobody"][..], "no user"),
        (&["add", "frank", "--password-stdin", "--display-name", ""][..], "a display name is"),
        (&["disable", "nobody"][..], "no user"),
        (&["set-email", "carol", "not-an-address"][..], "not an e-mail address"),
        (&["set-roles", "carol", "--role", "Bad Role"][..], "a role is"),
        (&["remove", "nobody"][..], "no user"),
    ] {
        let out = users(dir.path(), p1, args, "");
        assert!(!out.status.success(), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(why),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(users(dir.path(), p1, &["remove", "carol"], "").status.success());
    assert_eq!(status_of(&browser, &format!("{base}/")).await, 303, "removed: signed out");
    assert_eq!(try_sign_in(&client(), &base, "carol", PASSWORD, None).await.status(), 401);
    let out = users(dir.path(), p1, &["list"], "");
    assert!(!String::from_utf8(out.stdout).unwrap().contains("carol"));
}

#[test]
fn bad_configuration_stops_start_up_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let out =
        server1(dir.path(), free_port()).env("SERVER1_TOKEN_TTL_SECS", "9999").output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("SERVER1_TOKEN_TTL_SECS"), "{err}");

    let out = server1(dir.path(), free_port()).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("server1 keys generate"), "missing key says what to do: {err}");

    // Non-UTF-8 bytes in the environment: ours are named, others' ignored, nothing panics.
    use std::os::unix::ffi::OsStrExt;
    let bad = std::ffi::OsStr::from_bytes(b"/tmp/\xff\xfe");
    let out = server1(dir.path(), free_port()).env("SERVER1_KEYS_DIR", bad).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("SERVER1_KEYS_DIR: expected UTF-8"), "{err}");
    let out = server1(dir.path(), free_port()).env("UNRELATED", bad).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains("server1 keys generate"), "{err}");

    // A key and targets but no database: serving refuses (adding a user creates it).
    let dir2 = tempfile::tempdir().unwrap();
    write_targets(dir2.path(), "http://localhost:8002");
    assert!(server1(dir2.path(), free_port())
        .args(["keys", "generate"])
        .status()
        .unwrap()
        .success());
    let out = server1(dir2.path(), free_port()).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("server1 users add"), "{err}");
    assert!(!dir2.path().join("db.sqlite3").exists(), "nothing created half-way");
    // A broken targets file names the fault.
    std::fs::write(dir2.path().join("targets.toml"), "[[target]]\nid = 1\n").unwrap();
    let out = server1(dir2.path(), free_port()).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("targets file"), "{err}");

    // A keys "directory" that is a file, and a database path that is a directory: clear
    // errors, nothing created.
    let dir3 = tempfile::tempdir().unwrap();
    write_targets(dir3.path(), "http://localhost:8002");
    std::fs::write(dir3.path().join("keys"), b"not a directory").unwrap();
    let out = server1(dir3.path(), free_port()).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("keys"), "{err}");
    std::fs::remove_file(dir3.path().join("keys")).unwrap();
    assert!(server1(dir3.path(), free_port())
        .args(["keys", "generate"])
        .status()
        .unwrap()
        .success());
    std::fs::create_dir(dir3.path().join("db.sqlite3")).unwrap();
    let out = server1(dir3.path(), free_port()).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("cannot open database"), "{err}");

    // An operation-cookie key that is too short, or that other users can read: checked like
    // every secret file.
    use std::os::unix::fs::PermissionsExt;
    let short = dir.path().join("cookie.key");
    std::fs::write(&short, [7u8; 16]).unwrap();
    std::fs::set_permissions(&short, std::fs::Permissions::from_mode(0o600)).unwrap();
    let err = server2_refusing(&[("SERVER2_COOKIE_KEY_FILE", path_str(&short))]);
    assert!(err.contains("SERVER2_COOKIE_KEY_FILE") && err.contains("at least 32"), "{err}");
    let open = dir.path().join("open-cookie.key");
    std::fs::write(&open, [7u8; 32]).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = server2_refusing(&[("SERVER2_COOKIE_KEY_FILE", path_str(&open))]);
    assert!(err.contains("SERVER2_COOKIE_KEY_FILE") && err.contains("chmod 600"), "{err}");

    let err = server2_refusing(&[("SERVER2_ISSUER", "not a url"), ("SERVER2_LEEWAY_SECS", "-3")]);
    assert!(err.contains("SERVER2_ISSUER") && err.contains("SERVER2_LEEWAY_SECS"), "{err}");

    let missing = dir.path().join("missing.json");
    let err = server2_refusing(&[("SERVER2_JWKS_FILE", path_str(&missing))]);
    assert!(err.contains("SERVER2_JWKS_FILE"), "{err}");

    // A pinned JWKS that is no JWKS, or holds no usable key: it does not start either.
    for (name, text) in [("garbage.json", "{ not json"), ("empty.json", r#"{"keys": []}"#)] {
        let file = dir.path().join(name);
        std::fs::write(&file, text).unwrap();
        let err = server2_refusing(&[("SERVER2_JWKS_FILE", path_str(&file))]);
        assert!(err.contains("SERVER2_JWKS_FILE") && !err.contains("panicked"), "{name}: {err}");
    }
}

/// Runs SERVER2 with only `vars` set (and a free port to listen on), asserts that it refuses to
/// start, and returns what it wrote to standard error.
fn server2_refusing(vars: &[(&str, &str)]) -> String {
    let out = Command::new(binary("server2"))
        .env_clear()
        .env("SERVER2_LISTEN", format!("127.0.0.1:{}", free_port()))
        .env("SERVER2_METRICS_LISTEN", "127.0.0.1:0")
        .envs(vars.iter().copied())
        .output()
        .unwrap();
    assert!(!out.status.success(), "SERVER2 started with {vars:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn path_str(path: &std::path::Path) -> &str {
    path.to_str().expect("a UTF-8 temporary path")
}

#[tokio::test]
async fn pinned_jwks_file_needs_no_network() {
    let s = spawn().await;
    let file = s.dir.path().join("pinned.json");
    std::fs::write(&file, jwks_of(&s.server1).await).unwrap();
    // An issuer where nothing listens: every key must come from the file.
    let issuer = "http://127.0.0.1:9";
    let (l, port) = listener();
    let url = format!("http://localhost:{port}");
    let mut config = server2_config(issuer, &url);
    config.issuers[0].keys_from = server2::config::KeysFrom::File(file);
    let pinned = serve_server2(config, l).await;
    assert!(pinned.ready_at_start);

    let minter = handoff::Minter::new(
        s.key.clone(),
        handoff::Issuer::parse(issuer).unwrap(),
        handoff::Ttl::from_secs(60).unwrap(),
    );
    let token = report_token(&minter, &url, "u_x", "3", now());
    let resp = client()
        .post(format!("{url}/handoff"))
        .form(&[("token", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
}

/// SIGTERM: both servers stop accepting, finish what is in flight and exit 0.
#[tokio::test]
async fn sigterm_stops_both_servers_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let (p1, p2) = (free_port(), free_port());
    write_targets(dir.path(), &format!("http://localhost:{p2}"));
    assert!(server1(dir.path(), p1).args(["keys", "generate"]).status().unwrap().success());
    let mut add = server1(dir.path(), p1)
        .args(["users", "add", "dave", "--password-stdin"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    add.stdin.take().unwrap().write_all(format!("{PASSWORD}\n").as_bytes()).unwrap();
    assert!(add.wait().unwrap().success());
    let s1 = server1(dir.path(), p1).stderr(Stdio::null()).spawn().unwrap();
    wait_until_up(&format!("http://127.0.0.1:{p1}/readyz")).await;
    let jwks = jwks_of(&format!("http://127.0.0.1:{p1}")).await;
    std::fs::write(dir.path().join("jwks.json"), jwks).unwrap();
    let s2 = Command::new(binary("server2"))
        .env_clear()
        .env("SERVER2_LISTEN", format!("127.0.0.1:{p2}"))
        .env("SERVER2_PUBLIC_URL", format!("http://localhost:{p2}"))
        .env("SERVER2_ISSUER", format!("http://127.0.0.1:{p1}"))
        .env("SERVER2_JWKS_FILE", dir.path().join("jwks.json"))
        .env("SERVER2_METRICS_LISTEN", "127.0.0.1:0")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until_up(&format!("http://127.0.0.1:{p2}/readyz")).await;
    for mut child in [s1, s2] {
        let pid = child.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        let deadline = Instant::now() + Duration::from_secs(15);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "did not stop after SIGTERM");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(status.success(), "exit status {status}");
    }
    assert!(
        reqwest::get(format!("http://127.0.0.1:{p1}/healthz")).await.is_err(),
        "no longer listening"
    );
}

/// Makes a path immutable (`chattr +i`, which binds root too) until dropped.
struct Immutable(Vec<std::path::PathBuf>);

impl Immutable {
    fn set(paths: &[&std::path::Path]) -> Immutable {
        for p in paths {
            let ok = Command::new("chattr").arg("+i").arg(p).status().is_ok_and(|s| s.success());
            assert!(
                ok,
                "chattr +i {} failed: this test needs an ext2/3/4 temporary directory",
                p.display()
            );
        }
        Immutable(paths.iter().map(|p| p.to_path_buf()).collect())
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = Command::new("chattr").arg("-i").arg(p).status();
        }
    }
}

/// A database that cannot be written (immutable file and directory): SERVER1 refuses to start
/// with a message naming the file and the fix, and writes nothing.
#[test]
fn read_only_database_stops_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    write_targets(dir.path(), "http://localhost:8002");
    let port = free_port();
    let with_db = |cmd: &mut Command| {
        cmd.env("SERVER1_DATABASE_URL", format!("sqlite://{}", data.join("db.sqlite3").display()));
    };
    let mut cmd = server1(dir.path(), port);
    with_db(&mut cmd);
    assert!(cmd.args(["keys", "generate"]).status().unwrap().success());
    let mut cmd = server1(dir.path(), port);
    with_db(&mut cmd);
    let mut add = cmd
        .args(["users", "add", "erin", "--password-stdin"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    add.stdin.take().unwrap().write_all(format!("{PASSWORD}\n").as_bytes()).unwrap();
    assert!(add.wait().unwrap().success());
    let db = data.join("db.sqlite3");
    let before = std::fs::read(&db).unwrap();
    let _guard = Immutable::set(&[&db, &data]);
    let mut cmd = server1(dir.path(), port);
    with_db(&mut cmd);
    let out = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started on a read-only database");
    assert!(err.contains("cannot open database") && err.contains("SERVER1_DATABASE_URL"), "{err}");
    assert_eq!(std::fs::read(&db).unwrap(), before, "nothing written");
    assert_eq!(std::fs::read_dir(&data).unwrap().count(), 1, "nothing created beside it");
}

/// Kills a whole process group when dropped (a failed test leaves no demo running).
struct Group(u32);

impl Drop for Group {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-KILL", "--", &format!("-{}", self.0)]).status();
    }
}

/// A started demo script: the process, its process group, the password its banner shows, and
/// the lines it prints after the banner.
struct Demo {
    child: Child,
    group: Group,
    password: String,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Demo {
    /// The next line the script prints that contains `needle`, within `secs`.
    fn line_with(&self, needle: &str, secs: u64) -> String {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let line = self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .unwrap_or_else(|_| panic!("the demo printed no line with {needle:?}"));
            if line.contains(needle) {
                return line.trim().to_owned();
            }
        }
    }
}

/// Starts scripts/demo.sh on `data` (with `CARGO_TARGET_DIR` set to `target_dir` if given).
fn start_demo(
    root: &std::path::Path,
    data: &std::path::Path,
    target_dir: Option<&std::path::Path>,
) -> Demo {
    start_script("scripts/demo.sh", root, data, target_dir)
}

/// As [`start_demo`], for `script`.
fn start_script(
    script: &str,
    root: &std::path::Path,
    data: &std::path::Path,
    target_dir: Option<&std::path::Path>,
) -> Demo {
    use std::io::BufRead;
    use std::os::unix::process::CommandExt;
    let mut demo = Command::new("bash");
    demo.arg(script)
        .current_dir(root)
        .env("DEMO_DIR", data)
        .env("DEMO_NO_BUILD", "1")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0);
    match target_dir {
        Some(dir) => demo.env("CARGO_TARGET_DIR", dir),
        None => demo.env_remove("CARGO_TARGET_DIR"),
    };
    let mut child = demo.spawn().unwrap();
    let group = Group(child.id());
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let password = loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("the demo prints its banner with the password");
        if let Some(p) = line.trim().strip_prefix("with the password") {
            break p.trim().to_owned();
        }
    };
    Demo { child, group, password, lines: rx }
}

/// Ctrl-C as a terminal sends it (SIGINT to the whole process group); the script and both
/// servers must be gone within seconds.
fn ctrl_c(child: Child, group: Group) {
    ctrl_c_closes(child, group, &[8001, 8002]);
}

/// As [`ctrl_c`], checking that nothing listens on `ports` afterwards.
fn ctrl_c_closes(mut child: Child, group: Group, ports: &[u16]) {
    assert!(Command::new("kill")
        .args(["-INT", "--", &format!("-{}", group.0)])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the demo did not stop on Ctrl-C");
        std::thread::sleep(Duration::from_millis(50));
    }
    for &port in ports {
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            assert!(Instant::now() < deadline, "a server still listens on {port} after Ctrl-C");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    drop(group);
}

/// The demo scripts listen on the fixed ports 8001 and 8002: one at a time.
static DEMO_PORTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Runs scripts/demo.sh twice on a fresh data directory (with `CARGO_TARGET_DIR` set to
/// `target_dir` if given): it starts both servers and prints the demo user's password; signing
/// in with it and opening "View report 42" lands on the report at SERVER2; Ctrl-C stops
/// everything. The second run serves again with the same password (it once tried to make a
/// second key over the first).
async fn demo_serves_and_stops(target_dir: Option<&std::path::Path>) {
    let _ports = DEMO_PORTS.lock().await;
    for port in [8001, 8002, 8003] {
        assert!(
            std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(),
            "port {port} is taken: stop `make demo` before running the tests"
        );
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let data = tempfile::tempdir().unwrap();
    let (s1, s2) = ("http://127.0.0.1:8001", "http://localhost:8002");

    let demo = start_demo(root, data.path(), target_dir);
    let password = demo.password.clone();
    assert!(password.len() >= 20, "a generated password");
    let c = client();
    let resp = try_sign_in(&c, s1, "demo", &password, None).await;
    assert_eq!(resp.status(), 303, "the printed password signs in");
    let token = open_handoff(&c, s1, "/handoff/partner/report.view?report_id=42").await;
    let resp = submit(&c, s2, &token).await;
    assert_eq!(resp.status(), 303);
    let landing = resp.headers()["location"].to_str().unwrap().to_owned();
    assert_eq!(landing, "/reports/42");
    let page = text_of(&c, &format!("{s2}{landing}")).await;
    assert!(page.contains("Report 42"), "{page}");
    // The second partner, on a shared secret, shows the demo user's name.
    let desk = "http://127.0.0.1:8003";
    let token = open_handoff(&c, s1, "/handoff/desk/report.view?report_id=7").await;
    assert_eq!(token_header(&token)["alg"], "HS256");
    assert_eq!(submit(&c, desk, &token).await.status(), 303);
    let page = text_of(&c, &format!("{desk}/reports/7")).await;
    assert!(page.contains("Demo User"), "{page}");

    // A newcomer signs up, verifies and resets with the links the console shows.
    let newcomer = client();
    let page = text_of(&newcomer, &format!("{s1}/signup")).await;
    let csrf = form_value(&page, "csrf").expect("the sign-up form");
    let chosen = "walnut ferry compass 19";
    let resp = newcomer
        .post(format!("{s1}/signup"))
        .form(&[
            ("csrf", csrf.as_str()),
            ("username", "nina"),
            ("email", "nina@example.com"),
            ("password", chosen),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(demo.line_with("Mail to nina@example.com", 20).contains("Verify your e-mail address"));
    let link = demo.line_with("/verify-email?token=", 5);
    assert!(link.starts_with(&format!("{s1}/verify-email?token=")), "{link}");
    let page = text_of(&newcomer, &link).await;
    let form: Vec<(&str, String)> =
        ["csrf", "token"].iter().map(|f| (*f, form_value(&page, f).unwrap())).collect();
    let resp = newcomer.post(format!("{s1}/verify-email")).form(&form).send().await.unwrap();
    assert_eq!(resp.status(), 200, "the printed link verifies the address");
    let page = text_of(&newcomer, &format!("{s1}/forgot-password")).await;
    let csrf = form_value(&page, "csrf").unwrap();
    let resp = newcomer
        .post(format!("{s1}/forgot-password"))
        .form(&[("csrf", csrf.as_str()), ("email", "nina@example.com")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let link = demo.line_with("/reset-password?token=", 20);
    let page = text_of(&newcomer, &link).await;
    let (csrf, token) = (form_value(&page, "csrf").unwrap(), form_value(&page, "token").unwrap());
    let renewed = "harbor violet summit 64";
    let resp = newcomer
        .post(format!("{s1}/reset-password"))
        .form(&[("csrf", csrf.as_str()), ("token", token.as_str()), ("password", renewed)])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "the printed reset link works");
    assert_eq!(try_sign_in(&client(), s1, "nina", renewed, None).await.status(), 303);
    // The reset signed nina out everywhere, partners included, up to its second: a handoff in
    // that same second would be refused as from before it (docs/revocation.md).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let nina = client();
    assert_eq!(try_sign_in(&nina, s1, "nina", renewed, None).await.status(), 303);
    let token = open_handoff(&nina, s1, "/handoff/partner/report.view?report_id=7").await;
    assert_eq!(submit(&nina, s2, &token).await.status(), 303, "a new account hands off");
    ctrl_c(demo.child, demo.group);

    let again = start_demo(root, data.path(), target_dir);
    assert_eq!(again.password, password, "the second run keeps the first run's user");
    let c = client();
    assert_eq!(try_sign_in(&c, s1, "demo", &password, None).await.status(), 303);
    ctrl_c(again.child, again.group);
}

/// The binaries this test run built: in ./target by default (None), or where CARGO_TARGET_DIR
/// (set for this run) says.
fn built_in() -> Option<std::path::PathBuf> {
    let (server1, _) = (binary("server1"), binary("server2"));
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let dir = server1.parent().and_then(std::path::Path::parent).unwrap().to_path_buf();
    (dir != root.join("target")).then_some(dir)
}

/// `make demo-cluster`, end to end: scripts/demo-cluster.sh starts PostgreSQL, Redis, two
/// replicas of each server and HAProxy; the walkthrough works through the two public URLs; a
/// token is used once across the SERVER2 replicas; Ctrl-C stops every process it started.
#[tokio::test]
async fn the_demo_cluster_serves_the_walkthrough_through_haproxy_and_stops_on_ctrl_c() {
    let _ports = DEMO_PORTS.lock().await;
    const PORTS: [u16; 8] = [8001, 8002, 8011, 8012, 8021, 8022, 8031, 8032];
    for port in PORTS {
        assert!(
            std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(),
            "port {port} is taken: stop `make demo-cluster` before running the tests"
        );
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let data = tempfile::tempdir().unwrap();
    let target = built_in();
    let demo = start_script("scripts/demo-cluster.sh", root, data.path(), target.as_deref());
    let password = demo.password.clone();
    let (s1, s2) = ("http://127.0.0.1:8001", "http://localhost:8002");
    let c = client();
    assert_eq!(try_sign_in(&c, s1, "demo", &password, None).await.status(), 303);
    for id in ["42", "43", "44"] {
        let path = format!("/handoff/partner/report.view?report_id={id}");
        let token = open_handoff(&c, s1, &path).await;
        let resp = submit(&c, s2, &token).await;
        assert_eq!(resp.status(), 303, "report {id}");
        let landing = resp.headers()["location"].to_str().unwrap().to_owned();
        assert!(text_of(&c, &format!("{s2}{landing}")).await.contains(&format!("Report {id}")));
        // Whichever replica the second use reaches, it is refused: the store is shared.
        for _ in 0..2 {
            assert_eq!(submit(&plain_client(), s2, &token).await.status(), 401, "report {id}");
        }
    }
    ctrl_c_closes(demo.child, demo.group, &PORTS);
}

/// `make demo`, end to end (see [`demo_serves_and_stops`]).
#[tokio::test]
async fn the_demo_script_runs_the_product_and_stops_on_ctrl_c() {
    // The script runs the binaries this test run built.
    demo_serves_and_stops(built_in().as_deref()).await;
}

/// `make demo` with `CARGO_TARGET_DIR` set: the script finds the binaries where cargo puts
/// them, not in ./target. Its target directory holds stand-ins that note each use and run this
/// test run's binaries.
#[tokio::test]
async fn the_demo_script_finds_the_binaries_in_cargo_target_dir() {
    use std::os::unix::fs::PermissionsExt;
    let target = tempfile::tempdir().unwrap();
    let debug = target.path().join("debug");
    std::fs::create_dir(&debug).unwrap();
    let used = target.path().join("used");
    for name in ["server1", "server2"] {
        let stand_in = debug.join(name);
        let script = format!(
            "#!/bin/sh\necho {name} >> '{}'\nexec '{}' \"$@\"\n",
            used.display(),
            binary(name).display()
        );
        std::fs::write(&stand_in, script).unwrap();
        std::fs::set_permissions(&stand_in, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    demo_serves_and_stops(Some(target.path())).await;
    let used = std::fs::read_to_string(&used).unwrap_or_default();
    for name in ["server1", "server2"] {
        assert!(used.lines().any(|l| l == name), "{name} was not run from CARGO_TARGET_DIR");
    }
}

/// `server2 explain`: every check in order, the first failure's code and a hint, exit 0 only
/// for a token SERVER2 would accept — and the token is not used up.
#[test]
fn server2_explains_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let key = std::sync::Arc::new(handoff::SigningKey::generate().unwrap());
    let jwks = handoff::Jwks { keys: vec![key.public_jwk()] };
    let jwks_file = dir.path().join("jwks.json");
    std::fs::write(&jwks_file, serde_json::to_string(&jwks).unwrap()).unwrap();
    let (issuer, audience) = ("http://127.0.0.1:8001", "http://localhost:8002");
    let minter = handoff::Minter::new(
        key.clone(),
        handoff::Issuer::parse(issuer).unwrap(),
        handoff::Ttl::from_secs(60).unwrap(),
    );
    let explain = |token: &str, stdin: bool| {
        let mut cmd = Command::new(binary("server2"));
        cmd.env_clear()
            .env("SERVER2_PUBLIC_URL", audience)
            .env("SERVER2_ISSUER", issuer)
            .env("SERVER2_JWKS_FILE", &jwks_file)
            .env("SERVER2_UNBOUND_HANDOFFS", "accept")
            .arg("explain")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(Stdio::piped());
        if !stdin {
            cmd.arg(token);
        }
        let mut child = cmd.spawn().unwrap();
        child.stdin.take().unwrap().write_all(format!("{token}\n").as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        (out.status.code(), String::from_utf8(out.stdout).unwrap())
    };
    let valid = report_token(&minter, audience, "u_alice", "42", now()).into_string();
    let (code, text) = explain(&valid, true);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("ok    signature and claims") && text.contains("accepted"), "{text}");
    assert!(text.contains("explain never records the jti"));
    assert_eq!(explain(&valid, false).0, Some(0), "still usable: explain did not use it up");
    // On the default configuration the same token, which carries no browser nonce, is refused.
    let out = Command::new(binary("server2"))
        .env_clear()
        .env("SERVER2_PUBLIC_URL", audience)
        .env("SERVER2_ISSUER", issuer)
        .env("SERVER2_JWKS_FILE", &jwks_file)
        .args(["explain", &valid])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("FAIL  browser binding") && text.contains("unbound"), "{text}");

    let expired = report_token(
        &minter,
        audience,
        "u_alice",
        "42",
        handoff::UnixTime::from_secs(now_secs() - 400),
    )
    .into_string();
    let (code, text) = explain(&expired, false);
    assert_eq!(code, Some(1));
    assert!(text.contains("FAIL  signature and claims: expired"), "{text}");
    assert!(text.contains("expired 3") && text.contains("s ago"), "the clock difference: {text}");
    assert!(text.contains("docs/errors.md#expired") && text.ends_with("refused: expired\n"));

    let elsewhere =
        report_token(&minter, "http://localhost:9999", "u_alice", "42", now()).into_string();
    let (code, text) = explain(&elsewhere, false);
    assert_eq!(code, Some(1));
    assert!(
        text.contains(r#"expected aud "http://localhost:8002""#)
            && text.contains(r#"received "http://localhost:9999""#),
        "{text}"
    );

    let other_key = std::sync::Arc::new(handoff::SigningKey::generate().unwrap());
    let other = handoff::Minter::new(
        other_key,
        handoff::Issuer::parse(issuer).unwrap(),
        handoff::Ttl::from_secs(60).unwrap(),
    );
    let (code, text) =
        explain(report_token(&other, audience, "u_alice", "42", now()).as_str(), false);
    assert_eq!(code, Some(1));
    assert!(
        text.contains("unknown_kid") && text.contains(key.kid().as_str()),
        "the known ids: {text}"
    );

    let (code, text) = explain("not a token", false);
    assert_eq!(code, Some(1));
    assert!(text.contains("FAIL  size, shape and header: malformed"), "{text}");
}
