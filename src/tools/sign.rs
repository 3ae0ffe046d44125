//! `ofc-signer sign`: signPayload offline, from a signer key file (spec §1.5, §1.6, §2).
//!
//! The payload argument is the JSON text of the request's `payload` value and is canonicalised by
//! the route's own decoder ([`decode_sign_payload`](crate::routes::validation::decode_sign_payload)):
//! a JSON string is signed verbatim, any other value as V8's `JSON.stringify` of it. The output is
//! the route's exact body, `{"payload":…,"signature":…}`
//! ([`response_body`](crate::routes::sign_payload::response_body)).
//!
//! The passphrase comes from `WALLET_<walletId>_PASSPHRASE`, else `OFC_SIGNER_PASSPHRASE`, else the
//! terminal (no echo).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::config::Env;
use crate::js_json::{self, JsObject, JsString, JsValue};
use crate::keys::envelope;
use crate::keys::keystore::{missing_wallet, parse_key_file};
use crate::keys::xprv::SigningKey;
use crate::message_sign::sign_message_hex;
use crate::routes::sign_payload::response_body;
use crate::routes::validation::decode_sign_payload;
use crate::tools::ToolError;
use crate::tools::io::{self, PASSPHRASE_VAR};

/// `ofc-signer sign --key-file <PATH> --wallet-id <ID> (--payload <JSON> | --payload-file <PATH|->)`
#[derive(clap::Args, Debug)]
pub struct SignArgs {
    /// The signer key file: `{"<walletId>": "<envelope>", …}` (as written by fetch-keys).
    #[arg(long, value_name = "PATH")]
    pub key_file: PathBuf,
    /// The wallet whose key signs.
    #[arg(long, value_name = "ID", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub wallet_id: String,
    #[command(flatten)]
    pub payload: PayloadSource,
}

/// Where the JSON text of the payload comes from (exactly one).
#[derive(clap::Args, Debug)]
#[group(required = true, multiple = false)]
pub struct PayloadSource {
    /// The JSON text of the request's `payload` value, e.g. '{"a":1}' or '"a string"'.
    #[arg(long, value_name = "JSON", allow_hyphen_values = true)]
    pub payload: Option<OsString>,
    /// A file holding that JSON text; `-`: standard input.
    #[arg(long, value_name = "PATH|-")]
    pub payload_file: Option<PathBuf>,
}

/// The string signPayload signs for the JSON text of a `payload` value, canonicalised by the
/// route's own decoder.
pub fn payload_string(payload_json: &str) -> Result<JsString, String> {
    let value = js_json::parse(payload_json)
        .map_err(|e| format!("the payload is not valid JSON: {}", e.message))?;
    let mut body = JsObject::new();
    body.insert("walletId", "-");
    body.insert("payload", value);
    decode_sign_payload(&JsValue::Object(body))
        .map(|request| request.payload)
        .map_err(|e| e.message_text())
}

/// The envelope of `wallet_id` in the key file text, with signer mode's messages (spec §1.5).
pub fn key_file_entry(
    key_file_text: &str,
    key_file_name: &str,
    wallet_id: &str,
) -> Result<String, String> {
    let file = parse_key_file(key_file_text.as_bytes())
        .map_err(|e| format!("Failed to parse {key_file_name} - {}", e.0))?;
    match file.get(wallet_id) {
        None => Err(missing_wallet(wallet_id, Path::new(key_file_name))),
        Some(JsValue::String(envelope)) => Ok(envelope.to_utf8_lossy().into_owned()),
        // `decrypt`'s parameter check of a non-string envelope.
        Some(other) => Err(format!(
            "Expecting parameter string: input but found {}",
            other.type_of()
        )),
    }
}

/// Decrypts `envelope_text` and signs `payload` with its `xprv`: the route's response body.
pub fn sign_with_envelope(
    passphrase: &str,
    envelope_text: &str,
    payload: &JsString,
) -> Result<String, String> {
    let xprv = envelope::decrypt(passphrase, envelope_text).map_err(|e| e.message().to_string())?;
    let key = SigningKey::from_xprv(&xprv).map_err(|e| e.to_string())?;
    Ok(sign_payload(&key, payload))
}

/// `{"payload":…,"signature":…}` for `payload` signed by `key`, byte for byte what the route
/// answers.
pub fn sign_payload(key: &SigningKey, payload: &JsString) -> String {
    let message = payload.to_utf8_lossy();
    let signature = JsValue::from(sign_message_hex(key, message.as_bytes()));
    response_body(payload, Some(&signature))
}

/// The JSON text of the payload from `--payload` or `--payload-file`.
fn read_payload_json(source: &PayloadSource) -> Result<String, ToolError> {
    if let Some(text) = &source.payload {
        return text
            .to_str()
            .map(str::to_string)
            .ok_or_else(|| ToolError::usage("--payload is not UTF-8 text"));
    }
    let path = source.payload_file.as_deref();
    let name = if io::is_stdin(path) {
        "standard input".to_string()
    } else {
        path.map(|p| p.display().to_string()).unwrap_or_default()
    };
    let bytes = io::read_source(path)?;
    String::from_utf8(bytes.to_vec())
        .map_err(|_| ToolError::failure(format!("the payload in {name} is not UTF-8 text")))
}

fn read_key_file(path: &Path) -> Result<String, ToolError> {
    std::fs::read_to_string(path)
        .map_err(|e| ToolError::failure(format!("cannot read {}: {e}", path.display())))
}

pub fn run(args: SignArgs) -> Result<ExitCode, ToolError> {
    let payload = payload_string(&read_payload_json(&args.payload)?).map_err(ToolError::failure)?;
    let key_file_text = read_key_file(&args.key_file)?;
    let envelope_text = key_file_entry(
        &key_file_text,
        &args.key_file.display().to_string(),
        &args.wallet_id,
    )
    .map_err(ToolError::failure)?;
    let env = Env::from_process();
    let wallet_var = format!("WALLET_{}_PASSPHRASE", args.wallet_id);
    let passphrase = io::passphrase(
        &env,
        &[wallet_var.as_str(), PASSPHRASE_VAR],
        &format!("Passphrase for wallet {}: ", args.wallet_id),
        false,
    )?;
    let body =
        sign_with_envelope(&passphrase, &envelope_text, &payload).map_err(ToolError::failure)?;
    io::write_stdout(body.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::envelope::{EnvelopeVersion, encrypt};
    use crate::keys::xprv::test_fixtures::SPEC_TEST_XPRV;

    #[test]
    fn payloads_are_canonicalised_like_the_route() {
        let text = |json: &str| payload_string(json).unwrap();
        assert_eq!(
            text(r#"{ "b": 1.50, "a": [1e3] }"#),
            r#"{"b":1.5,"a":[1000]}"#
        );
        assert_eq!(text(r#"{"z":1,"10":2,"2":3}"#), r#"{"2":3,"10":2,"z":1}"#);
        assert_eq!(text(r#""{ \"a\": 1 }""#), r#"{ "a": 1 }"#);
        assert_eq!(text("\"\""), "");
        assert_eq!(text("null"), "null");
        assert_eq!(text(" 0 \n"), "0");
        assert!(text(r#""abc\ud800def""#).has_lone_surrogate());
        assert!(
            payload_string("{nope")
                .unwrap_err()
                .starts_with("the payload is not valid JSON: ")
        );
    }

    #[test]
    fn key_file_entries_with_signer_mode_messages() {
        let file = r#"{"w1": "envelope-1", "w2": 5}"#;
        assert_eq!(
            key_file_entry(file, "keys.json", "w1").unwrap(),
            "envelope-1"
        );
        assert_eq!(
            key_file_entry(file, "keys.json", "w3").unwrap_err(),
            "Could not find a field for walletId: w3 in keys.json"
        );
        assert_eq!(
            key_file_entry(file, "keys.json", "w2").unwrap_err(),
            "Expecting parameter string: input but found number"
        );
        assert_eq!(
            key_file_entry("", "keys.json", "w1").unwrap_err(),
            "Failed to parse keys.json - Unexpected end of JSON input"
        );
    }

    #[test]
    fn signs_the_route_body() {
        // Spec §9.3 known answer.
        let envelope = encrypt("pw", SPEC_TEST_XPRV, EnvelopeVersion::V1, None).unwrap();
        let payload = payload_string(r#"{"this":{"is":{"a":"payload"}}}"#).unwrap();
        assert_eq!(
            sign_with_envelope("pw", &envelope, &payload).unwrap(),
            r#"{"payload":"{\"this\":{\"is\":{\"a\":\"payload\"}}}","signature":"1fa61da37948435e8f870cec81ad47d336837b64a0512283ed845cccd2bb9287dc1b6c605ebd5d37fc1a851690bce619b6fc345c86a8c51c97a6b69a3bf47decb9"}"#
        );
        assert_eq!(
            sign_with_envelope("wrong", &envelope, &payload).unwrap_err(),
            "incorrect password"
        );
    }
}
