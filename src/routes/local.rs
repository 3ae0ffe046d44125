//! Express's local routes (spec §6): `ping` (upstream), `pingexpress`, `encrypt`, `decrypt`.

use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use axum::response::Response;
use zeroize::Zeroizing;

use crate::error::{ApiError, json_response};
use crate::js_json::{JsObject, JsValue};
use crate::keys::envelope::{self, EnvelopeVersion};
use crate::routes::validation::Messages;
use crate::routes::{Caller, TypedBody};
use crate::server::AppState;

/// `GET /api/v[12]/pingexpress`: no upstream call.
pub fn ping_express() -> Response {
    json_response(
        StatusCode::OK,
        r#"{"status":"express server is ok!"}"#.to_string(),
    )
}

/// `GET /api/v[12]/ping`: BitGo's `GET /api/v1/ping`, relayed with 200 (upstream errors per §5.3).
pub async fn ping(state: &AppState, parts: &Parts) -> Result<Response, ApiError> {
    let caller = Caller::from_headers(&parts.headers);
    let response = state
        .upstream
        .send(caller.upstream(Method::GET, "/api/v1/ping"))
        .await?;
    Ok(json_response(StatusCode::OK, response.json().to_json()))
}

/// Decodes `{input: string, password?: string, adata?: string}`-style bodies (spec §6).
fn decode_strings<'a>(
    body: &'a JsValue,
    required: &[&str],
    optional: &[&str],
) -> Result<&'a JsObject, ApiError> {
    let Some(object) = body.as_object() else {
        return Err(ApiError::validation(""));
    };
    let mut messages = Messages::default();
    for field in required {
        match object.get(field) {
            None => messages.missing(field),
            Some(JsValue::String(_)) => {}
            Some(other) => messages.invalid(field, "string", other),
        }
    }
    for field in optional {
        match object.get(field) {
            None | Some(JsValue::String(_)) => {}
            Some(other) => messages.invalid(field, "string", other),
        }
    }
    messages.finish().map_err(ApiError::validation)?;
    Ok(object)
}

fn text_field(object: &JsObject, field: &str) -> Zeroizing<String> {
    Zeroizing::new(
        object
            .get(field)
            .and_then(JsValue::as_js_string)
            .map(|s| s.to_utf8_lossy().into_owned())
            .unwrap_or_default(),
    )
}

/// `POST /api/v[12]/encrypt`: a v2 envelope by default, v1 when `encryptionVersion` is the number 1.
pub async fn encrypt(state: &AppState, body: &TypedBody) -> Result<Response, ApiError> {
    let object = decode_strings(&body.value, &["input"], &["password", "adata"])?;
    let input = text_field(object, "input");
    let password = text_field(object, "password");
    let adata = object
        .get("adata")
        .and_then(JsValue::as_js_string)
        .map(|s| s.to_utf8_lossy().into_owned());
    let version = match object.get("encryptionVersion") {
        Some(JsValue::Number(n)) if *n == 1.0 => EnvelopeVersion::V1,
        _ => EnvelopeVersion::V2,
    };
    let encrypted = state
        .kdf
        .run(move || envelope::encrypt(&password, &input, version, adata.as_deref()))
        .await?
        .map_err(|e| ApiError::internal(e.message()))?;
    let mut out = JsObject::new();
    out.insert("encrypted", encrypted);
    Ok(json_response(
        StatusCode::OK,
        JsValue::Object(out).to_json(),
    ))
}

/// `POST /api/v[12]/decrypt`: the plaintext, or the SDK's error message as a 500 (as Express:
/// a wrong password here is `incorrect password`, spec §6).
pub async fn decrypt(state: &AppState, body: &TypedBody) -> Result<Response, ApiError> {
    let object = decode_strings(&body.value, &["input"], &["password"])?;
    let input = text_field(object, "input").to_string();
    let password = text_field(object, "password");
    let decrypted = state
        .kdf
        .run(move || envelope::decrypt(&password, &input))
        .await?
        .map_err(|e| ApiError::internal(e.message()))?;
    let mut out = JsObject::new();
    out.insert("decrypted", decrypted.as_str());
    Ok(json_response(
        StatusCode::OK,
        JsValue::Object(out).to_json(),
    ))
}
