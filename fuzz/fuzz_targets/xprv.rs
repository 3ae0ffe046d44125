//! Extended keys: `xprv`/`xpub` parsing never panics, and a parsed `xprv`'s `xpub` names the
//! same public key.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ofc_signer::keys::xprv::{SigningKey, public_key_from_extended, xpub_from_xprv};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = public_key_from_extended(text);
    if let Ok(key) = SigningKey::from_xprv(text) {
        let xpub = xpub_from_xprv(text).expect("an xprv that parses has an xpub");
        assert_eq!(public_key_from_extended(&xpub).unwrap(), key.public_key());
    }
});
