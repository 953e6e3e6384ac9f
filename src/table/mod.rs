//! The immutable answer table: everything the query path needs, precomputed.
//!
//! Built by [`crate::answers`] from the sources' snapshots, published by the merger with one atomic swap,
//! then only ever read. For every name and query type it holds the finished answer, authority
//! and additional sections in wire format, compressed against the question at offset 12 (the
//! question's length does not depend on its case, so the client's own question can be echoed in
//! front of them). A query costs one hash lookup on a hit, and one lookup per label on a miss.
//!
//! Guarantees: a table never changes after it is built; lookups take no locks and allocate
//! nothing; every name below a served zone gets an answer (positive, NODATA or NXDOMAIN, with SOA
//! where RFC 2308 asks for it) and every name outside gets REFUSED.

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
    /// Where the additional section starts in `wire` when all of it may be left out
    /// (`wire.len()`: none may). A response that does not fit drops it before it is truncated
    /// (RFC 2181 §9); referral glue is never droppable (RFC 9471). (No count of its own: the
    /// optional records are always the whole additional section, and a body is 24 bytes.)
    pub optional_from: u16,
    pub wire: Box<[u8]>,
}

// Millions of bodies and answers at federation scale: keep them at three words.
const _: () = assert!(std::mem::size_of::<Answer>() == 24);
const _: () = assert!(std::mem::size_of::<Body>() == 24);

impl Body {
    /// Sections with nothing droppable.
    pub fn new(answer: u16, authority: u16, additional: u16, wire: Box<[u8]>) -> Self {
        Body {
            answer_count: answer,
            authority_count: authority,
            additional_count: additional,
            optional_from: wire.len().min(u16::MAX as usize) as u16,
            wire,
        }
    }

    /// Additional records the query path may leave out (all of the additional section).
    #[inline]
    pub fn optional_count(&self) -> u16 {
        if (self.optional_from as usize) < self.wire.len() {
            self.additional_count
        } else {
            0
        }
    }

    /// An empty body (rcode only).
    pub fn empty() -> Self {
        Body::new(0, 0, 0, Box::new([]))
    }
}

/// One answer with its rotations: the query path picks `bodies[n % len]` ([`Answer::body`]).
/// The bodies are shared (`Arc`) so that a later table can reuse an answer whose inputs did not
/// change without re-encoding or copying it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    pub rcode: u8,
    /// AA in the header: false only for referrals (RFC 1034 §4.3.2: below a zone cut we are
    /// not authoritative).
    pub authoritative: bool,
    /// DNSSEC: `bodies` holds every rotation twice, unsigned then with its RRSIGs and denial
    /// records; queries with DO=1 get the second half. A signed NXDOMAIN is answered NOERROR
    /// (compact denial, RFC 9824).
    pub signed: bool,
    /// What the query path completes in a signed answer synthesized from a wildcard, which
    /// names the question and so cannot be signed in advance ([`Online`]).
    pub online: Online,
    /// Zone whose SOA follows the body in the authority section ([`NO_TAIL`]: none). The SOA
    /// carries the serial, which changes with every table: kept out of the body, an answer that
    /// ends in NODATA or NXDOMAIN (a CNAME chain into nothing) survives from table to table.
    pub soa_tail: u32,
    pub bodies: std::sync::Arc<[Body]>,
}

pub const NO_TAIL: u32 = u32::MAX;

/// The part of a signed wildcard answer (RFC 4592) made per query, for DO=1 questions only: the
/// answer names the question, and compact denial (RFC 9824) treats the question as existing,
/// so its RRSIG (or its NODATA proof) is made online, as for names that do not exist. The
/// builder appends one data body per rotation after the signed ones ([`Answer::online_data`]):
/// both carry the zone's index first (`u32`), so the query path finds its keys.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(u8)]
pub enum Online {
    #[default]
    None,
    /// The signed body's first RRSIG (owned by the question, signature zeroed) is to be made:
    /// data `zone, u16 offset of that RRSIG's RDATA in the body, then the RRset's records in
    /// canonical order without their owner` (type, class, TTL, length, RDATA each).
    Rrsig,
    /// NODATA at the question: the query path appends `qname NSEC \000.qname <types>` and its
    /// RRSIG (as for a name that does not exist); data `zone, the NSEC type bitmap`.
    Nodata,
}

/// What the query path signs for a wildcard answer ([`Answer::online_data`]).
#[derive(Clone, Copy, Debug)]
pub enum OnlineData<'a> {
    /// The RRSIG whose RDATA starts at `rdata_at` in the signed body, over `records` (the
    /// RRset in canonical order without owner) owned by the question.
    Rrsig { rdata_at: usize, records: &'a [u8] },
    /// The question's NSEC carries this type bitmap.
    Nodata { bitmap: &'a [u8] },
}

impl Answer {
    /// Rotations (distinct bodies a client may get in turn).
    #[inline]
    pub fn rotations(&self) -> usize {
        match self.online {
            Online::None => self.bodies.len() >> self.signed as usize,
            _ => self.bodies.len() / 3,
        }
    }

    /// The per-query signing data of rotation `rotation` (see [`Online`]): the zone whose keys
    /// sign, and what to sign. `Some(zone, None)`: the builder could not lay it out, so the
    /// answer cannot be signed.
    #[inline]
    pub fn online_data(&self, rotation: usize) -> Option<(u32, Option<OnlineData<'_>>)> {
        if self.online == Online::None {
            return None;
        }
        let n = self.rotations();
        let w = &self.bodies[2 * n + rotation % n].wire;
        let zone = u32::from_be_bytes(w.get(..4)?.try_into().ok()?);
        let data = &w[4..];
        let what = match self.online {
            Online::Nodata => Some(OnlineData::Nodata { bitmap: data }),
            _ => data.get(..2).map(|at| OnlineData::Rrsig {
                rdata_at: u16::from_be_bytes([at[0], at[1]]) as usize,
                records: &data[2..],
            }),
        };
        Some((zone, what))
    }

    /// The body of rotation `rotation` (modulo the count), signed when `dnssec` asks for it and
    /// the answer has signatures.
    #[inline]
    pub fn body(&self, rotation: usize, dnssec: bool) -> &Body {
        let n = self.rotations();
        let base = if dnssec && self.signed { n } else { 0 };
        &self.bodies[base + rotation % n]
    }

    /// The unsigned rotations.
    pub fn unsigned_bodies(&self) -> &[Body] {
        &self.bodies[..self.rotations()]
    }
}

/// Marks an answer reference as per-location: the low bits index [`Segment::located`], where
/// one answer reference per client location follows.
pub(crate) const LOCATED: u32 = 1 << 31;
/// Answer references that name the node's zone's negative answers, which carry the serial and
/// so live in [`Table::zones`], rebuilt with every table, instead of in a segment.
pub(crate) const NODATA: u32 = LOCATED - 1;
pub(crate) const NXDOMAIN: u32 = LOCATED - 2;
/// The zone's answer to an SOA question about any of its names (etcd zones), else NODATA.
pub(crate) const MISS_SOA: u32 = LOCATED - 3;

/// Segments per table (a power of two). A change rebuilds only the segments holding the names
/// it touched; a new table shares every other segment with the previous one.
pub const SEGMENTS: usize = 1024;

/// The hash that places a name: its segment, and its bucket inside it (one hash per lookup).
#[inline]
pub(crate) fn name_hash(wire: &[u8]) -> u64 {
    use std::hash::BuildHasher;
    rustc_hash::FxBuildHasher.hash_one(wire)
}

/// Bits 32.. choose the segment, so they are not the bits hashbrown uses inside it (the low
/// ones for the bucket, the top seven for the tag).
#[inline]
pub(crate) fn segment_of(hash: u64) -> usize {
    (hash >> 32) as usize & (SEGMENTS - 1)
}

#[derive(Debug)]
pub(crate) struct Node {
    pub(crate) zone: u32,
    /// (query type, answer reference), a handful per node.
    pub(crate) by_type: Box<[(u16, u32)]>,
    /// Answer for any type not in `by_type`.
    pub(crate) other: u32,
    /// Index in [`Segment::wildcards`] of the `*` child that answers names below this one that
    /// do not exist (RFC 4592), or `NO_WILDCARD`.
    pub(crate) wildcard: u32,
}

pub(crate) const NO_WILDCARD: u32 = u32::MAX;

/// What names below a node that do not exist get: the answers of its `*` child (RFC 4592; a
/// stored etcd wildcard or a zone file's), encoded so that they follow any question (records
/// owned by the wildcard point at the question name, every other name is uncompressed), or,
/// below a zone cut, the referral.
#[derive(Debug)]
pub(crate) struct Wildcard {
    pub(crate) by_type: Box<[(u16, u32)]>,
    pub(crate) other: u32,
}

/// The names whose hash falls in one slice of the hash space, with their answers. Immutable once
/// built; shared by every table until one of its names changes.
#[derive(Debug, Default)]
pub(crate) struct Segment {
    /// Keyed by the cache's own `DnsName`s (`Arc`-shared: a name is stored once).
    pub(crate) names: hashbrown::HashTable<(crate::model::DnsName, Node)>,
    pub(crate) answers: Vec<Answer>,
    /// Per-location answer references of location-dependent names (see [`LOCATED`]).
    pub(crate) located: Vec<u32>,
    pub(crate) wildcards: Vec<Wildcard>,
    /// Records held (for metrics).
    pub(crate) records: usize,
}

impl Segment {
    #[inline]
    pub(crate) fn find(&self, hash: u64, qname: &[u8]) -> Option<&Node> {
        self.names
            .find(hash, |(k, _)| k.wire() == qname)
            .map(|(_, n)| n)
    }
}

/// A zone's answers that carry the serial: rebuilt with every table (a few per zone).
#[derive(Debug)]
pub(crate) struct ZoneInfo {
    pub(crate) origin: crate::model::DnsName,
    pub(crate) nxdomain: Answer,
    pub(crate) nodata: Answer,
    /// Answer to an SOA question about a name that does not exist (CoreDNS's etcd plugin gives
    /// the zone's SOA for any name of its zones); `None`: NXDOMAIN as for other types.
    pub(crate) miss_soa: Option<Answer>,
    /// The SOA record of negative answers, uncompressed (valid after any question).
    pub(crate) soa_tail: Box<[u8]>,
    /// Signed zones: the SOA record and its RRSIG (DO=1 negative answers), and the keys that
    /// sign the compact denial of names the table does not have.
    pub(crate) signed_soa_tail: Box<[u8]>,
    pub(crate) keys: Option<std::sync::Arc<crate::dns::dnssec::ZoneKeys>>,
    /// TTL of negative answers (RFC 2308 §3, RFC 9077): the lesser of the SOA's TTL and MINIMUM.
    pub(crate) negative_ttl: u32,
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
    pub(crate) segments: Box<[std::sync::Arc<Segment>]>,
    pub(crate) zones: Vec<ZoneInfo>,
    /// Zone transfers: zone (wire) → SOA then every record (etcd zones with AXFR on).
    pub axfr: FxHashMap<Box<[u8]>, std::sync::Arc<[crate::model::Record]>>,
    pub(crate) ready: bool,
    pub generation: u64,
    pub serial: u32,
    /// Records in the table (dynamic and static), for metrics.
    pub record_count: usize,
    /// Distinct names, for metrics.
    pub name_count: usize,
    /// The client locator whose location ids the per-location answers are indexed by: it
    /// travels with the table, so a query never pairs one with the other's predecessor (the
    /// table only carries it; `geo` gives it meaning).
    pub locator: std::sync::Arc<crate::geo::Locator>,
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
        self.segments
            .iter()
            .flat_map(|s| s.names.iter().map(|(k, _)| k.wire()))
    }

    /// Segments of this table that `older` does not share (all of them if it has none).
    pub fn unshared_segments(&self, older: &Table) -> usize {
        (0..self.segments.len())
            .filter(|&s| !self.shares_segment(older, s))
            .count()
    }

    /// The zone whose apex is `origin` (wire, lowercase), if served and not an etcd zone
    /// (those transfer their SkyDNS records, [`Table::axfr`]).
    pub fn transferable_zone(&self, origin: &[u8]) -> Option<usize> {
        self.zones
            .iter()
            .position(|z| z.origin.wire() == origin && z.miss_soa.is_none())
    }

    /// The apex of every served zone.
    pub fn zone_origins(&self) -> impl Iterator<Item = &crate::model::DnsName> {
        self.zones.iter().map(|z| &z.origin)
    }

    /// Whether segment `s` is the same in both tables (a change left it alone).
    pub fn shares_segment(&self, older: &Table, s: usize) -> bool {
        match (self.segments.get(s), older.segments.get(s)) {
            (Some(a), Some(b)) => std::sync::Arc::ptr_eq(a, b),
            _ => false,
        }
    }

    /// What a client of unknown location gets at each name of zone `zone` held by the
    /// segments `segments` picks: (name, query type, answer) for every type with data (ANY
    /// left out), and (name, 0, referral) at and below zone cuts. For zone transfers, off the
    /// query path.
    pub fn zone_answers(
        &self,
        zone: usize,
        segments: impl Fn(usize) -> bool,
    ) -> Vec<(&crate::model::DnsName, u16, &Answer)> {
        let mut out = Vec::new();
        for (s, segment) in self.segments.iter().enumerate() {
            if !segments(s) {
                continue;
            }
            for (name, node) in segment.names.iter() {
                if node.zone as usize != zone {
                    continue;
                }
                let at_unknown = |idx: u32| -> Option<&Answer> {
                    let idx = if idx & LOCATED != 0 {
                        segment.located[(idx & !LOCATED) as usize]
                    } else {
                        idx
                    };
                    match idx {
                        NODATA | NXDOMAIN | MISS_SOA => None,
                        i => segment.answers.get(i as usize),
                    }
                };
                for &(t, idx) in node.by_type.iter() {
                    if t == crate::model::rtype::ANY {
                        continue;
                    }
                    if let Some(a) = at_unknown(idx) {
                        out.push((name, t, a));
                    }
                }
                if let Some(a) = at_unknown(node.other).filter(|a| !a.authoritative) {
                    out.push((name, 0, a));
                }
            }
        }
        out
    }

    /// The SOA record that follows `answer`'s body in the authority section (empty: none),
    /// with its RRSIG when `dnssec` and the answer is signed; and how many records that is.
    #[inline]
    pub fn soa_tail(&self, answer: &Answer, dnssec: bool) -> (&[u8], u16) {
        match self.zones.get(answer.soa_tail as usize) {
            Some(z) if dnssec && answer.signed => (&z.signed_soa_tail, 2),
            Some(z) => (&z.soa_tail, 1),
            None => (&[], 0),
        }
    }

    /// The keys (and negative TTL) that sign the compact denial `answer` needs, if it is one:
    /// the signed zone's NXDOMAIN for names the table does not have (its NSEC names the
    /// question, so it is signed per query). Answers the builder made carry their denial.
    #[inline]
    pub fn online_denial(&self, answer: &Answer) -> Option<(&crate::dns::dnssec::ZoneKeys, u32)> {
        let z = self.zones.get(answer.soa_tail as usize)?;
        std::ptr::eq(answer, &z.nxdomain)
            .then_some(z.keys.as_deref()?)
            .map(|k| (k, z.negative_ttl))
    }

    /// The keys of zone `zone` (an index from [`Answer::online_data`]) and its negative TTL,
    /// when it is signed.
    #[inline]
    pub fn zone_keys(&self, zone: u32) -> Option<(&crate::dns::dnssec::ZoneKeys, u32)> {
        let z = self.zones.get(zone as usize)?;
        Some((z.keys.as_deref()?, z.negative_ttl))
    }

    #[inline]
    fn answer<'a>(&'a self, segment: &'a Segment, zone: u32, idx: u32) -> &'a Answer {
        match idx {
            NODATA => &self.zones[zone as usize].nodata,
            NXDOMAIN => &self.zones[zone as usize].nxdomain,
            MISS_SOA => {
                let z = &self.zones[zone as usize];
                z.miss_soa.as_ref().unwrap_or(&z.nodata)
            }
            i => &segment.answers[i as usize],
        }
    }

    /// `qname` is the question name in wire format, already lowercased. `locate` gives the
    /// client's location id; it is only called when the answer depends on it.
    #[inline]
    pub fn lookup(&self, qname: &[u8], qtype: u16, locate: impl FnOnce() -> usize) -> Lookup<'_> {
        if !self.ready {
            return Lookup::NotReady;
        }
        let hash = name_hash(qname);
        let segment = &*self.segments[segment_of(hash)];
        if let Some(node) = segment.find(hash, qname) {
            let mut idx = node
                .by_type
                .iter()
                .find(|(t, _)| *t == qtype)
                .map_or(node.other, |(_, i)| *i);
            if idx & LOCATED != 0 {
                let start = (idx & !LOCATED) as usize;
                idx = segment.located[start + locate()];
            }
            return Lookup::Authoritative(self.answer(segment, node.zone, idx));
        }
        // Closest existing ancestor decides: inside a zone → NXDOMAIN, nowhere → REFUSED. Every
        // ancestor of a node up to its apex is itself a node (empty non-terminals included), so
        // the first hit is the closest encloser.
        let mut pos = 0usize;
        while pos < qname.len() && qname[pos] != 0 {
            pos += qname[pos] as usize + 1;
            let parent = &qname[pos.min(qname.len())..];
            let hash = name_hash(parent);
            let segment = &*self.segments[segment_of(hash)];
            if let Some(node) = segment.find(hash, parent) {
                if node.wildcard != NO_WILDCARD {
                    // Synthesized from the closest encloser's `*` child (RFC 4592), or the
                    // referral of the delegation this name is below.
                    let w = &segment.wildcards[node.wildcard as usize];
                    let mut idx = w
                        .by_type
                        .iter()
                        .find(|(t, _)| *t == qtype)
                        .map_or(w.other, |(_, i)| *i);
                    if idx & LOCATED != 0 {
                        let start = (idx & !LOCATED) as usize;
                        idx = segment.located[start + locate()];
                    }
                    return Lookup::Authoritative(self.answer(segment, node.zone, idx));
                }
                let zone = &self.zones[node.zone as usize];
                if qtype == crate::model::rtype::SOA
                    && let Some(a) = &zone.miss_soa
                {
                    return Lookup::Authoritative(a);
                }
                return Lookup::Authoritative(&zone.nxdomain);
            }
        }
        Lookup::Refused
    }
}
