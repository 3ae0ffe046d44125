//! The V8-exact JSON canonicaliser (`JSON.stringify(JSON.parse(text))`): never panics; its output
//! is stable (`parse(stringify(x))` stringifies to the same text); and it accepts every text
//! that a reference parser, serde_json, accepts (serde_json's language is a subset of
//! `JSON.parse`'s: it refuses lone-surrogate escapes, out-of-range numbers and deep nesting).
#![no_main]

use libfuzzer_sys::fuzz_target;
use ofc_signer::js_json;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = js_json::parse(text);
    if serde_json::from_str::<serde_json::Value>(text).is_ok() {
        assert!(
            parsed.is_ok(),
            "serde_json accepts, JSON.parse model refuses: {text:?}"
        );
    }
    if let Ok(value) = parsed {
        let once = value.to_json();
        let reparsed = js_json::parse(&once).expect("stringify output parses");
        assert_eq!(reparsed.to_json(), once, "not stable for {text:?}");
    }
});
