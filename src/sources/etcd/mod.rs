//! The etcd source (read mode) and the etcd publisher (publish mode). etcd-client types stay in
//! this module.
//!
//! Read mode: one get of the prefix, then a watch from the next revision; every change updates an
//! in-memory map (key → parsed entry) and sends a complete snapshot to the merger, at most one in
//! flight (bursts coalesce while the merger builds). A compaction that cancels the watch, a lost
//! connection or a failed start re-gets and re-watches with backoff; meanwhile the last copy keeps
//! serving, `/readyz` and `fedns_source_up{source="etcd:PREFIX"}` say so, and nothing on the query
//! path ever talks to etcd.
//!
//! Publish mode: instances campaign in an etcd election bound to a lease; the leader writes the
//! federation records of every table it publishes as `PREFIX/<reversed name>/<hash of value>`
//! with `{"host","ttl","group"}`, diffing against what is there (unchanged keys are never
//! rewritten), in transactions that only apply while it still holds the election key. When it
//! dies its lease expires and another instance takes over within `lease_ttl_secs`. Wildcard
//! names (`*.X`, from Ingress, Gateway API or DNSEndpoint hosts) are published only with
//! `wildcards: true`: CoreDNS's etcd plugin treats `*` only as a query label, so a stored `*`
//! key would make every name below `X` NXDOMAIN there and the literal `*.X` answer with all of
//! `X`'s subtree; left out, they are counted in the publish log and named in a warning.

pub use crate::answers::skydns;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, Identity,
    TlsOptions, Txn, TxnOp, WatchOptions,
};
use tokio::sync::{mpsc, oneshot, watch};

use self::skydns::{Entries, EtcdData};
use super::{Snapshot, SourceBoard, Update};
use crate::answers::{FederationRecords, Published};
use crate::config::EtcdConfig;
use crate::metrics::Metrics;

const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Most operations in one etcd transaction (etcd's default `--max-txn-ops` is 128).
const TXN_OPS: usize = 100;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The source name used in logs, metrics and `/readyz`.
pub fn source_name(cfg: &EtcdConfig) -> String {
    format!("etcd:{}", cfg.prefix)
}

async fn connect(cfg: &EtcdConfig) -> Result<Client, BoxError> {
    let mut opts = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        // etcd answers pings more frequent than every 5 s (--grpc-keepalive-min-time) with
        // GOAWAY; 6 s + 3 s still notices a silent etcd well before TCP would.
        .with_keep_alive(Duration::from_secs(6), Duration::from_secs(3))
        .with_keep_alive_while_idle(true);
    if let (Some(u), Some(p)) = (&cfg.username, &cfg.password) {
        opts = opts.with_user(u.clone(), p.clone());
    }
    if cfg.tls_ca.is_some() || cfg.tls_cert.is_some() {
        let mut tls = TlsOptions::new();
        if let Some(ca) = &cfg.tls_ca {
            let pem = std::fs::read(ca).map_err(|e| format!("{}: {e}", ca.display()))?;
            tls = tls.ca_certificate(Certificate::from_pem(pem));
        }
        if let (Some(c), Some(k)) = (&cfg.tls_cert, &cfg.tls_key) {
            let cert = std::fs::read(c).map_err(|e| format!("{}: {e}", c.display()))?;
            let key = std::fs::read(k).map_err(|e| format!("{}: {e}", k.display()))?;
            tls = tls.identity(Identity::from_pem(cert, key));
        }
        opts = opts.with_tls(tls);
    }
    let c = tokio::time::timeout(
        REQUEST_TIMEOUT,
        Client::connect(cfg.endpoints.clone(), Some(opts)),
    )
    .await
    .map_err(|_| "connect timed out")??;
    Ok(c)
}

/// Keys per page when getting a prefix (a single response is capped at 4 MiB by gRPC).
const PAGE: i64 = 2000;

/// The end of the key range `dir*` (etcd's prefix range end).
fn prefix_end(dir: &str) -> Vec<u8> {
    let mut end = dir.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// Every key under `dir` at one revision, in pages: (revision, [(key, value)]).
async fn get_all(
    client: &mut Client,
    dir: &str,
) -> Result<(i64, Vec<(String, Vec<u8>)>), BoxError> {
    let end = prefix_end(dir);
    let mut from = dir.as_bytes().to_vec();
    let mut rev = 0i64;
    let mut out = Vec::new();
    loop {
        let mut opts = GetOptions::new().with_range(end.clone()).with_limit(PAGE);
        if rev > 0 {
            opts = opts.with_revision(rev);
        }
        let resp = tokio::time::timeout(REQUEST_TIMEOUT, client.get(from.clone(), Some(opts)))
            .await
            .map_err(|_| "get timed out")??;
        if rev == 0 {
            rev = resp.header().map_or(0, |h| h.revision());
        }
        for kv in resp.kvs() {
            out.push((
                String::from_utf8_lossy(kv.key()).into_owned(),
                kv.value().to_vec(),
            ));
        }
        match (resp.more(), resp.kvs().last()) {
            (true, Some(last)) => {
                from = last.key().to_vec();
                from.push(0);
            }
            _ => return Ok((rev, out)),
        }
    }
}

/// Parses one value into `map` (or drops the key when its value is not valid), logging what
/// was skipped with the key.
fn apply_value(map: &mut Entries, key: &str, value: &[u8], metrics: &Metrics) {
    match skydns::parse_value(value) {
        Ok(e) => {
            map.insert(key.into(), Arc::new(e));
        }
        Err(err) => {
            metrics.etcd_invalid_values.inc();
            tracing::warn!(key, error = %err, "etcd value is not valid SkyDNS JSON; key skipped");
            map.remove(key);
        }
    }
}

enum SessionEnd {
    /// The merger is gone: shutting down.
    Shutdown,
    /// The watch was cancelled by a compaction: get again at once.
    Compacted,
}

struct Reader {
    cfg: EtcdConfig,
    name: String,
    tx: mpsc::Sender<Update>,
    board: SourceBoard,
    metrics: Metrics,
    /// The last copy: kept across lost connections; shared with the snapshots sent (copied on
    /// the first change after a send).
    map: Arc<Entries>,
    /// Dropped by the merger when it took the last snapshot.
    taken: Option<oneshot::Receiver<()>>,
    /// Revision `map` reflects: after a lost connection the watch resumes from the next one
    /// (no new get), unless etcd compacted it away meanwhile.
    rev: Option<i64>,
}

impl Reader {
    /// Waits until a table with the previous snapshot is published.
    async fn served(&mut self) {
        if let Some(rx) = &mut self.taken {
            while let Err(oneshot::error::TryRecvError::Empty) = rx.try_recv() {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    }

    /// Waits until the merger served the previous snapshot, then sends the current map.
    async fn send(&mut self) -> bool {
        self.served().await;
        let (otx, orx) = oneshot::channel();
        self.taken = Some(orx);
        self.metrics.etcd_keys.set(self.map.len() as i64);
        let data = EtcdData {
            prefix: self.cfg.prefix.clone(),
            zones: self.cfg.zones.clone(),
            entries: self.map.clone(),
            wildcards: self.cfg.wildcards,
            axfr: !self.cfg.axfr_allow.is_empty(),
        };
        self.tx
            .send(Update {
                source: self.name.clone(),
                snapshot: Arc::new(Snapshot::Etcd(Box::new(data))),
                taken: Some(otx),
            })
            .await
            .is_ok()
    }

    fn up(&self) {
        self.board.loaded(&self.name);
        self.metrics
            .source_up
            .with_label_values(&[&self.name])
            .set(1);
    }

    fn down(&self, error: &str) {
        self.board.failed(&self.name, format!("etcd: {error}"));
        self.metrics
            .source_up
            .with_label_values(&[&self.name])
            .set(0);
        self.metrics
            .source_errors
            .with_label_values(&[&self.name])
            .inc();
        self.metrics.etcd_reconnects.inc();
    }

    async fn session(&mut self, backoff: &mut Duration) -> Result<SessionEnd, BoxError> {
        let mut client = connect(&self.cfg).await?;
        let dir = format!("{}/", self.cfg.prefix);
        let rev = match self.rev {
            Some(rev) => {
                tracing::info!(source = %self.name, revision = rev, "etcd reconnected; resuming the watch");
                rev
            }
            None => {
                let started = Instant::now();
                let (rev, kvs) = get_all(&mut client, &dir).await?;
                let mut map = BTreeMap::new();
                for (key, value) in kvs {
                    apply_value(&mut map, &key, &value, &self.metrics);
                }
                tracing::info!(
                    source = %self.name,
                    keys = map.len(),
                    revision = rev,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "etcd prefix loaded"
                );
                self.map = Arc::new(map);
                self.rev = Some(rev);
                if !self.send().await {
                    return Ok(SessionEnd::Shutdown);
                }
                // Ready once the copy is being served.
                self.served().await;
                rev
            }
        };
        self.up();
        *backoff = BACKOFF_MIN;

        let mut stream = client
            .watch(
                dir.as_str(),
                Some(
                    WatchOptions::new()
                        .with_prefix()
                        .with_start_revision(rev + 1),
                ),
            )
            .await?;
        let mut dirty = false;
        loop {
            let next = if dirty {
                // Coalesce: take what is already there, then send.
                tokio::time::timeout(Duration::from_millis(1), stream.message())
                    .await
                    .ok()
            } else {
                Some(stream.message().await)
            };
            let Some(msg) = next else {
                dirty = false;
                if !self.send().await {
                    return Ok(SessionEnd::Shutdown);
                }
                continue;
            };
            let Some(msg) = msg? else {
                return Err("etcd closed the watch".into());
            };
            if msg.canceled() {
                if msg.compact_revision() > 0 {
                    tracing::warn!(
                        source = %self.name,
                        compact_revision = msg.compact_revision(),
                        "etcd watch cancelled by compaction; getting the prefix again"
                    );
                    self.rev = None;
                    return Ok(SessionEnd::Compacted);
                }
                return Err(format!("etcd cancelled the watch: {}", msg.cancel_reason()).into());
            }
            for ev in msg.events() {
                let Some(kv) = ev.kv() else { continue };
                self.rev = Some(self.rev.unwrap_or(0).max(kv.mod_revision()));
                let key = String::from_utf8_lossy(kv.key());
                match ev.event_type() {
                    EventType::Put => apply_value(
                        Arc::make_mut(&mut self.map),
                        &key,
                        kv.value(),
                        &self.metrics,
                    ),
                    EventType::Delete => {
                        Arc::make_mut(&mut self.map).remove(&*key);
                    }
                }
                dirty = true;
            }
        }
    }
}

/// Read mode: keeps an in-memory copy of the prefix and sends it to the merger on every change.
pub async fn run_reader(
    cfg: EtcdConfig,
    tx: mpsc::Sender<Update>,
    board: SourceBoard,
    metrics: Metrics,
) {
    let name = source_name(&cfg);
    let mut r = Reader {
        cfg,
        name,
        tx,
        board,
        metrics,
        map: Arc::new(BTreeMap::new()),
        taken: None,
        rev: None,
    };
    let mut backoff = BACKOFF_MIN;
    loop {
        match r.session(&mut backoff).await {
            Ok(SessionEnd::Shutdown) => return,
            Ok(SessionEnd::Compacted) => continue,
            Err(e) => {
                let msg = e.to_string();
                tracing::error!(
                    source = %r.name,
                    error = %msg,
                    retry_in_ms = backoff.as_millis() as u64,
                    keys_kept = r.map.len(),
                    "etcd unreachable or lost; serving the last copy"
                );
                r.down(&msg);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

/// FNV-1a (64 bits) of a value, in hex: the last key segment of a published value.
pub fn value_hash(value: &str) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in value.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{h:016x}")
}

/// The keys and values the publisher wants under the prefix, laid out so that a SkyDNS reader
/// (fedns read mode, or CoreDNS's etcd plugin) answers each federated name as the primary
/// answers a client of unknown location:
///
/// - every value one level below its name's key, with `group` = the name, so a name answers
///   with its own values only (CoreDNS's group rule drops the deeper SRV names' entries from
///   the parent's subtree answer); an address or CNAME target is keyed by its hash, an SRV by
///   the hash of `target:port`;
/// - the name's own key holds one entry too, read by exact-key questions (CNAME): the CNAME
///   target for a CNAME name, else an entry without a host, which every question skips, so
///   CNAME asks get NODATA and a name with no values (a service healthy nowhere) exists: NODATA
///   for every type, never NXDOMAIN;
/// - SRV priority 0 is written as 65536: SkyDNS reads 0 as "unset" (10), and readers convert
///   the stored number to 16 bits as Go does (`uint16(65536)` is 0);
/// - a wildcard name (`*.X`) only with `wildcards` (the readers are fedns with `wildcards:
///   true`); else it is left out and returned.
pub fn desired_keys(
    prefix: &str,
    records: &FederationRecords,
    wildcards: bool,
) -> (BTreeMap<String, String>, Vec<crate::model::DnsName>) {
    let mut out = BTreeMap::new();
    let mut skipped = Vec::new();
    for (name, ttl, values) in &records.records {
        if !wildcards && name.labels().next() == Some(b"*") {
            skipped.push(name.clone());
            continue;
        }
        let group = name.to_string().trim_end_matches('.').to_string();
        let dir = skydns::path_of(name, prefix);
        let own = match values.as_slice() {
            [Published::Host(h)] if h.parse::<std::net::IpAddr>().is_err() => {
                serde_json::json!({"host": h, "ttl": ttl, "group": group})
            }
            _ => serde_json::json!({"ttl": ttl, "group": group}),
        };
        out.insert(dir.clone(), own.to_string());
        for v in values {
            let (key, json) = match v {
                Published::Host(h) => (
                    value_hash(h),
                    serde_json::json!({"host": h, "ttl": ttl, "group": group}),
                ),
                Published::Srv {
                    target,
                    port,
                    priority,
                    weight,
                } => (
                    value_hash(&format!("{target}:{port}")),
                    serde_json::json!({"host": target, "port": port,
                        "priority": if *priority == 0 { 65536 } else { *priority as u32 },
                        "weight": weight, "ttl": ttl, "group": group}),
                ),
            };
            out.insert(format!("{dir}/{key}"), json.to_string());
        }
    }
    (out, skipped)
}

/// Keys under the federation zones that the publisher owns: a name's own key or one level
/// below it, with a `group` equal to that name (the layout it writes).
fn owned(prefix: &str, key: &str, value: &[u8]) -> bool {
    let Ok(e) = skydns::parse_value(value) else {
        return false;
    };
    let is_group = |k: &str| {
        skydns::name_of_key(k, prefix)
            .is_some_and(|n| e.group == n.to_string().trim_end_matches('.'))
    };
    is_group(key) || key.rsplit_once('/').is_some_and(|(dir, _)| is_group(dir))
}

/// Resolves once `stop` is true (or its sender is gone), holding no borrow of it.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Publish mode: campaigns for the election, then keeps etcd equal to the federation records.
/// Returns when `stop` turns true (a reload replaced the publisher), revoking its lease so
/// that its successor is elected at once instead of after the lease TTL; the keys it wrote stay.
pub async fn run_publisher(
    cfg: EtcdConfig,
    mut records: watch::Receiver<Arc<FederationRecords>>,
    metrics: Metrics,
    id: String,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = BACKOFF_MIN;
    loop {
        if stop.borrow().to_owned() {
            return;
        }
        let r = publish_session(&cfg, &mut records, &metrics, &id, &mut backoff, &mut stop).await;
        metrics.etcd_publisher_leader.set(0);
        match r {
            Ok(()) => return,
            Err(e) => {
                metrics.etcd_reconnects.inc();
                tracing::error!(error = %e, retry_in_ms = backoff.as_millis() as u64, "etcd publisher stopped; campaigning again");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stopped(&mut stop) => return,
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

async fn publish_session(
    cfg: &EtcdConfig,
    records: &mut watch::Receiver<Arc<FederationRecords>>,
    metrics: &Metrics,
    id: &str,
    backoff: &mut Duration,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), BoxError> {
    let mut client = connect(cfg).await?;
    let ttl = cfg.lease_ttl_secs;
    let lease = client.lease_grant(ttl, None).await?.id();
    let (mut keeper, mut acks) = client.lease_keep_alive(lease).await?;
    let period = Duration::from_millis((ttl as u64 * 1000 / 3).max(200));
    let mut tick = tokio::time::interval(period);
    let keep_alive = async |keeper: &mut etcd_client::LeaseKeeper,
                            acks: &mut etcd_client::LeaseKeepAliveStream|
           -> Result<(), BoxError> {
        keeper.keep_alive().await?;
        match tokio::time::timeout(REQUEST_TIMEOUT, acks.message()).await {
            Ok(Ok(Some(a))) if a.ttl() > 0 => Ok(()),
            Ok(Ok(_)) => Err("publisher lease expired".into()),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err("lease keep-alive timed out".into()),
        }
    };
    tracing::info!(election = %cfg.election, lease, "etcd publisher campaigning");
    let mut campaign_client = client.clone();
    let campaign = campaign_client.campaign(cfg.election.as_str(), id, lease);
    tokio::pin!(campaign);
    let leader = loop {
        tokio::select! {
            r = &mut campaign => break r?,
            _ = tick.tick() => keep_alive(&mut keeper, &mut acks).await?,
            _ = stopped(stop) => {
                let _ = client.lease_revoke(lease).await;
                return Ok(());
            }
        }
    };
    let leader = leader
        .leader()
        .ok_or("campaign answered without a leader key")?;
    let (leader_key, leader_rev) = (leader.key().to_vec(), leader.rev());
    metrics.etcd_publisher_leader.set(1);
    *backoff = BACKOFF_MIN;
    tracing::info!(election = %cfg.election, "elected etcd publisher");
    // Sync at once, on every new table, and every 30 s (repairs edits made behind our back).
    let mut resync = tokio::time::interval(Duration::from_secs(30));
    let mut pending = true;
    let mut skipped_before = Vec::new();
    loop {
        if pending {
            let want = records.borrow_and_update().clone();
            let skipped = sync(&mut client, cfg, &leader_key, leader_rev, &want, metrics).await?;
            if skipped != skipped_before && !skipped.is_empty() {
                let shown: Vec<String> = skipped.iter().take(5).map(|n| n.to_string()).collect();
                tracing::warn!(
                    wildcards_skipped = skipped.len(),
                    names = %shown.join(","),
                    "wildcard names not published to etcd: CoreDNS's etcd plugin does not answer names below a stored `*` key (`wildcards: true` publishes them for fedns readers with `wildcards: true`)"
                );
            }
            skipped_before = skipped;
            pending = false;
        }
        tokio::select! {
            r = records.changed() => {
                if r.is_err() {
                    let _ = client.lease_revoke(lease).await;
                    return Ok(());
                }
                pending = true;
            }
            _ = tick.tick() => keep_alive(&mut keeper, &mut acks).await?,
            _ = resync.tick() => pending = true,
            _ = stopped(stop) => {
                tracing::info!(election = %cfg.election, "etcd publisher stepping down (config reloaded)");
                let _ = client.lease_revoke(lease).await;
                return Ok(());
            }
        }
    }
}

/// Makes the owned keys under the federation zones equal to `want`: puts what is missing or
/// different, deletes what is no longer wanted, in transactions guarded by the election key.
/// Returns the wildcard names left out ([`desired_keys`]).
async fn sync(
    client: &mut Client,
    cfg: &EtcdConfig,
    leader_key: &[u8],
    leader_rev: i64,
    want: &FederationRecords,
    metrics: &Metrics,
) -> Result<Vec<crate::model::DnsName>, BoxError> {
    let (desired, skipped) = desired_keys(&cfg.prefix, want, cfg.wildcards);
    let mut current: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for zone in &want.zones {
        let dir = format!("{}/", skydns::path_of(zone, &cfg.prefix));
        for (key, value) in get_all(client, &dir).await?.1 {
            if owned(&cfg.prefix, &key, &value) {
                current.insert(key, value);
            }
        }
    }
    let mut ops = Vec::new();
    for (k, v) in &desired {
        if current.get(k).map(|c| c.as_slice()) != Some(v.as_bytes()) {
            ops.push(TxnOp::put(k.as_str(), v.as_str(), None));
        }
    }
    for k in current.keys() {
        if !desired.contains_key(k) {
            ops.push(TxnOp::delete(k.as_str(), None));
        }
    }
    if ops.is_empty() {
        return Ok(skipped);
    }
    let n = ops.len();
    for chunk in ops.chunks(TXN_OPS) {
        let txn = Txn::new()
            .when([Compare::create_revision(
                leader_key.to_vec(),
                CompareOp::Equal,
                leader_rev,
            )])
            .and_then(chunk.to_vec());
        let resp = tokio::time::timeout(REQUEST_TIMEOUT, client.txn(txn))
            .await
            .map_err(|_| "txn timed out")??;
        if !resp.succeeded() {
            return Err("lost the publisher election; not writing".into());
        }
        metrics.etcd_publish_writes.inc_by(chunk.len() as u64);
    }
    tracing::info!(
        changes = n,
        keys = desired.len(),
        wildcards_skipped = skipped.len(),
        "published federation records to etcd"
    );
    Ok(skipped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::DnsName;

    #[test]
    fn wildcard_names_are_laid_out_only_with_wildcards() {
        let name = |n: &str| DnsName::parse(n).unwrap();
        let records = FederationRecords {
            zones: vec![name("example.com.")],
            records: vec![
                (
                    name("*.apps.example.com."),
                    60,
                    vec![Published::Host("192.0.2.10".into())],
                ),
                (
                    name("web.apps.example.com."),
                    60,
                    vec![Published::Host("192.0.2.20".into())],
                ),
            ],
        };
        let (keys, skipped) = desired_keys("/skydns", &records, false);
        assert_eq!(skipped, vec![name("*.apps.example.com.")]);
        assert!(keys.keys().all(|k| !k.contains("/*")), "{keys:?}");
        assert!(
            keys.contains_key("/skydns/com/example/apps/web"),
            "{keys:?}"
        );
        let (keys, skipped) = desired_keys("/skydns", &records, true);
        assert!(skipped.is_empty());
        assert!(keys.contains_key("/skydns/com/example/apps/*"), "{keys:?}");
        assert_eq!(keys.len(), 4, "{keys:?}");
    }
}
