//! Gossip out: `pattern_announcement`s (periodically, and soon after our own
//! new patterns — not after every pull), our signed insight record
//! (`insight_broadcast`, rate-limited) and its promotion to a parent.

use std::time::{Duration, Instant};

use libp2p::PeerId;
use metamesh_protocol::posterior::Prior;
use metamesh_protocol::record::BODY_VERSION;
use metamesh_protocol::sync;
use metamesh_protocol::wire::{
    GossipMessage, InsightBroadcast, PatternAnnouncement, PatternRequest, PatternResponse,
    MAX_GOSSIP_BYTES, MAX_RECORDS_PER_RESPONSE, WIRE_VERSION,
};
use metamesh_protocol::{insights, InsightBody, SignedRecord};

use super::gossip::insight_confidence;
use super::run::Actor;
use super::state::{Pull, Sent};
use super::{now_secs, Shared};
use crate::network::{NetError, TopicKind};

/// An unchanged announcement is re-sent after this long (just past
/// gossipsub's duplicate-cache window).
const REANNOUNCE_UNCHANGED: Duration = Duration::from_secs(65);

/// How a job gets our own insight record.
pub(super) enum InsightPlan {
    None,
    Cached(SignedRecord),
    /// Our statistics changed: sign a new record with this seq.
    Sign(u64),
}

impl InsightPlan {
    /// Blocking. The record to use, and the freshly signed one to adopt.
    pub(super) fn execute(
        self,
        sh: &Shared,
        now: f64,
    ) -> (Option<SignedRecord>, Option<(SignedRecord, InsightBody)>) {
        match self {
            InsightPlan::None => (None, None),
            InsightPlan::Cached(r) => (Some(r), None),
            InsightPlan::Sign(seq) => {
                let fresh = sign_own_insight(sh, seq, now);
                (fresh.as_ref().map(|(r, _)| r.clone()), fresh)
            }
        }
    }
}

/// Blocking: compute, sign and store our insight record with `seq`.
fn sign_own_insight(sh: &Shared, seq: u64, now: f64) -> Option<(SignedRecord, InsightBody)> {
    let own = sh.store.stats_of(&sh.peer_id);
    if own.total() == 0 {
        return None;
    }
    let modes = sh.store.origin_mode_stats(&sh.peer_id);
    let body = InsightBody {
        v: BODY_VERSION,
        origin: sh.peer_id,
        seq,
        computed_at: now,
        stats: own,
        insights: insights::compute(&own, Some(&modes), &Prior::default(), now),
    };
    let record = SignedRecord::sign_insight(&body, &sh.key);
    if let Err(e) = sh.store.put_latest_insight(&record, &body) {
        tracing::warn!(error = %e, "storing our insight record");
    }
    Some((record, body))
}

impl Actor {
    /// Our insight record: the cached one while our statistics are
    /// unchanged, else a plan to sign one (seq monotonic: max(previous + 1,
    /// unix ms)). `None` while we have no patterns of our own.
    pub(super) fn own_insight_plan(&mut self, now: f64) -> InsightPlan {
        if self.summary.own_table.total() == 0 {
            return InsightPlan::None;
        }
        if let Some((rec, body)) = &self.x.own_insight {
            if body.stats == self.summary.own_table {
                return InsightPlan::Cached(rec.clone());
            }
        }
        let seq = self.x.insight_seq.max((now * 1000.0) as u64) + 1;
        self.x.insight_seq = seq;
        InsightPlan::Sign(seq)
    }

    pub(super) fn adopt_own_insight(&mut self, fresh: (SignedRecord, InsightBody)) {
        if self
            .x
            .own_insight
            .as_ref()
            .is_none_or(|(_, b)| b.seq < fresh.1.seq)
        {
            self.x.own_insight = Some(fresh);
        }
    }

    /// Ask for an announcement soon (debounced).
    pub(super) fn request_announce(&mut self) {
        if !self.sh.sharing() || self.x.announce_requested {
            return;
        }
        self.x.announce_requested = true;
        let debounce = Duration::from_millis(self.sh.cfg.sharing.announce_debounce_ms);
        self.after(debounce, |actor| {
            actor.x.announce_requested = false;
            actor.announce();
        });
    }

    pub(super) fn announce_tick(&mut self, now: f64) {
        if !self.sh.sharing() {
            return;
        }
        let interval = Duration::from_secs(self.sh.cfg.sharing.announce_interval_secs.max(1));
        if self.x.last_announce.is_none_or(|t| t.elapsed() >= interval) {
            self.announce();
        }
        self.maybe_broadcast_insights(now);
        self.maybe_promote(now);
    }

    /// Publish our frontier (no-op when sharing is off).
    pub(super) fn announce(&mut self) {
        if !self.sh.sharing() {
            return;
        }
        let frontier = &self.summary.frontier;
        let (entries, truncated) = sync::frontier_entries(frontier);
        let msg = GossipMessage::PatternAnnouncement(PatternAnnouncement {
            v: WIRE_VERSION,
            from: self.sh.peer_id,
            pattern_count: self.summary.pattern_count,
            patterns_hash: sync::frontier_digest(frontier),
            depth_distribution: self.summary.depth_distribution.clone(),
            frontier: entries,
            frontier_truncated: truncated,
        });
        let data = msg.encode();
        if data.len() > MAX_GOSSIP_BYTES {
            tracing::warn!(bytes = data.len(), "announcement too large");
            return;
        }
        // Gossipsub drops a byte-identical message inside its duplicate
        // window (content-hash ids): do not re-send an unchanged frontier
        // until that window has passed.
        let digest = *blake3::hash(&data).as_bytes();
        let unchanged = self
            .x
            .last_announced
            .as_ref()
            .is_some_and(|(d, at)| *d == digest && at.elapsed() < REANNOUNCE_UNCHANGED);
        self.x.last_announce = Some(Instant::now());
        if unchanged {
            return;
        }
        let len = data.len() as u64;
        match self.net.publish(TopicKind::Announce, data) {
            Ok(()) => {
                self.x.last_announced = Some((digest, Instant::now()));
                self.sh.metrics.bytes_sent(len);
            }
            // Duplicate or nobody subscribed yet: fine.
            Err(e) => tracing::trace!(error = %e, "announcement not published"),
        }
    }

    fn maybe_broadcast_insights(&mut self, now: f64) {
        let own_count = self.summary.own_table.total();
        let min = self.sh.cfg.sharing.insight_min_interval_secs as f64;
        if own_count == 0
            || own_count == self.x.last_insight_own_count
            || now - self.x.last_insight_at < min
            || self.x.signing_insight
        {
            return;
        }
        let plan = self.own_insight_plan(now);
        self.x.signing_insight = true;
        self.job(
            move |sh: &Shared| plan.execute(sh, now),
            move |actor, r| {
                actor.x.signing_insight = false;
                let Ok((record, fresh)) = r else { return };
                if let Some(f) = fresh {
                    actor.adopt_own_insight(f);
                }
                let Some(record) = record else { return };
                let data = GossipMessage::InsightBroadcast(InsightBroadcast {
                    v: WIRE_VERSION,
                    record,
                })
                .encode();
                if data.len() > MAX_GOSSIP_BYTES {
                    tracing::warn!(bytes = data.len(), "insight broadcast too large");
                    return;
                }
                let len = data.len() as u64;
                match actor.net.publish(TopicKind::Insights, data) {
                    Ok(()) => {
                        actor.sh.metrics.bytes_sent(len);
                        actor.x.last_insight_at = now;
                        actor.x.last_insight_own_count = own_count;
                    }
                    Err(e) => tracing::trace!(error = %e, "insight broadcast not published"),
                }
            },
        );
    }

    /// Child side: promote our signed insight record to the parent once our
    /// own `optimal_quality_depth` confidence reaches
    /// `promotion.min_confidence`, and again when the record changed, at
    /// most once per `promotion.min_interval_secs`. The request carries our
    /// frontier too, so the answer brings what the parent has that we lack.
    fn maybe_promote(&mut self, now: f64) {
        let Some((parent, _)) = self.sh.parent.clone() else {
            return;
        };
        let min_interval = self.sh.cfg.promotion.min_interval_secs as f64;
        let min_confidence = self.sh.cfg.promotion.min_confidence;
        if self.x.promoting
            || !self.x.connected.contains(&parent)
            || self
                .x
                .last_promotion
                .is_some_and(|(_, at)| now - at < min_interval)
        {
            return;
        }
        // Promote the cached record (signed by the insight broadcast or a
        // served request); a stale one is re-signed first.
        let Some((record, body)) = self.x.own_insight.clone() else {
            if !self.x.signing_insight && self.summary.own_table.total() > 0 {
                self.refresh_own_insight(now);
            }
            return;
        };
        if body.stats != self.summary.own_table && !self.x.signing_insight {
            self.refresh_own_insight(now);
            return;
        }
        if insight_confidence(&body) < min_confidence
            || self
                .x
                .last_promotion
                .is_some_and(|(seq, _)| seq == body.seq)
        {
            return;
        }
        self.x.promoting = true;
        let page = self
            .sh
            .cfg
            .limits
            .max_patterns_per_response
            .clamp(1, MAX_RECORDS_PER_RESPONSE);
        let request = PatternRequest {
            v: WIRE_VERSION,
            ranges: Vec::new(),
            have: Some(sync::frontier_entries(&self.frontier_to_reveal()).0),
            filters: None,
            cursor: None,
            max_count: page as u32,
            promote: Some(record),
        };
        let id = self.net.request(parent, request);
        self.sent.insert(id, Sent::Promotion(parent, body.seq));
    }

    fn refresh_own_insight(&mut self, now: f64) {
        let plan = self.own_insight_plan(now);
        self.x.signing_insight = true;
        self.job(
            move |sh: &Shared| plan.execute(sh, now),
            |actor, r| {
                actor.x.signing_insight = false;
                if let Ok((_, Some(fresh))) = r {
                    actor.adopt_own_insight(fresh);
                }
            },
        );
    }

    pub(super) fn on_promotion_response(
        &mut self,
        parent: PeerId,
        seq: u64,
        result: Result<PatternResponse, NetError>,
    ) {
        let mut delivered = false;
        match result {
            Ok(resp) if resp.error.is_none() && resp.v == WIRE_VERSION => {
                delivered = true;
                self.sh.metrics.promotion_sent();
                let more = resp.more;
                self.ingest(parent, resp.records, move |actor, _| {
                    if more {
                        actor.start_pull(parent, Pull::Have);
                    }
                });
            }
            Ok(resp) => tracing::debug!(error = ?resp.error, "parent refused our promotion"),
            Err(e) => tracing::debug!(error = %e, "promotion to the parent failed"),
        }
        self.x.promoting = false;
        let prev = self.x.last_promotion.map_or(0, |(s, _)| s);
        self.x.last_promotion = Some((if delivered { seq } else { prev }, now_secs()));
    }
}
