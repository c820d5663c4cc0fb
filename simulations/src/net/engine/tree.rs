//! Tree messages on the simulated links (FIFO streams) and the tree's report.

use super::*;

impl Sim {
    /// A tree message on the link `i → peer` (a stream: length-prefixed CBOR).
    pub(super) fn send_tree(&mut self, i: usize, peer: PeerId, msg: TreeMsg) {
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

    pub(super) fn tree_report(&self) -> TreeReport {
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
}
