//! Renders what the query path would answer for a name, type and client, by running the real
//! query path on a synthesized query and decoding the response (so explain can never disagree
//! with what `dig` gets).

use std::net::IpAddr;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsOption};
use hickory_proto::rr::{Name, RecordType};

use super::respond::{Peer, Source, Transport, WorkerState, respond};
use crate::metrics::QueryStats;

/// What the query path answered, decoded (the `answer` object of explain's JSON).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Answer {
    /// `NOERROR`, `NXDOMAIN`, `REFUSED`, …
    pub rcode: String,
    pub authoritative: bool,
    /// Records in presentation format (`owner TTL IN TYPE RDATA`).
    pub answer: Vec<String>,
    pub authority: Vec<String>,
    /// The ECS scope prefix returned, when the query carried ECS.
    pub ecs_scope: Option<u8>,
}

impl Answer {
    /// The text form: `RCODE TYPE (authoritative)` then one line per record.
    pub fn text(&self, qtype: &str) -> String {
        let mut text = format!(
            "{} {}{}\n",
            self.rcode,
            qtype,
            if self.authoritative {
                " (authoritative)"
            } else {
                ""
            }
        );
        for (section, records) in [("answer", &self.answer), ("authority", &self.authority)] {
            for r in records {
                text.push_str(&format!("  {section}: {r}\n"));
            }
        }
        if let Some(s) = self.ecs_scope {
            text.push_str(&format!("  ecs scope: /{s}\n"));
        }
        text
    }
}

/// Whether `qtype` names a record type explain can ask for; its canonical spelling.
pub fn parse_type(qtype: &str) -> Result<String, String> {
    qtype
        .to_ascii_uppercase()
        .parse::<RecordType>()
        .map(|t| t.to_string())
        .map_err(|_| format!("type: unknown record type {qtype:?} (A, AAAA, SRV, CNAME, …)"))
}

/// Runs the query path on NAME TYPE from `client` (with `ecs`: (address, source prefix) as
/// EDNS Client Subnet) and decodes the response.
pub fn answer(
    src: Source<'_>,
    name: &str,
    qtype: &str,
    client: IpAddr,
    ecs: Option<(IpAddr, u8)>,
) -> Result<Answer, String> {
    let name =
        Name::from_ascii(name).map_err(|e| format!("name: {name:?} is not a domain name: {e}"))?;
    let t: RecordType = qtype
        .to_ascii_uppercase()
        .parse()
        .map_err(|_| format!("type: unknown record type {qtype:?}"))?;
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
    let ecs_scope = resp.edns.as_ref().and_then(|e| {
        match e
            .options()
            .get(hickory_proto::rr::rdata::opt::EdnsCode::Subnet)
        {
            Some(EdnsOption::Subnet(s)) => Some(s.scope_prefix()),
            _ => None,
        }
    });
    Ok(Answer {
        rcode: resp.metadata.response_code.to_string(),
        authoritative: resp.metadata.authoritative,
        answer: resp.answers.iter().map(|r| r.to_string()).collect(),
        authority: resp.authorities.iter().map(|r| r.to_string()).collect(),
        ecs_scope,
    })
}
