//! The running node: store + network + validation pipeline + exchange logic,
//! and the [`NodeApi`] the HTTP layer serves.
//!
//! Tasks (all stopped by [`RunningNode::shutdown`]):
//! - the network event loop ([`crate::network`]), which owns the swarm;
//! - the *event task*, which handles what the network reports (gossip to
//!   validate, requests to serve, peers coming and going);
//! - the *announcer*, which publishes `pattern_announcement`s periodically
//!   and, debounced, soon after new patterns, and `insight_broadcast`s when
//!   our own insights change (rate-limited);
//! - *housekeeping*: persists reputation, feeds it to gossipsub as the
//!   application score, remembers peer addresses, updates gauges.
//!
//! Pulls (`pattern_request` sessions) and request serving run as short
//! spawned tasks; at most one pull session runs per peer.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use libp2p::gossipsub::MessageAcceptance;
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::request_response::ResponseChannel;
use libp2p::{Multiaddr, PeerId};
use metamesh_protocol::aggregate::{
    robust_aggregate, OriginEvidence, RobustAggregate, RobustConfig,
};
use metamesh_protocol::insights::{self, InsightsDocument};
use metamesh_protocol::posterior::Prior;
use metamesh_protocol::record::BODY_VERSION;
use metamesh_protocol::reputation::{ReputationEvent, Trust};
use metamesh_protocol::sync::{self, Frontier};
use metamesh_protocol::wire::{
    FrontierEntry, GossipMessage, InsightBroadcast, PatternAnnouncement, PatternRequest,
    PatternResponse, RequestFilters, WireError, MAX_GOSSIP_BYTES, MAX_RECORDS_PER_RESPONSE,
    MAX_RESPONSE_BYTES, WIRE_VERSION,
};
use metamesh_protocol::RecordError;
use metamesh_protocol::{Depth, DepthTable, InsightBody, Pattern, SignedRecord};
use metamesh_storage::{AppendOutcome, InsertOutcome, Store, StoreConfig, StoreError};
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinHandle;

use crate::api::{
    ApiError, Gauges, ImportOutcome, NodeApi, NodeInfo, PageCursor, PatternPage, PatternView,
    PeerView, Recommendation, ReputationView, Scope, StatsView, SubmittedPattern,
};
use crate::config::Config;
use crate::datadir::DataDir;
use crate::events::{self, NodeEvent};
use crate::learning;
use crate::metrics::Metrics;
use crate::network::{self, NetError, NetEvent, NetworkConfig, NetworkHandle, TopicKind};
use crate::pipeline::{self, Checked, Limiter, ReputationBook};

/// Inbound sync requests a peer may make per second (burst 4×).
const REQUESTS_PER_SEC_PER_PEER: f64 = 10.0;
/// Most pages one pull session fetches before yielding (it is re-run later
/// by the next announcement if more is missing).
const MAX_PAGES_PER_SESSION: usize = 4096;
/// How long a first local record waits for the own-frontier check (see
/// [`Node::wait_own_seq_safe`]).
const OWN_SEQ_WAIT: Duration = Duration::from_secs(15);
/// Housekeeping period.
const HOUSEKEEPING_PERIOD: Duration = Duration::from_secs(2);
/// Announcer tick (insight checks run at this pace; announcements at the
/// configured interval or when triggered).
const ANNOUNCER_TICK: Duration = Duration::from_millis(500);
/// An unchanged announcement is re-sent after this long (just past
/// gossipsub's duplicate-cache window).
const REANNOUNCE_UNCHANGED: Duration = Duration::from_secs(65);
/// Most peers whose pull targets are tracked for de-duplication.
const MAX_TRACKED_PULL_TARGETS: usize = 1024;
/// Most stored peer addresses re-dialled on start.
const MAX_REDIAL: usize = 16;
/// Slack kept under the wire response bound for the envelope's own fields.
const RESPONSE_SLACK: usize = 64 * 1024;
/// Housekeeping rounds between re-syncs with (and re-dials of) the parent:
/// parent and child may be in different meshes, so no announcement tells
/// either about the other's new patterns.
const PARENT_SYNC_ROUNDS: u64 = 15;
/// Most children whose promotions a parent remembers (for `/v1/knowledge`).
const MAX_TRACKED_CHILDREN: usize = 1024;

/// What became of a peer's insight record (gossip, inheritance, promotion).
enum PeerInsight {
    /// Verified, newer than what we held, stored.
    Stored(Box<InsightBody>),
    /// Not newer than what we hold, or our own.
    Stale,
    /// Valid but refused by local policy (reputation) or unsupported.
    Refused,
    /// Invalid (signature, schema, origin): counted and charged.
    Invalid,
}

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
}

/// Unix seconds.
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

/// What [`Node::ingest`] did with a batch.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct IngestReport {
    pub inserted: u64,
    pub declined: u64,
    pub duplicates: u64,
    pub rejected: u64,
    pub deferred: u64,
}

impl IngestReport {
    /// Did the batch move our frontier?
    pub fn progressed(&self) -> bool {
        self.inserted + self.declined > 0
    }
}

/// How a pull session decides what to ask for.
#[derive(Debug, Clone)]
enum Pull {
    /// Exactly the ranges we lack relative to an announced frontier.
    Ranges(Vec<FrontierEntry>),
    /// "Here is my frontier; send what I lack."
    Have,
}

struct State {
    rep: ReputationBook,
    gossip_rate: Limiter,
    request_rate: Limiter,
    serve_bytes: Limiter,
    pull_rate: Limiter,
    origin_quota: Limiter,
    /// Announced frontiers that running pull sessions are fetching, by peer.
    pull_targets: HashMap<PeerId, Frontier>,
    /// peer → "run again when done" flag, for running pull sessions.
    syncing: HashMap<PeerId, bool>,
    connected: HashSet<PeerId>,
    insight_seq: u64,
    last_insight_at: f64,
    last_insight_own_count: u64,
    last_announce: Option<Instant>,
    /// Digest and time of the last published announcement.
    last_announced: Option<([u8; 32], Instant)>,
    last_collective: Option<(Depth, f64)>,
    /// Our current signed insight record (re-signed when our stats change).
    own_insight: Option<(SignedRecord, InsightBody)>,
    /// Child side: seq and time of the last promotion attempt to the parent.
    last_promotion: Option<(u64, f64)>,
    promoting: bool,
    /// Parent side: children that promoted their insights, with the seq.
    promoted_by: BTreeMap<PeerId, u64>,
}

struct Inner {
    key: Keypair,
    peer_id: PeerId,
    store: Store,
    net: NetworkHandle,
    metrics: Metrics,
    events: broadcast::Sender<NodeEvent>,
    cfg: Config,
    /// The configured parent (`parent`): an anchor of our collective view.
    parent: Option<(PeerId, Multiaddr)>,
    state: Mutex<State>,
    announce_tx: mpsc::Sender<()>,
    own_seq_safe: watch::Sender<bool>,
    started: Instant,
    api_addr: Mutex<Option<SocketAddr>>,
    listen_addrs: Mutex<Vec<Multiaddr>>,
}

/// The running node (cheap to clone).
#[derive(Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain data behind; carry on.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A node started by [`start_node`].
pub struct RunningNode {
    pub node: Node,
    pub api_addr: Option<SocketAddr>,
    /// Dialable addresses with `/p2p/<PeerId>` (0.0.0.0 shown as 127.0.0.1).
    pub listen_addrs: Vec<Multiaddr>,
    shutdown_tx: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    net_task: JoinHandle<()>,
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

/// Start a node: identity, store, network, tasks and (optionally) the API.
pub async fn start_node(opts: NodeOptions) -> Result<RunningNode, NodeError> {
    let cfg = opts.config;
    cfg.validate()
        .map_err(|e| NodeError::Config(e.to_string()))?;
    let dd = DataDir {
        root: opts.data_dir.clone(),
    };
    let key = if opts.auto_init {
        dd.init()
    } else {
        dd.load_identity()
    }
    .map_err(|e| NodeError::Identity(format!("{e:#}")))?;
    let store_cfg = StoreConfig {
        cache_capacity_bytes: cfg.store_cache_bytes(),
        ..StoreConfig::default()
    };
    let store = Store::open(&dd.store_path(), &store_cfg)?;
    let peer_id = key.public().to_peer_id();

    let mut bootstrap: Vec<Multiaddr> = cfg.bootstrap_peers().into_iter().map(|(_, a)| a).collect();
    if let Some((_, a)) = cfg.parent_peer() {
        bootstrap.push(a);
    }
    // Restart: re-dial peers we knew, so a node catches up without flags.
    for (peer, addrs) in store.peer_addrs().into_iter().take(MAX_REDIAL) {
        if let Some(a) = addrs.iter().find_map(|a| a.parse::<Multiaddr>().ok()) {
            bootstrap.push(dialable(&a, peer));
        }
    }
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
        ..NetworkConfig::default()
    };
    let no_one_to_ask = netcfg.bootstrap.is_empty();
    let (net, net_events, net_task) = network::start(key.clone(), netcfg)?;

    let (announce_tx, announce_rx) = mpsc::channel(1);
    let mut rep = ReputationBook::new(&cfg);
    rep.load(store.reputation_entries());
    let now = now_secs();
    let lim = &cfg.limits;
    let per_hour = f64::from(lim.records_per_origin_per_hour);
    let state = State {
        rep,
        gossip_rate: Limiter::new(
            f64::from(lim.records_per_sec_per_peer),
            f64::from(lim.record_burst_per_peer),
        ),
        request_rate: Limiter::new(REQUESTS_PER_SEC_PER_PEER, REQUESTS_PER_SEC_PER_PEER * 4.0),
        serve_bytes: Limiter::new(
            lim.bytes_per_sec_per_peer as f64,
            (lim.bytes_per_sec_per_peer as f64).max(lim.max_response_bytes as f64),
        ),
        pull_rate: Limiter::new(
            f64::from(lim.records_per_sec_per_peer),
            f64::from(lim.record_burst_per_peer),
        ),
        origin_quota: Limiter::new(per_hour / 3600.0, per_hour),
        syncing: HashMap::new(),
        pull_targets: HashMap::new(),
        connected: HashSet::new(),
        insight_seq: (now * 1000.0) as u64,
        last_insight_at: 0.0,
        last_insight_own_count: 0,
        last_announce: None,
        last_announced: None,
        last_collective: None,
        own_insight: None,
        last_promotion: None,
        promoting: false,
        promoted_by: BTreeMap::new(),
    };
    // A node that has signed before knows its own seq; one that has not
    // must first learn it from peers (see `wait_own_seq_safe`).
    // With no peer to ask (no bootstrap address, no remembered peer) there
    // is nothing to wait for.
    let (own_seq_safe, _) = watch::channel(store.own_seq() > 0 || no_one_to_ask);
    let node = Node {
        inner: Arc::new(Inner {
            key,
            peer_id,
            store,
            net: net.clone(),
            metrics: Metrics::new(),
            events: events::channel(),
            cfg: cfg.clone(),
            parent: cfg.parent_peer(),
            state: Mutex::new(state),
            announce_tx,
            own_seq_safe,
            started: Instant::now(),
            api_addr: Mutex::new(None),
            listen_addrs: Mutex::new(Vec::new()),
        }),
    };

    // Wait until the transports are listening, to report real ports.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut addrs = Vec::new();
    while Instant::now() < deadline {
        addrs = net.listen_addrs().await?;
        if addrs.len() >= cfg.listen_addrs().len() && !addrs.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let listen_addrs: Vec<Multiaddr> = addrs.iter().map(|a| dialable(a, peer_id)).collect();
    *lock(&node.inner.listen_addrs) = listen_addrs.clone();

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let mut tasks = vec![
        tokio::spawn(node.clone().event_task(net_events, shutdown_rx.clone())),
        tokio::spawn(node.clone().announcer(announce_rx, shutdown_rx.clone())),
        tokio::spawn(node.clone().housekeeping(shutdown_rx.clone())),
    ];

    let mut api_addr = None;
    if opts.serve_api {
        let addr = cfg
            .api_addr()
            .map_err(|e| NodeError::Config(e.to_string()))?;
        let server = crate::api::ApiServer::bind(addr)
            .await
            .map_err(|e| NodeError::Api(e.to_string()))?
            .with_allowed_hosts(cfg.api_allowed_hosts.iter().cloned());
        let bound = server.local_addr();
        *lock(&node.inner.api_addr) = Some(bound);
        api_addr = Some(bound);
        let api_node = node.clone();
        let mut stop = shutdown_rx.clone();
        tasks.push(tokio::spawn(async move {
            let shutdown = async move { stopped(&mut stop).await };
            if let Err(e) = server.run(api_node, shutdown).await {
                tracing::error!(error = %e, "HTTP API stopped");
            }
        }));
    }
    if let Some(addr) = cfg
        .metrics_addr()
        .map_err(|e| NodeError::Config(e.to_string()))?
    {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| NodeError::Api(format!("binding the metrics listener to {addr}: {e}")))?;
        let metrics_node = node.clone();
        let mut stop = shutdown_rx.clone();
        tasks.push(tokio::spawn(async move {
            let shutdown = async move { stopped(&mut stop).await };
            if let Err(e) = crate::api::serve_metrics(metrics_node, listener, shutdown).await {
                tracing::error!(error = %e, "metrics listener stopped");
            }
        }));
    }
    tracing::info!(peer = %peer_id, "node started");
    Ok(RunningNode {
        node,
        api_addr,
        listen_addrs,
        shutdown_tx,
        tasks,
        net_task,
    })
}

impl RunningNode {
    pub fn peer_id(&self) -> PeerId {
        self.node.peer_id()
    }

    /// The first TCP dialable address (handy for bootstrapping others).
    pub fn tcp_addr(&self) -> Option<Multiaddr> {
        self.listen_addrs
            .iter()
            .find(|a| a.iter().any(|p| matches!(p, Protocol::Tcp(_))))
            .cloned()
    }

    /// Stop accepting, stop the tasks and the network, persist reputation
    /// and flush the store.
    pub async fn shutdown(self) -> Result<(), NodeError> {
        self.node.save_peer_addrs().await;
        let _ = self.shutdown_tx.send(true);
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
        self.node.inner.net.shutdown().await;
        let _ = tokio::time::timeout(Duration::from_secs(5), self.net_task).await;
        self.node.persist_reputation();
        self.node.inner.store.flush()?;
        Ok(())
    }
}

impl Node {
    pub fn peer_id(&self) -> PeerId {
        self.inner.peer_id
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn network(&self) -> &NetworkHandle {
        &self.inner.net
    }

    pub fn config(&self) -> &Config {
        &self.inner.cfg
    }

    fn sharing(&self) -> bool {
        self.inner.cfg.sharing.enabled
    }

    fn emit(&self, ev: NodeEvent) {
        let _ = self.inner.events.send(ev);
    }

    /// The `PatternAccepted` event of a stored record.
    fn emit_accepted(&self, body: &metamesh_protocol::PatternBody, hash: String, local: bool) {
        self.emit(NodeEvent::PatternAccepted {
            origin: body.origin.to_string(),
            seq: body.seq,
            hash,
            depth: body.pattern.depth_used,
            local,
        });
    }

    fn trigger_announce(&self) {
        let _ = self.inner.announce_tx.try_send(());
    }

    fn persist_reputation(&self) {
        let dirty = lock(&self.inner.state).rep.take_dirty();
        for (p, bytes) in dirty {
            if let Err(e) = self.inner.store.put_reputation(&p, &bytes) {
                tracing::warn!(peer = %p, error = %e, "saving reputation");
            }
        }
    }

    fn charge(&self, peer: PeerId, event: ReputationEvent, n: u64) {
        lock(&self.inner.state)
            .rep
            .apply(peer, event, n, now_secs());
    }

    // ---- event task ----------------------------------------------------

    async fn event_task(
        self,
        mut events: mpsc::Receiver<NetEvent>,
        mut stop: watch::Receiver<bool>,
    ) {
        loop {
            tokio::select! {
                _ = stopped(&mut stop) => break,
                ev = events.recv() => match ev {
                    Some(ev) => self.on_net_event(ev).await,
                    None => break,
                },
            }
        }
    }

    async fn on_net_event(&self, ev: NetEvent) {
        match ev {
            NetEvent::Gossip {
                source,
                message_id,
                topic,
                data,
            } => {
                let verdict = self.on_gossip(source, topic, &data);
                let _ = self
                    .inner
                    .net
                    .report_validation(message_id, source, verdict)
                    .await;
            }
            NetEvent::Request {
                peer,
                request,
                channel,
            } => {
                let node = self.clone();
                tokio::spawn(async move { node.serve(peer, *request, channel).await });
            }
            NetEvent::PeerConnected { peer } => {
                let denied = lock(&self.inner.state).rep.is_denied(&peer);
                if denied {
                    let _ = self.inner.net.block(peer).await;
                    return;
                }
                let n = {
                    let mut st = lock(&self.inner.state);
                    st.connected.insert(peer);
                    st.connected.len()
                };
                self.inner.metrics.set_peers(n);
                self.emit(NodeEvent::PeerJoined {
                    peer: peer.to_string(),
                });
                // Catch up from every new peer: "here is my frontier".
                self.start_pull(peer, Pull::Have);
            }
            NetEvent::PeerDisconnected { peer } => {
                let n = {
                    let mut st = lock(&self.inner.state);
                    st.connected.remove(&peer);
                    st.connected.len()
                };
                self.inner.metrics.set_peers(n);
                self.emit(NodeEvent::PeerLeft {
                    peer: peer.to_string(),
                });
            }
            NetEvent::PeerSubscribed { .. } => {
                // A new gossip neighbour: let it see our frontier soon.
                if self.sharing() {
                    self.trigger_announce();
                }
            }
        }
    }

    /// Validate one gossip message (DESIGN §4) and act on it.
    fn on_gossip(&self, source: PeerId, topic: TopicKind, data: &[u8]) -> MessageAcceptance {
        if !self.sharing() {
            return MessageAcceptance::Ignore;
        }
        let now = now_secs();
        self.inner.metrics.bytes_received(data.len() as u64);
        {
            let mut st = lock(&self.inner.state);
            if st.rep.is_denied(&source) {
                return MessageAcceptance::Ignore;
            }
            if !st.gossip_rate.try_take(source, 1.0, now) {
                st.rep
                    .apply(source, ReputationEvent::RateLimitExceeded, 1, now);
                drop(st);
                self.inner.metrics.pattern_rejected("rate_limited");
                return MessageAcceptance::Ignore;
            }
        }
        // size is bounded by gossipsub's max_transmit_size; decode:
        let msg = match GossipMessage::decode(data) {
            Ok(m) => m,
            Err(WireError::UnknownVersion(_)) => return MessageAcceptance::Ignore,
            Err(e) => {
                self.reject(Some(source), e.reason(), ReputationEvent::DecodeError);
                return MessageAcceptance::Reject;
            }
        };
        match (topic, msg) {
            (TopicKind::Announce, GossipMessage::PatternAnnouncement(a)) => {
                self.on_announcement(source, a)
            }
            (TopicKind::Insights, GossipMessage::InsightBroadcast(b)) => {
                self.on_insight(source, b, now)
            }
            _ => {
                self.reject(Some(source), "wrong_topic", ReputationEvent::DecodeError);
                MessageAcceptance::Reject
            }
        }
    }

    fn reject(&self, peer: Option<PeerId>, reason: &str, event: ReputationEvent) {
        self.inner.metrics.pattern_rejected(reason);
        if let Some(p) = peer {
            self.charge(p, event, 1);
        }
        self.emit(NodeEvent::PatternRejected {
            peer: peer.map(|p| p.to_string()),
            reason: reason.to_string(),
        });
    }

    fn on_announcement(&self, source: PeerId, a: PatternAnnouncement) -> MessageAcceptance {
        if a.from == self.inner.peer_id {
            return MessageAcceptance::Ignore;
        }
        let (denied, from_connected) = {
            let st = lock(&self.inner.state);
            (st.rep.is_denied(&a.from), st.connected.contains(&a.from))
        };
        if denied {
            return MessageAcceptance::Ignore;
        }
        let mine = self.inner.store.frontier();
        if !sync::missing_ranges(&mine, &a.frontier).is_empty() {
            // Ask the announcer when we can reach it, else the neighbour
            // that forwarded the announcement (it serves what it holds).
            let target = if from_connected { a.from } else { source };
            if !self.covered_by_running_pulls(target, &mine, &a.frontier) {
                self.start_pull(target, Pull::Ranges(a.frontier.clone()));
            }
        } else if a.frontier_truncated && sync::frontier_digest(&mine) != a.patterns_hash {
            self.start_pull(if from_connected { a.from } else { source }, Pull::Have);
        }
        MessageAcceptance::Accept
    }

    fn on_insight(&self, source: PeerId, b: InsightBroadcast, now: f64) -> MessageAcceptance {
        if b.v != WIRE_VERSION {
            return MessageAcceptance::Ignore;
        }
        match self.accept_peer_insight(source, &b.record, now, false) {
            PeerInsight::Stored(_) => MessageAcceptance::Accept,
            PeerInsight::Stale | PeerInsight::Refused => MessageAcceptance::Ignore,
            PeerInsight::Invalid => MessageAcceptance::Reject,
        }
    }

    /// Validate a peer's signed insight record (signature, kind, schema;
    /// with `from_origin`, the sender must be its origin), apply the local
    /// policy (reputation) and keep it when newer than what we hold. Used
    /// for gossip, for the parent's record inherited in a sync response and
    /// for a child's promoted record.
    fn accept_peer_insight(
        &self,
        source: PeerId,
        record: &SignedRecord,
        now: f64,
        from_origin: bool,
    ) -> PeerInsight {
        let body = match record.open_insight() {
            Ok(body) => body,
            Err(RecordError::UnsupportedVersion(_)) => return PeerInsight::Refused,
            Err(e) => {
                self.reject(Some(source), e.reason(), pipeline::event_for(&e));
                return PeerInsight::Invalid;
            }
        };
        if from_origin && body.origin != source {
            self.reject(
                Some(source),
                "origin_mismatch",
                ReputationEvent::SchemaInvalid,
            );
            return PeerInsight::Invalid;
        }
        if body.origin == self.inner.peer_id {
            return PeerInsight::Stale;
        }
        let standing = lock(&self.inner.state).rep.standing(&body.origin, now);
        if standing.refused
            || standing.hostile
            || standing.score < self.inner.cfg.acceptance.min_reputation_insights
        {
            return PeerInsight::Refused;
        }
        let newer = self
            .inner
            .store
            .latest_insights()
            .iter()
            .find(|(_, held)| held.origin == body.origin)
            .is_none_or(|(_, held)| held.seq < body.seq);
        if !newer {
            return PeerInsight::Stale;
        }
        if let Err(e) = self.inner.store.put_latest_insight(record, &body) {
            tracing::warn!(error = %e, "storing an insight");
            return PeerInsight::Refused;
        }
        self.charge(body.origin, ReputationEvent::ValidInsight, 1);
        self.emit(NodeEvent::InsightChanged {
            scope: format!("peer:{}", body.origin),
            optimal_quality_depth: body.insights.learned_preferences.optimal_quality_depth,
            confidence: insight_confidence(&body),
        });
        PeerInsight::Stored(Box::new(body))
    }

    /// Parent side: a child offered its insight record with a request.
    /// Validated like any insight (and its origin must be the child); kept
    /// as the child's latest insight, counted, and the child's patterns we
    /// lack are pulled (the child may be in another mesh, so no
    /// announcement would bring them).
    fn on_promotion(&self, child: PeerId, record: &SignedRecord, now: f64) {
        match self.accept_peer_insight(child, record, now, true) {
            PeerInsight::Stored(body) => {
                self.inner.metrics.promotion_received();
                {
                    let mut st = lock(&self.inner.state);
                    if st.promoted_by.contains_key(&child)
                        || st.promoted_by.len() < MAX_TRACKED_CHILDREN
                    {
                        st.promoted_by.insert(child, body.seq);
                    }
                }
                self.emit(NodeEvent::InsightChanged {
                    scope: format!("promoted:{child}"),
                    optimal_quality_depth: body.insights.learned_preferences.optimal_quality_depth,
                    confidence: insight_confidence(&body),
                });
                self.start_pull(child, Pull::Have);
            }
            PeerInsight::Stale => {}
            PeerInsight::Refused | PeerInsight::Invalid => self.inner.metrics.promotion_rejected(),
        }
    }

    // ---- serving ---------------------------------------------------------

    async fn serve(
        &self,
        peer: PeerId,
        request: PatternRequest,
        channel: ResponseChannel<PatternResponse>,
    ) {
        let mut request = request;
        let refuse = |why: &str| PatternResponse {
            v: WIRE_VERSION,
            records: Vec::new(),
            more: false,
            next_cursor: None,
            error: Some(why.to_string()),
            insight: None,
        };
        let now = now_secs();
        let response = if !self.sharing() {
            refuse("sharing is disabled on this node")
        } else if request.v != WIRE_VERSION {
            refuse("unsupported request version")
        } else if let Err(e) = request.validate() {
            self.charge(peer, ReputationEvent::DecodeError, 1);
            refuse(&format!("bad request: {e}"))
        } else {
            let allowed = {
                let mut st = lock(&self.inner.state);
                if st.rep.is_denied(&peer) {
                    Err("denied")
                } else if !st.request_rate.try_take(peer, 1.0, now) {
                    st.rep
                        .apply(peer, ReputationEvent::RateLimitExceeded, 1, now);
                    Err("rate limited: too many requests")
                } else {
                    Ok(())
                }
            };
            match allowed {
                Err(why) => refuse(why),
                Ok(()) => {
                    if let Some(promoted) = request.promote.take() {
                        self.on_promotion(peer, &promoted, now);
                    }
                    let node = self.clone();
                    match tokio::task::spawn_blocking(move || node.answer(&request)).await {
                        Ok(Ok(resp)) => {
                            let bytes: usize = resp.records.iter().map(record_wire_len).sum();
                            let ok = lock(&self.inner.state).serve_bytes.try_take(
                                peer,
                                bytes as f64,
                                now,
                            );
                            if ok {
                                self.inner.metrics.request_served();
                                self.inner.metrics.pattern_shared(resp.records.len() as u64);
                                self.inner.metrics.bytes_sent(bytes as u64);
                                resp
                            } else {
                                refuse("rate limited: byte budget exhausted")
                            }
                        }
                        Ok(Err(e)) => {
                            tracing::warn!(error = %e, "serving a request");
                            refuse("internal error")
                        }
                        Err(_) => refuse("internal error"),
                    }
                }
            }
        };
        let _ = self.inner.net.respond(channel, response).await;
    }

    /// Build the response to a valid request (blocking: reads the store).
    fn answer(&self, req: &PatternRequest) -> Result<PatternResponse, StoreError> {
        let lim = &self.inner.cfg.limits;
        let cap = lim
            .max_patterns_per_response
            .clamp(1, MAX_RECORDS_PER_RESPONSE);
        let max_count = (req.max_count as usize).clamp(1, cap);
        let max_bytes = lim
            .max_response_bytes
            .min(MAX_RESPONSE_BYTES - RESPONSE_SLACK);
        let store = &self.inner.store;
        let mut records: Vec<SignedRecord> = Vec::new();
        let mut bytes = 0usize;
        let mut more = false;
        let mut ranges = req.ranges.clone();
        if let Some(have) = &req.have {
            ranges.extend(sync::ranges_to_send(&store.frontier(), have));
        }
        for r in &ranges {
            if records.len() >= max_count || bytes >= max_bytes {
                more = true;
                break;
            }
            let got = store.records_in_range(
                r.origin,
                r.from_seq,
                r.to_seq,
                max_count - records.len(),
                max_bytes - bytes,
            )?;
            let full_page = records.len() + got.len() >= max_count;
            bytes += got.iter().map(record_wire_len).sum::<usize>();
            let last = got.last().map(|_| ());
            records.extend(got);
            if full_page
                || (last.is_some()
                    && bytes + metamesh_protocol::record::MAX_RECORD_BYTES > max_bytes)
            {
                more = true;
            }
        }
        let mut next_cursor = None;
        if let Some(filters) = &req.filters {
            let left = max_count.saturating_sub(records.len());
            if left > 0 {
                let (found, cursor) = store.query(filters, req.cursor, left)?;
                records.extend(found.into_iter().map(|(r, _)| r));
                next_cursor = cursor;
                more |= next_cursor.is_some();
            } else {
                more = true;
            }
        }
        // A peer catching up (`have`) also gets our own latest insight
        // record: how a child inherits its parent's knowledge, in any mesh.
        let insight = if req.have.is_some() {
            self.current_own_insight(now_secs()).map(|(r, _)| r)
        } else {
            None
        };
        Ok(PatternResponse {
            v: WIRE_VERSION,
            records,
            more,
            next_cursor,
            error: None,
            insight,
        })
    }

    // ---- pulling -----------------------------------------------------------

    /// Is everything `announced` shows we lack already being fetched by a
    /// running announcement-driven pull from another peer? (Then pulling it
    /// again from this announcer would only duplicate the transfer; if that
    /// pull fails, the next announcement brings the ranges back.)
    fn covered_by_running_pulls(
        &self,
        peer: PeerId,
        mine: &Frontier,
        announced: &[FrontierEntry],
    ) -> bool {
        let st = lock(&self.inner.state);
        sync::missing_ranges(mine, announced).iter().all(|r| {
            st.pull_targets
                .iter()
                .any(|(p, t)| *p != peer && t.get(&r.origin).is_some_and(|s| *s >= r.to_seq))
        })
    }

    fn start_pull(&self, peer: PeerId, mode: Pull) {
        if peer == self.inner.peer_id {
            return;
        }
        {
            let mut st = lock(&self.inner.state);
            if st.rep.is_denied(&peer) {
                return;
            }
            if let Pull::Ranges(target) = &mode {
                if !st.pull_targets.contains_key(&peer)
                    && st.pull_targets.len() >= MAX_TRACKED_PULL_TARGETS
                {
                    // bounded; an untracked pull only loses the dedup
                } else {
                    let t = st.pull_targets.entry(peer).or_default();
                    for e in target {
                        let s = t.entry(e.origin).or_insert(0);
                        *s = (*s).max(e.seq);
                    }
                }
            }
            if let Some(again) = st.syncing.get_mut(&peer) {
                *again = true;
                return;
            }
            st.syncing.insert(peer, false);
        }
        let node = self.clone();
        tokio::spawn(async move {
            let mut mode = mode;
            loop {
                node.pull_session(peer, mode).await;
                let again = {
                    let mut st = lock(&node.inner.state);
                    match st.syncing.get_mut(&peer) {
                        Some(a) if *a => {
                            *a = false;
                            true
                        }
                        _ => {
                            st.syncing.remove(&peer);
                            st.pull_targets.remove(&peer);
                            false
                        }
                    }
                };
                if !again {
                    break;
                }
                // Follow up on what the peer announced meanwhile (exact
                // ranges), or ask with our frontier when it announced nothing.
                let announced: Option<Vec<FrontierEntry>> =
                    lock(&node.inner.state).pull_targets.get(&peer).map(|t| {
                        t.iter()
                            .map(|(o, s)| FrontierEntry {
                                origin: *o,
                                seq: *s,
                            })
                            .collect()
                    });
                mode = match announced {
                    Some(entries) => Pull::Ranges(entries),
                    None => Pull::Have,
                };
            }
        });
    }

    async fn pull_session(&self, peer: PeerId, mode: Pull) {
        let page = self
            .inner
            .cfg
            .limits
            .max_patterns_per_response
            .clamp(1, MAX_RECORDS_PER_RESPONSE);
        let mut completed = false;
        for page_no in 0..MAX_PAGES_PER_SESSION {
            let frontier = self.inner.store.frontier();
            let request = match &mode {
                Pull::Ranges(target) => {
                    let missing = sync::missing_ranges(&frontier, target);
                    let ranges = sync::limit_ranges(&missing, page as u64);
                    if ranges.is_empty() {
                        completed = true;
                        break;
                    }
                    PatternRequest {
                        v: WIRE_VERSION,
                        ranges,
                        have: None,
                        filters: None,
                        cursor: None,
                        max_count: page as u32,
                        promote: None,
                    }
                }
                Pull::Have => PatternRequest {
                    v: WIRE_VERSION,
                    ranges: Vec::new(),
                    have: Some(sync::frontier_entries(&self.frontier_to_reveal(frontier)).0),
                    filters: None,
                    cursor: None,
                    max_count: page as u32,
                    promote: None,
                },
            };
            // Pace pulls by the per-peer record budget: wait while the
            // budget is in debt, charge what actually arrived.
            let wait = lock(&self.inner.state)
                .pull_rate
                .wait_for(peer, 1.0, now_secs());
            if wait > 0.0 {
                tokio::time::sleep(Duration::from_secs_f64(wait.min(30.0))).await;
            }
            let mut resp = match self.inner.net.request(peer, request).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "pull failed");
                    break;
                }
            };
            if let Some(err) = &resp.error {
                tracing::debug!(%peer, error = %err, "peer refused our request");
                break;
            }
            if resp.v != WIRE_VERSION {
                break;
            }
            if let Some(rec) = resp.insight.take().filter(|_| page_no == 0) {
                // The peer's own latest insight (inheritance from a parent).
                self.accept_peer_insight(peer, &rec, now_secs(), true);
            }
            let more = resp.more;
            lock(&self.inner.state)
                .pull_rate
                .spend(peer, resp.records.len() as f64, now_secs());
            let report = self.ingest(peer, resp.records).await;
            if !report.progressed() {
                completed = !more;
                break;
            }
            if !more && matches!(mode, Pull::Have) {
                completed = true;
                break;
            }
        }
        if completed {
            // We now hold everything this peer holds of our own records.
            let _ = self.inner.own_seq_safe.send_replace(true);
        }
    }

    /// The frontier we put in a `have` request. With sharing off we do not
    /// even reveal how many records of our own we hold.
    fn frontier_to_reveal(&self, mut frontier: Frontier) -> Frontier {
        if !self.sharing() {
            frontier.remove(&self.inner.peer_id);
        }
        frontier
    }

    /// Run pulled records through the pipeline and store the accepted ones.
    pub async fn ingest(&self, peer: PeerId, records: Vec<SignedRecord>) -> IngestReport {
        if records.is_empty() {
            return IngestReport::default();
        }
        let node = self.clone();
        let report =
            tokio::task::spawn_blocking(move || node.ingest_blocking(peer, records, now_secs()))
                .await
                .unwrap_or_default();
        if report.inserted > 0 {
            if self.sharing() {
                self.trigger_announce();
            }
            self.check_collective_change();
        }
        report
    }

    fn ingest_blocking(&self, peer: PeerId, records: Vec<SignedRecord>, now: f64) -> IngestReport {
        let m = &self.inner.metrics;
        let store = &self.inner.store;
        let mut report = IngestReport::default();
        m.bytes_received(records.iter().map(record_wire_len).sum::<usize>() as u64);
        for _ in &records {
            m.pattern_received();
        }
        let mut rejected_reasons: BTreeMap<&'static str, u64> = BTreeMap::new();
        let mut to_insert: Vec<(SignedRecord, metamesh_protocol::PatternBody)> = Vec::new();
        let mut seen_in_batch = HashSet::new();
        for checked in pipeline::check_records(records, now) {
            match checked {
                Checked::Invalid { reason, event } => {
                    report.rejected += 1;
                    m.pattern_rejected(reason);
                    *rejected_reasons.entry(reason).or_insert(0) += 1;
                    self.charge(peer, event, 1);
                }
                Checked::Valid(rec, body) => {
                    let hash = rec.content_hash();
                    // dedup
                    if !seen_in_batch.insert(hash) || store.contains_hash(&hash).unwrap_or(false) {
                        report.duplicates += 1;
                        continue;
                    }
                    // equivocation: the slot is held by a different body;
                    // the store keeps the evidence.
                    if store.has_seq(&body.origin, body.seq).unwrap_or(false) {
                        to_insert.push((rec, body));
                        continue;
                    }
                    let mut st = lock(&self.inner.state);
                    // per-origin quota (not the sender's fault: no penalty;
                    // the slot stays open and is fetched again later)
                    if body.origin != self.inner.peer_id
                        && !st.origin_quota.try_take(body.origin, 1.0, now)
                    {
                        drop(st);
                        report.deferred += 1;
                        m.pattern_rejected("origin_quota");
                        continue;
                    }
                    // local policy: declined records still advance the frontier
                    let standing = st.rep.standing(&body.origin, now);
                    drop(st);
                    if let Some(reason) =
                        pipeline::decline_reason(&body, &standing, &self.inner.cfg)
                    {
                        if store.mark_declined(body.origin, body.seq, hash).is_ok() {
                            report.declined += 1;
                        }
                        m.pattern_rejected(reason);
                        continue;
                    }
                    to_insert.push((rec, body));
                }
            }
        }
        for (reason, _) in rejected_reasons {
            self.emit(NodeEvent::PatternRejected {
                peer: Some(peer.to_string()),
                reason: reason.to_string(),
            });
        }
        if to_insert.is_empty() {
            return report;
        }
        let outcomes = match store.insert_batch(&to_insert) {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(error = %e, "storing pulled records");
                return report;
            }
        };
        let mut own_max = 0u64;
        for ((rec, body), outcome) in to_insert.iter().zip(outcomes) {
            match outcome {
                InsertOutcome::Inserted => {
                    report.inserted += 1;
                    m.pattern_accepted();
                    if body.origin == self.inner.peer_id {
                        own_max = own_max.max(body.seq);
                    } else {
                        self.charge(body.origin, ReputationEvent::ValidPattern, 1);
                    }
                    self.emit_accepted(&body, rec.content_hash().to_hex(), false);
                }
                InsertOutcome::Duplicate => report.duplicates += 1,
                InsertOutcome::Equivocation { .. } => {
                    report.rejected += 1;
                    m.pattern_rejected("equivocation");
                    self.charge(body.origin, ReputationEvent::Equivocation, 1);
                    self.emit(NodeEvent::PatternRejected {
                        peer: Some(peer.to_string()),
                        reason: "equivocation".into(),
                    });
                }
            }
        }
        if report.inserted > 0 && peer != self.inner.peer_id {
            self.charge(peer, ReputationEvent::UsefulSyncResponse, 1);
        }
        if own_max > 0 {
            // Our own records came back from a peer: never reuse those seqs.
            if let Err(e) = store.bump_own_seq(own_max) {
                tracing::warn!(error = %e, "raising own seq");
            }
        }
        report
    }

    // ---- learning views ------------------------------------------------------

    /// How much say `origin` has in our collective view: this node and the
    /// parent are anchors (the parent is never a newcomer), operator-trusted
    /// peers are anchors, everyone's weight comes from reputation.
    fn origin_weight(&self, origin: &PeerId, now: f64) -> learning::OriginWeight {
        if *origin == self.inner.peer_id {
            return metamesh_protocol::policy::self_say(1.0);
        }
        let is_parent = self.inner.parent.as_ref().is_some_and(|(p, _)| p == origin);
        let st = lock(&self.inner.state);
        let s = st.rep.standing(origin, now);
        let role = if is_parent || st.rep.trust(origin) == Trust::Trusted {
            learning::Role::Anchor
        } else {
            learning::Role::Peer
        };
        metamesh_protocol::policy::say(role, &s)
    }

    /// Each stored origin's statistics with its learning weight, anchor and
    /// newcomer flags (see [`Node::origin_weight`]): the input of robust
    /// aggregation, built by the same function the offline CLI uses.
    pub fn origin_evidence(&self) -> Vec<OriginEvidence<PeerId>> {
        let now = now_secs();
        learning::origin_evidence(&self.inner.store, &self.inner.peer_id, &|p| {
            self.origin_weight(p, now)
        })
    }

    /// The mesh's evidence, combined robustly (`metamesh_protocol::aggregate`):
    /// reputation-weighted, volume-capped, with origins inconsistent with
    /// the anchors or the weighted-median consensus left out.
    pub fn collective(&self) -> RobustAggregate<PeerId> {
        robust_aggregate(&self.origin_evidence(), &RobustConfig::default())
    }

    /// The collective view with what the API reports about it: the robust
    /// aggregate, the merged statistics and modes of the origins it kept,
    /// and each contributor's share (for `GET /v1/knowledge`).
    pub fn collective_report(&self) -> learning::Collective {
        let now = now_secs();
        learning::collective(&self.inner.store, &self.inner.peer_id, &|p| {
            self.origin_weight(p, now)
        })
    }

    /// Plain merge of the statistics of the origins robust aggregation kept
    /// (for the insight document's per-depth figures).
    pub fn collective_table(&self) -> DepthTable {
        self.collective_report().kept_table
    }

    pub fn local_table(&self) -> DepthTable {
        self.inner.store.stats_of(&self.inner.peer_id)
    }

    /// The collective view's best depth and its confidence (P(best)).
    pub fn collective_belief(&self) -> (Depth, f64) {
        let agg = self.collective();
        if agg.pattern_count == 0 {
            return metamesh_protocol::posterior::best_depth(
                &DepthTable::default(),
                &Prior::default(),
            );
        }
        agg.best(&Prior::default())
    }

    fn check_collective_change(&self) {
        let (depth, conf) = self.collective_belief();
        let changed = {
            let mut st = lock(&self.inner.state);
            let changed = st
                .last_collective
                .is_none_or(|(d, c)| d != depth || (c - conf).abs() >= 0.01);
            if changed {
                st.last_collective = Some((depth, conf));
            }
            changed
        };
        if changed {
            self.emit(NodeEvent::InsightChanged {
                scope: "collective".into(),
                optimal_quality_depth: Some(depth),
                confidence: conf,
            });
        }
    }

    // ---- announcing ------------------------------------------------------------

    async fn announcer(self, mut trigger: mpsc::Receiver<()>, mut stop: watch::Receiver<bool>) {
        let interval = Duration::from_secs(self.inner.cfg.sharing.announce_interval_secs.max(1));
        let debounce = Duration::from_millis(self.inner.cfg.sharing.announce_debounce_ms);
        let mut tick = tokio::time::interval(ANNOUNCER_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let triggered = tokio::select! {
                _ = stopped(&mut stop) => break,
                _ = tick.tick() => false,
                t = trigger.recv() => t.is_some(),
            };
            if !self.sharing() {
                continue;
            }
            if triggered {
                tokio::select! {
                    _ = stopped(&mut stop) => break,
                    _ = tokio::time::sleep(debounce) => {}
                }
                while trigger.try_recv().is_ok() {}
            }
            let due = lock(&self.inner.state)
                .last_announce
                .is_none_or(|t| t.elapsed() >= interval);
            if triggered || due {
                self.announce().await;
            }
            self.maybe_broadcast_insights().await;
            self.maybe_promote();
        }
    }

    /// Publish our frontier (no-op when sharing is off).
    pub async fn announce(&self) {
        if !self.sharing() {
            return;
        }
        let store = &self.inner.store;
        let frontier: Frontier = store.frontier();
        let (entries, truncated) = sync::frontier_entries(&frontier);
        let msg = GossipMessage::PatternAnnouncement(PatternAnnouncement {
            v: WIRE_VERSION,
            from: self.inner.peer_id,
            pattern_count: store.pattern_count(),
            patterns_hash: sync::frontier_digest(&frontier),
            depth_distribution: store.depth_distribution(),
            frontier: entries,
            frontier_truncated: truncated,
        });
        let data = msg.encode();
        if data.len() > MAX_GOSSIP_BYTES {
            tracing::warn!(bytes = data.len(), "announcement too large");
            return;
        }
        let len = data.len() as u64;
        {
            // Gossipsub drops a byte-identical message inside its duplicate
            // window (content-hash ids): do not re-send an unchanged frontier
            // until that window has passed.
            let digest = *blake3::hash(&data).as_bytes();
            let mut st = lock(&self.inner.state);
            let unchanged = st
                .last_announced
                .as_ref()
                .is_some_and(|(d, at)| *d == digest && at.elapsed() < REANNOUNCE_UNCHANGED);
            st.last_announce = Some(Instant::now());
            if unchanged {
                return;
            }
            st.last_announced = Some((digest, Instant::now()));
        }
        match self.inner.net.publish(TopicKind::Announce, data).await {
            Ok(()) => self.inner.metrics.bytes_sent(len),
            // Duplicate (unchanged frontier) or nobody subscribed yet: fine.
            Err(e) => tracing::trace!(error = %e, "announcement not published"),
        }
    }

    /// Our current signed insight record: the cached one while our own
    /// statistics are unchanged, else a freshly signed one (seq monotonic:
    /// max(previous + 1, unix ms)), stored as our latest insight. `None`
    /// while we have no patterns of our own.
    fn current_own_insight(&self, now: f64) -> Option<(SignedRecord, InsightBody)> {
        let own = self.local_table();
        if own.total() == 0 {
            return None;
        }
        let seq = {
            let mut st = lock(&self.inner.state);
            if let Some((rec, body)) = &st.own_insight {
                if body.stats == own {
                    return Some((rec.clone(), body.clone()));
                }
            }
            let seq = st.insight_seq.max((now * 1000.0) as u64) + 1;
            st.insight_seq = seq;
            seq
        };
        let modes = self.inner.store.origin_mode_stats(&self.inner.peer_id);
        let body = InsightBody {
            v: BODY_VERSION,
            origin: self.inner.peer_id,
            seq,
            computed_at: now,
            stats: own,
            insights: insights::compute(&own, Some(&modes), &Prior::default(), now),
        };
        let record = SignedRecord::sign_insight(&body, &self.inner.key);
        if let Err(e) = self.inner.store.put_latest_insight(&record, &body) {
            tracing::warn!(error = %e, "storing our insight record");
        }
        let mut st = lock(&self.inner.state);
        if st.own_insight.as_ref().is_none_or(|(_, b)| b.seq < seq) {
            st.own_insight = Some((record.clone(), body.clone()));
        }
        Some((record, body))
    }

    async fn maybe_broadcast_insights(&self) {
        let now = now_secs();
        let own_count = self.local_table().total();
        {
            let st = lock(&self.inner.state);
            let min = self.inner.cfg.sharing.insight_min_interval_secs as f64;
            if own_count == 0
                || own_count == st.last_insight_own_count
                || now - st.last_insight_at < min
            {
                return;
            }
        }
        let Some((record, _)) = self.current_own_insight(now) else {
            return;
        };
        let data = GossipMessage::InsightBroadcast(InsightBroadcast {
            v: WIRE_VERSION,
            record,
        })
        .encode();
        if data.len() > MAX_GOSSIP_BYTES {
            tracing::warn!(bytes = data.len(), "insight broadcast too large");
            return;
        }
        let len = data.len() as u64;
        match self.inner.net.publish(TopicKind::Insights, data).await {
            Ok(()) => {
                self.inner.metrics.bytes_sent(len);
                let mut st = lock(&self.inner.state);
                st.last_insight_at = now;
                st.last_insight_own_count = own_count;
            }
            Err(e) => tracing::trace!(error = %e, "insight broadcast not published"),
        }
    }

    /// Child side: promote our signed insight record to the parent once our
    /// own `optimal_quality_depth` confidence reaches
    /// `promotion.min_confidence`, and again when the record changed, at
    /// most once per `promotion.min_interval_secs`. The request carries our
    /// frontier too, so the answer brings what the parent has that we lack.
    fn maybe_promote(&self) {
        let Some((parent, _)) = self.inner.parent.clone() else {
            return;
        };
        let cfg = &self.inner.cfg.promotion;
        let now = now_secs();
        {
            let st = lock(&self.inner.state);
            if st.promoting
                || !st.connected.contains(&parent)
                || st
                    .last_promotion
                    .is_some_and(|(_, at)| now - at < cfg.min_interval_secs as f64)
            {
                return;
            }
        }
        let Some((record, body)) = self.current_own_insight(now) else {
            return;
        };
        if insight_confidence(&body) < cfg.min_confidence {
            return;
        }
        {
            let mut st = lock(&self.inner.state);
            if st.promoting || st.last_promotion.is_some_and(|(seq, _)| seq == body.seq) {
                return;
            }
            st.promoting = true;
        }
        let node = self.clone();
        tokio::spawn(async move {
            let page = node
                .inner
                .cfg
                .limits
                .max_patterns_per_response
                .clamp(1, MAX_RECORDS_PER_RESPONSE);
            let frontier = node.frontier_to_reveal(node.inner.store.frontier());
            let request = PatternRequest {
                v: WIRE_VERSION,
                ranges: Vec::new(),
                have: Some(sync::frontier_entries(&frontier).0),
                filters: None,
                cursor: None,
                max_count: page as u32,
                promote: Some(record),
            };
            let mut delivered = false;
            match node.inner.net.request(parent, request).await {
                Ok(resp) if resp.error.is_none() && resp.v == WIRE_VERSION => {
                    delivered = true;
                    node.inner.metrics.promotion_sent();
                    let more = resp.more;
                    node.ingest(parent, resp.records).await;
                    if more {
                        node.start_pull(parent, Pull::Have);
                    }
                }
                Ok(resp) => {
                    tracing::debug!(error = ?resp.error, "parent refused our promotion")
                }
                Err(e) => tracing::debug!(error = %e, "promotion to the parent failed"),
            }
            let mut st = lock(&node.inner.state);
            st.promoting = false;
            let prev = st.last_promotion.map_or(0, |(seq, _)| seq);
            st.last_promotion = Some((if delivered { body.seq } else { prev }, now_secs()));
        });
    }

    // ---- housekeeping -------------------------------------------------------------

    async fn housekeeping(self, mut stop: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(HOUSEKEEPING_PERIOD);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut rounds = 0u64;
        loop {
            tokio::select! {
                _ = stopped(&mut stop) => break,
                _ = tick.tick() => {}
            }
            rounds += 1;
            if rounds.is_multiple_of(PARENT_SYNC_ROUNDS) {
                self.resync_parent().await;
            }
            if rounds.is_multiple_of(30) {
                // Origins whose reports stay inconsistent with the robust
                // consensus lose reputation (at most once a minute).
                let agg = self.collective();
                let bad: HashSet<PeerId> = learning::charged(&agg).into_iter().collect();
                for p in bad.into_iter().filter(|p| *p != self.inner.peer_id) {
                    self.charge(p, ReputationEvent::InconsistentWithConsensus, 1);
                }
            }
            self.persist_reputation();
            let now = now_secs();
            let (scores, classes) = {
                let st = lock(&self.inner.state);
                let scores: Vec<(PeerId, f64)> = st
                    .connected
                    .iter()
                    .map(|p| (*p, st.rep.app_score(p, now)))
                    .collect();
                let mut classes: BTreeMap<&'static str, usize> = BTreeMap::new();
                for p in st.rep.peers() {
                    *classes
                        .entry(st.rep.standing(&p, now).class.as_str())
                        .or_insert(0) += 1;
                }
                (scores, classes)
            };
            for (p, s) in scores {
                let _ = self.inner.net.set_app_score(p, s).await;
            }
            let classes: Vec<(&str, usize)> = classes.into_iter().collect();
            self.inner.metrics.set_reputation_classes(&classes);
            self.save_peer_addrs().await;
        }
    }

    /// Keep the parent link alive across meshes: re-dial the parent when we
    /// are not connected, else pull what it gained since (no announcement
    /// crosses meshes).
    async fn resync_parent(&self) {
        let Some((parent, addr)) = self.inner.parent.clone() else {
            return;
        };
        if lock(&self.inner.state).connected.contains(&parent) {
            self.start_pull(parent, Pull::Have);
        } else if let Err(e) = self.inner.net.dial(addr).await {
            tracing::debug!(error = %e, "re-dialling the parent");
        }
    }

    /// Remember connected peers' addresses, so that a restart re-dials them.
    async fn save_peer_addrs(&self) {
        if let Ok(peers) = self.inner.net.peers().await {
            for p in peers.iter().filter(|p| p.connected && !p.addrs.is_empty()) {
                let addrs: Vec<String> = p.addrs.iter().map(|a| a.to_string()).collect();
                let _ = self.inner.store.put_peer_addrs(&p.peer, &addrs);
            }
        }
    }

    /// Before the first local record of a node whose store has no own
    /// records: wait (bounded) until a sync with a peer completed, so that
    /// our old records — if the store was lost but the key kept — come back
    /// first and their seqs are never reused. With no peer connected there
    /// is no one to ask; the node proceeds (documented in docs/node.md).
    async fn wait_own_seq_safe(&self) {
        let mut rx = self.inner.own_seq_safe.subscribe();
        if *rx.borrow() {
            return;
        }
        if self.inner.store.own_seq() > 0 {
            let _ = self.inner.own_seq_safe.send_replace(true);
            return;
        }
        let deadline = Instant::now() + OWN_SEQ_WAIT;
        while Instant::now() < deadline {
            if lock(&self.inner.state).connected.is_empty() {
                // Give a starting node a moment to reach its bootstrap peers.
                if self.inner.started.elapsed() > Duration::from_secs(3) {
                    return;
                }
            }
            let _ = tokio::time::timeout(Duration::from_millis(100), rx.wait_for(|s| *s)).await;
            if *rx.borrow() {
                return;
            }
        }
    }
}

/// Resolves once the shutdown flag is set.
async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// Confidence (P(best)) of an insight record's `optimal_quality_depth`.
fn insight_confidence(body: &InsightBody) -> f64 {
    body.insights
        .get(insights::types::OPTIMAL_QUALITY_DEPTH)
        .map_or(0.0, |i| i.confidence)
}

/// Approximate encoded size of a record on the wire.
fn record_wire_len(r: &SignedRecord) -> usize {
    r.body.len() + r.signer.len() + r.signature.len() + 16
}

fn schema_error(index: usize, e: metamesh_protocol::SchemaError) -> ApiError {
    ApiError::unprocessable(format!("patterns[{index}]: {e}"), e.field.clone())
}

impl NodeApi for Node {
    async fn submit_patterns(
        &self,
        patterns: Vec<Pattern>,
    ) -> Result<Vec<SubmittedPattern>, ApiError> {
        let now = now_secs();
        for (i, p) in patterns.iter().enumerate() {
            p.validate(now).map_err(|e| schema_error(i, e))?;
        }
        if patterns.is_empty() {
            return Ok(Vec::new());
        }
        self.wait_own_seq_safe().await;
        // Adoption and effectiveness: did each outcome follow the advice of
        // the collective view as it stood before it was recorded?
        let view_before = self.collective().view(Prior::default());
        for p in &patterns {
            learning::record_adoption(&view_before, p, &self.inner.metrics);
        }
        let node = self.clone();
        let outcomes =
            tokio::task::spawn_blocking(move || -> Result<Vec<AppendOutcome>, StoreError> {
                let store = &node.inner.store;
                let out = store.append_local_batch(
                    &node.inner.key,
                    patterns.into_iter().map(|p| (p, None)).collect(),
                )?;
                store.flush()?;
                Ok(out)
            })
            .await
            .map_err(|e| ApiError::internal(format!("storing patterns: {e}")))?
            .map_err(|e| ApiError::internal(format!("storing patterns: {e}")))?;
        let mut out = Vec::with_capacity(outcomes.len());
        for o in outcomes {
            if let AppendOutcome::Appended(rec, body) = o {
                let hash = rec.content_hash().to_hex();
                self.inner.metrics.pattern_recorded();
                self.emit_accepted(&body, hash.clone(), true);
                out.push(SubmittedPattern {
                    origin: body.origin.to_string(),
                    seq: body.seq,
                    hash,
                    pattern_id: body.pattern.pattern_id.clone(),
                });
            }
        }
        if self.sharing() {
            self.trigger_announce();
        }
        self.check_collective_change();
        Ok(out)
    }

    async fn query_patterns(
        &self,
        filters: RequestFilters,
        limit: usize,
    ) -> Result<Vec<PatternView>, ApiError> {
        filters
            .validate()
            .map_err(|e| ApiError::bad_request(e.to_string(), "filters"))?;
        let node = self.clone();
        let (found, _) =
            tokio::task::spawn_blocking(move || node.inner.store.query(&filters, None, limit))
                .await
                .map_err(|e| ApiError::internal(e.to_string()))?
                .map_err(|e| ApiError::internal(e.to_string()))?;
        Ok(found
            .into_iter()
            .map(|(rec, body)| PatternView {
                origin: body.origin.to_string(),
                seq: body.seq,
                hash: rec.content_hash().to_hex(),
                pattern: body.pattern,
            })
            .collect())
    }

    async fn insights(&self, scope: Scope) -> Result<InsightsDocument, ApiError> {
        let now = now_secs();
        Ok(match scope {
            Scope::Local => learning::local_insights(&self.inner.store, &self.inner.peer_id, now),
            Scope::Collective => {
                learning::collective_document(&self.collective_report(), &self.inner.peer_id, now)
            }
        })
    }

    async fn knowledge_transfer(&self) -> Result<learning::KnowledgeTransfer, ApiError> {
        let mut k = learning::knowledge_transfer(&self.collective_report());
        let parent = self.inner.parent.as_ref().map(|(p, _)| *p);
        let children = lock(&self.inner.state).promoted_by.clone();
        if parent.is_some() || !children.is_empty() {
            for (_, body) in self.inner.store.latest_insights() {
                let held = || learning::HeldInsight {
                    peer_id: body.origin.to_string(),
                    seq: body.seq,
                    patterns: body.stats.total(),
                    optimal_quality_depth: body.insights.learned_preferences.optimal_quality_depth,
                    confidence: insight_confidence(&body),
                };
                if Some(body.origin) == parent {
                    k.parent = Some(held());
                }
                if children.contains_key(&body.origin) {
                    k.promoted_children.push(held());
                }
            }
        }
        Ok(k)
    }

    async fn recommend(&self, atp: f64, strategy: String) -> Result<Recommendation, ApiError> {
        use metamesh_protocol::strategy;
        if !atp.is_finite() || atp < 0.0 {
            return Err(ApiError::bad_request(
                "atp must be a finite number ≥ 0",
                "atp",
            ));
        }
        let s = strategy::strategy_by_name(&strategy).ok_or_else(|| {
            ApiError::bad_request(
                format!(
                    "unknown strategy {strategy:?}; use one of {:?}",
                    strategy::STRATEGY_NAMES
                ),
                "strategy",
            )
        })?;
        let agg = self.collective();
        let view = agg.view(Prior::default());
        let total = agg.pattern_count;
        let mut rng = rand::thread_rng();
        let choice = s.choose(&view, atp, &mut rng);
        let reason = if total == 0 {
            "no evidence yet: chosen by ATP budget".to_string()
        } else if choice.followed_learning {
            format!(
                "collective evidence from {} patterns favours this depth",
                total
            )
        } else {
            "exploring (or limited by the ATP budget)".to_string()
        };
        Ok(Recommendation {
            depth: choice.depth,
            strategy: s.name().to_string(),
            confidence: choice.confidence,
            atp,
            reason,
        })
    }

    async fn peers(&self) -> Result<Vec<PeerView>, ApiError> {
        let peers = self
            .inner
            .net
            .peers()
            .await
            .map_err(|e| ApiError::unavailable(e.to_string()))?;
        let now = now_secs();
        let st = lock(&self.inner.state);
        Ok(peers
            .into_iter()
            .map(|p| {
                let s = st.rep.standing(&p.peer, now);
                PeerView {
                    peer_id: p.peer.to_string(),
                    addrs: p.addrs.iter().map(|a| a.to_string()).collect(),
                    connected: p.connected,
                    reputation: s.score,
                    class: s.class.as_str().to_string(),
                }
            })
            .collect())
    }

    async fn reputation(&self) -> Result<Vec<ReputationView>, ApiError> {
        let now = now_secs();
        let st = lock(&self.inner.state);
        Ok(st
            .rep
            .peers()
            .into_iter()
            .map(|p| {
                let s = st.rep.standing(&p, now);
                let counters = st
                    .rep
                    .state(&p)
                    .map(|state| {
                        state
                            .counters
                            .iter()
                            .map(|(e, n)| (e.as_str().to_string(), *n))
                            .collect()
                    })
                    .unwrap_or_default();
                ReputationView {
                    peer_id: p.to_string(),
                    score: s.score,
                    class: s.class.as_str().to_string(),
                    weight: s.weight,
                    counters,
                }
            })
            .collect())
    }

    async fn stats(&self) -> Result<StatsView, ApiError> {
        let store = &self.inner.store;
        let known = self.inner.net.peers().await.map(|p| p.len()).unwrap_or(0);
        let connected = lock(&self.inner.state).connected.len();
        Ok(StatsView {
            peer_id: self.inner.peer_id.to_string(),
            pattern_count: store.pattern_count(),
            own_seq: store.own_seq(),
            origins: store.frontier().len() as u64,
            depth_distribution: store.depth_distribution(),
            connected_peers: connected as u64,
            known_peers: known as u64,
            uptime_secs: self.inner.started.elapsed().as_secs_f64(),
            metrics: self.inner.metrics.snapshot(),
        })
    }

    async fn node_info(&self) -> Result<NodeInfo, ApiError> {
        Ok(NodeInfo {
            peer_id: self.inner.peer_id.to_string(),
            listen_addrs: lock(&self.inner.listen_addrs)
                .iter()
                .map(|a| a.to_string())
                .collect(),
            mesh: self.inner.cfg.mesh.clone(),
            api_addr: lock(&self.inner.api_addr).map(|a| a.to_string()),
            version: env!("CARGO_PKG_VERSION").to_string(),
        })
    }

    fn subscribe(&self) -> broadcast::Receiver<NodeEvent> {
        self.inner.events.subscribe()
    }

    fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    async fn query_patterns_page(
        &self,
        filters: RequestFilters,
        cursor: Option<PageCursor>,
        limit: usize,
    ) -> Result<PatternPage, ApiError> {
        filters
            .validate()
            .map_err(|e| ApiError::bad_request(e.to_string(), "filters"))?;
        let cursor = match cursor {
            None => None,
            Some(c) => Some(metamesh_protocol::wire::Cursor {
                origin: c
                    .origin
                    .parse::<PeerId>()
                    .map_err(|_| ApiError::bad_request("cursor names no valid origin", "cursor"))?,
                seq: c.seq,
            }),
        };
        let node = self.clone();
        let (found, next) =
            tokio::task::spawn_blocking(move || node.inner.store.query(&filters, cursor, limit))
                .await
                .map_err(|e| ApiError::internal(e.to_string()))?
                .map_err(|e| match e {
                    // A cursor naming no stored record (min_timestamp order).
                    StoreError::Unsupported(m) => ApiError::bad_request(m, "cursor"),
                    e => ApiError::internal(e.to_string()),
                })?;
        Ok(PatternPage {
            patterns: found
                .into_iter()
                .map(|(rec, body)| PatternView {
                    origin: body.origin.to_string(),
                    seq: body.seq,
                    hash: rec.content_hash().to_hex(),
                    pattern: body.pattern,
                })
                .collect(),
            next_cursor: next.map(|c| {
                PageCursor {
                    origin: c.origin.to_string(),
                    seq: c.seq,
                }
                .to_string()
            }),
        })
    }

    async fn import_patterns(
        &self,
        batch: Vec<(Pattern, [u8; 32])>,
    ) -> Result<ImportOutcome, ApiError> {
        if batch.is_empty() {
            return Ok(ImportOutcome::default());
        }
        self.wait_own_seq_safe().await;
        let node = self.clone();
        let outcomes =
            tokio::task::spawn_blocking(move || -> Result<Vec<AppendOutcome>, StoreError> {
                let store = &node.inner.store;
                let out = store.append_local_batch(
                    &node.inner.key,
                    batch.into_iter().map(|(p, k)| (p, Some(k))).collect(),
                )?;
                store.flush()?;
                Ok(out)
            })
            .await
            .map_err(|e| ApiError::internal(format!("importing patterns: {e}")))?
            .map_err(|e| ApiError::internal(format!("importing patterns: {e}")))?;
        let mut done = ImportOutcome::default();
        for o in outcomes {
            match o {
                AppendOutcome::Appended(rec, body) => {
                    done.accepted += 1;
                    self.inner.metrics.pattern_recorded();
                    self.emit_accepted(&body, rec.content_hash().to_hex(), true);
                }
                AppendOutcome::DuplicateImport => done.duplicates += 1,
            }
        }
        if done.accepted > 0 {
            if self.sharing() {
                self.trigger_announce();
            }
            self.check_collective_change();
        }
        Ok(done)
    }

    async fn gauges(&self) -> Result<Gauges, ApiError> {
        let node = self.clone();
        tokio::task::spawn_blocking(move || {
            let agg = node.collective();
            let p = agg.prob_best(&Prior::default());
            Gauges {
                patterns_stored: node.inner.store.pattern_count(),
                prob_best: Depth::ALL.iter().copied().zip(p).collect(),
            }
        })
        .await
        .map_err(|e| ApiError::internal(e.to_string()))
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

    #[test]
    fn ingest_report_progress() {
        assert!(!IngestReport::default().progressed());
        assert!(IngestReport {
            declined: 1,
            ..Default::default()
        }
        .progressed());
        assert!(!IngestReport {
            duplicates: 3,
            rejected: 1,
            ..Default::default()
        }
        .progressed());
    }
}
