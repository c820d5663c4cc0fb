//! An in-memory store that executes the core's plans: for tests and the
//! network simulator. Applies the same frontier rule as the sled store
//! (`prev <= f < seq`, pending records above gaps, declined slots).

use std::collections::{BTreeMap, HashSet};

use libp2p_identity::PeerId;
use metamesh_protocol::record::ContentHash;
use metamesh_protocol::sync::Frontier;
use metamesh_protocol::wire::{Cursor, RequestFilters};
use metamesh_protocol::SignedRecord;

use crate::compat;
use crate::io::{PersistBatch, Persisted, WriteOutcome};
use crate::serve::{record_bytes, RecordSource};

#[derive(Debug, Clone, Default)]
pub struct MemStore {
    /// origin → seq → (record, prev)
    records: BTreeMap<PeerId, BTreeMap<u64, (SignedRecord, u64)>>,
    hashes: HashSet<ContentHash>,
    /// origin → seq → prev, slots declined for good
    declined: BTreeMap<PeerId, BTreeMap<u64, u64>>,
    frontier: Frontier,
    pub insights: BTreeMap<PeerId, SignedRecord>,
    pub reputation: BTreeMap<PeerId, Vec<u8>>,
    pub own_seq: u64,
    /// Second bodies kept as evidence: (origin, seq, hash).
    pub equivocations: Vec<(PeerId, u64, ContentHash)>,
}

/// No error is possible in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Never {}

impl std::fmt::Display for Never {
    fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {}
    }
}

impl MemStore {
    pub fn frontier(&self) -> &Frontier {
        &self.frontier
    }

    /// Records held (stored, not declined).
    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    pub fn contains(&self, h: &ContentHash) -> bool {
        self.hashes.contains(h)
    }

    /// Every stored record's hash.
    pub fn hashes(&self) -> impl Iterator<Item = &ContentHash> {
        self.hashes.iter()
    }

    /// Write a batch (atomically: it cannot fail in memory).
    pub fn apply(&mut self, batch: PersistBatch) -> Persisted {
        let mut outcomes = Vec::with_capacity(batch.records.len());
        let mut touched = HashSet::new();
        for (rec, body) in batch.records {
            let hash = rec.content_hash();
            if self.hashes.contains(&hash) {
                outcomes.push(WriteOutcome::Duplicate);
                continue;
            }
            let slots = self.records.entry(body.origin).or_default();
            if slots.contains_key(&body.seq) {
                self.equivocations.push((body.origin, body.seq, hash));
                outcomes.push(WriteOutcome::Equivocation);
                continue;
            }
            let prev = compat::prev_of(body.seq, compat::record_prev(&rec));
            slots.insert(body.seq, (rec, prev));
            self.hashes.insert(hash);
            touched.insert(body.origin);
            outcomes.push(WriteOutcome::Inserted);
        }
        for d in batch.declined {
            self.declined
                .entry(d.origin)
                .or_default()
                .insert(d.seq, d.prev);
            touched.insert(d.origin);
        }
        for (rec, body) in batch.insights {
            self.insights.insert(body.origin, rec);
        }
        for (p, b) in batch.reputation {
            self.reputation.insert(p, b);
        }
        if let Some(s) = batch.own_seq {
            self.own_seq = self.own_seq.max(s);
        }
        let mut frontier = Vec::new();
        for o in touched {
            let f = self.advance(o);
            frontier.push((o, f));
        }
        frontier.sort();
        Persisted { outcomes, frontier }
    }

    fn advance(&mut self, origin: PeerId) -> u64 {
        let mut f = self.frontier.get(&origin).copied().unwrap_or(0);
        loop {
            let next_rec = self
                .records
                .get(&origin)
                .and_then(|m| m.range(f.saturating_add(1)..).next())
                .map(|(s, (_, p))| (*s, *p));
            let next_dec = self
                .declined
                .get(&origin)
                .and_then(|m| m.range(f.saturating_add(1)..).next())
                .map(|(s, p)| (*s, *p));
            let next = match (next_rec, next_dec) {
                (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
                (a, b) => a.or(b),
            };
            match next {
                Some((seq, prev)) if compat::extends_frontier(f, seq, prev) => f = seq,
                _ => break,
            }
        }
        if f > 0 {
            self.frontier.insert(origin, f);
        }
        f
    }
}

impl RecordSource for MemStore {
    type Error = Never;

    fn records_in_range(
        &self,
        origin: PeerId,
        from: u64,
        to: u64,
        max_count: usize,
        max_bytes: usize,
    ) -> Result<Vec<SignedRecord>, Never> {
        let mut out = Vec::new();
        let mut bytes = 0;
        if from > to {
            return Ok(out);
        }
        if let Some(m) = self.records.get(&origin) {
            for (_, (r, _)) in m.range(from..=to) {
                let n = record_bytes(r);
                if out.len() >= max_count || bytes + n > max_bytes {
                    break;
                }
                bytes += n;
                out.push(r.clone());
            }
        }
        Ok(out)
    }

    fn query(
        &self,
        filters: &RequestFilters,
        cursor: Option<Cursor>,
        limit: usize,
    ) -> Result<(Vec<SignedRecord>, Option<Cursor>), Never> {
        let mut out = Vec::new();
        let mut last = None;
        let start = cursor.map(|c| (c.origin, c.seq));
        'outer: for (o, m) in &self.records {
            if start.is_some_and(|(co, _)| *o < co) {
                continue;
            }
            for (s, (r, _)) in m {
                if start.is_some_and(|(co, cs)| *o == co && *s <= cs) {
                    continue;
                }
                let Ok(body) = r.decode_pattern_unverified(*o, f64::MAX) else {
                    continue;
                };
                if !filters.matches(&body.pattern) {
                    continue;
                }
                if out.len() >= limit {
                    break 'outer;
                }
                out.push(r.clone());
                last = Some(Cursor {
                    origin: *o,
                    seq: *s,
                });
            }
        }
        let done = out.len() < limit;
        Ok((out, if done { None } else { last }))
    }
}
