//! The actor: one task owning the swarm and the exchange core.
//!
//! Everything reaches it as a message — swarm events, commands from
//! [`super::Node`] handles, completions of store jobs, the core's timers —
//! and each becomes one [`Input`] to [`State::handle`] with the one clock
//! ([`now_secs`]); the returned outputs are executed in order
//! ([`super::exec`]). Commands and completions are closures run on the
//! actor (`FnOnce(&mut Actor)`), so a handle's request and a job's result
//! are applied between two events, never concurrently. The actor never
//! calls sled and never awaits anything but its next input.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use libp2p::gossipsub::MessageId;
use libp2p::request_response::{OutboundRequestId, ResponseChannel};
use libp2p::PeerId;
use metamesh_exchange::io::{
    Gossip, InboundId, Input, MsgId, Priority, RequestId, SubmitError, Timer,
};
use metamesh_exchange::tree::{TreeError, TreeMsg};
use metamesh_exchange::{State, SubmittedRecord, Topic};
use metamesh_protocol::codec::CodecError;
use metamesh_protocol::sync::SyncResponse;
use metamesh_protocol::wire::WireError;
use metamesh_protocol::Depth;
use tokio::sync::{mpsc, oneshot};

use super::pool::{Lane, Pool, PoolError};
use super::{now_secs, Shared, DONE_CHANNEL_CAPACITY};
use crate::events::NodeEvent;
use crate::network::{Net, NetError, NetEvent, TopicKind};

/// Something to run on the actor (a handle's command or a job's result).
pub(crate) type Call = Box<dyn FnOnce(&mut Actor) + Send>;

/// The shell's own housekeeping: own insights, the collective view, ban
/// expiry, peer addresses (the core keeps its own `Tick`).
const SHELL_TICK: Duration = Duration::from_millis(500);
/// Gossip messages awaiting the core's verdict (gossipsub forgets
/// unvalidated messages after its own timeout; so do we, oldest first).
const MAX_PENDING_GOSSIP: usize = 16 * 1024;
/// Shell ticks between saving connected peers' addresses.
const SAVE_ADDRS_TICKS: u64 = 60;
/// Shell ticks between probe writes while the store refuses writes.
const PROBE_TICKS: u64 = 4;

/// A local submission waiting for the core's `Submitted`.
pub(crate) type SubmitReply = oneshot::Sender<Result<Vec<SubmittedRecord>, SubmitError>>;

/// What the shell remembers of the collective view (for events and gauges).
#[derive(Debug, Default)]
pub(crate) struct CollectiveWatch {
    pub last: Option<(Depth, f64)>,
    pub stale: bool,
    pub running: bool,
}

pub(crate) struct Actor {
    pub(super) sh: Arc<Shared>,
    pub(super) net: Net,
    pub(super) core: State,
    /// Core timers by due time (unix ms); `timer_at` makes a later schedule
    /// of the same timer replace the earlier one.
    timers: BTreeSet<(u64, Timer)>,
    timer_at: HashMap<Timer, u64>,
    /// Banned peers and until when (unix seconds).
    pub(super) bans: BTreeMap<PeerId, f64>,
    pub(super) gossip: BTreeMap<u64, (MessageId, PeerId)>,
    next_msg: u64,
    pub(super) inbound: HashMap<u64, ResponseChannel<SyncResponse>>,
    next_inbound: u64,
    pub(super) outbound: HashMap<OutboundRequestId, RequestId>,
    pub(super) submits: HashMap<u64, SubmitReply>,
    next_submit: u64,
    pub(super) collective: CollectiveWatch,
    /// Our own statistics changed since our insights were last computed.
    pub(super) own_dirty: bool,
    pub(super) own_running: bool,
    /// Parent side: children that promoted their insights, with the seq.
    pub(super) promoted_by: BTreeMap<PeerId, u64>,
    cmds: mpsc::Receiver<Call>,
    /// Completions of low-lane jobs (fresh identities' checks and writes).
    done_tx: mpsc::Sender<Call>,
    done_rx: mpsc::Receiver<Call>,
    /// Completions of every other job: applied before any low one.
    done_hi_tx: mpsc::Sender<Call>,
    done_hi_rx: mpsc::Receiver<Call>,
    pub(super) stop: Option<oneshot::Sender<()>>,
    ticks: u64,
}

fn ms(at: f64) -> u64 {
    if at.is_finite() && at > 0.0 {
        (at * 1000.0) as u64
    } else {
        0
    }
}

impl Actor {
    pub(super) fn new(sh: Arc<Shared>, net: Net, core: State, cmds: mpsc::Receiver<Call>) -> Actor {
        let (done_tx, done_rx) = mpsc::channel(DONE_CHANNEL_CAPACITY);
        let (done_hi_tx, done_hi_rx) = mpsc::channel(DONE_CHANNEL_CAPACITY);
        Actor {
            sh,
            net,
            core,
            timers: BTreeSet::new(),
            timer_at: HashMap::new(),
            bans: BTreeMap::new(),
            gossip: BTreeMap::new(),
            next_msg: 0,
            inbound: HashMap::new(),
            next_inbound: 0,
            outbound: HashMap::new(),
            submits: HashMap::new(),
            next_submit: 0,
            collective: CollectiveWatch {
                stale: true,
                ..CollectiveWatch::default()
            },
            own_dirty: true,
            own_running: false,
            promoted_by: BTreeMap::new(),
            cmds,
            done_tx,
            done_rx,
            done_hi_tx,
            done_hi_rx,
            stop: None,
            ticks: 0,
        }
    }

    pub(super) async fn run(mut self) {
        let mut tick = tokio::time::interval(SHELL_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The core's first input starts its own timers.
        self.input(Input::Timer(Timer::Tick));
        loop {
            // Completed high-lane work first (our own records, established
            // origins'): a flood's completions queue behind it, not in front.
            while let Ok(done) = self.done_hi_rx.try_recv() {
                done(&mut self);
            }
            if self.stop.is_some() {
                break;
            }
            let wait = self.until_next_timer();
            tokio::select! {
                Some(done) = self.done_hi_rx.recv() => done(&mut self),
                ev = self.net.next_event() => self.on_net_event(ev),
                cmd = self.cmds.recv() => match cmd {
                    Some(call) => call(&mut self),
                    None => break,
                },
                Some(done) = self.done_rx.recv() => done(&mut self),
                _ = tokio::time::sleep(wait) => self.fire_timers(),
                _ = tick.tick() => self.on_shell_tick(),
            }
            if self.stop.is_some() {
                break;
            }
        }
        self.finish().await;
    }

    /// Hand one input to the core and execute what it decides.
    pub(super) fn input(&mut self, input: Input) {
        let outputs = self.core.handle(input, now_secs());
        self.execute(outputs);
    }

    pub(super) fn schedule(&mut self, at: f64, timer: Timer) {
        let at = ms(at);
        if let Some(old) = self.timer_at.insert(timer, at) {
            self.timers.remove(&(old, timer));
        }
        self.timers.insert((at, timer));
    }

    fn until_next_timer(&self) -> Duration {
        match self.timers.first() {
            Some((at, _)) => {
                let now = ms(now_secs());
                Duration::from_millis(at.saturating_sub(now))
            }
            None => Duration::from_secs(3600),
        }
    }

    fn fire_timers(&mut self) {
        let now = ms(now_secs());
        while let Some(&(at, timer)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.remove(&(at, timer));
            self.timer_at.remove(&timer);
            self.input(Input::Timer(timer));
        }
    }

    /// On the way out: outstanding reputation and peer addresses (on the pool).
    async fn finish(&mut self) {
        let reputation: Vec<(PeerId, Vec<u8>)> = self
            .core
            .reputation()
            .map(|(p, s)| (*p, s.to_bytes()))
            .collect();
        let addrs = self.peer_addrs_to_save();
        let sh = self.sh.clone();
        let _ = sh
            .pool
            .clone()
            .run(move || {
                for (p, bytes) in reputation {
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
        self.job_in(self.sh.pool.clone(), Lane::High, job, then)
    }

    /// Like [`Actor::job`], on the write pool (jobs that wait for a flush
    /// must not hold the workers that serve and verify), in the lane the
    /// core chose; our own writes on a pool of their own, never behind
    /// peers' writes.
    pub(super) fn write_job<T, J, K>(&self, priority: Priority, job: J, then: K)
    where
        T: Send + 'static,
        J: FnOnce(&Shared) -> T + Send + 'static,
        K: FnOnce(&mut Actor, Result<T, PoolError>) + Send + 'static,
    {
        let pool = match priority {
            Priority::Own => &self.sh.own_write_pool,
            Priority::High | Priority::Low => &self.sh.write_pool,
        };
        self.job_in(pool.clone(), super::exec::lane(priority), job, then)
    }

    /// Where completions of `lane`'s work go (high ones are applied first).
    pub(super) fn done_sender(&self, lane: Lane) -> mpsc::Sender<Call> {
        match lane {
            Lane::High => self.done_hi_tx.clone(),
            Lane::Low => self.done_tx.clone(),
        }
    }

    /// Run `job` on `pool` in `lane`; `then` gets its result on the actor.
    pub(super) fn job_in<T, J, K>(&self, pool: Pool, lane: Lane, job: J, then: K)
    where
        T: Send + 'static,
        J: FnOnce(&Shared) -> T + Send + 'static,
        K: FnOnce(&mut Actor, Result<T, PoolError>) + Send + 'static,
    {
        let sh = self.sh.clone();
        let tx = self.done_sender(lane);
        tokio::spawn(async move {
            let r = pool.run_in(lane, move || job(&sh)).await;
            let call: Call = Box::new(move |a: &mut Actor| then(a, r));
            let _ = tx.send(call).await;
        });
    }

    /// A local submission: the core answers with `Submitted` (after the
    /// records are durable), which completes `reply`.
    pub(super) fn submit(&mut self, patterns: Vec<metamesh_protocol::Pattern>, reply: SubmitReply) {
        self.next_submit += 1;
        let id = self.next_submit;
        self.submits.insert(id, reply);
        self.input(Input::Submit {
            id: metamesh_exchange::SubmitId(id),
            patterns,
        });
    }

    fn on_net_event(&mut self, ev: NetEvent) {
        match ev {
            NetEvent::Gossip {
                source,
                message_id,
                topic,
                data,
            } => {
                self.sh.metrics.bytes_received(data.len() as u64);
                self.next_msg += 1;
                let id = self.next_msg;
                self.gossip.insert(id, (message_id, source));
                while self.gossip.len() > MAX_PENDING_GOSSIP {
                    self.gossip.pop_first();
                }
                let topic = match topic {
                    TopicKind::Records => Topic::Records,
                    TopicKind::Announce => Topic::Announce,
                    TopicKind::Insights => Topic::Insights,
                };
                self.input(Input::Gossip(Gossip {
                    id: MsgId(id),
                    topic,
                    // Gossipsub runs unsigned: records carry their origin's
                    // signature; announcements count only from their sender.
                    author: None,
                    source,
                    data,
                }));
            }
            NetEvent::Request {
                peer,
                request,
                channel,
            } => {
                self.next_inbound += 1;
                let id = self.next_inbound;
                self.inbound.insert(id, channel);
                self.input(Input::Request {
                    peer,
                    id: InboundId(id),
                    request: Ok(*request),
                });
            }
            NetEvent::BadRequest { peer, error } => {
                // Malformed requests are charged too (issue 12 #12); there is
                // no channel left to answer on.
                self.next_inbound += 1;
                self.input(Input::Request {
                    peer,
                    id: InboundId(self.next_inbound),
                    request: Err(WireError::Bound {
                        field: "request",
                        reason: error,
                    }),
                });
            }
            NetEvent::Response { id, peer, result } => {
                let Some(rid) = self.outbound.remove(&id) else {
                    tracing::debug!(%peer, "response to an unknown request");
                    return;
                };
                match result {
                    Ok(response) => {
                        let n: usize = response
                            .records
                            .iter()
                            .map(metamesh_exchange::serve::record_bytes)
                            .sum();
                        self.sh.metrics.bytes_received(n as u64);
                        // The codec bounded its size; the wire bounds are
                        // checked here (a violation is charged by the core).
                        let response = response.validate().map(|()| response);
                        self.input(Input::Response {
                            peer,
                            id: rid,
                            response,
                        });
                    }
                    Err(NetError::Undecodable(reason)) => self.input(Input::Response {
                        peer,
                        id: rid,
                        response: Err(WireError::Codec(CodecError::Invalid(reason))),
                    }),
                    Err(e) => self.input(Input::RequestFailed {
                        peer,
                        id: rid,
                        error: e.to_string(),
                    }),
                }
            }
            NetEvent::PeerConnected { peer } => {
                self.peers_changed();
                self.sh.emit(NodeEvent::PeerJoined {
                    peer: peer.to_string(),
                });
                self.input(Input::PeerConnected {
                    peer,
                    outbound: false,
                });
            }
            NetEvent::PeerDisconnected { peer } => {
                self.peers_changed();
                self.sh.emit(NodeEvent::PeerLeft {
                    peer: peer.to_string(),
                });
                self.input(Input::PeerDisconnected { peer });
            }
            NetEvent::PeerSubscribed { .. } => {}
            NetEvent::Tree { peer, frame } => {
                let msg = match frame {
                    Ok(bytes) => {
                        self.sh.metrics.bytes_received(bytes.len() as u64);
                        TreeMsg::decode(&bytes)
                    }
                    Err(e) => Err(TreeError::Codec(CodecError::Invalid(e.to_string()))),
                };
                self.input(Input::Tree { peer, msg });
            }
        }
    }

    pub(super) fn tree_view(&self) -> crate::network::tree::TreeView {
        let (mut neighbours, mut eager) = (0, 0);
        for (_, e) in self.core.tree_neighbours() {
            neighbours += 1;
            eager += usize::from(e);
        }
        crate::network::tree::TreeView {
            enabled: self.core.config().tree_active(),
            core: self.core.tree_stats().clone(),
            neighbours,
            eager,
            transport: self.net.tree_counters(),
        }
    }

    fn peers_changed(&self) {
        let n = self.net.connected_count();
        self.sh.connected.store(n, Ordering::Relaxed);
        self.sh.metrics.set_peers(n);
        *self
            .sh
            .peer_counters
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = self.net.counters();
    }

    pub(super) fn peer_addrs_to_save(&self) -> Vec<(PeerId, Vec<String>)> {
        self.net
            .peers()
            .into_iter()
            .filter(|p| p.connected && !p.addrs.is_empty())
            .map(|p| (p.peer, p.addrs.iter().map(|a| a.to_string()).collect()))
            .collect()
    }

    fn on_shell_tick(&mut self) {
        self.ticks += 1;
        self.peers_changed();
        let now = now_secs();
        let ended: Vec<PeerId> = self
            .bans
            .iter()
            .filter(|(_, until)| **until <= now)
            .map(|(p, _)| *p)
            .collect();
        for p in ended {
            self.bans.remove(&p);
            self.net.unblock(p);
        }
        self.refresh_own_insights();
        self.check_collective(self.ticks);
        if self.ticks.is_multiple_of(PROBE_TICKS) && self.sh.health.start_probe() {
            self.job(super::health::probe, |a, r| {
                a.sh.health.probed(matches!(r, Ok(Ok(()))));
            });
        }
        if self.ticks.is_multiple_of(SAVE_ADDRS_TICKS) {
            let addrs = self.peer_addrs_to_save();
            let classes = self.reputation_classes(now);
            self.sh.metrics.set_reputation_classes(&classes);
            if !addrs.is_empty() {
                self.job(
                    move |sh: &Shared| {
                        for (p, a) in addrs {
                            let _ = sh.store.put_peer_addrs(&p, &a);
                        }
                    },
                    |_, _| {},
                );
            }
            self.redial_parent();
        }
    }

    fn reputation_classes(&self, now: f64) -> Vec<(&'static str, usize)> {
        let mut classes: BTreeMap<&'static str, usize> = BTreeMap::new();
        let peers: Vec<PeerId> = self.core.reputation().map(|(p, _)| *p).collect();
        for p in peers {
            *classes
                .entry(self.core.standing(&p, now).class.as_str())
                .or_insert(0) += 1;
        }
        classes.into_iter().collect()
    }

    /// Parent and child may sit in different meshes: keep the link up.
    fn redial_parent(&mut self) {
        let Some((parent, addr)) = self.sh.parent.clone() else {
            return;
        };
        if !self.net.is_connected(&parent) {
            if let Err(e) = self.net.dial(addr) {
                tracing::debug!(error = %e, "re-dialling the parent");
            }
        }
    }
}
