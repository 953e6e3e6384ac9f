//! Zone transfers to real secondaries: the fedns binary as primary, Knot DNS and NSD (Debian
//! `knot`, `nsd`) as secondaries on loopback. Initial AXFR, then a federation change → NOTIFY →
//! IXFR → the secondary answers the new address; plus AXFR/IXFR contents and refusals checked
//! directly over TCP. Every process is started here, on ephemeral loopback ports, and killed
//! by PID when the test ends.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::unbound::{Case, Unbound};
use common::{Fedns, http_get, metric, wait_for};
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, Record, RecordType};

const ZONE: &str = "$ORIGIN example.com.
$TTL 3600
@ IN SOA ns1 hostmaster 1 3600 600 86400 30
@ IN NS ns1
ns1 IN A 127.0.0.1
www IN CNAME checkout.shop.myfed.svc.example.com.
sub IN NS ns.sub
ns.sub IN A 192.0.2.53
*.wild IN A 192.0.2.80
";

fn federation(address: &str) -> String {
    format!(
        "federation: {{name: myfed, zone: example.com, ttl: 30}}
clusters:
  - {{name: east, region: us-east1, zones: [us-east1-b]}}
  - {{name: west, region: us-west2}}
services:
  - name: checkout
    namespace: shop
    ports: [{{name: http, protocol: TCP, port: 80}}]
    shards:
      - {{cluster: east, addresses: [{address}], ready_endpoints: 2}}
      - {{cluster: west, addresses: [198.51.100.20], ready_endpoints: 1}}
"
    )
}

struct Dir {
    dir: tempfile::TempDir,
}

impl Dir {
    fn new() -> Dir {
        Dir {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }
    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
    fn write(&self, rel: &str, text: &str) {
        let dst = self.path(rel);
        if let Some(p) = dst.parent() {
            std::fs::create_dir_all(p).unwrap();
        }
        let tmp = dst.with_extension("tmp~");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &dst).unwrap();
    }
}

/// fedns with the zone and federation above; `transfers` is the config's `transfers:` body.
fn primary(dir: &Dir, transfers: &str) -> Fedns {
    primary_on(dir, 0, transfers)
}

fn primary_on(dir: &Dir, port: u16, transfers: &str) -> Fedns {
    primary_with(dir, port, transfers, "")
}

/// [`primary_on`] with more config (`extra`: top-level YAML lines).
fn primary_with(dir: &Dir, port: u16, transfers: &str, extra: &str) -> Fedns {
    dir.write("zones/example.com.zone", ZONE);
    dir.write("federation.yaml", &federation("203.0.113.10"));
    dir.write(
        "fedns.yaml",
        &format!(
            "listen: [\"127.0.0.1:{port}\"]\nhttp: \"127.0.0.1:0\"\nworkers: 1\nwatch_interval_ms: 100\nzones_dir: zones\nfederation_files: [federation.yaml]\n{extra}transfers:\n{transfers}"
        ),
    );
    let f = Fedns::start(&dir.path("fedns.yaml"));
    wait_for(Duration::from_secs(10), || {
        (http_get(f.http, "/readyz").0 == 200).then_some(())
    })
    .expect("fedns ready");
    f
}

fn free_port() -> u16 {
    // UDP and TCP must both be free: take one from the kernel for UDP and check TCP.
    for _ in 0..50 {
        let u = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = u.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port");
}

fn request(name: &str, t: RecordType, serial: Option<u32>) -> Vec<u8> {
    let mut m = Message::new(0x4242, MessageType::Query, OpCode::Query);
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
    if let Some(serial) = serial {
        let soa = hickory_proto::rr::rdata::SOA::new(
            Name::from_ascii("ns1.example.com.").unwrap(),
            Name::from_ascii("hostmaster.example.com.").unwrap(),
            serial,
            3600,
            600,
            86400,
            30,
        );
        m.authorities.push(Record::from_rdata(
            Name::from_ascii(name).unwrap(),
            0,
            RData::SOA(soa),
        ));
    }
    m.to_vec().unwrap()
}

/// Every message of a transfer over TCP, up to its closing SOA: an up-to-date IXFR is one
/// SOA, an IXFR diff (second record an SOA) has four, an AXFR (or an IXFR answered with the
/// whole zone) two.
fn transfer(addr: SocketAddr, req: &[u8]) -> Vec<Message> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut framed = (req.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(req);
    s.write_all(&framed).unwrap();
    let mut out: Vec<Message> = Vec::new();
    loop {
        let mut len = [0u8; 2];
        if s.read_exact(&mut len).is_err() {
            break;
        }
        let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
        s.read_exact(&mut buf).unwrap();
        let m = Message::from_vec(&buf).expect("transfer message decodes");
        let refused = m.metadata.response_code != hickory_proto::op::ResponseCode::NoError;
        out.push(m);
        let all: Vec<&Record> = out.iter().flat_map(|m| &m.answers).collect();
        let soas = all
            .iter()
            .filter(|r| r.record_type() == RecordType::SOA)
            .count();
        let diff = all
            .get(1)
            .is_some_and(|r| r.record_type() == RecordType::SOA);
        if refused || all.len() == 1 || (diff && soas == 4) || (!diff && soas == 2) {
            break;
        }
    }
    out
}

fn show(r: &Record) -> String {
    format!("{} {} {}", r.name.to_lowercase(), r.record_type(), r.data)
}

fn udp_ask(addr: SocketAddr, name: &str, t: RecordType) -> Option<Message> {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    s.send_to(&request(name, t, None), addr).ok()?;
    let mut buf = [0u8; 4096];
    let n = s.recv(&mut buf).ok()?;
    Message::from_vec(&buf[..n]).ok()
}

fn addresses(m: &Message) -> Vec<String> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0.to_string()),
            _ => None,
        })
        .collect()
}

#[test]
fn axfr_and_ixfr_carry_what_is_served_and_only_to_allowed_peers() {
    let dir = Dir::new();
    let f = primary(&dir, "  allow: [\"127.0.0.0/8\"]\n  journal: 4\n");
    let msgs = transfer(f.tcp, &request("example.com.", RecordType::AXFR, None));
    let records: Vec<&Record> = msgs.iter().flat_map(|m| &m.answers).collect();
    assert_eq!(records.first().unwrap().record_type(), RecordType::SOA);
    assert_eq!(records.last().unwrap().record_type(), RecordType::SOA);
    let shown: Vec<String> = records.iter().map(|r| show(r)).collect();
    for want in [
        "example.com. NS ns1.example.com.",
        "ns1.example.com. A 127.0.0.1",
        "www.example.com. CNAME checkout.shop.myfed.svc.example.com.",
        // The delegation and its glue, and the wildcard as written.
        "sub.example.com. NS ns.sub.example.com.",
        "ns.sub.example.com. A 192.0.2.53",
        "*.wild.example.com. A 192.0.2.80",
        // Federated names as a client of unknown location gets them.
        "checkout.shop.myfed.svc.example.com. A 203.0.113.10",
        "checkout.shop.myfed.svc.example.com. A 198.51.100.20",
        "checkout.shop.myfed.svc.us-east1.example.com. A 203.0.113.10",
        "_http._tcp.checkout.shop.myfed.svc.example.com. SRV 0 100 80 checkout.shop.myfed.svc.example.com.",
    ] {
        assert!(
            shown.iter().any(|s| s == want),
            "{want} missing from the transfer:\n{}",
            shown.join("\n")
        );
    }
    let mut unique = shown[1..shown.len() - 1].to_vec();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), shown.len() - 2, "no record twice");
    let RData::SOA(soa) = &records[0].data else {
        unreachable!()
    };
    let before = soa.serial;

    // Up to date: our SOA alone.
    let msgs = transfer(
        f.tcp,
        &request("example.com.", RecordType::IXFR, Some(before)),
    );
    assert_eq!(msgs.iter().map(|m| m.answers.len()).sum::<usize>(), 1);

    // One change: an IXFR from the old serial holds exactly it.
    dir.write("federation.yaml", &federation("203.0.113.99"));
    wait_for(Duration::from_secs(10), || {
        let m = udp_ask(
            f.udp,
            "checkout.shop.myfed.svc.us-east1.example.com.",
            RecordType::A,
        )?;
        addresses(&m)
            .contains(&"203.0.113.99".to_string())
            .then_some(())
    })
    .expect("the change is served");
    let msgs = transfer(
        f.tcp,
        &request("example.com.", RecordType::IXFR, Some(before)),
    );
    let diff: Vec<String> = msgs.iter().flat_map(|m| &m.answers).map(show).collect();
    let soas = diff.iter().filter(|s| s.contains(" SOA ")).count();
    assert_eq!(soas, 4, "new, old, new, new:\n{}", diff.join("\n"));
    let deleted_at = 2;
    let added_at = diff
        .iter()
        .skip(2)
        .position(|s| s.contains(" SOA "))
        .unwrap()
        + 2;
    let deleted = &diff[deleted_at..added_at];
    let added = &diff[added_at + 1..diff.len() - 1];
    assert!(
        deleted
            .contains(&"checkout.shop.myfed.svc.us-east1.example.com. A 203.0.113.10".to_string()),
        "{}",
        diff.join("\n")
    );
    assert!(
        added.contains(&"checkout.shop.myfed.svc.us-east1.example.com. A 203.0.113.99".to_string()),
        "{}",
        diff.join("\n")
    );
    assert!(
        !deleted
            .iter()
            .chain(added)
            .any(|s| s.contains("ns1.example.com. A")),
        "unchanged names are not in the diff:\n{}",
        diff.join("\n")
    );
    // A serial the journal never held: the whole zone.
    let msgs = transfer(f.tcp, &request("example.com.", RecordType::IXFR, Some(7)));
    let n: usize = msgs.iter().map(|m| m.answers.len()).sum();
    assert!(n > 10, "whole zone, got {n} records");

    // Zones we do not serve, and peers outside `allow`, are refused.
    let msgs = transfer(f.tcp, &request("example.org.", RecordType::AXFR, None));
    assert_eq!(
        msgs[0].metadata.response_code,
        hickory_proto::op::ResponseCode::Refused
    );
    let other = Dir::new();
    let g = primary(&other, "  allow: [\"10.0.0.0/8\"]\n");
    let msgs = transfer(g.tcp, &request("example.com.", RecordType::AXFR, None));
    assert_eq!(
        msgs[0].metadata.response_code,
        hickory_proto::op::ResponseCode::Refused
    );
}

/// A secondary process, killed when dropped.
struct Secondary {
    child: Child,
    addr: SocketAddr,
    name: &'static str,
}

impl Drop for Secondary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn binary(name: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/usr/bin", "/usr/local/sbin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    panic!("{name} is not installed (Debian packages knot and nsd; scripts/test installs them)");
}

const KEY: &str = "xfr-key.";
const SECRET: &str = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0";

fn knot(dir: &Dir, primary: SocketAddr, port: u16) -> Secondary {
    knot_with(dir, primary, port, false)
}

fn knot_tsig(dir: &Dir, primary: SocketAddr, port: u16) -> Secondary {
    knot_with(dir, primary, port, true)
}

fn knot_with(dir: &Dir, primary: SocketAddr, port: u16, tsig: bool) -> Secondary {
    let (keys, key) = if tsig {
        (
            format!("key:\n  - id: {KEY}\n    algorithm: hmac-sha256\n    secret: {SECRET}\n"),
            format!("    key: {KEY}\n"),
        )
    } else {
        (String::new(), String::new())
    };
    let conf = format!(
        "{keys}server:
    rundir: \"{run}\"
    listen: 127.0.0.1@{port}
database:
    storage: \"{run}\"
log:
  - target: stderr
    any: info
remote:
  - id: fedns
    address: {ip}@{pport}
{key}acl:
  - id: from_fedns
    address: 127.0.0.0/8
    action: notify
{key}template:
  - id: default
    storage: \"{run}\"
zone:
  - domain: example.com
    master: fedns
    acl: from_fedns
",
        run = dir.path("knot").display(),
        ip = primary.ip(),
        pport = primary.port(),
    );
    dir.write("knot/knot.conf", &conf);
    let child = Command::new(binary("knotd"))
        .arg("-c")
        .arg(dir.path("knot/knot.conf"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path("knot/log")).unwrap())
        .spawn()
        .expect("start knotd");
    Secondary {
        child,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        name: "knot",
    }
}

fn nsd(dir: &Dir, primary: SocketAddr, port: u16) -> Secondary {
    let run = dir.path("nsd");
    let conf = format!(
        "server:
    ip-address: 127.0.0.1
    port: {port}
    username: \"\"
    chroot: \"\"
    zonesdir: \"{run}\"
    database: \"\"
    zonelistfile: \"{run}/zone.list\"
    xfrdfile: \"{run}/xfrd.state\"
    xfrdir: \"{run}\"
    pidfile: \"{run}/nsd.pid\"
    logfile: \"{run}/nsd.log\"
    verbosity: 2
remote-control:
    control-enable: no
zone:
    name: example.com
    zonefile: \"{run}/example.com.zone\"
    request-xfr: {ip}@{pport} NOKEY
    allow-notify: 127.0.0.1 NOKEY
",
        run = run.display(),
        ip = primary.ip(),
        pport = primary.port(),
    );
    dir.write("nsd/nsd.conf", &conf);
    let child = Command::new(binary("nsd"))
        .arg("-d")
        .arg("-c")
        .arg(dir.path("nsd/nsd.conf"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path("nsd/stderr")).unwrap())
        .spawn()
        .expect("start nsd");
    Secondary {
        child,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        name: "nsd",
    }
}

fn secondary_log(dir: &Dir, s: &Secondary) -> String {
    let file = match s.name {
        "knot" => "knot/log",
        _ => "nsd/nsd.log",
    };
    std::fs::read_to_string(dir.path(file)).unwrap_or_default()
}

/// The secondary transfers the zone, then follows a federation change within seconds of
/// fedns's NOTIFY.
fn follows_the_primary(start: fn(&Dir, SocketAddr, u16) -> Secondary, tsig: bool) {
    let dir = Dir::new();
    let port = free_port();
    let key = if tsig {
        format!("  tsig: {{name: {KEY}, algorithm: hmac-sha256, secret: {SECRET}}}\n")
    } else {
        String::new()
    };
    let f = primary_on(
        &dir,
        0,
        &format!("  allow: [\"127.0.0.0/8\"]\n  notify: [\"127.0.0.1:{port}\"]\n{key}"),
    );
    let sec = start(&dir, f.tcp, port);
    let name = "checkout.shop.myfed.svc.us-east1.example.com.";
    let first = wait_for(Duration::from_secs(20), || {
        let m = udp_ask(sec.addr, name, RecordType::A)?;
        let a = addresses(&m);
        a.contains(&"203.0.113.10".to_string()).then_some(a)
    });
    assert!(
        first.is_some(),
        "{} never served the zone:\n{}\nfedns:\n{}",
        sec.name,
        secondary_log(&dir, &sec),
        f.log_text()
    );
    // The wildcard and the delegation's glue came along.
    let m = udp_ask(sec.addr, "anything.wild.example.com.", RecordType::A).unwrap();
    assert_eq!(addresses(&m), ["192.0.2.80"], "{}", sec.name);

    dir.write("federation.yaml", &federation("203.0.113.99"));
    let followed = wait_for(Duration::from_secs(15), || {
        let m = udp_ask(sec.addr, name, RecordType::A)?;
        addresses(&m)
            .contains(&"203.0.113.99".to_string())
            .then_some(())
    });
    assert!(
        followed.is_some(),
        "{} did not follow the change:\n{}\nfedns:\n{}",
        sec.name,
        secondary_log(&dir, &sec),
        f.log_text()
    );
    let (_, metrics) = http_get(f.http, "/metrics");
    let acked = metric(
        &metrics,
        &format!(
            "fedns_notify_total{{result=\"acked\",secondary=\"{}\"}}",
            sec.addr
        ),
    )
    .unwrap_or(0.0);
    assert!(
        acked >= 1.0,
        "NOTIFY acknowledged by {}:\n{metrics}",
        sec.name
    );
    assert!(
        f.log_text().contains("incremental zone transfer"),
        "{} refreshed with IXFR:\n{}",
        sec.name,
        f.log_text()
    );
}

#[test]
fn knot_follows_fedns_as_a_secondary() {
    follows_the_primary(knot, false);
}

#[test]
fn nsd_follows_fedns_as_a_secondary() {
    follows_the_primary(nsd, false);
}

#[test]
fn knot_follows_fedns_with_tsig_signed_transfers_and_notifies() {
    follows_the_primary(knot_tsig, true);
}

/// kdig (Knot's dig) transfers with a key and checks every message's signature itself.
fn kdig(addr: SocketAddr, args: &[&str]) -> String {
    let out = Command::new(binary("kdig"))
        .arg(format!("@{}", addr.ip()))
        .arg("-p")
        .arg(addr.port().to_string())
        .args(args)
        .output()
        .expect("run kdig");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn with_a_tsig_key_only_signed_transfers_are_answered_and_answers_are_signed() {
    let dir = Dir::new();
    // A zone that takes several messages, each signed and chained to the one before.
    let mut bulk = String::from(
        "$ORIGIN bulk.example.\n$TTL 300\n@ SOA ns hostmaster 1 3600 600 86400 30\n@ NS ns\nns A 192.0.2.1\n",
    );
    for i in 0..2000 {
        bulk.push_str(&format!(
            "h{i} A 10.{}.{}.{}\n",
            i / 65536,
            (i / 256) % 256,
            i % 256
        ));
    }
    dir.write("zones/bulk.example.zone", &bulk);
    let f = primary(
        &dir,
        &format!(
            "  allow: [\"127.0.0.0/8\"]\n  tsig: {{name: {KEY}, algorithm: hmac-sha256, secret: {SECRET}}}\n"
        ),
    );
    let key = format!("hmac-sha256:{KEY}:{SECRET}");
    let signed = kdig(f.tcp, &["-y", &key, "example.com.", "AXFR"]);
    assert!(
        signed.contains("checkout.shop.myfed.svc.example.com.") && !signed.contains("WARNING"),
        "a signed AXFR, verified by kdig:\n{signed}"
    );
    let many = kdig(f.tcp, &["-y", &key, "bulk.example.", "AXFR"]);
    assert!(
        many.contains("h1999.bulk.example.") && !many.contains("WARNING"),
        "a signed multi-message AXFR, every message verified by kdig:\n{}",
        &many[many.len().saturating_sub(2000)..]
    );
    assert!(
        many.contains(" messages, ") && !many.contains("(1 messages"),
        "several messages: {}",
        &many[many.len().saturating_sub(500)..]
    );
    let ixfr = kdig(f.tcp, &["-y", &key, "example.com.", "IXFR=1"]);
    assert!(ixfr.contains("SOA") && !ixfr.contains("WARNING"), "{ixfr}");
    // A secondary's signed SOA check over UDP is answered signed (kdig verifies it).
    let soa = kdig(f.udp, &["-y", &key, "example.com.", "SOA"]);
    assert!(
        soa.contains("NOERROR") && soa.contains("SOA") && !soa.contains("WARNING"),
        "{soa}"
    );
    // Unsigned: refused.
    let msgs = transfer(f.tcp, &request("example.com.", RecordType::AXFR, None));
    assert_eq!(
        msgs[0].metadata.response_code,
        hickory_proto::op::ResponseCode::Refused
    );
    // The wrong secret: NOTAUTH with BADSIG.
    let wrong = kdig(
        f.tcp,
        &[
            "-y",
            &format!("hmac-sha256:{KEY}:b3RoZXItb3RoZXItb3RoZXItb3RoZXI="),
            "example.com.",
            "AXFR",
        ],
    );
    assert!(
        wrong.contains("NOTAUTH") || wrong.contains("BADSIG"),
        "{wrong}"
    );
    assert!(!wrong.contains("checkout.shop"), "{wrong}");
    // An unknown key name: BADKEY.
    let stranger = kdig(
        f.tcp,
        &[
            "-y",
            &format!("hmac-sha256:other.:{SECRET}"),
            "example.com.",
            "AXFR",
        ],
    );
    assert!(
        stranger.contains("NOTAUTH") || stranger.contains("BADKEY"),
        "{stranger}"
    );
}

/// A signed zone transfers with its RRSIGs and an NSEC chain made for the transfer (the
/// primary's own denial is compact and per query): `ldns-verify-zone` accepts the AXFR, and a
/// validating unbound in front of the secondary, with the zone's DS as trust anchor, validates
/// its answers (AD=1), before and after a federation change reaches it by NOTIFY and IXFR.
fn a_signed_zone_validates_from(start: fn(&Dir, SocketAddr, u16) -> Secondary) {
    let dir = Dir::new();
    let port = free_port();
    let f = primary_with(
        &dir,
        0,
        &format!("  allow: [\"127.0.0.0/8\"]\n  notify: [\"127.0.0.1:{port}\"]\n"),
        "state_dir: state\ndnssec:\n  zones: [example.com]\n",
    );
    // The AXFR itself, checked by ldns (signatures, NSEC chain, delegation).
    let axfr = kdig(f.tcp, &["AXFR", "example.com.", "+nocomments", "+nostats"]);
    let mut lines: Vec<&str> = axfr.lines().filter(|l| !l.starts_with(';')).collect();
    lines.pop_if(|l| l.contains("\tSOA\t") || l.contains(" SOA "));
    assert!(axfr.contains("NSEC"), "{axfr}");
    dir.write("axfr.zone", &(lines.join("\n") + "\n"));
    let verify = Command::new(binary("ldns-verify-zone"))
        .arg(dir.path("axfr.zone"))
        .output()
        .expect("run ldns-verify-zone (Debian ldnsutils; scripts/test installs it)");
    assert!(
        verify.status.success(),
        "ldns-verify-zone:\n{}{}\nzone:\n{axfr}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );

    // The chain's signatures are kept between transfers (ECDSA's are randomized: made again,
    // they would differ), so an unchanged zone transfers byte for byte alike.
    let nsec_sigs = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| l.contains("RRSIG") && l.contains("NSEC "))
            .map(str::to_string)
            .collect()
    };
    let again = kdig(f.tcp, &["AXFR", "example.com.", "+nocomments", "+nostats"]);
    assert!(!nsec_sigs(&axfr).is_empty(), "{axfr}");
    assert_eq!(nsec_sigs(&axfr), nsec_sigs(&again));
    let ds = Command::new(common::BIN)
        .args(["dnssec", "ds", "--config"])
        .arg(dir.path("fedns.yaml"))
        .output()
        .unwrap();
    let ds = String::from_utf8_lossy(&ds.stdout)
        .lines()
        .find(|l| l.contains(" DS "))
        .expect("a DS record")
        .to_string();
    let sec = start(&dir, f.tcp, port);
    let name = "checkout.shop.myfed.svc.us-east1.example.com.";
    let served = wait_for(Duration::from_secs(20), || {
        udp_ask(sec.addr, name, RecordType::A).filter(|m| !addresses(m).is_empty())
    });
    assert!(
        served.is_some(),
        "{} never served the zone:\n{}\nfedns:\n{}",
        sec.name,
        secondary_log(&dir, &sec),
        f.log_text()
    );
    let ub = Unbound::start(&ds, sec.addr);
    // (name, type, rcode, non-RRSIG answer types): the secondary answers from the chain.
    let cases: &[Case<'_>] = &[
        (name, RecordType::A, ResponseCode::NoError, &[RecordType::A]),
        (
            "www.example.com.",
            RecordType::A,
            ResponseCode::NoError,
            // The global name as transferred: every healthy shard.
            &[RecordType::CNAME, RecordType::A, RecordType::A],
        ),
        (
            "anything.wild.example.com.",
            RecordType::A,
            ResponseCode::NoError,
            &[RecordType::A],
        ),
        (
            "nope.example.com.",
            RecordType::A,
            ResponseCode::NXDomain,
            &[],
        ),
        (
            "ns1.example.com.",
            RecordType::TXT,
            ResponseCode::NoError,
            &[],
        ),
        (
            "sub.example.com.",
            RecordType::DS,
            ResponseCode::NoError,
            &[],
        ),
        (
            "example.com.",
            RecordType::DNSKEY,
            ResponseCode::NoError,
            &[RecordType::DNSKEY],
        ),
    ];
    ub.expect_validated(cases, sec.name);
    // A change: NOTIFY, IXFR (answered whole), and the new address validates too.
    dir.write("federation.yaml", &federation("203.0.113.99"));
    let followed = wait_for(Duration::from_secs(15), || {
        let m = udp_ask(sec.addr, name, RecordType::A)?;
        addresses(&m)
            .contains(&"203.0.113.99".to_string())
            .then_some(())
    });
    assert!(
        followed.is_some(),
        "{} did not follow the change:\n{}\nfedns:\n{}",
        sec.name,
        secondary_log(&dir, &sec),
        f.log_text()
    );
    assert!(
        f.log_text().contains("ixfr=true"),
        "{} asked for IXFR:\n{}",
        sec.name,
        f.log_text()
    );
    // A name unbound has not cached (the regional one above is, for its TTL).
    let m = ub.ask(
        "checkout.shop.myfed.svc.us-east1-b.us-east1.example.com.",
        RecordType::A,
    );
    assert!(
        m.metadata.authentic_data && addresses(&m) == ["203.0.113.99"],
        "{m}\n{}",
        ub.log()
    );
}

#[test]
fn knot_serves_a_signed_zone_that_validates() {
    a_signed_zone_validates_from(knot);
}

#[test]
fn nsd_serves_a_signed_zone_that_validates() {
    a_signed_zone_validates_from(nsd);
}
