#![allow(clippy::unwrap_used)]
use super::*;

fn limits() -> PeerLimits {
    PeerLimits::new(3, 5, 10.0, 60.0)
}

fn peer(since: f64) -> Connected {
    Connected {
        peer: PeerId::random(),
        since,
        outbound: false,
        in_mesh: false,
        protected: false,
        score: 0.0,
    }
}

#[test]
fn max_is_never_below_target() {
    let l = PeerLimits::new(8, 4, 1.0, 1.0);
    assert_eq!(l.max, 8);
}

#[test]
fn nothing_is_pruned_within_the_dead_band() {
    let l = limits();
    for n in 0..=l.max {
        let peers: Vec<Connected> = (0..n).map(|_| peer(0.0)).collect();
        assert!(to_prune(&peers, &l, 1000.0).is_empty(), "{n} peers");
    }
}

#[test]
fn excess_is_pruned_down_to_max_never_below_target() {
    let l = limits();
    let peers: Vec<Connected> = (0..12).map(|_| peer(0.0)).collect();
    let pruned = to_prune(&peers, &l, 1000.0);
    assert_eq!(pruned.len(), 12 - l.max);
    assert!(peers.len() - pruned.len() >= l.target);
    let mut unique = pruned.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), pruned.len());
}

#[test]
fn young_and_protected_peers_are_kept_even_above_max() {
    let l = limits();
    let mut peers: Vec<Connected> = (0..8).map(|_| peer(995.0)).collect();
    peers[0].since = 0.0;
    peers[1].since = 0.0;
    peers[1].protected = true;
    // 8 connected, max 5: 3 to go, but only peers[0] is old and unprotected.
    assert_eq!(to_prune(&peers, &l, 1000.0), vec![peers[0].peer]);
    // Once the grace is over, the young ones go too; the protected one stays.
    let later = to_prune(&peers, &l, 1006.0);
    assert_eq!(later.len(), 3);
    assert!(!later.contains(&peers[1].peer));
}

#[test]
fn ranking_keeps_mesh_outbound_high_score_old_peers() {
    let l = PeerLimits::new(1, 1, 0.0, 0.0);
    let mut mesh = peer(0.0);
    mesh.in_mesh = true;
    let mut outbound = peer(0.0);
    outbound.outbound = true;
    let mut good = peer(0.0);
    good.score = 5.0;
    let old = peer(0.0);
    let new = peer(50.0);
    let peers = vec![
        mesh.clone(),
        outbound.clone(),
        good.clone(),
        old.clone(),
        new.clone(),
    ];
    // Four go: first the newer inbound non-mesh peer of score 0, then the
    // older one, then the better scored one, then the outbound one.
    let order = to_prune(&peers, &l, 100.0);
    assert_eq!(order, vec![new.peer, old.peer, good.peer, outbound.peer]);
}

#[test]
fn pruned_peer_is_refused_while_we_hold_target_then_let_in() {
    let l = limits();
    let mut b = PeerBook::default();
    for _ in 0..3 {
        b.on_connected(PeerId::random(), true, 0.0);
    }
    let p = PeerId::random();
    assert!(b.allows_inbound(&p, &l, 0.0));
    b.on_connected(p, false, 0.0);
    b.on_pruned(p, &l, 20.0);
    b.on_disconnected(p, &l, 20.1);
    assert!(!b.is_connected(&p));
    // It dials back within the cooldown: refused (we hold 3 = target) …
    assert!(!b.allows_inbound(&p, &l, 30.0));
    // … and we do not dial it either.
    assert!(!b.allows_outbound(p, &l, 30.0));
    // After the cooldown it is let in.
    assert!(b.allows_inbound(&p, &l, 81.0));
}

#[test]
fn pruned_peer_is_let_in_when_we_are_below_target() {
    let l = limits();
    let mut b = PeerBook::default();
    let p = PeerId::random();
    b.on_connected(p, false, 0.0);
    b.on_pruned(p, &l, 20.0);
    b.on_disconnected(p, &l, 20.1);
    assert!(b.allows_inbound(&p, &l, 21.0));
}

#[test]
fn dials_nobody_asked_for_stop_at_target_ours_go_through() {
    let l = limits();
    let mut b = PeerBook::default();
    // A kad walk's dials: three admitted (recorded), the fourth refused.
    let walk: Vec<PeerId> = (0..4).map(|_| PeerId::random()).collect();
    assert!(walk[..3].iter().all(|p| b.allows_outbound(*p, &l, 0.0)));
    assert!(!b.allows_outbound(walk[3], &l, 0.0));
    // A second attempt to an admitted peer is not a new dial.
    assert!(b.allows_outbound(walk[0], &l, 0.1));
    // A dial of our own (bootstrap, parent) goes through whatever the count.
    let parent = PeerId::random();
    b.note_dial(parent, 0.2);
    assert!(b.allows_outbound(parent, &l, 0.2));
    // Once they are connected, more connections to them are fine too.
    for p in &walk[..3] {
        b.on_connected(*p, true, 1.0);
    }
    assert!(b.allows_outbound(walk[1], &l, 1.0));
    assert!(!b.allows_outbound(walk[3], &l, 1.0));
}

#[test]
fn dials_stop_at_target_counting_dials_in_flight() {
    let l = limits();
    let mut b = PeerBook::default();
    let known: Vec<PeerId> = (0..10).map(|_| PeerId::random()).collect();
    let first = b.dials(&known, &l, 0.0);
    assert_eq!(first, known[..3].to_vec());
    // Nothing more while they are in flight …
    assert!(b.dials(&known, &l, 1.0).is_empty());
    assert!(!b.below_target(&l));
    // … one fails: one more in its place; the failed one cools down.
    b.on_dial_failed(&known[0], &l, 1.5);
    assert!(b.is_cooling(&known[0], 2.0));
    assert_eq!(b.dials(&known, &l, 2.0), vec![known[3]]);
    // A dial the gate refused (never recorded) cools nobody.
    b.on_dial_failed(&known[9], &l, 2.0);
    assert!(!b.is_cooling(&known[9], 2.0));
    // Stale dials expire.
    b.expire(2.0 + DIAL_TIMEOUT_SECS);
    assert!(b.below_target(&l));
}

#[test]
fn a_peer_that_closed_on_us_is_not_redialled_within_the_cooldown() {
    let l = limits();
    let mut b = PeerBook::default();
    let p = PeerId::random();
    assert!(b.want_dial(p, &l, 0.0));
    b.on_connected(p, true, 0.5);
    b.on_disconnected(p, &l, 5.0);
    assert!(b.is_cooling(&p, 6.0));
    assert!(!b.want_dial(p, &l, 6.0));
    assert!(b.want_dial(p, &l, 66.0));
}

#[test]
fn a_close_of_our_own_does_not_cool_the_peer() {
    let l = limits();
    let mut b = PeerBook::default();
    let p = PeerId::random();
    b.on_connected(p, true, 0.0);
    b.on_closing(p, 1.0);
    b.on_disconnected(p, &l, 1.1);
    assert!(!b.is_cooling(&p, 2.0));
}

#[test]
fn the_cooling_set_is_bounded() {
    let l = limits();
    let mut b = PeerBook::default();
    for i in 0..(MAX_REMEMBERED + 100) {
        let p = PeerId::random();
        b.on_connected(p, true, i as f64 * 0.001);
        b.on_disconnected(p, &l, i as f64 * 0.001);
    }
    assert!(b.cooling.len() <= MAX_REMEMBERED);
    b.expire(1e9);
    assert!(b.cooling.is_empty());
}
