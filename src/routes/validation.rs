//! Request bodies checked the way Express's typed routes (io-ts codecs) check them (spec §0.4,
//! §1.1): the messages of a failed check, and the signPayload body's decoder. Pure.

use zeroize::Zeroizing;

use crate::error::ApiError;
use crate::js_json::{JsString, JsValue};

/// `String(v)` as the message shows it: objects and arrays JSON-encoded (with the values of
/// sensitive keys such as `password` hidden), others as JS prints them.
pub fn shown(value: &JsValue) -> String {
    match value {
        JsValue::String(s) => s.to_utf8_lossy().into_owned(),
        JsValue::Number(n) => crate::js_json::number_to_string(*n),
        JsValue::Bool(b) => b.to_string(),
        JsValue::Null => "null".to_string(),
        JsValue::Array(_) | JsValue::Object(_) => {
            let mut value = value.clone();
            crate::error::Secrets::default().redact(&mut value);
            value.to_json()
        }
    }
}

/// Collects one message per failing path and joins them Express's way.
#[derive(Default)]
pub struct Messages(Vec<String>);

impl Messages {
    pub fn missing(&mut self, path: &str) {
        self.0.push(format!("Missing required field '{path}'"));
    }

    /// Express shows the offending value. For a secret field (`walletPassphrase`,
    /// `password`) an object or array is shown as `[REDACTED]`: whatever it holds was meant
    /// to be secret. (Scalars are shown as Express shows them: spec §1.1 pins `got '123'`.)
    pub fn invalid(&mut self, path: &str, expected: &str, got: &JsValue) {
        let secret_container = crate::error::is_sensitive_key(path)
            && matches!(got, JsValue::Array(_) | JsValue::Object(_));
        let got = if secret_container {
            "[REDACTED]".to_string()
        } else {
            shown(got)
        };
        self.0.push(format!(
            "Invalid value for '{path}': expected {expected}, got '{got}'"
        ));
    }

    /// `Ok` when nothing failed, else the joined message (`. `-separated, `.`-terminated).
    pub fn finish(self) -> Result<(), String> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(format!("{}.", self.0.join(". ")))
        }
    }
}

/// A decoded signPayload request.
#[derive(Debug)]
pub struct SignPayloadRequest {
    pub wallet_id: JsString,
    /// The exact text that is signed (and echoed back as `payload`).
    pub payload: JsString,
    pub wallet_passphrase: Option<Zeroizing<String>>,
}

/// Decodes the body against the typed route's codec (spec §1.1): `walletId` a non-empty string,
/// `payload` any JSON value (required), `walletPassphrase` an optional string.
pub fn decode_sign_payload(body: &JsValue) -> Result<SignPayloadRequest, ApiError> {
    let Some(object) = body.as_object() else {
        // A top-level array: every path is empty, so the message is empty (spec §0.4).
        return Err(ApiError::validation(""));
    };
    let mut messages = Messages::default();
    let wallet_id = match object.get("walletId") {
        None => {
            messages.missing("walletId");
            None
        }
        Some(JsValue::String(id)) if !id.is_empty() => Some(id.clone()),
        Some(other) => {
            messages.invalid("walletId", "NonEmptyString", other);
            None
        }
    };
    let payload = match object.get("payload") {
        None => {
            messages.missing("payload");
            None
        }
        Some(JsValue::String(text)) => Some(text.clone()),
        Some(value) => Some(JsString::from(value.to_json())),
    };
    let wallet_passphrase = match object.get("walletPassphrase") {
        None => None,
        Some(JsValue::String(passphrase)) => {
            Some(Zeroizing::new(passphrase.to_utf8_lossy().into_owned()))
        }
        Some(other) => {
            messages.invalid("walletPassphrase", "string", other);
            None
        }
    };
    messages.finish().map_err(ApiError::validation)?;
    match (wallet_id, payload) {
        (Some(wallet_id), Some(payload)) => Ok(SignPayloadRequest {
            wallet_id,
            payload,
            wallet_passphrase,
        }),
        _ => Err(ApiError::internal("request decoding failed")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::js_json;

    #[test]
    fn validation_messages() {
        let mut messages = Messages::default();
        messages.missing("walletId");
        messages.invalid("walletPassphrase", "string", &JsValue::Null);
        assert_eq!(
            messages.finish(),
            Err("Missing required field 'walletId'. Invalid value for 'walletPassphrase': expected string, got 'null'.".to_string())
        );
        assert_eq!(shown(&js_json::parse(r#"["a"]"#).unwrap()), r#"["a"]"#);
        assert_eq!(shown(&JsValue::Number(123.0)), "123");
        assert_eq!(
            shown(&js_json::parse(r#"{"a":1,"password":"hunter2"}"#).unwrap()),
            r#"{"a":1,"password":"[REDACTED]"}"#
        );
    }

    #[test]
    fn secret_fields_never_show_a_container() {
        let value = js_json::parse(r#"{"p":"my passphrase"}"#).unwrap();
        let mut messages = Messages::default();
        messages.invalid("walletPassphrase", "string", &value);
        messages.invalid("walletId", "NonEmptyString", &value);
        messages.invalid("password", "string", &js_json::parse(r#"["pw"]"#).unwrap());
        messages.invalid("walletPassphrase", "string", &JsValue::Number(123.0));
        assert_eq!(
            messages.finish(),
            Err("Invalid value for 'walletPassphrase': expected string, got '[REDACTED]'. \
                 Invalid value for 'walletId': expected NonEmptyString, got '{\"p\":\"my passphrase\"}'. \
                 Invalid value for 'password': expected string, got '[REDACTED]'. \
                 Invalid value for 'walletPassphrase': expected string, got '123'."
                .to_string())
        );
    }
}
