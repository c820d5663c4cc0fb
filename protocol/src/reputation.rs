//! Peer reputation (DESIGN §2): scores, events with reason-specific deltas,
//! decay toward neutral, the Session 162 weight/bonus table, newcomer limits
//! and operator trust.
//!
//! Everything here is a pure function of `(state, event, now, policy)`; the
//! node keeps one [`ReputationState`] per peer (persisted as CBOR with
//! [`ReputationState::to_bytes`]) and feeds it the events its validation
//! pipeline produces.
//!
//! # Rules
//!
//! - **Score.** A real number in `[policy.min_score, policy.max_score]`
//!   (default `[-100, 100]`); 0 is neutral and is where every new peer starts.
//! - **Events.** Each [`ReputationEvent`] adds its delta
//!   ([`ReputationPolicy::delta`]): small positive amounts for valid
//!   behaviour, large negative amounts for provable misbehaviour (a bad
//!   signature, equivocation), moderate ones for noise (decode errors, rate
//!   limits). An unknown message version costs nothing: it is what an honest
//!   newer peer sends. Every event is counted per kind.
//! - **Decay.** Between updates the score decays exponentially toward 0 with
//!   half-life [`ReputationPolicy::half_life_secs`], applied lazily from
//!   `last_update` to `now` whenever the state is touched or read. Old good
//!   behaviour fades, and so does old bad behaviour — except the hostile flag.
//! - **Hostile.** Equivocation (two different bodies signed for one sequence
//!   number) is cryptographic proof of misbehaviour: it costs the heaviest
//!   delta and sets `hostile`, which never decays. A hostile peer has learning
//!   weight 0 and a strongly negative gossipsub score, whatever its score or
//!   operator trust says (a trusted key that equivocates has been stolen or
//!   is broken; the operator clears the flag explicitly with
//!   [`ReputationState::clear_hostile`]).
//! - **Newcomers.** A positive score is capped by
//!   `min(age_days · newcomer_cap_per_day, valid · newcomer_cap_per_valid)`,
//!   where `age` is the time since `first_seen` and `valid` the number of
//!   valid records and useful responses seen. Both are needed: a fresh
//!   identity can neither flood its way to trust nor simply wait for it. With
//!   the defaults, "good" (20) takes ≥ 2 days and ≥ 80 valid records,
//!   "excellent" (50) ≥ 5 days and ≥ 200. Until a peer is older than
//!   `newcomer_period_secs` *and* has `newcomer_min_valid` valid records, its
//!   effective learning weight is at most neutral (1.0).
//! - **Operator trust** ([`Trust`]): `Trusted` peers have a floor at the
//!   excellent threshold (anchors, like EigenTrust's pre-trusted peers) and
//!   skip the newcomer limits; `Denied` peers get weight 0 and are refused;
//!   `Fixed(s)` pins the score to `s`; `Default` is the computed score.
//! - **Table** (Session 162, the seeds' floor): see [`class`],
//!   [`learning_weight`], [`confidence_bonus`].
//!
//! | score | class | weight | bonus |
//! |---|---|---|---|
//! | ≥ 50 | excellent | 2.0 | +0.2 |
//! | ≥ 20 | good | 1.5 | +0.1 |
//! | ≥ 0 | neutral | 1.0 | 0 |
//! | ≥ −20 | poor | 0.75 | −0.1 |
//! | < −20 | untrusted | 0.5 | −0.2 |

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::codec::{self, CodecError};
use crate::record::RecordError;
use crate::stats::DepthStats;
use crate::wire::WireError;

/// Score at or above which a peer is excellent.
pub const EXCELLENT_THRESHOLD: f64 = 50.0;
/// Score at or above which a peer is good.
pub const GOOD_THRESHOLD: f64 = 20.0;
/// Score at or above which a peer is neutral.
pub const NEUTRAL_THRESHOLD: f64 = 0.0;
/// Score at or above which a peer is poor; below it, untrusted.
pub const POOR_THRESHOLD: f64 = -20.0;

/// Largest encoded [`ReputationState`], in bytes.
pub const MAX_STATE_BYTES: usize = 4096;

/// Suggested gossipsub thresholds to pair with [`gossipsub_app_score`] at an
/// application-specific weight of 1: untrusted peers fall below the gossip
/// threshold, hostile and denied peers below the graylist threshold.
pub mod gossipsub_thresholds {
    pub const GOSSIP: f64 = -20.0;
    pub const PUBLISH: f64 = -50.0;
    pub const GRAYLIST: f64 = -80.0;
}

/// Something a peer did that changes its reputation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReputationEvent {
    /// A pattern record that passed every check and was new.
    ValidPattern,
    /// An insight record that passed every check.
    ValidInsight,
    /// A sync response that delivered at least one new valid record.
    UsefulSyncResponse,
    /// A record whose pattern or statistics failed schema/range validation.
    SchemaInvalid,
    /// Bytes that did not decode (or broke a size/count bound).
    DecodeError,
    /// A signature that does not verify, or a signer that is not a key.
    BadSignature,
    /// Two different bodies signed for the same (origin, seq). Marks hostile.
    Equivocation,
    /// Exceeded a per-peer or per-origin rate limit or quota.
    RateLimitExceeded,
    /// Sustained excess far beyond the rate limit (the node decides when).
    Flooding,
    /// Reports that stay inconsistent with the robust consensus beyond
    /// sampling noise (see [`inconsistency_z`]).
    InconsistentWithConsensus,
    /// A message with a version we do not know: not a fault (costs 0).
    UnknownVersion,
}

impl ReputationEvent {
    pub const ALL: [ReputationEvent; 11] = [
        ReputationEvent::ValidPattern,
        ReputationEvent::ValidInsight,
        ReputationEvent::UsefulSyncResponse,
        ReputationEvent::SchemaInvalid,
        ReputationEvent::DecodeError,
        ReputationEvent::BadSignature,
        ReputationEvent::Equivocation,
        ReputationEvent::RateLimitExceeded,
        ReputationEvent::Flooding,
        ReputationEvent::InconsistentWithConsensus,
        ReputationEvent::UnknownVersion,
    ];

    /// Stable snake_case name (for counters, metrics and logs).
    pub fn as_str(self) -> &'static str {
        match self {
            ReputationEvent::ValidPattern => "valid_pattern",
            ReputationEvent::ValidInsight => "valid_insight",
            ReputationEvent::UsefulSyncResponse => "useful_sync_response",
            ReputationEvent::SchemaInvalid => "schema_invalid",
            ReputationEvent::DecodeError => "decode_error",
            ReputationEvent::BadSignature => "bad_signature",
            ReputationEvent::Equivocation => "equivocation",
            ReputationEvent::RateLimitExceeded => "rate_limit_exceeded",
            ReputationEvent::Flooding => "flooding",
            ReputationEvent::InconsistentWithConsensus => "inconsistent_with_consensus",
            ReputationEvent::UnknownVersion => "unknown_version",
        }
    }

    /// Does this event count as valid behaviour (for the newcomer limits)?
    pub fn is_valid_behaviour(self) -> bool {
        matches!(
            self,
            ReputationEvent::ValidPattern
                | ReputationEvent::ValidInsight
                | ReputationEvent::UsefulSyncResponse
        )
    }
}

impl From<&RecordError> for ReputationEvent {
    /// The event a record rejection charges to whoever sent the record.
    fn from(e: &RecordError) -> Self {
        match e {
            RecordError::TooLarge(_) | RecordError::Decode(_) => ReputationEvent::DecodeError,
            RecordError::BadSigner | RecordError::BadSignature => ReputationEvent::BadSignature,
            RecordError::UnsupportedVersion(_) => ReputationEvent::UnknownVersion,
            RecordError::OriginMismatch
            | RecordError::BadSeq
            | RecordError::Schema(_)
            | RecordError::WrongKind(..) => ReputationEvent::SchemaInvalid,
        }
    }
}

impl From<&WireError> for ReputationEvent {
    /// The event a message rejection charges to the peer that sent it.
    fn from(e: &WireError) -> Self {
        match e {
            WireError::UnknownVersion(_) => ReputationEvent::UnknownVersion,
            WireError::Codec(_) | WireError::Bound { .. } => ReputationEvent::DecodeError,
        }
    }
}

impl fmt::Display for ReputationEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The Session 162 reputation classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReputationClass {
    Untrusted,
    Poor,
    Neutral,
    Good,
    Excellent,
}

impl ReputationClass {
    pub const ALL: [ReputationClass; 5] = [
        ReputationClass::Excellent,
        ReputationClass::Good,
        ReputationClass::Neutral,
        ReputationClass::Poor,
        ReputationClass::Untrusted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ReputationClass::Excellent => "excellent",
            ReputationClass::Good => "good",
            ReputationClass::Neutral => "neutral",
            ReputationClass::Poor => "poor",
            ReputationClass::Untrusted => "untrusted",
        }
    }

    /// Learning weight of the class (0.5×–2.0×).
    pub fn learning_weight(self) -> f64 {
        match self {
            ReputationClass::Excellent => 2.0,
            ReputationClass::Good => 1.5,
            ReputationClass::Neutral => 1.0,
            ReputationClass::Poor => 0.75,
            ReputationClass::Untrusted => 0.5,
        }
    }

    /// Confidence bonus of the class (±0.2).
    pub fn confidence_bonus(self) -> f64 {
        match self {
            ReputationClass::Excellent => 0.2,
            ReputationClass::Good => 0.1,
            ReputationClass::Neutral => 0.0,
            ReputationClass::Poor => -0.1,
            ReputationClass::Untrusted => -0.2,
        }
    }
}

impl fmt::Display for ReputationClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The class of a score (Session 162 table). NaN counts as untrusted.
pub fn class(score: f64) -> ReputationClass {
    if score >= EXCELLENT_THRESHOLD {
        ReputationClass::Excellent
    } else if score >= GOOD_THRESHOLD {
        ReputationClass::Good
    } else if score >= NEUTRAL_THRESHOLD {
        ReputationClass::Neutral
    } else if score >= POOR_THRESHOLD {
        ReputationClass::Poor
    } else {
        ReputationClass::Untrusted
    }
}

/// Learning weight of a score (Session 162 table).
pub fn learning_weight(score: f64) -> f64 {
    class(score).learning_weight()
}

/// Confidence bonus of a score (Session 162 table).
pub fn confidence_bonus(score: f64) -> f64 {
    class(score).confidence_bonus()
}

/// What the operator configured for a peer.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trust {
    /// Anchor: score floor at the excellent threshold, no newcomer limits.
    Trusted,
    /// Refused: weight 0, records and connections declined.
    Denied,
    /// Score pinned to this value (still 0 weight if hostile).
    Fixed(f64),
    /// The computed score.
    #[default]
    Default,
}

/// Every constant of the reputation rules. `Default` gives the documented
/// values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ReputationPolicy {
    /// Half-life of the decay toward 0, in seconds (default 7 days).
    pub half_life_secs: f64,
    pub min_score: f64,
    pub max_score: f64,
    pub valid_pattern: f64,
    pub valid_insight: f64,
    pub useful_sync_response: f64,
    pub schema_invalid: f64,
    pub decode_error: f64,
    pub bad_signature: f64,
    pub equivocation: f64,
    pub rate_limit_exceeded: f64,
    pub flooding: f64,
    pub inconsistent_with_consensus: f64,
    pub unknown_version: f64,
    /// Positive-score cap growth per day since first seen.
    pub newcomer_cap_per_day: f64,
    /// Positive-score cap growth per valid record or useful response.
    pub newcomer_cap_per_valid: f64,
    /// A peer younger than this is a newcomer (weight ≤ neutral).
    pub newcomer_period_secs: f64,
    /// A peer with fewer valid records than this is a newcomer.
    pub newcomer_min_valid: u64,
    /// Gossipsub application score of hostile and denied peers.
    pub hostile_app_score: f64,
}

impl Default for ReputationPolicy {
    fn default() -> Self {
        ReputationPolicy {
            half_life_secs: 7.0 * 86_400.0,
            min_score: -100.0,
            max_score: 100.0,
            valid_pattern: 0.05,
            valid_insight: 0.05,
            useful_sync_response: 0.2,
            schema_invalid: -2.0,
            decode_error: -1.0,
            bad_signature: -10.0,
            equivocation: -60.0,
            rate_limit_exceeded: -1.0,
            flooding: -5.0,
            inconsistent_with_consensus: -3.0,
            unknown_version: 0.0,
            newcomer_cap_per_day: 10.0,
            newcomer_cap_per_valid: 0.25,
            newcomer_period_secs: 86_400.0,
            newcomer_min_valid: 50,
            hostile_app_score: -1000.0,
        }
    }
}

impl ReputationPolicy {
    /// The score change of one event.
    pub fn delta(&self, event: ReputationEvent) -> f64 {
        match event {
            ReputationEvent::ValidPattern => self.valid_pattern,
            ReputationEvent::ValidInsight => self.valid_insight,
            ReputationEvent::UsefulSyncResponse => self.useful_sync_response,
            ReputationEvent::SchemaInvalid => self.schema_invalid,
            ReputationEvent::DecodeError => self.decode_error,
            ReputationEvent::BadSignature => self.bad_signature,
            ReputationEvent::Equivocation => self.equivocation,
            ReputationEvent::RateLimitExceeded => self.rate_limit_exceeded,
            ReputationEvent::Flooding => self.flooding,
            ReputationEvent::InconsistentWithConsensus => self.inconsistent_with_consensus,
            ReputationEvent::UnknownVersion => self.unknown_version,
        }
    }

    /// Decay factor over `dt` seconds (1 for `dt ≤ 0` or no half-life).
    pub fn decay_factor(&self, dt: f64) -> f64 {
        let usable = dt > 0.0 && self.half_life_secs > 0.0 && self.half_life_secs.is_finite();
        if !usable {
            return 1.0;
        }
        (-(dt / self.half_life_secs) * std::f64::consts::LN_2).exp()
    }
}

/// Why a stored reputation state could not be loaded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ReputationError {
    #[error("malformed reputation state: {0}")]
    Decode(#[from] CodecError),
    #[error("reputation state field {0} is not a finite number")]
    NotFinite(&'static str),
}

/// One peer's reputation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReputationState {
    /// Score as of `last_update` (read it decayed with [`Self::score_at`]).
    pub score: f64,
    /// How many events of each kind this peer caused.
    pub counters: BTreeMap<ReputationEvent, u64>,
    /// Unix seconds when the peer was first seen.
    pub first_seen: f64,
    /// Unix seconds of the last applied event (decay reference point).
    pub last_update: f64,
    /// Proven misbehaviour (equivocation). Never decays.
    pub hostile: bool,
}

impl ReputationState {
    /// A peer first seen at `now`: neutral score, no history.
    pub fn new(now: f64) -> Self {
        let now = if now.is_finite() { now } else { 0.0 };
        ReputationState {
            score: 0.0,
            counters: BTreeMap::new(),
            first_seen: now,
            last_update: now,
            hostile: false,
        }
    }

    /// How many events of a kind were seen.
    pub fn count(&self, event: ReputationEvent) -> u64 {
        self.counters.get(&event).copied().unwrap_or(0)
    }

    /// Valid records and useful responses seen (the newcomer measure).
    pub fn valid_count(&self) -> u64 {
        self.counters
            .iter()
            .filter(|(e, _)| e.is_valid_behaviour())
            .fold(0u64, |a, (_, n)| a.saturating_add(*n))
    }

    /// The raw (computed) score decayed to `now`. Never crosses 0.
    pub fn score_at(&self, now: f64, policy: &ReputationPolicy) -> f64 {
        self.score * policy.decay_factor(now - self.last_update)
    }

    /// Seconds since first seen (0 if `now` is earlier).
    pub fn age_secs(&self, now: f64) -> f64 {
        let age = now - self.first_seen;
        if age.is_finite() {
            age.max(0.0)
        } else {
            0.0
        }
    }

    /// The current ceiling on a positive score (see the module docs).
    pub fn newcomer_cap(&self, now: f64, policy: &ReputationPolicy) -> f64 {
        let by_age = self.age_secs(now) / 86_400.0 * policy.newcomer_cap_per_day;
        let by_valid = self.valid_count() as f64 * policy.newcomer_cap_per_valid;
        by_age.min(by_valid).clamp(0.0, policy.max_score)
    }

    /// Still in the newcomer period (effective weight at most neutral)?
    pub fn is_newcomer(&self, now: f64, policy: &ReputationPolicy) -> bool {
        self.age_secs(now) < policy.newcomer_period_secs
            || self.valid_count() < policy.newcomer_min_valid
    }

    /// Bring the stored score forward to `now` (lazy decay). A `now` earlier
    /// than `last_update` (a clock step back) changes nothing.
    pub fn decay_to(&mut self, now: f64, policy: &ReputationPolicy) {
        if now.is_finite() && now > self.last_update {
            self.score = self.score_at(now, policy);
            self.last_update = now;
        }
    }

    /// The operator clears the hostile flag (for example after rotating a
    /// stolen key). The score keeps its history.
    pub fn clear_hostile(&mut self) {
        self.hostile = false;
    }

    /// Encode for persistence (CBOR).
    pub fn to_bytes(&self) -> Vec<u8> {
        codec::to_cbor(self)
    }

    /// Decode a persisted state, bounded by [`MAX_STATE_BYTES`]; refuses
    /// non-finite numbers.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ReputationError> {
        let s: ReputationState = codec::from_cbor(bytes, MAX_STATE_BYTES)?;
        for (name, v) in [
            ("score", s.score),
            ("first_seen", s.first_seen),
            ("last_update", s.last_update),
        ] {
            if !v.is_finite() {
                return Err(ReputationError::NotFinite(name));
            }
        }
        Ok(s)
    }
}

/// Apply one event at `now`: decay to `now`, add the event's delta, clamp to
/// the policy's range, hold a positive score under the newcomer cap, count
/// the event, and mark equivocators hostile.
pub fn apply(
    state: &mut ReputationState,
    event: ReputationEvent,
    now: f64,
    policy: &ReputationPolicy,
) {
    state.decay_to(now, policy);
    let slot = state.counters.entry(event).or_insert(0);
    *slot = slot.saturating_add(1);
    if event == ReputationEvent::Equivocation {
        state.hostile = true;
    }
    let delta = policy.delta(event);
    if !delta.is_finite() || delta == 0.0 {
        return;
    }
    let old = state.score;
    let mut new = (old + delta).clamp(policy.min_score, policy.max_score);
    if delta > 0.0 {
        // A positive event may not lift the score above the newcomer cap,
        // but the cap never lowers a score that is already above it.
        let at = if now.is_finite() {
            now
        } else {
            state.last_update
        };
        let cap = state.newcomer_cap(at, policy).max(old);
        new = new.min(cap);
    }
    state.score = new;
}

/// Apply the same event `n` times (for batches).
pub fn apply_n(
    state: &mut ReputationState,
    event: ReputationEvent,
    n: u64,
    now: f64,
    policy: &ReputationPolicy,
) {
    for _ in 0..n {
        apply(state, event, now, policy);
    }
}

/// The effective reputation of a peer at `now`, with operator trust and the
/// newcomer and hostile rules applied. This is what aggregation, acceptance
/// and the API use.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Standing {
    /// Effective score (decayed, with trust floors and pins).
    pub score: f64,
    pub class: ReputationClass,
    /// Learning weight: the table's, capped at neutral for newcomers,
    /// at least excellent for trusted, 0 for hostile and denied.
    pub weight: f64,
    /// Confidence bonus of the effective class (0 for weight-0 peers' use
    /// does not matter; it is reported as the class's).
    pub bonus: f64,
    pub newcomer: bool,
    pub hostile: bool,
    /// Denied by the operator: refuse its records and connections.
    pub refused: bool,
}

/// Assess a peer at `now` (see [`Standing`]).
pub fn standing(
    state: &ReputationState,
    trust: Trust,
    now: f64,
    policy: &ReputationPolicy,
) -> Standing {
    let raw = state.score_at(now, policy);
    let newcomer = state.is_newcomer(now, policy);
    let (score, newcomer) = match trust {
        Trust::Trusted => (raw.max(EXCELLENT_THRESHOLD), false),
        Trust::Fixed(s) if s.is_finite() => (s, false),
        Trust::Fixed(_) => (raw, newcomer),
        Trust::Denied | Trust::Default => (raw, newcomer),
    };
    let class = class(score);
    let mut weight = class.learning_weight();
    if newcomer {
        weight = weight.min(ReputationClass::Neutral.learning_weight());
    }
    let refused = trust == Trust::Denied;
    if state.hostile || refused {
        weight = 0.0;
    }
    Standing {
        score,
        class,
        weight,
        bonus: class.confidence_bonus(),
        newcomer,
        hostile: state.hostile,
        refused,
    }
}

/// Gossipsub application-specific score of a peer, from its stored state
/// (call [`ReputationState::decay_to`] first, or use
/// [`gossipsub_app_score_at`]). Mapping, with the default policy:
///
/// - hostile: `hostile_app_score` (−1000), far below the graylist threshold;
/// - untrusted (score < −20): `score − 80` (≤ −100), graylisted;
/// - poor (−20 ≤ score < 0): the score itself (mild);
/// - otherwise `score / 10` (0 … +10, a small boost).
pub fn gossipsub_app_score(state: &ReputationState) -> f64 {
    app_score_of(state.score, state.hostile, &ReputationPolicy::default())
}

/// [`gossipsub_app_score`] with decay to `now`, operator trust and a policy.
/// Denied peers get `hostile_app_score`.
pub fn gossipsub_app_score_at(
    state: &ReputationState,
    trust: Trust,
    now: f64,
    policy: &ReputationPolicy,
) -> f64 {
    let s = standing(state, trust, now, policy);
    app_score_of(s.score, s.hostile || s.refused, policy)
}

fn app_score_of(score: f64, hostile: bool, policy: &ReputationPolicy) -> f64 {
    if hostile || !score.is_finite() {
        return policy.hostile_app_score;
    }
    if score < POOR_THRESHOLD {
        score - 80.0
    } else if score < 0.0 {
        score
    } else {
        score / 10.0
    }
}

/// How far an origin's reports at one depth lie from the consensus mean
/// quality, in standard errors of the origin's own mean (a z-score; 0 when
/// the origin has fewer than two samples). The standard deviation is floored
/// at `min_sd` so that an origin reporting identical values cannot claim
/// infinite precision. A node applies
/// [`ReputationEvent::InconsistentWithConsensus`] to origins whose |z| stays
/// above a threshold (e.g. 4) over repeated checks — beyond sampling noise.
pub fn inconsistency_z(origin: &DepthStats, consensus_mean: f64, min_sd: f64) -> f64 {
    if origin.n < 2 || !consensus_mean.is_finite() {
        return 0.0;
    }
    let sd = origin.var_quality().sqrt().max(min_sd.max(1e-6));
    let se = sd / (origin.n as f64).sqrt();
    (origin.avg_quality() - consensus_mean) / se
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const T0: f64 = 1_800_000_000.0;
    const DAY: f64 = 86_400.0;

    fn pol() -> ReputationPolicy {
        ReputationPolicy::default()
    }

    /// A peer that has been around and valid long enough to escape the caps.
    fn veteran(score: f64) -> ReputationState {
        let mut s = ReputationState::new(T0 - 365.0 * DAY);
        s.counters.insert(ReputationEvent::ValidPattern, 1_000_000);
        s.score = score;
        s.last_update = T0;
        s
    }

    #[test]
    fn table_thresholds() {
        let cases = [
            (100.0, ReputationClass::Excellent, 2.0, 0.2),
            (50.0, ReputationClass::Excellent, 2.0, 0.2),
            (49.99, ReputationClass::Good, 1.5, 0.1),
            (20.0, ReputationClass::Good, 1.5, 0.1),
            (19.9, ReputationClass::Neutral, 1.0, 0.0),
            (0.0, ReputationClass::Neutral, 1.0, 0.0),
            (-0.1, ReputationClass::Poor, 0.75, -0.1),
            (-20.0, ReputationClass::Poor, 0.75, -0.1),
            (-20.01, ReputationClass::Untrusted, 0.5, -0.2),
            (-100.0, ReputationClass::Untrusted, 0.5, -0.2),
            (f64::NAN, ReputationClass::Untrusted, 0.5, -0.2),
        ];
        for (score, c, w, b) in cases {
            assert_eq!(class(score), c, "{score}");
            assert_eq!(learning_weight(score), w, "{score}");
            assert_eq!(confidence_bonus(score), b, "{score}");
        }
    }

    #[test]
    fn decay_halves_per_half_life_and_never_crosses_zero() {
        let p = pol();
        for start in [80.0, -80.0] {
            let mut s = veteran(start);
            s.decay_to(T0 + p.half_life_secs, &p);
            assert!((s.score - start / 2.0).abs() < 1e-9, "{}", s.score);
            s.decay_to(T0 + 3.0 * p.half_life_secs, &p);
            assert!((s.score - start / 8.0).abs() < 1e-9);
            s.decay_to(T0 + 1000.0 * p.half_life_secs, &p);
            assert_eq!(s.score.signum(), start.signum());
            assert!(s.score.abs() < 1e-100);
        }
    }

    #[test]
    fn decay_is_lazy_and_path_independent() {
        let p = pol();
        let a = veteran(40.0);
        let mut b = a.clone();
        for i in 1..=10 {
            b.decay_to(T0 + i as f64 * DAY, &p);
        }
        assert!((a.score_at(T0 + 10.0 * DAY, &p) - b.score).abs() < 1e-9);
        // A clock step back changes nothing.
        let before = b.clone();
        b.decay_to(T0, &p);
        assert_eq!(b, before);
    }

    #[test]
    fn every_event_moves_the_score_by_its_delta() {
        let p = pol();
        for e in ReputationEvent::ALL {
            let mut s = veteran(0.0);
            let before = s.count(e);
            apply(&mut s, e, T0, &p);
            assert!((s.score - p.delta(e)).abs() < 1e-12, "{e}: {}", s.score);
            assert_eq!(s.count(e), before + 1);
            assert_eq!(s.last_update, T0);
        }
        assert_eq!(p.delta(ReputationEvent::UnknownVersion), 0.0);
        // Heavier faults cost more.
        assert!(p.delta(ReputationEvent::Equivocation) < p.delta(ReputationEvent::BadSignature));
        assert!(p.delta(ReputationEvent::BadSignature) < p.delta(ReputationEvent::SchemaInvalid));
        assert!(p.delta(ReputationEvent::SchemaInvalid) < 0.0);
        assert!(p.delta(ReputationEvent::ValidPattern) > 0.0);
    }

    #[test]
    fn monotonic_in_events() {
        let p = pol();
        for start in [-90.0, -20.0, 0.0, 30.0, 99.99] {
            for e in ReputationEvent::ALL {
                let mut s = veteran(start);
                apply(&mut s, e, T0, &p);
                if p.delta(e) >= 0.0 {
                    assert!(s.score >= start, "{e} lowered {start} to {}", s.score);
                } else {
                    assert!(s.score <= start, "{e} raised {start} to {}", s.score);
                }
                assert!(s.score >= p.min_score && s.score <= p.max_score);
            }
        }
    }

    #[test]
    fn equivocation_marks_hostile_and_zeroes_weight() {
        let p = pol();
        let mut s = veteran(60.0);
        apply(&mut s, ReputationEvent::Equivocation, T0, &p);
        assert!(s.hostile);
        assert_eq!(s.score, 0.0);
        // Hostile survives any amount of good behaviour and time.
        apply_n(
            &mut s,
            ReputationEvent::ValidPattern,
            1000,
            T0 + 30.0 * DAY,
            &p,
        );
        assert!(s.hostile);
        let st = standing(&s, Trust::Default, T0 + 30.0 * DAY, &p);
        assert_eq!(st.weight, 0.0);
        assert!(gossipsub_app_score(&s) <= gossipsub_thresholds::GRAYLIST);
        // Even a trusted key that equivocates loses its weight.
        assert_eq!(standing(&s, Trust::Trusted, T0, &p).weight, 0.0);
        s.clear_hostile();
        assert!(standing(&s, Trust::Default, T0 + 30.0 * DAY, &p).weight > 0.0);
    }

    #[test]
    fn newcomers_cannot_rise_fast() {
        let p = pol();
        // A flood of valid records on day one stays well below "good".
        let mut s = ReputationState::new(T0);
        apply_n(
            &mut s,
            ReputationEvent::ValidPattern,
            10_000,
            T0 + 3600.0,
            &p,
        );
        let cap = 1.0 / 24.0 * p.newcomer_cap_per_day;
        assert!(s.score <= cap + 1e-9, "{}", s.score);
        let st = standing(&s, Trust::Default, T0 + 3600.0, &p);
        assert!(st.newcomer);
        assert!(st.weight <= 1.0);
        // Waiting alone earns nothing either: the cap needs valid records.
        let mut w = ReputationState::new(T0);
        apply(&mut w, ReputationEvent::ValidPattern, T0 + 100.0 * DAY, &p);
        assert!(w.score <= p.newcomer_cap_per_valid + 1e-12);
        // Good needs ≥ 2 days and ≥ 80 valid records; with both it is reachable.
        let mut g = ReputationState::new(T0);
        for day in 0..40 {
            apply_n(
                &mut g,
                ReputationEvent::UsefulSyncResponse,
                200,
                T0 + day as f64 * DAY,
                &p,
            );
        }
        let now = T0 + 39.0 * DAY;
        assert!(g.score >= GOOD_THRESHOLD, "{}", g.score);
        let st = standing(&g, Trust::Default, now, &p);
        assert!(!st.newcomer);
        assert!(st.weight >= 1.5);
    }

    #[test]
    fn newcomer_weight_is_at_most_neutral_even_with_a_high_score() {
        let p = pol();
        let mut s = ReputationState::new(T0);
        s.score = 70.0; // e.g. a stored state from a more lenient policy
        let st = standing(&s, Trust::Default, T0 + 60.0, &p);
        assert_eq!(st.class, ReputationClass::Excellent);
        assert_eq!(st.weight, 1.0);
        // The cap never lowers an existing score (beyond its decay).
        let decayed = s.score_at(T0 + 60.0, &p);
        apply(&mut s, ReputationEvent::ValidPattern, T0 + 60.0, &p);
        assert!(s.score >= decayed && s.score < 70.0, "{}", s.score);
    }

    #[test]
    fn operator_trust() {
        let p = pol();
        let fresh = ReputationState::new(T0);
        let t = standing(&fresh, Trust::Trusted, T0, &p);
        assert_eq!(t.class, ReputationClass::Excellent);
        assert_eq!(t.weight, 2.0);
        assert!(!t.newcomer);
        // The floor holds against bad events.
        let mut bad = fresh.clone();
        apply_n(&mut bad, ReputationEvent::SchemaInvalid, 30, T0, &p);
        assert_eq!(
            standing(&bad, Trust::Trusted, T0, &p).score,
            EXCELLENT_THRESHOLD
        );
        // A trusted peer's higher score is kept.
        assert_eq!(standing(&veteran(80.0), Trust::Trusted, T0, &p).score, 80.0);

        let d = standing(&veteran(80.0), Trust::Denied, T0, &p);
        assert!(d.refused);
        assert_eq!(d.weight, 0.0);
        assert_eq!(
            gossipsub_app_score_at(&veteran(80.0), Trust::Denied, T0, &p),
            p.hostile_app_score
        );

        let f = standing(&veteran(80.0), Trust::Fixed(-30.0), T0 + 10.0 * DAY, &p);
        assert_eq!(f.score, -30.0);
        assert_eq!(f.class, ReputationClass::Untrusted);
        assert_eq!(f.weight, 0.5);
        let f = standing(&fresh, Trust::Fixed(25.0), T0, &p);
        assert_eq!((f.class, f.weight), (ReputationClass::Good, 1.5));
    }

    #[test]
    fn gossipsub_mapping() {
        let p = pol();
        assert!(gossipsub_app_score(&veteran(-50.0)) < gossipsub_thresholds::GRAYLIST);
        let poor = gossipsub_app_score(&veteran(-10.0));
        assert!(poor < 0.0 && poor > gossipsub_thresholds::GOSSIP);
        assert!(gossipsub_app_score(&veteran(0.0)) >= 0.0);
        assert!(gossipsub_app_score(&veteran(60.0)) > gossipsub_app_score(&veteran(30.0)));
        // Monotone in score.
        let mut last = f64::NEG_INFINITY;
        for i in -100..=100 {
            let v = gossipsub_app_score(&veteran(i as f64));
            assert!(v >= last, "{i}");
            last = v;
        }
        // The time-aware variant decays.
        let s = veteran(-60.0);
        assert!(
            gossipsub_app_score_at(&s, Trust::Default, T0 + 30.0 * DAY, &p)
                > gossipsub_app_score(&s)
        );
    }

    #[test]
    fn persistence_round_trip_and_bad_bytes() {
        let p = pol();
        let mut s = ReputationState::new(T0);
        apply_n(&mut s, ReputationEvent::ValidPattern, 5, T0 + 10.0, &p);
        apply(&mut s, ReputationEvent::DecodeError, T0 + 20.0, &p);
        let back = ReputationState::from_bytes(&s.to_bytes()).unwrap();
        assert_eq!(back, s);
        let json = serde_json::to_string(&s).unwrap();
        assert!(json.contains("\"valid_pattern\":5"), "{json}");
        assert_eq!(serde_json::from_str::<ReputationState>(&json).unwrap(), s);
        assert!(ReputationState::from_bytes(b"\xff\x00garbage").is_err());
        let mut nan = s.clone();
        nan.score = f64::NAN;
        assert_eq!(
            ReputationState::from_bytes(&nan.to_bytes()).unwrap_err(),
            ReputationError::NotFinite("score")
        );
    }

    #[test]
    fn policy_deserialises_with_defaults() {
        let p: ReputationPolicy = serde_json::from_str(r#"{"half_life_secs": 3600}"#).unwrap();
        assert_eq!(p.half_life_secs, 3600.0);
        assert_eq!(p.bad_signature, ReputationPolicy::default().bad_signature);
    }

    #[test]
    fn rejections_map_to_events() {
        use crate::schema::SchemaError;
        let cases: [(RecordError, ReputationEvent); 5] = [
            (RecordError::BadSignature, ReputationEvent::BadSignature),
            (RecordError::BadSigner, ReputationEvent::BadSignature),
            (RecordError::TooLarge(1), ReputationEvent::DecodeError),
            (
                RecordError::UnsupportedVersion(2),
                ReputationEvent::UnknownVersion,
            ),
            (
                RecordError::Schema(SchemaError::new("quality_achieved", "bad")),
                ReputationEvent::SchemaInvalid,
            ),
        ];
        for (e, want) in cases {
            assert_eq!(ReputationEvent::from(&e), want, "{e}");
        }
        assert_eq!(
            ReputationEvent::from(&WireError::UnknownVersion(3)),
            ReputationEvent::UnknownVersion
        );
        assert_eq!(
            ReputationEvent::from(&WireError::Codec(CodecError::Trailing(1))),
            ReputationEvent::DecodeError
        );
    }

    #[test]
    fn inconsistency_z_separates_liars_from_noise() {
        let mut honest = DepthStats::default();
        let mut liar = DepthStats::default();
        for i in 0..100 {
            let noise = ((i * 37) % 11) as f64 / 100.0 - 0.05;
            honest.add(0.6 + noise, true, 1.0);
            liar.add(0.95 + noise / 5.0, true, 1.0);
        }
        assert!(inconsistency_z(&honest, 0.6, 0.05).abs() < 2.0);
        assert!(inconsistency_z(&liar, 0.6, 0.05) > 10.0);
        assert_eq!(inconsistency_z(&DepthStats::default(), 0.6, 0.05), 0.0);
    }
}
