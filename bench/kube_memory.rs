//! Where the Kubernetes source's bytes go (not a test): the objects of `kube_propagation`
//! (CLUSTERS clusters × SERVICES LoadBalancer Services, two ports, one EndpointSlice each with
//! one ready endpoint, one Node), built as the test API server serves them, translated by the
//! source's own `watch` functions and listed into its stores, then assembled; prints the live
//! heap of each store, the assembler's own keep and a re-list's leftovers, per object:
//!
//! ```sh
//! cargo build --release --example kube_memory
//! target/release/examples/kube_memory 10 10000
//! ```
//! Counts requested bytes, the same rounded up to jemalloc's size classes (the binary's
//! allocator: 8, 16 to 128 by 16, then four classes per doubling) and live allocations; RSS is
//! higher by the allocator's own overhead and fragmentation.

#[path = "../tests/kube_api/mod.rs"]
mod kube_api;

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::sync::atomic::{AtomicIsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use fedns::sources::kubernetes::config::{Access, ClusterSpec, KubeSettings, SelectRule};
use fedns::sources::kubernetes::state::{Assembler, Change, ClusterState};
use fedns::sources::kubernetes::watch::{key_of, slim_node, slim_service, slim_slice};
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::json;

struct Counting;

static BYTES: AtomicIsize = AtomicIsize::new(0);
static ROUNDED: AtomicIsize = AtomicIsize::new(0);
static BLOCKS: AtomicIsize = AtomicIsize::new(0);

/// jemalloc's size class for `n` bytes.
fn class(n: usize) -> isize {
    let c = if n <= 8 {
        8
    } else if n <= 128 {
        n.div_ceil(16) * 16
    } else {
        let step = n.next_power_of_two() / 8;
        n.div_ceil(step) * step
    };
    c as isize
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        BYTES.fetch_add(l.size() as isize, Relaxed);
        ROUNDED.fetch_add(class(l.size()), Relaxed);
        BLOCKS.fetch_add(1, Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        BYTES.fetch_sub(l.size() as isize, Relaxed);
        ROUNDED.fetch_sub(class(l.size()), Relaxed);
        BLOCKS.fetch_sub(1, Relaxed);
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        BYTES.fetch_add(new as isize - l.size() as isize, Relaxed);
        ROUNDED.fetch_add(class(new) - class(l.size()), Relaxed);
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static A: Counting = Counting;

/// (bytes, bytes in size classes, blocks) live.
fn live() -> [isize; 3] {
    [
        BYTES.load(Relaxed),
        ROUNDED.load(Relaxed),
        BLOCKS.load(Relaxed),
    ]
}

fn spec(c: usize) -> ClusterSpec {
    ClusterSpec {
        name: format!("c{c}"),
        access: Access::InCluster,
        region: None,
        zones: vec![],
        weight: 100,
        client_networks: vec![],
        dns_endpoints: false,
        gateway_api: false,
        service_imports: false,
    }
}

/// The objects of cluster `c`, as `kube_propagation` puts them on its API server.
fn objects(c: usize, services: usize) -> (Vec<Service>, Vec<EndpointSlice>, Vec<Node>) {
    let label = json!({"fedns.io/federate": "true"});
    fn de<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
        serde_json::from_value(v).expect("a valid object")
    }
    let (mut svcs, mut slices) = (Vec::new(), Vec::new());
    for i in 0..services {
        let name = format!("svc-{i}");
        let ip = format!("10.{}.{}.{}", 100 + i / 65536, (i / 256) % 256, i % 256);
        svcs.push(de(kube_api::service(
            "load",
            &name,
            label.clone(),
            &[&ip],
            &[],
        )));
        slices.push(de(kube_api::slice(
            "load",
            &format!("{name}-1"),
            &name,
            &[(&*format!("10.1.{c}.1"), true, false, Some("zone-b"))],
        )));
    }
    let nodes = vec![de(kube_api::node(
        "n1",
        &format!("region-{c}"),
        "zone-b",
        false,
    ))];
    (svcs, slices, nodes)
}

fn main() {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>().ok());
    let clusters = args.next().flatten().unwrap_or(10);
    let services = args.next().flatten().unwrap_or(10_000);
    let rule = SelectRule::default();
    let specs: Vec<ClusterSpec> = (0..clusters).map(spec).collect();
    let mut states: Vec<ClusterState> = specs.iter().map(ClusterState::for_spec).collect();
    let (mut svc, mut sl) = ([0isize; 3], [0isize; 3]);
    let add = |sum: &mut [isize; 3], a: [isize; 3], b: [isize; 3]| {
        for i in 0..3 {
            sum[i] += b[i] - a[i];
        }
    };
    for (c, st) in states.iter_mut().enumerate() {
        let (svcs, slices, nodes) = objects(c, services);
        st.nodes.apply(Change::Init);
        for n in &nodes {
            st.nodes.apply(Change::InitApply(key_of(n), slim_node(n)));
        }
        st.nodes.apply(Change::InitDone);
        st.ingresses.apply(Change::Init);
        st.ingresses.apply(Change::InitDone);
        let l0 = live();
        st.services.apply(Change::Init);
        for s in &svcs {
            st.services
                .apply(Change::InitApply(key_of(s), slim_service(s, &rule)));
        }
        st.services.apply(Change::InitDone);
        let l1 = live();
        st.slices.apply(Change::Init);
        for s in &slices {
            st.slices.apply(Change::InitApply(key_of(s), slim_slice(s)));
        }
        st.slices.apply(Change::InitDone);
        let l2 = live();
        add(&mut svc, l0, l1);
        add(&mut sl, l1, l2);
    }
    let objects = clusters * services;
    let row = |what: &str, [b, r, n]: [isize; 3], per: usize| {
        println!(
            "{what:<34} {:>6.1} MB ({:>6.1} MB in size classes) {:>8} blocks {:>5.0} B/object ({:>4.0})",
            b as f64 / 1e6,
            r as f64 / 1e6,
            n,
            b as f64 / per as f64,
            r as f64 / per as f64
        );
    };
    println!("{clusters} clusters × {services} services (+ as many EndpointSlices)");
    row("Service stores", svc, objects);
    row("EndpointSlice stores (+ members)", sl, objects);
    let mut both = svc;
    add(&mut both, [0; 3], sl);
    row("both", both, 2 * objects);

    let settings = KubeSettings {
        federation: "myfed".into(),
        zone: fedns::model::DnsName::parse("example.com").unwrap(),
        ttl: 30,
        max_answers: 64,
        policy: fedns::model::Policy::All,
        select: rule.clone(),
        stale_grace: Duration::from_secs(300),
        sync_timeout: Duration::from_secs(30),
        coalesce: Duration::from_millis(50),
        resolve_interval: Duration::from_secs(30),
        cluster_domain: None,
        clusterset_domain: None,
        clusters: specs.clone(),
    };
    let resolved = HashMap::new();
    let mut asm = Assembler::default();
    let l0 = live();
    let views: Vec<(&ClusterSpec, &ClusterState)> = specs.iter().zip(states.iter()).collect();
    let (fed, _) = asm.assemble(&settings, &views, &resolved, Instant::now(), None);
    let l1 = live();
    drop(fed);
    let l2 = live();
    let (mut made, mut kept) = ([0; 3], [0; 3]);
    add(&mut made, l0, l1);
    add(&mut kept, l0, l2);
    row("assembled snapshot (Federation)", made, 2 * objects);
    row("  of it kept between changes", kept, 2 * objects);
    // What the Assembler keeps is the snapshot's services (shared with the merger's copy of
    // the snapshot, `Arc` and all) and its own keys.
    drop(asm);
    // A re-list of every Service of cluster 0 with the same objects: the store must come back
    // to the same size (the relist buffer gone).
    let (svcs, _, _) = self::objects(0, services);
    let l0 = live();
    let st = &mut states[0];
    st.services.apply(Change::Init);
    for s in &svcs {
        st.services
            .apply(Change::InitApply(key_of(s), slim_service(s, &rule)));
    }
    st.services.apply(Change::InitDone);
    let l1 = live();
    println!(
        "re-list of cluster 0's Services: {:+.2} MB left behind",
        (l1[0] - l0[0]) as f64 / 1e6
    );
}
