//! The listener: an accept loop over hyper's HTTP/1 server with a
//! connection cap, a header-read (and keep-alive idle) timeout, and
//! graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::sync::{watch, Semaphore};

use super::guard::HostPolicy;
use super::http::{build_router, metrics_router, ApiLimits};
use super::NodeApi;

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
    extra_hosts: Vec<String>,
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
        Ok(Self::from_listener(listener, addr))
    }

    fn from_listener(listener: tokio::net::TcpListener, addr: SocketAddr) -> ApiServer {
        ApiServer {
            listener,
            addr,
            limits: ApiLimits::default(),
            extra_hosts: Vec::new(),
        }
    }

    /// Use other concurrency/time bounds than the defaults.
    pub fn with_limits(mut self, limits: ApiLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Also answer requests whose `Host` is one of these (`name` or
    /// `name:port`; the `api_allowed_hosts` config key), e.g. behind a proxy.
    pub fn with_allowed_hosts(mut self, hosts: impl IntoIterator<Item = String>) -> Self {
        self.extra_hosts.extend(hosts);
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
        let hosts = HostPolicy::for_bound(self.addr).with_extra_hosts(self.extra_hosts);
        let app = build_router(node, Some(rx), self.limits, hosts);
        accept_loop(self.listener, app, self.limits, shutdown, Some(tx)).await;
        Ok(())
    }
}

/// Accept connections until `shutdown`, then tell long-lived streams to
/// end (`streams_end`) and let open connections finish.
async fn accept_loop(
    listener: tokio::net::TcpListener,
    app: Router,
    limits: ApiLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
    streams_end: Option<watch::Sender<bool>>,
) {
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors or a connection reset before
                    // accept: back off briefly instead of spinning.
                    tracing::warn!(error = %e, "accepting an API connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            tracing::debug!(%peer, max = limits.max_connections, "API connection limit reached; closing the new connection");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let conn =
            http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "API connection ended");
            }
        });
    }
    drop(listener);
    if let Some(tx) = streams_end {
        let _ = tx.send(true);
    }
    graceful.shutdown().await;
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

async fn into_server(listen: ApiListener) -> Result<ApiServer, ServeError> {
    match listen {
        ApiListener::Addr(a) => ApiServer::bind(a).await,
        ApiListener::Bound(listener) => {
            let addr = listener.local_addr()?;
            Ok(ApiServer::from_listener(listener, addr))
        }
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
    let server = into_server(listen.into()).await?;
    let bound = server.local_addr();
    tracing::info!(addr = %bound, "HTTP API listening");
    server.run(node, shutdown).await?;
    Ok(bound)
}

/// Serve only `GET /metrics` on `listen` (the optional separate metrics
/// address, config key `metrics_listen`) until `shutdown`. No `Host`
/// check here: a scraper may use any name for the node.
pub async fn serve_metrics<N: NodeApi>(
    node: N,
    listen: impl Into<ApiListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<SocketAddr, ServeError> {
    let server = into_server(listen.into()).await?;
    let bound = server.local_addr();
    tracing::info!(addr = %bound, "metrics listening");
    accept_loop(
        server.listener,
        metrics_router(node),
        server.limits,
        shutdown,
        None,
    )
    .await;
    Ok(bound)
}
