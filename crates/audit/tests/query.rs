//! Queries: filters by field and time range, across rotated files, in chain
//! order, streaming.

mod common;

use std::time::Duration;

use common::*;
use portcullis_audit::{AuditConfig, AuditLog, Query, files_of, kinds, query};
use serde_json::json;
use time::OffsetDateTime;

fn users(records: Vec<serde_json::Map<String, serde_json::Value>>) -> Vec<String> {
    records
        .iter()
        .map(|r| r["user"].as_str().expect("user").to_owned())
        .collect()
}

#[test]
fn filters_by_user_decision_kind_route_and_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = log_path(&dir);
    let log = AuditLog::open(AuditConfig {
        max_file_bytes: 600,
        ..config(&path)
    })
    .expect("open");
    log.log(record("alice", "allow")).expect("log");
    log.log(record("bob", "deny")).expect("log");
    log.log(record("alice", "deny")).expect("log");
    log.flush().expect("flush");
    std::thread::sleep(Duration::from_millis(20));
    let middle = OffsetDateTime::now_utc();
    std::thread::sleep(Duration::from_millis(20));
    log.log(record("alice", "allow")).expect("log");
    log.log(object(json!({"kind": "scim", "user": "carol", "op": "create"})))
        .expect("log");
    log.log(object(
        json!({"kind": "access", "user": "alice", "route": "/admin", "decision": "deny"}),
    ))
    .expect("log");
    log.close().expect("close");
    let files = files_of(&path).expect("files");
    assert!(files.len() > 1, "spans rotated files");

    let run = |q: Query| {
        let records: Result<Vec<_>, _> = query(&files, &q).collect();
        users(records.expect("query"))
    };
    assert_eq!(run(Query::default()).len(), 6);
    assert_eq!(
        run(Query {
            user: Some("alice".into()),
            ..Query::default()
        }),
        ["alice"; 4]
    );
    let denied = query(
        &files,
        &Query {
            user: Some("alice".into()),
            decision: Some("deny".into()),
            ..Query::default()
        },
    )
    .collect::<Result<Vec<_>, _>>()
    .expect("query");
    assert_eq!(
        denied.iter().map(|r| r["seq"].as_u64()).collect::<Vec<_>>(),
        [Some(3), Some(6)]
    );
    assert_eq!(
        run(Query {
            kind: Some(kinds::SCIM.into()),
            ..Query::default()
        }),
        ["carol"]
    );
    assert_eq!(
        run(Query {
            route: Some("/admin".into()),
            ..Query::default()
        }),
        ["alice"]
    );
    assert_eq!(
        run(Query {
            since: Some(middle),
            ..Query::default()
        }),
        ["alice", "carol", "alice"]
    );
    assert_eq!(
        run(Query {
            until: Some(middle),
            ..Query::default()
        }),
        ["alice", "bob", "alice"]
    );
    assert_eq!(
        run(Query {
            user: Some("alice".into()),
            until: Some(middle),
            decision: Some("allow".into()),
            ..Query::default()
        }),
        ["alice"]
    );
    let mut reversed = files.clone();
    reversed.reverse();
    let seqs: Vec<u64> = query(&reversed, &Query::default())
        .map(|r| r.expect("record")["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(seqs, (1..=6).collect::<Vec<_>>());
}

#[test]
fn bad_lines_are_errors_and_reading_goes_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = log_path(&dir);
    write_records(&path, 3);
    let mut lines = lines(&path);
    lines[1] = "garbage".to_owned();
    write_lines(&path, &lines);
    let results: Vec<_> = query(&[path.clone(), dir.path().join("missing")], &Query::default()).collect();
    assert_eq!(results.len(), 4);
    assert!(results[0].is_ok() && results[2].is_ok());
    let error = results[1].as_ref().expect_err("bad line");
    assert!(error.to_string().contains("audit.log line 2"), "{error}");
    assert!(
        results[3]
            .as_ref()
            .is_err_and(|e| e.to_string().starts_with("opening "))
    );
}
