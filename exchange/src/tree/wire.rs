//! Messages between tree peers and their bounded CBOR encoding.

use metamesh_protocol::codec;
use metamesh_protocol::record::{ContentHash, MAX_BODY_BYTES};
use metamesh_protocol::SignedRecord;
use serde::{Deserialize, Serialize};

/// Most ids in one `IHave` or `Graft` message (a decoded larger one is cut).
pub const MAX_IDS_PER_MSG: usize = 512;
/// Largest encoded tree message accepted.
pub const MAX_TREE_MSG_BYTES: usize = MAX_BODY_BYTES + 4096 + MAX_IDS_PER_MSG * 10;
/// Most records sent in answer to one `Graft`.
pub const MAX_GRAFT_RECORDS: usize = 64;
/// A distance meaning "no route to the root" (detached).
pub const INFINITE: u8 = u8::MAX;

/// `State::rel` bit: you are my parent.
pub const REL_PARENT: u8 = 1;
/// `State::rel` bit: you are my child (I push records to you).
pub const REL_CHILD: u8 = 2;

/// A record's short id on the wire: the first 8 bytes of its content hash.
/// (Ids only steer repair: a collision delays one record until digest
/// repair, which compares exact digests.)
pub fn short_id(h: &ContentHash) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&h.0[..8]);
    u64::from_le_bytes(b)
}

/// A message between tree peers (CBOR, see [`TreeMsg::encode`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TreeMsg {
    /// The sender's place in the spanning tree: its root's key, the root's
    /// sequence number it last heard, its distance to the root ([`INFINITE`]:
    /// detached) and how it relates to the receiver ([`REL_PARENT`],
    /// [`REL_CHILD`] bits). Sent when any of it changes, to every tree peer
    /// at each new root sequence number, and to correct a peer whose view of
    /// the link differs.
    #[serde(rename = "s")]
    State {
        root: u64,
        seq: u32,
        dist: u8,
        rel: u8,
    },
    /// A record in full, along a tree edge (or answering a `Graft`).
    #[serde(rename = "p")]
    Push { record: SignedRecord },
    /// Short ids of records the sender holds (to a few non-tree peers, for repair).
    #[serde(rename = "i")]
    IHave(Vec<u64>),
    /// Send me these records (ids from your `IHave`).
    #[serde(rename = "g")]
    Graft(Vec<u64>),
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
            TreeMsg::IHave(v) | TreeMsg::Graft(v) => v.truncate(MAX_IDS_PER_MSG),
            _ => {}
        }
        Ok(m)
    }
}
