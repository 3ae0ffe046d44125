//! The SDK `hmac_request` and `hmac_response` vectors against the HMAC functions ofc-signer signs
//! and verifies every upstream exchange with (the wire itself is covered by the `flows` vectors).

use crate::common::*;
use ofc_signer::js_json::JsValue;
use ofc_signer::upstream::hmac::{
    AccessToken, AuthVersion, ResponseCheckError, SignedResponse, hmac_hex, request_headers,
    request_subject, subject_path, verify_response,
};

fn version(v: &JsValue) -> AuthVersion {
    match v.get("authVersion").and_then(JsValue::as_f64) {
        Some(3.0) => AuthVersion::V3,
        Some(2.0) => AuthVersion::V2,
        other => panic!("authVersion {other:?}"),
    }
}

fn number(v: &JsValue, key: &str) -> u64 {
    v.get(key)
        .and_then(JsValue::as_f64)
        .unwrap_or_else(|| panic!("{key}")) as u64
}

#[test]
fn hmac_request_vectors() {
    let vectors = kind("hmac_request");
    assert_eq!(vectors.len(), 32);
    for v in vectors {
        let id = text(v, "id");
        let token = AccessToken::new(text(v, "token"));
        let path = subject_path(&text(v, "url"));
        let method = text(v, "method");
        let body = text(v, "text");
        let timestamp = number(v, "timestamp");
        let subject = request_subject(version(v), &method, timestamp, &path, body.as_bytes());
        assert_eq!(
            String::from_utf8(subject.clone()).unwrap(),
            text(v, "subject"),
            "{id}"
        );
        assert_eq!(hmac_hex(&token, &subject), text(v, "hmac"), "{id}");
        assert_eq!(token.hash_hex(), text(v, "tokenHash"), "{id}");
        let headers = request_headers(
            version(v),
            Some(&token),
            &method,
            &path,
            body.as_bytes(),
            timestamp,
        );
        let expected = v.get("headers").and_then(JsValue::as_object).unwrap();
        assert_eq!(headers.0.len(), expected.len(), "{id}");
        for (name, value) in &headers.0 {
            assert_eq!(
                expected.get(name).and_then(JsValue::as_str),
                Some(value.as_str()),
                "{id}: {name}"
            );
        }
    }
}

#[test]
fn hmac_response_vectors() {
    let vectors = kind("hmac_response");
    assert_eq!(vectors.len(), 38);
    for v in vectors {
        let id = text(v, "id");
        let token = AccessToken::new(text(v, "token"));
        let path = subject_path(&text(v, "url"));
        let body = text(v, "text");
        let timestamp = text(v, "timestamp");
        let hmac = text(v, "hmac");
        let method = text(v, "method");
        let response = SignedResponse {
            method: &method,
            path: &path,
            status: number(v, "statusCode") as u16,
            body: body.as_bytes(),
            timestamp: Some(&timestamp),
            hmac: Some(&hmac),
        };
        let result = verify_response(version(v), &token, &response, number(v, "verificationTime"));
        let expected_valid = v.get("expectedValid") == Some(&JsValue::Bool(true));
        assert_eq!(result.is_ok(), expected_valid, "{id}: {result:?}");
        match result {
            Ok(()) => {}
            Err(ResponseCheckError::InvalidHmac {
                expected_hmac,
                hmac_input,
                ..
            }) => {
                assert_eq!(
                    text(v, "sdkError"),
                    "invalid response HMAC (status 511)",
                    "{id}"
                );
                assert_eq!(expected_hmac, text(v, "expectedHmac"), "{id}");
                assert_eq!(hmac_input, text(v, "expectedSubject"), "{id}");
            }
            Err(ResponseCheckError::OutsideWindow { .. }) => {
                assert_eq!(
                    text(v, "sdkError"),
                    "server response outside response validity time window (status 511)",
                    "{id}"
                );
            }
        }
    }
}

#[test]
fn unauthenticated_and_legacy_requests() {
    // No token: only the version header (spec §4.2).
    let none = request_headers(AuthVersion::V2, None, "get", "/x", b"", 1);
    assert_eq!(none.0, vec![("BitGo-Auth-Version", "2.0".to_string())]);
    // A legacy token travels as a plain bearer token, nothing else.
    let legacy = AccessToken::new("v123xyz...");
    let headers = request_headers(AuthVersion::V2, Some(&legacy), "get", "/x", b"", 1);
    assert_eq!(
        headers.0,
        vec![("Authorization", "Bearer v123xyz...".to_string())]
    );
}
