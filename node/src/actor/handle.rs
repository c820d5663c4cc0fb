//! [`Node`]: the cloneable handle the API (and tests, and `swarm`) use. It
//! talks to the actor over a bounded channel — each command is a closure
//! run on the actor, its answer comes back on a oneshot — and runs store
//! reads on the pool itself, never on the async runtime.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use libp2p::{Multiaddr, PeerId};
use metamesh_exchange::SubmitError;
use metamesh_protocol::aggregate::RobustAggregate;
use metamesh_protocol::insights::{self, InsightsDocument};
use metamesh_protocol::posterior::Prior;
use metamesh_protocol::wire::RequestFilters;
use metamesh_protocol::{Depth, InsightBody, Pattern};
use metamesh_storage::{Store, StoreError};
use tokio::sync::{broadcast, mpsc, oneshot};

use super::pool::PoolError;
use super::run::{Actor, Call};
use super::views::Weights;
use super::{now_secs, NodeError, Shared};
use crate::api::{
    ApiError, Gauges, ImportOutcome, NodeApi, NodeInfo, PageCursor, PatternPage, PatternView,
    PeerView, Recommendation, ReputationView, Scope, StatsView, SubmittedPattern,
};
use crate::config::Config;
use crate::events::NodeEvent;
use crate::learning;
use crate::metrics::Metrics;

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
    sh: Arc<Shared>,
    cmds: mpsc::Sender<Call>,
}

fn pool_err(what: &str, e: PoolError) -> ApiError {
    match e {
        PoolError::Busy(_) | PoolError::Shed(_) => ApiError::unavailable(format!("{what}: {e}")),
        PoolError::Failed(_) => ApiError::internal(format!("{what}: {e}")),
    }
}

fn schema_error(index: usize, e: metamesh_protocol::SchemaError) -> ApiError {
    ApiError::unprocessable(format!("patterns[{index}]: {e}"), e.field.clone())
}

/// Confidence (P(best)) of an insight record's `optimal_quality_depth`.
pub(crate) fn insight_confidence(body: &InsightBody) -> f64 {
    body.insights
        .get(insights::types::OPTIMAL_QUALITY_DEPTH)
        .map_or(0.0, |i| i.confidence)
}

fn submit_error(e: SubmitError) -> ApiError {
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
    async fn submit(
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

/// Blocking: adoption and effectiveness of a batch against the collective
/// view before it (the view computed once per batch; the believed-best
/// depth once per distinct ATP budget).
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

fn pattern_views(
    found: Vec<(
        metamesh_protocol::SignedRecord,
        metamesh_protocol::PatternBody,
    )>,
) -> Vec<PatternView> {
    found
        .into_iter()
        .map(|(rec, body)| PatternView {
            origin: body.origin.to_string(),
            seq: body.seq,
            hash: rec.content_hash().to_hex(),
            pattern: body.pattern,
        })
        .collect()
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
        // Did each outcome follow the advice of the collective view as it
        // stood before it was recorded? (On the pool: not on the runtime.)
        let w = self.weights().await?;
        let adoption = patterns.clone();
        self.on_pool("adoption", move |sh| {
            record_adoption(&w, &sh.store, &adoption, &sh.metrics)
        })
        .await?;
        let ids: Vec<String> = patterns.iter().map(|p| p.pattern_id.clone()).collect();
        let done = self.submit(patterns).await?;
        let origin = self.sh.peer_id.to_string();
        Ok(done
            .into_iter()
            .zip(ids)
            .map(|(r, pattern_id)| SubmittedPattern {
                origin: origin.clone(),
                seq: r.seq,
                hash: r.hash.to_hex(),
                pattern_id,
            })
            .collect())
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
        Ok(pattern_views(found))
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
            .call(|a| a.promoted_by.clone())
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
                    let s = a.core.standing(&p.peer, now);
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
            let mut out: Vec<ReputationView> = a
                .core
                .reputation()
                .map(|(p, state)| {
                    let s = a.core.standing(p, now);
                    ReputationView {
                        peer_id: p.to_string(),
                        score: s.score,
                        class: s.class.as_str().to_string(),
                        weight: s.weight,
                        counters: state
                            .counters
                            .iter()
                            .map(|(e, n)| (e.as_str().to_string(), *n))
                            .collect(),
                    }
                })
                .collect();
            out.sort_by(|a, b| a.peer_id.cmp(&b.peer_id));
            out
        })
        .await
        .map_err(|e| ApiError::unavailable(e.to_string()))
    }

    async fn stats(&self) -> Result<StatsView, ApiError> {
        if let Some(f) = self.sh.health.fault() {
            return Err(f.unhealthy());
        }
        let (known, connected) = self
            .call(|a| (a.net.peers().len(), a.net.connected_count()))
            .await
            .map_err(|e| ApiError::unavailable(e.to_string()))?;
        let (pattern_count, own_seq, origins, depth_distribution) = self
            .on_pool("stats", |sh| {
                let s = &sh.store;
                (
                    s.pattern_count(),
                    s.own_seq(),
                    s.frontier().len() as u64,
                    s.depth_distribution(),
                )
            })
            .await?;
        Ok(StatsView {
            peer_id: self.sh.peer_id.to_string(),
            pattern_count,
            own_seq,
            origins,
            depth_distribution,
            connected_peers: connected as u64,
            known_peers: known as u64,
            uptime_secs: self.sh.started.elapsed().as_secs_f64(),
            metrics: self.sh.metrics.snapshot(),
        })
    }

    async fn health(&self) -> Result<(), ApiError> {
        // (`/healthz` prefixes "unhealthy: ")
        if let Some(f) = self.sh.health.fault() {
            return Err(ApiError::unavailable(f.describe()));
        }
        self.node_info().await.map(|_| ())
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

    async fn query_patterns_page(
        &self,
        filters: RequestFilters,
        cursor: Option<PageCursor>,
        limit: usize,
    ) -> Result<PatternPage, ApiError> {
        filters
            .validate()
            .map_err(|e| ApiError::bad_request(e.to_string(), "filters"))?;
        let cursor = match cursor {
            None => None,
            Some(c) => Some(metamesh_protocol::wire::Cursor {
                origin: c
                    .origin
                    .parse::<PeerId>()
                    .map_err(|_| ApiError::bad_request("cursor names no valid origin", "cursor"))?,
                seq: c.seq,
            }),
        };
        let (found, next) = self
            .on_pool("querying patterns", move |sh| {
                sh.store.query(&filters, cursor, limit)
            })
            .await?
            .map_err(|e| match e {
                // A cursor naming an origin the store does not hold.
                StoreError::Unsupported(m) => ApiError::bad_request(m, "cursor"),
                e => ApiError::internal(e.to_string()),
            })?;
        Ok(PatternPage {
            patterns: pattern_views(found),
            next_cursor: next.map(|c| {
                PageCursor {
                    origin: c.origin.to_string(),
                    seq: c.seq,
                }
                .to_string()
            }),
        })
    }

    async fn import_patterns(
        &self,
        batch: Vec<(Pattern, [u8; 32])>,
    ) -> Result<ImportOutcome, ApiError> {
        if batch.is_empty() {
            return Ok(ImportOutcome::default());
        }
        let total = batch.len() as u64;
        // Keys held already (or twice in the batch) are duplicates.
        let fresh = self
            .on_pool("importing patterns", move |sh| {
                let mut seen = std::collections::HashSet::new();
                let mut fresh = Vec::with_capacity(batch.len());
                for (p, k) in batch {
                    if seen.insert(k) && !sh.store.has_import_key(&k)? {
                        fresh.push((p, k));
                    }
                }
                Ok::<_, StoreError>(fresh)
            })
            .await?
            .map_err(|e| ApiError::internal(format!("importing patterns: {e}")))?;
        if fresh.is_empty() {
            return Ok(ImportOutcome {
                accepted: 0,
                duplicates: total,
            });
        }
        let (patterns, keys): (Vec<Pattern>, Vec<[u8; 32]>) = fresh.into_iter().unzip();
        let done = self.submit(patterns).await?;
        // The records are durable; now remember their keys (a crash in
        // between can duplicate a pattern on re-import, never lose one).
        let tag = done.first().map(|r| r.seq).unwrap_or(0);
        self.on_pool("importing patterns", move |sh| {
            sh.store.add_import_keys(tag, &keys)
        })
        .await?
        .map_err(|e| ApiError::internal(format!("recording import keys: {e}")))?;
        let accepted = done.len() as u64;
        Ok(ImportOutcome {
            accepted,
            duplicates: total - accepted,
        })
    }

    async fn gauges(&self) -> Result<Gauges, ApiError> {
        let agg = self.collective().await?;
        let p = agg.prob_best(&Prior::default());
        let patterns_stored = self
            .on_pool("gauges", |sh| sh.store.pattern_count())
            .await?;
        Ok(Gauges {
            patterns_stored,
            prob_best: Depth::ALL.iter().copied().zip(p).collect(),
        })
    }
}
