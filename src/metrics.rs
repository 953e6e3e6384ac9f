//! Prometheus metrics (prefix `fedns_`).
//!
//! Query counters live in plain per-worker atomics ([`QueryStats`]) so the query path pays one
//! uncontended relaxed add per counter; they are summed into Prometheus families only when
//! `/metrics` is scraped. Everything else uses the `prometheus` crate directly.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
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
const RCODES: [(&str, u16); 7] = [
    ("NOERROR", 0),
    ("FORMERR", 1),
    ("SERVFAIL", 2),
    ("NXDOMAIN", 3),
    ("NOTIMP", 4),
    ("REFUSED", 5),
    ("BADVERS", 16),
];
const RCODE_SLOTS: usize = RCODES.len() + 1;

const REQ_BASE: usize = 0;
const RESP_BASE: usize = 2 * QTYPE_SLOTS;
const TRUNCATED: usize = RESP_BASE + RCODE_SLOTS;
const DROPPED: usize = TRUNCATED + 1;
const SLOTS: usize = DROPPED + 1;

/// Counters of one serving worker. Cache-line aligned so workers never share a line.
#[repr(align(128))]
pub struct QueryStats {
    counters: [AtomicU64; SLOTS],
}

impl Default for QueryStats {
    fn default() -> Self {
        QueryStats {
            counters: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl QueryStats {
    #[inline]
    fn bump(&self, slot: usize) {
        self.counters[slot].fetch_add(1, Relaxed);
    }

    #[inline]
    pub fn request(&self, transport: Transport, qtype: u16) {
        let t = QTYPES
            .iter()
            .position(|(_, v)| *v == qtype)
            .unwrap_or(QTYPES.len());
        self.bump(REQ_BASE + (transport as usize) * QTYPE_SLOTS + t);
    }

    #[inline]
    pub fn response(&self, rcode: u16) {
        let r = RCODES
            .iter()
            .position(|(_, v)| *v == rcode)
            .unwrap_or(RCODES.len());
        self.bump(RESP_BASE + r);
    }

    #[inline]
    pub fn truncated(&self) {
        self.bump(TRUNCATED);
    }

    #[inline]
    pub fn dropped(&self) {
        self.bump(DROPPED);
    }
}

/// Sums every worker's [`QueryStats`] at scrape time.
struct QueryCollector {
    workers: Arc<Mutex<Vec<Arc<QueryStats>>>>,
    descs: Vec<Desc>,
}

impl QueryCollector {
    fn families() -> (IntCounterVec, IntCounterVec, IntCounterVec, IntCounterVec) {
        let requests = IntCounterVec::new(
            Opts::new(
                "fedns_requests_total",
                "DNS requests by transport and query type",
            ),
            &["protocol", "type"],
        )
        .expect("valid metric");
        let responses = IntCounterVec::new(
            Opts::new("fedns_responses_total", "DNS responses by rcode"),
            &["rcode"],
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
}

impl Collector for QueryCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut sums = [0u64; SLOTS];
        for w in self.workers.lock().expect("stats list").iter() {
            for (s, c) in sums.iter_mut().zip(&w.counters) {
                *s += c.load(Relaxed);
            }
        }
        let (requests, responses, truncated, dropped) = Self::families();
        for (ti, transport) in ["udp", "tcp"].iter().enumerate() {
            for slot in 0..QTYPE_SLOTS {
                let n = sums[REQ_BASE + ti * QTYPE_SLOTS + slot];
                if n > 0 {
                    let name = QTYPES.get(slot).map_or("other", |(n, _)| n);
                    requests.with_label_values(&[transport, name]).inc_by(n);
                }
            }
        }
        for slot in 0..RCODE_SLOTS {
            let name = RCODES.get(slot).map_or("other", |(n, _)| n);
            responses
                .with_label_values(&[name])
                .inc_by(sums[RESP_BASE + slot]);
        }
        truncated
            .with_label_values(&[] as &[&str])
            .inc_by(sums[TRUNCATED]);
        dropped
            .with_label_values(&[] as &[&str])
            .inc_by(sums[DROPPED]);
        [
            requests.collect(),
            responses.collect(),
            truncated.collect(),
            dropped.collect(),
        ]
        .concat()
    }
}

/// All of fedns's metrics and the registry that renders them.
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    workers: Arc<Mutex<Vec<Arc<QueryStats>>>>,
    pub table_generation: IntGauge,
    pub table_records: IntGauge,
    pub table_names: IntGauge,
    pub table_serial: IntGauge,
    pub publish_duration: Histogram,
    pub source_up: IntGaugeVec,
    pub source_errors: IntCounterVec,
    /// Keys held in memory from etcd (read mode).
    pub etcd_keys: IntGauge,
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
        let (a, b, c, d) = QueryCollector::families();
        let descs = [a.desc(), b.desc(), c.desc(), d.desc()]
            .concat()
            .into_iter()
            .cloned()
            .collect();
        registry
            .register(Box::new(QueryCollector {
                workers: workers.clone(),
                descs,
            }))
            .expect("register query metrics");
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
        let table_serial = gauge(
            "fedns_table_serial",
            "SOA serial of the published answer table",
        );
        let probe_shards_down = gauge(
            "fedns_probe_shards_down",
            "Shards whose active probes fail (left out of answers unless fail static)",
        );
        let probe_fail_static = gauge(
            "fedns_probe_fail_static_services",
            "Services whose every shard fails its probes and which are served from their last healthy set anyway",
        );
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
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid metric");
            registry.register(Box::new(c.clone())).expect("register");
            c
        };
        let etcd_keys = gauge("fedns_etcd_keys", "Keys held in memory from etcd");
        let etcd_invalid_values = counter(
            "fedns_etcd_invalid_values_total",
            "etcd values skipped because they are not valid SkyDNS JSON",
        );
        let etcd_reconnects = counter(
            "fedns_etcd_reconnects_total",
            "etcd connections lost or failed (the last copy keeps serving)",
        );
        let etcd_publisher_leader = gauge(
            "fedns_etcd_publisher_leader",
            "1 while this instance is the elected etcd publisher",
        );
        let etcd_publish_writes = counter(
            "fedns_etcd_publish_writes_total",
            "Keys put or deleted in etcd by the publisher",
        );
        Metrics {
            etcd_keys,
            etcd_invalid_values,
            etcd_reconnects,
            etcd_publisher_leader,
            etcd_publish_writes,
            registry,
            workers,
            table_generation,
            table_records,
            table_names,
            table_serial,
            publish_duration,
            source_up,
            source_errors,
            probe_shards_down,
            probe_fail_static,
        }
    }

    /// A fresh counter block for one serving worker.
    pub fn worker(&self) -> Arc<QueryStats> {
        let s = Arc::new(QueryStats::default());
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
