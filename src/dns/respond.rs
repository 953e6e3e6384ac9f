//! The query path: parse a query in place, look it up in the table, write the response.
//!
//! Guarantees: no allocation, no locks, no I/O, no logging; every byte of input is bounds-checked
//! (a malformed query gets FORMERR, a response or a packet shorter than a header is dropped);
//! the response never exceeds the buffer or, over UDP, the negotiated payload size (TC=1, OPT
//! kept, when it would).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::dns::rrl::{Class, Rrl, Verdict};
use crate::geo::Locator;
use crate::metrics::{QueryStats, ZoneSlot};
use crate::model::rtype;
use crate::table::{Body, Lookup, OnlineData, Table, rcode};

const HEADER: usize = 12;
const OPT_LEN: usize = 11;
/// EDNS Client Subnet option code (RFC 7871).
const OPT_ECS: u16 = 8;
/// Name Server Identifier option code (RFC 5001).
const OPT_NSID: u16 = 3;
const BADVERS: u16 = 16;
const CLASS_IN: u16 = 1;
const CLASS_ANY: u16 = 255;
const CLASS_NONE: u16 = 254;
const OPCODE_UPDATE: u8 = 5;

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
    /// The transfer TSIG key: queries signed with it (secondaries checking the SOA) are
    /// answered signed; any other TSIG gets NOTAUTH.
    pub tsig: Option<&'a crate::dns::tsig::Key>,
    /// NSID and CHAOS identity answers, when configured.
    pub identity: Option<&'a crate::dns::identity::Identity>,
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
    tsig: Option<Tsig>,
    /// The query asked for our NSID (an empty NSID option).
    nsid: bool,
}

/// Per-worker state the query path keeps between queries.
#[derive(Default)]
pub struct WorkerState {
    rotation: usize,
    /// Response-rate limiting of UDP responses, when configured.
    rrl: Option<Box<Rrl>>,
    /// Coarse clock for RRL (seconds), set by the worker once per batch.
    second: u32,
}

impl WorkerState {
    /// Limits this worker's UDP responses with `rrl`.
    pub fn with_rrl(mut self, rrl: Option<Rrl>) -> Self {
        self.rrl = rrl.map(Box::new);
        self
    }

    /// Replaces the limiter (a reload changed `rrl`).
    pub fn set_rrl(&mut self, rrl: Option<Rrl>) {
        self.rrl = rrl.map(Box::new);
    }

    /// The current second, for RRL.
    #[inline]
    pub fn set_second(&mut self, second: u32) {
        self.second = second;
    }

    /// State whose rotation starts at `rotation`: short-lived users (one TCP connection per
    /// query) start where the previous one left off instead of always at the first rotation.
    pub fn starting_at(rotation: usize) -> Self {
        WorkerState {
            rotation,
            ..Default::default()
        }
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
        tsig: None,
        nsid: false,
    };
    // ECS scope to echo: the prefix length that decided a location-dependent answer, else 0.
    let mut scope = 0u8;
    let mut tail: &[u8] = &[];
    let mut tail_count = 0u16;
    let mut zone = ZoneSlot::OTHER;
    // A signed zone's keys, when the answer must end with the compact denial of the question
    // (with its negative TTL and type bitmap), or its first RRSIG be made for the question.
    let mut denial: Option<(&crate::dns::dnssec::ZoneKeys, u32, &[u8])> = None;
    let mut online: Option<(&crate::dns::dnssec::ZoneKeys, usize, &[u8])> = None;
    let mut qname_len = 0usize;
    // A query signed with our transfer key: (its MAC, the time we sign with).
    let mut signed: Option<(Vec<u8>, u64)> = None;
    // (rcode, sections, authoritative)
    let (mut code, mut body, mut aa) = match parse(req, &mut q, &mut key) {
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
            qname_len = key_len;
            zone = stats.request(peer.transport, q.qtype, &key[..key_len]);
            // A resolver's ECS is ignored (and not echoed) unless config allows it.
            if !src.locator.ecs {
                q.ecs = None;
            }
            // TSIG first, whatever the opcode: the answer to a signed request is signed, a
            // NOTIMP included (RFC 8945 §5.3).
            if q.tsig.is_some() && {
                signed = verify_tsig(req, src.tsig);
                signed.is_none()
            } {
                // RFC 8945 §5.2: a key we do not hold (or a signature that does not verify):
                // NOTAUTH, and an unsigned TSIG with error BADKEY.
                (NOTAUTH, None, false)
            } else if q.opcode != 0 {
                (rcode::NOTIMP as u16, None, false)
            } else if q.edns.is_some_and(|e| e.version > 0) {
                (BADVERS, None, false)
            } else if (q.qclass != CLASS_IN && q.qclass != CLASS_ANY)
                || q.qtype == rtype::AXFR
                || q.qtype == rtype::IXFR
            {
                // Other classes are not ours, but for the CHAOS identity names when configured;
                // a transfer that gets here (UDP, or a peer not allowed) is refused.
                match src
                    .identity
                    .and_then(|i| i.chaos(&key[..key_len], q.qtype, q.qclass))
                {
                    Some(b) => (rcode::NOERROR as u16, Some(b), true),
                    None => (rcode::REFUSED as u16, None, false),
                }
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
                        let dnssec = q.edns.is_some_and(|e| e.dnssec_ok);
                        let rotation = state.rotation;
                        let body = answer.body(rotation, dnssec);
                        state.rotation = state.rotation.wrapping_add(1);
                        (tail, tail_count) = src.table.soa_tail(answer, dnssec);
                        let mut code = answer.rcode as u16;
                        if dnssec && answer.signed {
                            if code == rcode::NXDOMAIN as u16 {
                                // Compact denial (RFC 9824): the name is proven to have no data.
                                code = rcode::NOERROR as u16;
                                denial = src.table.online_denial(answer).map(|(k, ttl)| {
                                    (k, ttl, &crate::dns::dnssec::NXNAME_BITMAP[..])
                                });
                            }
                            if let Some((z, what)) = answer.online_data(rotation) {
                                // A wildcard answer names the question: its proof, or its
                                // RRSIG, is made now. Keys that went missing cannot sign.
                                match (what, src.table.zone_keys(z)) {
                                    (Some(OnlineData::Nodata { bitmap }), Some((k, ttl))) => {
                                        denial = Some((k, ttl, bitmap));
                                    }
                                    (
                                        Some(OnlineData::Rrsig { rdata_at, records }),
                                        Some((k, _)),
                                    ) => online = Some((k, rdata_at, records)),
                                    _ => code = rcode::SERVFAIL as u16,
                                }
                            }
                        }
                        if code == rcode::SERVFAIL as u16 {
                            (code, None, false)
                        } else {
                            (code, Some(body), answer.authoritative)
                        }
                    }
                    Lookup::Refused => (rcode::REFUSED as u16, None, false),
                    Lookup::NotReady => (rcode::SERVFAIL as u16, None, false),
                }
            }
        }
    };
    // Response-rate limiting (UDP only: TCP cannot be spoofed and is where slipped clients go).
    let mut slip = false;
    if peer.transport == Transport::Udp {
        let second = state.second;
        if let Some(rrl) = state.rrl.as_deref_mut() {
            match rrl.check(
                peer.addr,
                classify(code, body, q.qtype),
                &key[..qname_len],
                second,
            ) {
                Verdict::Send => {}
                Verdict::Slip => slip = true,
                Verdict::Drop => return None,
            }
        }
    }
    // A wildcard answer's RRSIG names the question: made now (after RRL, which may drop it).
    let mut signature = None;
    if let (Some((keys, at, records)), Some(b)) = (online, body) {
        signature = keys.sign_online(&key[..qname_len], records, &b.wire, at);
        if signature.is_none() {
            // A half-signed answer would be bogus.
            code = rcode::SERVFAIL as u16;
            body = None;
            aa = false;
        }
    }
    stats.response(zone, code);
    let answer = Answer {
        code,
        body,
        tail,
        tail_count,
        authoritative: aa,
        scope,
        slip,
        nsid: match src.identity {
            Some(i) if q.nsid => &i.nsid,
            _ => &[],
        },
        denial: denial.map(|(keys, ttl, bitmap)| Denial {
            keys,
            ttl,
            qname: &key[..qname_len],
            bitmap,
        }),
        online: signature,
    };
    let mut len = write(req, out, &q, &answer, peer.transport, src.limits, stats);
    if let (Some((mac, time)), Some(key)) = (&signed, src.tsig) {
        let limit = response_limit(peer.transport, q.edns, src.limits);
        len = crate::dns::tsig::sign_into(out, len, limit, key, mac, *time);
    }
    stats.response_size(peer.transport, len);
    Some(len)
}

/// A question the query path's parser accepted whole: its name (lowercased wire) and type.
pub struct Question {
    name: [u8; 255],
    len: usize,
    pub qtype: u16,
}

impl Question {
    pub fn name(&self) -> &[u8] {
        &self.name[..self.len]
    }
}

/// The question of `req` when it is a standard query that [`respond`]'s parser accepts whole
/// (header, question and every record after it), else `None`. Transfer requests are screened
/// with it before anything else reads them, so a malformed one gets the FORMERR (or NOTIMP) a
/// query would, from [`respond`], instead of a zone. Off the query path.
pub fn checked_question(req: &[u8]) -> Option<Question> {
    if req.len() < HEADER || req[2] & 0x80 != 0 || (req[2] >> 3) & 0x0f != 0 {
        return None;
    }
    let mut q = Query {
        id: [req[0], req[1]],
        opcode: 0,
        rd: false,
        cd: false,
        question_end: HEADER,
        qtype: 0,
        qclass: 0,
        edns: None,
        ecs: None,
        tsig: None,
        nsid: false,
    };
    let mut name = [0u8; 255];
    let len = parse(req, &mut q, &mut name).ok()?;
    Some(Question {
        name,
        len,
        qtype: q.qtype,
    })
}

/// The largest response `transport` may carry: 64 KiB over TCP; over UDP the client's EDNS
/// payload within [512, ours], or 512 without EDNS.
#[inline]
fn response_limit(transport: Transport, edns: Option<Edns>, limits: Limits) -> usize {
    match transport {
        Transport::Tcp => u16::MAX as usize,
        Transport::Udp => match edns {
            Some(e) => e.payload.clamp(512, limits.edns_payload.max(512)) as usize,
            None => 512,
        },
    }
}

/// The MAC and time of a query signed with `key`, if its TSIG verifies (off the hot path:
/// only TSIG-bearing queries get here).
#[cold]
fn verify_tsig(req: &[u8], key: Option<&crate::dns::tsig::Key>) -> Option<(Vec<u8>, u64)> {
    match crate::dns::tsig::verify(req, std::slice::from_ref(key?), crate::dns::tsig::now()) {
        crate::dns::tsig::Verdict::Signed { mac, time, .. } => Some((mac, time)),
        _ => None,
    }
}

/// The outcome of a lookup, ready to be written.
struct Answer<'a> {
    code: u16,
    body: Option<&'a Body>,
    /// The zone's SOA record (and its RRSIG), appended to the authority section after `body`
    /// (empty: none), and how many records it holds.
    tail: &'a [u8],
    tail_count: u16,
    authoritative: bool,
    /// ECS scope prefix length actually used.
    scope: u8,
    /// Rate-limited: send truncated (TC=1, no records) so the client retries over TCP.
    slip: bool,
    /// Our NSID, when the query asked for it (empty: none).
    nsid: &'a [u8],
    /// The compact denial to sign and append to the authority section.
    denial: Option<Denial<'a>>,
    /// The RRSIG made for the question of a wildcard answer, to put into its copy.
    online: Option<crate::dns::dnssec::OnlineSignature>,
}

/// What signing a compact denial needs: the zone's keys, the negative TTL, the question name
/// (lowercase wire) and the NSEC's type bitmap (NXNAME, or a wildcard's types).
struct Denial<'a> {
    keys: &'a crate::dns::dnssec::ZoneKeys,
    ttl: u32,
    qname: &'a [u8],
    bitmap: &'a [u8],
}

impl Denial<'_> {
    fn len(&self) -> usize {
        self.keys.denial_len(self.qname.len(), self.bitmap.len())
    }
}

/// The RRL class of a response.
#[inline]
fn classify(code: u16, body: Option<&Body>, qtype: u16) -> Class {
    match code as u8 {
        rcode::NOERROR => match body {
            Some(b) if b.answer_count > 0 => {
                if qtype == rtype::ANY {
                    Class::Any
                } else {
                    Class::Positive
                }
            }
            _ => Class::Nodata,
        },
        rcode::NXDOMAIN => Class::Nxdomain,
        _ => Class::Error,
    }
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
    // Every record after the question is walked and checked (RFC 1035 §4.1.3, RFC 6891 §6.1.1,
    // RFC 8945 §5.1): owner names and compression pointers, lengths within the packet, the RDATA
    // of the types whose layout is fixed, OPT only in additional and at most once, TSIG only as
    // the very last record, and nothing after it.
    let total = an as usize + ns as usize + ar as usize;
    let additional_from = an as usize + ns as usize;
    for i in 0..total {
        let rr = record(req, pos, q.opcode == OPCODE_UPDATE).ok_or(rcode::FORMERR as u16)?;
        let additional = i >= additional_from;
        if rr.rtype == rtype::OPT {
            // RFC 6891 §6.1.1: one OPT, in additional, owned by the root.
            if !additional || q.edns.is_some() || req[pos] != 0 {
                return Err(rcode::FORMERR as u16);
            }
            let ttl = &req[rr.fixed + 4..rr.fixed + 8];
            q.edns = Some(Edns {
                payload: u16::from_be_bytes([req[rr.fixed + 2], req[rr.fixed + 3]]),
                version: ttl[1],
                dnssec_ok: ttl[2] & 0x80 != 0,
            });
            // Options must tile the RDATA exactly.
            let (mut o, next) = (rr.rdata, rr.end);
            while o < next {
                if o + 4 > next {
                    return Err(rcode::FORMERR as u16);
                }
                let code = u16::from_be_bytes([req[o], req[o + 1]]);
                let olen = u16::from_be_bytes([req[o + 2], req[o + 3]]) as usize;
                if code == OPT_NSID {
                    q.nsid = true;
                }
                if code == OPT_ECS && o + 4 + olen <= next {
                    q.ecs =
                        Some(parse_ecs(&req[o + 4..o + 4 + olen]).ok_or(rcode::FORMERR as u16)?);
                }
                o += 4 + olen;
            }
            if o != next {
                return Err(rcode::FORMERR as u16);
            }
        } else if rr.rtype == TYPE_TSIG {
            // RFC 8945 §5.1: the last record of the additional section, class ANY, TTL 0.
            if !additional || i + 1 != total {
                return Err(rcode::FORMERR as u16);
            }
            q.tsig = Some(parse_tsig(req, &rr).ok_or(rcode::FORMERR as u16)?);
        }
        pos = rr.end;
    }
    // Bytes after the last record the counts announce: malformed, as BIND and Knot treat them
    // (EDNS padding goes inside OPT, RFC 7830).
    if pos != req.len() {
        return Err(rcode::FORMERR as u16);
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

/// TSIG (RFC 8945).
const TYPE_TSIG: u16 = 250;
const TYPE_DNAME: u16 = 39;
const TYPE_RRSIG: u16 = 46;
/// RCODE NOTAUTH and TSIG error BADKEY (RFC 8945 §5.2).
const NOTAUTH: u16 = 9;
const BADKEY: u16 = 17;
/// Compression pointers followed in one name at most (each must also point backwards).
const MAX_POINTERS: usize = 127;

/// One resource record found by [`record`]: offsets into the packet.
struct Rr {
    /// Owner name and its uncompressed length.
    owner: usize,
    owner_len: usize,
    /// Start of TYPE, CLASS, TTL, RDLENGTH.
    fixed: usize,
    rtype: u16,
    rdata: usize,
    end: usize,
}

/// A well-formed TSIG record of the query (offsets into it), to echo in the BADKEY answer.
#[derive(Clone, Copy)]
struct Tsig {
    /// Owner (the key name) and its uncompressed length.
    owner: usize,
    owner_len: usize,
    /// Algorithm name (never compressed): `alg..alg_end`, followed by time signed and fudge.
    alg: usize,
    alg_end: usize,
    /// Original ID.
    original_id: usize,
}

impl Tsig {
    /// Wire length of the unsigned error TSIG we answer with.
    fn answer_len(&self) -> usize {
        self.owner_len + 10 + (self.alg_end - self.alg) + 8 + 2 + 2 + 2 + 2
    }
}

/// Walks the name at `pos`: `(position after it, uncompressed length)`, or `None` when it is
/// malformed. Its bytes up to the first pointer must lie before `end`; a pointer (only if
/// `pointers`) must point past the header and strictly before itself, at most [`MAX_POINTERS`]
/// of them; the name is at most 255 bytes; label types 0x40/0x80 are rejected.
fn name_at(req: &[u8], mut pos: usize, end: usize, pointers: bool) -> Option<(usize, usize)> {
    let mut limit = end;
    let mut after = 0usize;
    let mut len = 0usize;
    let mut hops = 0usize;
    loop {
        let b = *req[..limit].get(pos)? as usize;
        match b & 0xc0 {
            0 => {
                len += 1 + b;
                if len > 255 {
                    return None;
                }
                if b == 0 {
                    return Some((if hops == 0 { pos + 1 } else { after }, len));
                }
                pos += 1 + b;
            }
            0xc0 if pointers => {
                let target = (b & 0x3f) << 8 | *req[..limit].get(pos + 1)? as usize;
                if target < HEADER || target >= pos || hops == MAX_POINTERS {
                    return None;
                }
                if hops == 0 {
                    after = pos + 2;
                    limit = req.len();
                }
                hops += 1;
                pos = target;
            }
            _ => return None,
        }
    }
}

/// One resource record at `pos`, checked: owner name, fixed fields and RDATA within the
/// packet, and the RDATA of the types with a fixed layout (names, lengths) well formed. In an
/// UPDATE (`update`), records of class ANY or NONE may have no RDATA (RFC 2136 §2.4, §2.5):
/// we answer those NOTIMP, but must read them to reach (and sign after) their TSIG.
fn record(req: &[u8], pos: usize, update: bool) -> Option<Rr> {
    let (fixed, owner_len) = name_at(req, pos, req.len(), true)?;
    let f = req.get(fixed..fixed + 10)?;
    let rtype = u16::from_be_bytes([f[0], f[1]]);
    let class = u16::from_be_bytes([f[2], f[3]]);
    let rdlen = u16::from_be_bytes([f[8], f[9]]) as usize;
    let rdata = fixed + 10;
    let end = rdata + rdlen;
    if end > req.len() {
        return None;
    }
    // A name that exactly fills the RDATA from `at`.
    let fills = |at: usize, pointers: bool| {
        at <= end && name_at(req, at, end, pointers).is_some_and(|(e, _)| e == end)
    };
    let ok = (update && rdlen == 0 && (class == CLASS_ANY || class == CLASS_NONE))
        || match rtype {
            rtype::A => rdlen == 4,
            rtype::AAAA => rdlen == 16,
            rtype::NS | rtype::CNAME | rtype::PTR => fills(rdata, true),
            TYPE_DNAME => fills(rdata, false),
            rtype::MX => fills(rdata + 2, true),
            rtype::SRV => fills(rdata + 6, false),
            rtype::SOA => name_at(req, rdata, end, true)
                .and_then(|(m, _)| name_at(req, m, end, true))
                .is_some_and(|(r, _)| r + 20 == end),
            // Type covered .. key tag (18 bytes), signer's name, a non-empty signature.
            TYPE_RRSIG => {
                rdlen > 18 && name_at(req, rdata + 18, end, false).is_some_and(|(s, _)| s < end)
            }
            _ => true,
        };
    ok.then_some(Rr {
        owner: pos,
        owner_len,
        fixed,
        rtype,
        rdata,
        end,
    })
}

/// RFC 8945 §4.2: class ANY, TTL 0, and RDATA of algorithm name, time signed, fudge, MAC size,
/// MAC, original ID, error, other length, other data, tiling the RDATA exactly.
fn parse_tsig(req: &[u8], rr: &Rr) -> Option<Tsig> {
    let f = &req[rr.fixed..rr.fixed + 8];
    if u16::from_be_bytes([f[2], f[3]]) != CLASS_ANY || f[4..8] != [0, 0, 0, 0] {
        return None;
    }
    let (alg_end, _) = name_at(req, rr.rdata, rr.end, false)?;
    let u16_at = |i: usize| u16::from_be_bytes([req[i], req[i + 1]]) as usize;
    if alg_end + 10 > rr.end {
        return None;
    }
    let mac_end = alg_end + 10 + u16_at(alg_end + 8);
    if mac_end + 6 > rr.end || mac_end + 6 + u16_at(mac_end + 4) != rr.end {
        return None;
    }
    Some(Tsig {
        owner: rr.owner,
        owner_len: rr.owner_len,
        alg: rr.rdata,
        alg_end,
        original_id: mac_end,
    })
}

/// Copies the (valid, possibly compressed) name at `pos` uncompressed into `out`; its length.
fn copy_name(req: &[u8], mut pos: usize, out: &mut [u8]) -> usize {
    let mut n = 0;
    loop {
        let b = req[pos] as usize;
        if b & 0xc0 == 0xc0 {
            pos = (b & 0x3f) << 8 | req[pos + 1] as usize;
            continue;
        }
        out[n..n + 1 + b].copy_from_slice(&req[pos..pos + 1 + b]);
        n += 1 + b;
        if b == 0 {
            return n;
        }
        pos += 1 + b;
    }
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
    let nsid_len = if answer.nsid.is_empty() {
        0
    } else {
        4 + answer.nsid.len()
    };
    let opt_len = if edns.is_some() {
        OPT_LEN + ecs_len + nsid_len
    } else {
        0
    };
    let limit = response_limit(transport, edns, limits).min(out.len());
    let denial_len = answer.denial.as_ref().map_or(0, Denial::len);
    let body_len = answer
        .body
        .map_or(0, |b| b.wire.len() + answer.tail.len() + denial_len);
    // The unsigned BADKEY TSIG goes last; in the rare case it does not fit, TC=1 without it.
    let tsig = q.tsig.filter(|_| answer.code == NOTAUTH);
    let tsig_len = tsig.map_or(0, |t| t.answer_len());
    let fixed = HEADER + question.len() + opt_len + tsig_len;
    // What does not fit drops its optional additional records first (target addresses), and
    // only then is truncated. Bodies with optional records carry no SOA tail.
    let (mut wire_len, mut dropped) = (body_len, 0u16);
    if let Some(b) = answer.body
        && fixed + body_len > limit
        && b.optional_count() > 0
    {
        wire_len = b.optional_from as usize + answer.tail.len();
        dropped = b.optional_count();
    }
    let truncated = answer.slip || fixed + wire_len > limit;
    let tsig = tsig.filter(|_| fixed <= limit);
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
    let denial = answer.denial.as_ref().filter(|_| body.is_some());
    let ns = body.map_or(0, |b| b.authority_count)
        + if tail.is_empty() {
            0
        } else {
            answer.tail_count
        }
        + 2 * denial.is_some() as u16;
    out[8..10].copy_from_slice(&ns.to_be_bytes());
    let ar = body.map_or(0, |b| b.additional_count - dropped)
        + edns.is_some() as u16
        + tsig.is_some() as u16;
    out[10..12].copy_from_slice(&ar.to_be_bytes());
    let mut pos = HEADER;
    out[pos..pos + question.len()].copy_from_slice(question);
    pos += question.len();
    if let Some(b) = body {
        let wire = if dropped > 0 {
            &b.wire[..b.optional_from as usize]
        } else {
            &b.wire[..]
        };
        out[pos..pos + wire.len()].copy_from_slice(wire);
        if let Some(o) = &answer.online {
            o.apply(&mut out[pos..pos + wire.len()]);
        }
        pos += wire.len();
        out[pos..pos + tail.len()].copy_from_slice(tail);
        pos += tail.len();
        if let Some(d) = denial {
            // Fits: `denial_len` was counted in the truncation check above. Signing fails only
            // if the key does; the counts then still promise two records, so write an answer
            // without them rather than a broken one.
            match d
                .keys
                .write_denial(d.qname, d.ttl, d.bitmap, out, pos, limit)
            {
                Some(n) => pos += n,
                None => {
                    let ns = ns - 2;
                    out[8..10].copy_from_slice(&ns.to_be_bytes());
                }
            }
        }
    }
    if let Some(e) = edns {
        let ttl = [(code >> 4) as u8, 0, (e.dnssec_ok as u8) << 7, 0];
        out[pos] = 0;
        out[pos + 1..pos + 3].copy_from_slice(&rtype::OPT.to_be_bytes());
        out[pos + 3..pos + 5].copy_from_slice(&limits.edns_payload.to_be_bytes());
        out[pos + 5..pos + 9].copy_from_slice(&ttl);
        out[pos + 9..pos + 11].copy_from_slice(&((ecs_len + nsid_len) as u16).to_be_bytes());
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
        if nsid_len > 0 {
            out[pos..pos + 2].copy_from_slice(&OPT_NSID.to_be_bytes());
            out[pos + 2..pos + 4].copy_from_slice(&(answer.nsid.len() as u16).to_be_bytes());
            out[pos + 4..pos + nsid_len].copy_from_slice(answer.nsid);
            pos += nsid_len;
        }
    }
    if let Some(t) = tsig {
        pos += copy_name(req, t.owner, &mut out[pos..]);
        let rdlen = (t.answer_len() - t.owner_len - 10) as u16;
        out[pos..pos + 2].copy_from_slice(&TYPE_TSIG.to_be_bytes());
        out[pos + 2..pos + 4].copy_from_slice(&CLASS_ANY.to_be_bytes());
        out[pos + 4..pos + 8].fill(0);
        out[pos + 8..pos + 10].copy_from_slice(&rdlen.to_be_bytes());
        pos += 10;
        // Algorithm name, time signed and fudge as the client sent them (RFC 8945 §5.3.2).
        let echoed = &req[t.alg..t.alg_end + 8];
        out[pos..pos + echoed.len()].copy_from_slice(echoed);
        pos += echoed.len();
        out[pos..pos + 2].fill(0); // MAC size 0: unsigned
        out[pos + 2..pos + 4].copy_from_slice(&req[t.original_id..t.original_id + 2]);
        out[pos + 4..pos + 6].copy_from_slice(&BADKEY.to_be_bytes());
        out[pos + 6..pos + 8].fill(0); // other length
        pos += 8;
    }
    pos
}
