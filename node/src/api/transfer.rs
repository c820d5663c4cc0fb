//! Online import and export: `POST /v1/import` (JSON Lines, streamed,
//! read exactly as the offline importer reads a file) and `GET /v1/export`
//! (every stored pattern as unified JSON Lines, streamed page by page).

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::StreamExt;
use metamesh_protocol::wire::RequestFilters;
use metamesh_protocol::Pattern;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::http::AppState;
use super::parse::{param, query_params, QueryPairs};
use super::{ApiError, NodeApi, PageCursor};

/// Longest line accepted (longer ones are skipped and reported), as offline.
pub const MAX_LINE_BYTES: usize = metamesh_storage::interop::MAX_LINE_BYTES;
/// Most bytes one import request may carry (413 after; send more requests).
pub const MAX_IMPORT_BYTES: u64 = 64 * 1024 * 1024;
/// Most lines one import request may carry.
pub const MAX_IMPORT_LINES: u64 = 100_000;
/// Imports and exports running at once.
pub const MAX_IMPORTS: usize = 2;
/// Lines per store batch, as offline.
const IMPORT_BATCH: usize = 512;
/// Error entries kept per list (totals are exact), as offline.
const MAX_REPORTED: usize = metamesh_storage::interop::MAX_REPORTED;
/// Patterns per page while exporting.
const EXPORT_PAGE: usize = 1000;

/// One reported line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ImportLineError {
    pub line: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    pub error: String,
}

/// What `POST /v1/import` did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ImportReport {
    /// Lines read (blank ones included).
    pub lines: u64,
    /// Patterns signed and durably stored.
    pub accepted: u64,
    /// Valid patterns already held (same import key): not stored again.
    pub duplicates: u64,
    pub skipped_total: u64,
    /// Blank, overlong or unparseable lines (the first 1000).
    pub skipped: Vec<ImportLineError>,
    pub invalid_total: u64,
    /// Records that failed validation (the first 1000).
    pub invalid: Vec<ImportLineError>,
    /// Set when the import stopped early (the status says why).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl ImportReport {
    fn skip(&mut self, line: u64, error: String) {
        self.skipped_total += 1;
        if self.skipped.len() < MAX_REPORTED {
            self.skipped.push(ImportLineError {
                line,
                field: None,
                error,
            });
        }
    }
    fn invalid(&mut self, line: u64, field: String, error: String) {
        self.invalid_total += 1;
        if self.invalid.len() < MAX_REPORTED {
            self.invalid.push(ImportLineError {
                line,
                field: Some(field),
                error,
            });
        }
    }
}

/// How lines are read: defaults as the offline importer sets them.
#[derive(Debug, Clone)]
struct LineDefaults {
    platform: Option<&'static str>,
    default_node: Option<String>,
    now: f64,
}

/// Parse and validate one line (pure). `Ok(None)`: reported, nothing to store.
fn parse_line(
    raw: &[u8],
    line: u64,
    d: &LineDefaults,
    report: &mut ImportReport,
) -> Option<(Pattern, [u8; 32])> {
    if raw.iter().all(u8::is_ascii_whitespace) {
        report.skip(line, "blank line".into());
        return None;
    }
    let v = match serde_json::from_slice::<Value>(raw) {
        Ok(Value::Object(mut m)) => {
            if let Some(p) = d.platform {
                m.entry("platform")
                    .or_insert_with(|| Value::String(p.into()));
            }
            Value::Object(m)
        }
        Ok(_) => {
            report.invalid(line, "pattern".into(), "must be a JSON object".into());
            return None;
        }
        Err(e) => {
            report.skip(line, format!("not valid JSON: {e}"));
            return None;
        }
    };
    match Pattern::from_json_value(v, d.default_node.as_deref()).and_then(|p| {
        p.validate(d.now)?;
        Ok(p)
    }) {
        Ok(p) => {
            let k = metamesh_storage::interop::import_key(&p);
            Some((p, k))
        }
        Err(e) => {
            report.invalid(line, e.field, e.reason);
            None
        }
    }
}

/// Raw lines awaiting parse, with their numbers.
type RawBatch = Vec<(u64, Vec<u8>)>;

/// Parse a batch off the runtime, then store its valid patterns.
async fn store_batch<N: NodeApi>(
    node: &N,
    batch: RawBatch,
    d: &LineDefaults,
    report: &mut ImportReport,
) -> Result<(), ApiError> {
    if batch.is_empty() {
        return Ok(());
    }
    let d = d.clone();
    let (valid, part) = tokio::task::spawn_blocking(move || {
        let mut part = ImportReport::default();
        let valid: Vec<_> = batch
            .iter()
            .filter_map(|(n, raw)| parse_line(raw, *n, &d, &mut part))
            .collect();
        (valid, part)
    })
    .await
    .map_err(|e| ApiError::internal(format!("parsing import lines: {e}")))?;
    // A batch (≤ IMPORT_BATCH < MAX_REPORTED lines) keeps every entry.
    for e in part.skipped {
        report.skip(e.line, e.error);
    }
    for e in part.invalid {
        report.invalid(e.line, e.field.unwrap_or_default(), e.error);
    }
    if valid.is_empty() {
        return Ok(());
    }
    // In its own task: a client that hangs up does not cut a batch in half.
    let node = node.clone();
    let outcome = tokio::spawn(async move { node.import_patterns(valid).await })
        .await
        .map_err(|e| ApiError::internal(format!("storing imported patterns: {e}")))??;
    report.accepted += outcome.accepted;
    report.duplicates += outcome.duplicates;
    Ok(())
}

fn import_params(q: QueryPairs) -> Result<(LineDefaults, u64), ApiError> {
    let pairs = query_params(q, &["format", "default_node", "line_offset"])?;
    let platform = match param(&pairs, "format")?.map(|f| f.trim().to_ascii_lowercase()) {
        None => None,
        Some(f) if f == "unified" => None,
        Some(f) if f == "thor" => Some("thor"),
        Some(f) if f == "legion" => Some("legion"),
        Some(_) => {
            return Err(ApiError::bad_request(
                "format must be unified, thor or legion",
                "format",
            ))
        }
    };
    let default_node = match param(&pairs, "default_node")? {
        None => None,
        Some(n) if n.is_empty() || n.len() > 128 || n.chars().any(char::is_control) => {
            return Err(ApiError::bad_request(
                "default_node must be 1 to 128 printable characters",
                "default_node",
            ))
        }
        Some(n) => Some(n.to_string()),
    };
    let offset = match param(&pairs, "line_offset")? {
        None => 0,
        Some(raw) => raw
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|n| *n < u64::MAX / 2)
            .ok_or_else(|| {
                ApiError::bad_request("line_offset must be a non-negative integer", "line_offset")
            })?,
    };
    Ok((
        LineDefaults {
            platform,
            default_node,
            now: super::patterns::unix_now(),
        },
        offset,
    ))
}

fn stopped(mut report: ImportReport, e: ApiError) -> Response {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    report.error = Some(e.error);
    report.field = e.field;
    (status, Json(report)).into_response()
}

pub(super) async fn post_import<N: NodeApi>(
    State(s): State<AppState<N>>,
    q: QueryPairs,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (defaults, offset) = match import_params(q) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let Ok(_permit) = s.transfers.clone().try_acquire_owned() else {
        return ApiError::unavailable(format!(
            "{} imports or exports are running; nothing was read, retry later",
            s.limits.max_transfers
        ))
        .into_response();
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_IMPORT_BYTES) {
        return ApiError::new(
            413,
            format!(
                "import body larger than {MAX_IMPORT_BYTES} bytes; send it in several requests"
            ),
            Some("body".into()),
        )
        .into_response();
    }
    let mut report = ImportReport::default();
    let mut stream = body.into_data_stream();
    let mut line: Vec<u8> = Vec::new();
    let mut overlong = false;
    let mut batch: RawBatch = Vec::with_capacity(IMPORT_BATCH);
    let mut read = 0u64;
    let timeout = s.limits.body_read_timeout;
    loop {
        let chunk: Option<Bytes> = match tokio::time::timeout(timeout, stream.next()).await {
            Err(_) => {
                let e = ApiError::new(
                    408,
                    format!("the body stalled for {:.0} s", timeout.as_secs_f64()),
                    Some("body".into()),
                );
                return finish(&s.node, batch, &defaults, report, Some(e)).await;
            }
            Ok(Some(Err(e))) => {
                let e = ApiError::bad_request(format!("reading the body: {e}"), "body");
                return finish(&s.node, batch, &defaults, report, Some(e)).await;
            }
            Ok(Some(Ok(c))) => Some(c),
            Ok(None) => None,
        };
        let Some(chunk) = chunk else { break };
        read += chunk.len() as u64;
        if read > MAX_IMPORT_BYTES {
            let e = ApiError::new(
                413,
                format!("import body larger than {MAX_IMPORT_BYTES} bytes; the rest was not read — send it in another request"),
                Some("body".into()),
            );
            return finish(&s.node, batch, &defaults, report, Some(e)).await;
        }
        let mut rest: &[u8] = &chunk;
        while !rest.is_empty() {
            let (part, complete) = match rest.iter().position(|b| *b == b'\n') {
                Some(i) => (&rest[..i], true),
                None => (rest, false),
            };
            rest = if complete {
                &rest[part.len() + 1..]
            } else {
                &[]
            };
            if !overlong {
                if line.len() + part.len() > MAX_LINE_BYTES {
                    overlong = true;
                    line = Vec::new();
                } else {
                    line.extend_from_slice(part);
                }
            }
            if !complete {
                continue;
            }
            report.lines += 1;
            if report.lines > MAX_IMPORT_LINES {
                report.lines -= 1;
                let e = ApiError::new(
                    413,
                    format!("more than {MAX_IMPORT_LINES} lines in one import; the rest was not read — send it in another request"),
                    Some("body".into()),
                );
                return finish(&s.node, batch, &defaults, report, Some(e)).await;
            }
            let n = offset + report.lines;
            if std::mem::take(&mut overlong) {
                report.skip(n, format!("line longer than {MAX_LINE_BYTES} bytes"));
            } else {
                batch.push((n, std::mem::take(&mut line)));
            }
            if batch.len() >= IMPORT_BATCH {
                let full = std::mem::replace(&mut batch, Vec::with_capacity(IMPORT_BATCH));
                if let Err(e) = store_batch(&s.node, full, &defaults, &mut report).await {
                    return stopped(report, e);
                }
            }
        }
    }
    // A last line without its newline still counts (as offline).
    if overlong || !line.is_empty() {
        report.lines += 1;
        let n = offset + report.lines;
        if overlong {
            report.skip(n, format!("line longer than {MAX_LINE_BYTES} bytes"));
        } else {
            batch.push((n, line));
        }
    }
    finish(&s.node, batch, &defaults, report, None).await
}

/// Store what was read completely, then answer (with `stop` when the
/// import ended early).
async fn finish<N: NodeApi>(
    node: &N,
    batch: RawBatch,
    defaults: &LineDefaults,
    mut report: ImportReport,
    stop: Option<ApiError>,
) -> Response {
    let stored = store_batch(node, batch, defaults, &mut report).await;
    // Over-long lines are reported by the reader, the rest after parsing
    // their batch: report both in line order.
    report.skipped.sort_by_key(|e| e.line);
    report.invalid.sort_by_key(|e| e.line);
    if let Err(e) = stored {
        return stopped(report, e);
    }
    match stop {
        Some(e) => stopped(report, e),
        None => (StatusCode::OK, Json(report)).into_response(),
    }
}

/// The next chunk of export lines, or the end.
async fn export_page<N: NodeApi>(
    node: &N,
    cursor: Option<PageCursor>,
) -> Result<(Bytes, Option<PageCursor>), ApiError> {
    let page = node
        .query_patterns_page(RequestFilters::default(), cursor, EXPORT_PAGE)
        .await?;
    let mut out = Vec::new();
    for v in &page.patterns {
        serde_json::to_writer(&mut out, &v.pattern)
            .map_err(|e| ApiError::internal(format!("encoding a pattern: {e}")))?;
        out.push(b'\n');
    }
    let next = match page.next_cursor {
        Some(c) => Some(c.parse::<PageCursor>()?),
        None => None,
    };
    Ok((Bytes::from(out), next))
}

pub(super) async fn get_export<N: NodeApi>(
    State(s): State<AppState<N>>,
    q: QueryPairs,
) -> Result<Response, ApiError> {
    query_params(q, &[])?;
    let permit = s.transfers.clone().try_acquire_owned().map_err(|_| {
        ApiError::unavailable(format!(
            "{} imports or exports are running; retry later",
            s.limits.max_transfers
        ))
    })?;
    // The first page before the headers: an error is still a JSON answer.
    let (first, next) = export_page(&s.node, None).await?;
    let node = s.node.clone();
    let rest = futures::stream::unfold(next.map(|c| (node, c, permit)), |state| async move {
        let (node, cursor, permit) = state?;
        match export_page(&node, Some(cursor)).await {
            Ok((bytes, next)) => Some((Ok(bytes), next.map(|c| (node, c, permit)))),
            Err(e) => {
                tracing::warn!(error = %e, "export stopped");
                Some((Err(std::io::Error::other(e.error)), None))
            }
        }
    });
    let body = futures::stream::once(async { Ok::<Bytes, std::io::Error>(first) }).chain(rest);
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-ndjson"),
        )],
        Body::from_stream(body),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> LineDefaults {
        LineDefaults {
            platform: Some("thor"),
            default_node: Some("thor1".into()),
            now: 1.8e9,
        }
    }

    #[test]
    fn lines_are_read_like_the_offline_importer() {
        let mut r = ImportReport::default();
        let d = defaults();
        assert!(parse_line(b"   ", 1, &d, &mut r).is_none());
        assert!(parse_line(b"{nope", 2, &d, &mut r).is_none());
        assert!(parse_line(b"[1]", 3, &d, &mut r).is_none());
        let bad = br#"{"depth_used":"DEEP","quality_achieved":1.5,"success":true,"atp_before":1,"atp_after":0,"timestamp":1.7e9,"pattern_id":"y"}"#;
        assert!(parse_line(bad, 4, &d, &mut r).is_none());
        let good = br#"{"depth_used":"DEEP","quality_achieved":0.5,"success":true,"atp_before":1,"atp_after":0,"timestamp":1.7e9,"pattern_id":"x"}"#;
        let (p, k) = parse_line(good, 5, &d, &mut r).expect("valid");
        assert_eq!(p.platform, "thor");
        assert_eq!(p.node_id, "thor1");
        assert_eq!(k, metamesh_storage::interop::import_key(&p));
        assert_eq!(r.skipped_total, 2);
        assert_eq!(r.skipped[0].error, "blank line");
        assert!(r.skipped[1].error.starts_with("not valid JSON"));
        assert_eq!(r.invalid_total, 2);
        assert_eq!(r.invalid[0].field.as_deref(), Some("pattern"));
        assert_eq!(r.invalid[1].field.as_deref(), Some("quality_achieved"));
        assert_eq!(r.invalid[1].line, 4);
    }
}
