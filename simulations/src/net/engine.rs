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

const T0: f64 = testutil::NOW;
const SEC: u64 = 1_000_000;
/// Mesh formation before the first publish.
const WARMUP: u64 = 6 * SEC;
/// gossipsub `prune_backoff` (1 min) and `iwant_followup_time` (3 s).
const PRUNE_BACKOFF: u64 = 60 * SEC;
const PROMISE: u64 = 3 * SEC;
/// gossipsub `max_ihave_messages` handled per peer per heartbeat.
const MAX_IHAVE_PER_HEARTBEAT: u32 = 10;

// ---- wire sizes of gossipsub's protobuf (bytes) ------------------------------
/// Length prefix of one RPC on the stream.
const RPC_FRAME: usize = 2;
/// `topic` field: "metamesh/<mesh>/records/1" (26 characters) + tag + length.
const TOPIC_FIELD: usize = 28;
/// One message id in a control message: 32 bytes + tag + length.
const ID_FIELD: usize = 34;
/// `from` (38-byte peer id), `seqno` (8) and `signature` (64), each + tag + length.
const SIGNED_FIELDS: usize = 40 + 10 + 66;

/// Protobuf length of a gossipsub `Message` carrying `data` (what gossipsub
/// compares with `idontwant_message_size_threshold`).
fn wire_message(data: usize, signed: bool) -> usize {
    data + 3 + TOPIC_FIELD + if signed { SIGNED_FIELDS } else { 0 }
}

/// Length prefix of one tree message on its stream.
const TREE_FRAME: usize = 2;

/// One RPC carrying one message.
fn wire_publish(data: usize, signed: bool) -> usize {
    RPC_FRAME + 3 + wire_message(data, signed)
}

/// One RPC carrying a control message with `ids` message ids (IHAVE has a topic).
fn wire_control(ids: usize, topic: bool) -> usize {
    RPC_FRAME + 4 + ids * ID_FIELD + if topic { TOPIC_FIELD } else { 0 }
}

/// GRAFT (topic) or PRUNE (topic + backoff).
fn wire_graft_prune(prune: bool) -> usize {
    RPC_FRAME + 6 + TOPIC_FIELD + if prune { 2 } else { 0 }
}

/// The gossipsub router of one node.
#[derive(Default)]
struct Router {
    mesh: Vec<usize>,
    /// Peers we dialled (gossipsub's `outbound`).
    outbound: HashSet<usize>,
    /// peer → backoff ends at.
    backoff: HashMap<usize, u64>,
    /// The duplicate cache (seen message ids; 60 s, longer than a run's spread).
    dup: HashSet<ContentHash>,
    /// (peer, id): the peer sent IDONTWANT for id.
    dont_send: HashSet<(usize, ContentHash)>,
    /// Validated ids per heartbeat window, newest first (the message cache).
    mcache: VecDeque<Vec<ContentHash>>,
    /// IWANT promises: id → until.
    promises: HashMap<ContentHash, u64>,
    /// IHAVE handled per peer in this heartbeat.
    ihave_rx: HashMap<usize, u32>,
}

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

    fn count_control(&mut self, bytes: usize) {
        if self.measuring {
            self.bytes.control += bytes as u64;
        }
    }

    fn send_control(&mut self, from: usize, to: usize, bytes: usize, ev: Ev) {
        if self.send(from, to, ev) {
            self.count_control(bytes);
        }
    }

    /// Connected peers of `i` (gossipsub's `connected_peers`, all subscribed).
    fn connected(&self, i: usize) -> Vec<usize> {
        self.nodes[i]
            .conns
            .iter()
            .copied()
            .filter(|&j| self.link_ok(i, j))
            .collect()
    }

    /// gossipsub's heartbeat: mesh maintenance, IHAVE emission, cache shift.
    fn heartbeat(&mut self, i: usize) {
        let p = self.cfg.gossipsub.clone();
        let t = self.now + p.heartbeat_ms * 1000;
        self.at(t, Ev::Heartbeat(i));
        if !self.nodes[i].online {
            return;
        }
        let now = self.now;
        let connected = self.connected(i);
        let hb = p.heartbeat_ms * 1000;
        self.nodes[i].gs.ihave_rx.clear();
        self.nodes[i]
            .gs
            .backoff
            .retain(|_, until| *until + hb > now);
        self.nodes[i].gs.promises.retain(|_, until| *until > now);
        let mut graft = Vec::new();
        let mut prune = Vec::new();
        {
            let rng = &mut self.rng;
            let gs = &mut self.nodes[i].gs;
            gs.mesh.retain(|j| connected.contains(j));
            // too few: graft up to mesh_n
            if gs.mesh.len() < p.mesh_n_low {
                let mut cand: Vec<usize> = connected
                    .iter()
                    .copied()
                    .filter(|j| !gs.mesh.contains(j) && !gs.backoff.contains_key(j))
                    .collect();
                cand.shuffle(rng);
                cand.truncate(p.mesh_n - gs.mesh.len());
                gs.mesh.extend(&cand);
                graft.extend(cand);
            }
            // too many: prune down to mesh_n, keeping mesh_outbound_min outbound peers
            if gs.mesh.len() >= p.mesh_n_high {
                let excess = gs.mesh.len() - p.mesh_n;
                let mut shuffled = gs.mesh.clone();
                shuffled.shuffle(rng);
                let mut outbound = shuffled.iter().filter(|j| gs.outbound.contains(j)).count();
                let mut removed = 0;
                for j in shuffled {
                    if removed == excess {
                        break;
                    }
                    if gs.outbound.contains(&j) {
                        if outbound <= p.mesh_outbound_min {
                            continue;
                        }
                        outbound -= 1;
                    }
                    gs.mesh.retain(|&k| k != j);
                    gs.backoff.insert(j, now + PRUNE_BACKOFF);
                    prune.push(j);
                    removed += 1;
                }
            }
            // enough peers, but too few outbound: graft outbound ones
            if gs.mesh.len() >= p.mesh_n_low {
                let outbound = gs.mesh.iter().filter(|j| gs.outbound.contains(j)).count();
                if outbound < p.mesh_outbound_min {
                    let mut cand: Vec<usize> = connected
                        .iter()
                        .copied()
                        .filter(|j| {
                            !gs.mesh.contains(j)
                                && !gs.backoff.contains_key(j)
                                && gs.outbound.contains(j)
                        })
                        .collect();
                    cand.shuffle(rng);
                    cand.truncate(p.mesh_outbound_min - outbound);
                    gs.mesh.extend(&cand);
                    graft.extend(cand);
                }
            }
        }
        // IHAVE: validated ids of the last history_gossip heartbeats
        let ids: Vec<ContentHash> = self.nodes[i]
            .gs
            .mcache
            .iter()
            .take(p.history_gossip)
            .flatten()
            .copied()
            .collect();
        if !ids.is_empty() {
            let mut lazy: Vec<usize> = connected
                .iter()
                .copied()
                .filter(|j| !self.nodes[i].gs.mesh.contains(j))
                .collect();
            let n = p
                .gossip_lazy
                .max((p.gossip_factor * lazy.len() as f64) as usize);
            lazy.shuffle(&mut self.rng);
            let ids = Rc::new(ids);
            let bytes = wire_control(ids.len(), true);
            for j in lazy.into_iter().take(n) {
                let ev = Ev::IHave {
                    to: j,
                    from: i,
                    ids: ids.clone(),
                };
                self.send_control(i, j, bytes, ev);
            }
        }
        for j in graft {
            self.send_control(i, j, wire_graft_prune(false), Ev::Graft { to: j, from: i });
        }
        for j in prune {
            self.send_control(i, j, wire_graft_prune(true), Ev::Prune { to: j, from: i });
        }
        let mc = &mut self.nodes[i].gs.mcache;
        mc.push_front(Vec::new());
        mc.truncate(p.history_length.max(1));
    }

    fn on_graft(&mut self, to: usize, from: usize) {
        if !self.link_ok(to, from) {
            return;
        }
        let high = self.cfg.gossipsub.mesh_n_high;
        let now = self.now;
        let gs = &mut self.nodes[to].gs;
        if gs.mesh.contains(&from) {
            return;
        }
        let backoff = gs.backoff.get(&from).is_some_and(|u| *u > now);
        if backoff || (gs.mesh.len() >= high && !gs.outbound.contains(&from)) {
            gs.backoff.insert(from, now + PRUNE_BACKOFF);
            let ev = Ev::Prune { to: from, from: to };
            self.send_control(to, from, wire_graft_prune(true), ev);
            return;
        }
        gs.mesh.push(from);
    }

    fn on_ihave(&mut self, to: usize, from: usize, ids: &[ContentHash]) {
        if !self.link_ok(to, from) {
            return;
        }
        let now = self.now;
        let gs = &mut self.nodes[to].gs;
        let n = gs.ihave_rx.entry(from).or_insert(0);
        *n += 1;
        if *n > MAX_IHAVE_PER_HEARTBEAT {
            return;
        }
        let want: Vec<ContentHash> = ids
            .iter()
            .copied()
            .filter(|h| !gs.dup.contains(h) && gs.promises.get(h).is_none_or(|u| *u <= now))
            .collect();
        if want.is_empty() {
            return;
        }
        for h in &want {
            gs.promises.insert(*h, now + PROMISE);
        }
        let bytes = wire_control(want.len(), false);
        let ev = Ev::IWant {
            to: from,
            from: to,
            ids: want,
        };
        self.send_control(to, from, bytes, ev);
    }

    /// A full message on the wire from `from` to `to`.
    fn send_full(&mut self, from: usize, to: usize, hash: ContentHash) {
        if !self.link_ok(from, to) {
            return;
        }
        let Some(m) = self.msgs.get(&hash) else {
            return;
        };
        let bytes = wire_publish(m.data.len(), self.cfg.gossipsub.signed) as u64;
        let record = m.topic == Topic::Records;
        if self.measuring {
            if record {
                self.bytes.gossip += bytes;
                self.bytes.copies += 1;
            } else {
                self.bytes.announce += bytes;
            }
        }
        if self.lost() {
            return;
        }
        let t = self.now + self.latency();
        self.at(t, Ev::Gossip { to, from, hash });
    }

    /// A full message arrives at `to` from `from`.
    fn on_message(&mut self, to: usize, from: usize, hash: ContentHash) {
        if !self.link_ok(to, from) {
            return;
        }
        let Some(m) = self.msgs.get(&hash) else {
            return;
        };
        let (topic, data, author) = (m.topic, m.data.clone(), m.author);
        if self.nodes[to].gs.dup.contains(&hash) {
            return;
        }
        let p = &self.cfg.gossipsub;
        let signed = p.signed;
        // IDONTWANT to the mesh before validation, for large messages
        if wire_message(data.len(), signed) > p.idontwant_threshold {
            for j in self.nodes[to].gs.mesh.clone() {
                if j != from && !(signed && j == author) {
                    let ev = Ev::IDontWant {
                        to: j,
                        from: to,
                        id: hash,
                    };
                    self.send_control(to, j, wire_control(1, false), ev);
                }
            }
        }
        let gs = &mut self.nodes[to].gs;
        gs.dup.insert(hash);
        gs.promises.remove(&hash);
        self.next_id += 1;
        let id = MsgId(self.next_id);
        self.nodes[to].pending.insert(id, (hash, from));
        let g = Gossip {
            id,
            topic,
            author: None,
            source: self.peers[from],
            data: data.to_vec(),
        };
        self.step(to, Input::Gossip(g));
    }

    /// Validation `Accept`: into the message cache, forwarded to the mesh.
    fn forward(&mut self, i: usize, hash: ContentHash, from: usize) {
        let Some(m) = self.msgs.get(&hash) else {
            return;
        };
        let author = m.author;
        let signed = self.cfg.gossipsub.signed;
        if let Some(w) = self.nodes[i].gs.mcache.front_mut() {
            w.push(hash);
        }
        for j in self.nodes[i].gs.mesh.clone() {
            if j == from
                || (signed && j == author)
                || self.nodes[i].gs.dont_send.contains(&(j, hash))
            {
                continue;
            }
            self.send_full(i, j, hash);
        }
    }

    /// gossipsub `publish`: to every connected peer (flood publish) or the mesh.
    fn publish(&mut self, i: usize, topic: Topic, data: Vec<u8>) {
        let hash = ContentHash::of(&data);
        if topic == Topic::Records {
            self.record_push_bytes.push(data.len());
        }
        let len = data.len();
        self.msgs.insert(
            hash,
            Msg {
                topic,
                data: Rc::new(data),
                author: i,
            },
        );
        self.nodes[i].gs.dup.insert(hash);
        if let Some(w) = self.nodes[i].gs.mcache.front_mut() {
            w.push(hash);
        }
        let p = self.cfg.gossipsub.clone();
        let mut to = if p.flood_publish {
            self.connected(i)
        } else {
            self.nodes[i].gs.mesh.clone()
        };
        if to.is_empty() {
            // fanout: mesh_n random connected peers
            to = self.connected(i);
            to.shuffle(&mut self.rng);
            to.truncate(p.mesh_n);
        }
        for j in to {
            if p.idontwant_on_publish && wire_message(len, p.signed) > p.idontwant_threshold {
                let ev = Ev::IDontWant {
                    to: j,
                    from: i,
                    id: hash,
                };
                self.send_control(i, j, wire_control(1, false), ev);
            }
            self.send_full(i, j, hash);
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

    /// A tree message on the link `i → peer` (a stream: length-prefixed CBOR).
    fn send_tree(&mut self, i: usize, peer: PeerId, msg: TreeMsg) {
        let Some(j) = self.ids.get(&peer).copied() else {
            return;
        };
        if !self.link_ok(i, j) {
            return;
        }
        let bytes = msg.encode();
        let wire = (bytes.len() + TREE_FRAME) as u64;
        if let TreeMsg::Push { record } = &msg {
            if self.pushed.insert(record.content_hash()) {
                // the record's size, as gossipsub's records topic carries it
                let push = GossipMessage::RecordPush(RecordPush {
                    v: WIRE_VERSION,
                    record: record.clone(),
                });
                self.record_push_bytes.push(push.encode().len());
            }
            if self.measuring {
                self.bytes.gossip += wire;
                self.bytes.copies += 1;
            }
        } else if self.measuring {
            self.bytes.control += wire;
        }
        if self.lost() {
            return;
        }
        let me = self.peers[i];
        // one stream per link: a message never overtakes an earlier one
        let arrival = self.now + self.latency();
        let last = self.tree_fifo.entry((i, j)).or_insert(0);
        let t = arrival.max(*last + 1);
        *last = t;
        let msg = TreeMsg::decode(&bytes);
        self.at(t, Ev::Input(j, Box::new(Input::Tree { peer: me, msg })));
    }

    fn tree_report(&self) -> TreeReport {
        let on: Vec<&Shell> = self.nodes[..self.cfg.nodes]
            .iter()
            .filter(|s| s.online)
            .collect();
        let n = on.len().max(1) as f64;
        let mut stats = TreeStats::default();
        let mut edges = 0usize;
        let mut roots = HashSet::new();
        let (mut detached, mut max_dist, mut dist_sum, mut attached) = (0, 0u8, 0u64, 0u64);
        for s in &on {
            let t = s.state.tree_stats();
            stats.pushes_received += t.pushes_received;
            stats.duplicates += t.duplicates;
            stats.grafts_sent += t.grafts_sent;
            stats.graft_records_sent += t.graft_records_sent;
            stats.repairs += t.repairs;
            stats.ihave_ids_sent += t.ihave_ids_sent;
            stats.states_sent += t.states_sent;
            stats.parent_changes += t.parent_changes;
            stats.root_changes += t.root_changes;
            stats.detached += t.detached;
            stats.roots_expired += t.roots_expired;
            edges += s.state.tree_neighbours().filter(|(_, e)| *e).count();
            let place = s.state.tree_place();
            roots.insert(place.root);
            if place.is_root || place.has_parent {
                max_dist = max_dist.max(place.dist);
                dist_sum += u64::from(place.dist);
                attached += 1;
            } else {
                detached += 1;
            }
        }
        let on_tree = self.cfg.core.tree.enabled;
        TreeReport {
            records: if on_tree { "tree" } else { "gossipsub" },
            config: on_tree.then(|| self.cfg.core.tree.clone()),
            edges_mean: edges as f64 / n,
            roots: if on_tree { roots.len() } else { 0 },
            detached: if on_tree { detached } else { 0 },
            max_dist,
            mean_dist: dist_sum as f64 / attached.max(1) as f64,
            stats,
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

    fn accepted(&mut self, i: usize, hash: ContentHash, local: bool) {
        self.nodes[i].held += 1;
        if local {
            self.total_records += 1;
            self.records.insert(hash, (self.now, 0, None));
        }
        if self.nodes[i].never_left {
            if let Some(r) = self.records.get_mut(&hash) {
                if self.trace && self.now > r.0 + 3 * SEC {
                    let c = self.nodes[i].state.counters();
                    eprintln!(
                        "slow: node {i} record {:?} after {:.2}s {:?} pulled {} {:?}",
                        &hash.0[..4],
                        (self.now - r.0) as f64 / 1e6,
                        self.nodes[i].state.tree_place(),
                        c.pulled_records_received,
                        self.nodes[i].state.tree_stats()
                    );
                }
                r.1 += 1;
                if r.1 == self.stayers && r.2.is_none() {
                    r.2 = Some(self.now);
                    self.records_done += 1;
                }
            }
        }
        if let Some((b, start, None)) = self.boot {
            if b == i && self.nodes[b].held == self.total_records {
                self.boot = Some((b, start, Some(self.now)));
            }
        }
        self.check_healed();
        if self.records_done == self.total_records && self.nodes[i].held == self.total_records {
            self.check_finished();
        }
    }

    fn check_healed(&mut self) {
        if let (Some(h), None) = (self.heal_at, self.healed_at) {
            if self.records_done == self.total_records && self.all_online_complete() {
                self.healed_at = Some(self.now.max(h));
            }
        }
    }

    fn report(&self, wall_s: f64) -> NetReport {
        let n = self.cfg.nodes;
        let mut lat: Vec<f64> = self
            .records
            .values()
            .filter_map(|(p, _, d)| d.map(|d| (d - p) as f64 / 1000.0))
            .collect();
        lat.sort_by(f64::total_cmp);
        let undelivered = self.records.values().filter(|r| r.2.is_none()).count();
        let pct = |q: f64| -> f64 {
            if lat.is_empty() {
                return 0.0;
            }
            let k = ((lat.len() as f64 - 1.0) * q).round() as usize;
            lat[k.min(lat.len() - 1)]
        };
        let online: Vec<&Shell> = self.nodes[..n].iter().filter(|s| s.online).collect();
        let should = (online.len() * self.total_records).max(1);
        let held: usize = online.iter().map(|s| s.held.min(self.total_records)).sum();
        let mesh_mean = online.iter().map(|s| s.gs.mesh.len()).sum::<usize>() as f64
            / online.len().max(1) as f64;
        let per = (self.total_records * n.saturating_sub(1)).max(1) as f64;
        let b = &self.bytes;
        let total = (b.gossip + b.announce + b.control + b.sync) as f64;
        let rec_bytes = if self.record_push_bytes.is_empty() {
            0.0
        } else {
            self.record_push_bytes.iter().sum::<usize>() as f64
                / self.record_push_bytes.len() as f64
        };
        let (mut handed, mut accepted) = (0u64, 0u64);
        for s in &self.nodes[..n] {
            let c = s.state.counters();
            handed += c.gossip_records_received + c.pulled_records_received;
            accepted += c.records_accepted;
        }
        NetReport {
            nodes: n,
            origins: self.cfg.origins,
            patterns: self.total_records,
            seed: self.cfg.seed,
            loss: self.cfg.loss,
            churn: self.cfg.churn,
            partition: self.cfg.partition,
            mesh_d: self.cfg.gossipsub.mesh_n,
            mesh_mean,
            delivered_fraction: held as f64 / should as f64,
            p50_ms: pct(0.5),
            p99_ms: pct(0.99),
            max_ms: lat.last().copied().unwrap_or(0.0),
            undelivered_patterns: undelivered,
            bytes_per_pattern: total / per,
            gossip_bytes_per_pattern: b.gossip as f64 / per,
            announce_bytes_per_pattern: b.announce as f64 / per,
            control_bytes_per_pattern: b.control as f64 / per,
            sync_bytes_per_pattern: b.sync as f64 / per,
            record_bytes: rec_bytes,
            bytes_ratio: if rec_bytes > 0.0 {
                total / per / rec_bytes
            } else {
                0.0
            },
            duplication: handed as f64 / accepted.max(1) as f64,
            wire_copies_per_record: b.copies as f64 / per,
            heal_converge_ms: match (self.heal_at, self.healed_at) {
                (Some(h), Some(d)) => (d - h) as f64 / 1000.0,
                (Some(_), None) => f64::INFINITY,
                _ => 0.0,
            },
            bootstrap_ms: match self.boot {
                Some((_, s, Some(d))) => (d - s) as f64 / 1000.0,
                Some((_, _, None)) => f64::INFINITY,
                None => 0.0,
            },
            simulated_s: self.now as f64 / 1e6,
            events: self.events,
            wall_s,
            gossipsub: self.cfg.gossipsub.clone(),
            tree: self.tree_report(),
        }
    }
}
