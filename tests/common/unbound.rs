//! A validating unbound (Debian package `unbound`) on loopback for the DNSSEC tests: one zone,
//! example.com, stubbed to the server under test, with the given trust anchor. Started on an
//! ephemeral port, killed by PID on drop; every wait is bounded.

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};

use super::wait_for;

fn free_port() -> u16 {
    for _ in 0..50 {
        let u = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = u.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port");
}

pub fn unbound_binary() -> PathBuf {
    for p in ["/usr/sbin/unbound", "/usr/bin/unbound"] {
        if Path::new(p).exists() {
            return p.into();
        }
    }
    panic!(
        "unbound (Debian package unbound) is required by these tests{}; run ./scripts/test, which installs it",
        if std::env::var("CI").as_deref() == Ok("true") {
            " and CI=true forbids skipping them"
        } else {
            ""
        }
    );
}

/// A question and what its validated answer must be: name, type, rcode, and the answer
/// section's types without RRSIGs.
pub type Case<'a> = (&'a str, RecordType, ResponseCode, &'a [RecordType]);

/// A validating unbound on loopback with `anchor` as the trust anchor of example.com and fedns
/// as the zone's only server; killed by PID on drop.
pub struct Unbound {
    child: Child,
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Drop for Unbound {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Unbound {
    pub fn start(anchor: &str, fedns: SocketAddr) -> Unbound {
        Unbound::start_with(anchor, fedns, false)
    }

    /// `ecs`: with unbound's subnet cache in front of the validator, forwarding the clients'
    /// ECS option (RFC 7871) to the server, so answers per client location are validated too.
    pub fn start_with(anchor: &str, fedns: SocketAddr, ecs: bool) -> Unbound {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let conf = dir.path().join("unbound.conf");
        std::fs::write(
            &conf,
            format!(
                "server:\n  interface: 127.0.0.1\n  port: {port}\n  do-not-query-localhost: no\n  \
                 username: \"\"\n  chroot: \"\"\n  directory: \"{d}\"\n  pidfile: \"\"\n  \
                 use-syslog: no\n  logfile: \"{d}/unbound.log\"\n  verbosity: 1\n  val-log-level: 2\n  \
                 module-config: \"{modules}\"\n{subnet}  trust-anchor: \"{anchor}\"\n  \
                 harden-dnssec-stripped: yes\n  qname-minimisation: no\n  aggressive-nsec: yes\n  \
                 num-threads: 1\n  so-reuseport: no\n\
                 stub-zone:\n  name: \"example.com\"\n  stub-addr: {ip}@{p}\n",
                d = dir.path().display(),
                modules = if ecs {
                    "subnetcache validator iterator"
                } else {
                    "validator iterator"
                },
                subnet = if ecs {
                    format!(
                        "  send-client-subnet: {}\n  client-subnet-always-forward: yes\n  \
                         max-client-subnet-ipv4: 24\n",
                        fedns.ip()
                    )
                } else {
                    String::new()
                },
                ip = fedns.ip(),
                p = fedns.port(),
            ),
        )
        .unwrap();
        let child = Command::new(unbound_binary())
            .arg("-d")
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn unbound");
        let mut u = Unbound {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            dir,
        };
        let up = wait_for(Duration::from_secs(15), || {
            if let Ok(Some(status)) = u.child.try_wait() {
                panic!("unbound exited ({status}):\n{}", u.log());
            }
            try_ask(u.addr, "example.com.", RecordType::SOA, true)
        });
        assert!(up.is_some(), "unbound did not answer:\n{}", u.log());
        u
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("unbound.log")).unwrap_or_default()
    }

    pub fn ask(&self, name: &str, t: RecordType) -> Message {
        try_ask(self.addr, name, t, true)
            .unwrap_or_else(|| panic!("no answer for {name} {t}:\n{}", self.log()))
    }

    /// Asks each case's name and type and checks the answer validated (AD=1) with the rcode
    /// and the answer section's types (RRSIGs left out, in order) the case names. `what` says
    /// which server is behind unbound, for the failure message.
    pub fn expect_validated(&self, cases: &[Case<'_>], what: &str) {
        for (name, t, rcode, want) in cases {
            let m = self.ask(name, *t);
            let got: Vec<RecordType> = m
                .answers
                .iter()
                .map(|r| r.record_type())
                .filter(|t| *t != RecordType::RRSIG)
                .collect();
            assert_eq!(
                (
                    m.metadata.response_code,
                    m.metadata.authentic_data,
                    got.as_slice()
                ),
                (*rcode, true, *want),
                "{what}: {name} {t}: {m}\nunbound log:\n{}",
                self.log()
            );
        }
    }

    /// [`Unbound::ask`] for a client in `subnet` (an IPv4 /24, sent as ECS).
    pub fn ask_from(&self, subnet: std::net::Ipv4Addr, name: &str, t: RecordType) -> Message {
        try_ask_with(self.addr, name, t, true, Some(subnet))
            .unwrap_or_else(|| panic!("no answer for {name} {t}:\n{}", self.log()))
    }
}

pub fn try_ask(addr: SocketAddr, name: &str, t: RecordType, dnssec_ok: bool) -> Option<Message> {
    try_ask_with(addr, name, t, dnssec_ok, None)
}

fn try_ask_with(
    addr: SocketAddr,
    name: &str,
    t: RecordType,
    dnssec_ok: bool,
    subnet: Option<std::net::Ipv4Addr>,
) -> Option<Message> {
    use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsOption};
    let mut m = Message::new(rand_id(), MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
    let mut edns = Edns::new();
    edns.set_max_payload(1232);
    edns.set_dnssec_ok(dnssec_ok);
    if let Some(ip) = subnet {
        edns.options_mut()
            .insert(EdnsOption::Subnet(ClientSubnet::new(ip.into(), 24, 0)));
    }
    m.set_edns(edns);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    sock.send_to(&m.to_vec().unwrap(), addr).ok()?;
    let mut buf = [0u8; 65535];
    let (n, _) = sock.recv_from(&mut buf).ok()?;
    Message::from_vec(&buf[..n]).ok()
}

fn rand_id() -> u16 {
    use std::time::SystemTime;
    (SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
        & 0xffff) as u16
}
