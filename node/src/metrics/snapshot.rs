//! [`MetricsSnapshot`]: the metrics as plain data (`GET /v1/stats`).

use std::collections::BTreeMap;
use std::sync::PoisonError;

use serde::{Deserialize, Serialize};

use super::{advice_label, followed_label, Metrics};

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
impl Metrics {
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
