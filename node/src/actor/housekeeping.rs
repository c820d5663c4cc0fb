//! Housekeeping on the actor's tick: reputation persisted (pool) and fed to
//! gossipsub as the application score, reputation-class gauges, peer
//! addresses remembered (pool), the parent link kept alive, the collective
//! view re-checked when the store changed.

use libp2p::PeerId;
use std::collections::BTreeMap;

use super::run::Actor;
use super::state::Pull;
use super::Shared;

/// Ticks (of 250 ms) between housekeeping rounds.
const HOUSEKEEPING_TICKS: u64 = 8;
/// Housekeeping rounds between re-syncs with (and re-dials of) the parent:
/// parent and child may be in different meshes, so no announcement tells
/// either about the other's new patterns.
const PARENT_SYNC_ROUNDS: u64 = 15;
/// Housekeeping rounds between consistency penalties.
const CONSISTENCY_ROUNDS: u64 = 30;
/// Ticks between collective-view checks (when the store changed).
const COLLECTIVE_TICKS: u64 = 2;

impl Actor {
    pub(super) fn peer_addrs_to_save(&self) -> Vec<(PeerId, Vec<String>)> {
        self.net
            .peers()
            .into_iter()
            .filter(|p| p.connected && !p.addrs.is_empty())
            .map(|p| (p.peer, p.addrs.iter().map(|a| a.to_string()).collect()))
            .collect()
    }

    pub(super) fn housekeeping_tick(&mut self, now: f64) {
        if self.ticks.is_multiple_of(COLLECTIVE_TICKS) {
            self.check_collective(false);
        }
        if !self.ticks.is_multiple_of(HOUSEKEEPING_TICKS) {
            return;
        }
        let round = self.ticks / HOUSEKEEPING_TICKS;
        if round.is_multiple_of(PARENT_SYNC_ROUNDS) {
            self.resync_parent();
        }
        if round.is_multiple_of(CONSISTENCY_ROUNDS) {
            self.check_collective(true);
        }
        let connected: Vec<PeerId> = self.x.connected.iter().copied().collect();
        for p in connected {
            let s = self.x.rep.app_score(&p, now);
            self.net.set_app_score(&p, s);
        }
        let mut classes: BTreeMap<&'static str, usize> = BTreeMap::new();
        for p in self.x.rep.peers() {
            *classes
                .entry(self.x.rep.standing(&p, now).class.as_str())
                .or_insert(0) += 1;
        }
        let classes: Vec<(&str, usize)> = classes.into_iter().collect();
        self.sh.metrics.set_reputation_classes(&classes);
        let dirty = self.x.rep.take_dirty();
        let addrs = self.peer_addrs_to_save();
        if dirty.is_empty() && addrs.is_empty() {
            return;
        }
        self.job(
            move |sh: &Shared| {
                for (p, bytes) in dirty {
                    if let Err(e) = sh.store.put_reputation(&p, &bytes) {
                        tracing::warn!(peer = %p, error = %e, "saving reputation");
                    }
                }
                for (p, a) in addrs {
                    let _ = sh.store.put_peer_addrs(&p, &a);
                }
            },
            |_, _| {},
        );
    }

    /// Keep the parent link alive across meshes: re-dial the parent when we
    /// are not connected, else pull what it gained since (no announcement
    /// crosses meshes).
    fn resync_parent(&mut self) {
        let Some((parent, addr)) = self.sh.parent.clone() else {
            return;
        };
        if self.x.connected.contains(&parent) {
            self.start_pull(parent, Pull::Have);
        } else if let Err(e) = self.net.dial(addr) {
            tracing::debug!(error = %e, "re-dialling the parent");
        }
    }
}
