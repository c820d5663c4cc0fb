//! What a run measured: deliveries, completion times and the report.

use super::*;

impl Sim {
    pub(super) fn accepted(&mut self, i: usize, hash: ContentHash, local: bool) {
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

    pub(super) fn check_healed(&mut self) {
        if let (Some(h), None) = (self.heal_at, self.healed_at) {
            if self.records_done == self.total_records && self.all_online_complete() {
                self.healed_at = Some(self.now.max(h));
            }
        }
    }

    pub(super) fn report(&self, wall_s: f64) -> NetReport {
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
