//! `GET /explain?name=NAME[&type=A][&client=IP][&ecs=PREFIX]`: why fedns answers what it
//! answers — the service and level the name belongs to, every candidate shard with its cluster,
//! region, zones and health, the client's location and how it was found, the policy, and the
//! answer the query path really gives (it is run on a synthesized query). Never on the query path.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use serde::Deserialize;

use super::Shared;
use crate::geo::Found;
use crate::model::{DnsName, Federation, Policy, ProbeState, Service};
use crate::selection::{self, Family, is_healthy};

#[derive(Deserialize)]
pub struct Params {
    name: String,
    #[serde(rename = "type", default = "default_type")]
    qtype: String,
    client: Option<IpAddr>,
    ecs: Option<String>,
}

fn default_type() -> String {
    "A".into()
}

pub async fn handler(
    State(shared): State<Arc<Shared>>,
    Query(p): Query<Params>,
) -> (StatusCode, String) {
    match explain(&shared, &p) {
        Ok(text) => (StatusCode::OK, text),
        Err(e) => (StatusCode::BAD_REQUEST, format!("error: {e}\n")),
    }
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
            .ok_or_else(|| format!("ecs: bad prefix {p:?}"))?
    };
    Ok((addr, prefix))
}

/// Which federated name `name` is: (federation, service, level description).
fn find_service<'a>(
    feds: &'a [Federation],
    name: &DnsName,
) -> Option<(&'a Federation, &'a Service, String)> {
    let text = name.to_string();
    for fed in feds {
        let zone = fed.zone.to_string();
        for svc in &fed.services {
            let label = format!("{}.{}.{}.svc.", svc.name, svc.namespace, fed.name);
            // SRV names are `_port._proto.` + a service name.
            let mut rest = text.as_str();
            while let Some(r) = rest
                .strip_prefix('_')
                .and_then(|r| r.split_once('.'))
                .map(|(_, r)| r)
            {
                rest = r;
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
            let level = match parts.as_slice() {
                [] => "global name".to_string(),
                [region] => format!("regional name, region {region}"),
                [zone, region] => format!("zonal name, zone {zone} of region {region}"),
                _ => continue,
            };
            return Some((fed, svc, level));
        }
    }
    None
}

fn explain(shared: &Shared, p: &Params) -> Result<String, String> {
    let name = DnsName::parse(&p.name)?;
    let ecs = p.ecs.as_deref().map(parse_ecs).transpose()?;
    let client = p.client.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    let locator = &shared.locator;
    let mut out = String::new();
    let _ = writeln!(out, "name: {name} {}", p.qtype.to_ascii_uppercase());

    // Where the client is, and how we know.
    let (located_ip, how) = match ecs {
        Some((addr, prefix)) if locator.ecs && prefix > 0 => {
            (addr, format!("EDNS Client Subnet {addr}/{prefix}"))
        }
        Some(_) if !locator.ecs => (
            client,
            "source address (ECS given but disabled in config)".to_string(),
        ),
        _ if p.client.is_some() => (client, "source address".to_string()),
        _ => (client, "no client given".to_string()),
    };
    let (loc, found) = locator.explain(located_ip);
    let location = locator.locations()[loc as usize]
        .as_ref()
        .map_or("unknown".to_string(), |l| {
            format!(
                "region {}{}",
                l.region,
                l.zone
                    .as_ref()
                    .map(|z| format!(", zone {z}"))
                    .unwrap_or_default()
            )
        });
    let found = match found {
        Found::Network { cidr } => format!("client network {cidr}"),
        Found::GeoIp { network } => format!("GeoIP database, {network}"),
        Found::Unknown => "no client network or GeoIP entry matches".into(),
    };
    let _ = writeln!(
        out,
        "client: {located_ip} via {how}\nlocation: {location} ({found})"
    );

    let feds = shared.federations.load();
    match find_service(&feds, &name) {
        None => {
            let _ = writeln!(
                out,
                "service: none (not a federated name; answered from zone data)"
            );
        }
        Some((fed, svc, level)) => {
            let policy = svc.policy.as_ref().unwrap_or(&fed.policy);
            let policy_text = match policy {
                Policy::Geo if loc == 0 => "geo (location unknown: all healthy shards)".to_string(),
                Policy::Geo => "geo (nearest zone, region, then region by distance)".to_string(),
                Policy::All => "all".to_string(),
                Policy::Failover(order) => format!("failover {}", order.join(" > ")),
                Policy::Weighted => {
                    "weighted (one cluster per answer, by cluster weight)".to_string()
                }
            };
            let _ = writeln!(
                out,
                "service: {}/{} in federation {} ({level})",
                svc.namespace, svc.name, fed.name
            );
            let _ = writeln!(
                out,
                "policy: {policy_text}{}",
                if svc.policy.is_some() {
                    " [service override]"
                } else {
                    ""
                }
            );
            let _ = writeln!(out, "candidates:");
            for shard in &svc.shards {
                let cluster = fed.clusters.iter().find(|c| c.name == shard.cluster);
                let addrs: Vec<String> = shard.addresses.iter().map(|a| a.to_string()).collect();
                let reason = if shard.probe == ProbeState::Down && shard.ready_endpoints > 0 {
                    "unhealthy: probe failing".to_string()
                } else if is_healthy(shard) {
                    "healthy".to_string()
                } else if shard.ready_endpoints == 0 {
                    "unhealthy: no ready endpoint".to_string()
                } else {
                    "unhealthy: no load-balancer address".to_string()
                };
                let _ = writeln!(
                    out,
                    "  cluster {} region {} zones {} weight {} endpoints ready {} not-ready {} addresses [{}] probe {}: {reason}",
                    shard.cluster,
                    cluster.map_or("?", |c| c.region.as_str()),
                    cluster.map_or("?".into(), |c| c.zones.join(",")),
                    cluster.map_or(0, |c| c.weight),
                    shard.ready_endpoints,
                    shard.not_ready_endpoints,
                    addrs.join(", "),
                    match shard.probe {
                        ProbeState::Unprobed => "none",
                        ProbeState::Up => "up",
                        ProbeState::Down => "down",
                        ProbeState::DownServedStatic =>
                            "down (served anyway: every shard fails, fail static)",
                    },
                );
            }
            if level == "global name" {
                let sel = selection::select(fed, svc, locator);
                let choice = &sel.global_by_location[loc as usize];
                // Each family is chosen on its own (an AAAA question goes where IPv6 is healthy).
                for f in Family::BOTH {
                    let groups = choice.family(f);
                    if groups.iter().all(|(_, s)| s.is_empty()) {
                        let _ = writeln!(
                            out,
                            "chosen {}: nothing (no healthy {} shard anywhere)",
                            f.label(),
                            f.label()
                        );
                        continue;
                    }
                    for (w, set) in groups {
                        let mut v: Vec<String> = set.v4.iter().map(|a| a.to_string()).collect();
                        v.extend(set.v6.iter().map(|a| a.to_string()));
                        let weight = if groups.len() > 1 {
                            format!(" (weight {w})")
                        } else {
                            String::new()
                        };
                        let _ = writeln!(out, "chosen {}{weight}: {}", f.label(), v.join(", "));
                    }
                }
            }
        }
    }
    let table = shared.table.load();
    let answer =
        crate::dns::explain::answer_text(shared.source(&table), &p.name, &p.qtype, client, ecs)?;
    let _ = write!(
        out,
        "answer (table generation {}): {answer}",
        table.generation
    );
    Ok(out)
}
