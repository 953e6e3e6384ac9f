//! Layout of federated names (DESIGN §1): what records the global, regional, zonal, SRV,
//! in-cluster redirect, MCS (`clusterset.local`) and ingress-host names of one service hold,
//! given the federation and the client locations, and the fixed RRsets of DNSEndpoint names.
//!
//! Pure: the same federation, service and locator give the same names and records, which is
//! what lets the builder skip services that did not change. Records are kept as RRsets with
//! their rotation (how the query path spreads a large address set over answers); encoding them
//! is the builder's job.

use crate::geo::Locator;
use std::net::IpAddr;

use crate::model::{DnsName, EndpointName, Federation, Import, IngressHost, RData, Service, rtype};
use crate::selection::{self, AddressSet, Family};

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
    /// `weighted` policy: one group per answer, groups in proportion to their weights (boxed:
    /// rare, and every RRset would otherwise be its size).
    Weighted(Box<Weighted>),
}

#[derive(Clone, Debug, PartialEq)]
pub(super) struct Weighted {
    pub(super) groups: Vec<(u32, Vec<RData>)>,
    pub(super) cap: usize,
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
            Rotation::Weighted(w) => weighted_sequence(&w.groups).len().max(1),
        }
    }

    /// The records of answer number `v` (of `of`).
    pub(super) fn variant(&self, v: usize, of: usize) -> Vec<RData> {
        match &self.rotation {
            Rotation::Fixed => self.rdatas.clone(),
            Rotation::Rotate { cap } => {
                rotated(&self.rdatas, v * self.rdatas.len() / of.max(1), *cap)
            }
            Rotation::Weighted(w) => {
                let (groups, cap) = (&w.groups, &w.cap);
                let seq = weighted_sequence(groups);
                let v = v % seq.len().max(1);
                let (group, occurrence) = seq[v];
                rotated(&groups[group].1, occurrence, *cap)
            }
        }
    }
}

fn rtype_of(f: Family) -> u16 {
    match f {
        Family::V4 => rtype::A,
        Family::V6 => rtype::AAAA,
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
    /// Boxed slices, not `Vec`s: one `NodeData` per name stays in the build cache for as long
    /// as the name's inputs do not change, and a smaller one fits a smaller allocation.
    pub(super) rrsets: Box<[RRset]>,
    /// When the node answers differently per client location: the RRsets of each location
    /// (index = location id; `rrsets` is then location 0's).
    pub(super) by_location: Box<[Box<[RRset]>]>,
}

const _: () = assert!(std::mem::size_of::<NodeData>() == 32);
const _: () = assert!(std::mem::size_of::<RRset>() == 48);

impl NodeData {
    /// Location-independent RRsets.
    pub(super) fn new(rrsets: Vec<RRset>) -> Self {
        NodeData {
            rrsets: rrsets.into(),
            by_location: Box::new([]),
        }
    }

    /// Without growth slack: kept in the build cache for as long as the name's inputs do not
    /// change (a `Vec` pushed once holds room for four).
    pub(super) fn compact(mut self) -> Self {
        let rrsets = |sets: &mut Box<[RRset]>| {
            for r in sets.iter_mut() {
                r.rdatas.shrink_to_fit();
                if let Rotation::Weighted(w) = &mut r.rotation {
                    w.groups.shrink_to_fit();
                    w.groups.iter_mut().for_each(|g| g.1.shrink_to_fit());
                }
            }
        };
        rrsets(&mut self.rrsets);
        self.by_location.iter_mut().for_each(rrsets);
        self
    }

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
#[derive(Clone, Copy)]
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

    /// The RRset of family `f` of a policy's choice: rotated when it has one group, weighted
    /// when it has several.
    fn family_set(&self, f: Family, groups: &[(u32, AddressSet)]) -> Option<RRset> {
        if let [(_, set)] = groups {
            return self.addr_set(f, set);
        }
        let rdatas_of = |s: &AddressSet| -> Vec<RData> {
            match f {
                Family::V4 => s.v4.iter().map(|a| RData::A(*a)).collect(),
                Family::V6 => s.v6.iter().map(|a| RData::Aaaa(*a)).collect(),
            }
        };
        let groups: Vec<(u32, Vec<RData>)> = groups
            .iter()
            .map(|(w, s)| (*w, rdatas_of(s)))
            .filter(|(_, d)| !d.is_empty())
            .collect();
        if groups.is_empty() {
            return None;
        }
        let rdatas = groups.iter().flat_map(|(_, d)| d.iter().cloned()).collect();
        Some(RRset {
            rtype: rtype_of(f),
            ttl: self.ttl,
            rdatas,
            rotation: Rotation::Weighted(Box::new(Weighted {
                groups,
                cap: self.cap,
            })),
        })
    }

    /// The RRset of family `f` of one address set, if it has any.
    fn addr_set(&self, f: Family, set: &AddressSet) -> Option<RRset> {
        let rdatas: Vec<RData> = match f {
            Family::V4 => set.v4.iter().map(|a| RData::A(*a)).collect(),
            Family::V6 => set.v6.iter().map(|a| RData::Aaaa(*a)).collect(),
        };
        (!rdatas.is_empty()).then(|| RRset {
            rtype: rtype_of(f),
            ttl: self.ttl,
            rdatas,
            rotation: Rotation::Rotate { cap: self.cap },
        })
    }

    /// Per-location RRsets collapsed to one list when every location has the same.
    fn node(per_location: Vec<Vec<RRset>>) -> NodeData {
        let rrsets = per_location[0].clone();
        let by_location = if per_location.iter().all(|p| *p == rrsets) {
            Box::new([])
        } else {
            per_location
                .into_iter()
                .map(Vec::into_boxed_slice)
                .collect::<Box<[_]>>()
        };
        NodeData {
            rrsets: rrsets.into(),
            by_location,
        }
    }

    /// The global name follows the policy, per client location and per family.
    fn global_node(&self, sel: &selection::ServiceSelection) -> NodeData {
        Self::node(
            sel.global_by_location
                .iter()
                .map(|c| {
                    Family::BOTH
                        .iter()
                        .filter_map(|&f| self.family_set(f, c.family(f)))
                        .collect()
                })
                .collect(),
        )
    }

    /// A regional or zonal name that has healthy shards: its own addresses for each family it
    /// has, and for a family it lacks the addresses of the first level up that has it, owned by
    /// this name (flattened: a CNAME may not sit beside the other family's RRset). Falling back
    /// to the global name takes its per-location answer, exactly what a CNAME to it would give.
    fn level_node(
        &self,
        set: &AddressSet,
        fallbacks: &[(DnsName, &AddressSet)],
        sel: &selection::ServiceSelection,
    ) -> NodeData {
        // Location-independent RRsets, and the families taken from the global name.
        let mut own: Vec<RRset> = Vec::new();
        let mut from_global: Vec<Family> = Vec::new();
        for f in Family::BOTH {
            if let Some(rr) = self.addr_set(f, set) {
                own.push(rr);
                continue;
            }
            match fallbacks.iter().position(|(_, s)| s.has(f)) {
                None => {} // no healthy shard of this family anywhere: NODATA
                // A region: its addresses, whoever asks.
                Some(i) if i + 1 < fallbacks.len() => own.extend(self.addr_set(f, fallbacks[i].1)),
                Some(_) => from_global.push(f),
            }
        }
        if from_global.is_empty() {
            return NodeData::new(own);
        }
        Self::node(
            sel.global_by_location
                .iter()
                .map(|c| {
                    let mut here = own.clone();
                    here.extend(
                        from_global
                            .iter()
                            .filter_map(|&f| self.family_set(f, c.family(f))),
                    );
                    // Same order as a level with both families: A before AAAA.
                    here.sort_by_key(|r| r.rtype);
                    here
                })
                .collect(),
        )
    }

    /// The names of one service: global, regional, zonal, SRV names at each of them, and its
    /// in-cluster redirect name; the service's own TTL, when it sets one, on all of them.
    pub(super) fn service(&self, svc: &Service) -> Vec<(DnsName, NodeData)> {
        let this = Layout {
            ttl: svc.ttl.map_or(self.ttl, |t| t.max(1)),
            ..*self
        };
        let sel = selection::select(self.fed, svc, self.locator);
        let mut names = this.federated(svc, &sel);
        names.extend(this.redirect(svc));
        names.extend(this.clusterset(svc, &sel));
        names
    }

    /// The MCS names (KEP-1645, "DNS", and its DNS specification). `SVC.NS.svc.DOMAIN`, per
    /// client location: the cluster-set IPs of the client's cluster's `ClusterSetIP`
    /// ServiceImport when it has one (they are local to the importing cluster, so no other
    /// client gets them); else, for a headless service (imported as `Headless` and exported
    /// headless, its shards carrying endpoints), the addresses of every ready endpoint in the
    /// federated view (§2.4.1), `max_answers` at a time and rotated like every address set
    /// (a large one would truncate every UDP answer; the SRV names below list every peer);
    /// else what the global name answers that client (the healthy shards chosen for it).
    /// `_PORT._PROTO.SVC.NS.svc.DOMAIN` SRV records for each named port target the service
    /// name (which always owns the addresses: no CNAME here), or for a headless service each
    /// endpoint's own name `HOSTNAME.CLUSTER.SVC.NS.svc.DOMAIN` (§2.4.2), which answers its
    /// addresses. An endpoint without a hostname is named, per address, by the address with
    /// `-` for `.` and `:` (the "system-assigned identifier" of §2.1, as CoreDNS names it).
    /// A headless service with no ready endpoint answers NODATA, not the spec's NXDOMAIN: a
    /// known service is never NXDOMAIN here, and its per-endpoint names come and go beside it.
    fn clusterset(
        &self,
        svc: &Service,
        sel: &selection::ServiceSelection,
    ) -> Vec<(DnsName, NodeData)> {
        let Some(zone) = self.fed.clusterset_zone() else {
            return vec![];
        };
        let Ok(name) = DnsName::parse(&format!("{}.{}.{zone}", svc.name, svc.namespace)) else {
            return vec![];
        };
        let hosts = headless_hosts(svc, &name);
        let headless = hosts.is_some();
        let hosts = hosts.unwrap_or_default();
        let all_ips: Vec<IpAddr> = {
            let mut v: Vec<IpAddr> = hosts.iter().flat_map(|(_, a)| a.iter().copied()).collect();
            v.sort();
            v.dedup();
            v
        };
        let fixed_sets = |ips: &[IpAddr]| -> Vec<RRset> {
            let set = AddressSet::from_ips(ips);
            Family::BOTH
                .iter()
                .filter_map(|&f| {
                    let mut rr = self.addr_set(f, &set)?;
                    rr.rotation = Rotation::Fixed;
                    Some(rr)
                })
                .collect()
        };
        let global = self.global_node(sel);
        let per_location: Vec<Vec<RRset>> = (0..self.locator.locations().len())
            .map(
                |id| match mcs_choice(svc, self.locator.cluster_of(id), headless) {
                    McsChoice::ClusterSetIp(i) => {
                        let set = AddressSet::from_ips(&i.ips);
                        Family::BOTH
                            .iter()
                            .filter_map(|&f| self.addr_set(f, &set))
                            .collect()
                    }
                    // Capped by `max_answers` and rotated, as every address set is: a
                    // large headless service would otherwise truncate every UDP answer.
                    McsChoice::Headless => {
                        let set = AddressSet::from_ips(&all_ips);
                        Family::BOTH
                            .iter()
                            .filter_map(|&f| self.addr_set(f, &set))
                            .collect()
                    }
                    McsChoice::Global => global.at(id).to_vec(),
                },
            )
            .collect();
        let mut out = vec![(name.clone(), Self::node(per_location))];
        for port in &svc.ports {
            let Ok(srv) = DnsName::parse(&format!("_{}._{}.{name}", port.name, port.protocol))
            else {
                continue;
            };
            let record = |target: &DnsName| RData::Srv {
                priority: 0,
                weight: 100,
                port: port.port,
                target: target.clone(),
            };
            let rdatas: Vec<RData> = if headless {
                hosts.iter().map(|(h, _)| record(h)).collect()
            } else {
                vec![record(&name)]
            };
            let rrsets = if rdatas.is_empty() {
                vec![]
            } else {
                vec![RRset::fixed(rtype::SRV, self.ttl, rdatas)]
            };
            out.push((srv, NodeData::new(rrsets)));
        }
        for (host, ips) in hosts {
            out.push((host, NodeData::new(fixed_sets(&ips))));
        }
        out
    }

    /// `SVC.NS.FED.svc.DOMAIN` (DESIGN §1, what kube-dns `--federations` answered), per client
    /// location: when the client's cluster has ready endpoints of the service, the Service's
    /// ClusterIPs there as A/AAAA if the source knows them, else a CNAME to the cluster-local
    /// `SVC.NS.svc.DOMAIN`; otherwise a CNAME to the federated name of the client's cluster's
    /// zone (its region's when the cluster has no zones), which falls back up the hierarchy by
    /// itself. A client in no known cluster gets a CNAME to the global name (chosen for it).
    ///
    /// Why addresses rather than the CNAME alone: the local name lies outside our zones, so the
    /// answer would end at it, and neither CoreDNS's `forward` nor pods' stub resolvers chase
    /// it; a CNAME with the ClusterIP beside it would be out of bailiwick, which caching
    /// resolvers drop. The ClusterIP is what the cluster's own DNS would answer for that name.
    fn redirect(&self, svc: &Service) -> Option<(DnsName, NodeData)> {
        let (fed, ttl) = (self.fed, self.ttl);
        let domain = fed.cluster_domain.as_ref()?;
        let zone = fed.redirect_zone()?;
        let name = DnsName::parse(&format!("{}.{}.{zone}", svc.name, svc.namespace)).ok()?;
        let local = DnsName::parse(&format!("{}.{}.svc.{domain}", svc.name, svc.namespace)).ok()?;
        let label = format!("{}.{}.{}.svc", svc.name, svc.namespace, fed.name);
        let global = DnsName::parse(&format!("{label}.{}", fed.zone)).ok()?;
        let locations = self.locator.locations();
        let per_location = (0..locations.len())
            .map(|id| {
                let cluster = self
                    .locator
                    .cluster_of(id)
                    .and_then(|c| fed.clusters.iter().find(|x| x.name == c));
                let target = match cluster {
                    None => global.clone(),
                    Some(c)
                        if let Some(sh) = svc
                            .shards
                            .iter()
                            .find(|s| s.cluster == c.name && s.ready_endpoints > 0) =>
                    {
                        if !sh.cluster_ips.is_empty() {
                            let set = AddressSet::from_ips(&sh.cluster_ips);
                            return Family::BOTH
                                .iter()
                                .filter_map(|&f| self.addr_set(f, &set))
                                .collect();
                        }
                        local.clone()
                    }
                    Some(c) => {
                        let asked = locations[id].as_ref().and_then(|l| l.zone.as_ref());
                        let zone = asked.filter(|z| c.zones.contains(z)).or(c.zones.first());
                        let suffix = match zone {
                            Some(z) => format!("{z}.{}.{}", c.region, fed.zone),
                            None => format!("{}.{}", c.region, fed.zone),
                        };
                        DnsName::parse(&format!("{label}.{suffix}")).unwrap_or(global.clone())
                    }
                };
                vec![RRset::fixed(rtype::CNAME, ttl, vec![RData::Cname(target)])]
            })
            .collect();
        Some((name, Self::node(per_location)))
    }

    /// The federated names of one service: global, regional, zonal, and SRV names at each.
    fn federated(
        &self,
        svc: &Service,
        sel: &selection::ServiceSelection,
    ) -> Vec<(DnsName, NodeData)> {
        let (fed, ttl) = (self.fed, self.ttl);
        let mut mine: Vec<(DnsName, NodeData)> = Vec::new();
        let label = format!("{}.{}.{}.svc", svc.name, svc.namespace, fed.name);
        let name_at = |suffix: &str| DnsName::parse(&format!("{label}.{suffix}{}", fed.zone));
        let Ok(global) = name_at("") else {
            return mine;
        };
        // Each level: (name, its addresses, names to fall back to in order; the global name last).
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
            // Nothing healthy here in any family: point one level up (zonal → regional →
            // global), unless nothing is healthy anywhere, where a CNAME would only lead to an
            // empty name. Healthy shards of one family only: the other family is flattened
            // from above (`level_node`), so the CNAME is only ever alone at its name.
            let leads_somewhere = fallbacks.iter().any(|(_, s)| !s.is_empty());
            let data = if fallbacks.is_empty() {
                self.global_node(sel)
            } else if !set.is_empty() || !leads_somewhere {
                self.level_node(set, fallbacks, sel)
            } else {
                NodeData::new(vec![RRset::fixed(
                    rtype::CNAME,
                    ttl,
                    vec![RData::Cname(fallbacks[0].0.clone())],
                )])
            };
            mine.push((name.clone(), data));
            for port in &svc.ports {
                let Ok(srv_name) =
                    DnsName::parse(&format!("_{}._{}.{}", port.name, port.protocol, name))
                else {
                    continue;
                };
                // An SRV target must own addresses (RFC 2782: never an alias), so point at the
                // nearest level that has healthy shards of any family; that level answers the
                // family it lacks with addresses flattened from above, never with a CNAME.
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
                mine.push((srv_name, NodeData::new(rrsets)));
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
            ttl: None,
            imports: vec![],
        };
        (
            host.host.clone(),
            self.global_node(&selection::select(self.fed, &svc, self.locator)),
        )
    }

    /// A `DNSEndpoint` name: its records served as written, one RRset per type with the
    /// lowest TTL given (RFC 2181 §5.2), every record every time.
    pub(super) fn endpoint(&self, ep: &EndpointName) -> NodeData {
        let mut rrsets: Vec<RRset> = Vec::new();
        for (ttl, data) in &ep.records {
            let t = data.rtype();
            match rrsets.iter_mut().find(|s| s.rtype == t) {
                Some(set) => {
                    set.ttl = set.ttl.min(*ttl);
                    if !set.rdatas.contains(data) {
                        set.rdatas.push(data.clone());
                    }
                }
                None => rrsets.push(RRset::fixed(t, *ttl, vec![data.clone()])),
            }
        }
        NodeData::new(rrsets)
    }
}

/// What an MCS service name answers a client of `cluster` (KEP-1645 "DNS"): shared by the
/// layout and `/explain`, so the explanation is the rule that was applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum McsChoice<'a> {
    /// The ClusterSetIPs of the client's cluster's import (local to that cluster).
    ClusterSetIp(&'a Import),
    /// A headless service: every ready endpoint of every cluster.
    Headless,
    /// What the global name answers this client.
    Global,
}

/// The rule: the client's cluster's ClusterSetIP import first, else every ready endpoint of a
/// `headless` service ([`headless_hosts`] is `Some`), else the global name's answer.
pub fn mcs_choice<'a>(svc: &'a Service, cluster: Option<&str>, headless: bool) -> McsChoice<'a> {
    let own = cluster.and_then(|c| {
        (svc.imports.iter()).find(|i| i.cluster == c && !i.headless && !i.ips.is_empty())
    });
    match own {
        Some(i) => McsChoice::ClusterSetIp(i),
        None if headless => McsChoice::Headless,
        None => McsChoice::Global,
    }
}

/// The per-endpoint names of a headless MCS service (`HOSTNAME.CLUSTER.` + `name`) with their
/// addresses, sorted by name, or `None` when the service is not one: it must be imported as
/// `Headless` somewhere and exported headless (a shard carrying endpoints, even none ready).
pub fn headless_hosts(svc: &Service, name: &DnsName) -> Option<Vec<(DnsName, Vec<IpAddr>)>> {
    if !svc.imports.iter().any(|i| i.headless) {
        return None;
    }
    let mut exported = false;
    let mut hosts: Vec<(DnsName, Vec<IpAddr>)> = Vec::new();
    for shard in &svc.shards {
        let Some(eps) = &shard.headless else {
            continue;
        };
        exported = true;
        for e in eps.iter() {
            let named: Vec<(String, Vec<IpAddr>)> = match &e.hostname {
                Some(h) => vec![(h.clone(), e.addresses.clone())],
                None => e
                    .addresses
                    .iter()
                    .map(|a| (a.to_string().replace(['.', ':'], "-"), vec![*a]))
                    .collect(),
            };
            for (label, ips) in named {
                if let Ok(n) = DnsName::parse(&format!("{label}.{}.{name}", shard.cluster)) {
                    hosts.push((n, ips));
                }
            }
        }
    }
    if !exported {
        return None;
    }
    hosts.sort();
    // One hostname on two endpoints (a pod replaced while its slice lags): one name, both.
    let mut merged: Vec<(DnsName, Vec<IpAddr>)> = Vec::with_capacity(hosts.len());
    for (n, ips) in hosts {
        match merged.last_mut() {
            Some((m, all)) if *m == n => all.extend(ips),
            _ => merged.push((n, ips)),
        }
    }
    for (_, ips) in &mut merged {
        ips.sort();
        ips.dedup();
    }
    Some(merged)
}

/// The federation records fedns computed, as the etcd publisher writes them: every federated
/// name (address, CNAME and SRV names, and the empty names of services healthy nowhere) with
/// its TTL and values, sorted by name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FederationRecords {
    /// Zones of the federations (the publisher owns its keys below these).
    pub zones: Vec<DnsName>,
    pub records: Vec<(DnsName, u32, Vec<Published>)>,
}

/// One value of a published name, as a SkyDNS entry carries it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Published {
    /// An address, or a CNAME target (without the final dot): `{"host"}`.
    Host(String),
    /// An SRV record: `{"host": target, "port", "priority", "weight"}`.
    Srv {
        target: String,
        port: u16,
        priority: u16,
        weight: u16,
    },
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
        // The in-cluster redirect names stay out: their answer depends on the asking cluster,
        // and a SkyDNS reader has none.
        let laid_out = fed
            .services
            .iter()
            .flat_map(|svc| layout.service(svc))
            .filter(|(n, _)| in_zone(n))
            .chain(
                fed.ingress_hosts
                    .iter()
                    .filter(|h| in_zone(&h.host))
                    .map(|h| layout.ingress(h)),
            )
            .chain(
                fed.endpoints
                    .iter()
                    .filter(|e| in_zone(&e.name))
                    .map(|e| (e.name.clone(), layout.endpoint(e))),
            );
        let bare = |t: &DnsName| t.to_string().trim_end_matches('.').to_string();
        for (name, data) in laid_out {
            let mut values = Vec::new();
            // A service's own TTL may be above the federation's.
            let ttl = data
                .rrsets
                .iter()
                .map(|r| r.ttl)
                .min()
                .unwrap_or(fed.ttl.max(1));
            for rr in &data.rrsets {
                for d in &rr.rdatas {
                    let v = match d {
                        RData::A(a) => Published::Host(a.to_string()),
                        RData::Aaaa(a) => Published::Host(a.to_string()),
                        RData::Cname(t) => Published::Host(bare(t)),
                        RData::Srv {
                            priority,
                            weight,
                            port,
                            target,
                        } => Published::Srv {
                            target: bare(target),
                            port: *port,
                            priority: *priority,
                            weight: *weight,
                        },
                        _ => continue, // DNSEndpoint TXT records: SkyDNS has no place for them here
                    };
                    if !values.contains(&v) {
                        values.push(v);
                    }
                }
            }
            // A name with nothing (a level of a service healthy nowhere) is published too,
            // empty: it exists (NODATA), as on the primary, never NXDOMAIN.
            out.records.push((name, ttl, values));
        }
    }
    // A name laid out twice (an ingress host that is also a service name) keeps one record set.
    out.records.sort();
    out.records.dedup_by(|later, earlier| later.0 == earlier.0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Cluster, Policy, ServicePort, Shard};

    const CLUSTERS: [(&str, &str, &str); 3] = [
        ("e1", "east", "east-a"),
        ("e2", "east", "east-b"),
        ("w1", "west", "west-a"),
    ];

    /// A shard of cluster `c` with the families of `mask` (bit 0: IPv4, bit 1: IPv6).
    fn shard(c: usize, mask: usize) -> Shard {
        let mut addresses = Vec::new();
        if mask & 1 != 0 {
            addresses.push(format!("10.0.0.{}", c + 1).parse().unwrap());
        }
        if mask & 2 != 0 {
            addresses.push(format!("2001:db8::{}", c + 1).parse().unwrap());
        }
        Shard {
            weight: None,
            cluster: CLUSTERS[c].0.into(),
            addresses,
            ready_endpoints: 1,
            not_ready_endpoints: 0,
            zones: vec![],
            probe: Default::default(),
            probe_down: Vec::new(),
            headless: None,
            cluster_ips: vec![],
        }
    }

    fn federation(masks: [usize; 3], policy: Policy) -> Federation {
        Federation {
            cluster_domain: None,
            clusterset_domain: None,
            name: "f".into(),
            zone: DnsName::parse("example.com").unwrap(),
            ttl: 30,
            max_answers: 8,
            policy,
            clusters: CLUSTERS
                .iter()
                .enumerate()
                .map(|(i, (n, r, z))| Cluster {
                    client_networks: vec![],
                    name: n.to_string(),
                    region: r.to_string(),
                    zones: vec![z.to_string()],
                    // w1 carries no weight: `weighted` must still reach its addresses.
                    weight: [2, 1, 0][i],
                })
                .collect(),
            services: vec![std::sync::Arc::new(Service {
                ttl: None,
                imports: vec![],
                name: "s".into(),
                namespace: "n".into(),
                ports: vec![ServicePort {
                    name: "http".into(),
                    protocol: "tcp".into(),
                    port: 80,
                }],
                shards: (0..3)
                    .filter(|&c| masks[c] != 0)
                    .map(|c| shard(c, masks[c]))
                    .collect(),
                policy: None,
            })],
            ingress_hosts: vec![],
            endpoints: Default::default(),
        }
    }

    /// The RRset a question for `t` at `name` ends with, following CNAMEs among `names`.
    fn chase<'n>(
        names: &'n [(DnsName, NodeData)],
        name: &DnsName,
        t: u16,
        loc: usize,
    ) -> Option<&'n RRset> {
        let mut cur = name.clone();
        for _ in 0..4 {
            let node = &names.iter().find(|(n, _)| *n == cur)?.1;
            if let Some(rr) = node.get(loc, t) {
                return Some(rr);
            }
            let RData::Cname(next) = &node.get(loc, rtype::CNAME)?.rdatas[0] else {
                return None;
            };
            cur = next.clone();
        }
        None
    }

    /// DNSEndpoint names in the federation's zone are published for etcd (what SkyDNS can
    /// hold: addresses, a CNAME, SRV), the lowest TTL of the name; names elsewhere are not.
    #[test]
    fn dns_endpoint_names_are_published_for_etcd() {
        let mut fed = federation([1, 0, 0], Policy::Geo);
        let n = |s: &str| DnsName::parse(s).unwrap();
        fed.endpoints = std::sync::Arc::new(vec![
            EndpointName {
                name: n("app.example.com"),
                records: vec![
                    (60, RData::A("192.0.2.1".parse().unwrap())),
                    (20, RData::Aaaa("2001:db8::1".parse().unwrap())),
                ],
            },
            EndpointName {
                name: n("alias.example.com"),
                records: vec![(60, RData::Cname(n("app.example.com")))],
            },
            EndpointName {
                name: n("other.example.net"),
                records: vec![(60, RData::A("192.0.2.2".parse().unwrap()))],
            },
        ]);
        let out = federation_records(&[fed]);
        let find = |name: &str| out.records.iter().find(|r| r.0 == n(name)).cloned();
        assert_eq!(
            find("app.example.com"),
            Some((
                n("app.example.com"),
                20,
                vec![
                    Published::Host("192.0.2.1".into()),
                    Published::Host("2001:db8::1".into())
                ]
            ))
        );
        assert_eq!(
            find("alias.example.com").map(|r| r.2),
            Some(vec![Published::Host("app.example.com".into())])
        );
        assert_eq!(find("other.example.net"), None);
    }

    /// Every mix of families over three clusters, under every policy: a CNAME is always alone
    /// at its name, every address name answers a family exactly when some healthy shard has
    /// it (NODATA only then), and an SRV target is never an alias.
    #[test]
    fn every_family_mix_answers_each_family_wherever_it_is_healthy() {
        let locator = crate::dns::tests::locator();
        let policies = [
            Policy::Geo,
            Policy::All,
            Policy::Weighted,
            Policy::Failover(vec!["w1".into(), "east".into()]),
        ];
        for policy in policies {
            for m in 0..64 {
                let masks = [m & 3, (m >> 2) & 3, (m >> 4) & 3];
                let fed = federation(masks, policy.clone());
                let names = Layout::new(&fed, locator).service(&fed.services[0]);
                let any = |bit: usize| masks.iter().any(|k| k & bit != 0);
                for (name, node) in &names {
                    for loc in 0..locator.locations().len() {
                        let here = node.at(loc);
                        if here.iter().any(|r| r.rtype == rtype::CNAME) {
                            assert_eq!(here.len(), 1, "{policy:?} {masks:?} {name}: CNAME alone");
                        }
                        if let Some(srv) = node.get(loc, rtype::SRV) {
                            let RData::Srv { target, .. } = &srv.rdatas[0] else {
                                panic!()
                            };
                            let t = &names.iter().find(|(n, _)| n == target).unwrap().1;
                            assert!(t.get(loc, rtype::CNAME).is_none(), "{name}: SRV → alias");
                            continue;
                        }
                        if name.to_string().starts_with('_') {
                            assert!(!any(1) && !any(2), "{name}: SRV missing");
                            continue;
                        }
                        for (t, bit) in [(rtype::A, 1), (rtype::AAAA, 2)] {
                            let got = chase(&names, name, t, loc);
                            assert_eq!(
                                got.is_some_and(|r| !r.rdatas.is_empty()),
                                any(bit),
                                "{policy:?} {masks:?} {name} type {t} location {loc}"
                            );
                        }
                    }
                }
            }
        }
    }

    /// A headless MCS service (KEP-1645 §2.4): every ready endpoint's addresses at the service
    /// name, uncapped, except for a client whose cluster has a ClusterSetIP import; a name per
    /// endpoint and cluster (its hostname, else its address dashed), and SRV records that
    /// target those names. Without a Headless import the endpoints are not served.
    #[test]
    fn headless_clusterset_names_answer_every_endpoint() {
        use crate::model::Endpoint;
        let locator = crate::dns::tests::locator();
        let mut fed = federation([1, 0, 0], Policy::Geo);
        fed.max_answers = 1;
        fed.clusterset_domain = DnsName::parse("clusterset.local").ok();
        let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
        let hl = |c: usize, eps: Vec<Endpoint>| Shard {
            cluster: CLUSTERS[c].0.into(),
            ready_endpoints: eps.len() as u32,
            headless: Some(std::sync::Arc::new(eps)),
            ..Shard::default()
        };
        let svc = std::sync::Arc::make_mut(&mut fed.services[0]);
        svc.shards.push(hl(
            1,
            vec![Endpoint {
                hostname: Some("db-0".into()),
                addresses: vec![ip("10.244.2.5")],
            }],
        ));
        svc.shards.push(hl(
            2,
            vec![
                Endpoint {
                    hostname: Some("db-0".into()),
                    addresses: vec![ip("10.244.1.5")],
                },
                Endpoint {
                    hostname: None,
                    addresses: vec![ip("10.244.1.6"), ip("2001:db8::6")],
                },
            ],
        ));
        svc.imports = vec![
            Import {
                cluster: "e1".into(),
                ips: vec![ip("10.100.0.1")],
                headless: false,
            },
            Import {
                cluster: "w1".into(),
                ips: vec![],
                headless: true,
            },
        ];
        let names = Layout::new(&fed, locator).service(&fed.services[0]);
        let node = |n: &str| {
            let n = DnsName::parse(n).unwrap();
            names.iter().find(|(m, _)| *m == n).map(|(_, d)| d)
        };
        let rdatas = |d: &NodeData, loc: usize, t: u16| -> Vec<RData> {
            d.get(loc, t).map(|r| r.rdatas.clone()).unwrap_or_default()
        };
        let svc_name = node("s.n.svc.clusterset.local").unwrap();
        let e1 = locator.locate(ip("10.40.0.1"), 0).0 as usize;
        let w1 = locator.locate(ip("10.41.0.1"), 0).0 as usize;
        assert_eq!(
            rdatas(svc_name, e1, rtype::A),
            [RData::A("10.100.0.1".parse().unwrap())]
        );
        for loc in [0, w1] {
            let a = svc_name.get(loc, rtype::A).unwrap();
            // Every endpoint, `max_answers` (1) at a time, in turn.
            assert_eq!(a.rotation, Rotation::Rotate { cap: 1 });
            let every =
                ["10.244.1.5", "10.244.1.6", "10.244.2.5"].map(|a| RData::A(a.parse().unwrap()));
            assert_eq!(a.rdatas, every);
            let turns: Vec<Vec<RData>> = (0..a.variants()).map(|v| a.variant(v, 3)).collect();
            assert_eq!(turns, every.map(|r| vec![r]));
            assert_eq!(
                rdatas(svc_name, loc, rtype::AAAA),
                [RData::Aaaa("2001:db8::6".parse().unwrap())]
            );
        }
        let hosts = [
            ("10-244-1-6.w1", rtype::A, "10.244.1.6"),
            ("2001-db8--6.w1", rtype::AAAA, "2001:db8::6"),
            ("db-0.e2", rtype::A, "10.244.2.5"),
            ("db-0.w1", rtype::A, "10.244.1.5"),
        ];
        for (h, t, a) in hosts {
            let d = node(&format!("{h}.s.n.svc.clusterset.local")).unwrap_or_else(|| panic!("{h}"));
            assert_eq!(rdatas(d, 0, t), [RData::from_ip(ip(a))], "{h}");
        }
        let srv = node("_http._tcp.s.n.svc.clusterset.local").unwrap();
        let mut targets: Vec<String> = rdatas(srv, 0, rtype::SRV)
            .iter()
            .map(|r| match r {
                RData::Srv {
                    target, port: 80, ..
                } => target.to_string(),
                other => panic!("{other:?}"),
            })
            .collect();
        let want: Vec<String> = hosts
            .iter()
            .map(|(h, _, _)| format!("{h}.s.n.svc.clusterset.local."))
            .collect();
        targets.sort();
        assert_eq!(targets, want);
        // No Headless import: the service answers as the global name, and no endpoint name.
        std::sync::Arc::make_mut(&mut fed.services[0])
            .imports
            .truncate(1);
        let names = Layout::new(&fed, locator).service(&fed.services[0]);
        assert!(
            !names
                .iter()
                .any(|(n, _)| n.to_string().starts_with("db-0."))
        );
        let srv = &names
            .iter()
            .find(|(n, _)| n.to_string().starts_with("_http._tcp.s.n.svc.clusterset"))
            .unwrap()
            .1;
        assert_eq!(
            rdatas(srv, 0, rtype::SRV),
            [RData::Srv {
                priority: 0,
                weight: 100,
                port: 80,
                target: DnsName::parse("s.n.svc.clusterset.local").unwrap()
            }]
        );
    }

    /// A zone with IPv4 only answers AAAA with the IPv6 addresses from above, owned by the
    /// zonal name itself; a zone with nothing is a CNAME.
    #[test]
    fn a_missing_family_is_flattened_and_an_empty_level_is_an_alias() {
        let locator = crate::dns::tests::locator();
        let fed = federation([1, 0, 2], Policy::Geo);
        let names = Layout::new(&fed, locator).service(&fed.services[0]);
        let node = |n: &str| {
            let n = DnsName::parse(n).unwrap();
            &names.iter().find(|(m, _)| *m == n).unwrap().1
        };
        let zonal = node("s.n.f.svc.east-a.east.example.com");
        let types: Vec<u16> = zonal.rrsets.iter().map(|r| r.rtype).collect();
        assert_eq!(types, [rtype::A, rtype::AAAA]);
        assert_eq!(
            zonal.get(0, rtype::AAAA).unwrap().rdatas,
            [RData::Aaaa("2001:db8::3".parse().unwrap())]
        );
        let empty = node("s.n.f.svc.east-b.east.example.com");
        assert_eq!(
            &*empty.rrsets,
            [RRset::fixed(
                rtype::CNAME,
                30,
                vec![RData::Cname(
                    DnsName::parse("s.n.f.svc.east.example.com").unwrap()
                )]
            )]
        );
    }
}
