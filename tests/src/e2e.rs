//! End-to-end harness: a real OpenID Provider and a real browser, as child
//! processes on loopback, for tests of browser sign-in through Portcullis.
//!
//! - [`Op`] runs `tests/e2e/op.mjs`: the certified `oidc-provider` package
//!   on `127.0.0.1:0` with the clients and accounts a test gives it, its own
//!   login page with real password checks (`#username`, `#password`,
//!   `#sign-in`), automatic consent (`offline_access` yields a refresh
//!   token), RP-initiated logout (confirm with `#logout-yes`), and
//!   `/__test/...` control endpoints (see the header of `op.mjs`).
//! - [`Browser`] runs `tests/e2e/browser.mjs`: Debian's headless `chromium`
//!   driven by `playwright-core`, one JSON command per line (the protocol is
//!   in the header of `browser.mjs`); each method here is one command.
//!
//! Both need `node`, `tests/e2e/node_modules` and a chromium: run
//! `tests/e2e/setup.sh` once. Tests call [`require_e2e`] first and return
//! early when it says no: unset `PORTCULLIS_E2E` skips (loudly) on a machine
//! without the harness, `PORTCULLIS_E2E=require` turns that into a failure.
//!
//! Also small helpers such tests need without extra crates: PKCE
//! ([`pkce_verifier`], [`pkce_s256`]), reading a JWT's claims without
//! verifying it ([`jwt_claims`]), query parameters ([`query_param`]), and
//! JSON/form HTTP calls ([`get_json`], [`post_form`]).
//!
//! Not here: anything that talks to a non-loopback address, downloads a
//! browser, or verifies signatures (Portcullis's own code does that).

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// How long the OP may take to print its issuer line.
const OP_START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the browser driver may take to launch chromium.
const BROWSER_START_TIMEOUT: Duration = Duration::from_secs(60);
/// Default per-command timeout of the browser driver (same as `browser.mjs`).
const DEFAULT_OP_TIMEOUT_MS: u64 = 10_000;
/// Extra time this side waits for an answer beyond the command's own timeout.
const ANSWER_MARGIN: Duration = Duration::from_secs(5);

/// `tests/e2e`, where the node side of the harness lives.
pub fn e2e_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("e2e")
}

/// The chromium the driver launches: `$PORTCULLIS_CHROMIUM` or `/usr/bin/chromium`.
pub fn chromium_path() -> PathBuf {
    std::env::var_os("PORTCULLIS_CHROMIUM")
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from)
}

/// Whether everything the harness needs is on this machine.
pub fn e2e_available() -> Result<(), String> {
    let hint = "run tests/e2e/setup.sh";
    match std::process::Command::new("node").arg("--version").output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => return Err(format!("`node --version` failed ({}); {hint}", out.status)),
        Err(e) => return Err(format!("node is not on PATH ({e}); install Node.js >= 20, then {hint}")),
    }
    let modules = e2e_dir().join("node_modules");
    for package in ["oidc-provider", "playwright-core"] {
        if !modules.join(package).join("package.json").is_file() {
            return Err(format!("{} is missing; {hint}", modules.join(package).display()));
        }
    }
    let chromium = chromium_path();
    let executable = std::fs::metadata(&chromium).is_ok_and(|m| {
        use std::os::unix::fs::PermissionsExt;
        m.is_file() && m.permissions().mode() & 0o111 != 0
    });
    if !executable {
        return Err(format!("no chromium executable at {}; {hint}", chromium.display()));
    }
    Ok(())
}

/// Whether an end-to-end test should run, from `PORTCULLIS_E2E`:
/// `require` → must run (panics with the reason when the harness is
/// missing); `skip` → never runs; unset or anything else → runs when the
/// harness is available, else prints a `skipping: ...` line and returns false.
pub fn require_e2e() -> bool {
    let mode = std::env::var("PORTCULLIS_E2E").unwrap_or_default();
    if mode == "skip" {
        skip_notice("skipping: end-to-end test (PORTCULLIS_E2E=skip)");
        return false;
    }
    match e2e_available() {
        Ok(()) => true,
        Err(e) if mode == "require" => panic!("PORTCULLIS_E2E=require but the end-to-end harness is unavailable: {e}"),
        Err(e) => {
            skip_notice(&format!(
                "skipping: end-to-end test: {e} (set PORTCULLIS_E2E=require to make this a failure)"
            ));
            false
        }
    }
}

/// Written straight to the process's stderr, which the test harness does not
/// capture (unlike `eprintln!`), so a skip shows even when the test passes.
fn skip_notice(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Copies a child's stderr to this test's stderr, each line prefixed.
fn forward_stderr(child: &mut Child, prefix: &'static str) {
    if let Some(stderr) = child.stderr.take() {
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                eprintln!("[{prefix}] {line}");
            }
        });
    }
}

fn node_command(script: &str) -> Command {
    let dir = e2e_dir();
    let mut cmd = Command::new("node");
    cmd.arg(dir.join(script))
        .current_dir(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

// ------------------------------------------------------------------ OP

/// A running `oidc-provider` (`tests/e2e/op.mjs`); killed when dropped.
#[derive(Debug)]
pub struct Op {
    issuer: String,
    child: Child,
    /// Held open: the OP exits when it closes.
    stdin: Option<ChildStdin>,
    _config: tempfile::TempDir,
}

impl Op {
    /// Starts an OP with this configuration (see the header of `op.mjs`:
    /// `clients`, `accounts`, token lifetimes, ...). Panics when it does not
    /// come up within 30 s twice; its stderr is copied to the test's
    /// stderr. (Once, in CI, node loaded oidc-provider and then printed
    /// nothing for 30 s; the cause was not found, and a second start is
    /// cheap beside a failed suite. A retry is announced on stderr.)
    pub async fn start(config: Value) -> Op {
        match Op::try_start(&config).await {
            Some(op) => op,
            None => {
                eprintln!("[op] no issuer within {OP_START_TIMEOUT:?}; starting it once more");
                Op::try_start(&config)
                    .await
                    .unwrap_or_else(|| panic!("tests/e2e/op.mjs printed no issuer within {OP_START_TIMEOUT:?}, twice"))
            }
        }
    }

    /// One start; `None` when it printed nothing in time (it is killed).
    async fn try_start(config: &Value) -> Option<Op> {
        let dir = tempfile::tempdir().expect("temp dir for the OP config");
        let path = dir.path().join("op.json");
        std::fs::write(&path, serde_json::to_vec_pretty(config).expect("OP config")).expect("write OP config");
        let mut child = node_command("op.mjs")
            .arg(&path)
            .spawn()
            .expect("spawn node tests/e2e/op.mjs");
        forward_stderr(&mut child, "op");
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().expect("OP stdout")).lines();
        let line = match tokio::time::timeout(OP_START_TIMEOUT, stdout.next_line()).await {
            Ok(Ok(Some(line))) => line,
            Ok(Ok(None)) | Ok(Err(_)) => {
                // Let the stderr forwarder print why first.
                tokio::time::sleep(Duration::from_millis(300)).await;
                let status = child.wait().await.map(|s| s.to_string()).unwrap_or_default();
                panic!("tests/e2e/op.mjs exited before listening ({status}); its stderr is above");
            }
            Err(_) => {
                let _ = child.kill().await;
                return None;
            }
        };
        let issuer = serde_json::from_str::<Value>(&line)
            .ok()
            .and_then(|v| v["issuer"].as_str().map(str::to_owned))
            .unwrap_or_else(|| panic!("tests/e2e/op.mjs printed {line:?} instead of {{\"issuer\": ...}}"));
        // Anything else on stdout would be a bug in op.mjs; drain it so the
        // pipe never fills.
        tokio::spawn(async move {
            while let Ok(Some(line)) = stdout.next_line().await {
                eprintln!("[op stdout] {line}");
            }
        });
        Some(Op {
            issuer,
            child,
            stdin,
            _config: dir,
        })
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The discovery document (`/.well-known/openid-configuration`).
    pub async fn discovery(&self) -> Value {
        let (status, doc) = get_json(&format!("{}/.well-known/openid-configuration", self.issuer)).await;
        assert_eq!(status, StatusCode::OK, "OP discovery: {doc}");
        doc
    }

    /// Calls a `/__test/<name>` control endpoint: GET when `body` is None,
    /// else POST with the JSON body. Returns the JSON answer, or the status
    /// and answer as an error.
    pub async fn control(&self, name: &str, body: Option<Value>) -> Result<Value, String> {
        let url = format!("{}/__test/{name}", self.issuer);
        let request = match &body {
            None => http::Request::get(&url).body(Full::new(Bytes::new())),
            Some(b) => http::Request::post(&url)
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(b.to_string()))),
        }
        .map_err(|e| e.to_string())?;
        let (status, value) = send_json(request).await?;
        if status.is_success() {
            Ok(value)
        } else {
            Err(format!("{url}: {status}: {value}"))
        }
    }

    /// Stops the OP: closes its stdin (it exits cleanly), then kills it if
    /// it has not exited within 5 s.
    pub async fn stop(&mut self) {
        drop(self.stdin.take());
        if tokio::time::timeout(Duration::from_secs(5), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

// ------------------------------------------------------------------ browser

/// Where a navigation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nav {
    /// Status of the final main-frame response (after redirects); None when
    /// the navigation had no response (e.g. same-document).
    pub status: Option<u16>,
    /// URL after redirects.
    pub url: String,
}

/// A browser cookie as the driver reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Cookie {
    pub name: String,
    pub value: String,
    pub domain: String,
    pub path: String,
    pub http_only: bool,
    pub secure: bool,
    /// `Strict`, `Lax` or `None`.
    pub same_site: String,
    /// Unix seconds; -1 for a session cookie.
    pub expires: f64,
}

/// One event of a page WebSocket.
#[derive(Debug, Clone, PartialEq)]
pub struct WsEvent {
    /// `open`, `message`, `error` or `close`.
    pub kind: String,
    /// Text of a `message` (binary ones are summarized).
    pub data: Option<String>,
    /// Close code of a `close`.
    pub code: Option<u16>,
    pub reason: Option<String>,
    pub was_clean: Option<bool>,
}

/// The state of a page WebSocket opened with [`Browser::ws_open`].
#[derive(Debug, Clone, PartialEq)]
pub struct WsState {
    /// The page's `WebSocket.readyState`: 0 connecting, 1 open, 2 closing, 3 closed.
    pub ready_state: u8,
    pub events: Vec<WsEvent>,
}

impl WsState {
    pub fn is_open(&self) -> bool {
        self.ready_state == 1
    }

    /// The text of every message received so far, in order.
    pub fn messages(&self) -> Vec<&str> {
        self.events
            .iter()
            .filter(|e| e.kind == "message")
            .filter_map(|e| e.data.as_deref())
            .collect()
    }

    fn from_json(v: &Value) -> WsState {
        let events = v["events"]
            .as_array()
            .map(|events| {
                events
                    .iter()
                    .map(|e| WsEvent {
                        kind: e["type"].as_str().unwrap_or_default().to_owned(),
                        data: e["data"].as_str().map(str::to_owned),
                        code: e["code"].as_u64().and_then(|c| u16::try_from(c).ok()),
                        reason: e["reason"].as_str().map(str::to_owned),
                        was_clean: e["wasClean"].as_bool(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        WsState {
            ready_state: v["readyState"].as_u64().and_then(|s| u8::try_from(s).ok()).unwrap_or(3),
            events,
        }
    }
}

/// A headless chromium driven by `tests/e2e/browser.mjs`; killed when
/// dropped. Every method is one driver command with a timeout (10 s unless
/// the method takes one); a failed command is an `Err` with the driver's
/// message and leaves the browser usable.
#[derive(Debug)]
pub struct Browser {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Lines<BufReader<ChildStdout>>,
    next_id: u64,
    version: String,
    /// Set once the driver is gone; every later call fails with it.
    dead: Option<String>,
}

impl Browser {
    /// Launches the driver and chromium with a fresh context. Panics when
    /// the browser cannot start (the driver's reason is in the message).
    pub async fn launch() -> Browser {
        match Browser::try_launch().await {
            Ok(b) => b,
            Err(e) => panic!("{e}"),
        }
    }

    /// Like [`Browser::launch`], as a `Result`.
    pub async fn try_launch() -> Result<Browser, String> {
        let mut child = node_command("browser.mjs")
            .spawn()
            .map_err(|e| format!("spawn node browser.mjs: {e}"))?;
        forward_stderr(&mut child, "browser");
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().ok_or("browser driver stdout")?).lines();
        let line = match tokio::time::timeout(BROWSER_START_TIMEOUT, stdout.next_line()).await {
            Ok(Ok(Some(line))) => line,
            Ok(_) => {
                tokio::time::sleep(Duration::from_millis(300)).await;
                return Err("tests/e2e/browser.mjs exited before it was ready; its stderr is above".into());
            }
            Err(_) => {
                return Err(format!(
                    "tests/e2e/browser.mjs was not ready within {BROWSER_START_TIMEOUT:?}"
                ));
            }
        };
        let ready: Value = serde_json::from_str(&line).map_err(|_| format!("browser driver said {line:?}"))?;
        if ready["ready"] != json!(true) {
            return Err(format!(
                "browser driver could not start: {}",
                ready["error"].as_str().unwrap_or(&line)
            ));
        }
        let version = ready["version"].as_str().unwrap_or_default().to_owned();
        Ok(Browser {
            child,
            stdin,
            stdout,
            next_id: 1,
            version,
            dead: None,
        })
    }

    /// The chromium version string.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Sends one raw command (an object with `op` and its arguments; `id`
    /// is filled in) and returns the whole answer. For ops without a typed
    /// method, e.g. `content`, `ws_close`, `screenshot`.
    pub async fn command(&mut self, mut cmd: Value) -> Result<Value, String> {
        if let Some(dead) = &self.dead {
            return Err(dead.clone());
        }
        let id = self.next_id;
        self.next_id += 1;
        let op = cmd["op"].as_str().unwrap_or("?").to_owned();
        let timeout_ms = cmd["timeout_ms"].as_u64().unwrap_or(DEFAULT_OP_TIMEOUT_MS);
        let Some(obj) = cmd.as_object_mut() else {
            return Err("a command is a JSON object".into());
        };
        obj.insert("id".into(), json!(id));
        let mut line = cmd.to_string();
        line.push('\n');
        let Some(stdin) = self.stdin.as_mut() else {
            return Err("browser driver is closed".into());
        };
        if let Err(e) = stdin.write_all(line.as_bytes()).await {
            return Err(self.died(format!("browser driver is gone (writing {op}: {e})")).await);
        }
        let deadline = tokio::time::Instant::now() + Duration::from_millis(timeout_ms) + ANSWER_MARGIN;
        loop {
            let next = match tokio::time::timeout_at(deadline, self.stdout.next_line()).await {
                Err(_) => return Err(format!("browser driver did not answer {op} within {timeout_ms} ms")),
                Ok(Err(e)) => return Err(self.died(format!("browser driver is gone (reading: {e})")).await),
                Ok(Ok(None)) => return Err(self.died(format!("browser driver exited during {op}")).await),
                Ok(Ok(Some(next))) => next,
            };
            let Ok(answer) = serde_json::from_str::<Value>(&next) else {
                eprintln!("[browser stdout] {next}");
                continue;
            };
            // Late answers to commands this side already gave up on.
            if answer["id"] != json!(id) {
                continue;
            }
            return if answer["ok"] == json!(true) {
                Ok(answer)
            } else {
                Err(format!(
                    "{op}: {}",
                    answer["error"].as_str().unwrap_or("failed without a message")
                ))
            };
        }
    }

    async fn died(&mut self, why: String) -> String {
        let status = match tokio::time::timeout(Duration::from_secs(2), self.child.wait()).await {
            Ok(Ok(s)) => format!(" ({s})"),
            _ => String::new(),
        };
        let msg = format!("{why}{status}");
        self.dead = Some(msg.clone());
        msg
    }

    async fn op(&mut self, op: &str, args: Value) -> Result<Value, String> {
        let mut cmd = args;
        cmd["op"] = json!(op);
        self.command(cmd).await
    }

    fn nav(v: &Value) -> Nav {
        Nav {
            status: v["status"].as_u64().and_then(|s| u16::try_from(s).ok()),
            url: v["url"].as_str().unwrap_or_default().to_owned(),
        }
    }

    /// Opens `url` and waits for it to load.
    pub async fn goto(&mut self, url: &str) -> Result<Nav, String> {
        self.op("goto", json!({ "url": url })).await.map(|v| Self::nav(&v))
    }

    pub async fn fill(&mut self, selector: &str, value: &str) -> Result<(), String> {
        self.op("fill", json!({ "selector": selector, "value": value }))
            .await
            .map(drop)
    }

    /// Clicks; a navigation the click starts is waited for until it commits.
    pub async fn click(&mut self, selector: &str) -> Result<(), String> {
        self.op("click", json!({ "selector": selector })).await.map(drop)
    }

    /// Clicks and waits for the navigation it causes to load.
    pub async fn click_nav(&mut self, selector: &str) -> Result<Nav, String> {
        self.op("click_nav", json!({ "selector": selector }))
            .await
            .map(|v| Self::nav(&v))
    }

    /// Waits until the page's URL starts with `prefix` (for navigations a
    /// script starts, e.g. an auto-submitted form); returns the URL.
    pub async fn wait_url(&mut self, prefix: &str, timeout: Duration) -> Result<String, String> {
        let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        let v = self
            .op("wait_url", json!({ "prefix": prefix, "timeout_ms": timeout_ms }))
            .await?;
        Ok(v["url"].as_str().unwrap_or_default().to_owned())
    }

    /// The page's visible text (`body`'s innerText).
    pub async fn text(&mut self) -> Result<String, String> {
        self.op("text", json!({}))
            .await
            .map(|v| v["text"].as_str().unwrap_or_default().to_owned())
    }

    /// The innerText of the first element matching `selector` (waits for it).
    pub async fn text_of(&mut self, selector: &str) -> Result<String, String> {
        let v = self.op("text", json!({ "selector": selector })).await?;
        Ok(v["text"].as_str().unwrap_or_default().to_owned())
    }

    /// The page's HTML.
    pub async fn content(&mut self) -> Result<String, String> {
        self.op("content", json!({}))
            .await
            .map(|v| v["html"].as_str().unwrap_or_default().to_owned())
    }

    pub async fn url(&mut self) -> Result<String, String> {
        self.op("url", json!({}))
            .await
            .map(|v| v["url"].as_str().unwrap_or_default().to_owned())
    }

    /// The context's cookies, or only those that would be sent to `url`.
    pub async fn cookies(&mut self, url: Option<&str>) -> Result<Vec<Cookie>, String> {
        let v = self.op("cookies", json!({ "url": url })).await?;
        Ok(v["cookies"]
            .as_array()
            .map(|list| {
                list.iter()
                    .map(|c| Cookie {
                        name: c["name"].as_str().unwrap_or_default().to_owned(),
                        value: c["value"].as_str().unwrap_or_default().to_owned(),
                        domain: c["domain"].as_str().unwrap_or_default().to_owned(),
                        path: c["path"].as_str().unwrap_or_default().to_owned(),
                        http_only: c["httpOnly"].as_bool().unwrap_or(false),
                        secure: c["secure"].as_bool().unwrap_or(false),
                        same_site: c["sameSite"].as_str().unwrap_or_default().to_owned(),
                        expires: c["expires"].as_f64().unwrap_or(-1.0),
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Adds a cookie: a Playwright cookie object, e.g.
    /// `{"name", "value", "url"}` or `{"name", "value", "domain", "path"}`.
    pub async fn add_cookie(&mut self, cookie: Value) -> Result<(), String> {
        self.op("add_cookie", json!({ "cookie": cookie })).await.map(drop)
    }

    pub async fn clear_cookies(&mut self) -> Result<(), String> {
        self.op("clear_cookies", json!({})).await.map(drop)
    }

    /// Runs `script` as the body of an async function in the page and
    /// returns its result (`return ...;`) as JSON.
    pub async fn evaluate(&mut self, script: &str) -> Result<Value, String> {
        self.op("evaluate", json!({ "script": script }))
            .await
            .map(|mut v| v["value"].take())
    }

    /// Opens a WebSocket in the page as `window.__ws[name]`; returns once it
    /// opened, failed or closed.
    pub async fn ws_open(&mut self, name: &str, url: &str) -> Result<WsState, String> {
        self.op("ws_open", json!({ "name": name, "url": url }))
            .await
            .map(|v| WsState::from_json(&v))
    }

    pub async fn ws_state(&mut self, name: &str) -> Result<WsState, String> {
        self.op("ws_state", json!({ "name": name }))
            .await
            .map(|v| WsState::from_json(&v))
    }

    pub async fn ws_send(&mut self, name: &str, data: &str) -> Result<(), String> {
        self.op("ws_send", json!({ "name": name, "data": data }))
            .await
            .map(drop)
    }

    /// Polls the socket until `done` holds for its state, or `timeout` passes.
    pub async fn ws_wait(
        &mut self,
        name: &str,
        timeout: Duration,
        done: impl Fn(&WsState) -> bool,
    ) -> Result<WsState, String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let state = self.ws_state(name).await?;
            if done(&state) {
                return Ok(state);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!(
                    "WebSocket {name}: condition not met within {timeout:?}; last state {state:?}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Saves a full-page PNG (to look at when a test fails).
    pub async fn screenshot(&mut self, path: &Path) -> Result<(), String> {
        self.op("screenshot", json!({ "path": path })).await.map(drop)
    }

    /// Replaces the context: no cookies, no storage, a new page.
    pub async fn new_context(&mut self) -> Result<(), String> {
        self.op("new_context", json!({})).await.map(drop)
    }

    /// Closes the browser and waits for the driver to exit (killing it after 10 s).
    pub async fn close(mut self) -> Result<(), String> {
        let answer = self.op("close", json!({})).await;
        drop(self.stdin.take());
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
        answer.map(drop)
    }
}

// ------------------------------------------------------------------ helpers

/// A fresh PKCE code verifier (64 characters from the unreserved set).
pub fn pkce_verifier() -> String {
    let mut out = String::with_capacity(64);
    for i in 0..4u64 {
        let mut h = RandomState::new().build_hasher();
        h.write_u64(i);
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos(),
        );
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out
}

/// The PKCE `S256` challenge of a verifier: base64url(SHA-256(verifier)).
pub fn pkce_s256(verifier: &str) -> String {
    base64url_encode(&sha256(verifier.as_bytes()))
}

/// The claims of a JWT, decoded without verifying anything.
pub fn jwt_claims(jwt: &str) -> Result<Value, String> {
    let payload = jwt.split('.').nth(1).ok_or("not a JWT")?;
    let bytes = base64url_decode(payload).ok_or("JWT payload is not base64url")?;
    serde_json::from_slice(&bytes).map_err(|e| format!("JWT payload is not JSON: {e}"))
}

/// The decoded value of query parameter `name` in `url`, if present.
pub fn query_param(url: &str, name: &str) -> Option<String> {
    let query = url.split_once('?')?.1;
    let query = query.split_once('#').map_or(query, |(q, _)| q);
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k) == name).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => match s.get(i + 1..i + 3).and_then(|hex| u8::from_str_radix(hex, 16).ok()) {
                Some(b) => {
                    out.push(b);
                    i += 3;
                    continue;
                }
                None => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// GETs `url`; the status and the JSON body (`Null` if not JSON).
pub async fn get_json(url: &str) -> (StatusCode, Value) {
    let request = http::Request::get(url)
        .body(Full::new(Bytes::new()))
        .expect("GET request");
    send_json(request).await.unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

/// POSTs `form` as `application/x-www-form-urlencoded`; the status and the
/// JSON body (`Null` if not JSON).
pub async fn post_form(url: &str, form: &[(&str, &str)]) -> (StatusCode, Value) {
    let body = form
        .iter()
        .map(|(k, v)| format!("{}={}", crate::encode(k), crate::encode(v)))
        .collect::<Vec<_>>()
        .join("&");
    let request = http::Request::post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Full::new(Bytes::from(body)))
        .expect("POST request");
    send_json(request).await.unwrap_or_else(|e| panic!("POST {url}: {e}"))
}

async fn send_json(request: http::Request<Full<Bytes>>) -> Result<(StatusCode, Value), String> {
    let response = tokio::time::timeout(Duration::from_secs(10), crate::http_client().request(request))
        .await
        .map_err(|_| "no answer within 10 s".to_owned())?
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
}

const B64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn base64url_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | (u32::from(b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(B64URL[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

fn base64url_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.trim_end_matches('=');
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' | b'+' => 62,
            b'_' | b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// SHA-256 (FIPS 180-4), for PKCE challenges only.
fn sha256(data: &[u8]) -> [u8; 32] {
    const K: [u32; 64] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5, 0xd807aa98,
        0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786,
        0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8,
        0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13,
        0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819,
        0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a,
        0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2,
    ];
    let mut h: [u32; 8] = [
        0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
    ];
    let mut msg = data.to_vec();
    let bit_len = (data.len() as u64).wrapping_mul(8);
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&bit_len.to_be_bytes());
    for block in msg.chunks_exact(64) {
        let mut w = [0u32; 64];
        for (i, word) in block.chunks_exact(4).enumerate() {
            w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..64 {
            let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
            let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16].wrapping_add(s0).wrapping_add(w[i - 7]).wrapping_add(s1);
        }
        let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut hh] = h;
        for i in 0..64 {
            let s1 = e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25);
            let ch = (e & f) ^ (!e & g);
            let t1 = hh
                .wrapping_add(s1)
                .wrapping_add(ch)
                .wrapping_add(K[i])
                .wrapping_add(w[i]);
            let s0 = a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22);
            let maj = (a & b) ^ (a & c) ^ (b & c);
            let t2 = s0.wrapping_add(maj);
            hh = g;
            g = f;
            f = e;
            e = d.wrapping_add(t1);
            d = c;
            c = b;
            b = a;
            a = t1.wrapping_add(t2);
        }
        for (x, y) in h.iter_mut().zip([a, b, c, d, e, f, g, hh]) {
            *x = x.wrapping_add(y);
        }
    }
    let mut out = [0u8; 32];
    for (chunk, word) in out.chunks_exact_mut(4).zip(h) {
        chunk.copy_from_slice(&word.to_be_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_s256_matches_rfc7636_appendix_b() {
        assert_eq!(
            pkce_s256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn base64url_round_trips() {
        for len in 0..40 {
            let data: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            assert_eq!(base64url_decode(&base64url_encode(&data)).as_deref(), Some(&data[..]));
        }
    }

    #[test]
    fn query_params_decode() {
        let url = "http://127.0.0.1:1/cb?code=a%2Fb&state=x+y&iss=http%3A%2F%2Fh#frag";
        assert_eq!(query_param(url, "code").as_deref(), Some("a/b"));
        assert_eq!(query_param(url, "state").as_deref(), Some("x y"));
        assert_eq!(query_param(url, "iss").as_deref(), Some("http://h"));
        assert_eq!(query_param(url, "nope"), None);
    }
}
