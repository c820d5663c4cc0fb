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
use super::{codec, NetError, NetworkConfig, TopicKind, Topics};

/// Most addresses remembered per peer.
const MAX_ADDRS_PER_PEER: usize = 8;
/// Most peers remembered (connected or not).
const MAX_KNOWN_PEERS: usize = 4096;
/// How often kad re-runs a bootstrap query to discover more of the mesh.
const DISCOVERY_INTERVAL: Duration = Duration::from_secs(30);

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
    connected: HashSet<PeerId>,
    discovery: tokio::time::Interval,
}

impl Net {
    pub fn new(swarm: Swarm<MeshBehaviour>, topics: Topics, cfg: NetworkConfig) -> Net {
        let mut discovery = tokio::time::interval(DISCOVERY_INTERVAL);
        discovery.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Net {
            swarm,
            topics,
            cfg,
            known: HashMap::new(),
            connected: HashSet::new(),
            discovery,
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
                _ = self.discovery.tick() => {
                    if !self.connected.is_empty() {
                        let _ = self.swarm.behaviour_mut().kad.bootstrap();
                    }
                }
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
        let _ = self.swarm.disconnect_peer_id(peer);
    }

    pub fn connected_count(&self) -> usize {
        self.connected.len()
    }

    pub fn is_connected(&self, peer: &PeerId) -> bool {
        self.connected.contains(peer)
    }

    pub fn peers(&self) -> Vec<PeerSnapshot> {
        let gs = &self.swarm.behaviour().gossipsub;
        let mut out: Vec<PeerSnapshot> = self
            .known
            .iter()
            .map(|(p, addrs)| PeerSnapshot {
                peer: *p,
                addrs: addrs.clone(),
                connected: self.connected.contains(p),
                gossip_score: gs.peer_score(p),
            })
            .collect();
        for p in &self.connected {
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
            })) if self.connected.len() < self.cfg.target_peers
                && !self.connected.contains(&peer)
                && peer != *self.swarm.local_peer_id()
                && !self.cfg.denied.contains(&peer) =>
            {
                let opts = DialOpts::peer_id(peer)
                    .addresses(addresses.into_vec())
                    .build();
                let _ = self.swarm.dial(opts);
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
                    let first = self.connected.is_empty();
                    self.connected.insert(peer_id);
                    if first {
                        let _ = self.swarm.behaviour_mut().kad.bootstrap();
                    }
                    return Some(NetEvent::PeerConnected { peer: peer_id });
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                ..
            } => {
                self.connected.remove(&peer_id);
                return Some(NetEvent::PeerDisconnected { peer: peer_id });
            }
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(%address, "listening");
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                tracing::debug!(?peer_id, %error, "dial failed");
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
