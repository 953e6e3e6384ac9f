//! `GET /status`: the federation at a glance, as one self-contained HTML page (no scripts, styles
//! inline, no external assets, so it works offline and behind any proxy). It shows the table
//! generation and serial, every source's state, every cluster with its region, zones, sync state
//! and last error, and a services × clusters grid of shard health (ready endpoints, load-balancer
//! addresses, probe state, fail static); each cell links to `/explain` for that name; with MCS
//! names served, the cluster-set zone and each cluster's ServiceImports and headless exports. Filters and
//! paging are plain GET parameters (`q`, `cluster`, `show`, `page`, `per_page`), so a page holds
//! at most `per_page` rows however large the federation is, and the page reloads itself every
//! `refresh` seconds (`<meta http-equiv=refresh>`, keeping the parameters). Read-only; never on
//! the query path: it reads the federations the current table was built from and the source board.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::header;
use serde::Deserialize;

use super::Shared;
use crate::model::{Federation, ProbeState, Service, Shard};
use crate::selection::is_healthy;
use crate::sources::SourceState;

/// Rows per page unless `per_page` says otherwise, and the most it may say.
pub const PER_PAGE: usize = 100;
pub const MAX_PER_PAGE: usize = 1000;

/// The query string. Every field is text so that an empty or odd value (a form submitted with
/// a blank field) falls back to its default instead of failing the page.
#[derive(Deserialize, Default, Debug, Clone)]
pub struct Params {
    #[serde(default)]
    pub q: String,
    #[serde(default)]
    pub cluster: String,
    /// `all` (default), `unhealthy` (a shard is unhealthy) or `static` (fail static or stale).
    #[serde(default)]
    pub show: String,
    #[serde(default)]
    pub page: String,
    #[serde(default)]
    pub per_page: String,
    /// Seconds between reloads; 0 turns reloading off (default 5).
    #[serde(default)]
    pub refresh: String,
}

/// What the page is drawn from: copied out of `Shared` once per request.
pub struct View<'a> {
    pub generation: u64,
    pub serial: u32,
    pub ready: bool,
    pub draining: bool,
    pub federations: &'a [Federation],
    pub sources: &'a BTreeMap<String, SourceState>,
}

pub async fn handler(
    State(shared): State<Arc<Shared>>,
    Query(p): Query<Params>,
) -> ([(header::HeaderName, &'static str); 2], String) {
    let table = shared.table.load();
    let feds = shared.federations.load();
    let sources = shared.sources.snapshot();
    let view = View {
        generation: table.generation,
        serial: table.serial,
        ready: table.is_ready(),
        draining: shared.draining.load(std::sync::atomic::Ordering::Relaxed),
        federations: &feds,
        sources: &sources,
    };
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        render(&view, &p),
    )
}

/// How a cluster's data is kept in sync, from its source's entry on the board.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Freshness {
    /// Listed and being watched (or from a file that loaded).
    InSync,
    /// Not listed yet.
    Syncing,
    /// Unreachable or refused: its last known shards are served (fail static).
    Down,
    /// Described by a federation file, no source of its own.
    Static,
}

fn cluster_sync<'a>(
    sources: &'a BTreeMap<String, SourceState>,
    cluster: &str,
) -> (Freshness, Option<&'a str>) {
    match sources.get(&format!("kubernetes:{cluster}")) {
        None => (Freshness::Static, None),
        Some(s) => {
            let err = s.last_error.as_deref();
            if err.is_some() {
                (Freshness::Down, err)
            } else if s.loaded {
                (Freshness::InSync, None)
            } else {
                (Freshness::Syncing, None)
            }
        }
    }
}

fn parse_num(text: &str, default: usize, max: usize) -> usize {
    text.trim()
        .parse::<usize>()
        .ok()
        .filter(|n| *n > 0)
        .map_or(default, |n| n.min(max))
}

/// HTML-escapes text for element content and quoted attribute values.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes a query-string value.
fn url(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// A shard as the grid shows it.
#[derive(PartialEq, Eq, Debug)]
enum Health {
    Healthy,
    Unhealthy(&'static str),
    /// Probe down but served: every shard of the service fails (fail static).
    FailStatic,
}

fn health(shard: &Shard) -> Health {
    // A headless Service's shard has no load balancer by nature: its endpoints are its health.
    if shard.headless.is_some() {
        return if shard.ready_endpoints > 0 {
            Health::Healthy
        } else {
            Health::Unhealthy("no ready endpoint")
        };
    }
    if shard.probe == ProbeState::DownServedStatic {
        Health::FailStatic
    } else if is_healthy(shard) {
        Health::Healthy
    } else if shard.probe == ProbeState::Down && shard.ready_endpoints > 0 {
        Health::Unhealthy("probe failing")
    } else if shard.ready_endpoints == 0 {
        Health::Unhealthy("no ready endpoint")
    } else {
        Health::Unhealthy("no load-balancer address")
    }
}

const STYLE: &str = "body{font:14px system-ui,sans-serif;margin:1em;color:#222}\
h1{font-size:1.4em;margin:0 0 .3em}h2{font-size:1.1em;margin:1.2em 0 .4em}\
table{border-collapse:collapse}th,td{border:1px solid #ccc;padding:3px 6px;text-align:left;vertical-align:top;white-space:nowrap}td.err{white-space:normal}\
th{background:#f2f2f2}td.ok{background:#e3f6e3}td.bad{background:#fbe0e0}td.static{background:#fff1cc}\
td.none{color:#999}td a{color:inherit;text-decoration:none;display:block}small{color:#555}\
.down{color:#b00;font-weight:bold}.up{color:#070}.warn{color:#a60}form{margin:.5em 0}\
nav{margin:.5em 0}nav a{margin-right:1em}";

/// The whole page.
pub fn render(view: &View<'_>, p: &Params) -> String {
    let per_page = parse_num(&p.per_page, PER_PAGE, MAX_PER_PAGE);
    let refresh = match p.refresh.trim() {
        "" => 5,
        t => t.parse::<u32>().unwrap_or(5).min(3600),
    };
    let q = p.q.trim().to_ascii_lowercase();
    let only_cluster = p.cluster.trim();
    let show = match p.show.trim() {
        "unhealthy" => "unhealthy",
        "static" => "static",
        _ => "all",
    };

    let mut out = String::with_capacity(16 * 1024);
    let _ = write!(
        out,
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>fedns status</title>"
    );
    if refresh > 0 {
        let _ = write!(out, "<meta http-equiv=refresh content={refresh}>");
    }
    let _ = write!(
        out,
        "<meta name=viewport content=\"width=device-width\"><style>{STYLE}</style></head><body>"
    );
    let state = if view.draining {
        "<span class=down>shutting down</span>"
    } else if view.ready {
        "<span class=up>ready</span>"
    } else {
        "<span class=down>not ready</span>"
    };
    let _ = write!(
        out,
        "<h1>fedns status</h1><p id=table>{state} · table generation <b id=generation>{}</b> · serial <b id=serial>{}</b>{}</p>",
        view.generation,
        view.serial,
        if refresh > 0 {
            format!(" · <small>reloads every {refresh} s</small>")
        } else {
            String::new()
        }
    );

    // Sources.
    let _ = write!(
        out,
        "<h2>Sources</h2><table id=sources><tr><th>source</th><th>state</th><th>last error</th></tr>"
    );
    for (name, s) in view.sources {
        let (class, text) = match (&s.last_error, s.loaded) {
            (Some(_), true) => ("warn", "serving last good data"),
            (Some(_), false) => ("down", "not loaded"),
            (None, true) => ("up", "ready"),
            (None, false) => ("warn", "loading"),
        };
        let _ = write!(
            out,
            "<tr><td>{}</td><td class={class}>{text}</td><td class=err>{}</td></tr>",
            esc(name),
            esc(s.last_error.as_deref().unwrap_or(""))
        );
    }
    out.push_str("</table>");

    // Clusters, per federation; plus Kubernetes clusters the table holds nothing of yet.
    let _ = write!(
        out,
        "<h2>Clusters</h2><table id=clusters><tr><th>federation</th><th>cluster</th><th>region</th><th>zones</th><th>weight</th><th>sync</th><th>healthy shards</th><th>last error</th></tr>"
    );
    let mut listed = BTreeSet::new();
    for fed in view.federations {
        for c in &fed.clusters {
            listed.insert(c.name.as_str());
            let (sync, err) = cluster_sync(view.sources, &c.name);
            let (mut healthy, mut total) = (0usize, 0usize);
            for svc in &fed.services {
                for sh in svc.shards.iter().filter(|s| s.cluster == c.name) {
                    total += 1;
                    if health(sh) == Health::Healthy {
                        healthy += 1;
                    }
                }
            }
            let _ = write!(
                out,
                "<tr data-cluster=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>{}<td>{healthy}/{total}</td><td class=err>{}</td></tr>",
                esc(&c.name),
                esc(&fed.name),
                esc(&c.name),
                esc(&c.region),
                esc(&c.zones.join(", ")),
                c.weight,
                sync_cell(sync),
                esc(err.unwrap_or(""))
            );
        }
    }
    for name in view.sources.keys() {
        let Some(cluster) = name.strip_prefix("kubernetes:") else {
            continue;
        };
        if listed.contains(cluster) {
            continue;
        }
        let (sync, err) = cluster_sync(view.sources, cluster);
        let _ = write!(
            out,
            "<tr data-cluster=\"{}\"><td></td><td>{}</td><td colspan=3><small>no data served yet</small></td>{}<td>0/0</td><td class=err>{}</td></tr>",
            esc(cluster),
            esc(cluster),
            sync_cell(sync),
            esc(err.unwrap_or(""))
        );
    }
    out.push_str("</table>");
    clusterset(&mut out, view.federations);

    // The grid: every cluster of every federation is a column (one federation's services have
    // no shard in another's clusters: those cells are empty).
    let mut columns: Vec<(&str, &str)> = Vec::new(); // (cluster, region)
    for fed in view.federations {
        for c in &fed.clusters {
            if !columns.iter().any(|(n, _)| *n == c.name) {
                columns.push((&c.name, &c.region));
            }
        }
    }
    if !only_cluster.is_empty() {
        columns.retain(|(n, _)| *n == only_cluster);
    }
    let down: BTreeSet<&str> = columns
        .iter()
        .filter(|(n, _)| cluster_sync(view.sources, n).0 == Freshness::Down)
        .map(|(n, _)| *n)
        .collect();
    let wanted = |svc: &Service| -> bool {
        if !q.is_empty() {
            let full = format!("{}/{}", svc.namespace, svc.name);
            if !full.contains(&q) && !svc.name.contains(&q) {
                return false;
            }
        }
        let in_columns = |sh: &&Shard| columns.iter().any(|(n, _)| *n == sh.cluster);
        if !only_cluster.is_empty() && !svc.shards.iter().any(|s| s.cluster == only_cluster) {
            return false;
        }
        match show {
            "unhealthy" => svc
                .shards
                .iter()
                .filter(in_columns)
                .any(|s| matches!(health(s), Health::Unhealthy(_))),
            "static" => svc
                .shards
                .iter()
                .filter(in_columns)
                .any(|s| health(s) == Health::FailStatic || down.contains(s.cluster.as_str())),
            _ => true,
        }
    };
    let total: usize = view.federations.iter().map(|f| f.services.len()).sum();
    let matching: usize = view
        .federations
        .iter()
        .map(|f| f.services.iter().filter(|s| wanted(s)).count())
        .sum();
    let pages = matching.div_ceil(per_page).max(1);
    let page = parse_num(&p.page, 1, usize::MAX).min(pages);

    let _ = write!(
        out,
        "<h2>Services</h2><form method=get action=/status>\
         <input name=q placeholder=\"namespace/name\" value=\"{}\"> \
         <select name=cluster><option value=\"\">every cluster</option>",
        esc(p.q.trim())
    );
    let mut all_clusters: Vec<&str> = Vec::new();
    for fed in view.federations {
        for c in &fed.clusters {
            if !all_clusters.contains(&c.name.as_str()) {
                all_clusters.push(&c.name);
            }
        }
    }
    for c in &all_clusters {
        let _ = write!(
            out,
            "<option{}>{}</option>",
            if *c == only_cluster { " selected" } else { "" },
            esc(c)
        );
    }
    out.push_str("</select> <select name=show>");
    for (v, label) in [
        ("all", "every service"),
        ("unhealthy", "with an unhealthy shard"),
        ("static", "fail static or stale"),
    ] {
        let _ = write!(
            out,
            "<option value={v}{}>{label}</option>",
            if v == show { " selected" } else { "" }
        );
    }
    let _ = write!(
        out,
        "</select> <input type=hidden name=per_page value={per_page}>\
         <input type=hidden name=refresh value={refresh}> <button>filter</button></form>\
         <p id=count>{matching} of {total} services · page {page} of {pages}</p>"
    );
    let nav = |out: &mut String| {
        let link = |n: usize| {
            format!(
                "/status?q={}&amp;cluster={}&amp;show={show}&amp;per_page={per_page}&amp;refresh={refresh}&amp;page={n}",
                url(p.q.trim()),
                url(only_cluster)
            )
        };
        out.push_str("<nav>");
        if page > 1 {
            let _ = write!(
                out,
                "<a rel=prev href=\"{}\">← previous</a>",
                link(page - 1)
            );
        }
        if page < pages {
            let _ = write!(out, "<a rel=next href=\"{}\">next →</a>", link(page + 1));
        }
        out.push_str("</nav>");
    };
    nav(&mut out);

    out.push_str("<table id=grid><tr><th>service</th>");
    for (c, region) in &columns {
        let _ = write!(
            out,
            "<th>{}<br><small>{}</small>{}</th>",
            esc(c),
            esc(region),
            if down.contains(c) {
                " <span class=down>down</span>"
            } else {
                ""
            }
        );
    }
    out.push_str("</tr>");
    let skip = (page - 1) * per_page;
    let rows = view
        .federations
        .iter()
        .flat_map(|f| f.services.iter().map(move |s| (f, s)))
        .filter(|(_, s)| wanted(s))
        .skip(skip)
        .take(per_page);
    for (fed, svc) in rows {
        let zone = fed.zone.to_string();
        let global = format!("{}.{}.{}.svc.{zone}", svc.name, svc.namespace, fed.name);
        let _ = write!(
            out,
            "<tr data-service=\"{}/{}\"><th><a href=\"/explain?name={}\">{}/{}</a></th>",
            esc(&svc.namespace),
            esc(&svc.name),
            url(&global),
            esc(&svc.namespace),
            esc(&svc.name)
        );
        for (c, region) in &columns {
            let shards: Vec<&Shard> = svc.shards.iter().filter(|s| s.cluster == *c).collect();
            if shards.is_empty() {
                out.push_str("<td class=none>—</td>");
                continue;
            }
            let regional = format!(
                "{}.{}.{}.svc.{region}.{zone}",
                svc.name, svc.namespace, fed.name
            );
            for sh in shards.into_iter().take(1) {
                cell(&mut out, sh, down.contains(c), &regional);
            }
        }
        out.push_str("</tr>");
    }
    out.push_str("</table>");
    nav(&mut out);
    out.push_str(
        "<p><small>Cells: ready/total endpoints, load-balancer addresses, probe state. \
         Each links to <code>/explain</code> of the cluster's regional name (the service name: \
         the global name). Read-only.</small></p></body></html>",
    );
    out
}

/// The MCS names of each federation that serves them: its zone and, per member cluster, how
/// many ServiceImports of each type it has and how many headless services it exports (with
/// their ready endpoints). One pass over the services.
fn clusterset(out: &mut String, feds: &[Federation]) {
    let served: Vec<(&Federation, String)> = feds
        .iter()
        .filter_map(|f| Some((f, f.clusterset_zone()?.to_string())))
        .collect();
    if served.is_empty() {
        return;
    }
    out.push_str(
        "<h2>Cluster set (MCS)</h2><table id=clusterset><tr><th>federation</th><th>zone</th><th>cluster</th>\
         <th>ClusterSetIP imports</th><th>Headless imports</th><th>headless exports</th><th>ready endpoints</th></tr>",
    );
    for (fed, zone) in served {
        // cluster → (ClusterSetIP imports, Headless imports, headless exports, ready endpoints)
        let mut per: BTreeMap<&str, [usize; 4]> = BTreeMap::new();
        for svc in &fed.services {
            for i in &svc.imports {
                per.entry(&i.cluster).or_default()[usize::from(i.headless)] += 1;
            }
            for sh in svc.shards.iter().filter(|s| s.headless.is_some()) {
                let e = per.entry(&sh.cluster).or_default();
                e[2] += 1;
                e[3] += sh.headless.as_ref().map_or(0, |h| h.len());
            }
        }
        if per.is_empty() {
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td><td colspan=5><small>no ServiceImport yet</small></td></tr>",
                esc(&fed.name),
                esc(&zone)
            );
        }
        for (c, [ip, headless, exports, ready]) in per {
            let _ = write!(
                out,
                "<tr data-cluster=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{ip}</td><td>{headless}</td><td>{exports}</td><td>{ready}</td></tr>",
                esc(c),
                esc(&fed.name),
                esc(&zone),
                esc(c)
            );
        }
    }
    out.push_str("</table>");
}

fn sync_cell(sync: Freshness) -> &'static str {
    match sync {
        Freshness::InSync => "<td class=up data-sync=in-sync>in sync</td>",
        Freshness::Syncing => "<td class=warn data-sync=syncing>syncing</td>",
        Freshness::Down => "<td class=down data-sync=down>down (serving last known)</td>",
        Freshness::Static => "<td data-sync=static>federation file</td>",
    }
}

fn cell(out: &mut String, sh: &Shard, cluster_down: bool, explain_name: &str) {
    let h = health(sh);
    let class = match (&h, cluster_down) {
        (Health::FailStatic, _) | (Health::Healthy, true) => "static",
        (Health::Healthy, false) => "ok",
        (Health::Unhealthy(_), _) => "bad",
    };
    let mut addrs: Vec<String> = sh.addresses.iter().take(2).map(|a| a.to_string()).collect();
    if sh.addresses.len() > 2 {
        addrs.push(format!("+{}", sh.addresses.len() - 2));
    }
    if sh.headless.is_some() {
        addrs.push("headless".into());
    }
    let probe = match sh.probe {
        ProbeState::Unprobed => "",
        ProbeState::Up => "probe up",
        ProbeState::Down => "probe down",
        ProbeState::DownServedStatic => "probe down · fail static",
    };
    let what = match (&h, cluster_down) {
        (Health::Unhealthy(why), _) => format!("unhealthy: {why}"),
        (Health::FailStatic, _) => "fail static".to_string(),
        (Health::Healthy, true) => "stale: cluster down".to_string(),
        (Health::Healthy, false) => "healthy".to_string(),
    };
    let _ = write!(
        out,
        "<td class={class} title=\"{}\"><a href=\"/explain?name={}\">{}/{} ready<br><small>{}</small>{}{}</a></td>",
        esc(&what),
        url(explain_name),
        sh.ready_endpoints,
        sh.ready_endpoints + sh.not_ready_endpoints,
        esc(&addrs.join(" ")),
        if probe.is_empty() {
            String::new()
        } else {
            format!("<br><small>{probe}</small>")
        },
        if class == "ok" {
            String::new()
        } else {
            format!("<br><small>{}</small>", esc(&what))
        }
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Cluster, DnsName, Policy};
    use std::time::Instant;

    fn fed(services: usize) -> Federation {
        let clusters = ["east", "west"]
            .iter()
            .map(|n| Cluster {
                client_networks: vec![],
                name: n.to_string(),
                region: format!("us-{n}1"),
                zones: vec![format!("us-{n}1-a")],
                weight: 100,
            })
            .collect();
        let services = (0..services)
            .map(|i| {
                Arc::new(Service {
                    ttl: None,
                    imports: vec![],
                    name: format!("svc{i}"),
                    namespace: "shop".into(),
                    ports: vec![],
                    policy: None,
                    shards: vec![
                        Shard {
                            cluster: "east".into(),
                            addresses: vec!["192.0.2.1".parse().unwrap()],
                            ready_endpoints: 2,
                            ..Default::default()
                        },
                        Shard {
                            cluster: "west".into(),
                            addresses: vec!["192.0.2.2".parse().unwrap()],
                            ready_endpoints: u32::from(i % 10 != 0),
                            not_ready_endpoints: 1,
                            ..Default::default()
                        },
                    ],
                })
            })
            .collect();
        Federation {
            cluster_domain: None,
            clusterset_domain: None,
            name: "myfed".into(),
            zone: DnsName::parse("example.com.").unwrap(),
            ttl: 30,
            max_answers: 8,
            policy: Policy::Geo,
            clusters,
            services,
            ingress_hosts: vec![],
            endpoints: Default::default(),
        }
    }

    fn page(feds: &[Federation], sources: &BTreeMap<String, SourceState>, p: &Params) -> String {
        let view = View {
            generation: 7,
            serial: 42,
            ready: true,
            draining: false,
            federations: feds,
            sources,
        };
        render(&view, p)
    }

    #[test]
    fn grid_filters_and_pages() {
        let feds = vec![fed(250)];
        let mut sources = BTreeMap::new();
        sources.insert(
            "kubernetes:west".to_string(),
            SourceState {
                loaded: true,
                last_error: Some("cluster west: connection refused <x>".into()),
                wait_until: None,
                note: None,
            },
        );
        let html = page(&feds, &sources, &Params::default());
        assert!(html.contains("<b id=generation>7</b>") && html.contains("<b id=serial>42</b>"));
        assert!(html.contains("250 of 250 services · page 1 of 3"), "{html}");
        assert_eq!(html.matches("<tr data-service=").count(), PER_PAGE);
        assert!(html.contains("data-sync=down") && html.contains("&lt;x&gt;"));
        assert!(!html.contains("<x>"), "errors are escaped");
        assert!(html.contains("/explain?name=svc0.shop.myfed.svc.us-west1.example.com."));
        assert!(html.contains("<meta http-equiv=refresh content=5>"));

        let p = Params {
            show: "unhealthy".into(),
            ..Default::default()
        };
        let html = page(&feds, &sources, &p);
        assert!(html.contains("25 of 250 services · page 1 of 1"), "{html}");
        assert!(html.contains("unhealthy: no ready endpoint"));

        let p = Params {
            q: "svc24".into(),
            page: "9".into(),
            per_page: "1".into(),
            refresh: "0".into(),
            ..Default::default()
        };
        let html = page(&feds, &sources, &p);
        // svc24 and svc240..249: 11 matches, one per page; page 9 of 11 is svc247.
        assert!(html.contains("11 of 250 services · page 9 of 11"), "{html}");
        assert!(html.contains("data-service=\"shop/svc247\""));
        assert!(html.contains("rel=prev") && html.contains("rel=next"));
        assert!(!html.contains("http-equiv=refresh"));

        let p = Params {
            cluster: "east".into(),
            ..Default::default()
        };
        let html = page(&feds, &sources, &p);
        assert!(!html.contains("svc.us-west1."), "only east's column");
    }

    /// 10k services × 2 clusters: a page costs the filter over every service and 100 rows.
    #[test]
    fn ten_thousand_services_stay_cheap() {
        let feds = vec![fed(10_000)];
        let sources = BTreeMap::new();
        let start = Instant::now();
        let html = page(&feds, &sources, &Params::default());
        let took = start.elapsed();
        eprintln!("10k services: page 1 in {took:?}, {} bytes", html.len());
        assert!(html.contains("10000 of 10000 services · page 1 of 100"));
        assert!(html.len() < 200_000, "page is {} bytes", html.len());
        assert!(took.as_millis() < 500, "render took {took:?}");
        let p = Params {
            show: "unhealthy".into(),
            page: "10".into(),
            ..Default::default()
        };
        let html = page(&feds, &sources, &p);
        assert!(html.contains("1000 of 10000 services · page 10 of 10"));
    }
}
