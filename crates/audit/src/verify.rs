//! Verification of a set of audit files: every line a record, seq +1 from
//! line to line and file to file, every `prev` the SHA-256 of the line
//! before, and the end of the chain no earlier than the head marker says.
//!
//! What it proves, and what not: a chain that verifies was not edited,
//! reordered or cut *unless the editor rewrote everything after the edit*:
//! the hashes are not keyed, so whoever can rewrite the files (and the head
//! marker) can forge a consistent chain. The head marker only catches a
//! removed tail when it is left alone. Verification against a copy kept
//! elsewhere (records shipped off-host, or a `last_hash` noted at an earlier
//! verify) is what makes rewriting detectable; this module gives the values
//! to compare (`VerifyReport::last_hash`) but does not fetch them.
//!
//! Files are streamed line by line; only one line is in memory at a time.

use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::error::AuditError;
use crate::files::{self, first_line};
use crate::line::{self, Envelope, Hash};

/// The outcome of [`verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// The files, in the chain order they were checked in.
    pub files: Vec<PathBuf>,
    /// Records checked (up to the break, when there is one).
    pub records: u64,
    pub first_seq: Option<u64>,
    /// The last record checked (before the break, when there is one).
    pub last_seq: Option<u64>,
    /// The hex SHA-256 of the last line checked: keep it to detect a later
    /// rewrite of everything up to here.
    pub last_hash: Option<String>,
    /// When the set starts mid-chain (older files deleted by rotation): the
    /// `prev` of its first record, which cannot be checked here. `None` when
    /// the set starts at seq 1.
    pub anchor: Option<String>,
    /// The first broken link, in chain order; `None` when the chain holds.
    pub broken: Option<Broken>,
}

impl VerifyReport {
    /// True when nothing is broken.
    pub fn is_intact(&self) -> bool {
        self.broken.is_none()
    }
}

/// Where and how the chain breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broken {
    pub file: PathBuf,
    /// 1-based line number; 0 when the problem is not one line's (an empty
    /// file, a head marker).
    pub line: u64,
    /// The seq of the offending record, when it has one.
    pub seq: Option<u64>,
    pub problem: Problem,
}

impl fmt::Display for Broken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} line {}", self.file.display(), self.line)?;
        if let Some(seq) = self.seq {
            write!(f, " (seq {seq})")?;
        }
        write!(f, ": {}", self.problem)
    }
}

/// What is wrong at a [`Broken`] link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The line is not JSON at all.
    NotJson(String),
    /// The line is JSON but not a record (not an object, `seq` or `prev`
    /// missing or of the wrong type, a duplicated writer field).
    NotRecord(String),
    /// A writer field has an invalid value.
    BadField { field: &'static str, reason: &'static str },
    /// The line has no newline: a write was interrupted (the writer removes
    /// such a tail when it opens the file) or the file is being written.
    Incomplete,
    /// The record with seq 1 does not have 64 zeros as `prev`.
    BadGenesis,
    /// Records are missing between two lines.
    SeqGap { from: u64, to: u64 },
    /// The seq does not increase: records duplicated or reordered.
    SeqNotIncreasing { from: u64, to: u64 },
    /// `prev` is not the hash of the line before, at `line` of `file` (the
    /// file is `None` when it is the same file). One of the two lines was
    /// changed.
    PrevMismatch { file: Option<PathBuf>, line: u64 },
    /// The files end before the head marker says (records removed from the
    /// end). `file_end` is `None` when the files hold no records.
    HeadAhead { file_end: Option<u64>, head: u64 },
    /// The record at the head marker's seq does not have the marker's hash.
    HeadMismatch { seq: u64 },
    /// The head marker exists but cannot be read.
    HeadInvalid(String),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::NotJson(e) => write!(f, "line is not valid JSON: {e}"),
            Problem::NotRecord(e) => write!(f, "line is not an audit record: {e}"),
            Problem::BadField { field, reason } => write!(f, "field {field} {reason}"),
            Problem::Incomplete => f.write_str("line is incomplete (no newline: interrupted write)"),
            Problem::BadGenesis => write!(f, "the first record (seq 1) must have prev = {}", line::GENESIS_PREV),
            Problem::SeqGap { from, to } => write!(f, "seq jumps from {from} to {to} (records missing)"),
            Problem::SeqNotIncreasing { from, to } => {
                write!(f, "seq goes from {from} to {to} (records duplicated or reordered)")
            }
            Problem::PrevMismatch { file: None, line } => write!(f, "prev hash does not match line {line}"),
            Problem::PrevMismatch { file: Some(file), line } => {
                write!(f, "prev hash does not match line {line} of {}", file.display())
            }
            Problem::HeadAhead {
                file_end: Some(end),
                head,
            } => write!(
                f,
                "the file ends at seq {end} but the head marker says {head} (records removed from the end)"
            ),
            Problem::HeadAhead { file_end: None, head } => write!(
                f,
                "the files hold no records but the head marker says {head} (records removed from the end)"
            ),
            Problem::HeadMismatch { seq } => {
                write!(
                    f,
                    "the record at seq {seq} does not match the head marker's hash (it was changed)"
                )
            }
            Problem::HeadInvalid(reason) => f.write_str(reason),
        }
    }
}

/// The fields verification reads; the caller's fields are skipped.
#[derive(Deserialize)]
struct Checked<'a> {
    seq: u64,
    #[serde(borrow)]
    time: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    prev: std::borrow::Cow<'a, str>,
}

struct Last {
    seq: u64,
    hash: Hash,
    file: usize,
    line: u64,
}

struct HeadCheck {
    file: PathBuf,
    seq: u64,
    hash: Hash,
}

/// Verifies a set of files of one log, given in any order (they are put in
/// chain order by their first seq). Only I/O failures are errors; a broken
/// chain is reported in [`VerifyReport::broken`]. Files with a head marker
/// next to them (`<file>.head`, the current file) are also checked against
/// it, so pass the whole set ([`files_of`](crate::files_of)): the current
/// file alone, just after a rotation, ends before its marker.
pub fn verify(paths: &[PathBuf]) -> Result<VerifyReport, AuditError> {
    let files = chain_order(paths);
    let mut report = VerifyReport {
        files: files.clone(),
        records: 0,
        first_seq: None,
        last_seq: None,
        last_hash: None,
        anchor: None,
        broken: None,
    };
    let mut heads = Vec::new();
    for file in &files {
        match files::read_head(file) {
            Ok(Some((head, hash))) => heads.push(HeadCheck {
                file: file.clone(),
                seq: head.seq,
                hash,
            }),
            Ok(None) => {}
            Err(reason) => {
                report.broken = Some(Broken {
                    file: file.clone(),
                    line: 0,
                    seq: None,
                    problem: Problem::HeadInvalid(reason),
                });
                return Ok(report);
            }
        }
    }

    let mut last: Option<Last> = None;
    let mut line_counts = vec![0u64; files.len()];
    let mut buf = Vec::with_capacity(1024);
    for (index, path) in files.iter().enumerate() {
        let file = File::open(path).map_err(|e| AuditError::io("opening", path, e))?;
        let mut reader = BufReader::with_capacity(64 * 1024, file);
        let mut line_no = 0u64;
        loop {
            buf.clear();
            let n = reader
                .read_until(b'\n', &mut buf)
                .map_err(|e| AuditError::io("reading", path, e))?;
            if n == 0 {
                break;
            }
            line_no += 1;
            line_counts[index] = line_no;
            let broken = |seq: Option<u64>, problem: Problem| Broken {
                file: path.clone(),
                line: line_no,
                seq,
                problem,
            };
            if buf.pop() != Some(b'\n') {
                report.broken = Some(broken(None, Problem::Incomplete));
                return Ok(report);
            }
            let record: Checked<'_> = match serde_json::from_slice(&buf) {
                Ok(record) => record,
                Err(e) if e.is_data() => {
                    report.broken = Some(broken(None, Problem::NotRecord(e.to_string())));
                    return Ok(report);
                }
                Err(e) => {
                    report.broken = Some(broken(None, Problem::NotJson(e.to_string())));
                    return Ok(report);
                }
            };
            let seq = record.seq;
            let field_problem = if seq == 0 {
                Some(("seq", "must be at least 1"))
            } else if OffsetDateTime::parse(&record.time, &Rfc3339).is_err() {
                Some(("time", "is not an RFC 3339 timestamp"))
            } else if line::parse_hash(&record.prev).is_none() {
                Some(("prev", "is not a hex SHA-256 digest"))
            } else {
                None
            };
            if let Some((field, reason)) = field_problem {
                report.broken = Some(broken(Some(seq), Problem::BadField { field, reason }));
                return Ok(report);
            }
            let prev = line::parse_hash(&record.prev).unwrap_or_default();
            let problem = match &last {
                None if seq == 1 && prev != [0; 32] => Some(Problem::BadGenesis),
                None => None,
                Some(last) if seq > last.seq.saturating_add(1) => Some(Problem::SeqGap {
                    from: last.seq,
                    to: seq,
                }),
                Some(last) if seq <= last.seq => Some(Problem::SeqNotIncreasing {
                    from: last.seq,
                    to: seq,
                }),
                Some(last) if prev != last.hash => Some(Problem::PrevMismatch {
                    file: (last.file != index).then(|| files[last.file].clone()),
                    line: last.line,
                }),
                Some(_) => None,
            };
            if let Some(problem) = problem {
                report.broken = Some(broken(Some(seq), problem));
                return Ok(report);
            }
            let hash = line::hash(&buf);
            if heads.iter().any(|head| head.seq == seq && head.hash != hash) {
                report.broken = Some(broken(Some(seq), Problem::HeadMismatch { seq }));
                return Ok(report);
            }
            if last.is_none() {
                report.first_seq = Some(seq);
                if seq > 1 {
                    report.anchor = Some(record.prev.into_owned());
                }
            }
            report.records += 1;
            last = Some(Last {
                seq,
                hash,
                file: index,
                line: line_no,
            });
        }
    }
    if let Some(last) = &last {
        report.last_seq = Some(last.seq);
        report.last_hash = Some(hex::encode(last.hash));
    }
    for head in &heads {
        let file_end = last.as_ref().map(|last| last.seq);
        if file_end.is_none_or(|end| end < head.seq) {
            let index = files.iter().position(|f| *f == head.file).unwrap_or_default();
            report.broken = Some(Broken {
                file: head.file.clone(),
                line: line_counts.get(index).copied().unwrap_or_default(),
                seq: file_end,
                problem: Problem::HeadAhead {
                    file_end,
                    head: head.seq,
                },
            });
            break;
        }
    }
    Ok(report)
}

/// The given files, deduplicated, in chain order: by the seq of their first
/// line, or the seq in a rotated file's name when the first line cannot be
/// read; files with neither (empty, unreadable) go last, by name.
pub(crate) fn chain_order(paths: &[PathBuf]) -> Vec<PathBuf> {
    let mut keyed: Vec<(u64, PathBuf)> = paths
        .iter()
        .map(|path| {
            let from_content = first_line(path)
                .ok()
                .flatten()
                .and_then(|line| Envelope::parse(&line).ok())
                .map(|envelope| envelope.seq);
            let key = from_content.or_else(|| seq_in_name(path)).unwrap_or(u64::MAX);
            (key, path.clone())
        })
        .collect();
    keyed.sort();
    keyed.dedup_by(|a, b| a.1 == b.1);
    keyed.into_iter().map(|(_, path)| path).collect()
}

fn seq_in_name(path: &Path) -> Option<u64> {
    let name = path.file_name()?;
    let stem = Path::new(name).file_stem()?;
    files::rotated_seq(stem, name)
}
