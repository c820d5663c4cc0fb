//! `impl NodeApi for Node`: what the HTTP API (and `swarm`, and tests)
//! ask of a running node, answered by the actor (through [`Node::call`])
//! or by store reads on the pool.

use std::collections::HashMap;

use libp2p::PeerId;
use metamesh_protocol::insights::{self, InsightsDocument};
use metamesh_protocol::posterior::Prior;
use metamesh_protocol::wire::RequestFilters;
use metamesh_protocol::{Depth, InsightBody, Pattern};
use metamesh_storage::{Store, StoreError};
use tokio::sync::broadcast;

use super::handle::Node;
use super::now_secs;
use super::views::Weights;
use crate::api::{
    ApiError, Gauges, ImportOutcome, NodeApi, NodeInfo, PageCursor, PatternPage, PatternView,
    PeerView, Recommendation, ReputationView, Scope, StatsView, SubmittedPattern,
};
use crate::events::NodeEvent;
use crate::learning;
use crate::metrics::Metrics;

fn schema_error(index: usize, e: metamesh_protocol::SchemaError) -> ApiError {
    ApiError::unprocessable(format!("patterns[{index}]: {e}"), e.field.clone())
}

/// Confidence (P(best)) of an insight record's `optimal_quality_depth`.
pub(crate) fn insight_confidence(body: &InsightBody) -> f64 {
    body.insights
        .get(insights::types::OPTIMAL_QUALITY_DEPTH)
        .map_or(0.0, |i| i.confidence)
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
