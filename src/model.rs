//! Source-neutral data model: domain names, records and federation snapshots.
//!
//! Every source (federation file, zone files, later Kubernetes and etcd) translates its input into
//! these types; the merger and the table builder only ever see these. Nothing here knows about
//! the DNS wire library, sockets or files.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An absolute domain name, stored lowercased in DNS wire format (length-prefixed labels ending in
/// the root label). Lowercasing once here is what lets the query path match names with one hash
/// lookup of the (lowercased) question. Shared (`Arc`): the builder's maps, the aliases that read a
/// name and the table's segments all hold one copy.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DnsName(std::sync::Arc<[u8]>);

/// Lets maps keyed by names be searched with a slice of wire format (a suffix of a longer name)
/// without allocating; `Hash` of the boxed slice is the slice's, so lookups agree.
impl std::borrow::Borrow<[u8]> for DnsName {
    fn borrow(&self) -> &[u8] {
        &self.0
    }
}

impl DnsName {
    pub fn root() -> Self {
        DnsName(std::sync::Arc::new([0]))
    }

    /// Parses a dotted name (`a.b.example.com` or with a trailing dot). Escapes are not
    /// supported here; names from zone files go through the DNS module's own parser.
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.strip_suffix('.').unwrap_or(text);
        if t.is_empty() {
            return Ok(Self::root());
        }
        let mut wire = Vec::with_capacity(t.len() + 2);
        for label in t.split('.') {
            if label.is_empty() {
                return Err(format!("empty label in name {text:?}"));
            }
            if label.len() > 63 {
                return Err(format!("label {label:?} longer than 63 bytes"));
            }
            if label.bytes().any(|b| b <= b' ' || b == b'\\' || b >= 0x7f) {
                return Err(format!("unsupported character in label {label:?}"));
            }
            wire.push(label.len() as u8);
            wire.extend(label.bytes().map(|b| b.to_ascii_lowercase()));
        }
        wire.push(0);
        if wire.len() > 255 {
            return Err(format!("name {text:?} longer than 255 bytes"));
        }
        Ok(DnsName(wire.into()))
    }

    /// Builds a name from wire-format bytes, lowercasing them. The caller guarantees a valid
    /// uncompressed wire name.
    pub fn from_wire_lowercase(wire: &[u8]) -> Self {
        DnsName(wire.iter().map(|b| b.to_ascii_lowercase()).collect())
    }

    pub fn wire(&self) -> &[u8] {
        &self.0
    }

    pub fn is_root(&self) -> bool {
        self.0.len() == 1
    }

    /// The labels from the leftmost one, without length bytes.
    pub fn labels(&self) -> impl Iterator<Item = &[u8]> {
        let mut pos = 0;
        std::iter::from_fn(move || {
            let len = self.0[pos] as usize;
            if len == 0 {
                return None;
            }
            let label = &self.0[pos + 1..pos + 1 + len];
            pos += 1 + len;
            Some(label)
        })
    }

    /// The name without its leftmost label; `None` for the root.
    pub fn parent(&self) -> Option<DnsName> {
        if self.is_root() {
            return None;
        }
        let skip = self.0[0] as usize + 1;
        Some(DnsName(self.0[skip..].into()))
    }

    /// `label.self`
    pub fn prepend(&self, label: &str) -> Result<DnsName, String> {
        let mut text = String::from(label);
        text.push('.');
        text.push_str(&self.to_string());
        DnsName::parse(&text)
    }

    /// True when `self` equals `zone` or lies below it.
    pub fn is_within(&self, zone: &DnsName) -> bool {
        let (me, z) = (self.wire(), zone.wire());
        if z.len() > me.len() {
            return false;
        }
        // Walk label boundaries of self so that "xexample.com" is not inside "example.com".
        let mut pos = 0;
        loop {
            if me.len() - pos == z.len() {
                return &me[pos..] == z;
            }
            if me[pos] == 0 {
                return false;
            }
            pos += me[pos] as usize + 1;
        }
    }
}

impl fmt::Display for DnsName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_root() {
            return f.write_str(".");
        }
        for label in self.labels() {
            for &b in label {
                if b == b'.' || b == b'\\' {
                    write!(f, "\\{}", b as char)?;
                } else if b.is_ascii_graphic() {
                    write!(f, "{}", b as char)?;
                } else {
                    write!(f, "\\{b:03}")?;
                }
            }
            f.write_str(".")?;
        }
        Ok(())
    }
}

impl fmt::Debug for DnsName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DnsName({self})")
    }
}

/// Record types fedns models explicitly; everything else from zone files is kept opaque.
pub mod rtype {
    pub const A: u16 = 1;
    pub const NS: u16 = 2;
    pub const CNAME: u16 = 5;
    pub const SOA: u16 = 6;
    pub const PTR: u16 = 12;
    pub const MX: u16 = 15;
    pub const TXT: u16 = 16;
    pub const AAAA: u16 = 28;
    pub const SRV: u16 = 33;
    pub const DNAME: u16 = 39;
    pub const DS: u16 = 43;
    pub const OPT: u16 = 41;
    pub const IXFR: u16 = 251;
    pub const AXFR: u16 = 252;
    pub const ANY: u16 = 255;
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Soa {
    pub mname: DnsName,
    pub rname: DnsName,
    pub serial: u32,
    pub refresh: u32,
    pub retry: u32,
    pub expire: u32,
    pub minimum: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RData {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    Cname(DnsName),
    Ns(DnsName),
    Ptr(DnsName),
    Mx {
        preference: u16,
        exchange: DnsName,
    },
    Srv {
        priority: u16,
        weight: u16,
        port: u16,
        target: DnsName,
    },
    Txt(Vec<Box<[u8]>>),
    /// Boxed: an SOA is rare and large, and every other record would otherwise be its size.
    Soa(Box<Soa>),
    /// Any other type, as uncompressed RDATA (RFC 3597 style).
    Opaque {
        rtype: u16,
        rdata: Box<[u8]>,
    },
}

impl RData {
    pub fn rtype(&self) -> u16 {
        match self {
            RData::A(_) => rtype::A,
            RData::Aaaa(_) => rtype::AAAA,
            RData::Cname(_) => rtype::CNAME,
            RData::Ns(_) => rtype::NS,
            RData::Ptr(_) => rtype::PTR,
            RData::Mx { .. } => rtype::MX,
            RData::Srv { .. } => rtype::SRV,
            RData::Txt(_) => rtype::TXT,
            RData::Soa(_) => rtype::SOA,
            RData::Opaque { rtype, .. } => *rtype,
        }
    }

    pub fn from_ip(ip: IpAddr) -> RData {
        match ip {
            IpAddr::V4(a) => RData::A(a),
            IpAddr::V6(a) => RData::Aaaa(a),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub name: DnsName,
    pub ttl: u32,
    pub data: RData,
}

/// One zone from a zone file: its origin and every record in it (SOA included).
#[derive(Clone, Debug, PartialEq)]
pub struct StaticZone {
    pub origin: DnsName,
    /// Where it came from, for messages.
    pub file: String,
    pub records: Vec<Record>,
}

/// A federation as a source sees it: clusters with their topology, services with their shards.
/// The federation file produces this directly; the Kubernetes source will produce it from watches.
#[derive(Clone, Debug, PartialEq)]
pub struct Federation {
    pub name: String,
    pub zone: DnsName,
    /// TTL of dynamic records, seconds.
    pub ttl: u32,
    /// Most address records in one answer.
    pub max_answers: usize,
    /// How global names choose shards for a client (services may override it).
    pub policy: Policy,
    pub clusters: Vec<Cluster>,
    /// Shared (`Arc`) so that a snapshot reuses the services that did not change and the
    /// builder can tell them apart by pointer before comparing.
    pub services: Vec<std::sync::Arc<Service>>,
    /// Ingress hosts answered like a global name (DESIGN §1); empty outside Kubernetes.
    pub ingress_hosts: Vec<IngressHost>,
    /// The member clusters' DNS domain (`cluster.local`): `SVC.NS.FED.svc.DOMAIN` answers the
    /// in-cluster redirect (DESIGN §1) in the zone `FED.svc.DOMAIN`; `None`: not served.
    pub cluster_domain: Option<DnsName>,
    /// The MCS cluster-set domain (`clusterset.local`, KEP-1645): `SVC.NS.svc.DOMAIN` and its
    /// SRV names are served in the zone `svc.DOMAIN`; `None` (the default): not served.
    pub clusterset_domain: Option<DnsName>,
    /// Records that ExternalDNS `DNSEndpoint` objects give names (the union over clusters),
    /// served as written; empty outside Kubernetes. Shared (`Arc`): most snapshots reuse the
    /// previous one's, compared by pointer first.
    pub endpoints: std::sync::Arc<Vec<EndpointName>>,
}

impl Federation {
    /// The zone of the in-cluster redirect names, `FED.svc.DOMAIN`.
    pub fn redirect_zone(&self) -> Option<DnsName> {
        let domain = self.cluster_domain.as_ref()?;
        DnsName::parse(&format!("{}.svc.{domain}", self.name)).ok()
    }

    /// Why `clusterset_domain` cannot go with the federation's zone and cluster domain, if it
    /// cannot: its zone `svc.DOMAIN` must neither hold nor sit inside the federation zone or
    /// the in-cluster redirect zone, or one name would have two meanings.
    pub fn clusterset_conflict(
        zone: &DnsName,
        cluster_domain: Option<&DnsName>,
        clusterset_domain: &DnsName,
    ) -> Option<String> {
        if clusterset_domain.is_root() {
            return Some("the root cannot be a cluster-set domain".into());
        }
        let cs = DnsName::parse(&format!("svc.{clusterset_domain}")).ok()?;
        let overlap = |z: &DnsName| cs.is_within(z) || z.is_within(&cs);
        if overlap(zone) {
            return Some(format!("its zone {cs} overlaps the federation zone {zone}"));
        }
        if let Some(cd) = cluster_domain
            && let Ok(rz) = DnsName::parse(&format!("svc.{cd}"))
            && overlap(&rz)
        {
            return Some(format!(
                "its zone {cs} overlaps the in-cluster redirect names under {rz} (cluster_domain {cd})"
            ));
        }
        None
    }

    /// The zone of the MCS names, `svc.DOMAIN`.
    pub fn clusterset_zone(&self) -> Option<DnsName> {
        let domain = self.clusterset_domain.as_ref()?;
        DnsName::parse(&format!("svc.{domain}")).ok()
    }
}

/// One name's records from `DNSEndpoint` objects: `(ttl, data)`, sorted, at most one CNAME and
/// then nothing else (the source resolves conflicts before it gets here).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointName {
    pub name: DnsName,
    pub records: Vec<(u32, RData)>,
}

/// An Ingress host name and, per cluster, its ingress load balancer with the ready endpoints of
/// its backends (healthy by the same rule as a service shard).
#[derive(Clone, Debug, PartialEq)]
pub struct IngressHost {
    pub host: DnsName,
    pub shards: Vec<Shard>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Cluster {
    pub name: String,
    pub region: String,
    /// Availability zones; a multi-zone cluster has several.
    pub zones: Vec<String>,
    /// Share of answers under the `weighted` policy (relative to other clusters; default
    /// [`DEFAULT_WEIGHT`] in every source).
    pub weight: u32,
    /// Pod and node networks of the cluster: clients there are in this cluster (the in-cluster
    /// redirect). Read when fedns starts (they build the client locator).
    pub client_networks: Vec<(IpAddr, u8)>,
}

/// The weight of a cluster (and of a shard) that names none, in every source.
pub const DEFAULT_WEIGHT: u32 = 1;

/// How a global name picks healthy shards for a client (DESIGN §3).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum Policy {
    /// The nearest location with healthy shards (zone, region, then regions by distance);
    /// `All` when the client's location is unknown.
    #[default]
    Geo,
    /// Every healthy shard (federation v1).
    All,
    /// The first of these clusters or regions that has healthy shards.
    Failover(Vec<String>),
    /// One cluster per answer, chosen in proportion to cluster weights.
    Weighted,
}

/// `Eq` so that comparing `Arc<Service>`s (whole snapshots) checks the pointer first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    pub name: String,
    pub namespace: String,
    pub ports: Vec<ServicePort>,
    pub shards: Vec<Shard>,
    /// Overrides the federation's policy for this service.
    pub policy: Option<Policy>,
    /// Overrides the federation's TTL for this service's names.
    pub ttl: Option<u32>,
    /// The MCS `ServiceImport`s of this service, one per member cluster that has one, sorted
    /// by cluster; empty outside Kubernetes or with the source off.
    pub imports: Vec<Import>,
}

/// A `ServiceImport` (`multicluster.x-k8s.io/v1alpha1`) in one member cluster: what that
/// cluster's MCS implementation allocated for the service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Import {
    pub cluster: String,
    /// `spec.ips` of a `ClusterSetIP` import (local to the importing cluster); empty for a
    /// `Headless` one.
    pub ips: Vec<IpAddr>,
    /// `spec.type: Headless`.
    pub headless: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ServicePort {
    pub name: String,
    /// `tcp`, `udp` or `sctp`, lowercase.
    pub protocol: String,
    pub port: u16,
}

/// One service in one cluster.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Shard {
    pub cluster: String,
    /// Load-balancer addresses, v4 and v6.
    pub addresses: Vec<IpAddr>,
    /// The Service's ClusterIPs in its cluster (`spec.clusterIPs`), sorted; empty when unknown
    /// (federation files) or headless. Only the in-cluster redirect reads them, for clients of
    /// this cluster.
    pub cluster_ips: Vec<IpAddr>,
    pub ready_endpoints: u32,
    pub not_ready_endpoints: u32,
    /// Zones the shard's endpoints are in; empty means every zone of its cluster.
    pub zones: Vec<String>,
    /// Active probe verdict; sources leave it `Unprobed`, the merger fills it in.
    pub probe: ProbeState,
    /// Addresses whose probes fail while others of the shard pass: left out of answers (the
    /// shard stays with its other addresses). Sources leave it empty; the merger fills it in.
    pub probe_down: Vec<IpAddr>,
    /// Overrides its cluster's weight for this service under `weighted`.
    pub weight: Option<u32>,
    /// The ready endpoints of a headless Service (`clusterIP: None`) exported through MCS, for
    /// the cluster-set names (KEP-1645 §2.4); `None` for every other shard, so they cost one
    /// pointer.
    pub headless: Option<std::sync::Arc<Vec<Endpoint>>>,
}

/// A ready endpoint of a headless Service (an EndpointSlice endpoint).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Endpoint {
    /// Its `hostname` (a StatefulSet pod's name); `None` when it sets none.
    pub hostname: Option<String>,
    /// Its addresses, sorted.
    pub addresses: Vec<IpAddr>,
}

/// What active probes say about a shard (DESIGN §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ProbeState {
    /// No probe configured (or no result yet): health comes from endpoints alone.
    #[default]
    Unprobed,
    Up,
    Down,
    /// Down, but every shard of its service is down too: kept in answers (fail static).
    DownServedStatic,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_lowercase_and_display() {
        let n = DnsName::parse("Checkout.Shop.example.COM.").unwrap();
        assert_eq!(n.to_string(), "checkout.shop.example.com.");
        assert_eq!(n, DnsName::parse("checkout.shop.example.com").unwrap());
        assert_eq!(n.parent().unwrap().to_string(), "shop.example.com.");
        assert!(DnsName::parse("a..b").is_err());
        assert!(DnsName::parse(&"x".repeat(64)).is_err());
    }

    #[test]
    fn within_respects_label_boundaries() {
        let zone = DnsName::parse("example.com").unwrap();
        assert!(DnsName::parse("a.example.com").unwrap().is_within(&zone));
        assert!(zone.is_within(&zone));
        assert!(!DnsName::parse("xexample.com").unwrap().is_within(&zone));
        assert!(!DnsName::parse("com").unwrap().is_within(&zone));
    }
}
