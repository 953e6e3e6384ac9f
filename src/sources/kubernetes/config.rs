//! The `kubernetes:` section of the fedns config: the federation the clusters form, the rule
//! that picks federated Services, fail-static timing, and the member clusters.
//!
//! Guarantees: a section either validates completely into [`KubeSettings`] (names are DNS labels,
//! cluster names unique, each cluster has exactly one way to reach its API server) or yields every
//! problem found, each naming the field. Paths are resolved against the config file's directory.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::model::{DnsName, Policy};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKubernetes {
    federation: String,
    zone: String,
    #[serde(default = "default_ttl")]
    ttl: u32,
    #[serde(default = "default_max_answers")]
    max_answers: usize,
    #[serde(default)]
    policy: Option<RawPolicy>,
    #[serde(default)]
    select: RawSelect,
    #[serde(default = "default_stale_grace")]
    stale_grace_secs: u64,
    #[serde(default = "default_sync_timeout")]
    sync_timeout_secs: u64,
    #[serde(default = "default_coalesce")]
    coalesce_ms: u64,
    #[serde(default = "default_resolve")]
    resolve_interval_secs: u64,
    /// The member clusters' DNS domain; `""` turns the in-cluster redirect names off.
    #[serde(default = "default_cluster_domain")]
    cluster_domain: String,
    /// Serve ExternalDNS `DNSEndpoint` objects (every cluster, unless it says otherwise).
    #[serde(default)]
    dns_endpoints: bool,
    /// Serve Gateway API HTTPRoutes and Gateways (every cluster, unless it says otherwise).
    #[serde(default)]
    gateway_api: bool,
    /// The MCS cluster-set domain (`clusterset.local`); `""` (the default): no MCS names.
    #[serde(default)]
    clusterset_domain: String,
    /// Read MCS `ServiceImport`s (every cluster, unless it says otherwise); needs
    /// `clusterset_domain`.
    #[serde(default)]
    service_imports: bool,
    #[serde(default)]
    clusters: Vec<RawCluster>,
}

fn default_cluster_domain() -> String {
    "cluster.local".into()
}

/// `policy: geo | all | weighted | {failover: [cluster or region, ...]}`, as in federation files.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
enum RawPolicy {
    Geo,
    All,
    Weighted,
    Failover(Vec<String>),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSelect {
    #[serde(default)]
    label: Option<String>,
    #[serde(default)]
    annotation: Option<String>,
    #[serde(default)]
    namespaces: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCluster {
    name: String,
    #[serde(default)]
    kubeconfig: Option<PathBuf>,
    #[serde(default)]
    context: Option<String>,
    #[serde(default)]
    in_cluster: bool,
    #[serde(default)]
    region: Option<String>,
    #[serde(default)]
    zones: Vec<String>,
    #[serde(default = "default_weight")]
    weight: u32,
    /// Pod and node networks (CIDRs): clients there are in this cluster.
    #[serde(default)]
    client_networks: Vec<String>,
    #[serde(default)]
    dns_endpoints: Option<bool>,
    #[serde(default)]
    gateway_api: Option<bool>,
    #[serde(default)]
    service_imports: Option<bool>,
}

fn default_ttl() -> u32 {
    30
}
fn default_max_answers() -> usize {
    8
}
fn default_stale_grace() -> u64 {
    300
}
/// Long enough for a large cluster's first lists (10k services list in a few seconds), short
/// enough that one unreachable member never keeps every replica NotReady for long.
fn default_sync_timeout() -> u64 {
    30
}
fn default_coalesce() -> u64 {
    50
}
fn default_resolve() -> u64 {
    30
}
fn default_weight() -> u32 {
    crate::model::DEFAULT_WEIGHT
}

/// `KEY` or `KEY=VALUE`: an object matches when it carries KEY (with VALUE, when given).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyMatch {
    pub key: String,
    pub value: Option<String>,
}

impl KeyMatch {
    fn parse(s: &str) -> Result<KeyMatch, String> {
        let (key, value) = match s.split_once('=') {
            Some((k, v)) => (k.trim(), Some(v.trim().to_string())),
            None => (s.trim(), None),
        };
        if key.is_empty() || key.contains(|c: char| c.is_whitespace() || c == ',') {
            return Err(format!("{s:?} is not KEY or KEY=VALUE"));
        }
        Ok(KeyMatch {
            key: key.to_string(),
            value,
        })
    }

    pub fn matches<'a>(&self, mut get: impl FnMut(&str) -> Option<&'a str>) -> bool {
        match (get(&self.key), &self.value) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(v), Some(want)) => v == want,
        }
    }

    /// As a Kubernetes label selector, so the API server filters before sending.
    pub fn selector(&self) -> String {
        match &self.value {
            Some(v) => format!("{}={v}", self.key),
            None => self.key.clone(),
        }
    }
}

/// Which Services are federated: type LoadBalancer, in one of `namespaces` (any when empty),
/// carrying the `label` and the `annotation` when those are set.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SelectRule {
    pub label: Option<KeyMatch>,
    pub annotation: Option<KeyMatch>,
    pub namespaces: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    Kubeconfig {
        path: PathBuf,
        context: Option<String>,
    },
    InCluster,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSpec {
    pub name: String,
    pub access: Access,
    /// Overrides what Node labels say.
    pub region: Option<String>,
    pub zones: Vec<String>,
    pub weight: u32,
    /// Pod and node networks: clients there are in this cluster (in-cluster redirect).
    pub client_networks: Vec<(std::net::IpAddr, u8)>,
    /// Watch `DNSEndpoint`s (`externaldns.k8s.io/v1alpha1`).
    pub dns_endpoints: bool,
    /// Watch `Gateway`s and `HTTPRoute`s (`gateway.networking.k8s.io/v1`).
    pub gateway_api: bool,
    /// Watch `ServiceImport`s (`multicluster.x-k8s.io/v1alpha1`).
    pub service_imports: bool,
}

impl ClusterSpec {
    /// Whether this cluster watches `kind` (the built-in kinds always, custom ones when on).
    pub fn watches(&self, kind: super::state::Kind) -> bool {
        use super::state::Kind;
        match kind {
            Kind::DnsEndpoints => self.dns_endpoints,
            Kind::Gateways | Kind::HttpRoutes => self.gateway_api,
            Kind::ServiceImports => self.service_imports,
            Kind::Services | Kind::EndpointSlices | Kind::Ingresses | Kind::Nodes => true,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct KubeSettings {
    pub federation: String,
    pub zone: DnsName,
    pub ttl: u32,
    pub max_answers: usize,
    /// How global names (and ingress hosts) choose shards for a client.
    pub policy: Policy,
    pub select: SelectRule,
    pub stale_grace: Duration,
    /// `/readyz` stops waiting for a cluster that has not synced this long after it was added
    /// (it is still named in the body, and `fedns_cluster_up` says it is down).
    pub sync_timeout: Duration,
    pub coalesce: Duration,
    pub resolve_interval: Duration,
    /// See [`crate::model::Federation::cluster_domain`].
    pub cluster_domain: Option<DnsName>,
    /// See [`crate::model::Federation::clusterset_domain`].
    pub clusterset_domain: Option<DnsName>,
    pub clusters: Vec<ClusterSpec>,
}

fn label_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

impl RawKubernetes {
    /// Validates the section; each problem is `(field, message)`.
    pub fn validate(
        self,
        resolve: &dyn Fn(&Path) -> PathBuf,
    ) -> Result<KubeSettings, Vec<(String, String)>> {
        let mut problems = Vec::new();
        let mut err = |f: String, m: String| problems.push((f, m));
        if !label_ok(&self.federation) {
            err(
                "kubernetes.federation".into(),
                format!("{:?} is not a DNS label", self.federation),
            );
        }
        let zone = match DnsName::parse(&self.zone) {
            Ok(z) if !z.is_root() => z,
            Ok(_) => {
                err(
                    "kubernetes.zone".into(),
                    "the root zone cannot be a federation zone".into(),
                );
                DnsName::root()
            }
            Err(e) => {
                err("kubernetes.zone".into(), e);
                DnsName::root()
            }
        };
        if self.max_answers == 0 {
            err("kubernetes.max_answers".into(), "must be at least 1".into());
        }
        if self.coalesce_ms == 0 || self.coalesce_ms > 10_000 {
            err(
                "kubernetes.coalesce_ms".into(),
                format!("{} is outside 1..=10000", self.coalesce_ms),
            );
        }
        if self.resolve_interval_secs == 0 {
            err(
                "kubernetes.resolve_interval_secs".into(),
                "must be at least 1".into(),
            );
        }
        let policy = match self.policy {
            None | Some(RawPolicy::Geo) => Policy::Geo,
            Some(RawPolicy::All) => Policy::All,
            Some(RawPolicy::Weighted) => Policy::Weighted,
            Some(RawPolicy::Failover(order)) => {
                if order.is_empty() {
                    err(
                        "kubernetes.policy".into(),
                        "failover needs at least one cluster or region".into(),
                    );
                }
                Policy::Failover(order)
            }
        };
        let mut key = |field: &str, v: &Option<String>| {
            v.as_deref().and_then(|s| match KeyMatch::parse(s) {
                Ok(k) => Some(k),
                Err(e) => {
                    err(format!("kubernetes.select.{field}"), e);
                    None
                }
            })
        };
        let select = SelectRule {
            label: key("label", &self.select.label),
            annotation: key("annotation", &self.select.annotation),
            namespaces: self.select.namespaces.clone(),
        };
        for (i, ns) in self.select.namespaces.iter().enumerate() {
            if !label_ok(ns) {
                err(
                    format!("kubernetes.select.namespaces[{i}]"),
                    format!("{ns:?} is not a namespace name"),
                );
            }
        }
        let mut seen = HashSet::new();
        let mut clusters = Vec::new();
        for (i, c) in self.clusters.into_iter().enumerate() {
            let at = |f: &str| format!("kubernetes.clusters[{i}].{f}");
            if c.name.is_empty() || c.name.len() > 253 || c.name.contains(char::is_whitespace) {
                err(at("name"), format!("{:?} is not a cluster name", c.name));
            }
            if !seen.insert(c.name.clone()) {
                err(at("name"), format!("cluster {:?} is listed twice", c.name));
            }
            let access = match (c.in_cluster, c.kubeconfig) {
                (true, None) if c.context.is_none() => Access::InCluster,
                (true, _) => {
                    err(
                        at("in_cluster"),
                        "in_cluster excludes kubeconfig and context".into(),
                    );
                    Access::InCluster
                }
                (false, Some(p)) => Access::Kubeconfig {
                    path: resolve(&p),
                    context: c.context,
                },
                (false, None) => {
                    err(
                        at("kubeconfig"),
                        "a kubeconfig path (or in_cluster: true) is needed".into(),
                    );
                    Access::InCluster
                }
            };
            if let Some(r) = &c.region
                && !label_ok(r)
            {
                err(at("region"), format!("{r:?} is not a DNS label"));
            }
            for (j, z) in c.zones.iter().enumerate() {
                if !label_ok(z) {
                    err(
                        at(&format!("zones[{j}]")),
                        format!("{z:?} is not a DNS label"),
                    );
                }
            }
            if !c.zones.is_empty() && c.region.is_none() {
                err(at("zones"), "zones need a region override too".into());
            }
            let mut client_networks = Vec::new();
            for (j, n) in c.client_networks.iter().enumerate() {
                match crate::config::parse_cidr(n) {
                    Ok(net) => client_networks.push(net),
                    Err(e) => err(at(&format!("client_networks[{j}]")), e),
                }
            }
            clusters.push(ClusterSpec {
                name: c.name,
                access,
                region: c.region,
                zones: c.zones,
                weight: c.weight,
                client_networks,
                dns_endpoints: c.dns_endpoints.unwrap_or(self.dns_endpoints),
                gateway_api: c.gateway_api.unwrap_or(self.gateway_api),
                service_imports: c.service_imports.unwrap_or(self.service_imports),
            });
        }
        let cluster_domain = match self.cluster_domain.trim() {
            "" => None,
            d => match DnsName::parse(d) {
                Ok(n) if !n.is_root() => Some(n),
                Ok(_) => {
                    err(
                        "kubernetes.cluster_domain".into(),
                        "the root cannot be a cluster domain".into(),
                    );
                    None
                }
                Err(e) => {
                    err("kubernetes.cluster_domain".into(), e);
                    None
                }
            },
        };
        let clusterset_domain = match self.clusterset_domain.trim() {
            "" => None,
            d => match DnsName::parse(d) {
                Ok(n) => match crate::model::Federation::clusterset_conflict(
                    &zone,
                    cluster_domain.as_ref(),
                    &n,
                ) {
                    Some(why) => {
                        err(
                            "kubernetes.clusterset_domain".into(),
                            format!("{d:?}: {why}"),
                        );
                        None
                    }
                    None => Some(n),
                },
                Err(e) => {
                    err("kubernetes.clusterset_domain".into(), format!("{d:?}: {e}"));
                    None
                }
            },
        };
        // ServiceImports only ever change the MCS names: reading them without serving those
        // names is a mistake worth a refusal, not a silent no-op.
        if self.clusterset_domain.trim().is_empty() {
            for (i, c) in clusters.iter().enumerate() {
                if c.service_imports {
                    let field = if self.service_imports {
                        "kubernetes.service_imports".to_string()
                    } else {
                        format!("kubernetes.clusters[{i}].service_imports")
                    };
                    err(
                        field,
                        "true, but clusterset_domain is not set: ServiceImports only answer the MCS names (set clusterset_domain: clusterset.local)".into(),
                    );
                    break;
                }
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(KubeSettings {
            federation: self.federation,
            zone,
            ttl: self.ttl,
            max_answers: self.max_answers,
            policy,
            select,
            stale_grace: Duration::from_secs(self.stale_grace_secs),
            sync_timeout: Duration::from_secs(self.sync_timeout_secs),
            coalesce: Duration::from_millis(self.coalesce_ms),
            resolve_interval: Duration::from_secs(self.resolve_interval_secs),
            cluster_domain,
            clusterset_domain,
            clusters,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<KubeSettings, Vec<(String, String)>> {
        let raw: RawKubernetes = serde_saphyr::from_str(text).expect("yaml");
        raw.validate(&|p: &Path| Path::new("/etc/fedns").join(p))
    }

    /// `clusterset_domain` off by default; `service_imports` per cluster (the section's value
    /// unless overridden) and refused without a `clusterset_domain`, naming the field.
    #[test]
    fn clusterset_domain_and_service_imports() {
        let base = "federation: f\nzone: example.com\n";
        let clusters = "clusters:\n  - {name: a, in_cluster: true}\n  - {name: b, in_cluster: true, service_imports: false}\n";
        let s = parse(&format!("{base}{clusters}")).unwrap();
        assert_eq!(s.clusterset_domain, None);
        assert!(!s.clusters[0].service_imports);
        let s = parse(&format!(
            "{base}clusterset_domain: clusterset.local\nservice_imports: true\n{clusters}"
        ))
        .unwrap();
        assert_eq!(s.clusterset_domain, DnsName::parse("clusterset.local").ok());
        assert!(s.clusters[0].service_imports && !s.clusters[1].service_imports);
        let errs = parse(&format!("{base}service_imports: true\n{clusters}")).unwrap_err();
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].0, "kubernetes.service_imports");
        assert!(errs[0].1.contains("clusterset_domain"), "{errs:?}");
        let errs = parse(&format!(
            "{base}clusters:\n  - {{name: a, in_cluster: true, service_imports: true}}\n"
        ))
        .unwrap_err();
        assert_eq!(errs[0].0, "kubernetes.clusters[0].service_imports");
        let errs = parse(&format!(
            "{base}clusterset_domain: shop.example.com\n{clusters}"
        ))
        .unwrap_err();
        assert_eq!(errs[0].0, "kubernetes.clusterset_domain");
        assert!(
            errs[0].1.contains("\"shop.example.com\"") && errs[0].1.contains("overlaps"),
            "{errs:?}"
        );
    }

    #[test]
    fn full_section() {
        let s = parse(
            "federation: myfed\nzone: example.com\nstale_grace_secs: 60\nselect:\n  label: fedns.io/federate=true\n  namespaces: [shop]\nclusters:\n  - {name: east, kubeconfig: kc/east, context: east, region: us-east1, zones: [us-east1-b]}\n  - {name: local, in_cluster: true}\n",
        )
        .unwrap();
        assert_eq!(s.stale_grace, Duration::from_secs(60));
        assert_eq!(s.policy, Policy::Geo);
        let w =
            parse("federation: f\nzone: example.com\npolicy: {failover: [east, west]}\n").unwrap();
        assert_eq!(
            w.policy,
            Policy::Failover(vec!["east".into(), "west".into()])
        );
        assert_eq!(
            s.select.label.as_ref().unwrap().selector(),
            "fedns.io/federate=true"
        );
        assert_eq!(
            s.clusters[0].access,
            Access::Kubeconfig {
                path: "/etc/fedns/kc/east".into(),
                context: Some("east".into())
            }
        );
        assert_eq!(s.clusters[1].access, Access::InCluster);
        // One default weight in every source (federation files too).
        assert_eq!(s.clusters[1].weight, crate::model::DEFAULT_WEIGHT);
        assert_eq!(s.cluster_domain, DnsName::parse("cluster.local").ok());
        let n = parse("federation: f\nzone: example.com\ncluster_domain: \"\"\nclusters:\n  - {name: a, in_cluster: true, client_networks: [10.4.0.0/14, \"fd00:4::/48\"]}\n").unwrap();
        assert_eq!(n.cluster_domain, None);
        assert_eq!(n.clusters[0].client_networks.len(), 2);
        let bad = parse("federation: f\nzone: example.com\nclusters:\n  - {name: a, in_cluster: true, client_networks: [10.4.0.0/99]}\n").unwrap_err();
        assert_eq!(
            bad[0].0, "kubernetes.clusters[0].client_networks[0]",
            "{bad:?}"
        );
        assert!(!s.clusters[0].dns_endpoints && !s.clusters[0].gateway_api);
        let c = parse(
            "federation: f\nzone: example.com\ndns_endpoints: true\nclusters:\n  - {name: a, in_cluster: true}\n  - {name: b, in_cluster: true, dns_endpoints: false, gateway_api: true}\n",
        )
        .unwrap();
        assert!(c.clusters[0].dns_endpoints && !c.clusters[0].gateway_api);
        assert!(!c.clusters[1].dns_endpoints && c.clusters[1].gateway_api);
    }

    #[test]
    fn every_problem_is_named() {
        let errs = parse(
            "federation: my_fed\nzone: example.com\nclusters:\n  - {name: a}\n  - {name: a, kubeconfig: k, in_cluster: true}\n  - {name: b, kubeconfig: k, zones: [z]}\n",
        )
        .unwrap_err();
        let fields: Vec<&str> = errs.iter().map(|(f, _)| f.as_str()).collect();
        assert!(fields.contains(&"kubernetes.federation"), "{errs:?}");
        assert!(
            fields.contains(&"kubernetes.clusters[0].kubeconfig"),
            "{errs:?}"
        );
        assert!(fields.contains(&"kubernetes.clusters[1].name"), "{errs:?}");
        assert!(
            fields.contains(&"kubernetes.clusters[1].in_cluster"),
            "{errs:?}"
        );
        assert!(fields.contains(&"kubernetes.clusters[2].zones"), "{errs:?}");
    }

    #[test]
    fn key_match() {
        let k = KeyMatch::parse("a=b").unwrap();
        assert!(k.matches(|_| Some("b")));
        assert!(!k.matches(|_| Some("c")));
        assert!(!k.matches(|_| None));
        assert!(KeyMatch::parse("a").unwrap().matches(|_| Some("")));
        assert!(KeyMatch::parse("=x").is_err());
    }
}
