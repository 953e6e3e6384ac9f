#!/usr/bin/env bash
# etcd read mode: load time and memory for N keys (default 100000) and put → answer latency over
# P puts (default 200). Needs etcd (Debian etcd-server; ./scripts/test installs it).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --bin fedns --example etcd_bench
exec target/release/examples/etcd_bench "${1:-100000}" "${2:-200}"
