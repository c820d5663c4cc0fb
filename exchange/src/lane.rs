//! Priority lanes (issue 12: an honest record's latency during a flood of
//! fresh identities).
//!
//! Every signature check and store write the core asks for carries a
//! [`Priority`], decided here from the reputation book: our own work first
//! ([`Priority::Own`]), then records of *established* origins
//! ([`Priority::High`]), then everything else ([`Priority::Low`]). The shell
//! runs each lane in its own bounded queue, high before low; the core bounds
//! the low lane's work in flight tighter than the high lane's, so a flood of
//! fresh identities fills its own lane and is shed there — never the room
//! established origins and our own records need.
//!
//! Shedding loses nothing for good: a shed record is not stored, its slot
//! does not advance the frontier, and nobody is charged for it (a gossip
//! copy is `Ignore`d), so reconciliation fetches it again later.

use libp2p_identity::PeerId;

use crate::ingest::Candidate;
use crate::io::*;
use crate::state::{State, VerifyJob, Via, WriteJob};

/// Low-lane checks in flight at most, per mille of `max_pending_verify`
/// (the high lane may use all of it).
const LOW_VERIFY_SHARE: usize = 750;
/// Low-lane writes in flight at most, per mille of `max_pending_writes`.
const LOW_WRITE_SHARE: usize = 750;
/// High-lane (established origins') writes: up to this share; the rest
/// is kept for our own records.
const HIGH_WRITE_SHARE: usize = 875;

fn share(cap: usize, per_mille: usize) -> usize {
    (cap.saturating_mul(per_mille) / 1000).max(1)
}

impl State {
    /// Is `origin` established here: no proven misbehaviour, a non-negative
    /// score, and either past the newcomer limits (old enough, with enough
    /// valid records) or a peer we are connected to whose records we have
    /// accepted before? A fresh identity is neither, however many records it
    /// signs: it takes a connection slot or a day of good history to
    /// become established.
    pub fn established(&self, origin: &PeerId, now: f64) -> bool {
        let st = self.standing(origin, now);
        if st.refused || st.hostile || st.score < 0.0 {
            return false;
        }
        if !st.newcomer {
            return true;
        }
        self.peers.contains_key(origin)
            && self.book.state(origin).is_some_and(|s| s.valid_count() > 0)
    }

    /// The lane of a record signed by `origin` and delivered by `sender`
    /// (the direct peer; `None` for our own records). A sender in bad
    /// standing puts whatever it delivers in the low lane, so claiming an
    /// established origin's name buys a liar nothing.
    pub fn lane_of(&self, origin: &PeerId, sender: Option<&PeerId>, now: f64) -> Priority {
        let Some(sender) = sender else {
            return Priority::Own;
        };
        let st = self.standing(sender, now);
        if st.refused || st.hostile || st.score < 0.0 {
            return Priority::Low;
        }
        if *origin != self.me && self.established(origin, now) {
            Priority::High
        } else {
            Priority::Low
        }
    }

    /// May another check of `lane` start?
    fn verify_room(&self, lane: Priority) -> bool {
        let cap = self.verifying.cap();
        if self.verifying.len() >= cap {
            return false;
        }
        lane != Priority::Low
            || self.verifying.len() < share(cap, LOW_VERIFY_SHARE)
            || self
                .verifying
                .iter()
                .filter(|(_, j)| j.lane == Priority::Low)
                .count()
                < share(cap, LOW_VERIFY_SHARE)
    }

    /// May another write of peers' records in `lane` start? Past its share
    /// the lane's records are shed (fetched again later), so a flood backs
    /// up in its senders, not in our write queue.
    pub(crate) fn write_room(&self, lane: Priority) -> bool {
        let cap = self.writing.cap();
        let len = self.writing.len();
        match lane {
            Priority::Own => len < cap,
            Priority::High => len < share(cap, HIGH_WRITE_SHARE),
            Priority::Low => {
                let low_share = share(cap, LOW_WRITE_SHARE);
                if len >= share(cap, HIGH_WRITE_SHARE) {
                    return false;
                }
                len < low_share
                    || self
                        .writing
                        .iter()
                        .filter(|(_, j)| {
                            matches!(
                                j,
                                WriteJob::Records {
                                    lane: Priority::Low,
                                    ..
                                }
                            )
                        })
                        .count()
                        < low_share
            }
        }
    }

    /// Ask for the signature checks of `items`, one job per lane (a gossip
    /// message is one job: its verdict is one; it goes low if any of its
    /// records does). Past a lane's room the records are dropped without a
    /// penalty (pulls find them again).
    pub(crate) fn start_verify(&mut self, items: Vec<Candidate>, via: Via, now: f64) {
        let sender = match &via {
            Via::Gossip { source, .. } => *source,
            Via::Pull { peer } | Via::Promotion { peer } | Via::Tree { peer, .. } => *peer,
        };
        let mut high = Vec::new();
        let mut low = Vec::new();
        for c in items {
            match self.lane_of(&c.claimed, Some(&sender), now) {
                Priority::Low => low.push(c),
                _ => high.push(c),
            }
        }
        // A gossip message or a tree push has one verdict: one job.
        let jobs = if matches!(via, Via::Gossip { .. } | Via::Tree { .. }) {
            let lane = if low.is_empty() {
                Priority::High
            } else {
                Priority::Low
            };
            high.append(&mut low);
            if !self.verify_room(lane) {
                return match via {
                    Via::Gossip { msg, .. } => self.validate(msg, Acceptance::Ignore),
                    Via::Tree { id, .. } => self.tree_verdict(id, false, now),
                    _ => {}
                };
            }
            vec![(lane, high)]
        } else {
            vec![(Priority::High, high), (Priority::Low, low)]
        };
        for (lane, items) in jobs {
            if items.is_empty() {
                continue;
            }
            if !self.verify_room(lane) {
                continue;
            }
            let id = VerifyId(self.id());
            let records = items.iter().map(|c| c.rec.clone()).collect();
            self.verifying.insert(
                id,
                VerifyJob {
                    via: via.clone(),
                    started: now,
                    items,
                    lane,
                },
            );
            self.out.push(Output::Verify {
                id,
                records,
                priority: lane,
            });
        }
    }
}
