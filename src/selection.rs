//! Selection: which healthy shards a federated name answers with.
//!
//! Pure functions from a [`Federation`] snapshot to address sets per scope (global, each region,
//! each zone). No I/O, no clocks, no randomness: the same snapshot always gives the same sets, in
//! a stable order, so tables built from equal snapshots are equal. Per-client policies (geo,
//! failover, weighted) slot in here without touching the table or the sockets; today the only
//! policy is `all` (every healthy shard, as federation v1 did).

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::model::{Cluster, Federation, Service, Shard};

/// A shard is healthy when it has at least one ready endpoint and at least one address.
pub fn is_healthy(shard: &Shard) -> bool {
    shard.ready_endpoints >= 1 && !shard.addresses.is_empty()
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

    fn from_shards<'a>(shards: impl Iterator<Item = &'a Shard>) -> Self {
        let mut v4 = BTreeSet::new();
        let mut v6 = BTreeSet::new();
        for shard in shards {
            for ip in &shard.addresses {
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

/// Healthy address sets of one service at every level.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceSelection {
    pub global: AddressSet,
    /// Per region, in [`regions`] order.
    pub regions: Vec<(String, AddressSet)>,
    /// Per (region, zone).
    pub zones: Vec<(String, String, AddressSet)>,
}

pub fn select(fed: &Federation, svc: &Service) -> ServiceSelection {
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
    ServiceSelection {
        global,
        regions: regions_out,
        zones: zones_out,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::DnsName;

    fn shard(cluster: &str, ip: &str, ready: u32) -> Shard {
        Shard {
            cluster: cluster.into(),
            addresses: vec![ip.parse().unwrap()],
            ready_endpoints: ready,
            not_ready_endpoints: 0,
            zones: vec![],
        }
    }

    fn fed(shards: Vec<Shard>) -> Federation {
        let c = |n: &str, r: &str, z: &[&str]| Cluster {
            name: n.into(),
            region: r.into(),
            zones: z.iter().map(|s| s.to_string()).collect(),
        };
        Federation {
            name: "f".into(),
            zone: DnsName::parse("example.com").unwrap(),
            ttl: 30,
            max_answers: 8,
            clusters: vec![
                c("e1", "east", &["east-a", "east-b"]),
                c("e2", "east", &["east-c"]),
                c("w1", "west", &["west-a"]),
            ],
            services: vec![Service {
                name: "s".into(),
                namespace: "n".into(),
                ports: vec![],
                shards,
            }],
        }
    }

    #[test]
    fn unhealthy_shards_are_left_out_everywhere() {
        let f = fed(vec![shard("e1", "10.0.0.1", 1), shard("w1", "10.0.0.2", 0)]);
        let sel = select(&f, &f.services[0]);
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
        let sel = select(&f, &f.services[0]);
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
        assert_eq!(select(&f, &f.services[0]).global.v4.len(), 1);
    }
}
