//! The sled store.
//!
//! ## Trees
//! | tree | key | value |
//! |---|---|---|
//! | `records` | record key (origin, seq) | signed envelope (CBOR) |
//! | `by_hash` | content hash | record key |
//! | `by_time` | f64 key of the pattern's timestamp ‖ record key | empty |
//! | `frontier` | origin bytes | highest contiguous seq held (BE u64) |
//! | `pending` | record key | empty: seqs held (stored or declined) above the frontier |
//! | `declined` | record key | content hash of a record local policy declined |
//! | `equivocation` | record key | the first conflicting envelope for that slot (evidence) |
//! | `stats` | origin bytes | `DepthTable` (CBOR) of that origin's stored patterns |
//! | `mode_stats` | origin bytes | `BTreeMap<mode, DepthStats>` (CBOR), at most [`MAX_MODES_PER_ORIGIN`] modes |
//! | `meta` | name | schema version, own seq, merged `DepthTable` |
//! | `import_keys` | blake3 of an imported pattern's canonical JSON | record key |
//! | `reputation`, `peers`, `insights` | PeerId bytes | node-owned bytes, addresses, latest insight record |
//!
//! A record, its indexes, the statistics it changes and the frontier move
//! land in one multi-tree sled transaction: all or nothing. The merged and
//! per-origin statistics are kept current on every write, so insights over a
//! million patterns need no scan.
//!
//! ## Durability
//! A write is *durable* once [`Store::flush`] has returned after it (sled
//! fsyncs its log). Writes not yet flushed survive a clean shutdown, and sled
//! flushes in the background every `flush_every_ms`, but a `kill -9` may lose
//! them — never partially: recovery sees each transaction whole or not at all.
//! Group commit: write many records (one transaction per batch with
//! [`Store::insert_batch`] / [`Store::append_local_batch`]), then flush once.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use libp2p_identity::{Keypair, PeerId};
use metamesh_protocol::codec;
use metamesh_protocol::record::{
    ContentHash, InsightBody, PatternBody, RecordKind, SignedRecord, MAX_BODY_BYTES,
};
use metamesh_protocol::schema::{Depth, Pattern};
use metamesh_protocol::stats::{DepthStats, DepthTable};
use metamesh_protocol::sync::Frontier;
use metamesh_protocol::wire::{Cursor, RequestFilters};
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use sled::Transactional;

use crate::keys::{be_u64, f64_key, origin_prefix, parse_record_key, record_key};

/// Schema version this build writes and reads.
pub const SCHEMA_VERSION: u32 = 1;
/// Most distinct modes tracked per origin; further modes count as [`OTHER_MODE`].
pub const MAX_MODES_PER_ORIGIN: usize = 64;
/// Bucket for modes beyond [`MAX_MODES_PER_ORIGIN`].
pub const OTHER_MODE: &str = "other";
/// Most records one [`Store::query`] call returns.
pub const MAX_QUERY_LIMIT: usize = 10_000;
/// Most records one [`Store::query`] call examines before it returns a
/// cursor (bounds the work of a filter that matches little).
pub const QUERY_SCAN_BUDGET: usize = 100_000;
/// Most records in one batch transaction (bounds transaction memory).
pub const MAX_BATCH: usize = 4096;

const META_SCHEMA: &[u8] = b"schema_version";
const META_OWN_SEQ: &[u8] = b"own_seq";
const META_MERGED: &[u8] = b"merged_stats";

// Indexes of the transactional trees (the order of `TX_TREES`).
const RECORDS: usize = 0;
const BY_HASH: usize = 1;
const BY_TIME: usize = 2;
const FRONTIER: usize = 3;
const PENDING: usize = 4;
const DECLINED: usize = 5;
const EQUIVOCATION: usize = 6;
const STATS: usize = 7;
const MODE_STATS: usize = 8;
const META: usize = 9;
const IMPORT_KEYS: usize = 10;
const TX_TREES: [&str; 11] = [
    "records",
    "by_hash",
    "by_time",
    "frontier",
    "pending",
    "declined",
    "equivocation",
    "stats",
    "mode_stats",
    "meta",
    "import_keys",
];

/// Store settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// Upper bound of sled's page cache, in bytes.
    pub cache_capacity_bytes: u64,
    /// sled's background flush period (None: only explicit [`Store::flush`]).
    pub flush_every_ms: Option<u64>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            cache_capacity_bytes: 64 * 1024 * 1024,
            flush_every_ms: Some(500),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "the store {} is locked by another process — most likely a running `metamesh run` node \
         using this data directory; stop it, or use the client commands, which talk to its API",
        path.display()
    )]
    Locked { path: PathBuf },
    #[error(
        "the store {} has schema version {found}, newer than this build supports ({supported}); \
         upgrade metamesh",
        path.display()
    )]
    NewerSchema {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error("storage error: {0}")]
    Sled(#[from] sled::Error),
    #[error("store data is corrupt: {0}")]
    Corrupt(String),
    #[error("record does not match its body: {0}")]
    Mismatch(&'static str),
    #[error("not supported: {0}")]
    Unsupported(String),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// What [`Store::insert`] did with a record.
#[derive(Debug, Clone, PartialEq)]
pub enum InsertOutcome {
    Inserted,
    /// The same record (or a declined record with the same hash) is already held.
    Duplicate,
    /// Another record with the same origin and seq is held: both are kept as
    /// evidence (the new one in the equivocation tree); `existing` is the held one.
    Equivocation {
        existing: SignedRecord,
    },
}

/// One evidence entry of equivocation: two different bodies for (origin, seq).
#[derive(Debug, Clone, PartialEq)]
pub struct EquivocationEvidence {
    pub origin: PeerId,
    pub seq: u64,
    /// The record stored first (absent when the first one was declined).
    pub held: Option<SignedRecord>,
    pub conflicting: SignedRecord,
}

/// One page of [`Store::query`]: the records and where to continue (if more may match).
pub type QueryPage = (Vec<(SignedRecord, PatternBody)>, Option<Cursor>);

/// The result of a local append.
// Outcomes are consumed right away; boxing the record would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum AppendOutcome {
    Appended(SignedRecord, PatternBody),
    /// An import key already present (the same pattern was imported before).
    DuplicateImport,
}

#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    db: sled::Db,
    tx: Vec<sled::Tree>,
    reputation: sled::Tree,
    peers: sled::Tree,
    insights: sled::Tree,
    /// Serialises local appends so that seq allocation is gap-free.
    append_lock: Mutex<()>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.inner.path)
            .finish()
    }
}

type TxResult<T> = Result<T, ConflictableTransactionError<StoreError>>;

fn abort<T>(e: StoreError) -> TxResult<T> {
    Err(ConflictableTransactionError::Abort(e))
}

/// Read `key` from `tree` inside a transaction and decode it; the default
/// when absent; a decode failure aborts the transaction.
fn load_or_default<T: Default>(
    tree: &TransactionalTree,
    key: &[u8],
    decode: fn(&[u8]) -> Result<T, StoreError>,
) -> TxResult<T> {
    match tree.get(key)? {
        Some(v) => decode(&v).or_else(abort),
        None => Ok(T::default()),
    }
}

fn tx_err(e: TransactionError<StoreError>) -> StoreError {
    match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => StoreError::Sled(e),
    }
}

fn corrupt(what: impl Into<String>) -> StoreError {
    StoreError::Corrupt(what.into())
}

fn decode_table(bytes: &[u8]) -> Result<DepthTable, StoreError> {
    codec::from_cbor(bytes, 64 * 1024).map_err(|e| corrupt(format!("statistics: {e}")))
}

fn decode_modes(bytes: &[u8]) -> Result<BTreeMap<String, DepthStats>, StoreError> {
    codec::from_cbor(bytes, 1024 * 1024).map_err(|e| corrupt(format!("mode statistics: {e}")))
}

fn decode_record(bytes: &[u8]) -> Result<SignedRecord, StoreError> {
    SignedRecord::from_bytes(bytes).map_err(|e| corrupt(format!("record: {e}")))
}

fn decode_body(rec: &SignedRecord) -> Result<PatternBody, StoreError> {
    codec::from_cbor(&rec.body, MAX_BODY_BYTES).map_err(|e| corrupt(format!("pattern body: {e}")))
}

fn is_lock_error(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io) if io.to_string().contains("could not acquire lock"))
}

/// Per-transaction caches of the aggregate values a batch changes, written
/// back once at the end (a batch of N records touches each aggregate once).
#[derive(Default)]
struct BatchState {
    /// origin → (frontier as loaded, frontier now); only changed ones are written.
    frontier: HashMap<PeerId, (u64, u64)>,
    stats: HashMap<PeerId, DepthTable>,
    modes: HashMap<PeerId, BTreeMap<String, DepthStats>>,
    merged: Option<DepthTable>,
}

impl BatchState {
    fn frontier(&mut self, t: &[TransactionalTree], origin: &PeerId) -> TxResult<u64> {
        if let Some((_, f)) = self.frontier.get(origin) {
            return Ok(*f);
        }
        let f = match t[FRONTIER].get(origin.to_bytes())? {
            Some(v) => match be_u64(&v) {
                Some(f) => f,
                None => return abort(corrupt("frontier value")),
            },
            None => 0,
        };
        self.frontier.insert(*origin, (f, f));
        Ok(f)
    }

    /// Record that `seq` of `origin` is now held (stored or declined) and
    /// move the contiguous frontier. sled transactions cannot range-scan, so
    /// the seqs held above the frontier are probed one by one in `pending`;
    /// each probe that hits is also removed, so the total work is linear.
    fn hold(&mut self, t: &[TransactionalTree], origin: &PeerId, seq: u64) -> TxResult<()> {
        let mut f = self.frontier(t, origin)?;
        if seq == f + 1 {
            f = seq;
            // Probe with `get` and remove only hits: a transactional
            // `remove` of an absent key still queues a delete that the
            // commit must look up in the tree (one wasted traversal per
            // in-order record, the common case).
            loop {
                let next = record_key(origin, f + 1);
                if t[PENDING].get(&next)?.is_none() {
                    break;
                }
                t[PENDING].remove(next)?;
                f += 1;
            }
            if let Some(entry) = self.frontier.get_mut(origin) {
                entry.1 = f;
            }
        } else if seq > f + 1 {
            t[PENDING].insert(record_key(origin, seq), &[][..])?;
        }
        Ok(())
    }

    fn add_stats(&mut self, t: &[TransactionalTree], origin: &PeerId, p: &Pattern) -> TxResult<()> {
        if !self.stats.contains_key(origin) {
            let table = load_or_default(&t[STATS], &origin.to_bytes(), decode_table)?;
            self.stats.insert(*origin, table);
        }
        if let Some(table) = self.stats.get_mut(origin) {
            table.add_pattern(p);
        }
        if !self.modes.contains_key(origin) {
            let modes = load_or_default(&t[MODE_STATS], &origin.to_bytes(), decode_modes)?;
            self.modes.insert(*origin, modes);
        }
        if let Some(modes) = self.modes.get_mut(origin) {
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
        if self.merged.is_none() {
            let merged = load_or_default(&t[META], META_MERGED, decode_table)?;
            self.merged = Some(merged);
        }
        if let Some(m) = self.merged.as_mut() {
            m.add_pattern(p);
        }
        Ok(())
    }

    fn write_back(self, t: &[TransactionalTree]) -> TxResult<()> {
        for (origin, (loaded, f)) in self.frontier {
            if loaded == f {
                continue;
            }
            t[FRONTIER].insert(origin.to_bytes(), &f.to_be_bytes()[..])?;
        }
        for (origin, table) in self.stats {
            t[STATS].insert(origin.to_bytes(), codec::to_cbor(&table))?;
        }
        for (origin, modes) in self.modes {
            t[MODE_STATS].insert(origin.to_bytes(), codec::to_cbor(&modes))?;
        }
        if let Some(m) = self.merged {
            t[META].insert(META_MERGED, codec::to_cbor(&m))?;
        }
        Ok(())
    }
}

/// One record ready to be written.
struct Prepared<'a> {
    key: Vec<u8>,
    bytes: Vec<u8>,
    hash: ContentHash,
    rec: &'a SignedRecord,
    body: &'a PatternBody,
}

fn prepare<'a>(rec: &'a SignedRecord, body: &'a PatternBody) -> Result<Prepared<'a>, StoreError> {
    if rec.kind != RecordKind::Pattern {
        return Err(StoreError::Mismatch("record kind is not pattern"));
    }
    if rec.signer != body.origin.to_bytes() {
        return Err(StoreError::Mismatch("body origin is not the signer"));
    }
    if body.seq == 0 {
        return Err(StoreError::Mismatch("seq must be at least 1"));
    }
    Ok(Prepared {
        key: record_key(&body.origin, body.seq),
        bytes: rec.to_bytes(),
        hash: rec.content_hash(),
        rec,
        body,
    })
}

/// Keep the first conflicting envelope for a slot as evidence. One per
/// (origin, seq): an equivocating origin cannot grow the tree faster than it
/// burns sequence numbers, and one proof is all the node needs.
fn keep_evidence(t: &[TransactionalTree], p: &Prepared<'_>) -> TxResult<()> {
    if t[EQUIVOCATION].get(&p.key)?.is_none() {
        t[EQUIVOCATION].insert(p.key.clone(), p.bytes.clone())?;
    }
    Ok(())
}

/// Insert one prepared record inside a transaction.
fn apply_one(
    t: &[TransactionalTree],
    st: &mut BatchState,
    p: &Prepared<'_>,
) -> TxResult<InsertOutcome> {
    if let Some(existing) = t[RECORDS].get(&p.key)? {
        let existing = match decode_record(&existing) {
            Ok(r) => r,
            Err(e) => return abort(e),
        };
        if existing.content_hash() == p.hash {
            return Ok(InsertOutcome::Duplicate);
        }
        keep_evidence(t, p)?;
        return Ok(InsertOutcome::Equivocation { existing });
    }
    if let Some(h) = t[DECLINED].get(&p.key)? {
        if h.as_ref() != p.hash.0 {
            // A different body for a declined slot: keep it as evidence.
            keep_evidence(t, p)?;
        }
        return Ok(InsertOutcome::Duplicate);
    }
    let pattern = &p.body.pattern;
    t[RECORDS].insert(p.key.clone(), p.bytes.clone())?;
    t[BY_HASH].insert(&p.hash.0[..], p.key.clone())?;
    let mut tk = f64_key(pattern.timestamp).to_vec();
    tk.extend_from_slice(&p.key);
    t[BY_TIME].insert(tk, &[][..])?;
    st.add_stats(t, &p.body.origin, pattern)?;
    st.hold(t, &p.body.origin, p.body.seq)?;
    let _ = p.rec; // kept for symmetry with callers that return it
    Ok(InsertOutcome::Inserted)
}

impl Store {
    /// Open (or create) the store at `path`.
    pub fn open(path: &Path, cfg: &StoreConfig) -> Result<Store, StoreError> {
        std::fs::create_dir_all(path)?;
        crate::recovery::before_open(path)?; // partial snapshots aside (issue 12 #1)
        let config = sled::Config::new()
            .path(path)
            .cache_capacity(cfg.cache_capacity_bytes)
            .flush_every_ms(cfg.flush_every_ms);
        // sled 0.34 can panic (rather than err) while replaying a truncated
        // or damaged log; that is bad input, not a bug of ours: say so.
        let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| config.open()))
            .map_err(|panic| {
                let why = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                StoreError::Corrupt(format!(
                    "the store's log {} is damaged or truncated (sled failed reading it: {why}); \
                     restore it from a backup, or move the store aside",
                    path.join("db").display()
                ))
            })?;
        let db = opened.map_err(|e| {
            if is_lock_error(&e) {
                StoreError::Locked {
                    path: path.to_path_buf(),
                }
            } else {
                StoreError::Sled(e)
            }
        })?;
        let mut tx = Vec::with_capacity(TX_TREES.len());
        for name in TX_TREES {
            tx.push(db.open_tree(name)?);
        }
        let store = Store {
            inner: Arc::new(Inner {
                path: path.to_path_buf(),
                reputation: db.open_tree("reputation")?,
                peers: db.open_tree("peers")?,
                insights: db.open_tree("insights")?,
                db,
                tx,
                append_lock: Mutex::new(()),
            }),
        };
        store.check_schema()?;
        crate::recovery::after_open(&store)?; // refuse a truncated log (issue 12 #3)
        Ok(store)
    }

    fn check_schema(&self) -> Result<(), StoreError> {
        let meta = &self.inner.tx[META];
        match meta.get(META_SCHEMA)? {
            None => {
                meta.insert(META_SCHEMA, &SCHEMA_VERSION.to_be_bytes()[..])?;
                meta.flush()?;
            }
            Some(v) => {
                let found = u32::from_be_bytes(
                    v.as_ref()
                        .try_into()
                        .map_err(|_| corrupt("schema version value"))?,
                );
                if found > SCHEMA_VERSION {
                    return Err(StoreError::NewerSchema {
                        path: self.inner.path.clone(),
                        found,
                        supported: SCHEMA_VERSION,
                    });
                }
                // Older versions: none exist yet; migrations go here.
            }
        }
        Ok(())
    }

    /// The schema version recorded in the store.
    pub fn schema_version(&self) -> Result<u32, StoreError> {
        let v = self.inner.tx[META]
            .get(META_SCHEMA)?
            .ok_or_else(|| corrupt("no schema version"))?;
        Ok(u32::from_be_bytes(
            v.as_ref()
                .try_into()
                .map_err(|_| corrupt("schema version value"))?,
        ))
    }

    /// Test and tooling hook: record a schema version (to check refusal of newer stores).
    #[doc(hidden)]
    pub fn set_schema_version_for_tests(&self, v: u32) -> Result<(), StoreError> {
        self.inner.tx[META].insert(META_SCHEMA, &v.to_be_bytes()[..])?;
        self.flush()
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    fn tree(&self, i: usize) -> &sled::Tree {
        &self.inner.tx[i]
    }

    /// The durability point: every write made before this returns survives a crash.
    pub fn flush(&self) -> Result<(), StoreError> {
        crate::recovery::flush_with_mark(self, || self.inner.db.flush())
    }

    /// Bytes sled occupies on disk.
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        Ok(self.inner.db.size_on_disk()?)
    }

    // ---- writes ----------------------------------------------------------

    /// Store a verified record atomically with its indexes, statistics and
    /// frontier move. The caller has verified the signature and schema
    /// (`SignedRecord::open_pattern`).
    pub fn insert(
        &self,
        rec: &SignedRecord,
        body: &PatternBody,
    ) -> Result<InsertOutcome, StoreError> {
        let mut out = self.insert_batch(&[(rec.clone(), body.clone())])?;
        out.pop().ok_or_else(|| corrupt("empty batch result"))
    }

    /// Store many verified records in one transaction (group commit: follow
    /// with one [`Store::flush`]). Outcomes are in input order. Batches larger
    /// than [`MAX_BATCH`] are split into several transactions.
    pub fn insert_batch(
        &self,
        items: &[(SignedRecord, PatternBody)],
    ) -> Result<Vec<InsertOutcome>, StoreError> {
        let mut out = Vec::with_capacity(items.len());
        for chunk in items.chunks(MAX_BATCH) {
            let prepared = chunk
                .iter()
                .map(|(r, b)| prepare(r, b))
                .collect::<Result<Vec<_>, _>>()?;
            let res = self.inner.tx[..]
                .transaction(|t| {
                    let mut st = BatchState::default();
                    let mut outs = Vec::with_capacity(prepared.len());
                    for p in &prepared {
                        outs.push(apply_one(t, &mut st, p)?);
                    }
                    st.write_back(t)?;
                    Ok(outs)
                })
                .map_err(tx_err)?;
            out.extend(res);
        }
        Ok(out)
    }

    /// Sign `pattern` as the next own seq and store it atomically.
    pub fn append_local(
        &self,
        key: &Keypair,
        pattern: Pattern,
    ) -> Result<(SignedRecord, PatternBody), StoreError> {
        let mut out = self.append_local_batch(key, vec![(pattern, None)])?;
        match out.pop() {
            Some(AppendOutcome::Appended(r, b)) => Ok((r, b)),
            _ => Err(corrupt("local append produced no record")),
        }
    }

    /// Sign and store many local patterns in one transaction per
    /// [`MAX_BATCH`]. A pattern given with an import key is skipped (as
    /// [`AppendOutcome::DuplicateImport`]) when that key is already present,
    /// in the store or earlier in the batch; skipped patterns use no seq.
    pub fn append_local_batch(
        &self,
        key: &Keypair,
        patterns: Vec<(Pattern, Option<[u8; 32]>)>,
    ) -> Result<Vec<AppendOutcome>, StoreError> {
        let origin = key.public().to_peer_id();
        // Poisoning only means another append panicked; the store itself is
        // transactional, so carry on.
        let _guard = self
            .inner
            .append_lock
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::with_capacity(patterns.len());
        let mut iter = patterns.into_iter().peekable();
        while iter.peek().is_some() {
            let chunk: Vec<_> = iter.by_ref().take(MAX_BATCH).collect();
            let mut next = self.next_own_seq(&origin)?;
            let mut seen = std::collections::HashSet::new();
            // (position in chunk output, record, body, import key)
            let mut signed: Vec<(SignedRecord, PatternBody, Option<[u8; 32]>)> = Vec::new();
            let mut chunk_out: Vec<Option<AppendOutcome>> = Vec::with_capacity(chunk.len());
            for (pattern, ik) in chunk {
                if let Some(k) = ik {
                    if !seen.insert(k) || self.tree(IMPORT_KEYS).contains_key(k)? {
                        chunk_out.push(Some(AppendOutcome::DuplicateImport));
                        continue;
                    }
                }
                let rec = SignedRecord::sign_pattern(pattern.clone(), next, key);
                let body = PatternBody {
                    v: metamesh_protocol::record::BODY_VERSION,
                    origin,
                    seq: next,
                    pattern,
                };
                next += 1;
                signed.push((rec, body, ik));
                chunk_out.push(None);
            }
            let last_seq = next - 1;
            let prepared = signed
                .iter()
                .map(|(r, b, _)| prepare(r, b))
                .collect::<Result<Vec<_>, _>>()?;
            let outcomes = self.inner.tx[..]
                .transaction(|t| {
                    let mut st = BatchState::default();
                    let mut outs = Vec::with_capacity(prepared.len());
                    for (p, (_, _, ik)) in prepared.iter().zip(&signed) {
                        let o = apply_one(t, &mut st, p)?;
                        if o == InsertOutcome::Inserted {
                            if let Some(k) = ik {
                                t[IMPORT_KEYS].insert(&k[..], p.key.clone())?;
                            }
                        }
                        outs.push(o);
                    }
                    st.write_back(t)?;
                    t[META].insert(META_OWN_SEQ, &last_seq.to_be_bytes()[..])?;
                    Ok(outs)
                })
                .map_err(tx_err)?;
            if outcomes.iter().any(|o| *o != InsertOutcome::Inserted) {
                // Cannot happen while appends are serialised and seqs come from
                // next_own_seq; refuse loudly rather than report phantom records.
                return Err(corrupt("own seq collided with a held record"));
            }
            let mut signed = signed.into_iter();
            for slot in chunk_out {
                match slot {
                    Some(o) => out.push(o),
                    None => {
                        let (r, b, _) =
                            signed.next().ok_or_else(|| corrupt("append bookkeeping"))?;
                        out.push(AppendOutcome::Appended(r, b));
                    }
                }
            }
        }
        Ok(out)
    }

    /// The next unused own seq: after both the recorded counter and any own
    /// record held (e.g. received back from peers after a store loss).
    fn next_own_seq(&self, origin: &PeerId) -> Result<u64, StoreError> {
        let counter = self.own_seq_raw()?;
        let held = match self
            .tree(RECORDS)
            .scan_prefix(origin_prefix(origin))
            .next_back()
        {
            Some(kv) => {
                let (k, _) = kv?;
                parse_record_key(&k).map(|(_, s)| s).unwrap_or(0)
            }
            None => 0,
        };
        let declined = match self
            .tree(DECLINED)
            .scan_prefix(origin_prefix(origin))
            .next_back()
        {
            Some(kv) => {
                let (k, _) = kv?;
                parse_record_key(&k).map(|(_, s)| s).unwrap_or(0)
            }
            None => 0,
        };
        Ok(counter.max(held).max(declined) + 1)
    }

    fn own_seq_raw(&self) -> Result<u64, StoreError> {
        Ok(match self.tree(META).get(META_OWN_SEQ)? {
            Some(v) => be_u64(&v).ok_or_else(|| corrupt("own seq value"))?,
            None => 0,
        })
    }

    /// The last seq this node signed (0 if none).
    pub fn own_seq(&self) -> u64 {
        self.own_seq_raw().unwrap_or_else(|e| {
            tracing::error!("reading own seq: {e}");
            0
        })
    }

    /// Raise the own seq counter (a node that learns from peers that it
    /// signed higher seqs before a store loss must never reuse them).
    pub fn bump_own_seq(&self, at_least: u64) -> Result<(), StoreError> {
        let _guard = self
            .inner
            .append_lock
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if self.own_seq_raw()? < at_least {
            self.tree(META)
                .insert(META_OWN_SEQ, &at_least.to_be_bytes()[..])?;
        }
        Ok(())
    }

    /// A record that local policy declines still advances the frontier
    /// (or it would be pulled forever); its hash is kept as declined.
    pub fn mark_declined(
        &self,
        origin: PeerId,
        seq: u64,
        hash: ContentHash,
    ) -> Result<(), StoreError> {
        if seq == 0 {
            return Err(StoreError::Mismatch("seq must be at least 1"));
        }
        let key = record_key(&origin, seq);
        self.inner.tx[..]
            .transaction(|t| {
                if t[RECORDS].get(&key)?.is_some() || t[DECLINED].get(&key)?.is_some() {
                    return Ok(());
                }
                t[DECLINED].insert(key.clone(), &hash.0[..])?;
                let mut st = BatchState::default();
                st.hold(t, &origin, seq)?;
                st.write_back(t)?;
                Ok(())
            })
            .map_err(tx_err)
    }

    // ---- reads -------------------------------------------------------------

    /// origin → highest contiguous seq held (stored or declined).
    pub fn frontier(&self) -> Frontier {
        let mut f = Frontier::new();
        for kv in self.tree(FRONTIER).iter() {
            match kv {
                Ok((k, v)) => {
                    if let (Ok(p), Some(s)) = (PeerId::from_bytes(&k), be_u64(&v)) {
                        f.insert(p, s);
                    }
                }
                Err(e) => tracing::error!("reading the frontier: {e}"),
            }
        }
        f
    }

    /// Is the slot (origin, seq) held (stored or declined)?
    ///
    /// Answered from the two small trees: every transaction that stores or
    /// declines a slot also holds it (`BatchState::hold`), so a slot is held
    /// exactly when it is at or below the frontier or in `pending` — no
    /// lookup in the large `records` tree (this runs once per pulled record).
    /// `pending` is read first: a slot only ever moves from `pending` to
    /// below the frontier, so a concurrent commit cannot hide a held slot.
    pub fn has_seq(&self, origin: &PeerId, seq: u64) -> Result<bool, StoreError> {
        if seq == 0 {
            return Ok(false);
        }
        if self.tree(PENDING).contains_key(record_key(origin, seq))? {
            return Ok(true);
        }
        let frontier = match self.tree(FRONTIER).get(origin.to_bytes())? {
            Some(v) => be_u64(&v).ok_or_else(|| corrupt("frontier value"))?,
            None => 0,
        };
        Ok(seq <= frontier)
    }

    /// Per-origin statistics of stored patterns.
    pub fn origin_stats(&self) -> BTreeMap<PeerId, DepthTable> {
        let mut out = BTreeMap::new();
        for kv in self.tree(STATS).iter() {
            match kv.map_err(StoreError::from).and_then(|(k, v)| {
                let p = PeerId::from_bytes(&k).map_err(|_| corrupt("stats key"))?;
                Ok((p, decode_table(&v)?))
            }) {
                Ok((p, t)) => {
                    out.insert(p, t);
                }
                Err(e) => tracing::error!("reading statistics: {e}"),
            }
        }
        out
    }

    /// Statistics of one origin's patterns (empty if none).
    pub fn stats_of(&self, origin: &PeerId) -> DepthTable {
        match self.tree(STATS).get(origin.to_bytes()) {
            Ok(Some(v)) => decode_table(&v).unwrap_or_else(|e| {
                tracing::error!("reading statistics: {e}");
                DepthTable::default()
            }),
            Ok(None) => DepthTable::default(),
            Err(e) => {
                tracing::error!("reading statistics: {e}");
                DepthTable::default()
            }
        }
    }

    /// Statistics of every stored pattern (kept merged on every write: O(1)).
    pub fn merged_stats(&self) -> DepthTable {
        match self.tree(META).get(META_MERGED) {
            Ok(Some(v)) => decode_table(&v).unwrap_or_else(|e| {
                tracing::error!("reading statistics: {e}");
                DepthTable::default()
            }),
            Ok(None) => DepthTable::default(),
            Err(e) => {
                tracing::error!("reading statistics: {e}");
                DepthTable::default()
            }
        }
    }

    /// Per-mode statistics of one origin (at most [`MAX_MODES_PER_ORIGIN`] + 1 entries).
    pub fn origin_mode_stats(&self, origin: &PeerId) -> BTreeMap<String, DepthStats> {
        match self.tree(MODE_STATS).get(origin.to_bytes()) {
            Ok(Some(v)) => decode_modes(&v).unwrap_or_else(|e| {
                tracing::error!("reading mode statistics: {e}");
                BTreeMap::new()
            }),
            Ok(None) => BTreeMap::new(),
            Err(e) => {
                tracing::error!("reading mode statistics: {e}");
                BTreeMap::new()
            }
        }
    }

    /// Per-mode statistics merged over all origins.
    pub fn merged_mode_stats(&self) -> BTreeMap<String, DepthStats> {
        let mut out: BTreeMap<String, DepthStats> = BTreeMap::new();
        for kv in self.tree(MODE_STATS).iter() {
            match kv
                .map_err(StoreError::from)
                .and_then(|(_, v)| decode_modes(&v))
            {
                Ok(m) => {
                    for (mode, s) in m {
                        out.entry(mode).or_default().merge(&s);
                    }
                }
                Err(e) => tracing::error!("reading mode statistics: {e}"),
            }
        }
        out
    }

    /// Number of stored patterns (declined ones are not stored).
    pub fn pattern_count(&self) -> u64 {
        self.merged_stats().total()
    }

    /// Number of stored patterns per depth (every depth present, zeros included).
    pub fn depth_distribution(&self) -> BTreeMap<Depth, u64> {
        let m = self.merged_stats();
        m.iter().map(|(d, s)| (d, s.n)).collect()
    }

    /// Records of `origin` with `from_seq <= seq <= to_seq`, in seq order, at
    /// most `max_count` of them and at most `max_bytes` of encoded envelopes.
    pub fn records_in_range(
        &self,
        origin: PeerId,
        from_seq: u64,
        to_seq: u64,
        max_count: usize,
        max_bytes: usize,
    ) -> Result<Vec<SignedRecord>, StoreError> {
        let mut out = Vec::new();
        if from_seq > to_seq || max_count == 0 {
            return Ok(out);
        }
        let mut bytes = 0usize;
        for kv in self
            .tree(RECORDS)
            .range(record_key(&origin, from_seq)..=record_key(&origin, to_seq))
        {
            let (_, v) = kv?;
            if bytes + v.len() > max_bytes || out.len() >= max_count {
                break;
            }
            bytes += v.len();
            out.push(decode_record(&v)?);
        }
        Ok(out)
    }

    /// Records matching the seed's filters, resuming after `cursor`. Order:
    /// by (origin, seq), or by timestamp when `min_timestamp` is set (the
    /// timestamp index then skips older records). Returns at most
    /// `min(limit, filters.max_count, MAX_QUERY_LIMIT)` records and a cursor
    /// when more may match (also when [`QUERY_SCAN_BUDGET`] records were
    /// examined without filling the page).
    pub fn query(
        &self,
        filters: &RequestFilters,
        cursor: Option<Cursor>,
        limit: usize,
    ) -> Result<QueryPage, StoreError> {
        let limit = limit
            .min(filters.max_count.map(|m| m as usize).unwrap_or(usize::MAX))
            .min(MAX_QUERY_LIMIT);
        let mut out = Vec::new();
        if limit == 0 {
            return Ok((out, None));
        }
        let mut scanned = 0usize;
        let mut last: Option<Cursor> = None;
        let mut consider = |k: &[u8],
                            v: &[u8],
                            out: &mut Vec<(SignedRecord, PatternBody)>|
         -> Result<bool, StoreError> {
            let rec = decode_record(v)?;
            let body = decode_body(&rec)?;
            let (origin, seq) = parse_record_key(k).ok_or_else(|| corrupt("record key"))?;
            last = Some(Cursor { origin, seq });
            scanned += 1;
            if filters.matches(&body.pattern) {
                out.push((rec, body));
            }
            Ok(out.len() >= limit || scanned >= QUERY_SCAN_BUDGET)
        };
        let mut stopped_early = false;
        if let Some(min_ts) = filters.min_timestamp {
            let start = match cursor {
                Some(c) => {
                    let ck = record_key(&c.origin, c.seq);
                    let rec = self.tree(RECORDS).get(&ck)?.ok_or_else(|| {
                        StoreError::Unsupported("cursor names no stored record".into())
                    })?;
                    let body = decode_body(&decode_record(&rec)?)?;
                    let mut k = f64_key(body.pattern.timestamp).to_vec();
                    k.extend_from_slice(&ck);
                    std::ops::Bound::Excluded(k)
                }
                None => std::ops::Bound::Included(f64_key(min_ts).to_vec()),
            };
            for kv in self
                .tree(BY_TIME)
                .range((start, std::ops::Bound::Unbounded))
            {
                let (tk, _) = kv?;
                let rk = &tk[8.min(tk.len())..];
                let Some(v) = self.tree(RECORDS).get(rk)? else {
                    continue;
                };
                if consider(rk, &v, &mut out)? {
                    stopped_early = true;
                    break;
                }
            }
        } else {
            let start = match cursor {
                Some(c) => std::ops::Bound::Excluded(record_key(&c.origin, c.seq)),
                None => std::ops::Bound::Unbounded,
            };
            for kv in self
                .tree(RECORDS)
                .range::<Vec<u8>, _>((start, std::ops::Bound::Unbounded))
            {
                let (k, v) = kv?;
                if consider(&k, &v, &mut out)? {
                    stopped_early = true;
                    break;
                }
            }
        }
        Ok((out, if stopped_early { last } else { None }))
    }

    /// The stored record with this content hash.
    pub fn get_by_hash(&self, hash: &ContentHash) -> Result<Option<SignedRecord>, StoreError> {
        let Some(k) = self.tree(BY_HASH).get(hash.0)? else {
            return Ok(None);
        };
        match self.tree(RECORDS).get(&k)? {
            Some(v) => Ok(Some(decode_record(&v)?)),
            None => Ok(None),
        }
    }

    /// The stored record of (origin, seq).
    pub fn get(
        &self,
        origin: &PeerId,
        seq: u64,
    ) -> Result<Option<(SignedRecord, PatternBody)>, StoreError> {
        match self.tree(RECORDS).get(record_key(origin, seq))? {
            Some(v) => {
                let rec = decode_record(&v)?;
                let body = decode_body(&rec)?;
                Ok(Some((rec, body)))
            }
            None => Ok(None),
        }
    }

    /// Every stored record in (origin, seq) order, decoded lazily (export).
    pub fn iter_records(
        &self,
    ) -> impl Iterator<Item = Result<(SignedRecord, PatternBody), StoreError>> + '_ {
        self.tree(RECORDS).iter().map(|kv| {
            let (_, v) = kv?;
            let rec = decode_record(&v)?;
            let body = decode_body(&rec)?;
            Ok((rec, body))
        })
    }

    /// Is this content hash stored or declined?
    pub fn contains_hash(&self, hash: &ContentHash) -> Result<bool, StoreError> {
        Ok(self.tree(BY_HASH).contains_key(hash.0)?)
    }

    /// Equivocation evidence held.
    pub fn equivocations(&self) -> Result<Vec<EquivocationEvidence>, StoreError> {
        let mut out = Vec::new();
        for kv in self.tree(EQUIVOCATION).iter() {
            let (k, v) = kv?;
            let rk = &k[..];
            let (origin, seq) = parse_record_key(rk).ok_or_else(|| corrupt("equivocation key"))?;
            let held = match self.tree(RECORDS).get(rk)? {
                Some(h) => Some(decode_record(&h)?),
                None => None,
            };
            out.push(EquivocationEvidence {
                origin,
                seq,
                held,
                conflicting: decode_record(&v)?,
            });
        }
        Ok(out)
    }

    /// Was this import key seen before?
    pub fn has_import_key(&self, key: &[u8; 32]) -> Result<bool, StoreError> {
        Ok(self.tree(IMPORT_KEYS).contains_key(key)?)
    }

    // ---- node key-value helpers --------------------------------------------

    pub fn put_reputation(&self, peer: &PeerId, bytes: &[u8]) -> Result<(), StoreError> {
        self.inner.reputation.insert(peer.to_bytes(), bytes)?;
        Ok(())
    }

    pub fn reputation_entries(&self) -> Vec<(PeerId, Vec<u8>)> {
        kv_entries(&self.inner.reputation, |v| Some(v.to_vec()))
    }

    pub fn put_peer_addrs(&self, peer: &PeerId, addrs: &[String]) -> Result<(), StoreError> {
        self.inner
            .peers
            .insert(peer.to_bytes(), codec::to_cbor(addrs))?;
        Ok(())
    }

    pub fn peer_addrs(&self) -> Vec<(PeerId, Vec<String>)> {
        kv_entries(&self.inner.peers, |v| codec::from_cbor(v, 64 * 1024).ok())
    }

    /// Keep `rec` as the latest insight of its origin unless a higher seq is held.
    pub fn put_latest_insight(
        &self,
        rec: &SignedRecord,
        body: &InsightBody,
    ) -> Result<(), StoreError> {
        if rec.kind != RecordKind::Insight {
            return Err(StoreError::Mismatch("record kind is not insight"));
        }
        if rec.signer != body.origin.to_bytes() {
            return Err(StoreError::Mismatch("body origin is not the signer"));
        }
        let mut value = body.seq.to_be_bytes().to_vec();
        value.extend_from_slice(&rec.to_bytes());
        self.inner
            .insights
            .fetch_and_update(body.origin.to_bytes(), |old| match old {
                Some(o) if o.len() >= 8 && be_u64(&o[..8]).unwrap_or(0) >= body.seq => {
                    Some(o.to_vec())
                }
                _ => Some(value.clone()),
            })?;
        Ok(())
    }

    pub fn latest_insights(&self) -> Vec<(SignedRecord, InsightBody)> {
        kv_entries(&self.inner.insights, |v| {
            let rec = SignedRecord::from_bytes(v.get(8..)?).ok()?;
            let body: InsightBody = codec::from_cbor(&rec.body, MAX_BODY_BYTES).ok()?;
            Some((rec, body))
        })
        .into_iter()
        .map(|(_, x)| x)
        .collect()
    }
}

fn kv_entries<T>(tree: &sled::Tree, decode: impl Fn(&[u8]) -> Option<T>) -> Vec<(PeerId, T)> {
    let mut out = Vec::new();
    for kv in tree.iter() {
        match kv {
            Ok((k, v)) => match (PeerId::from_bytes(&k), decode(&v)) {
                (Ok(p), Some(t)) => out.push((p, t)),
                _ => tracing::warn!("skipping an unreadable entry in the {:?} tree", tree.name()),
            },
            Err(e) => tracing::error!("reading the {:?} tree: {e}", tree.name()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    pub(crate) fn key(i: u8) -> Keypair {
        Keypair::ed25519_from_bytes([i; 32]).unwrap()
    }

    pub(crate) fn pattern(i: u64, depth: Depth, q: f64) -> Pattern {
        Pattern::from_json_value(
            serde_json::json!({
                "pattern_id": format!("p{i}"), "node_id": "n", "timestamp": 1_700_000_000.0 + i as f64,
                "platform": "test", "depth_used": depth.as_str(), "mode": format!("m{}", i % 3),
                "quality_achieved": q, "success": q > 0.5, "atp_before": 100.0, "atp_after": 90.0
            }),
            None,
        )
        .unwrap()
    }

    fn open(dir: &Path) -> Store {
        open_at(&dir.join("store")).unwrap()
    }

    /// Open, waiting while a just-dropped instance's background threads
    /// still hold sled's file lock (they release it shortly after the drop).
    fn open_at(path: &Path) -> Result<Store, StoreError> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            match Store::open(path, &StoreConfig::default()) {
                Err(StoreError::Locked { .. }) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(20))
                }
                r => return r,
            }
        }
    }

    fn signed(k: &Keypair, seq: u64, p: Pattern) -> (SignedRecord, PatternBody) {
        let rec = SignedRecord::sign_pattern(p, seq, k);
        let body = rec.open_pattern(2e9).unwrap();
        (rec, body)
    }

    #[test]
    fn append_query_and_stats() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path());
        let k = key(1);
        for i in 0..10u64 {
            let d = Depth::ALL[(i % 5) as usize];
            let (_, b) = s.append_local(&k, pattern(i, d, i as f64 / 10.0)).unwrap();
            assert_eq!(b.seq, i + 1);
        }
        assert_eq!(s.own_seq(), 10);
        assert_eq!(s.pattern_count(), 10);
        let me = k.public().to_peer_id();
        assert_eq!(s.frontier().get(&me), Some(&10));
        assert_eq!(s.depth_distribution()[&Depth::Deep], 2);
        assert_eq!(s.stats_of(&me), s.merged_stats());
        assert_eq!(s.origin_stats().len(), 1);
        let modes = s.origin_mode_stats(&me);
        assert_eq!(modes.len(), 3);
        assert_eq!(modes.values().map(|m| m.n).sum::<u64>(), 10);

        let f = RequestFilters {
            depths: Some(vec![Depth::Deep, Depth::Thorough]),
            min_quality: Some(0.35),
            ..Default::default()
        };
        let (page, cur) = s.query(&f, None, 100).unwrap();
        assert!(cur.is_none());
        let qs: Vec<f64> = page
            .iter()
            .map(|(_, b)| b.pattern.quality_achieved)
            .collect();
        assert_eq!(qs, vec![0.4, 0.8, 0.9]);
        // paging by cursor, ordered by timestamp
        let f = RequestFilters {
            min_timestamp: Some(1_700_000_003.0),
            ..Default::default()
        };
        let mut got = Vec::new();
        let mut cursor = None;
        loop {
            let (page, next) = s.query(&f, cursor, 2).unwrap();
            got.extend(page.into_iter().map(|(_, b)| b.seq));
            match next {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        assert_eq!(got, vec![4, 5, 6, 7, 8, 9, 10]);
        let f = RequestFilters {
            max_count: Some(3),
            ..Default::default()
        };
        assert_eq!(s.query(&f, None, 100).unwrap().0.len(), 3);

        let r = s.records_in_range(me, 3, 7, 100, usize::MAX).unwrap();
        assert_eq!(r.len(), 5);
        let one = r[0].to_bytes().len();
        assert_eq!(
            s.records_in_range(me, 3, 7, 2, usize::MAX).unwrap().len(),
            2
        );
        assert_eq!(
            s.records_in_range(me, 3, 7, 100, one * 2 + 1)
                .unwrap()
                .len(),
            2
        );
        let h = r[0].content_hash();
        assert_eq!(s.get_by_hash(&h).unwrap().unwrap(), r[0]);
    }

    #[test]
    fn has_seq_is_exactly_the_stored_or_declined_slots() {
        // has_seq answers from the frontier and `pending`; check it against
        // the slots actually stored or declined, after every write, for
        // out-of-order arrivals, declines, gaps and two origins.
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path());
        let (ka, kb) = (key(3), key(4));
        let (a, b) = (ka.public().to_peer_id(), kb.public().to_peer_id());
        // (origin index, seq, declined?) in arrival order; seq 9 of `a` never arrives.
        let arrivals = [
            (0, 3, false),
            (1, 1, false),
            (0, 5, true),
            (0, 1, false),
            (0, 2, true),
            (1, 3, false),
            (0, 4, false),
            (0, 10, false),
            (1, 2, true),
            (0, 6, false),
            (0, 8, false),
            (0, 7, false),
        ];
        let mut held: std::collections::HashSet<(usize, u64)> = Default::default();
        for (o, seq, declined) in arrivals {
            let (k, origin) = if o == 0 { (&ka, a) } else { (&kb, b) };
            let (rec, body) = signed(k, seq, pattern(seq * 10 + o as u64, Depth::Light, 0.5));
            if declined {
                s.mark_declined(origin, seq, rec.content_hash()).unwrap();
            } else {
                assert_eq!(s.insert(&rec, &body).unwrap(), InsertOutcome::Inserted);
            }
            held.insert((o, seq));
            for (oi, origin) in [(0usize, a), (1, b)] {
                for q in 0..=12u64 {
                    assert_eq!(
                        s.has_seq(&origin, q).unwrap(),
                        held.contains(&(oi, q)),
                        "origin {oi} seq {q} after ({o}, {seq})"
                    );
                }
            }
        }
        assert_eq!(s.frontier()[&a], 8);
        assert_eq!(s.frontier()[&b], 3);
    }

    #[test]
    fn out_of_order_frontier_duplicates_and_equivocation() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path());
        let k = key(2);
        let o = k.public().to_peer_id();
        let recs: Vec<_> = (1..=6)
            .map(|i| signed(&k, i, pattern(i, Depth::Light, 0.5)))
            .collect();
        for i in [2usize, 4, 5] {
            assert_eq!(
                s.insert(&recs[i].0, &recs[i].1).unwrap(),
                InsertOutcome::Inserted
            );
        }
        assert!(
            !s.frontier().contains_key(&o),
            "no frontier entry until seq 1 is held"
        );
        s.insert(&recs[0].0, &recs[0].1).unwrap();
        assert_eq!(s.frontier()[&o], 1);
        // seq 2 declined by policy: still advances past 3 to the held 4..6? no: 4 is missing
        s.mark_declined(o, 2, recs[1].0.content_hash()).unwrap();
        assert_eq!(s.frontier()[&o], 3);
        assert_eq!(
            s.insert(&recs[3].0, &recs[3].1).unwrap(),
            InsertOutcome::Inserted
        );
        assert_eq!(s.frontier()[&o], 6);
        assert_eq!(
            s.insert(&recs[3].0, &recs[3].1).unwrap(),
            InsertOutcome::Duplicate
        );
        assert_eq!(
            s.insert(&recs[1].0, &recs[1].1).unwrap(),
            InsertOutcome::Duplicate
        );
        assert_eq!(s.pattern_count(), 5);
        let (bad, bad_body) = signed(&k, 3, pattern(99, Depth::Deep, 0.9));
        match s.insert(&bad, &bad_body).unwrap() {
            InsertOutcome::Equivocation { existing } => assert_eq!(existing, recs[2].0),
            other => panic!("{other:?}"),
        }
        assert_eq!(s.pattern_count(), 5);
        let ev = s.equivocations().unwrap();
        assert_eq!(ev.len(), 1);
        assert_eq!((ev[0].origin, ev[0].seq), (o, 3));
        assert_eq!(ev[0].conflicting, bad);
    }

    #[test]
    fn batch_matches_single_inserts_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let k = key(3);
        let recs: Vec<_> = (1..=50)
            .map(|i| {
                signed(
                    &k,
                    i,
                    pattern(i, Depth::ALL[(i % 5) as usize], (i % 10) as f64 / 10.0),
                )
            })
            .collect();
        let expected = DepthTable::from_patterns(recs.iter().map(|(_, b)| &b.pattern));
        {
            let s = open(dir.path());
            let out = s.insert_batch(&recs).unwrap();
            assert!(out.iter().all(|o| *o == InsertOutcome::Inserted));
            s.flush().unwrap();
        }
        let s = open(dir.path());
        assert_eq!(s.merged_stats(), expected);
        assert_eq!(s.frontier()[&k.public().to_peer_id()], 50);
        assert_eq!(s.iter_records().count(), 50);
    }

    #[test]
    fn locked_store_is_a_clear_error_and_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path());
        // sled's lock is per process (flock on the same open file description
        // is re-entrant only for the same fd), so check in a child process below;
        // here: a newer schema.
        s.set_schema_version_for_tests(SCHEMA_VERSION + 1).unwrap();
        drop(s);
        match open_at(&dir.path().join("store")) {
            Err(e @ StoreError::NewerSchema { .. }) => assert!(e.to_string().contains("upgrade")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn mode_stats_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path());
        let k = key(4);
        let batch: Vec<_> = (0..(MAX_MODES_PER_ORIGIN as u64 + 10))
            .map(|i| {
                let mut p = pattern(i, Depth::Deep, 0.5);
                p.mode = format!("mode{i}");
                (p, None)
            })
            .collect();
        s.append_local_batch(&k, batch).unwrap();
        let m = s.origin_mode_stats(&k.public().to_peer_id());
        assert_eq!(m.len(), MAX_MODES_PER_ORIGIN + 1);
        assert_eq!(m[OTHER_MODE].n, 10);
    }

    #[test]
    fn import_keys_dedup_within_and_across_batches() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path());
        let k = key(5);
        let ik = [7u8; 32];
        let out = s
            .append_local_batch(
                &k,
                vec![
                    (pattern(1, Depth::Deep, 0.5), Some(ik)),
                    (pattern(1, Depth::Deep, 0.5), Some(ik)),
                    (pattern(2, Depth::Deep, 0.5), None),
                ],
            )
            .unwrap();
        assert!(matches!(out[1], AppendOutcome::DuplicateImport));
        assert!(matches!(&out[2], AppendOutcome::Appended(_, b) if b.seq == 2));
        let out = s
            .append_local_batch(&k, vec![(pattern(1, Depth::Deep, 0.5), Some(ik))])
            .unwrap();
        assert!(matches!(out[0], AppendOutcome::DuplicateImport));
        assert_eq!(s.pattern_count(), 2);
        assert_eq!(s.own_seq(), 2);
    }

    #[test]
    fn kv_helpers() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path());
        let p = key(6).public().to_peer_id();
        s.put_reputation(&p, b"abc").unwrap();
        assert_eq!(s.reputation_entries(), vec![(p, b"abc".to_vec())]);
        s.put_peer_addrs(&p, &["/ip4/127.0.0.1/tcp/1".to_string()])
            .unwrap();
        assert_eq!(
            s.peer_addrs()[0].1,
            vec!["/ip4/127.0.0.1/tcp/1".to_string()]
        );
        let k = key(6);
        let mk = |seq| {
            let body = InsightBody {
                v: metamesh_protocol::record::BODY_VERSION,
                origin: p,
                seq,
                computed_at: 1.0,
                stats: DepthTable::default(),
                insights: Default::default(),
            };
            (SignedRecord::sign_insight(&body, &k), body)
        };
        let (r2, b2) = mk(2);
        let (r1, b1) = mk(1);
        s.put_latest_insight(&r2, &b2).unwrap();
        s.put_latest_insight(&r1, &b1).unwrap();
        let li = s.latest_insights();
        assert_eq!(li.len(), 1);
        assert_eq!(li[0].1.seq, 2);
    }
}
