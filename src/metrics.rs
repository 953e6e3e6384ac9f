//! Prometheus metrics (prefix `fedns_`).
//!
//! Query counters live in plain per-worker atomics ([`QueryStats`]) so the query path pays one
//! uncontended relaxed add per counter; they are summed into Prometheus families only when
//! `/metrics` is scraped. Everything else uses the `prometheus` crate directly.

use std::sync::atomic::{
    AtomicBool, AtomicU64, AtomicUsize, Ordering::Acquire, Ordering::Relaxed, Ordering::Release,
};
use std::sync::{Arc, Mutex, OnceLock};

use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, Bucket, LabelPair, MetricFamily, MetricType};
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

use crate::dns::respond::Transport;

const QTYPES: [(&str, u16); 12] = [
    ("A", 1),
    ("NS", 2),
    ("CNAME", 5),
    ("SOA", 6),
    ("PTR", 12),
    ("MX", 15),
    ("TXT", 16),
    ("AAAA", 28),
    ("SRV", 33),
    ("IXFR", 251),
    ("AXFR", 252),
    ("ANY", 255),
];
const QTYPE_SLOTS: usize = QTYPES.len() + 1; // + "other"
const RCODES: [(&str, u16); 8] = [
    ("NOERROR", 0),
    ("FORMERR", 1),
    ("SERVFAIL", 2),
    ("NXDOMAIN", 3),
    ("NOTIMP", 4),
    ("REFUSED", 5),
    ("NOTAUTH", 9),
    ("BADVERS", 16),
];
const RCODE_SLOTS: usize = RCODES.len() + 1;

/// Zones that get their own `zone` label; queries for further zones count as "other".
pub const MAX_ZONE_LABELS: usize = 32;
const ZONE_SLOTS: usize = MAX_ZONE_LABELS + 1; // + "other"
const ZONE_OTHER: usize = MAX_ZONE_LABELS;
const TRANSPORTS: [&str; 2] = ["udp", "tcp"];

/// Upper bounds of `fedns_request_duration_seconds`, in nanoseconds (10 µs to 1 s).
const DURATION_BOUNDS_NS: [u64; 16] = [
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
];
/// Upper bounds of `fedns_response_size_bytes` (CoreDNS's buckets).
const SIZE_BOUNDS: [u64; 14] = [
    0, 100, 200, 300, 400, 511, 1023, 2047, 4095, 8291, 16000, 32000, 48000, 64000,
];
/// A histogram's slots: one per bucket, "+Inf", then the sum.
const DURATION_SLOTS: usize = DURATION_BOUNDS_NS.len() + 2;
const SIZE_SLOTS: usize = SIZE_BOUNDS.len() + 2;

const REQ_BASE: usize = 0;
const RESP_BASE: usize = REQ_BASE + ZONE_SLOTS * TRANSPORTS.len() * QTYPE_SLOTS;
const TRUNCATED: usize = RESP_BASE + ZONE_SLOTS * RCODE_SLOTS;
const DROPPED: usize = TRUNCATED + 1;
const DURATION_BASE: usize = DROPPED + 1;
const SIZE_BASE: usize = DURATION_BASE + TRANSPORTS.len() * DURATION_SLOTS;
const SLOTS: usize = SIZE_BASE + TRANSPORTS.len() * SIZE_SLOTS;

/// The served zones that have a `zone` label, shared by every worker. Slots are append-only (a
/// zone keeps its slot, and so its counters, for the life of the process); a zone that is no
/// longer served is marked inactive and its queries count as "other". The query path reads it
/// with atomic loads only.
pub struct ZoneLabels {
    names: [OnceLock<Box<[u8]>>; MAX_ZONE_LABELS],
    active: [AtomicBool; MAX_ZONE_LABELS],
    len: AtomicUsize,
    /// Serialises writers (never taken on the query path).
    writer: Mutex<()>,
}

impl Default for ZoneLabels {
    fn default() -> Self {
        ZoneLabels {
            names: std::array::from_fn(|_| OnceLock::new()),
            active: std::array::from_fn(|_| AtomicBool::new(false)),
            len: AtomicUsize::new(0),
            writer: Mutex::new(()),
        }
    }
}

impl ZoneLabels {
    /// Makes `zones` (wire format, lowercased) the served zones. Returns the zones that found
    /// no free label slot.
    pub fn set_served<'a>(&self, zones: impl IntoIterator<Item = &'a [u8]>) -> Vec<&'a [u8]> {
        let _w = self.writer.lock().expect("zone labels");
        let len = self.len.load(Acquire);
        let mut keep = [false; MAX_ZONE_LABELS];
        let mut full = Vec::new();
        let mut next = len;
        for z in zones {
            match (0..next).find(|&i| self.names[i].get().is_some_and(|n| **n == *z)) {
                Some(i) => keep[i] = true,
                None if next < MAX_ZONE_LABELS => {
                    let _ = self.names[next].set(z.into());
                    keep[next] = true;
                    next += 1;
                }
                None => full.push(z),
            }
        }
        for (i, k) in keep.iter().enumerate() {
            self.active[i].store(*k, Release);
        }
        self.len.store(next, Release);
        full
    }

    /// The label slot of the zone that holds `qname` (wire format, lowercased): the longest
    /// matching active zone, else "other". No allocation, no lock.
    #[inline]
    fn slot(&self, qname: &[u8]) -> usize {
        let len = self.len.load(Acquire);
        if len == 0 {
            return ZONE_OTHER;
        }
        let mut pos = 0usize;
        while pos < qname.len() {
            let suffix = &qname[pos..];
            for i in 0..len {
                if let Some(n) = self.names[i].get()
                    && **n == *suffix
                    && self.active[i].load(Relaxed)
                {
                    return i;
                }
            }
            if qname[pos] == 0 {
                break;
            }
            pos += qname[pos] as usize + 1;
        }
        ZONE_OTHER
    }

    /// Label value of slot `i`: the zone name as CoreDNS writes it (`example.com.`).
    fn label(&self, i: usize) -> Option<String> {
        let wire = self.names.get(i)?.get()?;
        Some(crate::model::DnsName::from_wire_lowercase(wire).to_string())
    }
}

/// Counters of one serving worker. Cache-line aligned so workers never share a line.
#[repr(align(128))]
pub struct QueryStats {
    counters: [AtomicU64; SLOTS],
    zones: Arc<ZoneLabels>,
}

impl Default for QueryStats {
    fn default() -> Self {
        Self::new(Arc::default())
    }
}

/// The zone a query was counted under (returned by [`QueryStats::request`]).
#[derive(Clone, Copy, Debug)]
pub struct ZoneSlot(usize);

impl ZoneSlot {
    /// Queries without a parsable question.
    pub const OTHER: ZoneSlot = ZoneSlot(ZONE_OTHER);
}

impl QueryStats {
    fn new(zones: Arc<ZoneLabels>) -> Self {
        QueryStats {
            counters: std::array::from_fn(|_| AtomicU64::new(0)),
            zones,
        }
    }

    #[inline]
    fn add(&self, slot: usize, n: u64) {
        self.counters[slot].fetch_add(n, Relaxed);
    }

    /// Counts a parsed query for `qname` (lowercased wire format); returns its zone.
    #[inline]
    pub fn request(&self, transport: Transport, qtype: u16, qname: &[u8]) -> ZoneSlot {
        let zone = self.zones.slot(qname);
        let t = QTYPES
            .iter()
            .position(|(_, v)| *v == qtype)
            .unwrap_or(QTYPES.len());
        self.add(
            REQ_BASE + (zone * TRANSPORTS.len() + transport as usize) * QTYPE_SLOTS + t,
            1,
        );
        ZoneSlot(zone)
    }

    #[inline]
    pub fn response(&self, zone: ZoneSlot, rcode: u16) {
        let r = RCODES
            .iter()
            .position(|(_, v)| *v == rcode)
            .unwrap_or(RCODES.len());
        self.add(RESP_BASE + zone.0 * RCODE_SLOTS + r, 1);
    }

    /// Size of one response sent (without the TCP length prefix).
    #[inline]
    pub fn response_size(&self, transport: Transport, bytes: usize) {
        let base = SIZE_BASE + transport as usize * SIZE_SLOTS;
        let b = SIZE_BOUNDS
            .iter()
            .position(|&u| bytes as u64 <= u)
            .unwrap_or(SIZE_BOUNDS.len());
        self.add(base + b, 1);
        self.add(base + SIZE_SLOTS - 1, bytes as u64);
    }

    /// `count` queries answered in `elapsed` (from the moment they were read to the moment
    /// their responses were sent; a UDP batch's queries share the batch's time).
    #[inline]
    pub fn served(&self, transport: Transport, elapsed: std::time::Duration, count: usize) {
        if count == 0 {
            return;
        }
        let ns = elapsed.as_nanos().min(u64::MAX as u128) as u64;
        let base = DURATION_BASE + transport as usize * DURATION_SLOTS;
        let b = DURATION_BOUNDS_NS
            .iter()
            .position(|&u| ns <= u)
            .unwrap_or(DURATION_BOUNDS_NS.len());
        self.add(base + b, count as u64);
        self.add(base + DURATION_SLOTS - 1, ns.saturating_mul(count as u64));
    }

    #[inline]
    pub fn truncated(&self) {
        self.add(TRUNCATED, 1);
    }

    #[inline]
    pub fn dropped(&self) {
        self.add(DROPPED, 1);
    }
}

/// Sums every worker's [`QueryStats`] at scrape time.
struct QueryCollector {
    workers: Arc<Mutex<Vec<Arc<QueryStats>>>>,
    zones: Arc<ZoneLabels>,
    descs: Vec<Desc>,
}

const DURATION_NAME: &str = "fedns_request_duration_seconds";
const DURATION_HELP: &str = "Time from reading DNS queries to sending their responses, by transport (UDP: per receive batch)";
const SIZE_NAME: &str = "fedns_response_size_bytes";
const SIZE_HELP: &str = "Size of DNS responses sent, by transport";

impl QueryCollector {
    fn families() -> (IntCounterVec, IntCounterVec, IntCounterVec, IntCounterVec) {
        let requests = IntCounterVec::new(
            Opts::new(
                "fedns_requests_total",
                "DNS requests by zone, transport and query type",
            ),
            &["zone", "protocol", "type"],
        )
        .expect("valid metric");
        let responses = IntCounterVec::new(
            Opts::new("fedns_responses_total", "DNS responses by zone and rcode"),
            &["zone", "rcode"],
        )
        .expect("valid metric");
        let truncated = IntCounterVec::new(
            Opts::new("fedns_truncated_total", "UDP responses sent with TC=1"),
            &[],
        )
        .expect("valid metric");
        let dropped = IntCounterVec::new(
            Opts::new(
                "fedns_dropped_total",
                "Packets dropped unanswered (shorter than a header, or responses)",
            ),
            &[],
        )
        .expect("valid metric");
        (requests, responses, truncated, dropped)
    }

    fn histogram_descs() -> Vec<Desc> {
        [(DURATION_NAME, DURATION_HELP), (SIZE_NAME, SIZE_HELP)]
            .iter()
            .map(|(n, h)| {
                Desc::new(
                    n.to_string(),
                    h.to_string(),
                    vec!["protocol".into()],
                    Default::default(),
                )
                .expect("valid metric")
            })
            .collect()
    }

    /// One histogram family from per-transport slots: buckets, "+Inf", sum.
    fn histogram(
        name: &str,
        help: &str,
        bounds: &[f64],
        sums: &[u64],
        slots: usize,
        sum_scale: f64,
    ) -> MetricFamily {
        let mut family = MetricFamily::default();
        family.set_name(name.into());
        family.set_help(help.into());
        family.set_field_type(MetricType::HISTOGRAM);
        for (ti, transport) in TRANSPORTS.iter().enumerate() {
            let s = &sums[ti * slots..(ti + 1) * slots];
            let mut cumulative = 0u64;
            let mut buckets = Vec::with_capacity(bounds.len());
            for (i, &upper) in bounds.iter().enumerate() {
                cumulative += s[i];
                let mut b = Bucket::default();
                b.set_upper_bound(upper);
                b.set_cumulative_count(cumulative);
                buckets.push(b);
            }
            cumulative += s[bounds.len()];
            let mut h = proto::Histogram::default();
            h.set_bucket(buckets);
            h.set_sample_count(cumulative);
            h.set_sample_sum(s[slots - 1] as f64 * sum_scale);
            let mut label = LabelPair::default();
            label.set_name("protocol".into());
            label.set_value(transport.to_string());
            let mut m = proto::Metric::default();
            m.set_label(vec![label]);
            m.set_histogram(h);
            family.mut_metric().push(m);
        }
        family
    }
}

impl Collector for QueryCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut sums = vec![0u64; SLOTS];
        for w in self.workers.lock().expect("stats list").iter() {
            for (s, c) in sums.iter_mut().zip(&w.counters) {
                *s += c.load(Relaxed);
            }
        }
        let (requests, responses, truncated, dropped) = Self::families();
        let zone_label = |z: usize| {
            if z == ZONE_OTHER {
                Some("other".to_string())
            } else {
                self.zones.label(z)
            }
        };
        for zone in 0..ZONE_SLOTS {
            let Some(label) = zone_label(zone) else {
                continue;
            };
            for (ti, transport) in TRANSPORTS.iter().enumerate() {
                for slot in 0..QTYPE_SLOTS {
                    let n = sums[REQ_BASE + (zone * TRANSPORTS.len() + ti) * QTYPE_SLOTS + slot];
                    if n > 0 {
                        let name = QTYPES.get(slot).map_or("other", |(n, _)| n);
                        requests
                            .with_label_values(&[label.as_str(), transport, name])
                            .inc_by(n);
                    }
                }
            }
            for slot in 0..RCODE_SLOTS {
                let name = RCODES.get(slot).map_or("other", |(n, _)| n);
                responses
                    .with_label_values(&[label.as_str(), name])
                    .inc_by(sums[RESP_BASE + zone * RCODE_SLOTS + slot]);
            }
        }
        truncated
            .with_label_values(&[] as &[&str])
            .inc_by(sums[TRUNCATED]);
        dropped
            .with_label_values(&[] as &[&str])
            .inc_by(sums[DROPPED]);
        let duration_bounds: Vec<f64> =
            DURATION_BOUNDS_NS.iter().map(|&n| n as f64 / 1e9).collect();
        let size_bounds: Vec<f64> = SIZE_BOUNDS.iter().map(|&n| n as f64).collect();
        [
            requests.collect(),
            responses.collect(),
            truncated.collect(),
            dropped.collect(),
            vec![
                Self::histogram(
                    DURATION_NAME,
                    DURATION_HELP,
                    &duration_bounds,
                    &sums[DURATION_BASE..SIZE_BASE],
                    DURATION_SLOTS,
                    1e-9,
                ),
                Self::histogram(
                    SIZE_NAME,
                    SIZE_HELP,
                    &size_bounds,
                    &sums[SIZE_BASE..SLOTS],
                    SIZE_SLOTS,
                    1.0,
                ),
            ],
        ]
        .concat()
    }
}

/// All of fedns's metrics and the registry that renders them.
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    workers: Arc<Mutex<Vec<Arc<QueryStats>>>>,
    /// The served zones that label request and response counters.
    pub zones: Arc<ZoneLabels>,
    pub table_generation: IntGauge,
    pub table_records: IntGauge,
    pub table_names: IntGauge,
    pub table_serial: IntGauge,
    pub endpoints_outside: IntGauge,
    pub publish_duration: Histogram,
    /// RRSIGs made at table build (per-query ones are not counted: the query path stays free
    /// of shared counters).
    pub dnssec_signatures: IntCounter,
    pub source_up: IntGaugeVec,
    pub source_errors: IntCounterVec,
    /// Keys held in memory from etcd (read mode).
    pub etcd_keys: IntGauge,
    /// etcd names (zone apexes and the like) whose served answers wait for the aggregate worker.
    pub etcd_pending_aggregates: IntGauge,
    /// etcd values skipped because they are not valid SkyDNS JSON.
    pub etcd_invalid_values: IntCounter,
    /// etcd connection losses and failed attempts (read and publish).
    pub etcd_reconnects: IntCounter,
    /// 1 while this instance is the elected etcd publisher.
    pub etcd_publisher_leader: IntGauge,
    /// Keys written or deleted in etcd by the publisher.
    pub etcd_publish_writes: IntCounter,
    pub probe_shards_down: IntGauge,
    pub probe_fail_static: IntGauge,
    /// Probed addresses that are down, by reason (`crate::probe::REASONS`).
    pub probe_targets_down: IntGaugeVec,
    /// 1 when the last reload of the config file was valid (0: rejected, old config runs).
    pub config_reload_successful: IntGauge,
    /// Unix time of the last valid config reload (0: none since start).
    pub config_reload_timestamp: IntGauge,
    /// 1 while the config file holds settings that take effect only after a restart.
    pub config_restart_pending: IntGauge,
    /// NOTIFY messages per secondary and outcome (`acked`, `failed`: no answer after retries).
    pub notify: IntCounterVec,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let workers = Arc::new(Mutex::new(Vec::new()));
        let zones = Arc::new(ZoneLabels::default());
        let (a, b, c, d) = QueryCollector::families();
        let mut descs: Vec<Desc> = [a.desc(), b.desc(), c.desc(), d.desc()]
            .concat()
            .into_iter()
            .cloned()
            .collect();
        descs.extend(QueryCollector::histogram_descs());
        registry
            .register(Box::new(QueryCollector {
                workers: workers.clone(),
                zones: zones.clone(),
                descs,
            }))
            .expect("register query metrics");
        // process_cpu_seconds_total, process_resident_memory_bytes, process_open_fds, ...
        registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("register process metrics");
        let build_info = IntGaugeVec::new(
            Opts::new(
                "fedns_build_info",
                "Always 1; the labels say which build of fedns this is",
            ),
            &["version", "commit"],
        )
        .expect("valid metric");
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), env!("FEDNS_COMMIT")])
            .set(1);
        registry.register(Box::new(build_info)).expect("register");
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid metric");
            registry.register(Box::new(g.clone())).expect("register");
            g
        };
        let table_generation = gauge(
            "fedns_table_generation",
            "Generation of the published answer table",
        );
        let table_records = gauge(
            "fedns_table_records",
            "Records in the published answer table",
        );
        let table_names = gauge("fedns_table_names", "Names in the published answer table");
        let endpoints_outside = gauge(
            "fedns_dns_endpoint_names_outside_zones",
            "DNSEndpoint names not served because they are outside every served zone",
        );
        let table_serial = gauge(
            "fedns_table_serial",
            "SOA serial of the published answer table",
        );
        // Metrics of optional sources are registered only when the source is configured
        // (`register_etcd`, `register_probes`); unregistered, they count into the void.
        let unregistered_gauge =
            |name: &str, help: &str| IntGauge::new(name, help).expect("valid metric");
        let probe_shards_down = unregistered_gauge(
            "fedns_probe_shards_down",
            "Shards whose active probes fail (left out of answers unless fail static)",
        );
        let probe_fail_static = unregistered_gauge(
            "fedns_probe_fail_static_services",
            "Services whose every shard fails its probes and which are served from their last healthy set anyway",
        );
        let probe_targets_down = IntGaugeVec::new(
            Opts::new(
                "fedns_probe_targets_down",
                "Probed load-balancer addresses that are down, by the reason of their last failure",
            ),
            &["reason"],
        )
        .expect("valid metric");
        for r in crate::probe::REASONS {
            probe_targets_down.with_label_values(&[r]).set(0);
        }
        let publish_duration = Histogram::with_opts(
            HistogramOpts::new(
                "fedns_publish_duration_seconds",
                "Time to build and publish one answer table",
            )
            .buckets(vec![0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0]),
        )
        .expect("valid metric");
        registry
            .register(Box::new(publish_duration.clone()))
            .expect("register");
        let dnssec_signatures = IntCounter::new(
            "fedns_dnssec_signatures_total",
            "RRSIGs made while building answer tables and for transfers of signed zones",
        )
        .expect("valid metric");
        registry
            .register(Box::new(dnssec_signatures.clone()))
            .expect("register");
        let source_up = IntGaugeVec::new(
            Opts::new(
                "fedns_source_up",
                "1 when the source's last load succeeded, 0 when it failed (last good data kept)",
            ),
            &["source"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(source_up.clone()))
            .expect("register");
        let source_errors = IntCounterVec::new(
            Opts::new("fedns_source_errors_total", "Failed loads per source"),
            &["source"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(source_errors.clone()))
            .expect("register");
        let config_reload_successful = gauge(
            "fedns_config_last_reload_successful",
            "1 when the last reload of the config file was valid (0: rejected, the running config stays)",
        );
        config_reload_successful.set(1);
        let config_reload_timestamp = gauge(
            "fedns_config_last_reload_success_timestamp_seconds",
            "Unix time of the last valid config reload (0: none since start)",
        );
        let config_restart_pending = gauge(
            "fedns_config_restart_pending",
            "1 while the config file holds changed settings that take effect only after a restart",
        );
        let counter = |name: &str, help: &str| IntCounter::new(name, help).expect("valid metric");
        let etcd_keys = unregistered_gauge("fedns_etcd_keys", "Keys held in memory from etcd");
        let etcd_pending_aggregates = unregistered_gauge(
            "fedns_etcd_pending_aggregates",
            "etcd names reading a large subtree whose served answers are older than the data",
        );
        let etcd_invalid_values = counter(
            "fedns_etcd_invalid_values_total",
            "etcd values skipped because they are not valid SkyDNS JSON",
        );
        let etcd_reconnects = counter(
            "fedns_etcd_reconnects_total",
            "etcd connections lost or failed (the last copy keeps serving)",
        );
        let etcd_publisher_leader = unregistered_gauge(
            "fedns_etcd_publisher_leader",
            "1 while this instance is the elected etcd publisher",
        );
        let etcd_publish_writes = counter(
            "fedns_etcd_publish_writes_total",
            "Keys put or deleted in etcd by the publisher",
        );
        let notify = IntCounterVec::new(
            Opts::new(
                "fedns_notify_total",
                "NOTIFY messages to secondaries by outcome: acked, or failed after every retry",
            ),
            &["secondary", "result"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(notify.clone()))
            .expect("register");
        Metrics {
            notify,
            etcd_keys,
            etcd_pending_aggregates,
            etcd_invalid_values,
            etcd_reconnects,
            etcd_publisher_leader,
            etcd_publish_writes,
            registry,
            workers,
            zones,
            table_generation,
            table_records,
            table_names,
            table_serial,
            endpoints_outside,
            publish_duration,
            dnssec_signatures,
            source_up,
            source_errors,
            probe_shards_down,
            probe_fail_static,
            probe_targets_down,
            config_reload_successful,
            config_reload_timestamp,
            config_restart_pending,
        }
    }

    /// Exports the etcd metrics (only when etcd is configured).
    pub fn register_etcd(&self) {
        let r = &self.registry;
        let _ = r.register(Box::new(self.etcd_keys.clone()));
        let _ = r.register(Box::new(self.etcd_pending_aggregates.clone()));
        let _ = r.register(Box::new(self.etcd_invalid_values.clone()));
        let _ = r.register(Box::new(self.etcd_reconnects.clone()));
        let _ = r.register(Box::new(self.etcd_publisher_leader.clone()));
        let _ = r.register(Box::new(self.etcd_publish_writes.clone()));
    }

    /// Exports the active probe metrics (only when probes are configured).
    pub fn register_probes(&self) {
        let _ = self
            .registry
            .register(Box::new(self.probe_shards_down.clone()));
        let _ = self
            .registry
            .register(Box::new(self.probe_fail_static.clone()));
        let _ = self
            .registry
            .register(Box::new(self.probe_targets_down.clone()));
    }

    /// Starts the error count of `source` at 0, so that `rate()` and `increase()` see its
    /// first error.
    pub fn register_source(&self, source: &str) {
        self.source_errors.with_label_values(&[source]);
    }

    /// A fresh counter block for one serving worker.
    pub fn worker(&self) -> Arc<QueryStats> {
        let s = Arc::new(QueryStats::new(self.zones.clone()));
        self.workers.lock().expect("stats list").push(s.clone());
        s
    }

    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding");
        String::from_utf8(buf).expect("prometheus text is UTF-8")
    }
}
