//! Offline commands: init, id, import, export (on the data dir and the store).

use std::io::Write;

use anyhow::{Context, Result};
use metamesh_storage::interop::{self, Format, ImportReport};
use metamesh_storage::{Store, StoreConfig, StoreError};
use serde::Serialize;

use super::*;
use crate::datadir::DataDir;

fn format_of(f: ImportFormat) -> Format {
    match f {
        ImportFormat::Auto => Format::Auto,
        ImportFormat::Unified => Format::Unified,
        ImportFormat::Legion => Format::Legion,
        ImportFormat::Thor => Format::Thor,
    }
}

/// Open the store of a data dir for an offline command. A store held by a
/// running node is a clear error (the message names the cause).
pub fn open_store(dd: &DataDir) -> Result<Store> {
    let path = dd.store_path();
    Store::open(&path, &StoreConfig::default()).map_err(|e| match e {
        e @ StoreError::Locked { .. } => match dd.read_api_addr() {
            // Name the node we found, and what to do.
            Some(api) => anyhow::Error::new(e).context(format!(
                "a node is running on this data directory (API at http://{api}); stop it \
                 (Ctrl-C or SIGTERM) to import or export offline, or send patterns to its \
                 API (POST /v1/patterns)"
            )),
            None => anyhow::Error::new(e),
        },
        e => anyhow::Error::new(e).context(format!("opening the store {}", path.display())),
    })
}

/// `metamesh init`: create the identity and the store; print the PeerId.
/// Idempotent: re-running prints the existing PeerId.
pub fn init(g: &GlobalArgs, _a: InitArgs) -> Result<()> {
    let dd = DataDir::resolve(g.data_dir.clone());
    let key = dd.init()?;
    match Store::open(&dd.store_path(), &StoreConfig::default()) {
        Ok(store) => store.flush()?,
        // A running node holds the store: it exists, which is all init needs.
        Err(StoreError::Locked { .. }) => {}
        Err(e) => {
            return Err(anyhow::Error::new(e)
                .context(format!("creating the store {}", dd.store_path().display())))
        }
    }
    out(&key.public().to_peer_id().to_string())?;
    eprintln!("data directory: {}", dd.root.display());
    Ok(())
}

#[derive(Serialize)]
struct IdView {
    peer_id: String,
    listen_addrs: Vec<String>,
    data_dir: String,
    running: bool,
}

/// `metamesh id`: the PeerId, and the listen addresses when a node runs.
pub fn id(g: &GlobalArgs, a: IdArgs) -> Result<()> {
    let dd = DataDir::resolve(g.data_dir.clone());
    let key = dd.load_identity()?;
    let running = dd.read_api_addr().is_some();
    let listen_addrs = if running {
        dd.read_listen_addrs()
    } else {
        Vec::new()
    };
    let view = IdView {
        peer_id: key.public().to_peer_id().to_string(),
        listen_addrs,
        data_dir: dd.root.display().to_string(),
        running,
    };
    if a.json {
        out(&serde_json::to_string_pretty(&view)?)?;
    } else {
        out(&view.peer_id)?;
        for addr in &view.listen_addrs {
            out(addr)?;
        }
        if !running {
            eprintln!("(no node running: start one with `metamesh run` to listen)");
        }
    }
    Ok(())
}

#[derive(Serialize)]
struct ImportSummary<'a> {
    files: &'a [ImportReport],
    accepted: u64,
    duplicates: u64,
    skipped_lines: u64,
    invalid_records: u64,
    pattern_count: u64,
}

/// `metamesh import FILE…`: import pattern files, signed by this node.
pub fn import(g: &GlobalArgs, a: ImportArgs) -> Result<()> {
    let dd = DataDir::resolve(g.data_dir.clone());
    let key = dd.load_identity()?;
    let store = open_store(&dd)?;
    let mut reports = Vec::with_capacity(a.files.len());
    for file in &a.files {
        let r = interop::import_file(&store, &key, file, format_of(a.format), true)
            .with_context(|| format!("importing {}", file.display()))?;
        if !a.json {
            print_report(&r)?;
        }
        reports.push(r);
    }
    let summary = ImportSummary {
        files: &reports,
        accepted: reports.iter().map(|r| r.accepted).sum(),
        duplicates: reports.iter().map(|r| r.duplicates).sum(),
        skipped_lines: reports.iter().map(|r| r.skipped_total).sum(),
        invalid_records: reports.iter().map(|r| r.invalid_total).sum(),
        pattern_count: store.pattern_count(),
    };
    if a.json {
        out(&serde_json::to_string_pretty(&summary)?)?;
    } else if reports.len() > 1 {
        out(&format!(
            "total: {} accepted, {} duplicates, {} lines skipped, {} invalid records; the store holds {} patterns",
            summary.accepted, summary.duplicates, summary.skipped_lines, summary.invalid_records, summary.pattern_count
        ))?;
    }
    Ok(())
}

/// Print a line to stdout; a closed pipe (`| head`) is not an error.
fn out(line: &str) -> Result<()> {
    match writeln!(std::io::stdout().lock(), "{line}") {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => Ok(r?),
    }
}

fn print_report(r: &ImportReport) -> Result<()> {
    match write_report(r) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => Ok(r?),
    }
}

fn write_report(r: &ImportReport) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    let fmt = r
        .format
        .map(|f| format!("{f:?}").to_lowercase())
        .unwrap_or_else(|| "?".into());
    writeln!(
        out,
        "{} ({fmt}): {} accepted, {} duplicates, {} lines skipped, {} invalid records",
        r.file.display(),
        r.accepted,
        r.duplicates,
        r.skipped_total,
        r.invalid_total
    )?;
    for (line, reason) in &r.skipped_lines {
        writeln!(out, "  line {line}: skipped: {reason}")?;
    }
    for (line, field, reason) in &r.invalid_records {
        writeln!(out, "  line {line}: invalid {field}: {reason}")?;
    }
    let hidden = (r.skipped_total + r.invalid_total)
        .saturating_sub((r.skipped_lines.len() + r.invalid_records.len()) as u64);
    if hidden > 0 {
        writeln!(out, "  … and {hidden} more")?;
    }
    Ok(())
}

/// `metamesh export --patterns OUT.jsonl [--insights OUT.json] [--per-node]`.
pub fn export(g: &GlobalArgs, a: ExportArgs) -> Result<()> {
    if a.patterns.is_none() && a.insights.is_none() {
        anyhow::bail!("nothing to export: give --patterns OUT.jsonl and/or --insights OUT.json");
    }
    let dd = DataDir::resolve(g.data_dir.clone());
    let key = dd.load_identity()?;
    let store = open_store(&dd)?;
    if let Some(p) = &a.patterns {
        if a.per_node {
            let counts = interop::export_patterns_per_node(&store, p)?;
            for (node, n) in &counts {
                eprintln!(
                    "{}: {n} patterns",
                    p.join(format!("{}_patterns.jsonl", interop::node_file_stem(node)))
                        .display()
                );
            }
        } else {
            let f = create_file(p)?;
            let n = interop::export_patterns_jsonl(&store, f)?;
            eprintln!("{}: {n} patterns", p.display());
        }
    }
    if let Some(p) = &a.insights {
        // The node's collective insights — the same document as
        // `metamesh insights --json` (robust, reputation-weighted over every
        // stored origin; with only this node's patterns it is the plain one).
        let me = key.public().to_peer_id();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let weigh = crate::learning::stored_weights(&store, now);
        let collective = crate::learning::collective(&store, &me, &weigh);
        let doc = crate::learning::collective_document(&collective, &me, now);
        let mut w = std::io::BufWriter::new(create_file(p)?);
        serde_json::to_writer_pretty(&mut w, &doc)
            .with_context(|| format!("writing {}", p.display()))?;
        writeln!(w)
            .and_then(|()| w.flush())
            .with_context(|| format!("writing {}", p.display()))?;
        eprintln!(
            "{}: insights over {} patterns",
            p.display(),
            doc.pattern_count
        );
    }
    Ok(())
}

fn create_file(p: &std::path::Path) -> Result<std::fs::File> {
    if let Some(parent) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))
}
