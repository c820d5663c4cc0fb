//! metamesh-node: the running node (libp2p mesh, validation pipeline, sync,
//! HTTP API, metrics, configuration) and the `metamesh` CLI.

pub mod cli;
pub mod datadir;
pub mod logging;
pub mod api;
pub mod config;
pub mod events;
pub mod learning;
pub mod metrics;
pub mod network;
pub mod pipeline;
pub mod service;
