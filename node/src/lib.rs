//! metamesh-node: the running node (libp2p mesh, validation pipeline, sync,
//! HTTP API, metrics, configuration) and the `metamesh` CLI.

pub mod actor;
pub mod api;
pub mod cli;
pub mod config;
pub mod datadir;
pub mod events;
pub mod learning;
pub mod logging;
pub mod metrics;
pub mod network;
