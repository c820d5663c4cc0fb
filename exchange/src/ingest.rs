//! The validation pipeline for received records (DESIGN §4), gossip or
//! pulled: size → decode → schema → signature (a [`Output::Verify`]) →
//! policy (deferral, quota, acceptance) → store ([`Output::Persist`]).
//!
//! Who pays: bytes that do not decode and signatures that do not verify are
//! the *sender's* (an honest relay checks before forwarding); a body that
//! verifies but is invalid, equivocation and quota excess are the
//! *origin's*; a relay of valid records is never charged for them.

use libp2p_identity::PeerId;
use metamesh_protocol::codec;
use metamesh_protocol::record::{ContentHash, RecordError, RecordKind, MAX_BODY_BYTES};
use metamesh_protocol::reputation::ReputationEvent;
use metamesh_protocol::wire::{GossipMessage, WireError};
use metamesh_protocol::{Depth, InsightBody, PatternBody, SignedRecord};

use crate::book::TokenBucket;
use crate::compat;
use crate::io::*;
use crate::state::{State, Via, WriteJob};

/// A record waiting for its signature check.
#[derive(Debug, Clone)]
pub(crate) struct Candidate {
    pub rec: SignedRecord,
    pub claimed: PeerId,
    pub kind: CandKind,
}

#[derive(Debug, Clone)]
pub(crate) enum CandKind {
    Pattern {
        body: PatternBody,
        prev: u64,
    },
    Insight {
        body: InsightBody,
    },
    /// Decoded, but the body is invalid: charged to the signer if the
    /// signature verifies, to the sender if it does not.
    Invalid(RecordError),
}

/// A record sent to the store, to act on its outcome.
#[derive(Debug, Clone)]
pub(crate) struct Written {
    pub origin: PeerId,
    pub seq: u64,
    pub hash: ContentHash,
    pub depth: Depth,
}

/// The stateless checks before verification. `Err` is charged to the sender.
pub(crate) fn precheck(rec: SignedRecord, now: f64) -> Result<Candidate, RecordError> {
    if rec.body.len() > MAX_BODY_BYTES {
        return Err(RecordError::TooLarge(rec.body.len()));
    }
    let claimed = rec.signer_peer()?;
    let kind = match rec.kind {
        RecordKind::Pattern => match rec.decode_pattern_unverified(claimed, now) {
            Ok(body) => {
                let prev = compat::prev_of(body.seq, compat::record_prev(&rec));
                if prev >= body.seq {
                    CandKind::Invalid(RecordError::BadSeq)
                } else {
                    CandKind::Pattern { body, prev }
                }
            }
            Err(RecordError::Decode(e)) => return Err(RecordError::Decode(e)),
            Err(e) => CandKind::Invalid(e),
        },
        RecordKind::Insight => match decode_insight(&rec, &claimed) {
            Ok(body) => CandKind::Insight { body },
            Err(RecordError::Decode(e)) => return Err(RecordError::Decode(e)),
            Err(e) => CandKind::Invalid(e),
        },
    };
    Ok(Candidate { rec, claimed, kind })
}

fn decode_insight(rec: &SignedRecord, claimed: &PeerId) -> Result<InsightBody, RecordError> {
    let body: InsightBody = codec::from_cbor(&rec.body, MAX_BODY_BYTES)?;
    if body.v != metamesh_protocol::record::BODY_VERSION {
        return Err(RecordError::UnsupportedVersion(body.v));
    }
    if body.origin != *claimed {
        return Err(RecordError::OriginMismatch);
    }
    if body.seq == 0 {
        return Err(RecordError::BadSeq);
    }
    if !body.computed_at.is_finite() {
        return Err(metamesh_protocol::SchemaError::new("computed_at", "must be finite").into());
    }
    body.stats.validate()?;
    body.insights.validate()?;
    Ok(body)
}

/// The event a rejection charges (origin_mismatch costs schema_invalid, −2).
pub(crate) fn event_of(e: &RecordError) -> ReputationEvent {
    ReputationEvent::from(e)
}

impl State {
    pub(crate) fn validate(&mut self, id: MsgId, acceptance: Acceptance) {
        self.out.push(Output::Validate { id, acceptance });
    }

    fn reject_count(&mut self, reason: &'static str) {
        *self.counters.records_rejected.entry(reason).or_insert(0) += 1;
    }

    pub(crate) fn on_gossip(&mut self, g: Gossip, now: f64) {
        let msg = match GossipMessage::decode(&g.data) {
            Ok(m) => m,
            Err(WireError::UnknownVersion(_)) => return self.validate(g.id, Acceptance::Ignore),
            Err(e) => {
                self.charge(g.source, ReputationEvent::from(&e), 1, now);
                self.emit(Event::PatternRejected {
                    peer: Some(g.source),
                    reason: e.reason(),
                });
                return self.validate(g.id, Acceptance::Reject);
            }
        };
        match (g.topic, msg) {
            (Topic::Records, GossipMessage::RecordPush(p)) => {
                self.counters.gossip_records_received += 1;
                self.ingest(
                    vec![p.record],
                    Via::Gossip {
                        msg: g.id,
                        source: g.source,
                    },
                    now,
                );
            }
            (Topic::Insights, GossipMessage::InsightBroadcast(b)) => self.ingest(
                vec![b.record],
                Via::Gossip {
                    msg: g.id,
                    source: g.source,
                },
                now,
            ),
            (Topic::Announce, GossipMessage::DigestAnnouncement(a)) => {
                let root = a.root;
                self.on_announcement(g.id, g.author, g.source, a.from, Some(root), now)
            }
            (Topic::Announce, GossipMessage::PatternAnnouncement(a)) => {
                self.on_announcement(g.id, g.author, g.source, a.from, None, now)
            }
            _ => self.validate(g.id, Acceptance::Ignore),
        }
    }

    /// An announcement is bound to its author: with an authenticated author
    /// it must name it (else the author lied and pays); without one, only a
    /// direct peer announcing for itself counts. Either way it is not
    /// forwarded (Ignore): announcements are for direct peers.
    fn on_announcement(
        &mut self,
        id: MsgId,
        author: Option<PeerId>,
        source: PeerId,
        from: PeerId,
        root: Option<u64>,
        now: f64,
    ) {
        match author {
            Some(a) if a != from => {
                self.charge(a, ReputationEvent::SchemaInvalid, 1, now);
                return self.validate(id, Acceptance::Reject);
            }
            None if from != source => return self.validate(id, Acceptance::Ignore),
            _ => {}
        }
        self.validate(id, Acceptance::Ignore);
        if from == self.me || !self.peers.contains_key(&from) {
            return;
        }
        if root.is_some_and(|r| r == self.tree.root()) {
            return;
        }
        self.start_recon(from, now);
    }

    /// Run records through the pipeline up to verification.
    pub(crate) fn ingest(&mut self, records: Vec<SignedRecord>, via: Via, now: f64) {
        let sender = match &via {
            Via::Gossip { source, .. } => *source,
            Via::Pull { peer } | Via::Promotion { peer } | Via::Tree { peer, .. } => *peer,
        };
        let mut items = Vec::new();
        let mut bad = 0u64;
        let mut bad_event = ReputationEvent::DecodeError;
        for rec in records {
            match precheck(rec, now) {
                Ok(c) if matches!(via, Via::Promotion { .. }) && c.claimed != sender => {
                    // Someone else's insight passed off as a promotion.
                    let e = RecordError::OriginMismatch;
                    self.reject_count(e.reason());
                    self.charge(sender, event_of(&e), 1, now);
                    self.emit(Event::PatternRejected {
                        peer: Some(sender),
                        reason: e.reason(),
                    });
                    self.emit(Event::Promotion {
                        child: sender,
                        seq: None,
                    });
                }
                Ok(c) => {
                    // deferred or refused origins: not even verified
                    if let CandKind::Pattern { .. } = c.kind {
                        if c.claimed != self.me && self.is_deferred(&c.claimed, now) {
                            self.counters.records_deferred += 1;
                            continue;
                        }
                    }
                    items.push(c);
                }
                Err(e) => {
                    self.reject_count(e.reason());
                    bad += 1;
                    bad_event = event_of(&e);
                }
            }
        }
        if bad > 0 {
            self.charge(sender, bad_event, bad, now);
            self.emit(Event::PatternRejected {
                peer: Some(sender),
                reason: "malformed_record",
            });
            if matches!(via, Via::Promotion { .. }) {
                self.emit(Event::Promotion {
                    child: sender,
                    seq: None,
                });
            }
        }
        if let (Via::Tree { id, .. }, true) = (&via, bad > 0) {
            self.tree_verdict(*id, false, now);
        }
        if let Via::Gossip { msg, .. } = via {
            if bad > 0 {
                return self.validate(msg, Acceptance::Reject);
            }
            if items.is_empty() {
                return self.validate(msg, Acceptance::Ignore);
            }
        }
        if !items.is_empty() {
            self.start_verify(items, via, now);
        }
    }

    pub(crate) fn on_verified(
        &mut self,
        id: VerifyId,
        results: Vec<Result<PeerId, RecordError>>,
        now: f64,
    ) {
        let Some(job) = self.verifying.remove(&id) else {
            return;
        };
        let sender = match &job.via {
            Via::Gossip { source, .. } => *source,
            Via::Pull { peer } | Via::Promotion { peer } | Via::Tree { peer, .. } => *peer,
        };
        let promotion = matches!(job.via, Via::Promotion { .. });
        // The store's writes are backed up in this lane: signatures are
        // still judged (and charged), valid records are shed, not queued.
        let shed = !self.write_room(job.lane);
        let mut batch = PersistBatch::default();
        let mut written = Vec::new();
        let mut verdict = Acceptance::Ignore;
        let mut results = results.into_iter();
        for c in job.items {
            let r = results.next().unwrap_or(Err(RecordError::BadSignature));
            let signer = match r {
                Ok(s) if s == c.claimed => s,
                Ok(_) | Err(_) => {
                    let e = RecordError::BadSignature;
                    self.reject_count(e.reason());
                    self.charge(sender, event_of(&e), 1, now);
                    if promotion {
                        self.emit(Event::Promotion {
                            child: sender,
                            seq: None,
                        });
                    }
                    self.emit(Event::PatternRejected {
                        peer: Some(sender),
                        reason: e.reason(),
                    });
                    verdict = Acceptance::Reject;
                    continue;
                }
            };
            match c.kind {
                CandKind::Invalid(e) => {
                    self.reject_count(e.reason());
                    self.charge(signer, event_of(&e), 1, now);
                    self.emit(Event::PatternRejected {
                        peer: Some(signer),
                        reason: e.reason(),
                    });
                    if !matches!(e, RecordError::UnsupportedVersion(_)) {
                        verdict = Acceptance::Reject;
                    }
                }
                CandKind::Insight { .. } | CandKind::Pattern { .. } if shed => {
                    self.counters.records_shed += 1;
                }
                CandKind::Insight { body } => {
                    let seq = body.seq;
                    let v = self.accept_insight(c.rec, body, &mut batch, now);
                    if promotion && v != Acceptance::Ignore {
                        let seq = (v == Acceptance::Accept).then_some(seq);
                        self.emit(Event::Promotion { child: sender, seq });
                        if seq.is_some() {
                            // The child may be in another mesh: no
                            // announcement brings its patterns; reconcile.
                            self.schedule(now, Timer::Reconcile(sender));
                        }
                    }
                    if verdict != Acceptance::Reject {
                        verdict = v;
                    }
                }
                CandKind::Pattern { body, prev } => {
                    let v = self.admit_pattern(c.rec, body, prev, &mut batch, &mut written, now);
                    if verdict == Acceptance::Ignore {
                        verdict = v;
                    }
                }
            }
        }
        if let Via::Gossip { msg, .. } = job.via {
            self.validate(msg, verdict);
        }
        if let (Via::Tree { id, .. }, true) = (&job.via, verdict != Acceptance::Ignore) {
            self.tree_verdict(*id, verdict == Acceptance::Accept, now);
        }
        if !batch.is_empty() {
            let via = match job.via {
                Via::Pull { peer } | Via::Promotion { peer } => Some(peer),
                Via::Gossip { .. } | Via::Tree { .. } => None,
            };
            let id = WriteId(self.id());
            self.writing.insert(
                id,
                WriteJob::Records {
                    items: written,
                    via,
                    lane: job.lane,
                },
            );
            self.out.push(Output::Persist {
                id,
                batch,
                priority: job.lane,
            });
        }
    }

    /// Local policy for a verified pattern: defer (passable), decline for
    /// good, or store.
    fn admit_pattern(
        &mut self,
        rec: SignedRecord,
        body: PatternBody,
        prev: u64,
        batch: &mut PersistBatch,
        written: &mut Vec<Written>,
        now: f64,
    ) -> Acceptance {
        let origin = body.origin;
        let hash = rec.content_hash();
        if origin != self.me {
            let st = self.standing(&origin, now);
            if st.refused {
                // The operator's denial is a standing decision: decline for
                // good (the slot advances the frontier, nothing is stored,
                // nothing is pulled again). Reputation is not: see below.
                let slot = Declined {
                    origin,
                    seq: body.seq,
                    prev,
                    hash,
                };
                self.decline_for_good(slot, "denied_origin", batch);
                return Acceptance::Ignore;
            }
            let passable = if st.hostile {
                Some("hostile_origin")
            } else if st.score < self.cfg.min_reputation_patterns {
                Some("low_origin_reputation")
            } else {
                None
            };
            if let Some(reason) = passable {
                let until = now + self.cfg.defer_secs;
                return self.defer_record(origin, body.seq, reason, until);
            }
            let rate = f64::from(self.cfg.records_per_origin_per_hour) / 3600.0;
            let burst = f64::from(self.cfg.records_per_origin_per_hour).max(1.0);
            let b = self.origin_quota.entry_or_insert_with(
                origin,
                || TokenBucket::full(burst, now),
                |b| b.tokens as i64,
            );
            if !b.try_take(1.0, rate, burst, now) {
                let wait = b.wait_for(1.0, rate, burst, now).clamp(1.0, 3600.0);
                self.charge(origin, ReputationEvent::RateLimitExceeded, 1, now);
                return self.defer_record(origin, body.seq, "origin_quota", now + wait);
            }
            if body.pattern.quality_achieved < self.cfg.min_quality {
                let slot = Declined {
                    origin,
                    seq: body.seq,
                    prev,
                    hash,
                };
                self.decline_for_good(slot, "below_min_quality", batch);
                return Acceptance::Accept;
            }
        }
        written.push(Written {
            origin,
            seq: body.seq,
            hash,
            depth: body.pattern.depth_used,
        });
        batch.records.push((rec, body));
        Acceptance::Accept
    }

    /// Decline a slot for good: not stored, but it advances the frontier
    /// (so it is never pulled again) and its hash is kept as declined.
    fn decline_for_good(&mut self, slot: Declined, reason: &'static str, batch: &mut PersistBatch) {
        self.counters.records_declined += 1;
        self.emit(Event::PatternDeclined {
            origin: slot.origin,
            seq: slot.seq,
            reason,
            passable: false,
        });
        batch.declined.push(slot);
    }

    fn defer_record(
        &mut self,
        origin: PeerId,
        seq: u64,
        reason: &'static str,
        until: f64,
    ) -> Acceptance {
        self.counters.records_deferred += 1;
        let first = !self.deferred.contains_key(&origin);
        self.defer(origin, until);
        if first {
            self.emit(Event::PatternDeclined {
                origin,
                seq,
                reason,
                passable: true,
            });
        }
        Acceptance::Ignore
    }

    /// A verified insight: newer replaces older; a second body for one seq
    /// is equivocation.
    fn accept_insight(
        &mut self,
        rec: SignedRecord,
        body: InsightBody,
        batch: &mut PersistBatch,
        now: f64,
    ) -> Acceptance {
        let origin = body.origin;
        let hash = rec.content_hash();
        if let Some((seq, h)) = self.insight_seqs.get(&origin).copied() {
            if body.seq < seq || (body.seq == seq && h == hash) {
                return Acceptance::Ignore;
            }
            if body.seq == seq {
                self.reject_count("equivocation");
                self.charge(origin, ReputationEvent::Equivocation, 1, now);
                self.emit(Event::PatternRejected {
                    peer: Some(origin),
                    reason: "insight_equivocation",
                });
                return Acceptance::Reject;
            }
        }
        if origin != self.me {
            let st = self.standing(&origin, now);
            if st.refused || st.hostile || st.score < self.cfg.min_reputation_insights {
                return Acceptance::Ignore;
            }
        }
        self.insight_seqs.insert(origin, (body.seq, hash));
        self.charge(origin, ReputationEvent::ValidInsight, 1, now);
        self.emit(Event::InsightAccepted {
            origin,
            seq: body.seq,
        });
        batch.insights.push((rec, body));
        Acceptance::Accept
    }

    /// Frontiers only grow: results of concurrent writes may come back in
    /// any order.
    pub(crate) fn apply_frontier(&mut self, updates: &[(PeerId, u64)]) {
        for (o, s) in updates {
            if self.inflight.get(o).is_some_and(|(to, _, _)| *to <= *s) {
                self.inflight.remove(o);
            }
            let cur = self.tree.get(o);
            if *s > cur && (self.tree.len() < self.cfg.max_origins || cur > 0) {
                self.tree.set(*o, *s);
            }
        }
    }

    pub(crate) fn on_persisted(
        &mut self,
        id: WriteId,
        result: Result<Persisted, String>,
        now: f64,
    ) {
        let Some(job) = self.writing.remove(&id) else {
            return;
        };
        match job {
            WriteJob::Other => {
                if let Ok(p) = result {
                    self.apply_frontier(&p.frontier);
                }
            }
            WriteJob::Submit { id, records } => self.on_submit_written(id, records, result, now),
            WriteJob::Records { items, via, .. } => {
                let Ok(p) = result else {
                    return; // nothing written: the frontier did not move, pulls find them again
                };
                self.apply_frontier(&p.frontier);
                let mut inserted = 0u64;
                for (w, o) in items.iter().zip(p.outcomes.iter()) {
                    match o {
                        WriteOutcome::Inserted => {
                            inserted += 1;
                            self.tree_have(w.hash, now);
                            self.counters.records_accepted += 1;
                            if w.origin == self.me {
                                self.own.bump(w.seq);
                            } else {
                                self.charge(w.origin, ReputationEvent::ValidPattern, 1, now);
                            }
                            self.emit(Event::PatternAccepted {
                                origin: w.origin,
                                seq: w.seq,
                                hash: w.hash,
                                depth: w.depth,
                                local: false,
                            });
                        }
                        WriteOutcome::Duplicate => self.counters.records_duplicate += 1,
                        WriteOutcome::Equivocation => {
                            self.reject_count("equivocation");
                            self.charge(w.origin, ReputationEvent::Equivocation, 1, now);
                            self.emit(Event::PatternRejected {
                                peer: Some(w.origin),
                                reason: "equivocation",
                            });
                        }
                    }
                }
                if let Some(peer) = via {
                    if inserted > 0 {
                        self.charge(peer, ReputationEvent::UsefulSyncResponse, 1, now);
                    }
                }
            }
        }
    }
}
