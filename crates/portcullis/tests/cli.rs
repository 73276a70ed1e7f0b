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
         [policy]\ndir = \"nope\"\n",
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
    let mut line = String::new();
    loop {
        line.clear();
        let n = reader.read_line(&mut line).expect("read stderr");
        assert!(n > 0, "portcullis exited before logging {message:?}");
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
            && v["message"] == message
        {
            return v;
        }
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
