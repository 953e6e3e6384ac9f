//! Active health probes (DESIGN §3): TCP connect, HTTP or HTTPS GET against each shard's
//! load-balancer addresses, on their own tasks, never on the query path.
//!
//! The prober is a source like any other: it reads the shards of the federations the merger
//! last published, probes the ones a rule matches, and sends the merger a complete snapshot of
//! verdicts whenever an address changes state. Up/down thresholds keep a flapping target from
//! flapping the answer. Verdicts are per address: a shard is up while at least one of its
//! addresses passes, and its failing addresses leave the answer while their siblings stay
//! (`Shard::probe_down`). An address with no result yet counts as up, so starting fedns never
//! empties an answer. Each task starts at its own offset into the interval (jitter), so the
//! probes of many shards do not fire together. Every failure has a reason (`refused`,
//! `timeout`, `status 503`, `TLS error: …`, …): logged once per state change, shown by explain
//! and counted in `fedns_probe_targets_down{reason}`.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::rustls;

use crate::model::Federation;
use crate::server::Shared;
use crate::sources::{Snapshot, Update};

/// Which shard a verdict is about: (federation, namespace, service, cluster).
pub type ShardKey = (String, String, String, String);

/// What the probes say about one shard.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ShardVerdict {
    /// At least one address passes (or is undecided).
    pub up: bool,
    /// Addresses that fail (left out of answers while the shard is up).
    pub down: Vec<IpAddr>,
}

/// Shard → verdict. Shards without an entry are unprobed.
pub type Verdicts = BTreeMap<ShardKey, ShardVerdict>;

/// Per probed address of a shard: its state as explain shows it (`up`, `pending`, or
/// `down: REASON`).
pub type Status = BTreeMap<ShardKey, Vec<(SocketAddr, String)>>;

#[derive(Clone, Debug, PartialEq)]
pub enum Check {
    Tcp,
    Http(HttpCheck),
}

/// An HTTP(S) GET and what passes.
#[derive(Clone, Debug, PartialEq)]
pub struct HttpCheck {
    pub path: String,
    /// HTTPS (TLS over the connection) instead of plain HTTP.
    pub tls: bool,
    /// Sent as `Host` and as the TLS SNI; without it, `Host` is `IP:PORT` and no SNI is sent.
    pub host: Option<String>,
    /// Verify the server's certificate against the system roots (and the host name).
    pub verify: bool,
    /// PEM certificates trusted besides the system roots (a private CA).
    pub ca_file: Option<std::path::PathBuf>,
    /// Passing statuses: inclusive ranges.
    pub expect: Vec<(u16, u16)>,
    /// When set, the response body must contain this.
    pub body: Option<String>,
}

/// A probe rule from config: every service of `federation`, or one `namespace/name`.
#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    pub federation: String,
    pub service: Option<(String, String)>,
    pub check: Check,
    pub port: u16,
    pub interval: Duration,
    pub timeout: Duration,
    pub up_after: u32,
    pub down_after: u32,
}

impl Rule {
    /// The rule for a service: a rule naming it wins over a federation-wide one.
    pub fn find<'a>(rules: &'a [Rule], fed: &str, ns: &str, svc: &str) -> Option<&'a Rule> {
        let of_fed = || rules.iter().filter(|r| r.federation == fed);
        of_fed()
            .find(|r| r.service.as_ref().is_some_and(|(n, s)| n == ns && s == svc))
            .or_else(|| of_fed().find(|r| r.service.is_none()))
    }
}

/// One address of one shard, probed with one rule.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Target {
    shard: ShardKey,
    addr: SocketAddr,
}

#[derive(Default)]
struct TargetState {
    successes: u32,
    failures: u32,
    /// `None` until the thresholds decide.
    up: Option<bool>,
    /// Why it went down (the failure that crossed the threshold).
    reason: Option<Failure>,
}

/// Why a probe failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The metric label: `refused`, `timeout`, `status`, `tls`, `body` or `error`.
    pub kind: &'static str,
    /// For people: `refused`, `timeout`, `status 503`, `TLS error: …`.
    pub text: String,
}

impl Failure {
    fn new(kind: &'static str, text: impl Into<String>) -> Failure {
        Failure {
            kind,
            text: text.into(),
        }
    }
}

/// The metric labels of [`Failure::kind`].
pub const REASONS: [&str; 6] = ["refused", "timeout", "status", "tls", "body", "error"];

pub const SOURCE: &str = "probes";

/// Runs the prober until the merger goes away. `rules` may change (a reload): targets whose
/// rule changed are probed anew, and keep their last verdict until the new rule decides.
pub async fn run(
    rules: tokio::sync::watch::Receiver<Vec<Rule>>,
    shared: Arc<Shared>,
    tx: mpsc::Sender<Update>,
) {
    let (results_tx, mut results) = mpsc::channel::<(Target, Result<(), Failure>)>(1024);
    let mut tasks: HashMap<Target, (Rule, JoinHandle<()>)> = HashMap::new();
    let mut states: HashMap<Target, TargetState> = HashMap::new();
    let mut sent: Option<Verdicts> = None;
    let mut reconcile = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = reconcile.tick() => {
                let wanted = targets(&rules.borrow(), &shared.federations.load());
                tasks.retain(|t, (rule, handle)| {
                    let keep = wanted.get(t) == Some(rule);
                    if !keep {
                        handle.abort();
                    }
                    keep
                });
                states.retain(|t, _| wanted.contains_key(t));
                for (t, rule) in wanted {
                    if let std::collections::hash_map::Entry::Vacant(slot) = tasks.entry(t.clone()) {
                        let handle = tokio::spawn(probe_loop(t, rule.clone(), results_tx.clone()));
                        slot.insert((rule, handle));
                    }
                }
            }
            Some((target, result)) = results.recv() => {
                let Some((rule, _)) = tasks.get(&target) else { continue };
                let st = states.entry(target.clone()).or_default();
                let (fed, ns, svc, cluster) = &target.shard;
                let service = format!("{fed}/{ns}.{svc}");
                match result {
                    Ok(()) => {
                        st.successes += 1;
                        st.failures = 0;
                        if st.successes >= rule.up_after && st.up != Some(true) {
                            st.up = Some(true);
                            st.reason = None;
                            tracing::info!(service, cluster, addr = %target.addr, "probe up");
                        }
                    }
                    Err(f) => {
                        st.failures += 1;
                        st.successes = 0;
                        if st.failures >= rule.down_after && st.up != Some(false) {
                            st.up = Some(false);
                            tracing::warn!(service, cluster, addr = %target.addr, reason = %f.text, "probe down");
                            st.reason = Some(f);
                        }
                    }
                }
            }
        }
        // A shard is up while any of its addresses is (or is still undecided); the addresses
        // that are down leave its answers.
        let mut verdicts = Verdicts::new();
        let mut status = Status::new();
        let mut by_reason = [0i64; REASONS.len()];
        for t in tasks.keys() {
            let st = states.get(t);
            let up = st.and_then(|s| s.up).unwrap_or(true);
            let v = verdicts.entry(t.shard.clone()).or_default();
            v.up |= up;
            if !up {
                v.down.push(t.addr.ip());
            }
            let text = match st.map(|s| (s.up, &s.reason)) {
                Some((Some(true), _)) => "up".to_string(),
                Some((Some(false), Some(f))) => {
                    if let Some(i) = REASONS.iter().position(|r| *r == f.kind) {
                        by_reason[i] += 1;
                    }
                    format!("down: {}", f.text)
                }
                Some((Some(false), None)) => "down".to_string(),
                _ => "pending".to_string(),
            };
            status
                .entry(t.shard.clone())
                .or_default()
                .push((t.addr, text));
        }
        for (r, n) in REASONS.iter().zip(by_reason) {
            shared
                .metrics
                .probe_targets_down
                .with_label_values(&[r])
                .set(n);
        }
        if let Ok(mut s) = shared.probes.lock() {
            *s = status;
        }
        if sent.as_ref() != Some(&verdicts) {
            sent = Some(verdicts.clone());
            if tx
                .send(Update {
                    taken: None,
                    source: SOURCE.into(),
                    snapshot: Arc::new(Snapshot::Probes(verdicts)),
                })
                .await
                .is_err()
            {
                return;
            }
        }
    }
}

fn targets(rules: &[Rule], feds: &[Federation]) -> BTreeMap<Target, Rule> {
    let mut out = BTreeMap::new();
    for fed in feds {
        for svc in &fed.services {
            let Some(rule) = Rule::find(rules, &fed.name, &svc.namespace, &svc.name) else {
                continue;
            };
            for shard in &svc.shards {
                let key = (
                    fed.name.clone(),
                    svc.namespace.clone(),
                    svc.name.clone(),
                    shard.cluster.clone(),
                );
                for ip in &shard.addresses {
                    out.insert(
                        Target {
                            shard: key.clone(),
                            addr: SocketAddr::new(*ip, rule.port),
                        },
                        rule.clone(),
                    );
                }
            }
        }
    }
    out
}

async fn probe_loop(
    target: Target,
    rule: Rule,
    results: mpsc::Sender<(Target, Result<(), Failure>)>,
) {
    // Jitter: each target starts at its own offset into the interval (a hash of the target),
    // so the probes of many shards spread over the interval instead of firing together.
    let offset = {
        use std::hash::BuildHasher;
        let h = std::collections::hash_map::RandomState::new().hash_one(&target);
        Duration::from_millis(h % (rule.interval.as_millis().max(1) as u64))
    };
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + offset, rule.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let result = tokio::time::timeout(rule.timeout, probe_once(target.addr, &rule.check))
            .await
            .unwrap_or_else(|_| Err(Failure::new("timeout", "timeout")));
        if results.send((target.clone(), result)).await.is_err() {
            return;
        }
    }
}

/// One probe of one address.
pub async fn probe_once(addr: SocketAddr, check: &Check) -> Result<(), Failure> {
    let stream = match tokio::net::TcpStream::connect(addr).await {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            return Err(Failure::new("refused", "refused"));
        }
        Err(e) => return Err(Failure::new("error", format!("connect: {e}"))),
    };
    let http = match check {
        Check::Tcp => return Ok(()),
        Check::Http(h) => h,
    };
    if !http.tls {
        return http_get(stream, addr, http).await;
    }
    let sni = match &http.host {
        Some(h) => rustls::pki_types::ServerName::try_from(h.clone())
            .map_err(|e| Failure::new("tls", format!("TLS error: bad host name {h:?}: {e}")))?,
        None => rustls::pki_types::ServerName::IpAddress(addr.ip().into()),
    };
    let config = if http.verify {
        verifying_config(http.ca_file.as_deref())
    } else {
        unverified_config()
    }
    .map_err(|e| Failure::new("tls", format!("TLS error: {e}")))?;
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(sni, stream)
        .await
        .map_err(|e| Failure::new("tls", format!("TLS error: {e}")))?;
    http_get(tls, addr, http).await
}

/// Sends the GET and checks the status line and, if asked, the body (first 64 KiB).
async fn http_get<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    addr: SocketAddr,
    http: &HttpCheck,
) -> Result<(), Failure> {
    let host = http.host.clone().unwrap_or_else(|| addr.to_string());
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: fedns-probe\r\nConnection: close\r\n\r\n",
        http.path
    );
    let io = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::ConnectionReset => Failure::new("refused", "connection reset"),
        std::io::ErrorKind::InvalidData => Failure::new("tls", format!("TLS error: {e}")),
        _ => Failure::new("error", e.to_string()),
    };
    stream.write_all(req.as_bytes()).await.map_err(io)?;
    const MAX: usize = 64 * 1024;
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    let need_body = http.body.is_some();
    loop {
        let n = match stream.read(&mut chunk).await {
            Ok(n) => n,
            // Servers that close without close_notify: what arrived counts.
            Err(e) if !buf.is_empty() && e.kind() == std::io::ErrorKind::UnexpectedEof => 0,
            Err(e) => return Err(io(e)),
        };
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() >= MAX || (!need_body && buf.contains(&b'\n')) {
            break;
        }
    }
    let text = String::from_utf8_lossy(&buf);
    let status = text
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| Failure::new("error", "no HTTP status line in the response"))?;
    if !http
        .expect
        .iter()
        .any(|(lo, hi)| (*lo..=*hi).contains(&status))
    {
        return Err(Failure::new("status", format!("status {status}")));
    }
    if let Some(want) = &http.body {
        let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        if !body.contains(want.as_str()) {
            return Err(Failure::new(
                "body",
                format!("body does not contain {want:?}"),
            ));
        }
    }
    Ok(())
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The system's roots (loaded once).
fn system_roots() -> &'static [rustls::pki_types::CertificateDer<'static>] {
    static ROOTS: OnceLock<Vec<rustls::pki_types::CertificateDer<'static>>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        if found.certs.is_empty() {
            tracing::warn!(errors = ?found.errors, "no system root certificates: verified HTTPS probes need ca_file");
        }
        found.certs
    })
}

/// The certificates of a PEM file.
pub fn load_ca_file(
    path: &std::path::Path,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, String> {
    use rustls::pki_types::pem::PemObject;
    let certs: Vec<_> = rustls::pki_types::CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no PEM certificate in it", path.display()));
    }
    Ok(certs)
}

/// Verifies against the system's roots and, when given, the certificates of `ca_file`
/// (one config per file, built on first use).
fn verifying_config(
    ca_file: Option<&std::path::Path>,
) -> Result<Arc<rustls::ClientConfig>, String> {
    type Configs = std::sync::Mutex<HashMap<Option<std::path::PathBuf>, Arc<rustls::ClientConfig>>>;
    static CONFIGS: OnceLock<Configs> = OnceLock::new();
    let configs = CONFIGS.get_or_init(Default::default);
    let key = ca_file.map(std::path::Path::to_path_buf);
    if let Some(c) = configs.lock().ok().and_then(|m| m.get(&key).cloned()) {
        return Ok(c);
    }
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(system_roots().iter().cloned());
    if let Some(path) = ca_file {
        for cert in load_ca_file(path)? {
            roots
                .add(cert)
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map(|b| b.with_root_certificates(roots).with_no_client_auth())
        .map(Arc::new)
        .map_err(|e| e.to_string())?;
    if let Ok(mut m) = configs.lock() {
        m.insert(key, config.clone());
    }
    Ok(config)
}

/// Accepts any certificate (a rule with `verify_certificate: false`); signatures are still
/// checked, so the handshake itself is real.
fn unverified_config() -> Result<Arc<rustls::ClientConfig>, String> {
    static CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            rustls::ClientConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .map(|b| {
                    b.dangerous()
                        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider())))
                        .with_no_client_auth()
                })
                .map(Arc::new)
                .map_err(|e| e.to_string())
        })
        .clone()
}

#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
