//! The signer-mode key file (any bytes, as read from disk) never panics the parser.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ofc_signer::keys::keystore::parse_key_file;

fuzz_target!(|data: &[u8]| {
    let _ = parse_key_file(data);
});
