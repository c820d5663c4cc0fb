//! The store pool: every sled call (and every batch of signature checks) runs
//! here, on tokio's blocking threads, never on the async runtime's workers.
//!
//! Bounded twice: at most [`Pool::workers`] jobs run at once (a semaphore),
//! and callers that would wait longer than their deadline get
//! [`PoolError::Busy`] *before* their job started, so a refused job never
//! did anything (a 503 means nothing was stored).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

/// Store jobs that run at once.
pub const STORE_WORKERS: usize = 4;
/// Workers of the write pool. Its jobs mostly wait for the group-commit
/// writer's flush; the more of them wait at once, the larger the group
/// that one flush (fsync) covers.
pub const WRITE_WORKERS: usize = 32;
/// Workers checking signatures of records from peers. A pool of their own,
/// so that a flood's checks queue behind each other, not in front of store
/// reads and API work (issue 12 #8: honest latency during a flood).
pub const VERIFY_WORKERS: usize = 4;
/// Workers writing our own records (local submissions), so that they never
/// queue behind a flood of peers' records.
pub const OWN_WRITE_WORKERS: usize = 4;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PoolError {
    #[error("the store is busy: no worker free within {0:?}; nothing was done")]
    Busy(Duration),
    #[error("a store job failed: {0}")]
    Failed(String),
}

/// A cloneable handle on the bounded blocking pool.
#[derive(Clone)]
pub struct Pool {
    permits: Arc<Semaphore>,
    workers: usize,
}

impl Pool {
    pub fn new(workers: usize) -> Pool {
        let workers = workers.max(1);
        Pool {
            permits: Arc::new(Semaphore::new(workers)),
            workers,
        }
    }

    pub fn workers(&self) -> usize {
        self.workers
    }

    /// Run `job` on a blocking thread once a worker is free (waiting as long
    /// as it takes: the actor's own jobs are bounded by its bookkeeping).
    pub async fn run<T, F>(&self, job: F) -> Result<T, PoolError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| PoolError::Failed("the pool is closed".into()))?;
        let out = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            job()
        })
        .await;
        out.map_err(|e| PoolError::Failed(e.to_string()))
    }

    /// Like [`Pool::run`], but give up with [`PoolError::Busy`] if no worker
    /// is free within `wait` (the job then never started).
    pub async fn run_within<T, F>(&self, wait: Duration, job: F) -> Result<T, PoolError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let permit = tokio::time::timeout(wait, self.permits.clone().acquire_owned())
            .await
            .map_err(|_| PoolError::Busy(wait))?
            .map_err(|_| PoolError::Failed("the pool is closed".into()))?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            job()
        })
        .await
        .map_err(|e| PoolError::Failed(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn at_most_workers_jobs_run_at_once() {
        let pool = Pool::new(2);
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let mut jobs = Vec::new();
        for _ in 0..8 {
            let (pool, running, peak) = (pool.clone(), running.clone(), peak.clone());
            jobs.push(tokio::spawn(async move {
                pool.run(move || {
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
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_busy_pool_refuses_before_running_the_job() {
        let pool = Pool::new(1);
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let p2 = pool.clone();
        let blocker = tokio::spawn(async move { p2.run(move || rx.recv().ok()).await });
        // Wait until the blocker holds the only worker.
        while pool.permits.available_permits() > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let ran = Arc::new(AtomicUsize::new(0));
        let r = ran.clone();
        let refused = pool
            .run_within(Duration::from_millis(30), move || {
                r.fetch_add(1, Ordering::SeqCst);
            })
            .await;
        assert!(matches!(refused, Err(PoolError::Busy(_))));
        assert_eq!(ran.load(Ordering::SeqCst), 0);
        tx.send(()).unwrap();
        blocker.await.unwrap().unwrap();
    }
}
