//! A map with a hard bound on its size that evicts the least valuable of its
//! least recently touched entries.
//!
//! Every per-peer and per-origin table of the core is one of these. On
//! insert into a full map, the [`EVICTION_WINDOW`] least recently touched
//! entries are compared by a caller-given value and the lowest goes (ties:
//! the oldest). With value = "how much it matters to remember" (for
//! reputation: how far from neutral, hostile highest), a flood of fresh
//! identities evicts other fresh identities, not the evidence against
//! attackers.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

/// How many of the oldest entries are compared on eviction.
pub const EVICTION_WINDOW: usize = 16;

#[derive(Debug, Clone)]
pub struct BoundedMap<K, V> {
    cap: usize,
    clock: u64,
    map: HashMap<K, (V, u64)>,
    order: BTreeMap<u64, K>,
}

impl<K: Hash + Eq + Clone, V> BoundedMap<K, V> {
    /// A map holding at most `cap` entries (at least 1).
    pub fn new(cap: usize) -> Self {
        BoundedMap {
            cap: cap.max(1),
            clock: 0,
            map: HashMap::new(),
            order: BTreeMap::new(),
        }
    }

    pub fn cap(&self) -> usize {
        self.cap
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Change the bound; evicts (oldest first) when shrinking.
    pub fn set_cap(&mut self, cap: usize) {
        self.cap = cap.max(1);
        while self.map.len() > self.cap {
            self.evict_oldest();
        }
    }

    fn stamp(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    pub fn get(&self, k: &K) -> Option<&V> {
        self.map.get(k).map(|(v, _)| v)
    }

    pub fn contains_key(&self, k: &K) -> bool {
        self.map.contains_key(k)
    }

    /// Mutable access that also marks the entry recently used.
    pub fn get_mut(&mut self, k: &K) -> Option<&mut V> {
        let t = self.stamp();
        let (v, old) = self.map.get_mut(k)?;
        self.order.remove(old);
        *old = t;
        self.order.insert(t, k.clone());
        Some(v)
    }

    pub fn remove(&mut self, k: &K) -> Option<V> {
        let (v, t) = self.map.remove(k)?;
        self.order.remove(&t);
        Some(v)
    }

    /// Insert or replace; on a full map first evicts the lowest-`value`
    /// entry among the oldest. Returns the evicted key, if any.
    pub fn insert_with(&mut self, k: K, v: V, value: impl Fn(&V) -> i64) -> Option<K> {
        let mut evicted = None;
        if !self.map.contains_key(&k) && self.map.len() >= self.cap {
            evicted = self.evict_lowest(&value);
        }
        let t = self.stamp();
        if let Some((_, old)) = self.map.insert(k.clone(), (v, t)) {
            self.order.remove(&old);
        }
        self.order.insert(t, k);
        evicted
    }

    /// Insert evicting the least recently touched entry.
    pub fn insert(&mut self, k: K, v: V) -> Option<K> {
        self.insert_with(k, v, |_| 0)
    }

    /// The entry for `k`, created with `make` when absent (evicting by `value`).
    pub fn entry_or_insert_with(
        &mut self,
        k: K,
        make: impl FnOnce() -> V,
        value: impl Fn(&V) -> i64,
    ) -> &mut V {
        if !self.map.contains_key(&k) && self.map.len() >= self.cap {
            self.evict_lowest(&value);
        }
        let t = self.stamp();
        let e = self.map.entry(k.clone()).or_insert_with(|| (make(), t));
        self.order.remove(&e.1);
        e.1 = t;
        self.order.insert(t, k);
        &mut e.0
    }

    fn evict_lowest(&mut self, value: &impl Fn(&V) -> i64) -> Option<K> {
        let victim = self
            .order
            .iter()
            .take(EVICTION_WINDOW)
            .filter_map(|(t, k)| self.map.get(k).map(|(v, _)| (value(v), *t, k)))
            .min_by_key(|(val, t, _)| (*val, *t))
            .map(|(_, _, k)| k.clone())?;
        self.remove(&victim);
        Some(victim)
    }

    fn evict_oldest(&mut self) {
        if let Some((_, k)) = self.order.pop_first() {
            self.map.remove(&k);
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.map.iter().map(|(k, (v, _))| (k, v))
    }

    pub fn keys(&self) -> impl Iterator<Item = &K> {
        self.map.keys()
    }

    /// Keep only the entries for which `f` is true.
    pub fn retain(&mut self, mut f: impl FnMut(&K, &mut V) -> bool) {
        let order = &mut self.order;
        self.map.retain(|k, (v, t)| {
            let keep = f(k, v);
            if !keep {
                order.remove(t);
            }
            keep
        });
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn never_exceeds_its_bound_and_evicts_low_value_first() {
        let mut m: BoundedMap<u32, i64> = BoundedMap::new(4);
        m.insert_with(1, -100, |v| v.abs()); // valuable: keep
        for k in 2..100 {
            m.insert_with(k, 0, |v| v.abs());
            assert!(m.len() <= 4);
        }
        assert_eq!(m.get(&1), Some(&-100));
        m.get_mut(&99);
        m.set_cap(2);
        assert_eq!(m.len(), 2);
        assert!(m.contains_key(&99));
    }

    #[test]
    fn entry_creates_and_touches() {
        let mut m: BoundedMap<u32, u32> = BoundedMap::new(2);
        *m.entry_or_insert_with(1, || 5, |_| 0) += 1;
        *m.entry_or_insert_with(2, || 5, |_| 0) += 1;
        *m.entry_or_insert_with(1, || 5, |_| 0) += 1; // touch 1
        m.insert(3, 0); // evicts 2 (oldest)
        assert_eq!(m.get(&1), Some(&7));
        assert!(!m.contains_key(&2));
    }
}
