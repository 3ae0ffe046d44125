//! URL handling of HMAC subjects and of the proxy's route table: any request target, any
//! method, never a panic; the subject path is ASCII-escaped as `url.parse` escapes it.
#![no_main]

use http::Method;
use libfuzzer_sys::fuzz_target;
use ofc_signer::routes::proxy_plan;
use ofc_signer::upstream::hmac::{AuthVersion, request_subject, subject_path};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = subject_path(text);
    assert!(
        !path.contains(' ') && !path.contains('#'),
        "{text:?} -> {path:?}"
    );
    for version in [AuthVersion::V2, AuthVersion::V3] {
        let _ = request_subject(version, "post", 1_672_531_200_000, &path, data);
    }
    for method in [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
    ] {
        for disable_proxy in [false, true] {
            let _ = proxy_plan::plan(&method, text, disable_proxy);
        }
    }
});
