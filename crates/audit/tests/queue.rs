//! Back-pressure and failure: `try_log` drops and counts when the queue is
//! full, `log` waits and never drops, a failing disk is counted and retried.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use portcullis_audit::{AuditConfig, AuditError, AuditLog, files_of, verify};

#[test]
fn try_log_drops_and_counts_when_the_queue_is_full() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = log_path(&dir);
    let log = AuditLog::open(AuditConfig {
        queue: 8,
        ..config(&path)
    })
    .expect("open");
    let log = Arc::new(log);
    let pause = log.pause_writer().expect("pause");
    // In a thread, so that a try_log that blocks fails the test instead of hanging it.
    let (done, finished) = std::sync::mpsc::channel();
    let submitter = Arc::clone(&log);
    std::thread::spawn(move || {
        let accepted: Vec<bool> = (0..10)
            .map(|i| submitter.try_log(record(&format!("u{i}"), "allow")))
            .collect();
        let _ = done.send(accepted);
    });
    let accepted = finished
        .recv_timeout(Duration::from_secs(10))
        .expect("try_log must not block on a full queue");
    assert_eq!(accepted, [[true; 8].as_slice(), &[false, false]].concat());
    assert_eq!(log.stats().dropped, 2);
    drop(pause);
    log.flush().expect("flush");
    assert_eq!(log.stats().written, 8);
    assert!(log.try_log(record("after", "allow")));
    log.close().expect("close");
    // After close: dropped and counted, and `log` refuses.
    assert!(!log.try_log(record("closed", "allow")));
    assert!(matches!(log.log(record("closed", "deny")), Err(AuditError::Closed)));
    let stats = log.stats();
    assert_eq!((stats.written, stats.dropped), (9, 3));
    assert_eq!(lines(&path).len(), 9);
    assert!(verify(&files_of(&path).expect("files")).expect("verify").is_intact());
}

#[test]
fn log_waits_instead_of_dropping() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = log_path(&dir);
    let log = Arc::new(
        AuditLog::open(AuditConfig {
            queue: 4,
            ..config(&path)
        })
        .expect("open"),
    );
    let pause = log.pause_writer().expect("pause");
    let submitter = {
        let log = Arc::clone(&log);
        std::thread::spawn(move || {
            for i in 0..100 {
                log.log(record(&format!("u{i}"), "deny")).expect("log");
            }
        })
    };
    std::thread::sleep(Duration::from_millis(100));
    assert!(!submitter.is_finished(), "log must wait while the queue is full");
    assert_eq!(log.stats().written, 0);
    drop(pause);
    submitter.join().expect("submitter");
    log.close().expect("close");
    let stats = log.stats();
    assert_eq!((stats.written, stats.dropped), (100, 0));
    assert_eq!(lines(&path).len(), 100);
}

#[test]
fn flush_and_sync_cover_everything_submitted_before() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = log_path(&dir);
    let log = AuditLog::open(AuditConfig {
        sync_interval: Duration::from_secs(3600),
        ..config(&path)
    })
    .expect("open");
    for i in 0..10 {
        log.log(record(&format!("u{i}"), "allow")).expect("log");
    }
    log.flush().expect("flush");
    assert_eq!(lines(&path).len(), 10);
    log.log(record("x", "allow")).expect("log");
    log.sync().expect("sync");
    let head = std::fs::read_to_string(portcullis_audit::head_path(&path)).expect("head");
    assert!(head.contains("\"seq\":11"), "{head}");
    assert_eq!(log.stats().bytes, std::fs::metadata(&path).expect("meta").len());
    drop(log);
    assert_eq!(lines(&path).len(), 11);
}

#[test]
fn drop_drains_the_queue() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = log_path(&dir);
    let log = AuditLog::open(config(&path)).expect("open");
    for i in 0..1000 {
        assert!(log.try_log(record(&format!("u{i}"), "allow")));
    }
    drop(log);
    assert_eq!(lines(&path).len(), 1000);
}

#[test]
fn failing_disk_is_counted_retried_and_reported_at_close() {
    let full = std::path::Path::new("/dev/full");
    if !full.exists() {
        eprintln!("skipped: no /dev/full");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = log_path(&dir);
    std::os::unix::fs::symlink(full, &path).expect("symlink");
    let log = AuditLog::open(AuditConfig {
        close_timeout: Duration::from_millis(300),
        ..config(&path)
    })
    .expect("open");
    log.log(record("u1", "deny")).expect("log is accepted");
    let deadline = Instant::now() + Duration::from_secs(5);
    while log.stats().write_errors < 3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(log.stats().write_errors >= 3, "retried: {:?}", log.stats());
    assert_eq!(log.stats().written, 0);
    let started = Instant::now();
    let error = log.close().expect_err("unwritten record");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(matches!(error, AuditError::Unwritten { count: 1, .. }), "{error}");
    assert!(
        !error.to_string().contains("u1"),
        "no record contents in errors: {error}"
    );
    assert_eq!(log.stats().dropped, 1);
}

#[test]
fn stdout_only_log_chains_in_memory() {
    let log = AuditLog::open(AuditConfig {
        stdout: true,
        ..AuditConfig::default()
    })
    .expect("open");
    log.log(object(
        serde_json::json!({"kind": "test", "note": "stdout-only audit test line"}),
    ))
    .expect("log");
    log.close().expect("close");
    let stats = log.stats();
    assert_eq!((stats.written, stats.dropped, stats.rotations), (1, 0, 0));
    assert!(stats.bytes > 0);
}
