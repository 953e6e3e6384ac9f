//! etcd source and publisher against a real etcd server (Debian `etcd-server`), started here on
//! loopback with a temporary data dir and stopped by PID. `scripts/test` installs it; without it
//! these tests fail (they are required), naming the command to run.

use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};

mod common;
mod kube_api;

use common::{http_get, wait_for};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn etcd_binary() -> PathBuf {
    for dir in ["/usr/bin", "/usr/local/bin", "/usr/sbin"] {
        let p = Path::new(dir).join("etcd");
        if p.exists() {
            return p;
        }
    }
    panic!(
        "the `etcd` binary (Debian package etcd-server) is required by these tests{}; run ./scripts/test, which installs it",
        if std::env::var("CI").as_deref() == Ok("true") {
            " and CI=true forbids skipping them"
        } else {
            ""
        }
    );
}

/// Why a start of etcd failed: `exited` when the process died (a port taken under it), with
/// the end of its log.
struct SpawnFailure {
    exited: bool,
    message: String,
}

/// A real etcd on loopback ephemeral ports with a temp data dir; killed by PID on drop.
struct Etcd {
    child: Option<Child>,
    data: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
    rt: tokio::runtime::Runtime,
    client: Option<etcd_client::Client>,
    extra: Vec<String>,
    tls: Option<(PathBuf, PathBuf, PathBuf)>,
}

impl Etcd {
    fn start() -> Etcd {
        Self::start_with(&[])
    }

    fn start_with(extra: &[&str]) -> Etcd {
        Self::start_full(extra, None)
    }

    /// With TLS on the client port: `tls` = (CA, server cert, server key) PEM paths.
    fn start_full(extra: &[&str], tls: Option<(PathBuf, PathBuf, PathBuf)>) -> Etcd {
        let mut e = Etcd {
            tls,
            child: None,
            data: tempfile::tempdir().unwrap(),
            client_port: free_port(),
            peer_port: free_port(),
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
            client: None,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        // A port taken from the kernel may be handed to a parallel test before etcd binds it;
        // etcd then exits at once. Only a first start may move to fresh ports (a restart must
        // come back where fedns is pointed).
        for attempt in 1..=3 {
            match e.try_spawn() {
                Ok(()) => return e,
                Err(why) if attempt < 3 && why.exited => {
                    e.client_port = free_port();
                    e.peer_port = free_port();
                    let _ = std::fs::remove_dir_all(e.data.path().join("data"));
                }
                Err(why) => panic!("{}", why.message),
            }
        }
        unreachable!()
    }

    fn endpoint(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    fn connect_options(&self) -> etcd_client::ConnectOptions {
        let mut o = etcd_client::ConnectOptions::new();
        if let Some((ca, _, _)) = &self.tls {
            o = o.with_tls(etcd_client::TlsOptions::new().ca_certificate(
                etcd_client::Certificate::from_pem(std::fs::read(ca).unwrap()),
            ));
        }
        o
    }

    /// (Re)starts etcd on this instance's ports and data dir, panicking with etcd's log if it
    /// does not serve.
    fn spawn(&mut self) {
        if let Err(why) = self.try_spawn() {
            panic!("{}", why.message);
        }
    }

    fn try_spawn(&mut self) -> Result<(), SpawnFailure> {
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log_path = self.data.path().join("etcd.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let child = Command::new(etcd_binary())
            .args(["--name", "t", "--data-dir"])
            .arg(self.data.path().join("data"))
            .args(["--listen-client-urls", &self.endpoint()])
            .args(["--advertise-client-urls", &self.endpoint()])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("t={peer}")])
            .args([
                "--listen-metrics-urls",
                &format!("http://127.0.0.1:{}", free_port()),
            ])
            .args(&self.extra)
            .args(self.tls.iter().flat_map(|(_, cert, key)| {
                [
                    "--cert-file".into(),
                    cert.display().to_string(),
                    "--key-file".into(),
                    key.display().to_string(),
                ]
            }))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn etcd");
        self.child = Some(child);
        let ep = self.endpoint();
        let opts = self.connect_options();
        let mut exited = false;
        // Two cores shared with a dozen parallel tests: etcd's first fsyncs can take a while.
        let ready = wait_for(Duration::from_secs(30), || {
            if let Some(status) = self.child.as_mut()?.try_wait().ok().flatten() {
                exited = true;
                return Some(Err(status));
            }
            self.rt.block_on(async {
                let mut c = etcd_client::Client::connect(
                    [ep.as_str()],
                    Some(
                        opts.clone()
                            .with_connect_timeout(Duration::from_millis(300)),
                    ),
                )
                .await
                .ok()?;
                tokio::time::timeout(Duration::from_millis(500), c.get("probe", None))
                    .await
                    .ok()?
                    .ok()?;
                Some(Ok(c))
            })
        });
        match ready {
            Some(Ok(c)) => {
                self.client = Some(c);
                Ok(())
            }
            other => {
                self.stop();
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(15).collect();
                let what = match other {
                    Some(Err(status)) => format!("etcd exited ({status})"),
                    _ => "etcd not ready within 30 s".to_string(),
                };
                Err(SpawnFailure {
                    exited,
                    message: format!(
                        "{what} on client port {}; its log ends:\n{}",
                        self.client_port,
                        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                    ),
                })
            }
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.client = None;
    }

    /// A fresh client (the test's own connection may have been dropped by etcd's keepalive
    /// while this thread slept without polling it).
    fn reconnect(&mut self) {
        let ep = self.endpoint();
        self.client = Some(
            self.rt
                .block_on(etcd_client::Client::connect([ep.as_str()], None))
                .unwrap(),
        );
    }

    fn put(&mut self, key: &str, value: &str) {
        let c = self.client.as_mut().unwrap();
        self.rt.block_on(c.put(key, value, None)).unwrap();
    }

    fn put_many(&mut self, kvs: &[(String, String)]) {
        let c = self.client.as_mut().unwrap();
        for chunk in kvs.chunks(100) {
            let ops: Vec<_> = chunk
                .iter()
                .map(|(k, v)| etcd_client::TxnOp::put(k.as_str(), v.as_str(), None))
                .collect();
            self.rt
                .block_on(c.txn(etcd_client::Txn::new().and_then(ops)))
                .unwrap();
        }
    }

    fn delete(&mut self, key: &str) {
        let c = self.client.as_mut().unwrap();
        self.rt.block_on(c.delete(key, None)).unwrap();
    }

    /// (key, value) under a prefix.
    fn list(&mut self, prefix: &str) -> Vec<(String, String)> {
        let c = self.client.as_mut().unwrap();
        let r = self
            .rt
            .block_on(c.get(prefix, Some(etcd_client::GetOptions::new().with_prefix())))
            .unwrap();
        r.kvs()
            .iter()
            .map(|kv| {
                (
                    kv.key_str().unwrap().to_string(),
                    kv.value_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    fn revision(&mut self) -> i64 {
        let c = self.client.as_mut().unwrap();
        self.rt
            .block_on(c.get("probe", None))
            .unwrap()
            .header()
            .unwrap()
            .revision()
    }

    fn compact(&mut self, rev: i64) {
        let c = self.client.as_mut().unwrap();
        self.rt
            .block_on(c.compact(
                rev,
                Some(etcd_client::CompactionOptions::new().with_physical()),
            ))
            .unwrap();
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A running `fedns serve` on ephemeral ports, killed by PID on drop.
/// The shared fedns process, plus the temp dir its config lives in.
struct Fedns {
    process: common::Fedns,
    _dir: Option<tempfile::TempDir>,
}

impl std::ops::Deref for Fedns {
    type Target = common::Fedns;
    fn deref(&self) -> &common::Fedns {
        &self.process
    }
}

impl std::ops::DerefMut for Fedns {
    fn deref_mut(&mut self) -> &mut common::Fedns {
        &mut self.process
    }
}

const ZONE_COM: &str = "$ORIGIN example.com.\n$TTL 60\n@ IN SOA ns1 hostmaster 1 3600 600 86400 30\n@ IN NS ns1\nns1 IN A 192.0.2.53\nwww IN A 192.0.2.80\n";

impl Fedns {
    /// Starts fedns in `dir` (zones/example.com.zone written) with `etcd_section` appended.
    fn start_in(dir: &Path, etcd_section: &str, federation: Option<&str>) -> Fedns {
        std::fs::create_dir_all(dir.join("zones")).unwrap();
        std::fs::write(dir.join("zones/example.com.zone"), ZONE_COM).unwrap();
        let mut cfg = String::from(
            "listen: [\"127.0.0.1:0\"]\nhttp: \"127.0.0.1:0\"\nworkers: 1\nwatch_interval_ms: 100\nzones_dir: zones\n",
        );
        if let Some(f) = federation {
            std::fs::write(dir.join("federation.yaml"), f).unwrap();
            cfg.push_str("federation_files: [federation.yaml]\n");
        }
        cfg.push_str(etcd_section);
        std::fs::write(dir.join("fedns.yaml"), cfg).unwrap();
        Fedns {
            process: common::Fedns::start(&dir.join("fedns.yaml")),
            _dir: None,
        }
    }

    fn start(etcd_section: &str) -> Fedns {
        let dir = tempfile::tempdir().unwrap();
        let mut f = Fedns::start_in(dir.path(), etcd_section, None);
        f._dir = Some(dir);
        f
    }

    fn wait_log(&self, timeout: Duration, pat: &str) -> bool {
        self.process
            .wait_log(timeout, |l| l.contains(pat))
            .is_some()
    }

    fn ask(&self, name: &str, t: RecordType) -> Message {
        static ID: AtomicU16 = AtomicU16::new(1);
        let mut m = Message::new(
            ID.fetch_add(1, Ordering::Relaxed),
            MessageType::Query,
            OpCode::Query,
        );
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
        let req = m.to_vec().unwrap();
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        for _ in 0..5 {
            sock.send_to(&req, self.udp).unwrap();
            let mut buf = [0u8; 65535];
            if let Ok((n, _)) = sock.recv_from(&mut buf) {
                return Message::from_vec(&buf[..n]).expect("parse response");
            }
        }
        panic!("no answer from fedns for {name} {t}");
    }

    fn metric(&self, name: &str) -> Option<f64> {
        let (_, body) = http_get(self.http, "/metrics");
        body.lines()
            .find(|l| l.starts_with(name) && !l.starts_with('#'))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
    }
}

fn rcode_name(m: &Message) -> String {
    format!("{:?}", m.metadata.response_code).to_uppercase()
}

fn rr_text(r: &hickory_proto::rr::Record) -> String {
    format!("{} {} {} {}", r.name, r.ttl, r.record_type(), r.data)
}

/// "RCODE | answer; answer | additional; additional | authority types".
fn summary(m: &Message) -> String {
    let join =
        |v: &[hickory_proto::rr::Record]| v.iter().map(rr_text).collect::<Vec<_>>().join("; ");
    format!(
        "{} | {} | {}",
        rcode_name(m),
        join(&m.answers),
        join(&m.additionals)
    )
}

fn etcd_section(ep: &str, zones: &str, extra: &str) -> String {
    format!("etcd:\n  endpoints: [\"{ep}\"]\n  zones: [{zones}]\n{extra}")
}

/// The SkyDNS data of the CoreDNS table below (prefix /skydns).
const KEYS: &[(&str, &str)] = &[
    // subtree answers
    ("/skydns/net/example/a/x1", r#"{"host":"10.0.0.1"}"#),
    (
        "/skydns/net/example/a/x2",
        r#"{"host":"10.0.0.2","ttl":60}"#,
    ),
    ("/skydns/net/example/a/x3", r#"{"host":"2001:db8::1"}"#),
    // an exact key and a subtree under it: the subtree wins (etcd.go get: prefix first)
    ("/skydns/net/example/b", r#"{"host":"10.0.1.1"}"#),
    ("/skydns/net/example/b/y", r#"{"host":"10.0.1.2"}"#),
    // CNAMEs
    ("/skydns/net/example/www", r#"{"host":"a.example.net"}"#),
    (
        "/skydns/net/example/ext",
        r#"{"host":"target.example.org"}"#,
    ),
    (
        "/skydns/net/example/loop1",
        r#"{"host":"loop2.example.net"}"#,
    ),
    (
        "/skydns/net/example/loop2",
        r#"{"host":"loop1.example.net"}"#,
    ),
    (
        "/skydns/net/example/self",
        r#"{"host":"x.self.example.net"}"#,
    ),
    (
        "/skydns/net/example/dangling",
        r#"{"host":"missing.example.net"}"#,
    ),
    // TXT: no host, text
    (
        "/skydns/net/example/t",
        r#"{"text":"hello world","Unknown":1}"#,
    ),
    // SRV: priorities, weights, IP hosts named after their keys, an in-zone name target
    (
        "/skydns/net/example/svc/_tcp/_http/s1",
        r#"{"host":"10.0.2.1","port":8080}"#,
    ),
    (
        "/skydns/net/example/svc/_tcp/_http/s2",
        r#"{"host":"10.0.2.2","port":8080,"weight":300}"#,
    ),
    (
        "/skydns/net/example/svc/_tcp/_http/s3",
        r#"{"host":"10.0.2.3","port":8081,"priority":20}"#,
    ),
    (
        "/skydns/net/example/svc/_tcp/_http/s4",
        r#"{"host":"web.example.net","port":80}"#,
    ),
    ("/skydns/net/example/web", r#"{"host":"10.0.3.1"}"#),
    // targetstrip
    (
        "/skydns/net/example/strip/x/y",
        r#"{"host":"10.0.4.1","port":53,"targetstrip":1}"#,
    ),
    // MX
    (
        "/skydns/net/example/mail/m1",
        r#"{"host":"10.0.5.1","mail":true,"priority":5}"#,
    ),
    (
        "/skydns/net/example/mail/m2",
        r#"{"host":"mx.example.org","mail":true}"#,
    ),
    ("/skydns/net/example/mail/m3", r#"{"host":"10.0.5.3"}"#),
    // groups (the ExternalDNS CoreDNS tutorial's example)
    (
        "/skydns/net/example/grp/a",
        r#"{"host":"127.0.0.1","group":"g1"}"#,
    ),
    (
        "/skydns/net/example/grp/b",
        r#"{"host":"127.0.0.2","group":"g1"}"#,
    ),
    (
        "/skydns/net/example/grp/subdom/c",
        r#"{"host":"127.0.0.3","group":"g2"}"#,
    ),
    (
        "/skydns/net/example/grp/subdom/d",
        r#"{"host":"127.0.0.4","group":"g2"}"#,
    ),
    // apex A and NS
    ("/skydns/net/example/dns/apex/a1", r#"{"host":"10.0.9.1"}"#),
    ("/skydns/net/example/dns/ns/ns1", r#"{"host":"10.0.9.53"}"#),
    // PTR in a reverse zone
    (
        "/skydns/arpa/in-addr/10/0/0/1",
        r#"{"host":"a.example.net"}"#,
    ),
    // a zone that also has a zone file
    ("/skydns/com/example/api", r#"{"host":"10.7.0.1"}"#),
    // not JSON: skipped, named in the log
    ("/skydns/net/example/bad", "{not json"),
];

const SOA_NET: &str = "example.net. 30 SOA ns.dns.example.net. hostmaster.example.net.";

/// The CoreDNS etcd plugin's answers for KEYS; each row says which CoreDNS rule it checks
/// (file and function of github.com/coredns/coredns).
#[rustfmt::skip]
const TABLE: &[(&str, RecordType, &str)] = &[
    // etcd.go Records/get: a name answers with every entry below it (prefix get), TTL from the
    // entry or 300 (etcd.go TTL); backend_lookup.go A keeps only IPv4 hosts, AAAA only IPv6.
    ("a.example.net.", RecordType::A, "NOERROR | a.example.net. 300 A 10.0.0.1; a.example.net. 60 A 10.0.0.2 | "),
    ("a.example.net.", RecordType::AAAA, "NOERROR | a.example.net. 300 AAAA 2001:db8::1 | "),
    ("x1.a.example.net.", RecordType::A, "NOERROR | x1.a.example.net. 300 A 10.0.0.1 | "),
    // get: the prefix get finds the subtree, so the exact key is not consulted.
    ("b.example.net.", RecordType::A, "NOERROR | b.example.net. 300 A 10.0.1.2 | "),
    // backend_lookup.go CNAME: exact key only, first service; an IP host gives nothing (NODATA).
    ("b.example.net.", RecordType::CNAME, "NOERROR |  | "),
    ("a.example.net.", RecordType::CNAME, "NXDOMAIN |  | "),
    // HostType: a name → CNAME, chased inside the zone (A recursion), target's records follow.
    ("www.example.net.", RecordType::A, "NOERROR | www.example.net. 300 CNAME a.example.net.; a.example.net. 300 A 10.0.0.1; a.example.net. 60 A 10.0.0.2 | "),
    ("www.example.net.", RecordType::CNAME, "NOERROR | www.example.net. 300 CNAME a.example.net. | "),
    // Out-of-zone target: CNAME (CoreDNS would append its upstream's answer).
    ("ext.example.net.", RecordType::A, "NOERROR | ext.example.net. 300 CNAME target.example.org. | "),
    // Loop protection (DuplicateCNAME): the chain dies, nothing is answered → NODATA.
    ("loop1.example.net.", RecordType::A, "NOERROR |  | "),
    // Name(qname).Matches(host): a target inside the name's own subtree is skipped.
    ("self.example.net.", RecordType::A, "NOERROR |  | "),
    // A CNAME whose in-zone target does not exist is dropped (len(nextRecords) == 0).
    ("dangling.example.net.", RecordType::A, "NOERROR |  | "),
    // HostType: no IP, with text → TXT; shouldInclude drops entries without host for A.
    ("t.example.net.", RecordType::TXT, "NOERROR | t.example.net. 300 TXT hello world | "),
    ("t.example.net.", RecordType::A, "NOERROR |  | "),
    // SRV: weight = floor(100 / sum(weights of the priority) * weight (0 → 100)), priority
    // default 10; IP hosts get their key's name as target with the address as extra; a name
    // host inside the zone gets its A records as extra.
    ("_http._tcp.svc.example.net.", RecordType::SRV, "NOERROR | _http._tcp.svc.example.net. 300 SRV 10 20 8080 s1._http._tcp.svc.example.net.; _http._tcp.svc.example.net. 300 SRV 10 60 8080 s2._http._tcp.svc.example.net.; _http._tcp.svc.example.net. 300 SRV 20 100 8081 s3._http._tcp.svc.example.net.; _http._tcp.svc.example.net. 300 SRV 10 20 80 web.example.net. | s1._http._tcp.svc.example.net. 300 A 10.0.2.1; s2._http._tcp.svc.example.net. 300 A 10.0.2.2; s3._http._tcp.svc.example.net. 300 A 10.0.2.3; web.example.net. 300 A 10.0.3.1"),
    // targetstrip: the key name y.x.strip… loses one label.
    ("strip.example.net.", RecordType::SRV, "NOERROR | strip.example.net. 300 SRV 10 100 53 x.strip.example.net. | x.strip.example.net. 300 A 10.0.4.1"),
    // MX: only "mail": true; preference = priority (default 10); glue for IP hosts.
    ("mail.example.net.", RecordType::MX, "NOERROR | mail.example.net. 300 MX 5 m1.mail.example.net.; mail.example.net. 300 MX 10 mx.example.org. | m1.mail.example.net. 300 A 10.0.5.1"),
    // A sees every entry of the subtree: the MX entry with a name host is a CNAME there.
    ("mail.example.net.", RecordType::A, "NOERROR | mail.example.net. 300 A 10.0.5.1; mail.example.net. 300 CNAME mx.example.org.; mail.example.net. 300 A 10.0.5.3 | "),
    // msg.Group: the shortest keys' group wins; deeper entries of another group drop out.
    ("grp.example.net.", RecordType::A, "NOERROR | grp.example.net. 300 A 127.0.0.1; grp.example.net. 300 A 127.0.0.2 | "),
    ("subdom.grp.example.net.", RecordType::A, "NOERROR | subdom.grp.example.net. 300 A 127.0.0.3; subdom.grp.example.net. 300 A 127.0.0.4 | "),
    // PathWithWildcard + loopNodes: `*` / `any` labels match any key label.
    ("*.a.example.net.", RecordType::A, "NOERROR | *.a.example.net. 300 A 10.0.0.1; *.a.example.net. 60 A 10.0.0.2 | "),
    ("any.grp.example.net.", RecordType::A, "NOERROR | any.grp.example.net. 300 A 127.0.0.1; any.grp.example.net. 300 A 127.0.0.2 | "),
    // checkForApex: the apex answers A from apex.dns.<zone>.
    ("example.net.", RecordType::A, "NOERROR | example.net. 300 A 10.0.9.1 | "),
    // NS: ns.dns.<zone> entries, named after their keys, glue in extra.
    ("example.net.", RecordType::NS, "NOERROR | example.net. 300 NS ns1.ns.dns.example.net. | ns1.ns.dns.example.net. 300 A 10.0.9.53"),
    // The apex's TXT is every entry of the zone (no apex.dns for TXT): name hosts are CNAMEs,
    // those inside the zone fail Name(qname).Matches (they are below the apex), the out-of-zone
    // ones stay; the TXT entry answers.
    ("example.net.", RecordType::TXT, "NOERROR | example.net. 300 CNAME target.example.org.; example.net. 300 CNAME mx.example.org.; example.net. 300 TXT hello world | "),
    // PTR: exact key, name hosts.
    ("1.0.0.10.in-addr.arpa.", RecordType::PTR, "NOERROR | 1.0.0.10.in-addr.arpa. 300 PTR a.example.net. | "),
    // PTR is exact: a name with keys only below it is NXDOMAIN.
    ("0.0.10.in-addr.arpa.", RecordType::PTR, "NXDOMAIN |  | "),
    // NS with no ns.dns entries: errKeyNotFound → NXDOMAIN.
    ("0.10.in-addr.arpa.", RecordType::NS, "NXDOMAIN |  | "),
    // No key: NXDOMAIN; other types with keys: fake A lookup → NODATA.
    ("nope.example.net.", RecordType::A, "NXDOMAIN |  | "),
    ("a.example.net.", RecordType::HINFO, "NOERROR |  | "),
    ("nope.example.net.", RecordType::HINFO, "NXDOMAIN |  | "),
    // An invalid value is skipped (CoreDNS would SERVFAIL every query touching it).
    ("bad.example.net.", RecordType::A, "NXDOMAIN |  | "),
    // Zone files still serve their names; etcd names of the same zone are added, and where
    // etcd has nothing for a type (no ns.dns here) the zone file's answer stays (with the
    // address of its in-zone name server, as fedns gives every zone file's NS answer).
    ("www.example.com.", RecordType::A, "NOERROR | www.example.com. 60 A 192.0.2.80 | "),
    ("api.example.com.", RecordType::A, "NOERROR | api.example.com. 300 A 10.7.0.1 | "),
    ("example.com.", RecordType::NS, "NOERROR | example.com. 60 NS ns1.example.com. | ns1.example.com. 60 A 192.0.2.53"),
];

fn load_keys(etcd: &mut Etcd) {
    for (k, v) in KEYS {
        etcd.put(k, v);
    }
}

#[test]
fn coredns_answers_table() {
    let mut etcd = Etcd::start();
    load_keys(&mut etcd);
    let f = Fedns::start(&etcd_section(
        &etcd.endpoint(),
        "example.net, 0.10.in-addr.arpa, example.com",
        "",
    ));
    assert!(
        f.wait_log(Duration::from_secs(10), "etcd prefix loaded"),
        "{}",
        f.log_text()
    );
    assert!(
        wait_for(Duration::from_secs(5), || (http_get(f.http, "/readyz").0
            == 200)
            .then_some(()))
        .is_some()
    );
    let mut failures = Vec::new();
    for (name, t, want) in TABLE {
        let m = f.ask(name, *t);
        let got = summary(&m);
        if got != *want {
            failures.push(format!("{name} {t}\n   want: {want}\n    got: {got}"));
        }
        assert!(
            m.metadata.authoritative || got.starts_with("REFUSED"),
            "AA for {name}"
        );
        // Negative answers carry the SOA CoreDNS synthesizes (plugin.SOA).
        if (got.starts_with("NXDOMAIN") || got.starts_with("NOERROR |  |"))
            && name.ends_with("example.net.")
        {
            let soa = m.authorities.first().map(rr_text).unwrap_or_default();
            assert!(
                soa.starts_with(SOA_NET) && soa.ends_with(" 7200 1800 86400 30"),
                "{name}: {soa}"
            );
        }
    }
    assert!(
        failures.is_empty(),
        "{}\n\nlog:\n{}",
        failures.join("\n"),
        f.log_text()
    );

    // SOA: any name of the zone gets the zone's SOA in the answer (backend_lookup.go SOA).
    for name in ["example.net.", "nope.example.net."] {
        let m = f.ask(name, RecordType::SOA);
        assert_eq!(rcode_name(&m), "NOERROR");
        let soa = rr_text(&m.answers[0]);
        assert!(
            soa.starts_with(SOA_NET) && soa.ends_with(" 7200 1800 86400 30"),
            "{soa}"
        );
    }
    assert!(
        f.log_text().contains("/skydns/net/example/bad"),
        "invalid key not named in the log"
    );
    assert_eq!(f.metric("fedns_etcd_invalid_values_total"), Some(1.0));
}

#[test]
fn put_and_delete_show_within_a_second() {
    let mut etcd = Etcd::start();
    etcd.put("/skydns/net/example/a", r#"{"host":"10.1.0.1"}"#);
    let f = Fedns::start(&etcd_section(&etcd.endpoint(), "example.net", ""));
    let has =
        |f: &Fedns, ip: &str| summary(&f.ask("live.example.net.", RecordType::A)).contains(ip);
    assert!(f.wait_log(Duration::from_secs(10), "etcd prefix loaded"));
    let t0 = Instant::now();
    etcd.put("/skydns/net/example/live", r#"{"host":"10.1.0.2"}"#);
    assert!(
        wait_for(Duration::from_secs(1), || has(&f, "10.1.0.2").then_some(())).is_some(),
        "put not visible within 1 s"
    );
    let put_ms = t0.elapsed().as_millis();
    let t1 = Instant::now();
    etcd.delete("/skydns/net/example/live");
    assert!(
        wait_for(Duration::from_secs(1), || (rcode_name(
            &f.ask("live.example.net.", RecordType::A)
        ) == "NXDOMAIN")
            .then_some(()))
        .is_some(),
        "delete not visible within 1 s"
    );
    eprintln!(
        "put visible after {put_ms} ms, delete after {} ms",
        t1.elapsed().as_millis()
    );
    // An invalid value replacing a good one removes the key, never the process.
    etcd.put("/skydns/net/example/a", "[1,");
    assert!(
        wait_for(Duration::from_secs(1), || (rcode_name(
            &f.ask("a.example.net.", RecordType::A)
        ) == "NXDOMAIN")
            .then_some(()))
        .is_some()
    );
    assert!(f.wait_log(Duration::from_secs(1), "/skydns/net/example/a"));
}

#[test]
fn etcd_down_at_start_then_up() {
    let mut etcd = Etcd::start();
    etcd.put("/skydns/net/example/a", r#"{"host":"10.2.0.1"}"#);
    etcd.stop();
    let f = Fedns::start(&etcd_section(&etcd.endpoint(), "example.net", ""));
    // Zone files serve, /readyz names etcd.
    assert!(summary(&f.ask("www.example.com.", RecordType::A)).contains("192.0.2.80"));
    let (status, body) = http_get(f.http, "/readyz");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("etcd:/skydns"), "{body}");
    assert!(
        wait_for(Duration::from_secs(5), || (f
            .metric("fedns_etcd_reconnects_total")?
            >= 1.0)
            .then_some(()))
        .is_some()
    );
    etcd.spawn();
    assert!(
        wait_for(Duration::from_secs(10), || summary(
            &f.ask("a.example.net.", RecordType::A)
        )
        .contains("10.2.0.1")
        .then_some(()))
        .is_some(),
        "{}",
        f.log_text()
    );
    assert!(
        wait_for(Duration::from_secs(5), || (http_get(f.http, "/readyz").0
            == 200)
            .then_some(()))
        .is_some()
    );
}

#[test]
fn etcd_restarted_under_running_fedns() {
    let mut etcd = Etcd::start();
    etcd.put("/skydns/net/example/a", r#"{"host":"10.3.0.1"}"#);
    let f = Fedns::start(&etcd_section(&etcd.endpoint(), "example.net", ""));
    assert!(f.wait_log(Duration::from_secs(10), "etcd prefix loaded"));
    etcd.stop();
    // The last copy keeps serving; a metric and a log line say etcd is gone.
    assert!(
        f.wait_log(Duration::from_secs(10), "serving the last copy"),
        "{}",
        f.log_text()
    );
    assert!(summary(&f.ask("a.example.net.", RecordType::A)).contains("10.3.0.1"));
    // The metric and the log line are set by different steps of the same report: wait, briefly.
    let up = |want: f64| {
        wait_for(Duration::from_secs(5), || {
            (f.metric("fedns_source_up{source=\"etcd:/skydns\"}") == Some(want)).then_some(())
        })
        .is_some()
    };
    assert!(up(0.0), "{}", f.log_text());
    etcd.spawn();
    etcd.put("/skydns/net/example/b", r#"{"host":"10.3.0.2"}"#);
    assert!(
        wait_for(Duration::from_secs(10), || summary(
            &f.ask("b.example.net.", RecordType::A)
        )
        .contains("10.3.0.2")
        .then_some(()))
        .is_some(),
        "{}",
        f.log_text()
    );
    assert!(up(1.0), "{}", f.log_text());
}

/// A watch that resumes from a compacted revision is cancelled by etcd; fedns gets the prefix
/// again. fedns is frozen (SIGSTOP) so that etcd drops its connection (server keepalive 1 s)
/// while keys change and the history is compacted.
#[test]
fn compaction_while_disconnected_regets() {
    let mut etcd = Etcd::start_with(&[
        "--grpc-keepalive-interval=1s",
        "--grpc-keepalive-timeout=1s",
        "--grpc-keepalive-min-time=1s",
    ]);
    etcd.put("/skydns/net/example/a", r#"{"host":"10.4.0.1"}"#);
    let f = Fedns::start(&etcd_section(&etcd.endpoint(), "example.net", ""));
    assert!(f.wait_log(Duration::from_secs(10), "etcd prefix loaded"));
    let pid = f.child.id() as i32;
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    std::thread::sleep(Duration::from_secs(4));
    etcd.reconnect();
    etcd.delete("/skydns/net/example/a");
    etcd.put("/skydns/net/example/b", r#"{"host":"10.4.0.2"}"#);
    let rev = etcd.revision();
    etcd.compact(rev);
    unsafe { libc::kill(pid, libc::SIGCONT) };
    assert!(
        wait_for(Duration::from_secs(15), || summary(
            &f.ask("b.example.net.", RecordType::A)
        )
        .contains("10.4.0.2")
        .then_some(()))
        .is_some(),
        "{}",
        f.log_text()
    );
    assert_eq!(
        rcode_name(&f.ask("a.example.net.", RecordType::A)),
        "NXDOMAIN"
    );
    assert!(f.log_text().contains("compaction"), "{}", f.log_text());
}

const FED: &str = r#"federation:
  name: myfed
  zone: example.com
  ttl: 30
clusters:
  - name: east
    region: us-east1
    zones: [us-east1-b]
services:
  - name: web
    namespace: shop
    ports: []
    shards:
      - cluster: east
        addresses: [10.9.0.1, 10.9.0.2]
        ready_endpoints: 1
"#;

fn publish_section(ep: &str) -> String {
    format!("etcd:\n  endpoints: [\"{ep}\"]\n  mode: publish\n  lease_ttl_secs: 2\n")
}

#[test]
fn publisher_reader_and_failover() {
    let mut etcd = Etcd::start();
    let dir1 = tempfile::tempdir().unwrap();
    let dir2 = tempfile::tempdir().unwrap();
    let mut p1 = Fedns::start_in(dir1.path(), &publish_section(&etcd.endpoint()), Some(FED));
    assert!(
        p1.wait_log(Duration::from_secs(10), "published federation records"),
        "{}",
        p1.log_text()
    );
    let p2 = Fedns::start_in(dir2.path(), &publish_section(&etcd.endpoint()), Some(FED));
    assert!(p2.wait_log(Duration::from_secs(10), "etcd publisher campaigning"));
    // A reader with no federation file serves what the publisher wrote.
    let reader = Fedns::start(&etcd_section(&etcd.endpoint(), "example.com", ""));
    let global = "web.shop.myfed.svc.example.com.";
    assert!(
        wait_for(Duration::from_secs(5), || {
            let s = summary(&reader.ask(global, RecordType::A));
            (s.contains("10.9.0.1") && s.contains("10.9.0.2")).then_some(())
        })
        .is_some(),
        "{}",
        reader.log_text()
    );
    let keys = etcd.list("/skydns/com/example/");
    let web: Vec<_> = keys
        .iter()
        .filter(|(k, _)| k.starts_with("/skydns/com/example/svc/myfed/shop/web/"))
        .collect();
    assert_eq!(web.len(), 2, "{keys:?}");
    assert!(
        web[0]
            .1
            .contains("\"group\":\"web.shop.myfed.svc.example.com\"")
            && web[0].1.contains("\"ttl\":30"),
        "{}",
        web[0].1
    );
    let before = keys.clone();
    assert_eq!(p1.metric("fedns_etcd_publisher_leader"), Some(1.0));
    assert_eq!(p2.metric("fedns_etcd_publisher_leader"), Some(0.0));

    // Failover: the publisher dies; the standby takes over within a few seconds and, with the
    // same data, writes nothing (nothing lost, nothing duplicated).
    let t0 = Instant::now();
    let _ = p1.child.kill();
    let _ = p1.child.wait();
    assert!(
        p2.wait_log(Duration::from_secs(10), "elected etcd publisher"),
        "{}",
        p2.log_text()
    );
    eprintln!("failover took {} ms", t0.elapsed().as_millis());
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(etcd.list("/skydns/com/example/"), before);
    // The new publisher follows its federation file: a shard address changes.
    std::fs::write(
        dir2.path().join("federation.yaml"),
        FED.replace("10.9.0.2", "10.9.0.3"),
    )
    .unwrap();
    assert!(
        wait_for(Duration::from_secs(5), || {
            let s = summary(&reader.ask(global, RecordType::A));
            (s.contains("10.9.0.1") && s.contains("10.9.0.3") && !s.contains("10.9.0.2"))
                .then_some(())
        })
        .is_some(),
        "{}\n{}",
        p2.log_text(),
        reader.log_text()
    );
    let after = etcd.list("/skydns/com/example/svc/myfed/shop/web/");
    assert_eq!(after.len(), 2, "{after:?}");
}

/// Beyond CoreDNS (off by default): a stored `*` key answers names below its parent that have
/// no keys, with the name asked as owner (RFC 4592).
#[test]
fn stored_wildcards() {
    let mut etcd = Etcd::start();
    etcd.put("/skydns/net/example/*", r#"{"host":"10.8.0.1"}"#);
    etcd.put("/skydns/net/example/real", r#"{"host":"10.8.0.2"}"#);
    etcd.put(
        "/skydns/net/example/sub/*/x",
        r#"{"host":"real.example.net"}"#,
    );
    let off = Fedns::start(&etcd_section(&etcd.endpoint(), "example.net", ""));
    let on = Fedns::start(&etcd_section(
        &etcd.endpoint(),
        "example.net",
        "  wildcards: true\n",
    ));
    for f in [&off, &on] {
        assert!(f.wait_log(Duration::from_secs(10), "etcd prefix loaded"));
        assert!(
            wait_for(Duration::from_secs(5), || (http_get(f.http, "/readyz").0
                == 200)
                .then_some(()))
            .is_some()
        );
    }
    assert_eq!(
        summary(&off.ask("anything.example.net.", RecordType::A)),
        "NXDOMAIN |  | "
    );
    #[rustfmt::skip]
    let rows: &[(&str, RecordType, &str)] = &[
        ("anything.example.net.", RecordType::A, "NOERROR | anything.example.net. 300 A 10.8.0.1 | "),
        ("a.b.example.net.", RecordType::A, "NOERROR | a.b.example.net. 300 A 10.8.0.1 | "),
        ("anything.example.net.", RecordType::TXT, "NOERROR |  | "),
        ("real.example.net.", RecordType::A, "NOERROR | real.example.net. 300 A 10.8.0.2 | "),
        // A wildcard below a name, with a CNAME chased from it.
        ("q.sub.example.net.", RecordType::A, "NOERROR | q.sub.example.net. 300 CNAME real.example.net.; real.example.net. 300 A 10.8.0.2 | "),
    ];
    for (name, t, want) in rows {
        assert_eq!(summary(&on.ask(name, *t)), *want, "{name} {t}");
    }
}

/// A prefix larger than one gRPC response (4 MiB) and than one page loads completely.
#[test]
fn large_prefix_loads_in_pages() {
    let mut etcd = Etcd::start();
    let pad = "p".repeat(1000);
    let kvs: Vec<(String, String)> = (0..5000)
        .map(|i| {
            (
                format!("/skydns/net/example/n{}/h{i}", i % 50),
                format!(r#"{{"host":"10.5.{}.{}","pad":"{pad}"}}"#, i / 250, i % 250),
            )
        })
        .collect();
    etcd.put_many(&kvs);
    let f = Fedns::start(&etcd_section(&etcd.endpoint(), "example.net", ""));
    assert!(
        f.wait_log(Duration::from_secs(30), "keys=5000"),
        "{}",
        f.log_text()
    );
    assert!(
        wait_for(Duration::from_secs(10), || (http_get(f.http, "/readyz").0
            == 200)
            .then_some(()))
        .is_some()
    );
    let s = summary(&f.ask("h4999.n49.example.net.", RecordType::A));
    assert!(s.contains("10.5.19.249"), "{s}");
}

/// TLS to etcd (CA given in the config; rustls with ring), and etcd's user/password auth.
#[test]
fn tls_and_auth() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    let sh = |args: &[&str]| {
        let st = Command::new("openssl")
            .args(args)
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("openssl (Debian package openssl) is needed; run ./scripts/test");
        assert!(st.success(), "openssl {args:?}");
    };
    sh(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=test-ca",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    sh(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    std::fs::write(p("ext.cnf"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    sh(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
        "-out",
        "server.pem",
    ]);
    let mut etcd = Etcd::start_full(&[], Some((p("ca.pem"), p("server.pem"), p("server.key"))));
    etcd.put("/skydns/net/example/s", r#"{"host":"10.6.0.1"}"#);
    // Auth: root user, then auth on.
    {
        let c = etcd.client.as_mut().unwrap();
        etcd.rt
            .block_on(c.user_add("root", "rootpw", None))
            .unwrap();
        etcd.rt.block_on(c.user_grant_role("root", "root")).unwrap();
        etcd.rt.block_on(c.auth_enable()).unwrap();
    }
    let ca = p("ca.pem");
    let section = etcd_section(
        &etcd.endpoint(),
        "example.net",
        &format!(
            "  tls: {{ca: \"{}\"}}\n  username: root\n  password: rootpw\n",
            ca.display()
        ),
    );
    let f = Fedns::start(&section);
    assert!(
        f.wait_log(Duration::from_secs(10), "etcd prefix loaded"),
        "{}",
        f.log_text()
    );
    assert!(
        wait_for(Duration::from_secs(5), || summary(
            &f.ask("s.example.net.", RecordType::A)
        )
        .contains("10.6.0.1")
        .then_some(()))
        .is_some()
    );
    // Wrong password: not ready, and the log says why.
    let bad = Fedns::start(&section.replace("rootpw", "nope"));
    assert!(
        bad.wait_log(Duration::from_secs(10), "etcd unreachable or lost"),
        "{}",
        bad.log_text()
    );
    assert_eq!(http_get(bad.http, "/readyz").0, 503);
}

/// Reads AXFR responses over TCP until the closing SOA (or a non-NOERROR answer).
fn axfr(server: SocketAddr, zone: &str) -> Vec<Message> {
    use std::io::{Read, Write};
    let mut m = Message::new(77, MessageType::Query, OpCode::Query);
    m.add_query(Query::query(
        Name::from_ascii(zone).unwrap(),
        RecordType::AXFR,
    ));
    let req = m.to_vec().unwrap();
    let mut s = TcpStream::connect(server).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut framed = (req.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&req);
    s.write_all(&framed).unwrap();
    let mut out = Vec::new();
    let mut soas = 0;
    while soas < 2 {
        let mut len = [0u8; 2];
        if s.read_exact(&mut len).is_err() {
            break;
        }
        let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
        s.read_exact(&mut buf).unwrap();
        let msg = Message::from_vec(&buf).unwrap();
        soas += msg
            .answers
            .iter()
            .filter(|r| r.record_type() == RecordType::SOA)
            .count();
        let done = rcode_name(&msg) != "NOERROR";
        out.push(msg);
        if done {
            break;
        }
    }
    out
}

/// Beyond CoreDNS: AXFR of etcd zones to allowed addresses only (TCP), SOA first and last,
/// each key's own record in between.
#[test]
fn axfr_of_etcd_zones() {
    let mut etcd = Etcd::start();
    etcd.put("/skydns/net/example/a/x1", r#"{"host":"10.0.0.1"}"#);
    etcd.put("/skydns/net/example/a/x3", r#"{"host":"2001:db8::1"}"#);
    etcd.put("/skydns/net/example/www", r#"{"host":"a.example.net"}"#);
    etcd.put("/skydns/net/example/t", r#"{"text":"hello"}"#);
    let many: Vec<(String, String)> = (0..1500)
        .map(|i| {
            (
                format!("/skydns/net/example/bulk/h{i}"),
                format!(r#"{{"host":"10.9.{}.{}"}}"#, i / 250, i % 250),
            )
        })
        .collect();
    etcd.put_many(&many);
    let allowed = Fedns::start(&etcd_section(
        &etcd.endpoint(),
        "example.net",
        "  axfr_allow: [\"127.0.0.0/8\"]\n",
    ));
    let denied = Fedns::start(&etcd_section(
        &etcd.endpoint(),
        "example.net",
        "  axfr_allow: [\"10.0.0.0/8\"]\n",
    ));
    for f in [&allowed, &denied] {
        assert!(f.wait_log(Duration::from_secs(10), "etcd prefix loaded"));
        assert!(
            wait_for(Duration::from_secs(5), || (http_get(f.http, "/readyz").0
                == 200)
                .then_some(()))
            .is_some()
        );
    }
    let msgs = axfr(allowed.udp, "example.net.");
    let records: Vec<String> = msgs
        .iter()
        .flat_map(|m| m.answers.iter().map(rr_text))
        .collect();
    assert!(
        msgs.len() > 1,
        "1504 records should take several messages: {:?}\n{}",
        msgs.iter().map(summary).collect::<Vec<_>>(),
        allowed.log_text()
    );
    assert!(records.first().unwrap().starts_with(SOA_NET), "{records:?}");
    assert!(records.last().unwrap().starts_with(SOA_NET));
    assert_eq!(records.len(), 1504 + 2);
    for want in [
        "x1.a.example.net. 300 A 10.0.0.1",
        "x3.a.example.net. 300 AAAA 2001:db8::1",
        "www.example.net. 300 CNAME a.example.net.",
        "t.example.net. 300 TXT hello",
        "h1499.bulk.example.net. 300 A 10.9.5.249",
    ] {
        assert!(records.iter().any(|r| r == want), "{want} missing");
    }
    assert!(allowed.log_text().contains("zone transfer"));
    let refused = axfr(denied.udp, "example.net.");
    assert_eq!(rcode_name(&refused[0]), "REFUSED");
    assert_eq!(
        rcode_name(&allowed.ask("example.net.", RecordType::AXFR)),
        "REFUSED",
        "AXFR over UDP"
    );
}

/// A federation with every kind of federated name: a multi-zone cluster, an IPv6 shard in one
/// zone only, an IPv4-only region, a region with nothing healthy (CNAME up), a service healthy in
/// one region only, one healthy nowhere, and named ports (SRV at every level).
const FED_FULL: &str = r#"federation:
  name: myfed
  zone: example.com
  ttl: 30
clusters:
  - {name: east, region: us-east1, zones: [us-east1-b, us-east1-c]}
  - {name: west, region: us-west2, zones: [us-west2-a]}
  - {name: eu, region: eu-west1, zones: [eu-west1-a]}
services:
  - name: web
    namespace: shop
    ports: [{name: http, port: 80}, {name: dns, protocol: UDP, port: 53}]
    shards:
      - {cluster: east, addresses: [10.9.0.1, "2001:db8::1"], ready_endpoints: 1, zones: [us-east1-b]}
      - {cluster: west, addresses: [10.9.1.1, 10.9.1.2], ready_endpoints: 2}
      - {cluster: eu, addresses: [10.9.2.1], ready_endpoints: 0, not_ready_endpoints: 1}
  - name: api
    namespace: shop
    ports: [{name: https, port: 443}]
    shards:
      - {cluster: west, addresses: ["2001:db8::2"], ready_endpoints: 1}
  - name: dead
    namespace: billing
    ports: [{name: http, port: 80}]
    shards:
      - {cluster: east, addresses: [10.9.0.9], ready_endpoints: 0}
"#;

/// Every federated name of `FED_FULL`: each service at the global, regional and zonal levels,
/// and each level's SRV names.
fn full_names() -> Vec<String> {
    let levels = [
        "",
        "us-east1.",
        "us-east1-b.us-east1.",
        "us-east1-c.us-east1.",
        "us-west2.",
        "us-west2-a.us-west2.",
        "eu-west1.",
        "eu-west1-a.eu-west1.",
    ];
    let services: [(&str, &[&str]); 3] = [
        ("web.shop", &["_http._tcp.", "_dns._udp."]),
        ("api.shop", &["_https._tcp."]),
        ("dead.billing", &["_http._tcp."]),
    ];
    let mut out = Vec::new();
    for (svc, ports) in services {
        for level in levels {
            let name = format!("{svc}.myfed.svc.{level}example.com.");
            for p in ports {
                out.push(format!("{p}{name}"));
            }
            out.push(name);
        }
    }
    out
}

/// What a comparison of two servers' answers looks at: the rcode, the answer section (sorted:
/// both sides rotate) and the authority section's record types and owners (the SOA serials of
/// two servers differ by design).
fn comparable(m: &Message) -> String {
    let mut answers: Vec<String> = m.answers.iter().map(rr_text).collect();
    answers.sort();
    let authority: Vec<String> = m
        .authorities
        .iter()
        .map(|r| format!("{} {}", r.name, r.record_type()))
        .collect();
    format!(
        "{} | {} | {}",
        rcode_name(m),
        answers.join("; "),
        authority.join("; ")
    )
}

/// Publish mode is complete: a read replica fed only by etcd answers every federated name
/// (addresses, CNAMEs up, flattened families, SRV at every level, NODATA) with what the primary
/// answers a client of unknown location, over the wire.
#[test]
fn read_replica_answers_what_the_primary_answers_for_every_name() {
    let mut etcd = Etcd::start();
    let dir = tempfile::tempdir().unwrap();
    let primary = Fedns::start_in(
        dir.path(),
        &publish_section(&etcd.endpoint()),
        Some(FED_FULL),
    );
    assert!(
        primary.wait_log(Duration::from_secs(10), "published federation records"),
        "{}",
        primary.log_text()
    );
    let replica = Fedns::start(&etcd_section(&etcd.endpoint(), "example.com", ""));
    assert!(
        wait_for(Duration::from_secs(5), || {
            summary(&replica.ask("web.shop.myfed.svc.example.com.", RecordType::A))
                .contains("10.9.1.1")
                .then_some(())
        })
        .is_some(),
        "{}",
        replica.log_text()
    );
    let mut differences = Vec::new();
    let mut compared = 0;
    let mut cname_to_nothing = Vec::new();
    for name in full_names() {
        let types: &[RecordType] = if name.starts_with('_') {
            &[RecordType::SRV]
        } else {
            &[RecordType::A, RecordType::AAAA, RecordType::CNAME]
        };
        for &t in types {
            let pm = primary.ask(&name, t);
            let rm = replica.ask(&name, t);
            let (p, r) = (comparable(&pm), comparable(&rm));
            compared += 1;
            // The one difference SkyDNS cannot express (README, etcd): a CNAME up to a name
            // with nothing of the type asked is answered by the primary (RFC 1034), while a
            // SkyDNS reader drops a CNAME whose in-zone target has no records (CoreDNS's
            // rule). Both are NOERROR without addresses.
            let dangling = t != RecordType::CNAME
                && !pm.answers.is_empty()
                && pm
                    .answers
                    .iter()
                    .all(|a| a.record_type() == RecordType::CNAME)
                && rm.answers.is_empty()
                && pm.metadata.response_code == rm.metadata.response_code;
            if dangling {
                cname_to_nothing.push(format!("{name} {t}"));
            } else if p != r {
                differences.push(format!("{name} {t}\n  primary: {p}\n  replica: {r}"));
            }
        }
    }
    assert!(
        differences.is_empty(),
        "{} of {compared} answers differ:\n{}",
        differences.len(),
        differences.join("\n")
    );
    // Only api (IPv6 only, in us-west2) asked for A where it CNAMEs up: the regions and zones
    // without it.
    let api_a: Vec<String> = full_names()
        .into_iter()
        .filter(|n| n.starts_with("api.") && !n.contains("us-west2") && n.matches('.').count() > 6)
        .map(|n| format!("{n} A"))
        .collect();
    assert_eq!(cname_to_nothing, api_a, "of {compared}");
    // The publisher's keys: each name's own key plus one per value.
    let keys = etcd.list("/skydns/com/example/svc/myfed/shop/web/_tcp/_http");
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert!(keys[1].1.contains("\"port\":80"), "{keys:?}");
}

/// The config file reloaded under a running fedns: another etcd, then another prefix. The last
/// copy serves until the new source has loaded, so the name never goes missing.
#[test]
fn etcd_section_reloads_without_a_gap() {
    let mut first = Etcd::start();
    first.put("/skydns/net/example/a", r#"{"host":"10.3.0.1"}"#);
    let mut second = Etcd::start();
    second.put("/skydns/net/example/a", r#"{"host":"10.3.0.2"}"#);
    second.put("/other/net/example/a", r#"{"host":"10.3.0.3"}"#);
    let dir = tempfile::tempdir().unwrap();
    let f = Fedns::start_in(
        dir.path(),
        &etcd_section(&first.endpoint(), "example.net", ""),
        None,
    );
    assert!(f.wait_log(Duration::from_secs(10), "etcd prefix loaded"));
    let answer = |f: &Fedns| summary(&f.ask("a.example.net.", RecordType::A));
    // The log line comes just before the merger publishes the table with the prefix.
    assert!(
        wait_for(Duration::from_secs(5), || answer(&f)
            .contains("10.3.0.1")
            .then_some(()))
        .is_some(),
        "{}",
        answer(&f)
    );
    let config = dir.path().join("fedns.yaml");
    let base = std::fs::read_to_string(&config).unwrap();
    let base = &base[..base.find("etcd:").unwrap()];
    // Every answer while switching is the old copy or the new one, never NXDOMAIN.
    let switch = |f: &Fedns, section: String, old: &str, new: &str| {
        let tmp = config.with_extension("tmp~");
        std::fs::write(&tmp, format!("{base}{section}")).unwrap();
        std::fs::rename(&tmp, &config).unwrap();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let a = answer(f);
            assert!(
                a.contains(old) || a.contains(new),
                "gap while switching etcd: {a}\n{}",
                f.log_text()
            );
            if a.contains(new) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the new etcd section was not applied: {a}\n{}",
                f.log_text()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    switch(
        &f,
        etcd_section(&second.endpoint(), "example.net", ""),
        "10.3.0.1",
        "10.3.0.2",
    );
    // Another prefix is another source: the old one leaves once the new one has loaded.
    switch(
        &f,
        etcd_section(&second.endpoint(), "example.net", "  prefix: /other\n"),
        "10.3.0.2",
        "10.3.0.3",
    );
    let (_, ready) = http_get(f.http, "/readyz");
    assert!(!ready.contains("etcd:/skydns"), "{ready}");
    assert_eq!(f.metric("fedns_config_restart_pending"), Some(0.0));
    // The old etcd going away changes nothing.
    first.stop();
    std::thread::sleep(Duration::from_millis(300));
    assert!(answer(&f).contains("10.3.0.3"), "{}", answer(&f));
}

/// A reloaded publish-mode section restarts the publisher: the old one steps down and revokes
/// its lease, so the new one is elected at once, not after the lease TTL (30 s here), and the
/// keys already written stay.
#[test]
fn publisher_restarts_on_reload_without_waiting_for_its_lease() {
    let mut etcd = Etcd::start();
    let dir = tempfile::tempdir().unwrap();
    let section = |ttl: u32| {
        format!(
            "etcd:\n  endpoints: [\"{}\"]\n  mode: publish\n  lease_ttl_secs: {ttl}\n",
            etcd.endpoint()
        )
    };
    let p = Fedns::start_in(dir.path(), &section(30), Some(FED));
    assert!(
        p.wait_log(Duration::from_secs(10), "published federation records"),
        "{}",
        p.log_text()
    );
    let before = etcd.list("/skydns/com/example/");
    assert!(!before.is_empty());
    let config = dir.path().join("fedns.yaml");
    let text = std::fs::read_to_string(&config).unwrap();
    let tmp = config.with_extension("tmp~");
    std::fs::write(
        &tmp,
        text.replace("lease_ttl_secs: 30", "lease_ttl_secs: 29"),
    )
    .unwrap();
    std::fs::rename(&tmp, &config).unwrap();
    assert!(
        p.wait_log(Duration::from_secs(10), "etcd publisher stepping down"),
        "{}",
        p.log_text()
    );
    let elected = |p: &Fedns| {
        p.log_lines()
            .iter()
            .filter(|l| l.contains("elected etcd publisher"))
            .count()
    };
    assert!(
        wait_for(Duration::from_secs(10), || (elected(&p) >= 2).then_some(())).is_some(),
        "the new publisher was not elected well within the old lease's 30 s:\n{}",
        p.log_text()
    );
    assert_eq!(p.metric("fedns_etcd_publisher_leader"), Some(1.0));
    assert_eq!(etcd.list("/skydns/com/example/"), before);
    assert_eq!(p.metric("fedns_config_restart_pending"), Some(0.0));
}

/// Wildcard federation names (a DNSEndpoint's `*.apps.example.com`, from the Kubernetes
/// source) are not published by default: CoreDNS's etcd plugin reads `*` only as a query label,
/// so a stored `*` key would leave every name below it NXDOMAIN there. They are counted in the
/// publish log and named in a warning, and `*` keys an older publisher wrote are removed. With
/// `wildcards: true` they are published, and a fedns reader with `wildcards: true` answers
/// names below them.
#[test]
fn wildcard_federation_names_are_published_only_with_wildcards() {
    let api = kube_api::ApiServer::start();
    api.put(
        kube_api::Res::DnsEndpoints,
        kube_api::dns_endpoint(
            "shop",
            "apps",
            &[
                ("*.apps.example.com", "A", &["192.0.2.10"], 60),
                ("web.apps.example.com", "A", &["192.0.2.20"], 60),
            ],
        ),
    );
    let kube = "kubernetes:\n  federation: myfed\n  zone: example.com\n  coalesce_ms: 20\n  dns_endpoints: true\n  select:\n    label: fedns.io/federate=true\n  clusters:\n    - {name: east1, kubeconfig: kubeconfig, context: east1}\n";
    let web = "/skydns/com/example/apps/web/";
    let star = "/skydns/com/example/apps/*";
    for wildcards in [false, true] {
        let mut etcd = Etcd::start();
        // What a publisher without this rule left behind.
        let stale = format!("{star}/0123456789abcdef");
        etcd.put(
            &stale,
            r#"{"host":"192.0.2.10","ttl":60,"group":"*.apps.example.com"}"#,
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("kubeconfig"),
            kube_api::kubeconfig(&[("east1", api.url())]),
        )
        .unwrap();
        let extra = if wildcards { "  wildcards: true\n" } else { "" };
        let publisher = Fedns::start_in(
            dir.path(),
            &format!("{}{extra}{kube}", publish_section(&etcd.endpoint())),
            None,
        );
        let published = wait_for(Duration::from_secs(20), || {
            let keys = etcd.list("/skydns/com/example/apps/");
            keys.iter().any(|(k, _)| k.starts_with(web)).then_some(keys)
        })
        .unwrap_or_else(|| panic!("web not published:\n{}", publisher.log_text()));
        let stars: Vec<_> = published
            .iter()
            .filter(|(k, _)| k.starts_with(star))
            .collect();
        let reader = Fedns::start(&etcd_section(&etcd.endpoint(), "example.com", extra));
        assert!(reader.wait_log(Duration::from_secs(10), "etcd prefix loaded"));
        let a = |name: &str| {
            wait_for(Duration::from_secs(5), || {
                let s = summary(&reader.ask(name, RecordType::A));
                (!s.starts_with("SERVFAIL")).then_some(s)
            })
            .unwrap()
        };
        wait_for(Duration::from_secs(5), || {
            a("web.apps.example.com.")
                .contains("192.0.2.20")
                .then_some(())
        })
        .unwrap_or_else(|| panic!("{}", reader.log_text()));
        let line = publisher
            .log_lines()
            .into_iter()
            .rfind(|l| l.contains("published federation records"))
            .unwrap();
        if wildcards {
            assert!(
                stars.iter().any(|(k, v)| k.starts_with(&format!("{star}/"))
                    && k != &stale
                    && v.contains("192.0.2.10")),
                "{published:?}"
            );
            assert!(line.contains("wildcards_skipped=0"), "{line}");
            wait_for(Duration::from_secs(5), || {
                a("x.apps.example.com.")
                    .contains("192.0.2.10")
                    .then_some(())
            })
            .unwrap_or_else(|| panic!("{}", a("x.apps.example.com.")));
        } else {
            assert!(stars.is_empty(), "{published:?}");
            assert!(line.contains("wildcards_skipped=1"), "{line}");
            let warned = publisher.wait_log(Duration::from_secs(5), "wildcard names not published");
            assert!(warned, "{}", publisher.log_text());
            assert!(
                publisher.log_text().contains("names=*.apps.example.com."),
                "{}",
                publisher.log_text()
            );
            // As CoreDNS would: nothing below the name that was left out.
            assert!(a("x.apps.example.com.").starts_with("NXDOMAIN"));
        }
    }
}
