//! Shared harness of the end-to-end test binaries (e2e, etcd, kubernetes): runs the real
//! `fedns` binary, keeps its log (stderr is drained for the child's whole life so the pipe never
//! fills), learns its ports from the `dns listening` / `http listening` log lines, and kills it by
//! PID on drop. Every wait is bounded.
#![allow(dead_code)] // each test binary uses its own subset

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub mod unbound;

pub const BIN: &str = env!("CARGO_BIN_EXE_fedns");

/// Polls `f` every 20 ms until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Removes ANSI escape sequences (CSI), in case the log is colored despite NO_COLOR.
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// `key=ADDR` token of a log line.
pub fn addr_field(line: &str, key: &str) -> Option<SocketAddr> {
    line.split_whitespace()
        .find_map(|t| t.strip_prefix(key)?.trim_matches(',').parse().ok())
}

/// A running `fedns serve`, killed (by PID) on drop.
pub struct Fedns {
    pub child: Child,
    pub udp: SocketAddr,
    pub tcp: SocketAddr,
    pub http: SocketAddr,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Drop for Fedns {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Fedns {
    pub fn start(config: &Path) -> Fedns {
        let mut child = Command::new(BIN)
            .arg("serve")
            .arg("--config")
            .arg(config)
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn fedns");
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("piped stderr");
        let sink = log.clone();
        // Drains stderr for the whole life of the child so the pipe never fills.
        std::thread::spawn(move || {
            let mut r = BufReader::new(stderr);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match r.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let line = strip_ansi(&String::from_utf8_lossy(&buf));
                        sink.lock().unwrap().push(line.trim_end().to_string());
                    }
                }
            }
        });
        let unset: SocketAddr = "0.0.0.0:0".parse().unwrap();
        let mut server = Fedns {
            child,
            udp: unset,
            tcp: unset,
            http: unset,
            log,
        };
        let found = wait_for(Duration::from_secs(10), || {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!(
                    "fedns exited during startup ({status}):\n{}",
                    server.log_text()
                );
            }
            let lines = server.log.lock().unwrap();
            let dns = lines.iter().find(|l| l.contains("dns listening"))?;
            let http = lines.iter().find(|l| l.contains("http listening"))?;
            Some((
                addr_field(dns, "udp=")?,
                addr_field(dns, "tcp=")?,
                addr_field(http, "http=")?,
            ))
        });
        let Some((udp, tcp, http)) = found else {
            panic!(
                "no `dns listening` / `http listening` lines within 10 s:\n{}",
                server.log_text()
            );
        };
        assert!(udp.ip().is_loopback() && tcp.ip().is_loopback() && http.ip().is_loopback());
        server.udp = udp;
        server.tcp = tcp;
        server.http = http;
        server
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    pub fn log_lines(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    pub fn wait_log(&self, timeout: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
        wait_for(timeout, || {
            self.log.lock().unwrap().iter().find(|l| pred(l)).cloned()
        })
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("http connect");
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(3))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("http read");
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("bad HTTP response: {text:?}"));
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line: {head:?}"));
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    (status, body)
}

pub fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Value of the sample `key` (name with labels, exactly as rendered), if present.
pub fn metric(text: &str, key: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (k, v) = l.rsplit_once(' ')?;
        (k == key).then(|| v.parse().ok()).flatten()
    })
}
