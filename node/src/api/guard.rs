//! Request guards, outermost first: [`check_request`] (Host, Origin,
//! content type), [`buffer_body`] (a write body is read — bounded and timed —
//! before any permit), [`admit`] (concurrency permit and read timeout).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use tokio::sync::Semaphore;

use super::http::{ApiLimits, MAX_BODY_BYTES};
use super::ApiError;

/// Content types a write route accepts (the first is the one to use).
fn write_content_types(method: &Method, path: &str) -> Option<&'static [&'static str]> {
    match (method, path) {
        (&Method::POST, "/v1/patterns") => Some(&["application/json"]),
        (&Method::POST, "/v1/import") => Some(&["application/x-ndjson", "application/jsonl"]),
        _ => None,
    }
}

/// Routes that need no concurrency permit: static or self-bounded ones.
fn unbounded_route(path: &str) -> bool {
    matches!(
        path,
        "/" | "/healthz" | "/v1/openapi.json" | "/v1/import" | "/v1/export"
    )
}

/// Which `Host` header values the API answers (DNS-rebinding defence): the
/// bound address by IP or as `localhost`, plus operator-listed names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPolicy {
    /// The bound port; `None` accepts any port (a bare router).
    port: Option<u16>,
    /// The bound IP, when not loopback.
    bound_ip: Option<IpAddr>,
    /// Bound to an unspecified address: any IP literal names this node.
    any_ip: bool,
    /// Extra allowed hosts, lower case: `name` (any port) or `name:port`.
    extra: Vec<String>,
}

impl HostPolicy {
    /// Loopback names (`127.0.0.1`, `localhost`, `[::1]`) on any port.
    pub fn loopback_any_port() -> Self {
        HostPolicy {
            port: None,
            bound_ip: None,
            any_ip: false,
            extra: Vec::new(),
        }
    }

    /// The policy of an API bound to `addr`.
    pub fn for_bound(addr: SocketAddr) -> Self {
        let ip = addr.ip();
        HostPolicy {
            port: Some(addr.port()),
            bound_ip: (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip),
            any_ip: ip.is_unspecified(),
            extra: Vec::new(),
        }
    }

    /// Also accept these hosts (`name` for any port, or `name:port`).
    pub fn with_extra_hosts(mut self, hosts: impl IntoIterator<Item = String>) -> Self {
        self.extra.extend(
            hosts
                .into_iter()
                .map(|h| h.trim().to_ascii_lowercase())
                .filter(|h| !h.is_empty()),
        );
        self
    }

    /// Does a `Host` header value (or an origin's authority) name this API?
    pub fn allows(&self, host: &str) -> bool {
        let host = host.trim().to_ascii_lowercase();
        let Some((name, port)) = split_host(&host) else {
            return false;
        };
        if self.extra.iter().any(|e| *e == host || *e == name) {
            return true;
        }
        if let Some(p) = self.port {
            // No port in the header means the scheme's default (http: 80).
            if port.unwrap_or(80) != p {
                return false;
            }
        }
        if name == "localhost" {
            return true;
        }
        let literal = name.trim_start_matches('[').trim_end_matches(']');
        match literal.parse::<IpAddr>() {
            Ok(ip) => ip.is_loopback() || Some(ip) == self.bound_ip || self.any_ip,
            Err(_) => false,
        }
    }
}

/// `name[:port]` → (name, port); IPv6 literals in brackets.
fn split_host(host: &str) -> Option<(&str, Option<u16>)> {
    if host.is_empty() || host.len() > 255 {
        return None;
    }
    let (name, port) = if let Some(rest) = host.strip_prefix('[') {
        let end = rest.find(']')?;
        let name = &host[..end + 2];
        match &rest[end + 1..] {
            "" => (name, None),
            p => (name, Some(p.strip_prefix(':')?)),
        }
    } else {
        match host.rsplit_once(':') {
            Some((n, p)) => (n, Some(p)),
            None => (host, None),
        }
    };
    let port = match port {
        None => None,
        Some(p) => Some(p.parse::<u16>().ok()?),
    };
    (!name.is_empty()).then_some((name, port))
}

fn header_str<'a>(h: &'a HeaderMap, name: header::HeaderName) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// Is this request's `Origin` / `Sec-Fetch-Site` acceptable for a write?
fn cross_origin_refusal(hosts: &HostPolicy, h: &HeaderMap) -> Option<ApiError> {
    let refuse = |why: String| Some(ApiError::new(403, why, Some("origin".into())));
    if let Some(site) = h.get("sec-fetch-site") {
        let site = site.to_str().unwrap_or("").trim().to_ascii_lowercase();
        if site != "same-origin" && site != "none" {
            return refuse(format!(
                "cross-origin write refused (Sec-Fetch-Site: {site})"
            ));
        }
    }
    if let Some(origin) = h.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("").trim();
        let authority = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"));
        match authority {
            Some(a) if !a.contains('/') && hosts.allows(a) => {}
            _ => {
                let shown: String = origin.chars().take(100).collect();
                return refuse(format!(
                    "cross-origin write refused (Origin {shown:?} is not this API)"
                ));
            }
        }
    }
    None
}

/// Host check for every request; for writes also the origin checks and the
/// content type. All before any body byte is read.
pub(super) async fn check_request(
    State(hosts): State<Arc<HostPolicy>>,
    req: Request,
    next: Next,
) -> Response {
    let host = header_str(req.headers(), header::HOST)
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.to_string()));
    match host {
        None => return ApiError::bad_request("missing Host header", "host").into_response(),
        Some(h) if !hosts.allows(&h) => {
            let shown: String = h.chars().take(100).collect();
            return ApiError::new(
                421,
                format!(
                    "Host {shown:?} does not name this API (use its bound address, or list the name in api_allowed_hosts)"
                ),
                Some("host".into()),
            )
            .into_response();
        }
        Some(_) => {}
    }
    let m = req.method();
    if !matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS) {
        if let Some(e) = cross_origin_refusal(&hosts, req.headers()) {
            return e.into_response();
        }
        if let Some(types) = write_content_types(m, req.uri().path()) {
            let ct = header_str(req.headers(), header::CONTENT_TYPE).unwrap_or("");
            let essence = ct
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            if !types.contains(&essence.as_str()) {
                let shown: String = ct.chars().take(100).collect();
                return ApiError::new(
                    415,
                    format!("Content-Type must be {} (got {shown:?})", types[0]),
                    Some("content-type".into()),
                )
                .into_response();
            }
        }
    }
    next.run(req).await
}

fn too_large() -> ApiError {
    ApiError::new(
        413,
        format!("request body larger than {MAX_BODY_BYTES} bytes"),
        Some("body".into()),
    )
}

/// The declared `Content-Length`, if any (unparseable counts as none:
/// hyper has refused a malformed one already).
fn content_length(h: &HeaderMap) -> Option<u64> {
    header_str(h, header::CONTENT_LENGTH).and_then(|v| v.trim().parse().ok())
}

/// Read a write's whole body — at most [`MAX_BODY_BYTES`], within
/// `timeout` — before the request competes for a permit, so stalled or
/// huge bodies cannot hold permits. A declared length over the bound is
/// `413` at once, without reading. (`/v1/import` streams its own body.)
pub(super) async fn buffer_body(
    State(timeout): State<Duration>,
    req: Request,
    next: Next,
) -> Response {
    if matches!(*req.method(), Method::GET | Method::HEAD) || req.uri().path() == "/v1/import" {
        return next.run(req).await;
    }
    if content_length(req.headers()).is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return too_large().into_response();
    }
    let (parts, body) = req.into_parts();
    let read = Limited::new(body, MAX_BODY_BYTES).collect();
    let bytes = match tokio::time::timeout(timeout, read).await {
        Err(_) => {
            return ApiError::new(
                408,
                format!(
                    "the request body did not arrive within {:.0} s",
                    timeout.as_secs_f64()
                ),
                Some("body".into()),
            )
            .into_response()
        }
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => {
            return too_large().into_response()
        }
        Ok(Err(e)) => {
            return ApiError::bad_request(format!("reading the request body: {e}"), "body")
                .into_response()
        }
        Ok(Ok(collected)) => collected.to_bytes(),
    };
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

/// Permits for handlers, and their time bound.
#[derive(Clone)]
pub(super) struct Admission {
    permits: Arc<Semaphore>,
    limits: ApiLimits,
}

impl Admission {
    pub fn new(limits: ApiLimits) -> Self {
        Admission {
            permits: Arc::new(Semaphore::new(limits.max_concurrent_requests)),
            limits,
        }
    }
}

/// Take a permit (503 when none is free — nothing has been done yet). A
/// read then has `request_timeout` to produce its response (503 after); an
/// admitted write runs to completion, so a 503 never follows stored work.
/// A streaming body (events) is not timed once its headers are out.
pub(super) async fn admit(State(a): State<Admission>, req: Request, next: Next) -> Response {
    if unbounded_route(req.uri().path()) {
        return next.run(req).await;
    }
    let Ok(_permit) = a.permits.clone().try_acquire_owned() else {
        return ApiError::unavailable(format!(
            "more than {} requests at once; nothing was done, retry shortly",
            a.limits.max_concurrent_requests
        ))
        .into_response();
    };
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        return next.run(req).await;
    }
    match tokio::time::timeout(a.limits.request_timeout, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => ApiError::unavailable(format!(
            "the node did not answer within {:.1} s",
            a.limits.request_timeout.as_secs_f64()
        ))
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_policy_of_a_loopback_bind() {
        let p = HostPolicy::for_bound(SocketAddr::from(([127, 0, 0, 1], 8080)));
        for ok in [
            "127.0.0.1:8080",
            "localhost:8080",
            "[::1]:8080",
            "LOCALHOST:8080",
        ] {
            assert!(p.allows(ok), "{ok}");
        }
        for bad in [
            "127.0.0.1:8081",
            "localhost",
            "evil.example:8080",
            "evil.example",
            "127.0.0.1:notaport",
            "",
            "[::1:8080",
            "192.168.1.5:8080",
        ] {
            assert!(!p.allows(bad), "{bad}");
        }
        let p = p.with_extra_hosts(["Node.LAN".to_string(), "proxy:443".to_string()]);
        assert!(p.allows("node.lan:9999"));
        assert!(p.allows("proxy:443"));
        assert!(!p.allows("proxy:444"));
    }

    #[test]
    fn host_policy_of_other_binds() {
        let any = HostPolicy::for_bound(SocketAddr::from(([0, 0, 0, 0], 80)));
        assert!(any.allows("10.1.2.3"));
        assert!(any.allows("10.1.2.3:80"));
        assert!(!any.allows("attacker.example"));
        let lan = HostPolicy::for_bound(SocketAddr::from(([10, 0, 0, 7], 9000)));
        assert!(lan.allows("10.0.0.7:9000"));
        assert!(!lan.allows("10.0.0.8:9000"));
        let bare = HostPolicy::loopback_any_port();
        assert!(bare.allows("127.0.0.1:1"));
        assert!(bare.allows("localhost"));
        assert!(!bare.allows("rebind.example:1"));
    }

    #[test]
    fn origin_rules() {
        let p = HostPolicy::for_bound(SocketAddr::from(([127, 0, 0, 1], 7000)));
        let h = |pairs: &[(&'static str, &'static str)]| {
            let mut m = HeaderMap::new();
            for (k, v) in pairs {
                m.insert(*k, v.parse().expect("header value"));
            }
            m
        };
        assert!(cross_origin_refusal(&p, &h(&[])).is_none());
        assert!(cross_origin_refusal(&p, &h(&[("origin", "http://127.0.0.1:7000")])).is_none());
        assert!(cross_origin_refusal(&p, &h(&[("sec-fetch-site", "same-origin")])).is_none());
        for bad in [
            h(&[("origin", "http://evil.example")]),
            h(&[("origin", "null")]),
            h(&[("origin", "http://127.0.0.1:7001")]),
            h(&[("origin", "http://127.0.0.1:7000/x")]),
            h(&[("sec-fetch-site", "cross-site")]),
            h(&[("sec-fetch-site", "same-site")]),
        ] {
            let e = cross_origin_refusal(&p, &bad).expect("refused");
            assert_eq!(e.status, 403);
            assert_eq!(e.field.as_deref(), Some("origin"));
        }
    }
}
