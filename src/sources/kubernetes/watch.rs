//! The only place that speaks to Kubernetes: one `kube` client per member cluster and one
//! watcher per kind (Services, EndpointSlices, Ingresses, Nodes, and when enabled the custom
//! resources DNSEndpoint, Gateway, HTTPRoute and ServiceImport), each object translated at once into the slim
//! structs of [`super::state`] and sent to the source's assembler. Custom resources are read
//! through a small serde struct with a hand-written `kube::Resource` impl (no `derive` feature,
//! no generated types); an API server without the CRD (404) is reported once and asked again
//! every [`CRD_RECHECK`], never retried at the error backoff.
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
use super::state::{
    Change, Key, Kind, Listener, ParentRef, SlimEndpoints, SlimGateway, SlimImport, SlimIngress,
    SlimNode, SlimRoute, SlimService, SlimSlice,
};
use crate::model::{DnsName, Endpoint, RData, ServicePort};

/// A translated change of one kind.
#[derive(Debug)]
pub enum KindChange {
    Services(Change<SlimService>),
    Slices(Change<SlimSlice>),
    Ingresses(Change<SlimIngress>),
    Nodes(Change<SlimNode>),
    DnsEndpoints(Change<SlimEndpoints>),
    Gateways(Change<SlimGateway>),
    Routes(Change<SlimRoute>),
    Imports(Change<SlimImport>),
}

impl KindChange {
    /// The custom resource this change is of, if it is of one and the change shows the API
    /// server serves it (`Init` comes before the list request, so it shows nothing).
    pub fn served_custom(&self) -> Option<Kind> {
        match self {
            KindChange::DnsEndpoints(c) if !matches!(c, Change::Init) => Some(Kind::DnsEndpoints),
            KindChange::Gateways(c) if !matches!(c, Change::Init) => Some(Kind::Gateways),
            KindChange::Routes(c) if !matches!(c, Change::Init) => Some(Kind::HttpRoutes),
            KindChange::Imports(c) if !matches!(c, Change::Init) => Some(Kind::ServiceImports),
            _ => None,
        }
    }
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
    /// The API server does not serve this custom resource (404: its CRD is not installed).
    Missing(Kind),
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
        Api::<Node>::all(client.clone()),
        watcher::Config::default(),
        Kind::Nodes,
        tx.clone(),
        cluster.clone(),
        run,
        slim_node,
        KindChange::Nodes,
    );
    let dns_endpoints = async {
        if spec.dns_endpoints {
            watch_kind(
                Api::<Custom<DnsEndpointKind>>::all(client.clone()),
                watcher::Config::default(),
                Kind::DnsEndpoints,
                tx.clone(),
                cluster.clone(),
                run,
                slim_endpoints,
                KindChange::DnsEndpoints,
            )
            .await
        }
    };
    let gateways = async {
        if spec.gateway_api {
            let gateways = watch_kind(
                Api::<Custom<GatewayKind>>::all(client.clone()),
                watcher::Config::default(),
                Kind::Gateways,
                tx.clone(),
                cluster.clone(),
                run,
                slim_gateway,
                KindChange::Gateways,
            );
            let routes = watch_kind(
                Api::<Custom<HttpRouteKind>>::all(client.clone()),
                watcher::Config::default(),
                Kind::HttpRoutes,
                tx.clone(),
                cluster.clone(),
                run,
                slim_route,
                KindChange::Routes,
            );
            tokio::join!(gateways, routes);
        }
    };
    let imports = async {
        if spec.service_imports {
            let rule = select.clone();
            watch_kind(
                Api::<Custom<ServiceImportKind>>::all(client.clone()),
                watcher::Config::default(),
                Kind::ServiceImports,
                tx.clone(),
                cluster.clone(),
                run,
                move |o: &Custom<ServiceImportKind>| slim_import(o, &rule),
                KindChange::Imports,
            )
            .await
        }
    };
    tokio::join!(
        services,
        slices,
        ingresses,
        nodes,
        dns_endpoints,
        gateways,
        imports
    );
}

/// How often a custom resource whose CRD is missing is asked for again: installing a CRD is an
/// operator's act, so minutes are soon enough, and a member without it costs one request.
pub const CRD_RECHECK: Duration = Duration::from_secs(120);

/// Which custom resource a [`Custom`] object is.
pub trait CustomKind {
    const GROUP: &'static str;
    const VERSION: &'static str;
    const KIND: &'static str;
    const PLURAL: &'static str;
}

#[derive(Clone, Debug)]
pub struct DnsEndpointKind;
impl CustomKind for DnsEndpointKind {
    const GROUP: &'static str = "externaldns.k8s.io";
    const VERSION: &'static str = "v1alpha1";
    const KIND: &'static str = "DNSEndpoint";
    const PLURAL: &'static str = "dnsendpoints";
}

#[derive(Clone, Debug)]
pub struct GatewayKind;
impl CustomKind for GatewayKind {
    const GROUP: &'static str = "gateway.networking.k8s.io";
    const VERSION: &'static str = "v1";
    const KIND: &'static str = "Gateway";
    const PLURAL: &'static str = "gateways";
}

#[derive(Clone, Debug)]
pub struct ServiceImportKind;
impl CustomKind for ServiceImportKind {
    const GROUP: &'static str = "multicluster.x-k8s.io";
    const VERSION: &'static str = "v1alpha1";
    const KIND: &'static str = "ServiceImport";
    const PLURAL: &'static str = "serviceimports";
}

#[derive(Clone, Debug)]
pub struct HttpRouteKind;
impl CustomKind for HttpRouteKind {
    const GROUP: &'static str = "gateway.networking.k8s.io";
    const VERSION: &'static str = "v1";
    const KIND: &'static str = "HTTPRoute";
    const PLURAL: &'static str = "httproutes";
}

/// A namespaced custom resource object, its `spec` and `status` kept as JSON and read by the
/// `slim_*` functions (whatever they do not know is ignored).
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(bound = "")]
pub struct Custom<M> {
    metadata: kube::core::ObjectMeta,
    #[serde(default)]
    spec: serde_json::Value,
    #[serde(default)]
    status: serde_json::Value,
    #[serde(skip)]
    kind: std::marker::PhantomData<M>,
}

impl<M: CustomKind> Resource for Custom<M> {
    type DynamicType = ();
    type Scope = k8s_openapi::NamespaceResourceScope;

    fn kind(_: &()) -> std::borrow::Cow<'_, str> {
        M::KIND.into()
    }
    fn group(_: &()) -> std::borrow::Cow<'_, str> {
        M::GROUP.into()
    }
    fn version(_: &()) -> std::borrow::Cow<'_, str> {
        M::VERSION.into()
    }
    fn plural(_: &()) -> std::borrow::Cow<'_, str> {
        M::PLURAL.into()
    }
    fn meta(&self) -> &kube::core::ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut kube::core::ObjectMeta {
        &mut self.metadata
    }
}

/// The store key of an object: `(namespace, name)`, the namespace empty for a cluster-scoped one.
pub fn key_of<K: Resource>(o: &K) -> Key {
    (
        o.namespace().unwrap_or_default().into(),
        o.name_any().into(),
    )
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
    let key = key_of::<K>;
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
    'attempt: loop {
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
                Err(e) if kind.is_custom() && is_not_found(&e) => {
                    // No CRD: not a failure to retry at the backoff, a fact to check now and then.
                    listed_at = None;
                    confirm_at = None;
                    failing = true;
                    backoff = BACKOFF_MIN;
                    auth_strikes = 0;
                    if !send(ClusterMsg::Missing(kind)).await {
                        return;
                    }
                    tokio::time::sleep(CRD_RECHECK).await;
                    continue 'attempt;
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

/// 404 on the list or the watch: the API server does not serve the resource.
fn is_not_found(e: &watcher::Error) -> bool {
    match e {
        watcher::Error::WatchError(s) => s.code == 404,
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s)) => s.code == 404,
        _ => false,
    }
}

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
                "{res}: 403 Forbidden: missing RBAC permission `{verb}` on {res} (cluster-wide; fedns needs get, list and watch{}): {}",
                match kind {
                    Kind::DnsEndpoints =>
                        "; the kustomize component deploy/kubernetes/rbac/dns-endpoints grants them",
                    Kind::Gateways | Kind::HttpRoutes =>
                        "; the kustomize component deploy/kubernetes/rbac/gateway-api grants them",
                    Kind::ServiceImports =>
                        "; the kustomize component deploy/kubernetes/rbac/service-imports grants them",
                    _ => "",
                },
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

pub fn slim_service(s: &Service, rule: &SelectRule) -> Option<SlimService> {
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
    // `None` is a headless Service's clusterIP: no address.
    let mut cluster_ips: Vec<IpAddr> = match &spec.cluster_ips {
        Some(ips) if !ips.is_empty() => ips.iter().filter_map(|i| i.parse().ok()).collect(),
        _ => spec
            .cluster_ip
            .iter()
            .filter_map(|i| i.parse().ok())
            .collect(),
    };
    cluster_ips.sort();
    cluster_ips.dedup();
    Some(SlimService {
        ports,
        cluster_ips: cluster_ips.into(),
        lb_ips: lb_ips.into(),
        lb_hosts: lb_hosts.into(),
        settings: super::state::Annotations::parse(|k| annotations?.get(k).map(String::as_str))
            .into(),
    })
}

/// The label the EndpointSlice controller puts on the slices of a headless Service
/// (`clusterIP: None`).
const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";

pub fn slim_slice(s: &EndpointSlice) -> Option<SlimSlice> {
    let labels = s.metadata.labels.as_ref()?;
    let service = labels.get("kubernetes.io/service-name")?.clone();
    // Only a headless Service's slices keep their endpoints (the MCS per-endpoint names): the
    // others need counts and zones alone, and there are many more of them.
    let mut headless: Option<Vec<Endpoint>> = labels.contains_key(HEADLESS_LABEL).then(Vec::new);
    let (mut ready, mut not_ready, mut zoneless) = (0u32, 0u32, false);
    let mut zones: Vec<String> = Vec::new();
    for e in &s.endpoints {
        let c = e.conditions.as_ref();
        // A nil `ready` means ready (API docs); a terminating endpoint never counts.
        let is_ready =
            c.and_then(|c| c.ready) != Some(false) && c.and_then(|c| c.terminating) != Some(true);
        if is_ready {
            ready += 1;
            if let Some(eps) = &mut headless {
                let addresses = parse_ips(e.addresses.iter().map(String::as_str));
                if !addresses.is_empty() {
                    eps.push(Endpoint {
                        // A hostname that is not one DNS label cannot name anything.
                        hostname: e
                            .hostname
                            .as_deref()
                            .filter(|h| {
                                !h.contains('.') && DnsName::parse(h).is_ok_and(|n| !n.is_root())
                            })
                            .map(str::to_ascii_lowercase),
                        addresses,
                    });
                }
            }
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
    if let Some(eps) = &mut headless {
        eps.sort();
    }
    Some(SlimSlice {
        service: service.as_str().into(),
        ready,
        not_ready,
        zones: zones.into(),
        zoneless,
        headless: headless.map(Vec::into_boxed_slice),
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
        // `*.foo.com` (the API allows `*` only as the whole first label) is served as a DNS
        // wildcard (RFC 4592), which also covers deeper names the Ingress does not route.
        if let Some(h) = rule.host.as_deref().filter(|h| !h.is_empty()) {
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

pub fn slim_node(n: &Node) -> Option<SlimNode> {
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

/// One endpoint's target as a record of its type.
fn endpoint_record(rtype: &str, target: &str) -> Result<RData, String> {
    let name = |t: &str| DnsName::parse(t).map_err(|e| format!("target {t:?}: {e}"));
    match rtype {
        "A" => target
            .parse()
            .map(RData::A)
            .map_err(|_| format!("target {target:?} is not an IPv4 address")),
        "AAAA" => target
            .parse()
            .map(RData::Aaaa)
            .map_err(|_| format!("target {target:?} is not an IPv6 address")),
        "CNAME" => name(target).map(RData::Cname),
        "TXT" => {
            // ExternalDNS writes TXT targets quoted; the quotes are not part of the text.
            let text = target
                .strip_prefix('"')
                .and_then(|t| t.strip_suffix('"'))
                .unwrap_or(target);
            let chunks = text
                .as_bytes()
                .chunks(255)
                .map(Box::<[u8]>::from)
                .collect::<Vec<_>>();
            Ok(RData::Txt(if chunks.is_empty() {
                vec![Box::from(&b""[..])]
            } else {
                chunks
            }))
        }
        "SRV" => {
            let f: Vec<&str> = target.split_whitespace().collect();
            let num = |s: &str| s.parse::<u16>().ok();
            match f.as_slice() {
                [p, w, port, t] => match (num(p), num(w), num(port)) {
                    (Some(priority), Some(weight), Some(port)) => Ok(RData::Srv {
                        priority,
                        weight,
                        port,
                        target: name(t)?,
                    }),
                    _ => Err(format!(
                        "target {target:?}: priority, weight and port must be 0..=65535"
                    )),
                },
                _ => Err(format!(
                    "target {target:?} is not \"PRIORITY WEIGHT PORT TARGET\""
                )),
            }
        }
        other => Err(format!(
            "recordType {other:?} is not served (A, AAAA, CNAME, TXT and SRV are)"
        )),
    }
}

/// A ServiceImport's `spec` (MCS API, KEP-1645): `type` `ClusterSetIP` (its `ips`) or
/// `Headless`, and its named `ports`. Another type, or a `ClusterSetIP` import without a valid
/// IP (the MCS controller has not allocated one yet), is not of interest; bad IPs and unnamed
/// ports are left out.
fn slim_import(o: &Custom<ServiceImportKind>, rule: &SelectRule) -> Option<SlimImport> {
    let ns = o.metadata.namespace.as_deref().unwrap_or_default();
    if !rule.namespaces.is_empty() && !rule.namespaces.iter().any(|n| n == ns) {
        return None;
    }
    let headless = match o.spec["type"].as_str() {
        Some("ClusterSetIP") => false,
        Some("Headless") => true,
        _ => return None,
    };
    let mut ips: Vec<IpAddr> = if headless {
        vec![]
    } else {
        (o.spec["ips"].as_array().into_iter().flatten())
            .filter_map(|v| v.as_str()?.parse().ok())
            .collect()
    };
    ips.sort();
    ips.dedup();
    if !headless && ips.is_empty() {
        return None;
    }
    let ports = (o.spec["ports"].as_array().into_iter().flatten())
        .filter_map(|p| {
            let name = p["name"].as_str().filter(|n| !n.is_empty())?;
            Some(ServicePort {
                name: name.to_ascii_lowercase(),
                protocol: p["protocol"].as_str().unwrap_or("TCP").to_ascii_lowercase(),
                port: u16::try_from(p["port"].as_u64()?).ok().filter(|p| *p > 0)?,
            })
        })
        .collect();
    Some(SlimImport {
        ips,
        headless,
        ports,
    })
}

/// A DNSEndpoint's `spec.endpoints`: every endpoint whose name and targets are all valid; an
/// endpoint with any bad part is left out whole (with the reason), the others are kept.
fn slim_endpoints(o: &Custom<DnsEndpointKind>) -> Option<SlimEndpoints> {
    let mut out = SlimEndpoints {
        records: Vec::new(),
        skipped: Vec::new(),
    };
    let endpoints = o.spec.get("endpoints").and_then(|e| e.as_array());
    for (i, ep) in endpoints.into_iter().flatten().enumerate() {
        let dns_name = ep["dnsName"].as_str().unwrap_or_default();
        let rtype = ep["recordType"].as_str().unwrap_or_default();
        let at = |why: String| {
            format!("spec.endpoints[{i}] (dnsName {dns_name:?}, recordType {rtype:?}): {why}")
        };
        let name = match DnsName::parse(dns_name) {
            Ok(n) if n.is_root() => {
                out.skipped.push(at("no dnsName".into()));
                continue;
            }
            // `*` is a wildcard (RFC 4592) only as the whole first label; elsewhere it would be
            // a literal label no client means.
            Ok(n) if !super::state::wildcard_only_first(&n) => {
                out.skipped.push(at(
                    "`*` is only served as a whole first label (a wildcard, `*.NAME`)".into(),
                ));
                continue;
            }
            Ok(n) => n,
            Err(e) => {
                out.skipped.push(at(e));
                continue;
            }
        };
        let ttl = match &ep["recordTTL"] {
            serde_json::Value::Null => None,
            v => match v.as_u64().and_then(|t| u32::try_from(t).ok()) {
                Some(t) => Some(t),
                None => {
                    out.skipped
                        .push(at(format!("recordTTL {v} is not a number of seconds")));
                    continue;
                }
            },
        };
        let targets: Vec<&str> = ep["targets"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t.as_str())
            .collect();
        if targets.is_empty() {
            out.skipped.push(at("no targets".into()));
            continue;
        }
        if rtype == "CNAME" && targets.len() > 1 {
            out.skipped
                .push(at(format!("a CNAME has one target, not {}", targets.len())));
            continue;
        }
        match targets
            .iter()
            .map(|t| endpoint_record(rtype, t))
            .collect::<Result<Vec<_>, _>>()
        {
            Ok(records) => out
                .records
                .extend(records.into_iter().map(|r| (name.clone(), ttl, r))),
            Err(e) => out.skipped.push(at(e)),
        }
    }
    Some(out)
}

/// A Gateway API host name (`hostname` of a listener, `hostnames[]` of a route), lowercased;
/// `*.` wildcards are kept for the listener/route intersection, which may narrow them to one
/// name.
fn gateway_host(h: &serde_json::Value) -> Option<String> {
    h.as_str()
        .filter(|h| !h.is_empty())
        .map(str::to_ascii_lowercase)
}

fn slim_gateway(g: &Custom<GatewayKind>) -> Option<SlimGateway> {
    let listeners: Vec<Listener> = g.spec["listeners"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|l| Listener {
            name: l["name"].as_str().unwrap_or_default().to_string(),
            hostname: gateway_host(&l["hostname"]),
            port: l["port"].as_u64().and_then(|p| u16::try_from(p).ok()),
        })
        .collect();
    // `status.addresses[]`: `{type: IPAddress | Hostname, value}` (type defaults to IPAddress).
    let addrs = g.status["addresses"].as_array().into_iter().flatten();
    let (lb_ips, lb_hosts) = lb_targets(addrs.filter_map(|a| {
        let value = a["value"].as_str()?;
        match a["type"].as_str().unwrap_or("IPAddress") {
            "IPAddress" => Some((Some(value), None)),
            "Hostname" => Some((None, Some(value))),
            _ => None,
        }
    }));
    let programmed = g.status["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Programmed" && c["status"] == "True");
    Some(SlimGateway {
        listeners,
        lb_ips,
        lb_hosts,
        programmed,
    })
}

fn slim_route(r: &Custom<HttpRouteKind>) -> Option<SlimRoute> {
    let ns = r.metadata.namespace.clone().unwrap_or_default();
    let of_kind = |p: &&serde_json::Value, kind: &str, group: &str| {
        p["kind"].as_str().unwrap_or(kind) == kind && p["group"].as_str().unwrap_or(group) == group
    };
    let key = |p: &serde_json::Value| -> Option<Key> {
        let name = p["name"].as_str()?.to_string();
        let pns = p["namespace"]
            .as_str()
            .map_or_else(|| ns.clone(), String::from);
        Some((pns.into(), name.into()))
    };
    let gateway_refs = |v: &serde_json::Value| -> Vec<ParentRef> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter(|p| of_kind(p, "Gateway", "gateway.networking.k8s.io"))
            .filter_map(|p| {
                Some(ParentRef {
                    gateway: key(p)?,
                    section: p["sectionName"].as_str().map(String::from),
                    // A port that is no u16 matches no listener: attached to nothing.
                    port: match &p["port"] {
                        serde_json::Value::Null => None,
                        v => Some(v.as_u64().and_then(|p| u16::try_from(p).ok()).unwrap_or(0)),
                    },
                })
            })
            .collect()
    };
    // A parent the Gateway's controller says it did not accept (`status.parents[]` with
    // `Accepted` not `True`: no listener with a matching host name, not allowed from this
    // namespace…) is not attached; one it has not judged yet is.
    let rejected: Vec<ParentRef> = r.status["parents"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| {
            p["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Accepted" && c["status"] != "True")
        })
        .flat_map(|p| gateway_refs(&serde_json::json!([p["parentRef"]])))
        .collect();
    let mut parents = gateway_refs(&r.spec["parentRefs"]);
    parents.retain(|p| !rejected.contains(p));
    parents.sort();
    parents.dedup();
    let backends = r.spec["rules"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|rule| {
            rule["backendRefs"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| of_kind(p, "Service", ""))
                .filter_map(key)
        })
        .collect::<std::collections::BTreeSet<Key>>()
        .into_iter()
        .collect();
    let mut hostnames: Vec<String> = r.spec["hostnames"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(gateway_host)
        .collect();
    hostnames.sort();
    hostnames.dedup();
    if parents.is_empty() {
        return None;
    }
    Some(SlimRoute {
        hostnames,
        parents,
        backends,
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
        assert_eq!(
            *checkout.cluster_ips,
            ["10.96.183.156".parse::<IpAddr>().unwrap()]
        );
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
        assert_eq!(&*slim.service, "checkout");
        assert_eq!(slim.headless, None, "not a headless Service's slice");
    }

    /// A slice the controller labels headless keeps its ready endpoints (hostname and
    /// addresses); the hostname-bearing endpoint of the real capture is one.
    #[test]
    fn headless_slices_keep_their_ready_endpoints() {
        let slices: Vec<EndpointSlice> = list("list-endpointslices.json");
        let mut s = slices
            .iter()
            .find(|s| s.name_any() == "catalog-q9w4r")
            .unwrap()
            .clone();
        assert_eq!(slim_slice(&s).unwrap().headless, None);
        s.metadata
            .labels
            .get_or_insert_default()
            .insert(HEADLESS_LABEL.into(), String::new());
        let slim = slim_slice(&s).unwrap();
        assert_eq!(
            slim.headless,
            Some(
                vec![Endpoint {
                    hostname: Some("catalog-0".into()),
                    addresses: vec!["fd00:10:244:1::5".parse().unwrap()],
                }]
                .into()
            )
        );
        // Not ready endpoints and a hostname that is no DNS label.
        let mut ep = s.endpoints[0].clone();
        ep.hostname = Some("a.b".into());
        let mut down = ep.clone();
        down.conditions.get_or_insert_default().ready = Some(false);
        s.endpoints = vec![ep, down];
        let slim = slim_slice(&s).unwrap();
        let eps = slim.headless.unwrap();
        assert_eq!(eps.len(), 1, "{eps:?}");
        assert_eq!(eps[0].hostname, None);
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

    fn custom<M>(v: serde_json::Value) -> Custom<M> {
        serde_json::from_value(v).expect("object")
    }

    /// A ServiceImport as the MCS CRD shapes it: ClusterSetIP with its IPs (bad ones left out)
    /// and named ports; Headless; an unknown type, or a ClusterSetIP with no IP yet, is not of
    /// interest; the namespaces rule applies.
    #[test]
    fn service_imports_translate() {
        let o = |spec: serde_json::Value, ns: &str| -> Custom<ServiceImportKind> {
            custom(serde_json::json!({
                "metadata": {"name": "web", "namespace": ns},
                "spec": spec,
                "status": {"clusters": [{"cluster": "east"}]}
            }))
        };
        let all = SelectRule::default();
        let slim = slim_import(
            &o(
                serde_json::json!({"type": "ClusterSetIP", "ips": ["10.96.0.10", "nope", "fd00::a"],
                    "ports": [{"name": "HTTP", "protocol": "TCP", "port": 80}, {"port": 81},
                              {"name": "dns", "protocol": "UDP", "port": 53}]}),
                "shop",
            ),
            &all,
        )
        .unwrap();
        assert!(!slim.headless);
        assert_eq!(
            slim.ips,
            [
                "10.96.0.10".parse::<IpAddr>().unwrap(),
                "fd00::a".parse().unwrap()
            ]
        );
        let ports: Vec<(&str, &str, u16)> = slim
            .ports
            .iter()
            .map(|p| (p.name.as_str(), p.protocol.as_str(), p.port))
            .collect();
        assert_eq!(ports, [("http", "tcp", 80), ("dns", "udp", 53)]);
        let headless = slim_import(&o(serde_json::json!({"type": "Headless"}), "shop"), &all);
        assert!(headless.is_some_and(|h| h.headless && h.ips.is_empty()));
        for spec in [
            serde_json::json!({"type": "ClusterSetIP"}),
            serde_json::json!({"type": "Other", "ips": ["10.96.0.1"]}),
            serde_json::json!({}),
        ] {
            assert_eq!(slim_import(&o(spec.clone(), "shop"), &all), None, "{spec}");
        }
        let only_shop = SelectRule {
            namespaces: vec!["shop".into()],
            ..SelectRule::default()
        };
        let spec = serde_json::json!({"type": "Headless"});
        assert!(slim_import(&o(spec.clone(), "shop"), &only_shop).is_some());
        assert!(slim_import(&o(spec, "other"), &only_shop).is_none());
    }

    #[test]
    fn dns_endpoints_translate_and_bad_endpoints_are_skipped_whole() {
        let o: Custom<DnsEndpointKind> = custom(serde_json::json!({
            "metadata": {"name": "records", "namespace": "shop"},
            "spec": {"endpoints": [
                {"dnsName": "app.example.com", "recordType": "A", "targets": ["192.0.2.1", "192.0.2.2"], "recordTTL": 60},
                {"dnsName": "App.Example.com.", "recordType": "AAAA", "targets": ["2001:db8::1"]},
                {"dnsName": "txt.example.com", "recordType": "TXT", "targets": ["\"a=b\""]},
                {"dnsName": "_x._tcp.example.com", "recordType": "SRV", "targets": ["1 2 443 app.example.com"]},
                {"dnsName": "c.example.com", "recordType": "CNAME", "targets": ["app.example.com"]},
                {"dnsName": "mixed.example.com", "recordType": "A", "targets": ["192.0.2.3", "nope"]},
                {"dnsName": "two.example.com", "recordType": "CNAME", "targets": ["a.example.com", "b.example.com"]},
                {"dnsName": "*.example.com", "recordType": "A", "targets": ["192.0.2.4"]},
                {"dnsName": "a.*.example.com", "recordType": "A", "targets": ["192.0.2.4"]},
                {"dnsName": "*x.example.com", "recordType": "A", "targets": ["192.0.2.4"]},
                {"dnsName": "mx.example.com", "recordType": "MX", "targets": ["10 mail.example.com"]},
                {"dnsName": "srv.example.com", "recordType": "SRV", "targets": ["1 2 99999 x.example.com"]},
                {"dnsName": "ttl.example.com", "recordType": "A", "targets": ["192.0.2.5"], "recordTTL": -1}
            ]}
        }));
        let slim = slim_endpoints(&o).unwrap();
        let names: Vec<String> = slim.records.iter().map(|r| r.0.to_string()).collect();
        assert_eq!(
            names,
            [
                "app.example.com.",
                "app.example.com.",
                "app.example.com.",
                "txt.example.com.",
                "_x._tcp.example.com.",
                "c.example.com.",
                "*.example.com."
            ],
            "{slim:?}"
        );
        assert_eq!(slim.records[0].1, Some(60));
        assert_eq!(slim.records[2].1, None);
        assert_eq!(slim.records[3].2, RData::Txt(vec![Box::from(&b"a=b"[..])]));
        assert!(matches!(
            slim.records[4].2,
            RData::Srv {
                port: 443,
                priority: 1,
                weight: 2,
                ..
            }
        ));
        assert_eq!(slim.skipped.len(), 7, "{:?}", slim.skipped);
        assert!(
            slim.skipped[2].contains("a.*.example.com")
                && slim.skipped[3].contains("*x.example.com")
                && slim.skipped[2].contains("whole first label"),
            "{:?}",
            slim.skipped
        );
        assert!(
            slim.skipped[0].contains("spec.endpoints[5]") && slim.skipped[0].contains("\"nope\"")
        );
    }

    #[test]
    fn gateways_and_routes_translate() {
        let g: Custom<GatewayKind> = custom(serde_json::json!({
            "metadata": {"name": "gw", "namespace": "shop"},
            "spec": {"gatewayClassName": "x", "listeners": [
                {"name": "a", "hostname": "Portal.example.com", "port": 80, "protocol": "HTTP"},
                {"name": "b", "hostname": "*.example.com", "port": 80, "protocol": "HTTP"},
                {"name": "c", "port": 80, "protocol": "HTTP"}
            ]},
            "status": {
                "addresses": [{"type": "IPAddress", "value": "192.0.2.1"}, {"value": "2001:db8::1"}, {"type": "Hostname", "value": "lb.example.net"}],
                "conditions": [{"type": "Accepted", "status": "True"}, {"type": "Programmed", "status": "True"}]
            }
        }));
        let sg = slim_gateway(&g).unwrap();
        let l = |name: &str, host: Option<&str>| Listener {
            name: name.into(),
            hostname: host.map(String::from),
            port: Some(80),
        };
        assert_eq!(
            sg.listeners,
            [
                l("a", Some("portal.example.com")),
                l("b", Some("*.example.com")),
                l("c", None)
            ]
        );
        assert_eq!(sg.lb_ips.len(), 2);
        assert_eq!(sg.lb_hosts, ["lb.example.net"]);
        assert!(sg.programmed);
        let pending: Custom<GatewayKind> = custom(serde_json::json!({
            "metadata": {"name": "gw", "namespace": "shop"},
            "spec": {"listeners": []},
            "status": {"conditions": [{"type": "Programmed", "status": "False"}]}
        }));
        assert!(!slim_gateway(&pending).unwrap().programmed);
        let r: Custom<HttpRouteKind> = custom(serde_json::json!({
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {
                "parentRefs": [{"name": "gw"}, {"name": "other", "namespace": "infra", "sectionName": "https"}, {"kind": "Service", "group": "", "name": "mesh"}, {"name": "gw", "port": 8443}],
                "hostnames": ["Web.example.com", "*.wild.example.com"],
                "rules": [{"backendRefs": [{"name": "checkout", "port": 80}, {"kind": "Other", "group": "x", "name": "y"}]},
                          {"backendRefs": [{"name": "checkout", "port": 81}]}]
            }
        }));
        let sr = slim_route(&r).unwrap();
        assert_eq!(sr.hostnames, ["*.wild.example.com", "web.example.com"]);
        let parent = |ns: &str, name: &str, section: Option<&str>| ParentRef {
            gateway: (ns.into(), name.into()),
            section: section.map(String::from),
            port: None,
        };
        let mut on_port = parent("shop", "gw", None);
        on_port.port = Some(8443);
        let mut refused = r.clone();
        refused.status = serde_json::json!({"parents": [
            {"parentRef": {"name": "gw"}, "controllerName": "x",
             "conditions": [{"type": "Accepted", "status": "False", "reason": "NoMatchingListenerHostname"}]},
            {"parentRef": {"name": "other", "namespace": "infra", "sectionName": "https"}, "controllerName": "x",
             "conditions": [{"type": "Accepted", "status": "True"}]}
        ]});
        assert_eq!(
            slim_route(&refused).unwrap().parents,
            [parent("infra", "other", Some("https")), on_port.clone()],
            "a parent that did not accept the route is not one (the same Gateway on a port is
             another parent)"
        );
        assert_eq!(
            sr.parents,
            [
                parent("infra", "other", Some("https")),
                parent("shop", "gw", None),
                on_port
            ]
        );
        assert_eq!(sr.backends, [("shop".into(), "checkout".into())]);
    }
}
