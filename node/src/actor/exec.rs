//! Executing the core's outputs: swarm calls on the actor, store work on
//! the pools (results come back to the core as inputs), events to the API
//! and metrics. Nothing here decides anything about the exchange.

use std::collections::BTreeSet;

use libp2p::gossipsub::MessageAcceptance;
use libp2p::PeerId;
use metamesh_exchange::io::{
    Acceptance, Event, Input, Output, PersistBatch, Persisted, Priority, WriteId,
};
use metamesh_exchange::serve::{execute as serve_plan, record_bytes};
use metamesh_exchange::Topic;
use metamesh_protocol::sync::SyncResponse;
use metamesh_storage::writer::Reply;
use metamesh_storage::{Batch, NotTaken, Urgency};
use tokio::sync::mpsc;

use super::pool::{Lane, PoolError};
use super::run::{Actor, Call};
use super::store_io::{self, StoreSource};
use super::Shared;
use crate::events::NodeEvent;
use crate::network::TopicKind;

/// Most children whose promotions a parent remembers (for `/v1/knowledge`).
const MAX_TRACKED_CHILDREN: usize = 1024;

fn topic_kind(t: Topic) -> TopicKind {
    match t {
        Topic::Records => TopicKind::Records,
        Topic::Announce => TopicKind::Announce,
        Topic::Insights => TopicKind::Insights,
    }
}

/// The store writer's lane for a write of `p` (own and established
/// origins' records before a flood's).
pub(super) fn urgency(p: Priority) -> Urgency {
    match p {
        Priority::Own | Priority::High => Urgency::Urgent,
        Priority::Low => Urgency::Bulk,
    }
}

/// The pool lane of a core priority (our own work has pools of its own).
pub(super) fn lane(p: Priority) -> Lane {
    match p {
        Priority::Own | Priority::High => Lane::High,
        Priority::Low => Lane::Low,
    }
}

impl Actor {
    pub(super) fn execute(&mut self, outputs: Vec<Output>) {
        for o in outputs {
            self.execute_one(o);
        }
    }

    fn execute_one(&mut self, o: Output) {
        match o {
            Output::Validate { id, acceptance } => {
                if let Some((mid, source)) = self.gossip.remove(&id.0) {
                    let a = match acceptance {
                        Acceptance::Accept => MessageAcceptance::Accept,
                        Acceptance::Reject => MessageAcceptance::Reject,
                        Acceptance::Ignore => MessageAcceptance::Ignore,
                    };
                    self.net.report_validation(&mid, &source, a);
                }
            }
            Output::Publish { topic, data } => {
                let n = data.len() as u64;
                match self.net.publish(topic_kind(topic), data) {
                    Ok(()) => self.sh.metrics.bytes_sent(n),
                    // No peer on the topic yet, or the same bytes again:
                    // reconciliation repairs what gossip misses.
                    Err(e) => tracing::debug!(error = %e, ?topic, "publish"),
                }
            }
            Output::SendRequest { peer, id, request } => {
                if request.promote.is_some() {
                    self.sh.metrics.promotion_sent();
                }
                let rid = self.net.request(peer, request);
                self.outbound.insert(rid, id);
            }
            Output::Respond { id, response } => {
                if let Some(ch) = self.inbound.remove(&id.0) {
                    self.net.respond(ch, response);
                }
            }
            Output::Serve { peer, id, plan } => {
                let Some(ch) = self.inbound.remove(&id.0) else {
                    return;
                };
                self.job(
                    move |sh: &Shared| serve_plan(&plan, &StoreSource(&sh.store)),
                    move |a, r| {
                        let resp = r.unwrap_or_else(|e| SyncResponse::refusal(e.to_string()));
                        let records = resp.records.len() as u32;
                        let bytes: u64 = resp.records.iter().map(|r| record_bytes(r) as u64).sum();
                        a.sh.metrics.request_served();
                        a.sh.metrics.pattern_shared(u64::from(records));
                        a.sh.metrics.bytes_sent(bytes);
                        a.net.respond(ch, resp);
                        a.input(Input::Served {
                            peer,
                            id,
                            records,
                            bytes,
                        });
                    },
                );
            }
            Output::Verify {
                id,
                records,
                priority,
            } => {
                // (a pool of its own: a flood's checks queue behind each
                // other, not in front of store reads and API work; in the
                // lane the core chose)
                self.job_in(
                    self.sh.verify_pool.clone(),
                    lane(priority),
                    move |sh: &Shared| store_io::verify(&sh.keys, &records),
                    move |a, r| match r {
                        Ok(results) => a.input(Input::Verified { id, results }),
                        // The core forgets the batch after its timeout (a
                        // shed check charged nobody; pulls find it again).
                        Err(PoolError::Shed(n)) => tracing::debug!(n, "verification shed"),
                        Err(e) => tracing::warn!(error = %e, "verification job failed"),
                    },
                );
            }
            Output::Persist {
                id,
                batch,
                priority,
            } => self.persist(id, batch, priority),
            Output::Submitted { id, result } => {
                if let Some(reply) = self.submits.remove(&id.0) {
                    let _ = reply.send(result);
                }
            }
            Output::SetPeerScore { peer, score } => self.net.set_app_score(&peer, score),
            Output::Disconnect { peer } => self.net.disconnect(peer),
            Output::Ban { peer, until } => {
                tracing::info!(%peer, "banned until {until:.0}");
                self.net.block(peer);
                self.bans.insert(peer, until);
            }
            Output::Schedule { at, timer } => self.schedule(at, timer),
            Output::Event(e) => self.on_core_event(e),
            // to the peer's `/metamesh/tree/1` queue (dropped when full)
            Output::Tree { peer, msg } => {
                let frame = msg.encode();
                let n = frame.len() as u64;
                if self.net.tree_send(peer, frame) {
                    self.sh.metrics.bytes_sent(n);
                }
            }
        }
    }

    /// Execute a `Persist`. Records alone (what peers' pushes produce) go
    /// straight into the group-commit writer's lane, answered from the
    /// writer thread after their flush: no pool thread waits for it, so
    /// the writer's own bounds (urgent first, at most 64 bulk records per
    /// group) and the core's in-flight bounds are the only limits, and a
    /// group holds every record that came during the previous flush.
    /// Anything else (side tables, declined slots), a full writer queue or
    /// an injected fault takes the write pool.
    fn persist(&mut self, id: WriteId, batch: PersistBatch, priority: Priority) {
        let batch = if store_io::records_only(&batch) && self.sh.health.injected().is_none() {
            match self.persist_direct(id, batch, priority) {
                Some(b) => b,
                None => return,
            }
        } else {
            batch
        };
        self.write_job(
            priority,
            move |sh: &Shared| {
                let writer = sh
                    .writer()
                    .ok_or_else(|| "the node is shutting down".to_string())?;
                // A full disk or a broken store makes the node
                // unhealthy (see `health`); `injected` is its test seam.
                let r = match sh.health.injected() {
                    Some(e) => Err(e),
                    None => store_io::persist(&sh.store, &writer, batch, urgency(priority)),
                };
                r.map_err(|e| {
                    sh.health.note(&e);
                    e.to_string()
                })
            },
            move |a, r| a.on_persisted(id, r.unwrap_or_else(|e| Err(e.to_string()))),
        );
    }

    /// Submit a records-only batch to the writer without waiting; hands
    /// the batch back when the writer did not take it.
    fn persist_direct(
        &mut self,
        id: WriteId,
        batch: PersistBatch,
        priority: Priority,
    ) -> Option<PersistBatch> {
        let Some(writer) = self.sh.writer() else {
            return Some(batch);
        };
        let touched: BTreeSet<PeerId> = batch.records.iter().map(|(_, b)| b.origin).collect();
        let sh = self.sh.clone();
        let tx = self.done_sender(lane(priority));
        let rt = tokio::runtime::Handle::current();
        let reply: Reply = Box::new(move |r| {
            // (on the writer thread, after the flush that covers the batch)
            let result = r
                .and_then(store_io::insert_outcomes)
                .map(|o| store_io::persisted(&sh.store, o, touched))
                .map_err(|e| {
                    sh.health.note(&e);
                    e.to_string()
                });
            let call: Call = Box::new(move |a: &mut Actor| a.on_persisted(id, result));
            // Never block the writer on the actor: a full channel is
            // waited on by a task instead.
            if let Err(mpsc::error::TrySendError::Full(call)) = tx.try_send(call) {
                rt.spawn(async move {
                    let _ = tx.send(call).await;
                });
            }
        });
        match writer.try_submit_with_in(urgency(priority), Batch::Insert(batch.records), reply) {
            Ok(()) => None,
            Err(NotTaken {
                batch: Batch::Insert(records),
                ..
            }) => Some(PersistBatch {
                records,
                ..PersistBatch::default()
            }),
            Err(not) => {
                // (cannot happen: the writer hands back what it was given)
                tracing::error!(?not, "the writer handed back another batch");
                None
            }
        }
    }

    pub(super) fn on_persisted(&mut self, id: WriteId, result: Result<Persisted, String>) {
        if let Err(e) = &result {
            tracing::warn!(error = %e, "store write failed");
        }
        self.input(Input::Persisted { id, result });
    }

    fn on_core_event(&mut self, e: Event) {
        match e {
            Event::PatternAccepted {
                origin,
                seq,
                hash,
                depth,
                local,
            } => {
                if local {
                    self.sh.metrics.pattern_recorded();
                    self.own_dirty = true;
                } else {
                    self.sh.metrics.pattern_received();
                    self.sh.metrics.pattern_accepted();
                }
                self.collective.stale = true;
                self.sh.emit(NodeEvent::PatternAccepted {
                    origin: origin.to_string(),
                    seq,
                    hash: hash.to_hex(),
                    depth,
                    local,
                });
            }
            Event::PatternRejected { peer, reason } => {
                self.sh.metrics.pattern_rejected(reason);
                self.sh.emit(NodeEvent::PatternRejected {
                    peer: peer.map(|p| p.to_string()),
                    reason: reason.to_string(),
                });
            }
            Event::PatternDeclined { reason, .. } => self.sh.metrics.pattern_rejected(reason),
            Event::InsightAccepted { .. } => self.collective.stale = true,
            Event::ReputationChanged {
                peer,
                event,
                score,
                class,
            } => {
                tracing::info!(%peer, ?event, score, class = class.as_str(), "reputation class changed");
            }
            Event::Promotion { child, seq } => match seq {
                Some(seq) => {
                    self.sh.metrics.promotion_received();
                    if self.promoted_by.len() < MAX_TRACKED_CHILDREN
                        || self.promoted_by.contains_key(&child)
                    {
                        self.promoted_by.insert(child, seq);
                    }
                    self.collective.stale = true;
                }
                None => self.sh.metrics.promotion_rejected(),
            },
            Event::CaughtUp { .. } => {}
        }
    }
}
