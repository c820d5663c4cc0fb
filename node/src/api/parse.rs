//! Parsing of query parameters and pattern bodies (pure: no IO, no clock —
//! `now` is passed in).

use axum::extract::rejection::QueryRejection;
use axum::extract::Query;
use metamesh_protocol::schema::MAX_ATP;
use metamesh_protocol::wire::RequestFilters;
use metamesh_protocol::{Depth, Pattern};
use serde_json::Value;

use super::http::{DEFAULT_QUERY_COUNT, MAX_PATTERNS_PER_POST, MAX_QUERY_COUNT};
use super::{ApiError, PageCursor, Scope};

/// Query parameters per request (400 above).
const MAX_QUERY_PARAMS: usize = 16;
/// Longest strategy name accepted.
const MAX_STRATEGY_LEN: usize = 32;

fn query_rejection(r: QueryRejection) -> ApiError {
    ApiError::new(r.status().as_u16(), r.body_text(), Some("query".into()))
}

/// Query parameters as pairs; bounded; unknown names are 400 naming them.
pub(super) fn query_params(
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
pub(super) fn param<'a>(
    pairs: &'a [(String, String)],
    name: &str,
) -> Result<Option<&'a str>, ApiError> {
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

/// `GET /v1/patterns` parameters.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct PageQuery {
    pub filters: RequestFilters,
    pub limit: usize,
    pub cursor: Option<PageCursor>,
    /// Answer `{patterns, next_cursor}` instead of a bare array.
    pub paged: bool,
}

/// The names `GET /v1/patterns` accepts.
pub(super) const PATTERN_QUERY_PARAMS: &[&str] = &[
    "depths",
    "min_quality",
    "min_timestamp",
    "max_count",
    "limit",
    "cursor",
    "paged",
];

/// Parse `GET /v1/patterns` filter parameters into filters and a limit
/// (`max_count`, or its alias `limit`).
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
    let (name, raw) = match (param(pairs, "max_count")?, param(pairs, "limit")?) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "give max_count or its alias limit, not both",
                "limit",
            ))
        }
        (Some(raw), None) => ("max_count", Some(raw)),
        (None, Some(raw)) => ("limit", Some(raw)),
        (None, None) => ("max_count", None),
    };
    let max_count = match raw {
        None => DEFAULT_QUERY_COUNT,
        Some(raw) => match raw.trim().parse::<u32>() {
            Ok(n) if (1..=MAX_QUERY_COUNT).contains(&n) => n,
            _ => {
                return Err(ApiError::bad_request(
                    format!("{name} must be an integer between 1 and {MAX_QUERY_COUNT}"),
                    name,
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

/// Parse every `GET /v1/patterns` parameter: filters, limit, `cursor`, `paged`.
pub(super) fn parse_page_query(pairs: &[(String, String)]) -> Result<PageQuery, ApiError> {
    let (filters, limit) = parse_pattern_query(pairs)?;
    let cursor = match param(pairs, "cursor")? {
        None => None,
        Some(raw) if raw.trim().is_empty() => None,
        Some(raw) => Some(raw.parse::<PageCursor>()?),
    };
    let paged = match param(pairs, "paged")?.map(|v| v.trim().to_ascii_lowercase()) {
        None => false,
        Some(v) if v == "true" || v == "1" => true,
        Some(v) if v == "false" || v == "0" => false,
        Some(_) => {
            return Err(ApiError::bad_request(
                "paged must be true or false",
                "paged",
            ))
        }
    };
    Ok(PageQuery {
        filters,
        limit,
        cursor,
        paged,
    })
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

/// Query pairs of a request (for handlers that take the raw query).
pub(super) type QueryPairs = Result<Query<Vec<(String, String)>>, QueryRejection>;
