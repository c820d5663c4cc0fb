//! metamesh learning simulations: a deterministic simulator on the protocol
//! core (no network) that measures how fast N nodes learn the best depth
//! together, whether their confidence is calibrated, and whether liars,
//! camouflaged liars, Sybil swarms or flooders can poison the answer under
//! three aggregation modes (naive pooling, the seed's reputation weighting,
//! our robust aggregation). See `docs/learning.md`.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod env;
pub mod matrix;
pub mod net;
pub mod plot;
pub mod sim;

pub use env::Environment;
pub use sim::{run, Adversary, Aggregation, RunResult, SimConfig, StrategyKind};
