#!/usr/bin/env bash
# bench/geo.sh [SECONDS] — cost of geo answers on the query path, side by side in one run.
#
# Generates a federation of 1,000 services over 6 clusters in 3 regions and a config with 300
# client networks, then measures fedns (release, pinned to CPU 1, one worker) with dnsperf
# (pinned to CPU 0, same settings as ../shared/bench: -c 8 -q 100 closed loop) on global names:
#   all        policy all, no ECS                 (the answer does not depend on the client)
#   geo-src    policy geo, no ECS                 (location from the source address: unknown)
#   geo-ecs    policy geo, ECS 10.1.x.0/24        (location from ECS, echoed with its scope)
# and prints QPS and server CPU per query (srv_us/q) for each, RUNS runs, medians.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-10}
RUNS=${RUNS:-3}
PORT=${PORT:-5311}
NICE=${NICE:--10}
WORK=${BENCH_WORK:-${TMPDIR:-/tmp}/dnsbench}/geo
mkdir -p "$WORK"
cargo build --release --locked -q

python3 - "$WORK" <<'PY'
import sys, os
out = sys.argv[1]
regions = ["us-east1", "us-west1", "eu-west1"]
coords = {"us-east1": (33.2, -80.0), "us-west1": (45.6, -121.2), "eu-west1": (53.3, -6.3)}
for policy in ["all", "geo"]:
    lines = ["federation:", "  name: fed", "  zone: example.com", f"  policy: {policy}", "clusters:"]
    for i, r in enumerate(regions):
        for z in "ab":
            lines.append(f"  - {{name: {r}-{z}, region: {r}, zones: [{r}-{z}]}}")
    lines.append("services:")
    for s in range(1000):
        lines.append(f"  - name: svc{s}\n    namespace: ns{s % 10}\n    shards:")
        for i, r in enumerate(regions):
            for k, z in enumerate("ab"):
                lines.append(f"      - {{cluster: {r}-{z}, addresses: [198.{18 + k}.{s >> 8}.{(s & 255)}], ready_endpoints: {1 if (s + i + k) % 5 else 0}}}")
    open(os.path.join(out, f"fed-{policy}.yaml"), "w").write("\n".join(lines) + "\n")
    nets = "\n".join(f"    - {{cidr: 10.{n % 3}.{n // 3}.0/24, region: {regions[n % 3]}}}" for n in range(300))
    reg = "\n".join(f"    - {{name: {r}, lat: {coords[r][0]}, lon: {coords[r][1]}}}" for r in regions)
    open(os.path.join(out, f"fedns-{policy}.yaml"), "w").write(
        f'listen: ["127.0.0.1:PORT"]\nhttp: "127.0.0.1:0"\nworkers: 1\nzones_dir: zones\nstate_dir: state-{policy}\n'
        f"federation_files: [fed-{policy}.yaml]\ngeo:\n  ecs: true\n  regions:\n{reg}\n  client_networks:\n{nets}\n")
os.makedirs(os.path.join(out, "zones"), exist_ok=True)
open(os.path.join(out, "zones", "example.com.zone"), "w").write(
    "$TTL 3600\n@ IN SOA ns1 hostmaster 1 3600 600 86400 30\n@ IN NS ns1\nns1 IN A 127.0.0.1\n")
x = 12345
with open(os.path.join(out, "queries.txt"), "w") as f:
    for n in range(100000):
        x = (x * 1103515245 + 12345) % (1 << 31)
        f.write(f"svc{x % 1000}.ns{x % 1000 % 10}.fed.svc.example.com A\n")
PY

cpu_ticks() { awk '{ sub(/.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"; }
run() {  # name policy [dnsperf args]
  local name=$1 policy=$2; shift 2
  sed "s/PORT/$PORT/" "$WORK/fedns-$policy.yaml" >"$WORK/run-$name.yaml"
  taskset -c 1 nice -n "$NICE" target/release/fedns serve --config "$WORK/run-$name.yaml" 2>"$WORK/$name.log" &
  local pid=$!
  for _ in $(seq 100); do
    kdig +time=1 +retry=0 @127.0.0.1 -p "$PORT" ns1.example.com A 2>/dev/null | grep -q NOERROR && break
    sleep 0.2
  done
  timeout 30 taskset -c 0 dnsperf -s 127.0.0.1 -p "$PORT" -d "$WORK/queries.txt" -l 2 -c 8 -q 100 "$@" >/dev/null 2>&1 || true
  for i in $(seq "$RUNS"); do
    local c0 t0 c1 t1
    c0=$(cpu_ticks $pid); t0=$(date +%s.%N)
    timeout $((SECS + 15)) nice -n "$NICE" taskset -c 0 dnsperf -s 127.0.0.1 -p "$PORT" -d "$WORK/queries.txt" \
      -l "$SECS" -c 8 -T 1 -q 100 -t 2 "$@" >"$WORK/$name.run$i.txt" 2>&1 || true
    c1=$(cpu_ticks $pid); t1=$(date +%s.%N)
    awk -v n="$name" -v c=$((c1 - c0)) -v hz="$(getconf CLK_TCK)" -v dt="$(echo "$t1 - $t0" | bc)" '
      /Queries per second/ { q = $4 } /Average packet size/ { sz = $NF }
      END { printf "%s\t%.0f\t%.1f\t%.2f\t%s\n", n, q, 100 * c / hz / dt, (c / hz) * 1e6 / (q * dt), sz }' "$WORK/$name.run$i.txt"
  done
  kill $pid; wait $pid 2>/dev/null || true
}
{
  echo "date: $(date -u +%FT%TZ) cpus: $(nproc) load: $(cut -d' ' -f1-3 /proc/loadavg)"
  printf 'name\tQPS\tsrvCPU%%\tsrv_us/q\tresp_size\n'
  run all all
  run geo-src geo
  run geo-ecs geo -E 8:000118000a0100
} | tee "$WORK/results.tsv"
