//! Signed records: sign bytes, not structures.
//!
//! A body (a pattern or an insight set) is CBOR-encoded once. The envelope
//! carries those bytes, the signer's `PeerId` and an ed25519 signature over a
//! domain tag (which also fixes the record kind) followed by the body bytes.
//! Verifiers check the signature on the received bytes and only then decode.
//! An ed25519 `PeerId` embeds its public key, so the envelope alone is enough
//! to verify. The content hash (blake3 of the body bytes) is the dedup key.

use libp2p_identity::{Keypair, PeerId, PublicKey};
use serde::{Deserialize, Serialize};

use crate::codec::{self, CodecError};
use crate::insights::InsightSet;
use crate::schema::{Pattern, SchemaError};
use crate::stats::DepthTable;

/// Largest body of any record, in bytes.
pub const MAX_BODY_BYTES: usize = 16 * 1024;
/// Largest encoded envelope, in bytes.
pub const MAX_RECORD_BYTES: usize = MAX_BODY_BYTES + 256;
/// Current body format version. Bodies with another version are ignored.
pub const BODY_VERSION: u16 = 1;

/// What a record carries; part of the signed domain tag, so a signature for
/// one kind can never be replayed as another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordKind {
    Pattern,
    Insight,
}

impl RecordKind {
    fn domain(self) -> &'static [u8] {
        match self {
            RecordKind::Pattern => b"metamesh/record/pattern/v1\0",
            RecordKind::Insight => b"metamesh/record/insight/v1\0",
        }
    }
}

/// blake3 of a record's body bytes: the dedup key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ContentHash(#[serde(with = "serde_bytes_array")] pub [u8; 32]);

impl ContentHash {
    pub fn of(bytes: &[u8]) -> Self {
        ContentHash(*blake3::hash(bytes).as_bytes())
    }
    pub fn to_hex(&self) -> String {
        blake3::Hash::from(self.0).to_hex().to_string()
    }
}

impl std::fmt::Debug for ContentHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ContentHash({})", &self.to_hex()[..16])
    }
}

impl std::fmt::Display for ContentHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

mod serde_bytes_array {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        serde_bytes::Bytes::new(v).serialize(s)
    }
    use serde::Serialize;
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let b = serde_bytes::ByteBuf::deserialize(d)?;
        b.into_vec()
            .try_into()
            .map_err(|_| serde::de::Error::custom("expected 32 bytes"))
    }
}

/// The signed envelope, as it travels and as it is stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedRecord {
    pub kind: RecordKind,
    /// The CBOR body, exactly as signed.
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
    /// The signer's PeerId, as bytes.
    #[serde(with = "serde_bytes")]
    pub signer: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
}

/// A pattern as signed by its origin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PatternBody {
    pub v: u16,
    /// The signer; must equal the envelope's signer.
    pub origin: PeerId,
    /// Per-origin sequence number: increasing, not necessarily contiguous
    /// (own seqs are `epoch << 32 | counter`).
    pub seq: u64,
    /// The origin's previous seq; absent means `seq - 1`. The first record of
    /// an epoch names the last seq of the one before (see [`extends_frontier`]).
    #[serde(rename = "prev", default, skip_serializing_if = "Option::is_none")]
    pub prev_seq: Option<u64>,
    pub pattern: Pattern,
}

impl PatternBody {
    /// The origin's previous seq (`prev_seq`, or `seq - 1` when absent).
    pub fn prev(&self) -> u64 {
        prev_of(self.seq, self.prev_seq)
    }
}

/// `prev`, or `seq - 1` when absent.
pub fn prev_of(seq: u64, prev: Option<u64>) -> u64 {
    prev.unwrap_or(seq.saturating_sub(1))
}

/// Does a record `(seq, prev)` extend a per-origin frontier `f` (the highest
/// seq of a gap-free chain held)? Iff `prev <= f < seq`: the record follows
/// something at or below the frontier and lies above it. A record with
/// `prev > f` waits until the frontier reaches `prev`; seq ranges can be
/// sparse (an epoch gap spans ~2^32 empty slots), so nothing may count by
/// range span.
pub fn extends_frontier(frontier: u64, seq: u64, prev: u64) -> bool {
    prev <= frontier && frontier < seq
}

/// An origin's insights plus the per-depth sufficient statistics of its own
/// patterns that they were computed from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InsightBody {
    pub v: u16,
    pub origin: PeerId,
    /// Monotonic per origin: a newer broadcast replaces an older one.
    pub seq: u64,
    /// As in [`PatternBody::prev_seq`] (CBOR key `prev`, omitted when absent).
    #[serde(rename = "prev", default, skip_serializing_if = "Option::is_none")]
    pub prev_seq: Option<u64>,
    /// Unix seconds when computed.
    pub computed_at: f64,
    pub stats: DepthTable,
    pub insights: InsightSet,
}

/// Why a record was refused. Each variant is a rejection reason that the node
/// counts and charges against the sender's reputation.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RecordError {
    #[error("record is {0} bytes; the limit is {MAX_RECORD_BYTES}")]
    TooLarge(usize),
    #[error("malformed record: {0}")]
    Decode(#[from] CodecError),
    #[error("signer is not a valid ed25519 PeerId")]
    BadSigner,
    #[error("signature does not verify")]
    BadSignature,
    #[error("body version {0} is not supported")]
    UnsupportedVersion(u16),
    #[error("body origin does not match the signer")]
    OriginMismatch,
    /// seq is 0, or the body's `prev` is not below its seq.
    #[error("sequence number must be at least 1 and above its prev")]
    BadSeq,
    #[error("invalid pattern: {0}")]
    Schema(#[from] SchemaError),
    #[error("record kind is {0:?}, expected {1:?}")]
    WrongKind(RecordKind, RecordKind),
}

impl RecordError {
    /// A stable short name, for counters and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            RecordError::TooLarge(_) => "too_large",
            RecordError::Decode(_) => "decode",
            RecordError::BadSigner => "bad_signer",
            RecordError::BadSignature => "bad_signature",
            RecordError::UnsupportedVersion(_) => "unsupported_version",
            RecordError::OriginMismatch => "origin_mismatch",
            RecordError::BadSeq => "bad_seq",
            RecordError::Schema(_) => "schema",
            RecordError::WrongKind(..) => "wrong_kind",
        }
    }
}

/// Checks shared by every body kind: supported version, origin = the
/// verified signer, and a real sequence number.
fn check_header(
    v: u16,
    origin: &PeerId,
    seq: u64,
    prev: Option<u64>,
    signer: &PeerId,
) -> Result<(), RecordError> {
    if v != BODY_VERSION {
        return Err(RecordError::UnsupportedVersion(v));
    }
    if origin != signer {
        return Err(RecordError::OriginMismatch);
    }
    if seq == 0 {
        return Err(RecordError::BadSeq);
    }
    if let Some(prev) = prev {
        if prev >= seq {
            return Err(RecordError::BadSeq);
        }
    }
    Ok(())
}

/// The ed25519 public key embedded in an ed25519 `PeerId`.
pub fn ed25519_key_of(peer: &PeerId) -> Option<libp2p_identity::ed25519::PublicKey> {
    let mh = peer.as_ref();
    if mh.code() != 0 {
        return None; // hashed (non-inline) key: not ed25519
    }
    PublicKey::try_decode_protobuf(mh.digest())
        .ok()?
        .try_into_ed25519()
        .ok()
}

fn signed_message(kind: RecordKind, body: &[u8]) -> Vec<u8> {
    let domain = kind.domain();
    let mut msg = Vec::with_capacity(domain.len() + body.len());
    msg.extend_from_slice(domain);
    msg.extend_from_slice(body);
    msg
}

impl SignedRecord {
    /// Sign already-encoded body bytes.
    pub fn sign_bytes(kind: RecordKind, body: Vec<u8>, key: &Keypair) -> SignedRecord {
        // ed25519 signing cannot fail; other key types are refused at start-up,
        // so an empty signature (which never verifies) is the safe fallback.
        let signature = key.sign(&signed_message(kind, &body)).unwrap_or_default();
        SignedRecord {
            kind,
            body,
            signer: key.public().to_peer_id().to_bytes(),
            signature,
        }
    }

    /// Encode and sign a pattern as `seq` of the key's PeerId (previous seq `seq - 1`).
    pub fn sign_pattern(pattern: Pattern, seq: u64, key: &Keypair) -> SignedRecord {
        SignedRecord::sign_pattern_after(pattern, seq, None, key).0
    }

    /// Encode and sign a pattern as `seq` with an explicit previous seq
    /// (`None`: `seq - 1`); also returns the body as signed.
    pub fn sign_pattern_after(
        pattern: Pattern,
        seq: u64,
        prev_seq: Option<u64>,
        key: &Keypair,
    ) -> (SignedRecord, PatternBody) {
        let body = PatternBody {
            v: BODY_VERSION,
            origin: key.public().to_peer_id(),
            seq,
            prev_seq,
            pattern,
        };
        let rec = SignedRecord::sign_bytes(RecordKind::Pattern, codec::to_cbor(&body), key);
        (rec, body)
    }

    /// Encode and sign an insight body (its `origin` must be the key's PeerId).
    pub fn sign_insight(body: &InsightBody, key: &Keypair) -> SignedRecord {
        SignedRecord::sign_bytes(RecordKind::Insight, codec::to_cbor(body), key)
    }

    pub fn content_hash(&self) -> ContentHash {
        ContentHash::of(&self.body)
    }

    pub fn signer_peer(&self) -> Result<PeerId, RecordError> {
        PeerId::from_bytes(&self.signer).map_err(|_| RecordError::BadSigner)
    }

    /// Check size and signature over the received bytes. Does not decode the body.
    pub fn verify_signature(&self) -> Result<PeerId, RecordError> {
        if self.body.len() > MAX_BODY_BYTES {
            return Err(RecordError::TooLarge(self.body.len()));
        }
        let peer = self.signer_peer()?;
        let key = ed25519_key_of(&peer).ok_or(RecordError::BadSigner)?;
        if !key.verify(&signed_message(self.kind, &self.body), &self.signature) {
            return Err(RecordError::BadSignature);
        }
        Ok(peer)
    }

    /// Verify, then decode a pattern body and check its schema and its origin.
    /// `now` (unix seconds) bounds future timestamps.
    pub fn open_pattern(&self, now: f64) -> Result<PatternBody, RecordError> {
        if self.kind != RecordKind::Pattern {
            return Err(RecordError::WrongKind(self.kind, RecordKind::Pattern));
        }
        let signer = self.verify_signature()?;
        self.decode_pattern_unverified(signer, now)
    }

    /// Decode and check a pattern body whose signature was already verified
    /// (for example in a batch). `signer` is the verified signer.
    pub fn decode_pattern_unverified(
        &self,
        signer: PeerId,
        now: f64,
    ) -> Result<PatternBody, RecordError> {
        let body: PatternBody = codec::from_cbor(&self.body, MAX_BODY_BYTES)?;
        check_header(body.v, &body.origin, body.seq, body.prev_seq, &signer)?;
        body.pattern.validate(now)?;
        Ok(body)
    }

    /// Verify, then decode an insight body.
    pub fn open_insight(&self) -> Result<InsightBody, RecordError> {
        if self.kind != RecordKind::Insight {
            return Err(RecordError::WrongKind(self.kind, RecordKind::Insight));
        }
        let signer = self.verify_signature()?;
        self.decode_insight_unverified(signer)
    }

    /// Decode and check an insight body whose signature was already
    /// verified. `signer` is the verified signer.
    pub fn decode_insight_unverified(&self, signer: PeerId) -> Result<InsightBody, RecordError> {
        let body: InsightBody = codec::from_cbor(&self.body, MAX_BODY_BYTES)?;
        check_header(body.v, &body.origin, body.seq, body.prev_seq, &signer)?;
        if !body.computed_at.is_finite() {
            return Err(SchemaError::new("computed_at", "must be finite").into());
        }
        body.stats.validate()?;
        body.insights.validate()?;
        Ok(body)
    }

    /// Encoded envelope bytes (CBOR).
    pub fn to_bytes(&self) -> Vec<u8> {
        codec::to_cbor(self)
    }

    /// Decode an envelope, bounded by [`MAX_RECORD_BYTES`].
    pub fn from_bytes(bytes: &[u8]) -> Result<SignedRecord, RecordError> {
        if bytes.len() > MAX_RECORD_BYTES {
            return Err(RecordError::TooLarge(bytes.len()));
        }
        Ok(codec::from_cbor(bytes, MAX_RECORD_BYTES)?)
    }
}

/// Parsed signer keys, so each signer's PeerId is parsed and its ed25519
/// point decompressed once rather than per record (~12 µs saved per
/// record). Bounded: cleared when it reaches [`KeyCache::CAPACITY`] signers.
#[derive(Default)]
pub struct KeyCache {
    keys: std::collections::HashMap<Vec<u8>, Option<(PeerId, ed25519_dalek::VerifyingKey)>>,
}

impl KeyCache {
    /// Most signers kept.
    pub const CAPACITY: usize = 4096;

    pub fn new() -> Self {
        Self::default()
    }

    /// The signer's PeerId and verifying key (cached, also when invalid).
    pub fn get(
        &mut self,
        signer: &[u8],
    ) -> Result<(PeerId, ed25519_dalek::VerifyingKey), RecordError> {
        if let Some(k) = self.keys.get(signer) {
            return k.ok_or(RecordError::BadSigner);
        }
        let parsed = (|| {
            let peer = PeerId::from_bytes(signer).ok()?;
            let key = ed25519_key_of(&peer)?;
            let vk = ed25519_dalek::VerifyingKey::from_bytes(&key.to_bytes()).ok()?;
            Some((peer, vk))
        })();
        if self.keys.len() >= Self::CAPACITY {
            self.keys.clear();
        }
        self.keys.insert(signer.to_vec(), parsed);
        parsed.ok_or(RecordError::BadSigner)
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// Verify many records' signatures at once (ed25519 batch verification).
/// Returns, per record, the verified signer or the error. Falls back to
/// one-by-one checks when the batch fails, to find the bad ones.
pub fn verify_batch(records: &[SignedRecord]) -> Vec<Result<PeerId, RecordError>> {
    verify_batch_cached(records, &mut KeyCache::new())
}

/// [`verify_batch`] with a caller-kept [`KeyCache`] (decode each signer once
/// across batches).
pub fn verify_batch_cached(
    records: &[SignedRecord],
    cache: &mut KeyCache,
) -> Vec<Result<PeerId, RecordError>> {
    let keys = cache.resolve(records);
    verify_resolved(records, &keys)
}

/// A signer resolved by [`KeyCache::resolve`].
pub type ResolvedKey = Result<(PeerId, ed25519_dalek::VerifyingKey), RecordError>;

impl KeyCache {
    /// Each record's signer, from the cache (for [`verify_resolved`], which
    /// can then run on other threads).
    pub fn resolve(&mut self, records: &[SignedRecord]) -> Vec<ResolvedKey> {
        records.iter().map(|r| self.get(&r.signer)).collect()
    }
}

/// Batch-verify records whose signers were resolved (`keys[i]` for
/// `records[i]`); as [`verify_batch`].
pub fn verify_resolved(
    records: &[SignedRecord],
    keys: &[ResolvedKey],
) -> Vec<Result<PeerId, RecordError>> {
    let mut out: Vec<Result<PeerId, RecordError>> = Vec::with_capacity(records.len());
    let mut msgs = Vec::with_capacity(records.len());
    let mut sigs = Vec::with_capacity(records.len());
    let mut vks = Vec::with_capacity(records.len());
    let mut idx = Vec::with_capacity(records.len());
    for (i, r) in records.iter().enumerate() {
        let pre = (|| {
            if r.body.len() > MAX_BODY_BYTES {
                return Err(RecordError::TooLarge(r.body.len()));
            }
            let (peer, vk) = keys
                .get(i)
                .cloned()
                .unwrap_or(Err(RecordError::BadSigner))?;
            let sig = ed25519_dalek::Signature::from_slice(&r.signature)
                .map_err(|_| RecordError::BadSignature)?;
            Ok((peer, vk, sig))
        })();
        match pre {
            Ok((peer, vk, sig)) => {
                msgs.push(signed_message(r.kind, &r.body));
                sigs.push(sig);
                vks.push(vk);
                idx.push(i);
                out.push(Ok(peer));
            }
            Err(e) => out.push(Err(e)),
        }
    }
    if idx.is_empty() {
        return out;
    }
    let msg_refs: Vec<&[u8]> = msgs.iter().map(Vec::as_slice).collect();
    if ed25519_dalek::verify_batch(&msg_refs, &sigs, &vks).is_err() {
        for (j, &i) in idx.iter().enumerate() {
            if vks[j].verify_strict(msg_refs[j], &sigs[j]).is_err() {
                out[i] = Err(RecordError::BadSignature);
            }
        }
    }
    out
}

/// Two records are an equivocation when the same origin signed two different
/// bodies for the same sequence number.
pub fn is_equivocation(
    a: &PatternBody,
    a_hash: &ContentHash,
    b: &PatternBody,
    b_hash: &ContentHash,
) -> bool {
    a.origin == b.origin && a.seq == b.seq && a_hash != b_hash
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{tests::sample, Depth};

    const NOW: f64 = 1_800_000_000.0;

    fn key(seed: u8) -> Keypair {
        Keypair::ed25519_from_bytes([seed; 32]).unwrap()
    }

    #[test]
    fn sign_and_open_pattern() {
        let k = key(1);
        let r = SignedRecord::sign_pattern(sample("n", Depth::Deep, 0.7), 1, &k);
        let body = r.open_pattern(NOW).unwrap();
        assert_eq!(body.origin, k.public().to_peer_id());
        assert_eq!(body.seq, 1);
        let bytes = r.to_bytes();
        assert_eq!(SignedRecord::from_bytes(&bytes).unwrap(), r);
    }

    #[test]
    fn tampering_fails() {
        let k = key(1);
        let r = SignedRecord::sign_pattern(sample("n", Depth::Deep, 0.7), 1, &k);
        let mut t = r.clone();
        let last = t.body.len() - 1;
        t.body[last] ^= 1;
        assert_eq!(t.open_pattern(NOW).unwrap_err(), RecordError::BadSignature);
        let mut t = r.clone();
        t.signature[0] ^= 1;
        assert_eq!(t.open_pattern(NOW).unwrap_err(), RecordError::BadSignature);
        let mut t = r.clone();
        t.signer = key(2).public().to_peer_id().to_bytes();
        assert_eq!(t.open_pattern(NOW).unwrap_err(), RecordError::BadSignature);
        let mut t = r.clone();
        t.kind = RecordKind::Insight;
        assert!(t.open_insight().is_err());
    }

    #[test]
    fn origin_must_match_signer() {
        let body = PatternBody {
            v: BODY_VERSION,
            origin: key(2).public().to_peer_id(),
            seq: 1,
            prev_seq: None,
            pattern: sample("n", Depth::Deep, 0.7),
        };
        let r = SignedRecord::sign_bytes(RecordKind::Pattern, codec::to_cbor(&body), &key(1));
        assert_eq!(
            r.open_pattern(NOW).unwrap_err(),
            RecordError::OriginMismatch
        );
    }

    #[test]
    fn invalid_pattern_in_valid_signature_is_schema_error() {
        let mut p = sample("n", Depth::Deep, 0.7);
        p.quality_achieved = 3.0;
        let r = SignedRecord::sign_pattern(p, 1, &key(1));
        assert_eq!(r.open_pattern(NOW).unwrap_err().reason(), "schema");
    }

    #[test]
    fn batch_verification_finds_the_bad_one() {
        let mut rs: Vec<_> = (1..=8)
            .map(|i| {
                SignedRecord::sign_pattern(
                    sample("n", Depth::Light, 0.1 * i as f64),
                    i,
                    &key(i as u8),
                )
            })
            .collect();
        assert!(verify_batch(&rs).iter().all(Result::is_ok));
        rs[3].signature[5] ^= 0x40;
        rs[6].signer = vec![1, 2, 3];
        let out = verify_batch(&rs);
        for (i, o) in out.iter().enumerate() {
            match i {
                3 => assert_eq!(o.as_ref().unwrap_err(), &RecordError::BadSignature),
                6 => assert_eq!(o.as_ref().unwrap_err(), &RecordError::BadSigner),
                _ => assert!(o.is_ok()),
            }
        }
    }

    #[test]
    fn insight_records_are_validated_after_the_signature() {
        let k = key(4);
        let stats = DepthTable::from_patterns([&sample("n", Depth::Deep, 0.7)]);
        let insights =
            crate::insights::compute(&stats, None, &crate::posterior::Prior::default(), NOW);
        let mut body = InsightBody {
            v: BODY_VERSION,
            origin: k.public().to_peer_id(),
            seq: 1,
            prev_seq: None,
            computed_at: NOW,
            stats,
            insights,
        };
        assert_eq!(
            SignedRecord::sign_insight(&body, &k)
                .open_insight()
                .unwrap(),
            body
        );
        body.insights.insights[0].confidence = 1.5;
        let e = SignedRecord::sign_insight(&body, &k)
            .open_insight()
            .unwrap_err();
        assert_eq!(e.reason(), "schema");
        body.insights.insights[0].confidence = 0.5;
        body.computed_at = f64::INFINITY;
        assert_eq!(
            SignedRecord::sign_insight(&body, &k)
                .open_insight()
                .unwrap_err()
                .reason(),
            "schema"
        );
        body.computed_at = NOW;
        body.stats.0[0].successes = 99;
        assert_eq!(
            SignedRecord::sign_insight(&body, &k)
                .open_insight()
                .unwrap_err()
                .reason(),
            "schema"
        );
    }

    #[test]
    fn prev_seq_is_optional_and_checked() {
        let k = key(5);
        // A body without `prev` (today's records) decodes with prev = seq - 1.
        let r = SignedRecord::sign_pattern(sample("n", Depth::Deep, 0.7), 7, &k);
        let b = r.open_pattern(NOW).unwrap();
        assert_eq!((b.prev_seq, b.prev()), (None, 6));
        let v: ciborium::Value = codec::from_cbor(&r.body, MAX_BODY_BYTES).unwrap();
        let has_prev = v
            .as_map()
            .unwrap()
            .iter()
            .any(|(k, _)| k.as_text() == Some("prev"));
        assert!(!has_prev, "prev omitted when None");
        let seq = (5u64 << 32) | 1;
        let (r, body) =
            SignedRecord::sign_pattern_after(sample("n", Depth::Deep, 0.7), seq, Some(7), &k);
        let b = r.open_pattern(NOW).unwrap();
        assert_eq!(b, body);
        assert_eq!(b.prev(), 7);
        let (r, _) =
            SignedRecord::sign_pattern_after(sample("n", Depth::Deep, 0.7), 7, Some(7), &k);
        assert_eq!(r.open_pattern(NOW).unwrap_err(), RecordError::BadSeq);
    }

    #[test]
    fn frontier_extension_rule() {
        assert!(extends_frontier(0, 1, 0));
        assert!(extends_frontier(6, 7, 6));
        assert!(!extends_frontier(6, 6, 5), "at or below the frontier");
        assert!(!extends_frontier(5, 7, 6), "waits for prev");
        let epoch = 9u64 << 32 | 1;
        assert!(extends_frontier(7, epoch, 7));
        assert!(extends_frontier(9, epoch, 7), "prev below the frontier");
        assert!(!extends_frontier(6, epoch, 7));
    }

    #[test]
    fn key_cache_decodes_once_and_caches_bad_signers() {
        let mut c = KeyCache::new();
        let k = key(8);
        let r = SignedRecord::sign_pattern(sample("n", Depth::Deep, 0.7), 1, &k);
        let rs = vec![r.clone(), r.clone(), r];
        assert!(verify_batch_cached(&rs, &mut c).iter().all(Result::is_ok));
        assert_eq!(c.len(), 1);
        assert_eq!(c.get(&[1, 2, 3]).unwrap_err(), RecordError::BadSigner);
        assert_eq!(c.get(&[1, 2, 3]).unwrap_err(), RecordError::BadSigner);
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn equivocation_detected() {
        let k = key(1);
        let a = SignedRecord::sign_pattern(sample("n", Depth::Deep, 0.7), 5, &k);
        let b = SignedRecord::sign_pattern(sample("n", Depth::Deep, 0.8), 5, &k);
        let (pa, pb) = (a.open_pattern(NOW).unwrap(), b.open_pattern(NOW).unwrap());
        assert!(is_equivocation(
            &pa,
            &a.content_hash(),
            &pb,
            &b.content_hash()
        ));
        assert!(!is_equivocation(
            &pa,
            &a.content_hash(),
            &pa,
            &a.content_hash()
        ));
    }
}
