"""Integration tests for --metrics: forkloop-echo in the mode under test
(FORKLOOP_MODE, and FORKLOOP_THREADS for event mode's loops) and the relay
(forkloop-chat --broker) serve /metrics in the Prometheus text format and
/healthz over HTTP on loopback.

Every scrape is parsed by the Prometheus project's own parser,
prometheus_client.parser.text_string_to_metric_families (Debian's
python3-prometheus-client), run by whichever interpreter can import it: the
one running the test, or Debian's /usr/bin/python3. None can: the test
fails, saying so.

Linux routes the whole of 127.0.0.0/8 to the loopback interface, so a client
bound to 127.0.0.2 is a source of its own to the daemon's access lists.
"""

import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fltest  # noqa: E402
from fltest import Server, recv_exactly, wait_until  # noqa: E402

MODE = fltest.mode()
THREADS = os.environ.get("FORKLOOP_THREADS")
METRICS_RE = r"metrics on http://(\[[0-9a-fA-F:.]+\]|[0-9.]+):(\d+)/metrics"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

PARSER = r"""
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = []
for fam in text_string_to_metric_families(sys.stdin.read()):
    out.append({"name": fam.name, "type": fam.type,
                "help": fam.documentation,
                "samples": [[s.name, s.labels, s.value] for s in fam.samples]})
json.dump(out, sys.stdout)
"""

_prom_python = []


def prom_python():
    """An interpreter that can import prometheus_client: this one, or
    Debian's. Fails the test when none can, never skips it."""
    if _prom_python:
        return _prom_python[0]
    tried = []
    for cand in (sys.executable, "/usr/bin/python3", shutil.which("python3")):
        if cand is None or cand in tried:
            continue
        tried.append(cand)
        r = subprocess.run([cand, "-c", "import prometheus_client.parser"],
                           stdin=subprocess.DEVNULL, capture_output=True,
                           timeout=30)
        if r.returncode == 0:
            _prom_python.append(cand)
            return cand
    raise AssertionError("no Python here can import prometheus_client "
                         "(tried %s): install Debian's "
                         "python3-prometheus-client" % ", ".join(tried))


def prom_parse(text):
    """The families of text as the Prometheus parser reads them:
    {family name: {"type", "help", "samples": {(name, labels): value}}},
    labels as a sorted tuple of (key, value)."""
    r = subprocess.run([prom_python(), "-c", PARSER], input=text.encode(),
                       capture_output=True, timeout=30)
    if r.returncode != 0:
        raise AssertionError("the Prometheus parser refused the text: %s\n%s"
                             % (r.stderr.decode(), text))
    fams = {}
    for f in json.loads(r.stdout):
        samples = {(s[0], tuple(sorted(s[1].items()))): s[2]
                   for s in f["samples"]}
        fams[f["name"]] = {"type": f["type"], "help": f["help"],
                           "samples": samples}
    return fams


def value(fams, family, sample=None, **labels):
    """One sample's value: family's own sample (or sample), with labels."""
    key = (sample or family, tuple(sorted(labels.items())))
    return fams[family]["samples"][key]


def metrics_addr(proc):
    m = proc.wait_line(METRICS_RE)[0]
    return m.group(1).strip("[]"), int(m.group(2))


class Http:
    """One HTTP/1.1 connection to the metrics port, kept open between
    requests as Prometheus keeps it."""

    def __init__(self, addr, source=None):
        self.c = http.client.HTTPConnection(
            addr[0], addr[1], timeout=30,
            source_address=(source, 0) if source else None)

    def get(self, path, method="GET", headers=None):
        self.c.request(method, path, headers=headers or {})
        r = self.c.getresponse()
        return r.status, dict(r.getheaders()), r.read()

    def close(self):
        self.c.close()


class MetricsCase(fltest.ProcTestCase):

    def setUp(self):
        super().setUp()
        self.socks = []
        self.https = []

    def tearDown(self):
        for s in self.socks:
            try:
                s.close()
            except OSError:
                pass
        for h in self.https:
            h.close()
        super().tearDown()

    def http(self, addr, source=None):
        h = Http(addr, source)
        self.https.append(h)
        return h

    def scrape(self, h):
        status, headers, body = h.get("/metrics")
        self.assertEqual(status, 200, body)
        self.assertEqual(headers.get("Content-Type"), CONTENT_TYPE)
        text = body.decode("utf-8")
        self.assertTrue(text.endswith("\n"), text)
        fams = prom_parse(text)
        for name, f in fams.items():
            self.assertTrue(f["help"], "%s has no HELP" % name)
            self.assertNotEqual(f["type"], "unknown",
                                "%s has no TYPE" % name)
        return fams

    def wait_scrape(self, h, pred, timeout=20.0):
        """Scrape until pred(families) holds; the last scrape."""
        deadline = time.monotonic() + timeout
        while True:
            fams = self.scrape(h)
            if pred(fams) or time.monotonic() > deadline:
                return fams
            time.sleep(0.05)

    def connect_from(self, src, port, host="127.0.0.1", rcvbuf=None):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.socks.append(s)
        if rcvbuf is not None:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        s.bind((src, 0))
        s.settimeout(30)
        s.connect((host, port))
        return s

    def assertClosedUnread(self, s):
        """The peer closed s without sending a byte (EOF or reset)."""
        s.settimeout(30)
        try:
            self.assertEqual(s.recv(1), b"")
        except ConnectionResetError:
            pass


class MetricsTest(MetricsCase):
    """forkloop-echo's endpoint, in the mode under test."""

    def argv(self, *opts, metrics="127.0.0.1:0"):
        argv = [fltest.binary("echo"), "--mode", MODE,
                "--listen", "127.0.0.1:0", "--metrics", metrics]
        if THREADS is not None:
            argv += ["--threads", THREADS]
        return argv + list(opts)

    def server(self, *opts, metrics="127.0.0.1:0"):
        srv = self.start(Server, self.argv(*opts, metrics=metrics))
        srv.maddr = metrics_addr(srv)
        return srv

    def echo_one(self, port, data):
        s = self.connect_from("127.0.0.1", port)
        s.sendall(data)
        self.assertEqual(recv_exactly(s, len(data)), data)
        return s

    def test_counters_match_a_known_workload(self):
        n, k = 6, 100000
        srv = self.server()
        h = self.http(srv.maddr)
        fams = self.scrape(h)
        types = {
            "forkloop_echo_connections_open": "gauge",
            "forkloop_echo_connections_accepted": "counter",
            "forkloop_echo_connections_refused": "counter",
            "forkloop_echo_received_bytes": "counter",
            "forkloop_echo_sent_bytes": "counter",
            "forkloop_echo_udp_datagrams_received": "counter",
            "forkloop_echo_udp_datagrams_sent": "counter",
            "forkloop_echo_udp_datagrams_dropped": "counter",
            "forkloop_echo_draining": "gauge",
            "forkloop_echo_connection_duration_seconds": "histogram",
        }
        self.assertEqual({f: fams[f]["type"] for f in fams}, types)
        socks = []
        for _ in range(n):
            s = self.connect_from("127.0.0.1", srv.port)
            socks.append(s)
        for i, s in enumerate(socks):
            data = bytes([i]) * k
            s.sendall(data)
            self.assertEqual(recv_exactly(s, k), data)
        # Open and counted while open: all n, their bytes included.
        fams = self.wait_scrape(h, lambda f: value(
            f, "forkloop_echo_sent_bytes", "forkloop_echo_sent_bytes_total")
            == n * k)
        self.assertEqual(value(fams, "forkloop_echo_connections_open"), n)
        for s in socks:
            s.shutdown(socket.SHUT_WR)
            self.assertEqual(s.recv(1), b"")
            s.close()
        dur = "forkloop_echo_connection_duration_seconds"
        fams = self.wait_scrape(
            h, lambda f: value(f, dur, dur + "_count") == n and
            value(f, "forkloop_echo_connections_open") == 0)
        got = {
            "open": value(fams, "forkloop_echo_connections_open"),
            "accepted": value(fams, "forkloop_echo_connections_accepted",
                              "forkloop_echo_connections_accepted_total"),
            "in": value(fams, "forkloop_echo_received_bytes",
                        "forkloop_echo_received_bytes_total"),
            "out": value(fams, "forkloop_echo_sent_bytes",
                         "forkloop_echo_sent_bytes_total"),
            "count": value(fams, dur, dur + "_count"),
            "inf": value(fams, dur, dur + "_bucket", le="+Inf"),
            "draining": value(fams, "forkloop_echo_draining"),
        }
        self.assertEqual(got, {"open": 0, "accepted": n, "in": n * k,
                               "out": n * k, "count": n, "inf": n,
                               "draining": 0})
        # Cumulative buckets over fixed bounds, 1 ms to 1 hour.
        buckets = sorted((float(dict(lb)["le"]), v)
                         for (name, lb), v in fams[dur]["samples"].items()
                         if name == dur + "_bucket")
        self.assertEqual([b for b, _ in buckets][:2], [0.001, 0.005])
        self.assertEqual(buckets[-2][0], 3600.0)
        counts = [v for _, v in buckets]
        self.assertEqual(counts, sorted(counts))
        self.assertGreater(value(fams, dur, dur + "_sum"), 0)
        self.assertLess(value(fams, dur, dur + "_sum"), 600)
        refused = {dict(lb)["reason"]: v for (_, lb), v in
                   fams["forkloop_echo_connections_refused"]["samples"]
                   .items()}
        want = {"max_conns", "denied", "per_source", "rate", "table_full",
                "uid"} | ({"fork_failed"} if MODE == "fork" else set())
        self.assertEqual(set(refused), want)
        self.assertEqual(set(refused.values()), {0})
        # The scrapes came over one kept connection: never an echo one.
        srv.signal(signal.SIGTERM)
        self.assertEqual(srv.wait(timeout=30), 0)

    def test_refusals_counted_by_reason(self):
        srv = self.server("--max-conns", "1", "--deny", "127.0.0.2")
        h = self.http(srv.maddr)
        # An idle metrics connection holds no echo slot.
        idle = self.http(srv.maddr)
        self.assertEqual(idle.get("/healthz")[0], 200)
        kept = self.echo_one(srv.port, b"first")
        full = self.connect_from("127.0.0.1", srv.port)
        self.assertClosedUnread(full)
        denied = self.connect_from("127.0.0.2", srv.port)
        self.assertClosedUnread(denied)
        refused = "forkloop_echo_connections_refused"
        total = refused + "_total"
        fams = self.wait_scrape(
            h, lambda f: value(f, refused, total, reason="max_conns") == 1
            and value(f, refused, total, reason="denied") == 1)
        got = {dict(lb)["reason"]: v
               for (_, lb), v in fams[refused]["samples"].items()}
        want = {"max_conns": 1, "denied": 1, "per_source": 0, "rate": 0,
                "table_full": 0, "uid": 0}
        if MODE == "fork":
            want["fork_failed"] = 0
        self.assertEqual(got, want)
        self.assertEqual(value(fams, "forkloop_echo_connections_accepted",
                               "forkloop_echo_connections_accepted_total"), 1)
        self.assertEqual(value(fams, "forkloop_echo_connections_open"), 1)
        kept.sendall(b"still")
        self.assertEqual(recv_exactly(kept, 5), b"still")

    def test_udp_datagrams_counted_by_reason(self):
        srv = self.server("--udp", "--udp-rate", "2", "--deny", "127.0.0.2")
        h = self.http(srv.maddr)
        ok = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        bad = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.socks += [ok, bad]
        ok.bind(("127.0.0.1", 0))
        bad.bind(("127.0.0.2", 0))
        n = 10
        for i in range(n):
            ok.sendto(b"d%d" % i, ("127.0.0.1", srv.port))
        bad.sendto(b"x", ("127.0.0.1", srv.port))
        bad.sendto(b"y", ("127.0.0.1", srv.port))
        replies = 0
        ok.settimeout(2)
        try:
            while replies < n:
                ok.recv(100)
                replies += 1
        except socket.timeout:
            pass
        sent = "forkloop_echo_udp_datagrams_sent"
        recvd = "forkloop_echo_udp_datagrams_received"
        drop = "forkloop_echo_udp_datagrams_dropped"
        fams = self.wait_scrape(
            h, lambda f: value(f, recvd, recvd + "_total") == n + 2)
        drops = {dict(lb)["reason"]: v
                 for (_, lb), v in fams[drop]["samples"].items()}
        self.assertEqual(value(fams, recvd, recvd + "_total"), n + 2)
        self.assertEqual(value(fams, sent, sent + "_total"), replies)
        self.assertEqual(drops, {"guard": 0, "truncated": 0, "acl": 2,
                                 "rate": n - replies, "send_error": 0})
        # Ten datagrams sent at once against 2 a second.
        self.assertGreaterEqual(replies, 2)
        self.assertLess(replies, n)

    def test_healthz_then_503_through_a_drain(self):
        srv = self.server("--drain-timeout", "60")
        h = self.http(srv.maddr)
        self.assertEqual(h.get("/healthz")[::2], (200, b"ok\n"))
        # A client that sends and does not read: echo waits for it.
        s = self.connect_from("127.0.0.1", srv.port, rcvbuf=4096)
        s.setblocking(False)
        sent = 0
        chunk = b"z" * 65536
        deadline = time.monotonic() + 30
        stalls = 0
        while sent < 64 << 20 and time.monotonic() < deadline and stalls < 20:
            try:
                sent += s.send(chunk)
                stalls = 0
            except BlockingIOError:
                stalls += 1
                time.sleep(0.02)
        self.assertGreater(sent, 0)
        srv.signal(signal.SIGTERM)
        status = wait_until(
            lambda: (lambda r: r if r[0] == 503 else None)(h.get("/healthz")),
            20)
        self.assertIsNotNone(status, "no 503 while draining")
        self.assertEqual((status[0], status[2]), (503, b"draining\n"))
        fams = self.scrape(h)
        self.assertEqual(value(fams, "forkloop_echo_draining"), 1)
        self.assertIsNone(srv.p.poll(), "it must still be draining")
        # Reading the echo owed lets the drain end, and the daemon with it.
        s.setblocking(True)
        s.settimeout(60)
        got = bytearray()
        try:
            while True:
                b = s.recv(1 << 20)
                if not b:
                    break
                got += b
        except ConnectionResetError:
            pass
        s.close()
        self.assertTrue(got)
        self.assertEqual(got.count(b"z"), len(got))
        self.assertEqual(srv.wait(timeout=30), 0)
        with self.assertRaises(OSError):
            socket.create_connection(srv.maddr, timeout=5).close()

    def test_paths_methods_and_limits(self):
        srv = self.server()
        h = self.http(srv.maddr)
        status, headers, body = h.get("/nowhere")
        self.assertEqual((status, body), (404, b"not found\n"))
        for path in ("/metrics", "/healthz"):
            for method in ("POST", "PUT", "DELETE"):
                status, headers, body = h.get(path, method)
                self.assertEqual(status, 405, (method, path))
                self.assertEqual(headers.get("Allow"), "GET, HEAD")
        status, headers, body = h.get("/metrics", "HEAD")
        self.assertEqual((status, body), (200, b""))
        self.assertEqual(headers.get("Content-Type"), CONTENT_TYPE)
        status, headers, body = h.get("/metrics?x=1")
        self.assertEqual(status, 200)
        # A request past the header limit is refused, its connection closed.
        big = self.http(srv.maddr)
        status, headers, body = big.get("/metrics",
                                        headers={"X-Pad": "p" * 20000})
        self.assertIn(status, (400, 413))
        # The daemon goes on serving both.
        self.assertEqual(self.http(srv.maddr).get("/healthz")[0], 200)
        self.echo_one(srv.port, b"after")

    def test_deny_applies_to_the_metrics_port(self):
        srv = self.server("--deny", "127.0.0.2")
        s = self.connect_from("127.0.0.2", srv.maddr[1])
        cport = s.getsockname()[1]
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertClosedUnread(s)
        srv.wait_line(r"127\.0\.0\.2:%d \(metrics\)" % cport)
        h = self.http(srv.maddr)
        fams = self.scrape(h)
        # Not an echo connection: counted nowhere.
        refused = "forkloop_echo_connections_refused"
        self.assertEqual(value(fams, refused, refused + "_total",
                               reason="denied"), 0)
        self.assertEqual(value(fams, "forkloop_echo_connections_accepted",
                               "forkloop_echo_connections_accepted_total"), 0)
        self.echo_one(srv.port, b"served")

    def test_ipv6_address_and_bad_options(self):
        srv = self.server(metrics="[::1]:0")
        srv.wait_line(r"metrics on http://\[::1\]:%d/metrics$" % srv.maddr[1])
        self.assertEqual(srv.maddr[0], "::1")
        self.scrape(self.http(srv.maddr))
        for bad in ("tls://127.0.0.1:0", "unix:/tmp/x", "127.0.0.1:99999",
                    "[::1"):
            p = subprocess.run(self.argv(metrics=bad),
                               stdin=subprocess.DEVNULL, capture_output=True,
                               timeout=30)
            self.assertEqual(p.returncode, 2, (bad, p.stderr))
            self.assertIn(b"--metrics", p.stderr)
        # A port in use fails the start; nothing is left listening.
        taken = socket.socket()
        self.socks.append(taken)
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        p = subprocess.run(
            self.argv(metrics="127.0.0.1:%d" % taken.getsockname()[1]),
            stdin=subprocess.DEVNULL, capture_output=True, timeout=30)
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn(b"--metrics", p.stderr)
        self.assertNotIn(b"listening on", p.stderr)


class RelayClient:
    """A relay client whose bytes a thread collects (unless read=False)."""

    def __init__(self, port, read=True, rcvbuf=None):
        self.sock = socket.socket()
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(30)
        self.sock.connect(("127.0.0.1", port))
        self.buf = bytearray()
        self.cond = threading.Condition()
        if read:
            threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        while True:
            try:
                self.sock.settimeout(None)
                b = self.sock.recv(1 << 16)
            except OSError:
                b = b""
            with self.cond:
                self.buf += b
                self.cond.notify_all()
            if not b:
                return

    def wait(self, what, timeout=20.0):
        deadline = time.monotonic() + timeout
        with self.cond:
            while what not in self.buf:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("no %r in %r" % (what,
                                                           bytes(self.buf)))
                self.cond.wait(left)

    def count(self, what):
        with self.cond:
            return self.buf.count(what)

    def close(self):
        self.sock.close()


class RelayMetricsTest(MetricsCase):
    """The relay's endpoint (event design only)."""

    def relay(self, *opts):
        srv = self.start(Server, [fltest.binary("chat"), "--broker",
                                  "--listen", "127.0.0.1:0",
                                  "--metrics", "127.0.0.1:0"] + list(opts))
        srv.maddr = metrics_addr(srv)
        return srv

    def client(self, srv, **kw):
        c = RelayClient(srv.port, **kw)
        self.socks.append(c.sock)
        return c

    def test_relay_counters(self):
        srv = self.relay("--max-line", "1K", "--max-pending", "64K",
                         "--max-clients", "3", "--deny", "127.0.0.2")
        h = self.http(srv.maddr)
        a, b = self.client(srv), self.client(srv)
        a.wait(b"* you are")
        b.wait(b"* you are")
        s = self.client(srv, read=False, rcvbuf=4096)
        b.wait(b" joined\n")
        full = self.connect_from("127.0.0.1", srv.port)
        self.assertClosedUnread(full)
        denied = self.connect_from("127.0.0.2", srv.port)
        self.assertClosedUnread(denied)
        a.sock.sendall(b"one\ntwo\nthree\n" + b"L" * 3000 + b"\n")
        a.wait(b"* line cut at")
        b.wait(b"> " + b"L" * 100)
        # Lines until the silent client is dropped for not reading.
        line = b"f" * 900 + b"\n"
        n = 0
        while n < 20000 and b"dropped: not reading" not in b.buf:
            a.sock.sendall(line * 64)
            n += 64
            b_seen = n
            deadline = time.monotonic() + 20
            while b.count(b"> fff") < b_seen and time.monotonic() < deadline:
                time.sleep(0.01)
        b.wait(b"dropped: not reading")
        fams = self.wait_scrape(h, lambda f: value(
            f, "forkloop_relay_clients") == 2)
        refused = "forkloop_relay_connections_refused"
        drops = "forkloop_relay_drops"
        got = {
            "clients": value(fams, "forkloop_relay_clients"),
            "accepted": value(fams, "forkloop_relay_connections_accepted",
                              "forkloop_relay_connections_accepted_total"),
            "lines": value(fams, "forkloop_relay_lines_relayed",
                           "forkloop_relay_lines_relayed_total"),
            "max_clients": value(fams, refused, refused + "_total",
                                 reason="max_clients"),
            "denied": value(fams, refused, refused + "_total",
                            reason="denied"),
            "not_reading": value(fams, drops, drops + "_total",
                                 reason="not_reading"),
            "line_cut": value(fams, drops, drops + "_total",
                              reason="line_cut"),
            "draining": value(fams, "forkloop_relay_draining"),
        }
        self.assertEqual(got, {"clients": 2, "accepted": 3, "lines": 4 + n,
                               "max_clients": 1, "denied": 1,
                               "not_reading": 1, "line_cut": 1,
                               "draining": 0})
        self.assertEqual(fams["forkloop_relay_clients"]["type"], "gauge")
        self.assertEqual(fams["forkloop_relay_drops"]["type"], "counter")
        self.assertEqual(self.http(srv.maddr).get("/healthz")[::2],
                         (200, b"ok\n"))

    def test_relay_metrics_options(self):
        chat = fltest.binary("chat")
        for argv in ([chat, "--listen", "127.0.0.1:0", "--metrics",
                      "127.0.0.1:0"],
                     [chat, "--broker", "--listen", "127.0.0.1:0",
                      "--metrics", "unix:/tmp/x"]):
            p = subprocess.run(argv, stdin=subprocess.DEVNULL,
                               capture_output=True, timeout=30)
            self.assertEqual(p.returncode, 2, p.stderr)
            self.assertIn(b"--metrics", p.stderr)
        srv = self.relay("--deny", "127.0.0.2")
        s = self.connect_from("127.0.0.2", srv.maddr[1])
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertClosedUnread(s)
        h = self.http(srv.maddr)
        self.assertEqual(h.get("/healthz")[::2], (200, b"ok\n"))
        self.assertEqual(h.get("/metrics", "POST")[0], 405)
        fams = self.scrape(h)
        self.assertEqual(value(fams, "forkloop_relay_connections_refused",
                               "forkloop_relay_connections_refused_total",
                               reason="denied"), 0)


if __name__ == "__main__":
    fltest.main()
