//! Where signing keys come from: encrypted envelopes ([`envelope`]), extended keys ([`xprv`]),
//! the `WALLET_<walletId>_PASSPHRASE` variables ([`WalletPassphrases`]), the bounded pool that
//! runs the slow key-derivation functions off the async executor ([`KdfPool`]) and the keys held
//! unlocked so that they run once ([`unlocked`]).

pub mod envelope;
pub mod keystore;
pub mod unlocked;
pub mod xprv;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::Semaphore;
use zeroize::Zeroizing;

use crate::error::ApiError;
use envelope::{DecryptError, DecryptErrorKind};
use xprv::SigningKey;

/// The `WALLET_<walletId>_PASSPHRASE` values of the process environment, read once at startup
/// (the environment of a running process cannot change from outside). Zeroized on drop.
#[derive(Default, Clone)]
pub struct WalletPassphrases(Arc<HashMap<String, Zeroizing<String>>>);

impl std::fmt::Debug for WalletPassphrases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WalletPassphrases({} wallets, [REDACTED])", self.0.len())
    }
}

impl WalletPassphrases {
    pub fn new(by_wallet_id: HashMap<String, Zeroizing<String>>) -> Self {
        WalletPassphrases(Arc::new(by_wallet_id))
    }

    /// `process.env["WALLET_" + walletId + "_PASSPHRASE"]`.
    pub fn get(&self, wallet_id: &str) -> Option<&str> {
        self.0.get(wallet_id).map(|p| p.as_str())
    }
}

/// Runs password-based key derivation (PBKDF2, Argon2id) on blocking threads, at most `permits`
/// at a time, so a burst of slow decrypts never stalls the executor or exhausts memory
/// (each Argon2id v2 derivation holds 64 MiB).
#[derive(Clone, Debug)]
pub struct KdfPool {
    permits: Arc<Semaphore>,
    runs: Arc<AtomicU64>,
}

impl KdfPool {
    pub fn new(permits: usize) -> Self {
        KdfPool {
            permits: Arc::new(Semaphore::new(permits.max(1))),
            runs: Arc::new(AtomicU64::new(0)),
        }
    }

    /// How many derivations (decrypt/encrypt jobs) have run.
    pub fn runs(&self) -> u64 {
        self.runs.load(Ordering::Relaxed)
    }

    /// Runs `work` on a blocking thread once a permit is free.
    pub async fn run<T, F>(&self, work: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| ApiError::internal("key derivation pool is shut down"))?;
        self.runs.fetch_add(1, Ordering::Relaxed);
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|_| ApiError::internal("key derivation failed unexpectedly"))
    }

    /// Decrypts an envelope with the SDK's semantics (see [`envelope::decrypt`]).
    pub async fn decrypt(
        &self,
        passphrase: Zeroizing<String>,
        envelope: String,
    ) -> Result<Zeroizing<String>, ApiError> {
        self.run(move || envelope::decrypt(&passphrase, &envelope))
            .await?
            .map_err(decrypt_error)
    }
}

/// A decrypt failure as signPayload reports it: a wrong passphrase is 401
/// `IncorrectPasswordError` (spec §11.3); anything else keeps the SDK's message (500).
pub fn decrypt_error(error: DecryptError) -> ApiError {
    match error.kind() {
        DecryptErrorKind::WrongPassphrase => ApiError::incorrect_passphrase(),
        _ => ApiError::internal(error.message()),
    }
}

/// Parses the decrypted `xprv` into a signing key (500 with the `bip32` message if malformed).
pub fn signing_key(xprv: &str) -> Result<SigningKey, ApiError> {
    SigningKey::from_xprv(xprv).map_err(|e| ApiError::internal(e.to_string()))
}
