"""Integration tests for forkloop-echo's admission rules: --allow, --deny,
their files, --max-conns-per-source and --accept-rate, over TCP, TLS and
UDP, in the mode under test (FORKLOOP_MODE, and FORKLOOP_THREADS for event
mode's loops).

Linux routes the whole of 127.0.0.0/8 to the loopback interface, so a client
socket bound to 127.0.0.2, 127.0.0.3, ... before it connects is a source of
its own to the daemon.
"""

import os
import re
import selectors
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
from fltest import Server, recv_exactly, wait_until  # noqa: E402
from echo_test import listening_ports  # noqa: E402

MODE = fltest.mode()
THREADS = os.environ.get("FORKLOOP_THREADS")
STATS_RE = re.compile(r"stats: open=(\d+) accepted=(\d+) refused=(\d+) "
                      r"bytes_in=\d+ bytes_out=\d+(?: udp_in=\d+ udp_out=\d+ "
                      r"udp_dropped=(\d+))? denied=(\d+) per_source=(\d+) "
                      r"rate=(\d+) table_full=(\d+) uid=(\d+)$")
STATS_KEYS = ("open", "accepted", "refused", "udp_dropped", "denied",
              "per_source", "rate", "table_full", "uid")
UDP_LINE_RE = r"listening on (\S+):(\d+) \(udp, %s mode\)$" % MODE


def verdicts(socks, timeout=30.0):
    """Send each socket a tag of its own and wait for what happens: 'echo'
    when the tag comes back whole, 'closed' when the server closed the
    connection without echoing a byte (EOF or reset), 'garbage' otherwise,
    None if nothing happened within timeout. Sockets stay open."""
    out = [None] * len(socks)
    got = [b""] * len(socks)
    sel = selectors.DefaultSelector()
    for i, s in enumerate(socks):
        try:
            s.sendall(b"<%d>" % i)
        except OSError:
            out[i] = "closed"
            continue
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, i)
    deadline = time.monotonic() + timeout
    while sel.get_map() and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=max(0.0, deadline - time.monotonic())):
            i, s = key.data, key.fileobj
            tag = b"<%d>" % i
            try:
                b = s.recv(4096)
            except BlockingIOError:
                continue
            except OSError:
                b = b""
            if b:
                got[i] += b
                if got[i] == tag:
                    out[i] = "echo"
                elif tag.startswith(got[i]):
                    continue
                else:
                    out[i] = "garbage"
            else:
                out[i] = "garbage" if got[i] else "closed"
            sel.unregister(s)
    sel.close()
    for s in socks:
        s.settimeout(30)
    return out


class AdmitTest(fltest.ProcTestCase):

    def setUp(self):
        super().setUp()
        self.socks = []
        self.tmp = tempfile.TemporaryDirectory()

    def tearDown(self):
        for s in self.socks:
            try:
                s.close()
            except OSError:
                pass
        self.tmp.cleanup()
        super().tearDown()

    # -- helpers ---------------------------------------------------------

    def argv(self, *opts, listen=("127.0.0.1:0",)):
        argv = [fltest.binary("echo"), "--mode", MODE]
        for spec in listen:
            argv += ["--listen", spec]
        if THREADS is not None:
            argv += ["--threads", THREADS]
        return argv + list(opts)

    def server(self, *opts, listen=("127.0.0.1:0",)):
        return self.start(Server, self.argv(*opts, listen=listen),
                          count=len(listen))

    def connect_from(self, src, srv, host="127.0.0.1"):
        """A connection to srv from the address src (127.0.0.2, ::1)."""
        family = socket.AF_INET6 if ":" in src else socket.AF_INET
        s = socket.socket(family, socket.SOCK_STREAM)
        self.socks.append(s)
        s.bind((src, 0))
        s.settimeout(30)
        s.connect((host, srv.port))
        return s

    def assertEchoes(self, sock, n=16 * 1024):
        data = os.urandom(n)
        sock.sendall(data)
        self.assertEqual(recv_exactly(sock, n, timeout=30), data)

    def stats(self, srv):
        """SIGUSR1; the next stats line's numbers as a dict."""
        with srv.cond:
            n = sum(1 for l in srv.lines
                    if l is not None and STATS_RE.search(l))
        srv.signal(signal.SIGUSR1)
        m = srv.wait_line(STATS_RE.pattern, timeout=10, count=n + 1)[-1]
        return {k: int(v) if v is not None else None
                for k, v in zip(STATS_KEYS, m.groups())}

    def wait_stats(self, srv, pred, timeout=20.0):
        deadline = time.monotonic() + timeout
        while True:
            st = self.stats(srv)
            if pred(st) or time.monotonic() > deadline:
                return st
            time.sleep(0.1)

    def lines(self, srv, pattern):
        rx = re.compile(pattern)
        with srv.cond:
            return [l for l in srv.lines if l is not None and rx.search(l)]

    def usage_error(self, *opts):
        """Run with opts; it must exit 2. Returns its standard error."""
        p = subprocess.run(self.argv(*opts), stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=30)
        err = p.stderr.decode()
        self.assertEqual(p.returncode, 2, err)
        self.assertEqual(p.stdout, b"")
        self.assertTrue(err.startswith("forkloop-echo: "), err)
        self.assertIn("usage: forkloop-echo", err)
        return err

    def write(self, name, text):
        path = os.path.join(self.tmp.name, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    # -- access lists ----------------------------------------------------

    def test_allow_and_deny_ipv4_sources(self):
        # 127.0.0.0/30 allowed, 127.0.0.2 denied inside it: deny wins.
        srv = self.server("--allow", "127.0.0.0/30", "--deny", "127.0.0.2")
        want = {"127.0.0.1": "echo", "127.0.0.2": "closed",
                "127.0.0.3": "echo", "127.0.0.5": "closed",
                "127.0.0.9": "closed"}
        srcs = sorted(want)
        socks = [self.connect_from(src, srv) for src in srcs]
        got = verdicts(socks)
        self.assertEqual(dict(zip(srcs, got)), want)
        for src, s in zip(srcs, socks):
            if want[src] == "echo":
                self.assertEchoes(s, 256 * 1024)
        st = self.stats(srv)
        self.assertEqual((st["denied"], st["accepted"], st["open"],
                          st["refused"], st["per_source"], st["rate"]),
                         (3, 2, 2, 0, 0, 0), st)
        srv.wait_line(r"refused 127\.0\.0\.2:\d+: denied by --allow/--deny$")
        srv.wait_line(r"refused 127\.0\.0\.9:\d+: denied by --allow/--deny$")

    def test_rule_files(self):
        allow = self.write("allow", "# loopback only\n\n127.0.0.0/8\n"
                                    "2001:db8::/32   # documentation\n")
        deny = self.write("deny", "".join("10.%d.0.0/16\n" % i
                                          for i in range(200)) +
                          "127.0.0.4\n::ffff:127.0.0.5\n")
        srv = self.server("--allow-file", allow, "--deny-file", deny)
        srcs = ["127.0.0.3", "127.0.0.4", "127.0.0.5"]
        got = verdicts([self.connect_from(s, srv) for s in srcs])
        self.assertEqual(got, ["echo", "closed", "closed"])
        self.assertEqual(self.stats(srv)["denied"], 2)

    def test_ipv6_and_ipv4_mapped_peers(self):
        # [::] takes IPv4 too: a peer from 127.0.0.2 is ::ffff:127.0.0.2,
        # and an IPv4 rule must match it.
        srv = self.server("--deny", "127.0.0.2", listen=("[::]:0",))
        got = verdicts([self.connect_from("127.0.0.2", srv),
                        self.connect_from("127.0.0.3", srv),
                        self.connect_from("::1", srv, host="::1")])
        self.assertEqual(got, ["closed", "echo", "echo"])
        self.assertEqual(self.stats(srv)["denied"], 1)
        srv.wait_line(r"refused \S*127\.0\.0\.2\S*: denied")
        # An IPv4 allow list lets mapped IPv4 peers in, not IPv6 ones.
        srv2 = self.server("--allow", "127.0.0.0/8", listen=("[::]:0",))
        got = verdicts([self.connect_from("127.0.0.2", srv2),
                        self.connect_from("::1", srv2, host="::1")])
        self.assertEqual(got, ["echo", "closed"])
        # And an IPv6 rule matches IPv6 peers.
        srv3 = self.server("--deny", "::1", listen=("[::]:0",))
        got = verdicts([self.connect_from("127.0.0.2", srv3),
                        self.connect_from("::1", srv3, host="::1")])
        self.assertEqual(got, ["echo", "closed"])
        self.assertEqual(self.stats(srv3)["denied"], 1)

    def test_bad_rules_are_usage_errors(self):
        bad = self.write("deny", "10.0.0.0/8\n# fine\n10.1.0.0/8\n")
        err = self.usage_error("--deny-file", bad)
        self.assertIn(bad + ":3", err)
        err = self.usage_error("--allow-file", bad)
        self.assertIn(bad + ":3", err)
        missing = os.path.join(self.tmp.name, "missing")
        err = self.usage_error("--allow-file", missing)
        self.assertIn("--allow-file %s: " % missing, err)
        self.assertIn("--deny-file %s:3: " % bad,
                      self.usage_error("--deny-file", bad))
        # Whatever follows a NUL byte would be dropped unseen.
        nul = self.write("nul", "127.0.0.2\0junk\n")
        self.assertIn("--deny-file %s:1: a NUL byte" % nul,
                      self.usage_error("--deny-file", nul))
        self.assertIn("--allow 10.0.0.0/33",
                      self.usage_error("--allow", "10.0.0.0/33"))
        self.assertIn("nonsense", self.usage_error("--allow", "nonsense"))
        self.assertIn("--max-conns-per-source",
                      self.usage_error("--max-conns-per-source", "0"))
        self.assertIn("--accept-burst",
                      self.usage_error("--accept-burst", "4"))
        for opt, val in (("--max-conns-per-source", "3"),
                         ("--accept-rate", "10"),
                         ("--accept-burst", "3")):
            err = self.usage_error("--udp-only", opt, val)
            self.assertIn(opt + " applies to TCP connections: not with "
                          "--udp-only", err)

    # -- per-source limits -----------------------------------------------

    def test_per_source_limit_exact_under_a_burst(self):
        srv = self.server("--max-conns-per-source", "50")
        socks = [self.connect_from("127.0.0.2", srv) for _ in range(200)]
        got = verdicts(socks)
        self.assertEqual((got.count("echo"), got.count("closed")), (50, 150),
                         got)
        other = self.connect_from("127.0.0.3", srv)
        self.assertEchoes(other)
        st = self.stats(srv)
        self.assertEqual((st["per_source"], st["accepted"], st["open"],
                          st["denied"]), (150, 51, 51, 0), st)
        srv.wait_line(r"refused 127\.0\.0\.2:\d+: --max-conns-per-source 50 "
                      r"reached$")
        # Ten close: ten more get in, and only ten (in fork mode once the
        # children are reaped, which open= waits for).
        admitted = [s for s, v in zip(socks, got) if v == "echo"]
        for s in admitted[:10]:
            s.close()
        st = self.wait_stats(srv, lambda st: st["open"] == 41)
        self.assertEqual(st["open"], 41, st)
        more = [self.connect_from("127.0.0.2", srv) for _ in range(15)]
        got = verdicts(more)
        self.assertEqual((got.count("echo"), got.count("closed")), (10, 5),
                         got)
        self.assertEqual(self.stats(srv)["per_source"], 155)
        self.assertEchoes(admitted[10])
        self.assertEchoes(other)

    def test_max_conns_refusal_gives_the_source_back(self):
        # --max-conns refuses after admission: the source's count must not
        # keep a connection that never opened.
        srv = self.server("--max-conns-per-source", "2", "--max-conns", "1")
        a = self.connect_from("127.0.0.2", srv)
        self.assertEchoes(a)
        refused = [self.connect_from("127.0.0.2", srv) for _ in range(3)]
        self.assertEqual(verdicts(refused), ["closed"] * 3)
        st = self.stats(srv)
        self.assertEqual((st["refused"], st["per_source"]), (3, 0), st)
        a.close()
        self.wait_stats(srv, lambda st: st["open"] == 0)
        b = self.connect_from("127.0.0.2", srv)
        self.assertEchoes(b)
        b2 = self.connect_from("127.0.0.2", srv)
        self.assertEqual(verdicts([b2]), ["closed"])
        st = self.stats(srv)
        self.assertEqual((st["refused"], st["per_source"]), (4, 0), st)

    # -- accept rate -----------------------------------------------------

    def test_accept_rate_per_source(self):
        srv = self.server("--accept-rate", "20", "--accept-burst", "5")
        # Far over 20 a second: the burst of 5 gets in, then some are
        # refused. At most 20 more a second are let in while it lasts.
        start = time.monotonic()
        burst = [self.connect_from("127.0.0.2", srv) for _ in range(30)]
        got = verdicts(burst)
        took = time.monotonic() - start
        self.assertEqual(got.count("echo") + got.count("closed"), 30, got)
        self.assertEqual(got[:5], ["echo"] * 5, got)
        self.assertGreater(got.count("closed"), 0, got)
        self.assertLessEqual(got.count("echo"), 5 + 20 * took + 1, got)
        refused = got.count("closed")
        srv.wait_line(r"refused 127\.0\.0\.2:\d+: over --accept-rate 20/s$")

        # Meanwhile 127.0.0.2 goes on far over its rate; 127.0.0.3 at 4 a
        # second is never refused.
        stop = threading.Event()

        def hammer():
            for _ in range(400):
                if stop.is_set():
                    return
                try:
                    s = socket.socket()
                    s.bind(("127.0.0.2", 0))
                    s.settimeout(10)
                    s.connect(("127.0.0.1", srv.port))
                    s.close()
                except OSError:
                    pass
                time.sleep(0.005)
        t = threading.Thread(target=hammer, daemon=True)
        t.start()
        try:
            for _ in range(6):
                self.assertEqual(
                    verdicts([self.connect_from("127.0.0.3", srv)]),
                    ["echo"])
                time.sleep(0.25)
        finally:
            stop.set()
            t.join(30)
        st = self.stats(srv)
        self.assertGreaterEqual(st["rate"], refused, st)
        # A second later the bucket is full again: a burst of 5 gets in.
        time.sleep(1.0)
        again = [self.connect_from("127.0.0.2", srv) for _ in range(5)]
        self.assertEqual(verdicts(again), ["echo"] * 5)
        for s in again:
            self.assertEchoes(s, 1024)

    # -- TLS -------------------------------------------------------------

    def test_tls_handshake_failure_gives_the_source_back(self):
        cert = os.path.join(self.tmp.name, "cert.pem")
        key = os.path.join(self.tmp.name, "key.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec",
                        "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                        "-days", "2", "-subj", "/CN=127.0.0.1",
                        "-addext", "subjectAltName=IP:127.0.0.1",
                        "-keyout", key, "-out", cert],
                       check=True, timeout=60, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        srv = self.server("--tls-cert", cert, "--tls-key", key,
                          "--max-conns-per-source", "2",
                          listen=("tls://127.0.0.1:0",))
        ctx = ssl.create_default_context(cafile=cert)

        def tls_from(src):
            s = ctx.wrap_socket(self.connect_from(src, srv),
                                server_hostname="127.0.0.1")
            self.socks.append(s)
            return s
        # Two plaintext clients fail their handshakes; once closed, their
        # source has both its connections back.
        for _ in range(3):
            bad = [self.connect_from("127.0.0.2", srv) for _ in range(2)]
            for s in bad:
                s.sendall(b"GET / HTTP/1.0\r\n\r\n" * 20)
            for s in bad:
                s.settimeout(10)
                try:
                    while s.recv(4096):
                        pass
                except OSError:
                    pass
                s.close()
            self.wait_stats(srv, lambda st: st["open"] == 0)
        a, b = tls_from("127.0.0.2"), tls_from("127.0.0.2")
        for s in (a, b):
            self.assertEchoes(s, 64 * 1024)
        c = self.connect_from("127.0.0.2", srv)
        self.assertEqual(verdicts([c]), ["closed"])
        a.close()
        self.wait_stats(srv, lambda st: st["open"] == 1)
        d = tls_from("127.0.0.2")
        self.assertEchoes(d, 1024)
        self.assertEqual(self.stats(srv)["per_source"], 1)

    # -- UDP -------------------------------------------------------------

    def test_udp_denied_sources_get_no_reply(self):
        srv = self.server("--udp", "--deny", "127.0.0.2")
        port = int(srv.wait_line(UDP_LINE_RE)[0].group(2))

        def udp_from(src):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.socks.append(s)
            s.bind((src, 0))
            s.settimeout(10)
            return s
        ok, denied = udp_from("127.0.0.3"), udp_from("127.0.0.2")
        for i in range(5):
            denied.sendto(b"denied %d" % i, ("127.0.0.1", port))
        for i in range(5):
            ok.sendto(b"allowed %d" % i, ("127.0.0.1", port))
            self.assertEqual(ok.recvfrom(100)[0], b"allowed %d" % i)
        denied.settimeout(0.5)
        self.assertRaises(socket.timeout, denied.recvfrom, 100)
        st = self.stats(srv)
        self.assertEqual((st["denied"], st["udp_dropped"]), (5, 5), st)
        srv.wait_line(r"refused datagram from 127\.0\.0\.2:\d+: denied by "
                      r"--allow/--deny$")
        # TCP from the same source is refused too, and counted with them.
        self.assertEqual(verdicts([self.connect_from("127.0.0.2", srv)]),
                         ["closed"])
        self.assertEqual(self.stats(srv)["denied"], 6)

    # -- logging ---------------------------------------------------------

    def test_refusals_logged_once_per_source(self):
        srv = self.server("--allow", "127.0.0.1")
        for _ in range(50):
            s = self.connect_from("127.0.0.2", srv)
            self.assertEqual(verdicts([s]), ["closed"])
            s.close()
        self.assertEqual(self.stats(srv)["denied"], 50)
        self.assertEqual(len(self.lines(srv, r"refused 127\.0\.0\.2:")), 1,
                         srv.stderr_text())
        # Twenty sources at once: a line each at most, and at most
        # ADMIT_LOG_PER_SEC (10) in any second. The refusals all fall
        # between the first connect and the last close seen here.
        time.sleep(1.1)
        srcs = ["127.0.0.%d" % i for i in range(10, 30)]
        start = time.monotonic()
        socks = [self.connect_from(src, srv) for src in srcs]
        self.assertEqual(verdicts(socks), ["closed"] * 20)
        took = time.monotonic() - start
        self.assertEqual(self.stats(srv)["denied"], 70)
        per = [len(self.lines(srv, r"refused %s:" % re.escape(src)))
               for src in srcs]
        self.assertLessEqual(max(per), 1, per)
        self.assertGreaterEqual(sum(per), 10, per)
        if took < 0.9:
            self.assertEqual(sum(per), 10, (per, took))

    def test_quiet_logs_no_refusals(self):
        srv = self.start(fltest.Proc, self.argv("-q", "--deny", "127.0.0.2"))
        self.assertTrue(wait_until(lambda: listening_ports(srv.pid), 10),
                        "no listening socket; stderr:\n%s"
                        % srv.stderr_text())
        srv.port = listening_ports(srv.pid)[0]
        self.assertEqual(verdicts([self.connect_from("127.0.0.2", srv)]),
                         ["closed"])
        self.assertEqual(self.stats(srv)["denied"], 1)
        self.assertEqual(self.lines(srv, r"echo: refused "), [])
        srv.signal(signal.SIGTERM)
        self.assertEqual(srv.wait(timeout=20), 0)
        srv.t.join(5)
        self.assertEqual(len(srv.stderr_text().splitlines()), 1,
                         srv.stderr_text())


if __name__ == "__main__":
    fltest.main()
