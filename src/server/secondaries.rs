//! NOTIFY (RFC 1996) to the configured secondaries after every publish: one message per zone
//! and secondary over UDP, retried (1 s, then doubling, five tries) until the secondary
//! answers, signed with the transfer TSIG key when one is set. Publishes that come while a round is under way are coalesced into the next round,
//! which carries the newest serial. Outcomes are counted per secondary (`fedns_notify_total`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;

use super::Shared;
use crate::dns::transfer::{is_notify_ack, notify_message, notify_zones};
use crate::model::DnsName;

const TRIES: u32 = 5;
const FIRST_WAIT: Duration = Duration::from_secs(1);

/// Runs until `shared.published` closes. The secondaries and the key are read from the current
/// settings at every round, so a reload changes them from the next publish on.
pub async fn run(shared: Arc<Shared>) {
    let mut published = shared.published.subscribe();
    let mut id: u16 = rand_id();
    let mut counted: Vec<SocketAddr> = Vec::new();
    loop {
        // Counters exist from the start for every configured secondary.
        for s in &shared.settings.load().notify {
            if !counted.contains(s) {
                counted.push(*s);
                for result in ["acked", "failed"] {
                    shared
                        .metrics
                        .notify
                        .with_label_values(&[&s.to_string(), result]);
                }
            }
        }
        if published.changed().await.is_err() {
            return;
        }
        let settings = shared.settings.load_full();
        let secondaries = settings.notify.clone();
        if secondaries.is_empty() {
            continue;
        }
        let table = shared.table.load_full();
        if !table.is_ready() {
            continue;
        }
        let zones = match tokio::task::spawn_blocking(move || notify_zones(&table)).await {
            Ok(z) => z,
            Err(_) => continue,
        };
        let mut round = tokio::task::JoinSet::new();
        for &secondary in &secondaries {
            for (zone, soa) in &zones {
                id = id.wrapping_add(1);
                let (zone, soa, shared) = (zone.clone(), soa.clone(), shared.clone());
                let mut msg = notify_message(id, &zone, soa.as_deref());
                if let Some(key) = &settings.transfer_key {
                    crate::dns::tsig::sign_request(&mut msg, key, crate::dns::tsig::now());
                }
                round.spawn(async move {
                    let acked = notify_one(secondary, &zone, &msg, id).await;
                    let result = if acked { "acked" } else { "failed" };
                    shared
                        .metrics
                        .notify
                        .with_label_values(&[&secondary.to_string(), result])
                        .inc();
                });
            }
        }
        while round.join_next().await.is_some() {}
    }
}

fn rand_id() -> u16 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.subsec_nanos() as u16)
}

async fn notify_one(secondary: SocketAddr, zone: &DnsName, msg: &[u8], id: u16) -> bool {
    let bind: SocketAddr = if secondary.is_ipv4() {
        "0.0.0.0:0".parse().expect("address")
    } else {
        "[::]:0".parse().expect("address")
    };
    let sock = match UdpSocket::bind(bind).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(%secondary, error = %e, "cannot open a socket for NOTIFY");
            return false;
        }
    };
    let mut wait = FIRST_WAIT;
    let mut buf = [0u8; 512];
    for _ in 0..TRIES {
        if sock.send_to(msg, secondary).await.is_err() {
            tokio::time::sleep(wait).await;
        } else {
            let deadline = tokio::time::Instant::now() + wait;
            while let Ok(Ok((n, from))) =
                tokio::time::timeout_at(deadline, sock.recv_from(&mut buf)).await
            {
                if from == secondary && is_notify_ack(&buf[..n], id) {
                    tracing::debug!(%secondary, zone = %zone, "NOTIFY acknowledged");
                    return true;
                }
            }
        }
        wait *= 2;
    }
    tracing::warn!(%secondary, zone = %zone, tries = TRIES, "NOTIFY not acknowledged");
    false
}
