//! Answers: turns source snapshots into the encoded answers of every name, incrementally, and
//! files them into immutable [`Table`]s.
//!
//! `federation.rs` lays out federated names (DESIGN §1), `skydns.rs` answers SkyDNS data as
//! CoreDNS's etcd plugin does, and this module overlays them on zone files, follows CNAME
//! chains, encodes, and builds table segments.
//!
//! The merger keeps one [`BuildCache`]: every name with the records each source gives it, its
//! encoded answers, the aliases that read it, and the segments of the last table. A build
//! compares the new snapshots with what the cache saw (services, ingress hosts, DNSEndpoint
//! names, zone files, etcd keys), changes the records of the names they lay out, re-encodes those names and the aliases
//! that read them, and rebuilds only the segments that hold them; the new table shares every
//! other segment with the previous one. A build without a cache is the same code applied to an
//! empty cache, so "incremental" and "from scratch" cannot drift apart by construction
//! (`incremental_tests.rs` checks they answer byte for byte alike).
//!
//! Guarantees: a pure function of its input (snapshots, serial, generation) and the cache; the
//! names are those of DESIGN §1 overlaid on the zone files' records (a federation wins over a
//! zone file, a later federation over an earlier one, etcd over both), empty non-terminals up to
//! each apex, in-zone CNAME chains followed, every answer encoded with its rotations.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use rustc_hash::{FxHashMap, FxHashSet};

mod federation;
#[cfg(test)]
mod incremental_tests;
pub mod skydns;

pub use self::federation::{
    FederationRecords, McsChoice, Published, federation_records, headless_hosts, mcs_choice,
};
use self::federation::{Layout, NodeData, RRset};
use self::skydns::{EtcdData, Outcome};
use crate::dns::dnssec::{self, ZoneKeys};
use crate::dns::encode;
use crate::geo::Locator;
use crate::model::{
    DnsName, EndpointName, Federation, IngressHost, RData, Record, Service, Soa, StaticZone, rtype,
};
use crate::table::{
    Answer, Body, LOCATED, MISS_SOA, NO_TAIL, NO_WILDCARD, NODATA, NXDOMAIN, Node, Online,
    SEGMENTS, Segment, Table, Wildcard, ZoneInfo, name_hash, rcode, segment_of,
};

/// Longest CNAME chain followed inside served zones.
const MAX_CHAIN: usize = 8;

pub struct BuildInput<'a> {
    pub zones: &'a [StaticZone],
    pub federations: &'a [Federation],
    /// etcd (SkyDNS layout) data sets; their names answer as CoreDNS's etcd plugin would and
    /// override zone-file and federation names.
    pub etcd: &'a [&'a EtcdData],
    /// What earlier builds computed, kept by the merger between builds (`None`: start afresh).
    pub cache: Option<&'a mut BuildCache>,
    pub serial: u32,
    pub generation: u64,
    /// Client locations to precompute global names for.
    pub locator: &'a Locator,
    /// Zones to sign (DNSSEC), with their keys and signature validity; empty: none.
    pub signing: &'a [Arc<ZoneKeys>],
}

pub struct Built {
    pub table: Table,
    /// Things an operator should know (overridden names, synthesized SOAs…), said when they
    /// first appear rather than with every table.
    pub warnings: Vec<String>,
    /// `DNSEndpoint` names outside every served zone (not served), over all federations.
    pub endpoints_outside: usize,
    /// Inputs fedns cannot serve as written (federated names below a zone cut): `check`
    /// rejects them; `serve` logs them and serves the delegation.
    pub conflicts: Vec<String>,
}

#[derive(Clone, Debug, PartialEq)]
struct ZoneData {
    origin: DnsName,
    soa: Soa,
    soa_ttl: u32,
}

/// Where a name's records come from: the greatest origin present wins (zone files, then each
/// federation in order, its services, then its ingress hosts, then its DNSEndpoint names;
/// `key` orders two of one kind).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Origin {
    federation: u32,
    kind: u8,
    key: u64,
}

const FROM_ZONE_FILES: Origin = Origin {
    federation: 0,
    kind: 0,
    key: 0,
};
const SERVICE: u8 = 1;
const INGRESS: u8 = 2;
/// `DNSEndpoint` records: written for a name on purpose, so they win over the federation's
/// own layout of it.
const ENDPOINT: u8 = 3;

fn key_of(parts: &[&[u8]]) -> u64 {
    use std::hash::BuildHasher;
    rustc_hash::FxBuildHasher.hash_one(parts)
}

/// A table-independent reference to an answer, kept between builds.
#[derive(Clone, Debug)]
enum Ref {
    /// The zone's NODATA (it carries the serial, so each table has its own).
    NoData,
    One(Answer),
    /// One answer per client location: the distinct answers (`None`: NODATA) and, per
    /// location, which of them.
    Located {
        distinct: Box<[Option<Answer>]>,
        per_location: Box<[u32]>,
    },
}

#[derive(Clone, Debug)]
struct Encoded {
    by_type: Typed,
    other: Ref,
    /// What names below this one that do not exist answer: its `*` child's synthesized
    /// answers (RFC 4592), or below a zone cut the referral; `None`: NXDOMAIN.
    below: Option<Box<TypedRefs>>,
}

/// Answers by query type, and the answer of any other type.
type TypedRefs = (Typed, Ref);

/// Answers by query type, held only during a build (from encoding to the segment) and
/// inline for the usual one type and ANY: a first build holds one per name at once, and
/// boxed, 630k of them freed together left jemalloc's 96-byte slabs a quarter full beside the
/// answers that stay (60 MB at 10 × 10k services).
type Typed = smallvec::SmallVec<[(u16, Ref); 2]>;

static EMPTY: std::sync::LazyLock<NodeData> = std::sync::LazyLock::new(NodeData::default);

/// One name of the table being maintained: 40 bytes, since there is one per name (850k at
/// 10 clusters × 10k services) and a map slot holds it whole. A zone apex's served records
/// (with the SOA of this table's serial) are kept beside, in [`Names::apexes`].
struct NameState {
    zone: u32,
    /// Names directly below this one (an empty non-terminal exists while it has any).
    children: u32,
    /// What each source gives this name, sorted by origin; the last one is served. Boxed
    /// exactly: almost every name has one source for as long as it lives.
    contributions: Box<[(Origin, NodeData)]>,
    /// Other names this name's answers read (the names along its CNAME chains).
    reads: Box<[DnsName]>,
}

const _: () = assert!(std::mem::size_of::<NameState>() == 40);

impl NameState {
    fn new(zone: u32) -> Self {
        NameState {
            zone,
            contributions: Box::new([]),
            children: 0,
            reads: Box::new([]),
        }
    }

    fn served(&self) -> Option<&NodeData> {
        self.contributions.last().map(|(_, d)| d)
    }

    fn position(&self, origin: Origin) -> Result<usize, usize> {
        self.contributions
            .binary_search_by_key(&origin, |(o, _)| *o)
    }

    fn insert(&mut self, i: usize, contribution: (Origin, NodeData)) {
        let mut v = std::mem::take(&mut self.contributions).into_vec();
        v.reserve_exact(1);
        v.insert(i, contribution);
        self.contributions = v.into_boxed_slice();
    }

    fn remove(&mut self, i: usize) {
        let mut v = std::mem::take(&mut self.contributions).into_vec();
        v.remove(i);
        self.contributions = v.into_boxed_slice();
    }
}

/// Every name, partitioned like the table's segments so a segment is rebuilt from its part.
struct Names {
    parts: Vec<FxHashMap<DnsName, NameState>>,
    /// At each zone's apex: the served records with the zone's SOA (this table's serial).
    apexes: FxHashMap<DnsName, NodeData>,
}

impl Default for Names {
    fn default() -> Self {
        Names {
            parts: (0..SEGMENTS).map(|_| FxHashMap::default()).collect(),
            apexes: FxHashMap::default(),
        }
    }
}

fn part_of(name: &[u8]) -> usize {
    segment_of(name_hash(name))
}

impl Names {
    fn get(&self, name: &[u8]) -> Option<&NameState> {
        self.parts[part_of(name)].get(name)
    }
    fn get_mut(&mut self, name: &[u8]) -> Option<&mut NameState> {
        self.parts[part_of(name)].get_mut(name)
    }

    /// The records `name` (whose state is `st`) serves.
    fn data<'a>(&'a self, name: &[u8], st: &'a NameState) -> &'a NodeData {
        self.apexes.get(name).or(st.served()).unwrap_or(&EMPTY)
    }

    fn is_needed(&self, name: &[u8], st: &NameState) -> bool {
        !st.contributions.is_empty() || st.children > 0 || self.apexes.contains_key(name)
    }
}

/// A service as last seen, and whether this build saw it (laid it out, if it changed). The
/// names it laid out are not kept (14 MB at 10 × 10k services): laying the service out again
/// with the settings it was laid out with gives them back.
type ServiceEntry = (Arc<Service>, bool);

/// What a federation's services, ingress hosts and DNSEndpoint names laid out in the last
/// build.
#[derive(Default)]
struct FederationState {
    /// The federation without its services and ingress hosts: any change lays it all out again.
    settings: Option<Federation>,
    /// namespace → name → entry (nested so that a lookup borrows the service's strings).
    services: FxHashMap<String, FxHashMap<String, ServiceEntry>>,
    ingress: FxHashMap<DnsName, (IngressHost, bool)>,
    /// name → records, seen by this build, outside every served zone.
    endpoints: FxHashMap<DnsName, (EndpointName, bool, bool)>,
    /// The snapshot's endpoints `endpoints` was last brought up to.
    last_endpoints: Option<Arc<Vec<EndpointName>>>,
}

/// One etcd answer, encoded once and kept between builds.
enum Enc {
    NoData,
    NxDomain,
    ServFail,
    Soa,
    Body(Answer),
}

struct EncName {
    by_type: Vec<(u16, Enc)>,
    other: Enc,
}

/// What the builder keeps of one etcd data set between builds, so that a change re-answers
/// and re-encodes only the names it affects. Encoded names are partitioned by the segment that
/// holds them (a stored wildcard by its parent's).
pub struct EtcdCache {
    sky: skydns::Cache,
    enc: Vec<HashMap<skydns::NameKey, EncName>>,
}

impl Default for EtcdCache {
    fn default() -> Self {
        EtcdCache {
            sky: Default::default(),
            enc: (0..SEGMENTS).map(|_| HashMap::new()).collect(),
        }
    }
}

fn etcd_part(key: &skydns::NameKey) -> usize {
    match (key.1, key.0.parent()) {
        (true, Some(parent)) => part_of(parent.wire()),
        _ => part_of(key.0.wire()),
    }
}

/// What one build leaves for the next (owned by the merger); see the module documentation.
#[derive(Default)]
pub struct BuildCache {
    /// Client locations, zones (serial left out), federations and etcd prefixes the cache was
    /// built for: if any differ, the next build starts afresh.
    locations: usize,
    zones: Vec<ZoneData>,
    federation_names: Vec<String>,
    etcd_prefixes: Vec<String>,
    zone_files: Vec<StaticZone>,
    zone_file_nodes: FxHashMap<DnsName, NodeData>,
    /// Zone cuts: names below their zone's apex with NS records in a zone file (RFC 1034
    /// §4.2.1). Every name at or below one answers with its referral.
    cuts: FxHashSet<DnsName>,
    federations: Vec<FederationState>,
    /// Per zone (same order as `zones`): its signing keys, if it is signed. Other keys or
    /// another validity period start the cache afresh (every signature is made again).
    keys: Vec<Option<Arc<ZoneKeys>>>,
    names: Names,
    /// name → aliases whose answers read it.
    readers: FxHashMap<DnsName, Vec<DnsName>>,
    etcd: Vec<EtcdCache>,
    /// The last table's segments: they hold every name's encoded answers, so a rebuilt segment
    /// takes the nodes of names that were not re-encoded from its predecessor.
    segments: Vec<Arc<Segment>>,
    /// During a build: names whose records changed, and segments to rebuild.
    changed: FxHashSet<DnsName>,
    /// During a build: the answers of the names re-encoded (the only answers the cache holds),
    /// by part (empty between builds).
    encoded: Vec<FxHashMap<DnsName, Encoded>>,
    /// During a build: names etcd overlaid in the last table and no longer does (their node
    /// there is etcd's, so they are encoded again).
    unlaid: FxHashSet<DnsName>,
    /// During a build: inputs that contradict each other (see [`Built::conflicts`]).
    conflicts: Vec<String>,
    dirty: Vec<bool>,
    /// etcd aggregates (names reading at least this many entries) are answered off the
    /// critical path (`skydns::update`'s `defer`).
    defer_aggregates: Option<usize>,
    /// Deferred etcd answers to fold into the next build, and jobs the last build handed out.
    settled: Vec<skydns::Settled>,
    jobs: Vec<skydns::Job>,
}

impl BuildCache {
    /// From now on, etcd names whose answers read at least `min` entries (a large subtree:
    /// [`skydns::AGGREGATE_MIN`]) are left pending by a change and answered by the
    /// [`skydns::Job`]s [`BuildCache::take_jobs`] hands out.
    pub fn defer_aggregates(&mut self, min: usize) {
        self.defer_aggregates = Some(min);
    }

    /// Forgets every name and answer (client location ids changed meaning), keeping only how
    /// the cache was set up (etcd deferral): the next build lays everything out again.
    pub fn start_afresh(&mut self) {
        *self = BuildCache {
            defer_aggregates: self.defer_aggregates,
            ..Default::default()
        };
    }

    /// A job's answers, folded into the next build.
    pub fn settle(&mut self, settled: skydns::Settled) {
        self.settled.push(settled);
    }

    /// The jobs the last build made (at most one per etcd data set in flight).
    pub fn take_jobs(&mut self) -> Vec<skydns::Job> {
        std::mem::take(&mut self.jobs)
    }

    /// etcd names whose served answers are older than the data.
    pub fn pending_aggregates(&self) -> usize {
        self.etcd.iter().map(|c| c.sky.pending()).sum()
    }
}

pub fn build(mut input: BuildInput<'_>) -> Built {
    let mut scratch = BuildCache::default();
    let cache = input.cache.take().unwrap_or(&mut scratch);
    cache.apply(&input)
}

/// A build from scratch of zone files and federations alone (no etcd, serial 1): what `check`,
/// tests and harnesses need.
pub fn build_fresh(zones: &[StaticZone], federations: &[Federation], locator: &Locator) -> Built {
    build(BuildInput {
        zones,
        federations,
        etcd: &[],
        cache: None,
        serial: 1,
        generation: 1,
        locator,
        signing: &[],
    })
}

/// The zones served: zone files with an SOA at the apex (a later file with the same origin
/// wins), federation zones without a file (synthesized SOA), etcd zones (CoreDNS's SOA).
fn zone_list(
    zone_files: &[StaticZone],
    federations: &[Federation],
    etcd: &[&EtcdData],
    warnings: &mut Vec<String>,
) -> Vec<ZoneData> {
    let mut zones: Vec<ZoneData> = Vec::new();
    for z in zone_files {
        let Some((soa, soa_ttl)) = z.records.iter().find_map(|r| match &r.data {
            RData::Soa(s) if r.name == z.origin => Some((s, r.ttl)),
            _ => None,
        }) else {
            warnings.push(format!(
                "{}: zone {} has no SOA at its apex; skipped",
                z.file, z.origin
            ));
            continue;
        };
        if let Some(i) = zones.iter().position(|d| d.origin == z.origin) {
            warnings.push(format!(
                "{}: zone {} is defined twice; the later file wins",
                z.file, z.origin
            ));
            zones.remove(i);
        }
        zones.push(ZoneData {
            origin: z.origin.clone(),
            soa: Soa {
                serial: 0,
                ..(**soa).clone()
            },
            soa_ttl,
        });
    }
    for fed in federations {
        if !zones.iter().any(|z| z.origin == fed.zone) {
            warnings.push(format!(
                "federation {}: no zone file for {}; serving it with a synthesized SOA",
                fed.name, fed.zone
            ));
            zones.push(synthesized_soa(&fed.zone, "ns1", 3600, 600));
        }
        // The in-cluster redirect zone (`FED.svc.cluster.local`) is the federation zone's
        // twin: its SOA, under its own origin (a zone file for it wins, as for any zone).
        if let Some(rz) = fed.redirect_zone()
            && !zones.iter().any(|z| z.origin == rz)
            && let Some(twin) = zones.iter().find(|z| z.origin == fed.zone).cloned()
        {
            zones.push(ZoneData { origin: rz, ..twin });
        }
        // The MCS zone (`svc.clusterset.local`) likewise; two federations serving it share it
        // (`check` refuses that, since their names would collide).
        if let Some(cz) = fed.clusterset_zone()
            && !zones.iter().any(|z| z.origin == cz)
            && let Some(twin) = zones.iter().find(|z| z.origin == fed.zone).cloned()
        {
            zones.push(ZoneData { origin: cz, ..twin });
        }
    }
    // etcd zones without a zone file get the SOA CoreDNS synthesizes (plugin.SOA): ns.dns.ZONE,
    // hostmaster.ZONE, refresh 7200, retry 1800, expire 86400, minimum 30, TTL 30.
    for data in etcd {
        for z in &data.zones {
            if !zones.iter().any(|d| d.origin == *z) {
                zones.push(synthesized_soa(z, "ns.dns", 7200, 1800));
            }
        }
    }
    for z in &mut zones {
        z.soa.serial = 0;
    }
    zones
}

/// The zone files' records by name (a zone defined twice keeps its later file's names).
fn zone_file_nodes(zone_files: &[StaticZone]) -> FxHashMap<DnsName, NodeData> {
    let mut nodes: FxHashMap<DnsName, Vec<RRset>> = FxHashMap::default();
    let mut seen: Vec<&DnsName> = Vec::new();
    for z in zone_files {
        let has_soa = z
            .records
            .iter()
            .any(|r| r.name == z.origin && matches!(r.data, RData::Soa(_)));
        if !has_soa {
            continue;
        }
        if seen.contains(&&z.origin) {
            nodes.retain(|n, _| !n.is_within(&z.origin));
        }
        seen.push(&z.origin);
        for r in &z.records {
            let node = nodes.entry(r.name.clone()).or_default();
            let t = r.data.rtype();
            match node.iter_mut().find(|s| s.rtype == t) {
                // RFC 2181 §5.2: one TTL per RRset; the lowest is the safe choice.
                Some(set) => {
                    set.ttl = set.ttl.min(r.ttl);
                    if !set.rdatas.contains(&r.data) {
                        set.rdatas.push(r.data.clone());
                    }
                }
                None => node.push(RRset::fixed(t, r.ttl, vec![r.data.clone()])),
            }
        }
    }
    nodes
        .into_iter()
        .map(|(n, sets)| (n, NodeData::new(sets)))
        .collect()
}

impl ZoneData {
    /// RFC 2308 §3: the TTL of negative answers is the lesser of the SOA's TTL and MINIMUM.
    fn negative_ttl(&self) -> u32 {
        self.soa_ttl.min(self.soa.minimum)
    }
}

fn zone_of(zones: &[ZoneData], name: &DnsName) -> Option<usize> {
    zones
        .iter()
        .enumerate()
        .filter(|(_, z)| name.is_within(&z.origin))
        .max_by_key(|(_, z)| z.origin.wire().len())
        .map(|(i, _)| i)
}

/// The outcome of resolving one question at build time.
#[derive(PartialEq)]
struct Resolved<'a> {
    rcode: u8,
    answer: Vec<(DnsName, &'a RRset)>,
    /// Addresses of the answer's in-zone NS, MX or SRV targets.
    additional: Vec<(DnsName, &'a RRset)>,
    /// Zone whose SOA goes into the authority section (negative answers).
    soa_zone: Option<usize>,
    /// Negative answers: the name the chain ended at, the types it has there (for its NSEC),
    /// and whether it exists.
    end: Option<(DnsName, Vec<u16>, bool)>,
    /// Some node on the way answers per client location.
    located: bool,
}

impl BuildCache {
    fn mark(&mut self, name: &DnsName) {
        self.dirty[part_of(name.wire())] = true;
        self.changed.insert(name.clone());
        // A `*` name's records are what its parent's missing children answer (`below`).
        if is_wildcard(name)
            && let Some(parent) = name.parent()
        {
            self.dirty[part_of(parent.wire())] = true;
            self.changed.insert(parent);
        }
    }

    /// Makes `name` exist (in zone `zone`), with the empty non-terminals above it.
    fn ensure(&mut self, name: &DnsName, zone: usize) {
        if self.names.get(name.wire()).is_some() {
            return;
        }
        let origin_len = self.zones[zone].origin.wire().len();
        self.names.parts[part_of(name.wire())].insert(name.clone(), NameState::new(zone as u32));
        self.mark(name);
        // Each new name adds one child to its parent, which may itself be new.
        let mut cur = name.clone();
        while cur.wire().len() > origin_len {
            let Some(parent) = cur.parent() else { break };
            if let Some(p) = self.names.get_mut(parent.wire()) {
                p.children += 1;
                break;
            }
            let mut st = NameState::new(zone as u32);
            st.children = 1;
            self.names.parts[part_of(parent.wire())].insert(parent.clone(), st);
            self.mark(&parent);
            cur = parent;
        }
    }

    /// Removes `name` if nothing needs it any more, and empty non-terminals above it.
    fn prune(&mut self, name: &DnsName) {
        let mut cur = name.clone();
        loop {
            let Some(st) = self.names.get(cur.wire()) else {
                return;
            };
            if self.names.is_needed(cur.wire(), st) {
                return;
            }
            let origin_len = self.zones[st.zone as usize].origin.wire().len();
            let st = self.names.parts[part_of(cur.wire())]
                .remove(cur.wire())
                .expect("just found");
            self.forget_reads(&cur, &st.reads);
            self.mark(&cur);
            if cur.wire().len() <= origin_len {
                return;
            }
            let Some(parent) = cur.parent() else { return };
            match self.names.get_mut(parent.wire()) {
                Some(p) => p.children = p.children.saturating_sub(1),
                None => return,
            }
            cur = parent;
        }
    }

    fn forget_reads(&mut self, name: &DnsName, reads: &[DnsName]) {
        for r in reads {
            if let Some(v) = self.readers.get_mut(r) {
                v.retain(|n| n != name);
                if v.is_empty() {
                    self.readers.remove(r);
                }
            }
        }
    }

    /// Sets what `origin` gives `name`; returns whether another origin already gave it records.
    fn contribute(&mut self, name: &DnsName, zone: usize, origin: Origin, data: NodeData) -> bool {
        self.ensure(name, zone);
        let st = self.names.get_mut(name.wire()).expect("ensured");
        let shared =
            !st.contributions.is_empty() && st.contributions.iter().any(|(o, _)| *o != origin);
        let last = st.contributions.len();
        let served_changed = match st.position(origin) {
            Ok(i) if st.contributions[i].1 == data => false,
            Ok(i) => {
                st.contributions[i].1 = data.compact();
                i + 1 == last
            }
            Err(i) => {
                st.insert(i, (origin, data.compact()));
                i == last
            }
        };
        if served_changed {
            self.mark(name);
        }
        shared
    }

    /// Why a federation's `*` name (a DNSEndpoint or ingress host wildcard) in a signed zone
    /// cannot be served: an RRset too large for the RRSIG the query path makes for it
    /// (`Online::Rrsig`). Such a name is refused, as `conflicts`, rather than answered SERVFAIL.
    fn unsignable_wildcard(&self, name: &DnsName, zone: usize, data: &NodeData) -> Option<String> {
        if !is_wildcard(name) || self.keys[zone].is_none() {
            return None;
        }
        let mut sets = data.rrsets.iter().chain(data.by_location.iter().flatten());
        let too_large = sets.any(|rr| {
            (0..rr.variants()).any(|v| {
                let set = dnssec::canonical_set(&rr.variant(v, rr.variants()));
                !dnssec::ownerless_records(rr.rtype, rr.ttl, &set, 255).1
            })
        });
        too_large.then(|| {
            format!(
                "{name}: a wildcard RRset in a signed zone larger than {} bytes signed (its RRSIG \
                 is made per query); not served: give it fewer records or leave the zone unsigned",
                dnssec::ONLINE_MAX
            )
        })
    }

    fn withdraw(&mut self, name: &DnsName, origin: Origin) {
        let Some(st) = self.names.get_mut(name.wire()) else {
            return;
        };
        let Ok(i) = st.position(origin) else {
            return;
        };
        let was_served = i + 1 == st.contributions.len();
        st.remove(i);
        if was_served {
            self.mark(name);
        }
        self.prune(name);
    }

    /// Folds `input` (its `cache` unused: that is `self`) into the cache and builds the table.
    fn apply(&mut self, input: &BuildInput<'_>) -> Built {
        let &BuildInput {
            zones: zone_files,
            federations,
            etcd,
            locator,
            signing,
            serial,
            generation,
            ..
        } = input;
        let mut warnings = Vec::new();
        let mut zone_warnings = Vec::new();
        let settled = std::mem::take(&mut self.settled);
        let zones = zone_list(zone_files, federations, etcd, &mut zone_warnings);
        let locations = locator.locations().len();
        let federation_names: Vec<String> = federations.iter().map(|f| f.name.clone()).collect();
        let etcd_prefixes: Vec<String> = etcd.iter().map(|e| e.prefix.clone()).collect();
        let keys: Vec<Option<Arc<ZoneKeys>>> = zones
            .iter()
            .map(|z| signing.iter().find(|k| k.zone == z.origin).cloned())
            .collect();
        let same_keys = |a: &Option<Arc<ZoneKeys>>, b: &Option<Arc<ZoneKeys>>| match (a, b) {
            (None, None) => true,
            (Some(a), Some(b)) => a.same_as(b),
            _ => false,
        };
        let fresh = self.segments.is_empty()
            || self.keys.len() != keys.len()
            || !self.keys.iter().zip(&keys).all(|(a, b)| same_keys(a, b))
            || self.locations != locations
            || self.zones != zones
            || self.federation_names != federation_names
            || self.etcd_prefixes != etcd_prefixes;
        if fresh {
            *self = BuildCache {
                locations,
                keys,
                zones,
                federation_names,
                etcd_prefixes,
                federations: federations.iter().map(|_| Default::default()).collect(),
                etcd: etcd.iter().map(|_| Default::default()).collect(),
                segments: (0..SEGMENTS).map(|_| Default::default()).collect(),
                dirty: vec![true; SEGMENTS],
                defer_aggregates: self.defer_aggregates,
                ..Default::default()
            };
            for zi in 0..self.zones.len() {
                let origin = self.zones[zi].origin.clone();
                self.ensure(&origin, zi);
            }
        }

        if fresh || self.zone_files.as_slice() != zone_files {
            warnings.append(&mut zone_warnings);
            self.update_zone_files(zone_files, &mut warnings);
            // A signed wildcard's RRSIG is made per query on the stack (`Online::Rrsig`): an
            // RRset too large for that would be served bogus, so it is refused.
            let mut signed_wildcards: Vec<String> = self
                .zone_file_nodes
                .iter()
                .filter(|(n, _)| is_wildcard(n))
                .filter(|(n, _)| zone_of(&self.zones, n).is_some_and(|zi| self.keys[zi].is_some()))
                .filter(|(_, d)| {
                    d.rrsets.iter().any(|rr| {
                        let set = dnssec::canonical_set(&rr.rdatas);
                        !dnssec::ownerless_records(rr.rtype, rr.ttl, &set, 255).1
                    })
                })
                .map(|(n, _)| {
                    format!(
                        "{n}: a wildcard RRset in a signed zone larger than {} bytes signed \
                         (its RRSIG is made per query); split it or leave the zone unsigned",
                        dnssec::ONLINE_MAX
                    )
                })
                .collect();
            signed_wildcards.sort();
            self.conflicts.extend(signed_wildcards);
        }
        for (i, fed) in federations.iter().enumerate() {
            self.update_federation(i, fed, locator, &mut warnings);
        }
        // The SOA serial is the table's: it grows with every publish.
        for zi in 0..self.zones.len() {
            let z = &self.zones[zi];
            let soa = RRset::fixed(
                rtype::SOA,
                z.soa_ttl,
                vec![RData::Soa(Box::new(Soa {
                    serial,
                    ..z.soa.clone()
                }))],
            );
            let origin = z.origin.clone();
            let st = self.names.get_mut(origin.wire()).expect("apexes exist");
            let mut data = st.served().cloned().unwrap_or_default();
            let mut rrsets = std::mem::take(&mut data.rrsets).into_vec();
            rrsets.retain(|r| r.rtype != rtype::SOA);
            rrsets.push(soa);
            if let Some(keys) = &self.keys[zi] {
                // DNSKEY, CDS and CDNSKEY (RFC 7344), whatever the zone file says.
                rrsets.retain(|r| {
                    !matches!(
                        r.rtype,
                        dnssec::TYPE_DNSKEY | dnssec::TYPE_CDS | dnssec::TYPE_CDNSKEY
                    )
                });
                for r in keys.apex_records(DNSKEY_TTL) {
                    let t = r.data.rtype();
                    match rrsets.iter_mut().find(|s| s.rtype == t) {
                        Some(set) => set.rdatas.push(r.data),
                        None => rrsets.push(RRset::fixed(t, r.ttl, vec![r.data])),
                    }
                }
                rrsets.sort_by_key(|r| r.rtype);
            }
            data.rrsets = rrsets.into();
            self.names.apexes.insert(origin.clone(), data);
            self.mark(&origin);
        }

        self.reencode(locations);
        let etcd_zones: Vec<&DnsName> = etcd.iter().flat_map(|d| &d.zones).collect();
        let mut settled = settled;
        for (i, data) in etcd.iter().enumerate() {
            self.update_etcd(i, data, &mut settled, &mut warnings);
        }

        let zone_infos: Vec<ZoneInfo> = self
            .zones
            .iter()
            .enumerate()
            .map(|(zi, z)| {
                zone_info(
                    z,
                    zi,
                    serial,
                    etcd_zones.contains(&&z.origin),
                    self.keys[zi].as_ref(),
                )
            })
            .collect();
        let dirty: Vec<usize> = (0..SEGMENTS).filter(|&s| self.dirty[s]).collect();
        let built = par_map(&dirty, 256, |&s| Arc::new(self.segment(s)));
        for (s, seg) in dirty.into_iter().zip(built) {
            self.segments[s] = seg;
            self.dirty[s] = false;
        }
        self.encoded = Vec::new();
        self.unlaid = FxHashSet::default();
        let mut axfr = FxHashMap::default();
        for data in etcd.iter().filter(|d| d.axfr) {
            for z in &data.zones {
                let Some(zd) = self.zones.iter().find(|d| d.origin == *z) else {
                    continue;
                };
                let mut records = vec![Record {
                    name: z.clone(),
                    ttl: zd.soa_ttl,
                    data: RData::Soa(Box::new(Soa {
                        serial,
                        ..zd.soa.clone()
                    })),
                }];
                records.extend(skydns::transfer_records(data, z));
                axfr.insert(z.wire().into(), records.into());
            }
        }
        encode::forget_names();
        let table = Table {
            record_count: self.segments.iter().map(|s| s.records).sum(),
            name_count: self.segments.iter().map(|s| s.names.len()).sum(),
            segments: self.segments.clone().into_boxed_slice(),
            zones: zone_infos,
            axfr,
            ready: true,
            generation,
            serial,
            // The merger puts the locator the answers were laid out for here.
            locator: Default::default(),
        };
        let conflicts = std::mem::take(&mut self.conflicts);
        warnings.extend(conflicts.iter().cloned());
        let endpoints_outside = self
            .federations
            .iter()
            .flat_map(|f| f.endpoints.values())
            .filter(|e| e.2)
            .count();
        Built {
            table,
            warnings,
            endpoints_outside,
            conflicts,
        }
    }

    fn update_zone_files(&mut self, zone_files: &[StaticZone], warnings: &mut Vec<String>) {
        let new = zone_file_nodes(zone_files);
        let old = std::mem::take(&mut self.zone_file_nodes);
        for name in old.keys().filter(|n| !new.contains_key(*n)) {
            self.withdraw(name, FROM_ZONE_FILES);
        }
        for (name, data) in &new {
            if old.get(name) == Some(data) {
                continue;
            }
            match zone_of(&self.zones, name) {
                Some(zi) => {
                    self.contribute(name, zi, FROM_ZONE_FILES, data.clone());
                }
                None => warnings.push(format!("{name} is outside every served zone; ignored")),
            }
        }
        let cuts: FxHashSet<DnsName> = new
            .iter()
            .filter(|(name, data)| {
                data.rrsets.iter().any(|r| r.rtype == rtype::NS)
                    && !self.zones.iter().any(|z| z.origin == **name)
                    && zone_of(&self.zones, name).is_some()
            })
            .map(|(name, _)| name.clone())
            .collect();
        self.zone_file_nodes = new;
        self.zone_files = zone_files.to_vec();
        if cuts != self.cuts {
            // Rare (a delegation added or removed): every name at or below an old or a new
            // cut answers differently.
            let moved: Vec<DnsName> = self
                .names
                .parts
                .iter()
                .flat_map(|p| p.keys())
                .filter(|n| cuts.iter().chain(self.cuts.iter()).any(|c| n.is_within(c)))
                .cloned()
                .collect();
            self.cuts = cuts;
            for n in &moved {
                self.mark(n);
            }
        }
    }

    fn update_federation(
        &mut self,
        i: usize,
        fed: &Federation,
        locator: &Locator,
        warnings: &mut Vec<String>,
    ) {
        let mut state = std::mem::take(&mut self.federations[i]);
        let federation = i as u32 + 1;
        let service_origin = |svc: &Service| Origin {
            federation,
            kind: SERVICE,
            key: key_of(&[svc.namespace.as_bytes(), svc.name.as_bytes()]),
        };
        let ingress_origin = |host: &DnsName| Origin {
            federation,
            kind: INGRESS,
            key: key_of(&[host.wire()]),
        };
        let endpoint_origin = |name: &DnsName| Origin {
            federation,
            kind: ENDPOINT,
            key: key_of(&[name.wire()]),
        };
        let settings = Federation {
            name: fed.name.clone(),
            zone: fed.zone.clone(),
            ttl: fed.ttl,
            max_answers: fed.max_answers,
            policy: fed.policy.clone(),
            clusters: fed.clusters.clone(),
            services: Vec::new(),
            ingress_hosts: Vec::new(),
            cluster_domain: fed.cluster_domain.clone(),
            clusterset_domain: fed.clusterset_domain.clone(),
            endpoints: Default::default(),
        };
        // New settings or clusters change every service's selection: all are laid out again,
        // and each name is compared with what it had (most keep their records).
        let relayout = state.settings.as_ref() != Some(&settings);
        let before = state.settings.replace(settings);
        for e in state.services.values_mut().flat_map(|m| m.values_mut()) {
            e.1 = false;
        }
        for e in state.ingress.values_mut() {
            e.1 = false;
        }
        let layout = Layout::new(fed, locator);
        // The names a service entry laid out: with this build's layout if this build saw it,
        // else with the last build's (the locator and zones are the cache's own: a change to
        // either starts it afresh).
        let earlier = before.as_ref().map(|f| Layout::new(f, locator));
        let names_of = |e: &ServiceEntry| -> Vec<DnsName> {
            let l = if e.1 { Some(&layout) } else { earlier.as_ref() };
            l.map_or_else(Vec::new, |l| {
                l.service(&e.0).into_iter().map(|(n, _)| n).collect()
            })
        };
        let unchanged = |e: &ServiceEntry, svc: &Arc<Service>| {
            !relayout && (Arc::ptr_eq(&e.0, svc) || e.0 == *svc)
        };
        // Laying a service out is pure: the services to lay out are laid out first, on every
        // core when there are many (a first build, new settings), then filed in order below.
        let todo: Vec<usize> = (0..fed.services.len())
            .filter(|&k| {
                let svc = &fed.services[k];
                let entry = state
                    .services
                    .get(&svc.namespace)
                    .and_then(|m| m.get(&svc.name));
                !entry.is_some_and(|e| unchanged(e, svc))
            })
            .collect();
        type Laid = (Vec<(DnsName, NodeData)>, Vec<DnsName>);
        let mut laid: Vec<Option<Laid>> = (0..fed.services.len()).map(|_| None).collect();
        let done = par_map(&todo, 64, |&k| {
            let svc = &fed.services[k];
            let entry = (state.services.get(&svc.namespace)).and_then(|m| m.get(&svc.name));
            (layout.service(svc), entry.map(names_of).unwrap_or_default())
        });
        let total: usize = done.iter().map(|d| d.0.len()).sum();
        self.changed.reserve(total);
        for (k, names) in todo.into_iter().zip(done) {
            laid[k] = Some(names);
        }
        let mut overridden = Vec::new();
        for (k, svc) in fed.services.iter().enumerate() {
            let entry = state
                .services
                .get_mut(&svc.namespace)
                .and_then(|m| m.get_mut(&svc.name));
            let known = match entry {
                Some(e) if unchanged(e, svc) => {
                    e.1 = true;
                    continue;
                }
                Some(e) => Some(&*e),
                None => None,
            };
            let origin = service_origin(svc);
            // Laid out above, unless an earlier service of the same name came between.
            let (laid_out, old_names) = match laid[k].take() {
                Some(laid) if known.is_none_or(|e| !e.1) => laid,
                _ => (layout.service(svc), known.map(names_of).unwrap_or_default()),
            };
            for old in &old_names {
                if !laid_out.iter().any(|(n, _)| n == old) {
                    self.withdraw(old, origin);
                }
            }
            for (name, data) in laid_out {
                let Some(zi) = zone_of(&self.zones, &name) else {
                    warnings.push(format!("{name} is outside every served zone; ignored"));
                    continue;
                };
                if self.contribute(&name, zi, origin, data) && !old_names.contains(&name) {
                    overridden.push(name.clone());
                }
            }
            state
                .services
                .entry(svc.namespace.clone())
                .or_default()
                .insert(svc.name.clone(), (svc.clone(), true));
        }
        // Ingress hosts outside every served zone are someone else's names: skipped quietly.
        for host in &fed.ingress_hosts {
            match state.ingress.get_mut(&host.host) {
                Some(e) if !relayout && e.0 == *host => {
                    e.1 = true;
                    continue;
                }
                _ => {}
            }
            let known = state.ingress.contains_key(&host.host);
            let origin = ingress_origin(&host.host);
            match zone_of(&self.zones, &host.host) {
                Some(zi) => {
                    let (name, data) = layout.ingress(host);
                    if let Some(why) = self.unsignable_wildcard(&name, zi, &data) {
                        self.conflicts.push(why);
                        self.withdraw(&name, origin);
                    } else if self.contribute(&name, zi, origin, data) && !known {
                        overridden.push(name);
                    }
                }
                None => self.withdraw(&host.host, origin),
            }
            state
                .ingress
                .insert(host.host.clone(), (host.clone(), true));
        }
        // Records do not depend on the federation's settings: only changed names are laid out,
        // and a snapshot that kept the previous one's names (the same `Arc`) costs nothing.
        let endpoints_kept = state
            .last_endpoints
            .as_ref()
            .is_some_and(|e| Arc::ptr_eq(e, &fed.endpoints));
        for e in state.endpoints.values_mut() {
            e.1 = endpoints_kept;
        }
        for ep in fed.endpoints.iter().filter(|_| !endpoints_kept) {
            match state.endpoints.get_mut(&ep.name) {
                Some(e) if e.0 == *ep => {
                    e.1 = true;
                    continue;
                }
                _ => {}
            }
            let known = state.endpoints.contains_key(&ep.name);
            let origin = endpoint_origin(&ep.name);
            let zone = zone_of(&self.zones, &ep.name);
            match zone {
                Some(zi) => {
                    let data = layout.endpoint(ep);
                    if let Some(why) = self.unsignable_wildcard(&ep.name, zi, &data) {
                        self.conflicts.push(why);
                        self.withdraw(&ep.name, origin);
                    } else if self.contribute(&ep.name, zi, origin, data) && !known {
                        overridden.push(ep.name.clone());
                    }
                }
                None => {
                    if !known {
                        warnings.push(format!(
                            "federation {}: DNSEndpoint name {} is outside every served zone; ignored",
                            fed.name, ep.name
                        ));
                    }
                    self.withdraw(&ep.name, origin);
                }
            }
            state
                .endpoints
                .insert(ep.name.clone(), (ep.clone(), true, zone.is_none()));
        }
        let mut gone = Vec::new();
        for names in state.services.values_mut() {
            names.retain(|_, e| {
                if !e.1 {
                    gone.push((service_origin(&e.0), names_of(e)));
                }
                e.1
            });
        }
        state.services.retain(|_, names| !names.is_empty());
        state.ingress.retain(|host, (_, seen)| {
            if !*seen {
                gone.push((ingress_origin(host), vec![host.clone()]));
            }
            *seen
        });
        state.endpoints.retain(|name, (_, seen, _)| {
            if !*seen {
                gone.push((endpoint_origin(name), vec![name.clone()]));
            }
            *seen
        });
        state.last_endpoints = Some(fed.endpoints.clone());
        for (origin, names) in gone {
            for n in &names {
                self.withdraw(n, origin);
            }
        }
        for name in overridden {
            let by_zone_file = self.names.get(name.wire()).is_some_and(|st| {
                st.contributions
                    .first()
                    .is_some_and(|(o, _)| *o == FROM_ZONE_FILES)
            });
            if by_zone_file {
                warnings.push(format!(
                    "federation {}: {name} overrides the zone file's records",
                    fed.name
                ));
            }
        }
        self.federations[i] = state;
    }

    /// Re-encodes every name whose records changed and every alias that reads one of them.
    fn reencode(&mut self, locations: usize) {
        let mut todo: FxHashSet<DnsName> = std::mem::take(&mut self.changed);
        let readers: Vec<DnsName> = todo
            .iter()
            .filter_map(|n| self.readers.get(n))
            .flatten()
            .cloned()
            .collect();
        todo.extend(readers);
        // In part order: the lookups of one thread's run stay within a few small maps (a first
        // build's 850k names in hash-set order missed the cache at almost every lookup), and
        // each part's map of answers is sized once.
        let mut todo: Vec<(usize, DnsName)> =
            todo.into_iter().map(|n| (part_of(n.wire()), n)).collect();
        todo.sort_by_key(|(p, _)| *p);
        if self.encoded.is_empty() {
            self.encoded = (0..SEGMENTS).map(|_| FxHashMap::default()).collect();
        }
        for run in todo.chunk_by(|a, b| a.0 == b.0) {
            self.encoded[run[0].0].reserve(run.len());
        }
        let view = self.view();
        let done = par_map(&todo, 4096, |(_, name)| {
            view.names.get(name.wire()).map(|st| {
                let (answers, reads) = encode_name(view, name, st, locations);
                // Data from a federation below a zone cut is hidden by the delegation.
                let hidden = st
                    .contributions
                    .last()
                    .is_some_and(|(o, _)| *o != FROM_ZONE_FILES)
                    .then(|| view.delegation(name))
                    .flatten();
                (answers, reads, hidden)
            })
        });
        for ((part, name), encoded) in todo.iter().zip(done) {
            let Some((answers, reads, hidden)) = encoded else {
                continue;
            };
            if let Some(cut) = hidden {
                self.conflicts.push(format!(
                    "{name} is below the delegation at {cut}: the federation's records there are not served (the referral is)"
                ));
            }
            self.dirty[*part] = true;
            self.encoded[*part].insert(name.clone(), answers);
            let st = self.names.get_mut(name.wire()).expect("encoded above");
            if st.reads.is_empty() && reads.is_empty() {
                continue; // not an alias, before or now
            }
            let old = std::mem::replace(&mut st.reads, reads.into_boxed_slice());
            self.forget_reads(name, &old);
            let st = self.names.get(name.wire()).expect("encoded above");
            for r in st.reads.iter() {
                let aliases = self.readers.entry(r.clone()).or_default();
                if aliases.is_empty() {
                    // Most targets have one reader: no room for four.
                    aliases.reserve_exact(1);
                }
                aliases.push(name.clone());
            }
        }
    }

    /// `settled`: deferred answers; this data set's are taken out.
    fn update_etcd(
        &mut self,
        i: usize,
        data: &EtcdData,
        settled: &mut Vec<skydns::Settled>,
        warnings: &mut Vec<String>,
    ) {
        let cache = &mut self.etcd[i];
        let delta = skydns::update(data, &mut cache.sky, self.defer_aggregates, settled);
        self.jobs.extend(delta.job);
        let overlaid = |(name, wild): &skydns::NameKey| {
            if *wild {
                name.parent()
            } else {
                Some(name.clone())
            }
        };
        if delta.full {
            for part in &mut cache.enc {
                self.unlaid
                    .extend(part.drain().filter_map(|(k, _)| overlaid(&k)));
            }
            self.dirty.iter_mut().for_each(|d| *d = true);
        }
        for k in &delta.removed {
            let p = etcd_part(k);
            cache.enc[p].remove(k);
            self.unlaid.extend(overlaid(k));
            self.dirty[p] = true;
        }
        let mut cut = 0usize;
        for (k, na) in &delta.changed {
            let p = etcd_part(k);
            cache.enc[p].insert(k.clone(), encode_etcd_name(na, k.1, &mut cut));
            self.dirty[p] = true;
        }
        if cut > 0 {
            warnings.push(format!(
                "etcd {}: {cut} answer(s) larger than a DNS message were cut to fit",
                data.prefix
            ));
        }
    }

    /// Segment `s` of the table from the names of part `s`, etcd's names overlaid: a name
    /// re-encoded by this build gets its new answers, every other name its node of the previous
    /// segment (answers shared, not copied). A name etcd overlays there had its node changed by
    /// that overlay, so it is encoded again.
    fn segment(&self, s: usize) -> Segment {
        let mut seg = Segment::default();
        let part = &self.names.parts[s];
        let old = &*self.segments[s];
        let mut moved = vec![u32::MAX; old.answers.len()];
        // etcd's names, and the parents of its stored wildcards (both in this part).
        let overlaid: FxHashSet<DnsName> = self
            .etcd
            .iter()
            .flat_map(|c| c.enc[s].keys())
            .filter_map(|(name, wild)| {
                if *wild {
                    name.parent()
                } else {
                    Some(name.clone())
                }
            })
            .collect();
        let unlaid = |name: &DnsName| !self.unlaid.is_empty() && self.unlaid.contains(name);
        let encoded = self.encoded.get(s);
        let view = self.view();
        seg.names.reserve(part.len(), |(k, _)| name_hash(k.wire()));
        for (name, st) in part {
            let hash = name_hash(name.wire());
            let kept = (!overlaid.contains(name) && !unlaid(name))
                .then(|| old.find(hash, name.wire()))
                .flatten()
                .filter(|_| !encoded.is_some_and(|e| e.contains_key(name)));
            let node = match kept {
                Some(node) => move_node(old, &mut seg, &mut moved, node, self.locations),
                None => {
                    let again;
                    let enc = match encoded.and_then(|e| e.get(name)) {
                        Some(enc) => enc,
                        None => {
                            again = encode_name(view, name, st, self.locations).0;
                            &again
                        }
                    };
                    put_node(&mut seg, st.zone, enc)
                }
            };
            seg.records += (self.names.data(name.wire(), st).rrsets.iter())
                .map(|r| r.rdatas.len())
                .sum::<usize>();
            seg.names
                .insert_unique(hash, (name.clone(), node), |(k, _)| name_hash(k.wire()));
        }
        for cache in &self.etcd {
            self.overlay_etcd(&mut seg, &cache.enc[s]);
        }
        // A segment lives until one of its names changes: no growth slack.
        seg.answers.shrink_to_fit();
        seg.located.shrink_to_fit();
        seg.wildcards.shrink_to_fit();
        seg
    }

    fn view(&self) -> View<'_> {
        View {
            names: &self.names,
            zones: &self.zones,
            cuts: &self.cuts,
            zone_file: &self.zone_file_nodes,
            keys: &self.keys,
        }
    }

    /// Adds the names of one etcd data set, answered as CoreDNS's etcd plugin answers them.
    fn overlay_etcd(&self, seg: &mut Segment, enc: &HashMap<skydns::NameKey, EncName>) {
        let index = |seg: &mut Segment, zi: usize, e: &Enc| -> u32 {
            match e {
                Enc::NoData => NODATA,
                Enc::NxDomain => NXDOMAIN,
                Enc::Soa => MISS_SOA,
                Enc::ServFail => {
                    seg.answers.push(Answer {
                        online: Online::None,
                        authoritative: true,
                        signed: false,
                        rcode: rcode::SERVFAIL,
                        soa_tail: zi as u32,
                        bodies: Arc::new([Body::empty()]),
                    });
                    (seg.answers.len() - 1) as u32
                }
                Enc::Body(a) => {
                    seg.records += a.bodies[0].answer_count as usize;
                    seg.answers.push(a.clone());
                    (seg.answers.len() - 1) as u32
                }
            }
        };
        for ((name, wild), en) in enc {
            if *wild {
                continue;
            }
            let Some(zi) = zone_of(&self.zones, name) else {
                continue;
            };
            let hash = name_hash(name.wire());
            // Where etcd has nothing (NXDOMAIN) for a type that a zone file or federation
            // answers at this name (e.g. the apex NS of a zone that also has a zone file), that
            // answer stays.
            let existing: Vec<(u16, u32)> = seg
                .names
                .find(hash, |(k, _)| k == name)
                .map(|(_, n)| n.by_type.to_vec())
                .unwrap_or_default();
            let mut by_type = Vec::with_capacity(en.by_type.len());
            for (t, e) in &en.by_type {
                let kept = existing.iter().find(|(et, _)| et == t).map(|(_, i)| *i);
                match (e, kept) {
                    (Enc::NxDomain, Some(i)) => by_type.push((*t, i)),
                    _ => by_type.push((*t, index(seg, zi, e))),
                }
            }
            let other = index(seg, zi, &en.other);
            let node = Node {
                zone: zi as u32,
                by_type: by_type.into(),
                other,
                wildcard: NO_WILDCARD,
            };
            match seg.names.find_mut(hash, |(k, _)| k == name) {
                Some(slot) => slot.1 = node,
                None => {
                    seg.names
                        .insert_unique(hash, (name.clone(), node), |(k, _)| name_hash(k.wire()));
                }
            }
        }
        for ((name, wild), en) in enc {
            if !*wild {
                continue;
            }
            let (Some(zi), Some(parent)) = (zone_of(&self.zones, name), name.parent()) else {
                continue;
            };
            let by_type: Vec<(u16, u32)> = en
                .by_type
                .iter()
                .map(|(t, e)| (*t, index(seg, zi, e)))
                .collect();
            let other = index(seg, zi, &en.other);
            seg.wildcards.push(Wildcard {
                by_type: by_type.into(),
                other,
            });
            let idx = (seg.wildcards.len() - 1) as u32;
            let hash = name_hash(parent.wire());
            if let Some((_, node)) = seg.names.find_mut(hash, |(k, _)| *k == parent) {
                node.wildcard = idx;
            }
        }
    }
}

#[cfg(test)]
thread_local! {
    /// Tests only: `Some(false)` runs every [`par_map`] of this thread's builds serially,
    /// `Some(true)` on three threads or more whatever the size, so both can be compared.
    static PARALLEL: std::cell::Cell<Option<bool>> = const { std::cell::Cell::new(None) };
}

/// `f` over `items`, in order, on every core when there are at least `worth` of them
/// (a first build or a federation laid out again; small changes stay on the merger's thread).
fn par_map<T: Sync, R: Send>(items: &[T], worth: usize, f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
    #[cfg(test)]
    let (threads, worth) = match PARALLEL.get() {
        Some(false) => (1, worth),
        Some(true) => (threads.max(3), 2),
        None => (threads, worth),
    };
    if items.len() < worth || threads < 2 {
        return items.iter().map(f).collect();
    }
    let chunk = items.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let f = &f;
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|c| {
                scope.spawn(move || {
                    let out: Vec<R> = c.iter().map(f).collect();
                    encode::forget_names();
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    })
}

/// The node of encoded answers `enc`, its answers added to `seg`.
fn put_node(seg: &mut Segment, zone: u32, enc: &Encoded) -> Node {
    let first = seg.answers.len();
    let by_type = enc
        .by_type
        .iter()
        .map(|(t, r)| (*t, put(seg, first, r)))
        .collect();
    let other = put(seg, first, &enc.other);
    let wildcard = match &enc.below {
        Some(below) => {
            let (types, other) = &**below;
            let by_type = types
                .iter()
                .map(|(t, r)| (*t, put(seg, first, r)))
                .collect();
            let other = put(seg, first, other);
            seg.wildcards.push(Wildcard { by_type, other });
            (seg.wildcards.len() - 1) as u32
        }
        None => NO_WILDCARD,
    };
    Node {
        zone,
        by_type,
        other,
        wildcard,
    }
}

/// Adds `r`'s answers to `seg` and returns the reference a node stores. An answer the node
/// already holds (ANY shares the lowest type's) is stored once: the node's answers start at
/// `first`.
fn put(seg: &mut Segment, first: usize, r: &Ref) -> u32 {
    let mut push = |a: Option<&Answer>| match a {
        Some(a) => {
            let same = seg.answers[first..]
                .iter()
                .position(|b| Arc::ptr_eq(&a.bodies, &b.bodies) && a == b);
            match same {
                Some(i) => (first + i) as u32,
                None => {
                    seg.answers.push(a.clone());
                    (seg.answers.len() - 1) as u32
                }
            }
        }
        None => NODATA,
    };
    match r {
        Ref::NoData => NODATA,
        Ref::One(a) => push(Some(a)),
        Ref::Located {
            distinct,
            per_location,
        } => {
            let idx: Vec<u32> = distinct.iter().map(|a| push(a.as_ref())).collect();
            let start = seg.located.len();
            seg.located
                .extend(per_location.iter().map(|p| idx[*p as usize]));
            start as u32 | LOCATED
        }
    }
}

/// `node` of segment `old` as a node of `seg`: the answers it references move over (shared
/// bodies; `moved` maps an answer's index in `old` to its index in `seg`).
fn move_node(
    old: &Segment,
    seg: &mut Segment,
    moved: &mut [u32],
    node: &Node,
    locations: usize,
) -> Node {
    let mut one = |seg: &mut Segment, i: u32| -> u32 {
        match i {
            NODATA | NXDOMAIN | MISS_SOA => i,
            i => {
                let m = &mut moved[i as usize];
                if *m == u32::MAX {
                    seg.answers.push(old.answers[i as usize].clone());
                    *m = (seg.answers.len() - 1) as u32;
                }
                *m
            }
        }
    };
    let mut reference = |seg: &mut Segment, i: u32| -> u32 {
        if i & LOCATED == 0 {
            return one(seg, i);
        }
        let start = (i & !LOCATED) as usize;
        let at = seg.located.len();
        for l in 0..locations {
            let a = one(seg, old.located[start + l]);
            seg.located.push(a);
        }
        at as u32 | LOCATED
    };
    let mut typed = |seg: &mut Segment, by_type: &[(u16, u32)], other: u32| {
        let by_type: Box<[(u16, u32)]> = by_type
            .iter()
            .map(|&(t, i)| (t, reference(seg, i)))
            .collect();
        (by_type, reference(seg, other))
    };
    let (by_type, other) = typed(seg, &node.by_type, node.other);
    let wildcard = match old.wildcards.get(node.wildcard as usize) {
        Some(w) => {
            let (by_type, other) = typed(seg, &w.by_type, w.other);
            seg.wildcards.push(Wildcard { by_type, other });
            (seg.wildcards.len() - 1) as u32
        }
        None => NO_WILDCARD,
    };
    Node {
        zone: node.zone,
        by_type,
        other,
        wildcard,
    }
}

/// What encoding reads: every name's state, the zones, the zone cuts and the zone files' own
/// records (a cut's NS and its glue come from the zone file whoever else gives the name data).
#[derive(Clone, Copy)]
struct View<'a> {
    names: &'a Names,
    zones: &'a [ZoneData],
    cuts: &'a FxHashSet<DnsName>,
    zone_file: &'a FxHashMap<DnsName, NodeData>,
    /// Per zone: its signing keys (DNSSEC), if signed.
    keys: &'a [Option<Arc<ZoneKeys>>],
}

fn is_wildcard(name: &DnsName) -> bool {
    name.wire().starts_with(b"\x01*")
}

impl<'a> View<'a> {
    fn data(&self, name: &DnsName) -> Option<&'a NodeData> {
        let st = self.names.get(name.wire())?;
        Some(self.names.data(name.wire(), st))
    }

    /// The keys that sign `name`'s RRsets, if its zone is signed.
    fn keys_for(&self, name: &DnsName) -> Option<&'a ZoneKeys> {
        self.keys.get(zone_of(self.zones, name)?)?.as_deref()
    }

    /// The highest zone cut at or above `name` in its zone (`None`: `name` is authoritative).
    fn delegation(&self, name: &DnsName) -> Option<DnsName> {
        if self.cuts.is_empty() {
            return None;
        }
        let origin_len = self.zones[zone_of(self.zones, name)?].origin.wire().len();
        let mut cut = None;
        let mut cur = name.clone();
        while cur.wire().len() > origin_len {
            if self.cuts.contains(&cur) {
                cut = Some(cur.clone());
            }
            cur = cur.parent()?;
        }
        cut
    }

    /// Where a name that does not exist gets its records: the `*` child of its closest
    /// encloser (RFC 4592 §3.3.1), noting in `reads` every name whose appearance would change
    /// that (the names between, and the wildcard).
    fn wildcard_for(&self, name: &DnsName, reads: &mut Vec<DnsName>) -> Option<DnsName> {
        let mut cur = name.parent()?;
        loop {
            if !reads.contains(&cur) {
                reads.push(cur.clone());
            }
            if self.names.get(cur.wire()).is_some() {
                let wild = cur.prepend("*").ok()?;
                if !reads.contains(&wild) {
                    reads.push(wild.clone());
                }
                return self.names.get(wild.wire()).is_some().then_some(wild);
            }
            zone_of(self.zones, &cur)?;
            cur = cur.parent()?;
        }
    }

    /// A and AAAA RRsets (at `loc`) of the in-zone targets of `rr` (NS, MX, SRV) whose answer
    /// is the same for every client, for the additional section.
    fn target_addresses(
        &self,
        rr: &RRset,
        loc: usize,
        reads: &mut Vec<DnsName>,
    ) -> Vec<(DnsName, &'a RRset)> {
        let mut out = Vec::new();
        for d in &rr.rdatas {
            let target = match d {
                RData::Ns(t) | RData::Mx { exchange: t, .. } | RData::Srv { target: t, .. } => t,
                _ => continue,
            };
            // Read even when not used: a cut above it may go, and then its addresses count.
            if !reads.contains(target) {
                reads.push(target.clone());
            }
            if zone_of(self.zones, target).is_none() || self.delegation(target).is_some() {
                continue;
            }
            let Some(node) = self.data(target) else {
                continue;
            };
            if !node.by_location.is_empty() {
                // A target that answers per client location (a global name under `geo`) is
                // left to the client to ask: its addresses here would make every SRV answer
                // per-location (10 × 10k services: build 66 ms instead of 24, +50 MB).
                continue;
            }
            for t in [rtype::A, rtype::AAAA] {
                if let Some(set) = node.get(loc, t)
                    && !out
                        .iter()
                        .any(|(n, s): &(DnsName, &RRset)| n == target && s.rtype == t)
                {
                    out.push((target.clone(), set));
                }
            }
        }
        out
    }
}

/// Follows `qname`'s CNAME chain for `qtype` at client location `loc`, noting in `reads` every
/// other name it looked at. A name that does not exist takes its records from a wildcard; a
/// chain that enters a delegation stops there (the resolver follows the referral).
fn resolve<'a>(
    view: View<'a>,
    qname: &DnsName,
    qtype: u16,
    loc: usize,
    reads: &mut Vec<DnsName>,
) -> Resolved<'a> {
    let mut out = Resolved {
        rcode: rcode::NOERROR,
        answer: Vec::new(),
        additional: Vec::new(),
        soa_zone: None,
        end: None,
        located: false,
    };
    let mut cur = qname.clone();
    for _ in 0..MAX_CHAIN {
        if cur != *qname && !reads.contains(&cur) {
            reads.push(cur.clone());
        }
        let Some(zi) = zone_of(view.zones, &cur) else {
            return out;
        };
        if cur != *qname && view.delegation(&cur).is_some() {
            return out;
        }
        let node = match view.data(&cur) {
            Some(n) => n,
            None => match view.wildcard_for(&cur, reads).and_then(|w| view.data(&w)) {
                Some(n) => n,
                None => {
                    out.rcode = rcode::NXDOMAIN;
                    out.soa_zone = Some(zi);
                    out.end = Some((cur, Vec::new(), false));
                    return out;
                }
            },
        };
        out.located |= !node.by_location.is_empty();
        let here = node.at(loc);
        if qtype == rtype::ANY && !here.is_empty() {
            // RFC 8482 §4.1: one RRset answers ANY (the lowest type; a CNAME if that is all).
            let pick = here
                .iter()
                .filter(|r| r.rtype != rtype::SOA || here.len() == 1)
                .min_by_key(|r| r.rtype)
                .unwrap_or(&here[0]);
            out.answer.push((cur.clone(), pick));
            return out;
        }
        if let Some(rr) = node.get(loc, qtype) {
            out.answer.push((cur.clone(), rr));
            if matches!(qtype, rtype::NS | rtype::MX | rtype::SRV) {
                out.additional = view.target_addresses(rr, loc, reads);
            }
            return out;
        }
        match node.get(loc, rtype::CNAME) {
            Some(rr) => {
                out.answer.push((cur.clone(), rr));
                let RData::Cname(target) = &rr.rdatas[0] else {
                    unreachable!()
                };
                cur = target.clone();
            }
            None => {
                out.soa_zone = Some(zi);
                out.end = Some((cur, here.iter().map(|r| r.rtype).collect(), true));
                return out;
            }
        }
    }
    out // chain too long: what we have, as BIND and Knot do
}

/// The answers of one name for every query type it has data for (ANY included), what names
/// below it that do not exist answer, and the other names they read.
fn encode_name(
    view: View<'_>,
    name: &DnsName,
    st: &NameState,
    locations: usize,
) -> (Encoded, Vec<DnsName>) {
    let mut reads = Vec::new();
    if let Some(cut) = view.delegation(name) {
        let referral = referral(view, &cut, &mut reads);
        // The DS RRset lives in the parent zone (RFC 4035 §2.4): at the cut it is ours.
        let mut by_type = Typed::new();
        if cut == *name {
            let ds = resolve(view, name, rtype::DS, 0, &mut reads);
            by_type.push((rtype::DS, single(view, name, rtype::DS, &ds, false)));
        }
        let encoded = Encoded {
            by_type,
            other: referral.clone(),
            below: Some(Box::new((Typed::new(), referral))),
        };
        return (encoded, reads);
    }
    let data = view.names.data(name.wire(), st);
    let (by_type, other) = answers_of(view, name, data, locations, false, &mut reads);
    let mut below = None;
    if let Ok(wild) = name.prepend("*")
        && let Some(w) = view.names.get(wild.wire())
    {
        below = Some(Box::new(answers_of(
            view,
            &wild,
            view.names.data(wild.wire(), w),
            locations,
            true,
            &mut reads,
        )));
    }
    let encoded = Encoded {
        by_type,
        other,
        below,
    };
    (encoded, reads)
}

/// The referral of the delegation at `cut` (RFC 1034 §4.3.2 step 3b): its NS RRset in
/// authority, not authoritative, and the addresses of its name servers that are below the cut
/// (glue, from the zone file) or elsewhere in our zones.
fn referral(view: View<'_>, cut: &DnsName, reads: &mut Vec<DnsName>) -> Ref {
    let Some(ns) = view.zone_file.get(cut).and_then(|d| d.get(0, rtype::NS)) else {
        return Ref::NoData;
    };
    let authority: Vec<Record> = first_records(cut, ns).collect();
    let mut glue = Vec::new();
    for d in &ns.rdatas {
        let RData::Ns(target) = d else { continue };
        let node = if target.is_within(cut) {
            view.zone_file.get(target)
        } else if zone_of(view.zones, target).is_some() && view.delegation(target).is_none() {
            view.data(target)
        } else {
            None
        };
        if !reads.contains(target) {
            reads.push(target.clone());
        }
        for set in node.into_iter().flat_map(|n| n.at(0)) {
            if set.rtype == rtype::A || set.rtype == rtype::AAAA {
                glue.extend(first_records(target, set));
            }
        }
    }
    if !reads.contains(cut) {
        reads.push(cut.clone());
    }
    let unsigned = encode::detached_referral(&authority, &glue);
    // Signed parent: the DS RRset and its RRSIG, or the NSEC proving there is none (an
    // insecure delegation). The NS RRset and glue are never signed (RFC 4035 §2.2).
    let bodies: Arc<[Body]> = match view.keys_for(cut) {
        Some(_) => {
            let mut sigs = Signatures::default();
            let mut signed = authority.clone();
            let cut_data = view.zone_file.get(cut);
            match cut_data.and_then(|d| d.get(0, rtype::DS)) {
                Some(ds) => {
                    let records: Vec<Record> = first_records(cut, ds).collect();
                    let rrsig = sigs.of(view, cut, rtype::DS, &records);
                    signed.extend(records);
                    signed.extend(rrsig);
                }
                None => {
                    let types: Vec<u16> = cut_data
                        .map(|d| d.at(0).iter().map(|r| r.rtype).collect())
                        .unwrap_or_default();
                    let z = &view.zones[zone_of(view.zones, cut).expect("cuts are in zones")];
                    signed.extend(sigs.nsec(view, z, cut, &types, true));
                }
            }
            Arc::new([unsigned, encode::detached_referral(&signed, &glue)])
        }
        None => Arc::new([unsigned]),
    };
    Ref::One(Answer {
        online: Online::None,
        authoritative: false,
        rcode: rcode::NOERROR,
        signed: bodies.len() == 2,
        soa_tail: NO_TAIL,
        bodies,
    })
}

/// The records of `rr`'s first answer, owned by `owner` (all of a static RRset).
fn first_records<'r>(owner: &'r DnsName, rr: &'r RRset) -> impl Iterator<Item = Record> + 'r {
    rr.variant(0, 1).into_iter().map(move |data| Record {
        name: owner.clone(),
        ttl: rr.ttl,
        data,
    })
}

/// Every query type's answer at `name` (whose served records are `node`) and the answer of any
/// other type. `wildcard`: `name` is a `*` name whose answers are synthesized for names below
/// its parent, so they are encoded to follow any question.
fn answers_of(
    view: View<'_>,
    name: &DnsName,
    node: &NodeData,
    locations: usize,
    wildcard: bool,
    reads: &mut Vec<DnsName>,
) -> TypedRefs {
    let all_sets = || node.rrsets.iter().chain(node.by_location.iter().flatten());
    let mut qtypes: BTreeSet<u16> = all_sets().map(|r| r.rtype).collect();
    let is_alias = node.get(0, rtype::CNAME).is_some();
    if is_alias {
        // The chain's end decides which types have data (at any location).
        for loc in 0..locations {
            let end = resolve(view, name, 0, loc, reads);
            if let Some((_, last)) = end.answer.last()
                && let RData::Cname(target) = &last.rdatas[0]
                && let Some(n) = view
                    .data(target)
                    .or_else(|| view.wildcard_for(target, reads).and_then(|w| view.data(&w)))
            {
                qtypes.extend(
                    n.rrsets
                        .iter()
                        .chain(n.by_location.iter().flatten())
                        .map(|r| r.rtype),
                );
            }
            if !end.located {
                break;
            }
        }
    }
    let answer_ref = |t: u16, reads: &mut Vec<DnsName>| -> Ref {
        let first = resolve(view, name, t, 0, reads);
        if !first.located || locations <= 1 {
            return single(view, name, t, &first, wildcard);
        }
        let mut first = Some(first);
        let mut seen: Vec<Resolved<'_>> = Vec::new();
        let mut per_location = Vec::with_capacity(locations);
        for loc in 0..locations {
            // Location 0 was resolved above.
            let res = first
                .take()
                .unwrap_or_else(|| resolve(view, name, t, loc, reads));
            let i = match seen.iter().position(|r| *r == res) {
                Some(i) => i,
                None => {
                    seen.push(res);
                    seen.len() - 1
                }
            };
            per_location.push(i as u32);
        }
        if let [only] = seen.as_slice() {
            // Every location gets the same answer for this type (the node differs per location
            // in another family): valid for everyone, so ECS scope 0.
            return single(view, name, t, only, wildcard);
        }
        Ref::Located {
            distinct: seen
                .iter()
                .map(|r| match single(view, name, t, r, wildcard) {
                    Ref::One(a) => Some(a),
                    _ => None,
                })
                .collect(),
            per_location: per_location.into(),
        }
    };
    let mut by_type = Typed::with_capacity(qtypes.len() + 1);
    for &t in &qtypes {
        by_type.push((t, answer_ref(t, reads)));
    }
    if all_sets().next().is_some() {
        // ANY gets one RRset (RFC 8482): the lowest type's answer, shared, unless the chain
        // of an alias decides.
        let any = match by_type.iter().find(|(t, _)| *t != rtype::SOA) {
            Some((_, r)) if !is_alias && node.by_location.is_empty() => r.clone(),
            _ => answer_ref(rtype::ANY, reads),
        };
        let at = by_type.partition_point(|(t, _)| *t < rtype::ANY);
        by_type.insert(at, (rtype::ANY, any));
    }
    // A signed zone's NODATA names the name (its NSEC), so it is the name's own answer.
    let other = if is_alias || view.keys_for(name).is_some() {
        answer_ref(0, reads)
    } else {
        Ref::NoData
    };
    (by_type, other)
}

/// One resolved answer: the name's zone's NODATA, or encoded with its rotations (the SOA of a
/// negative ending follows as the zone's tail). `wildcard`: encoded to follow any question.
/// In a signed zone each rotation is encoded a second time with the RRSIG of every RRset and,
/// for a negative ending, the NSEC of the name the chain ended at (compact denial, RFC 9824).
fn single(view: View<'_>, qname: &DnsName, qtype: u16, res: &Resolved<'_>, wildcard: bool) -> Ref {
    if wildcard && let Some(keys) = view.keys_for(qname) {
        return signed_wildcard(view, keys, qname, res);
    }
    let keys = view.keys_for(qname);
    if keys.is_none()
        && res.answer.is_empty()
        && res.rcode == rcode::NOERROR
        && res.soa_zone.is_some()
    {
        return Ref::NoData;
    }
    let rotations = rotations_of(res);
    let additional = additional_records(view, res, None);
    let mut bodies = Vec::with_capacity(rotations * (1 + keys.is_some() as usize));
    let mut signed = Vec::new();
    let mut signatures = Signatures::default();
    let signed_additional = keys.map(|_| additional_records(view, res, Some(&mut signatures)));
    for v in 0..rotations {
        let mut records = Vec::new();
        let mut with_sigs = Vec::new();
        for (owner, rr) in &res.answer {
            let datas = rr.variant(v, rotations);
            let start = records.len();
            records.extend(datas.into_iter().map(|data| Record {
                name: owner.clone(),
                ttl: rr.ttl,
                data,
            }));
            if keys.is_some() {
                with_sigs.extend_from_slice(&records[start..]);
                with_sigs.extend(signatures.of(view, owner, rr.rtype, &records[start..]));
            }
        }
        bodies.push(if wildcard {
            encode::owner_relative(qname, &records, &additional, MAX_BODY, true).0
        } else {
            encode::compressed_full(qname, qtype, &records, &[], &additional, true)
        });
        if keys.is_some() {
            let denial = denial_records(view, res, &mut signatures);
            signed.push(encode::compressed_full(
                qname,
                qtype,
                &with_sigs,
                &denial,
                signed_additional.as_deref().unwrap_or_default(),
                true,
            ));
        }
    }
    let is_signed = !signed.is_empty();
    bodies.append(&mut signed);
    Ref::One(Answer {
        online: Online::None,
        authoritative: true,
        rcode: res.rcode,
        signed: is_signed,
        soa_tail: res.soa_zone.map_or(NO_TAIL, |z| z as u32),
        bodies: bodies.into(),
    })
}

/// [`single`] for a wildcard `wild` of a signed zone (encoded to follow any question). Its own
/// RRset names the question, which compact denial treats as existing (RFC 9824 §3.4 signs
/// synthesized answers as if the name existed): the signed body carries that RRset's RRSIG
/// with its Labels and signature left for the query path to make ([`Online::Rrsig`]), or, at
/// NODATA, the NSEC type bitmap the query path's denial of the question carries
/// ([`Online::Nodata`]). The rest of a chain is signed here.
fn signed_wildcard(view: View<'_>, keys: &ZoneKeys, wild: &DnsName, res: &Resolved<'_>) -> Ref {
    let zone = zone_of(view.zones, wild).unwrap_or(0) as u32;
    let rotations = rotations_of(res);
    let additional = additional_records(view, res, None);
    let nodata_here = res.answer.is_empty() && res.end.as_ref().is_some_and(|(e, ..)| e == wild);
    let online = if nodata_here {
        Online::Nodata
    } else {
        Online::Rrsig
    };
    let mut signatures = Signatures::default();
    let signed_additional = additional_records(view, res, Some(&mut signatures));
    let denial = if nodata_here {
        Vec::new()
    } else {
        denial_records(view, res, &mut signatures)
    };
    let mut bodies = Vec::with_capacity(3 * rotations);
    let mut signed = Vec::with_capacity(rotations);
    let mut data = Vec::with_capacity(rotations);
    for v in 0..rotations {
        let mut records = Vec::new();
        let mut with_sigs = Vec::new();
        // Where the question's RRSIG sits in `with_sigs`, and its records without owner.
        let mut template: Option<(usize, Vec<u8>)> = None;
        for (owner, rr) in &res.answer {
            let datas = rr.variant(v, rotations);
            let start = records.len();
            records.extend(datas.iter().cloned().map(|data| Record {
                name: owner.clone(),
                ttl: rr.ttl,
                data,
            }));
            with_sigs.extend_from_slice(&records[start..]);
            if owner == wild && template.is_none() {
                // Too large ones are refused with the zone (`conflicts`); should one get
                // here, the query path answers SERVFAIL rather than a bogus RRSIG.
                let (ownerless, _) = dnssec::ownerless_records(
                    rr.rtype,
                    rr.ttl,
                    &dnssec::canonical_set(&datas),
                    255,
                );
                template = Some((with_sigs.len(), ownerless));
                with_sigs.push(Record {
                    name: wild.clone(),
                    ttl: rr.ttl,
                    data: keys.rrsig_template(rr.rtype, rr.ttl),
                });
            } else {
                with_sigs.extend(signatures.of(view, owner, rr.rtype, &records[start..]));
            }
        }
        bodies.push(encode::owner_relative(wild, &records, &additional, MAX_BODY, true).0);
        let (body, _, starts) = encode::owner_relative_sections(
            wild,
            [&with_sigs, &denial, &signed_additional],
            MAX_BODY,
            true,
        );
        let mut d = zone.to_be_bytes().to_vec();
        match &template {
            Some((i, ownerless)) if starts.len() > *i => {
                // Owner pointer (2), type, class, TTL, RDATA length (10).
                d.extend_from_slice(&((starts[*i] + 12) as u16).to_be_bytes());
                d.extend_from_slice(ownerless);
            }
            Some(_) => {
                // The RRSIG did not fit the body: nothing the query path could sign, so
                // DO=1 gets SERVFAIL rather than a bogus answer.
            }
            None => {
                let types = res.end.as_ref().map_or(&[][..], |(_, t, _)| t.as_slice());
                d.extend_from_slice(&dnssec::nsec_bitmap(types, true));
            }
        }
        signed.push(body);
        data.push(Body::new(0, 0, 0, d.into()));
    }
    bodies.append(&mut signed);
    bodies.append(&mut data);
    Ref::One(Answer {
        authoritative: true,
        rcode: res.rcode,
        signed: true,
        online,
        soa_tail: res.soa_zone.map_or(NO_TAIL, |z| z as u32),
        bodies: bodies.into(),
    })
}

/// Rotations an answer needs: the most any of its RRsets has (at least one).
fn rotations_of(res: &Resolved<'_>) -> usize {
    res.answer
        .iter()
        .map(|(_, rr)| rr.variants())
        .max()
        .unwrap_or(1)
        .max(1)
}

/// The additional section of `res`: its target addresses, which do not rotate with the answer
/// (their first answer, in every rotation), each RRset followed by its RRSIG when `sigs` is
/// given (a validating resolver drops unsigned additional data of a signed zone and asks).
fn additional_records(
    view: View<'_>,
    res: &Resolved<'_>,
    mut sigs: Option<&mut Signatures>,
) -> Vec<Record> {
    let mut out = Vec::new();
    for (owner, rr) in &res.additional {
        let start = out.len();
        out.extend(first_records(owner, rr));
        if let Some(s) = sigs.as_deref_mut() {
            let these = s.of(view, owner, rr.rtype, &out[start..]);
            out.extend(these);
        }
    }
    out
}

/// TTL of DNSKEY, CDS and CDNSKEY.
const DNSKEY_TTL: u32 = 3600;

/// An RRset as signed: owner, type and its canonical RDATA, sorted.
type SignedSet = (DnsName, u16, Vec<Vec<u8>>);

/// RRSIGs made while encoding one answer: its rotations repeat the same RRsets (in another
/// order, or the same subset), and an RRSIG covers the set, so each distinct set is signed once.
#[derive(Default)]
struct Signatures {
    made: Vec<(SignedSet, Vec<Record>)>,
}

impl Signatures {
    /// The RRSIGs of the RRset `records` (all owned by `owner`, of type `rtype`), signed by
    /// `owner`'s zone; none if that zone is not signed.
    fn of(
        &mut self,
        view: View<'_>,
        owner: &DnsName,
        rtype: u16,
        records: &[Record],
    ) -> Vec<Record> {
        let Some(keys) = view.keys_for(owner) else {
            return Vec::new();
        };
        let datas: Vec<RData> = records.iter().map(|r| r.data.clone()).collect();
        let key = (owner.clone(), rtype, dnssec::canonical_set(&datas));
        if let Some((_, sigs)) = self.made.iter().find(|(k, _)| *k == key) {
            return sigs.clone();
        }
        let ttl = records.first().map_or(0, |r| r.ttl);
        let sigs = keys
            .sign_canonical(owner, rtype, ttl, &key.2)
            .unwrap_or_default();
        self.made.push((key, sigs.clone()));
        sigs
    }

    /// The NSEC of `name` in zone `z` (RFC 9824 form: `types`, or NXNAME when it does not
    /// exist) followed by its RRSIG.
    fn nsec(
        &mut self,
        view: View<'_>,
        z: &ZoneData,
        name: &DnsName,
        types: &[u16],
        exists: bool,
    ) -> Vec<Record> {
        let nsec = Record {
            name: name.clone(),
            ttl: z.negative_ttl(),
            data: dnssec::nsec_rdata(name, types, exists),
        };
        let mut out = self.of(view, name, dnssec::TYPE_NSEC, std::slice::from_ref(&nsec));
        out.insert(0, nsec);
        out
    }
}

/// The authority records a signed negative ending needs besides the SOA: the NSEC of the name
/// the chain ended at (its types, or NXNAME when it does not exist) and its RRSIG.
fn denial_records(view: View<'_>, res: &Resolved<'_>, sigs: &mut Signatures) -> Vec<Record> {
    let Some((end, types, exists)) = &res.end else {
        return Vec::new();
    };
    let Some(zi) = res.soa_zone else {
        return Vec::new();
    };
    sigs.nsec(view, &view.zones[zi], end, types, *exists)
}

/// A zone's answers that carry the serial (`zi`: its index; `keys`: its keys, if signed).
fn zone_info(
    z: &ZoneData,
    zi: usize,
    serial: u32,
    etcd_zone: bool,
    keys: Option<&Arc<ZoneKeys>>,
) -> ZoneInfo {
    let soa = Soa {
        serial,
        ..z.soa.clone()
    };
    let negative_ttl = z.negative_ttl();
    let negative = Record {
        name: z.origin.clone(),
        ttl: negative_ttl,
        data: RData::Soa(Box::new(soa.clone())),
    };
    // Negative answers do not mention the question name, so one position-independent body per
    // zone serves every NODATA and NXDOMAIN in it.
    let body = encode::detached(std::slice::from_ref(&negative));
    let soa_tail = body.wire.clone();
    let mut signed_soa_tail: Box<[u8]> = Box::new([]);
    if let Some(k) = keys {
        let mut records = vec![negative.clone()];
        records.extend(
            k.sign_rrset(
                &z.origin,
                rtype::SOA,
                negative_ttl,
                std::slice::from_ref(&negative.data),
            )
            .unwrap_or_default(),
        );
        signed_soa_tail = encode::detached(&records).wire;
    }
    ZoneInfo {
        origin: z.origin.clone(),
        // Signed: the SOA follows as the tail (with its RRSIG for DO=1), and the query path
        // appends the signed NSEC of the question (`Table::online_denial`).
        nxdomain: match keys {
            Some(_) => Answer {
                online: Online::None,
                authoritative: true,
                rcode: rcode::NXDOMAIN,
                signed: true,
                soa_tail: zi as u32,
                bodies: Arc::new([Body::empty(), Body::empty()]),
            },
            None => Answer {
                online: Online::None,
                authoritative: true,
                rcode: rcode::NXDOMAIN,
                signed: false,
                soa_tail: NO_TAIL,
                bodies: Arc::new([body.clone()]),
            },
        },
        nodata: Answer {
            online: Online::None,
            authoritative: true,
            signed: false,
            rcode: rcode::NOERROR,
            soa_tail: NO_TAIL,
            bodies: Arc::new([body]),
        },
        // The SOA record CoreDNS puts in the answer to an SOA question.
        miss_soa: etcd_zone.then(|| Answer {
            online: Online::None,
            authoritative: true,
            signed: false,
            rcode: rcode::NOERROR,
            soa_tail: NO_TAIL,
            bodies: Arc::new([encode::detached_answer(&[Record {
                name: z.origin.clone(),
                ttl: z.soa_ttl.min(300),
                data: RData::Soa(Box::new(soa)),
            }])]),
        }),
        soa_tail,
        signed_soa_tail,
        keys: keys.cloned(),
        negative_ttl,
    }
}

/// Largest answer body kept: a TCP message is at most 65535 bytes with header and question.
const MAX_BODY: usize = 65535 - 12 - 260 - 11;

fn encode_etcd_name(na: &skydns::NameAnswers, wild: bool, cut: &mut usize) -> EncName {
    let enc = |qtype: u16, o: &Outcome, cut: &mut usize| -> Enc {
        match o {
            Outcome::NoData => Enc::NoData,
            Outcome::NxDomain => Enc::NxDomain,
            Outcome::ServFail => Enc::ServFail,
            Outcome::Soa => Enc::Soa,
            Outcome::Answer { answer, additional } => {
                let (body, left_out) = if wild {
                    encode::owner_relative(&na.name, answer, additional, MAX_BODY, false)
                } else {
                    encode::bounded(&na.name, qtype, answer, additional, MAX_BODY)
                };
                if left_out > 0 {
                    *cut += 1;
                }
                Enc::Body(Answer {
                    online: Online::None,
                    authoritative: true,
                    signed: false,
                    rcode: rcode::NOERROR,
                    soa_tail: NO_TAIL,
                    bodies: Arc::new([body]),
                })
            }
        }
    };
    EncName {
        by_type: na
            .by_type
            .iter()
            .map(|(t, o)| (*t, enc(*t, o, cut)))
            .collect(),
        // ANY: CoreDNS's etcd plugin has no ANY; it does the fake A lookup of other types.
        other: enc(0, &na.other, cut),
    }
}

fn synthesized_soa(origin: &DnsName, ns_label: &str, refresh: u32, retry: u32) -> ZoneData {
    let host = |l: &str| origin.prepend(l).unwrap_or_else(|_| origin.clone());
    ZoneData {
        origin: origin.clone(),
        soa: Soa {
            mname: host(ns_label),
            rname: host("hostmaster"),
            serial: 1,
            refresh,
            retry,
            expire: 86400,
            minimum: 30,
        },
        soa_ttl: 30,
    }
}
