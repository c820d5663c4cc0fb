//! The one task that owns the `Swarm`.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures::StreamExt;
use libp2p::gossipsub::{self, MessageAcceptance, MessageId};
use libp2p::request_response::{self, OutboundRequestId, ResponseChannel};
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::swarm::SwarmEvent;
use libp2p::{identify, kad, Multiaddr, PeerId, Swarm};
use metamesh_protocol::wire::{PatternRequest, PatternResponse};
use tokio::sync::{mpsc, oneshot};

use super::behaviour::{MeshBehaviour, MeshBehaviourEvent};
use super::{NetError, NetworkConfig, TopicKind, Topics};

/// Most addresses remembered per peer.
const MAX_ADDRS_PER_PEER: usize = 8;
/// Most peers remembered (connected or not).
const MAX_KNOWN_PEERS: usize = 4096;
/// How often kad re-runs a bootstrap query to discover more of the mesh.
const DISCOVERY_INTERVAL: Duration = Duration::from_secs(30);

/// Requests from the handle to the event loop.
pub enum Command {
    Publish {
        topic: TopicKind,
        data: Vec<u8>,
        reply: oneshot::Sender<Result<(), NetError>>,
    },
    Request {
        peer: PeerId,
        request: PatternRequest,
        reply: oneshot::Sender<Result<PatternResponse, NetError>>,
    },
    Respond {
        channel: ResponseChannel<PatternResponse>,
        response: PatternResponse,
    },
    ReportValidation {
        message_id: MessageId,
        source: PeerId,
        acceptance: MessageAcceptance,
    },
    SetAppScore {
        peer: PeerId,
        score: f64,
    },
    Dial {
        addr: Multiaddr,
        reply: oneshot::Sender<Result<(), NetError>>,
    },
    Block {
        peer: PeerId,
    },
    Peers {
        reply: oneshot::Sender<Vec<PeerSnapshot>>,
    },
    ListenAddrs {
        reply: oneshot::Sender<Vec<Multiaddr>>,
    },
    Shutdown,
}

/// What the network reports to the service.
#[derive(Debug)]
pub enum NetEvent {
    /// A gossip message awaiting validation: the service must answer with
    /// [`super::NetworkHandle::report_validation`].
    Gossip {
        source: PeerId,
        message_id: MessageId,
        topic: TopicKind,
        data: Vec<u8>,
    },
    /// An inbound `pattern_request`; answer with [`super::NetworkHandle::respond`].
    Request {
        peer: PeerId,
        /// Boxed: a request (with its optional promoted record) is much
        /// larger than the other events.
        request: Box<PatternRequest>,
        channel: ResponseChannel<PatternResponse>,
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
}

/// A known peer, for `GET /v1/peers`.
#[derive(Debug, Clone)]
pub struct PeerSnapshot {
    pub peer: PeerId,
    pub addrs: Vec<Multiaddr>,
    pub connected: bool,
    pub gossip_score: Option<f64>,
}

pub struct EventLoop {
    swarm: Swarm<MeshBehaviour>,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<NetEvent>,
    topics: Topics,
    cfg: NetworkConfig,
    pending: HashMap<OutboundRequestId, oneshot::Sender<Result<PatternResponse, NetError>>>,
    known: HashMap<PeerId, Vec<Multiaddr>>,
    connected: HashSet<PeerId>,
    dropped_events: u64,
}

impl EventLoop {
    pub fn new(
        swarm: Swarm<MeshBehaviour>,
        commands: mpsc::Receiver<Command>,
        events: mpsc::Sender<NetEvent>,
        topics: Topics,
        cfg: NetworkConfig,
    ) -> EventLoop {
        EventLoop {
            swarm,
            commands,
            events,
            topics,
            cfg,
            pending: HashMap::new(),
            known: HashMap::new(),
            connected: HashSet::new(),
            dropped_events: 0,
        }
    }

    pub async fn run(mut self) {
        let mut discovery = tokio::time::interval(DISCOVERY_INTERVAL);
        discovery.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                ev = self.swarm.select_next_some() => self.on_swarm_event(ev),
                cmd = self.commands.recv() => match cmd {
                    Some(Command::Shutdown) | None => break,
                    Some(c) => self.on_command(c),
                },
                _ = discovery.tick() => {
                    if !self.connected.is_empty() {
                        let _ = self.swarm.behaviour_mut().kad.bootstrap();
                    }
                }
            }
        }
        for (_, reply) in self.pending.drain() {
            let _ = reply.send(Err(NetError::Stopped));
        }
        tracing::debug!(
            dropped_events = self.dropped_events,
            "network event loop stopped"
        );
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

    /// Hand an event to the service without waiting; on a full channel the
    /// event comes back so the caller can shed it properly.
    #[allow(clippy::result_large_err)]
    fn emit(&mut self, ev: NetEvent) -> Result<(), NetEvent> {
        match self.events.try_send(ev) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(ev))
            | Err(mpsc::error::TrySendError::Closed(ev)) => {
                self.dropped_events += 1;
                Err(ev)
            }
        }
    }

    fn on_command(&mut self, cmd: Command) {
        let b = self.swarm.behaviour_mut();
        match cmd {
            Command::Publish { topic, data, reply } => {
                let t = self.topics.get(topic).clone();
                let r = b
                    .gossipsub
                    .publish(t, data)
                    .map(|_| ())
                    .map_err(|e| NetError::Publish(e.to_string()));
                let _ = reply.send(r);
            }
            Command::Request {
                peer,
                request,
                reply,
            } => {
                let id = b.sync.send_request(&peer, request);
                self.pending.insert(id, reply);
            }
            Command::Respond { channel, response } => {
                if b.sync.send_response(channel, response).is_err() {
                    tracing::debug!("response dropped: the requester went away");
                }
            }
            Command::ReportValidation {
                message_id,
                source,
                acceptance,
            } => {
                b.gossipsub
                    .report_message_validation_result(&message_id, &source, acceptance);
            }
            Command::SetAppScore { peer, score } => {
                b.gossipsub.set_application_score(&peer, score);
            }
            Command::Dial { addr, reply } => {
                if let Some((a, peer)) = super::split_peer_addr(&addr) {
                    b.kad.add_address(&peer, a);
                }
                let r = self
                    .swarm
                    .dial(addr.clone())
                    .map_err(|e| NetError::Dial(format!("{addr}: {e}")));
                let _ = reply.send(r);
            }
            Command::Block { peer } => {
                b.blocked.block_peer(peer);
            }
            Command::Peers { reply } => {
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
                let _ = reply.send(out);
            }
            Command::ListenAddrs { reply } => {
                let _ = reply.send(self.swarm.listeners().cloned().collect());
            }
            Command::Shutdown => {}
        }
    }

    fn on_swarm_event(&mut self, ev: SwarmEvent<MeshBehaviourEvent>) {
        match ev {
            SwarmEvent::Behaviour(MeshBehaviourEvent::Gossipsub(e)) => self.on_gossip(e),
            SwarmEvent::Behaviour(MeshBehaviourEvent::Sync(e)) => self.on_sync(e),
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
                    let _ = self.emit(NetEvent::PeerConnected { peer: peer_id });
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                ..
            } => {
                self.connected.remove(&peer_id);
                let _ = self.emit(NetEvent::PeerDisconnected { peer: peer_id });
            }
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(%address, "listening");
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                tracing::debug!(?peer_id, %error, "dial failed");
            }
            _ => {}
        }
    }

    fn on_gossip(&mut self, e: gossipsub::Event) {
        match e {
            gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            } => {
                let Some(topic) = self.topics.kind_of(&message.topic) else {
                    self.swarm
                        .behaviour_mut()
                        .gossipsub
                        .report_message_validation_result(
                            &message_id,
                            &propagation_source,
                            MessageAcceptance::Ignore,
                        );
                    return;
                };
                let ev = NetEvent::Gossip {
                    source: propagation_source,
                    message_id,
                    topic,
                    data: message.data,
                };
                if let Err(NetEvent::Gossip {
                    source, message_id, ..
                }) = self.emit(ev)
                {
                    // Overloaded: drop the message without forwarding or penalty.
                    self.swarm
                        .behaviour_mut()
                        .gossipsub
                        .report_message_validation_result(
                            &message_id,
                            &source,
                            MessageAcceptance::Ignore,
                        );
                }
            }
            gossipsub::Event::Subscribed { peer_id, .. } => {
                let _ = self.emit(NetEvent::PeerSubscribed { peer: peer_id });
            }
            _ => {}
        }
    }

    fn on_sync(&mut self, e: request_response::Event<PatternRequest, PatternResponse>) {
        match e {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request {
                    request, channel, ..
                } => {
                    // When overloaded the channel is dropped; the requester
                    // sees a failure and retries later.
                    let _ = self.emit(NetEvent::Request {
                        peer,
                        request: Box::new(request),
                        channel,
                    });
                }
                request_response::Message::Response {
                    request_id,
                    response,
                } => {
                    if let Some(reply) = self.pending.remove(&request_id) {
                        let _ = reply.send(Ok(response));
                    }
                }
            },
            request_response::Event::OutboundFailure {
                request_id,
                error,
                peer,
                ..
            } => {
                tracing::debug!(%peer, %error, "sync request failed");
                if let Some(reply) = self.pending.remove(&request_id) {
                    let _ = reply.send(Err(NetError::Request(error.to_string())));
                }
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, %error, "inbound sync request failed");
            }
            request_response::Event::ResponseSent { .. } => {}
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
