//! Priority lanes (issue 12, the flood test): the core decides which lane
//! each signature check and store write takes — our own records first,
//! then established origins, then fresh identities — and bounds the low
//! lane tighter, so a flood of fresh identities is shed in its own lane and
//! never takes the room an established origin's records need.
#![allow(clippy::unwrap_used)]

mod common;

use common::{cfg, T0};
use libp2p_identity::{Keypair, PeerId};
use metamesh_exchange::*;
use metamesh_protocol::reputation::{ReputationEvent, ReputationState};
use metamesh_protocol::wire::{GossipMessage, RecordPush, WIRE_VERSION};
use metamesh_protocol::SignedRecord;

fn push(record: SignedRecord) -> Vec<u8> {
    GossipMessage::RecordPush(RecordPush {
        v: WIRE_VERSION,
        record,
    })
    .encode()
}

fn pattern(tag: &str) -> metamesh_protocol::Pattern {
    let mut p = testutil::pattern(0.7);
    p.pattern_id = tag.to_string();
    p
}

fn node(c: Config, reputation: Vec<(PeerId, ReputationState)>) -> State {
    State::new(
        c,
        Init {
            key: testutil::key(1),
            epoch: Some(1_700_000_000),
            last_own_seq: 0,
            frontier: Default::default(),
            reputation,
            own_insight: None,
            seed: 5,
        },
    )
}

/// A gossip copy of `origin`'s record `seq` delivered by `source`.
fn gossip(st: &mut State, msg: u64, source: PeerId, origin: &Keypair, seq: u64) -> Vec<Output> {
    let r = SignedRecord::sign_pattern(pattern(&format!("p-{msg}")), seq, origin);
    st.handle(
        Input::Gossip(Gossip {
            id: MsgId(msg),
            topic: Topic::Records,
            author: None,
            source,
            data: push(r),
        }),
        T0,
    )
}

fn verify_of(outs: &[Output]) -> Option<(VerifyId, Priority)> {
    outs.iter().find_map(|o| match o {
        Output::Verify { id, priority, .. } => Some((*id, *priority)),
        _ => None,
    })
}

fn persist_of(outs: &[Output]) -> Option<(WriteId, Priority)> {
    outs.iter().find_map(|o| match o {
        Output::Persist { id, priority, .. } => Some((*id, *priority)),
        _ => None,
    })
}

fn ignored(outs: &[Output], msg: u64) -> bool {
    outs.contains(&Output::Validate {
        id: MsgId(msg),
        acceptance: Acceptance::Ignore,
    })
}

/// Verify `origin`'s record delivered as `msg` and answer its write as
/// stored: the core then counts a valid pattern for the origin.
fn deliver(st: &mut State, msg: u64, source: PeerId, origin: &Keypair, seq: u64) -> Priority {
    let (vid, lane) = verify_of(&gossip(st, msg, source, origin, seq)).unwrap();
    let outs = st.handle(
        Input::Verified {
            id: vid,
            results: vec![Ok(origin.public().to_peer_id())],
        },
        T0,
    );
    let (wid, wlane) = persist_of(&outs).unwrap();
    assert_eq!(lane, wlane, "a record's write takes its check's lane");
    st.handle(
        Input::Persisted {
            id: wid,
            result: Ok(Persisted {
                outcomes: vec![WriteOutcome::Inserted],
                frontier: vec![(origin.public().to_peer_id(), seq)],
            }),
        },
        T0,
    );
    lane
}

#[test]
fn fresh_identities_go_low_an_established_peer_high_and_our_own_records_first() {
    let mut st = node(cfg(), vec![]);
    let peer_key = testutil::key(2);
    let peer = peer_key.public().to_peer_id();
    st.handle(
        Input::PeerConnected {
            peer,
            outbound: true,
        },
        T0,
    );
    // a connected peer's first record: no accepted history yet
    assert!(!st.established(&peer, T0));
    assert_eq!(deliver(&mut st, 1, peer, &peer_key, 1), Priority::Low);
    // its records accepted before: established while connected
    assert!(st.established(&peer, T0));
    assert_eq!(deliver(&mut st, 2, peer, &peer_key, 2), Priority::High);
    // a fresh identity's record, relayed by the same established peer
    let fresh = Keypair::generate_ed25519();
    assert_eq!(deliver(&mut st, 3, peer, &fresh, 1), Priority::Low);
    // however many of its records were accepted: it is no connected peer
    for seq in 2..=5 {
        assert_eq!(deliver(&mut st, 3 + seq, peer, &fresh, seq), Priority::Low);
    }
    assert!(!st.established(&fresh.public().to_peer_id(), T0));
    // the established peer disconnects: a newcomer again
    st.handle(Input::PeerDisconnected { peer }, T0);
    assert!(!st.established(&peer, T0));
    // our own submission's write
    let outs = st.handle(
        Input::Submit {
            id: SubmitId(1),
            patterns: vec![pattern("own")],
        },
        T0,
    );
    assert_eq!(persist_of(&outs).unwrap().1, Priority::Own);
}

/// A reputation state first seen two days ago with `valid` valid patterns.
fn history(valid: u64) -> ReputationState {
    let mut r = ReputationState::new(T0 - 2.0 * 86_400.0);
    r.score = 5.0;
    r.counters.insert(ReputationEvent::ValidPattern, valid);
    r
}

#[test]
fn an_origin_past_the_newcomer_limits_is_established_unless_it_misbehaved() {
    let old = testutil::key(3).public().to_peer_id();
    let young = testutil::key(4).public().to_peer_id();
    let hostile = testutil::key(5).public().to_peer_id();
    let negative = testutil::key(6).public().to_peer_id();
    let mut h = history(500);
    h.hostile = true;
    let mut n = history(500);
    n.score = -5.0;
    let st = node(
        cfg(),
        vec![
            (old, history(500)),
            (young, history(3)),
            (hostile, h),
            (negative, n),
        ],
    );
    assert!(st.established(&old, T0));
    assert!(!st.established(&young, T0), "too few valid records");
    assert!(!st.established(&hostile, T0));
    assert!(!st.established(&negative, T0));
    let relay = testutil::key(7).public().to_peer_id();
    assert_eq!(st.lane_of(&old, Some(&relay), T0), Priority::High);
    assert_eq!(st.lane_of(&young, Some(&relay), T0), Priority::Low);
    assert_eq!(st.lane_of(&old, None, T0), Priority::Own);
}

#[test]
fn a_sender_in_bad_standing_cannot_put_an_established_name_in_the_high_lane() {
    let old_key = testutil::key(3);
    let old = old_key.public().to_peer_id();
    let mut st = node(cfg(), vec![(old, history(500))]);
    let liar = testutil::key(8).public().to_peer_id();
    st.handle(
        Input::PeerConnected {
            peer: liar,
            outbound: false,
        },
        T0,
    );
    let (_, lane) = verify_of(&gossip(&mut st, 1, liar, &old_key, 1)).unwrap();
    assert_eq!(
        lane,
        Priority::High,
        "a neutral relay of an established origin"
    );
    st.handle(
        Input::Charge {
            peer: liar,
            event: ReputationEvent::BadSignature,
        },
        T0,
    );
    assert!(st.standing(&liar, T0).score < 0.0);
    let (_, lane) = verify_of(&gossip(&mut st, 2, liar, &old_key, 2)).unwrap();
    assert_eq!(lane, Priority::Low);
}

/// The low lane fills and is shed on its own; an established origin's
/// records still get checked and written, and our own still find room.
/// Shedding charges nobody and stores nothing (the record stays fetchable).
#[test]
fn a_flood_of_fresh_identities_is_shed_in_its_lane_not_in_the_established_ones() {
    let mut c = cfg();
    c.max_pending_writes = 8;
    c.max_pending_verify = 8;
    let old_key = testutil::key(3);
    let old = old_key.public().to_peer_id();
    let mut st = node(c, vec![(old, history(500))]);
    let relay = testutil::key(9).public().to_peer_id();
    st.handle(
        Input::PeerConnected {
            peer: relay,
            outbound: true,
        },
        T0,
    );
    // writes: checks answered, writes never answered (they stay in flight)
    let mut written = 0;
    let mut shed = Vec::new();
    for i in 0..10u64 {
        let k = testutil::key(80_000 + i);
        let (vid, lane) = verify_of(&gossip(&mut st, i, relay, &k, 1)).unwrap();
        assert_eq!(lane, Priority::Low);
        let outs = st.handle(
            Input::Verified {
                id: vid,
                results: vec![Ok(k.public().to_peer_id())],
            },
            T0,
        );
        match persist_of(&outs) {
            Some((_, Priority::Low)) => written += 1,
            Some(other) => panic!("a fresh identity's write in lane {other:?}"),
            None => {
                assert!(ignored(&outs, i), "a shed copy is ignored, not rejected");
                shed.push(i);
            }
        }
    }
    assert_eq!(written, 6, "the low lane holds 3/4 of the writes in flight");
    assert_eq!(shed, vec![6, 7, 8, 9]);
    assert_eq!(st.counters().records_shed, 4);
    // an established origin's records: checked and written (high lane)
    for seq in 1..=1u64 {
        let (vid, lane) = verify_of(&gossip(&mut st, 100 + seq, relay, &old_key, seq)).unwrap();
        assert_eq!(lane, Priority::High);
        let outs = st.handle(
            Input::Verified {
                id: vid,
                results: vec![Ok(old)],
            },
            T0,
        );
        assert_eq!(persist_of(&outs).map(|p| p.1), Some(Priority::High));
    }
    // our own submission too
    let outs = st.handle(
        Input::Submit {
            id: SubmitId(1),
            patterns: vec![pattern("own")],
        },
        T0,
    );
    assert_eq!(persist_of(&outs).map(|p| p.1), Some(Priority::Own));
    // checks: never answered; the low lane stops at 3/4 of them
    let mut checking = 0;
    for i in 200..210u64 {
        let k = testutil::key(90_000 + i);
        let outs = gossip(&mut st, i, relay, &k, 1);
        match verify_of(&outs) {
            Some((_, Priority::Low)) => checking += 1,
            Some(other) => panic!("a fresh identity's check in lane {other:?}"),
            None => assert!(ignored(&outs, i)),
        }
    }
    assert_eq!(checking, 6);
    let (_, lane) = verify_of(&gossip(&mut st, 300, relay, &old_key, 2)).unwrap();
    assert_eq!(
        lane,
        Priority::High,
        "an established origin is still checked"
    );
    // nobody was charged for what was shed, and nothing of it is held
    let penalised: Vec<_> = st
        .reputation()
        .filter(|(_, r)| r.score < 0.0)
        .map(|(p, _)| *p)
        .collect();
    assert!(penalised.is_empty(), "{penalised:?}");
    for i in 6..10u64 {
        let p = testutil::key(80_000 + i).public().to_peer_id();
        assert_eq!(st.frontier().get(&p).copied().unwrap_or(0), 0);
        assert!(st.deferred().all(|(o, _)| *o != p), "shed is not deferred");
    }
}
