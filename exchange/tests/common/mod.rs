//! A tiny deterministic driver for core tests: N cores over in-memory
//! stores, messages delivered after seeded random delays (so every seed is
//! another event order), gossip flooded to connected peers with
//! gossipsub-like dedup, real signature checks.
#![allow(dead_code, clippy::unwrap_used)]

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};

use libp2p_identity::PeerId;
use metamesh_exchange::mem::MemStore;
use metamesh_exchange::testutil;
use metamesh_exchange::*;
use metamesh_protocol::record::{verify_batch, ContentHash};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub struct Node {
    pub state: State,
    pub store: MemStore,
    pub seen: HashSet<ContentHash>,
    pub events: Vec<Event>,
    pub submitted: Vec<(SubmitId, Result<Vec<SubmittedRecord>, SubmitError>)>,
    pub scores: BTreeMap<PeerId, f64>,
    pub disconnects: Vec<PeerId>,
}

pub struct Net {
    pub nodes: Vec<Node>,
    pub ids: HashMap<PeerId, usize>,
    pub links: HashSet<(usize, usize)>,
    queue: BinaryHeap<Reverse<(u64, u64, usize)>>,
    events: HashMap<u64, (usize, Input)>,
    timers: HashMap<(usize, Timer), u64>,
    inbound: HashMap<(usize, InboundId), (usize, RequestId)>,
    pub now_us: u64,
    seq: u64,
    pub rng: ChaCha8Rng,
    pub max_delay_us: u64,
    next_inbound: u64,
    next_msg: u64,
    pending_gossip: HashMap<(usize, MsgId), (Topic, Vec<u8>, usize)>,
    verified: HashMap<ContentHash, Result<PeerId, metamesh_protocol::RecordError>>,
    /// Gossip messages dropped before delivery (fraction).
    pub loss: f64,
}

pub const T0: f64 = testutil::NOW;

pub fn cfg() -> Config {
    Config {
        repair_delay_secs: 0.2,
        recon_min_interval_secs: 0.5,
        ..Config::default()
    }
}

impl Net {
    pub fn new(n: usize, seed: u64, mut cfg: Config) -> Net {
        // These nets carry no tree frames (exchange/tests/tree.rs and the
        // simulator test the tree): records go over gossip, as with
        // `[tree] enabled = false`.
        cfg.tree.enabled = false;
        let mut nodes = Vec::new();
        let mut ids = HashMap::new();
        for i in 0..n {
            let key = testutil::key(1000 + i as u64);
            let init = Init {
                key,
                epoch: Some(1_700_000_000 + i as u32),
                last_own_seq: 0,
                frontier: Default::default(),
                reputation: vec![],
                own_insight: None,
                seed: seed ^ i as u64,
            };
            let state = State::new(cfg.clone(), init);
            ids.insert(state.peer_id(), i);
            nodes.push(Node {
                state,
                store: MemStore::default(),
                seen: HashSet::new(),
                events: vec![],
                submitted: vec![],
                scores: BTreeMap::new(),
                disconnects: vec![],
            });
        }
        Net {
            nodes,
            ids,
            links: HashSet::new(),
            queue: BinaryHeap::new(),
            events: HashMap::new(),
            timers: HashMap::new(),
            inbound: HashMap::new(),
            now_us: 0,
            seq: 0,
            rng: ChaCha8Rng::seed_from_u64(seed),
            max_delay_us: 50_000,
            next_inbound: 1,
            next_msg: 1,
            pending_gossip: HashMap::new(),
            verified: HashMap::new(),
            loss: 0.0,
        }
    }

    pub fn peer(&self, i: usize) -> PeerId {
        self.nodes[i].state.peer_id()
    }

    pub fn now(&self) -> f64 {
        T0 + self.now_us as f64 / 1e6
    }

    fn push_at(&mut self, at: u64, node: usize, input: Input) -> u64 {
        self.seq += 1;
        let tie = self.rng.gen::<u32>() as u64;
        let key = (tie << 32) | (self.seq & 0xffff_ffff);
        self.events.insert(key, (node, input));
        self.queue.push(Reverse((at, key, node)));
        key
    }

    /// Deliver after a random delay.
    pub fn send(&mut self, node: usize, input: Input) {
        let d = self.rng.gen_range(0..=self.max_delay_us);
        self.push_at(self.now_us + d, node, input);
    }

    pub fn connect(&mut self, a: usize, b: usize) {
        self.links.insert((a.min(b), a.max(b)));
        let (pa, pb) = (self.peer(a), self.peer(b));
        self.send(
            a,
            Input::PeerConnected {
                peer: pb,
                outbound: true,
            },
        );
        self.send(
            b,
            Input::PeerConnected {
                peer: pa,
                outbound: false,
            },
        );
    }

    pub fn disconnect(&mut self, a: usize, b: usize) {
        self.links.remove(&(a.min(b), a.max(b)));
        let (pa, pb) = (self.peer(a), self.peer(b));
        self.send(a, Input::PeerDisconnected { peer: pb });
        self.send(b, Input::PeerDisconnected { peer: pa });
    }

    pub fn linked(&self, a: usize, b: usize) -> bool {
        self.links.contains(&(a.min(b), a.max(b)))
    }

    pub fn neighbours(&self, a: usize) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|b| *b != a && self.linked(a, *b))
            .collect()
    }

    /// Run until the queue is empty or `until_us` passes.
    pub fn run_until(&mut self, until_us: u64) {
        while let Some(Reverse((at, key, _))) = self.queue.peek().copied() {
            if at > until_us {
                break;
            }
            self.queue.pop();
            self.now_us = self.now_us.max(at);
            let Some((node, input)) = self.events.remove(&key) else {
                continue;
            };
            if let Input::Timer(t) = &input {
                if self.timers.get(&(node, *t)) != Some(&key) {
                    continue; // replaced by a later schedule
                }
                self.timers.remove(&(node, *t));
            }
            self.step(node, input);
        }
        self.now_us = self.now_us.max(until_us);
    }

    /// Give node `i` a new configuration now (as an operator's reload would).
    pub fn reconfigure(&mut self, i: usize, cfg: Config) {
        self.step(i, Input::Config(Box::new(cfg)));
    }

    pub fn step(&mut self, i: usize, input: Input) {
        let now = self.now();
        let outs = self.nodes[i].state.handle(input, now);
        for o in outs {
            self.exec(i, o);
        }
    }

    fn gossip_to(&mut self, from: usize, topic: Topic, data: Vec<u8>, except: Option<usize>) {
        for j in self.neighbours(from) {
            if Some(j) == except {
                continue;
            }
            if self.loss > 0.0 && self.rng.gen::<f64>() < self.loss {
                continue;
            }
            let h = ContentHash::of(&data);
            if !self.nodes[j].seen.insert(h) {
                continue;
            }
            self.next_msg += 1;
            let id = MsgId(self.next_msg);
            let g = Gossip {
                id,
                topic,
                author: None,
                source: self.peer(from),
                data: data.clone(),
            };
            self.pending_gossip
                .insert((j, id), (topic, data.clone(), from));
            self.send(j, Input::Gossip(g));
        }
    }

    fn exec(&mut self, i: usize, o: Output) {
        match o {
            Output::Validate { id, acceptance } => {
                if let Some((topic, data, from)) = self.pending_gossip.remove(&(i, id)) {
                    if acceptance == Acceptance::Accept {
                        self.gossip_to(i, topic, data, Some(from));
                    }
                }
            }
            Output::Publish { topic, data } => {
                self.nodes[i].seen.insert(ContentHash::of(&data));
                self.gossip_to(i, topic, data, None);
            }
            Output::SendRequest { peer, id, request } => {
                let me = self.peer(i);
                match self.ids.get(&peer).copied() {
                    Some(j) if self.linked(i, j) => {
                        self.next_inbound += 1;
                        let inb = InboundId(self.next_inbound);
                        self.inbound.insert((j, inb), (i, id));
                        // through the wire codec, as the node does
                        let request =
                            metamesh_protocol::sync::SyncRequest::decode(&request.encode());
                        self.send(
                            j,
                            Input::Request {
                                peer: me,
                                id: inb,
                                request,
                            },
                        );
                    }
                    _ => self.send(
                        i,
                        Input::RequestFailed {
                            peer,
                            id,
                            error: "not connected".into(),
                        },
                    ),
                }
            }
            Output::Respond { id, response } => self.respond(i, id, response),
            Output::Serve { peer, id, plan } => {
                let response = metamesh_exchange::serve::execute(&plan, &self.nodes[i].store);
                let bytes = response
                    .records
                    .iter()
                    .map(metamesh_exchange::serve::record_bytes)
                    .sum::<usize>() as u64;
                let records = response.records.len() as u32;
                self.send(
                    i,
                    Input::Served {
                        peer,
                        id,
                        records,
                        bytes,
                    },
                );
                self.respond(i, id, response);
            }
            Output::Verify { id, records, .. } => {
                let mut results = Vec::new();
                let mut todo = Vec::new();
                for r in &records {
                    if !self.verified.contains_key(&r.content_hash()) {
                        todo.push(r.clone());
                    }
                }
                for (r, v) in todo.iter().zip(verify_batch(&todo)) {
                    self.verified.insert(r.content_hash(), v);
                }
                for r in &records {
                    results.push(self.verified[&r.content_hash()].clone());
                }
                self.send(i, Input::Verified { id, results });
            }
            Output::Persist { id, batch, .. } => {
                let p = self.nodes[i].store.apply(batch);
                self.send(i, Input::Persisted { id, result: Ok(p) });
            }
            Output::Submitted { id, result } => self.nodes[i].submitted.push((id, result)),
            Output::SetPeerScore { peer, score } => {
                self.nodes[i].scores.insert(peer, score);
            }
            Output::Disconnect { peer } | Output::Ban { peer, .. } => {
                self.nodes[i].disconnects.push(peer);
                if let Some(j) = self.ids.get(&peer).copied() {
                    if self.linked(i, j) {
                        self.disconnect(i, j);
                    }
                }
            }
            Output::Schedule { at, timer } => {
                let at_us = (((at - T0) * 1e6).max(0.0) as u64).max(self.now_us);
                let key = self.push_at(at_us, i, Input::Timer(timer));
                self.timers.insert((i, timer), key);
            }
            Output::Event(e) => self.nodes[i].events.push(e),
            // the tree is off in these nets (records over gossip)
            Output::Tree { .. } => {}
        }
    }

    fn respond(
        &mut self,
        i: usize,
        id: InboundId,
        response: metamesh_protocol::sync::SyncResponse,
    ) {
        if let Some((k, rid)) = self.inbound.remove(&(i, id)) {
            let me = self.peer(i);
            if self.linked(i, k) {
                let response = metamesh_protocol::sync::SyncResponse::decode(&response.encode());
                self.send(
                    k,
                    Input::Response {
                        peer: me,
                        id: rid,
                        response,
                    },
                );
            } else {
                self.send(
                    k,
                    Input::RequestFailed {
                        peer: me,
                        id: rid,
                        error: "closed".into(),
                    },
                );
            }
        }
    }

    /// Publish raw bytes from node `i` as if its shell did (an adversary's
    /// gossip: bytes the node's core never produced).
    pub fn publish_raw(&mut self, i: usize, topic: Topic, data: Vec<u8>) {
        self.nodes[i].seen.insert(ContentHash::of(&data));
        self.gossip_to(i, topic, data, None);
    }

    /// Submit patterns at node `i`.
    pub fn submit(&mut self, i: usize, n: usize) {
        let patterns = (0..n)
            .map(|k| testutil::pattern(0.3 + (k % 7) as f64 / 10.0))
            .collect();
        self.next_inbound += 1;
        let id = SubmitId(self.next_inbound);
        self.send(i, Input::Submit { id, patterns });
    }

    pub fn hashes(&self, i: usize) -> std::collections::BTreeSet<ContentHash> {
        self.nodes[i].store.hashes().copied().collect()
    }
}
