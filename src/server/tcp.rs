//! TCP serving (RFC 7766): length-framed queries, several per connection answered in order, an
//! idle timeout, and a cap on open connections (connections over the cap are closed at once).

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use super::Shared;
use crate::dns::respond::{Peer, Transport, WorkerState, respond};
use crate::metrics::QueryStats;

#[derive(Clone, Copy, Debug)]
pub struct TcpLimits {
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    stats: Arc<QueryStats>,
    limits: TcpLimits,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    // Each connection starts its rotation one further than the last, so that clients opening a
    // connection per query (resolvers retrying after TC=1) still see rotated answers.
    let mut next_rotation = 0usize;
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(error = %e, "tcp accept failed");
                // Out of descriptors and similar: back off instead of spinning.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "tcp connection cap reached; closing");
            drop(stream);
            continue;
        };
        let (shared, stats) = (shared.clone(), stats.clone());
        let state = WorkerState::starting_at(next_rotation);
        next_rotation = next_rotation.wrapping_add(1);
        tokio::spawn(async move {
            connection(stream, peer, &shared, &stats, state, limits.idle_timeout).await;
            drop(permit);
        });
    }
}

async fn connection(
    stream: TcpStream,
    peer: std::net::SocketAddr,
    shared: &Shared,
    stats: &QueryStats,
    mut state: WorkerState,
    idle: Duration,
) {
    let _ = stream.set_nodelay(true);
    let peer = Peer {
        addr: peer.ip().to_canonical(),
        transport: Transport::Tcp,
    };
    let (rd, mut wr) = stream.into_split();
    let mut rd = BufReader::new(rd);
    let mut req = vec![0u8; u16::MAX as usize];
    let mut resp = vec![0u8; u16::MAX as usize + 2];
    loop {
        let len = match tokio::time::timeout(idle, rd.read_u16()).await {
            Ok(Ok(len)) => len as usize,
            _ => return, // idle, closed or broken
        };
        match tokio::time::timeout(idle, rd.read_exact(&mut req[..len])).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
        if len < 12 || req[2] & 0x80 != 0 {
            // Shorter than a header, or a response: not a DNS client; close at once.
            stats.dropped();
            return;
        }
        if !shared.axfr_allow.is_empty() {
            let transfer = {
                let table = shared.table.load();
                crate::dns::axfr::answer(&table, &req[..len], peer.addr, &shared.axfr_allow)
            };
            if let Some(messages) = transfer {
                for m in messages {
                    let mut framed = (m.len() as u16).to_be_bytes().to_vec();
                    framed.extend_from_slice(&m);
                    if !matches!(
                        tokio::time::timeout(idle, wr.write_all(&framed)).await,
                        Ok(Ok(()))
                    ) {
                        return;
                    }
                }
                continue;
            }
        }
        let answered = {
            let table = shared.table.load();
            respond(
                shared.source(&table),
                &req[..len],
                &mut resp[2..],
                peer,
                &mut state,
                stats,
            )
        };
        let Some(rlen) = answered else { continue };
        resp[..2].copy_from_slice(&(rlen as u16).to_be_bytes());
        if !matches!(
            tokio::time::timeout(idle, wr.write_all(&resp[..rlen + 2])).await,
            Ok(Ok(()))
        ) {
            return;
        }
    }
}
