//! Store health (issue 12 #3b). A store write that fails because the disk
//! is full, or because sled's instance is broken (it keeps the first I/O
//! error and fails every later operation), marks the node unhealthy:
//! writes are refused before anything is signed or stored — **507** for a
//! full disk, **503** otherwise, both saying nothing was stored — and
//! `/healthz` and `/v1/stats` answer 503 naming the fault. Every 2 s a probe
//! writes and flushes a tiny entry; when it succeeds the node is healthy
//! again. sled keeps the first I/O error for the life of its instance, so
//! after a real ENOSPC the probe keeps failing even once space is back: when
//! a probe fails while the store's file system has room again
//! ([`REOPEN_FREE_BYTES`]), the node asks to be restarted in process
//! ([`Health::reopen_wanted`]); `metamesh run` then stops the node (every
//! store handle drops, which releases sled's lock) and starts it again on a
//! freshly opened store, which replays sled's log and keeps everything that
//! was acknowledged.
//!
//! [`Health::inject`] is the test seam: it makes store writes fail as a
//! full disk (ENOSPC) or a broken store would, without filling a disk.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use tokio::sync::watch;

use metamesh_storage::recovery::{failure_kind, FailureKind};
use metamesh_storage::StoreError;

use super::Shared;
use crate::api::ApiError;

/// Why the store refuses writes.
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    pub kind: FailureKind,
    pub error: String,
}

impl Fault {
    /// The API's refusal of a write while the fault lasts.
    pub fn refusal(&self) -> ApiError {
        match self.kind {
            FailureKind::DiskFull => ApiError::new(
                507,
                format!(
                    "the disk is full; nothing was stored (retry once space is free): {}",
                    self.error
                ),
                None,
            ),
            _ => ApiError::unavailable(format!(
                "the store cannot write; nothing was stored (retry later): {}",
                self.error
            )),
        }
    }

    /// What is wrong, in a few words and the store's error.
    pub fn describe(&self) -> String {
        let what = match self.kind {
            FailureKind::DiskFull => "disk full",
            _ => "store cannot write",
        };
        format!("{what}: {}", self.error)
    }

    /// `/v1/stats` while the fault lasts (503).
    pub fn unhealthy(&self) -> ApiError {
        ApiError::unavailable(format!("unhealthy: {}", self.describe()))
    }
}

/// Free bytes on the store's file system above which a store that still
/// fails its probe is broken (not full) and is reopened (or an eighth of a
/// smaller file system).
pub const REOPEN_FREE_BYTES: u64 = 64 << 20;

/// The node's store health, shared by the actor, its jobs and the handles.
pub struct Health {
    fault: Mutex<Option<Fault>>,
    probing: AtomicBool,
    injected: Mutex<Option<FailureKind>>,
    reopen: watch::Sender<bool>,
}

impl Default for Health {
    fn default() -> Health {
        Health {
            fault: Mutex::new(None),
            probing: AtomicBool::new(false),
            injected: Mutex::new(None),
            reopen: watch::channel(false).0,
        }
    }
}

impl Health {
    pub fn fault(&self) -> Option<Fault> {
        self.fault.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// A store operation failed: remember it if it is the store's fault
    /// (not the request's).
    pub fn note(&self, e: &StoreError) {
        let kind = failure_kind(e);
        if kind == FailureKind::Request {
            return;
        }
        let mut f = self.fault.lock().unwrap_or_else(|p| p.into_inner());
        if f.is_none() {
            tracing::error!(error = %e, ?kind, "store write failed: refusing writes until a probe write succeeds");
        }
        *f = Some(Fault {
            kind,
            error: e.to_string(),
        });
    }

    fn clear(&self) {
        let mut f = self.fault.lock().unwrap_or_else(|p| p.into_inner());
        if f.take().is_some() {
            tracing::info!("store writable again: accepting writes");
        }
    }

    /// Test seam: make every store write fail as `kind` would (None: stop).
    pub fn inject(&self, kind: Option<FailureKind>) {
        *self.injected.lock().unwrap_or_else(|p| p.into_inner()) = kind;
    }

    /// The injected failure, if any, as the store would report it.
    pub fn injected(&self) -> Option<StoreError> {
        let kind = *self.injected.lock().unwrap_or_else(|p| p.into_inner());
        kind.map(|k| match k {
            FailureKind::DiskFull => StoreError::Io(std::io::Error::from_raw_os_error(28)),
            _ => StoreError::Io(std::io::Error::other("injected I/O failure")),
        })
    }

    /// Start a probe unless one runs (the caller runs [`probe`] then [`Health::probed`]).
    pub fn start_probe(&self) -> bool {
        self.fault().is_some() && !self.probing.swap(true, Ordering::SeqCst)
    }

    pub fn probed(&self, ok: bool) {
        if ok {
            self.clear();
        }
        self.probing.store(false, Ordering::SeqCst);
    }

    /// Resolves once the store must be reopened (see the module docs).
    pub fn reopen_wanted(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.reopen.subscribe();
        async move {
            let _ = rx.wait_for(|w| *w).await;
        }
    }

    fn want_reopen(&self, free: u64, e: &StoreError) {
        if !self.reopen.send_replace(true) {
            tracing::warn!(
                error = %e,
                free_bytes = free,
                "the store still fails although the disk has room again \
                 (sled keeps its first I/O error): reopening it"
            );
        }
    }
}

/// Whether a probe that failed with `e` means a broken instance to reopen:
/// a store fault (not a bad request) while the file system holding `dir`
/// has at least `floor` bytes (or an eighth of its size) free.
fn broken_with_room(e: &StoreError, dir: &Path, floor: u64) -> Option<u64> {
    if failure_kind(e) == FailureKind::Request {
        return None;
    }
    let free = fs2::available_space(dir).ok()?;
    let total = fs2::total_space(dir).ok()?;
    (free > 0 && free >= floor.min(total / 8)).then_some(free)
}

/// Blocking (on the pool): write and flush a tiny entry (our own, empty
/// address list, which nothing dials).
/// A failure of a real (not injected) store with room on its disk asks
/// for a reopen.
pub(crate) fn probe(sh: &Shared) -> Result<(), StoreError> {
    if let Some(e) = sh.health.injected() {
        return Err(e);
    }
    let r = sh
        .store
        .put_peer_addrs(&sh.peer_id, &[])
        .and_then(|()| sh.store.flush());
    if let Err(e) = &r {
        // The probe's own failure says what is wrong now (e.g. full, not broken).
        sh.health.note(e);
        if let Some(free) = broken_with_room(e, sh.store.path(), REOPEN_FREE_BYTES) {
            sh.health.want_reopen(free, e);
        }
    }
    r
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn full() -> StoreError {
        StoreError::Io(std::io::Error::from_raw_os_error(28))
    }

    #[test]
    fn a_failing_store_with_room_is_broken_and_without_room_is_full() {
        let dir = tempfile::tempdir().unwrap();
        assert!(broken_with_room(&full(), dir.path(), 0).is_some());
        let total = fs2::total_space(dir.path()).unwrap();
        let free = fs2::available_space(dir.path()).unwrap();
        // With less free than an eighth of the disk and than the floor: full.
        if free < total / 8 {
            assert!(broken_with_room(&full(), dir.path(), free + 1).is_none());
        } else {
            assert!(broken_with_room(&full(), dir.path(), u64::MAX).is_some());
        }
        let request = StoreError::Corrupt("x".into());
        assert_eq!(failure_kind(&request), FailureKind::Request);
        assert!(broken_with_room(&request, dir.path(), 0).is_none());
    }

    #[tokio::test]
    async fn reopen_is_wanted_once_and_wakes_every_waiter() {
        let h = Health::default();
        let (a, b) = (h.reopen_wanted(), h.reopen_wanted());
        h.want_reopen(1, &full());
        h.want_reopen(1, &full());
        tokio::time::timeout(std::time::Duration::from_secs(5), async {
            a.await;
            b.await;
        })
        .await
        .unwrap();
        // A waiter that arrives later sees it too.
        tokio::time::timeout(std::time::Duration::from_secs(5), h.reopen_wanted())
            .await
            .unwrap();
    }
}
