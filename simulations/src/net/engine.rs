//! The discrete-event engine of the network simulator (see `net/mod.rs`).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::rc::Rc;
use std::time::Instant;

use libp2p_identity::PeerId;
use metamesh_exchange::mem::MemStore;
use metamesh_exchange::{
    serve, testutil, Acceptance, Config, Event, Gossip, InboundId, Init, Input, MsgId, Output,
    RequestId, State, SubmitId, Timer, Topic,
};
use metamesh_protocol::record::{verify_batch, ContentHash, RecordError};
use metamesh_protocol::sync::{SyncRequest, SyncResponse};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{NetConfig, NetReport};

const T0: f64 = testutil::NOW;
const SEC: u64 = 1_000_000;
/// Framing of one gossipsub RPC (protobuf fields, topic name), bytes.
const RPC_OVERHEAD: usize = 40;
const D_LAZY: usize = 6;
const D_HI: usize = 12;
const MCACHE_LEN: usize = 5;
const WARMUP: u64 = 3 * SEC;

struct Shell {
    state: State,
    store: MemStore,
    online: bool,
    never_left: bool,
    conns: Vec<usize>,
    mesh: Vec<usize>,
    seen: HashSet<ContentHash>,
    dont_want: HashSet<(usize, ContentHash)>,
    mcache: VecDeque<Vec<ContentHash>>,
    pending: HashMap<MsgId, (ContentHash, usize)>,
    timers: HashMap<Timer, u64>,
    inbound: HashMap<InboundId, (usize, RequestId)>,
    held: usize,
}

enum Ev {
    Input(usize, Input),
    Timer(usize, Timer, u64),
    Gossip {
        to: usize,
        from: usize,
        hash: ContentHash,
    },
    IHave {
        to: usize,
        from: usize,
        ids: Vec<ContentHash>,
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
    Heartbeat(usize),
    Publish(usize),
    Leave(usize),
    Join(usize),
    PartitionStart,
    Heal,
    Bootstrap,
}

#[derive(Default)]
struct Bytes {
    gossip: u64,
    control: u64,
    sync: u64,
    copies: u64,
}

struct Sim {
    cfg: NetConfig,
    nodes: Vec<Shell>,
    ids: HashMap<PeerId, usize>,
    peers: Vec<PeerId>,
    queue: BinaryHeap<Reverse<(u64, u64)>>,
    evs: HashMap<u64, Ev>,
    seq: u64,
    now: u64,
    rng: ChaCha8Rng,
    msgs: HashMap<ContentHash, (Topic, Rc<Vec<u8>>)>,
    verified: HashMap<ContentHash, Result<PeerId, RecordError>>,
    side: Option<Vec<bool>>,
    next_id: u64,
    measuring: bool,
    bytes: Bytes,
    /// record hash → (published at, always-online nodes holding it, done at)
    records: HashMap<ContentHash, (u64, usize, Option<u64>)>,
    record_push_bytes: Vec<usize>,
    total_records: usize,
    stayers: usize,
    heal_at: Option<u64>,
    healed_at: Option<u64>,
    boot: Option<(usize, u64, Option<u64>)>,
    events: u64,
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
        let core_cfg = Config::default();
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
            nodes.push(Shell {
                state,
                store: MemStore::default(),
                online: i < cfg.nodes,
                never_left: i < cfg.nodes,
                conns: vec![],
                mesh: vec![],
                seen: HashSet::new(),
                dont_want: HashSet::new(),
                mcache: VecDeque::from(vec![Vec::new()]),
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
            evs: HashMap::new(),
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
            record_push_bytes: vec![],
            total_records: 0,
            stayers: 0,
            heal_at: None,
            healed_at: None,
            boot: None,
            events: 0,
        };
        sim.build_graph();
        sim
    }

    fn build_graph(&mut self) {
        let n = self.cfg.nodes;
        let mut conns: Vec<HashSet<usize>> = vec![HashSet::new(); n];
        for i in 0..n {
            for _ in 0..self.cfg.dial.min(n.saturating_sub(1)) {
                let j = self.rng.gen_range(0..n);
                if j != i {
                    conns[i].insert(j);
                    conns[j].insert(i);
                }
            }
        }
        for (i, c) in conns.iter().enumerate() {
            let mut v: Vec<usize> = c.iter().copied().collect();
            v.sort_unstable();
            self.nodes[i].conns = v;
        }
        // mesh: GRAFT up to D peers among connections (accepted below D_hi)
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut self.rng);
        for &i in &order {
            let mut cand = self.nodes[i].conns.clone();
            cand.shuffle(&mut self.rng);
            for j in cand {
                if self.nodes[i].mesh.len() >= self.cfg.mesh_d {
                    break;
                }
                if !self.nodes[i].mesh.contains(&j) && self.nodes[j].mesh.len() < D_HI {
                    self.nodes[i].mesh.push(j);
                    self.nodes[j].mesh.push(i);
                }
            }
        }
    }

    fn at(&mut self, t: u64, ev: Ev) -> u64 {
        self.seq += 1;
        self.evs.insert(self.seq, ev);
        self.queue.push(Reverse((t, self.seq)));
        self.seq
    }

    fn latency(&mut self) -> u64 {
        let ms = self.cfg.latency_ms + self.rng.gen_range(-1.0..=1.0) * self.cfg.jitter_ms;
        (ms.max(1.0) * 1000.0) as u64
    }

    fn link_ok(&self, a: usize, b: usize) -> bool {
        self.nodes[a].online
            && self.nodes[b].online
            && self.side.as_ref().is_none_or(|s| s[a] == s[b])
    }

    fn plan(&mut self) {
        let n = self.cfg.nodes;
        // connections come up
        for i in 0..n {
            for j in self.nodes[i].conns.clone() {
                if i < j {
                    let t = self.rng.gen_range(0..SEC / 2);
                    self.connect_at(t, i, j);
                }
            }
            let t = self.rng.gen_range(0..SEC);
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
        self.at(
            t,
            Ev::Input(
                a,
                Input::PeerConnected {
                    peer: pb,
                    outbound: true,
                },
            ),
        );
        self.at(
            t,
            Ev::Input(
                b,
                Input::PeerConnected {
                    peer: pa,
                    outbound: false,
                },
            ),
        );
    }

    fn disconnect_now(&mut self, a: usize, b: usize) {
        let (pa, pb) = (self.peers[a], self.peers[b]);
        let t = self.now;
        self.at(t, Ev::Input(a, Input::PeerDisconnected { peer: pb }));
        self.at(t, Ev::Input(b, Input::PeerDisconnected { peer: pa }));
    }

    fn run_until(&mut self, end: u64) {
        while let Some(Reverse((t, k))) = self.queue.pop() {
            if t > end {
                break;
            }
            self.now = t;
            let Some(ev) = self.evs.remove(&k) else {
                continue;
            };
            self.events += 1;
            self.dispatch(ev);
            if self.all_done() {
                break;
            }
        }
    }

    /// Everything published is everywhere, the partition healed and the
    /// newcomer bootstrapped: nothing left to measure.
    fn all_done(&self) -> bool {
        let published = self.total_records
            == self.cfg.origins.min(self.cfg.nodes) * self.cfg.patterns_per_origin;
        published
            && self.records.values().all(|r| r.2.is_some())
            && (!self.cfg.partition || self.healed_at.is_some())
            && (!self.cfg.bootstrap || self.boot.is_some_and(|b| b.2.is_some()))
            && self.nodes[..self.cfg.nodes]
                .iter()
                .all(|s| !s.online || s.held == self.total_records)
    }

    fn dispatch(&mut self, ev: Ev) {
        match ev {
            Ev::Input(i, input) => {
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
            Ev::Gossip { to, from, hash } => self.on_gossip(to, from, hash),
            Ev::IHave { to, from, ids } => {
                if !self.link_ok(to, from) {
                    return;
                }
                let want: Vec<ContentHash> = ids
                    .into_iter()
                    .filter(|h| !self.nodes[to].seen.contains(h))
                    .collect();
                if !want.is_empty() {
                    self.count_control(want.len());
                    let t = self.now + self.latency();
                    self.at(
                        t,
                        Ev::IWant {
                            to: from,
                            from: to,
                            ids: want,
                        },
                    );
                }
            }
            Ev::IWant { to, from, ids } => {
                for h in ids {
                    if self.nodes[to].seen.contains(&h) {
                        self.send_full(to, from, h);
                    }
                }
            }
            Ev::IDontWant { to, from, id } => {
                if self.nodes[to].online {
                    self.nodes[to].dont_want.insert((from, id));
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
                targets.truncate(self.cfg.mesh_d);
                for &j in &targets {
                    self.nodes[b].conns.push(j);
                    self.nodes[j].conns.push(b);
                    self.nodes[b].mesh.push(j);
                    self.nodes[j].mesh.push(b);
                    let t = self.now + self.latency();
                    self.connect_at(t, b, j);
                }
                self.boot = Some((b, self.now, None));
                let t = self.now + SEC / 2;
                self.at(t, Ev::Heartbeat(b));
            }
        }
    }

    fn count_control(&mut self, ids: usize) {
        if self.measuring {
            self.bytes.control += (RPC_OVERHEAD + ids * self.cfg.msg_id_bytes) as u64;
        }
    }

    fn heartbeat(&mut self, i: usize) {
        let t = self.now + SEC;
        self.at(t, Ev::Heartbeat(i));
        if !self.nodes[i].online {
            return;
        }
        let ids: Vec<ContentHash> = self.nodes[i]
            .mcache
            .iter()
            .take(self.cfg.history_gossip)
            .flatten()
            .copied()
            .collect();
        if !ids.is_empty() {
            let mut lazy: Vec<usize> = self.nodes[i]
                .conns
                .iter()
                .copied()
                .filter(|j| !self.nodes[i].mesh.contains(j) && self.link_ok(i, *j))
                .collect();
            lazy.shuffle(&mut self.rng);
            for j in lazy.into_iter().take(D_LAZY) {
                self.count_control(ids.len());
                let t = self.now + self.latency();
                self.at(
                    t,
                    Ev::IHave {
                        to: j,
                        from: i,
                        ids: ids.clone(),
                    },
                );
            }
        }
        let mc = &mut self.nodes[i].mcache;
        mc.push_front(Vec::new());
        mc.truncate(MCACHE_LEN);
    }

    /// A full message on the wire from `from` to `to`.
    fn send_full(&mut self, from: usize, to: usize, hash: ContentHash) {
        if !self.link_ok(from, to) {
            return;
        }
        let Some((_, data)) = self.msgs.get(&hash) else {
            return;
        };
        if self.measuring {
            self.bytes.gossip += (data.len() + RPC_OVERHEAD) as u64;
            self.bytes.copies += 1;
        }
        if self.cfg.loss > 0.0 && self.rng.gen::<f64>() < self.cfg.loss {
            return;
        }
        let t = self.now + self.latency();
        self.at(t, Ev::Gossip { to, from, hash });
    }

    fn on_gossip(&mut self, to: usize, from: usize, hash: ContentHash) {
        if !self.link_ok(to, from) || !self.nodes[to].seen.insert(hash) {
            return;
        }
        let Some((topic, data)) = self.msgs.get(&hash).cloned() else {
            return;
        };
        if let Some(w) = self.nodes[to].mcache.front_mut() {
            w.push(hash);
        }
        if self.cfg.idontwant && topic != Topic::Announce {
            for j in self.nodes[to].mesh.clone() {
                if j != from && self.link_ok(to, j) {
                    self.count_control(1);
                    let t = self.now + self.latency();
                    self.at(
                        t,
                        Ev::IDontWant {
                            to: j,
                            from: to,
                            id: hash,
                        },
                    );
                }
            }
        }
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

    fn forward(&mut self, i: usize, hash: ContentHash, except: Option<usize>) {
        for j in self.nodes[i].mesh.clone() {
            if Some(j) == except || self.nodes[i].dont_want.contains(&(j, hash)) {
                continue;
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
                        self.forward(i, hash, Some(from));
                    }
                }
            }
            Output::Publish { topic, data } => {
                let hash = ContentHash::of(&data);
                if topic == Topic::Records {
                    self.record_push_bytes.push(data.len());
                }
                self.msgs.insert(hash, (topic, Rc::new(data)));
                self.nodes[i].seen.insert(hash);
                if let Some(w) = self.nodes[i].mcache.front_mut() {
                    if topic != Topic::Announce {
                        w.push(hash);
                    }
                }
                self.forward(i, hash, None);
            }
            Output::SendRequest { peer, id, request } => {
                let j = self.ids.get(&peer).copied();
                let bytes = request.encode();
                match j {
                    Some(j) if self.link_ok(i, j) => {
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
                                Input::Request {
                                    peer: me,
                                    id: inb,
                                    request,
                                },
                            ),
                        );
                    }
                    _ => {
                        let t = now + self.latency();
                        let error = "not connected".to_string();
                        self.at(t, Ev::Input(i, Input::RequestFailed { peer, id, error }));
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
                        Input::Served {
                            peer,
                            id,
                            records,
                            bytes,
                        },
                    ),
                );
                self.respond(i, id, response);
            }
            Output::Verify { id, records } => {
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
                self.at(now, Ev::Input(i, Input::Verified { id, results }));
            }
            Output::Persist { id, batch } => {
                let p = self.nodes[i].store.apply(batch);
                self.at(now, Ev::Input(i, Input::Persisted { id, result: Ok(p) }));
            }
            Output::Submitted { .. } | Output::SetPeerScore { .. } => {}
            Output::Disconnect { peer } | Output::Ban { peer, .. } => {
                if let Some(j) = self.ids.get(&peer).copied() {
                    self.disconnect_now(i, j);
                }
            }
            Output::Schedule { at, timer } => {
                let t = (((at - T0) * 1e6).max(0.0) as u64).max(now);
                self.seq += 1;
                let token = self.seq;
                self.nodes[i].timers.insert(timer, token);
                self.evs.insert(token, Ev::Timer(i, timer, token));
                self.queue.push(Reverse((t, token)));
            }
            Output::Event(Event::PatternAccepted { hash, local, .. }) => {
                self.accepted(i, hash, local)
            }
            Output::Event(_) => {}
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
                    Input::Response {
                        peer: me,
                        id: rid,
                        response,
                    },
                ),
            );
        } else {
            let error = "closed".to_string();
            self.at(
                t,
                Ev::Input(
                    k,
                    Input::RequestFailed {
                        peer: me,
                        id: rid,
                        error,
                    },
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
        let stayer = self.nodes[i].never_left;
        let stayers = self.stayers;
        if let Some(r) = self.records.get_mut(&hash) {
            if stayer {
                r.1 += 1;
                if r.1 == stayers {
                    r.2 = Some(self.now);
                }
            }
        }
        if let Some((b, start, None)) = self.boot {
            if b == i && self.nodes[b].held == self.total_records {
                self.boot = Some((b, start, Some(self.now)));
            }
        }
        if let (Some(h), None) = (self.heal_at, self.healed_at) {
            let all = self.nodes[..self.cfg.nodes]
                .iter()
                .all(|s| !s.online || s.held == self.total_records);
            if all {
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
        let per = (self.total_records * n).max(1) as f64;
        let total = (self.bytes.gossip + self.bytes.control + self.bytes.sync) as f64;
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
            mesh_d: self.cfg.mesh_d,
            delivered_fraction: held as f64 / should as f64,
            p50_ms: pct(0.5),
            p99_ms: pct(0.99),
            max_ms: lat.last().copied().unwrap_or(0.0),
            undelivered_patterns: undelivered,
            bytes_per_pattern: total / per,
            gossip_bytes_per_pattern: self.bytes.gossip as f64 / per,
            control_bytes_per_pattern: self.bytes.control as f64 / per,
            sync_bytes_per_pattern: self.bytes.sync as f64 / per,
            record_bytes: rec_bytes,
            bytes_ratio: if rec_bytes > 0.0 {
                total / per / rec_bytes
            } else {
                0.0
            },
            duplication: handed as f64 / accepted.max(1) as f64,
            wire_copies_per_record: self.bytes.copies as f64 / per,
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
        }
    }
}
