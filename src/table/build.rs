//! Builds an immutable [`Table`] from source snapshots: static zones plus federations.
//!
//! The builder is a pure function of its input (snapshots, serial, generation), so it can be
//! tested without sockets and run by the merger off the query path. It lays out the federated
//! names of DESIGN §1, overlays them on the zone files' records, adds empty non-terminals,
//! resolves in-zone CNAME chains, and encodes every answer (with its rotations) to wire format.

use std::collections::{BTreeSet, HashMap};

use rustc_hash::FxHashMap;

use super::{Answer, Body, LOCATED, NO_WILDCARD, Node, Table, Wildcard, ZoneInfo, rcode};
use crate::dns::encode;
use crate::geo::Locator;
use crate::model::{DnsName, Federation, RData, Record, Service, Soa, StaticZone, rtype};
use crate::selection::{self, AddressSet, Choice};
use crate::sources::etcd::skydns::{self, EtcdData, Outcome};

/// Most rotations precomputed per answer; larger sets rotate through evenly spread offsets.
const MAX_ROTATIONS: usize = 64;
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
}

pub struct Built {
    pub table: Table,
    /// Things an operator should know (overridden names, synthesized SOAs…).
    pub warnings: Vec<String>,
}

#[derive(Clone, Debug, PartialEq)]
struct RRset {
    rtype: u16,
    ttl: u32,
    rdatas: Vec<RData>,
    rotation: Rotation,
}

/// How the records of an RRset are spread over the answers the query path rotates through.
#[derive(Clone, Debug, PartialEq)]
enum Rotation {
    /// Static data: served as written, every record every time.
    Fixed,
    /// Dynamic address sets: at most `cap` records, rotated between queries.
    Rotate { cap: usize },
    /// `weighted` policy: one group per answer, groups in proportion to their weights.
    Weighted {
        groups: Vec<(u32, Vec<RData>)>,
        cap: usize,
    },
}

impl RRset {
    fn fixed(rtype: u16, ttl: u32, rdatas: Vec<RData>) -> Self {
        RRset {
            rtype,
            ttl,
            rdatas,
            rotation: Rotation::Fixed,
        }
    }

    /// How many distinct answers this RRset rotates through.
    fn variants(&self) -> usize {
        match &self.rotation {
            Rotation::Fixed => 1,
            Rotation::Rotate { .. } => self.rdatas.len().clamp(1, MAX_ROTATIONS),
            Rotation::Weighted { groups, .. } => weighted_sequence(groups).len().max(1),
        }
    }

    /// The records of answer number `v` (of `of`).
    fn variant(&self, v: usize, of: usize) -> Vec<RData> {
        match &self.rotation {
            Rotation::Fixed => self.rdatas.clone(),
            Rotation::Rotate { cap } => {
                rotated(&self.rdatas, v * self.rdatas.len() / of.max(1), *cap)
            }
            Rotation::Weighted { groups, cap } => {
                let seq = weighted_sequence(groups);
                let v = v % seq.len().max(1);
                let (group, occurrence) = seq[v];
                rotated(&groups[group].1, occurrence, *cap)
            }
        }
    }
}

fn rotated(items: &[RData], start: usize, cap: usize) -> Vec<RData> {
    let n = items.len();
    (0..n.min(cap))
        .map(|k| items[(start + k) % n.max(1)].clone())
        .collect()
}

/// Smooth weighted round robin (as nginx does): which group serves each answer, and how many
/// times that group served before; interleaved so consecutive queries spread over the groups.
/// Weights are reduced to at most [`MAX_ROTATIONS`] answers in all.
fn weighted_sequence(groups: &[(u32, Vec<RData>)]) -> Vec<(usize, usize)> {
    let total: u64 = groups.iter().map(|(w, _)| *w as u64).sum();
    if total == 0 {
        return vec![];
    }
    let scale = |w: u32| -> i64 {
        if total as usize <= MAX_ROTATIONS {
            w as i64
        } else {
            ((w as u64 * MAX_ROTATIONS as u64) / total).max(1) as i64
        }
    };
    let weights: Vec<i64> = groups.iter().map(|(w, _)| scale(*w)).collect();
    let sum: i64 = weights.iter().sum();
    let mut current = vec![0i64; weights.len()];
    let mut served = vec![0usize; weights.len()];
    let mut seq = Vec::with_capacity(sum as usize);
    for _ in 0..sum {
        for (c, w) in current.iter_mut().zip(&weights) {
            *c += w;
        }
        let best = (0..current.len())
            .max_by_key(|&i| (current[i], std::cmp::Reverse(i)))
            .expect("groups not empty");
        current[best] -= sum;
        seq.push((best, served[best]));
        served[best] += 1;
    }
    seq
}

#[derive(Clone, Default, Debug, PartialEq)]
struct NodeData {
    rrsets: Vec<RRset>,
    /// When the node answers differently per client location: the RRsets of each location
    /// (index = location id; `rrsets` is then location 0's).
    by_location: Vec<Vec<RRset>>,
}

impl NodeData {
    fn at(&self, loc: usize) -> &[RRset] {
        if self.by_location.is_empty() {
            &self.rrsets
        } else {
            &self.by_location[loc]
        }
    }

    fn get(&self, loc: usize, t: u16) -> Option<&RRset> {
        self.at(loc).iter().find(|r| r.rtype == t)
    }
}

struct ZoneData {
    origin: DnsName,
    soa: Soa,
    soa_ttl: u32,
}

/// The outcome of resolving one question at build time.
#[derive(PartialEq)]
struct Resolved<'a> {
    rcode: u8,
    answer: Vec<(DnsName, &'a RRset)>,
    /// Zone whose SOA goes into the authority section (negative answers).
    soa_zone: Option<usize>,
    /// Some node on the way answers per client location.
    located: bool,
}

pub fn build(input: BuildInput<'_>) -> Built {
    let mut warnings = Vec::new();
    let mut zones: Vec<ZoneData> = Vec::new();
    let mut nodes: FxHashMap<DnsName, NodeData> = FxHashMap::default();
    let mut scratch = BuildCache::default();
    let cache = input.cache.unwrap_or(&mut scratch);
    let locations = input.locator.locations().len();
    if cache.locations != locations {
        cache.names.clear();
        cache.services.clear();
        cache.locations = locations;
    }

    for z in input.zones {
        let Some(soa_rec) = z
            .records
            .iter()
            .find(|r| r.name == z.origin && matches!(r.data, RData::Soa(_)))
        else {
            warnings.push(format!(
                "{}: zone {} has no SOA at its apex; skipped",
                z.file, z.origin
            ));
            continue;
        };
        let RData::Soa(soa) = &soa_rec.data else {
            unreachable!()
        };
        if let Some(i) = zones.iter().position(|d| d.origin == z.origin) {
            warnings.push(format!(
                "{}: zone {} is defined twice; the later file wins",
                z.file, z.origin
            ));
            zones.remove(i);
            nodes.retain(|n, _| !n.is_within(&z.origin));
        }
        zones.push(ZoneData {
            origin: z.origin.clone(),
            soa: soa.clone(),
            soa_ttl: soa_rec.ttl,
        });
        add_static(&mut nodes, &z.records);
    }

    for fed in input.federations {
        if !zones.iter().any(|z| z.origin == fed.zone) {
            warnings.push(format!(
                "federation {}: no zone file for {}; serving it with a synthesized SOA",
                fed.name, fed.zone
            ));
            zones.push(synthesized_zone(&fed.zone));
        }
        // Ingress hosts outside every served zone are someone else's names: skipped quietly.
        let served = |n: &DnsName| zones.iter().any(|z| n.is_within(&z.origin));
        let memo = cache.services.entry(fed.name.clone()).or_default();
        let laid_out = federation_nodes(fed, input.locator, &served, Some(memo));
        nodes.reserve(laid_out.len());
        for (name, data) in laid_out {
            match nodes.entry(name) {
                std::collections::hash_map::Entry::Occupied(mut e) => {
                    warnings.push(format!(
                        "federation {}: {} overrides the zone file's records",
                        fed.name,
                        e.key()
                    ));
                    e.insert(data);
                }
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(data);
                }
            }
        }
    }

    // etcd zones without a zone file get the SOA CoreDNS synthesizes (plugin.SOA): ns.dns.ZONE,
    // hostmaster.ZONE, refresh 7200, retry 1800, expire 86400, minimum 30, TTL 30.
    let mut etcd_zone_ids: Vec<DnsName> = Vec::new();
    for data in input.etcd {
        for z in &data.zones {
            if !zones.iter().any(|d| d.origin == *z) {
                zones.push(coredns_zone(z));
            }
            etcd_zone_ids.push(z.clone());
        }
    }

    // The SOA serial is the table's: it grows with every publish.
    for z in &mut zones {
        z.soa.serial = input.serial;
        let apex = nodes.entry(z.origin.clone()).or_default();
        apex.rrsets.retain(|r| r.rtype != rtype::SOA);
        apex.rrsets.push(RRset::fixed(
            rtype::SOA,
            z.soa_ttl,
            vec![RData::Soa(z.soa.clone())],
        ));
    }

    // Which zone each name belongs to (longest origin), and empty non-terminals up to the apex.
    let zone_of = |name: &DnsName| -> Option<usize> {
        zones
            .iter()
            .enumerate()
            .filter(|(_, z)| name.is_within(&z.origin))
            .max_by_key(|(_, z)| z.origin.wire().len())
            .map(|(i, _)| i)
    };
    let mut outside = Vec::new();
    let mut ents: rustc_hash::FxHashSet<DnsName> = Default::default();
    for name in nodes.keys() {
        let Some(zi) = zone_of(name) else {
            outside.push(name.clone());
            continue;
        };
        let origin_len = zones[zi].origin.wire().len();
        let wire = name.wire();
        let mut pos = 0;
        while wire.len() - pos > origin_len {
            pos += wire[pos] as usize + 1;
            let parent = &wire[pos..];
            // A known ancestor's own ancestors are handled when it is visited: stop there, so
            // the thousands of names under one empty non-terminal climb it once.
            if nodes.contains_key(parent) || ents.contains(parent) {
                break;
            }
            ents.insert(DnsName::from_wire_lowercase(parent));
        }
    }
    for name in outside {
        warnings.push(format!("{name} is outside every served zone; ignored"));
        nodes.remove(&name);
    }
    for name in ents {
        nodes.entry(name).or_default();
    }

    let record_count = nodes
        .values()
        .flat_map(|n| &n.rrsets)
        .map(|r| r.rdatas.len())
        .sum();
    let mut table = Table {
        names: FxHashMap::default(),
        answers: Vec::new(),
        located: Vec::new(),
        zones: Vec::new(),
        wildcards: Vec::new(),
        axfr: FxHashMap::default(),
        ready: true,
        generation: input.generation,
        serial: input.serial,
        record_count,
        name_count: nodes.len(),
    };

    let soa_record = |zi: usize| -> Record {
        let z = &zones[zi];
        // RFC 2308 §3: the negative TTL is the lesser of the SOA's TTL and its MINIMUM field.
        Record {
            name: z.origin.clone(),
            ttl: z.soa_ttl.min(z.soa.minimum),
            data: RData::Soa(z.soa.clone()),
        }
    };
    // Negative answers do not mention the question name, so one position-independent body per
    // zone serves every NODATA and NXDOMAIN in it.
    let mut nodata_of = Vec::new();
    for (zi, zone) in zones.iter().enumerate() {
        let soa = soa_record(zi);
        let body = encode::detached(&[soa]);
        table.answers.push(Answer {
            rcode: rcode::NXDOMAIN,
            bodies: std::sync::Arc::new([body.clone()]),
        });
        let nxdomain = (table.answers.len() - 1) as u32;
        let miss_soa = etcd_zone_ids.contains(&zone.origin).then(|| {
            table.answers.push(Answer {
                rcode: rcode::NOERROR,
                bodies: std::sync::Arc::new([encode::detached_answer(&[coredns_soa_answer(zone)])]),
            });
            (table.answers.len() - 1) as u32
        });
        table.zones.push(ZoneInfo { nxdomain, miss_soa });
        table.answers.push(Answer {
            rcode: rcode::NOERROR,
            bodies: std::sync::Arc::new([body]),
        });
        nodata_of.push((table.answers.len() - 1) as u32);
    }

    let resolve = |qname: &DnsName, qtype: u16, loc: usize| -> Resolved<'_> {
        let mut out = Resolved {
            rcode: rcode::NOERROR,
            answer: Vec::new(),
            soa_zone: None,
            located: false,
        };
        let mut cur = qname.clone();
        for _ in 0..MAX_CHAIN {
            let Some(zi) = zone_of(&cur) else { return out };
            let Some(node) = nodes.get(&cur) else {
                out.rcode = rcode::NXDOMAIN;
                out.soa_zone = Some(zi);
                return out;
            };
            out.located |= !node.by_location.is_empty();
            let here = node.at(loc);
            if qtype == rtype::ANY && !here.is_empty() {
                out.answer.extend(here.iter().map(|r| (cur.clone(), r)));
                return out;
            }
            if let Some(rr) = node.get(loc, qtype) {
                out.answer.push((cur.clone(), rr));
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
                    return out;
                }
            }
        }
        out // chain too long: what we have, as BIND and Knot do
    };

    // One answer, or one per client location when the answer depends on it (deduplicated).
    let answer_ref = |table: &mut Table, name: &DnsName, t: u16| -> u32 {
        let first = resolve(name, t, 0);
        if !first.located || locations <= 1 {
            return push_answer(&mut table.answers, name, t, &first, &soa_record, &nodata_of);
        }
        let start = table.located.len();
        let mut first = Some(first);
        let mut seen: Vec<(Resolved<'_>, u32)> = Vec::new();
        for loc in 0..locations {
            // Location 0 was resolved above.
            let res = first.take().unwrap_or_else(|| resolve(name, t, loc));
            let idx = match seen.iter().find(|(r, _)| *r == res) {
                Some((_, idx)) => *idx,
                None => {
                    let idx =
                        push_answer(&mut table.answers, name, t, &res, &soa_record, &nodata_of);
                    seen.push((res, idx));
                    idx
                }
            };
            table.located.push(idx);
        }
        start as u32 | LOCATED
    };

    let mut prev = std::mem::take(&mut cache.names);
    let mut next: FxHashMap<DnsName, (NodeData, CachedAnswers)> = FxHashMap::default();
    next.reserve(prev.len());
    for (name, node) in &nodes {
        let zi = zone_of(name).expect("nodes outside zones were removed");
        let all_sets = || node.rrsets.iter().chain(node.by_location.iter().flatten());
        // A name without a CNAME answers from its own records alone (or the zone's NODATA,
        // rebuilt with every table), so the same records give the same answers: reuse them.
        // Aliases read other names and may carry the SOA (whose serial changes) in their answers.
        let has_cname = all_sets().any(|r| r.rtype == rtype::CNAME);
        let reusable = !has_cname && all_sets().next().is_some();
        let reused = reusable
            .then(|| prev.remove(name))
            .flatten()
            .filter(|(old, _)| old == node);
        let (by_type, other) = if let Some((old, cached)) = reused {
            let by_type: Vec<(u16, u32)> = cached
                .by_type
                .iter()
                .map(|(t, r)| (*t, r.materialize(&mut table, nodata_of[zi])))
                .collect();
            next.insert(name.clone(), (old, cached));
            (by_type, nodata_of[zi])
        } else {
            let mut qtypes: BTreeSet<u16> = all_sets().map(|r| r.rtype).collect();
            let is_alias = node.get(0, rtype::CNAME).is_some();
            if is_alias {
                // The chain's end decides which types have data (at any location).
                for loc in 0..locations {
                    let end = resolve(name, 0, loc);
                    if let Some((_, last)) = end.answer.last()
                        && let RData::Cname(target) = &last.rdatas[0]
                        && let Some(n) = nodes.get(target)
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
            if all_sets().next().is_some() {
                qtypes.insert(rtype::ANY);
            }
            let mut by_type = Vec::with_capacity(qtypes.len());
            for t in qtypes {
                by_type.push((t, answer_ref(&mut table, name, t)));
            }
            let other = if is_alias {
                answer_ref(&mut table, name, 0)
            } else {
                nodata_of[zi]
            };
            if reusable {
                let cached = by_type
                    .iter()
                    .map(|(t, i)| (*t, CachedRef::of(&table, *i, nodata_of[zi], locations)))
                    .collect();
                next.insert(
                    name.clone(),
                    (node.clone(), CachedAnswers { by_type: cached }),
                );
            }
            (by_type, other)
        };
        table.names.insert(
            name.wire().into(),
            Node {
                zone: zi as u32,
                by_type: by_type.into(),
                other,
                wildcard: NO_WILDCARD,
            },
        );
    }
    drop(prev);
    cache.names = next;
    for data in input.etcd {
        let cache = cache.etcd.entry(data.prefix.clone()).or_default();
        add_etcd(
            &mut table,
            data,
            &zones,
            &zone_of,
            &nodata_of,
            &mut warnings,
            cache,
        );
        if data.axfr {
            for z in &data.zones {
                let Some(zd) = zones.iter().find(|d| d.origin == *z) else {
                    continue;
                };
                let mut records = vec![Record {
                    name: z.clone(),
                    ttl: zd.soa_ttl,
                    data: RData::Soa(zd.soa.clone()),
                }];
                records.extend(skydns::transfer_records(data, z));
                table.axfr.insert(z.wire().into(), records.into());
            }
        }
    }
    encode::forget_names();
    Built { table, warnings }
}

/// The SOA record CoreDNS puts in the answer to an SOA question.
fn coredns_soa_answer(z: &ZoneData) -> Record {
    Record {
        name: z.origin.clone(),
        ttl: z.soa_ttl.min(300),
        data: RData::Soa(z.soa.clone()),
    }
}

/// The SOA CoreDNS's etcd plugin synthesizes for a zone without a zone file.
fn coredns_zone(origin: &DnsName) -> ZoneData {
    synthesized_soa(origin, "ns.dns", 7200, 1800)
}

/// Largest answer body kept: a TCP message is at most 65535 bytes with header and question.
const MAX_BODY: usize = 65535 - 12 - 260 - 11;

/// One etcd answer, encoded once and kept between builds.
enum Enc {
    NoData,
    NxDomain,
    ServFail,
    Soa,
    Body(Body),
}

struct EncName {
    by_type: Vec<(u16, Enc)>,
    other: Enc,
}

/// What one build leaves for the next (owned by the merger), so that a change re-encodes only
/// the names it affects: the etcd data sets' answers by prefix, and the encoded answers of every
/// name that answers from its own records alone, with the records they were encoded from.
#[derive(Default)]
pub struct BuildCache {
    etcd: HashMap<String, EtcdCache>,
    names: FxHashMap<DnsName, (NodeData, CachedAnswers)>,
    /// The federated names of every service, by federation, with the inputs they came from.
    services: HashMap<String, ServiceMemo>,
    /// Client locations the cached answers were laid out for.
    locations: usize,
}

/// The names one federation's services laid out in the last build. A service whose shards,
/// ports and policy are unchanged, in a federation whose settings and clusters are unchanged,
/// gets the same names and records, so selection and layout are skipped for it.
type MemoEntry = (Service, Vec<(DnsName, NodeData)>, bool);

#[derive(Default)]
struct ServiceMemo {
    settings: Option<Federation>,
    /// namespace → name → the service as last seen, its names, and whether this build saw it
    /// (nested so that a lookup borrows the service's strings instead of copying them).
    services: FxHashMap<String, FxHashMap<String, MemoEntry>>,
}

impl ServiceMemo {
    /// Begins a build of `fed`: everything is forgotten if its settings or clusters changed.
    fn start(&mut self, fed: &Federation) {
        let settings = Federation {
            name: fed.name.clone(),
            zone: fed.zone.clone(),
            ttl: fed.ttl,
            max_answers: fed.max_answers,
            policy: fed.policy.clone(),
            clusters: fed.clusters.clone(),
            services: Vec::new(),
            ingress_hosts: Vec::new(),
        };
        if self.settings.as_ref() != Some(&settings) {
            self.services.clear();
            self.settings = Some(settings);
        }
        for entry in self.services.values_mut().flat_map(|n| n.values_mut()) {
            entry.2 = false;
        }
    }

    fn reuse(&mut self, svc: &Service) -> Option<&[(DnsName, NodeData)]> {
        let entry = self.services.get_mut(&svc.namespace)?.get_mut(&svc.name)?;
        if entry.0 != *svc {
            return None;
        }
        entry.2 = true;
        Some(&entry.1)
    }

    fn keep(&mut self, svc: &Service, nodes: Vec<(DnsName, NodeData)>) {
        self.services
            .entry(svc.namespace.clone())
            .or_default()
            .insert(svc.name.clone(), (svc.clone(), nodes, true));
    }

    /// Forgets the services this build did not see.
    fn finish(&mut self) {
        for names in self.services.values_mut() {
            names.retain(|_, e| e.2);
        }
        self.services.retain(|_, names| !names.is_empty());
    }
}

/// The answers of one name by query type, independent of any table's answer indexes.
struct CachedAnswers {
    by_type: Box<[(u16, CachedRef)]>,
}

enum CachedRef {
    /// The zone's NODATA (rebuilt with every table: it carries the serial).
    NoData,
    One(Answer),
    /// One answer per client location: the distinct answers (`None`: NODATA) and, per
    /// location, which of them.
    Located {
        distinct: Box<[Option<Answer>]>,
        per_location: Box<[u32]>,
    },
}

impl CachedRef {
    fn of(table: &Table, idx: u32, nodata: u32, locations: usize) -> CachedRef {
        let one = |i: u32| (i != nodata).then(|| table.answers[i as usize].clone());
        if idx & LOCATED == 0 {
            return one(idx).map_or(CachedRef::NoData, CachedRef::One);
        }
        let start = (idx & !LOCATED) as usize;
        let mut seen: Vec<u32> = Vec::new();
        let per_location = table.located[start..start + locations]
            .iter()
            .map(|i| match seen.iter().position(|s| s == i) {
                Some(p) => p as u32,
                None => {
                    seen.push(*i);
                    (seen.len() - 1) as u32
                }
            })
            .collect();
        CachedRef::Located {
            distinct: seen.into_iter().map(one).collect(),
            per_location,
        }
    }

    /// Adds the answers to `table` and returns the reference a node stores.
    fn materialize(&self, table: &mut Table, nodata: u32) -> u32 {
        let mut push = |a: Option<&Answer>| match a {
            Some(a) => {
                table.answers.push(a.clone());
                (table.answers.len() - 1) as u32
            }
            None => nodata,
        };
        match self {
            CachedRef::NoData => nodata,
            CachedRef::One(a) => push(Some(a)),
            CachedRef::Located {
                distinct,
                per_location,
            } => {
                let idx: Vec<u32> = distinct.iter().map(|a| push(a.as_ref())).collect();
                let start = table.located.len();
                table
                    .located
                    .extend(per_location.iter().map(|p| idx[*p as usize]));
                start as u32 | LOCATED
            }
        }
    }
}

/// What the builder keeps of one etcd data set between builds (owned by the merger), so that
/// a change re-answers and re-encodes only the names it affects.
#[derive(Default)]
pub struct EtcdCache {
    sky: skydns::Cache,
    enc: HashMap<skydns::NameKey, EncName>,
}

fn encode_name(na: &skydns::NameAnswers, wild: bool, cut: &mut usize) -> EncName {
    let enc = |qtype: u16, o: &Outcome, cut: &mut usize| -> Enc {
        match o {
            Outcome::NoData => Enc::NoData,
            Outcome::NxDomain => Enc::NxDomain,
            Outcome::ServFail => Enc::ServFail,
            Outcome::Soa => Enc::Soa,
            Outcome::Answer { answer, additional } => {
                let (body, left_out) = if wild {
                    encode::owner_relative(&na.name, answer, additional, MAX_BODY)
                } else {
                    encode::bounded(&na.name, qtype, answer, additional, MAX_BODY)
                };
                if left_out > 0 {
                    *cut += 1;
                }
                Enc::Body(body)
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

/// Adds the names of one etcd data set, answered as CoreDNS's etcd plugin answers them.
fn add_etcd(
    table: &mut Table,
    data: &EtcdData,
    zones: &[ZoneData],
    zone_of: &dyn Fn(&DnsName) -> Option<usize>,
    nodata_of: &[u32],
    warnings: &mut Vec<String>,
    cache: &mut EtcdCache,
) {
    let delta = skydns::update(data, &mut cache.sky);
    if delta.full {
        cache.enc.clear();
    }
    for k in &delta.removed {
        cache.enc.remove(k);
    }
    let mut cut = 0usize;
    for (k, na) in &delta.changed {
        cache.enc.insert(k.clone(), encode_name(na, k.1, &mut cut));
    }
    if cut > 0 {
        warnings.push(format!(
            "etcd {}: {cut} answer(s) larger than a DNS message were cut to fit",
            data.prefix
        ));
    }
    let index = |table: &mut Table, zi: usize, e: &Enc| -> u32 {
        match e {
            Enc::NoData => nodata_of[zi],
            Enc::NxDomain => table.zones[zi].nxdomain,
            Enc::Soa => table.zones[zi].miss_soa.unwrap_or(nodata_of[zi]),
            Enc::ServFail => {
                let z = &zones[zi];
                let soa = Record {
                    name: z.origin.clone(),
                    ttl: z.soa_ttl.min(z.soa.minimum),
                    data: RData::Soa(z.soa.clone()),
                };
                table.answers.push(Answer {
                    rcode: rcode::SERVFAIL,
                    bodies: std::sync::Arc::new([encode::detached(&[soa])]),
                });
                (table.answers.len() - 1) as u32
            }
            Enc::Body(b) => {
                table.record_count += b.answer_count as usize;
                table.answers.push(Answer {
                    rcode: rcode::NOERROR,
                    bodies: std::sync::Arc::new([b.clone()]),
                });
                (table.answers.len() - 1) as u32
            }
        }
    };
    for ((name, wild), en) in &cache.enc {
        if *wild {
            continue;
        }
        let Some(zi) = zone_of(name) else { continue };
        // Where etcd has nothing (NXDOMAIN) for a type that a zone file or federation answers
        // at this name (e.g. the apex NS of a zone that also has a zone file), that answer stays.
        let existing: Vec<(u16, u32)> = table
            .names
            .get(name.wire())
            .map(|n| n.by_type.to_vec())
            .unwrap_or_default();
        let mut by_type = Vec::with_capacity(en.by_type.len());
        for (t, e) in &en.by_type {
            let kept = existing.iter().find(|(et, _)| et == t).map(|(_, i)| *i);
            match (e, kept) {
                (Enc::NxDomain, Some(i)) => by_type.push((*t, i)),
                _ => by_type.push((*t, index(table, zi, e))),
            }
        }
        let other = index(table, zi, &en.other);
        if table
            .names
            .insert(
                name.wire().into(),
                Node {
                    zone: zi as u32,
                    by_type: by_type.into(),
                    other,
                    wildcard: NO_WILDCARD,
                },
            )
            .is_none()
        {
            table.name_count += 1;
        }
    }
    for ((name, wild), en) in &cache.enc {
        if !*wild {
            continue;
        }
        let (Some(zi), Some(parent)) = (zone_of(name), name.parent()) else {
            continue;
        };
        let by_type: Vec<(u16, u32)> = en
            .by_type
            .iter()
            .map(|(t, e)| (*t, index(table, zi, e)))
            .collect();
        let other = index(table, zi, &en.other);
        table.wildcards.push(Wildcard {
            by_type: by_type.into(),
            other,
        });
        let idx = (table.wildcards.len() - 1) as u32;
        if let Some(node) = table.names.get_mut(parent.wire()) {
            node.wildcard = idx;
        }
    }
}

fn push_answer(
    answers: &mut Vec<Answer>,
    qname: &DnsName,
    qtype: u16,
    res: &Resolved<'_>,
    soa_record: &dyn Fn(usize) -> Record,
    nodata_of: &[u32],
) -> u32 {
    if res.answer.is_empty()
        && res.rcode == rcode::NOERROR
        && let Some(zi) = res.soa_zone
    {
        return nodata_of[zi];
    }
    let authority: Vec<Record> = res.soa_zone.map(soa_record).into_iter().collect();
    let rotations = res
        .answer
        .iter()
        .map(|(_, rr)| rr.variants())
        .max()
        .unwrap_or(1)
        .max(1);
    let mut bodies = Vec::with_capacity(rotations);
    for v in 0..rotations {
        let mut records = Vec::new();
        for (owner, rr) in &res.answer {
            let datas = rr.variant(v, rotations);
            records.extend(datas.into_iter().map(|data| Record {
                name: owner.clone(),
                ttl: rr.ttl,
                data,
            }));
        }
        bodies.push(encode::compressed(qname, qtype, &records, &authority));
    }
    answers.push(Answer {
        rcode: res.rcode,
        bodies: bodies.into(),
    });
    (answers.len() - 1) as u32
}

fn add_static(nodes: &mut FxHashMap<DnsName, NodeData>, records: &[Record]) {
    for r in records {
        let node = nodes.entry(r.name.clone()).or_default();
        let t = r.data.rtype();
        match node.rrsets.iter_mut().find(|s| s.rtype == t) {
            // RFC 2181 §5.2: one TTL per RRset; the lowest is the safe choice.
            Some(set) => {
                set.ttl = set.ttl.min(r.ttl);
                if !set.rdatas.contains(&r.data) {
                    set.rdatas.push(r.data.clone());
                }
            }
            None => node
                .rrsets
                .push(RRset::fixed(t, r.ttl, vec![r.data.clone()])),
        }
    }
}

/// The SOA of a federation zone that has no zone file.
fn synthesized_zone(origin: &DnsName) -> ZoneData {
    synthesized_soa(origin, "ns1", 3600, 600)
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

/// A federated name, its addresses, and the names it falls back to in order.
type Level<'a> = (DnsName, &'a AddressSet, Vec<(DnsName, &'a AddressSet)>);

/// The federated names of one federation (DESIGN §1), as nodes.
fn federation_nodes(
    fed: &Federation,
    locator: &Locator,
    served: &dyn Fn(&DnsName) -> bool,
    mut memo: Option<&mut ServiceMemo>,
) -> Vec<(DnsName, NodeData)> {
    // A list, not a map: the caller inserts into its own map (one hash per name, not two).
    let mut out: Vec<(DnsName, NodeData)> = Vec::new();
    if let Some(m) = memo.as_deref_mut() {
        m.start(fed);
    }
    let ttl = fed.ttl.max(1); // a CNAME TTL is never 0
    let cap = fed.max_answers.max(1);
    let addr_sets = |set: &AddressSet| -> Vec<RRset> {
        let mut v = Vec::new();
        if !set.v4.is_empty() {
            let rdatas = set.v4.iter().map(|a| RData::A(*a)).collect();
            v.push(RRset {
                rtype: rtype::A,
                ttl,
                rdatas,
                rotation: Rotation::Rotate { cap },
            });
        }
        if !set.v6.is_empty() {
            let rdatas = set.v6.iter().map(|a| RData::Aaaa(*a)).collect();
            v.push(RRset {
                rtype: rtype::AAAA,
                ttl,
                rdatas,
                rotation: Rotation::Rotate { cap },
            });
        }
        v
    };
    let choice_sets = |choice: &Choice| -> Vec<RRset> {
        if choice.groups.len() == 1 {
            return addr_sets(&choice.groups[0].1);
        }
        let mut v = Vec::new();
        for (t, of) in [(rtype::A, 4), (rtype::AAAA, 6)] {
            let groups: Vec<(u32, Vec<RData>)> = choice
                .groups
                .iter()
                .map(|(w, s)| {
                    let datas: Vec<RData> = if of == 4 {
                        s.v4.iter().map(|a| RData::A(*a)).collect()
                    } else {
                        s.v6.iter().map(|a| RData::Aaaa(*a)).collect()
                    };
                    (*w, datas)
                })
                .filter(|(_, d)| !d.is_empty())
                .collect();
            if !groups.is_empty() {
                let rdatas = groups.iter().flat_map(|(_, d)| d.iter().cloned()).collect();
                v.push(RRset {
                    rtype: t,
                    ttl,
                    rdatas,
                    rotation: Rotation::Weighted { groups, cap },
                });
            }
        }
        v
    };
    let cname =
        |target: &DnsName| RRset::fixed(rtype::CNAME, ttl, vec![RData::Cname(target.clone())]);
    // The global name follows the policy, per client location.
    let global_node = |sel: &selection::ServiceSelection| {
        let per_location: Vec<Vec<RRset>> =
            sel.global_by_location.iter().map(choice_sets).collect();
        let rrsets = per_location[0].clone();
        let by_location = if per_location.iter().all(|p| *p == rrsets) {
            Vec::new()
        } else {
            per_location
        };
        NodeData {
            rrsets,
            by_location,
        }
    };
    for svc in &fed.services {
        if let Some(nodes) = memo.as_deref_mut().and_then(|m| m.reuse(svc)) {
            out.extend(nodes.iter().cloned());
            continue;
        }
        let mut mine: Vec<(DnsName, NodeData)> = Vec::new();
        let label = format!("{}.{}.{}.svc", svc.name, svc.namespace, fed.name);
        let name_at = |suffix: &str| DnsName::parse(&format!("{label}.{suffix}{}", fed.zone));
        let Ok(global) = name_at("") else { continue };
        let sel = selection::select(fed, svc, locator);
        // Each level: (name, its addresses, names to fall back to in order).
        let mut levels: Vec<Level<'_>> = vec![(global.clone(), &sel.global, vec![])];
        for (region, set) in &sel.regions {
            let Ok(rname) = name_at(&format!("{region}.")) else {
                continue;
            };
            levels.push((rname.clone(), set, vec![(global.clone(), &sel.global)]));
            for (r, zone, zset) in sel.zones.iter().filter(|(r, _, _)| r == region) {
                let Ok(zname) = name_at(&format!("{zone}.{r}.")) else {
                    continue;
                };
                levels.push((
                    zname,
                    zset,
                    vec![(rname.clone(), set), (global.clone(), &sel.global)],
                ));
            }
        }
        for (name, set, fallbacks) in &levels {
            // Nothing healthy here: point one level up (zonal → regional → global), unless
            // nothing is healthy anywhere, where a CNAME would only lead to an empty name.
            let leads_somewhere = fallbacks.iter().any(|(_, s)| !s.is_empty());
            let data = if fallbacks.is_empty() {
                global_node(&sel)
            } else if !set.is_empty() || !leads_somewhere {
                NodeData {
                    rrsets: addr_sets(set),
                    by_location: Vec::new(),
                }
            } else {
                NodeData {
                    rrsets: vec![cname(&fallbacks[0].0)],
                    by_location: Vec::new(),
                }
            };
            mine.push((name.clone(), data));
            for port in &svc.ports {
                let Ok(srv_name) =
                    DnsName::parse(&format!("_{}._{}.{}", port.name, port.protocol, name))
                else {
                    continue;
                };
                // An SRV target must own addresses (RFC 2782: never an alias), so point at the
                // nearest level that has healthy shards.
                let target = std::iter::once((name, *set))
                    .chain(fallbacks.iter().map(|(n, s)| (n, *s)))
                    .find(|(_, s)| !s.is_empty());
                let rrsets = match target {
                    Some((t, _)) => vec![RRset::fixed(
                        rtype::SRV,
                        ttl,
                        vec![RData::Srv {
                            priority: 0,
                            weight: 100,
                            port: port.port,
                            target: t.clone(),
                        }],
                    )],
                    None => vec![],
                };
                mine.push((
                    srv_name,
                    NodeData {
                        rrsets,
                        by_location: Vec::new(),
                    },
                ));
            }
        }
        if let Some(m) = memo.as_deref_mut() {
            m.keep(svc, mine.clone());
        }
        out.extend(mine);
    }
    if let Some(m) = memo {
        m.finish();
    }
    // Ingress hosts (DESIGN §1) inside a served zone: answered like a global name, each
    // cluster's ingress load balancer being a shard.
    for host in fed.ingress_hosts.iter().filter(|h| served(&h.host)) {
        let svc = Service {
            name: String::new(),
            namespace: String::new(),
            ports: vec![],
            shards: host.shards.clone(),
            policy: None,
        };
        out.push((
            host.host.clone(),
            global_node(&selection::select(fed, &svc, locator)),
        ));
    }
    out
}

/// The federation records fedns computed, as the etcd publisher writes them: every federated
/// name with its TTL and values (addresses, or the CNAME target), sorted by name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FederationRecords {
    /// Zones of the federations (the publisher owns its keys below these).
    pub zones: Vec<DnsName>,
    pub records: Vec<(DnsName, u32, Vec<String>)>,
}

pub fn federation_records(feds: &[Federation]) -> FederationRecords {
    let mut out = FederationRecords::default();
    for fed in feds {
        if !out.zones.contains(&fed.zone) {
            out.zones.push(fed.zone.clone());
        }
        // etcd has no client location: publish what a client of unknown location gets.
        let in_zone = |n: &DnsName| n.is_within(&fed.zone);
        for (name, data) in federation_nodes(fed, &Locator::default(), &in_zone, None) {
            let mut values = Vec::new();
            let mut ttl = fed.ttl.max(1);
            for rr in &data.rrsets {
                ttl = ttl.min(rr.ttl);
                for d in &rr.rdatas {
                    match d {
                        RData::A(a) => values.push(a.to_string()),
                        RData::Aaaa(a) => values.push(a.to_string()),
                        RData::Cname(t) => {
                            values.push(t.to_string().trim_end_matches('.').to_string())
                        }
                        _ => {} // SRV has no place in the federation provider's layout
                    }
                }
            }
            if !values.is_empty() {
                out.records.push((name, ttl, values));
            }
        }
    }
    // A name laid out twice (an ingress host that is also a service name) keeps one record set.
    out.records.sort();
    out.records.dedup_by(|later, earlier| later.0 == earlier.0);
    out
}
