//! Gossip in: announcements and insight broadcasts (DESIGN §3, §4).
//!
//! Gossipsub runs unsigned (see `network::behaviour`), so it names no
//! author: an announcement's `from` is believed only when the peer that
//! delivered it *is* `from` (the connection authenticated it). A forwarded
//! announcement is a hint about the forwarder, never about `from`: we pull
//! what it shows from the forwarder (after a short delay, so it has fetched
//! it), and never ask `from` on its word — announcements in someone else's
//! name cost that someone nothing (issue 12 #9).

use std::time::Duration;

use libp2p::gossipsub::{MessageAcceptance, MessageId};
use libp2p::PeerId;
use metamesh_protocol::reputation::ReputationEvent;
use metamesh_protocol::sync;
use metamesh_protocol::wire::{
    GossipMessage, InsightBroadcast, PatternAnnouncement, WireError, WIRE_VERSION,
};
use metamesh_protocol::{insights, InsightBody, RecordError, SignedRecord};

use super::run::Actor;
use super::state::Pull;
use super::{now_secs, Shared};
use crate::events::NodeEvent;
use crate::network::TopicKind;
use crate::pipeline;

/// How long a forwarded announcement waits before we pull from the forwarder.
const FORWARDED_PULL_DELAY: Duration = Duration::from_millis(150);
/// Most children whose promotions a parent remembers (for `/v1/knowledge`).
const MAX_TRACKED_CHILDREN: usize = 1024;

/// Where a peer's insight record came from (what it may claim).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum InsightFrom {
    /// Gossip: anyone may forward anyone's record.
    Gossip,
    /// Inherited in a sync response or promoted: the sender must be its origin.
    Origin,
    /// Promoted by a child with a request.
    Promotion,
}

/// Confidence (P(best)) of an insight record's `optimal_quality_depth`.
pub(crate) fn insight_confidence(body: &InsightBody) -> f64 {
    body.insights
        .get(insights::types::OPTIMAL_QUALITY_DEPTH)
        .map_or(0.0, |i| i.confidence)
}

impl Actor {
    pub(super) fn on_gossip(
        &mut self,
        source: PeerId,
        id: MessageId,
        topic: TopicKind,
        data: Vec<u8>,
    ) {
        let verdict = self.check_gossip(source, &id, topic, &data);
        if let Some(v) = verdict {
            self.net.report_validation(&id, &source, v);
        }
    }

    /// The verdict, or `None` when it is reported later (after a pool job).
    fn check_gossip(
        &mut self,
        source: PeerId,
        id: &MessageId,
        topic: TopicKind,
        data: &[u8],
    ) -> Option<MessageAcceptance> {
        if !self.sh.sharing() {
            return Some(MessageAcceptance::Ignore);
        }
        let now = now_secs();
        self.sh.metrics.bytes_received(data.len() as u64);
        if self.x.rep.is_denied(&source) {
            return Some(MessageAcceptance::Ignore);
        }
        if !self.x.gossip_rate.try_take(source, 1.0, now) {
            self.x
                .rep
                .apply(source, ReputationEvent::RateLimitExceeded, 1, now);
            self.sh.metrics.pattern_rejected("rate_limited");
            return Some(MessageAcceptance::Ignore);
        }
        // size is bounded by gossipsub's max_transmit_size; decode:
        let msg = match GossipMessage::decode(data) {
            Ok(m) => m,
            Err(WireError::UnknownVersion(_)) => return Some(MessageAcceptance::Ignore),
            Err(e) => {
                self.reject(Some(source), e.reason(), ReputationEvent::DecodeError);
                return Some(MessageAcceptance::Reject);
            }
        };
        match (topic, msg) {
            (TopicKind::Announce, GossipMessage::PatternAnnouncement(a)) => {
                Some(self.on_announcement(source, a))
            }
            (TopicKind::Insights, GossipMessage::InsightBroadcast(b)) => {
                self.on_insight_gossip(source, id.clone(), b)
            }
            _ => {
                self.reject(Some(source), "wrong_topic", ReputationEvent::DecodeError);
                Some(MessageAcceptance::Reject)
            }
        }
    }

    pub(super) fn reject(&mut self, peer: Option<PeerId>, reason: &str, event: ReputationEvent) {
        self.sh.metrics.pattern_rejected(reason);
        if let Some(p) = peer {
            self.x.rep.apply(p, event, 1, now_secs());
        }
        self.sh.emit(NodeEvent::PatternRejected {
            peer: peer.map(|p| p.to_string()),
            reason: reason.to_string(),
        });
    }

    fn on_announcement(&mut self, source: PeerId, a: PatternAnnouncement) -> MessageAcceptance {
        if a.from == self.sh.peer_id || self.x.rep.is_denied(&a.from) {
            return MessageAcceptance::Ignore;
        }
        let direct = a.from == source;
        let missing = sync::missing_ranges(&self.summary.frontier, &a.frontier);
        let differs = a.frontier_truncated
            && sync::frontier_digest(&self.summary.frontier) != a.patterns_hash;
        if direct {
            // The author itself: its frontier decides the catch-up a new
            // connection needs (digest comparison, not a full pull).
            self.x.new_peers.remove(&source);
            if !missing.is_empty() {
                if !self.covered_by_running_pulls(source, &a.frontier) {
                    self.start_pull(source, Pull::Ranges(a.frontier.clone()));
                }
            } else if differs {
                self.start_pull(source, Pull::Have);
            } else if !a.frontier_truncated {
                // We hold everything it holds, our own records included.
                let _ = self.sh.own_seq_safe.send_replace(true);
            }
        } else if !missing.is_empty() && !self.x.connected.contains(&a.from) {
            // Forwarded, about an author we cannot reach: the forwarder is
            // the one to ask, once it has fetched what it forwarded.
            let frontier = a.frontier.clone();
            self.after(FORWARDED_PULL_DELAY, move |actor| {
                if !actor.covered_by_running_pulls(source, &frontier)
                    && !sync::missing_ranges(&actor.summary.frontier, &frontier).is_empty()
                {
                    actor.start_pull(source, Pull::Ranges(frontier));
                }
            });
        }
        MessageAcceptance::Accept
    }

    fn on_insight_gossip(
        &mut self,
        source: PeerId,
        id: MessageId,
        b: InsightBroadcast,
    ) -> Option<MessageAcceptance> {
        if b.v != WIRE_VERSION {
            return Some(MessageAcceptance::Ignore);
        }
        self.accept_peer_insight(source, b.record, InsightFrom::Gossip, move |actor, v| {
            actor.net.report_validation(&id, &source, v);
        });
        None
    }

    /// Validate a peer's signed insight record on the pool (signature, kind,
    /// schema; with [`InsightFrom::Origin`] the sender must be its origin),
    /// apply the local policy (reputation) here, and keep it (pool) when
    /// newer than what we hold. `then` gets the gossip verdict.
    pub(super) fn accept_peer_insight(
        &mut self,
        source: PeerId,
        record: SignedRecord,
        from: InsightFrom,
        then: impl FnOnce(&mut Actor, MessageAcceptance) + Send + 'static,
    ) {
        let me = self.sh.peer_id;
        self.job(
            move |sh: &Shared| -> Result<(SignedRecord, InsightBody, bool), RecordError> {
                let body = record.open_insight()?;
                let newer = sh
                    .store
                    .latest_insights()
                    .iter()
                    .find(|(_, held)| held.origin == body.origin)
                    .is_none_or(|(_, held)| held.seq < body.seq);
                Ok((record, body, newer))
            },
            move |actor, r| {
                let verdict = match r {
                    Err(_) => MessageAcceptance::Ignore,
                    Ok(Err(RecordError::UnsupportedVersion(_))) => {
                        actor.promotion_refused(from);
                        MessageAcceptance::Ignore
                    }
                    Ok(Err(e)) => {
                        actor.reject(Some(source), e.reason(), pipeline::event_for(&e));
                        actor.promotion_refused(from);
                        MessageAcceptance::Reject
                    }
                    Ok(Ok((record, body, newer))) => {
                        actor.insight_opened(source, record, body, newer, from, me)
                    }
                };
                then(actor, verdict);
            },
        );
    }

    fn promotion_refused(&self, from: InsightFrom) {
        if from == InsightFrom::Promotion {
            self.sh.metrics.promotion_rejected();
        }
    }

    fn insight_opened(
        &mut self,
        source: PeerId,
        record: SignedRecord,
        body: InsightBody,
        newer: bool,
        from: InsightFrom,
        me: PeerId,
    ) -> MessageAcceptance {
        let now = now_secs();
        if from != InsightFrom::Gossip && body.origin != source {
            self.reject(
                Some(source),
                "origin_mismatch",
                ReputationEvent::SchemaInvalid,
            );
            self.promotion_refused(from);
            return MessageAcceptance::Reject;
        }
        if body.origin == me || !newer {
            return MessageAcceptance::Ignore;
        }
        let standing = self.x.rep.standing(&body.origin, now);
        if standing.refused
            || standing.hostile
            || standing.score < self.sh.cfg.acceptance.min_reputation_insights
        {
            self.promotion_refused(from);
            return MessageAcceptance::Ignore;
        }
        self.x
            .rep
            .apply(body.origin, ReputationEvent::ValidInsight, 1, now);
        let conf = insight_confidence(&body);
        let depth = body.insights.learned_preferences.optimal_quality_depth;
        self.sh.emit(NodeEvent::InsightChanged {
            scope: format!("peer:{}", body.origin),
            optimal_quality_depth: depth,
            confidence: conf,
        });
        if from == InsightFrom::Promotion {
            self.sh.metrics.promotion_received();
            if self.x.promoted_by.contains_key(&source)
                || self.x.promoted_by.len() < MAX_TRACKED_CHILDREN
            {
                self.x.promoted_by.insert(source, body.seq);
            }
            self.sh.emit(NodeEvent::InsightChanged {
                scope: format!("promoted:{source}"),
                optimal_quality_depth: depth,
                confidence: conf,
            });
            // The child may be in another mesh: no announcement would bring
            // its patterns.
            self.start_pull(source, Pull::Have);
        }
        self.x.collective_stale = true;
        self.job(
            move |sh: &Shared| sh.store.put_latest_insight(&record, &body),
            |_, r| {
                if let Ok(Err(e)) = r {
                    tracing::warn!(error = %e, "storing an insight");
                }
            },
        );
        MessageAcceptance::Accept
    }
}
