//! Zone transfers (AXFR over TCP) of the zones the table lists in `Table::axfr` (etcd zones with
//! `axfr_allow`), to allowed client addresses only. Not on the query path: a transfer is
//! encoded when asked for, in messages of at most 64 KiB, the SOA first and last (RFC 5936).

use std::net::IpAddr;

use hickory_proto::op::{Message, MessageType, OpCode};
use hickory_proto::rr::RecordType;
use hickory_proto::serialize::binary::BinEncodable;

use super::encode::to_record;
use crate::model::{DnsName, Record};
use crate::table::Table;

/// Most records per message before size is checked.
const CHUNK: usize = 200;

/// The framed-less messages answering `req`, when it is an AXFR of a transferable zone from an
/// allowed `peer`; `None` otherwise (the normal path then answers, REFUSED for AXFR).
pub fn answer(
    table: &Table,
    req: &[u8],
    peer: IpAddr,
    allow: &[(IpAddr, u8)],
) -> Option<Vec<Vec<u8>>> {
    if allow.is_empty() || !crate::config::allowed(allow, peer) {
        return None;
    }
    let msg = Message::from_vec(req).ok()?;
    if msg.metadata.message_type != MessageType::Query || msg.queries.len() != 1 {
        return None;
    }
    let q = msg.queries[0].clone();
    if q.query_type() != RecordType::AXFR {
        return None;
    }
    let zone = DnsName::from_wire_lowercase(&q.name().to_bytes().ok()?);
    let records = table.axfr.get(zone.wire())?;
    let all: Vec<&Record> = records.iter().chain(records.first()).collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < all.len() {
        let mut n = (all.len() - i).min(CHUNK);
        loop {
            let mut m = Message::new(msg.metadata.id, MessageType::Response, OpCode::Query);
            m.metadata.authoritative = true;
            if out.is_empty() {
                m.add_query(q.clone());
            }
            for r in &all[i..i + n] {
                m.answers.push(to_record(r));
            }
            match m.to_vec() {
                Ok(v) if v.len() <= u16::MAX as usize => {
                    out.push(v);
                    break;
                }
                _ if n > 1 => n /= 2,
                _ => {
                    tracing::warn!(zone = %zone, "a record too large for any message left out of a transfer");
                    break;
                }
            }
        }
        i += n;
    }
    tracing::info!(zone = %zone, %peer, records = records.len(), "zone transfer");
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::answers::skydns::{Entry, EtcdData};
    use hickory_proto::op::Query;
    use hickory_proto::rr::Name;

    #[test]
    fn transfers_to_allowed_peers_only() {
        let mut data = EtcdData {
            prefix: "/skydns".into(),
            zones: vec![DnsName::parse("example.net").unwrap()],
            axfr: true,
            ..Default::default()
        };
        std::sync::Arc::make_mut(&mut data.entries).insert(
            "/skydns/net/example/a".into(),
            Entry {
                host: "10.0.0.1".into(),
                ..Default::default()
            },
        );
        let table = crate::answers::build(crate::answers::BuildInput {
            zones: &[],
            locator: &crate::geo::Locator::default(),
            federations: &[],
            etcd: &[&data],
            cache: None,
            serial: 5,
            generation: 1,
        })
        .table;
        assert!(!table.axfr.is_empty());
        let mut m = Message::new(9, MessageType::Query, OpCode::Query);
        m.add_query(Query::query(
            Name::from_ascii("example.net.").unwrap(),
            RecordType::AXFR,
        ));
        let req = m.to_vec().unwrap();
        let allow = [crate::config::parse_cidr("127.0.0.0/8").unwrap()];
        let local: IpAddr = "127.0.0.1".parse().unwrap();
        let msgs = answer(&table, &req, local, &allow).expect("transfer");
        let r = Message::from_vec(&msgs[0]).unwrap();
        assert_eq!(r.answers.len(), 3);
        assert!(answer(&table, &req, "10.1.1.1".parse().unwrap(), &allow).is_none());
    }
}
