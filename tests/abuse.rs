//! End-to-end tests of fedns under abuse, against the real binary over loopback: TCP
//! connection floods (fairness, memory given back). Every load is bounded in count and time,
//! and every process started here is stopped by PID.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};

mod common;

use common::{Fedns as Server, addr_field, http_get, metric, wait_for};

const ZONE: &str =
    "$TTL 600\n@ IN SOA ns1 hostmaster 1 3600 600 86400 30\n@ IN NS ns1\nns1 IN A 127.0.0.1\n";
const FED: &str = r#"federation:
  name: myfed
  zone: example.com
  ttl: 30
clusters:
  - name: east1
    region: us-east1
    zones: [us-east1-b]
services:
  - name: checkout
    namespace: shop
    shards:
      - cluster: east1
        addresses: [203.0.113.10, 203.0.113.11]
        ready_endpoints: 3
"#;
const G: &str = "checkout.shop.myfed.svc.example.com.";

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new(extra_config: &str) -> Fixture {
        Fixture::listening(r#"["127.0.0.1:0"]"#, extra_config)
    }

    /// With `listen` set to `listen` (a YAML flow list).
    fn listening(listen: &str, extra_config: &str) -> Fixture {
        let dir = tempfile::tempdir().expect("temp dir");
        let p = |r: &str| dir.path().join(r);
        std::fs::create_dir_all(p("zones")).unwrap();
        std::fs::write(p("zones/example.com.zone"), ZONE).unwrap();
        std::fs::write(p("federation.yaml"), FED).unwrap();
        std::fs::write(
            p("fedns.yaml"),
            format!(
                "listen: {listen}\nhttp: \"127.0.0.1:0\"\nworkers: 2\nzones_dir: zones\nfederation_files: [federation.yaml]\n{extra_config}"
            ),
        )
        .unwrap();
        Fixture { dir }
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("fedns.yaml")
    }

    fn start(&self) -> Server {
        Server::start(&self.config())
    }
}

/// A query for `name` A IN with ID `id`, no EDNS.
fn query(id: u16, name: &str) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for l in name.trim_end_matches('.').split('.') {
        q.push(l.len() as u8);
        q.extend_from_slice(l.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

fn frame(q: &[u8]) -> Vec<u8> {
    let mut f = (q.len() as u16).to_be_bytes().to_vec();
    f.extend_from_slice(q);
    f
}

/// A TCP connection to `to` from the loopback address `from` (any 127/8 address works).
fn connect_from(from: &str, to: SocketAddr, timeout: Duration) -> std::io::Result<TcpStream> {
    let s = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    let local: SocketAddr = format!("{from}:0").parse().expect("address");
    s.bind(&local.into())?;
    s.connect_timeout(&to.into(), timeout)?;
    let s: TcpStream = s.into();
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let _ = s.set_nodelay(true);
    Ok(s)
}

/// One query on a fresh connection from `from`; true when a NOERROR answer with our ID came back.
fn ask_tcp(from: &str, to: SocketAddr, id: u16) -> bool {
    let attempt = || -> std::io::Result<bool> {
        let mut s = connect_from(from, to, Duration::from_secs(2))?;
        s.write_all(&frame(&query(id, G)))?;
        let mut len = [0u8; 2];
        s.read_exact(&mut len)?;
        let mut resp = vec![0u8; u16::from_be_bytes(len) as usize];
        s.read_exact(&mut resp)?;
        Ok(resp.len() > 12 && resp[..2] == id.to_be_bytes() && resp[3] & 0x0f == 0)
    };
    attempt().unwrap_or(false)
}

/// Opens `per_source` connections from each of `sources`, sending one query on each (answers
/// are left unread); connections the server refuses or closes are simply kept.
fn flood(sources: &[String], per_source: usize, to: SocketAddr) -> Vec<TcpStream> {
    let mut conns = Vec::new();
    for src in sources {
        for i in 0..per_source {
            if let Ok(mut c) = connect_from(src, to, Duration::from_secs(2)) {
                let _ = c.write_all(&frame(&query(i as u16, G)));
                conns.push(c);
            }
        }
    }
    conns
}

fn scrape(s: &Server) -> String {
    http_get(s.http, "/metrics").1
}

/// Resident memory of `pid` in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// True once the peer has closed `c` (EOF or reset), reading past any answers queued on it.
fn peer_closed(c: &mut TcpStream) -> bool {
    c.set_read_timeout(Some(Duration::from_millis(1))).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match c.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return false;
            }
            Err(_) => return true,
        }
    }
}

/// RFC 7766 §6.2: a flooder holding every connection it can, idle or sending a query now and
/// then, from one address or from many, never keeps a second client from ≥ 99 % of its answers.
#[test]
fn tcp_flooder_never_shuts_out_another_client() {
    let fx = Fixture::new("");
    let mut s = fx.start();
    let answered = |from: &str, n: u16| (0..n).filter(|i| ask_tcp(from, s.tcp, 0x4000 + i)).count();
    assert_eq!(answered("127.0.0.2", 20), 20, "baseline");

    // 1. 1,100 idle connections from one address (over the 1,024 cap): its share is 64.
    let mut held = flood(&["127.0.0.1".to_string()], 1100, s.tcp);
    let t0 = Instant::now();
    let ok = answered("127.0.0.2", 200);
    assert!(ok >= 198, "one-source flood: {ok}/200 answered");
    assert!(t0.elapsed() < Duration::from_secs(30), "{:?}", t0.elapsed());
    let open = metric(&scrape(&s), "fedns_tcp_connections").unwrap();
    assert!(open <= 64.0 + 2.0, "one source holds {open} connections");
    let source_evictions = metric(&scrape(&s), "fedns_tcp_evicted_total{reason=\"source\"}");
    assert!(
        source_evictions.unwrap_or(0.0) >= 1000.0,
        "{source_evictions:?}"
    );
    held.clear();

    // 2. 40 sources × 40 connections (1,600 > the cap, each source within its share), every
    //    connection sending a query every ~2 s, while the client asks.
    let sources: Vec<String> = (10..50).map(|i| format!("127.0.0.{i}")).collect();
    held = flood(&sources, 40, s.tcp);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flooder = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut round = 0u16;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < deadline {
                for c in held.iter_mut() {
                    let _ = c.write_all(&frame(&query(round, G)));
                    let _ = peer_closed(c);
                }
                round = round.wrapping_add(1);
                std::thread::sleep(Duration::from_millis(2000));
            }
            held.len()
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    let t0 = Instant::now();
    let ok = answered("127.0.0.2", 200);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let flooded = flooder.join().unwrap();
    assert!(
        flooded >= 1500,
        "the flooder opened only {flooded} connections"
    );
    assert!(ok >= 198, "many-source flood: {ok}/200 answered");
    assert!(t0.elapsed() < Duration::from_secs(30), "{:?}", t0.elapsed());
    let cap_evictions = metric(&scrape(&s), "fedns_tcp_evicted_total{reason=\"cap\"}")
        .unwrap_or(0.0)
        + metric(&scrape(&s), "fedns_tcp_evicted_total{reason=\"busy_idle\"}").unwrap_or(0.0);
    assert!(cap_evictions >= 500.0, "{cap_evictions}");
    assert!(s.is_running(), "fedns died:\n{}", s.log_text());
}

/// Bounded memory: 2,000 connections (each sending a query) at once cost a bounded amount of
/// memory, and once they are closed the resident size returns to within 10 % of the baseline.
#[test]
fn tcp_flood_memory_is_bounded_and_given_back() {
    // A long busy idle timeout keeps all 2,000 open at once.
    let fx = Fixture::new("tcp:\n  max_connections: 2048\n  busy_idle_timeout_ms: 60000\n");
    let s = fx.start();
    let pid = s.child.id();
    // Warm up: every code path once, so the baseline includes thread stacks and buffers.
    for i in 0..50 {
        assert!(ask_tcp("127.0.0.2", s.tcp, i));
    }
    let (status, _) = http_get(s.http, "/metrics");
    assert_eq!(status, 200);
    std::thread::sleep(Duration::from_millis(500));
    let baseline = rss_kib(pid);
    let sources: Vec<String> = (10..50).map(|i| format!("127.0.0.{i}")).collect();
    for round in 0..3 {
        let mut held = flood(&sources, 50, s.tcp);
        assert!(
            held.len() >= 1990,
            "round {round}: {} connections",
            held.len()
        );
        // Every connection got its answer (so its buffers were used).
        let open = wait_for(Duration::from_secs(10), || {
            let m = metric(&scrape(&s), "fedns_tcp_connections")?;
            (m >= 1990.0).then_some(m)
        });
        assert!(
            open.is_some(),
            "round {round}: not all connections registered"
        );
        let mut answered = 0;
        for c in held.iter_mut() {
            c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let mut len = [0u8; 2];
            if c.read_exact(&mut len).is_ok() {
                answered += 1;
            }
        }
        assert!(answered >= 1990, "round {round}: {answered} answers");
        let peak = rss_kib(pid);
        // Documented bound (ARCHITECTURE.md): ≤ 8 KiB per open connection above the baseline.
        assert!(
            peak <= baseline + 2000 * 8,
            "round {round}: {peak} KiB with 2,000 connections, baseline {baseline} KiB"
        );
        drop(held);
        let back = wait_for(Duration::from_secs(10), || {
            let m = metric(&scrape(&s), "fedns_tcp_connections")?;
            (m == 0.0).then_some(())
        });
        assert!(back.is_some(), "round {round}: connections not released");
        std::thread::sleep(Duration::from_millis(1500));
        let after = rss_kib(pid);
        eprintln!("round {round}: baseline {baseline} KiB, peak {peak} KiB, after {after} KiB");
        assert!(
            after <= baseline + baseline / 10,
            "round {round}: {after} KiB after the flood, baseline {baseline} KiB (peak {peak})"
        );
    }
}

/// A UDP socket bound to the loopback address `from`.
fn udp_from(from: &str) -> std::net::UdpSocket {
    let s = std::net::UdpSocket::bind(format!("{from}:0")).expect("bind udp");
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    s
}

/// Sends `n` queries (IDs `base..`) from `sock` at once, then reads for up to 1 s:
/// (full answers, truncated answers with no records, unanswered).
fn burst(sock: &std::net::UdpSocket, to: SocketAddr, base: u16, n: u16) -> (usize, usize, usize) {
    for i in 0..n {
        sock.send_to(&query(base + i, G), to).unwrap();
    }
    let mut seen = std::collections::HashSet::new();
    let (mut full, mut slipped) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline && seen.len() < n as usize {
        let Ok((len, _)) = sock.recv_from(&mut buf) else {
            continue;
        };
        let r = &buf[..len];
        let id = u16::from_be_bytes([r[0], r[1]]);
        if len < 12 || !(base..base + n).contains(&id) || !seen.insert(id) {
            continue;
        }
        let an = u16::from_be_bytes([r[6], r[7]]);
        if r[2] & 0x02 != 0 && an == 0 {
            slipped += 1;
        } else if an == 2 {
            full += 1;
        }
    }
    (full, slipped, n as usize - seen.len())
}

/// RRL over the wire: a burst of identical queries from one source is limited (dropped, every
/// second one slipped with TC=1), while another source and an exempt source get every answer;
/// the metrics count what was limited and slipped.
#[test]
fn rrl_limits_a_burst_from_one_source_only() {
    let fx =
        Fixture::new("rrl:\n  responses_per_second: 10\n  slip: 2\n  exempt: [127.0.0.3/32]\n");
    let s = fx.start();
    let flooder = udp_from("127.0.0.1");
    let (full, slipped, dropped) = burst(&flooder, s.udp, 0x1000, 200);
    // One socket reaches one worker; the burst may straddle one second boundary.
    assert!((10..=20).contains(&full), "full answers {full}");
    assert!(slipped >= 80, "slipped {slipped}");
    assert!(dropped >= 80, "dropped {dropped}");
    assert!(
        slipped.abs_diff(dropped) <= 2,
        "slip 2: {slipped} vs {dropped}"
    );
    // Another source, in the same second: all answered.
    let other = udp_from("127.0.0.2");
    let (full, slipped, dropped) = burst(&other, s.udp, 0x2000, 10);
    assert_eq!((full, slipped, dropped), (10, 0, 0), "another source");
    // An exempt source is never limited.
    let exempt = udp_from("127.0.0.3");
    let (full, _, _) = burst(&exempt, s.udp, 0x3000, 100);
    assert_eq!(full, 100, "exempt source");
    // TCP from the flooding source is not limited.
    for i in 0..20 {
        assert!(ask_tcp("127.0.0.1", s.tcp, 0x4000 + i), "tcp query {i}");
    }
    let text = scrape(&s);
    let limited = metric(&text, "fedns_rrl_limited_total").unwrap();
    let slipped_m = metric(&text, "fedns_rrl_slipped_total").unwrap();
    assert!(
        limited >= 80.0 && slipped_m >= 80.0,
        "{limited} {slipped_m}"
    );
}

/// RRL is off by default: the same burst is answered in full.
#[test]
fn rrl_is_off_by_default() {
    let fx = Fixture::new("");
    let s = fx.start();
    let (full, _, _) = burst(&udp_from("127.0.0.1"), s.udp, 0x1000, 200);
    assert_eq!(full, 200);
    assert_eq!(metric(&scrape(&s), "fedns_rrl_limited_total"), Some(0.0));
}

/// Socket sizing: with a tiny receive buffer, a burst the workers cannot drain in time is
/// dropped by the kernel, and `fedns_udp_kernel_drops_total` shows it (it starts at 0).
#[test]
fn kernel_drops_are_counted() {
    let fx = Fixture::new("udp:\n  receive_buffer_bytes: 4096\n");
    let s = fx.start();
    assert_eq!(
        metric(&scrape(&s), "fedns_udp_kernel_drops_total"),
        Some(0.0)
    );
    let socks: Vec<_> = (0..4).map(|_| udp_from("127.0.0.1")).collect();
    let q = query(0x5000, G);
    let drops = wait_for(Duration::from_secs(20), || {
        for _ in 0..5000 {
            for sock in &socks {
                let _ = sock.send_to(&q, s.udp);
            }
        }
        let d = metric(&scrape(&s), "fedns_udp_kernel_drops_total")?;
        (d > 0.0).then_some(d)
    });
    assert!(drops.is_some(), "no kernel drops counted after the bursts");
    // Still serving afterwards.
    assert!(ask_tcp("127.0.0.2", s.tcp, 1));
}

/// Reads one framed DNS message from `c`.
fn read_message(c: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 2];
    c.read_exact(&mut len)?;
    let mut m = vec![0u8; u16::from_be_bytes(len) as usize];
    c.read_exact(&mut m)?;
    Ok(m)
}

/// A transfer request for example.com. (`qtype` AXFR or IXFR), with `an`/`ns`/`ar` counts and
/// `records` after the question.
fn transfer_request(id: u16, qtype: u16, (an, ns, ar): (u16, u16, u16), records: &[u8]) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0, 0, 0, 1]);
    for c in [an, ns, ar] {
        q.extend_from_slice(&c.to_be_bytes());
    }
    q.extend_from_slice(b"\x07example\x03com\x00");
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&[0, 1]);
    q.extend_from_slice(records);
    q
}

/// Strict parsing applies to transfers as to queries: a malformed AXFR or IXFR from an allowed
/// peer gets one FORMERR (never a zone), and is counted like any other answer.
#[test]
fn malformed_transfer_requests_get_formerr() {
    let fx = Fixture::new("transfers:\n  allow: [127.0.0.0/8]\n");
    let s = fx.start();
    const AXFR: u16 = 252;
    const IXFR: u16 = 251;
    let opt = [0u8, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0];
    // Offset of the first record after the question of `transfer_request`.
    let at = (12 + 13 + 4) as u8;
    let soa = {
        let mut r = vec![0xc0, 12, 0, 6, 0, 1, 0, 0, 0, 0];
        let rdata = [&[0u8, 0][..], &[0; 20]].concat();
        r.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        r.extend_from_slice(&rdata);
        r
    };
    let tsig = {
        let mut rd = b"\x0bhmac-sha256\x00".to_vec();
        rd.extend_from_slice(&[0, 0, 0x65, 0x43, 0x21, 0, 1, 44, 0, 32]);
        rd.extend_from_slice(&[0x5a; 32]);
        rd.extend_from_slice(&[0xab, 0xcd, 0, 0, 0, 0]);
        let mut r = b"\x03key\x00\x00\xfa\x00\xff\x00\x00\x00\x00".to_vec();
        r.extend_from_slice(&(rd.len() as u16).to_be_bytes());
        r.extend_from_slice(&rd);
        r
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "AXFR with a trailing byte",
            transfer_request(0x6001, AXFR, (0, 0, 0), &[0]),
        ),
        (
            "AXFR with OPT in the answer section",
            transfer_request(0x6002, AXFR, (1, 0, 0), &opt),
        ),
        (
            "AXFR with two OPT records",
            transfer_request(0x6003, AXFR, (0, 0, 2), &[opt, opt].concat()),
        ),
        (
            "AXFR with a TSIG before the OPT",
            transfer_request(0x6004, AXFR, (0, 0, 2), &[&tsig[..], &opt].concat()),
        ),
        (
            "AXFR with a record owned by a pointer to itself",
            transfer_request(
                0x6005,
                AXFR,
                (0, 0, 1),
                &[&[0xc0, at][..], &soa[2..]].concat(),
            ),
        ),
        (
            "IXFR whose SOA has trailing RDATA",
            transfer_request(0x6006, IXFR, (0, 1, 0), &{
                let mut r = soa.clone();
                r[11] += 1;
                r.push(0);
                r
            }),
        ),
    ];
    for (what, req) in &cases {
        let mut c = connect_from("127.0.0.1", s.tcp, Duration::from_secs(3)).unwrap();
        c.write_all(&frame(req)).unwrap();
        let m = read_message(&mut c).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(m[..2], req[..2], "{what}: ID");
        assert_eq!(m[3] & 0x0f, 1, "{what}: FORMERR, got {m:02x?}");
        assert_eq!(m[6..8], [0, 0], "{what}: no records");
        // Nothing else follows: the next thing on the connection is our next answer.
        c.write_all(&frame(&query(0x6100, G))).unwrap();
        let next = read_message(&mut c).unwrap();
        assert_eq!(
            next[..2],
            [0x61, 0x00],
            "{what}: a zone followed the FORMERR"
        );
    }
    // The well-formed ones still transfer: AXFR and IXFR (from an old serial: the whole zone).
    for (what, req) in [
        ("AXFR", transfer_request(0x6201, AXFR, (0, 0, 0), &[])),
        ("IXFR", transfer_request(0x6202, IXFR, (0, 1, 0), &soa)),
    ] {
        let mut c = connect_from("127.0.0.1", s.tcp, Duration::from_secs(3)).unwrap();
        c.write_all(&frame(&req)).unwrap();
        let m = read_message(&mut c).unwrap();
        assert_eq!(m[..2], req[..2], "{what}: ID");
        assert_eq!(m[3] & 0x0f, 0, "{what}: NOERROR");
        assert!(u16::from_be_bytes([m[6], m[7]]) >= 2, "{what}: {m:02x?}");
    }
    // Counted: the FORMERRs, and the transfers' requests and answers (a malformed request
    // counts as a response only: it has no question to count it by).
    let text = scrape(&s);
    let sum = |pred: &dyn Fn(&str) -> bool| -> f64 {
        text.lines()
            .filter(|l| pred(l))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let formerr =
        sum(&|l| l.starts_with("fedns_responses_total{") && l.contains("rcode=\"FORMERR\""));
    assert_eq!(formerr, cases.len() as f64, "{text}");
    let transfers = sum(&|l| {
        l.starts_with("fedns_requests_total{")
            && (l.contains("type=\"AXFR\"") || l.contains("type=\"IXFR\""))
    });
    assert_eq!(transfers, 2.0, "{text}");
}

/// The per-source share is one for the whole server, not per listen address: a source that
/// holds its share on one address and opens more on another closes its longest-idle
/// connections on the first.
#[test]
fn the_per_source_share_spans_every_listen_address() {
    let fx = Fixture::listening(
        r#"["127.0.0.1:0", "127.0.0.1:0"]"#,
        "tcp:\n  max_connections_per_source: 4\n",
    );
    let s = fx.start();
    let found = wait_for(Duration::from_secs(5), || {
        let tcp: Vec<SocketAddr> = s
            .log_lines()
            .iter()
            .filter(|l| l.contains("dns listening"))
            .filter_map(|l| addr_field(l, "tcp="))
            .collect();
        (tcp.len() == 2).then_some(tcp)
    })
    .expect("two listen addresses");
    assert_ne!(found[0], found[1]);
    let open_answered = |to: SocketAddr, base: u16| -> Vec<TcpStream> {
        (0..4)
            .map(|i| {
                let mut c = connect_from("127.0.0.5", to, Duration::from_secs(3)).unwrap();
                c.write_all(&frame(&query(base + i, G))).unwrap();
                let m = read_message(&mut c).unwrap();
                assert_eq!(m[..2], (base + i).to_be_bytes());
                c
            })
            .collect()
    };
    let mut first = open_answered(found[0], 0x7000);
    // Longer idle than the ones to come.
    std::thread::sleep(Duration::from_millis(50));
    let mut second = open_answered(found[1], 0x7100);
    let closed = wait_for(Duration::from_secs(5), || {
        first.iter_mut().all(peer_closed).then_some(())
    });
    assert!(
        closed.is_some(),
        "the first address's connections stayed open"
    );
    assert!(
        !second.iter_mut().any(peer_closed),
        "the newest connections were closed"
    );
    let text = scrape(&s);
    assert_eq!(
        metric(&text, "fedns_tcp_evicted_total{reason=\"source\"}"),
        Some(4.0)
    );
    assert_eq!(metric(&text, "fedns_tcp_connections"), Some(4.0));
    // Another source is not held to the first one's share.
    for i in 0..4 {
        assert!(ask_tcp("127.0.0.6", found[i % 2], 0x7200 + i as u16));
    }
}
