//! The line format, resuming after a restart and repairing a torn tail.

mod common;

use std::fs::{self, OpenOptions};
use std::io::Write;

use common::*;
use portcullis_audit::{AuditLog, GENESIS_PREV, files_of, line_hash, verify};
use serde_json::json;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

#[test]
fn lines_have_exact_field_order_and_chain() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = log_path(&dir);
    let before = OffsetDateTime::now_utc();
    let log = AuditLog::open(config(&path)).expect("open");
    log.log(object(json!({"user": "alice"}))).expect("log");
    log.log(object(json!({"user": "bob"}))).expect("log");
    log.close().expect("close");

    let lines = lines(&path);
    assert_eq!(lines.len(), 2);
    let time = parse(&lines[0])["time"].as_str().expect("time").to_owned();
    assert_eq!(
        lines[0],
        format!(
            r#"{{"seq":1,"time":"{time}","user":"alice","prev":"{}"}}"#,
            "0".repeat(64)
        )
    );
    assert_eq!(GENESIS_PREV, "0".repeat(64));
    // RFC 3339, UTC, six fractional digits, not before the call.
    assert_eq!(time.len(), "2025-01-01T00:00:00.000000Z".len());
    assert!(time.ends_with('Z') && time.as_bytes()[19] == b'.');
    let parsed = OffsetDateTime::parse(&time, &Rfc3339).expect("rfc 3339");
    assert!(
        parsed
            >= before
                .replace_nanosecond(before.nanosecond() / 1000 * 1000)
                .expect("micros")
    );

    let expected_prev = hex::encode(Sha256::digest(lines[0].as_bytes()));
    assert_eq!(line_hash(lines[0].as_bytes()), expected_prev);
    let time = parse(&lines[1])["time"].as_str().expect("time").to_owned();
    assert_eq!(
        lines[1],
        format!(r#"{{"seq":2,"time":"{time}","user":"bob","prev":"{expected_prev}"}}"#)
    );
}

#[test]
fn colliding_caller_fields_are_renamed_not_lost() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = log_path(&dir);
    let log = AuditLog::open(config(&path)).expect("open");
    log.log(object(
        json!({"seq": 99, "time": "yesterday", "prev": "x", "_seq": "taken"}),
    ))
    .expect("log");
    log.close().expect("close");
    let record = parse(&lines(&path)[0]);
    assert_eq!(record["seq"], json!(1));
    assert_eq!(record["prev"], json!(GENESIS_PREV));
    assert_eq!(record["__seq"], json!(99));
    assert_eq!(record["_seq"], json!("taken"));
    assert_eq!(record["_time"], json!("yesterday"));
    assert_eq!(record["_prev"], json!("x"));
    assert!(verify(&[path]).expect("verify").is_intact());
}

#[test]
fn reopening_continues_seq_and_chain() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = log_path(&dir);
    write_records(&path, 3);
    write_records(&path, 4);
    let lines = lines(&path);
    assert_eq!(
        lines.iter().map(|l| seq_of(l)).collect::<Vec<_>>(),
        (1..=7).collect::<Vec<_>>()
    );
    assert_eq!(
        parse(&lines[3])["prev"].as_str(),
        Some(line_hash(lines[2].as_bytes()).as_str())
    );
    let report = verify(&[path]).expect("verify");
    assert!(report.is_intact(), "{:?}", report.broken);
    assert_eq!(
        (report.records, report.first_seq, report.last_seq),
        (7, Some(1), Some(7))
    );
    assert_eq!(report.anchor, None);
    assert_eq!(report.last_hash, Some(line_hash(lines[6].as_bytes())));
}

#[test]
fn torn_last_line_is_truncated_on_open_and_chain_continues() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = log_path(&dir);
    write_records(&path, 5);
    let intact_len = fs::metadata(&path).expect("meta").len();
    let mut file = OpenOptions::new().append(true).open(&path).expect("append");
    file.write_all(br#"{"seq":6,"time":"2025-"#).expect("torn write");
    drop(file);

    let before = verify(&files_of(&path).expect("files")).expect("verify");
    let broken = before.broken.expect("a torn line is reported before repair");
    assert_eq!(
        (broken.line, broken.problem),
        (6, portcullis_audit::Problem::Incomplete)
    );

    let log = AuditLog::open(config(&path)).expect("open repairs");
    assert_eq!(fs::metadata(&path).expect("meta").len(), intact_len);
    log.log(record("after", "deny")).expect("log");
    log.close().expect("close");

    let lines = lines(&path);
    assert_eq!(lines.len(), 6);
    assert_eq!(seq_of(&lines[5]), 6);
    assert_eq!(parse(&lines[5])["user"], json!("after"));
    let report = verify(&files_of(&path).expect("files")).expect("verify");
    assert!(report.is_intact(), "{:?}", report.broken);
    assert_eq!(report.last_seq, Some(6));
}

#[test]
fn torn_only_line_leaves_an_empty_file_and_starts_at_genesis() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = log_path(&dir);
    fs::write(&path, r#"{"seq":1,"ti"#).expect("write");
    write_records(&path, 1);
    let lines = lines(&path);
    assert_eq!(lines.len(), 1);
    assert_eq!(seq_of(&lines[0]), 1);
    assert!(verify(&[path]).expect("verify").is_intact());
}

#[test]
fn a_corrupt_complete_last_line_stops_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = log_path(&dir);
    write_records(&path, 2);
    let mut file = OpenOptions::new().append(true).open(&path).expect("append");
    file.write_all(b"not a record\n").expect("write");
    drop(file);
    let error = AuditLog::open(config(&path)).expect_err("refuses to continue");
    assert!(
        matches!(error, portcullis_audit::AuditError::Corrupt { line: None, .. }),
        "{error}"
    );
    assert!(error.to_string().contains("audit.log (last line)"), "{error}");
}

#[test]
fn config_without_destination_is_rejected() {
    let config = portcullis_audit::AuditConfig::default();
    assert!(matches!(
        AuditLog::open(config),
        Err(portcullis_audit::AuditError::Config(_))
    ));
}
