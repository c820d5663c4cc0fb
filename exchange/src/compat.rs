//! The own-seq epoch rule (INTERFACES.md) until `storage` lands
//! `PatternBody::prev_seq` and `record::extends_frontier` on main.
//!
//! Bodies are signed with an optional CBOR key `prev` (omitted when it is
//! `seq - 1`), exactly as the agreed body format; records decode with
//! today's `PatternBody` (which ignores the key) and with the new one.
//! Switch [`extends_frontier`] and [`sign_pattern`] to the protocol's
//! functions when they land.

use libp2p_identity::{Keypair, PeerId};
use metamesh_protocol::codec;
use metamesh_protocol::record::{RecordKind, BODY_VERSION, MAX_BODY_BYTES};
use metamesh_protocol::{Pattern, SignedRecord};
use serde::{Deserialize, Serialize};

/// A record `(seq, prev)` extends frontier `f` iff `prev <= f < seq`.
pub fn extends_frontier(frontier: u64, seq: u64, prev: u64) -> bool {
    prev <= frontier && frontier < seq
}

/// `prev`, or `seq - 1` when absent.
pub fn prev_of(seq: u64, prev: Option<u64>) -> u64 {
    prev.unwrap_or(seq.saturating_sub(1))
}

#[derive(Serialize)]
struct OwnBody<'a> {
    v: u16,
    origin: PeerId,
    seq: u64,
    #[serde(rename = "prev", skip_serializing_if = "Option::is_none")]
    prev_seq: Option<u64>,
    pattern: &'a Pattern,
}

#[derive(Deserialize)]
struct PrevProbe {
    #[serde(rename = "prev", default)]
    prev: Option<u64>,
}

/// Sign `pattern` as `seq` of the key's PeerId with previous seq `prev`
/// (`None` or `Some(seq - 1)`: the key is left out).
pub fn sign_pattern(pattern: &Pattern, seq: u64, prev: Option<u64>, key: &Keypair) -> SignedRecord {
    let prev_seq = prev.filter(|p| Some(*p) != seq.checked_sub(1));
    let body = OwnBody {
        v: BODY_VERSION,
        origin: key.public().to_peer_id(),
        seq,
        prev_seq,
        pattern,
    };
    SignedRecord::sign_bytes(RecordKind::Pattern, codec::to_cbor(&body), key)
}

/// The `prev` a record's body carries (decodes the body bytes).
pub fn record_prev(rec: &SignedRecord) -> Option<u64> {
    codec::from_cbor::<PrevProbe>(&rec.body, MAX_BODY_BYTES)
        .ok()
        .and_then(|p| p.prev)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn prev_round_trips_and_old_decoders_read_the_body() {
        let key = Keypair::ed25519_from_bytes([3; 32]).unwrap();
        let p = crate::testutil::pattern(0.5);
        let r = sign_pattern(&p, 5u64 << 32 | 1, Some(7), &key);
        assert_eq!(record_prev(&r), Some(7));
        let body = r.open_pattern(crate::testutil::NOW).unwrap();
        assert_eq!(body.seq, 5u64 << 32 | 1);
        let r = sign_pattern(&p, 8, Some(7), &key);
        assert_eq!(record_prev(&r), None);
        assert!(extends_frontier(7, 5u64 << 32 | 1, 7));
        assert!(!extends_frontier(6, 5u64 << 32 | 1, 7));
        assert!(!extends_frontier(8, 8, 7));
    }
}
