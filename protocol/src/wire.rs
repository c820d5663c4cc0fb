//! Wire messages (DESIGN §3), CBOR-encoded, versioned, bounded on decode.
//!
//! Gossipsub topics carry [`GossipMessage`]s; the `/metamesh/sync/1`
//! request-response protocol carries [`PatternRequest`] / [`PatternResponse`].
//! Every message has a version `v`; a message whose version is not
//! [`WIRE_VERSION`] decodes to [`WireError::UnknownVersion`], which nodes
//! ignore (no penalty) rather than treat as an attack.

use std::collections::BTreeMap;

use libp2p_identity::PeerId;
use serde::{Deserialize, Serialize};

use crate::codec::{self, CodecError};
use crate::record::{ContentHash, SignedRecord};
use crate::schema::Depth;

pub const WIRE_VERSION: u16 = 1;

pub use crate::sync::{
    Bucket, BucketDigest, ReconItem, ReconQuery, ReconReply, SyncRequest, SyncResponse,
    MAX_RECON_BUCKETS, MAX_RECON_DEPTH,
};

/// Largest gossip message, in bytes (also the gossipsub transmit limit).
pub const MAX_GOSSIP_BYTES: usize = 64 * 1024;
/// Most frontier entries carried in one announcement or request.
pub const MAX_FRONTIER_ENTRIES: usize = 1024;
/// Most ranges in one request.
pub const MAX_RANGES: usize = 1024;
/// Largest request, in bytes.
pub const MAX_REQUEST_BYTES: usize = 128 * 1024;
/// Largest response, in bytes.
pub const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;
/// Most records in one response.
pub const MAX_RECORDS_PER_RESPONSE: usize = 1024;
/// Most depths in a filter.
pub const MAX_FILTER_DEPTHS: usize = Depth::COUNT;

/// Every wire bound in one place (the constants above, re-exported).
pub mod limits {
    pub use super::{
        MAX_FILTER_DEPTHS, MAX_FRONTIER_ENTRIES, MAX_GOSSIP_BYTES, MAX_RANGES,
        MAX_RECORDS_PER_RESPONSE, MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES,
    };
    pub use crate::record::{MAX_BODY_BYTES, MAX_RECORD_BYTES};
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WireError {
    #[error("{0}")]
    Codec(#[from] CodecError),
    #[error("unknown message version {0}")]
    UnknownVersion(u16),
    #[error("{field}: {reason}")]
    Bound { field: &'static str, reason: String },
}

impl WireError {
    pub fn reason(&self) -> &'static str {
        match self {
            WireError::Codec(CodecError::TooLarge { .. }) => "too_large",
            WireError::Codec(_) => "decode",
            WireError::UnknownVersion(_) => "unknown_version",
            WireError::Bound { .. } => "bounds",
        }
    }
}

pub(crate) fn bound(field: &'static str, len: usize, max: usize) -> Result<(), WireError> {
    if len > max {
        return Err(WireError::Bound {
            field,
            reason: format!("{len} entries; the limit is {max}"),
        });
    }
    Ok(())
}

/// "Origin O: I hold every seq up to `seq`."
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FrontierEntry {
    pub origin: PeerId,
    pub seq: u64,
}

/// Inclusive sequence range of one origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SeqRange {
    pub origin: PeerId,
    pub from_seq: u64,
    pub to_seq: u64,
}

impl SeqRange {
    pub fn len(&self) -> u64 {
        if self.from_seq > self.to_seq {
            0
        } else {
            self.to_seq - self.from_seq + 1
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// `pattern_announcement` (protocol document, "Pattern Announcement").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PatternAnnouncement {
    pub v: u16,
    pub from: PeerId,
    pub pattern_count: u64,
    /// Digest of the sender's whole frontier ([`crate::sync::frontier_digest`]).
    pub patterns_hash: ContentHash,
    pub depth_distribution: BTreeMap<Depth, u64>,
    /// The sender's frontier, or its first [`MAX_FRONTIER_ENTRIES`] entries.
    pub frontier: Vec<FrontierEntry>,
    /// True when `frontier` was cut to the bound; compare `patterns_hash`.
    pub frontier_truncated: bool,
}

/// `insight_broadcast`: a signed insight record (kind `Insight`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InsightBroadcast {
    pub v: u16,
    pub record: SignedRecord,
}

/// `record_push` (added in wire v1, on the records topic): one signed
/// record pushed eagerly. Self-authenticating: the record's origin signed it,
/// whoever forwards it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordPush {
    pub v: u16,
    pub record: SignedRecord,
}

/// `digest_announcement` (added in wire v1, on the announce topic): a small
/// summary of the sender's frontier. `from` must be the message's author: a
/// node announces only for itself. A receiver whose own root differs
/// reconciles with the sender ([`ReconQuery`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DigestAnnouncement {
    pub v: u16,
    pub from: PeerId,
    /// Root digest of the frontier digest tree (see `metamesh_exchange::recon`).
    pub root: u64,
    /// Origins in the frontier.
    pub origins: u64,
    /// The sender's own highest seq (0 when it has none or does not share).
    pub own_seq: u64,
    /// Unix seconds when sent (two announcements of an unchanged frontier
    /// are different messages, so gossipsub does not drop the later one).
    pub at: u64,
}

/// What travels on gossipsub topics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum GossipMessage {
    PatternAnnouncement(PatternAnnouncement),
    InsightBroadcast(InsightBroadcast),
    RecordPush(RecordPush),
    DigestAnnouncement(DigestAnnouncement),
}

/// The seed's request filters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RequestFilters {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depths: Option<Vec<Depth>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_quality: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_timestamp: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_count: Option<u32>,
}

impl RequestFilters {
    pub fn validate(&self) -> Result<(), WireError> {
        if let Some(d) = &self.depths {
            bound("depths", d.len(), MAX_FILTER_DEPTHS)?;
        }
        if let Some(q) = self.min_quality {
            if !q.is_finite() {
                return Err(WireError::Bound {
                    field: "min_quality",
                    reason: "must be finite".into(),
                });
            }
        }
        if let Some(t) = self.min_timestamp {
            if !t.is_finite() {
                return Err(WireError::Bound {
                    field: "min_timestamp",
                    reason: "must be finite".into(),
                });
            }
        }
        Ok(())
    }

    /// Does a pattern pass these filters?
    pub fn matches(&self, p: &crate::schema::Pattern) -> bool {
        self.depths
            .as_ref()
            .is_none_or(|d| d.contains(&p.depth_used))
            && self.min_quality.is_none_or(|q| p.quality_achieved >= q)
            && self.min_timestamp.is_none_or(|t| p.timestamp >= t)
    }
}

/// Resume point of a filtered query: the last (origin, seq) already returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    pub origin: PeerId,
    pub seq: u64,
}

/// `pattern_request` (unicast, `/metamesh/sync/1`). Either or both of:
/// exact `ranges` to fetch; `have`, the requester's frontier, meaning "send
/// what I lack"; and/or the seed's `filters`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PatternRequest {
    pub v: u16,
    #[serde(default)]
    pub ranges: Vec<SeqRange>,
    #[serde(default)]
    pub have: Option<Vec<FrontierEntry>>,
    #[serde(default)]
    pub filters: Option<RequestFilters>,
    #[serde(default)]
    pub cursor: Option<Cursor>,
    /// Most records wanted in the answer (the responder applies its own cap too).
    pub max_count: u32,
    /// Parent/child promotion (added in wire v1, optional): the requester's
    /// own signed insight record (kind `Insight`, origin = the requester),
    /// offered to a parent. Older peers omit it and ignore it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promote: Option<SignedRecord>,
}

/// `pattern_response`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PatternResponse {
    pub v: u16,
    pub records: Vec<SignedRecord>,
    /// More records match; ask again (with `next_cursor` for filtered queries,
    /// or with an updated frontier).
    pub more: bool,
    #[serde(default)]
    pub next_cursor: Option<Cursor>,
    /// Set when the request was refused (rate limit, bad request).
    #[serde(default)]
    pub error: Option<String>,
    /// Parent/child inheritance (added in wire v1, optional): the
    /// responder's latest signed insight record of its own, when the request
    /// asked with `have` (a catching-up peer). Older peers omit it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insight: Option<SignedRecord>,
}

/// An optional record carried in a request or response must be one
/// envelope within the record bounds.
pub(crate) fn bound_record(field: &'static str, r: &SignedRecord) -> Result<(), WireError> {
    if r.body.len() > crate::record::MAX_BODY_BYTES
        || r.signer.len() + r.signature.len()
            > crate::record::MAX_RECORD_BYTES - crate::record::MAX_BODY_BYTES
    {
        return Err(WireError::Bound {
            field,
            reason: format!(
                "record of {} body bytes; the limit is {}",
                r.body.len(),
                crate::record::MAX_BODY_BYTES
            ),
        });
    }
    Ok(())
}

#[derive(Deserialize)]
pub(crate) struct VersionProbe {
    pub(crate) v: u16,
}

#[derive(Deserialize)]
struct TaggedProbe {
    #[serde(flatten)]
    inner: VersionProbeInner,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum VersionProbeInner {
    PatternAnnouncement(VersionProbe),
    InsightBroadcast(VersionProbe),
    RecordPush(VersionProbe),
    DigestAnnouncement(VersionProbe),
}

pub(crate) fn check_version(v: u16) -> Result<(), WireError> {
    if v != WIRE_VERSION {
        return Err(WireError::UnknownVersion(v));
    }
    Ok(())
}

impl GossipMessage {
    pub fn encode(&self) -> Vec<u8> {
        codec::to_cbor(self)
    }

    pub fn decode(bytes: &[u8]) -> Result<GossipMessage, WireError> {
        let probe: TaggedProbe = codec::from_cbor(bytes, MAX_GOSSIP_BYTES)?;
        let v = match probe.inner {
            VersionProbeInner::PatternAnnouncement(p)
            | VersionProbeInner::InsightBroadcast(p)
            | VersionProbeInner::RecordPush(p)
            | VersionProbeInner::DigestAnnouncement(p) => p.v,
        };
        check_version(v)?;
        let msg: GossipMessage = codec::from_cbor(bytes, MAX_GOSSIP_BYTES)?;
        if let GossipMessage::PatternAnnouncement(a) = &msg {
            bound("frontier", a.frontier.len(), MAX_FRONTIER_ENTRIES)?;
            bound(
                "depth_distribution",
                a.depth_distribution.len(),
                Depth::COUNT,
            )?;
        }
        if let GossipMessage::RecordPush(p) = &msg {
            bound_record("record", &p.record)?;
        }
        Ok(msg)
    }
}

impl PatternRequest {
    pub fn encode(&self) -> Vec<u8> {
        codec::to_cbor(self)
    }

    pub fn decode(bytes: &[u8]) -> Result<PatternRequest, WireError> {
        let probe: VersionProbe = codec::from_cbor(bytes, MAX_REQUEST_BYTES)?;
        check_version(probe.v)?;
        let req: PatternRequest = codec::from_cbor(bytes, MAX_REQUEST_BYTES)?;
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
        Ok(())
    }
}

impl PatternResponse {
    pub fn encode(&self) -> Vec<u8> {
        codec::to_cbor(self)
    }

    pub fn decode(bytes: &[u8]) -> Result<PatternResponse, WireError> {
        let probe: VersionProbe = codec::from_cbor(bytes, MAX_RESPONSE_BYTES)?;
        check_version(probe.v)?;
        let resp: PatternResponse = codec::from_cbor(bytes, MAX_RESPONSE_BYTES)?;
        bound("records", resp.records.len(), MAX_RECORDS_PER_RESPONSE)?;
        if let Some(r) = &resp.insight {
            bound_record("insight", r)?;
        }
        Ok(resp)
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
    fn announcement_round_trip() {
        let a = GossipMessage::PatternAnnouncement(PatternAnnouncement {
            v: WIRE_VERSION,
            from: peer(1),
            pattern_count: 50,
            patterns_hash: ContentHash::of(b"x"),
            depth_distribution: [
                (Depth::Minimal, 5),
                (Depth::Standard, 30),
                (Depth::Deep, 15),
            ]
            .into(),
            frontier: vec![FrontierEntry {
                origin: peer(1),
                seq: 50,
            }],
            frontier_truncated: false,
        });
        assert_eq!(GossipMessage::decode(&a.encode()).unwrap(), a);
    }

    #[test]
    fn unknown_version_is_reported_as_such() {
        let r = PatternRequest {
            v: 9,
            ranges: vec![],
            have: None,
            filters: None,
            cursor: None,
            max_count: 10,
            promote: None,
        };
        assert_eq!(
            PatternRequest::decode(&r.encode()).unwrap_err(),
            WireError::UnknownVersion(9)
        );
    }

    #[test]
    fn seed_request_filters_parse_from_json() {
        let j = r#"{"depths": ["standard", "deep"], "min_quality": 0.4, "min_timestamp": 1704900000.0, "max_count": 100}"#;
        let f: RequestFilters = serde_json::from_str(j).unwrap();
        assert_eq!(f.depths.unwrap(), vec![Depth::Standard, Depth::Deep]);
        assert_eq!(f.max_count, Some(100));
    }

    #[test]
    fn oversized_lists_are_refused() {
        let r = PatternRequest {
            v: WIRE_VERSION,
            ranges: vec![
                SeqRange {
                    origin: peer(1),
                    from_seq: 1,
                    to_seq: 2
                };
                MAX_RANGES + 1
            ],
            have: None,
            filters: None,
            cursor: None,
            max_count: 10,
            promote: None,
        };
        assert_eq!(
            PatternRequest::decode(&r.encode()).unwrap_err().reason(),
            "bounds"
        );
    }

    fn insight_record(i: u8) -> SignedRecord {
        let key = Keypair::ed25519_from_bytes([i; 32]).unwrap();
        let body = crate::InsightBody {
            v: crate::record::BODY_VERSION,
            origin: key.public().to_peer_id(),
            seq: 7,
            prev_seq: None,
            computed_at: 1_700_000_000.0,
            stats: Default::default(),
            insights: Default::default(),
        };
        SignedRecord::sign_insight(&body, &key)
    }

    #[test]
    fn promotion_and_inheritance_fields_round_trip() {
        let req = PatternRequest {
            v: WIRE_VERSION,
            ranges: vec![],
            have: Some(vec![FrontierEntry {
                origin: peer(2),
                seq: 3,
            }]),
            filters: None,
            cursor: None,
            max_count: 10,
            promote: Some(insight_record(2)),
        };
        assert_eq!(PatternRequest::decode(&req.encode()).unwrap(), req);
        let resp = PatternResponse {
            v: WIRE_VERSION,
            records: vec![],
            more: false,
            next_cursor: None,
            error: None,
            insight: Some(insight_record(3)),
        };
        assert_eq!(PatternResponse::decode(&resp.encode()).unwrap(), resp);
    }

    #[test]
    fn messages_without_the_new_fields_still_decode() {
        // What an older peer sends: the same maps without promote / insight.
        #[derive(Serialize)]
        struct OldRequest {
            v: u16,
            ranges: Vec<SeqRange>,
            max_count: u32,
        }
        #[derive(Serialize)]
        struct OldResponse {
            v: u16,
            records: Vec<SignedRecord>,
            more: bool,
        }
        let req = PatternRequest::decode(&codec::to_cbor(&OldRequest {
            v: WIRE_VERSION,
            ranges: vec![],
            max_count: 5,
        }))
        .unwrap();
        assert_eq!(req.promote, None);
        assert_eq!(req.max_count, 5);
        let resp = PatternResponse::decode(&codec::to_cbor(&OldResponse {
            v: WIRE_VERSION,
            records: vec![],
            more: true,
        }))
        .unwrap();
        assert_eq!(resp.insight, None);
        assert!(resp.more);
        // And an unset field is not written at all (old peers see old bytes).
        let plain = PatternRequest {
            v: WIRE_VERSION,
            ranges: vec![],
            have: None,
            filters: None,
            cursor: None,
            max_count: 5,
            promote: None,
        };
        assert!(!plain.encode().windows(7).any(|w| w == b"promote"));
    }

    #[test]
    fn an_oversized_promoted_record_is_refused() {
        let mut r = insight_record(4);
        r.body = vec![0u8; crate::record::MAX_BODY_BYTES + 1];
        let req = PatternRequest {
            v: WIRE_VERSION,
            ranges: vec![],
            have: None,
            filters: None,
            cursor: None,
            max_count: 5,
            promote: Some(r),
        };
        assert_eq!(
            PatternRequest::decode(&req.encode()).unwrap_err().reason(),
            "bounds"
        );
    }

    #[test]
    fn garbage_is_an_error() {
        for b in [&[][..], &[0xff, 0x00], &[0x9f; 100], b"hello"] {
            assert!(GossipMessage::decode(b).is_err());
            assert!(PatternRequest::decode(b).is_err());
            assert!(PatternResponse::decode(b).is_err());
        }
    }
}
