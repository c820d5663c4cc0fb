//! Schema migration: version 1 (one sled tree per index, records keyed by
//! PeerId bytes, random-key `by_hash` and `import_keys` trees, no
//! compression) to version 2 ([`crate::keys`]).
//!
//! sled refuses to reopen a directory with a different compression setting,
//! so the upgrade writes a new store beside the old one and swaps the
//! directories. Each step survives a crash, finished by the next open
//! ([`finish_interrupted`]):
//! 1. write `<store>.migrating/` and, once complete and flushed, its
//!    `MIGRATED` marker (a crash before the marker: the half-written copy is
//!    removed and the upgrade starts again from the untouched old store);
//! 2. rename `<store>` to `<store>.v1-old`, then `<store>.migrating` to `<store>`;
//! 3. remove `<store>.v1-old`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use libp2p_identity::PeerId;
use metamesh_protocol::codec;
use metamesh_protocol::record::{ContentHash, PatternBody, SignedRecord, MAX_BODY_BYTES};
use metamesh_protocol::stats::DepthTable;

use crate::keys;
use crate::store::{corrupt, Store, StoreConfig, StoreError, MAX_BATCH, META_OWN_ORIGIN};
use crate::write::{Batch, Declined};

const MARKER: &str = "MIGRATED";

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Is this sled database a version-1 store?
pub(crate) fn is_v1(db: &sled::Db) -> Result<bool, StoreError> {
    Ok(db.tree_names().iter().any(|n| n.as_ref() == b"records"))
}

/// Complete an upgrade that a crash interrupted (see the module docs).
pub(crate) fn finish_interrupted(path: &Path) -> Result<(), StoreError> {
    let tmp = sibling(path, ".migrating");
    let old = sibling(path, ".v1-old");
    if tmp.exists() {
        if !tmp.join(MARKER).exists() {
            tracing::warn!("removing an unfinished store upgrade at {}", tmp.display());
            std::fs::remove_dir_all(&tmp)?;
        } else {
            if path.exists() {
                std::fs::rename(path, &old)?;
            }
            std::fs::rename(&tmp, path)?;
            std::fs::remove_file(path.join(MARKER))?;
        }
    }
    if old.exists() && path.exists() {
        std::fs::remove_dir_all(&old)?;
    }
    Ok(())
}

/// v1 record key `[len][origin bytes][seq BE]` → (origin, seq).
fn parse_v1_key(k: &[u8]) -> Option<(PeerId, u64)> {
    let len = *k.first()? as usize;
    if k.len() != 1 + len + 8 {
        return None;
    }
    let origin = PeerId::from_bytes(&k[1..1 + len]).ok()?;
    Some((origin, u64::from_be_bytes(k[1 + len..].try_into().ok()?)))
}

/// A progress bar for an upgrade of `total` records (hidden off a terminal).
pub(crate) fn bar(what: &str, total: u64) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let b = indicatif::ProgressBar::new(total);
    if let Ok(style) = indicatif::ProgressStyle::with_template(&format!(
        "upgrading {what} {{bar:40}} {{pos}}/{{len}} records ({{per_sec}}, eta {{eta}})"
    )) {
        b.set_style(style);
    }
    b
}

fn open_tree(db: &sled::Db, name: &str) -> Result<sled::Tree, StoreError> {
    Ok(db.open_tree(name)?)
}

/// Upgrade the version-1 store `old` (open at `path`) in place.
pub(crate) fn upgrade_v1(old: sled::Db, path: &Path, cfg: &StoreConfig) -> Result<(), StoreError> {
    let meta = open_tree(&old, "meta")?;
    let version = meta
        .get(b"schema_version")?
        .and_then(|v| keys::be_u32(&v))
        .ok_or_else(|| corrupt("version-1 store without a schema version"))?;
    if version != 1 {
        return Err(corrupt(format!(
            "store with trees of version 1 says version {version}"
        )));
    }
    let total = meta
        .get(b"merged_stats")?
        .and_then(|v| codec::from_cbor::<DepthTable>(&v, 64 * 1024).ok())
        .map(|t| t.total())
        .unwrap_or(0);
    tracing::info!(
        records = total,
        "upgrading store {} from schema 1 to 2",
        path.display()
    );
    let tmp = sibling(path, ".migrating");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)?;
    }
    let new = Store::open(&tmp, cfg)?;
    let progress = bar("store", total);

    // Records, in (origin, seq) order: appends in the new layout.
    let records = open_tree(&old, "records")?;
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut own_origin: Option<PeerId> = None;
    let flush_records = |batch: &mut Vec<(SignedRecord, PatternBody)>| -> Result<(), StoreError> {
        if !batch.is_empty() {
            new.insert_batch(batch)?;
            progress.inc(batch.len() as u64);
            batch.clear();
        }
        Ok(())
    };
    for kv in records.iter() {
        let (_, v) = kv?;
        let rec = SignedRecord::from_bytes(&v).map_err(|e| corrupt(format!("v1 record: {e}")))?;
        let body: PatternBody = codec::from_cbor(&rec.body, MAX_BODY_BYTES)
            .map_err(|e| corrupt(format!("v1 record body: {e}")))?;
        batch.push((rec, body));
        if batch.len() >= MAX_BATCH {
            flush_records(&mut batch)?;
        }
    }
    flush_records(&mut batch)?;

    // Declined slots (prev = seq - 1: version 1 had no epochs).
    let mut declined = Vec::new();
    for kv in open_tree(&old, "declined")?.iter() {
        let (k, v) = kv?;
        let (origin, seq) = parse_v1_key(&k).ok_or_else(|| corrupt("v1 declined key"))?;
        let hash: [u8; 32] = v
            .as_ref()
            .try_into()
            .map_err(|_| corrupt("v1 declined hash"))?;
        declined.push(Declined {
            origin,
            seq,
            prev: seq.saturating_sub(1),
            hash: ContentHash(hash),
        });
        if declined.len() >= MAX_BATCH {
            new.write_group(None, vec![Batch::Decline(std::mem::take(&mut declined))])
                .into_iter()
                .collect::<Result<Vec<_>, _>>()?;
        }
    }
    if !declined.is_empty() {
        new.write_group(None, vec![Batch::Decline(declined)])
            .into_iter()
            .collect::<Result<Vec<_>, _>>()?;
    }

    // Evidence: inserting the conflicting record keeps it as evidence again.
    let mut evidence = Vec::new();
    for kv in open_tree(&old, "equivocation")?.iter() {
        let (_, v) = kv?;
        let Ok(rec) = SignedRecord::from_bytes(&v) else {
            continue;
        };
        let Ok(body) = codec::from_cbor::<PatternBody>(&rec.body, MAX_BODY_BYTES) else {
            continue;
        };
        evidence.push((rec, body));
    }
    new.insert_batch(&evidence)?;

    // Import keys → 8-byte prefixes, grouped by the seq of their records.
    let mut imports: Vec<(u64, u64)> = Vec::new();
    for kv in open_tree(&old, "import_keys")?.iter() {
        let (k, v) = kv?;
        let key: [u8; 32] = k
            .as_ref()
            .try_into()
            .map_err(|_| corrupt("v1 import key"))?;
        let (origin, seq) = parse_v1_key(&v).ok_or_else(|| corrupt("v1 import key value"))?;
        own_origin.get_or_insert(origin);
        imports.push((seq, keys::import_prefix(&key)));
    }
    imports.sort_unstable();
    for chunk in imports.chunks(MAX_BATCH) {
        let blob: Vec<u8> = chunk.iter().flat_map(|(_, p)| p.to_le_bytes()).collect();
        let mut k = vec![keys::IMPORT];
        k.extend_from_slice(&chunk[0].0.to_be_bytes());
        new.data().insert(k, blob)?;
    }

    // Own seq, and own origin when the import keys tell it.
    let own_seq = meta
        .get(b"own_seq")?
        .and_then(|v| keys::be_u64(&v))
        .unwrap_or(0);
    if let Some(o) = own_origin {
        new.data()
            .insert(keys::meta_key(META_OWN_ORIGIN), o.to_bytes())?;
    }
    new.bump_own_seq(own_seq)?;

    // Node-owned trees, as they are.
    for name in ["reputation", "peers", "insights"] {
        let from = open_tree(&old, name)?;
        let to = open_tree(new.inner_db(), name)?;
        for kv in from.iter() {
            let (k, v) = kv?;
            to.insert(k, v)?;
        }
    }
    new.flush()?;
    progress.finish_and_clear();
    let migrated = new.pattern_count();
    new.close()?;
    std::fs::write(tmp.join(MARKER), b"")?;
    drop(old);
    finish_interrupted(path)?;
    tracing::info!(
        records = migrated,
        "store {} upgraded to schema 2",
        path.display()
    );
    Ok(())
}
