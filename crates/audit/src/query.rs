//! Reading records back: [`query`] streams the records of a set of files,
//! in chain order, that match a [`Query`].
//!
//! Matching is by equality on the well-known fields (see [`crate::fields`])
//! and a time range on `time`; files are read line by line, never whole.
//! Querying does not verify the chain (use `verify` for that) and does not
//! stop at a bad line: the line is reported as an error and reading goes on.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;

use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::error::AuditError;
use crate::fields;
use crate::verify::chain_order;

/// Which records to return; `None` fields match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    /// The record's `user` field equals this.
    pub user: Option<String>,
    /// The record's `time` is at or after this.
    pub since: Option<OffsetDateTime>,
    /// The record's `time` is before this.
    pub until: Option<OffsetDateTime>,
    /// The record's `decision` field equals this.
    pub decision: Option<String>,
    /// The record's `kind` field equals this.
    pub kind: Option<String>,
    /// The record's `route` field equals this.
    pub route: Option<String>,
}

impl Query {
    /// Whether a record matches. A record without a readable `time` does not
    /// match a query with a time range.
    pub fn matches(&self, record: &Map<String, Value>) -> bool {
        let equals = |field: &str, wanted: &Option<String>| match wanted {
            None => true,
            Some(wanted) => record.get(field).and_then(Value::as_str) == Some(wanted.as_str()),
        };
        if !(equals(fields::USER, &self.user)
            && equals(fields::DECISION, &self.decision)
            && equals(fields::KIND, &self.kind)
            && equals(fields::ROUTE, &self.route))
        {
            return false;
        }
        if self.since.is_none() && self.until.is_none() {
            return true;
        }
        let Some(time) = record
            .get(fields::TIME)
            .and_then(Value::as_str)
            .and_then(|time| OffsetDateTime::parse(time, &Rfc3339).ok())
        else {
            return false;
        };
        self.since.is_none_or(|since| time >= since) && self.until.is_none_or(|until| time < until)
    }
}

/// Streams the records of `paths` (any order; read in chain order) that
/// match `query`. Unreadable files and lines that are not JSON objects are
/// yielded as errors, and reading continues with the next line or file.
pub fn query(paths: &[PathBuf], query: &Query) -> QueryIter {
    QueryIter {
        files: chain_order(paths).into(),
        current: None,
        query: query.clone(),
        buf: Vec::new(),
    }
}

/// The iterator returned by [`query`].
#[derive(Debug)]
pub struct QueryIter {
    files: VecDeque<PathBuf>,
    current: Option<OpenFile>,
    query: Query,
    buf: Vec<u8>,
}

#[derive(Debug)]
struct OpenFile {
    path: PathBuf,
    reader: BufReader<File>,
    line: u64,
}

impl Iterator for QueryIter {
    type Item = Result<Map<String, Value>, AuditError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let Some(current) = self.current.as_mut() else {
                let path = self.files.pop_front()?;
                match File::open(&path) {
                    Ok(file) => {
                        self.current = Some(OpenFile {
                            path,
                            reader: BufReader::with_capacity(64 * 1024, file),
                            line: 0,
                        })
                    }
                    Err(e) => return Some(Err(AuditError::io("opening", &path, e))),
                }
                continue;
            };
            self.buf.clear();
            match current.reader.read_until(b'\n', &mut self.buf) {
                Ok(0) => self.current = None,
                Ok(_) => {
                    current.line += 1;
                    if self.buf.last() == Some(&b'\n') {
                        self.buf.pop();
                    }
                    match serde_json::from_slice::<Map<String, Value>>(&self.buf) {
                        Ok(record) if self.query.matches(&record) => return Some(Ok(record)),
                        Ok(_) => {}
                        Err(e) => {
                            let reason = format!("line is not a JSON object: {e}");
                            return Some(Err(AuditError::corrupt(&current.path, Some(current.line), reason)));
                        }
                    }
                }
                Err(e) => {
                    let error = AuditError::io("reading", &current.path, e);
                    self.current = None;
                    return Some(Err(error));
                }
            }
        }
    }
}
