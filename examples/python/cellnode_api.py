#!/usr/bin/env python3
"""Talk to the cellnode agent's local API with Python's standard library only.

The agent serves HTTP on a unix socket ($CELLNODE_API, else
$CELLNODE_RUNTIME_DIR/api.sock, else $XDG_RUNTIME_DIR/cellnode/api.sock, else
/tmp/cellnode-<uid>/api.sock) and, when started with --api-tcp, read-only on a
loopback TCP address (CELLNODE_API=http://127.0.0.1:8640). See docs/api.md.

    python3 cellnode_api.py find acme/exchange
    python3 cellnode_api.py watch acme/exchange            # one line per change, forever
    python3 cellnode_api.py watch acme/exchange --changes 2
    python3 cellnode_api.py register acme/exchange 127.0.0.1:9000
    python3 cellnode_api.py deregister acme/exchange
    python3 cellnode_api.py cells
"""

import http.client
import json
import os
import socket
import sys
import urllib.parse


class UnixHTTPConnection(http.client.HTTPConnection):
    """An HTTP connection over a unix socket."""

    def __init__(self, path, timeout=None):
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self.socket_path)
        self.sock = s


def default_socket():
    d = os.environ.get("CELLNODE_RUNTIME_DIR")
    if not d and os.environ.get("XDG_RUNTIME_DIR"):
        d = os.path.join(os.environ["XDG_RUNTIME_DIR"], "cellnode")
    if not d:
        d = "/tmp/cellnode-%d" % os.getuid()
    return os.path.join(d, "api.sock")


def connection(timeout=None):
    addr = os.environ.get("CELLNODE_API") or default_socket()
    if addr.startswith("http://"):
        host, _, port = addr[len("http://"):].rstrip("/").rpartition(":")
        return http.client.HTTPConnection(host, int(port), timeout=timeout)
    if addr.startswith("unix:"):
        addr = addr[len("unix:"):]
    return UnixHTTPConnection(addr, timeout=timeout)


class APIError(Exception):
    def __init__(self, status, message):
        super().__init__("%d: %s" % (status, message))
        self.status = status


def call(method, path, body=None, timeout=30):
    """Send one request; return the decoded JSON answer or raise APIError."""
    conn = connection(timeout)
    try:
        headers = {}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
        answer = json.loads(resp.read() or b"null")
        if resp.status >= 300:
            raise APIError(resp.status, (answer or {}).get("error", ""))
        return answer
    finally:
        conn.close()


def find(name, timeout="5s"):
    q = urllib.parse.urlencode({"name": name, "timeout": timeout})
    return call("GET", "/v1/find?" + q)


def watch(name, index=0, wait="5m"):
    """Block until the set of name differs from index; return the new set."""
    q = urllib.parse.urlencode({"name": name, "index": index, "wait": wait})
    # The socket timeout must outlast the wait, with room for a first find.
    return call("GET", "/v1/watch?" + q, timeout=400)


def endpoints(result):
    """The endpoint to use of each reachable instance, fastest first."""
    return [i["best_endpoint"] for i in result["instances"] if i.get("reachable")]


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    cmd, args = argv[1], argv[2:]
    try:
        if cmd == "find" and len(args) == 1:
            res = find(args[0])
            for ep in endpoints(res):
                print(ep)
            return 0 if res["instances"] else 1
        if cmd == "watch" and len(args) in (1, 3) and (len(args) == 1 or args[1] == "--changes"):
            limit = int(args[2]) if len(args) == 3 else 0
            index, seen = 0, 0
            while limit == 0 or seen < limit:
                res = watch(args[0], index)
                if res["index"] == index:
                    continue  # the wait passed with no change: ask again
                index = res["index"]
                seen += 1
                print("index=%d instances=%d endpoints=%s" % (index, len(res["instances"]), ",".join(endpoints(res))), flush=True)
            return 0
        if cmd == "register" and len(args) == 2:
            res = call("PUT", "/v1/cells/" + args[0], {"endpoint": args[1], "check": {"interval": "2s"}})
            print(res["result"])
            return 0
        if cmd == "deregister" and len(args) == 1:
            print(call("DELETE", "/v1/cells/" + args[0])["result"])
            return 0
        if cmd == "cells" and not args:
            for c in call("GET", "/v1/cells")["cells"]:
                print(c["name"], c["endpoint"], "announcing" if c["status"]["announcing"] else "not announcing")
            return 0
    except APIError as e:
        print("cellnode API:", e, file=sys.stderr)
        return 1
    except OSError as e:
        print("cellnode API unreachable:", e, file=sys.stderr)
        return 1
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
