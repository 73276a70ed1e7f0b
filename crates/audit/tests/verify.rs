//! Tamper detection: each kind of damage is reported at the right place.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::*;
use portcullis_audit::{AuditConfig, AuditLog, Problem, VerifyReport, files_of, head_path, line_hash, verify};
use sha2::Digest;

/// A log of 20 records in one file.
fn twenty() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = log_path(&dir);
    write_records(&path, 20);
    (dir, path)
}

fn check(path: &Path) -> VerifyReport {
    verify(&files_of(path).expect("files")).expect("verify")
}

#[test]
fn intact_log_verifies() {
    let (_dir, path) = twenty();
    let report = check(&path);
    assert!(report.is_intact(), "{:?}", report.broken);
    assert_eq!(report.records, 20);
}

#[test]
fn edited_field_in_the_middle_is_reported_at_that_link() {
    let (_dir, path) = twenty();
    let mut lines = lines(&path);
    assert!(lines[9].contains("\"user\":\"u10\""));
    lines[9] = lines[9].replace("\"user\":\"u10\"", "\"user\":\"mallory\"");
    write_lines(&path, &lines);

    let broken = check(&path).broken.expect("broken");
    assert_eq!(broken.file, path);
    assert_eq!((broken.line, broken.seq), (11, Some(11)));
    assert_eq!(broken.problem, Problem::PrevMismatch { file: None, line: 10 });
    assert!(
        broken
            .to_string()
            .ends_with("line 11 (seq 11): prev hash does not match line 10"),
        "{broken}"
    );
}

#[test]
fn deleted_line_is_a_seq_gap_at_the_next_line() {
    let (_dir, path) = twenty();
    let mut lines = lines(&path);
    lines.remove(9);
    write_lines(&path, &lines);
    let broken = check(&path).broken.expect("broken");
    assert_eq!((broken.line, broken.seq), (10, Some(11)));
    assert_eq!(broken.problem, Problem::SeqGap { from: 9, to: 11 });
    assert_eq!(broken.problem.to_string(), "seq jumps from 9 to 11 (records missing)");
}

#[test]
fn deleted_line_with_renumbered_seqs_is_a_hash_mismatch() {
    let (_dir, path) = twenty();
    let mut lines = lines(&path);
    lines.remove(9);
    for line in lines.iter_mut().skip(9) {
        let seq = seq_of(line);
        *line = line.replace(&format!("{{\"seq\":{seq},"), &format!("{{\"seq\":{},", seq - 1));
    }
    write_lines(&path, &lines);
    let broken = check(&path).broken.expect("broken");
    assert_eq!((broken.line, broken.seq), (10, Some(10)));
    assert_eq!(broken.problem, Problem::PrevMismatch { file: None, line: 9 });
}

#[test]
fn swapped_lines_are_reported_at_the_first_of_them() {
    let (_dir, path) = twenty();
    let mut lines = lines(&path);
    lines.swap(4, 5);
    write_lines(&path, &lines);
    let broken = check(&path).broken.expect("broken");
    assert_eq!((broken.line, broken.seq), (5, Some(6)));
    assert_eq!(broken.problem, Problem::SeqGap { from: 4, to: 6 });
}

#[test]
fn truncated_tail_is_caught_by_the_head_marker() {
    let (_dir, path) = twenty();
    let mut lines = lines(&path);
    lines.truncate(17);
    write_lines(&path, &lines);
    let broken = check(&path).broken.expect("broken");
    assert_eq!(
        (broken.file.clone(), broken.line, broken.seq),
        (path.clone(), 17, Some(17))
    );
    assert_eq!(
        broken.problem,
        Problem::HeadAhead {
            file_end: Some(17),
            head: 20
        }
    );
    assert_eq!(
        broken.problem.to_string(),
        "the file ends at seq 17 but the head marker says 20 (records removed from the end)"
    );
    // Without the marker the shortened chain looks intact: the documented limit.
    fs::remove_file(head_path(&path)).expect("remove head");
    assert!(check(&path).is_intact());
}

#[test]
fn a_changed_last_line_is_caught_by_the_head_marker() {
    let (_dir, path) = twenty();
    let mut lines = lines(&path);
    lines[19] = lines[19].replace("\"decision\":\"allow\"", "\"decision\":\"deny\"");
    write_lines(&path, &lines);
    let broken = check(&path).broken.expect("broken");
    assert_eq!((broken.line, broken.seq), (20, Some(20)));
    assert_eq!(broken.problem, Problem::HeadMismatch { seq: 20 });
}

#[test]
fn writer_reopened_after_truncation_keeps_the_gap_visible() {
    let (_dir, path) = twenty();
    let mut lines = lines(&path);
    lines.truncate(17);
    write_lines(&path, &lines);
    write_records(&path, 1);
    let lines = common::lines(&path);
    assert_eq!(seq_of(&lines[17]), 21);
    let broken = check(&path).broken.expect("broken");
    assert_eq!(
        (broken.line, broken.problem),
        (18, Problem::SeqGap { from: 17, to: 21 })
    );
}

#[test]
fn non_json_line_is_reported() {
    let (_dir, path) = twenty();
    let mut lines = lines(&path);
    lines[4] = "this is not json".to_owned();
    write_lines(&path, &lines);
    let broken = check(&path).broken.expect("broken");
    assert_eq!((broken.line, broken.seq), (5, None));
    assert!(matches!(broken.problem, Problem::NotJson(_)), "{broken}");
    assert!(broken.to_string().contains("line is not valid JSON"), "{broken}");
}

#[test]
fn json_that_is_not_a_record_is_reported() {
    let (_dir, path) = twenty();
    let mut lines = lines(&path);
    lines[2] = r#"{"user":"u3"}"#.to_owned();
    write_lines(&path, &lines);
    let broken = check(&path).broken.expect("broken");
    assert_eq!(broken.line, 3);
    assert!(matches!(broken.problem, Problem::NotRecord(_)), "{broken}");
}

#[test]
fn forged_genesis_is_reported() {
    let (_dir, path) = twenty();
    let mut lines = lines(&path);
    lines[0] = lines[0].replace(&"0".repeat(64), &"1".repeat(64));
    write_lines(&path, &lines);
    let broken = check(&path).broken.expect("broken");
    assert_eq!((broken.line, broken.problem), (1, Problem::BadGenesis));
}

#[test]
fn mid_chain_set_after_deleting_old_files_verifies_with_an_anchor() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = log_path(&dir);
    let log = AuditLog::open(AuditConfig {
        max_file_bytes: 1024,
        keep_files: 0,
        ..config(&path)
    })
    .expect("open");
    for i in 0..50 {
        log.log(record(&format!("u{i}"), "allow")).expect("log");
    }
    log.close().expect("close");
    let files = files_of(&path).expect("files");
    assert!(files.len() > 3);
    // Deleted oldest two, as rotation with keep_files would.
    fs::remove_file(&files[0]).expect("rm");
    fs::remove_file(&files[1]).expect("rm");

    let remaining = files_of(&path).expect("files");
    assert_eq!(remaining, files[2..].to_vec());
    let report = verify(&remaining).expect("verify");
    assert!(report.is_intact(), "{:?}", report.broken);
    let first_line = lines(&remaining[0]).remove(0);
    assert_eq!(report.first_seq, Some(seq_of(&first_line)));
    assert_eq!(report.anchor.as_deref(), parse(&first_line)["prev"].as_str());
    assert_eq!(report.last_seq, Some(50));
}

#[test]
fn deleting_a_middle_file_is_a_gap_at_the_next_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = log_path(&dir);
    let log = AuditLog::open(AuditConfig {
        max_file_bytes: 1024,
        keep_files: 0,
        ..config(&path)
    })
    .expect("open");
    for i in 0..50 {
        log.log(record(&format!("u{i}"), "allow")).expect("log");
    }
    log.close().expect("close");
    let files = files_of(&path).expect("files");
    let before_last = lines(&files[0]).pop().expect("line");
    let first_of_third = lines(&files[2]).remove(0);
    fs::remove_file(&files[1]).expect("rm");
    let broken = check(&path).broken.expect("broken");
    assert_eq!((broken.file.clone(), broken.line), (files[2].clone(), 1));
    assert_eq!(
        broken.problem,
        Problem::SeqGap {
            from: seq_of(&before_last),
            to: seq_of(&first_of_third)
        }
    );
}

#[test]
fn cross_file_hash_mismatch_names_the_previous_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = log_path(&dir);
    let log = AuditLog::open(AuditConfig {
        max_file_bytes: 1024,
        ..config(&path)
    })
    .expect("open");
    for i in 0..20 {
        log.log(record(&format!("u{i}"), "allow")).expect("log");
    }
    log.close().expect("close");
    let files = files_of(&path).expect("files");
    let mut first = lines(&files[0]);
    let last = first.len() - 1;
    first[last] = first[last].replace("allow", "deny");
    write_lines(&files[0], &first);
    let broken = check(&path).broken.expect("broken");
    assert_eq!((broken.file.clone(), broken.line), (files[1].clone(), 1));
    assert_eq!(
        broken.problem,
        Problem::PrevMismatch {
            file: Some(files[0].clone()),
            line: first.len() as u64
        }
    );
    assert_eq!(line_hash(b""), hex::encode(sha2::Sha256::digest(b"")));
}
