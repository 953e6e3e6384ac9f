//! Sources: each turns some input (files today; Kubernetes and etcd later) into complete
//! snapshots of the model and hands them to the merger.
//!
//! Guarantees: a source only ever sends complete, validated snapshots; when its input breaks it
//! sends nothing, logs what is wrong, marks itself down in `/metrics` and `/readyz`, and the
//! merger keeps using its last good snapshot.

pub mod cross;
pub mod etcd;
pub mod federation_file;
pub mod kubernetes;
pub mod resolve;
pub mod watch;
pub mod zone_dir;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::model::{Federation, StaticZone};

/// A complete view of everything one source knows.
#[derive(Debug, Clone, PartialEq)]
pub enum Snapshot {
    Zones(Vec<StaticZone>),
    Federation(Box<Federation>),
    /// The in-memory copy of an etcd prefix (SkyDNS layout) and the zones served from it.
    Etcd(Box<etcd::skydns::EtcdData>),
    /// Active probe verdicts per shard (see [`crate::probe`]).
    Probes(crate::probe::Verdicts),
    /// The source no longer exists (a reload removed it): the merger forgets it. Sent on the
    /// sources' channel, so it is ordered after the snapshot of the source replacing it.
    Gone,
    /// No data: a clock tick asking the merger whether DNSSEC signatures are due to be made
    /// again (it publishes only if they are).
    Resign,
}

/// One new snapshot from the source named `source`.
#[derive(Debug)]
pub struct Update {
    pub source: String,
    pub snapshot: Arc<Snapshot>,
    /// Dropped by the merger once a table with the snapshot is published: a source that sends
    /// large snapshots waits for this before sending the next one (bursts coalesce), and knows
    /// when its data is being served.
    pub taken: Option<tokio::sync::oneshot::Sender<()>>,
}

/// Per-source state for `/readyz` and logs (never read on the query path).
#[derive(Debug, Clone, Default)]
pub struct SourceState {
    /// A snapshot has been delivered at least once.
    pub loaded: bool,
    /// The latest load failed with this (the last good snapshot is still in use).
    pub last_error: Option<String>,
    /// Until then `/readyz` waits for the first snapshot; after it, readiness no longer does
    /// (`None`: it waits for ever, as for file sources, which load before serving starts).
    pub wait_until: Option<std::time::Instant>,
    /// Something an operator should know that does not make the source unready (a member
    /// cluster without an enabled CRD), shown beside its state.
    pub note: Option<String>,
}

impl SourceState {
    /// Whether `/readyz` still waits for this source.
    pub fn holds_readiness(&self, now: std::time::Instant) -> bool {
        !self.loaded && self.wait_until.is_none_or(|t| now < t)
    }
}

#[derive(Debug, Default, Clone)]
pub struct SourceBoard(Arc<Mutex<Board>>);

#[derive(Debug, Default)]
struct Board {
    sources: BTreeMap<String, SourceState>,
    /// Sources removed (by a reload) and not registered again: a report still in flight from
    /// their stopped task must not bring them back.
    removed: std::collections::BTreeSet<String>,
}

impl SourceBoard {
    fn with(&self, source: &str, f: impl FnOnce(&mut SourceState)) {
        let mut b = self.0.lock().expect("source board");
        if b.removed.contains(source) {
            return;
        }
        f(b.sources.entry(source.to_string()).or_default());
    }

    pub fn register(&self, source: &str) {
        let mut b = self.0.lock().expect("source board");
        b.removed.remove(source);
        b.sources.entry(source.to_string()).or_default();
    }

    /// Registers a source that readiness waits for only until `until` (a Kubernetes cluster:
    /// `sync_timeout`), keeping an earlier deadline of the same source.
    pub fn register_until(&self, source: &str, until: std::time::Instant) {
        self.register(source);
        self.with(source, |s| {
            if !s.loaded && s.wait_until.is_none() {
                s.wait_until = Some(until);
            }
        });
    }

    pub fn loaded(&self, source: &str) {
        self.with(source, |s| {
            s.loaded = true;
            s.last_error = None;
        });
    }

    pub fn failed(&self, source: &str, error: String) {
        self.with(source, |s| s.last_error = Some(error));
    }

    pub fn note(&self, source: &str, note: Option<String>) {
        self.with(source, |s| s.note = note);
    }

    /// Forgets a source that no longer exists (a cluster removed from the config, a file or
    /// etcd prefix a reload stopped following) until it is registered again.
    pub fn remove(&self, source: &str) {
        let mut b = self.0.lock().expect("source board");
        b.sources.remove(source);
        b.removed.insert(source.to_string());
    }

    pub fn snapshot(&self) -> BTreeMap<String, SourceState> {
        self.0.lock().expect("source board").sources.clone()
    }
}

#[cfg(test)]
mod board_tests {
    use super::SourceBoard;

    #[test]
    fn a_removed_source_stays_removed_until_registered_again() {
        let b = SourceBoard::default();
        b.register("file:a");
        b.loaded("file:a");
        b.remove("file:a");
        // A report from the stopped task, still in flight.
        b.loaded("file:a");
        b.failed("file:a", "late".into());
        assert!(!b.snapshot().contains_key("file:a"));
        b.register("file:a");
        assert!(!b.snapshot()["file:a"].loaded, "registered afresh");
        // Sources that never registered still show up when they report.
        b.failed("file:b", "x".into());
        assert!(b.snapshot().contains_key("file:b"));
    }
}
