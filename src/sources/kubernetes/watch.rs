//! The only place that speaks to Kubernetes: one `kube` client per member cluster and one
//! watcher per kind (Services, EndpointSlices, Ingresses, Nodes), each object translated at once
//! into the slim structs of [`super::state`] and sent to the source's assembler.
//!
//! Guarantees: kube and k8s-openapi types never leave this file; watches never end on errors: after
//! one a fresh list and watch follow, with exponential backoff from 0.5 s to 4 s, so a kind counts
//! as working again at most ~4 s after its API server answers again, whether or not anything
//! changed meanwhile; every error is reported with the cluster, the resource and, for 401/403
//! (reported only once they persist for three attempts, and cleared only by a watch that then
//! stays up for 10 s), what is missing.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::Ingress;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::watcher::{self, Event, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use tokio::sync::mpsc;

use super::config::{Access, ClusterSpec, SelectRule};
use super::state::{Change, Key, Kind, SlimIngress, SlimNode, SlimService, SlimSlice};
use crate::model::ServicePort;

/// A translated change of one kind.
#[derive(Debug)]
pub enum KindChange {
    Services(Change<SlimService>),
    Slices(Change<SlimSlice>),
    Ingresses(Change<SlimIngress>),
    Nodes(Change<SlimNode>),
}

#[derive(Debug)]
pub enum ClusterMsg {
    Change(KindChange),
    /// A kind's watch failed (`Some`) or works again (`None`). `expected` marks the routine
    /// 410 Gone that only means "re-list".
    Status {
        kind: Kind,
        error: Option<String>,
        expected: bool,
    },
    /// The client could not be built from the kubeconfig (`Some`), or now could (`None`).
    Client(Option<String>),
}

/// A message from the tasks of one run of one cluster.
#[derive(Debug)]
pub struct Msg {
    pub cluster: Arc<str>,
    /// Which run (a cluster restarted after a config change gets a new one).
    pub run: u64,
    pub body: ClusterMsg,
}

async fn make_client(access: &Access) -> Result<Client, String> {
    let config = match access {
        Access::Kubeconfig { path, context } => {
            let kc = Kubeconfig::read_from(path)
                .map_err(|e| format!("kubeconfig {}: {e}", path.display()))?;
            let opts = KubeConfigOptions {
                context: context.clone(),
                ..Default::default()
            };
            kube::Config::from_custom_kubeconfig(kc, &opts)
                .await
                .map_err(|e| format!("kubeconfig {}: {e}", path.display()))?
        }
        Access::InCluster => {
            kube::Config::incluster().map_err(|e| format!("in-cluster config: {e}"))?
        }
    };
    Client::try_from(config).map_err(|e| format!("kube client: {e}"))
}

/// Runs every watch of one cluster until aborted.
pub async fn run_cluster(spec: ClusterSpec, select: SelectRule, run: u64, tx: mpsc::Sender<Msg>) {
    let cluster: Arc<str> = spec.name.as_str().into();
    let send = {
        let (tx, cluster) = (tx.clone(), cluster.clone());
        move |body| {
            let (tx, cluster) = (tx.clone(), cluster.clone());
            async move { tx.send(Msg { cluster, run, body }).await.is_ok() }
        }
    };
    let client = loop {
        match make_client(&spec.access).await {
            Ok(c) => break c,
            Err(e) => {
                if !send(ClusterMsg::Client(Some(e))).await {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        }
    };
    send(ClusterMsg::Client(None)).await;
    let select = Arc::new(select);
    let mut svc_cfg = watcher::Config::default();
    if let Some(l) = &select.label {
        svc_cfg = svc_cfg.labels(&l.selector());
    }
    let rule = select.clone();
    let services = watch_kind(
        Api::<Service>::all(client.clone()),
        svc_cfg,
        Kind::Services,
        tx.clone(),
        cluster.clone(),
        run,
        move |s: &Service| slim_service(s, &rule),
        KindChange::Services,
    );
    let slices = watch_kind(
        Api::<EndpointSlice>::all(client.clone()),
        watcher::Config::default(),
        Kind::EndpointSlices,
        tx.clone(),
        cluster.clone(),
        run,
        slim_slice,
        KindChange::Slices,
    );
    let ingresses = watch_kind(
        Api::<Ingress>::all(client.clone()),
        watcher::Config::default(),
        Kind::Ingresses,
        tx.clone(),
        cluster.clone(),
        run,
        slim_ingress,
        KindChange::Ingresses,
    );
    let nodes = watch_kind(
        Api::<Node>::all(client),
        watcher::Config::default(),
        Kind::Nodes,
        tx,
        cluster,
        run,
        slim_node,
        KindChange::Nodes,
    );
    tokio::join!(services, slices, ingresses, nodes);
}

#[allow(clippy::too_many_arguments)]
async fn watch_kind<K, T>(
    api: Api<K>,
    config: watcher::Config,
    kind: Kind,
    tx: mpsc::Sender<Msg>,
    cluster: Arc<str>,
    run: u64,
    slim: impl Fn(&K) -> Option<T>,
    wrap: fn(Change<T>) -> KindChange,
) where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
    K::DynamicType: Default,
{
    let key = |o: &K| -> Key { (o.namespace().unwrap_or_default(), o.name_any()) };
    let send = |body| {
        let msg = Msg {
            cluster: cluster.clone(),
            run,
            body,
        };
        let tx = tx.clone();
        async move { tx.send(msg).await.is_ok() }
    };
    let mut failing = true; // until the first successful event, report it
    let mut backoff = BACKOFF_MIN;
    let mut auth_strikes = 0u32;
    // When the last list completed: a watch that fails right after it (RBAC without `watch`)
    // must not reset the backoff and the 401/403 count, or it would re-list every 0.5 s and its
    // refusal would never be reported.
    let mut listed_at: Option<tokio::time::Instant> = None;
    // A reported 401/403 is cleared only by a watch that then stays up: a list alone would
    // clear it every cycle while the watch keeps being refused.
    let mut confirm_at: Option<tokio::time::Instant> = None;
    let ok = || ClusterMsg::Status {
        kind,
        error: None,
        expected: false,
    };
    loop {
        // A fresh watcher per attempt, so every recovery is a list: kube's own retry re-watches
        // from the old resourceVersion and, when that succeeds, says nothing (bookmarks are
        // swallowed too), so a quiet kind would look broken for ever. The list's first answer is
        // the proof that the kind works again; the store swaps the re-list in without a gap.
        let stream = watcher(api.clone(), config.clone());
        let mut stream = std::pin::pin!(stream);
        loop {
            let confirmed = async {
                match confirm_at {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            let item = tokio::select! {
                item = stream.next() => item,
                () = confirmed => {
                    confirm_at = None;
                    failing = false;
                    if !send(ok()).await {
                        return;
                    }
                    continue;
                }
            };
            let Some(item) = item else { break };
            let body = match item {
                Ok(ev) => {
                    // `Init` comes before the list request: only what follows it shows the
                    // watch works again.
                    if matches!(ev, Event::InitDone) {
                        listed_at = Some(tokio::time::Instant::now());
                    }
                    if !matches!(ev, Event::Init) && failing {
                        if auth_strikes >= AUTH_STRIKES {
                            confirm_at.get_or_insert_with(|| tokio::time::Instant::now() + STABLE);
                        } else {
                            failing = false;
                            if !send(ok()).await {
                                return;
                            }
                        }
                    }
                    let change = match ev {
                        Event::Init => Change::Init,
                        Event::InitApply(o) => Change::InitApply(key(&o), slim(&o)),
                        Event::InitDone => Change::InitDone,
                        Event::Apply(o) => Change::Apply(key(&o), slim(&o)),
                        Event::Delete(o) => Change::Delete(key(&o)),
                    };
                    ClusterMsg::Change(wrap(change))
                }
                Err(e) => {
                    if listed_at.is_some_and(|t| t.elapsed() >= STABLE) {
                        backoff = BACKOFF_MIN;
                        auth_strikes = 0;
                    }
                    listed_at = None;
                    confirm_at = None;
                    // A restarted API server (or a freshly rotated token) briefly answers 401/403
                    // before its authn/authz caches are warm: only a refusal that persists is a
                    // missing permission.
                    if is_auth(&e) {
                        auth_strikes += 1;
                    }
                    if auth_strikes == 0 || auth_strikes >= AUTH_STRIKES {
                        failing = true;
                        let (error, expected) = describe(&e, kind);
                        let status = ClusterMsg::Status {
                            kind,
                            error: Some(error),
                            expected,
                        };
                        if !send(status).await {
                            return;
                        }
                    } else {
                        tracing::debug!(cluster = %cluster, resource = kind.resource(), error = %e, "refused; retrying before reporting it");
                    }
                    break;
                }
            };
            if !send(body).await {
                return;
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Retry delays after a failed list or watch. The cap bounds how long a cluster stays marked
/// failing after its API server answers again.
const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(4);
/// How long a watch must have worked before its next failure counts as a new one.
const STABLE: Duration = Duration::from_secs(10);
/// 401/403 answers (without a stable watch between them) before they are reported.
const AUTH_STRIKES: u32 = 3;

fn is_auth(e: &watcher::Error) -> bool {
    let status = match e {
        watcher::Error::WatchError(s) => Some(s),
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s)) => Some(s),
        _ => None,
    };
    status.is_some_and(|s| s.code == 401 || s.code == 403)
}

/// A watch error in words an operator can act on; `true` for the routine 410 Gone.
fn describe(e: &watcher::Error, kind: Kind) -> (String, bool) {
    let res = kind.resource();
    let api = |s: &kube::core::Status, verb: &str| -> String {
        match s.code {
            401 => format!(
                "{res}: 401 Unauthorized: the API server rejected fedns's credentials ({})",
                s.message
            ),
            403 => format!(
                "{res}: 403 Forbidden: missing RBAC permission `{verb}` on {res} (cluster-wide; fedns needs get, list and watch): {}",
                s.message
            ),
            code => format!("{res}: {verb} failed: {code} {}: {}", s.reason, s.message),
        }
    };
    match e {
        watcher::Error::WatchError(s) | watcher::Error::WatchStartFailed(kube::Error::Api(s))
            if s.code == 410 =>
        {
            (format!("{res}: watch expired (410 Gone), re-listing"), true)
        }
        watcher::Error::WatchError(s) => (api(s, "watch"), false),
        watcher::Error::InitialListFailed(kube::Error::Api(s)) => (api(s, "list"), false),
        watcher::Error::WatchStartFailed(kube::Error::Api(s)) => (api(s, "watch"), false),
        watcher::Error::InitialListFailed(e) => (format!("{res}: list failed: {e}"), false),
        watcher::Error::WatchStartFailed(e) => (format!("{res}: watch failed: {e}"), false),
        watcher::Error::WatchFailed(e) => (format!("{res}: watch stream failed: {e}"), false),
        other => (format!("{res}: {other}"), false),
    }
}

fn parse_ips<'a>(ips: impl Iterator<Item = &'a str>) -> Vec<IpAddr> {
    let mut v: Vec<IpAddr> = ips.filter_map(|s| s.parse().ok()).collect();
    v.sort();
    v.dedup();
    v
}

/// `status.loadBalancer.ingress` entries (`ip`, `hostname`) of a Service or an Ingress (two
/// different k8s types with the same fields): the addresses, and the hostnames of entries that
/// have no address (AWS ELBs), which are resolved in the background.
fn lb_targets<'a>(
    entries: impl Iterator<Item = (Option<&'a str>, Option<&'a str>)>,
) -> (Vec<IpAddr>, Vec<String>) {
    let (mut ips, mut hosts) = (Vec::new(), Vec::new());
    for (ip, hostname) in entries {
        match (ip, hostname) {
            (Some(ip), _) => ips.push(ip),
            (None, Some(h)) => hosts.push(h.to_string()),
            (None, None) => {}
        }
    }
    hosts.sort();
    hosts.dedup();
    (parse_ips(ips.into_iter()), hosts)
}

fn slim_service(s: &Service, rule: &SelectRule) -> Option<SlimService> {
    let spec = s.spec.as_ref()?;
    if spec.type_.as_deref() != Some("LoadBalancer") {
        return None;
    }
    let ns = s.metadata.namespace.as_deref().unwrap_or_default();
    if !rule.namespaces.is_empty() && !rule.namespaces.iter().any(|n| n == ns) {
        return None;
    }
    if let Some(l) = &rule.label
        && !l.matches(|k| s.metadata.labels.as_ref()?.get(k).map(String::as_str))
    {
        return None;
    }
    if let Some(a) = &rule.annotation
        && !a.matches(|k| s.metadata.annotations.as_ref()?.get(k).map(String::as_str))
    {
        return None;
    }
    let ports = spec
        .ports
        .iter()
        .flatten()
        .filter_map(|p| {
            let name = p.name.as_deref().filter(|n| !n.is_empty())?;
            Some(ServicePort {
                name: name.to_ascii_lowercase(),
                protocol: p.protocol.as_deref().unwrap_or("TCP").to_ascii_lowercase(),
                port: u16::try_from(p.port).ok()?,
            })
        })
        .collect();
    let ingress = s
        .status
        .as_ref()
        .and_then(|st| st.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref());
    let (lb_ips, lb_hosts) = lb_targets(
        ingress
            .iter()
            .flat_map(|v| v.iter())
            .map(|i| (i.ip.as_deref(), i.hostname.as_deref())),
    );
    let annotations = s.metadata.annotations.as_ref();
    Some(SlimService {
        ports,
        lb_ips,
        lb_hosts,
        settings: super::state::Annotations::parse(|k| annotations?.get(k).map(String::as_str)),
    })
}

fn slim_slice(s: &EndpointSlice) -> Option<SlimSlice> {
    let service = s
        .metadata
        .labels
        .as_ref()?
        .get("kubernetes.io/service-name")?
        .clone();
    let (mut ready, mut not_ready, mut zoneless) = (0u32, 0u32, false);
    let mut zones: Vec<String> = Vec::new();
    for e in &s.endpoints {
        let c = e.conditions.as_ref();
        // A nil `ready` means ready (API docs); a terminating endpoint never counts.
        let is_ready =
            c.and_then(|c| c.ready) != Some(false) && c.and_then(|c| c.terminating) != Some(true);
        if is_ready {
            ready += 1;
            match &e.zone {
                Some(z) if !zones.contains(z) => zones.push(z.clone()),
                Some(_) => {}
                None => zoneless = true,
            }
        } else {
            not_ready += 1;
        }
    }
    zones.sort();
    Some(SlimSlice {
        service,
        ready,
        not_ready,
        zones,
        zoneless,
    })
}

fn slim_ingress(i: &Ingress) -> Option<SlimIngress> {
    let spec = i.spec.as_ref()?;
    let mut hosts: Vec<String> = Vec::new();
    let mut backends: Vec<String> = Vec::new();
    if let Some(svc) = spec
        .default_backend
        .as_ref()
        .and_then(|b| b.service.as_ref())
    {
        backends.push(svc.name.clone());
    }
    for rule in spec.rules.iter().flatten() {
        if let Some(h) = rule.host.as_deref().filter(|h| !h.starts_with('*')) {
            hosts.push(h.to_ascii_lowercase());
        }
        for p in rule.http.iter().flat_map(|h| &h.paths) {
            if let Some(svc) = &p.backend.service {
                backends.push(svc.name.clone());
            }
        }
    }
    if hosts.is_empty() {
        return None;
    }
    hosts.sort();
    hosts.dedup();
    backends.sort();
    backends.dedup();
    let ingress = i
        .status
        .as_ref()
        .and_then(|st| st.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref());
    let (lb_ips, lb_hosts) = lb_targets(
        ingress
            .iter()
            .flat_map(|v| v.iter())
            .map(|i| (i.ip.as_deref(), i.hostname.as_deref())),
    );
    Some(SlimIngress {
        hosts,
        backends,
        lb_ips,
        lb_hosts,
    })
}

fn slim_node(n: &Node) -> Option<SlimNode> {
    let labels = n.metadata.labels.as_ref();
    let get = |k: &str, old: &str| {
        labels
            .and_then(|l| l.get(k).or_else(|| l.get(old)))
            .filter(|v| !v.is_empty())
            .map(|v| v.to_ascii_lowercase())
    };
    Some(SlimNode {
        region: get(
            "topology.kubernetes.io/region",
            "failure-domain.beta.kubernetes.io/region",
        ),
        zone: get(
            "topology.kubernetes.io/zone",
            "failure-domain.beta.kubernetes.io/zone",
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/kube-apiserver");

    fn list<K: serde::de::DeserializeOwned>(file: &str) -> Vec<K> {
        let text = std::fs::read_to_string(format!("{FIXTURES}/{file}")).expect("fixture");
        let v: serde_json::Value = serde_json::from_str(&text).expect("json");
        serde_json::from_value(v["items"].clone()).expect("items")
    }

    #[test]
    fn real_services_translate() {
        let svcs: Vec<Service> = list("list-services.json");
        let rule = SelectRule::default();
        let slim: Vec<(String, Option<SlimService>)> = svcs
            .iter()
            .map(|s| (s.name_any(), slim_service(s, &rule)))
            .collect();
        let checkout = slim
            .iter()
            .find(|(n, _)| n == "checkout")
            .unwrap()
            .1
            .as_ref()
            .unwrap();
        assert_eq!(checkout.lb_ips.len(), 2, "{checkout:?}");
        assert_eq!(checkout.lb_hosts.len(), 1, "{checkout:?}");
        assert!(!checkout.ports.is_empty());
        // ClusterIP and headless services are not federated.
        assert!(
            slim.iter()
                .filter(|(n, _)| n != "checkout")
                .all(|(_, s)| s.is_none())
        );
    }

    #[test]
    fn real_slices_count_ready_but_not_terminating() {
        let slices: Vec<EndpointSlice> = list("list-endpointslices.json");
        let s = slices
            .iter()
            .find(|s| s.name_any() == "checkout-7xk2p")
            .unwrap();
        let slim = slim_slice(s).unwrap();
        assert_eq!((slim.ready, slim.not_ready), (1, 2), "{slim:?}");
        assert_eq!(slim.service, "checkout");
    }

    #[test]
    fn real_nodes_and_ingresses_translate() {
        let nodes: Vec<Node> = list("list-nodes.json");
        let slim: Vec<SlimNode> = nodes.iter().filter_map(slim_node).collect();
        assert!(
            slim.iter().all(|n| n.region.is_some() && n.zone.is_some()),
            "{slim:?}"
        );
        let ings: Vec<Ingress> = list("list-ingresses.json");
        let i = slim_ingress(&ings[0]).unwrap();
        assert_eq!(i.hosts.len(), 2, "{i:?}");
        assert!(!i.lb_ips.is_empty() && !i.backends.is_empty(), "{i:?}");
    }
}
