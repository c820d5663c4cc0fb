//! Verifying received records on every core, with each signer's key
//! decoded once.

use rayon::prelude::*;

use metamesh_protocol::record::{
    self, KeyCache, PatternBody, RecordError, RecordKind, SignedRecord,
};

/// Verifies and opens pattern records on up to `threads` threads of the
/// store's CPU pool, keeping each signer's decoded key in a cache.
pub struct Verifier {
    cache: KeyCache,
    threads: usize,
}

impl Default for Verifier {
    fn default() -> Self {
        Verifier::new(crate::cpu::threads())
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
        let Some(pool) = crate::cpu::pool() else {
            return open(records, &keys);
        };
        let per = records.len().div_ceil(threads);
        let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pool.install(|| {
                records
                    .par_chunks(per)
                    .zip(keys.par_chunks(per))
                    .map(|(r, k)| open(r, k))
                    .collect::<Vec<_>>()
            })
        }));
        match opened {
            Ok(parts) => parts.into_iter().flatten().collect(),
            // A panic while verifying refuses these records, nothing more.
            Err(_) => records
                .iter()
                .map(|_| Err(RecordError::BadSignature))
                .collect(),
        }
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
