//! The libp2p side of the node (DESIGN §3).
//!
//! Shape (after rust-libp2p's `examples/file-sharing`): one tokio task — the
//! [`event_loop::EventLoop`] — owns the `Swarm`; everything else talks to it
//! through a cloneable [`NetworkHandle`] that sends [`event_loop::Command`]s
//! over a **bounded** channel with `oneshot` replies, and receives
//! [`NetEvent`]s over another bounded channel. The event loop never blocks on
//! a full event channel: it sheds load (a gossip message it cannot hand on is
//! reported `Ignore`, an inbound request is dropped and the remote retries),
//! so the two channels can never deadlock each other.
//!
//! Protocol decisions (what to accept, what to request, what to serve) are not
//! made here: they live in [`crate::pipeline`] and [`crate::service`], on top
//! of the pure core in `metamesh_protocol`.

pub mod behaviour;
pub mod event_loop;
pub mod handle;

use std::time::Duration;

use libp2p::gossipsub::IdentTopic;
use libp2p::{Multiaddr, PeerId};

pub use event_loop::{NetEvent, PeerSnapshot};
pub use handle::{NetError, NetworkHandle};

/// Capacity of the command channel (handle → event loop).
pub const COMMAND_CHANNEL_CAPACITY: usize = 256;
/// Capacity of the event channel (event loop → service).
pub const EVENT_CHANNEL_CAPACITY: usize = 1024;

/// Which gossipsub topic a message travelled on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TopicKind {
    Announce,
    Insights,
}

/// The mesh's two topics: `metamesh/<mesh>/announce/1` and `metamesh/<mesh>/insights/1`.
#[derive(Debug, Clone)]
pub struct Topics {
    pub announce: IdentTopic,
    pub insights: IdentTopic,
}

impl Topics {
    pub fn new(mesh: &str) -> Topics {
        Topics {
            announce: IdentTopic::new(format!("metamesh/{mesh}/announce/1")),
            insights: IdentTopic::new(format!("metamesh/{mesh}/insights/1")),
        }
    }

    pub fn get(&self, kind: TopicKind) -> &IdentTopic {
        match kind {
            TopicKind::Announce => &self.announce,
            TopicKind::Insights => &self.insights,
        }
    }

    pub fn kind_of(&self, hash: &libp2p::gossipsub::TopicHash) -> Option<TopicKind> {
        if *hash == self.announce.hash() {
            Some(TopicKind::Announce)
        } else if *hash == self.insights.hash() {
            Some(TopicKind::Insights)
        } else {
            None
        }
    }
}

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
    /// discovery), up to this many connections.
    pub target_peers: usize,
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
            target_peers: 24,
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

/// Start the network: build the swarm, listen, dial bootstrap peers, and
/// spawn the event loop on the current tokio runtime.
pub fn start(
    key: libp2p::identity::Keypair,
    cfg: NetworkConfig,
) -> Result<
    (
        NetworkHandle,
        tokio::sync::mpsc::Receiver<NetEvent>,
        tokio::task::JoinHandle<()>,
    ),
    NetError,
> {
    let (cmd_tx, cmd_rx) = tokio::sync::mpsc::channel(COMMAND_CHANNEL_CAPACITY);
    let (ev_tx, ev_rx) = tokio::sync::mpsc::channel(EVENT_CHANNEL_CAPACITY);
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
        }
        if let Err(e) = swarm.dial(addr.clone()) {
            tracing::warn!(%addr, error = %e, "bootstrap dial failed");
        }
    }
    let event_loop = event_loop::EventLoop::new(swarm, cmd_rx, ev_tx, topics, cfg);
    let task = tokio::spawn(event_loop.run());
    Ok((NetworkHandle::new(cmd_tx, local_peer), ev_rx, task))
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
