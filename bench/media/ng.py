#!/usr/bin/env python3
"""Minimal rtpengine ng-protocol client (bencode over UDP) for the benchmark.

    ng.py ping  HOST:PORT
    ng.py setup HOST:PORT SESSIONS PEER_A PEER_B PEER_PORT SOCKETS OUT_FILE

`setup` creates SESSIONS calls with offer/answer: side A's peer is
PEER_A:(PEER_PORT + i % SOCKETS), side B's PEER_B:(same port), plain RTP/AVP
PCMU/PCMA. It writes one line per call, "A_TARGET B_TARGET": where A's peer
must send (rtpengine's port facing A, from the answer) and where B's peer
must send (rtpengine's port facing B, from the offer).
"""
import os
import socket
import sys


def benc(v) -> bytes:
    if isinstance(v, int):
        return b"i%de" % v
    if isinstance(v, str):
        v = v.encode()
    if isinstance(v, bytes):
        return b"%d:%s" % (len(v), v)
    if isinstance(v, list):
        return b"l" + b"".join(benc(x) for x in v) + b"e"
    if isinstance(v, dict):
        return b"d" + b"".join(benc(k) + benc(v[k]) for k in sorted(v)) + b"e"
    raise TypeError(type(v))


def bdec(b: bytes, i: int = 0):
    c = b[i:i + 1]
    if c == b"i":
        j = b.index(b"e", i)
        return int(b[i + 1:j]), j + 1
    if c == b"l":
        i, out = i + 1, []
        while b[i:i + 1] != b"e":
            v, i = bdec(b, i)
            out.append(v)
        return out, i + 1
    if c == b"d":
        i, out = i + 1, {}
        while b[i:i + 1] != b"e":
            k, i = bdec(b, i)
            v, i = bdec(b, i)
            out[k.decode()] = v
        return out, i + 1
    j = b.index(b":", i)
    n = int(b[i:j])
    return b[j + 1:j + 1 + n], j + 1 + n


class Ng:
    def __init__(self, hostport: str):
        host, port = hostport.rsplit(":", 1)
        self.addr = (host, int(port))
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.settimeout(2.0)
        self.n = 0

    def call(self, msg: dict) -> dict:
        self.n += 1
        cookie = b"%d_%d" % (os.getpid(), self.n)
        for _ in range(3):
            self.sock.sendto(cookie + b" " + benc(msg), self.addr)
            try:
                while True:
                    data, _ = self.sock.recvfrom(65535)
                    if data.startswith(cookie + b" "):
                        reply, _ = bdec(data, len(cookie) + 1)
                        if reply.get("result") not in (b"ok", b"pong"):
                            raise SystemExit(f"ng error: {reply}")
                        return reply
            except socket.timeout:
                continue
        raise SystemExit("ng: no answer from rtpengine")


def sdp(ip: str, port: int) -> str:
    return (f"v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n"
            f"m=audio {port} RTP/AVP 0 8\r\na=sendrecv\r\n")


def media_addr(body: bytes) -> str:
    ip, port = None, None
    for line in body.decode().splitlines():
        if line.startswith("c=IN IP4 "):
            ip = line.split()[2]
        elif line.startswith("m=audio "):
            port = int(line.split()[1])
    if ip is None or port is None:
        raise SystemExit(f"no media address in {body!r}")
    return f"{ip}:{port}"


def main() -> int:
    if len(sys.argv) >= 3 and sys.argv[1] == "ping":
        Ng(sys.argv[2]).call({"command": "ping"})
        return 0
    if len(sys.argv) == 9 and sys.argv[1] == "setup":
        ng = Ng(sys.argv[2])
        sessions, peer_a, peer_b = int(sys.argv[3]), sys.argv[4], sys.argv[5]
        peer_port, sockets, out = int(sys.argv[6]), int(sys.argv[7]), sys.argv[8]
        lines = []
        for i in range(sessions):
            port = peer_port + i % sockets
            cid, ft, tt = f"bench-{i}", f"ft{i}", f"tt{i}"
            off = ng.call({"command": "offer", "call-id": cid, "from-tag": ft,
                           "sdp": sdp(peer_a, port), "replace": ["origin"]})
            ans = ng.call({"command": "answer", "call-id": cid, "from-tag": ft,
                           "to-tag": tt, "sdp": sdp(peer_b, port), "replace": ["origin"]})
            lines.append(f"{media_addr(ans['sdp'])} {media_addr(off['sdp'])}\n")
        with open(out, "w") as f:
            f.writelines(lines)
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
