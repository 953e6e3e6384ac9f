//! fedns: a federated authoritative DNS server.
//!
//! Data flows one way: sources → snapshots → merger → answers → immutable table → DNS query path
//! (see ARCHITECTURE.md).

pub mod answers;
pub mod app;
pub mod config;
pub mod config_errors;
pub mod dns;
pub mod fuzz;
pub mod geo;
pub mod logging;
pub mod merger;
pub mod metrics;
pub mod model;
pub mod notify;
pub mod probe;
pub mod reload;
pub mod selection;
pub mod server;
pub mod sources;
pub mod table;
#[cfg(test)]
mod test_rng;
