//! Serving: admission of inbound requests (the core) and the execution of
//! a [`ServePlan`] against a store (the shell, through [`RecordSource`]).

use libp2p_identity::PeerId;
use metamesh_protocol::codec;
use metamesh_protocol::record::{MAX_BODY_BYTES, MAX_RECORD_BYTES};
use metamesh_protocol::reputation::ReputationEvent;
use metamesh_protocol::sync::{SyncRequest, SyncResponse};
use metamesh_protocol::wire::{
    Cursor, RequestFilters, SeqRange, WireError, MAX_FRONTIER_ENTRIES, MAX_RANGES,
    MAX_RECORDS_PER_RESPONSE, MAX_RESPONSE_BYTES, WIRE_VERSION,
};
use metamesh_protocol::SignedRecord;
use serde::Deserialize;

use crate::book::TokenBucket;
use crate::io::*;
use crate::state::{State, Via};

/// Room left in a response for everything but the records.
const RESPONSE_SLACK: u64 = 64 * 1024;

/// What a store must offer to execute a [`ServePlan`].
pub trait RecordSource {
    type Error: std::fmt::Display;
    /// Records of `origin` with `from ..= to`, in seq order, at most
    /// `max_count` of them and `max_bytes` of record bytes (count records
    /// returned, never the span: a range may cross an epoch gap).
    fn records_in_range(
        &self,
        origin: PeerId,
        from: u64,
        to: u64,
        max_count: usize,
        max_bytes: usize,
    ) -> Result<Vec<SignedRecord>, Self::Error>;
    /// A filtered page: records and the cursor to resume after (None: done).
    fn query(
        &self,
        filters: &RequestFilters,
        cursor: Option<Cursor>,
        limit: usize,
    ) -> Result<(Vec<SignedRecord>, Option<Cursor>), Self::Error>;
}

/// Wire size of a record as counted against byte budgets.
pub fn record_bytes(r: &SignedRecord) -> usize {
    r.body.len() + r.signer.len() + r.signature.len()
}

#[derive(Deserialize)]
struct OriginSeq {
    origin: PeerId,
    seq: u64,
}

/// (origin, seq) of a record's body, without the rest of the checks.
pub fn origin_seq(r: &SignedRecord) -> Option<(PeerId, u64)> {
    codec::from_cbor::<OriginSeq>(&r.body, MAX_BODY_BYTES)
        .ok()
        .map(|b| (b.origin, b.seq))
}

/// Build the response a plan asks for. A store error becomes a refusal that
/// names it (the core is told nothing was served).
pub fn execute<S: RecordSource>(plan: &ServePlan, store: &S) -> SyncResponse {
    match try_execute(plan, store) {
        Ok(r) => r,
        Err(e) => SyncResponse::refusal(format!("store error: {e}")),
    }
}

fn try_execute<S: RecordSource>(plan: &ServePlan, store: &S) -> Result<SyncResponse, S::Error> {
    let max_count = plan.max_count as usize;
    let max_bytes = plan.max_bytes as usize;
    let mut records: Vec<SignedRecord> = Vec::new();
    let mut bytes = 0usize;
    let mut more = false;
    for r in &plan.ranges {
        if records.len() >= max_count || bytes + MAX_RECORD_BYTES > max_bytes {
            more = true;
            break;
        }
        let got = store.records_in_range(
            r.origin,
            r.from_seq,
            r.to_seq,
            max_count - records.len(),
            max_bytes - bytes,
        )?;
        bytes += got.iter().map(record_bytes).sum::<usize>();
        records.extend(got);
    }
    if records.len() >= max_count {
        more = true;
    }
    let mut next_cursor = None;
    if let Some(filters) = &plan.filters {
        let left = max_count.saturating_sub(records.len());
        if left > 0 {
            let (found, cursor) = store.query(filters, plan.cursor, left)?;
            records.extend(found);
            next_cursor = cursor;
            more |= next_cursor.is_some();
        } else {
            more = true;
        }
    }
    Ok(SyncResponse {
        v: WIRE_VERSION,
        records,
        more,
        next_cursor,
        error: None,
        insight: plan.insight.clone(),
        recon: plan.recon.clone(),
    })
}

impl State {
    fn refuse(&mut self, id: InboundId, why: String) {
        self.counters.requests_refused += 1;
        self.out.push(Output::Respond {
            id,
            response: SyncResponse::refusal(why),
        });
    }

    pub(crate) fn on_request(
        &mut self,
        peer: PeerId,
        id: InboundId,
        request: Result<SyncRequest, WireError>,
        now: f64,
    ) {
        let req = match request {
            Ok(r) => r,
            Err(WireError::UnknownVersion(v)) => {
                return self.refuse(id, format!("unsupported request version {v}"))
            }
            Err(e) => {
                self.charge(peer, ReputationEvent::from(&e), 1, now);
                return self.refuse(id, format!("bad request: {e}"));
            }
        };
        if let Err(e) = req.validate() {
            self.charge(peer, ReputationEvent::from(&e), 1, now);
            return self.refuse(id, format!("bad request: {e}"));
        }
        if !self.cfg.sharing {
            return self.refuse(id, "sharing is disabled on this node".into());
        }
        if self.standing(&peer, now).refused {
            return self.refuse(id, "denied".into());
        }
        let rate = self.cfg.requests_per_sec;
        let b = self.request_rate.entry_or_insert_with(
            peer,
            || TokenBucket::full(rate * 4.0, now),
            |b| b.tokens as i64,
        );
        if !b.try_take(1.0, rate, rate * 4.0, now) {
            self.charge(peer, ReputationEvent::RateLimitExceeded, 1, now);
            return self.refuse(id, "rate limited: too many requests".into());
        }
        if let Some(rec) = req.promote.clone() {
            self.ingest(vec![rec], Via::Promotion { peer }, now);
        }
        let recon = req.recon.as_ref().map(|q| self.tree.answer(q));
        let mut ranges: Vec<SeqRange> = req.ranges.clone();
        if let Some(have) = &req.have {
            ranges.extend(self.ranges_for_have(have));
        }
        ranges.truncate(MAX_RANGES * 2);
        // Our latest insight rides on the first answer of an exchange (a
        // `have`, or the first round of a reconciliation): a child in
        // another mesh inherits its parent's insight this way.
        let first_round = req.recon.as_ref().is_some_and(|q| {
            !q.buckets.is_empty() && q.buckets.iter().all(|b| b.bucket.depth == 1)
        });
        let insight = if req.have.is_some() || first_round {
            self.own_insight.as_ref().map(|(r, _)| r.clone())
        } else {
            None
        };
        if ranges.is_empty() && req.filters.is_none() {
            self.counters.requests_served += 1;
            return self.out.push(Output::Respond {
                id,
                response: SyncResponse {
                    v: WIRE_VERSION,
                    records: Vec::new(),
                    more: false,
                    next_cursor: None,
                    error: None,
                    insight,
                    recon,
                },
            });
        }
        let bps = self.cfg.serve_bytes_per_sec;
        let sb = self.serve_bytes.entry_or_insert_with(
            peer,
            || TokenBucket::full(bps * 4.0, now),
            |b| b.tokens as i64,
        );
        let wait = sb.wait_for(MAX_RECORD_BYTES as f64, bps, bps * 4.0, now);
        let budget = sb.tokens.max(0.0) as u64;
        if wait > 0.0 {
            self.charge(peer, ReputationEvent::RateLimitExceeded, 1, now);
            return self.refuse(
                id,
                format!("rate limited: byte budget; retry in {wait:.1} s"),
            );
        }
        let max_bytes = budget
            .min(self.cfg.page_bytes)
            .min(MAX_RESPONSE_BYTES as u64 - RESPONSE_SLACK);
        let max_count = req.max_count.clamp(1, MAX_RECORDS_PER_RESPONSE as u32);
        self.counters.requests_served += 1;
        self.out.push(Output::Serve {
            peer,
            id,
            plan: ServePlan {
                ranges,
                filters: req.filters,
                cursor: req.cursor,
                max_count,
                max_bytes,
                insight,
                recon,
            },
        });
    }

    /// Ranges a legacy `have` lacks. Origins missing from a complete `have`
    /// are absent (from seq 1); from a `have` at the entry bound (an older
    /// node cut it) they are unknown and not sent.
    fn ranges_for_have(&self, have: &[metamesh_protocol::wire::FrontierEntry]) -> Vec<SeqRange> {
        let theirs: std::collections::BTreeMap<PeerId, u64> =
            have.iter().map(|e| (e.origin, e.seq)).collect();
        let complete = have.len() < MAX_FRONTIER_ENTRIES;
        let mut out = Vec::new();
        for (o, mine) in self.tree.frontier() {
            if *o == self.me && !self.cfg.sharing {
                continue;
            }
            let t = match theirs.get(o) {
                Some(t) => *t,
                None if complete => 0,
                None => continue,
            };
            if *mine > t {
                out.push(SeqRange {
                    origin: *o,
                    from_seq: t + 1,
                    to_seq: *mine,
                });
            }
            if out.len() >= MAX_RANGES {
                break;
            }
        }
        out
    }

    pub(crate) fn on_served(&mut self, peer: PeerId, records: u32, bytes: u64, now: f64) {
        self.counters.records_served += u64::from(records);
        self.counters.bytes_served += bytes;
        let bps = self.cfg.serve_bytes_per_sec;
        if let Some(b) = self.serve_bytes.get_mut(&peer) {
            b.spend(bytes as f64, bps, bps * 4.0, now);
        }
    }
}
