"""Integration tests for forkloop-echo's UDP echo: the real binary on loopback.

Each test method is one scenario; meson runs it once per mode (FORKLOOP_MODE).
The guards are proved with client sockets bound to the well-known ports (the
tests run as root) and with datagrams forged through a raw socket, whose
source the kernel does not check: port 0, or the server's own address.
"""

import os
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fltest  # noqa: E402
from fltest import Server, wait_until  # noqa: E402

MODE = fltest.mode()
MAX_DATAGRAM = 65507
STATS_RE = re.compile(r"stats: open=(\d+) accepted=(\d+) refused=(\d+) "
                      r"bytes_in=(\d+) bytes_out=(\d+) udp_in=(\d+) "
                      r"udp_out=(\d+) udp_dropped=(\d+)$")
STATS_KEYS = ("open", "accepted", "refused", "bytes_in", "bytes_out",
              "udp_in", "udp_out", "udp_dropped")
UDP_LINE_RE = r"listening on (\S+):(\d+) \(udp, %s mode\)$" % MODE
# How long a datagram that must not be answered is waited for.
NO_REPLY_WAIT = 0.5
# A second address for the loopback interface of a network namespace.
NETNS_ADDR = "10.9.8.7"


def forge_udp(src, dst, payload):
    """Send one IPv4 UDP datagram from src (host, port), whatever it is."""
    udp = struct.pack("!HHHH", src[1], dst[1], 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0x4000, 64,
                     socket.IPPROTO_UDP, 0, socket.inet_aton(src[0]),
                     socket.inet_aton(dst[0]))
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    try:
        raw.sendto(ip + udp, (dst[0], 0))
    finally:
        raw.close()


class UdpTest(fltest.ProcTestCase):

    def setUp(self):
        super().setUp()
        self.socks = []
        self.seed = int.from_bytes(os.urandom(4), "little")
        self.rng = random.Random(self.seed)

    def tearDown(self):
        for s in self.socks:
            s.close()
        super().tearDown()

    # -- helpers ---------------------------------------------------------

    def server(self, *opts, listen="127.0.0.1:0", udp="--udp"):
        argv = [fltest.binary("echo"), "--listen", listen, "--mode", MODE,
                udp] + list(opts)
        srv = self.start(Server, argv)
        m = srv.wait_line(UDP_LINE_RE)[0]
        srv.uaddr = (m.group(1).strip("[]"), int(m.group(2)))
        return srv

    def client(self, bind=("127.0.0.1", 0), family=socket.AF_INET):
        s = socket.socket(family, socket.SOCK_DGRAM)
        self.socks.append(s)
        try:
            s.bind(bind)
        except OSError as e:
            self.fail("cannot bind the test's socket to %r: %s" % (bind, e))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        return s

    def echo(self, sock, srv, data):
        """Send one datagram, return the one reply and where it came from."""
        sock.settimeout(10)
        sock.sendto(data, srv.uaddr)
        return sock.recvfrom(MAX_DATAGRAM + 100)

    def assertNoReply(self, sock, wait=NO_REPLY_WAIT):
        sock.settimeout(wait)
        try:
            got, frm = sock.recvfrom(MAX_DATAGRAM + 100)
        except socket.timeout:
            return
        self.fail("got a %d-byte reply from %r" % (len(got), frm))

    def stats(self, srv):
        with srv.cond:
            n = sum(1 for l in srv.lines if l is not None and STATS_RE.search(l))
        srv.signal(signal.SIGUSR1)
        m = srv.wait_line(STATS_RE.pattern, count=n + 1)[-1]
        return dict(zip(STATS_KEYS, (int(x) for x in m.groups())))

    def wait_stats(self, srv, pred, timeout=10.0):
        deadline = time.monotonic() + timeout
        while True:
            st = self.stats(srv)
            if pred(st) or time.monotonic() > deadline:
                return st
            time.sleep(0.05)

    def assertNoChildren(self, srv):
        self.assertEqual(fltest.children(srv.pid), [],
                         "a process per datagram")

    # -- scenarios -------------------------------------------------------

    def test_datagrams_echoed_whole(self):
        srv = self.server()
        self.assertEqual(srv.uaddr, (srv.host, srv.port),
                         "UDP not on the TCP socket's address and port")
        c = self.client()
        for n in (1, 1500, MAX_DATAGRAM, 0, 2048, 8193):
            data = self.rng.randbytes(n)
            got, frm = self.echo(c, srv, data)
            self.assertEqual(frm, srv.uaddr)
            self.assertEqual(len(got), n, "seed %d" % self.seed)
            self.assertEqual(got, data, "seed %d" % self.seed)
        self.assertNoReply(c, 0.1)
        self.assertNoChildren(srv)
        st = self.stats(srv)
        self.assertEqual((st["udp_in"], st["udp_out"], st["udp_dropped"]),
                         (6, 6, 0))
        self.assertEqual(st["accepted"], 0)
        # TCP still echoes on the same port.
        t = socket.create_connection((srv.host, srv.port), timeout=10)
        self.socks.append(t)
        t.sendall(b"tcp too")
        self.assertEqual(fltest.recv_exactly(t, 7, 10), b"tcp too")

    def test_many_clients_each_get_their_own(self):
        srv = self.server()
        clients = [self.client() for _ in range(20)]
        sent = {}
        for i, c in enumerate(clients):
            sent[i] = [self.rng.randbytes(self.rng.randint(1, 1000))
                       for _ in range(3)]
            for d in sent[i]:
                c.sendto(d, srv.uaddr)
        for i, c in enumerate(clients):
            c.settimeout(10)
            got = [c.recvfrom(MAX_DATAGRAM)[0] for _ in sent[i]]
            self.assertEqual(sorted(got), sorted(sent[i]), "client %d" % i)
            self.assertNoReply(c, 0.05)
        st = self.stats(srv)
        self.assertEqual((st["udp_in"], st["udp_out"]), (60, 60))

    def test_ipv6(self):
        srv = self.server(listen="[::1]:0")
        c = self.client(("::1", 0), socket.AF_INET6)
        data = self.rng.randbytes(MAX_DATAGRAM)
        got, frm = self.echo(c, srv, data)
        self.assertEqual(got, data)
        self.assertEqual(frm[:2], srv.uaddr)

    def test_udp_only(self):
        srv = self.server(udp="--udp-only")
        lines = [l for l in srv.lines if l and "listening on" in l]
        self.assertEqual(len(lines), 1, lines)
        self.assertRegex(lines[0], UDP_LINE_RE)
        self.assertRaises(ConnectionRefusedError, socket.create_connection,
                          srv.uaddr, 5)
        got, _ = self.echo(self.client(), srv, b"only udp")
        self.assertEqual(got, b"only udp")
        srv.signal(signal.SIGTERM)
        self.assertEqual(srv.wait(), 0)
        # The port is free again.
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(srv.uaddr)
        s.close()

    def test_udp_port_in_use(self):
        # Another process holds the UDP port: a second bind must fail
        # loudly, not share the port (SO_REUSEADDR would let it).
        holder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.socks.append(holder)
        holder.bind(("127.0.0.1", 0))
        port = holder.getsockname()[1]
        p = self.start(fltest.Proc, [fltest.binary("echo"), "--mode", MODE,
                                     "--udp-only", "--listen",
                                     "127.0.0.1:%d" % port])
        self.assertEqual(p.wait(), 1)
        p.t.join(5)
        self.assertIn("cannot listen on 127.0.0.1:%d: Address already in use"
                      % port, p.stderr_text())

    def test_reflector_ports_get_no_reply(self):
        srv = self.server()
        ok = self.client()
        for port in (7, 13, 17, 19, 37):
            c = self.client(("127.0.0.1", port))
            c.sendto(b"loop?", srv.uaddr)
        # Sent after them, answered; the others had their chance.
        self.assertEqual(self.echo(ok, srv, b"fine")[0], b"fine")
        for c in self.socks[1:]:
            self.assertNoReply(c)
        st = self.wait_stats(srv, lambda st: st["udp_in"] == 6)
        self.assertEqual((st["udp_in"], st["udp_out"], st["udp_dropped"]),
                         (6, 1, 5))

    def test_forged_sources_get_no_reply(self):
        srv = self.server("-v")
        # A socket of ours as the forged source proves forging works: it
        # hears the echo. Port 0 and the server itself get nothing.
        c = self.client()
        forge_udp(c.getsockname(), srv.uaddr, b"forged but fine")
        c.settimeout(10)
        self.assertEqual(c.recvfrom(100), (b"forged but fine", srv.uaddr))
        forge_udp(("127.0.0.1", 0), srv.uaddr, b"port zero")
        forge_udp(srv.uaddr, srv.uaddr, b"talk to yourself")
        srv.wait_line(r"udp: dropped 16 bytes from 127\.0\.0\.1:%d: own "
                      r"address" % srv.uaddr[1])
        srv.wait_line(r"udp: dropped 9 bytes from 127\.0\.0\.1:0: source "
                      r"port 0")
        time.sleep(NO_REPLY_WAIT)
        # A loop would have run up the count by now.
        st = self.stats(srv)
        self.assertEqual((st["udp_in"], st["udp_out"], st["udp_dropped"]),
                         (3, 1, 2))
        self.assertIsNone(srv.p.poll())

    def test_rate_caps_replies_per_source(self):
        rate, burst = 5, 60
        srv = self.server("--udp-rate", str(rate))
        c = self.client()
        for i in range(burst):
            c.sendto(b"%d" % i, srv.uaddr)
        st = self.wait_stats(srv, lambda st: st["udp_in"] == burst)
        self.assertEqual(st["udp_in"], burst)
        replies = 0
        c.settimeout(NO_REPLY_WAIT)
        try:
            for _ in range(burst):
                c.recvfrom(100)
                replies += 1
        except socket.timeout:
            pass
        self.assertGreaterEqual(replies, rate)
        self.assertLess(replies, burst // 2)
        self.assertEqual(replies, st["udp_out"])
        self.assertEqual(st["udp_out"] + st["udp_dropped"], burst)
        # Another source address has its own allowance.
        other = self.client(("127.0.0.2", 0))
        self.assertEqual(self.echo(other, srv, b"me too")[0], b"me too")

    def test_wildcard_replies_from_the_address_used(self):
        # A wildcard bind is only safe to test where nothing else can reach
        # it: a network namespace of its own, with only a loopback interface.
        self.assertIsNotNone(shutil.which("unshare"), "needs unshare (util-linux)")
        self.assertIsNotNone(shutil.which("ip"), "needs ip (iproute2)")
        self.assertEqual(subprocess.run(["unshare", "-n", "--", "true"],
                                        stderr=subprocess.DEVNULL).returncode,
                         0, "cannot make a network namespace here")
        script = ('ip link set lo up && ip addr add %s/32 dev lo && '
                  'exec "$0" "$1" UdpTest.netns_wildcard' % NETNS_ADDR)
        env = dict(os.environ, FORKLOOP_IN_NETNS="1")
        p = subprocess.run(["unshare", "-n", "--", "sh", "-c", script,
                            sys.executable, os.path.abspath(__file__)],
                           env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=60)
        out = p.stdout.decode(errors="replace")
        self.assertEqual(p.returncode, 0, out)
        self.assertIn("OK", out)

    def netns_wildcard(self):
        """Run by test_wildcard_replies_from_the_address_used, inside its
        namespace."""
        self.assertEqual(os.environ.get("FORKLOOP_IN_NETNS"), "1",
                         "runs in a network namespace only")
        srv = self.server(listen="0.0.0.0:0")
        port = srv.uaddr[1]
        c = self.client()
        c.settimeout(10)
        # Each reply comes from the address the client wrote to.
        for host in (NETNS_ADDR, "127.0.0.1"):
            c.sendto(b"to " + host.encode(), (host, port))
            self.assertEqual(c.recvfrom(100),
                             (b"to " + host.encode(), (host, port)))
        # Forged from the server's port on any of the host's addresses.
        forge_udp((NETNS_ADDR, port), ("127.0.0.1", port), b"loop one")
        forge_udp(("127.0.0.1", port), (NETNS_ADDR, port), b"loop two")
        forge_udp((NETNS_ADDR, port), (NETNS_ADDR, port), b"loop three")
        # Another port on the same address is a client like any other.
        forge_udp((NETNS_ADDR, c.getsockname()[1]), (NETNS_ADDR, port),
                  b"fine")
        st = self.wait_stats(srv, lambda st: st["udp_in"] == 6)
        self.assertEqual((st["udp_in"], st["udp_out"], st["udp_dropped"]),
                         (6, 3, 3))
        time.sleep(NO_REPLY_WAIT)
        self.assertEqual(self.stats(srv)["udp_in"], 6)


if __name__ == "__main__":
    fltest.main()
