//! Local HTTP API (DESIGN §5) — the node interface and its view types.
//!
//! The HTTP layer ([`router`], [`serve`]) is generic over [`NodeApi`], which
//! the running node's handle implements.

use std::future::Future;

use metamesh_protocol::wire::RequestFilters;
use metamesh_protocol::{Depth, InsightsDocument, Pattern};
use serde::{Deserialize, Serialize};

pub use crate::cli::Scope;
use crate::events::NodeEvent;
use crate::metrics::{Metrics, MetricsSnapshot};

/// What the HTTP layer needs from a node.
pub trait NodeApi: Clone + Send + Sync + 'static {
    /// Validate, sign as this node, store durably (flushed) — Ok only after durable.
    fn submit_patterns(
        &self,
        patterns: Vec<Pattern>,
    ) -> impl Future<Output = Result<Vec<SubmittedPattern>, ApiError>> + Send;
    fn query_patterns(
        &self,
        filters: RequestFilters,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<PatternView>, ApiError>> + Send;
    fn insights(
        &self,
        scope: Scope,
    ) -> impl Future<Output = Result<InsightsDocument, ApiError>> + Send;
    fn recommend(
        &self,
        atp: f64,
        strategy: String,
    ) -> impl Future<Output = Result<Recommendation, ApiError>> + Send;
    fn peers(&self) -> impl Future<Output = Result<Vec<PeerView>, ApiError>> + Send;
    fn reputation(&self) -> impl Future<Output = Result<Vec<ReputationView>, ApiError>> + Send;
    fn stats(&self) -> impl Future<Output = Result<StatsView, ApiError>> + Send;
    fn node_info(&self) -> impl Future<Output = Result<NodeInfo, ApiError>> + Send;
    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<NodeEvent>;
    /// Whose evidence shapes the collective insights (`GET /v1/knowledge`).
    /// Optional: the default answers 501.
    fn knowledge_transfer(
        &self,
    ) -> impl Future<Output = Result<KnowledgeTransfer, ApiError>> + Send {
        async {
            Err(ApiError::new(
                501,
                "this node does not report knowledge transfer",
                None,
            ))
        }
    }
    fn metrics(&self) -> &Metrics;

    /// One page of `GET /v1/patterns`: at most `limit` patterns after
    /// `cursor`, and the cursor of the next page when more may match.
    /// The default pages only from the start (a cursor is 501).
    fn query_patterns_page(
        &self,
        filters: RequestFilters,
        cursor: Option<PageCursor>,
        limit: usize,
    ) -> impl Future<Output = Result<PatternPage, ApiError>> + Send {
        async move {
            if cursor.is_some() {
                return Err(ApiError::new(
                    501,
                    "this node does not page patterns",
                    Some("cursor".into()),
                ));
            }
            Ok(PatternPage {
                patterns: self.query_patterns(filters, limit).await?,
                next_cursor: None,
            })
        }
    }

    /// Import validated patterns with their import keys (`POST /v1/import`):
    /// sign and store those whose key is not held yet, durably, before
    /// answering; count the rest as duplicates. The default answers 501.
    fn import_patterns(
        &self,
        batch: Vec<(Pattern, [u8; 32])>,
    ) -> impl Future<Output = Result<ImportOutcome, ApiError>> + Send {
        let _ = batch;
        async {
            Err(ApiError::new(
                501,
                "this node does not import through its API",
                None,
            ))
        }
    }

    /// Values of the `/metrics` gauges computed on scrape. The default takes
    /// the pattern count from [`NodeApi::stats`] and reports no belief.
    fn gauges(&self) -> impl Future<Output = Result<Gauges, ApiError>> + Send {
        async {
            Ok(Gauges {
                patterns_stored: self.stats().await?.pattern_count,
                prob_best: Vec::new(),
            })
        }
    }

    /// `GET /healthz`: Ok while the node can serve. The default asks
    /// [`NodeApi::node_info`].
    fn health(&self) -> impl Future<Output = Result<(), ApiError>> + Send {
        async { self.node_info().await.map(|_| ()) }
    }
}

/// Resume point of `GET /v1/patterns`: the last (origin, seq) returned.
/// Written as `<origin>:<seq>` (opaque to clients).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageCursor {
    pub origin: String,
    pub seq: u64,
}

impl std::fmt::Display for PageCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.origin, self.seq)
    }
}

impl std::str::FromStr for PageCursor {
    type Err = ApiError;
    fn from_str(s: &str) -> Result<Self, ApiError> {
        let bad =
            || ApiError::bad_request("cursor must be a next_cursor this API returned", "cursor");
        let (origin, seq) = s.trim().rsplit_once(':').ok_or_else(bad)?;
        let ok = |c: char| c.is_ascii_alphanumeric();
        if origin.is_empty() || origin.len() > 128 || !origin.chars().all(ok) {
            return Err(bad());
        }
        Ok(PageCursor {
            origin: origin.to_string(),
            seq: seq.parse().map_err(|_| bad())?,
        })
    }
}

/// One page of patterns and where the next one starts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PatternPage {
    pub patterns: Vec<PatternView>,
    /// Pass as `cursor` for the next page; `null`: no more patterns.
    pub next_cursor: Option<String>,
}

/// What one import batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportOutcome {
    /// Patterns signed and stored.
    pub accepted: u64,
    /// Patterns whose import key was held already (not stored again).
    pub duplicates: u64,
}

/// Gauges computed when `/metrics` is scraped.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Gauges {
    /// `metamesh_patterns_stored`.
    pub patterns_stored: u64,
    /// `metamesh_best_depth_confidence{depth}`: the collective P(best) of each depth.
    pub prob_best: Vec<(Depth, f64)>,
}

/// An API error: HTTP status plus `{"error": "...", "field": "..."}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error, utoipa::ToSchema)]
#[error("{error}")]
pub struct ApiError {
    #[serde(skip)]
    pub status: u16,
    pub error: String,
    #[serde(default)]
    pub field: Option<String>,
}

impl ApiError {
    pub fn new(status: u16, error: impl Into<String>, field: Option<String>) -> Self {
        ApiError {
            status,
            error: error.into(),
            field,
        }
    }
    /// 400 naming the field.
    pub fn bad_request(error: impl Into<String>, field: impl Into<String>) -> Self {
        Self::new(400, error, Some(field.into()))
    }
    /// 422: well-formed but invalid, naming the field.
    pub fn unprocessable(error: impl Into<String>, field: impl Into<String>) -> Self {
        Self::new(422, error, Some(field.into()))
    }
    pub fn not_found(error: impl Into<String>) -> Self {
        Self::new(404, error, None)
    }
    /// 503: the node cannot answer now (shutting down, store busy).
    pub fn unavailable(error: impl Into<String>) -> Self {
        Self::new(503, error, None)
    }
    pub fn internal(error: impl Into<String>) -> Self {
        Self::new(500, error, None)
    }
}

/// A pattern accepted by `POST /v1/patterns`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SubmittedPattern {
    pub origin: String,
    pub seq: u64,
    /// Content hash of the signed record, hex.
    pub hash: String,
    pub pattern_id: String,
}

/// A stored pattern as `GET /v1/patterns` returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PatternView {
    pub origin: String,
    pub seq: u64,
    pub hash: String,
    #[schema(value_type = openapi::PatternSchema)]
    pub pattern: Pattern,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Recommendation {
    #[schema(value_type = openapi::DepthSchema)]
    pub depth: Depth,
    pub strategy: String,
    /// Posterior probability that `depth` is best (see protocol::posterior).
    pub confidence: f64,
    pub atp: f64,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PeerView {
    pub peer_id: String,
    pub addrs: Vec<String>,
    pub connected: bool,
    pub reputation: f64,
    pub class: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReputationView {
    pub peer_id: String,
    pub score: f64,
    pub class: String,
    pub weight: f64,
    /// Event counters by name (valid patterns, invalid signatures, ...).
    pub counters: std::collections::BTreeMap<String, u64>,
}

/// Counters for `GET /v1/stats`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StatsView {
    pub peer_id: String,
    pub pattern_count: u64,
    pub own_seq: u64,
    pub origins: u64,
    #[schema(value_type = std::collections::BTreeMap<String, u64>)]
    pub depth_distribution: std::collections::BTreeMap<Depth, u64>,
    pub connected_peers: u64,
    pub known_peers: u64,
    pub uptime_secs: f64,
    pub metrics: MetricsSnapshot,
}

/// One origin whose evidence the collective answer uses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Contributor {
    pub peer_id: String,
    /// Reputation learning weight used.
    pub weight: f64,
    pub patterns: u64,
    /// This node or an operator-trusted peer.
    pub anchor: bool,
    /// weight × patterns as a fraction of all contributors'.
    pub share: f64,
}

/// An origin excluded from the collective answer as inconsistent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ExcludedOrigin {
    pub peer_id: String,
    /// A depth where its reports disagreed with the consensus.
    #[schema(value_type = openapi::DepthSchema)]
    pub depth: Depth,
    /// Distance from the reference in standard errors (for `volume`: its
    /// count ÷ the median count).
    pub z: f64,
    /// What it disagreed with: `anchor` (this node's and trusted peers'
    /// evidence), `majority` (the weighted median) or `volume` (flooding).
    pub reason: String,
}

/// The knowledge-transfer report (DESIGN §7).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct KnowledgeTransfer {
    /// Patterns behind the collective answer (kept origins).
    pub pattern_count: u64,
    pub contributors: Vec<Contributor>,
    pub excluded: Vec<ExcludedOrigin>,
    /// Parent/child: the parent's insight record this node inherited (a
    /// node started with `parent`), if held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<HeldInsight>,
    /// Parent/child: children that promoted their insight records to this
    /// node (since it started), with the record held for each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub promoted_children: Vec<HeldInsight>,
}

/// A peer's signed insight record as held by this node.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HeldInsight {
    pub peer_id: String,
    pub seq: u64,
    /// Patterns behind the record (the peer's own statistics).
    pub patterns: u64,
    #[schema(value_type = Option<openapi::DepthSchema>)]
    pub optimal_quality_depth: Option<metamesh_protocol::Depth>,
    /// P(best) of `optimal_quality_depth`.
    pub confidence: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NodeInfo {
    pub peer_id: String,
    pub listen_addrs: Vec<String>,
    pub mesh: String,
    pub api_addr: Option<String>,
    pub version: String,
}

mod guard;
mod http;
pub mod openapi;
mod parse;
mod patterns;
mod server;
mod sse;
mod transfer;
pub use guard::HostPolicy;
pub use http::{
    router, router_with_limits, ApiLimits, BODY_READ_TIMEOUT, DEFAULT_QUERY_COUNT,
    HEADER_READ_TIMEOUT, MAX_BODY_BYTES, MAX_CONCURRENT_REQUESTS, MAX_CONNECTIONS,
    MAX_EVENT_STREAMS, MAX_PATTERNS_PER_POST, MAX_QUERY_COUNT, OPENMETRICS_CONTENT_TYPE,
    PROMETHEUS_CONTENT_TYPE, REQUEST_TIMEOUT, ROUTES,
};
pub use parse::{parse_pattern_body, parse_pattern_query, parse_recommendation_query, parse_scope};
pub use server::{serve, serve_metrics, ApiListener, ApiServer, ServeError};
pub use sse::EVENT_REPLAY;
pub use transfer::{
    ImportLineError, ImportReport, MAX_IMPORTS, MAX_IMPORT_BYTES, MAX_IMPORT_LINES, MAX_LINE_BYTES,
};
