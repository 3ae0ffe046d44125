//! Key envelopes (SJCL v1 and Argon2id v2): parsing and decryption of arbitrary text with an
//! arbitrary passphrase never panics. Input: `passphrase NUL envelope`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ofc_signer::keys::envelope;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (passphrase, envelope_text) = text.split_once('\0').unwrap_or(("", text));
    let _ = envelope::decrypt(passphrase, envelope_text);
});
