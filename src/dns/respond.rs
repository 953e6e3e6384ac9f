//! The query path: parse a query in place, look it up in the table, write the response.
//!
//! Guarantees: no allocation, no locks, no I/O, no logging; every byte of input is bounds-checked
//! (a malformed query gets FORMERR, a response or a packet shorter than a header is dropped);
//! the response never exceeds the buffer or, over UDP, the negotiated payload size (TC=1, OPT
//! kept, when it would).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::geo::Locator;
use crate::metrics::{QueryStats, ZoneSlot};
use crate::model::rtype;
use crate::table::{Body, Lookup, Table, rcode};

const HEADER: usize = 12;
const OPT_LEN: usize = 11;
/// EDNS Client Subnet option code (RFC 7871).
const OPT_ECS: u16 = 8;
const BADVERS: u16 = 16;
const CLASS_IN: u16 = 1;
const CLASS_ANY: u16 = 255;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// Serving settings the query path needs.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Our EDNS UDP payload size: advertised, and the most we send over UDP.
    pub edns_payload: u16,
}

/// Who asked, and how.
#[derive(Clone, Copy, Debug)]
pub struct Peer {
    pub addr: IpAddr,
    pub transport: Transport,
}

/// What answers are read from: the current table and the client locator.
#[derive(Clone, Copy)]
pub struct Source<'a> {
    pub table: &'a Table,
    pub locator: &'a Locator,
    pub limits: Limits,
}

/// An EDNS Client Subnet option from the query (RFC 7871 §6).
#[derive(Clone, Copy)]
struct Ecs {
    family: u16,
    source_prefix: u8,
    address: [u8; 16],
}

impl Ecs {
    fn address_len(&self) -> usize {
        self.source_prefix.div_ceil(8) as usize
    }

    fn ip(&self) -> IpAddr {
        if self.family == 1 {
            IpAddr::V4(Ipv4Addr::new(
                self.address[0],
                self.address[1],
                self.address[2],
                self.address[3],
            ))
        } else {
            IpAddr::V6(Ipv6Addr::from(self.address))
        }
    }
}

#[derive(Clone, Copy)]
struct Edns {
    payload: u16,
    version: u8,
    dnssec_ok: bool,
}

/// What the query parser found; `question_end` is 12 when no question could be parsed.
struct Query {
    id: [u8; 2],
    opcode: u8,
    rd: bool,
    cd: bool,
    question_end: usize,
    qtype: u16,
    qclass: u16,
    edns: Option<Edns>,
    ecs: Option<Ecs>,
}

/// Per-worker state the query path keeps between queries.
#[derive(Default)]
pub struct WorkerState {
    rotation: usize,
}

impl WorkerState {
    /// State whose rotation starts at `rotation`: short-lived users (one TCP connection per
    /// query) start where the previous one left off instead of always at the first rotation.
    pub fn starting_at(rotation: usize) -> Self {
        WorkerState { rotation }
    }
}

/// Answers `req` into `out` and returns the response length, or `None` when nothing should be
/// sent. `out` must hold at least 65535 bytes for TCP and `limits.edns_payload` for UDP.
pub fn respond(
    src: Source<'_>,
    req: &[u8],
    out: &mut [u8],
    peer: Peer,
    state: &mut WorkerState,
    stats: &QueryStats,
) -> Option<usize> {
    if req.len() < HEADER || req[2] & 0x80 != 0 {
        // Too short to carry an ID worth answering, or a response (answering those invites loops).
        stats.dropped();
        return None;
    }
    let mut key = [0u8; 255];
    let mut q = Query {
        id: [req[0], req[1]],
        opcode: (req[2] >> 3) & 0x0f,
        rd: req[2] & 0x01 != 0,
        cd: req[3] & 0x10 != 0,
        question_end: HEADER,
        qtype: 0,
        qclass: 0,
        edns: None,
        ecs: None,
    };
    // ECS scope to echo: the prefix length that decided a location-dependent answer, else 0.
    let mut scope = 0u8;
    let mut tail: &[u8] = &[];
    let mut zone = ZoneSlot::OTHER;
    // (rcode, sections, authoritative)
    let (code, body, aa) = match parse(req, &mut q, &mut key) {
        Err(code) => (
            if q.opcode != 0 {
                rcode::NOTIMP as u16
            } else {
                code
            },
            None,
            false,
        ),
        Ok(key_len) => {
            zone = stats.request(peer.transport, q.qtype, &key[..key_len]);
            // A resolver's ECS is ignored (and not echoed) unless config allows it.
            if !src.locator.ecs {
                q.ecs = None;
            }
            if q.opcode != 0 {
                (rcode::NOTIMP as u16, None, false)
            } else if q.edns.is_some_and(|e| e.version > 0) {
                (BADVERS, None, false)
            } else if (q.qclass != CLASS_IN && q.qclass != CLASS_ANY)
                || q.qtype == rtype::AXFR
                || q.qtype == rtype::IXFR
            {
                // Other classes are not ours; zone transfers are not offered yet.
                (rcode::REFUSED as u16, None, false)
            } else {
                let locate = || {
                    // RFC 7871 §7.1.2: SOURCE PREFIX-LENGTH 0 asks us to ignore the subnet; the
                    // packet's source then decides, and the answer is valid for everyone.
                    match q.ecs {
                        Some(e) if e.source_prefix > 0 => {
                            let (loc, used) = src.locator.locate(e.ip(), e.source_prefix);
                            scope = used;
                            loc as usize
                        }
                        _ => src.locator.locate(peer.addr, 0).0 as usize,
                    }
                };
                match src.table.lookup(&key[..key_len], q.qtype, locate) {
                    Lookup::Authoritative(answer) => {
                        let body = &answer.bodies[state.rotation % answer.bodies.len()];
                        state.rotation = state.rotation.wrapping_add(1);
                        tail = src.table.soa_tail(answer);
                        (answer.rcode as u16, Some(body), true)
                    }
                    Lookup::Refused => (rcode::REFUSED as u16, None, false),
                    Lookup::NotReady => (rcode::SERVFAIL as u16, None, false),
                }
            }
        }
    };
    stats.response(zone, code);
    let answer = Answer {
        code,
        body,
        tail,
        authoritative: aa,
        scope,
    };
    let len = write(req, out, &q, &answer, peer.transport, src.limits, stats);
    stats.response_size(peer.transport, len);
    Some(len)
}

/// The outcome of a lookup, ready to be written.
struct Answer<'a> {
    code: u16,
    body: Option<&'a Body>,
    /// The zone's SOA record, appended to the authority section after `body` (empty: none).
    tail: &'a [u8],
    authoritative: bool,
    /// ECS scope prefix length actually used.
    scope: u8,
}

/// Parses question and EDNS. `Ok(len)` of the lowercased question name in `key`; `Err(rcode)`.
fn parse(req: &[u8], q: &mut Query, key: &mut [u8; 255]) -> Result<usize, u16> {
    let count = |i: usize| u16::from_be_bytes([req[i], req[i + 1]]);
    let (qd, an, ns, ar) = (count(4), count(6), count(8), count(10));
    if qd != 1 {
        // QDCOUNT 0 or >1: RFC 1035 allows neither for QUERY; others we do not implement.
        return Err(if q.opcode != 0 {
            rcode::NOTIMP
        } else {
            rcode::FORMERR
        } as u16);
    }
    let mut pos = HEADER;
    let mut key_len = 0usize;
    loop {
        let len = *req.get(pos).ok_or(rcode::FORMERR as u16)? as usize;
        if len == 0 {
            key[key_len] = 0;
            key_len += 1;
            pos += 1;
            break;
        }
        // Nothing precedes the question, so a compression pointer here can only loop or point
        // into the header; the 0x40/0x80 label types are obsolete.
        if len & 0xc0 != 0 || pos + 1 + len > req.len() || key_len + 1 + len + 1 > 255 {
            return Err(rcode::FORMERR as u16);
        }
        key[key_len] = len as u8;
        for (d, s) in key[key_len + 1..key_len + 1 + len]
            .iter_mut()
            .zip(&req[pos + 1..pos + 1 + len])
        {
            *d = s.to_ascii_lowercase();
        }
        key_len += 1 + len;
        pos += 1 + len;
    }
    if pos + 4 > req.len() {
        return Err(rcode::FORMERR as u16);
    }
    q.qtype = u16::from_be_bytes([req[pos], req[pos + 1]]);
    q.qclass = u16::from_be_bytes([req[pos + 2], req[pos + 3]]);
    pos += 4;
    q.question_end = pos;
    if q.qtype == rtype::OPT {
        return Err(rcode::FORMERR as u16);
    }
    for _ in 0..(an as usize + ns as usize) {
        pos = skip_record(req, pos).ok_or(rcode::FORMERR as u16)?.0;
    }
    for _ in 0..ar {
        let (next, rr_type, rdata_start) = skip_record(req, pos).ok_or(rcode::FORMERR as u16)?;
        if rr_type == rtype::OPT {
            // RFC 6891 §6.1.1: one OPT, owned by the root.
            if q.edns.is_some() || req[pos] != 0 {
                return Err(rcode::FORMERR as u16);
            }
            let ttl = &req[pos + 5..pos + 9];
            q.edns = Some(Edns {
                payload: u16::from_be_bytes([req[pos + 3], req[pos + 4]]),
                version: ttl[1],
                dnssec_ok: ttl[2] & 0x80 != 0,
            });
            // Options must tile the RDATA exactly.
            let mut o = rdata_start;
            while o < next {
                if o + 4 > next {
                    return Err(rcode::FORMERR as u16);
                }
                let code = u16::from_be_bytes([req[o], req[o + 1]]);
                let olen = u16::from_be_bytes([req[o + 2], req[o + 3]]) as usize;
                if code == OPT_ECS && o + 4 + olen <= next {
                    q.ecs =
                        Some(parse_ecs(&req[o + 4..o + 4 + olen]).ok_or(rcode::FORMERR as u16)?);
                }
                o += 4 + olen;
            }
            if o != next {
                return Err(rcode::FORMERR as u16);
            }
        }
        pos = next;
    }
    Ok(key_len)
}

/// RFC 7871 §6: FAMILY 1 or 2, SOURCE PREFIX-LENGTH within the family, SCOPE 0 in queries,
/// exactly ceil(SOURCE/8) address bytes with no bits set beyond SOURCE. Anything else is FORMERR.
fn parse_ecs(opt: &[u8]) -> Option<Ecs> {
    if opt.len() < 4 {
        return None;
    }
    let family = u16::from_be_bytes([opt[0], opt[1]]);
    let (source_prefix, scope) = (opt[2], opt[3]);
    let max = match family {
        1 => 32,
        2 => 128,
        _ => return None,
    };
    if source_prefix > max || scope != 0 {
        return None;
    }
    let mut e = Ecs {
        family,
        source_prefix,
        address: [0; 16],
    };
    let addr = &opt[4..];
    if addr.len() != e.address_len() {
        return None;
    }
    if let Some(last) = addr.last() {
        let used_bits = source_prefix as u32 - 8 * (addr.len() as u32 - 1);
        if used_bits < 8 && last & (0xffu8 >> used_bits) != 0 {
            return None;
        }
    }
    e.address[..addr.len()].copy_from_slice(addr);
    Some(e)
}

/// Skips one resource record: `(end, type, rdata start)`, or `None` if it overruns the packet.
fn skip_record(req: &[u8], mut pos: usize) -> Option<(usize, u16, usize)> {
    loop {
        let len = *req.get(pos)? as usize;
        if len == 0 {
            pos += 1;
            break;
        }
        if len & 0xc0 == 0xc0 {
            pos += 2;
            break;
        }
        if len & 0xc0 != 0 {
            return None;
        }
        pos += 1 + len;
    }
    let fixed = req.get(pos..pos + 10)?;
    let rr_type = u16::from_be_bytes([fixed[0], fixed[1]]);
    let rdlen = u16::from_be_bytes([fixed[8], fixed[9]]) as usize;
    let end = pos + 10 + rdlen;
    (end <= req.len()).then_some((end, rr_type, pos + 10))
}

fn write(
    req: &[u8],
    out: &mut [u8],
    q: &Query,
    answer: &Answer<'_>,
    transport: Transport,
    limits: Limits,
    stats: &QueryStats,
) -> usize {
    let question = &req[HEADER..q.question_end];
    // A FORMERR before EDNS was parsed has no OPT to echo; BADVERS must carry one.
    let edns = q.edns;
    // RFC 7871 §7.2.2: echo the client's subnet with the scope we used.
    let ecs = q.ecs.filter(|_| edns.is_some());
    let ecs_len = ecs.map_or(0, |e| 8 + e.address_len());
    let opt_len = if edns.is_some() { OPT_LEN + ecs_len } else { 0 };
    let limit = match transport {
        Transport::Tcp => u16::MAX as usize,
        Transport::Udp => match edns {
            Some(e) => e.payload.clamp(512, limits.edns_payload.max(512)) as usize,
            None => 512,
        },
    }
    .min(out.len());
    let body_len = answer.body.map_or(0, |b| b.wire.len() + answer.tail.len());
    let truncated = HEADER + question.len() + body_len + opt_len > limit;
    if truncated {
        stats.truncated();
    }
    let body = if truncated { None } else { answer.body };
    let code = answer.code;

    out[0..2].copy_from_slice(&q.id);
    out[2] = 0x80
        | (q.opcode << 3)
        | (answer.authoritative as u8) << 2
        | (truncated as u8) << 1
        | q.rd as u8;
    out[3] = (q.cd as u8) << 4 | (code & 0x0f) as u8;
    let qd = (q.question_end > HEADER) as u16;
    out[4..6].copy_from_slice(&qd.to_be_bytes());
    out[6..8].copy_from_slice(&body.map_or(0, |b| b.answer_count).to_be_bytes());
    let tail = if body.is_some() { answer.tail } else { &[] };
    let ns = body.map_or(0, |b| b.authority_count) + !tail.is_empty() as u16;
    out[8..10].copy_from_slice(&ns.to_be_bytes());
    let ar = body.map_or(0, |b| b.additional_count) + edns.is_some() as u16;
    out[10..12].copy_from_slice(&ar.to_be_bytes());
    let mut pos = HEADER;
    out[pos..pos + question.len()].copy_from_slice(question);
    pos += question.len();
    if let Some(b) = body {
        out[pos..pos + b.wire.len()].copy_from_slice(&b.wire);
        pos += b.wire.len();
        out[pos..pos + tail.len()].copy_from_slice(tail);
        pos += tail.len();
    }
    if let Some(e) = edns {
        let ttl = [(code >> 4) as u8, 0, (e.dnssec_ok as u8) << 7, 0];
        out[pos] = 0;
        out[pos + 1..pos + 3].copy_from_slice(&rtype::OPT.to_be_bytes());
        out[pos + 3..pos + 5].copy_from_slice(&limits.edns_payload.to_be_bytes());
        out[pos + 5..pos + 9].copy_from_slice(&ttl);
        out[pos + 9..pos + 11].copy_from_slice(&(ecs_len as u16).to_be_bytes());
        pos += OPT_LEN;
        if let Some(c) = ecs {
            let n = c.address_len();
            out[pos..pos + 2].copy_from_slice(&OPT_ECS.to_be_bytes());
            out[pos + 2..pos + 4].copy_from_slice(&((4 + n) as u16).to_be_bytes());
            out[pos + 4..pos + 6].copy_from_slice(&c.family.to_be_bytes());
            out[pos + 6] = c.source_prefix;
            out[pos + 7] = answer.scope;
            out[pos + 8..pos + 8 + n].copy_from_slice(&c.address[..n]);
            pos += 8 + n;
        }
    }
    pos
}
