//! The main config file on SIGHUP and on change: every new version is validated in full; a bad
//! one is rejected with every problem logged and `fedns_config_last_reload_successful 0`, and
//! the running config stays. What a good one changes is applied where fedns can apply it live
//! (the `kubernetes:` section, which its source follows itself; zone and federation files are
//! watched on their own); every other changed setting is named in the log as taking effect at
//! the next restart, and `fedns_config_restart_pending` is 1 until the file and the running
//! config agree again.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use crate::config::Config;
use crate::metrics::Metrics;

type Fingerprint = Option<(SystemTime, u64, u64)>;

fn fingerprint(path: &Path) -> Fingerprint {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| {
        (
            m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            m.len(),
            m.ino(),
        )
    })
}

/// Settings that the running process keeps until a restart, and how they differ.
pub fn restart_only_changes(running: &Config, new: &Config) -> Vec<&'static str> {
    let mut out = Vec::new();
    let mut cmp = |name: &'static str, a: String, b: String| {
        if a != b {
            out.push(name);
        }
    };
    cmp(
        "listen",
        format!("{:?}", running.listen),
        format!("{:?}", new.listen),
    );
    cmp(
        "http",
        format!("{:?}", running.http),
        format!("{:?}", new.http),
    );
    cmp(
        "workers",
        format!("{:?}", running.workers),
        format!("{:?}", new.workers),
    );
    cmp(
        "zones_dir",
        format!("{:?}", running.zones_dir),
        format!("{:?}", new.zones_dir),
    );
    cmp(
        "federation_files",
        format!("{:?}", running.federation_files),
        format!("{:?}", new.federation_files),
    );
    cmp(
        "edns_payload",
        format!("{:?}", running.edns_payload),
        format!("{:?}", new.edns_payload),
    );
    cmp(
        "tcp",
        format!(
            "{:?}",
            (
                running.tcp_idle_timeout,
                running.tcp_max_connections,
                running.tcp_max_per_source,
                running.tcp_source_prefix_v4,
                running.tcp_source_prefix_v6,
                running.tcp_busy_idle_timeout
            )
        ),
        format!(
            "{:?}",
            (
                new.tcp_idle_timeout,
                new.tcp_max_connections,
                new.tcp_max_per_source,
                new.tcp_source_prefix_v4,
                new.tcp_source_prefix_v6,
                new.tcp_busy_idle_timeout
            )
        ),
    );
    cmp(
        "rrl",
        format!("{:?}", running.rrl),
        format!("{:?}", new.rrl),
    );
    cmp(
        "identity",
        format!("{:?}", running.identity),
        format!("{:?}", new.identity),
    );
    cmp(
        "transfers",
        format!("{:?}", running.transfers),
        format!("{:?}", new.transfers),
    );
    cmp(
        "udp",
        format!(
            "{:?}",
            (running.udp_receive_buffer, running.udp_send_buffer)
        ),
        format!("{:?}", (new.udp_receive_buffer, new.udp_send_buffer)),
    );
    cmp(
        "state_dir",
        format!("{:?}", running.state_dir),
        format!("{:?}", new.state_dir),
    );
    cmp(
        "watch_interval_ms",
        format!("{:?}", running.watch_interval),
        format!("{:?}", new.watch_interval),
    );
    cmp(
        "etcd",
        format!("{:?}", running.etcd),
        format!("{:?}", new.etcd),
    );
    cmp(
        "geo",
        format!("{:?}", running.geo),
        format!("{:?}", new.geo),
    );
    // The clusters' pod networks build the client locator at start, like `geo`.
    let networks = |c: &Config| {
        let nets: Vec<_> = c
            .kubernetes
            .iter()
            .flat_map(|k| &k.clusters)
            .map(|c| (&c.name, &c.client_networks))
            .collect();
        format!("{nets:?}")
    };
    cmp(
        "kubernetes.clusters[].client_networks",
        networks(running),
        networks(new),
    );
    cmp(
        "probes",
        format!("{:?}", running.probes),
        format!("{:?}", new.probes),
    );
    cmp(
        "log_format",
        format!("{:?}", running.log_format),
        format!("{:?}", new.log_format),
    );
    cmp(
        "lameduck_ms",
        format!("{:?}", running.lameduck),
        format!("{:?}", new.lameduck),
    );
    out
}

/// Watches `running.path` (every `poll`, and at once on every `reload` tick) until the process
/// exits. `workers_from_cli`: `--workers` overrides the file's `workers`, so it is not compared.
pub async fn run(
    running: Config,
    workers_from_cli: bool,
    poll: Duration,
    mut reload: watch::Receiver<u64>,
    metrics: Metrics,
) {
    let path: PathBuf = running.path.clone();
    let mut seen = fingerprint(&path);
    let mut reload_open = true;
    let mut last_pending: Vec<&'static str> = Vec::new();
    loop {
        let forced = tokio::select! {
            _ = tokio::time::sleep(poll) => false,
            r = reload.changed(), if reload_open => {
                reload_open = r.is_ok();
                r.is_ok()
            }
        };
        let now = fingerprint(&path);
        if !forced && now == seen {
            continue;
        }
        seen = now;
        match Config::load(&path) {
            Err(problems) => {
                for p in &problems {
                    tracing::error!("{p}");
                }
                tracing::error!(
                    problems = problems.len(),
                    "config reload rejected; the running config stays"
                );
                metrics.config_reload_successful.set(0);
            }
            Ok(mut new) => {
                if workers_from_cli {
                    new.workers = running.workers;
                }
                metrics.config_reload_successful.set(1);
                metrics.config_reload_timestamp.set(
                    SystemTime::now()
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs() as i64),
                );
                let pending = restart_only_changes(&running, &new);
                if pending.is_empty() {
                    tracing::info!("config reloaded");
                } else {
                    tracing::warn!(
                        settings = pending.join(","),
                        "config reloaded; these settings take effect at the next restart"
                    );
                }
                if pending.is_empty() && !last_pending.is_empty() {
                    tracing::info!("config file and running config agree again");
                }
                metrics
                    .config_restart_pending
                    .set(i64::from(!pending.is_empty()));
                last_pending = pending;
            }
        }
    }
}
