//! Renders what the query path would answer for a name, type and client, by running the real
//! query path on a synthesized query and decoding the response (so explain can never disagree
//! with what `dig` gets).

use std::net::IpAddr;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsOption};
use hickory_proto::rr::{Name, RecordType};

use super::respond::{Peer, Source, Transport, WorkerState, respond};
use crate::metrics::QueryStats;

/// `ecs`: (address, source prefix) to send as EDNS Client Subnet.
pub fn answer_text(
    src: Source<'_>,
    name: &str,
    qtype: &str,
    client: IpAddr,
    ecs: Option<(IpAddr, u8)>,
) -> Result<String, String> {
    let name = Name::from_ascii(name).map_err(|e| format!("bad name {name:?}: {e}"))?;
    let t: RecordType = qtype
        .to_ascii_uppercase()
        .parse()
        .map_err(|_| format!("unknown type {qtype:?}"))?;
    let mut m = Message::new(0, MessageType::Query, OpCode::Query);
    m.add_query(Query::query(name, t));
    let mut edns = Edns::new();
    edns.set_max_payload(4096);
    if let Some((addr, prefix)) = ecs {
        edns.options_mut()
            .insert(EdnsOption::Subnet(ClientSubnet::new(addr, prefix, 0)));
    }
    m.set_edns(edns);
    let req = m.to_vec().map_err(|e| e.to_string())?;
    let mut out = vec![0u8; 65535];
    let stats = QueryStats::default();
    let peer = Peer {
        addr: client,
        transport: Transport::Tcp,
    };
    let Some(n) = respond(
        src,
        &req,
        &mut out,
        peer,
        &mut WorkerState::default(),
        &stats,
    ) else {
        return Err("no response".into());
    };
    let resp = Message::from_vec(&out[..n]).map_err(|e| e.to_string())?;
    let mut text = format!(
        "{} {}{}\n",
        resp.metadata.response_code,
        t,
        if resp.metadata.authoritative {
            " (authoritative)"
        } else {
            ""
        }
    );
    for (section, records) in [("answer", &resp.answers), ("authority", &resp.authorities)] {
        for r in records.iter() {
            text.push_str(&format!("  {section}: {r}\n"));
        }
    }
    if let Some(e) = &resp.edns
        && let Some(EdnsOption::Subnet(s)) = e
            .options()
            .get(hickory_proto::rr::rdata::opt::EdnsCode::Subnet)
    {
        text.push_str(&format!("  ecs scope: /{}\n", s.scope_prefix()));
    }
    Ok(text)
}
