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
//! Counts requested bytes and live allocations (the allocator adds its size-class rounding);
//! RSS is higher by the allocator's own overhead and fragmentation.

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
static BLOCKS: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        BYTES.fetch_add(l.size() as isize, Relaxed);
        BLOCKS.fetch_add(1, Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        BYTES.fetch_sub(l.size() as isize, Relaxed);
        BLOCKS.fetch_sub(1, Relaxed);
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        BYTES.fetch_add(new as isize - l.size() as isize, Relaxed);
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static A: Counting = Counting;

fn live() -> (isize, isize) {
    (BYTES.load(Relaxed), BLOCKS.load(Relaxed))
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
    let (mut svc_bytes, mut slice_bytes, mut blocks) = (0isize, 0isize, [0isize; 2]);
    for (c, st) in states.iter_mut().enumerate() {
        let (svcs, slices, nodes) = objects(c, services);
        st.nodes.apply(Change::Init);
        for n in &nodes {
            st.nodes.apply(Change::InitApply(key_of(n), slim_node(n)));
        }
        st.nodes.apply(Change::InitDone);
        st.ingresses.apply(Change::Init);
        st.ingresses.apply(Change::InitDone);
        let (b0, n0) = live();
        st.services.apply(Change::Init);
        for s in &svcs {
            st.services
                .apply(Change::InitApply(key_of(s), slim_service(s, &rule)));
        }
        st.services.apply(Change::InitDone);
        let (b1, n1) = live();
        st.slices.apply(Change::Init);
        for s in &slices {
            st.slices.apply(Change::InitApply(key_of(s), slim_slice(s)));
        }
        st.slices.apply(Change::InitDone);
        let (b2, n2) = live();
        svc_bytes += b1 - b0;
        slice_bytes += b2 - b1;
        blocks[0] += n1 - n0;
        blocks[1] += n2 - n1;
    }
    let objects = clusters * services;
    let row = |what: &str, b: isize, n: isize, per: usize| {
        println!(
            "{what:<34} {:>8.1} MB {:>9} blocks {:>6.0} B/object",
            b as f64 / 1e6,
            n,
            b as f64 / per as f64
        );
    };
    println!("{clusters} clusters × {services} services (+ as many EndpointSlices)");
    row("Service stores", svc_bytes, blocks[0], objects);
    row(
        "EndpointSlice stores (+ members)",
        slice_bytes,
        blocks[1],
        objects,
    );

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
    let (b0, n0) = live();
    let views: Vec<(&ClusterSpec, &ClusterState)> = specs.iter().zip(states.iter()).collect();
    let (fed, _) = asm.assemble(&settings, &views, &resolved, Instant::now(), None);
    let (b1, n1) = live();
    drop(fed);
    let (b2, n2) = live();
    row(
        "assembled snapshot (Federation)",
        b1 - b0,
        n1 - n0,
        2 * objects,
    );
    row(
        "  of it kept between changes",
        b2 - b0,
        n2 - n0,
        2 * objects,
    );
    // What the Assembler keeps is the snapshot's services (shared with the merger's copy of
    // the snapshot, `Arc` and all) and its own keys.
    drop(asm);
    // A re-list of every Service of cluster 0 with the same objects: the store must come back
    // to the same size (the relist buffer gone).
    let (svcs, _, _) = self::objects(0, services);
    let (b0, _) = live();
    let st = &mut states[0];
    st.services.apply(Change::Init);
    for s in &svcs {
        st.services
            .apply(Change::InitApply(key_of(s), slim_service(s, &rule)));
    }
    st.services.apply(Change::InitDone);
    let (b1, _) = live();
    println!(
        "re-list of cluster 0's Services: {:+.2} MB left behind",
        (b1 - b0) as f64 / 1e6
    );
    let total = svc_bytes + slice_bytes;
    println!(
        "stores: {:.1} MB, {:.0} B per object (Services and EndpointSlices)",
        total as f64 / 1e6,
        total as f64 / (2 * objects) as f64
    );
}
