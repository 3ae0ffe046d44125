//! `ofc-signer audit verify [FILE]`: checks the audit log's hash chain (see
//! [`crate::store::audit`]).
//!
//! Prints `ok: <n> records, head <hash>` (exit 0), or `broken at line <n>: <reason>` (exit 1);
//! a file that cannot be read exits 2. Read-only: a torn last line is reported, not repaired
//! (the signer repairs it when it next opens the log).

use std::path::PathBuf;
use std::process::ExitCode;

use crate::store::AUDIT_FILE;
use crate::store::audit::{self, VerifyError};
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
    /// The audit log (default: ofc-signer-state/port-3080/audit.log, the log of an instance on the
    /// default port started from this directory).
    #[arg(value_name = "FILE")]
    pub file: Option<PathBuf>,
}

/// The default audit log: that of an instance on the default port (3080) with the default state
/// directory.
pub fn default_file() -> PathBuf {
    crate::store::default_state_dir(3080, None).join(AUDIT_FILE)
}

pub fn run(args: AuditArgs) -> Result<ExitCode, ToolError> {
    match args.command {
        AuditCommand::Verify(args) => run_verify(args),
    }
}

fn run_verify(args: AuditVerifyArgs) -> Result<ExitCode, ToolError> {
    let file = args.file.unwrap_or_else(default_file);
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
