//! The writer: [`AuditLog`] hands records to one dedicated thread over a
//! bounded queue; that thread numbers them, chains them, writes them in
//! batches, syncs, rotates and prunes.
//!
//! Durability: after each batch the lines are written to the file (one
//! `write` for up to 64 KiB of lines; there is no second buffer in front of
//! it); `fdatasync` follows at most every [`AuditConfig::sync_interval`],
//! and always on rotation, on [`AuditLog::sync`] and on close. The head
//! marker is replaced after each sync, so it never claims a record that is
//! not on disk.
//!
//! Failures: a failed write is counted, logged (path and error only, never
//! record contents) and retried with backoff from the exact byte where it
//! stopped, so a retry never duplicates or tears a line. While the disk
//! fails the queue fills: [`AuditLog::log`] then waits and
//! [`AuditLog::try_log`] drops. Only at close does the writer give up, after
//! [`AuditConfig::close_timeout`].
//!
//! Not handled here: two processes writing the same path (there is no file
//! lock; run one writer per file), and what goes into a record.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use time::OffsetDateTime;

use crate::error::AuditError;
use crate::files::{self, first_line, rotated_of, rotated_path};
use crate::line::{self, Envelope, Hash};
use crate::record::Fields;

/// Messages handled per batch before the batch is written out.
const MAX_BATCH: usize = 1024;
/// After the first record of a batch arrives, the writer waits this long
/// for more before writing. Without it, a busy proxy wakes the writer
/// thread and makes a write(2) for every record (measured: a third of the
/// proxy's throughput on two cores); with it, a few hundred times a second.
const LINGER: Duration = Duration::from_millis(2);
/// Pending bytes that trigger a write within a batch.
const WRITE_CHUNK: usize = 64 * 1024;
const BACKOFF_MIN: Duration = Duration::from_millis(10);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// How and where the audit trail is written.
#[derive(Debug, Clone)]
pub struct AuditConfig {
    /// The current file; rotated files and the head marker live next to it.
    /// `None` writes to stdout only, with a chain that starts again at seq 1
    /// on every start.
    pub path: Option<PathBuf>,
    /// Also (or only) write every line to stdout, best effort: a failed
    /// stdout write is counted but not retried.
    pub stdout: bool,
    /// Rotate before a record would make the current file larger than this
    /// (a record larger than the limit still goes into a file of its own).
    /// 0 disables rotation. Default 100 MiB.
    pub max_file_bytes: u64,
    /// Rotated files to keep besides the current file; older ones are
    /// deleted after each rotation. 0 keeps all. Default 10.
    pub keep_files: usize,
    /// Records that may wait for the writer (at least 1). Default 65536.
    pub queue: usize,
    /// Minimum time between two `fdatasync`s of the current file. Default 1 s.
    pub sync_interval: Duration,
    /// How long close keeps retrying a failing disk before giving up on the
    /// records still unwritten. Default 10 s.
    pub close_timeout: Duration,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            path: None,
            stdout: false,
            max_file_bytes: 100 * 1024 * 1024,
            keep_files: 10,
            queue: 65536,
            sync_interval: Duration::from_secs(1),
            close_timeout: Duration::from_secs(10),
        }
    }
}

impl AuditConfig {
    /// The defaults, writing to `path`.
    pub fn file(path: impl Into<PathBuf>) -> Self {
        AuditConfig {
            path: Some(path.into()),
            ..AuditConfig::default()
        }
    }
}

/// Counters since the log was opened, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AuditStats {
    /// Records written (to the file, or to stdout when there is no file).
    pub written: u64,
    /// Records not written: `try_log` with a full queue, anything submitted
    /// after close, records a failing disk refused (only `try_log` ones, or
    /// all of them once close gave up).
    pub dropped: u64,
    /// Failed write, sync or rename attempts (each retry counts).
    pub write_errors: u64,
    /// Files rotated.
    pub rotations: u64,
    /// Bytes written to the file (or stdout when there is no file).
    pub bytes: u64,
}

#[derive(Debug, Default)]
struct Counters {
    written: AtomicU64,
    dropped: AtomicU64,
    write_errors: AtomicU64,
    rotations: AtomicU64,
    bytes: AtomicU64,
    shutting_down: AtomicBool,
}

impl Counters {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

enum Msg {
    Record {
        fields: Fields,
        at: OffsetDateTime,
        keep: bool,
    },
    Flush {
        sync: bool,
        done: SyncSender<Result<(), AuditError>>,
    },
    Pause {
        paused: SyncSender<()>,
        resume: Receiver<()>,
    },
    Close,
}

/// The audit trail writer. Share it (`Arc<AuditLog>`); every method takes
/// `&self`. Dropping it closes it (see [`AuditLog::close`]).
#[derive(Debug)]
pub struct AuditLog {
    tx: SyncSender<Msg>,
    /// True once closed: held for reading while submitting, so that nothing
    /// can enter the queue after the close message.
    closed: RwLock<bool>,
    counters: Arc<Counters>,
    thread: Mutex<Option<JoinHandle<Result<(), AuditError>>>>,
}

/// Holds the writer thread still until dropped (see
/// [`AuditLog::pause_writer`]).
#[doc(hidden)]
#[derive(Debug)]
pub struct WriterPause {
    _resume: SyncSender<()>,
}

impl AuditLog {
    /// Opens the log: resumes the chain from the existing files (repairing a
    /// torn last line, see the crate docs) and starts the writer thread.
    pub fn open(config: AuditConfig) -> Result<AuditLog, AuditError> {
        if config.path.is_none() && !config.stdout {
            return Err(AuditError::Config("neither a path nor stdout to write to"));
        }
        let (sink, next_seq, prev) = match &config.path {
            Some(path) => {
                let (sink, next_seq, prev) = resume(path)?;
                (Some(sink), next_seq, prev)
            }
            None => (None, 1, [0; 32]),
        };
        let counters = Arc::new(Counters::default());
        let writer = Writer {
            sink,
            stdout: config.stdout,
            stdout_buf: Vec::new(),
            stdout_records: 0,
            counters: Arc::clone(&counters),
            next_seq,
            prev,
            max_file_bytes: config.max_file_bytes,
            keep_files: config.keep_files,
            sync_interval: config.sync_interval,
            close_timeout: config.close_timeout,
            last_sync: Instant::now(),
            shutdown_since: None,
            last_error: String::new(),
            gave_up: false,
            lost: 0,
            scratch: Vec::with_capacity(1024),
            clock: line::Clock::default(),
        };
        let (tx, rx) = mpsc::sync_channel(config.queue.max(1));
        let thread = std::thread::Builder::new()
            .name("portcullis-audit".to_owned())
            .spawn(move || writer.run(rx))
            .map_err(|e| {
                let path = config.path.clone().unwrap_or_else(|| PathBuf::from("<stdout>"));
                AuditError::io("starting the writer thread for", &path, e)
            })?;
        Ok(AuditLog {
            tx,
            closed: RwLock::new(false),
            counters,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Submits a record that must not be lost (denials, provisioning
    /// changes): waits while the queue is full. Fails only once the log is
    /// closed. `seq`, `time` (now) and `prev` are added by the writer; caller
    /// keys that collide with them are renamed (see the crate docs).
    pub fn log(&self, record: impl Into<Fields>) -> Result<(), AuditError> {
        let msg = Msg::Record {
            fields: record.into(),
            at: OffsetDateTime::now_utc(),
            keep: true,
        };
        let closed = self.closed.read();
        if *closed {
            return Err(AuditError::Closed);
        }
        self.tx.send(msg).map_err(|_| AuditError::Closed)
    }

    /// Submits a record that may be dropped (sampled allow decisions):
    /// returns false, and counts it in `dropped`, when the queue is full or
    /// the log is closed.
    pub fn try_log(&self, record: impl Into<Fields>) -> bool {
        let msg = Msg::Record {
            fields: record.into(),
            at: OffsetDateTime::now_utc(),
            keep: false,
        };
        let closed = self.closed.read();
        let sent = !*closed && self.tx.try_send(msg).is_ok();
        if !sent {
            Counters::add(&self.counters.dropped, 1);
        }
        sent
    }

    /// Waits until every record submitted before this call has been written
    /// to the file (handed to the OS, not necessarily synced).
    pub fn flush(&self) -> Result<(), AuditError> {
        self.barrier(false)
    }

    /// Like [`flush`](AuditLog::flush), then `fdatasync` and an updated head
    /// marker.
    pub fn sync(&self) -> Result<(), AuditError> {
        self.barrier(true)
    }

    fn barrier(&self, sync: bool) -> Result<(), AuditError> {
        let (done, wait) = mpsc::sync_channel(1);
        {
            let closed = self.closed.read();
            if *closed {
                return Err(AuditError::Closed);
            }
            self.tx
                .send(Msg::Flush { sync, done })
                .map_err(|_| AuditError::Closed)?;
        }
        wait.recv().map_err(|_| AuditError::Closed)?
    }

    /// Drains the queue, writes and syncs everything, and stops the writer.
    /// Later submissions fail (`log`) or are dropped (`try_log`). Calling it
    /// again returns `Ok` once the first call is done.
    pub fn close(&self) -> Result<(), AuditError> {
        // Before taking the lock: a writer stuck retrying a failing disk must
        // learn that it may give up, or blocked submitters would never let
        // the lock go.
        self.counters.shutting_down.store(true, Ordering::Relaxed);
        let send_close = {
            let mut closed = self.closed.write();
            !std::mem::replace(&mut *closed, true)
        };
        if send_close {
            // The writer keeps draining, so this returns; if the writer is
            // gone there is nothing to close.
            let _ = self.tx.send(Msg::Close);
        }
        let thread = self.thread.lock().take();
        match thread {
            Some(thread) => thread.join().map_err(|_| AuditError::WriterPanicked)?,
            None => Ok(()),
        }
    }

    /// The counters so far.
    pub fn stats(&self) -> AuditStats {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        AuditStats {
            written: load(&self.counters.written),
            dropped: load(&self.counters.dropped),
            write_errors: load(&self.counters.write_errors),
            rotations: load(&self.counters.rotations),
            bytes: load(&self.counters.bytes),
        }
    }

    /// Test hook: writes out what is queued, then holds the writer thread
    /// until the returned guard is dropped, so that tests can fill the queue
    /// deterministically. Records submitted meanwhile wait in the queue.
    #[doc(hidden)]
    pub fn pause_writer(&self) -> Result<WriterPause, AuditError> {
        let (paused, wait) = mpsc::sync_channel(1);
        let (resume_tx, resume) = mpsc::sync_channel(0);
        {
            let closed = self.closed.read();
            if *closed {
                return Err(AuditError::Closed);
            }
            self.tx
                .send(Msg::Pause { paused, resume })
                .map_err(|_| AuditError::Closed)?;
        }
        wait.recv().map_err(|_| AuditError::Closed)?;
        Ok(WriterPause { _resume: resume_tx })
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        if let Err(e) = self.close() {
            tracing::error!(error = %e, "closing the audit log");
        }
    }
}

/// Opens the current file, repairs a torn tail and finds where the chain
/// continues: `(sink, next seq, prev hash)`.
fn resume(path: &Path) -> Result<(FileSink, u64, Hash), AuditError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(|e| AuditError::io("creating directory", parent, e))?;
    }
    let mut file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)
        .map_err(|e| AuditError::io("opening", path, e))?;
    let len = file
        .metadata()
        .map_err(|e| AuditError::io("reading metadata of", path, e))?
        .len();
    let tail = files::tail(&mut file, len).map_err(|e| AuditError::io("reading the end of", path, e))?;
    if tail.complete_len < len {
        tracing::warn!(
            path = %path.display(),
            removed_bytes = len - tail.complete_len,
            "audit log ends with an incomplete line (interrupted write); truncating it, the chain continues from the last complete record"
        );
        file.set_len(tail.complete_len)
            .and_then(|()| file.sync_data())
            .map_err(|e| AuditError::io("truncating the incomplete last line of", path, e))?;
    }

    let (first_seq, file_end) = match &tail.last_line {
        Some(last) => {
            let end = Envelope::parse(last).map_err(|reason| AuditError::corrupt(path, None, reason))?;
            let first = first_line(path)
                .map_err(|e| AuditError::io("reading", path, e))?
                .ok_or_else(|| AuditError::corrupt(path, Some(1), "no complete first line"))?;
            let first = Envelope::parse(&first).map_err(|reason| AuditError::corrupt(path, Some(1), reason))?;
            (Some(first.seq), Some((end.seq, line::hash(last))))
        }
        None => (None, newest_rotated_end(path)?),
    };

    let head = files::read_head(path).unwrap_or_else(|reason| {
        tracing::warn!(%reason, "ignoring the audit head marker");
        None
    });
    let (next_seq, prev) = match (file_end, head) {
        (Some((seq, hash)), Some((head, head_hash))) if head.seq > seq || (head.seq == seq && head_hash != hash) => {
            tracing::error!(
                path = %path.display(),
                file_seq = seq,
                head_seq = head.seq,
                "audit log ends before its head marker (records were removed from the end, or the last one changed); continuing the chain from the head marker so that the break stays visible"
            );
            (head.seq.saturating_add(1), head_hash)
        }
        (Some((seq, hash)), _) => (seq.saturating_add(1), hash),
        (None, Some((head, head_hash))) => {
            tracing::error!(
                path = %path.display(),
                head_seq = head.seq,
                "audit log files are missing but the head marker is there; continuing the chain from the head marker"
            );
            (head.seq.saturating_add(1), head_hash)
        }
        (None, None) => (1, [0; 32]),
    };
    let sink = FileSink {
        path: path.to_path_buf(),
        file: Some(file),
        len: tail.complete_len,
        first_seq,
        pending: Vec::new(),
        pending_written: 0,
        pending_records: 0,
        unsynced: false,
    };
    Ok((sink, next_seq, prev))
}

/// The seq and hash of the last complete record of the newest rotated file.
fn newest_rotated_end(path: &Path) -> Result<Option<(u64, Hash)>, AuditError> {
    let Some((_, newest)) = rotated_of(path)?.pop() else {
        return Ok(None);
    };
    let mut file = File::open(&newest).map_err(|e| AuditError::io("opening", &newest, e))?;
    let len = file
        .metadata()
        .map_err(|e| AuditError::io("reading metadata of", &newest, e))?
        .len();
    let tail = files::tail(&mut file, len).map_err(|e| AuditError::io("reading the end of", &newest, e))?;
    let Some(last) = tail.last_line else {
        return Ok(None);
    };
    let end = Envelope::parse(&last).map_err(|reason| AuditError::corrupt(&newest, None, reason))?;
    Ok(Some((end.seq, line::hash(&last))))
}

/// The current file and the lines not yet written to it.
struct FileSink {
    path: PathBuf,
    /// `None` between a rotation's rename and the creation of the new file.
    file: Option<File>,
    /// Bytes in the current file, pending ones included.
    len: u64,
    /// Seq of the first record in the current file (pending ones included).
    first_seq: Option<u64>,
    pending: Vec<u8>,
    /// How much of `pending` is already in the file (after a partial write).
    pending_written: usize,
    pending_records: u64,
    /// Bytes were written since the last sync.
    unsynced: bool,
}

impl FileSink {
    fn ensure_open(&mut self) -> io::Result<()> {
        if self.file.is_none() {
            let file = OpenOptions::new().append(true).create(true).open(&self.path)?;
            self.len = file.metadata()?.len();
            self.file = Some(file);
            // The new name must survive a crash along with the data synced into it.
            if let Err(e) = files::sync_dir(&self.path) {
                tracing::warn!(path = %self.path.display(), error = %e, "syncing the audit log directory");
            }
        }
        Ok(())
    }

    /// One attempt at writing what is pending; progress is kept on failure.
    fn write_pending(&mut self, counters: &Counters) -> io::Result<()> {
        if self.pending_written < self.pending.len() {
            let Some(file) = self.file.as_mut() else {
                return Err(io::Error::other("no current file to write to"));
            };
            while self.pending_written < self.pending.len() {
                match file.write(&self.pending[self.pending_written..]) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) => {
                        self.pending_written += n;
                        self.unsynced = true;
                        Counters::add(&counters.bytes, n as u64);
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Counters::add(&counters.written, self.pending_records);
        self.pending.clear();
        self.pending_written = 0;
        self.pending_records = 0;
        Ok(())
    }

    /// Seals the current file under its rotated name. Each step that
    /// succeeded stays done if a later one fails, so a retry resumes.
    fn rotate(&mut self, counters: &Counters) -> io::Result<()> {
        self.write_pending(counters)?;
        if let Some(file) = &self.file {
            file.sync_data()?;
        }
        self.unsynced = false;
        let Some(first_seq) = self.first_seq else {
            return Err(io::Error::other("the first seq of the current file is unknown"));
        };
        let target = rotated_path(&self.path, first_seq);
        if fs::exists(&target)? {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("rotated file {} already exists", target.display()),
            ));
        }
        fs::rename(&self.path, &target)?;
        self.file = None;
        self.len = 0;
        self.first_seq = None;
        Counters::add(&counters.rotations, 1);
        if let Err(e) = files::sync_dir(&self.path) {
            tracing::warn!(path = %self.path.display(), error = %e, "syncing the audit log directory after rotation");
        }
        Ok(())
    }

    /// Deletes the oldest rotated files beyond `keep`.
    fn prune(&self, keep: usize) {
        if keep == 0 {
            return;
        }
        let rotated = match rotated_of(&self.path) {
            Ok(rotated) => rotated,
            Err(e) => {
                tracing::warn!(error = %e, "listing rotated audit files to prune");
                return;
            }
        };
        let excess = rotated.len().saturating_sub(keep);
        for (_, old) in &rotated[..excess] {
            if let Err(e) = fs::remove_file(old) {
                tracing::warn!(path = %old.display(), error = %e, "deleting an old audit file");
            }
        }
    }
}

struct Writer {
    sink: Option<FileSink>,
    stdout: bool,
    stdout_buf: Vec<u8>,
    stdout_records: u64,
    counters: Arc<Counters>,
    next_seq: u64,
    prev: Hash,
    max_file_bytes: u64,
    keep_files: usize,
    sync_interval: Duration,
    close_timeout: Duration,
    last_sync: Instant,
    shutdown_since: Option<Instant>,
    last_error: String,
    /// Close timed out on a failing disk: everything left is dropped.
    gave_up: bool,
    /// Records accepted but never written.
    lost: u64,
    /// Reused for every line, so that a record costs no allocation here.
    scratch: Vec<u8>,
    clock: line::Clock,
}

impl Writer {
    fn run(mut self, rx: Receiver<Msg>) -> Result<(), AuditError> {
        loop {
            let first = if self.unsynced() {
                match rx.recv_timeout(self.sync_interval.saturating_sub(self.last_sync.elapsed())) {
                    Ok(msg) => Some(msg),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => return self.finish(),
                }
            } else {
                match rx.recv() {
                    Ok(msg) => Some(msg),
                    Err(_) => return self.finish(),
                }
            };
            let mut closing = false;
            if let Some(msg) = first {
                let record = matches!(msg, Msg::Record { .. });
                closing = self.handle(msg);
                if record && !closing {
                    std::thread::sleep(LINGER);
                }
                let mut handled = 1;
                while !closing && handled < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(msg) => closing = self.handle(msg),
                        Err(_) => break,
                    }
                    handled += 1;
                }
            }
            self.write_out();
            if closing {
                return self.finish();
            }
            if self.unsynced() && self.last_sync.elapsed() >= self.sync_interval {
                // Errors are counted and logged inside; the next sync retries.
                let _ = self.sync();
            }
        }
    }

    /// Returns true for the close message.
    fn handle(&mut self, msg: Msg) -> bool {
        match msg {
            Msg::Record { fields, at, keep } => self.record(&fields, at, keep),
            Msg::Flush { sync, done } => {
                self.write_out();
                let result = if self.gave_up {
                    Err(self.unwritten())
                } else if sync {
                    self.sync()
                } else {
                    Ok(())
                };
                let _ = done.send(result);
            }
            Msg::Pause { paused, resume } => {
                self.write_out();
                let _ = paused.send(());
                // Returns when the guard is dropped.
                let _ = resume.recv();
            }
            Msg::Close => return true,
        }
        false
    }

    fn record(&mut self, fields: &Fields, at: OffsetDateTime, keep: bool) {
        if self.gave_up {
            self.lose(1);
            return;
        }
        let mut backoff = BACKOFF_MIN;
        loop {
            match self.append(fields, at) {
                Ok(()) => break,
                Err(e) => {
                    self.write_failed(&e);
                    if !keep {
                        Counters::add(&self.counters.dropped, 1);
                        return;
                    }
                    if !self.retry_after(&mut backoff) {
                        self.lose(1);
                        return;
                    }
                }
            }
        }
        if self.sink.as_ref().is_some_and(|sink| sink.pending.len() >= WRITE_CHUNK) {
            self.write_out();
        }
    }

    /// Numbers, chains and queues one record for writing; rotates first if
    /// the record would not fit. On error nothing has changed.
    fn append(&mut self, fields: &Fields, at: OffsetDateTime) -> Result<(), std::io::Error> {
        let mut line = std::mem::take(&mut self.scratch);
        line::format_line(&mut line, self.next_seq, self.clock.format(at), fields, &self.prev);
        let result = self.append_line(&line);
        self.scratch = line;
        result
    }

    fn append_line(&mut self, line: &[u8]) -> Result<(), std::io::Error> {
        if let Some(sink) = self.sink.as_mut() {
            let needed = line.len() as u64 + 1;
            if self.max_file_bytes > 0 && sink.len > 0 && sink.len + needed > self.max_file_bytes {
                sink.rotate(&self.counters)?;
                // The head marker names the last record of the sealed file.
                if let Err(e) = files::write_head(&sink.path, self.next_seq.saturating_sub(1), &self.prev) {
                    Counters::add(&self.counters.write_errors, 1);
                    tracing::error!(path = %sink.path.display(), error = %e, "writing the audit head marker");
                }
                self.last_sync = Instant::now();
                sink.prune(self.keep_files);
            }
            sink.ensure_open()?;
            sink.first_seq.get_or_insert(self.next_seq);
            sink.pending.extend_from_slice(line);
            sink.pending.push(b'\n');
            sink.pending_records += 1;
            sink.len += needed;
        }
        if self.stdout {
            self.stdout_buf.extend_from_slice(line);
            self.stdout_buf.push(b'\n');
            self.stdout_records += 1;
        }
        self.prev = line::hash(line);
        self.next_seq += 1;
        Ok(())
    }

    /// Writes everything pending, retrying a failing disk (until close
    /// gives up), then stdout.
    fn write_out(&mut self) {
        let mut backoff = BACKOFF_MIN;
        while let Some(sink) = self.sink.as_mut() {
            match sink.write_pending(&self.counters) {
                Ok(()) => break,
                Err(e) => {
                    self.write_failed(&e);
                    if !self.retry_after(&mut backoff) {
                        if let Some(sink) = self.sink.as_mut() {
                            let records = sink.pending_records;
                            sink.pending.clear();
                            sink.pending_written = 0;
                            sink.pending_records = 0;
                            self.lose(records);
                        }
                        break;
                    }
                }
            }
        }
        if !self.stdout_buf.is_empty() {
            let mut out = io::stdout().lock();
            let result = out.write_all(&self.stdout_buf).and_then(|()| out.flush());
            drop(out);
            match result {
                Ok(()) if self.sink.is_none() => {
                    Counters::add(&self.counters.written, self.stdout_records);
                    Counters::add(&self.counters.bytes, self.stdout_buf.len() as u64);
                }
                Ok(()) => {}
                Err(e) => {
                    Counters::add(&self.counters.write_errors, 1);
                    if self.sink.is_none() {
                        Counters::add(&self.counters.dropped, self.stdout_records);
                    }
                    tracing::error!(error = %e, "writing audit records to stdout");
                }
            }
            self.stdout_buf.clear();
            self.stdout_records = 0;
        }
    }

    fn unsynced(&self) -> bool {
        self.sink.as_ref().is_some_and(|sink| sink.unsynced)
    }

    /// `fdatasync`s the current file and replaces the head marker.
    fn sync(&mut self) -> Result<(), AuditError> {
        self.last_sync = Instant::now();
        let Some(sink) = self.sink.as_mut() else {
            return Ok(());
        };
        if !sink.unsynced || !sink.pending.is_empty() {
            return Ok(());
        }
        if let Some(file) = &sink.file
            && let Err(e) = file.sync_data()
        {
            Counters::add(&self.counters.write_errors, 1);
            tracing::error!(path = %sink.path.display(), error = %e, "syncing the audit log");
            return Err(AuditError::io("syncing", &sink.path, e));
        }
        sink.unsynced = false;
        if self.next_seq > 1
            && let Err(e) = files::write_head(&sink.path, self.next_seq.saturating_sub(1), &self.prev)
        {
            Counters::add(&self.counters.write_errors, 1);
            tracing::error!(path = %sink.path.display(), error = %e, "writing the audit head marker");
            return Err(AuditError::io("writing the head marker of", &sink.path, e));
        }
        Ok(())
    }

    fn finish(mut self) -> Result<(), AuditError> {
        self.write_out();
        if self.unsynced() {
            // The only sync that is retried: the last chance to make it durable.
            let mut backoff = BACKOFF_MIN;
            while self.sync().is_err() && self.retry_after(&mut backoff) {}
        }
        if self.lost > 0 {
            return Err(self.unwritten());
        }
        if self.unsynced() {
            let path = self.sink.as_ref().map(|sink| sink.path.clone()).unwrap_or_default();
            return Err(AuditError::io(
                "syncing",
                &path,
                io::Error::other(self.last_error.clone()),
            ));
        }
        Ok(())
    }

    fn write_failed(&mut self, e: &io::Error) {
        Counters::add(&self.counters.write_errors, 1);
        self.last_error = e.to_string();
        let path = self
            .sink
            .as_ref()
            .map(|sink| sink.path.display().to_string())
            .unwrap_or_default();
        tracing::error!(%path, error = %e, "writing the audit log failed; retrying");
    }

    /// Sleeps before a retry; false when close has waited long enough.
    fn retry_after(&mut self, backoff: &mut Duration) -> bool {
        let mut wait = *backoff;
        if self.counters.shutting_down.load(Ordering::Relaxed) {
            let since = *self.shutdown_since.get_or_insert_with(Instant::now);
            let left = self.close_timeout.saturating_sub(since.elapsed());
            if left.is_zero() {
                if !self.gave_up {
                    tracing::error!(error = %self.last_error, "giving up on the audit log at close");
                }
                self.gave_up = true;
                return false;
            }
            wait = wait.min(left);
        }
        std::thread::sleep(wait);
        *backoff = (*backoff * 2).min(BACKOFF_MAX);
        true
    }

    fn lose(&mut self, records: u64) {
        self.lost += records;
        Counters::add(&self.counters.dropped, records);
    }

    fn unwritten(&self) -> AuditError {
        AuditError::Unwritten {
            count: self.lost,
            reason: self.last_error.clone(),
        }
    }
}
