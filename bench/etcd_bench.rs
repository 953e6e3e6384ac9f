//! etcd read-mode measurements: load time and memory for N keys, and put → answer latency.
//!
//! Starts its own etcd (Debian `etcd-server`) on loopback with a temp data dir, loads N SkyDNS
//! keys (`/skydns/net/example/ns<i % 100>/h<i>`, one A each), starts the release fedns binary in
//! read mode, and reports:
//! - time from spawn to `/readyz` 200 and to the first correct answer, and fedns's RSS (VmRSS,
//!   VmHWM) once loaded;
//! - put → answer latency over P puts (p50/p99/max), polling over UDP every 0.5 ms.
//!
//! Run: `cargo build --release && cargo run --release --example etcd_bench -- 100000 200`
//! (`bench/etcd.sh` does exactly that).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn ask(sock: &UdpSocket, to: SocketAddr, name: &str, id: u16) -> Option<Message> {
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    sock.send_to(&m.to_vec().unwrap(), to).ok()?;
    let mut buf = [0u8; 4096];
    let (n, _) = sock.recv_from(&mut buf).ok()?;
    Message::from_vec(&buf[..n]).ok()
}

fn http_status(addr: SocketAddr, path: &str) -> u16 {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return 0;
    };
    let _ = write!(s, "GET {path} HTTP/1.0\r\n\r\n");
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

fn proc_status(pid: u32, field: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .map(|l| l[field.len()..].trim().to_string())
        .unwrap_or_default()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let puts: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(200);
    // Optional: keep etcd and fedns up this long afterwards (e.g. for dnsperf).
    let hold: u64 = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(0);
    let bin = std::env::var("FEDNS_BIN").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/target/release/fedns").to_string()
    });
    let dir = tempfile::tempdir().unwrap();
    let (cp, pp) = (port(), port());
    let ep = format!("http://127.0.0.1:{cp}");
    let peer = format!("http://127.0.0.1:{pp}");
    let _etcd = Kill(
        Command::new("etcd")
            .args(["--name", "b", "--data-dir"])
            .arg(dir.path().join("etcd"))
            .args(["--listen-client-urls", &ep, "--advertise-client-urls", &ep])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &format!("b={peer}")])
            .args([
                "--listen-metrics-urls",
                &format!("http://127.0.0.1:{}", port()),
            ])
            .args(["--quota-backend-bytes", "4294967296"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcd (Debian etcd-server) must be installed: run ./scripts/test"),
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut client = None;
    for _ in 0..150 {
        if let Ok(mut c) = rt.block_on(etcd_client::Client::connect([ep.as_str()], None))
            && rt.block_on(c.get("probe", None)).is_ok()
        {
            client = Some(c);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut client = client.expect("etcd did not start");
    let t = Instant::now();
    for chunk in (0..n).collect::<Vec<_>>().chunks(100) {
        let ops: Vec<etcd_client::TxnOp> = chunk
            .iter()
            .map(|i| {
                etcd_client::TxnOp::put(
                    format!("/skydns/net/example/ns{}/h{i}", i % 100),
                    format!(
                        r#"{{"host":"10.{}.{}.{}","ttl":60}}"#,
                        i >> 16,
                        (i >> 8) & 255,
                        i & 255
                    ),
                    None,
                )
            })
            .collect();
        rt.block_on(client.txn(etcd_client::Txn::new().and_then(ops)))
            .unwrap();
    }
    println!(
        "loaded {n} keys into etcd in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    let (dns, http) = (port(), port());
    std::fs::create_dir_all(dir.path().join("zones")).unwrap();
    std::fs::write(
        dir.path().join("zones/example.com.zone"),
        "$ORIGIN example.com.\n@ 60 IN SOA ns1 hostmaster 1 3600 600 86400 30\nwww 60 IN A 192.0.2.80\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("fedns.yaml"),
        format!(
            "listen: [\"127.0.0.1:{dns}\"]\nhttp: \"127.0.0.1:{http}\"\nworkers: 1\nzones_dir: zones\netcd:\n  endpoints: [\"{ep}\"]\n  zones: [example.net]\n"
        ),
    )
    .unwrap();
    let t = Instant::now();
    let fedns = Kill(
        Command::new(&bin)
            .args(["serve", "--config"])
            .arg(dir.path().join("fedns.yaml"))
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("fedns.log")).unwrap())
            .spawn()
            .expect("fedns release binary: cargo build --release"),
    );
    let pid = fedns.0.id();
    let dns_addr: SocketAddr = format!("127.0.0.1:{dns}").parse().unwrap();
    let http_addr: SocketAddr = format!("127.0.0.1:{http}").parse().unwrap();
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    // Meanwhile, a zone-file name is asked every millisecond: the slowest answer shows whether
    // loading the etcd prefix stalls the DNS path.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let prober = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
            sock.set_read_timeout(Some(Duration::from_millis(500)))
                .unwrap();
            let (mut worst, mut count, mut lost) = (Duration::ZERO, 0u64, 0u64);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let t = Instant::now();
                match ask(&sock, dns_addr, "www.example.com.", 7) {
                    Some(_) => {
                        count += 1;
                        if count > 20 {
                            worst = worst.max(t.elapsed()); // skip start-up
                        }
                    }
                    None => lost += 1,
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            (worst, count, lost)
        })
    };
    let mut ready = None;
    let mut answered = None;
    let last = n - 1;
    let probe = format!("h{last}.ns{}.example.net.", last % 100);
    while t.elapsed() < Duration::from_secs(120) && (ready.is_none() || answered.is_none()) {
        if ready.is_none() && http_status(http_addr, "/readyz") == 200 {
            ready = Some(t.elapsed());
        }
        if answered.is_none()
            && ask(&sock, dns_addr, &probe, 1).is_some_and(|m| !m.answers.is_empty())
        {
            answered = Some(t.elapsed());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    if ready.is_none() || answered.is_none() {
        let log = std::fs::read_to_string(dir.path().join("fedns.log")).unwrap_or_default();
        panic!("fedns not ready/answering after 120 s; its log:\n{log}");
    }
    println!(
        "fedns: /readyz 200 after {:.2} s, first answer from etcd after {:.2} s; RSS {} (peak {})",
        ready.expect("never ready").as_secs_f64(),
        answered.expect("never answered").as_secs_f64(),
        proc_status(pid, "VmRSS:"),
        proc_status(pid, "VmHWM:")
    );
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (worst, count, lost) = prober.join().unwrap();
    println!(
        "zone-file queries during the load: {count} answered, {lost} unanswered (incl. before the socket opened), slowest {:.2} ms",
        worst.as_secs_f64() * 1000.0
    );

    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut lat = Vec::with_capacity(puts);
    for i in 0..puts {
        let ip = format!("10.250.{}.{}", i / 250, i % 250 + 1);
        let name = format!("p{i}.lat.example.net.");
        let t = Instant::now();
        rt.block_on(client.put(
            format!("/skydns/net/example/lat/p{i}"),
            format!(r#"{{"host":"{ip}"}}"#),
            None,
        ))
        .unwrap();
        loop {
            if let Some(m) = ask(&sock, dns_addr, &name, (i % 60000) as u16 + 2)
                && m.answers.iter().any(|a| a.data.to_string() == ip)
            {
                break;
            }
            if t.elapsed() > Duration::from_secs(30) {
                panic!("put {i} not visible after 30 s");
            }
            std::thread::sleep(Duration::from_micros(500));
        }
        lat.push(t.elapsed());
    }
    lat.sort();
    let pct =
        |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)].as_secs_f64() * 1000.0;
    println!(
        "put → answer over {puts} puts with {n} keys: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; RSS after {}",
        pct(0.5),
        pct(0.99),
        lat.last().unwrap().as_secs_f64() * 1000.0,
        proc_status(pid, "VmRSS:")
    );
    if hold > 0 {
        println!("serving on {dns_addr} for {hold} s");
        std::thread::sleep(Duration::from_secs(hold));
    }
}
