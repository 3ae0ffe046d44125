//! BIP32 extended keys as the SDK reads them for OFC signing (spec §2): a base58check `xprv` on
//! the Bitcoin mainnet version bytes whose OWN private key signs (no child derivation), and the
//! matching `xpub` for verification.
//!
//! Pure: no I/O. Private material is zeroized when dropped and never printed by `Debug`.

use std::fmt;

use hmac::{Hmac, KeyInit, Mac};
use secp256k1::{PublicKey, SecretKey};
use sha2::Sha512;
use zeroize::Zeroizing;

/// Version bytes of a mainnet extended private key (`xprv`).
const XPRV_VERSION: [u8; 4] = [0x04, 0x88, 0xad, 0xe4];
/// Version bytes of a mainnet extended public key (`xpub`).
const XPUB_VERSION: [u8; 4] = [0x04, 0x88, 0xb2, 0x1e];
/// Serialized length of an extended key before the checksum.
const EXTENDED_KEY_LEN: usize = 78;

/// Why an extended key string was rejected; the texts follow the `bip32` npm package.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("Invalid checksum")]
    Checksum,
    #[error("Invalid buffer length")]
    Length,
    #[error("Invalid network version")]
    Version,
    #[error("Invalid parent fingerprint")]
    ParentFingerprint,
    #[error("Invalid index")]
    Index,
    #[error("Invalid private key")]
    PrivateKeyPrefix,
    #[error("Private key not in range [1, n)")]
    PrivateKeyRange,
    #[error("Expected property \"Q\" of type Point, got Buffer")]
    PublicKey,
}

/// The private key an `xprv` carries, ready to sign. Zeroized on drop.
pub struct SigningKey {
    secret: SecretKey,
}

impl SigningKey {
    /// Parses a base58check `xprv` (spec §2) and takes its own 32-byte private key.
    pub fn from_xprv(xprv: &str) -> Result<Self, KeyError> {
        let raw = decode_extended(xprv)?;
        if raw[..4] != XPRV_VERSION {
            return Err(KeyError::Version);
        }
        if raw[45] != 0 {
            return Err(KeyError::PrivateKeyPrefix);
        }
        let mut secret_bytes = Zeroizing::new([0u8; 32]);
        secret_bytes.copy_from_slice(&raw[46..78]);
        Self::from_secret_bytes(&secret_bytes)
    }

    /// A key from 32 raw secret bytes (must be in [1, n)).
    pub fn from_secret_bytes(bytes: &[u8; 32]) -> Result<Self, KeyError> {
        SecretKey::from_byte_array(*bytes)
            .map(|secret| SigningKey { secret })
            .map_err(|_| KeyError::PrivateKeyRange)
    }

    pub(crate) fn secret_key(&self) -> &SecretKey {
        &self.secret
    }

    /// The compressed public key of this private key.
    pub fn public_key(&self) -> PublicKey {
        crate::message_sign::with_signing_context(|context| {
            PublicKey::from_secret_key(context, &self.secret)
        })
    }
}

impl Drop for SigningKey {
    fn drop(&mut self) {
        self.secret.non_secure_erase();
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningKey([REDACTED])")
    }
}

/// The public key of a base58check `xpub` (also accepts an `xprv`, taking its public key).
pub fn public_key_from_extended(extended: &str) -> Result<PublicKey, KeyError> {
    let raw = decode_extended(extended)?;
    if raw[..4] == XPRV_VERSION {
        return SigningKey::from_xprv(extended).map(|key| key.public_key());
    }
    if raw[..4] != XPUB_VERSION {
        return Err(KeyError::Version);
    }
    PublicKey::from_slice(&raw[45..78]).map_err(|_| KeyError::PublicKey)
}

/// Decodes base58check and checks the structural rules the `bip32` package enforces.
fn decode_extended(text: &str) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    let raw = Zeroizing::new(
        bs58::decode(text)
            .with_check(None)
            .into_vec()
            .map_err(|_| KeyError::Checksum)?,
    );
    if raw.len() != EXTENDED_KEY_LEN {
        return Err(KeyError::Length);
    }
    let depth = raw[4];
    let parent_fingerprint = &raw[5..9];
    let index = &raw[9..13];
    if depth == 0 {
        if parent_fingerprint != [0, 0, 0, 0] {
            return Err(KeyError::ParentFingerprint);
        }
        if index != [0, 0, 0, 0] {
            return Err(KeyError::Index);
        }
    }
    Ok(raw)
}

/// A BIP32 master `xprv` derived from `seed` (HMAC-SHA512 keyed with `"Bitcoin seed"`), as
/// `bip32.fromSeed(seed).toBase58()` gives. Used for the demo / sandbox keys, which are generated
/// at runtime from a public seed and are never real keys.
pub fn master_xprv_from_seed(seed: &[u8]) -> Result<Zeroizing<String>, KeyError> {
    let mut mac =
        Hmac::<Sha512>::new_from_slice(b"Bitcoin seed").map_err(|_| KeyError::PrivateKeyRange)?;
    mac.update(seed);
    let output = Zeroizing::new(mac.finalize().into_bytes().to_vec());
    let mut secret = Zeroizing::new([0u8; 32]);
    secret.copy_from_slice(&output[..32]);
    // Reject an out-of-range key exactly as BIP32 does.
    SigningKey::from_secret_bytes(&secret)?;
    let mut raw = Zeroizing::new(Vec::with_capacity(EXTENDED_KEY_LEN));
    raw.extend_from_slice(&XPRV_VERSION);
    raw.extend_from_slice(&[0; 9]); // depth, parent fingerprint, child index
    raw.extend_from_slice(&output[32..64]); // chain code
    raw.push(0);
    raw.extend_from_slice(&secret[..]);
    Ok(Zeroizing::new(
        bs58::encode(&raw[..]).with_check().into_string(),
    ))
}

/// The `xpub` matching a master key made by [`master_xprv_from_seed`].
pub fn xpub_from_xprv(xprv: &str) -> Result<String, KeyError> {
    let raw = decode_extended(xprv)?;
    let key = SigningKey::from_xprv(xprv)?;
    let mut out = Vec::with_capacity(EXTENDED_KEY_LEN);
    out.extend_from_slice(&XPUB_VERSION);
    out.extend_from_slice(&raw[4..45]);
    out.extend_from_slice(&key.public_key().serialize());
    Ok(bs58::encode(out).with_check().into_string())
}

/// Test fixtures shared by the unit tests.
#[cfg(test)]
pub(crate) mod test_fixtures {
    /// TEST FIXTURE, NOT A REAL KEY: the public test key of BitGo Express's own unit tests
    /// (`test/unit/clientRoutes/signPayload.ts`; spec §9.3).
    pub const SPEC_TEST_XPRV: &str = "xprv9s21ZrQH143K3EuPWCBuqnWxydaQV6et9htQige4EswvcHKEzNmkVmwTwKoadyHzJYppuADB7Us7AbaNLToNvoFoSxuWqndQRYtnNy5DUY2";
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::test_fixtures::SPEC_TEST_XPRV as SPEC_XPRV;

    #[test]
    fn spec_key_material() {
        let key = SigningKey::from_xprv(SPEC_XPRV).unwrap();
        assert_eq!(
            hex::encode(key.public_key().serialize()),
            "0376be5a4ed0333a8edb9f6fd7d1bdd1805644e56cf51aa8d2b85edcdc66995f82"
        );
        assert_eq!(
            hex::encode(key.secret_key().secret_bytes()),
            "1d8f8aa06ee2b5894c5fc8a8b6c3596044b603c845affea2abe5f5f25422e243"
        );
        assert_eq!(format!("{key:?}"), "SigningKey([REDACTED])");
    }

    #[test]
    fn rejects_malformed_keys() {
        let mut corrupted = SPEC_XPRV.to_string();
        corrupted.replace_range(20..21, "A");
        assert_eq!(
            SigningKey::from_xprv(&corrupted).unwrap_err(),
            KeyError::Checksum
        );
        assert_eq!(
            SigningKey::from_xprv("not base58 0OIl").unwrap_err(),
            KeyError::Checksum
        );
        let short = bs58::encode([0u8; 10]).with_check().into_string();
        assert_eq!(SigningKey::from_xprv(&short).unwrap_err(), KeyError::Length);
        // An xpub is not an xprv.
        let xpub = xpub_from_xprv(SPEC_XPRV).unwrap();
        assert_eq!(SigningKey::from_xprv(&xpub).unwrap_err(), KeyError::Version);
        assert_eq!(
            public_key_from_extended(&xpub).unwrap(),
            SigningKey::from_xprv(SPEC_XPRV).unwrap().public_key()
        );
    }
}
