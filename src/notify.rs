//! systemd's service notification protocol (`sd_notify`): with `Type=notify`, systemd learns
//! that fedns is serving (`READY=1`), reloading (`RELOADING=1`) and draining (`STOPPING=1`).
//! A datagram to `$NOTIFY_SOCKET` (a path, or `@name` in the abstract namespace); without the
//! variable nothing happens. Never called on the query path.

use std::os::unix::net::UnixDatagram;

/// Sends `state` (e.g. `READY=1`); failures are logged at debug and otherwise ignored.
pub fn notify(state: &str) {
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    if let Err(e) = send(&target, state) {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}

fn send(target: &std::ffi::OsStr, state: &str) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let sock = UnixDatagram::unbound()?;
    let bytes = target.as_bytes();
    if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        sock.send_to_addr(state.as_bytes(), &addr)?;
    } else {
        sock.send_to(state.as_bytes(), target)?;
    }
    Ok(())
}

/// `RELOADING=1` with the `MONOTONIC_USEC` systemd asks for alongside it.
pub fn reloading() {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    let usec = ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000;
    notify(&format!("RELOADING=1\nMONOTONIC_USEC={usec}"));
}
