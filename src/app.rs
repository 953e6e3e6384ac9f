//! Wiring: loads config and sources, publishes the first table, opens the sockets and starts
//! the watchers and the merger. `check` runs the same loading without serving; `join`/`unjoin`
//! run the Kubernetes member enrolment.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::{mpsc, watch};

use crate::config::Config;
use crate::dns::zonefile::Problem;
use crate::merger::{Input, Merger, SerialClock};
use crate::metrics::Metrics;
use crate::server::listen::{Listeners, Serving};
use crate::server::{Settings, Shared, http, tcp, udp};

use crate::sources::kubernetes;
use crate::sources::watch::{self as source_watch, FileKind, FileSource};
use crate::sources::zone_dir::ZoneDir;
use crate::sources::{SourceBoard, Update};
use crate::table::Table;

/// The file sources, named for `/readyz` and metric labels by what they are, not where they
/// are: `zone-files`, and `federation-file:NAME` with the file's name (`federation.yaml`; a
/// second file of the same name elsewhere gets `#2`).
pub(crate) fn file_sources(config: &Config) -> Vec<FileSource> {
    file_sources_at(&config.zones_dir, &config.federation_files)
}

fn file_sources_at(zones_dir: &Path, federation_files: &[std::path::PathBuf]) -> Vec<FileSource> {
    let mut v = vec![FileSource::new(
        FileKind::Zones(ZoneDir::new(zones_dir.to_path_buf())),
        "zone-files".into(),
    )];
    let mut names: Vec<String> = Vec::new();
    for p in federation_files {
        let base = p.file_name().map_or_else(
            || p.display().to_string(),
            |f| f.to_string_lossy().into_owned(),
        );
        let mut name = format!("federation-file:{base}");
        let mut n = 1;
        while names.contains(&name) {
            n += 1;
            name = format!("federation-file:{base}#{n}");
        }
        names.push(name.clone());
        v.push(FileSource::new(FileKind::Federation(p.clone()), name));
    }
    v
}

/// Problems of the zone and federation files named by a config that itself failed to load
/// (so one run shows every problem), as far as the config names them.
fn problems_beside_a_broken_config(path: &Path) -> Vec<Problem> {
    match Config::source_paths(path) {
        Some((zones_dir, feds)) => load_all(&mut file_sources_at(&zones_dir, &feds)).1,
        None => Vec::new(),
    }
}

/// The closing line of a list of problems.
fn count_line(n: usize) -> String {
    if n == 1 {
        "1 problem".into()
    } else {
        format!("{n} problems")
    }
}

/// Keeps the `zone` label of the query counters on the served zones: every update passes
/// through it on its way to the merger.
struct ZoneTracker {
    metrics: Metrics,
    by_source: std::collections::BTreeMap<String, Vec<crate::model::DnsName>>,
    warned_full: bool,
    /// (source, cluster) → the cluster's `client_networks` as first seen and as last warned
    /// about: the client locator is built from them at start, so a change waits for a restart.
    networks: std::collections::BTreeMap<(String, String), ClusterNetworks>,
}

type Networks = Vec<(std::net::IpAddr, u8)>;

/// A cluster's client networks as first seen, and the last changed value warned about.
struct ClusterNetworks {
    first: Networks,
    warned: Option<Networks>,
}

impl ZoneTracker {
    fn new(metrics: Metrics) -> Self {
        ZoneTracker {
            metrics,
            by_source: Default::default(),
            warned_full: false,
            networks: Default::default(),
        }
    }

    /// Says (once per change) that a cluster's new `client_networks` wait for a restart.
    fn note_networks(&mut self, source: &str, fed: &crate::model::Federation) {
        for c in &fed.clusters {
            let seen = self
                .networks
                .entry((source.to_string(), c.name.clone()))
                .or_insert_with(|| ClusterNetworks {
                    first: c.client_networks.clone(),
                    warned: None,
                });
            if c.client_networks == seen.first {
                seen.warned = None;
            } else if seen.warned.as_ref() != Some(&c.client_networks) {
                tracing::warn!(
                    source = %source,
                    cluster = %c.name,
                    "{source}: cluster {}'s client_networks changed; they place clients for the in-cluster redirect from the next restart",
                    c.name
                );
                seen.warned = Some(c.client_networks.clone());
            }
        }
    }

    fn note(&mut self, u: &Update) {
        use crate::sources::Snapshot;
        let zones: Vec<_> = match &*u.snapshot {
            Snapshot::Zones(z) => z.iter().map(|z| z.origin.clone()).collect(),
            Snapshot::Federation(f) => {
                self.note_networks(&u.source, f);
                std::iter::once(f.zone.clone())
                    .chain(f.redirect_zone())
                    .chain(f.clusterset_zone())
                    .collect()
            }
            Snapshot::Etcd(e) => e.zones.clone(),
            Snapshot::Probes(_) | Snapshot::Resign => return,
            Snapshot::Gone => Vec::new(),
        };
        if self.by_source.get(&u.source) == Some(&zones) {
            return;
        }
        self.by_source.insert(u.source.clone(), zones);
        let mut all: Vec<&[u8]> = self
            .by_source
            .values()
            .flatten()
            .map(|z| z.wire())
            .collect();
        all.sort();
        all.dedup();
        let full = self.metrics.zones.set_served(all);
        if !full.is_empty() && !self.warned_full {
            self.warned_full = true;
            tracing::warn!(
                zones = full.len(),
                limit = crate::metrics::MAX_ZONE_LABELS,
                "more served zones than zone labels; their queries count as zone=\"other\""
            );
        }
    }
}

fn print_problems(problems: &[Problem]) {
    for p in problems {
        eprintln!("error: {p}");
    }
}

/// `serve`'s problems go to the log (so `--log-format json` stays one object per line).
fn log_problems(problems: &[Problem]) {
    for p in problems {
        tracing::error!("{p}");
    }
}

/// Loads every source once; all problems, or the first updates.
fn load_all(sources: &mut [FileSource]) -> (Vec<Update>, Vec<Problem>) {
    let mut updates = Vec::new();
    let mut problems = Vec::new();
    for s in sources.iter_mut() {
        let (snapshot, p) = s.load();
        problems.extend(p);
        if let Some(snapshot) = snapshot {
            updates.push(Update {
                source: s.name(),
                snapshot,
                taken: None,
            });
        }
    }
    (updates, problems)
}

pub fn check(path: &Path) -> ExitCode {
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(mut p) => {
            p.extend(problems_beside_a_broken_config(path));
            print_problems(&p);
            eprintln!("{}", count_line(p.len()));
            return ExitCode::from(1);
        }
    };
    let mut sources = file_sources(&config);
    let (updates, mut problems) = load_all(&mut sources);
    problems.extend(cross_source_problems(&config, &updates));
    if let Some(k) = &config.kubernetes {
        problems.extend(kubernetes::check(k));
    }
    let mut zones = Vec::new();
    let mut feds = Vec::new();
    for u in &updates {
        match &*u.snapshot {
            crate::sources::Snapshot::Zones(z) => zones.extend(z.iter().cloned()),
            crate::sources::Snapshot::Federation(f) => feds.push((**f).clone()),
            crate::sources::Snapshot::Etcd(_) => {}
            crate::sources::Snapshot::Probes(_)
            | crate::sources::Snapshot::Gone
            | crate::sources::Snapshot::Resign => {}
        }
    }
    if zones.is_empty() && problems.is_empty() {
        problems.push(Problem {
            file: config.zones_dir.display().to_string(),
            line: None,
            message: "no *.zone files".into(),
        });
    }
    let locator = build_locator(
        &config.geo,
        &cluster_networks(&config, &federations_of(&updates)),
    )
    .unwrap_or_else(|e| {
        problems.push(Problem {
            file: config.path.display().to_string(),
            line: None,
            message: format!("geo.geoip_db: {e}"),
        });
        Default::default()
    });
    let mut signing = Vec::new();
    if let Some(d) = &config.dnssec {
        match load_keys(d, false) {
            Ok(mut keys) => {
                for z in keys.generated() {
                    println!(
                        "dnssec: {z} has no key in {} yet: `fedns serve` (or `fedns dnssec ds`) generates one",
                        d.keys_dir.display()
                    );
                }
                for ds in keys.stored_ds_records() {
                    println!("dnssec: {ds}");
                }
                signing = keys.signing(0).to_vec();
                for z in &d.zones {
                    if !zones.iter().any(|s| s.origin == *z) && !feds.iter().any(|f| f.zone == *z) {
                        problems.push(Problem {
                            file: config.path.display().to_string(),
                            line: None,
                            message: format!("dnssec.zones: {z} is not a served zone"),
                        });
                    }
                }
            }
            Err(e) => problems.push(Problem {
                file: d.keys_dir.display().to_string(),
                line: None,
                message: format!("dnssec: {e}"),
            }),
        }
    }
    let built = crate::answers::build(crate::answers::BuildInput {
        zones: &zones,
        federations: &feds,
        etcd: &[],
        cache: None,
        serial: 1,
        generation: 1,
        locator: &locator,
        signing: &signing,
    });
    for w in built
        .warnings
        .iter()
        .filter(|w| !built.conflicts.contains(w))
    {
        eprintln!("warning: {w}");
    }
    // What serve would log and serve differently from what the files say.
    problems.extend(built.conflicts.iter().map(|c| Problem {
        file: config.path.display().to_string(),
        line: None,
        message: c.clone(),
    }));
    if !problems.is_empty() {
        print_problems(&problems);
        eprintln!("{}", count_line(problems.len()));
        return ExitCode::from(1);
    }
    println!(
        "ok: {} zone(s), {} federation(s), {} names, {} records",
        zones.len(),
        feds.len(),
        built.table.name_count,
        built.table.record_count
    );
    ExitCode::SUCCESS
}

/// The signed zones' keys as `d` configures them (`generate`: make missing ones in `keys_dir`;
/// else they are made in memory only, for `check`).
fn load_keys(
    d: &crate::config::DnssecConfig,
    generate: bool,
) -> Result<crate::dns::dnssec::KeyRing, String> {
    crate::dns::dnssec::KeyRing::load(
        &d.zones,
        &d.keys_dir,
        d.algorithm,
        d.signature_validity,
        d.resign_after,
        generate,
    )
}

/// What `keys_dir` holds (names, sizes and times of change), to see that keys were added,
/// changed or removed.
fn keys_fingerprint(
    dir: &std::path::Path,
) -> Vec<(std::ffi::OsString, u64, Option<std::time::SystemTime>)> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let m = e.metadata().ok()?;
            Some((e.file_name(), m.len(), m.modified().ok()))
        })
        .collect();
    out.sort();
    out
}

/// Reads the signed zones' keys again when `keys_dir` changes (looked at every 10 s, and on
/// each reload signal), so a rollover's next key is picked up without a restart. Keys that do
/// not load are an error in the log; the keys loaded before keep signing.
async fn watch_keys(
    d: crate::config::DnssecConfig,
    merger: mpsc::Sender<Input>,
    mut reload: tokio::sync::watch::Receiver<u64>,
) {
    let mut seen = keys_fingerprint(&d.keys_dir);
    let mut every = tokio::time::interval(std::time::Duration::from_secs(10));
    loop {
        tokio::select! {
            _ = every.tick() => {}
            changed = reload.changed() => if changed.is_err() { return },
        }
        let now = keys_fingerprint(&d.keys_dir);
        if now == seen {
            continue;
        }
        seen = now;
        let dir = d.clone();
        match tokio::task::spawn_blocking(move || load_keys(&dir, false)).await {
            Ok(Ok(keys)) if !keys.generated().is_empty() => tracing::error!(
                zones = ?keys.generated(),
                "dnssec: keys_dir no longer holds a key of these zones; the previous keys keep signing"
            ),
            Ok(Ok(keys)) => {
                for ds in keys.ds_records() {
                    tracing::info!(ds = %ds, "dnssec: keys changed; DS for the parent zone");
                }
                if merger.send(Input::Keys(Box::new(keys))).await.is_err() {
                    return;
                }
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "dnssec: keys changed but do not load; the previous keys keep signing")
            }
            Err(_) => return,
        }
    }
}

/// `fedns dnssec ds`: loads (or generates) every signed zone's keys and prints the DS records
/// for the parents and the DNSKEYs (trust anchors).
/// `fedns join`: see [`kubernetes::join`].
pub fn join(args: &kubernetes::join::JoinArgs) -> ExitCode {
    report(kubernetes::join::join(args))
}

/// `fedns unjoin`: see [`kubernetes::join`].
pub fn unjoin(args: &kubernetes::join::UnjoinArgs) -> ExitCode {
    report(kubernetes::join::unjoin(args))
}

fn report(r: anyhow::Result<()>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

pub fn dnssec_ds(path: &Path) -> ExitCode {
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(p) => {
            print_problems(&p);
            eprintln!("{}", count_line(p.len()));
            return ExitCode::from(1);
        }
    };
    let Some(d) = &config.dnssec else {
        eprintln!("{}: no dnssec section: nothing is signed", path.display());
        return ExitCode::from(1);
    };
    match load_keys(d, true) {
        Ok(keys) => {
            for ds in keys.ds_records() {
                println!("{ds}");
            }
            for k in keys.dnskey_records() {
                println!("{k}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("dnssec: {e}");
            ExitCode::from(1)
        }
    }
}

/// `fedns serve`. `log_format` (from the command line) wins over the config's.
pub fn serve(
    path: &Path,
    workers: Option<usize>,
    log_format: Option<crate::logging::LogFormat>,
) -> ExitCode {
    let config = Config::load(path);
    crate::logging::init(
        log_format
            .or(config.as_ref().ok().and_then(|c| c.log_format))
            .unwrap_or_default(),
    );
    let mut config = match config {
        Ok(c) => c,
        Err(mut p) => {
            p.extend(problems_beside_a_broken_config(path));
            log_problems(&p);
            tracing::error!("{}; not serving", count_line(p.len()));
            return ExitCode::from(2);
        }
    };
    if let Some(w) = workers {
        config.workers = if w == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            w
        };
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(run(config, workers));
    // Background tasks (watches, resolvers) are not waited for.
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::from(1)
        }
    }
}

/// `workers`: the `--workers` override, which a reloaded config keeps.
async fn run(config: Config, workers: Option<usize>) -> anyhow::Result<()> {
    let metrics = Metrics::new();
    let board = SourceBoard::default();
    let mut sources = file_sources(&config);
    for s in &sources {
        board.register(&s.name());
    }
    if config.etcd.is_some() {
        metrics.register_etcd();
    }
    if !config.probes.is_empty() {
        metrics.register_probes();
    }
    let etcd_reader = config.etcd.as_ref().filter(|e| !e.zones.is_empty());
    if let Some(e) = etcd_reader {
        // Not ready until the first get of the prefix succeeded (zone files serve meanwhile).
        board.register(&crate::sources::etcd::source_name(e));
    }
    if let Some(k) = &config.kubernetes {
        kubernetes::register(k, &board);
    }
    for name in board.snapshot().keys() {
        metrics.register_source(name);
    }
    // At start there is no last good data to fall back on: refuse to serve broken input. A
    // kubeconfig that cannot be read or lacks its context is broken input too (as in `check`);
    // an unreachable cluster is not (it shows on /readyz).
    let (updates, mut problems) = load_all(&mut sources);
    problems.extend(cross_source_problems(&config, &updates));
    if let Some(k) = &config.kubernetes {
        problems.extend(kubernetes::check(k));
    }
    if !problems.is_empty() {
        log_problems(&problems);
        anyhow::bail!(
            "{} in the initial data; `fedns check --config {}` lists them",
            count_line(problems.len()),
            config.path.display()
        );
    }
    for s in &sources {
        source_watch::report(&s.name(), &[], &board, &metrics);
    }
    // From now on each federation-file edit is checked against the other sources as the start
    // checked them all.
    let accepted = crate::sources::cross::Accepted::new(
        &config,
        (sources.iter()).filter_map(|s| Some((s.name(), s.path(), s.federation()?))),
    );

    // Member clusters' pod/node networks place clients in their cluster; they are read at
    // start (a changed one waits for a restart), and a reloaded `geo` keeps them.
    let cluster_networks = cluster_networks(&config, &federations_of(&updates));
    let locator =
        Arc::new(build_locator(&config.geo, &cluster_networks).map_err(|e| anyhow::anyhow!(e))?);
    let shared = Arc::new(Shared {
        table: ArcSwap::from_pointee(Table::not_ready()),
        federations: ArcSwap::from_pointee(Vec::new()),
        settings: ArcSwap::from_pointee(Settings::from_config(&config)),
        metrics: metrics.clone(),
        sources: board.clone(),
        probes: Default::default(),
        journal: Arc::new(crate::dns::transfer::Journal::new(Settings::journal_len(
            &config,
        ))),
        published: tokio::sync::watch::Sender::new(0),
        draining: Default::default(),
    });
    let mut merger = Merger::new(
        shared.clone(),
        SerialClock::new(Some(config.state_dir.clone())),
        locator,
    );
    if let Some(d) = &config.dnssec {
        let keys = load_keys(d, true).map_err(|e| anyhow::anyhow!("dnssec: {e}"))?;
        for ds in keys.ds_records() {
            tracing::info!(ds = %ds, "dnssec: zone signed; give the parent zone this DS");
        }
        merger.sign_with(keys);
    }
    let mut zone_tracker = ZoneTracker::new(metrics.clone());
    for u in updates {
        zone_tracker.note(&u);
        merger.apply(u);
    }
    let federation_records = match &config.etcd {
        Some(e) if e.mode == crate::config::EtcdMode::Publish => {
            let (ftx, frx) = watch::channel(Arc::new(crate::answers::FederationRecords::default()));
            merger.publish_federations_to(ftx);
            Some(frx)
        }
        _ => None,
    };
    merger.publish();

    let udp_inodes = Arc::new(std::sync::Mutex::new(Vec::new()));
    let closed_drops = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let serving = Serving {
        shared: shared.clone(),
        tcp: tcp::TcpConnections::new(&metrics.registry),
        rrl_metrics: crate::dns::rrl::RrlMetrics::register(&metrics.registry),
        udp_inodes: udp_inodes.clone(),
        closed_drops: closed_drops.clone(),
    };
    let listeners = Arc::new(std::sync::Mutex::new(Listeners::default()));
    listeners
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .reconcile(
            &config.listen,
            config.workers,
            (config.udp_receive_buffer, config.udp_send_buffer),
            &serving,
        )?;
    let _ = metrics
        .registry
        .register(Box::new(udp::KernelDrops::new(udp_inodes, closed_drops)));
    let http_listener = tokio::net::TcpListener::bind(config.http)
        .await
        .map_err(|e| anyhow::anyhow!("http {}: {e}", config.http))?;
    tracing::info!(http = %http_listener.local_addr()?, "http listening");
    let app = http::router(shared.clone());
    tokio::spawn(async move {
        if let Err(e) = axum::serve(http_listener, app).await {
            tracing::error!(error = %e, "http server stopped");
        }
    });

    let (tx, mut rx) = mpsc::channel::<Update>(64);
    let (reload_tx, reload_rx) = watch::channel(0u64);
    let mut file_tasks = Vec::new();
    for s in sources {
        let (name, path) = (s.name(), s.path());
        let task = tokio::spawn(source_watch::run(
            s,
            config.watch_interval,
            tx.clone(),
            board.clone(),
            metrics.clone(),
            reload_rx.clone(),
            accepted.clone(),
        ));
        file_tasks.push((name, path, task.abort_handle()));
    }
    let etcd_reader = etcd_reader.map(|e| {
        tokio::spawn(crate::sources::etcd::run_reader(
            e.clone(),
            tx.clone(),
            board.clone(),
            metrics.clone(),
        ))
        .abort_handle()
    });
    let etcd_publisher = match (&config.etcd, &federation_records) {
        (Some(e), Some(frx)) => {
            let id = format!("fedns pid {} http {}", std::process::id(), config.http);
            let (stop, stopped) = watch::channel(false);
            tokio::spawn(crate::sources::etcd::run_publisher(
                e.clone(),
                frx.clone(),
                metrics.clone(),
                id,
                stopped,
            ));
            Some(stop)
        }
        _ => None,
    };
    tokio::spawn(crate::server::secondaries::run(shared.clone()));
    let probes = (!config.probes.is_empty()).then(|| {
        let (ptx, prx) = watch::channel(config.probes.clone());
        tokio::spawn(crate::probe::run(prx, shared.clone(), tx.clone()));
        ptx
    });
    // The config in effect: the reloader stores every version it accepts.
    let (current, current_rx) = watch::channel(config.clone());
    if let Some(k) = config.kubernetes.clone() {
        tokio::spawn(kubernetes::run(
            k,
            current_rx.clone(),
            config.watch_interval,
            tx.clone(),
            board.clone(),
            metrics.clone(),
            reload_rx.clone(),
        ));
    }
    if config.dnssec.is_some() {
        // Signatures are made again before they expire, even when no source changes.
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(std::time::Duration::from_secs(600));
            every.tick().await;
            loop {
                every.tick().await;
                let tick = Update {
                    source: "dnssec".into(),
                    snapshot: Arc::new(crate::sources::Snapshot::Resign),
                    taken: None,
                };
                if tx.send(tick).await.is_err() {
                    return;
                }
            }
        });
    }
    let (merger_tx, merger_rx) = mpsc::channel::<Input>(64);
    merger.settle_through(&merger_tx)?;
    if let Some(d) = config.dnssec.clone() {
        tokio::spawn(watch_keys(d, merger_tx.clone(), reload_rx.clone()));
    }
    tokio::spawn(crate::reload::run(
        config.clone(),
        config.watch_interval,
        reload_rx.clone(),
        crate::reload::Live {
            shared: shared.clone(),
            serving,
            listeners: listeners.clone(),
            merger: merger_tx.clone(),
            updates: tx.clone(),
            board: board.clone(),
            metrics: metrics.clone(),
            probes,
            etcd_reader,
            etcd_publisher,
            federation_records,
            current,
            workers_from_cli: workers.is_some(),
            file_tasks,
            reload_ticks: reload_rx.clone(),
            watch_interval: config.watch_interval,
            geoip_seen: crate::reload::geoip_fingerprint(&config),
            cluster_networks,
            accepted,
        },
    ));
    drop(tx);
    tokio::spawn(async move {
        while let Some(u) = rx.recv().await {
            zone_tracker.note(&u);
            if merger_tx.send(Input::Update(u)).await.is_err() {
                return;
            }
        }
    });
    std::thread::Builder::new()
        .name("merger".into())
        .spawn(move || merger.run(merger_rx))?;

    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    crate::notify::notify("READY=1");
    let signal = loop {
        tokio::select! {
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading the config and sources");
                crate::notify::reloading();
                reload_tx.send_modify(|n| *n += 1);
                crate::notify::notify("READY=1");
            }
            _ = term.recv() => break "SIGTERM",
            _ = int.recv() => break "SIGINT",
        }
    };
    // The config in effect now (a reload may have changed the lame duck and TCP timeout).
    let (lameduck, tcp_grace) = {
        let c = current_rx.borrow();
        (c.lameduck, c.tcp_idle_timeout)
    };
    drain(
        signal,
        &shared,
        lameduck,
        tcp_grace,
        &listeners,
        (&mut term, &mut int),
    )
    .await;
    Ok(())
}

/// Graceful shutdown: `/readyz` turns 503 at once, DNS keeps answering for `lameduck` (so load
/// balancers and Kubernetes endpoints stop sending here first), then TCP stops accepting, the
/// queries already sent on open connections are answered (at most `tcp_grace`), and `run`
/// returns. A second SIGTERM or SIGINT ends the lame duck at once.
async fn drain(
    signal: &str,
    shared: &Shared,
    lameduck: std::time::Duration,
    tcp_grace: std::time::Duration,
    listeners: &std::sync::Mutex<Listeners>,
    (term, int): (
        &mut tokio::signal::unix::Signal,
        &mut tokio::signal::unix::Signal,
    ),
) {
    shared
        .draining
        .store(true, std::sync::atomic::Ordering::Relaxed);
    crate::notify::notify("STOPPING=1");
    tracing::info!(
        signal,
        lameduck_ms = lameduck.as_millis() as u64,
        "shutting down: /readyz now 503, still answering DNS for the lame-duck period"
    );
    tokio::select! {
        _ = tokio::time::sleep(lameduck) => {}
        _ = term.recv() => tracing::info!("second signal: ending the lame duck now"),
        _ = int.recv() => tracing::info!("second signal: ending the lame duck now"),
    }
    let tcp_servers = listeners
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .stop_tcp();
    let open = futures::future::join_all(tcp_servers);
    if tokio::time::timeout(tcp_grace, open).await.is_err() {
        tracing::warn!(
            grace_ms = tcp_grace.as_millis() as u64,
            "TCP connections still busy after the grace period; closing them"
        );
    }
    tracing::info!("stopped");
}

/// The member clusters' pod/node networks: those of the `kubernetes:` section and of the
/// clusters in `feds` (the federation files as read at start).
pub(crate) fn cluster_networks(
    config: &Config,
    feds: &[&crate::model::Federation],
) -> Vec<crate::geo::ClientNetwork> {
    let mut networks = Vec::new();
    let net = |(addr, prefix): (std::net::IpAddr, u8), cluster: &str, region: &str, zone| {
        crate::geo::ClientNetwork {
            addr,
            prefix,
            region: region.to_string(),
            zone,
            cluster: Some(cluster.to_string()),
        }
    };
    for c in feds.iter().flat_map(|f| &f.clusters) {
        networks.extend(
            c.client_networks
                .iter()
                .map(|n| net(*n, &c.name, &c.region, c.zones.first().cloned())),
        );
    }
    for c in config.kubernetes.iter().flat_map(|k| &k.clusters) {
        // Topology comes from Nodes later unless configured; selection places the client by
        // its cluster as the federation sees it.
        let region = c.region.as_deref().unwrap_or_default();
        networks.extend(
            c.client_networks
                .iter()
                .map(|n| net(*n, &c.name, region, c.zones.first().cloned())),
        );
    }
    networks
}

/// The client locator from config (client networks, region coordinates, GeoIP database) and
/// the member clusters' networks ([`cluster_networks`]).
pub(crate) fn build_locator(
    geo: &crate::config::GeoConfig,
    clusters: &[crate::geo::ClientNetwork],
) -> Result<crate::geo::Locator, String> {
    let geoip = match &geo.geoip_db {
        Some(path) => crate::geo::read_geoip(path)?,
        None => Vec::new(),
    };
    let mut networks = geo.client_networks.clone();
    networks.extend(clusters.iter().cloned());
    Ok(crate::geo::Locator::new(
        &geo.regions,
        &networks,
        &geoip,
        geo.ecs,
        geo.local_cluster.as_deref(),
    ))
}

/// The checks of a config against its sources' data, made by `check`, at start and on every
/// reload (`updates`: the federation files as loaded); see [`crate::sources::cross`].
pub(crate) fn cross_source_problems(
    config: &Config,
    updates: &[crate::sources::Update],
) -> Vec<Problem> {
    crate::sources::cross::problems(config, updates)
}

/// What a reloaded config must pass before any of it applies, as `check` and the start check
/// it: [`cross_source_problems`] with its federation files read as they are now (their own
/// problems are the file sources' to report, so a file that does not load is left out here),
/// and the `kubernetes:` section's kubeconfigs ([`kubernetes::check`]).
pub(crate) fn reload_problems(config: &Config) -> Vec<Problem> {
    let mut files: Vec<FileSource> = file_sources(config)
        .into_iter()
        .filter(|s| matches!(s.kind, FileKind::Federation(_)))
        .collect();
    let (updates, _) = load_all(&mut files);
    let mut problems = cross_source_problems(config, &updates);
    if let Some(k) = &config.kubernetes {
        problems.extend(kubernetes::check(k));
    }
    problems
}

/// The federations among source updates (the federation files, at start).
fn federations_of(updates: &[crate::sources::Update]) -> Vec<&crate::model::Federation> {
    updates
        .iter()
        .filter_map(|u| match &*u.snapshot {
            crate::sources::Snapshot::Federation(f) => Some(&**f),
            _ => None,
        })
        .collect()
}

/// `fedns explain`: a plain HTTP/1.0 GET of `/explain` on a running server (`Accept:
/// application/json` with `--json`), printed as is; exit 1 on a 400 (its message printed).
pub fn explain(
    server: &str,
    name: &str,
    qtype: &str,
    client: Option<std::net::IpAddr>,
    ecs: Option<&str>,
    json: bool,
) -> ExitCode {
    use std::io::{Read, Write};
    let mut query = format!("name={}&type={}", encode_query(name), encode_query(qtype));
    if let Some(c) = client {
        query.push_str(&format!("&client={}", encode_query(&c.to_string())));
    }
    if let Some(e) = ecs {
        query.push_str(&format!("&ecs={}", encode_query(e)));
    }
    let result = (|| -> std::io::Result<(bool, String)> {
        let mut stream = std::net::TcpStream::connect(server)?;
        stream.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
        write!(
            stream,
            "GET /explain?{query} HTTP/1.0\r\nHost: {server}\r\nAccept: {}\r\n\r\n",
            if json {
                "application/json"
            } else {
                "text/plain"
            }
        )?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        let ok = response.starts_with("HTTP/1.0 200") || response.starts_with("HTTP/1.1 200");
        let body = response
            .split_once("\r\n\r\n")
            .map_or(response.clone(), |(_, b)| b.to_string());
        Ok((ok, body))
    })();
    match result {
        Ok((ok, body)) => {
            print!("{body}");
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("error: cannot reach fedns at {server}: {e}");
            ExitCode::from(1)
        }
    }
}

/// Percent-encodes a query-string value.
fn encode_query(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b':' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
