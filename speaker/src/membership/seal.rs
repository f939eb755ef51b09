//! Sealing gossip datagrams: authenticated encryption with the cluster key.
//!
//! Every datagram is `nonce (24 bytes) ‖ XChaCha20-Poly1305(payload)`. The
//! extended nonce is drawn at random for each datagram: at 192 bits a
//! collision is negligible without counters or state shared between restarts.
//! A datagram that does not open with the current key, or with the previous
//! one during a rotation, is dropped before SWIM sees it, so a host without
//! the key can neither join nor declare members down.

use chacha20poly1305::aead::{Aead, Generate, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

/// Length of the key in the gossip Secret.
pub const KEY_LEN: usize = 32;
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

/// The current key, and the previous one while a rotation spreads.
///
/// Speakers see a rotated Secret at slightly different times; accepting the
/// previous key until the next rotation keeps the membership whole meanwhile.
#[derive(Debug, Clone)]
pub struct Keyring {
    current: GossipKey,
    previous: Option<GossipKey>,
}

impl Keyring {
    /// A keyring holding one key.
    pub fn new(key: GossipKey) -> Self {
        Self {
            current: key,
            previous: None,
        }
    }

    /// Makes `key` current; the old current key is still accepted.
    pub fn rotate(&mut self, key: GossipKey) {
        if key != self.current {
            self.previous = Some(std::mem::replace(&mut self.current, key));
        }
    }

    /// Seals with the current key.
    pub fn seal(&self, payload: &[u8]) -> Result<Vec<u8>, SealError> {
        self.current.seal(payload)
    }

    /// Opens with the current key, else the previous one.
    pub fn open(&self, datagram: &[u8]) -> Result<Vec<u8>, SealError> {
        self.current
            .open(datagram)
            .or_else(|e| match &self.previous {
                Some(previous) => previous.open(datagram),
                None => Err(e),
            })
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
    fn rotation_accepts_the_previous_key() {
        let mut ring = Keyring::new(key(1));
        let old = key(1).seal(b"x").unwrap();
        ring.rotate(key(2));
        assert_eq!(ring.open(&old).unwrap(), b"x");
        assert_eq!(key(2).open(&ring.seal(b"y").unwrap()).unwrap(), b"y");
        ring.rotate(key(3));
        assert!(
            ring.open(&old).is_err(),
            "two rotations later the old key is gone"
        );
    }
}
