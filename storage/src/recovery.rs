//! Crash recovery around sled's open, and the checks that keep a damaged
//! store from starting silently (issue 12, defects 1 and 3).
//!
//! ## Partial snapshots (defect 1)
//! sled 0.34.7 writes a snapshot to `snap.<lsn>.generating`, fsyncs it and
//! renames it to `snap.<lsn>`. Its reader lists every file starting with
//! `snap.` and takes the last one in sort order — which is the
//! `.generating` file when a `kill -9` landed before the rename. That file
//! is partial, its checksum fails, and every later open answers "Read
//! corrupted data at file offset None". The snapshot is only an index over
//! the log, so the store is whole without it: [`before_open`] moves every
//! `snap.*.generating` file to `recovered/<time>/` inside the store (sled
//! ignores sub-directories; nothing is deleted), logs a warning, and sled
//! then starts from the last complete snapshot and replays the log. It does
//! so only while it holds sled's own lock on `db`, so it never touches the
//! snapshot a running process is writing.
//!
//! ## Durable mark (defect 3)
//! A truncated `store/db` makes sled recover a shorter log and start with
//! fewer patterns, without an error. The store therefore keeps a mark in
//! the side file `durable.mark` beside sled's files: the pattern count read
//! *before* a [`Store::flush`] started, written (atomically, by rename)
//! after the flush returned, so the mark never exceeds what is durable.
//! Patterns are never deleted, so the count only grows; at open,
//! [`after_open`] refuses a store holding fewer patterns than its mark,
//! with an error naming `db` and the figures. [`accept_loss`] is the
//! explicit way on: it moves the mark aside (to `recovered/`), after which
//! the store opens with what it holds.
//!
//! ## Write failures (defect 3)
//! After an I/O error (a full disk) sled keeps returning that error for
//! every later operation of the same instance: the store must be reopened.
//! [`failure_kind`] tells the caller which case it is in.
//!
//! What open did is in [`Store::recovery_report`] (and in the warning logs).

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::store::{Store, StoreError};

/// Folder inside the store where recovery moves files it set aside.
pub const RECOVERED_DIR: &str = "recovered";
/// Side file holding the durable pattern count.
pub const MARK_FILE: &str = "durable.mark";
/// sled's data file (the log), named in errors.
pub const DB_FILE: &str = "db";
const MARK_MAGIC: &str = "metamesh-durable-mark v1";

/// One file recovery moved aside.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MovedFile {
    pub from: PathBuf,
    pub to: PathBuf,
    pub bytes: u64,
}

/// What [`Store::open`] found and did before and after sled opened.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RecoveryReport {
    /// Partial snapshot files moved to `recovered/`.
    pub moved_snapshots: Vec<MovedFile>,
    /// The durable mark read at open (None: no mark yet, or unreadable).
    pub durable_mark: Option<u64>,
    /// Patterns the store held when it opened.
    pub patterns_at_open: u64,
    /// Warnings about the mark itself (unreadable, moved aside).
    pub notes: Vec<String>,
}

impl RecoveryReport {
    /// Whether open had to repair anything.
    pub fn recovered(&self) -> bool {
        !self.moved_snapshots.is_empty()
    }
}

/// What a failed store operation means for the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The disk (or quota) is full: nothing was stored; the sled instance is
    /// poisoned and must be reopened once space returns (HTTP 507).
    DiskFull,
    /// Another I/O failure or corruption: the sled instance is poisoned and
    /// must be reopened (HTTP 503).
    NeedsReopen,
    /// A refusal of this one request (bad input, mismatch): the store is fine.
    Request,
}

/// Classify a store error (see the module docs).
pub fn failure_kind(e: &StoreError) -> FailureKind {
    match e {
        StoreError::Io(io) if is_disk_full(io) => FailureKind::DiskFull,
        StoreError::Sled(sled::Error::Io(io)) if is_disk_full(io) => FailureKind::DiskFull,
        StoreError::Io(_)
        | StoreError::Sled(sled::Error::Io(_))
        | StoreError::Sled(sled::Error::Corruption { .. })
        | StoreError::Sled(sled::Error::ReportableBug(_)) => FailureKind::NeedsReopen,
        _ => FailureKind::Request,
    }
}

fn is_disk_full(e: &std::io::Error) -> bool {
    // ENOSPC (28) and EDQUOT (122) on Linux; StorageFull where std maps it.
    e.kind() == std::io::ErrorKind::StorageFull || matches!(e.raw_os_error(), Some(28 | 122))
}

// ---- the per-path registry --------------------------------------------------

/// Per store path: the last open's report and the highest mark written.
/// A registry (not a field of `Store`) keeps the hooks in `store.rs` to
/// single lines; entries are tiny and one per store path.
#[derive(Default)]
struct Entry {
    report: RecoveryReport,
    mark: u64,
    /// When the mark file was last written (it is rewritten at most every
    /// [`MARK_EVERY`], and once more when the store closes).
    written: Option<std::time::Instant>,
}

/// How often a flush may rewrite the mark file. Each rewrite (create,
/// write, rename) cost ~0.6 ms, more than the flush itself, in the
/// 16-writer group commit benchmark. A mark older than the log is safe (it
/// only checks less); the last handle's drop writes the final one.
const MARK_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

fn registry() -> &'static Mutex<HashMap<PathBuf, Entry>> {
    static R: OnceLock<Mutex<HashMap<PathBuf, Entry>>> = OnceLock::new();
    R.get_or_init(Default::default)
}

fn with_entry<T>(path: &Path, f: impl FnOnce(&mut Entry) -> T) -> T {
    let mut map = match registry().lock() {
        Ok(m) => m,
        Err(poisoned) => poisoned.into_inner(),
    };
    f(map.entry(path.to_path_buf()).or_default())
}

impl Store {
    /// What the last [`Store::open`] of this path repaired or found.
    pub fn recovery_report(&self) -> RecoveryReport {
        with_entry(self.path(), |e| e.report.clone())
    }
}

// ---- before sled opens ------------------------------------------------------

/// Move partial snapshot files aside. Called by [`Store::open`] before sled
/// opens `path`. Does nothing when another process holds the store (sled
/// then reports it as locked).
pub fn before_open(path: &Path) -> Result<(), StoreError> {
    let report = RecoveryReport {
        moved_snapshots: set_aside_partial_snapshots(path)?,
        ..Default::default()
    };
    with_entry(path, |e| e.report = report);
    Ok(())
}

fn set_aside_partial_snapshots(path: &Path) -> Result<Vec<MovedFile>, StoreError> {
    let partial: Vec<PathBuf> = match fs::read_dir(path) {
        Ok(rd) => rd
            .filter_map(Result::ok)
            .map(|de| de.path())
            .filter(|p| is_partial_snapshot(p))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    if partial.is_empty() {
        return Ok(Vec::new());
    }
    // Hold sled's lock while moving: a running process may be writing
    // exactly this file.
    let _lock = match lock_db(path)? {
        DbLock::Busy => return Ok(Vec::new()),
        lock => lock, // released when dropped (the file closes)
    };
    let dest = recovered_dir(path)?;
    let mut moved = Vec::with_capacity(partial.len());
    for from in partial {
        let Some(name) = from.file_name() else {
            continue;
        };
        let to = dest.join(name);
        let bytes = fs::metadata(&from).map(|m| m.len()).unwrap_or(0);
        fs::rename(&from, &to)?;
        tracing::warn!(
            from = %from.display(),
            to = %to.display(),
            bytes,
            "store recovery: moved a partial sled snapshot aside (left by a crash while \
             it was written); sled rebuilds its index from the log"
        );
        moved.push(MovedFile { from, to, bytes });
    }
    sync_dir(path);
    Ok(moved)
}

fn is_partial_snapshot(p: &Path) -> bool {
    p.is_file()
        && p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("snap.") && n.ends_with(".generating"))
}

enum DbLock {
    /// We hold sled's exclusive lock on `db` (the same flock sled takes).
    Held(#[allow(dead_code)] File),
    /// No `db` yet: no process can be using the store.
    NoDb,
    /// Another process holds the store.
    Busy,
}

fn lock_db(path: &Path) -> Result<DbLock, StoreError> {
    use fs2::FileExt;
    let f = match File::open(path.join(DB_FILE)) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(DbLock::NoDb),
        Err(e) => return Err(e.into()),
    };
    match f.try_lock_exclusive() {
        Ok(()) => Ok(DbLock::Held(f)),
        Err(_) => Ok(DbLock::Busy),
    }
}

/// A fresh `recovered/<unix seconds>.<nanos>/` folder inside the store.
fn recovered_dir(path: &Path) -> Result<PathBuf, StoreError> {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let dir = path
        .join(RECOVERED_DIR)
        .join(format!("{}.{:09}", t.as_secs(), t.subsec_nanos()));
    fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn sync_dir(path: &Path) {
    if let Ok(d) = File::open(path) {
        let _ = d.sync_all();
    }
}

// ---- after sled opened ------------------------------------------------------

/// Compare the store with its durable mark; refuse a store that lost
/// patterns. Called by [`Store::open`] once sled is open.
pub fn after_open(store: &Store) -> Result<(), StoreError> {
    let path = store.path();
    let held = store.pattern_count();
    let (mark, note) = match read_mark(path) {
        Ok(m) => (m, None),
        Err(why) => {
            let note = format!(
                "durable mark {} unreadable ({why}); truncation is not checked until the next flush",
                path.join(MARK_FILE).display()
            );
            tracing::warn!("store recovery: {note}");
            (None, Some(note))
        }
    };
    with_entry(path, |e| {
        e.report.durable_mark = mark;
        e.report.patterns_at_open = held;
        e.report.notes.extend(note);
        e.mark = mark.unwrap_or(0).min(held);
    });
    if let Some(mark) = mark {
        if held < mark {
            return Err(StoreError::Corrupt(format!(
                "{} holds {held} patterns but {mark} were durable (mark in {}): the file was \
                 truncated or replaced. Restore the store from a backup; or, to go on with the \
                 {held} patterns it holds, call `metamesh_storage::recovery::accept_loss` \
                 (moves the mark aside)",
                path.join(DB_FILE).display(),
                path.join(MARK_FILE).display(),
            )));
        }
    }
    Ok(())
}

fn read_mark(path: &Path) -> Result<Option<u64>, String> {
    let text = match fs::read_to_string(path.join(MARK_FILE)) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let mut lines = text.lines();
    if lines.next() != Some(MARK_MAGIC) {
        return Err("unknown format".into());
    }
    lines
        .next()
        .and_then(|l| l.strip_prefix("patterns "))
        .and_then(|n| n.trim().parse().ok())
        .map(Some)
        .ok_or_else(|| "no pattern count".into())
}

/// The explicit way on after a refused open: move the durable mark of the
/// store at `path` aside (to `recovered/`), so the next open accepts the
/// patterns the store holds. Returns where the mark went (None: no mark).
pub fn accept_loss(path: &Path) -> Result<Option<PathBuf>, StoreError> {
    let from = path.join(MARK_FILE);
    if !from.exists() {
        return Ok(None);
    }
    let to = recovered_dir(path)?.join(MARK_FILE);
    fs::rename(&from, &to)?;
    tracing::warn!(
        mark = %to.display(),
        "store recovery: durable mark moved aside; the store will open with the patterns it holds"
    );
    Ok(Some(to))
}

// ---- flush ------------------------------------------------------------------

/// Run sled's flush `f` and then raise the durable mark to the pattern count
/// read before it started (so the mark never exceeds what is durable), at
/// most every [`MARK_EVERY`]. A failure to write the mark only weakens the
/// truncation check: it is logged, not returned.
pub fn flush_with_mark(
    store: &Store,
    f: impl FnOnce() -> sled::Result<usize>,
) -> Result<(), StoreError> {
    let count = store.pattern_count();
    f()?;
    raise_mark(store.path(), count, false);
    Ok(())
}

/// The last handle of the store at `path` goes: flush, then let the mark
/// catch up with `count` (what the store holds).
pub(crate) fn final_mark(path: &Path, count: u64, flush: impl FnOnce() -> sled::Result<usize>) {
    match flush() {
        Ok(_) => raise_mark(path, count, true),
        Err(e) => tracing::warn!(store = %path.display(), error = %e, "store: final flush failed"),
    }
}

fn raise_mark(path: &Path, count: u64, now: bool) {
    with_entry(path, |e| {
        let due = now || e.written.is_none_or(|t| t.elapsed() >= MARK_EVERY);
        if count <= e.mark || !due {
            return;
        }
        match write_mark(path, count) {
            Ok(()) => {
                e.mark = count;
                e.written = Some(std::time::Instant::now());
            }
            Err(err) => tracing::warn!(
                file = %path.join(MARK_FILE).display(),
                error = %err,
                "store: could not update the durable mark"
            ),
        }
    });
}

fn write_mark(path: &Path, count: u64) -> std::io::Result<()> {
    let tmp = path.join(format!("{MARK_FILE}.tmp"));
    {
        let mut f = File::create(&tmp)?;
        writeln!(f, "{MARK_MAGIC}\npatterns {count}")?;
    }
    // No fsync: the mark guards against lost log data, so a mark older than
    // the log after a power cut is safe; rename keeps it whole.
    fs::rename(&tmp, path.join(MARK_FILE))
}
