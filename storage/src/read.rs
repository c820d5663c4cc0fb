//! Reads: frontiers, held slots, statistics, ranges and filtered queries.

use std::collections::BTreeMap;

use libp2p_identity::PeerId;
use metamesh_protocol::codec;
use metamesh_protocol::record::{
    ContentHash, InsightBody, PatternBody, RecordKind, SignedRecord, MAX_BODY_BYTES,
};
use metamesh_protocol::schema::Depth;
use metamesh_protocol::stats::{DepthStats, DepthTable};
use metamesh_protocol::sync::Frontier;
use metamesh_protocol::wire::{Cursor, RequestFilters};

use crate::keys::{self, be_u64, slot_key};
use crate::store::{
    corrupt, decode_modes, EquivocationEvidence, Store, StoreError, MAX_QUERY_LIMIT,
    QUERY_SCAN_BUDGET,
};

/// One page of [`Store::query`]: the records and where to continue (if more may match).
pub type QueryPage = (Vec<(SignedRecord, PatternBody)>, Option<Cursor>);

fn decode_body(rec: &SignedRecord) -> Result<PatternBody, StoreError> {
    codec::from_cbor(&rec.body, MAX_BODY_BYTES).map_err(|e| corrupt(format!("pattern body: {e}")))
}

impl Store {
    fn origin_of(&self, id: u32) -> Result<PeerId, StoreError> {
        self.mem_read()
            .ids
            .get(id as usize)
            .copied()
            .ok_or_else(|| corrupt("unknown origin id"))
    }

    fn record_at(&self, k: &[u8], v: &[u8]) -> Result<(PeerId, u64, SignedRecord), StoreError> {
        let (id, seq) = keys::parse_slot_key(k).ok_or_else(|| corrupt("record key"))?;
        let origin = self.origin_of(id)?;
        let rec = keys::decode_record(v, &origin.to_bytes(), self.dict())
            .ok_or_else(|| corrupt("record value"))?;
        Ok((origin, seq, rec))
    }

    /// origin → highest seq of the gap-free chain held (stored or declined).
    pub fn frontier(&self) -> Frontier {
        let mem = self.mem_read();
        mem.frontier
            .iter()
            .filter(|(_, f)| **f > 0)
            .filter_map(|(id, f)| Some((*mem.ids.get(*id as usize)?, *f)))
            .collect()
    }

    /// The frontier of one origin (0 when none is held).
    pub fn frontier_of(&self, origin: &PeerId) -> u64 {
        let mem = self.mem_read();
        mem.origins
            .get(origin)
            .and_then(|id| mem.frontier.get(id))
            .copied()
            .unwrap_or(0)
    }

    /// Is the slot (origin, seq) held (stored or declined)? Held slots are
    /// at or below the frontier or pending above it: answered from memory
    /// plus, only for origins with pending slots, one point lookup.
    pub fn has_seq(&self, origin: &PeerId, seq: u64) -> Result<bool, StoreError> {
        if seq == 0 {
            return Ok(false);
        }
        let mem = self.mem_read();
        let Some(&id) = mem.origins.get(origin) else {
            return Ok(false);
        };
        if seq <= mem.frontier.get(&id).copied().unwrap_or(0) {
            return Ok(true);
        }
        if mem.pending.get(&id).copied().unwrap_or(0) == 0 {
            return Ok(false);
        }
        Ok(self.data().contains_key(slot_key(keys::PENDING, id, seq))?)
    }

    /// Is this exact record — (origin, seq) with this content hash — stored
    /// or declined? One point lookup by (origin, seq): the dedup check for
    /// received records (a different hash in the slot is equivocation, which
    /// [`Store::insert`] reports).
    pub fn holds(&self, origin: &PeerId, seq: u64, hash: &ContentHash) -> Result<bool, StoreError> {
        let id = {
            let mem = self.mem_read();
            let Some(&id) = mem.origins.get(origin) else {
                return Ok(false);
            };
            // Above the frontier with nothing pending the slot is empty: no
            // sled read (which would wait for a running batch write).
            if seq > mem.frontier.get(&id).copied().unwrap_or(0)
                && mem.pending.get(&id).copied().unwrap_or(0) == 0
            {
                return Ok(false);
            }
            id
        };
        if let Some(v) = self.data().get(slot_key(keys::RECORD, id, seq))? {
            let body = keys::record_body(&v, &origin.to_bytes(), self.dict())
                .ok_or_else(|| corrupt("record value"))?;
            return Ok(ContentHash::of(&body) == *hash);
        }
        Ok(self
            .data()
            .get(slot_key(keys::DECLINED, id, seq))?
            .is_some_and(|h| h.as_ref() == hash.0))
    }

    /// Per-origin statistics of stored patterns.
    pub fn origin_stats(&self) -> BTreeMap<PeerId, DepthTable> {
        let mem = self.mem_read();
        mem.stats
            .iter()
            .filter_map(|(id, t)| Some((*mem.ids.get(*id as usize)?, *t)))
            .collect()
    }

    /// Statistics of one origin's patterns (empty if none).
    pub fn stats_of(&self, origin: &PeerId) -> DepthTable {
        let mem = self.mem_read();
        mem.origins
            .get(origin)
            .and_then(|id| mem.stats.get(id))
            .copied()
            .unwrap_or_default()
    }

    /// Statistics of every stored pattern (kept merged on every write: O(1)).
    pub fn merged_stats(&self) -> DepthTable {
        self.mem_read().merged
    }

    /// Per-mode statistics of one origin (at most [`crate::MAX_MODES_PER_ORIGIN`] + 1 entries).
    pub fn origin_mode_stats(&self, origin: &PeerId) -> BTreeMap<String, DepthStats> {
        let Some(k) = self.id_key_of(keys::MODES, origin) else {
            return BTreeMap::new();
        };
        match self
            .data()
            .get(k)
            .map_err(StoreError::from)
            .and_then(|v| match v {
                Some(v) => decode_modes(&v),
                None => Ok(BTreeMap::new()),
            }) {
            Ok(m) => m,
            Err(e) => {
                tracing::error!("reading mode statistics: {e}");
                BTreeMap::new()
            }
        }
    }

    /// Per-mode statistics merged over all origins.
    pub fn merged_mode_stats(&self) -> BTreeMap<String, DepthStats> {
        let mut out: BTreeMap<String, DepthStats> = BTreeMap::new();
        for kv in self.data().scan_prefix([keys::MODES]) {
            match kv
                .map_err(StoreError::from)
                .and_then(|(_, v)| decode_modes(&v))
            {
                Ok(m) => {
                    for (mode, s) in m {
                        out.entry(mode).or_default().merge(&s);
                    }
                }
                Err(e) => tracing::error!("reading mode statistics: {e}"),
            }
        }
        out
    }

    /// Number of stored patterns (declined ones are not stored).
    pub fn pattern_count(&self) -> u64 {
        self.merged_stats().total()
    }

    /// Number of stored patterns per depth (every depth present, zeros included).
    pub fn depth_distribution(&self) -> BTreeMap<Depth, u64> {
        let m = self.merged_stats();
        m.iter().map(|(d, s)| (d, s.n)).collect()
    }

    /// Records of `origin` with `from_seq <= seq <= to_seq`, in seq order, at
    /// most `max_count` of them and at most `max_bytes` of encoded envelopes
    /// (counting records returned, never the span of the range).
    pub fn records_in_range(
        &self,
        origin: PeerId,
        from_seq: u64,
        to_seq: u64,
        max_count: usize,
        max_bytes: usize,
    ) -> Result<Vec<SignedRecord>, StoreError> {
        let mut out = Vec::new();
        if from_seq > to_seq || max_count == 0 {
            return Ok(out);
        }
        let Some(id) = self.mem_read().origins.get(&origin).copied() else {
            return Ok(out);
        };
        let signer = origin.to_bytes();
        let mut bytes = 0usize;
        for kv in self
            .data()
            .range(slot_key(keys::RECORD, id, from_seq)..=slot_key(keys::RECORD, id, to_seq))
        {
            let (_, v) = kv?;
            let rec = keys::decode_record(&v, &signer, self.dict())
                .ok_or_else(|| corrupt("record value"))?;
            let len = rec.to_bytes().len();
            if bytes + len > max_bytes || out.len() >= max_count {
                break;
            }
            bytes += len;
            out.push(rec);
        }
        Ok(out)
    }

    /// Records matching the seed's filters, resuming after `cursor`, in
    /// (origin, seq) order (with `min_timestamp`, chunks of 64 seqs whose
    /// latest record is older are skipped unread). Returns at most
    /// `min(limit, filters.max_count, MAX_QUERY_LIMIT)` records and a cursor
    /// when more may match (also when [`QUERY_SCAN_BUDGET`] records were
    /// examined without filling the page).
    pub fn query(
        &self,
        filters: &RequestFilters,
        cursor: Option<Cursor>,
        limit: usize,
    ) -> Result<QueryPage, StoreError> {
        let limit = limit
            .min(filters.max_count.map(|m| m as usize).unwrap_or(usize::MAX))
            .min(MAX_QUERY_LIMIT);
        let mut out = Vec::new();
        if limit == 0 {
            return Ok((out, None));
        }
        let cursor_key = |c: &Cursor| -> Result<[u8; 13], StoreError> {
            let id = self
                .mem_read()
                .origins
                .get(&c.origin)
                .copied()
                .ok_or_else(|| StoreError::Unsupported("cursor names no stored record".into()))?;
            Ok(slot_key(keys::RECORD, id, c.seq))
        };
        let mut scanned = 0usize;
        let mut last: Option<Cursor> = None;
        let mut consider = |k: &[u8],
                            v: &[u8],
                            out: &mut Vec<(SignedRecord, PatternBody)>|
         -> Result<bool, StoreError> {
            let (origin, seq, rec) = self.record_at(k, v)?;
            let body = decode_body(&rec)?;
            last = Some(Cursor { origin, seq });
            scanned += 1;
            if filters.matches(&body.pattern) {
                out.push((rec, body));
            }
            Ok(out.len() >= limit || scanned >= QUERY_SCAN_BUDGET)
        };
        let mut stopped_early = false;
        if let Some(min_ts) = filters.min_timestamp {
            // Same (origin, seq) order; a chunk whose latest record is older
            // than `min_ts` is skipped without reading its records.
            let after = cursor
                .as_ref()
                .map(|c| {
                    let k = cursor_key(c)?;
                    keys::parse_slot_key(&k).ok_or_else(|| corrupt("record key"))
                })
                .transpose()?;
            let start = match after {
                Some((id, seq)) => keys::chunk_key(id, seq),
                None => slot_key(keys::CHUNK, 0, 0),
            };
            let end = std::ops::Bound::Excluded(vec![keys::CHUNK + 1]);
            let mut skipped = 0usize;
            'chunks: for kv in self
                .data()
                .range::<Vec<u8>, _>((std::ops::Bound::Included(start.to_vec()), end))
            {
                let (ck, cv) = kv?;
                let (id, chunk) = keys::parse_slot_key(&ck).ok_or_else(|| corrupt("chunk key"))?;
                let latest = keys::chunk_latest(&cv).ok_or_else(|| corrupt("chunk value"))?;
                let lo = chunk << keys::CHUNK_BITS;
                let hi = lo | ((1 << keys::CHUNK_BITS) - 1);
                if latest < min_ts {
                    skipped += 1;
                    if skipped >= QUERY_SCAN_BUDGET {
                        last = Some(Cursor {
                            origin: self.origin_of(id)?,
                            seq: hi,
                        });
                        stopped_early = true;
                        break;
                    }
                    continue;
                }
                let from = match after {
                    Some((aid, aseq)) if aid == id && aseq >= lo => {
                        std::ops::Bound::Excluded(slot_key(keys::RECORD, id, aseq).to_vec())
                    }
                    _ => std::ops::Bound::Included(slot_key(keys::RECORD, id, lo).to_vec()),
                };
                let to = std::ops::Bound::Included(slot_key(keys::RECORD, id, hi).to_vec());
                for kv in self.data().range::<Vec<u8>, _>((from, to)) {
                    let (k, v) = kv?;
                    if consider(&k, &v, &mut out)? {
                        stopped_early = true;
                        break 'chunks;
                    }
                }
            }
        } else {
            let start = match cursor {
                Some(c) => std::ops::Bound::Excluded(cursor_key(&c)?.to_vec()),
                None => std::ops::Bound::Included(vec![keys::RECORD]),
            };
            let end = std::ops::Bound::Excluded(vec![keys::RECORD + 1]);
            for kv in self.data().range::<Vec<u8>, _>((start, end)) {
                let (k, v) = kv?;
                if consider(&k, &v, &mut out)? {
                    stopped_early = true;
                    break;
                }
            }
        }
        Ok((out, if stopped_early { last } else { None }))
    }

    /// The stored record with this content hash. There is no hash index
    /// (it would make every write a random insert): this scans the records,
    /// O(n) — for tooling only; use [`Store::get`] / [`Store::holds`].
    pub fn get_by_hash(&self, hash: &ContentHash) -> Result<Option<SignedRecord>, StoreError> {
        for kv in self.data().scan_prefix([keys::RECORD]) {
            let (k, v) = kv?;
            let (id, _) = keys::parse_slot_key(&k).ok_or_else(|| corrupt("record key"))?;
            let signer = self.origin_of(id)?.to_bytes();
            if keys::record_body(&v, &signer, self.dict())
                .is_some_and(|b| ContentHash::of(&b) == *hash)
            {
                return Ok(Some(self.record_at(&k, &v)?.2));
            }
        }
        Ok(None)
    }

    /// Is this content hash stored or declined? O(n) like
    /// [`Store::get_by_hash`]; received records are deduplicated with
    /// [`Store::holds`].
    pub fn contains_hash(&self, hash: &ContentHash) -> Result<bool, StoreError> {
        if self.get_by_hash(hash)?.is_some() {
            return Ok(true);
        }
        for kv in self.data().scan_prefix([keys::DECLINED]) {
            if kv?.1.as_ref() == hash.0 {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The stored record of (origin, seq).
    pub fn get(
        &self,
        origin: &PeerId,
        seq: u64,
    ) -> Result<Option<(SignedRecord, PatternBody)>, StoreError> {
        let Some(id) = self.mem_read().origins.get(origin).copied() else {
            return Ok(None);
        };
        match self.data().get(slot_key(keys::RECORD, id, seq))? {
            Some(v) => {
                let rec = keys::decode_record(&v, &origin.to_bytes(), self.dict())
                    .ok_or_else(|| corrupt("record value"))?;
                let body = decode_body(&rec)?;
                Ok(Some((rec, body)))
            }
            None => Ok(None),
        }
    }

    /// Every stored record in (origin, seq) order, decoded lazily (export).
    pub fn iter_records(
        &self,
    ) -> impl Iterator<Item = Result<(SignedRecord, PatternBody), StoreError>> + '_ {
        self.data().scan_prefix([keys::RECORD]).map(|kv| {
            let (k, v) = kv?;
            let (_, _, rec) = self.record_at(&k, &v)?;
            let body = decode_body(&rec)?;
            Ok((rec, body))
        })
    }

    /// Equivocation evidence held.
    pub fn equivocations(&self) -> Result<Vec<EquivocationEvidence>, StoreError> {
        let mut out = Vec::new();
        for kv in self.data().scan_prefix([keys::EVIDENCE]) {
            let (k, v) = kv?;
            let (id, seq) = keys::parse_slot_key(&k).ok_or_else(|| corrupt("evidence key"))?;
            let origin = self.origin_of(id)?;
            let rk = slot_key(keys::RECORD, id, seq);
            let held = match self.data().get(rk)? {
                Some(h) => Some(self.record_at(&rk, &h)?.2),
                None => None,
            };
            out.push(EquivocationEvidence {
                origin,
                seq,
                held,
                conflicting: SignedRecord::from_bytes(&v)
                    .map_err(|e| corrupt(format!("evidence: {e}")))?,
            });
        }
        Ok(out)
    }

    /// Was this import key seen before? (By its first 8 bytes: a false
    /// positive needs a 2^-64 coincidence per pair.)
    pub fn has_import_key(&self, key: &[u8; 32]) -> Result<bool, StoreError> {
        let mut ws = self.seq_state();
        if ws.imports.is_none() {
            ws.imports = Some(self.load_import_filter()?);
        }
        Ok(ws
            .imports
            .as_ref()
            .is_some_and(|f| f.contains(&keys::import_prefix(key))))
    }

    /// Remember import keys of patterns stored by other means (the node's
    /// exchange core signs and persists them; the keys follow, flushed):
    /// a later import of the same pattern is a duplicate. Written after the
    /// records, so a crash in between can duplicate, never lose, a pattern.
    pub fn add_import_keys(&self, tag: u64, import_keys: &[[u8; 32]]) -> Result<(), StoreError> {
        if import_keys.is_empty() {
            return Ok(());
        }
        let prefixes: Vec<u64> = import_keys.iter().map(keys::import_prefix).collect();
        let blob: Vec<u8> = prefixes.iter().flat_map(|p| p.to_le_bytes()).collect();
        let mut ws = self.seq_state();
        self.data()
            .insert([&[keys::IMPORT][..], &tag.to_be_bytes()].concat(), blob)?;
        if let Some(f) = ws.imports.as_mut() {
            f.extend(prefixes);
        }
        drop(ws);
        self.flush()
    }

    // ---- node key-value helpers --------------------------------------------

    pub fn put_reputation(&self, peer: &PeerId, bytes: &[u8]) -> Result<(), StoreError> {
        self.kv().0.insert(peer.to_bytes(), bytes)?;
        Ok(())
    }

    pub fn reputation_entries(&self) -> Vec<(PeerId, Vec<u8>)> {
        kv_entries(self.kv().0, |v| Some(v.to_vec()))
    }

    pub fn put_peer_addrs(&self, peer: &PeerId, addrs: &[String]) -> Result<(), StoreError> {
        self.kv().1.insert(peer.to_bytes(), codec::to_cbor(addrs))?;
        Ok(())
    }

    pub fn peer_addrs(&self) -> Vec<(PeerId, Vec<String>)> {
        kv_entries(self.kv().1, |v| codec::from_cbor(v, 64 * 1024).ok())
    }

    /// Keep `rec` as the latest insight of its origin unless a higher seq is held.
    pub fn put_latest_insight(
        &self,
        rec: &SignedRecord,
        body: &InsightBody,
    ) -> Result<(), StoreError> {
        if rec.kind != RecordKind::Insight {
            return Err(StoreError::Mismatch("record kind is not insight"));
        }
        if rec.signer != body.origin.to_bytes() {
            return Err(StoreError::Mismatch("body origin is not the signer"));
        }
        let mut value = body.seq.to_be_bytes().to_vec();
        value.extend_from_slice(&rec.to_bytes());
        self.kv()
            .2
            .fetch_and_update(body.origin.to_bytes(), |old| match old {
                Some(o) if o.len() >= 8 && be_u64(&o[..8]).unwrap_or(0) >= body.seq => {
                    Some(o.to_vec())
                }
                _ => Some(value.clone()),
            })?;
        Ok(())
    }

    pub fn latest_insights(&self) -> Vec<(SignedRecord, InsightBody)> {
        kv_entries(self.kv().2, |v| {
            let rec = SignedRecord::from_bytes(v.get(8..)?).ok()?;
            let body: InsightBody = codec::from_cbor(&rec.body, MAX_BODY_BYTES).ok()?;
            Some((rec, body))
        })
        .into_iter()
        .map(|(_, x)| x)
        .collect()
    }
}

fn kv_entries<T>(tree: &sled::Tree, decode: impl Fn(&[u8]) -> Option<T>) -> Vec<(PeerId, T)> {
    let mut out = Vec::new();
    for kv in tree.iter() {
        match kv {
            Ok((k, v)) => match (PeerId::from_bytes(&k), decode(&v)) {
                (Ok(p), Some(t)) => out.push((p, t)),
                _ => tracing::warn!("skipping an unreadable entry in the {:?} tree", tree.name()),
            },
            Err(e) => tracing::error!("reading the {:?} tree: {e}", tree.name()),
        }
    }
    out
}
