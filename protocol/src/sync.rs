//! Sync decisions: version vectors (per-origin frontiers) and what to pull.
//!
//! A frontier maps each origin to the highest sequence number up to which a
//! node holds *every* record of that origin (contiguous). Comparing two
//! frontiers says exactly which ranges one side lacks, so catch-up fetches
//! nothing twice and a healed partition converges.

use std::collections::BTreeMap;

use libp2p_identity::PeerId;

use crate::record::ContentHash;
use crate::wire::{FrontierEntry, SeqRange, MAX_FRONTIER_ENTRIES};

/// origin → highest contiguous seq held.
pub type Frontier = BTreeMap<PeerId, u64>;

/// Digest of a whole frontier: blake3 over the sorted (origin, seq) pairs.
pub fn frontier_digest(f: &Frontier) -> ContentHash {
    let mut h = blake3::Hasher::new();
    h.update(b"metamesh/frontier/v1");
    for (origin, seq) in f {
        let b = origin.to_bytes();
        h.update(&(b.len() as u32).to_le_bytes());
        h.update(&b);
        h.update(&seq.to_le_bytes());
    }
    ContentHash(*h.finalize().as_bytes())
}

/// Frontier as wire entries, cut to [`MAX_FRONTIER_ENTRIES`]; the flag says
/// whether it was cut.
pub fn frontier_entries(f: &Frontier) -> (Vec<FrontierEntry>, bool) {
    let entries: Vec<_> = f
        .iter()
        .filter(|(_, s)| **s > 0)
        .take(MAX_FRONTIER_ENTRIES)
        .map(|(o, s)| FrontierEntry {
            origin: *o,
            seq: *s,
        })
        .collect();
    let truncated = f.values().filter(|s| **s > 0).count() > entries.len();
    (entries, truncated)
}

/// The ranges `mine` lacks relative to `theirs`: for each origin where they
/// hold more, `mine+1 ..= theirs`.
pub fn missing_ranges(mine: &Frontier, theirs: &[FrontierEntry]) -> Vec<SeqRange> {
    let mut out = Vec::new();
    for e in theirs {
        let have = mine.get(&e.origin).copied().unwrap_or(0);
        if e.seq > have {
            out.push(SeqRange {
                origin: e.origin,
                from_seq: have + 1,
                to_seq: e.seq,
            });
        }
    }
    out
}

/// What a requester that sent its frontier `have` lacks of `mine`
/// (the responder's side of "send me what I lack").
pub fn ranges_to_send(mine: &Frontier, have: &[FrontierEntry]) -> Vec<SeqRange> {
    let theirs: Frontier = have.iter().map(|e| (e.origin, e.seq)).collect();
    let mine_entries: Vec<FrontierEntry> = mine
        .iter()
        .map(|(o, s)| FrontierEntry {
            origin: *o,
            seq: *s,
        })
        .collect();
    missing_ranges(&theirs, &mine_entries)
}

/// Cut ranges so that their total length is at most `max_count`, keeping
/// order. The remainder is fetched by a later request.
pub fn limit_ranges(ranges: &[SeqRange], max_count: u64) -> Vec<SeqRange> {
    let mut left = max_count;
    let mut out = Vec::new();
    for r in ranges {
        if left == 0 {
            break;
        }
        let take = r.len().min(left);
        if take == 0 {
            continue;
        }
        out.push(SeqRange {
            origin: r.origin,
            from_seq: r.from_seq,
            to_seq: r.from_seq + take - 1,
        });
        left -= take;
    }
    out
}

/// Advance a contiguous frontier: given the current value and the set of
/// seqs held above it, return the new highest contiguous seq.
pub fn advance_contiguous(current: u64, held_above: &std::collections::BTreeSet<u64>) -> u64 {
    let mut f = current;
    for s in held_above.range(current + 1..) {
        if *s == f + 1 {
            f = *s;
        } else {
            break;
        }
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p_identity::Keypair;

    fn peer(i: u8) -> PeerId {
        Keypair::ed25519_from_bytes([i; 32])
            .unwrap()
            .public()
            .to_peer_id()
    }

    #[test]
    fn missing_ranges_are_exact() {
        let mine: Frontier = [(peer(1), 5), (peer(2), 10)].into();
        let theirs = vec![
            FrontierEntry {
                origin: peer(1),
                seq: 8,
            },
            FrontierEntry {
                origin: peer(2),
                seq: 7,
            },
            FrontierEntry {
                origin: peer(3),
                seq: 2,
            },
        ];
        let r = missing_ranges(&mine, &theirs);
        assert_eq!(r.len(), 2);
        assert_eq!((r[0].from_seq, r[0].to_seq), (6, 8));
        assert_eq!((r[1].origin, r[1].from_seq, r[1].to_seq), (peer(3), 1, 2));
        let send = ranges_to_send(&mine, &theirs);
        assert_eq!(send.len(), 1);
        assert_eq!(
            (send[0].origin, send[0].from_seq, send[0].to_seq),
            (peer(2), 8, 10)
        );
    }

    #[test]
    fn digest_depends_on_every_entry() {
        let a: Frontier = [(peer(1), 5), (peer(2), 10)].into();
        let mut b = a.clone();
        assert_eq!(frontier_digest(&a), frontier_digest(&b));
        b.insert(peer(2), 11);
        assert_ne!(frontier_digest(&a), frontier_digest(&b));
    }

    #[test]
    fn limit_and_advance() {
        let r = vec![
            SeqRange {
                origin: peer(1),
                from_seq: 1,
                to_seq: 10,
            },
            SeqRange {
                origin: peer(2),
                from_seq: 3,
                to_seq: 4,
            },
        ];
        let l = limit_ranges(&r, 11);
        assert_eq!(l.len(), 2);
        assert_eq!(l[1].to_seq, 3);
        let held: std::collections::BTreeSet<u64> = [3, 4, 6].into();
        assert_eq!(advance_contiguous(2, &held), 4);
        assert_eq!(advance_contiguous(1, &held), 1);
    }
}
