//! Serving: the DNS sockets (UDP workers, TCP) and the operations HTTP endpoint, all reading
//! the one shared, atomically swapped answer table.

pub mod http;
pub mod tcp;
pub mod udp;

use arc_swap::ArcSwap;

use crate::dns::respond::Limits;
use crate::metrics::Metrics;
use crate::sources::SourceBoard;
use crate::table::Table;

/// State shared by every serving task. Only the merger stores into `table`.
pub struct Shared {
    pub table: ArcSwap<Table>,
    pub limits: Limits,
    pub metrics: Metrics,
    pub sources: SourceBoard,
    /// Clients allowed to transfer zones (AXFR over TCP); empty: transfers are refused.
    pub axfr_allow: Vec<(std::net::IpAddr, u8)>,
}
