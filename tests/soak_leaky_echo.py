#!/usr/bin/env python3
"""A stand-in for forkloop-echo that bench/soak must fail: a threaded TCP
and UDP echo server that takes forkloop-echo's -l, --udp, --mode and
--threads, prints the same 'listening on' lines and a stats line on
SIGUSR1, exits 0 on SIGTERM, and leaks per connection what SOAK_LEAK
names: 'fd' one descriptor, 'mem' 64 KiB of touched memory, 'none'
nothing."""

import os
import signal
import socket
import sys
import threading

LEAK = os.environ.get("SOAK_LEAK", "none")
kept = []
lock = threading.Lock()


def leak():
    with lock:
        if LEAK == "fd":
            kept.append(os.open("/dev/null", os.O_RDONLY))
        elif LEAK == "mem":
            kept.append(bytearray(os.urandom(65536)))


def serve(conn):
    leak()
    with conn:
        while True:
            b = conn.recv(65536)
            if not b:
                break
            conn.sendall(b)
        conn.shutdown(socket.SHUT_WR)


def udp(u):
    while True:
        data, peer = u.recvfrom(65536)
        u.sendto(data, peer)


def main(argv):
    addr, use_udp, i = "127.0.0.1:6666", False, 0
    while i < len(argv):
        if argv[i] in ("-l", "--mode", "-m", "--threads"):
            if argv[i] == "-l":
                addr = argv[i + 1]
            i += 2
            continue
        use_udp = use_udp or argv[i] == "--udp"
        i += 1
    host, port = addr.rsplit(":", 1)
    ls = socket.create_server((host, int(port)))
    port = ls.getsockname()[1]
    print("soak_leaky_echo: listening on %s:%d" % (host, port),
          file=sys.stderr, flush=True)
    if use_udp:
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.bind((host, port))
        threading.Thread(target=udp, args=(u,), daemon=True).start()
        print("soak_leaky_echo: listening on %s:%d (udp)" % (host, port),
              file=sys.stderr, flush=True)
    signal.signal(signal.SIGUSR1, lambda *a: print(
        "soak_leaky_echo: stats: kept=%d" % len(kept), file=sys.stderr,
        flush=True))
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
    while True:
        conn, _ = ls.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    main(sys.argv[1:])
