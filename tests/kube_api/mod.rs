//! A test Kubernetes API server: the one stand-in the tests use, serving the real `kube` client
//! over plain HTTP, or HTTPS with a bearer token ([`ApiServer::start_secure`]), on loopback the
//! way a kube-apiserver does (see `tests/fixtures/kube-apiserver/`, whose README lists each case
//! and the real behaviour it models): lists with `metadata.resourceVersion` and `continue`
//! pagination (optionally slow), watches as one JSON event per line held open and silent while
//! nothing changes (a BOOKMARK only when the client allows them, and then at a real server's
//! cadence of about a minute) until `timeoutSeconds`, label-selected watches that send DELETED
//! when an object stops matching, 410 Gone as an in-stream ERROR event, 401/403 with the real
//! Status bodies for new requests only (open watches go on), a graceful shutdown that keeps open
//! watches for a while, going away for good, and a short outage after which re-watches from the
//! old resourceVersion succeed silently. Besides the built-in kinds it serves the custom
//! resources DNSEndpoint, Gateway, HTTPRoute and ServiceImport the same way, and 404 for one whose CRD is not
//! installed ([`ApiServer::set_installed`]). It also takes writes of the kinds `fedns join`
//! creates (Namespaces, ServiceAccounts, Secrets, ClusterRoles, ClusterRoleBindings: 201 with
//! the object, 409 AlreadyExists, 404 NotFound, as real Status bodies), and plays the token
//! controller for `kubernetes.io/service-account-token` Secrets.
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
    /// Custom resources: served only while their CRD is installed (the default; see
    /// [`ApiServer::set_installed`]).
    DnsEndpoints,
    Gateways,
    HttpRoutes,
    ServiceImports,
}

impl Res {
    /// The built-in kinds fedns always watches.
    pub const ALL: [Res; 4] = [
        Res::Services,
        Res::EndpointSlices,
        Res::Ingresses,
        Res::Nodes,
    ];
    /// The custom resources fedns watches when enabled.
    pub const CUSTOM: [Res; 4] = [
        Res::DnsEndpoints,
        Res::Gateways,
        Res::HttpRoutes,
        Res::ServiceImports,
    ];

    fn path(self) -> &'static str {
        match self {
            Res::Services => "/api/v1/services",
            Res::EndpointSlices => "/apis/discovery.k8s.io/v1/endpointslices",
            Res::Ingresses => "/apis/networking.k8s.io/v1/ingresses",
            Res::Nodes => "/api/v1/nodes",
            Res::DnsEndpoints => "/apis/externaldns.k8s.io/v1alpha1/dnsendpoints",
            Res::Gateways => "/apis/gateway.networking.k8s.io/v1/gateways",
            Res::HttpRoutes => "/apis/gateway.networking.k8s.io/v1/httproutes",
            Res::ServiceImports => "/apis/multicluster.x-k8s.io/v1alpha1/serviceimports",
        }
    }

    fn kind(self) -> &'static str {
        match self {
            Res::Services => "Service",
            Res::EndpointSlices => "EndpointSlice",
            Res::Ingresses => "Ingress",
            Res::Nodes => "Node",
            Res::DnsEndpoints => "DNSEndpoint",
            Res::Gateways => "Gateway",
            Res::HttpRoutes => "HTTPRoute",
            Res::ServiceImports => "ServiceImport",
        }
    }

    fn api_version(self) -> &'static str {
        match self {
            Res::Services | Res::Nodes => "v1",
            Res::EndpointSlices => "discovery.k8s.io/v1",
            Res::Ingresses => "networking.k8s.io/v1",
            Res::DnsEndpoints => "externaldns.k8s.io/v1alpha1",
            Res::Gateways | Res::HttpRoutes => "gateway.networking.k8s.io/v1",
            Res::ServiceImports => "multicluster.x-k8s.io/v1alpha1",
        }
    }

    fn plural_group(self) -> (&'static str, &'static str) {
        match self {
            Res::Services => ("services", ""),
            Res::EndpointSlices => ("endpointslices", "discovery.k8s.io"),
            Res::Ingresses => ("ingresses", "networking.k8s.io"),
            Res::Nodes => ("nodes", ""),
            Res::DnsEndpoints => ("dnsendpoints", "externaldns.k8s.io"),
            Res::Gateways => ("gateways", "gateway.networking.k8s.io"),
            Res::HttpRoutes => ("httproutes", "gateway.networking.k8s.io"),
            Res::ServiceImports => ("serviceimports", "multicluster.x-k8s.io"),
        }
    }
}

struct Event {
    rv: u64,
    res: Res,
    kind: &'static str,
    object: Value,
    /// The object before this change (for DELETED: the last state), which a label-selected
    /// watch needs to tell an object that stopped matching from one that never did.
    prev: Option<Value>,
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
    /// Bearer tokens accepted (`None`: no authentication, as before TLS was added).
    tokens: Option<Vec<String>>,
    /// Requests answered, per bearer token presented.
    by_token: HashMap<String, u32>,
    /// How long a list takes to answer (a remote API server, a large cluster).
    list_delay: Duration,
    /// The server's own cap on a watch's length (kube-apiserver: `--min-request-timeout`, and
    /// the client's `timeoutSeconds` when shorter).
    watch_cap: Option<Duration>,
    /// Shutting down: no new connection or request is served, open watches go on until then.
    draining: bool,
    /// Custom resources whose CRD is not installed: their paths are 404.
    uninstalled: std::collections::HashSet<Res>,
    /// 404 answers per path.
    not_found: HashMap<String, u32>,
    /// Objects written through the API (`fedns join`): Namespaces, ServiceAccounts, Secrets,
    /// ClusterRoles, ClusterRoleBindings, by their object path.
    stored: BTreeMap<String, Value>,
    /// Service-account tokens minted so far (the token controller's work).
    minted: u32,
}

type Shared = Arc<(Mutex<Inner>, tokio::sync::watch::Sender<u64>)>;

pub struct ApiServer {
    pub addr: SocketAddr,
    shared: Shared,
    rt: Option<tokio::runtime::Runtime>,
    accept: tokio::task::AbortHandle,
    tls: bool,
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
    json_response(status, serde_json::to_vec(v).expect("json"))
}

fn json_response(status: StatusCode, json: Vec<u8>) -> Response<Body> {
    let body = Full::new(Bytes::from(json))
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

/// What a request gets before any streaming: an answer now (after `delay`), or a watch.
enum Start {
    Answer(Response<Body>, Duration),
    Watch,
}

async fn handle(
    shared: Shared,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Body>, std::io::Error> {
    let q = query(&req);
    let path = req.uri().path().to_string();
    if let Some(target) = Writable::parse(&path) {
        return Ok(handle_object(shared, req, target).await);
    }
    let res = Res::ALL
        .into_iter()
        .chain(Res::CUSTOM)
        .find(|r| r.path() == path)
        .filter(|r| !shared.0.lock().unwrap().uninstalled.contains(r));
    let Some(res) = res else {
        *shared.0.lock().unwrap().not_found.entry(path).or_default() += 1;
        // A path no API group serves (a CRD not installed) falls through kube-apiserver's
        // handler chain to its NotFound handler, which answers with this Status.
        return Ok(full(
            StatusCode::NOT_FOUND,
            &json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"the server could not find the requested resource","reason":"NotFound","details":{},"code":404}),
        ));
    };
    let bearer = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string);
    let sel = q.get("labelSelector").cloned();
    let watch = q.get("watch").is_some_and(|v| v == "true" || v == "1");
    let start = {
        let mut inner = shared.0.lock().unwrap();
        if inner.gone || inner.draining {
            return Err(std::io::Error::other("gone"));
        }
        // Authentication comes before authorization, as in kube-apiserver: a wrong or missing
        // token is 401 whatever RBAC says.
        let authenticated = match (&inner.tokens, &bearer) {
            (None, _) => true,
            (Some(ok), Some(t)) => ok.contains(t),
            (Some(_), None) => false,
        };
        if let Some(t) = &bearer {
            *inner.by_token.entry(t.clone()).or_default() += 1;
        }
        let denied = if !authenticated {
            Some(401)
        } else {
            inner
                .deny
                .get(&res)
                .copied()
                .or_else(|| watch.then(|| inner.deny_watch.get(&res).copied()).flatten())
        };
        if let Some(code) = denied {
            inner.denied += 1;
            Start::Answer(
                full(StatusCode::from_u16(code).unwrap(), &status_for(res, code)),
                Duration::ZERO,
            )
        } else if !watch {
            *inner.lists.entry(res).or_default() += 1;
            // Borrowed, and only the page asked for is serialized: a paged list of 10k objects
            // used to copy every object for every page (the bench's API servers then cost more
            // CPU than fedns).
            let items: Vec<&Value> = inner
                .objects
                .iter()
                .filter(|((r, _, _), o)| *r == res && selector_matches(sel.as_deref(), o))
                .map(|(_, o)| o)
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
            #[derive(serde::Serialize)]
            #[serde(rename_all = "camelCase")]
            struct List<'a> {
                kind: String,
                api_version: &'a str,
                metadata: Value,
                items: &'a [&'a Value],
            }
            let list = List {
                kind: format!("{}List", res.kind()),
                api_version: res.api_version(),
                metadata: meta,
                items: &items[offset.min(end)..end],
            };
            Start::Answer(
                json_response(StatusCode::OK, serde_json::to_vec(&list).expect("json")),
                inner.list_delay,
            )
        } else {
            *inner.watches.entry(res).or_default() += 1;
            let from: u64 = q
                .get("resourceVersion")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            if inner.http_410 && from < inner.compacted {
                Start::Answer(
                    full(StatusCode::GONE, &status_for(res, 410)),
                    Duration::ZERO,
                )
            } else {
                Start::Watch
            }
        }
    };
    if let Start::Answer(resp, delay) = start {
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        return Ok(resp);
    }
    let from: u64 = q
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let bookmarks = q
        .get("allowWatchBookmarks")
        .is_some_and(|v| v == "true")
        .then_some(BOOKMARK_EVERY);
    // A watch lasts `timeoutSeconds` (kube's watcher asks for 290 s), or less when the server
    // caps it; then the body simply ends and the client watches again from where it was.
    let asked = q
        .get("timeoutSeconds")
        .and_then(|v| v.parse().ok())
        .map(Duration::from_secs);
    let cap = shared.0.lock().unwrap().watch_cap;
    let lasts = match (asked, cap) {
        (Some(a), Some(c)) => Some(a.min(c)),
        (a, c) => a.or(c),
    };
    let ends_at = lasts.map(|d| tokio::time::Instant::now() + d);
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
                    .filter_map(|e| watch_event(sel.as_deref(), e))
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
                () = sleep_until_or_never(ends_at) => return, // timeoutSeconds: a clean end
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

/// A path of a kind written through the API (what `fedns join` creates): a collection (POST) or
/// one object (GET, PUT, DELETE).
struct Writable {
    /// The collection's path (`.../serviceaccounts`).
    collection: String,
    name: Option<String>,
    namespace: Option<String>,
    plural: &'static str,
    kind: &'static str,
    api_version: &'static str,
}

impl Writable {
    fn parse(path: &str) -> Option<Writable> {
        let seg: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let (plural, kind, api_version, namespace, name): (&'static str, _, _, _, _) =
            match seg.as_slice() {
                ["api", "v1", "namespaces"] => ("namespaces", "Namespace", "v1", None, None),
                ["api", "v1", "namespaces", n] => ("namespaces", "Namespace", "v1", None, Some(*n)),
                [
                    "api",
                    "v1",
                    "namespaces",
                    ns,
                    p @ ("serviceaccounts" | "secrets"),
                    rest @ ..,
                ] if rest.len() <= 1 => {
                    let (plural, kind) = if *p == "secrets" {
                        ("secrets", "Secret")
                    } else {
                        ("serviceaccounts", "ServiceAccount")
                    };
                    (plural, kind, "v1", Some(*ns), rest.first().copied())
                }
                [
                    "apis",
                    "rbac.authorization.k8s.io",
                    "v1",
                    p @ ("clusterroles" | "clusterrolebindings"),
                    rest @ ..,
                ] if rest.len() <= 1 => {
                    let (plural, kind) = if *p == "clusterroles" {
                        ("clusterroles", "ClusterRole")
                    } else {
                        ("clusterrolebindings", "ClusterRoleBinding")
                    };
                    let av = "rbac.authorization.k8s.io/v1";
                    (plural, kind, av, None, rest.first().copied())
                }
                _ => return None,
            };
        let collection = match name {
            Some(n) => path
                .trim_end_matches('/')
                .strip_suffix(n)?
                .trim_end_matches('/'),
            None => path.trim_end_matches('/'),
        }
        .to_string();
        Some(Writable {
            collection,
            name: name.map(str::to_string),
            namespace: namespace.map(str::to_string),
            plural,
            kind,
            api_version,
        })
    }
}

/// A kube-apiserver Status body for a failed request on one object.
fn failure(code: u16, reason: &str, message: String, name: &str, plural: &str) -> Response<Body> {
    full(
        StatusCode::from_u16(code).unwrap(),
        &json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",
            "message": message,"reason": reason,
            "details":{"name": name,"kind": plural},"code": code}),
    )
}

/// Create (201, or 409 AlreadyExists, or 404 when the namespace is missing), read, replace and
/// delete (404 NotFound when absent) for the kinds `fedns join` writes. A created
/// `kubernetes.io/service-account-token` Secret gets its `data.token` filled after the create
/// answer (the token controller's work), and the token is accepted from then on.
async fn handle_object(
    shared: Shared,
    req: Request<hyper::body::Incoming>,
    w: Writable,
) -> Response<Body> {
    let method = req.method().clone();
    let bearer = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string);
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let mut inner = shared.0.lock().unwrap();
    if let Some(t) = &bearer {
        *inner.by_token.entry(t.clone()).or_default() += 1;
    }
    let authenticated = match (&inner.tokens, &bearer) {
        (None, _) => true,
        (Some(ok), Some(t)) => ok.contains(t),
        (Some(_), None) => false,
    };
    if !authenticated {
        return full(StatusCode::UNAUTHORIZED, &status_for(Res::Services, 401));
    }
    let now = "2026-12-01T20:00:00Z";
    match (method.as_str(), &w.name) {
        ("POST", None) => {
            let Ok(mut obj) = serde_json::from_slice::<Value>(&body) else {
                return failure(
                    400,
                    "BadRequest",
                    "the body is not JSON".into(),
                    "",
                    w.plural,
                );
            };
            let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
            if let Some(ns) = &w.namespace
                && !inner
                    .stored
                    .contains_key(&format!("/api/v1/namespaces/{ns}"))
            {
                return failure(
                    404,
                    "NotFound",
                    format!("namespaces \"{ns}\" not found"),
                    ns,
                    "namespaces",
                );
            }
            let key = format!("{}/{name}", w.collection);
            if inner.stored.contains_key(&key) {
                return failure(
                    409,
                    "AlreadyExists",
                    format!("{} \"{name}\" already exists", w.plural),
                    &name,
                    w.plural,
                );
            }
            inner.rv += 1;
            obj["kind"] = json!(w.kind);
            obj["apiVersion"] = json!(w.api_version);
            obj["metadata"]["uid"] = json!(format!("uid-{}", inner.rv));
            obj["metadata"]["resourceVersion"] = json!(inner.rv.to_string());
            obj["metadata"]["creationTimestamp"] = json!(now);
            if let Some(ns) = &w.namespace {
                obj["metadata"]["namespace"] = json!(ns);
            }
            let answer = obj.clone();
            if w.kind == "Secret" && obj["type"] == "kubernetes.io/service-account-token" {
                use base64::Engine as _;
                inner.minted += 1;
                let token = format!("sa-token-{}-{}", inner.minted, inner.rv);
                let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
                obj["data"] = json!({"token": b64(&token), "namespace": b64(w.namespace.as_deref().unwrap_or(""))});
                if let Some(t) = inner.tokens.as_mut() {
                    t.push(token);
                }
            }
            inner.stored.insert(key, obj);
            full(StatusCode::CREATED, &answer)
        }
        (m, Some(name)) => {
            let key = format!("{}/{name}", w.collection);
            let Some(old) = inner.stored.get(&key).cloned() else {
                return failure(
                    404,
                    "NotFound",
                    format!("{} \"{name}\" not found", w.plural),
                    name,
                    w.plural,
                );
            };
            match m {
                "GET" => full(StatusCode::OK, &old),
                "DELETE" => {
                    inner.stored.remove(&key);
                    full(StatusCode::OK, &old)
                }
                "PUT" => {
                    let Ok(mut obj) = serde_json::from_slice::<Value>(&body) else {
                        return failure(
                            400,
                            "BadRequest",
                            "the body is not JSON".into(),
                            name,
                            w.plural,
                        );
                    };
                    inner.rv += 1;
                    obj["kind"] = json!(w.kind);
                    obj["apiVersion"] = json!(w.api_version);
                    obj["metadata"]["uid"] = old["metadata"]["uid"].clone();
                    obj["metadata"]["creationTimestamp"] =
                        old["metadata"]["creationTimestamp"].clone();
                    obj["metadata"]["resourceVersion"] = json!(inner.rv.to_string());
                    if w.kind == "Secret" && obj.get("data").is_none() {
                        obj["data"] = old["data"].clone();
                    }
                    inner.stored.insert(key, obj.clone());
                    full(StatusCode::OK, &obj)
                }
                _ => failure(
                    405,
                    "MethodNotAllowed",
                    format!("{m} is not supported"),
                    name,
                    w.plural,
                ),
            }
        }
        (m, None) => failure(
            405,
            "MethodNotAllowed",
            format!("{m} is not supported"),
            "",
            w.plural,
        ),
    }
}

/// The event a watch with label selector `sel` sends for one change, as kube-apiserver's watch
/// cache does (`cacheWatcher.convertToWatchEvent`): judged by the object before and after the
/// change, an object that starts matching is ADDED, one that stops matching is DELETED (with its
/// previous content at the event's resourceVersion), one that never matched sends nothing.
fn watch_event(sel: Option<&str>, e: &Event) -> Option<Value> {
    let res = e.res;
    let now = e.kind != "DELETED" && selector_matches(sel, &e.object);
    let before = e.prev.as_ref().is_some_and(|p| selector_matches(sel, p));
    let (kind, obj) = match (now, before) {
        (true, false) => ("ADDED", e.object.clone()),
        (true, true) => ("MODIFIED", e.object.clone()),
        (false, true) => {
            let mut prev = e.prev.clone().expect("previous object");
            prev["metadata"]["resourceVersion"] = json!(e.rv.to_string());
            ("DELETED", prev)
        }
        (false, false) => return None,
    };
    Some(json!({"type": kind, "object": with_type(res, obj)}))
}

async fn sleep_until_or_never(t: Option<tokio::time::Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// How often a watch that allows bookmarks gets one (kube-apiserver: about every minute).
const BOOKMARK_EVERY: Duration = Duration::from_secs(60);

async fn sleep_or_never(d: Option<Duration>) {
    match d {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

/// Serves HTTP/1.1 on one connection (plain or TLS) until it closes or is aborted.
async fn serve<IO>(io: IO, shared: Shared)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req| handle(shared.clone(), req));
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(hyper_util::rt::TokioIo::new(io), svc)
        .await;
}

/// The test CA and the API server certificate it signed (for IP 127.0.0.1), made once per test
/// process with `openssl` (which `scripts/test` installs) in the system's temporary directory.
pub struct TestCa {
    /// The CA certificate, for a kubeconfig's `certificate-authority`.
    pub ca: std::path::PathBuf,
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
}

pub fn test_ca() -> &'static TestCa {
    static CA: std::sync::OnceLock<TestCa> = std::sync::OnceLock::new();
    CA.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("fedns-kube-api-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tls dir");
        let run = |args: &[&str]| {
            let out = std::process::Command::new("openssl")
                .args(args)
                .current_dir(&dir)
                .output()
                .expect("openssl (scripts/test installs it)");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
        let mut ca = vec!["req", "-x509"];
        ca.extend(ec);
        ca.extend([
            "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=fedns-test-ca",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        run(&ca);
        let mut csr = vec!["req"];
        csr.extend(ec);
        csr.extend(["-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=kube-apiserver"]);
        run(&csr);
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .expect("server.ext");
        run(&[
            "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "server.ext",
        ]);
        TestCa {
            ca: dir.join("ca.crt"),
            cert: dir.join("server.crt"),
            key: dir.join("server.key"),
        }
    })
}

fn tls_acceptor() -> tokio_rustls::TlsAcceptor {
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let ca = test_ca();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&ca.cert)
        .expect("server.crt")
        .collect::<Result<_, _>>()
        .expect("server.crt");
    let key = PrivateKeyDer::from_pem_file(&ca.key).expect("server.key");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server certificate");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

impl ApiServer {
    /// A plain-HTTP server with no authentication.
    pub fn start() -> ApiServer {
        Self::start_with(None)
    }

    /// An HTTPS server (certificate for 127.0.0.1 from the test CA, [`test_ca`]) that accepts
    /// only `Authorization: Bearer TOKEN` and answers 401 to anything else, as a real
    /// kube-apiserver with a service-account token does.
    pub fn start_secure(token: &str) -> ApiServer {
        let s = Self::start_with(Some(tls_acceptor()));
        s.set_tokens(&[token]);
        s
    }

    fn start_with(tls: Option<tokio_rustls::TlsAcceptor>) -> ApiServer {
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
        let secure = tls.is_some();
        let accept = rt
            .spawn(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let refused = {
                        let inner = s.0.lock().unwrap();
                        inner.gone || inner.draining
                    };
                    if refused {
                        // Down: the connection is closed before a byte is read.
                        drop(stream);
                        continue;
                    }
                    let s2 = s.clone();
                    let tls = tls.clone();
                    let conn = tokio::spawn(async move {
                        match tls {
                            Some(acceptor) => {
                                if let Ok(stream) = acceptor.accept(stream).await {
                                    serve(stream, s2).await;
                                }
                            }
                            None => serve(stream, s2).await,
                        }
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
            tls: secure,
        }
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// The bearer tokens accepted from now on; requests already being served (open watches)
    /// go on, as authentication happens once per request.
    pub fn set_tokens(&self, tokens: &[&str]) {
        self.mutate(|inner| inner.tokens = Some(tokens.iter().map(|t| t.to_string()).collect()));
    }

    /// Requests (answered or refused) that presented `token`.
    pub fn requests_with(&self, token: &str) -> u32 {
        let inner = self.shared.0.lock().unwrap();
        inner.by_token.get(token).copied().unwrap_or(0)
    }

    /// Every list answers only after `d` (a far or loaded API server, a large cluster).
    pub fn delay_lists(&self, d: Duration) {
        self.mutate(|inner| inner.list_delay = d);
    }

    /// Every watch opened from now on ends cleanly after `d` at most (the server's own request
    /// timeout, shorter than the client's `timeoutSeconds`).
    pub fn cap_watches(&self, d: Duration) {
        self.mutate(|inner| inner.watch_cap = Some(d));
    }

    /// A graceful shutdown (kube-apiserver on SIGTERM): new connections and requests are
    /// refused at once, the watches already open keep streaming changes for `grace`, then every
    /// connection closes and the server stays down until [`ApiServer::outage_ends`].
    pub fn shut_down_gracefully(&self, grace: Duration) {
        self.mutate(|inner| inner.draining = true);
        let shared = self.shared.clone();
        self.rt.as_ref().expect("runtime").spawn(async move {
            tokio::time::sleep(grace).await;
            let rv = {
                let mut inner = shared.0.lock().unwrap();
                inner.draining = false;
                inner.gone = true;
                inner.cut_gen += 1;
                for c in inner.conns.drain(..) {
                    c.abort();
                }
                inner.rv
            };
            shared.1.send_replace(rv);
        });
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
            let prev = inner.objects.insert((res, ns, name), obj.clone());
            let kind = if prev.is_some() { "MODIFIED" } else { "ADDED" };
            inner.log.push(Event {
                rv,
                res,
                kind,
                object: obj,
                prev,
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
                    object: obj.clone(),
                    prev: Some(obj),
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

    /// Removes (`false`) or installs (`true`) a custom resource's CRD: while removed, its
    /// lists and watches are 404 and its objects are gone (as deleting a CRD deletes them).
    pub fn set_installed(&self, res: Res, installed: bool) {
        self.mutate(|inner| {
            if installed {
                inner.uninstalled.remove(&res);
            } else {
                inner.uninstalled.insert(res);
                inner.objects.retain(|(r, _, _), _| *r != res);
                inner.cut_gen += 1;
            }
        });
    }

    /// Requests answered 404 for `res`'s path.
    pub fn not_found(&self, res: Res) -> u32 {
        let inner = self.shared.0.lock().unwrap();
        inner.not_found.get(res.path()).copied().unwrap_or(0)
    }

    /// An object written through the API, by its path (`/api/v1/namespaces/NS/secrets/NAME`).
    pub fn object(&self, path: &str) -> Option<Value> {
        self.shared.0.lock().unwrap().stored.get(path).cloned()
    }

    /// The paths of every object written through the API.
    pub fn object_paths(&self) -> Vec<String> {
        self.shared
            .0
            .lock()
            .unwrap()
            .stored
            .keys()
            .cloned()
            .collect()
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

/// An EndpointSlice of a headless Service (`clusterIP: None`), as the EndpointSlice controller
/// writes it: labelled `service.kubernetes.io/headless`, each endpoint `(address, hostname,
/// ready)` with its hostname (a StatefulSet pod's name; `""`: none).
pub fn headless_slice(
    ns: &str,
    name: &str,
    service: &str,
    endpoints: &[(&str, &str, bool)],
) -> Value {
    let eps: Vec<Ep<'_>> = endpoints
        .iter()
        .map(|(ip, _, ready)| (*ip, *ready, false, None))
        .collect();
    let mut s = slice(ns, name, service, &eps);
    s["metadata"]["labels"]["service.kubernetes.io/headless"] = json!("");
    for (e, (_, host, _)) in s["endpoints"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .zip(endpoints)
    {
        if !host.is_empty() {
            e["hostname"] = json!(host);
        }
    }
    s
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

/// A kubeconfig with one context per `(name, https URL, bearer token)`, each cluster trusting
/// the CA at `ca` (as `kubectl config set-cluster --certificate-authority` writes it).
pub fn kubeconfig_secure(contexts: &[(&str, String, &str)], ca: &std::path::Path) -> String {
    let mut s = String::from("apiVersion: v1\nkind: Config\nclusters:\n");
    for (n, url, _) in contexts {
        s.push_str(&format!(
            "- name: {n}\n  cluster:\n    server: {url}\n    certificate-authority: {}\n",
            ca.display()
        ));
    }
    s.push_str("users:\n");
    for (n, _, token) in contexts {
        s.push_str(&format!(
            "- name: {n}-reader\n  user:\n    token: {token}\n"
        ));
    }
    s.push_str("contexts:\n");
    for (n, _, _) in contexts {
        s.push_str(&format!(
            "- name: {n}\n  context:\n    cluster: {n}\n    user: {n}-reader\n"
        ));
    }
    if let Some((n, _, _)) = contexts.first() {
        s.push_str(&format!("current-context: {n}\n"));
    }
    s
}

/// A `DNSEndpoint` as ExternalDNS's CRD (`externaldns.k8s.io/v1alpha1`) defines it and KubeFed
/// or k8gb write it: one `(dnsName, recordType, targets, recordTTL)` per endpoint (a TTL of 0
/// leaves `recordTTL` out).
pub fn dns_endpoint(ns: &str, name: &str, endpoints: &[(&str, &str, &[&str], u32)]) -> Value {
    let eps: Vec<Value> = endpoints
        .iter()
        .map(|(dns_name, t, targets, ttl)| {
            let mut e = json!({"dnsName": dns_name, "recordType": t, "targets": targets,
                   "labels": {"resource": format!("dnsendpoint/{ns}/{name}")}});
            if *ttl > 0 {
                e["recordTTL"] = json!(ttl);
            }
            e
        })
        .collect();
    json!({
        "metadata": {"name": name, "namespace": ns, "generation": 1},
        "spec": {"endpoints": eps},
        "status": {"observedGeneration": 1}
    })
}

/// A `ServiceImport` as the MCS API's CRD (`multicluster.x-k8s.io/v1alpha1`, KEP-1645) defines
/// it and an MCS controller writes it in an importing cluster: `type` `ClusterSetIP` with the
/// IPs it allocated (none: `Headless`), the exported ports, and the exporting clusters in
/// `status.clusters`.
pub fn service_import(
    ns: &str,
    name: &str,
    ips: &[&str],
    ports: &[(&str, &str, u16)],
    clusters: &[&str],
) -> Value {
    let ports: Vec<Value> = ports
        .iter()
        .map(|(n, proto, port)| json!({"name": n, "protocol": proto, "port": port}))
        .collect();
    let clusters: Vec<Value> = clusters.iter().map(|c| json!({"cluster": c})).collect();
    let mut spec = json!({
        "type": if ips.is_empty() { "Headless" } else { "ClusterSetIP" },
        "ports": ports,
        "sessionAffinity": "None",
    });
    if !ips.is_empty() {
        spec["ips"] = json!(ips);
    }
    json!({
        "metadata": {"name": name, "namespace": ns, "generation": 1,
                     "annotations": {"multicluster.kubernetes.io/service-name": name}},
        "spec": spec,
        "status": {"clusters": clusters}
    })
}

/// A Gateway (`gateway.networking.k8s.io/v1`) with one HTTP listener per host name (none:
/// one listener for any host), its `status.addresses` and, when `programmed`, the
/// `Accepted` and `Programmed` conditions a controller sets.
pub fn gateway(
    ns: &str,
    name: &str,
    listener_hosts: &[&str],
    addresses: &[&str],
    programmed: bool,
) -> Value {
    let mut listeners: Vec<Value> = listener_hosts
        .iter()
        .enumerate()
        .map(|(i, h)| {
            json!({"name": format!("http-{i}"), "hostname": h, "port": 80, "protocol": "HTTP",
                             "allowedRoutes": {"namespaces": {"from": "Same"}}})
        })
        .collect();
    if listeners.is_empty() {
        listeners.push(json!({"name": "http", "port": 80, "protocol": "HTTP",
                              "allowedRoutes": {"namespaces": {"from": "Same"}}}));
    }
    let addrs: Vec<Value> = addresses
        .iter()
        .map(|a| {
            let t = if a.parse::<std::net::IpAddr>().is_ok() {
                "IPAddress"
            } else {
                "Hostname"
            };
            json!({"type": t, "value": a})
        })
        .collect();
    let (status, reason) = if programmed {
        ("True", "Programmed")
    } else {
        ("False", "Pending")
    };
    json!({
        "metadata": {"name": name, "namespace": ns, "generation": 1},
        "spec": {"gatewayClassName": "example", "listeners": listeners},
        "status": {
            "addresses": addrs,
            "conditions": [
                {"type": "Accepted", "status": "True", "reason": "Accepted", "message": "",
                 "observedGeneration": 1, "lastTransitionTime": "2026-11-22T09:28:41Z"},
                {"type": "Programmed", "status": status, "reason": reason, "message": "",
                 "observedGeneration": 1, "lastTransitionTime": "2026-11-22T09:28:41Z"}
            ]
        }
    })
}

/// An HTTPRoute attached to Gateway `gateway` (same namespace), sending to Service `backend`.
pub fn http_route(ns: &str, name: &str, hostnames: &[&str], gateway: &str, backend: &str) -> Value {
    json!({
        "metadata": {"name": name, "namespace": ns, "generation": 1},
        "spec": {
            "parentRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": gateway}],
            "hostnames": hostnames,
            "rules": [{
                "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                "backendRefs": [{"group": "", "kind": "Service", "name": backend, "port": 80, "weight": 1}]
            }]
        },
        "status": {"parents": [{
            "parentRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": gateway},
            "controllerName": "example.net/gateway-controller",
            "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted", "message": "",
                            "observedGeneration": 1, "lastTransitionTime": "2026-11-22T09:28:41Z"}]
        }]}
    })
}
