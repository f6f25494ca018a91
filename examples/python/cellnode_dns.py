#!/usr/bin/env python3
"""Ask the cellnode agent's DNS server for a cell, with Python's standard library only.

A cell org/name has SRV records at _name._tcp.org.cell. (host and port of each
reachable TCP instance) and A/AAAA records at name.org.cell. (addresses only).
The agent listens on 127.0.0.1:8653 unless started with --dns; set
CELLNODE_DNS=HOST:PORT to ask another address. See docs/using.md.

    python3 cellnode_dns.py srv acme/exchange     # HOST:PORT ttl=N, one per instance
    python3 cellnode_dns.py a acme/exchange       # IPv4 addresses
    python3 cellnode_dns.py aaaa acme/exchange    # IPv6 addresses
"""

import ipaddress
import os
import random
import socket
import struct
import sys

TYPES = {"a": 1, "aaaa": 28, "srv": 33}
RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}


def dns_name(cell, qtype):
    org, _, name = cell.partition("/")
    if qtype == TYPES["srv"]:
        return "_%s._tcp.%s.cell." % (name, org)
    return "%s.%s.cell." % (name, org)


def encode_name(name):
    out = b""
    for label in name.rstrip(".").split("."):
        out += bytes([len(label)]) + label.encode("ascii")
    return out + b"\0"


def read_name(msg, off):
    """Read a (possibly compressed) name at off; return it and the offset after it."""
    labels, end, jumps = [], None, 0
    while True:
        n = msg[off]
        if n & 0xC0 == 0xC0:
            if end is None:
                end = off + 2
            off = ((n & 0x3F) << 8) | msg[off + 1]
            jumps += 1
            if jumps > 64:
                raise ValueError("compression loop")
            continue
        off += 1
        if n == 0:
            break
        labels.append(msg[off:off + n].decode("ascii"))
        off += n
    return ".".join(labels) + ".", (end if end is not None else off)


def exchange(query, server):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        s.sendto(query, server)
        msg, _ = s.recvfrom(65535)
    if struct.unpack(">H", msg[2:4])[0] & 0x0200:  # TC: ask again over TCP
        with socket.create_connection(server, timeout=5) as s:
            s.sendall(struct.pack(">H", len(query)) + query)
            size = struct.unpack(">H", s.recv(2, socket.MSG_WAITALL))[0]
            msg = s.recv(size, socket.MSG_WAITALL)
    return msg


def query(name, qtype, server):
    qid = random.randrange(1 << 16)
    q = struct.pack(">HHHHHH", qid, 0, 1, 0, 0, 0) + encode_name(name) + struct.pack(">HH", qtype, 1)
    msg = exchange(q, server)
    rid, flags, qd, an, ns, ar = struct.unpack(">HHHHHH", msg[:12])
    if rid != qid:
        raise ValueError("answer to another query")
    off = 12
    for _ in range(qd):
        _, off = read_name(msg, off)
        off += 4
    records = []
    for _ in range(an + ns + ar):
        owner, off = read_name(msg, off)
        rtype, _, ttl, rdlen = struct.unpack(">HHIH", msg[off:off + 10])
        off += 10
        rdata = msg[off:off + rdlen]
        if rtype == 33:
            prio, weight, port = struct.unpack(">HHH", rdata[:6])
            target, _ = read_name(msg, off + 6)
            rdata = (prio, weight, port, target)
        elif rtype in (1, 28):
            rdata = str(ipaddress.ip_address(rdata))
        records.append((owner, rtype, ttl, rdata))
        off += rdlen
    return flags & 0xF, records[:an], records[an + ns:]


def main(argv):
    if len(argv) != 3 or argv[1] not in TYPES or "/" not in argv[2]:
        print(__doc__, file=sys.stderr)
        return 2
    host, _, port = os.environ.get("CELLNODE_DNS", "127.0.0.1:8653").rpartition(":")
    qtype = TYPES[argv[1]]
    rcode, answers, extra = query(dns_name(argv[2], qtype), qtype, (host, int(port)))
    if rcode != 0:
        print(RCODES.get(rcode, rcode), file=sys.stderr)
        return 1
    addrs = {owner: rdata for owner, rtype, _, rdata in extra if rtype in (1, 28)}
    for _, rtype, ttl, rdata in answers:
        if rtype == 33:
            _, _, port, target = rdata
            h = addrs.get(target, target.rstrip("."))
            print("%s:%d ttl=%d" % ("[%s]" % h if ":" in h else h, port, ttl))
        else:
            print(rdata)
    return 0 if answers else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
