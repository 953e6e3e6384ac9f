//! Encodes records of the [`crate::model`] into response sections with hickory-proto.
//!
//! Two shapes: [`compressed`] sections that follow a known question (names compressed against
//! it, as the client's question will sit at the same offsets), and [`detached`] sections that
//! can follow any question (no compression pointers at all).
//!
//! Compressed sections, the bulk of a table build, are written by [`Wire`] straight from the
//! model's wire-format names, compressing exactly as hickory's `BinEncoder` does (same
//! pointers, same limits), so a body is byte for byte what the hickory path writes
//! (`fast_bodies_equal_hickory_bodies` checks); records of other types take the hickory path.

use hickory_proto::op::Query;
use hickory_proto::rr::rdata::{A, AAAA, CNAME, MX, NS, NULL, PTR, SOA, SRV, TXT};
use hickory_proto::rr::{Name, RData as HRData, Record as HRecord, RecordType};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder, NameEncoding};

use crate::model::{DnsName, RData, Record};
use crate::table::Body;

thread_local! {
    /// hickory `Name`s of the current table build. A build encodes every owner name once per
    /// record and rotation, and building `Name`s from labels was a third of the build time at
    /// 10k services; cloning a cached one is much cheaper. Emptied by [`forget_names`] after
    /// each build so it never outlives the names of one table, and whenever it reaches
    /// [`NAMES_KEPT`]: a name's records are encoded one after another, so a small cache catches
    /// the repeats, and a first build of a million names does not hold a million `Name`s.
    static NAMES: std::cell::RefCell<rustc_hash::FxHashMap<DnsName, Name>> = Default::default();
}

const NAMES_KEPT: usize = 4096;

pub(crate) fn to_name(n: &DnsName) -> Name {
    NAMES.with_borrow_mut(|cache| {
        if cache.len() >= NAMES_KEPT && !cache.contains_key(n) {
            cache.clear();
        }
        cache
            .entry(n.clone())
            .or_insert_with(|| {
                let mut name = Name::from_labels(n.labels()).unwrap_or_else(|_| Name::root());
                name.set_fqdn(true);
                name
            })
            .clone()
    })
}

/// Whether `wire` decodes as a DNS message with hickory (for the fuzz checks).
pub fn decode_check(wire: &[u8]) -> Result<(), String> {
    hickory_proto::op::Message::from_vec(wire)
        .map(drop)
        .map_err(|e| e.to_string())
}

/// Drops the names cached by the build that just finished (see `NAMES`).
pub fn forget_names() {
    NAMES.with_borrow_mut(|cache| *cache = Default::default());
}

fn to_rdata(d: &RData) -> HRData {
    match d {
        RData::A(a) => HRData::A(A(*a)),
        RData::Aaaa(a) => HRData::AAAA(AAAA(*a)),
        RData::Cname(n) => HRData::CNAME(CNAME(to_name(n))),
        RData::Ns(n) => HRData::NS(NS(to_name(n))),
        RData::Ptr(n) => HRData::PTR(PTR(to_name(n))),
        RData::Mx {
            preference,
            exchange,
        } => HRData::MX(MX::new(*preference, to_name(exchange))),
        RData::Srv {
            priority,
            weight,
            port,
            target,
        } => HRData::SRV(SRV::new(*priority, *weight, *port, to_name(target))),
        RData::Txt(parts) => HRData::TXT(TXT::from_bytes(parts.iter().map(|p| &p[..]).collect())),
        RData::Soa(s) => HRData::SOA(SOA::new(
            to_name(&s.mname),
            to_name(&s.rname),
            s.serial,
            s.refresh as i32,
            s.retry as i32,
            s.expire as i32,
            s.minimum,
        )),
        RData::Opaque { rtype, rdata } => HRData::Unknown {
            code: RecordType::from(*rtype),
            rdata: NULL::with(rdata.to_vec()),
        },
    }
}

pub(crate) fn to_record(r: &Record) -> HRecord {
    HRecord::from_rdata(to_name(&r.name), r.ttl, to_rdata(&r.data))
}

/// Answer and authority sections that follow the question `qname`/`qtype` at offset 12.
pub fn compressed(qname: &DnsName, qtype: u16, answer: &[Record], authority: &[Record]) -> Body {
    compressed_full(qname, qtype, answer, authority, &[], false)
}

/// Writes the header and a question into `enc` (names after it compress against it) and returns
/// where the sections start.
fn emit_question(enc: &mut BinEncoder<'_>, query: &Query) -> usize {
    (|| {
        enc.emit_vec(&[0u8; 12])?;
        query.emit(enc)?;
        Ok::<_, hickory_proto::ProtoError>(enc.len())
    })()
    .expect("encoding into a Vec cannot fail")
}

/// Like [`compressed`], with an additional section too; `optional`: the query path may leave
/// the additional records out when the response would not fit otherwise (addresses of NS, MX
/// and SRV targets).
pub fn compressed_full(
    qname: &DnsName,
    qtype: u16,
    answer: &[Record],
    authority: &[Record],
    additional: &[Record],
    optional: bool,
) -> Body {
    Wire::compressed(qname, qtype, [answer, authority, additional], optional).unwrap_or_else(|| {
        hickory_compressed_full(qname, qtype, answer, authority, additional, optional)
    })
}

/// hickory's `BinEncoder` keeps at most this many compression targets…
const POINTERS_KEPT: usize = 64;
/// …stores one only while the message is shorter than this…
const POINTER_OFFSETS: usize = 0x3FFF;
/// …and compresses only this many names of a message.
const NAMES_COMPRESSED: usize = 120;

/// A message being written as hickory's `BinEncoder` writes it (offsets count the 12-byte
/// header), from names already in wire format: no hickory `Name` or `Record` is built.
struct Wire<'n> {
    buf: Vec<u8>,
    /// Compression targets in the order stored: where a name suffix starts, and its labels
    /// (without the root's zero byte) as first written.
    pointers: [(u16, &'n [u8]); POINTERS_KEPT],
    stored: usize,
    compressed: usize,
}

impl<'n> Wire<'n> {
    /// [`compressed_full`]'s body; `None` when a record is of a kind left to hickory (opaque
    /// RDATA, a TXT string over 255 bytes) or the message would pass 65,535 bytes (where
    /// hickory fails), so that path decides.
    fn compressed(
        qname: &'n DnsName,
        qtype: u16,
        sections: [&'n [Record]; 3],
        optional: bool,
    ) -> Option<Body> {
        let mut w = Wire {
            buf: Vec::with_capacity(512),
            pointers: [(0, &[]); POINTERS_KEPT],
            stored: 0,
            compressed: 0,
        };
        w.buf.extend_from_slice(&[0; 12]);
        w.name(qname.wire(), true);
        w.buf.extend_from_slice(&qtype.to_be_bytes());
        w.buf.extend_from_slice(&1u16.to_be_bytes()); // class IN
        let start = w.buf.len();
        let mut additional_at = start;
        for (section, records) in sections.iter().enumerate() {
            if section == 2 {
                additional_at = w.buf.len();
            }
            for r in records.iter() {
                w.record(r)?;
            }
        }
        if w.buf.len() > u16::MAX as usize {
            return None;
        }
        let [answer, authority, additional] = sections;
        let mut body = Body::new(
            answer.len() as u16,
            authority.len() as u16,
            additional.len() as u16,
            w.buf[start..].into(),
        );
        if optional && !additional.is_empty() {
            body.optional_from = (additional_at - start) as u16;
        }
        Some(body)
    }

    /// Writes `wire` (a lowercased wire-format name) as hickory's `Name::emit` does: every
    /// label suffix, from the longest, is looked up among the stored targets (when `compress`,
    /// and while fewer than [`NAMES_COMPRESSED`] names were), the first match becomes a
    /// pointer, and each suffix passed on the way is stored as a target.
    fn name(&mut self, wire: &'n [u8], compress: bool) {
        let compress = compress && self.compressed < NAMES_COMPRESSED;
        if compress {
            self.compressed += 1;
        }
        let base = self.buf.len();
        let labels = &wire[..wire.len() - 1];
        // hickory writes the labels first and stores targets while the end of them is within
        // pointer range.
        let storable = base + labels.len() < POINTER_OFFSETS;
        let mut pos = 0;
        while pos < labels.len() {
            let suffix = &labels[pos..];
            if compress
                && let Some(&(at, _)) = self.pointers[..self.stored]
                    .iter()
                    .find(|(_, m)| *m == suffix)
                && at & 0xC000 == 0
            {
                self.buf.extend_from_slice(&labels[..pos]);
                self.buf.extend_from_slice(&(0xC000 | at).to_be_bytes());
                return;
            }
            if storable && self.stored < POINTERS_KEPT {
                self.pointers[self.stored] = ((base + pos) as u16, suffix);
                self.stored += 1;
            }
            pos += labels[pos] as usize + 1;
        }
        self.buf.extend_from_slice(wire);
    }

    fn record(&mut self, r: &'n Record) -> Option<()> {
        self.name(r.name.wire(), true);
        self.buf.extend_from_slice(&r.data.rtype().to_be_bytes());
        self.buf.extend_from_slice(&1u16.to_be_bytes()); // class IN
        self.buf.extend_from_slice(&r.ttl.to_be_bytes());
        let len_at = self.buf.len();
        self.buf.extend_from_slice(&[0, 0]);
        match &r.data {
            RData::A(a) => self.buf.extend_from_slice(&a.octets()),
            RData::Aaaa(a) => self.buf.extend_from_slice(&a.octets()),
            RData::Cname(n) | RData::Ns(n) | RData::Ptr(n) => self.name(n.wire(), true),
            RData::Mx {
                preference,
                exchange,
            } => {
                self.buf.extend_from_slice(&preference.to_be_bytes());
                self.name(exchange.wire(), true);
            }
            RData::Srv {
                priority,
                weight,
                port,
                target,
            } => {
                for v in [priority, weight, port] {
                    self.buf.extend_from_slice(&v.to_be_bytes());
                }
                // RFC 2782: not compressed (hickory still stores its suffixes as targets).
                self.name(target.wire(), false);
            }
            RData::Txt(parts) => {
                for p in parts {
                    let len = u8::try_from(p.len()).ok()?;
                    self.buf.push(len);
                    self.buf.extend_from_slice(p);
                }
            }
            RData::Soa(s) => {
                self.name(s.mname.wire(), true);
                self.name(s.rname.wire(), true);
                for v in [s.serial, s.refresh, s.retry, s.expire, s.minimum] {
                    self.buf.extend_from_slice(&v.to_be_bytes());
                }
            }
            RData::Opaque { .. } => return None,
        }
        let len = u16::try_from(self.buf.len() - len_at - 2).ok()?;
        self.buf[len_at..len_at + 2].copy_from_slice(&len.to_be_bytes());
        Some(())
    }
}

/// [`compressed_full`] through hickory's encoder: records [`Wire`] leaves to it.
fn hickory_compressed_full(
    qname: &DnsName,
    qtype: u16,
    answer: &[Record],
    authority: &[Record],
    additional: &[Record],
    optional: bool,
) -> Body {
    let mut buf = Vec::with_capacity(512);
    let mut enc = BinEncoder::new(&mut buf);
    let header_and_question = emit_question(
        &mut enc,
        &Query::query(to_name(qname), RecordType::from(qtype)),
    );
    let mut additional_at = 0;
    for (i, r) in answer.iter().chain(authority).chain(additional).enumerate() {
        if i == answer.len() + authority.len() {
            additional_at = enc.len();
        }
        to_record(r)
            .emit(&mut enc)
            .expect("encoding into a Vec cannot fail");
    }
    let mut body = Body::new(
        answer.len() as u16,
        authority.len() as u16,
        additional.len() as u16,
        buf[header_and_question..].into(),
    );
    if optional && !additional.is_empty() {
        body.optional_from = (additional_at - header_and_question) as u16;
    }
    body
}

/// The CHAOS-class TXT answer of `name` (server identity), following its own question.
pub fn chaos_txt(name: &DnsName, text: &str) -> Body {
    let mut rec = HRecord::from_rdata(
        to_name(name),
        0,
        HRData::TXT(TXT::new(vec![text.to_string()])),
    );
    rec.dns_class = hickory_proto::rr::DNSClass::CH;
    let mut query = Query::query(to_name(name), RecordType::TXT);
    query.set_query_class(hickory_proto::rr::DNSClass::CH);
    let mut buf = Vec::with_capacity(64);
    let mut enc = BinEncoder::new(&mut buf);
    let start = emit_question(&mut enc, &query);
    rec.emit(&mut enc).expect("encoding into a Vec cannot fail");
    Body::new(1, 0, 0, buf[start..].into())
}

/// Answer records without compression, valid after any question (the SOA that CoreDNS gives
/// for an SOA question about any name of its zones).
pub fn detached_answer(answer: &[Record]) -> Body {
    let mut body = detached(answer);
    body.answer_count = body.authority_count;
    body.authority_count = 0;
    body
}

/// Answer and additional sections valid after any question: records owned by `owner` point at
/// the question name (offset 12), every other name is written in full. Records are taken in
/// order while the body stays within `max` bytes; the second value counts records left out.
/// Serves stored wildcards (whose answers carry the name asked) and very large answers (linear
/// cost, where name compression's table would make encoding quadratic). `optional`: as for
/// [`compressed_full`].
pub fn owner_relative(
    owner: &DnsName,
    answer: &[Record],
    additional: &[Record],
    max: usize,
    optional: bool,
) -> (Body, usize) {
    let (body, left_out, _) =
        owner_relative_sections(owner, [answer, &[], additional], max, optional);
    (body, left_out)
}

/// [`owner_relative`] with an authority section too; the third value is where each answer
/// record that was written starts in the body.
pub fn owner_relative_sections(
    owner: &DnsName,
    sections: [&[Record]; 3],
    max: usize,
    optional: bool,
) -> (Body, usize, Vec<usize>) {
    let mut wire = Vec::with_capacity(256);
    let mut buf = Vec::with_capacity(128);
    let (mut counts, mut left_out) = ([0u16; 3], 0usize);
    let mut additional_at = 0;
    let mut starts = Vec::new();
    for (section, records) in sections.into_iter().enumerate() {
        if section == 2 {
            additional_at = wire.len();
        }
        for r in records {
            buf.clear();
            let mut enc = BinEncoder::new(&mut buf);
            enc.set_name_encoding(NameEncoding::Uncompressed);
            let is_owner = r.name == *owner;
            let mut rec = to_record(r);
            if is_owner {
                // Encoded with the root as owner (one zero byte) that then becomes a pointer.
                rec.name = Name::root();
            }
            if rec.emit(&mut enc).is_err() {
                left_out += 1;
                continue;
            }
            let len = if is_owner { buf.len() + 1 } else { buf.len() };
            if wire.len() + len > max || counts[section] == u16::MAX {
                left_out += 1;
                continue;
            }
            if section == 0 {
                starts.push(wire.len());
            }
            if is_owner {
                wire.extend_from_slice(&[0xc0, 0x0c]);
                wire.extend_from_slice(&buf[1..]);
            } else {
                wire.extend_from_slice(&buf);
            }
            counts[section] += 1;
        }
    }
    let mut body = Body::new(counts[0], counts[1], counts[2], wire.into());
    if optional && counts[2] > 0 {
        body.optional_from = additional_at as u16;
    }
    (body, left_out, starts)
}

/// An answer (and additional) section for `qname`/`qtype` of at most `max` bytes: compressed
/// when it is small, otherwise [`owner_relative`]. The second value counts records left out.
pub fn bounded(
    qname: &DnsName,
    qtype: u16,
    answer: &[Record],
    additional: &[Record],
    max: usize,
) -> (Body, usize) {
    const SMALL: usize = 64;
    if answer.len() + additional.len() <= SMALL {
        // Uncompressed sizes bound the compressed one: if they fit, compression cannot fail.
        let mut total = 0usize;
        let mut buf = Vec::with_capacity(128);
        let fits = answer.iter().chain(additional).all(|r| {
            buf.clear();
            let mut enc = BinEncoder::new(&mut buf);
            enc.set_name_encoding(NameEncoding::Uncompressed);
            let ok = to_record(r).emit(&mut enc).is_ok();
            total += buf.len();
            ok
        });
        if fits && total <= max {
            return (
                compressed_full(qname, qtype, answer, &[], additional, false),
                0,
            );
        }
    }
    owner_relative(qname, answer, additional, max, false)
}

/// Authority records without compression, valid after any question.
pub fn detached(authority: &[Record]) -> Body {
    detached_referral(authority, &[])
}

/// A referral valid after any question: the delegation's NS records in authority and their
/// glue in additional, uncompressed. Glue is never left out (RFC 9471): what does not fit is
/// truncated.
pub fn detached_referral(authority: &[Record], glue: &[Record]) -> Body {
    let mut buf = Vec::with_capacity(256);
    let mut enc = BinEncoder::new(&mut buf);
    enc.set_name_encoding(NameEncoding::Uncompressed);
    for r in authority.iter().chain(glue) {
        to_record(r)
            .emit(&mut enc)
            .expect("encoding into a Vec cannot fail");
    }
    Body::new(0, authority.len() as u16, glue.len() as u16, buf.into())
}

/// Converts a record parsed by hickory (zone files) into the model; `None` for classes and
/// types fedns does not serve (the caller reports them).
pub(crate) fn from_hickory(r: &HRecord) -> Option<Record> {
    let name = DnsName::from_wire_lowercase(&r.name.to_bytes().ok()?);
    let name_of =
        |n: &Name| DnsName::from_wire_lowercase(&n.to_bytes().unwrap_or_else(|_| vec![0]));
    let data = match &r.data {
        HRData::A(a) => RData::A(a.0),
        HRData::AAAA(a) => RData::Aaaa(a.0),
        HRData::CNAME(n) => RData::Cname(name_of(&n.0)),
        HRData::NS(n) => RData::Ns(name_of(&n.0)),
        HRData::PTR(n) => RData::Ptr(name_of(&n.0)),
        HRData::MX(mx) => RData::Mx {
            preference: mx.preference,
            exchange: name_of(&mx.exchange),
        },
        HRData::SRV(s) => RData::Srv {
            priority: s.priority,
            weight: s.weight,
            port: s.port,
            target: name_of(&s.target),
        },
        HRData::TXT(t) => RData::Txt(t.txt_data.to_vec()),
        HRData::SOA(s) => RData::Soa(Box::new(crate::model::Soa {
            mname: name_of(&s.mname),
            rname: name_of(&s.rname),
            serial: s.serial,
            refresh: s.refresh as u32,
            retry: s.retry as u32,
            expire: s.expire as u32,
            minimum: s.minimum,
        })),
        other => {
            let mut buf = Vec::new();
            let mut enc = BinEncoder::new(&mut buf);
            enc.set_name_encoding(NameEncoding::Uncompressed);
            other.emit(&mut enc).ok()?;
            RData::Opaque {
                rtype: u16::from(other.record_type()),
                rdata: buf.into(),
            }
        }
    };
    Some(Record {
        name,
        ttl: r.ttl,
        data,
    })
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;
    use crate::model::Soa;

    use crate::test_rng::Rng;

    /// Names from a few labels over two zones, so suffixes repeat as they do in a table.
    fn name(rng: &mut Rng) -> DnsName {
        const LABELS: [&str; 8] = [
            "www", "a", "svc-1", "myfed", "region-0", "zone-b", "_http", "x",
        ];
        const ZONES: [&str; 3] = ["example.com", "svc.example.com", "other.org"];
        if rng.below(20) == 0 {
            return DnsName::root();
        }
        let mut text = String::new();
        for _ in 0..rng.below(4) {
            text.push_str(LABELS[rng.below(LABELS.len())]);
            text.push('.');
        }
        text.push_str(ZONES[rng.below(ZONES.len())]);
        DnsName::parse(&text).unwrap()
    }

    fn rdata(rng: &mut Rng) -> RData {
        match rng.below(9) {
            0 => RData::A(Ipv4Addr::from(rng.next() as u32)),
            1 => RData::Aaaa(Ipv6Addr::from(rng.next() as u128)),
            2 => RData::Cname(name(rng)),
            3 => RData::Ns(name(rng)),
            4 => RData::Ptr(name(rng)),
            5 => RData::Mx {
                preference: rng.next() as u16,
                exchange: name(rng),
            },
            6 => RData::Srv {
                priority: rng.next() as u16,
                weight: rng.next() as u16,
                port: rng.next() as u16,
                target: name(rng),
            },
            // Long strings push later names past the last offset a pointer may take.
            7 => RData::Txt(
                (0..rng.below(4))
                    .map(|_| vec![b'x'; rng.below(256)].into_boxed_slice())
                    .collect(),
            ),
            _ => RData::Soa(Box::new(Soa {
                mname: name(rng),
                rname: name(rng),
                serial: rng.next() as u32,
                refresh: rng.next() as u32,
                retry: rng.next() as u32,
                expire: rng.next() as u32,
                minimum: rng.next() as u32,
            })),
        }
    }

    fn records(rng: &mut Rng, most: usize) -> Vec<Record> {
        (0..rng.below(most + 1))
            .map(|_| Record {
                name: name(rng),
                ttl: rng.next() as u32,
                data: rdata(rng),
            })
            .collect()
    }

    /// The hand-written writer and hickory's encoder give the same bytes: small answers, and
    /// ones past hickory's limits (64 stored targets, 120 compressed names, offsets beyond
    /// 0x3FFF).
    #[test]
    fn fast_bodies_equal_hickory_bodies() {
        let mut rng = Rng(0x5eed_f00d);
        let mut longest = 0;
        for case in 0..3000 {
            let most = if case % 10 == 0 { 400 } else { 8 };
            let qname = name(&mut rng);
            let qtype = rng.next() as u16;
            let (answer, authority, additional) = (
                records(&mut rng, most),
                records(&mut rng, most / 4),
                records(&mut rng, most / 2),
            );
            let optional = rng.below(2) == 0;
            let Some(fast) =
                Wire::compressed(&qname, qtype, [&answer, &authority, &additional], optional)
            else {
                panic!("case {case}: no fast body");
            };
            let slow =
                hickory_compressed_full(&qname, qtype, &answer, &authority, &additional, optional);
            assert_eq!(
                fast, slow,
                "case {case}: {qname} {answer:?} {authority:?} {additional:?}"
            );
            longest = longest.max(fast.wire.len());
        }
        assert!(
            longest > 0x4000,
            "no body reached past pointer range: {longest}"
        );
    }

    /// What the fast writer leaves to hickory still gets hickory's body.
    #[test]
    fn opaque_records_take_the_hickory_path() {
        let qname = DnsName::parse("a.example.com").unwrap();
        let answer = [Record {
            name: qname.clone(),
            ttl: 60,
            data: RData::Opaque {
                rtype: 99,
                rdata: vec![1, 2, 3].into(),
            },
        }];
        assert!(Wire::compressed(&qname, 99, [&answer, &[], &[]], false).is_none());
        assert_eq!(
            compressed_full(&qname, 99, &answer, &[], &[], false),
            hickory_compressed_full(&qname, 99, &answer, &[], &[], false)
        );
    }
}
