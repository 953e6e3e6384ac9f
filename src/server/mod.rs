//! Serving: the DNS sockets (UDP workers, TCP) and the operations HTTP endpoint, all reading
//! the one shared, atomically swapped answer table.

pub mod explain;
pub mod http;
pub mod secondaries;
pub mod status;
pub mod tcp;
pub mod udp;

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::dns::respond::{Limits, Source};
use crate::geo::Locator;
use crate::metrics::Metrics;
use crate::model::Federation;
use crate::sources::SourceBoard;
use crate::table::Table;

/// State shared by every serving task. Only the merger stores into `table`.
pub struct Shared {
    pub table: ArcSwap<Table>,
    /// The federations the current table was built from (for explain; never the query path).
    pub federations: ArcSwap<Vec<Federation>>,
    /// Client locations; fixed at start, so table location ids always match it.
    pub locator: Locator,
    pub limits: Limits,
    pub metrics: Metrics,
    pub sources: SourceBoard,
    /// Clients allowed to transfer zone-file and federation zones (AXFR/IXFR over TCP), and
    /// etcd zones; empty: refused.
    pub transfer_allow: Vec<(std::net::IpAddr, u8)>,
    pub etcd_transfer_allow: Vec<(std::net::IpAddr, u8)>,
    /// NSID and CHAOS identity answers (empty unless configured).
    pub identity: crate::dns::identity::Identity,
    /// TSIG key every transfer must be signed with, and NOTIFYs are signed with.
    pub transfer_key: Option<crate::dns::tsig::Key>,
    /// Recent tables, for IXFR (pushed by the merger).
    pub journal: Arc<crate::dns::transfer::Journal>,
    /// Tells the NOTIFY task that a table was published.
    pub published: tokio::sync::watch::Sender<u64>,
    /// Each probed address's state and reason, written by the prober (for explain only).
    pub probes: std::sync::Mutex<crate::probe::Status>,
    /// Set on SIGTERM: `/readyz` answers 503 while DNS keeps answering (lame duck).
    pub draining: std::sync::atomic::AtomicBool,
}

impl Shared {
    /// Who may transfer what.
    pub fn transfer_access(&self) -> crate::dns::transfer::Access<'_> {
        crate::dns::transfer::Access {
            zones: &self.transfer_allow,
            etcd: &self.etcd_transfer_allow,
            key: self.transfer_key.as_ref(),
        }
    }

    /// What the query path answers from, for one table.
    pub fn source<'a>(&'a self, table: &'a Table) -> Source<'a> {
        Source {
            table,
            locator: &self.locator,
            limits: self.limits,
            tsig: self.transfer_key.as_ref(),
            identity: Some(&self.identity),
        }
    }
}
