//! Serving: the DNS sockets (UDP workers, TCP) and the operations HTTP endpoint, all reading
//! the one shared, atomically swapped answer table.

pub mod explain;
pub mod http;
pub mod listen;
pub mod secondaries;
pub mod status;
pub mod tcp;
pub mod udp;

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::dns::respond::{Limits, Source};
use crate::metrics::Metrics;
use crate::model::Federation;
use crate::sources::SourceBoard;
use crate::table::Table;

/// The serving settings a reload may change, swapped whole (`Shared::settings`): a query loads
/// them once and sees either the old or the new set, never a mix.
pub struct Settings {
    pub limits: Limits,
    /// NSID and CHAOS identity answers (empty unless configured).
    pub identity: crate::dns::identity::Identity,
    /// Clients allowed to transfer zone-file and federation zones (AXFR/IXFR over TCP), and
    /// etcd zones; empty: refused.
    pub transfer_allow: Vec<(std::net::IpAddr, u8)>,
    pub etcd_transfer_allow: Vec<(std::net::IpAddr, u8)>,
    /// TSIG key every transfer must be signed with, and NOTIFYs are signed with.
    pub transfer_key: Option<crate::dns::tsig::Key>,
    /// Secondaries to NOTIFY after every publish.
    pub notify: Vec<std::net::SocketAddr>,
    pub tcp: crate::server::tcp::TcpLimits,
    /// Response-rate limiting (`responses_per_second` 0: off). UDP workers compare the pointer
    /// once per batch and start a fresh limiter when it changes.
    pub rrl: Arc<crate::dns::rrl::RrlConfig>,
}

impl Settings {
    pub fn from_config(config: &crate::config::Config) -> Settings {
        Settings {
            limits: Limits {
                edns_payload: config.edns_payload,
            },
            identity: crate::dns::identity::Identity::new(
                config.identity.id.as_deref(),
                config.identity.version.as_deref(),
                config.identity.nsid.as_deref().map(str::as_bytes),
            ),
            transfer_allow: config.transfers.allow.clone(),
            etcd_transfer_allow: config
                .etcd
                .as_ref()
                .map(|e| e.axfr_allow.clone())
                .unwrap_or_default(),
            transfer_key: config.transfers.tsig.clone(),
            notify: config.transfers.notify.clone(),
            tcp: crate::server::tcp::TcpLimits {
                idle_timeout: config.tcp_idle_timeout,
                max_connections: config.tcp_max_connections,
                busy_idle_timeout: config.tcp_busy_idle_timeout,
                max_per_source: config.tcp_max_per_source,
                source_prefix_v4: config.tcp_source_prefix_v4,
                source_prefix_v6: config.tcp_source_prefix_v6,
            },
            rrl: Arc::new(config.rrl.clone()),
        }
    }

    /// Who may transfer what.
    pub fn transfer_access(&self) -> crate::dns::transfer::Access<'_> {
        crate::dns::transfer::Access {
            zones: &self.transfer_allow,
            etcd: &self.etcd_transfer_allow,
            key: self.transfer_key.as_ref(),
        }
    }

    /// Tables kept for IXFR: only when someone may transfer.
    pub fn journal_len(config: &crate::config::Config) -> usize {
        if config.transfers.allow.is_empty() {
            0
        } else {
            config.transfers.journal
        }
    }
}

/// What the query path answers from: one table (with the client locator its per-location
/// answers are indexed by) and one set of settings.
pub fn source<'a>(table: &'a Table, settings: &'a Settings) -> Source<'a> {
    Source {
        table,
        locator: &table.locator,
        limits: settings.limits,
        tsig: settings.transfer_key.as_ref(),
        identity: Some(&settings.identity),
    }
}

/// State shared by every serving task. Only the merger stores into `table`; only the reloader
/// into `settings`.
pub struct Shared {
    pub table: ArcSwap<Table>,
    /// The federations the current table was built from (for explain; never the query path).
    pub federations: ArcSwap<Vec<Federation>>,
    pub settings: ArcSwap<Settings>,
    pub metrics: Metrics,
    pub sources: SourceBoard,
    /// Recent tables, for IXFR (pushed by the merger).
    pub journal: Arc<crate::dns::transfer::Journal>,
    /// Tells the NOTIFY task that a table was published.
    pub published: tokio::sync::watch::Sender<u64>,
    /// Each probed address's state and reason, written by the prober (for explain only).
    pub probes: std::sync::Mutex<crate::probe::Status>,
    /// Set on SIGTERM: `/readyz` answers 503 while DNS keeps answering (lame duck).
    pub draining: std::sync::atomic::AtomicBool,
}
