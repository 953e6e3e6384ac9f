//! Builds an immutable [`Table`] from source snapshots: static zones plus federations.
//!
//! The builder is a pure function of its input (snapshots, serial, generation), so it can be
//! tested without sockets and run by the merger off the query path. It lays out the federated
//! names of DESIGN §1, overlays them on the zone files' records, adds empty non-terminals,
//! resolves in-zone CNAME chains, and encodes every answer (with its rotations) to wire format.

use std::collections::{BTreeSet, HashMap};

use rustc_hash::FxHashMap;

use super::{Answer, Body, NO_WILDCARD, Node, Table, Wildcard, ZoneInfo, rcode};
use crate::dns::encode;
use crate::model::{DnsName, Federation, RData, Record, Soa, StaticZone, rtype};
use crate::selection::{self, AddressSet};
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
    /// What earlier builds computed for the etcd data sets, by prefix (`None`: start afresh).
    pub etcd_cache: Option<&'a mut HashMap<String, EtcdCache>>,
    pub serial: u32,
    pub generation: u64,
}

pub struct Built {
    pub table: Table,
    /// Things an operator should know (overridden names, synthesized SOAs…).
    pub warnings: Vec<String>,
}

#[derive(Clone, Debug)]
struct RRset {
    rtype: u16,
    ttl: u32,
    rdatas: Vec<RData>,
    /// Dynamic address sets are capped and rotated; static data is served as written.
    rotate_cap: Option<usize>,
}

#[derive(Default, Debug)]
struct NodeData {
    rrsets: Vec<RRset>,
}

impl NodeData {
    fn get(&self, t: u16) -> Option<&RRset> {
        self.rrsets.iter().find(|r| r.rtype == t)
    }
}

struct ZoneData {
    origin: DnsName,
    soa: Soa,
    soa_ttl: u32,
}

/// The outcome of resolving one question at build time.
struct Resolved<'a> {
    rcode: u8,
    answer: Vec<(DnsName, &'a RRset)>,
    /// Zone whose SOA goes into the authority section (negative answers).
    soa_zone: Option<usize>,
}

pub fn build(input: BuildInput<'_>) -> Built {
    let mut warnings = Vec::new();
    let mut zones: Vec<ZoneData> = Vec::new();
    let mut nodes: FxHashMap<DnsName, NodeData> = FxHashMap::default();

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
        for (name, data) in federation_nodes(fed) {
            if nodes.insert(name.clone(), data).is_some() {
                warnings.push(format!(
                    "federation {}: {} overrides the zone file's records",
                    fed.name, name
                ));
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
        apex.rrsets.push(RRset {
            rtype: rtype::SOA,
            ttl: z.soa_ttl,
            rdatas: vec![RData::Soa(z.soa.clone())],
            rotate_cap: None,
        });
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
    let mut ents = Vec::new();
    for name in nodes.keys() {
        let Some(zi) = zone_of(name) else {
            outside.push(name.clone());
            continue;
        };
        let mut cur = name.clone();
        while cur != zones[zi].origin {
            let Some(p) = cur.parent() else { break };
            if !nodes.contains_key(&p) {
                ents.push(p.clone());
            }
            cur = p;
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
            bodies: Box::new([body.clone()]),
        });
        let nxdomain = (table.answers.len() - 1) as u32;
        let miss_soa = etcd_zone_ids.contains(&zone.origin).then(|| {
            table.answers.push(Answer {
                rcode: rcode::NOERROR,
                bodies: Box::new([encode::detached_answer(&[coredns_soa_answer(zone)])]),
            });
            (table.answers.len() - 1) as u32
        });
        table.zones.push(ZoneInfo { nxdomain, miss_soa });
        table.answers.push(Answer {
            rcode: rcode::NOERROR,
            bodies: Box::new([body]),
        });
        nodata_of.push((table.answers.len() - 1) as u32);
    }

    let resolve = |qname: &DnsName, qtype: u16| -> Resolved<'_> {
        let mut out = Resolved {
            rcode: rcode::NOERROR,
            answer: Vec::new(),
            soa_zone: None,
        };
        let mut cur = qname.clone();
        for _ in 0..MAX_CHAIN {
            let Some(zi) = zone_of(&cur) else { return out };
            let Some(node) = nodes.get(&cur) else {
                out.rcode = rcode::NXDOMAIN;
                out.soa_zone = Some(zi);
                return out;
            };
            if qtype == rtype::ANY && !node.rrsets.is_empty() {
                out.answer
                    .extend(node.rrsets.iter().map(|r| (cur.clone(), r)));
                return out;
            }
            if let Some(rr) = node.get(qtype) {
                out.answer.push((cur.clone(), rr));
                return out;
            }
            match node.get(rtype::CNAME) {
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

    for (name, node) in &nodes {
        let zi = zone_of(name).expect("nodes outside zones were removed");
        let mut qtypes: BTreeSet<u16> = node.rrsets.iter().map(|r| r.rtype).collect();
        let is_alias = node.get(rtype::CNAME).is_some();
        if is_alias {
            // The chain's end decides which types have data.
            let end = resolve(name, 0);
            if let Some((_, last)) = end.answer.last()
                && let RData::Cname(target) = &last.rdatas[0]
                && let Some(n) = nodes.get(target)
            {
                qtypes.extend(n.rrsets.iter().map(|r| r.rtype));
            }
        }
        if !node.rrsets.is_empty() {
            qtypes.insert(rtype::ANY);
        }
        let mut by_type = Vec::with_capacity(qtypes.len());
        for t in qtypes {
            let idx = push_answer(
                &mut table.answers,
                name,
                t,
                resolve(name, t),
                &soa_record,
                &nodata_of,
            );
            by_type.push((t, idx));
        }
        let other = if is_alias {
            push_answer(
                &mut table.answers,
                name,
                0,
                resolve(name, 0),
                &soa_record,
                &nodata_of,
            )
        } else {
            nodata_of[zi]
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
    let mut scratch = HashMap::new();
    let caches = input.etcd_cache.unwrap_or(&mut scratch);
    for data in input.etcd {
        let cache = caches.entry(data.prefix.clone()).or_default();
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

fn coredns_zone(origin: &DnsName) -> ZoneData {
    let host = |l: &str| origin.prepend(l).unwrap_or_else(|_| origin.clone());
    ZoneData {
        origin: origin.clone(),
        soa: Soa {
            mname: host("ns.dns"),
            rname: host("hostmaster"),
            serial: 1,
            refresh: 7200,
            retry: 1800,
            expire: 86400,
            minimum: 30,
        },
        soa_ttl: 30,
    }
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
                    bodies: Box::new([encode::detached(&[soa])]),
                });
                (table.answers.len() - 1) as u32
            }
            Enc::Body(b) => {
                table.record_count += b.answer_count as usize;
                table.answers.push(Answer {
                    rcode: rcode::NOERROR,
                    bodies: Box::new([b.clone()]),
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
    res: Resolved<'_>,
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
        .filter(|(_, rr)| rr.rotate_cap.is_some())
        .map(|(_, rr)| rr.rdatas.len().min(MAX_ROTATIONS))
        .max()
        .unwrap_or(1)
        .max(1);
    let mut bodies = Vec::with_capacity(rotations);
    for v in 0..rotations {
        let mut records = Vec::new();
        for (owner, rr) in &res.answer {
            let n = rr.rdatas.len();
            match rr.rotate_cap {
                Some(cap) if n > 1 => {
                    let start = v * n / rotations;
                    for k in 0..n.min(cap) {
                        records.push(Record {
                            name: owner.clone(),
                            ttl: rr.ttl,
                            data: rr.rdatas[(start + k) % n].clone(),
                        });
                    }
                }
                _ => records.extend(rr.rdatas.iter().map(|d| Record {
                    name: owner.clone(),
                    ttl: rr.ttl,
                    data: d.clone(),
                })),
            }
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
            None => node.rrsets.push(RRset {
                rtype: t,
                ttl: r.ttl,
                rdatas: vec![r.data.clone()],
                rotate_cap: None,
            }),
        }
    }
}

fn synthesized_zone(origin: &DnsName) -> ZoneData {
    let host = |l: &str| origin.prepend(l).unwrap_or_else(|_| origin.clone());
    ZoneData {
        origin: origin.clone(),
        soa: Soa {
            mname: host("ns1"),
            rname: host("hostmaster"),
            serial: 1,
            refresh: 3600,
            retry: 600,
            expire: 86400,
            minimum: 30,
        },
        soa_ttl: 30,
    }
}

/// A federated name, its addresses, and the names it falls back to in order.
type Level<'a> = (DnsName, &'a AddressSet, Vec<(DnsName, &'a AddressSet)>);

/// The federated names of one federation (DESIGN §1), as nodes.
fn federation_nodes(fed: &Federation) -> HashMap<DnsName, NodeData> {
    let mut out: HashMap<DnsName, NodeData> = HashMap::new();
    let ttl = fed.ttl.max(1); // a CNAME TTL is never 0
    let cap = fed.max_answers.max(1);
    let addr_sets = |set: &AddressSet| -> Vec<RRset> {
        let mut v = Vec::new();
        if !set.v4.is_empty() {
            v.push(RRset {
                rtype: rtype::A,
                ttl,
                rdatas: set.v4.iter().map(|a| RData::A(*a)).collect(),
                rotate_cap: Some(cap),
            });
        }
        if !set.v6.is_empty() {
            v.push(RRset {
                rtype: rtype::AAAA,
                ttl,
                rdatas: set.v6.iter().map(|a| RData::Aaaa(*a)).collect(),
                rotate_cap: Some(cap),
            });
        }
        v
    };
    let cname = |target: &DnsName| RRset {
        rtype: rtype::CNAME,
        ttl,
        rdatas: vec![RData::Cname(target.clone())],
        rotate_cap: None,
    };
    for svc in &fed.services {
        let label = format!("{}.{}.{}.svc", svc.name, svc.namespace, fed.name);
        let name_at = |suffix: &str| DnsName::parse(&format!("{label}.{suffix}{}", fed.zone));
        let Ok(global) = name_at("") else { continue };
        let sel = selection::select(fed, svc);
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
            let data = if !set.is_empty() || !leads_somewhere {
                NodeData {
                    rrsets: addr_sets(set),
                }
            } else {
                NodeData {
                    rrsets: vec![cname(&fallbacks[0].0)],
                }
            };
            out.insert(name.clone(), data);
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
                    Some((t, _)) => vec![RRset {
                        rtype: rtype::SRV,
                        ttl,
                        rdatas: vec![RData::Srv {
                            priority: 0,
                            weight: 100,
                            port: port.port,
                            target: t.clone(),
                        }],
                        rotate_cap: None,
                    }],
                    None => vec![],
                };
                out.insert(srv_name, NodeData { rrsets });
            }
        }
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
        for (name, data) in federation_nodes(fed) {
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
    out.records.sort();
    out
}
