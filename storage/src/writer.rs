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
//! Two lanes ([`Urgency`]): each stage takes every waiting urgent job before
//! any bulk one, and a group is filled with urgent work first, so a write
//! someone is waiting on (a local POST, a record of an established origin)
//! is never queued behind a flood of bulk writes — it waits for at most the
//! group being flushed (issue 12's flood test). Within a lane, order is kept
//! (own appends are signed and stored in submission order).
//!
//! Every queue is bounded ([`WriterConfig::queue`] jobs per lane and stage):
//! a full queue blocks submitters (backpressure), it never grows without bound.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{self as channel, Receiver as LaneRx, Sender as LaneTx};
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
    /// Of those, bulk records at most: an urgent job that arrives while a
    /// group is written waits for no more than this much bulk work.
    pub max_bulk_group_records: usize,
    /// A group of bulk work only waits this long for an urgent job (which
    /// then joins it) before it is written: the writer is then idle, not
    /// mid-flush, for most of the time a bulk backlog lasts, so an urgent
    /// job rarely waits for a bulk flush (issue 12's flood).
    pub bulk_linger: Duration,
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig {
            queue: 1024,
            max_group_records: crate::store::MAX_BATCH,
            max_bulk_group_records: 64,
            bulk_linger: Duration::from_millis(5),
        }
    }
}

/// Which lane a submission takes: urgent jobs are signed, grouped and
/// flushed before any bulk job that is still waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Urgency {
    /// Someone waits on it (our own records, established peers' records).
    Urgent,
    /// Everything else (newcomers' records, a flood).
    Bulk,
}

/// The result of one submission, delivered after its group's flush.
pub type Reply = Box<dyn FnOnce(Result<Outcomes, StoreError>) + Send>;

struct Job {
    batch: Batch,
    reply: Reply,
    lane: Urgency,
}

/// A job the signer has prepared, on its way to the writer thread.
struct Staged {
    work: Work,
    records: usize,
    reply: Reply,
    lane: Urgency,
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
    /// Time the writer thread spent planning and applying groups, µs.
    pub apply_us: AtomicU64,
    /// Time it spent in flushes, µs (the durable part of a group).
    pub flush_us: AtomicU64,
}

/// A cloneable handle to the store's writer thread.
#[derive(Clone)]
pub struct Writer {
    tx: Lanes<LaneTx<Job>>,
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

/// One value per lane.
#[derive(Clone)]
struct Lanes<T> {
    urgent: T,
    bulk: T,
}

impl<T> Lanes<T> {
    fn get(&self, u: Urgency) -> &T {
        match u {
            Urgency::Urgent => &self.urgent,
            Urgency::Bulk => &self.bulk,
        }
    }
}

/// Two bounded lanes.
fn lanes<T>(cap: usize) -> (Lanes<LaneTx<T>>, Lanes<LaneRx<T>>) {
    let (ut, ur) = channel::bounded(cap);
    let (bt, br) = channel::bounded(cap);
    (
        Lanes {
            urgent: ut,
            bulk: bt,
        },
        Lanes {
            urgent: ur,
            bulk: br,
        },
    )
}

impl<T> Lanes<LaneRx<T>> {
    /// A waiting urgent job, else a waiting bulk one, without blocking.
    fn try_next(&self) -> Option<T> {
        self.urgent
            .try_recv()
            .ok()
            .or_else(|| self.bulk.try_recv().ok())
    }

    /// The next job, urgent first; `None` once both lanes are closed and empty.
    fn next(&self) -> Option<T> {
        loop {
            if let Some(j) = self.try_next() {
                return Some(j);
            }
            // Wake on either lane, then take by priority above. A closed
            // lane wakes at once: both close together (one `Writer` holds
            // both senders), so that means stop — after draining the other.
            let mut sel = channel::Select::new();
            sel.recv(&self.urgent);
            sel.recv(&self.bulk);
            let ready = sel.ready();
            if let Some(j) = self.try_next() {
                return Some(j);
            }
            // Ready with nothing to take (one consumer): the lane is closed.
            let lane = if ready == 0 { &self.urgent } else { &self.bulk };
            if let Err(channel::TryRecvError::Disconnected) = lane.try_recv() {
                return self.try_next();
            }
        }
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
        let (tx, rx) = lanes(cfg.queue.max(1));
        let (stx, srx) = lanes(cfg.queue.max(1));
        let stats = Arc::new(WriterStats::default());
        let st = stats.clone();
        let limits = Limits {
            max: cfg.max_group_records.max(1),
            max_bulk: cfg.max_bulk_group_records.max(1),
            linger: cfg.bulk_linger,
        };
        let signer_store = store.clone();
        let signer = std::thread::Builder::new()
            .name("metamesh-signer".into())
            .spawn(move || prepare(&signer_store, key.as_ref(), rx, stx))?;
        let writer = std::thread::Builder::new()
            .name("metamesh-writer".into())
            .spawn(move || run(store, srx, limits, &st))?;
        Ok(Writer {
            tx,
            stats,
            threads: Arc::new(Mutex::new(vec![signer, writer])),
        })
    }

    /// Submit (urgent) and wait: returns after the flush that made `batch` durable.
    pub fn submit(&self, batch: Batch) -> Result<Outcomes, StoreError> {
        self.submit_in(Urgency::Urgent, batch)
    }

    /// Submit in `lane` and wait for the flush that made `batch` durable.
    pub fn submit_in(&self, lane: Urgency, batch: Batch) -> Result<Outcomes, StoreError> {
        let (rtx, rrx) = mpsc::channel();
        self.submit_with_in(
            lane,
            batch,
            Box::new(move |r| {
                let _ = rtx.send(r);
            }),
        )?;
        rrx.recv().map_err(|_| closed())?
    }

    /// Submit (urgent) without waiting: `reply` runs on the writer thread
    /// after the flush that covers `batch` (send it into a oneshot channel
    /// from async code). Blocks only while the queue is full.
    pub fn submit_with(&self, batch: Batch, reply: Reply) -> Result<(), StoreError> {
        self.submit_with_in(Urgency::Urgent, batch, reply)
    }

    /// [`Writer::submit_with`] in `lane`.
    pub fn submit_with_in(
        &self,
        lane: Urgency,
        batch: Batch,
        reply: Reply,
    ) -> Result<(), StoreError> {
        self.tx
            .get(lane)
            .send(Job { batch, reply, lane })
            .map_err(|_| closed())
    }

    /// [`Writer::submit_with_in`] that never blocks: a full queue (or a
    /// stopped writer) hands the job back untouched, for async callers
    /// that must not wait on the writer (the node's actor).
    pub fn try_submit_with_in(
        &self,
        lane: Urgency,
        batch: Batch,
        reply: Reply,
    ) -> Result<(), NotTaken> {
        self.tx
            .get(lane)
            .try_send(Job { batch, reply, lane })
            .map_err(|e| {
                let closed = matches!(e, channel::TrySendError::Disconnected(_));
                let Job { batch, reply, .. } = e.into_inner();
                NotTaken {
                    batch,
                    reply,
                    closed,
                }
            })
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

/// A job [`Writer::try_submit_with_in`] did not take, handed back.
pub struct NotTaken {
    pub batch: Batch,
    pub reply: Reply,
    /// The writer has stopped (else: its queue was full).
    pub closed: bool,
}

impl std::fmt::Debug for NotTaken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotTaken")
            .field("records", &self.batch.len())
            .field("closed", &self.closed)
            .finish()
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

/// The signer thread: prepare each submission (urgent ones first, each
/// lane in order), pass it on in its lane.
fn prepare(
    store: &Store,
    key: Option<&Keypair>,
    rx: Lanes<LaneRx<Job>>,
    tx: Lanes<LaneTx<Staged>>,
) {
    while let Some(Job { batch, reply, lane }) = rx.next() {
        let staged = Staged {
            records: batch.len(),
            work: store.to_work(key, batch),
            reply,
            lane,
        };
        if tx.get(lane).send(staged).is_err() {
            break;
        }
    }
}

/// How the writer thread forms groups (from [`WriterConfig`]).
#[derive(Clone, Copy)]
struct Limits {
    max: usize,
    max_bulk: usize,
    linger: Duration,
}

/// The writer thread: take what is prepared (urgent first, up to `max`
/// records of which `max_bulk` bulk; a bulk-only group lingers for an
/// urgent job) as one group, store it as one atomic batch, flush, then
/// acknowledge.
fn run(store: Store, rx: Lanes<LaneRx<Staged>>, limits: Limits, stats: &WriterStats) {
    let Limits {
        max,
        max_bulk,
        linger,
    } = limits;
    while let Some(first) = rx.next() {
        let mut n = first.records;
        let mut bulk = if first.lane == Urgency::Bulk { n } else { 0 };
        let mut jobs = vec![first];
        if bulk > 0 && !linger.is_zero() {
            // (a closed lane returns at once: the group is written as is)
            if let Ok(j) = rx.urgent.recv_timeout(linger) {
                n += j.records;
                jobs.push(j);
            }
        }
        while n < max {
            let j = match rx.urgent.try_recv() {
                Ok(j) => j,
                Err(_) if bulk < max_bulk => match rx.bulk.try_recv() {
                    Ok(j) => {
                        bulk += j.records;
                        j
                    }
                    Err(_) => break,
                },
                Err(_) => break,
            };
            n += j.records;
            jobs.push(j);
        }
        let (work, replies): (Vec<Work>, Vec<Reply>) =
            jobs.into_iter().map(|j| (j.work, j.reply)).unzip();
        let started = std::time::Instant::now();
        let results = store.write_work(work);
        let applied = std::time::Instant::now();
        // Keep the failure's kind (a full disk must stay a full disk for
        // the node's health check), not only its text.
        let flushed = store.flush().map_err(|e| (io_kind(&e), e.to_string()));
        stats
            .apply_us
            .fetch_add(micros(applied - started), Ordering::Relaxed);
        stats
            .flush_us
            .fetch_add(micros(applied.elapsed()), Ordering::Relaxed);
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

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// The I/O error kind behind a store error (`Other` when there is none).
fn io_kind(e: &StoreError) -> std::io::ErrorKind {
    match e {
        StoreError::Io(io) | StoreError::Sled(sled::Error::Io(io)) => io.kind(),
        _ => std::io::ErrorKind::Other,
    }
}
