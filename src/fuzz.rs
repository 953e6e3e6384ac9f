//! The checks behind the fuzz targets (`fuzz/`, cargo-fuzz) and the corpus replay test
//! (`tests/fuzz_corpus.rs`): each takes arbitrary bytes and panics when an invariant breaks, so
//! a libFuzzer run and a plain `cargo test` over the same corpus test exactly the same thing.
#![doc(hidden)]

use std::path::Path;
use std::sync::OnceLock;

use crate::answers::build_fresh;
use crate::dns::respond::{Limits, Peer, Source, Transport, WorkerState, respond};
use crate::geo::{ClientNetwork, Locator};
use crate::metrics::QueryStats;
use crate::table::Table;

const EDNS_PAYLOAD: u16 = 1232;

/// The shipped example zone and federation, with client networks so geo and ECS paths run.
fn fixture() -> &'static (Table, Locator) {
    static F: OnceLock<(Table, Locator)> = OnceLock::new();
    F.get_or_init(|| {
        let zone = crate::dns::zonefile::parse(
            Path::new("example.com.zone"),
            include_str!("../zones/example.com.zone"),
        )
        .expect("example zone parses");
        let fed = crate::sources::federation_file::parse(
            Path::new("federation.yaml"),
            include_str!("../config/federation.yaml"),
        )
        .expect("example federation parses");
        let net = |a: &str, prefix: u8, region: &str| ClientNetwork {
            addr: a.parse().expect("address"),
            prefix,
            region: region.into(),
            zone: None,
            cluster: None,
        };
        let locator = Locator::new(
            &[
                ("us-east1".into(), 33.8, -84.4),
                ("us-west2".into(), 45.6, -121.2),
            ],
            &[
                net("10.1.0.0", 16, "us-east1"),
                net("10.2.0.0", 16, "us-west2"),
                net("fd00:1::", 32, "us-east1"),
            ],
            &[],
            true,
            None,
        );
        let table = build_fresh(&[zone], &[fed], &locator).table;
        (table, locator)
    })
}

/// The query path on arbitrary bytes, over UDP and TCP, from a few clients: a packet with a
/// header and QR=0 gets a reply of ≥ 12 bytes with QR=1 and the same ID that fits the buffer
/// and (UDP) the payload limit and decodes as a DNS message; anything else gets nothing.
pub fn respond_check(data: &[u8]) {
    let (table, locator) = fixture();
    let src = Source {
        table,
        locator,
        limits: Limits {
            edns_payload: EDNS_PAYLOAD,
        },
        tsig: None,
        identity: None,
    };
    let stats = QueryStats::default();
    let mut state = WorkerState::default();
    let mut out = vec![0u8; u16::MAX as usize];
    let answerable = data.len() >= 12 && data[2] & 0x80 == 0;
    for (transport, client, room) in [
        (Transport::Udp, "10.1.2.3", 4096),
        (Transport::Udp, "192.0.2.1", 512),
        (Transport::Tcp, "fd00:1::7", u16::MAX as usize),
    ] {
        let peer = Peer {
            addr: client.parse().expect("address"),
            transport,
        };
        let got = respond(src, data, &mut out[..room], peer, &mut state, &stats);
        let Some(n) = got else {
            assert!(!answerable, "no reply to an answerable packet {data:02x?}");
            continue;
        };
        assert!(
            answerable,
            "a reply to a packet that must be dropped {data:02x?}"
        );
        assert!(
            n >= 12 && n <= room,
            "reply of {n} bytes in a {room}-byte buffer"
        );
        if transport == Transport::Udp {
            assert!(n <= EDNS_PAYLOAD as usize, "{n}-byte UDP reply");
        }
        let reply = &out[..n];
        assert_eq!(reply[..2], data[..2], "ID");
        assert_ne!(reply[2] & 0x80, 0, "QR");
        if let Err(e) = crate::dns::encode::decode_check(reply) {
            panic!("reply does not decode ({e}): query {data:02x?} reply {reply:02x?}");
        }
    }
}

/// The zone-file parser on arbitrary text: a result or problems, never a panic.
pub fn zonefile_check(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = crate::dns::zonefile::parse(Path::new("fuzz.zone"), &text);
}

/// The federation-file parser (YAML and TOML) on arbitrary text.
pub fn federation_check(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    for name in ["fuzz.yaml", "fuzz.toml"] {
        if let Err(problems) = crate::sources::federation_file::parse(Path::new(name), &text) {
            assert!(!problems.is_empty(), "an error with no problem listed");
        }
    }
}

/// The SkyDNS value decoder and key mapping on arbitrary bytes.
pub fn skydns_check(data: &[u8]) {
    use crate::answers::skydns;
    let _ = skydns::parse_value(data);
    let key = String::from_utf8_lossy(data);
    if let Some(name) = skydns::name_of_key(&key, "/skydns") {
        // A name made from a key maps back into the prefix.
        assert!(skydns::path_of(&name, "/skydns").starts_with("/skydns"));
    }
}
