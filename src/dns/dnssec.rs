//! DNSSEC (RFC 4033–4035): zone keys, signatures and denial records, in wire format.
//!
//! Keys are BIND-format `K<zone>.+<alg>+<tag>.key` / `.private` files (what BIND, Knot's
//! `keymgr` import and `dnssec-keygen` use), loaded from the keys directory or generated there on
//! first start: a CSK (one key with the SEP flag signing everything) unless a KSK (257) and a ZSK
//! (256) are both present. ECDSA P-256 (algorithm 13, the default) and Ed25519 (15), with ring.
//!
//! Everything here runs at table build, off the query path, except [`ZoneKeys::write_denial`]
//! and [`ZoneKeys::sign_online`]: compact denial of existence (RFC 9824) for names that do not
//! exist, and answers synthesized from a wildcard, must name the question, so their NSEC or
//! RRSIG is signed when the query (DO=1, signed zone) arrives. They allocate nothing (the
//! signed data is built on the stack).
//!
//! Guarantees: RRsets are signed in canonical form (RFC 4034 §6: lowercase names, no
//! compression, RDATA sorted, duplicates removed); one signature per distinct RRset whatever
//! the order it is served in; key files that cannot be read are an error naming the file and
//! field, never a silently unsigned zone.

use std::path::{Path, PathBuf};

use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair};

use crate::model::{DnsName, RData, Record, rtype};

pub const TYPE_DS: u16 = 43;
pub const TYPE_RRSIG: u16 = 46;
pub const TYPE_NSEC: u16 = 47;
pub const TYPE_DNSKEY: u16 = 48;
pub const TYPE_CDS: u16 = 59;
pub const TYPE_CDNSKEY: u16 = 60;
/// RFC 9824: the pseudo-type an NSEC of a name that does not exist lists.
pub const TYPE_NXNAME: u16 = 128;

const CLASS_IN: u16 = 1;

/// Signing algorithms fedns can use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    /// ECDSAP256SHA256, algorithm 13 (RFC 6605).
    EcdsaP256,
    /// ED25519, algorithm 15 (RFC 8080).
    Ed25519,
}

impl Algorithm {
    pub fn number(self) -> u8 {
        match self {
            Algorithm::EcdsaP256 => 13,
            Algorithm::Ed25519 => 15,
        }
    }

    /// Bytes of a signature (RFC 6605 §4: r and s of 32 bytes each; RFC 8080 §3: 64).
    pub fn signature_len(self) -> usize {
        64
    }

    pub fn mnemonic(self) -> &'static str {
        match self {
            Algorithm::EcdsaP256 => "ECDSAP256SHA256",
            Algorithm::Ed25519 => "ED25519",
        }
    }

    /// `ecdsap256sha256` / `13` or `ed25519` / `15`, as config and key files spell them.
    pub fn parse(s: &str) -> Option<Algorithm> {
        match s.trim().to_ascii_lowercase().as_str() {
            "13" | "ecdsap256sha256" | "ecdsa-p256" | "ecdsap256" => Some(Algorithm::EcdsaP256),
            "15" | "ed25519" => Some(Algorithm::Ed25519),
            _ => None,
        }
    }
}

enum Signer {
    Ecdsa(EcdsaKeyPair),
    Ed25519(Ed25519KeyPair),
}

impl Signer {
    /// The key pair of `algorithm` from the raw halves BIND's files hold: the private scalar
    /// (or Ed25519 seed) and the DNSKEY public key field.
    fn new(
        algorithm: Algorithm,
        private: &[u8],
        public: &[u8],
    ) -> Result<Signer, ring::error::KeyRejected> {
        Ok(match algorithm {
            Algorithm::EcdsaP256 => Signer::Ecdsa(EcdsaKeyPair::from_private_key_and_public_key(
                &ECDSA_P256_SHA256_FIXED_SIGNING,
                private,
                &[&[4u8][..], public].concat(),
                &SystemRandom::new(),
            )?),
            Algorithm::Ed25519 => {
                Signer::Ed25519(Ed25519KeyPair::from_seed_and_public_key(private, public)?)
            }
        })
    }
}

/// One DNSKEY with its private half.
pub struct ZoneKey {
    pub algorithm: Algorithm,
    /// 257 (SEP: KSK or CSK) or 256 (ZSK).
    pub flags: u16,
    /// The DNSKEY public key field.
    pub public: Box<[u8]>,
    pub tag: u16,
    /// The `.private` file it came from.
    pub file: PathBuf,
    /// When it is published and signs (BIND's timing metadata; none: always).
    pub timing: KeyTiming,
    signer: Signer,
}

/// A key's lifetime as BIND's `dnssec-keygen -P/-A/-I/-D` (and `dnssec-settime`) record it in
/// its files, in Unix seconds: published in the DNSKEY RRset from `publish` until `delete`,
/// signing from `activate` until `inactive`. Rolling a key is putting the next one beside it
/// with later times.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KeyTiming {
    pub publish: Option<u32>,
    pub activate: Option<u32>,
    pub inactive: Option<u32>,
    pub delete: Option<u32>,
}

impl KeyTiming {
    pub fn published(&self, now: u32) -> bool {
        self.publish.is_none_or(|t| t <= now) && self.delete.is_none_or(|t| now < t)
    }

    /// Signing at `now` (an active key is also published).
    pub fn active(&self, now: u32) -> bool {
        self.published(now)
            && self.activate.is_none_or(|t| t <= now)
            && self.inactive.is_none_or(|t| now < t)
    }
}

/// `YYYYMMDDHHMMSS` (UTC, as BIND's key files and RRSIG presentation write times) in Unix
/// seconds.
fn parse_key_time(s: &str) -> Option<u32> {
    let s = s.split_whitespace().next()?;
    if s.len() != 14 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n = |r: std::ops::Range<usize>| s[r].parse::<i64>().ok();
    let (y, m, d) = (n(0..4)?, n(4..6)?, n(6..8)?);
    let (hh, mm, ss) = (n(8..10)?, n(10..12)?, n(12..14)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    // Days from the civil date (H. Hinnant's algorithm, proleptic Gregorian).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u32::try_from(days * 86_400 + hh * 3600 + mm * 60 + ss).ok()
}

impl std::fmt::Debug for ZoneKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ZoneKey({} flags {} tag {})",
            self.algorithm.mnemonic(),
            self.flags,
            self.tag
        )
    }
}

impl ZoneKey {
    /// DNSKEY RDATA: flags, protocol 3, algorithm, public key.
    pub fn dnskey_rdata(&self) -> Vec<u8> {
        let mut r = Vec::with_capacity(4 + self.public.len());
        r.extend_from_slice(&self.flags.to_be_bytes());
        r.push(3);
        r.push(self.algorithm.number());
        r.extend_from_slice(&self.public);
        r
    }

    /// DS RDATA with a SHA-256 digest (digest type 2) for `zone`.
    pub fn ds_rdata(&self, zone: &DnsName) -> Vec<u8> {
        let mut input = zone.wire().to_vec();
        input.extend_from_slice(&self.dnskey_rdata());
        let digest = ring::digest::digest(&ring::digest::SHA256, &input);
        let mut r = Vec::with_capacity(4 + 32);
        r.extend_from_slice(&self.tag.to_be_bytes());
        r.push(self.algorithm.number());
        r.push(2);
        r.extend_from_slice(digest.as_ref());
        r
    }

    /// The DS record in presentation format, to hand to the parent zone.
    pub fn ds_text(&self, zone: &DnsName) -> String {
        let ds = self.ds_rdata(zone);
        let hex: String = ds[4..].iter().map(|b| format!("{b:02X}")).collect();
        format!(
            "{} IN DS {} {} 2 {}",
            zone,
            self.tag,
            self.algorithm.number(),
            hex
        )
    }

    fn sign(&self, rng: &SystemRandom, data: &[u8]) -> Option<SignatureBytes> {
        let mut out = SignatureBytes {
            bytes: [0; 64],
            len: 0,
        };
        match &self.signer {
            Signer::Ecdsa(k) => {
                let s = k.sign(rng, data).ok()?;
                let s = s.as_ref();
                out.bytes[..s.len()].copy_from_slice(s);
                out.len = s.len();
            }
            Signer::Ed25519(k) => {
                let s = k.sign(data);
                let s = s.as_ref();
                out.bytes[..s.len()].copy_from_slice(s);
                out.len = s.len();
            }
        }
        Some(out)
    }
}

struct SignatureBytes {
    bytes: [u8; 64],
    len: usize,
}

/// RFC 4034 Appendix B.
pub fn key_tag(dnskey_rdata: &[u8]) -> u16 {
    let mut ac: u32 = 0;
    for (i, b) in dnskey_rdata.iter().enumerate() {
        ac += if i & 1 == 1 {
            *b as u32
        } else {
            (*b as u32) << 8
        };
    }
    ac += (ac >> 16) & 0xffff;
    (ac & 0xffff) as u16
}

/// When signatures are valid: `inception..expiration`, seconds since the epoch (RFC 4034 §3.1.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Validity {
    pub inception: u32,
    pub expiration: u32,
}

/// The keys of one signed zone at one time and the validity of the signatures made with them.
#[derive(Debug)]
pub struct ZoneKeys {
    pub zone: DnsName,
    /// The DNSKEY RRset: every published key (a rollover's next and last keys too).
    pub published: Vec<std::sync::Arc<ZoneKey>>,
    /// Active SEP keys: each signs the DNSKEY, CDS and CDNSKEY RRsets (never empty).
    pub ksks: Vec<std::sync::Arc<ZoneKey>>,
    /// Active keys that sign everything else: the active ZSKs, or the KSKs when none is (a
    /// CSK). Never empty; the first also signs per query.
    pub zsks: Vec<std::sync::Arc<ZoneKey>>,
    pub validity: Validity,
}

impl ZoneKeys {
    /// The zone's keys at `now` (Unix seconds) by their timing; `None` when no SEP key is
    /// active then (nothing could sign the DNSKEY RRset).
    pub fn at(
        zone: &DnsName,
        keys: &[std::sync::Arc<ZoneKey>],
        now: u32,
        validity: Validity,
    ) -> Option<ZoneKeys> {
        let pick = |sep: bool| -> Vec<std::sync::Arc<ZoneKey>> {
            keys.iter()
                .filter(|k| (k.flags & 1 == 1) == sep && k.timing.active(now))
                .cloned()
                .collect()
        };
        let ksks = pick(true);
        if ksks.is_empty() {
            return None;
        }
        let mut zsks = pick(false);
        if zsks.is_empty() {
            zsks = ksks.clone();
        }
        Some(ZoneKeys {
            zone: zone.clone(),
            published: keys
                .iter()
                .filter(|k| k.timing.published(now))
                .cloned()
                .collect(),
            ksks,
            zsks,
            validity,
        })
    }

    /// The key that signs per query (and the wildcard templates it fills in).
    fn online(&self) -> &ZoneKey {
        &self.zsks[0]
    }

    /// Whether both sign alike: the same keys in the same roles and the same validity.
    pub fn same_as(&self, other: &ZoneKeys) -> bool {
        let tags = |ks: &[std::sync::Arc<ZoneKey>]| -> Vec<(u16, Box<[u8]>)> {
            ks.iter().map(|k| (k.tag, k.public.clone())).collect()
        };
        self.validity == other.validity
            && tags(&self.published) == tags(&other.published)
            && tags(&self.ksks) == tags(&other.ksks)
            && tags(&self.zsks) == tags(&other.zsks)
    }

    /// DNSKEY, CDS and CDNSKEY records of the apex (RFC 7344: CDS/CDNSKEY name the active SEP
    /// keys, which the parent's DS should match).
    pub fn apex_records(&self, ttl: u32) -> Vec<Record> {
        let mut out = Vec::new();
        for k in &self.published {
            out.push(opaque(&self.zone, ttl, TYPE_DNSKEY, k.dnskey_rdata()));
        }
        for k in &self.ksks {
            out.push(opaque(&self.zone, ttl, TYPE_CDS, k.ds_rdata(&self.zone)));
            out.push(opaque(&self.zone, ttl, TYPE_CDNSKEY, k.dnskey_rdata()));
        }
        out
    }

    /// RRSIGs over the RRset `owner`/`rtype` with data `rdatas` (order and duplicates do not
    /// matter) and TTL `ttl`: one per signing key (the KSK for DNSKEY, CDS and CDNSKEY). `None`
    /// when signing failed (the caller serves the answer unsigned and says so).
    pub fn sign_rrset(
        &self,
        owner: &DnsName,
        rtype: u16,
        ttl: u32,
        rdatas: &[RData],
    ) -> Option<Vec<Record>> {
        self.sign_canonical(owner, rtype, ttl, &canonical_set(rdatas))
    }

    /// [`ZoneKeys::sign_rrset`] of an RRset already in canonical form ([`canonical_set`]).
    pub fn sign_canonical(
        &self,
        owner: &DnsName,
        rtype: u16,
        ttl: u32,
        canonical: &[Vec<u8>],
    ) -> Option<Vec<Record>> {
        let keys = if matches!(rtype, TYPE_DNSKEY | TYPE_CDS | TYPE_CDNSKEY) {
            &self.ksks
        } else {
            &self.zsks
        };
        let labels = qname_labels(owner.wire());
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            let mut rrsig = self.rrsig_fields(key, rtype, labels, ttl);
            let mut data = rrsig.clone();
            for rd in canonical {
                data.extend_from_slice(owner.wire());
                put_ownerless(&mut data, rtype, ttl, rd);
            }
            let sig = key.sign(&SystemRandom::new(), &data)?;
            SIGNATURES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            rrsig.extend_from_slice(&sig.bytes[..sig.len]);
            out.push(opaque(owner, ttl, TYPE_RRSIG, rrsig));
        }
        Some(out)
    }

    /// RRSIG RDATA up to (not including) the signature.
    fn rrsig_fields(&self, key: &ZoneKey, covered: u16, labels: u8, ttl: u32) -> Vec<u8> {
        let mut r = Vec::with_capacity(18 + self.zone.wire().len() + 64);
        r.extend_from_slice(&covered.to_be_bytes());
        r.push(key.algorithm.number());
        r.push(labels);
        r.extend_from_slice(&ttl.to_be_bytes());
        r.extend_from_slice(&self.validity.expiration.to_be_bytes());
        r.extend_from_slice(&self.validity.inception.to_be_bytes());
        r.extend_from_slice(&key.tag.to_be_bytes());
        r.extend_from_slice(self.zone.wire());
        r
    }

    /// Bytes [`ZoneKeys::write_denial`] writes for a question name of `qname_len` bytes and a
    /// type bitmap of `bitmap_len` bytes: the NSEC (owner a pointer, next name `\000.qname`)
    /// and its RRSIG (signatures of both algorithms are 64 bytes).
    pub fn denial_len(&self, qname_len: usize, bitmap_len: usize) -> usize {
        (2 + 10 + 2 + qname_len + bitmap_len) + (2 + 10 + 18 + self.zone.wire().len() + 64)
    }

    /// Writes, at `out[pos..]`, the compact denial (RFC 9824) of the question name (`qname`,
    /// lowercase wire, sitting at offset 12 of the response): `qname NSEC \000.qname <bitmap>`
    /// and its RRSIG, both with TTL `ttl`. `bitmap` is [`NXNAME_BITMAP`] for a name that does
    /// not exist, or the types of the wildcard that synthesizes it. Returns the bytes written,
    /// or `None` when they do not fit before `limit` or signing failed. No allocation.
    pub fn write_denial(
        &self,
        qname: &[u8],
        ttl: u32,
        bitmap: &[u8],
        out: &mut [u8],
        pos: usize,
        limit: usize,
    ) -> Option<usize> {
        // NSEC RDATA: next name "\000.qname" (never compressed, RFC 4034 §4.1.1) + bitmap.
        let key = self.online();
        let nsec_rdlen = 2 + qname.len() + bitmap.len();
        if pos + self.denial_len(qname.len(), bitmap.len()) > limit.min(out.len())
            || qname.len() > 255
            || nsec_rdlen > 300
        {
            return None;
        }
        // The signed data: RRSIG fields, then the NSEC RR in canonical form.
        let mut data = [0u8; 18 + 255 + 255 + 10 + 300];
        let mut n = 0;
        fn put(data: &mut [u8], n: &mut usize, b: &[u8]) {
            data[*n..*n + b.len()].copy_from_slice(b);
            *n += b.len();
        }
        let labels = qname_labels(qname);
        put(&mut data, &mut n, &TYPE_NSEC.to_be_bytes());
        put(&mut data, &mut n, &[key.algorithm.number(), labels]);
        put(&mut data, &mut n, &ttl.to_be_bytes());
        put(&mut data, &mut n, &self.validity.expiration.to_be_bytes());
        put(&mut data, &mut n, &self.validity.inception.to_be_bytes());
        put(&mut data, &mut n, &key.tag.to_be_bytes());
        put(&mut data, &mut n, self.zone.wire());
        let rrsig_fields = n;
        put(&mut data, &mut n, qname);
        put(&mut data, &mut n, &TYPE_NSEC.to_be_bytes());
        put(&mut data, &mut n, &CLASS_IN.to_be_bytes());
        put(&mut data, &mut n, &ttl.to_be_bytes());
        put(&mut data, &mut n, &(nsec_rdlen as u16).to_be_bytes());
        put(&mut data, &mut n, &[1, 0]);
        put(&mut data, &mut n, qname);
        put(&mut data, &mut n, bitmap);
        let sig = key.sign(&SystemRandom::new(), &data[..n])?;
        let mut w = pos;
        let mut emit = |b: &[u8]| {
            out[w..w + b.len()].copy_from_slice(b);
            w += b.len();
        };
        // NSEC, owned by the question name (a pointer to offset 12).
        emit(&[0xc0, 0x0c]);
        emit(&TYPE_NSEC.to_be_bytes());
        emit(&CLASS_IN.to_be_bytes());
        emit(&ttl.to_be_bytes());
        emit(&(nsec_rdlen as u16).to_be_bytes());
        emit(&[1, 0]);
        emit(qname);
        emit(bitmap);
        // Its RRSIG.
        emit(&[0xc0, 0x0c]);
        emit(&TYPE_RRSIG.to_be_bytes());
        emit(&CLASS_IN.to_be_bytes());
        emit(&ttl.to_be_bytes());
        emit(&((rrsig_fields + sig.len) as u16).to_be_bytes());
        emit(&data[..rrsig_fields]);
        emit(&sig.bytes[..sig.len]);
        Some(w - pos)
    }

    /// The RRSIG record data of a wildcard's RRset `rtype` with TTL `ttl` as the builder stores
    /// it in a synthesized answer: Labels 0 and the signature zeroed, for
    /// [`ZoneKeys::sign_online`] to fill in for the question.
    pub fn rrsig_template(&self, rtype: u16, ttl: u32) -> RData {
        let key = self.online();
        let mut r = self.rrsig_fields(key, rtype, 0, ttl);
        r.extend_from_slice(&[0; 64][..key.algorithm.signature_len()]);
        RData::Opaque {
            rtype: TYPE_RRSIG,
            rdata: r.into(),
        }
    }

    /// Signs the RRSIG whose RDATA starts at `body[rdata_at..]` (made by
    /// [`ZoneKeys::rrsig_template`]) for the RRset owned by the question `qname` (lowercase
    /// wire) whose records, in canonical order and without their owner, are `records`
    /// (type, class, TTL, RDATA length and RDATA each). `None` when it cannot be signed (too
    /// large, malformed data or a failed key). No allocation.
    pub fn sign_online(
        &self,
        qname: &[u8],
        records: &[u8],
        body: &[u8],
        rdata_at: usize,
    ) -> Option<OnlineSignature> {
        let key = self.online();
        let fields = 18 + self.zone.wire().len();
        if rdata_at + fields + key.algorithm.signature_len() > body.len() {
            return None;
        }
        let labels = qname_labels(qname);
        let mut data = [0u8; ONLINE_MAX];
        data[..fields].copy_from_slice(&body[rdata_at..rdata_at + fields]);
        data[3] = labels;
        let mut n = fields;
        let mut at = 0;
        while at < records.len() {
            let len = records.get(at + 8..at + 10)?;
            let end = at + 10 + u16::from_be_bytes([len[0], len[1]]) as usize;
            if end > records.len() || n + qname.len() + (end - at) > ONLINE_MAX {
                return None;
            }
            data[n..n + qname.len()].copy_from_slice(qname);
            n += qname.len();
            data[n..n + end - at].copy_from_slice(&records[at..end]);
            n += end - at;
            at = end;
        }
        let sig = key.sign(&SystemRandom::new(), &data[..n])?;
        Some(OnlineSignature {
            labels,
            at: rdata_at,
            sig_at: rdata_at + fields,
            sig,
        })
    }
}

/// An RRSIG made per query by [`ZoneKeys::sign_online`], to put into the copied body.
pub struct OnlineSignature {
    labels: u8,
    /// Offsets in the body: the RRSIG's RDATA, and its signature.
    at: usize,
    sig_at: usize,
    sig: SignatureBytes,
}

impl OnlineSignature {
    /// Writes the Labels field and the signature into `body` (the answer as copied into the
    /// response).
    #[inline]
    pub fn apply(&self, body: &mut [u8]) {
        body[self.at + 3] = self.labels;
        body[self.sig_at..self.sig_at + self.sig.len]
            .copy_from_slice(&self.sig.bytes[..self.sig.len]);
    }
}

/// Records of an RRset in canonical order without their owner, as [`ZoneKeys::sign_online`]
/// reads them, and whether, owned by a name of `max_owner` bytes, they fit its buffer.
pub fn ownerless_records(
    rtype: u16,
    ttl: u32,
    canonical: &[Vec<u8>],
    max_owner: usize,
) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    for rd in canonical {
        put_ownerless(&mut out, rtype, ttl, rd);
    }
    let fits = 18 + 255 + out.len() + canonical.len() * max_owner <= ONLINE_MAX;
    (out, fits)
}

/// One record of an RRset in canonical form after its owner: type, class IN, TTL, RDATA
/// length and RDATA.
fn put_ownerless(out: &mut Vec<u8>, rtype: u16, ttl: u32, rd: &[u8]) {
    out.extend_from_slice(&rtype.to_be_bytes());
    out.extend_from_slice(&CLASS_IN.to_be_bytes());
    out.extend_from_slice(&ttl.to_be_bytes());
    out.extend_from_slice(&(rd.len() as u16).to_be_bytes());
    out.extend_from_slice(rd);
}

/// The NSEC type bitmap of a name with `types` (RRSIG and NSEC added), for
/// [`ZoneKeys::write_denial`].
/// `exists: false` adds NXNAME (RFC 9824 §2).
pub fn nsec_bitmap(types: &[u16], exists: bool) -> Vec<u8> {
    let mut all: Vec<u16> = types.to_vec();
    all.extend([TYPE_RRSIG, TYPE_NSEC]);
    if !exists {
        all.push(TYPE_NXNAME);
    }
    all.sort_unstable();
    all.dedup();
    type_bitmap(&all)
}

/// RRSIGs [`ZoneKeys::sign_canonical`] made since start (builds and transfers; not the query
/// path's), for the signing metric and the publish log.
static SIGNATURES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

pub fn signatures_made() -> u64 {
    SIGNATURES.load(std::sync::atomic::Ordering::Relaxed)
}

/// The RRSIG Labels field of a wire name (RFC 4034 §3.1.3): its labels, neither the root nor
/// a leading `*` counted.
fn qname_labels(wire: &[u8]) -> u8 {
    let (mut pos, mut n) = (0usize, 0u8);
    while pos < wire.len() && wire[pos] != 0 {
        pos += wire[pos] as usize + 1;
        n += 1;
    }
    n - wire.starts_with(b"\x01*") as u8
}

/// The most bytes [`ZoneKeys::sign_online`] signs (RRSIG fields and the RRset, owners
/// included), on the stack: a wildcard RRset larger than this in canonical form is not signed
/// per query (the query gets SERVFAIL, which the builder warns of).
pub const ONLINE_MAX: usize = 8192;

/// The type bitmap of `RRSIG NSEC NXNAME` (window 0, 17 bytes).
pub const NXNAME_BITMAP: [u8; 19] = nxname_bitmap();

const fn nxname_bitmap() -> [u8; 19] {
    let mut b = [0u8; 19];
    b[0] = 0;
    b[1] = 17;
    b[2 + (TYPE_RRSIG as usize / 8)] |= 0x80 >> (TYPE_RRSIG % 8);
    b[2 + (TYPE_NSEC as usize / 8)] |= 0x80 >> (TYPE_NSEC % 8);
    b[2 + (TYPE_NXNAME as usize / 8)] |= 0x80 >> (TYPE_NXNAME % 8);
    b
}

/// NSEC RDATA of an existing name (RFC 9824 §3.1 for NODATA): next name `\000.owner`, and the
/// types present plus RRSIG and NSEC. `exists: false` gives the NXNAME form.
pub fn nsec_rdata(owner: &DnsName, types: &[u16], exists: bool) -> RData {
    let mut r = Vec::with_capacity(owner.wire().len() + 2 + 34);
    r.extend_from_slice(&[1, 0]);
    r.extend_from_slice(owner.wire());
    r.extend_from_slice(&nsec_bitmap(types, exists));
    RData::Opaque {
        rtype: TYPE_NSEC,
        rdata: r.into(),
    }
}

/// RFC 4034 §4.1.2: window blocks of the sorted types.
fn type_bitmap(types: &[u16]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < types.len() {
        let window = (types[i] >> 8) as u8;
        let mut bits = [0u8; 32];
        let mut len = 0;
        while i < types.len() && (types[i] >> 8) as u8 == window {
            let low = (types[i] & 0xff) as usize;
            bits[low / 8] |= 0x80 >> (low % 8);
            len = len.max(low / 8 + 1);
            i += 1;
        }
        out.push(window);
        out.push(len as u8);
        out.extend_from_slice(&bits[..len]);
    }
    out
}

fn opaque(owner: &DnsName, ttl: u32, rtype: u16, rdata: Vec<u8>) -> Record {
    Record {
        name: owner.clone(),
        ttl,
        data: RData::Opaque {
            rtype,
            rdata: rdata.into(),
        },
    }
}

/// An RRset's RDATA in canonical form and order (RFC 4034 §6.3): sorted, duplicates removed.
pub fn canonical_set(rdatas: &[RData]) -> Vec<Vec<u8>> {
    let mut set: Vec<Vec<u8>> = rdatas.iter().map(canonical_rdata).collect();
    set.sort();
    set.dedup();
    set
}

/// RDATA in canonical form (RFC 4034 §6.2): names uncompressed and lowercase (the model's
/// names are lowercase already).
pub fn canonical_rdata(d: &RData) -> Vec<u8> {
    let mut r = Vec::new();
    match d {
        RData::A(a) => r.extend_from_slice(&a.octets()),
        RData::Aaaa(a) => r.extend_from_slice(&a.octets()),
        RData::Cname(n) | RData::Ns(n) | RData::Ptr(n) => r.extend_from_slice(n.wire()),
        RData::Mx {
            preference,
            exchange,
        } => {
            r.extend_from_slice(&preference.to_be_bytes());
            r.extend_from_slice(exchange.wire());
        }
        RData::Srv {
            priority,
            weight,
            port,
            target,
        } => {
            for v in [priority, weight, port] {
                r.extend_from_slice(&v.to_be_bytes());
            }
            r.extend_from_slice(target.wire());
        }
        RData::Txt(parts) => {
            for p in parts {
                r.push(p.len().min(255) as u8);
                r.extend_from_slice(&p[..p.len().min(255)]);
            }
        }
        RData::Soa(s) => {
            r.extend_from_slice(s.mname.wire());
            r.extend_from_slice(s.rname.wire());
            for v in [s.serial, s.refresh, s.retry, s.expire, s.minimum] {
                r.extend_from_slice(&v.to_be_bytes());
            }
        }
        RData::Opaque { rdata, .. } => r.extend_from_slice(rdata),
    }
    r
}

/// Whether `t` is a type whose RRsets fedns signs (everything but RRSIG itself).
pub fn is_signed_type(t: u16) -> bool {
    t != TYPE_RRSIG && t != rtype::ANY
}

/// Every signed zone's keys, and the validity period current signatures are made for: the
/// merger asks for [`KeyRing::signing`] before each build, which moves the period on (so every
/// signature is made again) once the current one is `resign_after` old, or once a key's timing
/// publishes, activates, retires or deletes it (a rollover step).
pub struct KeyRing {
    keys: Vec<(DnsName, Vec<std::sync::Arc<ZoneKey>>)>,
    validity: u32,
    resign_after: u32,
    current: Vec<std::sync::Arc<ZoneKeys>>,
    /// When `current` was made (its keys' roles are those at this time).
    made_at: u32,
}

/// Signatures start this long before they are made, for clocks that are behind.
const INCEPTION_SLACK: u32 = 3600;

/// Unix seconds now.
pub fn unix_now() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs().min(u32::MAX as u64) as u32)
}

impl KeyRing {
    /// Loads (or generates, see [`zone_keys`]) the keys of every zone in `zones`.
    /// `generate: false` (for `check`): a zone without keys gets a key that is not written
    /// anywhere, and is listed in [`KeyRing::generated`]. A zone none of whose SEP keys is
    /// active now is an error.
    pub fn load(
        zones: &[DnsName],
        dir: &Path,
        algorithm: Algorithm,
        validity: std::time::Duration,
        resign_after: std::time::Duration,
        generate: bool,
    ) -> Result<KeyRing, String> {
        let mut keys = Vec::new();
        let now = unix_now();
        let never = Validity {
            inception: 0,
            expiration: 0,
        };
        for z in zones {
            let ks = zone_keys(dir, z, algorithm, generate)?;
            if ZoneKeys::at(z, &ks, now, never).is_none() {
                return Err(format!(
                    "{}: zone {z}: no key with flags 257 (a KSK or CSK) is active now, so nothing \
                     could sign its DNSKEY RRset (keys: {})",
                    dir.display(),
                    describe(&ks, now)
                ));
            }
            keys.push((z.clone(), ks));
        }
        Ok(KeyRing {
            keys,
            validity: validity.as_secs().min(u32::MAX as u64) as u32,
            resign_after: resign_after.as_secs().min(u32::MAX as u64) as u32,
            current: Vec::new(),
            made_at: 0,
        })
    }

    /// Whether the signatures made now are due to be made again at `now` (Unix seconds): their
    /// period is `resign_after` old, or a key changed role since they were made.
    pub fn due(&self, now: u32) -> bool {
        let Some(k) = self.current.first() else {
            return !self.keys.is_empty();
        };
        let then = self.made_at;
        now >= k.validity.inception + INCEPTION_SLACK + self.resign_after
            || self.keys.iter().flat_map(|(_, ks)| ks).any(|k| {
                k.timing.published(then) != k.timing.published(now)
                    || k.timing.active(then) != k.timing.active(now)
            })
    }

    /// The keys to sign with at `now`, with a validity period that stays the same (so a build
    /// can keep earlier signatures) until it is due.
    pub fn signing(&mut self, now: u32) -> &[std::sync::Arc<ZoneKeys>] {
        if self.due(now) {
            let inception = now.saturating_sub(INCEPTION_SLACK);
            let validity = Validity {
                inception,
                expiration: inception
                    .saturating_add(INCEPTION_SLACK)
                    .saturating_add(self.validity),
            };
            let previous = std::mem::take(&mut self.current);
            self.current = self
                .keys
                .iter()
                .filter_map(|(zone, ks)| match ZoneKeys::at(zone, ks, now, validity) {
                    Some(k) => Some(std::sync::Arc::new(k)),
                    None => {
                        // A rollover left no KSK active: the last keys keep signing (their
                        // signatures run out at their expiration) rather than none.
                        tracing::error!(zone = %zone, keys = %describe(ks, now),
                            "dnssec: no KSK is active now; still signing with the previous keys");
                        previous.iter().find(|k| k.zone == *zone).cloned()
                    }
                })
                .collect();
            self.made_at = now;
            for k in &self.current {
                tracing::info!(zone = %k.zone, published = %tags(&k.published),
                    ksk = %tags(&k.ksks), zsk = %tags(&k.zsks), "dnssec: signing keys");
            }
        }
        &self.current
    }

    /// Zones whose key was made in memory only (`generate: false` found none).
    pub fn generated(&self) -> Vec<&DnsName> {
        self.keys
            .iter()
            .filter(|(_, ks)| ks.iter().all(|k| k.file.as_os_str().is_empty()))
            .map(|(z, _)| z)
            .collect()
    }

    /// The DS records for the parent zone: one per SEP key not yet deleted (during a KSK
    /// rollover, the next key's DS goes to the parent before it signs).
    pub fn ds_records(&self) -> Vec<String> {
        self.sep_keys(false)
    }

    /// [`KeyRing::ds_records`] of the keys read from files (those made in memory would change).
    pub fn stored_ds_records(&self) -> Vec<String> {
        self.sep_keys(true)
    }

    fn sep_keys(&self, stored: bool) -> Vec<String> {
        let now = unix_now();
        self.keys
            .iter()
            .flat_map(|(zone, ks)| ks.iter().map(move |k| (zone, k)))
            .filter(|(_, k)| k.flags & 1 == 1 && k.timing.delete.is_none_or(|t| now < t))
            .filter(|(_, k)| !stored || !k.file.as_os_str().is_empty())
            .map(|(zone, k)| k.ds_text(zone))
            .collect()
    }

    /// Each zone's published DNSKEY records in presentation format (trust anchors for a
    /// resolver).
    pub fn dnskey_records(&self) -> Vec<String> {
        use base64::Engine;
        let now = unix_now();
        let mut out = Vec::new();
        for (zone, ks) in &self.keys {
            for k in ks.iter().filter(|k| k.timing.published(now)) {
                out.push(format!(
                    "{} IN DNSKEY {} 3 {} {}",
                    zone_file_name(zone),
                    k.flags,
                    k.algorithm.number(),
                    base64::engine::general_purpose::STANDARD.encode(&k.public)
                ));
            }
        }
        out
    }
}

/// Key tags, for log lines.
fn tags(keys: &[std::sync::Arc<ZoneKey>]) -> String {
    keys.iter()
        .map(|k| k.tag.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// Each key with its role at `now`, for errors.
fn describe(keys: &[std::sync::Arc<ZoneKey>], now: u32) -> String {
    keys.iter()
        .map(|k| {
            let state = if k.timing.active(now) {
                "active"
            } else if k.timing.published(now) {
                "published, not signing"
            } else {
                "not published"
            };
            format!("{} flags {} {state}", k.file.display(), k.flags)
        })
        .collect::<Vec<_>>()
        .join("; ")
}

// ---------------------------------------------------------------------------------------------
// Key files.

/// The keys of `zone` in `dir`; with none there, a new CSK of `algorithm`, written to `dir`
/// when `generate` (else kept in memory only). Any number of KSKs and ZSKs may be there: their
/// timing says which are published and which sign ([`ZoneKeys::at`]). Errors name the file and
/// what is wrong.
fn zone_keys(
    dir: &Path,
    zone: &DnsName,
    algorithm: Algorithm,
    generate: bool,
) -> Result<Vec<std::sync::Arc<ZoneKey>>, String> {
    let mut keys = load_dir(dir, zone)?;
    if keys.is_empty() {
        if generate {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("{}: cannot create the keys directory: {e}", dir.display()))?;
        }
        keys.push(make_key(generate.then_some(dir), zone, algorithm)?);
    }
    let mut seen = std::collections::BTreeSet::new();
    for k in &keys {
        if !seen.insert((k.tag, k.algorithm.number(), k.flags)) {
            return Err(format!(
                "{}: zone {zone}: two keys share key tag {} (algorithm {}, flags {}); \
                 validators could not tell them apart: generate another",
                k.file.display(),
                k.tag,
                k.algorithm.number(),
                k.flags
            ));
        }
    }
    Ok(keys.into_iter().map(std::sync::Arc::new).collect())
}

/// Every `K<zone>.+*.private` key of `zone` in `dir` (none when `dir` does not exist).
fn load_dir(dir: &Path, zone: &DnsName) -> Result<Vec<ZoneKey>, String> {
    let prefix = format!("K{}+", zone_file_name(zone));
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(Vec::new());
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".private"))
        })
        .collect();
    paths.sort();
    paths.iter().map(|p| load_key(p, zone)).collect()
}

/// `example.com.` as key file names spell it (BIND: the zone with its trailing dot).
fn zone_file_name(zone: &DnsName) -> String {
    let s = zone.to_string();
    if s.ends_with('.') { s } else { format!("{s}.") }
}

fn b64(s: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    let clean: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    base64::engine::general_purpose::STANDARD.decode(clean).ok()
}

/// One key: the `.private` file (Private-key-format v1.x: `Algorithm:` and `PrivateKey:`) and
/// the `.key` file beside it (the DNSKEY record: flags and public key).
fn load_key(private: &Path, zone: &DnsName) -> Result<ZoneKey, String> {
    let err = |what: String| format!("{}: {what}", private.display());
    let text = std::fs::read_to_string(private).map_err(|e| err(format!("cannot read: {e}")))?;
    let field = |name: &str| {
        text.lines().find_map(|l| {
            l.strip_prefix(name)
                .and_then(|r| r.strip_prefix(':'))
                .map(str::trim)
        })
    };
    let alg_field = field("Algorithm").ok_or_else(|| err("no `Algorithm:` line".into()))?;
    let algorithm = alg_field
        .split_whitespace()
        .next()
        .and_then(Algorithm::parse)
        .ok_or_else(|| {
            err(format!(
                "field Algorithm: {alg_field:?} is not supported (13 ECDSAP256SHA256 or 15 ED25519)"
            ))
        })?;
    let private_key = field("PrivateKey")
        .and_then(b64)
        .ok_or_else(|| err("field PrivateKey: missing or not base64".into()))?;
    let public_path = private.with_extension("key");
    let key_text = std::fs::read_to_string(&public_path)
        .map_err(|e| format!("{}: cannot read: {e}", public_path.display()))?;
    let dnskey_line = key_text
        .lines()
        .find(|l| !l.trim_start().starts_with(';') && l.contains("DNSKEY"))
        .ok_or_else(|| format!("{}: no DNSKEY record", public_path.display()))?;
    let after: Vec<&str> = dnskey_line
        .split_once("DNSKEY")
        .map(|(_, r)| r.split_whitespace().collect())
        .unwrap_or_default();
    let bad = |what: &str| format!("{}: DNSKEY {what}: {dnskey_line:?}", public_path.display());
    if after.len() < 4 {
        return Err(bad("needs flags, protocol, algorithm and key"));
    }
    let flags: u16 = after[0].parse().map_err(|_| bad("flags"))?;
    if flags != 256 && flags != 257 {
        return Err(bad("flags must be 256 (ZSK) or 257 (KSK/CSK)"));
    }
    if after[2].parse::<u8>().ok() != Some(algorithm.number()) {
        return Err(bad("algorithm differs from the .private file's"));
    }
    let public = b64(&after[3..].concat()).ok_or_else(|| bad("key is not base64"))?;
    let owner = dnskey_line.split_whitespace().next().unwrap_or("");
    if DnsName::parse(owner).ok().as_ref() != Some(zone) {
        return Err(bad(&format!("owner {owner:?} is not the zone {zone}")));
    }
    let signer = Signer::new(algorithm, &private_key, &public)
        .map_err(|e| err(format!("the private and public keys do not match: {e}")))?;
    // BIND writes the timing into the `.private` file (format v1.3) and as comments of the
    // `.key` file; either is read.
    let mut timing = KeyTiming::default();
    for (name, slot) in [
        ("Publish", &mut timing.publish),
        ("Activate", &mut timing.activate),
        ("Inactive", &mut timing.inactive),
        ("Delete", &mut timing.delete),
    ] {
        let from_key = key_text.lines().find_map(|l| {
            l.trim_start()
                .strip_prefix(';')
                .map(str::trim_start)
                .and_then(|l| l.strip_prefix(name))
                .and_then(|r| r.strip_prefix(':'))
                .map(str::trim)
        });
        if let Some(v) = field(name).or(from_key) {
            *slot = Some(parse_key_time(v).ok_or_else(|| {
                err(format!(
                    "field {name}: {v:?} is not a time (YYYYMMDDHHMMSS, UTC)"
                ))
            })?);
        }
    }
    let mut key = ZoneKey {
        algorithm,
        flags,
        public: public.into(),
        tag: 0,
        file: private.to_path_buf(),
        timing,
        signer,
    };
    key.tag = key_tag(&key.dnskey_rdata());
    Ok(key)
}

/// Generates a CSK (flags 257) for `zone` into `dir` as BIND-format files (the private one
/// mode 0600) and loads it back; without `dir`, only in memory.
fn make_key(dir: Option<&Path>, zone: &DnsName, algorithm: Algorithm) -> Result<ZoneKey, String> {
    let rng = SystemRandom::new();
    let shown = dir.map_or("(memory)".to_string(), |d| d.display().to_string());
    let fail = |e: String| format!("{shown}: generating a key for {zone}: {e}");
    // ring hands out keys as PKCS#8 documents of a fixed layout; the raw halves BIND's format
    // wants sit at known offsets behind known prefixes (checked, not assumed).
    let (private, public) = match algorithm {
        Algorithm::EcdsaP256 => {
            let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                .map_err(|e| fail(e.to_string()))?;
            let d = doc.as_ref();
            let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, d, &rng)
                .map_err(|e| fail(e.to_string()))?;
            let point = pair.public_key().as_ref().to_vec();
            const PRIVATE_AT: &[u8] = &[0x02, 0x01, 0x01, 0x04, 0x20];
            let at = d
                .windows(PRIVATE_AT.len())
                .position(|w| w == PRIVATE_AT)
                .ok_or_else(|| fail("unexpected PKCS#8 layout".into()))?
                + PRIVATE_AT.len();
            (d[at..at + 32].to_vec(), point[1..].to_vec())
        }
        Algorithm::Ed25519 => {
            let doc = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|e| fail(e.to_string()))?;
            let d = doc.as_ref();
            let pair = Ed25519KeyPair::from_pkcs8(d).map_err(|e| fail(e.to_string()))?;
            const SEED_AT: &[u8] = &[0x04, 0x22, 0x04, 0x20];
            let at = d
                .windows(SEED_AT.len())
                .position(|w| w == SEED_AT)
                .ok_or_else(|| fail("unexpected PKCS#8 layout".into()))?
                + SEED_AT.len();
            (d[at..at + 32].to_vec(), pair.public_key().as_ref().to_vec())
        }
    };
    use base64::Engine;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let mut dnskey = vec![1u8, 1, 3, algorithm.number()];
    dnskey.extend_from_slice(&public);
    let tag = key_tag(&dnskey);
    let Some(dir) = dir else {
        let signer = Signer::new(algorithm, &private, &public).map_err(|e| fail(e.to_string()))?;
        return Ok(ZoneKey {
            algorithm,
            flags: 257,
            public: public.into(),
            tag,
            file: PathBuf::new(),
            timing: KeyTiming::default(),
            signer,
        });
    };
    // Not `with_extension`: the zone's dots would be taken for one.
    let base = format!(
        "K{}+{:03}+{:05}",
        zone_file_name(zone),
        algorithm.number(),
        tag
    );
    let now = crate::dns::tsig::now();
    let key_text = format!(
        "; This is a key-signing key (CSK), keyid {tag}, for {zone}\n; Created by fedns at Unix time {now}\n{} IN DNSKEY 257 3 {} {}\n",
        zone_file_name(zone),
        algorithm.number(),
        b64(&public)
    );
    let private_text = format!(
        "Private-key-format: v1.3\nAlgorithm: {} ({})\nPrivateKey: {}\n",
        algorithm.number(),
        algorithm.mnemonic(),
        b64(&private)
    );
    let private_path = dir.join(format!("{base}.private"));
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&private_path)
            .map_err(|e| format!("{}: cannot create: {e}", private_path.display()))?;
        f.write_all(private_text.as_bytes())
            .map_err(|e| format!("{}: cannot write: {e}", private_path.display()))?;
    }
    let key_path = dir.join(format!("{base}.key"));
    std::fs::write(&key_path, key_text)
        .map_err(|e| format!("{}: cannot write: {e}", key_path.display()))?;
    tracing::info!(zone = %zone, tag, file = %private_path.display(), "generated a DNSSEC key (CSK)");
    load_key(&private_path, zone)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{ECDSA_P256_SHA256_FIXED, ED25519, UnparsedPublicKey};

    fn name(s: &str) -> DnsName {
        DnsName::parse(s).unwrap()
    }

    #[test]
    fn key_tag_matches_rfc_4034_example() {
        // The DNSKEY of RFC 4034 §5.4's DS example (dskey.example.com, key tag 60485).
        let key = b64(
            "AQOeiiR0GOMYkDshWoSKz9XzfwJr1AYtsmx3TGkJaNXVbfi/2pHm822aJ5iI9BMzNXxeYCmZDRD99WYwYqUSdjMmmAphXdvxegXd/M5+X7OrzKBaMbCVdFLUUh6DhweJBjEVv5f2wwjM9XzcnOf+EPbtG9DMBmADjFDc2w/rljwvFw==",
        )
        .unwrap();
        let mut rdata = vec![1, 0, 3, 5];
        rdata.extend_from_slice(&key);
        assert_eq!(key_tag(&rdata), 60485);
        let zone = name("dskey.example.com.");
        let mut input = zone.wire().to_vec();
        input.extend_from_slice(&rdata);
        let sha1 = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &input);
        let hex: String = sha1.as_ref().iter().map(|b| format!("{b:02X}")).collect();
        assert_eq!(hex, "2BB183AF5F22588179A53B0A98631FAD1A292118");
    }

    #[test]
    fn generated_keys_load_back_and_signatures_verify() {
        for alg in [Algorithm::EcdsaP256, Algorithm::Ed25519] {
            let dir = tempfile::tempdir().unwrap();
            let zone = name("example.com.");
            let all = zone_keys(dir.path(), &zone, alg, true).unwrap();
            let ksk = all[0].clone();
            assert_eq!((all.len(), ksk.flags), (1, 257), "a CSK");
            // Loading again finds the same key rather than making another.
            let again = zone_keys(dir.path(), &zone, alg, true).unwrap();
            assert_eq!(again[0].public, ksk.public);
            assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
            let validity = Validity {
                inception: 1,
                expiration: 2,
            };
            let keys = ZoneKeys::at(&zone, &all, 0, validity).unwrap();
            assert!(
                std::sync::Arc::ptr_eq(&keys.zsks[0], &ksk),
                "a CSK signs everything"
            );
            let owner = name("www.example.com.");
            let a = |o: u8| RData::A(std::net::Ipv4Addr::new(192, 0, 2, o));
            let sig = keys
                .sign_rrset(&owner, rtype::A, 300, &[a(2), a(1), a(2)])
                .unwrap();
            let RData::Opaque { rdata, .. } = &sig[0].data else {
                panic!()
            };
            // Rebuild the signed data as a validator does and check with ring's verifier.
            let fields_len = 18 + zone.wire().len();
            let mut data = rdata[..fields_len].to_vec();
            for o in [1u8, 2] {
                data.extend_from_slice(owner.wire());
                data.extend_from_slice(&[0, 1, 0, 1, 0, 0, 1, 44, 0, 4, 192, 0, 2, o]);
            }
            let public: Vec<u8> = match alg {
                Algorithm::EcdsaP256 => [&[4u8][..], &ksk.public].concat(),
                Algorithm::Ed25519 => ksk.public.to_vec(),
            };
            let verifier: &dyn ring::signature::VerificationAlgorithm = match alg {
                Algorithm::EcdsaP256 => &ECDSA_P256_SHA256_FIXED,
                Algorithm::Ed25519 => &ED25519,
            };
            UnparsedPublicKey::new(verifier, &public)
                .verify(&data, &rdata[fields_len..])
                .expect("signature verifies");
            assert_eq!(rdata[3], 3, "labels of www.example.com");
        }
    }

    /// A wildcard's RRSIG made per query verifies over the question as owner, with the
    /// question's labels; the wildcard's own RRSIG does not count its `*`.
    #[test]
    fn online_signatures_name_the_question() {
        let zone = name("example.com.");
        let ksk = std::sync::Arc::new(make_key(None, &zone, Algorithm::EcdsaP256).unwrap());
        let validity = Validity {
            inception: 1,
            expiration: 2,
        };
        let keys = ZoneKeys::at(&zone, std::slice::from_ref(&ksk), 0, validity).unwrap();
        let a = |o: u8| RData::A(std::net::Ipv4Addr::new(192, 0, 2, o));
        let set = canonical_set(&[a(9), a(8)]);
        let (records, fits) = ownerless_records(rtype::A, 300, &set, 255);
        assert!(fits);
        let RData::Opaque {
            rdata: template, ..
        } = keys.rrsig_template(rtype::A, 300)
        else {
            panic!()
        };
        // The body as the builder lays it out: something before the RRSIG's RDATA.
        let mut body = vec![0xaa; 7];
        body.extend_from_slice(&template);
        let qname = name("x.y.wild.example.com.");
        let sig = keys.sign_online(qname.wire(), &records, &body, 7).unwrap();
        sig.apply(&mut body);
        let rdata = &body[7..];
        assert_eq!(rdata[3], 5, "labels of the question");
        let fields_len = 18 + zone.wire().len();
        let mut data = rdata[..fields_len].to_vec();
        for o in [8u8, 9] {
            data.extend_from_slice(qname.wire());
            data.extend_from_slice(&[0, 1, 0, 1, 0, 0, 1, 44, 0, 4, 192, 0, 2, o]);
        }
        let public = [&[4u8][..], &ksk.public].concat();
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &public)
            .verify(&data, &rdata[fields_len..])
            .expect("signature verifies");
        // A question too long for the stack buffer is refused, not signed in part.
        let many: Vec<RData> = (0..=255).map(|o| a(o as u8)).collect();
        let (big, fits) = ownerless_records(rtype::A, 300, &canonical_set(&many), 255);
        assert!(!fits);
        assert!(keys.sign_online(&[0; 250], &big, &body, 7).is_none());
        // RFC 4034 §3.1.3: a wildcard owner's labels leave the `*` out.
        assert_eq!(qname_labels(name("*.wild.example.com.").wire()), 3);
    }

    /// A ZSK rollover by pre-publication (RFC 7583 §3.2), from BIND-style timing metadata: the
    /// next ZSK is published before it signs, takes over at its activation while the old one
    /// stays published, and the ring re-signs at each step.
    #[test]
    fn keys_roll_by_their_timing() {
        assert_eq!(parse_key_time("20260101000000"), Some(1_767_225_600));
        assert_eq!(parse_key_time("20260229000000 (bad)"), Some(1_772_323_200));
        assert_eq!(parse_key_time("2026-01-01"), None);
        let dir = tempfile::tempdir().unwrap();
        let zone = name("example.com.");
        // A KSK, and two keys turned into ZSKs with the timing of a rollover in 2030.
        zone_keys(dir.path(), &zone, Algorithm::EcdsaP256, true).unwrap();
        let roll = "20300101000000";
        for (timing, n) in [
            (format!("Inactive: {roll}\nDelete: 20300201000000\n"), "old"),
            (
                format!("Publish: 20200101000000\nActivate: {roll}\n"),
                "new",
            ),
        ] {
            let other = tempfile::tempdir().unwrap();
            let k = zone_keys(other.path(), &zone, Algorithm::EcdsaP256, true).unwrap();
            let private = k[0].file.clone();
            let text = std::fs::read_to_string(&private).unwrap() + &timing;
            let key = std::fs::read_to_string(private.with_extension("key"))
                .unwrap()
                .replace("DNSKEY 257", "DNSKEY 256");
            let file = |ext: &str| dir.path().join(format!("Kexample.com.+013+{n}.{ext}"));
            std::fs::write(file("private"), text).unwrap();
            std::fs::write(file("key"), key).unwrap();
        }
        let all = zone_keys(dir.path(), &zone, Algorithm::EcdsaP256, true).unwrap();
        assert_eq!(all.len(), 3);
        let by_file = |n: &str| {
            all.iter()
                .find(|k| k.file.to_string_lossy().contains(n))
                .unwrap()
                .tag
        };
        let (old, new) = (by_file("+old"), by_file("+new"));
        let v = Validity {
            inception: 0,
            expiration: 0,
        };
        let t = parse_key_time(roll).unwrap();
        let tags = |ks: &[std::sync::Arc<ZoneKey>]| ks.iter().map(|k| k.tag).collect::<Vec<_>>();
        let before = ZoneKeys::at(&zone, &all, t - 1, v).unwrap();
        assert_eq!(tags(&before.zsks), [old]);
        assert_eq!(before.published.len(), 3, "the next ZSK is published early");
        let after = ZoneKeys::at(&zone, &all, t, v).unwrap();
        assert_eq!(tags(&after.zsks), [new]);
        assert_eq!(
            after.published.len(),
            3,
            "the old ZSK stays until its Delete"
        );
        let gone = ZoneKeys::at(&zone, &all, parse_key_time("20300201000000").unwrap(), v).unwrap();
        assert_eq!(gone.published.len(), 2);
        assert_eq!(before.ksks.len(), 1);
        // DNSKEY, and the active KSK's CDS and CDNSKEY.
        assert_eq!(before.apex_records(3600).len(), 3 + 2);
        // The ring signs again when a key changes role, not only when signatures age.
        let mut ring = KeyRing {
            keys: vec![(zone.clone(), all.clone())],
            validity: 14 * 86400,
            resign_after: 7 * 86400,
            current: Vec::new(),
            made_at: 0,
        };
        ring.signing(t - 600);
        assert!(!ring.due(t - 1));
        assert!(ring.due(t));
        assert_eq!(tags(&ring.signing(t)[0].zsks), [new]);
        assert!(!ring.due(t + 60));
        // A zone whose only KSK is retired has nothing to sign its DNSKEY RRset with.
        let ksk = all.iter().find(|k| k.flags == 257).unwrap();
        let text = std::fs::read_to_string(&ksk.file).unwrap() + &format!("Inactive: {roll}\n");
        std::fs::write(&ksk.file, text).unwrap();
        let retired = std::sync::Arc::new(load_key(&ksk.file, &zone).unwrap());
        assert_eq!(retired.timing.inactive, Some(t));
        assert!(ZoneKeys::at(&zone, &[retired], t, v).is_none());
    }

    #[test]
    fn bad_key_files_name_the_file_and_field() {
        let dir = tempfile::tempdir().unwrap();
        let zone = name("example.com.");
        let p = dir.path().join("Kexample.com.+013+12345.private");
        std::fs::write(&p, "Private-key-format: v1.3\nAlgorithm: 8 (RSASHA256)\n").unwrap();
        let e = zone_keys(dir.path(), &zone, Algorithm::EcdsaP256, true).unwrap_err();
        assert!(e.contains("Kexample.com.+013+12345.private"), "{e}");
        assert!(e.contains("Algorithm") && e.contains("RSASHA256"), "{e}");
    }

    #[test]
    fn signatures_are_made_again_before_they_expire() {
        let zone = name("example.com.");
        let day = 86400;
        let mut ring = KeyRing::load(
            std::slice::from_ref(&zone),
            Path::new("/nonexistent/fedns-keys"),
            Algorithm::Ed25519,
            std::time::Duration::from_secs(14 * day as u64),
            std::time::Duration::from_secs(7 * day as u64),
            false,
        )
        .unwrap();
        assert_eq!(ring.generated(), [&zone]);
        let t0 = 1_800_000_000u32;
        assert!(ring.due(t0), "nothing signed yet");
        let first = ring.signing(t0)[0].validity;
        assert_eq!(first.inception, t0 - 3600);
        assert_eq!(first.expiration, t0 + 14 * day);
        // The same period (so builds keep their signatures) until it is a week old...
        assert!(!ring.due(t0 + 7 * day - 1));
        assert_eq!(ring.signing(t0 + 7 * day - 1)[0].validity, first);
        // ...then a new one, a week before the first expires.
        assert!(ring.due(t0 + 7 * day));
        let second = ring.signing(t0 + 7 * day)[0].validity;
        assert_eq!(second.inception, t0 + 7 * day - 3600);
        assert!(second.expiration > first.expiration);
    }

    #[test]
    fn bitmaps() {
        assert_eq!(
            type_bitmap(&[1, 15, 46, 47]),
            vec![0, 6, 0x40, 0x01, 0, 0, 0, 0x03]
        );
        let b = nxname_bitmap();
        assert_eq!(&b[..2], &[0, 17]);
        assert_eq!(b[2 + 5], 0x03);
        assert_eq!(b[2 + 16], 0x80);
    }
}
