//! The peer manager inside the swarm: a `NetworkBehaviour` that owns the
//! [`PeerBook`] and answers the swarm's "may this connection be?" with the
//! book's pure decisions — so connections nobody asked for (a kad walk's
//! dials once we hold our target, a peer we just pruned dialling back)
//! are refused before they cost a handshake on our side or reach the actor.

use std::convert::Infallible;
use std::task::{Context, Poll};

use libp2p::core::transport::PortUse;
use libp2p::core::Endpoint;
use libp2p::swarm::{
    dummy, ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm,
};
use libp2p::{Multiaddr, PeerId};

use super::peers::{PeerBook, PeerLimits};

/// Why the gate refused a connection.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("{0}: we hold our target of peers (a dial we did not ask for)")]
    AtTarget(PeerId),
    #[error("{0}: pruned or closed on us moments ago")]
    Cooling(PeerId),
}

/// Owns the peer manager's state; [`super::Net`] drives it on swarm events.
pub struct Gate {
    pub book: PeerBook,
    pub limits: PeerLimits,
    /// Connections refused so far (inbound and outbound).
    pub refused: u64,
}

impl Gate {
    pub fn new(limits: PeerLimits) -> Gate {
        Gate {
            book: PeerBook::default(),
            limits,
            refused: 0,
        }
    }
}

fn now() -> f64 {
    super::net::now_secs()
}

impl NetworkBehaviour for Gate {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        if !self.book.allows_inbound(&peer, &self.limits, now()) {
            self.refused += 1;
            return Err(ConnectionDenied::new(Refused::Cooling(peer)));
        }
        Ok(dummy::ConnectionHandler)
    }

    fn handle_pending_outbound_connection(
        &mut self,
        _: ConnectionId,
        peer: Option<PeerId>,
        _: &[Multiaddr],
        _: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        if let Some(p) = peer {
            if !self.book.allows_outbound(p, &self.limits, now()) {
                self.refused += 1;
                return Err(ConnectionDenied::new(if self.book.is_cooling(&p, now()) {
                    Refused::Cooling(p)
                } else {
                    Refused::AtTarget(p)
                }));
            }
        }
        Ok(vec![])
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, _event: FromSwarm) {}

    fn on_connection_handler_event(
        &mut self,
        _: PeerId,
        _: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}
