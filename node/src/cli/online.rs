//! `metamesh import` and `export` while a node runs: through its API.
//!
//! **Import** reads each file here (constant memory) and streams it to the
//! node in chunks: `POST /v1/import` (JSON Lines, the node parses,
//! validates, de-duplicates and stores each chunk durably before
//! answering; docs/api.md). A node without that route gets validated
//! patterns in bounded batches on `POST /v1/patterns` instead (then a
//! repeated import is not de-duplicated). Line numbers in the report are
//! the file's. A Legion array is sent one element per line.
//!
//! **Export** streams `GET /v1/export` (unified JSON Lines, byte for byte
//! the offline export), else pages `GET /v1/patterns?paged=true` with its
//! cursor. A progress bar is drawn only when stderr is a terminal.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, IsTerminal, Read, Write};
use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use metamesh_protocol::Pattern;
use metamesh_storage::interop::{self, Format, ImportReport, MAX_LINE_BYTES, MAX_REPORTED};
use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::Value;

use super::client::{read_bounded, refusal, ApiClient};
use crate::api::{PatternView, SubmittedPattern};

/// Lines per `POST /v1/import` request (the route takes up to 100 000).
pub const IMPORT_CHUNK_LINES: usize = 10_000;
/// Bytes per `POST /v1/import` request (the route takes up to 64 MiB).
pub const IMPORT_CHUNK_BYTES: usize = 16 * 1024 * 1024;
/// Patterns per `POST /v1/patterns` batch (the route takes up to 1000).
pub const PATTERN_BATCH: usize = 500;
/// Body bytes per `POST /v1/patterns` batch (the route takes up to 1 MiB).
pub const PATTERN_BATCH_BYTES: usize = 768 * 1024;
/// Page size when exporting through `GET /v1/patterns`.
const PAGE: u32 = 1000;
/// How often a `503` (nothing stored, retry is safe) is retried.
const RETRIES_503: u32 = 6;

/// One unit read from a file: a line (or Legion element) to send, or a
/// problem found locally.
enum Item {
    Line(u64, Vec<u8>),
    Skip(u64, String),
    Invalid(u64, String, String),
}

/// A client whose requests may stream for long: no overall timeout, only
/// a connect timeout.
fn streaming_client() -> Result<reqwest::blocking::Client> {
    reqwest::blocking::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(None)
        .build()
        .context("building the HTTP client")
}

fn progress(len: u64, label: String) -> indicatif::ProgressBar {
    if !io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{msg} [{bar:40}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta})",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(label);
    bar
}

/// Counts bytes read into the progress bar.
struct Counting<R> {
    inner: R,
    bar: indicatif::ProgressBar,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bar.inc(n as u64);
        Ok(n)
    }
}

/// The node name a Thor/Legion file name implies (`{node}{suffix}`).
fn node_from_name(path: &Path, suffix: &str) -> Option<String> {
    let name = path.file_name()?.to_string_lossy().into_owned();
    let node = name.strip_suffix(suffix)?;
    (!node.is_empty()).then(|| node.to_string())
}

/// `platform` and `node_id` defaults of a format, as the offline importer.
fn defaults(format: Format, path: &Path) -> (Option<&'static str>, Option<String>) {
    match format {
        Format::Legion => (
            Some("legion"),
            Some(node_from_name(path, "_patterns.json").unwrap_or_else(|| "legion".into())),
        ),
        Format::Thor => (Some("thor"), node_from_name(path, "_depth_patterns.jsonl")),
        _ => (None, None),
    }
}

fn format_name(f: Format) -> &'static str {
    match f {
        Format::Legion => "legion",
        Format::Thor => "thor",
        _ => "unified",
    }
}

/// Read one line of at most [`MAX_LINE_BYTES`] (without its newline);
/// `Ok(None)` at the end, `Ok(Some(false))` for a longer line (consumed).
fn read_line<R: BufRead>(r: &mut R, buf: &mut Vec<u8>) -> io::Result<Option<bool>> {
    buf.clear();
    let n = r
        .by_ref()
        .take(MAX_LINE_BYTES as u64 + 1)
        .read_until(b'\n', buf)?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
        return Ok(Some(true));
    }
    if buf.len() > MAX_LINE_BYTES {
        let mut rest = Vec::new();
        loop {
            rest.clear();
            if r.by_ref().take(64 * 1024).read_until(b'\n', &mut rest)? == 0
                || rest.last() == Some(&b'\n')
            {
                break;
            }
        }
        return Ok(Some(false));
    }
    Ok(Some(true))
}

/// Feed every item of a file to `f` (lines, or Legion array elements).
fn each_item<R: Read>(
    reader: R,
    format: Format,
    f: &mut dyn FnMut(Item) -> Result<()>,
) -> Result<()> {
    let mut r = BufReader::with_capacity(64 * 1024, reader);
    if format == Format::Legion {
        return each_legion_element(r, f);
    }
    let mut buf = Vec::with_capacity(1024);
    let mut line = 0u64;
    while let Some(fits) = read_line(&mut r, &mut buf)? {
        line += 1;
        if fits {
            f(Item::Line(line, std::mem::take(&mut buf)))?;
        } else {
            f(Item::Skip(
                line,
                format!("line longer than {MAX_LINE_BYTES} bytes"),
            ))?;
        }
    }
    Ok(())
}

/// Stream a Legion JSON array element by element; each element becomes a
/// line, numbered by the file line where it ends.
fn each_legion_element<R: Read>(r: R, f: &mut dyn FnMut(Item) -> Result<()>) -> Result<()> {
    use serde::de::{DeserializeSeed, SeqAccess, Visitor};
    use std::cell::Cell;

    struct Tap<'a, R> {
        inner: R,
        lines: &'a Cell<u64>,
    }
    impl<R: Read> Read for Tap<'_, R> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.inner.read(buf)?;
            let nl = buf[..n].iter().filter(|b| **b == b'\n').count() as u64;
            self.lines.set(self.lines.get() + nl);
            Ok(n)
        }
    }
    struct Seed<'a> {
        f: &'a mut dyn FnMut(Item) -> Result<()>,
        lines: &'a Cell<u64>,
        failure: &'a mut Option<anyhow::Error>,
    }
    impl<'de> Visitor<'de> for Seed<'_> {
        type Value = ();
        fn expecting(&self, fmt: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            fmt.write_str("a JSON array of pattern objects")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            while let Some(v) = seq.next_element::<Value>()? {
                let line = self.lines.get() + 1;
                let item = match serde_json::to_vec(&v) {
                    Ok(bytes) if v.is_object() => Item::Line(line, bytes),
                    _ => Item::Invalid(line, "pattern".into(), "must be a JSON object".into()),
                };
                if let Err(e) = (self.f)(item) {
                    *self.failure = Some(e);
                    return Err(serde::de::Error::custom("import failed"));
                }
            }
            Ok(())
        }
    }
    impl<'de> DeserializeSeed<'de> for Seed<'_> {
        type Value = ();
        fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_seq(self)
        }
    }

    let lines = Cell::new(0u64);
    let mut failure = None;
    let result = {
        let mut de = serde_json::Deserializer::from_reader(Tap {
            inner: r,
            lines: &lines,
        });
        let seed = Seed {
            f: &mut *f,
            lines: &lines,
            failure: &mut failure,
        };
        seed.deserialize(&mut de).and_then(|()| de.end())
    };
    if let Some(e) = failure {
        return Err(e);
    }
    if let Err(e) = result {
        f(Item::Skip(
            e.line() as u64,
            format!("malformed JSON array, rest of file skipped: {e}"),
        ))?;
    }
    Ok(())
}

fn skip(r: &mut ImportReport, line: u64, reason: String) {
    r.skipped_total += 1;
    if r.skipped_lines.len() < MAX_REPORTED {
        r.skipped_lines.push((line, reason));
    }
}

fn invalid(r: &mut ImportReport, line: u64, field: String, reason: String) {
    r.invalid_total += 1;
    if r.invalid_records.len() < MAX_REPORTED {
        r.invalid_records.push((line, field, reason));
    }
}

/// `POST /v1/import`'s answer (docs/api.md).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ImportAnswer {
    accepted: u64,
    duplicates: u64,
    skipped_total: u64,
    skipped: Vec<LineError>,
    invalid_total: u64,
    invalid: Vec<LineError>,
    error: Option<String>,
    field: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct LineError {
    line: u64,
    field: String,
    error: String,
}

/// Which write route the node offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `POST /v1/import` (streamed, de-duplicated).
    Import,
    /// `POST /v1/patterns` batches (older nodes).
    Patterns,
}

/// Ask the node whether it has `POST /v1/import` (an empty body stores nothing).
pub fn import_route(c: &ApiClient) -> Result<Route> {
    let resp = c
        .http
        .post(format!("{}/v1/import", c.base))
        .header("content-type", "application/x-ndjson")
        .body(Vec::new())
        .send()
        .with_context(|| format!("asking the node at {}", c.base))?;
    Ok(match resp.status() {
        StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED => Route::Patterns,
        _ => Route::Import,
    })
}

/// Send a request, retrying a `503` (the node stored nothing) with backoff.
fn send_retrying(
    make: &dyn Fn() -> reqwest::blocking::RequestBuilder,
    base: &str,
) -> Result<reqwest::blocking::Response> {
    let mut wait = Duration::from_millis(100);
    for attempt in 0.. {
        let resp = make()
            .send()
            .with_context(|| format!("sending to the node at {base}"))?;
        if resp.status() != StatusCode::SERVICE_UNAVAILABLE || attempt >= RETRIES_503 {
            return Ok(resp);
        }
        std::thread::sleep(wait);
        wait = (wait * 2).min(Duration::from_secs(3));
    }
    unreachable!("the retry loop returns")
}

/// Import one file through the node's API.
pub fn import_file(
    c: &ApiClient,
    route: Route,
    path: &Path,
    format: Format,
) -> Result<ImportReport> {
    let format = match format {
        Format::Auto => interop::detect_format(path)?,
        f => f,
    };
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let bar = progress(len, format!("{name} → node"));
    let reader = Counting {
        inner: file,
        bar: bar.clone(),
    };
    let mut report = ImportReport {
        file: path.to_path_buf(),
        format: Some(format),
        ..Default::default()
    };
    let http = streaming_client()?;
    let (platform, default_node) = defaults(format, path);
    let mut sender = Sender {
        c,
        http,
        route,
        format,
        platform,
        default_node,
        now: super::client::unix_now(),
        body: Vec::new(),
        lines: Vec::new(),
        patterns: Vec::new(),
    };
    each_item(reader, format, &mut |item| sender.item(&mut report, item))?;
    sender.flush(&mut report)?;
    bar.finish_and_clear();
    Ok(report)
}

/// Accumulates a chunk and sends it on the chosen route.
struct Sender<'a> {
    c: &'a ApiClient,
    http: reqwest::blocking::Client,
    route: Route,
    format: Format,
    platform: Option<&'static str>,
    default_node: Option<String>,
    now: f64,
    /// `Route::Import`: the JSON Lines body and each body line's file line.
    body: Vec<u8>,
    lines: Vec<u64>,
    /// `Route::Patterns`: validated patterns (as JSON) and the body size.
    patterns: Vec<Value>,
}

impl Sender<'_> {
    fn item(&mut self, report: &mut ImportReport, item: Item) -> Result<()> {
        match item {
            Item::Skip(line, reason) => skip(report, line, reason),
            Item::Invalid(line, field, reason) => invalid(report, line, field, reason),
            Item::Line(line, bytes) => match self.route {
                Route::Import => {
                    self.body.extend_from_slice(&bytes);
                    self.body.push(b'\n');
                    self.lines.push(line);
                    if self.lines.len() >= IMPORT_CHUNK_LINES
                        || self.body.len() >= IMPORT_CHUNK_BYTES
                    {
                        self.flush(report)?;
                    }
                }
                Route::Patterns => self.validate(report, line, &bytes)?,
            },
        }
        Ok(())
    }

    /// `Route::Patterns`: parse and validate here, as the offline importer.
    fn validate(&mut self, report: &mut ImportReport, line: u64, bytes: &[u8]) -> Result<()> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            skip(report, line, "blank line".into());
            return Ok(());
        }
        let mut v = match serde_json::from_slice::<Value>(bytes) {
            Ok(v @ Value::Object(_)) => v,
            Ok(_) => {
                invalid(
                    report,
                    line,
                    "pattern".into(),
                    "must be a JSON object".into(),
                );
                return Ok(());
            }
            Err(e) => {
                skip(report, line, format!("not valid JSON: {e}"));
                return Ok(());
            }
        };
        if let (Value::Object(m), Some(p)) = (&mut v, self.platform) {
            m.entry("platform")
                .or_insert_with(|| Value::String(p.into()));
        }
        let parsed = Pattern::from_json_value(v, self.default_node.as_deref()).and_then(|p| {
            p.validate(self.now)?;
            Ok(p)
        });
        match parsed {
            Ok(p) => {
                let v = serde_json::to_value(&p).context("encoding a pattern")?;
                self.body.extend_from_slice(&serde_json::to_vec(&v)?);
                self.patterns.push(v);
                if self.patterns.len() >= PATTERN_BATCH || self.body.len() >= PATTERN_BATCH_BYTES {
                    self.flush(report)?;
                }
            }
            Err(e) => invalid(report, line, e.field, e.reason),
        }
        Ok(())
    }

    fn flush(&mut self, report: &mut ImportReport) -> Result<()> {
        match self.route {
            Route::Import if !self.lines.is_empty() => self.send_import(report),
            Route::Patterns if !self.patterns.is_empty() => self.send_patterns(report),
            _ => Ok(()),
        }
    }

    fn send_import(&mut self, report: &mut ImportReport) -> Result<()> {
        let body = std::mem::take(&mut self.body);
        let lines = std::mem::take(&mut self.lines);
        let mut query = vec![("format", format_name(self.format).to_string())];
        if let Some(n) = &self.default_node {
            query.push(("default_node", n.clone()));
        }
        let url = format!("{}/v1/import", self.c.base);
        let resp = send_retrying(
            &|| {
                self.http
                    .post(&url)
                    .query(&query)
                    .header("content-type", "application/x-ndjson")
                    .body(body.clone())
            },
            &self.c.base,
        )?;
        let status = resp.status();
        let bytes = read_bounded(resp)?;
        let answer: ImportAnswer = match serde_json::from_slice(&bytes) {
            Ok(a) => a,
            Err(_) if !status.is_success() => return Err(refusal(status, &bytes)),
            Err(e) => return Err(anyhow!("decoding the node's import report: {e}")),
        };
        // The node numbers the lines of this request from 1.
        let file_line = |n: u64| {
            n.checked_sub(1)
                .and_then(|i| lines.get(i as usize))
                .copied()
                .unwrap_or(n)
        };
        report.accepted += answer.accepted;
        report.duplicates += answer.duplicates;
        let listed_skips = answer.skipped.len() as u64;
        for e in answer.skipped {
            skip(report, file_line(e.line), e.error);
        }
        report.skipped_total += answer.skipped_total.saturating_sub(listed_skips);
        let listed_invalid = answer.invalid.len() as u64;
        for e in answer.invalid {
            invalid(report, file_line(e.line), e.field, e.error);
        }
        report.invalid_total += answer.invalid_total.saturating_sub(listed_invalid);
        if !status.is_success() || answer.error.is_some() {
            let why = answer.error.unwrap_or_else(|| format!("HTTP {status}"));
            let field = answer
                .field
                .map(|f| format!(" (field {f})"))
                .unwrap_or_default();
            bail!(
                "the node stopped the import: {why}{field}; {} records were stored before that, \
                 and importing the file again is safe (duplicates are skipped)",
                report.accepted
            );
        }
        Ok(())
    }

    fn send_patterns(&mut self, report: &mut ImportReport) -> Result<()> {
        let batch = Value::Array(std::mem::take(&mut self.patterns));
        self.body.clear();
        let url = format!("{}/v1/patterns", self.c.base);
        let resp = send_retrying(&|| self.http.post(&url).json(&batch), &self.c.base)?;
        let stored: Vec<SubmittedPattern> = ApiClient::decode(resp)?;
        report.accepted += stored.len() as u64;
        Ok(())
    }
}

// ---- export ------------------------------------------------------------------

/// Where exported lines go: one file, or one file per `node_id`.
pub enum Out {
    One(BufWriter<File>),
    PerNode(PerNode),
}

/// `{node}_patterns.jsonl` files in a directory, at most 64 open at once.
pub struct PerNode {
    dir: std::path::PathBuf,
    open: HashMap<String, BufWriter<File>>,
    created: HashSet<String>,
    pub counts: BTreeMap<String, u64>,
}

impl PerNode {
    pub fn new(dir: &Path) -> Result<PerNode> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(PerNode {
            dir: dir.to_path_buf(),
            open: HashMap::new(),
            created: HashSet::new(),
            counts: BTreeMap::new(),
        })
    }

    fn write(&mut self, line: &[u8]) -> Result<()> {
        #[derive(Deserialize)]
        struct NodeOnly {
            node_id: String,
        }
        let node = serde_json::from_slice::<NodeOnly>(line)
            .context("the node exported a pattern without node_id")?
            .node_id;
        let stem = interop::node_file_stem(&node);
        if !self.open.contains_key(&stem) {
            if self.open.len() >= 64 {
                for (_, mut w) in self.open.drain() {
                    w.flush()?;
                }
            }
            let path = self.dir.join(format!("{stem}_patterns.jsonl"));
            let first = self.created.insert(stem.clone());
            let f = std::fs::OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(first)
                .append(!first)
                .open(&path)
                .with_context(|| format!("creating {}", path.display()))?;
            self.open.insert(stem.clone(), BufWriter::new(f));
        }
        if let Some(w) = self.open.get_mut(&stem) {
            w.write_all(line)?;
            w.write_all(b"\n")?;
        }
        *self.counts.entry(node).or_insert(0) += 1;
        Ok(())
    }
}

impl Out {
    fn line(&mut self, line: &[u8]) -> Result<()> {
        match self {
            Out::One(w) => {
                w.write_all(line)?;
                w.write_all(b"\n")?;
                Ok(())
            }
            Out::PerNode(p) => p.write(line),
        }
    }

    pub fn finish(&mut self) -> Result<()> {
        match self {
            Out::One(w) => w.flush()?,
            Out::PerNode(p) => {
                for w in p.open.values_mut() {
                    w.flush()?;
                }
            }
        }
        Ok(())
    }
}

/// Export every stored pattern through the node's API into `out`; returns
/// the number of patterns.
pub fn export_patterns(c: &ApiClient, out: &mut Out) -> Result<u64> {
    let http = streaming_client()?;
    let resp = http
        .get(format!("{}/v1/export", c.base))
        .send()
        .with_context(|| format!("asking the node at {}", c.base))?;
    if matches!(
        resp.status(),
        StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED
    ) {
        return export_paged(c, out);
    }
    if !resp.status().is_success() {
        let status = resp.status();
        return Err(refusal(status, &read_bounded(resp)?));
    }
    let bar = progress(0, "node → patterns".into());
    let mut r = BufReader::with_capacity(256 * 1024, resp);
    let mut buf = Vec::with_capacity(1024);
    let mut n = 0u64;
    while let Some(fits) =
        read_line(&mut r, &mut buf).context("reading the node's export (cut off?)")?
    {
        if !fits {
            bail!("the node's export has a line longer than {MAX_LINE_BYTES} bytes");
        }
        if buf.is_empty() {
            continue;
        }
        out.line(&buf)?;
        n += 1;
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(n)
}

/// `GET /v1/patterns?paged=true` with its cursor until `next_cursor` is null.
fn export_paged(c: &ApiClient, out: &mut Out) -> Result<u64> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Page {
        Paged {
            patterns: Vec<PatternView>,
            next_cursor: Option<String>,
        },
        Plain(Vec<PatternView>),
    }
    let mut cursor: Option<String> = None;
    let mut n = 0u64;
    loop {
        let mut q = vec![
            ("paged", "true".to_string()),
            ("max_count", PAGE.to_string()),
        ];
        if let Some(cur) = &cursor {
            q.push(("cursor", cur.clone()));
        }
        let page: Page = match c.get("/v1/patterns", &q) {
            // A node without paging refuses the parameter: one plain page.
            Err(e) if cursor.is_none() && format!("{e}").contains("field paged") => {
                c.get("/v1/patterns", &[("max_count", PAGE.to_string())])?
            }
            r => r?,
        };
        let (patterns, next) = match page {
            Page::Paged {
                patterns,
                next_cursor,
            } => (patterns, next_cursor),
            Page::Plain(p) if (p.len() as u64) < u64::from(PAGE) => (p, None),
            Page::Plain(_) => bail!(
                "this node's API cannot page through more than {PAGE} patterns; \
                 stop the node and export offline"
            ),
        };
        for v in &patterns {
            out.line(&serde_json::to_vec(&v.pattern)?)?;
            n += 1;
        }
        match next {
            Some(next) if Some(&next) != cursor.as_ref() => cursor = Some(next),
            Some(_) => bail!("the node repeated its cursor; the export is incomplete"),
            None => return Ok(n),
        }
    }
}
