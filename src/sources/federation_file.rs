//! The federation file source (DESIGN §2.4): clusters, their topology and their services'
//! shards, written by hand in YAML or TOML. It is the embedded default that lets fedns run without
//! any cluster, and what tests use where a cluster adds nothing.
//!
//! Guarantees: a file either parses and validates completely into a [`Federation`], or yields
//! every problem found, each naming the file, the line (where the format gives one) and the field.

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::Path;

use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::config_errors::ParseError;

use crate::dns::zonefile::Problem;
use crate::model::{Cluster, DnsName, Federation, Policy, Service, ServicePort, Shard};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    federation: RawFederation,
    #[serde(default)]
    clusters: Vec<RawCluster>,
    #[serde(default)]
    services: Vec<RawService>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFederation {
    name: Spanned<String>,
    zone: Spanned<String>,
    #[serde(default = "default_ttl")]
    ttl: u32,
    #[serde(default = "default_max_answers")]
    max_answers: usize,
    #[serde(default)]
    policy: Option<Spanned<RawPolicy>>,
    /// The member clusters' DNS domain; `""` turns the in-cluster redirect names off.
    #[serde(default = "default_cluster_domain")]
    cluster_domain: Spanned<String>,
    /// The MCS cluster-set domain (`clusterset.local`); `""` (the default): no MCS names.
    #[serde(default = "default_clusterset_domain")]
    clusterset_domain: Spanned<String>,
}

fn default_cluster_domain() -> Spanned<String> {
    Spanned::new(
        "cluster.local".into(),
        serde_saphyr::Location::UNKNOWN,
        serde_saphyr::Location::UNKNOWN,
    )
}

fn default_clusterset_domain() -> Spanned<String> {
    Spanned::new(
        String::new(),
        serde_saphyr::Location::UNKNOWN,
        serde_saphyr::Location::UNKNOWN,
    )
}

/// `policy: geo | all | weighted | {failover: [cluster or region, ...]}`
#[derive(Deserialize, Clone)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
enum RawPolicy {
    Geo,
    All,
    Weighted,
    Failover(Vec<String>),
}

fn default_ttl() -> u32 {
    30
}
fn default_max_answers() -> usize {
    8
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCluster {
    name: Spanned<String>,
    region: Spanned<String>,
    #[serde(default)]
    zones: Vec<Spanned<String>>,
    #[serde(default = "default_weight")]
    weight: u32,
    /// Pod and node networks (CIDRs): clients there are in this cluster.
    #[serde(default)]
    client_networks: Vec<Spanned<String>>,
}

fn default_weight() -> u32 {
    crate::model::DEFAULT_WEIGHT
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    name: Spanned<String>,
    namespace: Spanned<String>,
    #[serde(default)]
    ports: Vec<RawPort>,
    #[serde(default)]
    shards: Vec<RawShard>,
    #[serde(default)]
    policy: Option<Spanned<RawPolicy>>,
    /// Overrides `federation.ttl` for this service's names.
    #[serde(default)]
    ttl: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPort {
    name: Spanned<String>,
    #[serde(default = "default_protocol")]
    protocol: Spanned<String>,
    port: u16,
}

fn default_protocol() -> Spanned<String> {
    Spanned::new(
        "tcp".into(),
        serde_saphyr::Location::UNKNOWN,
        serde_saphyr::Location::UNKNOWN,
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawShard {
    cluster: Spanned<String>,
    /// IP addresses, or load-balancer host names resolved in the background (AWS ELB).
    #[serde(default)]
    addresses: Vec<Spanned<String>>,
    #[serde(default)]
    ready_endpoints: u32,
    #[serde(default)]
    not_ready_endpoints: u32,
    #[serde(default)]
    zones: Vec<Spanned<String>>,
    /// Overrides the cluster's weight for this service.
    #[serde(default)]
    weight: Option<u32>,
}

/// A parsed federation file: the federation as written (shards hold only their literal
/// addresses) and the load-balancer host names of each shard, to be resolved in the background.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    pub federation: Federation,
    pub hostnames: Vec<ShardHosts>,
}

/// The host names written in one shard's `addresses`.
#[derive(Debug, Clone, PartialEq)]
pub struct ShardHosts {
    /// Index into `federation.services`, then into that service's `shards`.
    pub service: usize,
    pub shard: usize,
    pub hosts: Vec<String>,
}

impl Parsed {
    /// Every host name of the file, once each.
    pub fn hosts(&self) -> std::collections::BTreeSet<String> {
        self.hostnames
            .iter()
            .flat_map(|h| h.hosts.iter().cloned())
            .collect()
    }

    /// The federation with each shard's host names replaced by the addresses last resolved for
    /// them (`resolved`; a host not resolved yet adds nothing). Services without host names keep
    /// their `Arc`s, so the merger re-lays out only the services whose addresses changed.
    pub fn resolved(
        &self,
        resolved: &std::collections::HashMap<String, Vec<IpAddr>>,
    ) -> Federation {
        let mut fed = self.federation.clone();
        for h in &self.hostnames {
            let Some(svc) = fed.services.get_mut(h.service) else {
                continue;
            };
            let Some(shard) = std::sync::Arc::make_mut(svc).shards.get_mut(h.shard) else {
                continue;
            };
            for ip in h.hosts.iter().filter_map(|n| resolved.get(n)).flatten() {
                if !shard.addresses.contains(ip) {
                    shard.addresses.push(*ip);
                }
            }
        }
        fed
    }
}

/// A load-balancer host name: LDH labels, and a last label that is not all digits (so a
/// mistyped IPv4 address such as `192.0.2.300` is reported, not looked up).
fn host_name(s: &str) -> Option<String> {
    let s = s.strip_suffix('.').unwrap_or(s).to_ascii_lowercase();
    let labels: Vec<&str> = s.split('.').collect();
    let ldh = |l: &&str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    let ok = s.len() <= 253
        && labels.iter().all(ldh)
        && labels
            .last()
            .is_some_and(|l| !l.bytes().all(|b| b.is_ascii_digit()));
    ok.then_some(s)
}

/// Parses and validates one federation file (YAML unless the name ends in `.toml`); shards'
/// host names are left out (see [`parse_with_hosts`]).
pub fn parse(path: &Path, text: &str) -> Result<Federation, Vec<Problem>> {
    parse_with_hosts(path, text).map(|p| p.federation)
}

/// Parses and validates one federation file, keeping the shards' load-balancer host names.
pub fn parse_with_hosts(path: &Path, text: &str) -> Result<Parsed, Vec<Problem>> {
    let file = path.display().to_string();
    let toml = path.extension().is_some_and(|e| e == "toml");
    // Every syntax and type error (with field path and value), then the semantic ones.
    let (raw, mut problems) = crate::config_errors::parse_all(&file, text, toml, |t| {
        if toml {
            toml::from_str::<RawFile>(t).map_err(|e| ParseError::from_toml(&e, t))
        } else {
            serde_saphyr::from_str_with_options::<RawFile>(t, yaml_options())
                .map_err(|e| ParseError::from_yaml(&e))
        }
    });
    let Some(raw) = raw else {
        return Err(problems);
    };
    match validate(&file, raw) {
        Ok(f) if problems.is_empty() => Ok(f),
        Ok(_) => Err(problems),
        Err(p) => {
            problems.extend(p);
            Err(problems)
        }
    }
}

/// Problems found while validating, each located at the value it is about.
struct Problems<'a> {
    file: &'a str,
    list: Vec<Problem>,
}

impl Problems<'_> {
    fn at<T>(&mut self, at: &Spanned<T>, field: String, message: String) {
        let line = Some(at.referenced.line() as usize).filter(|l| *l > 0);
        self.list.push(Problem {
            file: self.file.to_string(),
            line,
            message: format!("{field}: {message}"),
        });
    }
}

/// serde-saphyr's default budget (250k nodes) stops at ~8k services; federation files are
/// written by their operators, so allow large ones while keeping the alias-bomb limits.
fn yaml_options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_nodes: 50_000_000,
            max_events: 100_000_000,
            max_total_scalar_bytes: 1 << 30,
        },
    }
}

fn validate(file: &str, raw: RawFile) -> Result<Parsed, Vec<Problem>> {
    let mut problems = Problems {
        file,
        list: Vec::new(),
    };
    let label_ok = |s: &str| {
        !s.is_empty()
            && s.len() <= 63
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !s.starts_with('-')
            && !s.ends_with('-')
    };

    let fed_name = &raw.federation.name;
    if !label_ok(&fed_name.value) {
        problems.at(
            fed_name,
            "federation.name".into(),
            format!("{:?} is not a DNS label", fed_name.value),
        );
    }
    let zone = match DnsName::parse(&raw.federation.zone.value) {
        Ok(z) if !z.is_root() => z,
        Ok(_) => {
            problems.at(
                &raw.federation.zone,
                "federation.zone".into(),
                "the root zone cannot be a federation zone".into(),
            );
            DnsName::root()
        }
        Err(e) => {
            problems.at(&raw.federation.zone, "federation.zone".into(), e);
            DnsName::root()
        }
    };

    let mut clusters = Vec::new();
    let mut seen = HashSet::new();
    for (i, c) in raw.clusters.iter().enumerate() {
        if !seen.insert(c.name.value.clone()) {
            problems.at(
                &c.name,
                format!("clusters[{i}].name"),
                format!("cluster {:?} is defined twice", c.name.value),
            );
        }
        if !label_ok(&c.region.value) {
            problems.at(
                &c.region,
                format!("clusters[{i}].region"),
                format!("{:?} is not a DNS label", c.region.value),
            );
        }
        for (j, z) in c.zones.iter().enumerate() {
            if !label_ok(&z.value) {
                problems.at(
                    z,
                    format!("clusters[{i}].zones[{j}]"),
                    format!("{:?} is not a DNS label", z.value),
                );
            }
        }
        let mut client_networks = Vec::new();
        for (j, n) in c.client_networks.iter().enumerate() {
            match crate::config::parse_cidr(&n.value) {
                Ok(net) => client_networks.push(net),
                Err(e) => problems.at(n, format!("clusters[{i}].client_networks[{j}]"), e),
            }
        }
        clusters.push(Cluster {
            name: c.name.value.clone(),
            region: c.region.value.clone(),
            zones: c.zones.iter().map(|z| z.value.clone()).collect(),
            weight: c.weight,
            client_networks,
        });
    }

    let mut services = Vec::new();
    let mut hostnames = Vec::new();
    let mut seen = HashSet::new();
    for (i, s) in raw.services.iter().enumerate() {
        if !label_ok(&s.name.value) {
            problems.at(
                &s.name,
                format!("services[{i}].name"),
                format!("{:?} is not a DNS label", s.name.value),
            );
        }
        if !label_ok(&s.namespace.value) {
            problems.at(
                &s.namespace,
                format!("services[{i}].namespace"),
                format!("{:?} is not a DNS label", s.namespace.value),
            );
        }
        if !seen.insert((s.name.value.clone(), s.namespace.value.clone())) {
            problems.at(
                &s.name,
                format!("services[{i}].name"),
                format!(
                    "service {}.{} is defined twice",
                    s.name.value, s.namespace.value
                ),
            );
        }
        let mut ports = Vec::new();
        for (j, p) in s.ports.iter().enumerate() {
            if !label_ok(&p.name.value) || p.name.value.len() > 62 {
                problems.at(
                    &p.name,
                    format!("services[{i}].ports[{j}].name"),
                    format!("{:?} is not a DNS label", p.name.value),
                );
            }
            let proto = p.protocol.value.to_ascii_lowercase();
            if !["tcp", "udp", "sctp"].contains(&proto.as_str()) {
                problems.at(
                    &p.protocol,
                    format!("services[{i}].ports[{j}].protocol"),
                    format!("{:?} is not TCP, UDP or SCTP", p.protocol.value),
                );
            }
            ports.push(ServicePort {
                name: p.name.value.to_ascii_lowercase(),
                protocol: proto,
                port: p.port,
            });
        }
        let mut shards = Vec::new();
        for (j, sh) in s.shards.iter().enumerate() {
            let Some(cluster) = clusters.iter().find(|c| c.name == sh.cluster.value) else {
                problems.at(
                    &sh.cluster,
                    format!("services[{i}].shards[{j}].cluster"),
                    format!("unknown cluster {:?}", sh.cluster.value),
                );
                continue;
            };
            for (k, z) in sh.zones.iter().enumerate() {
                if !cluster.zones.contains(&z.value) {
                    problems.at(
                        z,
                        format!("services[{i}].shards[{j}].zones[{k}]"),
                        format!("cluster {} has no zone {:?}", cluster.name, z.value),
                    );
                }
            }
            let mut addresses = Vec::new();
            let mut hosts = Vec::new();
            for (k, a) in sh.addresses.iter().enumerate() {
                if let Ok(ip) = a.value.trim().parse::<IpAddr>() {
                    addresses.push(ip);
                } else if let Some(h) = host_name(a.value.trim()) {
                    if !hosts.contains(&h) {
                        hosts.push(h);
                    }
                } else {
                    problems.at(
                        a,
                        format!("services[{i}].shards[{j}].addresses[{k}]"),
                        format!("{:?} is neither an IP address nor a host name", a.value),
                    );
                }
            }
            if !hosts.is_empty() {
                hostnames.push(ShardHosts {
                    service: i,
                    shard: shards.len(),
                    hosts,
                });
            }
            shards.push(Shard {
                cluster: sh.cluster.value.clone(),
                addresses,
                cluster_ips: Vec::new(),
                ready_endpoints: sh.ready_endpoints,
                not_ready_endpoints: sh.not_ready_endpoints,
                zones: sh.zones.iter().map(|z| z.value.clone()).collect(),
                probe: Default::default(),
                probe_down: Vec::new(),
                weight: sh.weight,
            });
        }
        services.push(Service {
            name: s.name.value.to_ascii_lowercase(),
            namespace: s.namespace.value.to_ascii_lowercase(),
            ports,
            shards,
            policy: None,
            ttl: s.ttl,
            imports: vec![],
        });
    }
    let regions: Vec<&str> = clusters.iter().map(|c| c.region.as_str()).collect();
    let policy_of = |p: &Spanned<RawPolicy>, field: &str, problems: &mut Problems| match &p.value {
        RawPolicy::Geo => Policy::Geo,
        RawPolicy::All => Policy::All,
        RawPolicy::Weighted => Policy::Weighted,
        RawPolicy::Failover(order) => {
            for name in order {
                if !clusters.iter().any(|c| &c.name == name) && !regions.contains(&name.as_str()) {
                    problems.at(
                        p,
                        field.to_string(),
                        format!("failover entry {name:?} is neither a cluster nor a region"),
                    );
                }
            }
            if order.is_empty() {
                problems.at(
                    p,
                    field.to_string(),
                    "failover needs at least one cluster or region".into(),
                );
            }
            Policy::Failover(order.clone())
        }
    };
    let policy = raw.federation.policy.as_ref().map_or(Policy::Geo, |p| {
        policy_of(p, "federation.policy", &mut problems)
    });
    for (i, s) in raw.services.iter().enumerate() {
        if let Some(p) = &s.policy {
            services[i].policy = Some(policy_of(
                p,
                &format!("services[{i}].policy"),
                &mut problems,
            ));
        }
    }
    let cd = &raw.federation.cluster_domain;
    let cluster_domain = match cd.value.trim() {
        "" => None,
        d => match DnsName::parse(d) {
            Ok(n) if !n.is_root() => Some(n),
            Ok(_) => {
                problems.at(
                    cd,
                    "federation.cluster_domain".into(),
                    "the root cannot be a cluster domain".into(),
                );
                None
            }
            Err(e) => {
                problems.at(cd, "federation.cluster_domain".into(), e);
                None
            }
        },
    };
    let csd = &raw.federation.clusterset_domain;
    let clusterset_domain = match csd.value.trim() {
        "" => None,
        d => match DnsName::parse(d) {
            Ok(n) => match Federation::clusterset_conflict(&zone, cluster_domain.as_ref(), &n) {
                Some(why) => {
                    problems.at(
                        csd,
                        "federation.clusterset_domain".into(),
                        format!("{d:?}: {why}"),
                    );
                    None
                }
                None => Some(n),
            },
            Err(e) => {
                problems.at(
                    csd,
                    "federation.clusterset_domain".into(),
                    format!("{d:?}: {e}"),
                );
                None
            }
        },
    };
    if !problems.list.is_empty() {
        return Err(problems.list);
    }
    let federation = Federation {
        name: fed_name.value.to_ascii_lowercase(),
        zone,
        ttl: raw.federation.ttl,
        max_answers: raw.federation.max_answers,
        policy,
        clusters,
        services: services.into_iter().map(std::sync::Arc::new).collect(),
        ingress_hosts: vec![],
        cluster_domain,
        clusterset_domain,
        endpoints: Default::default(),
    };
    Ok(Parsed {
        federation,
        hostnames,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "federation:\n  name: myfed\n  zone: example.com\nclusters:\n  - name: c1\n    region: east\n    zones: [east-a]\nservices:\n  - name: web\n    namespace: shop\n    ports: [{name: http, port: 80}]\n    shards:\n      - cluster: c1\n        addresses: [192.0.2.1]\n        ready_endpoints: 1\n";

    #[test]
    fn parses_yaml() {
        let f = parse(Path::new("f.yaml"), GOOD).unwrap();
        assert_eq!(f.name, "myfed");
        assert_eq!(f.ttl, 30);
        assert_eq!(f.services[0].ports[0].protocol, "tcp");
        assert_eq!(f.services[0].shards[0].addresses.len(), 1);
    }

    #[test]
    fn unknown_cluster_names_line_and_field() {
        let bad = GOOD.replace("cluster: c1", "cluster: nope");
        let errs = parse(Path::new("f.yaml"), &bad).unwrap_err();
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].line, Some(13), "{errs:?}");
        assert!(
            errs[0]
                .to_string()
                .contains("f.yaml:13: services[0].shards[0].cluster: unknown cluster"),
            "{}",
            errs[0]
        );
    }

    #[test]
    fn bad_address_names_its_line() {
        let bad = GOOD.replace("192.0.2.1", "192.0.2.300");
        let errs = parse(Path::new("f.yaml"), &bad).unwrap_err();
        assert_eq!(errs[0].line, Some(14), "{errs:?}");
    }

    #[test]
    fn host_names_are_kept_for_resolution() {
        let f = GOOD.replace(
            "[192.0.2.1]",
            "[192.0.2.1, My-LB.elb.amazonaws.com., 2001:db8::1]",
        );
        let p = parse_with_hosts(Path::new("f.yaml"), &f).unwrap();
        let sh = &p.federation.services[0].shards[0];
        assert_eq!(sh.addresses.len(), 2, "{sh:?}");
        assert_eq!(p.hostnames.len(), 1);
        assert_eq!(p.hostnames[0].hosts, vec!["my-lb.elb.amazonaws.com"]);
        let mut resolved = std::collections::HashMap::new();
        resolved.insert(
            "my-lb.elb.amazonaws.com".to_string(),
            vec![
                "198.51.100.7".parse().unwrap(),
                "192.0.2.1".parse().unwrap(),
            ],
        );
        let fed = p.resolved(&resolved);
        assert_eq!(
            fed.services[0].shards[0].addresses,
            vec![
                "192.0.2.1".parse::<IpAddr>().unwrap(),
                "2001:db8::1".parse().unwrap(),
                "198.51.100.7".parse().unwrap()
            ]
        );
        // Not resolved yet: the literal addresses only.
        assert_eq!(p.resolved(&Default::default()), p.federation);
        let errs = parse(Path::new("f.yaml"), &GOOD.replace("192.0.2.1", "bad_name!")).unwrap_err();
        assert!(
            errs[0].to_string().contains(
                "f.yaml:14: services[0].shards[0].addresses[0]: \"bad_name!\" is neither"
            ),
            "{}",
            errs[0]
        );
    }

    /// `clusterset_domain` is off by default; on, its zone is `svc.DOMAIN`; a domain whose
    /// zone overlaps the federation zone or the redirect names is refused with line and value.
    #[test]
    fn clusterset_domain_off_on_and_overlaps_refused() {
        assert_eq!(
            parse(Path::new("f.yaml"), GOOD).unwrap().clusterset_domain,
            None
        );
        let with = |d: &str| {
            GOOD.replace(
                "  zone: example.com\n",
                &format!("  zone: example.com\n  clusterset_domain: {d}\n"),
            )
        };
        let fed = parse(Path::new("f.yaml"), &with("clusterset.local")).unwrap();
        assert_eq!(
            fed.clusterset_zone().unwrap().to_string(),
            "svc.clusterset.local."
        );
        for (d, why) in [
            ("example.com", "overlaps the federation zone"),
            ("cluster.local", "overlaps the in-cluster redirect names"),
            ("\".\"", "the root"),
            ("a..b", "a..b"),
        ] {
            let errs = parse(Path::new("f.yaml"), &with(d)).unwrap_err();
            let e = errs[0].to_string();
            assert!(
                e.contains("f.yaml:4: federation.clusterset_domain:") && e.contains(why),
                "{d}: {e}"
            );
        }
    }

    #[test]
    fn large_files_are_not_cut_off_by_the_yaml_budget() {
        // 25k services is over 300k YAML nodes, past serde-saphyr's default 250k budget.
        let mut text = String::from(
            "federation: {name: f, zone: example.com}\nclusters: [{name: c1, region: r}]\nservices:\n",
        );
        for i in 0..25_000 {
            text.push_str(&format!("  - {{name: s{i}, namespace: n, shards: [{{cluster: c1, addresses: [10.0.0.1], ready_endpoints: 1}}]}}\n"));
        }
        let f = parse(Path::new("big.yaml"), &text).unwrap();
        assert_eq!(f.services.len(), 25_000);
    }

    #[test]
    fn per_service_knobs_client_networks_and_cluster_domain() {
        let f = GOOD
            .replace(
                "    zones: [east-a]\n",
                "    zones: [east-a]\n    client_networks: [10.4.0.0/14, \"fd00:4::/48\"]\n",
            )
            .replace(
                "    namespace: shop\n",
                "    namespace: shop\n    ttl: 5\n    policy: weighted\n",
            )
            .replace(
                "ready_endpoints: 1\n",
                "ready_endpoints: 1\n        weight: 7\n",
            );
        let fed = parse(Path::new("f.yaml"), &f).unwrap();
        assert_eq!(fed.clusters[0].weight, crate::model::DEFAULT_WEIGHT);
        assert_eq!(
            fed.clusters[0].client_networks,
            vec![
                ("10.4.0.0".parse().unwrap(), 14),
                ("fd00:4::".parse().unwrap(), 48)
            ]
        );
        assert_eq!(fed.services[0].ttl, Some(5));
        assert_eq!(fed.services[0].policy, Some(Policy::Weighted));
        assert_eq!(fed.services[0].shards[0].weight, Some(7));
        assert_eq!(fed.cluster_domain, DnsName::parse("cluster.local").ok());
        assert_eq!(
            fed.redirect_zone().unwrap().to_string(),
            "myfed.svc.cluster.local."
        );
        let off = GOOD.replace(
            "  zone: example.com\n",
            "  zone: example.com\n  cluster_domain: \"\"\n",
        );
        assert_eq!(
            parse(Path::new("f.yaml"), &off).unwrap().cluster_domain,
            None
        );
        let bad = f.replace("10.4.0.0/14", "10.4.0.0/40");
        let errs = parse(Path::new("f.yaml"), &bad).unwrap_err();
        assert!(
            errs[0]
                .to_string()
                .contains("f.yaml:8: clusters[0].client_networks[0]: \"10.4.0.0/40\""),
            "{}",
            errs[0]
        );
        let bad = f.replace("ttl: 5", "ttl: soon");
        let errs = parse(Path::new("f.yaml"), &bad).unwrap_err();
        assert!(
            errs[0].to_string().contains("services[0].ttl"),
            "{}",
            errs[0]
        );
    }

    #[test]
    fn toml_works_too() {
        let t = "[federation]\nname = \"myfed\"\nzone = \"example.com\"\n[[clusters]]\nname = \"c1\"\nregion = \"east\"\n[[services]]\nname = \"web\"\nnamespace = \"shop\"\n[[services.shards]]\ncluster = \"c1\"\naddresses = [\"192.0.2.1\"]\nready_endpoints = 1\n";
        let f = parse(Path::new("f.toml"), t).unwrap();
        assert_eq!(f.services[0].shards[0].cluster, "c1");
        let errs = parse(
            Path::new("f.toml"),
            &t.replace("ready_endpoints = 1", "ready_endpoints = \"x\""),
        )
        .unwrap_err();
        assert_eq!(errs[0].line, Some(13), "{errs:?}");
    }
}
