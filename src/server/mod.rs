//! Serving: the DNS sockets (UDP workers, TCP) and the operations HTTP endpoint, all reading
//! the one shared, atomically swapped answer table.

pub mod explain;
pub mod http;
pub mod tcp;
pub mod udp;

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
    /// Clients allowed to transfer zones (AXFR over TCP); empty: transfers are refused.
    pub axfr_allow: Vec<(std::net::IpAddr, u8)>,
    /// Each probed address's state and reason, written by the prober (for explain only).
    pub probes: std::sync::Mutex<crate::probe::Status>,
    /// Set on SIGTERM: `/readyz` answers 503 while DNS keeps answering (lame duck).
    pub draining: std::sync::atomic::AtomicBool,
}

impl Shared {
    /// What the query path answers from, for one table.
    pub fn source<'a>(&'a self, table: &'a Table) -> Source<'a> {
        Source {
            table,
            locator: &self.locator,
            limits: self.limits,
        }
    }
}
