//! Bitcoin signed-message signatures, exactly as BitGo's SDK produces them for OFC payloads
//! (spec §2: `bitcoinjs-message` `sign(message, privateKey, compressed = true)`).
//!
//! - digest = SHA256(SHA256(`0x18` ‖ `"Bitcoin Signed Message:\n"` ‖ CompactSize(len(m)) ‖ m)),
//!   where `m` is the UTF-8 of the payload string and the length counts bytes;
//! - ECDSA over secp256k1 with the RFC 6979 nonce and no extra entropy, low-S normalised
//!   (libsecp256k1, the same library the SDK uses through `secp256k1@5`);
//! - 65 bytes `header ‖ r ‖ s` with `header = 27 + 4 (compressed) + recovery id`,
//!   returned as 130 lowercase hex characters.
//!
//! Pure: no I/O, no clock.

use std::cell::RefCell;
use std::sync::LazyLock;

use secp256k1::ecdsa::{RecoverableSignature, RecoveryId};
use secp256k1::{Message, PublicKey, Secp256k1, SignOnly, VerifyOnly};
use sha2::{Digest, Sha256};

use crate::keys::xprv::SigningKey;

/// `0x18 "Bitcoin Signed Message:\n"` — the message prefix of the Bitcoin mainnet network.
pub const MESSAGE_PREFIX: &[u8] = b"\x18Bitcoin Signed Message:\n";

/// Header offset for a signature over a compressed public key: 27 + 4.
const COMPRESSED_HEADER_BASE: u8 = 31;

/// The double-SHA256 digest that is signed for `message`.
pub fn message_digest(message: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(MESSAGE_PREFIX);
    let mut varint = [0u8; 9];
    let varint_len = compact_size(message.len() as u64, &mut varint);
    hasher.update(&varint[..varint_len]);
    hasher.update(message);
    let first = hasher.finalize();
    Sha256::digest(first).into()
}

/// Bitcoin CompactSize encoding of `n` into `out`; returns the number of bytes written.
fn compact_size(n: u64, out: &mut [u8; 9]) -> usize {
    if n < 0xfd {
        out[0] = n as u8;
        1
    } else if n <= 0xffff {
        out[0] = 0xfd;
        out[1..3].copy_from_slice(&(n as u16).to_le_bytes());
        3
    } else if n <= 0xffff_ffff {
        out[0] = 0xfe;
        out[1..5].copy_from_slice(&(n as u32).to_le_bytes());
        5
    } else {
        out[0] = 0xff;
        out[1..9].copy_from_slice(&n.to_le_bytes());
        9
    }
}

/// A signing context is re-blinded (libsecp256k1's `context_randomize`, a side-channel
/// counter-measure that does not change any signature) after this many signatures. Re-blinding
/// costs about as much as a signature; doing it after every one would halve throughput.
const SIGNATURES_PER_BLINDING: u32 = 64;

thread_local! {
    /// Each thread's signing context and the signatures made since it was last blinded.
    static SIGNING: RefCell<(Secp256k1<SignOnly>, u32)> =
        RefCell::new((Secp256k1::signing_only(), SIGNATURES_PER_BLINDING));
}

/// Runs `sign` with this thread's signing context, blinded with fresh OS randomness when new
/// and every [`SIGNATURES_PER_BLINDING`] uses.
pub(crate) fn with_signing_context<T>(sign: impl FnOnce(&Secp256k1<SignOnly>) -> T) -> T {
    SIGNING.with(|cell| {
        let mut context = cell.borrow_mut();
        if context.1 >= SIGNATURES_PER_BLINDING {
            context.0.seeded_randomize(&rand::random());
            context.1 = 0;
        }
        context.1 += 1;
        sign(&context.0)
    })
}

static VERIFYING: LazyLock<Secp256k1<VerifyOnly>> = LazyLock::new(Secp256k1::verification_only);

/// The 65-byte compact recoverable signature of `message` (header ‖ r ‖ s).
pub fn sign_message(key: &SigningKey, message: &[u8]) -> [u8; 65] {
    let digest = Message::from_digest(message_digest(message));
    let signature =
        with_signing_context(|context| context.sign_ecdsa_recoverable(digest, key.secret_key()));
    let (recovery_id, rs) = signature.serialize_compact();
    let mut out = [0u8; 65];
    // The recovery id is 0..=3.
    out[0] = COMPRESSED_HEADER_BASE + i32::from(recovery_id) as u8;
    out[1..].copy_from_slice(&rs);
    out
}

/// [`sign_message`] as 130 lowercase hex characters — the `signature` field of signPayload.
pub fn sign_message_hex(key: &SigningKey, message: &[u8]) -> String {
    hex::encode(sign_message(key, message))
}

/// Why a signature does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("signature must be 65 bytes of hex (130 characters)")]
    Malformed,
    #[error("signature header byte {0} is not a compressed-key header (31..=34)")]
    BadHeader(u8),
    #[error("no public key can be recovered from this signature")]
    Unrecoverable,
    #[error("signature was made by a different key")]
    WrongKey,
}

/// Recovers the compressed public key that produced `signature_hex` over `message`.
pub fn recover_public_key(message: &[u8], signature_hex: &str) -> Result<PublicKey, VerifyError> {
    let bytes = hex::decode(signature_hex).map_err(|_| VerifyError::Malformed)?;
    let bytes: [u8; 65] = bytes.try_into().map_err(|_| VerifyError::Malformed)?;
    let header = bytes[0];
    if !(COMPRESSED_HEADER_BASE..COMPRESSED_HEADER_BASE + 4).contains(&header) {
        return Err(VerifyError::BadHeader(header));
    }
    let recovery_id = RecoveryId::try_from(i32::from(header - COMPRESSED_HEADER_BASE))
        .map_err(|_| VerifyError::BadHeader(header))?;
    let signature = RecoverableSignature::from_compact(&bytes[1..], recovery_id)
        .map_err(|_| VerifyError::Malformed)?;
    VERIFYING
        .recover_ecdsa(Message::from_digest(message_digest(message)), &signature)
        .map_err(|_| VerifyError::Unrecoverable)
}

/// Checks that `signature_hex` is a signature of `message` by `public_key`.
pub fn verify_message(
    message: &[u8],
    signature_hex: &str,
    public_key: &PublicKey,
) -> Result<(), VerifyError> {
    if recover_public_key(message, signature_hex)? == *public_key {
        Ok(())
    } else {
        Err(VerifyError::WrongKey)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::keys::xprv::test_fixtures::SPEC_TEST_XPRV as SPEC_XPRV;

    #[test]
    fn spec_known_answers() {
        let key = SigningKey::from_xprv(SPEC_XPRV).unwrap();
        let cases: [(&str, &str, &str); 4] = [
            (
                r#"{"this":{"is":{"a":"payload"}}}"#,
                "3aa5548161bbb90a99f9d4a1479c6735f0f62c3feae34940ad7ab437848fd29c",
                "1fa61da37948435e8f870cec81ad47d336837b64a0512283ed845cccd2bb9287dc1b6c605ebd5d37fc1a851690bce619b6fc345c86a8c51c97a6b69a3bf47decb9",
            ),
            (
                "hello",
                "cf0447ec85f0ce7150a257db32ebfcb7523dae17c36dbd1be598779fec0484f4",
                "20620cb66122c3c6b1df0d2373aa6449310ba5085d90a3916b1d0ed1599701078c50d4fa87fe22e87d2ee238d034bfdeee13b5255ad1472584f87fff1b2a5d88bc",
            ),
            (
                "",
                "80e795d4a4caadd7047af389d9f7f220562feb6196032e2131e10563352c4bcc",
                "203bfb6e1cdc914097713ece0e7daf21e3f620960ad44b587eb98b6d710d80462c4ef53c85d4c4fa126453a7bb565a0d21db2b9e3de2f468bb8317a0563e23bcee",
            ),
            (
                "héllo ✓",
                "ddf518f8e0e50e764db1eef7611a8640ad188fa76aa7c26b9c274c9c4083336f",
                "209fd7eee792d1ba0c19abf9f444c9067577855cd6779bd0848be644c42c7df3993706a2ec25b188e29f7bd25d745d7698758b400c9f74007024aef044eb9fb1a7",
            ),
        ];
        for (message, digest, signature) in cases {
            assert_eq!(
                hex::encode(message_digest(message.as_bytes())),
                digest,
                "{message}"
            );
            assert_eq!(
                sign_message_hex(&key, message.as_bytes()),
                signature,
                "{message}"
            );
            verify_message(message.as_bytes(), signature, &key.public_key()).unwrap();
        }
    }

    #[test]
    fn blinding_never_changes_a_signature() {
        // Across several re-blindings of this thread's context (and on a fresh thread, with its
        // own context), the spec's known answer comes out every time.
        let expected = "20620cb66122c3c6b1df0d2373aa6449310ba5085d90a3916b1d0ed1599701078c50d4fa87fe22e87d2ee238d034bfdeee13b5255ad1472584f87fff1b2a5d88bc";
        let key = SigningKey::from_xprv(SPEC_XPRV).unwrap();
        for _ in 0..SIGNATURES_PER_BLINDING * 3 + 1 {
            assert_eq!(sign_message_hex(&key, b"hello"), expected);
        }
        let on_another_thread = std::thread::spawn(move || sign_message_hex(&key, b"hello"));
        assert_eq!(on_another_thread.join().unwrap(), expected);
    }

    #[test]
    fn compact_size_boundaries() {
        let mut buf = [0u8; 9];
        assert_eq!(compact_size(252, &mut buf), 1);
        assert_eq!(buf[0], 252);
        assert_eq!(compact_size(253, &mut buf), 3);
        assert_eq!(&buf[..3], &[0xfd, 253, 0]);
        assert_eq!(compact_size(65535, &mut buf), 3);
        assert_eq!(&buf[..3], &[0xfd, 0xff, 0xff]);
        assert_eq!(compact_size(65536, &mut buf), 5);
        assert_eq!(&buf[..5], &[0xfe, 0, 0, 1, 0]);
    }

    #[test]
    fn verify_rejects_tampering() {
        let key = SigningKey::from_xprv(SPEC_XPRV).unwrap();
        let signature = sign_message_hex(&key, b"hello");
        assert_eq!(
            verify_message(b"hellp", &signature, &key.public_key()),
            Err(VerifyError::WrongKey)
        );
        assert_eq!(
            verify_message(b"hello", &signature[..128], &key.public_key()),
            Err(VerifyError::Malformed)
        );
        let mut bad_header = signature.clone();
        bad_header.replace_range(0..2, "1b");
        assert_eq!(
            verify_message(b"hello", &bad_header, &key.public_key()),
            Err(VerifyError::BadHeader(0x1b))
        );
    }
}
