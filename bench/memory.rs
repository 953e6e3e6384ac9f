//! Where the bytes go (not a test): builds the federation of `bench/federation_file.py`
//! (CLUSTERS clusters × SERVICES services, two ports, policy `all`) with a counting allocator and
//! prints the live heap of the model, the builder's cache and the table, per name and per shard:
//!
//! ```sh
//! cargo build --release --example memory
//! target/release/examples/memory 10 10000
//! ```
//! Counts requested bytes and live allocations (malloc adds about 8–16 bytes to each); RSS is
//! higher by the allocator's own overhead and fragmentation.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering::Relaxed};

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

fn federation(clusters: usize, services: usize) -> String {
    let mut out = String::from(
        "federation:\n  name: myfed\n  zone: example.com\n  ttl: 30\n  max_answers: 64\n  policy: all\nclusters:\n",
    );
    for c in 0..clusters {
        out += &format!("  - {{name: c{c}, region: region-{c}, zones: [zone-{c}]}}\n");
    }
    out += "services:\n";
    for i in 0..=services {
        let (name, ns) = if i == 0 {
            ("checkout".to_string(), "shop")
        } else {
            (format!("svc-{i}"), "load")
        };
        out += &format!(
            "  - name: {name}\n    namespace: {ns}\n    ports:\n      - {{name: http, protocol: TCP, port: 80}}\n      - {{name: grpc, protocol: TCP, port: 9090}}\n    shards:\n"
        );
        for c in 0..clusters {
            out += &format!(
                "      - {{cluster: c{c}, addresses: [10.{c}.{}.{}], ready_endpoints: 1}}\n",
                (i >> 8) & 255,
                i & 255
            );
        }
    }
    out
}

/// Times a whole parse, a first cached parse and a one-line edit's cached parse.
fn parse_times(text: &str) {
    use fedns::sources::federation_file::{ItemCache, parse_cached, parse_with_hosts};
    let path = std::path::Path::new("f.yaml");
    let t = std::time::Instant::now();
    let whole = parse_with_hosts(path, text).expect("parses");
    println!("whole parse: {:?}", t.elapsed());
    let mut cache = ItemCache::default();
    let t = std::time::Instant::now();
    let first = parse_cached(path, text, &mut cache).expect("parses");
    println!("first cached parse: {:?}", t.elapsed());
    assert!(first == whole);
    let edited = text.replacen("ready_endpoints: 1", "ready_endpoints: 2", 1);
    for _ in 0..3 {
        let t = std::time::Instant::now();
        let mut p = parse_cached(path, &edited, &mut cache).expect("parses");
        let parsed = t.elapsed();
        let t = std::time::Instant::now();
        p.share_unchanged(&first);
        let shared = t.elapsed();
        let t = std::time::Instant::now();
        let same = p == first;
        println!(
            "edit: cached parse {parsed:?}, share {shared:?}, compare {:?} ({same})",
            t.elapsed()
        );
    }
    let (before, blocks) = live();
    drop(cache);
    let (after, blocks_after) = live();
    println!(
        "item cache: {:.1} MB in {} blocks",
        (before - after) as f64 / 1e6,
        blocks - blocks_after
    );
}

fn main() {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>().ok());
    let clusters = args.next().flatten().unwrap_or(10);
    let services = args.next().flatten().unwrap_or(10_000);
    let text = federation(clusters, services);
    if std::env::args().any(|a| a == "--parse") {
        return parse_times(&text);
    }
    let (b0, n0) = live();
    let fed = fedns::sources::federation_file::parse(std::path::Path::new("f.yaml"), &text)
        .expect("the generated file parses");
    drop(text);
    let (b1, n1) = live();
    let locator = fedns::geo::Locator::default();
    let mut cache = fedns::answers::BuildCache::default();
    let built = fedns::answers::build(fedns::answers::BuildInput {
        zones: &[],
        federations: std::slice::from_ref(&fed),
        etcd: &[],
        cache: Some(&mut cache),
        serial: 1,
        generation: 1,
        locator: &locator,
        signing: &[],
    });
    let names = built.table.name_count;
    let (b2, n2) = live();
    // The cache shares the table's segments and answers: dropped first, it gives back only
    // what is its own.
    drop(cache);
    let (b3, n3) = live();
    drop(built);
    let (b4, n4) = live();
    let shards = clusters * (services + 1);
    let row = |what: &str, b: isize, n: isize| {
        println!(
            "{what:<28} {:>8.1} MB {:>10} blocks {:>7.0} B/name {:>7.0} B/shard",
            b as f64 / 1e6,
            n,
            b as f64 / names as f64,
            b as f64 / shards as f64
        );
    };
    println!(
        "{clusters} clusters × {} services: {names} names, {shards} shards",
        services + 1
    );
    row("model (parsed federation)", b1 - b0, n1 - n0);
    row("build cache (its own)", b2 - b3, n2 - n3);
    row("table (segments, answers)", b3 - b4, n3 - n4);
    row("cache + table", b2 - b4, n2 - n4);
    drop(fed);
}
