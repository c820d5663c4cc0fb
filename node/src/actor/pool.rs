//! The store pools: every sled call (and every batch of signature checks)
//! runs here, on tokio's blocking threads, never on the async runtime's
//! workers.
//!
//! Bounded twice: at most [`Pool::workers`] jobs run at once, and callers
//! that would wait longer than their deadline get [`PoolError::Busy`]
//! *before* their job started, so a refused job never did anything (a 503
//! means nothing was stored).
//!
//! Two lanes (issue 12: an honest record's latency during a flood). The
//! core decides each job's [`Lane`] (its `Priority`); the pool only
//! executes that decision: a free worker always takes the oldest waiting
//! high job before any low one, low jobs never hold more than
//! `low_workers` workers (the rest stay free for high jobs), and the low
//! lane's queue is bounded — a low job past it is refused before it
//! started ([`PoolError::Busy`]), as the core's own bookkeeping expects
//! (a refused write wrote nothing; a refused check is forgotten).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;

/// Store jobs that run at once.
pub const STORE_WORKERS: usize = 4;
/// Workers of the write pool. Its jobs mostly wait for the group-commit
/// writer's flush; the more of them wait at once, the larger the group
/// that one flush (fsync) covers.
pub const WRITE_WORKERS: usize = 32;
/// Of those, most that low-lane writes (records of fresh identities) hold:
/// the rest are free for established origins' records whenever they come.
/// Few, because a high or own write still waits in the group-commit
/// writer's one FIFO behind the group being written and shares the next
/// group with every low job queued: the fewer low jobs, the shorter both
/// (issue 12's flood: 32 made a group ~30 ms on the loaded machine).
pub const WRITE_LOW_WORKERS: usize = 2;
/// Workers checking signatures of records from peers. A pool of their own,
/// so that a flood's checks queue behind each other, not in front of store
/// reads and API work (issue 12 #8: honest latency during a flood).
pub const VERIFY_WORKERS: usize = 4;
/// Of those, most that low-lane checks hold.
pub const VERIFY_LOW_WORKERS: usize = 3;
/// Low-lane jobs waiting for a worker at most (beyond: refused). The core
/// bounds its jobs in flight below this already; this is the pool's own
/// guard.
pub const LOW_QUEUE: usize = 2048;
/// Workers writing our own records (local submissions), so that they never
/// queue behind a flood of peers' records.
pub const OWN_WRITE_WORKERS: usize = 4;

/// Which queue a job waits in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    High,
    Low,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PoolError {
    #[error("the store is busy: no worker free within {0:?}; nothing was done")]
    Busy(Duration),
    #[error("the low-priority queue is full ({0} jobs); nothing was done")]
    Shed(usize),
    #[error("a store job failed: {0}")]
    Failed(String),
}

#[derive(Default)]
struct Queues {
    running: usize,
    running_low: usize,
    high: VecDeque<oneshot::Sender<Permit>>,
    low: VecDeque<oneshot::Sender<Permit>>,
}

struct Inner {
    workers: usize,
    low_workers: usize,
    low_queue: usize,
    q: Mutex<Queues>,
}

/// A worker held; dropping it frees the worker for the next waiting job.
struct Permit {
    pool: Option<Arc<Inner>>,
    lane: Lane,
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(p) = self.pool.take() {
            let mut q = p.lock();
            q.running -= 1;
            if self.lane == Lane::Low {
                q.running_low -= 1;
            }
            p.dispatch(&mut q);
        }
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queues> {
        self.q.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn can_start(&self, q: &Queues, lane: Lane) -> bool {
        q.running < self.workers && (lane == Lane::High || q.running_low < self.low_workers)
    }

    fn take(self: &Arc<Self>, q: &mut Queues, lane: Lane) -> Permit {
        q.running += 1;
        if lane == Lane::Low {
            q.running_low += 1;
        }
        Permit {
            pool: Some(self.clone()),
            lane,
        }
    }

    /// Hand free workers to waiting jobs: high first, then low.
    fn dispatch(self: &Arc<Self>, q: &mut Queues) {
        loop {
            let lane = if !q.high.is_empty() && self.can_start(q, Lane::High) {
                Lane::High
            } else if !q.low.is_empty() && self.can_start(q, Lane::Low) {
                Lane::Low
            } else {
                return;
            };
            let waiter = match lane {
                Lane::High => q.high.pop_front(),
                Lane::Low => q.low.pop_front(),
            };
            let Some(tx) = waiter else { return };
            let permit = self.take(q, lane);
            if let Err(mut p) = tx.send(permit) {
                // That caller gave up waiting: undo here (the lock is held,
                // so the permit must not release itself).
                p.pool = None;
                q.running -= 1;
                if lane == Lane::Low {
                    q.running_low -= 1;
                }
            }
        }
    }
}

/// A cloneable handle on a bounded blocking pool with two lanes.
#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

impl Pool {
    /// A pool of `workers` in which every job is high: one FIFO queue.
    pub fn new(workers: usize) -> Pool {
        let w = workers.max(1);
        Pool::with_lanes(w, w, LOW_QUEUE)
    }

    /// A pool of `workers`, of which low jobs hold at most `low_workers`,
    /// with at most `low_queue` low jobs waiting.
    pub fn with_lanes(workers: usize, low_workers: usize, low_queue: usize) -> Pool {
        let workers = workers.max(1);
        Pool {
            inner: Arc::new(Inner {
                workers,
                low_workers: low_workers.clamp(1, workers),
                low_queue,
                q: Mutex::new(Queues::default()),
            }),
        }
    }

    pub fn workers(&self) -> usize {
        self.inner.workers
    }

    /// Jobs waiting for a worker: (high, low).
    pub fn waiting(&self) -> (usize, usize) {
        let q = self.inner.lock();
        (q.high.len(), q.low.len())
    }

    /// A worker for `lane`: at once if one is free to it and no job that
    /// goes first waits, else in turn.
    async fn acquire(&self, lane: Lane) -> Result<Permit, PoolError> {
        let rx = {
            let mut q = self.inner.lock();
            let (tx, rx) = oneshot::channel();
            match lane {
                Lane::High => q.high.push_back(tx),
                // (low jobs wait only when low work is saturated: a full
                // queue means this one would wait too)
                Lane::Low if q.low.len() >= self.inner.low_queue => {
                    return Err(PoolError::Shed(self.inner.low_queue))
                }
                Lane::Low => q.low.push_back(tx),
            }
            self.inner.dispatch(&mut q);
            rx
        };
        rx.await
            .map_err(|_| PoolError::Failed("the pool is closed".into()))
    }

    async fn spawn<T, F>(permit: Permit, job: F) -> Result<T, PoolError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            job()
        })
        .await
        .map_err(|e| PoolError::Failed(e.to_string()))
    }

    /// Run `job` on a blocking thread once a worker is free (waiting as long
    /// as it takes: the actor's own jobs are bounded by its bookkeeping).
    pub async fn run<T, F>(&self, job: F) -> Result<T, PoolError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        self.run_in(Lane::High, job).await
    }

    /// Like [`Pool::run`], in `lane`: a low job waits while any high one
    /// does, and is refused ([`PoolError::Shed`], before it started) when
    /// the low queue is full.
    pub async fn run_in<T, F>(&self, lane: Lane, job: F) -> Result<T, PoolError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let permit = self.acquire(lane).await?;
        Pool::spawn(permit, job).await
    }

    /// Like [`Pool::run`], but give up with [`PoolError::Busy`] if no worker
    /// is free within `wait` (the job then never started).
    pub async fn run_within<T, F>(&self, wait: Duration, job: F) -> Result<T, PoolError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let permit = tokio::time::timeout(wait, self.acquire(Lane::High))
            .await
            .map_err(|_| PoolError::Busy(wait))??;
        Pool::spawn(permit, job).await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Wait (generously) until the pool's queues hold `want` jobs.
    async fn until_waiting(pool: &Pool, want: (usize, usize)) {
        let start = std::time::Instant::now();
        while pool.waiting() != want {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "waiting {:?}, want {want:?}",
                pool.waiting()
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Occupy one worker of `pool` in `lane` until the returned sender sends.
    async fn blocker(
        pool: &Pool,
        lane: Lane,
    ) -> (
        std::sync::mpsc::Sender<()>,
        tokio::task::JoinHandle<Result<(), PoolError>>,
    ) {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let (started_tx, started_rx) = oneshot::channel();
        let p = pool.clone();
        let h = tokio::spawn(async move {
            p.run_in(lane, move || {
                let _ = started_tx.send(());
                let _ = rx.recv();
            })
            .await
        });
        started_rx.await.unwrap();
        (tx, h)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn at_most_workers_jobs_run_at_once() {
        let pool = Pool::with_lanes(2, 1, 64);
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let mut jobs = Vec::new();
        for i in 0..8 {
            let (pool, running, peak) = (pool.clone(), running.clone(), peak.clone());
            let lane = if i % 2 == 0 { Lane::High } else { Lane::Low };
            jobs.push(tokio::spawn(async move {
                pool.run_in(lane, move || {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(20));
                    running.fetch_sub(1, Ordering::SeqCst);
                })
                .await
                .unwrap()
            }));
        }
        for j in jobs {
            j.await.unwrap();
        }
        assert!(peak.load(Ordering::SeqCst) <= 2);
        assert!(peak.load(Ordering::SeqCst) >= 1);
        assert_eq!(pool.waiting(), (0, 0));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_busy_pool_refuses_before_running_the_job() {
        let pool = Pool::new(1);
        let (release, blocked) = blocker(&pool, Lane::High).await;
        let ran = Arc::new(AtomicUsize::new(0));
        let r = ran.clone();
        let refused = pool
            .run_within(Duration::from_millis(30), move || {
                r.fetch_add(1, Ordering::SeqCst);
            })
            .await;
        assert!(matches!(refused, Err(PoolError::Busy(_))));
        assert_eq!(ran.load(Ordering::SeqCst), 0);
        release.send(()).unwrap();
        blocked.await.unwrap().unwrap();
        // the refused caller's place in the queue was given back
        assert_eq!(pool.waiting(), (0, 0));
        pool.run(|| ()).await.unwrap();
    }

    /// The queue order: a free worker takes every waiting high job before
    /// any low one, even low ones that have waited longer; each lane in
    /// arrival order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn high_jobs_go_before_low_ones_that_waited_longer() {
        let pool = Pool::with_lanes(1, 1, 64);
        let (release, blocked) = blocker(&pool, Lane::Low).await;
        let order: Arc<Mutex<Vec<&'static str>>> = Arc::default();
        let mut jobs = Vec::new();
        let plan = [
            (Lane::Low, "low-0"),
            (Lane::Low, "low-1"),
            (Lane::High, "high-0"),
            (Lane::Low, "low-2"),
            (Lane::High, "high-1"),
        ];
        let (mut high, mut low) = (0, 0);
        for (lane, name) in plan {
            let (p, o) = (pool.clone(), order.clone());
            jobs.push(tokio::spawn(async move {
                p.run_in(lane, move || o.lock().unwrap().push(name)).await
            }));
            match lane {
                Lane::High => high += 1,
                Lane::Low => low += 1,
            }
            until_waiting(&pool, (high, low)).await;
        }
        release.send(()).unwrap();
        blocked.await.unwrap().unwrap();
        for j in jobs {
            j.await.unwrap().unwrap();
        }
        assert_eq!(
            *order.lock().unwrap(),
            vec!["high-0", "high-1", "low-0", "low-1", "low-2"]
        );
    }

    /// Low jobs hold at most `low_workers`: with those busy, a high job
    /// starts at once while low ones wait.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn low_jobs_leave_workers_free_for_high_ones() {
        let pool = Pool::with_lanes(2, 1, 64);
        let (release, blocked) = blocker(&pool, Lane::Low).await;
        let ran = Arc::new(AtomicUsize::new(0));
        let r = ran.clone();
        let p = pool.clone();
        let low = tokio::spawn(async move {
            p.run_in(Lane::Low, move || r.fetch_add(1, Ordering::SeqCst))
                .await
        });
        until_waiting(&pool, (0, 1)).await;
        // the high job runs while the low one still waits
        pool.run_in(Lane::High, || ()).await.unwrap();
        assert_eq!(pool.waiting(), (0, 1));
        assert_eq!(ran.load(Ordering::SeqCst), 0);
        release.send(()).unwrap();
        blocked.await.unwrap().unwrap();
        low.await.unwrap().unwrap();
        assert_eq!(ran.load(Ordering::SeqCst), 1);
    }

    /// The low lane is bounded: past `low_queue` waiting, a low job is
    /// refused before it ran; high jobs still queue.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_low_queue_sheds_low_jobs_before_they_run() {
        let pool = Pool::with_lanes(1, 1, 2);
        let (release, blocked) = blocker(&pool, Lane::High).await;
        let mut waiting = Vec::new();
        for i in 0..2 {
            let p = pool.clone();
            waiting.push(tokio::spawn(
                async move { p.run_in(Lane::Low, || ()).await },
            ));
            until_waiting(&pool, (0, i + 1)).await;
        }
        let ran = Arc::new(AtomicUsize::new(0));
        let r = ran.clone();
        let shed = pool
            .run_in(Lane::Low, move || r.fetch_add(1, Ordering::SeqCst))
            .await;
        assert_eq!(shed, Err(PoolError::Shed(2)));
        assert_eq!(ran.load(Ordering::SeqCst), 0);
        let p = pool.clone();
        let high = tokio::spawn(async move { p.run_in(Lane::High, || ()).await });
        until_waiting(&pool, (1, 2)).await;
        release.send(()).unwrap();
        blocked.await.unwrap().unwrap();
        high.await.unwrap().unwrap();
        for w in waiting {
            w.await.unwrap().unwrap();
        }
    }
}
