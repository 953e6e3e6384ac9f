//! End-to-end tests of the Kubernetes source: the real `fedns` binary, its real `kube` client,
//! and test Kubernetes API servers (`kube_api`) that serve list and watch exactly like a
//! kube-apiserver, several at once, one per member cluster. Answers are checked over the DNS
//! wire (UDP), sync state over HTTP (`/readyz`, `/metrics`).
//!
//! Every wait is bounded; fedns is killed by PID on drop, the API servers' runtimes shut down on
//! drop. Only loopback is used.

mod common;
mod kube_api;

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RData, RecordType};
use kube_api::{
    ApiServer, Res, cluster_ip_service, dns_endpoint, gateway, headless_slice, http_route, ingress,
    kubeconfig, kubeconfig_secure, node, service, service_import, slice, test_ca,
};
use serde_json::json;

use common::{BIN, Fedns, http_get, wait_for};

const ZONE: &str = "$ORIGIN example.com.\n$TTL 3600\n@ IN SOA ns1.example.com. hostmaster.example.com. 1 3600 600 86400 30\n@ IN NS ns1.example.com.\nns1 IN A 127.0.0.1\n";

const G: &str = "checkout.shop.myfed.svc.example.com.";
const R_EAST: &str = "checkout.shop.myfed.svc.us-east1.example.com.";
const R_WEST: &str = "checkout.shop.myfed.svc.us-west2.example.com.";
const Z_EAST_B: &str = "checkout.shop.myfed.svc.us-east1-b.us-east1.example.com.";
const Z_EAST_C: &str = "checkout.shop.myfed.svc.us-east1-c.us-east1.example.com.";
const Z_EAST_D: &str = "checkout.shop.myfed.svc.us-east1-d.us-east1.example.com.";
const Z_WEST_A: &str = "checkout.shop.myfed.svc.us-west2-a.us-west2.example.com.";
const SHOP: &str = "shop.example.com.";

const IP_EAST1: &str = "203.0.113.10";
const IP_EAST2: &str = "203.0.113.20";
const IP_WEST: &str = "198.51.100.30";

fn set(v: &[&str]) -> BTreeSet<IpAddr> {
    v.iter().map(|s| s.parse().unwrap()).collect()
}

// ------------------------------------------------------------------------------------------
// Three member clusters in two regions
// ------------------------------------------------------------------------------------------

fn fed_label() -> serde_json::Value {
    json!({"app": "checkout", "fedns.io/federate": "true"})
}

/// east1: us-east1, two zones (b, c); east2: node labels say us-central1 but the config
/// overrides it to us-east1/us-east1-d; west: us-west2-a from the deprecated labels only.
struct Clusters {
    east1: ApiServer,
    east2: ApiServer,
    west: ApiServer,
}

impl Clusters {
    fn start() -> Clusters {
        let c = Clusters {
            east1: ApiServer::start(),
            east2: ApiServer::start(),
            west: ApiServer::start(),
        };
        let e1 = &c.east1;
        e1.put(Res::Nodes, node("e1-n1", "us-east1", "us-east1-b", false));
        e1.put(Res::Nodes, node("e1-n2", "us-east1", "us-east1-c", false));
        e1.put(
            Res::Services,
            service(
                "shop",
                "checkout",
                fed_label(),
                &[IP_EAST1, "2001:db8:10::10"],
                &[],
            ),
        );
        e1.put(
            Res::EndpointSlices,
            slice(
                "shop",
                "checkout-7xk2p",
                "checkout",
                &[
                    ("10.244.1.5", true, false, Some("us-east1-b")),
                    ("10.244.2.5", true, false, Some("us-east1-c")),
                ],
            ),
        );
        // Not federated: ClusterIP, and a LoadBalancer without the label.
        e1.put(
            Res::Services,
            cluster_ip_service("shop", "cart", fed_label()),
        );
        e1.put(
            Res::EndpointSlices,
            slice(
                "shop",
                "cart-1",
                "cart",
                &[("10.244.1.6", true, false, None)],
            ),
        );
        e1.put(
            Res::Services,
            service(
                "shop",
                "internal",
                json!({"app": "internal"}),
                &["203.0.113.99"],
                &[],
            ),
        );
        e1.put(
            Res::EndpointSlices,
            slice(
                "shop",
                "internal-1",
                "internal",
                &[("10.244.1.7", true, false, None)],
            ),
        );
        // A load balancer known only by hostname (resolved in the background).
        e1.put(
            Res::Services,
            service("shop", "catalog", fed_label(), &[], &["localhost"]),
        );
        e1.put(
            Res::EndpointSlices,
            slice(
                "shop",
                "catalog-1",
                "catalog",
                &[("10.244.1.8", true, false, None)],
            ),
        );
        e1.put(
            Res::Ingresses,
            ingress(
                "shop",
                "storefront",
                &["shop.example.com", "elsewhere.example.net"],
                "checkout",
                &["198.51.100.100"],
            ),
        );

        let e2 = &c.east2;
        e2.put(
            Res::Nodes,
            node("e2-n1", "us-central1", "us-central1-a", false),
        );
        e2.put(
            Res::Services,
            service("shop", "checkout", fed_label(), &[IP_EAST2], &[]),
        );
        e2.put(
            Res::EndpointSlices,
            slice(
                "shop",
                "checkout-abcde",
                "checkout",
                &[("10.245.1.5", true, false, Some("us-east1-d"))],
            ),
        );

        let w = &c.west;
        w.put(Res::Nodes, node("w-n1", "us-west2", "us-west2-a", true));
        w.put(
            Res::Services,
            service("shop", "checkout", fed_label(), &[IP_WEST], &[]),
        );
        w.put(
            Res::EndpointSlices,
            slice(
                "shop",
                "checkout-w1",
                "checkout",
                &[
                    ("10.246.1.5", true, false, Some("us-west2-a")),
                    ("10.246.1.6", false, true, Some("us-west2-a")),
                ],
            ),
        );
        w.put(
            Res::Services,
            service("shop", "solo", fed_label(), &["198.51.100.77"], &[]),
        );
        w.put(
            Res::EndpointSlices,
            slice(
                "shop",
                "solo-1",
                "solo",
                &[("10.246.1.9", true, false, None)],
            ),
        );
        w.put(
            Res::Ingresses,
            ingress(
                "shop",
                "storefront",
                &["shop.example.com"],
                "checkout",
                &["198.51.100.101"],
            ),
        );
        c
    }

    fn kubeconfig(&self) -> String {
        kubeconfig(&[
            ("east1", self.east1.url()),
            ("east2", self.east2.url()),
            ("west", self.west.url()),
        ])
    }
}

const CLUSTER_EAST1: &str = "    - {name: east1, kubeconfig: kubeconfig, context: east1}\n";
const CLUSTER_EAST2: &str = "    - {name: east2, kubeconfig: kubeconfig, context: east2, region: us-east1, zones: [us-east1-d]}\n";
const CLUSTER_WEST: &str =
    "    - {name: west, kubeconfig: kubeconfig, context: west, weight: 50}\n";

// ------------------------------------------------------------------------------------------
// fedns process and DNS/HTTP clients
// ------------------------------------------------------------------------------------------

struct Fixture {
    dir: tempfile::TempDir,
    /// Config appended after the `kubernetes:` section.
    extra: String,
}

impl Fixture {
    fn new(kubeconfig: &str, clusters: &[&str], grace_secs: u64) -> Fixture {
        Self::with_extra(kubeconfig, clusters, grace_secs, "")
    }

    fn with_extra(kubeconfig: &str, clusters: &[&str], grace_secs: u64, extra: &str) -> Fixture {
        let fx = Fixture {
            dir: tempfile::tempdir().expect("temp dir"),
            extra: extra.to_string(),
        };
        std::fs::create_dir_all(fx.path("zones")).unwrap();
        fx.write("zones/example.com.zone", ZONE);
        fx.write("kubeconfig", kubeconfig);
        fx.write_config(clusters, grace_secs);
        fx
    }

    fn write_config(&self, clusters: &[&str], grace_secs: u64) {
        self.write(
            "fedns.yaml",
            &format!(
                "listen: [\"127.0.0.1:0\"]\nhttp: \"127.0.0.1:0\"\nworkers: 1\nwatch_interval_ms: 100\nzones_dir: zones\nkubernetes:\n  federation: myfed\n  zone: example.com\n  ttl: 5\n  stale_grace_secs: {grace_secs}\n  coalesce_ms: 20\n  resolve_interval_secs: 1\n  select:\n    label: fedns.io/federate=true\n  clusters:\n{}{}",
                clusters.concat(),
                self.extra
            ),
        );
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn write(&self, rel: &str, text: &str) {
        let dst = self.path(rel);
        let tmp = dst.with_extension("tmp~");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &dst).unwrap();
    }
}

impl Fedns {
    fn ask(&self, qname: &str, t: RecordType) -> Answer {
        ask(self.udp, qname, t)
    }

    /// Addresses of an A query (after following nothing: CNAMEs are reported separately).
    fn a(&self, qname: &str) -> BTreeSet<IpAddr> {
        self.ask(qname, RecordType::A).addrs
    }

    /// Waits until the A answer of `qname` equals `want`; panics with the last answer if not.
    fn expect_a(&self, qname: &str, want: &[&str], timeout: Duration) {
        let want = set(want);
        let mut last = None;
        if wait_for(timeout, || {
            let got = self.ask(qname, RecordType::A);
            let ok = got.rcode == 0 && got.addrs == want;
            last = Some(got);
            ok.then_some(())
        })
        .is_none()
        {
            panic!(
                "{qname}: wanted {want:?}, last answer {last:?}\nlog:\n{}",
                self.log_text()
            );
        }
    }

    fn metric(&self, line_prefix: &str) -> Option<f64> {
        let (_, body) = http_get(self.http, "/metrics");
        body.lines()
            .find(|l| l.starts_with(line_prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }
}

#[derive(Debug, Clone)]
struct Answer {
    rcode: u16,
    addrs: BTreeSet<IpAddr>,
    cname: Option<String>,
    srv: Vec<(u16, String)>,
    txt: Vec<String>,
    /// TTL of the first answer record.
    ttl: Option<u32>,
}

fn ask(server: SocketAddr, qname: &str, t: RecordType) -> Answer {
    ask_from("127.0.0.1", server, qname, t)
}

/// Asks from a chosen loopback source address (the client location under `geo`).
fn ask_from(src: &str, server: SocketAddr, qname: &str, t: RecordType) -> Answer {
    static ID: AtomicU16 = AtomicU16::new(1);
    let id = ID.fetch_add(1, Ordering::Relaxed);
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.add_query(Query::query(Name::from_ascii(qname).unwrap(), t));
    let req = m.to_vec().unwrap();
    let sock = UdpSocket::bind((src, 0)).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut buf = vec![0u8; 65535];
    for _ in 0..6 {
        sock.send_to(&req, server).unwrap();
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            if from != server || n < 2 || buf[..2] != req[..2] {
                continue;
            }
            let msg = Message::from_vec(&buf[..n]).expect("valid DNS response");
            let mut a = Answer {
                rcode: u16::from(msg.metadata.response_code),
                addrs: BTreeSet::new(),
                cname: None,
                srv: vec![],
                txt: vec![],
                ttl: msg.answers.first().map(|r| r.ttl),
            };
            for r in &msg.answers {
                match &r.data {
                    RData::A(x) => {
                        a.addrs.insert(IpAddr::V4(x.0));
                    }
                    RData::AAAA(x) => {
                        a.addrs.insert(IpAddr::V6(x.0));
                    }
                    RData::CNAME(c) if a.cname.is_none() => a.cname = Some(c.0.to_ascii()),
                    RData::SRV(s) => a.srv.push((s.port, s.target.to_ascii())),
                    RData::TXT(t) => a.txt.extend(
                        t.txt_data
                            .iter()
                            .map(|c| String::from_utf8_lossy(c).into_owned()),
                    ),
                    _ => {}
                }
            }
            return a;
        }
    }
    panic!("no DNS answer from {server} for {qname}");
}

const SETTLE: Duration = Duration::from_secs(20);

// ------------------------------------------------------------------------------------------
// Tests
// ------------------------------------------------------------------------------------------

/// Three clusters in two regions → global, regional, zonal, SRV and ingress answers; the
/// federation rule; topology from node labels (deprecated ones too) and the config override;
/// a load balancer known by hostname; then an endpoint turning unready changes the answer
/// within a second.
#[test]
fn three_clusters_two_regions_then_an_endpoint_turns_unready() {
    let cl = Clusters::start();
    let fx = Fixture::new(
        &cl.kubeconfig(),
        &[CLUSTER_EAST1, CLUSTER_EAST2, CLUSTER_WEST],
        30,
    );
    let f = Fedns::start(&fx.path("fedns.yaml"));

    f.expect_a(G, &[IP_EAST1, IP_EAST2, IP_WEST], SETTLE);
    assert_eq!(
        f.ask(G, RecordType::AAAA).addrs,
        set(&["2001:db8:10::10"]),
        "IPv6 LB address"
    );
    f.expect_a(R_EAST, &[IP_EAST1, IP_EAST2], SETTLE);
    f.expect_a(R_WEST, &[IP_WEST], SETTLE);
    // A multi-zone cluster serves each of its zones; the override put east2 in us-east1-d.
    f.expect_a(Z_EAST_B, &[IP_EAST1], SETTLE);
    f.expect_a(Z_EAST_C, &[IP_EAST1], SETTLE);
    f.expect_a(Z_EAST_D, &[IP_EAST2], SETTLE);
    f.expect_a(Z_WEST_A, &[IP_WEST], SETTLE);
    let central = f.ask(
        "checkout.shop.myfed.svc.us-central1.example.com.",
        RecordType::A,
    );
    assert_eq!(
        central.rcode, 3,
        "the config override wins over node labels: {central:?}"
    );
    // Only labelled LoadBalancer services are federated.
    for n in [
        "cart.shop.myfed.svc.example.com.",
        "internal.shop.myfed.svc.example.com.",
    ] {
        assert_eq!(f.ask(n, RecordType::A).rcode, 3, "{n} must not be served");
    }
    // Hostname-only load balancer, resolved in the background.
    f.expect_a(
        "catalog.shop.myfed.svc.example.com.",
        &["127.0.0.1"],
        SETTLE,
    );
    // SRV per named port, targeting the global name.
    let srv = f.ask(&format!("_http._tcp.{G}"), RecordType::SRV);
    assert_eq!(srv.srv, vec![(80, G.to_string())], "{srv:?}");
    // Ingress hosts inside the served zone; hosts elsewhere are not ours.
    f.expect_a(SHOP, &["198.51.100.100", "198.51.100.101"], SETTLE);
    assert_eq!(f.ask("elsewhere.example.net.", RecordType::A).rcode, 5);

    let (status, body) = http_get(f.http, "/readyz");
    assert_eq!(status, 200, "{body}");
    for c in ["east1", "east2", "west"] {
        assert_eq!(
            f.metric(&format!("fedns_cluster_up{{cluster=\"{c}\"}}")),
            Some(1.0),
            "{c}"
        );
    }

    // West's only ready endpoint turns unready (its other one is terminating, which never
    // counts): west leaves every answer within a second.
    let changed_at = Instant::now();
    cl.west.put(
        Res::EndpointSlices,
        slice(
            "shop",
            "checkout-w1",
            "checkout",
            &[
                ("10.246.1.5", false, false, Some("us-west2-a")),
                ("10.246.1.6", false, true, Some("us-west2-a")),
            ],
        ),
    );
    let want = set(&[IP_EAST1, IP_EAST2]);
    wait_for(Duration::from_secs(5), || (f.a(G) == want).then_some(()))
        .unwrap_or_else(|| panic!("west never left the answer:\n{}", f.log_text()));
    let took = changed_at.elapsed();
    assert!(took < Duration::from_secs(1), "propagation took {took:?}");
    let west = f.ask(R_WEST, RecordType::A);
    assert_eq!(
        west.cname.as_deref(),
        Some(G),
        "empty region falls back to global: {west:?}"
    );
    // The ingress in west has no ready backend any more.
    f.expect_a(SHOP, &["198.51.100.100"], Duration::from_secs(2));
}

/// With client networks configured, global names and ingress hosts answer with the shards
/// nearest the client (the default `geo` policy), clusters placed by their Node labels.
#[test]
fn global_names_and_ingress_hosts_follow_the_client_location() {
    let cl = Clusters::start();
    let geo = "geo:\n  client_networks:\n    - {cidr: 127.1.0.0/16, region: us-east1, zone: us-east1-b}\n    - {cidr: 127.2.0.0/16, region: us-west2}\n";
    let fx = Fixture::with_extra(
        &cl.kubeconfig(),
        &[CLUSTER_EAST1, CLUSTER_EAST2, CLUSTER_WEST],
        30,
        geo,
    );
    let f = Fedns::start(&fx.path("fedns.yaml"));
    // Unknown location (127.0.0.1): every healthy shard.
    f.expect_a(G, &[IP_EAST1, IP_EAST2, IP_WEST], SETTLE);
    f.expect_a(SHOP, &["198.51.100.100", "198.51.100.101"], SETTLE);
    let from = |src: &str, name: &str| ask_from(src, f.udp, name, RecordType::A).addrs;
    assert_eq!(from("127.2.0.1", G), set(&[IP_WEST]));
    assert_eq!(
        from("127.1.0.1", G),
        set(&[IP_EAST1]),
        "zone us-east1-b is east1's"
    );
    assert_eq!(from("127.2.0.1", SHOP), set(&["198.51.100.101"]));
    assert_eq!(from("127.1.0.1", SHOP), set(&["198.51.100.100"]));
}

/// An API server goes away: its last known shards keep serving for the stale grace, /readyz and
/// the metrics say so, then they are dropped, except where nothing else is left (fail static).
#[test]
fn api_server_gone_serves_last_known_then_drops_after_grace() {
    let cl = Clusters::start();
    let fx = Fixture::new(
        &cl.kubeconfig(),
        &[CLUSTER_EAST1, CLUSTER_EAST2, CLUSTER_WEST],
        4,
    );
    let f = Fedns::start(&fx.path("fedns.yaml"));
    f.expect_a(G, &[IP_EAST1, IP_EAST2, IP_WEST], SETTLE);
    f.expect_a(
        "solo.shop.myfed.svc.example.com.",
        &["198.51.100.77"],
        SETTLE,
    );
    // Error counters exist at 0 before the first error (so rate() sees it).
    for res in ["services", "endpointslices.discovery.k8s.io", "nodes"] {
        let key = format!("fedns_kube_watch_errors_total{{cluster=\"west\",resource=\"{res}\"}}");
        assert_eq!(f.metric(&key), Some(0.0), "{key}");
    }

    let gone_at = Instant::now();
    cl.west.go_away();
    let line = f
        .wait_log(Duration::from_secs(10), |l| {
            l.contains("WARN") && l.contains("cluster west:")
        })
        .unwrap_or_else(|| panic!("no warning naming the cluster:\n{}", f.log_text()));
    assert!(line.contains("last known shards"), "{line}");
    wait_for(Duration::from_secs(5), || {
        (f.metric("fedns_cluster_up{cluster=\"west\"}") == Some(0.0)).then_some(())
    })
    .expect("fedns_cluster_up{cluster=\"west\"} 0");
    let (status, body) = http_get(f.http, "/readyz");
    assert!(body.contains("kubernetes:west"), "{status} {body}");
    // Within the grace: still served.
    if gone_at.elapsed() < Duration::from_secs(3) {
        assert_eq!(
            f.a(G),
            set(&[IP_EAST1, IP_EAST2, IP_WEST]),
            "last known shards must keep serving"
        );
    }
    // After it: dropped where others answer...
    f.expect_a(G, &[IP_EAST1, IP_EAST2], Duration::from_secs(15));
    assert!(
        gone_at.elapsed() >= Duration::from_secs(4),
        "dropped before the grace: {:?}",
        gone_at.elapsed()
    );
    // ...but a name only west served is never emptied by an unreachable control plane.
    assert_eq!(
        f.a("solo.shop.myfed.svc.example.com."),
        set(&["198.51.100.77"])
    );
    assert!(f.metric("fedns_kube_fail_static_names").unwrap_or(0.0) >= 1.0);
    assert_eq!(
        f.metric("fedns_cluster_stale_expired{cluster=\"west\"}"),
        Some(1.0)
    );
}

/// A short outage of one API server (every connection cut, new ones closed) with nothing changed
/// meanwhile: kube re-watches from the old resourceVersion and that watch says nothing, yet the
/// cluster must count as healthy again within seconds and keep its shards past `stale_grace`.
#[test]
fn short_outage_with_no_change_recovers_before_stale_grace() {
    let cl = Clusters::start();
    let fx = Fixture::new(
        &cl.kubeconfig(),
        &[CLUSTER_EAST1, CLUSTER_EAST2, CLUSTER_WEST],
        4,
    );
    let f = Fedns::start(&fx.path("fedns.yaml"));
    f.expect_a(G, &[IP_EAST1, IP_EAST2, IP_WEST], SETTLE);
    let ready = || {
        let (status, body) = http_get(f.http, "/readyz");
        (status == 200 && body.contains("kubernetes:west: ready")).then_some(())
    };
    wait_for(SETTLE, ready).unwrap_or_else(|| panic!("west never ready:\n{}", f.log_text()));

    let down_at = Instant::now();
    cl.west.outage_begins();
    wait_for(Duration::from_secs(5), || {
        (f.metric("fedns_cluster_up{cluster=\"west\"}") == Some(0.0)).then_some(())
    })
    .unwrap_or_else(|| panic!("the outage was not noticed:\n{}", f.log_text()));
    std::thread::sleep(Duration::from_millis(2500).saturating_sub(down_at.elapsed()));
    cl.west.outage_ends();
    let back_at = Instant::now();

    wait_for(Duration::from_secs(5), || {
        (f.metric("fedns_cluster_up{cluster=\"west\"}") == Some(1.0)).then_some(())
    })
    .and_then(|_| {
        wait_for(
            Duration::from_secs(5).saturating_sub(back_at.elapsed()),
            ready,
        )
    })
    .unwrap_or_else(|| {
        panic!(
            "west not healthy again 5 s after its API server answered again: {:?}\nlog:\n{}",
            http_get(f.http, "/readyz"),
            f.log_text()
        )
    });
    // Past the grace counted from the start of the outage, and a little more for a flush.
    let past = down_at + Duration::from_secs(4) + Duration::from_millis(1500);
    std::thread::sleep(past.saturating_duration_since(Instant::now()));
    for _ in 0..10 {
        assert_eq!(
            f.a(G),
            set(&[IP_EAST1, IP_EAST2, IP_WEST]),
            "west's shards dropped although its watches are back:\n{}",
            f.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        f.metric("fedns_cluster_stale_expired{cluster=\"west\"}"),
        Some(0.0)
    );
}

/// `/readyz` turns 200 only once the answer table holds every cluster's data: the first time it
/// does, the fixture's Ingress host already answers. A long coalescing window makes the gap
/// between "listed" and "published" wide enough to see.
#[test]
fn readyz_is_ready_only_once_the_data_is_served() {
    let cl = Clusters::start();
    let fx = Fixture::new(&cl.kubeconfig(), &[CLUSTER_EAST1, CLUSTER_WEST], 30);
    let cfg = std::fs::read_to_string(fx.path("fedns.yaml")).unwrap();
    fx.write(
        "fedns.yaml",
        &cfg.replace("coalesce_ms: 20", "coalesce_ms: 1500"),
    );
    let f = Fedns::start(&fx.path("fedns.yaml"));
    let body = wait_for(SETTLE, || {
        let (status, body) = http_get(f.http, "/readyz");
        (status == 200).then_some(body)
    })
    .unwrap_or_else(|| panic!("never ready:\n{}", f.log_text()));
    let shop = f.ask(SHOP, RecordType::A);
    assert!(
        shop.rcode == 0 && shop.addrs == set(&["198.51.100.100", "198.51.100.101"]),
        "ready before the data is served: {shop:?}\n{body}"
    );
    for c in ["east1", "west"] {
        assert!(body.contains(&format!("kubernetes:{c}: ready")), "{body}");
    }
}

/// Clusters are removed and added by editing the config while running.
#[test]
fn cluster_removed_from_config_loses_its_shards_and_comes_back_when_added() {
    let cl = Clusters::start();
    let fx = Fixture::new(
        &cl.kubeconfig(),
        &[CLUSTER_EAST1, CLUSTER_EAST2, CLUSTER_WEST],
        30,
    );
    let f = Fedns::start(&fx.path("fedns.yaml"));
    f.expect_a(G, &[IP_EAST1, IP_EAST2, IP_WEST], SETTLE);

    fx.write_config(&[CLUSTER_EAST1, CLUSTER_WEST], 30);
    f.expect_a(G, &[IP_EAST1, IP_WEST], Duration::from_secs(5));
    // us-east1-d existed only through east2: its names are gone with it.
    assert_eq!(f.ask(Z_EAST_D, RecordType::A).rcode, 3);
    let (_, body) = http_get(f.http, "/readyz");
    assert!(!body.contains("east2"), "{body}");
    assert_eq!(f.metric("fedns_cluster_up{cluster=\"east2\"}"), None);

    // A broken config is rejected and the running clusters keep going; each problem is
    // logged once (by the reloader), not again by the Kubernetes source.
    fx.write("fedns.yaml", "kubernetes: [not, a, mapping]\n");
    f.wait_log(Duration::from_secs(5), |l| {
        l.contains("config reload rejected; the running config stays")
    })
    .unwrap_or_else(|| panic!("bad config not reported:\n{}", f.log_text()));
    std::thread::sleep(Duration::from_millis(500));
    let problem_lines = f
        .log_lines()
        .iter()
        .filter(|l| l.contains("level=ERROR") && l.contains("fedns.yaml:1"))
        .count();
    assert_eq!(problem_lines, 1, "{}", f.log_text());
    assert_eq!(f.a(G), set(&[IP_EAST1, IP_WEST]));

    fx.write_config(&[CLUSTER_EAST1, CLUSTER_EAST2, CLUSTER_WEST], 30);
    f.expect_a(G, &[IP_EAST1, IP_EAST2, IP_WEST], SETTLE);
}

/// A config the reloader refuses for what `check` refuses (here: the `kubernetes:` section
/// taking a `clusterset_domain` a federation file already serves) changes no cluster either:
/// the Kubernetes source follows only versions the reloader accepted, so west, removed in the
/// refused version, keeps its shards until a good version removes it.
#[test]
fn a_refused_reload_changes_no_cluster() {
    let cl = Clusters::start();
    let fx = Fixture::with_extra(
        &cl.kubeconfig(),
        &[CLUSTER_EAST1, CLUSTER_EAST2, CLUSTER_WEST],
        30,
        "federation_files: [mcs.yaml]\n",
    );
    fx.write(
        "mcs.yaml",
        "federation:\n  name: files\n  zone: example.com\n  clusterset_domain: clusterset.local\nclusters:\n  - {name: f1, region: r1}\nservices: []\n",
    );
    let f = Fedns::start(&fx.path("fedns.yaml"));
    f.expect_a(G, &[IP_EAST1, IP_EAST2, IP_WEST], SETTLE);
    let good = std::fs::read_to_string(fx.path("fedns.yaml")).unwrap();
    let refused = good.replace(CLUSTER_WEST, "").replace(
        "  clusters:\n",
        "  clusterset_domain: clusterset.local\n  clusters:\n",
    );
    assert_ne!(refused, good);
    fx.write("fedns.yaml", &refused);
    let line = f
        .wait_log(Duration::from_secs(10), |l| {
            l.contains("level=ERROR") && l.contains("kubernetes.clusterset_domain")
        })
        .unwrap_or_else(|| panic!("not refused:\n{}", f.log_text()));
    assert!(
        line.contains("already serves") && line.contains("fedns.yaml"),
        "{line}"
    );
    f.wait_log(Duration::from_secs(5), |l| {
        l.contains("config reload rejected")
    })
    .unwrap_or_else(|| panic!("no rejection:\n{}", f.log_text()));
    // Longer than a poll and a coalescing round: west would be gone by now.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(f.a(G), set(&[IP_EAST1, IP_EAST2, IP_WEST]));
    let (_, body) = http_get(f.http, "/readyz");
    assert!(body.contains("kubernetes:west"), "{body}");
    assert!(
        !f.log_text().contains("kubernetes config changed"),
        "{}",
        f.log_text()
    );
    // The same removal in a good version applies.
    fx.write("fedns.yaml", &good.replace(CLUSTER_WEST, ""));
    f.expect_a(G, &[IP_EAST1, IP_EAST2], SETTLE);
}

/// A 410 Gone in the watch stream makes every watch re-list; answers never go empty meanwhile,
/// and a change made while the watches were down shows up after the re-list.
#[test]
fn gone_410_relists_with_no_gap_in_answers() {
    let cl = Clusters::start();
    let fx = Fixture::new(
        &cl.kubeconfig(),
        &[CLUSTER_EAST1, CLUSTER_EAST2, CLUSTER_WEST],
        30,
    );
    let f = Fedns::start(&fx.path("fedns.yaml"));
    f.expect_a(G, &[IP_EAST1, IP_EAST2, IP_WEST], SETTLE);
    let lists_before: Vec<u32> = [&cl.east1, &cl.east2, &cl.west]
        .iter()
        .map(|s| s.lists(Res::EndpointSlices))
        .collect();

    let stop = Arc::new(AtomicBool::new(false));
    let (bad, total) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let bad_answers = Arc::new(Mutex::new(Vec::new()));
    let prober = {
        let (stop, bad, total, bad_answers, udp) = (
            stop.clone(),
            bad.clone(),
            total.clone(),
            bad_answers.clone(),
            f.udp,
        );
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let a = ask(udp, G, RecordType::A);
                total.fetch_add(1, Ordering::Relaxed);
                if a.rcode != 0 || a.addrs.len() < 3 {
                    bad.fetch_add(1, Ordering::Relaxed);
                    bad_answers.lock().unwrap().push(a);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    for s in [&cl.east1, &cl.east2, &cl.west] {
        s.expire_watches();
    }
    f.wait_log(Duration::from_secs(5), |l| l.contains("410 Gone"))
        .unwrap_or_else(|| panic!("no 410 logged:\n{}", f.log_text()));
    // Changed while the watches are being re-established: only a re-list can see it.
    cl.east1.put(
        Res::Services,
        service("shop", "checkout", fed_label(), &["203.0.113.11"], &[]),
    );
    f.expect_a(
        G,
        &["203.0.113.11", IP_EAST2, IP_WEST],
        Duration::from_secs(15),
    );
    // Every watch of every cluster re-lists (each after its own backoff).
    let relisted = wait_for(Duration::from_secs(10), || {
        [&cl.east1, &cl.east2, &cl.west]
            .iter()
            .zip(&lists_before)
            .all(|(s, before)| s.lists(Res::EndpointSlices) > *before)
            .then_some(())
    });
    stop.store(true, Ordering::Relaxed);
    prober.join().unwrap();
    assert!(
        relisted.is_some(),
        "no re-list after 410:\n{}",
        f.log_text()
    );
    assert!(total.load(Ordering::Relaxed) > 20);
    assert_eq!(
        bad.load(Ordering::Relaxed),
        0,
        "answers with a gap: {:?}",
        bad_answers.lock().unwrap()
    );
    let (status, _) = http_get(f.http, "/readyz");
    assert_eq!(status, 200);
}

/// A watch cut by the server is resumed from the last resourceVersion (no re-list), and the
/// changes made meanwhile arrive.
#[test]
fn cut_watch_resumes_without_relist() {
    let cl = Clusters::start();
    let fx = Fixture::new(&cl.kubeconfig(), &[CLUSTER_EAST1, CLUSTER_WEST], 30);
    let f = Fedns::start(&fx.path("fedns.yaml"));
    f.expect_a(G, &[IP_EAST1, IP_WEST], SETTLE);
    let (lists, watches) = (
        cl.west.lists(Res::EndpointSlices),
        cl.west.watches(Res::EndpointSlices),
    );
    cl.west.cut_watches();
    cl.west.put(
        Res::EndpointSlices,
        slice(
            "shop",
            "checkout-w1",
            "checkout",
            &[("10.246.1.5", false, false, None)],
        ),
    );
    f.expect_a(G, &[IP_EAST1], Duration::from_secs(10));
    assert!(
        cl.west.watches(Res::EndpointSlices) > watches,
        "no new watch"
    );
    assert_eq!(
        cl.west.lists(Res::EndpointSlices),
        lists,
        "a cut watch must not re-list"
    );
    assert_eq!(f.metric("fedns_cluster_up{cluster=\"west\"}"), Some(1.0));
}

/// An HTTP 410 on the watch request itself (which kube's watcher alone would retry forever with
/// the same resourceVersion) also ends in a fresh list.
#[test]
fn http_410_on_watch_start_relists() {
    let cl = Clusters::start();
    let fx = Fixture::new(&cl.kubeconfig(), &[CLUSTER_EAST1, CLUSTER_EAST2], 30);
    let f = Fedns::start(&fx.path("fedns.yaml"));
    f.expect_a(G, &[IP_EAST1, IP_EAST2], SETTLE);
    let before = cl.east1.lists(Res::Services);
    cl.east1.expire_watches_http();
    cl.east1.put(
        Res::Services,
        service("shop", "checkout", fed_label(), &["203.0.113.12"], &[]),
    );
    f.expect_a(G, &["203.0.113.12", IP_EAST2], Duration::from_secs(15));
    assert!(cl.east1.lists(Res::Services) > before, "no re-list");
    assert!(
        f.log_text().contains("410 Gone"),
        "the 410 was not seen:\n{}",
        f.log_text()
    );
}

/// RBAC errors: a 403 on one resource and a 401 on a whole cluster are logged naming the cluster,
/// the resource and the missing permission, and /readyz names them; the other clusters serve.
#[test]
fn rbac_errors_are_named_in_logs_and_readyz() {
    let cl = Clusters::start();
    cl.east2.deny(Res::EndpointSlices, Some(403));
    for r in Res::ALL {
        cl.west.deny(r, Some(401));
    }
    let fx = Fixture::new(
        &cl.kubeconfig(),
        &[CLUSTER_EAST1, CLUSTER_EAST2, CLUSTER_WEST],
        30,
    );
    let f = Fedns::start(&fx.path("fedns.yaml"));
    f.expect_a(G, &[IP_EAST1], SETTLE);

    let line = f
        .wait_log(Duration::from_secs(10), |l| {
            l.contains("cluster east2:") && l.contains("403")
        })
        .unwrap_or_else(|| panic!("no 403 line:\n{}", f.log_text()));
    assert!(line.contains("endpointslices.discovery.k8s.io"), "{line}");
    assert!(line.contains("missing RBAC permission `list`"), "{line}");
    let line = f
        .wait_log(Duration::from_secs(10), |l| {
            l.contains("cluster west:") && l.contains("401")
        })
        .unwrap_or_else(|| panic!("no 401 line:\n{}", f.log_text()));
    assert!(line.contains("Unauthorized"), "{line}");
    // Logged once per change of state, not once per retry (kube retries every ~1 s here).
    std::thread::sleep(Duration::from_secs(3));
    let text = f.log_text();
    let count = text
        .lines()
        .filter(|l| l.contains("cluster east2:") && l.contains("403"))
        .count();
    assert_eq!(count, 1, "{text}");

    let (status, body) = http_get(f.http, "/readyz");
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("kubernetes:east2") && body.contains("403 Forbidden"),
        "{body}"
    );
    assert!(
        body.contains("kubernetes:west") && body.contains("401 Unauthorized"),
        "{body}"
    );
    assert!(body.contains("kubernetes:east1: ready"), "{body}");

    // Permissions granted: east2 syncs and joins the answer at once, and counts as up once its
    // watch has stayed up for 10 s (a list alone does not prove the refusal is over).
    cl.east2.deny(Res::EndpointSlices, None);
    f.expect_a(G, &[IP_EAST1, IP_EAST2], Duration::from_secs(45));
    wait_for(Duration::from_secs(20), || {
        (f.metric("fedns_cluster_up{cluster=\"east2\"}") == Some(1.0)).then_some(())
    })
    .unwrap_or_else(|| panic!("east2 not up after the grant:\n{}", f.log_text()));
}

/// Right after an API server restart, authn/authz caches are cold and it briefly answers 403:
/// retried, not reported as a missing permission, and the cluster never leaves the answers.
#[test]
fn transient_403_after_a_restart_is_retried_not_reported() {
    let cl = Clusters::start();
    let fx = Fixture::new(&cl.kubeconfig(), &[CLUSTER_EAST1, CLUSTER_WEST], 30);
    let f = Fedns::start(&fx.path("fedns.yaml"));
    f.expect_a(G, &[IP_EAST1, IP_WEST], SETTLE);
    for r in Res::ALL {
        cl.west.deny(r, Some(403));
    }
    // The restart ends every watch; the re-watches and the next list are refused.
    cl.west.cut_watches();
    std::thread::sleep(Duration::from_millis(1000));
    for r in Res::ALL {
        cl.west.deny(r, None);
    }
    assert!(cl.west.denied() > 0, "nothing was refused");
    wait_for(Duration::from_secs(10), || {
        (f.metric("fedns_cluster_up{cluster=\"west\"}") == Some(1.0)).then_some(())
    })
    .unwrap_or_else(|| panic!("west not back:\n{}", f.log_text()));
    assert_eq!(f.a(G), set(&[IP_EAST1, IP_WEST]));
    let text = f.log_text();
    assert!(
        !text
            .lines()
            .any(|l| l.contains("cluster west:") && l.contains("403")),
        "a transient 403 was reported:\n{text}"
    );
}

/// A role that grants `list` but not `watch`: every list succeeds and every watch is refused.
/// The refusal is still reported (naming the verb), and the re-lists back off instead of
/// hammering the API server.
#[test]
fn watch_refused_after_a_good_list_is_reported_and_backs_off() {
    let cl = Clusters::start();
    cl.east2.deny_watch(Res::EndpointSlices, 403);
    let fx = Fixture::new(&cl.kubeconfig(), &[CLUSTER_EAST1, CLUSTER_EAST2], 30);
    let f = Fedns::start(&fx.path("fedns.yaml"));
    f.expect_a(G, &[IP_EAST1, IP_EAST2], SETTLE);
    let line = f
        .wait_log(Duration::from_secs(15), |l| {
            l.contains("cluster east2:") && l.contains("403")
        })
        .unwrap_or_else(|| panic!("the refused watch was not reported:\n{}", f.log_text()));
    assert!(line.contains("missing RBAC permission `watch`"), "{line}");
    let before = cl.east2.lists(Res::EndpointSlices);
    std::thread::sleep(Duration::from_secs(6));
    let lists = cl.east2.lists(Res::EndpointSlices) - before;
    assert!(lists <= 3, "{lists} lists in 6 s: no backoff");
    // Each re-list works, but that does not make the refused watch look fixed.
    let text = f.log_text();
    assert!(
        !text
            .lines()
            .any(|l| l.contains("cluster east2:") && l.contains("works again")),
        "{text}"
    );
    assert_eq!(f.metric("fedns_cluster_up{cluster=\"east2\"}"), Some(0.0));
}

/// `fedns check` reads the kubeconfigs: a missing file or context is reported with the cluster
/// and the path, and the exit code is non-zero; a good config passes.
#[test]
fn check_reports_kubeconfig_problems() {
    let url = "http://127.0.0.1:9".to_string();
    let fx = Fixture::new(
        &kubeconfig(&[("east1", url)]),
        &[
            CLUSTER_EAST1,
            "    - {name: ghost, kubeconfig: kubeconfig, context: nowhere}\n",
            "    - {name: lost, kubeconfig: no-such-file}\n",
        ],
        30,
    );
    let run = |config: &Path| {
        let out = Command::new(BIN)
            .args(["check", "--config"])
            .arg(config)
            .stdin(Stdio::null())
            .output()
            .expect("fedns check");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run(&fx.path("fedns.yaml"));
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("kubernetes.clusters[1].kubeconfig (cluster ghost): no context \"nowhere\""),
        "{err}"
    );
    assert!(
        err.contains("no-such-file")
            && err.contains("kubernetes.clusters[2].kubeconfig (cluster lost)"),
        "{err}"
    );
    assert!(!err.contains("cluster east1"), "{err}");
    assert!(err.trim_end().ends_with("2 problems"), "{err}");
    // `serve` agrees: the same problems, and it does not start.
    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(fx.path("fedns.yaml"))
        .stdin(Stdio::null())
        .output()
        .expect("fedns serve");
    let serve_err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{serve_err}");
    assert!(
        serve_err.contains("(cluster ghost): no context"),
        "{serve_err}"
    );
    assert!(serve_err.contains("(cluster lost)"), "{serve_err}");
    assert!(!serve_err.contains("dns listening"), "{serve_err}");
    fx.write_config(&[CLUSTER_EAST1], 30);
    let (code, err) = run(&fx.path("fedns.yaml"));
    assert_eq!(code, Some(0), "{err}");
}

/// A reload is checked as `check` checks the kubeconfigs: one naming a kubeconfig that cannot
/// be read, or a context it lacks, is refused with each problem logged and
/// `fedns_config_last_reload_successful 0`, and no cluster changes; the same config fixed
/// applies.
#[test]
fn a_reload_naming_an_unreadable_kubeconfig_is_refused() {
    let east = east_with_checkout();
    let fx = Fixture::new(&kubeconfig(&[("east1", east.url())]), &[CLUSTER_EAST1], 30);
    let f = Fedns::start(&fx.path("fedns.yaml"));
    f.expect_a(G, &[IP_EAST1], SETTLE);
    let reloaded = "fedns_config_last_reload_successful ";
    assert_eq!(f.metric(reloaded), Some(1.0));
    fx.write_config(
        &[
            CLUSTER_EAST1,
            "    - {name: lost, kubeconfig: no-such-file}\n",
            "    - {name: ghost, kubeconfig: kubeconfig, context: nowhere}\n",
        ],
        30,
    );
    f.wait_log(Duration::from_secs(10), |l| {
        l.contains("config reload rejected") && l.contains("problems=2")
    })
    .unwrap_or_else(|| panic!("not refused:\n{}", f.log_text()));
    let log = f.log_text();
    for said in [
        "kubernetes.clusters[1].kubeconfig (cluster lost)",
        "kubernetes.clusters[2].kubeconfig (cluster ghost): no context \\\"nowhere\\\"",
    ] {
        assert!(
            log.lines()
                .any(|l| l.contains("level=ERROR") && l.contains(said)),
            "{said}:\n{log}"
        );
    }
    assert_eq!(f.metric(reloaded), Some(0.0));
    let (_, ready) = http_get(f.http, "/readyz");
    assert!(
        !ready.contains("kubernetes:lost") && !ready.contains("kubernetes:ghost"),
        "{ready}"
    );
    assert!(!log.contains("kubernetes config changed"), "{log}");
    assert_eq!(f.a(G), set(&[IP_EAST1]));
    // Fixed, it applies.
    fx.write_config(&[CLUSTER_EAST1], 30);
    wait_for(Duration::from_secs(10), || {
        (f.metric(reloaded) == Some(1.0)).then_some(())
    })
    .unwrap_or_else(|| panic!("the fixed config is not applied:\n{}", f.log_text()));
    assert_eq!(f.a(G), set(&[IP_EAST1]));
}

// ------------------------------------------------------------------------------------------
// Client changes with no gap, and a test API server that behaves like a real one
// ------------------------------------------------------------------------------------------

/// The hub's own cluster for the join tests: `shop/checkout` with one ready endpoint in
/// us-east1-b.
fn east_with_checkout() -> ApiServer {
    let east = ApiServer::start();
    east.put(Res::Nodes, node("e1-n1", "us-east1", "us-east1-b", false));
    east.put(
        Res::Services,
        service("shop", "checkout", fed_label(), &[IP_EAST1], &[]),
    );
    east.put(
        Res::EndpointSlices,
        slice(
            "shop",
            "checkout-e1",
            "checkout",
            &[("10.244.1.5", true, false, Some("us-east1-b"))],
        ),
    );
    east
}

/// West's objects (as in [`Clusters::start`]) on another API server, with `lb` as the
/// checkout load balancer's address.
fn populate_west(s: &ApiServer, lb: &str) {
    s.put(Res::Nodes, node("w-n1", "us-west2", "us-west2-a", true));
    s.put(
        Res::Services,
        service("shop", "checkout", fed_label(), &[lb], &[]),
    );
    s.put(
        Res::EndpointSlices,
        slice(
            "shop",
            "checkout-w1",
            "checkout",
            &[("10.246.1.5", true, false, Some("us-west2-a"))],
        ),
    );
}

/// Asks for `qname` every 5 ms and `/readyz` every 50 ms until stopped, counting answers that
/// `ok` rejects and /readyz answers other than 200.
struct GapProbe {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
    total: Arc<AtomicUsize>,
    bad: Arc<Mutex<Vec<Answer>>>,
    not_ready: Arc<Mutex<Vec<(u16, String)>>>,
}

impl GapProbe {
    fn start(f: &Fedns, qname: &'static str, ok: fn(&Answer) -> bool) -> GapProbe {
        let stop = Arc::new(AtomicBool::new(false));
        let total = Arc::new(AtomicUsize::new(0));
        let bad = Arc::new(Mutex::new(Vec::new()));
        let not_ready = Arc::new(Mutex::new(Vec::new()));
        let dns = {
            let (stop, total, bad, udp) = (stop.clone(), total.clone(), bad.clone(), f.udp);
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let a = ask(udp, qname, RecordType::A);
                    total.fetch_add(1, Ordering::Relaxed);
                    if !ok(&a) {
                        bad.lock().unwrap().push(a);
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
        };
        let ready = {
            let (stop, not_ready, http) = (stop.clone(), not_ready.clone(), f.http);
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let (status, body) = http_get(http, "/readyz");
                    if status != 200 {
                        not_ready.lock().unwrap().push((status, body));
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            })
        };
        GapProbe {
            stop,
            threads: vec![dns, ready],
            total,
            bad,
            not_ready,
        }
    }

    /// Stops probing and panics if any answer was bad or /readyz was ever not 200.
    fn finish(mut self, f: &Fedns) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            t.join().unwrap();
        }
        let total = self.total.load(Ordering::Relaxed);
        assert!(total > 50, "only {total} answers probed");
        let bad = self.bad.lock().unwrap();
        assert!(
            bad.is_empty(),
            "{} of {total} answers with a gap, first {:?}\nlog:\n{}",
            bad.len(),
            bad.first(),
            f.log_text()
        );
        let nr = self.not_ready.lock().unwrap();
        assert!(
            nr.is_empty(),
            "/readyz not ready {} times, first {:?}\nlog:\n{}",
            nr.len(),
            nr.first(),
            f.log_text()
        );
    }
}

fn ready_with(f: &Fedns, cluster: &str) -> Option<()> {
    let (status, body) = http_get(f.http, "/readyz");
    (status == 200 && body.contains(&format!("kubernetes:{cluster}: ready"))).then_some(())
}

/// A cluster's context is switched to another API server (100 ms away in the report, 1.5 s to
/// list here): the new client lists everything before the old one's data is replaced, so the
/// cluster's shards answer throughout and /readyz never leaves 200.
#[test]
fn changed_context_switches_clients_with_no_gap() {
    let cl = Clusters::start();
    let west_b = ApiServer::start();
    populate_west(&west_b, "198.51.100.31");
    west_b.delay_lists(Duration::from_millis(1500));
    let kc = kubeconfig(&[
        ("east1", cl.east1.url()),
        ("east2", cl.east2.url()),
        ("west", cl.west.url()),
        ("west-b", west_b.url()),
    ]);
    let fx = Fixture::new(&kc, &[CLUSTER_EAST1, CLUSTER_EAST2, CLUSTER_WEST], 30);
    let started = Instant::now();
    let f = Fedns::start(&fx.path("fedns.yaml"));
    f.expect_a(G, &[IP_EAST1, IP_EAST2, IP_WEST], SETTLE);
    wait_for(SETTLE, || ready_with(&f, "west"))
        .unwrap_or_else(|| panic!("west never ready:\n{}", f.log_text()));
    // Past the start's gather window (5 s), whose waiting for first lists would hide a gap.
    std::thread::sleep(Duration::from_secs(6).saturating_sub(started.elapsed()));

    let probe = GapProbe::start(&f, G, |a| a.rcode == 0 && a.addrs.len() == 3);
    fx.write_config(
        &[
            CLUSTER_EAST1,
            CLUSTER_EAST2,
            "    - {name: west, kubeconfig: kubeconfig, context: west-b, weight: 50}\n",
        ],
        30,
    );
    f.expect_a(
        G,
        &[IP_EAST1, IP_EAST2, "198.51.100.31"],
        Duration::from_secs(15),
    );
    std::thread::sleep(Duration::from_millis(300));
    probe.finish(&f);
    // The old client is gone: its server's changes no longer matter, the new one's do.
    cl.west.put(
        Res::Services,
        service("shop", "checkout", fed_label(), &["198.51.100.39"], &[]),
    );
    west_b.put(
        Res::Services,
        service("shop", "checkout", fed_label(), &["198.51.100.32"], &[]),
    );
    f.expect_a(
        G,
        &[IP_EAST1, IP_EAST2, "198.51.100.32"],
        Duration::from_secs(5),
    );
    assert_eq!(f.metric("fedns_cluster_up{cluster=\"west\"}"), Some(1.0));
}

/// HTTPS with a bearer token, through a kubeconfig with a CA and a token; the token is rotated
/// in the same kubeconfig file (the new one accepted first, the old one revoked after): fedns
/// picks the new token up without a restart and with no gap, and keeps working once the old
/// token is refused.
#[test]
fn rotated_token_in_the_same_kubeconfig_is_picked_up_with_no_gap() {
    let west = ApiServer::start_secure("token-1");
    populate_west(&west, IP_WEST);
    let ca = &test_ca().ca;
    let kc = |token: &str| kubeconfig_secure(&[("west", west.url(), token)], ca);
    let fx = Fixture::new(&kc("token-1"), &[CLUSTER_WEST], 30);
    let started = Instant::now();
    let f = Fedns::start(&fx.path("fedns.yaml"));
    f.expect_a(G, &[IP_WEST], SETTLE);
    wait_for(SETTLE, || ready_with(&f, "west"))
        .unwrap_or_else(|| panic!("west never ready:\n{}", f.log_text()));
    std::thread::sleep(Duration::from_secs(6).saturating_sub(started.elapsed()));
    assert!(west.requests_with("token-1") >= 8, "lists and watches");

    west.set_tokens(&["token-1", "token-2"]);
    west.delay_lists(Duration::from_millis(1500));
    let probe = GapProbe::start(&f, G, |a| a.rcode == 0 && a.addrs == set(&[IP_WEST]));
    fx.write("kubeconfig", &kc("token-2"));
    // The new client's four lists and watches.
    wait_for(Duration::from_secs(15), || {
        (west.requests_with("token-2") >= 8).then_some(())
    })
    .unwrap_or_else(|| panic!("the rotated token was never used:\n{}", f.log_text()));
    std::thread::sleep(Duration::from_millis(500));
    probe.finish(&f);

    // The old token is revoked and every watch ends: only the new client can go on.
    west.set_tokens(&["token-2"]);
    west.delay_lists(Duration::ZERO);
    let old = west.requests_with("token-1");
    west.cut_watches();
    west.put(
        Res::Services,
        service("shop", "checkout", fed_label(), &["198.51.100.33"], &[]),
    );
    f.expect_a(G, &["198.51.100.33"], Duration::from_secs(5));
    assert_eq!(
        west.requests_with("token-1"),
        old,
        "the old client still runs"
    );
    assert_eq!(f.metric("fedns_cluster_up{cluster=\"west\"}"), Some(1.0));
    // No refusal was ever logged (a bare "401" would also match timestamps and serials).
    let refused = f
        .log_text()
        .lines()
        .any(|l| !l.contains("level=INFO") && l.contains("401"));
    assert!(!refused, "{}", f.log_text());
}

/// A wrong token is answered 401 over HTTPS, named in the log and on /readyz; fixing the token
/// in the kubeconfig file brings the cluster in without a restart.
#[test]
fn wrong_token_is_401_until_the_kubeconfig_is_fixed() {
    let west = ApiServer::start_secure("right");
    populate_west(&west, IP_WEST);
    let ca = &test_ca().ca;
    let kc = |token: &str| kubeconfig_secure(&[("west", west.url(), token)], ca);
    let fx = Fixture::new(&kc("wrong"), &[CLUSTER_WEST], 30);
    let f = Fedns::start(&fx.path("fedns.yaml"));
    let line = f
        .wait_log(Duration::from_secs(15), |l| {
            l.contains("cluster west:") && l.contains("401")
        })
        .unwrap_or_else(|| panic!("no 401 line:\n{}", f.log_text()));
    assert!(line.contains("Unauthorized"), "{line}");
    assert!(west.requests_with("wrong") > 0);
    let (status, body) = http_get(f.http, "/readyz");
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("kubernetes:west") && body.contains("401"),
        "{body}"
    );

    fx.write("kubeconfig", &kc("right"));
    f.expect_a(G, &[IP_WEST], SETTLE);
    wait_for(SETTLE, || ready_with(&f, "west"))
        .unwrap_or_else(|| panic!("west never ready:\n{}", f.log_text()));
}

/// fedns selects Services by label: a Service that loses the label gets a DELETED event on the
/// label-selected watch (a real API server judges the object before and after the change) and
/// leaves the answers; one that gets it back is ADDED again.
#[test]
fn service_losing_the_label_is_deleted_from_the_watch() {
    let cl = Clusters::start();
    let fx = Fixture::new(&cl.kubeconfig(), &[CLUSTER_EAST1, CLUSTER_WEST], 30);
    let f = Fedns::start(&fx.path("fedns.yaml"));
    f.expect_a(G, &[IP_EAST1, IP_WEST], SETTLE);
    let lists = cl.west.lists(Res::Services);
    cl.west.put(
        Res::Services,
        service(
            "shop",
            "checkout",
            json!({"app": "checkout"}),
            &[IP_WEST],
            &[],
        ),
    );
    f.expect_a(G, &[IP_EAST1], Duration::from_secs(2));
    cl.west.put(
        Res::Services,
        service("shop", "checkout", fed_label(), &[IP_WEST], &[]),
    );
    f.expect_a(G, &[IP_EAST1, IP_WEST], Duration::from_secs(2));
    assert_eq!(
        cl.west.lists(Res::Services),
        lists,
        "seen by the watch alone"
    );
}

/// RBAC revoked mid-run: a real API server authorizes each request once, so the open watches
/// go on and their changes arrive; only new requests (after the server's watch timeout) get 403,
/// which is reported while the last good data keeps serving; restored, the cluster is up again.
#[test]
fn rbac_revoked_and_restored_mid_run() {
    let cl = Clusters::start();
    let fx = Fixture::new(&cl.kubeconfig(), &[CLUSTER_EAST1, CLUSTER_WEST], 30);
    let f = Fedns::start(&fx.path("fedns.yaml"));
    f.expect_a(G, &[IP_EAST1, IP_WEST], SETTLE);
    for r in Res::ALL {
        cl.west.deny(r, Some(403));
    }
    cl.west.put(
        Res::Services,
        service("shop", "checkout", fed_label(), &["198.51.100.34"], &[]),
    );
    f.expect_a(G, &[IP_EAST1, "198.51.100.34"], Duration::from_secs(2));
    assert_eq!(
        cl.west.denied(),
        0,
        "open watches need no new authorization"
    );
    assert_eq!(f.metric("fedns_cluster_up{cluster=\"west\"}"), Some(1.0));

    cl.west.cut_watches(); // the watches time out; the new ones are refused
    let line = f
        .wait_log(Duration::from_secs(20), |l| {
            l.contains("cluster west:") && l.contains("403")
        })
        .unwrap_or_else(|| panic!("the revocation was not reported:\n{}", f.log_text()));
    assert!(line.contains("missing RBAC permission"), "{line}");
    let (_, body) = http_get(f.http, "/readyz");
    assert!(
        body.contains("kubernetes:west: serving last good data") && body.contains("403 Forbidden"),
        "{body}"
    );
    assert_eq!(f.a(G), set(&[IP_EAST1, "198.51.100.34"]), "last good data");

    for r in Res::ALL {
        cl.west.deny(r, None);
    }
    wait_for(Duration::from_secs(30), || {
        (f.metric("fedns_cluster_up{cluster=\"west\"}") == Some(1.0)).then_some(())
    })
    .unwrap_or_else(|| panic!("west not up after RBAC was restored:\n{}", f.log_text()));
    wait_for(Duration::from_secs(5), || ready_with(&f, "west"))
        .unwrap_or_else(|| panic!("west not ready:\n{}", f.log_text()));
}

/// Watches end when the server's timeout runs out (`timeoutSeconds`, here capped at 1 s by the
/// server): fedns watches again from where it was, without re-listing, and stays up.
#[test]
fn watches_ending_at_the_timeout_resume_without_relist() {
    let cl = Clusters::start();
    cl.west.cap_watches(Duration::from_secs(1));
    let fx = Fixture::new(&cl.kubeconfig(), &[CLUSTER_EAST1, CLUSTER_WEST], 30);
    let f = Fedns::start(&fx.path("fedns.yaml"));
    f.expect_a(G, &[IP_EAST1, IP_WEST], SETTLE);
    let (lists, watches) = (cl.west.lists(Res::Nodes), cl.west.watches(Res::Nodes));
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        cl.west.watches(Res::Nodes) >= watches + 3,
        "watches did not end at the timeout"
    );
    assert_eq!(
        cl.west.lists(Res::Nodes),
        lists,
        "a timed-out watch must not re-list"
    );
    cl.west.put(
        Res::Services,
        service("shop", "checkout", fed_label(), &["198.51.100.36"], &[]),
    );
    f.expect_a(G, &[IP_EAST1, "198.51.100.36"], Duration::from_secs(2));
    assert_eq!(f.metric("fedns_cluster_up{cluster=\"west\"}"), Some(1.0));
    let text = f.log_text();
    assert!(
        !text
            .lines()
            .any(|l| l.contains("WARN") && l.contains("cluster west")),
        "{text}"
    );
}

/// A graceful API server shutdown: open watches keep delivering changes for the grace period,
/// then every connection closes; fedns keeps the last good data and comes back with the server.
#[test]
fn graceful_api_server_shutdown_then_restart() {
    let cl = Clusters::start();
    let fx = Fixture::new(&cl.kubeconfig(), &[CLUSTER_EAST1, CLUSTER_WEST], 30);
    let f = Fedns::start(&fx.path("fedns.yaml"));
    f.expect_a(G, &[IP_EAST1, IP_WEST], SETTLE);
    cl.west.shut_down_gracefully(Duration::from_secs(3));
    std::thread::sleep(Duration::from_millis(200));
    cl.west.put(
        Res::Services,
        service("shop", "checkout", fed_label(), &["198.51.100.35"], &[]),
    );
    f.expect_a(G, &[IP_EAST1, "198.51.100.35"], Duration::from_secs(2));
    wait_for(Duration::from_secs(10), || {
        (f.metric("fedns_cluster_up{cluster=\"west\"}") == Some(0.0)).then_some(())
    })
    .unwrap_or_else(|| panic!("the closed connections were not noticed:\n{}", f.log_text()));
    assert_eq!(f.a(G), set(&[IP_EAST1, "198.51.100.35"]), "last good data");
    cl.west.outage_ends();
    wait_for(Duration::from_secs(10), || {
        (f.metric("fedns_cluster_up{cluster=\"west\"}") == Some(1.0)).then_some(())
    })
    .unwrap_or_else(|| panic!("west not back after the restart:\n{}", f.log_text()));
}

/// One member that never syncs (every request 401) does not keep fedns NotReady past
/// `sync_timeout_secs`: /readyz waits for it until then (503), then turns 200 naming it, while
/// DNS serves the members that did sync.
#[test]
fn a_member_that_never_syncs_stops_holding_readiness_after_sync_timeout() {
    let cl = Clusters::start();
    for r in Res::ALL {
        cl.west.deny(r, Some(401));
    }
    let fx = Fixture::new(
        &cl.kubeconfig(),
        &[CLUSTER_EAST1, CLUSTER_EAST2, CLUSTER_WEST],
        30,
    );
    let config = std::fs::read_to_string(fx.path("fedns.yaml")).unwrap();
    fx.write(
        "fedns.yaml",
        &config.replace(
            "  stale_grace_secs: 30\n",
            "  stale_grace_secs: 30\n  sync_timeout_secs: 3\n",
        ),
    );
    let started = Instant::now();
    let f = Fedns::start(&fx.path("fedns.yaml"));
    f.expect_a(G, &[IP_EAST1, IP_EAST2], SETTLE);
    let (status, body) = http_get(f.http, "/readyz");
    if started.elapsed() < Duration::from_millis(2500) {
        assert_eq!(status, 503, "still waiting for west: {body}");
    }
    let ready = wait_for(Duration::from_secs(10), || {
        let (status, body) = http_get(f.http, "/readyz");
        (status == 200).then_some(body)
    })
    .unwrap_or_else(|| panic!("never ready without west:\n{}", f.log_text()));
    assert!(
        started.elapsed() >= Duration::from_millis(2900),
        "ready before sync_timeout"
    );
    assert!(
        ready.contains("kubernetes:west: not synced within its sync_timeout")
            && ready.contains("401"),
        "{ready}"
    );
    assert!(ready.contains("kubernetes:east1: ready"), "{ready}");
    assert_eq!(f.metric("fedns_cluster_up{cluster=\"west\"}"), Some(0.0));
}

/// The config of a fixture with `keys` added to the `kubernetes:` section.
fn enable(fx: &Fixture, keys: &str) {
    let config = std::fs::read_to_string(fx.path("fedns.yaml")).unwrap();
    let (head, tail) = config.split_once("  clusters:\n").expect("clusters");
    fx.write("fedns.yaml", &format!("{head}{keys}  clusters:\n{tail}"));
}

/// Waits until `check` holds for the answer to `qname`/`t`; panics with the last answer.
fn expect_answer(
    f: &Fedns,
    qname: &str,
    t: RecordType,
    what: &str,
    check: impl Fn(&Answer) -> bool,
) {
    let mut last = None;
    if wait_for(SETTLE, || {
        let a = f.ask(qname, t);
        let ok = check(&a);
        last = Some(a);
        ok.then_some(())
    })
    .is_none()
    {
        panic!(
            "{qname} {t:?}: wanted {what}, last answer {last:?}\nlog:\n{}",
            f.log_text()
        );
    }
}

/// ExternalDNS DNSEndpoints in two of three members (the third has no CRD): every record type
/// served as written with its recordTTL, the same name from two clusters answered with the
/// union of their targets, a bad target skipped (logged, counted) while the rest serve, names
/// outside every served zone not ours, and removals followed. The member without the CRD is
/// one log line and a metric, not a retry storm, and still becomes ready.
#[test]
fn dns_endpoints_served_merged_and_removed_and_a_member_without_the_crd() {
    let cl = Clusters::start();
    cl.east2.set_installed(Res::DnsEndpoints, false);
    cl.east1.put(
        Res::DnsEndpoints,
        dns_endpoint(
            "shop",
            "records",
            &[
                ("app.example.com", "A", &["192.0.2.1"], 60),
                ("app.example.com", "AAAA", &["2001:db8::1"], 60),
                ("alias.example.com", "CNAME", &["app.example.com"], 120),
                (
                    "info.example.com",
                    "TXT",
                    &["\"heritage=external-dns,owner=k8gb\""],
                    0,
                ),
                (
                    "_sip._udp.example.com",
                    "SRV",
                    &["10 5 5060 app.example.com"],
                    60,
                ),
                ("bad.example.com", "A", &["192.0.2.300"], 60),
                ("elsewhere.example.net", "A", &["192.0.2.9"], 60),
            ],
        ),
    );
    cl.west.put(
        Res::DnsEndpoints,
        dns_endpoint(
            "shop",
            "records",
            &[("app.example.com", "A", &["192.0.2.2"], 30)],
        ),
    );
    let fx = Fixture::new(
        &cl.kubeconfig(),
        &[CLUSTER_EAST1, CLUSTER_EAST2, CLUSTER_WEST],
        30,
    );
    enable(&fx, "  dns_endpoints: true\n");
    let f = Fedns::start(&fx.path("fedns.yaml"));

    f.expect_a("app.example.com.", &["192.0.2.1", "192.0.2.2"], SETTLE);
    let a = f.ask("app.example.com.", RecordType::A);
    assert_eq!(a.ttl, Some(30), "the lowest recordTTL of the union: {a:?}");
    assert_eq!(
        f.ask("app.example.com.", RecordType::AAAA).addrs,
        set(&["2001:db8::1"])
    );
    let alias = f.ask("alias.example.com.", RecordType::A);
    assert_eq!(
        alias.cname.as_deref(),
        Some("app.example.com."),
        "{alias:?}"
    );
    assert_eq!(
        alias.addrs,
        set(&["192.0.2.1", "192.0.2.2"]),
        "chain followed: {alias:?}"
    );
    let info = f.ask("info.example.com.", RecordType::TXT);
    assert_eq!(
        info.txt,
        vec!["heritage=external-dns,owner=k8gb"],
        "{info:?}"
    );
    assert_eq!(info.ttl, Some(5), "no recordTTL: the federation's ttl");
    let srv = f.ask("_sip._udp.example.com.", RecordType::SRV);
    assert_eq!(
        srv.srv,
        vec![(5060, "app.example.com.".to_string())],
        "{srv:?}"
    );
    assert_eq!(
        f.ask("bad.example.com.", RecordType::A).rcode,
        3,
        "bad target skipped"
    );
    assert_eq!(
        f.ask("elsewhere.example.net.", RecordType::A).rcode,
        5,
        "not ours"
    );
    assert_eq!(
        f.metric("fedns_dns_endpoint_names_outside_zones "),
        Some(1.0)
    );
    assert!(
        f.metric("fedns_kube_dns_endpoints_skipped_total{cluster=\"east1\"}")
            .is_some_and(|v| v >= 1.0)
    );
    let log = f.log_text();
    assert!(
        log.contains("spec.endpoints[5]") && log.contains("192.0.2.300"),
        "the skipped endpoint is named:\n{log}"
    );

    // east2 has no CRD: ready for its other kinds, said once, asked once.
    let ready = wait_for(SETTLE, || {
        let (status, body) = http_get(f.http, "/readyz");
        (status == 200).then_some(body)
    })
    .unwrap_or_else(|| panic!("never ready:\n{}", f.log_text()));
    assert!(
        ready.contains(
            "kubernetes:east2: ready (not installed, serving none: dnsendpoints.externaldns.k8s.io)"
        ),
        "{ready}"
    );
    assert_eq!(
        f.metric(
            "fedns_kube_crd_missing{cluster=\"east2\",resource=\"dnsendpoints.externaldns.k8s.io\"}"
        ),
        Some(1.0)
    );
    assert_eq!(f.metric("fedns_cluster_up{cluster=\"east2\"}"), Some(1.0));
    f.expect_a(Z_EAST_D, &[IP_EAST2], SETTLE);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(cl.east2.not_found(Res::DnsEndpoints), 1, "no retry storm");
    let log = f.log_text();
    assert_eq!(
        log.matches("dnsendpoints.externaldns.k8s.io is not installed")
            .count(),
        1,
        "one line:\n{log}"
    );

    // Removals: west's object goes (the union shrinks), east1 drops its TXT endpoint.
    cl.west.delete(Res::DnsEndpoints, "shop", "records");
    f.expect_a("app.example.com.", &["192.0.2.1"], SETTLE);
    cl.east1.put(
        Res::DnsEndpoints,
        dns_endpoint(
            "shop",
            "records",
            &[("app.example.com", "A", &["192.0.2.1"], 60)],
        ),
    );
    expect_answer(&f, "info.example.com.", RecordType::TXT, "NXDOMAIN", |a| {
        a.rcode == 3
    });
    expect_answer(&f, "alias.example.com.", RecordType::A, "NXDOMAIN", |a| {
        a.rcode == 3
    });
}

/// DNSEndpoint records of a member whose API server goes away keep serving for the stale grace
/// (fail static), then only where no other member gives the name.
#[test]
fn dns_endpoints_of_an_unreachable_member_follow_fail_static() {
    let cl = Clusters::start();
    cl.east1.put(
        Res::DnsEndpoints,
        dns_endpoint("shop", "a", &[("both.example.com", "A", &["192.0.2.1"], 0)]),
    );
    cl.west.put(
        Res::DnsEndpoints,
        dns_endpoint(
            "shop",
            "b",
            &[
                ("both.example.com", "A", &["192.0.2.2"], 0),
                ("only-west.example.com", "A", &["192.0.2.3"], 0),
            ],
        ),
    );
    let fx = Fixture::new(&cl.kubeconfig(), &[CLUSTER_EAST1, CLUSTER_WEST], 3);
    enable(&fx, "  dns_endpoints: true\n");
    let f = Fedns::start(&fx.path("fedns.yaml"));
    f.expect_a("both.example.com.", &["192.0.2.1", "192.0.2.2"], SETTLE);
    f.expect_a("only-west.example.com.", &["192.0.2.3"], SETTLE);
    cl.west.go_away();
    // Past the grace, west's records leave the shared name but stay where nothing else is.
    f.expect_a("both.example.com.", &["192.0.2.1"], SETTLE);
    assert_eq!(
        f.a("only-west.example.com."),
        set(&["192.0.2.3"]),
        "fail static"
    );
}

/// Gateway API: HTTPRoute host names (intersected with those of the listeners they attach to,
/// and a Gateway listener's) answer with the addresses of the Gateway they attach to, only while that Gateway is Programmed (and the route's backend
/// has ready endpoints), across clusters like Ingress hosts; a member without the Gateway API
/// CRDs still becomes ready.
#[test]
fn http_routes_answer_with_programmed_gateway_addresses() {
    let cl = Clusters::start();
    cl.east2.set_installed(Res::Gateways, false);
    cl.east2.set_installed(Res::HttpRoutes, false);
    cl.east1.put(
        Res::Gateways,
        gateway(
            "shop",
            "gw",
            &["portal.example.com", "*.example.com"],
            &["198.51.100.200"],
            true,
        ),
    );
    cl.east1.put(
        Res::HttpRoutes,
        http_route("shop", "web", &["gw.example.com"], "gw", "checkout"),
    );
    // No host names, on the exact listener only (on `*.example.com` it would serve that
    // wildcard, see `wildcard_names_cover_the_names_below_them_that_do_not_exist`).
    let mut portal = http_route("shop", "portal", &[], "gw", "checkout");
    portal["spec"]["parentRefs"][0]["sectionName"] = json!("http-0");
    cl.east1.put(Res::HttpRoutes, portal);
    cl.west.put(
        Res::Gateways,
        gateway("shop", "gw", &[], &["198.51.100.201"], false),
    );
    cl.west.put(
        Res::HttpRoutes,
        http_route("shop", "web", &["gw.example.com"], "gw", "checkout"),
    );
    // A route its Gateway's controller refused (no listener matches its host name).
    let mut refused = http_route(
        "shop",
        "refused",
        &["refused.example.com"],
        "gw",
        "checkout",
    );
    refused["status"]["parents"][0]["conditions"][0] =
        json!({"type": "Accepted", "status": "False", "reason": "NoMatchingListenerHostname"});
    cl.east1.put(Res::HttpRoutes, refused);
    // A route attached only to the `portal.example.com` listener (`http-0`) whose host name
    // does not intersect it: not served, though no controller has said so yet.
    let mut stray = http_route("shop", "stray", &["stray.example.com"], "gw", "checkout");
    stray["spec"]["parentRefs"][0]["sectionName"] = json!("http-0");
    stray["status"] = json!({});
    cl.east1.put(Res::HttpRoutes, stray);
    // `parentRefs[].port`: the Gateway's listeners on that port (all are on 80); a port no
    // listener has attaches to nothing.
    for (name, port) in [("port80", 80), ("port8443", 8443)] {
        let mut r = http_route(
            "shop",
            name,
            &[&format!("{name}.example.com")],
            "gw",
            "checkout",
        );
        r["spec"]["parentRefs"][0]["port"] = json!(port);
        r["status"] = json!({});
        cl.east1.put(Res::HttpRoutes, r);
    }
    // A route whose backend has no endpoints at all is not healthy.
    cl.east1.put(
        Res::HttpRoutes,
        http_route("shop", "idle", &["idle.example.com"], "gw", "nothing"),
    );
    let fx = Fixture::new(
        &cl.kubeconfig(),
        &[CLUSTER_EAST1, CLUSTER_EAST2, CLUSTER_WEST],
        30,
    );
    enable(&fx, "  gateway_api: true\n");
    let f = Fedns::start(&fx.path("fedns.yaml"));

    f.expect_a("gw.example.com.", &["198.51.100.200"], SETTLE);
    f.expect_a("portal.example.com.", &["198.51.100.200"], SETTLE);
    f.expect_a("port80.example.com.", &["198.51.100.200"], SETTLE);
    assert_eq!(
        f.ask("port8443.example.com.", RecordType::A).rcode,
        3,
        "a parentRefs port no listener has attaches to nothing"
    );
    assert_eq!(
        f.ask("refused.example.com.", RecordType::A).rcode,
        3,
        "a refused route is not served"
    );
    assert_eq!(
        f.ask("stray.example.com.", RecordType::A).rcode,
        3,
        "a route host name outside its listener's is not served"
    );
    let idle = f.ask("idle.example.com.", RecordType::A);
    assert_eq!((idle.rcode, idle.addrs.len()), (0, 0), "NODATA: {idle:?}");
    // west's Gateway becomes Programmed: both clusters answer.
    cl.west.put(
        Res::Gateways,
        gateway("shop", "gw", &[], &["198.51.100.201"], true),
    );
    f.expect_a(
        "gw.example.com.",
        &["198.51.100.200", "198.51.100.201"],
        SETTLE,
    );
    // east1's stops being Programmed, then west's: NODATA, as an ingress host with nothing
    // healthy.
    cl.east1.put(
        Res::Gateways,
        gateway(
            "shop",
            "gw",
            &["portal.example.com", "*.example.com"],
            &["198.51.100.200"],
            false,
        ),
    );
    f.expect_a("gw.example.com.", &["198.51.100.201"], SETTLE);
    cl.west.put(
        Res::Gateways,
        gateway("shop", "gw", &[], &["198.51.100.201"], false),
    );
    expect_answer(&f, "gw.example.com.", RecordType::A, "NODATA", |a| {
        a.rcode == 0 && a.addrs.is_empty()
    });
    // The route goes: the name goes.
    cl.west.delete(Res::HttpRoutes, "shop", "web");
    cl.east1.delete(Res::HttpRoutes, "shop", "web");
    expect_answer(&f, "gw.example.com.", RecordType::A, "NXDOMAIN", |a| {
        a.rcode == 3
    });

    let (status, body) = http_get(f.http, "/readyz");
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        f.metric("fedns_kube_crd_missing{cluster=\"east2\",resource=\"gateways.gateway.networking.k8s.io\"}"),
        Some(1.0)
    );
}

/// Enabling `dns_endpoints` in the running config (no restart) gives the cluster a client that
/// watches DNSEndpoints too, and takes over once it has listed them: the federated names keep
/// answering meanwhile; a member without the RBAC for them is named with the missing verb and
/// the component that grants it.
#[test]
fn dns_endpoints_enabled_at_runtime() {
    let cl = Clusters::start();
    cl.east1.put(
        Res::DnsEndpoints,
        dns_endpoint("shop", "a", &[("late.example.com", "A", &["192.0.2.8"], 0)]),
    );
    cl.west.deny(Res::DnsEndpoints, Some(403));
    let fx = Fixture::new(&cl.kubeconfig(), &[CLUSTER_EAST1, CLUSTER_WEST], 30);
    let f = Fedns::start(&fx.path("fedns.yaml"));
    f.expect_a(G, &[IP_EAST1, IP_WEST], SETTLE);
    assert_eq!(
        f.ask("late.example.com.", RecordType::A).rcode,
        3,
        "not enabled yet"
    );
    assert_eq!(cl.east1.lists(Res::DnsEndpoints), 0);
    enable(&fx, "  dns_endpoints: true\n");
    f.expect_a("late.example.com.", &["192.0.2.8"], SETTLE);
    assert_eq!(f.a(G), set(&[IP_EAST1, IP_WEST]), "served throughout");
    let named = wait_for(SETTLE, || {
        let log = f.log_text();
        (log.contains(
            "403 Forbidden: missing RBAC permission `list` on dnsendpoints.externaldns.k8s.io",
        ) && log.contains("deploy/kubernetes/rbac/dns-endpoints"))
        .then_some(())
    });
    assert!(named.is_some(), "west's refusal named:\n{}", f.log_text());
}

/// Wildcards (RFC 4592) from every Kubernetes kind that names hosts: a DNSEndpoint
/// `*.apps.example.com` (the union over clusters), a Gateway listener `*.gw.example.com` a
/// host-less route attaches to, an Ingress rule `*.ing.example.com`. Names below them that do
/// not exist are answered from them, at any depth; a name that exists answers for itself (an
/// explicit sibling, an empty non-terminal), and below such a name the wildcard does not reach.
#[test]
fn wildcard_names_cover_the_names_below_them_that_do_not_exist() {
    let cl = Clusters::start();
    cl.east1.put(
        Res::DnsEndpoints,
        dns_endpoint(
            "shop",
            "apps",
            &[
                ("*.apps.example.com", "A", &["192.0.2.10", "192.0.2.11"], 60),
                ("web.apps.example.com", "A", &["192.0.2.20"], 60),
                ("deep.x.apps.example.com", "TXT", &["\"beside\""], 60),
                (
                    "*.alias.example.com",
                    "CNAME",
                    &["web.apps.example.com"],
                    60,
                ),
                ("a.*.example.com", "A", &["192.0.2.30"], 60),
            ],
        ),
    );
    cl.west.put(
        Res::DnsEndpoints,
        dns_endpoint(
            "shop",
            "apps",
            &[("*.apps.example.com", "A", &["192.0.2.12"], 60)],
        ),
    );
    cl.east1.put(
        Res::Gateways,
        gateway(
            "shop",
            "gw",
            &["*.gw.example.com"],
            &["198.51.100.200"],
            true,
        ),
    );
    cl.east1.put(
        Res::HttpRoutes,
        http_route("shop", "any", &[], "gw", "checkout"),
    );
    cl.west.put(
        Res::Ingresses,
        ingress(
            "shop",
            "wild",
            &["*.ing.example.com"],
            "checkout",
            &["198.51.100.101"],
        ),
    );
    let fx = Fixture::new(&cl.kubeconfig(), &[CLUSTER_EAST1, CLUSTER_WEST], 30);
    enable(&fx, "  dns_endpoints: true\n  gateway_api: true\n");
    let f = Fedns::start(&fx.path("fedns.yaml"));

    let all = ["192.0.2.10", "192.0.2.11", "192.0.2.12"];
    f.expect_a("anything.apps.example.com.", &all, SETTLE);
    f.expect_a("a.b.c.apps.example.com.", &all, SETTLE);
    f.expect_a("*.apps.example.com.", &all, SETTLE);
    let synthesized = f.ask("anything.apps.example.com.", RecordType::A);
    assert_eq!(synthesized.ttl, Some(60), "{synthesized:?}");
    // The explicit sibling answers its own, NODATA for a type only the wildcard has.
    f.expect_a("web.apps.example.com.", &["192.0.2.20"], SETTLE);
    let web_txt = f.ask("web.apps.example.com.", RecordType::TXT);
    assert_eq!(
        (web_txt.rcode, web_txt.txt.len()),
        (0, 0),
        "NODATA: {web_txt:?}"
    );
    // An empty non-terminal exists: NODATA, and names below it are not the wildcard's.
    for ent in ["x.apps.example.com.", "apps.example.com."] {
        let a = f.ask(ent, RecordType::A);
        assert_eq!((a.rcode, a.addrs.len()), (0, 0), "{ent}: NODATA: {a:?}");
    }
    assert_eq!(f.ask("y.x.apps.example.com.", RecordType::A).rcode, 3);
    assert_eq!(f.ask("z.web.apps.example.com.", RecordType::A).rcode, 3);
    // A wildcard CNAME is followed to the explicit name.
    let alias = f.ask("q.alias.example.com.", RecordType::A);
    assert_eq!(
        (alias.cname.as_deref(), alias.addrs.clone()),
        (Some("web.apps.example.com."), set(&["192.0.2.20"])),
        "{alias:?}"
    );
    // Gateway API and Ingress wildcards answer like their exact host names.
    f.expect_a("shop.gw.example.com.", &["198.51.100.200"], SETTLE);
    f.expect_a("a.b.gw.example.com.", &["198.51.100.200"], SETTLE);
    f.expect_a("shop.ing.example.com.", &["198.51.100.101"], SETTLE);
    // `*` inside a name is no wildcard: skipped, named in the log, nothing served.
    assert_eq!(f.ask("a.x.example.com.", RecordType::A).rcode, 3);
    let log = f.log_text();
    assert!(
        log.contains("a.*.example.com") && log.contains("whole first label"),
        "{log}"
    );

    // West's wildcard goes: the union shrinks. The explicit name goes: the wildcard covers it.
    cl.west.delete(Res::DnsEndpoints, "shop", "apps");
    f.expect_a(
        "anything.apps.example.com.",
        &["192.0.2.10", "192.0.2.11"],
        SETTLE,
    );
    cl.east1.put(
        Res::DnsEndpoints,
        dns_endpoint(
            "shop",
            "apps",
            &[("*.apps.example.com", "A", &["192.0.2.10"], 60)],
        ),
    );
    f.expect_a("web.apps.example.com.", &["192.0.2.10"], SETTLE);
    f.expect_a("y.x.apps.example.com.", &["192.0.2.10"], SETTLE);
    expect_answer(&f, "q.alias.example.com.", RecordType::A, "NXDOMAIN", |a| {
        a.rcode == 3
    });
    // The route goes: its wildcard goes.
    cl.east1.delete(Res::HttpRoutes, "shop", "any");
    expect_answer(&f, "shop.gw.example.com.", RecordType::A, "NXDOMAIN", |a| {
        a.rcode == 3
    });
}

// ------------------------------------------------------------------------------------------
// Issue 11: per-service annotations, in-cluster redirect
// ------------------------------------------------------------------------------------------

/// checkout in `cluster` with these annotations (the Service object is replaced).
fn annotated_checkout(ip: &str, annotations: serde_json::Value) -> serde_json::Value {
    let mut v = service("shop", "checkout", fed_label(), &[ip], &[]);
    v["metadata"]["annotations"] = annotations;
    v
}

/// Every address `qname` answers with over `n` queries (weighted answers rotate).
fn seen(f: &Fedns, qname: &str, n: usize) -> BTreeSet<IpAddr> {
    (0..n).flat_map(|_| f.a(qname)).collect()
}

/// `fedns.io/ttl`, `fedns.io/policy` and `fedns.io/weight` on the federated Services change
/// the answers; a bad value is logged and counted once, and the last good setting stays.
#[test]
fn service_annotations_set_ttl_policy_and_weight_and_bad_values_keep_the_last_good() {
    let cl = Clusters::start();
    let fx = Fixture::new(
        &cl.kubeconfig(),
        &[CLUSTER_EAST1, CLUSTER_EAST2, CLUSTER_WEST],
        30,
    );
    let f = Fedns::start(&fx.path("fedns.yaml"));
    f.expect_a(G, &[IP_EAST1, IP_EAST2, IP_WEST], SETTLE);
    assert_eq!(f.ask(G, RecordType::A).ttl, Some(5), "the section's TTL");
    // east1 sets the service's TTL and policy; west's own Service weighs its shard 0.
    cl.east1.put(
        Res::Services,
        annotated_checkout(
            IP_EAST1,
            json!({"fedns.io/ttl": "7", "fedns.io/policy": "weighted"}),
        ),
    );
    cl.west.put(
        Res::Services,
        annotated_checkout(IP_WEST, json!({"fedns.io/weight": "0"})),
    );
    wait_for(SETTLE, || {
        (f.ask(G, RecordType::A).ttl == Some(7)).then_some(())
    })
    .unwrap_or_else(|| panic!("TTL annotation not applied:\n{}", f.log_text()));
    // weighted: one cluster per answer, west (weight 0) never.
    wait_for(SETTLE, || {
        (seen(&f, G, 12) == set(&[IP_EAST1, IP_EAST2])).then_some(())
    })
    .unwrap_or_else(|| panic!("weight annotation not applied:\n{}", f.log_text()));
    assert_eq!(
        f.a(G).len(),
        1,
        "weighted: one cluster's addresses per answer"
    );
    assert_eq!(
        f.ask(R_WEST, RecordType::A).ttl,
        Some(7),
        "every name of the service"
    );
    // A failover order alone implies `failover`.
    cl.east1.put(
        Res::Services,
        annotated_checkout(
            IP_EAST1,
            json!({"fedns.io/ttl": "7", "fedns.io/failover": "west, us-east1"}),
        ),
    );
    f.expect_a(G, &[IP_WEST], SETTLE);
    // Bad values: logged and counted once, the last good settings stay.
    let metric = "fedns_annotation_errors_total{annotation=\"fedns.io/ttl\"}";
    assert_eq!(f.metric(metric), None, "no bad value yet");
    let bad = || {
        annotated_checkout(
            IP_EAST1,
            json!({"fedns.io/ttl": "soon", "fedns.io/failover": "west, us-east1"}),
        )
    };
    cl.east1.put(Res::Services, bad());
    wait_for(SETTLE, || (f.metric(metric) == Some(1.0)).then_some(()))
        .unwrap_or_else(|| panic!("bad TTL not counted:\n{}", f.log_text()));
    let log = f.log_text();
    assert!(
        log.contains("fedns.io/ttl: \\\"soon\\\"") || log.contains("fedns.io/ttl: \"soon\""),
        "the log names the annotation and the value:\n{log}"
    );
    assert!(
        log.contains("shop/checkout") && log.contains("east1"),
        "{log}"
    );
    let a = f.ask(G, RecordType::A);
    assert_eq!(
        (a.ttl, a.addrs.clone()),
        (Some(7), set(&[IP_WEST])),
        "{a:?}"
    );
    // The same bad value again (another change to the object): not counted again.
    let mut again = bad();
    again["metadata"]["labels"]["touched"] = json!("yes");
    cl.east1.put(Res::Services, again);
    // A good change elsewhere that must show, so we know the event above was processed.
    cl.west.put(
        Res::Services,
        annotated_checkout("198.51.100.31", json!({"fedns.io/weight": "0"})),
    );
    f.expect_a(G, &["198.51.100.31"], SETTLE);
    assert_eq!(f.metric(metric), Some(1.0), "once per change of value");
    let count = f.log_text().matches("fedns.io/ttl: ").count();
    assert_eq!(count, 1, "logged once:\n{}", f.log_text());
    // Fixed: the new value applies.
    cl.east1.put(
        Res::Services,
        annotated_checkout(IP_EAST1, json!({"fedns.io/ttl": "9"})),
    );
    wait_for(SETTLE, || {
        (f.ask(G, RecordType::A).ttl == Some(9)).then_some(())
    })
    .unwrap_or_else(|| panic!("fixed TTL not applied:\n{}", f.log_text()));
    f.expect_a(G, &[IP_EAST1, IP_EAST2, "198.51.100.31"], SETTLE);
}

/// `client_networks` on clusters of the `kubernetes:` section: pods of east1 (127.0.0.2) get
/// the cluster-local name, pods of west (127.0.0.3) once west's endpoints are unready get
/// west's zonal name, falling back up; other clients the global name.
#[test]
fn in_cluster_redirect_from_the_kubernetes_source() {
    let cl = Clusters::start();
    let fx = Fixture::new(
        &cl.kubeconfig(),
        &[
            "    - {name: east1, kubeconfig: kubeconfig, context: east1, client_networks: [127.0.0.2/32]}\n",
            CLUSTER_EAST2,
            "    - {name: west, kubeconfig: kubeconfig, context: west, client_networks: [127.0.0.3/32]}\n",
        ],
        30,
    );
    let f = Fedns::start(&fx.path("fedns.yaml"));
    f.expect_a(G, &[IP_EAST1, IP_EAST2, IP_WEST], SETTLE);
    let redirect = "checkout.shop.myfed.svc.cluster.local.";
    let from = |src: &str| ask_from(src, f.udp, redirect, RecordType::A);
    // Both run it with ready endpoints: the Service's ClusterIP there, as the cluster's own
    // DNS would answer the local name (a CNAME to it would end the answer outside our zones).
    let local = |src: &str| {
        let a = from(src);
        a.cname.is_none() && a.addrs == set(&["10.96.183.156"])
    };
    assert!(local("127.0.0.2"), "{:?}", from("127.0.0.2"));
    assert!(local("127.0.0.3"), "{:?}", from("127.0.0.3"));
    assert_eq!(
        from("127.0.0.1").cname.as_deref(),
        Some(G),
        "no cluster: global"
    );
    cl.west.put(
        Res::EndpointSlices,
        slice(
            "shop",
            "checkout-w1",
            "checkout",
            &[("10.246.1.5", false, false, Some("us-west2-a"))],
        ),
    );
    wait_for(SETTLE, || {
        (from("127.0.0.3").cname.as_deref() == Some(Z_WEST_A)).then_some(())
    })
    .unwrap_or_else(|| panic!("west's pods never left the local name:\n{}", f.log_text()));
    // West's zone and region have nothing else: the chain ends at the global name's answer
    // for a west client (geo: the nearest healthy region, by the cluster's own topology).
    let a = from("127.0.0.3");
    assert_eq!(a.addrs, set(&[IP_EAST1, IP_EAST2]), "{a:?}");
    assert!(local("127.0.0.2"));
    // A headless Service (clusterIP None) has no address to give: the CNAME to the local name.
    let mut headless = service("shop", "checkout", fed_label(), &[IP_EAST1], &[]);
    headless["spec"]["clusterIP"] = json!("None");
    headless["spec"]["clusterIPs"] = json!(["None"]);
    cl.east1.put(Res::Services, headless);
    wait_for(SETTLE, || {
        (from("127.0.0.2").cname.as_deref() == Some("checkout.shop.svc.cluster.local."))
            .then_some(())
    })
    .unwrap_or_else(|| panic!("headless: no CNAME to the local name:\n{}", f.log_text()));
}

/// MCS names (KEP-1645) with `clusterset_domain` and `service_imports` on: a client in a
/// cluster with a ClusterSetIP ServiceImport gets that cluster's IPs; a client in a cluster with
/// a Headless import, or none, or in no cluster, gets what the global name answers it. SRV names
/// per port target the service name. A service only imported (ClusterIP, no load balancer) exists
/// for its MCS name and answers NODATA elsewhere; import changes and deletions are followed; a
/// member without the CRD is ready, said in /readyz. `check` refuses service_imports without a
/// clusterset_domain, naming the field.
#[test]
fn clusterset_names_answer_import_ips_per_cluster_else_shards() {
    let cl = Clusters::start();
    cl.east2.set_installed(Res::ServiceImports, false);
    cl.east1.put(
        Res::ServiceImports,
        service_import(
            "shop",
            "checkout",
            &["10.100.0.10"],
            &[("http", "TCP", 80)],
            &["east1", "west"],
        ),
    );
    cl.east1.put(
        Res::ServiceImports,
        service_import(
            "shop",
            "cart",
            &["10.100.0.20"],
            &[("http", "TCP", 80)],
            &["east1"],
        ),
    );
    cl.west.put(
        Res::ServiceImports,
        service_import(
            "shop",
            "checkout",
            &[],
            &[("http", "TCP", 80)],
            &["east1", "west"],
        ),
    );
    let fx = Fixture::new(
        &cl.kubeconfig(),
        &[
            "    - {name: east1, kubeconfig: kubeconfig, context: east1, client_networks: [127.0.0.2/32]}\n",
            CLUSTER_EAST2,
            "    - {name: west, kubeconfig: kubeconfig, context: west, client_networks: [127.0.0.3/32]}\n",
        ],
        30,
    );
    // Bad combination first: ServiceImports read for names that are not served.
    enable(&fx, "  service_imports: true\n");
    let (ok, out, err) = fedns_cmd(fx.dir.path(), &["check", "--config", "fedns.yaml"]);
    assert!(!ok, "check accepted service_imports alone:\n{out}{err}");
    assert!(
        format!("{out}{err}").contains("kubernetes.service_imports")
            && format!("{out}{err}").contains("clusterset_domain"),
        "{out}{err}"
    );
    enable(&fx, "  clusterset_domain: clusterset.local\n");
    let (ok, out, err) = fedns_cmd(fx.dir.path(), &["check", "--config", "fedns.yaml"]);
    assert!(ok, "{out}{err}");
    // Two federations may not serve one cluster set: a federation file with the same domain.
    let good = std::fs::read_to_string(fx.path("fedns.yaml")).unwrap();
    fx.write(
        "other.yaml",
        "federation:\n  name: other\n  zone: example.org\n  clusterset_domain: clusterset.local\nclusters:\n  - {name: o1, region: r1}\nservices: []\n",
    );
    fx.write(
        "fedns.yaml",
        &format!("{good}federation_files: [other.yaml]\n"),
    );
    let (ok, out, err) = fedns_cmd(fx.dir.path(), &["check", "--config", "fedns.yaml"]);
    let said = format!("{out}{err}");
    assert!(
        !ok,
        "two federations for clusterset.local accepted:\n{said}"
    );
    assert!(
        said.contains("kubernetes.clusterset_domain: \"clusterset.local\": federation \"other\" already serves"),
        "{said}"
    );
    fx.write("fedns.yaml", &good);

    let f = Fedns::start(&fx.path("fedns.yaml"));
    f.expect_a(G, &[IP_EAST1, IP_EAST2, IP_WEST], SETTLE);
    let mcs = "checkout.shop.svc.clusterset.local.";
    let ask = |src: &str, q: &str, t| ask_from(src, f.udp, q, t);
    let a_of = |src: &str, q: &str| ask(src, q, RecordType::A).addrs;
    wait_for(SETTLE, || {
        (a_of("127.0.0.2", mcs) == set(&["10.100.0.10"])).then_some(())
    })
    .unwrap_or_else(|| panic!("east1's ClusterSetIP never served:\n{}", f.log_text()));
    let east1 = ask("127.0.0.2", mcs, RecordType::A);
    assert_eq!(
        (east1.rcode, east1.cname.as_deref()),
        (0, None),
        "{east1:?}"
    );
    // /explain says which cluster's import answered, or that the global name's answer did.
    let explain = |client: &str| -> serde_json::Value {
        let (status, body) = http_get(
            f.http,
            &format!("/explain?name={mcs}&type=A&client={client}&format=json"),
        );
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    };
    let x = explain("127.0.0.2");
    let why = &x["service"]["why"][0];
    assert_eq!(why["addresses"], json!(["10.100.0.10"]), "{x}");
    assert!(
        why["why"]
            .as_str()
            .unwrap()
            .contains("ClusterSetIPs of cluster east1's ServiceImport"),
        "{x}"
    );
    let x = explain("127.0.0.3");
    let why = x["service"]["why"][0]["why"].as_str().unwrap().to_string();
    assert!(
        why.contains("imports it as Headless") && why.contains("what the global name"),
        "{why}"
    );
    assert_eq!(east1.ttl, Some(5), "the federation's ttl");
    assert!(ask("127.0.0.2", mcs, RecordType::AAAA).addrs.is_empty());
    // West's import is Headless and the unplaced client has no cluster: the global answer.
    for src in ["127.0.0.3", "127.0.0.1"] {
        let got = a_of(src, mcs);
        assert!(!got.is_empty(), "{src}: healthy shards exist");
        assert_eq!(got, a_of(src, G), "{src}: as the global name answers it");
        assert!(!got.contains(&"10.100.0.10".parse::<IpAddr>().unwrap()));
    }
    let srv = ask(
        "127.0.0.1",
        "_http._tcp.checkout.shop.svc.clusterset.local.",
        RecordType::SRV,
    );
    assert_eq!(srv.srv, vec![(80, mcs.to_string())], "{srv:?}");
    // cart: a ClusterIP service only imported.
    let cart = "cart.shop.svc.clusterset.local.";
    assert_eq!(a_of("127.0.0.2", cart), set(&["10.100.0.20"]));
    let elsewhere = ask("127.0.0.3", cart, RecordType::A);
    assert_eq!(
        (elsewhere.rcode, elsewhere.addrs.len()),
        (0, 0),
        "NODATA: {elsewhere:?}"
    );
    let global = ask(
        "127.0.0.1",
        "cart.shop.myfed.svc.example.com.",
        RecordType::A,
    );
    assert_eq!(
        (global.rcode, global.addrs.len()),
        (0, 0),
        "NODATA: {global:?}"
    );
    assert_eq!(
        ask(
            "127.0.0.1",
            "nosuch.shop.svc.clusterset.local.",
            RecordType::A
        )
        .rcode,
        3
    );
    // The member without the CRD is ready and says so.
    let ready = wait_for(SETTLE, || {
        let (status, body) = http_get(f.http, "/readyz");
        (status == 200).then_some(body)
    })
    .unwrap_or_else(|| panic!("never ready:\n{}", f.log_text()));
    assert!(
        ready.contains("serviceimports.multicluster.x-k8s.io"),
        "{ready}"
    );
    // A new ClusterSetIP, then the import deleted: east1's clients follow.
    cl.east1.put(
        Res::ServiceImports,
        service_import(
            "shop",
            "checkout",
            &["10.100.0.11"],
            &[("http", "TCP", 80)],
            &["east1"],
        ),
    );
    wait_for(SETTLE, || {
        (a_of("127.0.0.2", mcs) == set(&["10.100.0.11"])).then_some(())
    })
    .unwrap_or_else(|| panic!("new ClusterSetIP never served:\n{}", f.log_text()));
    cl.east1.delete(Res::ServiceImports, "shop", "checkout");
    wait_for(SETTLE, || {
        let got = a_of("127.0.0.2", mcs);
        (!got.is_empty() && got == a_of("127.0.0.2", G)).then_some(())
    })
    .unwrap_or_else(|| panic!("deleted import still served:\n{}", f.log_text()));
}

/// A headless Service exported through MCS (KEP-1645 DNS specification §2.4), imported as
/// Headless: `SVC.NS.svc.clusterset.local` answers every ready endpoint of every cluster (not
/// the unready one), each endpoint has `HOSTNAME.CLUSTER.SVC...` (an endpoint without a
/// hostname is named by its dashed address), SRV targets those names, an endpoint turning
/// unready leaves at once, and an unreachable member's endpoints follow fail static: dropped
/// after the grace while another cluster has ready ones, served again when none has.
#[test]
fn clusterset_headless_names_answer_every_ready_endpoint_with_per_endpoint_names() {
    let cl = Clusters::start();
    cl.east2.set_installed(Res::ServiceImports, false);
    let east1_eps = [
        ("10.244.1.20", "db-0", true),
        ("10.244.1.21", "db-1", true),
        ("10.244.1.22", "db-2", false),
    ];
    let west_eps = [("10.246.1.20", "db-0", true), ("10.246.1.21", "", true)];
    for (api, eps) in [(&cl.east1, &east1_eps[..]), (&cl.west, &west_eps[..])] {
        let mut svc = cluster_ip_service("shop", "db", fed_label());
        svc["spec"]["clusterIP"] = json!("None");
        svc["spec"]["clusterIPs"] = json!(["None"]);
        api.put(Res::Services, svc);
        api.put(
            Res::EndpointSlices,
            headless_slice("shop", "db-x1", "db", eps),
        );
        api.put(
            Res::ServiceImports,
            service_import(
                "shop",
                "db",
                &[],
                &[("tcp-pg", "TCP", 5432)],
                &["east1", "west"],
            ),
        );
    }
    let fx = Fixture::new(
        &cl.kubeconfig(),
        &[CLUSTER_EAST1, CLUSTER_EAST2, CLUSTER_WEST],
        3,
    );
    enable(
        &fx,
        "  service_imports: true\n  clusterset_domain: clusterset.local\n  max_answers: 3\n",
    );
    let f = Fedns::start(&fx.path("fedns.yaml"));
    let name = "db.shop.svc.clusterset.local.";
    let all = ["10.244.1.20", "10.244.1.21", "10.246.1.20", "10.246.1.21"];
    // Four ready endpoints, `max_answers: 3`: three per answer, every one in turn.
    let seen = wait_for(SETTLE, || {
        let mut seen = BTreeSet::new();
        for _ in 0..8 {
            let a = f.ask(name, RecordType::A);
            if a.rcode != 0 || a.addrs.len() != 3 {
                return None;
            }
            seen.extend(a.addrs);
        }
        Some(seen)
    })
    .unwrap_or_else(|| panic!("never three at a time:\n{}", f.log_text()));
    assert_eq!(seen, set(&all));
    let hosts = [
        ("db-0.east1", "10.244.1.20"),
        ("db-1.east1", "10.244.1.21"),
        ("db-0.west", "10.246.1.20"),
        ("10-246-1-21.west", "10.246.1.21"),
    ];
    for (h, ip) in hosts {
        let got = f.ask(&format!("{h}.{name}"), RecordType::A);
        assert_eq!((got.rcode, got.addrs), (0, set(&[ip])), "{h}");
    }
    let unready = "db-2.east1.db.shop.svc.clusterset.local.";
    assert_eq!(f.ask(unready, RecordType::A).rcode, 3, "not ready: no name");
    let srv = f.ask(
        "_tcp-pg._tcp.db.shop.svc.clusterset.local.",
        RecordType::SRV,
    );
    let mut got = srv.srv.clone();
    got.sort();
    let mut want: Vec<(u16, String)> = hosts
        .iter()
        .map(|(h, _)| (5432, format!("{h}.{name}")))
        .collect();
    want.sort();
    assert_eq!(got, want, "{srv:?}");
    // /explain names the rule, the imports and the endpoints; /status counts them per cluster.
    let explain = |q: &str| -> serde_json::Value {
        let (status, body) = http_get(f.http, &format!("/explain?{q}&format=json"));
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    };
    let x = explain("name=db.shop.svc.clusterset.local&client=127.0.0.1");
    let svc = &x["service"];
    assert_eq!(svc["level"], "clusterset", "{x}");
    assert_eq!(svc["imports"].as_array().map(Vec::len), Some(2), "{x}");
    let why = &svc["why"][0];
    assert_eq!(why["decision"], "answer", "{x}");
    let text = why["why"].as_str().unwrap();
    assert!(
        text.contains("headless service") && text.contains("every ready"),
        "{text}"
    );
    assert_eq!(why["addresses"].as_array().map(Vec::len), Some(4), "{x}");
    let east1 = svc["shards"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["cluster"] == "east1")
        .unwrap();
    assert_eq!(
        east1["endpoints"],
        json!(["db-0 10.244.1.20", "db-1 10.244.1.21"])
    );
    let x = explain("name=db-2.east1.db.shop.svc.clusterset.local&client=127.0.0.1");
    assert_eq!(x["service"]["why"][0]["decision"], "nxdomain", "{x}");
    assert_eq!(x["answer"]["rcode"], "Non-Existent Domain", "{x}");
    let (_, page) = http_get(f.http, "/status");
    let row = page
        .split("<tr data-cluster=\"east1\"><td>myfed</td><td>svc.clusterset.local.</td>")
        .nth(1)
        .unwrap_or_else(|| panic!("no cluster-set row for east1:\n{page}"));
    assert!(
        row.starts_with("<td>east1</td><td>0</td><td>1</td><td>1</td><td>2</td></tr>"),
        "{row}"
    );

    // db-1 turns unready: its address and its name go.
    cl.east1.put(
        Res::EndpointSlices,
        headless_slice(
            "shop",
            "db-x1",
            "db",
            &[
                ("10.244.1.20", "db-0", true),
                ("10.244.1.21", "db-1", false),
            ],
        ),
    );
    // (Its name first: with three at a time, the old four may rotate to the same three.)
    expect_answer(
        &f,
        "db-1.east1.db.shop.svc.clusterset.local.",
        RecordType::A,
        "NXDOMAIN",
        |a| a.rcode == 3,
    );
    for _ in 0..4 {
        f.expect_a(name, &["10.244.1.20", "10.246.1.20", "10.246.1.21"], SETTLE);
    }

    // West's API server goes away: past the grace its endpoints go, east1 having one ready...
    cl.west.go_away();
    f.expect_a(name, &["10.244.1.20"], Duration::from_secs(20));
    // ...and when east1 has none, west's last known ones are served again (fail static).
    cl.east1.put(
        Res::EndpointSlices,
        headless_slice("shop", "db-x1", "db", &[("10.244.1.20", "db-0", false)]),
    );
    f.expect_a(name, &["10.246.1.20", "10.246.1.21"], SETTLE);
    assert_eq!(
        f.a("db-0.west.db.shop.svc.clusterset.local."),
        set(&["10.246.1.20"])
    );
}

// ------------------------------------------------------------------------------------------
// fedns join / unjoin
// ------------------------------------------------------------------------------------------

/// Runs `fedns ARGS` in `dir`; (success, stdout, stderr).
fn fedns_cmd(dir: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .expect("run fedns");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn left_readyz(f: &Fedns, cluster: &str) -> Option<()> {
    let (status, body) = http_get(f.http, "/readyz");
    (status == 200 && !body.contains(&format!("kubernetes:{cluster}"))).then_some(())
}

/// `fedns join` with an admin context (HTTPS, the operator's token) creates fedns's reader
/// identity in the member, writes a kubeconfig with the minted token and adds the cluster to
/// the config, which the running fedns follows: the member's service answers over DNS with the
/// new token. `--dry-run` changes nothing; joining a name twice is refused; a re-join after
/// `unjoin` re-applies the existing objects; `unjoin --context` deletes them and the cluster
/// leaves /readyz.
#[test]
fn join_enrols_a_member_that_fedns_follows_and_unjoin_removes_it() {
    let east = east_with_checkout();
    let west = ApiServer::start_secure("admin-token");
    populate_west(&west, IP_WEST);
    let fx = Fixture::new(&kubeconfig(&[("east1", east.url())]), &[CLUSTER_EAST1], 30);
    // An operator's comment, which the edits keep.
    let cfg_path = fx.path("fedns.yaml");
    let original = format!(
        "# fedns for the shop\n{}",
        std::fs::read_to_string(&cfg_path).unwrap()
    );
    fx.write("fedns.yaml", &original);
    fx.write(
        "admin.yaml",
        &kubeconfig_secure(&[("west-admin", west.url(), "admin-token")], &test_ca().ca),
    );
    let f = Fedns::start(&cfg_path);
    f.expect_a(G, &[IP_EAST1], SETTLE);
    let dir = fx.dir.path();
    let join = |extra: &[&str]| {
        let mut args = vec![
            "join",
            "west",
            "--context",
            "west-admin",
            "--kubeconfig",
            "admin.yaml",
            "--config",
            "fedns.yaml",
            "--region",
            "us-west2",
            "--zones",
            "us-west2-a",
        ];
        args.extend_from_slice(extra);
        fedns_cmd(dir, &args)
    };
    let config = || std::fs::read_to_string(&cfg_path).unwrap();
    let member_kc = fx.path("kubeconfigs/west.yaml");

    // A config with no `kubernetes:` section is refused, naming the file.
    fx.write("plain.yaml", "zones_dir: zones\n");
    let (ok, _, err) = fedns_cmd(
        dir,
        &[
            "join",
            "west",
            "--context",
            "west-admin",
            "--kubeconfig",
            "admin.yaml",
            "--config",
            "plain.yaml",
        ],
    );
    assert!(
        !ok && err.contains("plain.yaml: no `kubernetes:` section"),
        "{err}"
    );
    assert!(west.object_paths().is_empty());

    // --dry-run: says what it would do, does nothing.
    let (ok, out, err) = join(&["--dry-run"]);
    assert!(ok, "{out}\n{err}");
    // The output is a YAML stream of exactly the objects join applies, each one the
    // Kubernetes type it says it is.
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&out).expect("YAML stream");
    let kinds: Vec<&str> = docs
        .iter()
        .map(|d| d["kind"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        kinds,
        [
            "Namespace",
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "Secret"
        ],
        "{out}"
    );
    let typed = |i: usize| docs[i].clone();
    let _: k8s_openapi::api::core::v1::Namespace =
        serde_json::from_value(typed(0)).expect("Namespace");
    let sa: k8s_openapi::api::core::v1::ServiceAccount =
        serde_json::from_value(typed(1)).expect("ServiceAccount");
    assert_eq!(sa.metadata.namespace.as_deref(), Some("fedns-system"));
    let role: k8s_openapi::api::rbac::v1::ClusterRole =
        serde_json::from_value(typed(2)).expect("ClusterRole");
    assert_eq!(role.metadata.name.as_deref(), Some("fedns-reader-myfed"));
    assert!(
        role.rules.iter().flatten().any(|r| r
            .resources
            .iter()
            .flatten()
            .any(|x| x == "endpointslices")
            && r.verbs == ["get", "list", "watch"]),
        "{out}"
    );
    let binding: k8s_openapi::api::rbac::v1::ClusterRoleBinding =
        serde_json::from_value(typed(3)).expect("ClusterRoleBinding");
    assert_eq!(binding.role_ref.name, "fedns-reader-myfed");
    assert_eq!(
        binding
            .subjects
            .iter()
            .flatten()
            .next()
            .map(|s| s.name.as_str()),
        Some("fedns-reader-myfed")
    );
    let secret: k8s_openapi::api::core::v1::Secret =
        serde_json::from_value(typed(4)).expect("Secret");
    assert_eq!(
        secret.type_.as_deref(),
        Some("kubernetes.io/service-account-token")
    );
    assert!(
        out.contains("# +    - {name: west, kubeconfig: kubeconfigs/west.yaml, region: us-west2, zones: [us-west2-a]}"),
        "{out}"
    );
    assert_eq!(config(), original);
    assert!(!member_kc.exists());
    assert!(west.object_paths().is_empty(), "{:?}", west.object_paths());
    // With the custom-resource sources on, the ClusterRole grows their kinds (and only then).
    assert!(
        !out.contains("dnsendpoints") && !out.contains("httproutes"),
        "{out}"
    );
    fx.write(
        "crd.yaml",
        &original.replace(
            "kubernetes:\n",
            "kubernetes:\n  dns_endpoints: true\n  gateway_api: true\n",
        ),
    );
    let (ok, out, err) = fedns_cmd(
        dir,
        &[
            "join",
            "west",
            "--context",
            "west-admin",
            "--kubeconfig",
            "admin.yaml",
            "--config",
            "crd.yaml",
            "--dry-run",
        ],
    );
    assert!(ok, "{out}\n{err}");
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&out).expect("YAML stream");
    let role: k8s_openapi::api::rbac::v1::ClusterRole =
        serde_json::from_value(docs[2].clone()).expect("ClusterRole");
    let rule = |group: &str| {
        role.rules
            .iter()
            .flatten()
            .find(|r| r.api_groups.iter().flatten().any(|g| g == group))
            .map(|r| (r.resources.clone().unwrap_or_default(), r.verbs.clone()))
    };
    let read = vec!["get".to_string(), "list".into(), "watch".into()];
    assert_eq!(
        rule("externaldns.k8s.io"),
        Some((vec!["dnsendpoints".into()], read.clone())),
        "{out}"
    );
    assert_eq!(
        rule("gateway.networking.k8s.io"),
        Some((vec!["gateways".into(), "httproutes".into()], read)),
        "{out}"
    );

    // The real join.
    let (ok, out, err) = join(&[]);
    assert!(ok, "{out}\n{err}");
    let sa = west
        .object("/api/v1/namespaces/fedns-system/serviceaccounts/fedns-reader-myfed")
        .expect("ServiceAccount");
    assert_eq!(
        sa["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "fedns-join"
    );
    assert!(west.object("/api/v1/namespaces/fedns-system").is_some());
    let role = west
        .object("/apis/rbac.authorization.k8s.io/v1/clusterroles/fedns-reader-myfed")
        .expect("ClusterRole");
    assert_eq!(
        role["rules"],
        json!([
            {"apiGroups": [""], "resources": ["services", "nodes"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["networking.k8s.io"], "resources": ["ingresses"], "verbs": ["get", "list", "watch"]},
        ])
    );
    let binding = west
        .object("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/fedns-reader-myfed")
        .expect("ClusterRoleBinding");
    assert_eq!(binding["roleRef"]["name"], "fedns-reader-myfed");
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": "fedns-reader-myfed", "namespace": "fedns-system"}])
    );
    let secret = west
        .object("/api/v1/namespaces/fedns-system/secrets/fedns-reader-myfed-token")
        .expect("Secret");
    assert_eq!(secret["type"], "kubernetes.io/service-account-token");
    use base64::Engine as _;
    let token = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(secret["data"]["token"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap();
    let kc_text = std::fs::read_to_string(&member_kc).unwrap();
    assert!(kc_text.contains(&format!("token: {token}")), "{kc_text}");
    assert!(
        kc_text.contains("certificate-authority-data: "),
        "{kc_text}"
    );
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&member_kc).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let joined = config();
    assert!(joined.starts_with("# fedns for the shop\n"), "{joined}");
    assert!(
        joined.contains(&format!("{}    - {{name: west, kubeconfig: kubeconfigs/west.yaml, region: us-west2, zones: [us-west2-a]}}\n", CLUSTER_EAST1)),
        "{joined}"
    );
    // The running fedns follows the config: west is watched with the minted token.
    wait_for(SETTLE, || ready_with(&f, "west"))
        .unwrap_or_else(|| panic!("west never ready:\n{}", f.log_text()));
    f.expect_a(R_WEST, &[IP_WEST], SETTLE);
    f.expect_a(G, &[IP_EAST1, IP_WEST], SETTLE);
    assert!(
        west.requests_with(&token) >= 4,
        "lists with the minted token"
    );

    // A second join of the same name is refused before anything is touched.
    let (ok, out, err) = join(&[]);
    assert!(!ok, "{out}");
    assert!(
        err.contains("cluster \"west\" is already in kubernetes.clusters"),
        "{err}"
    );
    assert_eq!(config(), joined);

    // unjoin without a context: the config line and the kubeconfig go, the member is untouched.
    let (ok, out, err) = fedns_cmd(dir, &["unjoin", "west", "--config", "fedns.yaml"]);
    assert!(ok, "{out}\n{err}");
    assert_eq!(config(), original);
    assert!(!member_kc.exists());
    assert_eq!(west.object_paths().len(), 5, "{:?}", west.object_paths());
    wait_for(SETTLE, || left_readyz(&f, "west"))
        .unwrap_or_else(|| panic!("west never left /readyz:\n{}", f.log_text()));
    f.expect_a(G, &[IP_EAST1], SETTLE);

    // Joining again re-applies the objects that exist (the token Secret is kept).
    let (ok, out, err) = join(&[]);
    assert!(ok, "{out}\n{err}");
    assert!(
        out.contains("kept ServiceAccount fedns-system/fedns-reader-myfed"),
        "{out}"
    );
    assert!(
        out.contains("updated ClusterRole fedns-reader-myfed"),
        "{out}"
    );
    assert!(
        out.contains("kept Secret fedns-system/fedns-reader-myfed-token"),
        "{out}"
    );
    assert_eq!(config(), joined);
    wait_for(SETTLE, || ready_with(&f, "west"))
        .unwrap_or_else(|| panic!("west never ready again:\n{}", f.log_text()));
    f.expect_a(R_WEST, &[IP_WEST], SETTLE);

    // unjoin --dry-run changes nothing; unjoin --context deletes fedns's objects in the member.
    let unjoin = |extra: &[&str]| {
        let mut args = vec![
            "unjoin",
            "west",
            "--context",
            "west-admin",
            "--kubeconfig",
            "admin.yaml",
            "--config",
            "fedns.yaml",
        ];
        args.extend_from_slice(extra);
        fedns_cmd(dir, &args)
    };
    let (ok, out, err) = unjoin(&["--dry-run"]);
    assert!(ok, "{out}\n{err}");
    assert!(
        out.contains("-    - {name: west, kubeconfig: kubeconfigs/west.yaml"),
        "{out}"
    );
    assert_eq!(config(), joined);
    assert!(member_kc.exists());
    assert_eq!(west.object_paths().len(), 5);
    let (ok, out, err) = unjoin(&[]);
    assert!(ok, "{out}\n{err}");
    assert_eq!(config(), original);
    assert!(!member_kc.exists());
    assert_eq!(
        west.object_paths(),
        ["/api/v1/namespaces/fedns-system"],
        "only the namespace is left"
    );
    wait_for(SETTLE, || left_readyz(&f, "west"))
        .unwrap_or_else(|| panic!("west never left /readyz:\n{}", f.log_text()));
    f.expect_a(G, &[IP_EAST1], SETTLE);
    // Unjoining again: the name is gone.
    let (ok, _, err) = unjoin(&[]);
    assert!(!ok && err.contains("no cluster \"west\""), "{err}");
}

/// `fedns join --secret-manifest -` for a fedns deployed with deploy/kubernetes: stdout is only
/// a patch of the hub's Secret `fedns-kubeconfigs` that adds this member's key (a Secret, as
/// k8s-openapi reads it, with that one `data` key), so merged into the Secret it keeps the other
/// members' keys (checked with `kubectl patch --local` too when kubectl is installed); the
/// config names the key where the Deployment mounts it, and once the Secret's keys are there
/// (as the kubelet projects them) and the config is in place, fedns watches the member with the
/// minted token. `unjoin --secret-manifest` prints the patch that takes the key out again.
#[test]
fn join_secret_manifest_patches_one_key_of_the_hub_secret_and_its_kubeconfig_serves() {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let east = east_with_checkout();
    let west = ApiServer::start_secure("admin-token");
    populate_west(&west, IP_WEST);
    let east_kc = kubeconfig(&[("east1", east.url())]);
    let fx = Fixture::new(&east_kc, &[CLUSTER_EAST1], 30);
    fx.write(
        "admin.yaml",
        &kubeconfig_secure(&[("west-admin", west.url(), "admin-token")], &test_ca().ca),
    );
    // The hub's config source (what the ConfigMap is made from) and the mounted Secret.
    let live = fx.path("fedns.yaml");
    std::fs::copy(&live, fx.path("hub.yaml")).unwrap();
    let mounted = fx.path("mounted");
    std::fs::create_dir_all(&mounted).unwrap();
    let f = Fedns::start(&live);
    f.expect_a(G, &[IP_EAST1], SETTLE);
    let dir = fx.dir.path();
    let (ok, out, err) = fedns_cmd(
        dir,
        &[
            "join",
            "west",
            "--context",
            "west-admin",
            "--kubeconfig",
            "admin.yaml",
            "--config",
            "hub.yaml",
            "--region",
            "us-west2",
            "--zones",
            "us-west2-a",
            "--secret-manifest",
            "-",
            "--mounted-at",
            mounted.to_str().unwrap(),
        ],
    );
    assert!(ok, "{out}\n{err}");
    assert!(
        err.contains("created ServiceAccount fedns-system/fedns-reader-myfed"),
        "progress on stderr: {err}"
    );
    assert!(
        !fx.path("kubeconfigs").exists(),
        "no kubeconfig file written"
    );
    let patch: serde_json::Value = serde_saphyr::from_str(&out).expect("one YAML document");
    let secret: k8s_openapi::api::core::v1::Secret =
        serde_json::from_value(patch.clone()).expect("a Secret");
    assert_eq!(
        (
            secret.metadata.namespace.as_deref(),
            secret.metadata.name.as_deref()
        ),
        (Some("fedns"), Some("fedns-kubeconfigs"))
    );
    let data = secret.data.clone().unwrap_or_default();
    assert_eq!(data.keys().collect::<Vec<_>>(), ["west"], "{out}");
    assert!(
        secret.string_data.is_none() && secret.type_.is_none(),
        "{out}"
    );
    let west_kc = String::from_utf8(data["west"].0.clone()).unwrap();
    let token_secret = west
        .object("/api/v1/namespaces/fedns-system/secrets/fedns-reader-myfed-token")
        .expect("token Secret");
    let token = String::from_utf8(
        b64.decode(token_secret["data"]["token"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert!(west_kc.contains(&format!("token: {token}")), "{west_kc}");
    let line = format!(
        "    - {{name: west, kubeconfig: {}/west, region: us-west2, zones: [us-west2-a]}}\n",
        mounted.display()
    );
    let hub = std::fs::read_to_string(fx.path("hub.yaml")).unwrap();
    assert!(hub.contains(&line), "{hub}");

    // The hub's Secret before: east1's key. Patched (strategic merge of `data`), both keys.
    let before = json!({
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": "fedns-kubeconfigs", "namespace": "fedns"},
        "data": {"east1": b64.encode(&east_kc)},
    });
    let mut after = before.clone();
    for (k, v) in patch["data"].as_object().unwrap() {
        after["data"][k] = v.clone();
    }
    if let Some(patched) = kubectl_patch(&fx, &before, &out) {
        assert_eq!(patched["data"], after["data"], "kubectl's merge");
    }
    for (k, v) in after["data"].as_object().unwrap() {
        let text = b64.decode(v.as_str().unwrap()).unwrap();
        std::fs::write(mounted.join(k), text).unwrap();
    }
    // The new ConfigMap arrives: fedns watches west with the minted token.
    fx.write("fedns.yaml", &hub);
    wait_for(SETTLE, || ready_with(&f, "west"))
        .unwrap_or_else(|| panic!("west never ready:\n{}", f.log_text()));
    f.expect_a(G, &[IP_EAST1, IP_WEST], SETTLE);
    assert!(
        west.requests_with(&token) >= 4,
        "lists with the minted token"
    );

    // unjoin: the config line goes, and the patch removes only west's key.
    let (ok, out, err) = fedns_cmd(
        dir,
        &[
            "unjoin",
            "west",
            "--config",
            "hub.yaml",
            "--secret-manifest",
            "-",
        ],
    );
    assert!(ok, "{out}\n{err}");
    assert!(
        !std::fs::read_to_string(fx.path("hub.yaml"))
            .unwrap()
            .contains("west")
    );
    assert!(mounted.join("west").exists(), "not ours to delete");
    let unpatch: serde_json::Value = serde_saphyr::from_str(&out).expect("one YAML document");
    assert_eq!(unpatch, json!({"data": {"west": null}}), "{out}");
    if let Some(patched) = kubectl_patch(&fx, &after, &out) {
        assert_eq!(patched["data"], before["data"], "kubectl's merge");
    }
}

/// `kubectl patch --local` of the Secret `live` with the patch document `patch`, when kubectl
/// is installed: the Secret as the API server would store it.
fn kubectl_patch(fx: &Fixture, live: &serde_json::Value, patch: &str) -> Option<serde_json::Value> {
    let kubectl = kubectl()?;
    fx.write("live-secret.json", &live.to_string());
    fx.write("patch.yaml", patch);
    let o = Command::new(kubectl)
        .args(["patch", "--local", "-o", "json", "-f"])
        .arg(fx.path("live-secret.json"))
        .arg("--patch-file")
        .arg(fx.path("patch.yaml"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    Some(serde_json::from_slice(&o.stdout).unwrap())
}

/// kubectl, when installed (scripts/test installs it).
fn kubectl() -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join("kubectl"))
        .find(|p| p.is_file())
}
