//! TSIG (RFC 8945) for zone transfers and NOTIFY: checks a request's signature and signs the
//! messages that answer it, with HMAC-SHA256 from `ring` (the digest input is the protocol's,
//! built here; the cryptography is ring's).
//!
//! Guarantees: a request whose key is unknown, whose MAC does not verify or whose time is
//! outside its fudge is told so (NOTAUTH with BADKEY, BADSIG or BADTIME, unsigned, RFC 8945
//! §5.2) and gets nothing else; every message of an answer to a signed request is signed,
//! each chained to the previous one's MAC (§5.3.1).

use ring::hmac;

use crate::model::DnsName;

const TYPE_TSIG: u16 = 250;
const CLASS_ANY: u16 = 255;
pub const BADSIG: u16 = 16;
pub const BADKEY: u16 = 17;
pub const BADTIME: u16 = 18;
const NOTAUTH: u8 = 9;

/// The one algorithm offered (RFC 8945 §6: mandatory to implement).
pub const HMAC_SHA256: &str = "hmac-sha256.";

/// A shared secret, as `transfers.tsig` names it.
#[derive(Clone)]
pub struct Key {
    pub name: DnsName,
    key: hmac::Key,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Key({}, hmac-sha256)", self.name)
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        // Secrets are compared through what they sign.
        self.name == other.name
            && hmac::sign(&self.key, b"k").as_ref() == hmac::sign(&other.key, b"k").as_ref()
    }
}

impl Key {
    /// `algorithm` must be hmac-sha256; `secret` is base64, as BIND's and Knot's key files
    /// write it.
    pub fn new(name: &str, algorithm: &str, secret: &str) -> Result<Key, String> {
        use base64::Engine;
        if !algorithm
            .trim_end_matches('.')
            .eq_ignore_ascii_case("hmac-sha256")
        {
            return Err(format!(
                "algorithm {algorithm:?} is not supported (hmac-sha256 is)"
            ));
        }
        let name = DnsName::parse(name).map_err(|e| format!("key name {name:?}: {e}"))?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(secret.trim())
            .map_err(|e| format!("secret is not base64: {e}"))?;
        if bytes.len() < 16 {
            return Err(format!(
                "secret is {} bytes; at least 16 are needed (RFC 8945 §6)",
                bytes.len()
            ));
        }
        Ok(Key {
            name,
            key: hmac::Key::new(hmac::HMAC_SHA256, &bytes),
        })
    }
}

/// A TSIG record found at the end of a message.
struct Found<'a> {
    /// Where the TSIG record starts.
    start: usize,
    key_name: DnsName,
    algorithm: DnsName,
    time: u64,
    fudge: u16,
    mac: &'a [u8],
    original_id: u16,
    error: u16,
    other: &'a [u8],
}

fn name_end(msg: &[u8], mut pos: usize) -> Option<usize> {
    loop {
        let len = *msg.get(pos)? as usize;
        if len == 0 {
            return Some(pos + 1);
        }
        if len & 0xc0 == 0xc0 {
            return Some(pos + 2);
        }
        pos += len + 1;
    }
}

/// The owner name at `pos`, uncompressed wire (pointers followed, bounded).
fn read_name(msg: &[u8], mut pos: usize) -> Option<DnsName> {
    let mut out = Vec::new();
    for _ in 0..128 {
        let len = *msg.get(pos)? as usize;
        if len == 0 {
            out.push(0);
            return Some(DnsName::from_wire_lowercase(&out));
        }
        if len & 0xc0 == 0xc0 {
            pos = ((len & 0x3f) << 8) | *msg.get(pos + 1)? as usize;
            continue;
        }
        out.extend_from_slice(msg.get(pos..pos + len + 1)?);
        pos += len + 1;
    }
    None
}

fn u16_at(msg: &[u8], pos: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*msg.get(pos)?, *msg.get(pos + 1)?]))
}

/// The TSIG record of `msg`, if its last record is one.
fn find(msg: &[u8]) -> Option<Found<'_>> {
    let count = |i| u16_at(msg, i).unwrap_or(0) as usize;
    let (qd, records) = (count(4), count(6) + count(8) + count(10));
    if records == 0 {
        return None;
    }
    let mut pos = 12;
    for _ in 0..qd {
        pos = name_end(msg, pos)? + 4;
    }
    let mut last = pos;
    for _ in 0..records {
        last = pos;
        let end = name_end(msg, pos)?;
        let rdlen = u16_at(msg, end + 8)? as usize;
        pos = end + 10 + rdlen;
    }
    let end = name_end(msg, last)?;
    if u16_at(msg, end)? != TYPE_TSIG {
        return None;
    }
    let rdata = end + 10;
    let alg_end = name_end(msg, rdata)?;
    let t = msg.get(alg_end..alg_end + 6)?;
    let time = t.iter().fold(0u64, |a, b| a << 8 | *b as u64);
    let fudge = u16_at(msg, alg_end + 6)?;
    let mac_len = u16_at(msg, alg_end + 8)? as usize;
    let mac = msg.get(alg_end + 10..alg_end + 10 + mac_len)?;
    let p = alg_end + 10 + mac_len;
    let other_len = u16_at(msg, p + 4)? as usize;
    Some(Found {
        start: last,
        key_name: read_name(msg, last)?,
        algorithm: read_name(msg, rdata)?,
        time,
        fudge,
        mac,
        original_id: u16_at(msg, p)?,
        error: u16_at(msg, p + 2)?,
        other: msg.get(p + 6..p + 6 + other_len)?,
    })
}

/// The TSIG variables (RFC 8945 §4.3.3) after the message.
fn variables(out: &mut Vec<u8>, key: &DnsName, time: u64, fudge: u16, error: u16, other: &[u8]) {
    out.extend_from_slice(key.wire());
    out.extend_from_slice(&CLASS_ANY.to_be_bytes());
    out.extend_from_slice(&0u32.to_be_bytes());
    out.extend_from_slice(DnsName::parse(HMAC_SHA256).expect("algorithm name").wire());
    out.extend_from_slice(&time.to_be_bytes()[2..]);
    out.extend_from_slice(&fudge.to_be_bytes());
    out.extend_from_slice(&error.to_be_bytes());
    out.extend_from_slice(&(other.len() as u16).to_be_bytes());
    out.extend_from_slice(other);
}

/// `msg` as it was before its TSIG was added: the record cut, ARCOUNT one less, the original ID.
fn unsigned(msg: &[u8], f: &Found<'_>) -> Vec<u8> {
    let mut m = msg[..f.start].to_vec();
    let ar = u16_at(&m, 10).unwrap_or(1).saturating_sub(1);
    m[10..12].copy_from_slice(&ar.to_be_bytes());
    m[0..2].copy_from_slice(&f.original_id.to_be_bytes());
    m
}

/// `msg` without its TSIG record (as signed), if it has one.
pub fn strip(msg: &[u8]) -> Option<Vec<u8>> {
    find(msg).map(|f| unsigned(msg, &f))
}

/// What a request's TSIG says.
pub enum Verdict {
    /// No TSIG.
    Unsigned,
    /// Signed with `key`; answers chain from this MAC and use this time.
    Signed { mac: Vec<u8>, key: Key, time: u64 },
    /// NOTAUTH with this TSIG error: the unsigned answer to send.
    Refused(Vec<u8>),
}

/// Checks `req`'s TSIG against `keys`; `now` is Unix time.
pub fn verify(req: &[u8], keys: &[Key], now: u64) -> Verdict {
    let Some(f) = find(req) else {
        return Verdict::Unsigned;
    };
    let error = |code: u16| Verdict::Refused(error_answer(req, &f, code));
    let Some(key) = keys.iter().find(|k| k.name == f.key_name) else {
        return error(BADKEY);
    };
    if f.algorithm.wire() != DnsName::parse(HMAC_SHA256).expect("name").wire() {
        return error(BADKEY);
    }
    let mut tbs = unsigned(req, &f);
    variables(&mut tbs, &key.name, f.time, f.fudge, f.error, f.other);
    if hmac::verify(&key.key, &tbs, f.mac).is_err() {
        return error(BADSIG);
    }
    if now.abs_diff(f.time) > f.fudge as u64 {
        return error(BADTIME);
    }
    Verdict::Signed {
        mac: f.mac.to_vec(),
        key: key.clone(),
        time: now,
    }
}

/// The unsigned NOTAUTH answer to `req` with TSIG error `code` (RFC 8945 §5.2): header,
/// question, and the TSIG record echoing the request's, MAC empty.
fn error_answer(req: &[u8], f: &Found<'_>, code: u16) -> Vec<u8> {
    let qd = u16_at(req, 4).unwrap_or(0);
    let mut pos = 12;
    for _ in 0..qd {
        pos = name_end(req, pos)
            .map_or(req.len(), |e| e + 4)
            .min(req.len());
    }
    let mut m = req[..pos].to_vec();
    m[2] = 0x80 | (req[2] & 0x78);
    m[3] = NOTAUTH;
    m[6..12].copy_from_slice(&[0, 0, 0, 0, 0, 1]);
    tsig_record(
        &mut m,
        &f.key_name,
        f.time,
        f.fudge,
        &[],
        f.original_id,
        code,
    );
    m
}

fn tsig_record(
    m: &mut Vec<u8>,
    key: &DnsName,
    time: u64,
    fudge: u16,
    mac: &[u8],
    id: u16,
    error: u16,
) {
    let alg = DnsName::parse(HMAC_SHA256).expect("name");
    m.extend_from_slice(key.wire());
    m.extend_from_slice(&TYPE_TSIG.to_be_bytes());
    m.extend_from_slice(&CLASS_ANY.to_be_bytes());
    m.extend_from_slice(&0u32.to_be_bytes());
    let rdlen = alg.wire().len() + 6 + 2 + 2 + mac.len() + 2 + 2 + 2;
    m.extend_from_slice(&(rdlen as u16).to_be_bytes());
    m.extend_from_slice(alg.wire());
    m.extend_from_slice(&time.to_be_bytes()[2..]);
    m.extend_from_slice(&fudge.to_be_bytes());
    m.extend_from_slice(&(mac.len() as u16).to_be_bytes());
    m.extend_from_slice(mac);
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&error.to_be_bytes());
    m.extend_from_slice(&0u16.to_be_bytes());
}

const FUDGE: u16 = 300;

/// Signs the messages answering a request signed with `request_mac`: the first over the
/// request's MAC, the message and all variables; each later one over the previous MAC, the
/// message and the timers (RFC 8945 §5.3.1).
pub fn sign_answer(messages: &mut [Vec<u8>], key: &Key, request_mac: &[u8], time: u64) {
    let mut chain = Chain::new(key, request_mac, time);
    for m in messages {
        chain.sign(m);
    }
}

/// Signs the messages of one answer in turn, as they are written (a zone transfer is streamed).
pub struct Chain {
    key: Key,
    prior: Vec<u8>,
    time: u64,
    first: bool,
}

impl Chain {
    pub fn new(key: &Key, request_mac: &[u8], time: u64) -> Chain {
        Chain {
            key: key.clone(),
            prior: request_mac.to_vec(),
            time,
            first: true,
        }
    }

    /// Appends the TSIG record to `m`, the next message of the answer.
    pub fn sign(&mut self, m: &mut Vec<u8>) {
        let mut tbs = Vec::with_capacity(m.len() + 128);
        tbs.extend_from_slice(&(self.prior.len() as u16).to_be_bytes());
        tbs.extend_from_slice(&self.prior);
        tbs.extend_from_slice(m);
        if self.first {
            variables(&mut tbs, &self.key.name, self.time, FUDGE, 0, &[]);
        } else {
            tbs.extend_from_slice(&self.time.to_be_bytes()[2..]);
            tbs.extend_from_slice(&FUDGE.to_be_bytes());
        }
        self.first = false;
        let mac = hmac::sign(&self.key.key, &tbs);
        append(m, &self.key, self.time, mac.as_ref());
        self.prior = mac.as_ref().to_vec();
    }
}

/// Signs the response of `len` bytes in `out` to a query signed with `request_mac` (a
/// secondary's SOA check, say), appending the TSIG record; returns the new length. An answer
/// that would not fit in `limit` with its signature becomes a signed TC=1 answer. Allocates: signed queries are rare and
/// come from configured secondaries, never on the unsigned query path.
pub fn sign_into(
    out: &mut [u8],
    len: usize,
    limit: usize,
    key: &Key,
    request_mac: &[u8],
    time: u64,
) -> usize {
    let limit = limit.min(out.len());
    let mut m = out[..len].to_vec();
    sign_answer(std::slice::from_mut(&mut m), key, request_mac, time);
    if m.len() > limit {
        // It does not fit with its signature: a signed truncated answer (TC=1, the question
        // only) sends the client to TCP, where it does (RFC 8945 §5.3 wants answers signed).
        let question_end = name_end(out, 12).map_or(12, |e| e + 4).min(len);
        m = out[..question_end].to_vec();
        m[2] |= 0x02;
        m[6..12].fill(0);
        sign_answer(std::slice::from_mut(&mut m), key, request_mac, time);
        if m.len() > limit {
            return len;
        }
    }
    out[..m.len()].copy_from_slice(&m);
    m.len()
}

/// Signs a request we send (a NOTIFY): MAC over the message and the variables.
pub fn sign_request(m: &mut Vec<u8>, key: &Key, time: u64) {
    let mut tbs = m.clone();
    variables(&mut tbs, &key.name, time, FUDGE, 0, &[]);
    let mac = hmac::sign(&key.key, &tbs);
    append(m, key, time, mac.as_ref());
}

fn append(m: &mut Vec<u8>, key: &Key, time: u64, mac: &[u8]) {
    let id = u16_at(m, 0).unwrap_or(0);
    let ar = u16_at(m, 10).unwrap_or(0) + 1;
    m[10..12].copy_from_slice(&ar.to_be_bytes());
    tsig_record(m, &key.name, time, FUDGE, mac, id, 0);
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0";

    fn query() -> Vec<u8> {
        let mut m = vec![0x12, 0x34, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        m.extend_from_slice(DnsName::parse("example.com").unwrap().wire());
        m.extend_from_slice(&[0, 252, 0, 1]);
        m
    }

    #[test]
    fn a_signed_request_verifies_and_a_tampered_or_foreign_one_does_not() {
        let key = Key::new("xfr.", "hmac-sha256", SECRET).unwrap();
        let mut req = query();
        sign_request(&mut req, &key, 1_000_000);
        match verify(&req, std::slice::from_ref(&key), 1_000_010) {
            Verdict::Signed { mac, .. } => assert_eq!(mac.len(), 32),
            _ => panic!("should verify"),
        }
        let refused = |v: Verdict| match v {
            Verdict::Refused(a) => u16_at(&a, a.len() - 4).unwrap(),
            _ => 0,
        };
        // Too late.
        assert_eq!(
            refused(verify(&req, std::slice::from_ref(&key), 1_000_400)),
            BADTIME
        );
        // Another secret under the same name.
        let other = Key::new("xfr.", "hmac-sha256", "b3RoZXItb3RoZXItb3RoZXItb3RoZXI=").unwrap();
        assert_eq!(refused(verify(&req, &[other], 1_000_000)), BADSIG);
        // An unknown key name.
        let stranger = Key::new("else.", "hmac-sha256", SECRET).unwrap();
        assert_eq!(refused(verify(&req, &[stranger], 1_000_000)), BADKEY);
        // A flipped bit in the question.
        let mut bad = req.clone();
        bad[14] ^= 1;
        assert_eq!(
            refused(verify(&bad, std::slice::from_ref(&key), 1_000_000)),
            BADSIG
        );
        assert!(matches!(verify(&query(), &[key], 0), Verdict::Unsigned));
    }

    #[test]
    fn a_signed_answer_too_large_for_udp_is_a_signed_truncated_one() {
        let key = Key::new("xfr.", "hmac-sha256", SECRET).unwrap();
        let mut out = vec![0u8; 4096];
        let mut answer = query();
        answer[2] |= 0x84;
        answer[7] = 1; // one answer record, padding it out
        answer.extend_from_slice(&[0xc0, 12, 0, 16, 0, 1, 0, 0, 0, 60, 1, 245, 244]);
        answer.extend(std::iter::repeat_n(b'x', 500 - 1));
        out[..answer.len()].copy_from_slice(&answer);
        let n = sign_into(&mut out, answer.len(), 512, &key, &[7; 32], 1_000_000);
        assert!(n <= 512, "{n}");
        assert_eq!(out[2] & 0x02, 0x02, "TC set");
        assert_eq!(u16_at(&out, 6), Some(0), "no answer records");
        assert_eq!(u16_at(&out, 10), Some(1), "the TSIG");
        // The same answer over TCP is signed whole.
        out[..answer.len()].copy_from_slice(&answer);
        let n = sign_into(&mut out, answer.len(), 65535, &key, &[7; 32], 1_000_000);
        assert!(n > answer.len() && out[2] & 0x02 == 0);
    }

    #[test]
    fn keys_are_validated() {
        assert!(
            Key::new("k.", "hmac-md5", SECRET)
                .unwrap_err()
                .contains("not supported")
        );
        assert!(
            Key::new("k.", "hmac-sha256", "!!")
                .unwrap_err()
                .contains("base64")
        );
        assert!(
            Key::new("k.", "hmac-sha256", "c2hvcnQ=")
                .unwrap_err()
                .contains("at least 16")
        );
    }
}
