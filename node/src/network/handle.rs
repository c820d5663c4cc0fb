//! The cloneable handle through which the rest of the node uses the network.

use libp2p::gossipsub::{MessageAcceptance, MessageId};
use libp2p::request_response::ResponseChannel;
use libp2p::{Multiaddr, PeerId};
use metamesh_protocol::wire::{PatternRequest, PatternResponse};
use tokio::sync::{mpsc, oneshot};

use super::event_loop::{Command, PeerSnapshot};
use super::TopicKind;

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
    #[error("the network task has stopped")]
    Stopped,
}

#[derive(Clone)]
pub struct NetworkHandle {
    commands: mpsc::Sender<Command>,
    local_peer: PeerId,
}

impl NetworkHandle {
    pub(super) fn new(commands: mpsc::Sender<Command>, local_peer: PeerId) -> NetworkHandle {
        NetworkHandle {
            commands,
            local_peer,
        }
    }

    pub fn local_peer(&self) -> PeerId {
        self.local_peer
    }

    async fn send(&self, cmd: Command) -> Result<(), NetError> {
        self.commands.send(cmd).await.map_err(|_| NetError::Stopped)
    }

    pub async fn publish(&self, topic: TopicKind, data: Vec<u8>) -> Result<(), NetError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Publish { topic, data, reply }).await?;
        rx.await.map_err(|_| NetError::Stopped)?
    }

    /// Send a `pattern_request` and wait for the response (bounded by the
    /// request timeout configured in the behaviour).
    pub async fn request(
        &self,
        peer: PeerId,
        request: PatternRequest,
    ) -> Result<PatternResponse, NetError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Request {
            peer,
            request,
            reply,
        })
        .await?;
        rx.await.map_err(|_| NetError::Stopped)?
    }

    pub async fn respond(
        &self,
        channel: ResponseChannel<PatternResponse>,
        response: PatternResponse,
    ) -> Result<(), NetError> {
        self.send(Command::Respond { channel, response }).await
    }

    pub async fn report_validation(
        &self,
        message_id: MessageId,
        source: PeerId,
        acceptance: MessageAcceptance,
    ) -> Result<(), NetError> {
        self.send(Command::ReportValidation {
            message_id,
            source,
            acceptance,
        })
        .await
    }

    pub async fn set_app_score(&self, peer: PeerId, score: f64) -> Result<(), NetError> {
        self.send(Command::SetAppScore { peer, score }).await
    }

    pub async fn dial(&self, addr: Multiaddr) -> Result<(), NetError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Dial { addr, reply }).await?;
        rx.await.map_err(|_| NetError::Stopped)?
    }

    /// Refuse and close connections to `peer` from now on.
    pub async fn block(&self, peer: PeerId) -> Result<(), NetError> {
        self.send(Command::Block { peer }).await
    }

    pub async fn peers(&self) -> Result<Vec<PeerSnapshot>, NetError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Peers { reply }).await?;
        rx.await.map_err(|_| NetError::Stopped)
    }

    pub async fn listen_addrs(&self) -> Result<Vec<Multiaddr>, NetError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::ListenAddrs { reply }).await?;
        rx.await.map_err(|_| NetError::Stopped)
    }

    pub async fn shutdown(&self) {
        let _ = self.commands.send(Command::Shutdown).await;
    }
}
