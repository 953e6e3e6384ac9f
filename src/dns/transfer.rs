//! Zone transfers over TCP to allowed peers: AXFR (RFC 5936) of every served zone and IXFR
//! (RFC 1995) from a journal of recently published tables, plus the NOTIFY messages (RFC 1996)
//! that tell secondaries to come and get them.
//!
//! A zone-file or federation zone transfers what a client of unknown location gets at each of
//! its names, read back from the table's encoded answers (so a transfer is exactly what is
//! served, and costs no memory while nobody asks); etcd zones transfer their SkyDNS records
//! (`Table::axfr`, with `etcd.axfr_allow`). IXFR diffs the client's table against the current
//! one over the segments the changes since then rebuilt, so it costs what changed; a serial the
//! journal no longer holds gets the whole zone (RFC 1995 §4). A signed zone transfers whole, its
//! RRSIGs with it and an NSEC chain made for the secondary ([`signed_zone_records`]). Never on the query path: the TCP
//! server runs a transfer on a blocking thread over the table it loaded, so a transfer sees one
//! table and never holds up a publish.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use hickory_proto::op::Message;
use hickory_proto::rr::{Name, RecordType};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder, NameEncoding};

use super::encode::to_record;
use crate::model::{DnsName, rtype};
use crate::table::{Answer, Table};

/// Published tables IXFR can start from, oldest first. Tables share the segments a change did
/// not touch, so each kept table costs only what its change rebuilt.
pub struct Journal {
    tables: Mutex<VecDeque<Arc<Table>>>,
    /// How many to keep (a reload may change it; the next push applies it).
    keep: std::sync::atomic::AtomicUsize,
    /// Signed zones: the RRSIG of each NSEC of the chain last transferred, so a transfer signs
    /// only the NSECs a change made (the table holds no chain: its denial is compact).
    nsec_signatures: Mutex<HashMap<DnsName, NsecSignatures>>,
}

/// RRSIG records (uncompressed) by the NSEC record they cover, made in one validity period.
#[derive(Default)]
struct NsecSignatures {
    validity: Option<super::dnssec::Validity>,
    by_nsec: HashMap<Vec<u8>, Vec<Vec<u8>>>,
}

impl Journal {
    pub fn new(keep: usize) -> Self {
        Journal {
            tables: Mutex::new(VecDeque::new()),
            keep: keep.into(),
            nsec_signatures: Mutex::new(HashMap::new()),
        }
    }

    /// Whether tables are kept at all.
    pub fn keeps(&self) -> bool {
        self.keep.load(std::sync::atomic::Ordering::Relaxed) > 0
    }

    pub fn set_keep(&self, keep: usize) {
        self.keep.store(keep, std::sync::atomic::Ordering::Relaxed);
    }

    /// Forgets every kept table (they are dropped here).
    pub fn clear(&self) {
        let old = std::mem::take(&mut *self.tables.lock().unwrap_or_else(|e| e.into_inner()));
        drop(old);
    }

    /// Records a published table; returns those that fell out, for the caller to retire.
    pub fn push(&self, table: &Arc<Table>) -> Vec<Arc<Table>> {
        let keep = self.keep.load(std::sync::atomic::Ordering::Relaxed);
        if keep == 0 {
            return Vec::new();
        }
        let mut tables = self.tables.lock().unwrap_or_else(|e| e.into_inner());
        tables.push_back(table.clone());
        let over = tables.len().saturating_sub(keep);
        tables.drain(..over).collect()
    }

    fn with_serial(&self, serial: u32) -> Option<Arc<Table>> {
        let tables = self.tables.lock().unwrap_or_else(|e| e.into_inner());
        tables.iter().find(|t| t.serial == serial).cloned()
    }
}

/// Who may transfer what.
#[derive(Clone, Copy)]
pub struct Access<'a> {
    /// Zone-file and federation zones.
    pub zones: &'a [(IpAddr, u8)],
    /// etcd zones (`etcd.axfr_allow`).
    pub etcd: &'a [(IpAddr, u8)],
    /// When set, every transfer must be signed with this key (and is answered signed).
    pub key: Option<&'a super::tsig::Key>,
}

impl Access<'_> {
    pub fn any(&self) -> bool {
        !self.zones.is_empty() || !self.etcd.is_empty()
    }
}

/// The query type of `req` if it asks for a zone transfer (a cheap look before any parsing).
pub fn transfer_type(req: &[u8]) -> Option<u16> {
    let mut pos = 12;
    loop {
        let len = *req.get(pos)? as usize;
        if len == 0 {
            pos += 1;
            break;
        }
        if len & 0xc0 != 0 {
            return None;
        }
        pos += len + 1;
    }
    let t = u16::from_be_bytes([*req.get(pos)?, *req.get(pos + 1)?]);
    (t == rtype::AXFR || t == rtype::IXFR).then_some(t)
}

/// Where transfer messages go, one by one as they are written (unframed); `false`: the peer
/// is gone, stop.
pub type Sink<'a> = &'a mut dyn FnMut(Vec<u8>) -> bool;

/// Answers `req` into `sink` when it is an AXFR or IXFR of a zone `peer` may transfer, and
/// returns true; false otherwise (nothing was sent; the normal path then answers: REFUSED).
/// A whole zone is streamed segment by segment, so memory stays at one segment's records.
pub fn answer(
    table: &Table,
    journal: &Journal,
    req: &[u8],
    peer: IpAddr,
    access: Access<'_>,
    sink: Sink<'_>,
) -> bool {
    use super::tsig::{Chain, Verdict, verify};
    let keys: &[super::tsig::Key] = access.key.map_or(&[], std::slice::from_ref);
    match verify(req, keys, super::tsig::now()) {
        Verdict::Unsigned if access.key.is_some() => {
            tracing::info!(%peer, "zone transfer refused: not signed with the configured TSIG key");
            false
        }
        Verdict::Unsigned => transfer(table, journal, req, peer, access, None, sink),
        Verdict::Refused(answer) => {
            tracing::info!(%peer, "zone transfer refused: TSIG does not verify");
            sink(answer);
            true
        }
        Verdict::Signed { mac, key, time } => match super::tsig::strip(req) {
            Some(stripped) => {
                let chain = Chain::new(&key, &mac, time);
                transfer(table, journal, &stripped, peer, access, Some(chain), sink)
            }
            None => false,
        },
    }
}

fn transfer(
    table: &Table,
    journal: &Journal,
    req: &[u8],
    peer: IpAddr,
    access: Access<'_>,
    signer: Option<super::tsig::Chain>,
    sink: Sink<'_>,
) -> bool {
    let Ok(msg) = Message::from_vec(req) else {
        return false;
    };
    if msg.metadata.message_type != hickory_proto::op::MessageType::Query || msg.queries.len() != 1
    {
        return false;
    }
    let q = &msg.queries[0];
    let qtype = q.query_type();
    if qtype != RecordType::AXFR && qtype != RecordType::IXFR {
        return false;
    }
    let Ok(qname) = q.name().to_bytes() else {
        return false;
    };
    let zone = DnsName::from_wire_lowercase(&qname);
    let question = &req[12..12 + qname.len() + 4];
    let mut out = Writer::new(msg.metadata.id, question, signer, sink);
    if let Some(records) = table.axfr.get(zone.wire()) {
        if !crate::config::allowed(access.etcd, peer) {
            return false;
        }
        tracing::info!(zone = %zone, %peer, records = records.len(), "zone transfer (etcd)");
        for r in records.iter().chain(records.first()) {
            out.push(&emit(&to_record(r)));
        }
        out.finish();
        return true;
    }
    if !crate::config::allowed(access.zones, peer) {
        return false;
    }
    let Some(zi) = table.transferable_zone(zone.wire()) else {
        return false;
    };
    let Some(soa) = soa_of(table, zi, &zone) else {
        return false;
    };
    let since = match qtype {
        RecordType::IXFR => msg.authorities.iter().find_map(|r| match &r.data {
            hickory_proto::rr::RData::SOA(s) => Some(s.serial),
            _ => None,
        }),
        _ => None,
    };
    if let Some(serial) = since {
        // RFC 1995 §2: a client as new as we are gets our SOA alone.
        if serial == table.serial || serial_newer(serial, table.serial) {
            out.push(&soa);
            out.finish();
            return true;
        }
    }
    if let Some((keys, nsec_ttl)) = table.zone_keys(zi as u32) {
        // A signed zone goes whole, with its signatures and an NSEC chain made for it. An
        // IXFR gets the whole zone too (RFC 1995 §4): the chain's signatures are randomized,
        // so a difference against an older table could not name what the secondary holds.
        let records = signed_zone_records(table, zi, &zone, keys, nsec_ttl, journal);
        out.push(&soa);
        records.iter().for_each(|r| out.push(r));
        out.push(&soa);
        out.finish();
        tracing::info!(zone = %zone, %peer, records = records.len() + 1,
            ixfr = qtype == RecordType::IXFR, "zone transfer (signed)");
        return true;
    }
    if let Some(serial) = since
        && let Some(old) = journal.with_serial(serial)
        && let Some(old_zi) = old.transferable_zone(zone.wire())
        && let Some(old_soa) = soa_of(&old, old_zi, &zone)
    {
        let changed = |s: usize| !table.shares_segment(&old, s);
        let before = zone_records(&old, old_zi, changed);
        let after = zone_records(table, zi, changed);
        let deleted: Vec<&Vec<u8>> = before.difference(&after).collect();
        let added: Vec<&Vec<u8>> = after.difference(&before).collect();
        tracing::info!(zone = %zone, %peer, from = serial, to = table.serial,
            deleted = deleted.len(), added = added.len(), "incremental zone transfer");
        out.push(&soa);
        out.push(&old_soa);
        deleted.iter().for_each(|r| out.push(r));
        out.push(&soa);
        added.iter().for_each(|r| out.push(r));
        out.push(&soa);
        out.finish();
        return true;
    }
    out.push(&soa);
    let mut records = 1usize;
    for s in 0..crate::table::SEGMENTS {
        for r in zone_records(table, zi, |x| x == s) {
            out.push(&r);
            records += 1;
        }
        if out.closed {
            break;
        }
    }
    out.push(&soa);
    out.finish();
    tracing::info!(zone = %zone, %peer, records, ixfr = since.is_some(), "zone transfer");
    true
}

/// RFC 1982: `a` is newer than `b`.
fn serial_newer(a: u32, b: u32) -> bool {
    a != b && a.wrapping_sub(b) < 1 << 31
}

/// The zone's SOA record (uncompressed wire), read from its apex's answer.
fn soa_of(table: &Table, zone: usize, origin: &DnsName) -> Option<Vec<u8>> {
    let apex = crate::table::segment_of(crate::table::name_hash(origin.wire()));
    let mut out = BTreeSet::new();
    for (name, t, a) in table.zone_answers(zone, |s| s == apex) {
        if t == rtype::SOA && name == origin {
            decode(name, t, a, &mut out);
        }
    }
    out.into_iter().next()
}

/// Every record of zone `zone` in the segments `segments` picks, uncompressed, the apex SOA
/// left out (a transfer puts it first and last).
fn zone_records(table: &Table, zone: usize, segments: impl Fn(usize) -> bool) -> BTreeSet<Vec<u8>> {
    let mut out = BTreeSet::new();
    for (name, t, a) in table.zone_answers(zone, &segments) {
        if t != rtype::SOA {
            decode(name, t, a, &mut out);
        }
    }
    out
}

/// The records `answer` (to `qtype` at `name`) holds of `name` itself, uncompressed: the
/// RRset of that type, or at a zone cut (`qtype` 0, a referral) its NS records and their glue.
/// Rotations of one RRset carry the same records in another order unless it has more than fit
/// in one answer, so the others are read only when the second differs from the first.
fn decode(name: &DnsName, qtype: u16, answer: &Answer, out: &mut BTreeSet<Vec<u8>>) {
    out.extend(decode_rotations(name, qtype, answer, false).0);
}

/// The records of `answer`'s rotations ([`decode`]), from its signed bodies when `signed`;
/// and whether they differ between rotations (their union is then more than any one RRSIG
/// covers).
fn decode_rotations(
    name: &DnsName,
    qtype: u16,
    answer: &Answer,
    signed: bool,
) -> (BTreeSet<Vec<u8>>, bool) {
    let n = answer.rotations();
    let bodies = if signed && answer.signed {
        &answer.bodies[n..2 * n]
    } else {
        answer.unsigned_bodies()
    };
    let mut first = BTreeSet::new();
    let mut differ = false;
    for (i, body) in bodies.iter().enumerate() {
        let mut these = BTreeSet::new();
        decode_body(name, qtype, body, &mut these);
        match i {
            0 => first = these,
            1 if these == first => break,
            _ => {
                differ |= these != first;
                first.extend(these)
            }
        }
    }
    (first, differ)
}

/// An uncompressed record's owner, type and RDATA.
fn parts(r: &[u8]) -> Option<(&[u8], u16, u32, &[u8])> {
    let mut pos = 0;
    while *r.get(pos)? != 0 {
        pos += r[pos] as usize + 1;
    }
    let owner = &r[..=pos];
    let f = r.get(pos + 1..pos + 11)?;
    let rtype = u16::from_be_bytes([f[0], f[1]]);
    let ttl = u32::from_be_bytes([f[4], f[5], f[6], f[7]]);
    let len = u16::from_be_bytes([f[8], f[9]]) as usize;
    Some((owner, rtype, ttl, r.get(pos + 11..pos + 11 + len)?))
}

/// The type an RRSIG record covers; `None` for other records.
fn covered(r: &[u8]) -> Option<u16> {
    match parts(r)? {
        (_, super::dnssec::TYPE_RRSIG, _, rd) if rd.len() >= 2 => {
            Some(u16::from_be_bytes([rd[0], rd[1]]))
        }
        _ => None,
    }
}

/// RFC 4034 §6.1: names compared label by label from the root, each label as lowercase bytes.
fn canonical_order(a: &DnsName, b: &DnsName) -> std::cmp::Ordering {
    let (a, b): (Vec<&[u8]>, Vec<&[u8]>) = (a.labels().collect(), b.labels().collect());
    a.iter().rev().cmp(b.iter().rev())
}

/// Every record of signed zone `zone` but its SOA (which a transfer puts first and last): the
/// RRsets with their RRSIGs as served to DO=1 (the SOA's RRSIG included), and an NSEC chain
/// over its names in canonical order (RFC 4034 §4), each NSEC signed (RRSIGs kept in the
/// journal from the last transfer when the NSEC is unchanged). The compact denial the primary
/// serves names the question and cannot be transferred; a secondary serves this chain's.
fn signed_zone_records(
    table: &Table,
    zone: usize,
    origin: &DnsName,
    keys: &super::dnssec::ZoneKeys,
    nsec_ttl: u32,
    journal: &Journal,
) -> Vec<Vec<u8>> {
    use super::dnssec::{TYPE_NSEC, TYPE_RRSIG};
    let mut records = BTreeSet::new();
    for (name, t, a) in table.zone_answers(zone, |_| true) {
        let (mut these, differ) = decode_rotations(name, t, a, true);
        these.retain(|r| {
            parts(r).is_some_and(|(_, rt, ..)| rt != TYPE_NSEC)
                && covered(r) != Some(TYPE_NSEC)
                && !(t == rtype::SOA && parts(r).is_some_and(|(_, rt, ..)| rt == rtype::SOA))
        });
        if differ {
            // A set larger than one answer: each rotation's RRSIG covers only its part.
            these = resign(name, these, keys);
        }
        records.extend(these);
    }
    // The chain's names: owners of authoritative data and zone cuts, not glue below a cut.
    let mut types: BTreeMap<DnsName, BTreeSet<u16>> = BTreeMap::new();
    for r in &records {
        if let Some((owner, rt, ..)) = parts(r)
            && rt != TYPE_RRSIG
        {
            types
                .entry(DnsName::from_wire_lowercase(owner))
                .or_default()
                .insert(rt);
        }
    }
    types.entry(origin.clone()).or_default().insert(rtype::SOA);
    let cuts: BTreeSet<&DnsName> = types
        .iter()
        .filter(|(n, t)| t.contains(&rtype::NS) && *n != origin)
        .map(|(n, _)| n)
        .collect();
    let below_cut =
        |n: &DnsName| std::iter::successors(n.parent(), DnsName::parent).any(|p| cuts.contains(&p));
    let mut names: Vec<&DnsName> = types.keys().filter(|n| !below_cut(n)).collect();
    names.sort_by(|a, b| canonical_order(a, b));
    let mut cache = journal
        .nsec_signatures
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let old = cache.remove(origin).unwrap_or_default();
    let reuse = old.validity == Some(keys.validity);
    let mut kept = NsecSignatures {
        validity: Some(keys.validity),
        by_nsec: HashMap::with_capacity(names.len()),
    };
    let mut out: Vec<Vec<u8>> = records.into_iter().collect();
    for (i, n) in names.iter().enumerate() {
        let next = names[(i + 1) % names.len()];
        let owner = (*n).clone();
        let set: Vec<u16> = types[*n].iter().copied().collect();
        let mut rdata = next.wire().to_vec();
        rdata.extend_from_slice(&super::dnssec::nsec_bitmap(&set, true));
        let nsec = crate::model::Record {
            name: owner.clone(),
            ttl: nsec_ttl,
            data: crate::model::RData::Opaque {
                rtype: TYPE_NSEC,
                rdata: rdata.clone().into(),
            },
        };
        let wire = emit(&to_record(&nsec));
        let sigs = match old.by_nsec.get(&wire).filter(|_| reuse) {
            Some(s) => s.clone(),
            None => keys
                .sign_canonical(&owner, TYPE_NSEC, nsec_ttl, &[rdata])
                .unwrap_or_default()
                .iter()
                .map(|r| emit(&to_record(r)))
                .collect(),
        };
        out.push(wire.clone());
        out.extend(sigs.iter().cloned());
        kept.by_nsec.insert(wire, sigs);
    }
    cache.insert(origin.clone(), kept);
    out
}

/// `records` (one name's RRset and its RRSIGs, uncompressed) with the RRSIGs made again over
/// the whole set.
fn resign(
    name: &DnsName,
    records: BTreeSet<Vec<u8>>,
    keys: &super::dnssec::ZoneKeys,
) -> BTreeSet<Vec<u8>> {
    let mut by_type: BTreeMap<u16, (u32, Vec<Vec<u8>>)> = BTreeMap::new();
    let mut out = BTreeSet::new();
    for r in records {
        match parts(&r) {
            Some((_, super::dnssec::TYPE_RRSIG, ..)) => {}
            Some((_, rt, ttl, rd)) => {
                by_type
                    .entry(rt)
                    .or_insert((ttl, Vec::new()))
                    .1
                    .push(rd.to_vec());
                out.insert(r);
            }
            None => {}
        }
    }
    for (rt, (ttl, mut set)) in by_type {
        set.sort();
        set.dedup();
        for sig in keys.sign_canonical(name, rt, ttl, &set).unwrap_or_default() {
            out.insert(emit(&to_record(&sig)));
        }
    }
    out
}

fn decode_body(name: &DnsName, qtype: u16, body: &crate::table::Body, out: &mut BTreeSet<Vec<u8>>) {
    let mut wire = Vec::with_capacity(12 + name.wire().len() + 4 + body.wire.len());
    wire.extend_from_slice(&[0, 0, 0x84, 0, 0, 1]);
    for n in [
        body.answer_count,
        body.authority_count,
        body.additional_count,
    ] {
        wire.extend_from_slice(&n.to_be_bytes());
    }
    wire.extend_from_slice(name.wire());
    wire.extend_from_slice(&qtype.max(1).to_be_bytes());
    wire.extend_from_slice(&1u16.to_be_bytes());
    wire.extend_from_slice(&body.wire);
    let Ok(msg) = Message::from_vec(&wire) else {
        tracing::warn!(name = %name, qtype, "an answer that does not decode left out of a transfer");
        return;
    };
    let Ok(owner) = Name::from_labels(name.labels()) else {
        return;
    };
    if qtype == 0 {
        let at_cut = msg.authorities.iter().any(|r| r.name == owner);
        if at_cut {
            for r in msg.authorities.iter().chain(&msg.additionals) {
                out.insert(emit(r));
            }
        }
        return;
    }
    for r in &msg.answers {
        if r.name == owner {
            let w = emit(r);
            if u16::from(r.record_type()) == qtype || covered(&w) == Some(qtype) {
                out.insert(w);
            }
        }
    }
}

/// One record, uncompressed, owner lowercased.
fn emit(r: &hickory_proto::rr::Record) -> Vec<u8> {
    let mut r = r.clone();
    r.name = r.name.to_lowercase();
    let mut buf = Vec::with_capacity(64);
    let mut enc = BinEncoder::new(&mut buf);
    enc.set_name_encoding(NameEncoding::Uncompressed);
    if r.emit(&mut enc).is_err() {
        buf.clear();
    }
    buf
}

/// Writes transfer messages of about 16 KiB (BIND's 20 KiB is similar; a TSIG, 100 bytes,
/// fits after any of them), the question in the first, each signed when the request was, and
/// hands each to the sink as soon as it is full.
struct Writer<'s> {
    id: u16,
    question: Vec<u8>,
    cur: Vec<u8>,
    n: u16,
    signer: Option<super::tsig::Chain>,
    sink: Sink<'s>,
    /// The sink said stop: everything after is dropped.
    closed: bool,
}

impl<'s> Writer<'s> {
    const MAX: usize = u16::MAX as usize - 512;
    const TARGET: usize = 16 << 10;

    fn new(id: u16, question: &[u8], signer: Option<super::tsig::Chain>, sink: Sink<'s>) -> Self {
        let mut w = Writer {
            id,
            question: question.to_vec(),
            cur: Vec::new(),
            n: 0,
            signer,
            sink,
            closed: false,
        };
        w.start(true);
        w
    }

    fn start(&mut self, first: bool) {
        self.cur = Vec::with_capacity(Self::TARGET + 512);
        self.cur.extend_from_slice(&self.id.to_be_bytes());
        self.cur
            .extend_from_slice(&[0x84, 0, 0, first as u8, 0, 0, 0, 0, 0, 0]);
        if first {
            self.cur.extend_from_slice(&self.question);
        }
        self.n = 0;
    }

    fn flush(&mut self) {
        let mut m = std::mem::take(&mut self.cur);
        m[6..8].copy_from_slice(&self.n.to_be_bytes());
        if let Some(s) = &mut self.signer {
            s.sign(&mut m);
        }
        if !self.closed && !(self.sink)(m) {
            self.closed = true;
        }
    }

    fn push(&mut self, r: &[u8]) {
        if r.is_empty() || self.closed {
            return;
        }
        if r.len() + 12 > Self::MAX {
            tracing::warn!("a record too large for any message left out of a transfer");
            return;
        }
        if self.n > 0 && (self.cur.len() + r.len() > Self::TARGET || self.n == u16::MAX) {
            self.flush();
            self.start(false);
        }
        self.cur.extend_from_slice(r);
        self.n += 1;
    }

    fn finish(mut self) {
        self.flush();
    }
}

/// A NOTIFY (RFC 1996 §3.7) for `zone` carrying its current `soa` (uncompressed RR), with `id`.
pub fn notify_message(id: u16, zone: &DnsName, soa: Option<&[u8]>) -> Vec<u8> {
    let mut m = Vec::with_capacity(64);
    m.extend_from_slice(&id.to_be_bytes());
    // opcode NOTIFY (4), AA
    m.extend_from_slice(&[4 << 3 | 0x04, 0, 0, 1, 0, soa.is_some() as u8, 0, 0, 0, 0]);
    m.extend_from_slice(zone.wire());
    m.extend_from_slice(&rtype::SOA.to_be_bytes());
    m.extend_from_slice(&1u16.to_be_bytes());
    if let Some(s) = soa {
        m.extend_from_slice(s);
    }
    m
}

/// Whether `resp` answers the NOTIFY `id` (any rcode but SERVFAIL counts: the secondary heard).
pub fn is_notify_ack(resp: &[u8], id: u16) -> bool {
    resp.len() >= 12
        && resp[0..2] == id.to_be_bytes()
        && resp[2] & 0x80 != 0
        && (resp[2] >> 3) & 0x0f == 4
}

/// Every zone a NOTIFY goes out for (zone-file and federation zones, and etcd zones with
/// transfers on), with its current SOA record.
pub fn notify_zones(table: &Table) -> Vec<(DnsName, Option<Vec<u8>>)> {
    let mut out = Vec::new();
    for origin in table.zone_origins() {
        let soa = table
            .transferable_zone(origin.wire())
            .and_then(|zi| soa_of(table, zi, origin));
        if soa.is_some() || table.axfr.contains_key(origin.wire()) {
            out.push((origin.clone(), soa));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::answers::skydns::{Entry, EtcdData};
    use hickory_proto::op::{MessageType, OpCode, Query};

    fn request(zone: &str, t: RecordType) -> Vec<u8> {
        let mut m = Message::new(9, MessageType::Query, OpCode::Query);
        m.add_query(Query::query(Name::from_ascii(zone).unwrap(), t));
        m.to_vec().unwrap()
    }

    #[test]
    fn etcd_zones_transfer_to_allowed_peers_only() {
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
            }
            .into(),
        );
        let table = crate::answers::build(crate::answers::BuildInput {
            zones: &[],
            locator: &crate::geo::Locator::default(),
            signing: &[],
            federations: &[],
            etcd: &[&data],
            cache: None,
            serial: 5,
            generation: 1,
        })
        .table;
        let req = request("example.net.", RecordType::AXFR);
        let allow = [crate::config::parse_cidr("127.0.0.0/8").unwrap()];
        let local: IpAddr = "127.0.0.1".parse().unwrap();
        let journal = Journal::new(0);
        let access = Access {
            zones: &[],
            etcd: &allow,
            key: None,
        };
        let mut msgs = Vec::new();
        assert!(answer(&table, &journal, &req, local, access, &mut |m| {
            msgs.push(m);
            true
        }));
        let r = Message::from_vec(&msgs[0]).unwrap();
        assert_eq!(r.answers.len(), 3);
        let other: IpAddr = "10.1.1.1".parse().unwrap();
        assert!(!answer(&table, &journal, &req, other, access, &mut |_| {
            true
        }));
        assert_eq!(transfer_type(&req), Some(rtype::AXFR));
    }
}
