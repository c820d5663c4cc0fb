//! [`Node`]: the cloneable handle the API (and tests, and `swarm`) use. It
//! talks to the actor over a bounded channel — each command is a closure
//! run on the actor, its answer comes back on a oneshot — and runs store
//! work on the pool itself, never on the async runtime.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use libp2p::{Multiaddr, PeerId};
use metamesh_protocol::aggregate::RobustAggregate;
use metamesh_protocol::insights::InsightsDocument;
use metamesh_protocol::posterior::Prior;
use metamesh_protocol::wire::RequestFilters;
use metamesh_protocol::{Depth, Pattern};
use metamesh_storage::{AppendOutcome, Store};
use tokio::sync::{broadcast, mpsc, oneshot};

use super::gossip::insight_confidence;
use super::pool::PoolError;
use super::run::{Actor, Call};
use super::views::Weights;
use super::{now_secs, NodeError, Shared, StoreSummary};
use crate::api::{
    ApiError, NodeApi, NodeInfo, PatternView, PeerView, Recommendation, ReputationView, Scope,
    StatsView, SubmittedPattern,
};
use crate::config::Config;
use crate::events::NodeEvent;
use crate::learning;
use crate::metrics::Metrics;

/// How long a first local record waits for the own-frontier check (see
/// [`Node::wait_own_seq_safe`]).
const OWN_SEQ_WAIT: Duration = Duration::from_secs(15);
/// How long a submission waits for a free store worker before it is
/// refused with 503 (and nothing stored).
const SUBMIT_WAIT: Duration = Duration::from_secs(20);

/// The running node (cheap to clone).
#[derive(Clone)]
pub struct Node {
    sh: Arc<Shared>,
    cmds: mpsc::Sender<Call>,
}

fn pool_err(what: &str, e: PoolError) -> ApiError {
    match e {
        PoolError::Busy(_) => ApiError::unavailable(format!("{what}: {e}")),
        PoolError::Failed(_) => ApiError::internal(format!("{what}: {e}")),
    }
}

fn schema_error(index: usize, e: metamesh_protocol::SchemaError) -> ApiError {
    ApiError::unprocessable(format!("patterns[{index}]: {e}"), e.field.clone())
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
    async fn call<T: Send + 'static>(
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

    /// Publish our frontier now.
    pub async fn announce(&self) -> Result<(), NodeError> {
        self.call(|a| a.announce()).await
    }

    async fn weights(&self) -> Result<Weights, ApiError> {
        self.call(|a| a.weights())
            .await
            .map_err(|e| ApiError::unavailable(e.to_string()))
    }

    async fn on_pool<T: Send + 'static>(
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

    /// The mesh's evidence, combined robustly (`metamesh_protocol::aggregate`):
    /// reputation-weighted, volume-capped, with origins inconsistent with
    /// the anchors or the weighted-median consensus left out.
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

    /// Before the first local record of a node whose store has no own
    /// records: wait (bounded) until a sync with a peer completed (or a
    /// peer's announcement showed we hold all it has), so that our old
    /// records — if the store was lost but the key kept — come back first
    /// and their seqs are never reused. With no peer connected there is no
    /// one to ask; the node proceeds (documented in docs/node.md).
    async fn wait_own_seq_safe(&self) {
        let mut rx = self.sh.own_seq_safe.subscribe();
        if *rx.borrow() {
            return;
        }
        let deadline = Instant::now() + OWN_SEQ_WAIT;
        while Instant::now() < deadline {
            if self.sh.connected.load(Ordering::Relaxed) == 0
                && self.sh.started.elapsed() > Duration::from_secs(3)
            {
                // Give a starting node a moment to reach its bootstrap peers.
                return;
            }
            let _ = tokio::time::timeout(Duration::from_millis(100), rx.wait_for(|s| *s)).await;
            if *rx.borrow() {
                return;
            }
        }
    }
}

/// Blocking: adoption and effectiveness of a batch against the collective
/// view before it (computed once per batch; the believed-best depth once
/// per distinct ATP budget, not once per pattern).
fn record_adoption(w: &Weights, store: &Store, patterns: &[Pattern], metrics: &Metrics) {
    let view = w.collective(store).view(Prior::default());
    let mut best: HashMap<u64, Option<Depth>> = HashMap::new();
    for p in patterns {
        let b = *best
            .entry(p.atp_before.to_bits())
            .or_insert_with(|| learning::believed_best(&view, p.atp_before));
        let followed = b == Some(p.depth_used);
        metrics.recommendation_followed(followed);
        metrics.outcome_quality(followed, p.quality_achieved);
    }
}

impl NodeApi for Node {
    async fn submit_patterns(
        &self,
        patterns: Vec<Pattern>,
    ) -> Result<Vec<SubmittedPattern>, ApiError> {
        let now = now_secs();
        for (i, p) in patterns.iter().enumerate() {
            p.validate(now).map_err(|e| schema_error(i, e))?;
        }
        if patterns.is_empty() {
            return Ok(Vec::new());
        }
        self.wait_own_seq_safe().await;
        let w = self.weights().await?;
        let sh = self.sh.clone();
        // Refused while no store worker is free: then nothing was stored.
        let (outcomes, summary) = self
            .sh
            .pool
            .run_within(SUBMIT_WAIT, move || {
                // Did each outcome follow the advice of the collective view
                // as it stood before it was recorded?
                record_adoption(&w, &sh.store, &patterns, &sh.metrics);
                let out = sh.store.append_local_batch(
                    &sh.key,
                    patterns.into_iter().map(|p| (p, None)).collect(),
                )?;
                sh.store.flush()?;
                Ok::<_, metamesh_storage::StoreError>((
                    out,
                    StoreSummary::read(&sh.store, &sh.peer_id),
                ))
            })
            .await
            .map_err(|e| pool_err("storing patterns", e))?
            .map_err(|e| ApiError::internal(format!("storing patterns: {e}")))?;
        let mut out = Vec::with_capacity(outcomes.len());
        for o in outcomes {
            if let AppendOutcome::Appended(rec, body) = o {
                let hash = rec.content_hash().to_hex();
                self.sh.metrics.pattern_recorded();
                self.sh.emit(NodeEvent::PatternAccepted {
                    origin: body.origin.to_string(),
                    seq: body.seq,
                    hash: hash.clone(),
                    depth: body.pattern.depth_used,
                    local: true,
                });
                out.push(SubmittedPattern {
                    origin: body.origin.to_string(),
                    seq: body.seq,
                    hash,
                    pattern_id: body.pattern.pattern_id.clone(),
                });
            }
        }
        // Stored and durable: tell the actor (announce soon). If it has
        // stopped, the patterns are stored all the same.
        let _ = self
            .call(move |a| {
                a.store_changed(summary);
                a.request_announce();
            })
            .await;
        Ok(out)
    }

    async fn query_patterns(
        &self,
        filters: RequestFilters,
        limit: usize,
    ) -> Result<Vec<PatternView>, ApiError> {
        filters
            .validate()
            .map_err(|e| ApiError::bad_request(e.to_string(), "filters"))?;
        let (found, _) = self
            .on_pool("querying patterns", move |sh| {
                sh.store.query(&filters, None, limit)
            })
            .await?
            .map_err(|e| ApiError::internal(e.to_string()))?;
        Ok(found
            .into_iter()
            .map(|(rec, body)| PatternView {
                origin: body.origin.to_string(),
                seq: body.seq,
                hash: rec.content_hash().to_hex(),
                pattern: body.pattern,
            })
            .collect())
    }

    async fn insights(&self, scope: Scope) -> Result<InsightsDocument, ApiError> {
        let now = now_secs();
        match scope {
            Scope::Local => {
                self.on_pool("local insights", move |sh| {
                    learning::local_insights(&sh.store, &sh.peer_id, now)
                })
                .await
            }
            Scope::Collective => {
                let w = self.weights().await?;
                self.on_pool("collective insights", move |sh| {
                    let c = w.collective_report(&sh.store);
                    learning::collective_document(&c, &sh.peer_id, now)
                })
                .await
            }
        }
    }

    async fn knowledge_transfer(&self) -> Result<learning::KnowledgeTransfer, ApiError> {
        let w = self.weights().await?;
        let children = self
            .call(|a| a.x.promoted_by.clone())
            .await
            .map_err(|e| ApiError::unavailable(e.to_string()))?;
        self.on_pool("knowledge transfer", move |sh| {
            let mut k = learning::knowledge_transfer(&w.collective_report(&sh.store));
            let parent = sh.parent.as_ref().map(|(p, _)| *p);
            if parent.is_some() || !children.is_empty() {
                for (_, body) in sh.store.latest_insights() {
                    let held = || learning::HeldInsight {
                        peer_id: body.origin.to_string(),
                        seq: body.seq,
                        patterns: body.stats.total(),
                        optimal_quality_depth: body
                            .insights
                            .learned_preferences
                            .optimal_quality_depth,
                        confidence: insight_confidence(&body),
                    };
                    if Some(body.origin) == parent {
                        k.parent = Some(held());
                    }
                    if children.contains_key(&body.origin) {
                        k.promoted_children.push(held());
                    }
                }
            }
            k
        })
        .await
    }

    async fn recommend(&self, atp: f64, strategy: String) -> Result<Recommendation, ApiError> {
        use metamesh_protocol::strategy;
        if !atp.is_finite() || atp < 0.0 {
            return Err(ApiError::bad_request(
                "atp must be a finite number ≥ 0",
                "atp",
            ));
        }
        let s = strategy::strategy_by_name(&strategy).ok_or_else(|| {
            ApiError::bad_request(
                format!(
                    "unknown strategy {strategy:?}; use one of {:?}",
                    strategy::STRATEGY_NAMES
                ),
                "strategy",
            )
        })?;
        let agg = self.collective().await?;
        let view = agg.view(Prior::default());
        let total = agg.pattern_count;
        let choice = s.choose(&view, atp, &mut rand::thread_rng());
        let reason = if total == 0 {
            "no evidence yet: chosen by ATP budget".to_string()
        } else if choice.followed_learning {
            format!("collective evidence from {total} patterns favours this depth")
        } else {
            "exploring (or limited by the ATP budget)".to_string()
        };
        Ok(Recommendation {
            depth: choice.depth,
            strategy: s.name().to_string(),
            confidence: choice.confidence,
            atp,
            reason,
        })
    }

    async fn peers(&self) -> Result<Vec<PeerView>, ApiError> {
        self.call(|a| {
            let now = now_secs();
            a.net
                .peers()
                .into_iter()
                .map(|p| {
                    let s = a.x.rep.standing(&p.peer, now);
                    PeerView {
                        peer_id: p.peer.to_string(),
                        addrs: p.addrs.iter().map(|a| a.to_string()).collect(),
                        connected: p.connected,
                        reputation: s.score,
                        class: s.class.as_str().to_string(),
                    }
                })
                .collect()
        })
        .await
        .map_err(|e| ApiError::unavailable(e.to_string()))
    }

    async fn reputation(&self) -> Result<Vec<ReputationView>, ApiError> {
        self.call(|a| {
            let now = now_secs();
            let rep = &a.x.rep;
            rep.peers()
                .into_iter()
                .map(|p| {
                    let s = rep.standing(&p, now);
                    let counters = rep
                        .state(&p)
                        .map(|state| {
                            state
                                .counters
                                .iter()
                                .map(|(e, n)| (e.as_str().to_string(), *n))
                                .collect()
                        })
                        .unwrap_or_default();
                    ReputationView {
                        peer_id: p.to_string(),
                        score: s.score,
                        class: s.class.as_str().to_string(),
                        weight: s.weight,
                        counters,
                    }
                })
                .collect()
        })
        .await
        .map_err(|e| ApiError::unavailable(e.to_string()))
    }

    async fn stats(&self) -> Result<StatsView, ApiError> {
        // Counts the actor holds (no store read): what the store held at
        // its last write.
        let (known, connected, s) = self
            .call(|a| (a.net.peers().len(), a.x.connected.len(), a.summary.clone()))
            .await
            .map_err(|e| ApiError::unavailable(e.to_string()))?;
        Ok(StatsView {
            peer_id: self.sh.peer_id.to_string(),
            pattern_count: s.pattern_count,
            own_seq: s.own_seq,
            origins: s.frontier.len() as u64,
            depth_distribution: s.depth_distribution,
            connected_peers: connected as u64,
            known_peers: known as u64,
            uptime_secs: self.sh.started.elapsed().as_secs_f64(),
            metrics: self.sh.metrics.snapshot(),
        })
    }

    async fn node_info(&self) -> Result<NodeInfo, ApiError> {
        Ok(NodeInfo {
            peer_id: self.sh.peer_id.to_string(),
            listen_addrs: self
                .sh
                .listen_addrs
                .get()
                .map(|v| v.iter().map(|a| a.to_string()).collect())
                .unwrap_or_default(),
            mesh: self.sh.cfg.mesh.clone(),
            api_addr: self.sh.api_addr.get().map(|a| a.to_string()),
            version: env!("CARGO_PKG_VERSION").to_string(),
        })
    }

    fn subscribe(&self) -> broadcast::Receiver<NodeEvent> {
        self.sh.events.subscribe()
    }

    fn metrics(&self) -> &Metrics {
        &self.sh.metrics
    }
}
