//! Import through the node: `POST /v1/import` chunks, else validated
//! `POST /v1/patterns` batches.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use metamesh_protocol::Pattern;
use metamesh_storage::interop::{self, Format, ImportReport, MAX_REPORTED};
use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::Value;

use super::read::{each_item, Item};
use super::{
    progress, streaming_client, IMPORT_CHUNK_BYTES, IMPORT_CHUNK_LINES, PATTERN_BATCH,
    PATTERN_BATCH_BYTES, RETRIES_503,
};
use crate::api::SubmittedPattern;
use crate::cli::client::{read_bounded, refusal, unix_now, ApiClient};

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
        now: unix_now(),
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
