#!/usr/bin/env bash
# Propagation benchmark for the Kubernetes source: time from an EndpointSlice change on a test
# API server to the first changed DNS answer from a real fedns (release build), p50/p99 over
# 100 changes. Extra arguments go to the program, e.g. `--services 10000` for scale and memory.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bin fedns --example kube_propagation
exec target/release/examples/kube_propagation --fedns target/release/fedns "$@"
