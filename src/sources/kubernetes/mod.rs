//! The Kubernetes source (DESIGN §1–§3): member clusters watched through their API servers,
//! assembled into one federation snapshot for the merger.
//!
//! One task per cluster runs the kube watches ([`watch`]: the built-in kinds, and DNSEndpoints
//! and Gateway API objects where enabled); everything they see arrives here as
//! slim changes, is kept in per-cluster [`state`], and, coalesced over `coalesce_ms`, becomes a
//! complete [`Federation`] snapshot sent under the source name `kubernetes`. Load-balancer
//! hostnames are resolved here in the background and refreshed, never on the query path. The
//! `kubernetes:` section follows the config in effect (each version the reloader accepted, on
//! change or SIGHUP), so clusters can be added, changed and removed while running; a config
//! the reloader rejects changes nothing here and the running clusters keep going. Each
//! cluster's kubeconfig file is polled too: when what its client connects with changes (context,
//! server, CA, token: a rotated token in the same file), or the config gives it another
//! kubeconfig, context, selection or custom resources to watch, a new client lists into a state
//! of its own while the old one keeps serving, and replaces it only once every kind it watches
//! is listed (no gap in its shards, `/readyz` unchanged meanwhile). An enabled custom resource
//! whose CRD a member lacks counts as listed and empty, logged once, metered and noted on
//! `/readyz`.
//!
//! Guarantees: a snapshot is only sent when it differs from the last one; each cluster's sync
//! state is on `/readyz` (source `kubernetes:NAME`, ready only once a table holding the cluster's
//! current data is published) and in `fedns_cluster_up{cluster}`; each
//! failure is logged once per change of state, naming the cluster and the resource; fail static
//! as described in [`state`].
//!
//! [`join`] is `fedns join`/`unjoin`, the operator's command that enrols a member (its RBAC, a
//! token, a kubeconfig) and edits the config this source follows.

pub mod config;
pub mod join;
pub mod state;
/// Public for bench/kube_memory.rs, which measures the stores of objects translated here.
#[doc(hidden)]
pub mod watch;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use prometheus::{IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};
use tokio::sync::{mpsc, watch as tokio_watch};

use self::config::{Access, ClusterSpec, KubeSettings};
use self::state::{Change, ClusterState, Freshness, Kind};
use self::watch::{ClusterMsg, KindChange, Msg};
use super::{Snapshot, SourceBoard, Update};
use crate::dns::zonefile::Problem;
use crate::metrics::Metrics;
use crate::model::Federation;

/// The name of the source's snapshots in the merger.
pub const SOURCE: &str = "kubernetes";

/// The `/readyz` and `fedns_source_up` name of one cluster.
/// Longest a start waits, once the first member has listed, for the others' first lists before
/// serving the members listed so far (members listing in parallel finish close together).
const FIRST_LIST_GATHER: Duration = Duration::from_secs(5);

pub fn board_name(cluster: &str) -> String {
    format!("{SOURCE}:{cluster}")
}

/// Registers every configured cluster on the source board before serving starts, so `/readyz`
/// waits for them from the first request.
pub fn register(settings: &KubeSettings, board: &SourceBoard) {
    let give_up = std::time::Instant::now() + settings.sync_timeout;
    for c in &settings.clusters {
        board.register_until(&board_name(&c.name), give_up);
    }
}

/// What `fedns check` can verify without contacting clusters: kubeconfigs parse and hold the
/// named context.
pub fn check(settings: &KubeSettings) -> Vec<Problem> {
    let mut out = Vec::new();
    for (i, c) in settings.clusters.iter().enumerate() {
        let Access::Kubeconfig { path, context } = &c.access else {
            continue;
        };
        let problem = |message: String| Problem {
            file: path.display().to_string(),
            line: None,
            message: format!(
                "kubernetes.clusters[{i}].kubeconfig (cluster {}): {message}",
                c.name
            ),
        };
        match kube::config::Kubeconfig::read_from(path) {
            Err(e) => out.push(problem(e.to_string())),
            Ok(kc) => {
                if let Some(ctx) = context
                    && !kc.contexts.iter().any(|x| &x.name == ctx)
                {
                    out.push(problem(format!("no context {ctx:?} in the kubeconfig")));
                }
            }
        }
    }
    out
}

/// Logs and counts the bad `fedns.io/*` annotation values a Service change brings that the
/// Service did not have before (so a value is reported once, not with every snapshot; the
/// Service keeps its last good settings, `state::Grouped::carry`).
fn report_annotations(
    cluster: &str,
    store: &state::Store<state::SlimService>,
    change: &state::Change<state::SlimService>,
    km: &KubeMetrics,
) {
    let (state::Change::Apply(key, Some(new)) | state::Change::InitApply(key, Some(new))) = change
    else {
        return;
    };
    for (annotation, value, why) in new.new_annotation_errors(store.live.get(key)) {
        tracing::warn!(
            cluster = %cluster,
            service = %format!("{}/{}", key.0, key.1),
            annotation = *annotation,
            "Service {}/{} in cluster {cluster}: {annotation}: {value:?}: {why}; keeping its last good setting",
            key.0, key.1,
        );
        km.annotation_errors.with_label_values(&[annotation]).inc();
    }
}

/// Applies one translated change to its kind's store; true when what DNS sees may have changed.
fn apply_change(state: &mut ClusterState, c: KindChange) -> bool {
    match c {
        KindChange::Services(c) => state.services.apply(c),
        KindChange::Slices(c) => state.slices.apply(c),
        KindChange::Ingresses(c) => state.ingresses.apply(c),
        KindChange::Nodes(c) => state.nodes.apply(c),
        KindChange::DnsEndpoints(c) => state.dns_endpoints.apply(c),
        KindChange::Gateways(c) => state.gateways.apply(c),
        KindChange::Routes(c) => state.routes.apply(c),
        KindChange::Imports(c) => state.imports.apply(c),
    }
}

struct KubeMetrics {
    cluster_up: IntGaugeVec,
    crd_missing: IntGaugeVec,
    endpoints_skipped: IntCounterVec,
    watch_errors: IntCounterVec,
    cluster_expired: IntGaugeVec,
    fail_static: IntGauge,
    annotation_errors: IntCounterVec,
}

impl KubeMetrics {
    fn new(registry: &Registry) -> Self {
        let gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
            let _ = registry.register(Box::new(g.clone()));
            g
        };
        let watch_errors = IntCounterVec::new(
            Opts::new(
                "fedns_kube_watch_errors_total",
                "Failed lists and watches per cluster and resource",
            ),
            &["cluster", "resource"],
        )
        .expect("valid metric");
        let _ = registry.register(Box::new(watch_errors.clone()));
        let fail_static = IntGauge::new(
            "fedns_kube_fail_static_names",
            "Names served from clusters out of sync for longer than stale_grace, because nothing else is left",
        )
        .expect("valid metric");
        let _ = registry.register(Box::new(fail_static.clone()));
        let annotation_errors = IntCounterVec::new(
            Opts::new(
                "fedns_annotation_errors_total",
                "Bad fedns.io/* annotation values seen on federated Services, once per change of value",
            ),
            &["annotation"],
        )
        .expect("valid metric");
        let _ = registry.register(Box::new(annotation_errors.clone()));
        let endpoints_skipped = IntCounterVec::new(
            Opts::new(
                "fedns_kube_dns_endpoints_skipped_total",
                "DNSEndpoint endpoints left out (bad name, type or target), per object change",
            ),
            &["cluster"],
        )
        .expect("valid metric");
        let _ = registry.register(Box::new(endpoints_skipped.clone()));
        KubeMetrics {
            crd_missing: gauge_vec(
                "fedns_kube_crd_missing",
                "1 when an enabled custom resource (DNSEndpoint, Gateway, HTTPRoute, ServiceImport) is not installed in the cluster",
                &["cluster", "resource"],
            ),
            endpoints_skipped,
            cluster_up: gauge_vec(
                "fedns_cluster_up",
                "1 when every watch of the cluster is listed and working, else 0",
                &["cluster"],
            ),
            cluster_expired: gauge_vec(
                "fedns_cluster_stale_expired",
                "1 when the cluster has been out of sync for longer than stale_grace",
                &["cluster"],
            ),
            watch_errors,
            fail_static,
            annotation_errors,
        }
    }

    fn forget(&self, cluster: &str) {
        let _ = self.cluster_up.remove_label_values(&[cluster]);
        let _ = self.cluster_expired.remove_label_values(&[cluster]);
        for k in Kind::ALL {
            let _ = self
                .watch_errors
                .remove_label_values(&[cluster, k.resource()]);
            let _ = self
                .crd_missing
                .remove_label_values(&[cluster, k.resource()]);
        }
        let _ = self.endpoints_skipped.remove_label_values(&[cluster]);
    }
}

/// A cluster's watch task, aborted when dropped (the cluster removed, or its client replaced).
struct Task(tokio::task::JoinHandle<()>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One cluster as the source runs it.
struct Running {
    spec: ClusterSpec,
    run: u64,
    task: Task,
    /// What the running client was built from ([`access_identity`]).
    identity: Option<u64>,
    /// The kubeconfig file as last seen by the poll (of the wanted access: `next`'s if any).
    kc_seen: Fingerprint,
    /// A client being built from changed connection settings: it lists into its own state,
    /// and replaces the running client only once every kind is listed (no gap).
    next: Option<Next>,
    state: ClusterState,
    /// The problem last logged and shown, to log once per change.
    shown: Option<String>,
    expired: bool,
    up: bool,
    /// `/readyz` shows the cluster in sync: only once a table holding its current data is
    /// published, so a probe that passes can be sent queries that the cluster answers.
    ready_shown: bool,
    /// The snapshot whose publication makes the cluster ready (assigned at the flush after it
    /// came up).
    ready_at: Option<u64>,
}

/// The replacement client of a cluster, until its lists are complete.
struct Next {
    spec: ClusterSpec,
    run: u64,
    task: Task,
    identity: Option<u64>,
    state: ClusterState,
    /// Its problem last logged, to log once per change.
    shown: Option<String>,
}

/// What a client built from `access` connects with: a hash of the kubeconfig's resolved
/// context, cluster and user (server, CA, token, certificates, exec plugin), so a rotated token
/// or a context pointing elsewhere is noticed while edits to other contexts are not. `None` when
/// the file cannot be read as a kubeconfig (the running client is kept until it can), and for
/// in-cluster access (kube re-reads the service-account token file itself).
fn access_identity(access: &Access) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let Access::Kubeconfig { path, context } = access else {
        return None;
    };
    let kc = kube::config::Kubeconfig::read_from(path).ok()?;
    let name = context.clone().or(kc.current_context.clone())?;
    let ctx = kc.contexts.iter().find(|c| c.name == name)?;
    let inner = ctx.context.as_ref()?;
    let cluster = kc.clusters.iter().find(|c| c.name == inner.cluster);
    let user = inner
        .user
        .as_ref()
        .and_then(|u| kc.auth_infos.iter().find(|a| &a.name == u));
    let text = serde_json::to_string(&(ctx, cluster, user)).ok()?;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut h);
    Some(h.finish())
}

fn kubeconfig_fingerprint(access: &Access) -> Fingerprint {
    match access {
        Access::Kubeconfig { path, .. } => fingerprint(path),
        Access::InCluster => None,
    }
}

struct KubeSource {
    settings: KubeSettings,
    clusters: BTreeMap<String, Running>,
    next_run: u64,
    /// At start, until then snapshots wait for members still on their first list (see `flush`);
    /// set when the first member has listed.
    gather_until: Option<Instant>,
    tx: mpsc::Sender<Msg>,
    resolve_tx: mpsc::Sender<(String, Option<Vec<IpAddr>>)>,
    resolved: HashMap<String, Vec<IpAddr>>,
    resolving: HashSet<String>,
    last_sent: Option<Federation>,
    /// `DNSEndpoint` conflicts of the last snapshot, to log each once.
    endpoint_conflicts: HashSet<String>,
    /// The last snapshot's services, recomputed only where objects changed.
    assembler: state::Assembler,
    /// Number of the last snapshot sent, and of the last one known to be in a published table.
    sent_seq: u64,
    published_seq: u64,
    published_tx: mpsc::Sender<u64>,
    dirty_since: Option<Instant>,
    merger: mpsc::Sender<Update>,
    board: SourceBoard,
    metrics: Metrics,
    km: KubeMetrics,
}

/// Where a source sends what it learns: cluster watches, hostname lookups, publications.
struct Channels {
    tx: mpsc::Sender<Msg>,
    resolve_tx: mpsc::Sender<(String, Option<Vec<IpAddr>>)>,
    published_tx: mpsc::Sender<u64>,
}

impl KubeSource {
    /// A source with no cluster started yet.
    fn new(
        settings: KubeSettings,
        channels: Channels,
        merger: mpsc::Sender<Update>,
        board: SourceBoard,
        metrics: Metrics,
    ) -> Self {
        KubeSource {
            settings,
            clusters: BTreeMap::new(),
            next_run: 0,
            gather_until: None,
            tx: channels.tx,
            resolve_tx: channels.resolve_tx,
            resolved: HashMap::new(),
            resolving: HashSet::new(),
            last_sent: None,
            endpoint_conflicts: HashSet::new(),
            assembler: Default::default(),
            sent_seq: 0,
            published_seq: 0,
            published_tx: channels.published_tx,
            dirty_since: None,
            merger,
            board,
            km: KubeMetrics::new(&metrics.registry),
            metrics,
        }
    }

    /// Starts the watch task of a new run of `spec`'s cluster.
    fn spawn_run(&mut self, spec: &ClusterSpec) -> (u64, Task) {
        self.next_run += 1;
        let run = self.next_run;
        let task = tokio::spawn(watch::run_cluster(
            spec.clone(),
            self.settings.select.clone(),
            run,
            self.tx.clone(),
        ));
        (run, Task(task))
    }

    fn start(&mut self, spec: ClusterSpec) {
        let name = spec.name.clone();
        self.board.register_until(
            &board_name(&name),
            std::time::Instant::now() + self.settings.sync_timeout,
        );
        self.km.cluster_up.with_label_values(&[&name]).set(0);
        self.km.cluster_expired.with_label_values(&[&name]).set(0);
        let watched = |k: &Kind| spec.watches(*k);
        for k in Kind::ALL.iter().filter(|k| watched(k)) {
            // At 0 from the start, so the first error shows in rate() and increase().
            self.km
                .watch_errors
                .with_label_values(&[name.as_str(), k.resource()]);
        }
        let identity = access_identity(&spec.access);
        let kc_seen = kubeconfig_fingerprint(&spec.access);
        let (run, task) = self.spawn_run(&spec);
        tracing::info!(cluster = %name, "watching cluster {name}");
        let state = ClusterState::for_spec(&spec);
        self.clusters.insert(
            name,
            Running {
                spec,
                run,
                task,
                identity,
                kc_seen,
                next: None,
                state,
                shown: None,
                expired: false,
                up: false,
                ready_shown: false,
                ready_at: None,
            },
        );
    }

    fn stop(&mut self, name: &str) {
        if self.clusters.remove(name).is_some() {
            tracing::info!(cluster = %name, "cluster {name} removed from the config; its shards are dropped");
            self.board.remove(&board_name(name));
            let _ = self
                .metrics
                .source_up
                .remove_label_values(&[&board_name(name)]);
            self.km.forget(name);
            self.mark_dirty();
        }
    }

    fn mark_dirty(&mut self) {
        self.dirty_since.get_or_insert_with(Instant::now);
    }

    /// Moves to a new config: clusters added, removed, or given a new client when how to reach
    /// them (or which Services are selected) changed; the new client replaces the running one
    /// only once it has listed everything (see [`KubeSource::replace`]). Overrides (region,
    /// zones, weight) apply at once.
    fn apply_settings(&mut self, new: KubeSettings) {
        let reselect = new.select != self.settings.select;
        // The new selection must be what replacement clients are started with.
        self.settings = new;
        let wanted: HashMap<String, ClusterSpec> = self
            .settings
            .clusters
            .iter()
            .map(|c| (c.name.clone(), c.clone()))
            .collect();
        let names: Vec<String> = self.clusters.keys().cloned().collect();
        for name in names {
            let Some(spec) = wanted.get(&name) else {
                self.stop(&name);
                continue;
            };
            let r = self.clusters.get_mut(&name).expect("running");
            // Other custom resources to watch need another watch task, like another access.
            let same = |a: &ClusterSpec| {
                a.access == spec.access
                    && (a.dns_endpoints, a.gateway_api, a.service_imports)
                        == (spec.dns_endpoints, spec.gateway_api, spec.service_imports)
            };
            let same_as_running = same(&r.spec);
            let same_as_next = r.next.as_ref().is_some_and(|n| same(&n.spec));
            // Overrides apply to the data served now.
            r.spec = ClusterSpec {
                access: r.spec.access.clone(),
                dns_endpoints: r.spec.dns_endpoints,
                gateway_api: r.spec.gateway_api,
                service_imports: r.spec.service_imports,
                ..spec.clone()
            };
            if reselect {
                let id = access_identity(&spec.access);
                self.replace(&name, spec.clone(), id);
            } else if same_as_running {
                if r.next.take().is_some() {
                    tracing::info!(cluster = %name, "cluster {name}: connection settings changed back; keeping the running client");
                    r.kc_seen = kubeconfig_fingerprint(&r.spec.access);
                }
            } else if same_as_next {
                if let Some(n) = r.next.as_mut() {
                    n.spec = spec.clone();
                }
            } else {
                let id = access_identity(&spec.access);
                self.replace(&name, spec.clone(), id);
            }
        }
        for spec in self.settings.clusters.clone() {
            if !self.clusters.contains_key(&spec.name) {
                self.start(spec);
            }
        }
        self.mark_dirty();
    }

    /// Gives a cluster a new client built from `spec`. A cluster with data keeps serving it
    /// (shards, `/readyz`, `fedns_cluster_up`) while the new client lists into a state of its
    /// own, which replaces the running one once every kind is listed ([`KubeSource::promote`]);
    /// a cluster with nothing listed yet starts over at once.
    fn replace(&mut self, name: &str, spec: ClusterSpec, identity: Option<u64>) {
        let Some(complete) = self.clusters.get(name).map(|r| r.state.complete()) else {
            return;
        };
        let (run, task) = self.spawn_run(&spec);
        let kc_seen = kubeconfig_fingerprint(&spec.access);
        let r = self.clusters.get_mut(name).expect("running");
        r.kc_seen = kc_seen;
        if complete {
            tracing::info!(cluster = %name, "cluster {name}: connection settings changed; listing through the new client, serving the current data until it has");
            r.next = Some(Next {
                state: ClusterState::for_spec(&spec),
                spec,
                run,
                task,
                identity,
                shown: None,
            });
            return;
        }
        tracing::info!(cluster = %name, "cluster {name}: connection settings changed; starting over with the new client");
        r.spec = spec;
        r.run = run;
        r.task = task; // the old task is aborted
        r.identity = identity;
        r.next = None;
        r.state = ClusterState::for_spec(&r.spec);
        r.shown = None;
        self.update_status(name);
        self.mark_dirty();
    }

    /// A message of a cluster's replacement client: kept in its own state, which takes over
    /// once complete. Until then its problems are logged, not shown as the cluster's.
    fn handle_next(&mut self, name: &str, body: ClusterMsg) {
        let Some(n) = self.clusters.get_mut(name).and_then(|r| r.next.as_mut()) else {
            return;
        };
        match body {
            ClusterMsg::Change(c) => {
                if let KindChange::Services(sc) = &c {
                    report_annotations(name, &n.state.services, sc, &self.km);
                }
                apply_change(&mut n.state, c);
            }
            ClusterMsg::Missing(kind) => {
                n.state.crd_missing(kind);
            }
            ClusterMsg::Status {
                kind,
                error,
                expected,
            } => {
                if !expected {
                    n.state.errors[kind.index()] = error;
                }
            }
            ClusterMsg::Client(e) => n.state.client_error = e,
        }
        if n.state.complete() {
            self.promote(name);
            return;
        }
        let failing = n.state.client_error.is_some() || n.state.errors.iter().any(Option::is_some);
        let problem = failing.then(|| n.state.problem()).flatten();
        if problem != n.shown {
            if let Some(p) = &problem {
                tracing::warn!(cluster = %name, "cluster {name}: the new connection settings do not work yet: {p}; still serving through the previous client");
            }
            n.shown = problem;
        }
    }

    /// The replacement client has listed every kind: its state replaces the running one's (the
    /// old task is aborted), and the next snapshot is assembled from it.
    fn promote(&mut self, name: &str) {
        let Some(r) = self.clusters.get_mut(name) else {
            return;
        };
        let Some(n) = r.next.take() else {
            return;
        };
        tracing::info!(cluster = %name, "cluster {name}: the new client has listed everything; serving its data");
        r.spec = n.spec;
        r.run = n.run;
        r.task = n.task;
        r.identity = n.identity;
        r.state = n.state;
        // The new client may watch other custom resources, or find other CRDs missing.
        for k in Kind::ALL.into_iter().filter(|k| k.is_custom()) {
            let watched = r.spec.watches(k);
            let labels = [name, k.resource()];
            if watched && r.state.missing[k.index()] {
                self.km.crd_missing.with_label_values(&labels).set(1);
            } else {
                let _ = self.km.crd_missing.remove_label_values(&labels);
            }
        }
        self.note_missing(name);
        self.update_status(name);
        self.mark_dirty();
    }

    /// Polls each cluster's kubeconfig file: when what its client connects with changed (a
    /// rotated token, a context pointing elsewhere, a new CA), a new client replaces it. `force`
    /// (SIGHUP) reads every file whether or not its metadata changed.
    fn check_kubeconfigs(&mut self, force: bool) {
        let names: Vec<String> = self.clusters.keys().cloned().collect();
        for name in names {
            let r = self.clusters.get_mut(&name).expect("running");
            let (spec, current) = match &r.next {
                Some(n) => (n.spec.clone(), n.identity),
                None => (r.spec.clone(), r.identity),
            };
            let seen = kubeconfig_fingerprint(&spec.access);
            if seen == r.kc_seen && !force {
                continue;
            }
            r.kc_seen = seen;
            let Some(id) = access_identity(&spec.access) else {
                continue; // unreadable for now: keep the running client
            };
            if Some(id) != current {
                tracing::info!(cluster = %name, "cluster {name}: its kubeconfig changed (server, credentials or context)");
                self.replace(&name, spec, Some(id));
            }
        }
    }

    fn handle(&mut self, msg: Msg) {
        let Some(r) = self.clusters.get_mut(&*msg.cluster) else {
            return;
        };
        if r.run != msg.run {
            if r.next.as_ref().is_some_and(|n| n.run == msg.run) {
                self.handle_next(&msg.cluster, msg.body);
            }
            return; // else from a run that was replaced
        }
        let was_missing = r.state.missing;
        let changed = match msg.body {
            ClusterMsg::Change(c) => {
                if let KindChange::DnsEndpoints(
                    Change::InitApply(k, Some(e)) | Change::Apply(k, Some(e)),
                ) = &c
                {
                    for why in &e.skipped {
                        tracing::warn!(cluster = %msg.cluster, resource = Kind::DnsEndpoints.resource(), "cluster {}: DNSEndpoint {}/{}: {why}; that endpoint is skipped", msg.cluster, k.0, k.1);
                        self.km
                            .endpoints_skipped
                            .with_label_values(&[&msg.cluster])
                            .inc();
                    }
                }
                if let Some(kind) = c.served_custom().filter(|k| r.state.missing[k.index()]) {
                    r.state.missing[kind.index()] = false;
                    self.km
                        .crd_missing
                        .with_label_values(&[&msg.cluster, kind.resource()])
                        .set(0);
                    tracing::info!(cluster = %msg.cluster, resource = kind.resource(), "cluster {}: {} is installed now", msg.cluster, kind.resource());
                }
                if let KindChange::Services(sc) = &c {
                    report_annotations(&msg.cluster, &r.state.services, sc, &self.km);
                }
                apply_change(&mut r.state, c)
            }
            ClusterMsg::Missing(kind) => {
                if !r.state.missing[kind.index()] {
                    tracing::warn!(cluster = %msg.cluster, resource = kind.resource(), "cluster {}: {} is not installed (the API server answers 404: no CRD); serving none, checking again every {} s", msg.cluster, kind.resource(), watch::CRD_RECHECK.as_secs());
                    self.km
                        .crd_missing
                        .with_label_values(&[&msg.cluster, kind.resource()])
                        .set(1);
                }
                // A failing watch of the kind is over: the server answered.
                r.state.errors[kind.index()] = None;
                r.state.crd_missing(kind)
            }
            ClusterMsg::Status {
                kind,
                error,
                expected,
            } => {
                if expected {
                    tracing::info!(cluster = %msg.cluster, resource = kind.resource(), "cluster {}: {}", msg.cluster, error.unwrap_or_default());
                } else {
                    if error.is_some() {
                        self.km
                            .watch_errors
                            .with_label_values(&[&msg.cluster, kind.resource()])
                            .inc();
                    }
                    // One line per change of a watch's state, not one per retry.
                    let before = &r.state.errors[kind.index()];
                    match (&error, before) {
                        (Some(e), b) if b.as_ref() != Some(e) => {
                            let serving = if r.state.complete() {
                                format!(
                                    "; serving its last known shards for up to {} s",
                                    self.settings.stale_grace.as_secs()
                                )
                            } else {
                                String::new()
                            };
                            tracing::warn!(cluster = %msg.cluster, resource = kind.resource(), "cluster {}: {e}{serving}", msg.cluster);
                        }
                        (None, Some(_)) => {
                            tracing::info!(cluster = %msg.cluster, resource = kind.resource(), "cluster {}: {} works again", msg.cluster, kind.resource());
                        }
                        _ => {}
                    }
                    r.state.errors[kind.index()] = error;
                }
                false
            }
            ClusterMsg::Client(e) => {
                r.state.client_error = e;
                false
            }
        };
        if self.clusters.get(&*msg.cluster).map(|r| r.state.missing) != Some(was_missing) {
            self.note_missing(&msg.cluster);
        }
        self.update_status(&msg.cluster);
        if changed {
            self.mark_dirty();
        }
    }

    /// Names on `/readyz` the custom resources a cluster does not have installed.
    fn note_missing(&self, name: &str) {
        let Some(r) = self.clusters.get(name) else {
            return;
        };
        let missing: Vec<&str> = Kind::ALL
            .iter()
            .filter(|k| r.state.missing[k.index()])
            .map(|k| k.resource())
            .collect();
        let note = (!missing.is_empty())
            .then(|| format!("not installed, serving none: {}", missing.join(", ")));
        self.board.note(&board_name(name), note);
    }

    /// Reconciles a cluster's up/down state with logs, metrics and the board.
    fn update_status(&mut self, name: &str) {
        let Some(r) = self.clusters.get_mut(name) else {
            return;
        };
        let bname = board_name(name);
        let failing = r.state.client_error.is_some() || r.state.errors.iter().any(Option::is_some);
        if r.state.up() {
            if !r.up {
                tracing::info!(cluster = %name, "cluster {name}: in sync");
                r.up = true;
                r.state.down_since = None;
                r.shown = None;
                r.expired = false;
                r.ready_at = None;
                self.km.cluster_up.with_label_values(&[name]).set(1);
                self.km.cluster_expired.with_label_values(&[name]).set(0);
                self.dirty_since.get_or_insert_with(Instant::now);
            }
            return;
        }
        r.up = false;
        r.ready_shown = false;
        r.ready_at = None;
        self.km.cluster_up.with_label_values(&[name]).set(0);
        if !failing {
            return; // still listing for the first time
        }
        if r.state.down_since.is_none() {
            r.state.down_since = Some(Instant::now());
        }
        let problem = r.state.problem();
        if problem != r.shown {
            if let Some(p) = &problem {
                if r.state.client_error.is_some() && r.shown.as_ref() != Some(p) {
                    tracing::warn!(cluster = %name, "cluster {name}: {p}");
                }
                self.board.failed(&bname, format!("cluster {name}: {p}"));
                self.metrics.source_up.with_label_values(&[&bname]).set(0);
                self.metrics
                    .source_errors
                    .with_label_values(&[&bname])
                    .inc();
            }
            r.shown = problem;
        }
    }

    /// When the next cluster passes its stale grace (and the snapshot must change).
    fn next_expiry(&self) -> Option<Instant> {
        self.clusters
            .values()
            .filter(|r| !r.expired && r.state.complete())
            .filter_map(|r| r.state.down_since)
            .map(|t| t + self.settings.stale_grace)
            .min()
    }

    async fn flush(&mut self) -> bool {
        self.dirty_since = None;
        let now = Instant::now();
        // At start, a snapshot of the members listed so far would be laid out, and laid out again
        // as each further member arrives (every service's selection depends on the clusters):
        // wait, briefly, for the members still on their first list and not failing, so the
        // first federation served is the whole one and is built once.
        let listing = self.clusters.values().any(|r| {
            !r.state.complete()
                && r.state.client_error.is_none()
                && r.state.errors.iter().all(Option::is_none)
        });
        if listing && self.clusters.values().any(|r| r.state.complete()) {
            let until = *self.gather_until.get_or_insert(now + FIRST_LIST_GATHER);
            if now < until {
                self.dirty_since = Some(now);
                return true;
            }
        }
        let grace = self.settings.stale_grace;
        for (name, r) in self.clusters.iter_mut() {
            let expired = state::freshness(&r.state, now, grace) == Freshness::Expired;
            if expired && !r.expired {
                tracing::warn!(cluster = %name, "cluster {name}: out of sync for longer than stale_grace ({} s); its shards are dropped where other clusters can answer", grace.as_secs());
            }
            r.expired = expired;
            self.km
                .cluster_expired
                .with_label_values(&[name])
                .set(expired as i64);
        }
        // Services whose objects changed in any cluster (`None`: a re-list, anything may have).
        let mut touched = Some(std::collections::BTreeSet::new());
        for r in self.clusters.values_mut() {
            for t in [
                r.state.services.take_touched(),
                r.state.slices.take_touched(),
                r.state.imports.take_touched(),
            ] {
                match (&mut touched, t) {
                    (Some(all), Some(t)) => all.extend(t),
                    _ => touched = None,
                }
            }
        }
        // Load-balancer hostnames that may be new: those of the touched services (all after a
        // re-list) and of every Ingress (few).
        let candidates = self.hostnames(touched.as_ref());
        let views: Vec<(&ClusterSpec, &ClusterState)> = self
            .clusters
            .values()
            .map(|r| (&r.spec, &r.state))
            .collect();
        let (fed, stats) =
            self.assembler
                .assemble(&self.settings, &views, &self.resolved, now, touched);
        self.km.fail_static.set(stats.fail_static_names as i64);
        let conflicts: HashSet<String> = stats.endpoint_conflicts.into_iter().collect();
        for c in conflicts.difference(&self.endpoint_conflicts) {
            tracing::warn!("DNSEndpoint {c}");
        }
        self.endpoint_conflicts = conflicts;
        // Hostnames not resolved yet: resolve them now rather than at the next tick.
        let new_hosts: Vec<String> = candidates
            .into_iter()
            .filter(|h| !self.resolved.contains_key(h) && !self.resolving.contains(h))
            .collect();
        for h in new_hosts {
            self.resolve(h);
        }
        if self.last_sent.as_ref() == Some(&fed) {
            // Nothing new to serve: clusters that came up are ready once the last snapshot is.
            let seq = self.sent_seq;
            self.await_publish(seq);
            return true;
        }
        tracing::info!(
            services = fed.services.len(),
            ingress_hosts = fed.ingress_hosts.len(),
            dns_endpoint_names = fed.endpoints.len(),
            clusters = fed.clusters.len(),
            assembled_ms = now.elapsed().as_millis() as u64,
            "kubernetes snapshot"
        );
        self.last_sent = Some(fed.clone());
        self.sent_seq += 1;
        let seq = self.sent_seq;
        let (taken, published) = tokio::sync::oneshot::channel();
        let update = Update {
            taken: Some(taken),
            source: SOURCE.to_string(),
            snapshot: Arc::new(Snapshot::Federation(Box::new(fed))),
        };
        if self.merger.send(update).await.is_err() {
            return false;
        }
        // The merger drops `taken` once a table with this snapshot is published.
        let tx = self.published_tx.clone();
        tokio::spawn(async move {
            let _ = published.await;
            let _ = tx.send(seq).await;
        });
        self.await_publish(seq);
        true
    }

    /// Clusters up but not yet shown ready wait for snapshot `seq` (which holds their data).
    fn await_publish(&mut self, seq: u64) {
        for r in self.clusters.values_mut() {
            if r.up && !r.ready_shown && r.ready_at.is_none() {
                r.ready_at = Some(seq);
            }
        }
        self.published(self.published_seq);
    }

    /// Snapshot `seq` (and so every earlier one) is in a published table.
    fn published(&mut self, seq: u64) {
        self.published_seq = self.published_seq.max(seq);
        for (name, r) in self.clusters.iter_mut() {
            if r.up && !r.ready_shown && r.ready_at.is_some_and(|s| s <= self.published_seq) {
                r.ready_shown = true;
                let bname = board_name(name);
                self.board.loaded(&bname);
                self.metrics.source_up.with_label_values(&[&bname]).set(1);
            }
        }
    }

    /// Load-balancer hostnames of the given services (`None`: of all) and of every Ingress.
    fn hostnames(
        &self,
        services: Option<&std::collections::BTreeSet<state::Key>>,
    ) -> HashSet<String> {
        let mut out = HashSet::new();
        for r in self.clusters.values() {
            let live = &r.state.services.live;
            match services {
                None => live
                    .values()
                    .for_each(|s| out.extend(s.lb_hosts.iter().cloned())),
                Some(keys) => keys
                    .iter()
                    .filter_map(|k| live.get(k))
                    .for_each(|s| out.extend(s.lb_hosts.iter().cloned())),
            }
            for i in r.state.ingresses.live.values() {
                out.extend(i.lb_hosts.iter().cloned());
            }
            for g in r.state.gateways.live.values() {
                out.extend(g.lb_hosts.iter().cloned());
            }
        }
        out
    }

    fn resolve(&mut self, host: String) {
        if !self.resolving.insert(host.clone()) {
            return;
        }
        let tx = self.resolve_tx.clone();
        tokio::spawn(async move {
            let ips = super::resolve::lookup(&host, "kubernetes").await;
            let _ = tx.send((host, ips)).await;
        });
    }

    fn resolved(&mut self, host: String, ips: Option<Vec<IpAddr>>) {
        self.resolving.remove(&host);
        if let Some(ips) = ips
            && self.resolved.get(&host) != Some(&ips)
        {
            self.resolved.insert(host, ips);
            self.mark_dirty();
        }
    }

    fn refresh_hostnames(&mut self) {
        let wanted = self.hostnames(None);
        self.resolved.retain(|h, _| wanted.contains(h));
        for h in wanted {
            self.resolve(h);
        }
    }
}

type Fingerprint = Option<(SystemTime, u64, u64)>;

fn fingerprint(path: &Path) -> Fingerprint {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| {
        (
            m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            m.len(),
            m.ino(),
        )
    })
}

/// Runs the source until the merger goes away. Its section follows `config`, the config in
/// effect (the reloader stores only versions it accepted, so a rejected one changes no
/// cluster); kubeconfig files are checked every `poll` and on every SIGHUP (`reload`).
pub async fn run(
    settings: KubeSettings,
    mut config: tokio_watch::Receiver<crate::config::Config>,
    poll: Duration,
    merger: mpsc::Sender<Update>,
    board: SourceBoard,
    metrics: Metrics,
    mut reload: tokio_watch::Receiver<u64>,
) {
    let (tx, mut rx) = mpsc::channel::<Msg>(4096);
    let (resolve_tx, mut resolve_rx) = mpsc::channel(256);
    let (published_tx, mut published_rx) = mpsc::channel(64);
    let resolve_every = settings.resolve_interval;
    let channels = Channels {
        tx,
        resolve_tx,
        published_tx,
    };
    let mut src = KubeSource::new(settings.clone(), channels, merger, board, metrics);
    for spec in settings.clusters {
        src.start(spec);
    }
    let mut resolve_tick = tokio::time::interval(resolve_every);
    resolve_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut reload_open, mut config_open) = (true, true);
    // An interval, not a sleep re-armed each pass: a busy cluster must not starve the poll.
    let mut poll_tick = tokio::time::interval(poll);
    poll_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let flush_at = src.dirty_since.map(|t| t + src.settings.coalesce);
        let expiry = src.next_expiry();
        let until = |t: Option<Instant>| async move {
            match t {
                Some(t) => tokio::time::sleep_until(t.into()).await,
                None => std::future::pending().await,
            }
        };
        let mut reread = None;
        tokio::select! {
            Some(msg) = rx.recv() => {
                src.handle(msg);
                // Drain what is already queued so a burst costs one pass.
                while let Ok(more) = rx.try_recv() {
                    src.handle(more);
                }
            }
            Some((host, ips)) = resolve_rx.recv() => src.resolved(host, ips),
            Some(seq) = published_rx.recv() => src.published(seq),
            _ = until(flush_at) => {
                if !src.flush().await {
                    return; // merger gone: shutting down
                }
            }
            _ = until(expiry) => src.mark_dirty(),
            _ = resolve_tick.tick() => src.refresh_hostnames(),
            _ = poll_tick.tick() => src.check_kubeconfigs(false),
            r = reload.changed(), if reload_open => {
                reload_open = r.is_ok();
                if reload_open {
                    src.check_kubeconfigs(true);
                }
            }
            r = config.changed(), if config_open => {
                config_open = r.is_ok();
                if config_open {
                    reread = Some(config.borrow_and_update().kubernetes.clone());
                }
            }
        }
        if let Some(section) = reread {
            let new = section.unwrap_or_else(|| KubeSettings {
                clusters: vec![],
                ..src.settings.clone()
            });
            if new != src.settings {
                tracing::info!(clusters = new.clusters.len(), "kubernetes config changed");
                src.apply_settings(new);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::kubernetes::state::Change;

    fn listed() -> ClusterState {
        let mut s = ClusterState::default();
        s.services.apply(Change::Init);
        s.services.apply(Change::InitDone);
        s.slices.apply(Change::Init);
        s.slices.apply(Change::InitDone);
        s.ingresses.apply(Change::Init);
        s.ingresses.apply(Change::InitDone);
        s.nodes.apply(Change::Init);
        s.nodes.apply(Change::InitDone);
        s
    }

    /// A source for `clusters` with no task started, and the receiving ends of its channels.
    struct Harness {
        src: KubeSource,
        merger_rx: mpsc::Receiver<Update>,
        published_rx: mpsc::Receiver<u64>,
        _rx: mpsc::Receiver<Msg>,
        _resolve_rx: mpsc::Receiver<(String, Option<Vec<IpAddr>>)>,
    }

    fn harness(clusters: Vec<ClusterSpec>) -> Harness {
        let (merger, merger_rx) = mpsc::channel(4);
        let (tx, _rx) = mpsc::channel(4);
        let (resolve_tx, _resolve_rx) = mpsc::channel(4);
        let (published_tx, published_rx) = mpsc::channel(4);
        let settings = KubeSettings {
            coalesce: Duration::from_millis(1),
            clusters,
            ..state::tests::settings(30)
        };
        let channels = Channels {
            tx,
            resolve_tx,
            published_tx,
        };
        let src = KubeSource::new(
            settings,
            channels,
            merger,
            SourceBoard::default(),
            Metrics::new(),
        );
        Harness {
            src,
            merger_rx,
            published_rx,
            _rx,
            _resolve_rx,
        }
    }

    /// A member as the source runs it, with `state` and a task that never ends.
    fn running(spec: ClusterSpec, state: ClusterState) -> Running {
        Running {
            spec,
            run: 1,
            task: Task(tokio::spawn(std::future::pending())),
            identity: None,
            kc_seen: None,
            next: None,
            state,
            shown: None,
            expired: false,
            up: false,
            ready_shown: false,
            ready_at: None,
        }
    }

    /// A CRD that is not installed makes its kind count as listed (the cluster comes up), is
    /// noted once across the re-checks (whose `Init` comes before their 404), and is cleared
    /// only by a list that the API server answers.
    #[tokio::test]
    async fn a_missing_crd_is_noted_once_and_cleared_by_a_served_list() {
        let mut spec = state::tests::spec("c1");
        spec.dns_endpoints = true;
        let Harness { mut src, .. } = harness(vec![spec.clone()]);
        let mut st = listed();
        st.dns_endpoints = state::Store::default();
        src.clusters.insert("c1".into(), running(spec, st));
        src.board.register("kubernetes:c1");
        src.update_status("c1");
        assert!(!src.clusters["c1"].up, "waits for DNSEndpoints");
        let msg = |body| Msg {
            cluster: "c1".into(),
            run: 1,
            body,
        };
        let gauge = |src: &KubeSource| {
            src.km
                .crd_missing
                .with_label_values(&["c1", Kind::DnsEndpoints.resource()])
                .get()
        };
        let note = |src: &KubeSource| src.board.snapshot()["kubernetes:c1"].note.clone();
        src.handle(msg(ClusterMsg::Missing(Kind::DnsEndpoints)));
        assert!(src.clusters["c1"].up, "up without the CRD");
        assert_eq!(gauge(&src), 1);
        assert!(
            note(&src).is_some_and(|n| n.contains("dnsendpoints.externaldns.k8s.io")),
            "{:?}",
            note(&src)
        );
        // A re-check: Init, then 404 again.
        src.handle(msg(ClusterMsg::Change(KindChange::DnsEndpoints(
            Change::Init,
        ))));
        assert!(src.clusters["c1"].state.missing[Kind::DnsEndpoints.index()]);
        src.handle(msg(ClusterMsg::Missing(Kind::DnsEndpoints)));
        assert_eq!(gauge(&src), 1);
        // Installed: the list comes in.
        src.handle(msg(ClusterMsg::Change(KindChange::DnsEndpoints(
            Change::Init,
        ))));
        src.handle(msg(ClusterMsg::Change(KindChange::DnsEndpoints(
            Change::InitDone,
        ))));
        assert!(!src.clusters["c1"].state.missing[Kind::DnsEndpoints.index()]);
        assert_eq!(gauge(&src), 0);
        assert_eq!(note(&src), None);
        assert!(src.clusters["c1"].up);
    }

    /// A cluster whose lists are in is not ready on the board until the merger has published
    /// the snapshot holding it (it drops `Update::taken` then).
    #[tokio::test]
    async fn cluster_ready_only_after_its_snapshot_is_published() {
        let spec = state::tests::spec("c1");
        let Harness {
            mut src,
            mut merger_rx,
            mut published_rx,
            ..
        } = harness(vec![spec.clone()]);
        src.clusters.insert("c1".into(), running(spec, listed()));
        let loaded = |src: &KubeSource| src.board.snapshot()["kubernetes:c1"].loaded;
        src.board.register("kubernetes:c1");
        src.update_status("c1");
        assert!(src.flush().await);
        assert!(!loaded(&src), "ready before the merger took the snapshot");
        let update = merger_rx.recv().await.expect("a snapshot");
        assert!(!loaded(&src), "ready before the table was published");
        drop(update); // the merger published it
        let seq = published_rx.recv().await.expect("publication noticed");
        src.published(seq);
        assert!(loaded(&src));
    }

    /// At start, a snapshot waits for members still on their first list (so a large federation
    /// is laid out once), but no longer than the gather window after the first member listed.
    #[tokio::test]
    async fn first_snapshot_waits_briefly_for_members_still_listing() {
        let (a, b) = (state::tests::spec("a"), state::tests::spec("b"));
        let Harness {
            mut src,
            mut merger_rx,
            ..
        } = harness(vec![a.clone(), b.clone()]);
        src.clusters.insert("a".into(), running(a, listed()));
        src.clusters
            .insert("b".into(), running(b, ClusterState::default()));
        assert!(src.flush().await);
        assert!(merger_rx.try_recv().is_err(), "sent before b's first list");
        assert!(src.dirty_since.is_some(), "the flush must be retried");
        // b fails instead of listing: nothing to wait for.
        src.clusters.get_mut("b").unwrap().state.client_error = Some("unreachable".into());
        assert!(src.flush().await);
        assert!(
            merger_rx.try_recv().is_ok(),
            "a failing member is not waited for"
        );
        // A member still listing past the window does not hold snapshots back either.
        src.clusters.get_mut("b").unwrap().state.client_error = None;
        src.clusters
            .get_mut("a")
            .unwrap()
            .state
            .services
            .apply(Change::Apply(
                ("shop".into(), "web".into()),
                Some(state::SlimService {
                    cluster_ips: vec![].into(),
                    settings: Default::default(),
                    ports: vec![].into(),
                    lb_ips: vec!["10.0.0.1".parse().unwrap()].into(),
                    lb_hosts: vec![].into(),
                }),
            ));
        src.gather_until = Some(Instant::now() - Duration::from_millis(1));
        assert!(src.flush().await);
        assert!(merger_rx.try_recv().is_ok(), "held past the gather window");
    }

    /// A cluster given new connection settings keeps serving its data while the new client
    /// lists into a state of its own, which takes over only once all four kinds are listed;
    /// the old run's messages are ignored from then on.
    #[tokio::test]
    async fn a_replacement_client_takes_over_only_once_it_has_listed() {
        let spec = state::tests::spec("c1");
        let Harness { mut src, .. } = harness(vec![spec.clone()]);
        let mut old = listed();
        let web: state::Key = ("shop".into(), "web".into());
        let svc = |ip: &str| state::SlimService {
            cluster_ips: vec![].into(),
            settings: Default::default(),
            ports: vec![].into(),
            lb_ips: vec![ip.parse().unwrap()].into(),
            lb_hosts: vec![].into(),
        };
        old.services
            .apply(Change::Apply(web.clone(), Some(svc("10.0.0.1"))));
        src.clusters.insert("c1".into(), running(spec.clone(), old));
        src.next_run = 1; // `running` is run 1
        src.board.register("kubernetes:c1");
        src.update_status("c1");
        assert!(src.clusters["c1"].up);

        src.replace("c1", spec, Some(7));
        let new_run = src.clusters["c1"].next.as_ref().expect("a next client").run;
        let from = |run: u64, c: KindChange| Msg {
            cluster: "c1".into(),
            run,
            body: ClusterMsg::Change(c),
        };
        src.handle(from(new_run, KindChange::Services(Change::Init)));
        src.handle(from(
            new_run,
            KindChange::Services(Change::InitApply(web.clone(), Some(svc("10.0.0.2")))),
        ));
        src.handle(from(new_run, KindChange::Services(Change::InitDone)));
        for c in [Change::Init, Change::InitDone] {
            src.handle(from(new_run, KindChange::Slices(c)));
        }
        for c in [Change::Init, Change::InitDone] {
            src.handle(from(new_run, KindChange::Ingresses(c)));
        }
        src.handle(from(new_run, KindChange::Nodes(Change::Init)));
        let r = &src.clusters["c1"];
        assert_eq!(r.run, 1, "replaced before the new client listed everything");
        assert!(r.up, "the cluster must keep serving meanwhile");
        assert_eq!(r.state.services.live[&web], svc("10.0.0.1"));

        src.handle(from(new_run, KindChange::Nodes(Change::InitDone)));
        let r = &src.clusters["c1"];
        assert_eq!((r.run, r.identity), (new_run, Some(7)));
        assert!(r.next.is_none() && r.up);
        assert_eq!(r.state.services.live[&web], svc("10.0.0.2"));
        assert!(src.dirty_since.is_some(), "the new data must be sent");
        // A late message of the old client changes nothing.
        src.handle(from(
            1,
            KindChange::Services(Change::Apply(web.clone(), Some(svc("10.0.0.9")))),
        ));
        assert_eq!(
            src.clusters["c1"].state.services.live[&web],
            svc("10.0.0.2")
        );
    }
}
