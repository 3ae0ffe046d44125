//! The audit log: every signature ofc-signer produces, in a hash-chained, append-only file.
//!
//! [`AuditLog::append`] returns only once the record is on disk (`write` + `fdatasync`); the
//! caller answers only after it returned `Ok`, and refuses to sign when it fails. Concurrent
//! appends share their `fdatasync` (group commit): while one batch is being synced, new records
//! queue, and the next sync covers them all; under load the writer also waits a moment
//! ([`FileAuditLog::with_commit_delay`]) for the records it expects, so that one sync covers
//! many. Nothing secret can be logged: [`AuditRecord`] holds hashes of the payload and of the
//! caller's token, never the texts, and no key or passphrase.
//!
//! ## Format (JSON lines)
//!
//! One record per line, each line terminated by `\n`, UTF-8, no other whitespace. A line is a
//! JSON object with exactly these members in this order:
//!
//! | member | value |
//! |---|---|
//! | `seq` | record number, 1 for the first line, then +1 per line |
//! | `time` | milliseconds since the Unix epoch (integer) |
//! | `route` | string, e.g. `"POST /api/v2/ofc/signPayload"` |
//! | `walletId` | string |
//! | `enterprise` | string, or `null` |
//! | `payloadSha256` | 64 lowercase hex: SHA-256 of the signed payload bytes |
//! | `signature` | string (hex) |
//! | `requestId` | string |
//! | `tokenSha256` | 64 lowercase hex: SHA-256 of the caller's access token, or `null` |
//! | `outcome` | string, e.g. `"signed"`, `"submitted 201"`, `"bitgo-signed"` |
//! | `prev` | the previous line's `hash`; 64 `0`s for the first line |
//! | `hash` | 64 lowercase hex, see below |
//!
//! Strings are written as `serde_json` writes them (`"` `\` and control characters escaped,
//! everything else literal UTF-8); numbers as decimal integers.
//!
//! **Hash.** The *canonical bytes* of a line are the line's text up to and including the
//! `prev` member's value, closed with `}`: i.e. the object without its `hash` member,
//! `{"seq":1,…,"prev":"00…00"}`. `hash` = lowercase hex SHA-256 of the canonical bytes. The
//! line is the canonical bytes with the final `}` replaced by `,"hash":"<hash>"}`, then `\n`.
//!
//! **Verification** ([`verify`]) parses each line, re-serialises it and requires the exact
//! same bytes (so any edit, even of whitespace or an escape, shows), recomputes the hash, and
//! checks `seq` and `prev` against the line before. A last line without its `\n` is *torn* (a
//! crash during an append: that record was never acknowledged); [`FileAuditLog::open`] cuts
//! it off. Removing whole lines from the *end* cannot be detected from the file alone: keep
//! the reported head hash elsewhere to anchor the log.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use serde::Deserialize;
use sha2::{Digest, Sha256};

/// The `prev` of the first line.
pub const GENESIS_PREV: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One signature, as the caller describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditRecord {
    pub time_ms: u64,
    /// e.g. "POST /api/v2/ofc/signPayload"
    pub route: String,
    pub wallet_id: String,
    pub enterprise: Option<String>,
    /// Hash of the signed payload bytes — never the payload text.
    pub payload_sha256: [u8; 32],
    /// Hex.
    pub signature: String,
    pub request_id: String,
    /// Hash of the caller's access token — never the token.
    pub token_sha256: Option<[u8; 32]>,
    /// e.g. "signed", "submitted 201", "bitgo-signed"
    pub outcome: String,
}

/// Where signatures are recorded.
pub trait AuditLog: Send + Sync + 'static {
    /// Durably appends `record`; on `Err` the caller must not release the signature.
    fn append(&self, record: &AuditRecord) -> Result<(), AuditError>;

    /// Appends `record` and calls `done` with the outcome once it is durable (or has failed),
    /// possibly on another thread. By default: [`AuditLog::append`], then `done`, right here.
    fn append_then(&self, record: AuditRecord, done: AuditDone) {
        done(self.append(&record));
    }

    /// Whether appends can still succeed (false after a failed write poisoned the log).
    fn healthy(&self) -> bool {
        true
    }

    /// How many times the log was made durable (`fdatasync`) so far: with the records
    /// appended, how well appends share their syncs.
    fn syncs(&self) -> u64 {
        0
    }
}

/// What [`AuditLog::append_then`] calls with the outcome of an append.
pub type AuditDone = Box<dyn FnOnce(Result<(), AuditError>) + Send>;

/// A failure to open or append to the log. Its text names the file, never record content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuditError {
    #[error("audit log {path}: cannot {op}: {message}")]
    Io {
        path: String,
        op: &'static str,
        message: String,
    },
    #[error("audit log {path} is already open (in this or another process)")]
    Locked { path: String },
    #[error(
        "audit log {path}: its last record is broken ({reason}); check it with `ofc-signer audit verify`"
    )]
    Corrupt { path: String, reason: Broken },
    #[error("audit log {path}: an earlier append failed; the log must be reopened")]
    Poisoned { path: String },
}

// ------------------------------------------------------------------------------------------------
// Lines
// ------------------------------------------------------------------------------------------------

fn json_string(out: &mut Vec<u8>, text: &str) {
    // Writing a `str` into a `Vec` cannot fail.
    serde_json::to_writer(&mut *out, text).expect("a string always serialises");
}

fn json_optional(out: &mut Vec<u8>, text: Option<&str>) {
    match text {
        Some(text) => json_string(out, text),
        None => out.extend_from_slice(b"null"),
    }
}

/// The canonical bytes of record `seq` chained to `prev`: the line's object without `hash`.
pub fn canonical_bytes(record: &AuditRecord, seq: u64, prev: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        400 + record.route.len() + record.wallet_id.len() + record.signature.len(),
    );
    out.extend_from_slice(
        format!("{{\"seq\":{seq},\"time\":{},\"route\":", record.time_ms).as_bytes(),
    );
    json_string(&mut out, &record.route);
    out.extend_from_slice(b",\"walletId\":");
    json_string(&mut out, &record.wallet_id);
    out.extend_from_slice(b",\"enterprise\":");
    json_optional(&mut out, record.enterprise.as_deref());
    out.extend_from_slice(b",\"payloadSha256\":");
    json_string(&mut out, &hex::encode(record.payload_sha256));
    out.extend_from_slice(b",\"signature\":");
    json_string(&mut out, &record.signature);
    out.extend_from_slice(b",\"requestId\":");
    json_string(&mut out, &record.request_id);
    out.extend_from_slice(b",\"tokenSha256\":");
    json_optional(&mut out, record.token_sha256.map(hex::encode).as_deref());
    out.extend_from_slice(b",\"outcome\":");
    json_string(&mut out, &record.outcome);
    out.extend_from_slice(b",\"prev\":");
    json_string(&mut out, prev);
    out.push(b'}');
    out
}

/// The full line (with its `\n`) of record `seq` chained to `prev`, and its hash.
pub fn line_bytes(record: &AuditRecord, seq: u64, prev: &str) -> (Vec<u8>, String) {
    let mut line = canonical_bytes(record, seq, prev);
    let hash = hex::encode(Sha256::digest(&line));
    line.pop(); // the closing `}`
    line.extend_from_slice(b",\"hash\":\"");
    line.extend_from_slice(hash.as_bytes());
    line.extend_from_slice(b"\"}\n");
    (line, hash)
}

/// Why a line fails verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Broken {
    /// The last line has no trailing `\n` (a crash during an append).
    TornLastLine,
    EmptyLine,
    NotUtf8,
    /// Not a JSON object with exactly the expected members and types.
    Malformed(String),
    /// A hash member is not 64 lowercase hex digits.
    BadHex(&'static str),
    /// Valid record, but not byte-for-byte the canonical serialisation.
    NotCanonical,
    /// `hash` is not the SHA-256 of the canonical bytes.
    HashMismatch,
    SeqMismatch {
        found: u64,
        expected: u64,
    },
    /// `prev` is not the previous line's `hash`.
    PrevMismatch,
}

impl std::fmt::Display for Broken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Broken::TornLastLine => f.write_str("torn last line (no trailing newline)"),
            Broken::EmptyLine => f.write_str("empty line"),
            Broken::NotUtf8 => f.write_str("not UTF-8"),
            Broken::Malformed(why) => write!(f, "not an audit record: {why}"),
            Broken::BadHex(member) => write!(f, "{member} is not 64 lowercase hex digits"),
            Broken::NotCanonical => f.write_str("not in canonical form (the line was edited)"),
            Broken::HashMismatch => f.write_str("hash does not match the record"),
            Broken::SeqMismatch { found, expected } => {
                write!(f, "seq is {found}, expected {expected}")
            }
            Broken::PrevMismatch => f.write_str("prev does not match the previous record's hash"),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ParsedLine {
    seq: u64,
    time: u64,
    route: String,
    #[serde(rename = "walletId")]
    wallet_id: String,
    enterprise: Option<String>,
    #[serde(rename = "payloadSha256")]
    payload_sha256: String,
    signature: String,
    #[serde(rename = "requestId")]
    request_id: String,
    #[serde(rename = "tokenSha256")]
    token_sha256: Option<String>,
    outcome: String,
    prev: String,
    hash: String,
}

fn hash32(text: &str, member: &'static str) -> Result<[u8; 32], Broken> {
    let well_formed = text.len() == 64
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let mut out = [0u8; 32];
    if !well_formed || hex::decode_to_slice(text, &mut out).is_err() {
        return Err(Broken::BadHex(member));
    }
    Ok(out)
}

/// A line that is internally consistent (canonical, hash matches).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedLine {
    pub seq: u64,
    pub prev: String,
    pub hash: String,
    pub record: AuditRecord,
}

/// Checks one line on its own (without its `\n`): form and hash, not the chain.
pub fn check_line(line: &[u8]) -> Result<CheckedLine, Broken> {
    if line.is_empty() {
        return Err(Broken::EmptyLine);
    }
    if std::str::from_utf8(line).is_err() {
        return Err(Broken::NotUtf8);
    }
    // serde_json's message may quote a value of the line; the log holds nothing secret.
    let parsed: ParsedLine =
        serde_json::from_slice(line).map_err(|e| Broken::Malformed(e.to_string()))?;
    hash32(&parsed.prev, "prev")?;
    hash32(&parsed.hash, "hash")?;
    let record = AuditRecord {
        time_ms: parsed.time,
        route: parsed.route,
        wallet_id: parsed.wallet_id,
        enterprise: parsed.enterprise,
        payload_sha256: hash32(&parsed.payload_sha256, "payloadSha256")?,
        signature: parsed.signature,
        request_id: parsed.request_id,
        token_sha256: parsed
            .token_sha256
            .as_deref()
            .map(|t| hash32(t, "tokenSha256"))
            .transpose()?,
        outcome: parsed.outcome,
    };
    let (expected, hash) = line_bytes(&record, parsed.seq, &parsed.prev);
    if hash != parsed.hash {
        // Distinguish an edited value from a re-formatted line.
        let mut with_claimed = canonical_bytes(&record, parsed.seq, &parsed.prev);
        with_claimed.pop();
        with_claimed.extend_from_slice(format!(",\"hash\":\"{}\"}}", parsed.hash).as_bytes());
        return Err(if with_claimed == line {
            Broken::HashMismatch
        } else {
            Broken::NotCanonical
        });
    }
    if expected[..expected.len() - 1] != *line {
        return Err(Broken::NotCanonical);
    }
    Ok(CheckedLine {
        seq: parsed.seq,
        prev: parsed.prev,
        hash,
        record,
    })
}

// ------------------------------------------------------------------------------------------------
// Verification
// ------------------------------------------------------------------------------------------------

/// A log that verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Number of records.
    pub records: u64,
    /// The last record's `hash` ([`GENESIS_PREV`] for an empty log).
    pub head: String,
}

/// The first broken line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyFailure {
    /// 1-based line number.
    pub line: u64,
    pub reason: Broken,
}

impl std::fmt::Display for VerifyFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "broken at line {}: {}", self.line, self.reason)
    }
}

/// Why [`verify`] did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyError {
    /// The file could not be read.
    Unreadable(String),
    /// The file was read; a line is broken.
    Broken(VerifyFailure),
}

impl std::fmt::Display for VerifyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VerifyError::Unreadable(message) => f.write_str(message),
            VerifyError::Broken(failure) => failure.fmt(f),
        }
    }
}

/// Verifies the log at `path`: every line's form and hash, and the chain (`seq`, `prev`).
pub fn verify(path: impl AsRef<Path>) -> Result<VerifyReport, VerifyError> {
    let path = path.as_ref();
    let file = File::open(path)
        .map_err(|e| VerifyError::Unreadable(format!("cannot read {}: {e}", path.display())))?;
    verify_reader(BufReader::new(file)).map_err(|e| match e {
        VerifyError::Unreadable(message) => {
            VerifyError::Unreadable(format!("cannot read {}: {message}", path.display()))
        }
        broken => broken,
    })
}

/// [`verify`] over any reader.
pub fn verify_reader(mut reader: impl BufRead) -> Result<VerifyReport, VerifyError> {
    let mut head = GENESIS_PREV.to_string();
    let mut records = 0u64;
    let mut buffer = Vec::new();
    loop {
        buffer.clear();
        let read = reader
            .read_until(b'\n', &mut buffer)
            .map_err(|e| VerifyError::Unreadable(e.to_string()))?;
        if read == 0 {
            return Ok(VerifyReport { records, head });
        }
        let line = records + 1;
        let broken = |reason| VerifyError::Broken(VerifyFailure { line, reason });
        let Some(text) = buffer.strip_suffix(b"\n") else {
            return Err(broken(Broken::TornLastLine));
        };
        let checked = check_line(text).map_err(broken)?;
        if checked.seq != line {
            return Err(broken(Broken::SeqMismatch {
                found: checked.seq,
                expected: line,
            }));
        }
        if checked.prev != head {
            return Err(broken(Broken::PrevMismatch));
        }
        head = checked.hash;
        records = line;
    }
}

// ------------------------------------------------------------------------------------------------
// The file
// ------------------------------------------------------------------------------------------------

struct State {
    /// The last record's seq (0: empty), queued or written.
    seq: u64,
    /// The last record's hash, queued or written.
    head: String,
    /// Lines queued for the next write + sync.
    pending: Vec<u8>,
    /// The last record that is on disk.
    durable_seq: u64,
    /// The file's length after the last good sync.
    len: u64,
    /// A batch is being written and synced (by the thread that took it).
    syncing: bool,
    /// A write or sync failed: refuse every later append (the file may hold a partial line,
    /// and after a failed fsync the kernel's view of the file cannot be trusted).
    failure: Option<AuditError>,
}

/// The audit log in one file, opened in append mode (`O_APPEND`), created with mode `0600`,
/// locked (advisory `flock`) against a second writer in this or another process.
///
/// Appends are group-committed: records queued while a batch is being written and synced go to
/// disk together in the next batch, with one `fdatasync`. [`AuditLog::append`] does this on the
/// calling thread (leader/follower); [`AuditLog::append_then`] hands the record to a writer
/// thread that gathers a batch (see [`FileAuditLog::with_commit_delay`]), commits it and answers
/// every record of the batch — no blocking-pool hop or wake-up storm per record.
pub struct FileAuditLog {
    log: Arc<LogFile>,
    truncated: u64,
    /// How long the writer thread may wait for the records it expects before it syncs.
    commit_delay: Duration,
    /// The writer thread of [`AuditLog::append_then`], started on first use (`None`: the
    /// thread could not be started; appends run on the caller's thread).
    writer: OnceLock<Option<Writer>>,
}

struct LogFile {
    path: PathBuf,
    /// Written only by the thread holding the batch (`State::syncing`).
    file: File,
    state: Mutex<State>,
    synced: Condvar,
    /// Successful `fdatasync`s.
    syncs: AtomicU64,
    /// Told how long each successful batch took to write and sync
    /// ([`FileAuditLog::with_sync_observer`]).
    sync_observer: OnceLock<SyncObserver>,
}

/// What [`FileAuditLog::with_sync_observer`] calls after each successful write + `fdatasync`.
pub type SyncObserver = Box<dyn Fn(Duration) + Send + Sync>;

struct Writer {
    inbox: Arc<Inbox>,
    thread: std::thread::JoinHandle<()>,
}

/// The records handed to the writer thread of [`AuditLog::append_then`].
///
/// Every `fdatasync` has a fixed cost, and on virtualised disks much of it is paid by the host
/// out of the machine's CPU allowance, stalling every thread when the CPUs are busy. So under
/// load the writer gathers a batch before it syncs: it expects about as many records as the
/// last batch held (in the common closed loop, the clients that batch answered come back
/// with their next request) and waits for 7/8 of that number, at most the commit delay after
/// the first record arrived. A lone request (the last batch held one record) is synced at once.
/// Senders wake the writer only when it has asked for the count they reach, not per record.
struct Inbox {
    state: Mutex<InboxState>,
    arrived: Condvar,
}

struct InboxState {
    records: Vec<(AuditRecord, AuditDone)>,
    /// Wake the writer once this many records are queued (`usize::MAX`: it is writing, and
    /// looks at the queue when it is done).
    wake_at: usize,
    /// The log is being dropped: the writer commits what is queued and exits.
    closed: bool,
}

impl Inbox {
    fn new() -> Inbox {
        Inbox {
            state: Mutex::new(InboxState {
                records: Vec::new(),
                wake_at: 1,
                closed: false,
            }),
            arrived: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, InboxState> {
        // The state is a queue and two plain values, consistent between statements: a panic
        // elsewhere while it was locked leaves nothing half-done.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues a record; gives it back (`Some`) if the writer has exited.
    fn send(&self, record: AuditRecord, done: AuditDone) -> Option<(AuditRecord, AuditDone)> {
        let mut state = self.lock();
        if state.closed {
            return Some((record, done));
        }
        state.records.push((record, done));
        if state.records.len() >= state.wake_at {
            // Once: the writer looks at the whole queue when it runs.
            state.wake_at = usize::MAX;
            drop(state);
            self.arrived.notify_one();
        }
        None
    }

    fn close(&self) {
        self.lock().closed = true;
        self.arrived.notify_one();
    }

    /// The writer's next batch: waits for a first record, then for the records it expects
    /// (see [`Inbox`]). `None` once the inbox is closed and empty.
    fn next_batch(
        &self,
        expected: usize,
        commit_delay: Duration,
    ) -> Option<Vec<(AuditRecord, AuditDone)>> {
        let mut state = self.lock();
        while state.records.is_empty() {
            if state.closed {
                return None;
            }
            state.wake_at = 1;
            state = self
                .arrived
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        let wanted = expected - expected / 8;
        if state.records.len() < wanted && !commit_delay.is_zero() {
            let deadline = Instant::now() + commit_delay;
            while state.records.len() < wanted && !state.closed {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                state.wake_at = wanted;
                state = self
                    .arrived
                    .wait_timeout(state, left)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
        }
        state.wake_at = usize::MAX;
        Some(std::mem::take(&mut state.records))
    }
}

impl std::fmt::Debug for FileAuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileAuditLog")
            .field("path", &self.log.path)
            .finish_non_exhaustive()
    }
}

impl Drop for FileAuditLog {
    /// The writer thread finishes what was queued and exits, releasing the file (and its lock)
    /// before the drop returns, so the log can be opened again at once.
    fn drop(&mut self) {
        if let Some(Some(Writer { inbox, thread })) = self.writer.take() {
            inbox.close();
            let _ = thread.join();
        }
    }
}

/// Reading backwards: the position of the last `\n` in `file[..end]`.
fn last_newline_before(file: &mut File, end: u64) -> io::Result<Option<u64>> {
    const CHUNK: u64 = 64 * 1024;
    let mut chunk = vec![0u8; CHUNK as usize];
    let mut end = end;
    while end > 0 {
        let start = end.saturating_sub(CHUNK);
        let buffer = &mut chunk[..(end - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(buffer)?;
        if let Some(at) = buffer.iter().rposition(|&b| b == b'\n') {
            return Ok(Some(start + at as u64));
        }
        end = start;
    }
    Ok(None)
}

impl FileAuditLog {
    /// Opens (creating it, mode `0600`, if missing) the log at `path`, e.g.
    /// `<state-dir>/audit.log`, and recovers the chain head from its last line. A torn last
    /// line (no trailing `\n`: a crash during an append) is cut off, durably, with a warning;
    /// a last line that is complete but broken is refused ([`AuditError::Corrupt`]): the log
    /// needs a human before anything is appended to it.
    pub fn open(path: impl AsRef<Path>) -> Result<FileAuditLog, AuditError> {
        let path = path.as_ref().to_path_buf();
        let shown = path.display().to_string();
        let io_error = |op: &'static str| {
            let shown = shown.clone();
            move |e: io::Error| AuditError::Io {
                path: shown,
                op,
                message: e.to_string(),
            }
        };
        super::create_private_file(&path).map_err(io_error("create"))?;
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .append(true)
            .open(&path)
            .map_err(io_error("open"))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(AuditError::Locked { path: shown });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io_error("lock")(e)),
        }
        let mut len = file.metadata().map_err(io_error("read"))?.len();

        // A torn tail: cut it off.
        let mut truncated = 0;
        if len > 0 {
            let mut last = [0u8; 1];
            file.seek(SeekFrom::Start(len - 1))
                .map_err(io_error("read"))?;
            file.read_exact(&mut last).map_err(io_error("read"))?;
            if last[0] != b'\n' {
                let keep = last_newline_before(&mut file, len)
                    .map_err(io_error("read"))?
                    .map_or(0, |at| at + 1);
                file.set_len(keep).map_err(io_error("truncate"))?;
                file.sync_all().map_err(io_error("sync"))?;
                truncated = len - keep;
                tracing::warn!(
                    path = %shown,
                    bytes = truncated,
                    "audit log: cut off a torn last line (a crash during an append; that record was never acknowledged)"
                );
                len = keep;
            }
        }

        // The chain head: the last line.
        let (seq, head) = if len == 0 {
            (0, GENESIS_PREV.to_string())
        } else {
            let start = last_newline_before(&mut file, len - 1)
                .map_err(io_error("read"))?
                .map_or(0, |at| at + 1);
            let mut line = vec![0u8; (len - 1 - start) as usize];
            file.seek(SeekFrom::Start(start))
                .map_err(io_error("read"))?;
            file.read_exact(&mut line).map_err(io_error("read"))?;
            let checked = check_line(&line).map_err(|reason| AuditError::Corrupt {
                path: shown.clone(),
                reason,
            })?;
            (checked.seq, checked.hash)
        };
        Ok(FileAuditLog {
            log: Arc::new(LogFile {
                path,
                file,
                state: Mutex::new(State {
                    seq,
                    head,
                    pending: Vec::new(),
                    durable_seq: seq,
                    len,
                    syncing: false,
                    failure: None,
                }),
                synced: Condvar::new(),
                syncs: AtomicU64::new(0),
                sync_observer: OnceLock::new(),
            }),
            truncated,
            commit_delay: Duration::ZERO,
            writer: OnceLock::new(),
        })
    }

    /// Lets the writer thread of [`AuditLog::append_then`] wait up to `delay` after a record
    /// arrives for the others it expects, so that they share one `fdatasync`: as many as the
    /// last batch held, 7/8 of them; a lone request is synced at once. Zero (the default):
    /// every sync starts as soon as the previous one ended.
    pub fn with_commit_delay(mut self, delay: Duration) -> FileAuditLog {
        self.commit_delay = delay;
        self
    }

    /// Has `observe` told, after each batch made durable, how long its `write` + `fdatasync`
    /// took (e.g. for a latency histogram). Set once; a second observer is ignored.
    pub fn with_sync_observer(self, observe: impl Fn(Duration) + Send + Sync + 'static) -> Self {
        let _ = self.log.sync_observer.set(Box::new(observe));
        self
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.log.path
    }

    /// The last record's `seq` (0 for an empty log) and `hash`.
    pub fn head(&self) -> (u64, String) {
        match self.log.state.lock() {
            Ok(state) => (state.seq, state.head.clone()),
            Err(poisoned) => {
                let state = poisoned.into_inner();
                (state.seq, state.head.clone())
            }
        }
    }

    /// How many bytes of a torn last line [`FileAuditLog::open`] cut off (0: none).
    pub fn truncated_bytes(&self) -> u64 {
        self.truncated
    }
}

impl LogFile {
    fn poisoned(&self) -> AuditError {
        AuditError::Poisoned {
            path: self.path.display().to_string(),
        }
    }

    fn lock(&self) -> Result<MutexGuard<'_, State>, AuditError> {
        // A panic while appending leaves the file in an unknown state: refuse, like a failed write.
        self.state.lock().map_err(|_| self.poisoned())
    }

    /// Queues `record` as the next line of the chain; returns its `seq`.
    fn enqueue(&self, state: &mut State, record: &AuditRecord) -> Result<u64, AuditError> {
        if let Some(failure) = &state.failure {
            return Err(failure.clone());
        }
        let seq = state.seq.checked_add(1).ok_or_else(|| self.poisoned())?;
        let (line, hash) = line_bytes(record, seq, &state.head);
        state.pending.extend_from_slice(&line);
        state.seq = seq;
        state.head = hash;
        Ok(seq)
    }

    /// Returns once the record `seq` is on disk: writes and syncs the queued batch itself, or
    /// waits for the thread that is doing so.
    fn wait_durable<'a>(
        &'a self,
        mut state: MutexGuard<'a, State>,
        seq: u64,
    ) -> Result<(), AuditError> {
        loop {
            if state.durable_seq >= seq {
                return Ok(());
            }
            if let Some(failure) = &state.failure {
                return Err(failure.clone());
            }
            if state.syncing {
                // Another thread is syncing a batch; ours goes in the next one.
                state = self.synced.wait(state).map_err(|_| self.poisoned())?;
                continue;
            }
            // Take every queued line (ours included) and make it durable, without the lock.
            let batch = std::mem::take(&mut state.pending);
            let batch_last = state.seq;
            state.syncing = true;
            drop(state);
            let started = Instant::now();
            let written = (&self.file)
                .write_all(&batch)
                .map_err(|e| ("write", e))
                .and_then(|()| self.file.sync_data().map_err(|e| ("sync", e)));
            if let (Ok(()), Some(observe)) = (&written, self.sync_observer.get()) {
                observe(started.elapsed());
            }
            state = self.lock()?;
            state.syncing = false;
            match written {
                Ok(()) => {
                    state.durable_seq = batch_last;
                    state.len += batch.len() as u64;
                    self.syncs.fetch_add(1, Ordering::Relaxed);
                }
                Err((op, error)) => {
                    // Whatever reached the file is not acknowledged: take it back if we can.
                    if self.file.set_len(state.len).is_ok() {
                        let _ = self.file.sync_all();
                    }
                    state.failure = Some(AuditError::Io {
                        path: self.path.display().to_string(),
                        op,
                        message: error.to_string(),
                    });
                }
            }
            self.synced.notify_all();
        }
    }

    /// The writer thread: each round takes a batch from the inbox, commits it and answers each
    /// record.
    fn write_queued(&self, inbox: &Inbox, commit_delay: Duration) {
        let _closing = CloseOnExit { inbox, log: self };
        let mut expected = 1;
        while let Some(batch) = inbox.next_batch(expected, commit_delay) {
            expected = batch.len();
            let mut state = match self.lock() {
                Ok(state) => state,
                Err(error) => {
                    for (_, done) in batch {
                        done(Err(error.clone()));
                    }
                    continue;
                }
            };
            let mut queued = Vec::with_capacity(batch.len());
            let mut last = 0;
            for (record, done) in batch {
                match self.enqueue(&mut state, &record) {
                    Ok(seq) => {
                        last = seq;
                        queued.push(done);
                    }
                    Err(error) => done(Err(error)),
                }
            }
            let outcome = if queued.is_empty() {
                Ok(())
            } else {
                self.wait_durable(state, last)
            };
            for done in queued {
                done(outcome.clone());
            }
        }
    }
}

/// Should the writer thread end early (a panic), later appends run on their caller's thread, and
/// the records already queued are refused rather than left waiting for ever.
struct CloseOnExit<'a> {
    inbox: &'a Inbox,
    log: &'a LogFile,
}

impl Drop for CloseOnExit<'_> {
    fn drop(&mut self) {
        let queued = {
            let mut state = self.inbox.lock();
            state.closed = true;
            std::mem::take(&mut state.records)
        };
        for (_, done) in queued {
            done(Err(self.log.poisoned()));
        }
    }
}

impl AuditLog for FileAuditLog {
    fn append(&self, record: &AuditRecord) -> Result<(), AuditError> {
        let mut state = self.log.lock()?;
        let seq = self.log.enqueue(&mut state, record)?;
        self.log.wait_durable(state, seq)
    }

    fn append_then(&self, record: AuditRecord, done: AuditDone) {
        let writer = self.writer.get_or_init(|| {
            let inbox = Arc::new(Inbox::new());
            let (log, receiving, commit_delay) =
                (self.log.clone(), inbox.clone(), self.commit_delay);
            std::thread::Builder::new()
                .name("audit-writer".into())
                .spawn(move || log.write_queued(&receiving, commit_delay))
                .ok()
                .map(|thread| Writer { inbox, thread })
        });
        // Without a writer thread (none could be started, or it has exited): append on this one.
        let unsent = match writer {
            Some(Writer { inbox, .. }) => inbox.send(record, done),
            None => Some((record, done)),
        };
        if let Some((record, done)) = unsent {
            done(self.append(&record));
        }
    }

    fn healthy(&self) -> bool {
        self.log
            .state
            .lock()
            .is_ok_and(|state| state.failure.is_none())
    }

    fn syncs(&self) -> u64 {
        self.log.syncs.load(Ordering::Relaxed)
    }
}

/// The audit log in memory: the same lines as [`FileAuditLog`] writes, kept in a vector. For
/// tests.
#[derive(Debug, Default)]
pub struct MemoryAuditLog {
    lines: Mutex<Vec<Vec<u8>>>,
}

impl MemoryAuditLog {
    pub fn new() -> MemoryAuditLog {
        MemoryAuditLog::default()
    }

    /// The log's text so far.
    pub fn contents(&self) -> Vec<u8> {
        self.lines
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .concat()
    }

    /// The records so far.
    pub fn records(&self) -> Vec<AuditRecord> {
        self.lines
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .filter_map(|line| check_line(&line[..line.len() - 1]).ok())
            .map(|checked| checked.record)
            .collect()
    }
}

impl AuditLog for MemoryAuditLog {
    fn append(&self, record: &AuditRecord) -> Result<(), AuditError> {
        let mut lines = self
            .lines
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let head = match lines.last() {
            Some(last) => check_line(&last[..last.len() - 1])
                .map(|c| c.hash)
                .unwrap_or_default(),
            None => GENESIS_PREV.to_string(),
        };
        let (line, _) = line_bytes(record, lines.len() as u64 + 1, &head);
        lines.push(line);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: u64) -> AuditRecord {
        AuditRecord {
            time_ms: 1_700_000_000_000 + n,
            route: "POST /api/v2/ofc/signPayload".into(),
            wallet_id: format!("wallet{n}"),
            enterprise: n.is_multiple_of(2).then(|| "ent\"quoted\"\n".to_string()),
            payload_sha256: [n as u8; 32],
            signature: "1f".repeat(65),
            request_id: format!("req-{n}"),
            token_sha256: n.is_multiple_of(3).then_some([0xab; 32]),
            outcome: "signed".into(),
        }
    }

    fn send_records(inbox: &Inbox, range: std::ops::Range<u64>) {
        for n in range {
            let unsent = inbox.send(record(n), Box::new(|_| {}));
            assert!(unsent.is_none(), "the inbox refused record {n}");
        }
    }

    fn seqs(batch: &[(AuditRecord, AuditDone)]) -> Vec<u64> {
        batch
            .iter()
            .map(|(r, _)| r.time_ms - 1_700_000_000_000)
            .collect()
    }

    const LONG: Duration = Duration::from_secs(600);

    #[test]
    fn after_a_lone_record_the_writer_syncs_at_once() {
        let inbox = Inbox::new();
        send_records(&inbox, 0..1);
        // Expecting one record (the last batch had one), it does not wait the commit delay.
        let batch = inbox.next_batch(1, LONG).unwrap();
        assert_eq!(seqs(&batch), [0]);
    }

    #[test]
    fn the_writer_takes_everything_queued_once_seven_eighths_of_the_expected_are_in() {
        let inbox = Inbox::new();
        // 16 expected: 14 are enough, and all that is queued goes in the batch.
        send_records(&inbox, 0..15);
        assert_eq!(
            seqs(&inbox.next_batch(16, LONG).unwrap()),
            (0..15).collect::<Vec<_>>()
        );
        // The 14th arriving later wakes the waiting writer.
        std::thread::scope(|scope| {
            scope.spawn(|| {
                send_records(&inbox, 100..113);
                std::thread::sleep(Duration::from_millis(50));
                send_records(&inbox, 113..114);
            });
            let batch = inbox.next_batch(16, LONG).unwrap();
            assert_eq!(seqs(&batch), (100..114).collect::<Vec<_>>());
        });
    }

    #[test]
    fn the_writer_waits_no_longer_than_the_commit_delay() {
        let inbox = Inbox::new();
        send_records(&inbox, 0..2);
        // 16 expected, 2 came: after the delay it syncs the 2.
        assert_eq!(
            seqs(&inbox.next_batch(16, Duration::from_millis(20)).unwrap()),
            [0, 1]
        );
        // No delay: no wait at all.
        send_records(&inbox, 2..3);
        assert_eq!(seqs(&inbox.next_batch(16, Duration::ZERO).unwrap()), [2]);
    }

    #[test]
    fn closing_ends_the_wait_and_hands_over_what_is_queued() {
        let inbox = Inbox::new();
        std::thread::scope(|scope| {
            scope.spawn(|| {
                send_records(&inbox, 0..3);
                std::thread::sleep(Duration::from_millis(50));
                inbox.close();
            });
            let mut got = Vec::new();
            while let Some(batch) = inbox.next_batch(16, LONG) {
                got.extend(seqs(&batch));
            }
            assert_eq!(got, [0, 1, 2]);
        });
        // Closed: a record is given back for the caller to append itself.
        assert!(inbox.send(record(9), Box::new(|_| {})).is_some());
    }

    #[test]
    fn a_writer_thread_that_dies_leaves_no_append_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let log = FileAuditLog::open(dir.path().join("audit.log")).unwrap();
        log.append_then(record(1), Box::new(|_| panic!("a completion that panics")));
        // Whether it was in the dying batch (its completion dropped: the server answers 503),
        // queued before the writer died (refused) or sent after (appended on this thread), the
        // next append is answered.
        for n in 2..5 {
            let (answer, answered) = std::sync::mpsc::channel();
            log.append_then(
                record(n),
                Box::new(move |outcome| answer.send(outcome).unwrap()),
            );
            match answered.recv_timeout(Duration::from_secs(30)) {
                Ok(outcome) => assert!(
                    matches!(outcome, Ok(()) | Err(AuditError::Poisoned { .. })),
                    "{outcome:?}"
                ),
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    panic!("append {n} was left waiting")
                }
            }
        }
        // Appends after that are made on the caller's thread.
        let (answer, answered) = std::sync::mpsc::channel();
        log.append_then(
            record(9),
            Box::new(move |outcome| answer.send(outcome).unwrap()),
        );
        assert_eq!(answered.recv_timeout(Duration::from_secs(30)), Ok(Ok(())));
    }

    #[test]
    fn line_format_is_exact() {
        let r = AuditRecord {
            time_ms: 5,
            route: "R".into(),
            wallet_id: "w".into(),
            enterprise: None,
            payload_sha256: [0; 32],
            signature: "ab".into(),
            request_id: "q".into(),
            token_sha256: Some([1; 32]),
            outcome: "signed".into(),
        };
        let canonical = canonical_bytes(&r, 1, GENESIS_PREV);
        let zeros = "0".repeat(64);
        let ones = "01".repeat(32);
        let expected = format!(
            "{{\"seq\":1,\"time\":5,\"route\":\"R\",\"walletId\":\"w\",\"enterprise\":null,\"payloadSha256\":\"{zeros}\",\"signature\":\"ab\",\"requestId\":\"q\",\"tokenSha256\":\"{ones}\",\"outcome\":\"signed\",\"prev\":\"{zeros}\"}}"
        );
        assert_eq!(String::from_utf8(canonical.clone()).unwrap(), expected);
        let (line, hash) = line_bytes(&r, 1, GENESIS_PREV);
        assert_eq!(hash, hex::encode(Sha256::digest(expected.as_bytes())));
        let line = String::from_utf8(line).unwrap();
        assert_eq!(
            line,
            format!(
                "{},\"hash\":\"{hash}\"}}\n",
                &expected[..expected.len() - 1]
            )
        );
        // The line is plain JSON.
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["hash"], hash);
    }

    #[test]
    fn check_line_round_trips_and_classifies() {
        let r = record(4);
        let (line, hash) = line_bytes(&r, 7, GENESIS_PREV);
        let text = &line[..line.len() - 1];
        let checked = check_line(text).unwrap();
        assert_eq!(checked.record, r);
        assert_eq!(checked.seq, 7);
        assert_eq!(checked.hash, hash);

        let text = String::from_utf8(text.to_vec()).unwrap();
        let edited = text.replace("wallet4", "wallet5");
        assert_eq!(check_line(edited.as_bytes()), Err(Broken::HashMismatch));
        let spaced = text.replacen(",", ", ", 1);
        assert_eq!(check_line(spaced.as_bytes()), Err(Broken::NotCanonical));
        // The same value, escaped differently: hash still right, bytes not canonical.
        let escaped = text.replace("wallet4", "w\\u0061llet4");
        assert_eq!(check_line(escaped.as_bytes()), Err(Broken::NotCanonical));
        let upper = text.replace(&hash, &hash.to_uppercase());
        assert_eq!(check_line(upper.as_bytes()), Err(Broken::BadHex("hash")));
        assert!(matches!(check_line(b"{}"), Err(Broken::Malformed(_))));
        assert_eq!(check_line(b""), Err(Broken::EmptyLine));
        assert_eq!(check_line(b"\xff"), Err(Broken::NotUtf8));
    }

    #[test]
    fn verify_reader_checks_the_chain() {
        let memory = MemoryAuditLog::new();
        for n in 0..5 {
            memory.append(&record(n)).unwrap();
        }
        let contents = memory.contents();
        let report = verify_reader(contents.as_slice()).unwrap();
        assert_eq!(report.records, 5);
        assert_eq!(memory.records().len(), 5);
        let last = contents[..contents.len() - 1]
            .rsplit(|&b| b == b'\n')
            .next()
            .unwrap();
        assert_eq!(report.head, check_line(last).unwrap().hash);

        assert_eq!(
            verify_reader(&b""[..]).unwrap(),
            VerifyReport {
                records: 0,
                head: GENESIS_PREV.into()
            }
        );
        let torn = &contents[..contents.len() - 1];
        assert_eq!(
            verify_reader(torn),
            Err(VerifyError::Broken(VerifyFailure {
                line: 5,
                reason: Broken::TornLastLine
            }))
        );
        // Two lines swapped.
        let lines: Vec<&[u8]> = contents.split_inclusive(|&b| b == b'\n').collect();
        let swapped = [lines[0], lines[2], lines[1], lines[3], lines[4]].concat();
        assert_eq!(
            verify_reader(swapped.as_slice()),
            Err(VerifyError::Broken(VerifyFailure {
                line: 2,
                reason: Broken::SeqMismatch {
                    found: 3,
                    expected: 2
                }
            }))
        );
        // A record re-chained with the right seq but the wrong prev.
        let rechained = line_bytes(&record(9), 2, GENESIS_PREV).0;
        let forged = [lines[0], rechained.as_slice()].concat();
        assert_eq!(
            verify_reader(forged.as_slice()),
            Err(VerifyError::Broken(VerifyFailure {
                line: 2,
                reason: Broken::PrevMismatch
            }))
        );
    }
}
