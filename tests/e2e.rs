//! End-to-end tests: the real `fedns` binary, over real UDP, TCP and HTTP sockets on loopback.
//!
//! Every test writes its own config, zone files and federation file into a temp dir, starts
//! `fedns serve` on ephemeral ports, learns the ports from the `dns listening` / `http listening`
//! log lines, and talks DNS to it with hickory-proto messages or hand-built bytes. Every wait is
//! bounded (polls with deadlines, socket read timeouts); the child is killed by PID on drop.

use std::collections::{BTreeSet, HashSet};
use std::ffi::OsStr;
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::rdata::SOA;
use hickory_proto::rr::{Name, RData, Record, RecordType};

mod common;

use common::{BIN, Fedns as Server, http_get, metric, strip_ansi, wait_for};
const REPO: &str = env!("CARGO_MANIFEST_DIR");

const NOERROR: u16 = 0;
const FORMERR: u16 = 1;
const NXDOMAIN: u16 = 3;
const NOTIMP: u16 = 4;
const REFUSED: u16 = 5;
const BADVERS: u16 = 16;

// ------------------------------------------------------------------------------------------
// Test data
// ------------------------------------------------------------------------------------------

/// Static zone for the federation: SOA TTL 3600 and MINIMUM 30, so negative TTL = 30.
const ZONE_COM: &str = r#"$ORIGIN example.com.
$TTL 3600
@       IN SOA  ns1.example.com. hostmaster.example.com. (
                1           ; serial
                3600        ; refresh
                600         ; retry
                86400       ; expire
                30 )        ; minimum
@       IN NS   ns1.example.com.
@       IN NS   ns2.example.com.
@       IN MX   10 mail.example.com.
@       IN TXT  "v=spf1 mx -all"
ns1     IN A    127.0.0.1
ns2     IN A    127.0.0.2
mail    IN A    192.0.2.25
www     IN CNAME checkout.shop.myfed.svc.example.com.
alias   IN CNAME www.example.com.
"#;

/// A second zone whose SOA TTL (20) is below its MINIMUM (300): negative TTL = 20.
const ZONE_ORG: &str = r#"$ORIGIN example.org.
$TTL 600
@       20 IN SOA ns1.example.org. hostmaster.example.org. 7 3600 600 86400 300
@       IN NS  ns1.example.com.
shop    IN CNAME checkout.shop.myfed.svc.example.com.
"#;

/// The main federation: a multi-zone cluster, an unready shard, a shard without addresses, a
/// region with nothing healthy, a zonal-only service and a service with nothing healthy.
const FED_MAIN: &str = r#"federation:
  name: myfed
  zone: example.com
  ttl: 42
  max_answers: 8
clusters:
  - name: east1
    region: us-east1
    zones: [us-east1-b, us-east1-c]
  - name: west-a
    region: us-west2
    zones: [us-west2-a]
  - name: west-b
    region: us-west2
    zones: [us-west2-b]
  - name: eu
    region: eu-west1
    zones: [eu-west1-a]
services:
  - name: checkout
    namespace: shop
    ports:
      - {name: http, protocol: TCP, port: 80}
      - {name: grpc, protocol: TCP, port: 9090}
    shards:
      - cluster: east1
        addresses: [203.0.113.10, "2001:db8:10::10"]
        ready_endpoints: 3
      - cluster: west-a
        addresses: [198.51.100.20]
        ready_endpoints: 2
      - cluster: west-b
        addresses: [192.0.2.30]
        ready_endpoints: 0
        not_ready_endpoints: 2
      - cluster: eu
        addresses: []
        ready_endpoints: 5
  - name: catalog
    namespace: shop
    ports:
      - {name: http, protocol: TCP, port: 8080}
    shards:
      - cluster: east1
        addresses: [203.0.113.11]
        ready_endpoints: 1
        zones: [us-east1-b]
  - name: payments
    namespace: billing
    ports:
      - {name: https, protocol: TCP, port: 443}
    shards:
      - cluster: west-a
        addresses: [198.51.100.40]
        ready_endpoints: 0
        not_ready_endpoints: 3
      - cluster: east1
        addresses: []
        ready_endpoints: 2
"#;

const G: &str = "checkout.shop.myfed.svc.example.com.";
const R_EAST: &str = "checkout.shop.myfed.svc.us-east1.example.com.";
const R_WEST: &str = "checkout.shop.myfed.svc.us-west2.example.com.";
const R_EU: &str = "checkout.shop.myfed.svc.eu-west1.example.com.";
const Z_EAST_B: &str = "checkout.shop.myfed.svc.us-east1-b.us-east1.example.com.";
const Z_EAST_C: &str = "checkout.shop.myfed.svc.us-east1-c.us-east1.example.com.";
const Z_WEST_A: &str = "checkout.shop.myfed.svc.us-west2-a.us-west2.example.com.";
const Z_WEST_B: &str = "checkout.shop.myfed.svc.us-west2-b.us-west2.example.com.";
const Z_EU_A: &str = "checkout.shop.myfed.svc.eu-west1-a.eu-west1.example.com.";
const PAYMENTS: &str = "payments.billing.myfed.svc.example.com.";

fn v4(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}
fn v4set(v: &[&str]) -> BTreeSet<Ipv4Addr> {
    v.iter().map(|s| v4(s)).collect()
}
fn v6set(v: &[&str]) -> BTreeSet<Ipv6Addr> {
    v.iter().map(|s| s.parse().unwrap()).collect()
}

// ------------------------------------------------------------------------------------------
// Harness: temp dir fixture, the server process, bounded waits
// ------------------------------------------------------------------------------------------

/// A temp dir holding `fedns.yaml`, `federation.yaml` and `zones/`.
struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    /// Standard zones (example.com, example.org), the given federation file, and a config on
    /// ephemeral ports with `extra_config` appended.
    fn new(federation: &str, extra_config: &str) -> Fixture {
        let fx = Fixture {
            dir: tempfile::tempdir().expect("temp dir"),
        };
        std::fs::create_dir_all(fx.path("zones")).unwrap();
        fx.write("zones/example.com.zone", ZONE_COM);
        fx.write("zones/example.org.zone", ZONE_ORG);
        fx.write("federation.yaml", federation);
        fx.write_config(extra_config);
        fx
    }

    fn write_config(&self, extra: &str) {
        self.write(
            "fedns.yaml",
            &format!(
                "listen: [\"127.0.0.1:0\"]\nhttp: \"127.0.0.1:0\"\nworkers: 2\nwatch_interval_ms: 100\nzones_dir: zones\nfederation_files: [federation.yaml]\n{extra}"
            ),
        );
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn config(&self) -> PathBuf {
        self.path("fedns.yaml")
    }

    /// Writes a file the way editors and ConfigMap updates do: a temp file, then a rename.
    fn write(&self, rel: &str, text: &str) {
        let dst = self.path(rel);
        let tmp = dst.with_extension("tmp~");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &dst).unwrap();
    }

    fn start(&self) -> Server {
        Server::start(&self.config())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Proto {
    Udp,
    Tcp,
}
const BOTH: [Proto; 2] = [Proto::Udp, Proto::Tcp];

impl Server {
    /// Sends `req` and returns the response; checks the ID, QR and the echoed question.
    fn exchange(&self, proto: Proto, req: &[u8]) -> Resp {
        let raw = match proto {
            Proto::Udp => udp_exchange(&udp_socket(), self.udp, req),
            Proto::Tcp => tcp_exchange(self.tcp, req),
        };
        check_envelope(req, &raw);
        Resp::parse(raw)
    }

    fn ask(&self, proto: Proto, name: &str, t: RecordType) -> Resp {
        self.exchange(proto, &query(name, t, None))
    }

    fn ask_edns(&self, proto: Proto, name: &str, t: RecordType, payload: u16) -> Resp {
        self.exchange(proto, &query(name, t, Some(edns(payload))))
    }

    fn serial(&self) -> u32 {
        let r = self.ask(Proto::Udp, "example.com.", RecordType::SOA);
        assert_eq!(r.rcode(), NOERROR, "{}", r);
        match r.msg.answers.first().map(|rec| &rec.data) {
            Some(RData::SOA(soa)) => soa.serial,
            _ => panic!("no SOA in the answer:\n{r}"),
        }
    }

    fn http_get(&self, path: &str) -> (u16, String) {
        http_get(self.http, path)
    }

    fn metrics(&self) -> String {
        let (status, body) = self.http_get("/metrics");
        assert_eq!(status, 200, "{body}");
        body
    }
}

/// Runs `fedns ARGS` to completion (bounded): (exit code, stdout, stderr).
fn run_fedns(args: &[&OsStr], timeout: Duration) -> (Option<i32>, String, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn fedns");
    let reader = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            strip_ansi(&String::from_utf8_lossy(&v))
        })
    };
    let out = reader(Box::new(child.stdout.take().unwrap()));
    let err = reader(Box::new(child.stderr.take().unwrap()));
    let status = wait_for(timeout, || child.try_wait().ok().flatten());
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("fedns {args:?} did not exit within {timeout:?}");
    };
    (
        status.code(),
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default(),
    )
}

/// `fedns explain --server SERVER ARGS` (bounded): (exit code, stdout, stderr).
fn fedns_explain(server: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let mut all: Vec<&OsStr> = vec![
        OsStr::new("explain"),
        OsStr::new("--server"),
        OsStr::new(server),
    ];
    all.extend(args.iter().map(OsStr::new));
    run_fedns(&all, Duration::from_secs(10))
}

// ------------------------------------------------------------------------------------------
// DNS client helpers
// ------------------------------------------------------------------------------------------

fn next_id() -> u16 {
    static ID: AtomicU16 = AtomicU16::new(0x1000);
    ID.fetch_add(1, Ordering::Relaxed)
}

fn edns(payload: u16) -> Edns {
    let mut e = Edns::new();
    e.set_max_payload(payload);
    e
}

fn name(s: &str) -> Name {
    if s == "." {
        Name::root()
    } else {
        Name::from_ascii(s).unwrap_or_else(|e| panic!("bad test name {s:?}: {e}"))
    }
}

/// A standard query (RD clear) with a fresh ID.
fn query(qname: &str, t: RecordType, e: Option<Edns>) -> Vec<u8> {
    let mut m = Message::new(next_id(), MessageType::Query, OpCode::Query);
    m.add_query(Query::query(name(qname), t));
    if let Some(e) = e {
        m.set_edns(e);
    }
    m.to_vec().expect("encode query")
}

fn udp_socket() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind udp");
    s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    s
}

/// Next datagram from `from` within `timeout`, or `None`.
fn udp_recv(sock: &UdpSocket, from: SocketAddr, timeout: Duration) -> Option<Vec<u8>> {
    sock.set_read_timeout(Some(timeout)).unwrap();
    let mut buf = vec![0u8; 65535];
    let deadline = Instant::now() + timeout;
    loop {
        match sock.recv_from(&mut buf) {
            Ok((n, a)) if a == from => return Some(buf[..n].to_vec()),
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return None;
            }
            Err(e) => panic!("udp recv: {e}"),
        }
        if Instant::now() >= deadline {
            return None;
        }
    }
}

/// Sends `req` and waits for the datagram with the same ID (1 s per try, 3 tries).
fn udp_exchange(sock: &UdpSocket, to: SocketAddr, req: &[u8]) -> Vec<u8> {
    for _ in 0..3 {
        sock.send_to(req, to).expect("udp send");
        let deadline = Instant::now() + Duration::from_secs(1);
        while Instant::now() < deadline {
            match udp_recv(sock, to, Duration::from_secs(1)) {
                Some(r) if r.len() >= 2 && r[..2] == req[..2] => return r,
                Some(_) => continue, // a late answer to an earlier query
                None => break,
            }
        }
    }
    panic!("no UDP answer from {to} after 3 tries")
}

fn tcp_connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("tcp connect");
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
    let _ = s.set_nodelay(true);
    s
}

fn frame(req: &[u8]) -> Vec<u8> {
    let mut f = (req.len() as u16).to_be_bytes().to_vec();
    f.extend_from_slice(req);
    f
}

fn tcp_send(s: &mut TcpStream, req: &[u8]) {
    s.write_all(&frame(req)).expect("tcp write");
}

fn tcp_recv(s: &mut TcpStream) -> Vec<u8> {
    let mut len = [0u8; 2];
    s.read_exact(&mut len).expect("tcp read length");
    let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut buf).expect("tcp read message");
    buf
}

fn tcp_exchange(addr: SocketAddr, req: &[u8]) -> Vec<u8> {
    let mut s = tcp_connect(addr);
    tcp_send(&mut s, req);
    tcp_recv(&mut s)
}

/// Length of the (uncompressed) question of a query built here.
fn question_len(req: &[u8]) -> usize {
    let mut pos = 12;
    while req[pos] != 0 {
        pos += req[pos] as usize + 1;
    }
    pos + 1 + 4 - 12
}

/// Checks what every answer to a well-formed query must have: its ID, QR=1, the opcode, and
/// the question echoed byte for byte (same case).
fn check_envelope(req: &[u8], resp: &[u8]) {
    assert!(resp.len() >= 12, "response shorter than a header: {resp:?}");
    assert_eq!(resp[..2], req[..2], "response ID differs from the query ID");
    assert_ne!(resp[2] & 0x80, 0, "QR not set in the response");
    assert_eq!(resp[2] & 0x78, req[2] & 0x78, "opcode not echoed");
    let qd = u16::from_be_bytes([resp[4], resp[5]]);
    assert_eq!(qd, 1, "QDCOUNT of the response");
    let ql = question_len(req);
    assert_eq!(
        resp[12..12 + ql],
        req[12..12 + ql],
        "question not echoed byte for byte"
    );
}

/// A parsed response and its bytes.
struct Resp {
    raw: Vec<u8>,
    msg: Message,
}

impl std::fmt::Display for Resp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.msg)
    }
}

impl Resp {
    fn parse(raw: Vec<u8>) -> Resp {
        let msg = Message::from_vec(&raw)
            .unwrap_or_else(|e| panic!("unparseable response ({e}): {raw:?}"));
        Resp { raw, msg }
    }
    fn rcode(&self) -> u16 {
        u16::from(self.msg.metadata.response_code)
    }
    fn aa(&self) -> bool {
        self.msg.metadata.authoritative
    }
    fn tc(&self) -> bool {
        self.msg.metadata.truncation
    }
    fn answers(&self) -> &[Record] {
        &self.msg.answers
    }
    fn a_list(&self) -> Vec<Ipv4Addr> {
        self.answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::A(a) => Some(a.0),
                _ => None,
            })
            .collect()
    }
    fn a(&self) -> BTreeSet<Ipv4Addr> {
        self.a_list().into_iter().collect()
    }
    fn aaaa_list(&self) -> Vec<Ipv6Addr> {
        self.answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::AAAA(a) => Some(a.0),
                _ => None,
            })
            .collect()
    }
    fn aaaa(&self) -> BTreeSet<Ipv6Addr> {
        self.aaaa_list().into_iter().collect()
    }
    /// (owner, target) of every CNAME in the answer, lowercased.
    fn cnames(&self) -> Vec<(String, String)> {
        self.answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::CNAME(c) => Some((lc(&r.name), lc(&c.0))),
                _ => None,
            })
            .collect()
    }
    /// Owners of the address records in the answer, lowercased.
    fn address_owners(&self) -> BTreeSet<String> {
        self.answers()
            .iter()
            .filter(|r| matches!(r.data, RData::A(_) | RData::AAAA(_)))
            .map(|r| lc(&r.name))
            .collect()
    }
    /// The SOA of the authority section: (owner, ttl, rdata).
    fn authority_soa(&self) -> Option<(String, u32, SOA)> {
        self.msg.authorities.iter().find_map(|r| match &r.data {
            RData::SOA(s) => Some((lc(&r.name), r.ttl, s.clone())),
            _ => None,
        })
    }
    fn arcount(&self) -> u16 {
        u16::from_be_bytes([self.raw[10], self.raw[11]])
    }
}

fn lc(n: &Name) -> String {
    n.to_string().to_ascii_lowercase()
}

/// NOERROR, AA, only address records of the asked family, owned by `owner`, TTL `ttl`.
fn assert_addresses(r: &Resp, owner: &str, ttl: u32, want4: &[&str], want6: &[&str], what: &str) {
    assert_eq!(r.rcode(), NOERROR, "{what}: rcode\n{r}");
    assert!(
        r.aa(),
        "{what}: AA must be set on an authoritative answer\n{r}"
    );
    assert!(!r.tc(), "{what}: TC\n{r}");
    assert!(r.cnames().is_empty(), "{what}: unexpected CNAME\n{r}");
    assert_eq!(r.a(), v4set(want4), "{what}: A records\n{r}");
    assert_eq!(r.aaaa(), v6set(want6), "{what}: AAAA records\n{r}");
    assert_eq!(
        r.answers().len(),
        want4.len() + want6.len(),
        "{what}: answer count\n{r}"
    );
    for rec in r.answers() {
        assert_eq!(lc(&rec.name), owner, "{what}: owner\n{r}");
        assert_eq!(rec.ttl, ttl, "{what}: TTL\n{r}");
    }
}

/// A negative answer: `rcode`, AA, no answer, the zone's SOA in authority with `neg_ttl`.
fn assert_negative(r: &Resp, rcode: u16, zone: &str, neg_ttl: u32, what: &str) {
    assert_eq!(r.rcode(), rcode, "{what}: rcode\n{r}");
    assert!(r.aa(), "{what}: AA\n{r}");
    assert!(r.answers().is_empty(), "{what}: answer must be empty\n{r}");
    let (owner, ttl, _) = r
        .authority_soa()
        .unwrap_or_else(|| panic!("{what}: no SOA in authority\n{r}"));
    assert_eq!(owner, zone, "{what}: SOA owner\n{r}");
    assert_eq!(ttl, neg_ttl, "{what}: negative TTL\n{r}");
}

// ------------------------------------------------------------------------------------------
// HTTP and metrics helpers
// ------------------------------------------------------------------------------------------

/// The federation file's sample of `metric_name`: sources are labelled by name, not path.
fn source_key(metric_name: &str, _fx: &Fixture) -> String {
    format!("{metric_name}{{source=\"federation-file:federation.yaml\"}}")
}

// ------------------------------------------------------------------------------------------
// 1. Names and answers
// ------------------------------------------------------------------------------------------

/// Global A/AAAA, regional and zonal names (every zone of a multi-zone cluster), TTL = the
/// federation's `ttl: 42`, AA set, over UDP and TCP.
#[test]
fn global_regional_and_zonal_names_over_udp_and_tcp() {
    let fx = Fixture::new(FED_MAIN, "");
    let s = fx.start();
    for p in BOTH {
        let ask = |n: &str, t| s.ask(p, n, t);
        assert_addresses(
            &ask(G, RecordType::A),
            G,
            42,
            &["203.0.113.10", "198.51.100.20"],
            &[],
            &format!("{p:?} global A"),
        );
        assert_addresses(
            &ask(G, RecordType::AAAA),
            G,
            42,
            &[],
            &["2001:db8:10::10"],
            &format!("{p:?} global AAAA"),
        );
        assert_addresses(
            &ask(R_EAST, RecordType::A),
            R_EAST,
            42,
            &["203.0.113.10"],
            &[],
            &format!("{p:?} regional us-east1 A"),
        );
        assert_addresses(
            &ask(R_EAST, RecordType::AAAA),
            R_EAST,
            42,
            &[],
            &["2001:db8:10::10"],
            &format!("{p:?} regional us-east1 AAAA"),
        );
        assert_addresses(
            &ask(R_WEST, RecordType::A),
            R_WEST,
            42,
            &["198.51.100.20"],
            &[],
            &format!("{p:?} regional us-west2 A"),
        );
        // The region has healthy shards, but IPv4 only: AAAA is the global name's IPv6,
        // owned by the regional name (a CNAME cannot sit beside its A records).
        assert_addresses(
            &ask(R_WEST, RecordType::AAAA),
            R_WEST,
            42,
            &[],
            &["2001:db8:10::10"],
            &format!("{p:?} regional us-west2 AAAA"),
        );
        assert_addresses(
            &ask(Z_WEST_A, RecordType::AAAA),
            Z_WEST_A,
            42,
            &[],
            &["2001:db8:10::10"],
            &format!("{p:?} zonal us-west2-a AAAA"),
        );
        // Both zones of the multi-zone cluster east1 get zonal names.
        for z in [Z_EAST_B, Z_EAST_C] {
            assert_addresses(
                &ask(z, RecordType::A),
                z,
                42,
                &["203.0.113.10"],
                &[],
                &format!("{p:?} zonal {z} A"),
            );
            assert_addresses(
                &ask(z, RecordType::AAAA),
                z,
                42,
                &[],
                &["2001:db8:10::10"],
                &format!("{p:?} zonal {z} AAAA"),
            );
        }
        assert_addresses(
            &ask(Z_WEST_A, RecordType::A),
            Z_WEST_A,
            42,
            &["198.51.100.20"],
            &[],
            &format!("{p:?} zonal us-west2-a A"),
        );
    }
}

/// Zonal with nothing healthy → CNAME to regional (with the regional A chased); regional with
/// nothing healthy → CNAME to global; both steps when both are empty.
#[test]
fn empty_levels_fall_back_by_cname_with_the_target_chased() {
    let fx = Fixture::new(FED_MAIN, "");
    let s = fx.start();
    let lower = |v: &[(&str, &str)]| -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    };
    for p in BOTH {
        // us-west2-b: its only shard is unready.
        let r = s.ask(p, Z_WEST_B, RecordType::A);
        assert_eq!(r.rcode(), NOERROR, "{r}");
        assert!(r.aa(), "{r}");
        assert_eq!(r.cnames(), lower(&[(Z_WEST_B, R_WEST)]), "{p:?}\n{r}");
        assert_eq!(r.a(), v4set(&["198.51.100.20"]), "{p:?}\n{r}");
        assert_eq!(r.address_owners(), BTreeSet::from([R_WEST.to_string()]));
        assert!(r.answers().iter().all(|rec| rec.ttl == 42), "{r}");
        assert_eq!(
            r.answers()[0].record_type(),
            RecordType::CNAME,
            "CNAME first\n{r}"
        );

        // eu-west1: the only shard has no address.
        let r = s.ask(p, R_EU, RecordType::A);
        assert_eq!(r.rcode(), NOERROR, "{r}");
        assert_eq!(r.cnames(), lower(&[(R_EU, G)]), "{p:?}\n{r}");
        assert_eq!(r.a(), v4set(&["203.0.113.10", "198.51.100.20"]), "{r}");
        assert_eq!(r.address_owners(), BTreeSet::from([G.to_string()]));
        let r = s.ask(p, R_EU, RecordType::AAAA);
        assert_eq!(r.cnames(), lower(&[(R_EU, G)]), "{p:?}\n{r}");
        assert_eq!(r.aaaa(), v6set(&["2001:db8:10::10"]), "{r}");

        // eu-west1-a: zonal → regional → global.
        let r = s.ask(p, Z_EU_A, RecordType::A);
        assert_eq!(r.rcode(), NOERROR, "{r}");
        assert_eq!(
            r.cnames(),
            lower(&[(Z_EU_A, R_EU), (R_EU, G)]),
            "{p:?}\n{r}"
        );
        assert_eq!(r.a(), v4set(&["203.0.113.10", "198.51.100.20"]), "{r}");

        // catalog runs in us-east1-b only: us-east1-c falls back to the region, us-west2 to
        // the global name.
        let cat_zc = "catalog.shop.myfed.svc.us-east1-c.us-east1.example.com.";
        let cat_r = "catalog.shop.myfed.svc.us-east1.example.com.";
        let r = s.ask(p, cat_zc, RecordType::A);
        assert_eq!(r.cnames(), lower(&[(cat_zc, cat_r)]), "{p:?}\n{r}");
        assert_eq!(r.a(), v4set(&["203.0.113.11"]), "{r}");
        let cat_zb = "catalog.shop.myfed.svc.us-east1-b.us-east1.example.com.";
        assert_addresses(
            &s.ask(p, cat_zb, RecordType::A),
            cat_zb,
            42,
            &["203.0.113.11"],
            &[],
            "catalog zonal us-east1-b",
        );
        let cat_w = "catalog.shop.myfed.svc.us-west2.example.com.";
        let r = s.ask(p, cat_w, RecordType::A);
        assert_eq!(
            r.cnames(),
            lower(&[(cat_w, "catalog.shop.myfed.svc.example.com.")]),
            "{p:?}\n{r}"
        );
        assert_eq!(r.a(), v4set(&["203.0.113.11"]), "{r}");

        // Asking for the CNAME itself gives just the CNAME.
        let r = s.ask(p, Z_WEST_B, RecordType::CNAME);
        assert_eq!(r.rcode(), NOERROR, "{r}");
        assert_eq!(r.answers().len(), 1, "{r}");
        assert_eq!(r.cnames(), lower(&[(Z_WEST_B, R_WEST)]), "{r}");
    }
}

/// No healthy shard anywhere: NOERROR, empty answer, SOA in authority (never NXDOMAIN).
#[test]
fn service_without_healthy_shards_is_nodata_never_nxdomain() {
    let fx = Fixture::new(FED_MAIN, "");
    let s = fx.start();
    for p in BOTH {
        for t in [RecordType::A, RecordType::AAAA] {
            assert_negative(
                &s.ask(p, PAYMENTS, t),
                NOERROR,
                "example.com.",
                30,
                &format!("{p:?} payments {t}"),
            );
        }
        // Regional and zonal names of that service exist too (NOERROR, no address, SOA).
        for n in [
            "payments.billing.myfed.svc.us-west2.example.com.",
            "payments.billing.myfed.svc.us-east1-b.us-east1.example.com.",
        ] {
            let r = s.ask(p, n, RecordType::A);
            assert_eq!(r.rcode(), NOERROR, "{p:?} {n}\n{r}");
            assert!(r.aa(), "{r}");
            assert!(r.a().is_empty(), "{p:?} {n}: no address expected\n{r}");
            assert!(r.authority_soa().is_some(), "{p:?} {n}: SOA expected\n{r}");
        }
        // Its SRV names exist but have no target that owns addresses: NODATA.
        let srv = "_https._tcp.payments.billing.myfed.svc.example.com.";
        assert_negative(
            &s.ask(p, srv, RecordType::SRV),
            NOERROR,
            "example.com.",
            30,
            &format!("{p:?} payments SRV"),
        );
    }
}

/// DESIGN §1: a service with no healthy shard anywhere gets "NOERROR, no answer, SOA ...
/// never a dangling CNAME": its regional and zonal names must not alias a global name that has
/// nothing to give.
#[test]
fn service_without_healthy_shards_has_no_dangling_cnames() {
    let fx = Fixture::new(FED_MAIN, "");
    let s = fx.start();
    for p in BOTH {
        for n in [
            "payments.billing.myfed.svc.us-west2.example.com.",
            "payments.billing.myfed.svc.us-east1.example.com.",
            "payments.billing.myfed.svc.us-east1-b.us-east1.example.com.",
            "payments.billing.myfed.svc.us-west2-a.us-west2.example.com.",
        ] {
            assert_negative(
                &s.ask(p, n, RecordType::A),
                NOERROR,
                "example.com.",
                30,
                &format!("{p:?} {n} (no healthy shard anywhere)"),
            );
        }
    }
}

/// SRV `_port._proto` at global, regional and zonal level; the target owns addresses (it is
/// answered with A records directly, never a CNAME).
#[test]
fn srv_records_at_every_level_point_at_names_that_own_addresses() {
    let fx = Fixture::new(FED_MAIN, "");
    let s = fx.start();
    let cases = [
        (format!("_http._tcp.{G}"), 80, G),
        (format!("_grpc._tcp.{G}"), 9090, G),
        (format!("_http._tcp.{R_EAST}"), 80, R_EAST),
        (format!("_http._tcp.{R_EU}"), 80, G), // region empty: nearest level with addresses
        (format!("_http._tcp.{Z_EAST_C}"), 80, Z_EAST_C),
        (format!("_http._tcp.{Z_WEST_B}"), 80, R_WEST),
        (format!("_grpc._tcp.{Z_EU_A}"), 9090, G),
    ];
    for p in BOTH {
        for (srv_name, port, target) in &cases {
            let r = s.ask(p, srv_name, RecordType::SRV);
            assert_eq!(r.rcode(), NOERROR, "{p:?} {srv_name}\n{r}");
            assert!(r.aa(), "{r}");
            assert_eq!(r.answers().len(), 1, "{p:?} {srv_name}\n{r}");
            let rec = &r.answers()[0];
            assert_eq!(lc(&rec.name), *srv_name, "{r}");
            assert_eq!(rec.ttl, 42, "{r}");
            let RData::SRV(srv) = &rec.data else {
                panic!("not an SRV:\n{r}")
            };
            assert_eq!(srv.port, *port, "{r}");
            assert_eq!(lc(&srv.target), *target, "{p:?} {srv_name}: target\n{r}");
            let t = s.ask(p, &lc(&srv.target), RecordType::A);
            assert_eq!(t.rcode(), NOERROR, "{t}");
            assert!(
                t.cnames().is_empty(),
                "SRV target must not be an alias\n{t}"
            );
            assert!(!t.a().is_empty(), "SRV target must own addresses\n{t}");
        }
        // A port that does not exist, and SRV for an unknown protocol label: NXDOMAIN.
        for n in [format!("_nope._tcp.{G}"), format!("_http._udp.{G}")] {
            assert_negative(
                &s.ask(p, &n, RecordType::SRV),
                NXDOMAIN,
                "example.com.",
                30,
                &n,
            );
        }
    }
}

/// NXDOMAIN + SOA for undefined names, NODATA + SOA for empty non-terminals and missing types;
/// negative TTL = min(SOA TTL, SOA MINIMUM) (30 in example.com, 20 in example.org).
#[test]
fn negative_answers_carry_the_soa_with_the_negative_ttl() {
    let fx = Fixture::new(FED_MAIN, "");
    let s = fx.start();
    for p in BOTH {
        for n in [
            "nope.example.com.",
            "nosuchsvc.shop.myfed.svc.example.com.",
            "deeper.checkout.shop.myfed.svc.example.com.",
            "checkout.shop.myfed.svc.nowhere.example.com.",
            "a.b.c.mail.example.com.",
        ] {
            assert_negative(
                &s.ask(p, n, RecordType::A),
                NXDOMAIN,
                "example.com.",
                30,
                &format!("{p:?} {n}"),
            );
        }
        // Empty non-terminals: NOERROR / NODATA.
        for n in [
            "shop.myfed.svc.example.com.",
            "myfed.svc.example.com.",
            "svc.example.com.",
            "us-east1.example.com.",
            "us-east1-b.us-east1.example.com.",
            "shop.myfed.svc.us-west2.example.com.",
        ] {
            for t in [RecordType::A, RecordType::TXT] {
                assert_negative(
                    &s.ask(p, n, t),
                    NOERROR,
                    "example.com.",
                    30,
                    &format!("{p:?} ENT {n} {t}"),
                );
            }
        }
        // Existing names without the asked type.
        for (n, t) in [
            (G, RecordType::TXT),
            (G, RecordType::MX),
            (R_EAST, RecordType::SRV),
            ("mail.example.com.", RecordType::AAAA),
            ("example.com.", RecordType::A),
        ] {
            assert_negative(
                &s.ask(p, n, t),
                NOERROR,
                "example.com.",
                30,
                &format!("{p:?} {n} {t}"),
            );
        }
        // The other zone: SOA TTL 20 < MINIMUM 300.
        assert_negative(
            &s.ask(p, "nope.example.org.", RecordType::A),
            NXDOMAIN,
            "example.org.",
            20,
            &format!("{p:?} nope.example.org"),
        );
        assert_negative(
            &s.ask(p, "example.org.", RecordType::MX),
            NOERROR,
            "example.org.",
            20,
            &format!("{p:?} example.org MX"),
        );
    }
}

/// Names outside every served zone: REFUSED, AA clear, nothing in any section.
#[test]
fn names_outside_served_zones_are_refused_without_aa() {
    let fx = Fixture::new(FED_MAIN, "");
    let s = fx.start();
    for p in BOTH {
        for (n, t) in [
            ("example.net.", RecordType::A),
            ("checkout.shop.myfed.svc.example.net.", RecordType::A),
            ("xexample.com.", RecordType::A),
            ("com.", RecordType::NS),
            (".", RecordType::NS),
            ("org.", RecordType::SOA),
        ] {
            let r = s.ask(p, n, t);
            assert_eq!(r.rcode(), REFUSED, "{p:?} {n}\n{r}");
            assert!(!r.aa(), "{p:?} {n}: AA must be clear on REFUSED\n{r}");
            assert!(r.answers().is_empty(), "{r}");
            assert!(r.msg.authorities.is_empty(), "{r}");
        }
    }
}

/// Matching ignores case; the question comes back in the case it was sent.
#[test]
fn matching_is_case_insensitive_and_the_question_keeps_its_case() {
    let fx = Fixture::new(FED_MAIN, "");
    let s = fx.start();
    for p in BOTH {
        let mixed = "CheckOut.SHOP.myfed.SVC.Example.COM.";
        let r = s.ask(p, mixed, RecordType::A);
        assert_eq!(r.rcode(), NOERROR, "{r}");
        assert!(r.aa(), "{r}");
        assert_eq!(r.a(), v4set(&["203.0.113.10", "198.51.100.20"]), "{r}");
        // check_envelope compared the question bytes; hickory sees the same case.
        assert!(r.msg.queries[0].name().eq_case(&name(mixed)), "{r}");
        for rec in r.answers() {
            assert_eq!(lc(&rec.name), G, "{r}");
            assert_eq!(rec.ttl, 42);
        }
        let r = s.ask(
            p,
            "US-WEST2-B.checkout.SHOP.myfed.svc.EXAMPLE.com.",
            RecordType::A,
        );
        assert_eq!(r.rcode(), NXDOMAIN, "{r}");
        let r = s.ask(
            p,
            "Checkout.Shop.Myfed.Svc.US-WEST2-B.Us-West2.Example.Com.",
            RecordType::A,
        );
        assert_eq!(r.cnames().len(), 1, "{r}");
        assert_eq!(r.a(), v4set(&["198.51.100.20"]), "{r}");
        let r = s.ask(p, "NoPe.ExAmPlE.CoM.", RecordType::A);
        assert_negative(&r, NXDOMAIN, "example.com.", 30, "mixed-case NXDOMAIN");
        let r = s.ask(p, "MAIL.EXAMPLE.COM.", RecordType::A);
        assert_eq!(r.a(), v4set(&["192.0.2.25"]), "{r}");
    }
}

/// Zone-file records are served as written: SOA, NS, MX, TXT, static A, and a static CNAME
/// into a federated name chased to its A records (also across zones).
#[test]
fn zone_file_records_are_served_and_static_cnames_are_chased() {
    let fx = Fixture::new(FED_MAIN, "");
    let s = fx.start();
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    for p in BOTH {
        let r = s.ask(p, "example.com.", RecordType::SOA);
        assert_eq!(r.rcode(), NOERROR, "{r}");
        assert!(r.aa());
        assert_eq!(r.answers().len(), 1, "{r}");
        assert_eq!(r.answers()[0].ttl, 3600, "{r}");
        let RData::SOA(soa) = &r.answers()[0].data else {
            panic!("{r}")
        };
        assert_eq!(lc(&soa.mname), "ns1.example.com.");
        assert_eq!(lc(&soa.rname), "hostmaster.example.com.");
        assert_eq!(soa.minimum, 30);
        assert!(
            soa.serial as u64 >= started - 60,
            "serial {} should be at least the Unix time",
            soa.serial
        );

        let r = s.ask(p, "example.com.", RecordType::NS);
        assert_eq!(r.rcode(), NOERROR, "{r}");
        assert!(r.aa());
        let ns: BTreeSet<String> = r
            .answers()
            .iter()
            .filter_map(|rec| match &rec.data {
                RData::NS(n) => Some(lc(&n.0)),
                _ => None,
            })
            .collect();
        assert_eq!(
            ns,
            BTreeSet::from(["ns1.example.com.".into(), "ns2.example.com.".into()]),
            "{r}"
        );

        let r = s.ask(p, "example.com.", RecordType::MX);
        assert_eq!(r.answers().len(), 1, "{r}");
        let RData::MX(mx) = &r.answers()[0].data else {
            panic!("{r}")
        };
        assert_eq!(
            (mx.preference, lc(&mx.exchange)),
            (10, "mail.example.com.".into())
        );
        assert_eq!(r.answers()[0].ttl, 3600);

        let r = s.ask(p, "example.com.", RecordType::TXT);
        assert_eq!(r.answers().len(), 1, "{r}");
        let RData::TXT(txt) = &r.answers()[0].data else {
            panic!("{r}")
        };
        assert_eq!(&*txt.txt_data[0], b"v=spf1 mx -all");

        assert_addresses(
            &s.ask(p, "mail.example.com.", RecordType::A),
            "mail.example.com.",
            3600,
            &["192.0.2.25"],
            &[],
            "mail A",
        );

        // Static CNAME into a federated name, chased.
        let r = s.ask(p, "www.example.com.", RecordType::A);
        assert_eq!(r.rcode(), NOERROR, "{r}");
        assert!(r.aa());
        assert_eq!(
            r.cnames(),
            vec![("www.example.com.".to_string(), G.to_string())],
            "{r}"
        );
        assert_eq!(r.answers()[0].ttl, 3600, "static CNAME keeps its TTL\n{r}");
        assert_eq!(r.a(), v4set(&["203.0.113.10", "198.51.100.20"]), "{r}");
        assert!(
            r.answers()
                .iter()
                .filter(|x| x.record_type() == RecordType::A)
                .all(|x| x.ttl == 42 && lc(&x.name) == G),
            "{r}"
        );
        let r = s.ask(p, "www.example.com.", RecordType::AAAA);
        assert_eq!(r.aaaa(), v6set(&["2001:db8:10::10"]), "{r}");

        // Two-step static chain, and a chain from another served zone.
        let r = s.ask(p, "alias.example.com.", RecordType::A);
        assert_eq!(
            r.cnames(),
            vec![
                (
                    "alias.example.com.".to_string(),
                    "www.example.com.".to_string()
                ),
                ("www.example.com.".to_string(), G.to_string())
            ],
            "{r}"
        );
        assert_eq!(r.a(), v4set(&["203.0.113.10", "198.51.100.20"]), "{r}");
        let r = s.ask(p, "shop.example.org.", RecordType::A);
        assert_eq!(r.cnames().len(), 1, "{r}");
        assert_eq!(r.a(), v4set(&["203.0.113.10", "198.51.100.20"]), "{r}");

        // The alias exists but its target has no TXT: CNAME, then NODATA with the SOA.
        let r = s.ask(p, "www.example.com.", RecordType::TXT);
        assert_eq!(r.rcode(), NOERROR, "{r}");
        assert_eq!(r.cnames().len(), 1, "{r}");
        assert_eq!(r.answers().len(), 1, "{r}");
        assert!(r.authority_soa().is_some(), "{r}");
    }
}

// ------------------------------------------------------------------------------------------
// 2. Unhealthy shards
// ------------------------------------------------------------------------------------------

/// A shard with `ready_endpoints: 0` and one without addresses never contribute an answer.
#[test]
fn unhealthy_shards_never_appear_in_any_answer() {
    let fx = Fixture::new(FED_MAIN, "");
    let s = fx.start();
    let names = [
        G,
        R_EAST,
        R_WEST,
        R_EU,
        Z_EAST_B,
        Z_EAST_C,
        Z_WEST_A,
        Z_WEST_B,
        Z_EU_A,
        PAYMENTS,
        "payments.billing.myfed.svc.us-west2.example.com.",
        "payments.billing.myfed.svc.us-west2-a.us-west2.example.com.",
        "www.example.com.",
    ];
    let unready: BTreeSet<Ipv4Addr> = v4set(&["192.0.2.30", "198.51.100.40"]);
    let mut seen = BTreeSet::new();
    for p in BOTH {
        for n in names {
            for t in [RecordType::A, RecordType::AAAA, RecordType::ANY] {
                let r = s.ask(p, n, t);
                assert_ne!(r.rcode(), NXDOMAIN, "{n} {t}\n{r}");
                for ip in r.a() {
                    assert!(!unready.contains(&ip), "unready {ip} served for {n}\n{r}");
                    seen.insert(ip);
                }
            }
        }
    }
    assert_eq!(seen, v4set(&["203.0.113.10", "198.51.100.20"]));
    // The zone whose only shard is unready answers with the region's addresses, through a
    // CNAME; the region whose only shard has no address falls back to the global name.
    let r = s.ask(Proto::Udp, Z_WEST_B, RecordType::A);
    assert_eq!(r.cnames().len(), 1, "{r}");
    let r = s.ask(Proto::Udp, R_EU, RecordType::A);
    assert_eq!(r.cnames().len(), 1, "{r}");
}

// ------------------------------------------------------------------------------------------
// 3. Answer cap and rotation
// ------------------------------------------------------------------------------------------

const FED_ROTATE: &str = r#"federation: {name: myfed, zone: example.com, ttl: 42, max_answers: 8}
clusters:
  - {name: c1, region: r1, zones: [r1-a]}
  - {name: c2, region: r1, zones: [r1-a]}
  - {name: c3, region: r2, zones: [r2-a]}
services:
  - name: web
    namespace: shop
    shards:
      - {cluster: c1, addresses: [10.1.0.1, 10.1.0.2, 10.1.0.3, 10.1.0.4], ready_endpoints: 1}
      - {cluster: c2, addresses: [10.1.0.5, 10.1.0.6, 10.1.0.7, 10.1.0.8], ready_endpoints: 1}
      - {cluster: c3, addresses: [10.1.0.9, 10.1.0.10, 10.1.0.11, 10.1.0.12, "2001:db8::1", "2001:db8::2"], ready_endpoints: 4}
      - {cluster: c3, addresses: [10.9.9.9], ready_endpoints: 0}
"#;
const WEB: &str = "web.shop.myfed.svc.example.com.";

fn all_web_addresses() -> BTreeSet<Ipv4Addr> {
    (1..=12).map(|i| Ipv4Addr::new(10, 1, 0, i)).collect()
}

/// 12 healthy addresses and `max_answers: 8`: every answer has exactly 8 distinct A records;
/// over 30 queries the first record varies and all 12 addresses show up.
#[test]
fn answers_are_capped_at_max_answers_and_rotate() {
    let fx = Fixture::new(FED_ROTATE, "");
    let s = fx.start();
    let all = all_web_addresses();
    let mut firsts = BTreeSet::new();
    let mut union = BTreeSet::new();
    let sock = udp_socket();
    for _ in 0..30 {
        let req = query(WEB, RecordType::A, None);
        let raw = udp_exchange(&sock, s.udp, &req);
        check_envelope(&req, &raw);
        let r = Resp::parse(raw);
        let list = r.a_list();
        assert_eq!(list.len(), 8, "exactly max_answers records\n{r}");
        assert_eq!(r.answers().len(), 8, "{r}");
        let set: BTreeSet<_> = list.iter().copied().collect();
        assert_eq!(set.len(), 8, "no duplicates\n{r}");
        assert!(set.is_subset(&all), "only healthy addresses\n{r}");
        firsts.insert(list[0]);
        union.extend(set);
    }
    assert!(
        firsts.len() > 1,
        "the first record never changed: {firsts:?}"
    );
    assert_eq!(union, all, "every healthy address must show up");
    // Under the cap: all of them, every time.
    let r = s.ask(Proto::Udp, WEB, RecordType::AAAA);
    assert_eq!(r.aaaa(), v6set(&["2001:db8::1", "2001:db8::2"]), "{r}");
    // Region r1 has exactly 8.
    let r = s.ask(
        Proto::Udp,
        "web.shop.myfed.svc.r1.example.com.",
        RecordType::A,
    );
    assert_eq!(
        r.a(),
        (1..=8).map(|i| Ipv4Addr::new(10, 1, 0, i)).collect(),
        "{r}"
    );
}

/// Clients that open one TCP connection per query (most stub resolvers after TC=1) must see
/// the rotation as well.
#[test]
fn rotation_also_applies_across_tcp_connections() {
    let fx = Fixture::new(FED_ROTATE, "");
    let s = fx.start();
    let mut firsts = BTreeSet::new();
    let mut union = BTreeSet::new();
    for _ in 0..30 {
        let r = s.ask(Proto::Tcp, WEB, RecordType::A); // a new connection each time
        let list = r.a_list();
        assert_eq!(list.len(), 8, "{r}");
        firsts.insert(list[0]);
        union.extend(list);
    }
    assert!(
        firsts.len() > 1,
        "over 30 TCP connections the first record was always {firsts:?}: answers do not rotate for one-query-per-connection TCP clients"
    );
    assert_eq!(union, all_web_addresses());
}

// ------------------------------------------------------------------------------------------
// 4. EDNS
// ------------------------------------------------------------------------------------------

/// OPT echoed (payload 1232, DO echoed) when the query has one, absent otherwise; EDNS
/// version 1 gets BADVERS (extended rcode 16) with an OPT.
#[test]
fn edns_opt_is_echoed_and_unknown_versions_get_badvers() {
    let fx = Fixture::new(FED_MAIN, "");
    let s = fx.start();
    for p in BOTH {
        let r = s.ask(p, G, RecordType::A);
        assert!(r.msg.edns.is_none(), "no OPT without EDNS\n{r}");
        assert_eq!(r.arcount(), 0, "{r}");

        for payload in [512u16, 1232, 4096] {
            let r = s.ask_edns(p, G, RecordType::A, payload);
            assert_eq!(r.rcode(), NOERROR, "{r}");
            let e = r
                .msg
                .edns
                .as_ref()
                .unwrap_or_else(|| panic!("{p:?} OPT missing\n{r}"));
            assert_eq!(e.max_payload(), 1232, "{r}");
            assert_eq!(e.version(), 0);
            assert!(!e.flags().dnssec_ok, "DO must not be set unasked");
            assert_eq!(r.a().len(), 2, "{r}");
        }
        // Negative answers keep the OPT too.
        let r = s.ask_edns(p, "nope.example.com.", RecordType::A, 1232);
        assert_eq!(r.rcode(), NXDOMAIN, "{r}");
        assert!(r.msg.edns.is_some(), "{r}");

        // DO bit echoed.
        let mut e = edns(1232);
        e.set_dnssec_ok(true);
        let r = s.exchange(p, &query(G, RecordType::A, Some(e)));
        assert!(r.msg.edns.as_ref().unwrap().flags().dnssec_ok, "{r}");

        // EDNS version 1: BADVERS = 16, low 4 bits in the header (0), high 8 bits in the OPT.
        let mut e = edns(1232);
        e.set_version(1);
        let r = s.exchange(p, &query(G, RecordType::A, Some(e)));
        assert_eq!(r.rcode(), BADVERS, "{p:?} extended rcode\n{r}");
        assert_eq!(r.raw[3] & 0x0f, 0, "header rcode bits of BADVERS");
        let opt = r
            .msg
            .edns
            .as_ref()
            .unwrap_or_else(|| panic!("BADVERS needs an OPT\n{r}"));
        assert_eq!(opt.rcode_high(), 1, "{r}");
        assert_eq!(opt.version(), 0, "we speak version 0\n{r}");
        assert!(r.answers().is_empty(), "{r}");
    }
}

// ------------------------------------------------------------------------------------------
// 5. Truncation
// ------------------------------------------------------------------------------------------

fn fed_big() -> String {
    let addrs = |prefix: &str, n: usize| -> String {
        (1..=n)
            .map(|i| format!("\"2001:db8:{prefix}::{i:x}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "federation: {{name: myfed, zone: example.com, ttl: 42, max_answers: 64}}\nclusters:\n  - {{name: c1, region: r1, zones: [r1-a]}}\nservices:\n  - name: medium\n    namespace: shop\n    shards:\n      - {{cluster: c1, ready_endpoints: 1, addresses: [{}]}}\n  - name: big\n    namespace: shop\n    shards:\n      - {{cluster: c1, ready_endpoints: 1, addresses: [{}]}}\n",
        addrs("a", 40),
        addrs("b", 60)
    )
}

/// Over 512 bytes without EDNS → TC=1, no records; TCP gives it all. EDNS 4096 is capped at our
/// 1232 (TC=1 when larger), and the OPT is kept in a truncated response.
#[test]
fn large_answers_truncate_over_udp_and_complete_over_tcp() {
    let fx = Fixture::new(&fed_big(), "");
    let s = fx.start();
    let medium = "medium.shop.myfed.svc.example.com.";
    let big = "big.shop.myfed.svc.example.com.";
    let before = metric(&s.metrics(), "fedns_truncated_total").unwrap_or(0.0);

    // ~1.2 kB answer, no EDNS: truncated over UDP...
    let r = s.ask(Proto::Udp, medium, RecordType::AAAA);
    assert!(r.tc(), "TC expected\n{r}");
    assert!(
        r.answers().is_empty() && r.msg.authorities.is_empty(),
        "{r}"
    );
    assert!(r.raw.len() <= 512, "{} bytes", r.raw.len());
    assert!(r.msg.edns.is_none(), "{r}");
    assert_eq!(r.rcode(), NOERROR);
    // ...and complete over TCP.
    let r = s.ask(Proto::Tcp, medium, RecordType::AAAA);
    assert!(!r.tc(), "{r}");
    assert_eq!(r.aaaa_list().len(), 40, "{r}");
    // With EDNS 4096 it fits into our 1232.
    let r = s.ask_edns(Proto::Udp, medium, RecordType::AAAA, 4096);
    assert!(!r.tc(), "fits in 1232\n{r}");
    assert_eq!(r.aaaa_list().len(), 40);
    assert!(r.raw.len() <= 1232, "{} bytes", r.raw.len());
    // EDNS 512: truncated, OPT kept.
    let r = s.ask_edns(Proto::Udp, medium, RecordType::AAAA, 512);
    assert!(r.tc(), "{r}");
    assert!(r.msg.edns.is_some(), "OPT kept with TC\n{r}");
    assert!(r.raw.len() <= 512);

    // ~1.8 kB: more than 1232 even though the client offers 4096.
    for payload in [4096u16, 1232, 1500] {
        let r = s.ask_edns(Proto::Udp, big, RecordType::AAAA, payload);
        assert!(r.tc(), "payload {payload}: TC expected\n{r}");
        assert!(r.answers().is_empty(), "{r}");
        assert!(r.raw.len() <= 1232, "{} bytes", r.raw.len());
        let e = r.msg.edns.as_ref().expect("OPT kept with TC");
        assert_eq!(e.max_payload(), 1232);
    }
    let r = s.ask_edns(Proto::Tcp, big, RecordType::AAAA, 4096);
    assert!(!r.tc(), "{r}");
    assert_eq!(r.aaaa_list().len(), 60, "{r}");
    assert!(r.msg.edns.is_some());
    let r = s.ask(Proto::Tcp, big, RecordType::AAAA);
    assert_eq!(r.aaaa_list().len(), 60, "{r}");

    let after = metric(&s.metrics(), "fedns_truncated_total").unwrap_or(0.0);
    assert!(
        after - before >= 5.0,
        "fedns_truncated_total {before} -> {after}"
    );
}

// ------------------------------------------------------------------------------------------
// 6. TCP
// ------------------------------------------------------------------------------------------

/// Three queries written back to back on one connection get three answers with their IDs;
/// the connection stays usable afterwards.
#[test]
fn tcp_pipelined_queries_on_one_connection() {
    let fx = Fixture::new(FED_MAIN, "");
    let s = fx.start();
    let mut c = tcp_connect(s.tcp);
    let qs = [
        (query(G, RecordType::A, None), NOERROR, 2usize),
        (query(G, RecordType::AAAA, None), NOERROR, 1),
        (query("nope.example.com.", RecordType::A, None), NXDOMAIN, 0),
    ];
    let mut all = Vec::new();
    for (q, _, _) in &qs {
        all.extend(frame(q));
    }
    c.write_all(&all).unwrap(); // one write: pipelined
    let mut seen = HashSet::new();
    for _ in 0..qs.len() {
        let raw = tcp_recv(&mut c);
        let (q, rcode, n) = qs
            .iter()
            .find(|(q, _, _)| q[..2] == raw[..2])
            .unwrap_or_else(|| panic!("answer with an unknown ID {:?}", &raw[..2]));
        check_envelope(q, &raw);
        let r = Resp::parse(raw);
        assert_eq!(r.rcode(), *rcode, "{r}");
        assert_eq!(r.answers().len(), *n, "{r}");
        assert!(seen.insert(r.msg.metadata.id), "ID answered twice");
    }
    assert_eq!(seen.len(), 3);
    // Still open for more.
    let q = query(R_EAST, RecordType::A, None);
    tcp_send(&mut c, &q);
    let raw = tcp_recv(&mut c);
    check_envelope(&q, &raw);
    assert_eq!(Resp::parse(raw).a(), v4set(&["203.0.113.10"]));
}

/// Reads until EOF/reset (Ok(true)) or timeout (Ok(false)); panics on data.
fn closed_within(c: &mut TcpStream, timeout: Duration) -> bool {
    c.set_read_timeout(Some(timeout)).unwrap();
    let mut b = [0u8; 512];
    match c.read(&mut b) {
        Ok(0) => true,
        Ok(n) => panic!("unexpected {n} bytes from the server"),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => false,
        Err(_) => true, // reset
    }
}

/// With `idle_timeout_secs: 1` an idle connection is closed after about a second, whether it
/// sent a query before or nothing at all.
#[test]
fn tcp_idle_connections_are_closed() {
    let fx = Fixture::new(FED_MAIN, "tcp:\n  idle_timeout_secs: 1\n");
    let s = fx.start();
    let mut c = tcp_connect(s.tcp);
    let mut silent = tcp_connect(s.tcp);
    let q = query(G, RecordType::A, None);
    tcp_send(&mut c, &q);
    let raw = tcp_recv(&mut c);
    check_envelope(&q, &raw);
    let t0 = Instant::now();
    assert!(
        closed_within(&mut c, Duration::from_secs(5)),
        "connection still open 5 s after its last query"
    );
    let idle = t0.elapsed();
    assert!(
        idle >= Duration::from_millis(700),
        "closed too early ({idle:?}) for a 1 s idle timeout"
    );
    assert!(
        closed_within(&mut silent, Duration::from_secs(3)),
        "silent connection not closed"
    );
    // New connections are still served.
    let r = s.ask(Proto::Tcp, G, RecordType::A);
    assert_eq!(r.a().len(), 2);
}

/// With `max_connections: 2` a third connection is served, and the longest-idle of the first two
/// is closed to make room (RFC 7766 §6.2: new clients are not shut out by idle ones).
#[test]
fn tcp_connection_cap_closes_the_longest_idle_connection() {
    let fx = Fixture::new(FED_MAIN, "tcp:\n  max_connections: 2\n");
    let s = fx.start();
    let ask_on = |c: &mut TcpStream| {
        let q = query(G, RecordType::A, None);
        tcp_send(c, &q);
        let raw = tcp_recv(c);
        check_envelope(&q, &raw);
        assert_eq!(Resp::parse(raw).a().len(), 2);
    };
    let mut c1 = tcp_connect(s.tcp);
    let mut c2 = tcp_connect(s.tcp);
    ask_on(&mut c1);
    std::thread::sleep(Duration::from_millis(20));
    ask_on(&mut c2);
    std::thread::sleep(Duration::from_millis(20));
    // c1 has been idle longest: the third connection closes it and is answered.
    let mut c3 = tcp_connect(s.tcp);
    ask_on(&mut c3);
    assert!(
        closed_within(&mut c1, Duration::from_secs(3)),
        "the longest-idle connection was not closed"
    );
    ask_on(&mut c2);
    ask_on(&mut c3);
    let evicted = wait_for(Duration::from_secs(2), || {
        let m = metric(
            &s.http_get("/metrics").1,
            "fedns_tcp_evicted_total{reason=\"cap\"}",
        )?;
        (m >= 1.0).then_some(m)
    });
    assert_eq!(evicted, Some(1.0), "{}", s.http_get("/metrics").1);
}

// ------------------------------------------------------------------------------------------
// 7. Malformed packets
// ------------------------------------------------------------------------------------------

fn header(id: u16, flags: u16, qd: u16, an: u16, ns: u16, ar: u16) -> Vec<u8> {
    let mut h = Vec::with_capacity(12);
    for v in [id, flags, qd, an, ns, ar] {
        h.extend_from_slice(&v.to_be_bytes());
    }
    h
}

fn wire_name(n: &str) -> Vec<u8> {
    let mut w = Vec::new();
    for l in n.trim_end_matches('.').split('.').filter(|l| !l.is_empty()) {
        w.push(l.len() as u8);
        w.extend_from_slice(l.as_bytes());
    }
    w.push(0);
    w
}

const TYPE_A_IN: [u8; 4] = [0, 1, 0, 1];

/// Sends `bad`, then a valid query on the same socket. If `expect` is `Some(rcode)`, the first
/// datagram back must be the answer to `bad` with that rcode (ID, QR and opcode checked);
/// if `None`, the first datagram back must already be the valid query's answer (the server
/// answers a socket's datagrams in order, so an answer to `bad` would have come first), and
/// nothing else may follow.
fn probe(s: &Server, bad: &[u8], expect: Option<u16>, what: &str) {
    let sock = udp_socket();
    sock.send_to(bad, s.udp).unwrap();
    if let Some(rcode) = expect {
        let resp = udp_recv(&sock, s.udp, Duration::from_secs(2))
            .unwrap_or_else(|| panic!("{what}: no response"));
        assert!(resp.len() >= 12, "{what}: {resp:?}");
        assert_eq!(resp[..2], bad[..2], "{what}: ID");
        assert_ne!(resp[2] & 0x80, 0, "{what}: QR");
        assert_eq!(resp[2] & 0x78, bad[2] & 0x78, "{what}: opcode echoed");
        assert_eq!((resp[3] & 0x0f) as u16, rcode, "{what}: rcode, {resp:?}");
        if rcode == FORMERR || rcode == NOTIMP {
            assert_eq!(resp[2] & 0x04, 0, "{what}: AA must be clear");
            let an = u16::from_be_bytes([resp[6], resp[7]]);
            let ns = u16::from_be_bytes([resp[8], resp[9]]);
            assert_eq!(an + ns, 0, "{what}: no records in an error response");
        }
    }
    let good = query(G, RecordType::A, None);
    sock.send_to(&good, s.udp).unwrap();
    let resp = udp_recv(&sock, s.udp, Duration::from_secs(2))
        .unwrap_or_else(|| panic!("{what}: the server stopped answering"));
    assert_eq!(
        resp[..2],
        good[..2],
        "{what}: got a response to a packet that must be dropped"
    );
    check_envelope(&good, &resp);
    assert_eq!(Resp::parse(resp).a().len(), 2, "{what}");
    assert!(
        udp_recv(&sock, s.udp, Duration::from_millis(150)).is_none(),
        "{what}: unexpected extra datagram"
    );
}

#[test]
fn malformed_packets_get_formerr_notimp_or_nothing() {
    let fx = Fixture::new(FED_MAIN, "");
    let mut s = fx.start();
    let gname = wire_name(G);
    let q = |id: u16, flags: u16, name: &[u8], tail: &[u8]| -> Vec<u8> {
        let mut p = header(id, flags, 1, 0, 0, 0);
        p.extend_from_slice(name);
        p.extend_from_slice(tail);
        p
    };

    probe(&s, &[0x12, 0x34, 0x01, 0x00, 0x00], None, "5-byte header");
    probe(&s, &[], None, "empty datagram");
    probe(
        &s,
        &header(0x2001, 0x0100, 0, 0, 0, 0),
        Some(FORMERR),
        "QDCOUNT 0",
    );
    let mut two = header(0x2002, 0x0100, 2, 0, 0, 0);
    for _ in 0..2 {
        two.extend_from_slice(&gname);
        two.extend_from_slice(&TYPE_A_IN);
    }
    probe(&s, &two, Some(FORMERR), "QDCOUNT 2");
    // Compression pointers in the question: to itself, and a two-step loop.
    probe(
        &s,
        &q(0x2003, 0, &[0xc0, 0x0c], &TYPE_A_IN),
        Some(FORMERR),
        "pointer to itself",
    );
    probe(
        &s,
        &q(0x2004, 0, &[1, b'a', 0xc0, 0x0c], &TYPE_A_IN),
        Some(FORMERR),
        "pointer loop",
    );
    // Label length bytes 0x40..0xBF (64+ or the obsolete extended label types).
    for (i, first) in [0x40u8, 0x41, 0x7f, 0x80, 0xbf].into_iter().enumerate() {
        let mut n = vec![first];
        n.extend(std::iter::repeat_n(b'a', 70));
        n.push(0);
        probe(
            &s,
            &q(0x2010 + i as u16, 0, &n, &TYPE_A_IN),
            Some(FORMERR),
            &format!("label length byte {first:#x}"),
        );
    }
    // Name length: 255 bytes is the maximum and legal (NXDOMAIN), 256 is FORMERR.
    let long = |last: usize| {
        let mut n = Vec::new();
        for _ in 0..3 {
            n.push(63);
            n.extend(std::iter::repeat_n(b'x', 63));
        }
        n.push(last as u8);
        n.extend(std::iter::repeat_n(b'y', last));
        n.extend_from_slice(&wire_name("example.com."));
        n
    };
    assert_eq!(long(49).len(), 255);
    probe(
        &s,
        &q(0x2020, 0, &long(49), &TYPE_A_IN),
        Some(NXDOMAIN),
        "255-byte name",
    );
    assert_eq!(long(50).len(), 256);
    probe(
        &s,
        &q(0x2021, 0, &long(50), &TYPE_A_IN),
        Some(FORMERR),
        "256-byte name",
    );
    let mut huge = Vec::new();
    for _ in 0..5 {
        huge.push(63);
        huge.extend(std::iter::repeat_n(b'z', 63));
    }
    huge.push(0);
    probe(
        &s,
        &q(0x2022, 0, &huge, &TYPE_A_IN),
        Some(FORMERR),
        "321-byte name",
    );
    // Question cut short: in the type/class, and in the middle of the name.
    probe(
        &s,
        &q(0x2030, 0, &gname, &[0, 1]),
        Some(FORMERR),
        "no qclass",
    );
    probe(&s, &q(0x2031, 0, &gname, &[]), Some(FORMERR), "no qtype");
    probe(
        &s,
        &q(0x2032, 0, &gname[..10], &[]),
        Some(FORMERR),
        "name cut short",
    );
    probe(
        &s,
        &q(0x2033, 0, &[5, b'a'], &[]),
        Some(FORMERR),
        "label overruns",
    );
    // Records announced but missing.
    let mut p = header(0x2034, 0, 1, 0, 0, 1);
    p.extend_from_slice(&gname);
    p.extend_from_slice(&TYPE_A_IN);
    probe(&s, &p, Some(FORMERR), "ARCOUNT 1 with nothing");
    // Two OPT records.
    let mut p = header(0x2035, 0, 1, 0, 0, 2);
    p.extend_from_slice(&gname);
    p.extend_from_slice(&TYPE_A_IN);
    for _ in 0..2 {
        p.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0]);
    }
    probe(&s, &p, Some(FORMERR), "two OPT records");
    // Unknown opcodes (3: unassigned, 5: UPDATE, 4: NOTIFY) get NOTIMP.
    for (i, op) in [3u16, 5, 4, 15].into_iter().enumerate() {
        probe(
            &s,
            &q(0x2040 + i as u16, op << 11, &gname, &TYPE_A_IN),
            Some(NOTIMP),
            &format!("opcode {op}"),
        );
    }
    // Responses (QR=1) are never answered.
    probe(&s, &q(0x2050, 0x8000, &gname, &TYPE_A_IN), None, "QR=1");
    probe(
        &s,
        &header(0x2051, 0x8400, 0, 0, 0, 0),
        None,
        "QR=1 header only",
    );

    // The same malformed packets over TCP get the same answers.
    let mut c = tcp_connect(s.tcp);
    for (p, rcode) in [
        (header(0x2060, 0, 0, 0, 0, 0), FORMERR),
        (q(0x2061, 0, &[0xc0, 0x0c], &TYPE_A_IN), FORMERR),
        (q(0x2062, 5 << 11, &gname, &TYPE_A_IN), NOTIMP),
    ] {
        tcp_send(&mut c, &p);
        let resp = tcp_recv(&mut c);
        assert_eq!(resp[..2], p[..2]);
        assert_eq!((resp[3] & 0x0f) as u16, rcode);
    }
    assert!(s.is_running(), "fedns died:\n{}", s.log_text());
}

/// Records after the question are checked (FORMERR when malformed), TSIG with a key we do not
/// hold is NOTAUTH, full-size UDP queries are read whole, and TCP frames that are not queries
/// close the connection at once.
#[test]
fn strict_parsing_full_size_udp_and_tcp_non_queries() {
    let fx = Fixture::new(FED_MAIN, "");
    let mut s = fx.start();
    let gname = wire_name(G);
    let with = |id: u16, an: u16, ns: u16, ar: u16, tail: &[u8]| -> Vec<u8> {
        let mut p = header(id, 0x0100, 1, an, ns, ar);
        p.extend_from_slice(&gname);
        p.extend_from_slice(&TYPE_A_IN);
        p.extend_from_slice(tail);
        p
    };
    let opt = [0u8, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0];
    let at = (12 + gname.len() + 4) as u8;
    probe(
        &s,
        &with(0x3001, 1, 0, 0, &opt),
        Some(FORMERR),
        "OPT in answer",
    );
    probe(
        &s,
        &with(0x3002, 0, 1, 0, &opt),
        Some(FORMERR),
        "OPT in authority",
    );
    let self_ptr = [0xc0, at, 0, 1, 0, 1, 0, 0, 0, 0, 0, 4, 1, 2, 3, 4];
    probe(
        &s,
        &with(0x3003, 0, 0, 1, &self_ptr),
        Some(FORMERR),
        "self pointer",
    );
    let short_rrsig = [0u8, 0, 46, 0, 1, 0, 0, 0, 0, 0, 4, 0, 1, 8, 2];
    probe(
        &s,
        &with(0x3004, 0, 0, 1, &short_rrsig),
        Some(FORMERR),
        "short RRSIG",
    );
    // TSIG signed with a key we do not have: NOTAUTH (RFC 8945 §5.2), the TSIG last.
    let mut tsig = b"\x03key\x00\x00\xfa\x00\xff\x00\x00\x00\x00".to_vec();
    let mut rd = b"\x0bhmac-sha256\x00".to_vec();
    rd.extend_from_slice(&[
        0, 0, 0x65, 0, 0, 0, 1, 44, 0, 4, 9, 9, 9, 9, 0x30, 0x05, 0, 0, 0, 0,
    ]);
    tsig.extend_from_slice(&(rd.len() as u16).to_be_bytes());
    tsig.extend_from_slice(&rd);
    let signed = with(0x3005, 0, 0, 1, &tsig);
    probe(&s, &signed, Some(9), "TSIG with an unknown key");
    let resp = udp_exchange(&udp_socket(), s.udp, &signed);
    assert_eq!(
        u16::from_be_bytes([resp[10], resp[11]]),
        1,
        "TSIG in additional"
    );
    assert!(
        resp.ends_with(&[0x30, 0x05, 0, 17, 0, 0]),
        "BADKEY: {resp:02x?}"
    );
    // Counted under its own rcode label, not "other".
    let m = s.metrics();
    assert!(
        m.lines()
            .any(|l| l.starts_with("fedns_responses_total{") && l.contains("rcode=\"NOTAUTH\"")),
        "{m}"
    );
    let mut bad_tsig = tsig.clone();
    bad_tsig[6] = 1; // class IN
    probe(
        &s,
        &with(0x3006, 0, 0, 1, &bad_tsig),
        Some(FORMERR),
        "TSIG of class IN",
    );

    // Full-size UDP queries: EDNS padding (option 12) makes them 4,949 and 60,000 bytes.
    for size in [4949usize, 60_000] {
        let base = 12 + gname.len() + 4 + 11 + 4;
        let pad = size - base;
        let mut o = vec![0u8, 0, 41, 0x04, 0xd0, 0, 0, 0, 0];
        o.extend_from_slice(&((4 + pad) as u16).to_be_bytes());
        o.extend_from_slice(&12u16.to_be_bytes());
        o.extend_from_slice(&(pad as u16).to_be_bytes());
        o.extend(std::iter::repeat_n(0u8, pad));
        let q = with(0x3010, 0, 0, 1, &o);
        assert_eq!(q.len(), size);
        let resp = udp_exchange(&udp_socket(), s.udp, &q);
        assert_eq!((resp[3] & 0x0f) as u16, NOERROR, "{size}-byte query");
        assert_eq!(Resp::parse(resp).a().len(), 2, "{size}-byte query answered");
    }

    // TCP: a frame shorter than a header, or a response, closes the connection at once (the
    // idle timeout is 10 s).
    for (what, f) in [
        ("5-byte frame", vec![0x12, 0x34, 0x01, 0x00, 0x00]),
        ("QR=1", {
            let mut r = query(G, RecordType::A, None);
            r[2] |= 0x80;
            r
        }),
        ("empty frame", vec![]),
    ] {
        let mut c = tcp_connect(s.tcp);
        // A good query first: the connection works until the bad frame.
        let good = query(G, RecordType::A, None);
        tcp_send(&mut c, &good);
        check_envelope(&good, &tcp_recv(&mut c));
        let t0 = Instant::now();
        tcp_send(&mut c, &f);
        assert!(
            closed_within(&mut c, Duration::from_secs(3)),
            "{what}: connection left open"
        );
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "{what}: closed only after {:?}",
            t0.elapsed()
        );
    }
    assert!(s.is_running(), "fedns died:\n{}", s.log_text());
}

struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) as u32
    }
    fn below(&mut self, n: usize) -> usize {
        self.next() as usize % n.max(1)
    }
}

/// Random bytes, or a valid query with a few bytes changed and maybe cut short.
fn fuzz_packet(rng: &mut Lcg, templates: &[Vec<u8>]) -> Vec<u8> {
    if rng.below(3) == 0 {
        let len = rng.below(80);
        (0..len).map(|_| rng.next() as u8).collect()
    } else {
        let mut p = templates[rng.below(templates.len())].clone();
        for _ in 0..1 + rng.below(4) {
            let i = rng.below(p.len());
            p[i] = rng.next() as u8;
        }
        if rng.below(4) == 0 {
            p.truncate(rng.below(p.len() + 1));
        }
        p
    }
}

fn expects_answer(p: &[u8]) -> bool {
    p.len() >= 12 && p[2] & 0x80 == 0
}

/// A few hundred random and mutated packets over UDP and TCP: each gets an answer with its ID
/// when it has a header and QR=0, nothing otherwise; nothing is logged per query; the server
/// still answers afterwards.
#[test]
fn fuzzed_packets_never_break_the_server() {
    let fx = Fixture::new(FED_MAIN, "");
    let mut s = fx.start();
    let templates = vec![
        query(G, RecordType::A, None),
        query(Z_WEST_B, RecordType::A, Some(edns(1232))),
        query("nope.example.com.", RecordType::AAAA, Some(edns(4096))),
        query(&format!("_http._tcp.{G}"), RecordType::SRV, None),
    ];
    let log_before = s.log_lines().len();
    let mut rng = Lcg(0x5eed_f00d_dead_beef);
    let sock = udp_socket();
    for i in 0..400 {
        let p = fuzz_packet(&mut rng, &templates);
        sock.send_to(&p, s.udp).unwrap();
        if expects_answer(&p) {
            let resp = udp_recv(&sock, s.udp, Duration::from_secs(2))
                .unwrap_or_else(|| panic!("packet {i} {p:02x?}: no answer"));
            assert!(resp.len() >= 12, "packet {i}: {resp:?}");
            assert_eq!(resp[..2], p[..2], "packet {i} {p:02x?}: ID");
            assert_ne!(resp[2] & 0x80, 0, "packet {i}: QR");
            assert!(
                resp.len() <= 1232,
                "packet {i}: {} bytes over UDP",
                resp.len()
            );
        }
    }
    let mut c = tcp_connect(s.tcp);
    for i in 0..200 {
        let p = fuzz_packet(&mut rng, &templates);
        tcp_send(&mut c, &p);
        if expects_answer(&p) {
            let resp = tcp_recv(&mut c);
            assert_eq!(resp[..2], p[..2], "tcp packet {i} {p:02x?}: ID");
            assert_ne!(resp[2] & 0x80, 0, "tcp packet {i}: QR");
        } else {
            // A frame shorter than a header or with QR=1 closes the connection at once.
            assert!(
                closed_within(&mut c, Duration::from_secs(2)),
                "tcp packet {i} {p:02x?}: connection left open"
            );
            c = tcp_connect(s.tcp);
        }
    }
    // A valid query on the same connection is answered (no stray answers queued before it).
    let q = query(G, RecordType::A, None);
    tcp_send(&mut c, &q);
    let raw = tcp_recv(&mut c);
    check_envelope(&q, &raw);
    // And over UDP, with nothing left in flight.
    probe(
        &s,
        &query(G, RecordType::A, None),
        Some(NOERROR),
        "after fuzzing",
    );
    assert!(s.is_running(), "fedns died:\n{}", s.log_text());
    let (status, _) = s.http_get("/healthz");
    assert_eq!(status, 200);
    let new_lines: Vec<String> = s.log_lines()[log_before..].to_vec();
    assert!(
        new_lines.is_empty(),
        "nothing may be logged per query at info level, got:\n{}",
        new_lines.join("\n")
    );
}

// ------------------------------------------------------------------------------------------
// 8. Live edits of the federation file
// ------------------------------------------------------------------------------------------

fn fed_edit(first_cluster: &str, c2_ready: u32) -> String {
    format!(
        r#"federation:
  name: myfed
  zone: example.com
  ttl: 42
clusters:
  - name: c1
    region: east
    zones: [east-a]
  - name: c2
    region: west
    zones: [west-a]
services:
  - name: checkout
    namespace: shop
    shards:
      - cluster: {first_cluster}
        addresses: [10.0.0.1]
        ready_endpoints: 1
      - cluster: c2
        addresses: [10.0.0.2]
        ready_endpoints: {c2_ready}
"#
    )
}

fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle:?} not in the test text"))
        + 1
}

fn wait_for_a(s: &Server, want: &BTreeSet<Ipv4Addr>, timeout: Duration) -> bool {
    wait_for(timeout, || {
        (s.ask(Proto::Udp, G, RecordType::A).a() == *want).then_some(())
    })
    .is_some()
}

/// Valid edits show up within a bounded time; an invalid edit keeps the last good data, is
/// logged with file, line and field, and shows in /readyz and /metrics; a fix recovers.
#[test]
fn live_edits_apply_and_invalid_edits_keep_the_last_good_data() {
    let fx = Fixture::new(&fed_edit("c1", 1), "");
    let s = fx.start();
    let both = v4set(&["10.0.0.1", "10.0.0.2"]);
    let one = v4set(&["10.0.0.1"]);
    assert_eq!(s.ask(Proto::Udp, G, RecordType::A).a(), both);
    let up = source_key("fedns_source_up", &fx);
    let errors = source_key("fedns_source_errors_total", &fx);
    assert_eq!(metric(&s.metrics(), &up), Some(1.0), "{up}");

    // c2 becomes unready.
    fx.write("federation.yaml", &fed_edit("c1", 0));
    assert!(
        wait_for_a(&s, &one, Duration::from_secs(3)),
        "unready shard still answered 3 s after the edit"
    );
    let r = s.ask(
        Proto::Tcp,
        "checkout.shop.myfed.svc.west.example.com.",
        RecordType::A,
    );
    assert_eq!(r.cnames().len(), 1, "west has nothing healthy now\n{r}");

    // Invalid: unknown cluster (and c2 ready again, which must NOT take effect).
    let bad = fed_edit("nope", 1);
    let bad_line = line_of(&bad, "cluster: nope");
    fx.write("federation.yaml", &bad);
    let needle = format!("federation.yaml:{bad_line}: services[0].shards[0].cluster");
    let logged = s.wait_log(Duration::from_secs(3), |l| l.contains(&needle));
    assert!(
        logged.is_some(),
        "no error naming {needle:?} within 3 s:\n{}",
        s.log_text()
    );
    for _ in 0..10 {
        assert_eq!(
            s.ask(Proto::Udp, G, RecordType::A).a(),
            one,
            "an invalid edit changed the answers"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (status, body) = s.http_get("/readyz");
    assert_eq!(status, 200, "last good data still serves: ready\n{body}");
    assert!(
        body.contains("federation.yaml") && body.contains("failed"),
        "/readyz must mention the failing source:\n{body}"
    );
    let m = s.metrics();
    assert_eq!(metric(&m, &up), Some(0.0), "{up}\n{m}");
    assert!(metric(&m, &errors).unwrap_or(0.0) >= 1.0, "{errors}\n{m}");

    // Invalid: broken YAML. Also reported with file and line.
    let broken = fed_edit("c1", 1).replace("namespace: shop", "namespace: [shop");
    fx.write("federation.yaml", &broken);
    let ok = wait_for(Duration::from_secs(3), || {
        let m = s.metrics();
        (metric(&m, &errors).unwrap_or(0.0) >= 2.0).then_some(())
    });
    assert!(ok.is_some(), "broken YAML not counted as a source error");
    let yaml_err = s
        .log_lines()
        .into_iter()
        .filter(|l| l.contains("federation.yaml:") && !l.contains(&needle))
        .find(|l| l.contains("ERROR"));
    let yaml_err = yaml_err.unwrap_or_else(|| panic!("no YAML error logged:\n{}", s.log_text()));
    let after = yaml_err.split("federation.yaml:").nth(1).unwrap();
    assert!(
        after.starts_with(|c: char| c.is_ascii_digit()),
        "the YAML error must carry a line number: {yaml_err}"
    );
    assert_eq!(s.ask(Proto::Udp, G, RecordType::A).a(), one);

    // Fixed.
    fx.write("federation.yaml", &fed_edit("c1", 1));
    assert!(
        wait_for_a(&s, &both, Duration::from_secs(3)),
        "the fixed file did not take effect within 3 s"
    );
    let ok = wait_for(Duration::from_secs(3), || {
        (metric(&s.metrics(), &up) == Some(1.0)).then_some(())
    });
    assert!(ok.is_some(), "fedns_source_up did not return to 1");
    let (status, body) = s.http_get("/readyz");
    assert_eq!(status, 200);
    assert!(!body.contains("failed"), "{body}");
}

#[test]
fn federation_file_load_balancer_host_names_are_resolved_in_the_background() {
    // One shard names its load balancer by host name (localhost resolves without a network),
    // another names one that cannot resolve: it keeps its literal address and a warning is
    // logged; no query waits for a lookup.
    let fed = |hosts: &str| {
        format!(
            "federation: {{name: myfed, zone: example.com}}\nclusters:\n  - {{name: c1, region: east}}\n  - {{name: c2, region: west}}\nservices:\n  - name: checkout\n    namespace: shop\n    shards:\n      - {{cluster: c1, addresses: [{hosts}], ready_endpoints: 1}}\n      - {{cluster: c2, addresses: [10.0.0.2, no-such-lb.invalid], ready_endpoints: 1}}\n"
        )
    };
    let fx = Fixture::new(&fed("localhost"), "");
    let s = fx.start();
    let want = v4set(&["127.0.0.1", "10.0.0.2"]);
    assert!(
        wait_for_a(&s, &want, Duration::from_secs(5)),
        "localhost not resolved into c1's shard:\n{}",
        s.ask(Proto::Udp, G, RecordType::A)
    );
    let r = s.ask(
        Proto::Tcp,
        "checkout.shop.myfed.svc.east.example.com.",
        RecordType::A,
    );
    assert_eq!(r.a(), v4set(&["127.0.0.1"]), "{r}");
    let warned = s.wait_log(Duration::from_secs(8), |l| {
        l.contains("no-such-lb.invalid") && l.contains("WARN")
    });
    assert!(
        warned.is_some(),
        "no warning for the unresolvable host:\n{}",
        s.log_text()
    );
    // An edit that drops the host name drops its addresses; the literal one stays.
    fx.write("federation.yaml", &fed("10.0.0.1"));
    assert!(
        wait_for_a(
            &s,
            &v4set(&["10.0.0.1", "10.0.0.2"]),
            Duration::from_secs(3)
        ),
        "{}",
        s.ask(Proto::Udp, G, RecordType::A)
    );
    // `check` accepts host names and still rejects what is neither.
    fx.write("federation.yaml", &fed("localhost, bad_host!"));
    let (code, _, err) = check(&fx);
    assert_ne!(code, Some(0));
    assert!(
        err.contains("services[0].shards[0].addresses[1]: \"bad_host!\" is neither an IP address nor a host name"),
        "{err}"
    );
}

// ------------------------------------------------------------------------------------------
// 9. SOA serial
// ------------------------------------------------------------------------------------------

/// Publishes `n` content changes one after the other; returns the serials seen.
fn publish_edits(fx: &Fixture, s: &Server, n: u32) -> Vec<u32> {
    let mut serials = vec![s.serial()];
    for i in 0..n {
        fx.write("federation.yaml", &fed_edit("c1", 2 + i));
        let prev = *serials.last().unwrap();
        let next = wait_for(Duration::from_secs(3), || {
            let now = s.serial();
            (now != prev).then_some(now)
        })
        .unwrap_or_else(|| panic!("no new serial within 3 s of edit {i}"));
        serials.push(next);
    }
    serials
}

/// The serial grows with every publish and, with a `state_dir`, keeps growing across a restart
/// even when publishes ran ahead of the clock.
#[test]
fn soa_serial_grows_with_every_publish_and_across_restarts() {
    let fx = Fixture::new(&fed_edit("c1", 1), "state_dir: state\n");
    let s = fx.start();
    let serials = publish_edits(&fx, &s, 6);
    assert!(
        serials.windows(2).all(|w| w[1] > w[0]),
        "serials must grow: {serials:?}"
    );
    // Negative answers carry the same serial.
    let r = s.ask(Proto::Udp, "nope.example.com.", RecordType::A);
    assert_eq!(
        r.authority_soa().unwrap().2.serial,
        *serials.last().unwrap()
    );
    let last = *serials.last().unwrap();
    drop(s);
    let stored = std::fs::read_to_string(fx.path("state/serial")).unwrap_or_default();
    assert_eq!(stored.trim(), last.to_string(), "state file");
    let s = fx.start();
    let after = s.serial();
    assert!(
        after > last,
        "serial went from {last} to {after} across a restart with a state_dir"
    );
}

/// DESIGN §4: the serial never goes backwards across restarts. Without a `state_dir`, after a
/// burst of publishes (serial ahead of the Unix time) and an immediate restart.
#[test]
fn soa_serial_never_goes_backwards_across_restarts_without_state_dir() {
    let fx = Fixture::new(&fed_edit("c1", 1), "");
    let s = fx.start();
    let serials = publish_edits(&fx, &s, 8);
    let last = *serials.last().unwrap();
    drop(s);
    let s = fx.start();
    let after = s.serial();
    assert!(
        after > last,
        "serial went backwards across a restart without state_dir: {last} -> {after} (serials before: {serials:?})"
    );
}

// ------------------------------------------------------------------------------------------
// 10. HTTP
// ------------------------------------------------------------------------------------------

#[test]
fn http_healthz_readyz_and_metrics() {
    let fx = Fixture::new(FED_MAIN, "");
    let s = fx.start();
    let (status, body) = s.http_get("/healthz");
    assert_eq!(status, 200, "{body}");
    let (status, body) = s.http_get("/readyz");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("generation"), "{body}");
    let (status, _) = s.http_get("/no-such-page");
    assert_eq!(status, 404);

    let udp_a = "fedns_requests_total{protocol=\"udp\",type=\"A\",zone=\"example.com.\"}";
    let udp_a_other = "fedns_requests_total{protocol=\"udp\",type=\"A\",zone=\"other\"}";
    let tcp_aaaa = "fedns_requests_total{protocol=\"tcp\",type=\"AAAA\",zone=\"example.com.\"}";
    let udp_srv = "fedns_requests_total{protocol=\"udp\",type=\"SRV\",zone=\"example.com.\"}";
    let nx = "fedns_responses_total{rcode=\"NXDOMAIN\",zone=\"example.com.\"}";
    let refused = "fedns_responses_total{rcode=\"REFUSED\",zone=\"other\"}";
    let m0 = s.metrics();
    let v = |m: &str, k: &str| metric(m, k).unwrap_or(0.0);
    for _ in 0..10 {
        s.ask(Proto::Udp, G, RecordType::A);
    }
    for _ in 0..3 {
        s.ask(Proto::Udp, "nope.example.com.", RecordType::A);
    }
    for _ in 0..2 {
        s.ask(Proto::Tcp, G, RecordType::AAAA);
    }
    s.ask(Proto::Udp, &format!("_http._tcp.{G}"), RecordType::SRV);
    s.ask(Proto::Udp, "example.net.", RecordType::A);
    let m1 = s.metrics();
    // 10 + 3 UDP queries of type A in example.com, 1 outside (example.net).
    assert!(v(&m1, udp_a) - v(&m0, udp_a) >= 13.0, "{udp_a}\n{m1}");
    assert!(
        v(&m1, udp_a_other) - v(&m0, udp_a_other) >= 1.0,
        "{udp_a_other}\n{m1}"
    );
    assert!(
        v(&m1, tcp_aaaa) - v(&m0, tcp_aaaa) >= 2.0,
        "{tcp_aaaa}\n{m1}"
    );
    assert!(v(&m1, udp_srv) - v(&m0, udp_srv) >= 1.0, "{udp_srv}\n{m1}");
    assert!(v(&m1, nx) - v(&m0, nx) >= 3.0, "{nx}\n{m1}");
    assert!(v(&m1, refused) - v(&m0, refused) >= 1.0, "{refused}\n{m1}");
    assert!(v(&m1, "fedns_table_generation") >= 1.0, "{m1}");
    assert!(v(&m1, "fedns_table_records") > 0.0, "{m1}");
    assert!(
        v(&m1, "fedns_publish_duration_seconds_count") >= 1.0,
        "{m1}"
    );
    assert!(m1.contains("fedns_publish_duration_seconds_bucket"), "{m1}");
    assert_eq!(
        v(&m1, "fedns_table_serial") as u32,
        s.serial(),
        "fedns_table_serial vs the SOA"
    );
    assert_eq!(
        metric(&m1, &source_key("fedns_source_up", &fx)),
        Some(1.0),
        "{m1}"
    );
}

// ------------------------------------------------------------------------------------------
// 11–12. `fedns check` and `fedns serve` on broken input
// ------------------------------------------------------------------------------------------

#[test]
fn check_accepts_the_shipped_example_config() {
    let cfg = Path::new(REPO).join("config/fedns.yaml");
    let (code, out, err) = run_fedns(
        &["check".as_ref(), "--config".as_ref(), cfg.as_os_str()],
        Duration::from_secs(20),
    );
    assert_eq!(code, Some(0), "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.starts_with("ok:"), "{out}");
}

fn check(fx: &Fixture) -> (Option<i32>, String, String) {
    run_fedns(
        &[
            "check".as_ref(),
            "--config".as_ref(),
            fx.config().as_os_str(),
        ],
        Duration::from_secs(20),
    )
}

#[test]
fn check_reports_every_problem_with_its_location() {
    // Federation with two semantic problems: both reported, with file:line and field.
    let bad = FED_MAIN
        .replace("  - name: catalog", "  - name: Cat_alog")
        .replace("      - cluster: west-b", "      - cluster: nowhere");
    let fx = Fixture::new(&bad, "");
    let (code, out, err) = check(&fx);
    assert_ne!(code, Some(0), "stdout:\n{out}\nstderr:\n{err}");
    let l1 = line_of(&bad, "name: Cat_alog");
    let l2 = line_of(&bad, "cluster: nowhere");
    for needle in [
        format!("federation.yaml:{l2}: services[0].shards[2].cluster"),
        format!("federation.yaml:{l1}: services[1].name"),
    ] {
        assert!(err.contains(&needle), "missing {needle:?} in:\n{err}");
    }
    assert!(err.contains("2 problem"), "{err}");

    // Zone file with a syntax error: file and line.
    let fx = Fixture::new(FED_MAIN, "");
    let zone =
        format!("{ZONE_COM}bad     IN MX   notanumber mail.example.com.\nok IN A 192.0.2.9\n");
    let zl = line_of(&zone, "notanumber");
    fx.write("zones/example.com.zone", &zone);
    let (code, out, err) = check(&fx);
    assert_ne!(code, Some(0), "{out}\n{err}");
    assert!(
        err.contains(&format!("example.com.zone:{zl}:")),
        "zone error must name example.com.zone:{zl}:\n{err}"
    );

    // Both a broken zone and a broken federation: every problem is printed.
    fx.write("federation.yaml", &bad);
    let (code, _, err) = check(&fx);
    assert_ne!(code, Some(0));
    assert!(err.contains(&format!("example.com.zone:{zl}:")), "{err}");
    assert!(err.contains(&format!("federation.yaml:{l2}:")), "{err}");
    assert!(err.contains(&format!("federation.yaml:{l1}:")), "{err}");

    // Config value out of range: field and line.
    let fx = Fixture::new(FED_MAIN, "edns_payload: 100\n");
    let cfg_text = std::fs::read_to_string(fx.config()).unwrap();
    let cl = line_of(&cfg_text, "edns_payload");
    let (code, out, err) = check(&fx);
    assert_ne!(code, Some(0), "{out}\n{err}");
    assert!(
        err.contains(&format!("fedns.yaml:{cl}: edns_payload")),
        "config error must name fedns.yaml:{cl}: edns_payload\n{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn serve_exits_nonzero_on_broken_initial_data() {
    let bad = FED_MAIN.replace("      - cluster: west-b", "      - cluster: nowhere");
    let l = line_of(&bad, "cluster: nowhere");
    let fx = Fixture::new(&bad, "");
    let serve = |fx: &Fixture| {
        run_fedns(
            &[
                "serve".as_ref(),
                "--config".as_ref(),
                fx.config().as_os_str(),
            ],
            Duration::from_secs(10),
        )
    };
    let (code, _, err) = serve(&fx);
    assert!(matches!(code, Some(c) if c != 0), "exit {code:?}\n{err}");
    assert!(
        err.contains(&format!(
            "federation.yaml:{l}: services[0].shards[2].cluster"
        )),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(!err.contains("dns listening"), "must not serve:\n{err}");

    // Broken zone file.
    let fx = Fixture::new(FED_MAIN, "");
    fx.write(
        "zones/example.com.zone",
        &format!("{ZONE_COM}bad IN MX notanumber mail\n"),
    );
    let (code, _, err) = serve(&fx);
    assert!(matches!(code, Some(c) if c != 0), "exit {code:?}\n{err}");
    assert!(err.contains("example.com.zone:"), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    // Broken config.
    let fx = Fixture::new(FED_MAIN, "edns_payload: 100\n");
    let (code, _, err) = serve(&fx);
    assert!(matches!(code, Some(c) if c != 0), "exit {code:?}\n{err}");
    assert!(err.contains("edns_payload"), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    // Missing federation file.
    let fx = Fixture::new(FED_MAIN, "");
    std::fs::remove_file(fx.path("federation.yaml")).unwrap();
    let (code, _, err) = serve(&fx);
    assert!(matches!(code, Some(c) if c != 0), "exit {code:?}\n{err}");
    assert!(err.contains("federation.yaml"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

// ------------------------------------------------------------------------------------------
// 13. The shipped example, end to end
// ------------------------------------------------------------------------------------------

/// The shipped config/fedns.yaml (only its ports and worker count changed), with copies of
/// config/federation.yaml and zones/ laid out the same way.
#[test]
fn shipped_example_config_answers_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let repo = Path::new(REPO);
    std::fs::create_dir_all(dir.path().join("config")).unwrap();
    std::fs::create_dir_all(dir.path().join("zones")).unwrap();
    std::fs::copy(
        repo.join("config/federation.yaml"),
        dir.path().join("config/federation.yaml"),
    )
    .unwrap();
    for e in std::fs::read_dir(repo.join("zones")).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, dir.path().join("zones").join(p.file_name().unwrap())).unwrap();
    }
    let mut cfg = std::fs::read_to_string(repo.join("config/fedns.yaml")).unwrap();
    for (from, to) in [
        ("\"127.0.0.1:5353\"", "\"127.0.0.1:0\""),
        ("\"127.0.0.1:8053\"", "\"127.0.0.1:0\""),
        ("workers: 0", "workers: 2"),
    ] {
        assert!(cfg.contains(from), "config/fedns.yaml no longer has {from}");
        cfg = cfg.replace(from, to);
    }
    let cfg_path = dir.path().join("config/fedns.yaml");
    std::fs::write(&cfg_path, cfg).unwrap();
    let s = Server::start(&cfg_path);
    for p in BOTH {
        assert_addresses(
            &s.ask(p, G, RecordType::A),
            G,
            30,
            &["203.0.113.10", "198.51.100.20"],
            &[],
            "example checkout A",
        );
        assert_addresses(
            &s.ask(p, G, RecordType::AAAA),
            G,
            30,
            &[],
            &["2001:db8:10::10"],
            "example checkout AAAA",
        );
        assert_negative(
            &s.ask(p, PAYMENTS, RecordType::A),
            NOERROR,
            "example.com.",
            30,
            "example payments",
        );
        let r = s.ask(p, "www.example.com.", RecordType::A);
        assert_eq!(r.a(), v4set(&["203.0.113.10", "198.51.100.20"]), "{r}");
        let r = s.ask(
            p,
            "checkout.shop.myfed.svc.us-east1-c.us-east1.example.com.",
            RecordType::A,
        );
        assert_eq!(r.a(), v4set(&["203.0.113.10"]), "{r}");
        // The README's in-cluster redirect: `local_cluster: gke-us-east1` runs checkout.
        let r = s.ask(p, "checkout.shop.myfed.svc.cluster.local.", RecordType::A);
        assert_eq!(
            r.cnames(),
            [(
                "checkout.shop.myfed.svc.cluster.local.".to_string(),
                "checkout.shop.svc.cluster.local.".to_string()
            )],
            "{r}"
        );
        // catalog's own TTL.
        let r = s.ask(p, "catalog.shop.myfed.svc.example.com.", RecordType::A);
        assert_eq!(r.answers()[0].ttl, 10, "{r}");
    }
    // aks-us-west2's pods (10.30/16, told by ECS): nothing ready there, so its zone's name,
    // falling back to the region's healthy eks shard.
    let r = Resp::parse(udp_exchange(
        &udp_socket(),
        s.udp,
        &query_ecs(
            "checkout.shop.myfed.svc.cluster.local.",
            1,
            24,
            0,
            &[10, 30, 0],
        ),
    ));
    assert_eq!(
        r.cnames()[0].1,
        "checkout.shop.myfed.svc.us-west2-b.us-west2.example.com.",
        "{r}"
    );
    assert_eq!(r.a(), v4set(&["198.51.100.20"]), "{r}");
}

// ------------------------------------------------------------------------------------------
// Geo: client location, policies, ECS, GeoIP, explain
// ------------------------------------------------------------------------------------------

/// Clients in 127.1/16 are in us-east1 (zone us-east1-c), 127.2/16 in us-west2, 127.4/16 in
/// eu-west1; the regions have coordinates so fallbacks go by distance.
const GEO_CONFIG: &str = r#"geo:
  ecs: true
  regions:
    - {name: us-east1, lat: 33.2, lon: -80.0}
    - {name: us-west2, lat: 34.1, lon: -118.2}
    - {name: eu-west1, lat: 53.3, lon: -6.3}
  client_networks:
    - {cidr: 127.1.0.0/16, region: us-east1, zone: us-east1-c}
    - {cidr: 127.2.0.0/16, region: us-west2}
    - {cidr: 127.4.0.0/16, region: eu-west1}
    - {cidr: 10.2.0.0/16, region: us-west2}
"#;

fn fed_geo(west_ready: u32) -> String {
    format!(
        r#"federation:
  name: myfed
  zone: example.com
  ttl: 42
clusters:
  - {{name: east1, region: us-east1, zones: [us-east1-b, us-east1-c], weight: 3}}
  - {{name: west1, region: us-west2, zones: [us-west2-a], weight: 1}}
  - {{name: eu1, region: eu-west1, zones: [eu-west1-a]}}
services:
  - name: checkout
    namespace: shop
    shards:
      - {{cluster: east1, addresses: [203.0.113.10], ready_endpoints: 3}}
      - {{cluster: west1, addresses: [198.51.100.20], ready_endpoints: {west_ready}}}
  - name: zonal
    namespace: shop
    shards:
      - {{cluster: east1, addresses: [203.0.113.11], ready_endpoints: 1, zones: [us-east1-b]}}
      - {{cluster: east1, addresses: [203.0.113.12], ready_endpoints: 1, zones: [us-east1-c]}}
  - name: split
    namespace: shop
    policy: weighted
    shards:
      - {{cluster: east1, addresses: [203.0.113.20], ready_endpoints: 1}}
      - {{cluster: west1, addresses: [198.51.100.21], ready_endpoints: 1}}
  - name: ordered
    namespace: shop
    policy: {{failover: [eu1, west1, us-east1]}}
    shards:
      - {{cluster: east1, addresses: [203.0.113.30], ready_endpoints: 1}}
      - {{cluster: west1, addresses: [198.51.100.30], ready_endpoints: 1}}
      - {{cluster: eu1, addresses: [192.0.2.30], ready_endpoints: 0}}
  - name: everyone
    namespace: shop
    policy: all
    shards:
      - {{cluster: east1, addresses: [203.0.113.40], ready_endpoints: 1}}
      - {{cluster: west1, addresses: [198.51.100.40], ready_endpoints: 1}}
"#
    )
}

/// A query from the loopback address `from` (any 127/8 address works on Linux).
fn ask_from(s: &Server, proto: Proto, from: &str, req: &[u8]) -> Resp {
    let raw = match proto {
        Proto::Udp => {
            let sock = UdpSocket::bind((from, 0)).expect("bind client address");
            sock.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
            udp_exchange(&sock, s.udp, req)
        }
        Proto::Tcp => {
            let sock =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            sock.bind(&SocketAddr::new(from.parse().unwrap(), 0).into())
                .expect("bind client address");
            sock.connect_timeout(&s.tcp.into(), Duration::from_secs(2))
                .expect("tcp connect");
            let mut stream: TcpStream = sock.into();
            stream
                .set_read_timeout(Some(Duration::from_secs(2)))
                .unwrap();
            tcp_send(&mut stream, req);
            tcp_recv(&mut stream)
        }
    };
    check_envelope(req, &raw);
    Resp::parse(raw)
}

/// A query carrying an EDNS Client Subnet option (RFC 7871).
fn query_ecs(qname: &str, family: u16, source: u8, scope: u8, addr: &[u8]) -> Vec<u8> {
    let mut q = query(qname, RecordType::A, Some(edns(1232)));
    let n = q.len();
    q[n - 2..].copy_from_slice(&((8 + addr.len()) as u16).to_be_bytes());
    q.extend(8u16.to_be_bytes());
    q.extend(((4 + addr.len()) as u16).to_be_bytes());
    q.extend(family.to_be_bytes());
    q.extend([source, scope]);
    q.extend(addr);
    q
}

/// (source prefix, scope prefix) of the ECS option a response carries.
fn ecs_of(r: &Resp) -> Option<(u8, u8)> {
    use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
    match r.msg.edns.as_ref()?.options().get(EdnsCode::Subnet)? {
        EdnsOption::Subnet(s) => Some((s.source_prefix(), s.scope_prefix())),
        _ => None,
    }
}

#[test]
fn geo_answers_follow_the_client_address_over_udp_and_tcp() {
    let fx = Fixture::new(&fed_geo(2), GEO_CONFIG);
    let s = fx.start();
    let q = || query("checkout.shop.myfed.svc.example.com.", RecordType::A, None);
    for proto in BOTH {
        assert_eq!(
            ask_from(&s, proto, "127.1.0.9", &q()).a(),
            v4set(&["203.0.113.10"]),
            "{proto:?} east client"
        );
        assert_eq!(
            ask_from(&s, proto, "127.2.0.9", &q()).a(),
            v4set(&["198.51.100.20"]),
            "{proto:?} west client"
        );
        // eu-west1 has no shard of checkout: the nearest region with one is us-east1.
        assert_eq!(
            ask_from(&s, proto, "127.4.0.9", &q()).a(),
            v4set(&["203.0.113.10"]),
            "{proto:?} eu client"
        );
        // Unknown location: every healthy shard.
        assert_eq!(
            ask_from(&s, proto, "127.0.0.1", &q()).a(),
            v4set(&["203.0.113.10", "198.51.100.20"]),
            "{proto:?} unknown"
        );
    }
    // The client's own zone first: 127.1/16 is in us-east1-c.
    let z = ask_from(
        &s,
        Proto::Udp,
        "127.1.0.9",
        &query("zonal.shop.myfed.svc.example.com.", RecordType::A, None),
    );
    assert_eq!(z.a(), v4set(&["203.0.113.12"]));
    // Regional and zonal names keep their meaning whoever asks.
    let r = ask_from(
        &s,
        Proto::Udp,
        "127.1.0.9",
        &query(
            "checkout.shop.myfed.svc.us-west2.example.com.",
            RecordType::A,
            None,
        ),
    );
    assert_eq!(r.a(), v4set(&["198.51.100.20"]));
}

#[test]
fn ecs_decides_the_location_and_comes_back_with_its_scope() {
    let fx = Fixture::new(&fed_geo(2), GEO_CONFIG);
    let s = fx.start();
    // A resolver in the east asks for a west client (10.2.3.0/24).
    let r = ask_from(
        &s,
        Proto::Udp,
        "127.1.0.9",
        &query_ecs(
            "checkout.shop.myfed.svc.example.com.",
            1,
            24,
            0,
            &[10, 2, 3],
        ),
    );
    assert_eq!(r.a(), v4set(&["198.51.100.20"]), "{r}");
    assert_eq!(
        ecs_of(&r),
        Some((24, 16)),
        "scope = the /16 client network that decided"
    );
    // A name whose answer does not depend on location: scope 0.
    let r = ask_from(
        &s,
        Proto::Udp,
        "127.1.0.9",
        &query_ecs("ns1.example.com.", 1, 24, 0, &[10, 2, 3]),
    );
    assert_eq!(ecs_of(&r), Some((24, 0)));
    // Source prefix 0: the resolver asks us not to use the subnet; its own address decides.
    let r = ask_from(
        &s,
        Proto::Udp,
        "127.1.0.9",
        &query_ecs("checkout.shop.myfed.svc.example.com.", 1, 0, 0, &[]),
    );
    assert_eq!(r.a(), v4set(&["203.0.113.10"]));
    assert_eq!(ecs_of(&r), Some((0, 0)));
    // Malformed options are FORMERR (RFC 7871 §7.1.1).
    for (what, q) in [
        (
            "bits set beyond the source prefix",
            query_ecs(
                "checkout.shop.myfed.svc.example.com.",
                1,
                20,
                0,
                &[10, 2, 0xff],
            ),
        ),
        (
            "non-zero scope in a query",
            query_ecs(
                "checkout.shop.myfed.svc.example.com.",
                1,
                24,
                24,
                &[10, 2, 3],
            ),
        ),
        (
            "address too long",
            query_ecs("checkout.shop.myfed.svc.example.com.", 1, 8, 0, &[10, 2, 3]),
        ),
        (
            "unknown family",
            query_ecs("checkout.shop.myfed.svc.example.com.", 7, 8, 0, &[10]),
        ),
    ] {
        let r = ask_from(&s, Proto::Udp, "127.1.0.9", &q);
        assert_eq!(r.rcode(), FORMERR, "{what}: {r}");
    }
}

#[test]
fn ecs_is_ignored_when_disabled() {
    let fx = Fixture::new(&fed_geo(2), &GEO_CONFIG.replace("ecs: true", "ecs: false"));
    let s = fx.start();
    let r = ask_from(
        &s,
        Proto::Udp,
        "127.1.0.9",
        &query_ecs(
            "checkout.shop.myfed.svc.example.com.",
            1,
            24,
            0,
            &[10, 2, 3],
        ),
    );
    assert_eq!(
        r.a(),
        v4set(&["203.0.113.10"]),
        "the source address decides"
    );
    assert_eq!(ecs_of(&r), None, "no ECS option in the response");
}

#[test]
fn geo_fails_over_when_the_nearest_region_goes_unhealthy_and_comes_back() {
    let fx = Fixture::new(&fed_geo(2), GEO_CONFIG);
    let s = fx.start();
    let west = || {
        ask_from(
            &s,
            Proto::Udp,
            "127.2.0.9",
            &query("checkout.shop.myfed.svc.example.com.", RecordType::A, None),
        )
        .a()
    };
    assert_eq!(west(), v4set(&["198.51.100.20"]));
    fx.write("federation.yaml", &fed_geo(0));
    let moved = wait_for(Duration::from_secs(3), || {
        (west() == v4set(&["203.0.113.10"])).then_some(())
    });
    assert!(
        moved.is_some(),
        "west clients fail over to us-east1: {:?}",
        west()
    );
    fx.write("federation.yaml", &fed_geo(4));
    let back = wait_for(Duration::from_secs(3), || {
        (west() == v4set(&["198.51.100.20"])).then_some(())
    });
    assert!(back.is_some(), "and come back: {:?}", west());
}

/// east1 has IPv4 and IPv6, west1 IPv4 only, eu1 IPv6 only (us-west2 is nearer us-east1
/// than eu-west1).
const FED_FAMILIES: &str = r#"federation: {name: myfed, zone: example.com, ttl: 42}
clusters:
  - {name: east1, region: us-east1, zones: [us-east1-b], weight: 3}
  - {name: west1, region: us-west2, zones: [us-west2-a], weight: 1}
  - {name: eu1, region: eu-west1, zones: [eu-west1-a], weight: 0}
services:
  - name: web
    namespace: shop
    shards:
      - {cluster: east1, addresses: [203.0.113.50, "2001:db8:50::1"], ready_endpoints: 1}
      - {cluster: west1, addresses: [198.51.100.50], ready_endpoints: 1}
      - {cluster: eu1, addresses: ["2001:db8:50::3"], ready_endpoints: 1}
  - name: legacy
    namespace: shop
    shards:
      - {cluster: east1, addresses: [203.0.113.51], ready_endpoints: 1}
      - {cluster: west1, addresses: [198.51.100.51], ready_endpoints: 1}
  - name: ordered
    namespace: shop
    policy: {failover: [west1, east1]}
    shards:
      - {cluster: east1, addresses: [203.0.113.52, "2001:db8:52::1"], ready_endpoints: 1}
      - {cluster: west1, addresses: [198.51.100.52], ready_endpoints: 1}
  - name: split
    namespace: shop
    policy: weighted
    shards:
      - {cluster: east1, addresses: [203.0.113.53], ready_endpoints: 1}
      - {cluster: west1, addresses: [198.51.100.53], ready_endpoints: 1}
      - {cluster: eu1, addresses: ["2001:db8:53::3"], ready_endpoints: 1}
"#;

/// An ECS query (IPv4 subnet) of any type.
fn query_ecs_type(qname: &str, t: RecordType, source: u8, addr: &[u8]) -> Vec<u8> {
    let mut q = query(qname, t, Some(edns(1232)));
    let n = q.len();
    q[n - 2..].copy_from_slice(&((8 + addr.len()) as u16).to_be_bytes());
    q.extend(8u16.to_be_bytes());
    q.extend(((4 + addr.len()) as u16).to_be_bytes());
    q.extend(1u16.to_be_bytes());
    q.extend([source, 0]);
    q.extend(addr);
    q
}

/// Issue 12: AAAA goes to the nearest region with healthy IPv6 (with the ECS scope that
/// decided), a level without IPv6 answers AAAA with addresses rather than NODATA, NODATA only
/// when no shard has IPv6, and failover and weighted decide each family on its own.
#[test]
fn every_selection_is_made_per_address_family_over_the_wire() {
    let fx = Fixture::new(FED_FAMILIES, GEO_CONFIG);
    let s = fx.start();
    let web = "web.shop.myfed.svc.example.com.";
    let web_w = "web.shop.myfed.svc.us-west2.example.com.";
    let web_wa = "web.shop.myfed.svc.us-west2-a.us-west2.example.com.";
    for p in BOTH {
        // `dig web… AAAA +subnet=10.2.0.0/24`: a us-west2 client, us-west2 IPv4-only.
        let q = query_ecs_type(web, RecordType::AAAA, 24, &[10, 2, 0]);
        let r = ask_from(&s, p, "127.0.0.1", &q);
        assert_addresses(
            &r,
            web,
            42,
            &[],
            &["2001:db8:50::1"],
            &format!("{p:?} web AAAA"),
        );
        assert_eq!(ecs_of(&r), Some((24, 16)), "{p:?}: the /16 decided\n{r}");
        let r = ask_from(&s, p, "127.4.0.9", &query(web, RecordType::AAAA, None));
        assert_eq!(r.aaaa(), v6set(&["2001:db8:50::3"]), "{p:?} eu client\n{r}");
        // failover answers the same to everyone: scope 0, for each family.
        let q = query_ecs_type(
            "ordered.shop.myfed.svc.example.com.",
            RecordType::AAAA,
            24,
            &[10, 2, 0],
        );
        let r = ask_from(&s, p, "127.0.0.1", &q);
        assert_eq!(ecs_of(&r), Some((24, 0)), "{p:?}\n{r}");
        let q = query_ecs_type(web, RecordType::A, 24, &[10, 2, 0]);
        let r = ask_from(&s, p, "127.0.0.1", &q);
        assert_addresses(
            &r,
            web,
            42,
            &["198.51.100.50"],
            &[],
            &format!("{p:?} web A"),
        );
        for n in [web_w, web_wa] {
            let r = ask_from(&s, p, "127.2.0.9", &query(n, RecordType::AAAA, None));
            assert_addresses(
                &r,
                n,
                42,
                &[],
                &["2001:db8:50::1"],
                &format!("{p:?} {n} AAAA"),
            );
        }
        // No IPv6 shard anywhere: NODATA at every level.
        for n in [
            "legacy.shop.myfed.svc.example.com.",
            "legacy.shop.myfed.svc.us-west2-a.us-west2.example.com.",
        ] {
            let r = ask_from(&s, p, "127.2.0.9", &query(n, RecordType::AAAA, None));
            assert_negative(&r, NOERROR, "example.com.", 30, &format!("{p:?} {n} AAAA"));
        }
        // failover [west1, east1]: A on west1, AAAA on east1 (west1 has no IPv6).
        let n = "ordered.shop.myfed.svc.example.com.";
        let r = ask_from(&s, p, "127.1.0.9", &query(n, RecordType::A, None));
        assert_eq!(r.a(), v4set(&["198.51.100.52"]), "{p:?}\n{r}");
        let r = ask_from(&s, p, "127.1.0.9", &query(n, RecordType::AAAA, None));
        assert_eq!(r.aaaa(), v6set(&["2001:db8:52::1"]), "{p:?}\n{r}");
        // weighted: no weighted cluster has IPv6, so AAAA is the unweighted eu1's.
        let n = "split.shop.myfed.svc.example.com.";
        let r = ask_from(&s, p, "127.1.0.9", &query(n, RecordType::AAAA, None));
        assert_eq!(r.aaaa(), v6set(&["2001:db8:53::3"]), "{p:?}\n{r}");
    }
}

#[test]
fn weighted_and_failover_policies() {
    let fx = Fixture::new(&fed_geo(2), GEO_CONFIG);
    let s = fx.start();
    // weighted: east1 weight 3, west1 weight 1, one cluster per answer. The UDP workers each
    // rotate on their own, so shares are checked with a tolerance.
    let (mut east, n) = (0, 400);
    for _ in 0..n {
        let a = ask_from(
            &s,
            Proto::Udp,
            "127.0.0.1",
            &query("split.shop.myfed.svc.example.com.", RecordType::A, None),
        )
        .a();
        assert_eq!(a.len(), 1, "{a:?}");
        east += a.contains(&v4("203.0.113.20")) as u32;
    }
    let share = east as f64 / n as f64;
    assert!(
        (0.65..=0.85).contains(&share),
        "east share {share} not ~0.75"
    );
    // failover [eu1, west1, us-east1]: eu1 is unhealthy, so west1, for every client.
    for from in ["127.1.0.9", "127.2.0.9", "127.0.0.1"] {
        let a = ask_from(
            &s,
            Proto::Udp,
            from,
            &query("ordered.shop.myfed.svc.example.com.", RecordType::A, None),
        )
        .a();
        assert_eq!(a, v4set(&["198.51.100.30"]), "from {from}");
    }
    // all: every healthy shard whoever asks.
    let a = ask_from(
        &s,
        Proto::Udp,
        "127.1.0.9",
        &query("everyone.shop.myfed.svc.example.com.", RecordType::A, None),
    )
    .a();
    assert_eq!(a, v4set(&["203.0.113.40", "198.51.100.40"]));
}

#[test]
fn explain_shows_candidates_location_policy_and_answer() {
    let fx = Fixture::new(&fed_geo(2), GEO_CONFIG);
    let s = fx.start();
    let server = s.http.to_string();
    let explain = |args: &[&str]| {
        let (code, out, err) = fedns_explain(&server, args);
        assert_eq!(code, Some(0), "{out}{err}");
        out
    };
    let out = explain(&[
        "checkout.shop.myfed.svc.example.com",
        "--client",
        "127.2.0.9",
    ]);
    for want in [
        "location: region us-west2 (client network 127.2.0.0/16)",
        "policy: geo",
        "cluster east1 region us-east1",
        "cluster west1 region us-west2",
        "chosen IPv4: 198.51.100.20",
        "IN A 198.51.100.20",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    let out = explain(&[
        "checkout.shop.myfed.svc.example.com",
        "--client",
        "127.1.0.9",
        "--ecs",
        "10.2.3.0/24",
    ]);
    assert!(
        out.contains("via EDNS Client Subnet 10.2.3.0/24") && out.contains("ecs scope: /16"),
        "{out}"
    );
    let out = explain(&["split.shop.myfed.svc.example.com"]);
    assert!(
        out.contains("policy: weighted")
            && out.contains("chosen IPv4 (weight 3): 203.0.113.20")
            && out.contains("chosen IPv4 (weight 1): 198.51.100.21"),
        "{out}"
    );
    let out = explain(&["ordered.shop.myfed.svc.example.com"]);
    assert!(
        out.contains("policy: failover eu1 > west1 > us-east1")
            && out.contains("unhealthy: no ready endpoint")
            && out.contains("chosen IPv4: 198.51.100.30"),
        "{out}"
    );
    let out = explain(&[
        "everyone.shop.myfed.svc.example.com",
        "--client",
        "127.1.0.9",
    ]);
    assert!(
        out.contains("policy: all") && out.contains("chosen IPv4: 198.51.100.40, 203.0.113.40"),
        "{out}"
    );
    let out = explain(&["checkout.shop.myfed.svc.example.com"]);
    assert!(
        out.contains("location: unknown") && out.contains("location unknown: all healthy shards"),
        "{out}"
    );
    let out = explain(&["www.example.com"]);
    assert!(out.contains("not a federated name"), "{out}");
}

#[test]
fn explain_says_per_level_and_family_why_in_text_and_json() {
    let fx = Fixture::new(FED_FAMILIES, GEO_CONFIG);
    let s = fx.start();
    let server = s.http.to_string();
    let explain = |args: &[&str]| {
        let (code, out, err) = fedns_explain(&server, args);
        assert_eq!(code, Some(0), "{out}{err}");
        out
    };
    // The nearest region with a healthy IPv6 shard, by distance, with the distances.
    let out = explain(&[
        "web.shop.myfed.svc.example.com",
        "-t",
        "AAAA",
        "--client",
        "127.2.0.9",
    ]);
    for want in [
        "the client's region us-west2 has no healthy IPv6 shard; nearest region with one by distance: us-east1 (",
        "distances from us-west2: us-west2 0 km (no healthy IPv6), us-east1 ",
        "→ 2001:db8:50::1",
        "IN AAAA 2001:db8:50::1",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    // Why AAAA is empty.
    let out = explain(&["legacy.shop.myfed.svc.example.com", "-t", "AAAA"]);
    assert!(
        out.contains("no shard has an IPv6 address: IPv6 answers are empty (NODATA)"),
        "{out}"
    );
    // A zone and a region with nothing healthy: CNAME up, level by level; the policy line
    // says it decides the global name only.
    let out = explain(&[
        "legacy.shop.myfed.svc.eu-west1-a.eu-west1.example.com",
        "--client",
        "127.4.0.9",
    ]);
    for want in [
        "policy: geo (decides the global name only; a zonal name answers the healthy shards of its zone)",
        "legacy.shop.myfed.svc.eu-west1-a.eu-west1.example.com. IPv4: cname: zone eu-west1-a has no healthy shard: CNAME to legacy.shop.myfed.svc.eu-west1.example.com.",
        "legacy.shop.myfed.svc.eu-west1.example.com. IPv4: cname: region eu-west1 has no healthy shard: CNAME to legacy.shop.myfed.svc.example.com.",
        "legacy.shop.myfed.svc.example.com. IPv4: answer: policy geo: the client's region eu-west1 has no healthy IPv4 shard; nearest region with one by distance: us-east1",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    assert!(!out.contains("location unknown"), "{out}");
    // A region with the other family only answers this one from above, under its own name.
    let out = explain(&["web.shop.myfed.svc.eu-west1.example.com"]);
    assert!(
        out.contains("IPv4: flatten: region eu-west1 has healthy shards of the other family only"),
        "{out}"
    );
    // JSON, from the CLI (Accept: application/json) and with format=json.
    let out = explain(&[
        "legacy.shop.myfed.svc.eu-west1-a.eu-west1.example.com",
        "--client",
        "127.4.0.9",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v["type"], "A", "{v}");
    assert_eq!(v["client"]["region"], "eu-west1", "{v}");
    assert_eq!(v["client"]["via"], "source", "{v}");
    assert_eq!(v["service"]["level"], "zonal", "{v}");
    let why = v["service"]["why"].as_array().unwrap();
    let decisions: Vec<&str> = why
        .iter()
        .map(|s| s["decision"].as_str().unwrap())
        .collect();
    assert_eq!(decisions, ["cname", "cname", "answer"], "{v}");
    assert_eq!(v["answer"]["rcode"], "No Error", "{v}");
    assert_eq!(v["answer"]["answer"].as_array().unwrap().len(), 3, "{v}");
    let (status, body) = s.http_get("/explain?name=web.shop.myfed.svc.example.com&format=json");
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["service"]["chosen"].as_array().unwrap().len(), 2, "{v}");
    assert!(
        v["service"]["shards"][0]["healthy"].as_bool().unwrap(),
        "{v}"
    );
    // Clear 400s, in text and JSON.
    for (q, want) in [
        (
            "/explain",
            "error: name is missing; usage: /explain?name=NAME",
        ),
        ("/explain?name=", "error: name is empty"),
        (
            "/explain?name=x.example.com&client=nope",
            "error: client: \"nope\" is not an IP address",
        ),
        (
            "/explain?name=x.example.com&type=BOGUS",
            "error: type: unknown record type \"BOGUS\"",
        ),
        (
            "/explain?name=x.example.com&ecs=10.0.0.0/40",
            "error: ecs: bad prefix \"40\"",
        ),
        (
            "/explain?name=x.example.com&nmae=y",
            "error: unknown parameter \"nmae\"",
        ),
    ] {
        let (status, body) = s.http_get(q);
        assert_eq!(status, 400, "{q}: {body}");
        assert!(body.starts_with(want), "{q}: {body}");
    }
    let (status, body) = s.http_get("/explain?format=json");
    assert_eq!(status, 400);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        v["error"].as_str().unwrap().starts_with("name is missing"),
        "{v}"
    );
    // The CLI exits 1 on a 400 and prints the message.
    let (code, out, _) = fedns_explain(&server, &["x.example.com", "-t", "BOGUS"]);
    assert_eq!(code, Some(1));
    assert!(out.contains("unknown record type"), "{out}");
}

/// A minimal MaxMind DB writer (IPv4 tree, 24-bit records) for test databases: each network
/// maps to `{location: {latitude, longitude}}`.
fn write_mmdb(path: &Path, networks: &[(Ipv4Addr, u8, f64, f64)]) {
    fn ctrl(out: &mut Vec<u8>, kind: u8, size: usize) {
        assert!(size < 29);
        if kind <= 7 {
            out.push(kind << 5 | size as u8);
        } else {
            out.push(size as u8);
            out.push(kind - 7);
        }
    }
    fn string(out: &mut Vec<u8>, s: &str) {
        ctrl(out, 2, s.len());
        out.extend(s.as_bytes());
    }
    fn uint(out: &mut Vec<u8>, kind: u8, v: u64, bytes: usize) {
        ctrl(out, kind, bytes);
        out.extend(&v.to_be_bytes()[8 - bytes..]);
    }
    // Data section: one record per network.
    let mut data = Vec::new();
    let mut offsets = Vec::new();
    for (_, _, lat, lon) in networks {
        offsets.push(data.len());
        ctrl(&mut data, 7, 1);
        string(&mut data, "location");
        ctrl(&mut data, 7, 2);
        string(&mut data, "latitude");
        ctrl(&mut data, 3, 8);
        data.extend(lat.to_be_bytes());
        string(&mut data, "longitude");
        ctrl(&mut data, 3, 8);
        data.extend(lon.to_be_bytes());
    }
    // Search tree: node 0 is the root; children are node ids, or data offsets (resolved below).
    #[derive(Clone, Copy)]
    enum Rec {
        Empty,
        Node(usize),
        Data(usize),
    }
    let mut nodes: Vec<[Rec; 2]> = vec![[Rec::Empty, Rec::Empty]];
    for (i, (addr, prefix, _, _)) in networks.iter().enumerate() {
        let bits = u32::from(*addr);
        let mut node = 0;
        for depth in 0..*prefix as u32 {
            let bit = ((bits >> (31 - depth)) & 1) as usize;
            if depth + 1 == *prefix as u32 {
                nodes[node][bit] = Rec::Data(offsets[i]);
            } else {
                node = match nodes[node][bit] {
                    Rec::Node(n) => n,
                    _ => {
                        nodes.push([Rec::Empty, Rec::Empty]);
                        nodes[node][bit] = Rec::Node(nodes.len() - 1);
                        nodes.len() - 1
                    }
                };
            }
        }
    }
    let count = nodes.len();
    let mut file = Vec::new();
    for n in &nodes {
        for r in n {
            let v = match *r {
                Rec::Empty => count,
                Rec::Node(i) => i,
                Rec::Data(off) => count + 16 + off,
            };
            file.extend(&(v as u32).to_be_bytes()[1..]);
        }
    }
    file.extend([0u8; 16]);
    file.extend(&data);
    file.extend(b"\xAB\xCD\xEFMaxMind.com");
    let mut meta = Vec::new();
    ctrl(&mut meta, 7, 9);
    string(&mut meta, "binary_format_major_version");
    uint(&mut meta, 5, 2, 2);
    string(&mut meta, "binary_format_minor_version");
    uint(&mut meta, 5, 0, 2);
    string(&mut meta, "build_epoch");
    uint(&mut meta, 9, 1_700_000_000, 8);
    string(&mut meta, "database_type");
    string(&mut meta, "fedns-test-City");
    string(&mut meta, "description");
    ctrl(&mut meta, 7, 0);
    string(&mut meta, "ip_version");
    uint(&mut meta, 5, 4, 2);
    string(&mut meta, "languages");
    ctrl(&mut meta, 11, 0);
    string(&mut meta, "node_count");
    uint(&mut meta, 6, count as u64, 4);
    string(&mut meta, "record_size");
    uint(&mut meta, 5, 24, 2);
    file.extend(meta);
    std::fs::write(path, file).unwrap();
}

#[test]
fn geoip_database_places_clients_in_the_nearest_region() {
    // 127.5/16 sits in Dublin (nearest: eu-west1), 127.6/16 in Los Angeles (us-west2).
    let fx = Fixture::new(
        &fed_geo(2).replace("ready_endpoints: 0}", "ready_endpoints: 1}"),
        "",
    );
    write_mmdb(
        &fx.path("city.mmdb"),
        &[
            (Ipv4Addr::new(127, 5, 0, 0), 16, 53.35, -6.26),
            (Ipv4Addr::new(127, 6, 0, 0), 16, 34.05, -118.24),
        ],
    );
    fx.write_config(&format!("{}  geoip_db: city.mmdb\n", GEO_CONFIG));
    let s = fx.start();
    let checkout = |from: &str| {
        ask_from(
            &s,
            Proto::Udp,
            from,
            &query("checkout.shop.myfed.svc.example.com.", RecordType::A, None),
        )
        .a()
    };
    assert_eq!(
        checkout("127.6.1.1"),
        v4set(&["198.51.100.20"]),
        "Los Angeles → us-west2"
    );
    // Dublin → eu-west1, which has no checkout shard: nearest with one is us-east1.
    assert_eq!(checkout("127.5.1.1"), v4set(&["203.0.113.10"]));
    // Configured client networks win over GeoIP.
    assert_eq!(checkout("127.2.1.1"), v4set(&["198.51.100.20"]));
    let server = s.http.to_string();
    let (code, out, err) = fedns_explain(
        &server,
        &[
            "checkout.shop.myfed.svc.example.com",
            "--client",
            "127.5.1.1",
        ],
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("location: region eu-west1 (GeoIP database"),
        "{out}"
    );
    // A new database under the same name, on SIGHUP: 127.6/16 moves to Dublin.
    let sighup = || {
        // SAFETY: kill(2) on our own child.
        assert_eq!(unsafe { libc::kill(s.child.id() as i32, libc::SIGHUP) }, 0);
    };
    let tmp = fx.path("city.mmdb.tmp");
    write_mmdb(
        &tmp,
        &[
            (Ipv4Addr::new(127, 5, 0, 0), 16, 53.35, -6.26),
            (Ipv4Addr::new(127, 6, 0, 0), 16, 53.35, -6.26),
        ],
    );
    std::fs::rename(&tmp, fx.path("city.mmdb")).unwrap();
    sighup();
    let moved = wait_for(Duration::from_secs(10), || {
        (checkout("127.6.1.1") == v4set(&["203.0.113.10"])).then_some(())
    });
    assert!(
        moved.is_some(),
        "the new GeoIP database: {:?}",
        checkout("127.6.1.1")
    );
    // One that cannot be read is rejected on reload, and the last one keeps serving.
    std::fs::write(fx.path("city.mmdb"), b"not a database").unwrap();
    sighup();
    let rejected = s.wait_log(Duration::from_secs(10), |l| {
        l.contains("config reload rejected")
    });
    assert!(rejected.is_some(), "{}", s.log_text());
    assert_eq!(checkout("127.6.1.1"), v4set(&["203.0.113.10"]));
    assert_eq!(checkout("127.2.1.1"), v4set(&["198.51.100.20"]));
    // A database that cannot be read is a clear startup error, not a panic.
    let (code, out, err) = run_fedns(
        &[
            OsStr::new("check"),
            OsStr::new("--config"),
            fx.config().as_os_str(),
        ],
        Duration::from_secs(10),
    );
    assert_ne!(code, Some(0), "{out}");
    assert!(err.contains("city.mmdb"), "{err}");
}

// ------------------------------------------------------------------------------------------
// Active probes
// ------------------------------------------------------------------------------------------

/// A loopback TCP (or HTTP) endpoint for probes; `healthy` decides the HTTP status, dropping
/// it closes the port.
struct ProbeTarget {
    stop: Arc<std::sync::atomic::AtomicBool>,
    healthy: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ProbeTarget {
    fn start(addr: SocketAddr, http: bool) -> ProbeTarget {
        Self::serve(
            std::net::TcpListener::bind(addr).expect("bind probe target"),
            http,
        )
    }

    fn serve(listener: std::net::TcpListener, http: bool) -> ProbeTarget {
        use std::sync::atomic::AtomicBool;
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let healthy = Arc::new(AtomicBool::new(true));
        let (st, he) = (stop.clone(), healthy.clone());
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut c, _)) if http => {
                        c.set_nonblocking(false).unwrap();
                        c.set_read_timeout(Some(Duration::from_millis(500)))
                            .unwrap();
                        let mut buf = [0u8; 512];
                        let _ = c.read(&mut buf);
                        let status = if he.load(Ordering::Relaxed) {
                            "200 OK"
                        } else {
                            "503 Service Unavailable"
                        };
                        let _ = write!(
                            c,
                            "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        );
                    }
                    Ok(_) => {}
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        ProbeTarget {
            stop,
            healthy,
            thread: Some(thread),
        }
    }
}

impl Drop for ProbeTarget {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A port free on both 127.0.0.11 and 127.0.0.12.
/// Listeners on 127.0.0.11 and 127.0.0.12 with the same port, kept bound (a port found free and
/// released could be taken by another test before the probe target binds it).
fn twin_listeners() -> (std::net::TcpListener, std::net::TcpListener, u16) {
    for _ in 0..50 {
        let a = std::net::TcpListener::bind("127.0.0.11:0").unwrap();
        let port = a.local_addr().unwrap().port();
        if let Ok(b) = std::net::TcpListener::bind(("127.0.0.12", port)) {
            return (a, b, port);
        }
    }
    panic!("no port free on both addresses")
}

fn fed_probed() -> &'static str {
    r#"federation:
  name: myfed
  zone: example.com
clusters:
  - {name: east1, region: us-east1, zones: [us-east1-b]}
  - {name: west1, region: us-west2, zones: [us-west2-a]}
services:
  - name: probed
    namespace: shop
    shards:
      - {cluster: east1, addresses: [127.0.0.11], ready_endpoints: 1}
      - {cluster: west1, addresses: [127.0.0.12], ready_endpoints: 1}
"#
}

#[test]
fn tcp_probes_remove_a_failing_shard_restore_it_and_fail_static() {
    let (east_listener, west_listener, port) = twin_listeners();
    let east = ProbeTarget::serve(east_listener, false);
    let mut west = Some(ProbeTarget::serve(west_listener, false));
    let fx = Fixture::new(
        fed_probed(),
        &format!(
            "probes:\n  - {{federation: myfed, type: tcp, port: {port}, interval_ms: 100, timeout_ms: 300, up_after: 2, down_after: 2}}\n"
        ),
    );
    let s = fx.start();
    let a = || {
        s.ask(
            Proto::Udp,
            "probed.shop.myfed.svc.example.com.",
            RecordType::A,
        )
        .a()
    };
    let both = v4set(&["127.0.0.11", "127.0.0.12"]);
    assert_eq!(a(), both);
    drop(west.take());
    let only_east = wait_for(Duration::from_secs(5), || {
        (a() == v4set(&["127.0.0.11"])).then_some(())
    });
    assert!(
        only_east.is_some(),
        "the failing shard leaves the answer: {:?}",
        a()
    );
    assert_eq!(metric(&s.metrics(), "fedns_probe_shards_down"), Some(1.0));
    let (_, explain) = s.http_get("/explain?name=probed.shop.myfed.svc.example.com");
    assert!(
        explain.contains("probe down: unhealthy: probe failing"),
        "{explain}"
    );
    let _west = ProbeTarget::start(SocketAddr::from(([127, 0, 0, 12], port)), false);
    let back = wait_for(Duration::from_secs(5), || (a() == both).then_some(()));
    assert!(
        back.is_some(),
        "it comes back after up_after passes: {:?}",
        a()
    );
    // Every shard failing: the probes are more likely wrong than every copy of the service.
    drop(east);
    drop(_west);
    let logged = s.wait_log(Duration::from_secs(5), |l| l.contains("fail static"));
    assert!(logged.is_some(), "{}", s.log_text());
    // The log line comes from the merger just before it publishes the table.
    let kept = wait_for(Duration::from_secs(3), || (a() == both).then_some(()));
    assert!(
        kept.is_some(),
        "fail static keeps the last healthy set: {:?}",
        a()
    );
    assert_eq!(
        metric(&s.metrics(), "fedns_probe_fail_static_services"),
        Some(1.0)
    );
}

#[test]
fn http_probes_follow_the_status_code() {
    let (east_listener, west_listener, port) = twin_listeners();
    let east = ProbeTarget::serve(east_listener, true);
    let _west = ProbeTarget::serve(west_listener, true);
    let fx = Fixture::new(
        fed_probed(),
        &format!(
            "probes:\n  - {{federation: myfed, service: shop/probed, type: http, port: {port}, path: /healthz, expect_status: 200, interval_ms: 100, timeout_ms: 300, up_after: 1, down_after: 2}}\n"
        ),
    );
    let s = fx.start();
    let a = || {
        s.ask(
            Proto::Udp,
            "probed.shop.myfed.svc.example.com.",
            RecordType::A,
        )
        .a()
    };
    assert_eq!(a(), v4set(&["127.0.0.11", "127.0.0.12"]));
    east.healthy.store(false, Ordering::Relaxed);
    let gone = wait_for(Duration::from_secs(5), || {
        (a() == v4set(&["127.0.0.12"])).then_some(())
    });
    assert!(gone.is_some(), "503 takes the shard out: {:?}", a());
    east.healthy.store(true, Ordering::Relaxed);
    let back = wait_for(Duration::from_secs(5), || (a().len() == 2).then_some(()));
    assert!(back.is_some(), "200 brings it back: {:?}", a());
}

/// A plain HTTP endpoint that answers 200 with body `ok` only to `Host: lb.example` (else 404),
/// as an Ingress routing by host does.
fn host_routed_http(listener: std::net::TcpListener) -> ProbeTarget {
    use std::sync::atomic::AtomicBool;
    listener.set_nonblocking(true).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let st = stop.clone();
    let thread = std::thread::spawn(move || {
        while !st.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((mut c, _)) => {
                    c.set_nonblocking(false).unwrap();
                    c.set_read_timeout(Some(Duration::from_millis(500)))
                        .unwrap();
                    let mut buf = [0u8; 1024];
                    let n = c.read(&mut buf).unwrap_or(0);
                    let req = String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase();
                    let reply = if req.contains("\r\nhost: lb.example\r\n") {
                        "HTTP/1.1 204 No Content\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
                    } else {
                        "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    };
                    let _ = c.write_all(reply.as_bytes());
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    ProbeTarget {
        stop,
        healthy: Arc::new(AtomicBool::new(true)),
        thread: Some(thread),
    }
}

/// `openssl s_server -www` on loopback with a certificate for lb.example issued by a test CA
/// (`ca`, not in the system roots), refusing (fatal alert) any other SNI; killed by PID on drop.
struct TlsServer {
    child: std::process::Child,
    ca: PathBuf,
    _dir: tempfile::TempDir,
}

impl TlsServer {
    fn start(addr: SocketAddr) -> TlsServer {
        let dir = tempfile::tempdir().unwrap();
        let at = |f: &str| dir.path().join(f);
        let (cert, key, ca) = (at("c.pem"), at("k.pem"), at("ca.pem"));
        std::fs::write(at("ext"), "subjectAltName=DNS:lb.example\n").unwrap();
        let openssl = |args: &str| {
            let ok = Command::new("openssl")
                .args(args.split(' '))
                .current_dir(dir.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .expect("openssl (scripts/test installs it)");
            assert!(ok.success(), "openssl {args}");
        };
        openssl(
            "req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=fedns-test-CA -keyout ca.key -out ca.pem",
        );
        openssl("req -newkey rsa:2048 -nodes -subj /CN=lb.example -keyout k.pem -out leaf.csr");
        openssl(
            "x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 -extfile ext -out c.pem",
        );
        let child = Command::new("openssl")
            .args(["s_server", "-www", "-quiet", "-accept", &addr.to_string()])
            .arg("-cert")
            .arg(&cert)
            .arg("-key")
            .arg(&key)
            .args(["-servername", "lb.example", "-servername_fatal"])
            .arg("-cert2")
            .arg(&cert)
            .arg("-key2")
            .arg(&key)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("openssl s_server");
        let up = wait_for(Duration::from_secs(10), || {
            TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()
        });
        assert!(up.is_some(), "openssl s_server did not listen on {addr}");
        TlsServer {
            child,
            ca,
            _dir: dir,
        }
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn http_and_https_probes_judge_each_address_with_host_sni_statuses_body_and_reasons() {
    // web: one shard with two addresses; .21 routes by Host and answers 204 "ok", .22 refuses.
    let web_listener = std::net::TcpListener::bind("127.0.0.21:0").unwrap();
    let web_port = web_listener.local_addr().unwrap().port();
    let _web = host_routed_http(web_listener);
    // secure/wrongsni/strict: one HTTPS server (self-signed, SNI lb.example only).
    let tls_port = std::net::TcpListener::bind("127.0.0.31:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _tls = TlsServer::start(SocketAddr::from(([127, 0, 0, 31], tls_port)));
    let fed = r#"federation: {name: myfed, zone: example.com}
clusters:
  - {name: east1, region: us-east1}
  - {name: west1, region: us-west2}
services:
  - name: web
    namespace: shop
    shards:
      - {cluster: east1, addresses: [127.0.0.21, 127.0.0.22], ready_endpoints: 1}
  - name: secure
    namespace: shop
    shards:
      - {cluster: east1, addresses: [127.0.0.31], ready_endpoints: 1}
      - {cluster: west1, addresses: [198.51.100.31], ready_endpoints: 1}
  - name: wrongsni
    namespace: shop
    shards:
      - {cluster: east1, addresses: [127.0.0.31], ready_endpoints: 1}
      - {cluster: west1, addresses: [198.51.100.32], ready_endpoints: 1}
  - name: strict
    namespace: shop
    shards:
      - {cluster: east1, addresses: [127.0.0.31], ready_endpoints: 1}
      - {cluster: west1, addresses: [198.51.100.33], ready_endpoints: 1}
  - name: trusted
    namespace: shop
    shards:
      - {cluster: east1, addresses: [127.0.0.31], ready_endpoints: 1}
      - {cluster: west1, addresses: [198.51.100.34], ready_endpoints: 1}
"#;
    let common = "interval_ms: 100, timeout_ms: 1000, up_after: 1, down_after: 2";
    // The west1 shards' addresses are not reachable (TEST-NET: refused or timing out), so
    // only east1 matters; a rule per service.
    let config = format!(
        "probes:\n\
         - {{federation: myfed, service: shop/web, type: http, port: {web_port}, host: lb.example, expect_status: [\"200-204\"], body_contains: ok, {common}}}\n\
         - {{federation: myfed, service: shop/secure, type: https, port: {tls_port}, host: lb.example, verify_certificate: false, body_contains: s_server, {common}}}\n\
         - {{federation: myfed, service: shop/wrongsni, type: https, port: {tls_port}, host: other.example, verify_certificate: false, {common}}}\n\
         - {{federation: myfed, service: shop/strict, type: https, port: {tls_port}, host: lb.example, {common}}}\n\
         - {{federation: myfed, service: shop/trusted, type: https, port: {tls_port}, host: lb.example, ca_file: \"{ca}\", {common}}}\n",
        ca = _tls.ca.display()
    );
    let fx = Fixture::new(fed, &config);
    let s = fx.start();
    let a = |svc: &str| {
        s.ask(
            Proto::Udp,
            &format!("{svc}.shop.myfed.svc.example.com."),
            RecordType::A,
        )
        .a()
    };
    // A dead address leaves the answer; its sibling in the same shard stays.
    let web = wait_for(Duration::from_secs(8), || {
        (a("web") == v4set(&["127.0.0.21"])).then_some(())
    });
    assert!(web.is_some(), "{:?}\n{}", a("web"), s.log_text());
    // HTTPS with SNI lb.example and verification off passes (the west1 shard fails).
    let secure = wait_for(Duration::from_secs(8), || {
        (a("secure") == v4set(&["127.0.0.31"])).then_some(())
    });
    assert!(secure.is_some(), "{:?}\n{}", a("secure"), s.log_text());
    // Verification on, with the test CA trusted: the certificate and the SNI host name match.
    let trusted = wait_for(Duration::from_secs(8), || {
        (a("trusted") == v4set(&["127.0.0.31"])).then_some(())
    });
    assert!(trusted.is_some(), "{:?}\n{}", a("trusted"), s.log_text());
    // A wrong SNI and an unverifiable certificate are TLS errors: east1 fails, and since
    // west1 fails too, both are kept (fail static) — so look at the reasons instead.
    let reasons = wait_for(Duration::from_secs(8), || {
        let (_, body) = s.http_get("/explain?name=strict.shop.myfed.svc.example.com&format=json");
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        let state = v["service"]["shards"][0]["probes"][0]["state"]
            .as_str()?
            .to_string();
        state.starts_with("down: TLS error").then_some(state)
    });
    assert!(reasons.is_some(), "{}", s.log_text());
    // Each probe reaches its verdict on its own (jittered) schedule: wait for this one too.
    let wrong_sni = wait_for(Duration::from_secs(8), || {
        let (_, out) = s.http_get("/explain?name=wrongsni.shop.myfed.svc.example.com");
        out.contains("down: TLS error").then_some(out)
    });
    assert!(
        wrong_sni.is_some(),
        "{}",
        s.http_get("/explain?name=wrongsni.shop.myfed.svc.example.com")
            .1
    );
    let (_, out) = s.http_get("/explain?name=web.shop.myfed.svc.example.com");
    assert!(
        out.contains(&format!(
            "healthy; left out of answers: 127.0.0.22:{web_port} down: refused"
        )),
        "{out}"
    );
    // One log line per state change, with the reason; the reasons as a metric label.
    let logged = s.wait_log(Duration::from_secs(3), |l| {
        l.contains("probe down") && l.contains("127.0.0.22") && l.contains("reason=refused")
    });
    assert!(logged.is_some(), "{}", s.log_text());
    let downs = s
        .log_lines()
        .into_iter()
        .filter(|l| l.contains("probe down") && l.contains("127.0.0.22"))
        .count();
    assert_eq!(downs, 1, "{}", s.log_text());
    let m = s.metrics();
    assert!(
        metric(&m, "fedns_probe_targets_down{reason=\"refused\"}") >= Some(1.0),
        "{m}"
    );
    assert!(
        metric(&m, "fedns_probe_targets_down{reason=\"tls\"}") >= Some(2.0),
        "{m}"
    );
    assert!(
        metric(&m, "fedns_probe_targets_down{reason=\"timeout\"}").is_some(),
        "{m}"
    );
    // Without the host name the Ingress answers 404: `status 404` is the reason.
    fx.write_config(&config.replace("host: lb.example, expect_status", "expect_status"));
    // (probe rules wait for a restart: start a second server on the same files)
    drop(s);
    let s = fx.start();
    let reason = wait_for(Duration::from_secs(8), || {
        let (_, body) = s.http_get("/explain?name=web.shop.myfed.svc.example.com&format=json");
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        let p = v["service"]["shards"][0]["probes"].as_array()?.clone();
        p.iter()
            .any(|x| x["state"] == "down: status 404")
            .then_some(())
    });
    assert!(reason.is_some(), "{}", s.log_text());
}

// ------------------------------------------------------------------------------------------
// Zone-file semantics and identity over the wire (issue 10)
// ------------------------------------------------------------------------------------------

/// RFC 4592 §2.2.1's zone, as written there.
const ZONE_RFC4592: &str = include_str!("fixtures/rfc4592.zone");

#[test]
fn delegations_wildcards_additional_any_and_identity_over_the_wire() {
    let fx = Fixture::new(
        FED_MAIN,
        "identity: {nsid: edge-7, id: edge-7, version: fedns}\n",
    );
    fx.write(
        "zones/example.com.zone",
        &format!("{ZONE_COM}sub IN NS ns.sub\nns.sub IN A 192.0.2.53\n*.apps IN CNAME {G}\n"),
    );
    fx.write("zones/example.zone", ZONE_RFC4592);
    let s = fx.start();
    for proto in BOTH {
        // A referral with glue, not authoritative.
        let r = s.ask(proto, "host.sub.example.com.", RecordType::A);
        assert_eq!(r.rcode(), NOERROR, "{r}");
        assert!(!r.aa() && r.answers().is_empty(), "{r}");
        assert_eq!(r.msg.authorities[0].record_type(), RecordType::NS, "{r}");
        assert!(
            r.msg
                .additionals
                .iter()
                .any(|a| a.name.to_string() == "ns.sub.example.com."),
            "{r}"
        );
        // RFC 4592's own examples.
        let r = s.ask(proto, "host3.example.", RecordType::MX);
        assert_eq!(r.answers()[0].name.to_string(), "host3.example.", "{r}");
        assert_eq!(
            r.msg.additionals[0].name.to_string(),
            "host1.example.",
            "{r}"
        );
        let r = s.ask(proto, "_telnet._tcp.host1.example.", RecordType::SRV);
        assert_eq!(r.rcode(), NXDOMAIN, "{r}");
        let r = s.ask(proto, "ghost.*.example.", RecordType::MX);
        assert_eq!(r.rcode(), NXDOMAIN, "{r}");
        let r = s.ask(proto, "host.subdel.example.", RecordType::A);
        assert!(!r.aa() && r.msg.authorities.len() == 2, "{r}");
        // A wildcard CNAME into the federation follows the client's location.
        let r = s.ask(proto, "shop.apps.example.com.", RecordType::A);
        assert_eq!(r.answers()[0].record_type(), RecordType::CNAME, "{r}");
        assert!(!r.a_list().is_empty(), "{r}");
        // MX with its target's address; ANY is one RRset.
        let r = s.ask(proto, "example.com.", RecordType::MX);
        assert_eq!(
            r.msg.additionals[0].name.to_string(),
            "mail.example.com.",
            "{r}"
        );
        let r = s.ask(proto, "example.com.", RecordType::ANY);
        assert_eq!(r.answers().len(), 2, "the two NS records only: {r}");
        assert!(
            r.answers()
                .iter()
                .all(|a| a.record_type() == RecordType::NS),
            "{r}"
        );
    }
    // CHAOS identity and NSID.
    let mut m = Message::new(next_id(), MessageType::Query, OpCode::Query);
    let mut q = Query::query(name("version.bind."), RecordType::TXT);
    q.set_query_class(hickory_proto::rr::DNSClass::CH);
    m.add_query(q);
    let r = s.exchange(Proto::Udp, &m.to_vec().unwrap());
    assert_eq!(r.rcode(), NOERROR, "{r}");
    assert!(r.to_string().contains("fedns 0.1"), "{r}");
    let mut e = edns(1232);
    e.options_mut()
        .insert(hickory_proto::rr::rdata::opt::EdnsOption::Unknown(
            3,
            vec![],
        ));
    let r = s.exchange(Proto::Udp, &query("example.com.", RecordType::SOA, Some(e)));
    let tail = String::from_utf8_lossy(&r.raw);
    assert!(tail.contains("edge-7"), "NSID in the OPT record: {r}");
}

// ------------------------------------------------------------------------------------------
// In-cluster redirect (SVC.NS.FED.svc.cluster.local) and per-service settings (issue 11)
// ------------------------------------------------------------------------------------------

/// FED_MAIN with pod networks: east1's pods are 127.0.0.2, west-b's 127.0.0.3 (and
/// 10.30.0.0/16, reached by ECS); eu's are 10.40.0.0/16.
fn fed_in_cluster() -> String {
    FED_MAIN
        .replace(
            "    zones: [us-east1-b, us-east1-c]\n",
            "    zones: [us-east1-b, us-east1-c]\n    client_networks: [127.0.0.2/32]\n",
        )
        .replace(
            "    zones: [us-west2-b]\n",
            "    zones: [us-west2-b]\n    client_networks: [127.0.0.3/32, 10.30.0.0/16]\n",
        )
        .replace(
            "    zones: [eu-west1-a]\n",
            "    zones: [eu-west1-a]\n    client_networks: [10.40.0.0/16]\n",
        )
}

const REDIRECT: &str = "checkout.shop.myfed.svc.cluster.local.";

/// A UDP query from a given loopback source address (a pod of some cluster).
fn ask_src(s: &Server, source: &str, qname: &str, t: RecordType) -> Resp {
    ask_from(s, Proto::Udp, source, &query(qname, t, None))
}

fn pair(a: &str, b: &str) -> (String, String) {
    (a.to_string(), b.to_string())
}

/// MCS names without Kubernetes: a federation file states ServiceImports (ClusterSetIP per
/// importing cluster, Headless), a shard's ClusterIPs and a headless shard's ready endpoints;
/// over the wire east1's pods get east1's ClusterSetIP, others the global answer, the
/// in-cluster redirect answers east1's ClusterIP, and the headless service answers every
/// endpoint with per-endpoint names and SRV. `check` names a bad import by line and field.
#[test]
fn mcs_names_and_cluster_ips_from_a_federation_file() {
    let fed = fed_in_cluster()
        .replace(
            "  max_answers: 8\n",
            "  max_answers: 8\n  clusterset_domain: clusterset.local\n",
        )
        .replace(
            "      - cluster: east1\n        addresses: [203.0.113.10, \"2001:db8:10::10\"]\n        ready_endpoints: 3\n",
            "      - cluster: east1\n        addresses: [203.0.113.10, \"2001:db8:10::10\"]\n        ready_endpoints: 3\n        cluster_ips: [10.96.0.10]\n",
        )
        .replace(
            "  - name: checkout\n    namespace: shop\n",
            "  - name: checkout\n    namespace: shop\n    imports:\n      - {cluster: east1, type: ClusterSetIP, ips: [10.100.0.10]}\n",
        )
        + "  - name: db\n    namespace: shop\n    ports: [{name: pg, port: 5432}]\n    imports: [{cluster: east1, type: Headless}, {cluster: west-b, type: Headless}]\n    shards:\n      - cluster: east1\n        endpoints: [{hostname: db-0, addresses: [10.244.1.20]}, {addresses: [10.244.1.21]}]\n      - cluster: west-b\n        endpoints: [{hostname: db-0, addresses: [10.246.1.20]}]\n";
    assert!(
        fed.contains("cluster_ips") && fed.contains("ClusterSetIP"),
        "{fed}"
    );
    let fx = Fixture::new(&fed, "");
    let (code, out, err) = check(&fx);
    assert_eq!(code, Some(0), "{out}{err}");
    let s = fx.start();
    let mcs = "checkout.shop.svc.clusterset.local.";
    let r = ask_src(&s, "127.0.0.2", mcs, RecordType::A);
    assert_eq!(
        (r.rcode(), r.a()),
        (NOERROR, v4set(&["10.100.0.10"])),
        "{r}"
    );
    let r = ask_src(&s, "127.0.0.3", mcs, RecordType::A);
    let global = ask_src(&s, "127.0.0.3", G, RecordType::A);
    assert!(!r.a().is_empty(), "{r}");
    assert_eq!(r.a(), global.a(), "west-b: the global name's answer");
    // east1's ClusterIP, now known, is the redirect's answer for east1's pods.
    let r = ask_src(&s, "127.0.0.2", REDIRECT, RecordType::A);
    assert_eq!((r.cnames(), r.a()), (vec![], v4set(&["10.96.0.10"])), "{r}");
    // The headless service: every endpoint, per-endpoint names, SRV to them.
    let r = ask_src(
        &s,
        "127.0.0.1",
        "db.shop.svc.clusterset.local.",
        RecordType::A,
    );
    assert_eq!(
        r.a(),
        v4set(&["10.244.1.20", "10.244.1.21", "10.246.1.20"]),
        "{r}"
    );
    for (h, ip) in [
        ("db-0.east1", "10.244.1.20"),
        ("10-244-1-21.east1", "10.244.1.21"),
        ("db-0.west-b", "10.246.1.20"),
    ] {
        let r = ask_src(
            &s,
            "127.0.0.1",
            &format!("{h}.db.shop.svc.clusterset.local."),
            RecordType::A,
        );
        assert_eq!(r.a(), v4set(&[ip]), "{h}: {r}");
    }
    let r = ask_src(
        &s,
        "127.0.0.1",
        "_pg._tcp.db.shop.svc.clusterset.local.",
        RecordType::SRV,
    );
    let mut targets: Vec<String> = r
        .answers()
        .iter()
        .filter_map(|rec| match &rec.data {
            RData::SRV(srv) => Some(format!("{} {}", srv.port, lc(&srv.target))),
            _ => None,
        })
        .collect();
    targets.sort();
    assert_eq!(
        targets,
        [
            "5432 10-244-1-21.east1.db.shop.svc.clusterset.local.",
            "5432 db-0.east1.db.shop.svc.clusterset.local.",
            "5432 db-0.west-b.db.shop.svc.clusterset.local.",
        ],
        "{r}"
    );
    drop(s);
    // A bad import: check names file, line, field and value.
    let bad = fed.replace(
        "type: ClusterSetIP, ips: [10.100.0.10]",
        "type: ClusterSetIP, ips: [10.100.0.300]",
    );
    let fx = Fixture::new(&bad, "");
    let (code, out, err) = check(&fx);
    let said = format!("{out}{err}");
    assert_ne!(code, Some(0), "{said}");
    let line = 1 + bad
        .lines()
        .position(|l| l.contains("10.100.0.300"))
        .unwrap();
    assert!(
        said.contains(&format!(
            "federation.yaml:{line}: services[0].imports[0].ips[0]: \"10.100.0.300\" is not an IP address"
        )),
        "{said}"
    );
}

#[test]
fn in_cluster_redirect_answers_for_the_asking_cluster() {
    let fx = Fixture::new(&fed_in_cluster(), "geo:\n  ecs: true\n");
    let s = fx.start();
    // east1 runs checkout with ready endpoints: the cluster-local name (over TCP too).
    let r = ask_from(
        &s,
        Proto::Tcp,
        "127.0.0.2",
        &query(REDIRECT, RecordType::A, None),
    );
    assert_eq!(
        r.cnames(),
        [pair(REDIRECT, "checkout.shop.svc.cluster.local.")],
        "{r}"
    );
    let r = ask_src(&s, "127.0.0.2", REDIRECT, RecordType::A);
    assert_eq!(r.rcode(), NOERROR, "{r}");
    assert!(r.aa(), "{r}");
    assert_eq!(
        r.cnames(),
        [pair(REDIRECT, "checkout.shop.svc.cluster.local.")],
        "{r}"
    );
    assert_eq!(r.answers()[0].ttl, 42, "{r}");
    // west-b's shard has no ready endpoint: its zone's name, then its region's, which has
    // west-a's healthy shard.
    let r = ask_src(&s, "127.0.0.3", REDIRECT, RecordType::A);
    assert_eq!(
        r.cnames(),
        [pair(REDIRECT, Z_WEST_B), pair(Z_WEST_B, R_WEST),],
        "{r}"
    );
    assert_eq!(r.a(), v4set(&["198.51.100.20"]), "{r}");
    // The same over TCP, the cluster told by ECS (west-b's 10.30/16).
    let raw = tcp_exchange(s.tcp, &query_ecs(REDIRECT, 1, 24, 0, &[10, 30, 1]));
    let r = Resp::parse(raw);
    assert_eq!(r.cnames()[0], pair(REDIRECT, Z_WEST_B), "{r}");
    assert_eq!(r.a(), v4set(&["198.51.100.20"]), "{r}");
    // eu runs checkout with ready endpoints but no load balancer: the local name still (the
    // ClusterIP works inside the cluster).
    let raw = udp_exchange(
        &udp_socket(),
        s.udp,
        &query_ecs(REDIRECT, 1, 24, 0, &[10, 40, 1]),
    );
    let r = Resp::parse(raw);
    assert_eq!(
        r.cnames(),
        [pair(REDIRECT, "checkout.shop.svc.cluster.local.")],
        "{r}"
    );
    // A client in no configured cluster: the global name, answered for it.
    let r = s.ask(Proto::Udp, REDIRECT, RecordType::A);
    assert_eq!(r.cnames(), [pair(REDIRECT, G)], "{r}");
    assert_eq!(r.a(), v4set(&["203.0.113.10", "198.51.100.20"]), "{r}");
    // The zone is served as a zone: SOA at the apex, NODATA above services, NXDOMAIN for
    // unknown names under it, REFUSED beside it.
    for p in BOTH {
        let r = s.ask(p, "myfed.svc.cluster.local.", RecordType::SOA);
        assert_eq!(r.rcode(), NOERROR, "{r}");
        assert!(matches!(r.answers()[0].data, RData::SOA(_)), "{r}");
        assert_negative(
            &s.ask(p, "shop.myfed.svc.cluster.local.", RecordType::A),
            NOERROR,
            "myfed.svc.cluster.local.",
            30,
            "empty non-terminal",
        );
        assert_negative(
            &s.ask(p, "nothing.shop.myfed.svc.cluster.local.", RecordType::A),
            NXDOMAIN,
            "myfed.svc.cluster.local.",
            30,
            "unknown service",
        );
        let r = s.ask(p, "checkout.shop.svc.cluster.local.", RecordType::A);
        assert_eq!(r.rcode(), REFUSED, "{r}");
    }
    // Known services only: payments (healthy nowhere) still has its redirect name.
    let r = ask_src(
        &s,
        "127.0.0.3",
        "payments.billing.myfed.svc.cluster.local.",
        RecordType::A,
    );
    assert_eq!(r.rcode(), NOERROR, "{r}");
}

/// `geo.local_cluster`: a fedns inside one member cluster treats every client that no
/// cluster network covers as that cluster's; cluster networks still win.
#[test]
fn local_cluster_places_clients_no_cluster_network_covers() {
    let fx = Fixture::new(&fed_in_cluster(), "geo:\n  local_cluster: west-b\n");
    let s = fx.start();
    let r = s.ask(Proto::Udp, REDIRECT, RecordType::A);
    assert_eq!(r.cnames()[0], pair(REDIRECT, Z_WEST_B), "{r}");
    let r = ask_src(&s, "127.0.0.2", REDIRECT, RecordType::A);
    assert_eq!(
        r.cnames(),
        [pair(REDIRECT, "checkout.shop.svc.cluster.local.")],
        "{r}"
    );
    // Edits follow: west-b's endpoints turn ready, and its clients go local.
    fx.write(
        "federation.yaml",
        &fed_in_cluster().replace(
            "        ready_endpoints: 0\n        not_ready_endpoints: 2\n",
            "        ready_endpoints: 2\n",
        ),
    );
    let local = wait_for(Duration::from_secs(5), || {
        let r = s.ask(Proto::Udp, REDIRECT, RecordType::A);
        (r.cnames() == [pair(REDIRECT, "checkout.shop.svc.cluster.local.")]).then_some(())
    });
    assert!(
        local.is_some(),
        "west-b clients go local once it has ready endpoints"
    );
    // New client networks wait for a restart, and say so.
    fx.write(
        "federation.yaml",
        &fed_in_cluster().replace("127.0.0.2/32", "127.0.0.5/32"),
    );
    let said = wait_for(Duration::from_secs(5), || {
        s.log_text()
            .contains("cluster east1's client_networks changed")
            .then_some(())
    });
    assert!(said.is_some(), "{}", s.log_text());
    let r = ask_src(&s, "127.0.0.2", REDIRECT, RecordType::A);
    assert_eq!(
        r.cnames(),
        [pair(REDIRECT, "checkout.shop.svc.cluster.local.")],
        "{r}"
    );
}

/// Per-service `ttl:`, `policy:` and shard `weight:` in a federation file, visible over the
/// wire, and changed live.
#[test]
fn per_service_ttl_policy_and_weight_over_the_wire() {
    let fed = FED_MAIN.replace(
        "  - name: checkout\n    namespace: shop\n",
        "  - name: checkout\n    namespace: shop\n    ttl: 7\n    policy: {failover: [west-a]}\n",
    );
    let fx = Fixture::new(&fed, "");
    let s = fx.start();
    for p in BOTH {
        let r = s.ask(p, G, RecordType::A);
        assert_eq!(r.a(), v4set(&["198.51.100.20"]), "failover to west-a: {r}");
        assert!(
            r.answers().iter().all(|a| a.ttl == 7),
            "the service's TTL: {r}"
        );
        // Other services keep the federation's TTL.
        let r = s.ask(p, "catalog.shop.myfed.svc.example.com.", RecordType::A);
        assert!(r.answers().iter().all(|a| a.ttl == 42), "{r}");
        // Regional, zonal and redirect names carry it too.
        let r = s.ask(p, Z_WEST_B, RecordType::A);
        assert!(r.answers().iter().all(|a| a.ttl == 7), "{r}");
    }
    // Weighted, with east1's shard weighted 0: only west-a answers.
    fx.write(
        "federation.yaml",
        &FED_MAIN
            .replace(
                "  - name: checkout\n    namespace: shop\n",
                "  - name: checkout\n    namespace: shop\n    ttl: 9\n    policy: weighted\n",
            )
            .replace(
                "        ready_endpoints: 3\n",
                "        ready_endpoints: 3\n        weight: 0\n",
            ),
    );
    let edited = wait_for(Duration::from_secs(5), || {
        (s.ask(Proto::Udp, G, RecordType::A).answers()[0].ttl == 9).then_some(())
    });
    assert!(edited.is_some(), "the new TTL applies");
    let answers: BTreeSet<Ipv4Addr> = (0..16)
        .flat_map(|_| s.ask(Proto::Udp, G, RecordType::A).a())
        .collect();
    assert_eq!(
        answers,
        v4set(&["198.51.100.20"]),
        "weight 0 leaves east1 out"
    );
    // Weight 1 again (the default): both clusters take turns.
    fx.write(
        "federation.yaml",
        &FED_MAIN.replace(
            "  - name: checkout\n    namespace: shop\n",
            "  - name: checkout\n    namespace: shop\n    ttl: 11\n    policy: weighted\n",
        ),
    );
    let edited = wait_for(Duration::from_secs(5), || {
        (s.ask(Proto::Udp, G, RecordType::A).answers()[0].ttl == 11).then_some(())
    });
    assert!(edited.is_some(), "the new TTL applies");
    let answers: BTreeSet<Ipv4Addr> = (0..16)
        .flat_map(|_| s.ask(Proto::Udp, G, RecordType::A).a())
        .collect();
    assert_eq!(answers, v4set(&["203.0.113.10", "198.51.100.20"]));
}

/// A `local_cluster` that names no cluster is a problem `check` reports (file, line, value) and
/// `serve` refuses to start with; a bad client network names its federation-file line.
#[test]
fn check_reports_an_unknown_local_cluster_and_bad_client_networks() {
    let fx = Fixture::new(&fed_in_cluster(), "geo:\n  local_cluster: west-c\n");
    let (code, out, err) = check(&fx);
    assert_ne!(code, Some(0), "{out}\n{err}");
    assert!(
        err.contains("fedns.yaml:8: geo.local_cluster: \"west-c\" is no cluster"),
        "{err}"
    );
    let bad = fed_in_cluster().replace("127.0.0.3/32", "127.0.0.300/32");
    let fx = Fixture::new(&bad, "");
    let (code, _, err) = check(&fx);
    assert_ne!(code, Some(0));
    let l = line_of(&bad, "127.0.0.300/32");
    assert!(
        err.contains(&format!(
            "federation.yaml:{l}: clusters[2].client_networks[0]: \"127.0.0.300/32\""
        )),
        "{err}"
    );
}
