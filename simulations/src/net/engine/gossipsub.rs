//! The gossipsub router model of the simulator (see `net/mod.rs`): mesh
//! maintenance, flood publish, forwarding, IHAVE/IWANT/IDONTWANT, wire sizes.

use super::*;

// ---- wire sizes of gossipsub's protobuf (bytes) ------------------------------
/// Length prefix of one RPC on the stream.
pub(super) const RPC_FRAME: usize = 2;
/// `topic` field: "metamesh/<mesh>/records/1" (26 characters) + tag + length.
pub(super) const TOPIC_FIELD: usize = 28;
/// One message id in a control message: 32 bytes + tag + length.
pub(super) const ID_FIELD: usize = 34;
/// `from` (38-byte peer id), `seqno` (8) and `signature` (64), each + tag + length.
pub(super) const SIGNED_FIELDS: usize = 40 + 10 + 66;

/// Protobuf length of a gossipsub `Message` carrying `data` (what gossipsub
/// compares with `idontwant_message_size_threshold`).
pub(super) fn wire_message(data: usize, signed: bool) -> usize {
    data + 3 + TOPIC_FIELD + if signed { SIGNED_FIELDS } else { 0 }
}

/// One RPC carrying one message.
pub(super) fn wire_publish(data: usize, signed: bool) -> usize {
    RPC_FRAME + 3 + wire_message(data, signed)
}

/// One RPC carrying a control message with `ids` message ids (IHAVE has a topic).
pub(super) fn wire_control(ids: usize, topic: bool) -> usize {
    RPC_FRAME + 4 + ids * ID_FIELD + if topic { TOPIC_FIELD } else { 0 }
}

/// GRAFT (topic) or PRUNE (topic + backoff).
pub(super) fn wire_graft_prune(prune: bool) -> usize {
    RPC_FRAME + 6 + TOPIC_FIELD + if prune { 2 } else { 0 }
}

/// The gossipsub router of one node.
#[derive(Default)]
pub(super) struct Router {
    pub(super) mesh: Vec<usize>,
    /// Peers we dialled (gossipsub's `outbound`).
    pub(super) outbound: HashSet<usize>,
    /// peer → backoff ends at.
    pub(super) backoff: HashMap<usize, u64>,
    /// The duplicate cache (seen message ids; 60 s, longer than a run's spread).
    pub(super) dup: HashSet<ContentHash>,
    /// (peer, id): the peer sent IDONTWANT for id.
    pub(super) dont_send: HashSet<(usize, ContentHash)>,
    /// Validated ids per heartbeat window, newest first (the message cache).
    pub(super) mcache: VecDeque<Vec<ContentHash>>,
    /// IWANT promises: id → until.
    pub(super) promises: HashMap<ContentHash, u64>,
    /// IHAVE handled per peer in this heartbeat.
    pub(super) ihave_rx: HashMap<usize, u32>,
}

impl Sim {
    pub(super) fn count_control(&mut self, bytes: usize) {
        if self.measuring {
            self.bytes.control += bytes as u64;
        }
    }

    pub(super) fn send_control(&mut self, from: usize, to: usize, bytes: usize, ev: Ev) {
        if self.send(from, to, ev) {
            self.count_control(bytes);
        }
    }

    /// Connected peers of `i` (gossipsub's `connected_peers`, all subscribed).
    pub(super) fn connected(&self, i: usize) -> Vec<usize> {
        self.nodes[i]
            .conns
            .iter()
            .copied()
            .filter(|&j| self.link_ok(i, j))
            .collect()
    }

    /// gossipsub's heartbeat: mesh maintenance, IHAVE emission, cache shift.
    pub(super) fn heartbeat(&mut self, i: usize) {
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

    pub(super) fn on_graft(&mut self, to: usize, from: usize) {
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

    pub(super) fn on_ihave(&mut self, to: usize, from: usize, ids: &[ContentHash]) {
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
    pub(super) fn send_full(&mut self, from: usize, to: usize, hash: ContentHash) {
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
    pub(super) fn on_message(&mut self, to: usize, from: usize, hash: ContentHash) {
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
    pub(super) fn forward(&mut self, i: usize, hash: ContentHash, from: usize) {
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
    pub(super) fn publish(&mut self, i: usize, topic: Topic, data: Vec<u8>) {
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
}
