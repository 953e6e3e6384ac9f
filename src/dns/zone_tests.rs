//! Zone-file semantics through the query path: delegations (referrals with glue), wildcards
//! (RFC 4592, its own examples included), additional addresses for NS, MX and SRV targets, and
//! minimal ANY (RFC 8482). Tables are built from zone files and the shared test federation;
//! responses are decoded with hickory.

use std::path::Path;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{RData, RecordType};

use super::respond::{Transport, WorkerState};
use super::tests::{
    EAST, WEST, addrs, ask, ask_ecs, ask_raw, federation, kinds, locator, query_bytes,
};
use crate::answers::build_fresh;
use crate::model::StaticZone;
use crate::table::Table;

fn zone(file: &str, text: &str) -> StaticZone {
    super::zonefile::parse(Path::new(file), text).unwrap_or_else(|p| panic!("{p:?}"))
}

/// The zone of RFC 4592 §2.2.1, as written there.
const RFC4592: &str = include_str!("../../tests/fixtures/rfc4592.zone");

const EXAMPLE_COM: &str = "$ORIGIN example.com.
$TTL 3600
@ IN SOA ns1 hostmaster 7 3600 600 86400 60
@ IN NS ns1
@ IN MX 10 mail
ns1 IN A 192.0.2.1
mail IN A 192.0.2.25
mail IN AAAA 2001:db8::25
sub IN NS ns.sub
sub IN NS ns1
ns.sub IN A 192.0.2.53
ns.sub IN AAAA 2001:db8::53
into-sub IN CNAME host.sub
*.wild IN A 192.0.2.80
*.wild IN MX 10 mail
a.b.wild IN TXT \"below an empty non-terminal\"
*.geo IN CNAME web.shop.f.svc
to-wild IN CNAME x.wild
_sip._udp IN SRV 0 0 5060 mail
";

fn rfc4592() -> Table {
    build_fresh(&[zone("example.zone", RFC4592)], &[], locator()).table
}

fn example_com() -> Table {
    build_fresh(
        &[zone("example.com.zone", EXAMPLE_COM)],
        &[federation(8)],
        locator(),
    )
    .table
}

fn txt(m: &Message) -> Vec<String> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::TXT(t) => Some(t.to_string()),
            _ => None,
        })
        .collect()
}

fn names(records: &[hickory_proto::rr::Record]) -> Vec<String> {
    records.iter().map(|r| r.name.to_string()).collect()
}

#[test]
fn rfc4592_examples_answer_as_the_rfc_says() {
    let t = rfc4592();
    // §2.2.1: host3.example. MX is synthesized from *.example.
    let m = ask(&t, "host3.example.", RecordType::MX);
    assert_eq!(m.response_code, ResponseCode::NoError);
    assert!(m.metadata.authoritative);
    assert_eq!(kinds(&m), [RecordType::MX]);
    assert_eq!(
        names(&m.answers),
        ["host3.example."],
        "owner is the name asked"
    );
    // Its target's address comes along.
    assert_eq!(names(&m.additionals), ["host1.example."]);
    // host3.example. A: the wildcard matches, it has no A: NODATA.
    let m = ask(&t, "host3.example.", RecordType::A);
    assert_eq!(m.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty());
    assert_eq!(m.authorities[0].record_type(), RecordType::SOA);
    // foo.bar.example. TXT: synthesized (bar does not exist, closest encloser example.).
    let m = ask(&t, "foo.bar.example.", RecordType::TXT);
    assert_eq!(txt(&m), ["this is a wildcard"]);
    assert_eq!(names(&m.answers), ["foo.bar.example."]);
    // host1.example. MX: host1 exists, so no synthesis: NODATA.
    let m = ask(&t, "host1.example.", RecordType::MX);
    assert_eq!(m.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty());
    // sub.*.example. MX: exists (an ordinary name with a '*' label): NODATA.
    let m = ask(&t, "sub.*.example.", RecordType::MX);
    assert_eq!(m.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty());
    // _telnet._tcp.host1.example. SRV: closest encloser _tcp.host1.example. (an empty
    // non-terminal) has no wildcard: NXDOMAIN.
    let m = ask(&t, "_telnet._tcp.host1.example.", RecordType::SRV);
    assert_eq!(m.response_code, ResponseCode::NXDomain);
    // host.subdel.example. A: a referral.
    let m = ask(&t, "host.subdel.example.", RecordType::A);
    assert_eq!(m.response_code, ResponseCode::NoError);
    assert!(!m.metadata.authoritative);
    assert!(m.answers.is_empty());
    assert_eq!(
        names(&m.authorities),
        ["subdel.example.", "subdel.example."]
    );
    // ghost.*.example. MX: closest encloser *.example., no *.*.example.: NXDOMAIN.
    let m = ask(&t, "ghost.*.example.", RecordType::MX);
    assert_eq!(m.response_code, ResponseCode::NXDomain);
    // The wildcard itself answers as written.
    let m = ask(&t, "*.example.", RecordType::TXT);
    assert_eq!(txt(&m), ["this is a wildcard"]);
}

#[test]
fn names_at_and_below_a_zone_cut_get_a_referral_with_glue() {
    let t = example_com();
    for (name, qtype) in [
        ("host.sub.example.com.", RecordType::A),
        ("deep.host.sub.example.com.", RecordType::AAAA),
        ("sub.example.com.", RecordType::NS),
        ("sub.example.com.", RecordType::A),
        // Glue itself is not authoritative data.
        ("ns.sub.example.com.", RecordType::A),
        ("x.ns.sub.example.com.", RecordType::TXT),
    ] {
        let m = ask(&t, name, qtype);
        assert_eq!(m.response_code, ResponseCode::NoError, "{name}");
        assert!(!m.metadata.authoritative, "{name}: a referral has aa=0");
        assert!(m.answers.is_empty(), "{name}");
        assert_eq!(
            kinds_of(&m.authorities),
            [RecordType::NS, RecordType::NS],
            "{name}"
        );
        assert_eq!(names(&m.authorities)[0], "sub.example.com.");
        let mut glue: Vec<String> = m
            .additionals
            .iter()
            .map(|r| format!("{} {}", r.name, r.record_type()))
            .collect();
        glue.sort();
        assert_eq!(
            glue,
            [
                "ns.sub.example.com. A",
                "ns.sub.example.com. AAAA",
                "ns1.example.com. A"
            ],
            "{name}"
        );
    }
    // DS belongs to the parent side of the cut: authoritative NODATA here.
    let m = ask(&t, "sub.example.com.", RecordType::DS);
    assert!(m.metadata.authoritative);
    assert!(m.answers.is_empty());
    assert_eq!(m.authorities[0].record_type(), RecordType::SOA);
    // A CNAME into the delegation stops at the cut.
    let m = ask(&t, "into-sub.example.com.", RecordType::A);
    assert!(m.metadata.authoritative);
    assert_eq!(kinds(&m), [RecordType::CNAME]);
    assert!(m.authorities.is_empty());
}

fn kinds_of(records: &[hickory_proto::rr::Record]) -> Vec<RecordType> {
    records.iter().map(|r| r.record_type()).collect()
}

#[test]
fn zone_file_wildcards_synthesize_for_every_type_and_follow_cnames() {
    let t = example_com();
    let m = ask(&t, "anything.wild.example.com.", RecordType::A);
    assert_eq!(addrs(&m), ["192.0.2.80"]);
    assert_eq!(names(&m.answers), ["anything.wild.example.com."]);
    let m = ask(&t, "deeper.name.wild.example.com.", RecordType::MX);
    assert_eq!(kinds(&m), [RecordType::MX]);
    assert_eq!(
        names(&m.additionals),
        ["mail.example.com.", "mail.example.com."]
    );
    // No synthesis across the empty non-terminal b.wild.
    let m = ask(&t, "x.b.wild.example.com.", RecordType::A);
    assert_eq!(m.response_code, ResponseCode::NXDomain);
    let m = ask(&t, "b.wild.example.com.", RecordType::A);
    assert_eq!(m.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty());
    // A wildcard CNAME into a federated name answers per client location.
    let (east, _) = ask_ecs(&t, "shop.geo.example.com.", RecordType::A, EAST);
    let (west, _) = ask_ecs(&t, "shop.geo.example.com.", RecordType::A, WEST);
    assert_eq!(kinds(&east)[0], RecordType::CNAME);
    assert_eq!(east.answers[0].name.to_string(), "shop.geo.example.com.");
    assert_eq!(addrs(&east), ["10.0.0.1"]);
    assert_eq!(
        addrs(&west),
        ["10.0.0.1"],
        "west has no ready shard: nearest healthy"
    );
    // A CNAME chain whose target only a wildcard covers.
    let m = ask(&t, "to-wild.example.com.", RecordType::A);
    assert_eq!(kinds(&m), [RecordType::CNAME, RecordType::A]);
    assert_eq!(names(&m.answers)[1], "x.wild.example.com.");
    // Case is preserved in a synthesized owner (it points at the question).
    let m = ask(&t, "MiXeD.wild.example.com.", RecordType::A);
    assert_eq!(names(&m.answers), ["MiXeD.wild.example.com."]);
}

#[test]
fn ns_mx_and_srv_answers_carry_target_addresses() {
    let t = example_com();
    let m = ask(&t, "example.com.", RecordType::MX);
    let mut extra: Vec<String> = m
        .additionals
        .iter()
        .map(|r| format!("{} {}", r.name, r.record_type()))
        .collect();
    extra.sort();
    assert_eq!(extra, ["mail.example.com. A", "mail.example.com. AAAA"]);
    let m = ask(&t, "example.com.", RecordType::NS);
    assert_eq!(names(&m.additionals), ["ns1.example.com."]);
    let m = ask(&t, "_sip._udp.example.com.", RecordType::SRV);
    assert_eq!(m.additionals.len(), 2);
    // Federated SRV targets: their addresses come along when they are the same for every
    // client (a target that answers per location is left for the client to ask).
    let m = ask(
        &t,
        "_http._tcp.web.shop.f.svc.east.example.com.",
        RecordType::SRV,
    );
    let RData::SRV(srv) = &m.answers[0].data else {
        panic!("{m:?}")
    };
    assert_eq!(srv.target.to_string(), "web.shop.f.svc.east.example.com.");
    assert!(
        m.additionals
            .iter()
            .any(|r| matches!(&r.data, RData::A(a) if a.0.to_string() == "10.0.0.1")),
        "{m:?}"
    );
    let (m, _) = ask_ecs(
        &t,
        "_http._tcp.web.shop.f.svc.example.com.",
        RecordType::SRV,
        EAST,
    );
    let (target, _) = ask_ecs(&t, "web.shop.f.svc.example.com.", RecordType::A, WEST);
    let extra: Vec<String> = m
        .additionals
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(extra, addrs(&target), "the same for every client: {m:?}");
    let mut fed = federation(8);
    for svc in &mut fed.services {
        if svc.name == "geo" {
            std::sync::Arc::make_mut(svc).ports = vec![crate::model::ServicePort {
                name: "http".into(),
                protocol: "tcp".into(),
                port: 80,
            }];
        }
    }
    let t = build_fresh(&[zone("example.com.zone", EXAMPLE_COM)], &[fed], locator()).table;
    let (east, _) = ask_ecs(&t, "geo.shop.f.svc.example.com.", RecordType::A, EAST);
    let (west, _) = ask_ecs(&t, "geo.shop.f.svc.example.com.", RecordType::A, WEST);
    assert_ne!(
        addrs(&east),
        addrs(&west),
        "the target answers per location"
    );
    let (m, _) = ask_ecs(
        &t,
        "_http._tcp.geo.shop.f.svc.example.com.",
        RecordType::SRV,
        EAST,
    );
    assert_eq!(kinds(&m), [RecordType::SRV]);
    assert!(
        m.additionals.is_empty(),
        "a per-location target gets no additional addresses: {m:?}"
    );
}

#[test]
fn additional_addresses_are_dropped_before_an_answer_is_truncated() {
    let mut text = String::from(EXAMPLE_COM);
    for i in 0..14 {
        text.push_str(&format!(
            "big IN MX {i} mx{i}.big\nmx{i}.big IN A 192.0.2.{i}\nmx{i}.big IN AAAA 2001:db8::{i}\n"
        ));
    }
    let t = build_fresh(&[zone("example.com.zone", &text)], &[], locator()).table;
    // Over TCP everything fits.
    let q = query_bytes("big.example.com.", RecordType::MX, false);
    let m = ask_raw(&t, &q, Transport::Tcp, &mut WorkerState::default()).unwrap();
    assert_eq!(m.answers.len(), 14);
    assert_eq!(m.additionals.len(), 28);
    // Over UDP without EDNS (512 bytes) the answer fits but not its addresses: they go, TC
    // stays clear.
    let m = ask_raw(&t, &q, Transport::Udp, &mut WorkerState::default()).unwrap();
    assert!(!m.metadata.truncation, "{m:?}");
    assert_eq!(m.answers.len(), 14);
    assert!(m.additionals.is_empty());
}

#[test]
fn any_is_answered_with_one_rrset() {
    let t = example_com();
    // The apex has SOA, NS and MX: one RRset, not the SOA.
    let m = ask(&t, "example.com.", RecordType::ANY);
    assert_eq!(kinds(&m), [RecordType::NS]);
    let m = ask(&t, "mail.example.com.", RecordType::ANY);
    assert_eq!(kinds(&m), [RecordType::A]);
    // Over TCP too (RFC 8482 allows it; fedns never builds the full set).
    let q = query_bytes("mail.example.com.", RecordType::ANY, true);
    let m = ask_raw(&t, &q, Transport::Tcp, &mut WorkerState::default()).unwrap();
    assert_eq!(kinds(&m), [RecordType::A]);
    // A wildcard's ANY, too.
    let m = ask(&t, "z.wild.example.com.", RecordType::ANY);
    assert_eq!(kinds(&m), [RecordType::A]);
}

#[test]
fn zone_files_that_cannot_be_served_as_written_are_rejected() {
    let parse = |extra: &str| {
        super::zonefile::parse(
            Path::new("example.com.zone"),
            &format!("{EXAMPLE_COM}{extra}"),
        )
        .err()
        .map(|p| {
            p.iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        })
    };
    let e = parse("d IN DNAME example.net.\n").expect("DNAME");
    assert!(e.contains("DNAME"), "{e}");
    let e = parse("*.w2 IN NS ns1\n").expect("wildcard NS");
    assert!(e.contains("NS at a wildcard"), "{e}");
    let e = parse("www.sub IN TXT \"hidden\"\n").expect("occluded");
    assert!(
        e.contains("below the delegation at sub.example.com."),
        "{e}"
    );
    assert!(e.contains("example.com.zone:"), "the file is named: {e}");
    let e = parse("sub IN MX 10 mail\n").expect("data at a cut");
    assert!(e.contains("MX"), "{e}");
    assert!(
        parse("more.ns.sub IN A 192.0.2.9\n").is_none(),
        "glue is fine"
    );
}

#[test]
fn federated_names_below_a_zone_cut_are_conflicts_and_the_delegation_wins() {
    let text = format!("{EXAMPLE_COM}svc IN NS ns1\n");
    let built = build_fresh(
        &[zone("example.com.zone", &text)],
        &[federation(8)],
        locator(),
    );
    assert!(
        built
            .conflicts
            .iter()
            .any(|c| c.contains("below the delegation at svc.example.com.")),
        "{:?}",
        built.conflicts
    );
    let m = ask(&built.table, "web.shop.f.svc.example.com.", RecordType::A);
    assert!(!m.metadata.authoritative);
    assert_eq!(names(&m.authorities), ["svc.example.com."]);
}
