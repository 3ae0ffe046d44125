//! The signer-mode key file (spec §1.5, §1.6, §11.9): `{"<walletId>": "<envelope>", …}`.
//!
//! Unlike Express, which re-reads and re-parses the file and re-runs the KDF on every request,
//! the file is parsed once, held in memory, and reloaded atomically when it changes on disk (a
//! broken new file keeps the last good one). Each wallet's key is unlocked once: after the first
//! successful decryption the key stays in memory (zeroized on drop) together with a keyed hash of
//! the passphrase that unlocked it, so later requests are checked in constant time without
//! running PBKDF2/Argon2id again. Keys whose passphrase is in the environment are unlocked at
//! startup and after every reload.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::error::ApiError;
use crate::js_json::{self, JsValue};
use crate::keys::envelope::{self, DecryptErrorKind};
use crate::keys::unlocked::{KeySlot, PassphraseVerifier, UnlockedKey};
use crate::keys::xprv::SigningKey;
use crate::keys::{KdfPool, WalletPassphrases};

/// A parse failure of the key file, worded like Node's (`ENOENT: …`, V8 `SyntaxError` texts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyFileError(pub String);

/// Node's message for a failed `fs.readFile(path)`.
fn read_error(path: &Path, error: &std::io::Error) -> KeyFileError {
    let path = path.display();
    KeyFileError(match error.kind() {
        std::io::ErrorKind::NotFound => format!("ENOENT: no such file or directory, open '{path}'"),
        std::io::ErrorKind::PermissionDenied => format!("EACCES: permission denied, open '{path}'"),
        std::io::ErrorKind::IsADirectory => {
            "EISDIR: illegal operation on a directory, read".to_string()
        }
        _ => format!("{error}, open '{path}'"),
    })
}

/// One wallet of the key file.
pub struct KeyEntry {
    /// The file's value for this wallet (normally the envelope string).
    envelope: JsValue,
    /// The key, once a passphrase has decrypted it (one derivation for concurrent requests).
    slot: KeySlot,
}

/// The wallets of one version of the key file.
#[derive(Default)]
struct KeySet {
    entries: HashMap<String, Arc<KeyEntry>>,
    fingerprint: Option<Fingerprint>,
}

/// What identifies a version of the file on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fingerprint {
    modified: Option<SystemTime>,
    len: u64,
    digest: [u8; 32],
}

/// The signer's keys: the key file in memory, reloaded on change.
pub struct KeyStore {
    path: PathBuf,
    current: RwLock<Arc<KeySet>>,
    verifier: PassphraseVerifier,
    passphrases: WalletPassphrases,
    kdf: KdfPool,
}

impl std::fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// Parses key-file text like Express (`JSON.parse` of the UTF-8 file): any JSON is accepted, only
/// an object has wallets.
pub fn parse_key_file(bytes: &[u8]) -> Result<HashMap<String, JsValue>, KeyFileError> {
    // `fs.readFile(path, 'utf8')` then `JSON.parse`.
    let text = String::from_utf8_lossy(bytes);
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let value = js_json::parse(text).map_err(|e| KeyFileError(e.to_string()))?;
    // Any JSON is accepted; only an object has wallets.
    Ok(value
        .as_object()
        .map(|object| {
            object
                .iter()
                .map(|(k, v)| (k.to_utf8_lossy().into_owned(), v.clone()))
                .collect()
        })
        .unwrap_or_default())
}

fn read_key_file(path: &Path) -> Result<(HashMap<String, JsValue>, Fingerprint), KeyFileError> {
    let metadata = std::fs::metadata(path).map_err(|e| read_error(path, &e))?;
    let bytes = Zeroizing::new(std::fs::read(path).map_err(|e| read_error(path, &e))?);
    let entries = parse_key_file(&bytes)?;
    let fingerprint = Fingerprint {
        modified: metadata.modified().ok(),
        len: bytes.len() as u64,
        digest: Sha256::digest(&bytes[..]).into(),
    };
    Ok((entries, fingerprint))
}

impl KeyStore {
    /// Loads the key file (startup check §7.3 step 8: `Failed to parse <path> - <reason>`).
    pub fn open(path: &Path, passphrases: WalletPassphrases, kdf: KdfPool) -> Result<Self, String> {
        let (entries, fingerprint) = read_key_file(path)
            .map_err(|e| format!("Failed to parse {} - {}", path.display(), e.0))?;
        let store = KeyStore {
            path: path.to_path_buf(),
            current: RwLock::new(Arc::new(KeySet::default())),
            verifier: PassphraseVerifier::default(),
            passphrases,
            kdf,
        };
        store.install(entries, fingerprint);
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn snapshot(&self) -> Arc<KeySet> {
        self.current
            .read()
            .map(|c| c.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Number of wallets in the current key file.
    pub fn len(&self) -> usize {
        self.snapshot().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Swaps in a new version; unchanged wallets keep their unlocked keys.
    fn install(&self, entries: HashMap<String, JsValue>, fingerprint: Fingerprint) {
        let previous = self.snapshot();
        let entries = entries
            .into_iter()
            .map(|(wallet_id, envelope)| {
                let entry = match previous.entries.get(&wallet_id) {
                    Some(existing) if existing.envelope == envelope => existing.clone(),
                    _ => Arc::new(KeyEntry {
                        envelope,
                        slot: KeySlot::default(),
                    }),
                };
                (wallet_id, entry)
            })
            .collect();
        let next = Arc::new(KeySet {
            entries,
            fingerprint: Some(fingerprint),
        });
        match self.current.write() {
            Ok(mut current) => *current = next,
            Err(poisoned) => *poisoned.into_inner() = next,
        }
    }

    /// Re-reads the file if it changed. Returns `Ok(true)` when a new version was installed; a
    /// broken file is reported and the previous version stays.
    pub fn reload_if_changed(&self) -> Result<bool, String> {
        let known = self.snapshot().fingerprint.clone();
        let metadata = std::fs::metadata(&self.path).map_err(|e| read_error(&self.path, &e).0)?;
        if let Some(known) = &known
            && known.modified == metadata.modified().ok()
            && known.len == metadata.len()
        {
            return Ok(false);
        }
        let (entries, fingerprint) = read_key_file(&self.path).map_err(|e| e.0)?;
        if known
            .as_ref()
            .is_some_and(|k| k.digest == fingerprint.digest)
        {
            // Touched but identical: just remember the new timestamp.
            let current = self.snapshot();
            let entries = current
                .entries
                .iter()
                .map(|(k, v)| (k.clone(), v.envelope.clone()))
                .collect();
            self.install(entries, fingerprint);
            return Ok(false);
        }
        self.install(entries, fingerprint);
        Ok(true)
    }

    /// Unlocks, off the executor, every wallet whose passphrase is in the environment and that
    /// is still locked. Returns (unlocked, failed) counts.
    pub async fn unlock_from_environment(self: &Arc<Self>) -> (usize, usize) {
        let snapshot = self.snapshot();
        let mut jobs = tokio::task::JoinSet::new();
        for (wallet_id, entry) in &snapshot.entries {
            let Some(passphrase) = self.passphrases.get(wallet_id) else {
                continue;
            };
            let (store, entry, wallet_id) = (self.clone(), entry.clone(), wallet_id.clone());
            let passphrase = Zeroizing::new(passphrase.to_string());
            // The KDF pool bounds how many run at once.
            jobs.spawn(async move {
                let result = store.unlock_entry(&entry, &passphrase).await;
                if let Err(error) = &result {
                    tracing::warn!(wallet = %wallet_id, error = %error.message_text(), "could not unlock key from WALLET_<id>_PASSPHRASE");
                }
                result.is_ok()
            });
        }
        let (mut unlocked, mut failed) = (0, 0);
        while let Some(outcome) = jobs.join_next().await {
            if outcome.unwrap_or(false) {
                unlocked += 1;
            } else {
                failed += 1;
            }
        }
        (unlocked, failed)
    }

    /// Spec §1.5 steps 4–5 for `wallet_id` with `passphrase`: the key, unlocked (at most one
    /// derivation per wallet, then constant-time passphrase checks).
    pub async fn unlock(
        &self,
        wallet_id: &str,
        passphrase: &str,
    ) -> Result<Arc<UnlockedKey>, ApiError> {
        let snapshot = self.snapshot();
        let entry = snapshot
            .entries
            .get(wallet_id)
            .ok_or_else(|| ApiError::internal(missing_wallet(wallet_id, &self.path)))?;
        self.unlock_entry(entry, passphrase).await
    }

    async fn unlock_entry(
        &self,
        entry: &KeyEntry,
        passphrase: &str,
    ) -> Result<Arc<UnlockedKey>, ApiError> {
        let derive = || async {
            let JsValue::String(envelope) = &entry.envelope else {
                // A non-string entry fails the SDK's parameter check: not one of the 500
                // messages.
                return Err(ApiError::incorrect_passphrase());
            };
            let envelope = envelope.to_utf8_lossy().into_owned();
            let passphrase = Zeroizing::new(passphrase.to_string());
            let decrypted = self
                .kdf
                .run(move || envelope::decrypt(&passphrase, &envelope))
                .await?;
            let xprv = decrypted.map_err(signer_decrypt_error)?;
            SigningKey::from_xprv(&xprv).map_err(|e| ApiError::internal(e.to_string()))
        };
        let (key, _) = entry
            .slot
            .unlock(self.verifier.tag(passphrase), derive)
            .await?;
        Ok(key)
    }

    /// Polls the file for changes every `interval` until the store is dropped, unlocking keys from
    /// the environment after each reload.
    pub fn watch(self: &Arc<Self>, interval: Duration) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticker.tick().await;
            let mut last_error: Option<String> = None;
            loop {
                ticker.tick().await;
                let Some(store) = weak.upgrade() else { break };
                let path = store.path.clone();
                match tokio::task::spawn_blocking({
                    let store = store.clone();
                    move || store.reload_if_changed()
                })
                .await
                {
                    Ok(Ok(true)) => {
                        last_error = None;
                        tracing::info!(path = %path.display(), wallets = store.len(), "key file reloaded");
                        store.unlock_from_environment().await;
                    }
                    Ok(Ok(false)) => last_error = None,
                    Ok(Err(error)) => {
                        if last_error.as_ref() != Some(&error) {
                            tracing::warn!(path = %path.display(), %error, wallets = store.len(), "key file changed but cannot be used; keeping the previous version");
                            last_error = Some(error);
                        }
                    }
                    Err(_) => {}
                }
            }
        })
    }
}

/// Express's message for a wallet the key file does not have.
pub fn missing_wallet(wallet_id: &str, path: &Path) -> String {
    format!(
        "Could not find a field for walletId: {wallet_id} in {}",
        path.display()
    )
}

/// Signer mode's decrypt error mapping (spec §1.5 step 5, §11.3): envelope format problems are
/// 500 `Error when trying to decrypt private key: …`; every other failure is 401.
fn signer_decrypt_error(error: envelope::DecryptError) -> ApiError {
    let message = error.message();
    let lower = message.to_ascii_lowercase();
    let format_error = [
        "not valid json",
        "unknown envelope version",
        "salt must be",
        "iv must be",
    ]
    .iter()
    .any(|needle| lower.contains(needle));
    if format_error {
        ApiError::internal(format!(
            "Error when trying to decrypt private key: {message}"
        ))
    } else {
        debug_assert!(error.kind() != DecryptErrorKind::NotJson);
        ApiError::incorrect_passphrase()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_parse_errors_read_like_node() {
        assert_eq!(
            parse_key_file(b"").unwrap_err().0,
            "Unexpected end of JSON input"
        );
        assert!(parse_key_file(b"[1,2]").unwrap().is_empty());
        let entries = parse_key_file(br#"{"w1":"{}","w1":"x","w2":5}"#).unwrap();
        assert_eq!(entries.get("w1"), Some(&JsValue::from("x")));
        assert_eq!(entries.get("w2"), Some(&JsValue::Number(5.0)));
        let missing = read_key_file(Path::new("/nonexistent/keys.json")).unwrap_err();
        assert_eq!(
            missing.0,
            "ENOENT: no such file or directory, open '/nonexistent/keys.json'"
        );
    }

    #[test]
    fn decrypt_errors_map_like_signer_mode() {
        let to_status =
            |input: &str| signer_decrypt_error(envelope::decrypt("pw", input).unwrap_err());
        let not_json = to_status("invalid");
        assert_eq!(not_json.status.as_u16(), 500);
        assert_eq!(
            not_json.message_text(),
            "Error when trying to decrypt private key: decrypt: ciphertext is not valid JSON"
        );
        assert_eq!(
            to_status(r#"{"v":3}"#).message_text(),
            "Error when trying to decrypt private key: decrypt: unknown envelope version 3"
        );
        // A malformed envelope that is not one of the four patterns is 401 (spec §1.5 step 5).
        assert_eq!(to_status(r#"{"v":2,"m":0}"#).status.as_u16(), 401);
    }
}
