//! A stand-alone driver for [`Net`] outside a node: one task owns the swarm,
//! a cloneable [`NetworkHandle`] sends it commands over a bounded channel,
//! events come back over another (tests and tools drive a bare network
//! layer with it, e.g. an adversary). The node itself does not use this:
//! its actor owns the `Net` directly.

use libp2p::identity::Keypair;
use libp2p::request_response::ResponseChannel;
use libp2p::Multiaddr;
use libp2p::PeerId;
use metamesh_protocol::sync::{SyncRequest, SyncResponse};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::{NetError, NetEvent, NetworkConfig, TopicKind};

/// Capacity of the command and event channels.
pub const CHANNEL_CAPACITY: usize = 256;

enum Command {
    Publish {
        topic: TopicKind,
        data: Vec<u8>,
        reply: oneshot::Sender<Result<(), NetError>>,
    },
    Respond {
        channel: ResponseChannel<SyncResponse>,
        response: SyncResponse,
    },
    Dial {
        addr: Multiaddr,
        reply: oneshot::Sender<Result<(), NetError>>,
    },
    Request {
        peer: PeerId,
        request: SyncRequest,
        reply: oneshot::Sender<Result<SyncResponse, NetError>>,
    },
}

/// Commands for a driven [`Net`].
#[derive(Clone)]
pub struct NetworkHandle {
    commands: mpsc::Sender<Command>,
}

impl NetworkHandle {
    pub async fn publish(&self, topic: TopicKind, data: Vec<u8>) -> Result<(), NetError> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Publish { topic, data, reply })
            .await
            .map_err(|_| NetError::Stopped)?;
        rx.await.map_err(|_| NetError::Stopped)?
    }

    pub async fn respond(
        &self,
        channel: ResponseChannel<SyncResponse>,
        response: impl Into<SyncResponse>,
    ) -> Result<(), NetError> {
        let response = response.into();
        self.commands
            .send(Command::Respond { channel, response })
            .await
            .map_err(|_| NetError::Stopped)
    }

    /// Send a `pattern_request` and wait for its answer.
    pub async fn request(
        &self,
        peer: PeerId,
        request: impl Into<SyncRequest>,
    ) -> Result<SyncResponse, NetError> {
        let request = request.into();
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Request {
                peer,
                request,
                reply,
            })
            .await
            .map_err(|_| NetError::Stopped)?;
        rx.await.map_err(|_| NetError::Stopped)?
    }

    pub async fn dial(&self, addr: Multiaddr) -> Result<(), NetError> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Dial { addr, reply })
            .await
            .map_err(|_| NetError::Stopped)?;
        rx.await.map_err(|_| NetError::Stopped)?
    }
}

/// Build the network and drive it on a task. Gossip messages the receiver
/// does not keep up with are reported `Ignore` (never forwarded); events
/// stop when the receiver is dropped, and so does the task.
pub fn start(
    key: Keypair,
    cfg: NetworkConfig,
) -> Result<(NetworkHandle, mpsc::Receiver<NetEvent>, JoinHandle<()>), NetError> {
    let mut net = super::build(key, cfg)?;
    let (cmd_tx, mut cmd_rx) = mpsc::channel::<Command>(CHANNEL_CAPACITY);
    let (ev_tx, ev_rx) = mpsc::channel(CHANNEL_CAPACITY);
    let task = tokio::spawn(async move {
        let mut pending = std::collections::HashMap::new();
        loop {
            tokio::select! {
                ev = net.next_event() => {
                    let ev = match ev {
                        NetEvent::Response { id, peer, result } => match pending.remove(&id) {
                            Some(reply) => {
                                let _: Result<(), _> = oneshot::Sender::send(reply, result);
                                continue;
                            }
                            None => NetEvent::Response { id, peer, result },
                        },
                        other => other,
                    };
                    match ev_tx.try_send(ev) {
                        Ok(()) => {}
                        Err(mpsc::error::TrySendError::Full(NetEvent::Gossip { source, message_id, .. })) => {
                            net.report_validation(
                                &message_id,
                                &source,
                                libp2p::gossipsub::MessageAcceptance::Ignore,
                            );
                        }
                        Err(mpsc::error::TrySendError::Full(_)) => {}
                        Err(mpsc::error::TrySendError::Closed(_)) => break,
                    }
                }
                cmd = cmd_rx.recv() => match cmd {
                    None => break,
                    Some(Command::Publish { topic, data, reply }) => {
                        let _ = reply.send(net.publish(topic, data));
                    }
                    Some(Command::Respond { channel, response }) => net.respond(channel, response),
                    Some(Command::Dial { addr, reply }) => {
                        let _ = reply.send(net.dial(addr));
                    }
                    Some(Command::Request { peer, request, reply }) => {
                        pending.insert(net.request(peer, request), reply);
                    }
                },
            }
        }
    });
    Ok((NetworkHandle { commands: cmd_tx }, ev_rx, task))
}
