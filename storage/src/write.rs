//! Planning and applying writes.
//!
//! Every write goes through [`Store::write_group`]: under the store's write
//! lock, a group of jobs (inserts, local appends, declines) is planned
//! against the committed state plus an overlay of what the group itself
//! wrote, then applied with **one** `apply_batch` on the `data` tree (atomic:
//! sled recovers a batch whole or not at all) and mirrored into the
//! in-memory state readers use. One writer at a time means no sled
//! transactions (and none of their read-set bookkeeping) are needed.

use std::collections::{BTreeMap, HashMap, HashSet};

use libp2p_identity::{Keypair, PeerId};
use metamesh_protocol::record::{
    extends_frontier, ContentHash, PatternBody, RecordKind, SignedRecord,
};
use metamesh_protocol::schema::Pattern;
use metamesh_protocol::stats::{DepthStats, DepthTable};

use crate::append::{Prepared, Signed, Work};
use crate::keys::{self, be_u64, id_key, slot_key};
use crate::store::{
    corrupt, decode_modes, AppendOutcome, InsertOutcome, Mem, Store, StoreError,
    MAX_MODES_PER_ORIGIN, OTHER_MODE,
};

/// One unit of work for [`Store::write_group`] (and the group-commit
/// [`crate::writer::Writer`]).
#[derive(Debug, Clone)]
pub enum Batch {
    /// Verified records from anyone (see [`Store::insert_batch`]).
    Insert(Vec<(SignedRecord, PatternBody)>),
    /// Local patterns to sign as the next own seqs, each with an optional
    /// import key (see [`Store::append_local_batch`]).
    Append(Vec<(Pattern, Option<[u8; 32]>)>),
    /// Records local policy declined (see [`Store::decline`]).
    Decline(Vec<Declined>),
}

impl Batch {
    /// Records (or patterns) in the batch.
    pub fn len(&self) -> usize {
        match self {
            Batch::Insert(v) => v.len(),
            Batch::Append(v) => v.len(),
            Batch::Decline(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A declined record's slot: it still advances the frontier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Declined {
    pub origin: PeerId,
    pub seq: u64,
    /// The record's previous seq ([`PatternBody::prev`]).
    pub prev: u64,
    pub hash: ContentHash,
}

/// What a [`Batch`] did, per item, in input order.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcomes {
    Inserted(Vec<InsertOutcome>),
    Appended(Vec<AppendOutcome>),
    /// Per slot: newly declined (false: already held).
    Declined(Vec<bool>),
}

/// The seqs of the epoch this process signs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochInfo {
    pub epoch: u32,
    /// The last own seq held when the epoch began (0 if none): the first
    /// record of the epoch names it as `prev_seq`.
    pub prev_seq: u64,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct EpochState {
    pub epoch: u32,
    pub next: u32,
}

/// State only the writer touches (behind the write lock).
#[derive(Default)]
pub(crate) struct WriterState {
    /// Per-origin mode statistics, loaded on first use.
    pub modes: HashMap<u32, BTreeMap<String, DepthStats>>,
}

/// Own seq assignment and import dedup, behind their own lock so appends
/// can be prepared while a group is written. Lock order: the write lock,
/// then `mem`, then this.
#[derive(Default)]
pub(crate) struct SeqState {
    pub epoch: Option<EpochState>,
    /// The last seq signed per signing key in this process (the next
    /// record's prev); absent: taken from the store.
    pub last: HashMap<PeerId, u64>,
    /// 8-byte prefixes of every import key (stored, or reserved by a
    /// prepared batch), loaded on first use.
    pub imports: Option<HashSet<u64>>,
}

impl SeqState {
    /// Forget what prepared batches relied on (after a failed write), so the
    /// next batch starts from what is held.
    pub(crate) fn forget(&mut self) {
        self.last.clear();
        self.epoch = None;
        self.imports = None;
    }
}

/// One group's writes and state changes, not yet applied.
#[derive(Default)]
pub(crate) struct Plan {
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    new_origins: Vec<PeerId>,
    new_ids: HashMap<PeerId, u32>,
    frontier: HashMap<u32, u64>,
    pending_delta: HashMap<u32, i64>,
    stats: HashMap<u32, DepthTable>,
    merged: Option<DepthTable>,
    modes_touched: HashSet<u32>,
    own_seq: Option<u64>,
    own_origin: Option<PeerId>,
    /// The store's record dictionary (schema ≥ 3 stores).
    dict: Option<std::sync::Arc<crate::packing::Dict>>,
}

type R<T> = Result<T, StoreError>;

impl Plan {
    fn put(&mut self, k: &[u8], v: Vec<u8>) {
        self.writes.insert(k.to_vec(), Some(v));
    }

    fn del(&mut self, k: &[u8]) {
        self.writes.insert(k.to_vec(), None);
    }

    fn get(&self, tree: &sled::Tree, k: &[u8]) -> R<Option<Vec<u8>>> {
        match self.writes.get(k) {
            Some(v) => Ok(v.clone()),
            None => Ok(tree.get(k)?.map(|v| v.to_vec())),
        }
    }

    fn id_of(&mut self, mem: &Mem, origin: &PeerId) -> u32 {
        if let Some(id) = mem.origins.get(origin).or_else(|| self.new_ids.get(origin)) {
            return *id;
        }
        let id = (mem.ids.len() + self.new_origins.len()) as u32;
        let bytes = origin.to_bytes();
        self.put(&keys::origin_key(&bytes), id.to_be_bytes().to_vec());
        self.put(&id_key(keys::ORIGIN_ID, id), bytes);
        self.new_origins.push(*origin);
        self.new_ids.insert(*origin, id);
        id
    }

    fn frontier_of(&self, mem: &Mem, id: u32) -> u64 {
        self.frontier
            .get(&id)
            .or_else(|| mem.frontier.get(&id))
            .copied()
            .unwrap_or(0)
    }

    fn pending_count(&self, mem: &Mem, id: u32) -> i64 {
        mem.pending.get(&id).copied().unwrap_or(0) as i64
            + self.pending_delta.get(&id).copied().unwrap_or(0)
    }

    /// The first pending slot of `id` with seq > `after` (overlay and tree merged).
    fn next_pending(&self, tree: &sled::Tree, id: u32, after: u64) -> R<Option<(u64, u64)>> {
        if after == u64::MAX {
            return Ok(None);
        }
        let lo = slot_key(keys::PENDING, id, after + 1);
        let hi = slot_key(keys::PENDING, id, u64::MAX);
        let mut from_tree = None;
        for kv in tree.range(lo..=hi) {
            let (k, v) = kv?;
            if self.writes.get(k.as_ref()).is_some_and(Option::is_none) {
                continue; // removed in this group
            }
            from_tree = Some((k.to_vec(), v.to_vec()));
            break;
        }
        let from_overlay = self
            .writes
            .range(lo.to_vec()..=hi.to_vec())
            .find_map(|(k, v)| v.as_ref().map(|v| (k.clone(), v.clone())));
        let best = match (from_tree, from_overlay) {
            (Some(a), Some(b)) => Some(if b.0 <= a.0 { b } else { a }),
            (a, b) => a.or(b),
        };
        match best {
            None => Ok(None),
            Some((k, v)) => {
                let (_, seq) = keys::parse_slot_key(&k).ok_or_else(|| corrupt("pending key"))?;
                let prev = be_u64(&v).ok_or_else(|| corrupt("pending value"))?;
                Ok(Some((seq, prev)))
            }
        }
    }

    /// Record that slot `seq` (previous `prev`) of `id` is held and move the
    /// frontier by the rule `prev <= f < seq`; slots that cannot extend it
    /// yet wait in `pending` until the frontier reaches their prev.
    fn hold(&mut self, tree: &sled::Tree, mem: &Mem, id: u32, seq: u64, prev: u64) -> R<()> {
        let mut f = self.frontier_of(mem, id);
        if seq <= f {
            return Ok(());
        }
        if !extends_frontier(f, seq, prev) {
            self.put(
                &slot_key(keys::PENDING, id, seq),
                prev.to_be_bytes().to_vec(),
            );
            *self.pending_delta.entry(id).or_insert(0) += 1;
            return Ok(());
        }
        let mut after = f;
        f = seq;
        while self.pending_count(mem, id) > 0 {
            let Some((s, p)) = self.next_pending(tree, id, after)? else {
                break;
            };
            if s <= f {
                // Jumped over: held anyway (only an origin that signed
                // overlapping chains leaves such slots).
                self.del(&slot_key(keys::PENDING, id, s));
                *self.pending_delta.entry(id).or_insert(0) -= 1;
            } else if p <= f {
                self.del(&slot_key(keys::PENDING, id, s));
                *self.pending_delta.entry(id).or_insert(0) -= 1;
                f = s;
            } else {
                break;
            }
            after = s;
        }
        self.frontier.insert(id, f);
        Ok(())
    }

    fn add_stats(
        &mut self,
        tree: &sled::Tree,
        mem: &Mem,
        ws: &mut WriterState,
        id: u32,
        p: &Pattern,
    ) -> R<()> {
        self.stats
            .entry(id)
            .or_insert_with(|| mem.stats.get(&id).copied().unwrap_or_default())
            .add_pattern(p);
        self.merged.get_or_insert(mem.merged).add_pattern(p);
        if !ws.modes.contains_key(&id) {
            let m = match tree.get(id_key(keys::MODES, id))? {
                Some(v) => decode_modes(&v)?,
                None => BTreeMap::new(),
            };
            ws.modes.insert(id, m);
        }
        if let Some(modes) = ws.modes.get_mut(&id) {
            let key = if modes.contains_key(&p.mode) || modes.len() < MAX_MODES_PER_ORIGIN {
                p.mode.clone()
            } else {
                OTHER_MODE.to_string()
            };
            modes
                .entry(key)
                .or_default()
                .add(p.quality_achieved, p.success, p.atp_cost());
        }
        self.modes_touched.insert(id);
        Ok(())
    }

    fn note_own(&mut self, mem: &Mem, origin: &PeerId, seq: u64) {
        let own = self.own_origin.or(mem.own_origin);
        if own == Some(*origin) {
            let cur = self.own_seq.unwrap_or(mem.own_seq);
            if seq > cur {
                self.own_seq = Some(seq);
            }
        }
    }

    fn keep_evidence(&mut self, tree: &sled::Tree, id: u32, seq: u64, rec: &SignedRecord) -> R<()> {
        let k = slot_key(keys::EVIDENCE, id, seq);
        if self.get(tree, &k)?.is_none() {
            self.put(&k, rec.to_bytes());
        }
        Ok(())
    }

    /// Plan one verified record.
    fn insert(
        &mut self,
        tree: &sled::Tree,
        mem: &Mem,
        ws: &mut WriterState,
        rec: &SignedRecord,
        body: &PatternBody,
    ) -> R<InsertOutcome> {
        let id = self.id_of(mem, &body.origin);
        let hash = rec.content_hash();
        let rk = slot_key(keys::RECORD, id, body.seq);
        if let Some(v) = self.get(tree, &rk)? {
            let held = keys::record_body(&v, &rec.signer, self.dict.as_deref())
                .ok_or_else(|| corrupt("record value"))?;
            if ContentHash::of(&held) == hash {
                return Ok(InsertOutcome::Duplicate);
            }
            self.keep_evidence(tree, id, body.seq, rec)?;
            let existing = keys::decode_record(&v, &rec.signer, self.dict.as_deref())
                .ok_or_else(|| corrupt("record value"))?;
            return Ok(InsertOutcome::Equivocation { existing });
        }
        if let Some(h) = self.get(tree, &slot_key(keys::DECLINED, id, body.seq))? {
            if h != hash.0 {
                self.keep_evidence(tree, id, body.seq, rec)?;
            }
            return Ok(InsertOutcome::Duplicate);
        }
        let value = keys::encode_record(rec, self.dict.as_deref());
        self.insert_new(tree, mem, ws, id, body, value)?;
        Ok(InsertOutcome::Inserted)
    }

    /// Plan a record whose slot is known to be free: its value, time
    /// index entry, statistics and frontier move.
    fn insert_new(
        &mut self,
        tree: &sled::Tree,
        mem: &Mem,
        ws: &mut WriterState,
        id: u32,
        body: &PatternBody,
        value: Vec<u8>,
    ) -> R<()> {
        self.put(&slot_key(keys::RECORD, id, body.seq), value);
        self.note_time(tree, id, body.seq, body.pattern.timestamp)?;
        self.add_stats(tree, mem, ws, id, &body.pattern)?;
        self.hold(tree, mem, id, body.seq, body.prev())?;
        self.note_own(mem, &body.origin, body.seq);
        Ok(())
    }

    /// Raise the latest timestamp of the record's chunk (one entry per 64
    /// seqs, appended like the records: a per-record time index was a
    /// random insert per record and a quarter of the store).
    fn note_time(&mut self, tree: &sled::Tree, id: u32, seq: u64, ts: f64) -> R<()> {
        let ck = keys::chunk_key(id, seq);
        let latest = self.get(tree, &ck)?.and_then(|v| keys::chunk_latest(&v));
        if latest.is_none_or(|l| ts > l) {
            self.put(&ck, ts.to_bits().to_be_bytes().to_vec());
        }
        Ok(())
    }

    fn decline(&mut self, tree: &sled::Tree, mem: &Mem, d: &Declined) -> R<bool> {
        let id = self.id_of(mem, &d.origin);
        let dk = slot_key(keys::DECLINED, id, d.seq);
        if self
            .get(tree, &slot_key(keys::RECORD, id, d.seq))?
            .is_some()
            || self.get(tree, &dk)?.is_some()
        {
            return Ok(false);
        }
        self.put(&dk, d.hash.0.to_vec());
        self.hold(tree, mem, id, d.seq, d.prev)?;
        self.note_own(mem, &d.origin, d.seq);
        Ok(true)
    }

    /// The writes as one sled batch, plus the state to mirror after it applied.
    fn finish(mut self, mem: &Mem, ws: &WriterState) -> (sled::Batch, Commit) {
        for (id, f) in &self.frontier {
            self.writes.insert(
                id_key(keys::FRONTIER, *id).to_vec(),
                Some(f.to_be_bytes().to_vec()),
            );
        }
        for (id, t) in &self.stats {
            self.writes.insert(
                id_key(keys::STATS, *id).to_vec(),
                Some(crate::store::encode(t)),
            );
        }
        for id in &self.modes_touched {
            if let Some(m) = ws.modes.get(id) {
                self.writes.insert(
                    id_key(keys::MODES, *id).to_vec(),
                    Some(crate::store::encode(m)),
                );
            }
        }
        if let Some(m) = &self.merged {
            self.writes.insert(
                keys::meta_key(crate::store::META_MERGED),
                Some(crate::store::encode(m)),
            );
        }
        if let Some(s) = self.own_seq {
            self.writes.insert(
                keys::meta_key(crate::store::META_OWN_SEQ),
                Some(s.to_be_bytes().to_vec()),
            );
        }
        if let Some(o) = self.own_origin.filter(|o| mem.own_origin != Some(*o)) {
            self.writes.insert(
                keys::meta_key(crate::store::META_OWN_ORIGIN),
                Some(o.to_bytes()),
            );
        }
        let mut batch = sled::Batch::default();
        for (k, v) in std::mem::take(&mut self.writes) {
            match v {
                Some(v) => batch.insert(k, v),
                None => batch.remove(k),
            }
        }
        let commit = Commit {
            new_origins: self.new_origins,
            frontier: self.frontier,
            pending_delta: self.pending_delta,
            stats: self.stats,
            merged: self.merged,
            own_seq: self.own_seq,
            own_origin: self.own_origin,
        };
        (batch, commit)
    }
}

/// State changes to mirror into [`Mem`] once the batch is applied.
pub(crate) struct Commit {
    new_origins: Vec<PeerId>,
    frontier: HashMap<u32, u64>,
    pending_delta: HashMap<u32, i64>,
    stats: HashMap<u32, DepthTable>,
    merged: Option<DepthTable>,
    own_seq: Option<u64>,
    own_origin: Option<PeerId>,
}

impl Commit {
    fn apply(self, mem: &mut Mem) {
        for o in self.new_origins {
            let id = mem.ids.len() as u32;
            mem.origins.insert(o, id);
            mem.ids.push(o);
        }
        mem.frontier.extend(self.frontier);
        for (id, d) in self.pending_delta {
            let c = mem.pending.entry(id).or_insert(0);
            *c = (*c as i64 + d).max(0) as u64;
        }
        mem.stats.extend(self.stats);
        if let Some(m) = self.merged {
            mem.merged = m;
        }
        if let Some(s) = self.own_seq {
            mem.own_seq = mem.own_seq.max(s);
        }
        if let Some(o) = self.own_origin {
            mem.own_origin = Some(o);
        }
    }
}

fn check_record(rec: &SignedRecord, body: &PatternBody) -> R<()> {
    if rec.kind != RecordKind::Pattern {
        return Err(StoreError::Mismatch("record kind is not pattern"));
    }
    if rec.signer != body.origin.to_bytes() {
        return Err(StoreError::Mismatch("body origin is not the signer"));
    }
    if body.seq == 0 {
        return Err(StoreError::Mismatch("seq must be at least 1"));
    }
    if body.prev_seq.is_some_and(|p| p >= body.seq) {
        return Err(StoreError::Mismatch("prev seq must be below seq"));
    }
    Ok(())
}

impl Store {
    /// Plan and apply `jobs` as one atomic sled batch (not flushed).
    /// `key` signs `Batch::Append` jobs. Each job gets its own result: a job
    /// that fails validation leaves the others standing; a storage error
    /// fails them all.
    pub(crate) fn write_group(&self, key: Option<&Keypair>, jobs: Vec<Batch>) -> Vec<R<Outcomes>> {
        // Prepare under the write lock: two callers must not reserve own
        // seqs in one order and apply them in the other (the later
        // reservation would be refused as "own seqs moved"). The `Writer`
        // prepares ahead on its signer thread, in its one FIFO order.
        let mut ws = self.writer_state();
        let work = jobs.into_iter().map(|b| self.to_work(key, b)).collect();
        self.write_work_locked(&mut ws, work)
    }

    /// [`Store::write_group`] for jobs whose appends are already prepared.
    pub(crate) fn write_work(&self, jobs: Vec<Work>) -> Vec<R<Outcomes>> {
        let mut ws = self.writer_state();
        self.write_work_locked(&mut ws, jobs)
    }

    fn write_work_locked(&self, ws: &mut WriterState, jobs: Vec<Work>) -> Vec<R<Outcomes>> {
        let tree = self.data();
        let mut plan = Plan {
            dict: self.dict_arc(),
            ..Plan::default()
        };
        let mut results = Vec::with_capacity(jobs.len());
        {
            let mem = self.mem_read();
            for job in jobs {
                let r = match job {
                    Work::Batch(Batch::Insert(items)) => {
                        self.plan_insert(&mut plan, tree, &mem, ws, &items)
                    }
                    Work::Batch(Batch::Decline(items)) => items
                        .iter()
                        .map(|d| plan.decline(tree, &mem, d))
                        .collect::<R<Vec<_>>>()
                        .map(Outcomes::Declined),
                    Work::Batch(Batch::Append(_)) => Err(corrupt("unprepared append")),
                    Work::Prepared(p) => self.plan_prepared(&mut plan, tree, &mem, ws, p),
                    Work::Failed(e) => Err(e),
                };
                results.push(r);
            }
        }
        let (batch, commit) = {
            let mem = self.mem_read();
            plan.finish(&mem, ws)
        };
        // sled first, memory second: a reader never sees a frontier ahead
        // of the records, and it is not blocked while sled applies the
        // batch (a reader that looks in between sees the old state, which
        // only costs a duplicate the next plan detects).
        if let Err(e) = tree.apply_batch(batch) {
            // Nothing of the group is written: forget cached state it touched.
            ws.modes.clear();
            self.seq_state().forget();
            let msg = e.to_string();
            return results
                .into_iter()
                .map(|_| Err(StoreError::Corrupt(format!("write failed: {msg}"))))
                .collect();
        }
        commit.apply(&mut self.mem_write());
        results
    }

    fn plan_insert(
        &self,
        plan: &mut Plan,
        tree: &sled::Tree,
        mem: &Mem,
        ws: &mut WriterState,
        items: &[(SignedRecord, PatternBody)],
    ) -> R<Outcomes> {
        for (r, b) in items {
            check_record(r, b)?;
        }
        items
            .iter()
            .map(|(r, b)| plan.insert(tree, mem, ws, r, b))
            .collect::<R<Vec<_>>>()
            .map(Outcomes::Inserted)
    }

    /// Plan a prepared own append ([`Store::prepare_append`]). For the
    /// store's own key the batch is checked once: its chain must extend the
    /// own seqs held (`prev <= own_seq < first seq`), which also rules out
    /// any held slot; another key's records are checked one by one.
    fn plan_prepared(
        &self,
        plan: &mut Plan,
        tree: &sled::Tree,
        mem: &Mem,
        ws: &mut WriterState,
        p: Prepared,
    ) -> R<Outcomes> {
        let own = plan.own_origin.or(mem.own_origin).unwrap_or(p.origin);
        if plan.own_origin.is_none() && mem.own_origin.is_none() {
            plan.own_origin = Some(own);
        }
        let is_own = own == p.origin;
        if let (true, Some(first)) = (is_own, p.signed.first()) {
            let held = plan.own_seq.unwrap_or(mem.own_seq).max(mem.own_seq);
            if !extends_frontier(held, first.body.seq, first.body.prev()) {
                return Err(self.forget(
                    "own seqs moved while the batch was signed (own records came back, or an earlier batch failed); nothing of it is stored, retry",
                ));
            }
        }
        let first_seq = p.signed.first().map(|s| s.body.seq);
        let mut signed = p.signed.into_iter();
        let mut out = Vec::with_capacity(p.slots.len());
        for appended in p.slots {
            if !appended {
                out.push(AppendOutcome::DuplicateImport);
                continue;
            }
            let Some(Signed { rec, body, value }) = signed.next() else {
                return Err(self.forget("append bookkeeping"));
            };
            let fresh = if is_own {
                let id = plan.id_of(mem, &body.origin);
                plan.insert_new(tree, mem, ws, id, &body, value)
                    .map(|()| InsertOutcome::Inserted)
            } else {
                plan.insert(tree, mem, ws, &rec, &body)
            };
            if !matches!(fresh, Ok(InsertOutcome::Inserted)) {
                // Cannot happen with fresh epoch seqs; refuse loudly rather
                // than report phantom records.
                return Err(self.forget("own seq collided with a held record"));
            }
            out.push(AppendOutcome::Appended(rec, body));
        }
        if let (Some(first), false) = (first_seq, p.prefixes.is_empty()) {
            let blob: Vec<u8> = p.prefixes.iter().flat_map(|p| p.to_le_bytes()).collect();
            plan.put(&[&[keys::IMPORT][..], &first.to_be_bytes()].concat(), blob);
        }
        Ok(Outcomes::Appended(out))
    }

    /// A prepared append could not be stored: forget the seq state it
    /// relied on (own seq chain, reserved import keys), and say why.
    fn forget(&self, why: &str) -> StoreError {
        self.seq_state().forget();
        corrupt(why)
    }
}
