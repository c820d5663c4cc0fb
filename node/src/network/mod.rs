//! The libp2p side of the node (DESIGN §3).
//!
//! The swarm is owned by the node's actor ([`crate::actor`]), which polls
//! [`Net::next_event`] in its single loop and executes its decisions through
//! [`Net`]'s methods; the API reaches the actor through a cloneable handle
//! with bounded channels and oneshot replies (the `Client` + `EventLoop`
//! shape of rust-libp2p's `examples/file-sharing`). Nothing here decides
//! what to accept, request or serve.

pub mod behaviour;
pub mod codec;
pub mod driver;
pub mod gate;
pub mod net;
pub mod peers;
pub mod tree;

use std::time::Duration;

use libp2p::gossipsub::IdentTopic;
use libp2p::{Multiaddr, PeerId};

pub use driver::{start, NetworkHandle};
pub use net::{Net, NetEvent, PeerCounters, PeerSnapshot};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum NetError {
    #[error("network configuration: {0}")]
    Config(String),
    #[error("cannot listen on {0}")]
    Listen(String),
    #[error("cannot dial {0}")]
    Dial(String),
    #[error("publish failed: {0}")]
    Publish(String),
    #[error("request failed: {0}")]
    Request(String),
    /// The peer answered with a response that does not decode (or is too large).
    #[error("{0}")]
    Undecodable(String),
    #[error("the network task has stopped")]
    Stopped,
}

/// Which gossipsub topic a message travelled on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TopicKind {
    Records,
    Announce,
    Insights,
}

/// The mesh's topics: `metamesh/<mesh>/records/1`, `…/announce/1` and `…/insights/1`.
#[derive(Debug, Clone)]
pub struct Topics {
    pub records: IdentTopic,
    pub announce: IdentTopic,
    pub insights: IdentTopic,
}

impl Topics {
    pub fn new(mesh: &str) -> Topics {
        Topics {
            records: IdentTopic::new(format!("metamesh/{mesh}/records/1")),
            announce: IdentTopic::new(format!("metamesh/{mesh}/announce/1")),
            insights: IdentTopic::new(format!("metamesh/{mesh}/insights/1")),
        }
    }

    pub fn get(&self, kind: TopicKind) -> &IdentTopic {
        match kind {
            TopicKind::Records => &self.records,
            TopicKind::Announce => &self.announce,
            TopicKind::Insights => &self.insights,
        }
    }

    pub fn kind_of(&self, hash: &libp2p::gossipsub::TopicHash) -> Option<TopicKind> {
        if *hash == self.records.hash() {
            Some(TopicKind::Records)
        } else if *hash == self.announce.hash() {
            Some(TopicKind::Announce)
        } else if *hash == self.insights.hash() {
            Some(TopicKind::Insights)
        } else {
            None
        }
    }
}

/// Default target of connected peers (`peers.target`).
pub const DEFAULT_TARGET_PEERS: usize = 8;
/// Default most connected peers before pruning (`peers.max`).
pub const DEFAULT_MAX_PEERS: usize = 12;
/// Default grace of a new connection, seconds (`peers.grace_secs`).
pub const DEFAULT_PEER_GRACE_SECS: u64 = 10;
/// Default reconnect cooldown, seconds (`peers.reconnect_cooldown_secs`).
pub const DEFAULT_RECONNECT_COOLDOWN_SECS: u64 = 60;

/// Everything the network layer needs to start.
#[derive(Debug, Clone)]
pub struct NetworkConfig {
    pub mesh: String,
    pub listen: Vec<Multiaddr>,
    pub bootstrap: Vec<Multiaddr>,
    /// Subscribe to the mesh topics. Off when sharing is disabled: a node
    /// that does not subscribe forwards nothing.
    pub subscribe: bool,
    pub max_connections: u32,
    pub max_connections_per_peer: u32,
    pub request_timeout: Duration,
    pub idle_timeout: Duration,
    /// Peers whose connections are refused or closed.
    pub denied: Vec<PeerId>,
    /// Peers the node keeps dialling to grow its view of the mesh (kad
    /// discovery), up to this many connections (see [`peers`]).
    pub target_peers: usize,
    /// More connected peers than this are pruned down to it (never below
    /// `target_peers`; raised to it if lower).
    pub max_peers: usize,
    /// A new connection is safe from pruning this long.
    pub peer_grace: Duration,
    /// A peer we pruned is refused (while we hold `target_peers`), and a
    /// peer that closed on us is not re-dialled, this long.
    pub reconnect_cooldown: Duration,
    /// Peers never pruned (the parent).
    pub protected: Vec<PeerId>,
    /// Speak `/metamesh/tree/1` (the core's record tree, `[tree] enabled`).
    pub tree: bool,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            mesh: "default".into(),
            listen: Vec::new(),
            bootstrap: Vec::new(),
            subscribe: true,
            max_connections: 128,
            max_connections_per_peer: 2,
            request_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            denied: Vec::new(),
            target_peers: DEFAULT_TARGET_PEERS,
            max_peers: DEFAULT_MAX_PEERS,
            peer_grace: Duration::from_secs(DEFAULT_PEER_GRACE_SECS),
            reconnect_cooldown: Duration::from_secs(DEFAULT_RECONNECT_COOLDOWN_SECS),
            protected: Vec::new(),
            tree: false,
        }
    }
}

/// Split `/…/p2p/<PeerId>` into the address and the peer.
pub fn split_peer_addr(addr: &Multiaddr) -> Option<(Multiaddr, PeerId)> {
    let mut a = addr.clone();
    match a.pop() {
        Some(libp2p::multiaddr::Protocol::P2p(peer)) => Some((a, peer)),
        _ => None,
    }
}

/// Build the network: the swarm, listening and dialling the bootstrap
/// peers. The caller (the actor) owns and polls it.
pub fn build(key: libp2p::identity::Keypair, cfg: NetworkConfig) -> Result<Net, NetError> {
    let local_peer = key.public().to_peer_id();
    let topics = Topics::new(&cfg.mesh);
    let mut swarm = behaviour::build_swarm(key, &cfg, &topics)?;
    for addr in &cfg.listen {
        swarm
            .listen_on(addr.clone())
            .map_err(|e| NetError::Listen(format!("{addr}: {e}")))?;
    }
    for addr in &cfg.bootstrap {
        if let Some((a, peer)) = split_peer_addr(addr) {
            if peer == local_peer {
                continue;
            }
            swarm.behaviour_mut().kad.add_address(&peer, a.clone());
            swarm.add_peer_address(peer, a);
            swarm
                .behaviour_mut()
                .gate
                .book
                .note_dial(peer, net::now_secs());
        }
        if let Err(e) = swarm.dial(addr.clone()) {
            tracing::warn!(%addr, error = %e, "bootstrap dial failed");
        }
    }
    Net::new(swarm, topics, cfg)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn topics_are_named_per_mesh() {
        let t = Topics::new("lab");
        assert_eq!(t.announce.to_string(), "metamesh/lab/announce/1");
        assert_eq!(t.insights.to_string(), "metamesh/lab/insights/1");
        assert_eq!(t.kind_of(&t.insights.hash()), Some(TopicKind::Insights));
        assert_eq!(t.kind_of(&Topics::new("other").announce.hash()), None);
    }

    #[test]
    fn peer_addresses_split() {
        let p = PeerId::random();
        let a: Multiaddr = format!("/ip4/127.0.0.1/tcp/1/p2p/{p}").parse().unwrap();
        let (addr, peer) = split_peer_addr(&a).unwrap();
        assert_eq!(peer, p);
        assert_eq!(addr.to_string(), "/ip4/127.0.0.1/tcp/1");
        assert!(split_peer_addr(&addr).is_none());
    }
}
