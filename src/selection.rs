//! Selection: which healthy shards a federated name answers with.
//!
//! Pure functions from a [`Federation`] snapshot to address sets per scope (global, each region,
//! each zone). No I/O, no clocks, no randomness: the same snapshot always gives the same sets, in
//! a stable order, so tables built from equal snapshots are equal. Regional and zonal names
//! always mean "healthy shards there"; global names follow the service's [`Policy`], computed
//! once per client location so the query path only picks a precomputed answer.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::geo::{Location, Locator, distance_km};
use crate::model::{Cluster, Federation, Policy, ProbeState, Service, Shard};

/// A shard is healthy when it has at least one ready endpoint and at least one address that
/// its active probes (if any) have not marked down.
pub fn is_healthy(shard: &Shard) -> bool {
    shard.ready_endpoints >= 1
        && shard.probe != ProbeState::Down
        && shard
            .addresses
            .iter()
            .any(|a| !shard.probe_down.contains(a))
}

/// Addresses of one scope, deduplicated and sorted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AddressSet {
    pub v4: Vec<Ipv4Addr>,
    pub v6: Vec<Ipv6Addr>,
}

impl AddressSet {
    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    /// The set of these addresses (sorted, each once).
    pub fn from_ips(ips: &[IpAddr]) -> Self {
        let mut v4: Vec<Ipv4Addr> = Vec::new();
        let mut v6: Vec<Ipv6Addr> = Vec::new();
        for ip in ips {
            match ip {
                IpAddr::V4(a) => v4.push(*a),
                IpAddr::V6(a) => v6.push(*a),
            }
        }
        v4.sort();
        v4.dedup();
        v6.sort();
        v6.dedup();
        AddressSet { v4, v6 }
    }

    fn from_shards<'a>(shards: impl Iterator<Item = &'a Shard>) -> Self {
        let mut v4 = BTreeSet::new();
        let mut v6 = BTreeSet::new();
        for shard in shards {
            // An address whose probes fail leaves the answer; its siblings stay.
            for ip in shard
                .addresses
                .iter()
                .filter(|a| !shard.probe_down.contains(a))
            {
                match ip {
                    IpAddr::V4(a) => v4.insert(*a),
                    IpAddr::V6(a) => v6.insert(*a),
                };
            }
        }
        AddressSet {
            v4: v4.into_iter().collect(),
            v6: v6.into_iter().collect(),
        }
    }
}

/// The federation's topology: regions in first-seen order, each with its zones.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Region {
    pub name: String,
    pub zones: Vec<String>,
}

pub fn regions(fed: &Federation) -> Vec<Region> {
    let mut out: Vec<Region> = Vec::new();
    for c in &fed.clusters {
        let idx = match out.iter().position(|r| r.name == c.region) {
            Some(i) => i,
            None => {
                out.push(Region {
                    name: c.region.clone(),
                    zones: Vec::new(),
                });
                out.len() - 1
            }
        };
        for z in &c.zones {
            if !out[idx].zones.contains(z) {
                out[idx].zones.push(z.clone());
            }
        }
    }
    out
}

/// An address family: every selection and fallback is decided for each on its own, so an AAAA
/// question goes where IPv6 is healthy whatever the IPv4 shards do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub const BOTH: [Family; 2] = [Family::V4, Family::V6];

    pub fn label(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }
}

impl AddressSet {
    /// Whether this set has addresses of family `f`.
    pub fn has(&self, f: Family) -> bool {
        match f {
            Family::V4 => !self.v4.is_empty(),
            Family::V6 => !self.v6.is_empty(),
        }
    }

    /// The addresses of family `f` only.
    pub fn only(&self, f: Family) -> AddressSet {
        match f {
            Family::V4 => AddressSet {
                v4: self.v4.clone(),
                v6: Vec::new(),
            },
            Family::V6 => AddressSet {
                v4: Vec::new(),
                v6: self.v6.clone(),
            },
        }
    }
}

/// What a global name answers for one client location, per address family: address groups with
/// weights, each group holding addresses of that family only. The query path rotates through
/// groups in proportion to their weights; every policy but `weighted` has exactly one group.
/// A family's groups are empty only when no healthy shard anywhere has that family.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Choice {
    /// Indexed by family: `[IPv4, IPv6]`.
    pub by_family: [Vec<(u32, AddressSet)>; 2],
}

impl Choice {
    pub fn family(&self, f: Family) -> &[(u32, AddressSet)] {
        &self.by_family[f as usize]
    }

    pub fn is_empty(&self) -> bool {
        self.by_family.iter().flatten().all(|(_, s)| s.is_empty())
    }
}

/// Healthy address sets of one service at every level.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceSelection {
    /// Every healthy shard: what `all` answers, and what decides fallbacks.
    pub global: AddressSet,
    /// The global name's answer per client location (index 0: unknown location).
    pub global_by_location: Vec<Choice>,
    /// Per region, in [`regions`] order.
    pub regions: Vec<(String, AddressSet)>,
    /// Per (region, zone).
    pub zones: Vec<(String, String, AddressSet)>,
}

pub fn select(fed: &Federation, svc: &Service, locator: &Locator) -> ServiceSelection {
    let cluster = |name: &str| -> Option<&Cluster> { fed.clusters.iter().find(|c| c.name == name) };
    // Shards of clusters the federation does not know have no place in the topology; they
    // still count globally, since the service does run there.
    let healthy: Vec<(&Shard, Option<&Cluster>)> = svc
        .shards
        .iter()
        .filter(|s| is_healthy(s))
        .map(|s| (s, cluster(&s.cluster)))
        .collect();
    let in_zone = |s: &Shard, c: &Cluster, zone: &str| {
        if s.zones.is_empty() {
            c.zones.iter().any(|z| z == zone)
        } else {
            s.zones.iter().any(|z| z == zone)
        }
    };
    let global = AddressSet::from_shards(healthy.iter().map(|(s, _)| *s));
    let mut regions_out = Vec::new();
    let mut zones_out = Vec::new();
    for region in regions(fed) {
        let set = AddressSet::from_shards(
            healthy
                .iter()
                .filter(|(_, c)| c.is_some_and(|c| c.region == region.name))
                .map(|(s, _)| *s),
        );
        regions_out.push((region.name.clone(), set));
        for zone in &region.zones {
            let set = AddressSet::from_shards(
                healthy
                    .iter()
                    .filter(|(s, c)| {
                        c.is_some_and(|c| c.region == region.name && in_zone(s, c, zone))
                    })
                    .map(|(s, _)| *s),
            );
            zones_out.push((region.name.clone(), zone.clone(), set));
        }
    }
    let policy = svc.policy.as_ref().unwrap_or(&fed.policy);
    let from = |pred: &dyn Fn(&Shard, Option<&Cluster>) -> bool| {
        AddressSet::from_shards(healthy.iter().filter(|(s, c)| pred(s, *c)).map(|(s, _)| *s))
    };
    // Location-independent policies are computed once per family, not once per location.
    let failover: [Option<AddressSet>; 2] = Family::BOTH.map(|f| match policy {
        Policy::Failover(order) => order
            .iter()
            .map(|name| {
                if fed.clusters.iter().any(|c| &c.name == name) {
                    from(&|s, _| &s.cluster == name)
                } else {
                    from(&|_, c| c.is_some_and(|c| &c.region == name))
                }
            })
            .map(|s| s.only(f))
            .find(|s| !s.is_empty()),
        _ => None,
    });
    // A shard's own weight (set per service) wins over its cluster's.
    let weight_of = |c: &Cluster| {
        svc.shards
            .iter()
            .find(|s| s.cluster == c.name)
            .and_then(|s| s.weight)
            .unwrap_or(c.weight)
    };
    let weighted: [Vec<(u32, AddressSet)>; 2] = Family::BOTH.map(|f| match policy {
        Policy::Weighted => fed
            .clusters
            .iter()
            .map(|c| (weight_of(c), c))
            .filter(|(w, _)| *w > 0)
            .map(|(w, c)| (w, from(&|s, _| s.cluster == c.name).only(f)))
            .filter(|(_, s)| !s.is_empty())
            .collect(),
        _ => Vec::new(),
    });
    let global_by_location = locator
        .locations()
        .iter()
        .map(|loc| Choice {
            by_family: Family::BOTH.map(|f| {
                let everything = || vec![(1, global.only(f))];
                match (policy, loc) {
                    (Policy::All, _) | (Policy::Geo, None) => everything(),
                    (Policy::Geo, Some(loc)) => {
                        nearest(&placed(fed, loc), f, &regions_out, &zones_out, locator)
                            .map_or_else(everything, |s| vec![(1, s.only(f))])
                    }
                    (Policy::Failover(_), _) => failover[f as usize]
                        .clone()
                        .map_or_else(everything, |s| vec![(1, s)]),
                    (Policy::Weighted, _) => {
                        let groups = &weighted[f as usize];
                        if groups.is_empty() {
                            everything()
                        } else {
                            groups.clone()
                        }
                    }
                }
            }),
        })
        .collect();
    ServiceSelection {
        global,
        global_by_location,
        regions: regions_out,
        zones: zones_out,
    }
}

/// Where a client of location `loc` is: a client in a member cluster of `fed` is in that
/// cluster's region and (unless its network names one of them) first zone, whatever the
/// network said, since a Kubernetes cluster's topology is known only from its Nodes.
pub fn placed(fed: &Federation, loc: &Location) -> Location {
    let Some(c) = loc
        .cluster
        .as_ref()
        .and_then(|n| fed.clusters.iter().find(|c| &c.name == n))
    else {
        return loc.clone();
    };
    let zone = match &loc.zone {
        Some(z) if c.zones.contains(z) => Some(z.clone()),
        _ => c.zones.first().cloned(),
    };
    Location {
        region: c.region.clone(),
        zone,
        cluster: loc.cluster.clone(),
    }
}

/// `geo` for family `f`: the client's zone, then its region, then other regions by distance
/// from it; the first of them with a healthy shard of that family.
fn nearest<'s>(
    loc: &Location,
    f: Family,
    regions: &'s [(String, AddressSet)],
    zones: &'s [(String, String, AddressSet)],
    locator: &Locator,
) -> Option<&'s AddressSet> {
    if let Some(z) = &loc.zone
        && let Some((_, _, set)) = zones
            .iter()
            .find(|(r, zz, s)| r == &loc.region && zz == z && s.has(f))
    {
        return Some(set);
    }
    if let Some((_, set)) = regions.iter().find(|(r, s)| r == &loc.region && s.has(f)) {
        return Some(set);
    }
    let here = locator.coordinates(&loc.region)?;
    regions
        .iter()
        .filter(|(_, s)| s.has(f))
        .filter_map(|(r, s)| locator.coordinates(r).map(|c| (distance_km(here, c), s)))
        .min_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, s)| s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::DnsName;

    fn shard(cluster: &str, ip: &str, ready: u32) -> Shard {
        Shard {
            weight: None,
            cluster: cluster.into(),
            addresses: vec![ip.parse().unwrap()],
            ready_endpoints: ready,
            not_ready_endpoints: 0,
            zones: vec![],
            probe: Default::default(),
            probe_down: Vec::new(),
            headless: None,
            cluster_ips: vec![],
        }
    }

    fn fed(shards: Vec<Shard>) -> Federation {
        let c = |n: &str, r: &str, z: &[&str]| Cluster {
            client_networks: vec![],
            name: n.into(),
            region: r.into(),
            zones: z.iter().map(|s| s.to_string()).collect(),
            weight: if n == "e1" { 3 } else { 1 },
        };
        Federation {
            cluster_domain: None,
            clusterset_domain: None,
            name: "f".into(),
            zone: DnsName::parse("example.com").unwrap(),
            ttl: 30,
            max_answers: 8,
            policy: Policy::Geo,
            clusters: vec![
                c("e1", "east", &["east-a", "east-b"]),
                c("e2", "east", &["east-c"]),
                c("w1", "west", &["west-a"]),
            ],
            services: vec![Service {
                ttl: None,
                imports: vec![],
                name: "s".into(),
                namespace: "n".into(),
                ports: vec![],
                shards,
                policy: None,
            }]
            .into_iter()
            .map(std::sync::Arc::new)
            .collect(),
            ingress_hosts: vec![],
            endpoints: Default::default(),
        }
    }

    fn locator() -> Locator {
        use crate::geo::ClientNetwork;
        let net = |a: &str, p: u8, r: &str, z: Option<&str>| ClientNetwork {
            cluster: None,
            addr: a.parse().unwrap(),
            prefix: p,
            region: r.into(),
            zone: z.map(Into::into),
        };
        Locator::new(
            &[
                ("east".into(), 40.0, -75.0),
                ("west".into(), 37.0, -122.0),
                ("eu".into(), 50.0, 8.0),
            ],
            &[
                net("10.1.0.0", 16, "east", Some("east-c")),
                net("10.2.0.0", 16, "west", None),
                net("10.3.0.0", 16, "eu", None),
            ],
            &[],
            true,
            None,
        )
    }

    fn choice_for(
        sel: &ServiceSelection,
        l: &Locator,
        region: Option<&str>,
        zone: Option<&str>,
    ) -> Choice {
        let want = region.map(|r| Location {
            cluster: None,
            region: r.into(),
            zone: zone.map(Into::into),
        });
        let i = l
            .locations()
            .iter()
            .position(|x| *x == want)
            .expect("location exists");
        sel.global_by_location[i].clone()
    }

    fn v4s(c: &Choice) -> Vec<String> {
        c.family(Family::V4)
            .iter()
            .flat_map(|(_, s)| s.v4.iter().map(|a| a.to_string()))
            .collect()
    }

    #[test]
    fn geo_prefers_zone_then_region_then_nearest_region() {
        let l = locator();
        let f = fed(vec![
            shard("e1", "10.0.0.1", 1),
            shard("e2", "10.0.0.2", 1),
            shard("w1", "10.0.0.3", 1),
        ]);
        let sel = select(&f, &f.services[0], &l);
        assert_eq!(
            v4s(&choice_for(&sel, &l, None, None)),
            ["10.0.0.1", "10.0.0.2", "10.0.0.3"],
            "unknown: all"
        );
        assert_eq!(
            v4s(&choice_for(&sel, &l, Some("east"), Some("east-c"))),
            ["10.0.0.2"],
            "own zone first"
        );
        assert_eq!(
            v4s(&choice_for(&sel, &l, Some("east"), None)),
            ["10.0.0.1", "10.0.0.2"]
        );
        assert_eq!(v4s(&choice_for(&sel, &l, Some("west"), None)), ["10.0.0.3"]);
        // eu has no shards: the nearest region with healthy shards is east.
        assert_eq!(
            v4s(&choice_for(&sel, &l, Some("eu"), None)),
            ["10.0.0.1", "10.0.0.2"]
        );
        // west goes unhealthy: west clients fail over to east.
        let f = fed(vec![shard("e1", "10.0.0.1", 1), shard("w1", "10.0.0.3", 0)]);
        let sel = select(&f, &f.services[0], &l);
        assert_eq!(v4s(&choice_for(&sel, &l, Some("west"), None)), ["10.0.0.1"]);
    }

    fn v6s(c: &Choice) -> Vec<String> {
        c.family(Family::V6)
            .iter()
            .flat_map(|(_, s)| s.v6.iter().map(|a| a.to_string()))
            .collect()
    }

    fn dual(cluster: &str, v4: &str, v6: &str) -> Shard {
        let mut s = shard(cluster, v4, 1);
        s.addresses.push(v6.parse().unwrap());
        s
    }

    fn ip4(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn an_address_failing_its_probes_leaves_and_its_siblings_stay() {
        let l = locator();
        let mut two = shard("e1", "10.0.0.1", 1);
        two.addresses.push("10.0.0.9".parse().unwrap());
        two.probe_down = vec!["10.0.0.9".parse().unwrap()];
        let f = fed(vec![two.clone(), shard("w1", "10.0.0.3", 1)]);
        assert!(is_healthy(&f.services[0].shards[0]));
        let sel = select(&f, &f.services[0], &l);
        assert_eq!(sel.global.v4, vec![ip4("10.0.0.1"), ip4("10.0.0.3")]);
        assert_eq!(sel.regions[0].1.v4, vec![ip4("10.0.0.1")]);
        // Every address failing: the shard is unhealthy.
        two.probe_down.push("10.0.0.1".parse().unwrap());
        assert!(!is_healthy(&two));
    }

    #[test]
    fn geo_chooses_each_family_on_its_own() {
        let l = locator();
        // west is IPv4-only; east-c (the east clients' zone) IPv4-only too; east-a has IPv6.
        let f = fed(vec![
            dual("e1", "10.0.0.1", "2001:db8::1"),
            shard("e2", "10.0.0.2", 1),
            shard("w1", "10.0.0.3", 1),
        ]);
        let sel = select(&f, &f.services[0], &l);
        let west = choice_for(&sel, &l, Some("west"), None);
        assert_eq!(
            (v4s(&west), v6s(&west)),
            (vec!["10.0.0.3".into()], vec!["2001:db8::1".into()])
        );
        let east_c = choice_for(&sel, &l, Some("east"), Some("east-c"));
        assert_eq!(v4s(&east_c), ["10.0.0.2"], "own zone for IPv4");
        assert_eq!(v6s(&east_c), ["2001:db8::1"], "own region for IPv6");
        // Each family's groups hold that family only.
        assert!(west.family(Family::V4).iter().all(|(_, s)| s.v6.is_empty()));
        assert!(west.family(Family::V6).iter().all(|(_, s)| s.v4.is_empty()));
        // No IPv6 anywhere: empty for every location, IPv4 untouched.
        let f = fed(vec![shard("e1", "10.0.0.1", 1), shard("w1", "10.0.0.3", 1)]);
        let sel = select(&f, &f.services[0], &l);
        assert!(
            sel.global_by_location
                .iter()
                .all(|c| v6s(c).is_empty() && !v4s(c).is_empty())
        );
        // IPv6 only in west: eu clients (nearest east) still get west's IPv6.
        let f = fed(vec![
            shard("e1", "10.0.0.1", 1),
            shard("w1", "2001:db8::3", 1),
        ]);
        let sel = select(&f, &f.services[0], &l);
        let eu = choice_for(&sel, &l, Some("eu"), None);
        assert_eq!(
            (v4s(&eu), v6s(&eu)),
            (vec!["10.0.0.1".into()], vec!["2001:db8::3".into()])
        );
    }

    #[test]
    fn failover_weighted_and_all_choose_per_family() {
        let l = locator();
        let mut f = fed(vec![
            shard("w1", "10.0.0.3", 1),
            dual("e1", "10.0.0.1", "2001:db8::1"),
        ]);
        std::sync::Arc::make_mut(&mut f.services[0]).policy =
            Some(Policy::Failover(vec!["w1".into(), "east".into()]));
        let sel = select(&f, &f.services[0], &l);
        for c in &sel.global_by_location {
            assert_eq!(
                (v4s(c), v6s(c)),
                (vec!["10.0.0.3".into()], vec!["2001:db8::1".into()])
            );
        }
        // weighted: only e2 (weight 1) has IPv6, so IPv6 is e2's alone while IPv4 keeps 3:1.
        let mut f = fed(vec![
            shard("e1", "10.0.0.1", 1),
            shard("w1", "10.0.0.3", 1),
            shard("e2", "2001:db8::2", 1),
        ]);
        f.policy = Policy::Weighted;
        let sel = select(&f, &f.services[0], &l);
        let c = &sel.global_by_location[0];
        let weights = |fam| -> Vec<u32> { c.family(fam).iter().map(|(w, _)| *w).collect() };
        assert_eq!(
            (weights(Family::V4), weights(Family::V6)),
            (vec![3, 1], vec![1])
        );
        // No weighted cluster has IPv6: every healthy IPv6 address rather than nothing.
        f.clusters[1].weight = 0; // e2
        let sel = select(&f, &f.services[0], &l);
        assert_eq!(v6s(&sel.global_by_location[0]), ["2001:db8::2"]);
        assert_eq!(v4s(&sel.global_by_location[0]), ["10.0.0.1", "10.0.0.3"]);
        // all: every address of the family, for everyone.
        let mut f = fed(vec![
            dual("e1", "10.0.0.1", "2001:db8::1"),
            shard("w1", "10.0.0.3", 1),
        ]);
        f.policy = Policy::All;
        let sel = select(&f, &f.services[0], &l);
        for c in &sel.global_by_location {
            assert_eq!(v4s(c), ["10.0.0.1", "10.0.0.3"]);
            assert_eq!(v6s(c), ["2001:db8::1"]);
        }
    }

    #[test]
    fn failover_takes_the_first_healthy_entry_for_everyone() {
        let l = locator();
        let mut f = fed(vec![shard("e1", "10.0.0.1", 1), shard("w1", "10.0.0.3", 1)]);
        std::sync::Arc::make_mut(&mut f.services[0]).policy =
            Some(Policy::Failover(vec!["w1".into(), "east".into()]));
        let sel = select(&f, &f.services[0], &l);
        assert!(
            sel.global_by_location
                .iter()
                .all(|c| v4s(c) == ["10.0.0.3"])
        );
        std::sync::Arc::make_mut(&mut f.services[0]).shards[1].ready_endpoints = 0;
        let sel = select(&f, &f.services[0], &l);
        assert!(
            sel.global_by_location
                .iter()
                .all(|c| v4s(c) == ["10.0.0.1"])
        );
    }

    #[test]
    fn weighted_groups_by_cluster_weight() {
        let mut f = fed(vec![
            shard("e1", "10.0.0.1", 1),
            shard("w1", "10.0.0.3", 1),
            shard("e2", "10.0.0.2", 0),
        ]);
        f.policy = Policy::Weighted;
        let sel = select(&f, &f.services[0], &Locator::default());
        let weights: Vec<(u32, Vec<String>)> = sel.global_by_location[0]
            .family(Family::V4)
            .iter()
            .map(|(w, s)| (*w, s.v4.iter().map(|a| a.to_string()).collect()))
            .collect();
        assert_eq!(
            weights,
            [
                (3, vec!["10.0.0.1".to_string()]),
                (1, vec!["10.0.0.3".to_string()])
            ]
        );
    }

    #[test]
    fn unhealthy_shards_are_left_out_everywhere() {
        let f = fed(vec![shard("e1", "10.0.0.1", 1), shard("w1", "10.0.0.2", 0)]);
        let sel = select(&f, &f.services[0], &Locator::default());
        assert_eq!(sel.global.v4, vec!["10.0.0.1".parse::<Ipv4Addr>().unwrap()]);
        assert!(
            sel.regions
                .iter()
                .find(|(r, _)| r == "west")
                .unwrap()
                .1
                .is_empty()
        );
    }

    #[test]
    fn multi_zone_cluster_serves_each_of_its_zones() {
        let f = fed(vec![
            shard("e1", "10.0.0.1", 1),
            shard("e2", "2001:db8::1", 2),
        ]);
        let sel = select(&f, &f.services[0], &Locator::default());
        let zone = |z: &str| &sel.zones.iter().find(|(_, zz, _)| zz == z).unwrap().2;
        assert_eq!(zone("east-a").v4.len(), 1);
        assert_eq!(zone("east-b").v4.len(), 1);
        assert!(zone("east-c").v4.is_empty());
        assert_eq!(zone("east-c").v6.len(), 1);
        assert!(zone("west-a").is_empty());
        let east = &sel.regions.iter().find(|(r, _)| r == "east").unwrap().1;
        assert_eq!((east.v4.len(), east.v6.len()), (1, 1));
    }

    #[test]
    fn no_address_means_unhealthy() {
        let mut s = shard("e1", "10.0.0.1", 3);
        s.addresses.clear();
        assert!(!is_healthy(&s));
    }

    #[test]
    fn duplicate_addresses_are_merged() {
        let f = fed(vec![shard("e1", "10.0.0.1", 1), shard("e2", "10.0.0.1", 1)]);
        assert_eq!(
            select(&f, &f.services[0], &Locator::default())
                .global
                .v4
                .len(),
            1
        );
    }

    /// A shard's own weight (per service: annotation or federation file) wins over its
    /// cluster's; 0 leaves the cluster out of `weighted`.
    #[test]
    fn shard_weights_override_cluster_weights() {
        let mut f = fed(vec![shard("e1", "10.0.0.1", 1), shard("w1", "10.0.0.2", 1)]);
        let svc = std::sync::Arc::make_mut(&mut f.services[0]);
        svc.policy = Some(Policy::Weighted);
        svc.shards[1].weight = Some(5);
        let sel = select(&f, &f.services[0], &Locator::default());
        let weights: Vec<u32> = sel.global_by_location[0]
            .family(Family::V4)
            .iter()
            .map(|(w, _)| *w)
            .collect();
        assert_eq!(
            weights,
            [3, 5],
            "e1 keeps its cluster weight, w1 takes its shard's"
        );
        std::sync::Arc::make_mut(&mut f.services[0]).shards[0].weight = Some(0);
        let sel = select(&f, &f.services[0], &Locator::default());
        assert_eq!(sel.global_by_location[0].family(Family::V4).len(), 1);
    }
}
