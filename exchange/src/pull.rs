//! Catch-up and repair: reconciliation sessions, then exact range pulls,
//! paged by records actually returned, with the receiver enforcing what it
//! asked for (count, bytes, ranges).

use std::collections::BTreeMap;

use libp2p_identity::PeerId;
use metamesh_protocol::reputation::ReputationEvent;
use metamesh_protocol::sync::{self, SyncRequest, SyncResponse};
use metamesh_protocol::wire::{SeqRange, WireError, MAX_RANGES, MAX_RECORDS_PER_RESPONSE};
use metamesh_protocol::SignedRecord;

use crate::io::*;
use crate::state::{Outbound, OutboundReq, State, Via};

/// Most reconciliation rounds in one session (the tree has 8 levels).
const MAX_RECON_ROUNDS: u32 = 12;
/// Most pages in one pull session.
const MAX_PAGES: u32 = 4096;

impl State {
    fn send(&mut self, peer: PeerId, request: SyncRequest, what: Outbound, now: f64) -> bool {
        if self.outbound.len() >= self.outbound.cap() {
            return false;
        }
        let id = RequestId(self.id());
        self.outbound.insert(
            id,
            OutboundReq {
                peer,
                sent: now,
                what,
            },
        );
        self.counters.requests_sent += 1;
        self.out.push(Output::SendRequest { peer, id, request });
        true
    }

    /// Compare digests with a peer (at most every `recon_min_interval_secs`).
    pub(crate) fn start_recon(&mut self, peer: PeerId, now: f64) {
        let min = self.cfg.recon_min_interval_secs;
        let Some(info) = self.peers.get(&peer) else {
            return;
        };
        if info.recon_running {
            return;
        }
        if now - info.last_recon < min {
            // at least 1 ms ahead: `last + min - last` may round below `min`,
            // and a timer firing at `last + min` must not re-arm itself forever
            let at = (info.last_recon + min).max(now + 1e-3);
            self.schedule(at, Timer::Reconcile(peer));
            return;
        }
        let legacy = info.legacy;
        let mut req = SyncRequest::new(0);
        let what = if legacy {
            // an older peer: ask with our frontier (its answer is paged by `more`)
            let (have, _) = sync::frontier_entries(self.tree.frontier());
            req.have = Some(have);
            req.max_count = self.cfg.page_records;
            Outbound::Legacy
        } else {
            let q = self.tree.first_query();
            req.recon = Some(q.clone());
            Outbound::Recon { asked: q, round: 1 }
        };
        if Some(peer) == self.cfg.parent {
            let min = self.cfg.promote_min_confidence;
            req.promote = self
                .own_insight
                .as_ref()
                .filter(|(_, b)| crate::own::insight_confidence(b) >= min)
                .map(|(r, _)| r.clone());
        }
        if self.send(peer, req, what, now) {
            if let Some(info) = self.peers.get_mut(&peer) {
                info.recon_running = true;
                info.last_recon = now;
            }
        }
    }

    /// Pull what reconciliation found missing from a peer, skipping what is
    /// deferred (it would be declined) or already being pulled elsewhere.
    pub(crate) fn start_pull(&mut self, peer: PeerId, now: f64) {
        let timeout = self.cfg.request_timeout_secs;
        let Some(info) = self.peers.get(&peer) else {
            return;
        };
        if info.pulling {
            return;
        }
        let targets: Vec<(PeerId, u64)> = info.targets.iter().map(|(o, s)| (*o, *s)).collect();
        let mut ranges = Vec::new();
        let mut used = Vec::new();
        for (origin, seq) in targets {
            if ranges.len() >= MAX_RANGES {
                break;
            }
            used.push(origin);
            let mine = self.tree.get(&origin);
            if seq <= mine || self.is_deferred(&origin, now) {
                continue;
            }
            let elsewhere = self
                .inflight
                .get(&origin)
                .is_some_and(|(to, _, since)| *to >= seq && now - *since <= timeout);
            if elsewhere {
                continue;
            }
            ranges.push(SeqRange {
                origin,
                from_seq: mine + 1,
                to_seq: seq,
            });
        }
        if let Some(info) = self.peers.get_mut(&peer) {
            for o in &used {
                info.targets.remove(o);
            }
        }
        if ranges.is_empty() {
            return;
        }
        self.send_pull(peer, ranges, 0, now);
    }

    fn send_pull(&mut self, peer: PeerId, ranges: Vec<SeqRange>, pages: u32, now: f64) {
        let max_count = self
            .cfg
            .page_records
            .clamp(1, MAX_RECORDS_PER_RESPONSE as u32);
        let max_bytes = self.cfg.page_bytes;
        let mut req = SyncRequest::new(max_count);
        req.ranges = ranges.clone();
        for r in &ranges {
            self.inflight.insert(r.origin, (r.to_seq, peer, now));
        }
        let what = Outbound::Pull {
            ranges,
            max_count,
            max_bytes,
            pages: pages + 1,
        };
        if self.send(peer, req, what, now) {
            if let Some(info) = self.peers.get_mut(&peer) {
                info.pulling = true;
            }
        }
    }

    /// A request ended. `delivered`: its records are on their way through
    /// verification and the store, so their origins stay in flight (not
    /// pulled again, from anyone) until the frontier covers them or the
    /// entry times out; otherwise they may be pulled again at once.
    fn end_session(&mut self, peer: PeerId, what: &Outbound, delivered: bool) {
        if let Some(info) = self.peers.get_mut(&peer) {
            match what {
                Outbound::Recon { .. } | Outbound::Legacy => info.recon_running = false,
                Outbound::Pull { .. } => info.pulling = false,
            }
        }
        if let (Outbound::Pull { ranges, .. }, false) = (what, delivered) {
            for r in ranges {
                if self
                    .inflight
                    .get(&r.origin)
                    .is_some_and(|(_, p, _)| *p == peer)
                {
                    self.inflight.remove(&r.origin);
                }
            }
        }
    }

    pub(crate) fn on_request_failed(&mut self, peer: PeerId, id: RequestId) {
        if let Some(o) = self.outbound.remove(&id) {
            self.end_session(o.peer, &o.what, false);
        } else {
            let _ = peer;
        }
    }

    pub(crate) fn on_response(
        &mut self,
        peer: PeerId,
        id: RequestId,
        response: Result<SyncResponse, WireError>,
        now: f64,
    ) {
        let Some(o) = self.outbound.get(&id) else {
            return; // late (timed out) or never asked: nothing to do
        };
        if o.peer != peer {
            return;
        }
        let Some(o) = self.outbound.remove(&id) else {
            return;
        };
        let resp = match response {
            Ok(r) => r,
            Err(e) => {
                if !matches!(e, WireError::UnknownVersion(_)) {
                    self.charge(peer, ReputationEvent::from(&e), 1, now);
                }
                return self.end_session(peer, &o.what, false);
            }
        };
        if resp.error.is_some() {
            return self.end_session(peer, &o.what, false);
        }
        if let Some(rec) = resp.insight.clone() {
            self.ingest(vec![rec], Via::Pull { peer }, now);
        }
        match o.what {
            Outbound::Recon { asked, round } => {
                if !resp.records.is_empty() {
                    self.charge_unrequested(peer, resp.records.len() as u64, now);
                }
                let Some(reply) = resp.recon else {
                    // an older peer: it ignored `recon`
                    if let Some(info) = self.peers.get_mut(&peer) {
                        info.legacy = true;
                        info.recon_running = false;
                        info.last_recon = f64::NEG_INFINITY;
                    }
                    return self.start_recon(peer, now);
                };
                self.counters.recon_rounds += 1;
                let (next, missing) = self.tree.absorb(&asked, &reply);
                self.add_targets(peer, missing);
                if !next.buckets.is_empty() && round < MAX_RECON_ROUNDS {
                    let mut req = SyncRequest::new(0);
                    req.recon = Some(next.clone());
                    let what = Outbound::Recon {
                        asked: next,
                        round: round + 1,
                    };
                    if self.send(peer, req, what, now) {
                        return;
                    }
                }
                let has_targets = self.peers.get(&peer).is_some_and(|i| !i.targets.is_empty());
                if let Some(info) = self.peers.get_mut(&peer) {
                    info.recon_running = false;
                }
                if has_targets {
                    self.schedule(now + self.cfg.repair_delay_secs, Timer::Repair(peer));
                } else {
                    self.emit(Event::CaughtUp { peer });
                }
            }
            Outbound::Legacy => {
                self.counters.pulled_records_received += resp.records.len() as u64;
                let more = resp.more && !resp.records.is_empty();
                self.ingest(resp.records, Via::Pull { peer }, now);
                if let Some(info) = self.peers.get_mut(&peer) {
                    info.recon_running = false;
                    if more {
                        info.last_recon = f64::NEG_INFINITY;
                    }
                }
                if more {
                    self.schedule(now + self.cfg.repair_delay_secs, Timer::Reconcile(peer));
                }
            }
            Outbound::Pull {
                ranges,
                max_count,
                max_bytes,
                pages,
            } => {
                let more = resp.more;
                let (kept, last) =
                    self.enforce(peer, &ranges, max_count, max_bytes, resp.records, now);
                self.counters.pulled_records_received += kept.len() as u64;
                let got_any = !kept.is_empty();
                self.ingest(kept, Via::Pull { peer }, now);
                let what = Outbound::Pull {
                    ranges: ranges.clone(),
                    max_count,
                    max_bytes,
                    pages,
                };
                self.end_session(peer, &what, true);
                if !more {
                    // Origins the peer sent nothing for are not on their way.
                    for r in &ranges {
                        let ours = self
                            .inflight
                            .get(&r.origin)
                            .is_some_and(|(_, p, _)| *p == peer);
                        if ours && !last.contains_key(&r.origin) {
                            self.inflight.remove(&r.origin);
                        }
                    }
                }
                if more && got_any && pages < MAX_PAGES {
                    // next page: resume each range after the last seq received
                    let next: Vec<SeqRange> = ranges
                        .iter()
                        .filter_map(|r| {
                            let from = match last.get(&r.origin) {
                                Some(s) => s.saturating_add(1),
                                None => r.from_seq,
                            };
                            (from <= r.to_seq).then_some(SeqRange {
                                origin: r.origin,
                                from_seq: from,
                                to_seq: r.to_seq,
                            })
                        })
                        .filter(|r| !self.is_deferred(&r.origin, now))
                        .collect();
                    if !next.is_empty() {
                        return self.send_pull(peer, next, pages, now);
                    }
                }
                if self.peers.get(&peer).is_some_and(|i| !i.targets.is_empty()) {
                    self.start_pull(peer, now);
                }
            }
        }
    }

    fn charge_unrequested(&mut self, peer: PeerId, n: u64, now: f64) {
        self.counters.unrequested_dropped += n;
        self.charge(peer, ReputationEvent::DecodeError, 1, now);
        self.emit(Event::PatternRejected {
            peer: Some(peer),
            reason: "unrequested_records",
        });
    }

    /// Keep only what was asked for: at most `max_count` records, at most
    /// `max_bytes`, each inside an asked range. Returns the kept records and
    /// the last seq kept per origin.
    fn enforce(
        &mut self,
        peer: PeerId,
        ranges: &[SeqRange],
        max_count: u32,
        max_bytes: u64,
        records: Vec<SignedRecord>,
        now: f64,
    ) -> (Vec<SignedRecord>, BTreeMap<PeerId, u64>) {
        let mut by_origin: BTreeMap<PeerId, Vec<(u64, u64)>> = BTreeMap::new();
        for r in ranges {
            by_origin
                .entry(r.origin)
                .or_default()
                .push((r.from_seq, r.to_seq));
        }
        let mut kept = Vec::new();
        let mut last: BTreeMap<PeerId, u64> = BTreeMap::new();
        let mut bytes = 0u64;
        let mut dropped = 0u64;
        for rec in records {
            let size = (rec.body.len() + rec.signer.len() + rec.signature.len()) as u64;
            let at = crate::serve::origin_seq(&rec);
            let inside = at.is_some_and(|(o, s)| {
                by_origin
                    .get(&o)
                    .is_some_and(|rs| rs.iter().any(|(f, t)| (*f..=*t).contains(&s)))
            });
            if !inside || kept.len() >= max_count as usize || bytes + size > max_bytes {
                dropped += 1;
                continue;
            }
            bytes += size;
            if let Some((o, s)) = at {
                let e = last.entry(o).or_insert(0);
                *e = (*e).max(s);
            }
            kept.push(rec);
        }
        if dropped > 0 {
            self.charge_unrequested(peer, dropped, now);
        }
        (kept, last)
    }
}
