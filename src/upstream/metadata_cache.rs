//! Wallet and keychain documents from BitGo, kept for a short time per (caller's token, URL
//! path): a caller only ever sees what its own token fetched, so the wallet GET stays the
//! caller's authorization check, at most `ttl` old. Bounded in size; zero TTL disables it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::js_json::JsValue;
use crate::upstream::hmac::AccessToken;

/// How many documents are held at most.
const CAPACITY: usize = 10_000;

/// Which caller asked for which document.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MetadataKey {
    token_sha256: [u8; 32],
    path: String,
}

impl MetadataKey {
    /// The key of `path` fetched with `token` (no token hashes as the empty string).
    pub fn new(token: Option<&AccessToken>, path: &str) -> Self {
        let token = token.map(AccessToken::expose).unwrap_or_default();
        MetadataKey {
            token_sha256: Sha256::digest(token.as_bytes()).into(),
            path: path.to_string(),
        }
    }
}

struct Entry {
    document: Arc<JsValue>,
    expires: Instant,
}

/// The cache.
pub struct MetadataCache {
    ttl: Duration,
    entries: Mutex<HashMap<MetadataKey, Entry>>,
}

impl std::fmt::Debug for MetadataCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetadataCache")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl MetadataCache {
    pub fn new(ttl: Duration) -> Self {
        MetadataCache {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    pub fn enabled(&self) -> bool {
        !self.ttl.is_zero()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<MetadataKey, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The document, if one younger than the TTL is held.
    pub fn get(&self, key: &MetadataKey) -> Option<Arc<JsValue>> {
        if !self.enabled() {
            return None;
        }
        let mut entries = self.lock();
        match entries.get(key) {
            Some(entry) if entry.expires > Instant::now() => Some(entry.document.clone()),
            Some(_) => {
                entries.remove(key);
                None
            }
            None => None,
        }
    }

    /// Keeps `document` for the TTL (when full: expired entries go, then the one closest to
    /// expiring).
    pub fn insert(&self, key: MetadataKey, document: Arc<JsValue>) {
        if !self.enabled() {
            return;
        }
        let now = Instant::now();
        let mut entries = self.lock();
        if entries.len() >= CAPACITY && !entries.contains_key(&key) {
            entries.retain(|_, e| e.expires > now);
            if entries.len() >= CAPACITY
                && let Some(first) = entries
                    .iter()
                    .min_by_key(|(_, e)| e.expires)
                    .map(|(k, _)| k.clone())
            {
                entries.remove(&first);
            }
        }
        entries.insert(
            key,
            Entry {
                document,
                expires: now + self.ttl,
            },
        );
    }

    /// Forgets a document (it turned out stale).
    pub fn remove(&self, key: &MetadataKey) {
        self.lock().remove(key);
    }

    /// How many documents are held.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(n: f64) -> Arc<JsValue> {
        Arc::new(JsValue::Number(n))
    }

    #[test]
    fn documents_are_per_token_and_path() {
        let cache = MetadataCache::new(Duration::from_secs(60));
        let alice = AccessToken::new("alice");
        let bob = AccessToken::new("bob");
        cache.insert(MetadataKey::new(Some(&alice), "/w/1"), doc(1.0));
        assert_eq!(
            cache
                .get(&MetadataKey::new(Some(&alice), "/w/1"))
                .as_deref(),
            Some(&JsValue::Number(1.0))
        );
        assert!(cache.get(&MetadataKey::new(Some(&bob), "/w/1")).is_none());
        assert!(cache.get(&MetadataKey::new(None, "/w/1")).is_none());
        assert!(cache.get(&MetadataKey::new(Some(&alice), "/w/2")).is_none());
        cache.remove(&MetadataKey::new(Some(&alice), "/w/1"));
        assert!(cache.is_empty());
    }

    #[test]
    fn documents_expire() {
        let cache = MetadataCache::new(Duration::from_millis(30));
        let key = MetadataKey::new(None, "/w/1");
        cache.insert(key.clone(), doc(1.0));
        assert!(cache.get(&key).is_some());
        std::thread::sleep(Duration::from_millis(60));
        assert!(cache.get(&key).is_none());
        assert!(cache.is_empty());
    }

    #[test]
    fn zero_ttl_keeps_nothing() {
        let cache = MetadataCache::new(Duration::ZERO);
        let key = MetadataKey::new(None, "/w/1");
        cache.insert(key.clone(), doc(1.0));
        assert!(cache.get(&key).is_none());
        assert!(cache.is_empty());
    }

    #[test]
    fn size_is_bounded() {
        let cache = MetadataCache::new(Duration::from_secs(60));
        for n in 0..CAPACITY + 10 {
            cache.insert(MetadataKey::new(None, &format!("/w/{n}")), doc(n as f64));
        }
        assert_eq!(cache.len(), CAPACITY);
        let newest = format!("/w/{}", CAPACITY + 9);
        assert!(cache.get(&MetadataKey::new(None, &newest)).is_some());
    }
}
