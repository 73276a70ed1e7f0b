//! `portcullis demo` in-process: it provisions its users through the real
//! SCIM endpoint, the printed bearer token works, each demo account gets
//! the access the demo policy gives it through a real sign-in at the
//! development IdP, `deprovision` ends access on the next request, and
//! shutdown removes its state. (The binary's Ctrl-C and exit codes are
//! tested in `crates/portcullis/tests/cli.rs`.)

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use parking_lot::Mutex;
use portcullis::demo::{self, DemoError, DemoOptions};
use portcullis_tests::jar::{CookieClient, Page};

#[derive(Clone, Default)]
struct Output(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Output {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn options(state_file: std::path::PathBuf) -> DemoOptions {
    let any = "127.0.0.1:0".parse().unwrap();
    DemoOptions {
        listen: any,
        idp_listen: any,
        admin_listen: any,
        state_file,
    }
}

/// The word after `label` on the banner line that starts with it.
fn field(banner: &str, label: &str) -> String {
    banner
        .lines()
        .find_map(|l| l.trim_start().strip_prefix(label))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no {label} in banner:\n{banner}"))
        .to_owned()
}

async fn sign_in(browser: &CookieClient, idp: &str, url: &str, login: &str) -> Page {
    let form = browser.follow(browser.get(url).await).await;
    let Some(transaction) = form.input("transaction") else {
        return form;
    };
    let answer = browser
        .post_form(
            &format!("{idp}/authorize"),
            &[("transaction", &transaction), ("username", login), ("password", login)],
        )
        .await;
    browser.follow(answer).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_provisions_over_scim_and_shows_access_ending_live() {
    let dir = tempfile::tempdir().unwrap();
    let state_file = dir.path().join("demo.json");
    let out = Output::default();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let demo = tokio::spawn({
        let mut out = out.clone();
        let options = options(state_file.clone());
        async move {
            demo::run(
                options,
                async {
                    let _ = stop_rx.await;
                },
                &mut out,
            )
            .await
        }
    });
    let mut banner = String::new();
    for _ in 0..400 {
        banner = String::from_utf8_lossy(&out.0.lock()).into_owned();
        if banner.contains("Ctrl-C stops") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(banner.contains("Portcullis demo is running"), "{banner}");
    assert!(banner.contains("development only"), "{banner}");
    let public = field(&banner, "Open").trim_end_matches('/').to_owned();
    let idp = field(&banner, "Dev IdP");
    let token = banner
        .split("Bearer ")
        .nth(1)
        .and_then(|t| t.split('\'').next())
        .expect("a bearer token in the curl line")
        .to_owned();
    assert!(state_file.exists());

    // The printed curl line works, and the sample app shows the identity.
    let api = CookieClient::new();
    let auth = format!("Bearer {token}");
    let page = api
        .send(
            Method::GET,
            &format!("{public}/reports/q3"),
            &[("authorization", &auth)],
            Bytes::new(),
        )
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert_eq!(page.json()["user"], "alice@example.com");
    assert!(
        page.json()["assertion_claims"]["groups"].as_array().is_some(),
        "{}",
        page.body
    );

    // Public pages need no sign-in.
    assert_eq!(api.get(&format!("{public}/public/info")).await.status, StatusCode::OK);

    // bob (engineering) reads reports but not admin pages; carol has no
    // groups; alice may do anything.
    let bob = CookieClient::new();
    let page = sign_in(&bob, &idp, &format!("{public}/reports/q3"), "bob").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.body.contains("bob@example.com"), "{}", page.body);
    assert_eq!(
        bob.get(&format!("{public}/admin/settings")).await.status,
        StatusCode::FORBIDDEN
    );
    let carol = CookieClient::new();
    assert_eq!(
        sign_in(&carol, &idp, &format!("{public}/"), "carol").await.status,
        StatusCode::FORBIDDEN
    );
    let alice = CookieClient::new();
    assert_eq!(
        sign_in(&alice, &idp, &format!("{public}/admin/settings"), "alice")
            .await
            .status,
        StatusCode::OK
    );

    // `portcullis demo deprovision bob`: his next page load is refused.
    let message = demo::set_active(&state_file, "bob", false).await.unwrap();
    assert!(message.contains("deactivated"), "{message}");
    let page = bob.follow(bob.get(&format!("{public}/reports/q3")).await).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN, "{}", page.body);
    assert!(matches!(
        demo::set_active(&state_file, "mallory", false).await,
        Err(DemoError::State { .. })
    ));
    demo::set_active(&state_file, "bob@example.com", true).await.unwrap();
    let page = sign_in(&bob, &idp, &format!("{public}/reports/q3"), "bob").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);

    stop_tx.send(()).unwrap();
    demo.await.unwrap().unwrap();
    assert!(!state_file.exists(), "the state file is removed on exit");
}

#[tokio::test]
async fn the_demo_refuses_to_listen_beyond_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(dir.path().join("demo.json"));
    opts.listen = "0.0.0.0:0".parse().unwrap();
    let err = demo::run(opts, std::future::pending(), &mut std::io::sink())
        .await
        .unwrap_err();
    assert!(matches!(err, DemoError::NotLoopback(_)), "{err}");
    let mut opts = options(dir.path().join("demo.json"));
    opts.idp_listen = "10.1.2.3:0".parse().unwrap();
    assert!(matches!(
        demo::run(opts, std::future::pending(), &mut std::io::sink()).await,
        Err(DemoError::NotLoopback(_))
    ));
}
