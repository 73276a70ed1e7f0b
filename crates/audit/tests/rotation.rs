//! Rotation: no record lost or duplicated under concurrent submitters, the
//! chain spans files, and pruning removes only the oldest files.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::sync::Arc;

use common::*;
use portcullis_audit::{AuditConfig, AuditLog, files_of, head_path, line_hash, verify};

const THREADS: usize = 8;
const PER_THREAD: usize = 5_000;

fn seqs_in(files: &[std::path::PathBuf]) -> Vec<u64> {
    files.iter().flat_map(|f| lines(f)).map(|l| seq_of(&l)).collect()
}

#[test]
fn concurrent_submitters_across_rotations_lose_and_duplicate_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = log_path(&dir);
    let log = Arc::new(
        AuditLog::open(AuditConfig {
            max_file_bytes: 64 * 1024,
            keep_files: 0,
            queue: 256,
            ..config(&path)
        })
        .expect("open"),
    );
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                for i in 0..PER_THREAD {
                    log.log(record(&format!("t{t}-{i}"), "allow")).expect("log");
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("submitter");
    }
    log.close().expect("close");
    let stats = log.stats();
    let total = (THREADS * PER_THREAD) as u64;
    assert_eq!((stats.written, stats.dropped, stats.write_errors), (total, 0, 0));
    assert!(stats.rotations > 20, "{stats:?}");

    let files = files_of(&path).expect("files");
    assert_eq!(files.len() as u64, stats.rotations + 1);
    assert_eq!(files.last(), Some(&path));
    for file in &files {
        assert!(
            fs::metadata(file).expect("meta").len() <= 64 * 1024,
            "{}",
            file.display()
        );
    }
    // Every seq exactly once, in file order.
    let seqs = seqs_in(&files);
    assert_eq!(seqs, (1..=total).collect::<Vec<_>>());
    // Every submitted record exactly once.
    let users: BTreeSet<String> = files
        .iter()
        .flat_map(|f| lines(f))
        .map(|l| parse(&l)["user"].as_str().expect("user").to_owned())
        .collect();
    assert_eq!(users.len() as u64, total);
    // Rotated names carry their first seq; the chain crosses files.
    for pair in files.windows(2) {
        let first_of_next = &lines(&pair[1])[0];
        let last_of_prev = lines(&pair[0]).pop().expect("non-empty");
        assert_eq!(
            parse(first_of_next)["prev"].as_str(),
            Some(line_hash(last_of_prev.as_bytes()).as_str())
        );
        let name = pair[1].file_name().expect("name").to_string_lossy().into_owned();
        if name != "audit.log" {
            assert_eq!(name, format!("audit.log.{:020}", seq_of(first_of_next)));
        }
    }
    // Given in any order, verify sorts them into chain order.
    let mut shuffled = files.clone();
    shuffled.reverse();
    shuffled.swap(0, files.len() / 2);
    let report = verify(&shuffled).expect("verify");
    assert!(report.is_intact(), "{:?}", report.broken);
    assert_eq!(report.files, files);
    assert_eq!(
        (report.records, report.first_seq, report.last_seq),
        (total, Some(1), Some(total))
    );
    // The head marker names the last record.
    let head = fs::read_to_string(head_path(&path)).expect("head");
    assert!(head.contains(&format!("\"seq\":{total}")), "{head}");
}

#[test]
fn keep_files_deletes_only_the_oldest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = log_path(&dir);
    let log = AuditLog::open(AuditConfig {
        max_file_bytes: 2048,
        keep_files: 3,
        ..config(&path)
    })
    .expect("open");
    for i in 0..300 {
        log.log(record(&format!("u{i}"), "deny")).expect("log");
    }
    log.close().expect("close");
    assert!(log.stats().rotations > 5);

    let files = files_of(&path).expect("files");
    assert_eq!(files.len(), 4, "3 rotated + current: {files:?}");
    // What remains is the newest part of the chain, contiguous to the end.
    let seqs = seqs_in(&files);
    assert_eq!(seqs.last(), Some(&300));
    let first = seqs[0];
    assert!(first > 1);
    assert_eq!(seqs, (first..=300).collect::<Vec<_>>());
    let report = verify(&files).expect("verify");
    assert!(report.is_intact(), "{:?}", report.broken);
    assert_eq!(report.first_seq, Some(first));
    assert!(report.anchor.is_some());
    // Nothing but the log's own files in the directory.
    let mut names: Vec<String> = fs::read_dir(dir.path())
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names.len(), 5, "{names:?}");
    assert!(names.contains(&"audit.log.head".to_owned()));
}

#[test]
fn reopen_after_rotation_with_empty_current_file_continues_from_rotated() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = log_path(&dir);
    write_records(&path, 5);
    // As if the process died right after renaming the current file.
    fs::rename(&path, dir.path().join("audit.log.00000000000000000001")).expect("rename");
    write_records(&path, 2);
    let files = files_of(&path).expect("files");
    assert_eq!(files.len(), 2);
    assert_eq!(seqs_in(&files), (1..=7).collect::<Vec<_>>());
    assert!(verify(&files).expect("verify").is_intact());
}
