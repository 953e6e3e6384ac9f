//! The SkyDNS layout that the CoreDNS etcd plugin serves, and the answers it gives, computed
//! ahead of time.
//!
//! Keys are names with their labels reversed under a prefix (`/skydns/com/example/www/x1`); values
//! are JSON objects (`host, port, priority, weight, text, mail, ttl, targetstrip, group`). This module
//! is pure: [`update`] takes the in-memory copy of the keys and brings up to date, for every name
//! that CoreDNS would answer positively or with NODATA, the outcome per query type (only the
//! names reading a changed key; with deferral on, aggregates are left to a [`Job`]). It mirrors
//! CoreDNS's `plugin/etcd/etcd.go` (`Records`, `get`, `loopNodes`, `TTL`, `shouldInclude`),
//! `plugin/etcd/msg/service.go` (`Group`, `targetStrip`, `split255`, `HostType`) and
//! `plugin/backend_lookup.go` (`A`, `AAAA`, `TXT`, `SRV`, `MX`, `CNAME`, `PTR`, `NS`, `SOA`,
//! `checkForApex`); each function below names the one it follows.
//!
//! Deliberate differences (documented in the README): an etcd lease is not used as a TTL
//! (CoreDNS casts the lease *ID* to a TTL); a value that is not valid JSON is skipped with a log
//! line instead of failing every query that touches it; CNAME/SRV/MX targets outside the served
//! zones are not resolved through an upstream (the CNAME is returned alone, no glue); `*`/`any`
//! query labels are answered when they are the leftmost label (`*.X`, `any.X`); answers larger
//! than a DNS message are cut to what fits.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde_json::Value;

use crate::model::{DnsName, RData, Record, rtype};

/// CoreDNS `priority`: default SRV priority / MX preference.
const DEFAULT_PRIORITY: i64 = 10;
/// CoreDNS `ttl`: TTL of an entry without one.
pub const DEFAULT_TTL: u32 = 300;
/// CoreDNS `len(previousRecords) > 7`: longest CNAME chain followed.
const MAX_CHAIN: usize = 7;
/// Most answer records kept per answer (more cannot fit a 64 KiB message anyway).
pub const MAX_RECORDS: usize = 4096;
/// Bound on entries visited for one answer (CNAME fan-out can multiply work).
const BUDGET: usize = 2_000_000;
/// A name whose last answers read at least this many entries is an aggregate (a zone apex,
/// its `*.`/`any.` forms, a CNAME chain into it): with `defer`, [`update`] leaves it pending
/// rather than re-answering it on the critical path (see [`Job`]).
pub const AGGREGATE_MIN: usize = 1024;
/// Identities of caches, so that a [`Job`] made for one is never folded into another.
static CACHE_IDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// One etcd value, as CoreDNS's `msg.Service` decodes it.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Entry {
    pub host: String,
    pub port: i64,
    pub priority: i64,
    pub weight: i64,
    pub text: String,
    pub mail: bool,
    pub ttl: u32,
    pub targetstrip: i64,
    pub group: String,
    /// `host` as an address, parsed once at decode (subtree answers read every entry below
    /// them, so parsing at answer time was a large part of a put's cost). `None` with an
    /// address in `host` (an entry built by hand) is parsed when answering.
    pub address: Option<IpAddr>,
}

/// Decodes a value the way Go's `encoding/json` fills `msg.Service`: unknown fields ignored,
/// field names matched without regard to case, `null` leaves the zero value, a value of the wrong
/// type is an error.
pub fn parse_value(bytes: &[u8]) -> Result<Entry, String> {
    let v: Value = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    let obj = match v {
        Value::Object(o) => o,
        Value::Null => return Ok(Entry::default()),
        other => return Err(format!("expected a JSON object, found {other}")),
    };
    let field = |name: &str| -> Option<&Value> {
        obj.get(name).or_else(|| {
            obj.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v)
        })
    };
    let string = |name: &str| -> Result<String, String> {
        match field(name) {
            None | Some(Value::Null) => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(other) => Err(format!("{name}: expected a string, found {other}")),
        }
    };
    let int = |name: &str| -> Result<i64, String> {
        match field(name) {
            None | Some(Value::Null) => Ok(0),
            Some(Value::Number(n)) => n
                .as_i64()
                .ok_or_else(|| format!("{name}: {n} is not an integer")),
            Some(other) => Err(format!("{name}: expected a number, found {other}")),
        }
    };
    let mail = match field("mail") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => return Err(format!("mail: expected true or false, found {other}")),
    };
    let ttl = int("ttl")?;
    let host = string("host")?;
    Ok(Entry {
        address: host.parse().ok(),
        host,
        port: int("port")?,
        priority: int("priority")?,
        weight: int("weight")?,
        text: string("text")?,
        mail,
        ttl: u32::try_from(ttl).map_err(|_| format!("ttl: {ttl} is outside 0..=4294967295"))?,
        targetstrip: int("targetstrip")?,
        group: string("group")?,
    })
}

/// `/prefix` normalized: one leading slash, no trailing slash (CoreDNS joins with `path.Join`).
pub fn normalize_prefix(prefix: &str) -> String {
    let parts: Vec<&str> = prefix.split('/').filter(|p| !p.is_empty()).collect();
    format!("/{}", parts.join("/"))
}

/// CoreDNS `msg.Path`: the key of a name (`www.example.com` → `/skydns/com/example/www`).
pub fn path_of(name: &DnsName, prefix: &str) -> String {
    let mut labels: Vec<String> = name
        .labels()
        .map(|l| String::from_utf8_lossy(l).into_owned())
        .collect();
    labels.reverse();
    let mut p = prefix.to_string();
    for l in labels {
        p.push('/');
        p.push_str(&l);
    }
    p
}

/// The name a key stands for (CoreDNS `msg.Domain`), lowercased; `None` for keys outside the
/// prefix or with segments that are not valid labels.
pub fn name_of_key(key: &str, prefix: &str) -> Option<DnsName> {
    let rest = key.strip_prefix(prefix)?.strip_prefix('/')?;
    if rest.is_empty() {
        return None;
    }
    let mut labels: Vec<&str> = rest.split('/').collect();
    if labels.iter().any(|l| l.is_empty()) {
        return None;
    }
    labels.reverse();
    DnsName::parse(&labels.join(".")).ok()
}

/// Every valid key under a prefix with its entry. Keys and entries are `Arc`s so that the etcd
/// reader's copy-on-write of the map (the merger holds the last one sent) copies pointers, not
/// strings: at 100k keys a deep copy was tens of milliseconds per put.
pub type Entries = BTreeMap<std::sync::Arc<str>, std::sync::Arc<Entry>>;

/// What one etcd data set looks like to the table builder.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct EtcdData {
    /// Normalized key prefix (`/skydns`).
    pub prefix: String,
    /// Zones served from this prefix.
    pub zones: Vec<DnsName>,
    /// Every valid key under the prefix, in etcd's (byte) order.
    pub entries: std::sync::Arc<Entries>,
    /// Stored `*` labels are RFC 4592 wildcards (beyond CoreDNS, off by default).
    pub wildcards: bool,
    /// Zone transfers are on: the builder lists each zone's records.
    pub axfr: bool,
}

/// The records a zone transfer of `zone` carries (besides the SOA around them): for every key in
/// the zone, what its own name holds (A/AAAA for an address, CNAME for a name, TXT for text),
/// in key order. Subtree answers, groups and SRV/MX synthesis are query-time rules that a zone
/// transfer cannot express.
pub fn transfer_records(data: &EtcdData, zone: &DnsName) -> Vec<Record> {
    let mut out = Vec::new();
    for (key, e) in data.entries.iter() {
        let Some(name) = name_of_key(key, &data.prefix) else {
            continue;
        };
        if zone_of(&data.zones, &name) != Some(zone) {
            continue;
        }
        let ttl = if e.ttl == 0 { DEFAULT_TTL } else { e.ttl };
        let data = match host_type(e) {
            HostType::A(a) => RData::A(a),
            HostType::Aaaa(a) => RData::Aaaa(a),
            HostType::Cname => match DnsName::parse(&e.host) {
                Ok(t) if !e.host.is_empty() => RData::Cname(t),
                _ => continue,
            },
            HostType::Txt => RData::Txt(split255(&e.text)),
        };
        out.push(Record { name, ttl, data });
    }
    out
}

/// The outcome of one question, as CoreDNS's etcd handler would write it.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// NOERROR, no answer, SOA in authority.
    NoData,
    /// NXDOMAIN, SOA in authority.
    NxDomain,
    /// SERVFAIL, SOA in authority (CoreDNS: an NS entry that is not an address).
    ServFail,
    /// The zone's SOA as the answer (CoreDNS answers SOA questions so for any name).
    Soa,
    Answer {
        answer: Vec<Record>,
        additional: Vec<Record>,
    },
}

/// All answers of one name.
#[derive(Debug)]
pub struct NameAnswers {
    pub name: DnsName,
    pub by_type: Vec<(u16, Outcome)>,
    /// Any other query type.
    pub other: Outcome,
}

/// The query types CoreDNS's etcd handler distinguishes.
pub const QTYPES: [u16; 9] = [
    rtype::A,
    rtype::AAAA,
    rtype::TXT,
    rtype::CNAME,
    rtype::PTR,
    rtype::MX,
    rtype::SRV,
    rtype::SOA,
    rtype::NS,
];

struct NotFound;
enum NsError {
    NotFound,
    NotAnAddress,
}

/// A service as `loopNodes` hands it on: TTL and priority defaulted.
#[derive(Clone, Copy)]
struct Svc<'a> {
    key: &'a str,
    e: &'a Entry,
    /// Slashes in `key` (its depth, for `msg.Group`).
    depth: u32,
    ttl: u32,
    priority: i64,
}

enum HostType {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    Cname,
    Txt,
}

/// CoreDNS `Service.HostType`: `net.ParseIP`, IPv4-mapped IPv6 counts as IPv4.
fn host_type(e: &Entry) -> HostType {
    match e.address.or_else(|| e.host.parse::<IpAddr>().ok()) {
        Some(IpAddr::V4(a)) => HostType::A(a),
        Some(IpAddr::V6(a)) => match a.to_ipv4_mapped() {
            Some(v4) => HostType::A(v4),
            None => HostType::Aaaa(a),
        },
        None if e.text.is_empty() => HostType::Cname,
        None => HostType::Txt,
    }
}

/// CoreDNS `targetStrip`: drop `n` leftmost labels, unless that would leave nothing.
fn target_strip(name: &DnsName, n: i64) -> DnsName {
    if n <= 0 {
        return name.clone();
    }
    let count = name.labels().count() as i64;
    if n >= count {
        return name.clone();
    }
    let mut out = name.clone();
    for _ in 0..n {
        out = out.parent().unwrap_or(out);
    }
    out
}

/// CoreDNS `split255`, including its empty last chunk when the length is a multiple of 255.
fn split255(s: &str) -> Vec<Box<[u8]>> {
    let b = s.as_bytes();
    if b.len() < 255 {
        return vec![b.into()];
    }
    let mut out = Vec::new();
    let (mut p, mut i) = (0, 255);
    loop {
        if i <= b.len() {
            out.push(b[p..i].into());
        } else {
            out.push(b[p..].into());
            break;
        }
        p += 255;
        i += 255;
    }
    out
}

struct Ctx<'a, 's> {
    data: &'a EtcdData,
    zone: &'a DnsName,
    budget: Cell<usize>,
    /// `*`/`any` labels of the name asked are plain labels (stored wildcard answers).
    literal: bool,
    /// Key paths read (for incremental rebuilds).
    reads: RefCell<Vec<String>>,
    /// `services` results by (name, exact, TXT?).
    memo: RefCell<ServicesMemo<'a>>,
    /// What other names of the same update already walked.
    shared: &'s Shared<'a>,
}

/// A services list, shared by the query types and names that read it.
type List<'a> = std::rc::Rc<Vec<Svc<'a>>>;

type ServicesMemo<'a> = HashMap<(DnsName, bool, bool), Option<List<'a>>>;

/// `loopNodes`'s input for one key path: the entries visited (key, entry, slashes in the key),
/// or `None` when the path has no key (NXDOMAIN).
struct Walk<'a> {
    kvs: Option<Vec<(&'a str, &'a Entry, u32)>>,
    /// Budget the walk spent (one per entry below the path).
    spent: usize,
    /// The budget did not cut it short (only such walks, and their lists, are shared).
    complete: bool,
}

/// What one [`update`] computed for a key path, kept for every name it answers. A zone's apex,
/// its `*.` and `any.` forms and every CNAME chain into the zone read the same subtree; at 100k
/// keys that walk (and the services list it becomes) was most of the cost of a put. A name
/// reuses a walk only when its budget would have let it make the same walk, so answers do not
/// depend on the order names are answered in.
#[derive(Default)]
struct Shared<'a> {
    walks: RefCell<HashMap<(String, bool), std::rc::Rc<Walk<'a>>>>,
    /// (path, exact, TXT?, the labels after a `*`/`any` cut, `*` for either) → list.
    lists: RefCell<HashMap<ListKey, Option<List<'a>>>>,
}

type ListKey = (String, bool, bool, Option<Vec<String>>);

/// Walks shorter than this are made again rather than kept: a first load answers every key's
/// own name, and keeping those tiny walks cost more than it saved.
const SHARE_MIN: usize = 64;

impl<'a> Ctx<'a, '_> {
    fn spend(&self, n: usize) -> bool {
        let left = self.budget.get();
        self.budget.set(left.saturating_sub(n));
        left >= n
    }

    /// [`Ctx::services_uncached`], remembered for the other query types of the same name (only
    /// TXT filters differently).
    fn services(&self, qname: &DnsName, exact: bool, qtype: u16) -> Result<List<'a>, NotFound> {
        let key = (qname.clone(), exact, qtype == rtype::TXT);
        if let Some(r) = self.memo.borrow().get(&key) {
            return r.clone().ok_or(NotFound);
        }
        let r = self.services_uncached(qname, exact, qtype);
        self.memo.borrow_mut().insert(key, r.as_ref().ok().cloned());
        r
    }

    /// The entries at and below `path` as `loopNodes` visits them, spending one unit of budget
    /// per entry below it; a walk the budget cut short is not shared.
    fn walk(&self, path: &str, exact: bool) -> std::rc::Rc<Walk<'a>> {
        let wkey = (path.to_string(), exact);
        if let Some(w) = self.shared.walks.borrow().get(&wkey).cloned()
            && self.budget.get() >= w.spent
        {
            self.spend(w.spent);
            return w;
        }
        let entries = &self.data.entries;
        let slashes = |k: &str| k.bytes().filter(|b| *b == b'/').count() as u32;
        let mut kvs: Vec<(&'a str, &'a Entry, u32)> = Vec::new();
        let (mut spent, mut cut) = (0usize, false);
        if !exact {
            let p = format!("{path}/");
            let base = slashes(&p);
            for (k, e) in entries.range::<str, _>((
                std::ops::Bound::Included(p.as_str()),
                std::ops::Bound::Unbounded,
            )) {
                if !k.starts_with(&p) {
                    break;
                }
                if !self.spend(1) {
                    cut = true;
                    break;
                }
                spent += 1;
                kvs.push((&**k, &**e, base + slashes(&k[p.len()..])));
            }
        }
        let kvs = if kvs.is_empty() {
            entries
                .get_key_value(path)
                .map(|(k, e)| vec![(&**k, &**e, slashes(k))])
        } else {
            Some(kvs)
        };
        let w = std::rc::Rc::new(Walk {
            kvs,
            spent,
            complete: !cut,
        });
        if !cut && spent >= SHARE_MIN {
            self.shared.walks.borrow_mut().insert(wkey, w.clone());
        }
        w
    }

    /// CoreDNS `Records` + `get` + `loopNodes` + `msg.Group` (= `Services`).
    fn services_uncached(
        &self,
        qname: &DnsName,
        exact: bool,
        qtype: u16,
    ) -> Result<List<'a>, NotFound> {
        let prefix = &self.data.prefix;
        let full = path_of(qname, prefix);
        // PathWithWildcard: cut the path at the first `*`/`any` label from the top.
        let mut path = prefix.clone();
        let mut star = false;
        let mut rev: Vec<&[u8]> = qname.labels().collect();
        rev.reverse();
        for l in &rev {
            if !self.literal && (*l == b"*" || *l == b"any") {
                star = true;
                break;
            }
            path.push('/');
            path.push_str(&String::from_utf8_lossy(l));
        }
        self.reads.borrow_mut().push(path.clone());
        let segments: Vec<&str> = full.split('/').collect();
        // The star filter only compares the labels after the cut (the ones before are the
        // path every key visited starts with).
        let cut_at = path.split('/').count();
        let tail = star.then(|| {
            segments[cut_at..]
                .iter()
                .map(|n| if *n == "any" { "*" } else { *n }.to_string())
                .collect::<Vec<_>>()
        });
        let lkey = (path.clone(), exact, qtype == rtype::TXT, tail);
        let walk = self.walk(&path, exact);
        if walk.complete
            && let Some(r) = self.shared.lists.borrow().get(&lkey)
        {
            return r.clone().ok_or(NotFound);
        }
        let r = (|| {
            let kvs = walk.kvs.as_ref().ok_or(NotFound)?;
            let mut sx = Vec::with_capacity(kvs.len());
            'nodes: for &(key, e, depth) in kvs {
                if star {
                    let parts: Vec<&str> = key.split('/').collect();
                    for (i, n) in segments.iter().enumerate() {
                        if i > parts.len() - 1 {
                            continue 'nodes; // name is longer than key
                        }
                        if *n == "*" || *n == "any" {
                            continue;
                        }
                        if parts[i] != *n {
                            continue 'nodes;
                        }
                    }
                }
                // shouldInclude
                if !((qtype == rtype::TXT && !e.text.is_empty()) || !e.host.is_empty()) {
                    continue;
                }
                sx.push(Svc {
                    key,
                    e,
                    depth,
                    ttl: if e.ttl == 0 { DEFAULT_TTL } else { e.ttl },
                    priority: if e.priority == 0 {
                        DEFAULT_PRIORITY
                    } else {
                        e.priority
                    },
                });
            }
            Ok(std::rc::Rc::new(group(sx)))
        })();
        if walk.complete && walk.spent >= SHARE_MIN {
            self.shared
                .lists
                .borrow_mut()
                .insert(lkey, r.as_ref().ok().cloned());
        }
        r
    }

    /// CoreDNS `checkForApex`: the apex answers A/AAAA from `apex.dns.<zone>` when that exists.
    fn apex_or_services(&self, qname: &DnsName, qtype: u16) -> Result<List<'a>, NotFound> {
        if qname == self.zone
            && let Ok(apex) = self.zone.prepend("apex.dns")
            && let Ok(s) = self.services(&apex, false, qtype)
        {
            return Ok(s);
        }
        self.services(qname, false, qtype)
    }

    /// CoreDNS `A` / `AAAA` (which one: `qtype`), CNAME chasing inside the zone included.
    fn address(
        &self,
        qname: &DnsName,
        qtype: u16,
        chain: &mut Vec<DnsName>,
    ) -> Result<Vec<Record>, NotFound> {
        let services = self.apex_or_services(qname, qtype)?;
        let mut records = Vec::new();
        let mut dup: HashSet<&str> = HashSet::new();
        for &s in services.iter() {
            if records.len() >= MAX_RECORDS || !self.spend(1) {
                break;
            }
            match host_type(s.e) {
                HostType::Cname => {
                    let Ok(target) = DnsName::parse(&s.e.host) else {
                        continue;
                    };
                    // x CNAME x, or a target inside the name's own subtree: a loop.
                    if target.is_within(qname) {
                        continue;
                    }
                    if chain.len() > MAX_CHAIN || chain.contains(&target) {
                        continue;
                    }
                    let cname = Record {
                        name: qname.clone(),
                        ttl: s.ttl,
                        data: RData::Cname(target.clone()),
                    };
                    if target.is_within(self.zone) {
                        chain.push(target.clone());
                        let next = self.address(&target, qtype, chain);
                        chain.pop();
                        if let Ok(next) = next
                            && !next.is_empty()
                        {
                            records.push(cname);
                            records.extend(next);
                        }
                    } else {
                        // Out of zone: CoreDNS asks its upstream; we serve the CNAME alone.
                        records.push(cname);
                    }
                }
                HostType::A(ip) if qtype == rtype::A && dup.insert(&s.e.host) => {
                    records.push(Record {
                        name: qname.clone(),
                        ttl: s.ttl,
                        data: RData::A(ip),
                    });
                }
                HostType::Aaaa(ip) if qtype == rtype::AAAA && dup.insert(&s.e.host) => {
                    records.push(Record {
                        name: qname.clone(),
                        ttl: s.ttl,
                        data: RData::Aaaa(ip),
                    });
                }
                _ => {}
            }
        }
        Ok(records)
    }

    /// CoreDNS `TXT`.
    fn txt(&self, qname: &DnsName, chain: &mut Vec<DnsName>) -> Result<Vec<Record>, NotFound> {
        let services = self.services(qname, false, rtype::TXT)?;
        let mut records = Vec::new();
        let mut dup: HashSet<&str> = HashSet::new();
        for &s in services.iter() {
            if records.len() >= MAX_RECORDS || !self.spend(1) {
                break;
            }
            match host_type(s.e) {
                HostType::Cname => {
                    let Ok(target) = DnsName::parse(&s.e.host) else {
                        continue;
                    };
                    if target.is_within(qname) || chain.len() > MAX_CHAIN || chain.contains(&target)
                    {
                        continue;
                    }
                    let cname = Record {
                        name: qname.clone(),
                        ttl: s.ttl,
                        data: RData::Cname(target.clone()),
                    };
                    if target.is_within(self.zone) {
                        chain.push(target.clone());
                        let next = self.txt(&target, chain);
                        chain.pop();
                        if let Ok(next) = next
                            && !next.is_empty()
                        {
                            records.push(cname);
                            records.extend(next);
                        }
                    } else {
                        records.push(cname);
                    }
                }
                HostType::Txt if dup.insert(&s.e.text) => {
                    records.push(Record {
                        name: qname.clone(),
                        ttl: s.ttl,
                        data: RData::Txt(split255(&s.e.text)),
                    });
                }
                _ => {}
            }
        }
        Ok(records)
    }

    /// The name a key stands for (`msg.Domain`).
    fn key_name(&self, key: &str) -> Option<DnsName> {
        name_of_key(key, &self.data.prefix)
    }

    /// CoreDNS `SRV`: weights split within each priority, IP hosts get a name from their key.
    fn srv(&self, qname: &DnsName) -> Result<(Vec<Record>, Vec<Record>), NotFound> {
        let services = self.services(qname, false, rtype::SRV)?;
        let mut totals: BTreeMap<i64, i64> = BTreeMap::new();
        for s in services.iter() {
            let w = if s.e.weight != 0 { s.e.weight } else { 100 };
            *totals.entry(s.priority).or_insert(0) += w;
        }
        let mut records = Vec::new();
        let mut extra = Vec::new();
        let mut dup: HashSet<(DnsName, u16, Option<String>)> = HashSet::new();
        let mut looked_up: HashSet<DnsName> = HashSet::new();
        for s in services.iter() {
            if records.len() >= MAX_RECORDS || !self.spend(1) {
                break;
            }
            if s.e.port == -1 {
                continue;
            }
            let mut w1 = 100.0 / totals[&s.priority] as f64;
            if s.e.weight == 0 {
                w1 *= 100.0;
            } else {
                w1 *= s.e.weight as f64;
            }
            // Go's uint16(math.Floor(x)) for an in-range float; at least 1.
            let mut weight = go_u16(w1.floor());
            if weight == 0 {
                weight = 1;
            }
            let srv = |target: DnsName| Record {
                name: qname.clone(),
                ttl: s.ttl,
                data: RData::Srv {
                    priority: s.priority as u16,
                    weight,
                    port: s.e.port as u16,
                    target,
                },
            };
            match host_type(s.e) {
                HostType::Cname => {
                    let Ok(host) = DnsName::parse(&s.e.host) else {
                        continue;
                    };
                    let target = target_strip(&host, s.e.targetstrip);
                    records.push(srv(target.clone()));
                    if !looked_up.insert(target.clone()) {
                        continue;
                    }
                    if target.is_within(self.zone)
                        && let Ok(addrs) = self.address(&target, rtype::A, &mut Vec::new())
                    {
                        extra.extend(addrs);
                    }
                }
                HostType::A(_) | HostType::Aaaa(_) => {
                    let Some(domain) = self.key_name(s.key) else {
                        continue;
                    };
                    let target = target_strip(&domain, s.e.targetstrip);
                    let port = s.e.port as u16;
                    if dup.insert((target.clone(), port, None)) {
                        records.push(srv(target.clone()));
                    }
                    if dup.insert((target.clone(), 0, Some(s.e.host.clone()))) {
                        extra.push(address_record(&target, s));
                    }
                }
                HostType::Txt => {}
            }
        }
        Ok((records, extra))
    }

    /// CoreDNS `MX`: entries with `"mail": true`; preference is the priority.
    fn mx(&self, qname: &DnsName) -> Result<(Vec<Record>, Vec<Record>), NotFound> {
        let services = self.services(qname, false, rtype::MX)?;
        let mut records = Vec::new();
        let mut extra = Vec::new();
        let mut dup: HashSet<(DnsName, u16, Option<String>)> = HashSet::new();
        let mut looked_up: HashSet<DnsName> = HashSet::new();
        for s in services.iter() {
            if records.len() >= MAX_RECORDS || !self.spend(1) {
                break;
            }
            if !s.e.mail {
                continue;
            }
            let pref = s.priority as u16;
            let mx = |exchange: DnsName| Record {
                name: qname.clone(),
                ttl: s.ttl,
                data: RData::Mx {
                    preference: pref,
                    exchange,
                },
            };
            match host_type(s.e) {
                HostType::Cname => {
                    let Ok(host) = DnsName::parse(&s.e.host) else {
                        continue;
                    };
                    let target = target_strip(&host, s.e.targetstrip);
                    records.push(mx(target.clone()));
                    if !looked_up.insert(target.clone()) {
                        continue;
                    }
                    if target.is_within(self.zone)
                        && let Ok(addrs) = self.address(&target, rtype::A, &mut Vec::new())
                    {
                        extra.extend(addrs);
                    }
                }
                HostType::A(_) | HostType::Aaaa(_) => {
                    let Some(domain) = self.key_name(s.key) else {
                        continue;
                    };
                    let target = target_strip(&domain, s.e.targetstrip);
                    if dup.insert((target.clone(), pref, None)) {
                        records.push(mx(target));
                    }
                    // CoreDNS names the glue after the unstripped key name.
                    if dup.insert((domain.clone(), 0, Some(s.e.host.clone()))) {
                        extra.push(address_record(&domain, s));
                    }
                }
                HostType::Txt => {}
            }
        }
        Ok((records, extra))
    }

    /// CoreDNS `CNAME`: exact key, first service only.
    fn cname(&self, qname: &DnsName) -> Result<Vec<Record>, NotFound> {
        let services = self.services(qname, true, rtype::CNAME)?;
        let mut out = Vec::new();
        if let Some(s) = services.first()
            && s.e.host.parse::<IpAddr>().is_err()
            && let Ok(target) = DnsName::parse(&s.e.host)
        {
            out.push(Record {
                name: qname.clone(),
                ttl: s.ttl,
                data: RData::Cname(target),
            });
        }
        Ok(out)
    }

    /// CoreDNS `PTR`: exact key, every host that is a name.
    fn ptr(&self, qname: &DnsName) -> Result<Vec<Record>, NotFound> {
        let services = self.services(qname, true, rtype::PTR)?;
        let mut out = Vec::new();
        let mut dup: HashSet<&str> = HashSet::new();
        for &s in services.iter() {
            if s.e.host.parse::<IpAddr>().is_ok() || !dup.insert(&s.e.host) {
                continue;
            }
            if let Ok(target) = DnsName::parse(&s.e.host) {
                out.push(Record {
                    name: qname.clone(),
                    ttl: s.ttl,
                    data: RData::Ptr(target),
                });
            }
        }
        Ok(out)
    }

    /// CoreDNS `NS`: the addresses under `ns.dns.<zone>`, named after their keys, with glue.
    fn ns(&self, qname: &DnsName) -> Result<(Vec<Record>, Vec<Record>), NsError> {
        let Ok(nsdns) = self.zone.prepend("ns.dns") else {
            return Err(NsError::NotFound);
        };
        let services = self
            .services(&nsdns, false, rtype::NS)
            .map_err(|_| NsError::NotFound)?;
        let mut records = Vec::new();
        let mut extra = Vec::new();
        let mut seen: HashSet<DnsName> = HashSet::new();
        for s in services.iter() {
            match host_type(s.e) {
                HostType::Cname => return Err(NsError::NotAnAddress),
                HostType::A(_) | HostType::Aaaa(_) => {
                    let Some(domain) = self.key_name(s.key) else {
                        continue;
                    };
                    let target = target_strip(&domain, s.e.targetstrip);
                    extra.push(address_record(&target, s));
                    if seen.insert(target.clone()) {
                        records.push(Record {
                            name: qname.clone(),
                            ttl: s.ttl,
                            data: RData::Ns(target),
                        });
                    }
                }
                HostType::Txt => {}
            }
        }
        Ok((records, extra))
    }
}

/// Go's `uint16(f)` for the values SRV weights can take (non-negative, may exceed 65535).
fn go_u16(f: f64) -> u16 {
    if f.is_finite() && f >= 0.0 {
        (f as u64) as u16
    } else {
        0
    }
}

/// CoreDNS `newAddress`.
fn address_record(name: &DnsName, s: &Svc<'_>) -> Record {
    let data = match host_type(s.e) {
        HostType::A(a) => RData::A(a),
        HostType::Aaaa(a) => RData::Aaaa(a),
        _ => unreachable!("only called for addresses"),
    };
    Record {
        name: name.clone(),
        ttl: s.ttl,
        data,
    }
}

/// CoreDNS `msg.Group`, line for line (including its early `break`).
fn group(sx: Vec<Svc<'_>>) -> Vec<Svc<'_>> {
    if sx.is_empty() {
        return sx;
    }
    let mut group = sx[0].e.group.as_str();
    let mut slashes = sx[0].depth;
    // Go fills `length` only up to its early break; the rest stay 0 and never compare equal.
    let mut measured = sx.len();
    for (i, s) in sx.iter().enumerate() {
        if s.depth < slashes {
            if s.e.group.is_empty() {
                measured = i + 1;
                break;
            }
            slashes = s.depth;
            group = s.e.group.as_str();
        }
    }
    if group.is_empty() {
        return sx;
    }
    let mut ret = Vec::new();
    for (i, s) in sx.iter().enumerate() {
        if s.e.group.is_empty() {
            ret.push(*s);
            continue;
        }
        if i < measured && s.depth == slashes && s.e.group != group {
            return sx;
        }
        if s.e.group == group {
            ret.push(*s);
        }
    }
    ret
}

fn to_outcome(r: Result<Vec<Record>, NotFound>) -> Outcome {
    match r {
        Err(NotFound) => Outcome::NxDomain,
        Ok(v) if v.is_empty() => Outcome::NoData,
        Ok(answer) => Outcome::Answer {
            answer,
            additional: Vec::new(),
        },
    }
}

fn to_outcome2(r: Result<(Vec<Record>, Vec<Record>), NotFound>) -> Outcome {
    match r {
        Err(NotFound) => Outcome::NxDomain,
        Ok((v, _)) if v.is_empty() => Outcome::NoData,
        Ok((answer, additional)) => Outcome::Answer { answer, additional },
    }
}

/// The zone (longest match) of `name` among `zones`.
pub fn zone_of<'z>(zones: &'z [DnsName], name: &DnsName) -> Option<&'z DnsName> {
    zones
        .iter()
        .filter(|z| name.is_within(z))
        .max_by_key(|z| z.wire().len())
}

/// The names answered: every key's name and its ancestors up to its zone, every zone apex, and
/// the leftmost-wildcard forms `*.X` / `any.X` of every name with something below it; plus,
/// when enabled, the stored wildcards (key names whose leftmost label is `*`). [`update`] keeps
/// them with counts of keys at and below each name, so a change touches only its own names.
/// A name to answer: the name and whether it is a stored wildcard (its `*` a plain label).
pub type NameKey = (DnsName, bool);

/// What was computed for one data set, kept between builds so that a change recomputes only
/// the names whose answers read a changed key (and names that appeared).
#[derive(Default)]
pub struct Cache {
    ident: Option<(String, Vec<DnsName>, bool)>,
    entries: std::sync::Arc<Entries>,
    /// Key paths each name's answers read (a read of `p` covers `p` and everything below).
    reads: HashMap<NameKey, Vec<String>>,
    readers: HashMap<String, HashSet<NameKey>>,
    /// The names answered now.
    names: HashSet<NameKey>,
    /// Keys at or below each name (the name exists while it has one).
    support: HashMap<DnsName, u32>,
    /// Keys strictly below each name (its `*`/`any` forms exist while it has one).
    below: HashMap<DnsName, u32>,
    /// Aggregates: names whose last answers read at least the `min` of [`update`] entries.
    heavy: HashSet<NameKey>,
    /// Aggregates whose answers are older than the data: a change they read was deferred.
    pending: HashSet<NameKey>,
    /// This cache's identity (drawn from [`CACHE_IDS`] on every fresh start; 0 before).
    id: u64,
    /// While a [`Job`] is out: the keys changed since it was made (a name it answers is
    /// settled only if none of them is under what its answer read).
    in_flight: Option<Vec<String>>,
}

impl Cache {
    fn forget(&mut self, k: &NameKey) {
        for p in self.reads.remove(k).unwrap_or_default() {
            if let Some(set) = self.readers.get_mut(&p) {
                set.remove(k);
                if set.is_empty() {
                    self.readers.remove(&p);
                }
            }
        }
    }

    fn remember(&mut self, k: NameKey, reads: Vec<String>) {
        for p in &reads {
            self.readers.entry(p.clone()).or_default().insert(k.clone());
        }
        self.reads.insert(k, reads);
    }
}

impl Cache {
    /// Aggregate names whose served answers are older than the data.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }
}

/// The names whose answers changed since the last [`update`] with the same cache.
pub struct Delta {
    /// Everything was recomputed (first build, or prefix/zones/wildcards changed).
    pub full: bool,
    pub changed: Vec<(NameKey, NameAnswers)>,
    pub removed: Vec<NameKey>,
    /// The pending aggregates to answer off the critical path, when none are being answered
    /// already: run it anywhere (it owns what it reads) and hand its [`Settled`] to a later
    /// [`update`].
    pub job: Option<Job>,
}

/// Deferred aggregates to answer from one version of the data.
pub struct Job {
    cache: u64,
    data: EtcdData,
    names: Vec<NameKey>,
}

/// What a [`Job`] answered.
pub struct Settled {
    cache: u64,
    answers: Vec<Answered>,
}

/// One name answered by a [`Job`]: its answers (`None`: outside every zone), the key paths
/// they read and the entries they cost.
type Answered = (NameKey, Option<NameAnswers>, Vec<String>, usize);

impl Job {
    /// Answers the job's names (pure; the walks of a subtree are shared between them).
    pub fn run(self) -> Settled {
        let shared = Shared::default();
        let answers = self
            .names
            .into_iter()
            .map(|k| {
                let (a, reads, cost) = answers_of(&self.data, &shared, k.0.clone(), k.1);
                (k, a, reads, cost)
            })
            .collect();
        Settled {
            cache: self.cache,
            answers,
        }
    }

    /// How many names it answers.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// Whether a read of key path `path` covers `key` (the path itself or anything below it).
fn covers(path: &str, key: &str) -> bool {
    key.strip_prefix(path)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// Keys whose entry differs between `old` and `new` (added, removed or changed).
fn changed_keys<'a>(old: &'a Entries, new: &'a Entries) -> Vec<&'a str> {
    let mut out = Vec::new();
    let (mut a, mut b) = (old.iter().peekable(), new.iter().peekable());
    loop {
        match (a.peek(), b.peek()) {
            (None, None) => break,
            (Some((k, _)), None) => {
                out.push(&***k);
                a.next();
            }
            (None, Some((k, _))) => {
                out.push(&***k);
                b.next();
            }
            (Some((ka, va)), Some((kb, vb))) => match ka.cmp(kb) {
                std::cmp::Ordering::Less => {
                    out.push(&**ka);
                    a.next();
                }
                std::cmp::Ordering::Greater => {
                    out.push(&**kb);
                    b.next();
                }
                std::cmp::Ordering::Equal => {
                    if va != vb {
                        out.push(&**ka);
                    }
                    a.next();
                    b.next();
                }
            },
        }
    }
    out
}

/// Brings `cache` up to `data` and returns the names whose answers were (re)computed and the
/// names that are gone.
///
/// With `defer: Some(min)`, an aggregate (a name whose last answers read `min` entries or more;
/// the server uses [`AGGREGATE_MIN`]) that a change reads is not answered here but left pending, and [`Delta::job`] hands
/// the pending ones out to be answered elsewhere; this cache's jobs' answers are taken out of
/// `settled` and folded in
/// (a name stays pending if a key its answer read changed after its job was made). Without
/// `defer` every pending name is answered here, so the result is what a fresh cache gives.
pub fn update(
    data: &EtcdData,
    cache: &mut Cache,
    defer: Option<usize>,
    settled: &mut Vec<Settled>,
) -> Delta {
    let min = defer.unwrap_or(AGGREGATE_MIN);
    let ident = (data.prefix.clone(), data.zones.clone(), data.wildcards);
    let full = cache.ident.as_ref() != Some(&ident);
    if full {
        *cache = Cache::default();
        cache.entries = Default::default();
        cache.id = CACHE_IDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    let changed_keys: Vec<&str> = if full {
        data.entries.keys().map(|k| &**k).collect()
    } else if std::sync::Arc::ptr_eq(&cache.entries, &data.entries) {
        Vec::new()
    } else {
        changed_keys(&cache.entries, &data.entries)
    };
    if let Some(since) = &mut cache.in_flight {
        since.extend(changed_keys.iter().map(|k| k.to_string()));
    }
    let mut dirty: HashSet<NameKey> = HashSet::new();
    let mut removed: Vec<NameKey> = Vec::new();
    // Names that may have appeared or disappeared: the names of added or removed keys and
    // their ancestors (their `*`/`any` forms follow them).
    let mut touched: HashSet<DnsName> = HashSet::new();
    if full {
        touched.extend(data.zones.iter().cloned());
    }
    for k in &changed_keys {
        let was = cache.entries.contains_key(*k);
        let is = data.entries.contains_key(*k);
        if was != is
            && let Some(name) = name_of_key(k, &data.prefix)
            && let Some(zone) = zone_of(&data.zones, &name)
        {
            let d: i64 = if is { 1 } else { -1 };
            let mut cur = name;
            let mut first = true;
            loop {
                let add = |m: &mut HashMap<DnsName, u32>, n: &DnsName| {
                    let e = m.entry(n.clone()).or_insert(0);
                    *e = (*e as i64 + d).max(0) as u32;
                    if *e == 0 {
                        m.remove(n);
                    }
                };
                add(&mut cache.support, &cur);
                if !first {
                    add(&mut cache.below, &cur);
                }
                touched.insert(cur.clone());
                first = false;
                if cur == *zone {
                    break;
                }
                let Some(parent) = cur.parent() else { break };
                cur = parent;
            }
        }
        if !full {
            // Readers of the key itself or of any path above it.
            let mut p = *k;
            loop {
                if let Some(set) = cache.readers.get(p) {
                    dirty.extend(set.iter().cloned());
                }
                match p.rfind('/') {
                    Some(i) if i >= data.prefix.len() => p = &p[..i],
                    _ => break,
                }
            }
        }
    }
    for n in touched {
        let mut keys: Vec<(NameKey, bool)> = Vec::with_capacity(4);
        let is_zone = data.zones.contains(&n);
        let supported = cache.support.contains_key(&n);
        let below = cache.below.contains_key(&n);
        // `*.X`/`any.X` is also the leftmost-wildcard form of X: it exists while X has keys
        // below it, whichever of the two (X or the key's own name) is looked at first.
        let form_of_parent = matches!(n.labels().next(), Some(b"*" | b"any"))
            && n.parent().is_some_and(|p| cache.below.contains_key(&p));
        keys.push(((n.clone(), false), is_zone || supported || form_of_parent));
        if data.wildcards && n.labels().next() == Some(b"*") {
            keys.push(((n.clone(), true), supported));
        }
        for w in ["*", "any"] {
            if let Ok(f) = n.prepend(w) {
                let exists = below || cache.support.contains_key(&f);
                keys.push(((f, false), exists));
            }
        }
        for (k, exists) in keys {
            match (exists, cache.names.contains(&k)) {
                (true, false) => {
                    cache.names.insert(k.clone());
                    dirty.insert(k);
                }
                (false, true) => {
                    cache.names.remove(&k);
                    dirty.remove(&k);
                    cache.forget(&k);
                    cache.heavy.remove(&k);
                    cache.pending.remove(&k);
                    removed.push(k);
                }
                _ => {}
            }
        }
    }
    dirty.retain(|k| cache.names.contains(k));
    if defer.is_some() && !full {
        // Their last answers stay served (and their reads registered) until a job's arrive.
        dirty.retain(|k| {
            if cache.heavy.contains(k) {
                cache.pending.insert(k.clone());
            }
            !cache.pending.contains(k)
        });
    } else {
        dirty.extend(cache.pending.drain());
    }
    let mut changed = Vec::with_capacity(dirty.len());
    let shared = Shared::default();
    for k in dirty {
        let (answers, reads, cost) = answers_of(data, &shared, k.0.clone(), k.1);
        cache.answered(k, (answers, reads, cost >= min), &mut changed, &mut removed);
    }
    let (mine, others): (Vec<Settled>, Vec<Settled>) = std::mem::take(settled)
        .into_iter()
        .partition(|s| s.cache == cache.id);
    *settled = others;
    for s in mine.into_iter().filter(|_| !full) {
        let since = cache.in_flight.take().unwrap_or_default();
        for (k, answers, reads, cost) in s.answers {
            // Answered here meanwhile (or gone): that answer is newer.
            if !cache.pending.contains(&k) {
                continue;
            }
            let stale = since.iter().any(|key| reads.iter().any(|p| covers(p, key)));
            if !stale {
                cache.pending.remove(&k);
            }
            // Even a stale answer is newer than the one served.
            let heavy = cost >= min;
            cache.answered(k, (answers, reads, heavy), &mut changed, &mut removed);
        }
    }
    let job = (cache.in_flight.is_none() && !cache.pending.is_empty()).then(|| {
        cache.in_flight = Some(Vec::new());
        Job {
            cache: cache.id,
            data: data.clone(),
            names: cache.pending.iter().cloned().collect(),
        }
    });
    cache.entries = data.entries.clone();
    cache.ident = Some(ident);
    Delta {
        full,
        changed,
        removed,
        job,
    }
}

impl Cache {
    /// Records what answering `k` gave, read and whether it is an aggregate.
    fn answered(
        &mut self,
        k: NameKey,
        (answers, reads, heavy): (Option<NameAnswers>, Vec<String>, bool),
        changed: &mut Vec<(NameKey, NameAnswers)>,
        removed: &mut Vec<NameKey>,
    ) {
        self.forget(&k);
        self.remember(k.clone(), reads);
        if heavy {
            self.heavy.insert(k.clone());
        } else {
            self.heavy.remove(&k);
        }
        match answers {
            Some(a) => changed.push((k, a)),
            None => removed.push(k),
        }
    }
}

/// The answers of one name, the key paths they read and the most entries one question cost.
fn answers_of<'a>(
    data: &'a EtcdData,
    shared: &Shared<'a>,
    name: DnsName,
    literal: bool,
) -> (Option<NameAnswers>, Vec<String>, usize) {
    {
        let Some(zone) = zone_of(&data.zones, &name) else {
            return (None, Vec::new(), 0);
        };
        let ctx = Ctx {
            data,
            zone,
            budget: Cell::new(BUDGET),
            literal,
            reads: RefCell::new(Vec::new()),
            memo: RefCell::new(HashMap::new()),
            shared,
        };
        let cost = Cell::new(0usize);
        let reset = || {
            cost.set(cost.get().max(BUDGET - ctx.budget.get()));
            ctx.budget.set(BUDGET)
        };
        let fake_a = match ctx.apex_or_services(&name, rtype::A) {
            Err(NotFound) => Outcome::NxDomain,
            Ok(_) => Outcome::NoData,
        };
        let mut by_type = Vec::with_capacity(QTYPES.len());
        for qtype in QTYPES {
            reset();
            let o = match qtype {
                rtype::A | rtype::AAAA => to_outcome(ctx.address(&name, qtype, &mut Vec::new())),
                rtype::TXT => to_outcome(ctx.txt(&name, &mut Vec::new())),
                rtype::CNAME => to_outcome(ctx.cname(&name)),
                rtype::PTR => to_outcome(ctx.ptr(&name)),
                rtype::MX => to_outcome2(ctx.mx(&name)),
                rtype::SRV => to_outcome2(ctx.srv(&name)),
                rtype::SOA => Outcome::Soa,
                rtype::NS if name == *zone => match ctx.ns(&name) {
                    Err(NsError::NotFound) => Outcome::NxDomain,
                    Err(NsError::NotAnAddress) => Outcome::ServFail,
                    Ok((v, _)) if v.is_empty() => Outcome::NoData,
                    Ok((answer, additional)) => Outcome::Answer { answer, additional },
                },
                _ => fake_a.clone(),
            };
            by_type.push((qtype, o));
        }
        reset();
        let mut reads = ctx.reads.into_inner();
        reads.sort();
        reads.dedup();
        (
            Some(NameAnswers {
                name,
                by_type,
                other: fake_a,
            }),
            reads,
            cost.get(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_decode_like_go() {
        let e = parse_value(br#"{"Host":"10.0.0.1","port":80,"x":[1],"ttl":60}"#).unwrap();
        assert_eq!((e.host.as_str(), e.port, e.ttl), ("10.0.0.1", 80, 60));
        assert!(parse_value(b"{not json").is_err());
        assert!(parse_value(br#"{"port":"80"}"#).is_err());
        assert!(parse_value(br#"{"ttl":-1}"#).is_err());
        assert_eq!(parse_value(b"null").unwrap(), Entry::default());
    }

    #[test]
    fn keys_and_names() {
        let n = DnsName::parse("www.Example.com").unwrap();
        assert_eq!(path_of(&n, "/skydns"), "/skydns/com/example/www");
        assert_eq!(
            name_of_key("/skydns/com/example/www/x1", "/skydns").unwrap(),
            DnsName::parse("x1.www.example.com").unwrap()
        );
        assert!(name_of_key("/skydns2/com", "/skydns").is_none());
        assert!(name_of_key("/skydns/com//x", "/skydns").is_none());
        assert_eq!(normalize_prefix("skydns/"), "/skydns");
    }

    #[test]
    fn split255_and_strip() {
        assert_eq!(split255("abc").len(), 1);
        let s = "a".repeat(255);
        let parts = split255(&s);
        assert_eq!(parts.len(), 2);
        assert!(parts[1].is_empty());
        let n = DnsName::parse("a.b.c").unwrap();
        assert_eq!(target_strip(&n, 2).to_string(), "c.");
        assert_eq!(target_strip(&n, 3).to_string(), "a.b.c.");
    }

    #[test]
    fn huge_answers_are_cut_to_fit_not_fatal() {
        let mut data = EtcdData {
            prefix: "/skydns".into(),
            zones: vec![DnsName::parse("example.net").unwrap()],
            ..Default::default()
        };
        for i in 0..20_000u32 {
            std::sync::Arc::make_mut(&mut data.entries).insert(
                format!("/skydns/net/example/big/h{i}").into(),
                std::sync::Arc::new(Entry {
                    host: format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255),
                    port: 80,
                    text: "x".repeat(i as usize % 50),
                    ..Default::default()
                }),
            );
        }
        let started = std::time::Instant::now();
        let built = crate::answers::build(crate::answers::BuildInput {
            zones: &[],
            locator: &crate::geo::Locator::default(),
            signing: &[],
            federations: &[],
            etcd: &[&data],
            cache: None,
            serial: 1,
            generation: 1,
        });
        assert!(built.warnings.iter().any(|w| w.contains("cut to fit")));
        let name = DnsName::parse("big.example.net").unwrap();
        for t in [rtype::A, rtype::SRV] {
            match built.table.lookup(name.wire(), t, || 0) {
                crate::table::Lookup::Authoritative(a) => {
                    assert!(a.bodies[0].answer_count > 100);
                    assert!(a.bodies[0].wire.len() <= 65535 - 12 - 21);
                }
                other => panic!("{other:?}"),
            }
        }
        eprintln!("20k-entry name built in {:?}", started.elapsed());
    }

    fn entry(host: &str) -> Entry {
        Entry {
            host: host.into(),
            port: 80,
            ..Default::default()
        }
    }

    /// `*.e0` is both a key's own name and e0's leftmost-wildcard form: deleting the key leaves
    /// the form (e0 still has keys below), in whatever order the two are looked at.
    #[test]
    fn a_wildcard_form_outlives_its_own_key() {
        let star = (DnsName::parse("*.e0.example.net").unwrap(), false);
        for _ in 0..32 {
            let mut data = EtcdData {
                prefix: "/skydns".into(),
                zones: vec![DnsName::parse("example.net").unwrap()],
                wildcards: true,
                ..Default::default()
            };
            let entries = std::sync::Arc::make_mut(&mut data.entries);
            entries.insert("/skydns/net/example/e0/x".into(), entry("10.0.0.1").into());
            entries.insert("/skydns/net/example/e0/*".into(), entry("10.0.0.2").into());
            let mut cache = Cache::default();
            update(&data, &mut cache, None, &mut Vec::new());
            assert!(cache.names.contains(&star));
            std::sync::Arc::make_mut(&mut data.entries).remove("/skydns/net/example/e0/*");
            let delta = update(&data, &mut cache, None, &mut Vec::new());
            assert!(cache.names.contains(&star), "the form of e0 is gone");
            assert!(!delta.removed.contains(&star));
            assert!(!cache.names.contains(&(star.0.clone(), true)));
        }
    }

    /// An incremental rebuild answers exactly as a fresh one, also for names that only read a
    /// changed key through a CNAME, SRV target or apex.dns.
    #[test]
    fn incremental_builds_match_fresh_ones() {
        let mut data = EtcdData {
            prefix: "/skydns".into(),
            zones: vec![DnsName::parse("example.net").unwrap()],
            wildcards: true,
            ..Default::default()
        };
        let put = |d: &mut EtcdData, k: &str, h: &str| {
            std::sync::Arc::make_mut(&mut d.entries)
                .insert(format!("/skydns/net/example/{k}").into(), entry(h).into());
        };
        put(&mut data, "a/x1", "10.0.0.1");
        put(&mut data, "www", "a.example.net");
        put(&mut data, "chain", "www.example.net");
        put(&mut data, "svc/s1", "web.example.net");
        put(&mut data, "web", "10.0.3.1");
        put(&mut data, "dns/apex/a1", "10.0.9.1");
        put(&mut data, "*", "10.0.8.1");
        let names: Vec<&str> = vec![
            "a", "x1.a", "www", "chain", "svc", "s1.svc", "web", "", "*", "*.a", "any.svc", "nope",
            "q.nope", "new", "x2.a", "x2.new",
        ];
        let mut cache = crate::answers::BuildCache::default();
        type Step = Box<dyn Fn(&mut EtcdData)>;
        let mut steps: Vec<Step> = vec![
            Box::new(|_| {}),
            Box::new(move |d| put(d, "a/x1", "10.0.0.2")),
            Box::new(move |d| put(d, "web", "10.0.3.2")),
            Box::new(move |d| put(d, "dns/apex/a1", "10.0.9.2")),
            Box::new(move |d| put(d, "new/x2", "10.0.7.1")),
            Box::new(move |d| put(d, "a/x2", "a.example.net")),
            Box::new(|d| {
                std::sync::Arc::make_mut(&mut d.entries).remove("/skydns/net/example/a/x1");
            }),
            Box::new(move |d| put(d, "*", "10.0.8.2")),
            Box::new(|d| {
                std::sync::Arc::make_mut(&mut d.entries).remove("/skydns/net/example/new/x2");
            }),
        ];
        for (i, step) in steps.iter_mut().enumerate() {
            step(&mut data);
            let build = |cache: Option<&mut crate::answers::BuildCache>| {
                crate::answers::build(crate::answers::BuildInput {
                    zones: &[],
                    locator: &crate::geo::Locator::default(),
                    signing: &[],
                    federations: &[],
                    etcd: &[&data],
                    cache,
                    serial: 7,
                    generation: 1,
                })
                .table
            };
            let incremental = build(Some(&mut cache));
            let fresh = build(None);
            for n in &names {
                let name = if n.is_empty() {
                    DnsName::parse("example.net").unwrap()
                } else {
                    DnsName::parse(&format!("{n}.example.net")).unwrap()
                };
                for t in QTYPES.iter().chain(&[rtype::ANY, 99]) {
                    let show = |tb: &crate::table::Table| {
                        format!("{:?}", tb.lookup(name.wire(), *t, || 0))
                    };
                    assert_eq!(
                        show(&incremental),
                        show(&fresh),
                        "step {i}: {name} type {t}"
                    );
                }
            }
        }
    }
}
