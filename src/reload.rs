//! The main config file on SIGHUP and on change: every new version is validated in full (the
//! checks `check` makes against the federation files, `geo.local_cluster` and
//! `clusterset_domain`, the `kubernetes:` section's kubeconfigs and contexts, the GeoIP
//! database read, new listen addresses bound); a bad one is rejected with every problem
//! logged and `fedns_config_last_reload_successful 0`, and the running config stays whole.
//! A good one is applied live:
//! - plain serving settings (`edns_payload`, `rrl`, `identity`, `transfers`, `tcp`, and
//!   `etcd.axfr_allow`) are one [`Settings`] swapped atomically, so a query sees all old or all
//!   new values; UDP buffer sizes are set on the live sockets;
//! - `geo` (client networks, regions, GeoIP database, ecs) goes to the merger as a new
//!   [`Locator`](crate::geo::Locator), which it publishes inside the table laid out for it;
//! - `probes` go to the prober, which keeps each target's last verdict until the new rule decides;
//! - `etcd` restarts its source (the last copy serves until the new one has loaded) or publisher;
//! - `listen`: new addresses are bound and served before removed ones close; addresses that
//!   stay keep their sockets;
//! - `zones_dir`, `federation_files`: new ones are loaded (any problem rejects the reload) and
//!   followed; a replaced or removed source's data leaves only after its successor's arrived;
//! - more `workers`: new sockets join each open address's reuseport group;
//! - `kubernetes:` goes to its source through the config in effect ([`Live::current`]), so a
//!   rejected version changes no cluster either; `lameduck_ms` is read at shutdown.
//!
//! What stays for the next restart ([`restart_only_changes`]: `http`, `state_dir`,
//! `watch_interval_ms`, `log_format`, `dnssec`, fewer `workers` than an open address has, a
//! switch of `etcd.mode`, a `kubernetes:` section added) is named in the log, and
//! `fedns_config_restart_pending` is 1 until the file and the running process agree again.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, watch};

use crate::config::{Config, EtcdConfig, EtcdMode};
use crate::merger::Input;
use crate::metrics::Metrics;
use crate::server::Settings;
use crate::server::listen::{Listeners, Serving};
use crate::sources::{SourceBoard, Update};

pub type Fingerprint = Option<(SystemTime, u64, u64)>;

fn fingerprint(path: &Path) -> Fingerprint {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| {
        (
            m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            m.len(),
            m.ino(),
        )
    })
}

fn differ<T: std::fmt::Debug>(a: &T, b: &T) -> bool {
    format!("{a:?}") != format!("{b:?}")
}

/// Settings the running process keeps until a restart: `started` is the config it started
/// with, `open_workers` the most UDP workers an open address has.
pub fn restart_only_changes(
    started: &Config,
    new: &Config,
    open_workers: usize,
) -> Vec<&'static str> {
    let mut out = Vec::new();
    let mut cmp = |name: &'static str, changed: bool| {
        if changed {
            out.push(name);
        }
    };
    cmp("http", differ(&started.http, &new.http));
    // More workers are added live; fewer wait (closing a socket of a reuseport group can lose
    // what the kernel hands it meanwhile).
    cmp("workers", new.workers < open_workers);
    cmp("state_dir", differ(&started.state_dir, &new.state_dir));
    cmp(
        "watch_interval_ms",
        differ(&started.watch_interval, &new.watch_interval),
    );
    cmp("log_format", differ(&started.log_format, &new.log_format));
    // Keys are loaded (or generated) once, at start.
    cmp("dnssec", differ(&started.dnssec, &new.dnssec));
    cmp(
        "etcd.mode",
        publishes(&started.etcd) != publishes(&new.etcd) && new.etcd.is_some(),
    );
    // Its source is started at start only; it follows its own section from then on.
    cmp(
        "kubernetes",
        started.kubernetes.is_none() && new.kubernetes.is_some(),
    );
    // The clusters' pod/node networks are read at start (they place clients in clusters).
    let networks = |c: &Config| {
        let nets: Vec<_> = c
            .kubernetes
            .iter()
            .flat_map(|k| &k.clusters)
            .map(|c| (&c.name, &c.client_networks))
            .collect();
        format!("{nets:?}")
    };
    cmp(
        "kubernetes.clusters[].client_networks",
        networks(started) != networks(new),
    );
    out
}

fn tcp_of(c: &Config) -> impl std::fmt::Debug + use<> {
    (
        c.tcp_idle_timeout,
        c.tcp_max_connections,
        c.tcp_max_per_source,
        c.tcp_source_prefix_v4,
        c.tcp_source_prefix_v6,
        c.tcp_busy_idle_timeout,
    )
}

fn publishes(e: &Option<EtcdConfig>) -> bool {
    e.as_ref().is_some_and(|e| e.mode == EtcdMode::Publish)
}

fn reads(e: &Option<EtcdConfig>) -> Option<&EtcdConfig> {
    e.as_ref().filter(|e| !e.zones.is_empty())
}

type LoadedFile = (
    crate::sources::watch::FileSource,
    Option<Arc<crate::sources::Snapshot>>,
);

fn gone(source: String) -> Update {
    Update {
        source,
        snapshot: Arc::new(crate::sources::Snapshot::Gone),
        taken: None,
    }
}

/// A running file source: its name, the path it reads, its task.
pub type FileTask = (String, PathBuf, tokio::task::AbortHandle);

/// What the reloader changes, and the tasks it restarts.
pub struct Live {
    pub shared: Arc<crate::server::Shared>,
    pub serving: Serving,
    pub listeners: Arc<Mutex<Listeners>>,
    pub merger: mpsc::Sender<Input>,
    pub updates: mpsc::Sender<Update>,
    pub board: SourceBoard,
    pub metrics: Metrics,
    /// The probe rules the prober follows; `None` until probes are first configured.
    pub probes: Option<watch::Sender<Vec<crate::probe::Rule>>>,
    /// The etcd read-mode source and the publisher, when running.
    pub etcd_reader: Option<tokio::task::AbortHandle>,
    /// Stops the publisher (it steps down and revokes its lease).
    pub etcd_publisher: Option<watch::Sender<bool>>,
    /// The merger's federation records (etcd publish mode, set at start).
    pub federation_records: Option<watch::Receiver<Arc<crate::answers::FederationRecords>>>,
    /// The config in effect, for the drain at shutdown (`lameduck_ms`, TCP grace) and the
    /// Kubernetes source (which follows its section from it).
    pub current: watch::Sender<Config>,
    /// `--workers` from the command line, which wins over the file's.
    pub workers_from_cli: bool,
    /// The zone directory and federation files being followed.
    pub file_tasks: Vec<FileTask>,
    /// SIGHUP ticks and the poll interval, for file sources started by a reload.
    pub reload_ticks: watch::Receiver<u64>,
    pub watch_interval: Duration,
    /// The member clusters' networks as read at start (a reloaded `geo` keeps them).
    pub cluster_networks: Vec<crate::geo::ClientNetwork>,
    /// The GeoIP database file as last read ([`geoip_fingerprint`]).
    pub geoip_seen: Fingerprint,
    /// What the federation files claim and the config their edits are checked against.
    pub accepted: crate::sources::cross::Accepted,
}

/// Size, mtime and inode of the configured GeoIP database file.
pub fn geoip_fingerprint(config: &Config) -> Fingerprint {
    config.geo.geoip_db.as_deref().and_then(fingerprint)
}

impl Live {
    /// Applies `new` over `last` (the last applied config). Only checks that cannot be made
    /// without side effects can fail here (the GeoIP database, binding new addresses); they are
    /// made first, so a failure leaves everything as it was.
    async fn apply(
        &mut self,
        last: &Config,
        new: &Config,
    ) -> Result<Vec<&'static str>, Vec<String>> {
        let mut changed = Vec::new();
        // New zone directory or federation files: loaded (and so checked) before anything else.
        let files = if differ(&last.zones_dir, &new.zones_dir)
            || differ(&last.federation_files, &new.federation_files)
        {
            Some(self.load_files(new)?)
        } else {
            None
        };
        // The GeoIP database counts as changed when its file did since it was last read.
        let geoip_now = geoip_fingerprint(new);
        let locator = if differ(&last.geo, &new.geo) || geoip_now != self.geoip_seen {
            // A GeoIP database is tens of megabytes: read off the runtime's threads.
            let geo = new.geo.clone();
            let clusters = self.cluster_networks.clone();
            let built =
                tokio::task::spawn_blocking(move || crate::app::build_locator(&geo, &clusters))
                    .await
                    .map_err(|e| vec![format!("{}: geo: {e}", new.path.display())])?;
            Some(Arc::new(built.map_err(|e| {
                vec![format!("{}: geo.geoip_db: {e}", new.path.display())]
            })?))
        } else {
            None
        };
        let buffers = (new.udp_receive_buffer, new.udp_send_buffer);
        if differ(&last.listen, &new.listen) || last.workers != new.workers {
            // Bound before any other change, so a taken address rejects the whole reload. New
            // addresses get the current `workers` (the command line's, when given).
            self.listeners
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .reconcile(&new.listen, new.workers, buffers, &self.serving)
                .map_err(|e| vec![format!("{}: listen: {e:#}", new.path.display())])?;
            if differ(&last.listen, &new.listen) {
                changed.push("listen");
            }
            if last.workers != new.workers {
                changed.push("workers");
            }
        }
        if (last.udp_receive_buffer, last.udp_send_buffer) != buffers {
            for l in &self
                .listeners
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .open
            {
                l.resize(buffers);
            }
            changed.push("udp");
        }
        let serving_settings = [
            (
                "edns_payload",
                differ(&last.edns_payload, &new.edns_payload),
            ),
            ("rrl", differ(&last.rrl, &new.rrl)),
            ("identity", differ(&last.identity, &new.identity)),
            ("transfers", differ(&last.transfers, &new.transfers)),
            (
                "etcd.axfr_allow",
                differ(
                    &last.etcd.as_ref().map(|e| &e.axfr_allow),
                    &new.etcd.as_ref().map(|e| &e.axfr_allow),
                ),
            ),
            ("tcp", differ(&tcp_of(last), &tcp_of(new))),
        ];
        if serving_settings.iter().any(|(_, d)| *d) {
            self.shared.journal.set_keep(Settings::journal_len(new));
            self.shared
                .settings
                .store(Arc::new(Settings::from_config(new)));
            changed.extend(serving_settings.iter().filter(|(_, d)| *d).map(|(n, _)| *n));
        }
        if let Some(locator) = locator {
            if self.merger.send(Input::Geo(locator)).await.is_err() {
                return Err(vec!["the merger has stopped".into()]);
            }
            self.geoip_seen = geoip_now;
            changed.push("geo");
        }
        if differ(&last.probes, &new.probes) {
            match &self.probes {
                Some(tx) => {
                    tx.send_replace(new.probes.clone());
                }
                None => {
                    self.metrics.register_probes();
                    let (tx, rx) = watch::channel(new.probes.clone());
                    tokio::spawn(crate::probe::run(
                        rx,
                        self.shared.clone(),
                        self.updates.clone(),
                    ));
                    self.probes = Some(tx);
                }
            }
            changed.push("probes");
        }
        if differ(&last.etcd, &new.etcd) {
            self.restart_etcd(last, new).await;
            changed.push("etcd");
        }
        if let Some(files) = files {
            self.start_files(new, files).await;
            changed.push("zones_dir/federation_files");
        }
        if last.lameduck != new.lameduck {
            changed.push("lameduck_ms");
        }
        self.current.send_replace(new.clone());
        Ok(changed)
    }

    /// The file sources of `new` that are not running yet, loaded; every problem of theirs is
    /// an error (a reload does not start a source on broken data).
    fn load_files(&self, new: &Config) -> Result<Vec<LoadedFile>, Vec<String>> {
        let mut loaded = Vec::new();
        let mut problems = Vec::new();
        for mut s in crate::app::file_sources(new) {
            let path = s.path();
            if self
                .file_tasks
                .iter()
                .any(|(n, p, _)| *n == s.name() && *p == path)
            {
                continue;
            }
            let (snapshot, p) = s.load();
            problems.extend(p.iter().map(|p| p.to_string()));
            loaded.push((s, snapshot));
        }
        if problems.is_empty() {
            Ok(loaded)
        } else {
            Err(problems)
        }
    }

    /// Starts the loaded file sources (each replacing a running one of its name) and stops
    /// those `new` no longer names. A replacement's snapshot goes out before its predecessor is
    /// forgotten, on the same channel, so the merger never builds without either.
    async fn start_files(&mut self, new: &Config, loaded: Vec<LoadedFile>) {
        let names: Vec<String> = crate::app::file_sources(new)
            .iter()
            .map(|s| s.name())
            .collect();
        for (s, snapshot) in loaded {
            let (name, path) = (s.name(), s.path());
            if let Some(i) = self.file_tasks.iter().position(|(n, ..)| *n == name) {
                self.file_tasks.remove(i).2.abort();
            }
            self.board.register(&name);
            self.metrics.register_source(&name);
            crate::sources::watch::report(&name, &[], &self.board, &self.metrics);
            if let Some(f) = s.federation() {
                self.accepted.set(&name, &path, f);
            }
            if let Some(snapshot) = snapshot {
                let _ = self
                    .updates
                    .send(Update {
                        source: name.clone(),
                        snapshot,
                        taken: None,
                    })
                    .await;
            }
            tracing::info!(source = name, path = %path.display(), "following a new file source");
            let task = tokio::spawn(crate::sources::watch::run(
                s,
                self.watch_interval,
                self.updates.clone(),
                self.board.clone(),
                self.metrics.clone(),
                self.reload_ticks.clone(),
                self.accepted.clone(),
            ));
            self.file_tasks.push((name, path, task.abort_handle()));
        }
        let (keep, gone_now): (Vec<_>, Vec<_>) = std::mem::take(&mut self.file_tasks)
            .into_iter()
            .partition(|(n, ..)| names.contains(n));
        self.file_tasks = keep;
        for (name, path, task) in gone_now {
            task.abort();
            self.board.remove(&name);
            self.accepted.forget(&name);
            tracing::info!(source = name, path = %path.display(), "no longer following a file source");
            let _ = self.updates.send(gone(name)).await;
        }
    }

    async fn restart_etcd(&mut self, last: &Config, new: &Config) {
        if new.etcd.is_some() {
            self.metrics.register_etcd();
        }
        let (old_reader, new_reader) = (reads(&last.etcd), reads(&new.etcd));
        if differ(&old_reader, &new_reader) {
            if let Some(h) = self.etcd_reader.take() {
                // Its last snapshot stays in the merger until replaced or removed below.
                h.abort();
            }
            let old_name = old_reader.map(crate::sources::etcd::source_name);
            let new_name = new_reader.map(crate::sources::etcd::source_name);
            if let Some(e) = new_reader {
                let name = crate::sources::etcd::source_name(e);
                if old_name.as_ref() != Some(&name) {
                    self.board.register(&name);
                    self.metrics.register_source(&name);
                }
                let task = tokio::spawn(crate::sources::etcd::run_reader(
                    e.clone(),
                    self.updates.clone(),
                    self.board.clone(),
                    self.metrics.clone(),
                ));
                self.etcd_reader = Some(task.abort_handle());
            }
            if let Some(old) = old_name.filter(|o| Some(o) != new_name.as_ref()) {
                // Another prefix (or none): the old copy serves until the new source has
                // loaded, then leaves.
                let (board, updates) = (self.board.clone(), self.updates.clone());
                tokio::spawn(async move {
                    if let Some(n) = new_name {
                        while !board.snapshot().get(&n).is_some_and(|s| s.loaded) {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                    board.remove(&old);
                    let _ = updates.send(gone(old)).await;
                });
            }
        }
        let publisher = |c: &Config| c.etcd.clone().filter(|e| e.mode == EtcdMode::Publish);
        if differ(&publisher(last), &publisher(new)) {
            if let Some(stop) = self.etcd_publisher.take() {
                let _ = stop.send(true);
            }
            // A publisher needs the merger's records, set up at start in publish mode only.
            if let (Some(e), Some(records)) = (publisher(new), &self.federation_records) {
                let id = format!("fedns pid {} http {}", std::process::id(), new.http);
                let (stop, stopped) = watch::channel(false);
                tokio::spawn(crate::sources::etcd::run_publisher(
                    e,
                    records.clone(),
                    self.metrics.clone(),
                    id,
                    stopped,
                ));
                self.etcd_publisher = Some(stop);
            }
        }
    }
}

/// Watches `started.path` (every `poll`, and at once on every `reload` tick) until the process
/// exits, applying each good version through `live`.
pub async fn run(
    started: Config,
    poll: Duration,
    mut reload: watch::Receiver<u64>,
    mut live: Live,
) {
    let path: PathBuf = started.path.clone();
    let metrics = live.metrics.clone();
    let mut seen = fingerprint(&path);
    let mut reload_open = true;
    let mut last_pending: Vec<&'static str> = Vec::new();
    let mut last = started.clone();
    loop {
        let forced = tokio::select! {
            _ = tokio::time::sleep(poll) => false,
            r = reload.changed(), if reload_open => {
                reload_open = r.is_ok();
                r.is_ok()
            }
        };
        let now = fingerprint(&path);
        if !forced && now == seen {
            continue;
        }
        seen = now;
        let loaded = Config::load(&path)
            .map_err(|problems| problems.iter().map(|p| p.to_string()).collect::<Vec<_>>());
        let applied = match loaded {
            Err(problems) => Err(problems),
            Ok(mut new) => {
                if live.workers_from_cli {
                    new.workers = started.workers;
                }
                // The checks `check` and the start make against the sources' data (reading
                // the federation files, off the runtime's threads), with no federation-file
                // edit admitted meanwhile; passing, it is what edits are checked against.
                let checked = new.clone();
                let accepted = live.accepted.clone();
                let problems: Vec<String> = tokio::task::spawn_blocking(move || {
                    accepted
                        .validate_config(&checked, crate::app::reload_problems)
                        .iter()
                        .map(|p| p.to_string())
                        .collect()
                })
                .await
                .unwrap_or_else(|e| vec![format!("{}: {e}", new.path.display())]);
                if !problems.is_empty() {
                    Err(problems)
                } else {
                    match live.apply(&last, &new).await {
                        Ok(changed) => Ok((new, changed)),
                        Err(problems) => {
                            live.accepted.set_config(&last);
                            Err(problems)
                        }
                    }
                }
            }
        };
        match applied {
            Err(problems) => {
                for p in &problems {
                    tracing::error!("{p}");
                }
                tracing::error!(
                    problems = problems.len(),
                    "config reload rejected; the running config stays"
                );
                metrics.config_reload_successful.set(0);
            }
            Ok((new, changed)) => {
                metrics.config_reload_successful.set(1);
                metrics.config_reload_timestamp.set(
                    SystemTime::now()
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs() as i64),
                );
                let open_workers = live
                    .listeners
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .open
                    .iter()
                    .map(|l| l.workers())
                    .max()
                    .unwrap_or(0);
                let pending = restart_only_changes(&started, &new, open_workers);
                let applied = if changed.is_empty() {
                    "none".to_string()
                } else {
                    changed.join(",")
                };
                if pending.is_empty() {
                    tracing::info!(applied, "config reloaded");
                } else {
                    tracing::warn!(
                        applied,
                        settings = pending.join(","),
                        "config reloaded; these settings take effect at the next restart"
                    );
                }
                if pending.is_empty() && !last_pending.is_empty() {
                    tracing::info!("config file and running config agree again");
                }
                metrics
                    .config_restart_pending
                    .set(i64::from(!pending.is_empty()));
                last_pending = pending;
                last = new;
            }
        }
    }
}
