//! The `Swarm` and what the node's actor does with it: [`Net`] is owned by
//! the actor ([`crate::actor`]), which polls [`Net::next_event`] in its one
//! loop and calls the methods below to execute what it decided. Nothing
//! here decides anything about the exchange.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures::StreamExt;
use libp2p::gossipsub::{self, MessageAcceptance, MessageId};
use libp2p::request_response::{self, OutboundRequestId, ResponseChannel};
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::swarm::SwarmEvent;
use libp2p::{identify, kad, Multiaddr, PeerId, Swarm};
use metamesh_protocol::sync::{SyncRequest as PatternRequest, SyncResponse as PatternResponse};

use super::behaviour::{MeshBehaviour, MeshBehaviourEvent};
use super::gate::Gate;
use super::peers;
use super::{codec, NetError, NetworkConfig, TopicKind, Topics};

/// Most addresses remembered per peer.
const MAX_ADDRS_PER_PEER: usize = 8;
/// Most peers remembered (connected or not).
const MAX_KNOWN_PEERS: usize = 4096;
/// Kad re-runs a bootstrap query (a closest-peer walk) at most this often,
/// and only while the node holds fewer than its target of peers.
const DISCOVERY_INTERVAL: Duration = Duration::from_secs(30);
/// How often the peer manager prunes excess peers and dials below target.
const PEER_HEARTBEAT: Duration = Duration::from_secs(1);

/// What the network reports to the actor.
#[derive(Debug)]
pub enum NetEvent {
    /// A gossip message awaiting validation: the actor must answer with
    /// [`Net::report_validation`].
    Gossip {
        source: PeerId,
        message_id: MessageId,
        topic: TopicKind,
        data: Vec<u8>,
    },
    /// An inbound `pattern_request`; answer with [`Net::respond`].
    Request {
        peer: PeerId,
        /// Boxed: a request (with its optional promoted record) is much
        /// larger than the other events.
        request: Box<PatternRequest>,
        channel: ResponseChannel<PatternResponse>,
    },
    /// The answer to a request we sent with [`Net::request`].
    Response {
        id: OutboundRequestId,
        peer: PeerId,
        result: Result<PatternResponse, NetError>,
    },
    PeerConnected {
        peer: PeerId,
    },
    PeerDisconnected {
        peer: PeerId,
    },
    /// A connected peer joined one of our topics (it is now reachable by gossip).
    PeerSubscribed {
        peer: PeerId,
    },
    /// An inbound request that did not decode (charged by the core).
    BadRequest {
        peer: PeerId,
        error: String,
    },
}

/// A known peer, for `GET /v1/peers`.
#[derive(Debug, Clone)]
pub struct PeerSnapshot {
    pub peer: PeerId,
    pub addrs: Vec<Multiaddr>,
    pub connected: bool,
    pub gossip_score: Option<f64>,
}

pub struct Net {
    swarm: Swarm<MeshBehaviour>,
    topics: Topics,
    cfg: NetworkConfig,
    known: HashMap<PeerId, Vec<Multiaddr>>,
    /// When kad last started a bootstrap walk.
    last_discovery: Option<std::time::Instant>,
    heartbeat: tokio::time::Interval,
    /// What the peer manager did (for `metamesh swarm`); see [`Net::counters`].
    counters: PeerCounters,
}

/// Counts of the peer manager's actions since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeerCounters {
    /// Connections established (first connection to a peer).
    pub connected: u64,
    /// Peers disconnected because we held more than `max`.
    pub pruned: u64,
    /// Connections the gate refused (a peer we pruned dialling back, a kad
    /// walk's dials once we hold our target).
    pub refused: u64,
    /// Peers dialled by discovery.
    pub dialled: u64,
    /// Kad bootstrap walks started.
    pub discoveries: u64,
}

/// Unix seconds (the peer manager's clock; decisions take it as input).
pub(super) fn now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl Net {
    pub fn new(swarm: Swarm<MeshBehaviour>, topics: Topics, cfg: NetworkConfig) -> Net {
        let mut heartbeat = tokio::time::interval(PEER_HEARTBEAT);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Net {
            swarm,
            topics,
            cfg,
            known: HashMap::new(),
            last_discovery: None,
            heartbeat,
            counters: PeerCounters::default(),
        }
    }

    pub fn local_peer(&self) -> PeerId {
        *self.swarm.local_peer_id()
    }

    /// The next thing the swarm reports that the actor must know about
    /// (everything else — identify, kad, discovery — is handled here).
    pub async fn next_event(&mut self) -> NetEvent {
        loop {
            tokio::select! {
                ev = self.swarm.select_next_some() => {
                    if let Some(ev) = self.on_swarm_event(ev) {
                        return ev;
                    }
                }
                _ = self.heartbeat.tick() => self.on_heartbeat(),
            }
        }
    }

    pub fn publish(&mut self, topic: TopicKind, data: Vec<u8>) -> Result<(), NetError> {
        let t = self.topics.get(topic).clone();
        self.swarm
            .behaviour_mut()
            .gossipsub
            .publish(t, data)
            .map(|_| ())
            .map_err(|e| NetError::Publish(e.to_string()))
    }

    /// Send a `pattern_request`; the answer comes back as [`NetEvent::Response`].
    pub fn request(&mut self, peer: PeerId, request: PatternRequest) -> OutboundRequestId {
        self.swarm.behaviour_mut().sync.send_request(&peer, request)
    }

    pub fn respond(
        &mut self,
        channel: ResponseChannel<PatternResponse>,
        response: PatternResponse,
    ) {
        if self
            .swarm
            .behaviour_mut()
            .sync
            .send_response(channel, response)
            .is_err()
        {
            tracing::debug!("response dropped: the requester went away");
        }
    }

    pub fn report_validation(
        &mut self,
        message_id: &MessageId,
        source: &PeerId,
        acceptance: MessageAcceptance,
    ) {
        self.swarm
            .behaviour_mut()
            .gossipsub
            .report_message_validation_result(message_id, source, acceptance);
    }

    pub fn set_app_score(&mut self, peer: &PeerId, score: f64) {
        self.swarm
            .behaviour_mut()
            .gossipsub
            .set_application_score(peer, score);
    }

    pub fn dial(&mut self, addr: Multiaddr) -> Result<(), NetError> {
        if let Some((a, peer)) = super::split_peer_addr(&addr) {
            self.swarm.behaviour_mut().kad.add_address(&peer, a);
            self.gate().book.note_dial(peer, now_secs());
        }
        self.swarm
            .dial(addr.clone())
            .map_err(|e| NetError::Dial(format!("{addr}: {e}")))
    }

    /// Refuse and close connections to `peer` from now on.
    pub fn block(&mut self, peer: PeerId) {
        self.swarm.behaviour_mut().blocked.block_peer(peer);
    }

    /// Accept connections from `peer` again (a ban ended).
    pub fn unblock(&mut self, peer: PeerId) {
        self.swarm.behaviour_mut().blocked.unblock_peer(peer);
    }

    /// Close every connection to `peer` (it may come back).
    pub fn disconnect(&mut self, peer: PeerId) {
        self.gate().book.on_closing(peer, now_secs());
        let _ = self.swarm.disconnect_peer_id(peer);
    }

    pub fn connected_count(&self) -> usize {
        self.swarm.behaviour().gate.book.connected_len()
    }

    pub fn is_connected(&self, peer: &PeerId) -> bool {
        self.swarm.behaviour().gate.book.is_connected(peer)
    }

    pub fn peers(&self) -> Vec<PeerSnapshot> {
        let gs = &self.swarm.behaviour().gossipsub;
        let book = &self.swarm.behaviour().gate.book;
        let mut out: Vec<PeerSnapshot> = self
            .known
            .iter()
            .map(|(p, addrs)| PeerSnapshot {
                peer: *p,
                addrs: addrs.clone(),
                connected: book.is_connected(p),
                gossip_score: gs.peer_score(p),
            })
            .collect();
        for (p, _, _) in book.connected() {
            if !self.known.contains_key(p) {
                out.push(PeerSnapshot {
                    peer: *p,
                    addrs: Vec::new(),
                    connected: true,
                    gossip_score: gs.peer_score(p),
                });
            }
        }
        out.sort_by_key(|s| s.peer);
        out
    }

    pub fn listen_addrs(&self) -> Vec<Multiaddr> {
        self.swarm.listeners().cloned().collect()
    }

    fn remember(&mut self, peer: PeerId, mut addr: Multiaddr) {
        if matches!(
            addr.iter().last(),
            Some(libp2p::multiaddr::Protocol::P2p(_))
        ) {
            addr.pop();
        }
        if !self.known.contains_key(&peer) && self.known.len() >= MAX_KNOWN_PEERS {
            return;
        }
        let addrs = self.known.entry(peer).or_default();
        if !addrs.contains(&addr) {
            if addrs.len() >= MAX_ADDRS_PER_PEER {
                addrs.remove(0);
            }
            addrs.push(addr);
        }
    }

    fn gate(&mut self) -> &mut Gate {
        &mut self.swarm.behaviour_mut().gate
    }

    /// What the peer manager did so far.
    pub fn counters(&self) -> PeerCounters {
        PeerCounters {
            refused: self.swarm.behaviour().gate.refused,
            ..self.counters
        }
    }

    /// Start a kad bootstrap walk, at most once per [`DISCOVERY_INTERVAL`].
    fn discover(&mut self) {
        let due = self
            .last_discovery
            .is_none_or(|t| t.elapsed() >= DISCOVERY_INTERVAL);
        if due && self.swarm.behaviour_mut().kad.bootstrap().is_ok() {
            self.last_discovery = Some(std::time::Instant::now());
            self.counters.discoveries += 1;
        }
    }

    /// The peer manager's beat: prune above `max`, dial known peers below
    /// `target`, and look for more (kad) only while below target.
    fn on_heartbeat(&mut self) {
        let now = now_secs();
        self.gate().book.expire(now);
        let mesh: HashSet<PeerId> = self
            .swarm
            .behaviour()
            .gossipsub
            .all_mesh_peers()
            .copied()
            .collect();
        let gs = &self.swarm.behaviour().gossipsub;
        let gate = &self.swarm.behaviour().gate;
        let limits = gate.limits;
        let connected: Vec<peers::Connected> = gate
            .book
            .connected()
            .map(|(p, since, outbound)| peers::Connected {
                peer: *p,
                since,
                outbound,
                in_mesh: mesh.contains(p),
                protected: self.cfg.protected.contains(p),
                score: gs.peer_score(p).unwrap_or(0.0),
            })
            .collect();
        for p in peers::to_prune(&connected, &limits, now) {
            tracing::debug!(peer = %p, "pruning an excess peer");
            self.counters.pruned += 1;
            self.gate().book.on_pruned(p, &limits, now);
            let _ = self.swarm.disconnect_peer_id(p);
        }
        if !self.gate().book.below_target(&limits) {
            return;
        }
        // Known peers not connected, in an order of our own (each node
        // prefers different ones, so no one peer attracts every dial).
        let me = self.local_peer().to_bytes();
        let mut known: Vec<(blake3::Hash, PeerId)> = self
            .known
            .keys()
            .filter(|p| **p != self.local_peer() && !self.cfg.denied.contains(p))
            .map(|p| {
                let mut h = blake3::Hasher::new();
                h.update(&me);
                h.update(&p.to_bytes());
                (h.finalize(), *p)
            })
            .collect();
        known.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        let order: Vec<PeerId> = known.into_iter().map(|(_, p)| p).collect();
        let dials = self.gate().book.dials(&order, &limits, now);
        let dialled = !dials.is_empty();
        for p in dials {
            self.counters.dialled += 1;
            let addrs = self.known.get(&p).cloned().unwrap_or_default();
            let opts = DialOpts::peer_id(p).addresses(addrs).build();
            if self.swarm.dial(opts).is_err() {
                self.gate().book.on_dial_failed(&p, &limits, now);
            }
        }
        // A kad walk connects to every peer it queries (churn for them):
        // only when no known peer is left to dial.
        if !dialled && self.connected_count() > 0 && self.gate().book.below_target(&limits) {
            self.discover();
        }
    }

    fn on_swarm_event(&mut self, ev: SwarmEvent<MeshBehaviourEvent>) -> Option<NetEvent> {
        match ev {
            SwarmEvent::Behaviour(MeshBehaviourEvent::Gossipsub(e)) => return self.on_gossip(e),
            SwarmEvent::Behaviour(MeshBehaviourEvent::Sync(e)) => return self.on_sync(e),
            SwarmEvent::Behaviour(MeshBehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => {
                for addr in info.listen_addrs.into_iter().take(MAX_ADDRS_PER_PEER) {
                    if is_dialable(&addr) {
                        self.swarm
                            .behaviour_mut()
                            .kad
                            .add_address(&peer_id, addr.clone());
                        self.remember(peer_id, addr);
                    }
                }
            }
            SwarmEvent::Behaviour(MeshBehaviourEvent::Kad(kad::Event::RoutingUpdated {
                peer,
                addresses,
                ..
            })) if peer != *self.swarm.local_peer_id() && !self.cfg.denied.contains(&peer) => {
                for a in addresses.iter() {
                    self.remember(peer, a.clone());
                }
                let gate = self.gate();
                let limits = gate.limits;
                if gate.book.want_dial(peer, &limits, now_secs()) {
                    self.counters.dialled += 1;
                    let opts = DialOpts::peer_id(peer)
                        .addresses(addresses.into_vec())
                        .build();
                    if self.swarm.dial(opts).is_err() {
                        self.gate().book.on_dial_failed(&peer, &limits, now_secs());
                    }
                }
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                endpoint,
                num_established,
                ..
            } => {
                if endpoint.is_dialer() {
                    let addr = endpoint.get_remote_address().clone();
                    self.remember(peer_id, addr);
                }
                if num_established.get() == 1 {
                    let first = self.connected_count() == 0;
                    let now = now_secs();
                    self.gate()
                        .book
                        .on_connected(peer_id, endpoint.is_dialer(), now);
                    self.counters.connected += 1;
                    if first {
                        self.discover();
                    }
                    return Some(NetEvent::PeerConnected { peer: peer_id });
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                ..
            } => {
                let gate = self.gate();
                let limits = gate.limits;
                gate.book.on_disconnected(peer_id, &limits, now_secs());
                return Some(NetEvent::PeerDisconnected { peer: peer_id });
            }
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(%address, "listening");
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                tracing::debug!(?peer_id, %error, "dial failed");
                if let Some(p) = peer_id {
                    let gate = self.gate();
                    let limits = gate.limits;
                    gate.book.on_dial_failed(&p, &limits, now_secs());
                }
            }
            _ => {}
        }
        None
    }

    fn on_gossip(&mut self, e: gossipsub::Event) -> Option<NetEvent> {
        match e {
            gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            } => {
                let Some(topic) = self.topics.kind_of(&message.topic) else {
                    self.report_validation(
                        &message_id,
                        &propagation_source,
                        MessageAcceptance::Ignore,
                    );
                    return None;
                };
                Some(NetEvent::Gossip {
                    source: propagation_source,
                    message_id,
                    topic,
                    data: message.data,
                })
            }
            gossipsub::Event::Subscribed { peer_id, .. } => {
                Some(NetEvent::PeerSubscribed { peer: peer_id })
            }
            _ => None,
        }
    }

    fn on_sync(
        &mut self,
        e: request_response::Event<PatternRequest, PatternResponse>,
    ) -> Option<NetEvent> {
        match e {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request {
                    request, channel, ..
                } => Some(NetEvent::Request {
                    peer,
                    request: Box::new(request),
                    channel,
                }),
                request_response::Message::Response {
                    request_id,
                    response,
                } => Some(NetEvent::Response {
                    id: request_id,
                    peer,
                    result: Ok(response),
                }),
            },
            request_response::Event::OutboundFailure {
                request_id,
                error,
                peer,
                ..
            } => {
                tracing::debug!(%peer, %error, "sync request failed");
                // A response the peer sent wrong is its fault (charged by
                // the core); a stream that broke is nobody's.
                let error = match &error {
                    request_response::OutboundFailure::Io(e) => match codec::undecodable(e) {
                        Some(u) => NetError::Undecodable(u.to_string()),
                        None => NetError::Request(error.to_string()),
                    },
                    _ => NetError::Request(error.to_string()),
                };
                Some(NetEvent::Response {
                    id: request_id,
                    peer,
                    result: Err(error),
                })
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, %error, "inbound sync request failed");
                match error {
                    request_response::InboundFailure::Io(e) if codec::undecodable(&e).is_some() => {
                        Some(NetEvent::BadRequest {
                            peer,
                            error: e.to_string(),
                        })
                    }
                    _ => None,
                }
            }
            request_response::Event::ResponseSent { .. } => None,
        }
    }
}

/// Addresses worth dialling: not unspecified (0.0.0.0 / ::).
fn is_dialable(addr: &Multiaddr) -> bool {
    !addr.iter().any(|p| match p {
        libp2p::multiaddr::Protocol::Ip4(ip) => ip.is_unspecified(),
        libp2p::multiaddr::Protocol::Ip6(ip) => ip.is_unspecified(),
        _ => false,
    })
}
