//! The immutable answer table: everything the query path needs, precomputed.
//!
//! Built by [`build`] from the sources' snapshots, published by the merger with one atomic swap,
//! then only ever read. For every name and query type it holds the finished answer, authority
//! and additional sections in wire format, compressed against the question at offset 12 (the
//! question's length does not depend on its case, so the client's own question can be echoed in
//! front of them). A query costs one hash lookup on a hit, and one lookup per label on a miss.
//!
//! Guarantees: a table never changes after it is built; lookups take no locks and allocate
//! nothing; every name below a served zone gets an answer (positive, NODATA or NXDOMAIN, with SOA
//! where RFC 2308 asks for it) and every name outside gets REFUSED.

pub mod build;
#[cfg(test)]
mod incremental_tests;

use rustc_hash::FxHashMap;

/// DNS response codes used by the table and the query path.
pub mod rcode {
    pub const NOERROR: u8 = 0;
    pub const FORMERR: u8 = 1;
    pub const SERVFAIL: u8 = 2;
    pub const NXDOMAIN: u8 = 3;
    pub const NOTIMP: u8 = 4;
    pub const REFUSED: u8 = 5;
}

/// Finished response sections for one question, without header and question.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Body {
    pub answer_count: u16,
    pub authority_count: u16,
    pub additional_count: u16,
    pub wire: Box<[u8]>,
}

/// One answer with its rotations: the query path picks `bodies[n % len]`. The bodies are shared
/// (`Arc`) so that a later table can reuse an answer whose inputs did not change without
/// re-encoding or copying it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    pub rcode: u8,
    pub bodies: std::sync::Arc<[Body]>,
}

/// Marks an answer reference as per-location: the low bits index [`Table::located`], where
/// one answer index per client location follows.
pub(crate) const LOCATED: u32 = 1 << 31;

#[derive(Debug)]
struct Node {
    zone: u32,
    /// (query type, answer reference), a handful per node.
    by_type: Box<[(u16, u32)]>,
    /// Answer for any type not in `by_type`.
    other: u32,
    /// Index in `Table::wildcards` of the `*` child that answers names below this one that do
    /// not exist (RFC 4592), or `NO_WILDCARD`.
    wildcard: u32,
}

const NO_WILDCARD: u32 = u32::MAX;

/// Answers of a stored wildcard (`*.X`), encoded so that they follow any question: records owned
/// by the wildcard point at the question name, every other name is uncompressed.
#[derive(Debug)]
struct Wildcard {
    by_type: Box<[(u16, u32)]>,
    other: u32,
}

#[derive(Debug)]
struct ZoneInfo {
    nxdomain: u32,
    /// Answer to an SOA question about a name that does not exist (CoreDNS's etcd plugin gives
    /// the zone's SOA for any name of its zones); `None`: NXDOMAIN as for other types.
    miss_soa: Option<u32>,
}

/// What the table says about a question.
#[derive(Debug, Clone, Copy)]
pub enum Lookup<'a> {
    /// Authoritative answer (positive, NODATA or NXDOMAIN).
    Authoritative(&'a Answer),
    /// The name is in no served zone.
    Refused,
    /// No table has been published yet.
    NotReady,
}

#[derive(Debug, Default)]
pub struct Table {
    names: FxHashMap<Box<[u8]>, Node>,
    answers: Vec<Answer>,
    /// Per-location answer indexes of location-dependent names (see [`LOCATED`]).
    located: Vec<u32>,
    zones: Vec<ZoneInfo>,
    wildcards: Vec<Wildcard>,
    /// Zone transfers: zone (wire) → SOA then every record (etcd zones with AXFR on).
    pub axfr: FxHashMap<Box<[u8]>, std::sync::Arc<[crate::model::Record]>>,
    ready: bool,
    pub generation: u64,
    pub serial: u32,
    /// Records in the table (dynamic and static), for metrics.
    pub record_count: usize,
    /// Distinct names, for metrics.
    pub name_count: usize,
}

impl Table {
    /// The table before the first publish: every query gets SERVFAIL.
    pub fn not_ready() -> Self {
        Table::default()
    }

    pub fn is_ready(&self) -> bool {
        self.ready
    }

    /// Every name the table holds (wire format), for tests that compare tables.
    #[cfg(test)]
    pub(crate) fn names(&self) -> impl Iterator<Item = &[u8]> {
        self.names.keys().map(|k| &**k)
    }

    /// `qname` is the question name in wire format, already lowercased. `locate` gives the
    /// client's location id; it is only called when the answer depends on it.
    #[inline]
    pub fn lookup(&self, qname: &[u8], qtype: u16, locate: impl FnOnce() -> usize) -> Lookup<'_> {
        if !self.ready {
            return Lookup::NotReady;
        }
        if let Some(node) = self.names.get(qname) {
            let mut idx = node
                .by_type
                .iter()
                .find(|(t, _)| *t == qtype)
                .map_or(node.other, |(_, i)| *i);
            if idx & LOCATED != 0 {
                let start = (idx & !LOCATED) as usize;
                idx = self.located[start + locate()];
            }
            return Lookup::Authoritative(&self.answers[idx as usize]);
        }
        // Closest existing ancestor decides: inside a zone → NXDOMAIN, nowhere → REFUSED. Every
        // ancestor of a node up to its apex is itself a node (empty non-terminals included), so
        // the first hit is the closest encloser.
        let mut pos = 0usize;
        while pos < qname.len() && qname[pos] != 0 {
            pos += qname[pos] as usize + 1;
            if let Some(node) = self.names.get(&qname[pos.min(qname.len())..]) {
                if node.wildcard != NO_WILDCARD {
                    let w = &self.wildcards[node.wildcard as usize];
                    let idx = w
                        .by_type
                        .iter()
                        .find(|(t, _)| *t == qtype)
                        .map_or(w.other, |(_, i)| *i);
                    return Lookup::Authoritative(&self.answers[idx as usize]);
                }
                let zone = &self.zones[node.zone as usize];
                if qtype == crate::model::rtype::SOA
                    && let Some(i) = zone.miss_soa
                {
                    return Lookup::Authoritative(&self.answers[i as usize]);
                }
                return Lookup::Authoritative(&self.answers[zone.nxdomain as usize]);
            }
        }
        Lookup::Refused
    }
}
