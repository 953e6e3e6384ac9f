//! Unit tests of table build + lookup + the query path together, without sockets: queries are
//! built and responses decoded with hickory, the table is built from model snapshots.

use std::net::IpAddr;
use std::path::Path;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};

use crate::answers::{BuildInput, build};
use crate::dns::respond::{Limits, Peer, Source, Transport, WorkerState, respond};
use crate::geo::Locator;
use crate::metrics::QueryStats;
use crate::model::{Cluster, DnsName, Federation, Import, Policy, Service, ServicePort, Shard};
use crate::table::Table;

const ZONE: &str = "$TTL 3600\nalias IN CNAME geo.shop.f.svc\n@ IN SOA ns1 hostmaster 7 3600 600 86400 60\n@ IN NS ns1\nns1 IN A 192.0.2.1\nwww IN CNAME web.shop.f.svc\nloop1 IN CNAME loop2\nloop2 IN CNAME loop1\nout IN CNAME elsewhere.example.net.\n";

fn shard(cluster: &str, ips: &[&str], ready: u32) -> Shard {
    Shard {
        weight: None,
        cluster: cluster.into(),
        addresses: ips.iter().map(|i| i.parse::<IpAddr>().unwrap()).collect(),
        ready_endpoints: ready,
        not_ready_endpoints: 0,
        zones: vec![],
        probe: Default::default(),
        probe_down: Vec::new(),
        headless: None,
        cluster_ips: vec![],
    }
}

pub(crate) fn federation(max_answers: usize) -> Federation {
    let c = |n: &str, r: &str, z: &[&str]| Cluster {
        client_networks: vec![],
        name: n.into(),
        region: r.into(),
        zones: z.iter().map(|s| s.to_string()).collect(),
        // u1 carries no weight: `weighted` falls back to it only for a family no weighted
        // cluster has.
        weight: match n {
            "e1" => 3,
            "u1" => 0,
            _ => 1,
        },
    };
    let svc = |name: &str, shards: Vec<Shard>, policy: Option<Policy>| Service {
        ttl: None,
        imports: vec![],
        name: name.into(),
        namespace: "shop".into(),
        ports: vec![],
        shards,
        policy,
    };
    let many: Vec<String> = (1..=12).map(|i| format!("10.9.0.{i}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    Federation {
        cluster_domain: DnsName::parse("cluster.local").ok(),
        clusterset_domain: DnsName::parse("clusterset.local").ok(),
        name: "f".into(),
        zone: DnsName::parse("example.com").unwrap(),
        ttl: 42,
        max_answers,
        policy: Policy::Geo,
        clusters: vec![
            c("e1", "east", &["east-a", "east-b"]),
            c("w1", "west", &["west-a"]),
            c("u1", "eu", &["eu-a"]),
        ],
        services: vec![
            Service {
                ttl: None,
                // e1 allocated a ClusterSetIP; w1's import is Headless.
                imports: vec![
                    Import {
                        cluster: "e1".into(),
                        ips: vec!["10.96.0.10".parse().unwrap()],
                        headless: false,
                    },
                    Import {
                        cluster: "w1".into(),
                        ips: vec![],
                        headless: true,
                    },
                ],
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
                policy: None,
            },
            Service {
                ttl: None,
                imports: vec![],
                name: "down".into(),
                namespace: "shop".into(),
                ports: vec![],
                shards: vec![shard("e1", &["10.0.0.3"], 0)],
                policy: None,
            },
            Service {
                ttl: None,
                imports: vec![],
                name: "big".into(),
                namespace: "shop".into(),
                ports: vec![],
                shards: vec![shard("e1", &many, 1)],
                policy: None,
            },
            Service {
                ttl: None,
                imports: vec![],
                name: "geo".into(),
                namespace: "shop".into(),
                ports: vec![],
                // w1's ClusterIP is known (the Kubernetes source), e1's is not.
                shards: vec![
                    shard("e1", &["10.5.0.1"], 1),
                    Shard {
                        cluster_ips: vec!["10.96.5.2".parse().unwrap()],
                        ..shard("w1", &["10.5.0.2"], 1)
                    },
                ],
                policy: None,
            },
            Service {
                ttl: None,
                imports: vec![],
                name: "split".into(),
                namespace: "shop".into(),
                ports: vec![],
                shards: vec![shard("e1", &["10.6.0.1"], 1), shard("w1", &["10.6.0.2"], 1)],
                policy: Some(Policy::Weighted),
            },
            // Per-family selection: east has both families, west IPv4 only, eu IPv6 only.
            svc(
                "dual",
                vec![
                    shard("e1", &["10.7.0.1", "2001:db8:7::1"], 1),
                    shard("w1", &["10.7.0.2"], 1),
                    shard("u1", &["2001:db8:7::3"], 1),
                ],
                None,
            ),
            svc(
                "v4only",
                vec![shard("e1", &["10.8.0.1"], 1), shard("w1", &["10.8.0.2"], 1)],
                None,
            ),
            svc("v6only", vec![shard("e1", &["2001:db8:8:4::1"], 1)], None),
            svc(
                "fo",
                vec![
                    shard("w1", &["10.8.1.2"], 1),
                    shard("e1", &["10.8.1.1", "2001:db8:8:1::1"], 1),
                ],
                Some(Policy::Failover(vec!["w1".into(), "e1".into()])),
            ),
            svc(
                "wdual",
                vec![
                    shard("e1", &["10.8.2.1"], 1),
                    shard("w1", &["10.8.2.2"], 1),
                    shard("u1", &["2001:db8:8:2::3"], 1),
                ],
                Some(Policy::Weighted),
            ),
            svc(
                "every",
                vec![
                    shard("e1", &["10.8.3.1", "2001:db8:8:3::1"], 1),
                    shard("w1", &["10.8.3.2"], 1),
                ],
                Some(Policy::All),
            ),
        ]
        .into_iter()
        .map(std::sync::Arc::new)
        .collect(),
        ingress_hosts: vec![],
        endpoints: Default::default(),
    }
}

fn table() -> Table {
    let zone = crate::dns::zonefile::parse(Path::new("example.com.zone"), ZONE).unwrap();
    let built = build(BuildInput {
        etcd: &[],
        cache: None,
        zones: &[zone],
        federations: &[federation(8)],
        serial: 99,
        generation: 1,
        locator: locator(),
        signing: &[],
    });
    built.table
}

/// Clients in 10.1/16 are in east (zone east-b), 10.2/16 in west, 10.3/16 in eu; 10.40/16 to
/// 10.43/16 are the pod networks of clusters e1, w1 (this module's federation), c0 and c2 (the
/// incremental tests'). Shared with the table's incremental tests.
pub(crate) fn locator() -> &'static Locator {
    static L: std::sync::OnceLock<Locator> = std::sync::OnceLock::new();
    L.get_or_init(|| {
        use crate::geo::ClientNetwork;
        let net = |a: &str, r: &str, z: Option<&str>| ClientNetwork {
            cluster: None,
            addr: a.parse().unwrap(),
            prefix: 16,
            region: r.into(),
            zone: z.map(Into::into),
        };
        let cluster_net = |a: &str, c: &str, r: &str, z: Option<&str>| ClientNetwork {
            cluster: Some(c.into()),
            ..net(a, r, z)
        };
        Locator::new(
            &[
                ("east".into(), 40.0, -75.0),
                ("west".into(), 37.0, -122.0),
                ("eu".into(), 50.0, 8.0),
            ],
            &[
                net("10.1.0.0", "east", Some("east-b")),
                net("10.2.0.0", "west", None),
                net("10.3.0.0", "eu", None),
                // Member clusters' pod networks (in-cluster redirect): one placed by its
                // network, one (as a Kubernetes member is) by its cluster alone.
                cluster_net("10.40.0.0", "e1", "east", Some("east-a")),
                cluster_net("10.41.0.0", "w1", "", None),
                cluster_net("10.42.0.0", "c0", "east", Some("east-a")),
                cluster_net("10.43.0.0", "c2", "", None),
            ],
            &[],
            true,
            None,
        )
    })
}

pub(crate) fn query_bytes(name: &str, t: RecordType, edns: bool) -> Vec<u8> {
    let mut m = Message::new(0x1234, MessageType::Query, OpCode::Query);
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
    if edns {
        m.set_edns(Edns::new());
    }
    m.to_vec().unwrap()
}

pub(crate) fn ask_raw(
    table: &Table,
    req: &[u8],
    transport: Transport,
    state: &mut WorkerState,
) -> Option<Message> {
    ask_from(table, req, transport, "192.0.2.1", state)
}

fn ask_from(
    table: &Table,
    req: &[u8],
    transport: Transport,
    client: &str,
    state: &mut WorkerState,
) -> Option<Message> {
    let mut out = vec![0u8; 65535];
    let stats = QueryStats::default();
    let src = Source {
        table,
        locator: locator(),
        limits: Limits { edns_payload: 1232 },
        tsig: None,
        identity: None,
    };
    let n = respond(
        src,
        req,
        &mut out,
        Peer {
            addr: client.parse().unwrap(),
            transport,
        },
        state,
        &stats,
    )?;
    Some(Message::from_vec(&out[..n]).expect("response decodes"))
}

pub(crate) fn ask(table: &Table, name: &str, t: RecordType) -> Message {
    ask_raw(
        table,
        &query_bytes(name, t, true),
        Transport::Udp,
        &mut WorkerState::default(),
    )
    .unwrap()
}

pub(crate) fn addrs(m: &Message) -> Vec<String> {
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

pub(crate) fn ask_bytes(table: &Table, req: &[u8], client: &str) -> Vec<u8> {
    let mut out = vec![0u8; 65535];
    let stats = QueryStats::default();
    let src = Source {
        table,
        locator: locator(),
        limits: Limits { edns_payload: 1232 },
        tsig: None,
        identity: None,
    };
    let peer = Peer {
        addr: client.parse().unwrap(),
        transport: Transport::Udp,
    };
    let n = respond(
        src,
        req,
        &mut out,
        peer,
        &mut WorkerState::default(),
        &stats,
    )
    .unwrap();
    out.truncate(n);
    out
}

/// Appends an ECS option (RFC 7871) to a query that ends with an empty OPT record.
fn with_ecs(mut q: Vec<u8>, family: u16, source: u8, scope: u8, addr: &[u8]) -> Vec<u8> {
    let n = q.len();
    let rdlen = (8 + addr.len()) as u16;
    q[n - 2..].copy_from_slice(&rdlen.to_be_bytes());
    q.extend(8u16.to_be_bytes());
    q.extend(((4 + addr.len()) as u16).to_be_bytes());
    q.extend(family.to_be_bytes());
    q.extend([source, scope]);
    q.extend(addr);
    q
}

#[test]
fn geo_answers_follow_the_client_source_address() {
    let t = table();
    let a = |client: &str| {
        let m = ask_from(
            &t,
            &query_bytes("geo.shop.f.svc.example.com.", RecordType::A, false),
            Transport::Udp,
            client,
            &mut WorkerState::default(),
        )
        .unwrap();
        addrs(&m)
    };
    assert_eq!(a("10.1.9.9"), ["10.5.0.1"], "east client: east shard");
    assert_eq!(a("10.2.9.9"), ["10.5.0.2"], "west client: west shard");
    assert_eq!(a("10.3.9.9"), ["10.5.0.1"], "eu has none: nearest is east");
    let mut all = a("192.0.2.7");
    all.sort();
    assert_eq!(all, ["10.5.0.1", "10.5.0.2"], "unknown location: all");
    // Regional names keep their meaning whoever asks.
    let m = ask_from(
        &t,
        &query_bytes("geo.shop.f.svc.west.example.com.", RecordType::A, false),
        Transport::Udp,
        "10.1.9.9",
        &mut WorkerState::default(),
    )
    .unwrap();
    assert_eq!(addrs(&m), ["10.5.0.2"]);
    // A static CNAME into a geo name is answered per location too.
    let m = ask_from(
        &t,
        &query_bytes("alias.example.com.", RecordType::A, false),
        Transport::Udp,
        "10.2.1.1",
        &mut WorkerState::default(),
    )
    .unwrap();
    assert_eq!(addrs(&m), ["10.5.0.2"]);
}

#[test]
fn ecs_decides_the_location_and_is_echoed_with_its_scope() {
    let t = table();
    let q = with_ecs(
        query_bytes("geo.shop.f.svc.example.com.", RecordType::A, true),
        1,
        24,
        0,
        &[10, 2, 3],
    );
    let raw = ask_bytes(&t, &q, "10.1.1.1");
    let m = Message::from_vec(&raw).unwrap();
    assert_eq!(
        addrs(&m),
        ["10.5.0.2"],
        "the subnet, not the resolver, decides"
    );
    // Response ends with the ECS option: family 1, source 24, scope 16 (the /16 that matched), 3 address bytes.
    assert_eq!(
        &raw[raw.len() - 11..],
        &[0, 8, 0, 7, 0, 1, 24, 16, 10, 2, 3]
    );
    // A name whose answer does not depend on location: scope 0.
    let q = with_ecs(
        query_bytes("web.shop.f.svc.east.example.com.", RecordType::A, true),
        1,
        24,
        0,
        &[10, 2, 3],
    );
    let raw = ask_bytes(&t, &q, "10.1.1.1");
    assert_eq!(raw[raw.len() - 4], 0);
    // IPv6 ECS with an unknown subnet: all shards, scope = source prefix.
    let q = with_ecs(
        query_bytes("geo.shop.f.svc.example.com.", RecordType::A, true),
        2,
        48,
        0,
        &[0x20, 0x01, 0x0d, 0xb8, 0, 1],
    );
    let raw = ask_bytes(&t, &q, "10.1.1.1");
    assert_eq!(addrs(&Message::from_vec(&raw).unwrap()).len(), 2);
    assert_eq!(raw[raw.len() - 7], 48);
}

#[test]
fn malformed_ecs_is_formerr() {
    let t = table();
    let base = || query_bytes("geo.shop.f.svc.example.com.", RecordType::A, true);
    for (what, q) in [
        (
            "bits beyond the source prefix",
            with_ecs(base(), 1, 20, 0, &[10, 2, 0xff]),
        ),
        (
            "non-zero scope in a query",
            with_ecs(base(), 1, 24, 8, &[10, 2, 3]),
        ),
        (
            "address longer than the prefix",
            with_ecs(base(), 1, 8, 0, &[10, 2]),
        ),
        ("unknown family", with_ecs(base(), 3, 8, 0, &[10])),
        (
            "prefix beyond the family",
            with_ecs(base(), 1, 33, 0, &[10, 2, 3, 4, 5]),
        ),
    ] {
        let m = Message::from_vec(&ask_bytes(&t, &q, "10.1.1.1")).unwrap();
        assert_eq!(m.metadata.response_code, ResponseCode::FormErr, "{what}");
    }
}

#[test]
fn weighted_policy_shares_answers_by_cluster_weight() {
    let t = table();
    let mut state = WorkerState::default();
    let mut east = 0;
    for _ in 0..40 {
        let m = ask_raw(
            &t,
            &query_bytes("split.shop.f.svc.example.com.", RecordType::A, false),
            Transport::Udp,
            &mut state,
        )
        .unwrap();
        let a = addrs(&m);
        assert_eq!(a.len(), 1, "one cluster per answer");
        east += (a[0] == "10.6.0.1") as u32;
    }
    assert_eq!(east, 30, "weights 3:1 over 40 queries");
}

/// Asks `name`/`t` with ECS `subnet`/24 (IPv4), returning the response and the echoed scope.
pub(crate) fn ask_ecs(t: &Table, name: &str, qtype: RecordType, subnet: [u8; 3]) -> (Message, u8) {
    let q = with_ecs(query_bytes(name, qtype, true), 1, 24, 0, &subnet);
    let raw = ask_bytes(t, &q, "192.0.2.9");
    // The response ends with the ECS option: ... family(2) source(1) scope(1) address(3).
    let scope = raw[raw.len() - 4];
    (Message::from_vec(&raw).unwrap(), scope)
}

pub(crate) fn kinds(m: &Message) -> Vec<RecordType> {
    m.answers.iter().map(|r| r.record_type()).collect()
}

pub(crate) fn owners(m: &Message) -> Vec<String> {
    m.answers.iter().map(|r| r.name.to_string()).collect()
}

pub(crate) const WEST: [u8; 3] = [10, 2, 3];
pub(crate) const EAST: [u8; 3] = [10, 1, 3];
pub(crate) const EU: [u8; 3] = [10, 3, 3];

#[test]
fn geo_chooses_the_nearest_region_with_the_family_asked_for() {
    let t = table();
    let g = "dual.shop.f.svc.example.com.";
    // us-west2-like: west is IPv4-only, east (nearer than eu) has IPv6.
    let (m, scope) = ask_ecs(&t, g, RecordType::AAAA, WEST);
    assert_eq!(addrs(&m), ["2001:db8:7::1"], "{m:?}");
    assert_eq!(scope, 16, "the client network decided");
    let (m, scope) = ask_ecs(&t, g, RecordType::A, WEST);
    assert_eq!((addrs(&m), scope), (vec!["10.7.0.2".to_string()], 16));
    // eu is IPv6-only: its own IPv6, and IPv4 from the nearest region with IPv4 (east).
    let (m, _) = ask_ecs(&t, g, RecordType::AAAA, EU);
    assert_eq!(addrs(&m), ["2001:db8:7::3"]);
    let (m, _) = ask_ecs(&t, g, RecordType::A, EU);
    assert_eq!(addrs(&m), ["10.7.0.1"]);
    // east has both: its own.
    let (m, _) = ask_ecs(&t, g, RecordType::AAAA, EAST);
    assert_eq!(addrs(&m), ["2001:db8:7::1"]);
}

#[test]
fn a_level_without_a_family_answers_it_from_above_without_a_cname() {
    let t = table();
    // west (IPv4 only) flattens the global name's IPv6 answer, per client location.
    for (name, qtype) in [
        ("dual.shop.f.svc.west.example.com.", RecordType::AAAA),
        ("dual.shop.f.svc.west-a.west.example.com.", RecordType::AAAA),
    ] {
        let (m, scope) = ask_ecs(&t, name, qtype, WEST);
        assert_eq!(
            kinds(&m),
            [RecordType::AAAA],
            "{name}: no CNAME beside the A"
        );
        assert_eq!(owners(&m), [name], "{name}: owned by the asked name");
        assert_eq!(addrs(&m), ["2001:db8:7::1"], "{name}");
        assert_eq!(scope, 16, "{name}: depends on the client");
        let (m, _) = ask_ecs(&t, name, qtype, EU);
        assert_eq!(addrs(&m), ["2001:db8:7::3"], "{name} from eu");
        // The family the level has is its own, whoever asks: scope 0.
        let (m, scope) = ask_ecs(&t, name, RecordType::A, EU);
        assert_eq!(
            (addrs(&m), scope),
            (vec!["10.7.0.2".to_string()], 0),
            "{name}"
        );
    }
    // eu (IPv6 only) answers A with what a CNAME to the global name would give the asking
    // client: west's IPv4 for a west client, east's for an east client.
    let (m, _) = ask_ecs(
        &t,
        "dual.shop.f.svc.eu-a.eu.example.com.",
        RecordType::A,
        WEST,
    );
    assert_eq!(kinds(&m), [RecordType::A]);
    assert_eq!(addrs(&m), ["10.7.0.2"]);
    let (m, _) = ask_ecs(
        &t,
        "dual.shop.f.svc.eu-a.eu.example.com.",
        RecordType::A,
        EAST,
    );
    assert_eq!(addrs(&m), ["10.7.0.1"]);
    // east-a has both families: ANY is minimal (RFC 8482), one RRset of its own, no CNAME.
    let m = ask(
        &t,
        "dual.shop.f.svc.east-a.east.example.com.",
        RecordType::ANY,
    );
    assert_eq!(kinds(&m), [RecordType::A]);
    // A level with nothing healthy in any family stays a CNAME, for AAAA too.
    let m = ask(
        &t,
        "web.shop.f.svc.west-a.west.example.com.",
        RecordType::AAAA,
    );
    assert_eq!(
        kinds(&m),
        [RecordType::CNAME, RecordType::CNAME, RecordType::AAAA]
    );
    assert_eq!(addrs(&m), ["2001:db8::1"]);
}

#[test]
fn nodata_only_when_no_shard_anywhere_has_the_family() {
    let t = table();
    for name in [
        "v4only.shop.f.svc.example.com.",
        "v4only.shop.f.svc.west.example.com.",
        "v4only.shop.f.svc.west-a.west.example.com.",
        "v4only.shop.f.svc.east-b.east.example.com.",
    ] {
        let (m, _) = ask_ecs(&t, name, RecordType::AAAA, WEST);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{name}");
        assert!(m.answers.is_empty(), "{name}: {m:?}");
        assert_eq!(m.authorities[0].record_type(), RecordType::SOA, "{name}");
        let (m, _) = ask_ecs(&t, name, RecordType::A, WEST);
        assert_eq!(addrs(&m).len(), 1, "{name}: A still answered");
    }
    // IPv6 only: A is NODATA everywhere, AAAA found from every level.
    for name in [
        "v6only.shop.f.svc.example.com.",
        "v6only.shop.f.svc.east-a.east.example.com.",
        "v6only.shop.f.svc.west.example.com.",
    ] {
        let (m, _) = ask_ecs(&t, name, RecordType::A, WEST);
        assert!(addrs(&m).is_empty(), "{name}: {m:?}");
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        let (m, _) = ask_ecs(&t, name, RecordType::AAAA, WEST);
        assert_eq!(addrs(&m), ["2001:db8:8:4::1"], "{name}");
    }
    // An IPv6-only zone answers A with NODATA rather than a CNAME: it has data of its own.
    let m = ask(
        &t,
        "v6only.shop.f.svc.east-a.east.example.com.",
        RecordType::A,
    );
    assert!(m.answers.is_empty(), "{m:?}");
}

#[test]
fn failover_weighted_and_all_choose_per_family() {
    let t = table();
    // failover [w1, e1]: w1 has no IPv6, so AAAA fails over to e1 while A stays on w1.
    for subnet in [WEST, EAST, EU, [192, 0, 2]] {
        let (m, _) = ask_ecs(&t, "fo.shop.f.svc.example.com.", RecordType::A, subnet);
        assert_eq!(addrs(&m), ["10.8.1.2"], "{subnet:?}");
        let (m, scope) = ask_ecs(&t, "fo.shop.f.svc.example.com.", RecordType::AAAA, subnet);
        assert_eq!(addrs(&m), ["2001:db8:8:1::1"], "{subnet:?}");
        assert_eq!(scope, 0, "failover does not depend on the client");
    }
    // weighted: A shared 3:1 between e1 and w1; no weighted cluster has IPv6, so AAAA is the
    // unweighted u1's rather than NODATA.
    let (mut state, mut state6) = (WorkerState::default(), WorkerState::default());
    let (mut east, mut v6) = (0, 0);
    for _ in 0..40 {
        let a = addrs(
            &ask_raw(
                &t,
                &query_bytes("wdual.shop.f.svc.example.com.", RecordType::A, false),
                Transport::Udp,
                &mut state,
            )
            .unwrap(),
        );
        assert_eq!(a.len(), 1);
        east += (a[0] == "10.8.2.1") as u32;
        let aaaa = addrs(
            &ask_raw(
                &t,
                &query_bytes("wdual.shop.f.svc.example.com.", RecordType::AAAA, false),
                Transport::Udp,
                &mut state6,
            )
            .unwrap(),
        );
        v6 += (aaaa == ["2001:db8:8:2::3"]) as u32;
    }
    assert_eq!(
        (east, v6),
        (30, 40),
        "A 3:1 over 40 queries; AAAA always u1"
    );
    // all: every healthy address of the family asked, whoever asks.
    for subnet in [WEST, EU] {
        let (m, _) = ask_ecs(
            &t,
            "every.shop.f.svc.example.com.",
            RecordType::AAAA,
            subnet,
        );
        assert_eq!(addrs(&m), ["2001:db8:8:3::1"]);
        let (m, _) = ask_ecs(&t, "every.shop.f.svc.example.com.", RecordType::A, subnet);
        let mut a = addrs(&m);
        a.sort();
        assert_eq!(a, ["10.8.3.1", "10.8.3.2"]);
    }
}

/// A raw query for `web.shop.f.svc.example.com. A IN` with the given section counts, followed
/// by `records` (already encoded). The question name sits at offset 12.
fn raw_query(an: u16, ns: u16, ar: u16, records: &[u8]) -> Vec<u8> {
    let mut p = vec![0xab, 0xcd, 0x01, 0x00, 0, 1];
    for c in [an, ns, ar] {
        p.extend_from_slice(&c.to_be_bytes());
    }
    for l in ["web", "shop", "f", "svc", "example", "com"] {
        p.push(l.len() as u8);
        p.extend_from_slice(l.as_bytes());
    }
    p.push(0);
    p.extend_from_slice(&[0, 1, 0, 1]);
    p.extend_from_slice(records);
    p
}

/// Offset just past the question of [`raw_query`].
const RAW_RECORDS: usize = 12 + 28 + 4;

/// A record: owner bytes, type, class, TTL, RDATA.
fn rr(owner: &[u8], rtype: u16, class: u16, ttl: u32, rdata: &[u8]) -> Vec<u8> {
    let mut r = owner.to_vec();
    r.extend_from_slice(&rtype.to_be_bytes());
    r.extend_from_slice(&class.to_be_bytes());
    r.extend_from_slice(&ttl.to_be_bytes());
    r.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
    r.extend_from_slice(rdata);
    r
}

const OPT_RR: [u8; 11] = [0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0];

fn rcode_of(req: &[u8]) -> (ResponseCode, Message) {
    let raw = ask_bytes(&table(), req, "192.0.2.1");
    assert_eq!(raw[..2], req[..2], "ID echoed");
    let m = Message::from_vec(&raw).expect("response decodes");
    (m.metadata.response_code, m)
}

/// TSIG RDATA: algorithm hmac-sha256., time signed, fudge 300, a 32-byte MAC, original ID,
/// error 0, no other data.
fn tsig_rdata() -> Vec<u8> {
    let mut d = b"\x0bhmac-sha256".to_vec();
    d.push(0);
    d.extend_from_slice(&[0, 0, 0x65, 0x43, 0x21, 0x00]); // time signed
    d.extend_from_slice(&300u16.to_be_bytes());
    d.extend_from_slice(&32u16.to_be_bytes());
    d.extend_from_slice(&[0x5a; 32]);
    d.extend_from_slice(&[0xab, 0xcd]); // original ID
    d.extend_from_slice(&[0, 0, 0, 0]); // error, other length
    d
}

const KEY: &[u8] = b"\x03key\x07example\x00";

#[test]
fn records_after_the_question_are_checked() {
    // Valid: an A record in additional whose owner points back at the question.
    let a = rr(&[0xc0, 12], 1, 1, 60, &[192, 0, 2, 9]);
    let (code, m) = rcode_of(&raw_query(0, 0, 1, &a));
    assert_eq!(code, ResponseCode::NoError);
    assert_eq!(addrs(&m), ["10.0.0.1"]);
    // Valid: OPT after another additional record, and a pointer into the middle of the question.
    let mut two = rr(&[1, b'x', 0xc0, 16], 16, 1, 0, b"\x02hi");
    two.extend_from_slice(&OPT_RR);
    assert_eq!(rcode_of(&raw_query(0, 0, 2, &two)).0, ResponseCode::NoError);

    let at = RAW_RECORDS as u8;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "owner pointing at itself",
            raw_query(0, 0, 1, &rr(&[0xc0, at], 1, 1, 0, &[1, 2, 3, 4])),
        ),
        (
            "owner pointing forward",
            raw_query(0, 0, 1, &rr(&[0xc0, at + 2], 1, 1, 0, &[1, 2, 3, 4])),
        ),
        (
            "pointer loop through a label",
            raw_query(0, 0, 1, &rr(&[1, b'a', 0xc0, at], 1, 1, 0, &[1, 2, 3, 4])),
        ),
        (
            "pointer into the header",
            raw_query(0, 0, 1, &rr(&[0xc0, 4], 1, 1, 0, &[1, 2, 3, 4])),
        ),
        (
            "obsolete label type",
            raw_query(0, 0, 1, &rr(&[0x41, 0], 1, 1, 0, &[1, 2, 3, 4])),
        ),
        ("OPT in the answer section", raw_query(1, 0, 0, &OPT_RR)),
        ("OPT in the authority section", raw_query(0, 1, 0, &OPT_RR)),
        (
            "two OPT records",
            raw_query(0, 0, 2, &[OPT_RR, OPT_RR].concat()),
        ),
        (
            "OPT not owned by the root",
            raw_query(0, 0, 1, &rr(&[0xc0, 12], 41, 1232, 0, &[])),
        ),
        (
            "RDLENGTH past the end",
            raw_query(0, 0, 1, &rr(&[0], 16, 1, 0, b"\x05hello")[..14]),
        ),
        (
            "record cut in its fixed part",
            raw_query(0, 0, 1, &rr(&[0], 16, 1, 0, b"")[..6]),
        ),
        ("ANCOUNT with nothing", raw_query(1, 0, 0, &[])),
        (
            "A record with 3 bytes",
            raw_query(0, 0, 1, &rr(&[0], 1, 1, 0, &[1, 2, 3])),
        ),
        (
            "AAAA record with 4 bytes",
            raw_query(0, 1, 0, &rr(&[0], 28, 1, 0, &[1, 2, 3, 4])),
        ),
        (
            "truncated RRSIG",
            raw_query(
                0,
                0,
                1,
                &rr(&[0], 46, 1, 0, &[0, 1, 8, 2, 0, 0, 0, 60, 1, 2]),
            ),
        ),
        (
            "RRSIG without signature",
            raw_query(0, 0, 1, &rr(&[0], 46, 1, 0, &[0; 19])),
        ),
        (
            "CNAME whose name overruns its RDATA",
            raw_query(1, 0, 0, &rr(&[0], 5, 1, 0, &[3, b'a', b'b'])),
        ),
        (
            "NS with bytes after the name",
            raw_query(0, 1, 0, &rr(&[0], 2, 1, 0, &[1, b'a', 0, 7])),
        ),
        (
            "SOA without its numbers",
            raw_query(0, 1, 0, &rr(&[0], 6, 1, 0, &[0, 0, 1, 2, 3])),
        ),
        (
            "TSIG not last",
            raw_query(
                0,
                0,
                2,
                &[rr(KEY, 250, 255, 0, &tsig_rdata()), OPT_RR.to_vec()].concat(),
            ),
        ),
        (
            "TSIG in the answer section",
            raw_query(1, 0, 0, &rr(KEY, 250, 255, 0, &tsig_rdata())),
        ),
        (
            "TSIG of class IN",
            raw_query(0, 0, 1, &rr(KEY, 250, 1, 0, &tsig_rdata())),
        ),
        (
            "TSIG with a TTL",
            raw_query(0, 0, 1, &rr(KEY, 250, 255, 5, &tsig_rdata())),
        ),
        (
            "TSIG whose MAC overruns",
            raw_query(0, 0, 1, &rr(KEY, 250, 255, 0, &tsig_rdata()[..40])),
        ),
        (
            "TSIG with trailing bytes",
            raw_query(
                0,
                0,
                1,
                &rr(KEY, 250, 255, 0, &[tsig_rdata(), vec![0]].concat()),
            ),
        ),
    ];
    for (what, q) in cases {
        let (code, m) = rcode_of(&q);
        assert_eq!(code, ResponseCode::FormErr, "{what}");
        assert!(m.answers.is_empty() && !m.metadata.authoritative, "{what}");
    }
}

#[test]
fn compression_pointer_chains_are_bounded() {
    // Record k's owner points at record k-1's owner (k hops back to the question).
    let chain = |n: usize| {
        let mut recs = Vec::new();
        for k in 0..n {
            let target = if k == 0 {
                12
            } else {
                RAW_RECORDS + (k - 1) * 12
            };
            recs.extend(rr(&(0xc000 | target as u16).to_be_bytes(), 16, 1, 0, &[]));
        }
        raw_query(0, 0, n as u16, &recs)
    };
    assert_eq!(rcode_of(&chain(100)).0, ResponseCode::NoError);
    assert_eq!(rcode_of(&chain(130)).0, ResponseCode::FormErr);
    // A name that grows past 255 bytes through pointers: each record adds a 63-byte label
    // in front of the previous one's name.
    let grown = |n: usize| {
        let mut recs = Vec::new();
        let mut prev = 12usize;
        for _ in 0..n {
            let start = RAW_RECORDS + recs.len();
            let mut owner = vec![63];
            owner.extend([b'a'; 63]);
            owner.extend((0xc000 | prev as u16).to_be_bytes());
            recs.extend(rr(&owner, 16, 1, 0, &[]));
            prev = start;
        }
        raw_query(0, 0, n as u16, &recs)
    };
    assert_eq!(rcode_of(&grown(3)).0, ResponseCode::NoError);
    assert_eq!(rcode_of(&grown(5)).0, ResponseCode::FormErr);
}

/// Bytes after the last record the counts announce are malformed (as BIND and Knot say).
#[test]
fn bytes_after_the_last_record_are_formerr() {
    let clean = raw_query(0, 0, 0, &[]);
    assert_eq!(rcode_of(&clean).0, ResponseCode::NoError);
    let mut trailing = clean.clone();
    trailing.push(0);
    assert_eq!(rcode_of(&trailing).0, ResponseCode::FormErr);
    // A record present but not counted is trailing data too.
    let uncounted = raw_query(0, 0, 0, &rr(&[0], 16, 1, 0, &[]));
    assert_eq!(rcode_of(&uncounted).0, ResponseCode::FormErr);
}

#[test]
fn tsig_with_an_unknown_key_is_notauth_badkey_unsigned() {
    let tsig = rr(KEY, 250, 255, 0, &tsig_rdata());
    for (what, q) in [
        ("TSIG alone", raw_query(0, 0, 1, &tsig)),
        (
            "TSIG after OPT",
            raw_query(0, 0, 2, &[OPT_RR.to_vec(), tsig.clone()].concat()),
        ),
        (
            "TSIG owner compressed",
            raw_query(
                0,
                0,
                1,
                &rr(&[3, b'k', b'e', b'y', 0xc0, 27], 250, 255, 0, &tsig_rdata()),
            ),
        ),
    ] {
        let raw = ask_bytes(&table(), &q, "192.0.2.1");
        let m = Message::from_vec(&raw).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(u16::from(m.metadata.response_code), 9, "{what}: NOTAUTH");
        assert!(m.answers.is_empty() && !m.metadata.authoritative, "{what}");
        // The TSIG is the last record: owner uncompressed, ANY, TTL 0, algorithm, time and
        // fudge echoed, MAC size 0, original ID, error BADKEY (17), no other data.
        let ar = u16::from_be_bytes([raw[10], raw[11]]);
        assert_eq!(ar, 1 + (what == "TSIG after OPT") as u16, "{what}");
        let rd = tsig_rdata();
        let mut tail = rd[..13 + 8].to_vec();
        tail.extend_from_slice(&[0, 0, 0xab, 0xcd, 0, 17, 0, 0]);
        assert!(raw.ends_with(&tail), "{what}: {raw:02x?}");
        let owner_at = raw.len() - tail.len() - 10;
        assert_eq!(
            raw[owner_at..owner_at + 10],
            [0, 250, 0, 255, 0, 0, 0, 0, 0, tail.len() as u8]
        );
        let owner = if what == "TSIG owner compressed" {
            b"\x03key\x07example\x03com\x00".to_vec()
        } else {
            KEY.to_vec()
        };
        assert_eq!(raw[owner_at - owner.len()..owner_at], owner[..], "{what}");
    }
}

#[test]
fn rate_limited_udp_answers_drop_or_slip_and_tcp_is_never_limited() {
    use crate::dns::rrl::{Rrl, RrlConfig, RrlCounters};
    let t = table();
    let config = RrlConfig {
        responses_per_second: 3,
        slip: 2,
        ..RrlConfig::default()
    };
    let mut st = WorkerState::default().with_rrl(Some(Rrl::new(
        std::sync::Arc::new(config),
        std::sync::Arc::new(RrlCounters::default()),
    )));
    st.set_second(1);
    let q = query_bytes("web.shop.f.svc.example.com.", RecordType::A, true);
    let got: Vec<Option<Message>> = (0..7)
        .map(|_| ask_raw(&t, &q, Transport::Udp, &mut st))
        .collect();
    for m in &got[..3] {
        let m = m.as_ref().expect("within the rate");
        assert_eq!(addrs(m), ["10.0.0.1"]);
        assert!(!m.metadata.truncation);
    }
    assert!(got[3].is_none(), "first over the rate: dropped");
    let slipped = got[4].as_ref().expect("second over the rate: slipped");
    assert!(slipped.metadata.truncation && slipped.answers.is_empty());
    assert_eq!(slipped.queries.len(), 1, "question echoed");
    assert!(got[5].is_none() && got[6].is_some());
    // TCP is never limited; another client's bucket is its own.
    for _ in 0..10 {
        let m = ask_raw(&t, &q, Transport::Tcp, &mut st).unwrap();
        assert_eq!(addrs(&m), ["10.0.0.1"]);
    }
    let m = ask_from(&t, &q, Transport::Udp, "198.51.100.1", &mut st).unwrap();
    assert_eq!(addrs(&m), ["10.0.0.1"]);
    // A new second refills.
    st.set_second(2);
    assert!(
        !ask_raw(&t, &q, Transport::Udp, &mut st)
            .unwrap()
            .metadata
            .truncation
    );
}

/// The CNAME chain of an answer, as `owner -> target` strings.
fn cnames(m: &Message) -> Vec<String> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::CNAME(t) => Some(format!("{} -> {}", r.name, t.0)),
            _ => None,
        })
        .collect()
}

/// `SVC.NS.FED.svc.cluster.local` (DESIGN §1): the local service when the asking client's
/// cluster has ready endpoints, else its cluster's zonal name (and on up the hierarchy, in the
/// same answer), else for a client in no known cluster the global name.
#[test]
fn in_cluster_redirect_follows_the_asking_cluster() {
    let t = table();
    let ask = |name: &str, t_: RecordType, client: &str| {
        ask_from(
            &t,
            &query_bytes(name, t_, false),
            Transport::Udp,
            client,
            &mut WorkerState::default(),
        )
        .unwrap()
    };
    let web = "web.shop.f.svc.cluster.local.";
    // e1 runs web with ready endpoints: the cluster-local name, outside our zones (the
    // cluster's own DNS follows it).
    let m = ask(web, RecordType::A, "10.40.0.9");
    assert_eq!(m.response_code, ResponseCode::NoError);
    assert!(m.authoritative);
    assert_eq!(
        cnames(&m),
        ["web.shop.f.svc.cluster.local. -> web.shop.svc.cluster.local."]
    );
    assert!(addrs(&m).is_empty());
    // w1's shard has no ready endpoint: w1's zone, then its region, then the global name,
    // which answers with the nearest healthy shard (east's).
    let m = ask(web, RecordType::A, "10.41.0.9");
    assert_eq!(
        cnames(&m),
        [
            "web.shop.f.svc.cluster.local. -> web.shop.f.svc.west-a.west.example.com.",
            "web.shop.f.svc.west-a.west.example.com. -> web.shop.f.svc.west.example.com.",
            "web.shop.f.svc.west.example.com. -> web.shop.f.svc.example.com.",
        ]
    );
    assert_eq!(addrs(&m), ["10.0.0.1"]);
    // geo runs in both: each cluster gets its own copy; w1's ClusterIP is known, so its
    // clients get the address itself (the local name is outside our zones: a CNAME to it
    // would end the answer there), e1's clients the CNAME.
    let m = ask("geo.shop.f.svc.cluster.local.", RecordType::A, "10.41.0.9");
    assert!(cnames(&m).is_empty(), "{m:?}");
    assert_eq!(addrs(&m), ["10.96.5.2"]);
    let m = ask(
        "geo.shop.f.svc.cluster.local.",
        RecordType::AAAA,
        "10.41.0.9",
    );
    assert_eq!(m.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty(), "IPv4 ClusterIP only: NODATA");
    let m = ask("geo.shop.f.svc.cluster.local.", RecordType::A, "10.40.0.9");
    assert_eq!(
        cnames(&m),
        ["geo.shop.f.svc.cluster.local. -> geo.shop.svc.cluster.local."]
    );
    // A client in no configured cluster: the global name, chosen for it.
    let m = ask(web, RecordType::A, "192.0.2.7");
    assert_eq!(
        cnames(&m),
        ["web.shop.f.svc.cluster.local. -> web.shop.f.svc.example.com."]
    );
    assert_eq!(addrs(&m), ["10.0.0.1"]);
    // Case kept in the question, CNAME TTL the federation's.
    let m = ask(
        "WEB.shop.f.SVC.cluster.local.",
        RecordType::AAAA,
        "10.40.0.9",
    );
    assert_eq!(m.answers[0].ttl, 42);
    // The zone: SOA at its apex, NODATA for empty non-terminals, NXDOMAIN below it, REFUSED
    // beside it.
    let m = ask("f.svc.cluster.local.", RecordType::SOA, "10.40.0.9");
    assert_eq!(m.response_code, ResponseCode::NoError);
    assert!(matches!(m.answers[0].data, RData::SOA(_)), "{m:?}");
    let m = ask("shop.f.svc.cluster.local.", RecordType::A, "10.40.0.9");
    assert_eq!(m.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty());
    let m = ask("nope.shop.f.svc.cluster.local.", RecordType::A, "10.40.0.9");
    assert_eq!(m.response_code, ResponseCode::NXDomain);
    assert!(matches!(m.authorities[0].data, RData::SOA(_)), "{m:?}");
    let m = ask("web.shop.svc.cluster.local.", RecordType::A, "10.40.0.9");
    assert_eq!(m.response_code, ResponseCode::Refused);
}

/// MCS names (`SVC.NS.svc.clusterset.local`, KEP-1645): the asking cluster's ClusterSetIP
/// when its ServiceImport has one, else (a Headless import, no import, no cluster) the global
/// name's answer for that client, owned by the MCS name (no CNAME); SRV per port targeting it;
/// the zone `svc.clusterset.local` has the federation's SOA.
#[test]
fn clusterset_names_follow_the_asking_clusters_import() {
    let t = table();
    let ask = |name: &str, t_: RecordType, client: &str| {
        ask_from(
            &t,
            &query_bytes(name, t_, false),
            Transport::Udp,
            client,
            &mut WorkerState::default(),
        )
        .unwrap()
    };
    let web = "web.shop.svc.clusterset.local.";
    let m = ask(web, RecordType::A, "10.40.0.9");
    assert_eq!(m.response_code, ResponseCode::NoError);
    assert!(m.authoritative);
    assert!(cnames(&m).is_empty());
    assert_eq!(addrs(&m), ["10.96.0.10"]);
    assert_eq!(m.answers[0].ttl, 42);
    // The import is IPv4 only: no AAAA for e1's clients, NODATA with the zone's SOA.
    let m = ask(web, RecordType::AAAA, "10.40.0.9");
    assert_eq!(m.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty());
    assert!(matches!(m.authorities[0].data, RData::SOA(_)), "{m:?}");
    // w1 (Headless import) and a client in no cluster: the global answer, nearest healthy.
    for client in ["10.41.0.9", "192.0.2.7"] {
        let m = ask(web, RecordType::A, client);
        assert!(cnames(&m).is_empty(), "{client}: {m:?}");
        assert_eq!(addrs(&m), ["10.0.0.1"], "{client}");
        let m = ask(web, RecordType::AAAA, client);
        assert_eq!(addrs(&m), ["2001:db8::1"], "{client}");
    }
    // A service without imports: the global answer everywhere; one healthy nowhere: NODATA.
    let m = ask("geo.shop.svc.clusterset.local.", RecordType::A, "10.41.0.9");
    assert_eq!(addrs(&m), ["10.5.0.2"]);
    let m = ask(
        "down.shop.svc.clusterset.local.",
        RecordType::A,
        "10.40.0.9",
    );
    assert_eq!(m.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty());
    // SRV: the service name as target, its addresses (for the asking cluster) in additional.
    let m = ask(
        "_http._tcp.web.shop.svc.clusterset.local.",
        RecordType::SRV,
        "10.40.0.9",
    );
    let srv: Vec<String> = m
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::SRV(s) => Some(format!("{} {}", s.port, s.target)),
            _ => None,
        })
        .collect();
    assert_eq!(srv, ["80 web.shop.svc.clusterset.local."]);
    // The target answers per cluster, so (as for geo global names) its addresses are left to
    // the client to ask rather than making every SRV answer per-location.
    assert!(m.additionals.is_empty(), "{m:?}");
    // The zone: SOA at its apex, NXDOMAIN for unknown services, REFUSED above it.
    let m = ask("svc.clusterset.local.", RecordType::SOA, "10.40.0.9");
    assert!(matches!(m.answers[0].data, RData::SOA(_)), "{m:?}");
    let m = ask(
        "nope.shop.svc.clusterset.local.",
        RecordType::A,
        "10.40.0.9",
    );
    assert_eq!(m.response_code, ResponseCode::NXDomain);
    let m = ask("clusterset.local.", RecordType::A, "10.40.0.9");
    assert_eq!(m.response_code, ResponseCode::Refused);
}

/// With `local_cluster`, every client no cluster network covers is in that cluster.
#[test]
fn local_cluster_places_clients_without_a_cluster_network() {
    let locator = Locator::new(&[], &[], &[], false, Some("w1"));
    let zone = crate::dns::zonefile::parse(Path::new("example.com.zone"), ZONE).unwrap();
    let t = build(BuildInput {
        etcd: &[],
        cache: None,
        zones: &[zone],
        federations: &[federation(8)],
        serial: 1,
        generation: 1,
        locator: &locator,
        signing: &[],
    })
    .table;
    let mut out = vec![0u8; 65535];
    let req = query_bytes("web.shop.f.svc.cluster.local.", RecordType::A, false);
    let n = respond(
        Source {
            table: &t,
            locator: &locator,
            limits: Limits { edns_payload: 1232 },
            tsig: None,
            identity: None,
        },
        &req,
        &mut out,
        Peer {
            addr: "192.0.2.7".parse().unwrap(),
            transport: Transport::Udp,
        },
        &mut WorkerState::default(),
        &QueryStats::default(),
    )
    .unwrap();
    let m = Message::from_vec(&out[..n]).unwrap();
    assert_eq!(
        cnames(&m)[0],
        "web.shop.f.svc.cluster.local. -> web.shop.f.svc.west-a.west.example.com."
    );
}

/// RFC 8945 §5.3: the answer to a request signed with our key is signed, whatever its opcode;
/// one signed with a key we do not hold is NOTAUTH with BADKEY, unsigned (§5.2).
#[test]
fn signed_requests_of_every_opcode_get_signed_answers() {
    use crate::dns::tsig::{Key, now, sign_answer, sign_request, strip};
    let key = Key::new(
        "xfr.",
        "hmac-sha256",
        "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0",
    )
    .unwrap();
    let stranger = Key::new(
        "else.",
        "hmac-sha256",
        "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0",
    )
    .unwrap();
    let t = table();
    // RFC 2136 §2.5.2: an UPDATE deleting an RRset carries class ANY, TTL 0 and no RDATA.
    let delete_a = rr(&[0xc0, 12], 1, 255, 0, &[]);
    let mut update = raw_query(0, 1, 0, &delete_a);
    update[2] = 5 << 3;
    let with_opcode = |op: u8| {
        let mut q = raw_query(0, 0, 0, &[]);
        q[2] = op << 3 | (op == 0) as u8;
        q
    };
    let cases = [
        ("QUERY", with_opcode(0), 0u16),
        ("STATUS", with_opcode(2), 4),
        ("NOTIFY", with_opcode(4), 4),
        ("UPDATE", update, 4),
        ("unassigned opcode 15", with_opcode(15), 4),
    ];
    // owner (5) + type..rdlength (10) + algorithm (13) + time (6) + fudge, MAC size (4) +
    // MAC (32) + original ID, error, other length (6).
    const TSIG_LEN: usize = 76;
    for (what, unsigned, rcode) in cases {
        let mut req = unsigned.clone();
        sign_request(&mut req, &key, now());
        let req_mac = req[unsigned.len() + 5 + 10 + 13 + 10..][..32].to_vec();
        let answer = |req: &[u8], transport: Transport| {
            let mut out = vec![0u8; 65535];
            let n = respond(
                Source {
                    table: &t,
                    locator: locator(),
                    limits: Limits { edns_payload: 1232 },
                    tsig: Some(&key),
                    identity: None,
                },
                req,
                &mut out,
                Peer {
                    addr: "192.0.2.1".parse().unwrap(),
                    transport,
                },
                &mut WorkerState::default(),
                &QueryStats::default(),
            )
            .unwrap_or_else(|| panic!("{what}: no answer"));
            out.truncate(n);
            out
        };
        for transport in [Transport::Udp, Transport::Tcp] {
            let resp = answer(&req, transport);
            assert_eq!(resp[..2], req[..2], "{what}: ID");
            assert_eq!(
                (resp[2] >> 3) & 0x0f,
                unsigned[2] >> 3 & 0x0f,
                "{what}: opcode"
            );
            assert_eq!((resp[3] & 0x0f) as u16, rcode, "{what}: rcode");
            // The last record is our TSIG, error 0, and its MAC is the one RFC 8945 §5.3
            // asks for (the request's MAC, the answer, the variables).
            let ar = u16::from_be_bytes([resp[10], resp[11]]);
            assert!(ar >= 1, "{what}: ARCOUNT {ar}");
            let at = resp.len() - TSIG_LEN;
            assert_eq!(
                resp[at..at + 7],
                *b"\x03xfr\x00\x00\xfa",
                "{what}: {resp:02x?}"
            );
            assert_eq!(
                resp[resp.len() - 4..resp.len() - 2],
                [0, 0],
                "{what}: error"
            );
            let time = resp[at + 28..at + 34]
                .iter()
                .fold(0u64, |a, b| a << 8 | *b as u64);
            let mut expected = vec![strip(&resp).unwrap()];
            sign_answer(&mut expected, &key, &req_mac, time);
            assert_eq!(expected[0], resp, "{what}: MAC");
        }
        // Signed with a key we do not hold: NOTAUTH, TSIG echoed with BADKEY and no MAC.
        let mut foreign = unsigned.clone();
        sign_request(&mut foreign, &stranger, now());
        let resp = answer(&foreign, Transport::Udp);
        assert_eq!(resp[3] & 0x0f, 9, "{what}: NOTAUTH");
        assert_eq!(
            resp[resp.len() - 4..resp.len() - 2],
            [0, 17],
            "{what}: BADKEY"
        );
        assert_eq!(
            resp[resp.len() - 8..resp.len() - 6],
            [0, 0],
            "{what}: MAC size"
        );
    }
}

/// With `rrl.key_by_name`, the query path keys positive answers by name too: a client over the
/// rate for one name still gets another name's answers, and names differing only in case share
/// their bucket.
#[test]
fn rrl_keyed_by_name_limits_each_name_apart() {
    use crate::dns::rrl::{Rrl, RrlConfig, RrlCounters};
    let t = table();
    let config = RrlConfig {
        responses_per_second: 2,
        slip: 0,
        key_by_name: true,
        ..RrlConfig::default()
    };
    let mut st = WorkerState::default().with_rrl(Some(Rrl::new(
        std::sync::Arc::new(config),
        std::sync::Arc::new(RrlCounters::default()),
    )));
    st.set_second(1);
    let web = query_bytes("web.shop.f.svc.example.com.", RecordType::A, true);
    let web_upper = query_bytes("WEB.shop.f.svc.example.com.", RecordType::A, true);
    let west = query_bytes(
        "web.shop.f.svc.west-a.west.example.com.",
        RecordType::A,
        true,
    );
    assert!(ask_raw(&t, &web, Transport::Udp, &mut st).is_some());
    assert!(ask_raw(&t, &web_upper, Transport::Udp, &mut st).is_some());
    assert!(
        ask_raw(&t, &web, Transport::Udp, &mut st).is_none(),
        "web over its rate"
    );
    for _ in 0..2 {
        let m = ask_raw(&t, &west, Transport::Udp, &mut st).expect("another name: its own rate");
        assert!(!m.answers.is_empty());
    }
    assert!(ask_raw(&t, &west, Transport::Udp, &mut st).is_none());
}
