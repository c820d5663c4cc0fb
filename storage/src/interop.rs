//! Interop files: import of unified JSONL, Legion and Thor prototype files;
//! export of unified JSONL and the insights JSON document.
//!
//! ## Formats
//! - **unified**: JSON Lines, one pattern per line, the protocol document's
//!   field names. The document's own example lines omit `platform` and
//!   `mode`; they import as `platform = "unknown"` and `mode =
//!   cogitation_mode` or `"general"` ([`Pattern::from_json_value`]).
//! - **legion**: `{node}_patterns.json`, one JSON array of objects with
//!   `outcome_quality` and `cogitation_mode` and no `node_id`: the node is
//!   the file name's prefix before `_patterns.json` (`legion` if the name
//!   does not follow the pattern); `platform` defaults to `legion`.
//! - **thor**: `{node}_depth_patterns.jsonl`, JSON Lines with UPPERCASE depth
//!   names, `quality_achieved`, `reputation_before/after` and `context`; a
//!   missing `node_id` is the file name's prefix before
//!   `_depth_patterns.jsonl`; `platform` defaults to `thor`.
//!
//! ## `auto` detection
//! By content, then name: the first non-blank byte `[` → legion. Otherwise
//! the file name ends in `_depth_patterns.jsonl`, or one of the first 16
//! parseable lines has an all-UPPERCASE `depth_used` or a
//! `reputation_before` field → thor. Otherwise → unified. (Thor and unified
//! lines are read by the same lenient parser, so a wrong guess between them
//! only changes the default `platform` and `node_id`.)
//!
//! ## Import rules
//! Lines are streamed (constant memory; a line longer than
//! [`MAX_LINE_BYTES`] is skipped). Blank and unparseable lines are skipped
//! and reported with their 1-based line numbers; records that fail
//! [`Pattern::validate`] are rejected with the field and the reason; every
//! valid record is signed by the importing node (origin = importer, original
//! `node_id` kept) and stored. For the Legion array the line reported is the
//! line where the record ends.
//!
//! **Re-import dedup**: the import key of a pattern is blake3 of its
//! canonical JSON (the validated pattern serialised with every object's keys
//! sorted). A pattern whose key is already in the store counts as a
//! duplicate and is not stored again, so importing the same file twice — or
//! re-importing an export — adds nothing, although the signed bodies (which
//! carry fresh seqs) would differ.

use std::fs::File;
use std::io::{self, BufRead, BufReader, IsTerminal, Read};
use std::path::{Path, PathBuf};

use libp2p_identity::Keypair;
use metamesh_protocol::schema::{Pattern, SchemaError};
use serde::Serialize;
use serde_json::Value;

use crate::store::{AppendOutcome, Store, StoreError};
use crate::write::{Batch, Outcomes};
use crate::writer::{Ticket, Writer, WriterConfig};

/// Longest line (or Legion record) accepted, in bytes.
pub const MAX_LINE_BYTES: usize = 1024 * 1024;
/// Most skipped-line and invalid-record entries kept in a report (the
/// totals are always exact).
pub const MAX_REPORTED: usize = 1000;
/// Patterns per store transaction during import.
// 1024, not 2048: smaller batches leave sled less garbage per atomic batch
// (1M import: 428 vs 513 B/pattern on disk, peak RSS 224-240 vs 272 MiB, at
// the same rate; docs/storage.md).
const IMPORT_BATCH: usize = 1024;
/// Lines sniffed by `auto` detection.
const SNIFF_LINES: usize = 16;
/// `platform` of the insights document this node writes.
pub const PLATFORM: &str = "metamesh";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Auto,
    Unified,
    Legion,
    Thor,
}

#[derive(Debug, thiserror::Error)]
pub enum InteropError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(io::Error) -> InteropError + '_ {
    move |source| InteropError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ImportReport {
    pub file: PathBuf,
    pub format: Option<Format>,
    /// Records stored.
    pub accepted: u64,
    /// Valid records already held (same import key).
    pub duplicates: u64,
    /// (line, reason) of blank or unparseable lines (first [`MAX_REPORTED`]).
    pub skipped_lines: Vec<(u64, String)>,
    /// (line, field, reason) of records that failed validation (first [`MAX_REPORTED`]).
    pub invalid_records: Vec<(u64, String, String)>,
    /// Exact number of skipped lines.
    pub skipped_total: u64,
    /// Exact number of invalid records.
    pub invalid_total: u64,
}

impl ImportReport {
    fn skip(&mut self, line: u64, reason: String) {
        self.skipped_total += 1;
        if self.skipped_lines.len() < MAX_REPORTED {
            self.skipped_lines.push((line, reason));
        }
    }

    fn invalid(&mut self, line: u64, field: String, reason: String) {
        self.invalid_total += 1;
        if self.invalid_records.len() < MAX_REPORTED {
            self.invalid_records.push((line, field, reason));
        }
    }
}

pub(crate) fn now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Node name from `{node}{suffix}`, if the file name has that shape.
fn node_from_name(path: &Path, suffix: &str) -> Option<String> {
    let name = file_name(path);
    let node = name.strip_suffix(suffix)?;
    (!node.is_empty()).then(|| node.to_string())
}

/// Detect a file's format (see the module docs for the rule).
pub fn detect_format(path: &Path) -> Result<Format, InteropError> {
    let f = File::open(path).map_err(io_err(path))?;
    let mut r = BufReader::new(f);
    // First non-blank byte.
    loop {
        let buf = r.fill_buf().map_err(io_err(path))?;
        if buf.is_empty() {
            return Ok(Format::Unified);
        }
        match buf.iter().position(|b| !b.is_ascii_whitespace()) {
            Some(i) => {
                if buf[i] == b'[' {
                    return Ok(Format::Legion);
                }
                break;
            }
            None => {
                let n = buf.len();
                r.consume(n);
            }
        }
    }
    if file_name(path).ends_with("_depth_patterns.jsonl") {
        return Ok(Format::Thor);
    }
    let mut line = Vec::new();
    for _ in 0..SNIFF_LINES {
        line.clear();
        match read_bounded_line(&mut r, &mut line).map_err(io_err(path))? {
            LineRead::Eof => break,
            LineRead::TooLong => continue,
            LineRead::Line => {}
        }
        let Ok(Value::Object(m)) = serde_json::from_slice::<Value>(&line) else {
            continue;
        };
        let upper_depth = m
            .get("depth_used")
            .and_then(Value::as_str)
            .is_some_and(|d| {
                d.chars().any(|c| c.is_ascii_alphabetic())
                    && !d.chars().any(|c| c.is_ascii_lowercase())
            });
        if upper_depth || m.contains_key("reputation_before") {
            return Ok(Format::Thor);
        }
    }
    Ok(Format::Unified)
}

enum LineRead {
    Line,
    TooLong,
    Eof,
}

/// Read one line (without its newline) of at most [`MAX_LINE_BYTES`];
/// longer lines are consumed to their end and reported as `TooLong`.
fn read_bounded_line<R: BufRead>(r: &mut R, buf: &mut Vec<u8>) -> io::Result<LineRead> {
    let n = r
        .by_ref()
        .take(MAX_LINE_BYTES as u64 + 1)
        .read_until(b'\n', buf)?;
    if n == 0 {
        return Ok(LineRead::Eof);
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
        return Ok(LineRead::Line);
    }
    if buf.len() > MAX_LINE_BYTES {
        // Discard the rest of the line.
        loop {
            let chunk = r.fill_buf()?;
            if chunk.is_empty() {
                break;
            }
            if let Some(i) = chunk.iter().position(|b| *b == b'\n') {
                r.consume(i + 1);
                break;
            }
            let len = chunk.len();
            r.consume(len);
        }
        return Ok(LineRead::TooLong);
    }
    Ok(LineRead::Line) // last line without a newline
}

/// A reader that counts the bytes passing through it (for the progress bar).
struct Counting<R> {
    inner: R,
    bytes: u64,
    bar: indicatif::ProgressBar,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes += n as u64;
        if self.bytes & 0xFFFF < n as u64 {
            self.bar.set_position(self.bytes);
        }
        Ok(n)
    }
}

fn progress_bar(len: u64, show: bool, path: &Path) -> indicatif::ProgressBar {
    if !show || !io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{msg} [{bar:40}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta})",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(file_name(path));
    bar
}

/// The import dedup key of a pattern: blake3 of its canonical JSON (every
/// object's keys sorted, recursively), streamed into the hasher.
pub fn import_key(p: &Pattern) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(b"metamesh/import-key/v1\0");
    let mut v = serde_json::to_value(p).unwrap_or(Value::Null);
    v.sort_all_objects();
    // Writing into a hasher cannot fail; a pattern always serialises.
    let _ = serde_json::to_writer(&mut h, &v);
    *h.finalize().as_bytes()
}

/// The format's defaults applied to every element before it is parsed and
/// validated (Legion's and Thor's platform, the node named by the file).
struct Decoder {
    now: f64,
    platform: Option<&'static str>,
    default_node: Option<String>,
}

impl Decoder {
    fn new(path: &Path, format: Format) -> Decoder {
        Decoder {
            now: now_secs(),
            platform: match format {
                Format::Legion => Some("legion"),
                Format::Thor => Some("thor"),
                _ => None,
            },
            default_node: match format {
                Format::Legion => {
                    Some(node_from_name(path, "_patterns.json").unwrap_or_else(|| "legion".into()))
                }
                Format::Thor => node_from_name(path, "_depth_patterns.jsonl"),
                _ => None,
            },
        }
    }

    fn pattern(&self, v: Value) -> Result<Pattern, SchemaError> {
        let v = match (v, self.platform) {
            (Value::Object(mut m), Some(platform)) => {
                m.entry("platform")
                    .or_insert_with(|| Value::String(platform.into()));
                Value::Object(m)
            }
            (v, _) => v,
        };
        let p = Pattern::from_json_value(v, self.default_node.as_deref())?;
        p.validate(self.now)?;
        Ok(p)
    }
}

/// Where decoded, valid patterns go (the report is the file's, for tallies).
type Each<'a> = dyn FnMut(&mut ImportReport, Pattern) -> Result<(), InteropError> + 'a;

/// Accumulates valid patterns and hands them, in batches, to a writer
/// thread that signs them on every core and stores them — while this thread
/// parses the next batch (at most [`IN_FLIGHT`] batches queued).
struct Sink {
    writer: Writer,
    in_flight: std::collections::VecDeque<Ticket>,
    batch: Vec<(Pattern, Option<[u8; 32]>)>,
}

/// Batches submitted and not yet acknowledged, during an import.
const IN_FLIGHT: usize = 2;

impl Sink {
    fn record(&mut self, report: &mut ImportReport, p: Pattern) -> Result<(), InteropError> {
        let k = import_key(&p);
        self.batch.push((p, Some(k)));
        if self.batch.len() >= IMPORT_BATCH {
            self.flush(report)?;
        }
        Ok(())
    }

    fn tally(report: &mut ImportReport, t: Ticket) -> Result<(), InteropError> {
        match t.wait()? {
            Outcomes::Appended(outs) => {
                for o in outs {
                    match o {
                        AppendOutcome::Appended(..) => report.accepted += 1,
                        AppendOutcome::DuplicateImport => report.duplicates += 1,
                    }
                }
                Ok(())
            }
            _ => Err(StoreError::Corrupt("import produced other outcomes".into()).into()),
        }
    }

    fn flush(&mut self, report: &mut ImportReport) -> Result<(), InteropError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(IMPORT_BATCH));
        self.in_flight
            .push_back(self.writer.submit_nowait(Batch::Append(batch))?);
        while self.in_flight.len() > IN_FLIGHT {
            if let Some(t) = self.in_flight.pop_front() {
                Self::tally(report, t)?;
            }
        }
        Ok(())
    }

    /// Submit the rest and wait for every batch (each acknowledged durable).
    fn finish(mut self, report: &mut ImportReport) -> Result<(), InteropError> {
        self.flush(report)?;
        while let Some(t) = self.in_flight.pop_front() {
            Self::tally(report, t)?;
        }
        self.writer.shutdown();
        Ok(())
    }
}

/// Import one file into the store, signed by `key`. `progress`: show a
/// progress bar when stderr is a terminal. The store is flushed (durable)
/// before this returns.
pub fn import_file(
    store: &Store,
    key: &Keypair,
    path: &Path,
    format: Format,
    progress: bool,
) -> Result<ImportReport, InteropError> {
    let writer = Writer::start(
        store.clone(),
        Some(key.clone()),
        WriterConfig {
            queue: IN_FLIGHT + 1,
            ..WriterConfig::default()
        },
    )?;
    let mut sink = Sink {
        writer,
        in_flight: Default::default(),
        batch: Vec::with_capacity(IMPORT_BATCH),
    };
    let mut report = decode(path, format, progress, &mut |r, p| sink.record(r, p))?;
    sink.finish(&mut report)?;
    store.flush()?;
    Ok(report)
}

/// Decode one import file as [`import_file`] does — format detection, the
/// Legion array streamer, bounded lines, the format's defaults, schema
/// checks — and hand each valid pattern to `each` instead of a store. The
/// report counts what was skipped or invalid; `accepted` stays 0.
pub fn decode_file(
    path: &Path,
    format: Format,
    each: &mut dyn FnMut(Pattern),
) -> Result<ImportReport, InteropError> {
    decode(path, format, false, &mut |_, p| {
        each(p);
        Ok(())
    })
}

fn decode(
    path: &Path,
    format: Format,
    progress: bool,
    each: &mut Each<'_>,
) -> Result<ImportReport, InteropError> {
    let format = match format {
        Format::Auto => detect_format(path)?,
        f => f,
    };
    let file = File::open(path).map_err(io_err(path))?;
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let bar = progress_bar(len, progress, path);
    let mut reader = Counting {
        inner: file,
        bytes: 0,
        bar: bar.clone(),
    };
    let mut report = ImportReport {
        file: path.to_path_buf(),
        format: Some(format),
        ..Default::default()
    };
    let decoder = Decoder::new(path, format);
    let mut element = |report: &mut ImportReport, line: u64, v: Value| match decoder.pattern(v) {
        Ok(p) => each(report, p),
        Err(e) => {
            report.invalid(line, e.field, e.reason);
            Ok(())
        }
    };
    match format {
        Format::Legion => import_legion(&mut reader, &mut element, &mut report)?,
        _ => import_lines(
            BufReader::with_capacity(64 * 1024, &mut reader),
            &mut element,
            &mut report,
        )
        .map_err(|e| match e {
            InteropError::Io { source, .. } => InteropError::Io {
                path: path.to_path_buf(),
                source,
            },
            e => e,
        })?,
    }
    bar.finish_and_clear();
    Ok(report)
}

/// One JSON element of a file with the line where it ends.
type Element<'a> = dyn FnMut(&mut ImportReport, u64, Value) -> Result<(), InteropError> + 'a;

fn import_lines<R: BufRead>(
    mut r: R,
    element: &mut Element<'_>,
    report: &mut ImportReport,
) -> Result<(), InteropError> {
    let mut buf = Vec::with_capacity(1024);
    let mut line_no = 0u64;
    loop {
        buf.clear();
        line_no += 1;
        match read_bounded_line(&mut r, &mut buf).map_err(io_err(Path::new("")))? {
            LineRead::Eof => break,
            LineRead::TooLong => {
                report.skip(line_no, format!("line longer than {MAX_LINE_BYTES} bytes"));
                continue;
            }
            LineRead::Line => {}
        }
        if buf.iter().all(u8::is_ascii_whitespace) {
            report.skip(line_no, "blank line".into());
            continue;
        }
        match serde_json::from_slice::<Value>(&buf) {
            Ok(v @ Value::Object(_)) => element(report, line_no, v)?,
            Ok(_) => report.invalid(line_no, "pattern".into(), "must be a JSON object".into()),
            Err(e) => report.skip(line_no, format!("not valid JSON: {e}")),
        }
    }
    Ok(())
}

/// Stream a Legion JSON array element by element (constant memory).
fn import_legion<R: Read>(
    r: &mut Counting<R>,
    element: &mut Element<'_>,
    report: &mut ImportReport,
) -> Result<(), InteropError> {
    let reader = io::BufReader::with_capacity(64 * 1024, &mut *r);
    let broke = each_json_array_element(reader, &mut |line, v| {
        if !v.is_object() {
            report.invalid(line, "pattern".into(), "must be a JSON object".into());
            return Ok(());
        }
        element(report, line, v)
    })?;
    if let Some((line, why)) = broke {
        // A truncated or malformed array: keep what was read, report where it broke.
        report.skip(
            line,
            format!("malformed JSON array, rest of file skipped: {why}"),
        );
    }
    Ok(())
}

/// Walk a JSON array element by element (constant memory): `each` gets
/// every element with the file line where it ends. Returns where the array
/// broke (line, reason) if it is malformed or truncated — the elements
/// before were delivered; an error of `each` stops the walk and is returned.
/// Used by the store's import and by the CLI's import through the API.
pub fn each_json_array_element<R: Read, E>(
    r: R,
    each: &mut dyn FnMut(u64, Value) -> Result<(), E>,
) -> Result<Option<(u64, String)>, E> {
    use serde::de::{DeserializeSeed, SeqAccess, Visitor};

    // The visitor needs the reader's newline count while serde_json owns the
    // reader; they share it through a Cell.
    struct Seed<'a, E> {
        each: &'a mut dyn FnMut(u64, Value) -> Result<(), E>,
        lines: &'a std::cell::Cell<u64>,
        failure: &'a mut Option<E>,
    }

    impl<'de, E> Visitor<'de> for Seed<'_, E> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a JSON array of pattern objects")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            while let Some(v) = seq.next_element::<Value>()? {
                let line = self.lines.get() + 1;
                if let Err(e) = (self.each)(line, v) {
                    *self.failure = Some(e);
                    return Err(serde::de::Error::custom("import failed"));
                }
            }
            Ok(())
        }
    }

    impl<'de, E> DeserializeSeed<'de> for Seed<'_, E> {
        type Value = ();
        fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_seq(self)
        }
    }

    let lines = std::cell::Cell::new(0u64);
    let mut failure = None;
    let result = {
        let mut de = serde_json::Deserializer::from_reader(LineTap {
            inner: r,
            lines: &lines,
        });
        let seed = Seed {
            each,
            lines: &lines,
            failure: &mut failure,
        };
        seed.deserialize(&mut de).and_then(|()| de.end())
    };
    if let Some(e) = failure {
        return Err(e);
    }
    Ok(result.err().map(|e| (e.line() as u64, e.to_string())))
}

/// Counts newlines as serde_json pulls bytes (for Legion line numbers).
struct LineTap<'a, R> {
    inner: R,
    lines: &'a std::cell::Cell<u64>,
}

impl<R: Read> Read for LineTap<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // Read byte-sized chunks are fine: serde_json's IoRead reads one byte
        // at a time from us, and the BufReader below makes that cheap, so the
        // count is exact at every element boundary.
        let n = self.inner.read(buf)?;
        let nl = buf[..n].iter().filter(|b| **b == b'\n').count() as u64;
        self.lines.set(self.lines.get() + nl);
        Ok(n)
    }
}

pub use crate::export::{
    export_insights_json, export_patterns_jsonl, export_patterns_per_node, insights_document,
    node_file_stem, PerNodeFiles,
};
