//! Exact catch-up at any number of origins: range-based reconciliation of
//! the frontier over a 16-ary digest tree.
//!
//! Every origin gets a 32-bit key (blake3 of its PeerId). A bucket is a key
//! prefix of `4 × depth` bits; its digest is the XOR of the 64-bit hashes of
//! its `(origin, seq)` entries, plus a count. Two frontiers are equal iff the
//! root digests are (up to 2⁻⁶⁴ per comparison). The requester sends the
//! digests of the 16 depth-1 buckets; the responder answers, for each bucket
//! that differs, either its 16 children's digests (to descend) or, for a
//! bucket of at most [`LEAF_ENTRIES`] entries (or at the deepest level), its
//! entries. Rounds repeat on the differing children only. Cost: for `k`
//! differing origins among `n`, about `k · log16(n)` digests and
//! `k · LEAF_ENTRIES` entries, independent of `n` beyond the logarithm —
//! nothing is ever cut at 1024.
//!
//! Digests of depth ≤ [`CACHED_DEPTH`] are kept incrementally (4096 leaf
//! XORs), deeper ones are computed from the sorted key index on demand.
//! XOR digests are linear: a peer could craft origins whose hashes cancel,
//! but it can only hide its own entries from comparison, which pulls from
//! another peer repair.

use std::collections::BTreeMap;

use libp2p_identity::PeerId;
use metamesh_protocol::sync::{Bucket, BucketDigest, ReconItem, ReconQuery, ReconReply};
use metamesh_protocol::sync::{Frontier, MAX_RECON_BUCKETS, MAX_RECON_DEPTH};
use metamesh_protocol::wire::{FrontierEntry, MAX_FRONTIER_ENTRIES};

/// A bucket with at most this many entries is answered with its entries.
pub const LEAF_ENTRIES: u32 = 32;
/// Depth whose digests are kept incrementally (16³ = 4096 buckets).
pub const CACHED_DEPTH: u8 = 3;
const CACHED: usize = 1 << (4 * CACHED_DEPTH as usize);

/// The 32-bit reconciliation key of an origin.
pub fn origin_key(origin: &PeerId) -> u32 {
    let mut h = blake3::Hasher::new();
    h.update(b"metamesh/recon/key/v1\0");
    h.update(&origin.to_bytes());
    let b = h.finalize();
    let x = b.as_bytes();
    u32::from_be_bytes([x[0], x[1], x[2], x[3]])
}

/// The 64-bit hash of one frontier entry.
pub fn entry_hash(origin: &PeerId, seq: u64) -> u64 {
    let mut h = blake3::Hasher::new();
    h.update(b"metamesh/recon/entry/v1\0");
    h.update(&origin.to_bytes());
    h.update(&seq.to_le_bytes());
    let b = h.finalize();
    let x = b.as_bytes();
    u64::from_le_bytes([x[0], x[1], x[2], x[3], x[4], x[5], x[6], x[7]])
}

/// Inclusive key range of a bucket.
fn key_range(b: Bucket) -> (u32, u32) {
    let bits = 4 * u32::from(b.depth.min(MAX_RECON_DEPTH));
    if bits == 0 {
        return (0, u32::MAX);
    }
    let shift = 32 - bits;
    let lo = (u64::from(b.prefix) << shift).min(u64::from(u32::MAX));
    let hi = (((u64::from(b.prefix) + 1) << shift) - 1).min(u64::from(u32::MAX));
    (lo as u32, hi as u32)
}

fn children_of(b: Bucket) -> impl Iterator<Item = Bucket> {
    let depth = b.depth + 1;
    (0..16u32).map(move |i| Bucket {
        depth,
        prefix: (b.prefix << 4) | i,
    })
}

/// The root bucket.
pub const ROOT: Bucket = Bucket {
    depth: 0,
    prefix: 0,
};

/// A frontier with its digest tree.
#[derive(Debug, Clone)]
pub struct DigestTree {
    frontier: Frontier,
    /// key → (origin, entry hash) (keys of different origins rarely collide).
    index: BTreeMap<u32, Vec<(PeerId, u64)>>,
    /// Depth-[`CACHED_DEPTH`] digests and counts.
    leaves: Vec<(u64, u32)>,
}

impl Default for DigestTree {
    fn default() -> Self {
        DigestTree {
            frontier: Frontier::new(),
            index: BTreeMap::new(),
            leaves: vec![(0, 0); CACHED],
        }
    }
}

impl DigestTree {
    pub fn from_frontier(f: &Frontier) -> DigestTree {
        let mut t = DigestTree::default();
        for (o, s) in f {
            t.set(*o, *s);
        }
        t
    }

    pub fn frontier(&self) -> &Frontier {
        &self.frontier
    }

    pub fn get(&self, origin: &PeerId) -> u64 {
        self.frontier.get(origin).copied().unwrap_or(0)
    }

    pub fn len(&self) -> usize {
        self.frontier.len()
    }

    pub fn is_empty(&self) -> bool {
        self.frontier.is_empty()
    }

    /// Set an origin's frontier (0 removes it).
    pub fn set(&mut self, origin: PeerId, seq: u64) {
        let key = origin_key(&origin);
        let leaf = (key >> (32 - 4 * u32::from(CACHED_DEPTH))) as usize;
        let slot = self.index.entry(key).or_default();
        if let Some(pos) = slot.iter().position(|(o, _)| *o == origin) {
            let (_, old) = slot.swap_remove(pos);
            if let Some(l) = self.leaves.get_mut(leaf) {
                l.0 ^= old;
                l.1 = l.1.saturating_sub(1);
            }
            self.frontier.remove(&origin);
        }
        if seq == 0 {
            if slot.is_empty() {
                self.index.remove(&key);
            }
            return;
        }
        let h = entry_hash(&origin, seq);
        slot.push((origin, h));
        self.frontier.insert(origin, seq);
        if let Some(l) = self.leaves.get_mut(leaf) {
            l.0 ^= h;
            l.1 = l.1.saturating_add(1);
        }
    }

    /// Digest and count of a bucket.
    pub fn digest(&self, b: Bucket) -> BucketDigest {
        let (mut digest, mut count) = (0u64, 0u32);
        if b.depth <= CACHED_DEPTH {
            let span = 1usize << (4 * (CACHED_DEPTH - b.depth) as usize);
            let start = (b.prefix as usize).saturating_mul(span);
            for (d, c) in self.leaves.iter().skip(start).take(span) {
                digest ^= d;
                count = count.saturating_add(*c);
            }
        } else {
            for h in self.range(b).map(|(_, h)| h) {
                digest ^= h;
                count = count.saturating_add(1);
            }
        }
        BucketDigest {
            bucket: b,
            count,
            digest,
        }
    }

    fn range(&self, b: Bucket) -> impl Iterator<Item = (&PeerId, u64)> {
        let (lo, hi) = key_range(b);
        self.index
            .range(lo..=hi)
            .flat_map(|(_, v)| v.iter().map(|(o, h)| (o, *h)))
    }

    /// The root digest (what announcements carry).
    pub fn root(&self) -> u64 {
        self.digest(ROOT).digest
    }

    /// The entries of a bucket.
    pub fn entries(&self, b: Bucket) -> Vec<FrontierEntry> {
        self.range(b)
            .map(|(o, _)| FrontierEntry {
                origin: *o,
                seq: self.get(o),
            })
            .collect()
    }

    /// The first query of a reconciliation: the depth-1 digests.
    pub fn first_query(&self) -> ReconQuery {
        ReconQuery {
            buckets: children_of(ROOT).map(|b| self.digest(b)).collect(),
        }
    }

    /// The responder's side: answer each differing bucket, within the wire
    /// bounds (what does not fit is listed in `skipped`).
    pub fn answer(&self, q: &ReconQuery) -> ReconReply {
        let mut reply = ReconReply::default();
        let mut entries_left = MAX_FRONTIER_ENTRIES;
        for theirs in q.buckets.iter().take(MAX_RECON_BUCKETS) {
            let mine = self.digest(theirs.bucket);
            if mine.digest == theirs.digest && mine.count == theirs.count {
                continue;
            }
            let b = theirs.bucket;
            if mine.count <= LEAF_ENTRIES || b.depth >= MAX_RECON_DEPTH {
                let e = self.entries(b);
                if e.len() > entries_left {
                    reply.skipped.push(b);
                    continue;
                }
                entries_left -= e.len();
                reply.items.push(ReconItem::Entries {
                    bucket: b,
                    entries: e,
                });
            } else {
                reply.items.push(ReconItem::Split {
                    bucket: b,
                    children: children_of(b).map(|c| self.digest(c)).collect(),
                });
            }
        }
        reply
    }

    /// The requester's side: from a reply, the next query (differing
    /// children and skipped buckets) and what the responder holds that we
    /// lack, as targets (origin → its frontier). Items for buckets we did not
    /// ask about are ignored (`asked` is our last query).
    pub fn absorb(
        &self,
        asked: &ReconQuery,
        reply: &ReconReply,
    ) -> (ReconQuery, Vec<FrontierEntry>) {
        let asked_set: std::collections::HashSet<Bucket> =
            asked.buckets.iter().map(|b| b.bucket).collect();
        let mut next = ReconQuery::default();
        let mut missing = Vec::new();
        for item in &reply.items {
            match item {
                ReconItem::Split { bucket, children } => {
                    if !asked_set.contains(bucket) || bucket.depth >= MAX_RECON_DEPTH {
                        continue;
                    }
                    for c in children {
                        let ok = c.bucket.depth == bucket.depth + 1
                            && c.bucket.prefix >> 4 == bucket.prefix;
                        if !ok {
                            continue;
                        }
                        let mine = self.digest(c.bucket);
                        if (mine.digest, mine.count) != (c.digest, c.count)
                            && next.buckets.len() < MAX_RECON_BUCKETS
                        {
                            next.buckets.push(mine);
                        }
                    }
                }
                ReconItem::Entries { bucket, entries } => {
                    if !asked_set.contains(bucket) {
                        continue;
                    }
                    let (lo, hi) = key_range(*bucket);
                    for e in entries {
                        if e.seq > self.get(&e.origin) {
                            let k = origin_key(&e.origin);
                            if (lo..=hi).contains(&k) {
                                missing.push(*e);
                            }
                        }
                    }
                }
            }
        }
        for b in &reply.skipped {
            if asked_set.contains(b) && next.buckets.len() < MAX_RECON_BUCKETS {
                next.buckets.push(self.digest(*b));
            }
        }
        (next, missing)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use libp2p_identity::Keypair;

    fn peer(i: u32) -> PeerId {
        let mut seed = [7u8; 32];
        seed[..4].copy_from_slice(&i.to_le_bytes());
        Keypair::ed25519_from_bytes(seed)
            .unwrap()
            .public()
            .to_peer_id()
    }

    /// Run reconciliation to the end; return what `a` lacks of `b` and the rounds.
    fn reconcile(a: &DigestTree, b: &DigestTree) -> (Vec<FrontierEntry>, usize) {
        let mut q = a.first_query();
        let mut missing = Vec::new();
        let mut rounds = 0;
        while !q.buckets.is_empty() {
            rounds += 1;
            assert!(rounds < 20, "does not terminate");
            let r = b.answer(&q);
            r.validate().unwrap();
            let (next, m) = a.absorb(&q, &r);
            missing.extend(m);
            q = next;
        }
        missing.sort();
        (missing, rounds)
    }

    #[test]
    fn finds_exactly_the_differences_among_5000_origins() {
        let peers: Vec<PeerId> = (0..5000).map(peer).collect();
        let mut a = DigestTree::default();
        let mut b = DigestTree::default();
        for (i, p) in peers.iter().enumerate() {
            b.set(*p, 10);
            if i % 7 != 0 {
                a.set(*p, if i % 11 == 0 { 9 } else { 10 });
            }
        }
        let (missing, rounds) = reconcile(&a, &b);
        let want: Vec<FrontierEntry> = {
            let mut w: Vec<_> = peers
                .iter()
                .enumerate()
                .filter(|(i, _)| i % 7 == 0 || i % 11 == 0)
                .map(|(_, p)| FrontierEntry {
                    origin: *p,
                    seq: 10,
                })
                .collect();
            w.sort();
            w
        };
        assert_eq!(missing, want);
        assert!(rounds <= 6, "{rounds} rounds");
        // equal trees need one round with an empty answer
        let (m, r) = reconcile(&b, &b.clone());
        assert!(m.is_empty());
        assert_eq!(r, 1);
    }

    #[test]
    fn empty_side_learns_everything_and_digests_are_incremental() {
        let mut b = DigestTree::default();
        for i in 0..300 {
            b.set(peer(i), u64::from(i) + 1);
        }
        let (missing, _) = reconcile(&DigestTree::default(), &b);
        assert_eq!(missing.len(), 300);
        let mut c = b.clone();
        c.set(peer(5), 99);
        assert_ne!(c.root(), b.root());
        c.set(peer(5), 6);
        assert_eq!(c.root(), b.root());
        assert_eq!(c.digest(ROOT).count, 300);
        let rebuilt = DigestTree::from_frontier(b.frontier());
        assert_eq!(rebuilt.root(), b.root());
    }

    #[test]
    fn key_ranges_cover_the_key_space() {
        assert_eq!(key_range(ROOT), (0, u32::MAX));
        let b = Bucket {
            depth: 8,
            prefix: u32::MAX,
        };
        assert_eq!(key_range(b), (u32::MAX, u32::MAX));
        let b = Bucket {
            depth: 1,
            prefix: 15,
        };
        assert_eq!(key_range(b), (0xF000_0000, u32::MAX));
    }
}
