//! Messages between tree neighbours and their bounded CBOR encoding.

use metamesh_protocol::codec;
use metamesh_protocol::record::{ContentHash, MAX_BODY_BYTES};
use metamesh_protocol::SignedRecord;
use serde::{Deserialize, Serialize};

/// Most ids in one `IHave` or `Graft` message (a decoded larger one is cut).
pub const MAX_IDS_PER_MSG: usize = 512;
/// Largest encoded tree message accepted.
pub const MAX_TREE_MSG_BYTES: usize = MAX_BODY_BYTES + 4096 + MAX_IDS_PER_MSG * 40;
/// Most records sent in answer to one `Graft`.
pub const MAX_GRAFT_RECORDS: usize = 64;

/// A message between tree neighbours (CBOR, see [`TreeMsg::encode`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TreeMsg {
    /// A record in full, `hops` links from its origin (1 = from the origin).
    #[serde(rename = "p")]
    Push { record: SignedRecord, hops: u16 },
    /// Ids of records we hold, with their hop counts.
    #[serde(rename = "i")]
    IHave(Vec<(ContentHash, u16)>),
    /// Become eager again and send these records (empty: only the link).
    #[serde(rename = "g")]
    Graft(Vec<ContentHash>),
    /// Stop sending records in full (send ids).
    #[serde(rename = "x")]
    Prune,
    /// Be my neighbour (`urgent`: I have none).
    #[serde(rename = "j")]
    Join { urgent: bool },
    #[serde(rename = "a")]
    Accept,
    #[serde(rename = "r")]
    Refuse,
    /// I dropped you from my neighbours.
    #[serde(rename = "l")]
    Leave,
}

/// Why tree bytes were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TreeError {
    #[error("tree message: {0}")]
    Codec(#[from] codec::CodecError),
}

impl TreeMsg {
    pub fn encode(&self) -> Vec<u8> {
        codec::to_cbor(self)
    }

    /// Decode at most [`MAX_TREE_MSG_BYTES`]; id lists are cut to [`MAX_IDS_PER_MSG`].
    pub fn decode(bytes: &[u8]) -> Result<TreeMsg, TreeError> {
        let mut m: TreeMsg = codec::from_cbor(bytes, MAX_TREE_MSG_BYTES)?;
        match &mut m {
            TreeMsg::IHave(v) => v.truncate(MAX_IDS_PER_MSG),
            TreeMsg::Graft(v) => v.truncate(MAX_IDS_PER_MSG),
            _ => {}
        }
        Ok(m)
    }
}
