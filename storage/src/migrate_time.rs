//! Schema 3 → 4, in place: the per-record time index (`t` ‖ timestamp ‖ id ‖
//! seq, one random-key insert per record and about a quarter of the store)
//! becomes one latest-timestamp entry per chunk of 64 seqs (`c`, see
//! [`crate::keys`]).
//!
//! Crash-safe by being idempotent: each step merges a slice of `t` keys into
//! the chunk entries (taking the maximum) and removes that slice in one
//! atomic sled batch; the schema version is raised only when no `t` key is
//! left, so an interrupted upgrade resumes at the next open.

use std::collections::BTreeMap;

use crate::keys;
use crate::store::{corrupt, StoreError};

/// `t` keys merged per atomic step.
const STEP: usize = 8192;

/// Replace every `t` entry of `data` by chunk entries; returns how many
/// `t` entries there were.
pub(crate) fn upgrade_time_index(data: &sled::Tree) -> Result<u64, StoreError> {
    let total = data.scan_prefix([keys::TIME]).keys().count() as u64;
    if total == 0 {
        return Ok(0);
    }
    tracing::info!("upgrading the store's time index ({total} records)");
    let progress = crate::migrate::bar("the store's time index", total);
    let mut done = 0u64;
    loop {
        let mut latest: BTreeMap<[u8; 13], f64> = BTreeMap::new();
        let mut batch = sled::Batch::default();
        let mut n = 0usize;
        for k in data.scan_prefix([keys::TIME]).keys().take(STEP) {
            let k = k?;
            let (ts, id, seq) = keys::parse_time_key(&k).ok_or_else(|| corrupt("time key"))?;
            let e = latest.entry(keys::chunk_key(id, seq)).or_insert(ts);
            if ts > *e {
                *e = ts;
            }
            batch.remove(k);
            n += 1;
        }
        if n == 0 {
            break;
        }
        for (ck, ts) in latest {
            let held = match data.get(ck)? {
                Some(v) => Some(keys::chunk_latest(&v).ok_or_else(|| corrupt("chunk value"))?),
                None => None,
            };
            if held.is_none_or(|h| ts > h) {
                batch.insert(&ck[..], &ts.to_bits().to_be_bytes()[..]);
            }
        }
        data.apply_batch(batch)?;
        done += n as u64;
        progress.set_position(done);
    }
    progress.finish_and_clear();
    Ok(done)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use libp2p_identity::Keypair;
    use metamesh_protocol::record::PatternBody;
    use metamesh_protocol::wire::RequestFilters;

    use crate::keys;
    use crate::{Store, StoreConfig, StoreError};

    fn open(path: &std::path::Path) -> Store {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            match Store::open(path, &StoreConfig::default()) {
                Err(StoreError::Locked { .. }) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(20))
                }
                r => return r.unwrap(),
            }
        }
    }

    fn seqs_since(s: &Store, min_ts: f64, page: usize) -> Vec<u64> {
        let f = RequestFilters {
            min_timestamp: Some(min_ts),
            ..Default::default()
        };
        let (mut got, mut cursor) = (Vec::new(), None);
        loop {
            let (recs, next) = s.query(&f, cursor, page).unwrap();
            got.extend(recs.into_iter().map(|(_, b)| b.seq));
            match next {
                Some(c) => cursor = Some(c),
                None => return got,
            }
        }
    }

    /// A store as schema 3 wrote it (a `t` entry per record, no chunk
    /// entries; one chunk entry left half-merged as by an interrupted
    /// upgrade) opens as schema 4 with no `t` entry, one entry per chunk
    /// holding its latest timestamp, and `min_timestamp` queries answer as
    /// the filter says.
    #[test]
    fn schema_3_time_index_becomes_chunk_entries() {
        let key = Keypair::ed25519_from_bytes([7; 32]).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("s");
        let mut bodies: Vec<PatternBody> = Vec::new();
        {
            let s = open(&path);
            for i in 0..300u64 {
                let mut p = crate::testutil::pattern(i);
                p.timestamp = 1.7e9 + ((i * 37) % 300) as f64;
                bodies.push(s.append_local(&key, p).unwrap().1);
            }
            let data = s.data();
            let chunks: Vec<_> = data
                .scan_prefix([keys::CHUNK])
                .keys()
                .map(|k| k.unwrap())
                .collect();
            assert!(chunks.len() >= 5, "300 seqs span at least 5 chunks");
            for (i, k) in chunks.iter().enumerate() {
                if i == 0 {
                    data.insert(k, &0f64.to_bits().to_be_bytes()[..]).unwrap();
                } else {
                    data.remove(k).unwrap();
                }
            }
            for b in &bodies {
                data.insert(keys::time_key(b.pattern.timestamp, 0, b.seq), &[][..])
                    .unwrap();
            }
            s.set_schema_version_for_tests(3).unwrap();
            s.flush().unwrap();
        }
        let s = open(&path);
        assert_eq!(s.schema_version().unwrap(), crate::SCHEMA_VERSION);
        assert_eq!(s.data().scan_prefix([keys::TIME]).count(), 0);
        let mut want = std::collections::BTreeMap::new();
        for b in &bodies {
            let e = want
                .entry(keys::chunk_key(0, b.seq).to_vec())
                .or_insert(f64::MIN);
            *e = e.max(b.pattern.timestamp);
        }
        let held: std::collections::BTreeMap<Vec<u8>, f64> = s
            .data()
            .scan_prefix([keys::CHUNK])
            .map(|kv| {
                let (k, v) = kv.unwrap();
                (k.to_vec(), keys::chunk_latest(&v).unwrap())
            })
            .collect();
        assert_eq!(held, want);
        for (min_ts, page) in [(1.7e9 + 250.0, 7), (1.7e9 + 299.0, 1), (1.7e9, 64)] {
            let want: Vec<u64> = bodies
                .iter()
                .filter(|b| b.pattern.timestamp >= min_ts)
                .map(|b| b.seq)
                .collect();
            assert_eq!(seqs_since(&s, min_ts, page), want, "min_ts {min_ts}");
        }
        assert_eq!(super::upgrade_time_index(s.data()).unwrap(), 0);
    }

    /// Chunks older than `min_timestamp` are skipped, later ones read, and
    /// paging resumes exactly where it stopped, also inside a chunk.
    #[test]
    fn min_timestamp_skips_old_chunks_and_pages_exactly() {
        let key = Keypair::ed25519_from_bytes([8; 32]).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let s = open(&tmp.path().join("s"));
        let mut bodies = Vec::new();
        for i in 0..400u64 {
            let mut p = crate::testutil::pattern(i);
            p.timestamp = 1.7e9 + i as f64; // increasing: old chunks are all older
            bodies.push(s.append_local(&key, p).unwrap().1);
        }
        let want: Vec<u64> = bodies[390..].iter().map(|b| b.seq).collect();
        for page in [1, 3, 10, 100] {
            assert_eq!(seqs_since(&s, 1.7e9 + 390.0, page), want);
        }
        assert!(seqs_since(&s, 1.7e9 + 400.0, 5).is_empty());
    }
}
