//! Sessions against a real store in a temp dir, with a clock the tests
//! move: lifetimes, revocation, persistence, and what a cookie may be.

use std::sync::atomic::AtomicI64;
use std::time::Duration;

use portcullis_directory::Options;

use super::*;

struct Fixture {
    _dir: tempfile::TempDir,
    directory: Directory,
    sessions: Arc<Sessions>,
    now: Arc<AtomicI64>,
}

fn config() -> SessionConfig {
    SessionConfig {
        cookie_name: "_portcullis".into(),
        cookie_domain: None,
        idle_timeout: Duration::from_secs(3600),
        absolute_timeout: Duration::from_secs(8 * 3600),
    }
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let directory = Directory::open(dir.path(), Options::default()).unwrap();
    let now = Arc::new(AtomicI64::new(1_000_000));
    let clock: Clock = {
        let now = now.clone();
        Arc::new(move || now.load(Ordering::Relaxed))
    };
    let sessions = Arc::new(Sessions::new(directory.sessions(), config(), clock));
    Fixture {
        _dir: dir,
        directory,
        sessions,
        now,
    }
}

impl Fixture {
    fn advance(&self, secs: i64) {
        self.now.fetch_add(secs, Ordering::Relaxed);
    }
}

fn new_session(user: &str) -> NewSession {
    NewSession {
        user_id: user.into(),
        sub: format!("sub-{user}"),
        sid: Some("sid-1".into()),
        tokens: IdpTokens {
            refresh_token: Some("refresh-secret".into()),
            id_token: Some("id.token.value".into()),
        },
        refresh_at: Some(1_000_300),
    }
}

fn valid(lookup: Lookup) -> Arc<Session> {
    match lookup {
        Lookup::Valid(s) => s,
        other => panic!("expected a valid session, got {other:?}"),
    }
}

#[tokio::test]
async fn a_created_session_is_found_by_its_cookie_and_survives_a_restart() {
    let f = fixture();
    let secret = f.sessions.create(new_session("u1")).await.unwrap();
    let cookie = secret.cookie_value();
    assert_eq!(cookie.len(), 43, "the cookie is small whatever the user's groups");
    let session = valid(f.sessions.lookup(&SessionSecret::from_cookie(&cookie).unwrap()));
    assert_eq!(&*session.user_id, "u1");
    assert_eq!(session.sub, "sub-u1");
    let tokens = session.tokens(&secret).unwrap();
    assert_eq!(tokens.refresh_token.as_deref(), Some("refresh-secret"));

    // A fresh Sessions over the same store (a restart) knows it too.
    let again = Sessions::new(f.directory.sessions(), config(), f.sessions.clock.clone());
    let session = valid(again.lookup(&secret));
    assert_eq!(
        session.tokens(&secret).unwrap().id_token.as_deref(),
        Some("id.token.value")
    );
}

#[tokio::test]
async fn the_store_holds_neither_the_cookie_nor_the_tokens_in_clear() {
    let f = fixture();
    let secret = f.sessions.create(new_session("u1")).await.unwrap();
    let stored: Vec<_> = f.directory.sessions().scan().collect::<Result<_, _>>().unwrap();
    assert_eq!(stored.len(), 1);
    let raw = String::from_utf8_lossy(&stored[0].record).into_owned();
    assert!(!raw.contains("refresh-secret"), "{raw}");
    assert!(!raw.contains("id.token.value"), "{raw}");
    assert!(!raw.contains(&secret.cookie_value()), "{raw}");
    assert_ne!(stored[0].handle, secret.0, "keyed by a hash of the secret");
}

#[tokio::test]
async fn sealed_tokens_open_only_with_their_own_secret() {
    let f = fixture();
    let secret = f.sessions.create(new_session("u1")).await.unwrap();
    let session = valid(f.sessions.lookup(&secret));
    let other = SessionSecret::random();
    assert!(session.tokens(&other).is_none());
    let sealed = session.sealed.lock().clone().unwrap();
    let mut bytes = URL_SAFE_NO_PAD.decode(&sealed).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    assert!(
        secret.open(&URL_SAFE_NO_PAD.encode(bytes)).is_none(),
        "tampering is detected"
    );
}

#[test]
fn only_well_formed_cookie_values_are_secrets() {
    let good = SessionSecret::random().cookie_value();
    assert!(SessionSecret::from_cookie(&good).is_some());
    for bad in [
        "",
        "short",
        &good[..42],
        &format!("{good}A"),
        &format!("{}+", &good[..42]),
        &format!("{}=", &good[..42]),
        "...........................................",
    ] {
        assert!(SessionSecret::from_cookie(bad).is_none(), "{bad:?}");
    }
}

#[tokio::test]
async fn forged_and_revoked_cookies_name_no_session() {
    let f = fixture();
    let secret = f.sessions.create(new_session("u1")).await.unwrap();
    assert!(matches!(f.sessions.lookup(&SessionSecret::random()), Lookup::Unknown));
    assert!(f.sessions.revoke(&secret.handle()).await.unwrap());
    assert!(matches!(f.sessions.lookup(&secret), Lookup::Unknown));
    // Revoked durably: not back after a restart.
    let again = Sessions::new(f.directory.sessions(), config(), f.sessions.clock.clone());
    assert!(matches!(again.lookup(&secret), Lookup::Unknown));
}

#[tokio::test]
async fn idle_sessions_end_and_use_keeps_them_alive() {
    let f = fixture();
    let secret = f.sessions.create(new_session("u1")).await.unwrap();
    f.advance(3000);
    valid(f.sessions.lookup(&secret));
    f.advance(3000);
    valid(f.sessions.lookup(&secret));
    f.advance(3600);
    assert!(matches!(f.sessions.lookup(&secret), Lookup::Expired));
    // Removed from the store in the background; refused either way.
    assert!(!matches!(f.sessions.lookup(&secret), Lookup::Valid(_)));
}

#[tokio::test]
async fn last_use_is_persisted_so_a_restart_does_not_expire_active_sessions() {
    let f = fixture();
    let secret = f.sessions.create(new_session("u1")).await.unwrap();
    f.advance(3000);
    valid(f.sessions.lookup(&secret));
    // After a restart the session was last used 3000 s in, not at sign-in.
    f.advance(3000);
    let again = Sessions::new(f.directory.sessions(), config(), f.sessions.clock.clone());
    valid(again.lookup(&secret));
}

#[tokio::test]
async fn sessions_end_at_their_absolute_lifetime_however_active() {
    let f = fixture();
    let secret = f.sessions.create(new_session("u1")).await.unwrap();
    for _ in 0..15 {
        f.advance(1800);
        valid(f.sessions.lookup(&secret));
    }
    f.advance(1800);
    assert!(matches!(f.sessions.lookup(&secret), Lookup::Expired));
}

#[tokio::test]
async fn revoking_a_user_ends_all_their_sessions_and_no_one_elses() {
    let f = fixture();
    let a1 = f.sessions.create(new_session("alice")).await.unwrap();
    let a2 = f.sessions.create(new_session("alice")).await.unwrap();
    let b = f.sessions.create(new_session("bob")).await.unwrap();
    assert_eq!(f.sessions.revoke_user("alice").await.unwrap(), 2);
    assert!(matches!(f.sessions.lookup(&a1), Lookup::Unknown));
    assert!(matches!(f.sessions.lookup(&a2), Lookup::Unknown));
    valid(f.sessions.lookup(&b));
    assert_eq!(f.sessions.count(), 1);
}

#[tokio::test]
async fn the_sweep_removes_expired_sessions_only() {
    let f = fixture();
    let old = f.sessions.create(new_session("u1")).await.unwrap();
    f.advance(3000);
    let fresh = f.sessions.create(new_session("u2")).await.unwrap();
    f.advance(1000);
    assert_eq!(f.sessions.sweep().await, 1);
    assert_eq!(f.sessions.count(), 1);
    assert!(matches!(f.sessions.lookup(&old), Lookup::Unknown));
    valid(f.sessions.lookup(&fresh));
}

#[tokio::test]
async fn refresh_is_claimed_by_one_caller_once_due() {
    let f = fixture();
    let secret = f.sessions.create(new_session("u1")).await.unwrap();
    let session = valid(f.sessions.lookup(&secret));
    assert!(!session.claim_refresh(f.sessions.now()), "not due yet");
    f.advance(300);
    assert!(session.claim_refresh(f.sessions.now()));
    assert!(!session.claim_refresh(f.sessions.now()), "one refresh at a time");
    f.sessions.refresh_postponed(&session, Duration::from_secs(60));
    assert!(!session.claim_refresh(f.sessions.now()));
    f.advance(60);
    assert!(session.claim_refresh(f.sessions.now()));
    let tokens = IdpTokens {
        refresh_token: Some("rotated".into()),
        id_token: None,
    };
    f.sessions
        .refreshed(&session, &secret, &tokens, Some(f.sessions.now() + 600));
    assert_eq!(
        session.tokens(&secret).unwrap().refresh_token.as_deref(),
        Some("rotated")
    );
    assert!(!session.claim_refresh(f.sessions.now()));
}

#[test]
fn logout_tokens_belong_to_one_session() {
    let a = SessionSecret::random();
    let b = SessionSecret::random();
    assert!(a.csrf_matches(&a.csrf_token()));
    assert!(!a.csrf_matches(&b.csrf_token()));
    assert!(!a.csrf_matches(""));
    assert_eq!(format!("{a:?}"), "SessionSecret(<redacted>)");
}

#[tokio::test]
async fn deactivating_or_deleting_a_user_through_the_directory_revokes_their_sessions() {
    let f = fixture();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let watcher = tokio::spawn(f.sessions.clone().run(f.directory.clone(), async {
        let _ = stop_rx.await;
    }));
    let okta: portcullis_directory::Id = Arc::from("okta");
    let obj = |v: serde_json::Value| v.as_object().cloned().unwrap();
    let alice = f
        .directory
        .create_user(&okta, obj(serde_json::json!({"userName": "alice@example.com"})))
        .await
        .unwrap();
    let bob = f
        .directory
        .create_user(&okta, obj(serde_json::json!({"userName": "bob@example.com"})))
        .await
        .unwrap();
    let carol = f
        .directory
        .create_user(&okta, obj(serde_json::json!({"userName": "carol@example.com"})))
        .await
        .unwrap();
    let a = f.sessions.create(new_session(&alice.id)).await.unwrap();
    let b = f.sessions.create(new_session(&bob.id)).await.unwrap();
    let c = f.sessions.create(new_session(&carol.id)).await.unwrap();
    f.directory
        .update_user("okta", &alice.id, None, |u| {
            let mut doc = u.doc();
            doc.insert("active".into(), serde_json::Value::Bool(false));
            Ok::<_, portcullis_directory::DirectoryError>(doc)
        })
        .await
        .unwrap();
    f.directory.delete_user("okta", &bob.id, None).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while f.sessions.count() > 1 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(f.sessions.count(), 1);
    valid(f.sessions.lookup(&c));
    assert!(matches!(f.sessions.lookup(&a), Lookup::Unknown));
    assert!(matches!(f.sessions.lookup(&b), Lookup::Unknown));
    let _ = stop_tx.send(());
    watcher.await.unwrap();
}
