//! Per-peer reputation (bounded, evicting) and token buckets.

use libp2p_identity::PeerId;
use metamesh_protocol::reputation::{self, ReputationEvent, ReputationState, Standing};

use crate::bounded::BoundedMap;
use crate::config::Config;

/// A token bucket: `rate` tokens per second, at most `burst`.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenBucket {
    pub tokens: f64,
    pub last: f64,
}

impl TokenBucket {
    pub fn full(burst: f64, now: f64) -> TokenBucket {
        TokenBucket {
            tokens: burst,
            last: now,
        }
    }

    fn refill(&mut self, rate: f64, burst: f64, now: f64) {
        let dt = now - self.last;
        if dt.is_finite() && dt > 0.0 {
            self.tokens = (self.tokens + dt * rate).min(burst);
            self.last = now;
        }
    }

    /// Take `n` tokens if there are that many.
    pub fn try_take(&mut self, n: f64, rate: f64, burst: f64, now: f64) -> bool {
        self.refill(rate, burst, now);
        if self.tokens >= n {
            self.tokens -= n;
            true
        } else {
            false
        }
    }

    /// Spend `n` tokens, going into debt if needed.
    pub fn spend(&mut self, n: f64, rate: f64, burst: f64, now: f64) {
        self.refill(rate, burst, now);
        self.tokens -= n;
    }

    /// Seconds until `n` tokens are available (0 if they are).
    pub fn wait_for(&mut self, n: f64, rate: f64, burst: f64, now: f64) -> f64 {
        self.refill(rate, burst, now);
        if self.tokens >= n || rate <= 0.0 {
            0.0
        } else {
            (n - self.tokens) / rate
        }
    }
}

/// One entry of the reputation book.
#[derive(Debug, Clone, PartialEq)]
pub struct RepEntry {
    pub state: ReputationState,
    /// Changed since last persisted.
    pub dirty: bool,
    /// Last gossipsub score handed out.
    pub app_score: f64,
}

/// What matters to remember: hostile peers and strongly scored ones most;
/// fresh neutral identities least.
fn value(e: &RepEntry) -> i64 {
    if e.state.hostile {
        return i64::MAX;
    }
    let s = e.state.score;
    let s = if s.is_finite() { s.abs() } else { 0.0 };
    (s * 1000.0) as i64 + e.state.valid_count().min(1000) as i64
}

/// The reputation book: bounded; see [`BoundedMap`] for eviction.
#[derive(Debug, Clone)]
pub struct Book {
    map: BoundedMap<PeerId, RepEntry>,
}

/// A change of standing worth acting on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Transition {
    pub before: Standing,
    pub after: Standing,
    pub app_score: f64,
    pub app_score_changed: bool,
}

impl Book {
    pub fn new(cap: usize) -> Book {
        Book {
            map: BoundedMap::new(cap),
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn cap(&self) -> usize {
        self.map.cap()
    }

    pub fn set_cap(&mut self, cap: usize) {
        self.map.set_cap(cap);
    }

    pub fn load(&mut self, peer: PeerId, state: ReputationState) {
        self.map.insert_with(
            peer,
            RepEntry {
                state,
                dirty: false,
                app_score: 0.0,
            },
            value,
        );
    }

    pub fn state(&self, peer: &PeerId) -> Option<&ReputationState> {
        self.map.get(peer).map(|e| &e.state)
    }

    pub fn standing(&self, peer: &PeerId, now: f64, cfg: &Config) -> Standing {
        let fresh;
        let st = match self.map.get(peer) {
            Some(e) => &e.state,
            None => {
                fresh = ReputationState::new(now);
                &fresh
            }
        };
        reputation::standing(st, cfg.trust(peer), now, &cfg.reputation)
    }

    /// Apply `n` events to `peer`.
    pub fn apply(
        &mut self,
        peer: PeerId,
        event: ReputationEvent,
        n: u64,
        now: f64,
        cfg: &Config,
    ) -> Transition {
        let before = self.standing(&peer, now, cfg);
        let e = self.map.entry_or_insert_with(
            peer,
            || RepEntry {
                state: ReputationState::new(now),
                dirty: true,
                app_score: 0.0,
            },
            value,
        );
        // bounded work: at most 64 applications per call
        reputation::apply_n(&mut e.state, event, n.min(64), now, &cfg.reputation);
        e.dirty = true;
        let app =
            reputation::gossipsub_app_score_at(&e.state, cfg.trust(&peer), now, &cfg.reputation);
        let changed = (app - e.app_score).abs() >= 1.0 || (app < 0.0) != (e.app_score < 0.0);
        if changed {
            e.app_score = app;
        }
        let after = self.standing(&peer, now, cfg);
        Transition {
            before,
            after,
            app_score: app,
            app_score_changed: changed,
        }
    }

    /// Encoded states changed since the last call.
    pub fn take_dirty(&mut self, max: usize) -> Vec<(PeerId, Vec<u8>)> {
        let mut out = Vec::new();
        let keys: Vec<PeerId> = self
            .map
            .iter()
            .filter(|(_, e)| e.dirty)
            .map(|(k, _)| *k)
            .take(max)
            .collect();
        for k in keys {
            if let Some(e) = self.map.get_mut(&k) {
                e.dirty = false;
                out.push((k, e.state.to_bytes()));
            }
        }
        out
    }

    pub fn iter(&self) -> impl Iterator<Item = (&PeerId, &ReputationState)> {
        self.map.iter().map(|(k, e)| (k, &e.state))
    }
}
