//! Sealing gossip datagrams: authenticated encryption with the cluster key.
//!
//! Every datagram is `nonce (24 bytes) ‖ XChaCha20-Poly1305(payload)`. The
//! extended nonce is drawn at random for each datagram: at 192 bits a
//! collision is negligible without counters or state shared between restarts.
//! A datagram that does not open with the current key, or with the other
//! key of a rotation in progress, is dropped before SWIM sees it, so a host
//! without the key can neither join nor declare members down.
//!
//! Rotation is two-phase ([`KeyPhases`]): speakers read the Secret at
//! slightly different times, so a new key is first only *accepted*, and
//! sent with only one phase later, when every peer has loaded it; the old
//! key is still accepted for one more phase, then forgotten.

use std::time::{Duration, Instant};

use chacha20poly1305::aead::{Aead, Generate, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

/// Length of the key in the gossip Secret.
pub const KEY_LEN: usize = ferrolb_crds::GOSSIP_KEY_LEN;
const NONCE_LEN: usize = 24;
/// Bytes a sealed datagram adds to its payload (nonce and tag).
pub const OVERHEAD: usize = NONCE_LEN + 16;

/// Why a key or datagram was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// The Secret's key has the wrong length.
    #[error(
        "the gossip key must be exactly {KEY_LEN} bytes, got {0}; regenerate the Secret's `key`"
    )]
    KeyLength(usize),
    /// The datagram failed authentication or is too short.
    #[error("datagram failed authentication")]
    Unauthenticated,
    /// The system random source failed.
    #[error("no randomness for a nonce")]
    Randomness,
}

/// The cluster's gossip key.
#[derive(Clone)]
pub struct GossipKey {
    cipher: XChaCha20Poly1305,
    fingerprint: [u8; KEY_LEN],
}

impl std::fmt::Debug for GossipKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GossipKey(..)")
    }
}

impl PartialEq for GossipKey {
    fn eq(&self, other: &Self) -> bool {
        self.fingerprint == other.fingerprint
    }
}

impl GossipKey {
    /// A key from the Secret's 32 bytes.
    pub fn new(bytes: &[u8]) -> Result<Self, SealError> {
        let fingerprint: [u8; KEY_LEN] = bytes
            .try_into()
            .map_err(|_| SealError::KeyLength(bytes.len()))?;
        let cipher = XChaCha20Poly1305::new_from_slice(bytes)
            .map_err(|_| SealError::KeyLength(bytes.len()))?;
        Ok(Self {
            cipher,
            fingerprint,
        })
    }

    /// Encrypts and authenticates `payload` under a fresh random nonce.
    pub fn seal(&self, payload: &[u8]) -> Result<Vec<u8>, SealError> {
        let nonce = XNonce::try_generate().map_err(|_| SealError::Randomness)?;
        let sealed = self
            .cipher
            .encrypt(&nonce, payload)
            .map_err(|_| SealError::Unauthenticated)?;
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(nonce.as_slice());
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// The payload of a datagram sealed with this key.
    pub fn open(&self, datagram: &[u8]) -> Result<Vec<u8>, SealError> {
        if datagram.len() < OVERHEAD {
            return Err(SealError::Unauthenticated);
        }
        let (nonce, sealed) = datagram.split_at(NONCE_LEN);
        let nonce = XNonce::try_from(nonce).map_err(|_| SealError::Unauthenticated)?;
        self.cipher
            .decrypt(&nonce, sealed)
            .map_err(|_| SealError::Unauthenticated)
    }
}

/// The keys of a two-phase rotation, driven by the time passed in.
///
/// Seeing a new key in the Secret at `t` makes it accepted at once and the
/// sending key from `t + phase`; the key it replaces is accepted until
/// `t + 2 × phase`. With `phase` longer than the time all speakers take to
/// read the Secret again, no speaker ever receives a datagram sealed with a
/// key it does not know, and a leaked old key is useless two phases after
/// the rotation.
#[derive(Debug, Clone)]
pub struct KeyPhases {
    current: GossipKey,
    /// A new key and when it becomes the sending key.
    next: Option<(GossipKey, Instant)>,
    /// The key sent with before the last switch, and until when it is
    /// still accepted.
    retired: Option<(GossipKey, Instant)>,
    phase: Duration,
}

impl KeyPhases {
    /// Keys starting with `key`; `phase` is the length of each phase of a
    /// rotation.
    pub fn new(key: GossipKey, phase: Duration) -> Self {
        Self {
            current: key,
            next: None,
            retired: None,
            phase,
        }
    }

    /// Records the key read from the Secret at `now`; whether it starts a
    /// rotation.
    pub fn observe(&mut self, key: GossipKey, now: Instant) -> bool {
        self.advance(now);
        if key == self.current || self.next.as_ref().is_some_and(|(next, _)| *next == key) {
            return false;
        }
        // A second new key within one phase replaces the first: nobody
        // sent with that one yet.
        self.next = Some((key, now + self.phase));
        true
    }

    fn advance(&mut self, now: Instant) {
        if let Some((_, at)) = &self.next
            && now >= *at
            && let Some((next, at)) = self.next.take()
        {
            let old = std::mem::replace(&mut self.current, next);
            self.retired = Some((old, at + self.phase));
        }
        if self
            .retired
            .as_ref()
            .is_some_and(|(_, until)| now >= *until)
        {
            self.retired = None;
        }
    }

    fn sending(&self, now: Instant) -> &GossipKey {
        match &self.next {
            Some((next, at)) if now >= *at => next,
            _ => &self.current,
        }
    }

    /// Seals with the key to send with at `now`.
    pub fn seal(&self, payload: &[u8], now: Instant) -> Result<Vec<u8>, SealError> {
        self.sending(now).seal(payload)
    }

    /// Opens with any key accepted at `now`.
    pub fn open(&self, datagram: &[u8], now: Instant) -> Result<Vec<u8>, SealError> {
        // The current key is retired one phase after the next one takes over.
        let current_until = self.next.as_ref().map(|(_, at)| *at + self.phase);
        let accepted = std::iter::once((&self.current, current_until))
            .chain(self.next.iter().map(|(key, _)| (key, None)))
            .chain(self.retired.iter().map(|(key, until)| (key, Some(*until))))
            .filter(|(_, until)| until.is_none_or(|until| now < until));
        for (key, _) in accepted {
            if let Ok(payload) = key.open(datagram) {
                return Ok(payload);
            }
        }
        Err(SealError::Unauthenticated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> GossipKey {
        GossipKey::new(&[byte; KEY_LEN]).unwrap()
    }

    #[test]
    fn round_trip_with_fresh_nonces() {
        let k = key(1);
        let a = k.seal(b"ping").unwrap();
        let b = k.seal(b"ping").unwrap();
        assert_ne!(a, b, "each datagram gets its own nonce");
        assert_eq!(a.len(), 4 + OVERHEAD);
        assert_eq!(k.open(&a).unwrap(), b"ping");
    }

    #[test]
    fn wrong_key_tampering_and_short_datagrams_are_refused() {
        let sealed = key(1).seal(b"ping").unwrap();
        assert_eq!(key(2).open(&sealed), Err(SealError::Unauthenticated));
        let mut tampered = sealed.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert_eq!(key(1).open(&tampered), Err(SealError::Unauthenticated));
        assert_eq!(key(1).open(&sealed[..10]), Err(SealError::Unauthenticated));
        assert_eq!(key(1).open(b""), Err(SealError::Unauthenticated));
    }

    #[test]
    fn key_length_is_checked() {
        assert_eq!(
            GossipKey::new(&[0; 16]).unwrap_err(),
            SealError::KeyLength(16)
        );
    }

    #[test]
    fn two_phase_rotation() {
        let phase = Duration::from_secs(20);
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut keys = KeyPhases::new(key(1), phase);
        let by = |k: u8| key(k).seal(b"x").unwrap();
        assert!(keys.open(&by(1), at(0)).is_ok());
        assert!(keys.open(&by(2), at(0)).is_err(), "unknown key");

        // Phase 1: key 2 accepted at once, still sending with key 1.
        assert!(keys.observe(key(2), at(5)));
        assert!(
            !keys.observe(key(2), at(6)),
            "the same key again is no rotation"
        );
        assert!(keys.open(&by(2), at(5)).is_ok());
        assert!(keys.open(&by(1), at(5)).is_ok());
        assert_eq!(
            key(1).open(&keys.seal(b"y", at(24)).unwrap()).unwrap(),
            b"y"
        );

        // Phase 2: sending with key 2, key 1 still accepted.
        assert_eq!(
            key(2).open(&keys.seal(b"y", at(25)).unwrap()).unwrap(),
            b"y"
        );
        assert!(keys.open(&by(1), at(44)).is_ok());
        assert!(keys.open(&by(2), at(44)).is_ok());

        // Then key 1 is gone, whether or not the Secret was read meanwhile.
        assert!(keys.open(&by(1), at(45)).is_err());
        assert!(!keys.observe(key(2), at(50)));
        assert!(keys.open(&by(1), at(50)).is_err());
        assert!(keys.open(&by(2), at(50)).is_ok());
        assert_eq!(
            key(2).open(&keys.seal(b"y", at(50)).unwrap()).unwrap(),
            b"y"
        );
    }

    #[test]
    fn a_second_key_within_a_phase_replaces_the_first() {
        let phase = Duration::from_secs(20);
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut keys = KeyPhases::new(key(1), phase);
        keys.observe(key(2), at(0));
        keys.observe(key(3), at(10));
        assert!(keys.open(&key(2).seal(b"x").unwrap(), at(11)).is_err());
        assert_eq!(
            key(1).open(&keys.seal(b"y", at(29)).unwrap()).unwrap(),
            b"y"
        );
        assert_eq!(
            key(3).open(&keys.seal(b"y", at(30)).unwrap()).unwrap(),
            b"y"
        );
    }
}
