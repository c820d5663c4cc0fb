//! Export through the node: `GET /v1/export` streamed, else
//! `GET /v1/patterns?paged=true` page by page.

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};

use anyhow::{bail, Context, Result};
use metamesh_storage::interop::{self, MAX_LINE_BYTES};
use reqwest::StatusCode;
use serde::Deserialize;

use super::read::read_line;
use super::{progress, streaming_client, PAGE};
use crate::api::PatternView;
use crate::cli::client::{read_bounded, refusal, ApiClient};

/// Where exported lines go: one file, or one file per `node_id`.
pub enum Out {
    One(BufWriter<File>),
    /// `{node}_patterns.jsonl` files in a directory.
    PerNode(interop::PerNodeFiles),
}

impl Out {
    fn line(&mut self, line: &[u8]) -> Result<()> {
        match self {
            Out::One(w) => {
                w.write_all(line)?;
                w.write_all(b"\n")?;
                Ok(())
            }
            Out::PerNode(files) => {
                #[derive(Deserialize)]
                struct NodeOnly {
                    node_id: String,
                }
                let node = serde_json::from_slice::<NodeOnly>(line)
                    .context("the node exported a pattern without node_id")?
                    .node_id;
                files.write_line(&node, line)?;
                Ok(())
            }
        }
    }

    pub fn finish(&mut self) -> Result<()> {
        match self {
            Out::One(w) => w.flush()?,
            Out::PerNode(files) => files.flush()?,
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
