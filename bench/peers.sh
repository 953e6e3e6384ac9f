#!/usr/bin/env bash
# bench/peers.sh [SECONDS] — fedns side by side with Knot and NSD (and whatever SERVERS lists)
# using the shared dnsperf harness (../shared/bench, or $PEER_BENCH).
#
# Loads the harness's generated zone (example.com., ~13k RRs) into a release build of fedns,
# pins it like the harness pins its peers (pinned mode: CPU 1, one worker), runs
# run-peers.sh with ours=127.0.0.1:$PORT, and stops fedns by PID. Needs dnsperf, knot, nsd,
# knot-dnsutils (kdig): apt-get install -y dnsperf knot knot-dnsutils nsd.
#
#   bench/peers.sh 10                       # knot, nsd, fedns: pinned, 3 runs x 10 s
#   SERVERS="null64 knot nsd" bench/peers.sh 10
#   QUERIES=/tmp/dnsbench/data/queries-positive.txt bench/peers.sh 10
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-10}
HARNESS=${PEER_BENCH:-$(cd ../shared/bench && pwd)}
WORK=${BENCH_WORK:-${TMPDIR:-/tmp}/dnsbench}
PORT=${PORT:-5310}
export SERVERS=${SERVERS:-"knot nsd"} MODES=${MODES:-pinned} BENCH_WORK=$WORK

[ -s "$WORK/data/example.com.zone" ] || python3 "$HARNESS/gen-data.py" "$WORK/data"
cargo build --release --locked -q
run=$WORK/run-fedns
rm -rf "$run" && mkdir -p "$run"
cat >"$run/fedns.yaml" <<CONF
listen: ["127.0.0.1:$PORT"]
http: "127.0.0.1:0"
workers: 1
zones_dir: $WORK/data
CONF
taskset -c "${SERVER_CPU:-1}" nice -n "${NICE:--10}" target/release/fedns serve --config "$run/fedns.yaml" 2>"$run/fedns.log" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  kdig +time=1 +retry=0 @127.0.0.1 -p "$PORT" ns1.example.com A 2>/dev/null | grep -q 'status: NOERROR' && break
  kill -0 $pid || { cat "$run/fedns.log"; exit 1; }
  sleep 0.2
done
"$HARNESS/run-peers.sh" "$SECS" "fedns=127.0.0.1:$PORT"
