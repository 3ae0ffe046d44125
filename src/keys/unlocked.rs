//! Unlocked keys: an envelope is decrypted once, the key is held (zeroized on drop) with a keyed
//! hash of the passphrase that unlocked it, and later requests are checked against that hash in
//! constant time — the KDF (PBKDF2, Argon2id) is never run again for a key already unlocked.
//!
//! [`KeySlot`] is one envelope's lock: concurrent requests for a locked key wait for one
//! derivation instead of running N. [`KeyCache`] holds the slots of normal mode, keyed by
//! (keychain id, envelope), bounded in size, dropping keys idle for longer than its TTL.
//! (Signer mode keeps one slot per key-file entry: [`crate::keys::keystore`].)

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::error::ApiError;
use crate::keys::xprv::SigningKey;

/// Keyed hashes of passphrases under a per-process random key that never leaves memory.
pub struct PassphraseVerifier {
    key: Zeroizing<[u8; 32]>,
}

impl Default for PassphraseVerifier {
    fn default() -> Self {
        PassphraseVerifier {
            key: Zeroizing::new(rand::random()),
        }
    }
}

impl std::fmt::Debug for PassphraseVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PassphraseVerifier([REDACTED])")
    }
}

/// HMAC-SHA256 of a passphrase under the process's verifier key.
pub struct PassphraseTag(Zeroizing<[u8; 32]>);

impl PassphraseVerifier {
    pub fn tag(&self, passphrase: &str) -> PassphraseTag {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key[..])
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(passphrase.as_bytes());
        PassphraseTag(Zeroizing::new(mac.finalize().into_bytes().into()))
    }
}

/// A decrypted key and the tag of the passphrase that decrypted it.
pub struct UnlockedKey {
    key: SigningKey,
    tag: PassphraseTag,
}

impl UnlockedKey {
    pub fn key(&self) -> &SigningKey {
        &self.key
    }

    /// Whether `tag` is the passphrase that unlocked this key (constant time).
    fn accepts(&self, tag: &PassphraseTag) -> bool {
        bool::from(self.tag.0.ct_eq(&tag.0[..]))
    }
}

/// Whether a key was already unlocked or had to be derived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unlock {
    /// The passphrase matched the unlocked key: no KDF ran.
    Hit,
    /// The key was locked: the KDF ran (once, for every request that waited).
    Derived,
}

/// One envelope's key: locked until a passphrase decrypts it, then unlocked for good.
#[derive(Default)]
pub struct KeySlot {
    unlocked: tokio::sync::Mutex<Option<Arc<UnlockedKey>>>,
}

impl KeySlot {
    /// The key for `tag`'s passphrase. Unlocked: a constant-time comparison — any other
    /// passphrase is wrong (only one can pass the envelope's AEAD tag): 401. Locked: `derive`
    /// runs (other requests for this slot wait for it) and on success the key stays unlocked.
    pub async fn unlock<F, Fut>(
        &self,
        tag: PassphraseTag,
        derive: F,
    ) -> Result<(Arc<UnlockedKey>, Unlock), ApiError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<SigningKey, ApiError>>,
    {
        let mut unlocked = self.unlocked.lock().await;
        if let Some(key) = unlocked.as_ref() {
            return if key.accepts(&tag) {
                Ok((key.clone(), Unlock::Hit))
            } else {
                Err(ApiError::incorrect_passphrase())
            };
        }
        let key = Arc::new(UnlockedKey {
            key: derive().await?,
            tag,
        });
        *unlocked = Some(key.clone());
        Ok((key, Unlock::Derived))
    }
}

/// Settings of the normal-mode key cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyCacheSettings {
    /// A key unused for this long is dropped; zero disables the cache (every request derives
    /// its key, as Express does).
    pub idle_ttl: Duration,
    /// At most this many keys are held; the least recently used goes first.
    pub capacity: usize,
}

impl Default for KeyCacheSettings {
    fn default() -> Self {
        KeyCacheSettings {
            idle_ttl: Duration::from_secs(900),
            capacity: 1024,
        }
    }
}

struct CachedSlot {
    slot: Arc<KeySlot>,
    /// Milliseconds since the cache's epoch.
    last_used: AtomicU64,
}

/// Normal mode's unlocked keys, per (keychain id, envelope): a changed envelope (a new
/// passphrase, say) is a different slot.
pub struct KeyCache {
    settings: KeyCacheSettings,
    verifier: PassphraseVerifier,
    slots: Mutex<HashMap<[u8; 32], CachedSlot>>,
    epoch: Instant,
}

impl std::fmt::Debug for KeyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyCache")
            .field("settings", &self.settings)
            .field("keys", &self.len())
            .finish()
    }
}

impl KeyCache {
    pub fn new(settings: KeyCacheSettings) -> Self {
        KeyCache {
            settings,
            verifier: PassphraseVerifier::default(),
            slots: Mutex::new(HashMap::new()),
            epoch: Instant::now(),
        }
    }

    pub fn settings(&self) -> KeyCacheSettings {
        self.settings
    }

    pub fn enabled(&self) -> bool {
        !self.settings.idle_ttl.is_zero() && self.settings.capacity > 0
    }

    pub fn tag(&self, passphrase: &str) -> PassphraseTag {
        self.verifier.tag(passphrase)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<[u8; 32], CachedSlot>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn idle_ms(&self) -> u64 {
        self.settings.idle_ttl.as_millis() as u64
    }

    /// How many keys (unlocked or being unlocked) are held.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The slot of (`keychain_id`, `envelope`): the held one unless it has been idle too long,
    /// else a new locked one (evicting expired keys, then the least recently used, when full).
    /// `None` when the cache is disabled.
    pub fn slot(&self, keychain_id: &str, envelope: &str) -> Option<Arc<KeySlot>> {
        if !self.enabled() {
            return None;
        }
        let mut id = Sha256::new();
        id.update((keychain_id.len() as u64).to_be_bytes());
        id.update(keychain_id.as_bytes());
        id.update(envelope.as_bytes());
        let id: [u8; 32] = id.finalize().into();
        let now = self.now_ms();
        let idle = self.idle_ms();
        let mut slots = self.lock();
        if let Some(cached) = slots.get(&id)
            && now.saturating_sub(cached.last_used.load(Ordering::Relaxed)) < idle
        {
            cached.last_used.store(now, Ordering::Relaxed);
            return Some(cached.slot.clone());
        }
        slots.remove(&id);
        if slots.len() >= self.settings.capacity {
            slots.retain(|_, c| now.saturating_sub(c.last_used.load(Ordering::Relaxed)) < idle);
        }
        if slots.len() >= self.settings.capacity
            && let Some(oldest) = slots
                .iter()
                .min_by_key(|(_, c)| c.last_used.load(Ordering::Relaxed))
                .map(|(k, _)| *k)
        {
            slots.remove(&oldest);
        }
        let slot = Arc::new(KeySlot::default());
        slots.insert(
            id,
            CachedSlot {
                slot: slot.clone(),
                last_used: AtomicU64::new(now),
            },
        );
        Some(slot)
    }

    /// Drops every key idle for longer than the TTL; returns how many went.
    pub fn sweep(&self) -> usize {
        let now = self.now_ms();
        let idle = self.idle_ms();
        let mut slots = self.lock();
        let before = slots.len();
        slots.retain(|_, c| now.saturating_sub(c.last_used.load(Ordering::Relaxed)) < idle);
        before - slots.len()
    }

    /// Sweeps expired keys every half TTL (at least every second) until the cache is dropped,
    /// so an unused key does not stay in memory waiting for the next request.
    pub fn start_sweeper(self: &Arc<Self>) {
        if !self.enabled() {
            return;
        }
        let period = (self.settings.idle_ttl / 2).max(Duration::from_secs(1));
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(period);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                let Some(cache) = weak.upgrade() else { break };
                let dropped = cache.sweep();
                if dropped > 0 {
                    tracing::debug!(dropped, "idle unlocked keys dropped");
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::xprv::test_fixtures::SPEC_TEST_XPRV;
    use std::sync::atomic::AtomicUsize;

    fn key() -> SigningKey {
        SigningKey::from_xprv(SPEC_TEST_XPRV).unwrap()
    }

    #[tokio::test]
    async fn a_slot_derives_once_then_checks_the_passphrase() {
        let verifier = PassphraseVerifier::default();
        let slot = KeySlot::default();
        let runs = AtomicUsize::new(0);
        let derive = || async {
            runs.fetch_add(1, Ordering::SeqCst);
            Ok(key())
        };
        let (_, first) = slot.unlock(verifier.tag("right"), derive).await.unwrap();
        assert_eq!(first, Unlock::Derived);
        let (_, second) = slot.unlock(verifier.tag("right"), derive).await.unwrap();
        assert_eq!(second, Unlock::Hit);
        let wrong = slot
            .unlock(verifier.tag("wrong"), derive)
            .await
            .err()
            .unwrap();
        assert_eq!(wrong.status.as_u16(), 401);
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_failed_derivation_leaves_the_slot_locked() {
        let verifier = PassphraseVerifier::default();
        let slot = KeySlot::default();
        let failed = slot
            .unlock(verifier.tag("wrong"), || async {
                Err(ApiError::incorrect_passphrase())
            })
            .await;
        assert!(failed.is_err());
        let (_, outcome) = slot
            .unlock(verifier.tag("right"), || async { Ok(key()) })
            .await
            .unwrap();
        assert_eq!(outcome, Unlock::Derived);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_requests_wait_for_one_derivation() {
        let cache = Arc::new(KeyCache::new(KeyCacheSettings::default()));
        let runs = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let (cache, runs) = (cache.clone(), runs.clone());
            tasks.push(tokio::spawn(async move {
                let slot = cache.slot("k1", "envelope").unwrap();
                slot.unlock(cache.tag("pw"), || async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Ok(key())
                })
                .await
                .map(|(_, outcome)| outcome)
            }));
        }
        let mut derived = 0;
        for task in tasks {
            if task.await.unwrap().unwrap() == Unlock::Derived {
                derived += 1;
            }
        }
        assert_eq!((derived, runs.load(Ordering::SeqCst)), (1, 1));
    }

    #[test]
    fn slots_are_per_keychain_and_envelope() {
        let cache = KeyCache::new(KeyCacheSettings::default());
        let a = cache.slot("k1", "e1").unwrap();
        assert!(Arc::ptr_eq(&a, &cache.slot("k1", "e1").unwrap()));
        assert!(!Arc::ptr_eq(&a, &cache.slot("k1", "e2").unwrap()));
        assert!(!Arc::ptr_eq(&a, &cache.slot("k2", "e1").unwrap()));
        // The id is length-prefixed: ("k1e", "1") is not ("k1", "e1").
        assert!(!Arc::ptr_eq(&a, &cache.slot("k1e", "1").unwrap()));
        assert_eq!(cache.len(), 4);
    }

    #[test]
    fn disabled_cache_holds_nothing() {
        for settings in [
            KeyCacheSettings {
                idle_ttl: Duration::ZERO,
                capacity: 10,
            },
            KeyCacheSettings {
                idle_ttl: Duration::from_secs(60),
                capacity: 0,
            },
        ] {
            let cache = KeyCache::new(settings);
            assert!(cache.slot("k", "e").is_none());
            assert!(cache.is_empty());
        }
    }

    #[test]
    fn capacity_evicts_the_least_recently_used() {
        let cache = KeyCache::new(KeyCacheSettings {
            idle_ttl: Duration::from_secs(60),
            capacity: 2,
        });
        let first = cache.slot("k1", "e").unwrap();
        std::thread::sleep(Duration::from_millis(5));
        let second = cache.slot("k2", "e").unwrap();
        std::thread::sleep(Duration::from_millis(5));
        // Touch k1: k2 is now the least recently used.
        assert!(Arc::ptr_eq(&first, &cache.slot("k1", "e").unwrap()));
        std::thread::sleep(Duration::from_millis(5));
        cache.slot("k3", "e").unwrap();
        assert_eq!(cache.len(), 2);
        assert!(Arc::ptr_eq(&first, &cache.slot("k1", "e").unwrap()));
        assert!(!Arc::ptr_eq(&second, &cache.slot("k2", "e").unwrap()));
    }

    #[test]
    fn idle_keys_expire() {
        let cache = KeyCache::new(KeyCacheSettings {
            idle_ttl: Duration::from_millis(30),
            capacity: 10,
        });
        let first = cache.slot("k1", "e").unwrap();
        assert_eq!(cache.sweep(), 0);
        std::thread::sleep(Duration::from_millis(60));
        assert!(!Arc::ptr_eq(&first, &cache.slot("k1", "e").unwrap()));
        cache.slot("k2", "e").unwrap();
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(cache.sweep(), 2);
        assert!(cache.is_empty());
    }

    #[test]
    fn debug_shows_no_secret() {
        let verifier = PassphraseVerifier::default();
        assert_eq!(format!("{verifier:?}"), "PassphraseVerifier([REDACTED])");
    }
}
