//! The HTTP routes (axum), generic over [`NodeApi`]: the router, its
//! limits and the small read handlers. See `docs/api.md`.
//!
//! Request path, outermost first: [`guard::check_request`] (Host, Origin,
//! content type) → [`guard::buffer_body`] (a write's body is read, bounded
//! and timed, *before* a permit is taken) → [`guard::admit`] (concurrency
//! permit; read handlers are timed, admitted writes run to completion) →
//! the handler.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tokio::sync::{watch, Semaphore};

use super::guard::{self, HostPolicy};
use super::parse::{param, parse_recommendation_query, parse_scope, query_params};
use super::{sse, transfer, ApiError, NodeApi};

/// Largest request body accepted by `POST /v1/patterns` (413 above).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Most patterns in one `POST /v1/patterns` (413 above).
pub const MAX_PATTERNS_PER_POST: usize = 1000;
/// `GET /v1/patterns`: default and largest `max_count`.
pub const DEFAULT_QUERY_COUNT: u32 = 100;
pub const MAX_QUERY_COUNT: u32 = 1000;

/// Requests handled at once (event streams, imports and exports are
/// bounded separately); more get 503.
pub const MAX_CONCURRENT_REQUESTS: usize = 64;
/// Time a read handler may take to produce its response; then 503.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Open `/v1/events` streams at once; more get 503.
pub const MAX_EVENT_STREAMS: usize = 64;
/// Open connections at once; further connections are closed at accept.
pub const MAX_CONNECTIONS: usize = 128;
/// Time a client has to send a request's headers — also how long an idle
/// keep-alive connection stays open waiting for the next request.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a client has to send a whole write body (import: between chunks).
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Concurrency and time bounds of the API (defaults: the constants above).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiLimits {
    pub max_concurrent_requests: usize,
    pub request_timeout: Duration,
    pub max_event_streams: usize,
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
    /// Imports and exports running at once (each is long); more get 503.
    pub max_transfers: usize,
}

impl Default for ApiLimits {
    fn default() -> Self {
        ApiLimits {
            max_concurrent_requests: MAX_CONCURRENT_REQUESTS,
            request_timeout: REQUEST_TIMEOUT,
            max_event_streams: MAX_EVENT_STREAMS,
            max_connections: MAX_CONNECTIONS,
            header_read_timeout: HEADER_READ_TIMEOUT,
            body_read_timeout: BODY_READ_TIMEOUT,
            max_transfers: transfer::MAX_IMPORTS,
        }
    }
}

/// Prometheus text format 0.0.4 (what a plain scraper expects).
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// OpenMetrics, served when the scraper asks for it (the encoder's native format).
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Every route the API serves, as (method, path). The 404 answer lists the
/// paths; a test checks each is served and is in the OpenAPI document.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/"),
    ("GET", "/healthz"),
    ("GET", "/metrics"),
    ("GET", "/v1/openapi.json"),
    ("GET", "/v1/patterns"),
    ("POST", "/v1/patterns"),
    ("POST", "/v1/import"),
    ("GET", "/v1/export"),
    ("GET", "/v1/insights"),
    ("GET", "/v1/recommendation"),
    ("GET", "/v1/peers"),
    ("GET", "/v1/reputation"),
    ("GET", "/v1/stats"),
    ("GET", "/v1/knowledge"),
    ("GET", "/v1/node"),
    ("GET", "/v1/events"),
];

/// The dashboard page (helper `ecosystem` writes it), served at `GET /`.
const DASHBOARD_HTML: &str = include_str!("dashboard.html");

#[derive(Clone)]
pub(super) struct AppState<N> {
    pub node: N,
    /// Flips to `true` at shutdown so long-lived streams end and the
    /// graceful shutdown does not wait on them forever.
    pub shutdown: Option<watch::Receiver<bool>>,
    /// Permits for open event streams.
    pub event_streams: Arc<Semaphore>,
    /// Permits for running imports and exports.
    pub transfers: Arc<Semaphore>,
    pub events: Arc<sse::EventHub>,
    pub limits: ApiLimits,
}

impl<N> AppState<N> {
    /// Completes when the server shuts down (never for a bare router).
    pub fn shutdown_signal(
        &self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        match self.shutdown.clone() {
            Some(mut rx) => Box::pin(async move {
                // Err means the server is gone: end too.
                let _ = rx.wait_for(|down| *down).await;
            }),
            None => Box::pin(futures::future::pending()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(self)).into_response()
    }
}

/// The API routes over `node` (no listener; see [`super::serve`] /
/// [`super::ApiServer`]). `Host` must then be a loopback name (any port).
pub fn router<N: NodeApi>(node: N) -> Router {
    router_with_limits(node, ApiLimits::default())
}

/// [`router`] with explicit limits.
pub fn router_with_limits<N: NodeApi>(node: N, limits: ApiLimits) -> Router {
    build_router(node, None, limits, HostPolicy::loopback_any_port())
}

pub(super) fn build_router<N: NodeApi>(
    node: N,
    shutdown: Option<watch::Receiver<bool>>,
    limits: ApiLimits,
    hosts: HostPolicy,
) -> Router {
    let state = AppState {
        node,
        shutdown,
        event_streams: Arc::new(Semaphore::new(limits.max_event_streams)),
        transfers: Arc::new(Semaphore::new(limits.max_transfers)),
        events: Arc::new(sse::EventHub::new()),
        limits,
    };
    Router::new()
        .route("/", get(get_dashboard))
        .route("/healthz", get(get_health::<N>))
        .route("/metrics", get(get_metrics::<N>))
        .route("/v1/openapi.json", get(get_openapi))
        .route(
            "/v1/patterns",
            get(super::patterns::get_patterns::<N>).post(super::patterns::post_patterns::<N>),
        )
        .route("/v1/import", post(transfer::post_import::<N>))
        .route("/v1/export", get(transfer::get_export::<N>))
        .route("/v1/insights", get(get_insights::<N>))
        .route("/v1/recommendation", get(get_recommendation::<N>))
        .route("/v1/peers", get(get_peers::<N>))
        .route("/v1/reputation", get(get_reputation::<N>))
        .route("/v1/stats", get(get_stats::<N>))
        .route("/v1/knowledge", get(get_knowledge::<N>))
        .route("/v1/node", get(get_node::<N>))
        .route("/v1/events", get(sse::get_events::<N>))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            guard::Admission::new(limits),
            guard::admit,
        ))
        .layer(axum::middleware::from_fn_with_state(
            limits.body_read_timeout,
            guard::buffer_body,
        ))
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(hosts),
            guard::check_request,
        ))
        .with_state(state)
}

/// A router serving only `GET /metrics` (the optional separate metrics
/// listener; no Host check, so a remote scraper may use any name).
pub(super) fn metrics_router<N: NodeApi>(node: N) -> Router {
    let limits = ApiLimits::default();
    let state = AppState {
        node,
        shutdown: None,
        event_streams: Arc::new(Semaphore::new(0)),
        transfers: Arc::new(Semaphore::new(0)),
        events: Arc::new(sse::EventHub::new()),
        limits,
    };
    Router::new()
        .route("/metrics", get(get_metrics::<N>))
        .fallback(|| async { ApiError::not_found("this listener serves only /metrics") })
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            guard::Admission::new(limits),
            guard::admit,
        ))
        .with_state(state)
}

static NOT_FOUND: LazyLock<String> = LazyLock::new(|| {
    let mut paths: Vec<&str> = ROUTES.iter().map(|(_, p)| *p).collect();
    paths.dedup();
    format!("no such route (see docs/api.md: {})", paths.join(", "))
});

async fn not_found() -> ApiError {
    ApiError::not_found(NOT_FOUND.as_str())
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(405, "method not allowed on this route", None)
}

async fn get_dashboard() -> Response {
    (
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"))],
        Html(DASHBOARD_HTML),
    )
        .into_response()
}

async fn get_openapi() -> Response {
    Json(super::openapi::document()).into_response()
}

async fn get_health<N: NodeApi>(State(s): State<AppState<N>>) -> Response {
    match s.node.health().await {
        Ok(()) => Json(serde_json::json!({"status": "ok"})).into_response(),
        Err(e) => ApiError::unavailable(format!("unhealthy: {}", e.error)).into_response(),
    }
}

async fn get_insights<N: NodeApi>(
    State(s): State<AppState<N>>,
    q: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let pairs = query_params(q, &["scope"])?;
    let scope = parse_scope(param(&pairs, "scope")?)?;
    Ok(Json(s.node.insights(scope).await?).into_response())
}

async fn get_recommendation<N: NodeApi>(
    State(s): State<AppState<N>>,
    q: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let pairs = query_params(q, &["atp", "strategy"])?;
    let (atp, strategy) = parse_recommendation_query(&pairs)?;
    Ok(Json(s.node.recommend(atp, strategy).await?).into_response())
}

async fn get_peers<N: NodeApi>(State(s): State<AppState<N>>) -> Result<Response, ApiError> {
    Ok(Json(s.node.peers().await?).into_response())
}

async fn get_reputation<N: NodeApi>(State(s): State<AppState<N>>) -> Result<Response, ApiError> {
    Ok(Json(s.node.reputation().await?).into_response())
}

async fn get_stats<N: NodeApi>(State(s): State<AppState<N>>) -> Result<Response, ApiError> {
    Ok(Json(s.node.stats().await?).into_response())
}

async fn get_knowledge<N: NodeApi>(State(s): State<AppState<N>>) -> Result<Response, ApiError> {
    Ok(Json(s.node.knowledge_transfer().await?).into_response())
}

async fn get_node<N: NodeApi>(State(s): State<AppState<N>>) -> Result<Response, ApiError> {
    Ok(Json(s.node.node_info().await?).into_response())
}

async fn get_metrics<N: NodeApi>(State(s): State<AppState<N>>, headers: HeaderMap) -> Response {
    let wants_openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/openmetrics-text"));
    let content_type = if wants_openmetrics {
        OPENMETRICS_CONTENT_TYPE
    } else {
        PROMETHEUS_CONTENT_TYPE
    };
    let metrics = s.node.metrics();
    match s.node.gauges().await {
        Ok(g) => {
            metrics.set_patterns_stored(g.patterns_stored);
            metrics.set_prob_best(&g.prob_best);
        }
        // Keep the last values; the scrape still answers.
        Err(e) => tracing::debug!(error = %e, "metrics gauges unavailable"),
    }
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        metrics.encode(),
    )
        .into_response()
}
