//! Our own records: epochs and sequence numbers, local submissions (with
//! the quota pushing back on the writer) and our insight broadcasts.
//!
//! Own-seq safety (INTERFACES.md): each process start is an epoch chosen
//! with [`next_epoch`] and made durable by the shell *before* the core
//! signs anything; own seqs are `epoch << 32 | counter`. A slot is
//! therefore never signed twice, even after a restore from an old backup,
//! and a lone node records at once. The first record of an epoch names the
//! last own seq known (`prev`), so the chain stays gap-free for the
//! frontier rule.

use libp2p_identity::PeerId;
use metamesh_protocol::record::RecordKind;
use metamesh_protocol::wire::{GossipMessage, InsightBroadcast, RecordPush, WIRE_VERSION};
use metamesh_protocol::{codec, DepthTable, InsightBody, InsightSet, Pattern, SignedRecord};
use rand::Rng;
use serde::Serialize;

use crate::book::TokenBucket;
use crate::compat;
use crate::io::*;
use crate::state::{State, WriteJob};

/// Confidence (P(best)) of an insight record's `optimal_quality_depth`.
pub fn insight_confidence(body: &InsightBody) -> f64 {
    body.insights
        .get(metamesh_protocol::insights::types::OPTIMAL_QUALITY_DEPTH)
        .map_or(0.0, |i| i.confidence)
}

/// The epoch of a new process: `max(now_unix_secs, last_epoch + 1)`.
pub fn next_epoch(now_unix_secs: f64, last_epoch: u32) -> u32 {
    let now = if now_unix_secs.is_finite() && now_unix_secs > 0.0 {
        now_unix_secs.min(f64::from(u32::MAX)) as u32
    } else {
        0
    };
    now.max(last_epoch.saturating_add(1))
}

/// Own sequence numbers.
#[derive(Debug, Clone, PartialEq)]
pub struct OwnSeq {
    pub epoch: Option<u32>,
    /// Highest own seq signed or seen.
    pub last: u64,
    /// `prev` of the next record when it must be explicit (first of an epoch).
    first_prev: Option<u64>,
}

impl OwnSeq {
    pub fn new(epoch: Option<u32>, last_own_seq: u64) -> OwnSeq {
        OwnSeq {
            epoch,
            last: last_own_seq,
            first_prev: epoch.map(|_| last_own_seq),
        }
    }

    /// The next seq to sign and its explicit `prev`, if any.
    // not an iterator: it never ends and returns (seq, prev); the name is
    // kept so the core's API stays as the node uses it
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> (u64, Option<u64>) {
        let seq = match self.epoch {
            Some(e) => {
                let base = u64::from(e) << 32;
                if self.last >= base {
                    self.last.saturating_add(1)
                } else {
                    base | 1
                }
            }
            None => self.last.saturating_add(1),
        };
        let prev = self.first_prev.take();
        self.last = seq;
        (seq, prev)
    }

    /// Own records at and after the one following `before` were not
    /// stored (a failed write): the next record names `before` as its
    /// `prev`, so the chain skips the seqs that never existed instead of
    /// waiting for them (a frontier waits at a gap forever). The seqs
    /// themselves are never signed again.
    pub fn skip_unwritten(&mut self, before: u64) {
        self.first_prev = Some(self.first_prev.map_or(before, |p| p.min(before)));
    }

    /// An own record seen elsewhere (a peer held it): never sign at or below it.
    pub fn bump(&mut self, seq: u64) {
        if seq > self.last {
            if let Some(p) = &mut self.first_prev {
                *p = (*p).max(seq);
            }
            self.last = seq;
        }
    }
}

#[derive(Serialize)]
struct OwnInsightBody<'a> {
    v: u16,
    origin: PeerId,
    seq: u64,
    computed_at: f64,
    stats: &'a DepthTable,
    insights: &'a InsightSet,
}

impl State {
    pub(crate) fn on_submit(&mut self, id: SubmitId, patterns: Vec<Pattern>, now: f64) {
        let answer = |s: &mut State, result| s.out.push(Output::Submitted { id, result });
        if patterns.len() > self.cfg.max_submit {
            let e = SubmitError::TooMany(patterns.len(), self.cfg.max_submit);
            return answer(self, Err(e));
        }
        if patterns.is_empty() {
            return answer(self, Ok(Vec::new()));
        }
        if self.writing.len() >= self.writing.cap() {
            return answer(self, Err(SubmitError::Busy(self.writing.len())));
        }
        for (index, p) in patterns.iter().enumerate() {
            if let Err(e) = p.validate(now) {
                let reason = e.to_string();
                return answer(self, Err(SubmitError::Invalid { index, reason }));
            }
        }
        // The quota peers apply to us pushes back here, before signing.
        let per_hour = self.cfg.records_per_origin_per_hour;
        let (rate, burst) = (f64::from(per_hour) / 3600.0, f64::from(per_hour).max(1.0));
        let n = patterns.len() as f64;
        let me = self.me;
        let b = self.origin_quota.entry_or_insert_with(
            me,
            || TokenBucket::full(burst, now),
            |_| i64::MAX,
        );
        if !b.try_take(n, rate, burst, now) {
            let retry_after_secs = b.wait_for(n, rate, burst, now);
            let e = SubmitError::Quota {
                allowed: per_hour,
                retry_after_secs,
            };
            return answer(self, Err(e));
        }
        let mut batch = PersistBatch::default();
        let mut records = Vec::new();
        for p in &patterns {
            let (seq, prev) = self.own.next();
            let rec = compat::sign_pattern(p, seq, prev, &self.key);
            let Ok(body) = rec.decode_pattern_unverified(me, now) else {
                continue; // cannot happen: validated above and signed by us
            };
            let hash = rec.content_hash();
            records.push((rec.clone(), SubmittedRecord { seq, hash }, p.depth_used));
            batch.records.push((rec, body));
        }
        batch.own_seq = Some(self.own.last);
        let wid = WriteId(self.id());
        self.writing.insert(wid, WriteJob::Submit { id, records });
        self.out.push(Output::Persist {
            id: wid,
            batch,
            priority: Priority::Own,
        });
    }

    /// Own records are durable: answer the writer, then push them.
    pub(crate) fn on_submit_written(
        &mut self,
        id: SubmitId,
        records: Vec<(SignedRecord, SubmittedRecord, metamesh_protocol::Depth)>,
        result: Result<Persisted, String>,
        now: f64,
    ) {
        let p = match result {
            Ok(p) => p,
            Err(e) => {
                // Nothing of it was stored: the chain goes on from before it.
                if let Some((rec, sub, _)) = records.first() {
                    let before = compat::prev_of(sub.seq, compat::record_prev(rec));
                    self.own.skip_unwritten(before);
                }
                return self.out.push(Output::Submitted {
                    id,
                    result: Err(SubmitError::Store(e)),
                });
            }
        };
        self.apply_frontier(&p.frontier);
        let mut done = Vec::new();
        for (rec, sub, depth) in records {
            self.counters.records_accepted += 1;
            self.emit(Event::PatternAccepted {
                origin: self.me,
                seq: sub.seq,
                hash: sub.hash,
                depth,
                local: true,
            });
            if self.cfg.tree_active() {
                self.tree_in(crate::tree::TreeIn::Broadcast(rec), now);
            } else if self.cfg.sharing {
                let msg = GossipMessage::RecordPush(RecordPush {
                    v: WIRE_VERSION,
                    record: rec,
                });
                self.out.push(Output::Publish {
                    topic: Topic::Records,
                    data: msg.encode(),
                });
            }
            done.push(sub);
        }
        self.out.push(Output::Submitted {
            id,
            result: Ok(done),
        });
    }

    pub(crate) fn on_own_insights(&mut self, stats: DepthTable, insights: InsightSet, now: f64) {
        self.pending_insight = Some((stats, insights));
        if self.next_insight_at.is_none() {
            // The first one waits a random part of an interval, so that
            // nodes that record together (a fleet started at once, a
            // benchmark's rounds) do not all broadcast in the same moment
            // and keep doing so every interval after.
            let wait = self.cfg.insight_interval_secs * self.rng.gen::<f64>();
            self.next_insight_at = Some(now + wait);
        }
        self.maybe_broadcast_insight(now);
    }

    /// Sign and broadcast our pending insights when due: at most every
    /// `insight_interval_secs`, each wait stretched by a random up to half
    /// of it (broadcast timers that stay in step concentrate every node's
    /// insight into the same moment; jitter keeps them apart).
    pub(crate) fn maybe_broadcast_insight(&mut self, now: f64) {
        if self.writes_backed_up()
            || self.pending_insight.is_none()
            || self.next_insight_at.is_some_and(|at| now < at)
        {
            return;
        }
        let Some((stats, insights)) = self.pending_insight.take() else {
            return;
        };
        let stretch = 1.0 + 0.5 * self.rng.gen::<f64>();
        self.next_insight_at = Some(now + self.cfg.insight_interval_secs * stretch);
        let last = self
            .insight_seqs
            .get(&self.me)
            .map(|(s, _)| *s)
            .unwrap_or(0);
        let base = self.own.epoch.map(|e| u64::from(e) << 32 | 1).unwrap_or(1);
        let seq = last.saturating_add(1).max(base);
        let body = OwnInsightBody {
            v: metamesh_protocol::record::BODY_VERSION,
            origin: self.me,
            seq,
            computed_at: now,
            stats: &stats,
            insights: &insights,
        };
        let rec = SignedRecord::sign_bytes(RecordKind::Insight, codec::to_cbor(&body), &self.key);
        let Ok(decoded) =
            codec::from_cbor::<InsightBody>(&rec.body, metamesh_protocol::record::MAX_BODY_BYTES)
        else {
            return;
        };
        self.insight_seqs.insert(self.me, (seq, rec.content_hash()));
        let promote = insight_confidence(&decoded) >= self.cfg.promote_min_confidence;
        self.own_insight = Some((rec.clone(), decoded.clone()));
        // A confident new insight goes to the parent at the next
        // reconciliation, which starts now (rate-limited per peer).
        if let Some(p) = self
            .cfg
            .parent
            .filter(|p| promote && self.peers.contains_key(p))
        {
            self.schedule(now, Timer::Reconcile(p));
        }
        let wid = WriteId(self.id());
        self.writing.insert(wid, WriteJob::Other);
        self.out.push(Output::Persist {
            id: wid,
            batch: PersistBatch {
                insights: vec![(rec.clone(), decoded)],
                ..PersistBatch::default()
            },
            priority: Priority::Own,
        });
        if self.cfg.sharing {
            let msg = GossipMessage::InsightBroadcast(InsightBroadcast {
                v: WIRE_VERSION,
                record: rec,
            });
            self.out.push(Output::Publish {
                topic: Topic::Insights,
                data: msg.encode(),
            });
        }
    }
}
