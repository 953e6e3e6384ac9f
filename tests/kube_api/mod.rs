//! A test Kubernetes API server: the one stand-in the tests use, serving the real `kube` client
//! over plain HTTP on loopback exactly the way a kube-apiserver does (see
//! `tests/fixtures/kube-apiserver/`): lists with `metadata.resourceVersion` and `continue`
//! pagination, watches as one JSON event per line held open and silent while nothing changes
//! (a BOOKMARK only when the client allows them, and then at a real server's cadence of about a
//! minute), 410 Gone as an in-stream ERROR event, 401/403 with the real Status bodies, going away
//! for good, and a short outage after which re-watches from the old resourceVersion succeed
//! silently.
//!
//! Objects are built from the shapes of the real captured responses. Each server runs on its own
//! small tokio runtime, shut down on drop; nothing outlives the test.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::SinkExt;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::Frame;
use hyper::{Request, Response, StatusCode};
use serde_json::{Value, json};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/kube-apiserver");

fn fixture(name: &str) -> Value {
    let text = std::fs::read_to_string(format!("{FIXTURES}/{name}")).expect("fixture");
    serde_json::from_str(&text).expect("fixture json")
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Res {
    Services,
    EndpointSlices,
    Ingresses,
    Nodes,
}

impl Res {
    pub const ALL: [Res; 4] = [
        Res::Services,
        Res::EndpointSlices,
        Res::Ingresses,
        Res::Nodes,
    ];

    fn path(self) -> &'static str {
        match self {
            Res::Services => "/api/v1/services",
            Res::EndpointSlices => "/apis/discovery.k8s.io/v1/endpointslices",
            Res::Ingresses => "/apis/networking.k8s.io/v1/ingresses",
            Res::Nodes => "/api/v1/nodes",
        }
    }

    fn kind(self) -> &'static str {
        match self {
            Res::Services => "Service",
            Res::EndpointSlices => "EndpointSlice",
            Res::Ingresses => "Ingress",
            Res::Nodes => "Node",
        }
    }

    fn api_version(self) -> &'static str {
        match self {
            Res::Services | Res::Nodes => "v1",
            Res::EndpointSlices => "discovery.k8s.io/v1",
            Res::Ingresses => "networking.k8s.io/v1",
        }
    }

    fn plural_group(self) -> (&'static str, &'static str) {
        match self {
            Res::Services => ("services", ""),
            Res::EndpointSlices => ("endpointslices", "discovery.k8s.io"),
            Res::Ingresses => ("ingresses", "networking.k8s.io"),
            Res::Nodes => ("nodes", ""),
        }
    }
}

struct Event {
    rv: u64,
    res: Res,
    kind: &'static str,
    object: Value,
}

#[derive(Default)]
struct Inner {
    rv: u64,
    objects: BTreeMap<(Res, String, String), Value>,
    log: Vec<Event>,
    deny: HashMap<Res, u16>,
    /// Like `deny`, for watch requests only (a role with `list` but without `watch`).
    deny_watch: HashMap<Res, u16>,
    /// Watches from below this resourceVersion get 410 Gone.
    compacted: u64,
    /// Bumped to cut every open watch with an in-stream 410.
    expire_gen: u64,
    gone: bool,
    /// Answer watches from below `compacted` with an HTTP 410 instead of an in-stream ERROR.
    http_410: bool,
    /// Bumped to end every open watch cleanly (the server's own timeout, a proxy restart).
    cut_gen: u64,
    lists: HashMap<Res, u32>,
    watches: HashMap<Res, u32>,
    denied: u32,
    conns: Vec<tokio::task::AbortHandle>,
}

type Shared = Arc<(Mutex<Inner>, tokio::sync::watch::Sender<u64>)>;

pub struct ApiServer {
    pub addr: SocketAddr,
    shared: Shared,
    rt: Option<tokio::runtime::Runtime>,
    accept: tokio::task::AbortHandle,
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

type Body = BoxBody<Bytes, std::io::Error>;

fn full(status: StatusCode, v: &Value) -> Response<Body> {
    let body = Full::new(Bytes::from(serde_json::to_vec(v).expect("json")))
        .map_err(|never: Infallible| match never {})
        .boxed();
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(body)
        .expect("response")
}

/// `key=value` / `key` selectors, comma-separated.
fn selector_matches(sel: Option<&str>, obj: &Value) -> bool {
    let Some(sel) = sel.filter(|s| !s.is_empty()) else {
        return true;
    };
    let labels = &obj["metadata"]["labels"];
    sel.split(',').all(|term| match term.split_once('=') {
        Some((k, v)) => labels[k].as_str() == Some(v),
        None => labels.get(term).is_some(),
    })
}

fn query(req: &Request<hyper::body::Incoming>) -> HashMap<String, String> {
    req.uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|s| !s.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k.to_string(), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Some(v) = std::str::from_utf8(&b[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn with_type(res: Res, mut obj: Value) -> Value {
    obj["kind"] = json!(res.kind());
    obj["apiVersion"] = json!(res.api_version());
    obj
}

fn status_for(res: Res, code: u16) -> Value {
    match code {
        401 => fixture("error-401-unauthorized.json"),
        403 => {
            let (plural, group) = res.plural_group();
            let mut v = fixture("error-403-forbidden.json");
            let what = if group.is_empty() {
                plural.to_string()
            } else {
                format!("{plural}.{group}")
            };
            v["message"] = json!(format!(
                "{what} is forbidden: User \"system:serviceaccount:kube-system:fedns-nobody\" cannot list resource \"{plural}\" in API group \"{group}\" at the cluster scope"
            ));
            v["details"] = json!({"group": group, "kind": plural});
            v
        }
        _ => fixture("error-410-list-expired.json"),
    }
}

async fn handle(
    shared: Shared,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Body>, std::io::Error> {
    let q = query(&req);
    let path = req.uri().path().to_string();
    let Some(res) = Res::ALL.into_iter().find(|r| r.path() == path) else {
        return Ok(full(
            StatusCode::NOT_FOUND,
            &json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"the server could not find the requested resource","reason":"NotFound","code":404}),
        ));
    };
    let sel = q.get("labelSelector").cloned();
    let watch = q.get("watch").is_some_and(|v| v == "true" || v == "1");
    {
        let mut inner = shared.0.lock().unwrap();
        if inner.gone {
            return Err(std::io::Error::other("gone"));
        }
        let denied = inner
            .deny
            .get(&res)
            .copied()
            .or_else(|| watch.then(|| inner.deny_watch.get(&res).copied()).flatten());
        if let Some(code) = denied {
            inner.denied += 1;
            return Ok(full(
                StatusCode::from_u16(code).unwrap(),
                &status_for(res, code),
            ));
        }
        if !watch {
            *inner.lists.entry(res).or_default() += 1;
            let items: Vec<Value> = inner
                .objects
                .iter()
                .filter(|((r, _, _), o)| *r == res && selector_matches(sel.as_deref(), o))
                .map(|(_, o)| o.clone())
                .collect();
            let offset: usize = q
                .get("continue")
                .and_then(|c| c.strip_prefix("off-"))
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            let limit: usize = q
                .get("limit")
                .and_then(|l| l.parse().ok())
                .unwrap_or(usize::MAX);
            let end = offset.saturating_add(limit).min(items.len());
            let mut meta = json!({"resourceVersion": inner.rv.to_string()});
            if end < items.len() {
                meta["continue"] = json!(format!("off-{end}"));
                meta["remainingItemCount"] = json!(items.len() - end);
            }
            let list = json!({
                "kind": format!("{}List", res.kind()),
                "apiVersion": res.api_version(),
                "metadata": meta,
                "items": items[offset.min(end)..end],
            });
            return Ok(full(StatusCode::OK, &list));
        }
        *inner.watches.entry(res).or_default() += 1;
        let from: u64 = q
            .get("resourceVersion")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if inner.http_410 && from < inner.compacted {
            return Ok(full(StatusCode::GONE, &status_for(res, 410)));
        }
    }
    let from: u64 = q
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let bookmarks = q
        .get("allowWatchBookmarks")
        .is_some_and(|v| v == "true")
        .then_some(BOOKMARK_EVERY);
    let (mut tx, rx) = futures::channel::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(16);
    let mut changed = shared.1.subscribe();
    tokio::spawn(async move {
        let line = |v: Value| {
            let mut b = serde_json::to_vec(&v).expect("json");
            b.push(b'\n');
            Ok(Frame::data(Bytes::from(b)))
        };
        let (start_gen, start_cut) = {
            let inner = shared.0.lock().unwrap();
            (inner.expire_gen, inner.cut_gen)
        };
        let mut cursor = from;
        loop {
            let (events, gone, expired, rv) = {
                let inner = shared.0.lock().unwrap();
                if inner.cut_gen != start_cut {
                    return; // the body ends cleanly
                }
                let expired = inner.expire_gen != start_gen || cursor < inner.compacted;
                let events: Vec<Value> = inner
                    .log
                    .iter()
                    .filter(|e| e.rv > cursor && e.res == res)
                    .filter(|e| selector_matches(sel.as_deref(), &e.object))
                    .map(|e| json!({"type": e.kind, "object": with_type(res, e.object.clone())}))
                    .collect();
                (events, inner.gone, expired, inner.rv)
            };
            if gone {
                let _ = tx.send(Err(std::io::Error::other("gone"))).await;
                return;
            }
            if expired {
                let _ = tx
                    .send(line(json!({"type":"ERROR","object": status_for(res, 410)})))
                    .await;
                return;
            }
            for e in events {
                if tx.send(line(e)).await.is_err() {
                    return;
                }
            }
            cursor = rv;
            tokio::select! {
                r = changed.changed() => if r.is_err() { return },
                // A real kube-apiserver sends a bookmark about once a minute, and only to
                // clients that asked for them: within a test a quiet watch says nothing at all.
                _ = sleep_or_never(bookmarks) => {
                    let mut obj = json!({"kind": res.kind(), "apiVersion": res.api_version(),
                        "metadata": {"resourceVersion": rv.to_string(), "creationTimestamp": null}});
                    if res == Res::EndpointSlices {
                        obj["addressType"] = json!("");
                        obj["endpoints"] = Value::Null;
                        obj["ports"] = Value::Null;
                    }
                    if tx.send(line(json!({"type":"BOOKMARK","object": obj}))).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    let body = StreamBody::new(rx).boxed();
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .header("transfer-encoding", "chunked")
        .body(body)
        .expect("response"))
}

/// How often a watch that allows bookmarks gets one (kube-apiserver: about every minute).
const BOOKMARK_EVERY: Duration = Duration::from_secs(60);

async fn sleep_or_never(d: Option<Duration>) {
    match d {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

impl ApiServer {
    pub fn start() -> ApiServer {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let (tx, _) = tokio::sync::watch::channel(0u64);
        let shared: Shared = Arc::new((Mutex::new(Inner::default()), tx));
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind api server");
        let addr = listener.local_addr().unwrap();
        let s = shared.clone();
        let accept = rt
            .spawn(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    if s.0.lock().unwrap().gone {
                        // Down: the connection is closed before a byte is read.
                        drop(stream);
                        continue;
                    }
                    let s2 = s.clone();
                    let conn = tokio::spawn(async move {
                        let svc = hyper::service::service_fn(move |req| handle(s2.clone(), req));
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                            .await;
                    });
                    let mut inner = s.0.lock().unwrap();
                    inner.conns.retain(|c| !c.is_finished());
                    inner.conns.push(conn.abort_handle());
                }
            })
            .abort_handle();
        ApiServer {
            addr,
            shared,
            rt: Some(rt),
            accept,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn mutate(&self, f: impl FnOnce(&mut Inner)) {
        let rv = {
            let mut inner = self.shared.0.lock().unwrap();
            f(&mut inner);
            inner.rv
        };
        self.shared.1.send_replace(rv);
    }

    /// Creates or replaces an object (ADDED / MODIFIED).
    pub fn put(&self, res: Res, mut obj: Value) {
        self.mutate(|inner| {
            inner.rv += 1;
            let rv = inner.rv;
            let ns = obj["metadata"]["namespace"]
                .as_str()
                .unwrap_or("")
                .to_string();
            let name = obj["metadata"]["name"].as_str().expect("name").to_string();
            obj["metadata"]["resourceVersion"] = json!(rv.to_string());
            obj["metadata"]["uid"] = json!(format!("00000000-0000-4000-8000-{rv:012}"));
            obj["metadata"]["creationTimestamp"] = json!("2026-11-22T09:28:41Z");
            let kind = if inner.objects.insert((res, ns, name), obj.clone()).is_some() {
                "MODIFIED"
            } else {
                "ADDED"
            };
            inner.log.push(Event {
                rv,
                res,
                kind,
                object: obj,
            });
        });
    }

    pub fn delete(&self, res: Res, ns: &str, name: &str) {
        self.mutate(|inner| {
            if let Some(mut obj) = inner
                .objects
                .remove(&(res, ns.to_string(), name.to_string()))
            {
                inner.rv += 1;
                let rv = inner.rv;
                obj["metadata"]["resourceVersion"] = json!(rv.to_string());
                inner.log.push(Event {
                    rv,
                    res,
                    kind: "DELETED",
                    object: obj,
                });
            }
        });
    }

    /// Answers every request for `res` with this status (401 or 403), or normally again.
    pub fn deny(&self, res: Res, code: Option<u16>) {
        self.mutate(|inner| match code {
            Some(c) => {
                inner.deny.insert(res, c);
            }
            None => {
                inner.deny.remove(&res);
            }
        });
    }

    /// Answers watch requests for `res` with this status, lists normally.
    pub fn deny_watch(&self, res: Res, code: u16) {
        self.mutate(|inner| {
            inner.deny_watch.insert(res, code);
        });
    }

    /// Compacts history: every open watch gets an in-stream 410 ERROR and ends, and a watch from
    /// an older resourceVersion gets one too, so clients must list again.
    pub fn expire_watches(&self) {
        self.mutate(|inner| {
            inner.expire_gen += 1;
            // Other writes moved history on: every resourceVersion the client has is too old,
            // also for a watch that is only now being opened.
            inner.rv += 1;
            inner.compacted = inner.rv;
        });
    }

    /// Ends every open watch cleanly, as an API server restart or its own timeout does.
    pub fn cut_watches(&self) {
        self.mutate(|inner| inner.cut_gen += 1);
    }

    /// Compacts history the other way: open watches end cleanly, and the client's next watch
    /// (from its old resourceVersion) is refused with HTTP 410 on the request itself.
    pub fn expire_watches_http(&self) {
        self.mutate(|inner| {
            inner.http_410 = true;
            inner.cut_gen += 1;
            // Other writes moved history on: every resourceVersion the client has is too old.
            inner.rv += 1;
            inner.compacted = inner.rv;
        });
    }

    /// The API server goes away: the listener closes and every connection is cut.
    pub fn go_away(&self) {
        self.accept.abort();
        self.outage_begins();
    }

    /// A short outage (an API server restart, a load balancer failing over): every connection is
    /// cut and new ones are closed at once, until [`ApiServer::outage_ends`]. Nothing changes
    /// meanwhile, so the history is kept and a re-watch from the old resourceVersion succeeds
    /// with no event at all.
    pub fn outage_begins(&self) {
        self.mutate(|inner| {
            inner.gone = true;
            for c in inner.conns.drain(..) {
                c.abort();
            }
        });
    }

    pub fn outage_ends(&self) {
        self.mutate(|inner| inner.gone = false);
    }

    /// Requests answered with the status set by [`ApiServer::deny`].
    pub fn denied(&self) -> u32 {
        self.shared.0.lock().unwrap().denied
    }

    pub fn lists(&self, res: Res) -> u32 {
        self.shared
            .0
            .lock()
            .unwrap()
            .lists
            .get(&res)
            .copied()
            .unwrap_or(0)
    }

    pub fn watches(&self, res: Res) -> u32 {
        self.shared
            .0
            .lock()
            .unwrap()
            .watches
            .get(&res)
            .copied()
            .unwrap_or(0)
    }
}

// ---------------------------------------------------------------------------------------------
// Objects, shaped like the captured ones (fields a controller would set included).
// ---------------------------------------------------------------------------------------------

/// A LoadBalancer Service like `checkout` in list-services.json.
pub fn service(ns: &str, name: &str, labels: Value, lb: &[&str], lb_hostnames: &[&str]) -> Value {
    let mut ingress: Vec<Value> = lb
        .iter()
        .map(|ip| json!({"ip": ip, "ipMode": "VIP"}))
        .collect();
    ingress.extend(lb_hostnames.iter().map(|h| json!({"hostname": h})));
    json!({
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {
            "ports": [
                {"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080, "nodePort": 32246},
                {"name": "grpc", "protocol": "TCP", "port": 9090, "targetPort": 9090, "nodePort": 30185}
            ],
            "selector": {"app": name},
            "clusterIP": "10.96.183.156",
            "clusterIPs": ["10.96.183.156"],
            "type": "LoadBalancer",
            "sessionAffinity": "None",
            "externalTrafficPolicy": "Cluster",
            "ipFamilies": ["IPv4"],
            "ipFamilyPolicy": "PreferDualStack",
            "allocateLoadBalancerNodePorts": true,
            "internalTrafficPolicy": "Cluster"
        },
        "status": {"loadBalancer": {"ingress": ingress}}
    })
}

/// A ClusterIP Service like `cart`.
pub fn cluster_ip_service(ns: &str, name: &str, labels: Value) -> Value {
    json!({
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {
            "ports": [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080}],
            "selector": {"app": name},
            "clusterIP": "10.96.135.230",
            "clusterIPs": ["10.96.135.230"],
            "type": "ClusterIP",
            "sessionAffinity": "None",
            "ipFamilies": ["IPv4"],
            "ipFamilyPolicy": "SingleStack",
            "internalTrafficPolicy": "Cluster"
        },
        "status": {"loadBalancer": {}}
    })
}

/// One endpoint: (address, ready, terminating, zone).
pub type Ep<'a> = (&'a str, bool, bool, Option<&'a str>);

/// An EndpointSlice like `checkout-7xk2p` in list-endpointslices.json.
pub fn slice(ns: &str, name: &str, service: &str, endpoints: &[Ep<'_>]) -> Value {
    let eps: Vec<Value> = endpoints
        .iter()
        .enumerate()
        .map(|(i, (ip, ready, term, zone))| {
            let mut e = json!({
                "addresses": [ip],
                "conditions": {"ready": ready, "serving": *ready || *term, "terminating": term},
                "targetRef": {"kind": "Pod", "namespace": ns, "name": format!("{service}-{i}"), "uid": format!("00000000-0000-4000-9000-{i:012}")},
                "nodeName": format!("worker-{i}")
            });
            if let Some(z) = zone {
                e["zone"] = json!(z);
            }
            e
        })
        .collect();
    json!({
        "metadata": {
            "name": name,
            "namespace": ns,
            "generation": 1,
            "labels": {
                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
                "kubernetes.io/service-name": service
            }
        },
        "addressType": "IPv4",
        "endpoints": eps,
        "ports": [{"name": "http", "protocol": "TCP", "port": 8080}]
    })
}

/// An Ingress like `storefront` in list-ingresses.json.
pub fn ingress(ns: &str, name: &str, hosts: &[&str], backend: &str, lb: &[&str]) -> Value {
    let rules: Vec<Value> = hosts
        .iter()
        .map(|h| {
            json!({"host": h, "http": {"paths": [{"path": "/", "pathType": "Prefix",
            "backend": {"service": {"name": backend, "port": {"number": 80}}}}]}})
        })
        .collect();
    let ingress: Vec<Value> = lb.iter().map(|ip| json!({"ip": ip})).collect();
    json!({
        "metadata": {"name": name, "namespace": ns, "generation": 1},
        "spec": {"rules": rules},
        "status": {"loadBalancer": {"ingress": ingress}}
    })
}

/// A Node like those in list-nodes.json; `deprecated` labels it only with the
/// failure-domain.beta.kubernetes.io keys.
pub fn node(name: &str, region: &str, zone: &str, deprecated: bool) -> Value {
    let labels = if deprecated {
        json!({"kubernetes.io/hostname": name,
               "failure-domain.beta.kubernetes.io/region": region,
               "failure-domain.beta.kubernetes.io/zone": zone})
    } else {
        json!({"kubernetes.io/hostname": name,
               "topology.kubernetes.io/region": region,
               "topology.kubernetes.io/zone": zone})
    };
    json!({
        "metadata": {"name": name, "labels": labels},
        "spec": {"taints": [{"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"}]},
        "status": {"daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}}}
    })
}

/// A kubeconfig with one context per `(name, server URL)`, no credentials (plain HTTP).
pub fn kubeconfig(contexts: &[(&str, String)]) -> String {
    let mut s = String::from("apiVersion: v1\nkind: Config\nclusters:\n");
    for (n, url) in contexts {
        s.push_str(&format!("- name: {n}\n  cluster:\n    server: {url}\n"));
    }
    s.push_str("users:\n- name: fedns\n  user: {}\ncontexts:\n");
    for (n, _) in contexts {
        s.push_str(&format!(
            "- name: {n}\n  context:\n    cluster: {n}\n    user: fedns\n"
        ));
    }
    if let Some((n, _)) = contexts.first() {
        s.push_str(&format!("current-context: {n}\n"));
    }
    s
}
