//! The files of one audit log on disk: the current file, its rotated
//! siblings and its head marker, plus the few reads the writer and the
//! verifier need without scanning whole files (the first line, the last
//! complete line found by seeking from the end).
//!
//! Naming, for a log at `dir/audit.log`:
//! - `dir/audit.log`: the current file, the only one ever written to;
//! - `dir/audit.log.00000000000000012345`: a rotated file whose first record
//!   has seq 12345 (20 digits, zero-padded, so names sort in chain order);
//! - `dir/audit.log.head`: the head marker (last synced seq and hash),
//!   replaced atomically through `dir/audit.log.head.tmp`.
//!
//! This module does not decide when to rotate or what a valid chain is.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::AuditError;
use crate::line::{self, Hash};

const SEQ_DIGITS: usize = 20;

/// The current file and its rotated siblings, in chain order (rotated files
/// by the first seq in their name, then the current file). Files that do not
/// exist are not listed; a missing directory gives an empty list.
pub fn files_of(path: &Path) -> Result<Vec<PathBuf>, AuditError> {
    let mut files: Vec<PathBuf> = rotated_of(path)?.into_iter().map(|(_, path)| path).collect();
    match fs::metadata(path) {
        Ok(_) => files.push(path.to_path_buf()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(AuditError::io("reading metadata of", path, e)),
    }
    Ok(files)
}

/// The rotated siblings of `path` with their first seq, oldest first.
pub(crate) fn rotated_of(path: &Path) -> Result<Vec<(u64, PathBuf)>, AuditError> {
    let Some(name) = path.file_name() else {
        return Err(AuditError::Config("audit log path has no file name"));
    };
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(AuditError::io("listing", dir, e)),
    };
    let mut rotated = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| AuditError::io("listing", dir, e))?;
        let entry_name = entry.file_name();
        if let Some(seq) = rotated_seq(name, &entry_name) {
            rotated.push((seq, dir.join(entry_name)));
        }
    }
    rotated.sort();
    Ok(rotated)
}

/// The first seq encoded in a rotated file's name, if `candidate` is
/// `<name>.<20 digits>`.
pub(crate) fn rotated_seq(name: &std::ffi::OsStr, candidate: &std::ffi::OsStr) -> Option<u64> {
    let name = name.to_str()?;
    let suffix = candidate.to_str()?.strip_prefix(name)?.strip_prefix('.')?;
    if suffix.len() != SEQ_DIGITS || !suffix.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    suffix.parse().ok()
}

/// Where the current file goes when it is rotated.
pub(crate) fn rotated_path(path: &Path, first_seq: u64) -> PathBuf {
    with_suffix(path, &format!(".{first_seq:0width$}", width = SEQ_DIGITS))
}

/// The head marker of a log's current file.
pub fn head_path(path: &Path) -> PathBuf {
    with_suffix(path, ".head")
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = OsString::from(path.as_os_str());
    name.push(suffix);
    PathBuf::from(name)
}

/// The head marker: the last record the writer had synced to disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Head {
    pub(crate) seq: u64,
    pub(crate) hash: String,
}

/// Reads the head marker of `path`'s log: `Ok(None)` when there is none,
/// `Err(reason)` when it exists but is not readable as a head marker.
pub(crate) fn read_head(path: &Path) -> Result<Option<(Head, Hash)>, String> {
    let head_path = head_path(path);
    let bytes = match fs::read(&head_path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read head marker {}: {e}", head_path.display())),
    };
    let head: Head =
        serde_json::from_slice(&bytes).map_err(|e| format!("head marker {} is not valid: {e}", head_path.display()))?;
    let hash =
        line::parse_hash(&head.hash).ok_or_else(|| format!("head marker {} has no valid hash", head_path.display()))?;
    Ok(Some((head, hash)))
}

/// Replaces the head marker atomically: temp file, data sync, rename.
pub(crate) fn write_head(path: &Path, seq: u64, hash: &Hash) -> io::Result<()> {
    let head_path = head_path(path);
    let tmp = with_suffix(&head_path, ".tmp");
    let head = Head {
        seq,
        hash: hex::encode(hash),
    };
    let mut bytes = serde_json::to_vec(&head).map_err(io::Error::other)?;
    bytes.push(b'\n');
    let mut file = File::create(&tmp)?;
    file.write_all(&bytes)?;
    file.sync_data()?;
    drop(file);
    fs::rename(&tmp, &head_path)
}

/// Makes a rename in `dir` durable (best effort: not every platform can
/// open a directory).
pub(crate) fn sync_dir(path: &Path) -> io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

/// The first line of a file (without its newline), if it has a complete one.
pub(crate) fn first_line(path: &Path) -> io::Result<Option<Vec<u8>>> {
    let file = File::open(path)?;
    let mut line = Vec::new();
    BufReader::new(file).read_until(b'\n', &mut line)?;
    if line.pop() == Some(b'\n') {
        Ok(Some(line))
    } else {
        Ok(None)
    }
}

/// What the end of a file holds.
#[derive(Debug)]
pub(crate) struct Tail {
    /// The length of the file up to and including its last newline: the
    /// bytes after it are a torn (incomplete) line.
    pub(crate) complete_len: u64,
    /// The last complete line, without its newline.
    pub(crate) last_line: Option<Vec<u8>>,
}

/// Finds the last complete line of a file `len` bytes long by reading
/// backwards in small blocks; memory use is one line, whatever the size.
pub(crate) fn tail(file: &mut File, len: u64) -> io::Result<Tail> {
    let Some(last_newline) = rfind_newline(file, len)? else {
        return Ok(Tail {
            complete_len: 0,
            last_line: None,
        });
    };
    let start = rfind_newline(file, last_newline)?.map_or(0, |p| p + 1);
    let line_len = usize::try_from(last_newline - start).map_err(io::Error::other)?;
    let mut line = vec![0; line_len];
    file.seek(SeekFrom::Start(start))?;
    file.read_exact(&mut line)?;
    Ok(Tail {
        complete_len: last_newline + 1,
        last_line: Some(line),
    })
}

/// The offset of the last `\n` strictly before `end`.
fn rfind_newline(file: &mut File, end: u64) -> io::Result<Option<u64>> {
    const BLOCK: u64 = 8192;
    let mut buf = [0u8; BLOCK as usize];
    let mut pos = end;
    while pos > 0 {
        let n = pos.min(BLOCK);
        pos -= n;
        let block = &mut buf[..n as usize];
        file.seek(SeekFrom::Start(pos))?;
        file.read_exact(block)?;
        if let Some(i) = block.iter().rposition(|&b| b == b'\n') {
            return Ok(Some(pos + i as u64));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotated_names_round_trip_and_sort() {
        let path = Path::new("/var/log/audit.log");
        let rotated = rotated_path(path, 42);
        assert_eq!(rotated, Path::new("/var/log/audit.log.00000000000000000042"));
        let name = path.file_name().expect("name");
        assert_eq!(rotated_seq(name, rotated.file_name().expect("name")), Some(42));
        assert_eq!(rotated_seq(name, "audit.log.head".as_ref()), None);
        assert_eq!(rotated_seq(name, "audit.log.head.tmp".as_ref()), None);
        assert_eq!(rotated_seq(name, "audit.log.0042".as_ref()), None);
        assert_eq!(rotated_seq(name, "other.log.00000000000000000042".as_ref()), None);
        assert!(rotated_path(path, 9) < rotated_path(path, 10));
    }

    #[test]
    fn tail_finds_last_complete_line_across_blocks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        let long = "x".repeat(20_000);
        fs::write(&path, format!("a\n{long}\ntorn")).expect("write");
        let mut file = File::open(&path).expect("open");
        let len = file.metadata().expect("meta").len();
        let tail = tail(&mut file, len).expect("tail");
        assert_eq!(tail.complete_len, len - 4);
        assert_eq!(tail.last_line.as_deref(), Some(long.as_bytes()));

        fs::write(&path, "only torn").expect("write");
        let mut file = File::open(&path).expect("open");
        let tail = super::tail(&mut file, 9).expect("tail");
        assert_eq!(tail.complete_len, 0);
        assert!(tail.last_line.is_none());

        fs::write(&path, "one\n").expect("write");
        let mut file = File::open(&path).expect("open");
        let tail = super::tail(&mut file, 4).expect("tail");
        assert_eq!(tail.complete_len, 4);
        assert_eq!(tail.last_line.as_deref(), Some(&b"one"[..]));
    }
}
