//! DNSSEC end to end: the real fedns binary signs a zone-file + federation zone, and a real
//! validating resolver (unbound, Debian package `unbound`) in front of it, with the zone's DS as
//! its trust anchor, must validate every kind of answer (AD=1): positive, per-location, CNAME
//! chains zonal → regional → global, SRV, NODATA, names that do not exist (compact denial), the
//! DS-less delegation, wildcard answers (signed per query), and each location's answer through
//! unbound's ECS subnet cache. A resolver with a tampered trust anchor must refuse them
//! (SERVFAIL). Transfers of the signed zone to Knot and NSD are in `tests/secondaries.rs`.
//! Both processes run on loopback and are stopped by PID. `scripts/test` installs unbound.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{RData, RecordType};

mod common;

use common::Fedns;
use common::unbound::{Case, Unbound, try_ask};

const BIN: &str = env!("CARGO_BIN_EXE_fedns");

const ZONE: &str = "$ORIGIN example.com.
$TTL 3600
@       IN SOA  ns1.example.com. hostmaster.example.com. 1 3600 600 86400 30
@       IN NS   ns1.example.com.
@       IN MX   10 mail.example.com.
ns1     IN A    127.0.0.1
mail    IN A    192.0.2.25
www     IN CNAME checkout.shop.myfed.svc.example.com.
sub     IN NS   ns.sub.example.com.
ns.sub  IN A    192.0.2.53
*.wild  IN A    192.0.2.99
*.wild  IN A    192.0.2.98
*.wild  IN TXT  \"synthesized\"
*.alias IN CNAME mail.example.com.
*.gone  IN CNAME nothing.example.com.
";

const FEDERATION: &str = "federation:
  name: myfed
  zone: example.com
  ttl: 30
clusters:
  - {name: east, region: us-east1, zones: [us-east1-b, us-east1-c]}
  - {name: west, region: us-west2, zones: [us-west2-a]}
services:
  - name: checkout
    namespace: shop
    ports:
      - {name: http, protocol: TCP, port: 80}
    shards:
      - {cluster: east, addresses: [203.0.113.10, \"2001:db8:10::10\"], ready_endpoints: 3}
      - {cluster: west, addresses: [198.51.100.20], ready_endpoints: 2}
  - name: catalog
    namespace: shop
    shards:
      - {cluster: east, addresses: [203.0.113.11], ready_endpoints: 1, zones: [us-east1-b]}
";

/// A fedns serving example.com signed, with unbound's source address (127.0.0.1) placed in
/// us-west2 so global names answer per location.
fn start_fedns(dir: &Path, algorithm: &str) -> Fedns {
    std::fs::create_dir_all(dir.join("zones")).unwrap();
    std::fs::write(dir.join("zones/example.com.zone"), ZONE).unwrap();
    std::fs::write(dir.join("federation.yaml"), FEDERATION).unwrap();
    let config = dir.join("fedns.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: [\"127.0.0.1:0\"]\nhttp: \"127.0.0.1:0\"\nworkers: 1\nzones_dir: zones\n\
             federation_files: [federation.yaml]\nstate_dir: state\n\
             dnssec:\n  zones: [example.com]\n  algorithm: {algorithm}\n\
             geo:\n  regions:\n    - {{name: us-east1, lat: 33.2, lon: -80.0}}\n    - {{name: us-west2, lat: 34.1, lon: -118.2}}\n  client_networks:\n    - {{cidr: 127.0.0.0/8, region: us-west2}}\n    - {{cidr: 198.18.7.0/24, region: us-east1}}\n"
        ),
    )
    .unwrap();
    let f = Fedns::start(&config);
    assert!(
        f.wait_log(Duration::from_secs(10), |l| l
            .contains("published answer table"))
            .is_some(),
        "{}",
        f.log_text()
    );
    f
}

/// The DS record `fedns dnssec ds` prints for the config in `dir`.
fn ds_record(dir: &Path) -> String {
    let out = Command::new(BIN)
        .args(["dnssec", "ds", "--config"])
        .arg(dir.join("fedns.yaml"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    text.lines()
        .find(|l| l.contains(" DS "))
        .unwrap_or_else(|| panic!("no DS in {text}"))
        .to_string()
}

fn types(records: &[hickory_proto::rr::Record]) -> Vec<RecordType> {
    records.iter().map(|r| r.record_type()).collect()
}

#[test]
fn a_validating_resolver_accepts_every_kind_of_answer() {
    let dir = tempfile::tempdir().unwrap();
    let f = start_fedns(dir.path(), "ecdsap256sha256");
    let ub = Unbound::start(&ds_record(dir.path()), f.udp);
    // (name, type, rcode, what the answer section must hold)
    let cases: &[Case<'_>] = &[
        // Global name, answered for us-west2 (per location).
        (
            "checkout.shop.myfed.svc.example.com.",
            RecordType::A,
            ResponseCode::NoError,
            &[RecordType::A],
        ),
        (
            "checkout.shop.myfed.svc.example.com.",
            RecordType::AAAA,
            ResponseCode::NoError,
            &[RecordType::AAAA],
        ),
        // Zonal with nothing healthy → CNAME to regional → CNAME to global.
        (
            "catalog.shop.myfed.svc.us-west2-a.us-west2.example.com.",
            RecordType::A,
            ResponseCode::NoError,
            &[RecordType::CNAME, RecordType::CNAME, RecordType::A],
        ),
        // Zone-file CNAME into the federation.
        (
            "www.example.com.",
            RecordType::A,
            ResponseCode::NoError,
            &[RecordType::CNAME, RecordType::A],
        ),
        (
            "_http._tcp.checkout.shop.myfed.svc.example.com.",
            RecordType::SRV,
            ResponseCode::NoError,
            &[RecordType::SRV],
        ),
        (
            "example.com.",
            RecordType::MX,
            ResponseCode::NoError,
            &[RecordType::MX],
        ),
        (
            "example.com.",
            RecordType::DNSKEY,
            ResponseCode::NoError,
            &[RecordType::DNSKEY],
        ),
        // NODATA at a name, at an empty non-terminal, and the DS-less delegation's DS.
        (
            "checkout.shop.myfed.svc.example.com.",
            RecordType::TXT,
            ResponseCode::NoError,
            &[],
        ),
        (
            "shop.myfed.svc.example.com.",
            RecordType::A,
            ResponseCode::NoError,
            &[],
        ),
        (
            "sub.example.com.",
            RecordType::DS,
            ResponseCode::NoError,
            &[],
        ),
        // Names that do not exist: compact denial, so NOERROR with no data.
        (
            "nope.example.com.",
            RecordType::A,
            ResponseCode::NoError,
            &[],
        ),
        (
            "unknown.shop.myfed.svc.example.com.",
            RecordType::AAAA,
            ResponseCode::NoError,
            &[],
        ),
        // Wildcards (RFC 4592): answers synthesized for the question, signed for it per
        // query; one label and two below the wildcard's parent; NODATA at a synthesized name;
        // a synthesized CNAME into the zone, and into a name that does not exist.
        (
            "a.wild.example.com.",
            RecordType::A,
            ResponseCode::NoError,
            &[RecordType::A, RecordType::A],
        ),
        (
            "x.y.wild.example.com.",
            RecordType::TXT,
            ResponseCode::NoError,
            &[RecordType::TXT],
        ),
        (
            "b.wild.example.com.",
            RecordType::AAAA,
            ResponseCode::NoError,
            &[],
        ),
        (
            "m.alias.example.com.",
            RecordType::A,
            ResponseCode::NoError,
            &[RecordType::CNAME, RecordType::A],
        ),
        (
            "g.gone.example.com.",
            RecordType::A,
            ResponseCode::NoError,
            &[RecordType::CNAME],
        ),
        // The wildcard itself, asked literally.
        (
            "*.wild.example.com.",
            RecordType::TXT,
            ResponseCode::NoError,
            &[RecordType::TXT],
        ),
    ];
    ub.expect_validated(cases, "fedns");
    // The per-location answer is us-west2's (unbound asks from 127.0.0.1).
    let m = ub.ask("checkout.shop.myfed.svc.example.com.", RecordType::A);
    let addrs: Vec<String> = m
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(addrs, ["198.51.100.20"], "{m}");
}

/// Answers per client location (ECS, RFC 7871) validate: unbound's subnet cache forwards each
/// client's subnet, fedns answers it from that location's signed answer, and each validates.
#[test]
fn per_location_answers_validate_through_an_ecs_resolver() {
    let dir = tempfile::tempdir().unwrap();
    let f = start_fedns(dir.path(), "ecdsap256sha256");
    let ub = Unbound::start_with(&ds_record(dir.path()), f.udp, true);
    let name = "checkout.shop.myfed.svc.example.com.";
    for (subnet, want) in [
        // us-east1's clients: the east shard.
        ("198.18.7.0", &["203.0.113.10"][..]),
        // A subnet no location holds: the answer for clients of unknown location, both.
        ("192.0.2.0", &["198.51.100.20", "203.0.113.10"][..]),
    ] {
        let m = ub.ask_from(subnet.parse().unwrap(), name, RecordType::A);
        let mut addrs: Vec<String> = m
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::A(a) => Some(a.0.to_string()),
                _ => None,
            })
            .collect();
        addrs.sort();
        assert_eq!(
            (m.metadata.authentic_data, addrs),
            (true, want.iter().map(|a| a.to_string()).collect::<Vec<_>>()),
            "from {subnet}: {m}\nunbound:\n{}",
            ub.log()
        );
    }
}

/// Key tags of the RRSIGs in `records` (RDATA bytes 16..18).
fn rrsig_tags(records: &[hickory_proto::rr::Record]) -> Vec<u16> {
    records
        .iter()
        .filter_map(|r| match &r.data {
            RData::Unknown { code, rdata } if *code == RecordType::RRSIG => {
                let b = &rdata.anything;
                Some(u16::from_be_bytes([b[16], b[17]]))
            }
            _ => None,
        })
        .collect()
}

/// A ZSK added to `keys_dir` of a running fedns is picked up without a restart: it joins the
/// DNSKEY RRset (signed by the KSK), signs the zone's data from then on, and every answer
/// still validates with the unchanged DS. With a later `Activate`, it is only published.
#[test]
fn a_zsk_added_to_the_keys_dir_rolls_in_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let f = start_fedns(dir.path(), "ecdsap256sha256");
    let ds = ds_record(dir.path());
    let dnskeys = |m: &hickory_proto::op::Message| {
        m.answers
            .iter()
            .filter(|r| r.record_type() == RecordType::DNSKEY)
            .count()
    };
    let m = try_ask(f.udp, "example.com.", RecordType::DNSKEY, true).unwrap();
    assert_eq!(dnskeys(&m), 1, "{m}");
    let csk = rrsig_tags(&m.answers);
    // Make keys elsewhere and turn them into ZSKs: one that signs now, one for later.
    let keys = dir.path().join("state/keys");
    for (n, timing) in [
        ("now", "Publish: 20200101000000\nActivate: 20200101000000\n"),
        (
            "later",
            "Publish: 20200101000000\nActivate: 20991231000000\n",
        ),
    ] {
        let other = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(other.path().join("zones")).unwrap();
        std::fs::write(other.path().join("zones/example.com.zone"), ZONE).unwrap();
        std::fs::write(
            other.path().join("fedns.yaml"),
            "listen: [\"127.0.0.1:0\"]\nzones_dir: zones\nstate_dir: state\ndnssec:\n  zones: [example.com]\n",
        )
        .unwrap();
        ds_record(other.path());
        let made = other.path().join("state/keys");
        for e in std::fs::read_dir(&made).unwrap().flatten() {
            let file = e.file_name().into_string().unwrap();
            let text = std::fs::read_to_string(e.path()).unwrap();
            let (ext, text) = if file.ends_with(".private") {
                ("private", text + timing)
            } else {
                ("key", text.replace("DNSKEY 257", "DNSKEY 256"))
            };
            // Private key first: the watcher may look between the two writes.
            std::fs::write(
                keys.join(format!("Kexample.com.+013+zsk{n}.{ext}.tmp")),
                text,
            )
            .unwrap();
        }
        for ext in ["key", "private"] {
            std::fs::rename(
                keys.join(format!("Kexample.com.+013+zsk{n}.{ext}.tmp")),
                keys.join(format!("Kexample.com.+013+zsk{n}.{ext}")),
            )
            .unwrap();
        }
    }
    assert!(
        f.wait_log(Duration::from_secs(30), |l| l.contains("keys read again"))
            .is_some(),
        "{}",
        f.log_text()
    );
    let rolled = common::wait_for(Duration::from_secs(10), || {
        let m = try_ask(f.udp, "example.com.", RecordType::DNSKEY, true)?;
        (dnskeys(&m) == 3).then_some(m)
    })
    .unwrap_or_else(|| panic!("the ZSKs were not published:\n{}", f.log_text()));
    // The DNSKEY RRset is still signed by the CSK (the KSK), the data by the new ZSK alone.
    assert_eq!(rrsig_tags(&rolled.answers), csk, "{rolled}");
    let m = try_ask(f.udp, "mail.example.com.", RecordType::A, true).unwrap();
    let data_tags = rrsig_tags(&m.answers);
    assert_eq!(data_tags.len(), 1, "{m}");
    assert_ne!(data_tags, csk, "{m}");
    // The chain of trust holds through a resolver with the DS it had before.
    let ub = Unbound::start(&ds, f.udp);
    for (name, t) in [
        ("mail.example.com.", RecordType::A),
        ("example.com.", RecordType::DNSKEY),
        ("nope.example.com.", RecordType::A),
        ("a.wild.example.com.", RecordType::A),
    ] {
        let m = ub.ask(name, t);
        assert!(m.metadata.authentic_data, "{name} {t}: {m}\n{}", ub.log());
    }
}

#[test]
fn a_tampered_trust_anchor_fails_validation() {
    let dir = tempfile::tempdir().unwrap();
    let f = start_fedns(dir.path(), "ed25519");
    let ds = ds_record(dir.path());
    // Flip the digest's last hex digit: the DNSKEY fedns serves no longer matches the anchor.
    let mut tampered = ds.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == '0' { '1' } else { '0' });
    let good = Unbound::start(&ds, f.udp);
    let bad = Unbound::start(&tampered, f.udp);
    for (name, t) in [
        ("checkout.shop.myfed.svc.example.com.", RecordType::A),
        ("nope.example.com.", RecordType::A),
    ] {
        let m = good.ask(name, t);
        assert!(m.metadata.authentic_data, "{name}: {m}\n{}", good.log());
        let m = bad.ask(name, t);
        assert_eq!(
            m.metadata.response_code,
            ResponseCode::ServFail,
            "{name}: {m}"
        );
    }
}

#[test]
fn unsigned_queries_get_unsigned_answers_and_rcodes() {
    let dir = tempfile::tempdir().unwrap();
    let f = start_fedns(dir.path(), "ecdsap256sha256");
    // DO=0: no RRSIG, no NSEC, NXDOMAIN stays NXDOMAIN.
    let m = try_ask(
        f.udp,
        "checkout.shop.myfed.svc.example.com.",
        RecordType::A,
        false,
    )
    .unwrap();
    assert!(!types(&m.answers).contains(&RecordType::RRSIG), "{m}");
    let m = try_ask(f.udp, "nope.example.com.", RecordType::A, false).unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain, "{m}");
    assert_eq!(types(&m.authorities), [RecordType::SOA], "{m}");
    // The build's signing work is a metric.
    let (_, metrics) = common::http_get(f.http, "/metrics");
    let made = common::metric(&metrics, "fedns_dnssec_signatures_total").unwrap_or(0.0);
    assert!(made >= 10.0, "{metrics}");
    // Target addresses in additional: signed only for DO=1 (a validator drops unsigned ones).
    let m = try_ask(f.udp, "example.com.", RecordType::MX, false).unwrap();
    assert_eq!(types(&m.additionals), [RecordType::A], "{m}");
    let m = try_ask(f.udp, "example.com.", RecordType::MX, true).unwrap();
    assert_eq!(
        types(&m.additionals),
        [RecordType::A, RecordType::RRSIG],
        "{m}"
    );
    // DO=1 straight from fedns: the compact denial's NSEC names the question (any case).
    let m = try_ask(f.udp, "NoPe.Example.COM.", RecordType::A, true).unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{m}");
    let nsec = m
        .authorities
        .iter()
        .find(|r| r.record_type() == RecordType::NSEC)
        .unwrap_or_else(|| panic!("no NSEC: {m}"));
    assert_eq!(nsec.name.to_ascii().to_lowercase(), "nope.example.com.");
    assert_eq!(
        types(&m.authorities),
        [
            RecordType::SOA,
            RecordType::RRSIG,
            RecordType::NSEC,
            RecordType::RRSIG
        ],
        "{m}"
    );
    // The delegation: a referral (aa=0) with the NSEC proving no DS.
    let m = try_ask(f.udp, "host.sub.example.com.", RecordType::A, true).unwrap();
    assert!(!m.metadata.authoritative, "{m}");
    assert_eq!(
        types(&m.authorities),
        [RecordType::NS, RecordType::NSEC, RecordType::RRSIG],
        "{m}"
    );
}

#[test]
fn check_prints_the_ds_and_rejects_what_cannot_be_signed() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("zones")).unwrap();
    std::fs::write(
        dir.path().join("zones/example.com.zone"),
        format!(
            "{ZONE}*.big IN TXT {}\n",
            (0..40)
                .map(|i| format!("\"{i:03}{}\"", "x".repeat(240)))
                .collect::<Vec<_>>()
                .join(" ")
        ),
    )
    .unwrap();
    let config = dir.path().join("fedns.yaml");
    std::fs::write(
        &config,
        "listen: [\"127.0.0.1:0\"]\nzones_dir: zones\nstate_dir: state\n\
         transfers:\n  allow: [127.0.0.0/8]\ndnssec:\n  zones: [example.com]\n  resign_after_days: 30\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("dnssec.resign_after_days: 30"), "{err}");
    // With the config fixed, the wildcard too large to sign per query is what remains wrong.
    std::fs::write(
        &config,
        "listen: [\"127.0.0.1:0\"]\nzones_dir: zones\nstate_dir: state\ndnssec:\n  zones: [example.com]\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let (stdout, err) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(!out.status.success(), "{stdout}");
    assert!(
        err.contains("*.big.example.com.: a wildcard RRset in a signed zone larger than 8192"),
        "{err}"
    );
    assert!(stdout.contains("has no key"), "{stdout}");
    // `check` generated nothing; `dnssec ds` does, and `check` then prints that DS.
    assert!(!dir.path().join("state/keys").exists());
    std::fs::write(dir.path().join("zones/example.com.zone"), ZONE).unwrap();
    let ds = ds_record(dir.path());
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(&ds), "{stdout}");
}

/// The shipped config/dnssec.yaml (ports changed, laid out as in the repository) generates its
/// key on first start and serves the example federation validly.
#[test]
fn shipped_dnssec_example_validates() {
    let dir = tempfile::tempdir().unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::create_dir_all(dir.path().join("config")).unwrap();
    std::fs::create_dir_all(dir.path().join("zones")).unwrap();
    std::fs::copy(
        repo.join("config/federation.yaml"),
        dir.path().join("config/federation.yaml"),
    )
    .unwrap();
    std::fs::copy(
        repo.join("zones/example.com.zone"),
        dir.path().join("zones/example.com.zone"),
    )
    .unwrap();
    let mut cfg = std::fs::read_to_string(repo.join("config/dnssec.yaml")).unwrap();
    for (from, to) in [
        ("\"127.0.0.1:5353\"", "\"127.0.0.1:0\""),
        ("\"127.0.0.1:8053\"", "\"127.0.0.1:0\""),
    ] {
        assert!(
            cfg.contains(from),
            "config/dnssec.yaml no longer has {from}"
        );
        cfg = cfg.replace(from, to);
    }
    std::fs::write(dir.path().join("config/fedns.yaml"), cfg).unwrap();
    let f = Fedns::start(&dir.path().join("config/fedns.yaml"));
    let logged = f
        .wait_log(Duration::from_secs(10), |l| {
            l.contains("give the parent zone this DS")
        })
        .unwrap_or_else(|| panic!("{}", f.log_text()));
    let ds = ds_record(&dir.path().join("config"));
    assert!(logged.contains(&ds), "{logged}\n{ds}");
    let ub = Unbound::start(&ds, f.udp);
    for (name, t) in [
        ("checkout.shop.myfed.svc.example.com.", RecordType::A),
        ("www.example.com.", RecordType::AAAA),
        ("payments.shop.myfed.svc.example.com.", RecordType::A),
        ("nothing.example.com.", RecordType::TXT),
    ] {
        let m = ub.ask(name, t);
        assert!(
            m.metadata.authentic_data && m.metadata.response_code == ResponseCode::NoError,
            "{name} {t}: {m}\n{}",
            ub.log()
        );
    }
}
