//! Serving `pattern_request`s: admission on the actor (sharing, version,
//! bounds, denial, request rate), the answer built on the pool from the
//! store, the byte budget checked before the response leaves.

use libp2p::request_response::ResponseChannel;
use libp2p::PeerId;
use metamesh_protocol::reputation::ReputationEvent;
use metamesh_protocol::sync::{self, Frontier};
use metamesh_protocol::wire::{
    PatternRequest, PatternResponse, MAX_RECORDS_PER_RESPONSE, MAX_RESPONSE_BYTES, WIRE_VERSION,
};
use metamesh_protocol::SignedRecord;
use metamesh_storage::{Store, StoreError};

use super::announce::InsightPlan;
use super::gossip::InsightFrom;
use super::run::Actor;
use super::{now_secs, record_wire_len, Shared};
use crate::config::Config;

/// Slack kept under the wire response bound for the envelope's own fields.
const RESPONSE_SLACK: usize = 64 * 1024;

fn refusal(why: &str) -> PatternResponse {
    PatternResponse {
        v: WIRE_VERSION,
        records: Vec::new(),
        more: false,
        next_cursor: None,
        error: Some(why.to_string()),
        insight: None,
    }
}

impl Actor {
    pub(super) fn on_request(
        &mut self,
        peer: PeerId,
        mut request: PatternRequest,
        channel: ResponseChannel<PatternResponse>,
    ) {
        let now = now_secs();
        let refuse = if !self.sh.sharing() {
            Some("sharing is disabled on this node".to_string())
        } else if request.v != WIRE_VERSION {
            Some("unsupported request version".to_string())
        } else if let Err(e) = request.validate() {
            self.x.rep.apply(peer, ReputationEvent::DecodeError, 1, now);
            Some(format!("bad request: {e}"))
        } else if self.x.rep.is_denied(&peer) {
            Some("denied".to_string())
        } else if !self.x.request_rate.try_take(peer, 1.0, now) {
            self.x
                .rep
                .apply(peer, ReputationEvent::RateLimitExceeded, 1, now);
            Some("rate limited: too many requests".to_string())
        } else {
            None
        };
        if let Some(why) = refuse {
            self.net.respond(channel, refusal(&why));
            return;
        }
        if let Some(promoted) = request.promote.take() {
            self.accept_peer_insight(peer, promoted, InsightFrom::Promotion, |_, _| {});
        }
        // A peer catching up (`have`) also gets our own latest insight
        // record: how a child inherits its parent's knowledge, in any mesh.
        let plan = if request.have.is_some() {
            self.own_insight_plan(now)
        } else {
            InsightPlan::None
        };
        let cfg = self.sh.cfg.clone();
        self.job(
            move |sh: &Shared| {
                let (insight, fresh) = plan.execute(sh, now);
                answer(&sh.store, &cfg, &request, insight).map(|r| (r, fresh))
            },
            move |actor, r| {
                let response = match r {
                    Ok(Ok((resp, fresh))) => {
                        if let Some(f) = fresh {
                            actor.adopt_own_insight(f);
                        }
                        let bytes: usize = resp.records.iter().map(record_wire_len).sum();
                        if actor.x.serve_bytes.try_take(peer, bytes as f64, now_secs()) {
                            let m = &actor.sh.metrics;
                            m.request_served();
                            m.pattern_shared(resp.records.len() as u64);
                            m.bytes_sent(bytes as u64);
                            resp
                        } else {
                            refusal("rate limited: byte budget exhausted")
                        }
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "serving a request");
                        refusal("internal error")
                    }
                    Err(_) => refusal("internal error"),
                };
                actor.net.respond(channel, response);
            },
        );
    }
}

/// Build the response to a valid request (blocking: reads the store).
pub(super) fn answer(
    store: &Store,
    cfg: &Config,
    req: &PatternRequest,
    insight: Option<SignedRecord>,
) -> Result<PatternResponse, StoreError> {
    let lim = &cfg.limits;
    let cap = lim
        .max_patterns_per_response
        .clamp(1, MAX_RECORDS_PER_RESPONSE);
    let max_count = (req.max_count as usize).clamp(1, cap);
    let max_bytes = lim
        .max_response_bytes
        .min(MAX_RESPONSE_BYTES - RESPONSE_SLACK);
    let mut records: Vec<SignedRecord> = Vec::new();
    let mut bytes = 0usize;
    let mut more = false;
    let mut ranges = req.ranges.clone();
    if let Some(have) = &req.have {
        let mine: Frontier = store.frontier();
        ranges.extend(sync::ranges_to_send(&mine, have));
    }
    for r in &ranges {
        if records.len() >= max_count || bytes >= max_bytes {
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
        let full_page = records.len() + got.len() >= max_count;
        bytes += got.iter().map(record_wire_len).sum::<usize>();
        let got_any = !got.is_empty();
        records.extend(got);
        if full_page || (got_any && bytes + metamesh_protocol::record::MAX_RECORD_BYTES > max_bytes)
        {
            more = true;
        }
    }
    let mut next_cursor = None;
    if let Some(filters) = &req.filters {
        let left = max_count.saturating_sub(records.len());
        if left > 0 {
            let (found, cursor) = store.query(filters, req.cursor, left)?;
            records.extend(found.into_iter().map(|(r, _)| r));
            next_cursor = cursor;
            more |= next_cursor.is_some();
        } else {
            more = true;
        }
    }
    Ok(PatternResponse {
        v: WIRE_VERSION,
        records,
        more,
        next_cursor,
        error: None,
        insight,
    })
}
