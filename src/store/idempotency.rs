//! The idempotency store: one durable record per sign-and-forward request.
//!
//! The route computes the body it will send upstream (nonce, signature, …), then calls
//! [`IdempotencyStore::begin`] **before** sending it. `begin` returns only once the record is on
//! disk, so whatever happens next (crash, `kill -9`, power loss, a retry from the client), a
//! request with the same [`RequestKey`] finds the record and re-sends the *same* bytes, or
//! answers the recorded response, and is never signed a second time with a different nonce.
//!
//! Two implementations: [`RedbStore`] (one redb database file, `<state-dir>/idempotency.redb`)
//! and [`MemoryStore`] (tests, and a fallback when no state directory is configured).
//!
//! ## Stored format (version 1)
//!
//! One redb table, `requests.v1`, from an encoded [`RequestKey`] to an encoded [`Record`]; both
//! encodings are this module's own, fixed and versioned (integers little-endian):
//!
//! - key: for each of `enterprise`, `route`, `external_id` in that order: `u32` byte length, then
//!   the UTF-8 bytes (unambiguous for any strings);
//! - record: `u8` format version (`1`) · 32 bytes `content_hash` · `u64` `created_at_ms` ·
//!   `u32` length + `signed_body` · `u8` outcome tag, `0` Pending or `1` Completed, and for
//!   Completed: `u16` status · `u32` length + body. Nothing may follow; any other version or
//!   tag, or a length past the end, is [`StoreError::Corrupt`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use redb::{Database, Durability, ReadableDatabase, TableDefinition};

/// Identifies one sign-and-forward request: enterprise + route + externalId/clientExternalId.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RequestKey {
    pub enterprise: String,
    pub route: String,
    pub external_id: String,
}

/// What became of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Recorded before sending; the upstream response is not known (yet, or ever: a crash).
    Pending,
    /// The upstream response.
    Completed { status: u16, body: Vec<u8> },
}

/// One request's durable record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// SHA-256 of the client's request content (computed by the caller).
    pub content_hash: [u8; 32],
    /// The exact bytes that are (or were) sent upstream.
    pub signed_body: Vec<u8>,
    pub outcome: Outcome,
    pub created_at_ms: u64,
}

/// The result of [`IdempotencyStore::begin`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Begin {
    /// The key was new: a Pending record with the given body is now durable.
    Inserted,
    /// The key was known: its record, untouched.
    Existing(Record),
}

/// A failure of the store. Its text names no request content (no body, no key).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened, read or written.
    #[error("idempotency store: {0}")]
    Database(String),
    /// A stored record or key could not be decoded.
    #[error("idempotency store: corrupt record: {0}")]
    Corrupt(&'static str),
    /// [`IdempotencyStore::complete`]: no record for the key.
    #[error("idempotency store: no record for this request")]
    NotFound,
    /// [`IdempotencyStore::complete`]: the record already holds a different response.
    #[error("idempotency store: the request already has a different recorded response")]
    AlreadyCompleted,
    /// A field is longer than the format allows (4 GiB).
    #[error("idempotency store: record too large")]
    TooLarge,
}

/// The durable map from requests to records.
pub trait IdempotencyStore: Send + Sync + 'static {
    /// Durable (fsync'd) before returning: inserts `Record{Pending}` if the key is new,
    /// otherwise returns the existing record untouched. Atomic w.r.t. concurrent callers.
    fn begin(
        &self,
        key: &RequestKey,
        content_hash: [u8; 32],
        signed_body: &[u8],
        now_ms: u64,
    ) -> Result<Begin, StoreError>;
    /// Durably records the upstream response of a pending request. Completing a record again
    /// with the same response is a no-op; with a different one, [`StoreError::AlreadyCompleted`];
    /// an unknown key, [`StoreError::NotFound`].
    fn complete(&self, key: &RequestKey, status: u16, body: &[u8]) -> Result<(), StoreError>;
    /// Durably forgets a request (BitGo definitively rejected it, so a corrected retry may
    /// proceed). Forgetting an unknown key is a no-op.
    fn forget(&self, key: &RequestKey) -> Result<(), StoreError>;
    fn get(&self, key: &RequestKey) -> Result<Option<Record>, StoreError>;
}

// ------------------------------------------------------------------------------------------------
// Encoding
// ------------------------------------------------------------------------------------------------

/// The record format version written by [`Record::encode`].
pub const RECORD_FORMAT_VERSION: u8 = 1;

const TAG_PENDING: u8 = 0;
const TAG_COMPLETED: u8 = 1;

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) -> Result<(), StoreError> {
    let len = u32::try_from(bytes.len()).map_err(|_| StoreError::TooLarge)?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(bytes);
    Ok(())
}

/// A cursor over encoded bytes.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], StoreError> {
        if self.0.len() < n {
            return Err(StoreError::Corrupt("truncated"));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], StoreError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn bytes(&mut self) -> Result<&'a [u8], StoreError> {
        let len = u32::from_le_bytes(self.array()?);
        let len = usize::try_from(len).map_err(|_| StoreError::Corrupt("length"))?;
        self.take(len)
    }

    fn finish(self) -> Result<(), StoreError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(StoreError::Corrupt("trailing bytes"))
        }
    }
}

impl RequestKey {
    /// The key's stored form (see the module documentation).
    pub fn encode(&self) -> Result<Vec<u8>, StoreError> {
        let mut out = Vec::with_capacity(
            12 + self.enterprise.len() + self.route.len() + self.external_id.len(),
        );
        put_bytes(&mut out, self.enterprise.as_bytes())?;
        put_bytes(&mut out, self.route.as_bytes())?;
        put_bytes(&mut out, self.external_id.as_bytes())?;
        Ok(out)
    }

    /// Parses [`RequestKey::encode`]'s output.
    pub fn decode(bytes: &[u8]) -> Result<RequestKey, StoreError> {
        let mut reader = Reader(bytes);
        let mut text = || {
            std::str::from_utf8(reader.bytes()?)
                .map(str::to_string)
                .map_err(|_| StoreError::Corrupt("key is not UTF-8"))
        };
        let key = RequestKey {
            enterprise: text()?,
            route: text()?,
            external_id: text()?,
        };
        reader.finish()?;
        Ok(key)
    }
}

impl Record {
    /// The record's stored form, format version 1 (see the module documentation).
    pub fn encode(&self) -> Result<Vec<u8>, StoreError> {
        let extra = match &self.outcome {
            Outcome::Pending => 0,
            Outcome::Completed { body, .. } => 6 + body.len(),
        };
        let mut out = Vec::with_capacity(1 + 32 + 8 + 4 + self.signed_body.len() + 1 + extra);
        out.push(RECORD_FORMAT_VERSION);
        out.extend_from_slice(&self.content_hash);
        out.extend_from_slice(&self.created_at_ms.to_le_bytes());
        put_bytes(&mut out, &self.signed_body)?;
        match &self.outcome {
            Outcome::Pending => out.push(TAG_PENDING),
            Outcome::Completed { status, body } => {
                out.push(TAG_COMPLETED);
                out.extend_from_slice(&status.to_le_bytes());
                put_bytes(&mut out, body)?;
            }
        }
        Ok(out)
    }

    /// Parses [`Record::encode`]'s output.
    pub fn decode(bytes: &[u8]) -> Result<Record, StoreError> {
        let mut reader = Reader(bytes);
        let [version] = reader.array()?;
        if version != RECORD_FORMAT_VERSION {
            return Err(StoreError::Corrupt("unknown record format version"));
        }
        let content_hash = reader.array()?;
        let created_at_ms = u64::from_le_bytes(reader.array()?);
        let signed_body = reader.bytes()?.to_vec();
        let [tag] = reader.array()?;
        let outcome = match tag {
            TAG_PENDING => Outcome::Pending,
            TAG_COMPLETED => {
                let status = u16::from_le_bytes(reader.array()?);
                let body = reader.bytes()?.to_vec();
                Outcome::Completed { status, body }
            }
            _ => return Err(StoreError::Corrupt("unknown outcome tag")),
        };
        reader.finish()?;
        Ok(Record {
            content_hash,
            signed_body,
            outcome,
            created_at_ms,
        })
    }
}

/// What `complete` does to an existing record.
fn completed(
    record: Option<Record>,
    status: u16,
    body: &[u8],
) -> Result<Option<Record>, StoreError> {
    let mut record = record.ok_or(StoreError::NotFound)?;
    match &record.outcome {
        Outcome::Pending => {
            record.outcome = Outcome::Completed {
                status,
                body: body.to_vec(),
            };
            Ok(Some(record))
        }
        Outcome::Completed {
            status: old_status,
            body: old_body,
        } if *old_status == status && old_body.as_slice() == body => Ok(None),
        Outcome::Completed { .. } => Err(StoreError::AlreadyCompleted),
    }
}

// ------------------------------------------------------------------------------------------------
// redb
// ------------------------------------------------------------------------------------------------

const REQUESTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("requests.v1");

/// The idempotency store in one redb database file.
///
/// Every mutation is one write transaction committed with [`Durability::Immediate`]: redb 4.x
/// documents that `WriteTransaction::commit` with this level returns only once the commit is
/// persistent (it fsyncs the file), and that it is the default ("Defaults to
/// `Durability::Immediate`", `WriteTransaction::set_durability`, redb 4.6). It is nevertheless
/// set explicitly on every transaction, so a change of default cannot weaken the store.
///
/// redb admits one write transaction at a time, so `begin`'s read-then-insert is atomic with
/// respect to every other caller; the file is locked against other processes
/// (`ConcurrencyMode::ExclusiveWriter`, the default).
pub struct RedbStore {
    db: Database,
    path: PathBuf,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore")
            .field("path", &self.path)
            .finish()
    }
}

impl RedbStore {
    /// Opens (creating it with mode `0600` if missing) the database at `path`, e.g.
    /// `<state-dir>/idempotency.redb`. The directory must exist
    /// ([`super::ensure_state_dir`]).
    pub fn open(path: impl AsRef<Path>) -> Result<RedbStore, StoreError> {
        let path = path.as_ref().to_path_buf();
        let shown = path.display().to_string();
        // An empty file is initialised by redb; creating it first gives it our permissions.
        super::create_private_file(&path)
            .map_err(|e| StoreError::Database(format!("cannot create {shown}: {e}")))?;
        let db = Database::create(&path)
            .map_err(|e| StoreError::Database(format!("cannot open {shown}: {e}")))?;
        let store = RedbStore { db, path };
        // Create the table up front, so that readers always find it.
        store.write(|_| Ok(((), true)))?;
        Ok(store)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` in one write transaction; commits it durably when `f` returns `Ok((_, true))`,
    /// aborts it (nothing is written) on `Ok((_, false))` or `Err`.
    fn write<T>(
        &self,
        f: impl FnOnce(
            &mut redb::Table<'_, &'static [u8], &'static [u8]>,
        ) -> Result<(T, bool), StoreError>,
    ) -> Result<T, StoreError> {
        let db_error =
            |what: &str, e: &dyn std::fmt::Display| StoreError::Database(format!("{what}: {e}"));
        let mut txn = self
            .db
            .begin_write()
            .map_err(|e| db_error("cannot begin a write", &e))?;
        txn.set_durability(Durability::Immediate)
            .map_err(|e| db_error("cannot set durability", &e))?;
        let (value, commit) = {
            let mut table = txn
                .open_table(REQUESTS)
                .map_err(|e| db_error("cannot open the table", &e))?;
            f(&mut table)?
        };
        if commit {
            txn.commit().map_err(|e| db_error("cannot commit", &e))?;
        } else {
            txn.abort().map_err(|e| db_error("cannot abort", &e))?;
        }
        Ok(value)
    }
}

fn read_record(
    table: &impl redb::ReadableTable<&'static [u8], &'static [u8]>,
    key: &[u8],
) -> Result<Option<Record>, StoreError> {
    let guard = table
        .get(key)
        .map_err(|e| StoreError::Database(format!("cannot read: {e}")))?;
    guard.map(|value| Record::decode(value.value())).transpose()
}

fn put_record(
    table: &mut redb::Table<'_, &'static [u8], &'static [u8]>,
    key: &[u8],
    record: &Record,
) -> Result<(), StoreError> {
    let value = record.encode()?;
    table
        .insert(key, value.as_slice())
        .map_err(|e| StoreError::Database(format!("cannot write: {e}")))?;
    Ok(())
}

impl IdempotencyStore for RedbStore {
    fn begin(
        &self,
        key: &RequestKey,
        content_hash: [u8; 32],
        signed_body: &[u8],
        now_ms: u64,
    ) -> Result<Begin, StoreError> {
        let key = key.encode()?;
        self.write(|table| {
            if let Some(record) = read_record(table, &key)? {
                return Ok((Begin::Existing(record), false));
            }
            let record = Record {
                content_hash,
                signed_body: signed_body.to_vec(),
                outcome: Outcome::Pending,
                created_at_ms: now_ms,
            };
            put_record(table, &key, &record)?;
            Ok((Begin::Inserted, true))
        })
    }

    fn complete(&self, key: &RequestKey, status: u16, body: &[u8]) -> Result<(), StoreError> {
        let key = key.encode()?;
        self.write(
            |table| match completed(read_record(table, &key)?, status, body)? {
                Some(record) => {
                    put_record(table, &key, &record)?;
                    Ok(((), true))
                }
                None => Ok(((), false)),
            },
        )
    }

    fn forget(&self, key: &RequestKey) -> Result<(), StoreError> {
        let key = key.encode()?;
        self.write(|table| {
            table
                .remove(key.as_slice())
                .map_err(|e| StoreError::Database(format!("cannot delete: {e}")))?;
            Ok(((), true))
        })
    }

    fn get(&self, key: &RequestKey) -> Result<Option<Record>, StoreError> {
        let key = key.encode()?;
        let txn = self
            .db
            .begin_read()
            .map_err(|e| StoreError::Database(format!("cannot begin a read: {e}")))?;
        let table = txn
            .open_table(REQUESTS)
            .map_err(|e| StoreError::Database(format!("cannot open the table: {e}")))?;
        read_record(&table, &key)
    }
}

// ------------------------------------------------------------------------------------------------
// In memory
// ------------------------------------------------------------------------------------------------

/// The idempotency store in memory: same semantics as [`RedbStore`], nothing survives the
/// process. For tests, and as a fallback when no state directory is configured.
#[derive(Debug, Default)]
pub struct MemoryStore {
    records: Mutex<HashMap<RequestKey, Record>>,
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    fn records(&self) -> std::sync::MutexGuard<'_, HashMap<RequestKey, Record>> {
        // A panic while holding the lock cannot leave a half-updated map (every mutation is a
        // single insert or remove), so the poisoned state is still consistent.
        self.records
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl IdempotencyStore for MemoryStore {
    fn begin(
        &self,
        key: &RequestKey,
        content_hash: [u8; 32],
        signed_body: &[u8],
        now_ms: u64,
    ) -> Result<Begin, StoreError> {
        let mut records = self.records();
        if let Some(record) = records.get(key) {
            return Ok(Begin::Existing(record.clone()));
        }
        records.insert(
            key.clone(),
            Record {
                content_hash,
                signed_body: signed_body.to_vec(),
                outcome: Outcome::Pending,
                created_at_ms: now_ms,
            },
        );
        Ok(Begin::Inserted)
    }

    fn complete(&self, key: &RequestKey, status: u16, body: &[u8]) -> Result<(), StoreError> {
        let mut records = self.records();
        if let Some(record) = completed(records.get(key).cloned(), status, body)? {
            records.insert(key.clone(), record);
        }
        Ok(())
    }

    fn forget(&self, key: &RequestKey) -> Result<(), StoreError> {
        self.records().remove(key);
        Ok(())
    }

    fn get(&self, key: &RequestKey) -> Result<Option<Record>, StoreError> {
        Ok(self.records().get(key).cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str) -> RequestKey {
        RequestKey {
            enterprise: "ent".into(),
            route: "POST /settlements".into(),
            external_id: id.into(),
        }
    }

    #[test]
    fn record_encoding_round_trips_and_is_fixed() {
        let pending = Record {
            content_hash: [7; 32],
            signed_body: b"{\"a\":1}".to_vec(),
            outcome: Outcome::Pending,
            created_at_ms: 0x0102_0304_0506_0708,
        };
        let bytes = pending.encode().unwrap();
        let mut expected = vec![1u8];
        expected.extend_from_slice(&[7; 32]);
        expected.extend_from_slice(&[8, 7, 6, 5, 4, 3, 2, 1]);
        expected.extend_from_slice(&[7, 0, 0, 0]);
        expected.extend_from_slice(b"{\"a\":1}");
        expected.push(0);
        assert_eq!(bytes, expected);
        assert_eq!(Record::decode(&bytes).unwrap(), pending);

        let done = Record {
            outcome: Outcome::Completed {
                status: 201,
                body: b"ok".to_vec(),
            },
            ..pending
        };
        let bytes = done.encode().unwrap();
        assert_eq!(
            &bytes[bytes.len() - 9..],
            &[1, 201, 0, 2, 0, 0, 0, b'o', b'k']
        );
        assert_eq!(Record::decode(&bytes).unwrap(), done);
    }

    #[test]
    fn corrupt_records_are_refused() {
        let record = Record {
            content_hash: [0; 32],
            signed_body: vec![1, 2, 3],
            outcome: Outcome::Pending,
            created_at_ms: 1,
        };
        let bytes = record.encode().unwrap();
        for cut in 0..bytes.len() {
            assert!(Record::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert_eq!(
            Record::decode(&trailing),
            Err(StoreError::Corrupt("trailing bytes"))
        );
        let mut version = bytes.clone();
        version[0] = 2;
        assert!(Record::decode(&version).is_err());
        let mut tag = bytes;
        *tag.last_mut().unwrap() = 9;
        assert!(Record::decode(&tag).is_err());
    }

    #[test]
    fn keys_are_unambiguous() {
        let a = RequestKey {
            enterprise: "ab".into(),
            route: "c".into(),
            external_id: String::new(),
        };
        let b = RequestKey {
            enterprise: "a".into(),
            route: "bc".into(),
            external_id: String::new(),
        };
        assert_ne!(a.encode().unwrap(), b.encode().unwrap());
        assert_eq!(RequestKey::decode(&a.encode().unwrap()).unwrap(), a);
    }

    #[test]
    fn memory_store_semantics() {
        let store = MemoryStore::new();
        let k = key("x");
        assert_eq!(store.get(&k).unwrap(), None);
        assert_eq!(store.complete(&k, 200, b""), Err(StoreError::NotFound));
        assert_eq!(
            store.begin(&k, [1; 32], b"body", 5).unwrap(),
            Begin::Inserted
        );
        let Begin::Existing(record) = store.begin(&k, [2; 32], b"other", 6).unwrap() else {
            panic!("expected Existing");
        };
        assert_eq!(record.signed_body, b"body");
        assert_eq!(record.content_hash, [1; 32]);
        assert_eq!(record.created_at_ms, 5);
        store.complete(&k, 201, b"done").unwrap();
        store.complete(&k, 201, b"done").unwrap();
        assert_eq!(
            store.complete(&k, 500, b"other"),
            Err(StoreError::AlreadyCompleted)
        );
        store.forget(&k).unwrap();
        store.forget(&k).unwrap();
        assert_eq!(store.get(&k).unwrap(), None);
    }

    #[test]
    fn errors_name_no_content() {
        for error in [
            StoreError::NotFound,
            StoreError::AlreadyCompleted,
            StoreError::TooLarge,
            StoreError::Corrupt("truncated"),
        ] {
            assert!(error.to_string().starts_with("idempotency store: "));
        }
    }
}
