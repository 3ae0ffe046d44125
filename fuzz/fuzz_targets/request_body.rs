//! Request bodies as the routes decode them: JSON parse, then the signPayload decoder (Express's
//! typed-route validation); never a panic, and a decoded payload is the canonical string.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ofc_signer::js_json::{self, JsValue};
use ofc_signer::routes::validation;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(body) = js_json::parse(text) else {
        return;
    };
    if let Ok(request) = validation::decode_sign_payload(&body) {
        match body.get("payload") {
            Some(JsValue::String(payload)) => assert_eq!(&request.payload, payload),
            Some(other) => assert_eq!(request.payload.to_utf8_lossy(), other.to_json()),
            None => panic!("decoded without a payload"),
        }
    }
});
