//! The merger: the only writer of the answer table.
//!
//! It keeps the latest snapshot of every source, and whenever one changes it builds a new
//! [`Table`] off the query path and publishes it with one atomic swap. Guarantees: tables are
//! published in order, each with a higher SOA serial than the last (also across restarts: the
//! serial is at least the current Unix time and, with a state dir, above the last one written);
//! a source that stops sending keeps its last snapshot in every later table.
//!
//! It also owns the client [`Locator`]: a reloaded `geo` section arrives as [`Input::Geo`], the
//! build cache starts afresh with the new locations, and the new locator is published inside
//! the table laid out for it, so the query path never pairs a locator with another's answers.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;

use crate::answers::{BuildCache, BuildInput, FederationRecords, build};
use crate::geo::Locator;
use crate::model::{Federation, RData, StaticZone};
use crate::server::Shared;
use crate::sources::{Snapshot, Update};

/// Hands out SOA serials that never go backwards: above the last one handed out (kept in
/// `state_dir/serial`), and at least the Unix time so that even a lost state file only goes
/// backwards if publishes outran the clock.
pub struct SerialClock {
    last: u32,
    file: Option<PathBuf>,
    warned: bool,
}

impl SerialClock {
    /// `state_dir`: where the last serial is kept across restarts (`None`: memory only, for
    /// `check` and tests).
    pub fn new(state_dir: Option<PathBuf>) -> Self {
        let file = state_dir.map(|d| d.join("serial"));
        let last = file
            .as_ref()
            .and_then(|f| std::fs::read_to_string(f).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        SerialClock {
            last,
            file,
            warned: false,
        }
    }

    /// The next serial: above the last one, at least the Unix time, at least `floor`.
    pub fn next(&mut self, floor: u32) -> u32 {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as u32)
            .unwrap_or(0);
        self.last = self.last.saturating_add(1).max(now).max(floor);
        if let Some(f) = &self.file {
            let tmp = f.with_extension("tmp");
            let written = std::fs::create_dir_all(f.parent().unwrap_or(f))
                .and_then(|_| std::fs::write(&tmp, format!("{}\n", self.last)))
                .and_then(|_| std::fs::rename(&tmp, f));
            if let Err(e) = written
                && !std::mem::replace(&mut self.warned, true)
            {
                tracing::warn!(file = %f.display(), error = %e, "cannot persist the SOA serial");
            }
        }
        self.last
    }
}

/// Waits (bounded) until no query holds `old`, then drops it on this thread.
fn unix_now() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs().min(u32::MAX as u64) as u32)
}

fn retire(old: Arc<crate::table::Table>) {
    let deadline = Instant::now() + std::time::Duration::from_millis(200);
    while Arc::strong_count(&old) > 1 && Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
    drop(old);
}

/// Hands freed memory back to the system after a large turnover (`fresh`: segments of the new
/// table not shared with the old), or at most every [`TRIM_EVERY`] otherwise: glibc would keep a
/// big build's peak, or a large federation file's parse, in its arenas, but trimming scans the
/// whole heap, which costs more than a small change's build.
fn trim(fresh: usize, last: &mut Instant) {
    const TRIM_EVERY: std::time::Duration = std::time::Duration::from_secs(10);
    if fresh < crate::table::SEGMENTS / 4 && last.elapsed() < TRIM_EVERY {
        return;
    }
    *last = Instant::now();
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory held by the allocator.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// What the merger is sent.
pub enum Input {
    /// A source's new snapshot.
    Update(Update),
    /// New client locations (a reloaded `geo` section).
    Geo(Arc<Locator>),
    /// The signed zones' keys read again (a key added or changed in `keys_dir`: a rollover).
    Keys(Box<crate::dns::dnssec::KeyRing>),
    /// Deferred etcd aggregates, answered by the aggregate worker.
    Settled(Box<crate::answers::skydns::Settled>),
}

impl From<Update> for Input {
    fn from(u: Update) -> Input {
        Input::Update(u)
    }
}

/// A DNSSEC re-signing tick (no data of its own).
fn is_tick(input: &Input) -> bool {
    matches!(input, Input::Update(u) if matches!(*u.snapshot, Snapshot::Resign))
}

pub struct Merger {
    /// Client locations the cache's per-location answers are laid out for.
    locator: Arc<Locator>,
    snapshots: BTreeMap<String, Arc<Snapshot>>,
    serial: SerialClock,
    generation: u64,
    shared: Arc<Shared>,
    federations_out: Option<tokio::sync::watch::Sender<Arc<FederationRecords>>>,
    /// What the last build leaves for the next one (encoded answers of unchanged names).
    cache: BuildCache,
    /// When the heap was last trimmed.
    last_trim: Instant,
    /// RRSIGs made so far that the signing metric counts.
    signatures_counted: u64,
    /// Services currently served despite failing every probe.
    fail_static: std::collections::BTreeSet<String>,
    /// DNSSEC: the keys of the signed zones (`None`: nothing is signed).
    keys: Option<crate::dns::dnssec::KeyRing>,
    /// The aggregate worker's job queue (`None`: aggregates are answered in the build).
    aggregates: Option<std::sync::mpsc::Sender<crate::answers::skydns::Job>>,
}

impl Merger {
    pub fn new(shared: Arc<Shared>, serial: SerialClock, locator: Arc<Locator>) -> Self {
        Merger {
            locator,
            snapshots: BTreeMap::new(),
            serial,
            generation: 0,
            shared,
            federations_out: None,
            cache: Default::default(),
            fail_static: Default::default(),
            last_trim: Instant::now(),
            signatures_counted: 0,
            keys: None,
            aggregates: None,
        }
    }

    /// Answers etcd aggregates (names reading a large subtree: a zone apex, its `*.`/`any.`
    /// forms, CNAMEs into it) on a worker thread, so a put is published without waiting for
    /// them; the worker sends its answers back through `tx`, as [`Input::Settled`], and the
    /// next table serves them. It holds `tx` weakly: it stops once the merger's inputs close.
    pub fn settle_through(&mut self, tx: &mpsc::Sender<Input>) -> std::io::Result<()> {
        let (jobs, queue) = std::sync::mpsc::channel::<crate::answers::skydns::Job>();
        let tx = tx.downgrade();
        std::thread::Builder::new()
            .name("etcd-aggregates".into())
            .spawn(move || {
                for job in queue {
                    let names = job.len();
                    let started = Instant::now();
                    let settled = job.run();
                    tracing::debug!(
                        names,
                        ms = format_args!("{:.1}", started.elapsed().as_secs_f64() * 1e3),
                        "etcd aggregates answered"
                    );
                    let Some(tx) = tx.upgrade() else { return };
                    if tx.blocking_send(Input::Settled(Box::new(settled))).is_err() {
                        return;
                    }
                }
            })?;
        self.aggregates = Some(jobs);
        self.cache
            .defer_aggregates(crate::answers::skydns::AGGREGATE_MIN);
        Ok(())
    }

    /// Signs the zones `keys` holds in every table from now on.
    pub fn sign_with(&mut self, keys: crate::dns::dnssec::KeyRing) {
        self.keys = Some(keys);
    }

    /// Sends the federation records of every published table to `tx` (etcd publish mode).
    pub fn publish_federations_to(
        &mut self,
        tx: tokio::sync::watch::Sender<Arc<FederationRecords>>,
    ) {
        self.federations_out = Some(tx);
    }

    pub fn apply(&mut self, update: Update) {
        if matches!(*update.snapshot, Snapshot::Gone) {
            self.snapshots.remove(&update.source);
            return;
        }
        self.snapshots.insert(update.source, update.snapshot);
        // `update.taken` is dropped here: the source may send again.
    }

    /// Like [`Merger::apply`], but keeps the source's acknowledgement until the next publish.
    fn apply_held(&mut self, input: Input, held: &mut Vec<tokio::sync::oneshot::Sender<()>>) {
        match input {
            Input::Update(update) => {
                held.extend(update.taken);
                if matches!(*update.snapshot, Snapshot::Gone) {
                    self.snapshots.remove(&update.source);
                } else {
                    self.snapshots.insert(update.source, update.snapshot);
                }
            }
            Input::Settled(settled) => self.cache.settle(*settled),
            Input::Keys(keys) => {
                // A new ring has made no signatures yet: the next build signs everything.
                tracing::info!("dnssec: keys read again; signing every answer with them");
                self.keys = Some(*keys);
            }
            Input::Geo(locator) => {
                // Location ids change meaning: nothing cached per location can be kept.
                self.locator = locator;
                self.cache.start_afresh();
                tracing::info!(
                    locations = self.locator.locations().len(),
                    "client locations changed; laying every answer out again"
                );
            }
        }
    }

    /// Builds a table from the current snapshots and makes it the one the query path reads.
    pub fn publish(&mut self) {
        let started = Instant::now();
        let mut zones: Vec<StaticZone> = Vec::new();
        let mut federations: Vec<Federation> = Vec::new();
        let mut etcd = Vec::new();
        let mut verdicts = None;
        let snapshots: Vec<Arc<Snapshot>> = self.snapshots.values().cloned().collect();
        for snapshot in &snapshots {
            match &**snapshot {
                Snapshot::Zones(z) => zones.extend(z.iter().cloned()),
                Snapshot::Federation(f) => federations.push((**f).clone()),
                Snapshot::Etcd(e) => etcd.push(&**e),
                Snapshot::Probes(v) => verdicts = Some(v),
                Snapshot::Gone | Snapshot::Resign => {}
            }
        }
        if let Some(v) = verdicts {
            self.apply_probes(&mut federations, v);
        }
        let floor = zones
            .iter()
            .flat_map(|z| &z.records)
            .filter_map(|r| match &r.data {
                RData::Soa(s) => Some(s.serial),
                _ => None,
            })
            .max()
            .unwrap_or(0);
        self.generation += 1;
        let serial = self.serial.next(floor);
        let prepared = started.elapsed();
        let resigned = self.keys.as_ref().is_some_and(|k| k.due(unix_now()));
        let signing: Vec<_> = match &mut self.keys {
            Some(k) => k.signing(unix_now()).to_vec(),
            None => Vec::new(),
        };
        if resigned {
            tracing::info!(
                zones = signing.len(),
                "dnssec: signing every answer with a new validity period"
            );
        }
        let signatures_before = crate::dns::dnssec::signatures_made();
        let built = build(BuildInput {
            signing: &signing,
            locator: &self.locator,
            zones: &zones,
            federations: &federations,
            etcd: &etcd,
            cache: Some(&mut self.cache),
            serial,
            generation: self.generation,
        });
        let built_at = started.elapsed();
        let jobs = self.cache.take_jobs();
        match &self.aggregates {
            Some(worker) => {
                for job in jobs {
                    if worker.send(job).is_err() {
                        tracing::warn!("the etcd aggregate worker is gone");
                    }
                }
            }
            None => debug_assert!(jobs.is_empty(), "jobs made without a worker"),
        }
        let pending = self.cache.pending_aggregates();
        let signatures_now = crate::dns::dnssec::signatures_made();
        let signatures = signatures_now - signatures_before;
        self.shared
            .metrics
            .dnssec_signatures
            .inc_by(signatures_now - self.signatures_counted);
        self.signatures_counted = signatures_now;
        for w in &built.warnings {
            tracing::warn!("{w}");
        }
        if let Some(tx) = &self.federations_out {
            // Publish mode: the records fedns computed, for the etcd publisher.
            let _ = tx.send(Arc::new(crate::answers::federation_records(&federations)));
        }
        let mut table = built.table;
        table.locator = self.locator.clone();
        let m = &self.shared.metrics;
        m.table_generation.set(table.generation as i64);
        m.table_records.set(table.record_count as i64);
        m.table_names.set(table.name_count as i64);
        m.endpoints_outside.set(built.endpoints_outside as i64);
        m.table_serial.set(table.serial as i64);
        m.etcd_pending_aggregates.set(pending as i64);
        let (generation, serial) = (table.generation, table.serial);
        let (names, records) = (table.name_count, table.record_count);
        let table = Arc::new(table);
        let old = self.shared.table.swap(table.clone());
        let fresh = table.unshared_segments(&old);
        // IXFR starts from recent tables: the journal keeps them (sharing their unchanged
        // segments) and hands back the one that falls out.
        let leaving = if self.shared.journal.keeps() {
            let evicted = self.shared.journal.push(&table);
            drop(old);
            evicted
        } else {
            self.shared.journal.clear();
            vec![old]
        };
        drop(table);
        let swapped = started.elapsed();
        // Explain reads the inputs of the table it explains; a query racing this swap may
        // see a newer input than table, which only matters for the explain view.
        self.shared.federations.store(Arc::new(federations));
        // Free the previous table here, not on the query path: a worker still holding it would
        // otherwise drop the last reference and spend the deallocation of a large table (tens of
        // milliseconds for 100k names) between two queries.
        for old in leaving {
            retire(old);
        }
        trim(fresh, &mut self.last_trim);
        self.shared.published.send_replace(generation);
        let done = started.elapsed();
        m.publish_duration.observe(done.as_secs_f64());
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
        tracing::info!(
            generation,
            serial,
            names,
            records,
            inputs_ms = format_args!("{:.1}", ms(prepared)),
            build_ms = format_args!("{:.1}", ms(built_at - prepared)),
            swap_ms = format_args!("{:.1}", ms(swapped - built_at)),
            retire_ms = format_args!("{:.1}", ms(done - swapped)),
            signatures,
            pending,
            "published answer table"
        );
    }

    /// Marks shards up or down from probe verdicts. When every shard of a service that would be
    /// healthy by its endpoints fails its probes, the probes are more likely wrong than every
    /// copy of the service: those shards stay in answers (fail static), and a metric and a log
    /// line say so.
    fn apply_probes(&mut self, federations: &mut [Federation], verdicts: &crate::probe::Verdicts) {
        use crate::model::ProbeState;
        let mut down = 0;
        let mut static_now = std::collections::BTreeSet::new();
        for fed in federations.iter_mut() {
            for svc in &mut fed.services {
                let mut downs: Vec<Vec<std::net::IpAddr>> = vec![Vec::new(); svc.shards.len()];
                let mut states: Vec<ProbeState> = svc
                    .shards
                    .iter()
                    .enumerate()
                    .map(|(i, shard)| {
                        let key = (
                            fed.name.clone(),
                            svc.namespace.clone(),
                            svc.name.clone(),
                            shard.cluster.clone(),
                        );
                        match verdicts.get(&key) {
                            Some(v) if v.up => {
                                // Up with some addresses failing: those leave the answer.
                                downs[i] = v.down.clone();
                                ProbeState::Up
                            }
                            Some(_) => ProbeState::Down,
                            None => ProbeState::Unprobed,
                        }
                    })
                    .collect();
                let serving =
                    |s: &crate::model::Shard| s.ready_endpoints >= 1 && !s.addresses.is_empty();
                let candidates: Vec<usize> = (0..states.len())
                    .filter(|&i| serving(&svc.shards[i]))
                    .collect();
                let failing = candidates
                    .iter()
                    .filter(|&&i| states[i] == ProbeState::Down)
                    .count();
                down += failing;
                if !candidates.is_empty() && failing == candidates.len() {
                    for &i in &candidates {
                        states[i] = ProbeState::DownServedStatic;
                    }
                    static_now.insert(format!("{}/{}.{}", fed.name, svc.namespace, svc.name));
                }
                // Only a service whose probe states change is copied; the others stay shared
                // with the source's snapshot (and the builder recognizes them by pointer).
                if svc
                    .shards
                    .iter()
                    .zip(states.iter().zip(&downs))
                    .any(|(s, (p, d))| s.probe != *p || s.probe_down != *d)
                {
                    let svc = Arc::make_mut(svc);
                    for (shard, (p, d)) in svc.shards.iter_mut().zip(states.into_iter().zip(downs))
                    {
                        shard.probe = p;
                        shard.probe_down = d;
                    }
                }
            }
        }
        for s in static_now.difference(&self.fail_static) {
            tracing::warn!(service = %s, "every shard fails its probes; serving them anyway (fail static)");
        }
        for s in self.fail_static.difference(&static_now) {
            tracing::info!(service = %s, "probes pass again; fail static over");
        }
        self.shared.metrics.probe_shards_down.set(down as i64);
        self.shared
            .metrics
            .probe_fail_static
            .set(static_now.len() as i64);
        self.fail_static = static_now;
    }

    /// Runs on its own thread: batches updates that arrive together into one publish.
    pub fn run(mut self, mut rx: mpsc::Receiver<Input>) {
        let mut held = Vec::new();
        while let Some(update) = rx.blocking_recv() {
            let mut ticks_only = is_tick(&update);
            self.apply_held(update, &mut held);
            while let Ok(more) = rx.try_recv() {
                ticks_only &= is_tick(&more);
                self.apply_held(more, &mut held);
            }
            if ticks_only && !self.keys.as_ref().is_some_and(|k| k.due(unix_now())) {
                continue;
            }
            self.publish();
            // Sources waiting for their snapshot to be served may go on.
            held.clear();
        }
    }
}
