//! `ofc-signer audit verify [FILE]`: checks the audit log's hash chain (see
//! [`crate::store::audit`]).
//!
//! Prints `ok: <n> records, head <hash>` (exit 0), or `broken at line <n>: <reason>` (exit 1);
//! a file that cannot be read exits 2. Read-only: a torn last line is reported, not repaired
//! (the signer repairs it when it next opens the log).

use std::path::PathBuf;
use std::process::ExitCode;

use crate::store::audit::{self, VerifyError};
use crate::store::{AUDIT_FILE, DEFAULT_STATE_DIR};
use crate::tools::{EXIT_FAILURE, EXIT_USAGE, ToolError};

/// `ofc-signer audit <COMMAND>`
#[derive(clap::Args, Debug)]
pub struct AuditArgs {
    #[command(subcommand)]
    pub command: AuditCommand,
}

/// The `audit` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum AuditCommand {
    /// Verify the audit log's hash chain; prints the record count and the head hash.
    Verify(AuditVerifyArgs),
}

/// `ofc-signer audit verify [FILE]`
#[derive(clap::Args, Debug)]
pub struct AuditVerifyArgs {
    /// The audit log (default: the one audit log under ./ofc-signer-state, i.e. that of the
    /// instance started from this directory; with several, name one).
    #[arg(value_name = "FILE")]
    pub file: Option<PathBuf>,
}

/// The default audit log: the only `ofc-signer-state/*/audit.log` in the working directory (the
/// default state directories are one per listening address); several are a usage error.
pub fn default_file() -> Result<PathBuf, ToolError> {
    let base = PathBuf::from(DEFAULT_STATE_DIR);
    let mut found: Vec<PathBuf> = std::fs::read_dir(&base)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|entry| entry.path().join(AUDIT_FILE))
                .filter(|path| path.is_file())
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    match found.len() {
        0 => Ok(crate::store::default_state_dir(3080, None).join(AUDIT_FILE)),
        1 => Ok(found.remove(0)),
        _ => Err(ToolError::usage(format!(
            "several audit logs under {}: name one of {}",
            base.display(),
            found
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

pub fn run(args: AuditArgs) -> Result<ExitCode, ToolError> {
    match args.command {
        AuditCommand::Verify(args) => run_verify(args),
    }
}

fn run_verify(args: AuditVerifyArgs) -> Result<ExitCode, ToolError> {
    let file = match args.file {
        Some(file) => file,
        None => default_file()?,
    };
    match audit::verify(&file) {
        Ok(report) => {
            println!("ok: {} records, head {}", report.records, report.head);
            Ok(ExitCode::SUCCESS)
        }
        Err(VerifyError::Broken(failure)) => {
            println!("{failure}");
            Ok(ExitCode::from(EXIT_FAILURE))
        }
        Err(VerifyError::Unreadable(message)) => Err(ToolError {
            status: EXIT_USAGE,
            message,
        }),
    }
}
