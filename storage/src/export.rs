//! Export: unified JSONL (one file, or one per node) and the insights
//! document (re-exported from [`crate::interop`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use metamesh_protocol::insights::{self, InsightsDocument};
use metamesh_protocol::posterior::Prior;

use crate::interop::{io_err, now_secs, InteropError, PLATFORM};
use crate::store::Store;

/// Most per-node files open at once during a per-node export.
const MAX_OPEN_FILES: usize = 64;

/// Write every stored pattern as unified JSONL (one pattern a line, the
/// seed's field names). Returns the number written.
pub fn export_patterns_jsonl<W: Write>(store: &Store, out: W) -> Result<u64, InteropError> {
    let mut w = BufWriter::new(out);
    let mut n = 0u64;
    let p = Path::new("patterns");
    for item in store.iter_records() {
        let (_, body) = item?;
        serde_json::to_writer(&mut w, &body.pattern).map_err(|e| io_err(p)(e.into()))?;
        w.write_all(b"\n").map_err(io_err(p))?;
        n += 1;
    }
    w.flush().map_err(io_err(p))?;
    Ok(n)
}

/// A node_id as a safe file name component.
pub fn node_file_stem(node_id: &str) -> String {
    let s: String = node_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() || s.starts_with('.') {
        format!("_{s}")
    } else {
        s
    }
}

/// `{stem}_patterns.jsonl` files in a directory (created), one per
/// `node_id`, at most [`MAX_OPEN_FILES`] open at once (a file closed to make
/// room is appended to when its node comes again). Used by the store's
/// export and by the CLI's export through the API.
pub struct PerNodeFiles {
    dir: std::path::PathBuf,
    open: HashMap<String, BufWriter<File>>,
    created: HashSet<String>,
    /// node_id → lines written.
    pub counts: BTreeMap<String, u64>,
}

impl PerNodeFiles {
    pub fn new(dir: &Path) -> Result<PerNodeFiles, InteropError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        Ok(PerNodeFiles {
            dir: dir.to_path_buf(),
            open: HashMap::new(),
            created: HashSet::new(),
            counts: BTreeMap::new(),
        })
    }

    /// Append `line` (one JSON pattern, without its newline) to `node_id`'s file.
    pub fn write_line(&mut self, node_id: &str, line: &[u8]) -> Result<(), InteropError> {
        let stem = node_file_stem(node_id);
        let path = self.dir.join(format!("{stem}_patterns.jsonl"));
        if !self.open.contains_key(&stem) {
            if self.open.len() >= MAX_OPEN_FILES {
                for (_, mut w) in self.open.drain() {
                    w.flush().map_err(io_err(&self.dir))?;
                }
            }
            let first = self.created.insert(stem.clone());
            let f = std::fs::OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(first)
                .append(!first)
                .open(&path)
                .map_err(io_err(&path))?;
            self.open.insert(stem.clone(), BufWriter::new(f));
        }
        if let Some(w) = self.open.get_mut(&stem) {
            w.write_all(line).map_err(io_err(&path))?;
            w.write_all(b"\n").map_err(io_err(&path))?;
        }
        *self.counts.entry(node_id.to_string()).or_insert(0) += 1;
        Ok(())
    }

    /// Flush every open file.
    pub fn flush(&mut self) -> Result<(), InteropError> {
        for w in self.open.values_mut() {
            w.flush().map_err(io_err(&self.dir))?;
        }
        Ok(())
    }
}

/// Write `{node_id}_patterns.jsonl` per node into `dir` (created). Returns
/// node_id → count. At most [`MAX_OPEN_FILES`] files are open at once.
pub fn export_patterns_per_node(
    store: &Store,
    dir: &Path,
) -> Result<BTreeMap<String, u64>, InteropError> {
    let mut files = PerNodeFiles::new(dir)?;
    let mut line = Vec::with_capacity(512);
    for item in store.iter_records() {
        let (_, body) = item?;
        line.clear();
        serde_json::to_writer(&mut line, &body.pattern).map_err(|e| io_err(dir)(e.into()))?;
        files.write_line(&body.pattern.node_id, &line)?;
    }
    files.flush()?;
    Ok(files.counts)
}

/// The insights document over every stored pattern (the merged statistics;
/// no scan). `learned_preferences.optimal_quality_depth` is the depth with
/// the highest posterior probability of being best ([`insights::compute`]).
pub fn insights_document(store: &Store, node_id: &str, now: f64) -> InsightsDocument {
    let table = store.merged_stats();
    let modes = store.merged_mode_stats();
    let set = insights::compute(&table, Some(&modes), &Prior::default(), now);
    InsightsDocument::new(node_id, PLATFORM, table.total(), set, now)
}

/// Write the insights JSON document (the seed's schema) for `node_id`.
pub fn export_insights_json<W: Write>(
    store: &Store,
    out: W,
    node_id: &str,
) -> Result<InsightsDocument, InteropError> {
    let doc = insights_document(store, node_id, now_secs());
    let mut w = BufWriter::new(out);
    let p = Path::new("insights");
    serde_json::to_writer_pretty(&mut w, &doc).map_err(|e| io_err(p)(e.into()))?;
    w.write_all(b"\n").map_err(io_err(p))?;
    w.flush().map_err(io_err(p))?;
    Ok(doc)
}
