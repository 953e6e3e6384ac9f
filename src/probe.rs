//! Active health probes (DESIGN §3): TCP connect or HTTP GET against each shard's load-balancer
//! addresses, on their own tasks, never on the query path.
//!
//! The prober is a source like any other: it reads the shards of the federations the merger
//! last published, probes the ones a rule matches, and sends the merger a complete snapshot of
//! verdicts whenever a shard changes state. Up/down thresholds keep a flapping target from
//! flapping the answer. A shard is up while at least one of its addresses passes; a shard with
//! no result yet counts as up, so starting fedns never empties an answer.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::model::Federation;
use crate::server::Shared;
use crate::sources::{Snapshot, Update};

/// Which shard a verdict is about: (federation, namespace, service, cluster).
pub type ShardKey = (String, String, String, String);

/// Shard → up (true) or down (false). Shards without an entry are unprobed.
pub type Verdicts = BTreeMap<ShardKey, bool>;

#[derive(Clone, Debug, PartialEq)]
pub enum Check {
    Tcp,
    Http { path: String, expect_status: u16 },
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
}

pub const SOURCE: &str = "probes";

/// Runs the prober until the merger goes away.
pub async fn run(rules: Vec<Rule>, shared: Arc<Shared>, tx: mpsc::Sender<Update>) {
    let (results_tx, mut results) = mpsc::channel::<(Target, bool)>(1024);
    let mut tasks: HashMap<Target, (Rule, JoinHandle<()>)> = HashMap::new();
    let mut states: HashMap<Target, TargetState> = HashMap::new();
    let mut sent: Option<Verdicts> = None;
    let mut reconcile = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = reconcile.tick() => {
                let wanted = targets(&rules, &shared.federations.load());
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
            Some((target, ok)) = results.recv() => {
                let Some((rule, _)) = tasks.get(&target) else { continue };
                let st = states.entry(target.clone()).or_default();
                if ok {
                    st.successes += 1;
                    st.failures = 0;
                    if st.successes >= rule.up_after && st.up != Some(true) {
                        st.up = Some(true);
                        tracing::info!(shard = ?target.shard, addr = %target.addr, "probe up");
                    }
                } else {
                    st.failures += 1;
                    st.successes = 0;
                    if st.failures >= rule.down_after && st.up != Some(false) {
                        st.up = Some(false);
                        tracing::warn!(shard = ?target.shard, addr = %target.addr, "probe down");
                    }
                }
            }
        }
        // A shard is up while any of its addresses is (or is still undecided).
        let mut verdicts = Verdicts::new();
        for t in tasks.keys() {
            let up = states.get(t).and_then(|s| s.up).unwrap_or(true);
            *verdicts.entry(t.shard.clone()).or_insert(false) |= up;
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

async fn probe_loop(target: Target, rule: Rule, results: mpsc::Sender<(Target, bool)>) {
    let mut tick = tokio::time::interval(rule.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let ok = tokio::time::timeout(rule.timeout, probe_once(target.addr, &rule.check))
            .await
            .unwrap_or(false);
        if results.send((target.clone(), ok)).await.is_err() {
            return;
        }
    }
}

async fn probe_once(addr: SocketAddr, check: &Check) -> bool {
    let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else {
        return false;
    };
    match check {
        Check::Tcp => true,
        Check::Http {
            path,
            expect_status,
        } => {
            let req = format!(
                "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: fedns-probe\r\nConnection: close\r\n\r\n"
            );
            if stream.write_all(req.as_bytes()).await.is_err() {
                return false;
            }
            // The status line is all we need: `HTTP/1.1 200 OK`.
            let mut buf = [0u8; 64];
            let mut len = 0;
            while len < buf.len() {
                match stream.read(&mut buf[len..]).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => len += n,
                }
                if buf[..len].contains(&b'\n') {
                    break;
                }
            }
            let line = String::from_utf8_lossy(&buf[..len]);
            line.split_whitespace()
                .nth(1)
                .and_then(|c| c.parse::<u16>().ok())
                == Some(*expect_status)
        }
    }
}
