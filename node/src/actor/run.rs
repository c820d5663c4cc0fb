//! The actor: one task owning the swarm and the exchange state.
//!
//! Everything reaches it as a message — swarm events, commands from
//! [`super::Node`] handles, completions of store jobs and timers — and
//! both commands and completions are closures run on the actor
//! (`FnOnce(&mut Actor)`), so a handle's request and a job's result are
//! applied between two events, never concurrently. The actor never calls
//! sled and never awaits anything but its next input.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use libp2p::request_response::OutboundRequestId;
use libp2p::PeerId;
use tokio::sync::{mpsc, oneshot};

use super::pool::PoolError;
use super::state::{Exchange, Pull, Sent};
use super::{now_secs, Shared, StoreSummary, DONE_CHANNEL_CAPACITY};
use crate::events::NodeEvent;
use crate::network::{Net, NetEvent};

/// Something to run on the actor (a handle's command or a job's result).
pub(crate) type Call = Box<dyn FnOnce(&mut Actor) + Send>;

/// Actor tick: announcement cadence, insight checks, new-peer decisions.
const TICK: Duration = Duration::from_millis(250);
/// A new peer that announced nothing within this long gets a `have` pull
/// (a digest it announced before then decides instead).
pub(super) const NEW_PEER_GRACE: Duration = Duration::from_secs(3);

pub(crate) struct Actor {
    pub(super) sh: Arc<Shared>,
    pub(super) net: Net,
    pub(super) x: Exchange,
    /// What the store holds (refreshed by every write job).
    pub(super) summary: StoreSummary,
    pub(super) sent: HashMap<OutboundRequestId, Sent>,
    cmds: mpsc::Receiver<Call>,
    done_tx: mpsc::Sender<Call>,
    done_rx: mpsc::Receiver<Call>,
    pub(super) stop: Option<oneshot::Sender<()>>,
    pub(super) ticks: u64,
}

impl Actor {
    pub(super) fn new(
        sh: Arc<Shared>,
        net: Net,
        cmds: mpsc::Receiver<Call>,
        summary: StoreSummary,
        reputation: Vec<(PeerId, Vec<u8>)>,
    ) -> Actor {
        let (done_tx, done_rx) = mpsc::channel(DONE_CHANNEL_CAPACITY);
        let mut x = Exchange::new(&sh.cfg, now_secs());
        x.rep.load(reputation);
        Actor {
            sh,
            net,
            x,
            summary,
            sent: HashMap::new(),
            cmds,
            done_tx,
            done_rx,
            stop: None,
            ticks: 0,
        }
    }

    pub(super) async fn run(mut self) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                ev = self.net.next_event() => self.on_net_event(ev),
                cmd = self.cmds.recv() => match cmd {
                    Some(call) => call(&mut self),
                    None => break,
                },
                Some(done) = self.done_rx.recv() => done(&mut self),
                _ = tick.tick() => self.on_tick(),
            }
            if self.stop.is_some() {
                break;
            }
        }
        self.finish().await;
    }

    /// On the way out: persist reputation and peer addresses (on the pool).
    async fn finish(&mut self) {
        let dirty = self.x.rep.take_dirty();
        let addrs = self.peer_addrs_to_save();
        let sh = self.sh.clone();
        let _ = sh
            .pool
            .clone()
            .run(move || {
                for (p, bytes) in dirty {
                    if let Err(e) = sh.store.put_reputation(&p, &bytes) {
                        tracing::warn!(peer = %p, error = %e, "saving reputation");
                    }
                }
                for (p, a) in addrs {
                    let _ = sh.store.put_peer_addrs(&p, &a);
                }
            })
            .await;
        if let Some(reply) = self.stop.take() {
            let _ = reply.send(());
        }
    }

    /// Run `job` on the store pool; `then` gets its result on the actor.
    pub(super) fn job<T, J, K>(&self, job: J, then: K)
    where
        T: Send + 'static,
        J: FnOnce(&Shared) -> T + Send + 'static,
        K: FnOnce(&mut Actor, Result<T, PoolError>) + Send + 'static,
    {
        let sh = self.sh.clone();
        let tx = self.done_tx.clone();
        tokio::spawn(async move {
            let pool = sh.pool.clone();
            let r = pool.run(move || job(&sh)).await;
            let call: Call = Box::new(move |a: &mut Actor| then(a, r));
            let _ = tx.send(call).await;
        });
    }

    /// Call `then` on the actor after `delay`.
    pub(super) fn after(&self, delay: Duration, then: impl FnOnce(&mut Actor) + Send + 'static) {
        let tx = self.done_tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let call: Call = Box::new(then);
            let _ = tx.send(call).await;
        });
    }

    /// A write job finished: adopt the store's new state.
    pub(super) fn store_changed(&mut self, mut summary: StoreSummary) {
        // Jobs finish in any order; a frontier never moves back.
        for (o, s) in &self.summary.frontier {
            let e = summary.frontier.entry(*o).or_insert(*s);
            *e = (*e).max(*s);
        }
        self.summary = summary;
        self.x.collective_stale = true;
    }

    fn on_net_event(&mut self, ev: NetEvent) {
        match ev {
            NetEvent::Gossip {
                source,
                message_id,
                topic,
                data,
            } => self.on_gossip(source, message_id, topic, data),
            NetEvent::Request {
                peer,
                request,
                channel,
            } => self.on_request(peer, *request, channel),
            NetEvent::Response { id, peer, result } => match self.sent.remove(&id) {
                Some(Sent::Pull(p)) => self.on_pull_response(p, result),
                Some(Sent::Promotion(p, seq)) => self.on_promotion_response(p, seq, result),
                None => tracing::debug!(%peer, "response to an unknown request"),
            },
            NetEvent::PeerConnected { peer } => {
                if self.x.rep.is_denied(&peer) {
                    self.net.block(peer);
                    return;
                }
                self.x.connected.insert(peer);
                self.peers_changed();
                self.sh.emit(NodeEvent::PeerJoined {
                    peer: peer.to_string(),
                });
                // Catch up by digest, not by a full pull: the peer's next
                // announcement tells whether we lack anything; only a peer
                // that announces nothing within the grace period gets a
                // `have` pull (see `on_tick`).
                self.x.new_peers.insert(peer, Instant::now());
            }
            NetEvent::PeerDisconnected { peer } => {
                self.x.connected.remove(&peer);
                self.x.new_peers.remove(&peer);
                self.peers_changed();
                self.sh.emit(NodeEvent::PeerLeft {
                    peer: peer.to_string(),
                });
            }
            NetEvent::PeerSubscribed { .. } => {
                // A new gossip neighbour: let it see our frontier soon.
                if self.sh.sharing() {
                    self.x.announce_requested = true;
                }
            }
        }
    }

    fn peers_changed(&self) {
        let n = self.x.connected.len();
        self.sh.connected.store(n, Ordering::Relaxed);
        self.sh.metrics.set_peers(n);
    }

    fn on_tick(&mut self) {
        self.ticks += 1;
        let now = now_secs();
        // New peers that announced nothing: ask with our frontier.
        let due: Vec<PeerId> = self
            .x
            .new_peers
            .iter()
            .filter(|(_, at)| at.elapsed() >= NEW_PEER_GRACE)
            .map(|(p, _)| *p)
            .collect();
        for p in due {
            self.x.new_peers.remove(&p);
            self.start_pull(p, Pull::Have);
        }
        self.announce_tick(now);
        self.housekeeping_tick(now);
    }
}
