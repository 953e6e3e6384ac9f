//! Response-rate limiting (RRL) in the style of BIND and Knot: UDP responses are counted per
//! (client prefix, response class) in a fixed table of one-second buckets; past the rate a
//! response is dropped, except every `slip`-th one, which is sent truncated (TC=1, no records)
//! so that a real client behind a spoofed flood retries over TCP and still gets its answer.
//!
//! The table belongs to one UDP worker (no locks, nothing shared but two counters read at
//! scrape time), so rates are per worker: `SO_REUSEPORT` sends all datagrams of one source
//! address and port to one worker, and a client spreading its source ports over many gets up to
//! `rate × workers` responses a second per bucket. With `key_by_name` the query name joins the
//! key of the classes whose answer is the name's own (positive, NODATA, ANY), as in Knot's
//! classic RRL, so one client asking for many names gets the rate for each; NXDOMAIN and errors
//! stay keyed by prefix alone, so a random-name flood is still limited as one. A hash collision
//! shares a bucket until one of the keys is seen again (as in Knot).

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntCounter, Opts};

/// Buckets per worker (a power of two): 16 bytes each.
const TABLE: usize = 1 << 14;

/// What RRL is configured to do (the `rrl:` config section).
#[derive(Clone, Debug, PartialEq)]
pub struct RrlConfig {
    /// Responses per second per (client prefix, response class); 0 disables RRL.
    pub responses_per_second: u32,
    /// Every `slip`-th limited response is sent truncated; 0: none, all are dropped.
    pub slip: u32,
    pub ipv4_prefix: u8,
    pub ipv6_prefix: u8,
    /// Clients never limited.
    pub exempt: Vec<(IpAddr, u8)>,
    /// The query name is part of the key of positive, NODATA and ANY answers.
    pub key_by_name: bool,
}

impl Default for RrlConfig {
    fn default() -> Self {
        RrlConfig {
            responses_per_second: 0,
            slip: 2,
            ipv4_prefix: 24,
            ipv6_prefix: 56,
            exempt: Vec::new(),
            key_by_name: false,
        }
    }
}

/// Kinds of responses counted apart (so a flood of NXDOMAINs does not starve positive answers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    Positive,
    Nodata,
    Nxdomain,
    /// FORMERR, REFUSED, SERVFAIL, NOTIMP, BADVERS, NOTAUTH.
    Error,
    /// Answers to ANY (the amplification favourite).
    Any,
}

/// What to do with one response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Send,
    /// Send truncated (TC=1, question only).
    Slip,
    Drop,
}

/// Limited and slipped responses of one worker (cache-line aligned, read at scrape time).
#[repr(align(128))]
#[derive(Default)]
pub struct RrlCounters {
    limited: AtomicU64,
    slipped: AtomicU64,
}

#[derive(Clone, Copy, Default)]
struct Bucket {
    key: u64,
    second: u32,
    count: u32,
}

/// One worker's RRL state.
pub struct Rrl {
    config: Arc<RrlConfig>,
    buckets: Box<[Bucket]>,
    /// Limited responses seen, for `slip`.
    limited: u32,
    counters: Arc<RrlCounters>,
}

impl Rrl {
    pub fn new(config: Arc<RrlConfig>, counters: Arc<RrlCounters>) -> Self {
        Rrl {
            config,
            buckets: vec![Bucket::default(); TABLE].into_boxed_slice(),
            limited: 0,
            counters,
        }
    }

    /// Counts one response of `class` to `client` for `qname` (lowercased wire; empty when the
    /// query had none) at `second` (any monotonic seconds).
    #[inline]
    pub fn check(&mut self, client: IpAddr, class: Class, qname: &[u8], second: u32) -> Verdict {
        let mut key = self.key(client, class);
        if self.config.key_by_name && matches!(class, Class::Positive | Class::Nodata | Class::Any)
        {
            key = with_name(key, qname);
        }
        let b = &mut self.buckets[(key as usize) & (TABLE - 1)];
        if b.key != key || b.second != second {
            *b = Bucket {
                key,
                second,
                count: 0,
            };
        }
        b.count = b.count.saturating_add(1);
        if b.count <= self.config.responses_per_second {
            return Verdict::Send;
        }
        self.limited_response(client)
    }

    #[cold]
    fn limited_response(&mut self, client: IpAddr) -> Verdict {
        if crate::config::allowed(&self.config.exempt, client) {
            return Verdict::Send;
        }
        self.limited = self.limited.wrapping_add(1);
        if self.config.slip > 0 && self.limited.is_multiple_of(self.config.slip) {
            self.counters.slipped.fetch_add(1, Relaxed);
            Verdict::Slip
        } else {
            self.counters.limited.fetch_add(1, Relaxed);
            Verdict::Drop
        }
    }

    /// Hash of the client's prefix and the class (never 0, the empty bucket's key).
    fn key(&self, client: IpAddr, class: Class) -> u64 {
        let (family, bits) = match client {
            IpAddr::V4(v4) => {
                let len = self.config.ipv4_prefix.min(32) as u32;
                let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
                (4u64, (u32::from(v4) & mask) as u128)
            }
            IpAddr::V6(v6) => {
                let len = self.config.ipv6_prefix.min(128) as u32;
                let mask = if len == 0 {
                    0
                } else {
                    u128::MAX << (128 - len)
                };
                (6u64, u128::from(v6) & mask)
            }
        };
        const K: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut h = (family << 8 | class as u64).wrapping_mul(K);
        h = (h ^ bits as u64).wrapping_mul(K);
        h = (h ^ (bits >> 64) as u64).wrapping_mul(K);
        (h ^ (h >> 29)) | 1
    }
}

/// `key` with `name` hashed in (never 0).
#[inline]
fn with_name(key: u64, name: &[u8]) -> u64 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut h = key;
    for chunk in name.chunks(8) {
        let mut word = [0u8; 8];
        word[..chunk.len()].copy_from_slice(chunk);
        h = (h.rotate_left(5) ^ u64::from_le_bytes(word)).wrapping_mul(K);
    }
    (h ^ (h >> 29)) | 1
}

/// Sums every worker's [`RrlCounters`] into `fedns_rrl_limited_total` and
/// `fedns_rrl_slipped_total` at scrape time.
#[derive(Clone, Default)]
pub struct RrlMetrics {
    workers: Arc<Mutex<Vec<Arc<RrlCounters>>>>,
}

impl RrlMetrics {
    /// Registers the two families in `registry`.
    pub fn register(registry: &prometheus::Registry) -> Self {
        let m = RrlMetrics::default();
        let _ = registry.register(Box::new(RrlCollector {
            workers: m.workers.clone(),
            descs: Self::families()
                .iter()
                .flat_map(|c| c.desc().into_iter().cloned())
                .collect(),
        }));
        m
    }

    /// A fresh counter block for one worker.
    pub fn worker(&self) -> Arc<RrlCounters> {
        let c = Arc::new(RrlCounters::default());
        self.workers.lock().expect("rrl workers").push(c.clone());
        c
    }

    fn families() -> [IntCounter; 2] {
        [
            IntCounter::with_opts(Opts::new(
                "fedns_rrl_limited_total",
                "UDP responses dropped by response-rate limiting",
            ))
            .expect("valid metric"),
            IntCounter::with_opts(Opts::new(
                "fedns_rrl_slipped_total",
                "Rate-limited UDP responses sent truncated (TC=1) instead of dropped",
            ))
            .expect("valid metric"),
        ]
    }
}

struct RrlCollector {
    workers: Arc<Mutex<Vec<Arc<RrlCounters>>>>,
    descs: Vec<Desc>,
}

impl Collector for RrlCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let [limited, slipped] = RrlMetrics::families();
        for w in self.workers.lock().expect("rrl workers").iter() {
            limited.inc_by(w.limited.load(Relaxed));
            slipped.inc_by(w.slipped.load(Relaxed));
        }
        [limited.collect(), slipped.collect()].concat()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rrl(rate: u32, slip: u32, exempt: &[&str]) -> (Rrl, Arc<RrlCounters>) {
        let counters = Arc::new(RrlCounters::default());
        let config = RrlConfig {
            responses_per_second: rate,
            slip,
            exempt: exempt
                .iter()
                .map(|e| crate::config::parse_cidr(e).unwrap())
                .collect(),
            ..RrlConfig::default()
        };
        (Rrl::new(Arc::new(config), counters.clone()), counters)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn over_the_rate_responses_drop_and_every_slip_th_is_truncated() {
        let (mut r, c) = rrl(5, 2, &[]);
        let verdicts: Vec<Verdict> = (0..11)
            .map(|_| r.check(ip("192.0.2.1"), Class::Positive, b"", 7))
            .collect();
        assert!(verdicts[..5].iter().all(|v| *v == Verdict::Send));
        assert_eq!(
            verdicts[5..],
            [
                Verdict::Drop,
                Verdict::Slip,
                Verdict::Drop,
                Verdict::Slip,
                Verdict::Drop,
                Verdict::Slip
            ]
        );
        assert_eq!((c.limited.load(Relaxed), c.slipped.load(Relaxed)), (3, 3));
        // The same /24, same class: limited too; another class or prefix: not.
        assert_ne!(
            r.check(ip("192.0.2.200"), Class::Positive, b"", 7),
            Verdict::Send
        );
        assert_eq!(
            r.check(ip("192.0.2.1"), Class::Nxdomain, b"", 7),
            Verdict::Send
        );
        assert_eq!(
            r.check(ip("192.0.3.1"), Class::Positive, b"", 7),
            Verdict::Send
        );
        // The next second starts afresh.
        assert_eq!(
            r.check(ip("192.0.2.1"), Class::Positive, b"", 8),
            Verdict::Send
        );
    }

    #[test]
    fn slip_zero_drops_all_and_exempt_networks_are_never_limited() {
        let (mut r, c) = rrl(1, 0, &["10.0.0.0/8", "2001:db8::/32"]);
        for _ in 0..10 {
            r.check(ip("192.0.2.1"), Class::Any, b"", 1);
            assert_eq!(r.check(ip("10.1.2.3"), Class::Any, b"", 1), Verdict::Send);
            assert_eq!(
                r.check(ip("2001:db8::1"), Class::Error, b"", 1),
                Verdict::Send
            );
        }
        assert_eq!((c.limited.load(Relaxed), c.slipped.load(Relaxed)), (9, 0));
    }

    #[test]
    fn ipv6_clients_share_a_bucket_per_prefix() {
        let (mut r, _) = rrl(2, 1, &[]);
        assert_eq!(
            r.check(ip("2001:db8:1:2::1"), Class::Positive, b"", 1),
            Verdict::Send
        );
        assert_eq!(
            r.check(ip("2001:db8:1:2::2"), Class::Positive, b"", 1),
            Verdict::Send
        );
        // Same /56.
        assert_eq!(
            r.check(ip("2001:db8:1:3::1"), Class::Positive, b"", 1),
            Verdict::Slip
        );
        // Another /56.
        assert_eq!(
            r.check(ip("2001:db8:1:100::1"), Class::Positive, b"", 1),
            Verdict::Send
        );
    }

    #[test]
    fn key_by_name_gives_each_name_its_rate_but_not_nxdomain_or_errors() {
        let name = |n: &str| crate::model::DnsName::parse(n).unwrap().wire().to_vec();
        let (a, b) = (name("a.example.com"), name("b.example.com"));
        let client = ip("192.0.2.1");
        // Off (the default): one bucket per prefix and class, whatever the name.
        let (mut r, _) = rrl(2, 0, &[]);
        assert_eq!(r.check(client, Class::Positive, &a, 1), Verdict::Send);
        assert_eq!(r.check(client, Class::Positive, &b, 1), Verdict::Send);
        assert_eq!(r.check(client, Class::Positive, &a, 1), Verdict::Drop);
        // On: each name has its own rate for positive, NODATA and ANY answers.
        let counters = Arc::new(RrlCounters::default());
        let config = RrlConfig {
            responses_per_second: 2,
            slip: 0,
            key_by_name: true,
            ..RrlConfig::default()
        };
        let mut r = Rrl::new(Arc::new(config), counters);
        for class in [Class::Positive, Class::Nodata, Class::Any] {
            for n in [&a, &b] {
                assert_eq!(r.check(client, class, n, 1), Verdict::Send, "{class:?}");
                assert_eq!(r.check(client, class, n, 1), Verdict::Send, "{class:?}");
                assert_eq!(r.check(client, class, n, 1), Verdict::Drop, "{class:?}");
            }
        }
        // NXDOMAIN and errors are keyed by prefix alone: a random-name flood is one bucket.
        for class in [Class::Nxdomain, Class::Error] {
            assert_eq!(r.check(client, class, &a, 1), Verdict::Send, "{class:?}");
            assert_eq!(r.check(client, class, &b, 1), Verdict::Send, "{class:?}");
            assert_eq!(
                r.check(client, class, &name("c.example.com"), 1),
                Verdict::Drop
            );
        }
    }

    #[test]
    fn metrics_sum_every_worker() {
        let registry = prometheus::Registry::new();
        let m = RrlMetrics::register(&registry);
        let (a, b) = (m.worker(), m.worker());
        a.limited.fetch_add(3, Relaxed);
        b.limited.fetch_add(4, Relaxed);
        b.slipped.fetch_add(2, Relaxed);
        let mut text = Vec::new();
        prometheus::Encoder::encode(
            &prometheus::TextEncoder::new(),
            &registry.gather(),
            &mut text,
        )
        .unwrap();
        let text = String::from_utf8(text).unwrap();
        assert!(text.contains("fedns_rrl_limited_total 7"), "{text}");
        assert!(text.contains("fedns_rrl_slipped_total 2"), "{text}");
    }
}
