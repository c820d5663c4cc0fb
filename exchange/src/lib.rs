//! metamesh exchange core: one IO-less, deterministic state machine that
//! decides everything about exchanging records with peers — eager push and
//! gossip validation, reconciliation and pulls, serving, quotas and the
//! decline policy, reputation transitions, own sequence numbers and
//! insight broadcasts. The node's actor and the network simulator both
//! drive it: `State::handle(input, now) -> outputs` (see [`io`]).
//!
//! Modelled on the IO-less protocol core of iroh-gossip (`src/proto/`):
//! no clock (time is an argument), no randomness but a seeded rng, no I/O
//! (signature checks, store access and sockets are outputs whose results
//! come back as inputs).

pub mod book;
pub mod bounded;
pub mod compat;
pub mod config;
mod ingest;
pub mod io;
mod lane;
pub mod mem;
pub mod own;
mod pull;
pub mod recon;
pub mod serve;
pub mod state;
#[doc(hidden)]
pub mod testutil;
pub mod tree;

pub use config::Config;
pub use io::*;
pub use state::{Counters, Init, State};
