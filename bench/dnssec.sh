#!/usr/bin/env bash
# bench/dnssec.sh [SECONDS] [RUNS] — what signing costs the query path, side by side in one run:
# the shared harness's zone (example.com., ~13k RRs, ../shared/bench/gen-data.py) served by a
# release fedns unsigned and by one signing it (ECDSA P-256), asked with dnsperf without and
# with DO=1 (-D), and names that do not exist with DO=1 (compact denial, signed per query).
# Server pinned to CPU 1 with one worker, dnsperf to CPU 0, both at nice -10, loopback only;
# every run is bounded by dnsperf -l and timeout; both servers are stopped by PID.
# Prints qps and srv_us/q (server CPU time per answered query, from /proc) per row, and the
# signed server's first build time (build_ms) next to the unsigned one's.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-10}
RUNS=${2:-2}
HARNESS=${PEER_BENCH:-$(cd ../shared/bench && pwd)}
WORK=${BENCH_WORK:-${TMPDIR:-/tmp}/dnsbench}
[ -s "$WORK/data/example.com.zone" ] || python3 "$HARNESS/gen-data.py" "$WORK/data"
cargo build --release --locked -q
run=$WORK/run-dnssec
rm -rf "$run" && mkdir -p "$run/keys"
for i in $(seq 1 20000); do echo "nx$i.example.com A"; done >"$run/queries-nx.txt"
start() { # name port extra-config
  cat >"$run/$1.yaml" <<CONF
listen: ["127.0.0.1:$2"]
http: "127.0.0.1:0"
workers: 1
zones_dir: $WORK/data
state_dir: $run/state-$1
$3
CONF
  taskset -c 1 nice -n -10 target/release/fedns serve --config "$run/$1.yaml" 2>"$run/$1.log" &
  echo $! >"$run/$1.pid"
  for _ in $(seq 200); do
    kdig +time=1 +retry=0 @127.0.0.1 -p "$2" ns1.example.com A 2>/dev/null | grep -q 'status: NOERROR' && return
    sleep 0.2
  done
  cat "$run/$1.log"; exit 1
}
stop_all() { for p in "$run"/*.pid; do kill "$(cat "$p")" 2>/dev/null || true; done; }
trap stop_all EXIT
start plain 5320 ""
start signed 5321 "dnssec: {zones: [example.com], keys_dir: $run/keys}"
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
row() { # label port queries [dnsperf flags]
  local label=$1 port=$2 queries=$3; shift 3
  local pid; pid=$(cat "$run/$([ "$port" = 5320 ] && echo plain || echo signed).pid")
  timeout 20 taskset -c 0 nice -n -10 dnsperf -s 127.0.0.1 -p "$port" -d "$queries" -l 2 -c 8 -q 100 -t 2 "$@" >/dev/null 2>&1 || true
  for r in $(seq "$RUNS"); do
    local t0; t0=$(cpu_ticks "$pid")
    local out; out=$(timeout $((SECS + 15)) taskset -c 0 nice -n -10 dnsperf -s 127.0.0.1 -p "$port" -d "$queries" -l "$SECS" -c 8 -q 100 -t 2 "$@" 2>&1)
    local t1; t1=$(cpu_ticks "$pid")
    local done_q qps
    done_q=$(echo "$out" | awk '/Queries completed:/ {print $3}')
    qps=$(echo "$out" | awk '/Queries per second:/ {print $4}')
    awk -v l="$label" -v r="$r" -v q="$done_q" -v qps="$qps" -v d=$((t1 - t0)) -v hz="$hz" \
      'BEGIN { printf "%-34s run %d  qps %9.0f  srv_us/q %6.2f  answered %d\n", l, r, qps, (q > 0 ? d / hz * 1e6 / q : 0), q }'
  done
}
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg); ${SECS}s x $RUNS runs; $(nproc) cpus"
P=$WORK/data/queries-positive.txt  # names that exist: nothing signed per query
row "unsigned, DO=0" 5320 "$P"
row "signed, DO=0" 5321 "$P"
row "unsigned, DO=1" 5320 "$P" -D
row "signed, DO=1" 5321 "$P" -D
row "signed, DO=1, names that do not exist" 5321 "$run/queries-nx.txt" -D
row "unsigned, names that do not exist" 5320 "$run/queries-nx.txt" -D
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
for n in plain signed; do
  echo "$n: $(grep -m1 'published answer table' "$run/$n.log" | grep -o 'names=[0-9]* records=[0-9]*.*build_ms=[0-9.]*')"
  echo "$n: RSS $(awk '/VmRSS/ {print $2, $3}' "/proc/$(cat "$run/$n.pid")/status")"
done
