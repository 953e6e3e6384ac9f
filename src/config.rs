//! The fedns configuration file (YAML, or TOML when the name ends in `.toml`).
//!
//! Relative paths inside it are relative to the file's own directory, so a config and its zone
//! and federation files can be moved together. Every problem names the file, line and field.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::config_errors::ParseError;
use crate::dns::zonefile::Problem;
use crate::geo::ClientNetwork;
use crate::sources::kubernetes::config::{KubeSettings, RawKubernetes};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default = "default_listen")]
    listen: Vec<SocketAddr>,
    #[serde(default = "default_http")]
    http: SocketAddr,
    #[serde(default)]
    workers: usize,
    #[serde(default = "default_zones_dir")]
    zones_dir: PathBuf,
    #[serde(default)]
    federation_files: Vec<PathBuf>,
    #[serde(default = "default_edns_payload")]
    edns_payload: u16,
    #[serde(default)]
    tcp: RawTcp,
    #[serde(default = "default_state_dir")]
    state_dir: PathBuf,
    #[serde(default = "default_watch_interval_ms")]
    watch_interval_ms: u64,
    #[serde(default)]
    geo: RawGeo,
    #[serde(default)]
    probes: Vec<RawProbe>,
    #[serde(default)]
    kubernetes: Option<RawKubernetes>,
    #[serde(default)]
    etcd: Option<RawEtcd>,
    /// Log format (`text` or `json`); `--log-format` overrides it.
    #[serde(default)]
    log_format: Option<crate::logging::LogFormat>,
    /// On SIGTERM: how long DNS keeps answering after `/readyz` turned 503.
    #[serde(default = "default_lameduck_ms")]
    lameduck_ms: u64,
    #[serde(default)]
    rrl: RawRrl,
    #[serde(default)]
    udp: RawUdp,
    #[serde(default)]
    transfers: RawTransfers,
    #[serde(default)]
    identity: RawIdentity,
    #[serde(default)]
    dnssec: Option<RawDnssec>,
}

/// DNSSEC signing of zone-file and federation zones.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDnssec {
    zones: Vec<String>,
    /// BIND-format key files (`K<zone>.+<alg>+<tag>.key/.private`); default `<state_dir>/keys`.
    #[serde(default)]
    keys_dir: Option<PathBuf>,
    #[serde(default = "default_dnssec_algorithm")]
    algorithm: String,
    #[serde(default = "default_signature_validity_days")]
    signature_validity_days: u32,
    #[serde(default = "default_resign_after_days")]
    resign_after_days: u32,
}

fn default_dnssec_algorithm() -> String {
    "ecdsap256sha256".into()
}

fn default_signature_validity_days() -> u32 {
    14
}

fn default_resign_after_days() -> u32 {
    7
}

/// Server identity (NSID, CHAOS TXT); everything off unless set.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIdentity {
    #[serde(default)]
    nsid: Option<String>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    version: Option<String>,
}

/// Zone transfers (AXFR, IXFR) and NOTIFY to secondaries of every zone but etcd's.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTransfers {
    #[serde(default)]
    allow: Vec<String>,
    #[serde(default)]
    notify: Vec<String>,
    #[serde(default = "default_journal")]
    journal: usize,
    #[serde(default)]
    tsig: Option<RawTsig>,
}

/// A TSIG key (RFC 8945), as BIND and Knot key files give it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTsig {
    name: String,
    #[serde(default = "default_tsig_algorithm")]
    algorithm: String,
    secret: String,
}

fn default_tsig_algorithm() -> String {
    "hmac-sha256".into()
}

impl Default for RawTransfers {
    fn default() -> Self {
        RawTransfers {
            allow: Vec::new(),
            notify: Vec::new(),
            journal: default_journal(),
            tsig: None,
        }
    }
}

fn default_journal() -> usize {
    8
}

/// Kernel socket buffers of every UDP socket (0: the OS default).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUdp {
    #[serde(default = "default_udp_receive_buffer")]
    receive_buffer_bytes: usize,
    #[serde(default = "default_udp_send_buffer")]
    send_buffer_bytes: usize,
}

impl Default for RawUdp {
    fn default() -> Self {
        RawUdp {
            receive_buffer_bytes: default_udp_receive_buffer(),
            send_buffer_bytes: default_udp_send_buffer(),
        }
    }
}

/// 4 MiB: about 10,000 queued queries, ~100 ms of a worker's full rate.
fn default_udp_receive_buffer() -> usize {
    4 << 20
}
fn default_udp_send_buffer() -> usize {
    1 << 20
}

const MAX_SOCKET_BUFFER: usize = 256 << 20;

/// Response-rate limiting (see [`crate::dns::rrl`]); off unless `responses_per_second` > 0.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRrl {
    #[serde(default)]
    responses_per_second: u32,
    #[serde(default = "default_slip")]
    slip: u32,
    #[serde(default = "default_rrl_v4")]
    ipv4_prefix: u8,
    #[serde(default = "default_rrl_v6")]
    ipv6_prefix: u8,
    #[serde(default)]
    exempt: Vec<String>,
    /// The query name joins the key of positive, NODATA and ANY answers (Knot's classic RRL).
    #[serde(default)]
    key_by_name: bool,
}

impl Default for RawRrl {
    fn default() -> Self {
        RawRrl {
            responses_per_second: 0,
            slip: default_slip(),
            ipv4_prefix: default_rrl_v4(),
            ipv6_prefix: default_rrl_v6(),
            exempt: Vec::new(),
            key_by_name: false,
        }
    }
}

fn default_slip() -> u32 {
    2
}
fn default_rrl_v4() -> u8 {
    24
}
fn default_rrl_v6() -> u8 {
    56
}

/// An active probe rule (see [`crate::probe`]).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProbe {
    federation: String,
    /// `NAMESPACE/NAME`; without it the rule covers every service of the federation.
    #[serde(default)]
    service: Option<String>,
    #[serde(rename = "type")]
    kind: String,
    port: u16,
    #[serde(default = "default_probe_path")]
    path: String,
    /// `200`, `"200-299"`, or a list of either.
    #[serde(default)]
    expect_status: Option<RawStatus>,
    /// HTTP(S): sent as `Host` and TLS SNI.
    #[serde(default)]
    host: Option<String>,
    /// HTTPS: verify the certificate (default true).
    #[serde(default = "default_true")]
    verify_certificate: bool,
    /// HTTP(S): the body must contain this.
    #[serde(default)]
    body_contains: Option<String>,
    /// HTTPS: PEM certificates trusted besides the system roots (relative to the config file).
    #[serde(default)]
    ca_file: Option<PathBuf>,
    #[serde(default = "default_probe_interval")]
    interval_ms: u64,
    #[serde(default = "default_probe_timeout")]
    timeout_ms: u64,
    #[serde(default = "default_up_after")]
    up_after: u32,
    #[serde(default = "default_down_after")]
    down_after: u32,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawStatus {
    One(StatusItem),
    List(Vec<StatusItem>),
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum StatusItem {
    Code(u16),
    Text(String),
}

/// `200` or `"200-299"` (or `"204"`) as an inclusive range of valid status codes.
fn status_range(item: &StatusItem) -> Result<(u16, u16), String> {
    let (lo, hi) = match item {
        StatusItem::Code(c) => (*c, *c),
        StatusItem::Text(t) => {
            let (a, b) = t.split_once('-').unwrap_or((t, t));
            let p = |s: &str| s.trim().parse::<u16>().ok();
            match (p(a), p(b)) {
                (Some(a), Some(b)) => (a, b),
                _ => {
                    return Err(format!(
                        "{t:?} is not a status code or a range such as 200-299"
                    ));
                }
            }
        }
    };
    if !(100..=599).contains(&lo) || !(100..=599).contains(&hi) || lo > hi {
        return Err(format!(
            "{lo}-{hi} is not a range of HTTP statuses (100-599)"
        ));
    }
    Ok((lo, hi))
}

fn default_probe_path() -> String {
    "/".into()
}
fn default_probe_interval() -> u64 {
    2000
}
fn default_probe_timeout() -> u64 {
    1000
}
fn default_up_after() -> u32 {
    2
}
fn default_down_after() -> u32 {
    3
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGeo {
    /// Honour EDNS Client Subnet options (RFC 7871).
    #[serde(default = "default_true")]
    ecs: bool,
    #[serde(default)]
    regions: Vec<RawRegion>,
    #[serde(default)]
    client_networks: Vec<RawClientNetwork>,
    #[serde(default)]
    geoip_db: Option<PathBuf>,
    /// The member cluster of clients no cluster's `client_networks` covers.
    #[serde(default)]
    local_cluster: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRegion {
    name: String,
    lat: f64,
    lon: f64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClientNetwork {
    cidr: String,
    region: String,
    #[serde(default)]
    zone: Option<String>,
}

/// No `geo:` section means the same as an empty one (ECS honoured, as `ecs` defaults to).
impl Default for RawGeo {
    fn default() -> Self {
        RawGeo {
            ecs: true,
            regions: Vec::new(),
            client_networks: Vec::new(),
            geoip_db: None,
            local_cluster: None,
        }
    }
}

fn default_true() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEtcd {
    endpoints: Vec<String>,
    #[serde(default)]
    tls: Option<RawEtcdTls>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default = "default_etcd_prefix")]
    prefix: String,
    #[serde(default)]
    zones: Vec<String>,
    #[serde(default)]
    mode: EtcdMode,
    #[serde(default = "default_lease_ttl")]
    lease_ttl_secs: i64,
    #[serde(default = "default_election")]
    election: String,
    #[serde(default)]
    wildcards: bool,
    #[serde(default)]
    axfr_allow: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEtcdTls {
    #[serde(default)]
    ca: Option<PathBuf>,
    #[serde(default)]
    cert: Option<PathBuf>,
    #[serde(default)]
    key: Option<PathBuf>,
}

/// `read`: serve the SkyDNS data under the prefix. `publish`: also write the federation records
/// this instance computes there, when elected (one publisher at a time).
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum EtcdMode {
    #[default]
    Read,
    Publish,
}

/// The `etcd:` section, validated.
#[derive(Debug, Clone)]
pub struct EtcdConfig {
    pub endpoints: Vec<String>,
    pub tls_ca: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub username: Option<String>,
    pub password: Option<String>,
    /// Normalized: `/skydns`.
    pub prefix: String,
    /// Zones served from the prefix (may be empty for a publish-only instance).
    pub zones: Vec<crate::model::DnsName>,
    pub mode: EtcdMode,
    /// Lease TTL of the publisher's election key: failover time.
    pub lease_ttl_secs: i64,
    /// Election name (an etcd key prefix outside the SkyDNS prefix).
    pub election: String,
    /// Stored `*` keys answer names below them that have no keys (RFC 4592); CoreDNS does not.
    pub wildcards: bool,
    /// Clients (address, prefix length) allowed to transfer the etcd zones (AXFR over TCP).
    pub axfr_allow: Vec<(std::net::IpAddr, u8)>,
}

/// An etcd endpoint as etcd-client takes it: `http://HOST:PORT`, `https://HOST:PORT` or
/// `HOST:PORT` (HOST a name, an IPv4 address or a bracketed IPv6 address).
fn check_etcd_endpoint(ep: &str) -> Result<(), String> {
    const FORM: &str = "expected http://HOST:PORT, https://HOST:PORT or HOST:PORT";
    let rest = ep
        .strip_prefix("http://")
        .or_else(|| ep.strip_prefix("https://"))
        .unwrap_or(ep);
    if rest.contains("://") || rest.contains('/') && !rest.ends_with('/') {
        return Err(format!("unknown scheme or a path; {FORM}"));
    }
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let (host, port) = rest
        .rsplit_once(':')
        .ok_or_else(|| format!("no port; {FORM}"))?;
    port.parse::<u16>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("port {port:?} is not 1..=65535; {FORM}"))?;
    let host_ok = if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        v6.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        !host.is_empty()
            && host
                .split('.')
                .all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
    };
    if !host_ok {
        return Err(format!("host {host:?} is not a name or address; {FORM}"));
    }
    Ok(())
}

/// `10.0.0.0/8`, `2001:db8::/32` or a single address (ipnet parses).
pub fn parse_cidr(s: &str) -> Result<(std::net::IpAddr, u8), String> {
    let t = s.trim();
    let net = t
        .parse::<ipnet::IpNet>()
        .or_else(|_| t.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("{s:?} is not an address or ADDRESS/PREFIX"))?;
    Ok((net.addr(), net.prefix_len()))
}

/// True when `ip` is inside one of `nets` (an IPv4-mapped IPv6 address counts as IPv4).
pub fn allowed(nets: &[(std::net::IpAddr, u8)], ip: std::net::IpAddr) -> bool {
    let ip = ip.to_canonical();
    nets.iter()
        .any(|(net, len)| ipnet::IpNet::new(*net, *len).is_ok_and(|n| n.contains(&ip)))
}

fn default_etcd_prefix() -> String {
    "/skydns".into()
}
fn default_lease_ttl() -> i64 {
    3
}
fn default_election() -> String {
    "/fedns/publisher".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTcp {
    #[serde(default = "default_idle")]
    idle_timeout_secs: u64,
    #[serde(default = "default_max_conn")]
    max_connections: usize,
    /// Connections one source prefix may hold (more close its own longest-idle ones).
    #[serde(default = "default_max_per_source")]
    max_connections_per_source: usize,
    #[serde(default = "default_source_prefix_v4")]
    source_prefix_v4: u8,
    #[serde(default = "default_source_prefix_v6")]
    source_prefix_v6: u8,
    /// Idle timeout while more than 3/4 of max_connections are open.
    #[serde(default = "default_busy_idle_ms")]
    busy_idle_timeout_ms: u64,
}

impl Default for RawTcp {
    fn default() -> Self {
        RawTcp {
            idle_timeout_secs: default_idle(),
            max_connections: default_max_conn(),
            max_connections_per_source: default_max_per_source(),
            source_prefix_v4: default_source_prefix_v4(),
            source_prefix_v6: default_source_prefix_v6(),
            busy_idle_timeout_ms: default_busy_idle_ms(),
        }
    }
}

fn default_max_per_source() -> usize {
    64
}
fn default_source_prefix_v4() -> u8 {
    32
}
fn default_source_prefix_v6() -> u8 {
    64
}
fn default_busy_idle_ms() -> u64 {
    1000
}

fn default_listen() -> Vec<SocketAddr> {
    vec!["127.0.0.1:5353".parse().expect("valid")]
}
fn default_http() -> SocketAddr {
    "127.0.0.1:8053".parse().expect("valid")
}
fn default_zones_dir() -> PathBuf {
    "zones".into()
}
fn default_edns_payload() -> u16 {
    1232
}
fn default_idle() -> u64 {
    10
}
fn default_max_conn() -> usize {
    1024
}
fn default_state_dir() -> PathBuf {
    "state".into()
}
fn default_watch_interval_ms() -> u64 {
    250
}
fn default_lameduck_ms() -> u64 {
    5000
}

/// The validated configuration, with paths resolved.
#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    /// DNS addresses; UDP and TCP on each.
    pub listen: Vec<SocketAddr>,
    pub http: SocketAddr,
    /// UDP workers (reuse-port sockets) per listen address.
    pub workers: usize,
    pub zones_dir: PathBuf,
    pub federation_files: Vec<PathBuf>,
    pub edns_payload: u16,
    pub tcp_idle_timeout: Duration,
    pub tcp_max_connections: usize,
    /// TCP fairness (see `server::tcp`): per-source share, what a source is, the short idle
    /// timeout near the cap.
    pub tcp_max_per_source: usize,
    pub tcp_source_prefix_v4: u8,
    pub tcp_source_prefix_v6: u8,
    pub tcp_busy_idle_timeout: Duration,
    /// Where the last SOA serial is kept across restarts.
    pub state_dir: PathBuf,
    pub watch_interval: Duration,
    pub etcd: Option<EtcdConfig>,
    pub geo: GeoConfig,
    pub probes: Vec<crate::probe::Rule>,
    /// Member Kubernetes clusters (`kubernetes:` section), if any.
    pub kubernetes: Option<KubeSettings>,
    pub log_format: Option<crate::logging::LogFormat>,
    /// On SIGTERM, DNS keeps answering this long after `/readyz` turned 503.
    pub lameduck: Duration,
    /// Response-rate limiting of UDP answers (off when `responses_per_second` is 0).
    pub rrl: crate::dns::rrl::RrlConfig,
    /// SO_RCVBUF / SO_SNDBUF of every UDP socket (0: the OS default).
    pub udp_receive_buffer: usize,
    pub udp_send_buffer: usize,
    pub transfers: TransferConfig,
    pub identity: IdentityConfig,
    pub dnssec: Option<DnssecConfig>,
}

/// Which zones are signed, with which keys, and for how long signatures are valid.
#[derive(Debug, Clone, PartialEq)]
pub struct DnssecConfig {
    pub zones: Vec<crate::model::DnsName>,
    pub keys_dir: PathBuf,
    /// Generated keys' algorithm (keys found in `keys_dir` keep theirs).
    pub algorithm: crate::dns::dnssec::Algorithm,
    /// Signatures are valid this long from their inception (an hour before they are made)...
    pub signature_validity: Duration,
    /// ...and are all made again once they are this old, with no source change needed.
    pub resign_after: Duration,
}

/// What fedns says about itself, when asked (`hostname` and `fedns` resolved at load).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IdentityConfig {
    /// NSID option bytes (RFC 5001).
    pub nsid: Option<String>,
    /// `id.server` / `hostname.bind` (CH TXT).
    pub id: Option<String>,
    /// `version.server` / `version.bind` (CH TXT).
    pub version: Option<String>,
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "fedns".into())
}

/// Who may transfer zones, who is told of changes, and how many tables IXFR can start from.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TransferConfig {
    /// Networks allowed AXFR/IXFR of zone-file and federation zones (TCP); empty: none.
    pub allow: Vec<(std::net::IpAddr, u8)>,
    /// Secondaries sent a NOTIFY (RFC 1996) for every zone after each publish.
    pub notify: Vec<SocketAddr>,
    /// Published tables kept for IXFR (0: IXFR is answered with the whole zone).
    pub journal: usize,
    /// When set, transfers must be signed with this key, and NOTIFYs are.
    pub tsig: Option<crate::dns::tsig::Key>,
}

/// Client location settings (see [`crate::geo`]).
#[derive(Debug, Clone, Default)]
pub struct GeoConfig {
    pub ecs: bool,
    /// (name, latitude, longitude)
    pub regions: Vec<(String, f64, f64)>,
    pub client_networks: Vec<ClientNetwork>,
    pub geoip_db: Option<PathBuf>,
    /// For a fedns inside one member cluster: the cluster its clients are in, unless a
    /// cluster's `client_networks` (federation file, `kubernetes:` section) says otherwise.
    pub local_cluster: Option<String>,
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, Vec<Problem>> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| {
            vec![Problem {
                file: file.clone(),
                line: None,
                message: e.to_string(),
            }]
        })?;
        Self::parse(path, &text)
    }

    /// The zones directory and federation files a config names (resolved), read leniently:
    /// for reporting their problems too when the config itself has errors.
    pub fn source_paths(path: &Path) -> Option<(PathBuf, Vec<PathBuf>)> {
        #[derive(Deserialize)]
        struct Paths {
            #[serde(default = "default_zones_dir")]
            zones_dir: PathBuf,
            #[serde(default)]
            federation_files: Vec<PathBuf>,
        }
        let text = std::fs::read_to_string(path).ok()?;
        let p: Paths = if path.extension().is_some_and(|e| e == "toml") {
            toml::from_str(&text).ok()?
        } else {
            serde_saphyr::from_str(&text).ok()?
        };
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Some((
            base.join(p.zones_dir),
            p.federation_files.iter().map(|f| base.join(f)).collect(),
        ))
    }

    pub fn parse(path: &Path, text: &str) -> Result<Config, Vec<Problem>> {
        let file = path.display().to_string();
        let toml = path.extension().is_some_and(|e| e == "toml");
        // Every syntax and type error, then (when the rest parses) every semantic one.
        let (raw, mut problems) = crate::config_errors::parse_all(&file, text, toml, |t| {
            if toml {
                toml::from_str::<RawConfig>(t).map_err(|e| ParseError::from_toml(&e, t))
            } else {
                serde_saphyr::from_str::<RawConfig>(t).map_err(|e| ParseError::from_yaml(&e))
            }
        });
        let Some(raw) = raw else {
            return Err(problems);
        };
        // `path` is the field's full path, which also finds its line.
        let mut field = |path: &str, message: String| {
            problems.push(Problem {
                file: file.clone(),
                line: crate::config_errors::line_of_path(text, path, toml),
                message: format!("{path}: {message}"),
            })
        };
        if raw.listen.is_empty() {
            field("listen", "at least one address is needed".into());
        }
        if !(512..=4096).contains(&raw.edns_payload) {
            field(
                "edns_payload",
                format!("{} is outside 512..=4096", raw.edns_payload),
            );
        }
        if raw.tcp.max_connections == 0 {
            field("tcp.max_connections", "must be at least 1, not 0".into());
        }
        if raw.tcp.idle_timeout_secs == 0 {
            field("tcp.idle_timeout_secs", "must be at least 1, not 0".into());
        }
        if raw.tcp.max_connections_per_source == 0 {
            field(
                "tcp.max_connections_per_source",
                "must be at least 1, not 0".into(),
            );
        }
        if raw.tcp.source_prefix_v4 > 32 {
            field(
                "tcp.source_prefix_v4",
                format!("{} is outside 0..=32", raw.tcp.source_prefix_v4),
            );
        }
        if raw.tcp.source_prefix_v6 > 128 {
            field(
                "tcp.source_prefix_v6",
                format!("{} is outside 0..=128", raw.tcp.source_prefix_v6),
            );
        }
        if raw.tcp.busy_idle_timeout_ms == 0 {
            field(
                "tcp.busy_idle_timeout_ms",
                "must be at least 1, not 0".into(),
            );
        }
        if raw.rrl.ipv4_prefix > 32 {
            field(
                "rrl.ipv4_prefix",
                format!("{} is outside 0..=32", raw.rrl.ipv4_prefix),
            );
        }
        if raw.rrl.ipv6_prefix > 128 {
            field(
                "rrl.ipv6_prefix",
                format!("{} is outside 0..=128", raw.rrl.ipv6_prefix),
            );
        }
        for (name, v) in [
            ("udp.receive_buffer_bytes", raw.udp.receive_buffer_bytes),
            ("udp.send_buffer_bytes", raw.udp.send_buffer_bytes),
        ] {
            if v > MAX_SOCKET_BUFFER {
                field(name, format!("{v} is above {MAX_SOCKET_BUFFER} (256 MiB)"));
            }
        }
        let mut rrl_exempt = Vec::new();
        for (i, e) in raw.rrl.exempt.iter().enumerate() {
            match parse_cidr(e) {
                Ok(n) => rrl_exempt.push(n),
                Err(m) => field(&format!("rrl.exempt[{i}]"), m),
            }
        }
        let mut transfer_allow = Vec::new();
        for (i, a) in raw.transfers.allow.iter().enumerate() {
            match parse_cidr(a) {
                Ok(n) => transfer_allow.push(n),
                Err(m) => field(&format!("transfers.allow[{i}]"), m),
            }
        }
        let mut notify = Vec::new();
        for (i, a) in raw.transfers.notify.iter().enumerate() {
            let parsed = a.parse::<SocketAddr>().or_else(|_| {
                a.parse::<std::net::IpAddr>()
                    .map(|ip| SocketAddr::new(ip, 53))
            });
            match parsed {
                Ok(n) => notify.push(n),
                Err(_) => field(
                    &format!("transfers.notify[{i}]"),
                    format!("{a:?} is not ADDRESS or ADDRESS:PORT"),
                ),
            }
        }
        let mut identity = IdentityConfig::default();
        for (field_name, value, slot) in [
            ("identity.nsid", &raw.identity.nsid, &mut identity.nsid),
            ("identity.id", &raw.identity.id, &mut identity.id),
            (
                "identity.version",
                &raw.identity.version,
                &mut identity.version,
            ),
        ] {
            let Some(v) = value else { continue };
            let resolved = match v.as_str() {
                "hostname" => host_name(),
                "fedns" => format!("fedns {}", env!("CARGO_PKG_VERSION")),
                other => other.to_string(),
            };
            if resolved.is_empty() || resolved.len() > 255 {
                field(field_name, format!("{v:?} must be 1 to 255 bytes"));
            } else {
                *slot = Some(resolved);
            }
        }
        let mut tsig = None;
        if let Some(t) = &raw.transfers.tsig {
            match crate::dns::tsig::Key::new(&t.name, &t.algorithm, &t.secret) {
                Ok(k) => tsig = Some(k),
                Err(m) => field("transfers.tsig", m),
            }
        }
        if raw.transfers.journal > 1024 {
            field(
                "transfers.journal",
                format!("{} is above 1024", raw.transfers.journal),
            );
        }
        if raw.watch_interval_ms == 0 {
            field("watch_interval_ms", "must be at least 1, not 0".into());
        }
        let mut etcd = None;
        if let Some(e) = &raw.etcd {
            let mut zones = Vec::new();
            for (i, z) in e.zones.iter().enumerate() {
                match crate::model::DnsName::parse(z) {
                    Ok(n) => zones.push(n),
                    Err(m) => field(&format!("etcd.zones[{i}]"), format!("{z:?}: {m}")),
                }
            }
            if e.endpoints.is_empty() {
                field(
                    "etcd.endpoints",
                    "at least one etcd endpoint is needed".into(),
                );
            }
            for (i, ep) in e.endpoints.iter().enumerate() {
                if let Err(m) = check_etcd_endpoint(ep) {
                    field(&format!("etcd.endpoints[{i}]"), format!("{ep:?}: {m}"));
                }
            }
            if e.mode == EtcdMode::Read && zones.is_empty() {
                field(
                    "etcd.zones",
                    "read mode needs at least one zone to serve".into(),
                );
            }
            if e.lease_ttl_secs < 1 {
                field(
                    "etcd.lease_ttl_secs",
                    format!("must be at least 1, not {}", e.lease_ttl_secs),
                );
            }
            if e.username.is_some() != e.password.is_some() {
                field("etcd.username", "username and password go together".into());
            }
            let mut axfr_allow = Vec::new();
            for (i, a) in e.axfr_allow.iter().enumerate() {
                match parse_cidr(a) {
                    Ok(n) => axfr_allow.push(n),
                    Err(m) => field(&format!("etcd.axfr_allow[{i}]"), m),
                }
            }
            let prefix = crate::answers::skydns::normalize_prefix(&e.prefix);
            if prefix == "/" {
                field(
                    "etcd.prefix",
                    format!("must not be empty, not {:?}", e.prefix),
                );
            }
            let election = crate::answers::skydns::normalize_prefix(&e.election);
            if election.starts_with(&format!("{prefix}/")) || election == prefix {
                field(
                    "etcd.election",
                    format!(
                        "{:?} must be outside the SkyDNS prefix {prefix:?}",
                        e.election
                    ),
                );
            }
            etcd = Some(EtcdConfig {
                endpoints: e.endpoints.clone(),
                tls_ca: e.tls.as_ref().and_then(|t| t.ca.clone()),
                tls_cert: e.tls.as_ref().and_then(|t| t.cert.clone()),
                tls_key: e.tls.as_ref().and_then(|t| t.key.clone()),
                username: e.username.clone(),
                password: e.password.clone(),
                prefix,
                zones,
                mode: e.mode,
                lease_ttl_secs: e.lease_ttl_secs,
                election,
                wildcards: e.wildcards,
                axfr_allow,
            });
        }
        let mut client_networks = Vec::new();
        let mut located = Vec::new();
        for (i, n) in raw.geo.client_networks.iter().enumerate() {
            match parse_network(&n.cidr) {
                Ok((addr, prefix)) => client_networks.push(ClientNetwork {
                    addr,
                    prefix,
                    region: n.region.clone(),
                    zone: n.zone.clone(),
                    cluster: None,
                }),
                Err(e) => located.push(Problem {
                    file: file.clone(),
                    line: text
                        .lines()
                        .position(|l| l.contains(&n.cidr))
                        .map(|i| i + 1),
                    message: format!("geo.client_networks[{i}].cidr: {e}"),
                }),
            }
        }
        for (i, r) in raw.geo.regions.iter().enumerate() {
            if !(-90.0..=90.0).contains(&r.lat) || !(-180.0..=180.0).contains(&r.lon) {
                field(
                    &format!("geo.regions[{i}]"),
                    format!("coordinates ({}, {}) out of range", r.lat, r.lon),
                );
            }
        }
        if raw.geo.geoip_db.is_some() && raw.geo.regions.is_empty() {
            field(
                "geo.geoip_db",
                "a GeoIP database needs geo.regions with coordinates to map to".into(),
            );
        }
        let mut probes = Vec::new();
        for (i, p) in raw.probes.iter().enumerate() {
            let at = |field: &str, message: String| Problem {
                file: file.clone(),
                line: crate::config_errors::line_of_path(
                    text,
                    &format!("probes[{i}].{field}"),
                    toml,
                ),
                message: format!("probes[{i}].{field}: {message}"),
            };
            let check = match p.kind.as_str() {
                "tcp" => crate::probe::Check::Tcp,
                "http" | "https" => {
                    let items: Vec<&StatusItem> = match &p.expect_status {
                        None => Vec::new(),
                        Some(RawStatus::One(i)) => vec![i],
                        Some(RawStatus::List(l)) => l.iter().collect(),
                    };
                    let mut expect = Vec::new();
                    let mut bad = false;
                    for i in items {
                        match status_range(i) {
                            Ok(r) => expect.push(r),
                            Err(e) => {
                                located.push(at("expect_status", e));
                                bad = true;
                            }
                        }
                    }
                    if bad {
                        continue;
                    }
                    if expect.is_empty() {
                        expect.push((200, 200));
                    }
                    if let Some(h) = &p.host
                        && crate::model::DnsName::parse(h).is_err()
                    {
                        located.push(at("host", format!("{h:?} is not a host name")));
                        continue;
                    }
                    let ca_file = p
                        .ca_file
                        .as_ref()
                        .map(|f| path.parent().map_or_else(|| f.clone(), |d| d.join(f)));
                    if let Some(f) = &ca_file {
                        if p.kind != "https" {
                            located.push(at("ca_file", "only https probes use a ca_file".into()));
                            continue;
                        }
                        if let Err(e) = crate::probe::load_ca_file(f) {
                            located.push(at("ca_file", e));
                            continue;
                        }
                    }
                    crate::probe::Check::Http(crate::probe::HttpCheck {
                        path: p.path.clone(),
                        tls: p.kind == "https",
                        host: p.host.clone(),
                        verify: p.verify_certificate,
                        ca_file,
                        expect,
                        body: p.body_contains.clone(),
                    })
                }
                other => {
                    located.push(at("type", format!("{other:?} is not tcp, http or https")));
                    continue;
                }
            };
            let service = match p.service.as_deref().map(|s| s.split_once('/')) {
                None => None,
                Some(Some((ns, name))) => {
                    Some((ns.to_ascii_lowercase(), name.to_ascii_lowercase()))
                }
                Some(None) => {
                    located.push(at("service", "must be NAMESPACE/NAME".into()));
                    continue;
                }
            };
            if p.interval_ms == 0 || p.timeout_ms == 0 || p.up_after == 0 || p.down_after == 0 {
                located.push(at(
                    "interval_ms",
                    "intervals, timeouts and thresholds must be at least 1".into(),
                ));
                continue;
            }
            probes.push(crate::probe::Rule {
                federation: p.federation.to_ascii_lowercase(),
                service,
                check,
                port: p.port,
                interval: Duration::from_millis(p.interval_ms),
                timeout: Duration::from_millis(p.timeout_ms),
                up_after: p.up_after,
                down_after: p.down_after,
            });
        }
        problems.extend(located);
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let resolve = |p: &Path| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };
        let kubernetes = match raw.kubernetes {
            None => None,
            Some(k) => match k.validate(&resolve) {
                Ok(k) => Some(k),
                Err(errs) => {
                    problems.extend(errs.into_iter().map(|(field, message)| Problem {
                        file: file.clone(),
                        line: crate::config_errors::line_of_path(text, &field, toml),
                        message: format!("{field}: {message}"),
                    }));
                    None
                }
            },
        };
        let mut dnssec = None;
        if let Some(d) = &raw.dnssec {
            let mut field = |path: &str, message: String| {
                problems.push(Problem {
                    file: file.clone(),
                    line: crate::config_errors::line_of_path(text, path, toml),
                    message: format!("{path}: {message}"),
                })
            };
            let mut zones = Vec::new();
            for (i, z) in d.zones.iter().enumerate() {
                match crate::model::DnsName::parse(z) {
                    Ok(n) => zones.push(n),
                    Err(m) => field(&format!("dnssec.zones[{i}]"), m),
                }
            }
            if d.zones.is_empty() {
                field("dnssec.zones", "name at least one zone to sign".into());
            }
            let algorithm = crate::dns::dnssec::Algorithm::parse(&d.algorithm);
            if algorithm.is_none() {
                field(
                    "dnssec.algorithm",
                    format!(
                        "{:?} is not ecdsap256sha256 (13) or ed25519 (15)",
                        d.algorithm
                    ),
                );
            }
            if d.signature_validity_days < 2 || d.signature_validity_days > 366 {
                field(
                    "dnssec.signature_validity_days",
                    format!("{} is outside 2..=366", d.signature_validity_days),
                );
            }
            if d.resign_after_days == 0 || d.resign_after_days >= d.signature_validity_days {
                field(
                    "dnssec.resign_after_days",
                    format!(
                        "{} must be at least 1 and below signature_validity_days ({}), so \
                         signatures are made again before they expire",
                        d.resign_after_days, d.signature_validity_days
                    ),
                );
            }
            if let Some(e) = &etcd {
                for (i, z) in zones.iter().enumerate() {
                    if e.zones.contains(z) {
                        field(
                            &format!("dnssec.zones[{i}]"),
                            format!("{z} is an etcd zone; etcd zones cannot be signed (yet)"),
                        );
                    }
                }
            }
            if let Some(algorithm) = algorithm {
                dnssec = Some(DnssecConfig {
                    zones,
                    keys_dir: match &d.keys_dir {
                        Some(p) => resolve(p),
                        None => resolve(&raw.state_dir).join("keys"),
                    },
                    algorithm,
                    signature_validity: Duration::from_secs(
                        d.signature_validity_days as u64 * 86400,
                    ),
                    resign_after: Duration::from_secs(d.resign_after_days as u64 * 86400),
                });
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let workers = if raw.workers == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            raw.workers
        };
        Ok(Config {
            path: path.to_path_buf(),
            listen: raw.listen,
            http: raw.http,
            workers,
            zones_dir: resolve(&raw.zones_dir),
            federation_files: raw.federation_files.iter().map(|p| resolve(p)).collect(),
            edns_payload: raw.edns_payload,
            tcp_idle_timeout: Duration::from_secs(raw.tcp.idle_timeout_secs),
            tcp_max_connections: raw.tcp.max_connections,
            tcp_max_per_source: raw.tcp.max_connections_per_source,
            tcp_source_prefix_v4: raw.tcp.source_prefix_v4,
            tcp_source_prefix_v6: raw.tcp.source_prefix_v6,
            tcp_busy_idle_timeout: Duration::from_millis(raw.tcp.busy_idle_timeout_ms),
            state_dir: resolve(&raw.state_dir),
            watch_interval: Duration::from_millis(raw.watch_interval_ms),
            etcd: etcd.map(|mut e| {
                e.tls_ca = e.tls_ca.map(|p| resolve(&p));
                e.tls_cert = e.tls_cert.map(|p| resolve(&p));
                e.tls_key = e.tls_key.map(|p| resolve(&p));
                e
            }),
            geo: GeoConfig {
                ecs: raw.geo.ecs,
                regions: raw
                    .geo
                    .regions
                    .iter()
                    .map(|r| (r.name.clone(), r.lat, r.lon))
                    .collect(),
                client_networks,
                geoip_db: raw.geo.geoip_db.as_deref().map(resolve),
                local_cluster: raw
                    .geo
                    .local_cluster
                    .clone()
                    .filter(|c| !c.trim().is_empty()),
            },
            probes,
            kubernetes,
            log_format: raw.log_format,
            lameduck: Duration::from_millis(raw.lameduck_ms),
            rrl: crate::dns::rrl::RrlConfig {
                responses_per_second: raw.rrl.responses_per_second,
                slip: raw.rrl.slip,
                ipv4_prefix: raw.rrl.ipv4_prefix,
                ipv6_prefix: raw.rrl.ipv6_prefix,
                exempt: rrl_exempt,
                key_by_name: raw.rrl.key_by_name,
            },
            udp_receive_buffer: raw.udp.receive_buffer_bytes,
            udp_send_buffer: raw.udp.send_buffer_bytes,
            transfers: TransferConfig {
                allow: transfer_allow,
                notify,
                journal: raw.transfers.journal,
                tsig,
            },
            identity,
            dnssec,
        })
    }
}

/// `10.0.0.0/8`, `2001:db8::/32`; host bits must be zero.
fn parse_network(text: &str) -> Result<(std::net::IpAddr, u8), String> {
    let net: ipnet::IpNet = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not ADDRESS/PREFIX"))?;
    if net.trunc() != net {
        return Err(format!(
            "{text} has host bits set (the network is {})",
            net.trunc()
        ));
    }
    Ok((net.addr(), net.prefix_len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ecs_is_honoured_with_or_without_a_geo_section() {
        let p = Path::new("/etc/fedns/fedns.yaml");
        assert!(
            Config::parse(p, "listen: [\"127.0.0.1:53\"]\n")
                .unwrap()
                .geo
                .ecs
        );
        assert!(Config::parse(p, "geo:\n  regions: []\n").unwrap().geo.ecs);
        assert!(!Config::parse(p, "geo:\n  ecs: false\n").unwrap().geo.ecs);
    }

    #[test]
    fn every_problem_of_every_section_with_its_line() {
        let text = "edns_payload: 100\ntcp:\n  max_connections: 0\nkubernetes:\n  federation: f\n  zone: example.com\n  clusters:\n    - name: a\n      kubeconfig: k\n    - name: b\n      region: r\netcd:\n  endpoints: [\"http://e:2379\", \"htp:/x\"]\n  zones: [a.example]\n";
        let errs = Config::parse(Path::new("/etc/fedns/fedns.yaml"), text).unwrap_err();
        let got: Vec<String> = errs.iter().map(|p| p.to_string()).collect();
        let want = [
            "/etc/fedns/fedns.yaml:1: edns_payload: 100 is outside 512..=4096",
            "/etc/fedns/fedns.yaml:3: tcp.max_connections: must be at least 1, not 0",
            "/etc/fedns/fedns.yaml:13: etcd.endpoints[1]: \"htp:/x\"",
            "/etc/fedns/fedns.yaml:10: kubernetes.clusters[1]",
        ];
        for w in want {
            assert!(got.iter().any(|g| g.starts_with(w)), "no {w:?} in {got:#?}");
        }
        assert_eq!(got.len(), 4, "{got:#?}");
    }

    #[test]
    fn probe_rules_take_status_lists_and_ranges_host_tls_and_body() {
        let text = "probes:\n  - {federation: f, type: https, port: 443, host: lb.example, verify_certificate: false, expect_status: [200-299, 301], body_contains: ok}\n  - {federation: f, service: n/s, type: http, port: 80, expect_status: 204}\n  - {federation: f, type: tcp, port: 1}\n";
        let c = Config::parse(Path::new("fedns.yaml"), text).unwrap();
        let crate::probe::Check::Http(h) = &c.probes[0].check else {
            panic!("{:?}", c.probes[0]);
        };
        assert!(h.tls && !h.verify);
        assert_eq!(h.host.as_deref(), Some("lb.example"));
        assert_eq!(h.expect, vec![(200, 299), (301, 301)]);
        assert_eq!(h.body.as_deref(), Some("ok"));
        let crate::probe::Check::Http(h) = &c.probes[1].check else {
            panic!("{:?}", c.probes[1]);
        };
        assert!(!h.tls && h.verify && h.host.is_none());
        assert_eq!(h.expect, vec![(204, 204)]);
        assert_eq!(c.probes[2].check, crate::probe::Check::Tcp);
        let bad = "probes:\n  - {federation: f, type: http, port: 80, expect_status: [\"299-200\"]}\n  - {federation: f, type: http, port: 80, expect_status: ok}\n  - {federation: f, type: ftp, port: 21}\n  - {federation: f, type: https, port: 443, ca_file: /nonexistent/ca.pem}\n";
        let errs: Vec<String> = Config::parse(Path::new("fedns.yaml"), bad)
            .unwrap_err()
            .iter()
            .map(|p| p.to_string())
            .collect();
        assert!(
            errs[0].contains("probes[0].expect_status: 299-200 is not a range"),
            "{errs:?}"
        );
        assert!(
            errs[1].contains("probes[1].expect_status: \"ok\" is not a status code"),
            "{errs:?}"
        );
        assert!(
            errs[2].contains("probes[2].type: \"ftp\" is not tcp, http or https"),
            "{errs:?}"
        );
        assert!(
            errs[3].contains("probes[3].ca_file: /nonexistent/ca.pem"),
            "{errs:?}"
        );
    }

    #[test]
    fn cidrs_parse_with_ipnet_and_match_mapped_addresses() {
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        assert_eq!(parse_cidr("10.0.0.0/8"), Ok((ip("10.0.0.0"), 8)));
        assert_eq!(parse_cidr(" 192.0.2.7 "), Ok((ip("192.0.2.7"), 32)));
        assert_eq!(parse_cidr("2001:db8::/32"), Ok((ip("2001:db8::"), 32)));
        assert!(parse_cidr("10.0.0.0/33").is_err());
        assert!(parse_cidr("10.0.0/8").is_err());
        assert!(parse_cidr("nope").is_err());
        let nets = [
            parse_cidr("10.0.0.0/8").unwrap(),
            parse_cidr("2001:db8::/32").unwrap(),
        ];
        assert!(allowed(&nets, ip("10.200.1.1")));
        assert!(allowed(&nets, ip("::ffff:10.1.2.3")));
        assert!(allowed(&nets, ip("2001:db8:1::1")));
        assert!(!allowed(&nets, ip("11.0.0.1")));
        assert!(!allowed(&nets, ip("2001:db9::1")));
        assert!(allowed(
            &[parse_cidr("0.0.0.0/0").unwrap()],
            ip("203.0.113.1")
        ));

        assert_eq!(
            parse_network("198.51.100.0/24"),
            Ok((ip("198.51.100.0"), 24))
        );
        let e = parse_network("198.51.100.1/24").unwrap_err();
        assert!(
            e.contains("host bits") && e.contains("198.51.100.0/24"),
            "{e}"
        );
        assert!(parse_network("198.51.100.0").is_err());
    }

    #[test]
    fn defaults_and_relative_paths() {
        let c = Config::parse(
            Path::new("/etc/fedns/fedns.yaml"),
            "federation_files: [fed.yaml]\n",
        )
        .unwrap();
        assert_eq!(c.listen, default_listen());
        assert_eq!(c.zones_dir, PathBuf::from("/etc/fedns/zones"));
        assert_eq!(
            c.federation_files,
            vec![PathBuf::from("/etc/fedns/fed.yaml")]
        );
        assert_eq!(c.edns_payload, 1232);
    }

    #[test]
    fn bad_values_name_line_and_field() {
        let errs = Config::parse(
            Path::new("c.yaml"),
            "listen: [\"127.0.0.1:53\"]\nedns_payload: 100\n",
        )
        .unwrap_err();
        assert_eq!(
            errs[0].to_string(),
            "c.yaml:2: edns_payload: 100 is outside 512..=4096"
        );
        let errs =
            Config::parse(Path::new("c.yaml"), "listen: [\"not an address\"]\n").unwrap_err();
        assert_eq!(errs[0].line, Some(1), "{errs:?}");
        let errs = Config::parse(
            Path::new("c.yaml"),
            "etcd:\n  endpoints: [\"http://127.0.0.1:2379\"]\n  zones: []\n",
        )
        .unwrap_err();
        assert_eq!(errs[0].line, Some(3), "{errs:?}");
        let c = Config::parse(
            Path::new("/x/c.yaml"),
            "etcd:\n  endpoints: [\"http://127.0.0.1:2379\"]\n  prefix: skydns/\n  zones: [Example.com]\n  tls: {ca: ca.pem}\n",
        )
        .unwrap();
        let e = c.etcd.unwrap();
        assert_eq!(e.prefix, "/skydns");
        assert_eq!(e.tls_ca, Some(PathBuf::from("/x/ca.pem")));
        assert_eq!(e.zones[0].to_string(), "example.com.");
        let errs = Config::parse(Path::new("c.yaml"), "lisen: []\n").unwrap_err();
        assert!(errs[0].message.contains("lisen"), "{errs:?}");
    }

    #[test]
    fn tcp_fairness_settings_are_validated() {
        let c = Config::parse(
            Path::new("c.yaml"),
            "tcp:\n  max_connections_per_source: 8\n",
        )
        .unwrap();
        assert_eq!(c.tcp_max_per_source, 8);
        assert_eq!((c.tcp_source_prefix_v4, c.tcp_source_prefix_v6), (32, 64));
        assert_eq!(c.tcp_busy_idle_timeout, Duration::from_millis(1000));
        let errs = Config::parse(
            Path::new("c.yaml"),
            "tcp:\n  source_prefix_v4: 33\n  source_prefix_v6: 129\n  max_connections_per_source: 0\n",
        )
        .unwrap_err();
        let text: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        assert!(
            text.contains(&"c.yaml:2: tcp.source_prefix_v4: 33 is outside 0..=32".to_string()),
            "{text:?}"
        );
        assert!(
            text.contains(&"c.yaml:3: tcp.source_prefix_v6: 129 is outside 0..=128".to_string()),
            "{text:?}"
        );
        assert!(
            text.contains(
                &"c.yaml:4: tcp.max_connections_per_source: must be at least 1, not 0".to_string()
            ),
            "{text:?}"
        );
    }

    #[test]
    fn rrl_is_off_by_default_and_validated() {
        let c = Config::parse(Path::new("c.yaml"), "").unwrap();
        assert_eq!(c.rrl, crate::dns::rrl::RrlConfig::default());
        assert_eq!(c.rrl.responses_per_second, 0);
        let c = Config::parse(
            Path::new("c.yaml"),
            "rrl:\n  responses_per_second: 20\n  slip: 3\n  exempt: [10.0.0.0/8]\n",
        )
        .unwrap();
        assert_eq!((c.rrl.responses_per_second, c.rrl.slip), (20, 3));
        assert_eq!(c.rrl.exempt, vec![("10.0.0.0".parse().unwrap(), 8)]);
        assert!(!c.rrl.key_by_name);
        let c = Config::parse(Path::new("c.yaml"), "rrl:\n  key_by_name: true\n").unwrap();
        assert!(c.rrl.key_by_name);
        let errs = Config::parse(
            Path::new("c.yaml"),
            "rrl:\n  responses_per_second: 5\n  ipv4_prefix: 40\n  exempt: [nonsense]\n",
        )
        .unwrap_err();
        let text: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        assert!(
            text.contains(&"c.yaml:3: rrl.ipv4_prefix: 40 is outside 0..=32".to_string()),
            "{text:?}"
        );
        assert!(
            text.contains(
                &"c.yaml:4: rrl.exempt[0]: \"nonsense\" is not an address or ADDRESS/PREFIX"
                    .to_string()
            ),
            "{text:?}"
        );
    }

    #[test]
    fn udp_buffers_default_and_are_bounded() {
        let c = Config::parse(Path::new("c.yaml"), "").unwrap();
        assert_eq!(
            (c.udp_receive_buffer, c.udp_send_buffer),
            (4 << 20, 1 << 20)
        );
        let c = Config::parse(Path::new("c.yaml"), "udp:\n  receive_buffer_bytes: 0\n").unwrap();
        assert_eq!(c.udp_receive_buffer, 0);
        let errs = Config::parse(
            Path::new("c.yaml"),
            "udp:\n  receive_buffer_bytes: 999999999999\n",
        )
        .unwrap_err();
        assert_eq!(
            errs[0].to_string(),
            "c.yaml:2: udp.receive_buffer_bytes: 999999999999 is above 268435456 (256 MiB)"
        );
    }
}
