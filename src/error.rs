//! The one error type of ofc-signer and the one place that renders BitGo Express's error body
//! (spec §0.3).
//!
//! Every failure a request can meet becomes an [`ApiError`]: it carries the HTTP status, the
//! error `name`, the `message` (a JSON value: the upstream `error` field may be anything), an
//! optional `code`, and an optional `result` that becomes the base of the body. [`ApiError::render`]
//! builds the body exactly as Express's `handleRequestHandlerError` does, then redacts secrets the
//! request carried.

use std::borrow::Cow;

use http::StatusCode;

use crate::js_json::{JsObject, JsValue};

/// The `bitgoJsVersion` / `bitgoExpressVersion` fields report ofc-signer's own version
/// (spec: "a re-implementation reports its own, but the field names are fixed").
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// What replaces a secret in an error body.
const REDACTED: &str = "[REDACTED]";

/// Request-body keys whose values are secrets (compared case-insensitively).
const SENSITIVE_KEYS: [&str; 7] = [
    "password",
    "passphrase",
    "walletpassphrase",
    "prv",
    "privatekey",
    "encryptedprv",
    "secret",
];

/// An error on its way to the client, in Express's vocabulary.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub name: Cow<'static, str>,
    pub message: JsValue,
    pub code: Option<Cow<'static, str>>,
    /// `err.result`: when truthy it is the base of the body instead of `{"error": message}`.
    pub result: Option<Box<JsValue>>,
    /// Whether request secrets are replaced inside the body's strings (spec §0.3). Validation
    /// errors come from the typed router, not the handler wrapper that redacts (spec §0.4); their
    /// shown values hide sensitive keys instead ([`crate::routes::validation::shown`]).
    pub redact_strings: bool,
}

impl ApiError {
    fn new(status: StatusCode, name: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            name: Cow::Borrowed(name),
            message: JsValue::from(message.into()),
            code: None,
            result: None,
            redact_strings: true,
        }
    }

    /// A plain JavaScript `Error` (status 500 unless changed with [`ApiError::with_status`]).
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "Error", message)
    }

    /// Express's own `ApiResponseError(message, status)`.
    pub fn api_response(status: StatusCode, message: impl Into<String>) -> Self {
        Self::new(status, "ApiResponseError", message)
    }

    /// A typed-route decoding failure (spec §0.4): 400 `ValidationError`, no `code`, and
    /// `error` equal to `message` even when it is empty (the typed router builds this body itself).
    pub fn validation(message: impl Into<String>) -> Self {
        let message = message.into();
        let mut result = JsObject::new();
        result.insert("error", JsValue::from(message.as_str()));
        let mut error = Self::new(StatusCode::BAD_REQUEST, "ValidationError", message)
            .with_result(JsValue::Object(result));
        error.redact_strings = false;
        error
    }

    /// The SDK's `IncorrectPasswordError` (spec §11.3: in every mode).
    pub fn incorrect_passphrase() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "IncorrectPasswordError",
            "unable to decrypt keychain with the given wallet passphrase",
        )
        .with_code("wallet_passphrase_incorrect")
    }

    /// A body-parser failure (malformed JSON 400, too large 413, unsupported charset 415),
    /// rendered as JSON instead of Express's HTML page (spec §11.8).
    pub fn body_parser(status: StatusCode, name: &'static str, message: impl Into<String>) -> Self {
        Self::new(status, name, message)
    }

    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    pub fn with_code(mut self, code: impl Into<Cow<'static, str>>) -> Self {
        self.code = Some(code.into());
        self
    }

    pub fn with_result(mut self, result: JsValue) -> Self {
        self.result = Some(Box::new(result));
        self
    }

    /// The message as plain text (for logs and tests).
    pub fn message_text(&self) -> String {
        match &self.message {
            JsValue::String(s) => s.to_utf8_lossy().into_owned(),
            other => other.to_json(),
        }
    }

    /// The Express error body (spec §0.3), with `secrets` redacted.
    pub fn body(&self, secrets: &Secrets) -> JsValue {
        // `err.message || 'local error'` for the default `error` field.
        let error_text = if self.message.is_truthy() {
            self.message.clone()
        } else {
            JsValue::from("local error")
        };
        let mut body = match self.result.as_deref().filter(|r| r.is_truthy()) {
            Some(result) => lodash_extend_base(result),
            None => {
                let mut base = JsObject::new();
                base.insert("error", error_text);
                base
            }
        };
        body.insert("message", self.message.clone());
        body.insert("name", JsValue::from(self.name.as_ref()));
        body.insert("bitgoJsVersion", JsValue::from(VERSION));
        body.insert("bitgoExpressVersion", JsValue::from(VERSION));
        if let Some(code) = &self.code {
            body.insert("code", JsValue::from(code.as_ref()));
        }
        let mut body = JsValue::Object(body);
        if self.redact_strings {
            secrets.redact(&mut body);
        } else {
            Secrets::default().redact(&mut body);
        }
        body
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.name,
            self.message_text()
        )
    }
}

impl std::error::Error for ApiError {}

/// `_.extend({}, result)`: own enumerable properties of the result become the base object
/// (arrays and strings contribute their indices; other primitives contribute nothing).
fn lodash_extend_base(result: &JsValue) -> JsObject {
    match result {
        JsValue::Object(object) => object.clone(),
        JsValue::Array(items) => {
            let mut base = JsObject::new();
            for (index, item) in items.iter().enumerate() {
                base.insert(index.to_string(), item.clone());
            }
            base
        }
        JsValue::String(text) => {
            let mut base = JsObject::new();
            for (index, unit) in text.to_utf8_lossy().encode_utf16().enumerate() {
                let unit = String::from_utf16_lossy(&[unit]);
                base.insert(index.to_string(), JsValue::from(unit));
            }
            base
        }
        _ => JsObject::new(),
    }
}

/// The error as an HTTP response (the server's side; the pure core only builds errors).
#[cfg(feature = "server")]
mod response {
    use axum::http::{HeaderValue, StatusCode, header};
    use axum::response::{IntoResponse, Response};

    use super::{ApiError, Secrets, redact_text};

    impl ApiError {
        /// The HTTP response: status, JSON body, redacted.
        pub fn render(&self, secrets: &Secrets) -> Response {
            let body = self.body(secrets).to_json();
            if !self.status.is_success() {
                tracing::info!(status = self.status.as_u16(), message = %redact_text(&self.message_text(), secrets), "error response");
            }
            json_response(self.status, body)
        }
    }

    impl IntoResponse for ApiError {
        fn into_response(self) -> Response {
            self.render(&Secrets::default())
        }
    }

    /// A JSON response with Express's `Content-Type`.
    pub fn json_response(status: StatusCode, body: String) -> Response {
        let mut response = (status, body).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        response
    }
}

#[cfg(feature = "server")]
pub use response::json_response;

/// The secret values a request body carried (spec §0.3 redaction). Never logged, never printed.
#[derive(Default, Clone)]
pub struct Secrets(Vec<String>);

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secrets([{} REDACTED])", self.0.len())
    }
}

impl Drop for Secrets {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        for secret in &mut self.0 {
            secret.zeroize();
        }
    }
}

/// Whether `text` contains the name of a sensitive key anywhere (case-insensitively).
#[cfg(feature = "server")]
pub(crate) fn mentions_sensitive_key(text: &[u8]) -> bool {
    let lower = text.to_ascii_lowercase();
    SENSITIVE_KEYS
        .iter()
        .any(|key| lower.windows(key.len()).any(|w| w == key.as_bytes()))
}

/// Whether a body key names a secret (`walletPassphrase`, `password`, `prv`, …), any case.
pub(crate) fn is_sensitive_key(key: &str) -> bool {
    SENSITIVE_KEYS.iter().any(|k| k.eq_ignore_ascii_case(key))
}

impl Secrets {
    /// Collects, at any depth, the non-empty string values of sensitive keys in a request body.
    pub fn from_request_body(body: &JsValue) -> Self {
        let mut found = Vec::new();
        let mut stack = vec![body];
        while let Some(value) = stack.pop() {
            match value {
                JsValue::Object(object) => {
                    for (key, child) in object.iter() {
                        if let (Some(key), JsValue::String(text)) = (key.as_str(), child)
                            && is_sensitive_key(key)
                            && !text.is_empty()
                        {
                            found.push(text.to_utf8_lossy().into_owned());
                        }
                        stack.push(child);
                    }
                }
                JsValue::Array(items) => stack.extend(items.iter()),
                _ => {}
            }
        }
        Secrets(found)
    }

    /// Adds a secret known to the server (e.g. an environment passphrase) for redaction.
    pub fn push(&mut self, secret: impl Into<String>) {
        let secret = secret.into();
        if !secret.is_empty() {
            self.0.push(secret);
        }
    }

    /// Replaces every secret occurring in a string of `value` by `[REDACTED]`, and the value of
    /// every sensitive key by `[REDACTED]`, at any depth. (With no secrets, only the latter.)
    pub fn redact(&self, value: &mut JsValue) {
        match value {
            JsValue::String(text) if !self.0.is_empty() => {
                let plain = text.to_utf8_lossy();
                let redacted = redact_text(&plain, self);
                if redacted != plain {
                    *value = JsValue::from(redacted);
                }
            }
            JsValue::Array(items) => items.iter_mut().for_each(|item| self.redact(item)),
            JsValue::Object(object) => {
                for (key, child) in object.iter_mut() {
                    if key.as_str().is_some_and(is_sensitive_key) {
                        *child = JsValue::from(REDACTED);
                    } else {
                        self.redact(child);
                    }
                }
            }
            _ => {}
        }
    }
}

/// Plain substring replacement of every secret (longest first) — what Express does.
pub fn redact_text(text: &str, secrets: &Secrets) -> String {
    let mut ordered: Vec<&String> = secrets.0.iter().collect();
    ordered.sort_by_key(|s| std::cmp::Reverse(s.len()));
    let mut out = text.to_string();
    for secret in ordered {
        if out.contains(secret.as_str()) {
            out = out.replace(secret.as_str(), REDACTED);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::js_json::parse;

    fn render(error: &ApiError, request_body: &str) -> String {
        let secrets = Secrets::from_request_body(&parse(request_body).unwrap());
        error.body(&secrets).to_json()
    }

    #[test]
    fn incorrect_passphrase_body_matches_spec() {
        assert_eq!(
            render(&ApiError::incorrect_passphrase(), "{}"),
            format!(
                r#"{{"error":"unable to decrypt keychain with the given wallet passphrase","message":"unable to decrypt keychain with the given wallet passphrase","name":"IncorrectPasswordError","bitgoJsVersion":"{VERSION}","bitgoExpressVersion":"{VERSION}","code":"wallet_passphrase_incorrect"}}"#
            )
        );
    }

    #[test]
    fn redaction_is_plain_substring_replacement() {
        let error = ApiError::internal("incorrect password");
        assert_eq!(
            render(&error, r#"{"input":"x","password":"pass"}"#),
            format!(
                r#"{{"error":"incorrect [REDACTED]word","message":"incorrect [REDACTED]word","name":"Error","bitgoJsVersion":"{VERSION}","bitgoExpressVersion":"{VERSION}"}}"#
            )
        );
        let nested = ApiError::internal("decrypt: ciphertext is not valid JSON");
        assert!(
            render(&nested, r#"{"extra":{"Secret":"JSON"}}"#)
                .contains(r#""message":"decrypt: ciphertext is not valid [REDACTED]""#)
        );
    }

    #[test]
    fn result_replaces_the_error_field_and_keeps_key_positions() {
        let upstream =
            parse(r#"{"error":"wallet not found","name":"WalletNotFound","requestId":"fake-33"}"#)
                .unwrap();
        let error =
            ApiError::api_response(StatusCode::NOT_FOUND, "wallet not found").with_result(upstream);
        assert_eq!(
            render(&error, "{}"),
            format!(
                r#"{{"error":"wallet not found","name":"ApiResponseError","requestId":"fake-33","message":"wallet not found","bitgoJsVersion":"{VERSION}","bitgoExpressVersion":"{VERSION}"}}"#
            )
        );
    }

    #[test]
    fn sensitive_keys_in_the_error_body_are_redacted() {
        let result = parse(r#"{"prv":"xprv-secret","nested":{"Passphrase":"p"}}"#).unwrap();
        let error = ApiError::internal("boom").with_result(result);
        let body = render(&error, "{}");
        assert!(
            body.starts_with(r#"{"prv":"[REDACTED]","nested":{"Passphrase":"[REDACTED]"}"#),
            "{body}"
        );
    }

    #[test]
    fn validation_messages_are_not_mangled_by_redaction() {
        let error = ApiError::validation("Invalid value for 'input': expected string, got '5'.");
        let body = render(&error, r#"{"input":5,"password":"x"}"#);
        assert!(body.contains("expected string, got '5'."), "{body}");
    }

    #[test]
    fn empty_messages() {
        // The typed router's 400 keeps `error` = `message` = "" (spec §0.4)...
        let body = render(&ApiError::validation(""), "{}");
        assert!(
            body.starts_with(r#"{"error":"","message":"","name":"ValidationError""#),
            "{body}"
        );
        // ...while a handler error without a message gets `local error` (spec §0.3).
        let body = render(&ApiError::internal(""), "{}");
        assert!(
            body.starts_with(r#"{"error":"local error","message":"","name":"Error""#),
            "{body}"
        );
    }
}
