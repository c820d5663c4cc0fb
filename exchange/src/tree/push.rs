//! The push of records over the spanning tree, ids to a few non-tree
//! peers, and grafts for what the tree did not bring (see `tree`'s docs).

use std::collections::BTreeMap;

use libp2p_identity::PeerId;
use metamesh_protocol::record::ContentHash;
use metamesh_protocol::SignedRecord;
use rand::seq::IteratorRandom;

use super::wire::{short_id, MAX_GRAFT_RECORDS, MAX_IDS_PER_MSG};
use super::{Cached, Missing, Seen, Tree, TreeMsg, TreeOut, LAZY_IN_SECS, MAX_TOLD};

impl Tree {
    /// Keep `lazy_peers` non-tree peers chosen for ids (tree edges are not lazy).
    pub(super) fn refresh_lazy(&mut self) {
        let edges = self.edges();
        for p in &edges {
            if let Some(x) = self.peers.get_mut(p) {
                x.lazy_out = false;
            }
        }
        let have = self.peers.values().filter(|x| x.lazy_out).count();
        let want = self.cfg.lazy_peers.saturating_sub(have);
        if want == 0 {
            return;
        }
        let picks = self
            .peers
            .iter()
            .filter(|(p, x)| !x.lazy_out && !edges.contains(p))
            .map(|(p, _)| *p)
            .choose_multiple(&mut self.rng, want);
        for p in picks {
            if let Some(x) = self.peers.get_mut(&p) {
                x.lazy_out = true;
            }
        }
    }

    /// `p` just became a tree edge: the ids of recent records, so that it
    /// grafts what it missed while it was not one.
    pub(super) fn new_edge(&mut self, p: PeerId, now: f64) {
        let since = now - self.cfg.edge_ids_secs;
        let mut ids: Vec<(f64, u64)> = self
            .cache
            .iter()
            .filter(|(id, c)| {
                c.ok && c.at >= since && !self.seen.get(id).is_some_and(|s| s.told.contains(&p))
            })
            .map(|(id, c)| (c.at, *id))
            .collect();
        if ids.is_empty() {
            return;
        }
        ids.sort_by(|a, b| b.0.total_cmp(&a.0));
        ids.truncate(MAX_IDS_PER_MSG);
        self.stats.ihave_ids_sent += ids.len() as u64;
        self.send(
            p,
            TreeMsg::IHave(ids.into_iter().map(|(_, id)| id).collect()),
        );
    }

    /// Peers that get ids: the chosen ones, then those sending us theirs (bounded).
    fn lazy(&self, now: f64) -> Vec<PeerId> {
        let mut v: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(p, x)| x.lazy_out && !self.is_edge(p))
            .map(|(p, _)| *p)
            .collect();
        for (p, x) in &self.peers {
            if v.len() >= self.cfg.max_lazy {
                break;
            }
            if !x.lazy_out && x.lazy_in_until > now && !self.is_edge(p) {
                v.push(*p);
            }
        }
        v.truncate(self.cfg.max_lazy);
        v
    }

    pub(super) fn on_push(&mut self, from: PeerId, record: SignedRecord, now: f64) {
        self.stats.pushes_received += 1;
        let hash = record.content_hash();
        let id = short_id(&hash);
        if let Some(s) = self.seen.get_mut(&id) {
            self.stats.duplicates += 1;
            if s.told.len() < MAX_TOLD && !s.told.contains(&from) {
                s.told.push(from);
            }
            return;
        }
        let grafted = self.missing.remove(&id).is_some_and(|m| m.grafted);
        if !grafted && !self.is_edge(&from) {
            // it pushes to us as a tree edge we do not have: tell it how we see the link
            self.correct(from, now);
        }
        self.seen.insert(
            id,
            Seen {
                from: Some(from),
                told: vec![from],
            },
        );
        self.cache.insert(
            id,
            Cached {
                record: record.clone(),
                at: now,
                ok: false,
            },
        );
        self.out.push(TreeOut::Deliver {
            from,
            id: hash,
            record,
        });
    }

    pub(super) fn on_verdict(&mut self, hash: ContentHash, accept: bool, now: f64) {
        let id = short_id(&hash);
        if !accept {
            // a bad copy must not hide a good one
            self.seen.remove(&id);
            self.cache.remove(&id);
            return;
        }
        let Some(c) = self.cache.get_mut(&id) else {
            return;
        };
        if c.ok {
            return;
        }
        c.ok = true;
        let record = c.record.clone();
        let from = self.seen.get(&id).and_then(|s| s.from);
        self.forward(id, record, from, now);
    }

    pub(super) fn on_broadcast(&mut self, record: SignedRecord, now: f64) {
        let id = short_id(&record.content_hash());
        if self.seen.get(&id).is_some_and(|s| s.from.is_none()) {
            return;
        }
        self.seen.insert(
            id,
            Seen {
                from: None,
                told: vec![],
            },
        );
        self.missing.remove(&id);
        self.cache.insert(
            id,
            Cached {
                record: record.clone(),
                at: now,
                ok: true,
            },
        );
        self.forward(id, record, None, now);
    }

    /// In full along tree edges, as an id to the lazy peers; never back to `from`.
    fn forward(&mut self, id: u64, record: SignedRecord, from: Option<PeerId>, now: f64) {
        for p in self.edges() {
            if Some(p) != from {
                self.send(
                    p,
                    TreeMsg::Push {
                        record: record.clone(),
                    },
                );
            }
        }
        let told = self
            .seen
            .get(&id)
            .map(|s| s.told.clone())
            .unwrap_or_default();
        let mut queued = false;
        for p in self.lazy(now) {
            if told.contains(&p) {
                continue;
            }
            if let Some(x) = self.peers.get_mut(&p) {
                if x.queue.len() < self.cfg.max_queued_ids {
                    x.queue.push(id);
                    queued = true;
                }
            }
        }
        if queued && self.flush_at.is_none() {
            let at = now + self.cfg.ihave_delay_secs;
            self.flush_at = Some(at);
            self.arm(at);
        }
    }

    pub(super) fn on_have(&mut self, hash: ContentHash, now: f64) {
        let id = short_id(&hash);
        self.missing.remove(&id);
        if self.cache.get(&id).is_some_and(|c| !c.ok) {
            // pushed to us, then stored by another path (its verdict was
            // "already on its way"): valid, so forward it as if accepted
            return self.on_verdict(hash, true, now);
        }
        if !self.seen.contains_key(&id) {
            self.seen.insert(
                id,
                Seen {
                    from: None,
                    told: vec![],
                },
            );
        }
    }

    pub(super) fn on_ihave(&mut self, from: PeerId, ids: Vec<u64>, now: f64) {
        if let Some(x) = self.peers.get_mut(&from) {
            x.lazy_in_until = now + LAZY_IN_SECS;
        }
        for id in ids.into_iter().take(MAX_IDS_PER_MSG) {
            if let Some(x) = self.peers.get_mut(&from) {
                x.queue.retain(|i| *i != id);
            }
            if let Some(s) = self.seen.get_mut(&id) {
                if s.told.len() < MAX_TOLD && !s.told.contains(&from) {
                    s.told.push(from);
                }
                continue;
            }
            let (max, due) = (self.cfg.max_announcers, now + self.cfg.graft_timeout_secs);
            let m = self.missing.entry_or_insert_with(
                id,
                || Missing {
                    announcers: Vec::new(),
                    due,
                    grafted: false,
                    last: None,
                },
                |_| 0,
            );
            if m.announcers.len() < max && !m.announcers.contains(&from) {
                m.announcers.push(from);
            }
            let due = m.due;
            self.arm(due);
        }
    }

    pub(super) fn on_graft(&mut self, from: PeerId, ids: Vec<u64>) {
        for id in ids.into_iter().take(MAX_GRAFT_RECORDS) {
            if let Some(c) = self.cache.get(&id).filter(|c| c.ok) {
                let msg = TreeMsg::Push {
                    record: c.record.clone(),
                };
                self.stats.graft_records_sent += 1;
                self.send(from, msg);
            }
        }
    }

    /// Flush queued ids; graft records whose ids came but whose copies did not.
    pub(super) fn push_timer(&mut self, now: f64) {
        if self.flush_at.is_some_and(|t| t <= now) {
            self.flush_at = None;
            let mut batches = Vec::new();
            for (p, x) in self.peers.iter_mut() {
                if !x.queue.is_empty() {
                    batches.push((*p, std::mem::take(&mut x.queue)));
                }
            }
            for (p, ids) in batches {
                for chunk in ids.chunks(MAX_IDS_PER_MSG) {
                    self.stats.ihave_ids_sent += chunk.len() as u64;
                    self.send(p, TreeMsg::IHave(chunk.to_vec()));
                }
            }
        }
        let mut due: Vec<u64> = self
            .missing
            .iter()
            .filter(|(_, m)| m.due <= now)
            .map(|(id, _)| *id)
            .collect();
        due.sort_unstable();
        let mut grafts: BTreeMap<PeerId, Vec<u64>> = BTreeMap::new();
        let mut repairs = Vec::new();
        for id in due {
            let Some(m) = self.missing.get_mut(&id) else {
                continue;
            };
            let mut next = None;
            while !m.announcers.is_empty() {
                let p = m.announcers.remove(0);
                if self.peers.contains_key(&p) {
                    next = Some(p);
                    break;
                }
            }
            match next {
                Some(p) => {
                    m.due = now + self.cfg.graft_retry_secs;
                    m.grafted = true;
                    m.last = Some(p);
                    grafts.entry(p).or_default().push(id);
                }
                None => {
                    // nobody left to ask: exact digest repair with the last one
                    let last = m.last;
                    self.missing.remove(&id);
                    // the last announcer, else our parent, else any peer
                    let peer = last
                        .filter(|p| self.peers.contains_key(p))
                        .or(self.parent)
                        .or_else(|| self.peers.keys().next().copied());
                    if let Some(p) = peer {
                        if !repairs.contains(&p) {
                            repairs.push(p);
                        }
                    }
                }
            }
        }
        for (p, ids) in grafts {
            self.stats.grafts_sent += 1;
            for chunk in ids.chunks(MAX_IDS_PER_MSG) {
                self.send(p, TreeMsg::Graft(chunk.to_vec()));
            }
        }
        for peer in repairs {
            self.stats.repairs += 1;
            self.out.push(TreeOut::Repair { peer });
        }
    }
}
