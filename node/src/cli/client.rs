//! Client commands: `insights`, `record`, `recommend`, `peers`, `stats`.
//!
//! Each one looks for a running node through the data dir's `api.addr`
//! (written by `metamesh run`). If that node answers (and is this data dir's
//! identity) the command goes through its HTTP API; otherwise it opens the
//! store directly and computes the same answer with [`crate::learning`]. A
//! store held by a node whose API does not answer is a clear error.
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use libp2p::PeerId;
use metamesh_storage::{Store, StoreConfig, StoreError};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::exit::{coded, NODE_UNREACHABLE};
use super::{GlobalArgs, Scope};
use crate::api::{ApiError, NodeInfo};
use crate::config::Config;
use crate::datadir::DataDir;

mod insights;
mod record;
mod status;

pub use insights::{insights, recommend, render_insights, render_knowledge};
pub use record::{record, record_pattern};
pub use status::{peers, render_peers, render_stats, stats};

/// How long to wait for a node to accept the connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a request may take (a record waits for a durable flush).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Largest API response read.
const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;
/// `platform` of patterns recorded with `metamesh record`.
pub const RECORD_PLATFORM: &str = "metamesh-cli";

/// Where a client command gets its answer.
pub(crate) enum Target {
    Api(ApiClient),
    Store(Offline),
}

/// A running node's API.
pub struct ApiClient {
    pub(crate) base: String,
    pub(crate) http: reqwest::blocking::Client,
}

/// The store opened directly (no node running), with the configuration
/// the node would run with (its trust settings weigh the origins).
pub(crate) struct Offline {
    pub store: Store,
    pub dd: DataDir,
    pub cfg: Config,
}

impl ApiClient {
    pub fn new(addr: &str) -> Result<ApiClient> {
        let http = reqwest::blocking::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .build()
            .context("building the HTTP client")?;
        Ok(ApiClient {
            base: format!("http://{}", addr.trim()),
            http,
        })
    }

    pub(crate) fn decode<T: DeserializeOwned>(resp: reqwest::blocking::Response) -> Result<T> {
        let status = resp.status();
        let bytes = read_bounded(resp)?;
        if !status.is_success() {
            return Err(refusal(status, &bytes));
        }
        serde_json::from_slice(&bytes).context("decoding the node's answer")
    }

    pub fn get<T: DeserializeOwned>(&self, path: &str, query: &[(&str, String)]) -> Result<T> {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .query(query)
            .send()
            .with_context(|| format!("asking the node at {}", self.base))?;
        Self::decode(resp)
    }

    pub fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T> {
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .json(body)
            .send()
            .with_context(|| format!("sending to the node at {}", self.base))?;
        Self::decode(resp)
    }
}

/// A response body, at most [`MAX_RESPONSE_BYTES`].
pub(crate) fn read_bounded(resp: reqwest::blocking::Response) -> Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    resp.take(MAX_RESPONSE_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .context("reading the node's answer")?;
    if bytes.len() > MAX_RESPONSE_BYTES {
        bail!("the node's answer is larger than {MAX_RESPONSE_BYTES} bytes");
    }
    Ok(bytes)
}

/// The error for a non-success answer (the API's `{error, field}` if any).
pub(crate) fn refusal(status: reqwest::StatusCode, bytes: &[u8]) -> anyhow::Error {
    match serde_json::from_slice::<ApiError>(bytes) {
        Ok(e) => match e.field {
            Some(f) => anyhow!("the node refused: {} (field {f})", e.error),
            None => anyhow!("the node refused: {}", e.error),
        },
        Err(_) => anyhow!("the node answered HTTP {status}"),
    }
}

/// Find a running node for this data dir, else open the store.
pub(crate) fn connect(g: &GlobalArgs) -> Result<Target> {
    let dd = DataDir::resolve(g.data_dir.clone());
    let key = dd.load_identity()?;
    // Read (and check) the configuration first: its environment warnings
    // and errors apply whether or not a node runs.
    let cfg = Config::for_command(g, &dd, None)?;
    let me = key.public().to_peer_id();
    let mut unreachable: Option<(String, String)> = None;
    if let Some(addr) = dd.read_api_addr() {
        match probe(&addr, &me) {
            Ok(client) => return Ok(Target::Api(client)),
            Err(why) => unreachable = Some((addr, format!("{why:#}"))),
        }
    }
    match Store::open(&dd.store_path(), &StoreConfig::bulk()) {
        Ok(store) => Ok(Target::Store(Offline { store, dd, cfg })),
        Err(StoreError::Locked { path }) => match unreachable {
            Some((addr, why)) => Err(coded(
                NODE_UNREACHABLE,
                format!(
                    "the store {} is locked by a running node, but its API at {addr} does not \
                     answer ({why}); wait for it to finish starting, or stop it to use the store \
                     directly",
                    path.display()
                ),
            )),
            None => bail!(
                "the store {} is locked by another process (a running node still starting up, \
                 or another metamesh command) and no API address is published in {}; try \
                 again shortly",
                path.display(),
                dd.api_addr_path().display()
            ),
        },
        Err(e) => Err(anyhow::Error::new(e)
            .context(format!("opening the store {}", dd.store_path().display()))),
    }
}

/// Does the node at `addr` answer, and is it this data dir's identity?
fn probe(addr: &str, me: &PeerId) -> Result<ApiClient> {
    let client = ApiClient::new(addr)?;
    let info: NodeInfo = client.get("/v1/node", &[])?;
    if info.peer_id != me.to_string() {
        bail!("{addr} is a different node ({})", info.peer_id);
    }
    Ok(client)
}

pub(crate) fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

pub fn out(text: &str) -> Result<()> {
    use std::io::Write;
    match writeln!(std::io::stdout().lock(), "{text}") {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => Ok(r?),
    }
}

pub fn out_json<T: Serialize>(v: &T) -> Result<()> {
    out(&serde_json::to_string_pretty(v)?)
}

fn scope_str(s: Scope) -> &'static str {
    match s {
        Scope::Local => "local",
        Scope::Collective => "collective",
    }
}
