//! The node's configuration as the exchange core's [`metamesh_exchange::Config`].

use metamesh_exchange::Config as CoreConfig;
use metamesh_protocol::reputation::Trust;
use metamesh_protocol::wire::MAX_RECORDS_PER_RESPONSE;

use crate::config::Config;

/// Map the node's settings onto the core's (what the node does not set
/// keeps the core's documented default).
pub fn core_config(cfg: &Config) -> CoreConfig {
    let d = CoreConfig::default();
    let lim = &cfg.limits;
    let mut trust = std::collections::BTreeMap::new();
    for (p, s) in cfg.fixed_scores() {
        trust.insert(p, Trust::Fixed(s));
    }
    for p in cfg.trusted_peers() {
        trust.insert(p, Trust::Trusted);
    }
    for p in cfg.denied_peers() {
        trust.insert(p, Trust::Denied);
    }
    let parent = cfg.parent_peer().map(|(p, _)| p);
    // The parent is an anchor of this node's view (DESIGN §5).
    if let Some(p) = parent {
        trust.entry(p).or_insert(Trust::Trusted);
    }
    CoreConfig {
        sharing: cfg.sharing.enabled,
        page_records: (lim
            .max_patterns_per_response
            .clamp(1, MAX_RECORDS_PER_RESPONSE)) as u32,
        page_bytes: (lim.max_response_bytes as u64).max(64 * 1024),
        request_timeout_secs: lim.request_timeout_secs.max(1) as f64,
        announce_interval_secs: (cfg.sharing.announce_debounce_ms as f64 / 1000.0)
            .clamp(0.05, d.announce_interval_secs),
        announce_idle_secs: cfg.sharing.announce_interval_secs.max(1) as f64,
        insight_interval_secs: cfg.sharing.insight_min_interval_secs.max(1) as f64,
        records_per_origin_per_hour: lim.records_per_origin_per_hour,
        serve_bytes_per_sec: lim.bytes_per_sec_per_peer as f64,
        min_quality: cfg.acceptance.min_quality,
        min_reputation_patterns: cfg.acceptance.min_reputation_patterns,
        min_reputation_insights: cfg.acceptance.min_reputation_insights,
        trust,
        parent,
        // records over the tree (`[tree] enabled`); its rules keep the core's defaults
        tree: metamesh_exchange::tree::TreeConfig {
            enabled: cfg.tree.enabled,
            ..d.tree.clone()
        },
        ..d
    }
}
