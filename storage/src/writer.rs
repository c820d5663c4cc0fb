//! Group commit: one writer thread that many callers share.
//!
//! Each [`Writer::submit`] hands a [`Batch`] to the writer thread and returns
//! only after the flush (fsync) that covers it — so an acknowledgement still
//! means durable. While one group is being written and flushed, new
//! submissions queue; the thread then takes everything queued (up to
//! [`WriterConfig::max_group_records`]) as the next group: one atomic sled
//! batch and one flush for all of them. Sixteen clients each posting one
//! pattern therefore cost about one flush per round, not sixteen.
//!
//! Two threads: a *signer* takes submissions in order and prepares appends
//! (import dedup, seq assignment, signing and value encoding on every core,
//! [`Store::prepare_append`]); the *writer* groups what the signer passed on
//! and stores and flushes it. So group k+1 is signed while group k is
//! written and flushed.
//!
//! Both queues are bounded ([`WriterConfig::queue`] jobs each): a full queue
//! blocks submitters (backpressure), it never grows without bound.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use libp2p_identity::Keypair;

use crate::append::Work;
use crate::store::{Store, StoreError};
use crate::write::{Batch, Outcomes};

/// Writer settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterConfig {
    /// Most submissions waiting in the queue.
    pub queue: usize,
    /// A group closes once it holds this many records (more queued wait for the next).
    pub max_group_records: usize,
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig {
            queue: 1024,
            max_group_records: crate::store::MAX_BATCH,
        }
    }
}

/// The result of one submission, delivered after its group's flush.
pub type Reply = Box<dyn FnOnce(Result<Outcomes, StoreError>) + Send>;

struct Job {
    batch: Batch,
    reply: Reply,
}

/// A job the signer has prepared, on its way to the writer thread.
struct Staged {
    work: Work,
    records: usize,
    reply: Reply,
}

/// Counters of the writer thread.
#[derive(Debug, Default)]
pub struct WriterStats {
    /// Groups written (= flushes).
    pub groups: AtomicU64,
    /// Submissions acknowledged.
    pub jobs: AtomicU64,
    /// Records (or patterns) in them.
    pub records: AtomicU64,
}

/// A cloneable handle to the store's writer thread.
#[derive(Clone)]
pub struct Writer {
    tx: SyncSender<Job>,
    stats: Arc<WriterStats>,
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("stats", &self.stats)
            .finish()
    }
}

fn closed() -> StoreError {
    StoreError::Io(std::io::Error::other("the store writer has stopped"))
}

impl Writer {
    /// Start the writer thread for `store`. `key` signs `Batch::Append`
    /// jobs (None: appends are refused).
    pub fn start(
        store: Store,
        key: Option<Keypair>,
        cfg: WriterConfig,
    ) -> Result<Writer, StoreError> {
        let (tx, rx) = mpsc::sync_channel(cfg.queue.max(1));
        let (stx, srx) = mpsc::sync_channel(cfg.queue.max(1));
        let stats = Arc::new(WriterStats::default());
        let st = stats.clone();
        let max = cfg.max_group_records.max(1);
        let signer_store = store.clone();
        let signer = std::thread::Builder::new()
            .name("metamesh-signer".into())
            .spawn(move || prepare(&signer_store, key.as_ref(), rx, stx))?;
        let writer = std::thread::Builder::new()
            .name("metamesh-writer".into())
            .spawn(move || run(store, srx, max, &st))?;
        Ok(Writer {
            tx,
            stats,
            threads: Arc::new(Mutex::new(vec![signer, writer])),
        })
    }

    /// Submit and wait: returns after the flush that made `batch` durable.
    pub fn submit(&self, batch: Batch) -> Result<Outcomes, StoreError> {
        let (rtx, rrx) = mpsc::channel();
        self.submit_with(
            batch,
            Box::new(move |r| {
                let _ = rtx.send(r);
            }),
        )?;
        rrx.recv().map_err(|_| closed())?
    }

    /// Submit without waiting: `reply` runs on the writer thread after the
    /// flush that covers `batch` (send it into a oneshot channel from async
    /// code). Blocks only while the queue is full.
    pub fn submit_with(&self, batch: Batch, reply: Reply) -> Result<(), StoreError> {
        self.tx.send(Job { batch, reply }).map_err(|_| closed())
    }

    /// Submit without waiting; [`Ticket::wait`] for the result.
    pub fn submit_nowait(&self, batch: Batch) -> Result<Ticket, StoreError> {
        let (rtx, rrx) = mpsc::channel();
        self.submit_with(
            batch,
            Box::new(move |r| {
                let _ = rtx.send(r);
            }),
        )?;
        Ok(Ticket(rrx))
    }

    pub fn stats(&self) -> &WriterStats {
        &self.stats
    }

    /// Stop accepting work from this handle; when it is the last one, wait
    /// until both threads have written everything queued and exited (they
    /// then hold no store handle, so [`Store::close`] can snapshot).
    pub fn shutdown(self) {
        let Writer { tx, threads, .. } = self;
        drop(tx);
        if let Ok(t) = Arc::try_unwrap(threads) {
            for h in t.into_inner().unwrap_or_else(|p| p.into_inner()) {
                let _ = h.join();
            }
        }
    }
}

/// A pending submission's result.
pub struct Ticket(Receiver<Result<Outcomes, StoreError>>);

impl Ticket {
    /// Wait for the flush that covers the submission.
    pub fn wait(self) -> Result<Outcomes, StoreError> {
        self.0.recv().map_err(|_| closed())?
    }
}

/// The signer thread: prepare each submission in order, pass it on.
fn prepare(store: &Store, key: Option<&Keypair>, rx: Receiver<Job>, tx: SyncSender<Staged>) {
    while let Ok(Job { batch, reply }) = rx.recv() {
        let staged = Staged {
            records: batch.len(),
            work: store.to_work(key, batch),
            reply,
        };
        if tx.send(staged).is_err() {
            break;
        }
    }
}

/// The writer thread: take everything prepared (up to `max` records) as one
/// group, store it as one atomic batch, flush, then acknowledge.
fn run(store: Store, rx: Receiver<Staged>, max: usize, stats: &WriterStats) {
    while let Ok(first) = rx.recv() {
        let mut n = first.records;
        let mut jobs = vec![first];
        while n < max {
            match rx.try_recv() {
                Ok(j) => {
                    n += j.records;
                    jobs.push(j);
                }
                Err(_) => break,
            }
        }
        let (work, replies): (Vec<Work>, Vec<Reply>) =
            jobs.into_iter().map(|j| (j.work, j.reply)).unzip();
        let results = store.write_work(work);
        // Keep the failure's kind (a full disk must stay a full disk for
        // the node's health check), not only its text.
        let flushed = store.flush().map_err(|e| (io_kind(&e), e.to_string()));
        stats.groups.fetch_add(1, Ordering::Relaxed);
        stats
            .jobs
            .fetch_add(replies.len() as u64, Ordering::Relaxed);
        stats.records.fetch_add(n as u64, Ordering::Relaxed);
        for (r, reply) in results.into_iter().zip(replies) {
            let r = match (&flushed, r) {
                (Err((kind, e)), Ok(_)) => Err(StoreError::Io(std::io::Error::new(
                    *kind,
                    format!("flush failed: {e}"),
                ))),
                (_, r) => r,
            };
            reply(r);
        }
    }
}

/// The I/O error kind behind a store error (`Other` when there is none).
fn io_kind(e: &StoreError) -> std::io::ErrorKind {
    match e {
        StoreError::Io(io) | StoreError::Sled(sled::Error::Io(io)) => io.kind(),
        _ => std::io::ErrorKind::Other,
    }
}
