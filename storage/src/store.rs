//! The sled store.
//!
//! Layout (schema version 2, [`crate::keys`]): one `data` tree with
//! prefixed keys for records, the time index, frontiers, pending and
//! declined slots, evidence, statistics and meta; three small trees for
//! node-owned values (`reputation`, `peers`, `insights`). Records are keyed
//! by (origin id, seq), so writes are appends; dedup and equivocation are
//! (origin, seq) point lookups; there is no content-hash index (see
//! [`Store::holds`]). Pages are zstd-compressed by sled.
//!
//! ## Writes and durability
//! All writes go through one write lock and land as one atomic
//! `apply_batch` per group ([`crate::write`]); frontiers, statistics and
//! origins are mirrored in memory (loaded on open: no scan of the records),
//! so insights over millions of patterns need no scan. A write is *durable*
//! once [`Store::flush`] returned after it. Group commit: the
//! [`crate::writer::Writer`] handle lets concurrent callers share one batch
//! and one flush, each returning only after the flush that covers it.
//!
//! ## Own seqs
//! Own records are signed in *epochs* ([`Store::begin_epoch`]): seq =
//! `epoch << 32 | counter`, the epoch made durable before anything is signed
//! in it, so a store restored from an older copy never re-issues a seq.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use libp2p_identity::{Keypair, PeerId};
use metamesh_protocol::codec;
use metamesh_protocol::record::{ContentHash, PatternBody, SignedRecord};
use metamesh_protocol::schema::Pattern;
use metamesh_protocol::stats::{DepthStats, DepthTable};
use serde::Serialize;

use crate::keys::{self, be_u32, be_u64, id_key};
use crate::write::{Batch, Declined, Outcomes, SeqState, WriterState};

/// Schema version this build writes and reads (1: the multi-tree layout,
/// upgraded in place on open; 2: the same layout as 3 with sled's
/// compression and raw bodies, upgraded by writing the version).
pub const SCHEMA_VERSION: u32 = 4;
/// Most distinct modes tracked per origin; further modes count as [`OTHER_MODE`].
pub const MAX_MODES_PER_ORIGIN: usize = 64;
/// Bucket for modes beyond [`MAX_MODES_PER_ORIGIN`].
pub const OTHER_MODE: &str = "other";
/// Most records one [`Store::query`] call returns.
pub const MAX_QUERY_LIMIT: usize = 10_000;
/// Most records one [`Store::query`] call examines before it returns a
/// cursor (bounds the work of a filter that matches little).
pub const QUERY_SCAN_BUDGET: usize = 100_000;
/// Most records in one write batch (bounds batch memory).
pub const MAX_BATCH: usize = 4096;

pub(crate) const META_SCHEMA: &str = "schema_version";
pub(crate) const META_OWN_SEQ: &str = "own_seq";
pub(crate) const META_OWN_ORIGIN: &str = "own_origin";
pub(crate) const META_MERGED: &str = "merged_stats";
pub(crate) const META_EPOCH: &str = "epoch";
pub(crate) const META_DICT: &str = "dict";

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

impl StoreConfig {
    /// For one-shot commands (`metamesh import`, `export`): a 32 MiB page
    /// cache. A bulk import streams appends through sled and never reads
    /// them back, so a larger cache only adds resident memory (1M import:
    /// peak RSS 297 MiB at 64 MiB, docs/storage.md).
    pub fn bulk() -> Self {
        StoreConfig {
            cache_capacity_bytes: 32 << 20,
            ..StoreConfig::default()
        }
    }
}

/// sled's zstd level, for stores created before schema 3 (they keep sled's
/// compression; sled's default is 5, 3 writes faster at nearly the same size).
const COMPRESSION_FACTOR: i32 = 3;

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
    /// evidence (the new one as evidence); `existing` is the held one.
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

/// The result of a local append.
// Outcomes are consumed right away; boxing the record would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum AppendOutcome {
    Appended(SignedRecord, PatternBody),
    /// An import key already present (the same pattern was imported before).
    DuplicateImport,
}

/// What readers see, mirrored after each applied batch.
#[derive(Default)]
pub(crate) struct Mem {
    pub origins: HashMap<PeerId, u32>,
    pub ids: Vec<PeerId>,
    pub frontier: HashMap<u32, u64>,
    /// Number of pending slots per origin (skips lookups when 0).
    pub pending: HashMap<u32, u64>,
    pub stats: HashMap<u32, DepthTable>,
    pub merged: DepthTable,
    pub own_seq: u64,
    pub own_origin: Option<PeerId>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let count = match self.mem.read() {
            Ok(m) => m.merged.total(),
            Err(poisoned) => poisoned.into_inner().merged.total(),
        };
        crate::recovery::final_mark(&self.path, count, || self.db.flush());
    }
}

#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub path: PathBuf,
    pub cfg: StoreConfig,
    pub db: sled::Db,
    pub data: sled::Tree,
    pub reputation: sled::Tree,
    pub peers: sled::Tree,
    pub insights: sled::Tree,
    /// Record dictionary (stores created with schema ≥ 3; older ones store
    /// bodies raw and leave compression to sled).
    pub dict: Option<Arc<crate::packing::Dict>>,
    pub mem: RwLock<Mem>,
    /// The write lock, and state only writers use.
    pub writer: Mutex<WriterState>,
    /// Own seqs and import dedup ([`SeqState`]).
    pub seqs: Mutex<SeqState>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.inner.path)
            .finish()
    }
}

pub(crate) fn corrupt(what: impl Into<String>) -> StoreError {
    StoreError::Corrupt(what.into())
}

pub(crate) fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    codec::to_cbor(v)
}

pub(crate) fn decode_table(bytes: &[u8]) -> Result<DepthTable, StoreError> {
    codec::from_cbor(bytes, 64 * 1024).map_err(|e| corrupt(format!("statistics: {e}")))
}

pub(crate) fn decode_modes(bytes: &[u8]) -> Result<BTreeMap<String, DepthStats>, StoreError> {
    codec::from_cbor(bytes, 1024 * 1024).map_err(|e| corrupt(format!("mode statistics: {e}")))
}

pub(crate) fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn is_lock_error(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io) if io.to_string().contains("could not acquire lock"))
}

/// The `use_compression` a sled directory was created with (None: new).
fn persisted_compression(path: &Path) -> Option<bool> {
    // Text lines followed by a binary checksum.
    let conf = std::fs::read(path.join("conf")).ok()?;
    String::from_utf8_lossy(&conf)
        .lines()
        .find_map(|l| l.strip_prefix("use_compression: "))
        .map(|v| v.trim() == "true")
}

/// The record dictionary of a store: the one it holds; for a new store
/// (sled opened without compression, no schema version yet) a fresh one,
/// written before anything else; None for a store created before schema 3.
fn record_dict(
    path: &Path,
    db: &sled::Db,
    data: &sled::Tree,
) -> Result<Option<Arc<crate::packing::Dict>>, StoreError> {
    if let Some(d) = data.get(keys::meta_key(META_DICT))? {
        return Ok(Some(Arc::new(crate::packing::Dict::new(&d))));
    }
    let new = data.get(keys::meta_key(META_SCHEMA))?.is_none();
    let sled_compresses = persisted_compression(path).unwrap_or(true);
    if !new || sled_compresses {
        return Ok(None);
    }
    let bytes = crate::packing::sample_dictionary();
    data.insert(keys::meta_key(META_DICT), bytes.as_slice())?;
    db.flush()?;
    Ok(Some(Arc::new(crate::packing::Dict::new(&bytes))))
}

/// Open the sled database at `path` as it was created (new ones without
/// sled's compression: records are compressed by [`crate::packing`]).
pub(crate) fn open_sled(path: &Path, cfg: &StoreConfig) -> Result<sled::Db, StoreError> {
    std::fs::create_dir_all(path)?;
    let compress = persisted_compression(path).unwrap_or(false);
    let config = sled::Config::new()
        .path(path)
        .cache_capacity(cfg.cache_capacity_bytes)
        .flush_every_ms(cfg.flush_every_ms)
        .use_compression(compress)
        .compression_factor(COMPRESSION_FACTOR);
    // sled 0.34 can panic (rather than err) while replaying a truncated or
    // damaged log; that is bad input, not a bug of ours: say so.
    let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| config.open())).map_err(
        |panic| {
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
        },
    )?;
    opened.map_err(|e| {
        if is_lock_error(&e) {
            StoreError::Locked {
                path: path.to_path_buf(),
            }
        } else {
            StoreError::Sled(e)
        }
    })
}

/// [`open_sled`], waiting up to 30 s for a just-dropped handle of this
/// process to release sled's file lock (its threads do shortly after).
pub(crate) fn open_sled_waiting(path: &Path, cfg: &StoreConfig) -> Result<sled::Db, StoreError> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        match open_sled(path, cfg) {
            Err(StoreError::Locked { .. }) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            r => return r,
        }
    }
}

impl Store {
    /// Open (or create) the store at `path`, upgrading an older schema in
    /// place (with a progress bar on a terminal).
    pub fn open(path: &Path, cfg: &StoreConfig) -> Result<Store, StoreError> {
        std::fs::create_dir_all(path)?;
        crate::recovery::before_open(path)?; // partial snapshots aside (issue 12 #1)
        crate::migrate::finish_interrupted(path)?;
        let mut db = open_sled(path, cfg)?;
        if crate::migrate::is_v1(&db)? {
            crate::migrate::upgrade_v1(db, path, cfg)?;
            db = open_sled_waiting(path, cfg)?;
        }
        let data = db.open_tree("data")?;
        let dict = record_dict(path, &db, &data)?;
        let store = Store {
            inner: Arc::new(Inner {
                path: path.to_path_buf(),
                cfg: cfg.clone(),
                reputation: db.open_tree("reputation")?,
                peers: db.open_tree("peers")?,
                insights: db.open_tree("insights")?,
                dict,
                mem: RwLock::new(Mem::default()),
                writer: Mutex::new(WriterState::default()),
                seqs: Mutex::new(SeqState::default()),
                data,
                db,
            }),
        };
        store.check_schema()?;
        let mem = store.load_mem()?;
        *store.mem_write() = mem;
        crate::recovery::after_open(&store)?; // refuse a truncated log (issue 12 #3)
        Ok(store)
    }

    fn check_schema(&self) -> Result<(), StoreError> {
        match self.data().get(keys::meta_key(META_SCHEMA))? {
            None => {
                self.data().insert(
                    keys::meta_key(META_SCHEMA),
                    &SCHEMA_VERSION.to_be_bytes()[..],
                )?;
                self.flush()?;
            }
            Some(v) => {
                let found = be_u32(&v).ok_or_else(|| corrupt("schema version value"))?;
                if found > SCHEMA_VERSION {
                    return Err(StoreError::NewerSchema {
                        path: self.inner.path.clone(),
                        found,
                        supported: SCHEMA_VERSION,
                    });
                }
                if found < SCHEMA_VERSION {
                    // 2 → 3 changes nothing written: values say whether
                    // their body is compressed; a schema-2 store keeps
                    // sled's compression and raw bodies. 3 → 4 replaces the
                    // per-record time index by chunk entries.
                    crate::migrate_time::upgrade_time_index(self.data())?;
                    self.data().insert(
                        keys::meta_key(META_SCHEMA),
                        &SCHEMA_VERSION.to_be_bytes()[..],
                    )?;
                    self.flush()?;
                }
            }
        }
        Ok(())
    }

    /// Load the in-memory state: origins, frontiers, pending counts,
    /// statistics, own seq. Small (per origin), not per record.
    fn load_mem(&self) -> Result<Mem, StoreError> {
        let t = self.data();
        let mut mem = Mem::default();
        let mut by_id: BTreeMap<u32, PeerId> = BTreeMap::new();
        for kv in t.scan_prefix([keys::ORIGIN_ID]) {
            let (k, v) = kv?;
            let id = be_u32(&k[1..]).ok_or_else(|| corrupt("origin id key"))?;
            let p = PeerId::from_bytes(&v).map_err(|_| corrupt("origin bytes"))?;
            by_id.insert(id, p);
        }
        for (i, (id, p)) in by_id.into_iter().enumerate() {
            if id as usize != i {
                return Err(corrupt("origin ids are not dense"));
            }
            mem.origins.insert(p, id);
            mem.ids.push(p);
        }
        for kv in t.scan_prefix([keys::FRONTIER]) {
            let (k, v) = kv?;
            let id = be_u32(&k[1..]).ok_or_else(|| corrupt("frontier key"))?;
            mem.frontier
                .insert(id, be_u64(&v).ok_or_else(|| corrupt("frontier value"))?);
        }
        for kv in t.scan_prefix([keys::PENDING]) {
            let (k, _) = kv?;
            let (id, _) = keys::parse_slot_key(&k).ok_or_else(|| corrupt("pending key"))?;
            *mem.pending.entry(id).or_insert(0) += 1;
        }
        for kv in t.scan_prefix([keys::STATS]) {
            let (k, v) = kv?;
            let id = be_u32(&k[1..]).ok_or_else(|| corrupt("stats key"))?;
            mem.stats.insert(id, decode_table(&v)?);
        }
        if let Some(v) = t.get(keys::meta_key(META_MERGED))? {
            mem.merged = decode_table(&v)?;
        }
        if let Some(v) = t.get(keys::meta_key(META_OWN_SEQ))? {
            mem.own_seq = be_u64(&v).ok_or_else(|| corrupt("own seq value"))?;
        }
        if let Some(v) = t.get(keys::meta_key(META_OWN_ORIGIN))? {
            mem.own_origin = Some(PeerId::from_bytes(&v).map_err(|_| corrupt("own origin"))?);
        }
        Ok(mem)
    }

    /// The schema version recorded in the store.
    pub fn schema_version(&self) -> Result<u32, StoreError> {
        let v = self
            .data()
            .get(keys::meta_key(META_SCHEMA))?
            .ok_or_else(|| corrupt("no schema version"))?;
        be_u32(&v).ok_or_else(|| corrupt("schema version value"))
    }

    /// Test and tooling hook: record a schema version (to check refusal of newer stores).
    #[doc(hidden)]
    pub fn set_schema_version_for_tests(&self, v: u32) -> Result<(), StoreError> {
        self.data()
            .insert(keys::meta_key(META_SCHEMA), &v.to_be_bytes()[..])?;
        self.flush()
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    pub(crate) fn data(&self) -> &sled::Tree {
        &self.inner.data
    }

    pub(crate) fn dict(&self) -> Option<&crate::packing::Dict> {
        self.inner.dict.as_deref()
    }

    pub(crate) fn dict_arc(&self) -> Option<Arc<crate::packing::Dict>> {
        self.inner.dict.clone()
    }

    pub(crate) fn mem_read(&self) -> RwLockReadGuard<'_, Mem> {
        // A poisoned lock means a panic while mirroring state; the tree is
        // the truth and every value in Mem is whole, so carry on.
        self.inner.mem.read().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn mem_write(&self) -> RwLockWriteGuard<'_, Mem> {
        self.inner.mem.write().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn writer_state(&self) -> MutexGuard<'_, WriterState> {
        self.inner.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn seq_state(&self) -> MutexGuard<'_, SeqState> {
        self.inner.seqs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The durability point: every write made before this returns survives a crash.
    pub fn flush(&self) -> Result<(), StoreError> {
        crate::recovery::flush_with_mark(self, || self.inner.db.flush())
    }

    /// Bytes sled occupies on disk.
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        Ok(self.inner.db.size_on_disk()?)
    }

    /// Flush and close. When this is the last handle, sled is reopened once
    /// and closed again: sled 0.34 writes its snapshot only while opening, so
    /// this moves the replay of the log written since the last snapshot from
    /// the next (cold) open to here — call it at the end of a bulk import and
    /// on clean shutdown. Other live handles: only flushes.
    pub fn close(self) -> Result<(), StoreError> {
        self.flush()?;
        let inner = match Arc::try_unwrap(self.inner) {
            Ok(i) => i,
            Err(_) => return Ok(()),
        };
        let (path, cfg) = (inner.path.clone(), inner.cfg.clone());
        drop(inner);
        // The reopen only replays the log and writes the snapshot: a small
        // cache keeps it from adding to the process's peak memory.
        let replay = StoreConfig {
            cache_capacity_bytes: cfg.cache_capacity_bytes.min(8 << 20),
            ..cfg
        };
        open_sled_waiting(&path, &replay)?.flush()?;
        Ok(())
    }

    pub(crate) fn inner_db(&self) -> &sled::Db {
        &self.inner.db
    }

    // ---- writes ----------------------------------------------------------

    fn one(&self, key: Option<&Keypair>, b: Batch) -> Result<Outcomes, StoreError> {
        self.write_group(key, vec![b])
            .pop()
            .unwrap_or_else(|| Err(corrupt("empty write result")))
    }

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

    /// Store many verified records (one atomic batch per [`MAX_BATCH`]; follow
    /// with one [`Store::flush`], or use the group-commit
    /// [`crate::writer::Writer`]). Outcomes are in input order.
    pub fn insert_batch(
        &self,
        items: &[(SignedRecord, PatternBody)],
    ) -> Result<Vec<InsertOutcome>, StoreError> {
        let mut out = Vec::with_capacity(items.len());
        for chunk in items.chunks(MAX_BATCH) {
            match self.one(None, Batch::Insert(chunk.to_vec()))? {
                Outcomes::Inserted(o) => out.extend(o),
                _ => return Err(corrupt("insert produced other outcomes")),
            }
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

    /// Sign (on all cores) and store many local patterns, one atomic batch
    /// per [`MAX_BATCH`]. A pattern given with an import key is skipped (as
    /// [`AppendOutcome::DuplicateImport`]) when that key is already present,
    /// in the store or earlier in the batch; skipped patterns use no seq.
    /// Seqs come from the current epoch (one is begun, durably, if none is).
    pub fn append_local_batch(
        &self,
        key: &Keypair,
        patterns: Vec<(Pattern, Option<[u8; 32]>)>,
    ) -> Result<Vec<AppendOutcome>, StoreError> {
        let mut out = Vec::with_capacity(patterns.len());
        let mut iter = patterns.into_iter().peekable();
        while iter.peek().is_some() {
            let chunk: Vec<_> = iter.by_ref().take(MAX_BATCH).collect();
            match self.one(Some(key), Batch::Append(chunk))? {
                Outcomes::Appended(o) => out.extend(o),
                _ => return Err(corrupt("append produced other outcomes")),
            }
        }
        Ok(out)
    }

    /// A record that local policy declines still advances the frontier (or
    /// it would be pulled forever); its hash is kept as declined.
    pub fn decline(&self, body: &PatternBody, hash: ContentHash) -> Result<bool, StoreError> {
        let d = Declined {
            origin: body.origin,
            seq: body.seq,
            prev: body.prev(),
            hash,
        };
        match self.one(None, Batch::Decline(vec![d]))? {
            Outcomes::Declined(v) => Ok(v.first().copied().unwrap_or(false)),
            _ => Err(corrupt("decline produced other outcomes")),
        }
    }

    /// [`Store::decline`] for a record whose previous seq is `seq - 1`.
    pub fn mark_declined(
        &self,
        origin: PeerId,
        seq: u64,
        hash: ContentHash,
    ) -> Result<(), StoreError> {
        if seq == 0 {
            return Err(StoreError::Mismatch("seq must be at least 1"));
        }
        let d = Declined {
            origin,
            seq,
            prev: seq - 1,
            hash,
        };
        self.one(None, Batch::Decline(vec![d])).map(|_| ())
    }

    // ---- node key-value helpers --------------------------------------------

    pub(crate) fn kv(&self) -> (&sled::Tree, &sled::Tree, &sled::Tree) {
        (
            &self.inner.reputation,
            &self.inner.peers,
            &self.inner.insights,
        )
    }

    pub(crate) fn id_key_of(&self, prefix: u8, origin: &PeerId) -> Option<[u8; 5]> {
        self.mem_read()
            .origins
            .get(origin)
            .map(|id| id_key(prefix, *id))
    }
}
