//! metamesh-storage: persistence for metamesh nodes.
//!
//! - [`store`]: the sled store (signed patterns, indexes, per-origin
//!   frontiers, merged statistics, reputation, peers, latest insights).
//! - [`interop`]: the file formats — unified JSONL, the insights JSON
//!   document, and the Legion and Thor prototypes' files.

pub mod interop;
mod keys;
pub mod recovery;
pub mod store;

pub use metamesh_protocol::wire::Cursor;
pub use store::{
    AppendOutcome, EquivocationEvidence, InsertOutcome, Store, StoreConfig, StoreError,
    MAX_MODES_PER_ORIGIN, SCHEMA_VERSION,
};
