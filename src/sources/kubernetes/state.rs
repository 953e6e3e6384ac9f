//! What fedns remembers about each member cluster, and how all clusters become one
//! [`Federation`] snapshot.
//!
//! Only the fields DNS needs are kept (a few short strings and counters per Service, with its
//! validated `fedns.io/*` annotations, EndpointSlice, Ingress and Node), never whole Kubernetes
//! objects, and what objects have alike (namespaces, Service names, port and zone lists) is kept
//! once per store ([`Interner`]), so ten clusters of ten thousand services and as many
//! EndpointSlices fit in about 63 MB (`bench/kube_memory.rs`); the snapshot's lists are cut to
//! their length. Everything here is pure: no I/O, no kube types, the clock is passed in.
//! Guarantees: a re-list replaces a kind's contents atomically at its end (no gap while it runs);
//! a cluster contributes shards only once every kind it watches has been listed; fail static
//! (DESIGN §3): a cluster that stopped syncing keeps its last shards for the stale grace, and past
//! it they are dropped unless that would leave a name with no healthy address at all, in which
//! case they stay and are counted.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::config::{ClusterSpec, KubeSettings};
use crate::model::{
    Cluster, DnsName, Endpoint, EndpointName, Federation, Import, IngressHost, Policy, RData,
    Service, ServicePort, Shard, rtype,
};
use crate::selection::is_healthy;

/// `(namespace, name)`; cluster-scoped objects have an empty namespace. `Arc<str>`, not
/// `String`: a store keeps each namespace once ([`Interner`]), and the keys of its indexes
/// (`members`, `touched`, the [`Assembler`]'s) are clones of its own, not copies.
pub type Key = (Arc<str>, Arc<str>);

/// What never grows once translated is a boxed slice (no spare capacity, 16 bytes inline, none
/// allocated when empty); port lists are shared between the Services that have the same.
#[derive(Debug, Clone, PartialEq)]
pub struct SlimService {
    pub ports: Arc<[ServicePort]>,
    /// `spec.clusterIPs` (else `spec.clusterIP`), sorted; none for a headless Service.
    pub cluster_ips: Ips,
    pub lb_ips: Ips,
    pub lb_hosts: Box<[String]>,
    /// Its `fedns.io/*` annotations.
    pub settings: Settings,
}

/// A sorted list of addresses, without an allocation for the one a Service mostly has (one
/// cluster IP, one load-balancer address). Reads as a slice.
#[derive(Debug, Clone, Default)]
pub enum Ips {
    #[default]
    None,
    One(IpAddr),
    Many(Box<[IpAddr]>),
}

impl From<Vec<IpAddr>> for Ips {
    fn from(v: Vec<IpAddr>) -> Self {
        match v[..] {
            [] => Ips::None,
            [ip] => Ips::One(ip),
            _ => Ips::Many(v.into_boxed_slice()),
        }
    }
}

impl std::ops::Deref for Ips {
    type Target = [IpAddr];
    fn deref(&self) -> &[IpAddr] {
        match self {
            Ips::None => &[],
            Ips::One(ip) => std::slice::from_ref(ip),
            Ips::Many(v) => v,
        }
    }
}

/// Equal when they list the same addresses, however held.
impl PartialEq for Ips {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

/// A Service's [`Annotations`], allocated only when it has some: most Services have none, and
/// inline they would be most of a Service's bytes. Reads as the annotations (none: all unset).
#[derive(Debug, Clone, Default)]
pub struct Settings(Option<Box<Annotations>>);

/// What a Service without `fedns.io/*` annotations reads.
static NO_ANNOTATIONS: Annotations = Annotations {
    ttl: None,
    policy: None,
    weight: None,
    bad: Vec::new(),
};

impl From<Annotations> for Settings {
    fn from(a: Annotations) -> Self {
        Settings((a != NO_ANNOTATIONS).then(|| Box::new(a)))
    }
}

impl std::ops::Deref for Settings {
    type Target = Annotations;
    fn deref(&self) -> &Annotations {
        self.0.as_deref().unwrap_or(&NO_ANNOTATIONS)
    }
}

impl std::ops::DerefMut for Settings {
    fn deref_mut(&mut self) -> &mut Annotations {
        self.0.get_or_insert_default()
    }
}

/// Equal when they read the same, allocated or not.
impl PartialEq for Settings {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

/// The per-service annotations of a federated Service (validated).
pub const TTL: &str = "fedns.io/ttl";
pub const POLICY: &str = "fedns.io/policy";
pub const WEIGHT: &str = "fedns.io/weight";
pub const FAILOVER: &str = "fedns.io/failover";

/// What a Service's `fedns.io/*` annotations say. A bad value leaves its setting as it was
/// (the last good value this cluster's Service had, [`Grouped::carry`]) and is listed in `bad`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Annotations {
    /// `fedns.io/ttl`: seconds, 1..=2147483647 (RFC 2181).
    pub ttl: Option<u32>,
    /// `fedns.io/policy` (`geo`, `all`, `weighted`, `failover`) with `fedns.io/failover`
    /// (comma-separated clusters or regions, in order; alone it implies `failover`).
    pub policy: Option<Policy>,
    /// `fedns.io/weight`: this cluster's shard's weight under `weighted`.
    pub weight: Option<u32>,
    /// (annotation, value, why) of every bad value.
    pub bad: Vec<(&'static str, String, String)>,
}

impl Annotations {
    /// Reads the annotations through `get` (annotation → value).
    pub fn parse<'a>(get: impl Fn(&str) -> Option<&'a str>) -> Annotations {
        let mut a = Annotations::default();
        let mut list: Vec<(&'static str, String, String)> = Vec::new();
        let number =
            |k: &'static str, v: &str, max: u32, list: &mut Vec<_>| match v.trim().parse::<u32>() {
                Ok(n) if n <= max => Some(n),
                _ => {
                    list.push((k, v.to_string(), format!("not a whole number 0..={max}")));
                    None
                }
            };
        if let Some(v) = get(TTL) {
            a.ttl = number(TTL, v, i32::MAX as u32, &mut list);
            if a.ttl == Some(0) {
                a.ttl = None;
                list.push((TTL, v.to_string(), "must be at least 1".into()));
            }
        }
        if let Some(v) = get(WEIGHT) {
            a.weight = number(WEIGHT, v, 1_000_000, &mut list);
        }
        let order: Option<Vec<String>> = get(FAILOVER).and_then(|v| {
            let order: Vec<String> = v.split(',').map(|e| e.trim().to_string()).collect();
            if order
                .iter()
                .any(|e| e.is_empty() || e.contains(char::is_whitespace))
            {
                list.push((
                    FAILOVER,
                    v.to_string(),
                    "not a comma-separated list of clusters or regions".into(),
                ));
                return None;
            }
            Some(order)
        });
        let failover_bad = list.iter().any(|(k, _, _)| *k == FAILOVER);
        match get(POLICY).map(str::trim) {
            None => a.policy = order.map(Policy::Failover),
            Some("geo") => a.policy = Some(Policy::Geo),
            Some("all") => a.policy = Some(Policy::All),
            Some("weighted") => a.policy = Some(Policy::Weighted),
            Some("failover") => match order {
                Some(o) => a.policy = Some(Policy::Failover(o)),
                None if failover_bad => {}
                None => list.push((
                    POLICY,
                    "failover".into(),
                    format!("failover needs {FAILOVER} (the order)"),
                )),
            },
            Some(v) => list.push((
                POLICY,
                v.to_string(),
                "not geo, all, weighted or failover".into(),
            )),
        }
        if matches!(a.policy, Some(Policy::Geo | Policy::All | Policy::Weighted))
            && let Some(v) = get(FAILOVER)
        {
            list.push((
                FAILOVER,
                v.to_string(),
                format!("set while {POLICY} is not failover"),
            ));
        }
        list.shrink_to_fit();
        a.bad = list;
        a
    }

    /// Whether annotation `k` has a bad value.
    fn is_bad(&self, k: &str) -> bool {
        self.bad.iter().any(|(b, _, _)| *b == k)
    }
}

impl SlimService {
    /// The bad annotation values of `self` that `old` (this Service before) did not have:
    /// what to log and count, once per change.
    pub fn new_annotation_errors<'a>(
        &'a self,
        old: Option<&SlimService>,
    ) -> impl Iterator<Item = &'a (&'static str, String, String)> {
        self.settings
            .bad
            .iter()
            .filter(move |b| old.is_none_or(|o| !o.settings.bad.contains(b)))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlimSlice {
    /// Shared between the slices of a Service and the store's index of them.
    pub service: Arc<str>,
    pub ready: u32,
    pub not_ready: u32,
    /// Zones of the ready endpoints, sorted (a list shared between the slices that have the
    /// same).
    pub zones: Arc<[String]>,
    /// Some ready endpoint had no zone.
    pub zoneless: bool,
    /// The ready endpoints, sorted, of a headless Service's slice (one the EndpointSlice
    /// controller labels `service.kubernetes.io/headless`); `None` for any other slice.
    pub headless: Option<Box<[Endpoint]>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlimIngress {
    pub hosts: Vec<String>,
    pub backends: Vec<String>,
    pub lb_ips: Vec<IpAddr>,
    pub lb_hosts: Vec<String>,
}

/// A `DNSEndpoint`'s endpoints, parsed: `(name, TTL given, record)` for each valid target, and
/// why the others were skipped (logged and counted by the source, once per object change).
#[derive(Debug, Clone, PartialEq)]
pub struct SlimEndpoints {
    pub records: Vec<(DnsName, Option<u32>, RData)>,
    pub skipped: Vec<String>,
}

/// A Gateway API `Gateway`: its listeners, `status.addresses`, and whether its `Programmed`
/// condition is `True`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlimGateway {
    pub listeners: Vec<Listener>,
    pub lb_ips: Vec<IpAddr>,
    pub lb_hosts: Vec<String>,
    pub programmed: bool,
}

/// One Gateway listener: its `name` (what a route's `parentRefs[].sectionName` names) and its
/// `hostname`, lowercased, maybe a `*.` wildcard; none matches any host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub name: String,
    pub hostname: Option<String>,
    /// Its `port` (what a route's `parentRefs[].port` names).
    pub port: Option<u16>,
}

/// A route's `parentRefs[]` entry for a Gateway: `(namespace, name)` and the listeners it
/// names (`sectionName` and `port`, each narrowing; neither: every listener of that Gateway).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ParentRef {
    pub gateway: Key,
    pub section: Option<String>,
    pub port: Option<u16>,
}

impl ParentRef {
    /// Whether this entry attaches to listener `l` of Gateway `gateway` (Gateway API
    /// `ParentReference`: a `port` no listener has attaches to nothing).
    pub fn attaches(&self, gateway: &Key, l: &Listener) -> bool {
        &self.gateway == gateway
            && self.section.as_ref().is_none_or(|s| s == &l.name)
            && self.port.is_none_or(|p| l.port == Some(p))
    }
}

/// An `HTTPRoute`: its host names (lowercased, maybe `*.` wildcards), the Gateway listeners it
/// attaches to (`parentRefs`) and the Services it sends to (`backendRefs`, `(namespace, name)`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlimRoute {
    pub hostnames: Vec<String>,
    pub parents: Vec<ParentRef>,
    pub backends: Vec<Key>,
}

/// The host names a route serves on a listener, per the Gateway API's hostname intersection
/// (HTTPRouteSpec `hostnames`): a listener without a host name takes the route's; a route
/// without host names takes the listener's; otherwise each pair of names yields the more
/// precise one when one covers the other (`*.example.com` covers `a.example.com` and
/// `a.b.example.com`, never `example.com`). Empty: the route does not attach to that listener.
pub fn route_hosts_on(route: &[String], listener: Option<&str>) -> Vec<String> {
    let Some(l) = listener else {
        return route.to_vec();
    };
    if route.is_empty() {
        return vec![l.to_string()];
    }
    let mut out: Vec<String> = route
        .iter()
        .filter_map(|r| {
            if covers(l, r) {
                Some(r.clone())
            } else if covers(r, l) {
                Some(l.to_string())
            } else {
                None
            }
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Whether host name pattern `wide` matches every name `narrow` matches: equal, or `wide` is
/// `*.S` and `narrow` has at least one more label before `.S`.
fn covers(wide: &str, narrow: &str) -> bool {
    if wide == narrow {
        return true;
    }
    let Some(suffix) = wide.strip_prefix('*') else {
        return false;
    };
    // `suffix` is `.S`; `narrow` must be `X.S` with X not empty (X may itself be `*`).
    narrow.len() > suffix.len() && narrow.ends_with(suffix)
}

/// Whether `*` appears in `name` only as its whole first label (an RFC 4592 wildcard, or
/// not at all): a `*` anywhere else would be a literal label no client means.
pub fn wildcard_only_first(name: &DnsName) -> bool {
    name.labels()
        .enumerate()
        .all(|(i, l)| !l.contains(&b'*') || (i == 0 && l == b"*"))
}

/// An MCS `ServiceImport`: the cluster-set IPs of a `ClusterSetIP` import (none for a
/// `Headless` one) and its named ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlimImport {
    pub ips: Vec<IpAddr>,
    pub headless: bool,
    pub ports: Vec<ServicePort>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlimNode {
    pub region: Option<String>,
    pub zone: Option<String>,
}

/// One watch event, translated. `None` as a value means "not of interest" (e.g. a Service that
/// is not federated), which removes any earlier entry under that key.
#[derive(Debug, Clone)]
pub enum Change<T> {
    Init,
    InitApply(Key, Option<T>),
    InitDone,
    Apply(Key, Option<T>),
    Delete(Key),
}

/// How an object's changes reach the services they affect: a Service is its own group, an
/// EndpointSlice belongs to the Service it names.
pub trait Grouped {
    /// Whether the store keeps, per group, the keys of its members (slices per service).
    const INDEXED: bool = false;
    fn group(&self, key: &Key) -> Key {
        key.clone()
    }
    /// Called with the object this one replaces: keeps from it what this one says badly
    /// (a Service's last good annotation values).
    fn carry(&mut self, _old: &Self) {}
    /// Swaps the values many objects of a store have alike for the store's shared copies.
    fn share(&mut self, _: &mut Interner) {}
}

/// Equal values shared between a store's objects: namespaces, a slice's Service name, port and
/// zone lists (a few distinct values among thousands of objects), each kept once. Only memory
/// depends on it: a shared value equals the one it replaces. A value no object holds any more
/// is dropped at the next sweep, which runs at the end of each list and whenever the interner
/// has doubled since the last one, so it holds at most about twice what the store uses.
#[derive(Debug, Default)]
pub struct Interner {
    strs: HashSet<Arc<str>>,
    zones: HashSet<Arc<[String]>>,
    ports: HashSet<Arc<[ServicePort]>>,
    /// Values held after the last sweep.
    swept: usize,
}

impl Interner {
    /// The shared copy of `v` (`v` itself when it is the first).
    fn share<T: ?Sized + Eq + Hash>(set: &mut HashSet<Arc<T>>, v: &Arc<T>) -> Arc<T> {
        match set.get(v) {
            Some(s) => s.clone(),
            None => {
                set.insert(v.clone());
                v.clone()
            }
        }
    }

    pub fn str(&mut self, v: &mut Arc<str>) {
        *v = Self::share(&mut self.strs, v);
        self.maybe_sweep();
    }

    pub fn zones(&mut self, v: &mut Arc<[String]>) {
        *v = Self::share(&mut self.zones, v);
        self.maybe_sweep();
    }

    pub fn ports(&mut self, v: &mut Arc<[ServicePort]>) {
        *v = Self::share(&mut self.ports, v);
        self.maybe_sweep();
    }

    fn len(&self) -> usize {
        self.strs.len() + self.zones.len() + self.ports.len()
    }

    fn maybe_sweep(&mut self) {
        if self.len() > 2 * self.swept + 64 {
            self.sweep();
        }
    }

    /// Drops what only the interner holds.
    fn sweep(&mut self) {
        self.strs.retain(|v| Arc::strong_count(v) > 1);
        self.zones.retain(|v| Arc::strong_count(v) > 1);
        self.ports.retain(|v| Arc::strong_count(v) > 1);
        self.swept = self.len();
    }
}

impl Grouped for SlimService {
    fn share(&mut self, i: &mut Interner) {
        i.ports(&mut self.ports);
    }
    fn carry(&mut self, old: &Self) {
        let (new, was) = (&mut self.settings, &old.settings);
        if new.is_bad(TTL) {
            new.ttl = was.ttl;
        }
        if new.is_bad(WEIGHT) {
            new.weight = was.weight;
        }
        if new.is_bad(POLICY) || new.is_bad(FAILOVER) {
            new.policy = was.policy.clone();
        }
    }
}
impl Grouped for SlimIngress {}
impl Grouped for SlimNode {}
impl Grouped for SlimEndpoints {}
impl Grouped for SlimGateway {}
impl Grouped for SlimRoute {}
/// A ServiceImport is named after the service it imports: its own group, like a Service.
impl Grouped for SlimImport {}
impl Grouped for SlimSlice {
    const INDEXED: bool = true;
    fn group(&self, key: &Key) -> Key {
        (key.0.clone(), self.service.clone())
    }
    fn share(&mut self, i: &mut Interner) {
        i.str(&mut self.service);
        i.zones(&mut self.zones);
    }
}

/// One kind's objects, as a reflector would keep them, but slim.
#[derive(Debug)]
pub struct Store<T> {
    pub live: HashMap<Key, T>,
    relist: Option<HashMap<Key, T>>,
    /// A list has completed at least once.
    pub synced: bool,
    /// group → names of its live members (kinds with [`Grouped::INDEXED`]); read through
    /// [`Store::members_of`].
    members: HashMap<Key, Members>,
    /// Groups whose members changed since the last [`Store::take_touched`], or `None` after a
    /// re-list (anything may have changed).
    touched: Option<BTreeSet<Key>>,
    /// Changes with every change of `live`, unique over all stores (0: never changed, empty),
    /// so a result computed from a store is reused while its version stays.
    pub version: u64,
    /// What the objects of `live` and of a re-list have alike, kept once.
    interner: Interner,
}

/// The next [`Store::version`].
fn next_version() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

impl<T> Default for Store<T> {
    fn default() -> Self {
        Store {
            live: HashMap::new(),
            relist: None,
            synced: false,
            members: HashMap::new(),
            touched: None,
            version: 0,
            interner: Interner::default(),
        }
    }
}

impl<T> Store<T> {
    /// A store of a kind not watched: listed, and empty for good.
    fn listed() -> Self {
        Store {
            synced: true,
            ..Store::default()
        }
    }
}

impl<T: PartialEq + Grouped> Store<T> {
    /// The groups changed since the last call (`None`: every group may have), and forgets them.
    pub fn take_touched(&mut self) -> Option<BTreeSet<Key>> {
        self.touched.replace(BTreeSet::new())
    }

    fn touch(&mut self, group: Key) {
        if let Some(t) = &mut self.touched {
            t.insert(group);
        }
    }

    fn index(&mut self, key: &Key, old: Option<Key>, new: Option<Key>) {
        if !T::INDEXED || old == new {
            return;
        }
        if let Some(g) = old
            && let Some(m) = self.members.get_mut(&g)
            && m.remove(&key.1)
        {
            self.members.remove(&g);
        }
        if let Some(g) = new {
            add_member(&mut self.members, g, key);
        }
    }

    /// The live members of `group` (kinds with [`Grouped::INDEXED`]; none for the others).
    pub fn members_of<'a>(&'a self, group: &Key) -> impl Iterator<Item = &'a T> + 'a {
        let names = self.members.get(group).map_or(&[][..], Members::names);
        let ns = group.0.clone();
        names
            .iter()
            .filter_map(move |n| self.live.get(&(ns.clone(), n.clone())))
    }

    /// Shares `key`'s namespace and `v`'s common values with the other objects of the store.
    fn share(&mut self, key: &mut Key, v: Option<&mut T>) {
        self.interner.str(&mut key.0);
        if let Some(v) = v {
            v.share(&mut self.interner);
        }
    }

    /// Applies one change; true when what DNS sees may have changed.
    pub fn apply(&mut self, change: Change<T>) -> bool {
        let changed = self.apply_inner(change);
        if changed {
            self.version = next_version();
        }
        changed
    }

    fn apply_inner(&mut self, mut change: Change<T>) -> bool {
        match &mut change {
            Change::InitApply(k, v) | Change::Apply(k, v) => self.share(k, v.as_mut()),
            Change::Delete(_) | Change::Init | Change::InitDone => {}
        }
        match change {
            Change::Init => {
                self.relist = Some(HashMap::new());
                false
            }
            Change::InitApply(k, v) => {
                if let (Some(buf), Some(mut v)) = (self.relist.as_mut(), v) {
                    if let Some(old) = self.live.get(&k) {
                        v.carry(old);
                    }
                    buf.insert(k, v);
                }
                false
            }
            Change::InitDone => {
                let fresh = self.relist.take().unwrap_or_default();
                let changed = !self.synced || fresh != self.live;
                self.live = fresh;
                self.synced = true;
                if changed {
                    self.touched = None;
                    if T::INDEXED {
                        self.members.clear();
                        for (k, v) in &self.live {
                            add_member(&mut self.members, v.group(k), k);
                        }
                    }
                }
                // The replaced objects are gone: so are the values only they had.
                self.interner.sweep();
                changed
            }
            Change::Apply(k, Some(mut v)) => {
                // Events between Init and InitDone would be lost on the swap otherwise.
                if let Some(buf) = self.relist.as_mut() {
                    if let Some(old) = buf.get(&k).or(self.live.get(&k)) {
                        v.carry(old);
                    }
                    buf.insert(k.clone(), v);
                    return false;
                }
                if let Some(old) = self.live.get(&k) {
                    v.carry(old);
                }
                if self.live.get(&k) == Some(&v) {
                    return false;
                }
                let new = v.group(&k);
                let old = self.live.insert(k.clone(), v).map(|o| o.group(&k));
                if let Some(g) = &old {
                    self.touch(g.clone());
                }
                self.touch(new.clone());
                self.index(&k, old, Some(new));
                true
            }
            Change::Apply(k, None) | Change::Delete(k) => {
                if let Some(buf) = self.relist.as_mut() {
                    buf.remove(&k);
                    return false;
                }
                match self.live.remove(&k) {
                    Some(o) => {
                        let g = o.group(&k);
                        self.touch(g.clone());
                        self.index(&k, Some(g), None);
                        true
                    }
                    None => false,
                }
            }
        }
    }
}

/// The names of a group's members, which are in the group's namespace (an indexed kind's
/// [`Grouped::group`] keeps the member's): most groups have one (a Service with one
/// EndpointSlice), held without an allocation, shared with the key in `live`.
#[derive(Debug, Clone)]
enum Members {
    One(Arc<str>),
    Many(Vec<Arc<str>>),
}

impl Members {
    fn names(&self) -> &[Arc<str>] {
        match self {
            Members::One(n) => std::slice::from_ref(n),
            Members::Many(v) => v,
        }
    }

    /// Removes `name`; true when no member is left.
    fn remove(&mut self, name: &str) -> bool {
        match self {
            Members::One(n) => **n == *name,
            Members::Many(v) => {
                v.retain(|n| **n != *name);
                let empty = v.is_empty();
                if let [one] = &v[..] {
                    let one = one.clone();
                    *self = Members::One(one);
                }
                empty
            }
        }
    }
}

/// Adds `key` to `group`'s members.
fn add_member(members: &mut HashMap<Key, Members>, group: Key, key: &Key) {
    debug_assert!(group.0 == key.0, "a member is in its group's namespace");
    match members.entry(group) {
        std::collections::hash_map::Entry::Occupied(mut e) => match e.get_mut() {
            Members::Many(v) => v.push(key.1.clone()),
            m @ Members::One(_) => {
                let first = m.names()[0].clone();
                *m = Members::Many(vec![first, key.1.clone()]);
            }
        },
        std::collections::hash_map::Entry::Vacant(e) => {
            e.insert(Members::One(key.1.clone()));
        }
    }
}

/// The kinds a cluster is watched for: four always, the custom resources when enabled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Services,
    EndpointSlices,
    Ingresses,
    Nodes,
    DnsEndpoints,
    Gateways,
    HttpRoutes,
    ServiceImports,
}

impl Kind {
    pub const ALL: [Kind; 8] = [
        Kind::Services,
        Kind::EndpointSlices,
        Kind::Ingresses,
        Kind::Nodes,
        Kind::DnsEndpoints,
        Kind::Gateways,
        Kind::HttpRoutes,
        Kind::ServiceImports,
    ];

    /// `resource.group` as RBAC and kubectl name it.
    pub fn resource(self) -> &'static str {
        match self {
            Kind::Services => "services",
            Kind::EndpointSlices => "endpointslices.discovery.k8s.io",
            Kind::Ingresses => "ingresses.networking.k8s.io",
            Kind::Nodes => "nodes",
            Kind::DnsEndpoints => "dnsendpoints.externaldns.k8s.io",
            Kind::Gateways => "gateways.gateway.networking.k8s.io",
            Kind::HttpRoutes => "httproutes.gateway.networking.k8s.io",
            Kind::ServiceImports => "serviceimports.multicluster.x-k8s.io",
        }
    }

    /// Defined by a CRD, which a member may not have installed.
    pub fn is_custom(self) -> bool {
        matches!(
            self,
            Kind::DnsEndpoints | Kind::Gateways | Kind::HttpRoutes | Kind::ServiceImports
        )
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

#[derive(Debug)]
pub struct ClusterState {
    pub services: Store<SlimService>,
    pub slices: Store<SlimSlice>,
    pub ingresses: Store<SlimIngress>,
    pub nodes: Store<SlimNode>,
    pub dns_endpoints: Store<SlimEndpoints>,
    pub gateways: Store<SlimGateway>,
    pub routes: Store<SlimRoute>,
    pub imports: Store<SlimImport>,
    /// The latest error of each kind's watch, until it recovers.
    pub errors: [Option<String>; 8],
    /// Custom resources whose CRD the API server does not have (404): they count as listed
    /// and empty, and are checked again now and then.
    pub missing: [bool; 8],
    /// When the cluster stopped being in sync (any kind failing or the client unusable).
    pub down_since: Option<Instant>,
    /// Why the client could not be built, if it could not.
    pub client_error: Option<String>,
}

/// The state of a cluster that watches no custom resource (they count as listed, empty).
impl Default for ClusterState {
    fn default() -> Self {
        ClusterState {
            services: Store::default(),
            slices: Store::default(),
            ingresses: Store::default(),
            nodes: Store::default(),
            dns_endpoints: Store::listed(),
            gateways: Store::listed(),
            routes: Store::listed(),
            imports: Store::listed(),
            errors: Default::default(),
            missing: [false; 8],
            down_since: None,
            client_error: None,
        }
    }
}

impl ClusterState {
    /// A state for `spec`'s kinds: the custom resources it does not watch count as listed.
    pub fn for_spec(spec: &ClusterSpec) -> Self {
        let mut s = ClusterState::default();
        s.dns_endpoints.synced = !spec.dns_endpoints;
        s.gateways.synced = !spec.gateway_api;
        s.routes.synced = !spec.gateway_api;
        s.imports.synced = !spec.service_imports;
        s
    }

    fn synced(&self, kind: Kind) -> bool {
        match kind {
            Kind::Services => self.services.synced,
            Kind::EndpointSlices => self.slices.synced,
            Kind::Ingresses => self.ingresses.synced,
            Kind::Nodes => self.nodes.synced,
            Kind::DnsEndpoints => self.dns_endpoints.synced,
            Kind::Gateways => self.gateways.synced,
            Kind::HttpRoutes => self.routes.synced,
            Kind::ServiceImports => self.imports.synced,
        }
    }

    /// A custom resource is not installed: whatever it held is gone, and it counts as listed.
    pub fn crd_missing(&mut self, kind: Kind) -> bool {
        self.missing[kind.index()] = true;
        match kind {
            Kind::DnsEndpoints => empty(&mut self.dns_endpoints),
            Kind::Gateways => empty(&mut self.gateways),
            Kind::HttpRoutes => empty(&mut self.routes),
            Kind::ServiceImports => empty(&mut self.imports),
            _ => false,
        }
    }

    /// Every kind has been listed at least once: the data is complete enough to serve.
    pub fn complete(&self) -> bool {
        Kind::ALL.iter().all(|k| self.synced(*k))
    }

    /// In sync right now: complete and nothing failing.
    pub fn up(&self) -> bool {
        self.complete() && self.client_error.is_none() && self.errors.iter().all(Option::is_none)
    }

    /// What is wrong, for logs and `/readyz`; `None` when up.
    pub fn problem(&self) -> Option<String> {
        if let Some(e) = &self.client_error {
            return Some(e.clone());
        }
        let errs: Vec<&str> = self.errors.iter().flatten().map(String::as_str).collect();
        if !errs.is_empty() {
            return Some(errs.join("; "));
        }
        let pending: Vec<&str> = Kind::ALL
            .iter()
            .filter(|k| !self.synced(**k))
            .map(|k| k.resource())
            .collect();
        (!pending.is_empty())
            .then(|| format!("waiting for the first list of {}", pending.join(", ")))
    }

    /// Topology from Node labels: the most common region, and every zone in it.
    fn topology(&self) -> (Option<String>, Vec<String>) {
        let mut regions: BTreeMap<&str, usize> = BTreeMap::new();
        for n in self.nodes.live.values() {
            if let Some(r) = &n.region {
                *regions.entry(r).or_default() += 1;
            }
        }
        let region = regions
            .iter()
            .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
            .map(|(r, _)| r.to_string());
        let zones: BTreeSet<&str> = self
            .nodes
            .live
            .values()
            .filter(|n| n.region == region)
            .filter_map(|n| n.zone.as_deref())
            .collect();
        (region, zones.into_iter().map(String::from).collect())
    }
}

/// How a cluster's data is used in a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// In sync, or out of sync for less than the stale grace.
    Serving,
    /// Out of sync for longer than the grace: used only where nothing else is left.
    Expired,
    /// Never complete: contributes nothing.
    Absent,
}

fn empty<T: PartialEq + Grouped>(store: &mut Store<T>) -> bool {
    store.apply(Change::Init);
    store.apply(Change::InitDone)
}

pub fn freshness(state: &ClusterState, now: Instant, grace: Duration) -> Freshness {
    if !state.complete() {
        return Freshness::Absent;
    }
    match state.down_since {
        Some(t) if now.saturating_duration_since(t) >= grace => Freshness::Expired,
        _ => Freshness::Serving,
    }
}

/// Endpoints of one service in one cluster: ready, not ready, zones of the ready ones, and
/// whether some ready endpoint had no zone.
type Tally<'a> = (u32, u32, BTreeSet<&'a str>, bool);

fn tally<'a>(state: &'a ClusterState, service: &Key) -> Tally<'a> {
    let mut t: Tally<'a> = Default::default();
    for s in state.slices.members_of(service) {
        t.0 += s.ready;
        t.1 += s.not_ready;
        t.2.extend(s.zones.iter().map(String::as_str));
        t.3 |= s.zoneless;
    }
    t
}

/// The ready endpoints of a headless service in one cluster, sorted, an endpoint in two slices
/// once; `None` when none of its slices is a headless Service's.
fn headless_endpoints(state: &ClusterState, service: &Key) -> Option<Vec<Endpoint>> {
    let mut out: Option<Vec<Endpoint>> = None;
    for s in state.slices.members_of(service) {
        if let Some(eps) = &s.headless {
            out.get_or_insert_with(Vec::new).extend(eps.iter().cloned());
        }
    }
    if let Some(v) = &mut out {
        v.sort();
        v.dedup();
    }
    out
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct AssembleStats {
    /// Names served from expired clusters because nothing else was left (fail static).
    pub fail_static_names: usize,
    /// `DNSEndpoint` records left out because they conflict with others of the same name
    /// (a CNAME beside other data, two CNAME targets), one message per name.
    pub endpoint_conflicts: Vec<String>,
}

/// One cluster as an assembly uses it.
struct View<'a> {
    spec: &'a ClusterSpec,
    state: &'a ClusterState,
    fresh: Freshness,
    zones: Vec<String>,
}

/// What a service's shards were computed from, besides its own objects: each cluster's name,
/// freshness and zones, and the resolved hostnames. Any change recomputes every service.
#[derive(PartialEq)]
struct Basis {
    clusters: Vec<(String, Freshness, Vec<String>)>,
    resolved: HashMap<String, Vec<IpAddr>>,
}

/// Keeps the services of the last snapshot, so that the next one recomputes only the services
/// whose objects changed (and shares the others, `Arc` and all).
#[derive(Default)]
pub struct Assembler {
    basis: Option<Basis>,
    /// (namespace, name) → the service, and whether it is served from expired clusters.
    services: BTreeMap<Key, (std::sync::Arc<Service>, bool)>,
    /// The DNSEndpoint names of the last snapshot and what they were computed from (the TTL,
    /// each cluster's name, freshness and store version): an EndpointSlice change does not
    /// recompute thousands of them.
    endpoints: Option<(
        EndpointBasis,
        std::sync::Arc<Vec<EndpointName>>,
        AssembleStats,
    )>,
}

type EndpointBasis = (u32, Vec<(String, Freshness, u64)>);

/// Builds the federation snapshot from every cluster's state from scratch. `resolved` maps
/// load-balancer hostnames to the addresses last resolved for them.
pub fn assemble(
    settings: &KubeSettings,
    clusters: &[(&ClusterSpec, &ClusterState)],
    resolved: &HashMap<String, Vec<IpAddr>>,
    now: Instant,
) -> (Federation, AssembleStats) {
    Assembler::default().assemble(settings, clusters, resolved, now, None)
}

impl Assembler {
    /// The federation snapshot. `touched`: the services whose Service or EndpointSlice objects
    /// changed in any cluster since the last call (`None`: any may have).
    pub fn assemble(
        &mut self,
        settings: &KubeSettings,
        clusters: &[(&ClusterSpec, &ClusterState)],
        resolved: &HashMap<String, Vec<IpAddr>>,
        now: Instant,
        touched: Option<BTreeSet<Key>>,
    ) -> (Federation, AssembleStats) {
        let mut model_clusters = Vec::new();
        let mut views = Vec::new();
        for (spec, state) in clusters {
            let fresh = freshness(state, now, settings.stale_grace);
            if fresh == Freshness::Absent {
                continue;
            }
            let (node_region, node_zones) = state.topology();
            let region = spec.region.clone().or(node_region);
            let zones = if spec.zones.is_empty() {
                node_zones
            } else {
                spec.zones.clone()
            };
            if let Some(region) = &region {
                model_clusters.push(Cluster {
                    name: spec.name.clone(),
                    region: region.clone(),
                    zones: zones.clone(),
                    weight: spec.weight,
                    client_networks: spec.client_networks.clone(),
                });
            }
            views.push(View {
                spec,
                state,
                fresh,
                zones,
            });
        }
        let basis = Basis {
            clusters: views
                .iter()
                .map(|v| (v.spec.name.clone(), v.fresh, v.zones.clone()))
                .collect(),
            resolved: resolved.clone(),
        };
        let keys: BTreeSet<Key> = match touched {
            Some(t) if self.basis.as_ref() == Some(&basis) => t,
            _ => {
                self.services.clear();
                views
                    .iter()
                    .flat_map(|v| (v.state.services.live.keys()).chain(v.state.imports.live.keys()))
                    .cloned()
                    .collect()
            }
        };
        self.basis = Some(basis);
        for key in keys {
            match service_of(&key, &views, resolved) {
                Some((svc, expired)) => {
                    let same = self.services.get(&key).is_some_and(|(s, _)| **s == svc);
                    if same {
                        if let Some(e) = self.services.get_mut(&key) {
                            e.1 = expired;
                        }
                    } else {
                        self.services
                            .insert(key, (std::sync::Arc::new(svc), expired));
                    }
                }
                None => {
                    self.services.remove(&key);
                }
            }
        }
        let mut stats = AssembleStats {
            fail_static_names: self.services.values().filter(|(_, e)| *e).count(),
            ..AssembleStats::default()
        };
        let ingress_hosts = ingress_hosts(&views, resolved, &mut stats);
        let basis: EndpointBasis = (
            settings.ttl,
            views
                .iter()
                .map(|v| (v.spec.name.clone(), v.fresh, v.state.dns_endpoints.version))
                .collect(),
        );
        let endpoints = match &self.endpoints {
            Some((b, eps, st)) if *b == basis => {
                stats.fail_static_names += st.fail_static_names;
                stats.endpoint_conflicts = st.endpoint_conflicts.clone();
                eps.clone()
            }
            _ => {
                let mut st = AssembleStats::default();
                let eps = std::sync::Arc::new(endpoints(settings, &views, &mut st));
                stats.fail_static_names += st.fail_static_names;
                stats.endpoint_conflicts = st.endpoint_conflicts.clone();
                self.endpoints = Some((basis, eps.clone(), st));
                eps
            }
        };
        model_clusters.sort_by(|a, b| a.name.cmp(&b.name));
        (
            Federation {
                name: settings.federation.clone(),
                zone: settings.zone.clone(),
                ttl: settings.ttl,
                max_answers: settings.max_answers,
                policy: settings.policy.clone(),
                clusters: model_clusters,
                services: self.services.values().map(|(s, _)| s.clone()).collect(),
                ingress_hosts,
                cluster_domain: settings.cluster_domain.clone(),
                clusterset_domain: settings.clusterset_domain.clone(),
                endpoints,
            },
            stats,
        )
    }
}

fn addresses(
    resolved: &HashMap<String, Vec<IpAddr>>,
    ips: &[IpAddr],
    names: &[String],
) -> Vec<IpAddr> {
    let mut v: Vec<IpAddr> = ips.to_vec();
    for n in names {
        v.extend(resolved.get(n).into_iter().flatten().copied());
    }
    v.sort();
    v.dedup();
    v
}

/// Fail static: expired clusters' shards stay where nothing else is healthy. True if they did.
fn fail_static(serving: &mut Vec<Shard>, expired: Vec<Shard>) -> bool {
    if !serving.iter().any(is_healthy) && expired.iter().any(is_healthy) {
        serving.extend(expired);
        return true;
    }
    false
}

/// One service across every cluster (`None`: no cluster has it), and whether it is served from
/// expired clusters.
fn service_of(
    key: &Key,
    views: &[View<'_>],
    resolved: &HashMap<String, Vec<IpAddr>>,
) -> Option<(Service, bool)> {
    let mut ports: Vec<ServicePort> = Vec::new();
    let (mut shards, mut expired) = (Vec::new(), Vec::new());
    let mut found = false;
    // Service-wide settings: the first cluster (in config order) whose Service sets them.
    let (mut ttl, mut policy) = (None, None);
    let mut imports = Vec::new();
    let add_ports = |ports: &mut Vec<ServicePort>, more: &[ServicePort]| {
        for p in more {
            if !ports
                .iter()
                .any(|q| q.name == p.name && q.protocol == p.protocol)
            {
                ports.push(p.clone());
            }
        }
    };
    // A headless Service is not federated (only load balancers are), so it has no Service
    // here: when some cluster imports it as Headless, each cluster whose slices the
    // EndpointSlice controller marks headless is a shard with those endpoints, for the MCS
    // names.
    let headless_import = views
        .iter()
        .any(|v| (v.state.imports.live.get(key)).is_some_and(|i| i.headless));
    let (mut headless, mut headless_expired) = (Vec::new(), Vec::new());
    for v in views {
        // An expired cluster's import stays: its cluster-set IP is local to that cluster, so
        // only that cluster's clients get it, and they keep what they had (fail static).
        if let Some(imp) = v.state.imports.live.get(key) {
            imports.push(Import {
                cluster: v.spec.name.clone(),
                ips: imp.ips.clone(),
                headless: imp.headless,
            });
            add_ports(&mut ports, &imp.ports);
        }
        let (r, nr, ez, zoneless) = tally(v.state, key);
        // Endpoint zones narrow the shard only when every ready endpoint has a known zone.
        // Boxed and back: a filtered `collect` reserves room for four, and the snapshot keeps
        // this list in every shard until the service changes.
        let shard_zones: Vec<String> = if zoneless {
            vec![]
        } else {
            ez.into_iter()
                .filter(|z| v.zones.iter().any(|c| c == z))
                .map(String::from)
                .collect::<Box<[String]>>()
                .into_vec()
        };
        let Some(svc) = v.state.services.live.get(key) else {
            if let Some(eps) = headless_import
                .then(|| headless_endpoints(v.state, key))
                .flatten()
            {
                let shard = Shard {
                    cluster: v.spec.name.clone(),
                    ready_endpoints: r,
                    not_ready_endpoints: nr,
                    zones: shard_zones,
                    headless: Some(std::sync::Arc::new(eps)),
                    ..Shard::default()
                };
                match v.fresh {
                    Freshness::Serving => headless.push(shard),
                    _ => headless_expired.push(shard),
                }
            }
            continue;
        };
        found = true;
        ttl = ttl.or(svc.settings.ttl);
        policy = policy.or(svc.settings.policy.clone());
        let shard = Shard {
            cluster: v.spec.name.clone(),
            addresses: addresses(resolved, &svc.lb_ips, &svc.lb_hosts),
            cluster_ips: svc.cluster_ips.to_vec(),
            ready_endpoints: r,
            not_ready_endpoints: nr,
            zones: shard_zones,
            weight: svc.settings.weight,
            ..Shard::default()
        };
        add_ports(&mut ports, &svc.ports);
        match v.fresh {
            Freshness::Serving => shards.push(shard),
            _ => expired.push(shard),
        }
    }
    if !found && imports.is_empty() {
        return None;
    }
    let mut from_expired = fail_static(&mut shards, expired);
    // The same rule for headless endpoints: an expired cluster's only when no serving cluster
    // has one ready.
    let any_ready = |v: &[Shard]| {
        v.iter()
            .any(|s| s.headless.as_ref().is_some_and(|e| !e.is_empty()))
    };
    if !any_ready(&headless) && any_ready(&headless_expired) {
        headless.extend(headless_expired);
        from_expired = true;
    }
    shards.extend(headless);
    // A service only imported (a ClusterIP Service exported through MCS, no load balancer)
    // exists for its MCS names; its federated names answer NODATA.
    if shards.is_empty() && imports.is_empty() {
        return None;
    }
    imports.sort_by(|a, b| a.cluster.cmp(&b.cluster));
    ports.sort_by(|a, b| (&a.name, &a.protocol).cmp(&(&b.name, &b.protocol)));
    shards.sort_by(|a, b| a.cluster.cmp(&b.cluster));
    shards.shrink_to_fit();
    ports.shrink_to_fit();
    imports.shrink_to_fit();
    Some((
        Service {
            name: key.1.to_string(),
            namespace: key.0.to_string(),
            ports,
            shards,
            policy,
            ttl,
            imports,
        },
        from_expired,
    ))
}

/// Every ingress host, computed afresh (there are few).
fn ingress_hosts(
    views: &[View<'_>],
    resolved: &HashMap<String, Vec<IpAddr>>,
    stats: &mut AssembleStats,
) -> Vec<IngressHost> {
    let mut hosts: BTreeMap<String, (Vec<Shard>, Vec<Shard>)> = BTreeMap::new();
    for v in views {
        for ((ns, _), ing) in &v.state.ingresses.live {
            let (r, nr) = ing
                .backends
                .iter()
                .map(|b| tally(v.state, &(ns.clone(), b.as_str().into())))
                .fold((0, 0), |acc, e| (acc.0 + e.0, acc.1 + e.1));
            for host in &ing.hosts {
                let shard = Shard {
                    cluster: v.spec.name.clone(),
                    addresses: addresses(resolved, &ing.lb_ips, &ing.lb_hosts),
                    ready_endpoints: r,
                    not_ready_endpoints: nr,
                    zones: vec![],
                    ..Shard::default()
                };
                let entry = hosts.entry(host.clone()).or_default();
                match v.fresh {
                    Freshness::Serving => entry.0.push(shard),
                    _ => entry.1.push(shard),
                }
            }
        }
        // Gateway API: each host name of a Gateway (its exact listener host names, and those
        // each attached HTTPRoute gets on each listener it attaches to, intersected as the
        // Gateway API says) is a shard with the Gateway's addresses, healthy when the Gateway is
        // Programmed and the routes' backend Services have ready endpoints. A name still a
        // wildcard after the intersection is served as one (RFC 4592: names below it that
        // exist answer for themselves); a wildcard listener no route attaches to is not.
        for (gkey, gw) in &v.state.gateways.live {
            let mut names: BTreeMap<String, BTreeSet<&Key>> = BTreeMap::new();
            for l in &gw.listeners {
                if let Some(h) = l.hostname.as_ref().filter(|h| !h.starts_with('*')) {
                    names.entry(h.clone()).or_default();
                }
                for route in v.state.routes.live.values() {
                    let on_listener = route.parents.iter().any(|p| p.attaches(gkey, l));
                    if !on_listener {
                        continue;
                    }
                    // On an exact listener this is that one name or nothing: the listener's
                    // own name carries the routes attached to it.
                    for h in route_hosts_on(&route.hostnames, l.hostname.as_deref()) {
                        names.entry(h).or_default().extend(&route.backends);
                    }
                }
            }
            for (host, backends) in names {
                let (r, nr) = backends
                    .iter()
                    .map(|b| tally(v.state, b))
                    .fold((0, 0), |acc, e| (acc.0 + e.0, acc.1 + e.1));
                let (ready, not_ready) = if gw.programmed { (r, nr) } else { (0, r + nr) };
                let shard = Shard {
                    cluster: v.spec.name.clone(),
                    addresses: addresses(resolved, &gw.lb_ips, &gw.lb_hosts),
                    ready_endpoints: ready,
                    not_ready_endpoints: not_ready,
                    zones: vec![],
                    ..Shard::default()
                };
                let entry = hosts.entry(host).or_default();
                match v.fresh {
                    Freshness::Serving => entry.0.push(shard),
                    _ => entry.1.push(shard),
                }
            }
        }
    }
    let mut out = Vec::new();
    for (host, (mut shards, expired)) in hosts {
        if fail_static(&mut shards, expired) {
            stats.fail_static_names += 1;
        }
        let Ok(name) = DnsName::parse(&host) else {
            continue;
        };
        if shards.is_empty() || !wildcard_only_first(&name) {
            continue;
        }
        shards.sort_by(|a, b| a.cluster.cmp(&b.cluster));
        out.push(IngressHost { host: name, shards });
    }
    out
}

/// Every `DNSEndpoint` name with the union of its records over the clusters serving (computed
/// afresh: there are few). Fail static: an expired cluster's records stay only for names no
/// serving cluster gives. A name keeps one CNAME and then nothing else.
fn endpoints(
    settings: &KubeSettings,
    views: &[View<'_>],
    stats: &mut AssembleStats,
) -> Vec<EndpointName> {
    type Records = BTreeMap<DnsName, Vec<(u32, RData)>>;
    let (mut serving, mut expired) = (Records::new(), Records::new());
    for v in views {
        let into = match v.fresh {
            Freshness::Serving => &mut serving,
            _ => &mut expired,
        };
        for eps in v.state.dns_endpoints.live.values() {
            for (name, ttl, data) in &eps.records {
                let ttl = ttl.filter(|t| *t > 0).unwrap_or(settings.ttl).max(1);
                into.entry(name.clone())
                    .or_default()
                    .push((ttl, data.clone()));
            }
        }
    }
    for (name, records) in expired {
        if let std::collections::btree_map::Entry::Vacant(e) = serving.entry(name) {
            stats.fail_static_names += 1;
            e.insert(records);
        }
    }
    let mut out = Vec::with_capacity(serving.len());
    for (name, mut records) in serving {
        // Objects come from hash maps: a canonical order, so equal unions compare equal. The
        // same record from several objects keeps its lowest TTL.
        records.sort_by_cached_key(|(ttl, d)| (d.rtype(), format!("{d:?}"), *ttl));
        records.dedup_by(|later, earlier| later.1 == earlier.1);
        let cnames = records
            .iter()
            .filter(|(_, d)| d.rtype() == rtype::CNAME)
            .count();
        if cnames > 0 && cnames < records.len() {
            stats.endpoint_conflicts.push(format!(
                "{name}: a CNAME beside other records; the CNAME is left out"
            ));
            records.retain(|(_, d)| d.rtype() != rtype::CNAME);
        } else if cnames > 1 {
            stats.endpoint_conflicts.push(format!(
                "{name}: {cnames} CNAME targets; only the first ({:?}) is served",
                records[0].1
            ));
            records.truncate(1);
        }
        out.push(EndpointName { name, records });
    }
    out
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::model::Policy;
    use crate::sources::kubernetes::config::{Access, SelectRule};

    /// Settings of a test federation `f` in `example.com` (shared with the source's tests).
    pub(crate) fn settings(grace: u64) -> KubeSettings {
        KubeSettings {
            cluster_domain: None,
            clusterset_domain: None,
            federation: "f".into(),
            zone: DnsName::parse("example.com").unwrap(),
            ttl: 30,
            max_answers: 8,
            policy: Policy::default(),
            select: SelectRule::default(),
            stale_grace: Duration::from_secs(grace),
            sync_timeout: Duration::from_secs(30),
            coalesce: Duration::from_millis(50),
            resolve_interval: Duration::from_secs(30),
            clusters: vec![],
        }
    }

    pub(crate) fn spec(name: &str) -> ClusterSpec {
        ClusterSpec {
            client_networks: vec![],
            name: name.into(),
            access: Access::InCluster,
            region: None,
            zones: vec![],
            weight: 100,
            dns_endpoints: false,
            gateway_api: false,
            service_imports: false,
        }
    }

    impl Grouped for u32 {}

    fn annotated(pairs: &[(&str, &str)]) -> SlimService {
        SlimService {
            cluster_ips: vec![].into(),
            ports: vec![].into(),
            lb_ips: vec!["10.0.0.1".parse().unwrap()].into(),
            lb_hosts: vec![].into(),
            settings: Annotations::parse(|k| pairs.iter().find(|(a, _)| *a == k).map(|(_, v)| *v))
                .into(),
        }
    }

    #[test]
    fn annotations_parse_and_bad_values_keep_the_last_good_ones() {
        let good = annotated(&[(TTL, "5"), (WEIGHT, "3"), (FAILOVER, "w1, east")]);
        assert_eq!(good.settings.ttl, Some(5));
        assert_eq!(good.settings.weight, Some(3));
        assert_eq!(
            good.settings.policy,
            Some(Policy::Failover(vec!["w1".into(), "east".into()]))
        );
        assert!(good.settings.bad.is_empty());
        assert_eq!(
            annotated(&[(POLICY, "weighted")]).settings.policy,
            Some(Policy::Weighted)
        );
        for (pairs, which) in [
            (&[(TTL, "0")][..], TTL),
            (&[(TTL, "5s")][..], TTL),
            (&[(WEIGHT, "-1")][..], WEIGHT),
            (&[(POLICY, "nearest")][..], POLICY),
            (&[(POLICY, "failover")][..], POLICY),
            (&[(POLICY, "all"), (FAILOVER, "w1")][..], FAILOVER),
            (&[(FAILOVER, "w1,,e1")][..], FAILOVER),
        ] {
            let a = annotated(pairs).settings;
            assert_eq!(a.bad.len(), 1, "{pairs:?}: {a:?}");
            assert_eq!(a.bad[0].0, which, "{pairs:?}");
        }
        // In a store: a bad value keeps the last good one; reported once per change.
        let key: Key = ("shop".into(), "web".into());
        let mut store: Store<SlimService> = Store::default();
        store.apply(Change::Init);
        store.apply(Change::InitApply(key.clone(), Some(good.clone())));
        store.apply(Change::InitDone);
        let bad = annotated(&[(TTL, "soon"), (WEIGHT, "3"), (POLICY, "nearest")]);
        assert_eq!(bad.new_annotation_errors(store.live.get(&key)).count(), 2);
        assert!(store.apply(Change::Apply(key.clone(), Some(bad.clone()))));
        let kept = &store.live[&key].settings;
        assert_eq!(kept.ttl, Some(5), "last good TTL kept");
        assert_eq!(kept.policy, good.settings.policy, "last good policy kept");
        assert_eq!(kept.weight, Some(3));
        assert_eq!(
            bad.new_annotation_errors(store.live.get(&key)).count(),
            0,
            "the same bad values again: nothing new to report"
        );
        // Fixed: the new value applies.
        store.apply(Change::Apply(key.clone(), Some(annotated(&[(TTL, "60")]))));
        assert_eq!(store.live[&key].settings.ttl, Some(60));
        assert_eq!(store.live[&key].settings.policy, None);
    }

    fn key(ns: &str, n: &str) -> Key {
        (ns.into(), n.into())
    }

    fn parent(ns: &str, n: &str, section: Option<&str>) -> ParentRef {
        ParentRef {
            gateway: key(ns, n),
            section: section.map(String::from),
            port: None,
        }
    }

    /// The Gateway API's hostname intersection, case by case from the HTTPRouteSpec
    /// `hostnames` reference.
    #[test]
    fn route_and_listener_host_names_intersect() {
        let on = |route: &[&str], listener: Option<&str>| {
            let route: Vec<String> = route.iter().map(|h| h.to_string()).collect();
            route_hosts_on(&route, listener)
        };
        // A listener without a host name takes the route's, wildcards included.
        assert_eq!(
            on(&["a.example.com", "*.x.example.com"], None),
            ["a.example.com", "*.x.example.com"]
        );
        // A route without host names takes the listener's.
        assert_eq!(on(&[], Some("test.example.com")), ["test.example.com"]);
        assert_eq!(on(&[], Some("*.example.com")), ["*.example.com"]);
        assert!(on(&[], None).is_empty(), "any host: no name to serve");
        // An exact listener matches itself or a route wildcard over it.
        assert_eq!(
            on(
                &["test.example.com", "other.example.com"],
                Some("test.example.com")
            ),
            ["test.example.com"]
        );
        assert_eq!(
            on(&["*.example.com"], Some("test.example.com")),
            ["test.example.com"]
        );
        assert_eq!(
            on(&["*.example.com"], Some("a.b.example.com")),
            ["a.b.example.com"]
        );
        assert!(
            on(&["*.example.com"], Some("example.com")).is_empty(),
            "a wildcard needs one more label"
        );
        assert!(on(&["*.example.net"], Some("test.example.com")).is_empty());
        // A wildcard listener matches names below it, by one label or more, and the narrower
        // of two wildcards.
        assert_eq!(
            on(
                &[
                    "test.example.com",
                    "foo.test.example.com",
                    "test.example.net",
                    "example.com"
                ],
                Some("*.example.com")
            ),
            ["foo.test.example.com", "test.example.com"]
        );
        assert_eq!(
            on(&["*.example.com"], Some("*.example.com")),
            ["*.example.com"]
        );
        assert_eq!(
            on(&["*.example.com"], Some("*.a.example.com")),
            ["*.a.example.com"]
        );
        assert_eq!(
            on(&["*.a.example.com"], Some("*.example.com")),
            ["*.a.example.com"]
        );
        // Suffix match is by labels, not characters.
        assert!(on(&["xexample.com"], Some("*.example.com")).is_empty());
        assert!(on(&["*.xample.com"], Some("a.example.com")).is_empty());
    }

    fn listed(ip: &str, ready: u32) -> ClusterState {
        let mut s = ClusterState::default();
        s.services.apply(Change::Init);
        s.services.apply(Change::InitApply(
            key("shop", "web"),
            Some(SlimService {
                cluster_ips: vec![].into(),
                settings: Default::default(),
                ports: vec![].into(),
                lb_ips: vec![ip.parse().unwrap()].into(),
                lb_hosts: vec!["lb.example.net".into()].into(),
            }),
        ));
        s.services.apply(Change::InitDone);
        s.slices.apply(Change::Init);
        s.slices.apply(Change::InitApply(
            key("shop", "web-abc"),
            Some(SlimSlice {
                service: "web".into(),
                ready,
                not_ready: 0,
                zones: vec!["z1".into()].into(),
                zoneless: false,
                headless: None,
            }),
        ));
        s.slices.apply(Change::InitDone);
        s.ingresses.apply(Change::Init);
        s.ingresses.apply(Change::InitDone);
        s.nodes.apply(Change::Init);
        s.nodes.apply(Change::InitApply(
            key("", "n1"),
            Some(SlimNode {
                region: Some("r1".into()),
                zone: Some("z1".into()),
            }),
        ));
        s.nodes.apply(Change::InitApply(
            key("", "n2"),
            Some(SlimNode {
                region: Some("r1".into()),
                zone: Some("z2".into()),
            }),
        ));
        s.nodes.apply(Change::InitDone);
        s
    }

    /// What slices have alike is kept once: the namespace, the Service name (also in the
    /// `members` index), the zone list; and what no object holds any more is let go.
    #[test]
    fn a_store_keeps_common_values_once_and_lets_them_go() {
        let slice = |service: &str, zone: &str| SlimSlice {
            service: service.into(),
            ready: 1,
            not_ready: 0,
            zones: vec![zone.to_string()].into(),
            zoneless: false,
            headless: None,
        };
        let mut st: Store<SlimSlice> = Store::default();
        st.apply(Change::Init);
        for i in 0..100 {
            let v = slice(&format!("svc-{}", i / 2), "z1");
            st.apply(Change::InitApply(key("shop", &format!("sl-{i}")), Some(v)));
        }
        st.apply(Change::InitDone);
        let (k1, s1) = st.live.get_key_value(&key("shop", "sl-0")).unwrap();
        let (k2, s2) = st.live.get_key_value(&key("shop", "sl-1")).unwrap();
        assert!(Arc::ptr_eq(&k1.0, &k2.0), "one namespace");
        assert!(Arc::ptr_eq(&s1.service, &s2.service), "one Service name");
        assert!(Arc::ptr_eq(&s1.zones, &s2.zones), "one zone list");
        let (group, members) = st.members.get_key_value(&key("shop", "svc-0")).unwrap();
        assert!(Arc::ptr_eq(&group.1, &s1.service));
        assert!(
            members.names().iter().any(|m| Arc::ptr_eq(m, &k1.1)),
            "the key, not a copy"
        );
        assert_eq!(members.names().len(), 2);
        assert_eq!(st.members_of(&key("shop", "svc-0")).count(), 2);
        // Another zone for every slice, one at a time: the old list goes once nothing has it.
        let old = Arc::downgrade(&s1.zones);
        for i in 0..100 {
            let v = slice(&format!("svc-{}", i / 2), "z2");
            st.apply(Change::Apply(key("shop", &format!("sl-{i}")), Some(v)));
        }
        let total = |i: &Interner| i.strs.len() + i.zones.len();
        assert!(
            total(&st.interner) <= 2 * 52 + 64,
            "{}",
            total(&st.interner)
        );
        st.apply(Change::Init);
        st.apply(Change::InitDone);
        assert!(st.live.is_empty() && st.members.is_empty());
        assert_eq!(total(&st.interner), 0, "emptied: nothing kept");
        assert!(old.upgrade().is_none(), "the replaced zone list is freed");
    }

    /// The index of slices by Service agrees with the slices themselves through random adds,
    /// moves to another Service, deletes and re-lists.
    #[test]
    fn members_follow_the_slices() {
        let mut rng = crate::test_rng::Rng(0x5eed_cafe);
        let slice = |service: String| SlimSlice {
            service: service.into(),
            ready: 1,
            not_ready: 0,
            zones: vec![].into(),
            zoneless: true,
            headless: None,
        };
        let mut st: Store<SlimSlice> = Store::default();
        st.apply(Change::Init);
        st.apply(Change::InitDone);
        for step in 0..2000 {
            let name = format!("sl-{}", rng.below(12));
            let service = format!("svc-{}", rng.below(4));
            match rng.below(10) {
                0..=5 => st.apply(Change::Apply(key("shop", &name), Some(slice(service)))),
                6..=8 => st.apply(Change::Delete(key("shop", &name))),
                _ => {
                    let kept: Vec<(Key, SlimSlice)> = st
                        .live
                        .iter()
                        .filter(|_| rng.chance(70))
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect();
                    st.apply(Change::Init);
                    for (k, v) in kept {
                        st.apply(Change::InitApply(k, Some(v)));
                    }
                    st.apply(Change::InitDone)
                }
            };
            for g in 0..4 {
                let group = key("shop", &format!("svc-{g}"));
                let mut want: Vec<&SlimSlice> = st
                    .live
                    .values()
                    .filter(|v| *v.service == *group.1)
                    .collect();
                let mut got: Vec<&SlimSlice> = st.members_of(&group).collect();
                assert_eq!(got.len(), want.len(), "step {step}, {group:?}");
                want.sort_by_key(|v| *v as *const SlimSlice);
                got.sort_by_key(|v| *v as *const SlimSlice);
                assert!(got.iter().zip(&want).all(|(a, b)| std::ptr::eq(*a, *b)));
                assert_eq!(st.members.contains_key(&group), !want.is_empty());
            }
        }
    }

    /// The compact fields read as what they hold, however held, and hold nothing on the heap
    /// for the common case.
    #[test]
    fn compact_fields_read_as_their_values() {
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(matches!(Ips::from(vec![]), Ips::None));
        assert!(matches!(Ips::from(vec![a]), Ips::One(_)));
        assert_eq!(*Ips::from(vec![a, b]), [a, b]);
        assert_eq!(Ips::Many(Box::new([a])), Ips::One(a));
        assert_ne!(Ips::One(a), Ips::One(b));
        let none = Settings::from(Annotations::default());
        assert!(none.0.is_none(), "no annotations: nothing allocated");
        assert_eq!(none, Settings(Some(Box::default())));
        let set = annotated(&[(TTL, "5")]).settings;
        assert!(set.0.is_some() && set.ttl == Some(5));
        assert_ne!(set, none);
        // What a store holds inline per object, times ~1.6 for the hash table's free slots
        // (`bench/kube_memory.rs` measures the whole).
        assert!(std::mem::size_of::<(Key, SlimService)>() <= 120);
        assert!(std::mem::size_of::<(Key, SlimSlice)>() <= 96);
        assert!(std::mem::size_of::<(Key, Members)>() <= 56);
    }

    #[test]
    fn relist_swaps_at_the_end_and_keeps_events_seen_meanwhile() {
        let mut st: Store<u32> = Store::default();
        st.apply(Change::Init);
        st.apply(Change::InitApply(key("a", "1"), Some(1)));
        assert!(st.live.is_empty());
        assert!(st.apply(Change::InitDone));
        st.apply(Change::Init);
        st.apply(Change::InitApply(key("a", "2"), Some(2)));
        assert_eq!(
            st.live.len(),
            1,
            "old contents stay until the re-list is done"
        );
        st.apply(Change::Apply(key("a", "3"), Some(3)));
        assert!(st.apply(Change::InitDone));
        let keys: BTreeSet<String> = st.live.keys().map(|k| k.1.to_string()).collect();
        assert_eq!(keys, ["2", "3"].iter().map(|s| s.to_string()).collect());
        assert!(
            !st.apply(Change::Apply(key("a", "3"), Some(3))),
            "same value: no change"
        );
        assert!(st.apply(Change::Apply(key("a", "3"), Some(4))));
        assert!(st.apply(Change::Delete(key("a", "3"))));
        assert!(!st.apply(Change::Delete(key("a", "3"))));
    }

    #[test]
    fn topology_shards_and_hostnames() {
        let st = listed("10.0.0.1", 2);
        let sp = spec("c1");
        let mut resolved = HashMap::new();
        resolved.insert(
            "lb.example.net".to_string(),
            vec!["10.9.9.9".parse().unwrap()],
        );
        let (fed, stats) = assemble(&settings(10), &[(&sp, &st)], &resolved, Instant::now());
        assert_eq!(stats.fail_static_names, 0);
        assert_eq!(fed.clusters[0].region, "r1");
        assert_eq!(fed.clusters[0].zones, vec!["z1", "z2"]);
        let sh = &fed.services[0].shards[0];
        assert_eq!(sh.addresses.len(), 2);
        assert_eq!(sh.ready_endpoints, 2);
        assert_eq!(sh.zones, vec!["z1"]);
    }

    #[test]
    fn incomplete_clusters_contribute_nothing() {
        let mut st = listed("10.0.0.1", 2);
        st.nodes = Store::default();
        let sp = spec("c1");
        let (fed, _) = assemble(
            &settings(10),
            &[(&sp, &st)],
            &HashMap::new(),
            Instant::now(),
        );
        assert!(fed.services.is_empty() && fed.clusters.is_empty());
    }

    #[test]
    fn ingress_hosts_in_the_table() {
        let mut st = listed("10.0.0.1", 1);
        st.ingresses.apply(Change::Init);
        for (name, host, backend) in [
            ("a", "shop.example.com", "web"),
            ("b", "idle.example.com", "nothing-ready"),
            ("c", "shop.example.net", "web"),
        ] {
            st.ingresses.apply(Change::InitApply(
                key("shop", name),
                Some(SlimIngress {
                    hosts: vec![host.into()],
                    backends: vec![backend.into()],
                    lb_ips: vec!["192.0.2.7".parse().unwrap()],
                    lb_hosts: vec![],
                }),
            ));
        }
        st.ingresses.apply(Change::InitDone);
        let sp = spec("c1");
        let (fed, _) = assemble(
            &settings(10),
            &[(&sp, &st)],
            &HashMap::new(),
            Instant::now(),
        );
        assert_eq!(fed.ingress_hosts.len(), 3);
        let locator = crate::geo::Locator::new(&[], &[], &[], false, None);
        let table = crate::answers::build_fresh(&[], &[fed], &locator).table;
        let ask = |n: &str| {
            let name = DnsName::parse(n).unwrap();
            match table.lookup(name.wire(), crate::model::rtype::A, || 0) {
                crate::table::Lookup::Authoritative(a) => Some((a.rcode, a.bodies[0].answer_count)),
                _ => None,
            }
        };
        assert_eq!(
            ask("shop.example.com"),
            Some((0, 1)),
            "healthy backend: its LB address"
        );
        assert_eq!(
            ask("idle.example.com"),
            Some((0, 0)),
            "no ready backend: NODATA"
        );
        assert_eq!(
            ask("shop.example.net"),
            None,
            "outside every served zone: not ours"
        );
    }

    /// ServiceImports become `Service::imports` (sorted by cluster, with their ports merged);
    /// a service only imported exists with no shards; an expired cluster's import stays
    /// (its ClusterSetIP only ever answers that cluster's clients).
    #[test]
    fn service_imports_join_their_service() {
        let now = Instant::now();
        let (a, mut b) = (spec("a"), spec("b"));
        b.service_imports = true;
        let sa = listed("10.0.0.1", 1);
        let mut sb = ClusterState::for_spec(&b);
        assert!(!sb.complete(), "ServiceImports not listed yet");
        sb.services.apply(Change::Init);
        sb.services.apply(Change::InitDone);
        sb.slices.apply(Change::Init);
        sb.slices.apply(Change::InitDone);
        sb.ingresses.apply(Change::Init);
        sb.ingresses.apply(Change::InitDone);
        sb.nodes = listed("10.0.0.9", 0).nodes;
        sb.imports.apply(Change::Init);
        for (svc, ips, headless) in [("web", vec!["10.96.0.1"], false), ("cart", vec![], true)] {
            sb.imports.apply(Change::InitApply(
                key("shop", svc),
                Some(SlimImport {
                    ips: ips.iter().map(|i| i.parse().unwrap()).collect(),
                    headless,
                    ports: vec![ServicePort {
                        name: "grpc".into(),
                        protocol: "tcp".into(),
                        port: 9090,
                    }],
                }),
            ));
        }
        sb.imports.apply(Change::InitDone);
        assert!(sb.complete());
        let (fed, _) = assemble(&settings(10), &[(&a, &sa), (&b, &sb)], &HashMap::new(), now);
        let web = fed.services.iter().find(|s| s.name == "web").unwrap();
        assert_eq!(web.shards.len(), 1);
        assert_eq!(
            web.imports,
            [Import {
                cluster: "b".into(),
                ips: vec!["10.96.0.1".parse().unwrap()],
                headless: false
            }]
        );
        assert_eq!(web.ports.len(), 1, "the import's port");
        let cart = fed.services.iter().find(|s| s.name == "cart").unwrap();
        assert!(cart.shards.is_empty());
        assert!(cart.imports[0].headless);
        // b expires: its imports stay.
        sb.down_since = Some(now - Duration::from_secs(60));
        let (fed, _) = assemble(&settings(10), &[(&a, &sa), (&b, &sb)], &HashMap::new(), now);
        assert_eq!(fed.services.len(), 2);
        // The CRD goes: the imports go, and the import-only service with them.
        assert!(sb.crd_missing(Kind::ServiceImports));
        let (fed, _) = assemble(&settings(10), &[(&a, &sa), (&b, &sb)], &HashMap::new(), now);
        assert_eq!(fed.services.len(), 1);
        assert!(fed.services[0].imports.is_empty());
    }

    /// A service imported as Headless takes, per cluster, the endpoints of its slices marked
    /// headless (a slice without the mark gives none); an expired cluster's endpoints stay
    /// only while no serving cluster has one ready, counted as fail static.
    #[test]
    fn headless_imports_take_endpoints_from_headless_slices() {
        let now = Instant::now();
        let (a, mut b) = (spec("a"), spec("b"));
        b.service_imports = true;
        let mut sa = listed("10.0.0.1", 1);
        let mut sb = ClusterState::for_spec(&b);
        sb.services.apply(Change::Init);
        sb.services.apply(Change::InitDone);
        sb.ingresses.apply(Change::Init);
        sb.ingresses.apply(Change::InitDone);
        sb.slices.apply(Change::Init);
        sb.slices.apply(Change::InitDone);
        sb.nodes = listed("10.0.0.9", 0).nodes;
        sb.imports.apply(Change::Init);
        sb.imports.apply(Change::InitApply(
            key("shop", "db"),
            Some(SlimImport {
                ips: vec![],
                headless: true,
                ports: vec![],
            }),
        ));
        sb.imports.apply(Change::InitDone);
        let ep = |h: Option<&str>, ip: &str| Endpoint {
            hostname: h.map(String::from),
            addresses: vec![ip.parse().unwrap()],
        };
        let slice = |eps: Option<Vec<Endpoint>>| SlimSlice {
            service: "db".into(),
            ready: eps.as_ref().map_or(1, |e| e.len() as u32),
            not_ready: 0,
            zones: vec![].into(),
            zoneless: true,
            headless: eps.map(Into::into),
        };
        sa.slices.apply(Change::Apply(
            key("shop", "db-1"),
            Some(slice(Some(vec![ep(Some("db-0"), "10.244.0.5")]))),
        ));
        sa.slices
            .apply(Change::Apply(key("shop", "db-2"), Some(slice(None))));
        sb.slices.apply(Change::Apply(
            key("shop", "db-1"),
            Some(slice(Some(vec![]))),
        ));
        let db = |sa: &ClusterState, sb: &ClusterState| {
            let views = [(&a, sa), (&b, sb)];
            let (fed, stats) = assemble(&settings(10), &views, &HashMap::new(), now);
            let svc = fed
                .services
                .iter()
                .find(|s| s.name == "db")
                .unwrap()
                .clone();
            let eps: Vec<(String, Vec<Endpoint>)> = (svc.shards.iter())
                .map(|s| (s.cluster.clone(), s.headless.as_deref().unwrap().clone()))
                .collect();
            (eps, stats.fail_static_names)
        };
        let (eps, stale) = db(&sa, &sb);
        assert_eq!(
            eps,
            [
                ("a".to_string(), vec![ep(Some("db-0"), "10.244.0.5")]),
                ("b".to_string(), vec![])
            ]
        );
        assert_eq!(stale, 0);
        // a expires: b has no ready endpoint, so a's stay.
        sa.down_since = Some(now - Duration::from_secs(60));
        let (eps, stale) = db(&sa, &sb);
        assert_eq!(eps.len(), 2, "{eps:?}");
        assert_eq!(stale, 2, "db, and a's load-balanced web");
        // b gets one: a's go.
        sb.slices.apply(Change::Apply(
            key("shop", "db-1"),
            Some(slice(Some(vec![ep(None, "10.245.0.7")]))),
        ));
        let (eps, stale) = db(&sa, &sb);
        assert_eq!(eps, [("b".to_string(), vec![ep(None, "10.245.0.7")])]);
        assert_eq!(stale, 1, "web alone");
    }

    #[test]
    fn fail_static_after_grace() {
        let now = Instant::now();
        let (a, b) = (spec("a"), spec("b"));
        let mut sa = listed("10.0.0.1", 1);
        let sb = listed("10.0.0.2", 1);
        sa.down_since = Some(now - Duration::from_secs(5));
        // Within the grace: both serve.
        let (fed, _) = assemble(&settings(10), &[(&a, &sa), (&b, &sb)], &HashMap::new(), now);
        assert_eq!(fed.services[0].shards.len(), 2);
        // Past it: a is dropped, b carries the name.
        let (fed, stats) = assemble(&settings(2), &[(&a, &sa), (&b, &sb)], &HashMap::new(), now);
        assert_eq!(fed.services[0].shards.len(), 1);
        assert_eq!(fed.services[0].shards[0].cluster, "b");
        assert_eq!(stats.fail_static_names, 0);
        // Past it, but a is all there is: kept, and counted.
        let (fed, stats) = assemble(&settings(2), &[(&a, &sa)], &HashMap::new(), now);
        assert_eq!(fed.services[0].shards.len(), 1);
        assert_eq!(stats.fail_static_names, 1);
    }

    /// Incremental ≡ full for the assembly: random Service, EndpointSlice, Node, DNSEndpoint,
    /// ServiceImport and ingress changes, re-lists and outages in two clusters; after each step the assembler
    /// that only recomputes what changed must give the snapshot a fresh assembly gives.
    #[test]
    fn incremental_assembly_equals_a_fresh_one() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut rnd = |n: u64| {
            seed ^= seed >> 12;
            seed ^= seed << 25;
            seed ^= seed >> 27;
            seed.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
        };
        let specs = [spec("a"), spec("b")];
        let mut states = [listed("10.0.0.1", 1), listed("10.0.0.2", 0)];
        let mut asm = Assembler::default();
        let base = Instant::now();
        let mut resolved = HashMap::new();
        let mut headless_steps = 0usize;
        for step in 0..400u64 {
            let c = rnd(2) as usize;
            let st = &mut states[c];
            let svc = format!("s{}", rnd(6));
            match rnd(12) {
                11 => {
                    // A ServiceImport appears (ClusterSetIP or Headless), changes or goes; for
                    // a service no cluster has a Service of, it alone makes the service.
                    if rnd(3) == 0 {
                        st.imports.apply(Change::Delete(key("shop", &svc)));
                    } else {
                        let headless = rnd(4) == 0;
                        let v = SlimImport {
                            ips: if headless {
                                vec![]
                            } else {
                                vec![format!("10.96.{c}.{}", rnd(3)).parse().unwrap()]
                            },
                            headless,
                            ports: vec![ServicePort {
                                name: ["http", "grpc"][rnd(2) as usize].into(),
                                protocol: "tcp".into(),
                                port: 80,
                            }],
                        };
                        st.imports.apply(Change::Apply(key("shop", &svc), Some(v)));
                    }
                }
                0 | 1 => {
                    // Annotations good and bad (a bad one keeps the store's last good value).
                    let ttl = ["5", "60", "soon"][rnd(3) as usize];
                    let weight = ["0", "2", "x"][rnd(3) as usize];
                    let policy = ["weighted", "all", "nearest"][rnd(3) as usize];
                    let mut pairs = Vec::new();
                    for (k, v) in [(TTL, ttl), (WEIGHT, weight), (POLICY, policy)] {
                        if rnd(3) == 0 {
                            pairs.push((k, v));
                        }
                    }
                    let v = SlimService {
                        cluster_ips: if rnd(2) == 0 {
                            vec![format!("10.96.{c}.1").parse().unwrap()].into()
                        } else {
                            vec![].into()
                        },
                        settings: annotated(&pairs).settings,
                        ports: vec![].into(),
                        lb_ips: vec![format!("10.1.{c}.{}", rnd(3) + 1).parse().unwrap()].into(),
                        lb_hosts: if rnd(4) == 0 {
                            vec!["lb.example.net".into()].into()
                        } else {
                            vec![].into()
                        },
                    };
                    st.services.apply(Change::Apply(key("shop", &svc), Some(v)));
                }
                2 => {
                    st.services.apply(Change::Delete(key("shop", &svc)));
                }
                3..=5 => {
                    let ready = rnd(3) as u32;
                    // A headless Service's slice carries its ready endpoints (some named,
                    // some sharing a name across slices).
                    let headless = (rnd(3) == 0).then(|| {
                        (0..ready)
                            .map(|i| Endpoint {
                                hostname: (rnd(2) == 0).then(|| format!("pod-{}", rnd(3))),
                                addresses: vec![
                                    format!("10.244.{c}.{}", rnd(4) + i as u64).parse().unwrap(),
                                ],
                            })
                            .collect()
                    });
                    let v = SlimSlice {
                        service: svc.clone().into(),
                        ready,
                        not_ready: rnd(2) as u32,
                        zones: vec![["z1", "z2", "z9"][rnd(3) as usize].into()].into(),
                        zoneless: rnd(5) == 0,
                        headless,
                    };
                    let slice = format!("sl{}", rnd(8));
                    st.slices.apply(Change::Apply(key("shop", &slice), Some(v)));
                }
                6 => {
                    let slice = format!("sl{}", rnd(8));
                    st.slices.apply(Change::Delete(key("shop", &slice)));
                }
                7 => {
                    // A re-list that keeps some slices and drops the others.
                    let kept: Vec<(Key, SlimSlice)> = st
                        .slices
                        .live
                        .iter()
                        .filter(|_| rnd(2) == 0)
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect();
                    st.slices.apply(Change::Init);
                    for (k, v) in kept {
                        st.slices.apply(Change::InitApply(k, Some(v)));
                    }
                    st.slices.apply(Change::InitDone);
                }
                10 => {
                    // A DNSEndpoint appears, changes or goes.
                    let obj = key("shop", &format!("e{}", rnd(3)));
                    if rnd(3) == 0 {
                        st.dns_endpoints.apply(Change::Delete(obj));
                    } else {
                        let name = DnsName::parse(&format!("h{}.example.com", rnd(3))).unwrap();
                        let data = RData::A(format!("192.0.2.{}", rnd(4)).parse().unwrap());
                        let v = SlimEndpoints {
                            records: vec![(name, [None, Some(60)][rnd(2) as usize], data)],
                            skipped: vec![],
                        };
                        st.dns_endpoints.apply(Change::Apply(obj, Some(v)));
                    }
                }
                8 => {
                    st.down_since = match st.down_since {
                        None => Some(base),
                        Some(_) => None,
                    };
                }
                _ => {
                    if rnd(2) == 0 {
                        resolved.insert(
                            "lb.example.net".to_string(),
                            vec![format!("10.9.9.{}", rnd(3)).parse().unwrap()],
                        );
                    } else {
                        let v = SlimNode {
                            region: Some("r1".into()),
                            zone: Some(["z1", "z2", "z3"][rnd(3) as usize].into()),
                        };
                        st.nodes.apply(Change::Apply(key("", "n1"), Some(v)));
                    }
                }
            }
            // Past the grace for an outage that started at `base`: expired clusters too.
            let now = base + Duration::from_secs(rnd(2) * 20);
            let mut touched = Some(BTreeSet::new());
            for st in &mut states {
                for t in [
                    st.services.take_touched(),
                    st.slices.take_touched(),
                    st.imports.take_touched(),
                ] {
                    match (&mut touched, t) {
                        (Some(all), Some(t)) => all.extend(t),
                        _ => touched = None,
                    }
                }
            }
            let views: Vec<(&ClusterSpec, &ClusterState)> =
                specs.iter().zip(states.iter()).collect();
            let incremental = asm.assemble(&settings(10), &views, &resolved, now, touched);
            let fresh = assemble(&settings(10), &views, &resolved, now);
            assert_eq!(incremental, fresh, "step {step}");
            let shards = fresh.0.services.iter().flat_map(|s| &s.shards);
            headless_steps += usize::from(
                shards
                    .filter_map(|s| s.headless.as_ref())
                    .any(|h| !h.is_empty()),
            );
        }
        assert!(headless_steps > 0, "no step had headless endpoints");
    }

    fn with_endpoints(ip: &str, recs: &[(&str, Option<u32>, RData)]) -> ClusterState {
        let mut st = listed(ip, 1);
        st.dns_endpoints.apply(Change::Init);
        st.dns_endpoints.apply(Change::InitApply(
            key("shop", "e"),
            Some(SlimEndpoints {
                records: recs
                    .iter()
                    .map(|(n, t, d)| (DnsName::parse(n).unwrap(), *t, d.clone()))
                    .collect(),
                skipped: vec![],
            }),
        ));
        st.dns_endpoints.apply(Change::InitDone);
        st
    }

    #[test]
    fn dns_endpoints_union_conflicts_and_fail_static() {
        let now = Instant::now();
        let a4 = |s: &str| RData::A(s.parse().unwrap());
        let cname = |s: &str| RData::Cname(DnsName::parse(s).unwrap());
        let (a, b) = (spec("a"), spec("b"));
        let mut sa = with_endpoints(
            "10.0.0.1",
            &[
                ("x.example.com", Some(60), a4("192.0.2.1")),
                ("x.example.com", Some(60), a4("192.0.2.9")),
                ("c.example.com", None, cname("x.example.com")),
                ("only-a.example.com", None, a4("192.0.2.5")),
            ],
        );
        let sb = with_endpoints(
            "10.0.0.2",
            &[
                ("x.example.com", Some(20), a4("192.0.2.9")),
                ("x.example.com", None, a4("192.0.2.2")),
                ("c.example.com", None, a4("192.0.2.3")),
            ],
        );
        let (fed, stats) = assemble(&settings(10), &[(&a, &sa), (&b, &sb)], &HashMap::new(), now);
        let get = |fed: &Federation, n: &str| {
            fed.endpoints
                .iter()
                .find(|e| e.name == DnsName::parse(n).unwrap())
                .map(|e| e.records.clone())
        };
        let x = get(&fed, "x.example.com").unwrap();
        assert_eq!(x.len(), 3, "union, the shared record once: {x:?}");
        assert!(x.contains(&(20, a4("192.0.2.9"))), "its lowest TTL: {x:?}");
        assert!(
            x.contains(&(30, a4("192.0.2.2"))),
            "no TTL: the federation's: {x:?}"
        );
        assert_eq!(
            get(&fed, "c.example.com"),
            Some(vec![(30, a4("192.0.2.3"))])
        );
        assert_eq!(stats.endpoint_conflicts.len(), 1, "{stats:?}");
        // The same clusters in the other order: the same snapshot.
        let (again, _) = assemble(&settings(10), &[(&b, &sb), (&a, &sa)], &HashMap::new(), now);
        assert_eq!(again.endpoints, fed.endpoints);
        // a out of sync past the grace: its records leave shared names, stay on its own.
        sa.down_since = Some(now - Duration::from_secs(20));
        let (fed, stats) = assemble(&settings(10), &[(&a, &sa), (&b, &sb)], &HashMap::new(), now);
        assert_eq!(get(&fed, "x.example.com").unwrap().len(), 2);
        assert_eq!(
            get(&fed, "only-a.example.com"),
            Some(vec![(30, a4("192.0.2.5"))])
        );
        assert!(stats.fail_static_names >= 1);
    }

    #[test]
    fn gateway_hosts_healthy_only_when_programmed_with_ready_backends() {
        let mut st = listed("10.0.0.1", 2);
        let gw = |programmed| SlimGateway {
            listeners: vec![
                Listener {
                    name: "portal".into(),
                    hostname: Some("portal.example.com".into()),
                    port: Some(80),
                },
                Listener {
                    name: "apps".into(),
                    hostname: Some("*.example.com".into()),
                    port: Some(443),
                },
                // No route attaches here: its wildcard is not served.
                Listener {
                    name: "quiet".into(),
                    hostname: Some("*.quiet.example.net".into()),
                    port: Some(80),
                },
            ],
            lb_ips: vec!["192.0.2.7".parse().unwrap()],
            lb_hosts: vec![],
            programmed,
        };
        st.gateways.apply(Change::Init);
        st.gateways
            .apply(Change::InitApply(key("shop", "gw"), Some(gw(true))));
        st.gateways.apply(Change::InitDone);
        st.routes.apply(Change::Init);
        for (name, host, backend) in [
            ("r1", "web.example.com", "web"),
            ("r2", "idle.example.com", "none"),
        ] {
            st.routes.apply(Change::InitApply(
                key("shop", name),
                Some(SlimRoute {
                    hostnames: vec![host.into()],
                    parents: vec![parent("shop", "gw", None)],
                    backends: vec![key("shop", backend)],
                }),
            ));
        }
        // No host names, attached only to the `portal` listener: it takes `portal.example.com`
        // (not the `*.example.com` of the other listener, which is no single name anyway).
        st.routes.apply(Change::InitApply(
            key("shop", "r4"),
            Some(SlimRoute {
                hostnames: vec![],
                parents: vec![parent("shop", "gw", Some("portal"))],
                backends: vec![key("shop", "web")],
            }),
        ));
        // Its names intersect no listener of its Gateway: nothing, though no controller said so.
        st.routes.apply(Change::InitApply(
            key("shop", "r5"),
            Some(SlimRoute {
                hostnames: vec!["web.example.net".into()],
                parents: vec![parent("shop", "gw", None)],
                backends: vec![key("shop", "web")],
            }),
        ));
        // A wildcard route on the exact listener serves that listener's name; on the
        // wildcard listener it stays a wildcard, served as one.
        st.routes.apply(Change::InitApply(
            key("shop", "r6"),
            Some(SlimRoute {
                hostnames: vec!["*.example.com".into()],
                parents: vec![parent("shop", "gw", None)],
                backends: vec![key("shop", "web")],
            }),
        ));
        // `parentRefs[].port`: the listeners on that port only; a port no listener has
        // attaches to nothing.
        for (name, host, port) in [
            ("r7", "tls.example.com", 443),
            ("r8", "odd.example.com", 8443),
        ] {
            let mut p = parent("shop", "gw", None);
            p.port = Some(port);
            st.routes.apply(Change::InitApply(
                key("shop", name),
                Some(SlimRoute {
                    hostnames: vec![host.into()],
                    parents: vec![p],
                    backends: vec![key("shop", "web")],
                }),
            ));
        }
        // Attached to no Gateway this cluster has: nothing.
        st.routes.apply(Change::InitApply(
            key("shop", "r3"),
            Some(SlimRoute {
                hostnames: vec!["orphan.example.com".into()],
                parents: vec![parent("other", "gw", None)],
                backends: vec![key("shop", "web")],
            }),
        ));
        st.routes.apply(Change::InitDone);
        let sp = spec("c1");
        let hosts = |st: &ClusterState| {
            let (fed, _) = assemble(&settings(10), &[(&sp, st)], &HashMap::new(), Instant::now());
            fed.ingress_hosts
                .iter()
                .map(|h| (h.host.to_string(), h.shards[0].ready_endpoints))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            hosts(&st),
            [
                ("*.example.com.".to_string(), 2),
                ("idle.example.com.".to_string(), 0),
                ("portal.example.com.".to_string(), 2),
                ("tls.example.com.".to_string(), 2),
                ("web.example.com.".to_string(), 2)
            ]
        );
        st.gateways
            .apply(Change::Apply(key("shop", "gw"), Some(gw(false))));
        assert!(hosts(&st).iter().all(|(_, r)| *r == 0), "not Programmed");
    }

    #[test]
    fn a_missing_crd_counts_as_listed_and_empties_the_kind() {
        let mut sp = spec("c1");
        sp.dns_endpoints = true;
        let mut st = ClusterState::for_spec(&sp);
        st.services = listed("10.0.0.1", 1).services;
        st.slices = listed("10.0.0.1", 1).slices;
        st.ingresses.apply(Change::Init);
        st.ingresses.apply(Change::InitDone);
        st.nodes = listed("10.0.0.1", 1).nodes;
        assert!(!st.complete(), "waits for DNSEndpoints");
        assert!(
            st.problem()
                .unwrap()
                .contains("dnsendpoints.externaldns.k8s.io")
        );
        st.crd_missing(Kind::DnsEndpoints);
        assert!(st.complete() && st.up());
        let mut with = with_endpoints(
            "10.0.0.1",
            &[(
                "x.example.com",
                None,
                RData::A("192.0.2.1".parse().unwrap()),
            )],
        );
        assert!(with.crd_missing(Kind::DnsEndpoints), "its objects are gone");
        assert!(with.dns_endpoints.live.is_empty());
    }
}
