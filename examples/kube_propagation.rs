//! Propagation benchmark (issue: "an endpoint turning unready changes the DNS answer within
//! 1 s"): a test Kubernetes API server (the same one the tests use) serves one member cluster to
//! a real `fedns serve`; the benchmark flips one EndpointSlice between ready and not ready and
//! measures, over the DNS wire, the time from the change on the API server to the first answer
//! that shows it. Prints start → /readyz 200 and → first full answer, p50/p99/max, and fedns's
//! resident memory after the initial sync.
//!
//! Run through `bench/kube-propagation.sh`; arguments:
//!   --fedns PATH     the fedns binary (default target/release/fedns)
//!   --changes N      number of changes measured (default 100)
//!   --services N     extra federated services in each cluster, for scale and memory (default 0)
//!   --verbose        echo fedns's publish and snapshot log lines
//!   --clusters N     member clusters, each its own test API server in its own region
//!                    (default 1); the flips go round the clusters, so every change is one
//!                    EndpointSlice in one cluster, and the answer counts the healthy shards

#[path = "../tests/kube_api/mod.rs"]
mod kube_api;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};
use kube_api::{ApiServer, Res, kubeconfig, node, service, slice};
use serde_json::json;

const ZONE: &str = "$ORIGIN example.com.\n$TTL 3600\n@ IN SOA ns1.example.com. hostmaster.example.com. 1 3600 600 86400 30\n@ IN NS ns1.example.com.\nns1 IN A 127.0.0.1\n";
const NAME: &str = "checkout.shop.myfed.svc.example.com.";

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_string())
}

/// Number of A records in the answer for NAME.
fn answers(sock: &UdpSocket, server: SocketAddr, id: u16) -> Option<usize> {
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.add_query(Query::query(Name::from_ascii(NAME).ok()?, RecordType::A));
    sock.send_to(&m.to_vec().ok()?, server).ok()?;
    let mut buf = [0u8; 4096];
    loop {
        let (n, _) = sock.recv_from(&mut buf).ok()?;
        let r = Message::from_vec(&buf[..n]).ok()?;
        if r.metadata.id == id {
            return Some(r.answers.len());
        }
    }
}

/// The status code of `GET path` (0 when the request fails).
fn http_status(addr: SocketAddr, path: &str) -> u16 {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return 0;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = write!(s, "GET {path} HTTP/1.0\r\n\r\n");
    let mut head = [0u8; 12];
    if s.read_exact(&mut head).is_err() {
        return 0;
    }
    std::str::from_utf8(&head[9..12])
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// CPU seconds (user + system) the process has used.
fn cpu_secs(pid: u32) -> f64 {
    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command (which may hold spaces) start after the last ')'.
    let rest = s.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the command.
    (ticks(11) + ticks(12)) / 100.0
}

fn main() {
    let fedns = arg("--fedns", "target/release/fedns");
    let changes: usize = arg("--changes", "100").parse().expect("--changes N");
    let extra: usize = arg("--services", "0").parse().expect("--services N");

    let clusters: usize = arg("--clusters", "1").parse().expect("--clusters N");
    assert!(clusters >= 1, "--clusters N needs N ≥ 1");
    let apis: Vec<ApiServer> = (0..clusters).map(|_| ApiServer::start()).collect();
    let label = json!({"fedns.io/federate": "true"});
    let ready = |c: usize, r: bool| {
        slice(
            "shop",
            "checkout-1",
            "checkout",
            &[(&*format!("10.0.{c}.1"), r, false, Some("zone-b"))],
        )
    };
    for (c, api) in apis.iter().enumerate() {
        api.put(
            Res::Nodes,
            node("n1", &format!("region-{c}"), "zone-b", false),
        );
        api.put(
            Res::Services,
            service(
                "shop",
                "checkout",
                label.clone(),
                &[&*format!("203.0.113.{}", 10 + c)],
                &[],
            ),
        );
        api.put(Res::EndpointSlices, ready(c, true));
        for i in 0..extra {
            let name = format!("svc-{i}");
            let ip = format!("10.{}.{}.{}", 100 + i / 65536, (i / 256) % 256, i % 256);
            api.put(
                Res::Services,
                service("load", &name, label.clone(), &[ip.as_str()], &[]),
            );
            api.put(
                Res::EndpointSlices,
                slice(
                    "load",
                    &format!("{name}-1"),
                    &name,
                    &[(&*format!("10.1.{c}.1"), true, false, Some("zone-b"))],
                ),
            );
        }
    }

    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir_all(dir.path().join("zones")).unwrap();
    std::fs::write(dir.path().join("zones/example.com.zone"), ZONE).unwrap();
    let contexts: Vec<(String, String)> = apis
        .iter()
        .enumerate()
        .map(|(c, api)| (format!("c{c}"), api.url()))
        .collect();
    let refs: Vec<(&str, String)> = contexts
        .iter()
        .map(|(n, u)| (n.as_str(), u.clone()))
        .collect();
    std::fs::write(dir.path().join("kubeconfig"), kubeconfig(&refs)).unwrap();
    let mut members = String::new();
    for (n, _) in &contexts {
        members.push_str(&format!(
            "    - {{name: {n}, kubeconfig: kubeconfig, context: {n}}}\n"
        ));
    }
    let config = dir.path().join("fedns.yaml");
    // `all`: the global answer holds every healthy shard, so one flip shows in the count.
    std::fs::write(
        &config,
        format!("listen: [\"127.0.0.1:0\"]\nhttp: \"127.0.0.1:0\"\nworkers: 1\nzones_dir: zones\nkubernetes:\n  federation: myfed\n  zone: example.com\n  policy: all\n  max_answers: 64\n  select:\n    label: fedns.io/federate=true\n  clusters:\n{members}"),
    )
    .unwrap();

    let spawned = Instant::now();
    let mut child = Command::new(&fedns)
        .args(["serve", "--config"])
        .arg(&config)
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {fedns}: {e}"));
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let stderr = child.stderr.take().unwrap();
    let pid = child.id();
    let _guard = Kill(child);
    let udp: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
    let http: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
    let assembled: Arc<Mutex<Vec<u64>>> = Arc::default();
    let phases: Arc<Mutex<Vec<[f64; 4]>>> = Arc::default();
    let (found, found_http, found_ms) = (udp.clone(), http.clone(), assembled.clone());
    let found_phases = phases.clone();
    let verbose = std::env::args().any(|a| a == "--verbose");
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("kubernetes snapshot")
                && let Some(ms) = line
                    .split_whitespace()
                    .find_map(|t| t.strip_prefix("assembled_ms=")?.parse().ok())
            {
                found_ms.lock().unwrap().push(ms);
            }
            if verbose && (line.contains("published") || line.contains("kubernetes snapshot")) {
                eprintln!("{line}");
            }
            if line.contains("published answer table") {
                let field = |k: &str| {
                    line.split_whitespace()
                        .find_map(|t| t.strip_prefix(k)?.parse::<f64>().ok())
                        .unwrap_or(0.0)
                };
                found_phases.lock().unwrap().push([
                    field("inputs_ms="),
                    field("build_ms="),
                    field("swap_ms="),
                    field("retire_ms="),
                ]);
            }
            if line.contains("http listening")
                && let Some(a) = line
                    .split_whitespace()
                    .find_map(|t| t.strip_prefix("http=")?.trim_matches(',').parse().ok())
            {
                *found_http.lock().unwrap() = Some(a);
            }
            if line.contains("dns listening")
                && let Some(a) = line
                    .split_whitespace()
                    .find_map(|t| t.strip_prefix("udp=")?.trim_matches(',').parse().ok())
            {
                *found.lock().unwrap() = Some(a);
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let server = loop {
        if let Some(a) = *udp.lock().unwrap() {
            break a;
        }
        assert!(Instant::now() < deadline, "fedns did not start");
        std::thread::sleep(Duration::from_millis(10));
    };
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut id = 0u16;
    let mut next_id = || {
        id = id.wrapping_add(1);
        id
    };
    let started = Instant::now();
    // From the spawn: /readyz 200 (every cluster listed and its data served) and the first
    // answer holding every cluster's shard.
    let (mut readyz, mut answered) = (None, None);
    while readyz.is_none() || answered.is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "not ready or no initial answer after 120 s"
        );
        if answered.is_none() && answers(&sock, server, next_id()) == Some(clusters) {
            answered = Some(spawned.elapsed());
        }
        if readyz.is_none()
            && let Some(addr) = *http.lock().unwrap()
            && http_status(addr, "/readyz") == 200
        {
            readyz = Some(spawned.elapsed());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    println!(
        "initial sync: start → /readyz 200 {:.2} s, → first full answer {:.2} s, for {} clusters × {} services; fedns RSS {} KiB, CPU {:.1} s",
        readyz.unwrap().as_secs_f64(),
        answered.unwrap().as_secs_f64(),
        clusters,
        extra + 1,
        rss_kib(pid).unwrap_or(0),
        cpu_secs(pid)
    );

    let mut samples = Vec::with_capacity(changes);
    let mut up = vec![true; clusters];
    for k in 0..changes {
        let c = k % clusters;
        up[c] = !up[c];
        let want = up.iter().filter(|u| **u).count();
        let t0 = Instant::now();
        apis[c].put(Res::EndpointSlices, ready(c, up[c]));
        loop {
            if answers(&sock, server, next_id()) == Some(want) {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "change never showed"
            );
        }
        samples.push(t0.elapsed());
        std::thread::sleep(Duration::from_millis(20));
    }
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "propagation over {} changes: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (coalesce_ms 50)",
        samples.len(),
        ms(percentile(&samples, 0.5)),
        ms(percentile(&samples, 0.99)),
        ms(*samples.last().unwrap())
    );
    println!("fedns RSS after the run: {} KiB", rss_kib(pid).unwrap_or(0));
    let mut ms = assembled.lock().unwrap().clone();
    ms.sort();
    if let Some(max) = ms.last() {
        println!(
            "kubernetes source, snapshot assembly: median {} ms, max {max} ms over {} snapshots",
            ms[ms.len() / 2],
            ms.len()
        );
    }
    let phases = phases.lock().unwrap().clone();
    if !phases.is_empty() {
        let median = |i: usize| {
            let mut v: Vec<f64> = phases.iter().map(|p| p[i]).collect();
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        println!(
            "merger, median per publish: inputs {:.1} ms, build {:.1} ms, swap {:.1} ms, retire {:.1} ms",
            median(0),
            median(1),
            median(2),
            median(3)
        );
    }
    if let Some(addr) = *http.lock().unwrap() {
        use std::io::{Read, Write};
        if let Ok(mut s) = std::net::TcpStream::connect(addr) {
            let _ = write!(s, "GET /metrics HTTP/1.0\r\n\r\n");
            let mut body = String::new();
            let _ = s.read_to_string(&mut body);
            let get = |name: &str| {
                body.lines()
                    .find(|l| l.starts_with(name))
                    .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                    .unwrap_or(0.0)
            };
            let (sum, count) = (
                get("fedns_publish_duration_seconds_sum"),
                get("fedns_publish_duration_seconds_count"),
            );
            println!(
                "merger: {count} tables published, mean build+publish {:.1} ms",
                1000.0 * sum / count.max(1.0)
            );
        }
    }
}
