//! The OpenAPI 3.1 document of the API (`GET /v1/openapi.json`), generated
//! with utoipa from the view types in `api.rs`. Types of other crates
//! (`Pattern`, `Depth`, `InsightsDocument`) are described by the mirror
//! schemas below; tests check the mirrors against the real types' JSON.
#![allow(dead_code)] // the `#[utoipa::path]` stubs are never called

use std::sync::LazyLock;

use serde::Serialize;
use utoipa::{OpenApi, ToSchema};

use super::transfer::{ImportLineError, ImportReport};
use super::{
    ApiError, Contributor, ExcludedOrigin, HeldInsight, KnowledgeTransfer, NodeInfo, PatternPage,
    PatternView, PeerView, Recommendation, ReputationView, StatsView, SubmittedPattern,
};
use crate::metrics::MetricsSnapshot;

/// A verification depth (any case is accepted on input).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(as = Depth)]
pub enum DepthSchema {
    Minimal,
    Light,
    Standard,
    Deep,
    Thorough,
}

/// `scope` of `GET /v1/insights` (any case is accepted).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(as = Scope)]
pub enum ScopeSchema {
    Local,
    Collective,
}

/// `format` of `POST /v1/import` (any case is accepted).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(as = ImportFormat)]
pub enum ImportFormatSchema {
    Unified,
    Thor,
    Legion,
}

/// `strategy` of `GET /v1/recommendation` (any case is accepted).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(as = Strategy)]
pub enum StrategySchema {
    Legion,
    Thor,
    Posterior,
}

/// A pattern in the unified schema (seed 004). On input only `depth_used`,
/// `quality_achieved`, `success`, `atp_before` and `atp_after` are required.
#[derive(Serialize, ToSchema)]
#[schema(as = Pattern)]
pub struct PatternSchema {
    #[schema(max_length = 256)]
    pattern_id: Option<String>,
    #[schema(max_length = 256)]
    node_id: Option<String>,
    /// Unix seconds; at most 300 s in the future.
    #[schema(minimum = 0.0)]
    timestamp: Option<f64>,
    platform: Option<String>,
    depth_used: DepthSchema,
    mode: Option<String>,
    #[schema(minimum = 0.0, maximum = 1.0)]
    quality_achieved: f64,
    success: bool,
    #[schema(minimum = -1e9, maximum = 1e9)]
    atp_before: f64,
    #[schema(minimum = -1e9, maximum = 1e9)]
    atp_after: f64,
    reputation_before: Option<f64>,
    reputation_after: Option<f64>,
    #[schema(value_type = Option<Object>)]
    context: Option<serde_json::Value>,
    /// `algorithmic`, `behavioral` or `resource`.
    pattern_type: Option<String>,
    cogitation_mode: Option<String>,
    #[schema(minimum = 0.0, maximum = 1.0)]
    outcome_confidence: Option<f64>,
    verification_quality_score: Option<f64>,
    cognitive_depth: Option<String>,
    #[schema(minimum = 0.0, maximum = 1.0)]
    network_health: Option<f64>,
    #[schema(value_type = Option<Object>)]
    federation_context: Option<serde_json::Value>,
}

/// `POST /v1/patterns` body: one pattern or an array of 1 to 1000.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum PatternBody {
    One(PatternSchema),
    Many(Vec<PatternSchema>),
}

/// The insights document (seed 004 JSON schema).
#[derive(Serialize, ToSchema)]
#[schema(as = InsightsDocument)]
pub struct InsightsDocumentSchema {
    version: String,
    node_id: String,
    platform: String,
    last_updated: f64,
    pattern_count: u64,
    #[schema(value_type = Vec<Object>)]
    insights: Vec<serde_json::Value>,
    #[schema(value_type = Object)]
    depth_performance: serde_json::Value,
    #[schema(value_type = Object)]
    learned_preferences: serde_json::Value,
}

/// `GET /healthz`.
#[derive(Serialize, ToSchema)]
pub struct Health {
    /// `ok`.
    status: String,
}

#[utoipa::path(get, path = "/", tag = "dashboard",
    responses((status = 200, description = "The live dashboard page", content_type = "text/html", body = String)))]
fn dashboard() {}

#[utoipa::path(get, path = "/healthz", tag = "ops",
    responses((status = 200, body = Health), (status = 503, body = ApiError)))]
fn healthz() {}

#[utoipa::path(get, path = "/metrics", tag = "ops",
    responses((status = 200, description = "Prometheus text format 0.0.4 (OpenMetrics on request)", content_type = "text/plain", body = String),
        (status = 503, body = ApiError)))]
fn metrics() {}

#[utoipa::path(get, path = "/v1/openapi.json", tag = "ops",
    responses((status = 200, description = "This document", body = Object)))]
fn openapi() {}

#[utoipa::path(post, path = "/v1/patterns", tag = "patterns",
    request_body(content = PatternBody, content_type = "application/json"),
    responses(
        (status = 201, description = "Stored durably, in order", body = Vec<SubmittedPattern>),
        (status = 400, body = ApiError), (status = 403, body = ApiError), (status = 408, body = ApiError),
        (status = 413, body = ApiError), (status = 415, body = ApiError), (status = 422, body = ApiError),
        (status = 429, description = "Over the per-origin quota; nothing was stored", body = ApiError),
        (status = 503, description = "Nothing was stored", body = ApiError),
        (status = 507, description = "The disk is full; nothing was stored", body = ApiError)))]
fn post_patterns() {}

#[utoipa::path(get, path = "/v1/patterns", tag = "patterns",
    params(
        ("depths" = Option<String>, Query, description = "Comma-separated depths"),
        ("min_quality" = Option<f64>, Query, minimum = 0.0, maximum = 1.0),
        ("min_timestamp" = Option<f64>, Query, description = "Unix seconds"),
        ("max_count" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "Page size (default 100)"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "Alias of max_count"),
        ("cursor" = Option<String>, Query, description = "next_cursor of the previous page"),
        ("paged" = Option<bool>, Query, description = "Answer {patterns, next_cursor} instead of an array"),
    ),
    responses(
        (status = 200, description = "An array (next page in the X-Next-Cursor header), or with paged=true a PatternPage",
            body = Vec<PatternView>),
        (status = 400, body = ApiError), (status = 503, body = ApiError)))]
fn get_patterns() {}

#[utoipa::path(post, path = "/v1/import", tag = "patterns",
    params(
        ("format" = Option<ImportFormatSchema>, Query, description = "unified (default), thor or legion"),
        ("default_node" = Option<String>, Query, description = "node_id for lines without one"),
        ("line_offset" = Option<u64>, Query, description = "Added to reported line numbers"),
    ),
    request_body(content = String, content_type = "application/x-ndjson", description = "JSON Lines, one pattern a line"),
    responses(
        (status = 200, body = ImportReport),
        (status = 400, body = ApiError), (status = 403, body = ApiError), (status = 408, body = ImportReport),
        (status = 413, body = ImportReport), (status = 415, body = ApiError),
        (status = 429, body = ApiError), (status = 503, body = ApiError), (status = 507, body = ApiError)))]
fn post_import() {}

#[utoipa::path(get, path = "/v1/export", tag = "patterns",
    responses((status = 200, description = "Every stored pattern, unified JSON Lines", content_type = "application/x-ndjson", body = String),
        (status = 503, body = ApiError)))]
fn get_export() {}

#[utoipa::path(get, path = "/v1/insights", tag = "learning",
    params(("scope" = Option<ScopeSchema>, Query, description = "local or collective (default)")),
    responses((status = 200, body = InsightsDocumentSchema), (status = 400, body = ApiError)))]
fn get_insights() {}

#[utoipa::path(get, path = "/v1/recommendation", tag = "learning",
    params(
        ("atp" = f64, Query, minimum = 0.0, maximum = 1e9),
        ("strategy" = Option<StrategySchema>, Query, description = "legion, thor or posterior (default)"),
    ),
    responses((status = 200, body = Recommendation), (status = 400, body = ApiError)))]
fn get_recommendation() {}

#[utoipa::path(get, path = "/v1/peers", tag = "mesh",
    responses((status = 200, body = Vec<PeerView>), (status = 503, body = ApiError)))]
fn get_peers() {}

#[utoipa::path(get, path = "/v1/reputation", tag = "mesh",
    responses((status = 200, body = Vec<ReputationView>)))]
fn get_reputation() {}

#[utoipa::path(get, path = "/v1/stats", tag = "ops",
    responses((status = 200, body = StatsView)))]
fn get_stats() {}

#[utoipa::path(get, path = "/v1/knowledge", tag = "learning",
    responses((status = 200, body = KnowledgeTransfer), (status = 501, body = ApiError)))]
fn get_knowledge() {}

#[utoipa::path(get, path = "/v1/node", tag = "mesh",
    responses((status = 200, body = NodeInfo)))]
fn get_node() {}

#[utoipa::path(get, path = "/v1/events", tag = "ops",
    params(("Last-Event-ID" = Option<String>, Header, description = "Resume after this event id")),
    responses((status = 200, description = "Server-sent events (pattern_accepted, pattern_rejected, insight_changed, peer_joined, peer_left, reset)",
        content_type = "text/event-stream", body = String),
        (status = 503, body = ApiError)))]
fn get_events() {}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "metamesh node API",
        description = "The local HTTP API of a metamesh node (docs/api.md)."
    ),
    paths(
        dashboard,
        healthz,
        metrics,
        openapi,
        post_patterns,
        get_patterns,
        post_import,
        get_export,
        get_insights,
        get_recommendation,
        get_peers,
        get_reputation,
        get_stats,
        get_knowledge,
        get_node,
        get_events
    ),
    components(schemas(
        ApiError,
        SubmittedPattern,
        PatternView,
        PatternPage,
        Recommendation,
        PeerView,
        ReputationView,
        StatsView,
        MetricsSnapshot,
        Contributor,
        ExcludedOrigin,
        KnowledgeTransfer,
        HeldInsight,
        NodeInfo,
        ImportReport,
        ImportLineError,
        DepthSchema,
        ScopeSchema,
        ImportFormatSchema,
        StrategySchema,
        PatternSchema,
        PatternBody,
        InsightsDocumentSchema,
        Health
    ))
)]
struct ApiDoc;

static DOCUMENT: LazyLock<serde_json::Value> = LazyLock::new(|| {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    serde_json::to_value(&doc).unwrap_or_else(|e| serde_json::json!({"error": e.to_string()}))
});

/// The OpenAPI document as JSON.
pub fn document() -> serde_json::Value {
    DOCUMENT.clone()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::BTreeSet;

    use metamesh_protocol::Depth;
    use serde_json::Value;

    use super::*;

    fn schema_props(name: &str) -> BTreeSet<String> {
        let doc = document();
        doc["components"]["schemas"][name]["properties"]
            .as_object()
            .unwrap_or_else(|| panic!("no schema {name}"))
            .keys()
            .cloned()
            .collect()
    }

    #[test]
    fn every_route_is_in_the_document() {
        let doc = document();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
        for (method, path) in super::super::ROUTES {
            let op = &doc["paths"][*path][method.to_ascii_lowercase()];
            assert!(
                op.is_object(),
                "{method} {path} missing from the OpenAPI document"
            );
        }
    }

    #[test]
    fn pattern_mirror_has_every_field_of_pattern() {
        let v = serde_json::json!({
            "pattern_id": "p", "node_id": "n", "timestamp": 1.0, "platform": "x",
            "depth_used": "deep", "mode": "m", "quality_achieved": 0.5, "success": true,
            "atp_before": 1.0, "atp_after": 0.5, "reputation_before": 1.0,
            "reputation_after": 2.0, "context": {}, "pattern_type": "resource",
            "cogitation_mode": "c", "outcome_confidence": 0.5,
            "verification_quality_score": 1.0, "cognitive_depth": "d",
            "network_health": 0.5, "federation_context": {}
        });
        let p = metamesh_protocol::Pattern::from_json_value(v, None).unwrap();
        let real: BTreeSet<String> = match serde_json::to_value(&p).unwrap() {
            Value::Object(m) => m.keys().cloned().collect(),
            _ => panic!("pattern is not an object"),
        };
        assert_eq!(schema_props("Pattern"), real);
    }

    #[test]
    fn depth_and_insights_mirrors_match() {
        let doc = document();
        let names: BTreeSet<&str> = doc["components"]["schemas"]["Depth"]["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        let real: BTreeSet<&str> = Depth::ALL.iter().map(|d| d.as_str()).collect();
        assert_eq!(names, real);
        let d = metamesh_protocol::InsightsDocument::new(
            "n",
            "p",
            0,
            metamesh_protocol::insights::InsightSet::default(),
            1.0,
        );
        let real: BTreeSet<String> = match serde_json::to_value(&d).unwrap() {
            Value::Object(m) => m.keys().cloned().collect(),
            _ => panic!("not an object"),
        };
        assert_eq!(schema_props("InsightsDocument"), real);
    }
}
