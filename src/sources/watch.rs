//! Watches file sources by polling their metadata (size, mtime, inode), which also catches the
//! rename-into-place that editors and ConfigMap updates do, and reloads them on change or SIGHUP.
//! A federation file's load-balancer host names are resolved here in the background (at once when
//! they first appear, then every [`RESOLVE_EVERY`]) and laid into the snapshot sent; the query
//! path never resolves anything.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, watch};

use super::cross::Accepted;
use super::federation_file;
use super::zone_dir::{self, ZoneDir};
use super::{Snapshot, SourceBoard, Update};
use crate::dns::zonefile::Problem;
use crate::metrics::Metrics;

/// How often a federation file's load-balancer host names are resolved again.
pub const RESOLVE_EVERY: Duration = Duration::from_secs(30);

type Fingerprint = Vec<(PathBuf, Option<(SystemTime, u64, u64)>)>;

pub enum FileKind {
    Federation(PathBuf),
    Zones(ZoneDir),
}

/// A file-backed source and what it last delivered.
pub struct FileSource {
    pub kind: FileKind,
    name: String,
    fingerprint: Option<Fingerprint>,
    last_sent: Option<Arc<Snapshot>>,
    /// The last good federation file as parsed, with its host names.
    parsed: Option<federation_file::Parsed>,
    /// Addresses last resolved per host name (kept when a later lookup fails).
    resolved: HashMap<String, Vec<IpAddr>>,
    /// The last good federation file's services, so an edit re-parses only what it changed.
    items: federation_file::ItemCache,
    /// The generation of [`Accepted`] at which the file's current version was refused for
    /// what another source serves: it is read again once that changes.
    held: Option<u64>,
}

impl FileSource {
    /// `name` labels the source in `/readyz`, `/metrics` and logs.
    pub fn new(kind: FileKind, name: String) -> Self {
        FileSource {
            kind,
            name,
            fingerprint: None,
            last_sent: None,
            parsed: None,
            resolved: HashMap::new(),
            items: Default::default(),
            held: None,
        }
    }

    pub fn name(&self) -> String {
        self.name.clone()
    }

    /// The file or directory it reads.
    pub fn path(&self) -> PathBuf {
        match &self.kind {
            FileKind::Federation(p) => p.clone(),
            FileKind::Zones(z) => z.dir.clone(),
        }
    }

    fn fingerprint(&self) -> Fingerprint {
        use std::os::unix::fs::MetadataExt;
        let paths = match &self.kind {
            FileKind::Federation(p) => vec![p.clone()],
            FileKind::Zones(z) => {
                let mut v = zone_dir::files(&z.dir).unwrap_or_default();
                v.push(z.dir.clone());
                v
            }
        };
        paths
            .into_iter()
            .map(|p| {
                let m = std::fs::metadata(&p).ok().map(|m| {
                    (
                        m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                        m.len(),
                        m.ino(),
                    )
                });
                (p, m)
            })
            .collect()
    }

    /// Reads the source now. `Some(snapshot)` when there is a snapshot worth sending (new and
    /// different from the last one), plus every problem found.
    pub fn load(&mut self) -> (Option<Arc<Snapshot>>, Vec<Problem>) {
        self.load_with(None)
    }

    /// [`load`](Self::load) while serving: a federation file that parses must also pass
    /// [`Accepted::admit`] against the other sources, else it is refused like a file that does
    /// not parse (nothing sent, its problems returned, the last good version kept).
    pub fn load_admitted(&mut self, accepted: &Accepted) -> (Option<Arc<Snapshot>>, Vec<Problem>) {
        self.load_with(Some(accepted))
    }

    fn load_with(&mut self, accepted: Option<&Accepted>) -> (Option<Arc<Snapshot>>, Vec<Problem>) {
        self.fingerprint = Some(self.fingerprint());
        self.held = None;
        let (snapshot, problems) = match &mut self.kind {
            FileKind::Federation(path) => {
                let parsed = std::fs::read_to_string(&*path)
                    .map_err(|e| {
                        vec![Problem {
                            file: path.display().to_string(),
                            line: None,
                            message: e.to_string(),
                        }]
                    })
                    .and_then(|text| {
                        let p = federation_file::parse_cached(path, &text, &mut self.items)?;
                        match accepted.map(|a| a.admit(&self.name, path, &text, &p.federation)) {
                            Some(Err(held)) => {
                                self.held = Some(held.generation);
                                Err(held.problems)
                            }
                            _ => Ok(p),
                        }
                    });
                match parsed {
                    Ok(mut p) => {
                        if let Some(old) = &self.parsed {
                            p.share_unchanged(old);
                        }
                        let wanted = p.hosts();
                        self.resolved.retain(|h, _| wanted.contains(h));
                        let f = p.resolved(&self.resolved);
                        self.parsed = Some(p);
                        (Some(Snapshot::Federation(Box::new(f))), vec![])
                    }
                    Err(p) => (None, p),
                }
            }
            FileKind::Zones(dir) => {
                let (zones, problems) = dir.load();
                (Some(Snapshot::Zones(zones)), problems)
            }
        };
        match snapshot {
            Some(s) if self.last_sent.as_deref() != Some(&s) => {
                let s = Arc::new(s);
                self.last_sent = Some(s.clone());
                (Some(s), problems)
            }
            _ => (None, problems),
        }
    }

    /// The last good federation file's federation.
    pub fn federation(&self) -> Option<&crate::model::Federation> {
        self.parsed.as_ref().map(|p| &p.federation)
    }

    /// Whether a version refused for another source's sake is due to be read again.
    fn retry_due(&self, accepted: &Accepted) -> bool {
        self.held.is_some_and(|g| g != accepted.generation())
    }

    /// The load-balancer host names of the last good federation file.
    pub fn hosts(&self) -> BTreeSet<String> {
        self.parsed.as_ref().map(|p| p.hosts()).unwrap_or_default()
    }

    /// Notes what `host` resolved to (`None`: the lookup failed, keep its last addresses); a
    /// snapshot when that changes what the source serves.
    fn host_resolved(&mut self, host: String, ips: Option<Vec<IpAddr>>) -> Option<Arc<Snapshot>> {
        let ips = ips?;
        if self.resolved.get(&host) == Some(&ips) || !self.hosts().contains(&host) {
            return None;
        }
        self.resolved.insert(host, ips);
        let s = Snapshot::Federation(Box::new(self.parsed.as_ref()?.resolved(&self.resolved)));
        if self.last_sent.as_deref() == Some(&s) {
            return None;
        }
        let s = Arc::new(s);
        self.last_sent = Some(s.clone());
        Some(s)
    }

    fn changed(&self) -> bool {
        self.fingerprint.as_ref() != Some(&self.fingerprint())
    }
}

/// Reports a load's outcome to logs, metrics and the source board.
pub fn report(name: &str, problems: &[Problem], board: &SourceBoard, metrics: &Metrics) {
    if problems.is_empty() {
        board.loaded(name);
        metrics.source_up.with_label_values(&[name]).set(1);
        return;
    }
    // Status first: whoever reads the log line then finds /readyz and the metrics saying so.
    board.failed(
        name,
        problems
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join("; "),
    );
    metrics.source_up.with_label_values(&[name]).set(0);
    metrics.source_errors.with_label_values(&[name]).inc();
    for p in problems {
        tracing::error!(source = name, "{p}; keeping the last good data");
    }
}

/// Starts a background lookup of each of `hosts` not being looked up already (with `all`
/// false, only of those never resolved); results arrive on `tx`.
fn resolve_hosts(
    source: &FileSource,
    all: bool,
    resolving: &mut HashSet<String>,
    tx: &mpsc::Sender<(String, Option<Vec<IpAddr>>)>,
) {
    for h in source.hosts() {
        if (!all && source.resolved.contains_key(&h)) || !resolving.insert(h.clone()) {
            continue;
        }
        let tx = tx.clone();
        let what = source.name();
        tokio::spawn(async move {
            let ips = super::resolve::lookup(&h, &what).await;
            let _ = tx.send((h, ips)).await;
        });
    }
}

/// Polls `source` every `interval` (and at once on SIGHUP) and sends changed snapshots, each
/// admitted by `accepted` first.
pub async fn run(
    mut source: FileSource,
    interval: Duration,
    tx: mpsc::Sender<Update>,
    board: SourceBoard,
    metrics: Metrics,
    mut reload: watch::Receiver<u64>,
    accepted: Accepted,
) {
    let name = source.name();
    let (resolve_tx, mut resolve_rx) = mpsc::channel(64);
    let mut resolving = HashSet::new();
    resolve_hosts(&source, false, &mut resolving, &resolve_tx);
    let mut resolve_tick = tokio::time::interval(RESOLVE_EVERY);
    resolve_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    resolve_tick.reset(); // the first tick is now: the hosts were just looked up
    loop {
        let snapshot = tokio::select! {
            forced = async {
                tokio::select! {
                    _ = tokio::time::sleep(interval) => false,
                    r = reload.changed() => r.is_ok(),
                }
            } => {
                if !forced && !source.changed() && !source.retry_due(&accepted) {
                    continue;
                }
                let (snapshot, problems) = source.load_admitted(&accepted);
                report(&name, &problems, &board, &metrics);
                resolve_hosts(&source, false, &mut resolving, &resolve_tx);
                snapshot
            }
            Some((host, ips)) = resolve_rx.recv() => {
                resolving.remove(&host);
                source.host_resolved(host, ips)
            }
            _ = resolve_tick.tick() => {
                resolve_hosts(&source, true, &mut resolving, &resolve_tx);
                continue;
            }
        };
        if let Some(snapshot) = snapshot {
            tracing::info!(source = %name, "source changed");
            if tx
                .send(Update {
                    source: name.clone(),
                    snapshot,
                    taken: None,
                })
                .await
                .is_err()
            {
                return; // merger gone: shutting down
            }
        }
    }
}
