//! Key tooling: subcommands of the `ofc-signer` binary.
//!
//! | subcommand | what it does |
//! |---|---|
//! | `fetch-keys` ([`fetch_keys`]) | writes the signer-mode key file, like Express's `fetchEncryptedPrivKeys.ts` |
//! | `encrypt`, `decrypt` ([`crypt`]) | v1 (SJCL) and v2 (Argon2id) key envelopes, as `/api/v2/encrypt`, `/api/v2/decrypt` |
//! | `sign` ([`sign`]) | an offline signPayload from a key file: the route's exact response body |
//! | `verify` ([`verify`]) | checks a signPayload signature against an `xpub` or a public key |
//! | `audit verify` ([`audit`]) | checks the audit log's hash chain |
//! | `sandbox` ([`sandbox`]) | runs the demo fake BitGo API on its own |
//! | `healthcheck` ([`healthcheck`]) | the container's probe: is the running server ready? |
//!
//! Each module keeps its logic in small pure functions and does its I/O (files, standard
//! streams, the terminal, the network) at the edge, through [`io`]. Passphrases never come from
//! the command line: they are read from the environment or from the terminal without echo, held
//! in [`zeroize::Zeroizing`], and never printed.

pub mod audit;
pub mod crypt;
pub mod fetch_keys;
pub mod healthcheck;
pub mod io;
pub mod sandbox;
pub mod sign;
pub mod verify;

use std::process::ExitCode;

/// The subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum Tool {
    /// Write the signer-mode key file (encryptedPrivKeys.json) from BitGo, like Express's
    /// fetchEncryptedPrivKeys.ts (configured by the BITGO_EXTERNAL_SIGNER_* variables).
    FetchKeys(fetch_keys::FetchKeysArgs),
    /// Encrypt text (e.g. an xprv) into a key envelope; passphrase from OFC_SIGNER_PASSPHRASE or
    /// the terminal.
    Encrypt(crypt::EncryptArgs),
    /// Decrypt a key envelope (v1 or v2); passphrase from OFC_SIGNER_PASSPHRASE or the terminal.
    Decrypt(crypt::DecryptArgs),
    /// Sign a payload offline with a wallet's key from a signer key file; prints the
    /// signPayload response body.
    Sign(sign::SignArgs),
    /// Verify a signPayload signature against an xpub or a public key.
    Verify(verify::VerifyArgs),
    /// Audit log tooling: `audit verify [FILE]` checks the log's hash chain.
    Audit(audit::AuditArgs),
    /// Run the demo fake BitGo API on its own (the wallets, tokens and Go Network of --demo).
    Sandbox(sandbox::SandboxArgs),
    /// Ask a running ofc-signer whether it is ready (exit 0) or not (exit 1): the container's
    /// health probe.
    Healthcheck(healthcheck::HealthcheckArgs),
}

/// Exit status of a command that failed.
pub const EXIT_FAILURE: u8 = 1;
/// Exit status of a usage error (as clap's).
pub const EXIT_USAGE: u8 = 2;

/// A failed subcommand: what to print on standard error and the exit status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolError {
    pub status: u8,
    pub message: String,
}

impl ToolError {
    /// A failure (exit status 1).
    pub fn failure(message: impl Into<String>) -> Self {
        ToolError {
            status: EXIT_FAILURE,
            message: message.into(),
        }
    }

    /// A usage error (exit status 2).
    pub fn usage(message: impl Into<String>) -> Self {
        ToolError {
            status: EXIT_USAGE,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for ToolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Runs a subcommand; the exit code is the command's result.
pub fn run(tool: Tool) -> ExitCode {
    let result = match tool {
        Tool::FetchKeys(args) => fetch_keys::run(args),
        Tool::Encrypt(args) => crypt::run_encrypt(args),
        Tool::Decrypt(args) => crypt::run_decrypt(args),
        Tool::Sign(args) => sign::run(args),
        Tool::Verify(args) => verify::run(args),
        Tool::Audit(args) => audit::run(args),
        Tool::Sandbox(args) => sandbox::run(args),
        Tool::Healthcheck(args) => healthcheck::run(args),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {}", error.message);
            ExitCode::from(error.status)
        }
    }
}
