//! `POST /v1/patterns` and `GET /v1/patterns` (cursor paging).

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::http::AppState;
use super::parse::{
    parse_page_query, parse_pattern_body, query_params, QueryPairs, PATTERN_QUERY_PARAMS,
};
use super::{ApiError, NodeApi, PatternPage, SubmittedPattern};

pub(super) fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The body was read (bounded, timed) and a permit taken before this runs
/// (see `guard`). The node's work runs in its own task, so neither a
/// timeout nor a client that hangs up can cut it off half-way: the answer is
/// `201` after the patterns are durable, or an error when nothing was.
pub(super) async fn post_patterns<N: NodeApi>(
    State(s): State<AppState<N>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Vec<SubmittedPattern>>), ApiError> {
    let body =
        body.map_err(|r| ApiError::new(r.status().as_u16(), r.body_text(), Some("body".into())))?;
    let info = s.node.node_info().await?;
    let patterns = parse_pattern_body(&body, &info.peer_id, unix_now())?;
    let node = s.node.clone();
    let submitted = tokio::spawn(async move { node.submit_patterns(patterns).await })
        .await
        .map_err(|e| ApiError::internal(format!("storing patterns: {e}")))??;
    Ok((StatusCode::CREATED, Json(submitted)))
}

/// A bare array (with `X-Next-Cursor` and a `Link: rel="next"` header when
/// more may match), or with `paged=true` a [`PatternPage`].
pub(super) async fn get_patterns<N: NodeApi>(
    State(s): State<AppState<N>>,
    q: QueryPairs,
) -> Result<Response, ApiError> {
    let pairs = query_params(q, PATTERN_QUERY_PARAMS)?;
    let query = parse_page_query(&pairs)?;
    let mut page = s
        .node
        .query_patterns_page(query.filters, query.cursor, query.limit)
        .await?;
    page.patterns.truncate(query.limit);
    if query.paged {
        return Ok(Json(page).into_response());
    }
    let PatternPage {
        patterns,
        next_cursor,
    } = page;
    let mut resp = Json(patterns).into_response();
    if let Some(c) = next_cursor {
        let next = next_link(&pairs, &c);
        for (name, value) in [("x-next-cursor", c), ("link", next)] {
            if let Ok(v) = HeaderValue::from_str(&value) {
                resp.headers_mut().insert(name, v);
            }
        }
        resp.headers_mut().insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("x-next-cursor, link"),
        );
    }
    Ok(resp)
}

/// `</v1/patterns?…&cursor=C>; rel="next"`: the same query, next page.
fn next_link(pairs: &[(String, String)], cursor: &str) -> String {
    let mut q = form_urlencoded_pairs(pairs.iter().filter(|(k, _)| k != "cursor"));
    if !q.is_empty() {
        q.push('&');
    }
    q.push_str("cursor=");
    q.push_str(&percent(cursor));
    format!("</v1/patterns?{q}>; rel=\"next\"")
}

fn form_urlencoded_pairs<'a>(pairs: impl Iterator<Item = &'a (String, String)>) -> String {
    pairs
        .map(|(k, v)| format!("{}={}", percent(k), percent(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Percent-encode everything but unreserved characters (RFC 3986).
fn percent(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_link_keeps_the_query_and_replaces_the_cursor() {
        let pairs = vec![
            ("depths".to_string(), "deep,light".to_string()),
            ("cursor".to_string(), "old:1".to_string()),
        ];
        assert_eq!(
            next_link(&pairs, "12D3Koo:42"),
            "</v1/patterns?depths=deep%2Clight&cursor=12D3Koo%3A42>; rel=\"next\""
        );
    }
}
