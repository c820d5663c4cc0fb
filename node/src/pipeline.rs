//! The validation pipeline (DESIGN §4) and the per-peer state it needs:
//! rate limiters and the reputation book.
//!
//! Order, cheapest first: size → decode → schema and ranges → signature
//! (batched) → dedup by hash → equivocation (by the store's atomic insert) →
//! per-origin and per-peer rate limits and quotas → local acceptance policy
//! (denied origins, minimum quality, minimum origin reputation: *declined*,
//! which still advances the frontier) → accept.
//!
//! Everything here is synchronous and clock-free: callers pass `now`.

use std::collections::HashMap;

use libp2p::PeerId;
use metamesh_protocol::record::{self, MAX_BODY_BYTES};
use metamesh_protocol::reputation::{
    self, ReputationEvent, ReputationPolicy, ReputationState, Standing, Trust,
};
use metamesh_protocol::{PatternBody, RecordError, SignedRecord};

use crate::config::Config;

/// Most peers (or origins) tracked by a rate limiter; the least recently
/// used entry is evicted beyond this.
pub const MAX_TRACKED: usize = 8192;

/// A token bucket: `rate` tokens per second, holding at most `burst`.
#[derive(Debug, Clone, Copy)]
pub struct TokenBucket {
    tokens: f64,
    last: f64,
    rate: f64,
    burst: f64,
}

impl TokenBucket {
    pub fn new(rate: f64, burst: f64, now: f64) -> TokenBucket {
        TokenBucket {
            tokens: burst,
            last: now,
            rate,
            burst,
        }
    }

    fn refill(&mut self, now: f64) {
        if now > self.last {
            self.tokens = (self.tokens + (now - self.last) * self.rate).min(self.burst);
            self.last = now;
        }
    }

    /// Take `n` tokens if available.
    pub fn try_take(&mut self, n: f64, now: f64) -> bool {
        self.refill(now);
        if self.tokens >= n {
            self.tokens -= n;
            true
        } else {
            false
        }
    }

    /// Take `n` tokens unconditionally (the balance may go negative: the
    /// debt is repaid by the refill before [`Self::wait_for`] clears again).
    pub fn spend(&mut self, n: f64, now: f64) {
        self.refill(now);
        self.tokens -= n;
    }

    /// Seconds until `n` tokens are available (0 if now).
    pub fn wait_for(&mut self, n: f64, now: f64) -> f64 {
        self.refill(now);
        if self.tokens >= n || self.rate <= 0.0 {
            0.0
        } else {
            (n.min(self.burst) - self.tokens) / self.rate
        }
    }
}

/// Token buckets keyed by peer, bounded in size.
#[derive(Debug, Clone)]
pub struct Limiter {
    rate: f64,
    burst: f64,
    buckets: HashMap<PeerId, TokenBucket>,
}

impl Limiter {
    pub fn new(rate: f64, burst: f64) -> Limiter {
        Limiter {
            rate,
            burst,
            buckets: HashMap::new(),
        }
    }

    fn bucket(&mut self, peer: PeerId, now: f64) -> &mut TokenBucket {
        if !self.buckets.contains_key(&peer) && self.buckets.len() >= MAX_TRACKED {
            // Evict the bucket that is fullest (least recently constrained).
            if let Some(victim) = self
                .buckets
                .iter()
                .min_by(|a, b| a.1.last.total_cmp(&b.1.last))
                .map(|(p, _)| *p)
            {
                self.buckets.remove(&victim);
            }
        }
        let (rate, burst) = (self.rate, self.burst);
        self.buckets
            .entry(peer)
            .or_insert_with(|| TokenBucket::new(rate, burst, now))
    }

    pub fn try_take(&mut self, peer: PeerId, n: f64, now: f64) -> bool {
        self.bucket(peer, now).try_take(n, now)
    }

    pub fn spend(&mut self, peer: PeerId, n: f64, now: f64) {
        self.bucket(peer, now).spend(n, now)
    }

    pub fn wait_for(&mut self, peer: PeerId, n: f64, now: f64) -> f64 {
        self.bucket(peer, now).wait_for(n, now)
    }
}

/// The node's view of every peer's reputation (persisted by the service).
#[derive(Debug, Clone)]
pub struct ReputationBook {
    pub policy: ReputationPolicy,
    states: HashMap<PeerId, ReputationState>,
    trust: HashMap<PeerId, Trust>,
    dirty: Vec<PeerId>,
}

impl ReputationBook {
    pub fn new(cfg: &Config) -> ReputationBook {
        let mut trust = HashMap::new();
        for p in cfg.trusted_peers() {
            trust.insert(p, Trust::Trusted);
        }
        for (p, s) in cfg.fixed_scores() {
            trust.insert(p, Trust::Fixed(s));
        }
        for p in cfg.denied_peers() {
            trust.insert(p, Trust::Denied);
        }
        ReputationBook {
            policy: ReputationPolicy::default(),
            states: HashMap::new(),
            trust,
            dirty: Vec::new(),
        }
    }

    /// Load persisted states (bad entries are skipped).
    pub fn load(&mut self, entries: Vec<(PeerId, Vec<u8>)>) {
        for (p, bytes) in entries {
            if let Ok(s) = ReputationState::from_bytes(&bytes) {
                self.states.insert(p, s);
            }
        }
    }

    pub fn trust(&self, peer: &PeerId) -> Trust {
        self.trust.get(peer).copied().unwrap_or_default()
    }

    pub fn is_denied(&self, peer: &PeerId) -> bool {
        self.trust(peer) == Trust::Denied
    }

    pub fn apply(&mut self, peer: PeerId, event: ReputationEvent, n: u64, now: f64) {
        if n == 0 {
            return;
        }
        if !self.states.contains_key(&peer) && self.states.len() >= MAX_TRACKED {
            return; // bounded: an unknown peer beyond the bound is not tracked
        }
        let st = self
            .states
            .entry(peer)
            .or_insert_with(|| ReputationState::new(now));
        reputation::apply_n(st, event, n, now, &self.policy);
        if !self.dirty.contains(&peer) {
            self.dirty.push(peer);
        }
    }

    /// A peer's state, or a newcomer's for a peer we have not met.
    fn state_or_new(&self, peer: &PeerId, now: f64) -> std::borrow::Cow<'_, ReputationState> {
        match self.states.get(peer) {
            Some(s) => std::borrow::Cow::Borrowed(s),
            None => std::borrow::Cow::Owned(ReputationState::new(now)),
        }
    }

    pub fn standing(&self, peer: &PeerId, now: f64) -> Standing {
        let st = self.state_or_new(peer, now);
        reputation::standing(&st, self.trust(peer), now, &self.policy)
    }

    pub fn app_score(&self, peer: &PeerId, now: f64) -> f64 {
        let st = self.state_or_new(peer, now);
        reputation::gossipsub_app_score_at(&st, self.trust(peer), now, &self.policy)
    }

    pub fn state(&self, peer: &PeerId) -> Option<&ReputationState> {
        self.states.get(peer)
    }

    /// Every peer with a state or an operator trust entry.
    pub fn peers(&self) -> Vec<PeerId> {
        let mut v: Vec<PeerId> = self
            .states
            .keys()
            .chain(self.trust.keys())
            .copied()
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// Peers changed since the last call, with their encoded state.
    pub fn take_dirty(&mut self) -> Vec<(PeerId, Vec<u8>)> {
        let dirty = std::mem::take(&mut self.dirty);
        dirty
            .into_iter()
            .filter_map(|p| self.states.get(&p).map(|s| (p, s.to_bytes())))
            .collect()
    }
}

/// The reputation event charged for a record error.
pub fn event_for(err: &RecordError) -> ReputationEvent {
    match err {
        RecordError::BadSignature | RecordError::BadSigner | RecordError::OriginMismatch => {
            ReputationEvent::BadSignature
        }
        RecordError::TooLarge(_) | RecordError::Decode(_) | RecordError::WrongKind(..) => {
            ReputationEvent::DecodeError
        }
        RecordError::UnsupportedVersion(_) => ReputationEvent::UnknownVersion,
        RecordError::BadSeq | RecordError::Schema(_) => ReputationEvent::SchemaInvalid,
    }
}

/// The result of the stateless checks on one pulled record.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // short-lived, one per record of a page
pub enum Checked {
    /// Signature, body and schema are fine.
    Valid(SignedRecord, PatternBody),
    /// Refused; `reason` is the counter label.
    Invalid {
        reason: &'static str,
        event: ReputationEvent,
    },
}

/// Stages size → decode → schema → signature for a batch of records, with
/// one batched signature verification. `now` bounds future timestamps.
pub fn check_records(records: Vec<SignedRecord>, now: f64) -> Vec<Checked> {
    let mut out: Vec<Option<Checked>> = Vec::with_capacity(records.len());
    let mut to_verify = Vec::new();
    let mut bodies = Vec::new();
    for rec in records {
        // size
        if rec.body.len() > MAX_BODY_BYTES {
            let e = RecordError::TooLarge(rec.body.len());
            out.push(Some(Checked::Invalid {
                reason: e.reason(),
                event: event_for(&e),
            }));
            continue;
        }
        if rec.kind != metamesh_protocol::RecordKind::Pattern {
            out.push(Some(Checked::Invalid {
                reason: "wrong_kind",
                event: ReputationEvent::DecodeError,
            }));
            continue;
        }
        // decode + schema, against the claimed signer (checked next)
        let decoded = rec
            .signer_peer()
            .and_then(|claimed| rec.decode_pattern_unverified(claimed, now));
        match decoded {
            Ok(body) => {
                out.push(None);
                bodies.push((out.len() - 1, body));
                to_verify.push(rec);
            }
            Err(e) => out.push(Some(Checked::Invalid {
                reason: e.reason(),
                event: event_for(&e),
            })),
        }
    }
    // signature, batched
    let verdicts = record::verify_batch(&to_verify);
    for ((slot, body), (rec, v)) in bodies.into_iter().zip(to_verify.into_iter().zip(verdicts)) {
        out[slot] = Some(match v {
            Ok(_) => Checked::Valid(rec, body),
            Err(e) => Checked::Invalid {
                reason: e.reason(),
                event: event_for(&e),
            },
        });
    }
    out.into_iter()
        .map(|c| {
            c.unwrap_or(Checked::Invalid {
                reason: "internal",
                event: ReputationEvent::DecodeError,
            })
        })
        .collect()
}

/// Local acceptance policy for a valid record: `Some(reason)` when it is
/// declined (not stored, but its slot advances the frontier).
pub fn decline_reason(
    body: &PatternBody,
    origin_standing: &Standing,
    cfg: &Config,
) -> Option<&'static str> {
    if origin_standing.refused {
        return Some("denied_origin");
    }
    if origin_standing.hostile {
        return Some("hostile_origin");
    }
    if body.pattern.quality_achieved < cfg.acceptance.min_quality {
        return Some("below_min_quality");
    }
    if origin_standing.score < cfg.acceptance.min_reputation_patterns {
        return Some("low_origin_reputation");
    }
    None
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use libp2p::identity::Keypair;
    use metamesh_protocol::Depth;

    fn sample(q: f64) -> metamesh_protocol::Pattern {
        metamesh_protocol::Pattern::from_json_value(
            serde_json::json!({
                "pattern_id": "p", "node_id": "n", "timestamp": 1_700_000_000.0, "platform": "thor",
                "depth_used": "deep", "mode": "general", "quality_achieved": q, "success": true,
                "atp_before": 100.0, "atp_after": 65.0
            }),
            None,
        )
        .unwrap()
    }

    #[test]
    fn token_bucket_refills_at_its_rate() {
        let mut b = TokenBucket::new(2.0, 4.0, 0.0);
        assert!(b.try_take(4.0, 0.0));
        assert!(!b.try_take(1.0, 0.0));
        assert!((b.wait_for(1.0, 0.0) - 0.5).abs() < 1e-9);
        assert!(b.try_take(1.0, 0.5));
        assert!(b.try_take(2.0, 10.0));
    }

    #[test]
    fn pipeline_sorts_good_bad_and_malformed() {
        let k = Keypair::generate_ed25519();
        let now = 1_800_000_000.0;
        let good = SignedRecord::sign_pattern(sample(0.7), 1, &k);
        let mut forged = SignedRecord::sign_pattern(sample(0.8), 2, &k);
        forged.signature[3] ^= 1;
        let bad_schema = SignedRecord::sign_pattern(sample(3.0), 3, &k);
        let mut garbage = good.clone();
        garbage.body = vec![0xff; 10];
        let out = check_records(vec![good, forged, bad_schema, garbage], now);
        assert!(
            matches!(&out[0], Checked::Valid(_, b) if b.seq == 1 && b.pattern.depth_used == Depth::Deep)
        );
        assert!(matches!(
            out[1],
            Checked::Invalid {
                reason: "bad_signature",
                event: ReputationEvent::BadSignature
            }
        ));
        assert!(matches!(
            out[2],
            Checked::Invalid {
                reason: "schema",
                ..
            }
        ));
        assert!(matches!(
            out[3],
            Checked::Invalid {
                reason: "decode",
                ..
            }
        ));
    }

    #[test]
    fn limiter_is_bounded() {
        let mut l = Limiter::new(1.0, 1.0);
        for i in 0..(MAX_TRACKED + 10) {
            let _ = i;
            l.try_take(PeerId::random(), 1.0, 0.0);
        }
        assert!(l.buckets.len() <= MAX_TRACKED);
    }
}
