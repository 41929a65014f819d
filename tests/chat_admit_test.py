"""Integration tests for who may connect to forkloop-chat: the access lists
and limits of admit.h on the endpoint's listener (once per mode) and on the
relay (--broker, the event design only), and --max-clients.

Clients come from chosen loopback addresses (127.0.0.2, 127.0.0.3, ::1) by
binding before they connect. A refused client must see its connection
closed without a byte from the program; an admitted one is served as
without any rule. Every check counts clients, bytes or log lines, never
time.
"""

import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fltest  # noqa: E402
import tlscerts  # noqa: E402
from fltest import Server, recv_all  # noqa: E402

CHAT = fltest.binary("chat")
MODE = fltest.mode()
WELCOME = re.compile(rb"^\* you are (\S+); others here: (\d+)\n")
PEER_FINISHED = r"peer finished sending"


def connect_from(src, port, dst="127.0.0.1"):
    """A socket bound to src, connected to dst:port."""
    s = socket.socket(socket.AF_INET6 if ":" in dst else socket.AF_INET)
    s.settimeout(10)
    s.bind((src, 0))
    s.connect((dst, port))
    return s


class Peer:
    """A relay client from src whose bytes a thread collects until the
    end; .refused once the relay closed it without a byte."""

    def __init__(self, port, src="127.0.0.1", dst="127.0.0.1"):
        self.sock = connect_from(src, port, dst)
        self.buf = bytearray()
        self.eof = False
        self.name = None
        self.cond = threading.Condition()
        self.t = threading.Thread(target=self._read, daemon=True)
        self.t.start()

    def _read(self):
        while True:
            try:
                self.sock.settimeout(None)
                b = self.sock.recv(1 << 16)
            except OSError:
                b = b""
            with self.cond:
                if b:
                    self.buf += b
                else:
                    self.eof = True
                self.cond.notify_all()
            if not b:
                # As nc would: the relay's lingering close ends at once.
                try:
                    self.sock.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                return

    def data(self):
        with self.cond:
            return bytes(self.buf)

    def wait(self, pred, timeout=10.0, what="data"):
        deadline = time.monotonic() + timeout
        with self.cond:
            while not pred():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("waited for %s, got %r (eof %s)"
                                         % (what, bytes(self.buf[-500:]),
                                            self.eof))
                self.cond.wait(min(left, 0.5))

    def joined(self):
        """Wait for the welcome or the end: True and the name learnt, or
        False when closed without a byte (refused)."""
        self.wait(lambda: b"\n" in self.buf or self.eof, what="an outcome")
        if self.eof and not self.buf:
            return False
        m = WELCOME.match(self.data())
        assert m, "not a welcome: %r" % self.data()
        self.name = m.group(1)
        return True

    def after_welcome(self):
        return self.data().split(b"\n", 1)[1]

    def wait_line(self, line):
        self.wait(lambda: line + b"\n" in self.buf, what=repr(line))

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


class ChatAdmitTest(fltest.ProcTestCase):

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix="forkloop-chat-admit-")

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def setUp(self):
        super().setUp()
        self.peers = []

    def tearDown(self):
        for c in self.peers:
            c.close()
        super().tearDown()

    def relay(self, *args, listen="127.0.0.1:0"):
        return self.start(Server, [CHAT, "--broker", "-v", "--listen",
                                   listen] + list(args))

    def peer(self, srv, src="127.0.0.1", dst="127.0.0.1"):
        c = Peer(srv.port, src, dst)
        self.peers.append(c)
        return c

    def assertJoins(self, srv, src="127.0.0.1", dst="127.0.0.1"):
        c = self.peer(srv, src, dst)
        self.assertTrue(c.joined(), "%s refused" % src)
        return c

    def assertRefused(self, srv, src, dst="127.0.0.1"):
        c = self.peer(srv, src, dst)
        self.assertFalse(c.joined(), "%s let in" % src)
        c.close()

    def refusals(self, p, rx):
        return len([l for l in p.stderr_text().splitlines()
                    if re.search(rx, l)])

    def stop(self, p):
        p.signal(signal.SIGTERM)
        self.assertEqual(p.wait(20), -signal.SIGTERM, p.stderr_text())
        p.t.join(5)
        self.assertGroupGone(p)
        self.assertNotIn("Sanitizer", p.stderr_text())
        self.assertNotIn("runtime error", p.stderr_text())

    # --- the relay ---

    def test_relay_denied_source_never_joins(self):
        """A denied source is closed before a byte, never joins, costs no
        name and is never announced; its 30 refusals log one line, while
        another source's refusal logs its own."""
        srv = self.relay("--deny", "127.0.0.2", "--deny", "127.0.0.3")
        a = self.assertJoins(srv)
        self.assertEqual(a.name, b"user1")
        for _ in range(30):
            self.assertRefused(srv, "127.0.0.2")
        self.assertRefused(srv, "127.0.0.3")
        srv.wait_line(r"refused 127\.0\.0\.3:\d+: denied by --allow/--deny")
        c = self.assertJoins(srv)
        self.assertEqual(c.name, b"user2")
        a.wait_line(b"* user2 joined")
        self.assertEqual(a.after_welcome(), b"* user2 joined\n")
        self.assertEqual(self.refusals(srv, r"refused 127\.0\.0\.2:\d+: "
                                            r"denied by --allow/--deny$"), 1)
        self.assertEqual(self.refusals(srv, r"refused "), 2)
        srv.signal(signal.SIGUSR1)
        srv.wait_line(r"stats: clients=2 open=2 accepted=2 refused=0 "
                      r"denied=31 per_source=0 rate=0 table_full=0 uid=0$")
        self.stop(srv)

    def test_relay_allow_only_listed_source(self):
        srv = self.relay("--allow", "127.0.0.3")
        a = self.assertJoins(srv, "127.0.0.3")
        self.assertRefused(srv, "127.0.0.1")
        b = self.assertJoins(srv, "127.0.0.3")
        a.wait_line(b"* " + b.name + b" joined")
        self.assertEqual(a.after_welcome(), b"* %s joined\n" % b.name)
        srv.wait_line(r"refused 127\.0\.0\.1:\d+: denied by --allow/--deny")
        self.stop(srv)

    def test_relay_ipv4_rules_match_mapped_and_ipv6_peers(self):
        """On a port alone (one socket for IPv6 and IPv4) an IPv4 peer
        arrives as ::ffff:a.b.c.d and is matched by the IPv4 rules, a rule
        written in ::ffff:0:0/96 too; ::1 by the IPv6 ones."""
        srv = self.relay("--deny", "127.0.0.2", "--deny", "::ffff:127.0.0.4",
                         "--allow", "127.0.0.0/8", "--allow", "::1",
                         listen="0")
        self.assertJoins(srv, "127.0.0.1")
        self.assertJoins(srv, "127.0.0.3")
        self.assertJoins(srv, "::1", "::1")
        self.assertRefused(srv, "127.0.0.2")
        self.assertRefused(srv, "127.0.0.4")
        srv.wait_line(r"refused \S*127\.0\.0\.2\]?:\d+: denied")
        srv.wait_line(r"refused \S*127\.0\.0\.4\]?:\d+: denied")
        self.stop(srv)
        srv = self.relay("--deny", "::1", "--allow", "127.0.0.1", listen="0")
        self.assertJoins(srv, "127.0.0.1")
        self.assertRefused(srv, "::1", "::1")
        self.assertRefused(srv, "127.0.0.3")
        srv.wait_line(r"refused \[::1\]:\d+: denied")
        self.stop(srv)

    def test_relay_max_clients(self):
        """The 4th client is closed at once while 3 are in, unannounced;
        once one has left, the next joins."""
        srv = self.relay("--max-clients", "3")
        cs = [self.assertJoins(srv) for _ in range(3)]
        # Nothing left to send to the one that will leave.
        cs[1].wait_line(b"* " + cs[2].name + b" joined")
        self.assertRefused(srv, "127.0.0.1")
        self.assertRefused(srv, "127.0.0.2")
        srv.wait_line(r"refused 127\.0\.0\.1:\d+: --max-clients 3 "
                      r"reached$")
        # SIGUSR1 counts them, and the relay goes on.
        srv.signal(signal.SIGUSR1)
        srv.wait_line(r"stats: clients=3 open=3 accepted=3 refused=2$")
        cs[1].close()
        cs[0].wait_line(b"* " + cs[1].name + b" left")
        d = self.assertJoins(srv, "127.0.0.2")
        cs[0].wait_line(b"* " + d.name + b" joined")
        self.assertEqual(cs[0].after_welcome(),
                         b"* %s joined\n* %s joined\n* %s left\n* %s joined\n"
                         % (cs[1].name, cs[2].name, cs[1].name, d.name))
        self.assertRefused(srv, "127.0.0.3")
        self.stop(srv)

    def test_relay_per_source_limit_under_a_burst(self):
        """20 connects at once from one source with
        --max-conns-per-source 2: exactly 2 join; another source still
        does."""
        srv = self.relay("--max-conns-per-source", "2")
        go = threading.Barrier(20)
        peers = [None] * 20

        def connect(i):
            go.wait(10)
            peers[i] = Peer(srv.port, "127.0.0.2")

        ts = [threading.Thread(target=connect, args=(i,)) for i in range(20)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(20)
        self.assertNotIn(None, peers)
        self.peers += peers
        joined = [c for c in peers if c.joined()]
        self.assertEqual(len(joined), 2)
        other = self.assertJoins(srv, "127.0.0.1")
        for c in joined:
            c.wait_line(b"* " + other.name + b" joined")
        joins = sum(c.after_welcome().count(b" joined\n") for c in joined)
        self.assertEqual(joins, 3)
        srv.wait_line(r"refused 127\.0\.0\.2:\d+: --max-conns-per-source 2 "
                      r"reached$")
        # A place freed is a place to take.
        joined[0].close()
        self.assertJoins(srv, "127.0.0.2")
        self.assertRefused(srv, "127.0.0.2")
        self.stop(srv)

    def test_relay_accept_rate_per_source(self):
        """--accept-rate 0.05 (one connection in 20 s) with a burst of 3:
        of 6 quick connects from one source the first 3 join, even though
        each left; another source is not held back."""
        srv = self.relay("--accept-rate", "0.05/s", "--accept-burst", "3")
        got = []
        for _ in range(6):
            c = self.peer(srv, "127.0.0.2")
            got.append(c.joined())
            c.close()
        self.assertEqual(got, [True, True, True, False, False, False])
        for _ in range(3):
            self.assertJoins(srv, "127.0.0.1")
        srv.wait_line(r"refused 127\.0\.0\.2:\d+: over --accept-rate 0\.05/s$")
        self.stop(srv)

    def test_relay_tls_refused_before_the_handshake(self):
        """Over TLS a denied client is closed at accept: its handshake
        gets no ServerHello and is never logged as failed."""
        tlscerts.make(self.tmp.name)
        path = lambda n: tlscerts.path(self.tmp.name, n)  # noqa: E731
        srv = self.relay("--tls-cert", path("server.pem"), "--tls-key",
                         path("server.key"), "--deny", "127.0.0.2",
                         listen="tls://127.0.0.1:0")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(path("ca.pem"))
        raw = connect_from("127.0.0.2", srv.port)
        with self.assertRaises((ssl.SSLError, OSError)):
            ctx.wrap_socket(raw, server_hostname="127.0.0.1")
        raw.close()
        srv.wait_line(r"refused 127\.0\.0\.2:\d+: denied")
        s = ctx.wrap_socket(connect_from("127.0.0.1", srv.port),
                            server_hostname="127.0.0.1")
        s.settimeout(10)
        self.assertTrue(WELCOME.match(s.recv(1000)))
        s.close()
        self.assertNotIn("handshake", srv.stderr_text())
        self.stop(srv)

    # --- the endpoint's listener ---

    def listen_chat(self, *extra, stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL):
        return self.start(Server, [CHAT, "--mode", MODE] + list(extra) +
                          ["--listen", "127.0.0.1:0"],
                          stdin=stdin, stdout=stdout)

    def test_listen_denied_peer_closed_then_allowed_peer_served(self):
        """A denied peer is closed before a byte either way and the
        listener goes on waiting: the next allowed peer gets the session
        and only its bytes reach standard output."""
        out_r, out_w = os.pipe()
        in_r, in_w = os.pipe()
        p = self.listen_chat("--deny", "127.0.0.2", stdin=in_r, stdout=out_w)
        os.close(out_w)
        os.close(in_r)
        os.write(in_w, b"to the peer\n")
        s = connect_from("127.0.0.2", p.port)
        try:
            s.sendall(b"from a denied peer\n")
            self.assertEqual(recv_all(s, 10), b"")
        except ConnectionResetError:
            pass
        s.close()
        p.wait_line(r"refused 127\.0\.0\.2:\d+: denied by --allow/--deny")
        s = connect_from("127.0.0.1", p.port)
        p.wait_line(r"connected to 127\.0\.0\.1:")
        s.sendall(b"from the peer\n")
        s.shutdown(socket.SHUT_WR)
        os.close(in_w)
        self.assertEqual(recv_all(s, 20), b"to the peer\n")
        s.close()
        self.assertEqual(p.wait(20), 0, p.stderr_text())
        with os.fdopen(out_r, "rb") as f:
            self.assertEqual(f.read(), b"from the peer\n")
        self.assertEqual(self.refusals(p, r"connected to"), 1)
        self.assertGroupGone(p)
        self.assertNotIn("Sanitizer", p.stderr_text())

    def test_listen_keep_open_lists_and_rate(self):
        """With --keep-open each peer is judged as it comes: a denied one
        and one over its rate are closed between sessions, the others
        served in turn."""
        out_r, out_w = os.pipe()
        p = self.listen_chat("-k", "--deny", "127.0.0.2", "--accept-rate",
                             "0.05", "--accept-burst", "2", stdout=out_w)
        os.close(out_w)
        served = 0

        def session(src, data):
            s = connect_from(src, p.port)
            self.assertEqual(recv_all(s, 10), b"")
            s.sendall(data)
            s.close()

        def refused(src, rx):
            s = connect_from(src, p.port)
            try:
                s.sendall(b"not shown\n")
                self.assertEqual(recv_all(s, 10), b"")
            except ConnectionResetError:
                pass
            s.close()
            p.wait_line(rx)

        refused("127.0.0.2", r"refused 127\.0\.0\.2:\d+: denied")
        for src, data in (("127.0.0.3", b"one\n"), ("127.0.0.3", b"two\n")):
            session(src, data)
            served += 1
            p.wait_line(PEER_FINISHED, count=served)
        refused("127.0.0.3", r"refused 127\.0\.0\.3:\d+: over --accept-rate [0-9.]+/s$")
        session("127.0.0.1", b"three\n")
        p.wait_line(PEER_FINISHED, count=served + 1)
        self.stop(p)
        with os.fdopen(out_r, "rb") as f:
            self.assertEqual(f.read(), b"one\ntwo\nthree\n")
        self.assertEqual(self.refusals(p, r"connected to"), 3)

    def test_bad_admission_usage(self):
        """Bad values, and rules where nothing is accepted: exit 2 with
        the message and the usage, and nothing started."""
        cases = [
            (["--listen", "0", "--allow", "10.0.0.0/33"],
             "--allow 10.0.0.0/33: prefix length must be 0 to 32"),
            (["--listen", "0", "--deny", "10.1.0.0/8"], "host bits set"),
            (["--listen", "0", "--max-conns-per-source", "0"],
             "--max-conns-per-source"),
            (["--broker", "--listen", "0", "--max-clients", "0"],
             "bad --max-clients '0'"),
            (["--listen", "0", "--max-clients", "5"],
             "--max-clients needs --broker"),
            (["--listen", "0", "--accept-burst", "4"], "--accept-burst"),
            (["--allow", "127.0.0.1", "127.0.0.1", "1"],
             "--allow needs --listen"),
            (["--max-conns-per-source", "1", "127.0.0.1:1"],
             "--max-conns-per-source needs --listen"),
        ]
        for args, msg in cases:
            argv = [CHAT] + (["--mode", MODE] if "--broker" not in args
                             else []) + args
            r = subprocess.run(argv, stdin=subprocess.DEVNULL,
                               capture_output=True, timeout=10)
            err = r.stderr.decode()
            self.assertEqual(r.returncode, 2, (args, err))
            self.assertIn(msg, err, args)
            self.assertIn("usage: ", err, args)
            self.assertEqual(r.stdout, b"", args)
            self.assertNotIn("listening", err, args)


if __name__ == "__main__":
    fltest.main()
