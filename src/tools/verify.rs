//! `ofc-signer verify`: what a counterparty runs to check a signPayload signature (spec §2).
//!
//! The message is the exact payload string: `--payload <text>`, the raw bytes of
//! `--payload-file`, or the `payload` of a signPayload response (`--response`), taken as the
//! signer takes it (UTF-8, a lone surrogate as U+FFFD). The key is an `xpub`, a 33-byte compressed
//! or a 65-byte uncompressed public key in hex. Prints `valid` (exit 0) or `invalid: <reason>`
//! (exit 1); usage errors exit 2.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use secp256k1::PublicKey;

use crate::js_json::{self, JsValue};
use crate::keys::xprv::public_key_from_extended;
use crate::message_sign::{VerifyError, recover_public_key, verify_message};
use crate::tools::io;
use crate::tools::{EXIT_FAILURE, ToolError};

/// `ofc-signer verify --pub <KEY> (--signature <HEX> (--payload <TEXT> | --payload-file <PATH|->) | --response <PATH|->)`
#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("message").required(true).multiple(false)
    .args(["payload", "payload_file", "response"])))]
pub struct VerifyArgs {
    /// The signer's key: an xpub, or a public key in hex (66 characters compressed, 130
    /// uncompressed).
    #[arg(long = "pub", value_name = "KEY")]
    pub public_key: String,
    /// The signature: 130 hex characters (65 bytes).
    #[arg(long, value_name = "HEX", required_unless_present = "response")]
    pub signature: Option<String>,
    /// The exact payload string that was signed.
    #[arg(long, value_name = "TEXT", allow_hyphen_values = true)]
    pub payload: Option<OsString>,
    /// A file holding the exact bytes that were signed (nothing is stripped); `-`: standard input.
    #[arg(long, value_name = "PATH|-")]
    pub payload_file: Option<PathBuf>,
    /// A signPayload response, {"payload":…,"signature":…}; `-`: standard input.
    #[arg(long, value_name = "PATH|-", conflicts_with = "signature")]
    pub response: Option<PathBuf>,
}

/// Parses `--pub`: an `xpub`, or a compressed (66 hex) or uncompressed (130 hex) public key.
pub fn parse_public_key(text: &str) -> Result<PublicKey, String> {
    let text = text.trim();
    let is_hex = !text.is_empty() && text.bytes().all(|b| b.is_ascii_hexdigit());
    if is_hex && (text.len() == 66 || text.len() == 130) {
        let bytes = hex::decode(text).map_err(|e| format!("--pub: {e}"))?;
        return PublicKey::from_slice(&bytes)
            .map_err(|_| "--pub: not a valid secp256k1 public key".to_string());
    }
    if text.starts_with("xprv") || text.starts_with("tprv") {
        return Err("--pub: this is a private key; give the xpub".to_string());
    }
    if text.starts_with("xpub") || text.starts_with("tpub") {
        return public_key_from_extended(text).map_err(|e| format!("--pub: {e}"));
    }
    Err(
        "--pub: expected an xpub, or a public key in hex (66 characters compressed, 130 uncompressed)"
            .to_string(),
    )
}

/// The message bytes and signature of a signPayload response.
pub fn parse_response(text: &str) -> Result<(Vec<u8>, String), String> {
    let response = js_json::parse(text)
        .map_err(|e| format!("the response is not valid JSON: {}", e.message))?;
    let payload = match response.get("payload") {
        Some(JsValue::String(payload)) => payload.to_utf8_lossy().into_owned().into_bytes(),
        _ => return Err("the response has no \"payload\" string".to_string()),
    };
    let signature = match response.get("signature") {
        Some(JsValue::String(signature)) => signature.to_utf8_lossy().into_owned(),
        _ => return Err("the response has no \"signature\" string".to_string()),
    };
    Ok((payload, signature))
}

/// `Ok` when `signature` signs `message` with `key`, else the reason.
pub fn check(message: &[u8], signature: &str, key: &PublicKey) -> Result<(), String> {
    match verify_message(message, signature, key) {
        Ok(()) => Ok(()),
        Err(VerifyError::WrongKey) => {
            let recovered = recover_public_key(message, signature)
                .map(|k| format!(" (it recovers {})", hex::encode(k.serialize())))
                .unwrap_or_default();
            let mut reason = format!("{}{recovered}", VerifyError::WrongKey);
            // A common slip: an editor or `echo` added a newline to the payload file.
            if let Some(stripped) = message
                .strip_suffix(b"\r\n")
                .or_else(|| message.strip_suffix(b"\n"))
                && verify_message(stripped, signature, key).is_ok()
            {
                reason.push_str(
                    "; without the payload's trailing line ending the signature would be valid",
                );
            }
            Err(reason)
        }
        Err(other) => Err(other.to_string()),
    }
}

#[cfg(unix)]
fn os_bytes(text: &OsString) -> Result<Vec<u8>, ToolError> {
    use std::os::unix::ffi::OsStrExt;
    Ok(text.as_bytes().to_vec())
}

#[cfg(not(unix))]
fn os_bytes(text: &OsString) -> Result<Vec<u8>, ToolError> {
    text.to_str()
        .map(|s| s.as_bytes().to_vec())
        .ok_or_else(|| ToolError::usage("--payload is not valid Unicode; use --payload-file"))
}

/// Reads the message and the signature; failures here are usage errors (exit 2).
fn message_and_signature(args: &VerifyArgs) -> Result<(Vec<u8>, String), ToolError> {
    let usage = |e: ToolError| ToolError::usage(e.message);
    if let Some(path) = &args.response {
        let bytes = io::read_source(Some(path)).map_err(usage)?;
        let text = std::str::from_utf8(&bytes)
            .map_err(|_| ToolError::usage("the response is not UTF-8 text"))?;
        return parse_response(text).map_err(ToolError::usage);
    }
    let signature = args
        .signature
        .as_deref()
        .map(|s| s.trim().to_string())
        .ok_or_else(|| ToolError::usage("--signature is required"))?;
    let message = match (&args.payload, &args.payload_file) {
        (Some(text), _) => os_bytes(text)?,
        (None, Some(path)) => io::read_source(Some(path)).map_err(usage)?.to_vec(),
        (None, None) => return Err(ToolError::usage("a payload is required")),
    };
    Ok((message, signature))
}

pub fn run(args: VerifyArgs) -> Result<ExitCode, ToolError> {
    let key = parse_public_key(&args.public_key).map_err(ToolError::usage)?;
    let (message, signature) = message_and_signature(&args)?;
    match check(&message, &signature, &key) {
        Ok(()) => {
            println!("valid");
            Ok(ExitCode::SUCCESS)
        }
        Err(reason) => {
            println!("invalid: {reason}");
            Ok(ExitCode::from(EXIT_FAILURE))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::xprv::test_fixtures::SPEC_TEST_XPRV;
    use crate::keys::xprv::{SigningKey, xpub_from_xprv};
    use crate::message_sign::sign_message_hex;

    #[test]
    fn public_key_forms() {
        let key = SigningKey::from_xprv(SPEC_TEST_XPRV).unwrap().public_key();
        let xpub = xpub_from_xprv(SPEC_TEST_XPRV).unwrap();
        assert_eq!(parse_public_key(&xpub).unwrap(), key);
        assert_eq!(
            parse_public_key(&hex::encode(key.serialize())).unwrap(),
            key
        );
        let uncompressed = hex::encode(key.serialize_uncompressed());
        assert_eq!(parse_public_key(&uncompressed).unwrap(), key);
        assert_eq!(parse_public_key(&uncompressed.to_uppercase()).unwrap(), key);
        assert!(
            parse_public_key(SPEC_TEST_XPRV)
                .unwrap_err()
                .contains("private key")
        );
        assert!(parse_public_key(&"00".repeat(33)).is_err());
        assert!(parse_public_key("hello").is_err());
    }

    #[test]
    fn checks_and_reasons() {
        let signer = SigningKey::from_xprv(SPEC_TEST_XPRV).unwrap();
        let key = signer.public_key();
        let signature = sign_message_hex(&signer, b"hello");
        assert_eq!(check(b"hello", &signature, &key), Ok(()));
        // Also against the uncompressed form of the same key.
        let uncompressed = parse_public_key(&hex::encode(key.serialize_uncompressed())).unwrap();
        assert_eq!(check(b"hello", &signature, &uncompressed), Ok(()));
        let wrong = check(b"hellp", &signature, &key).unwrap_err();
        assert!(wrong.starts_with("signature was made by a different key (it recovers "));
        assert!(!wrong.contains("trailing"));
        let newline = check(b"hello\n", &signature, &key).unwrap_err();
        assert!(newline.contains("trailing line ending"), "{newline}");
        assert_eq!(
            check(b"hello", &signature[..128], &key).unwrap_err(),
            "signature must be 65 bytes of hex (130 characters)"
        );
        let mut uncompressed_header = signature.clone();
        uncompressed_header.replace_range(0..2, "1b");
        assert!(
            check(b"hello", &uncompressed_header, &key)
                .unwrap_err()
                .contains("header byte 27")
        );
    }

    #[test]
    fn responses() {
        let (message, signature) =
            parse_response(r#"{"payload":"abc\ud800def","signature":"00"}"#).unwrap();
        assert_eq!(hex::encode(message), "616263efbfbd646566");
        assert_eq!(signature, "00");
        assert!(parse_response(r#"{"payload":1,"signature":"00"}"#).is_err());
        assert!(parse_response(r#"{"payload":"x"}"#).is_err());
        assert!(parse_response("nope").is_err());
    }
}
