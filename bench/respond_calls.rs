//! Query-path cost harness (not a test): builds the table of the shipped example config and
//! answers a fixed mix of queries through `respond` N times, with no sockets, so that
//! `valgrind --tool=callgrind` can count instructions per query:
//!
//! ```sh
//! cargo build --release --example respond_calls
//! valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.out \
//!     target/release/examples/respond_calls 200000
//! callgrind_annotate /tmp/cg.out | grep -E 'respond|PROGRAM TOTALS'
//! ```
//! (instructions of `fedns::dns::respond::respond` inclusive ÷ N = instructions per query).
//! A second argument `rrl` turns response-rate limiting on (with a rate no query reaches),
//! `rrl-name` with the query name in the key;
//! `signed` signs the zone (DNSSEC, ECDSA P-256) so the DO=1 queries get signed answers, and
//! `signed-nx` adds a name that does not exist (its compact denial is signed per query).

use std::path::Path;

use fedns::dns::respond::{Limits, Peer, Source, Transport, WorkerState, respond};
use fedns::geo::Locator;
use fedns::metrics::QueryStats;

fn query(name: &str, qtype: u16, edns: bool) -> Vec<u8> {
    let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, edns as u8];
    for l in name.trim_end_matches('.').split('.') {
        q.push(l.len() as u8);
        q.extend_from_slice(l.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&[0, 1]);
    if edns {
        q.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0x80, 0, 0, 0]);
    }
    q
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let zone_path = root.join("zones/example.com.zone");
    let zone = fedns::dns::zonefile::parse(
        &zone_path,
        &std::fs::read_to_string(&zone_path).expect("zone file"),
    )
    .expect("zone parses");
    let fed_path = root.join("config/federation.yaml");
    let fed = fedns::sources::federation_file::parse(
        &fed_path,
        &std::fs::read_to_string(&fed_path).expect("federation file"),
    )
    .expect("federation parses");
    let locator = Locator::new(&[], &[], &[], true, None);
    let mode = std::env::args().nth(2).unwrap_or_default();
    let signing = match mode.as_str() {
        "signed" | "signed-nx" => fedns::dns::dnssec::KeyRing::load(
            &[fedns::model::DnsName::parse("example.com").expect("name")],
            Path::new("/nonexistent/respond-calls-keys"),
            fedns::dns::dnssec::Algorithm::EcdsaP256,
            std::time::Duration::from_secs(14 * 86400),
            std::time::Duration::from_secs(7 * 86400),
            false,
        )
        .expect("keys")
        .signing(1_800_000_000)
        .to_vec(),
        _ => Vec::new(),
    };
    let table = fedns::answers::build(fedns::answers::BuildInput {
        zones: &[zone],
        federations: &[fed],
        etcd: &[],
        cache: None,
        serial: 1,
        generation: 1,
        locator: &locator,
        signing: &signing,
    })
    .table;
    // The same mix with and without signing; names that do not exist only with `signed-nx`
    // (with DO=1 their denial is signed per query, so they are measured apart).
    let mut queries = vec![
        query("checkout.shop.myfed.svc.example.com.", 1, true),
        query("checkout.shop.myfed.svc.example.com.", 28, false),
        query("www.example.com.", 1, true),
        query("payments.billing.myfed.svc.example.com.", 1, true),
        query("example.com.", 15, false),
        query("example.org.", 1, true),
    ];
    if mode == "signed-nx" {
        queries.push(query("nothing.example.com.", 1, true));
    }
    let src = Source {
        table: &table,
        locator: &locator,
        limits: Limits { edns_payload: 1232 },
        tsig: None,
        identity: None,
    };
    let stats = QueryStats::default();
    let rrl = std::env::args()
        .nth(2)
        .filter(|a| a == "rrl" || a == "rrl-name")
        .map(|a| {
            fedns::dns::rrl::Rrl::new(
                std::sync::Arc::new(fedns::dns::rrl::RrlConfig {
                    responses_per_second: u32::MAX,
                    key_by_name: a == "rrl-name",
                    ..Default::default()
                }),
                Default::default(),
            )
        });
    let mut state = WorkerState::default().with_rrl(rrl);
    let mut out = vec![0u8; 4096];
    let peer = Peer {
        addr: "192.0.2.7".parse().expect("address"),
        transport: Transport::Udp,
    };
    let mut bytes = 0usize;
    for i in 0..n {
        let q = &queries[i % queries.len()];
        bytes += respond(src, q, &mut out, peer, &mut state, &stats).unwrap_or(0);
    }
    println!("{n} queries, {bytes} response bytes");
}
