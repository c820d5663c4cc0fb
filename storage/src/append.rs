//! Own appends in two steps: [`Store::prepare_append`] (import dedup, seq
//! assignment, then signing and value encoding on every core, outside the
//! write lock) and the plan step in [`crate::write`] that stores the
//! prepared records. The group-commit [`crate::writer::Writer`] runs the two
//! on different threads, so group k+1 is signed while group k is written.
//! Also the own-seq epochs ([`Store::begin_epoch`], [`Store::bump_own_seq`]).

use rayon::prelude::*;
use std::collections::HashSet;

use libp2p_identity::{Keypair, PeerId};
use metamesh_protocol::record::{PatternBody, SignedRecord};
use metamesh_protocol::schema::Pattern;

use crate::keys::{self, be_u32, id_key};
use crate::packing::Dict;
use crate::store::{corrupt, Mem, Store, StoreError, META_EPOCH, META_OWN_SEQ};
use crate::write::{Batch, EpochInfo, EpochState, SeqState};

type R<T> = Result<T, StoreError>;

/// A signed own record with its encoded store value.
pub(crate) struct Signed {
    pub rec: SignedRecord,
    pub body: PatternBody,
    pub value: Vec<u8>,
}

/// An append batch with seqs assigned and records signed, not yet stored.
pub(crate) struct Prepared {
    pub origin: PeerId,
    /// Per input pattern: true if it got a seq (its record is next in
    /// `signed`), false if it was a duplicate import.
    pub slots: Vec<bool>,
    pub signed: Vec<Signed>,
    /// Import-key prefixes of the appended patterns (already reserved in
    /// the writer's in-memory filter).
    pub prefixes: Vec<u64>,
}

/// One job for the plan step.
pub(crate) enum Work {
    Batch(Batch),
    Prepared(Prepared),
    /// A job that failed before planning (its error is its result).
    Failed(StoreError),
}

/// Sign `items` (pattern, seq, prev) and encode their store values on up
/// to `threads` threads, in order.
pub(crate) fn sign_all(
    key: &Keypair,
    dict: Option<&Dict>,
    items: Vec<(Pattern, u64, Option<u64>)>,
    threads: usize,
) -> Vec<Signed> {
    let sign = |(p, seq, prev): (Pattern, u64, Option<u64>)| {
        let (rec, body) = SignedRecord::sign_pattern_after(p, seq, prev, key);
        let value = keys::encode_record(&rec, dict);
        Signed { rec, body, value }
    };
    let pool = match crate::cpu::pool() {
        Some(pool) if threads > 1 && items.len() >= 64 => pool,
        _ => return items.into_iter().map(sign).collect(),
    };
    let per = items.len().div_ceil(threads);
    // ed25519 signing and the packing cannot panic; were one ever to, its
    // records are missing and the plan step refuses the batch ("append
    // bookkeeping"): nothing of it is stored.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        pool.install(|| items.into_par_iter().with_min_len(per).map(sign).collect())
    }))
    .unwrap_or_default()
}

/// Threads used to sign a local batch.
pub(crate) fn sign_threads() -> usize {
    crate::cpu::threads()
}

impl Store {
    /// Turn a batch into plan-step work: appends are prepared (needs `key`).
    pub(crate) fn to_work(&self, key: Option<&Keypair>, b: Batch) -> Work {
        match b {
            Batch::Append(items) => match key {
                Some(k) => match self.prepare_append(k, items) {
                    Ok(p) => Work::Prepared(p),
                    Err(e) => Work::Failed(e),
                },
                None => Work::Failed(StoreError::Unsupported("appends need the node key".into())),
            },
            b => Work::Batch(b),
        }
    }

    /// Dedup by import key, assign the next own seqs (beginning an epoch
    /// when none is open), then sign and encode on every core. Holds the
    /// writer state only for the first part; the seqs and import keys stay
    /// reserved (the plan step stores them in order, or forgets the
    /// reservations if it fails).
    pub(crate) fn prepare_append(
        &self,
        key: &Keypair,
        items: Vec<(Pattern, Option<[u8; 32]>)>,
    ) -> R<Prepared> {
        let origin = key.public().to_peer_id();
        let mut slots = Vec::with_capacity(items.len());
        let mut prefixes = Vec::new();
        let mut to_sign = Vec::with_capacity(items.len());
        {
            let mem = self.mem_read();
            let mut ws = self.seq_state();
            if items.iter().any(|(_, k)| k.is_some()) && ws.imports.is_none() {
                ws.imports = Some(self.load_import_filter()?);
            }
            for (pattern, ik) in items {
                if let Some(k) = ik {
                    let p = keys::import_prefix(&k);
                    let fresh = ws.imports.as_mut().is_some_and(|f| f.insert(p));
                    if !fresh {
                        slots.push(false);
                        continue;
                    }
                    prefixes.push(p);
                }
                let (seq, prev) = match self.next_own_seq(&mem, &mut ws, &origin) {
                    Ok(s) => s,
                    Err(e) => {
                        ws.imports = None; // drop the reservations
                        return Err(e);
                    }
                };
                to_sign.push((pattern, seq, prev));
                slots.push(true);
            }
        }
        let dict = self.dict_arc();
        let signed = sign_all(key, dict.as_deref(), to_sign, sign_threads());
        Ok(Prepared {
            origin,
            slots,
            signed,
            prefixes,
        })
    }

    /// The next own (seq, prev_seq) for `origin`, beginning an epoch when
    /// none is open. prev is the origin's last seq (None when that is
    /// `seq - 1`), so every signing key's records form one chain.
    fn next_own_seq(&self, mem: &Mem, ws: &mut SeqState, origin: &PeerId) -> R<(u64, Option<u64>)> {
        let own = mem.own_origin.unwrap_or(*origin);
        if ws.epoch.is_none_or(|e| e.next == u32::MAX) {
            // Above every own seq held or signed in this process.
            let last_own = ws.last.get(&own).copied().unwrap_or(0).max(mem.own_seq);
            let info = self.begin_epoch_locked(mem, last_own, crate::store::now_secs())?;
            ws.epoch = Some(EpochState {
                epoch: info.epoch,
                next: 1,
            });
        }
        let last = match ws.last.get(origin) {
            Some(l) => *l,
            None if own == *origin => mem.own_seq,
            None => self.last_held(mem, origin)?,
        };
        let e = ws.epoch.as_mut().ok_or_else(|| corrupt("no epoch"))?;
        let seq = (u64::from(e.epoch) << 32) | u64::from(e.next);
        e.next += 1;
        ws.last.insert(*origin, seq);
        Ok((seq, (last != seq - 1).then_some(last)))
    }

    /// The highest seq held (stored or declined) of an origin.
    pub(crate) fn last_held(&self, mem: &Mem, origin: &PeerId) -> R<u64> {
        let Some(id) = mem.origins.get(origin) else {
            return Ok(0);
        };
        let mut last = 0;
        for prefix in [keys::RECORD, keys::DECLINED] {
            if let Some(kv) = self.data().scan_prefix(id_key(prefix, *id)).next_back() {
                let (k, _) = kv?;
                last = last.max(keys::parse_slot_key(&k).map(|(_, s)| s).unwrap_or(0));
            }
        }
        Ok(last)
    }

    pub(crate) fn load_import_filter(&self) -> R<HashSet<u64>> {
        let mut f = HashSet::new();
        for kv in self.data().scan_prefix([keys::IMPORT]) {
            let (_, v) = kv?;
            for c in v.chunks_exact(8) {
                let mut b = [0u8; 8];
                b.copy_from_slice(c);
                f.insert(u64::from_le_bytes(b));
            }
        }
        Ok(f)
    }
}

/// Own seqs in epochs.
impl Store {
    /// Begin a new epoch for own records, durable (flushed) before this
    /// returns: `epoch = max(now_secs, last epoch + 1)` (and above the epoch
    /// of every own seq held). Own seqs in it are `epoch << 32 | 1, 2, …`;
    /// the first carries `prev_seq = Some(info.prev_seq)`. Call once per
    /// process start before signing (appends begin one themselves if not).
    pub fn begin_epoch(&self, now_secs: u64) -> Result<EpochInfo, StoreError> {
        let _ws = self.writer_state();
        let mem = self.mem_read();
        let mut seqs = self.seq_state();
        let info = self.begin_epoch_locked(&mem, mem.own_seq, now_secs)?;
        seqs.epoch = Some(EpochState {
            epoch: info.epoch,
            next: 1,
        });
        seqs.last.clear();
        Ok(info)
    }

    pub(crate) fn begin_epoch_locked(
        &self,
        _mem: &Mem,
        last_own: u64,
        now_secs: u64,
    ) -> Result<EpochInfo, StoreError> {
        let last_epoch = match self.data().get(keys::meta_key(META_EPOCH))? {
            Some(v) => be_u32(&v).ok_or_else(|| corrupt("epoch value"))?,
            None => 0,
        };
        let above_held = (last_own >> 32).saturating_add(1);
        let epoch = (now_secs.min(u64::from(u32::MAX - 1)) as u32)
            .max(last_epoch.saturating_add(1))
            .max(above_held.min(u64::from(u32::MAX)) as u32);
        if epoch <= last_epoch || u64::from(epoch) < above_held {
            return Err(StoreError::Unsupported("own seq epochs exhausted".into()));
        }
        self.data()
            .insert(keys::meta_key(META_EPOCH), &epoch.to_be_bytes()[..])?;
        self.flush()?;
        Ok(EpochInfo {
            epoch,
            prev_seq: last_own,
        })
    }

    /// The epoch own records are signed in now (None before the first).
    pub fn current_epoch(&self) -> Option<u32> {
        self.seq_state().epoch.map(|e| e.epoch)
    }

    /// The last own seq held (signed here, or received back from peers; 0 if none).
    pub fn own_seq(&self) -> u64 {
        self.mem_read().own_seq
    }

    /// Raise the own seq (a node that learns from peers that it signed
    /// higher seqs before a store loss must never reuse them): the next own
    /// record begins a new epoch above `at_least` that names it as prev.
    pub fn bump_own_seq(&self, at_least: u64) -> Result<(), StoreError> {
        let _ws = self.writer_state();
        let mut mem = self.mem_write();
        if mem.own_seq < at_least {
            self.data()
                .insert(keys::meta_key(META_OWN_SEQ), &at_least.to_be_bytes()[..])?;
            mem.own_seq = at_least;
            let mut seqs = self.seq_state();
            seqs.epoch = None;
            seqs.last.clear();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::store::{AppendOutcome, StoreConfig};
    use crate::write::Outcomes;

    use crate::testutil::pattern;

    fn batch(from: u64, n: u64) -> Vec<(Pattern, Option<[u8; 32]>)> {
        (from..from + n)
            .map(|i| (pattern(i), Some(*blake3::hash(&i.to_le_bytes()).as_bytes())))
            .collect()
    }

    #[test]
    fn a_prepared_batch_overtaken_by_own_seqs_is_refused_whole_and_the_chain_recovers() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &StoreConfig::default()).unwrap();
        let key = Keypair::ed25519_from_bytes([3; 32]).unwrap();
        let me = key.public().to_peer_id();
        store.append_local_batch(&key, batch(0, 5)).unwrap();

        // Prepared (seqs reserved, signed), then own seqs move past it
        // before it is planned: as if our own records came back from peers.
        let stale = store.prepare_append(&key, batch(5, 100)).unwrap();
        assert_eq!(stale.signed.len(), 100);
        let first = stale.signed[0].body.seq;
        store.bump_own_seq(first + 1_000).unwrap();
        let r = store.write_work(vec![Work::Prepared(stale)]);
        assert!(matches!(&r[..], [Err(StoreError::Corrupt(m))] if m.contains("own seqs moved")));
        assert_eq!(store.pattern_count(), 5);
        assert!(!store.has_seq(&me, first).unwrap());

        // Its import keys were only reserved: the same patterns now import,
        // in a new epoch above the bump, chained to what is held.
        let out = store.append_local_batch(&key, batch(5, 100)).unwrap();
        assert!(out.iter().all(|o| matches!(o, AppendOutcome::Appended(..))));
        assert_eq!(store.pattern_count(), 105);
        let Some(AppendOutcome::Appended(_, b)) = out.first() else {
            panic!("no record");
        };
        assert!(b.seq > first + 1_000);
        assert_eq!(b.prev_seq, Some(first + 1_000));
        let Some(AppendOutcome::Appended(_, last)) = out.last() else {
            panic!("no record");
        };
        assert_eq!(store.own_seq(), last.seq);
        // And a re-import of everything adds nothing.
        let again = store.write_group(Some(&key), vec![Batch::Append(batch(0, 105))]);
        match &again[..] {
            [Ok(Outcomes::Appended(v))] => assert!(v
                .iter()
                .all(|o| matches!(o, AppendOutcome::DuplicateImport))),
            other => panic!("{other:?}"),
        }
    }
}
