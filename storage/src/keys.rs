//! Byte layouts of the store's keys.
//!
//! A record key is `[len(origin)][origin bytes][seq big-endian]`: the length
//! prefix makes one origin's keys a contiguous range that no other origin's
//! keys can fall into, and big-endian seqs sort numerically.

use libp2p_identity::PeerId;

/// `[len][origin bytes]`.
pub(crate) fn origin_prefix(origin: &PeerId) -> Vec<u8> {
    let b = origin.to_bytes();
    let mut k = Vec::with_capacity(1 + b.len() + 8);
    // PeerId bytes are a multihash of at most 64 bytes of digest; the length
    // always fits in a byte.
    k.push(b.len().min(255) as u8);
    k.extend_from_slice(&b);
    k
}

/// `[len][origin bytes][seq BE]`.
pub(crate) fn record_key(origin: &PeerId, seq: u64) -> Vec<u8> {
    let mut k = origin_prefix(origin);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// Split a record key back into (origin, seq).
pub(crate) fn parse_record_key(k: &[u8]) -> Option<(PeerId, u64)> {
    let len = *k.first()? as usize;
    if k.len() != 1 + len + 8 {
        return None;
    }
    let origin = PeerId::from_bytes(&k[1..1 + len]).ok()?;
    let seq = u64::from_be_bytes(k[1 + len..].try_into().ok()?);
    Some((origin, seq))
}

/// Order-preserving 8-byte encoding of an f64 (total order; negative values
/// sort before positive ones).
pub(crate) fn f64_key(v: f64) -> [u8; 8] {
    let bits = v.to_bits();
    let ordered = if bits >> 63 == 1 {
        !bits
    } else {
        bits | (1 << 63)
    };
    ordered.to_be_bytes()
}

pub(crate) fn be_u64(v: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(v.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    fn peer(i: u8) -> PeerId {
        libp2p_identity::Keypair::ed25519_from_bytes([i; 32])
            .unwrap()
            .public()
            .to_peer_id()
    }

    #[test]
    fn record_keys_round_trip_and_sort_by_seq() {
        let p = peer(3);
        let k = record_key(&p, 42);
        assert_eq!(parse_record_key(&k), Some((p, 42)));
        assert!(record_key(&p, 255) < record_key(&p, 256));
        assert!(k.starts_with(&origin_prefix(&p)));
        assert_eq!(parse_record_key(&k[..k.len() - 1]), None);
    }

    proptest! {
        #[test]
        fn f64_key_preserves_order(a in proptest::num::f64::NORMAL | proptest::num::f64::ZERO,
                                   b in proptest::num::f64::NORMAL | proptest::num::f64::ZERO) {
            if a < b {
                prop_assert!(f64_key(a) < f64_key(b));
            }
        }
    }
}
