//! The running node: one actor that owns the `Swarm` and the exchange state
//! and executes its decisions; a bounded pool for every store call; a
//! cloneable [`Node`] handle for the API.
//!
//! - [`run`]: the actor's loop. One task owns [`crate::network::Net`] (the
//!   swarm) and the exchange core ([`metamesh_exchange::State`], IO-less:
//!   every exchange decision is made there); it turns swarm events, commands
//!   from handles, completions of store jobs and the core's timers into the
//!   core's inputs, and never calls sled.
//! - [`exec`]: executes the core's outputs; [`store_io`]: the blocking store
//!   work they need (group-commit writes, serving plans, batched
//!   verification), run on [`pool`]s.
//! - [`handle`]: [`Node`], the API's way in (bounded command channel, oneshot
//!   replies); [`views`]: the collective view and our own insights, computed
//!   on the pool.
//!
//! (This replaces `service.rs`, a `Node` around one `Mutex<State>`.)

mod api_impl;
mod core_config;
pub use core_config::core_config;
mod exec;
pub mod handle;
mod health;
pub use health::{Fault, Health};
pub mod pool;
mod run;
mod store_io;
mod views;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use metamesh_protocol::record::KeyCache;
use metamesh_protocol::reputation::ReputationState;
use metamesh_storage::{Store, StoreConfig, StoreError, Writer, WriterConfig};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;

pub use handle::Node;

use crate::config::Config;
use crate::datadir::DataDir;
use crate::events::{self, NodeEvent};
use crate::metrics::Metrics;
use crate::network::{self, NetError, NetworkConfig};

/// Capacity of the command channel (handles → actor).
pub const COMMAND_CHANNEL_CAPACITY: usize = 256;
/// Capacity of the completion channel (store jobs and timers → actor).
pub const DONE_CHANNEL_CAPACITY: usize = 1024;
/// Most stored peer addresses re-dialled on start.
const MAX_REDIAL: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("{0}")]
    Identity(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Net(#[from] NetError),
    #[error("configuration: {0}")]
    Config(String),
    #[error("HTTP API: {0}")]
    Api(String),
    #[error("the node has stopped")]
    Stopped,
}

/// Unix seconds: the node's one clock (the actor reads it once per input).
pub fn now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// How to start a node.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    pub data_dir: PathBuf,
    pub config: Config,
    /// Create the identity when the data dir has none (tests, `swarm`).
    /// `metamesh run` sets this too (see docs/node.md: first run initialises).
    pub auto_init: bool,
    /// Serve the HTTP API on `config.api`.
    pub serve_api: bool,
}

/// What the actor and the handles share: immutable after start, or
/// internally synchronised (store, metrics, channels).
pub(crate) struct Shared {
    pub peer_id: PeerId,
    pub store: Store,
    pub metrics: Metrics,
    pub events: broadcast::Sender<NodeEvent>,
    pub cfg: Config,
    /// The configured parent (`parent`): an anchor of our collective view.
    pub parent: Option<(PeerId, Multiaddr)>,
    /// Store reads, serving and verification.
    pub pool: pool::Pool,
    /// Core writes (they wait for the group commit's flush).
    pub write_pool: pool::Pool,
    /// Writes of our own records (never behind peers' writes).
    pub own_write_pool: pool::Pool,
    /// Signature checks of peers' records.
    pub verify_pool: pool::Pool,
    /// The group-commit writer: concurrent batches share one flush (taken
    /// on shutdown: its thread holds the store).
    pub writer: std::sync::Mutex<Option<Writer>>,
    /// Signers' decoded keys (verification decodes each key once).
    pub keys: std::sync::Mutex<KeyCache>,
    /// Unix seconds before which nothing is signed: our epoch's second
    /// must be over, so that a later process (even one restored from an
    /// old backup that never saw this epoch) starts in a later epoch.
    pub sign_after: f64,
    /// Connected peers (written by the actor, read by handles).
    pub connected: AtomicUsize,
    /// What the peer manager did so far (written by the actor).
    pub peer_counters: std::sync::Mutex<network::PeerCounters>,
    /// Whether the store writes (issue 12 #3b: a full disk refuses writes
    /// with 507 and makes the node unhealthy until a probe write succeeds).
    pub health: Health,
    pub started: Instant,
    pub api_addr: OnceLock<SocketAddr>,
    pub listen_addrs: OnceLock<Vec<Multiaddr>>,
}

impl Shared {
    /// The writer, unless the node is shutting down.
    pub fn writer(&self) -> Option<Writer> {
        self.writer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn emit(&self, ev: NodeEvent) {
        let _ = self.events.send(ev);
    }
}

/// A node started by [`start_node`].
pub struct RunningNode {
    pub node: Node,
    pub api_addr: Option<SocketAddr>,
    /// Dialable addresses with `/p2p/<PeerId>` (0.0.0.0 shown as 127.0.0.1).
    pub listen_addrs: Vec<Multiaddr>,
    stop_api: watch::Sender<bool>,
    api_task: Option<JoinHandle<()>>,
    metrics_task: Option<JoinHandle<()>>,
    actor_task: JoinHandle<()>,
}

/// Replace unspecified IPs by loopback and append `/p2p/<peer>`.
pub fn dialable(addr: &Multiaddr, peer: PeerId) -> Multiaddr {
    let mut out = Multiaddr::empty();
    for p in addr.iter() {
        match p {
            Protocol::Ip4(ip) if ip.is_unspecified() => {
                out.push(Protocol::Ip4(std::net::Ipv4Addr::LOCALHOST))
            }
            Protocol::Ip6(ip) if ip.is_unspecified() => {
                out.push(Protocol::Ip6(std::net::Ipv6Addr::LOCALHOST))
            }
            Protocol::P2p(_) => {}
            other => out.push(other),
        }
    }
    out.push(Protocol::P2p(peer));
    out
}

/// Blocking: what the core starts with — a new durable epoch for our own
/// seqs (so no slot is ever signed twice, even after a restore from an old
/// backup, and a lone node records at once), the frontier, reputation and
/// our latest insight record.
fn core_init(store: &Store, key: &Keypair) -> Result<metamesh_exchange::Init, NodeError> {
    let me = key.public().to_peer_id();
    let epoch = store.begin_epoch(now_secs() as u64)?;
    let reputation = store
        .reputation_entries()
        .into_iter()
        .filter_map(|(p, b)| Some((p, ReputationState::from_bytes(&b).ok()?)))
        .collect();
    let own_insight = store
        .latest_insights()
        .into_iter()
        .find(|(_, b)| b.origin == me);
    Ok(metamesh_exchange::Init {
        key: key.clone(),
        epoch: Some(epoch.epoch),
        last_own_seq: epoch.prev_seq.max(store.own_seq()),
        frontier: store.frontier(),
        reputation,
        own_insight,
        seed: rand::random(),
    })
}

/// Start a node: identity, store, network, the actor and (optionally) the API.
pub async fn start_node(opts: NodeOptions) -> Result<RunningNode, NodeError> {
    let cfg = opts.config;
    cfg.validate()
        .map_err(|e| NodeError::Config(e.to_string()))?;
    let dd = DataDir {
        root: opts.data_dir.clone(),
    };
    let pool = pool::Pool::new(pool::STORE_WORKERS);
    // Opening the store reads and may repair it: on the pool.
    let (key, store, init, redial) = {
        let auto_init = opts.auto_init;
        let cache = cfg.store_cache_bytes();
        pool.run(move || -> Result<_, NodeError> {
            let key = if auto_init {
                dd.init()
            } else {
                dd.load_identity()
            }
            .map_err(|e| NodeError::Identity(format!("{e:#}")))?;
            let store_cfg = StoreConfig {
                cache_capacity_bytes: cache,
                ..StoreConfig::default()
            };
            let store = Store::open(&dd.store_path(), &store_cfg)?;
            let init = core_init(&store, &key)?;
            let redial = store.peer_addrs();
            Ok((key, store, init, redial))
        })
        .await
        .map_err(|e| NodeError::Config(e.to_string()))??
    };
    let peer_id = key.public().to_peer_id();

    let mut bootstrap: Vec<Multiaddr> = cfg.bootstrap_peers().into_iter().map(|(_, a)| a).collect();
    if let Some((_, a)) = cfg.parent_peer() {
        bootstrap.push(a);
    }
    // Restart: re-dial peers we knew, so a node catches up without flags.
    for (peer, addrs) in redial.into_iter().take(MAX_REDIAL) {
        if let Some(a) = addrs.iter().find_map(|a| a.parse::<Multiaddr>().ok()) {
            bootstrap.push(dialable(&a, peer));
        }
    }
    let core_cfg = core_config::core_config(&cfg);
    let netcfg = NetworkConfig {
        mesh: cfg.mesh.clone(),
        listen: cfg.listen_addrs(),
        bootstrap,
        subscribe: cfg.sharing.enabled,
        max_connections: cfg.limits.max_connections,
        max_connections_per_peer: cfg.limits.max_connections_per_peer,
        request_timeout: Duration::from_secs(cfg.limits.request_timeout_secs),
        idle_timeout: Duration::from_secs(300),
        denied: cfg.denied_peers(),
        target_peers: cfg.peers.target,
        max_peers: cfg.peers.max,
        peer_grace: Duration::from_secs(cfg.peers.grace_secs),
        reconnect_cooldown: Duration::from_secs(cfg.peers.reconnect_cooldown_secs),
        protected: cfg.parent_peer().map(|(p, _)| p).into_iter().collect(),
        // the core's rule: no tree on a sharing-off node
        tree: core_cfg.tree_active(),
    };
    let want_listeners = netcfg.listen.len();
    let net = network::build(key.clone(), netcfg)?;

    let writer = Writer::start(store.clone(), None, WriterConfig::default())?;
    let shared = Arc::new(Shared {
        peer_id,
        store,
        metrics: Metrics::new(),
        events: events::channel(),
        cfg: cfg.clone(),
        parent: cfg.parent_peer(),
        pool,
        write_pool: pool::Pool::with_lanes(
            pool::WRITE_WORKERS,
            pool::WRITE_LOW_WORKERS,
            pool::LOW_QUEUE,
        ),
        own_write_pool: pool::Pool::new(pool::OWN_WRITE_WORKERS),
        verify_pool: pool::Pool::with_lanes(
            pool::VERIFY_WORKERS,
            pool::VERIFY_LOW_WORKERS,
            pool::LOW_QUEUE,
        ),
        writer: std::sync::Mutex::new(Some(writer)),
        keys: std::sync::Mutex::new(KeyCache::new()),
        sign_after: init.epoch.map_or(0.0, |e| f64::from(e) + 1.0),
        connected: AtomicUsize::new(0),
        peer_counters: std::sync::Mutex::new(network::PeerCounters::default()),
        health: Health::default(),
        started: Instant::now(),
        api_addr: OnceLock::new(),
        listen_addrs: OnceLock::new(),
    });
    let core = metamesh_exchange::State::new(core_cfg, init);
    let (cmd_tx, cmd_rx) = mpsc::channel(COMMAND_CHANNEL_CAPACITY);
    let actor = run::Actor::new(shared.clone(), net, core, cmd_rx);
    let actor_task = tokio::spawn(actor.run());
    let node = Node::new(shared.clone(), cmd_tx);

    // Wait until the transports are listening, to report real ports.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut addrs = Vec::new();
    while Instant::now() < deadline {
        addrs = node.raw_listen_addrs().await?;
        if addrs.len() >= want_listeners && !addrs.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let listen_addrs: Vec<Multiaddr> = addrs.iter().map(|a| dialable(a, peer_id)).collect();
    let _ = shared.listen_addrs.set(listen_addrs.clone());

    let (stop_api, stop_rx) = watch::channel(false);
    let mut api_addr = None;
    let mut api_task = None;
    if opts.serve_api {
        let addr = cfg
            .api_addr()
            .map_err(|e| NodeError::Config(e.to_string()))?;
        let server = crate::api::ApiServer::bind(addr)
            .await
            .map_err(|e| NodeError::Api(e.to_string()))?
            .with_allowed_hosts(cfg.api_allowed_hosts.iter().cloned());
        let bound = server.local_addr();
        let _ = shared.api_addr.set(bound);
        api_addr = Some(bound);
        let api_node = node.clone();
        let mut stop = stop_rx;
        api_task = Some(tokio::spawn(async move {
            let shutdown = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            if let Err(e) = server.run(api_node, shutdown).await {
                tracing::error!(error = %e, "HTTP API stopped");
            }
        }));
    }
    let mut metrics_task = None;
    if let Some(addr) = cfg
        .metrics_addr()
        .map_err(|e| NodeError::Config(e.to_string()))?
    {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| NodeError::Api(format!("binding the metrics listener to {addr}: {e}")))?;
        let metrics_node = node.clone();
        let mut stop = stop_api.subscribe();
        metrics_task = Some(tokio::spawn(async move {
            let shutdown = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            if let Err(e) = crate::api::serve_metrics(metrics_node, listener, shutdown).await {
                tracing::error!(error = %e, "metrics listener stopped");
            }
        }));
    }
    tracing::info!(peer = %peer_id, "node started");
    Ok(RunningNode {
        metrics_task,
        node,
        api_addr,
        listen_addrs,
        stop_api,
        api_task,
        actor_task,
    })
}

impl RunningNode {
    pub fn peer_id(&self) -> PeerId {
        self.node.peer_id()
    }

    /// What the peer manager did so far (connections, prunes, refusals).
    pub fn peer_counters(&self) -> network::PeerCounters {
        *self
            .node
            .shared()
            .peer_counters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// The first TCP dialable address (handy for bootstrapping others).
    pub fn tcp_addr(&self) -> Option<Multiaddr> {
        self.listen_addrs
            .iter()
            .find(|a| a.iter().any(|p| matches!(p, Protocol::Tcp(_))))
            .cloned()
    }

    /// Resolves when the store is broken for this instance but its disk has
    /// room again (see `health`): stop this node and start it again to
    /// reopen the store.
    pub fn store_broken(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        self.node.shared().health.reopen_wanted()
    }

    /// Stop the API, then the actor (which saves peer addresses and
    /// reputation on its way out), and flush the store.
    pub async fn shutdown(self) -> Result<(), NodeError> {
        let _ = self.stop_api.send(true);
        if let Some(t) = self.api_task {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
        if let Some(t) = self.metrics_task {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
        let (tx, rx) = oneshot::channel();
        if self.node.stop(tx).await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(10), rx).await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), self.actor_task).await;
        let shared = self.node.shared().clone();
        let pool = shared.pool.clone();
        pool.run(move || {
            let writer = shared
                .writer
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            if let Some(w) = writer {
                w.shutdown(); // writes what is queued, then lets go of the store
            }
            shared.store.flush()
        })
        .await
        .map_err(|e| NodeError::Config(e.to_string()))??;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn dialable_addresses_use_loopback_and_name_the_peer() {
        let peer = PeerId::random();
        let a: Multiaddr = "/ip4/0.0.0.0/tcp/4001".parse().unwrap();
        assert_eq!(
            dialable(&a, peer).to_string(),
            format!("/ip4/127.0.0.1/tcp/4001/p2p/{peer}")
        );
        let q: Multiaddr = format!("/ip4/10.0.0.2/udp/9/quic-v1/p2p/{peer}")
            .parse()
            .unwrap();
        assert_eq!(
            dialable(&q, peer).to_string(),
            format!("/ip4/10.0.0.2/udp/9/quic-v1/p2p/{peer}")
        );
    }
}
