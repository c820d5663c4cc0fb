//! One simulated run: N honest nodes (and adversaries) over rounds.
//!
//! Each round every honest node draws its ATP, chooses a depth with its
//! strategy from its current view, observes an outcome from the environment
//! and records the pattern; every origin's new records of the round travel to
//! every honest node, arriving `delay` rounds later, or — with probability
//! `loss` — `resync` rounds later still (the frontier-based anti-entropy sync
//! of the real node repairs gossip loss). Adversaries inject their records
//! the same way. Each honest node keeps per-origin statistics and turns them
//! into a view with its aggregation mode. Node 0 is observed: after each
//! round its P(best) is checked against the confidence target.

use metamesh_protocol::aggregate::{best_of, seed_weighted_pool, OriginEvidence, RobustConfig};
use metamesh_protocol::policy::{self, Role};
use metamesh_protocol::posterior::{norm_cdf, prob_best, Belief, Prior};
use metamesh_protocol::reputation::{
    self, ReputationEvent, ReputationPolicy, ReputationState, Trust,
};
use metamesh_protocol::strategy::{DepthStrategy, LearningView, Legion, Posterior, Thor};
use metamesh_protocol::{Depth, DepthTable, Pattern, SignedRecord};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::env::{quality_around, Environment, ATP_MAX, QUALITY_SD};

/// How a node combines the origins' evidence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Aggregation {
    /// Every record merged with equal weight.
    Naive,
    /// The protocol document's reputation weights (0.5–2.0) over pooled
    /// records, nothing else.
    SeedWeighting,
    /// The protocol's learning policy, `metamesh_protocol::policy` (the
    /// same functions the node calls).
    Robust,
}

impl Aggregation {
    pub const ALL: [Aggregation; 3] = [
        Aggregation::Naive,
        Aggregation::SeedWeighting,
        Aggregation::Robust,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Aggregation::Naive => "naive",
            Aggregation::SeedWeighting => "seed_weighting",
            Aggregation::Robust => "robust",
        }
    }
}

/// The adversaries in a run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Adversary {
    None,
    /// Established members (a fraction of the mesh) reporting the worst
    /// depth as excellent and the best as poor.
    Liars {
        fraction: f64,
    },
    /// Established members that report honestly except on the best two
    /// depths, which they swap (each shifted 0.03 past the other).
    Camouflaged {
        fraction: f64,
    },
    /// One attacker with `identities` fresh keys (newcomers), each a liar.
    /// Honest nodes are configured to trust one honest peer.
    Sybil {
        identities: usize,
    },
    /// Established members each sending `per_round` valid, plausible but
    /// mediocre records for the best depth (0.03 below the runner-up).
    Flooders {
        fraction: f64,
        per_round: usize,
    },
    /// No adversary: a `fraction` of the honest nodes (never node 0, the
    /// observed one) record `factor` honest outcomes per round instead of one.
    Heavy {
        fraction: f64,
        factor: usize,
    },
}

impl Adversary {
    pub fn label(&self) -> String {
        match self {
            Adversary::None => "none".into(),
            Adversary::Liars { fraction } => format!("liars{:.0}", fraction * 100.0),
            Adversary::Camouflaged { fraction } => format!("camouflaged{:.0}", fraction * 100.0),
            Adversary::Sybil { identities } => format!("sybil{identities}"),
            Adversary::Flooders { fraction, .. } => format!("flooders{:.0}", fraction * 100.0),
            Adversary::Heavy { factor, .. } => format!("heavy{factor}x"),
        }
    }

    /// Number of adversarial identities next to `honest` honest nodes: a
    /// fraction f of the mesh means round(f·N/(1−f)) (at least 1).
    pub fn count(&self, honest: usize) -> usize {
        let of_mesh = |f: f64| ((f * honest as f64 / (1.0 - f)).round() as usize).max(1);
        match *self {
            Adversary::None | Adversary::Heavy { .. } => 0,
            Adversary::Liars { fraction }
            | Adversary::Camouflaged { fraction }
            | Adversary::Flooders { fraction, .. } => of_mesh(fraction),
            Adversary::Sybil { identities } => identities,
        }
    }

    fn newcomers(&self) -> bool {
        matches!(self, Adversary::Sybil { .. })
    }

    /// How many honest nodes (1..) record `factor` outcomes per round.
    fn heavy(&self, honest: usize) -> (usize, usize) {
        match *self {
            Adversary::Heavy { fraction, factor } => (
                ((fraction * honest as f64).round() as usize).min(honest.saturating_sub(1)),
                factor.max(1),
            ),
            _ => (0, 1),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum StrategyKind {
    Legion,
    Thor,
    Posterior,
}

impl StrategyKind {
    pub const ALL: [StrategyKind; 3] = [
        StrategyKind::Legion,
        StrategyKind::Thor,
        StrategyKind::Posterior,
    ];

    pub fn name(self) -> &'static str {
        match self {
            StrategyKind::Legion => "legion",
            StrategyKind::Thor => "thor",
            StrategyKind::Posterior => "posterior",
        }
    }

    fn build(self) -> Box<dyn DepthStrategy> {
        match self {
            StrategyKind::Legion => Box::new(Legion::default()),
            StrategyKind::Thor => Box::new(Thor::default()),
            StrategyKind::Posterior => Box::new(Posterior {
                exact_confidence: false,
                ..Posterior::default()
            }),
        }
    }
}

/// One run's configuration.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SimConfig {
    pub honest: usize,
    pub adversary: Adversary,
    pub aggregation: Aggregation,
    pub strategy: StrategyKind,
    /// Hard environment (best two depths 0.02–0.03 apart).
    pub hard: bool,
    /// Rounds after which a still-unconfident run is censored.
    pub max_rounds: usize,
    /// Round at which accuracy is measured; regret is averaged over rounds
    /// 1..=budget.
    pub budget: usize,
    pub confidence_target: f64,
    pub delay: usize,
    pub loss: f64,
    pub resync: usize,
    /// Sign (and verify) the first record of every origin with its real key.
    pub sign_sample: bool,
    /// Open mesh: every peer (honest or not) is a stranger — a fresh
    /// reputation state, nobody operator-trusted — as for a real node with
    /// the default configuration. Otherwise peers are established members
    /// (score 30, weeks old) and, with a Sybil attack, honest node 1 is
    /// operator-trusted.
    pub open: bool,
    /// Parameters of the robust mode.
    pub robust: RobustConfig,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            honest: 10,
            adversary: Adversary::None,
            aggregation: Aggregation::Robust,
            strategy: StrategyKind::Posterior,
            hard: false,
            max_rounds: 600,
            budget: 100,
            confidence_target: 0.9,
            delay: 1,
            loss: 0.05,
            resync: 5,
            sign_sample: true,
            open: false,
            robust: RobustConfig::default(),
        }
    }
}

/// What one run measured.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RunResult {
    pub seed: u64,
    pub hard: bool,
    /// First round at which node 0 named a depth with P(best) ≥ target.
    pub first_confident: Option<usize>,
    /// Whether that depth was the true best.
    pub first_confident_correct: Option<bool>,
    /// First round at which node 0 named the true best with P(best) ≥ target.
    pub rounds_to_correct: Option<usize>,
    /// Node 0's named depth at `budget` is the true best.
    pub correct_at_budget: bool,
    /// P(best) of node 0's named depth at `budget`.
    pub confidence_at_budget: f64,
    /// Mean per-decision regret of honest nodes over rounds 1..=budget.
    pub regret: f64,
    /// Rounds simulated.
    pub rounds: usize,
    /// Signed records verified (sample).
    pub signed_checked: usize,
}

/// Seconds of simulated time per round (the node charges inconsistency at
/// most once every 30 s; a round is one decision of every node).
pub const ROUND_SECS: f64 = 60.0;
/// Score of established members (good).
const ESTABLISHED_SCORE: f64 = 30.0;

/// The reputation state of an established member at `now`: weeks old, many
/// valid records, score 30.
fn established(now: f64) -> ReputationState {
    let mut s = ReputationState::new(now - 30.0 * 86_400.0);
    s.counters.insert(ReputationEvent::ValidPattern, 10_000);
    s.score = ESTABLISHED_SCORE;
    s.last_update = now;
    s
}

struct Node {
    strategy: Box<dyn DepthStrategy>,
    /// Per-origin statistics received (own origin included).
    tables: Vec<DepthTable>,
    /// This node's reputation state of every origin (the real rules).
    rep: Vec<ReputationState>,
    /// What the operator configured for every origin.
    trust: Vec<Trust>,
    view: LearningView,
}

/// Build a node's learning view under an aggregation mode. Every mode sees
/// the same per-origin say — the protocol's `policy::say` from the real
/// reputation standing; the robust mode aggregates with the protocol's
/// learning policy and charges the origins it names, as the node does.
fn aggregate_view(
    me: usize,
    node: &mut Node,
    mode: Aggregation,
    cfg: &RobustConfig,
    now: f64,
    prior: Prior,
) -> LearningView {
    let rep_policy = ReputationPolicy::default();
    if mode == Aggregation::Naive {
        let mut t = DepthTable::default();
        for x in &node.tables {
            t.merge(x);
        }
        return LearningView::from_table(&t, prior);
    }
    let origins: Vec<OriginEvidence<usize>> = node
        .tables
        .iter()
        .enumerate()
        .filter(|(i, t)| t.total() > 0 || *i == me)
        .map(|(i, t)| {
            let standing = reputation::standing(&node.rep[i], node.trust[i], now, &rep_policy);
            let role = if i == me {
                Role::SelfNode
            } else if node.trust[i] == Trust::Trusted {
                Role::Anchor
            } else {
                Role::Peer
            };
            policy::origin_evidence(i, *t, policy::say(role, &standing))
        })
        .collect();
    let agg = if mode == Aggregation::Robust {
        let agg = policy::robust_aggregate(&origins, cfg);
        for (k, event) in policy::charged(&agg) {
            if k != me {
                reputation::apply(&mut node.rep[k], event, now, &rep_policy);
            }
        }
        agg
    } else {
        seed_weighted_pool(&origins)
    };
    agg.view(prior)
}

/// Cheap upper bound of P(best) for the leading depth: P(leader beats the
/// runner-up). Exact P(best) ≤ this, so the exact integral is only needed
/// when this reaches the target.
fn pairwise_confidence(b: &[Belief; Depth::COUNT]) -> f64 {
    let lead = (0..Depth::COUNT).fold(0, |a, i| if b[i].mean > b[a].mean { i } else { a });
    (0..Depth::COUNT)
        .filter(|i| *i != lead)
        .map(|i| {
            norm_cdf(
                (b[lead].mean - b[i].mean)
                    / (b[lead].sd.powi(2) + b[i].sd.powi(2)).sqrt().max(1e-12),
            )
        })
        .fold(1.0, f64::min)
}

fn named_depth(view: &LearningView) -> (Depth, f64) {
    best_of(&prob_best(&view.beliefs()))
}

fn sign_and_check(key_seed: u64, depth: Depth, quality: f64, now: f64) -> bool {
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&key_seed.to_le_bytes());
    bytes[8] = 0x5a;
    let Ok(key) = libp2p_identity::Keypair::ed25519_from_bytes(bytes) else {
        return false;
    };
    let peer = key.public().to_peer_id().to_string();
    let pattern = Pattern {
        pattern_id: format!("sim-{key_seed}-1"),
        node_id: peer,
        timestamp: now,
        platform: "sim".into(),
        depth_used: depth,
        mode: "sim".into(),
        quality_achieved: quality,
        success: quality >= 0.5,
        atp_before: 100.0,
        atp_after: 100.0 - metamesh_protocol::strategy::ATP_COST[depth.index()],
        reputation_before: None,
        reputation_after: None,
        context: None,
        pattern_type: None,
        cogitation_mode: None,
        outcome_confidence: None,
        verification_quality_score: None,
        cognitive_depth: None,
        network_health: None,
        federation_context: None,
    };
    if pattern.validate(now).is_err() {
        return false;
    }
    let rec = SignedRecord::sign_pattern(pattern, 1, &key);
    match SignedRecord::from_bytes(&rec.to_bytes()) {
        Ok(r) => r.open_pattern(now).is_ok(),
        Err(_) => false,
    }
}

/// Run one simulation.
pub fn run(cfg: &SimConfig, seed: u64) -> RunResult {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x6d65_7461_6d65_7368);
    let env = Environment::sample(cfg.hard, &mut rng);
    let prior = Prior::default();
    let rcfg = cfg.robust;
    let honest = cfg.honest.max(1);
    let n_adv = cfg.adversary.count(honest);
    let origins = honest + n_adv;
    let best = env.best();
    let second = env.second();
    let worst = env.worst();
    let t0 = 1_800_000_000.0;
    let now = t0;

    // Who is trusted: in a members' mesh under a Sybil attack, honest peer 1
    // (the operator's configured trusted peer); otherwise nobody but oneself.
    let trusted = !cfg.open && matches!(cfg.adversary, Adversary::Sybil { .. }) && honest >= 2;
    let mut nodes: Vec<Node> = (0..honest)
        .map(|me| {
            let rep = (0..origins)
                .map(|o| {
                    let fresh = cfg.open || (o >= honest && cfg.adversary.newcomers());
                    if fresh || o == me {
                        ReputationState::new(now)
                    } else {
                        established(now)
                    }
                })
                .collect();
            let trust = (0..origins)
                .map(|o| {
                    if trusted && o == 1 && me != 1 {
                        Trust::Trusted
                    } else {
                        Trust::Default
                    }
                })
                .collect();
            Node {
                strategy: cfg.strategy.build(),
                tables: vec![DepthTable::default(); origins],
                rep,
                trust,
                view: LearningView::from_table(&DepthTable::default(), prior),
            }
        })
        .collect();
    let (heavy, heavy_factor) = cfg.adversary.heavy(honest);

    let mut signed_checked = 0;
    if cfg.sign_sample {
        for o in 0..origins {
            let d = Depth::ALL[o % Depth::COUNT];
            if sign_and_check(seed.wrapping_mul(1000).wrapping_add(o as u64), d, 0.5, now) {
                signed_checked += 1;
            }
        }
    }

    // Delivery ring: (receiver, origin, produced round), by arrival round.
    let ring = cfg.delay + cfg.resync + 2;
    let mut arrivals: Vec<Vec<(u16, u16, u32)>> = vec![Vec::new(); ring];
    let mut produced: Vec<Vec<DepthTable>> = vec![vec![DepthTable::default(); origins]; ring];

    let mut result = RunResult {
        seed,
        hard: cfg.hard,
        first_confident: None,
        first_confident_correct: None,
        rounds_to_correct: None,
        correct_at_budget: false,
        confidence_at_budget: 0.0,
        regret: 0.0,
        rounds: 0,
        signed_checked,
    };
    let mut regret_sum = 0.0;
    let mut regret_n = 0usize;

    for round in 1..=cfg.max_rounds {
        let slot = round % ring;
        for t in produced[slot].iter_mut() {
            *t = DepthTable::default();
        }
        let now = t0 + round as f64 * ROUND_SECS;
        // Honest decisions.
        for (me, node) in nodes.iter_mut().enumerate() {
            let atp = rng.gen_range(0.0..ATP_MAX);
            let choice = node.strategy.choose(&node.view, atp, &mut rng);
            let outcomes = if me >= 1 && me <= heavy {
                heavy_factor
            } else {
                1
            };
            for _ in 0..outcomes {
                let (q, ok, cost) = env.draw(choice.depth, &mut rng);
                produced[slot][me].0[choice.depth.index()].add(q, ok, cost);
                node.tables[me].0[choice.depth.index()].add(q, ok, cost);
            }
            if round <= cfg.budget {
                regret_sum += env.best_affordable_mean(atp) - env.mean(choice.depth);
                regret_n += 1;
            }
        }
        // Adversarial records.
        for a in 0..n_adv {
            let o = honest + a;
            let t = &mut produced[slot][o];
            match cfg.adversary {
                Adversary::None | Adversary::Heavy { .. } => {}
                Adversary::Liars { .. } | Adversary::Sybil { .. } => {
                    if rng.gen_bool(0.5) {
                        let q = quality_around(env.mean(best) + 0.1, QUALITY_SD, &mut rng);
                        t.0[worst.index()].add(q, q >= 0.5, 4.0);
                    } else {
                        let q = quality_around(env.mean(worst), QUALITY_SD, &mut rng);
                        t.0[best.index()].add(q, q >= 0.5, 35.0);
                    }
                }
                Adversary::Camouflaged { .. } => {
                    let d = Depth::ALL[rng.gen_range(0..Depth::COUNT)];
                    let mean = if d == best {
                        env.mean(second) - 0.03
                    } else if d == second {
                        env.mean(best) + 0.03
                    } else {
                        env.mean(d)
                    };
                    let q = quality_around(mean, QUALITY_SD, &mut rng);
                    t.0[d.index()].add(q, q >= 0.5, 20.0);
                }
                Adversary::Flooders { per_round, .. } => {
                    for _ in 0..per_round {
                        let q = quality_around(env.mean(second) - 0.03, 0.05, &mut rng);
                        t.0[best.index()].add(q, q >= 0.5, 35.0);
                    }
                }
            }
        }
        // Send: every origin's records of this round to every honest node.
        for (o, delta) in produced[slot].iter().enumerate() {
            if delta.total() == 0 {
                continue;
            }
            for r in 0..honest {
                if r == o {
                    continue;
                }
                let extra = if rng.gen_bool(cfg.loss) {
                    cfg.resync
                } else {
                    0
                };
                let at = (round + cfg.delay.max(1) + extra) % ring;
                arrivals[at].push((r as u16, o as u16, round as u32));
            }
        }
        // Deliver what arrives now (sent in earlier rounds).
        let due_slot = (round + 1) % ring;
        let rep_policy = ReputationPolicy::default();
        for (r, o, p) in &arrivals[due_slot] {
            let t = produced[*p as usize % ring][*o as usize];
            let node = &mut nodes[*r as usize];
            node.tables[*o as usize].merge(&t);
            // Each record passed validation: the same event the node applies.
            reputation::apply_n(
                &mut node.rep[*o as usize],
                ReputationEvent::ValidPattern,
                t.total().min(100),
                now,
                &rep_policy,
            );
        }
        arrivals[due_slot].clear();

        // Views for the next round.
        for (me, node) in nodes.iter_mut().enumerate() {
            node.view = aggregate_view(me, node, cfg.aggregation, &rcfg, now, prior);
        }

        // Observe node 0.
        let view = &nodes[0].view;
        let beliefs = view.beliefs();
        if result.rounds_to_correct.is_none()
            && pairwise_confidence(&beliefs) >= cfg.confidence_target
        {
            let (d, p) = named_depth(view);
            if p >= cfg.confidence_target {
                if result.first_confident.is_none() {
                    result.first_confident = Some(round);
                    result.first_confident_correct = Some(d == best);
                }
                if d == best {
                    result.rounds_to_correct = Some(round);
                }
            }
        }
        if round == cfg.budget {
            let (d, p) = named_depth(view);
            result.correct_at_budget = d == best;
            result.confidence_at_budget = p;
        }
        result.rounds = round;
        if round >= cfg.budget && result.rounds_to_correct.is_some() {
            break;
        }
    }
    result.regret = if regret_n > 0 {
        regret_sum / regret_n as f64
    } else {
        0.0
    };
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_for_a_seed() {
        let cfg = SimConfig {
            honest: 3,
            budget: 30,
            max_rounds: 60,
            ..Default::default()
        };
        assert_eq!(run(&cfg, 5), run(&cfg, 5));
    }

    #[test]
    fn adversary_counts() {
        assert_eq!(Adversary::Liars { fraction: 0.3 }.count(10), 4);
        assert_eq!(Adversary::Liars { fraction: 0.1 }.count(10), 1);
        assert_eq!(Adversary::Sybil { identities: 20 }.count(10), 20);
        assert_eq!(Adversary::None.count(10), 0);
    }

    #[test]
    fn signed_sample_verifies() {
        let cfg = SimConfig {
            honest: 2,
            adversary: Adversary::Sybil { identities: 3 },
            budget: 5,
            max_rounds: 5,
            ..Default::default()
        };
        assert_eq!(run(&cfg, 1).signed_checked, 5);
    }
}
