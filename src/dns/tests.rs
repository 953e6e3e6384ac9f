//! Unit tests of table build + lookup + the query path together, without sockets: queries are
//! built and responses decoded with hickory, the table is built from model snapshots.

use std::net::IpAddr;
use std::path::Path;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};

use crate::dns::respond::{Limits, Transport, WorkerState, respond};
use crate::metrics::QueryStats;
use crate::model::{Cluster, DnsName, Federation, Service, ServicePort, Shard};
use crate::table::Table;
use crate::table::build::{BuildInput, build};

const ZONE: &str = "$TTL 3600\n@ IN SOA ns1 hostmaster 7 3600 600 86400 60\n@ IN NS ns1\nns1 IN A 192.0.2.1\nwww IN CNAME web.shop.f.svc\nloop1 IN CNAME loop2\nloop2 IN CNAME loop1\nout IN CNAME elsewhere.example.net.\n";

fn shard(cluster: &str, ips: &[&str], ready: u32) -> Shard {
    Shard {
        cluster: cluster.into(),
        addresses: ips.iter().map(|i| i.parse::<IpAddr>().unwrap()).collect(),
        ready_endpoints: ready,
        not_ready_endpoints: 0,
        zones: vec![],
    }
}

fn federation(max_answers: usize) -> Federation {
    let c = |n: &str, r: &str, z: &[&str]| Cluster {
        name: n.into(),
        region: r.into(),
        zones: z.iter().map(|s| s.to_string()).collect(),
    };
    let many: Vec<String> = (1..=12).map(|i| format!("10.9.0.{i}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    Federation {
        name: "f".into(),
        zone: DnsName::parse("example.com").unwrap(),
        ttl: 42,
        max_answers,
        clusters: vec![
            c("e1", "east", &["east-a", "east-b"]),
            c("w1", "west", &["west-a"]),
        ],
        services: vec![
            Service {
                name: "web".into(),
                namespace: "shop".into(),
                ports: vec![ServicePort {
                    name: "http".into(),
                    protocol: "tcp".into(),
                    port: 80,
                }],
                shards: vec![
                    shard("e1", &["10.0.0.1", "2001:db8::1"], 2),
                    shard("w1", &["10.0.0.2"], 0),
                ],
            },
            Service {
                name: "down".into(),
                namespace: "shop".into(),
                ports: vec![],
                shards: vec![shard("e1", &["10.0.0.3"], 0)],
            },
            Service {
                name: "big".into(),
                namespace: "shop".into(),
                ports: vec![],
                shards: vec![shard("e1", &many, 1)],
            },
        ],
    }
}

fn table() -> Table {
    let zone = crate::dns::zonefile::parse(Path::new("example.com.zone"), ZONE).unwrap();
    let built = build(BuildInput {
        etcd: &[],
        etcd_cache: None,
        zones: &[zone],
        federations: &[federation(8)],
        serial: 99,
        generation: 1,
    });
    built.table
}

fn query_bytes(name: &str, t: RecordType, edns: bool) -> Vec<u8> {
    let mut m = Message::new(0x1234, MessageType::Query, OpCode::Query);
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
    if edns {
        m.set_edns(Edns::new());
    }
    m.to_vec().unwrap()
}

fn ask_raw(
    table: &Table,
    req: &[u8],
    transport: Transport,
    state: &mut WorkerState,
) -> Option<Message> {
    let mut out = vec![0u8; 65535];
    let stats = QueryStats::default();
    let n = respond(
        table,
        req,
        &mut out,
        transport,
        Limits { edns_payload: 1232 },
        state,
        &stats,
    )?;
    Some(Message::from_vec(&out[..n]).expect("response decodes"))
}

fn ask(table: &Table, name: &str, t: RecordType) -> Message {
    ask_raw(
        table,
        &query_bytes(name, t, true),
        Transport::Udp,
        &mut WorkerState::default(),
    )
    .unwrap()
}

fn addrs(m: &Message) -> Vec<String> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0.to_string()),
            RData::AAAA(a) => Some(a.0.to_string()),
            _ => None,
        })
        .collect()
}

#[test]
fn global_regional_zonal_and_fallbacks() {
    let t = table();
    let m = ask(&t, "web.shop.f.svc.example.com.", RecordType::A);
    assert_eq!(
        (m.metadata.response_code, m.metadata.authoritative),
        (ResponseCode::NoError, true)
    );
    assert_eq!(addrs(&m), ["10.0.0.1"]);
    assert_eq!(m.answers[0].ttl, 42);
    assert_eq!(
        addrs(&ask(&t, "web.shop.f.svc.example.com.", RecordType::AAAA)),
        ["2001:db8::1"]
    );
    assert_eq!(
        addrs(&ask(
            &t,
            "web.shop.f.svc.east-b.east.example.com.",
            RecordType::A
        )),
        ["10.0.0.1"]
    );
    // West has only an unready shard: zonal → regional → global.
    let m = ask(&t, "web.shop.f.svc.west-a.west.example.com.", RecordType::A);
    let kinds: Vec<RecordType> = m.answers.iter().map(|r| r.record_type()).collect();
    assert_eq!(kinds, [RecordType::CNAME, RecordType::CNAME, RecordType::A]);
    assert_eq!(addrs(&m), ["10.0.0.1"]);
}

#[test]
fn nothing_healthy_is_nodata_with_soa_never_nxdomain() {
    let t = table();
    let m = ask(&t, "down.shop.f.svc.example.com.", RecordType::A);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty());
    assert_eq!(m.authorities[0].record_type(), RecordType::SOA);
    // RFC 2308: negative TTL = min(SOA TTL 3600, minimum 60).
    assert_eq!(m.authorities[0].ttl, 60);
    let RData::SOA(soa) = &m.authorities[0].data else {
        panic!()
    };
    assert_eq!(soa.serial, 99, "the table's serial replaces the file's");
}

#[test]
fn nxdomain_nodata_refused_and_ents() {
    let t = table();
    let m = ask(&t, "nothing.here.example.com.", RecordType::A);
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(m.authorities.len(), 1);
    let m = ask(&t, "shop.f.svc.example.com.", RecordType::A);
    assert_eq!(
        (m.metadata.response_code, m.answers.len()),
        (ResponseCode::NoError, 0)
    );
    let m = ask(&t, "web.shop.f.svc.example.com.", RecordType::TXT);
    assert_eq!(
        (
            m.metadata.response_code,
            m.answers.len(),
            m.authorities.len()
        ),
        (ResponseCode::NoError, 0, 1)
    );
    let m = ask(&t, "example.org.", RecordType::A);
    assert_eq!(
        (m.metadata.response_code, m.metadata.authoritative),
        (ResponseCode::Refused, false)
    );
    let m = ask(&t, "com.", RecordType::A);
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
}

#[test]
fn srv_targets_names_with_addresses() {
    let t = table();
    let m = ask(
        &t,
        "_http._tcp.web.shop.f.svc.west-a.west.example.com.",
        RecordType::SRV,
    );
    let RData::SRV(srv) = &m.answers[0].data else {
        panic!("{m:?}")
    };
    assert_eq!(srv.port, 80);
    assert_eq!(srv.target.to_string(), "web.shop.f.svc.example.com.");
    let m = ask(
        &t,
        "_http._tcp.web.shop.f.svc.east.example.com.",
        RecordType::SRV,
    );
    let RData::SRV(srv) = &m.answers[0].data else {
        panic!("{m:?}")
    };
    assert_eq!(srv.target.to_string(), "web.shop.f.svc.east.example.com.");
}

#[test]
fn static_cnames_chase_and_stop() {
    let t = table();
    let m = ask(&t, "www.example.com.", RecordType::A);
    assert_eq!(m.answers.len(), 2);
    assert_eq!(addrs(&m), ["10.0.0.1"]);
    let m = ask(&t, "out.example.com.", RecordType::A);
    assert_eq!(
        (m.metadata.response_code, m.answers.len()),
        (ResponseCode::NoError, 1)
    );
    let m = ask(&t, "loop1.example.com.", RecordType::A);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.answers.len() <= 8, "a loop ends at the chain limit");
    let m = ask(&t, "www.example.com.", RecordType::CNAME);
    assert_eq!(m.answers.len(), 1);
}

#[test]
fn answers_are_capped_and_rotate_through_every_address() {
    let t = table();
    let mut state = WorkerState::default();
    let mut firsts = std::collections::BTreeSet::new();
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..24 {
        let m = ask_raw(
            &t,
            &query_bytes("big.shop.f.svc.example.com.", RecordType::A, false),
            Transport::Udp,
            &mut state,
        )
        .unwrap();
        let a = addrs(&m);
        assert_eq!(a.len(), 8);
        firsts.insert(a[0].clone());
        seen.extend(a);
    }
    assert_eq!(seen.len(), 12);
    assert!(firsts.len() >= 6, "{firsts:?}");
}

#[test]
fn question_case_is_echoed() {
    let t = table();
    let m = ask(&t, "WeB.Shop.F.svc.Example.COM.", RecordType::A);
    assert_eq!(
        m.queries[0].name().to_string(),
        "WeB.Shop.F.svc.Example.COM."
    );
    assert_eq!(addrs(&m), ["10.0.0.1"]);
}

#[test]
fn edns_echo_truncation_and_badvers() {
    let t = table();
    let m = ask(&t, "web.shop.f.svc.example.com.", RecordType::A);
    assert_eq!(m.edns.as_ref().unwrap().max_payload(), 1232);
    let m = ask_raw(
        &t,
        &query_bytes("web.shop.f.svc.example.com.", RecordType::A, false),
        Transport::Udp,
        &mut WorkerState::default(),
    )
    .unwrap();
    assert!(m.edns.is_none());
    let mut q = query_bytes("web.shop.f.svc.example.com.", RecordType::A, true);
    let opt_ttl = q.len() - 6; // OPT: root(1) type(2) class(2) ttl(4) rdlen(2)
    q[opt_ttl + 1] = 1; // EDNS version 1
    let m = ask_raw(&t, &q, Transport::Udp, &mut WorkerState::default()).unwrap();
    // 16 is both BADVERS and BADSIG; hickory decodes it as the latter.
    assert_eq!(u16::from(m.metadata.response_code), 16);
    assert!(m.edns.is_some(), "BADVERS carries an OPT");
}

#[test]
fn not_ready_table_is_servfail() {
    let m = ask(
        &Table::not_ready(),
        "web.shop.f.svc.example.com.",
        RecordType::A,
    );
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
}

#[test]
fn malformed_queries() {
    let t = table();
    let mut st = WorkerState::default();
    let good = query_bytes("web.shop.f.svc.example.com.", RecordType::A, false);
    assert!(
        ask_raw(&t, &good[..5], Transport::Udp, &mut st).is_none(),
        "short packets are dropped"
    );
    let mut resp = good.clone();
    resp[2] |= 0x80;
    assert!(
        ask_raw(&t, &resp, Transport::Udp, &mut st).is_none(),
        "responses are dropped"
    );
    let mut qd0 = good.clone();
    qd0[5] = 0;
    assert_eq!(
        ask_raw(&t, &qd0, Transport::Udp, &mut st)
            .unwrap()
            .metadata
            .response_code,
        ResponseCode::FormErr
    );
    let mut ptr = good[..12].to_vec();
    ptr.extend([0xc0, 12, 0, 1, 0, 1]);
    assert_eq!(
        ask_raw(&t, &ptr, Transport::Udp, &mut st)
            .unwrap()
            .metadata
            .response_code,
        ResponseCode::FormErr
    );
    let mut cut = good.clone();
    cut.truncate(good.len() - 3);
    assert_eq!(
        ask_raw(&t, &cut, Transport::Udp, &mut st)
            .unwrap()
            .metadata
            .response_code,
        ResponseCode::FormErr
    );
    let mut update = good.clone();
    update[2] = 5 << 3;
    assert_eq!(
        ask_raw(&t, &update, Transport::Udp, &mut st)
            .unwrap()
            .metadata
            .response_code,
        ResponseCode::NotImp
    );
    // Every prefix and every single-byte corruption gets a defined outcome, never a panic.
    for n in 0..good.len() {
        let _ = ask_raw(&t, &good[..n], Transport::Udp, &mut st);
        for b in [0x00, 0x3f, 0x40, 0xc0, 0xff] {
            let mut g = good.clone();
            g[n] = b;
            let _ = ask_raw(&t, &g, Transport::Tcp, &mut st);
        }
    }
}
