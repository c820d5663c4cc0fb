//! Property tests: convergence under random event orders, and no input
//! sequence panics or grows a table past its bound.
#![allow(clippy::unwrap_used)]

mod common;

use common::{cfg, Net};
use metamesh_exchange::*;
use metamesh_protocol::sync::{SyncRequest, SyncResponse};
use metamesh_protocol::wire::{GossipMessage, RecordPush, SeqRange, WIRE_VERSION};
use metamesh_protocol::SignedRecord;
use proptest::prelude::*;

const S: u64 = 1_000_000;

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// Nodes that can reach each other end with the same record set,
    /// whatever the order of events (seeded delays), losses and the
    /// moment each node joins.
    #[test]
    fn connected_nodes_converge(
        seed in any::<u64>(),
        n in 2usize..5,
        subs in proptest::collection::vec((0usize..5, 1usize..4, 0u64..4), 1..6),
        joins in proptest::collection::vec(0u64..3, 4),
        loss in 0.0f64..0.3,
    ) {
        let mut net = Net::new(n, seed, cfg());
        net.loss = loss;
        net.max_delay_us = 200_000;
        // a chain 0-1-2-… joined at random times
        for i in 1..n {
            net.run_until(joins[i - 1] * S);
            net.connect(i - 1, i);
        }
        for (node, count, at) in subs {
            net.run_until((net.now_us / S).max(at) * S);
            net.submit(node % n, count);
        }
        // long enough for idle announcements (60 s) to repair losses
        net.run_until(400 * S);
        let want = net.hashes(0);
        for i in 1..n {
            prop_assert_eq!(net.hashes(i), want.clone(), "node {} of {}", i, n);
        }
    }
}

fn arb_input(peers: Vec<libp2p_identity::PeerId>) -> impl Strategy<Value = Input> {
    let p = proptest::sample::select(peers);
    let bytes = proptest::collection::vec(any::<u8>(), 0..200);
    let rec = (any::<u64>(), 1u64..50, 0.0f64..1.0).prop_map(|(k, seq, q)| {
        SignedRecord::sign_pattern(testutil::pattern(q), seq, &testutil::key(k % 40))
    });
    prop_oneof![
        p.clone().prop_map(|peer| Input::PeerConnected {
            peer,
            outbound: true
        }),
        p.clone().prop_map(|peer| Input::PeerDisconnected { peer }),
        (p.clone(), bytes.clone(), any::<u64>(), 0u8..3).prop_map(|(source, data, id, t)| {
            let topic = [Topic::Records, Topic::Announce, Topic::Insights][t as usize];
            Input::Gossip(Gossip {
                id: MsgId(id),
                topic,
                author: None,
                source,
                data,
            })
        }),
        (p.clone(), rec.clone(), any::<u64>()).prop_map(|(source, record, id)| {
            let data = GossipMessage::RecordPush(RecordPush {
                v: WIRE_VERSION,
                record,
            })
            .encode();
            Input::Gossip(Gossip {
                id: MsgId(id),
                topic: Topic::Records,
                author: None,
                source,
                data,
            })
        }),
        (p.clone(), bytes.clone(), any::<u64>()).prop_map(|(peer, b, id)| Input::Request {
            peer,
            id: InboundId(id),
            request: SyncRequest::decode(&b),
        }),
        (
            p.clone(),
            any::<u64>(),
            proptest::collection::vec(rec.clone(), 0..8),
            any::<bool>()
        )
            .prop_map(|(peer, id, records, more)| {
                let mut r = SyncResponse::refusal("");
                r.error = None;
                r.records = records;
                r.more = more;
                Input::Response {
                    peer,
                    id: RequestId(id % 64),
                    response: Ok(r),
                }
            }),
        (p.clone(), any::<u64>(), 0u64..1 << 40).prop_map(|(peer, id, to)| {
            let mut req = SyncRequest::new(100);
            req.ranges = vec![SeqRange {
                origin: peer,
                from_seq: 1,
                to_seq: to,
            }];
            Input::Request {
                peer,
                id: InboundId(id),
                request: Ok(req),
            }
        }),
        (any::<u64>(), proptest::collection::vec(any::<bool>(), 0..4)).prop_map(|(id, oks)| {
            Input::Verified {
                id: VerifyId(id % 64),
                results: oks
                    .into_iter()
                    .map(|ok| {
                        if ok {
                            Ok(testutil::key(1).public().to_peer_id())
                        } else {
                            Err(metamesh_protocol::RecordError::BadSignature)
                        }
                    })
                    .collect(),
            }
        }),
        (any::<u64>(), any::<bool>()).prop_map(|(id, ok)| Input::Persisted {
            id: WriteId(id % 64),
            result: if ok {
                Ok(Persisted {
                    outcomes: vec![WriteOutcome::Inserted; 3],
                    frontier: vec![],
                })
            } else {
                Err("disk".into())
            },
        }),
        p.clone()
            .prop_map(|peer| Input::Timer(Timer::Reconcile(peer))),
        p.clone().prop_map(|peer| Input::Timer(Timer::Repair(peer))),
        Just(Input::Timer(Timer::Tick)),
        (any::<u64>(), 0usize..5).prop_map(|(id, n)| Input::Submit {
            id: SubmitId(id),
            patterns: (0..n).map(|k| testutil::pattern(k as f64 / 5.0)).collect(),
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Any input sequence: no panic, every table within its bound, and the
    /// core's own answers (verify, persist) fed back do not break it either.
    #[test]
    fn no_input_sequence_panics_or_overflows_a_bound(
        seed in any::<u64>(),
        inputs in proptest::collection::vec(
            arb_input((0..40u64).map(|k| testutil::key(k).public().to_peer_id()).collect()), 1..120),
    ) {
        let c = Config {
            max_reputation_entries: 8,
            max_peers: 4,
            max_origin_buckets: 4,
            max_peer_buckets: 4,
            max_deferred_origins: 4,
            max_pending_verify: 4,
            max_pending_writes: 4,
            max_outbound_requests: 4,
            max_inflight_ranges: 4,
            max_insight_seqs: 4,
            records_per_origin_per_hour: 5,
            ..cfg()
        };
        let init = Init {
            key: testutil::key(999),
            epoch: Some(5),
            last_own_seq: 3,
            frontier: Default::default(),
            reputation: vec![],
            own_insight: None,
            seed,
        };
        let mut st = State::new(c, init);
        let mut now = testutil::NOW;
        for input in inputs {
            now += 0.37;
            let outs = st.handle(input, now);
            // feed the core's own requests for work straight back
            for o in outs {
                let back = match o {
                    Output::Verify { id, records, .. } => Some(Input::Verified {
                        id,
                        results: metamesh_protocol::record::verify_batch(&records),
                    }),
                    Output::Persist { id, batch, .. } => {
                        let mut store = metamesh_exchange::mem::MemStore::default();
                        Some(Input::Persisted { id, result: Ok(store.apply(batch)) })
                    }
                    _ => None,
                };
                if let Some(b) = back {
                    st.handle(b, now);
                }
            }
            for (name, len, cap) in st.table_sizes() {
                prop_assert!(len <= cap, "{} holds {} > {}", name, len, cap);
            }
        }
    }
}
