//! Watches file sources by polling their metadata (size, mtime, inode), which also catches the
//! rename-into-place that editors and ConfigMap updates do, and reloads them on change or SIGHUP.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, watch};

use super::federation_file;
use super::zone_dir::{self, ZoneDir};
use super::{Snapshot, SourceBoard, Update};
use crate::dns::zonefile::Problem;
use crate::metrics::Metrics;

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
}

impl FileSource {
    /// `name` labels the source in `/readyz`, `/metrics` and logs.
    pub fn new(kind: FileKind, name: String) -> Self {
        FileSource {
            kind,
            name,
            fingerprint: None,
            last_sent: None,
        }
    }

    pub fn name(&self) -> String {
        self.name.clone()
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
        self.fingerprint = Some(self.fingerprint());
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
                    .and_then(|text| federation_file::parse(path, &text));
                match parsed {
                    Ok(f) => (Some(Snapshot::Federation(Box::new(f))), vec![]),
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
    for p in problems {
        tracing::error!(source = name, "{p}; keeping the last good data");
    }
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
}

/// Polls `source` every `interval` (and at once on SIGHUP) and sends changed snapshots.
pub async fn run(
    mut source: FileSource,
    interval: Duration,
    tx: mpsc::Sender<Update>,
    board: SourceBoard,
    metrics: Metrics,
    mut reload: watch::Receiver<u64>,
) {
    let name = source.name();
    loop {
        let forced = tokio::select! {
            _ = tokio::time::sleep(interval) => false,
            r = reload.changed() => r.is_ok(),
        };
        if !forced && !source.changed() {
            continue;
        }
        let (snapshot, problems) = source.load();
        report(&name, &problems, &board, &metrics);
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
