//! Recent access decisions, keyed by a SHA-256 of the bearer token (never the
//! token itself), so that a Prometheus scraping every few seconds costs the API
//! server two reviews a minute, not two per scrape.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::Decision;

/// A token's fingerprint.
pub(crate) type TokenHash = [u8; 32];

/// The SHA-256 of `token`.
pub(crate) fn token_hash(token: &str) -> TokenHash {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut hash = [0u8; 32];
    hash.copy_from_slice(digest.as_ref());
    hash
}

/// Decisions that expire, at most `capacity` of them.
#[derive(Debug)]
pub(crate) struct DecisionCache {
    entries: HashMap<TokenHash, (Decision, Instant)>,
    capacity: usize,
}

impl DecisionCache {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            entries: HashMap::new(),
            capacity: capacity.max(1),
        }
    }

    /// The decision for `token`, if it was made and has not expired at `now`.
    pub(crate) fn get(&self, token: &TokenHash, now: Instant) -> Option<Decision> {
        self.entries
            .get(token)
            .filter(|(_, expires)| *expires > now)
            .map(|(decision, _)| decision.clone())
    }

    /// Keeps `decision` for `ttl`. When full, expired entries go first, then the
    /// one that would expire soonest.
    pub(crate) fn insert(
        &mut self,
        token: TokenHash,
        decision: Decision,
        ttl: Duration,
        now: Instant,
    ) {
        if self.entries.len() >= self.capacity && !self.entries.contains_key(&token) {
            self.entries.retain(|_, (_, expires)| *expires > now);
            if self.entries.len() >= self.capacity
                && let Some(soonest) = self
                    .entries
                    .iter()
                    .min_by_key(|(_, (_, expires))| *expires)
                    .map(|(key, _)| *key)
            {
                self.entries.remove(&soonest);
            }
        }
        self.entries.insert(token, (decision, now + ttl));
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn hashes_differ_per_token_and_hide_it() {
        assert_eq!(token_hash("a"), token_hash("a"));
        assert_ne!(token_hash("a"), token_hash("b"));
        // The well-known SHA-256 of "abc".
        assert_eq!(token_hash("abc")[..4], [0xba, 0x78, 0x16, 0xbf]);
    }

    #[test]
    fn decisions_expire() {
        let t0 = Instant::now();
        let mut cache = DecisionCache::new(4);
        cache.insert(token_hash("a"), Decision::Allowed, MINUTE, t0);
        assert_eq!(
            cache.get(&token_hash("a"), t0 + MINUTE / 2),
            Some(Decision::Allowed)
        );
        assert_eq!(cache.get(&token_hash("a"), t0 + MINUTE), None);
        assert_eq!(cache.get(&token_hash("b"), t0), None);
    }

    #[test]
    fn a_full_cache_drops_expired_then_soonest_expiring_entries() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut cache = DecisionCache::new(2);
        cache.insert(token_hash("short"), Decision::Unauthenticated, s(10), t0);
        cache.insert(token_hash("long"), Decision::Allowed, MINUTE, t0);
        cache.insert(token_hash("new"), Decision::Allowed, MINUTE, t0 + s(1));
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.get(&token_hash("short"), t0 + s(1)), None);
        assert!(cache.get(&token_hash("long"), t0 + s(1)).is_some());
        // Replacing an entry never evicts another.
        cache.insert(
            token_hash("new"),
            Decision::Unauthenticated,
            s(5),
            t0 + s(2),
        );
        assert_eq!(cache.len(), 2);
        assert_eq!(
            cache.get(&token_hash("new"), t0 + s(2)),
            Some(Decision::Unauthenticated)
        );
        // Many distinct tokens (a flood of made-up ones) never grow it.
        for i in 0..100 {
            cache.insert(
                token_hash(&i.to_string()),
                Decision::Unauthenticated,
                s(10),
                t0,
            );
        }
        assert_eq!(cache.len(), 2);
    }
}
