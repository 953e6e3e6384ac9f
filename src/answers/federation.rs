//! Layout of federated names (DESIGN §1): what records the global, regional, zonal, SRV and
//! ingress-host names of one service hold, given the federation and the client locations.
//!
//! Pure: the same federation, service and locator give the same names and records, which is
//! what lets the builder skip services that did not change. Records are kept as RRsets with
//! their rotation (how the query path spreads a large address set over answers); encoding them
//! is the builder's job.

use crate::geo::Locator;
use crate::model::{DnsName, Federation, IngressHost, RData, Service, rtype};
use crate::selection::{self, AddressSet, Choice};

/// Most rotations precomputed per answer; larger sets rotate through evenly spread offsets.
pub(super) const MAX_ROTATIONS: usize = 64;

#[derive(Clone, Debug, PartialEq)]
pub(super) struct RRset {
    pub(super) rtype: u16,
    pub(super) ttl: u32,
    pub(super) rdatas: Vec<RData>,
    pub(super) rotation: Rotation,
}

/// How the records of an RRset are spread over the answers the query path rotates through.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Rotation {
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
    pub(super) fn fixed(rtype: u16, ttl: u32, rdatas: Vec<RData>) -> Self {
        RRset {
            rtype,
            ttl,
            rdatas,
            rotation: Rotation::Fixed,
        }
    }

    /// How many distinct answers this RRset rotates through.
    pub(super) fn variants(&self) -> usize {
        match &self.rotation {
            Rotation::Fixed => 1,
            Rotation::Rotate { .. } => self.rdatas.len().clamp(1, MAX_ROTATIONS),
            Rotation::Weighted { groups, .. } => weighted_sequence(groups).len().max(1),
        }
    }

    /// The records of answer number `v` (of `of`).
    pub(super) fn variant(&self, v: usize, of: usize) -> Vec<RData> {
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
pub(super) struct NodeData {
    pub(super) rrsets: Vec<RRset>,
    /// When the node answers differently per client location: the RRsets of each location
    /// (index = location id; `rrsets` is then location 0's).
    pub(super) by_location: Vec<Vec<RRset>>,
}

impl NodeData {
    pub(super) fn at(&self, loc: usize) -> &[RRset] {
        if self.by_location.is_empty() {
            &self.rrsets
        } else {
            &self.by_location[loc]
        }
    }

    pub(super) fn get(&self, loc: usize, t: u16) -> Option<&RRset> {
        self.at(loc).iter().find(|r| r.rtype == t)
    }
}

/// A federated name, its addresses, and the names it falls back to in order.
type Level<'a> = (DnsName, &'a AddressSet, Vec<(DnsName, &'a AddressSet)>);

/// Lays out the names of one federation's services and ingress hosts.
pub(super) struct Layout<'a> {
    fed: &'a Federation,
    locator: &'a Locator,
    ttl: u32,
    cap: usize,
}

impl<'a> Layout<'a> {
    pub(super) fn new(fed: &'a Federation, locator: &'a Locator) -> Self {
        Layout {
            fed,
            locator,
            ttl: fed.ttl.max(1), // a CNAME TTL is never 0
            cap: fed.max_answers.max(1),
        }
    }

    fn addr_sets(&self, set: &AddressSet) -> Vec<RRset> {
        let mut v = Vec::new();
        if !set.v4.is_empty() {
            let rdatas = set.v4.iter().map(|a| RData::A(*a)).collect();
            v.push(RRset {
                rtype: rtype::A,
                ttl: self.ttl,
                rdatas,
                rotation: Rotation::Rotate { cap: self.cap },
            });
        }
        if !set.v6.is_empty() {
            let rdatas = set.v6.iter().map(|a| RData::Aaaa(*a)).collect();
            v.push(RRset {
                rtype: rtype::AAAA,
                ttl: self.ttl,
                rdatas,
                rotation: Rotation::Rotate { cap: self.cap },
            });
        }
        v
    }

    fn choice_sets(&self, choice: &Choice) -> Vec<RRset> {
        if choice.groups.len() == 1 {
            return self.addr_sets(&choice.groups[0].1);
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
                    ttl: self.ttl,
                    rdatas,
                    rotation: Rotation::Weighted {
                        groups,
                        cap: self.cap,
                    },
                });
            }
        }
        v
    }

    /// The global name follows the policy, per client location.
    fn global_node(&self, sel: &selection::ServiceSelection) -> NodeData {
        let per_location: Vec<Vec<RRset>> = sel
            .global_by_location
            .iter()
            .map(|c| self.choice_sets(c))
            .collect();
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
    }

    /// The names of one service: global, regional, zonal, and SRV names at each of them.
    pub(super) fn service(&self, svc: &Service) -> Vec<(DnsName, NodeData)> {
        let (fed, ttl) = (self.fed, self.ttl);
        let mut mine: Vec<(DnsName, NodeData)> = Vec::new();
        let label = format!("{}.{}.{}.svc", svc.name, svc.namespace, fed.name);
        let name_at = |suffix: &str| DnsName::parse(&format!("{label}.{suffix}{}", fed.zone));
        let Ok(global) = name_at("") else {
            return mine;
        };
        let sel = selection::select(fed, svc, self.locator);
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
                self.global_node(&sel)
            } else if !set.is_empty() || !leads_somewhere {
                NodeData {
                    rrsets: self.addr_sets(set),
                    by_location: Vec::new(),
                }
            } else {
                NodeData {
                    rrsets: vec![RRset::fixed(
                        rtype::CNAME,
                        ttl,
                        vec![RData::Cname(fallbacks[0].0.clone())],
                    )],
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
        mine
    }

    /// An ingress host (DESIGN §1): answered like a global name, each cluster's ingress load
    /// balancer being a shard.
    pub(super) fn ingress(&self, host: &IngressHost) -> (DnsName, NodeData) {
        let svc = Service {
            name: String::new(),
            namespace: String::new(),
            ports: vec![],
            shards: host.shards.clone(),
            policy: None,
        };
        (
            host.host.clone(),
            self.global_node(&selection::select(self.fed, &svc, self.locator)),
        )
    }
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
    let locator = Locator::default();
    for fed in feds {
        if !out.zones.contains(&fed.zone) {
            out.zones.push(fed.zone.clone());
        }
        // etcd has no client location: publish what a client of unknown location gets.
        let in_zone = |n: &DnsName| n.is_within(&fed.zone);
        let layout = Layout::new(fed, &locator);
        let laid_out = fed
            .services
            .iter()
            .flat_map(|svc| layout.service(svc))
            .chain(
                fed.ingress_hosts
                    .iter()
                    .filter(|h| in_zone(&h.host))
                    .map(|h| layout.ingress(h)),
            );
        for (name, data) in laid_out {
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
