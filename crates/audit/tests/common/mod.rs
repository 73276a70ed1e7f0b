//! Helpers shared by the integration tests: building records, opening logs
//! in temporary directories, reading and rewriting lines.

#![allow(dead_code, unreachable_pub)]

use std::fs;
use std::path::{Path, PathBuf};

use portcullis_audit::{AuditConfig, AuditLog};
use serde_json::{Map, Value, json};

pub fn record(user: &str, decision: &str) -> Map<String, Value> {
    object(json!({"kind": "access", "user": user, "route": "/app", "decision": decision}))
}

pub fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

pub fn config(path: &Path) -> AuditConfig {
    AuditConfig::file(path)
}

/// Opens a log at `path`, writes `n` records (users u1..un) and closes it.
pub fn write_records(path: &Path, n: usize) {
    let log = AuditLog::open(config(path)).expect("open");
    for i in 1..=n {
        log.log(record(&format!("u{i}"), "allow")).expect("log");
    }
    log.close().expect("close");
}

pub fn lines(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .expect("read")
        .lines()
        .map(str::to_owned)
        .collect()
}

pub fn write_lines(path: &Path, lines: &[String]) {
    let mut text = lines.join("\n");
    text.push('\n');
    fs::write(path, text).expect("write");
}

pub fn parse(line: &str) -> Map<String, Value> {
    serde_json::from_str(line).expect("json line")
}

pub fn seq_of(line: &str) -> u64 {
    parse(line)["seq"].as_u64().expect("seq")
}

pub fn log_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("audit.log")
}
