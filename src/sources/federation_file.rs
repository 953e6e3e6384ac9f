//! The federation file source (DESIGN §2.4): clusters, their topology and their services'
//! shards, written by hand in YAML or TOML. It is the embedded default that lets fedns run without
//! any cluster, and what tests use where a cluster adds nothing.
//!
//! Guarantees: a file either parses and validates completely into a [`Federation`], or yields
//! every problem found, each naming the file, the line (where the format gives one) and the field.
//! [`parse_cached`] gives the same result while parsing only the services whose text changed
//! since the last good parse (it falls back to the whole parse for anything it cannot vouch for).

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
    /// MCS ServiceImports, per importing cluster (the MCS names, with
    /// `federation.clusterset_domain`).
    #[serde(default)]
    imports: Vec<RawImport>,
}

/// `{cluster, type: ClusterSetIP | Headless, ips: [...]}`, as a ServiceImport's spec says.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawImport {
    cluster: Spanned<String>,
    #[serde(rename = "type")]
    kind: Spanned<String>,
    #[serde(default)]
    ips: Vec<Spanned<String>>,
}

/// A ready endpoint of a headless Service: `{hostname, addresses}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEndpoint {
    #[serde(default)]
    hostname: Option<Spanned<String>>,
    addresses: Vec<Spanned<String>>,
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
    /// The Service's ClusterIPs in its cluster (the in-cluster redirect answers them).
    #[serde(default)]
    cluster_ips: Vec<Spanned<String>>,
    /// The ready endpoints of a headless Service (the MCS headless names); present, even
    /// empty, it makes the shard a headless one.
    #[serde(default)]
    endpoints: Option<Vec<RawEndpoint>>,
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

    /// Takes `older`'s `Arc` of every service that did not change, so the merger skips it by
    /// pointer and the two parses do not each hold a copy.
    pub fn share_unchanged(&mut self, older: &Parsed) {
        let old = &older.federation.services;
        let mut by_name: Option<std::collections::HashMap<(&str, &str), &std::sync::Arc<Service>>> =
            None;
        for (i, svc) in self.federation.services.iter_mut().enumerate() {
            let same = |o: &Service| o.name == svc.name && o.namespace == svc.namespace;
            let cand = match old.get(i) {
                Some(o) if same(o) => Some(o),
                _ => by_name
                    .get_or_insert_with(|| {
                        old.iter()
                            .map(|o| ((o.namespace.as_str(), o.name.as_str()), o))
                            .collect()
                    })
                    .get(&(svc.namespace.as_str(), svc.name.as_str()))
                    .copied(),
            };
            if let Some(o) = cand.filter(|o| ***o == **svc) {
                *svc = o.clone();
            }
        }
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

/// The last good YAML file as cut into its `services:` items, with each item's validated
/// service: an edit that leaves the rest of the file alone parses and validates only the items
/// whose text changed, and takes every other service (its `Arc`) from the last parse, instead of
/// parsing the whole file again (about a second at 100k shards). It holds the file's text and
/// the item spans (one copy), not a second model.
#[derive(Default)]
pub struct ItemCache {
    text: String,
    /// The file outside `services:` (what every item is validated against).
    skeleton: String,
    items: Vec<std::ops::Range<usize>>,
    /// Hash of an item's text → its index in `items` (checked against the text itself).
    by_hash: rustc_hash::FxHashMap<u64, usize>,
    parsed: Option<Parsed>,
}

impl ItemCache {
    fn clear(&mut self) {
        *self = ItemCache::default();
    }

    /// Remembers `parsed` as the parse of `text` (nothing if `text` does not cut). `cut`: the
    /// fast path's cut of this same text, so a small edit splits and hashes the file once.
    fn keep(&mut self, text: &str, parsed: &Parsed, cut: Option<Cut>) {
        self.clear();
        let cut = match cut {
            Some(c) => c,
            None => {
                if reuse_unsafe(text) {
                    return;
                }
                let Some((_, outside, chunks)) = split_services(text) else {
                    return;
                };
                Cut::of(text, outside, &chunks)
            }
        };
        if cut.items.len() != parsed.federation.services.len() {
            return;
        }
        for (i, h) in cut.hashes.iter().enumerate() {
            self.by_hash.entry(*h).or_insert(i);
        }
        self.items = cut.items;
        self.text = text.to_string();
        self.skeleton = cut.outside;
        self.parsed = Some(parsed.clone());
    }
}

/// A YAML file cut into its `services:` items: the rest of the file, each item's span and the
/// hash of its text.
struct Cut {
    outside: String,
    items: Vec<std::ops::Range<usize>>,
    hashes: Vec<u64>,
}

impl Cut {
    fn of(text: &str, outside: String, chunks: &[&str]) -> Cut {
        let base = text.as_ptr() as usize;
        Cut {
            outside,
            items: chunks
                .iter()
                .map(|c| {
                    let from = c.as_ptr() as usize - base;
                    from..from + c.len()
                })
                .collect(),
            hashes: chunks.iter().map(|c| item_hash(c)).collect(),
        }
    }
}

fn item_hash(item: &str) -> u64 {
    use std::hash::BuildHasher;
    rustc_hash::FxBuildHasher.hash_one(item)
}

/// Anchors and aliases (`&a`, `*a`) make an item's value depend on other text: such files are
/// always parsed whole.
fn reuse_unsafe(text: &str) -> bool {
    // Two single-byte searches (memchr) are many times faster than one over a char set.
    text.contains('&') || text.contains('*')
}

/// [`parse_with_hosts`], parsing only what changed since the last good parse that used
/// `cache`. The result is the same: whenever the fast path cannot vouch for it (TOML, a layout
/// it does not cut, anchors, a change outside `services:`, any problem in a changed item, a
/// duplicate) the whole file is parsed as before, so errors keep their file, line, field and
/// value.
pub fn parse_cached(
    path: &Path,
    text: &str,
    cache: &mut ItemCache,
) -> Result<Parsed, Vec<Problem>> {
    let toml = path.extension().is_some_and(|e| e == "toml");
    if toml {
        cache.clear();
        return parse_with_hosts(path, text);
    }
    if let Some((parsed, cut)) = parse_changed_items(path, text, cache) {
        cache.keep(text, &parsed, Some(cut));
        return Ok(parsed);
    }
    let parsed = parse_with_hosts(path, text)?;
    cache.keep(text, &parsed, None);
    Ok(parsed)
}

fn parse_changed_items(path: &Path, text: &str, cache: &ItemCache) -> Option<(Parsed, Cut)> {
    let last = cache.parsed.as_ref()?;
    if reuse_unsafe(text) {
        return None;
    }
    let (skeleton, outside, chunks) = split_services(text)?;
    if outside != cache.skeleton {
        return None;
    }
    let file = path.display().to_string();
    let mut raw: Option<RawFile> = None;
    let mut services = Vec::with_capacity(chunks.len());
    let mut hostnames = Vec::new();
    let cut = Cut::of(text, outside, &chunks);
    for (i, c) in chunks.iter().enumerate() {
        let old = cache
            .by_hash
            .get(&cut.hashes[i])
            .filter(|&&j| cache.text.get(cache.items[j].clone()) == Some(*c));
        if let Some(&j) = old {
            services.push(last.federation.services[j].clone());
            // Host names are in service order.
            let from = last.hostnames.partition_point(|h| h.service < j);
            hostnames.extend(
                last.hostnames[from..]
                    .iter()
                    .take_while(|h| h.service == j)
                    .map(|h| ShardHosts {
                        service: i,
                        ..h.clone()
                    }),
            );
            continue;
        }
        // A changed item: parsed alone and validated against the (unchanged) rest of the file.
        if raw.is_none() {
            raw = Some(
                serde_saphyr::from_str_with_options::<RawFile>(&skeleton, yaml_options()).ok()?,
            );
        }
        let r = raw.as_ref()?;
        let mut v =
            serde_saphyr::from_str_with_options::<Vec<RawService>>(c, yaml_options()).ok()?;
        let item = (v.len() == 1).then(|| v.pop()).flatten()?;
        let one = validate_parts(&file, &r.federation, &r.clusters, &[item]).ok()?;
        services.push(one.federation.services.into_iter().next()?);
        hostnames.extend(
            one.hostnames
                .into_iter()
                .map(|h| ShardHosts { service: i, ..h }),
        );
    }
    // Two items naming one service are reported by the whole parse.
    let mut seen = std::collections::HashSet::with_capacity(services.len());
    if !services
        .iter()
        .all(|s| seen.insert((s.name.as_str(), s.namespace.as_str())))
    {
        return None;
    }
    let mut federation = last.federation.clone();
    federation.services = services;
    Some((
        Parsed {
            federation,
            hostnames,
        },
        cut,
    ))
}

/// Splits a YAML federation file into the text of each item of its top-level `services:` block
/// sequence, and the rest of the file with those lines blanked and `services: []` (same line
/// count; and once more without them). `None` for layouts it does not know to be safe to cut (several documents,
/// directives, a flow sequence, a `services:` it cannot find): those are parsed whole.
fn split_services(text: &str) -> Option<(String, String, Vec<&str>)> {
    let mut lines = Vec::new();
    let mut at = 0;
    for line in text.split_inclusive('\n') {
        lines.push((at, line));
        at += line.len();
    }
    fn body(l: &str) -> &str {
        l.trim_end_matches(['\n', '\r'])
    }
    let blank = |l: &str| {
        let t = body(l).trim_start_matches(' ');
        t.is_empty() || t.starts_with('#')
    };
    if lines.iter().any(|(_, l)| {
        let b = body(l);
        b.starts_with("---") || b.starts_with("...") || b.starts_with('%') || b.contains('\t')
    }) {
        return None;
    }
    let key_line = |l: &str| {
        let b = body(l);
        b.strip_prefix("services:")
            .is_some_and(|r| r.trim().is_empty() || r.trim_start().starts_with('#'))
    };
    let mut starts = lines.iter().enumerate().filter(|(_, (_, l))| key_line(l));
    let (key, _) = starts.next()?;
    if starts.next().is_some() {
        return None;
    }
    let indent = |l: &str| body(l).len() - body(l).trim_start_matches(' ').len();
    let is_item = |l: &str, ind: usize| {
        indent(l) == ind && {
            let t = &body(l)[ind..];
            t == "-" || t.starts_with("- ")
        }
    };
    // The sequence's indentation is that of its first item.
    let first = (key + 1..lines.len()).find(|&i| !blank(lines[i].1))?;
    let item_indent = indent(lines[first].1);
    if !is_item(lines[first].1, item_indent) {
        return None;
    }
    let mut end = lines.len();
    let mut item_starts = Vec::new();
    for (i, &(_, l)) in lines.iter().enumerate().skip(first) {
        if blank(l) {
            continue;
        }
        let ind = indent(l);
        if is_item(l, item_indent) {
            item_starts.push(i);
        } else if ind == 0 {
            end = i;
            break;
        } else if ind <= item_indent {
            return None;
        }
    }
    // Trailing blank lines and comments stay with the item above them.
    let mut chunks = Vec::with_capacity(item_starts.len());
    for (n, &s) in item_starts.iter().enumerate() {
        let e = item_starts.get(n + 1).copied().unwrap_or(end);
        let from = lines[s].0;
        let to = lines.get(e).map_or(text.len(), |l| l.0);
        chunks.push(&text[from..to]);
    }
    let mut skeleton = String::with_capacity(text.len() / 64 + (end - key) + 64);
    for (i, &(_, l)) in lines.iter().enumerate() {
        if i == key {
            skeleton.push_str("services: []\n");
        } else if i > key && i < end {
            skeleton.push('\n');
        } else {
            skeleton.push_str(l);
        }
    }
    // The same without the blank lines standing for the items, whose number an edit changes.
    let outside = format!(
        "{}services: []\n{}",
        &text[..lines[key].0],
        lines.get(end).map_or("", |l| &text[l.0..])
    );
    Some((skeleton, outside, chunks))
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

/// IP addresses, sorted and deduplicated; each bad one a problem at `field[k]`.
fn ip_list(list: &[Spanned<String>], field: &str, problems: &mut Problems) -> Vec<IpAddr> {
    let mut ips: Vec<IpAddr> = Vec::new();
    for (k, a) in list.iter().enumerate() {
        match a.value.trim().parse::<IpAddr>() {
            Ok(ip) => ips.push(ip),
            Err(_) => problems.at(
                a,
                format!("{field}[{k}]"),
                format!("{:?} is not an IP address", a.value),
            ),
        }
    }
    ips.sort();
    ips.dedup();
    ips
}

fn validate(file: &str, raw: RawFile) -> Result<Parsed, Vec<Problem>> {
    validate_parts(file, &raw.federation, &raw.clusters, &raw.services)
}

/// [`validate`] over the file's parts, so the items [`ItemCache`] keeps need not be copied.
fn validate_parts<S: std::borrow::Borrow<RawService>>(
    file: &str,
    federation: &RawFederation,
    clusters_raw: &[RawCluster],
    services_raw: &[S],
) -> Result<Parsed, Vec<Problem>> {
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

    let fed_name = &federation.name;
    if !label_ok(&fed_name.value) {
        problems.at(
            fed_name,
            "federation.name".into(),
            format!("{:?} is not a DNS label", fed_name.value),
        );
    }
    let zone = match DnsName::parse(&federation.zone.value) {
        Ok(z) if !z.is_root() => z,
        Ok(_) => {
            problems.at(
                &federation.zone,
                "federation.zone".into(),
                "the root zone cannot be a federation zone".into(),
            );
            DnsName::root()
        }
        Err(e) => {
            problems.at(&federation.zone, "federation.zone".into(), e);
            DnsName::root()
        }
    };

    let mut clusters = Vec::new();
    let mut seen = HashSet::new();
    for (i, c) in clusters_raw.iter().enumerate() {
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
    for (i, s) in services_raw.iter().map(|s| s.borrow()).enumerate() {
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
            let cluster_ips = ip_list(
                &sh.cluster_ips,
                &format!("services[{i}].shards[{j}].cluster_ips"),
                &mut problems,
            );
            let headless = sh.endpoints.as_ref().map(|eps| {
                let mut out = Vec::new();
                for (k, e) in eps.iter().enumerate() {
                    let field = format!("services[{i}].shards[{j}].endpoints[{k}]");
                    let hostname = e.hostname.as_ref().and_then(|h| {
                        if label_ok(&h.value) {
                            Some(h.value.to_ascii_lowercase())
                        } else {
                            problems.at(
                                h,
                                format!("{field}.hostname"),
                                format!("{:?} is not a DNS label", h.value),
                            );
                            None
                        }
                    });
                    let addresses =
                        ip_list(&e.addresses, &format!("{field}.addresses"), &mut problems);
                    out.push(crate::model::Endpoint {
                        hostname,
                        addresses,
                    });
                }
                out.sort();
                out.dedup();
                std::sync::Arc::new(out)
            });
            shards.push(Shard {
                cluster: sh.cluster.value.clone(),
                addresses,
                cluster_ips,
                // Every endpoint listed is a ready one.
                ready_endpoints: sh
                    .ready_endpoints
                    .max(headless.as_ref().map_or(0, |h| h.len() as u32)),
                not_ready_endpoints: sh.not_ready_endpoints,
                zones: sh.zones.iter().map(|z| z.value.clone()).collect(),
                probe: Default::default(),
                probe_down: Vec::new(),
                headless,
                weight: sh.weight,
            });
        }
        let mut imports: Vec<crate::model::Import> = Vec::new();
        for (j, im) in s.imports.iter().enumerate() {
            let field = format!("services[{i}].imports[{j}]");
            if federation.clusterset_domain.value.trim().is_empty() {
                problems.at(
                    &im.cluster,
                    field.clone(),
                    "a ServiceImport with no federation.clusterset_domain: its MCS names are not served"
                        .into(),
                );
            }
            if !clusters.iter().any(|c| c.name == im.cluster.value) {
                problems.at(
                    &im.cluster,
                    format!("{field}.cluster"),
                    format!("unknown cluster {:?}", im.cluster.value),
                );
            } else if imports.iter().any(|x| x.cluster == im.cluster.value) {
                problems.at(
                    &im.cluster,
                    format!("{field}.cluster"),
                    format!(
                        "cluster {:?} imports the service twice (one ServiceImport per cluster)",
                        im.cluster.value
                    ),
                );
            }
            let ips = ip_list(&im.ips, &format!("{field}.ips"), &mut problems);
            let headless = match im.kind.value.as_str() {
                "ClusterSetIP" => {
                    if im.ips.is_empty() {
                        problems.at(
                            &im.kind,
                            format!("{field}.ips"),
                            "a ClusterSetIP import needs at least one IP".into(),
                        );
                    }
                    false
                }
                "Headless" => {
                    if let Some(ip) = im.ips.first() {
                        problems.at(
                            ip,
                            format!("{field}.ips"),
                            "a Headless import has no IPs".into(),
                        );
                    }
                    true
                }
                other => {
                    problems.at(
                        &im.kind,
                        format!("{field}.type"),
                        format!("{other:?} is not ClusterSetIP or Headless"),
                    );
                    false
                }
            };
            imports.push(crate::model::Import {
                cluster: im.cluster.value.clone(),
                ips,
                headless,
            });
        }
        imports.sort_by(|a, b| a.cluster.cmp(&b.cluster));
        // Kept for as long as the file is unchanged: no growth slack (10 shards took 16).
        shards.shrink_to_fit();
        services.push(Service {
            name: s.name.value.to_ascii_lowercase(),
            namespace: s.namespace.value.to_ascii_lowercase(),
            ports,
            shards,
            policy: None,
            ttl: s.ttl,
            imports,
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
    let policy = federation.policy.as_ref().map_or(Policy::Geo, |p| {
        policy_of(p, "federation.policy", &mut problems)
    });
    for (i, s) in services_raw.iter().map(|s| s.borrow()).enumerate() {
        if let Some(p) = &s.policy {
            services[i].policy = Some(policy_of(
                p,
                &format!("services[{i}].policy"),
                &mut problems,
            ));
        }
    }
    let cd = &federation.cluster_domain;
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
    let csd = &federation.clusterset_domain;
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
        ttl: federation.ttl,
        max_answers: federation.max_answers,
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

    /// A file of `n` services over two clusters, in the block and flow styles, with comments.
    fn many(n: usize, ready: u32) -> String {
        let mut f = String::from(
            "# federation\nfederation:\n  name: myfed\n  zone: example.com\nclusters:\n  - {name: c1, region: east, zones: [east-a]}\n  - name: c2\n    region: west\nservices:\n  # every service\n",
        );
        for i in 0..n {
            if i % 2 == 0 {
                f.push_str(&format!(
                    "  - name: svc-{i}\n    namespace: ns\n    ports:\n      - {{name: http, port: 80}}\n    shards:\n      - {{cluster: c1, addresses: [10.0.0.{}], ready_endpoints: {ready}}}\n      - cluster: c2\n        addresses: [lb-{i}.example.net]\n\n",
                    i % 250
                ));
            } else {
                f.push_str(&format!(
                    "  - {{name: svc-{i}, namespace: ns, ttl: 5, shards: [{{cluster: c2, addresses: ['2001:db8::{i:x}']}}]}}  # flow\n"
                ));
            }
        }
        f
    }

    fn both(text: &str, cache: &mut ItemCache) -> Result<Parsed, Vec<Problem>> {
        let path = Path::new("big.yaml");
        let cached = parse_cached(path, text, cache);
        assert_eq!(
            cached,
            parse_with_hosts(path, text),
            "cached parse differs:\n{text}"
        );
        cached
    }

    #[test]
    fn cached_parse_is_the_whole_parse_and_reuses_unchanged_items() {
        let mut cache = ItemCache::default();
        let text = many(40, 1);
        let first = both(&text, &mut cache).unwrap();
        assert_eq!(first.federation.services.len(), 40);
        assert_eq!(first.hostnames.len(), 20);
        assert_eq!(cache.items.len(), 40);
        // One service edited, one added at the end, one removed in the middle.
        let edited = text.replacen("ready_endpoints: 1", "ready_endpoints: 7", 1)
            + "  - name: late\n    namespace: ns\n"
            + "    shards: [{cluster: c1, addresses: [10.9.9.9]}]\n";
        let edited = edited.replace(
            "  - {name: svc-5, namespace: ns, ttl: 5, shards: [{cluster: c2, addresses: ['2001:db8::5']}]}  # flow\n",
            "",
        );
        let second = both(&edited, &mut cache).unwrap();
        assert_eq!(second.federation.services.len(), 40);
        assert_eq!(second.federation.services[0].shards[0].ready_endpoints, 7);
        assert_eq!(cache.items.len(), 40);
        // The services themselves: the untouched ones take the older parse's `Arc`s.
        let shared = |p: &Parsed| {
            p.federation
                .services
                .iter()
                .filter(|s| {
                    first
                        .federation
                        .services
                        .iter()
                        .any(|t| std::sync::Arc::ptr_eq(s, t))
                })
                .count()
        };
        // Reused by the cache, and by `share_unchanged` after a whole parse.
        assert_eq!(shared(&second), 38, "every untouched service is reused");
        let mut whole = parse_with_hosts(Path::new("big.yaml"), &edited).unwrap();
        assert_eq!(shared(&whole), 0);
        whole.share_unchanged(&first);
        assert_eq!(shared(&whole), 38);
        assert_eq!(second, whole);
        // An edit outside `services:` is parsed whole.
        let third = both(&edited.replace("region: west", "region: north"), &mut cache).unwrap();
        assert_eq!(third.federation.clusters[1].region, "north");
        // Host names follow their services to their new places.
        assert!(
            second
                .hostnames
                .iter()
                .all(|h| { second.federation.services[h.service].shards[h.shard].cluster == "c2" })
        );
        assert!(!std::sync::Arc::ptr_eq(
            &second.federation.services[0],
            &first.federation.services[0]
        ));
    }

    #[test]
    fn cached_parse_reports_what_the_whole_parse_reports() {
        let mut cache = ItemCache::default();
        let text = many(10, 1);
        both(&text, &mut cache).unwrap();
        for bad in [
            text.replacen("cluster: c2", "cluster: nope", 1),
            text.replacen("ready_endpoints: 1", "ready_endpoints: many", 1),
            text.replacen("addresses: [10.0.0.2]", "addresses: [10.0.0.2, ???]", 1),
            text.replacen("name: svc-3,", "name: svc-2,", 1),
            text.replacen("namespace: ns\n", "namespace: ns\n    color: blue\n", 1),
            text.replace("region: east", "region: -east"),
        ] {
            let errs = both(&bad, &mut cache).unwrap_err();
            assert!(
                !errs.is_empty() && errs.iter().all(|e| e.line.is_some()),
                "{errs:?}"
            );
        }
        // A good file after a bad one parses as before.
        assert_eq!(
            both(&text, &mut cache).unwrap().federation.services.len(),
            10
        );
    }

    #[test]
    fn cached_parse_handles_other_layouts() {
        let mut cache = ItemCache::default();
        let text = many(6, 2);
        let layouts = [
            // Items at the key's own indentation, and a top-level key after the sequence.
            "federation:\n  name: f\n  zone: example.com\nservices:\n- name: a\n  namespace: b\n  shards:\n  - cluster: c1\n    addresses: [10.0.0.1]\n# between\n- name: c\n  namespace: b\nclusters:\n- name: c1\n  region: r\n".into(),
            {
                let (head, services) = text.split_at(text.find("services:").unwrap());
                let (fed, clusters) = head.split_at(head.find("clusters:").unwrap());
                format!("{fed}{services}{clusters}")
            },
            // Anchors across items: not cut (parsed whole).
            text.replacen("namespace: ns\n", "namespace: &n ns\n", 1)
                .replacen("namespace: ns,", "namespace: *n,", 1),
            // Several documents, a flow sequence, CRLF line ends.
            format!("---\n{text}"),
            "federation: {name: f, zone: example.com}\nclusters: [{name: c1, region: r}]\nservices: [{name: a, namespace: b}]\n".into(),
            text.replace('\n', "\r\n"),
        ];
        // Whether the items were cut (and kept) or the file was parsed whole.
        let cut = [true, true, false, false, false, true];
        for (t, cut) in layouts.iter().zip(cut) {
            let p = both(t, &mut cache).unwrap();
            assert!(!p.federation.services.is_empty());
            assert_eq!(!cache.items.is_empty(), cut, "{t}");
        }
    }

    #[test]
    fn parses_yaml() {
        let f = parse(Path::new("f.yaml"), GOOD).unwrap();
        assert_eq!(f.name, "myfed");
        assert_eq!(f.ttl, 30);
        assert_eq!(f.services[0].ports[0].protocol, "tcp");
        assert_eq!(f.services[0].shards[0].addresses.len(), 1);
    }

    /// MCS without Kubernetes: per-service ServiceImports, per-shard ClusterIPs and a headless
    /// shard's ready endpoints; each bad value named by line, field and value.
    #[test]
    fn imports_cluster_ips_and_headless_endpoints() {
        let text = "federation:\n  name: myfed\n  zone: example.com\n  clusterset_domain: clusterset.local\nclusters:\n  - {name: c1, region: east}\n  - {name: c2, region: west}\nservices:\n  - name: web\n    namespace: shop\n    imports:\n      - {cluster: c1, type: ClusterSetIP, ips: [10.100.0.10]}\n      - {cluster: c2, type: Headless}\n    shards:\n      - cluster: c1\n        addresses: [192.0.2.1]\n        ready_endpoints: 1\n        cluster_ips: [10.96.0.10]\n      - cluster: c2\n        endpoints:\n          - {hostname: db-0, addresses: [10.244.0.5]}\n          - {addresses: [10.244.0.6]}\n";
        let f = parse(Path::new("f.yaml"), text).unwrap();
        let web = &f.services[0];
        assert_eq!(
            web.imports,
            [
                crate::model::Import {
                    cluster: "c1".into(),
                    ips: vec!["10.100.0.10".parse().unwrap()],
                    headless: false
                },
                crate::model::Import {
                    cluster: "c2".into(),
                    ips: vec![],
                    headless: true
                }
            ]
        );
        assert_eq!(
            web.shards[0].cluster_ips,
            ["10.96.0.10".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(web.shards[0].headless, None);
        let eps = web.shards[1].headless.as_deref().unwrap();
        assert_eq!(eps.len(), 2);
        assert_eq!(
            web.shards[1].ready_endpoints, 2,
            "every endpoint listed is ready"
        );
        for (from, to, want) in [
            (
                "ips: [10.100.0.10]",
                "ips: [10.100.0.300]",
                "f.yaml:12: services[0].imports[0].ips[0]: \"10.100.0.300\" is not an IP address",
            ),
            (
                "cluster: c2, type: Headless",
                "cluster: c9, type: Headless",
                "f.yaml:13: services[0].imports[1].cluster: unknown cluster \"c9\"",
            ),
            (
                "cluster: c2, type: Headless",
                "cluster: c1, type: Headless",
                "f.yaml:13: services[0].imports[1].cluster: cluster \"c1\" imports the service twice",
            ),
            (
                "type: Headless",
                "type: Headles",
                "f.yaml:13: services[0].imports[1].type: \"Headles\" is not ClusterSetIP or Headless",
            ),
            (
                "type: Headless}",
                "type: Headless, ips: [10.1.1.1]}",
                "f.yaml:13: services[0].imports[1].ips: a Headless import has no IPs",
            ),
            (
                ", ips: [10.100.0.10]}",
                "}",
                "f.yaml:12: services[0].imports[0].ips: a ClusterSetIP import needs at least one IP",
            ),
            (
                "[10.96.0.10]",
                "[10.96.0.x]",
                "f.yaml:18: services[0].shards[0].cluster_ips[0]: \"10.96.0.x\" is not an IP address",
            ),
            (
                "hostname: db-0",
                "hostname: db.0",
                "f.yaml:21: services[0].shards[1].endpoints[0].hostname: \"db.0\" is not a DNS label",
            ),
            (
                "[10.244.0.6]",
                "[nope]",
                "f.yaml:22: services[0].shards[1].endpoints[1].addresses[0]: \"nope\" is not an IP address",
            ),
            (
                "  clusterset_domain: clusterset.local\n",
                "",
                "f.yaml:11: services[0].imports[0]: a ServiceImport with no federation.clusterset_domain",
            ),
        ] {
            let bad = text.replacen(from, to, 1);
            assert_ne!(bad, text, "{from}");
            let errs = parse(Path::new("f.yaml"), &bad).unwrap_err();
            let all: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
            assert!(all.iter().any(|e| e.starts_with(want)), "{want}\n{all:#?}");
        }
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
