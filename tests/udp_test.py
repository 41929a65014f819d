"""Integration tests for forkloop-echo's UDP echo: the real binary on loopback.

Each test method is one scenario; meson runs it once per mode (FORKLOOP_MODE).
The guards are proved with client sockets bound to the well-known ports (the
tests run as root) and with datagrams forged through a raw socket, whose
source the kernel does not check: port 0, or the server's own address.
Scenarios that need addresses other than 127.0.0.1, or fixed ports, run again
inside a network namespace of their own (unshare -n) with only a loopback
interface, where nothing else can reach the daemon.
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
# Addresses added to it while the daemon runs.
NETNS_LATER = ("10.9.8.5", "10.9.8.6")
# forkloop-echo's --udp-rate when none is given.
DEFAULT_RATE = 100
# Source addresses its rate cap tracks at once.
TABLE_SLOTS = 4096


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


class Forger:
    """forge_udp for many datagrams: one raw socket, one packet template."""

    def __init__(self):
        self.raw = socket.socket(socket.AF_INET, socket.SOCK_RAW,
                                 socket.IPPROTO_RAW)

    def send(self, src, dst, payload):
        udp = struct.pack("!HHHH", src[1], dst[1], 8 + len(payload), 0)
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28 + len(payload), 0,
                         0x4000, 64, socket.IPPROTO_UDP, 0,
                         socket.inet_aton(src[0]), socket.inet_aton(dst[0]))
        self.raw.sendto(ip + udp + payload, (dst[0], 0))

    def close(self):
        self.raw.close()


def max_in_window(times, width):
    """The most of the sorted times that fit in any window of width."""
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while t - times[lo] >= width:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


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

    def server(self, *opts, listen="127.0.0.1:0", udp="--udp", count=1):
        """The daemon, its UDP addresses in .uaddrs, the first in .uaddr.
        listen may be a list of --listen values."""
        argv = [fltest.binary("echo"), "--mode", MODE, udp] + list(opts)
        for l in [listen] if isinstance(listen, str) else listen:
            argv += ["--listen", l]
        srv = self.start(Server, argv)
        m = srv.wait_line(UDP_LINE_RE, count=count)
        srv.uaddrs = [(x.group(1).strip("[]"), int(x.group(2))) for x in m]
        srv.uaddr = srv.uaddrs[0]
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

    def assertNoLoop(self, srv, expect):
        """The counters reach expect (udp_in, udp_out, udp_dropped) and stay
        there: a loop would run them up."""
        key = lambda st: (st["udp_in"], st["udp_out"], st["udp_dropped"])
        st = self.wait_stats(srv, lambda st: st["udp_in"] >= expect[0])
        self.assertEqual(key(st), expect)
        time.sleep(NO_REPLY_WAIT)
        self.assertEqual(key(self.stats(srv)), expect)

    def in_netns(self, method):
        """Run UdpTest.<method> in a network namespace of its own, with only
        a loopback interface, up, and NETNS_ADDR on it."""
        self.assertIsNotNone(shutil.which("unshare"),
                             "needs unshare (util-linux)")
        self.assertIsNotNone(shutil.which("ip"), "needs ip (iproute2)")
        self.assertEqual(subprocess.run(["unshare", "-n", "--", "true"],
                                        stderr=subprocess.DEVNULL).returncode,
                         0, "cannot make a network namespace here")
        script = ('ip link set lo up && ip addr add %s/32 dev lo && '
                  'exec "$0" "$1" "$2"' % NETNS_ADDR)
        env = dict(os.environ, FORKLOOP_IN_NETNS="1")
        p = subprocess.run(["unshare", "-n", "--", "sh", "-c", script,
                            sys.executable, os.path.abspath(__file__),
                            "UdpTest." + method],
                           env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=60)
        out = p.stdout.decode(errors="replace")
        self.assertEqual(p.returncode, 0, out)
        self.assertIn("OK", out)

    def assertInNetns(self):
        self.assertEqual(os.environ.get("FORKLOOP_IN_NETNS"), "1",
                         "runs in a network namespace only")

    def exits_with_usage(self, opts, message):
        argv = [fltest.binary("echo"), "--mode", MODE, "--listen",
                "127.0.0.1:0"] + opts
        p = self.start(fltest.Proc, argv)
        try:
            rc = p.wait(5)
        except subprocess.TimeoutExpired:
            self.fail("%s: accepted, still running: %s"
                      % (" ".join(opts), p.stderr_text()))
        p.t.join(5)
        err = p.stderr_text()
        self.assertEqual(rc, 2, "%s: %s" % (" ".join(opts), err))
        self.assertIn("forkloop-echo: " + message, err)
        self.assertIn("usage: forkloop-echo", err)
        self.assertNotIn("listening on", err)

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
        self.in_netns("netns_wildcard")

    def netns_wildcard(self):
        """Run by test_wildcard_replies_from_the_address_used, inside its
        namespace."""
        self.assertInNetns()
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


    # -- loops: the daemon with itself, and with another echo -------------

    def test_no_loop_between_own_sockets(self):
        # One datagram to each of two sockets, each forged from the other:
        # answered, they would bounce between the two for ever.
        srv = self.server("-v", udp="--udp-only",
                          listen=["127.0.0.1:0", "127.0.0.1:0"], count=2)
        a, b = srv.uaddrs
        self.assertNotEqual(a, b)
        forge_udp(b, a, b"from b")
        forge_udp(a, b, b"from a")
        self.assertNoLoop(srv, (2, 0, 2))
        for frm in (a, b):
            srv.wait_line(r"udp: dropped 6 bytes from 127\.0\.0\.1:%d: own "
                          r"address$" % frm[1])

    def test_no_loop_between_addresses_of_one_port(self):
        self.in_netns("netns_one_port")

    def netns_one_port(self):
        """Run by test_no_loop_between_addresses_of_one_port: two sockets on
        one port, which only a namespace of our own keeps free."""
        self.assertInNetns()
        srv = self.server(udp="--udp-only",
                          listen=["127.0.0.1:6666", "127.0.0.2:6666"],
                          count=2)
        self.assertEqual(sorted(srv.uaddrs),
                         [("127.0.0.1", 6666), ("127.0.0.2", 6666)])
        forge_udp(("127.0.0.2", 6666), ("127.0.0.1", 6666), b"loop one")
        forge_udp(("127.0.0.1", 6666), ("127.0.0.2", 6666), b"loop two")
        self.assertNoLoop(srv, (2, 0, 2))
        # Another port on those addresses is a client like any other.
        c = self.client(("127.0.0.2", 0))
        got, frm = self.echo(c, srv, b"fine")
        self.assertEqual((got, frm), (b"fine", srv.uaddr))
        self.assertNoLoop(srv, (3, 1, 2))

    def test_no_loop_through_addresses_added_later(self):
        self.in_netns("netns_added_later")

    def netns_added_later(self):
        """Run by test_no_loop_through_addresses_added_later: a wildcard
        socket, and host addresses added after it started."""
        self.assertInNetns()
        srv = self.server(udp="--udp-only", listen="0.0.0.0:0")
        port = srv.uaddr[1]
        c = self.client()
        c.settimeout(10)
        c.sendto(b"up", ("127.0.0.1", port))
        self.assertEqual(c.recvfrom(100), (b"up", ("127.0.0.1", port)))
        for addr in NETNS_LATER:
            subprocess.run(["ip", "addr", "add", addr + "/32", "dev", "lo"],
                           check=True)
        # At once: nothing may wait for the daemon to notice.
        forge_udp((NETNS_LATER[1], port), (NETNS_LATER[0], port), b"loop?")
        self.assertNoLoop(srv, (2, 1, 1))
        # And a client on a new address is answered from it.
        n = self.client((NETNS_LATER[1], 0))
        n.settimeout(10)
        n.sendto(b"new", (NETNS_LATER[0], port))
        self.assertEqual(n.recvfrom(100), (b"new", (NETNS_LATER[0], port)))
        self.assertNoLoop(srv, (3, 2, 1))

    def test_loop_with_another_echo_ends(self):
        # Two echo daemons on ordinary ports, and one datagram to the first
        # forged from the second: each answers the other until one of them
        # has given the other's address its DEFAULT_RATE replies.
        a = self.server()
        b = self.server()
        forge_udp(b.uaddr, a.uaddr, b"ping-pong")
        time.sleep(0.3)
        before = self.stats(a)
        time.sleep(NO_REPLY_WAIT)
        after = self.stats(a)
        self.assertEqual(before, after, "the loop still runs")
        self.assertGreater(after["udp_out"], 0)
        self.assertLessEqual(after["udp_out"], DEFAULT_RATE)
        self.assertLessEqual(self.stats(b)["udp_out"], DEFAULT_RATE)

    def test_system_ports_get_no_reply(self):
        # In a namespace of our own, where no service holds those ports.
        self.in_netns("netns_system_ports")

    def netns_system_ports(self):
        """Run by test_system_ports_get_no_reply. Every port below 1024, not
        only the ports of echo and its kind: whatever service lives there
        may answer too."""
        self.assertInNetns()
        srv = self.server("-v")
        for port in (1, 69, 161, 1023):
            c = self.client(("127.0.0.1", port))
            c.sendto(b"service?", srv.uaddr)
            srv.wait_line(r"udp: dropped 8 bytes from 127\.0\.0\.1:%d: "
                          r"source port below 1024$" % port)
            self.assertNoReply(c, 0.05)
        ok = self.client()
        self.assertEqual(self.echo(ok, srv, b"client")[0], b"client")
        self.assertNoLoop(srv, (5, 1, 4))

    # -- the rate cap ----------------------------------------------------

    def test_rate_holds_in_any_second(self):
        # 150 datagrams, one every 10 ms: at most rate replies in any one
        # second, the first included.
        rate, n, gap = 10, 150, 0.01
        srv = self.server("--udp-rate", str(rate))
        c = self.client()
        c.setblocking(False)
        got = {}
        start = time.monotonic()

        def drain():
            while True:
                try:
                    data = c.recv(100)
                except BlockingIOError:
                    return
                got[int(data)] = time.monotonic()

        for i in range(n):
            delay = start + i * gap - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            c.sendto(b"%d" % i, srv.uaddr)
            drain()
        deadline = time.monotonic() + NO_REPLY_WAIT
        while time.monotonic() < deadline:
            time.sleep(0.01)
            drain()
        st = self.wait_stats(srv, lambda st: st["udp_in"] == n)
        self.assertEqual((st["udp_in"], st["udp_out"]), (n, len(got)))
        # Those sent in the first 0.95 s: the first rate of them.
        first = sorted(i for i in got if i * gap < 0.95)
        self.assertEqual(first, list(range(rate)), "replies: %s"
                         % sorted(got))
        # Received within 0.9 s of each other (the margin is for delays).
        self.assertLessEqual(max_in_window(sorted(got.values()), 0.9), rate,
                             "replies: %s" % sorted(got))
        self.assertGreater(len(got), rate, "no second allowance")

    def test_rate_survives_table_churn(self):
        # A source at its cap, then more sources than the table holds, then
        # the capped source again within the same second: it must not come
        # back with a fresh allowance. The others are forged from 127.1.0.0
        # on, from the port of a socket of ours, where their replies end.
        rate, churn, per_round, gap = 2, 5000, 25, 0.00125
        srv = self.server("--udp-rate", str(rate))
        sink = self.client(("0.0.0.0", 0))
        sport = sink.getsockname()[1]
        c = self.client()
        c.settimeout(10)
        for i in range(rate + 1):
            c.sendto(b"first %d" % i, srv.uaddr)
        for i in range(rate):
            self.assertEqual(c.recv(100), b"first %d" % i)
        capped = time.monotonic()
        forger = Forger()
        try:
            for k in range(churn):
                if k % per_round == 0:
                    delay = capped + k // per_round * gap - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                src = socket.inet_ntoa(struct.pack("!I", 0x7f010000 + k))
                forger.send((src, sport), srv.uaddr, b"churn")
        finally:
            forger.close()
        # Until the daemon has read what reached it (the kernel may drop a
        # few when its buffer is full): more sources than the table holds.
        prev = None
        while True:
            st = self.stats(srv)
            if st == prev or st["udp_in"] == rate + 1 + churn:
                break
            prev = st
            time.sleep(0.02)
        self.assertGreater(st["udp_in"], rate + 1 + TABLE_SLOTS,
                           "the churn did not reach the daemon: %r" % st)
        self.assertLess(time.monotonic() - capped, 0.8,
                        "too slow: the second is over")
        for i in range(rate + 1):
            c.sendto(b"again %d" % i, srv.uaddr)
        self.assertNoReply(c)
        self.assertEqual(self.stats(srv)["udp_in"], st["udp_in"] + rate + 1)
        # Once its second is over, it is answered again.
        time.sleep(max(0, capped + 1.2 - time.monotonic()))
        self.assertEqual(self.echo(c, srv, b"later")[0], b"later")

    # -- options ---------------------------------------------------------

    def test_udp_options_without_effect_are_usage_errors(self):
        self.exits_with_usage(["--udp-rate", "10"],
                              "--udp-rate needs --udp or --udp-only")
        self.exits_with_usage(["--udp-rate", "0"],
                              "--udp-rate needs --udp or --udp-only")
        self.exits_with_usage(["--udp", "--udp-only"],
                              "--udp and --udp-only cannot be used together")
        for opt, val in (("--max-conns", "5"), ("--idle-timeout", "1"),
                         ("--drain-timeout", "1"), ("--max-pending", "1K"),
                         ("--keepalive", "60")):
            self.exits_with_usage(["--udp-only", opt, val],
                                  "%s applies to TCP connections: not with "
                                  "--udp-only" % opt)
        # With TCP served, they all apply.
        srv = self.server("--udp-rate", "10", "--max-conns", "5",
                          "--idle-timeout", "1", "--drain-timeout", "1",
                          "--max-pending", "1K", "--keepalive", "60")
        self.assertEqual(self.echo(self.client(), srv, b"ok")[0], b"ok")

    def test_udp_rate_under_socket_activation(self):
        # systemd passes datagram sockets whatever --udp says, so there
        # --udp-rate needs no --udp (the example service relies on it). The
        # wrapper binds the socket, makes it fd 3 and becomes the daemon.
        wrapper = ("import os, socket, sys\n"
                   "u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                   "u.bind(('127.0.0.1', 0))\n"
                   "fd = u.detach()\n"
                   "if fd != 3:\n"
                   "    os.dup2(fd, 3)\n"
                   "    os.close(fd)\n"
                   "os.set_inheritable(3, True)\n"
                   "os.environ['LISTEN_PID'] = str(os.getpid())\n"
                   "os.environ['LISTEN_FDS'] = '1'\n"
                   "os.execv(sys.argv[1], sys.argv[1:])\n")
        srv = self.start(fltest.Proc, [sys.executable, "-c", wrapper,
                                       fltest.binary("echo"), "--mode", MODE,
                                       "--udp-rate", "3"])
        m = srv.wait_line(r"listening on 127\.0\.0\.1:(\d+) \(udp, "
                          r"activated fd 3, %s mode\)$" % MODE)[0]
        srv.uaddr = ("127.0.0.1", int(m.group(1)))
        c = self.client()
        for i in range(6):
            c.sendto(b"%d" % i, srv.uaddr)
        st = self.wait_stats(srv, lambda st: st["udp_in"] == 6)
        self.assertEqual((st["udp_in"], st["udp_out"], st["udp_dropped"]),
                         (6, 3, 3))

if __name__ == "__main__":
    fltest.main()
