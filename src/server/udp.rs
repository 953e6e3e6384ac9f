//! UDP serving: one OS thread per worker, each with its own `SO_REUSEPORT` socket, so the kernel
//! spreads queries across workers and no worker ever waits on another. Each worker receives and
//! sends in batches (`recvmmsg`/`sendmmsg`) to spend fewer system calls per query.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;

use socket2::{Domain, Protocol, Socket, Type};

use super::Shared;
use crate::dns::respond::{Peer, Transport, WorkerState, respond};
use crate::dns::rrl::Rrl;
use crate::metrics::QueryStats;

/// Binds `count` reuse-port sockets on `addr` (port 0: all on the same ephemeral port).
pub fn bind(addr: SocketAddr, count: usize) -> io::Result<Vec<UdpSocket>> {
    let mut socks = Vec::with_capacity(count);
    let mut addr = addr;
    for _ in 0..count.max(1) {
        let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
        s.set_reuse_port(true)?;
        if addr.is_ipv6() {
            s.set_only_v6(true)?;
        }
        s.bind(&addr.into())?;
        let sock: UdpSocket = s.into();
        addr = sock.local_addr()?;
        socks.push(sock);
    }
    Ok(socks)
}

/// Sets the kernel receive and send buffers of every socket (0: leave the OS default). Above
/// `net.core.rmem_max`/`wmem_max` the `*FORCE` options are tried (they need CAP_NET_ADMIN).
/// Returns the sizes the kernel granted to the first socket (it reports twice what it books).
pub fn size_buffers(socks: &[UdpSocket], receive: usize, send: usize) -> (usize, usize) {
    use std::os::fd::AsRawFd;
    let set = |fd: i32, opt: i32, force: i32, want: usize| {
        if want == 0 {
            return;
        }
        let v = want.min(i32::MAX as usize) as libc::c_int;
        let len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: setsockopt with a valid fd and a pointer to a c_int of the given length.
        unsafe {
            if libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                force,
                (&v as *const libc::c_int).cast(),
                len,
            ) != 0
            {
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    opt,
                    (&v as *const libc::c_int).cast(),
                    len,
                );
            }
        }
    };
    for s in socks {
        let fd = s.as_raw_fd();
        set(fd, libc::SO_RCVBUF, libc::SO_RCVBUFFORCE, receive);
        set(fd, libc::SO_SNDBUF, libc::SO_SNDBUFFORCE, send);
    }
    socks.first().map_or((0, 0), |s| {
        let r = socket2::SockRef::from(s);
        (
            r.recv_buffer_size().unwrap_or(0),
            r.send_buffer_size().unwrap_or(0),
        )
    })
}

/// Inode numbers of `socks`, to find them in `/proc/net/udp*`.
pub fn inodes(socks: &[UdpSocket]) -> Vec<u64> {
    use std::os::fd::AsRawFd;
    socks
        .iter()
        .filter_map(|s| {
            // SAFETY: fstat on a valid fd into a zeroed stat buffer.
            let mut st: libc::stat = unsafe { std::mem::zeroed() };
            (unsafe { libc::fstat(s.as_raw_fd(), &mut st) } == 0).then_some(st.st_ino)
        })
        .collect()
}

/// Datagrams the kernel dropped on the sockets with these inodes (full receive buffer and the
/// like): the `drops` column of `/proc/net/udp` and `/proc/net/udp6`.
pub fn kernel_drops(inodes: &[u64]) -> u64 {
    ["/proc/net/udp", "/proc/net/udp6"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .map(|text| drops_in(&text, inodes))
        .sum()
}

fn drops_in(proc_net_udp: &str, inodes: &[u64]) -> u64 {
    proc_net_udp
        .lines()
        .skip(1)
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            let inode: u64 = cols.get(9)?.parse().ok()?;
            inodes
                .contains(&inode)
                .then(|| cols.last()?.parse::<u64>().ok())
                .flatten()
        })
        .sum()
}

/// `fedns_udp_kernel_drops_total`, read from `/proc` at scrape time (never on the query path).
pub struct KernelDrops {
    /// The open sockets' inodes (listeners come and go with reloads).
    inodes: Arc<std::sync::Mutex<Vec<u64>>>,
    /// Drops counted on sockets since closed (a reload removed their address).
    closed: Arc<std::sync::atomic::AtomicU64>,
    desc: prometheus::core::Desc,
}

impl KernelDrops {
    pub fn new(
        inodes: Arc<std::sync::Mutex<Vec<u64>>>,
        closed: Arc<std::sync::atomic::AtomicU64>,
    ) -> Self {
        let desc = prometheus::core::Desc::new(
            "fedns_udp_kernel_drops_total".into(),
            "UDP queries the kernel dropped before fedns read them (receive buffer full):              raise udp.receive_buffer_bytes or add workers"
                .into(),
            vec![],
            Default::default(),
        )
        .expect("valid metric");
        KernelDrops {
            inodes,
            closed,
            desc,
        }
    }
}

impl prometheus::core::Collector for KernelDrops {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        let c = prometheus::IntCounter::with_opts(prometheus::Opts::new(
            "fedns_udp_kernel_drops_total",
            self.desc.help.clone(),
        ))
        .expect("valid metric");
        let inodes = self.inodes.lock().map(|i| i.clone()).unwrap_or_default();
        c.inc_by(kernel_drops(&inodes) + self.closed.load(std::sync::atomic::Ordering::Relaxed));
        prometheus::core::Collector::collect(&c)
    }
}

const BATCH: usize = 32;
/// Room for any UDP datagram (a 65,535-byte IP packet carries at most 65,527 bytes of payload),
/// so no query is ever cut short. The buffers are allocated zeroed and untouched, so only the
/// pages that large datagrams actually fill become resident.
const RECV_BUF: usize = 65535;
/// Responses never exceed the EDNS payload (at most 4096, see `config::edns_payload`).
const SEND_BUF: usize = 4096;

/// Serves queries on `sock` until `stop` is set and the socket is shut down for reading (see
/// [`stop`]); responses are rate-limited by the current settings' `rrl`, counted in `rrl_counters`.
pub fn serve(
    sock: UdpSocket,
    shared: Arc<Shared>,
    stats: Arc<QueryStats>,
    rrl_counters: Arc<crate::dns::rrl::RrlCounters>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) {
    let mut state = WorkerState::default();
    // The RRL config the worker's limiter follows; a reload swaps in another Arc.
    let mut rrl_config: Option<Arc<crate::dns::rrl::RrlConfig>> = None;
    let start = std::time::Instant::now();
    let mut batch = Batch::new();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&sock);
    loop {
        let n = match batch.receive(fd) {
            Ok(n) => n,
            Err(e) => {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    return;
                }
                if e.kind() != io::ErrorKind::Interrupted {
                    tracing::debug!(error = %e, "udp receive failed");
                }
                continue;
            }
        };
        // Once shut down, the socket reads as empty datagrams after its queue: those end it.
        let stopping = stop.load(std::sync::atomic::Ordering::Relaxed);
        if stopping && (0..n).all(|i| batch.received_len(i) == 0) {
            return;
        }
        let started = std::time::Instant::now();
        // One table load, one settings load and one clock reading per batch.
        let table = shared.table.load();
        let settings = shared.settings.load();
        if !rrl_config
            .as_ref()
            .is_some_and(|c| Arc::ptr_eq(c, &settings.rrl))
        {
            // A reload changed RRL: a fresh limiter (allocated here, once per change).
            rrl_config = Some(settings.rrl.clone());
            state.set_rrl(
                (settings.rrl.responses_per_second > 0)
                    .then(|| Rrl::new(settings.rrl.clone(), rrl_counters.clone())),
            );
        }
        state.set_second(start.elapsed().as_secs() as u32);
        let mut out = 0;
        for i in 0..n {
            let len = batch.received_len(i);
            if stopping && len == 0 {
                continue;
            }
            if batch.cut_short(i) {
                // Cannot happen with RECV_BUF ≥ any UDP payload; never answer half a query.
                stats.dropped();
                continue;
            }
            let peer = Peer {
                addr: batch.peer(i),
                transport: Transport::Udp,
            };
            let (req, resp) = batch.buffers(i, out);
            if let Some(rlen) = respond(
                super::source(&table, &settings),
                &req[..len],
                resp,
                peer,
                &mut state,
                &stats,
            ) {
                batch.queue_response(i, out, rlen);
                out += 1;
            }
        }
        drop(table);
        drop(settings);
        if out > 0 {
            batch.send(fd, out);
            stats.served(Transport::Udp, started.elapsed(), out);
        }
    }
}

/// Ends the worker serving `sock` (a clone of its socket): it answers what is already queued,
/// then returns. Shutting down a UDP socket for reading wakes a blocked `recvmmsg` (it returns 0
/// once the queue is empty), which no flag alone could.
pub fn stop(sock: &UdpSocket, flag: &std::sync::atomic::AtomicBool) {
    flag.store(true, std::sync::atomic::Ordering::Relaxed);
    // SAFETY: shutdown(2) on a valid fd; for an unconnected UDP socket Linux reports ENOTCONN
    // but still marks it shut and wakes its readers.
    unsafe {
        libc::shutdown(std::os::fd::AsRawFd::as_raw_fd(sock), libc::SHUT_RD);
    }
}

/// Buffers and headers for one `recvmmsg`/`sendmmsg` round, allocated once per worker.
struct Batch {
    /// `BATCH` receive buffers of `RECV_BUF` bytes, back to back.
    recv: Box<[u8]>,
    send: Box<[[u8; SEND_BUF]]>,
    addrs: Box<[libc::sockaddr_storage]>,
    recv_iov: Box<[libc::iovec]>,
    recv_hdr: Box<[libc::mmsghdr]>,
    send_iov: Box<[libc::iovec]>,
    send_hdr: Box<[libc::mmsghdr]>,
}

// SAFETY: the raw pointers inside point into the Batch's own boxed buffers, which never move
// and are only used by the thread that owns the Batch.
unsafe impl Send for Batch {}

impl Batch {
    fn new() -> Self {
        // SAFETY: all-zero is a valid value for these plain C structs.
        let zeroed_hdr = || unsafe { std::mem::zeroed::<libc::mmsghdr>() };
        let mut b = Batch {
            recv: vec![0u8; RECV_BUF * BATCH].into_boxed_slice(),
            send: vec![[0u8; SEND_BUF]; BATCH].into_boxed_slice(),
            addrs: vec![unsafe { std::mem::zeroed::<libc::sockaddr_storage>() }; BATCH]
                .into_boxed_slice(),
            recv_iov: vec![
                libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0
                };
                BATCH
            ]
            .into_boxed_slice(),
            recv_hdr: (0..BATCH).map(|_| zeroed_hdr()).collect(),
            send_iov: vec![
                libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0
                };
                BATCH
            ]
            .into_boxed_slice(),
            send_hdr: (0..BATCH).map(|_| zeroed_hdr()).collect(),
        };
        for i in 0..BATCH {
            b.recv_iov[i] = libc::iovec {
                iov_base: b.recv[i * RECV_BUF..].as_mut_ptr().cast(),
                iov_len: RECV_BUF,
            };
        }
        b
    }

    fn receive(&mut self, fd: i32) -> io::Result<usize> {
        for i in 0..BATCH {
            let h = &mut self.recv_hdr[i].msg_hdr;
            h.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as u32;
            h.msg_iov = &mut self.recv_iov[i];
            h.msg_iovlen = 1;
            h.msg_control = std::ptr::null_mut();
            h.msg_controllen = 0;
            h.msg_flags = 0;
            self.recv_hdr[i].msg_len = 0;
        }
        // SAFETY: every header points at live buffers of the sizes given; MSG_WAITFORONE blocks
        // for the first datagram only, then takes what is already queued.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.recv_hdr.as_mut_ptr(),
                BATCH as u32,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    /// The sender of datagram `i`.
    fn peer(&self, i: usize) -> std::net::IpAddr {
        let a = &self.addrs[i];
        match a.ss_family as i32 {
            libc::AF_INET => {
                // SAFETY: the kernel wrote a sockaddr_in here (ss_family says so).
                let sin =
                    unsafe { &*(a as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
                std::net::IpAddr::V4(std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)))
            }
            libc::AF_INET6 => {
                // SAFETY: as above, a sockaddr_in6.
                let sin6 =
                    unsafe { &*(a as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
                std::net::IpAddr::V6(std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr))
                    .to_canonical()
            }
            _ => std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        }
    }

    fn received_len(&self, i: usize) -> usize {
        self.recv_hdr[i].msg_len as usize
    }

    /// True when datagram `i` did not fit its buffer (MSG_TRUNC).
    fn cut_short(&self, i: usize) -> bool {
        self.recv_hdr[i].msg_hdr.msg_flags & libc::MSG_TRUNC != 0
    }

    fn buffers(&mut self, i: usize, out: usize) -> (&[u8], &mut [u8]) {
        (
            &self.recv[i * RECV_BUF..(i + 1) * RECV_BUF],
            &mut self.send[out][..],
        )
    }

    fn queue_response(&mut self, from: usize, out: usize, len: usize) {
        self.send_iov[out] = libc::iovec {
            iov_base: self.send[out].as_mut_ptr().cast(),
            iov_len: len,
        };
        let h = &mut self.send_hdr[out].msg_hdr;
        h.msg_name = (&mut self.addrs[from] as *mut libc::sockaddr_storage).cast();
        h.msg_namelen = self.recv_hdr[from].msg_hdr.msg_namelen;
        h.msg_iov = &mut self.send_iov[out];
        h.msg_iovlen = 1;
        h.msg_control = std::ptr::null_mut();
        h.msg_controllen = 0;
        h.msg_flags = 0;
    }

    fn send(&mut self, fd: i32, count: usize) {
        let mut sent = 0;
        while sent < count {
            // SAFETY: headers 0..count were filled by queue_response and point at live buffers.
            let n = unsafe {
                libc::sendmmsg(
                    fd,
                    self.send_hdr[sent..].as_mut_ptr(),
                    (count - sent) as u32,
                    0,
                )
            };
            if n <= 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                // A failing destination (e.g. ICMP unreachable) must not block the rest.
                tracing::debug!(error = %e, "udp send failed");
                sent += 1;
                continue;
            }
            sent += n as usize;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_are_read_for_our_sockets_only() {
        let text = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
  123: 0100007F:14E9 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 4242 2 0000000000000000 17\n\
  124: 0100007F:14E9 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 4243 2 0000000000000000 5\n\
  125: 00000000:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 999 2 0000000000000000 1000\n";
        assert_eq!(drops_in(text, &[4242, 4243]), 22);
        assert_eq!(drops_in(text, &[7]), 0);
    }

    #[test]
    fn buffers_are_sized_and_sockets_found_in_proc() {
        let socks = bind("127.0.0.1:0".parse().unwrap(), 2).unwrap();
        let max = |p: &str| {
            std::fs::read_to_string(p)
                .ok()
                .and_then(|s| s.trim().parse::<usize>().ok())
                .unwrap_or(0)
        };
        let want = 1 << 20;
        let (r, s) = size_buffers(&socks, want, want);
        // Granted in full with CAP_NET_ADMIN or under the sysctl maximum (reported doubled).
        assert!(
            r >= want.min(max("/proc/sys/net/core/rmem_max")),
            "receive buffer {r}"
        );
        assert!(
            s >= want.min(max("/proc/sys/net/core/wmem_max")),
            "send buffer {s}"
        );
        let inodes = inodes(&socks);
        assert_eq!(inodes.len(), 2);
        let text = std::fs::read_to_string("/proc/net/udp").unwrap();
        for i in &inodes {
            assert!(
                text.split_whitespace().any(|c| c == i.to_string()),
                "inode {i} not in /proc/net/udp"
            );
        }
        assert_eq!(kernel_drops(&inodes), 0);
    }
}
