//! Which server answered: NSID (RFC 5001) and the CHAOS TXT names `id.server`,
//! `hostname.bind` (RFC 4892), `version.server` and `version.bind`, as Knot, NSD and BIND
//! offer them. Off unless configured (REFUSED, as for any other class); answers are encoded
//! once at start, so the query path only copies them.

use crate::model::DnsName;
use crate::table::Body;

const CLASS_CH: u16 = 3;
const TXT: u16 = 16;
const ANY: u16 = 255;

/// The configured identity, encoded.
#[derive(Debug, Default)]
pub struct Identity {
    /// NSID option payload (empty: not sent).
    pub nsid: Box<[u8]>,
    /// (name wire, lowercase; its TXT answer body).
    chaos: Vec<(DnsName, Body)>,
}

impl Identity {
    /// `id`: what `id.server` and `hostname.bind` say; `version`: `version.server` and
    /// `version.bind`; `nsid`: the NSID bytes.
    pub fn new(id: Option<&str>, version: Option<&str>, nsid: Option<&[u8]>) -> Identity {
        let mut chaos = Vec::new();
        for (names, text) in [
            (["id.server", "hostname.bind"], id),
            (["version.server", "version.bind"], version),
        ] {
            let Some(text) = text else { continue };
            for n in names {
                let name = DnsName::parse(n).expect("fixed name");
                let body = super::encode::chaos_txt(&name, text);
                chaos.push((name, body));
            }
        }
        Identity {
            nsid: nsid.unwrap_or_default().into(),
            chaos,
        }
    }

    /// The answer to a CHAOS-class question, if it is one we answer.
    #[inline]
    pub fn chaos(&self, qname: &[u8], qtype: u16, qclass: u16) -> Option<&Body> {
        if qclass != CLASS_CH || (qtype != TXT && qtype != ANY) {
            return None;
        }
        self.chaos
            .iter()
            .find(|(n, _)| n.wire() == qname)
            .map(|(_, b)| b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::respond::{Limits, Peer, Source, Transport, WorkerState, respond};
    use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
    use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
    use hickory_proto::rr::{DNSClass, Name, RData, RecordType};

    fn ask(
        identity: Option<&Identity>,
        name: &str,
        t: RecordType,
        class: DNSClass,
        nsid: bool,
    ) -> Message {
        let table = crate::answers::build_fresh(&[], &[], crate::dns::tests::locator()).table;
        let mut m = Message::new(7, MessageType::Query, OpCode::Query);
        let mut q = Query::query(Name::from_ascii(name).unwrap(), t);
        q.set_query_class(class);
        m.add_query(q);
        let mut edns = Edns::new();
        if nsid {
            edns.options_mut()
                .insert(EdnsOption::Unknown(u16::from(EdnsCode::NSID), vec![]));
        }
        m.set_edns(edns);
        let req = m.to_vec().unwrap();
        let mut out = vec![0u8; 4096];
        let src = Source {
            table: &table,
            locator: crate::dns::tests::locator(),
            limits: Limits { edns_payload: 1232 },
            tsig: None,
            identity,
        };
        let peer = Peer {
            addr: "127.0.0.1".parse().unwrap(),
            transport: Transport::Udp,
        };
        let stats = crate::metrics::QueryStats::default();
        let n = respond(
            src,
            &req,
            &mut out,
            peer,
            &mut WorkerState::default(),
            &stats,
        )
        .unwrap();
        Message::from_vec(&out[..n]).unwrap()
    }

    fn txt(m: &Message) -> String {
        match &m.answers[0].data {
            RData::TXT(t) => t.to_string(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn chaos_names_and_nsid_answer_only_when_configured() {
        let id = Identity::new(Some("edge-1"), Some("fedns 0.1.0"), Some(b"edge-1"));
        for name in ["id.server.", "HOSTNAME.bind."] {
            let m = ask(Some(&id), name, RecordType::TXT, DNSClass::CH, false);
            assert_eq!(m.metadata.response_code, ResponseCode::NoError);
            assert!(m.metadata.authoritative);
            assert_eq!(m.answers[0].dns_class, DNSClass::CH);
            assert_eq!(txt(&m), "edge-1");
        }
        let m = ask(
            Some(&id),
            "version.bind.",
            RecordType::TXT,
            DNSClass::CH,
            false,
        );
        assert_eq!(txt(&m), "fedns 0.1.0");
        // Other CHAOS names, and everything when not configured: REFUSED as before.
        let m = ask(
            Some(&id),
            "authors.bind.",
            RecordType::TXT,
            DNSClass::CH,
            false,
        );
        assert_eq!(m.metadata.response_code, ResponseCode::Refused);
        let off = Identity::default();
        let m = ask(
            Some(&off),
            "id.server.",
            RecordType::TXT,
            DNSClass::CH,
            false,
        );
        assert_eq!(m.metadata.response_code, ResponseCode::Refused);
        // NSID comes back only when asked for, in any answer.
        let nsid = |m: &Message| {
            m.edns
                .as_ref()
                .and_then(|e| e.option(EdnsCode::NSID).cloned())
        };
        let m = ask(
            Some(&id),
            "nothing.example.",
            RecordType::A,
            DNSClass::IN,
            true,
        );
        assert_eq!(m.metadata.response_code, ResponseCode::Refused);
        assert_eq!(
            format!("{:?}", nsid(&m)),
            format!("Some(NSID(NSIDPayload({:?})))", b"edge-1".to_vec())
        );
        let m = ask(
            Some(&id),
            "nothing.example.",
            RecordType::A,
            DNSClass::IN,
            false,
        );
        assert!(nsid(&m).is_none());
        let m = ask(
            Some(&off),
            "nothing.example.",
            RecordType::A,
            DNSClass::IN,
            true,
        );
        assert!(nsid(&m).is_none());
    }
}
