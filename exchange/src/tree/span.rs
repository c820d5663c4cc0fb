//! The spanning tree: a root-anchored distance vector with Babel's
//! feasibility condition (see the module docs of `tree`).

use libp2p_identity::PeerId;

use super::wire::{INFINITE, REL_CHILD, REL_PARENT};
use super::{Tree, TreeMsg};

/// An offer of a route to a root: (peer, root, seq, dist).
type Offer = (PeerId, u64, u32, u8);

impl Tree {
    /// Our `State` as sent to `to`.
    fn state_for(&self, to: &PeerId) -> TreeMsg {
        let mut rel = 0;
        if self.parent.as_ref() == Some(to) {
            rel |= REL_PARENT;
        }
        if self.peers.get(to).is_some_and(|p| p.child) {
            rel |= REL_CHILD;
        }
        TreeMsg::State {
            root: self.root,
            seq: self.seq,
            dist: self.dist,
            rel,
        }
    }

    pub(super) fn send_state(&mut self, to: PeerId, now: f64) {
        let msg = self.state_for(&to);
        if let Some(p) = self.peers.get_mut(&to) {
            p.state_sent_at = now;
            self.stats.states_sent += 1;
            self.send(to, msg);
        }
    }

    fn advertise_all(&mut self, now: f64) {
        let peers: Vec<PeerId> = self.peers.keys().copied().collect();
        for p in peers {
            self.send_state(p, now);
        }
    }

    /// A peer's view of our link differs from ours: tell it (rate-limited).
    pub(super) fn correct(&mut self, to: PeerId, now: f64) {
        let due = self
            .peers
            .get(&to)
            .is_some_and(|p| now - p.state_sent_at >= self.cfg.correct_secs);
        if due {
            self.send_state(to, now);
        }
    }

    pub(super) fn on_state(
        &mut self,
        from: PeerId,
        root: u64,
        seq: u32,
        dist: u8,
        rel: u8,
        now: f64,
    ) {
        let Some(p) = self.peers.get_mut(&from) else {
            return;
        };
        if p.heard && p.root == root && seq < p.seq {
            // overtaken by a newer one (reordered): stale
            return;
        }
        let was_child = p.child;
        p.heard = true;
        p.root = root;
        p.seq = seq;
        p.dist = dist;
        p.child = rel & REL_PARENT != 0;
        p.names_us_child = rel & REL_CHILD != 0;
        if root == self.key && seq > self.own_seq {
            // our own key with a newer number (we restarted): go past it
            self.own_seq = seq;
        }
        let changed = self.reselect(now);
        let is_child = self.peers.get(&from).is_some_and(|p| p.child);
        if was_child != is_child {
            self.refresh_lazy();
            if is_child && self.parent != Some(from) {
                // confirm the new child (it resends until we do) and send it
                // what it may have missed
                if !changed {
                    self.send_state(from, now);
                }
                self.new_edge(from, now);
            }
        } else if is_child && self.parent != Some(from) {
            // a child repeating itself: our confirmation may have been lost
            self.correct(from, now);
        }
        if self.parent == Some(from) && rel & REL_CHILD != 0 {
            self.confirm_at = None;
        }
        let Some(p) = self.peers.get(&from) else {
            return;
        };
        let mismatch = (self.parent == Some(from)) != p.names_us_child;
        if mismatch && !changed {
            self.correct(from, now);
        }
    }

    /// An offer usable at all: heard, not detached, not a dropped root's old number.
    fn offer(&self, p: &PeerId) -> Option<Offer> {
        let x = self.peers.get(p)?;
        let max = self.cfg.max_dist.min(INFINITE - 1);
        if !x.heard || x.dist >= max || x.root == self.key {
            return None;
        }
        if self.dead.get(&x.root).is_some_and(|s| x.seq <= *s) {
            return None;
        }
        Some((*p, x.root, x.seq, x.dist))
    }

    fn offers(&self) -> Vec<Offer> {
        self.peers.keys().filter_map(|p| self.offer(p)).collect()
    }

    /// The best of `offers` by (dist, not our parent, peer id): stable, so
    /// the tree does not follow arrival order.
    fn best<'a>(&self, offers: impl Iterator<Item = &'a Offer>) -> Option<Offer> {
        offers
            .min_by_key(|(p, _, _, d)| (*d, self.parent.as_ref() != Some(p), *p))
            .copied()
    }

    /// Choose root and parent from what the peers offer; advertise a change.
    /// Returns whether our `State` went to every peer.
    pub(super) fn reselect(&mut self, now: f64) -> bool {
        let before = (self.root, self.seq, self.dist);
        let old_parent = self.parent;
        let offers = self.offers();
        let best_root = offers
            .iter()
            .map(|o| o.1)
            .min()
            .unwrap_or(u64::MAX)
            .min(self.key);
        if best_root < self.root {
            // a better root: a new source, any route to it is feasible
            let newest = offers
                .iter()
                .filter(|o| o.1 == best_root)
                .map(|o| o.2)
                .max();
            let chosen = self.best(
                offers
                    .iter()
                    .filter(|o| o.1 == best_root && Some(o.2) == newest),
            );
            match chosen {
                Some((p, r, s, d)) => {
                    self.stats.root_changes += 1;
                    self.root = r;
                    self.adopt(p, s, d, now);
                }
                // our own key is the best: be the root
                None => self.become_root(now),
            }
        } else if self.root != self.key {
            self.same_root(&offers, now);
        }
        let changed = before != (self.root, self.seq, self.dist);
        if self.parent != old_parent {
            self.stats.parent_changes += 1;
            if self.parent.is_none() && self.root != self.key {
                self.stats.detached += 1;
            }
        }
        if changed {
            self.advertise_all(now);
        } else if self.parent != old_parent {
            for p in [old_parent, self.parent].into_iter().flatten() {
                self.send_state(p, now);
            }
        }
        if self.parent != old_parent {
            self.confirm_at = self.parent.map(|_| now + self.cfg.correct_secs);
            self.refresh_lazy();
            if let Some(p) = self
                .parent
                .filter(|p| !self.peers.get(p).is_some_and(|x| x.child))
            {
                self.new_edge(p, now);
            }
        }
        changed
    }

    /// Take `p`'s route at sequence number `s` (new: the feasibility distance restarts).
    fn adopt(&mut self, p: PeerId, s: u32, d: u8, now: f64) {
        self.parent = Some(p);
        self.seq = s;
        self.dist = d.saturating_add(1);
        self.fd = (s, self.dist);
        self.root_heard_at = now;
        self.hold_until = None;
    }

    fn same_root(&mut self, offers: &[Offer], now: f64) {
        let r = self.root;
        let mine: Vec<Offer> = offers.iter().filter(|o| o.1 == r).copied().collect();
        let newest = mine.iter().map(|o| o.2).max();
        if let Some(n) = newest.filter(|n| *n > self.seq) {
            let via_parent = mine.iter().any(|o| Some(o.0) == self.parent && o.2 == n);
            let held_out = self.hold_until.is_some_and(|t| t <= now);
            if self.parent.is_none() || via_parent || held_out {
                if let Some((p, _, s, d)) = self.best(mine.iter().filter(|o| o.2 == n)) {
                    self.adopt(p, s, d, now);
                }
            } else if self.hold_until.is_none() {
                let at = now + self.cfg.hold_secs;
                self.hold_until = Some(at);
                self.arm(at);
            }
        }
        // Same number: keep the parent while feasible, take a strictly
        // shorter feasible route, detach when none is left.
        let (fs, fdist) = self.fd;
        let feasible = |o: &&Offer| o.2 == self.seq && fs == self.seq && o.3 < fdist;
        let cands: Vec<Offer> = mine.iter().filter(feasible).copied().collect();
        let current = cands.iter().find(|o| Some(o.0) == self.parent).copied();
        let best = self.best(cands.iter());
        match (current, best) {
            (Some(c), Some(b)) if b.3 < c.3 => self.switch(b),
            (Some(c), _) => {
                self.dist = c.3.saturating_add(1);
            }
            (None, Some(b)) => self.switch(b),
            (None, None) => {
                self.parent = None;
                self.dist = INFINITE;
            }
        }
        if self.dist < self.fd.1 && self.fd.0 == self.seq {
            self.fd.1 = self.dist;
        }
    }

    fn switch(&mut self, (p, _, _, d): Offer) {
        self.parent = Some(p);
        self.dist = d.saturating_add(1);
    }

    /// The root's beat, a held sequence number, a root that went silent.
    pub(super) fn span_timer(&mut self, now: f64) {
        if self.root == self.key {
            if now >= self.next_beat {
                self.own_seq = self.own_seq.saturating_add(1);
                self.seq = self.own_seq;
                self.fd = (self.seq, 0);
                self.root_heard_at = now;
                self.next_beat = now + self.cfg.heartbeat_secs;
                self.advertise_all(now);
            }
            return;
        }
        if now - self.root_heard_at > self.cfg.root_max_age_secs {
            // the root went silent: drop it, be our own root, take a better live one
            self.stats.roots_expired += 1;
            let (r, s) = (self.root, self.seq);
            let cur = self.dead.get(&r).copied().unwrap_or(0);
            self.dead.insert(r, s.max(cur));
            self.become_root(now);
            self.reselect(now);
            return;
        }
        if self.hold_until.is_some_and(|t| t <= now) {
            self.reselect(now);
            self.hold_until = None;
        }
        if self.confirm_at.is_some_and(|t| t <= now) {
            // the parent did not confirm us: our `State` (or its answer) was lost
            self.confirm_at = Some(now + self.cfg.correct_secs);
            if let Some(p) = self.parent {
                self.send_state(p, now);
            }
        }
    }

    fn become_root(&mut self, now: f64) {
        let old_parent = self.parent.take();
        self.confirm_at = None;
        self.own_seq = self.own_seq.saturating_add(1);
        self.root = self.key;
        self.seq = self.own_seq;
        self.dist = 0;
        self.fd = (self.seq, 0);
        self.root_heard_at = now;
        self.next_beat = now + self.cfg.heartbeat_secs;
        self.hold_until = None;
        if old_parent.is_some() {
            self.stats.parent_changes += 1;
        }
        self.advertise_all(now);
        self.refresh_lazy();
    }
}
