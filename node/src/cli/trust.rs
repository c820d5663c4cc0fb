//! Origin weights for the offline commands, from the configuration's trust
//! settings and the reputation states the node persisted — the same rule
//! as the running node's (`Node::origin_weight`): this node
//! and the configured parent are anchors (the parent never a newcomer),
//! operator-trusted peers are anchors, every weight comes from
//! `reputation::standing` under the configured trust (denied: weight 0,
//! fixed scores pinned).

use libp2p::PeerId;
use metamesh_exchange::book::Book;
use metamesh_exchange::Config as CoreConfig;
use metamesh_protocol::reputation::{ReputationState, Standing, Trust};
use metamesh_storage::Store;

use crate::config::Config;
use crate::learning::{OriginWeight, Role};

/// The reputation book a node with `cfg` would start with on `store`: the
/// exchange core's own book and trust rules (one copy of them).
pub struct OfflineBook {
    book: Book,
    cfg: CoreConfig,
}

impl OfflineBook {
    pub fn peers(&self) -> Vec<PeerId> {
        self.book.iter().map(|(p, _)| *p).collect()
    }

    pub fn standing(&self, peer: &PeerId, now: f64) -> Standing {
        self.book.standing(peer, now, &self.cfg)
    }

    pub fn trust(&self, peer: &PeerId) -> Trust {
        self.cfg.trust(peer)
    }
}

pub fn book(cfg: &Config, store: &Store) -> OfflineBook {
    let cfg = crate::actor::core_config(cfg);
    let mut book = Book::new(cfg.max_reputation_entries);
    for (p, bytes) in store.reputation_entries() {
        if let Ok(state) = ReputationState::from_bytes(&bytes) {
            book.load(p, state);
        }
    }
    OfflineBook { book, cfg }
}

/// `weigh(origin)` for [`crate::learning::collective`], as the node computes it.
pub fn origin_weights(
    cfg: &Config,
    store: &Store,
    me: PeerId,
    now: f64,
) -> impl Fn(&PeerId) -> OriginWeight {
    let book = book(cfg, store);
    let parent = cfg.parent_peer().map(|(p, _)| p);
    move |origin: &PeerId| {
        if *origin == me {
            return metamesh_protocol::policy::self_say(1.0);
        }
        let is_parent = parent.as_ref() == Some(origin);
        let role = if is_parent || book.trust(origin) == Trust::Trusted {
            Role::Anchor
        } else {
            Role::Peer
        };
        metamesh_protocol::policy::say(role, &book.standing(origin, now))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn configured_trust_is_applied() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s"), &Default::default()).unwrap();
        let me = PeerId::random();
        let (good, bad, other) = (PeerId::random(), PeerId::random(), PeerId::random());
        let mut cfg = Config::default();
        cfg.trust.trusted = vec![good.to_string()];
        cfg.trust.denied = vec![bad.to_string()];
        let w = origin_weights(&cfg, &store, me, 1.8e9);
        assert!(w(&me).anchor && w(&me).weight == 1.0);
        assert!(w(&good).anchor && w(&good).weight > 0.0 && !w(&good).newcomer);
        assert_eq!(w(&bad).weight, 0.0);
        assert!(!w(&other).anchor && w(&other).newcomer);
        let plain = origin_weights(&Config::default(), &store, me, 1.8e9);
        assert!(!plain(&good).anchor && plain(&bad).weight > 0.0);
    }
}
