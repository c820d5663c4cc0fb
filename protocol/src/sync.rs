//! Sync decisions: version vectors (per-origin frontiers) and what to pull.
//!
//! A frontier maps each origin to the highest sequence number up to which a
//! node holds *every* record of that origin (contiguous). Comparing two
//! frontiers says exactly which ranges one side lacks, so catch-up fetches
//! nothing twice and a healed partition converges.

use std::collections::BTreeMap;

use libp2p_identity::PeerId;

use serde::{Deserialize, Serialize};

use crate::codec;
use crate::record::{ContentHash, SignedRecord};
use crate::wire::{
    bound, bound_record, check_version, Cursor, FrontierEntry, PatternRequest, PatternResponse,
    RequestFilters, SeqRange, VersionProbe, WireError, MAX_FRONTIER_ENTRIES, MAX_RANGES,
    MAX_RECORDS_PER_RESPONSE, MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES,
};

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

// ---- sync messages with frontier reconciliation (additive, wire v1) --------

/// Deepest level of the reconciliation tree (8 levels of 4 bits of a 32-bit
/// origin key).
pub const MAX_RECON_DEPTH: u8 = 8;
/// Most buckets in one reconciliation query or reply.
pub const MAX_RECON_BUCKETS: usize = 1024;

/// A bucket of the frontier digest tree: the origins whose 32-bit key starts
/// with the top `4 * depth` bits of `prefix` (`prefix` is right-aligned:
/// `key >> (32 - 4 * depth)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Bucket {
    pub depth: u8,
    pub prefix: u32,
}

/// A bucket's digest (XOR of its entries' 64-bit hashes) and entry count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BucketDigest {
    pub bucket: Bucket,
    pub count: u32,
    pub digest: u64,
}

/// Range-based reconciliation over the frontier (added in wire v1): "these
/// are my digests of these buckets". Older peers ignore the field.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReconQuery {
    pub buckets: Vec<BucketDigest>,
}

/// The answer for one differing bucket: its children's digests (to descend),
/// or, for a small or deepest bucket, the responder's entries in it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum ReconItem {
    Split {
        bucket: Bucket,
        children: Vec<BucketDigest>,
    },
    Entries {
        bucket: Bucket,
        entries: Vec<FrontierEntry>,
    },
}

/// The reply to a [`ReconQuery`]: one item per bucket that differs; buckets
/// equal on both sides are left out; `skipped` ones did not fit (ask again).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReconReply {
    pub items: Vec<ReconItem>,
    #[serde(default)]
    pub skipped: Vec<Bucket>,
}

impl ReconQuery {
    pub fn validate(&self) -> Result<(), WireError> {
        bound("recon.buckets", self.buckets.len(), MAX_RECON_BUCKETS)?;
        for b in &self.buckets {
            b.bucket.validate()?;
        }
        Ok(())
    }
}

impl Bucket {
    pub fn validate(&self) -> Result<(), WireError> {
        if self.depth > MAX_RECON_DEPTH {
            return Err(WireError::Bound {
                field: "recon.depth",
                reason: format!("{}; the limit is {MAX_RECON_DEPTH}", self.depth),
            });
        }
        let bits = 4 * u32::from(self.depth);
        if bits < 32 && u64::from(self.prefix) >= (1u64 << bits) {
            return Err(WireError::Bound {
                field: "recon.prefix",
                reason: format!("{} does not fit in {bits} bits", self.prefix),
            });
        }
        Ok(())
    }
}

impl ReconReply {
    pub fn validate(&self) -> Result<(), WireError> {
        bound("recon.items", self.items.len(), MAX_RECON_BUCKETS)?;
        bound("recon.skipped", self.skipped.len(), MAX_RECON_BUCKETS)?;
        let mut entries = 0usize;
        for i in &self.items {
            match i {
                ReconItem::Split { bucket, children } => {
                    bucket.validate()?;
                    bound("recon.children", children.len(), 16)?;
                    for c in children {
                        c.bucket.validate()?;
                    }
                }
                ReconItem::Entries { bucket, entries: e } => {
                    bucket.validate()?;
                    entries += e.len();
                }
            }
        }
        bound("recon.entries", entries, MAX_FRONTIER_ENTRIES)
    }
}

/// `pattern_request` as new nodes send it: the same CBOR map as
/// [`PatternRequest`] plus the optional `recon` field (so each decodes the
/// other's bytes; an old node ignores `recon`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncRequest {
    pub v: u16,
    #[serde(default)]
    pub ranges: Vec<SeqRange>,
    #[serde(default)]
    pub have: Option<Vec<FrontierEntry>>,
    #[serde(default)]
    pub filters: Option<RequestFilters>,
    #[serde(default)]
    pub cursor: Option<Cursor>,
    pub max_count: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promote: Option<SignedRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recon: Option<ReconQuery>,
}

/// `pattern_response` as new nodes send it: [`PatternResponse`] plus `recon`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncResponse {
    pub v: u16,
    pub records: Vec<SignedRecord>,
    pub more: bool,
    #[serde(default)]
    pub next_cursor: Option<Cursor>,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insight: Option<SignedRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recon: Option<ReconReply>,
}

impl SyncRequest {
    /// An empty request (no ranges, no `have`, no filters).
    pub fn new(max_count: u32) -> SyncRequest {
        SyncRequest {
            v: crate::wire::WIRE_VERSION,
            ranges: Vec::new(),
            have: None,
            filters: None,
            cursor: None,
            max_count,
            promote: None,
            recon: None,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        codec::to_cbor(self)
    }

    pub fn decode(bytes: &[u8]) -> Result<SyncRequest, WireError> {
        let probe: VersionProbe = codec::from_cbor(bytes, MAX_REQUEST_BYTES)?;
        check_version(probe.v)?;
        let req: SyncRequest = codec::from_cbor(bytes, MAX_REQUEST_BYTES)?;
        req.validate()?;
        Ok(req)
    }

    pub fn validate(&self) -> Result<(), WireError> {
        bound("ranges", self.ranges.len(), MAX_RANGES)?;
        if let Some(h) = &self.have {
            bound("have", h.len(), MAX_FRONTIER_ENTRIES)?;
        }
        if let Some(f) = &self.filters {
            f.validate()?;
        }
        if let Some(r) = &self.promote {
            bound_record("promote", r)?;
        }
        if let Some(q) = &self.recon {
            q.validate()?;
        }
        Ok(())
    }
}

impl SyncResponse {
    /// A refusal naming its reason.
    pub fn refusal(why: impl Into<String>) -> SyncResponse {
        SyncResponse {
            v: crate::wire::WIRE_VERSION,
            records: Vec::new(),
            more: false,
            next_cursor: None,
            error: Some(why.into()),
            insight: None,
            recon: None,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        codec::to_cbor(self)
    }

    pub fn decode(bytes: &[u8]) -> Result<SyncResponse, WireError> {
        let probe: VersionProbe = codec::from_cbor(bytes, MAX_RESPONSE_BYTES)?;
        check_version(probe.v)?;
        let resp: SyncResponse = codec::from_cbor(bytes, MAX_RESPONSE_BYTES)?;
        resp.validate()?;
        Ok(resp)
    }

    pub fn validate(&self) -> Result<(), WireError> {
        bound("records", self.records.len(), MAX_RECORDS_PER_RESPONSE)?;
        if let Some(r) = &self.insight {
            bound_record("insight", r)?;
        }
        if let Some(r) = &self.recon {
            r.validate()?;
        }
        Ok(())
    }
}

impl From<PatternRequest> for SyncRequest {
    fn from(r: PatternRequest) -> Self {
        SyncRequest {
            v: r.v,
            ranges: r.ranges,
            have: r.have,
            filters: r.filters,
            cursor: r.cursor,
            max_count: r.max_count,
            promote: r.promote,
            recon: None,
        }
    }
}

impl From<SyncRequest> for PatternRequest {
    fn from(r: SyncRequest) -> Self {
        PatternRequest {
            v: r.v,
            ranges: r.ranges,
            have: r.have,
            filters: r.filters,
            cursor: r.cursor,
            max_count: r.max_count,
            promote: r.promote,
        }
    }
}

impl From<PatternResponse> for SyncResponse {
    fn from(r: PatternResponse) -> Self {
        SyncResponse {
            v: r.v,
            records: r.records,
            more: r.more,
            next_cursor: r.next_cursor,
            error: r.error,
            insight: r.insight,
            recon: None,
        }
    }
}

impl From<SyncResponse> for PatternResponse {
    fn from(r: SyncResponse) -> Self {
        PatternResponse {
            v: r.v,
            records: r.records,
            more: r.more,
            next_cursor: r.next_cursor,
            error: r.error,
            insight: r.insight,
        }
    }
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

    #[test]
    fn sync_messages_and_old_messages_decode_each_other() {
        let mut req = SyncRequest::new(7);
        req.recon = Some(ReconQuery {
            buckets: vec![BucketDigest {
                bucket: Bucket {
                    depth: 1,
                    prefix: 3,
                },
                count: 2,
                digest: 99,
            }],
        });
        assert_eq!(SyncRequest::decode(&req.encode()).unwrap(), req);
        // an old node reads the new request and ignores `recon`
        let old = PatternRequest::decode(&req.encode()).unwrap();
        assert_eq!(old.max_count, 7);
        // a new node reads an old request
        let back = SyncRequest::decode(&old.encode()).unwrap();
        assert_eq!(back.recon, None);
        let resp = SyncResponse {
            recon: Some(ReconReply {
                items: vec![ReconItem::Entries {
                    bucket: Bucket {
                        depth: 8,
                        prefix: u32::MAX,
                    },
                    entries: vec![FrontierEntry {
                        origin: peer(1),
                        seq: 4,
                    }],
                }],
                skipped: vec![],
            }),
            ..SyncResponse::refusal("x")
        };
        assert_eq!(SyncResponse::decode(&resp.encode()).unwrap(), resp);
        assert!(PatternResponse::decode(&resp.encode()).is_ok());
    }

    #[test]
    fn bad_recon_buckets_are_refused() {
        let mut req = SyncRequest::new(1);
        req.recon = Some(ReconQuery {
            buckets: vec![BucketDigest {
                bucket: Bucket {
                    depth: 1,
                    prefix: 16,
                },
                count: 0,
                digest: 0,
            }],
        });
        assert_eq!(
            SyncRequest::decode(&req.encode()).unwrap_err().reason(),
            "bounds"
        );
        req.recon = Some(ReconQuery {
            buckets: vec![BucketDigest {
                bucket: Bucket {
                    depth: 9,
                    prefix: 0,
                },
                count: 0,
                digest: 0,
            }],
        });
        assert!(SyncRequest::decode(&req.encode()).is_err());
    }
}
