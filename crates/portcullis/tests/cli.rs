//! The `portcullis` binary as an operator runs it: exit codes, messages that
//! locate config errors, and `serve` starting, answering health checks and
//! stopping cleanly on SIGTERM.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn portcullis() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_portcullis"));
    cmd.env_remove("PORTCULLIS_LOG").env_remove("RUST_LOG");
    cmd
}

fn write_config(dir: &Path, text: &str) -> std::path::PathBuf {
    std::fs::create_dir_all(dir.join("policies")).expect("policies dir");
    let path = dir.join("portcullis.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

#[test]
fn version_is_printed() {
    let out = portcullis().arg("--version").output().expect("run");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.trim(), format!("portcullis {}", env!("CARGO_PKG_VERSION")));
}

#[test]
fn check_lists_every_problem_and_exits_1() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let config = write_config(
        tmp.path(),
        "[server]\nlisten = \"127.0.0.1:8080\"\nlisten_addr = \"x\"\n[stor]\npath = \"d\"\n",
    );
    let out = portcullis()
        .arg("check")
        .arg("--config")
        .arg(&config)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let file = config.display();
    assert!(
        err.contains(&format!("{file}:3:1: server.listen_addr: unknown key")),
        "{err}"
    );
    assert!(err.contains(&format!("{file}:4:2: stor: unknown key")), "{err}");
    assert!(err.contains("2 problem(s)"), "{err}");
}

#[test]
fn check_follows_references() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let config = write_config(
        tmp.path(),
        "[[scim.clients]]\nname = \"okta\"\ntoken_sha256_env = \"PORTCULLIS_TEST_UNSET_VAR\"\n\
         [[scim.clients]]\nname = \"entra\"\ntoken_sha256_file = \"missing.sha256\"\n\
         [policy]\ndir = \"nope\"\n\
         [server.tls]\ncert = \"missing.crt\"\nkey = \"missing.key\"\n\
         [assertion]\nkey_file = \"missing.pem\"\n\
         [[routes]]\nname = \"es\"\nupstream = \"https://127.0.0.1:9200\"\nupstream_ca = \"no-ca.pem\"\n\
         [routes.credentials]\nbasic_file = \"no-secret\"\n\
         [oidc]\nissuer = \"https://idp.example.com\"\nca_file = \"no-idp-ca.pem\"\n\
         client_id = \"portcullis\"\nclient_secret_file = \"no-client-secret\"\n\
         [alerts]\nwebhook = \"https://hooks.example.com/x\"\nwebhook_ca = \"no-hook-ca.pem\"\n",
    );
    let out = portcullis()
        .env_remove("PORTCULLIS_TEST_UNSET_VAR")
        .arg("check")
        .arg("--config")
        .arg(&config)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("scim.clients[0].token_sha256: environment variable PORTCULLIS_TEST_UNSET_VAR is not set"),
        "{err}"
    );
    assert!(
        err.contains("scim.clients[1].token_sha256: cannot read secret file"),
        "{err}"
    );
    assert!(err.contains("policy.dir:"), "{err}");
    assert!(
        err.contains("server.tls: cannot read") && err.contains("missing.crt"),
        "{err}"
    );
    assert!(err.contains("assertion.key_file:"), "{err}");
    assert!(
        err.contains("routes[0]: cannot read") && err.contains("no-ca.pem"),
        "{err}"
    );
    assert!(err.contains("routes[0].credentials: cannot read secret file"), "{err}");
    assert!(err.contains("oidc.client_secret: cannot read secret file"), "{err}");
    assert!(
        err.contains("oidc.ca_file: cannot read") && err.contains("no-idp-ca.pem"),
        "{err}"
    );
    assert!(
        err.contains("alerts.webhook_ca: cannot read") && err.contains("no-hook-ca.pem"),
        "{err}"
    );

    let good = write_config(tmp.path(), "[store]\npath = \"data\"\n");
    let out = portcullis()
        .arg("check")
        .arg("--config")
        .arg(&good)
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains(": ok"));
}

#[test]
fn serve_refuses_invalid_config_with_exit_64() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let config = write_config(tmp.path(), "[admin]\nlisten = \"nowhere\"\n");
    let out = portcullis()
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "{}:2:10: admin.listen: invalid socket address",
            config.display()
        )),
        "{err}"
    );
}

#[test]
fn serve_reports_a_store_it_cannot_read_instead_of_starting_empty() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = tmp.path().join("data");
    std::fs::create_dir_all(&store).expect("mkdir");
    std::fs::write(store.join("conf"), b"not a sled config").expect("corrupt");
    std::fs::write(store.join("db"), b"garbage").expect("corrupt");
    let config = write_config(
        tmp.path(),
        "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[store]\npath = \"data\"\n",
    );
    let out = portcullis()
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("store"), "{err}");
}

/// Reads one JSON log line with the given message from the child's stderr.
fn wait_for_log(reader: &mut impl BufRead, message: &str) -> serde_json::Value {
    try_wait_for_log(reader, message)
        .unwrap_or_else(|log| panic!("portcullis exited before logging {message:?}:\n{log}"))
}

/// Like [`wait_for_log`]; when the child's log ends first, everything it
/// said.
fn try_wait_for_log(reader: &mut impl BufRead, message: &str) -> Result<serde_json::Value, String> {
    let mut log = String::new();
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).expect("read stderr") == 0 {
            return Err(log);
        }
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
            && v["message"] == message
        {
            return Ok(v);
        }
        log.push_str(&line);
    }
}

fn http_get(addr: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").expect("write");
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("read");
    let status = resp
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status code");
    let body = resp.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
    (status, body)
}

#[test]
fn serve_answers_health_and_stops_on_sigterm() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let config = write_config(
        tmp.path(),
        "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[store]\npath = \"data\"\n",
    );
    let mut child = portcullis()
        .args(["--log-format", "json", "serve", "--config"])
        .arg(&config)
        .stderr(Stdio::piped())
        .spawn()
        .expect("start");
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
    let listening = wait_for_log(&mut stderr, "listening");
    let admin = listening["admin"].as_str().expect("admin address").to_owned();
    let server = listening["server"].as_str().expect("server address").to_owned();

    assert_eq!(http_get(&admin, "/healthz").0, 200);
    let (status, body) = http_get(&admin, "/readyz");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("ready"));
    assert_eq!(http_get(&admin, "/nope").0, 404);
    let (status, body) = http_get(&server, "/anything");
    assert_eq!(status, 404);
    assert!(body.contains("no_route"), "{body}");

    let start = Instant::now();
    let pid = child.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().expect("kill");
    assert!(killed.success());
    wait_for_log(&mut stderr, "stopped");
    let status = child.wait().expect("wait");
    assert!(status.success(), "{status}");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "took {:?} to stop",
        start.elapsed()
    );
    assert!(tmp.path().join("data").join("db").exists(), "the store was created");
}

/// A `portcullis serve` started by [`serve_with_admin_port`].
struct Served {
    child: std::process::Child,
    config: std::path::PathBuf,
    admin: String,
    listening: serde_json::Value,
    /// Drains the log so the server never blocks on a full pipe; returns it.
    drain: std::thread::JoinHandle<String>,
}

/// Starts `portcullis serve` with a JSON log on the configuration
/// `config_for(admin address)` written into `dir`, with the admin listener
/// on a free port (commands such as `explain` and `status` need a real
/// one), and waits for its "listening" line. The port is free when chosen
/// but could be taken before the server binds it: a start that fails is
/// retried on another port, a few times.
fn serve_with_admin_port(dir: &Path, config_for: impl Fn(&str) -> String) -> Served {
    let mut failures = String::new();
    for _ in 0..3 {
        let admin = format!("127.0.0.1:{}", free_port());
        let config = write_config(dir, &config_for(&admin));
        let mut child = portcullis()
            .args(["--log-format", "json", "serve", "--config"])
            .arg(&config)
            .stderr(Stdio::piped())
            .spawn()
            .expect("start");
        let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
        match try_wait_for_log(&mut stderr, "listening") {
            Ok(listening) => {
                let drain = std::thread::spawn(move || {
                    let mut sink = String::new();
                    let _ = stderr.read_to_string(&mut sink);
                    sink
                });
                return Served {
                    child,
                    config,
                    admin,
                    listening,
                    drain,
                };
            }
            Err(log) => {
                let _ = child.wait();
                failures.push_str(&log);
            }
        }
    }
    panic!("portcullis did not start in three tries:\n{failures}");
}

fn free_port() -> u16 {
    // Ask the kernel for a free port; the tiny window before the server binds
    // it is acceptable for a test on loopback.
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

const APP_POLICY: &str = "[roles.staff]\nallow = [{ route = \"app\", methods = [\"GET\"], paths = [\"/a/**\"] }]\n[groups]\n\"staff\" = [\"staff\"]\n";

#[test]
fn serve_refuses_a_policy_that_does_not_compile() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let config = write_config(
        tmp.path(),
        "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[store]\npath = \"data\"\n\
         [[routes]]\nname = \"app\"\nupstream = \"http://127.0.0.1:1\"\n",
    );
    std::fs::write(
        tmp.path().join("policies/app.toml"),
        "[roles.x]\nallow = [{ route = \"nope\", paths = [\"/\"] }]\n",
    )
    .expect("policy");
    let out = portcullis()
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("app.toml:2:20"), "{err}");
    assert!(err.contains("nope"), "{err}");
}

#[test]
fn policy_test_reports_failures_with_the_deciding_rule() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let config = write_config(
        tmp.path(),
        "[[routes]]\nname = \"app\"\nhost = \"app.example.com\"\nupstream = \"http://127.0.0.1:1\"\n",
    );
    std::fs::write(tmp.path().join("policies/app.toml"), APP_POLICY).expect("policy");
    std::fs::create_dir(tmp.path().join("policies/tests")).expect("tests dir");
    std::fs::write(
        tmp.path().join("policies/tests/app.toml"),
        "[[case]]\nname = \"staff reads\"\ngroups = [\"staff\"]\nmethod = \"GET\"\nurl = \"https://app.example.com/a/1\"\nexpect = \"allow\"\n\
         [[case]]\nname = \"staff deletes\"\ngroups = [\"staff\"]\nmethod = \"DELETE\"\nurl = \"https://app.example.com/a/1\"\nexpect = \"allow\"\n",
    )
    .expect("cases");
    let out = portcullis()
        .args(["policy", "test", "--config"])
        .arg(&config)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("staff deletes"), "{text}");
    assert!(text.contains("no rule matched"), "{text}");
    assert!(text.lines().any(|l| l == "1 passed, 1 failed"), "{text}");
}

fn get_json(addr: &str, path: &str) -> serde_json::Value {
    let (status, body) = http_get(addr, path);
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).expect("json body")
}

fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn explain_asks_the_running_server_and_sighup_reloads_the_policy() {
    let tmp = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(tmp.path().join("policies")).expect("policies dir");
    let policy_file = tmp.path().join("policies/app.toml");
    std::fs::write(&policy_file, APP_POLICY).expect("policy");
    let Served {
        mut child,
        config,
        admin,
        drain,
        ..
    } = serve_with_admin_port(tmp.path(), |admin| {
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"{admin}\"\n[store]\npath = \"data\"\n\
             [[routes]]\nname = \"app\"\nupstream = \"http://127.0.0.1:1\"\n"
        )
    });

    // Break the policy file: the server keeps its policy and counts the failure.
    std::fs::write(
        &policy_file,
        "[roles.staff]\nallow = [{ route = \"nope\", paths = [\"/\"] }]\n",
    )
    .expect("break");
    let failures = || {
        get_json(&admin, "/readyz")["policy"]["reload_failures"]
            .as_u64()
            .unwrap_or(0)
    };
    wait_until("the watcher to reject the broken policy", || failures() >= 1);

    // explain still answers, from the server's live policy (the files on disk
    // would not compile, so a local answer would be an error).
    let out = portcullis()
        .args([
            "explain",
            "--method",
            "GET",
            "--url",
            "/a/1",
            "--user",
            "nobody@example.com",
            "--config",
        ])
        .arg(&config)
        .output()
        .expect("explain");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.starts_with("DENY GET /a/1"), "{text}");
    assert!(text.contains("not provisioned"), "{text}");
    assert!(text.contains("route:  app, path /a/1"), "{text}");

    // SIGHUP makes the server try again (and fail again: the file is still broken).
    let before = failures();
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .expect("kill")
            .success()
    );
    wait_until("SIGHUP to trigger a reload", || failures() > before);
    assert_eq!(get_json(&admin, "/readyz")["status"], "ready");

    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill")
            .success()
    );
    let status = child.wait().expect("wait");
    assert!(status.success(), "{status}");
    let log = drain.join().expect("log");
    assert!(log.contains("policy reload rejected"), "{log}");
    assert!(log.contains("SIGHUP"), "{log}");
}

#[test]
fn check_warns_about_unqualified_groups_with_several_scim_clients() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let hash = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    let config = write_config(
        tmp.path(),
        &format!(
            "[[scim.clients]]\nname = \"okta\"\ntoken_sha256 = \"{hash}\"\n\
             [[scim.clients]]\nname = \"entra\"\ntoken_sha256 = \"{hash}\"\n\
             [[routes]]\nname = \"app\"\nupstream = \"http://127.0.0.1:1\"\n"
        ),
    );
    std::fs::write(tmp.path().join("policies/app.toml"), APP_POLICY).expect("policy");
    let out = portcullis()
        .arg("check")
        .arg("--config")
        .arg(&config)
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("2 SCIM clients are configured"), "{err}");
    assert!(err.contains("unqualified groups (staff)"), "{err}");
}

#[test]
fn scim_token_prints_a_token_and_its_hash() {
    let out = portcullis()
        .args(["scim-token", "--client", "okta"])
        .output()
        .expect("run");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let token = text.lines().nth(1).map(str::trim).expect("token line");
    assert_eq!(token.len(), 64, "{text}");
    let hash = portcullis_scim::auth::token_sha256_hex(token);
    assert!(text.contains(&format!("token_sha256 = \"{hash}\"")), "{text}");
    assert!(text.contains("name = \"okta\""), "{text}");
}

#[test]
fn demo_runs_takes_a_deprovision_from_a_second_command_and_stops_on_ctrl_c() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let state = tmp.path().join("demo.json");
    let mut child = portcullis()
        .args([
            "demo",
            "--listen",
            "127.0.0.1:0",
            "--idp-listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--state-file",
        ])
        .arg(&state)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut banner = String::new();
    while !banner.contains("Ctrl-C stops") {
        let mut line = String::new();
        assert!(stdout.read_line(&mut line).expect("read") > 0, "demo exited: {banner}");
        banner.push_str(&line);
    }
    assert!(banner.contains("alice@example.com") && banner.contains("curl -H 'Authorization: Bearer "));

    let out = portcullis()
        .args(["demo", "deprovision", "carol", "--state-file"])
        .arg(&state)
        .output()
        .expect("deprovision");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("carol@example.com is now deactivated"));
    let out = portcullis()
        .args(["demo", "deprovision", "nobody", "--state-file"])
        .arg(&state)
        .output()
        .expect("deprovision");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no demo user \"nobody\""));

    let start = Instant::now();
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .expect("kill")
            .success()
    );
    let status = child.wait().expect("wait");
    assert!(status.success(), "{status}");
    assert!(start.elapsed() < Duration::from_secs(10), "took {:?}", start.elapsed());
    assert!(!state.exists(), "state file removed");

    // Without a running demo, the second command says so.
    let out = portcullis()
        .args(["demo", "deprovision", "bob", "--state-file"])
        .arg(&state)
        .output()
        .expect("deprovision");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is the demo running?"));
}

#[test]
fn demo_refuses_a_non_loopback_address_with_exit_64() {
    let out = portcullis()
        .args(["demo", "--listen", "0.0.0.0:0"])
        .output()
        .expect("demo");
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("loopback only"));
}

#[test]
fn audit_verify_and_query_read_the_trail() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("audit.log");
    let log = portcullis_audit::AuditLog::open(portcullis_audit::AuditConfig::file(&path)).expect("open");
    for (user, decision) in [
        ("alice", "allow"),
        ("bob", "deny"),
        ("alice", "deny"),
        ("carol", "allow"),
    ] {
        let record = serde_json::json!({"kind": "access", "user": user, "decision": decision});
        log.log(record.as_object().expect("object").clone()).expect("log");
    }
    log.close().expect("close");

    let out = portcullis()
        .args(["audit", "verify"])
        .arg(&path)
        .output()
        .expect("verify");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("ok: 4 record(s)"));

    let out = portcullis()
        .args([
            "audit",
            "query",
            "--user",
            "alice",
            "--decision",
            "deny",
            "--since",
            "1h",
        ])
        .arg(&path)
        .output()
        .expect("query");
    assert!(out.status.success());
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["seq"], 3);

    // An edit to the second record breaks the link to the third.
    let text = std::fs::read_to_string(&path).expect("read");
    std::fs::write(&path, text.replacen("\"bob\"", "\"eve\"", 1)).expect("write");
    let out = portcullis()
        .args(["audit", "verify"])
        .arg(&path)
        .output()
        .expect("verify");
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("BROKEN") && stdout.contains("line 3"), "{stdout}");

    let out = portcullis().args(["audit", "verify"]).output().expect("verify");
    assert_eq!(out.status.code(), Some(64), "no files named");
}

#[test]
fn reports_read_the_store_when_no_server_runs() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let config = write_config(
        tmp.path(),
        "[admin]\nlisten = \"127.0.0.1:1\"\n[store]\npath = \"data\"\n[[routes]]\nname = \"app\"\nupstream = \"http://127.0.0.1:1\"\n",
    );
    std::fs::write(
        tmp.path().join("policies/p.toml"),
        "[roles.reader]\nallow = [{ route = \"app\", paths = [\"/**\"] }]\n[groups]\n\"readers\" = [\"reader\"]\n",
    )
    .expect("policy");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let d = portcullis_directory::Directory::open(&tmp.path().join("data"), Default::default()).expect("store");
        let okta: portcullis_directory::Id = std::sync::Arc::from("okta");
        let obj = |v: serde_json::Value| v.as_object().cloned().expect("object");
        let alice = d
            .create_user(&okta, obj(serde_json::json!({"userName": "alice", "active": true})))
            .await
            .expect("alice");
        d.create_user(&okta, obj(serde_json::json!({"userName": "bob", "active": true})))
            .await
            .expect("bob");
        d.create_group(
            &okta,
            obj(serde_json::json!({"displayName": "readers"})),
            vec![alice.id.to_string()],
        )
        .await
        .expect("group");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("time")
            .as_secs() as i64;
        d.activity()
            .record(&[(alice.id.to_string(), now)])
            .await
            .expect("activity");
    });
    let out = portcullis()
        .args(["report", "access", "--config"])
        .arg(&config)
        .output()
        .expect("report");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let csv = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "user,user_id,active,groups,roles,last_access");
    assert!(
        lines[1].starts_with("alice,") && lines[1].contains(",okta/readers,reader,2"),
        "{csv}"
    );
    assert!(lines[2].starts_with("bob,") && lines[2].ends_with(",true,,,"), "{csv}");

    let out = portcullis()
        .args(["report", "stale", "--days", "30", "--format", "json", "--config"])
        .arg(&config)
        .output()
        .expect("report");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(rows.as_array().map(Vec::len), Some(1), "{rows}");
    assert_eq!(rows[0]["user"], "bob");
}

#[test]
fn status_shows_each_scim_feed_and_exits_2_while_one_is_silent() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let token = "status-test-token";
    let hash = portcullis_scim::auth::token_sha256_hex(token);
    let other = portcullis_scim::auth::token_sha256_hex("another-token");
    let Served {
        mut child,
        config,
        listening,
        drain,
        ..
    } = serve_with_admin_port(tmp.path(), |admin| {
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"{admin}\"\n[store]\npath = \"data\"\n\
             [[scim.clients]]\nname = \"okta\"\ntoken_sha256 = \"{hash}\"\n\
             [[scim.clients]]\nname = \"entra\"\ntoken_sha256 = \"{other}\"\n\
             [alerts]\nscim_silence = \"1s\"\n"
        )
    });
    let server = listening["server"].as_str().expect("server address").to_owned();

    let status = |format: &str| {
        portcullis()
            .args(["status", "--format", format, "--config"])
            .arg(&config)
            .output()
            .expect("status")
    };
    // Nothing has pushed yet and the window is not over: healthy.
    let out = status("text");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("okta") && text.contains("entra") && text.contains("never"),
        "{text}"
    );

    // okta pushes; entra stays silent past the window.
    std::thread::sleep(Duration::from_millis(1200));
    let mut stream = TcpStream::connect(&server).expect("connect");
    write!(
        stream,
        "GET /scim/v2/Users HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    let out = status("json");
    assert_eq!(out.status.code(), Some(2), "a silent feed exits 2");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let clients = json["scim_clients"].as_array().expect("clients");
    let of = |name: &str| clients.iter().find(|c| c["client"] == name).expect("listed").clone();
    assert_eq!(of("entra")["silent"], true, "{json}");
    assert_eq!(of("okta")["silent"], false, "{json}");
    assert!(of("okta")["last_success"].as_str().is_some(), "{json}");
    let text = String::from_utf8_lossy(&status("text").stdout).into_owned();
    assert!(
        text.lines().any(|l| l.starts_with("entra") && l.ends_with("SILENT")),
        "{text}"
    );

    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill")
            .success()
    );
    assert!(child.wait().expect("wait").success());
    drain.join().expect("drain");

    // No server: a clear error, exit 1.
    let out = status("text");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no server answers"));
}
