#!/usr/bin/env bash
# bench/soak.sh [SECONDS] — a soak run of the release binary under a mixed load (not run in CI).
#
# For SECONDS (default 600) on loopback:
#   - dnsperf over UDP at UDP_QPS (default 2000) from 127.0.0.1 (exempt from RRL),
#   - dnsperf over TCP at TCP_QPS (default 200), 20 connections,
#   - 1 % of UDP_QPS malformed packets (random bytes, cut queries, bad compression pointers,
#     OPT in the answer section, TSIG) plus a burst of repeated ANY queries every second from
#     127.0.0.5, which RRL (on, 20 responses/s) limits and slips.
# Every 30 s it prints resident memory and the counters (RRL limited/slipped, dropped, kernel
# drops, TCP connections); at the end dnsperf's loss for UDP and TCP. Everything it starts is
# stopped by PID; all load stops by itself after SECONDS.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-600}
UDP_QPS=${UDP_QPS:-2000}
TCP_QPS=${TCP_QPS:-200}
PORT=${PORT:-5312}
HTTP=${HTTP:-8312}
WORK=${BENCH_WORK:-${TMPDIR:-/tmp}/dnsbench}/soak
mkdir -p "$WORK/zones"
command -v dnsperf >/dev/null || { echo "dnsperf is needed (apt-get install dnsperf)" >&2; exit 1; }
cargo build --release --locked -q

cp zones/example.com.zone "$WORK/zones/"
cp config/federation.yaml "$WORK/"
cat >"$WORK/fedns.yaml" <<YAML
listen: ["127.0.0.1:$PORT"]
http: "127.0.0.1:$HTTP"
workers: 2
zones_dir: zones
state_dir: state
federation_files: [federation.yaml]
rrl:
  responses_per_second: 20
  slip: 2
  exempt: [127.0.0.1/32]
YAML
python3 - "$WORK/queries.txt" <<'PY'
import sys
names = ["checkout.shop.myfed.svc.example.com A", "checkout.shop.myfed.svc.example.com AAAA",
         "catalog.shop.myfed.svc.example.com A", "_http._tcp.checkout.shop.myfed.svc.example.com SRV",
         "www.example.com A", "example.com MX", "example.com NS", "nothing.example.com A",
         "payments.billing.myfed.svc.example.com A", "example.net A"]
with open(sys.argv[1], "w") as f:
    for i in range(10000):
        f.write(names[i % len(names)] + "\n")
PY

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

target/release/fedns serve --config "$WORK/fedns.yaml" 2>"$WORK/fedns.log" &
fedns=$!
pids+=("$fedns")
for _ in $(seq 100); do
  kdig +time=1 +retry=0 @127.0.0.1 -p "$PORT" example.com SOA 2>/dev/null | grep -q NOERROR && break
  sleep 0.2
done

timeout $((SECS + 30)) dnsperf -s 127.0.0.1 -p "$PORT" -d "$WORK/queries.txt" -l "$SECS" -Q "$UDP_QPS" \
  -c 4 -t 2 >"$WORK/udp.txt" 2>&1 &
pids+=($!)
timeout $((SECS + 30)) dnsperf -m tcp -s 127.0.0.1 -p "$PORT" -d "$WORK/queries.txt" -l "$SECS" \
  -Q "$TCP_QPS" -c 20 -t 2 >"$WORK/tcp.txt" 2>&1 &
pids+=($!)
timeout $((SECS + 30)) python3 - "$PORT" "$SECS" "$UDP_QPS" <<'PY' >"$WORK/abuse.txt" 2>&1 &
import random, socket, struct, sys, time
port, secs, qps = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(7)
def name(n):
    return b"".join(bytes([len(l)]) + l.encode() for l in n.strip(".").split(".")) + b"\0"
def query(i, n, t=1, an=0, ar=0, tail=b""):
    return struct.pack(">HHHHHH", i & 0xffff, 0x0100, 1, an, 0, ar) + name(n) + struct.pack(">HH", t, 1) + tail
G = "checkout.shop.myfed.svc.example.com."
def malformed(i):
    k = i % 5
    if k == 0:
        return bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 80)))
    if k == 1:
        q = query(i, G)
        return q[: rng.randrange(12, len(q))]
    if k == 2:
        return query(i, G, ar=1, tail=b"\xc0" + bytes([rng.randrange(12, 60)]) + struct.pack(">HHIH", 1, 1, 0, 4) + b"\1\2\3\4")
    if k == 3:
        return query(i, G, an=1, tail=b"\0" + struct.pack(">HHIH", 41, 1232, 0, 0))
    rd = name("hmac-sha256.") + b"\0\0\x65\0\0\0" + struct.pack(">HH", 300, 0) + struct.pack(">HHH", i & 0xffff, 0, 0)
    return query(i, G, ar=1, tail=name("k.") + struct.pack(">HHIH", 250, 255, 0, len(rd)) + rd)
bad = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); bad.bind(("127.0.0.1", 0)); bad.setblocking(False)
amp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); amp.bind(("127.0.0.5", 0)); amp.setblocking(False)
rate = max(1, qps // 100)
end, sent, i = time.time() + secs, 0, 0
while time.time() < end:
    t0 = time.time()
    for _ in range(rate):
        try: bad.sendto(malformed(i), ("127.0.0.1", port)); sent += 1
        except OSError: pass
        i += 1
    for _ in range(100):
        try: amp.sendto(query(i, "example.com.", 255), ("127.0.0.1", port))
        except OSError: pass
        i += 1
    for s in (bad, amp):
        try:
            while s.recv(4096): pass
        except OSError: pass
    time.sleep(max(0, 1 - (time.time() - t0)))
print(f"malformed sent: {sent}")
PY
pids+=($!)

metric() { grep -E "^$1 " <<<"$2" | awk '{print $2}' | head -1; }
echo "date: $(date -u +%FT%TZ) cpus: $(nproc) load: $(cut -d' ' -f1-3 /proc/loadavg) udp_qps: $UDP_QPS tcp_qps: $TCP_QPS"
printf 't_s\trss_kib\trrl_limited\trrl_slipped\tdropped\tkernel_drops\ttcp_conns\tload1\n'
start=$(date +%s)
while :; do
  now=$(( $(date +%s) - start ))
  m=$(curl -s "http://127.0.0.1:$HTTP/metrics" || true)
  rss=$(awk '/VmRSS/ {print $2}' "/proc/$fedns/status")
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$now" "$rss" "$(metric fedns_rrl_limited_total "$m")" \
    "$(metric fedns_rrl_slipped_total "$m")" "$(metric fedns_dropped_total "$m")" \
    "$(metric fedns_udp_kernel_drops_total "$m")" "$(metric fedns_tcp_connections "$m")" \
    "$(cut -d' ' -f1 /proc/loadavg)"
  [ "$now" -ge "$((SECS + 5))" ] && break
  sleep $(( now + 30 > SECS + 5 ? SECS + 5 - now : 30 ))
done
wait "${pids[@]:1}" 2>/dev/null || true
for t in udp tcp; do
  printf '%s: ' "$t"
  awk '/Queries sent/ {s=$3} /Queries completed/ {c=$3} /Queries lost/ {l=$3}
       END {printf "sent %s completed %s lost %s (%.3f%%)\n", s, c, l, s ? 100*l/s : 0}' "$WORK/$t.txt"
done
cat "$WORK/abuse.txt"
kill -0 "$fedns" 2>/dev/null && echo "fedns still running" || { echo "fedns DIED"; tail "$WORK/fedns.log"; exit 1; }
