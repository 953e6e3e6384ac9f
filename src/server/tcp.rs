//! TCP serving (RFC 7766): length-framed queries, several per connection answered in order, an
//! idle timeout, and a fair share of a bounded number of connections (RFC 7766 §6.2).
//!
//! Fairness: every connection is registered with its source prefix (`/32` and `/64` by
//! default). A new connection from a prefix that already holds its share closes that prefix's
//! longest-idle connection; a new connection when the global cap is reached closes the
//! longest-idle connection overall, so new clients are served instead of refused. Above 3/4 of
//! the cap, connections idle longer than the short `busy_idle_timeout` are closed as well. The
//! registry is one for every listener (`TcpConnections`), so the cap and the shares hold for
//! the whole server; it is touched only on accept and close; per query a connection stores its
//! last activity in an atomic.
//!
//! Memory: a connection owns only its request buffer, sized to the frame it reads (and shrunk
//! back after a large one); responses are written from one 64 KiB buffer per thread, straight
//! to the socket, and copied only when the socket cannot take them at once.
//!
//! On shutdown it stops accepting, answers the queries already sent on open connections, closes
//! each connection when it has nothing more to read, and returns once all are closed.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus::{IntCounterVec, IntGauge, Opts, Registry as MetricsRegistry};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};

use super::Shared;
use crate::dns::respond::{Peer, Transport, WorkerState, respond};
use crate::metrics::QueryStats;

#[derive(Clone, Copy, Debug)]
pub struct TcpLimits {
    pub idle_timeout: Duration,
    /// Idle timeout while more than 3/4 of `max_connections` are open.
    pub busy_idle_timeout: Duration,
    pub max_connections: usize,
    /// Connections one source prefix may hold; more close its own longest-idle ones.
    pub max_per_source: usize,
    /// Prefix lengths that make one source.
    pub source_prefix_v4: u8,
    pub source_prefix_v6: u8,
}

/// TCP connection metrics.
#[derive(Clone)]
struct TcpMetrics {
    open: IntGauge,
    closed: IntCounterVec,
}

/// The connections of every listener: one registry, so the cap and each source's share hold
/// for the whole server (a source cannot take its share once per listen address), with its
/// metrics. Cloned into each listener's `serve`.
#[derive(Clone)]
pub struct TcpConnections {
    registry: Arc<Mutex<Registry>>,
    metrics: TcpMetrics,
}

impl TcpConnections {
    pub fn new(registry: &MetricsRegistry) -> Self {
        TcpConnections {
            registry: Arc::new(Mutex::new(Registry::new())),
            metrics: TcpMetrics::new(registry),
        }
    }
}

impl TcpMetrics {
    fn new(registry: &MetricsRegistry) -> Self {
        let open = IntGauge::new("fedns_tcp_connections", "Open DNS TCP connections")
            .expect("valid metric");
        let closed = IntCounterVec::new(
            Opts::new(
                "fedns_tcp_evicted_total",
                "TCP connections closed by the server to make room: `cap` (global cap reached, \
                 longest idle closed), `source` (the source prefix's share reached), `busy_idle` \
                 (idle past busy_idle_timeout while near the cap)",
            ),
            &["reason"],
        )
        .expect("valid metric");
        // A second registration (a second server in the same registry, in tests) is harmless.
        let _ = registry.register(Box::new(open.clone()));
        let _ = registry.register(Box::new(closed.clone()));
        TcpMetrics { open, closed }
    }
}

/// Source prefix of a client: family and the address masked to the prefix length.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
struct Prefix(u8, u128);

impl Prefix {
    fn of(ip: IpAddr, limits: &TcpLimits) -> Prefix {
        let mask = |bits: u32, len: u8| {
            if len == 0 {
                0
            } else {
                u128::MAX << (bits - len as u32)
            }
        };
        match ip {
            IpAddr::V4(v4) => Prefix(
                4,
                u32::from(v4) as u128 & mask(32, limits.source_prefix_v4.min(32)),
            ),
            IpAddr::V6(v6) => Prefix(
                6,
                u128::from(v6) & mask(128, limits.source_prefix_v6.min(128)),
            ),
        }
    }
}

/// What a connection shares with the registry.
struct Conn {
    /// Milliseconds since the registry's epoch at the last complete frame or response.
    last_active: AtomicU64,
    /// Told when the registry closes the connection to make room.
    evict: Notify,
}

struct Entry {
    conn: Arc<Conn>,
    prefix: Prefix,
}

/// Every open connection, by id; only the acceptor and closing connections lock it.
struct Registry {
    epoch: Instant,
    conns: HashMap<u64, Entry>,
    per_prefix: HashMap<Prefix, usize>,
    next_id: u64,
    last_sweep: u64,
    /// Most connections open since memory was last given back.
    peak: usize,
}

impl Registry {
    fn new() -> Self {
        Registry {
            epoch: Instant::now(),
            conns: HashMap::new(),
            per_prefix: HashMap::new(),
            next_id: 0,
            last_sweep: 0,
            peak: 0,
        }
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Removes `id` (if still registered) and tells it to close when `evict`.
    fn remove(&mut self, id: u64, evict: bool) {
        if let Some(e) = self.conns.remove(&id) {
            if let Some(n) = self.per_prefix.get_mut(&e.prefix) {
                *n -= 1;
                if *n == 0 {
                    self.per_prefix.remove(&e.prefix);
                }
            }
            if evict {
                e.conn.evict.notify_one();
            }
        }
    }

    /// Closes the longest-idle connection among those `pick` accepts.
    fn evict_longest_idle(&mut self, pick: impl Fn(&Entry) -> bool) -> bool {
        let oldest = self
            .conns
            .iter()
            .filter(|(_, e)| pick(e))
            .min_by_key(|(id, e)| (e.conn.last_active.load(Relaxed), **id))
            .map(|(id, _)| *id);
        match oldest {
            Some(id) => {
                self.remove(id, true);
                true
            }
            None => false,
        }
    }

    /// True (once) when a flood of connections is over: at least 256 were open, and now at
    /// most an eighth of that.
    fn flood_over(&mut self) -> bool {
        if self.peak >= 256 && self.conns.len() <= self.peak / 8 {
            self.peak = self.conns.len();
            return true;
        }
        false
    }

    /// Makes room for a connection from `prefix` and registers it.
    fn admit(&mut self, prefix: Prefix, limits: &TcpLimits, m: &TcpMetrics) -> (u64, Arc<Conn>) {
        let now = self.now();
        // Near the cap: close what has been idle past the short timeout (at most every 100 ms).
        if self.conns.len() * 4 >= limits.max_connections * 3 && now >= self.last_sweep + 100 {
            self.last_sweep = now;
            let short = limits.busy_idle_timeout.as_millis() as u64;
            let stale: Vec<u64> = self
                .conns
                .iter()
                .filter(|(_, e)| now.saturating_sub(e.conn.last_active.load(Relaxed)) >= short)
                .map(|(id, _)| *id)
                .collect();
            for id in &stale {
                self.remove(*id, true);
            }
            m.closed
                .with_label_values(&["busy_idle"])
                .inc_by(stale.len() as u64);
        }
        if self.per_prefix.get(&prefix).copied().unwrap_or(0) >= limits.max_per_source
            && self.evict_longest_idle(|e| e.prefix == prefix)
        {
            m.closed.with_label_values(&["source"]).inc();
        }
        while self.conns.len() >= limits.max_connections && self.evict_longest_idle(|_| true) {
            m.closed.with_label_values(&["cap"]).inc();
        }
        let id = self.next_id;
        self.next_id += 1;
        let conn = Arc::new(Conn {
            last_active: AtomicU64::new(now),
            evict: Notify::new(),
        });
        self.conns.insert(
            id,
            Entry {
                conn: conn.clone(),
                prefix,
            },
        );
        *self.per_prefix.entry(prefix).or_insert(0) += 1;
        self.peak = self.peak.max(self.conns.len());
        m.open.set(self.conns.len() as i64);
        (id, conn)
    }
}

pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    stats: Arc<QueryStats>,
    connections: TcpConnections,
    mut shutdown: watch::Receiver<bool>,
) {
    let TcpConnections { registry, metrics } = connections;
    // This listener's open connections (the registry holds every listener's), waited for at
    // shutdown.
    let live = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    // Each connection starts its rotation one further than the last, so that clients opening a
    // connection per query (resolvers retrying after TC=1) still see rotated answers.
    let mut next_rotation = 0usize;
    loop {
        let accepted = tokio::select! {
            biased;
            _ = shutdown.wait_for(|s| *s) => break,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(error = %e, "tcp accept failed");
                // Out of descriptors and similar: back off instead of spinning.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        // Read at every accept, so a reload's limits apply from the next connection on.
        let limits = shared.settings.load().tcp;
        let prefix = Prefix::of(peer.ip().to_canonical(), &limits);
        let (id, conn, epoch) = {
            let mut r = registry.lock().expect("tcp registry");
            let (id, conn) = r.admit(prefix, &limits, &metrics);
            (id, conn, r.epoch)
        };
        live.fetch_add(1, Relaxed);
        let (shared, stats, registry, metrics, shutdown, live) = (
            shared.clone(),
            stats.clone(),
            registry.clone(),
            metrics.clone(),
            shutdown.clone(),
            live.clone(),
        );
        let state = WorkerState::starting_at(next_rotation);
        next_rotation = next_rotation.wrapping_add(1);
        tokio::spawn(async move {
            let c = Connection {
                shared: &shared,
                stats: &stats,
                conn: &conn,
                epoch,
            };
            c.run(stream, peer, state, shutdown).await;
            let flood_over = {
                let mut r = registry.lock().expect("tcp registry");
                r.remove(id, false);
                metrics.open.set(r.conns.len() as i64);
                r.flood_over()
            };
            live.fetch_sub(1, Relaxed);
            if flood_over {
                // Off the serving threads: trimming a large heap can take milliseconds.
                tokio::task::spawn_blocking(give_back_memory);
            }
        });
    }
    drop(listener);
    // Connections close once they have nothing left to read, or at their idle timeout.
    while live.load(Relaxed) > 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Returns the heap freed by closed connections to the kernel. glibc keeps freed memory in its
/// per-thread arenas, so without this the resident size stays at a flood's peak.
fn give_back_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory; it is safe to call at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Largest request buffer a connection keeps between frames.
const KEEP_REQUEST_BUF: usize = 4096;

thread_local! {
    /// Response buffer (2-byte length + up to 65,535 bytes) of every connection on this thread:
    /// a response is built and written without an await in between.
    static OUT: RefCell<Box<[u8]>> = RefCell::new(vec![0u8; u16::MAX as usize + 2].into_boxed_slice());
}

struct Connection<'a> {
    shared: &'a Shared,
    stats: &'a QueryStats,
    conn: &'a Conn,
    epoch: Instant,
}

/// What became of a response after one non-blocking write.
enum Sent {
    All,
    /// The bytes the socket did not take at once.
    Rest(Vec<u8>),
    Failed,
}

impl Connection<'_> {
    fn touch(&self) {
        self.conn
            .last_active
            .store(self.epoch.elapsed().as_millis() as u64, Relaxed);
    }

    async fn run(
        &self,
        mut stream: TcpStream,
        peer: SocketAddr,
        mut state: WorkerState,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let _ = stream.set_nodelay(true);
        let peer = Peer {
            addr: peer.ip().to_canonical(),
            transport: Transport::Tcp,
        };
        let mut req: Vec<u8> = Vec::new();
        loop {
            // The current idle timeout (a reload may change it).
            let idle = self.shared.settings.load().tcp.idle_timeout;
            // Wait for the next frame to begin (cancel safe: peeking consumes nothing); at
            // shutdown, a connection with nothing begun is closed.
            let mut first = [0u8; 1];
            tokio::select! {
                biased;
                r = tokio::time::timeout(idle, stream.peek(&mut first)) => match r {
                    Ok(Ok(n)) if n > 0 => {}
                    _ => return, // idle, closed or broken
                },
                _ = self.conn.evict.notified() => return,
                _ = shutdown.wait_for(|s| *s) => return,
            }
            // A frame begun is read to its end and answered, shutdown or not.
            let len = tokio::select! {
                biased;
                r = tokio::time::timeout(idle, read_frame(&mut stream, &mut req)) => match r {
                    Ok(Ok(len)) => len,
                    _ => return,
                },
                _ = self.conn.evict.notified() => return,
            };
            let started = Instant::now();
            self.touch();
            if len < 12 || req[2] & 0x80 != 0 {
                // Shorter than a header, or a response: not a DNS client; close at once.
                self.stats.dropped();
                return;
            }
            if !self
                .answer(&mut stream, &req[..len], peer, &mut state)
                .await
            {
                return;
            }
            self.stats.served(Transport::Tcp, started.elapsed(), 1);
            self.touch();
            if req.capacity() > KEEP_REQUEST_BUF {
                req = Vec::new();
            }
        }
    }

    /// Answers one query; false when the connection must close.
    async fn answer(
        &self,
        stream: &mut TcpStream,
        req: &[u8],
        peer: Peer,
        state: &mut WorkerState,
    ) -> bool {
        let shared = self.shared;
        // A transfer request is checked by the query path's strict parser first: a malformed
        // one falls through to `respond`, which answers it FORMERR like any query.
        if shared.settings.load().transfer_access().any()
            && crate::dns::transfer::transfer_type(req).is_some()
            && let Some(question) = crate::dns::respond::checked_question(req)
        {
            // A transfer reads a whole zone: on a blocking thread, over the table and settings
            // loaded now.
            let table = shared.table.load_full();
            let settings = shared.settings.load_full();
            let journal = shared.journal.clone();
            let req = req.to_vec();
            let addr = peer.addr;
            // Messages stream through a small channel, so a large zone is never in memory whole.
            let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
            let work = tokio::task::spawn_blocking(move || {
                let access = settings.transfer_access();
                crate::dns::transfer::answer(&table, &journal, &req, addr, access, &mut |m| {
                    tx.blocking_send(m).is_ok()
                })
            });
            let mut sent_any = false;
            while let Some(m) = rx.recv().await {
                if !sent_any {
                    // Counted once, with the first message's rcode (NOERROR, or NOTAUTH for a
                    // bad signature).
                    sent_any = true;
                    let zone = self
                        .stats
                        .request(Transport::Tcp, question.qtype, question.name());
                    self.stats
                        .response(zone, m.get(3).map_or(0, |b| b & 0x0f) as u16);
                }
                let mut framed = (m.len() as u16).to_be_bytes().to_vec();
                framed.extend_from_slice(&m);
                if !self.write(stream, &framed).await {
                    // Dropping the receiver stops the transfer at its next message.
                    return false;
                }
            }
            if work.await.unwrap_or(false) || sent_any {
                return true;
            }
        }
        let sent = OUT.with_borrow_mut(|out| {
            let table = shared.table.load();
            let settings = shared.settings.load();
            let Some(rlen) = respond(
                super::source(&table, &settings),
                req,
                &mut out[2..],
                peer,
                state,
                self.stats,
            ) else {
                return Sent::All;
            };
            out[..2].copy_from_slice(&(rlen as u16).to_be_bytes());
            let framed = &out[..rlen + 2];
            match stream.try_write(framed) {
                Ok(n) if n == framed.len() => Sent::All,
                Ok(n) => Sent::Rest(framed[n..].to_vec()),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Sent::Rest(framed.to_vec()),
                Err(_) => Sent::Failed,
            }
        });
        match sent {
            Sent::All => true,
            Sent::Rest(rest) => self.write(stream, &rest).await,
            Sent::Failed => false,
        }
    }

    async fn write(&self, stream: &mut TcpStream, bytes: &[u8]) -> bool {
        tokio::select! {
            r = tokio::time::timeout(self.shared.settings.load().tcp.idle_timeout, stream.write_all(bytes)) => matches!(r, Ok(Ok(()))),
            _ = self.conn.evict.notified() => false,
        }
    }
}

/// Reads one length-prefixed frame into `buf` (resized to the frame); its length.
async fn read_frame(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).await?;
    let len = u16::from_be_bytes(len) as usize;
    buf.clear();
    buf.resize(len, 0);
    stream.read_exact(buf).await?;
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max: usize, per_source: usize) -> TcpLimits {
        TcpLimits {
            idle_timeout: Duration::from_secs(10),
            busy_idle_timeout: Duration::from_secs(3600),
            max_connections: max,
            max_per_source: per_source,
            source_prefix_v4: 24,
            source_prefix_v6: 64,
        }
    }

    fn registry() -> Registry {
        Registry::new()
    }

    #[test]
    fn prefixes_group_sources() {
        let l = limits(10, 10);
        let p = |s: &str| Prefix::of(s.parse().unwrap(), &l);
        assert_eq!(p("192.0.2.1"), p("192.0.2.200"));
        assert_ne!(p("192.0.2.1"), p("192.0.3.1"));
        assert_eq!(p("2001:db8::1"), p("2001:db8::ffff:1"));
        assert_ne!(p("2001:db8::1"), p("2001:db8:0:1::1"));
        assert_ne!(p("0.0.0.1"), p("::1"));
    }

    #[test]
    fn full_registry_closes_the_longest_idle_and_a_source_its_own() {
        let m = TcpMetrics::new(&MetricsRegistry::new());
        let l = limits(4, 2);
        let mut r = registry();
        let a = Prefix::of("192.0.2.1".parse().unwrap(), &l);
        let b = Prefix::of("198.51.100.1".parse().unwrap(), &l);
        let c = Prefix::of("203.0.113.1".parse().unwrap(), &l);
        let (a1, c_a1) = r.admit(a, &l, &m);
        let (_, c_a2) = r.admit(a, &l, &m);
        c_a1.last_active.store(50, Relaxed);
        c_a2.last_active.store(10, Relaxed); // a2 is a's longest idle
        // a's third connection closes a2, not a1.
        let (_, c_a3) = r.admit(a, &l, &m);
        c_a3.last_active.store(70, Relaxed);
        assert_eq!(r.conns.len(), 2);
        assert!(r.conns.contains_key(&a1));
        assert_eq!(r.per_prefix[&a], 2);
        let (b1, c_b1) = r.admit(b, &l, &m);
        let (_, c_b2) = r.admit(b, &l, &m);
        c_b1.last_active.store(5, Relaxed);
        c_b2.last_active.store(60, Relaxed);
        // Full (4): c's first connection closes the longest idle overall, b1.
        let (_, _c_c1) = r.admit(c, &l, &m);
        assert_eq!(r.conns.len(), 4);
        assert!(!r.conns.contains_key(&b1));
        assert_eq!(r.per_prefix[&b], 1);
        assert_eq!(m.closed.with_label_values(&["source"]).get(), 1);
        assert_eq!(m.closed.with_label_values(&["cap"]).get(), 1);
        assert_eq!(m.open.get(), 4);
        // Closed connections leave no trace.
        let ids: Vec<u64> = r.conns.keys().copied().collect();
        for id in ids {
            r.remove(id, false);
        }
        assert!(r.conns.is_empty() && r.per_prefix.is_empty());
    }

    #[test]
    fn near_the_cap_busy_idle_connections_are_closed() {
        let m = TcpMetrics::new(&MetricsRegistry::new());
        let mut l = limits(4, 4);
        l.busy_idle_timeout = Duration::from_millis(1000);
        let mut r = registry();
        r.epoch = Instant::now() - Duration::from_secs(10);
        let a = Prefix::of("192.0.2.1".parse().unwrap(), &l);
        let conns: Vec<_> = (0..3).map(|_| r.admit(a, &l, &m).1).collect();
        let now = r.now();
        conns[0].last_active.store(now - 5000, Relaxed);
        conns[1].last_active.store(now - 2000, Relaxed);
        // 3 of 4 open: the next admission sweeps the two idle past 1 s.
        r.last_sweep = 0;
        r.admit(a, &l, &m);
        assert_eq!(r.conns.len(), 2);
        assert_eq!(m.closed.with_label_values(&["busy_idle"]).get(), 2);
    }

    #[test]
    fn memory_is_given_back_once_a_flood_is_over() {
        let m = TcpMetrics::new(&MetricsRegistry::new());
        let l = limits(1000, 1000);
        let mut r = registry();
        let a = Prefix::of("192.0.2.1".parse().unwrap(), &l);
        let ids: Vec<u64> = (0..300).map(|_| r.admit(a, &l, &m).0).collect();
        let mut trims = 0;
        for id in ids {
            r.remove(id, false);
            trims += r.flood_over() as usize;
        }
        assert_eq!(trims, 1, "once, when 300 fell to 37");
        // A small number of connections never triggers it.
        let ids: Vec<u64> = (0..100).map(|_| r.admit(a, &l, &m).0).collect();
        for id in ids {
            r.remove(id, false);
            assert!(!r.flood_over());
        }
    }
}
