//! metamesh-storage: persistence for metamesh nodes.
//!
//! - [`store`]: the sled store (signed patterns, time index, per-origin
//!   frontiers, merged statistics, reputation, peers, latest insights), with
//!   own seqs in durable epochs.
//! - [`writer`]: group commit — one writer thread that concurrent callers
//!   share, each acknowledged after the flush that covers it.
//! - [`verify`]: verification of received records on every core.
//! - [`interop`]: the file formats — unified JSONL, the insights JSON
//!   document, and the Legion and Thor prototypes' files.

mod append;
mod cpu;
mod export;
pub mod interop;
mod keys;
mod migrate;
mod migrate_time;
mod packing;
mod read;
pub mod recovery;
pub mod store;
#[cfg(test)]
mod testutil;
pub mod verify;
mod write;
pub mod writer;

pub use metamesh_protocol::wire::Cursor;
pub use read::QueryPage;
pub use store::{
    AppendOutcome, EquivocationEvidence, InsertOutcome, Store, StoreConfig, StoreError,
    MAX_MODES_PER_ORIGIN, SCHEMA_VERSION,
};
pub use write::{Batch, Declined, EpochInfo, Outcomes};
pub use writer::{NotTaken, Urgency, Writer, WriterConfig};
