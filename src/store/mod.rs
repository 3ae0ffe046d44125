//! Durable state: what must survive a crash (`kill -9`, power loss) of the signer.
//!
//! | module | role |
//! |---|---|
//! | [`idempotency`] | one record per sign-and-forward request, so a retried request is never re-signed with a different nonce |
//! | [`audit`] | the hash-chained, append-only log of every signature produced |
//!
//! Both live in one state directory ([`DEFAULT_STATE_DIR`] unless configured):
//! `<state-dir>/`[`IDEMPOTENCY_FILE`] and `<state-dir>/`[`AUDIT_FILE`]. Files are created with
//! mode `0600`, the directory (by [`ensure_state_dir`]) with `0700`.

pub mod audit;
pub mod idempotency;

use std::io;
use std::path::{Path, PathBuf};

/// The default state directory (relative to the working directory).
pub const DEFAULT_STATE_DIR: &str = "ofc-signer-state";
/// The audit log's file name in the state directory.
pub const AUDIT_FILE: &str = "audit.log";
/// The idempotency database's file name in the state directory.
pub const IDEMPOTENCY_FILE: &str = "idempotency.redb";

/// The default state directory of an instance: one per listening address under
/// [`DEFAULT_STATE_DIR`] (`port-<port>` or `ipc-<socket name>`), so two instances started from one
/// directory (a signer and a forwarder, say) never share a log, while a restarted instance finds
/// its own state again.
pub fn default_state_dir(port: u16, ipc: Option<&Path>) -> PathBuf {
    let base = PathBuf::from(DEFAULT_STATE_DIR);
    match ipc.and_then(|p| p.file_name()) {
        Some(name) => base.join(format!("ipc-{}", name.to_string_lossy())),
        None => base.join(format!("port-{port}")),
    }
}

/// Creates the state directory (and its parents) if missing; a new directory gets mode `0700`.
/// An existing directory is left as it is.
pub fn ensure_state_dir(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)?;
    if let Some(parent) = dir.parent() {
        sync_dir(parent);
    }
    Ok(())
}

/// Creates `path` with mode `0600` if it does not exist (an existing file is not touched) and
/// makes the new directory entry durable. Returns whether the file was created.
pub(crate) fn create_private_file(path: &Path) -> io::Result<bool> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(path) {
        Ok(file) => {
            file.sync_all()?;
            drop(file);
            if let Some(parent) = path.parent() {
                sync_dir(parent);
            }
            Ok(true)
        }
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(error) => Err(error),
    }
}

/// Best effort: fsyncs a directory so that a newly created entry in it survives power loss.
/// (Not possible on every platform; a process crash loses nothing either way.)
pub(crate) fn sync_dir(dir: &Path) {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    if let Ok(handle) = std::fs::File::open(dir) {
        let _ = handle.sync_all();
    }
}

/// Whether a file can be created (and synced) in `dir` now: readiness of the state directory.
pub fn probe_writable(dir: &Path) -> bool {
    let probe = dir.join(".ready-probe");
    let written = std::fs::write(&probe, b"ok").is_ok();
    let _ = std::fs::remove_file(&probe);
    written
}
