//! The record tree (`metamesh_exchange::tree`) on its own: a random
//! connected overlay of trees with messages delivered in random order.

use std::collections::{BTreeMap, BTreeSet};

use libp2p_identity::PeerId;
use metamesh_exchange::tree::{Tree, TreeConfig, TreeIn, TreeMsg, TreeOut, MAX_IDS_PER_MSG};
use metamesh_protocol::record::{ContentHash, RecordKind};
use metamesh_protocol::SignedRecord;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn record(rng: &mut ChaCha8Rng) -> SignedRecord {
    let mut body = vec![0u8; 64];
    rng.fill(&mut body[..]);
    SignedRecord {
        kind: RecordKind::Pattern,
        body,
        signer: vec![],
        signature: vec![],
    }
}

fn peer(i: usize) -> PeerId {
    metamesh_exchange::testutil::key(1000 + i as u64)
        .public()
        .to_peer_id()
}

/// N trees on a random connected overlay; every message is delivered in a
/// random order (any reordering, across and within links), timers fire when
/// the clock reaches them.
struct Net {
    rng: ChaCha8Rng,
    trees: Vec<Tree>,
    ids: BTreeMap<PeerId, usize>,
    peers: Vec<PeerId>,
    bag: Vec<(usize, TreeIn)>,
    timers: Vec<Option<f64>>,
    now: f64,
    held: Vec<BTreeSet<ContentHash>>,
    pushes: u64,
    /// Drop this fraction of messages.
    loss: f64,
}

impl Net {
    fn new(n: usize, extra: usize, cfg: TreeConfig, seed: u64) -> Net {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let peers: Vec<PeerId> = (0..n).map(peer).collect();
        let ids = peers.iter().enumerate().map(|(i, p)| (*p, i)).collect();
        let trees = (0..n).map(|i| Tree::new(cfg.clone(), i as u64)).collect();
        let mut edges = BTreeSet::new();
        // a random spanning tree keeps the overlay connected, then extra edges
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut rng);
        for k in 1..n {
            let j = order[rng.gen_range(0..k)];
            edges.insert((order[k].min(j), order[k].max(j)));
        }
        for _ in 0..extra * n {
            let (a, b) = (rng.gen_range(0..n), rng.gen_range(0..n));
            if a != b {
                edges.insert((a.min(b), a.max(b)));
            }
        }
        let mut net = Net {
            rng,
            trees,
            ids,
            bag: vec![],
            timers: vec![None; n],
            now: 0.0,
            held: vec![BTreeSet::new(); n],
            pushes: 0,
            loss: 0.0,
            peers,
        };
        let mut ups: Vec<(usize, TreeIn)> = vec![];
        for (a, b) in edges {
            ups.push((a, TreeIn::Up(net.peers[b])));
            ups.push((b, TreeIn::Up(net.peers[a])));
        }
        ups.shuffle(&mut net.rng);
        net.bag.extend(ups);
        net
    }

    fn input(&mut self, i: usize, input: TreeIn) {
        let outs = self.trees[i].handle(input, self.now);
        for o in outs {
            match o {
                TreeOut::Send { to, msg } => {
                    if matches!(msg, TreeMsg::Push { .. }) {
                        self.pushes += 1;
                    }
                    if self.loss > 0.0 && self.rng.gen::<f64>() < self.loss {
                        continue;
                    }
                    let from = self.peers[i];
                    // through the wire format
                    let msg = TreeMsg::decode(&msg.encode()).expect("own messages decode");
                    self.bag
                        .push((self.ids[&to], TreeIn::Message { from, msg }));
                }
                TreeOut::Deliver { id, .. } => {
                    assert!(self.held[i].insert(id), "delivered twice");
                    // the core's verdict comes back later, in any order
                    self.bag.push((i, TreeIn::Verdict { id, accept: true }));
                }
                TreeOut::Schedule { at } => {
                    assert!(at >= self.now, "timer in the past");
                    self.timers[i] = Some(at);
                }
            }
        }
    }

    fn broadcast(&mut self, i: usize) -> ContentHash {
        let r = record(&mut self.rng);
        let id = r.content_hash();
        self.held[i].insert(id);
        self.input(i, TreeIn::Broadcast(r));
        id
    }

    /// Run until nothing is left to deliver and no timer is due before `until`.
    fn run(&mut self, until: f64) {
        loop {
            let next = self
                .timers
                .iter()
                .enumerate()
                .filter_map(|(i, t)| t.map(|t| (t, i)))
                .min_by(|a, b| a.0.total_cmp(&b.0));
            let timer_due = next.is_some_and(|(t, _)| t <= self.now);
            if !self.bag.is_empty() && (!timer_due || self.rng.gen_bool(0.9)) {
                let k = self.rng.gen_range(0..self.bag.len());
                let (i, input) = self.bag.swap_remove(k);
                self.now += self.rng.gen_range(0.0..0.002);
                self.input(i, input);
                continue;
            }
            match next {
                Some((t, i)) if t <= until || timer_due => {
                    self.now = self.now.max(t);
                    self.timers[i] = None;
                    self.input(i, TreeIn::Timer);
                }
                _ => return,
            }
        }
    }

    fn everyone_holds(&self, id: &ContentHash) -> bool {
        self.held.iter().all(|h| h.contains(id))
    }

    fn check_bounds(&self) {
        for t in &self.trees {
            for (name, len, cap) in t.table_sizes() {
                assert!(len <= cap, "{name}: {len} > {cap}");
            }
        }
    }
}

#[test]
fn every_record_reaches_every_node_for_random_event_orders() {
    for seed in 0..3 {
        let mut net = Net::new(40, 3, TreeConfig::default(), seed);
        net.run(10.0);
        // concurrent origins, records interleaved with one another
        let mut ids = vec![];
        for _ in 0..20 {
            let o = net.rng.gen_range(0..40);
            ids.push(net.broadcast(o));
            for _ in 0..net.rng.gen_range(0..40) {
                if net.bag.is_empty() {
                    break;
                }
                let k = net.rng.gen_range(0..net.bag.len());
                let (i, input) = net.bag.swap_remove(k);
                net.input(i, input);
            }
        }
        net.run(net.now + 60.0);
        for id in &ids {
            assert!(net.everyone_holds(id), "seed {seed}: {id:?} missing");
        }
        net.check_bounds();
    }
}

#[test]
fn duplicates_prune_the_overlay_to_a_tree() {
    let n = 80;
    // only the tree's pushes (no flood publish to non-neighbours), every
    // record shapes the tree
    let cfg = TreeConfig {
        publish_extra: 0,
        shape_one_in: 1,
        prune_after: 2,
        ..TreeConfig::default()
    };
    let mut net = Net::new(n, 3, cfg, 7);
    net.run(10.0);
    let mut last = vec![];
    for k in 0..40 {
        let before = net.pushes;
        let o = net.rng.gen_range(0..n);
        let id = net.broadcast(o);
        net.run(net.now + 5.0);
        assert!(net.everyone_holds(&id), "record {k}");
        last.push(net.pushes - before);
    }
    // the first records flood the active view (≈ 3.7 pushes per receiver);
    // pruning brings later ones well under 1.5 (measured ≈ 1.25: not a
    // pure tree yet, see docs/notes/tree.md)
    let r = n as u64 - 1;
    let first = last[0];
    let tail: u64 = last[30..].iter().sum();
    assert!(first > 3 * r, "first {first}");
    assert!(
        tail <= 10 * r * 3 / 2,
        "last 10 records: {tail} pushes for {r} receivers each: {last:?}"
    );
    let eager: usize = net
        .trees
        .iter()
        .map(|t| t.active().filter(|(_, e)| *e).count())
        .sum();
    let active: usize = net.trees.iter().map(|t| t.active().count()).sum();
    assert!(
        eager < active,
        "some links became lazy: {eager} of {active}"
    );
}

#[test]
fn lost_pushes_are_grafted_from_lazy_announcers() {
    let n = 50;
    let mut net = Net::new(n, 3, TreeConfig::default(), 11);
    net.run(10.0);
    // settle the tree, then lose messages
    for _ in 0..10 {
        let o = net.rng.gen_range(0..n);
        net.broadcast(o);
        net.run(net.now + 5.0);
    }
    net.loss = 0.02;
    let mut ids = vec![];
    for _ in 0..20 {
        let o = net.rng.gen_range(0..n);
        ids.push(net.broadcast(o));
        net.run(net.now + 5.0);
    }
    let held: usize = ids
        .iter()
        .map(|id| net.held.iter().filter(|h| h.contains(id)).count())
        .sum();
    let grafts: u64 = net.trees.iter().map(|t| t.stats().grafts_sent).sum();
    assert!(grafts > 0, "no graft under loss");
    // without digest repair (the core's) a loss can still strand a record;
    // the tree alone must recover nearly all of them
    assert!(
        held as f64 >= 0.99 * (ids.len() * n) as f64,
        "held {held} of {}",
        ids.len() * n
    );
}

#[test]
fn no_input_sequence_panics_or_grows_a_table_past_its_bound() {
    let cfg = TreeConfig {
        max_seen: 32,
        max_cache: 8,
        max_missing: 8,
        max_announcers: 2,
        max_connected: 6,
        max_queued_ids: 16,
        active_target: 2,
        active_max: 3,
        ..TreeConfig::default()
    };
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let peers: Vec<PeerId> = (0..12).map(peer).collect();
    let recs: Vec<SignedRecord> = (0..40).map(|_| record(&mut rng)).collect();
    let ids: Vec<ContentHash> = recs.iter().map(|r| r.content_hash()).collect();
    for round in 0..10 {
        let mut t = Tree::new(cfg.clone(), round);
        let mut now = 0.0;
        for _ in 0..2000 {
            now += rng.gen_range(0.0..0.3);
            let p = *peers.choose(&mut rng).unwrap();
            let id = *ids.choose(&mut rng).unwrap();
            let msg = match rng.gen_range(0..8) {
                0 => TreeMsg::Push {
                    record: recs.choose(&mut rng).unwrap().clone(),
                    hops: rng.gen(),
                },
                1 => TreeMsg::IHave(
                    (0..rng.gen_range(0..2 * MAX_IDS_PER_MSG))
                        .map(|_| (*ids.choose(&mut rng).unwrap(), rng.gen()))
                        .collect(),
                ),
                2 => TreeMsg::Graft((0..rng.gen_range(0..200)).map(|_| id).collect()),
                3 => TreeMsg::Prune,
                4 => TreeMsg::Join { urgent: rng.gen() },
                5 => TreeMsg::Accept,
                6 => TreeMsg::Refuse,
                _ => TreeMsg::Leave,
            };
            let input = match rng.gen_range(0..10) {
                0 => TreeIn::Up(p),
                1 => TreeIn::Down(p),
                2 => TreeIn::Verdict {
                    id,
                    accept: rng.gen(),
                },
                3 => TreeIn::Broadcast(recs.choose(&mut rng).unwrap().clone()),
                4 => TreeIn::Have(id),
                5 => TreeIn::Timer,
                _ => TreeIn::Message { from: p, msg },
            };
            for o in t.handle(input, now) {
                match &o {
                    TreeOut::Send {
                        msg: TreeMsg::IHave(v),
                        ..
                    } => assert!(v.len() <= MAX_IDS_PER_MSG),
                    TreeOut::Send {
                        msg: TreeMsg::Graft(v),
                        ..
                    } => assert!(v.len() <= MAX_IDS_PER_MSG),
                    _ => {}
                }
            }
            for (name, len, cap) in t.table_sizes() {
                assert!(len <= cap, "{name}: {len} > {cap}");
            }
        }
    }
    // bytes off the wire never panic and are bounded
    for _ in 0..2000 {
        let n = rng.gen_range(0..600);
        let mut b = vec![0u8; n];
        rng.fill(&mut b[..]);
        let _ = TreeMsg::decode(&b);
    }
    assert!(TreeMsg::decode(&vec![0u8; metamesh_exchange::tree::MAX_TREE_MSG_BYTES + 1]).is_err());
}
