//! Record bodies compressed with a per-store zstd dictionary (schema 3).
//!
//! sled 0.34's own compression runs zstd on every log message with a fresh
//! compression context: for this workload (a ~300-byte record and a tiny
//! time-index key per pattern, and a leaf split every ~9 appends) that was
//! about a third of the import's CPU and most of `insert_batch` (measured in
//! `docs/storage.md`). A record body compressed alone gains nothing (307 →
//! 307 B), but against a dictionary of a few typical bodies it shrinks to
//! about 65 B. So stores created since schema 3 open sled **without**
//! compression and store each record body zstd-compressed against a
//! raw-content dictionary built when the store is created and kept in it
//! (`m dict`), so later builds decode it whatever their own samples are.
//! Stores created before keep sled's compression and uncompressed bodies;
//! the value's first byte says which (see [`crate::keys::encode_record`]).

use std::cell::RefCell;

use libp2p_identity::Keypair;
use metamesh_protocol::record::{SignedRecord, MAX_BODY_BYTES};
use metamesh_protocol::schema::{Depth, Pattern};
use zstd::dict::{DecoderDictionary, EncoderDictionary};

/// zstd level (with a prepared dictionary, level 3 costs a few µs a record).
const LEVEL: i32 = 3;

thread_local! {
    static CCTX: RefCell<zstd_safe::CCtx<'static>> = RefCell::new(zstd_safe::create_cctx());
    static DCTX: RefCell<zstd_safe::DCtx<'static>> = RefCell::new(zstd_safe::create_dctx());
}

/// A store's record dictionary, prepared for both directions.
pub(crate) struct Dict {
    cdict: EncoderDictionary<'static>,
    ddict: DecoderDictionary<'static>,
}

impl std::fmt::Debug for Dict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Dict")
    }
}

impl Dict {
    pub(crate) fn new(bytes: &[u8]) -> Dict {
        Dict {
            cdict: EncoderDictionary::copy(bytes, LEVEL),
            ddict: DecoderDictionary::copy(bytes),
        }
    }

    /// `src` compressed (None if zstd failed; the caller stores it raw).
    pub(crate) fn compress(&self, src: &[u8]) -> Option<Vec<u8>> {
        CCTX.with(|c| {
            let mut out = Vec::with_capacity(zstd_safe::compress_bound(src.len()));
            c.borrow_mut()
                .compress_using_cdict(&mut out, src, self.cdict.as_cdict())
                .ok()?;
            Some(out)
        })
    }

    /// `src` decompressed; None when it is not a frame of at most
    /// `MAX_BODY_BYTES` made with this dictionary.
    pub(crate) fn decompress(&self, src: &[u8]) -> Option<Vec<u8>> {
        let size = zstd_safe::get_frame_content_size(src);
        if size > MAX_BODY_BYTES as u64 {
            return None; // also CONTENTSIZE_UNKNOWN / _ERROR (u64::MAX, MAX - 1)
        }
        DCTX.with(|d| {
            let mut out = Vec::with_capacity(size as usize);
            let n = d
                .borrow_mut()
                .decompress_using_ddict(&mut out, src, self.ddict.as_ddict())
                .ok()?;
            (n == size as usize).then_some(out)
        })
    }
}

/// Dictionary bytes for a new store: the signed bodies of a few typical
/// patterns (the unified, Thor and Legion shapes), signed by a throwaway key.
pub(crate) fn sample_dictionary() -> Vec<u8> {
    let Ok(key) = Keypair::ed25519_from_bytes([42; 32]) else {
        return Vec::new();
    };
    let modes = ["general", "verifying", "exploring", "integrating"];
    let platforms = ["legion", "thor", "metamesh", "bench", "unknown"];
    let mut dict = Vec::new();
    for i in 0..10u64 {
        let mut v = serde_json::json!({
            "pattern_id": format!("{:08x}-{i}", 0x5eed_0000u64 + i * 7919),
            "node_id": format!("node-{i}"),
            "timestamp": 1_764_590_000.25 + i as f64 * 61.5,
            "platform": platforms[(i % 5) as usize],
            "depth_used": Depth::ALL[(i % 5) as usize].as_str(),
            "mode": modes[(i % 4) as usize],
            "quality_achieved": 0.412_345 + i as f64 * 0.05,
            "success": i % 2 == 0,
            "atp_before": 100.0 + i as f64 * 3.5,
            "atp_after": 80.5 + i as f64,
        });
        if i % 3 == 1 {
            v["reputation_before"] = serde_json::json!(0.5 + i as f64 / 100.0);
            v["reputation_after"] = serde_json::json!(0.52 + i as f64 / 100.0);
            v["context"] = serde_json::json!({"task": "analysis", "source": "thor"});
        }
        if i % 3 == 2 {
            v["outcome_confidence"] = serde_json::json!(0.8);
            v["cogitation_mode"] = serde_json::json!(modes[(i % 4) as usize]);
        }
        let Ok(p) = Pattern::from_json_value(v, None) else {
            continue;
        };
        let seq = (1_764_590_000u64 << 32) | (i + 1);
        let (rec, _): (SignedRecord, _) = SignedRecord::sign_pattern_after(p, seq, None, &key);
        dict.extend_from_slice(&rec.body);
    }
    dict
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn round_trip_and_bad_frames() {
        let dict = sample_dictionary();
        assert!(dict.len() > 1000, "{}", dict.len());
        let d = Dict::new(&dict);
        let body = &dict[100..400];
        let c = d.compress(body).unwrap();
        assert!(c.len() < body.len() / 2, "{} of {}", c.len(), body.len());
        assert_eq!(d.decompress(&c).unwrap(), body);
        assert!(d.decompress(&[]).is_none());
        assert!(d.decompress(&c[..c.len() - 1]).is_none());
        assert!(d.decompress(body).is_none());
        // Another dictionary does not decode it to the same bytes.
        let other = Dict::new(b"some other dictionary content entirely");
        assert_ne!(other.decompress(&c).as_deref(), Some(body));
    }

    fn pattern(i: u64) -> Pattern {
        Pattern::from_json_value(
            serde_json::json!({
                "pattern_id": format!("p-{i}"), "node_id": "n", "timestamp": 1_704_902_400.0 + i as f64,
                "depth_used": "deep", "mode": "general", "quality_achieved": 0.5, "success": true,
                "atp_before": 10.0, "atp_after": 5.0
            }),
            None,
        )
        .unwrap()
    }

    fn reopen(path: &std::path::Path) -> crate::Store {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            match crate::Store::open(path, &crate::StoreConfig::default()) {
                Err(crate::StoreError::Locked { .. }) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(20))
                }
                r => return r.unwrap(),
            }
        }
    }

    /// A new store packs bodies; a schema-2 store (sled's compression, raw
    /// bodies, no dictionary) opens as 3, keeps its layout, and both read
    /// back every record exactly as signed.
    #[test]
    fn new_stores_pack_and_schema_2_stores_keep_their_layout() {
        let key = Keypair::ed25519_from_bytes([5; 32]).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let new_path = tmp.path().join("new");
        let old_path = tmp.path().join("old");
        // What main's schema-2 build created: sled with compression on.
        drop(
            sled::Config::new()
                .path(&old_path)
                .use_compression(true)
                .open()
                .unwrap(),
        );
        for (path, packed) in [(&new_path, true), (&old_path, false)] {
            let mut written = Vec::new();
            {
                let s = reopen(path);
                assert_eq!(s.dict().is_some(), packed);
                let mut first_seq = 0;
                for i in 0..20 {
                    let (rec, body) = s.append_local(&key, pattern(i)).unwrap();
                    if i == 0 {
                        first_seq = body.seq;
                    }
                    written.push(rec);
                }
                let v = s
                    .data()
                    .get(crate::keys::slot_key(crate::keys::RECORD, 0, first_seq))
                    .unwrap()
                    .unwrap();
                assert_eq!(v[0] & 0x80 != 0, packed);
                if !packed {
                    s.set_schema_version_for_tests(2).unwrap();
                }
                s.flush().unwrap();
            }
            let s = reopen(path);
            assert_eq!(s.schema_version().unwrap(), crate::SCHEMA_VERSION);
            assert_eq!(s.dict().is_some(), packed);
            let back: Vec<SignedRecord> = s.iter_records().map(|r| r.unwrap().0).collect();
            assert_eq!(back, written);
            for r in &written {
                assert!(r.verify_signature().is_ok());
            }
        }
    }
}
