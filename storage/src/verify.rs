//! Verifying received records on every core, with each signer's key
//! decoded once.

use metamesh_protocol::record::{
    self, KeyCache, PatternBody, RecordError, RecordKind, SignedRecord,
};

/// Verifies and opens pattern records on up to `threads` threads (scoped to
/// each call: a bounded pool that holds nothing between calls but the key
/// cache).
pub struct Verifier {
    cache: KeyCache,
    threads: usize,
}

impl Default for Verifier {
    fn default() -> Self {
        Verifier::new(
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
                .min(4),
        )
    }
}

/// Below this many records per thread, one thread does it all.
const MIN_PER_THREAD: usize = 32;

impl Verifier {
    pub fn new(threads: usize) -> Self {
        Verifier {
            cache: KeyCache::new(),
            threads: threads.max(1),
        }
    }

    /// Per record: the checked body (signature verified by batch, then body
    /// decoded, schema and origin checked), or why it was refused. `now`
    /// bounds future timestamps.
    pub fn open_patterns(
        &mut self,
        records: &[SignedRecord],
        now: f64,
    ) -> Vec<Result<PatternBody, RecordError>> {
        let keys = self.cache.resolve(records);
        let open = |recs: &[SignedRecord],
                    keys: &[record::ResolvedKey]|
         -> Vec<Result<PatternBody, RecordError>> {
            let verdicts = record::verify_resolved(recs, keys);
            recs.iter()
                .zip(verdicts)
                .map(|(r, v)| {
                    if r.kind != RecordKind::Pattern {
                        return Err(RecordError::WrongKind(r.kind, RecordKind::Pattern));
                    }
                    r.decode_pattern_unverified(v?, now)
                })
                .collect()
        };
        let threads = self.threads.min(records.len() / MIN_PER_THREAD).max(1);
        if threads == 1 {
            return open(records, &keys);
        }
        let per = records.len().div_ceil(threads);
        std::thread::scope(|s| {
            let handles: Vec<_> = records
                .chunks(per)
                .zip(keys.chunks(per))
                .map(|(r, k)| s.spawn(move || open(r, k)))
                .collect();
            handles
                .into_iter()
                .zip(records.chunks(per))
                .flat_map(|(h, r)| {
                    // A panic in a verifier thread refuses its records, nothing more.
                    h.join().unwrap_or_else(|_| {
                        r.iter().map(|_| Err(RecordError::BadSignature)).collect()
                    })
                })
                .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use libp2p_identity::Keypair;

    use crate::testutil::pattern;

    #[test]
    fn parallel_verification_keeps_order_and_finds_the_bad_ones() {
        let keys: Vec<_> = (1..=3u8)
            .map(|i| Keypair::ed25519_from_bytes([i; 32]).unwrap())
            .collect();
        let mut recs: Vec<_> = (0..200u64)
            .map(|i| SignedRecord::sign_pattern(pattern(i), i + 1, &keys[(i % 3) as usize]))
            .collect();
        recs[17].signature[3] ^= 1;
        recs[150].signer = vec![9, 9];
        let mut v = Verifier::new(2);
        let out = v.open_patterns(&recs, 2e9);
        for (i, o) in out.iter().enumerate() {
            match i {
                17 => assert_eq!(o.as_ref().unwrap_err(), &RecordError::BadSignature),
                150 => assert_eq!(o.as_ref().unwrap_err(), &RecordError::BadSigner),
                _ => assert_eq!(o.as_ref().unwrap().seq, i as u64 + 1),
            }
        }
        assert_eq!(out, Verifier::new(1).open_patterns(&recs, 2e9));
    }
}
