//! The exchange core driven by a small deterministic network (tests/common).
#![allow(clippy::unwrap_used)]

mod common;

use common::{cfg, Net, T0};
use metamesh_exchange::mem::MemStore;
use metamesh_exchange::*;
use metamesh_protocol::reputation::ReputationEvent;
use metamesh_protocol::sync::SyncRequest;
use metamesh_protocol::wire::{DigestAnnouncement, GossipMessage, SeqRange, WIRE_VERSION};
use metamesh_protocol::SignedRecord;

const S: u64 = 1_000_000;

#[test]
fn a_pattern_is_pushed_to_every_node_and_stored_once() {
    let mut net = Net::new(4, 1, cfg());
    for (a, b) in [(0, 1), (1, 2), (2, 3)] {
        net.connect(a, b);
    }
    net.run_until(S);
    net.submit(0, 3);
    net.run_until(5 * S);
    let want = net.hashes(0);
    assert_eq!(want.len(), 3);
    for i in 1..4 {
        assert_eq!(net.hashes(i), want, "node {i}");
    }
    // answered after the records were durable
    let (_, r) = &net.nodes[0].submitted[0];
    let seqs: Vec<u64> = r.as_ref().unwrap().iter().map(|s| s.seq).collect();
    let base = (1_700_000_000u64) << 32;
    assert_eq!(seqs, vec![base | 1, base | 2, base | 3]);
    // pushed, not pulled: no pulled records anywhere
    for i in 1..4 {
        let c = net.nodes[i].state.counters();
        assert_eq!(c.pulled_records_received, 0, "node {i}: {c:?}");
        assert_eq!(c.gossip_records_received, 3);
    }
}

#[test]
fn a_late_joiner_catches_up_by_reconciliation_across_an_epoch_gap() {
    let mut net = Net::new(3, 2, cfg());
    net.connect(0, 1);
    net.run_until(S);
    net.submit(0, 5);
    net.submit(1, 2);
    net.run_until(3 * S);
    assert_eq!(net.hashes(1).len(), 7);
    net.connect(2, 1);
    net.run_until(8 * S);
    assert_eq!(net.hashes(2), net.hashes(0));
    let c = net.nodes[2].state.counters();
    assert_eq!(c.pulled_records_received, 7, "{c:?}");
    assert!(c.recon_rounds >= 1);
}

/// A node syncs against a peer holding 5 000 origins by reconciliation alone.
#[test]
fn catch_up_is_exact_at_5000_origins() {
    let mut net = Net::new(2, 3, cfg());
    // node 1 holds one record of each of 5000 origins (and node 0 a few of them)
    let mut batch0 = PersistBatch::default();
    let mut batch1 = PersistBatch::default();
    for i in 0..5000u64 {
        let key = testutil::key(50_000 + i);
        let rec = SignedRecord::sign_pattern(testutil::pattern(0.6), 1, &key);
        let body = rec
            .decode_pattern_unverified(key.public().to_peer_id(), T0)
            .unwrap();
        if i % 10 == 0 {
            batch0.records.push((rec.clone(), body.clone()));
        }
        batch1.records.push((rec, body));
    }
    let mut store0 = MemStore::default();
    store0.apply(batch0);
    let mut store1 = MemStore::default();
    store1.apply(batch1);
    for (i, store) in [(0usize, store0), (1, store1)] {
        let init = Init {
            key: testutil::key(1000 + i as u64),
            epoch: Some(7),
            last_own_seq: 0,
            frontier: store.frontier().clone(),
            reputation: vec![],
            own_insight: None,
            seed: 9,
        };
        net.nodes[i].state = State::new(cfg(), init);
        net.nodes[i].store = store;
    }
    net.connect(0, 1);
    net.run_until(60 * S);
    assert_eq!(net.hashes(0).len(), 5000);
    assert_eq!(net.hashes(0), net.hashes(1));
    let c0 = net.nodes[0].state.counters();
    // exactly the 4500 missing records were pulled, nothing twice
    assert_eq!(c0.pulled_records_received, 4500, "{c0:?}");
    assert_eq!(c0.records_duplicate, 0);
    assert_eq!(net.nodes[0].state.frontier().len(), 5000);
}

#[test]
fn the_writer_is_pushed_back_at_the_quota() {
    let mut c = cfg();
    c.records_per_origin_per_hour = 10;
    let mut net = Net::new(1, 4, c);
    net.submit(0, 8);
    net.submit(0, 8);
    net.run_until(S);
    let results: Vec<_> = net.nodes[0]
        .submitted
        .iter()
        .map(|(_, r)| r.clone())
        .collect();
    assert_eq!(results[0].as_ref().unwrap().len(), 8);
    match &results[1] {
        Err(SubmitError::Quota {
            allowed,
            retry_after_secs,
        }) => {
            assert_eq!(*allowed, 10);
            assert!(*retry_after_secs > 0.0);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        net.hashes(0).len(),
        8,
        "a refused submission stores nothing"
    );
}

/// An origin over its quota is deferred; the forwarder is not charged; the
/// records stay fetchable and arrive once the deferral ends.
#[test]
fn quota_targets_the_origin_and_deferred_records_come_back() {
    let mut c = cfg();
    c.records_per_origin_per_hour = 3600; // one per second, burst 3600
    let mut net = Net::new(3, 5, c.clone());
    // node 2 is strict: burst of 2
    net.reconfigure(
        2,
        Config {
            records_per_origin_per_hour: 2,
            ..c
        },
    );
    net.connect(0, 1);
    net.connect(1, 2);
    net.run_until(S);
    net.submit(0, 6);
    net.run_until(4 * S);
    let origin = net.peer(0);
    let relay = net.peer(1);
    let s2 = &net.nodes[2].state;
    assert!(net.hashes(2).len() < 6);
    assert!(s2.deferred().any(|(o, _)| *o == origin), "origin deferred");
    let relay_rep = s2
        .reputation()
        .find(|(p, _)| **p == relay)
        .map(|(_, r)| r.clone());
    if let Some(r) = relay_rep {
        assert_eq!(r.count(ReputationEvent::RateLimitExceeded), 0);
        assert!(
            r.score >= 0.0,
            "the honest relay keeps its reputation: {r:?}"
        );
    }
    let o = s2.reputation().find(|(p, _)| **p == origin).unwrap().1;
    assert!(o.count(ReputationEvent::RateLimitExceeded) >= 1);
    // raise node 2's quota: the deferred records become fetchable again
    net.reconfigure(2, cfg());
    net.run_until(3700 * S);
    if net.hashes(2) != net.hashes(0) {
        let st = &net.nodes[2].state;
        eprintln!(
            "{:?}\n{:?}\n{:?}",
            st.counters(),
            st.frontier(),
            net.nodes[1].state.frontier()
        );
        eprintln!("{:?}", st.deferred().collect::<Vec<_>>());
        eprintln!(
            "{:?}",
            &net.nodes[2].events[net.nodes[2].events.len().saturating_sub(10)..]
        );
    }
    assert_eq!(net.hashes(2), net.hashes(0));
}

#[test]
fn an_announcement_is_bound_to_its_author() {
    let mut net = Net::new(3, 6, cfg());
    net.connect(0, 1);
    net.connect(1, 2);
    net.run_until(S);
    let victim = net.peer(2);
    let liar = net.peer(0);
    let a = GossipMessage::DigestAnnouncement(DigestAnnouncement {
        v: WIRE_VERSION,
        from: victim,
        root: 12345,
        origins: 1,
        own_seq: 1,
        at: 1,
    });
    let now = net.now();
    let outs = net.nodes[1].state.handle(
        Input::Gossip(Gossip {
            id: MsgId(77),
            topic: Topic::Announce,
            author: Some(liar),
            source: liar,
            data: a.encode(),
        }),
        now,
    );
    assert!(outs.contains(&Output::Validate {
        id: MsgId(77),
        acceptance: Acceptance::Reject
    }));
    assert!(!outs.iter().any(|o| matches!(o, Output::SendRequest { .. })));
    let r = net.nodes[1]
        .state
        .reputation()
        .find(|(p, _)| **p == liar)
        .unwrap()
        .1;
    assert!(r.score < 0.0);
    // unsigned mesh: a forwarded announcement in another's name is ignored
    let outs = net.nodes[1].state.handle(
        Input::Gossip(Gossip {
            id: MsgId(78),
            topic: Topic::Announce,
            author: None,
            source: liar,
            data: a.encode(),
        }),
        now,
    );
    assert_eq!(
        outs,
        vec![Output::Validate {
            id: MsgId(78),
            acceptance: Acceptance::Ignore
        }]
    );
}

#[test]
fn malformed_requests_are_charged_and_answered() {
    let mut net = Net::new(2, 7, cfg());
    net.connect(0, 1);
    net.run_until(S);
    let p = net.peer(1);
    let now = net.now();
    let outs = net.nodes[0].state.handle(
        Input::Request {
            peer: p,
            id: InboundId(5),
            request: SyncRequest::decode(&[0xff, 0x00]),
        },
        now,
    );
    assert!(
        matches!(&outs[..], [.., Output::Respond { id: InboundId(5), response }] if response.error.is_some())
    );
    let r = net.nodes[0]
        .state
        .reputation()
        .find(|(q, _)| **q == p)
        .unwrap()
        .1;
    assert_eq!(r.count(ReputationEvent::DecodeError), 1);
}

/// The receiver keeps only what it asked for and charges the sender once.
#[test]
fn unrequested_records_are_dropped_and_charged() {
    let mut net = Net::new(3, 8, cfg());
    net.connect(0, 1);
    net.run_until(S);
    net.submit(2, 4); // node 2 is not connected: only its own store has them
    net.run_until(2 * S);
    let recs: Vec<SignedRecord> = {
        use metamesh_exchange::serve::RecordSource;
        let o = net.peer(2);
        net.nodes[2]
            .store
            .records_in_range(o, 0, u64::MAX, 100, 1 << 20)
            .unwrap()
    };
    assert_eq!(recs.len(), 4);
    // node 0 pulls a range of one record of origin 2 from node 1
    let origin = net.peer(2);
    let first = metamesh_exchange::serve::origin_seq(&recs[0]).unwrap().1;
    let mut req = SyncRequest::new(1);
    req.ranges = vec![SeqRange {
        origin,
        from_seq: first,
        to_seq: first,
    }];
    let _ = req;
    // drive it through the core: make node 0 believe node 1 holds origin 2 up to `first`
    let p1 = net.peer(1);
    let now = net.now();
    let outs = net.nodes[0]
        .state
        .handle(Input::Timer(Timer::Repair(p1)), now);
    assert!(outs.is_empty(), "no targets yet");
    // answer a recon-driven pull with everything: only the asked record is kept
    let mut targets_req = None;
    let outs = {
        // reconcile first so the core has targets
        let mut st = std::mem::take(&mut net.nodes[1].store);
        let b = PersistBatch {
            records: recs
                .iter()
                .take(1)
                .map(|r| (r.clone(), r.decode_pattern_unverified(origin, T0).unwrap()))
                .collect(),
            ..Default::default()
        };
        st.apply(b);
        net.nodes[1].store = st;
        net.nodes[0]
            .state
            .handle(Input::Timer(Timer::Reconcile(p1)), now)
    };
    for o in outs {
        if let Output::SendRequest { id, request, .. } = o {
            targets_req = Some((id, request));
        }
    }
    let (rid, req) = targets_req.unwrap();
    assert!(req.recon.is_some());
    // node 1's view answers the recon (it holds origin 2 up to `first`)
    let mut tree = metamesh_exchange::recon::DigestTree::default();
    tree.set(origin, first);
    let reply = tree.answer(req.recon.as_ref().unwrap());
    let mut resp = metamesh_protocol::sync::SyncResponse::refusal("");
    resp.error = None;
    resp.recon = Some(reply);
    let outs = net.nodes[0].state.handle(
        Input::Response {
            peer: p1,
            id: rid,
            response: Ok(resp),
        },
        now,
    );
    assert!(outs.iter().any(|o| matches!(
        o,
        Output::Schedule {
            timer: Timer::Repair(_),
            ..
        }
    )));
    let outs = net.nodes[0]
        .state
        .handle(Input::Timer(Timer::Repair(p1)), now + 1.0);
    let (rid, req) = outs
        .into_iter()
        .find_map(|o| match o {
            Output::SendRequest { id, request, .. } => Some((id, request)),
            _ => None,
        })
        .unwrap();
    assert_eq!(req.ranges.len(), 1);
    assert_eq!((req.ranges[0].from_seq, req.ranges[0].to_seq), (1, first));
    // the liar sends all four
    let mut resp = metamesh_protocol::sync::SyncResponse::refusal("");
    resp.error = None;
    resp.records = recs.clone();
    let outs = net.nodes[0].state.handle(
        Input::Response {
            peer: p1,
            id: rid,
            response: Ok(resp),
        },
        now + 1.0,
    );
    let verified: usize = outs
        .iter()
        .map(|o| match o {
            Output::Verify { records, .. } => records.len(),
            _ => 0,
        })
        .sum();
    assert_eq!(verified, 1, "only the asked record goes on");
    assert_eq!(net.nodes[0].state.counters().unrequested_dropped, 3);
    let r = net.nodes[0]
        .state
        .reputation()
        .find(|(q, _)| **q == p1)
        .unwrap()
        .1;
    assert_eq!(r.count(ReputationEvent::DecodeError), 1);
}

#[test]
fn a_flood_of_fresh_identities_keeps_the_book_bounded_and_the_evidence() {
    let mut c = cfg();
    c.max_reputation_entries = 64;
    let mut net = Net::new(1, 9, c);
    let now = net.now();
    let attacker = testutil::key(9_999).public().to_peer_id();
    // the attacker equivocates once: hostile
    let r1 = SignedRecord::sign_pattern(testutil::pattern(0.5), 1, &testutil::key(9_999));
    let r2 = SignedRecord::sign_pattern(testutil::pattern(0.6), 1, &testutil::key(9_999));
    for (k, r) in [r1, r2].into_iter().enumerate() {
        let data = GossipMessage::RecordPush(metamesh_protocol::wire::RecordPush {
            v: WIRE_VERSION,
            record: r,
        })
        .encode();
        net.send(
            0,
            Input::Gossip(Gossip {
                id: MsgId(k as u64),
                topic: Topic::Records,
                author: None,
                source: attacker,
                data,
            }),
        );
    }
    net.run_until(S);
    assert!(net.nodes[0]
        .state
        .reputation()
        .any(|(p, r)| *p == attacker && r.hostile));
    // then 2000 fresh valid identities
    for i in 0..2000u64 {
        let key = testutil::key(20_000 + i);
        let r = SignedRecord::sign_pattern(testutil::pattern(0.5), 1, &key);
        let data = GossipMessage::RecordPush(metamesh_protocol::wire::RecordPush {
            v: WIRE_VERSION,
            record: r,
        })
        .encode();
        net.send(
            0,
            Input::Gossip(Gossip {
                id: MsgId(100 + i),
                topic: Topic::Records,
                author: None,
                source: attacker,
                data,
            }),
        );
    }
    net.run_until(10 * S);
    let st = &net.nodes[0].state;
    for (name, len, cap) in st.table_sizes() {
        assert!(len <= cap, "{name}: {len} > {cap}");
    }
    assert!(st.reputation().count() <= 64);
    assert!(
        st.reputation().any(|(p, r)| *p == attacker && r.hostile),
        "evidence kept"
    );
    let _ = now;
}
