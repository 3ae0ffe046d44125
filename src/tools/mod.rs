//! Key tooling: subcommands of the `ofc-signer` binary (`fetch-keys`, `encrypt`, `decrypt`,
//! `sign`, `verify`).

use std::process::ExitCode;

/// The subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum Tool {}

/// Runs a subcommand; the exit code is the command's result.
pub fn run(tool: Tool) -> ExitCode {
    match tool {}
}
