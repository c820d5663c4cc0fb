//! Pull sessions: at most one per peer, page by page, each page a request
//! sent by the actor and its records ingested on the pool; paced by the
//! per-peer record budget. A session asks for exact ranges (what an
//! announcement showed we lack) or sends our frontier (`have`).

use std::time::Duration;

use libp2p::PeerId;
use metamesh_protocol::sync::{self, Frontier};
use metamesh_protocol::wire::{
    FrontierEntry, PatternRequest, PatternResponse, MAX_RECORDS_PER_RESPONSE, WIRE_VERSION,
};

use super::gossip::InsightFrom;
use super::ingest::IngestReport;
use super::now_secs;
use super::run::Actor;
use super::state::{Pull, PullSession, Sent};
use crate::network::NetError;

/// Most pages one pull session fetches before yielding (it is re-run later
/// by the next announcement if more is missing).
const MAX_PAGES_PER_SESSION: usize = 4096;
/// Most peers whose pull targets are tracked for de-duplication.
const MAX_TRACKED_PULL_TARGETS: usize = 1024;

impl Actor {
    /// The frontier we put in a `have` request. With sharing off we do not
    /// even reveal how many records of our own we hold.
    pub(super) fn frontier_to_reveal(&self) -> Frontier {
        let mut f = self.summary.frontier.clone();
        if !self.sh.sharing() {
            f.remove(&self.sh.peer_id);
        }
        f
    }

    /// Is everything `announced` shows we lack already being fetched by a
    /// running pull from another peer? (Then pulling it again from this
    /// peer would only duplicate the transfer; if that pull fails, the next
    /// announcement brings the ranges back.)
    pub(super) fn covered_by_running_pulls(
        &self,
        peer: PeerId,
        announced: &[FrontierEntry],
    ) -> bool {
        sync::missing_ranges(&self.summary.frontier, announced)
            .iter()
            .all(|r| {
                self.x
                    .pull_targets
                    .iter()
                    .any(|(p, t)| *p != peer && t.get(&r.origin).is_some_and(|s| *s >= r.to_seq))
            })
    }

    pub(super) fn start_pull(&mut self, peer: PeerId, mode: Pull) {
        if peer == self.sh.peer_id || self.x.rep.is_denied(&peer) {
            return;
        }
        self.x.new_peers.remove(&peer);
        if let Pull::Ranges(target) = &mode {
            if self.x.pull_targets.contains_key(&peer)
                || self.x.pull_targets.len() < MAX_TRACKED_PULL_TARGETS
            {
                let t = self.x.pull_targets.entry(peer).or_default();
                for e in target {
                    let s = t.entry(e.origin).or_insert(0);
                    *s = (*s).max(e.seq);
                }
            } // else bounded: an untracked pull only loses the dedup
        }
        if let Some(s) = self.x.pulls.get_mut(&peer) {
            s.again = true;
            return;
        }
        self.x.pulls.insert(
            peer,
            PullSession {
                mode,
                page: 0,
                again: false,
            },
        );
        self.next_page(peer);
    }

    fn page_size(&self) -> usize {
        self.sh
            .cfg
            .limits
            .max_patterns_per_response
            .clamp(1, MAX_RECORDS_PER_RESPONSE)
    }

    fn next_page(&mut self, peer: PeerId) {
        let page = self.page_size();
        let Some(session) = self.x.pulls.get(&peer) else {
            return;
        };
        let request = match &session.mode {
            Pull::Ranges(target) => {
                let missing = sync::missing_ranges(&self.summary.frontier, target);
                let ranges = sync::limit_ranges(&missing, page as u64);
                if ranges.is_empty() {
                    self.end_session(peer, true);
                    return;
                }
                PatternRequest {
                    v: WIRE_VERSION,
                    ranges,
                    have: None,
                    filters: None,
                    cursor: None,
                    max_count: page as u32,
                    promote: None,
                }
            }
            Pull::Have => PatternRequest {
                v: WIRE_VERSION,
                ranges: Vec::new(),
                have: Some(sync::frontier_entries(&self.frontier_to_reveal()).0),
                filters: None,
                cursor: None,
                max_count: page as u32,
                promote: None,
            },
        };
        // Pace pulls by the per-peer record budget: wait while the budget
        // is in debt, charge what actually arrived.
        let wait = self.x.pull_rate.wait_for(peer, 1.0, now_secs());
        if wait > 0.0 {
            self.after(Duration::from_secs_f64(wait.min(30.0)), move |actor| {
                if actor.x.pulls.contains_key(&peer) {
                    actor.send_pull(peer, request);
                }
            });
        } else {
            self.send_pull(peer, request);
        }
    }

    fn send_pull(&mut self, peer: PeerId, request: PatternRequest) {
        let id = self.net.request(peer, request);
        self.sent.insert(id, Sent::Pull(peer));
    }

    pub(super) fn on_pull_response(
        &mut self,
        peer: PeerId,
        result: Result<PatternResponse, NetError>,
    ) {
        let mut resp = match result {
            Ok(r) if r.error.is_none() && r.v == WIRE_VERSION => r,
            Ok(r) => {
                tracing::debug!(%peer, error = ?r.error, "peer refused our request");
                return self.end_session(peer, false);
            }
            Err(e) => {
                tracing::debug!(%peer, error = %e, "pull failed");
                return self.end_session(peer, false);
            }
        };
        let Some(session) = self.x.pulls.get(&peer) else {
            return;
        };
        let first = session.page == 0;
        let have = matches!(session.mode, Pull::Have);
        if let Some(rec) = resp.insight.take().filter(|_| first) {
            // The peer's own latest insight (inheritance from a parent).
            self.accept_peer_insight(peer, rec, InsightFrom::Origin, |_, _| {});
        }
        let more = resp.more;
        self.x
            .pull_rate
            .spend(peer, resp.records.len() as f64, now_secs());
        self.ingest(peer, resp.records, move |actor, report: IngestReport| {
            if !report.progressed() {
                return actor.end_session(peer, !more);
            }
            if !more && have {
                return actor.end_session(peer, true);
            }
            let Some(s) = actor.x.pulls.get_mut(&peer) else {
                return;
            };
            s.page += 1;
            if s.page >= MAX_PAGES_PER_SESSION {
                return actor.end_session(peer, false);
            }
            actor.next_page(peer);
        });
    }

    /// A session ended (`completed`: the peer has nothing more we lack).
    /// Run again when something was announced meanwhile.
    fn end_session(&mut self, peer: PeerId, completed: bool) {
        if completed {
            // We now hold everything this peer holds of our own records.
            let _ = self.sh.own_seq_safe.send_replace(true);
        }
        let again = self.x.pulls.get(&peer).is_some_and(|s| s.again);
        if !again {
            self.x.pulls.remove(&peer);
            self.x.pull_targets.remove(&peer);
            return;
        }
        // Follow up on what the peer announced meanwhile (exact ranges), or
        // ask with our frontier when it announced nothing.
        let mode = match self.x.pull_targets.get(&peer) {
            Some(t) => Pull::Ranges(
                t.iter()
                    .map(|(o, s)| FrontierEntry {
                        origin: *o,
                        seq: *s,
                    })
                    .collect(),
            ),
            None => Pull::Have,
        };
        if let Some(s) = self.x.pulls.get_mut(&peer) {
            s.again = false;
            s.page = 0;
            s.mode = mode;
        }
        self.next_page(peer);
    }
}
