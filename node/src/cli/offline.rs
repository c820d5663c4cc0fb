//! Data-dir commands: init, id, import, export. `import` and `export` go
//! through the API of a node running on the data dir ([`super::online`])
//! and open the store directly otherwise; both give the same result.

use std::io::Write;

use anyhow::{Context, Result};
use metamesh_storage::interop::{self, Format, ImportReport};
use metamesh_storage::{Store, StoreConfig, StoreError};
use serde::Serialize;

use super::client::{connect, Target};
use super::exit::{coded, NOTHING_IMPORTED, USAGE};
use super::online;
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
pub fn init(g: &GlobalArgs, a: InitArgs) -> Result<()> {
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
    let peer_id = key.public().to_peer_id().to_string();
    if a.json {
        return out(&serde_json::to_string_pretty(&serde_json::json!({
            "peer_id": peer_id,
            "data_dir": dd.root.display().to_string(),
        }))?);
    }
    out(&peer_id)?;
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
    /// `api` (through a running node) or `store` (opened directly).
    via: &'static str,
}

/// Every file must be a readable file before anything is imported: one
/// clear message for a missing one.
fn check_readable(files: &[std::path::PathBuf]) -> Result<()> {
    for f in files {
        match std::fs::metadata(f) {
            Ok(m) if m.is_file() => {}
            Ok(_) => return Err(coded(USAGE, format!("{} is not a file", f.display()))),
            Err(e) => {
                let why = match e.kind() {
                    std::io::ErrorKind::NotFound => "no such file".to_string(),
                    std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
                    _ => super::exit::strip_os_error(&e.to_string()),
                };
                return Err(coded(USAGE, format!("cannot read {}: {why}", f.display())));
            }
        }
    }
    Ok(())
}

/// `metamesh import FILE…`: import pattern files, signed by this node —
/// through its API when it runs, else into the store directly. Exit code 3
/// when nothing valid was found (no record stored or already held).
pub fn import(g: &GlobalArgs, a: ImportArgs) -> Result<()> {
    check_readable(&a.files)?;
    let dd = DataDir::resolve(g.data_dir.clone());
    let key = dd.load_identity()?;
    let target = connect(g)?;
    let route = match &target {
        Target::Api(c) => Some(online::import_route(c)?),
        Target::Store(_) => None,
    };
    let mut reports = Vec::with_capacity(a.files.len());
    for file in &a.files {
        let r = match &target {
            Target::Api(c) => online::import_file(
                c,
                route.unwrap_or(online::Route::Patterns),
                file,
                format_of(a.format),
            ),
            Target::Store(o) => {
                interop::import_file(&o.store, &key, file, format_of(a.format), true)
                    .map_err(anyhow::Error::new)
            }
        }
        .with_context(|| format!("importing {}", file.display()))?;
        if !a.json {
            print_report(&r)?;
        }
        reports.push(r);
    }
    let (pattern_count, via) = match &target {
        Target::Api(c) => (
            c.get::<crate::api::StatsView>("/v1/stats", &[])?
                .pattern_count,
            "api",
        ),
        Target::Store(o) => (o.store.pattern_count(), "store"),
    };
    let summary = ImportSummary {
        files: &reports,
        accepted: reports.iter().map(|r| r.accepted).sum(),
        duplicates: reports.iter().map(|r| r.duplicates).sum(),
        skipped_lines: reports.iter().map(|r| r.skipped_total).sum(),
        invalid_records: reports.iter().map(|r| r.invalid_total).sum(),
        pattern_count,
        via,
    };
    if a.json {
        out(&serde_json::to_string_pretty(&summary)?)?;
    } else if reports.len() > 1 {
        out(&format!(
            "total: {} accepted, {} duplicates, {} lines skipped, {} invalid records; the store holds {} patterns",
            summary.accepted, summary.duplicates, summary.skipped_lines, summary.invalid_records, summary.pattern_count
        ))?;
    }
    if summary.accepted == 0 && summary.duplicates == 0 {
        return Err(coded(
            NOTHING_IMPORTED,
            format!(
                "nothing imported: no valid record in {} ({} lines skipped, {} invalid records)",
                if a.files.len() == 1 {
                    a.files[0].display().to_string()
                } else {
                    format!("{} files", a.files.len())
                },
                summary.skipped_lines,
                summary.invalid_records
            ),
        ));
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

#[derive(Serialize, Default)]
struct ExportSummary {
    #[serde(skip_serializing_if = "Option::is_none")]
    patterns_file: Option<String>,
    patterns: u64,
    /// Per-node layout: node_id -> patterns written.
    #[serde(skip_serializing_if = "Option::is_none")]
    per_node: Option<std::collections::BTreeMap<String, u64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    insights_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    insights_pattern_count: Option<u64>,
    via: &'static str,
}

/// `metamesh export --patterns OUT.jsonl [--insights OUT.json] [--per-node]`
/// — through the API of a running node, else from the store.
pub fn export(g: &GlobalArgs, a: ExportArgs) -> Result<()> {
    if a.patterns.is_none() && a.insights.is_none() {
        return Err(coded(
            USAGE,
            "nothing to export: give --patterns OUT.jsonl and/or --insights OUT.json",
        ));
    }
    let dd = DataDir::resolve(g.data_dir.clone());
    let key = dd.load_identity()?;
    let me = key.public().to_peer_id();
    let target = connect(g)?;
    let mut summary = ExportSummary {
        via: match target {
            Target::Api(_) => "api",
            Target::Store(_) => "store",
        },
        ..Default::default()
    };
    if let Some(p) = &a.patterns {
        summary.patterns_file = Some(p.display().to_string());
        match (&target, a.per_node) {
            (Target::Store(o), true) => {
                let counts = interop::export_patterns_per_node(&o.store, p)?;
                summary.patterns = counts.values().sum();
                summary.per_node = Some(counts);
            }
            (Target::Store(o), false) => {
                summary.patterns = interop::export_patterns_jsonl(&o.store, create_file(p)?)?;
            }
            (Target::Api(c), per_node) => {
                let mut sink = if per_node {
                    online::Out::PerNode(metamesh_storage::interop::PerNodeFiles::new(p)?)
                } else {
                    online::Out::One(std::io::BufWriter::new(create_file(p)?))
                };
                summary.patterns = online::export_patterns(c, &mut sink)
                    .and_then(|n| sink.finish().map(|()| n))
                    .with_context(|| format!("exporting to {}", p.display()))?;
                if let online::Out::PerNode(pn) = sink {
                    summary.per_node = Some(pn.counts);
                }
            }
        }
    }
    if let Some(p) = &a.insights {
        // The node's collective insights — the same document as
        // `metamesh insights --json` (robust, reputation-weighted under the
        // configured trust over every stored origin).
        let doc: metamesh_protocol::InsightsDocument = match &target {
            Target::Api(c) => c.get("/v1/insights", &[("scope", "collective".to_string())])?,
            Target::Store(o) => {
                let now = super::client::unix_now();
                let weigh = super::trust::origin_weights(&o.cfg, &o.store, me, now);
                let collective = crate::learning::collective(&o.store, &me, &weigh);
                crate::learning::collective_document(&collective, &me, now)
            }
        };
        let mut w = std::io::BufWriter::new(create_file(p)?);
        serde_json::to_writer_pretty(&mut w, &doc)
            .with_context(|| format!("writing {}", p.display()))?;
        writeln!(w)
            .and_then(|()| w.flush())
            .with_context(|| format!("writing {}", p.display()))?;
        summary.insights_file = Some(p.display().to_string());
        summary.insights_pattern_count = Some(doc.pattern_count);
    }
    if a.json {
        return out(&serde_json::to_string_pretty(&summary)?);
    }
    if let (Some(p), Some(counts)) = (&a.patterns, &summary.per_node) {
        for (node, n) in counts {
            eprintln!(
                "{}: {n} patterns",
                p.join(format!("{}_patterns.jsonl", interop::node_file_stem(node)))
                    .display()
            );
        }
    } else if let Some(p) = &a.patterns {
        eprintln!("{}: {} patterns", p.display(), summary.patterns);
    }
    if let (Some(p), Some(n)) = (&a.insights, summary.insights_pattern_count) {
        eprintln!("{}: insights over {n} patterns", p.display());
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
