#!/usr/bin/env python3
"""Writes the seed corpus of the fuzz targets into fuzz/corpus/<target>/ (run from anywhere).

The seeds are committed; this script documents where they come from and can add more.
"""
import os
import struct

ROOT = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(ROOT)


def put(target, name, data):
    d = os.path.join(ROOT, "corpus", target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def wire(name):
    out = b""
    for label in name.strip(".").split("."):
        if label:
            out += bytes([len(label)]) + label.encode()
    return out + b"\0"


def header(id_=0x1234, flags=0x0100, qd=1, an=0, ns=0, ar=0):
    return struct.pack(">HHHHHH", id_, flags, qd, an, ns, ar)


def query(name, qtype=1, edns=None, ar_extra=b"", ar_count=0, flags=0x0100, an=0, ns=0, body=b""):
    ar = ar_count + (1 if edns is not None else 0)
    q = header(flags=flags, an=an, ns=ns, ar=ar) + wire(name) + struct.pack(">HH", qtype, 1) + body
    if edns is not None:
        q += b"\0" + struct.pack(">HHIH", 41, 1232, edns[0], len(edns[1])) + edns[1]
    return q + ar_extra


G = "checkout.shop.myfed.svc.example.com."
ecs = struct.pack(">HHHBB", 8, 7, 1, 24, 0) + bytes([10, 1, 2])
tsig_rd = wire("hmac-sha256.") + b"\0\0\x65\0\0\0" + struct.pack(">HH", 300, 4) + b"\x09" * 4 + b"\x12\x34\0\0\0\0"
tsig = wire("key.") + struct.pack(">HHIH", 250, 255, 0, len(tsig_rd)) + tsig_rd
seeds = {
    "a_global": query(G),
    "aaaa_edns": query(G, 28, edns=(0, b"")),
    "a_do_ecs": query(G, 1, edns=(0x8000, ecs)),
    "regional": query("checkout.shop.myfed.svc.us-east1.example.com.", 1, edns=(0, b"")),
    "srv": query("_http._tcp." + G, 33, edns=(0, b"")),
    "any_apex": query("example.com.", 255),
    "mx_apex": query("example.com.", 15, edns=(0, b"")),
    "soa_apex": query("example.com.", 6),
    "nxdomain": query("nothing.example.com.", 1, edns=(0, b"")),
    "refused": query("example.net.", 1),
    "axfr": query("example.com.", 252),
    "badvers": query(G, 1, edns=(0x00010000, b"")),
    "tsig": query(G, 1, ar_extra=tsig, ar_count=1),
    "edns_tsig": query(G, 1, edns=(0, b""), ar_extra=tsig, ar_count=1),
    "notify": query("example.com.", 6, flags=4 << 11),
    "notify_tsig": query("example.com.", 6, flags=4 << 11, ar_extra=tsig, ar_count=1),
    # UPDATE deleting an RRset (RFC 2136 §2.5.2: class ANY, no RDATA), then a TSIG.
    "update_delete_tsig": query("example.com.", 6, flags=5 << 11, ns=1,
                                body=b"\xc0\x0c" + struct.pack(">HHIH", 1, 255, 0, 0),
                                ar_extra=tsig, ar_count=1),
    "opt_in_answer": query(G, 1, an=1, body=b"\0" + struct.pack(">HHIH", 41, 1232, 0, 0)),
    "pointer_back": query(G, 1, ar_extra=b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 0, 4) + b"\1\2\3\4", ar_count=1),
    "pointer_self": query(G, 1, ar_extra=b"\xc0\x31" + struct.pack(">HHIH", 1, 1, 0, 4) + b"\1\2\3\4", ar_count=1),
    "rrsig_short": query(G, 1, ar_extra=b"\0" + struct.pack(">HHIH", 46, 1, 0, 4) + b"\0\1\2\3", ar_count=1),
    "padding": query(G, 1, edns=(0, struct.pack(">HH", 12, 64) + b"\0" * 64)),
    "question_pointer": header() + b"\xc0\x0c\0\1\0\1",
    "qd0": header(qd=0),
    "response": query(G, flags=0x8100),
    "short": b"\x12\x34\x01",
}
for name, data in seeds.items():
    put("respond", name, data)

with open(os.path.join(REPO, "zones", "example.com.zone")) as f:
    put("zonefile", "example_com", f.read())
put("zonefile", "origin_include_ttl", "$ORIGIN example.org.\n$TTL 1h\n@ IN SOA ns1 hm (1 2 3 4 5)\n@ NS ns1\nns1 A 192.0.2.1\nv6 AAAA 2001:db8::1\nt TXT \"a b\" c\n_s._tcp SRV 0 5 80 www\nw CNAME www\n*.wild 60 IN A 10.0.0.1\n")
put("zonefile", "bad", "@ IN SOA ns1\n$INCLUDE /etc/passwd\nx IN A 999.1.1.1\n(\n")

with open(os.path.join(REPO, "config", "federation.yaml")) as f:
    put("federation", "example_yaml", f.read())
put("federation", "minimal_toml", """[federation]
name = "myfed"
zone = "example.com"

[[clusters]]
name = "c1"
region = "r1"
zones = ["z1"]

[[services]]
name = "web"
namespace = "shop"
shards = [{ cluster = "c1", addresses = ["192.0.2.1", "2001:db8::1"], ready_endpoints = 1 }]
""")
put("federation", "bad_yaml", "federation:\n  name: [x\nclusters: 7\n")

put("skydns", "host", '{"host":"10.0.0.1","port":8080,"priority":10,"weight":5,"ttl":60}')
put("skydns", "text_mail", '{"Host":"mail.example.com","mail":true,"text":"hi","TargetStrip":1,"group":"g"}')
put("skydns", "null", "null")
put("skydns", "key", "/skydns/com/example/www/x1")
put("skydns", "wrong_type", '{"host":1,"port":"80"}')
