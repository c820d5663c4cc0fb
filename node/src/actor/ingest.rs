//! Pulled records through the validation pipeline (DESIGN §4): the checks
//! that need the store or the CPU (decode, batched signatures, dedup) on the
//! pool, the policy (quotas, reputation, decline) on the actor, the write on
//! the pool again.

use std::collections::{BTreeMap, HashSet};

use libp2p::PeerId;
use metamesh_protocol::reputation::ReputationEvent;
use metamesh_protocol::{ContentHash, PatternBody, SignedRecord};
use metamesh_storage::InsertOutcome;

use super::run::Actor;
use super::{now_secs, record_wire_len, Shared, StoreSummary};
use crate::events::NodeEvent;
use crate::pipeline::{self, Checked};

/// What [`Actor::ingest`] did with a batch.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct IngestReport {
    pub inserted: u64,
    pub declined: u64,
    pub duplicates: u64,
    pub rejected: u64,
    pub deferred: u64,
}

impl IngestReport {
    /// Did the batch move our frontier?
    pub fn progressed(&self) -> bool {
        self.inserted + self.declined > 0
    }
}

enum Candidate {
    Invalid {
        reason: &'static str,
        event: ReputationEvent,
    },
    Duplicate,
    /// Valid; `held`: its slot already holds a body (an equivocation
    /// candidate, kept as evidence by the store).
    Valid {
        rec: SignedRecord,
        body: PatternBody,
        hash: ContentHash,
        held: bool,
    },
}

/// Blocking: decode, verify (batched) and dedup against the store.
fn check(sh: &Shared, records: Vec<SignedRecord>, now: f64) -> Vec<Candidate> {
    let m = &sh.metrics;
    m.bytes_received(records.iter().map(record_wire_len).sum::<usize>() as u64);
    for _ in &records {
        m.pattern_received();
    }
    let mut seen = HashSet::new();
    pipeline::check_records(records, now)
        .into_iter()
        .map(|c| match c {
            Checked::Invalid { reason, event } => Candidate::Invalid { reason, event },
            Checked::Valid(rec, body) => {
                let hash = rec.content_hash();
                if !seen.insert(hash) || sh.store.contains_hash(&hash).unwrap_or(false) {
                    return Candidate::Duplicate;
                }
                let held = sh.store.has_seq(&body.origin, body.seq).unwrap_or(false);
                Candidate::Valid {
                    rec,
                    body,
                    hash,
                    held,
                }
            }
        })
        .collect()
}

struct Written {
    outcomes: Vec<InsertOutcome>,
    declined: u64,
    summary: StoreSummary,
}

/// Blocking: mark declined slots, insert the batch, keep our own seq ahead
/// of our records that came back, and read the new summary.
fn write(
    sh: &Shared,
    to_insert: &[(SignedRecord, PatternBody)],
    declined: Vec<(PeerId, u64, ContentHash)>,
) -> Result<Written, String> {
    let mut n_declined = 0;
    for (origin, seq, hash) in declined {
        if sh.store.mark_declined(origin, seq, hash).is_ok() {
            n_declined += 1;
        }
    }
    let outcomes = if to_insert.is_empty() {
        Vec::new()
    } else {
        sh.store
            .insert_batch(to_insert)
            .map_err(|e| e.to_string())?
    };
    let own_max = to_insert
        .iter()
        .zip(&outcomes)
        .filter(|((_, b), o)| b.origin == sh.peer_id && matches!(o, InsertOutcome::Inserted))
        .map(|((_, b), _)| b.seq)
        .max();
    if let Some(m) = own_max {
        // Our own records came back from a peer: never reuse those seqs.
        if let Err(e) = sh.store.bump_own_seq(m) {
            tracing::warn!(error = %e, "raising own seq");
        }
    }
    Ok(Written {
        outcomes,
        declined: n_declined,
        summary: StoreSummary::read(&sh.store, &sh.peer_id),
    })
}

impl Actor {
    /// Run records pulled from `peer` through the pipeline and store the
    /// accepted ones; `then` gets the report on the actor.
    pub(super) fn ingest(
        &mut self,
        peer: PeerId,
        records: Vec<SignedRecord>,
        then: impl FnOnce(&mut Actor, IngestReport) + Send + 'static,
    ) {
        if records.is_empty() {
            then(self, IngestReport::default());
            return;
        }
        let now = now_secs();
        self.job(
            move |sh: &Shared| check(sh, records, now),
            move |actor, r| match r {
                Ok(c) => actor.ingest_checked(peer, c, then),
                Err(e) => {
                    tracing::warn!(error = %e, "checking pulled records");
                    then(actor, IngestReport::default());
                }
            },
        );
    }

    fn ingest_checked(
        &mut self,
        peer: PeerId,
        candidates: Vec<Candidate>,
        then: impl FnOnce(&mut Actor, IngestReport) + Send + 'static,
    ) {
        let now = now_secs();
        let me = self.sh.peer_id;
        let mut report = IngestReport::default();
        let mut rejected: BTreeMap<&'static str, u64> = BTreeMap::new();
        let mut to_insert = Vec::new();
        let mut declined = Vec::new();
        for c in candidates {
            match c {
                Candidate::Invalid { reason, event } => {
                    report.rejected += 1;
                    self.sh.metrics.pattern_rejected(reason);
                    *rejected.entry(reason).or_insert(0) += 1;
                    self.x.rep.apply(peer, event, 1, now);
                }
                Candidate::Duplicate => report.duplicates += 1,
                Candidate::Valid {
                    rec, body, held, ..
                } if held => to_insert.push((rec, body)),
                Candidate::Valid {
                    rec, body, hash, ..
                } => {
                    // per-origin quota (not the sender's fault: no penalty;
                    // the slot stays open and is fetched again later)
                    if body.origin != me && !self.x.origin_quota.try_take(body.origin, 1.0, now) {
                        report.deferred += 1;
                        self.sh.metrics.pattern_rejected("origin_quota");
                        continue;
                    }
                    // local policy: declined records still advance the frontier
                    let standing = self.x.rep.standing(&body.origin, now);
                    if let Some(reason) = pipeline::decline_reason(&body, &standing, &self.sh.cfg) {
                        declined.push((body.origin, body.seq, hash));
                        self.sh.metrics.pattern_rejected(reason);
                        continue;
                    }
                    to_insert.push((rec, body));
                }
            }
        }
        for reason in rejected.into_keys() {
            self.sh.emit(NodeEvent::PatternRejected {
                peer: Some(peer.to_string()),
                reason: reason.to_string(),
            });
        }
        if to_insert.is_empty() && declined.is_empty() {
            then(self, report);
            return;
        }
        self.job(
            move |sh: &Shared| write(sh, &to_insert, declined).map(|w| (w, to_insert)),
            move |actor, r| {
                match r {
                    Ok(Ok((w, inserted))) => actor.ingest_written(peer, &mut report, w, inserted),
                    Ok(Err(e)) => tracing::warn!(error = %e, "storing pulled records"),
                    Err(e) => tracing::warn!(error = %e, "storing pulled records"),
                }
                then(actor, report);
            },
        );
    }

    fn ingest_written(
        &mut self,
        peer: PeerId,
        report: &mut IngestReport,
        w: Written,
        inserted: Vec<(SignedRecord, PatternBody)>,
    ) {
        let now = now_secs();
        let me = self.sh.peer_id;
        report.declined += w.declined;
        for ((rec, body), outcome) in inserted.iter().zip(w.outcomes) {
            match outcome {
                InsertOutcome::Inserted => {
                    report.inserted += 1;
                    self.sh.metrics.pattern_accepted();
                    if body.origin != me {
                        self.x
                            .rep
                            .apply(body.origin, ReputationEvent::ValidPattern, 1, now);
                    }
                    self.sh.emit(NodeEvent::PatternAccepted {
                        origin: body.origin.to_string(),
                        seq: body.seq,
                        hash: rec.content_hash().to_hex(),
                        depth: body.pattern.depth_used,
                        local: false,
                    });
                }
                InsertOutcome::Duplicate => report.duplicates += 1,
                InsertOutcome::Equivocation { .. } => {
                    report.rejected += 1;
                    self.sh.metrics.pattern_rejected("equivocation");
                    self.x
                        .rep
                        .apply(body.origin, ReputationEvent::Equivocation, 1, now);
                    self.sh.emit(NodeEvent::PatternRejected {
                        peer: Some(peer.to_string()),
                        reason: "equivocation".into(),
                    });
                }
            }
        }
        if report.inserted > 0 && peer != me {
            self.x
                .rep
                .apply(peer, ReputationEvent::UsefulSyncResponse, 1, now);
        }
        self.store_changed(w.summary);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ingest_report_progress() {
        assert!(!IngestReport::default().progressed());
        assert!(IngestReport {
            declined: 1,
            ..Default::default()
        }
        .progressed());
        assert!(!IngestReport {
            duplicates: 3,
            rejected: 1,
            ..Default::default()
        }
        .progressed());
    }
}
