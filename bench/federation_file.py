#!/usr/bin/env python3
"""Federation-file benchmark: a file of CLUSTERS clusters (one region each) × SERVICES services
(every service in every cluster, two ports), served by a real `fedns serve` (release build);
flips one shard's `ready_endpoints` by rewriting the file and measures, over the DNS wire, the
time from the rename to the first answer that shows it. Prints start → first answer, RSS, and
change → answer p50/p99.

    bench/federation_file.py [--clusters 10] [--services 10000] [--changes 20] [--fedns PATH]
                             [--wrap 'heaptrack -o /tmp/ht/fedns'] [--transfers] [--dnssec]

Loopback only; stops the fedns it started (SIGTERM to its own process group).
"""
import argparse
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time


def query(sock, addr, name, qid):
    """Number of A records in the answer for NAME (None on timeout)."""
    q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for label in name.rstrip(".").split("."):
        q += bytes([len(label)]) + label.encode()
    q += b"\x00" + struct.pack(">HH", 1, 1)
    sock.sendto(q, addr)
    while True:
        try:
            data, _ = sock.recvfrom(65535)
        except socket.timeout:
            return None
        rid, _, _, an, _, _ = struct.unpack(">HHHHHH", data[:12])
        if rid == qid:
            return an


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def federation(clusters, services, ready):
    """The federation file; `ready[c]` is the checkout shard's ready count in cluster c."""
    out = ["federation:\n  name: myfed\n  zone: example.com\n  ttl: 30\n  max_answers: 64\n"
           "  policy: all\nclusters:\n"]
    for c in range(clusters):
        out.append(f"  - {{name: c{c}, region: region-{c}, zones: [zone-{c}]}}\n")
    out.append("services:\n")
    for i in range(services + 1):
        name, ns = ("checkout", "shop") if i == 0 else (f"svc-{i}", "load")
        out.append(f"  - name: {name}\n    namespace: {ns}\n    ports:\n"
                   "      - {name: http, protocol: TCP, port: 80}\n"
                   "      - {name: grpc, protocol: TCP, port: 9090}\n    shards:\n")
        for c in range(clusters):
            r = ready[c] if i == 0 else 1
            ip = f"10.{c}.{(i >> 8) & 255}.{i & 255}"
            out.append(f"      - {{cluster: c{c}, addresses: [{ip}], ready_endpoints: {r}}}\n")
    return "".join(out)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--clusters", type=int, default=10)
    p.add_argument("--services", type=int, default=10000)
    p.add_argument("--changes", type=int, default=20)
    p.add_argument("--fedns", default="target/release/fedns")
    p.add_argument("--wrap", default="", help="command to run fedns under (e.g. heaptrack)")
    p.add_argument("--transfers", action="store_true",
                   help="allow transfers from loopback and time an AXFR and an IXFR (kdig)")
    p.add_argument("--dnssec", action="store_true",
                   help="sign the zone (ECDSA P-256, key generated into the temp dir)")
    a = p.parse_args()

    d = tempfile.mkdtemp(prefix="fedns-fedfile-")
    os.makedirs(f"{d}/zones")
    with open(f"{d}/zones/example.com.zone", "w") as f:
        f.write("$ORIGIN example.com.\n$TTL 3600\n@ IN SOA ns1 hostmaster 1 3600 600 86400 30\n"
                "@ IN NS ns1\nns1 IN A 127.0.0.1\n")
    port = random.randint(20000, 40000)
    ready = [1] * a.clusters

    def write():
        """Writes the new file beside the old one; the returned call renames it into place."""
        tmp = f"{d}/federation.yaml.tmp"
        with open(tmp, "w") as f:
            f.write(federation(a.clusters, a.services, ready))
        return lambda: os.rename(tmp, f"{d}/federation.yaml")

    write()()
    with open(f"{d}/fedns.yaml", "w") as f:
        f.write(f'listen: ["127.0.0.1:{port}"]\nhttp: "127.0.0.1:0"\nworkers: 1\n'
                f"zones_dir: zones\nfederation_files: [federation.yaml]\nwatch_interval_ms: 50\n"
                f"state_dir: state\nlameduck_ms: 0\n")
        if a.transfers:
            f.write('transfers: {allow: ["127.0.0.0/8"]}\n')
        if a.dnssec:
            f.write("dnssec: {zones: [example.com]}\n")
    size = os.path.getsize(f"{d}/federation.yaml")
    cmd = a.wrap.split() + [a.fedns, "serve", "--config", f"{d}/fedns.yaml"]
    log = open(f"{d}/fedns.log", "w")
    t0 = time.monotonic()
    # Its own process group, so a wrapper (heaptrack is a shell script) and fedns under it
    # both get the SIGTERM at the end.
    child = subprocess.Popen(cmd, stdout=log, stderr=log, env={**os.environ, "NO_COLOR": "1"},
                             start_new_session=True)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(0.2)
    addr = ("127.0.0.1", port)
    name = "checkout.shop.myfed.svc.example.com"
    qid = 0
    try:
        while True:
            qid = (qid + 1) & 0xFFFF
            if query(sock, addr, name, qid) == a.clusters:
                break
            if time.monotonic() - t0 > 600 or child.poll() is not None:
                sys.exit(f"fedns never answered; see {d}/fedns.log")
            time.sleep(0.01)
        pid = child.pid
        print(f"federation file: {a.clusters} clusters × {a.services + 1} services, "
              f"{size / 1e6:.1f} MB; start → first full answer {time.monotonic() - t0:.2f} s; "
              f"RSS {rss_kib(pid)} KiB")
        samples = []
        for k in range(a.changes):
            c = k % a.clusters
            ready[c] = 0 if ready[c] else 1
            want = sum(1 for r in ready if r)
            # The clock starts at the rename: generating and writing 8 MB in Python is the
            # editor's time, not fedns's.
            rename = write()
            t = time.monotonic()
            rename()
            while True:
                qid = (qid + 1) & 0xFFFF
                if query(sock, addr, name, qid) == want:
                    break
                if time.monotonic() - t > 60:
                    sys.exit("change never showed")
            samples.append((time.monotonic() - t) * 1000)
            time.sleep(0.05)
        samples.sort()
        pick = lambda q: samples[min(len(samples) - 1, round((len(samples) - 1) * q))]
        print(f"one-line edit → answer over {len(samples)} edits: p50 {pick(0.5):.0f} ms, "
              f"p99 {pick(0.99):.0f} ms, max {samples[-1]:.0f} ms; RSS {rss_kib(pid)} KiB")
        if a.transfers:
            kdig = ["kdig", "@127.0.0.1", "-p", str(port), "+tcp", "+noall", "+answer"]
            serial = lambda: int(subprocess.run(kdig[:-2] + ["+short", "example.com", "SOA"],
                                                capture_output=True, text=True).stdout.split()[2])
            before = serial()
            ready[0] = 0 if ready[0] else 1
            write()()
            while serial() == before:
                time.sleep(0.01)
            for label, q in [("AXFR", ["example.com", "AXFR"]),
                             ("IXFR after one edit", ["example.com", f"IXFR={before}"])]:
                t = time.monotonic()
                out = subprocess.run(kdig + q, capture_output=True, text=True).stdout
                records = sum(1 for l in out.splitlines() if l and not l.startswith(";"))
                print(f"{label}: {records} records in {time.monotonic() - t:.2f} s; "
                      f"RSS {rss_kib(pid)} KiB")
    finally:
        os.killpg(child.pid, signal.SIGTERM)
        try:
            child.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)


if __name__ == "__main__":
    main()
