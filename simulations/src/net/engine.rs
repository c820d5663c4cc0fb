//! The discrete-event engine of the network simulator (see `net/mod.rs`).

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::rc::Rc;
use std::time::Instant;

use libp2p_identity::PeerId;
use metamesh_exchange::mem::MemStore;
use metamesh_exchange::{
    serve, testutil, Acceptance, Event, Gossip, InboundId, Init, Input, MsgId, Output, RequestId,
    State, SubmitId, Timer, Topic,
};
use metamesh_protocol::record::{verify_batch, ContentHash, RecordError};
use metamesh_protocol::sync::{SyncRequest, SyncResponse};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use metamesh_exchange::tree::{TreeMsg, TreeStats};
use metamesh_protocol::wire::{GossipMessage, RecordPush, WIRE_VERSION};

use super::{NetConfig, NetReport, TreeReport};

mod gossipsub;
mod report;
mod tree;

use gossipsub::*;

const T0: f64 = testutil::NOW;
const SEC: u64 = 1_000_000;
/// Mesh formation before the first publish.
const WARMUP: u64 = 6 * SEC;
/// gossipsub `prune_backoff` (1 min) and `iwant_followup_time` (3 s).
const PRUNE_BACKOFF: u64 = 60 * SEC;
const PROMISE: u64 = 3 * SEC;
/// gossipsub `max_ihave_messages` handled per peer per heartbeat.
const MAX_IHAVE_PER_HEARTBEAT: u32 = 10;

/// Length prefix of one tree message on its stream.
const TREE_FRAME: usize = 2;

struct Shell {
    state: State,
    store: MemStore,
    online: bool,
    never_left: bool,
    conns: Vec<usize>,
    gs: Router,
    pending: HashMap<MsgId, (ContentHash, usize)>,
    timers: HashMap<Timer, u64>,
    inbound: HashMap<InboundId, (usize, RequestId)>,
    held: usize,
}

enum Ev {
    Input(usize, Box<Input>),
    Timer(usize, Timer, u64),
    Gossip {
        to: usize,
        from: usize,
        hash: ContentHash,
    },
    IHave {
        to: usize,
        from: usize,
        ids: Rc<Vec<ContentHash>>,
    },
    IWant {
        to: usize,
        from: usize,
        ids: Vec<ContentHash>,
    },
    IDontWant {
        to: usize,
        from: usize,
        id: ContentHash,
    },
    Graft {
        to: usize,
        from: usize,
    },
    Prune {
        to: usize,
        from: usize,
    },
    Heartbeat(usize),
    Publish(usize),
    Leave(usize),
    Join(usize),
    PartitionStart,
    Heal,
    Bootstrap,
}

/// A queued event; ordered by time, then by insertion.
struct Item {
    t: u64,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Item {
    fn eq(&self, o: &Self) -> bool {
        (self.t, self.seq) == (o.t, o.seq)
    }
}
impl Eq for Item {}
impl PartialOrd for Item {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Item {
    fn cmp(&self, o: &Self) -> Ordering {
        // BinaryHeap is a max-heap: the earliest first
        (o.t, o.seq).cmp(&(self.t, self.seq))
    }
}

#[derive(Default)]
struct Bytes {
    gossip: u64,
    announce: u64,
    control: u64,
    sync: u64,
    copies: u64,
}

/// A message on the gossip layer: topic, data, the node that published it.
struct Msg {
    topic: Topic,
    data: Rc<Vec<u8>>,
    author: usize,
}

struct Sim {
    cfg: NetConfig,
    nodes: Vec<Shell>,
    ids: HashMap<PeerId, usize>,
    peers: Vec<PeerId>,
    queue: BinaryHeap<Item>,
    seq: u64,
    now: u64,
    rng: ChaCha8Rng,
    msgs: HashMap<ContentHash, Msg>,
    verified: HashMap<ContentHash, Result<PeerId, RecordError>>,
    side: Option<Vec<bool>>,
    next_id: u64,
    measuring: bool,
    bytes: Bytes,
    /// record hash → (published at, always-online nodes holding it, done at)
    records: HashMap<ContentHash, (u64, usize, Option<u64>)>,
    records_done: usize,
    record_push_bytes: Vec<usize>,
    /// Records whose first tree push was measured.
    pushed: HashSet<ContentHash>,
    /// Tree streams are FIFO per link: (from, to) → last arrival.
    tree_fifo: HashMap<(usize, usize), u64>,
    total_records: usize,
    stayers: usize,
    heal_at: Option<u64>,
    healed_at: Option<u64>,
    boot: Option<(usize, u64, Option<u64>)>,
    events: u64,
    finished: bool,
    trace: bool,
}

fn ev_name(e: &Ev) -> String {
    match e {
        Ev::Input(i, inp) => format!("input {i} {:?}", std::mem::discriminant(&**inp)),
        Ev::Timer(i, t, _) => format!("timer {i} {t:?}"),
        Ev::Gossip { .. } => "gossip".into(),
        Ev::IHave { .. } => "ihave".into(),
        Ev::IWant { .. } => "iwant".into(),
        Ev::IDontWant { .. } => "idontwant".into(),
        Ev::Graft { .. } => "graft".into(),
        Ev::Prune { .. } => "prune".into(),
        Ev::Heartbeat(_) => "heartbeat".into(),
        _ => "other".into(),
    }
}

/// Run one simulation.
pub fn run(cfg: NetConfig) -> NetReport {
    let wall = Instant::now();
    let mut sim = Sim::new(cfg);
    sim.plan();
    let end = sim.end_time();
    sim.run_until(end);
    sim.report(wall.elapsed().as_secs_f64())
}

impl Sim {
    fn new(cfg: NetConfig) -> Sim {
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        let total = cfg.nodes + usize::from(cfg.bootstrap);
        let mut nodes = Vec::with_capacity(total);
        let mut ids = HashMap::new();
        let mut peers = Vec::new();
        let core_cfg = cfg.core.clone();
        for i in 0..total {
            let key = testutil::key(cfg.seed.wrapping_mul(1_000_003) + i as u64);
            let init = Init {
                key,
                epoch: Some(1_700_000_000),
                last_own_seq: 0,
                frontier: Default::default(),
                reputation: vec![],
                own_insight: None,
                seed: rng.gen(),
            };
            let state = State::new(core_cfg.clone(), init);
            ids.insert(state.peer_id(), i);
            peers.push(state.peer_id());
            let gs = Router {
                mcache: VecDeque::from(vec![Vec::new()]),
                ..Router::default()
            };
            nodes.push(Shell {
                state,
                store: MemStore::default(),
                online: i < cfg.nodes,
                never_left: i < cfg.nodes,
                conns: vec![],
                gs,
                pending: HashMap::new(),
                timers: HashMap::new(),
                inbound: HashMap::new(),
                held: 0,
            });
        }
        let mut sim = Sim {
            cfg,
            nodes,
            ids,
            peers,
            queue: BinaryHeap::new(),
            seq: 0,
            now: 0,
            rng,
            msgs: HashMap::new(),
            verified: HashMap::new(),
            side: None,
            next_id: 1,
            measuring: false,
            bytes: Bytes::default(),
            records: HashMap::new(),
            records_done: 0,
            record_push_bytes: vec![],
            pushed: HashSet::new(),
            tree_fifo: HashMap::new(),
            total_records: 0,
            stayers: 0,
            heal_at: None,
            healed_at: None,
            boot: None,
            events: 0,
            finished: false,
            trace: std::env::var_os("MM_SIM_TRACE").is_some(),
        };
        sim.build_graph();
        sim
    }

    /// The connection graph: every node dials `dial` random others.
    fn build_graph(&mut self) {
        let n = self.cfg.nodes;
        let mut conns: Vec<HashSet<usize>> = vec![HashSet::new(); n];
        for i in 0..n {
            for _ in 0..self.cfg.dial.min(n.saturating_sub(1)) {
                let j = self.rng.gen_range(0..n);
                if j != i && !conns[i].contains(&j) {
                    conns[i].insert(j);
                    conns[j].insert(i);
                    self.nodes[i].gs.outbound.insert(j);
                }
            }
        }
        for (i, c) in conns.iter().enumerate() {
            let mut v: Vec<usize> = c.iter().copied().collect();
            v.sort_unstable();
            self.nodes[i].conns = v;
        }
    }

    fn at(&mut self, t: u64, ev: Ev) -> u64 {
        self.seq += 1;
        self.queue.push(Item {
            t,
            seq: self.seq,
            ev,
        });
        self.seq
    }

    fn latency(&mut self) -> u64 {
        let ms = self.cfg.latency_ms + self.rng.gen_range(-1.0..=1.0) * self.cfg.jitter_ms;
        (ms.max(1.0) * 1000.0) as u64
    }

    /// One transmission is lost.
    fn lost(&mut self) -> bool {
        self.cfg.loss > 0.0 && self.rng.gen::<f64>() < self.cfg.loss
    }

    /// Send `ev` over the link `from → to` (latency, loss); false if the link is down.
    fn send(&mut self, from: usize, to: usize, ev: Ev) -> bool {
        if !self.link_ok(from, to) {
            return false;
        }
        if !self.lost() {
            let t = self.now + self.latency();
            self.at(t, ev);
        }
        true
    }

    fn link_ok(&self, a: usize, b: usize) -> bool {
        self.nodes[a].online
            && self.nodes[b].online
            && self.side.as_ref().is_none_or(|s| s[a] == s[b])
    }

    fn plan(&mut self) {
        let n = self.cfg.nodes;
        let hb = self.cfg.gossipsub.heartbeat_ms * 1000;
        // connections come up
        for i in 0..n {
            for j in self.nodes[i].conns.clone() {
                if i < j {
                    let t = self.rng.gen_range(0..SEC / 2);
                    self.connect_at(t, i, j);
                }
            }
            let t = SEC / 2 + self.rng.gen_range(0..hb.max(1));
            self.at(t, Ev::Heartbeat(i));
        }
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut self.rng);
        let window = (self.cfg.publish_window_secs * SEC as f64) as u64;
        for &o in order.iter().take(self.cfg.origins.min(n)) {
            for _ in 0..self.cfg.patterns_per_origin {
                let t = WARMUP + self.rng.gen_range(0..window.max(1));
                self.at(t, Ev::Publish(o));
            }
        }
        let churners = ((n as f64) * self.cfg.churn).round() as usize;
        let origins: HashSet<usize> = order.iter().take(self.cfg.origins).copied().collect();
        let mut c = 0;
        for &i in order.iter().rev() {
            if c >= churners {
                break;
            }
            if origins.contains(&i) {
                continue;
            }
            c += 1;
            self.nodes[i].never_left = false;
            let leave = WARMUP + self.rng.gen_range(0..window.max(1));
            let back = leave + self.rng.gen_range(2 * SEC..6 * SEC);
            self.at(leave, Ev::Leave(i));
            self.at(back, Ev::Join(i));
        }
        self.stayers = self.nodes[..n].iter().filter(|s| s.never_left).count();
        if self.cfg.partition {
            self.at(WARMUP - SEC / 2, Ev::PartitionStart);
            self.at(WARMUP + window + SEC, Ev::Heal);
        }
        if self.cfg.bootstrap {
            self.at(WARMUP + window + 12 * SEC, Ev::Bootstrap);
        }
    }

    fn end_time(&self) -> u64 {
        let window = (self.cfg.publish_window_secs * SEC as f64) as u64;
        WARMUP + window + 40 * SEC
    }

    fn connect_at(&mut self, t: u64, a: usize, b: usize) {
        let (pa, pb) = (self.peers[a], self.peers[b]);
        let outbound = self.nodes[a].gs.outbound.contains(&b);
        self.at(
            t,
            Ev::Input(a, Box::new(Input::PeerConnected { peer: pb, outbound })),
        );
        self.at(
            t,
            Ev::Input(
                b,
                Box::new(Input::PeerConnected {
                    peer: pa,
                    outbound: !outbound,
                }),
            ),
        );
    }

    /// The connection a–b closes: both cores learn it, both meshes drop it.
    fn disconnect_now(&mut self, a: usize, b: usize) {
        let (pa, pb) = (self.peers[a], self.peers[b]);
        let t = self.now;
        self.at(
            t,
            Ev::Input(a, Box::new(Input::PeerDisconnected { peer: pb })),
        );
        self.at(
            t,
            Ev::Input(b, Box::new(Input::PeerDisconnected { peer: pa })),
        );
        self.nodes[a].gs.mesh.retain(|&j| j != b);
        self.nodes[b].gs.mesh.retain(|&j| j != a);
    }

    fn run_until(&mut self, end: u64) {
        while let Some(Item { t, ev, .. }) = self.queue.pop() {
            if t > end {
                break;
            }
            self.now = t;
            self.events += 1;
            if self.trace && self.events.is_multiple_of(200_000) {
                eprintln!(
                    "sim {:.3}s events {} {}",
                    t as f64 / 1e6,
                    self.events,
                    ev_name(&ev)
                );
            }
            self.dispatch(ev);
            if self.finished {
                break;
            }
        }
    }

    /// Everything published is everywhere, the partition healed and the
    /// newcomer bootstrapped: nothing left to measure.
    fn check_finished(&mut self) {
        let expected = self.cfg.origins.min(self.cfg.nodes) * self.cfg.patterns_per_origin;
        self.finished = self.total_records == expected
            && self.records_done == self.total_records
            && (!self.cfg.partition || self.healed_at.is_some())
            && (!self.cfg.bootstrap || self.boot.is_some_and(|b| b.2.is_some()))
            && self.all_online_complete();
    }

    fn all_online_complete(&self) -> bool {
        self.nodes[..self.cfg.nodes]
            .iter()
            .all(|s| !s.online || s.held == self.total_records)
    }

    fn dispatch(&mut self, ev: Ev) {
        match ev {
            Ev::Input(i, input) => {
                let input = *input;
                let network = !matches!(
                    input,
                    Input::Verified { .. }
                        | Input::Persisted { .. }
                        | Input::Served { .. }
                        | Input::Submit { .. }
                );
                if network && !self.nodes[i].online {
                    return;
                }
                self.step(i, input)
            }
            Ev::Timer(i, timer, token) => {
                if self.nodes[i].timers.get(&timer) == Some(&token) {
                    self.nodes[i].timers.remove(&timer);
                    self.step(i, Input::Timer(timer));
                }
            }
            Ev::Gossip { to, from, hash } => self.on_message(to, from, hash),
            Ev::IHave { to, from, ids } => self.on_ihave(to, from, &ids),
            Ev::IWant { to, from, ids } => {
                if !self.link_ok(to, from) {
                    return;
                }
                for h in ids {
                    let cached = self.nodes[to].gs.mcache.iter().any(|w| w.contains(&h));
                    if cached && !self.nodes[to].gs.dont_send.contains(&(from, h)) {
                        self.send_full(to, from, h);
                    }
                }
            }
            Ev::IDontWant { to, from, id } => {
                if self.link_ok(to, from) {
                    self.nodes[to].gs.dont_send.insert((from, id));
                }
            }
            Ev::Graft { to, from } => self.on_graft(to, from),
            Ev::Prune { to, from } => {
                if self.link_ok(to, from) {
                    let until = self.now + PRUNE_BACKOFF;
                    let gs = &mut self.nodes[to].gs;
                    gs.mesh.retain(|&j| j != from);
                    gs.backoff.insert(from, until);
                }
            }
            Ev::Heartbeat(i) => self.heartbeat(i),
            Ev::Publish(o) => {
                self.next_id += 1;
                let p = testutil::pattern(0.2 + self.rng.gen::<f64>() * 0.7);
                let id = SubmitId(self.next_id);
                if self.boot.is_none() {
                    self.measuring = true;
                }
                self.step(
                    o,
                    Input::Submit {
                        id,
                        patterns: vec![p],
                    },
                );
            }
            Ev::Leave(i) => {
                for j in self.nodes[i].conns.clone() {
                    if self.link_ok(i, j) {
                        self.disconnect_now(i, j);
                    }
                }
                self.nodes[i].online = false;
            }
            Ev::Join(i) => {
                self.nodes[i].online = true;
                for j in self.nodes[i].conns.clone() {
                    if self.link_ok(i, j) {
                        let t = self.now + self.latency();
                        self.connect_at(t, i, j);
                    }
                }
                self.check_finished();
            }
            Ev::PartitionStart => {
                let n = self.cfg.nodes;
                let mut idx: Vec<usize> = (0..n).collect();
                idx.shuffle(&mut self.rng);
                let mut side = vec![false; self.nodes.len()];
                for &i in idx.iter().take(n / 2) {
                    side[i] = true;
                }
                for i in 0..n {
                    for j in self.nodes[i].conns.clone() {
                        if i < j && side[i] != side[j] && self.link_ok(i, j) {
                            self.disconnect_now(i, j);
                        }
                    }
                }
                self.side = Some(side);
            }
            Ev::Heal => {
                let side = self.side.take();
                self.heal_at = Some(self.now);
                if let Some(side) = side {
                    for i in 0..self.cfg.nodes {
                        for j in self.nodes[i].conns.clone() {
                            if i < j && side[i] != side[j] && self.link_ok(i, j) {
                                let t = self.now + self.latency();
                                self.connect_at(t, i, j);
                            }
                        }
                    }
                }
                self.check_healed();
            }
            Ev::Bootstrap => {
                // the newcomer's catch-up is timed, not counted per pattern
                self.measuring = false;
                let b = self.cfg.nodes;
                self.nodes[b].online = true;
                let mut targets: Vec<usize> = (0..self.cfg.nodes)
                    .filter(|i| self.nodes[*i].online)
                    .collect();
                targets.shuffle(&mut self.rng);
                targets.truncate(self.cfg.dial);
                for &j in &targets {
                    self.nodes[b].conns.push(j);
                    self.nodes[j].conns.push(b);
                    self.nodes[b].gs.outbound.insert(j);
                    let t = self.now + self.latency();
                    self.connect_at(t, b, j);
                }
                self.boot = Some((b, self.now, None));
                let t = self.now + SEC / 2;
                self.at(t, Ev::Heartbeat(b));
            }
        }
    }

    fn step(&mut self, i: usize, input: Input) {
        let now = T0 + self.now as f64 / 1e6;
        let outs = self.nodes[i].state.handle(input, now);
        for o in outs {
            self.exec(i, o);
        }
    }

    fn exec(&mut self, i: usize, o: Output) {
        let now = self.now;
        match o {
            Output::Validate { id, acceptance } => {
                if let Some((hash, from)) = self.nodes[i].pending.remove(&id) {
                    if acceptance == Acceptance::Accept {
                        self.forward(i, hash, from);
                    }
                }
            }
            Output::Publish { topic, data } => self.publish(i, topic, data),
            Output::SendRequest { peer, id, request } => {
                let j = self.ids.get(&peer).copied();
                match j {
                    Some(j) if self.link_ok(i, j) => {
                        let bytes = request.encode();
                        if self.measuring {
                            self.bytes.sync += bytes.len() as u64;
                        }
                        self.next_id += 1;
                        let inb = InboundId(self.next_id);
                        self.nodes[j].inbound.insert(inb, (i, id));
                        let request = SyncRequest::decode(&bytes);
                        let me = self.peers[i];
                        let t = now + self.latency();
                        self.at(
                            t,
                            Ev::Input(
                                j,
                                Box::new(Input::Request {
                                    peer: me,
                                    id: inb,
                                    request,
                                }),
                            ),
                        );
                    }
                    _ => {
                        let t = now + self.latency();
                        let error = "not connected".to_string();
                        self.at(
                            t,
                            Ev::Input(i, Box::new(Input::RequestFailed { peer, id, error })),
                        );
                    }
                }
            }
            Output::Respond { id, response } => self.respond(i, id, response),
            Output::Serve { peer, id, plan } => {
                let response = serve::execute(&plan, &self.nodes[i].store);
                let bytes = response
                    .records
                    .iter()
                    .map(serve::record_bytes)
                    .sum::<usize>() as u64;
                let records = response.records.len() as u32;
                self.at(
                    now,
                    Ev::Input(
                        i,
                        Box::new(Input::Served {
                            peer,
                            id,
                            records,
                            bytes,
                        }),
                    ),
                );
                self.respond(i, id, response);
            }
            Output::Verify { id, records, .. } => {
                let todo: Vec<_> = records
                    .iter()
                    .filter(|r| !self.verified.contains_key(&r.content_hash()))
                    .cloned()
                    .collect();
                for (r, v) in todo.iter().zip(verify_batch(&todo)) {
                    self.verified.insert(r.content_hash(), v);
                }
                let results = records
                    .iter()
                    .map(|r| {
                        self.verified
                            .get(&r.content_hash())
                            .cloned()
                            .unwrap_or(Err(RecordError::BadSignature))
                    })
                    .collect();
                self.at(now, Ev::Input(i, Box::new(Input::Verified { id, results })));
            }
            Output::Persist { id, batch, .. } => {
                let p = self.nodes[i].store.apply(batch);
                self.at(
                    now,
                    Ev::Input(i, Box::new(Input::Persisted { id, result: Ok(p) })),
                );
            }
            Output::Submitted { .. } | Output::SetPeerScore { .. } => {}
            Output::Disconnect { peer } | Output::Ban { peer, .. } => {
                if let Some(j) = self.ids.get(&peer).copied() {
                    self.disconnect_now(i, j);
                }
            }
            Output::Schedule { at, timer } => {
                // rounded up: a timer never fires before the time it asked for
                let t = (((at - T0) * 1e6).max(0.0).ceil() as u64).max(now);
                self.seq += 1;
                let token = self.seq;
                self.nodes[i].timers.insert(timer, token);
                self.queue.push(Item {
                    t,
                    seq: token,
                    ev: Ev::Timer(i, timer, token),
                });
            }
            Output::Event(Event::PatternAccepted { hash, local, .. }) => {
                self.accepted(i, hash, local)
            }
            Output::Event(_) => {}
            Output::Tree { peer, msg } => self.send_tree(i, peer, msg),
        }
    }

    fn respond(&mut self, i: usize, id: InboundId, response: SyncResponse) {
        let Some((k, rid)) = self.nodes[i].inbound.remove(&id) else {
            return;
        };
        let me = self.peers[i];
        let t = self.now + self.latency();
        if self.link_ok(i, k) {
            let bytes = response.encode();
            if self.measuring {
                self.bytes.sync += bytes.len() as u64;
            }
            let response = SyncResponse::decode(&bytes);
            self.at(
                t,
                Ev::Input(
                    k,
                    Box::new(Input::Response {
                        peer: me,
                        id: rid,
                        response,
                    }),
                ),
            );
        } else {
            let error = "closed".to_string();
            self.at(
                t,
                Ev::Input(
                    k,
                    Box::new(Input::RequestFailed {
                        peer: me,
                        id: rid,
                        error,
                    }),
                ),
            );
        }
    }
}
