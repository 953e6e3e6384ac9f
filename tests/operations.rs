//! Operations end to end, with the real `fedns` binary over real sockets: what `/metrics`
//! exports (checked by `promtool check metrics`), log formats, and the drain on SIGTERM.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::{Fedns, http_get, metric};

const ZONE_COM: &str = "$ORIGIN example.com.
$TTL 3600
@    IN SOA ns1.example.com. hostmaster.example.com. 1 3600 600 86400 30
@    IN NS  ns1.example.com.
ns1  IN A   127.0.0.1
www  IN A   192.0.2.80
";

const ZONE_ORG: &str = "$ORIGIN example.org.
$TTL 600
@    IN SOA ns1.example.org. hostmaster.example.org. 7 3600 600 86400 300
@    IN NS  ns1.example.com.
";

const FED: &str = "federation:
  name: myfed
  zone: example.com
clusters:
  - name: c1
    region: east
    zones: [east-a]
services:
  - name: web
    namespace: shop
    shards:
      - cluster: c1
        addresses: [203.0.113.10]
        ready_endpoints: 1
";

/// A temp dir with `fedns.yaml` (ephemeral ports, `extra` appended), two zones and a federation.
struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new(extra: &str) -> Fixture {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir_all(dir.path().join("zones")).unwrap();
        std::fs::write(dir.path().join("zones/example.com.zone"), ZONE_COM).unwrap();
        std::fs::write(dir.path().join("zones/example.org.zone"), ZONE_ORG).unwrap();
        std::fs::write(dir.path().join("federation.yaml"), FED).unwrap();
        std::fs::write(
            dir.path().join("fedns.yaml"),
            format!(
                "listen: [\"127.0.0.1:0\"]\nhttp: \"127.0.0.1:0\"\nworkers: 2\nzones_dir: zones\nfederation_files: [federation.yaml]\n{extra}"
            ),
        )
        .unwrap();
        Fixture { dir }
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("fedns.yaml")
    }
}

/// A query for `name`/`qtype` (hand-built, RD set).
fn query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut q = Vec::new();
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.').filter(|l| !l.is_empty()) {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes());
    q
}

/// The rcode of the UDP answer to `name`/A, checking the ID.
fn ask_udp(to: SocketAddr, id: u16, name: &str) -> u8 {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    s.send_to(&query(id, name, 1), to).unwrap();
    let mut buf = [0u8; 4096];
    let (n, _) = s.recv_from(&mut buf).expect("udp answer within 2 s");
    assert!(
        n >= 12 && buf[..2] == id.to_be_bytes(),
        "bad answer to {name}"
    );
    buf[3] & 0x0f
}

/// The rcode of the TCP answer to `name`/A on `stream`.
fn ask_tcp(stream: &mut TcpStream, id: u16, name: &str) -> u8 {
    let q = query(id, name, 1);
    let mut framed = (q.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&q);
    stream.write_all(&framed).unwrap();
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).expect("tcp answer");
    let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
    stream.read_exact(&mut buf).unwrap();
    assert!(
        buf.len() >= 12 && buf[..2] == id.to_be_bytes(),
        "bad answer to {name}"
    );
    buf[3] & 0x0f
}

fn tcp(to: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&to, Duration::from_secs(2)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    s
}

fn scrape(s: &Fedns) -> String {
    let (status, body) = http_get(s.http, "/metrics");
    assert_eq!(status, 200, "{body}");
    body
}

/// `promtool check metrics` on `text`; `None` when promtool is not installed (an error under
/// CI=true, where scripts/test installs it).
fn promtool(text: &str) -> Option<(bool, String)> {
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            assert!(
                std::env::var("CI").map_or(true, |v| v != "true"),
                "promtool is missing (Debian package prometheus; scripts/test installs it)"
            );
            eprintln!("promtool not installed: skipping its check (scripts/test installs it)");
            return None;
        }
        Err(e) => panic!("promtool: {e}"),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Some((out.status.success(), report))
}

/// Every sample line of `text` whose name starts with `prefix`.
fn samples<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
    text.lines()
        .filter(|l| !l.starts_with('#') && l.starts_with(prefix))
        .collect()
}

#[test]
fn metrics_count_by_zone_and_pass_promtool() {
    let fx = Fixture::new("");
    let s = Fedns::start(&fx.config());

    // Before any query: error counters exist at 0, and nothing of unconfigured sources.
    let m0 = scrape(&s);
    for source in ["zone-files", "federation-file:federation.yaml"] {
        let key = format!("fedns_source_errors_total{{source=\"{source}\"}}");
        assert_eq!(metric(&m0, &key), Some(0.0), "{key} missing:\n{m0}");
    }
    for l in samples(&m0, "fedns_source_") {
        assert!(!l.contains('/'), "source label is a path: {l}");
    }
    assert!(
        samples(&m0, "fedns_etcd_").is_empty(),
        "etcd metrics without etcd:\n{m0}"
    );
    assert!(
        samples(&m0, "fedns_probe_").is_empty(),
        "probe metrics without probes:\n{m0}"
    );
    let build = samples(&m0, "fedns_build_info");
    assert_eq!(build.len(), 1, "{m0}");
    assert!(
        build[0].contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION")))
            && build[0].contains("commit=\"")
            && build[0].ends_with(" 1"),
        "{}",
        build[0]
    );
    assert!(
        metric(&m0, "process_resident_memory_bytes").is_some_and(|v| v > 0.0),
        "no process metrics:\n{m0}"
    );
    assert!(metric(&m0, "process_open_fds").is_some_and(|v| v > 0.0));
    // Zero-initialised responses per served zone.
    for zone in ["example.com.", "example.org.", "other"] {
        let key = format!("fedns_responses_total{{rcode=\"NXDOMAIN\",zone=\"{zone}\"}}");
        assert_eq!(metric(&m0, &key), Some(0.0), "{key} missing:\n{m0}");
    }

    // 3 UDP queries in example.com (2 NOERROR, 1 NXDOMAIN), 1 in example.org (NXDOMAIN),
    // 1 outside (REFUSED); 2 TCP queries in example.com.
    assert_eq!(ask_udp(s.udp, 1, "www.example.com."), 0);
    assert_eq!(ask_udp(s.udp, 2, "WEB.shop.myfed.svc.Example.COM."), 0);
    assert_eq!(ask_udp(s.udp, 3, "nope.example.com."), 3);
    assert_eq!(ask_udp(s.udp, 4, "nope.example.org."), 3);
    assert_eq!(ask_udp(s.udp, 5, "www.example.net."), 5);
    let mut t = tcp(s.tcp);
    assert_eq!(ask_tcp(&mut t, 6, "www.example.com."), 0);
    assert_eq!(ask_tcp(&mut t, 7, "ns1.example.com."), 0);
    drop(t);

    // Both transports count durations after the write (a loaded machine can deschedule the
    // worker in between): give them a moment.
    let m = common::wait_for(Duration::from_secs(3), || {
        let m = scrape(&s);
        (metric(&m, "fedns_request_duration_seconds_count{protocol=\"tcp\"}") == Some(2.0)
            && metric(&m, "fedns_request_duration_seconds_count{protocol=\"udp\"}") == Some(5.0))
        .then_some(m)
    })
    .unwrap_or_else(|| panic!("duration counts never reached 5 and 2:\n{}", scrape(&s)));
    let get = |k: &str| metric(&m, k).unwrap_or_else(|| panic!("{k} missing:\n{m}"));
    assert_eq!(
        get("fedns_requests_total{protocol=\"udp\",type=\"A\",zone=\"example.com.\"}"),
        3.0
    );
    assert_eq!(
        get("fedns_requests_total{protocol=\"udp\",type=\"A\",zone=\"example.org.\"}"),
        1.0
    );
    assert_eq!(
        get("fedns_requests_total{protocol=\"udp\",type=\"A\",zone=\"other\"}"),
        1.0
    );
    assert_eq!(
        get("fedns_requests_total{protocol=\"tcp\",type=\"A\",zone=\"example.com.\"}"),
        2.0
    );
    assert_eq!(
        get("fedns_responses_total{rcode=\"NOERROR\",zone=\"example.com.\"}"),
        4.0
    );
    assert_eq!(
        get("fedns_responses_total{rcode=\"NXDOMAIN\",zone=\"example.com.\"}"),
        1.0
    );
    assert_eq!(
        get("fedns_responses_total{rcode=\"NXDOMAIN\",zone=\"example.org.\"}"),
        1.0
    );
    assert_eq!(
        get("fedns_responses_total{rcode=\"REFUSED\",zone=\"other\"}"),
        1.0
    );
    assert_eq!(
        get("fedns_request_duration_seconds_count{protocol=\"udp\"}"),
        5.0
    );
    assert_eq!(
        get("fedns_request_duration_seconds_bucket{protocol=\"udp\",le=\"+Inf\"}"),
        5.0
    );
    assert!(get("fedns_request_duration_seconds_sum{protocol=\"udp\"}") > 0.0);
    assert_eq!(
        get("fedns_response_size_bytes_count{protocol=\"udp\"}"),
        5.0
    );
    assert_eq!(
        get("fedns_response_size_bytes_count{protocol=\"tcp\"}"),
        2.0
    );
    // Every response here is bigger than a header and smaller than 512 bytes.
    assert_eq!(
        get("fedns_response_size_bytes_bucket{protocol=\"udp\",le=\"0\"}"),
        0.0
    );
    assert_eq!(
        get("fedns_response_size_bytes_bucket{protocol=\"udp\",le=\"511\"}"),
        5.0
    );
    assert!(get("fedns_response_size_bytes_sum{protocol=\"udp\"}") > 5.0 * 12.0);
    // Zone labels are the served zones (the federation's in-cluster redirect zone too) and
    // "other", nothing else.
    for l in samples(&m, "fedns_re") {
        if let Some(i) = l.find("zone=\"") {
            let zone = l[i + 6..].split('"').next().unwrap();
            assert!(
                [
                    "example.com.",
                    "example.org.",
                    "myfed.svc.cluster.local.",
                    "other"
                ]
                .contains(&zone),
                "unexpected zone label: {l}"
            );
        }
    }

    if let Some((ok, report)) = promtool(&m) {
        assert!(
            ok,
            "promtool check metrics failed:\n{report}\n--- scrape:\n{m}"
        );
    }
}

#[test]
fn etcd_metrics_appear_only_with_etcd_configured() {
    // An etcd endpoint nobody listens on (port 1): the source stays not ready, but its
    // metrics exist from the start.
    let fx = Fixture::new(
        "etcd:\n  endpoints: [\"http://127.0.0.1:1\"]\n  prefix: /skydns\n  zones: [etcd.example.]\n",
    );
    let s = Fedns::start(&fx.config());
    let m = scrape(&s);
    assert_eq!(metric(&m, "fedns_etcd_keys"), Some(0.0), "{m}");
    assert_eq!(
        metric(&m, "fedns_etcd_invalid_values_total"),
        Some(0.0),
        "{m}"
    );
    // (It may already have counted a failed connection.)
    assert!(metric(&m, "fedns_etcd_reconnects_total").is_some(), "{m}");
    assert!(
        metric(&m, "fedns_source_errors_total{source=\"etcd:/skydns\"}").is_some(),
        "{m}"
    );
}

// ------------------------------------------------------------------------------------------
// Logs and shutdown: a child started here (not through `common::Fedns`, which forces NO_COLOR
// and reads logfmt only).
// ------------------------------------------------------------------------------------------

/// `fedns ARGS` with stderr collected line by line (raw, nothing stripped); killed on drop.
struct Child {
    child: std::process::Child,
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Child {
    fn spawn(args: &[&std::ffi::OsStr]) -> Child {
        Self::spawn_env(args, &[])
    }

    fn spawn_env(args: &[&std::ffi::OsStr], env: &[(&str, &std::ffi::OsStr)]) -> Child {
        let mut child = Command::new(common::BIN)
            .args(args)
            .envs(env.iter().copied())
            .env_remove("NO_COLOR")
            .env("RUST_LOG", "info")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn fedns");
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = log.clone();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line);
            }
        });
        Child { child, log }
    }

    fn lines(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// The address logged as `key` (`key=ADDR` in text, `"key":"ADDR"` in JSON).
    fn wait_addr(&mut self, key: &str) -> SocketAddr {
        let found = common::wait_for(Duration::from_secs(10), || {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("fedns exited ({status}):\n{}", self.lines().join("\n"));
            }
            self.lines().iter().find_map(|l| {
                let text = format!("{key}=");
                let json = format!("\"{key}\":\"");
                let rest = l
                    .split_once(&text)
                    .or_else(|| l.split_once(&json))
                    .map(|(_, r)| r)?;
                rest.split(['"', ' ', ',']).next()?.parse().ok()
            })
        });
        found.unwrap_or_else(|| panic!("no {key} address logged:\n{}", self.lines().join("\n")))
    }

    fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's PID.
        let r = unsafe { libc::kill(self.child.id() as i32, sig) };
        assert_eq!(r, 0, "kill");
    }

    fn exit_code_within(&mut self, timeout: Duration) -> Option<i32> {
        let status = common::wait_for(timeout, || self.child.try_wait().ok().flatten())
            .unwrap_or_else(|| {
                panic!(
                    "still running after {timeout:?}:\n{}",
                    self.lines().join("\n")
                )
            });
        status.code()
    }
}

fn serve_args(config: &std::path::Path, extra: &[&str]) -> Vec<std::ffi::OsString> {
    let mut v: Vec<std::ffi::OsString> = extra.iter().map(|a| a.into()).collect();
    v.extend([
        "serve".into(),
        "--config".into(),
        config.as_os_str().to_owned(),
    ]);
    v
}

fn spawn_serve(config: &std::path::Path, extra: &[&str]) -> Child {
    let args = serve_args(config, extra);
    let refs: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    Child::spawn(&refs)
}

/// Parses one logfmt line into (key, value) pairs; `Err` says where it breaks.
fn logfmt(line: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.peek() == Some(&' ') {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(out);
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c == ' ' {
                break;
            }
            if c == '"' {
                return Err(format!("quote in key after {out:?}"));
            }
            key.push(c);
            chars.next();
        }
        if chars.next() != Some('=') || key.is_empty() {
            return Err(format!("key {key:?} without a value after {out:?}"));
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    None => return Err(format!("unterminated value of {key}")),
                    Some('"') => break,
                    Some('\\') => match chars.next() {
                        Some(c @ ('"' | '\\')) => value.push(c),
                        Some('n') => value.push('\n'),
                        Some(c) => {
                            value.push('\\');
                            value.push(c);
                        }
                        None => return Err("dangling escape".into()),
                    },
                    Some(c) => value.push(c),
                }
            }
            if chars.peek().is_some_and(|c| *c != ' ') {
                return Err(format!("junk after the quoted value of {key}"));
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ' ' {
                    break;
                }
                if c == '"' || c == '=' {
                    return Err(format!("unquoted {c:?} in the value of {key}"));
                }
                value.push(c);
                chars.next();
            }
        }
        out.push((key, value));
    }
}

#[test]
fn text_logs_are_logfmt_without_ansi_when_stderr_is_not_a_terminal() {
    // A missing federation file: the error line carries a message with spaces and quotes.
    let fx = Fixture::new("");
    let mut c = spawn_serve(&fx.config(), &[]);
    c.wait_addr("http");
    c.signal(libc::SIGKILL);
    let _ = c.child.wait();
    std::fs::remove_file(fx.dir.path().join("federation.yaml")).unwrap();
    let mut bad = spawn_serve(&fx.config(), &[]);
    assert_ne!(bad.exit_code_within(Duration::from_secs(10)), Some(0));
    std::thread::sleep(Duration::from_millis(100));

    let lines = [c.lines(), bad.lines()].concat();
    assert!(lines.len() >= 4, "{lines:?}");
    for l in &lines {
        assert!(!l.contains('\x1b'), "ANSI escape in a log line: {l:?}");
        let pairs = logfmt(l).unwrap_or_else(|e| panic!("not logfmt ({e}): {l}"));
        let keys: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).take(4).collect();
        assert_eq!(keys[..3], ["time", "level", "target"], "{l}");
        assert!(pairs.iter().any(|(k, _)| k == "msg"), "{l}");
    }
    let listening = lines
        .iter()
        .find(|l| l.contains("dns listening"))
        .expect("dns listening line");
    assert!(listening.contains("msg=\"dns listening\""), "{listening}");
    let error = bad
        .lines()
        .into_iter()
        .find(|l| l.contains("level=ERROR") && l.contains("federation.yaml"))
        .unwrap_or_else(|| panic!("no error line naming the file:\n{:?}", bad.lines()));
    let msg = logfmt(&error)
        .unwrap()
        .into_iter()
        .find(|(k, _)| k == "msg")
        .unwrap()
        .1;
    assert!(
        msg.contains("federation.yaml") && msg.contains(' '),
        "{error}"
    );
}

#[test]
fn json_logs_from_the_flag_or_the_config() {
    // From the config file.
    let fx = Fixture::new("log_format: json\n");
    let mut c = spawn_serve(&fx.config(), &[]);
    c.wait_addr("udp");
    // The flag wins over the config.
    let mut t = spawn_serve(&fx.config(), &["--log-format", "text"]);
    t.wait_addr("udp");
    let fx2 = Fixture::new("");
    let mut f = spawn_serve(&fx2.config(), &["--log-format", "json"]);
    f.wait_addr("udp");

    for child in [&c, &f] {
        let lines = child.lines();
        assert!(lines.len() >= 2, "{lines:?}");
        for l in &lines {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
            assert!(v["level"].is_string() && v["target"].is_string(), "{l}");
            assert!(
                v["timestamp"].is_string() && v["message"].is_string(),
                "{l}"
            );
        }
        let listening = lines
            .iter()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .find(|v| v["message"] == "dns listening")
            .expect("dns listening");
        assert!(
            listening["udp"]
                .as_str()
                .is_some_and(|a| a.parse::<SocketAddr>().is_ok())
        );
        assert_eq!(listening["workers"], 2);
    }
    for l in t.lines() {
        assert!(l.starts_with("time="), "--log-format text must win: {l}");
    }
}

#[test]
fn sigterm_drains_readyz_first_then_tcp_then_exits_zero() {
    let fx = Fixture::new("lameduck_ms: 2000\n");
    let mut c = spawn_serve(&fx.config(), &[]);
    let http = c.wait_addr("http");
    let udp = c.wait_addr("udp");
    let tcp_addr = c.wait_addr("tcp");
    assert_eq!(http_get(http, "/readyz").0, 200);
    let mut open = tcp(tcp_addr);
    assert_eq!(ask_tcp(&mut open, 1, "www.example.com."), 0);

    let t0 = std::time::Instant::now();
    c.signal(libc::SIGTERM);
    let (status, body) = common::wait_for(Duration::from_millis(500), || {
        let r = http_get(http, "/readyz");
        (r.0 == 503).then_some(r)
    })
    .unwrap_or_else(|| panic!("/readyz not 503 within 0.5 s of SIGTERM"));
    assert_eq!(status, 503);
    assert!(body.contains("shutting down"), "{body}");

    // Lame duck: UDP, a new TCP connection and the open one all still answer.
    assert_eq!(ask_udp(udp, 2, "www.example.com."), 0);
    assert_eq!(ask_tcp(&mut tcp(tcp_addr), 3, "www.example.com."), 0);
    assert_eq!(ask_tcp(&mut open, 4, "nope.example.com."), 3);
    assert!(
        c.child.try_wait().unwrap().is_none(),
        "exited during the lame duck"
    );
    // A query half sent before the lame duck ends...
    let q = query(5, "ns1.example.com.", 1);
    let mut framed = (q.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&q);
    let mut slow = tcp(tcp_addr);
    slow.write_all(&framed[..6]).unwrap();
    assert!(
        t0.elapsed() < Duration::from_millis(1800),
        "too slow to test the lame duck"
    );
    std::thread::sleep(Duration::from_millis(2600).saturating_sub(t0.elapsed()));
    assert_eq!(
        ask_udp(udp, 6, "www.example.com."),
        0,
        "UDP still answers until exit"
    );
    // ...is finished and answered after it ended.
    slow.write_all(&framed[6..]).unwrap();
    let mut len = [0u8; 2];
    slow.read_exact(&mut len)
        .expect("the open query is answered");
    let mut resp = vec![0u8; u16::from_be_bytes(len) as usize];
    slow.read_exact(&mut resp).unwrap();
    assert_eq!(resp[..2], 5u16.to_be_bytes());
    assert_eq!(resp[3] & 0x0f, 0);
    // Idle connections are closed after the lame duck.
    let mut byte = [0u8; 1];
    assert_eq!(
        open.read(&mut byte).unwrap_or(0),
        0,
        "idle connection left open"
    );
    assert_eq!(
        c.exit_code_within(Duration::from_secs(5)),
        Some(0),
        "{:?}",
        c.lines()
    );
    assert!(
        t0.elapsed() >= Duration::from_millis(2000),
        "exited before the lame duck ended"
    );
    let log = c.lines().join("\n");
    assert!(log.contains("shutting down"), "{log}");
}

// ------------------------------------------------------------------------------------------
// Every problem at once
// ------------------------------------------------------------------------------------------

/// Runs `fedns ARGS` to completion: (exit code, stderr).
fn run(args: &[&std::ffi::OsStr]) -> (Option<i32>, String) {
    let mut c = Child::spawn(args);
    let code = c.exit_code_within(Duration::from_secs(15));
    std::thread::sleep(Duration::from_millis(50)); // the reader thread drains the pipe
    (code, c.lines().join("\n"))
}

fn check(config: &std::path::Path) -> (Option<i32>, String) {
    run(&["check".as_ref(), "--config".as_ref(), config.as_os_str()])
}

fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle:?} not in the text"))
        + 1
}

#[test]
fn check_and_serve_report_every_problem_with_line_field_and_value() {
    let extra = "edns_payload: 70000\ntcp:\n  max_connections: lots\n  idle_timeout_secs: 0\n\
                 listen: [\"127.0.0.1:0\", \"1.2.3.4\"]\n";
    let fx = Fixture::new("");
    // The config's own keys come first in the file, so the extra keys replace them.
    let cfg = format!(
        "http: \"127.0.0.1:0\"\nzones_dir: zones\nfederation_files: [federation.yaml]\n{extra}"
    );
    std::fs::write(fx.config(), &cfg).unwrap();
    // A broken zone file and a broken federation file too.
    std::fs::write(
        fx.dir.path().join("zones/example.org.zone"),
        format!("{ZONE_ORG}bad IN MX notanumber mail.example.org.\n"),
    )
    .unwrap();
    let fed = FED.replace("cluster: c1", "cluster: nowhere");
    std::fs::write(fx.dir.path().join("federation.yaml"), &fed).unwrap();

    let (code, err) = check(&fx.config());
    assert_eq!(code, Some(1), "{err}");
    let want = [
        format!(
            "fedns.yaml:{}: edns_payload: must be a number in 0..=65535, not \"70000\"",
            line_of(&cfg, "edns_payload")
        ),
        format!(
            "fedns.yaml:{}: tcp.max_connections: must be a whole number ≥ 0, not \"lots\"",
            line_of(&cfg, "max_connections")
        ),
        format!(
            "fedns.yaml:{}: listen[1]: must be ADDRESS:PORT, e.g. 127.0.0.1:53, not \"1.2.3.4\"",
            line_of(&cfg, "listen")
        ),
        format!(
            "fedns.yaml:{}: tcp.idle_timeout_secs: must be at least 1, not 0",
            line_of(&cfg, "idle_timeout_secs")
        ),
        format!("example.org.zone:{}:", ZONE_ORG.lines().count() + 1),
        format!(
            "federation.yaml:{}: services[0].shards[0].cluster",
            line_of(&fed, "cluster: nowhere")
        ),
    ];
    for w in &want {
        assert!(err.contains(w.as_str()), "missing {w:?} in:\n{err}");
    }
    assert!(
        err.lines().last().is_some_and(|l| l.trim() == "6 problems"),
        "no final count:\n{err}"
    );
    assert!(
        !err.contains("invalid u16") && !err.contains("panicked"),
        "{err}"
    );

    // serve reports the same and does not start.
    let args = serve_args(&fx.config(), &[]);
    let refs: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    let (code, log) = run(&refs);
    assert!(code.is_some_and(|c| c != 0), "{log}");
    // Log lines are logfmt: compare their messages.
    let err: String = log
        .lines()
        .filter_map(|l| logfmt(l).ok()?.into_iter().find(|(k, _)| k == "msg"))
        .map(|(_, m)| m + "\n")
        .collect();
    for w in &want {
        assert!(err.contains(w.as_str()), "serve: missing {w:?} in:\n{log}");
    }
    assert!(err.contains("6 problems"), "{err}");
    assert!(!err.contains("dns listening"), "{err}");
}

#[test]
fn a_malformed_etcd_endpoint_is_a_config_error_in_check_and_serve() {
    let fx = Fixture::new(
        "etcd:\n  endpoints: [\"http://127.0.0.1:2379\", \"htp:/127.0.0.1:2379x\", \"127.0.0.1:99999\"]\n  zones: [skydns.local]\n",
    );
    let text = std::fs::read_to_string(fx.config()).unwrap();
    let line = line_of(&text, "endpoints:");
    let (code, err) = check(&fx.config());
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "fedns.yaml:{line}: etcd.endpoints[1]: \"htp:/127.0.0.1:2379x\""
        )),
        "{err}"
    );
    assert!(
        err.contains("etcd.endpoints[2]: \"127.0.0.1:99999\": port \"99999\""),
        "{err}"
    );
    assert!(
        !err.contains("endpoints[0]"),
        "a good endpoint was rejected:\n{err}"
    );
    assert!(err.trim_end().ends_with("2 problems"), "{err}");
    // serve refuses at once instead of retrying forever.
    let args = serve_args(&fx.config(), &[]);
    let refs: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    let (code, err) = run(&refs);
    assert!(code.is_some_and(|c| c != 0), "{err}");
    assert!(err.contains("etcd.endpoints[1]"), "{err}");
}

// ------------------------------------------------------------------------------------------
// systemd
// ------------------------------------------------------------------------------------------

#[test]
fn tells_systemd_when_ready_reloading_and_stopping() {
    let fx = Fixture::new("lameduck_ms: 200\n");
    let sock_path = fx.dir.path().join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let recv = || {
        let mut buf = [0u8; 512];
        let n = sock.recv(&mut buf).expect("a notification within 10 s");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let args = serve_args(&fx.config(), &[]);
    let refs: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    let mut c = Child::spawn_env(&refs, &[("NOTIFY_SOCKET", sock_path.as_os_str())]);
    assert_eq!(recv(), "READY=1");
    // Ready means serving.
    let udp = c.wait_addr("udp");
    assert_eq!(ask_udp(udp, 1, "www.example.com."), 0);

    c.signal(libc::SIGHUP);
    let reloading = recv();
    let mut lines = reloading.lines();
    assert_eq!(lines.next(), Some("RELOADING=1"), "{reloading}");
    let usec = lines
        .next()
        .and_then(|l| l.strip_prefix("MONOTONIC_USEC="))
        .and_then(|v| v.parse::<u64>().ok());
    assert!(usec.is_some_and(|u| u > 0), "{reloading}");
    assert_eq!(recv(), "READY=1");

    c.signal(libc::SIGTERM);
    assert_eq!(recv(), "STOPPING=1");
    assert_eq!(c.exit_code_within(Duration::from_secs(10)), Some(0));
}

#[test]
fn systemd_unit_is_hardened() {
    let unit = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/systemd/fedns.service");
    let text = std::fs::read_to_string(unit).unwrap();
    for want in [
        "Type=notify",
        "CapabilityBoundingSet=",
        "SystemCallFilter=",
        "RestrictAddressFamilies=",
    ] {
        assert!(text.contains(want), "no {want} in {unit}");
    }
    let out = match Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager", unit])
        .output()
    {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            assert!(
                std::env::var("CI").map_or(true, |v| v != "true"),
                "systemd-analyze is missing (Debian package systemd; scripts/test installs it)"
            );
            eprintln!("systemd-analyze not installed: skipping the exposure rating");
            return;
        }
        Err(e) => panic!("systemd-analyze: {e}"),
    };
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let level: f64 = report
        .lines()
        .find_map(|l| l.split_once("Overall exposure level for fedns.service:"))
        .and_then(|(_, r)| r.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{report}"));
    assert!(level <= 5.0, "exposure {level} > 5.0:\n{report}");
}

// ------------------------------------------------------------------------------------------
// Config reload
// ------------------------------------------------------------------------------------------

/// Replaces `path` the way editors and ConfigMap updates do: a temp file, then a rename.
fn replace_file(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("tmp~");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[test]
fn config_reload_rejects_a_bad_file_with_every_problem_and_names_restart_only_changes() {
    let fx = Fixture::new("watch_interval_ms: 100\n");
    let good = std::fs::read_to_string(fx.config()).unwrap();
    let s = Fedns::start(&fx.config());
    let m = scrape(&s);
    assert_eq!(
        metric(&m, "fedns_config_last_reload_successful"),
        Some(1.0),
        "{m}"
    );
    assert_eq!(metric(&m, "fedns_config_restart_pending"), Some(0.0), "{m}");

    // Broken: two problems, both logged; the old config keeps serving.
    replace_file(
        &fx.config(),
        &format!("{good}edns_payload: abc\ntcp:\n  max_connections: 0\n"),
    );
    s.wait_log(Duration::from_secs(5), |l| {
        l.contains("config reload rejected")
    })
    .unwrap_or_else(|| panic!("bad config not reported:\n{}", s.log_text()));
    let log = s.log_text();
    assert!(
        log.contains("edns_payload: must be a number in 0..=65535"),
        "{log}"
    );
    assert!(
        log.contains("tcp.max_connections: must be at least 1"),
        "{log}"
    );
    assert!(log.contains("problems=2"), "{log}");
    assert_eq!(
        metric(&scrape(&s), "fedns_config_last_reload_successful"),
        Some(0.0)
    );
    assert_eq!(ask_udp(s.udp, 1, "www.example.com."), 0);

    // Valid, with a setting that needs a restart: named, and pending.
    // (Fewer workers than the open address has: closing a socket could lose queries.)
    replace_file(
        &fx.config(),
        &format!(
            "{}log_format: json\n",
            good.replace("workers: 2", "workers: 1")
        ),
    );
    let line = s
        .wait_log(Duration::from_secs(5), |l| l.contains("next restart"))
        .unwrap_or_else(|| panic!("no restart notice:\n{}", s.log_text()));
    assert!(line.contains("settings=workers,log_format"), "{line}");
    let m = scrape(&s);
    assert_eq!(
        metric(&m, "fedns_config_last_reload_successful"),
        Some(1.0),
        "{m}"
    );
    assert_eq!(metric(&m, "fedns_config_restart_pending"), Some(1.0), "{m}");
    assert!(
        metric(&m, "fedns_config_last_reload_success_timestamp_seconds").is_some_and(|t| t > 1e9),
        "{m}"
    );

    // Back to the running config.
    replace_file(&fx.config(), &good);
    s.wait_log(Duration::from_secs(5), |l| l.contains("agree again"))
        .unwrap_or_else(|| panic!("no all-clear:\n{}", s.log_text()));
    assert_eq!(
        metric(&scrape(&s), "fedns_config_restart_pending"),
        Some(0.0)
    );

    // SIGHUP re-reads it even unchanged.
    let reloaded = |s: &Fedns| {
        s.log_lines()
            .iter()
            .filter(|l| l.contains("msg=\"config reloaded\""))
            .count()
    };
    let before = reloaded(&s);
    // SAFETY: kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(s.child.id() as i32, libc::SIGHUP) }, 0);
    common::wait_for(Duration::from_secs(5), || {
        (reloaded(&s) > before).then_some(())
    })
    .unwrap_or_else(|| panic!("SIGHUP did not re-read the config:\n{}", s.log_text()));
}

// ------------------------------------------------------------------------------------------
// Live reload of every setting
// ------------------------------------------------------------------------------------------

/// Two clusters in two regions: a geo name answers per client location.
const FED_GEO: &str = "federation:
  name: myfed
  zone: example.com
clusters:
  - {name: east1, region: us-east1, zones: [us-east1-b]}
  - {name: west1, region: us-west2, zones: [us-west2-a]}
services:
  - name: web
    namespace: shop
    shards:
      - {cluster: east1, addresses: [203.0.113.10], ready_endpoints: 1}
      - {cluster: west1, addresses: [198.51.100.20], ready_endpoints: 1}
";

const WEB: &str = "web.shop.myfed.svc.example.com.";

/// The common part of the live-reload configs: `extra` varies.
fn live_config(extra: &str) -> String {
    format!(
        "listen: [\"127.0.0.1:0\"]\nhttp: \"127.0.0.1:0\"\nworkers: 2\nzones_dir: zones\nfederation_files: [federation.yaml]\nwatch_interval_ms: 100\n{extra}"
    )
}

fn geo_fixture(extra: &str) -> Fixture {
    let fx = Fixture::new("");
    std::fs::write(fx.dir.path().join("federation.yaml"), FED_GEO).unwrap();
    std::fs::write(fx.config(), live_config(extra)).unwrap();
    fx
}

/// A hickory query message.
fn message(
    id: u16,
    name: &str,
    t: hickory_proto::rr::RecordType,
    class: hickory_proto::rr::DNSClass,
    edns: bool,
) -> Vec<u8> {
    use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    let mut q = Query::query(hickory_proto::rr::Name::from_ascii(name).unwrap(), t);
    q.set_query_class(class);
    m.add_query(q);
    if edns {
        m.set_edns(Edns::new());
    }
    m.to_vec().unwrap()
}

/// The decoded UDP answer to `req`, asked from the loopback address `from`.
fn exchange_from(to: SocketAddr, from: &str, req: &[u8]) -> hickory_proto::op::Message {
    let s = UdpSocket::bind((from, 0)).expect("bind a loopback client address");
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    s.send_to(req, to).unwrap();
    let mut buf = [0u8; 4096];
    let (n, _) = s.recv_from(&mut buf).expect("udp answer within 2 s");
    hickory_proto::op::Message::from_vec(&buf[..n]).expect("answer decodes")
}

/// A federation file's zone line with the MCS cluster-set domain after it.
const WITH_CLUSTERSET: &str = "  zone: example.com\n  clusterset_domain: clusterset.local\n";

/// The rcode and A records `s` answers for `name`, as one string to compare.
fn rcode_and_a(s: &Fedns, name: &str) -> String {
    use hickory_proto::rr::{DNSClass, RecordType};
    let m = exchange_from(
        s.udp,
        "127.0.0.1",
        &message(1, name, RecordType::A, DNSClass::IN, false),
    );
    format!("{:?} {:?}", m.metadata.response_code, a_records(&m))
}

fn a_records(m: &hickory_proto::op::Message) -> Vec<String> {
    let mut v: Vec<String> = m
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            hickory_proto::rr::RData::A(a) => Some(a.0.to_string()),
            _ => None,
        })
        .collect();
    v.sort();
    v
}

/// What the server says: the A records of `WEB` for a client at `from`, the advertised EDNS
/// payload, the CH TXT id.server answer (or the rcode), and the AXFR rcode over TCP.
#[derive(Debug, PartialEq)]
struct Observed {
    web: Vec<String>,
    /// The same, asked by a resolver at 127.0.0.1 for the client subnet of `from`/24 (ECS).
    web_ecs: Vec<String>,
    payload: u16,
    id_server: String,
    axfr: u8,
}

fn observe(s: &Fedns, from: &str) -> Observed {
    use hickory_proto::rr::{DNSClass, RData, RecordType};
    let web = a_records(&exchange_from(
        s.udp,
        from,
        &message(1, WEB, RecordType::A, DNSClass::IN, false),
    ));
    let web_ecs = {
        use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
        use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsOption};
        let mut m = Message::new(5, MessageType::Query, OpCode::Query);
        m.add_query(Query::query(
            hickory_proto::rr::Name::from_ascii(WEB).unwrap(),
            RecordType::A,
        ));
        let mut edns = Edns::new();
        edns.options_mut()
            .insert(EdnsOption::Subnet(ClientSubnet::new(
                from.parse().unwrap(),
                24,
                0,
            )));
        m.set_edns(edns);
        a_records(&exchange_from(s.udp, "127.0.0.1", &m.to_vec().unwrap()))
    };
    let m = exchange_from(
        s.udp,
        "127.0.0.1",
        &message(2, "www.example.com.", RecordType::A, DNSClass::IN, true),
    );
    let payload = m.edns.as_ref().map_or(0, |e| e.max_payload());
    let m = exchange_from(
        s.udp,
        "127.0.0.1",
        &message(3, "id.server.", RecordType::TXT, DNSClass::CH, false),
    );
    let id_server = match m.answers.first().map(|r| &r.data) {
        Some(RData::TXT(t)) => t.to_string(),
        _ => format!("rcode {:?}", m.metadata.response_code),
    };
    let mut stream = tcp(s.tcp);
    let q = message(4, "example.com.", RecordType::AXFR, DNSClass::IN, false);
    let mut framed = (q.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&q);
    stream.write_all(&framed).unwrap();
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).expect("axfr answer");
    let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
    stream.read_exact(&mut buf).unwrap();
    Observed {
        web,
        web_ecs,
        payload,
        id_server,
        axfr: buf[3] & 0x0f,
    }
}

/// Whether a third connection from 127.0.0.1 closes the first (a per-source share of 2).
fn tcp_share_of_two(s: &Fedns) -> bool {
    // Connections of earlier checks close first.
    std::thread::sleep(Duration::from_millis(200));
    let mut conns: Vec<TcpStream> = (0..3).map(|_| tcp(s.tcp)).collect();
    for (i, c) in conns.iter_mut().enumerate().take(2) {
        assert_eq!(ask_tcp(c, 100 + i as u16, "www.example.com."), 0);
    }
    let first = &mut conns[0];
    first
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut b = [0u8; 1];
    match first.read(&mut b) {
        Ok(0) => true,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => true,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            false
        }
        other => panic!("unexpected read on an idle connection: {other:?}"),
    }
}

fn sighup(s: &Fedns) {
    // SAFETY: kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(s.child.id() as i32, libc::SIGHUP) }, 0);
}

/// How many `config reloaded` lines the log has.
fn reloads(s: &Fedns) -> usize {
    s.log_lines()
        .iter()
        .filter(|l| l.contains("msg=\"config reloaded"))
        .count()
}

/// Writes `text` as the config, lets the poll (or a SIGHUP) pick it up, and waits for the
/// reload to be reported.
fn reload_with(s: &Fedns, config: &std::path::Path, text: &str, hup: bool) {
    let before = reloads(s);
    replace_file(config, text);
    if hup {
        sighup(s);
    }
    common::wait_for(Duration::from_secs(10), || {
        (reloads(s) > before).then_some(())
    })
    .unwrap_or_else(|| panic!("the reload was not reported:\n{}", s.log_text()));
}

#[test]
fn serving_settings_and_geo_reload_live_on_sighup_and_on_change() {
    let geo_east = "geo:\n  client_networks:\n    - {cidr: 127.1.0.0/16, region: us-east1}\n";
    let fx = geo_fixture(geo_east);
    let s = Fedns::start(&fx.config());
    let both = vec!["198.51.100.20".to_string(), "203.0.113.10".to_string()];
    // 127.2.0.9 is nowhere yet: every healthy shard.
    assert_eq!(
        observe(&s, "127.2.0.9"),
        Observed {
            web: both.clone(),
            web_ecs: both.clone(),
            payload: 1232,
            id_server: "rcode Refused".into(),
            axfr: 5,
        }
    );

    assert!(
        !tcp_share_of_two(&s),
        "64 connections per source by default"
    );
    // By SIGHUP: a new client network, EDNS payload, identity, transfer ACL and TCP share.
    let changed = format!(
        "{geo_east}    - {{cidr: 127.2.0.0/16, region: us-west2}}\nedns_payload: 1400\nidentity:\n  id: replica-7\ntransfers:\n  allow: [127.0.0.0/8]\ntcp:\n  max_connections_per_source: 2\n"
    );
    reload_with(&s, &fx.config(), &live_config(&changed), true);
    // The new locator comes with the table built for it: wait for that publish.
    let got = common::wait_for(Duration::from_secs(10), || {
        let o = observe(&s, "127.2.0.9");
        (o.web == ["198.51.100.20"]).then_some(o)
    })
    .unwrap_or_else(|| panic!("geo did not change:\n{}", s.log_text()));
    assert_eq!(
        got,
        Observed {
            web: vec!["198.51.100.20".into()],
            web_ecs: vec!["198.51.100.20".into()],
            payload: 1400,
            id_server: "replica-7".into(),
            axfr: 0,
        }
    );
    // Connections of the checks above may still be closing on a loaded machine: asked again.
    assert!(
        common::wait_for(Duration::from_secs(10), || tcp_share_of_two(&s)
            .then_some(()))
        .is_some(),
        "the reloaded per-source share"
    );
    // East clients are unaffected.
    assert_eq!(
        a_records(&exchange_from(
            s.udp,
            "127.1.0.9",
            &message(
                9,
                WEB,
                hickory_proto::rr::RecordType::A,
                hickory_proto::rr::DNSClass::IN,
                false
            )
        )),
        ["203.0.113.10"]
    );
    let m = scrape(&s);
    assert_eq!(metric(&m, "fedns_config_restart_pending"), Some(0.0), "{m}");
    assert_eq!(metric(&m, "fedns_config_last_reload_successful"), Some(1.0));

    // By the file poll alone: back, plus RRL (5/s, nothing slips), which a burst shows.
    reload_with(
        &s,
        &fx.config(),
        &live_config(&format!(
            "{geo_east}rrl:\n  responses_per_second: 5\n  slip: 0\n"
        )),
        false,
    );
    let o = common::wait_for(Duration::from_secs(10), || {
        let o = observe(&s, "127.2.0.9");
        (o.web == both).then_some(o)
    })
    .unwrap_or_else(|| panic!("geo did not change back:\n{}", s.log_text()));
    assert_eq!((o.payload, o.axfr, &o.web_ecs), (1232, 5, &both), "{o:?}");
    assert_eq!(o.id_server, "rcode Refused");
    assert!(!tcp_share_of_two(&s), "the share is back at 64");
    let sock = UdpSocket::bind("127.0.0.5:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let q = query(7, "www.example.com.", 1);
    for _ in 0..50 {
        sock.send_to(&q, s.udp).unwrap();
    }
    let mut answered = 0;
    let mut buf = [0u8; 512];
    while sock.recv_from(&mut buf).is_ok() {
        answered += 1;
    }
    assert!(
        (1..40).contains(&answered),
        "RRL at 5/s let {answered} of a burst of 50 through"
    );
    let m = scrape(&s);
    assert_eq!(metric(&m, "fedns_config_restart_pending"), Some(0.0), "{m}");
}

#[test]
fn a_rejected_reload_keeps_every_old_value_serving() {
    let fx = geo_fixture("identity:\n  id: old-id\nedns_payload: 1300\n");
    let s = Fedns::start(&fx.config());
    let before = observe(&s, "127.2.0.9");
    assert_eq!(
        (before.payload, before.id_server.as_str()),
        (1300, "old-id")
    );
    // New values beside a bad one, and a GeoIP database that cannot be read.
    replace_file(
        &fx.config(),
        &live_config("identity:\n  id: new-id\nedns_payload: 1400\ntcp:\n  max_connections: 0\n"),
    );
    sighup(&s);
    s.wait_log(Duration::from_secs(10), |l| {
        l.contains("config reload rejected")
    })
    .unwrap_or_else(|| panic!("bad config not reported:\n{}", s.log_text()));
    assert_eq!(observe(&s, "127.2.0.9"), before);
    let rejected = |s: &Fedns| {
        s.log_lines()
            .iter()
            .filter(|l| l.contains("config reload rejected"))
            .count()
    };
    let n = rejected(&s);
    replace_file(
        &fx.config(),
        &live_config(
            "identity:\n  id: new-id\ngeo:\n  regions:\n    - {name: us-east1, lat: 33.2, lon: -80.0}\n  geoip_db: /nonexistent/GeoLite2-City.mmdb\n",
        ),
    );
    common::wait_for(Duration::from_secs(10), || (rejected(&s) > n).then_some(()))
        .unwrap_or_else(|| panic!("unreadable GeoIP database not rejected:\n{}", s.log_text()));
    assert!(
        s.log_lines()
            .iter()
            .any(|l| l.contains("geo.geoip_db") && l.contains("GeoLite2-City.mmdb")),
        "{}",
        s.log_text()
    );
    assert_eq!(observe(&s, "127.2.0.9"), before);
    // An address that cannot be bound: nothing of the new version applies.
    let taken = UdpSocket::bind("127.0.0.3:0").unwrap();
    let n = rejected(&s);
    replace_file(
        &fx.config(),
        &live_config("identity:\n  id: new-id\n").replace(
            "listen: [\"127.0.0.1:0\"]",
            &format!(
                "listen: [\"127.0.0.1:0\", \"127.0.0.4:0\", \"{}\"]",
                taken.local_addr().unwrap()
            ),
        ),
    );
    common::wait_for(Duration::from_secs(10), || (rejected(&s) > n).then_some(()))
        .unwrap_or_else(|| panic!("a taken address not rejected:\n{}", s.log_text()));
    let line = s
        .log_lines()
        .into_iter()
        .find(|l| l.contains("listen:"))
        .unwrap_or_default();
    assert!(
        line.contains(&taken.local_addr().unwrap().to_string()),
        "{line}"
    );
    assert_eq!(observe(&s, "127.2.0.9"), before);
    // 127.0.0.4, bound before the failure, was closed again.
    assert!(
        s.log_lines()
            .iter()
            .any(|l| l.contains("dns no longer listening") && l.contains("udp=127.0.0.4")),
        "{}",
        s.log_text()
    );
    assert_eq!(
        metric(&scrape(&s), "fedns_config_last_reload_successful"),
        Some(0.0)
    );
}

#[test]
fn no_query_is_lost_across_reloads_of_listen_geo_and_settings() {
    use std::sync::atomic::{AtomicBool, Ordering};
    const QUERIES: usize = 20_000;
    let fx = geo_fixture("");
    let s = Fedns::start(&fx.config());
    let client = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
    let _ = client.set_recv_buffer_size(8 << 20);
    client
        .bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    let client: UdpSocket = client.into();
    client
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let receiver = client.try_clone().unwrap();
    let done = std::sync::Arc::new(AtomicBool::new(false));
    let done_r = done.clone();
    // Counts each ID once: every query gets exactly one answer.
    let counter = std::thread::spawn(move || {
        let mut seen = vec![false; QUERIES];
        let mut buf = [0u8; 1500];
        let mut idle_after_done = 0;
        loop {
            match receiver.recv_from(&mut buf) {
                Ok((n, _)) if n >= 12 => {
                    let id = u16::from_be_bytes([buf[0], buf[1]]) as usize;
                    if id < QUERIES {
                        seen[id] = true;
                    }
                }
                Ok(_) => {}
                Err(_) if done_r.load(Ordering::Relaxed) => {
                    idle_after_done += 1;
                    if idle_after_done >= 20 {
                        break;
                    }
                }
                Err(_) => {}
            }
        }
        seen.iter().filter(|s| **s).count()
    });
    let to = s.udp;
    let sender = std::thread::spawn(move || {
        // 20 queries every 5 ms: 4,000 a second, about 5 s in all.
        let started = std::time::Instant::now();
        for id in 0..QUERIES {
            if id % 20 == 0 {
                let due = Duration::from_millis(5 * (id / 20) as u64);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    std::thread::sleep(wait);
                }
            }
            client.send_to(&query(id as u16, WEB, 1), to).unwrap();
        }
    });
    // Meanwhile: add an address, change geo and settings, drop the address, several times;
    // from the second round on, with a third worker per address.
    let geo = "geo:\n  client_networks:\n    - {cidr: 127.2.0.0/16, region: us-west2}\n";
    let mut extra_addrs = Vec::new();
    for round in 0..3 {
        let workers = |c: String| {
            if round == 0 {
                c
            } else {
                c.replace("workers: 2", "workers: 3")
            }
        };
        let with_extra = workers(
            live_config(&format!("{geo}edns_payload: {}\n", 1300 + round)).replace(
                "listen: [\"127.0.0.1:0\"]",
                "listen: [\"127.0.0.1:0\", \"127.0.0.2:0\"]",
            ),
        );
        let opened = s
            .log_lines()
            .iter()
            .filter(|l| l.contains("dns listening"))
            .count();
        reload_with(&s, &fx.config(), &with_extra, round % 2 == 0);
        let line = common::wait_for(Duration::from_secs(10), || {
            s.log_lines()
                .iter()
                .filter(|l| l.contains("dns listening"))
                .nth(opened)
                .cloned()
        })
        .unwrap_or_else(|| panic!("the new address was not opened:\n{}", s.log_text()));
        let extra = common::addr_field(&line, "udp=").unwrap();
        assert_eq!(extra.ip().to_string(), "127.0.0.2", "{line}");
        // The added address answers.
        assert_eq!(ask_udp(extra, 60_000 + round as u16, "www.example.com."), 0);
        extra_addrs.push(extra);
        reload_with(&s, &fx.config(), &workers(live_config("")), round % 2 == 1);
        s.wait_log(Duration::from_secs(10), |l| {
            l.contains("dns no longer listening") && l.contains(&extra.to_string())
        })
        .unwrap_or_else(|| panic!("the removed address still listens:\n{}", s.log_text()));
    }
    sender.join().unwrap();
    done.store(true, Ordering::Relaxed);
    let added = s
        .log_lines()
        .into_iter()
        .find(|l| l.contains("dns workers added"))
        .unwrap_or_else(|| panic!("no worker added:\n{}", s.log_text()));
    assert!(added.contains("workers=3"), "{added}");
    let answered = counter.join().unwrap();
    assert_eq!(
        answered,
        QUERIES,
        "{} of {QUERIES} queries unanswered across the reloads",
        QUERIES - answered
    );
    // A removed address no longer answers.
    let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
    probe
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    probe
        .send_to(&query(1, "www.example.com.", 1), extra_addrs[0])
        .unwrap();
    let mut buf = [0u8; 512];
    assert!(
        probe.recv_from(&mut buf).is_err(),
        "a removed address answered"
    );
    let m = scrape(&s);
    assert_eq!(metric(&m, "fedns_config_restart_pending"), Some(0.0), "{m}");
}

const FED_PROBED: &str = "federation:
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
";

#[test]
fn probes_reload_live_and_keep_their_verdicts_across_a_rule_change() {
    // Only 127.0.0.11 listens on the probed port.
    let listener = std::net::TcpListener::bind("127.0.0.11:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for c in listener.incoming() {
            drop(c);
        }
    });
    let fx = Fixture::new("");
    std::fs::write(fx.dir.path().join("federation.yaml"), FED_PROBED).unwrap();
    std::fs::write(fx.config(), live_config("")).unwrap();
    let s = Fedns::start(&fx.config());
    let a = || {
        use hickory_proto::rr::{DNSClass, RecordType};
        a_records(&exchange_from(
            s.udp,
            "127.0.0.1",
            &message(
                1,
                "probed.shop.myfed.svc.example.com.",
                RecordType::A,
                DNSClass::IN,
                false,
            ),
        ))
    };
    let both = vec!["127.0.0.11".to_string(), "127.0.0.12".to_string()];
    assert_eq!(a(), both);
    let rule = |interval: u32| {
        live_config(&format!(
            "probes:\n  - {{federation: myfed, type: tcp, port: {port}, interval_ms: {interval}, timeout_ms: 300, up_after: 2, down_after: 2}}\n"
        ))
    };
    // Probes added by a reload: the shard that fails them leaves the answer.
    reload_with(&s, &fx.config(), &rule(100), true);
    common::wait_for(Duration::from_secs(10), || {
        (a() == ["127.0.0.11"]).then_some(())
    })
    .unwrap_or_else(|| panic!("probes did not start: {:?}\n{}", a(), s.log_text()));
    assert_eq!(metric(&scrape(&s), "fedns_probe_shards_down"), Some(1.0));
    // A changed rule: the targets are probed anew, and the last verdicts hold meanwhile.
    reload_with(&s, &fx.config(), &rule(150), false);
    for _ in 0..20 {
        assert_eq!(
            a(),
            ["127.0.0.11"],
            "a verdict was lost across the rule change"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Probes removed: every shard answers again.
    reload_with(&s, &fx.config(), &live_config(""), true);
    common::wait_for(Duration::from_secs(10), || (a() == both).then_some(()))
        .unwrap_or_else(|| panic!("probes did not stop: {:?}\n{}", a(), s.log_text()));
    assert_eq!(
        metric(&scrape(&s), "fedns_config_restart_pending"),
        Some(0.0)
    );
}

/// A reload runs the checks `check` and the start make against the federation files: a second
/// federation file with the same `clusterset_domain`, or a `geo.local_cluster` naming no
/// cluster, is refused with check's message (file, field, value), logged, counted, and the
/// old config keeps serving; a good version after them applies.
#[test]
fn reload_refuses_what_check_refuses_and_keeps_the_old_config() {
    let fx = Fixture::new("");
    let dir = fx.dir.path();
    let mcs_fed = FED.replace("  zone: example.com\n", WITH_CLUSTERSET);
    std::fs::write(dir.join("federation.yaml"), &mcs_fed).unwrap();
    std::fs::write(
        dir.join("other.yaml"),
        mcs_fed
            .replace("name: myfed", "name: other")
            .replace("name: web", "name: api"),
    )
    .unwrap();
    let good = live_config("identity:\n  id: first\n");
    std::fs::write(fx.config(), &good).unwrap();
    // `check` refuses both versions the reloads below will be given.
    let twice = good.replace("[federation.yaml]", "[federation.yaml, other.yaml]");
    let nosuch = format!("{good}geo:\n  local_cluster: nosuch\n");
    for (bad, said) in [
        (
            &twice,
            "federation.clusterset_domain: \"clusterset.local\": federation \"myfed\" already serves",
        ),
        (&nosuch, "geo.local_cluster: \"nosuch\" is no cluster"),
    ] {
        let path = dir.join("candidate.yaml");
        std::fs::write(&path, bad).unwrap();
        let (code, out) = check(&path);
        assert_ne!(code, Some(0), "{out}");
        assert!(out.contains(said), "{out}");
    }
    let s = Fedns::start(&fx.config());
    let a = |name: &str| rcode_and_a(&s, name);
    let mcs = "web.shop.svc.clusterset.local.";
    assert_eq!(a(mcs), "NoError [\"203.0.113.10\"]");
    let rejected = |s: &Fedns| {
        s.log_lines()
            .iter()
            .filter(|l| l.contains("config reload rejected"))
            .count()
    };
    for (n, (bad, file, said)) in [
        (
            &twice,
            "other.yaml",
            "federation.clusterset_domain: \\\"clusterset.local\\\": federation \\\"myfed\\\" already serves",
        ),
        (
            &nosuch,
            "fedns.yaml",
            "geo.local_cluster: \\\"nosuch\\\" is no cluster",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        replace_file(&fx.config(), &bad.replace("id: first", "id: second"));
        sighup(&s);
        common::wait_for(Duration::from_secs(10), || {
            (rejected(&s) > n).then_some(())
        })
        .unwrap_or_else(|| panic!("{file}: not rejected:\n{}", s.log_text()));
        let line = s
            .log_lines()
            .into_iter()
            .find(|l| l.contains(said))
            .unwrap_or_else(|| panic!("{said} not logged:\n{}", s.log_text()));
        assert!(line.contains(file) && line.contains("level=ERROR"), "{line}");
        assert_eq!(
            metric(&scrape(&s), "fedns_config_last_reload_successful"),
            Some(0.0)
        );
        // Nothing of it applies: the old identity, one federation, the MCS name as it was.
        assert_eq!(observe(&s, "127.0.0.1").id_server, "first");
        assert_eq!(a(mcs), "NoError [\"203.0.113.10\"]");
        assert!(
            a("api.shop.other.svc.example.com.").starts_with("NXDomain"),
            "{}",
            a("api.shop.other.svc.example.com.")
        );
    }
    reload_with(
        &s,
        &fx.config(),
        &good.replace("id: first", "id: third"),
        true,
    );
    assert_eq!(observe(&s, "127.0.0.1").id_server, "third");
    assert_eq!(
        metric(&scrape(&s), "fedns_config_last_reload_successful"),
        Some(1.0)
    );
}

#[test]
fn zones_dir_and_federation_files_reload_without_a_gap() {
    let fx = Fixture::new("");
    std::fs::write(fx.config(), live_config("")).unwrap();
    let dir = fx.dir.path();
    std::fs::create_dir_all(dir.join("zones2")).unwrap();
    std::fs::write(
        dir.join("zones2/example.com.zone"),
        ZONE_COM.replace("192.0.2.80", "192.0.2.81"),
    )
    .unwrap();
    std::fs::write(
        dir.join("other.yaml"),
        FED.replace("203.0.113.10", "203.0.113.99"),
    )
    .unwrap();
    let s = Fedns::start(&fx.config());
    let a = |name: &str| rcode_and_a(&s, name);
    let web = "web.shop.myfed.svc.example.com.";
    assert_eq!(a(web), "NoError [\"203.0.113.10\"]");
    assert_eq!(a("www.example.com."), "NoError [\"192.0.2.80\"]");
    // A broken new federation file rejects the reload; the old files keep serving.
    std::fs::write(dir.join("broken.yaml"), "federation: [").unwrap();
    let rejected = |s: &Fedns| {
        s.log_lines()
            .iter()
            .filter(|l| l.contains("config reload rejected"))
            .count()
    };
    replace_file(
        &fx.config(),
        &live_config("").replace("[federation.yaml]", "[broken.yaml]"),
    );
    common::wait_for(Duration::from_secs(10), || (rejected(&s) > 0).then_some(()))
        .unwrap_or_else(|| panic!("broken federation file not rejected:\n{}", s.log_text()));
    assert!(s.log_text().contains("broken.yaml"), "{}", s.log_text());
    assert_eq!(a(web), "NoError [\"203.0.113.10\"]");
    // Another zone directory and another federation file: every answer on the way is the old
    // one or the new one.
    replace_file(
        &fx.config(),
        &live_config("")
            .replace("zones_dir: zones", "zones_dir: zones2")
            .replace("[federation.yaml]", "[other.yaml]"),
    );
    sighup(&s);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (w, z) = (a(web), a("www.example.com."));
        assert!(
            w.contains("203.0.113.10") || w.contains("203.0.113.99"),
            "gap in the federation: {w}\n{}",
            s.log_text()
        );
        assert!(
            z.contains("192.0.2.80") || z.contains("192.0.2.81"),
            "gap in the zone: {z}"
        );
        if w.contains("203.0.113.99") && z.contains("192.0.2.81") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not switched: {w} {z}\n{}",
            s.log_text()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // The new files are followed: an edit shows.
    replace_file(
        &dir.join("other.yaml"),
        &FED.replace("203.0.113.10", "203.0.113.98"),
    );
    common::wait_for(Duration::from_secs(10), || {
        a(web).contains("203.0.113.98").then_some(())
    })
    .unwrap_or_else(|| panic!("the new federation file is not followed: {}", a(web)));
    let (_, ready) = http_get(s.http, "/readyz");
    assert!(
        !ready.contains("federation-file:federation.yaml"),
        "{ready}"
    );
    assert_eq!(
        metric(&scrape(&s), "fedns_config_restart_pending"),
        Some(0.0)
    );
}

/// A federation-file edit is checked against the other files and the config as `check` checks
/// them: taking a `clusterset_domain` another file serves, or renaming away the cluster
/// `geo.local_cluster` names, is refused like a file that does not parse (logged with file,
/// line, field and value; the source down in `/metrics` and `/readyz`; the last good data
/// serving). Fixed, it applies; refused only because another file held the domain, it applies
/// once that file lets the domain go.
#[test]
fn a_federation_file_edit_is_checked_against_the_other_sources() {
    let fx = Fixture::new("");
    let dir = fx.dir.path();
    let mcs_fed = FED.replace("  zone: example.com\n", WITH_CLUSTERSET);
    std::fs::write(dir.join("federation.yaml"), &mcs_fed).unwrap();
    let other = |ip: &str, clusterset: bool| {
        let head = if clusterset {
            WITH_CLUSTERSET
        } else {
            "  zone: example.com\n"
        };
        FED.replace("  zone: example.com\n", head)
            .replace("name: myfed", "name: other")
            .replace("name: c1", "name: c2")
            .replace("cluster: c1", "cluster: c2")
            .replace("name: web", "name: api")
            .replace("203.0.113.10", ip)
    };
    std::fs::write(dir.join("other.yaml"), other("203.0.113.20", false)).unwrap();
    std::fs::write(
        fx.config(),
        live_config("geo:\n  local_cluster: c1\n")
            .replace("[federation.yaml]", "[federation.yaml, other.yaml]"),
    )
    .unwrap();
    let s = Fedns::start(&fx.config());
    let a = |name: &str| rcode_and_a(&s, name);
    let (web_mcs, api_mcs) = (
        "web.shop.svc.clusterset.local.",
        "api.shop.svc.clusterset.local.",
    );
    let api = "api.shop.other.svc.example.com.";
    assert_eq!(a(web_mcs), "NoError [\"203.0.113.10\"]");
    assert_eq!(a(api), "NoError [\"203.0.113.20\"]");
    let up = |source: &str| {
        metric(
            &scrape(&s),
            &format!("fedns_source_up{{source=\"federation-file:{source}\"}}"),
        )
    };
    assert_eq!(up("other.yaml"), Some(1.0));
    // Waits for `n` error lines saying `said`, and returns the last.
    let refused = |said: &str, n: usize| -> String {
        common::wait_for(Duration::from_secs(10), || {
            let lines: Vec<String> = s
                .log_lines()
                .into_iter()
                .filter(|l| l.contains("level=ERROR") && l.contains(said))
                .collect();
            (lines.len() >= n).then(|| lines.last().cloned()).flatten()
        })
        .unwrap_or_else(|| panic!("{said} not logged {n} times:\n{}", s.log_text()))
    };
    let clash = "other.yaml:4: federation.clusterset_domain: \\\"clusterset.local\\\": federation \\\"myfed\\\" already serves";

    // other.yaml takes the domain (and moves api): refused, nothing of it served.
    let taking = other("203.0.113.21", true);
    replace_file(&dir.join("other.yaml"), &taking);
    let line = refused(clash, 1);
    assert!(line.contains("keeping the last good data"), "{line}");
    assert_eq!(up("other.yaml"), Some(0.0));
    let (_, ready) = http_get(s.http, "/readyz");
    assert!(
        ready.contains("federation-file:other.yaml") && ready.contains("already serves"),
        "{ready}"
    );
    // Longer than a few polls: still the last good data.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(a(web_mcs), "NoError [\"203.0.113.10\"]");
    assert_eq!(a(api), "NoError [\"203.0.113.20\"]");
    // `fedns check` says the same of the files as they are.
    let (code, out) = check(&fx.config());
    assert_ne!(code, Some(0), "{out}");
    assert!(
        out.contains("other.yaml:4: federation.clusterset_domain: \"clusterset.local\": federation \"myfed\" already serves"),
        "{out}"
    );

    // Fixed: the edit applies.
    replace_file(&dir.join("other.yaml"), &other("203.0.113.21", false));
    common::wait_for(Duration::from_secs(10), || {
        a(api).contains("203.0.113.21").then_some(())
    })
    .unwrap_or_else(|| panic!("the fixed edit is not served: {}", a(api)));
    assert_eq!(up("other.yaml"), Some(1.0));
    assert_eq!(a(web_mcs), "NoError [\"203.0.113.10\"]");

    // Refused again, then federation.yaml lets the domain go: the held edit applies.
    replace_file(&dir.join("other.yaml"), &other("203.0.113.22", true));
    refused(clash, 2);
    assert_eq!(a(api), "NoError [\"203.0.113.21\"]");
    replace_file(&dir.join("federation.yaml"), FED);
    common::wait_for(Duration::from_secs(10), || {
        a(api_mcs).contains("203.0.113.22").then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "the held edit is not served: {}\n{}",
            a(api_mcs),
            s.log_text()
        )
    });
    assert_eq!(a(api), "NoError [\"203.0.113.22\"]");
    assert!(a(web_mcs).starts_with("NXDomain"), "{}", a(web_mcs));
    assert_eq!(up("other.yaml"), Some(1.0));

    // Renaming away the cluster geo.local_cluster names: refused, web keeps its shard.
    replace_file(
        &dir.join("federation.yaml"),
        &FED.replace("c1", "c9")
            .replace("203.0.113.10", "203.0.113.19"),
    );
    let line = refused("clusters: no cluster \\\"c1\\\" any more", 1);
    assert!(line.contains("federation.yaml:4:"), "{line}");
    assert!(line.contains("geo.local_cluster"), "{line}");
    assert_eq!(up("federation.yaml"), Some(0.0));
    assert_eq!(
        a("web.shop.myfed.svc.example.com."),
        "NoError [\"203.0.113.10\"]"
    );
}
