//! The configuration's types and defaults, and typed views of its values.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::str::FromStr;

use libp2p::{Multiaddr, PeerId};
use serde::{Deserialize, Serialize};

use super::validate::parse_dialable;
use super::ConfigError;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Mesh name; topics are `metamesh/<mesh>/...`.
    pub mesh: String,
    /// Listen multiaddrs; empty means `/ip4/0.0.0.0/tcp/0` and `/ip4/0.0.0.0/udp/0/quic-v1`.
    pub listen: Vec<String>,
    /// Bootstrap peers: multiaddrs ending in `/p2p/<PeerId>`.
    pub bootstrap: Vec<String>,
    /// HTTP API socket address; port 0 picks a free port.
    pub api: String,
    /// Extra `Host` names the API answers besides its bound address
    /// (`name` for any port or `name:port`), e.g. behind a proxy.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub api_allowed_hosts: Vec<String>,
    /// Optional separate socket address serving only `GET /metrics`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<String>,
    /// Parent node multiaddr (with `/p2p/<PeerId>`), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    pub sharing: SharingConfig,
    /// When a child promotes its insights to its `parent`.
    pub promotion: PromotionConfig,
    pub limits: LimitsConfig,
    /// How many peers the node keeps connected (the peer manager).
    pub peers: PeersConfig,
    pub acceptance: AcceptanceConfig,
    pub trust: TrustConfig,
    pub store: StoreSection,
    /// The exchange core's record tree over `/metamesh/tree/1`.
    pub tree: TreeSection,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SharingConfig {
    /// Share own patterns and insights with peers at all.
    pub enabled: bool,
    /// Periodic announcement interval.
    pub announce_interval_secs: u64,
    /// Delay after new patterns before announcing (batches bursts).
    pub announce_debounce_ms: u64,
    /// Minimum interval between insight broadcasts.
    pub insight_min_interval_secs: u64,
}

/// Parent/child promotion: a node with a `parent` sends it its signed
/// insight record once its own `optimal_quality_depth` confidence reaches
/// `min_confidence`, and again when the record changes, at most once per
/// `min_interval_secs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PromotionConfig {
    /// Confidence (P(best)) of the local `optimal_quality_depth` insight
    /// needed before promoting (0.5-1).
    pub min_confidence: f64,
    /// Minimum interval between promotions, seconds (1-86400).
    pub min_interval_secs: u64,
}

impl Default for PromotionConfig {
    fn default() -> Self {
        PromotionConfig {
            min_confidence: 0.9,
            min_interval_secs: 60,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    pub max_patterns_per_response: usize,
    pub max_response_bytes: usize,
    pub bytes_per_sec_per_peer: u64,
    pub records_per_sec_per_peer: u32,
    pub record_burst_per_peer: u32,
    pub records_per_origin_per_hour: u32,
    pub max_connections: u32,
    pub max_connections_per_peer: u32,
    pub request_timeout_secs: u64,
}

/// The peer manager (`node/src/network/peers.rs`): below `target`
/// connected peers the node dials peers it discovered; above `max` it
/// prunes down to `max` — never a peer connected for less than
/// `grace_secs`, never the parent; the ones to go first are outside our
/// gossipsub meshes, inbound, lowest scored, newest. Between the two it
/// does nothing (no churn). A pruned peer is refused, while we hold
/// `target`, and a peer that closed on us is not re-dialled, for
/// `reconnect_cooldown_secs`. `limits.max_connections` stays the hard cap.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PeersConfig {
    /// Dial discovered peers while fewer are connected (1-1024).
    pub target: usize,
    /// Prune down to this many when more are connected (target-65535,
    /// at most `limits.max_connections`).
    pub max: usize,
    /// A new connection is safe from pruning this long, seconds (0-3600).
    pub grace_secs: u64,
    /// Seconds a pruned peer is refused and a peer that closed on us is not
    /// re-dialled (0-86400).
    pub reconnect_cooldown_secs: u64,
}

impl Default for PeersConfig {
    fn default() -> Self {
        PeersConfig {
            target: crate::network::DEFAULT_TARGET_PEERS,
            max: crate::network::DEFAULT_MAX_PEERS,
            grace_secs: crate::network::DEFAULT_PEER_GRACE_SECS,
            reconnect_cooldown_secs: crate::network::DEFAULT_RECONNECT_COOLDOWN_SECS,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AcceptanceConfig {
    /// Received patterns below this quality are declined (not stored).
    pub min_quality: f64,
    /// Patterns from peers whose reputation is below this are declined.
    pub min_reputation_patterns: f64,
    /// Insights from peers whose reputation is below this are ignored.
    pub min_reputation_insights: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrustConfig {
    /// Pre-trusted peers (PeerId strings): anchors of trust.
    pub trusted: Vec<String>,
    /// Denied peers: never connected to, their records never stored.
    pub denied: Vec<String>,
    /// Fixed reputation scores by PeerId (overrides the computed score).
    pub fixed: BTreeMap<String, f64>,
}

/// Records pushed over an eager/lazy tree of a few neighbours
/// (`/metamesh/tree/1`, see docs/notes/tree.md) instead of gossipsub's
/// records topic, which stays subscribed for peers without the tree.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TreeSection {
    /// Push records over the tree (on by default; off: records go over
    /// gossipsub's records topic as they did before the tree).
    pub enabled: bool,
}

impl Default for TreeSection {
    fn default() -> Self {
        TreeSection {
            enabled: metamesh_exchange::tree::TreeConfig::default().enabled,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreSection {
    /// sled page cache size in MiB.
    pub cache_mb: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            mesh: "default".to_string(),
            listen: Vec::new(),
            bootstrap: Vec::new(),
            api: "127.0.0.1:0".to_string(),
            api_allowed_hosts: Vec::new(),
            metrics_listen: None,
            parent: None,
            sharing: SharingConfig::default(),
            promotion: PromotionConfig::default(),
            limits: LimitsConfig::default(),
            peers: PeersConfig::default(),
            acceptance: AcceptanceConfig::default(),
            trust: TrustConfig::default(),
            store: StoreSection::default(),
            tree: TreeSection::default(),
        }
    }
}

impl Default for SharingConfig {
    fn default() -> Self {
        SharingConfig {
            enabled: true,
            announce_interval_secs: 10,
            announce_debounce_ms: 300,
            insight_min_interval_secs: 5,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_patterns_per_response: 256,
            max_response_bytes: 1024 * 1024,
            bytes_per_sec_per_peer: 1024 * 1024,
            records_per_sec_per_peer: 500,
            record_burst_per_peer: 2000,
            records_per_origin_per_hour: 20_000,
            max_connections: 128,
            max_connections_per_peer: 2,
            request_timeout_secs: 30,
        }
    }
}

impl Default for AcceptanceConfig {
    fn default() -> Self {
        AcceptanceConfig {
            min_quality: 0.0,
            min_reputation_patterns: -20.0,
            min_reputation_insights: -20.0,
        }
    }
}

impl Default for StoreSection {
    fn default() -> Self {
        StoreSection { cache_mb: 64 }
    }
}

/// Default listen addresses when `listen` is empty.
pub const DEFAULT_LISTEN: [&str; 2] = ["/ip4/0.0.0.0/tcp/0", "/ip4/0.0.0.0/udp/0/quic-v1"];
impl Config {
    /// Listen multiaddrs, the defaults when none are configured. Call after
    /// [`Config::validate`]; invalid entries are skipped.
    pub fn listen_addrs(&self) -> Vec<Multiaddr> {
        if self.listen.is_empty() {
            DEFAULT_LISTEN
                .iter()
                .filter_map(|a| a.parse().ok())
                .collect()
        } else {
            self.listen
                .iter()
                .filter_map(|a| a.trim().parse().ok())
                .collect()
        }
    }

    /// Bootstrap peers as (PeerId, address). Call after [`Config::validate`].
    pub fn bootstrap_peers(&self) -> Vec<(PeerId, Multiaddr)> {
        self.bootstrap
            .iter()
            .filter_map(|a| parse_dialable("bootstrap", a).ok())
            .collect()
    }

    /// The parent as (PeerId, address), if configured and valid.
    pub fn parent_peer(&self) -> Option<(PeerId, Multiaddr)> {
        self.parent
            .as_deref()
            .and_then(|p| parse_dialable("parent", p).ok())
    }

    /// The API socket address (call after [`Config::validate`]).
    pub fn api_addr(&self) -> Result<SocketAddr, ConfigError> {
        SocketAddr::from_str(self.api.trim())
            .map_err(|e| ConfigError::invalid("api", format!("not a socket address ({e})")))
    }

    /// The separate metrics address, if configured.
    pub fn metrics_addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
        self.metrics_listen
            .as_deref()
            .map(|a| {
                SocketAddr::from_str(a.trim()).map_err(|e| {
                    ConfigError::invalid(
                        "metrics_listen",
                        format!("not a socket address like 127.0.0.1:9100 ({e})"),
                    )
                })
            })
            .transpose()
    }

    pub fn trusted_peers(&self) -> Vec<PeerId> {
        self.trust
            .trusted
            .iter()
            .filter_map(|p| p.trim().parse().ok())
            .collect()
    }

    pub fn denied_peers(&self) -> Vec<PeerId> {
        self.trust
            .denied
            .iter()
            .filter_map(|p| p.trim().parse().ok())
            .collect()
    }

    pub fn fixed_scores(&self) -> BTreeMap<PeerId, f64> {
        self.trust
            .fixed
            .iter()
            .filter_map(|(p, s)| Some((p.trim().parse().ok()?, *s)))
            .collect()
    }

    /// sled cache size in bytes.
    pub fn store_cache_bytes(&self) -> u64 {
        self.store.cache_mb.saturating_mul(1024 * 1024)
    }

    /// The configuration as TOML (all keys, defaults included).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }
}
