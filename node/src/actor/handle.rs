//! [`Node`]: the cloneable handle the API (and tests, and `swarm`) use. It
//! talks to the actor over a bounded channel — each command is a closure
//! run on the actor, its answer comes back on a oneshot — and runs store
//! reads on the pool itself, never on the async runtime.

use std::sync::Arc;
use std::time::Duration;

use libp2p::{Multiaddr, PeerId};
use metamesh_exchange::SubmitError;
use metamesh_protocol::aggregate::RobustAggregate;
use metamesh_protocol::Pattern;
use metamesh_storage::Store;
use tokio::sync::{mpsc, oneshot};

use super::pool::PoolError;
use super::run::{Actor, Call};
use super::views::Weights;
use super::{now_secs, NodeError, Shared};
use crate::api::ApiError;
use crate::config::Config;
use crate::learning;

/// How long a submission waits for the core's answer (durable write
/// included) before the API gives up; the write itself is not cancelled.
const SUBMIT_WAIT: Duration = Duration::from_secs(60);
/// How long a submission the core refused as busy is retried.
const BUSY_RETRY_FOR: Duration = Duration::from_secs(20);
/// Patterns handed to the core at once (its `max_submit`).
const MAX_SUBMIT_CHUNK: usize = 1000;

/// The running node (cheap to clone).
#[derive(Clone)]
pub struct Node {
    pub(super) sh: Arc<Shared>,
    cmds: mpsc::Sender<Call>,
}

pub(super) fn pool_err(what: &str, e: PoolError) -> ApiError {
    match e {
        PoolError::Busy(_) | PoolError::Shed(_) => ApiError::unavailable(format!("{what}: {e}")),
        PoolError::Failed(_) => ApiError::internal(format!("{what}: {e}")),
    }
}

pub(super) fn submit_error(e: SubmitError) -> ApiError {
    match e {
        // Nothing was stored: the client may retry (a 503 never means stored).
        SubmitError::Quota { .. } => ApiError::new(429, e.to_string(), None),
        SubmitError::Busy(_) => ApiError::unavailable(e.to_string()),
        SubmitError::Invalid { index, .. } => {
            ApiError::unprocessable(e.to_string(), format!("patterns[{index}]"))
        }
        SubmitError::TooMany(..) => ApiError::new(413, e.to_string(), None),
        SubmitError::Store(_) => ApiError::internal(format!("storing patterns: {e}")),
    }
}

impl Node {
    pub(super) fn new(sh: Arc<Shared>, cmds: mpsc::Sender<Call>) -> Node {
        Node { sh, cmds }
    }

    pub(super) fn shared(&self) -> &Arc<Shared> {
        &self.sh
    }

    pub fn peer_id(&self) -> PeerId {
        self.sh.peer_id
    }

    /// The store (for tests and tools; the node itself reads it on its pool).
    pub fn store(&self) -> &Store {
        &self.sh.store
    }

    pub fn config(&self) -> &Config {
        &self.sh.cfg
    }

    /// Network controls (`dial`); the swarm itself lives in the actor.
    pub fn network(&self) -> &Node {
        self
    }

    /// Run `f` on the actor and return its answer.
    pub(super) async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Actor) -> T + Send + 'static,
    ) -> Result<T, NodeError> {
        let (tx, rx) = oneshot::channel();
        let call: Call = Box::new(move |a: &mut Actor| {
            let _ = tx.send(f(a));
        });
        self.cmds.send(call).await.map_err(|_| NodeError::Stopped)?;
        rx.await.map_err(|_| NodeError::Stopped)
    }

    pub(super) async fn stop(&self, reply: oneshot::Sender<()>) -> Result<(), NodeError> {
        let call: Call = Box::new(move |a: &mut Actor| a.stop = Some(reply));
        self.cmds.send(call).await.map_err(|_| NodeError::Stopped)
    }

    pub async fn dial(&self, addr: Multiaddr) -> Result<(), NodeError> {
        self.call(move |a| a.net.dial(addr))
            .await?
            .map_err(NodeError::from)
    }

    pub(super) async fn raw_listen_addrs(&self) -> Result<Vec<Multiaddr>, NodeError> {
        self.call(|a| a.net.listen_addrs()).await
    }

    /// The core's counters (for `swarm` and tests).
    pub async fn counters(&self) -> Result<metamesh_exchange::Counters, NodeError> {
        self.call(|a| a.core.counters().clone()).await
    }

    /// The record tree (`/metamesh/tree/1`): core and transport counters.
    pub async fn tree_stats(&self) -> Result<crate::network::tree::TreeView, NodeError> {
        self.call(|a| a.tree_view()).await
    }

    /// Test seam (issue 12 #3b): make every store write fail as a full disk
    /// (`DiskFull`) or a broken store (`NeedsReopen`) would; `None` stops.
    #[doc(hidden)]
    pub fn inject_store_fault(&self, kind: Option<metamesh_storage::recovery::FailureKind>) {
        self.sh.health.inject(kind);
    }

    /// Why the store refuses writes, if it does.
    pub fn store_fault(&self) -> Option<super::Fault> {
        self.sh.health.fault()
    }

    /// Gossipsub's score of a peer (`None`: gossipsub does not know it), for
    /// tests and tools: below `network::behaviour::GRAYLIST_THRESHOLD` the
    /// transport ignores the peer.
    pub async fn gossip_score(&self, peer: PeerId) -> Result<Option<f64>, NodeError> {
        self.call(move |a| {
            a.net
                .peers()
                .into_iter()
                .find(|p| p.peer == peer)
                .and_then(|p| p.gossip_score)
        })
        .await
    }

    pub(super) async fn weights(&self) -> Result<Weights, ApiError> {
        self.call(|a| a.weights())
            .await
            .map_err(|e| ApiError::unavailable(e.to_string()))
    }

    pub(super) async fn on_pool<T: Send + 'static>(
        &self,
        what: &str,
        f: impl FnOnce(&Shared) -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let sh = self.sh.clone();
        self.sh
            .pool
            .run(move || f(&sh))
            .await
            .map_err(|e| pool_err(what, e))
    }

    /// The mesh's evidence, combined robustly (`metamesh_protocol::aggregate`).
    pub async fn collective(&self) -> Result<RobustAggregate<PeerId>, ApiError> {
        let w = self.weights().await?;
        self.on_pool("collective view", move |sh| w.collective(&sh.store))
            .await
    }

    /// The collective view with what the API reports about it.
    pub async fn collective_report(&self) -> Result<learning::Collective, ApiError> {
        let w = self.weights().await?;
        self.on_pool("collective view", move |sh| w.collective_report(&sh.store))
            .await
    }

    /// Hand patterns to the core, which signs them with fresh own seqs and
    /// answers once they are durable.
    pub(super) async fn submit(
        &self,
        patterns: Vec<Pattern>,
    ) -> Result<Vec<metamesh_exchange::SubmittedRecord>, ApiError> {
        // A full disk or a broken store: refused before anything is signed.
        if let Some(f) = self.sh.health.fault() {
            return Err(f.refusal());
        }
        // See `Shared::sign_after` (at most about a second after a start).
        let early = self.sh.sign_after - now_secs();
        if early > 0.0 {
            tokio::time::sleep(Duration::from_secs_f64(early.min(5.0))).await;
        }
        let mut done = Vec::with_capacity(patterns.len());
        let mut rest = patterns;
        while !rest.is_empty() {
            let tail = rest.split_off(rest.len().min(MAX_SUBMIT_CHUNK));
            let chunk = std::mem::replace(&mut rest, tail);
            let mut busy_since = None;
            loop {
                let (tx, rx) = oneshot::channel();
                let attempt = chunk.clone();
                self.call(move |a| a.submit(attempt, tx))
                    .await
                    .map_err(|e| ApiError::unavailable(e.to_string()))?;
                match tokio::time::timeout(SUBMIT_WAIT, rx).await {
                    // The core refused before storing anything because its
                    // writes are backed up: wait a little and ask again
                    // (bounded; then 503, still with nothing stored).
                    Ok(Ok(Err(SubmitError::Busy(_))))
                        if busy_since
                            .get_or_insert_with(std::time::Instant::now)
                            .elapsed()
                            < BUSY_RETRY_FOR =>
                    {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                    Ok(Ok(r)) => {
                        done.extend(r.map_err(|e| match (&e, self.sh.health.fault()) {
                            // the write failed for the store's reason: 507 / 503
                            (SubmitError::Store(_), Some(f)) => f.refusal(),
                            _ => submit_error(e),
                        })?)
                    }
                    // Not 503: a 503 always means nothing was stored.
                    Ok(Err(_)) => {
                        return Err(ApiError::internal(
                            "the node stopped while storing; the patterns may have been stored",
                        ))
                    }
                    Err(_) => {
                        return Err(ApiError::new(
                            504,
                            "storing took too long; the patterns may still be stored",
                            None,
                        ))
                    }
                }
                break;
            }
        }
        Ok(done)
    }
}
