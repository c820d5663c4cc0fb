//! Prometheus metrics (`GET /metrics`) and a plain snapshot of the same
//! numbers (`MetricsSnapshot`, embedded in `GET /v1/stats`).
//!
//! Names (counters get the `_total` suffix from the text encoder):
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `metamesh_patterns_recorded_total` | counter | |
//! | `metamesh_patterns_shared_total` | counter | |
//! | `metamesh_patterns_received_total` | counter | |
//! | `metamesh_patterns_accepted_total` | counter | |
//! | `metamesh_patterns_rejected_total` | counter | `reason` |
//! | `metamesh_requests_served_total` | counter | |
//! | `metamesh_bytes_sent_total` | counter | |
//! | `metamesh_bytes_received_total` | counter | |
//! | `metamesh_peers` | gauge | |
//! | `metamesh_reputation_peers` | gauge | `class` |
//! | `metamesh_recommendations_total` | counter | `followed` (`true`/`false`) |
//! | `metamesh_outcome_quality_sum_total` | counter (f64) | `advice` (`followed`/`explored`) |
//! | `metamesh_outcome_quality_count_total` | counter | `advice` |
//! | `metamesh_patterns_stored` | gauge | |
//! | `metamesh_best_depth_confidence` | gauge (f64) | `depth` |
//!
//! The two gauges are set when `/metrics` is scraped (from
//! `NodeApi::gauges`): patterns in the store, and for every depth the
//! collective posterior probability that it is the best one (the best depth
//! is the one with the highest value).
//!
//! Adoption rate = `recommendations_total{followed="true"}` / all;
//! effectiveness = mean outcome quality when advice was followed vs explored.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};

/// Distinct label values kept per labelled metric; further values are
/// counted under `other` so a hostile peer cannot grow the registry.
pub const MAX_LABEL_VALUES: usize = 32;
/// Longest label value kept (longer ones are cut).
pub const MAX_LABEL_LEN: usize = 48;
const OTHER: &str = "other";

type Labels = Vec<(String, String)>;

/// The node's metrics. Cheap to clone (shared inside); `Send + Sync`.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    recorded: Counter,
    shared: Counter,
    received: Counter,
    accepted: Counter,
    rejected: Family<Labels, Counter>,
    requests_served: Counter,
    promotions_received: Counter,
    promotions_rejected: Counter,
    promotions_sent: Counter,
    bytes_sent: Counter,
    bytes_received: Counter,
    peers: Gauge,
    reputation_peers: Family<Labels, Gauge>,
    recommendations: Family<Labels, Counter>,
    outcome_quality_sum: Family<Labels, Counter<f64, AtomicU64>>,
    outcome_quality_count: Family<Labels, Counter>,
    patterns_stored: Gauge,
    best_depth_confidence: Family<Labels, Gauge<f64, AtomicU64>>,
    /// Mirrors of the labelled values (prometheus-client 0.23 families cannot
    /// be iterated), bounded by [`MAX_LABEL_VALUES`].
    rejected_by_reason: Mutex<BTreeMap<String, u64>>,
    reputation_classes: Mutex<BTreeMap<String, i64>>,
}

/// The same numbers as plain data, for `GET /v1/stats`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MetricsSnapshot {
    pub patterns_recorded: u64,
    pub patterns_shared: u64,
    pub patterns_received: u64,
    pub patterns_accepted: u64,
    pub patterns_rejected: u64,
    pub rejected_by_reason: BTreeMap<String, u64>,
    pub requests_served: u64,
    /// Children's insight records accepted as promotions (parent side).
    #[serde(default)]
    pub promotions_received: u64,
    /// Promotions refused (bad signature, wrong origin, schema, policy).
    #[serde(default)]
    pub promotions_rejected: u64,
    /// Our insight records a parent accepted (child side).
    #[serde(default)]
    pub promotions_sent: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub peers: i64,
    pub reputation_classes: BTreeMap<String, i64>,
    pub recommendations_followed: u64,
    pub recommendations_explored: u64,
    /// followed / (followed + explored); `None` before any outcome.
    pub adoption_rate: Option<f64>,
    pub outcome_quality_followed_sum: f64,
    pub outcome_quality_followed_count: u64,
    pub outcome_quality_explored_sum: f64,
    pub outcome_quality_explored_count: u64,
    /// Mean outcome quality when the advice was followed; `None` when no sample.
    pub effectiveness_followed: Option<f64>,
    /// Mean outcome quality when the node explored instead.
    pub effectiveness_explored: Option<f64>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("snapshot", &self.snapshot())
            .finish()
    }
}

fn label(key: &str, value: &str) -> Labels {
    vec![(key.to_string(), value.to_string())]
}

fn advice_label(followed: bool) -> Labels {
    label("advice", if followed { "followed" } else { "explored" })
}

fn followed_label(followed: bool) -> Labels {
    label("followed", if followed { "true" } else { "false" })
}

/// A label value safe for the text format and bounded in length.
fn clean_label(v: &str) -> String {
    let cleaned: String = v
        .chars()
        .filter(|c| !c.is_control() && *c != '"' && *c != '\\')
        .take(MAX_LABEL_LEN)
        .collect();
    if cleaned.is_empty() {
        "unknown".to_string()
    } else {
        cleaned
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let recorded = Counter::default();
        let shared = Counter::default();
        let received = Counter::default();
        let accepted = Counter::default();
        let rejected = Family::<Labels, Counter>::default();
        let requests_served = Counter::default();
        let promotions_received = Counter::default();
        let promotions_rejected = Counter::default();
        let promotions_sent = Counter::default();
        let bytes_sent = Counter::default();
        let bytes_received = Counter::default();
        let peers = Gauge::default();
        let reputation_peers = Family::<Labels, Gauge>::default();
        let recommendations = Family::<Labels, Counter>::default();
        let outcome_quality_sum = Family::<Labels, Counter<f64, AtomicU64>>::default();
        let outcome_quality_count = Family::<Labels, Counter>::default();
        let patterns_stored = Gauge::default();
        let best_depth_confidence = Family::<Labels, Gauge<f64, AtomicU64>>::default();

        registry.register(
            "metamesh_patterns_recorded",
            "Patterns recorded by this node",
            recorded.clone(),
        );
        registry.register(
            "metamesh_patterns_shared",
            "Patterns sent to peers (announcements and responses)",
            shared.clone(),
        );
        registry.register(
            "metamesh_patterns_received",
            "Patterns received from peers",
            received.clone(),
        );
        registry.register(
            "metamesh_patterns_accepted",
            "Received patterns that passed validation and were stored",
            accepted.clone(),
        );
        registry.register(
            "metamesh_patterns_rejected",
            "Received patterns rejected, by reason",
            rejected.clone(),
        );
        registry.register(
            "metamesh_requests_served",
            "Pattern requests answered",
            requests_served.clone(),
        );
        registry.register(
            "metamesh_promotions_received",
            "Insight records promoted to this node by its children and accepted",
            promotions_received.clone(),
        );
        registry.register(
            "metamesh_promotions_rejected",
            "Promoted insight records refused (signature, origin, schema, policy)",
            promotions_rejected.clone(),
        );
        registry.register(
            "metamesh_promotions_sent",
            "Own insight records promoted to the parent and accepted by it",
            promotions_sent.clone(),
        );
        registry.register(
            "metamesh_bytes_sent",
            "Protocol bytes sent",
            bytes_sent.clone(),
        );
        registry.register(
            "metamesh_bytes_received",
            "Protocol bytes received",
            bytes_received.clone(),
        );
        registry.register("metamesh_peers", "Connected peers", peers.clone());
        registry.register(
            "metamesh_reputation_peers",
            "Known peers by reputation class",
            reputation_peers.clone(),
        );
        registry.register(
            "metamesh_recommendations",
            "Outcomes recorded, by whether the node followed the recommendation",
            recommendations.clone(),
        );
        registry.register(
            "metamesh_outcome_quality_sum",
            "Sum of outcome quality, by advice followed or explored",
            outcome_quality_sum.clone(),
        );
        registry.register(
            "metamesh_outcome_quality_count",
            "Number of outcomes, by advice followed or explored",
            outcome_quality_count.clone(),
        );
        registry.register(
            "metamesh_patterns_stored",
            "Patterns in the store (own and received)",
            patterns_stored.clone(),
        );
        registry.register(
            "metamesh_best_depth_confidence",
            "Collective posterior probability that each depth is the best",
            best_depth_confidence.clone(),
        );

        let m = Metrics {
            inner: Arc::new(Inner {
                registry,
                recorded,
                shared,
                received,
                accepted,
                rejected,
                requests_served,
                promotions_received,
                promotions_rejected,
                promotions_sent,
                bytes_sent,
                bytes_received,
                peers,
                reputation_peers,
                recommendations,
                outcome_quality_sum,
                outcome_quality_count,
                patterns_stored,
                best_depth_confidence,
                rejected_by_reason: Mutex::new(BTreeMap::new()),
                reputation_classes: Mutex::new(BTreeMap::new()),
            }),
        };
        // Every class present from the start (at 0), so dashboards see the series.
        let classes: Vec<(&str, usize)> = metamesh_protocol::reputation::ReputationClass::ALL
            .iter()
            .map(|c| (c.as_str(), 0))
            .collect();
        m.set_reputation_classes(&classes);
        m
    }

    pub fn pattern_recorded(&self) {
        self.inner.recorded.inc();
    }

    pub fn pattern_shared(&self, n: u64) {
        self.inner.shared.inc_by(n);
    }

    pub fn pattern_received(&self) {
        self.inner.received.inc();
    }

    pub fn pattern_accepted(&self) {
        self.inner.accepted.inc();
    }

    /// Count a rejection under `reason` (a short category such as
    /// `bad_signature`; at most [`MAX_LABEL_VALUES`] distinct reasons, the
    /// rest count as `other`).
    pub fn pattern_rejected(&self, reason: &str) {
        let reason = clean_label(reason);
        let key = {
            let mut map = self
                .inner
                .rejected_by_reason
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let key = if map.contains_key(&reason) || map.len() < MAX_LABEL_VALUES - 1 {
                reason
            } else {
                OTHER.to_string()
            };
            *map.entry(key.clone()).or_insert(0) += 1;
            key
        };
        self.inner
            .rejected
            .get_or_create(&label("reason", &key))
            .inc();
    }

    pub fn request_served(&self) {
        self.inner.requests_served.inc();
    }

    pub fn promotion_received(&self) {
        self.inner.promotions_received.inc();
    }

    pub fn promotion_rejected(&self) {
        self.inner.promotions_rejected.inc();
    }

    pub fn promotion_sent(&self) {
        self.inner.promotions_sent.inc();
    }

    pub fn bytes_sent(&self, n: u64) {
        self.inner.bytes_sent.inc_by(n);
    }

    pub fn bytes_received(&self, n: u64) {
        self.inner.bytes_received.inc_by(n);
    }

    pub fn set_peers(&self, n: usize) {
        self.inner.peers.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Replace the per-class peer counts. Classes seen before but absent now
    /// are set to 0.
    pub fn set_reputation_classes(&self, classes: &[(&str, usize)]) {
        let mut map = self
            .inner
            .reputation_classes
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for v in map.values_mut() {
            *v = 0;
        }
        for (class, count) in classes {
            let class = clean_label(class);
            if !map.contains_key(&class) && map.len() >= MAX_LABEL_VALUES {
                continue;
            }
            map.insert(class, i64::try_from(*count).unwrap_or(i64::MAX));
        }
        for (class, count) in map.iter() {
            self.inner
                .reputation_peers
                .get_or_create(&label("class", class))
                .set(*count);
        }
    }

    /// One recorded outcome: did the node follow the recommendation?
    pub fn recommendation_followed(&self, followed: bool) {
        self.inner
            .recommendations
            .get_or_create(&followed_label(followed))
            .inc();
    }

    /// Outcome quality of a recorded pattern, split by whether the node had
    /// followed the advice (effectiveness). Non-finite values are ignored.
    pub fn outcome_quality(&self, followed_advice: bool, quality: f64) {
        if !quality.is_finite() {
            return;
        }
        let l = advice_label(followed_advice);
        self.inner
            .outcome_quality_sum
            .get_or_create(&l)
            .inc_by(quality);
        self.inner.outcome_quality_count.get_or_create(&l).inc();
    }

    /// `metamesh_patterns_stored`.
    pub fn set_patterns_stored(&self, n: u64) {
        self.inner
            .patterns_stored
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// `metamesh_best_depth_confidence{depth}`: P(best) per depth (the
    /// label set is bounded: depths only). Non-finite values are skipped.
    pub fn set_prob_best(&self, prob_best: &[(metamesh_protocol::Depth, f64)]) {
        for (depth, p) in prob_best {
            if p.is_finite() {
                self.inner
                    .best_depth_confidence
                    .get_or_create(&label("depth", depth.as_str()))
                    .set(*p);
            }
        }
    }

    /// Prometheus text exposition format (version 0.0.4).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.inner.registry);
        out
    }

    pub fn snapshot(&self) -> MetricsSnapshot {
        let i = &self.inner;
        let rejected_by_reason = i
            .rejected_by_reason
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let reputation_classes = i
            .reputation_classes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let followed = i.recommendations.get_or_create(&followed_label(true)).get();
        let explored = i
            .recommendations
            .get_or_create(&followed_label(false))
            .get();
        let fs = i
            .outcome_quality_sum
            .get_or_create(&advice_label(true))
            .get();
        let fc = i
            .outcome_quality_count
            .get_or_create(&advice_label(true))
            .get();
        let es = i
            .outcome_quality_sum
            .get_or_create(&advice_label(false))
            .get();
        let ec = i
            .outcome_quality_count
            .get_or_create(&advice_label(false))
            .get();
        let mean = |s: f64, c: u64| (c > 0).then(|| s / c as f64);
        MetricsSnapshot {
            patterns_recorded: i.recorded.get(),
            patterns_shared: i.shared.get(),
            patterns_received: i.received.get(),
            patterns_accepted: i.accepted.get(),
            patterns_rejected: rejected_by_reason.values().sum(),
            rejected_by_reason,
            requests_served: i.requests_served.get(),
            promotions_received: i.promotions_received.get(),
            promotions_rejected: i.promotions_rejected.get(),
            promotions_sent: i.promotions_sent.get(),
            bytes_sent: i.bytes_sent.get(),
            bytes_received: i.bytes_received.get(),
            peers: i.peers.get(),
            reputation_classes,
            recommendations_followed: followed,
            recommendations_explored: explored,
            adoption_rate: mean(followed as f64, followed + explored),
            outcome_quality_followed_sum: fs,
            outcome_quality_followed_count: fc,
            outcome_quality_explored_sum: es,
            outcome_quality_explored_count: ec,
            effectiveness_followed: mean(fs, fc),
            effectiveness_explored: mean(es, ec),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn counters_appear_in_text_and_snapshot() {
        let m = Metrics::new();
        m.pattern_recorded();
        m.pattern_recorded();
        m.pattern_shared(5);
        m.pattern_received();
        m.pattern_accepted();
        m.pattern_rejected("bad_signature");
        m.pattern_rejected("bad_signature");
        m.pattern_rejected("schema");
        m.request_served();
        m.bytes_sent(100);
        m.bytes_received(40);
        m.set_peers(3);
        m.set_reputation_classes(&[("trusted", 1), ("neutral", 2)]);
        m.recommendation_followed(true);
        m.recommendation_followed(true);
        m.recommendation_followed(false);
        m.outcome_quality(true, 0.9);
        m.outcome_quality(true, 0.7);
        m.outcome_quality(false, 0.4);
        m.outcome_quality(false, f64::NAN);

        let text = m.encode();
        for needle in [
            "metamesh_patterns_recorded_total 2",
            "metamesh_patterns_shared_total 5",
            "metamesh_patterns_received_total 1",
            "metamesh_patterns_accepted_total 1",
            "metamesh_patterns_rejected_total{reason=\"bad_signature\"} 2",
            "metamesh_patterns_rejected_total{reason=\"schema\"} 1",
            "metamesh_requests_served_total 1",
            "metamesh_bytes_sent_total 100",
            "metamesh_bytes_received_total 40",
            "metamesh_peers 3",
            "metamesh_reputation_peers{class=\"neutral\"} 2",
            "metamesh_recommendations_total{followed=\"true\"} 2",
            "metamesh_outcome_quality_count_total{advice=\"followed\"} 2",
            "# EOF",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }

        let s = m.snapshot();
        assert_eq!(s.patterns_recorded, 2);
        assert_eq!(s.patterns_rejected, 3);
        assert_eq!(s.rejected_by_reason["bad_signature"], 2);
        assert_eq!(s.peers, 3);
        assert_eq!(s.reputation_classes["trusted"], 1);
        assert_eq!(s.recommendations_followed, 2);
        assert_eq!(s.recommendations_explored, 1);
        assert!((s.adoption_rate.unwrap() - 2.0 / 3.0).abs() < 1e-12);
        assert!((s.effectiveness_followed.unwrap() - 0.8).abs() < 1e-12);
        assert!((s.effectiveness_explored.unwrap() - 0.4).abs() < 1e-12);
        assert_eq!(s.outcome_quality_explored_count, 1);
    }

    #[test]
    fn reputation_classes_reset_when_absent() {
        let m = Metrics::new();
        let s = m.snapshot();
        assert_eq!(s.reputation_classes.len(), 5, "all classes present at 0");
        assert_eq!(s.reputation_classes["neutral"], 0);
        assert!(m
            .encode()
            .contains("metamesh_reputation_peers{class=\"untrusted\"} 0"));
        m.set_reputation_classes(&[("good", 4)]);
        m.set_reputation_classes(&[("poor", 1)]);
        let s = m.snapshot();
        assert_eq!(s.reputation_classes["good"], 0);
        assert_eq!(s.reputation_classes["poor"], 1);
    }

    #[test]
    fn rejection_reasons_are_bounded_and_cleaned() {
        let m = Metrics::new();
        for i in 0..200 {
            m.pattern_rejected(&format!("reason-{i}"));
        }
        m.pattern_rejected("with \"quotes\"\n");
        let s = m.snapshot();
        assert!(s.rejected_by_reason.len() <= MAX_LABEL_VALUES);
        assert_eq!(s.patterns_rejected, 201);
        assert!(s.rejected_by_reason[OTHER] > 0);
        assert!(!m.encode().contains("\\\""));
    }

    #[test]
    fn gauges_for_stored_patterns_and_belief() {
        use metamesh_protocol::Depth;
        let m = Metrics::new();
        m.set_patterns_stored(10_000);
        m.set_prob_best(&[
            (Depth::Deep, 0.75),
            (Depth::Light, 0.25),
            (Depth::Minimal, f64::NAN),
        ]);
        m.set_prob_best(&[(Depth::Deep, 0.8)]);
        let text = m.encode();
        for needle in [
            "metamesh_patterns_stored 10000",
            "metamesh_best_depth_confidence{depth=\"deep\"} 0.8",
            "metamesh_best_depth_confidence{depth=\"light\"} 0.25",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
        assert!(!text.contains("depth=\"minimal\""), "{text}");
    }

    #[test]
    fn empty_snapshot_has_no_rates() {
        let s = Metrics::new().snapshot();
        assert_eq!(s.adoption_rate, None);
        assert_eq!(s.effectiveness_followed, None);
    }
}
