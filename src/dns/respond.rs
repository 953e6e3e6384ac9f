//! The query path: parse a query in place, look it up in the table, write the response.
//!
//! Guarantees: no allocation, no locks, no I/O, no logging; every byte of input is bounds-checked
//! (a malformed query gets FORMERR, a response or a packet shorter than a header is dropped);
//! the response never exceeds the buffer or, over UDP, the negotiated payload size (TC=1, OPT
//! kept, when it would).

use crate::metrics::QueryStats;
use crate::model::rtype;
use crate::table::{Body, Lookup, Table, rcode};

const HEADER: usize = 12;
const OPT_LEN: usize = 11;
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
    table: &Table,
    req: &[u8],
    out: &mut [u8],
    transport: Transport,
    limits: Limits,
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
    };
    // (rcode, sections, authoritative)
    let (code, lookup_result, aa) = match parse(req, &mut q, &mut key) {
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
            stats.request(transport, q.qtype);
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
                match table.lookup(&key[..key_len], q.qtype) {
                    Lookup::Authoritative(answer) => {
                        let body = &answer.bodies[state.rotation % answer.bodies.len()];
                        state.rotation = state.rotation.wrapping_add(1);
                        (answer.rcode as u16, Some(body), true)
                    }
                    Lookup::Refused => (rcode::REFUSED as u16, None, false),
                    Lookup::NotReady => (rcode::SERVFAIL as u16, None, false),
                }
            }
        }
    };
    stats.response(code);
    Some(write(
        req,
        out,
        &q,
        code,
        lookup_result,
        aa,
        transport,
        limits,
        stats,
    ))
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
                let olen = u16::from_be_bytes([req[o + 2], req[o + 3]]) as usize;
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

#[allow(clippy::too_many_arguments)]
fn write(
    req: &[u8],
    out: &mut [u8],
    q: &Query,
    code: u16,
    body: Option<&Body>,
    authoritative: bool,
    transport: Transport,
    limits: Limits,
    stats: &QueryStats,
) -> usize {
    let question = &req[HEADER..q.question_end];
    // A FORMERR before EDNS was parsed has no OPT to echo; BADVERS must carry one.
    let edns = q.edns;
    let opt_len = if edns.is_some() { OPT_LEN } else { 0 };
    let limit = match transport {
        Transport::Tcp => u16::MAX as usize,
        Transport::Udp => match edns {
            Some(e) => e.payload.clamp(512, limits.edns_payload.max(512)) as usize,
            None => 512,
        },
    }
    .min(out.len());
    let body_len = body.map_or(0, |b| b.wire.len());
    let truncated = HEADER + question.len() + body_len + opt_len > limit;
    if truncated {
        stats.truncated();
    }
    let body = if truncated { None } else { body };

    out[0..2].copy_from_slice(&q.id);
    out[2] =
        0x80 | (q.opcode << 3) | (authoritative as u8) << 2 | (truncated as u8) << 1 | q.rd as u8;
    out[3] = (q.cd as u8) << 4 | (code & 0x0f) as u8;
    let qd = (q.question_end > HEADER) as u16;
    out[4..6].copy_from_slice(&qd.to_be_bytes());
    out[6..8].copy_from_slice(&body.map_or(0, |b| b.answer_count).to_be_bytes());
    out[8..10].copy_from_slice(&body.map_or(0, |b| b.authority_count).to_be_bytes());
    let ar = body.map_or(0, |b| b.additional_count) + edns.is_some() as u16;
    out[10..12].copy_from_slice(&ar.to_be_bytes());
    let mut pos = HEADER;
    out[pos..pos + question.len()].copy_from_slice(question);
    pos += question.len();
    if let Some(b) = body {
        out[pos..pos + b.wire.len()].copy_from_slice(&b.wire);
        pos += b.wire.len();
    }
    if let Some(e) = edns {
        let ttl = [(code >> 4) as u8, 0, (e.dnssec_ok as u8) << 7, 0];
        out[pos] = 0;
        out[pos + 1..pos + 3].copy_from_slice(&rtype::OPT.to_be_bytes());
        out[pos + 3..pos + 5].copy_from_slice(&limits.edns_payload.to_be_bytes());
        out[pos + 5..pos + 9].copy_from_slice(&ttl);
        out[pos + 9..pos + 11].copy_from_slice(&[0, 0]);
        pos += OPT_LEN;
    }
    pos
}
