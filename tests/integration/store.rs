//! Durable state: the idempotency store (semantics, persistence, concurrency, `kill -9` at
//! random points) and the audit log (chain, tampering, torn tails, reopen, permissions, the
//! `audit verify` subcommand through the real binary).

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use crate::common::BINARY;
use ofc_signer::store::audit::{
    self, AuditError, AuditLog, AuditRecord, Broken, FileAuditLog, GENESIS_PREV, VerifyError,
    VerifyFailure,
};
use ofc_signer::store::idempotency::{
    Begin, IdempotencyStore, MemoryStore, Outcome, RedbStore, RequestKey, StoreError,
};
use ofc_signer::store::{AUDIT_FILE, DEFAULT_STATE_DIR, IDEMPOTENCY_FILE};

fn key(id: &str) -> RequestKey {
    RequestKey {
        enterprise: "5f2b0e5c8a1d".into(),
        route: "POST /api/network/v1/enterprises/{e}/partners/settlements".into(),
        external_id: id.into(),
    }
}

/// A deterministic body of a few hundred bytes for request `id`.
fn body(id: &str) -> Vec<u8> {
    format!(
        "{{\"externalId\":\"{id}\",\"nonce\":\"{}\",\"signature\":\"{}\"}}",
        id.len() * 7919,
        id.repeat(20)
    )
    .into_bytes()
}

// ------------------------------------------------------------------------------------------------
// Idempotency
// ------------------------------------------------------------------------------------------------

/// The contract, on any implementation.
fn exercise(store: &dyn IdempotencyStore) {
    let k = key("settlement-1");
    assert_eq!(store.get(&k).unwrap(), None);
    assert_eq!(
        store.begin(&k, [1; 32], b"first body", 1000).unwrap(),
        Begin::Inserted
    );
    // Same key, other content: the first record, untouched.
    let Begin::Existing(record) = store.begin(&k, [2; 32], b"second body", 2000).unwrap() else {
        panic!("a second begin must return the existing record");
    };
    assert_eq!(record.signed_body, b"first body");
    assert_eq!(record.content_hash, [1; 32]);
    assert_eq!(record.created_at_ms, 1000);
    assert_eq!(record.outcome, Outcome::Pending);
    assert_eq!(store.get(&k).unwrap(), Some(record.clone()));

    // Other keys are independent (each field counts).
    let mut other = k.clone();
    other.enterprise.push('x');
    assert_eq!(store.get(&other).unwrap(), None);
    let mut other = k.clone();
    other.route = "POST other".into();
    assert_eq!(
        store.begin(&other, [3; 32], b"b", 1).unwrap(),
        Begin::Inserted
    );

    store.complete(&k, 201, b"{\"id\":\"s1\"}").unwrap();
    let done = store.get(&k).unwrap().unwrap();
    assert_eq!(
        done.outcome,
        Outcome::Completed {
            status: 201,
            body: b"{\"id\":\"s1\"}".to_vec()
        }
    );
    assert_eq!(done.signed_body, b"first body");
    // Idempotent with the same response, refused with another.
    store.complete(&k, 201, b"{\"id\":\"s1\"}").unwrap();
    assert_eq!(
        store.complete(&k, 500, b"{}"),
        Err(StoreError::AlreadyCompleted)
    );
    assert_eq!(
        store.complete(&key("unknown"), 200, b""),
        Err(StoreError::NotFound)
    );
    let Begin::Existing(again) = store.begin(&k, [9; 32], b"x", 3).unwrap() else {
        panic!("completed records are still returned");
    };
    assert_eq!(again, done);

    store.forget(&k).unwrap();
    assert_eq!(store.get(&k).unwrap(), None);
    store.forget(&k).unwrap();
    // A corrected retry may now proceed.
    assert_eq!(
        store.begin(&k, [4; 32], b"corrected", 4000).unwrap(),
        Begin::Inserted
    );
    assert_eq!(store.get(&k).unwrap().unwrap().signed_body, b"corrected");
}

#[test]
fn memory_store_contract() {
    exercise(&MemoryStore::new());
}

#[test]
fn redb_store_contract() {
    let dir = tempfile::tempdir().unwrap();
    exercise(&RedbStore::open(dir.path().join(IDEMPOTENCY_FILE)).unwrap());
}

#[test]
fn redb_store_persists_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(IDEMPOTENCY_FILE);
    {
        let store = RedbStore::open(&path).unwrap();
        store.begin(&key("a"), [1; 32], &body("a"), 10).unwrap();
        store.begin(&key("b"), [2; 32], &body("b"), 20).unwrap();
        store.begin(&key("c"), [3; 32], &body("c"), 30).unwrap();
        store.complete(&key("b"), 202, b"accepted").unwrap();
        store.forget(&key("c")).unwrap();
        // The file is locked while open.
        assert!(matches!(
            RedbStore::open(&path),
            Err(StoreError::Database(_))
        ));
    }
    let store = RedbStore::open(&path).unwrap();
    let a = store.get(&key("a")).unwrap().unwrap();
    assert_eq!(a.signed_body, body("a"));
    assert_eq!(a.content_hash, [1; 32]);
    assert_eq!(a.created_at_ms, 10);
    assert_eq!(a.outcome, Outcome::Pending);
    let b = store.get(&key("b")).unwrap().unwrap();
    assert_eq!(
        b.outcome,
        Outcome::Completed {
            status: 202,
            body: b"accepted".to_vec()
        }
    );
    assert_eq!(store.get(&key("c")).unwrap(), None);
    assert!(matches!(
        store.begin(&key("a"), [0; 32], b"", 0).unwrap(),
        Begin::Existing(r) if r == a
    ));
}

#[cfg(unix)]
#[test]
fn redb_store_file_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    ofc_signer::store::ensure_state_dir(&state).unwrap();
    let path = state.join(IDEMPOTENCY_FILE);
    let _store = RedbStore::open(&path).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let mode = std::fs::metadata(&state).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
}

fn concurrent_begin(store: Arc<dyn IdempotencyStore>) {
    const THREADS: usize = 8;
    for round in 0..20 {
        let k = key(&format!("race-{round}"));
        let barrier = Arc::new(Barrier::new(THREADS));
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let (store, barrier, k) = (store.clone(), barrier.clone(), k.clone());
                std::thread::spawn(move || {
                    let mine = format!("body of thread {t}").into_bytes();
                    barrier.wait();
                    (
                        mine.clone(),
                        store.begin(&k, [t as u8; 32], &mine, t as u64).unwrap(),
                    )
                })
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let winners: Vec<_> = results
            .iter()
            .filter(|(_, begin)| *begin == Begin::Inserted)
            .collect();
        assert_eq!(winners.len(), 1, "round {round}: exactly one Inserted");
        let winner_body = &winners[0].0;
        for (_, begin) in &results {
            if let Begin::Existing(record) = begin {
                assert_eq!(&record.signed_body, winner_body, "round {round}");
            }
        }
        assert_eq!(&store.get(&k).unwrap().unwrap().signed_body, winner_body);
    }
}

#[test]
fn concurrent_begin_inserts_once_redb() {
    let dir = tempfile::tempdir().unwrap();
    concurrent_begin(Arc::new(
        RedbStore::open(dir.path().join(IDEMPOTENCY_FILE)).unwrap(),
    ));
}

#[test]
fn concurrent_begin_inserts_once_memory() {
    concurrent_begin(Arc::new(MemoryStore::new()));
}

const CRASH_DB_VAR: &str = "OFC_SIGNER_TEST_CRASH_DB";
const CRASH_ROUND_VAR: &str = "OFC_SIGNER_TEST_CRASH_ROUND";

/// The child of `begin_survives_kill_9`: begins records `<round>-0`, `<round>-1`, … as fast as
/// it can and reports each one on standard output only after `begin` returned. Does nothing
/// unless run by that test.
#[test]
#[ignore = "child process of begin_survives_kill_9"]
fn crash_child() {
    let (Ok(path), Ok(round)) = (std::env::var(CRASH_DB_VAR), std::env::var(CRASH_ROUND_VAR))
    else {
        return;
    };
    let store = RedbStore::open(path).unwrap();
    let mut out = std::io::stdout().lock();
    for i in 0.. {
        let id = format!("{round}-{i}");
        let begin = store
            .begin(&key(&id), [i as u8; 32], &body(&id), i)
            .unwrap();
        assert_eq!(begin, Begin::Inserted);
        // Straight to the file descriptor: not through the test harness's capture.
        writeln!(out, "BEGUN {i}").unwrap();
        out.flush().unwrap();
    }
}

/// `i` from the child's `BEGUN <i>` (the first one shares its line with the harness's
/// `test crash_child ... `).
fn acknowledged_index(line: &str) -> Option<u64> {
    let (_, i) = line.split_once("BEGUN ")?;
    Some(i.trim().parse().expect("a record number"))
}

/// A pseudo-random number in `0..bound` (no need for a real generator here).
fn jitter(bound: u64) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    nanos.wrapping_mul(6364136223846793005).rotate_left(17) % bound
}

#[cfg(unix)]
#[test]
fn begin_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(IDEMPOTENCY_FILE);
    let mut acknowledged_total = 0;
    for round in 0..6 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            // This test binary again, running only the child (test names carry the module path).
            .args(["--exact", "store::crash_child", "--ignored", "--nocapture"])
            .args(["--test-threads", "1"])
            .env(CRASH_DB_VAR, &path)
            .env(CRASH_ROUND_VAR, round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        // Wait for the first acknowledged begin, then let it run for a random while (inside
        // some later commit, most likely) and SIGKILL it.
        let mut acknowledged = None;
        for line in lines.by_ref() {
            if let Some(i) = acknowledged_index(&line.unwrap()) {
                acknowledged = Some(i);
                break;
            }
        }
        let first = acknowledged.expect("the child acknowledged a begin");
        let deadline = Instant::now() + Duration::from_micros(jitter(30_000));
        while Instant::now() < deadline {
            std::hint::spin_loop();
        }
        child.kill().unwrap(); // SIGKILL
        // Whatever it printed before it died: all acknowledged.
        let mut last = first;
        for line in lines {
            let Ok(line) = line else { break };
            if let Some(i) = acknowledged_index(&line) {
                last = i;
            }
        }
        let status = child.wait().unwrap();
        assert!(!status.success(), "the child was killed, round {round}");

        let store = RedbStore::open(&path).unwrap();
        for i in 0..=last {
            let id = format!("{round}-{i}");
            let record = store
                .get(&key(&id))
                .unwrap()
                .unwrap_or_else(|| panic!("acknowledged record {id} lost after kill -9"));
            assert_eq!(record.signed_body, body(&id), "{id}");
            assert_eq!(record.content_hash, [i as u8; 32], "{id}");
            assert_eq!(record.outcome, Outcome::Pending);
        }
        // One more may have committed without being acknowledged; if so it is whole.
        let id = format!("{round}-{}", last + 1);
        if let Some(record) = store.get(&key(&id)).unwrap() {
            assert_eq!(record.signed_body, body(&id));
        }
        // The store still works.
        let probe = key(&format!("probe-{round}"));
        assert_eq!(
            store.begin(&probe, [0; 32], b"p", 0).unwrap(),
            Begin::Inserted
        );
        acknowledged_total += last + 1;
    }
    assert!(acknowledged_total >= 6);
}

// ------------------------------------------------------------------------------------------------
// Audit log
// ------------------------------------------------------------------------------------------------

fn record(n: u64) -> AuditRecord {
    AuditRecord {
        time_ms: 1_750_000_000_000 + n,
        route: "POST /api/v2/ofc/signPayload".into(),
        wallet_id: format!("6407b22ec86799000706e5783327{n:04}"),
        enterprise: (!n.is_multiple_of(2)).then(|| format!("enterprise \"{n}\"\u{e9}\n")),
        payload_sha256: [n as u8; 32],
        signature: format!("{:0130x}", n),
        request_id: format!("req-{n}"),
        token_sha256: (!n.is_multiple_of(3)).then_some([0x5a; 32]),
        outcome: if n.is_multiple_of(4) {
            "bitgo-signed".into()
        } else {
            "signed".into()
        },
    }
}

fn write_log(path: &Path, records: std::ops::Range<u64>) -> FileAuditLog {
    let log = FileAuditLog::open(path).unwrap();
    for n in records {
        log.append(&record(n)).unwrap();
    }
    log
}

fn lines(path: &Path) -> Vec<Vec<u8>> {
    std::fs::read(path)
        .unwrap()
        .split_inclusive(|&b| b == b'\n')
        .map(<[u8]>::to_vec)
        .collect()
}

fn broken_at(path: &Path) -> (u64, Broken) {
    match audit::verify(path) {
        Err(VerifyError::Broken(VerifyFailure { line, reason })) => (line, reason),
        other => panic!("expected a broken log, got {other:?}"),
    }
}

#[test]
fn appended_records_verify() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(AUDIT_FILE);
    let log = write_log(&path, 0..25);
    let report = audit::verify(&path).unwrap();
    assert_eq!(report.records, 25);
    assert_eq!(log.head(), (25, report.head.clone()));
    // The lines are what the records say, and chained.
    let all = lines(&path);
    let mut prev = GENESIS_PREV.to_string();
    for (i, line) in all.iter().enumerate() {
        let checked = audit::check_line(&line[..line.len() - 1]).unwrap();
        assert_eq!(checked.seq, i as u64 + 1);
        assert_eq!(checked.record, record(i as u64));
        assert_eq!(checked.prev, prev);
        let value: serde_json::Value = serde_json::from_slice(line).unwrap();
        assert_eq!(value["prev"], prev.as_str());
        prev = checked.hash;
    }
    assert_eq!(prev, report.head);
}

#[test]
fn empty_log_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(AUDIT_FILE);
    let log = FileAuditLog::open(&path).unwrap();
    assert_eq!(log.head(), (0, GENESIS_PREV.to_string()));
    let report = audit::verify(&path).unwrap();
    assert_eq!((report.records, report.head.as_str()), (0, GENESIS_PREV));
}

#[test]
fn every_single_byte_change_is_reported_at_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(AUDIT_FILE);
    drop(write_log(&path, 0..6));
    let original = std::fs::read(&path).unwrap();
    let mut line_of = Vec::with_capacity(original.len());
    let mut line = 1u64;
    for &b in &original {
        line_of.push(line);
        if b == b'\n' {
            line += 1;
        }
    }
    for position in 0..original.len() {
        for flip in [0x01u8, 0x20, 0x80] {
            let mut bytes = original.clone();
            bytes[position] ^= flip;
            match audit::verify_reader(bytes.as_slice()) {
                Err(VerifyError::Broken(VerifyFailure { line, reason })) => assert_eq!(
                    line, line_of[position],
                    "byte {position} ^ {flip:#x}: {reason}"
                ),
                other => panic!("byte {position} ^ {flip:#x}: {other:?}"),
            }
        }
    }
    // And through the file.
    let mut bytes = original;
    bytes[line_of.iter().position(|&l| l == 3).unwrap() + 40] ^= 0x01;
    let tampered = dir.path().join("tampered.log");
    std::fs::write(&tampered, &bytes).unwrap();
    assert_eq!(broken_at(&tampered).0, 3);
}

#[test]
fn a_deleted_line_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(AUDIT_FILE);
    drop(write_log(&path, 0..8));
    let all = lines(&path);
    let tampered = dir.path().join("tampered.log");
    for deleted in 0..all.len() - 1 {
        let mut kept = all.clone();
        kept.remove(deleted);
        std::fs::write(&tampered, kept.concat()).unwrap();
        let (line, reason) = broken_at(&tampered);
        assert_eq!(line, deleted as u64 + 1, "deleted line {}", deleted + 1);
        assert_eq!(
            reason,
            Broken::SeqMismatch {
                found: deleted as u64 + 2,
                expected: deleted as u64 + 1
            }
        );
    }
    // A line inserted again (replayed) is reported too.
    let mut replayed = all.clone();
    replayed.insert(3, all[2].clone());
    std::fs::write(&tampered, replayed.concat()).unwrap();
    assert_eq!(broken_at(&tampered).0, 4);
}

#[test]
fn a_torn_last_line_is_reported_then_repaired() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(AUDIT_FILE);
    drop(write_log(&path, 0..3));
    let good = std::fs::read(&path).unwrap();
    let head = audit::verify(&path).unwrap().head;
    let (next_line, _) = audit::line_bytes(&record(3), 4, &head);
    // Torn anywhere: after one byte, half way, and with only the newline missing.
    for cut in [1, next_line.len() / 2, next_line.len() - 1] {
        let mut torn = good.clone();
        torn.extend_from_slice(&next_line[..cut]);
        std::fs::write(&path, &torn).unwrap();
        assert_eq!(broken_at(&path), (4, Broken::TornLastLine), "cut {cut}");

        let log = FileAuditLog::open(&path).unwrap();
        assert_eq!(log.truncated_bytes(), cut as u64);
        assert_eq!(std::fs::read(&path).unwrap(), good, "cut {cut}");
        assert_eq!(log.head(), (3, head.clone()));
        log.append(&record(3)).unwrap();
        drop(log);
        let report = audit::verify(&path).unwrap();
        assert_eq!(report.records, 4);
        assert_eq!(
            std::fs::read(&path).unwrap(),
            [good.clone(), next_line.clone()].concat()
        );
        std::fs::write(&path, &good).unwrap();
    }
    // A torn first line: the log starts over.
    std::fs::write(&path, b"{\"seq\":1,\"ti").unwrap();
    assert_eq!(broken_at(&path), (1, Broken::TornLastLine));
    let log = FileAuditLog::open(&path).unwrap();
    assert_eq!(log.head(), (0, GENESIS_PREV.to_string()));
    log.append(&record(0)).unwrap();
    assert_eq!(audit::verify(&path).unwrap().records, 1);
}

#[test]
fn a_broken_complete_last_line_is_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(AUDIT_FILE);
    drop(write_log(&path, 0..3));
    let text = String::from_utf8(std::fs::read(&path).unwrap()).unwrap();
    let edited = text.replace("req-2", "req-9");
    assert_ne!(edited, text);
    std::fs::write(&path, edited).unwrap();
    match FileAuditLog::open(&path) {
        Err(AuditError::Corrupt { reason, .. }) => assert_eq!(reason, Broken::HashMismatch),
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn reopening_continues_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(AUDIT_FILE);
    let head = {
        let log = write_log(&path, 0..3);
        // One writer at a time.
        assert!(matches!(
            FileAuditLog::open(&path),
            Err(AuditError::Locked { .. })
        ));
        log.head()
    };
    let log = FileAuditLog::open(&path).unwrap();
    assert_eq!(log.head(), head);
    assert_eq!(log.truncated_bytes(), 0);
    log.append(&record(3)).unwrap();
    log.append(&record(4)).unwrap();
    drop(log);
    let all = lines(&path);
    let fourth = audit::check_line(&all[3][..all[3].len() - 1]).unwrap();
    assert_eq!((fourth.seq, fourth.prev), (4, head.1));
    let report = audit::verify(&path).unwrap();
    assert_eq!(report.records, 5);
    let log = FileAuditLog::open(&path).unwrap();
    assert_eq!(log.head(), (5, report.head));
}

#[test]
fn concurrent_appends_stay_chained() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(AUDIT_FILE);
    let log = Arc::new(FileAuditLog::open(&path).unwrap());
    let handles: Vec<_> = (0..8)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                for n in 0..10 {
                    log.append(&record(t * 10 + n)).unwrap();
                }
            })
        })
        .collect();
    for handle in handles {
        handle.join().unwrap();
    }
    assert_eq!(audit::verify(&path).unwrap().records, 80);
}

#[test]
fn concurrent_appends_share_syncs_and_all_land_in_order() {
    // 32 threads append at once: every append returns only when its record is on disk, each
    // record is there exactly once, and the chain verifies.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(AUDIT_FILE);
    let log = Arc::new(FileAuditLog::open(&path).unwrap());
    let barrier = Arc::new(Barrier::new(32));
    let handles: Vec<_> = (0..32u64)
        .map(|t| {
            let (log, barrier) = (log.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                for n in 0..25 {
                    log.append(&record(1000 + t * 25 + n)).unwrap();
                    // Acknowledged means on disk: the record is in the file now.
                    let text = std::fs::read_to_string(log.path()).unwrap();
                    assert!(text.contains(&format!("\"requestId\":\"req-{}\"", 1000 + t * 25 + n)));
                }
            })
        })
        .collect();
    for handle in handles {
        handle.join().unwrap();
    }
    assert_eq!(audit::verify(&path).unwrap().records, 800);
    let text = std::fs::read_to_string(&path).unwrap();
    for n in 1000..1800 {
        let id = format!("\"requestId\":\"req-{n}\"");
        assert_eq!(text.matches(&id).count(), 1, "record {n}");
    }
}

/// On Linux, `/dev/full` accepts opens and fails every write with ENOSPC: a log on it cannot be
/// appended to.
#[cfg(target_os = "linux")]
#[test]
fn a_failed_write_refuses_this_and_every_later_append() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(AUDIT_FILE);
    std::os::unix::fs::symlink("/dev/full", &path).unwrap();
    let log = FileAuditLog::open(&path).unwrap();
    assert!(log.healthy());
    let first = log.append(&record(1)).unwrap_err();
    assert!(
        matches!(&first, AuditError::Io { op: "write", .. }),
        "{first:?}"
    );
    assert!(!log.healthy());
    assert_eq!(log.append(&record(2)).unwrap_err(), first);
}

#[cfg(unix)]
#[test]
fn audit_log_file_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(AUDIT_FILE);
    drop(write_log(&path, 0..1));
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn no_secret_text_reaches_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(AUDIT_FILE);
    let payload = b"{\"this\":{\"is\":{\"a\":\"payload\"}}}";
    let token = "v2x-secret-access-token";
    let log = FileAuditLog::open(&path).unwrap();
    use sha2::Digest;
    log.append(&AuditRecord {
        payload_sha256: sha2::Sha256::digest(payload).into(),
        token_sha256: Some(sha2::Sha256::digest(token.as_bytes()).into()),
        ..record(1)
    })
    .unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(!text.contains("payload\\\""));
    assert!(!text.contains(token));
}

// ------------------------------------------------------------------------------------------------
// `ofc-signer audit verify`
// ------------------------------------------------------------------------------------------------

fn run_binary(dir: &Path, args: &[&std::ffi::OsStr]) -> (i32, String, String) {
    let output = Command::new(BINARY)
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    (
        output.status.code().expect("exited"),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

#[test]
fn audit_verify_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit-copy.log");
    drop(write_log(&path, 0..4));
    let head = audit::verify(&path).unwrap().head;
    let verify = |file: &Path| {
        run_binary(
            dir.path(),
            &["audit".as_ref(), "verify".as_ref(), file.as_os_str()],
        )
    };

    let (code, stdout, _) = verify(&path);
    assert_eq!((code, stdout), (0, format!("ok: 4 records, head {head}\n")));

    let text = std::fs::read_to_string(&path).unwrap();
    let tampered = dir.path().join("tampered.log");
    std::fs::write(&tampered, text.replacen("\"signed\"", "\"SIGNED\"", 1)).unwrap();
    let (code, stdout, _) = verify(&tampered);
    assert_eq!(code, 1);
    assert!(stdout.starts_with("broken at line 2: "), "{stdout}");

    std::fs::write(&tampered, &text[..text.len() - 3]).unwrap();
    let (code, stdout, _) = verify(&tampered);
    assert_eq!(
        (code, stdout.as_str()),
        (
            1,
            "broken at line 4: torn last line (no trailing newline)\n"
        )
    );

    let (code, stdout, stderr) = verify(&dir.path().join("missing.log"));
    assert_eq!(code, 2);
    assert_eq!(stdout, "");
    assert!(stderr.contains("missing.log"), "{stderr}");

    // Without FILE: ofc-signer-state/port-3080/audit.log in the working directory.
    let (code, _, stderr) = run_binary(dir.path(), &["audit".as_ref(), "verify".as_ref()]);
    assert_eq!(code, 2);
    assert!(stderr.contains(AUDIT_FILE), "{stderr}");
    let state = dir.path().join(DEFAULT_STATE_DIR).join("port-3080");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::copy(&path, state.join(AUDIT_FILE)).unwrap();
    let (code, stdout, _) = run_binary(dir.path(), &["audit".as_ref(), "verify".as_ref()]);
    assert_eq!((code, stdout), (0, format!("ok: 4 records, head {head}\n")));
    // The only log of an instance on another port is found too; with two, one must be named.
    std::fs::rename(&state, dir.path().join(DEFAULT_STATE_DIR).join("port-4000")).unwrap();
    let (code, stdout, _) = run_binary(dir.path(), &["audit".as_ref(), "verify".as_ref()]);
    assert_eq!((code, stdout), (0, format!("ok: 4 records, head {head}\n")));
    std::fs::create_dir_all(&state).unwrap();
    std::fs::copy(&path, state.join(AUDIT_FILE)).unwrap();
    let (code, _, stderr) = run_binary(dir.path(), &["audit".as_ref(), "verify".as_ref()]);
    assert_eq!(code, 2);
    assert!(stderr.contains("several audit logs"), "{stderr}");
}

/// `append_then` (the server's path): records from many threads go through the writer thread;
/// each completion comes only once its record is on disk, mixed with direct `append`s the chain
/// stays one chain, and dropping the log releases it for a reopen at once.
#[test]
fn writer_thread_appends_complete_only_when_durable() {
    appends_complete_only_when_durable(Duration::ZERO, true);
}

/// The same through the writer thread only, with a commit delay (the server's default is 1 ms;
/// a long one here, so that the writer does wait for the records it expects): nothing is
/// acknowledged early or lost.
#[test]
fn writer_thread_with_a_commit_delay_completes_only_when_durable() {
    appends_complete_only_when_durable(Duration::from_millis(500), false);
}

/// 16 clients, each waiting for its answer and then working a little before the next append (a
/// closed loop, as behind the server): with a commit delay the writer waits for the records it
/// expects, so the 400 appends share far fewer syncs; without one, each sync takes whatever
/// queued meanwhile.
#[test]
fn a_commit_delay_makes_closed_loop_appends_share_syncs() {
    let syncs = |commit_delay| {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(
            FileAuditLog::open(dir.path().join(AUDIT_FILE))
                .unwrap()
                .with_commit_delay(commit_delay),
        );
        std::thread::scope(|scope| {
            for t in 0..16u64 {
                let log = log.clone();
                scope.spawn(move || {
                    for n in 0..25 {
                        let (answer, answered) = std::sync::mpsc::channel();
                        log.append_then(
                            record(7000 + t * 25 + n),
                            Box::new(move |outcome| answer.send(outcome).unwrap()),
                        );
                        assert_eq!(answered.recv().unwrap(), Ok(()));
                        // The client's own work before its next request: 0.2–2 ms.
                        std::thread::sleep(Duration::from_micros(200 + (t * 397 + n * 151) % 1800));
                    }
                });
            }
        });
        log.syncs()
    };
    let (without, with) = (syncs(Duration::ZERO), syncs(Duration::from_millis(500)));
    // Measured here: 49–51 syncs with the delay, 73–88 without, 105–111 with a writer that
    // never waits for the batch it expects.
    assert!(
        with <= 400 / 6,
        "{with} syncs for 400 records with a commit delay ({without} without)"
    );
}

/// 8 threads append 50 records each, one at a time, through the writer thread (and every 10th
/// directly, when `direct`); each completion checks that its record is in the file.
fn appends_complete_only_when_durable(commit_delay: Duration, direct: bool) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(AUDIT_FILE);
    let log = Arc::new(
        FileAuditLog::open(&path)
            .unwrap()
            .with_commit_delay(commit_delay),
    );
    let (sender, completions) = std::sync::mpsc::channel();
    let handles: Vec<_> = (0..8u64)
        .map(|t| {
            let (log, sender) = (log.clone(), sender.clone());
            std::thread::spawn(move || {
                for n in 0..50 {
                    let id = 5000 + t * 50 + n;
                    if direct && n % 10 == 0 {
                        log.append(&record(id)).unwrap();
                        continue;
                    }
                    let (path, sender) = (log.path().to_path_buf(), sender.clone());
                    // One at a time per thread, like a client waiting for its answer.
                    let (answered, answer) = std::sync::mpsc::channel();
                    log.append_then(
                        record(id),
                        Box::new(move |outcome| {
                            let text = std::fs::read_to_string(path).unwrap();
                            let on_disk = text.contains(&format!("\"requestId\":\"req-{id}\""));
                            sender.send((id, outcome, on_disk)).unwrap();
                            answered.send(()).unwrap();
                        }),
                    );
                    answer.recv().unwrap();
                }
            })
        })
        .collect();
    for handle in handles {
        handle.join().unwrap();
    }
    drop(sender);
    let completed: Vec<_> = completions.iter().collect();
    assert_eq!(completed.len(), if direct { 8 * 45 } else { 400 });
    for (id, outcome, on_disk) in &completed {
        assert_eq!(outcome, &Ok(()), "record {id}");
        assert!(on_disk, "record {id} acknowledged before it was on disk");
    }
    drop(Arc::try_unwrap(log).expect("the only handle"));
    assert_eq!(audit::verify(&path).unwrap().records, 400);
    // Reopening right away works: the writer thread has let go of the file and its lock.
    let reopened = FileAuditLog::open(&path).unwrap();
    assert_eq!(reopened.head().0, 400);
}

#[test]
fn the_sync_observer_times_every_sync() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(AUDIT_FILE);
    let timed = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = timed.clone();
    let log = FileAuditLog::open(&path)
        .unwrap()
        .with_sync_observer(move |elapsed| seen.lock().unwrap().push(elapsed));
    for n in 0..3 {
        log.append(&record(n)).unwrap();
    }
    // And through the writer thread.
    let (sender, outcomes) = std::sync::mpsc::channel();
    log.append_then(
        record(3),
        Box::new(move |outcome| sender.send(outcome).unwrap()),
    );
    assert_eq!(outcomes.recv().unwrap(), Ok(()));
    let timed = timed.lock().unwrap().clone();
    assert_eq!(timed.len(), 4);
    assert_eq!(log.syncs(), 4);
    assert!(timed.iter().all(|elapsed| *elapsed > Duration::ZERO));
}

#[cfg(target_os = "linux")]
#[test]
fn writer_thread_reports_a_failed_write_and_refuses_later_appends() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(AUDIT_FILE);
    std::os::unix::fs::symlink("/dev/full", &path).unwrap();
    let log = FileAuditLog::open(&path).unwrap();
    let (sender, outcomes) = std::sync::mpsc::channel();
    for n in 0..3 {
        let sender = sender.clone();
        log.append_then(
            record(n),
            Box::new(move |outcome| sender.send(outcome).unwrap()),
        );
    }
    for _ in 0..3 {
        let outcome = outcomes.recv().unwrap();
        assert!(
            matches!(&outcome, Err(AuditError::Io { op: "write", .. })),
            "{outcome:?}"
        );
    }
    assert!(!log.healthy());
}
