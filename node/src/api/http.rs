//! The HTTP routes (axum), generic over [`NodeApi`]. See `docs/api.md`.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures::{Stream, StreamExt};
use metamesh_protocol::schema::MAX_ATP;
use metamesh_protocol::wire::RequestFilters;
use metamesh_protocol::{Depth, Pattern};
use serde_json::Value;
use tokio::sync::{watch, Semaphore};
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::BroadcastStream;

use super::{ApiError, NodeApi, Scope, SubmittedPattern};

/// Largest request body accepted (413 above).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Most patterns in one `POST /v1/patterns` (413 above).
pub const MAX_PATTERNS_PER_POST: usize = 1000;
/// `GET /v1/patterns`: default and largest `max_count`.
pub const DEFAULT_QUERY_COUNT: u32 = 100;
pub const MAX_QUERY_COUNT: u32 = 1000;
/// Query parameters per request (400 above).
const MAX_QUERY_PARAMS: usize = 16;
/// Longest strategy name accepted.
const MAX_STRATEGY_LEN: usize = 32;
/// SSE keep-alive comment interval.
pub const SSE_KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Requests handled at once (event streams excluded); more get 503.
pub const MAX_CONCURRENT_REQUESTS: usize = 64;
/// Time a handler may take to produce its response; then 503.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Open `/v1/events` streams at once; more get 503.
pub const MAX_EVENT_STREAMS: usize = 64;

/// Concurrency and time bounds of the API (defaults: the constants above).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiLimits {
    pub max_concurrent_requests: usize,
    pub request_timeout: Duration,
    pub max_event_streams: usize,
}

impl Default for ApiLimits {
    fn default() -> Self {
        ApiLimits {
            max_concurrent_requests: MAX_CONCURRENT_REQUESTS,
            request_timeout: REQUEST_TIMEOUT,
            max_event_streams: MAX_EVENT_STREAMS,
        }
    }
}

/// Prometheus text format 0.0.4 (what a plain scraper expects).
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// OpenMetrics, served when the scraper asks for it (the encoder's native format).
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

type ShutdownFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

#[derive(Clone)]
struct AppState<N> {
    node: N,
    /// Flips to `true` at shutdown so long-lived SSE streams end and the
    /// graceful shutdown does not wait on them forever.
    shutdown: Option<watch::Receiver<bool>>,
    /// Permits for open event streams.
    event_streams: Arc<Semaphore>,
}

impl<N> AppState<N> {
    fn shutdown_signal(&self) -> ShutdownFuture {
        match self.shutdown.clone() {
            Some(mut rx) => Box::pin(async move {
                // Err means the server is gone: end too.
                let _ = rx.wait_for(|down| *down).await;
            }),
            None => Box::pin(futures::future::pending()),
        }
    }
}

impl axum::response::IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(self)).into_response()
    }
}

/// The API routes over `node` (no listener; see [`serve`] / [`ApiServer`]).
pub fn router<N: NodeApi>(node: N) -> Router {
    router_with_limits(node, ApiLimits::default())
}

/// [`router`] with explicit limits.
pub fn router_with_limits<N: NodeApi>(node: N, limits: ApiLimits) -> Router {
    build_router(
        AppState {
            node,
            shutdown: None,
            event_streams: Arc::new(Semaphore::new(limits.max_event_streams)),
        },
        limits,
    )
}

fn build_router<N: NodeApi>(state: AppState<N>, limits: ApiLimits) -> Router {
    Router::new()
        .route(
            "/v1/patterns",
            get(get_patterns::<N>).post(post_patterns::<N>),
        )
        .route("/v1/insights", get(get_insights::<N>))
        .route("/v1/recommendation", get(get_recommendation::<N>))
        .route("/v1/peers", get(get_peers::<N>))
        .route("/v1/reputation", get(get_reputation::<N>))
        .route("/v1/stats", get(get_stats::<N>))
        .route("/v1/node", get(get_node::<N>))
        .route("/v1/events", get(get_events::<N>))
        .route("/v1/knowledge", get(get_knowledge::<N>))
        .route("/metrics", get(get_metrics::<N>))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(
            RequestBounds {
                permits: Arc::new(Semaphore::new(limits.max_concurrent_requests)),
                limits,
            },
            bound_request,
        ))
        .with_state(state)
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("binding the HTTP API to {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("HTTP API server: {0}")]
    Io(#[from] std::io::Error),
}

/// A bound, not yet serving, API listener: learn the address, then run.
pub struct ApiServer {
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
    limits: ApiLimits,
}

impl ApiServer {
    pub async fn bind(addr: SocketAddr) -> Result<ApiServer, ServeError> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Bind { addr, source })?;
        let addr = listener.local_addr()?;
        if !addr.ip().is_loopback() {
            tracing::warn!(%addr, "the HTTP API is not authenticated and listens beyond loopback");
        }
        Ok(ApiServer {
            listener,
            addr,
            limits: ApiLimits::default(),
        })
    }

    /// Use other concurrency/time bounds than the defaults.
    pub fn with_limits(mut self, limits: ApiLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The bound address (the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serve until `shutdown` completes; open event streams are closed then.
    pub async fn run<N: NodeApi>(
        self,
        node: N,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let (tx, rx) = watch::channel(false);
        let app = build_router(
            AppState {
                node,
                shutdown: Some(rx),
                event_streams: Arc::new(Semaphore::new(self.limits.max_event_streams)),
            },
            self.limits,
        );
        axum::serve(self.listener, app)
            .with_graceful_shutdown(async move {
                shutdown.await;
                let _ = tx.send(true);
            })
            .await?;
        Ok(())
    }
}

/// Where [`serve`] listens: an address to bind (port 0 allowed) or a
/// listener the caller bound already (so it knew the address before serving).
pub enum ApiListener {
    Addr(SocketAddr),
    Bound(tokio::net::TcpListener),
}

impl From<SocketAddr> for ApiListener {
    fn from(a: SocketAddr) -> Self {
        ApiListener::Addr(a)
    }
}

impl From<tokio::net::TcpListener> for ApiListener {
    fn from(l: tokio::net::TcpListener) -> Self {
        ApiListener::Bound(l)
    }
}

/// Serve the API on `listen` until `shutdown` completes (open event streams
/// are closed then); returns the bound address. To learn the address before
/// serving, bind a `tokio::net::TcpListener` first and pass it, or use
/// [`ApiServer::bind`] + [`ApiServer::run`].
pub async fn serve<N: NodeApi>(
    node: N,
    listen: impl Into<ApiListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<SocketAddr, ServeError> {
    let server = match listen.into() {
        ApiListener::Addr(a) => ApiServer::bind(a).await?,
        ApiListener::Bound(listener) => {
            let addr = listener.local_addr()?;
            ApiServer {
                listener,
                addr,
                limits: ApiLimits::default(),
            }
        }
    };
    let bound = server.local_addr();
    tracing::info!(addr = %bound, "HTTP API listening");
    server.run(node, shutdown).await?;
    Ok(bound)
}

// ---- handlers ------------------------------------------------------------

/// Bound concurrency and the time to produce a response (a streaming body,
/// such as the event stream, is not timed once its headers are out).
#[derive(Clone)]
struct RequestBounds {
    permits: Arc<Semaphore>,
    limits: ApiLimits,
}

async fn bound_request(
    State(b): State<RequestBounds>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let Ok(_permit) = b.permits.try_acquire_owned() else {
        return ApiError::unavailable(format!(
            "more than {} requests at once; retry shortly",
            b.limits.max_concurrent_requests
        ))
        .into_response();
    };
    match tokio::time::timeout(b.limits.request_timeout, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => ApiError::unavailable(format!(
            "the node did not answer within {:.1} s",
            b.limits.request_timeout.as_secs_f64()
        ))
        .into_response(),
    }
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such route (see docs/api.md: /v1/patterns, /v1/insights, /v1/recommendation, /v1/peers, /v1/reputation, /v1/stats, /v1/node, /v1/events, /metrics)")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(405, "method not allowed on this route", None)
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn body_rejection(r: BytesRejection) -> ApiError {
    let status = r.status().as_u16();
    let error = if status == 413 {
        format!("request body larger than {MAX_BODY_BYTES} bytes")
    } else {
        r.body_text()
    };
    ApiError::new(status, error, Some("body".into()))
}

fn query_rejection(r: QueryRejection) -> ApiError {
    ApiError::new(r.status().as_u16(), r.body_text(), Some("query".into()))
}

/// Query parameters as pairs; bounded; unknown names are 400 naming them.
fn query_params(
    q: Result<Query<Vec<(String, String)>>, QueryRejection>,
    allowed: &[&str],
) -> Result<Vec<(String, String)>, ApiError> {
    let Query(pairs) = q.map_err(query_rejection)?;
    if pairs.len() > MAX_QUERY_PARAMS {
        return Err(ApiError::bad_request(
            format!("at most {MAX_QUERY_PARAMS} query parameters"),
            "query",
        ));
    }
    for (k, _) in &pairs {
        if !allowed.contains(&k.as_str()) {
            let k: String = k.chars().take(64).collect();
            return Err(ApiError::bad_request(
                format!(
                    "unknown query parameter {k:?} (known: {})",
                    allowed.join(", ")
                ),
                k,
            ));
        }
    }
    Ok(pairs)
}

/// The single value of `name`; a repeated parameter is an error.
fn param<'a>(pairs: &'a [(String, String)], name: &str) -> Result<Option<&'a str>, ApiError> {
    let mut it = pairs
        .iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.as_str());
    let first = it.next();
    if it.next().is_some() {
        return Err(ApiError::bad_request(
            format!("{name} given more than once"),
            name,
        ));
    }
    Ok(first)
}

fn finite_param(pairs: &[(String, String)], name: &str) -> Result<Option<f64>, ApiError> {
    let Some(raw) = param(pairs, name)? else {
        return Ok(None);
    };
    match raw.trim().parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(Some(v)),
        _ => Err(ApiError::bad_request(
            format!("{name} must be a finite number"),
            name,
        )),
    }
}

/// Fill what an API caller may leave out: a fresh `pattern_id` and `timestamp` = now.
/// (`node_id` defaults to this node's PeerId in `Pattern::from_json_value`.)
fn fill_api_defaults(v: &mut Value, now: f64) {
    if let Value::Object(m) = v {
        if !m.contains_key("pattern_id") {
            let id: u64 = rand::random();
            m.insert("pattern_id".into(), Value::String(format!("api-{id:016x}")));
        }
        if !m.contains_key("timestamp") {
            if let Some(n) = serde_json::Number::from_f64(now) {
                m.insert("timestamp".into(), Value::Number(n));
            }
        }
    }
}

fn prefixed(prefix: &str, field: &str) -> String {
    match (prefix.is_empty(), field) {
        (true, _) => field.to_string(),
        (false, "pattern") => prefix.to_string(),
        (false, f) => format!("{prefix}.{f}"),
    }
}

/// Parse a `POST /v1/patterns` body: one pattern object or an array of them.
pub fn parse_pattern_body(body: &[u8], node_id: &str, now: f64) -> Result<Vec<Pattern>, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("body is not valid JSON: {e}"), "body"))?;
    let (items, is_array) = match value {
        Value::Array(a) => (a, true),
        o @ Value::Object(_) => (vec![o], false),
        _ => {
            return Err(ApiError::bad_request(
                "body must be a pattern object or an array of pattern objects",
                "body",
            ))
        }
    };
    if items.is_empty() {
        return Err(ApiError::bad_request("empty array: no patterns", "body"));
    }
    if items.len() > MAX_PATTERNS_PER_POST {
        return Err(ApiError::new(
            413,
            format!(
                "{} patterns in one request; at most {MAX_PATTERNS_PER_POST}",
                items.len()
            ),
            Some("body".into()),
        ));
    }
    let mut out = Vec::with_capacity(items.len());
    for (i, mut v) in items.into_iter().enumerate() {
        let prefix = if is_array {
            format!("[{i}]")
        } else {
            String::new()
        };
        fill_api_defaults(&mut v, now);
        let p = Pattern::from_json_value(v, Some(node_id)).map_err(|e| {
            let field = prefixed(&prefix, &e.field);
            ApiError::unprocessable(format!("{field}: {}", e.reason), field)
        })?;
        p.validate(now).map_err(|e| {
            let field = prefixed(&prefix, &e.field);
            ApiError::unprocessable(format!("{field}: {}", e.reason), field)
        })?;
        out.push(p);
    }
    Ok(out)
}

async fn post_patterns<N: NodeApi>(
    State(s): State<AppState<N>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Vec<SubmittedPattern>>), ApiError> {
    let body = body.map_err(body_rejection)?;
    let info = s.node.node_info().await?;
    let patterns = parse_pattern_body(&body, &info.peer_id, unix_now())?;
    let submitted = s.node.submit_patterns(patterns).await?;
    Ok((StatusCode::CREATED, Json(submitted)))
}

/// Parse `GET /v1/patterns` parameters into filters and a limit.
pub fn parse_pattern_query(
    pairs: &[(String, String)],
) -> Result<(RequestFilters, usize), ApiError> {
    let depths = match param(pairs, "depths")? {
        None => None,
        Some(raw) => {
            let mut ds: Vec<Depth> = Vec::new();
            for part in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                let d: Depth = part.parse().map_err(|e: metamesh_protocol::SchemaError| {
                    ApiError::bad_request(e.reason, "depths")
                })?;
                if !ds.contains(&d) {
                    ds.push(d);
                }
            }
            if ds.is_empty() {
                return Err(ApiError::bad_request("depths is empty", "depths"));
            }
            Some(ds)
        }
    };
    let min_quality = finite_param(pairs, "min_quality")?;
    if let Some(q) = min_quality {
        if !(0.0..=1.0).contains(&q) {
            return Err(ApiError::bad_request(
                "min_quality must be between 0 and 1",
                "min_quality",
            ));
        }
    }
    let min_timestamp = finite_param(pairs, "min_timestamp")?;
    let max_count = match param(pairs, "max_count")? {
        None => DEFAULT_QUERY_COUNT,
        Some(raw) => match raw.trim().parse::<u32>() {
            Ok(n) if (1..=MAX_QUERY_COUNT).contains(&n) => n,
            _ => {
                return Err(ApiError::bad_request(
                    format!("max_count must be an integer between 1 and {MAX_QUERY_COUNT}"),
                    "max_count",
                ))
            }
        },
    };
    let filters = RequestFilters {
        depths,
        min_quality,
        min_timestamp,
        max_count: Some(max_count),
    };
    Ok((filters, max_count as usize))
}

async fn get_patterns<N: NodeApi>(
    State(s): State<AppState<N>>,
    q: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let pairs = query_params(q, &["depths", "min_quality", "min_timestamp", "max_count"])?;
    let (filters, limit) = parse_pattern_query(&pairs)?;
    let mut patterns = s.node.query_patterns(filters, limit).await?;
    patterns.truncate(limit);
    Ok(Json(patterns).into_response())
}

pub fn parse_scope(raw: Option<&str>) -> Result<Scope, ApiError> {
    match raw.map(|s| s.trim().to_ascii_lowercase()).as_deref() {
        None | Some("collective") => Ok(Scope::Collective),
        Some("local") => Ok(Scope::Local),
        Some(_) => Err(ApiError::bad_request(
            "scope must be local or collective",
            "scope",
        )),
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

/// `atp` (required, 0..=MAX_ATP) and `strategy` (default `posterior`).
pub fn parse_recommendation_query(pairs: &[(String, String)]) -> Result<(f64, String), ApiError> {
    let atp = finite_param(pairs, "atp")?
        .ok_or_else(|| ApiError::bad_request("atp is required", "atp"))?;
    if !(0.0..=MAX_ATP).contains(&atp) {
        return Err(ApiError::bad_request(
            format!("atp must be between 0 and {MAX_ATP}"),
            "atp",
        ));
    }
    let strategy = param(pairs, "strategy")?
        .unwrap_or("posterior")
        .trim()
        .to_ascii_lowercase();
    let ok_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    if strategy.is_empty() || strategy.len() > MAX_STRATEGY_LEN || !strategy.chars().all(ok_char) {
        return Err(ApiError::bad_request(
            "strategy must be a strategy name such as legion, thor or posterior",
            "strategy",
        ));
    }
    Ok((atp, strategy))
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

/// One SSE frame for a broadcast item; a lag becomes a comment and the stream goes on.
fn sse_frame(item: Result<crate::events::NodeEvent, BroadcastStreamRecvError>) -> Event {
    match item {
        Ok(ev) => Event::default()
            .event(ev.kind())
            .json_data(&ev)
            .unwrap_or_else(|_| Event::default().comment("event could not be encoded")),
        Err(BroadcastStreamRecvError::Lagged(n)) => {
            Event::default().comment(format!("lagged: {n} events skipped"))
        }
    }
}

async fn get_events<N: NodeApi>(
    State(s): State<AppState<N>>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let permit = s
        .event_streams
        .clone()
        .try_acquire_owned()
        .map_err(|_| ApiError::unavailable("too many event streams open; retry later"))?;
    let stream = BroadcastStream::new(s.node.subscribe())
        .map(move |item| {
            // The permit lives as long as the stream.
            let _held = &permit;
            Ok(sse_frame(item))
        })
        .take_until(s.shutdown_signal());
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(SSE_KEEP_ALIVE)))
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
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        s.node.metrics().encode(),
    )
        .into_response()
}
