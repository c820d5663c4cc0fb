//! Store health (issue 12 #3b). A store write that fails because the disk
//! is full, or because sled's instance is broken (it keeps the first I/O
//! error and fails every later operation), marks the node unhealthy:
//! writes are refused before anything is signed or stored — **507** for a
//! full disk, **503** otherwise, both saying nothing was stored — and
//! `/healthz` and `/v1/stats` answer 503 naming the fault. Every 2 s a probe
//! writes and flushes a tiny entry; when it succeeds the node is healthy
//! again. (Reopening a poisoned sled instance in process is not done: its
//! file lock is held until every handle drops; until a restart the probe
//! keeps failing and the node keeps saying so.)
//!
//! [`Health::inject`] is the test seam: it makes store writes fail as a
//! full disk (ENOSPC) or a broken store would, without filling a disk.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

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

/// The node's store health, shared by the actor, its jobs and the handles.
#[derive(Default)]
pub struct Health {
    fault: Mutex<Option<Fault>>,
    probing: AtomicBool,
    injected: Mutex<Option<FailureKind>>,
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
}

/// Blocking (on the pool): write and flush a tiny entry (our own, empty
/// address list, which nothing dials).
pub(crate) fn probe(sh: &Shared) -> Result<(), StoreError> {
    if let Some(e) = sh.health.injected() {
        return Err(e);
    }
    sh.store.put_peer_addrs(&sh.peer_id, &[])?;
    sh.store.flush()
}
