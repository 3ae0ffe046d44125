//! `ofc-signer encrypt` / `ofc-signer decrypt`: key envelopes, exactly as the SDK (and
//! `POST /api/v2/encrypt`, `/api/v2/decrypt`) makes and reads them (spec §3).
//!
//! The text comes from a file argument or standard input (one trailing line ending is removed),
//! the result goes to standard output; the passphrase comes from `OFC_SIGNER_PASSPHRASE` or the
//! terminal, never from the command line. Errors are the SDK's messages (`incorrect password`,
//! `decrypt: ciphertext is not valid JSON`, …).

use std::path::PathBuf;
use std::process::ExitCode;

use zeroize::Zeroizing;

use crate::config::Env;
use crate::keys::envelope::{self, EnvelopeVersion};
use crate::tools::ToolError;
use crate::tools::io::{self, PASSPHRASE_VAR};

/// `ofc-signer encrypt [--v1] [--adata <text>] [FILE|-]`
#[derive(clap::Args, Debug)]
pub struct EncryptArgs {
    /// Write a v1 envelope (SJCL: PBKDF2-SHA256 + AES-256-CCM) instead of v2 (Argon2id +
    /// AES-256-GCM).
    #[arg(long)]
    pub v1: bool,
    /// Additional authenticated data, stored in the envelope.
    #[arg(long, value_name = "TEXT", allow_hyphen_values = true)]
    pub adata: Option<String>,
    /// File holding the text to encrypt; `-` or absent: standard input. One trailing line ending
    /// is removed.
    #[arg(value_name = "FILE")]
    pub input: Option<PathBuf>,
}

/// `ofc-signer decrypt [FILE|-]`
#[derive(clap::Args, Debug)]
pub struct DecryptArgs {
    /// File holding the envelope; `-` or absent: standard input.
    #[arg(value_name = "FILE")]
    pub input: Option<PathBuf>,
}

/// The envelope version `--v1` selects.
pub fn version(v1: bool) -> EnvelopeVersion {
    if v1 {
        EnvelopeVersion::V1
    } else {
        EnvelopeVersion::V2
    }
}

/// Encrypts `plaintext` (the SDK's `encrypt`); the error is the SDK's message.
pub fn encrypt_text(
    passphrase: &str,
    plaintext: &str,
    version: EnvelopeVersion,
    adata: Option<&str>,
) -> Result<String, String> {
    envelope::encrypt(passphrase, plaintext, version, adata).map_err(|e| e.message().to_string())
}

/// Decrypts an envelope (the SDK's `decrypt`); the error is the SDK's message.
pub fn decrypt_text(passphrase: &str, envelope_text: &str) -> Result<Zeroizing<String>, String> {
    envelope::decrypt(passphrase, envelope_text).map_err(|e| e.message().to_string())
}

fn read_text(input: Option<&std::path::Path>) -> Result<Zeroizing<String>, ToolError> {
    let what = if io::is_stdin(input) {
        "standard input".to_string()
    } else {
        input.map(|p| p.display().to_string()).unwrap_or_default()
    };
    let mut text = io::into_text(io::read_source(input)?, &what)?;
    io::strip_one_line_ending(&mut text);
    Ok(text)
}

pub fn run_encrypt(args: EncryptArgs) -> Result<ExitCode, ToolError> {
    let plaintext = read_text(args.input.as_deref())?;
    let env = Env::from_process();
    let passphrase = io::passphrase(&env, &[PASSPHRASE_VAR], "Passphrase: ", true)?;
    let envelope = encrypt_text(
        &passphrase,
        &plaintext,
        version(args.v1),
        args.adata.as_deref(),
    )
    .map_err(ToolError::failure)?;
    io::write_stdout(envelope.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

pub fn run_decrypt(args: DecryptArgs) -> Result<ExitCode, ToolError> {
    let envelope_text = read_text(args.input.as_deref())?;
    let env = Env::from_process();
    let passphrase = io::passphrase(&env, &[PASSPHRASE_VAR], "Passphrase: ", false)?;
    let plaintext = decrypt_text(&passphrase, &envelope_text).map_err(ToolError::failure)?;
    io::write_stdout(plaintext.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_sdk_messages() {
        let v1 = encrypt_text("pw", "secret text", version(true), Some("my adata!")).unwrap();
        assert!(v1.starts_with("{\"iv\":"), "{v1}");
        assert!(v1.contains("\"adata\":\"my%20adata%21\""), "{v1}");
        assert_eq!(decrypt_text("pw", &v1).unwrap().as_str(), "secret text");
        assert_eq!(
            decrypt_text("wrong", &v1).unwrap_err(),
            "incorrect password"
        );
        assert_eq!(
            decrypt_text("pw", "not json").unwrap_err(),
            "decrypt: ciphertext is not valid JSON"
        );
        assert_eq!(
            encrypt_text("", "x", version(false), None).unwrap_err(),
            "Missing parameter: password"
        );
        assert_eq!(
            encrypt_text("pw", "", version(false), None).unwrap_err(),
            "Missing parameter: input"
        );
        assert_eq!(version(false), EnvelopeVersion::V2);
    }
}
