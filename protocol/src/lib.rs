//! metamesh-protocol: the pure core of metamesh.
//!
//! Schema types and validation, signed records, wire messages and their CBOR
//! codec, sufficient statistics, insights and posterior confidence,
//! reputation, federated aggregation, depth-selection strategies and sync
//! decisions. **No I/O, no clock, no randomness that the caller does not pass
//! in**: every function that needs the time takes `now` (unix seconds), and
//! every function that needs randomness takes an `&mut impl rand::Rng`.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod aggregate;
pub mod codec;
pub mod insights;
pub mod policy;
pub mod posterior;
pub mod record;
pub mod reputation;
pub mod schema;
pub mod stats;
pub mod strategy;
pub mod sync;
pub mod wire;

pub use insights::{Insight, InsightSet, InsightsDocument};
pub use record::{ContentHash, InsightBody, PatternBody, RecordError, RecordKind, SignedRecord};
pub use schema::{Depth, Pattern, PatternType, SchemaError};
pub use stats::{DepthStats, DepthTable};
