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
//! The queue is bounded ([`WriterConfig::queue`] jobs): a full queue blocks
//! submitters (backpressure), it never grows without bound.
//!
//! *Relaxed* submissions ([`Writer::submit_relaxed`]) are for data the node
//! can get again — records received from peers. A group of only relaxed jobs
//! is applied (one atomic sled batch: records and their frontiers together)
//! and answered without waiting for a flush; the thread flushes them when a
//! durable job comes, or once nothing new arrived for
//! [`WriterConfig::relaxed_flush`]. A crash loses at most that window of
//! peers' records — and their frontier entries with them, so the node pulls
//! them again. Gossip bursts then cost one flush per burst, not one per
//! record.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use libp2p_identity::Keypair;

use crate::store::{Store, StoreError};
use crate::write::{Batch, Outcomes};

/// Writer settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterConfig {
    /// Most submissions waiting in the queue.
    pub queue: usize,
    /// A group closes once it holds this many records (more queued wait for the next).
    pub max_group_records: usize,
    /// Longest a relaxed write waits for its flush when the writer is idle.
    pub relaxed_flush: std::time::Duration,
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig {
            queue: 1024,
            max_group_records: crate::store::MAX_BATCH,
            relaxed_flush: std::time::Duration::from_millis(200),
        }
    }
}

/// The result of one submission, delivered after its group's flush.
pub type Reply = Box<dyn FnOnce(Result<Outcomes, StoreError>) + Send>;

struct Job {
    batch: Batch,
    reply: Reply,
    /// Answer after apply; the flush may come later (see the module docs).
    relaxed: bool,
}

/// Counters of the writer thread.
#[derive(Debug, Default)]
pub struct WriterStats {
    /// Groups written.
    pub groups: AtomicU64,
    /// Flushes (fsyncs); below `groups` when relaxed groups shared one.
    pub flushes: AtomicU64,
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
    thread: Arc<Mutex<Option<JoinHandle<()>>>>,
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
        let stats = Arc::new(WriterStats::default());
        let st = stats.clone();
        let max = cfg.max_group_records.max(1);
        let linger = cfg.relaxed_flush;
        let thread = std::thread::Builder::new()
            .name("metamesh-writer".into())
            .spawn(move || run(store, key, rx, max, linger, &st))?;
        Ok(Writer {
            tx,
            stats,
            thread: Arc::new(Mutex::new(Some(thread))),
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
        self.tx
            .send(Job {
                batch,
                reply,
                relaxed: false,
            })
            .map_err(|_| closed())
    }

    /// Submit data the node can fetch again (peers' records) and wait until
    /// it is applied and readable; it is flushed within
    /// [`WriterConfig::relaxed_flush`] or with the next durable job.
    pub fn submit_relaxed(&self, batch: Batch) -> Result<Outcomes, StoreError> {
        let (rtx, rrx) = mpsc::channel();
        self.tx
            .send(Job {
                batch,
                reply: Box::new(move |r| {
                    let _ = rtx.send(r);
                }),
                relaxed: true,
            })
            .map_err(|_| closed())?;
        rrx.recv().map_err(|_| closed())?
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
    /// until the thread has written everything queued and exited (it then
    /// holds no store handle, so [`Store::close`] can snapshot).
    pub fn shutdown(self) {
        let Writer { tx, thread, .. } = self;
        drop(tx);
        if let Ok(t) = Arc::try_unwrap(thread) {
            if let Some(h) = t.into_inner().unwrap_or_else(|p| p.into_inner()) {
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

fn run(
    store: Store,
    key: Option<Keypair>,
    rx: Receiver<Job>,
    max: usize,
    linger: std::time::Duration,
    stats: &WriterStats,
) {
    // Relaxed writes applied but not yet flushed.
    let mut unflushed = false;
    loop {
        let first = if unflushed {
            match rx.recv_timeout(linger) {
                Ok(j) => j,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    // Idle: make the relaxed writes durable. A failure here
                    // surfaces again at the next durable job's flush.
                    if let Err(e) = store.flush() {
                        tracing::warn!(error = %e, "flushing relaxed writes failed");
                    }
                    stats.flushes.fetch_add(1, Ordering::Relaxed);
                    unflushed = false;
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        } else {
            match rx.recv() {
                Ok(j) => j,
                Err(_) => break,
            }
        };
        let mut n = first.batch.len();
        let mut jobs = vec![first];
        while n < max {
            match rx.try_recv() {
                Ok(j) => {
                    n += j.batch.len();
                    jobs.push(j);
                }
                Err(_) => break,
            }
        }
        let durable = jobs.iter().any(|j| !j.relaxed);
        let (batches, replies): (Vec<Batch>, Vec<Reply>) =
            jobs.into_iter().map(|j| (j.batch, j.reply)).unzip();
        let results = store.write_group(key.as_ref(), batches);
        let flushed = if durable {
            stats.flushes.fetch_add(1, Ordering::Relaxed);
            unflushed = false;
            store.flush().map(|_| ()).map_err(|e| e.to_string())
        } else {
            unflushed = true;
            Ok(())
        };
        stats.groups.fetch_add(1, Ordering::Relaxed);
        stats
            .jobs
            .fetch_add(replies.len() as u64, Ordering::Relaxed);
        stats.records.fetch_add(n as u64, Ordering::Relaxed);
        for (r, reply) in results.into_iter().zip(replies) {
            let r = match (&flushed, r) {
                (Err(e), Ok(_)) => Err(StoreError::Io(std::io::Error::other(format!(
                    "flush failed: {e}"
                )))),
                (_, r) => r,
            };
            reply(r);
        }
    }
    if unflushed {
        let _ = store.flush();
        stats.flushes.fetch_add(1, Ordering::Relaxed);
    }
}
