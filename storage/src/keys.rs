//! Byte layouts of the store (schema version 4: 3 with the per-record time
//! index replaced by per-chunk latest timestamps).
//!
//! Everything on the hot path lives in one sled tree, `data`, with a one-byte
//! prefix per kind of entry. Origins are interned as 4-byte ids (assigned in
//! order of first appearance), so a record key is 13 bytes and keys of one
//! origin's records are appended in seq order — sled is fast at appends and
//! slow at random inserts, which is why there is no content-hash index.
//!
//! | prefix | key after the prefix | value |
//! |---|---|---|
//! | `m` | name | meta: schema version, last epoch, own seq, merged statistics |
//! | `o` | origin PeerId bytes | origin id (BE u32) |
//! | `i` | origin id | origin PeerId bytes |
//! | `r` | id ‖ seq BE | compact record: see [`encode_record`] |
//! | `c` | id ‖ chunk (seq >> [`CHUNK_BITS`]) BE u64 | latest timestamp (f64 BE) of the chunk's records: skips old chunks in `min_timestamp` queries |
//! | `f` | id | frontier (BE u64) |
//! | `p` | id ‖ seq | prev seq (BE u64): held above the frontier, waiting for prev |
//! | `d` | id ‖ seq | content hash of a declined record |
//! | `e` | id ‖ seq | conflicting envelope (CBOR), evidence of equivocation |
//! | `s` | id | `DepthTable` (CBOR) of the origin's stored patterns |
//! | `M` | id | per-mode statistics (CBOR) |
//! | `k` | own seq of a batch's first record | 8-byte prefixes of that batch's import keys |
//! | `m dict` | — | the record dictionary of a store created with schema ≥ 3 ([`crate::packing`]) |

use std::borrow::Cow;

use metamesh_protocol::record::{RecordKind, SignedRecord};

use crate::packing::Dict;

pub(crate) const META: u8 = b'm';
pub(crate) const ORIGIN: u8 = b'o';
pub(crate) const ORIGIN_ID: u8 = b'i';
pub(crate) const RECORD: u8 = b'r';
/// The per-record time index of schema ≤ 3 (removed by the upgrade to 4).
pub(crate) const TIME: u8 = b't';
pub(crate) const CHUNK: u8 = b'c';
/// Records per time chunk: 2^6 = 64 consecutive seqs of one origin.
pub(crate) const CHUNK_BITS: u32 = 6;
pub(crate) const FRONTIER: u8 = b'f';
pub(crate) const PENDING: u8 = b'p';
pub(crate) const DECLINED: u8 = b'd';
pub(crate) const EVIDENCE: u8 = b'e';
pub(crate) const STATS: u8 = b's';
pub(crate) const MODES: u8 = b'M';
pub(crate) const IMPORT: u8 = b'k';

pub(crate) fn meta_key(name: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + name.len());
    k.push(META);
    k.extend_from_slice(name.as_bytes());
    k
}

pub(crate) fn origin_key(peer_bytes: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + peer_bytes.len());
    k.push(ORIGIN);
    k.extend_from_slice(peer_bytes);
    k
}

/// `[prefix][id BE]`.
pub(crate) fn id_key(prefix: u8, id: u32) -> [u8; 5] {
    let mut k = [0u8; 5];
    k[0] = prefix;
    k[1..].copy_from_slice(&id.to_be_bytes());
    k
}

/// `[prefix][id BE][seq BE]`.
pub(crate) fn slot_key(prefix: u8, id: u32, seq: u64) -> [u8; 13] {
    let mut k = [0u8; 13];
    k[0] = prefix;
    k[1..5].copy_from_slice(&id.to_be_bytes());
    k[5..].copy_from_slice(&seq.to_be_bytes());
    k
}

/// Split a slot key (`[prefix][id][seq]`) into (id, seq).
pub(crate) fn parse_slot_key(k: &[u8]) -> Option<(u32, u64)> {
    if k.len() != 13 {
        return None;
    }
    let id = u32::from_be_bytes(k[1..5].try_into().ok()?);
    let seq = u64::from_be_bytes(k[5..].try_into().ok()?);
    Some((id, seq))
}

/// The chunk-summary key of an origin's slot `seq`.
pub(crate) fn chunk_key(id: u32, seq: u64) -> [u8; 13] {
    slot_key(CHUNK, id, seq >> CHUNK_BITS)
}

/// The latest timestamp a chunk summary holds.
pub(crate) fn chunk_latest(v: &[u8]) -> Option<f64> {
    Some(f64::from_bits(be_u64(v)?))
}

/// A schema-3 time key `[t][timestamp key][id][seq]`, for tests of the upgrade.
#[cfg(test)]
pub(crate) fn time_key(ts: f64, id: u32, seq: u64) -> [u8; 21] {
    let mut k = [0u8; 21];
    k[0] = TIME;
    k[1..9].copy_from_slice(&f64_key(ts));
    k[9..13].copy_from_slice(&id.to_be_bytes());
    k[13..].copy_from_slice(&seq.to_be_bytes());
    k
}

/// The (timestamp, id, seq) of a schema-3 time key.
pub(crate) fn parse_time_key(k: &[u8]) -> Option<(f64, u32, u64)> {
    if k.len() != 21 {
        return None;
    }
    let ts = f64_from_key(k[1..9].try_into().ok()?);
    let id = u32::from_be_bytes(k[9..13].try_into().ok()?);
    let seq = u64::from_be_bytes(k[13..].try_into().ok()?);
    Some((ts, id, seq))
}

/// Order-preserving 8-byte encoding of an f64 (total order; negative values
/// sort before positive ones).
#[cfg(test)]
pub(crate) fn f64_key(v: f64) -> [u8; 8] {
    let bits = v.to_bits();
    let ordered = if bits >> 63 == 1 {
        !bits
    } else {
        bits | (1 << 63)
    };
    ordered.to_be_bytes()
}

/// The inverse of [`f64_key`].
pub(crate) fn f64_from_key(k: [u8; 8]) -> f64 {
    let ordered = u64::from_be_bytes(k);
    let bits = if ordered >> 63 == 1 {
        ordered & !(1 << 63)
    } else {
        !ordered
    };
    f64::from_bits(bits)
}

pub(crate) fn be_u64(v: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(v.try_into().ok()?))
}

pub(crate) fn be_u32(v: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(v.try_into().ok()?))
}

/// Compact record value: `[kind][sig len][signature][body]`. kind is 0
/// (pattern) or 1 (insight) with the body as signed. With the store's
/// dictionary (stores created with schema ≥ 3) kind | 0x80, and the body is
/// stored as `[at: u16 BE][zstd frame]`: the body without the signer's
/// PeerId bytes (the key already names the origin; the body's `origin`
/// field repeats it) at byte offset `at` (0xFFFF: not cut out), compressed
/// against the dictionary ([`crate::packing`]). The signer is the key's
/// origin; decoding puts its bytes back, so the body reads back exactly as
/// signed.
pub(crate) fn encode_record(rec: &SignedRecord, dict: Option<&Dict>) -> Vec<u8> {
    let kind = match rec.kind {
        RecordKind::Pattern => 0,
        RecordKind::Insight => 1,
    };
    let sig = &rec.signature[..rec.signature.len().min(255)];
    let mut v = Vec::with_capacity(2 + sig.len() + rec.body.len());
    v.push(kind);
    v.push(sig.len() as u8);
    v.extend_from_slice(sig);
    let packed = dict.and_then(|d| {
        let at = find(&rec.body, &rec.signer)
            .filter(|a| *a < NOT_CUT as usize && !rec.signer.is_empty());
        let frame = match at {
            Some(a) => d.compress(&[&rec.body[..a], &rec.body[a + rec.signer.len()..]].concat()),
            None => d.compress(&rec.body),
        }?;
        Some((at.map_or(NOT_CUT, |a| a as u16), frame))
    });
    match packed {
        Some((at, frame)) => {
            v[0] |= PACKED;
            v.extend_from_slice(&at.to_be_bytes());
            v.extend_from_slice(&frame);
        }
        None => v.extend_from_slice(&rec.body),
    }
    v
}

/// Flag on a record value's kind byte: the body is cut and compressed.
const PACKED: u8 = 0x80;
/// `at` of a packed body whose signer bytes were not cut out.
const NOT_CUT: u16 = u16::MAX;

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || needle.len() > hay.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The body bytes of a compact record, as signed (for hashing without a
/// full decode). `signer`: the key's origin PeerId bytes. None for a
/// damaged value, or a packed one without the dictionary.
pub(crate) fn record_body<'a>(
    v: &'a [u8],
    signer: &[u8],
    dict: Option<&Dict>,
) -> Option<Cow<'a, [u8]>> {
    let sig_len = *v.get(1)? as usize;
    let rest = v.get(2 + sig_len..)?;
    if v.first()? & PACKED == 0 {
        return Some(Cow::Borrowed(rest));
    }
    let at = u16::from_be_bytes([*rest.first()?, *rest.get(1)?]);
    let cut = dict?.decompress(rest.get(2..)?)?;
    if at == NOT_CUT {
        return Some(Cow::Owned(cut));
    }
    let at = usize::from(at);
    let head = cut.get(..at)?;
    let mut body = Vec::with_capacity(cut.len() + signer.len());
    body.extend_from_slice(head);
    body.extend_from_slice(signer);
    body.extend_from_slice(cut.get(at..)?);
    Some(Cow::Owned(body))
}

pub(crate) fn decode_record(v: &[u8], signer: &[u8], dict: Option<&Dict>) -> Option<SignedRecord> {
    let kind = match v.first()? & !PACKED {
        0 => RecordKind::Pattern,
        1 => RecordKind::Insight,
        _ => return None,
    };
    let sig_len = *v.get(1)? as usize;
    let signature = v.get(2..2 + sig_len)?.to_vec();
    Some(SignedRecord {
        kind,
        body: record_body(v, signer, dict)?.into_owned(),
        signer: signer.to_vec(),
        signature,
    })
}

/// The first 8 bytes of an import key, as the in-memory filter's entry.
pub(crate) fn import_prefix(k: &[u8; 32]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&k[..8]);
    u64::from_le_bytes(b)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn slot_keys_round_trip_and_sort_by_seq() {
        let k = slot_key(RECORD, 3, 42);
        assert_eq!(parse_slot_key(&k), Some((3, 42)));
        assert!(slot_key(RECORD, 3, 255) < slot_key(RECORD, 3, 256));
        assert!(slot_key(RECORD, 3, u64::MAX) < slot_key(RECORD, 4, 0));
        assert!(k.starts_with(&id_key(RECORD, 3)));
        assert_eq!(parse_slot_key(&k[..12]), None);
        let t = time_key(1.5, 7, 9);
        assert_eq!(parse_time_key(&t), Some((1.5, 7, 9)));
        assert_eq!(parse_time_key(&time_key(-2.25, 1, 2)), Some((-2.25, 1, 2)));
        assert_eq!(chunk_key(3, 63), chunk_key(3, 0));
        assert!(chunk_key(3, 64) > chunk_key(3, 63));
        assert!(time_key(1.5, 9, 9) < time_key(2.0, 1, 1));
    }

    #[test]
    fn compact_records_round_trip() {
        let kp = libp2p_identity::Keypair::ed25519_from_bytes([9; 32]).unwrap();
        let rec = SignedRecord::sign_bytes(RecordKind::Pattern, vec![1, 2, 3], &kp);
        let v = encode_record(&rec, None);
        assert_eq!(v.len(), 2 + 64 + 3);
        assert_eq!(decode_record(&v, &rec.signer, None).unwrap(), rec);
        assert_eq!(&*record_body(&v, &rec.signer, None).unwrap(), &[1, 2, 3]);
        assert!(decode_record(&[7, 0], &rec.signer, None).is_none());
        assert!(decode_record(&[0, 64, 1], &rec.signer, None).is_none());
        // With a dictionary: the body is compressed, and reads back as signed.
        let dict = crate::packing::Dict::new(&crate::packing::sample_dictionary());
        let signer = kp.public().to_peer_id().to_bytes();
        let sample = crate::packing::sample_dictionary();
        for body in [
            // The signer's bytes inside (as in every pattern body), or not.
            [&sample[..100], &signer[..], &sample[100..300]].concat(),
            sample[..300].to_vec(),
            signer.clone(),
            Vec::new(),
        ] {
            let rec = SignedRecord::sign_bytes(RecordKind::Insight, body.clone(), &kp);
            assert_eq!(rec.signer, signer);
            let v = encode_record(&rec, Some(&dict));
            assert_eq!(v[0], 0x81);
            if body.len() >= 300 {
                assert!(v.len() < 2 + 64 + body.len() / 2, "{}", v.len());
            }
            assert_eq!(decode_record(&v, &rec.signer, Some(&dict)).unwrap(), rec);
            assert_eq!(&*record_body(&v, &signer, Some(&dict)).unwrap(), &body[..]);
            // Without the dictionary a packed value is not misread as raw.
            assert!(decode_record(&v, &rec.signer, None).is_none());
            // Truncated values are refused, not misread.
            for cut in [1, 2, 66, 67, 68, v.len() - 1] {
                assert!(
                    decode_record(&v[..cut], &rec.signer, Some(&dict)).is_none(),
                    "cut {cut}"
                );
            }
        }
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
