//! Background resolution of load-balancer hostnames (AWS ELBs report a name, not an address),
//! shared by the Kubernetes source and federation files. Never called on the query path: a
//! source resolves in a spawned task and lays the addresses into its next snapshot.

use std::net::IpAddr;
use std::time::Duration;

/// How long one lookup may take before the host keeps its last addresses.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// The addresses `host` resolves to (sorted, deduplicated), or `None` when the lookup fails or
/// times out (logged as a warning naming `what`: the caller keeps the host's last addresses).
pub async fn lookup(host: &str, what: &str) -> Option<Vec<IpAddr>> {
    let looked = tokio::time::timeout(TIMEOUT, tokio::net::lookup_host((host, 0u16))).await;
    match looked {
        Ok(Ok(addrs)) => {
            let mut v: Vec<IpAddr> = addrs.map(|a| a.ip()).collect();
            v.sort();
            v.dedup();
            Some(v)
        }
        Ok(Err(e)) => {
            tracing::warn!(host = %host, source = what, error = %e, "cannot resolve load-balancer hostname; keeping its last addresses");
            None
        }
        Err(_) => {
            tracing::warn!(host = %host, source = what, "resolving load-balancer hostname timed out; keeping its last addresses");
            None
        }
    }
}
