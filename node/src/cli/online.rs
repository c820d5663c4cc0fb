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
use std::io::{self, IsTerminal};
use std::time::Duration;

use anyhow::{Context, Result};

mod export;
mod import;
mod read;

pub use export::{export_patterns, Out};
pub use import::{import_file, import_route, Route};

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
