//! Incremental ≡ full: a table built with the previous build's cache must answer every name,
//! type and client location byte for byte as a table built from scratch from the same inputs.
//! Random sequences of changes (shards up and down, addresses, services and clusters added and
//! removed, policies, per-service TTLs and shard weights, the in-cluster redirect zone and its
//! per-cluster answers (CNAMEs, and ClusterIPs for the asking cluster), the MCS `clusterset.local` zone and its per-cluster ServiceImport
//! answers (headless services' endpoint addresses and per-endpoint names included), probe
//! verdicts, TTLs, zone-file records and CNAMEs into federated names, wildcards, delegations
//! with glue, MX targets, and etcd keys put and deleted in the same zone, over zone-file,
//! federated and DNSEndpoint names, with stored wildcards)
//! from fixed seeds, so a failure is reproducible.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use super::skydns::{Entry, EtcdData};
use super::{BuildCache, BuildInput, build};
use crate::model::{
    Cluster, DnsName, Endpoint, EndpointName, Federation, Import, IngressHost, Policy, ProbeState,
    RData, Service, ServicePort, Shard, StaticZone, rtype,
};
use crate::table::Table;

use crate::test_rng::Rng;

/// Clusters in the regions of the shared test locator ([`crate::dns::tests::locator`]).
const CLUSTERS: [(&str, &str, &[&str]); 4] = [
    ("c0", "east", &["east-a", "east-b"]),
    ("c1", "east", &["east-b"]),
    ("c2", "west", &["west-a"]),
    ("c3", "eu", &["eu-a"]),
];

fn cluster(i: usize, weight: u32) -> Cluster {
    let (name, region, zones) = CLUSTERS[i];
    Cluster {
        client_networks: vec![],
        name: name.into(),
        region: region.into(),
        zones: zones.iter().map(|z| z.to_string()).collect(),
        weight,
    }
}

fn address(rng: &mut Rng) -> IpAddr {
    if rng.chance(25) {
        format!("2001:db8::{:x}", rng.below(16) + 1)
            .parse()
            .unwrap()
    } else {
        format!("10.{}.0.{}", rng.below(4), rng.below(12) + 1)
            .parse()
            .unwrap()
    }
}

/// A headless Service's ready endpoints in one cluster: named (a name two endpoints may
/// share) or not, one or two addresses each, sometimes none at all.
fn headless_endpoints(rng: &mut Rng) -> Arc<Vec<Endpoint>> {
    let mut v: Vec<Endpoint> = (0..rng.below(4))
        .map(|_| Endpoint {
            hostname: rng.chance(60).then(|| format!("pod-{}", rng.below(3))),
            addresses: {
                let mut a: Vec<IpAddr> = (0..rng.below(2) + 1).map(|_| address(rng)).collect();
                a.sort();
                a.dedup();
                a
            },
        })
        .collect();
    v.sort();
    Arc::new(v)
}

fn shard(rng: &mut Rng, cluster: usize) -> Shard {
    // A headless Service's shard: no load balancer, its endpoints for the MCS names.
    if rng.chance(30) {
        let headless = headless_endpoints(rng);
        return Shard {
            cluster: CLUSTERS[cluster].0.into(),
            ready_endpoints: headless.len() as u32,
            headless: Some(headless),
            ..Shard::default()
        };
    }
    Shard {
        weight: rng.chance(25).then(|| rng.below(4) as u32),
        cluster: CLUSTERS[cluster].0.into(),
        addresses: (0..rng.below(3)).map(|_| address(rng)).collect(),
        ready_endpoints: rng.below(3) as u32,
        not_ready_endpoints: 0,
        zones: if rng.chance(20) {
            vec![CLUSTERS[cluster].2[0].to_string()]
        } else {
            vec![]
        },
        probe: ProbeState::Unprobed,
        probe_down: Vec::new(),
        headless: None,
        // Known ClusterIPs turn the redirect's local CNAME into addresses.
        cluster_ips: if rng.chance(30) {
            vec![format!("10.96.0.{}", rng.below(3) + 1).parse().unwrap()]
        } else {
            vec![]
        },
    }
}

/// ServiceImports in the clusters the test locator has pod networks for (c0, c2): a
/// ClusterSetIP (one or two addresses) or Headless, or none.
fn imports(rng: &mut Rng) -> Vec<Import> {
    let mut out = Vec::new();
    for c in ["c0", "c2"] {
        if !rng.chance(40) {
            continue;
        }
        let headless = rng.chance(40);
        let ips = if headless {
            vec![]
        } else {
            (0..rng.below(2) + 1).map(|_| address(rng)).collect()
        };
        out.push(Import {
            cluster: c.to_string(),
            ips,
            headless,
        });
    }
    out
}

fn policy(rng: &mut Rng) -> Policy {
    match rng.below(4) {
        0 => Policy::Geo,
        1 => Policy::All,
        2 => Policy::Weighted,
        _ => Policy::Failover(vec!["c2".into(), "east".into()]),
    }
}

fn service(rng: &mut Rng, n: usize) -> Service {
    let mut clusters: Vec<usize> = (0..CLUSTERS.len()).filter(|_| rng.chance(60)).collect();
    if clusters.is_empty() {
        clusters.push(rng.below(CLUSTERS.len()));
    }
    Service {
        ttl: rng.chance(20).then(|| [5, 300][rng.below(2)]),
        imports: imports(rng),
        name: format!("s{n}"),
        namespace: "ns".into(),
        ports: if rng.chance(50) {
            vec![ServicePort {
                name: "http".into(),
                protocol: "tcp".into(),
                port: 80,
            }]
        } else {
            vec![]
        },
        shards: clusters.into_iter().map(|c| shard(rng, c)).collect(),
        policy: rng.chance(30).then(|| policy(rng)),
    }
}

/// Zone-file lines beyond SOA and NS: static names, and CNAMEs into federated names (which must
/// follow the federation's changes).
fn zone(lines: &[String]) -> StaticZone {
    let mut text = String::from(
        "$ORIGIN example.com.\n$TTL 300\n@ IN SOA ns1 hostmaster 5 3600 600 86400 60\n@ IN NS ns1\nns1 IN A 192.0.2.1\n",
    );
    for l in lines {
        text.push_str(l);
        text.push('\n');
    }
    crate::dns::zonefile::parse(Path::new("example.com.zone"), &text).unwrap()
}

fn zone_line(rng: &mut Rng) -> String {
    let n = rng.below(8);
    let k = rng.below(3);
    match rng.below(12) {
        0 => format!("static{n} IN A 192.0.2.{}", rng.below(9) + 10),
        1 => format!("alias{n} IN CNAME s{}.ns.f.svc", rng.below(8)),
        2 => format!("alias{n} IN CNAME s{}.ns.f.svc.east", rng.below(8)),
        3 => format!("txt{n}.deep IN TXT \"v{}\"", rng.below(3)),
        // Wildcards: addresses, and CNAMEs into federated names (per location).
        4 => format!("*.wild{k} IN A 192.0.2.{}", rng.below(9) + 10),
        5 => format!("*.wild{k} IN CNAME s{}.ns.f.svc", rng.below(8)),
        6 => format!("alias{n} IN CNAME x.wild{k}"),
        // Delegations, their glue, and a cut that hides federated names.
        7 => format!("sub{k} IN NS ns.sub{k}"),
        8 => format!("ns.sub{k} IN A 192.0.2.{}", rng.below(9) + 10),
        9 if rng.chance(20) => "f.svc IN NS ns1".to_string(),
        9 | 10 => format!("deep{n}.wild{k} IN TXT \"beside a wildcard\""),
        // Targets whose addresses go into the additional section.
        _ => format!("mx{n} IN MX 10 static{}", rng.below(8)),
    }
}

/// Adds a random line, replacing the lines of its owner (one CNAME per owner and no CNAME
/// beside other data, as the zone-file parser requires).
fn add_zone_line(rng: &mut Rng, lines: &mut Vec<String>) {
    let l = zone_line(rng);
    let owner = l.split(' ').next().unwrap_or("").to_string();
    lines.retain(|x| !x.starts_with(&format!("{owner} ")));
    lines.push(l);
}

/// A `DNSEndpoint` name's records: addresses, TXT, SRV, or a CNAME into the federation, the
/// zone file or a wildcard; some names are also zone-file, service or ingress names, some are
/// wildcards (their own, with an explicit name beside them, or over a zone file's).
fn endpoint(rng: &mut Rng) -> EndpointName {
    let owner = [
        "ep0",
        "ep1.deep",
        "static0",
        "alias1",
        "www0",
        "s1.ns.f.svc",
        "q.wild0",
        "*.epw",
        "sib.epw",
        "*.wild1",
    ][rng.below(10)];
    let name = DnsName::parse(&format!("{owner}.example.com")).unwrap();
    let ttl = [30, 60, 300][rng.below(3)];
    let records = match rng.below(5) {
        0 => {
            let target =
                ["s0.ns.f.svc", "static1", "x.wild1", "ep0", "www1", "x.epw"][rng.below(6)];
            let t = DnsName::parse(&format!("{target}.example.com")).unwrap();
            vec![(ttl, RData::Cname(t))]
        }
        1 => vec![(ttl, RData::Txt(vec![Box::from(&b"heritage=fedns"[..])]))],
        2 => vec![(
            ttl,
            RData::Srv {
                priority: 0,
                weight: 10,
                port: 443,
                target: DnsName::parse("ep0.example.com").unwrap(),
            },
        )],
        _ => (0..rng.below(3) + 1)
            .map(|_| (ttl, RData::from_ip(address(rng))))
            .collect(),
    };
    EndpointName { name, records }
}

/// An etcd key is put (an address, or a name: into the zone file, the federation or a
/// wildcard) or deleted, at names that zone files, services and DNSEndpoints also hold.
fn etcd_step(rng: &mut Rng, data: &mut EtcdData) {
    let owner = [
        "e0",
        "e1.deep",
        "static0",
        "alias1",
        "s1.ns.f.svc",
        "ep0",
        "*.wild1",
        "*.e0",
        "x.e0",
        "www0",
    ][rng.below(10)];
    let mut key = String::from("/skydns/com/example");
    for label in owner.split('.').rev() {
        key.push('/');
        key.push_str(label);
    }
    let entries = Arc::make_mut(&mut data.entries);
    if rng.chance(30) {
        entries.remove(key.as_str());
        return;
    }
    let host = match rng.below(4) {
        0 => "static1.example.com".to_string(),
        1 => "s0.ns.f.svc.example.com".to_string(),
        _ => format!("10.9.0.{}", rng.below(4) + 1),
    };
    entries.insert(
        key.into(),
        Arc::new(Entry {
            address: host.parse().ok(),
            host,
            port: 80,
            ttl: [0, 60][rng.below(2)],
            ..Default::default()
        }),
    );
}

fn step(rng: &mut Rng, fed: &mut Federation, lines: &mut Vec<String>) {
    match rng.below(11) {
        0 | 1 if !fed.services.is_empty() => {
            // An endpoint turns ready or not ready.
            let s = rng.below(fed.services.len());
            if let Some(sh) = std::sync::Arc::make_mut(&mut fed.services[s])
                .shards
                .first_mut()
            {
                sh.ready_endpoints = if sh.ready_endpoints == 0 { 1 } else { 0 };
                // A headless Service's endpoints come, go and change hostnames.
                if sh.headless.is_some() {
                    let eps = headless_endpoints(rng);
                    sh.ready_endpoints = eps.len() as u32;
                    sh.headless = Some(eps);
                }
            }
        }
        2 if !fed.services.is_empty() && rng.chance(30) => {
            // A service's ServiceImports change (allocated, re-allocated, made Headless, gone).
            let s = rng.below(fed.services.len());
            std::sync::Arc::make_mut(&mut fed.services[s]).imports = imports(rng);
        }
        2 if !fed.services.is_empty() => {
            let s = rng.below(fed.services.len());
            let svc = std::sync::Arc::make_mut(&mut fed.services[s]);
            let k = rng.below(svc.shards.len().max(1));
            if let Some(sh) = svc.shards.get_mut(k) {
                sh.addresses = (0..rng.below(3) + 1).map(|_| address(rng)).collect();
            }
        }
        3 => {
            let n = rng.below(10);
            fed.services.retain(|s| s.name != format!("s{n}"));
            if rng.chance(60) {
                fed.services.push(service(rng, n).into());
            }
        }
        4 => {
            // A cluster joins or leaves.
            let c = rng.below(CLUSTERS.len());
            if let Some(i) = fed.clusters.iter().position(|x| x.name == CLUSTERS[c].0) {
                fed.clusters.remove(i);
            } else {
                fed.clusters.push(cluster(c, rng.below(4) as u32 + 1));
            }
        }
        5 => {
            if rng.chance(50) {
                fed.policy = policy(rng);
            } else if rng.chance(15) {
                // The in-cluster redirect zone comes and goes.
                fed.cluster_domain = match fed.cluster_domain {
                    Some(_) => None,
                    None => DnsName::parse("cluster.local").ok(),
                };
            } else if rng.chance(15) {
                // So does the MCS zone.
                fed.clusterset_domain = match fed.clusterset_domain {
                    Some(_) => None,
                    None => DnsName::parse("clusterset.local").ok(),
                };
            } else {
                fed.ttl = [30, 60][rng.below(2)];
                fed.max_answers = rng.below(3) + 1;
            }
        }
        6 if !fed.services.is_empty() => {
            let s = rng.below(fed.services.len());
            for sh in &mut std::sync::Arc::make_mut(&mut fed.services[s]).shards {
                sh.probe = [ProbeState::Unprobed, ProbeState::Up, ProbeState::Down][rng.below(3)];
                // Per-address verdicts: sometimes the first address fails alone.
                sh.probe_down = match sh.addresses.first() {
                    Some(a) if rng.below(3) == 0 => vec![*a],
                    _ => Vec::new(),
                };
            }
        }
        7 => {
            for _ in 0..=rng.below(3) {
                if !lines.is_empty() && rng.chance(40) {
                    let i = rng.below(lines.len());
                    lines.remove(i);
                } else {
                    add_zone_line(rng, lines);
                }
            }
        }
        8 => {
            // `*.www0`: an ingress host wildcard (per location under `geo`) below a host.
            let host = ["www0", "www1", "www2", "*.www0"][rng.below(4)];
            let host = DnsName::parse(&format!("{host}.example.com")).unwrap();
            fed.ingress_hosts.retain(|h| h.host != host);
            if rng.chance(70) {
                let shards = (0..rng.below(3)).map(|i| shard(rng, i)).collect();
                fed.ingress_hosts.push(IngressHost { host, shards });
            }
        }
        9 => {
            // A DNSEndpoint name appears, changes or goes.
            let ep = endpoint(rng);
            let endpoints = std::sync::Arc::make_mut(&mut fed.endpoints);
            endpoints.retain(|e| e.name != ep.name);
            if rng.chance(70) {
                endpoints.push(ep);
            }
        }
        _ => {
            if let Some(s) = fed.services.get_mut(0).map(std::sync::Arc::make_mut) {
                s.policy = rng.chance(50).then(|| policy(rng));
                s.ttl = rng.chance(30).then(|| [5, 300][rng.below(2)]);
                if let Some(sh) = s.shards.first_mut() {
                    sh.weight = rng.chance(50).then(|| rng.below(4) as u32);
                }
            }
        }
    }
}

const QTYPES: [u16; 11] = [
    rtype::A,
    rtype::AAAA,
    rtype::CNAME,
    rtype::SRV,
    rtype::NS,
    rtype::SOA,
    rtype::TXT,
    rtype::MX,
    rtype::ANY,
    rtype::DS,
    99,
];

fn assert_same(incremental: &Table, fresh: &Table, locations: usize, context: &str) {
    let mut names: Vec<&[u8]> = fresh.names().collect();
    names.sort();
    let mut other: Vec<&[u8]> = incremental.names().collect();
    other.sort();
    assert_eq!(names, other, "{context}: the same names");
    assert_eq!(incremental.record_count, fresh.record_count, "{context}");
    let misses: Vec<DnsName> = [
        "nothing.here.example.com",
        "y.e0.example.com",
        "q.wild0.example.com",
        "q.wild1.example.com",
        "q.r.wild2.example.com",
        "q.epw.example.com",
        "q.r.epw.example.com",
        "x.sib.epw.example.com",
        "q.www0.example.com",
        "host.sub0.example.com",
        "x.ns.sub1.example.com",
        "nope.s0.ns.f.svc.example.com",
        "nope.s0.ns.f.svc.cluster.local",
        "s0.ns.svc.cluster.local",
        "nope.s0.ns.svc.clusterset.local",
        "s9.ns.svc.clusterset.local",
        "nope.c0.s0.ns.svc.clusterset.local",
    ]
    .iter()
    .map(|n| DnsName::parse(n).unwrap())
    .collect();
    for name in names.iter().copied().chain(misses.iter().map(|m| m.wire())) {
        for t in QTYPES {
            for loc in 0..locations {
                let show = |tb: &Table| format!("{:?}", tb.lookup(name, t, || loc));
                assert_eq!(
                    show(incremental),
                    show(fresh),
                    "{context}: {} type {t} location {loc}",
                    DnsName::from_wire_lowercase(name)
                );
            }
        }
    }
}

/// The test federation before any change: every cluster, six random services.
fn first_federation(rng: &mut Rng) -> Federation {
    let mut fed = Federation {
        cluster_domain: DnsName::parse("cluster.local").ok(),
        clusterset_domain: DnsName::parse("clusterset.local").ok(),
        name: "f".into(),
        zone: DnsName::parse("example.com").unwrap(),
        ttl: 30,
        max_answers: 2,
        policy: Policy::Geo,
        clusters: (0..CLUSTERS.len())
            .map(|c| cluster(c, c as u32 + 1))
            .collect(),
        services: vec![],
        ingress_hosts: vec![],
        endpoints: Default::default(),
    };
    fed.services = (0..6).map(|n| service(rng, n).into()).collect();
    let mut endpoints: Vec<EndpointName> = (0..2).map(|_| endpoint(rng)).collect();
    endpoints.sort_by(|a, b| a.name.cmp(&b.name));
    endpoints.dedup_by(|a, b| a.name == b.name);
    fed.endpoints = endpoints.into();
    fed
}

/// Builds step `i` (zone lines and federation) with `cache` and from scratch, and checks that
/// both answer alike.
fn build_both_and_compare(
    cache: &mut BuildCache,
    lines: &[String],
    fed: &Federation,
    etcd: &[&EtcdData],
    i: u32,
    context: &str,
    signing: &[Arc<crate::dns::dnssec::ZoneKeys>],
) {
    let locator = crate::dns::tests::locator();
    let incremental = build_one(Some(cache), lines, fed, etcd, i, signing);
    let fresh = build_one(None, lines, fed, etcd, i, signing);
    assert_same(&incremental, &fresh, locator.locations().len(), context);
}

/// Builds step `i` with `cache`, or from scratch.
fn build_one(
    cache: Option<&mut BuildCache>,
    lines: &[String],
    fed: &Federation,
    etcd: &[&EtcdData],
    i: u32,
    signing: &[Arc<crate::dns::dnssec::ZoneKeys>],
) -> Table {
    build(BuildInput {
        zones: &[zone(lines)],
        federations: std::slice::from_ref(fed),
        etcd,
        cache,
        serial: 1000 + i,
        generation: i as u64,
        locator: crate::dns::tests::locator(),
        signing,
    })
    .table
}

/// Keys for example.com that sign deterministically (Ed25519), so two builds sign alike.
fn test_signing() -> Vec<Arc<crate::dns::dnssec::ZoneKeys>> {
    let zone = DnsName::parse("example.com").unwrap();
    let mut ring = crate::dns::dnssec::KeyRing::load(
        &[zone],
        std::path::Path::new("/nonexistent/fedns-test-keys"),
        crate::dns::dnssec::Algorithm::Ed25519,
        std::time::Duration::from_secs(14 * 86400),
        std::time::Duration::from_secs(7 * 86400),
        false,
    )
    .unwrap();
    ring.signing(1_800_000_000).to_vec()
}

#[test]
fn incremental_builds_answer_as_full_builds() {
    incremental_walk(1..=4, &[]);
}

/// The same walk with the zone signed (DNSSEC): signatures and denial records are re-made
/// only for what changed, and equal a full signing.
#[test]
fn incremental_signed_builds_answer_as_full_builds() {
    incremental_walk(5..=6, &test_signing());
}

fn incremental_walk(
    seeds: std::ops::RangeInclusive<u64>,
    signing: &[Arc<crate::dns::dnssec::ZoneKeys>],
) {
    let locator = crate::dns::tests::locator();
    let locations = locator.locations().len();
    assert!(locations > 1, "the test needs several client locations");
    let mut headless_seen = (0usize, 0usize);
    for seed in seeds {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let mut fed = first_federation(&mut rng);
        let mut lines: Vec<String> = Vec::new();
        for _ in 0..8 {
            add_zone_line(&mut rng, &mut lines);
        }
        // etcd serves the same zone (unsigned walks only: etcd zones are not signed).
        let mut etcd = signing.is_empty().then(|| EtcdData {
            prefix: "/skydns".into(),
            zones: vec![DnsName::parse("example.com").unwrap()],
            wildcards: true,
            ..Default::default()
        });
        let mut cache = BuildCache::default();
        // The headless per-endpoint names of the walk's steps: the walk must make them come,
        // change and go, or it proves nothing about them.
        let mut last_hosts = Vec::new();
        for i in 0..60u32 {
            if i > 0 {
                match etcd.as_mut() {
                    Some(data) if rng.chance(25) => etcd_step(&mut rng, data),
                    _ => step(&mut rng, &mut fed, &mut lines),
                }
                // Sometimes two changes meet in one build (new settings and a service gone:
                // the gone one's names are those of the settings it was laid out with).
                if rng.chance(20) {
                    step(&mut rng, &mut fed, &mut lines);
                }
            }
            let hosts = per_endpoint_names(&fed);
            headless_seen.0 += usize::from(!hosts.is_empty());
            headless_seen.1 += usize::from(hosts != last_hosts);
            last_hosts = hosts;
            build_both_and_compare(
                &mut cache,
                &lines,
                &fed,
                etcd.as_ref().as_slice(),
                i,
                &format!("seed {seed} step {i}"),
                signing,
            );
        }
    }
    assert!(
        headless_seen.0 > 0 && headless_seen.1 > 1,
        "headless per-endpoint names never varied: {headless_seen:?}"
    );
}

/// Every headless per-endpoint MCS name of the federation, sorted.
fn per_endpoint_names(fed: &Federation) -> Vec<DnsName> {
    let Some(zone) = fed.clusterset_zone() else {
        return vec![];
    };
    let mut out: Vec<DnsName> = fed
        .services
        .iter()
        .flat_map(|svc| {
            let name = DnsName::parse(&format!("{}.{}.{zone}", svc.name, svc.namespace)).unwrap();
            super::federation::headless_hosts(svc, &name)
                .unwrap_or_default()
                .into_iter()
                .map(|(n, _)| n)
        })
        .collect();
    out.sort();
    out
}

/// Sequences the random walk may miss: a wildcard appearing under a name that already exists,
/// and a delegation coming and going above federated names and regional SRV targets.
#[test]
fn wildcards_and_cuts_that_come_and_go_answer_as_full_builds() {
    let fed = first_federation(&mut Rng(7));
    let deep = "deep.wild0 IN TXT \"x\"".to_string();
    let wild = "*.wild0 IN A 192.0.2.7".to_string();
    let cut = "f.svc IN NS ns1".to_string();
    let steps = [
        vec![deep.clone()],
        vec![deep.clone(), wild.clone()],
        vec![deep.clone(), wild.clone(), cut.clone()],
        vec![deep.clone(), cut.clone()],
        vec![deep],
    ];
    let mut cache = BuildCache::default();
    for (i, lines) in steps.iter().enumerate() {
        build_both_and_compare(
            &mut cache,
            lines,
            &fed,
            &[],
            i as u32,
            &format!("step {i}"),
            &[],
        );
    }
}

/// A DNSEndpoint wildcard in a signed zone is signed per query like a zone file's (RFC 4592,
/// `Online::Rrsig`); one whose RRset is too large for the query path to sign is refused,
/// named in `conflicts`, and not served at all (never answered with a bogus or missing RRSIG).
#[test]
fn signed_endpoint_wildcards_are_signed_per_query_or_refused() {
    let mut fed = first_federation(&mut Rng(3));
    let a = |i: usize| {
        let ip = format!("10.9.{}.{}", i / 250, i % 250 + 1);
        (60, RData::from_ip(ip.parse().unwrap()))
    };
    fed.endpoints = vec![
        EndpointName {
            name: DnsName::parse("*.big.example.com").unwrap(),
            records: (0..40).map(a).collect(),
        },
        EndpointName {
            name: DnsName::parse("*.small.example.com").unwrap(),
            records: (0..2).map(a).collect(),
        },
    ]
    .into();
    let signing = test_signing();
    let built = build(BuildInput {
        zones: &[zone(&[])],
        federations: &[fed],
        etcd: &[],
        cache: None,
        serial: 1,
        generation: 1,
        locator: crate::dns::tests::locator(),
        signing: &signing,
    });
    let ask = |n: &str| match built
        .table
        .lookup(DnsName::parse(n).unwrap().wire(), rtype::A, || 0)
    {
        crate::table::Lookup::Authoritative(a) => (a.rcode, a.online),
        other => panic!("{n}: {other:?}"),
    };
    assert_eq!(ask("x.small.example.com"), (0, crate::table::Online::Rrsig));
    assert_eq!(ask("x.big.example.com").0, 3, "refused, so NXDOMAIN");
    assert_eq!(
        ask("big.example.com").0,
        3,
        "not even an empty non-terminal"
    );
    assert!(
        built
            .conflicts
            .iter()
            .any(|c| c.starts_with("*.big.example.com.: a wildcard RRset in a signed zone")),
        "{:?}",
        built.conflicts
    );
    assert!(
        !built.conflicts.iter().any(|c| c.contains("small")),
        "{:?}",
        built.conflicts
    );
}

/// The parallel parts of a build (layout, encoding, segments) give a table that answers byte
/// for byte as a build that runs them all on one thread, from scratch and incrementally.
#[test]
fn parallel_builds_answer_as_serial_builds() {
    let mut rng = Rng(77);
    let locator = crate::dns::tests::locator();
    let mut fed = first_federation(&mut rng);
    fed.services = (0..300).map(|n| service(&mut rng, n).into()).collect();
    let mut lines = Vec::new();
    for _ in 0..20 {
        add_zone_line(&mut rng, &mut lines);
    }
    let (mut serial_cache, mut parallel_cache) = (BuildCache::default(), BuildCache::default());
    for i in 0..4 {
        let zones = [zone(&lines)];
        let feds = [fed.clone()];
        let build_with = |cache: &mut BuildCache, parallel: bool| {
            super::PARALLEL.set(Some(parallel));
            let table = build(BuildInput {
                zones: &zones,
                federations: &feds,
                etcd: &[],
                cache: Some(cache),
                serial: 1000 + i,
                generation: i as u64,
                locator,
                signing: &[],
            })
            .table;
            super::PARALLEL.set(None);
            table
        };
        let serial = build_with(&mut serial_cache, false);
        let parallel = build_with(&mut parallel_cache, true);
        assert!(serial.name_count > 3000, "{} names", serial.name_count);
        assert_same(
            &parallel,
            &serial,
            locator.locations().len(),
            &format!("step {i}"),
        );
        for _ in 0..10 {
            step(&mut rng, &mut fed, &mut lines);
        }
    }
}

/// Deferred etcd aggregates (here every name whose answers read two entries or more) settle to
/// what a fresh build answers: the walk's jobs are run at once or held across later changes
/// (their answers then are stale for names whose reads changed, which must stay pending), and
/// once every job has come back and nothing is pending the table equals a fresh one.
#[test]
fn deferred_etcd_aggregates_settle_to_full_builds() {
    let (mut deferred, mut held_over) = (0usize, 0usize);
    for seed in 11..=13u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let mut fed = first_federation(&mut rng);
        let mut lines: Vec<String> = Vec::new();
        for _ in 0..8 {
            add_zone_line(&mut rng, &mut lines);
        }
        let mut data = EtcdData {
            prefix: "/skydns".into(),
            zones: vec![DnsName::parse("example.com").unwrap()],
            wildcards: true,
            ..Default::default()
        };
        for _ in 0..6 {
            etcd_step(&mut rng, &mut data);
        }
        let mut cache = BuildCache::default();
        cache.defer_aggregates(2);
        let mut held: Vec<super::skydns::Job> = Vec::new();
        for i in 0..60u32 {
            if i > 0 {
                if rng.chance(70) {
                    etcd_step(&mut rng, &mut data);
                } else {
                    step(&mut rng, &mut fed, &mut lines);
                }
            }
            let etcd = [&data];
            build_one(Some(&mut cache), &lines, &fed, &etcd, i, &[]);
            deferred += cache.pending_aggregates();
            held.extend(cache.take_jobs());
            if rng.chance(50) {
                // Held over: the next change lands while the job is out.
                held_over += held.len();
                continue;
            }
            // Settle: run every job, fold its answers in, until nothing is pending.
            let mut rounds = 0;
            let settled = loop {
                for job in held.drain(..) {
                    cache.settle(job.run());
                }
                let table = build_one(Some(&mut cache), &lines, &fed, &etcd, i, &[]);
                held.extend(cache.take_jobs());
                if held.is_empty() && cache.pending_aggregates() == 0 {
                    break table;
                }
                rounds += 1;
                assert!(rounds < 4, "seed {seed} step {i}: aggregates never settle");
            };
            let fresh = build_one(None, &lines, &fed, &etcd, i, &[]);
            let locations = crate::dns::tests::locator().locations().len();
            assert_same(
                &settled,
                &fresh,
                locations,
                &format!("seed {seed} step {i}"),
            );
        }
    }
    assert!(
        deferred > 20 && held_over > 5,
        "the walk must defer aggregates and hold jobs over changes: {deferred}, {held_over}"
    );
}
