//! `GET /explain?name=NAME[&type=A][&client=IP][&ecs=PREFIX]`: why fedns answers what it
//! answers — the service and level the name belongs to, every candidate shard with its cluster,
//! region, zones and health, the client's location and how it was found, the policy, per level
//! and address family the decision taken and why (zone with no healthy shard → CNAME up; the
//! nearest region by distance, with the distances; why a family is empty), and the answer the
//! query path really gives (it is run on a synthesized query). Text by default; JSON with
//! `Accept: application/json` or `format=json` (shape: [`Explanation`], documented in the
//! README). Bad requests get 400 with a message naming the parameter. Never on the query path.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::Shared;
use crate::answers;
use crate::dns::explain::Answer;
use crate::geo::{Found, Locator, distance_km};
use crate::model::{DnsName, Federation, Policy, ProbeState, Service, Shard};
use crate::selection::{self, AddressSet, Family, ServiceSelection, is_healthy};

const USAGE: &str = "/explain?name=NAME[&type=TYPE][&client=IP][&ecs=ADDRESS/PREFIX][&format=json]";

/// The request, checked.
struct Params {
    name: String,
    qtype: String,
    client: Option<IpAddr>,
    ecs: Option<(IpAddr, u8)>,
    json: bool,
}

/// What `/explain` answers (its JSON form; the text form says the same).
#[derive(Serialize)]
pub struct Explanation {
    pub name: String,
    #[serde(rename = "type")]
    pub qtype: String,
    pub client: Client,
    /// `null` for a name that is not a federated service name (answered from zone data).
    pub service: Option<ServiceView>,
    /// The table the answer came from.
    pub generation: u64,
    pub answer: Answer,
}

#[derive(Serialize)]
pub struct Client {
    /// The address that decided the location.
    pub address: String,
    /// `ecs`, `source`, `source (ecs disabled)` or `none` (no client given).
    pub via: String,
    pub ecs: Option<String>,
    /// `null`: unknown location.
    pub region: Option<String>,
    pub zone: Option<String>,
    /// What placed it: `client network CIDR`, `GeoIP database, NETWORK`, or why nothing did.
    pub found: String,
}

#[derive(Serialize)]
pub struct ServiceView {
    pub federation: String,
    pub namespace: String,
    pub name: String,
    /// `global`, `regional` or `zonal`.
    pub level: String,
    pub region: Option<String>,
    pub zone: Option<String>,
    /// `_port._proto` for an SRV name.
    pub srv: Option<String>,
    pub policy: String,
    pub policy_override: bool,
    pub shards: Vec<ShardView>,
    /// The MCS ServiceImports of the service, per importing cluster.
    pub imports: Vec<ImportView>,
    /// The global name's choice for this client, per family (global names only).
    pub chosen: Vec<Chosen>,
    /// Per level, for each family asked, the decision taken and why, from the name asked up.
    pub why: Vec<Step>,
}

#[derive(Serialize)]
pub struct ShardView {
    pub cluster: String,
    pub region: Option<String>,
    pub zones: Vec<String>,
    pub weight: u32,
    pub ready_endpoints: u32,
    pub not_ready_endpoints: u32,
    pub addresses: Vec<String>,
    /// `none`, `up`, `down` or `down-served-static`.
    pub probe: String,
    /// Each probed address: `up`, `pending`, or `down: REASON` (`refused`, `timeout`,
    /// `status 503`, `TLS error: …`, …); empty when no probe rule covers the shard.
    pub probes: Vec<ProbedAddress>,
    /// Addresses left out of answers because their probes fail (their siblings pass).
    pub probe_down: Vec<String>,
    /// A headless Service's ready endpoints (`HOSTNAME ADDRESS…`, or the addresses alone),
    /// for the MCS names; empty for any other shard.
    pub endpoints: Vec<String>,
    pub healthy: bool,
    pub reason: String,
}

#[derive(Serialize)]
pub struct ImportView {
    pub cluster: String,
    /// `ClusterSetIP` or `Headless`.
    #[serde(rename = "type")]
    pub kind: String,
    pub ips: Vec<String>,
}

#[derive(Serialize)]
pub struct ProbedAddress {
    pub address: String,
    pub state: String,
}

#[derive(Serialize)]
pub struct Chosen {
    pub family: String,
    pub weight: u32,
    pub addresses: Vec<String>,
}

#[derive(Serialize)]
pub struct Step {
    /// The name this step is about.
    pub level: String,
    /// `IPv4`, `IPv6`, or `null` for a step about both (SRV).
    pub family: Option<String>,
    /// `answer`, `flatten` (answered under this name from the level above), `cname`, `nodata`
    /// or `srv`.
    pub decision: String,
    pub why: String,
    /// The addresses (or SRV target) this step answers with, when it answers.
    pub addresses: Vec<String>,
}

fn bad(json: bool, message: String) -> Response {
    let message = format!("{message}; usage: {USAGE}");
    if json {
        (
            StatusCode::BAD_REQUEST,
            [(header::CONTENT_TYPE, "application/json")],
            serde_json::json!({ "error": message }).to_string(),
        )
            .into_response()
    } else {
        (
            StatusCode::BAD_REQUEST,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("error: {message}\n"),
        )
            .into_response()
    }
}

pub async fn handler(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Response {
    let accept_json = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/json"));
    let pairs = match query {
        Ok(Query(p)) => p,
        Err(e) => return bad(accept_json, format!("unreadable query string ({e})")),
    };
    let json = accept_json
        || pairs
            .iter()
            .any(|(k, v)| k == "format" && v.eq_ignore_ascii_case("json"));
    let p = match params(&pairs, json) {
        Ok(p) => p,
        Err(e) => return bad(json, e),
    };
    match explain(&shared, &p) {
        Ok(x) if p.json => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            serde_json::to_string_pretty(&x).unwrap_or_default() + "\n",
        )
            .into_response(),
        Ok(x) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            text(&x),
        )
            .into_response(),
        Err(e) => bad(p.json, e),
    }
}

fn params(pairs: &[(String, String)], json: bool) -> Result<Params, String> {
    let mut name = None;
    let mut qtype = None;
    let mut client = None;
    let mut ecs = None;
    for (k, v) in pairs {
        let slot = match k.as_str() {
            "name" => &mut name,
            "type" => &mut qtype,
            "client" => &mut client,
            "ecs" => &mut ecs,
            "format" => {
                if !v.eq_ignore_ascii_case("json") && !v.eq_ignore_ascii_case("text") {
                    return Err(format!("format: {v:?} is neither json nor text"));
                }
                continue;
            }
            _ => return Err(format!("unknown parameter {k:?}")),
        };
        if slot.replace(v.clone()).is_some() {
            return Err(format!("{k} given twice"));
        }
    }
    let name = match name {
        Some(n) if !n.trim().is_empty() => n.trim().to_string(),
        Some(_) => return Err("name is empty".into()),
        None => return Err("name is missing".into()),
    };
    crate::model::DnsName::parse(&name).map_err(|e| format!("name: {name:?}: {e}"))?;
    let qtype = crate::dns::explain::parse_type(qtype.as_deref().unwrap_or("A"))?;
    let client = client
        .map(|c| {
            c.trim()
                .parse::<IpAddr>()
                .map_err(|_| format!("client: {c:?} is not an IP address"))
        })
        .transpose()?;
    let ecs = ecs.as_deref().map(parse_ecs).transpose()?;
    Ok(Params {
        name,
        qtype,
        client,
        ecs,
        json,
    })
}

fn parse_ecs(text: &str) -> Result<(IpAddr, u8), String> {
    let (a, p) = text.split_once('/').unwrap_or((text, ""));
    let addr: IpAddr = a
        .parse()
        .map_err(|_| format!("ecs: {a:?} is not an IP address"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = if p.is_empty() {
        max
    } else {
        p.parse::<u8>()
            .ok()
            .filter(|p| *p <= max)
            .ok_or_else(|| format!("ecs: bad prefix {p:?} (0 to {max})"))?
    };
    Ok((addr, prefix))
}

/// Which federated name `name` is.
struct NameOf<'a> {
    fed: &'a Federation,
    svc: &'a Service,
    region: Option<String>,
    zone: Option<String>,
    srv: Option<String>,
    /// An MCS name (`SVC.NS.svc.CLUSTERSET`, its SRV names, or `HOST.CLUSTER.` + it): the
    /// service name and, for a per-endpoint name, the endpoint's label and cluster.
    mcs: Option<(DnsName, Option<(String, String)>)>,
}

/// `text` (lowercase, with the final dot) as an MCS name of `svc` in `fed`.
fn mcs_name(
    fed: &Federation,
    svc: &Service,
    text: &str,
    srv: bool,
) -> Option<(DnsName, Option<(String, String)>)> {
    let zone = fed.clusterset_zone()?;
    let name = format!("{}.{}.{zone}", svc.name, svc.namespace);
    if text == name {
        return Some((DnsName::parse(&name).ok()?, None));
    }
    let front = text.strip_suffix(&name)?.strip_suffix('.')?;
    match front.split('.').collect::<Vec<_>>().as_slice() {
        [host, cluster] if !srv => Some((
            DnsName::parse(&name).ok()?,
            Some((host.to_string(), cluster.to_string())),
        )),
        _ => None,
    }
}

fn find_service<'a>(feds: &'a [Federation], name: &str) -> Option<NameOf<'a>> {
    let text = name.to_ascii_lowercase();
    let text = if text.ends_with('.') {
        text
    } else {
        format!("{text}.")
    };
    for fed in feds {
        let zone = fed.zone.to_string();
        for svc in &fed.services {
            let label = format!("{}.{}.{}.svc.", svc.name, svc.namespace, fed.name);
            // SRV names are `_port._proto.` + a service name.
            let mut rest = text.as_str();
            let mut srv = Vec::new();
            while let Some((l, r)) = rest.strip_prefix('_').and_then(|r| r.split_once('.')) {
                srv.push(format!("_{l}"));
                rest = r;
            }
            if let Some(mcs) = mcs_name(fed, svc, rest, !srv.is_empty()) {
                return Some(NameOf {
                    fed,
                    svc,
                    region: None,
                    zone: None,
                    srv: (!srv.is_empty()).then(|| srv.join(".")),
                    mcs: Some(mcs),
                });
            }
            let Some(after) = rest.strip_prefix(&label) else {
                continue;
            };
            let Some(middle) = after.strip_suffix(&zone) else {
                continue;
            };
            let parts: Vec<&str> = middle
                .trim_end_matches('.')
                .split('.')
                .filter(|s| !s.is_empty())
                .collect();
            let (region, zone) = match parts.as_slice() {
                [] => (None, None),
                [region] => (Some(region.to_string()), None),
                [zone, region] => (Some(region.to_string()), Some(zone.to_string())),
                _ => continue,
            };
            return Some(NameOf {
                fed,
                svc,
                region,
                zone,
                srv: (!srv.is_empty()).then(|| srv.join(".")),
                mcs: None,
            });
        }
    }
    None
}

fn list(set: &AddressSet, f: Option<Family>) -> Vec<String> {
    let mut v = Vec::new();
    if f != Some(Family::V6) {
        v.extend(set.v4.iter().map(|a| a.to_string()));
    }
    if f != Some(Family::V4) {
        v.extend(set.v6.iter().map(|a| a.to_string()));
    }
    v
}

fn has_family(s: &Shard, f: Family) -> bool {
    s.addresses.iter().any(|a| match f {
        Family::V4 => a.is_ipv4(),
        Family::V6 => a.is_ipv6(),
    })
}

fn shard_reason(shard: &Shard) -> String {
    if let Some(eps) = &shard.headless {
        return format!(
            "headless Service: {} ready endpoint(s) for the MCS names, no load balancer",
            eps.len()
        );
    }
    if shard.probe == ProbeState::Down && shard.ready_endpoints > 0 {
        "unhealthy: probe failing".to_string()
    } else if is_healthy(shard) {
        "healthy".to_string()
    } else if shard.ready_endpoints == 0 {
        "unhealthy: no ready endpoint".to_string()
    } else {
        "unhealthy: no load-balancer address".to_string()
    }
}

/// One level of the fallback chain: its name, what it is, and its healthy addresses.
struct Level {
    name: String,
    what: String,
    set: Option<AddressSet>,
}

/// Why the global name answers family `f` what it answers for location `loc`.
fn global_step(
    fed: &Federation,
    svc: &Service,
    sel: &ServiceSelection,
    locator: &Locator,
    loc: u16,
    f: Family,
    name: &str,
) -> Step {
    let fl = f.label();
    let choice = &sel.global_by_location[loc as usize];
    let groups = choice.family(f);
    let mut addresses: Vec<String> = groups.iter().flat_map(|(_, s)| list(s, Some(f))).collect();
    addresses.dedup();
    if groups.iter().all(|(_, s)| s.is_empty()) {
        let has: Vec<String> = svc
            .shards
            .iter()
            .filter(|s| has_family(s, f))
            .map(|s| format!("{} ({})", s.cluster, shard_reason(s)))
            .collect();
        let why = if has.is_empty() {
            format!("no shard has an {fl} address: {fl} answers are empty (NODATA)")
        } else {
            format!(
                "no healthy shard anywhere has an {fl} address (shards with one: {}): NODATA",
                has.join(", ")
            )
        };
        return Step {
            level: name.to_string(),
            family: Some(fl.into()),
            decision: "nodata".into(),
            why,
            addresses: vec![],
        };
    }
    let policy = svc.policy.as_ref().unwrap_or(&fed.policy);
    let everything = format!("every healthy shard with {fl}");
    // A client of a member cluster is where that cluster is (as selection places it).
    let location = locator
        .locations()
        .get(loc as usize)
        .cloned()
        .flatten()
        .map(|l| selection::placed(fed, &l));
    let why = match (policy, &location) {
        (Policy::All, _) => format!("policy all: {everything}"),
        (Policy::Geo, None) => {
            format!("policy geo, client location unknown: {everything} (as all)")
        }
        (Policy::Geo, Some(l)) => {
            let zone_has = l.zone.as_ref().and_then(|z| {
                sel.zones
                    .iter()
                    .find(|(r, zz, _)| r == &l.region && zz == z)
                    .map(|(_, _, s)| (z, s.has(f)))
            });
            let region_has = sel
                .regions
                .iter()
                .find(|(r, _)| r == &l.region)
                .is_some_and(|(_, s)| s.has(f));
            match zone_has {
                Some((z, true)) => {
                    format!("policy geo: the client's zone {z} has healthy {fl} shards")
                }
                _ if region_has => format!(
                    "policy geo: {}the client's region {} has healthy {fl} shards",
                    zone_has
                        .map(|(z, _)| format!("the client's zone {z} has no healthy {fl} shard; "))
                        .unwrap_or_default(),
                    l.region
                ),
                _ => match locator.coordinates(&l.region) {
                    None => format!(
                        "policy geo: the client's region {} has no healthy {fl} shard and no coordinates (geo.regions): {everything}",
                        l.region
                    ),
                    Some(here) => {
                        let mut d: Vec<(f64, &str, bool)> = sel
                            .regions
                            .iter()
                            .filter_map(|(r, s)| {
                                locator
                                    .coordinates(r)
                                    .map(|c| (distance_km(here, c), r.as_str(), s.has(f)))
                            })
                            .collect();
                        d.sort_by(|a, b| a.0.total_cmp(&b.0));
                        let pick = d.iter().find(|x| x.2);
                        let dist = d
                            .iter()
                            .map(|(km, r, has)| {
                                format!(
                                    "{r} {km:.0} km{}",
                                    if *has {
                                        String::new()
                                    } else {
                                        format!(" (no healthy {fl})")
                                    }
                                )
                            })
                            .collect::<Vec<_>>()
                            .join(", ");
                        match pick {
                            Some((km, r, _)) => format!(
                                "policy geo: the client's region {} has no healthy {fl} shard; nearest region with one by distance: {r} ({km:.0} km); distances from {}: {dist}",
                                l.region, l.region
                            ),
                            None => format!(
                                "policy geo: no region with coordinates has healthy {fl} shards (distances from {}: {dist}): {everything}",
                                l.region
                            ),
                        }
                    }
                },
            }
        }
        (Policy::Failover(order), _) => {
            let mut seen = Vec::new();
            let mut picked = None;
            for entry in order {
                let has = svc.shards.iter().filter(|s| is_healthy(s)).any(|s| {
                    let in_entry = &s.cluster == entry
                        || fed
                            .clusters
                            .iter()
                            .any(|c| c.name == s.cluster && &c.region == entry);
                    in_entry && has_family(s, f)
                });
                if has {
                    picked = Some(entry);
                    break;
                }
                seen.push(format!("{entry} has no healthy {fl} shard"));
            }
            let before = if seen.is_empty() {
                String::new()
            } else {
                format!("{}; ", seen.join(", "))
            };
            match picked {
                Some(e) => format!("policy failover: {before}first entry with healthy {fl}: {e}"),
                None => format!("policy failover: {before}no entry has healthy {fl}: {everything}"),
            }
        }
        (Policy::Weighted, _) => {
            let weighted = fed.clusters.iter().filter(|c| c.weight > 0).any(|c| {
                svc.shards
                    .iter()
                    .any(|s| s.cluster == c.name && is_healthy(s) && has_family(s, f))
            });
            if weighted {
                let w: Vec<String> = groups
                    .iter()
                    .map(|(w, s)| format!("{} (weight {w})", list(s, Some(f)).join(", ")))
                    .collect();
                format!(
                    "policy weighted: one cluster per answer among the weighted clusters with healthy {fl}: {}",
                    w.join("; ")
                )
            } else {
                format!("policy weighted: no weighted cluster has healthy {fl}: {everything}")
            }
        }
    };
    Step {
        level: name.to_string(),
        family: Some(fl.into()),
        decision: "answer".into(),
        why,
        addresses,
    }
}

/// Why an MCS name answers what it does for location `loc`: the rule of
/// [`answers::mcs_choice`] (the same function the layout applies), then, where the global
/// name's answer is taken, that name's step for each family.
#[allow(clippy::too_many_arguments)]
fn mcs_steps(
    fed: &Federation,
    svc: &Service,
    sel: &ServiceSelection,
    locator: &Locator,
    loc: u16,
    name: &DnsName,
    endpoint: Option<&(String, String)>,
    srv: Option<&str>,
    families: &[Family],
) -> Vec<Step> {
    let hosts = answers::headless_hosts(svc, name);
    let headless = hosts.is_some();
    let hosts = hosts.unwrap_or_default();
    let of =
        |ips: &[IpAddr], f: Family| -> Vec<String> { list(&AddressSet::from_ips(ips), Some(f)) };
    let exporters: Vec<&str> = (svc.shards.iter())
        .filter(|s| s.headless.is_some())
        .map(|s| s.cluster.as_str())
        .collect();
    let headless_why = || {
        let importers: Vec<&str> = (svc.imports.iter())
            .filter(|i| i.headless)
            .map(|i| i.cluster.as_str())
            .collect();
        format!(
            "headless service (imported as Headless by {}, exported headless by {})",
            importers.join(", "),
            exporters.join(", ")
        )
    };
    let mut out = Vec::new();
    if let Some((host, cluster)) = endpoint {
        let full = format!("{host}.{cluster}.{name}");
        let ips = hosts
            .iter()
            .find(|(n, _)| n.to_string() == full)
            .map(|(_, a)| a.clone());
        for &f in families {
            let (decision, why, addresses) = match &ips {
                _ if !headless => (
                    "nxdomain",
                    "not a headless service: no per-endpoint names (NXDOMAIN)".to_string(),
                    vec![],
                ),
                None => (
                    "nxdomain",
                    format!(
                        "{}: no ready endpoint {host} in cluster {cluster} (NXDOMAIN)",
                        headless_why()
                    ),
                    vec![],
                ),
                Some(ips) => {
                    let a = of(ips, f);
                    (
                        if a.is_empty() { "nodata" } else { "answer" },
                        format!(
                            "{}: the ready endpoint {host} of cluster {cluster}",
                            headless_why()
                        ),
                        a,
                    )
                }
            };
            out.push(Step {
                level: full.clone(),
                family: Some(f.label().into()),
                decision: decision.into(),
                why,
                addresses,
            });
        }
        return out;
    }
    if let Some(srv) = srv {
        let (why, targets) = if headless {
            (
                format!(
                    "{}: one SRV per ready endpoint, each targeting the endpoint's own name",
                    headless_why()
                ),
                hosts.iter().map(|(n, _)| n.to_string()).collect(),
            )
        } else {
            (
                "SRV target: the service's MCS name, which answers per client cluster".to_string(),
                vec![name.to_string()],
            )
        };
        out.push(Step {
            level: format!("{srv}.{name}"),
            family: None,
            decision: if targets.is_empty() { "nodata" } else { "srv" }.into(),
            why,
            addresses: targets,
        });
        return out;
    }
    let cluster = locator.cluster_of(loc as usize);
    let client = match cluster {
        Some(c) => match svc.imports.iter().find(|i| i.cluster == c) {
            Some(i) if i.headless => format!("the client's cluster {c} imports it as Headless"),
            Some(_) => format!("the client's cluster {c} has a ClusterSetIP import"),
            None => format!("the client's cluster {c} has no ServiceImport of it"),
        },
        None => "the client is in no member cluster".to_string(),
    };
    let name_text = name.to_string();
    match answers::mcs_choice(svc, cluster, headless) {
        answers::McsChoice::ClusterSetIp(i) => {
            for &f in families {
                let a = of(&i.ips, f);
                out.push(Step {
                    level: name_text.clone(),
                    family: Some(f.label().into()),
                    decision: if a.is_empty() { "nodata" } else { "answer" }.into(),
                    why: format!(
                        "{client}: the ClusterSetIPs of cluster {}'s ServiceImport (allocated by its MCS implementation, routed only there){}",
                        i.cluster,
                        if a.is_empty() { format!(", none {}", f.label()) } else { String::new() }
                    ),
                    addresses: a,
                });
            }
        }
        answers::McsChoice::Headless => {
            let all: Vec<IpAddr> = hosts.iter().flat_map(|(_, a)| a.iter().copied()).collect();
            for &f in families {
                let a = of(&all, f);
                out.push(Step {
                    level: name_text.clone(),
                    family: Some(f.label().into()),
                    decision: if a.is_empty() { "nodata" } else { "answer" }.into(),
                    why: format!(
                        "{client}; {}: every ready {} endpoint of every cluster{}",
                        headless_why(),
                        f.label(),
                        if a.is_empty() {
                            " (none)".to_string()
                        } else if a.len() > fed.max_answers {
                            format!(", {} at a time in turn (max_answers)", fed.max_answers)
                        } else {
                            String::new()
                        }
                    ),
                    addresses: a,
                });
            }
        }
        answers::McsChoice::Global => {
            let global = format!(
                "{}.{}.{}.svc.{}",
                svc.name, svc.namespace, fed.name, fed.zone
            );
            for &f in families {
                let mut step = global_step(fed, svc, sel, locator, loc, f, &name_text);
                step.why = format!(
                    "{client}, and the service is not headless: what the global name {global} answers this client, under this name; {}",
                    step.why
                );
                out.push(step);
            }
        }
    }
    out
}

/// The steps from the level asked up to the one that decides, for family `f`; mirrors
/// `answers/federation.rs` (a level with nothing healthy in either family CNAMEs up, a level
/// with the other family only answers this one from above under its own name).
#[allow(clippy::too_many_arguments)]
fn family_steps(
    fed: &Federation,
    svc: &Service,
    sel: &ServiceSelection,
    locator: &Locator,
    loc: u16,
    levels: &[Level],
    f: Family,
    out: &mut Vec<Step>,
) {
    let fl = f.label();
    for (i, l) in levels.iter().enumerate() {
        let Some(set) = &l.set else {
            out.push(Step {
                level: l.name.clone(),
                family: Some(fl.into()),
                decision: "nodata".into(),
                why: format!("{} is not in the federation's topology", l.what),
                addresses: vec![],
            });
            return;
        };
        if i + 1 == levels.len() {
            out.push(global_step(fed, svc, sel, locator, loc, f, &l.name));
            return;
        }
        let above = &levels[i + 1..];
        let (decision, why) = if set.has(f) {
            out.push(Step {
                level: l.name.clone(),
                family: Some(fl.into()),
                decision: "answer".into(),
                why: format!("{} has healthy {fl} shards: answers them", l.what),
                addresses: list(set, Some(f)),
            });
            return;
        } else if !set.is_empty() {
            (
                "flatten",
                format!(
                    "{} has healthy shards of the other family only: its {fl} answer is what a CNAME to {} would lead to, under this name (a CNAME may not share a name)",
                    l.what, above[0].name
                ),
            )
        } else if above
            .iter()
            .any(|a| a.set.as_ref().is_some_and(|s| !s.is_empty()))
        {
            (
                "cname",
                format!(
                    "{} has no healthy shard: CNAME to {}",
                    l.what, above[0].name
                ),
            )
        } else {
            out.push(Step {
                level: l.name.clone(),
                family: Some(fl.into()),
                decision: "nodata".into(),
                why: format!(
                    "{} has no healthy shard, and neither has any level above: NODATA",
                    l.what
                ),
                addresses: vec![],
            });
            return;
        };
        out.push(Step {
            level: l.name.clone(),
            family: Some(fl.into()),
            decision: decision.into(),
            why,
            addresses: vec![],
        });
    }
}

fn explain(shared: &Shared, p: &Params) -> Result<Explanation, String> {
    let ecs = p.ecs;
    let client = p.client.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    // One table for the whole explanation: its locator is the one its answers were laid out for.
    let table = shared.table.load();
    let locator = &*table.locator;

    // Where the client is, and how we know.
    let (located_ip, via) = match ecs {
        Some((addr, prefix)) if locator.ecs && prefix > 0 => (addr, "ecs"),
        Some(_) if !locator.ecs => (client, "source (ecs disabled)"),
        _ if p.client.is_some() => (client, "source"),
        _ => (client, "none"),
    };
    let (loc, found) = locator.explain(located_ip);
    let location = locator.locations()[loc as usize].clone();
    let found = match found {
        Found::Network { cidr } => match locator.cluster_of(loc as usize) {
            Some(c) => format!("client network {cidr} (cluster {c})"),
            None => format!("client network {cidr}"),
        },
        Found::GeoIp { network } => format!("GeoIP database, {network}"),
        Found::Unknown => "no client network or GeoIP entry matches".into(),
    };
    let client_view = Client {
        address: located_ip.to_string(),
        via: via.into(),
        ecs: ecs.map(|(a, p)| format!("{a}/{p}")),
        region: location.as_ref().map(|l| l.region.clone()),
        zone: location.as_ref().and_then(|l| l.zone.clone()),
        found,
    };

    let feds = shared.federations.load();
    let service = find_service(&feds, &p.name).map(|m| {
        let (fed, svc) = (m.fed, m.svc);
        let policy = svc.policy.as_ref().unwrap_or(&fed.policy);
        let level = match (&m.region, &m.zone) {
            _ if m.mcs.is_some() => "clusterset",
            (None, _) => "global",
            (Some(_), None) => "regional",
            (Some(_), Some(_)) => "zonal",
        };
        let policy_text = match policy {
            _ if level == "clusterset" => format!(
                "{} (decides the MCS name only where it answers as the global name)",
                policy_name(policy)
            ),
            _ if level != "global" => format!(
                "{} (decides the global name only; a {level} name answers the healthy shards of its {})",
                policy_name(policy),
                if level == "zonal" { "zone" } else { "region" }
            ),
            Policy::Geo if loc == 0 => "geo (location unknown: all healthy shards)".to_string(),
            Policy::Geo => "geo (nearest zone, region, then region by distance)".to_string(),
            Policy::Weighted => "weighted (one cluster per answer, by cluster weight)".to_string(),
            p => policy_name(p),
        };
        let probes = shared.probes.lock().map(|p| p.clone()).unwrap_or_default();
        let shards = svc
            .shards
            .iter()
            .map(|shard| {
                let cluster = fed.clusters.iter().find(|c| c.name == shard.cluster);
                let key = (
                    fed.name.clone(),
                    svc.namespace.clone(),
                    svc.name.clone(),
                    shard.cluster.clone(),
                );
                let probed: Vec<ProbedAddress> = probes
                    .get(&key)
                    .into_iter()
                    .flatten()
                    .map(|(a, s)| ProbedAddress {
                        address: a.to_string(),
                        state: s.clone(),
                    })
                    .collect();
                let mut reason = shard_reason(shard);
                let failing: Vec<String> = probed
                    .iter()
                    .filter(|p| p.state.starts_with("down"))
                    .map(|p| format!("{} {}", p.address, p.state))
                    .collect();
                if !failing.is_empty() {
                    reason = if reason == "healthy" {
                        format!(
                            "healthy; left out of answers: {} (its other addresses pass)",
                            failing.join(", ")
                        )
                    } else {
                        format!("{reason} ({})", failing.join(", "))
                    };
                }
                ShardView {
                    cluster: shard.cluster.clone(),
                    region: cluster.map(|c| c.region.clone()),
                    zones: cluster.map(|c| c.zones.clone()).unwrap_or_default(),
                    weight: cluster.map_or(0, |c| c.weight),
                    ready_endpoints: shard.ready_endpoints,
                    not_ready_endpoints: shard.not_ready_endpoints,
                    addresses: shard.addresses.iter().map(|a| a.to_string()).collect(),
                    probe: match shard.probe {
                        ProbeState::Unprobed => "none",
                        ProbeState::Up => "up",
                        ProbeState::Down => "down",
                        ProbeState::DownServedStatic => "down-served-static",
                    }
                    .into(),
                    probes: probed,
                    probe_down: shard.probe_down.iter().map(|a| a.to_string()).collect(),
                    endpoints: (shard.headless.iter().flat_map(|e| e.iter()))
                        .map(|e| {
                            let ips: Vec<String> =
                                e.addresses.iter().map(|a| a.to_string()).collect();
                            match &e.hostname {
                                Some(h) => format!("{h} {}", ips.join(" ")),
                                None => ips.join(" "),
                            }
                        })
                        .collect(),
                    healthy: is_healthy(shard),
                    reason,
                }
            })
            .collect();
        let sel = selection::select(fed, svc, locator);
        let imports = svc
            .imports
            .iter()
            .map(|i| ImportView {
                cluster: i.cluster.clone(),
                kind: if i.headless { "Headless" } else { "ClusterSetIP" }.into(),
                ips: i.ips.iter().map(|a| a.to_string()).collect(),
            })
            .collect();
        if let Some((name, endpoint)) = &m.mcs {
            let families: Vec<Family> = match p.qtype.as_str() {
                "A" if m.srv.is_none() => vec![Family::V4],
                "AAAA" if m.srv.is_none() => vec![Family::V6],
                _ => Family::BOTH.to_vec(),
            };
            let why = mcs_steps(fed, svc, &sel, locator, loc, name, endpoint.as_ref(), m.srv.as_deref(), &families);
            return ServiceView {
                federation: fed.name.clone(),
                namespace: svc.namespace.clone(),
                name: svc.name.clone(),
                level: level.into(),
                region: None,
                zone: None,
                srv: m.srv.clone(),
                policy: policy_text,
                policy_override: svc.policy.is_some(),
                shards,
                imports,
                chosen: Vec::new(),
                why,
            };
        }
        let base = format!("{}.{}.{}.svc.", svc.name, svc.namespace, fed.name);
        let zone_apex = fed.zone.to_string();
        let global = Level {
            name: format!("{base}{zone_apex}"),
            what: "the global name".into(),
            set: Some(sel.global.clone()),
        };
        let mut levels = Vec::new();
        if let Some(r) = &m.region {
            if let Some(z) = &m.zone {
                levels.push(Level {
                    name: format!("{base}{z}.{r}.{zone_apex}"),
                    what: format!("zone {z}"),
                    set: sel
                        .zones
                        .iter()
                        .find(|(rr, zz, _)| rr == r && zz == z)
                        .map(|(_, _, s)| s.clone()),
                });
            }
            levels.push(Level {
                name: format!("{base}{r}.{zone_apex}"),
                what: format!("region {r}"),
                set: sel
                    .regions
                    .iter()
                    .find(|(rr, _)| rr == r)
                    .map(|(_, s)| s.clone()),
            });
        }
        levels.push(global);
        let mut why = Vec::new();
        let families: Vec<Family> = match p.qtype.as_str() {
            "A" if m.srv.is_none() => vec![Family::V4],
            "AAAA" if m.srv.is_none() => vec![Family::V6],
            _ => Family::BOTH.to_vec(),
        };
        if let Some(srv) = &m.srv {
            let target = levels
                .iter()
                .find(|l| l.set.as_ref().is_some_and(|s| !s.is_empty()));
            why.push(Step {
                level: format!("{srv}.{}", levels[0].name),
                family: None,
                decision: "srv".into(),
                why: match target {
                    Some(t) => format!(
                        "SRV target: the nearest level with healthy shards of either family, {} ({}); it answers both families without a CNAME",
                        t.name, t.what
                    ),
                    None => "no level has a healthy shard: no SRV record (NODATA)".into(),
                },
                addresses: target.map(|t| vec![t.name.clone()]).unwrap_or_default(),
            });
            if let Some(i) = levels.iter().position(|l| l.set.as_ref().is_some_and(|s| !s.is_empty())) {
                levels.drain(..i);
            }
        }
        for f in families {
            family_steps(fed, svc, &sel, locator, loc, &levels, f, &mut why);
        }
        let chosen = if level == "global" && m.srv.is_none() {
            let choice = &sel.global_by_location[loc as usize];
            Family::BOTH
                .iter()
                .flat_map(|f| {
                    choice.family(*f).iter().map(|(w, s)| Chosen {
                        family: f.label().into(),
                        weight: *w,
                        addresses: list(s, Some(*f)),
                    })
                })
                .collect()
        } else {
            Vec::new()
        };
        ServiceView {
            federation: fed.name.clone(),
            namespace: svc.namespace.clone(),
            name: svc.name.clone(),
            level: level.into(),
            region: m.region.clone(),
            zone: m.zone.clone(),
            srv: m.srv.clone(),
            policy: policy_text,
            policy_override: svc.policy.is_some(),
            shards,
            imports,
            chosen,
            why,
        }
    });
    let settings = shared.settings.load();
    let answer = crate::dns::explain::answer(
        crate::server::source(&table, &settings),
        &p.name,
        &p.qtype,
        client,
        ecs,
    )?;
    Ok(Explanation {
        name: p.name.clone(),
        qtype: p.qtype.clone(),
        client: client_view,
        service,
        generation: table.generation,
        answer,
    })
}

fn policy_name(p: &Policy) -> String {
    match p {
        Policy::Geo => "geo".into(),
        Policy::All => "all".into(),
        Policy::Weighted => "weighted".into(),
        Policy::Failover(order) => format!("failover {}", order.join(" > ")),
    }
}

/// The text form.
fn text(x: &Explanation) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "name: {} {}", x.name, x.qtype);
    let how = match x.client.via.as_str() {
        "ecs" => format!(
            "EDNS Client Subnet {}",
            x.client.ecs.as_deref().unwrap_or("")
        ),
        "source (ecs disabled)" => "source address (ECS given but disabled in config)".into(),
        "source" => "source address".into(),
        _ => "no client given".into(),
    };
    let location = match &x.client.region {
        None => "unknown".to_string(),
        Some(r) => format!(
            "region {r}{}",
            x.client
                .zone
                .as_ref()
                .map(|z| format!(", zone {z}"))
                .unwrap_or_default()
        ),
    };
    let _ = writeln!(
        out,
        "client: {} via {how}\nlocation: {location} ({})",
        x.client.address, x.client.found
    );
    match &x.service {
        None => {
            let _ = writeln!(
                out,
                "service: none (not a federated name; answered from zone data)"
            );
        }
        Some(s) => {
            let level = match (&s.region, &s.zone) {
                _ if s.level == "clusterset" => "MCS name".to_string(),
                (None, _) => "global name".to_string(),
                (Some(r), None) => format!("regional name, region {r}"),
                (Some(r), Some(z)) => format!("zonal name, zone {z} of region {r}"),
            };
            let srv = s
                .srv
                .as_ref()
                .map(|p| format!(", SRV {p}"))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "service: {}/{} in federation {} ({level}{srv})",
                s.namespace, s.name, s.federation
            );
            let _ = writeln!(
                out,
                "policy: {}{}",
                s.policy,
                if s.policy_override {
                    " [service override]"
                } else {
                    ""
                }
            );
            if !s.imports.is_empty() {
                let imports: Vec<String> = (s.imports.iter())
                    .map(|i| match i.ips.as_slice() {
                        [] => format!("{} {}", i.cluster, i.kind),
                        ips => format!("{} {} [{}]", i.cluster, i.kind, ips.join(", ")),
                    })
                    .collect();
                let _ = writeln!(out, "imports: {}", imports.join("; "));
            }
            let _ = writeln!(out, "candidates:");
            for sh in &s.shards {
                let _ = writeln!(
                    out,
                    "  cluster {} region {} zones {} weight {} endpoints ready {} not-ready {} addresses [{}] probe {}: {}",
                    sh.cluster,
                    sh.region.as_deref().unwrap_or("?"),
                    sh.zones.join(","),
                    sh.weight,
                    sh.ready_endpoints,
                    sh.not_ready_endpoints,
                    sh.addresses.join(", "),
                    match sh.probe.as_str() {
                        "down-served-static" =>
                            "down (served anyway: every shard fails, fail static)",
                        p => p,
                    },
                    sh.reason
                );
                if !sh.endpoints.is_empty() {
                    let _ = writeln!(out, "    headless endpoints: {}", sh.endpoints.join("; "));
                }
            }
            let _ = writeln!(out, "why:");
            for st in &s.why {
                let _ = writeln!(
                    out,
                    "  {} {}: {}: {}{}",
                    st.level,
                    st.family.as_deref().unwrap_or("SRV"),
                    st.decision,
                    st.why,
                    if st.addresses.is_empty() {
                        String::new()
                    } else {
                        format!(" → {}", st.addresses.join(", "))
                    }
                );
            }
            for f in ["IPv4", "IPv6"] {
                let groups: Vec<&Chosen> = s.chosen.iter().filter(|c| c.family == f).collect();
                if s.level != "global" || s.srv.is_some() {
                    break;
                }
                if groups.iter().all(|c| c.addresses.is_empty()) {
                    let _ = writeln!(out, "chosen {f}: nothing (no healthy {f} shard anywhere)");
                    continue;
                }
                for c in &groups {
                    let weight = if groups.len() > 1 {
                        format!(" (weight {})", c.weight)
                    } else {
                        String::new()
                    };
                    let _ = writeln!(out, "chosen {f}{weight}: {}", c.addresses.join(", "));
                }
            }
        }
    }
    let _ = write!(
        out,
        "answer (table generation {}): {}",
        x.generation,
        x.answer.text(&x.qtype)
    );
    out
}
