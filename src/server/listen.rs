//! The DNS listeners: per configured `listen` address, a group of `SO_REUSEPORT` UDP sockets
//! (one worker thread each) and a TCP listener. A reload opens the new addresses first and only
//! then closes the removed ones; an address that stays keeps its sockets (and its queue), so no
//! query to it is lost.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use super::{Shared, tcp, udp};

/// What every listener serves with.
#[derive(Clone)]
pub struct Serving {
    pub shared: Arc<Shared>,
    /// Every listener's TCP connections (one registry: the cap and source shares are global).
    pub tcp: tcp::TcpConnections,
    pub rrl_metrics: crate::dns::rrl::RrlMetrics,
    /// Inodes of every open UDP socket, read by `fedns_udp_kernel_drops_total`.
    pub udp_inodes: Arc<Mutex<Vec<u64>>>,
    /// Kernel drops of sockets already closed, so the counter never goes backwards.
    pub closed_drops: Arc<std::sync::atomic::AtomicU64>,
}

/// One `listen` address being served.
pub struct Listener {
    /// The address as configured (port 0 stays 0 here; `bound` is what the kernel chose).
    pub configured: SocketAddr,
    pub bound: SocketAddr,
    /// A clone of each worker's socket with its stop flag (to stop it and to resize buffers).
    udp: Vec<(UdpSocket, Arc<AtomicBool>)>,
    inodes: Vec<u64>,
    tcp_stop: watch::Sender<bool>,
    tcp_task: Option<tokio::task::JoinHandle<()>>,
}

impl Listener {
    /// Binds `addr` (UDP for `workers` threads, TCP on the same port) and starts serving it.
    pub fn open(
        addr: SocketAddr,
        workers: usize,
        buffers: (usize, usize),
        s: &Serving,
    ) -> anyhow::Result<Listener> {
        let (udp_socks, tcp_listener) = bind_dns(addr, workers)?;
        size_buffers(&udp_socks, buffers);
        let inodes = udp::inodes(&udp_socks);
        let bound = udp_socks[0].local_addr()?;
        tracing::info!(udp = %bound, tcp = %tcp_listener.local_addr()?, workers = udp_socks.len(), "dns listening");
        let mut udp = Vec::new();
        for sock in udp_socks {
            udp.push(start_worker(sock, udp.len(), s)?);
        }
        let (tcp_stop, tcp_stop_rx) = watch::channel(false);
        let tcp_task = tokio::spawn(tcp::serve(
            tcp_listener,
            s.shared.clone(),
            s.shared.metrics.worker(),
            s.tcp.clone(),
            tcp_stop_rx,
        ));
        s.udp_inodes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(&inodes);
        Ok(Listener {
            configured: addr,
            bound,
            udp,
            inodes,
            tcp_stop,
            tcp_task: Some(tcp_task),
        })
    }

    pub fn workers(&self) -> usize {
        self.udp.len()
    }

    /// Adds UDP workers up to `workers`: more sockets join the address's `SO_REUSEPORT` group,
    /// and what the old ones have queued stays theirs, so nothing is lost. (Fewer workers would
    /// mean closing a socket the kernel may still be handing queries to: that waits for a
    /// restart.)
    pub fn grow(
        &mut self,
        workers: usize,
        buffers: (usize, usize),
        s: &Serving,
    ) -> anyhow::Result<()> {
        let extra = workers.saturating_sub(self.udp.len());
        if extra == 0 {
            return Ok(());
        }
        let socks =
            udp::bind(self.bound, extra).map_err(|e| anyhow::anyhow!("udp {}: {e}", self.bound))?;
        size_buffers(&socks, buffers);
        let inodes = udp::inodes(&socks);
        for sock in socks {
            let w = start_worker(sock, self.udp.len(), s)?;
            self.udp.push(w);
        }
        self.inodes.extend(&inodes);
        s.udp_inodes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(&inodes);
        tracing::info!(udp = %self.bound, workers = self.udp.len(), "dns workers added");
        Ok(())
    }

    /// Applies new kernel buffer sizes to the live sockets.
    pub fn resize(&self, buffers: (usize, usize)) {
        let socks: Vec<UdpSocket> = self
            .udp
            .iter()
            .filter_map(|(s, _)| s.try_clone().ok())
            .collect();
        size_buffers(&socks, buffers);
    }

    /// Stops accepting TCP connections (open ones finish what they began) and ends the UDP
    /// workers after what is queued; returns the TCP server's task, done once its connections
    /// have closed.
    pub fn close(mut self, s: &Serving) -> Option<tokio::task::JoinHandle<()>> {
        let _ = self.tcp_stop.send(true);
        for (sock, stop) in &self.udp {
            udp::stop(sock, stop);
        }
        s.closed_drops.fetch_add(
            udp::kernel_drops(&self.inodes),
            std::sync::atomic::Ordering::Relaxed,
        );
        s.udp_inodes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|i| !self.inodes.contains(i));
        self.tcp_task.take()
    }
}

/// Starts the worker thread serving `sock`; its socket's clone and stop flag.
fn start_worker(
    sock: UdpSocket,
    i: usize,
    s: &Serving,
) -> anyhow::Result<(UdpSocket, Arc<AtomicBool>)> {
    let stop = Arc::new(AtomicBool::new(false));
    let kept = (sock.try_clone()?, stop.clone());
    let (shared, stats) = (s.shared.clone(), s.shared.metrics.worker());
    let counters = s.rrl_metrics.worker();
    std::thread::Builder::new()
        .name(format!("udp-{i}"))
        .spawn(move || udp::serve(sock, shared, stats, counters, stop))?;
    Ok(kept)
}

fn size_buffers(socks: &[UdpSocket], (receive, send): (usize, usize)) {
    let (rcvbuf, sndbuf) = udp::size_buffers(socks, receive, send);
    if rcvbuf < receive {
        tracing::warn!(
            asked = receive,
            granted = rcvbuf,
            "udp receive buffer smaller than configured (raise net.core.rmem_max or grant CAP_NET_ADMIN)"
        );
    }
    tracing::debug!(rcvbuf, sndbuf, "udp socket buffers");
}

/// UDP sockets and a TCP listener on the same address; with port 0, the same ephemeral port.
fn bind_dns(
    addr: SocketAddr,
    workers: usize,
) -> anyhow::Result<(Vec<UdpSocket>, tokio::net::TcpListener)> {
    let mut last_err = None;
    for _ in 0..20 {
        let udp_socks = udp::bind(addr, workers).map_err(|e| anyhow::anyhow!("udp {addr}: {e}"))?;
        let bound = udp_socks[0].local_addr()?;
        match std::net::TcpListener::bind(bound) {
            Ok(l) => {
                l.set_nonblocking(true)?;
                return Ok((udp_socks, tokio::net::TcpListener::from_std(l)?));
            }
            Err(e) if addr.port() == 0 => last_err = Some(e), // TCP twin taken: try another port
            Err(e) => anyhow::bail!("tcp {addr}: {e}"),
        }
    }
    anyhow::bail!(
        "tcp {addr}: {}",
        last_err.map(|e| e.to_string()).unwrap_or_default()
    )
}

/// Every open listener. Shared by the reloader (which adds and removes) and the drain at
/// shutdown (which stops them all).
#[derive(Default)]
pub struct Listeners {
    pub open: Vec<Listener>,
}

impl Listeners {
    /// Serves exactly `want`: opens the addresses not yet open (all of them before any is
    /// closed), then closes the ones no longer wanted. An address that fails to bind is an
    /// error and leaves the listeners as they were.
    pub fn reconcile(
        &mut self,
        want: &[SocketAddr],
        workers: usize,
        buffers: (usize, usize),
        s: &Serving,
    ) -> anyhow::Result<()> {
        let mut opened: Vec<Listener> = Vec::new();
        for addr in want {
            if let Some(l) = self.open.iter_mut().find(|l| l.configured == *addr) {
                // Staying: more workers if asked (best effort: the address keeps serving).
                if let Err(e) = l.grow(workers, buffers, s) {
                    tracing::warn!(error = %format!("{e:#}"), "cannot add dns workers");
                }
                continue;
            }
            match Listener::open(*addr, workers, buffers, s) {
                Ok(l) => opened.push(l),
                Err(e) => {
                    for l in opened {
                        tracing::info!(udp = %l.bound, "dns no longer listening (the reload failed)");
                        drop(l.close(s));
                    }
                    return Err(e);
                }
            }
        }
        self.open.extend(opened);
        let (keep, gone): (Vec<_>, Vec<_>) = std::mem::take(&mut self.open)
            .into_iter()
            .partition(|l| want.contains(&l.configured));
        self.open = keep;
        for l in gone {
            tracing::info!(udp = %l.bound, "dns no longer listening");
            // Its TCP connections finish on their own; nothing waits for them.
            drop(l.close(s));
        }
        Ok(())
    }

    /// Stops accepting TCP on every listener (UDP keeps answering until the process exits);
    /// the TCP servers' tasks, to wait for.
    pub fn stop_tcp(&mut self) -> Vec<tokio::task::JoinHandle<()>> {
        self.open
            .iter_mut()
            .filter_map(|l| {
                let _ = l.tcp_stop.send(true);
                l.tcp_task.take()
            })
            .collect()
    }
}
