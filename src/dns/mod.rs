//! Everything that speaks the DNS wire format. hickory-proto types stay inside this module, so
//! a hickory upgrade touches only these files.
//!
//! - [`respond`]: the query path (parse, look up, write), hand-written for zero allocation.
//! - [`rrl`]: response-rate limiting, per-worker state used by the query path.
//! - [`encode`]: model records to wire sections, with hickory's encoder.
//! - [`zonefile`]: RFC 1035 zone files, with hickory's parser.
//! - [`dnssec`]: zone keys, RRSIGs and NSEC records (signed at build; compact denial online).

pub mod dnssec;
pub mod encode;
pub mod explain;
pub mod identity;
pub mod respond;
pub mod rrl;
pub mod transfer;
pub mod tsig;
pub mod zonefile;

#[cfg(test)]
pub(crate) mod tests;
#[cfg(test)]
mod zone_tests;
