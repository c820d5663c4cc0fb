//! Tests of the open-mesh learning policy ([`super`]).

use super::*;
use crate::aggregate::{naive_pool, seed_aggregate_federated_insights, PeerInsights};
use crate::insights::Insight;
use crate::posterior::Prior;
use crate::reputation::{standing, ReputationPolicy, ReputationState, Trust};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const MEANS: [f64; 5] = [0.3, 0.45, 0.6, 0.7, 0.66];
const NOW: f64 = 1_800_000_000.0;

fn stranger() -> Standing {
    standing(
        &ReputationState::new(NOW),
        Trust::Default,
        NOW,
        &ReputationPolicy::default(),
    )
}

/// `n` samples per depth around `means` (uniform noise, sd ≈ 0.1).
fn table(means: [f64; 5], n: u64, rng: &mut ChaCha8Rng) -> DepthTable {
    let mut t = DepthTable::default();
    for (d, m) in means.iter().enumerate() {
        for _ in 0..n {
            let q: f64 = (m + (rng.gen::<f64>() - 0.5) * 0.35).clamp(0.0, 1.0);
            t.0[d].add(q, q > 0.5, 1.0);
        }
    }
    t
}

/// Deterministic samples alternating `mean ± 0.1` at one depth.
fn fixed(depth: Depth, mean: f64, n: u64) -> DepthTable {
    let mut t = DepthTable::default();
    for i in 0..n {
        let q = if i % 2 == 0 { mean - 0.1 } else { mean + 0.1 };
        t.get_mut(depth).add(q, q > 0.5, 1.0);
    }
    t
}

fn liar_means() -> [f64; 5] {
    let mut lie = MEANS;
    lie[0] = 0.9;
    lie[3] = 0.2;
    lie
}

fn me(t: DepthTable) -> OriginEvidence<u32> {
    origin_evidence(0, t, say(Role::SelfNode, &stranger()))
}

fn peer(key: u32, t: DepthTable) -> OriginEvidence<u32> {
    origin_evidence(key, t, say(Role::Peer, &stranger()))
}

#[test]
fn roles_map_standing_to_say() {
    let s = stranger();
    assert!(s.newcomer && s.weight == 1.0);
    let mine = origin_evidence(1, DepthTable::default(), say(Role::SelfNode, &s));
    assert!(mine.anchor && !mine.newcomer && mine.weight == 1.0);
    let p = origin_evidence(2, DepthTable::default(), say(Role::Peer, &s));
    assert!(!p.anchor && p.newcomer && p.weight == 1.0);
    let mut hostile = ReputationState::new(NOW);
    hostile.hostile = true;
    let h = standing(&hostile, Trust::Trusted, NOW, &ReputationPolicy::default());
    let a = origin_evidence(3, DepthTable::default(), say(Role::Anchor, &h));
    assert_eq!(a.weight, 0.0);
    assert!(!a.anchor, "a hostile anchor is no reference");
    let t = standing(
        &ReputationState::new(NOW),
        Trust::Trusted,
        NOW,
        &ReputationPolicy::default(),
    );
    let a = origin_evidence(4, DepthTable::default(), say(Role::Anchor, &t));
    assert!(a.anchor && !a.newcomer && a.weight == 2.0 && a.bonus == 0.2);
}

/// Issue 9: two honest nodes with 1 and 1000 patterns both use each other's
/// evidence — volume never makes an honest peer an outlier.
#[test]
fn one_and_a_thousand_patterns_use_each_other() {
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let small = fixed(Depth::Deep, 0.7, 1);
    let big = table(MEANS, 200, &mut rng); // 1000 patterns
    assert_eq!(big.total(), 1000);
    let cfg = RobustConfig::default();

    // The small node's view: the big stranger is used, capped, not excluded.
    let view_small = robust_aggregate(&[me(small), peer(1, big)], &cfg);
    assert!(
        view_small.inconsistent.is_empty(),
        "{:?}",
        view_small.inconsistent
    );
    assert_eq!(view_small.used, vec![0, 1]);
    for d in Depth::ALL {
        let n = view_small.evidence[d.index()].n;
        let own = small.get(d).n as f64;
        assert!(n > own, "{d}: {n} effective vs {own} own");
    }
    assert_eq!(
        view_small.best_named(&Prior::default()).map(|b| b.0),
        Some(Depth::Deep)
    );

    // The big node's view: the single pattern counts too.
    let view_big = robust_aggregate(&[me(big), peer(1, small)], &cfg);
    assert!(view_big.inconsistent.is_empty());
    assert_eq!(view_big.used, vec![0, 1]);
    let deep = view_big.evidence[Depth::Deep.index()];
    let alone = robust_aggregate(&[me(big)], &cfg).evidence[Depth::Deep.index()];
    assert!(deep.n > alone.n, "{} vs {}", deep.n, alone.n);
}

#[test]
fn strangers_count_in_full_once_confirmed() {
    let cfg = RobustConfig::default();
    let every = |n: u64| {
        let mut t = DepthTable::default();
        for d in Depth::ALL {
            t.merge(&fixed(d, MEANS[d.index()], n));
        }
        t
    };
    let stranger_t = every(10);
    // No own evidence yet: the stranger counts unconfirmed/confirm_samples.
    let first = robust_aggregate(&[me(DepthTable::default()), peer(1, stranger_t)], &cfg);
    let share = cfg.unconfirmed_samples / cfg.confirm_samples;
    for d in 0..5 {
        assert!((first.evidence[d].n - 10.0 * share).abs() < 1e-9);
    }
    // Own outcomes that agree confirm it: full count at every depth.
    let own = every(2);
    let later = robust_aggregate(&[me(own), peer(1, stranger_t)], &cfg);
    assert!(later.inconsistent.is_empty());
    for d in 0..5 {
        assert!(later.evidence[d].n > 11.0, "{}", later.evidence[d].n);
    }
}

#[test]
fn own_outcomes_contradict_a_liar_everywhere() {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let cfg = RobustConfig::default();
    // The node tried the depth the liar praises (minimal) three times.
    let own = fixed(Depth::Minimal, 0.3, 3);
    let liar = table(liar_means(), 30, &mut rng);
    let honest = table(MEANS, 30, &mut rng);
    let agg = robust_aggregate(&[me(own), peer(1, liar), peer(2, honest)], &cfg);
    assert_eq!(agg.used, vec![0, 2]);
    assert_eq!(
        charged(&agg),
        vec![(1, ReputationEvent::InconsistentWithConsensus)]
    );
    assert!(agg
        .inconsistent
        .iter()
        .any(|i| i.key == 1 && i.kind == InconsistencyKind::Anchor && i.depth == Depth::Minimal));
    assert_eq!(
        agg.best_named(&Prior::default()).map(|b| b.0),
        Some(Depth::Deep)
    );
}

#[test]
fn a_sybil_majority_cannot_outcast_an_honest_peer() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let cfg = RobustConfig::default();
    // The node has evidence only at light; 30 unconfirmed liars (they report
    // only where the node has none) outvote one honest stranger at deep.
    let own = fixed(Depth::Light, 0.45, 4);
    let mut origins = vec![me(own), peer(1, table(MEANS, 20, &mut rng))];
    for k in 0..30 {
        let mut t = table(liar_means(), 20, &mut rng);
        t.0[Depth::Light.index()] = DepthStats::default();
        origins.push(peer(100 + k, t));
    }
    let agg = robust_aggregate(&origins, &cfg);
    assert!(agg.used.contains(&1), "the honest peer keeps its say");
    assert!(
        charged(&agg).iter().all(|(k, _)| *k != 1),
        "and its reputation"
    );
    assert!(agg
        .inconsistent
        .iter()
        .filter(|i| i.key == 1)
        .all(|i| i.kind == InconsistencyKind::Majority));
    // Once the node tries deep itself, its own outcomes settle it.
    let mut own = own;
    own.merge(&fixed(Depth::Deep, 0.7, 3));
    origins[0] = me(own);
    let agg = robust_aggregate(&origins, &cfg);
    assert!(agg.used.iter().all(|k| *k < 100), "{:?}", agg.used);
    assert_eq!(
        agg.best_named(&Prior::default()).map(|b| b.0),
        Some(Depth::Deep)
    );
}

#[test]
fn volume_is_capped_never_excluded() {
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let cfg = RobustConfig::default();
    let mut origins = vec![me(table(MEANS, 5, &mut rng))];
    for k in 1..5 {
        origins.push(peer(k, table(MEANS, 5, &mut rng)));
    }
    origins.push(peer(99, table(MEANS, 500, &mut rng)));
    let agg = robust_aggregate(&origins, &cfg);
    assert!(agg.used.contains(&99));
    assert!(agg
        .inconsistent
        .iter()
        .all(|i| i.kind != InconsistencyKind::Volume));
    // 4×5 + 5 + at most max(cap_floor, median) for the heavy one.
    for d in 0..5 {
        assert!(
            agg.evidence[d].n <= 25.0 + cfg.cap_floor + 1e-9,
            "{}",
            agg.evidence[d].n
        );
    }
}

#[test]
fn the_bonus_moves_the_contradiction_threshold() {
    let cfg = RobustConfig::default();
    // z ≈ 4.46 from the node's own evidence: beyond 4, within 4 × 1.2.
    let own = fixed(Depth::Standard, 0.5, 10);
    let close = fixed(Depth::Standard, 0.71, 10);
    let with_bonus = |bonus: f64| {
        let mut p = peer(1, close);
        p.bonus = bonus;
        robust_aggregate(&[me(own), p], &cfg)
    };
    assert!(with_bonus(0.2).used.contains(&1));
    assert!(!with_bonus(0.0).used.contains(&1));
    assert!(!with_bonus(-0.2).used.contains(&1));
}

#[test]
fn apply_bonus_is_the_seed_table() {
    assert!((apply_bonus(0.5, 0.2) - 0.6).abs() < 1e-12);
    assert!((apply_bonus(0.5, -0.2) - 0.4).abs() < 1e-12);
    assert_eq!(apply_bonus(0.95, 0.2), 1.0);
    assert_eq!(apply_bonus(f64::NAN, 0.2), 0.0);
    assert_eq!(apply_bonus(0.5, 7.0), 0.6, "bonus clamped to ±0.2");
    // The seed baseline applies it per source.
    let ins = |c: f64| Insight {
        insight_type: "optimal_depth".into(),
        description: "x".into(),
        evidence_count: 1,
        confidence: c,
        recommendation: String::new(),
        learned_at: 0.0,
    };
    let peers = vec![PeerInsights {
        source: "a".into(),
        weight: 2.0,
        bonus: 0.2,
        insights: vec![ins(0.5)],
    }];
    let out = seed_aggregate_federated_insights(&[ins(0.5)], 1.0, &peers);
    assert!((out[0].confidence - (0.5 + 2.0 * 0.6) / 3.0).abs() < 1e-12);
}

#[test]
fn honest_established_peers_pool_like_merged_samples() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let cfg = RobustConfig {
        random_effects: false,
        guard: false,
        huber: f64::INFINITY,
        contrast_huber: f64::INFINITY,
        ..Default::default()
    };
    let mut origins = vec![me(table(MEANS, 15, &mut rng))];
    for k in 1..8 {
        let mut p = peer(k, table(MEANS, 15, &mut rng));
        p.newcomer = false;
        origins.push(p);
    }
    let agg = robust_aggregate(&origins, &cfg);
    assert!(agg.inconsistent.is_empty(), "{:?}", agg.inconsistent);
    let merged = naive_pool(&origins);
    for d in 0..5 {
        assert!((agg.evidence[d].n - merged.0[d].n as f64).abs() < 1e-6);
        assert!((agg.evidence[d].mean - merged.0[d].avg_quality()).abs() < 1e-9);
    }
}

#[test]
fn order_independent_and_no_panic_on_odd_input() {
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    let mut origins = vec![me(table(MEANS, 3, &mut rng))];
    for k in 1..6 {
        origins.push(peer(k, table(MEANS, 4, &mut rng)));
    }
    origins.push(peer(50, table(liar_means(), 40, &mut rng)));
    let mut odd = peer(51, table(MEANS, 2, &mut rng));
    odd.weight = f64::NAN;
    odd.bonus = f64::INFINITY;
    origins.push(odd);
    let cfg = RobustConfig::default();
    let a = robust_aggregate(&origins, &cfg);
    origins.reverse();
    let b = robust_aggregate(&origins, &cfg);
    assert_eq!(a.evidence, b.evidence);
    assert_eq!(a.inconsistent, b.inconsistent);
    assert!(!a.used.contains(&51));
    assert!(robust_aggregate::<u32>(&[], &cfg).used.is_empty());
}

/// Issue 9: an honest peer with 30–1000× everyone else's volume is tested at
/// its real precision but never screened out, whatever the others hold.
#[test]
fn honest_heavy_peers_are_never_screened() {
    let cfg = RobustConfig::default();
    let mut flagged = 0;
    for seed in 0..300u64 {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut origins = vec![me(table(MEANS, rng.gen_range(0..6), &mut rng))];
        for k in 1..5 {
            origins.push(peer(k, table(MEANS, rng.gen_range(1..8), &mut rng)));
        }
        let heavy = rng.gen_range(30..1000);
        origins.push(peer(99, table(MEANS, heavy, &mut rng)));
        let agg = robust_aggregate(&origins, &cfg);
        assert!(agg.used.contains(&99), "seed {seed}");
        flagged += agg.inconsistent.iter().filter(|i| i.key == 99).count();
    }
    assert_eq!(flagged, 0, "heavy honest peer screened {flagged} times");
}

/// Two depths `a`, `b` with `n` fixed samples each around the given means.
fn pair(a: (Depth, f64), b: (Depth, f64), n: u64) -> DepthTable {
    let mut t = fixed(a.0, a.1, n);
    t.merge(&fixed(b.0, b.1, n));
    t
}

/// A camouflaged mesh: 6 honest strangers and 4 liars who report the truth
/// except that they swap the two leading depths, each pushed 0.03 past the
/// other (`deep` 0.70 is best, `thorough` 0.675 the runner-up). No single
/// liar is outside noise at either depth, and pooled per depth the lie wins;
/// the contrasts `deep − thorough` disagree beyond noise, so step 7 weighs
/// the liars down at the pair and the honest contrast decides.
#[test]
fn camouflaged_swap_is_outweighed_by_the_contested_pair() {
    let (a, b) = (Depth::Deep, Depth::Thorough);
    let truth = pair((a, 0.70), (b, 0.675), 20);
    let lie = pair((a, 0.645), (b, 0.73), 20);
    let mut origins = vec![me(pair((a, 0.70), (b, 0.675), 10))];
    origins.extend((1..=6).map(|k| peer(k, truth)));
    origins.extend((7..=10).map(|k| peer(k, lie)));
    let lead =
        |agg: &RobustAggregate<u32>| agg.evidence[a.index()].mean > agg.evidence[b.index()].mean;

    let off = RobustConfig {
        contrast_huber: f64::INFINITY,
        ..Default::default()
    };
    let old = robust_aggregate(&origins, &off);
    assert!(
        !lead(&old),
        "without step 7 the swap wins: {:?}",
        old.evidence
    );
    assert!(charged(&old).is_empty(), "no liar is outside noise alone");

    let new = robust_aggregate(&origins, &RobustConfig::default());
    assert!(lead(&new), "the contested pair decides: {:?}", new.evidence);
    assert!(charged(&new).is_empty(), "down-weighting charges nobody");
    assert_eq!(new.used.len(), 11, "nobody is excluded");
    // The honest mesh without liars is untouched by step 7.
    let honest: Vec<_> = origins[..7].to_vec();
    assert_eq!(
        robust_aggregate(&honest, &off).evidence,
        robust_aggregate(&honest, &RobustConfig::default()).evidence
    );
}

/// Issue 9, camouflage at 1000 seeds: the honest contrasts are spread by
/// sampling noise and the five liars (a third of the origins) all sit on one
/// side, so the median contrast is pulled towards them and the honest peers
/// on the far side looked like outliers. The M-estimate centre and the cubic
/// weight (policy step 7) leave the liars too little say to swap the pair;
/// the honest merged data (`deep` 0.015 ahead) decides. The previous step 7
/// (median centre, squared weight, Q gate) named `thorough`.
#[test]
fn camouflaged_swap_loses_to_spread_honest_contrasts() {
    let (a, b) = (Depth::Deep, Depth::Thorough);
    let offsets = [-0.05, -0.03, -0.02, -0.01, 0.0, 0.01, 0.02, 0.03, 0.05];
    let mut origins = vec![me(pair((a, 0.70), (b, 0.685), 12))];
    for (k, off) in offsets.iter().enumerate() {
        let half = off / 2.0;
        origins.push(peer(
            k as u32 + 1,
            pair((a, 0.70 + half), (b, 0.685 - half), 30),
        ));
    }
    let lie = pair((a, 0.655), (b, 0.73), 20);
    origins.extend((20..25).map(|k| peer(k, lie)));
    let agg = robust_aggregate(&origins, &RobustConfig::default());
    let (ea, eb) = (agg.evidence[a.index()], agg.evidence[b.index()]);
    assert!(
        ea.mean > eb.mean + 0.001,
        "the swap won: {:?}",
        agg.evidence
    );
    assert!(charged(&agg).is_empty(), "down-weighting charges nobody");
    assert_eq!(agg.used.len(), 15, "nobody is excluded");
}
