"""forkloop-bench against small echo servers on loopback: correct ones, and
ones that corrupt, cut short or reset, whose errors must be counted and make
the exit status non-zero."""

import json
import os
import re
import resource
import selectors
import signal
import socket
import socketserver
import struct
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fltest  # noqa: E402

FIELDS = ["conns", "size", "duration_s", "messages", "msgs_per_sec",
          "mbytes_per_sec", "errors", "connect_ms", "latency_us", "threads"]
PERCENTILES = ["p50", "p90", "p99", "p999", "max"]
# forkloop-echo's SIGUSR1 line; the fields after bytes_out may grow.
ECHO_BYTES_OUT_RE = r"stats: .*\bbytes_out=(\d+)"


class EchoHandler(socketserver.BaseRequestHandler):
    """Echo; or, by the server's behaviour, go wrong at stream byte 100."""

    def handle(self):
        s = self.request
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.accepted += 1
        seen = 0
        while True:
            try:
                data = s.recv(65536)
            except OSError:
                return
            if not data:
                return
            data = self.misbehave(s, seen, bytearray(data))
            if data is None:
                return
            seen += len(data)
            try:
                s.sendall(data)
            except OSError:
                return

    def misbehave(self, s, seen, data):
        how = self.server.how
        if how == "stall" and seen == 0:
            time.sleep(0.3)
        if how in ("echo", "stall") or seen + len(data) <= 100:
            return data
        k = 100 - seen if seen < 100 else 0
        if how == "flip":
            data[k] ^= 0x20
            return data
        if how == "short":
            s.sendall(data[:k])
            s.close()
            return None
        if how == "reset":
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                         struct.pack("ii", 1, 0))
            s.close()
            return None
        raise ValueError(how)


class PyEcho(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024

    def __init__(self, how="echo"):
        super().__init__(("127.0.0.1", 0), EchoHandler)
        self.how = how
        self.accepted = 0
        self.port = self.server_address[1]
        self.thread = threading.Thread(target=self.serve_forever,
                                       kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    def stop(self):
        self.shutdown()
        self.server_close()
        self.thread.join(timeout=5)


class SlowServer:
    """An echo server that is slow on purpose, in ways a load generator must
    not hide: it starts accepting only after accept_after seconds (and then
    raises its listen backlog from backlog to backlog_after), then accepts
    one connection per accept_every seconds; it echoes at most read_max
    bytes per read, one read per read_every seconds per connection.

    With backlog 1, the kernel completes two handshakes and drops the other
    SYNs while nobody accepts; the clients send them again after about a
    second (the initial retransmission timeout, RFC 6298), by when the larger
    backlog takes them all."""

    def __init__(self, backlog=4096, accept_after=0.0, backlog_after=4096,
                 accept_every=0.0, read_max=65536, read_every=0.0):
        self.lsock = socket.socket()
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(backlog)
        self.port = self.lsock.getsockname()[1]
        self.accept_after, self.accept_every = accept_after, accept_every
        self.backlog_after = backlog_after
        self.read_max, self.read_every = read_max, read_every
        self.accepted = 0
        self.done = threading.Event()
        self.sel = selectors.DefaultSelector()
        self.lock = threading.Lock()
        self.conns = []
        self.threads = [threading.Thread(target=f, daemon=True)
                        for f in (self.acceptor, self.echoer)]
        for t in self.threads:
            t.start()

    def acceptor(self):
        if self.done.wait(self.accept_after):
            return
        self.lsock.listen(self.backlog_after)
        self.lsock.settimeout(0.05)
        while not self.done.is_set():
            try:
                c, _ = self.lsock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            c.setblocking(True)
            with self.lock:
                self.conns.append(c)
                self.sel.register(c, selectors.EVENT_READ)
            self.accepted += 1
            if self.done.wait(self.accept_every):
                return

    def echoer(self):
        while not self.done.is_set():
            with self.lock:
                if not self.conns:
                    ready = []
                else:
                    ready = self.sel.select(0.01)
            if not ready:
                time.sleep(0.005)
                continue
            for key, _ in ready:
                c = key.fileobj
                try:
                    data = c.recv(self.read_max)
                    if data:
                        c.sendall(data)
                except OSError:
                    data = b""
                if not data:
                    with self.lock:
                        self.sel.unregister(c)
                        self.conns.remove(c)
                    c.close()
            if self.read_every:
                time.sleep(self.read_every)

    def stop(self):
        self.done.set()
        for t in self.threads:
            t.join(timeout=5)
        self.lsock.close()
        with self.lock:
            for c in self.conns:
                c.close()
        self.sel.close()


def nofile(soft, hard):
    return lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


class BenchTest(fltest.ProcTestCase):

    def setUp(self):
        super().setUp()
        self.servers = []

    def tearDown(self):
        for s in self.servers:
            s.stop()
        super().tearDown()

    def slow(self, **kw):
        s = SlowServer(**kw)
        self.servers.append(s)
        return "127.0.0.1:%d" % s.port

    def pyecho(self, how="echo"):
        s = PyEcho(how)
        self.servers.append(s)
        return "127.0.0.1:%d" % s.port

    def bench(self, *args, preexec=None):
        argv = [fltest.binary("bench")] + [str(a) for a in args]
        return subprocess.run(argv, capture_output=True, timeout=60,
                              preexec_fn=preexec, start_new_session=True)

    def bench_json(self, *args, status=0):
        p = self.bench("--json", *args)
        self.assertEqual(p.returncode, status, p.stderr.decode())
        lines = p.stdout.decode().splitlines()
        self.assertEqual(len(lines), 1, p.stdout)
        return json.loads(lines[0]), p.stderr.decode()

    def free_port(self):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        return port

    def assertUnsentOnlyAtTheEnd(self, j, rate):
        """An open-loop run at rate msgs/s kept its schedule. A thread held
        off the CPU at the very end (this machine is shared) may leave a
        few messages due and unsent: at most 1% of a second's worth, each
        counted, aged in the latency and warned of, never dropped."""
        self.assertLessEqual(j["unsent"], max(2, rate * 0.01), j)
        self.assertEqual(j["latency_us"]["count"],
                         j["messages"] + j["unanswered"], j)
        if j["unsent"] == 0:
            self.assertEqual(j["warnings"], [], j)
        else:
            self.assertEqual(j["warnings"], [
                "%d messages were due and never sent; their ages are in "
                "the latency" % j["unsent"]], j)

    def assertLatencySane(self, j):
        lat = j["latency_us"]
        vals = [lat[k] for k in PERCENTILES]
        self.assertEqual(vals, sorted(vals), lat)
        self.assertGreater(lat["p50"], 0)

    def test_json_has_every_field(self):
        j, err = self.bench_json("-c", 4, "-s", 100, "-n", 2000,
                                 self.pyecho())
        for f in FIELDS:
            self.assertIn(f, j)
        for p in PERCENTILES:
            self.assertIn(p, j["latency_us"])
        self.assertEqual(j["conns"], 4)
        self.assertEqual(j["threads"], 1)
        self.assertEqual(j["size"], 100)
        self.assertEqual(j["messages"], 2000)
        self.assertEqual(j["bytes"], 200000)
        self.assertEqual(j["errors"], 0)
        self.assertGreater(j["msgs_per_sec"], 0)
        self.assertGreater(j["duration_s"], 0)
        self.assertAlmostEqual(j["mbytes_per_sec"],
                               j["msgs_per_sec"] * 100 / 1e6, delta=0.01)
        self.assertEqual(j["connects"], 4)
        self.assertLatencySane(j)
        # not a terminal: no progress line
        self.assertEqual(err, "")

    def test_duration_bounds_the_run(self):
        j, _ = self.bench_json("-c", 3, "-d", "0.5", "--warmup", "0.2",
                               self.pyecho())
        self.assertEqual(j["errors"], 0)
        self.assertGreater(j["messages"], 0)
        self.assertGreater(j["duration_s"], 0.3)
        self.assertLess(j["duration_s"], 5)

    def test_text_output_is_one_table(self):
        p = self.bench("-c", 2, "-n", 100, self.pyecho())
        self.assertEqual(p.returncode, 0, p.stderr)
        out = p.stdout.decode()
        for row in ["conns", "size", "messages", "msgs_per_sec", "errors",
                    "connect_ms", "latency_us"]:
            self.assertRegex(out, r"(?m)^%s +\S" % row)
        self.assertRegex(out, r"(?m)^messages +100$")

    def test_pipeline_and_exact_count(self):
        j, _ = self.bench_json("-c", 3, "-p", 4, "-s", 1000, "-n", 501,
                               self.pyecho())
        self.assertEqual(j["pipeline"], 4)
        self.assertEqual(j["messages"], 501)
        self.assertEqual(j["errors"], 0)

    def test_large_pipelined_messages(self):
        # A deep pipeline of 64 KiB messages makes reads of a full 64 KiB
        # at any offset of the stream; each must check against the right
        # bytes. Three rounds, as read sizes vary from run to run.
        target = self.pyecho()
        for _ in range(3):
            j, _ = self.bench_json("-c", 1, "-p", 256, "-s", "64K", "-n",
                                   3000, target)
            self.assertEqual(j["messages"], 3000)
            self.assertEqual(j["errors"], 0)
        j, _ = self.bench_json("-c", 3, "-p", 7, "-s", 100000, "-n", 200,
                               target)
        self.assertEqual(j["messages"], 200)
        self.assertEqual(j["errors"], 0)

    def test_against_forkloop_echo(self):
        srv = self.start(fltest.Server, [fltest.binary("echo"), "--mode",
                                         "fork", "--listen", "127.0.0.1:0"])
        j, _ = self.bench_json("-c", 10, "-s", "4K", "-n", 2000,
                               "127.0.0.1:%d" % srv.port)
        self.assertEqual(j["messages"], 2000)
        self.assertEqual(j["errors"], 0)
        self.assertLatencySane(j)

    def test_nothing_listening_is_an_error(self):
        port = self.free_port()
        p = self.bench("-c", 2, "-d", 1, "127.0.0.1:%d" % port)
        self.assertEqual(p.returncode, 1)
        self.assertEqual(p.stdout, b"")
        self.assertIn("forkloop-bench: cannot connect to 127.0.0.1:%d: "
                      "Connection refused" % port, p.stderr.decode())

    def test_host_name_tries_each_address(self):
        # localhost may resolve to ::1 first; the server is on 127.0.0.1.
        port = self.pyecho().split(":")[1]
        j, _ = self.bench_json("-c", 3, "-n", 30, "localhost:" + port)
        self.assertEqual(j["messages"], 30)
        self.assertEqual(j["errors"], 0)

    def test_bad_address_is_usage(self):
        for spec in ["localhost", "127.0.0.1:99999", "6666", "[::1"]:
            p = self.bench(spec)
            self.assertEqual(p.returncode, 2, spec)
            self.assertIn("bad HOST:PORT", p.stderr.decode())
            self.assertIn("usage:", p.stderr.decode())

    def test_silent_server_is_an_error(self):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        self.addCleanup(s.close)
        p = self.bench("-c", 2, "-d", "0.5", "127.0.0.1:%d"
                       % s.getsockname()[1])
        self.assertEqual(p.returncode, 1)
        self.assertRegex(p.stdout.decode(), r"(?m)^messages +0$")
        self.assertIn("no echo came back", p.stderr.decode())

    def test_flipped_byte_is_a_mismatch(self):
        j, err = self.bench_json("-c", 2, "-s", 64, "-d", 2,
                                 self.pyecho("flip"), status=1)
        self.assertEqual(j["errors"], 2)
        self.assertEqual(j["error_kinds"]["mismatch"], 2)
        self.assertIn("2 errors", err)

    def test_short_echo_is_an_error(self):
        j, _ = self.bench_json("-c", 2, "-s", 64, "-d", 2,
                               self.pyecho("short"), status=1)
        self.assertEqual(j["errors"], 2)
        self.assertEqual(j["error_kinds"]["closed"], 2)

    def test_reset_is_an_error(self):
        j, _ = self.bench_json("-c", 2, "-s", 64, "-d", 2,
                               self.pyecho("reset"), status=1)
        self.assertEqual(j["errors"], 2)
        self.assertEqual(j["error_kinds"]["reset"], 2)

    def test_churn_opens_a_connection_per_message(self):
        srv = PyEcho()
        self.servers.append(srv)
        j, _ = self.bench_json("--churn", "-c", 2, "-n", 200,
                               "127.0.0.1:%d" % srv.port)
        self.assertEqual(j["messages"], 200)
        self.assertEqual(j["errors"], 0)
        self.assertGreaterEqual(j["connects"], 200)
        self.assertGreaterEqual(srv.accepted, 200)
        self.assertLatencySane(j)
        # a connection still connecting at the end is a message in flight
        j, err = self.bench_json("--churn", "-c", 4, "-d", "0.5",
                                 "127.0.0.1:%d" % srv.port)
        self.assertEqual((j["unsent"], j["conns_pending"]), (0, 0), j)
        self.assertEqual(j["warnings"], [])
        self.assertEqual(err, "")

    def test_rate_paces_messages(self):
        j, _ = self.bench_json("--rate", 200, "-c", 2, "-d", 1,
                               self.pyecho())
        self.assertEqual(j["errors"], 0)
        self.assertGreater(j["messages"], 0)
        # messages are due at 0, 5 ms, 10 ms ...: never more than scheduled
        self.assertLessEqual(j["messages"], 201)
        self.assertEqual(j["load"], "open")
        self.assertFalse(j["rate_short"], j)
        self.assertUnsentOnlyAtTheEnd(j, 200)

    def test_rate_counts_a_stall_in_the_tail(self):
        # The server sits on its first message for 0.3 s. Messages due in
        # that time are late from their intended send times, so the tail
        # shows the stall instead of one slow message hiding it.
        j, _ = self.bench_json("--rate", 100, "-c", 1, "-d", 1,
                               self.pyecho("stall"))
        self.assertEqual(j["errors"], 0)
        self.assertGreaterEqual(j["latency_us"]["max"], 280000)
        self.assertGreaterEqual(j["latency_us"]["p90"], 100000)

    def test_little_law_holds_against_a_slow_acceptor(self):
        # 300 connections against a server that accepts one every 10 ms:
        # for most of the run many connections wait in its accept queue with
        # a message sent and no echo. Their waits are part of the latency, so
        # the mean agrees with Little's law: connections / throughput.
        j, err = self.bench_json("-c", 300, "-d", 2, "--json",
                                 self.slow(accept_every=0.01))
        self.assertEqual(j["errors"], 0)
        self.assertGreater(j["in_flight"], 0)
        mean_s = j["latency_us"]["mean"] / 1e6
        little_s = 300 / j["msgs_per_sec"]
        self.assertGreater(mean_s / little_s, 0.85, j)
        self.assertLess(mean_s / little_s, 1.15, j)
        self.assertAlmostEqual(j["little_ratio"], mean_s / little_s,
                               delta=0.02)
        self.assertEqual(j["latency_us"]["count"],
                         j["messages"] + j["unanswered"])
        self.assertEqual(j["unanswered"], j["in_flight"] + j["unsent"])
        # the longest wait is the whole run, however few echoes it cost
        self.assertGreater(j["latency_us"]["max"], 1.5e6)

    def test_little_law_holds_for_forkloop_echo(self):
        # Both designs, with one and with 100 connections.
        for mode in ("event", "fork"):
            srv = self.start(fltest.Server, [fltest.binary("echo"), "--mode",
                                             mode, "--listen", "127.0.0.1:0"])
            for conns in (1, 100):
                j, _ = self.bench_json("-c", conns, "-d", "0.5",
                                       "127.0.0.1:%d" % srv.port)
                self.assertEqual(j["errors"], 0)
                self.assertGreater(j["little_ratio"], 0.85, (mode, j))
                self.assertLess(j["little_ratio"], 1.15, (mode, j))
            srv.kill_group()

    def test_stalled_server_shows_in_the_tail(self):
        # Open loop against forkloop-echo stopped (SIGSTOP) for the last
        # second: the messages due then are sent and never answered. They
        # are counted, their ages make the tail, and --strict fails the run.
        srv = self.start(fltest.Server, [fltest.binary("echo"), "--listen",
                                         "127.0.0.1:0"])
        p = self.start(fltest.Proc, [fltest.binary("bench"), "--json",
                                     "--strict", "--rate", "1000", "-c", "4",
                                     "-d", "2", "127.0.0.1:%d" % srv.port],
                       stdout=subprocess.PIPE)
        time.sleep(1.0)
        os.kill(srv.pid, signal.SIGSTOP)
        try:
            status = p.wait(30)
        finally:
            os.kill(srv.pid, signal.SIGCONT)
        j = json.loads(p.p.stdout.read())
        self.assertEqual(status, 1, p.stderr_text())
        self.assertTrue(j["rate_short"], j)
        self.assertGreater(j["rate_shortfall_pct"], 25, j)
        self.assertGreater(j["in_flight"], 500, j)
        self.assertGreater(j["latency_us"]["p99"], 500000, j)
        self.assertGreater(j["latency_uncorrected_us"]["p99"], 500000, j)
        self.assertIn("short of --rate", p.stderr_text())
        self.assertEqual(j["errors"], 0)

    def test_rate_shortfall_is_a_warning(self):
        # The server reads 64 bytes a millisecond: at most 1,000 echoes a
        # second, against 4,000 due.
        target = self.slow(read_max=64, read_every=0.001)
        j, err = self.bench_json("--rate", 4000, "-c", 1, "-d", 1, target)
        self.assertTrue(j["rate_short"], j)
        self.assertGreater(j["rate_shortfall_pct"], 50)
        self.assertLess(j["rate_achieved"], 1500)
        self.assertRegex(err, r"warning: answered [0-9.]+ msgs/s, "
                              r"[0-9.]+% short of --rate 4000")
        self.assertEqual(len(j["warnings"]), 1, j["warnings"])
        j, _ = self.bench_json("--strict", "--rate", 4000, "-c", 1, "-d", 1,
                               target, status=1)
        self.assertTrue(j["strict"])

    def test_rate_beyond_the_client_ends_on_time(self):
        # A billion messages a second is more than any client issues: the
        # run still ends when -d says, answers signals meanwhile, and counts
        # every message that fell due and was never issued.
        srv = self.start(fltest.Server, [fltest.binary("echo"), "--listen",
                                         "127.0.0.1:0"])
        target = "127.0.0.1:%d" % srv.port
        t0 = time.monotonic()
        j, err = self.bench_json("--rate", "1000000000", "-c", 2, "-d", 1, target)
        self.assertLess(time.monotonic() - t0, 10)
        self.assertTrue(j["rate_short"], j)
        self.assertGreater(j["unsent"], 100000000, j)
        self.assertEqual(j["latency_us"]["count"],
                         j["messages"] + j["unanswered"])
        # the oldest never-issued message was due at the start of the run
        self.assertGreater(j["latency_us"]["max"], 900000, j)
        self.assertGreater(j["latency_us"]["p50"], 300000, j)
        self.assertIn("were due and never sent", err)
        p = self.start(fltest.Proc, [fltest.binary("bench"), "--json",
                                     "--rate", "1000000000", "-c", "2", "-d", "60",
                                     target], stdout=subprocess.PIPE)
        time.sleep(0.5)
        t0 = time.monotonic()
        p.signal(signal.SIGINT)
        self.assertEqual(p.wait(10), -signal.SIGINT, p.stderr_text())
        self.assertLess(time.monotonic() - t0, 5)
        self.assertTrue(json.loads(p.p.stdout.read())["interrupted"])

    def test_late_connections_carry_their_due_messages(self):
        # Backlog 1 and nothing accepted for 0.6 s: two connections complete
        # at once, the others' SYNs are dropped and retried after about a
        # second. The load starts at the setup timeout; what falls due on a
        # late connection waits for it and counts from when it was due, not
        # from when it could be sent.
        # --strict makes the late connections an exit status of 1.
        for load in ([], ["--rate", "200"]):
            target = self.slow(backlog=1, accept_after=0.6)
            j, err = self.bench_json("--strict", "-c", 8, "-d", 2,
                                     "--setup-timeout", "0.2", *load, target,
                                     status=1)
            self.assertEqual(j["errors"], 0, j)
            self.assertGreaterEqual(j["late_conns"], 4, j)
            self.assertIsNotNone(j["setup_ms"], j)
            self.assertGreater(j["setup_ms"], 800, j)
            self.assertLess(j["load_start_ms"], 1000, j)
            self.assertEqual(j["unsent"], 0, j)
            self.assertEqual(j["connects"], 8)
            # messages due at the start waited about 0.8 s for a connection
            self.assertGreater(j["latency_us"]["max"], 500000, j)
            self.assertLess(j["latency_uncorrected_us"]["max"],
                            j["latency_us"]["max"] - 300000, j)
            self.assertRegex(err, r"warning: \d+ of 8 connections were not "
                                  r"up when the load started")

    def test_unsent_messages_are_counted(self):
        # The run ends before the late connections come up: what was due on
        # them was never sent, and is counted, with its age, not skipped.
        for load in ([], ["--rate", "400"]):
            target = self.slow(backlog=1, accept_after=5)
            j, err = self.bench_json("-c", 8, "-d", "0.6", "--setup-timeout",
                                     "0.1", *load, target, status=1)
            self.assertGreaterEqual(j["late_conns"], 4, j)
            self.assertEqual(j["conns_pending"], j["late_conns"], j)
            self.assertIsNone(j["setup_ms"])
            self.assertGreater(j["unsent"], 0, j)
            if load:
                # every message due on a late connection: 400/s x 0.6 s
                # spread over 8 connections, most of them late
                self.assertGreater(j["unsent"], 100, j)
            else:
                self.assertEqual(j["unsent"], j["late_conns"], j)
            self.assertEqual(j["latency_us"]["count"],
                             j["messages"] + j["unanswered"])
            self.assertGreater(j["latency_us"]["max"], 500000, j)
            self.assertIn("were due and never sent", err)
            self.assertIn("still connecting at the end", err)

    def full_backlog(self):
        """A listener whose accept queue is full and stays so: connects to
        it neither complete nor fail (their SYNs are dropped)."""
        lsock = socket.socket()
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(0)
        self.addCleanup(lsock.close)
        port = lsock.getsockname()[1]
        for _ in range(3):
            c = socket.socket()
            c.setblocking(False)
            c.connect_ex(("127.0.0.1", port))
            self.addCleanup(c.close)
        time.sleep(0.2)
        return "127.0.0.1:%d" % port

    def test_stalled_connects_do_not_hold_the_run(self):
        # Two connections complete, six are stuck in SYN retries: the load
        # starts after the setup timeout, -d bounds the rest, and what was
        # due on the stuck ones is reported.
        t0 = time.monotonic()
        j, err = self.bench_json("-c", 8, "-d", 1,
                                 self.slow(backlog=1, accept_after=60),
                                 status=1)
        self.assertLess(time.monotonic() - t0, 8)
        self.assertEqual(j["late_conns"], 6, j)
        self.assertEqual(j["conns_pending"], 6, j)
        self.assertIn("6 connections were still connecting at the end", err)
        # With a connect timeout shorter than the run, they are errors.
        t0 = time.monotonic()
        j, err = self.bench_json("-c", 8, "-d", 1, "--connect-timeout",
                                 "0.5", self.slow(backlog=1, accept_after=60),
                                 status=1)
        self.assertLess(time.monotonic() - t0, 8)
        self.assertEqual(j["error_kinds"]["connect"], 6, j)
        self.assertEqual(j["conns_pending"], 0, j)
        self.assertIn("6 errors", err)

    def test_connect_timeout_when_nothing_connects(self):
        t0 = time.monotonic()
        p = self.bench("-c", 2, "-d", 30, "--connect-timeout", "0.5",
                       self.full_backlog())
        self.assertEqual(p.returncode, 1)
        self.assertLess(time.monotonic() - t0, 10)
        self.assertRegex(p.stderr.decode(),
                         r"cannot connect to 127\.0\.0\.1:\d+: Connection "
                         r"timed out")

    def test_messages_alone_end_when_nothing_answers(self):
        # -n without -d against a server that accepts and never echoes.
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        self.addCleanup(s.close)
        t0 = time.monotonic()
        j, err = self.bench_json("-c", 2, "-n", 10,
                                 "127.0.0.1:%d" % s.getsockname()[1],
                                 status=1)
        self.assertLess(time.monotonic() - t0, 30)
        self.assertTrue(j["stalled"])
        self.assertEqual(j["messages"], 0)
        self.assertEqual(j["in_flight"], 2)
        self.assertIn("no echo came back for 10 s: stopping", err)

    def test_connect_rate_opens_every_connection(self):
        j, _ = self.bench_json("-c", 20, "--connect-rate", 200, "-n", 100,
                               self.pyecho())
        self.assertEqual(j["connects"], 20)
        self.assertEqual(j["messages"], 100)
        self.assertEqual(j["errors"], 0)

    def test_sigint_reports_what_was_measured(self):
        target = self.pyecho()
        p = self.start(fltest.Proc, [fltest.binary("bench"), "--json", "-c",
                                     "2", "-d", "60", target],
                       stdout=subprocess.PIPE)
        self.assertTrue(fltest.wait_until(lambda: self.servers[0].accepted
                                          >= 2, 10))
        time.sleep(0.3)
        p.signal(signal.SIGINT)
        self.assertEqual(p.wait(10), -signal.SIGINT, p.stderr_text())
        j = json.loads(p.p.stdout.read())
        self.assertTrue(j["interrupted"])
        self.assertGreater(j["messages"], 0)
        self.assertLess(j["duration_s"], 30)

    def echo(self):
        return self.start(fltest.Server, [fltest.binary("echo"), "--listen",
                                          "127.0.0.1:0"])

    def echo_bytes_out(self, srv):
        """SIGUSR1 to forkloop-echo; bytes_out from its next stats line."""
        with srv.cond:
            n = sum(1 for l in srv.lines
                    if l is not None and re.search(ECHO_BYTES_OUT_RE, l))
        srv.signal(signal.SIGUSR1)
        m = srv.wait_line(ECHO_BYTES_OUT_RE, count=n + 1)[-1]
        return int(m.group(1))

    def test_threads_bytes_agree_with_forkloop_echo(self):
        # What the bench says it got back, and what forkloop-echo says it
        # sent, read once the bench has exited: within 1% (the bench does
        # not count the echoes in flight when -d ends, at most one per
        # connection). The run's one duration and merged latency agree
        # with Little's law however many threads shared it.
        for threads in (1, 2, 4):
            srv = self.echo()
            j, _ = self.bench_json("--threads", threads, "-c", 6, "-s", 1000,
                                   "-d", 1, "127.0.0.1:%d" % srv.port)
            out = self.echo_bytes_out(srv)
            self.assertEqual(j["threads"], threads)
            self.assertEqual(j["errors"], 0, j)
            self.assertEqual(j["connects"], 6, j)
            self.assertEqual(j["bytes"], j["messages"] * 1000)
            self.assertGreater(j["messages"], 500, j)
            self.assertGreaterEqual(out, j["bytes"], (threads, out, j))
            self.assertLess(abs(out - j["bytes"]), 0.01 * out,
                            (threads, out, j["bytes"]))
            self.assertAlmostEqual(j["duration_s"], 1.0, delta=0.1)
            self.assertGreater(j["little_ratio"], 0.85, j)
            self.assertLess(j["little_ratio"], 1.15, j)
            self.assertEqual(j["latency_us"]["count"],
                             j["messages"] + j["unanswered"])
            srv.kill_group()

    def test_threads_messages_total_is_exact(self):
        # -n is the run's total: split among the threads (10 connections
        # on 4 threads are 3, 3, 2, 2), every one of them answered once,
        # and forkloop-echo sent exactly those bytes.
        for threads, conns, n in ((4, 10, 10007), (3, 3, 3), (2, 5, 2001)):
            srv = self.echo()
            j, _ = self.bench_json("--threads", threads, "-c", conns, "-s",
                                   100, "-n", n, "127.0.0.1:%d" % srv.port)
            self.assertEqual(j["threads"], threads)
            self.assertEqual(j["messages"], n, j)
            self.assertEqual(j["bytes"], n * 100, j)
            self.assertEqual((j["errors"], j["unanswered"]), (0, 0), j)
            self.assertEqual(j["latency_us"]["count"], n)
            self.assertEqual(j["latency_uncorrected_us"]["count"], n)
            self.assertEqual(self.echo_bytes_out(srv), n * 100)
            srv.kill_group()

    def test_threads_rate_is_split(self):
        # 2,000 messages a second on 2 threads of 3 and 2 connections: the
        # shares add up to the rate asked for, which the run keeps.
        srv = self.echo()
        j, err = self.bench_json("--threads", 2, "--rate", 2000, "-c", 5,
                                 "-d", 2, "127.0.0.1:%d" % srv.port)
        self.assertEqual(j["threads"], 2)
        self.assertEqual(j["errors"], 0, j)
        self.assertLess(abs(j["rate_achieved"] - 2000), 2000 * 0.03, j)
        self.assertLessEqual(j["messages"], 4002, j)
        self.assertFalse(j["rate_short"], j)
        self.assertUnsentOnlyAtTheEnd(j, 2000)
        self.assertEqual(j["issue_lag_us"]["count"],
                         j["messages"] + j["in_flight"], j)

    def workers(self, p):
        """Threads of p named as forkloop-bench names its workers; a
        sanitizer may run threads of its own beside them."""
        n = 0
        for t in os.listdir("/proc/%d/task" % p.pid):
            try:
                with open("/proc/%d/task/%s/comm" % (p.pid, t)) as f:
                    n += re.fullmatch(r"bench-\d+\n", f.read()) is not None
            except OSError:
                pass
        return n

    def test_threads_sigint_stops_every_thread(self):
        # SIGINT goes to the main thread only; it stops the four workers,
        # which report what they measured, promptly.
        srv = self.echo()
        p = self.start(fltest.Proc, [fltest.binary("bench"), "--json",
                                     "--threads", "4", "-c", "8", "-d", "60",
                                     "127.0.0.1:%d" % srv.port],
                       stdout=subprocess.PIPE)
        self.assertTrue(fltest.wait_until(lambda: self.workers(p) == 4, 10),
                        "worker threads: %d" % self.workers(p))
        time.sleep(0.5)
        t0 = time.monotonic()
        p.signal(signal.SIGINT)
        self.assertEqual(p.wait(10), -signal.SIGINT, p.stderr_text())
        self.assertLess(time.monotonic() - t0, 2)
        j = json.loads(p.p.stdout.read())
        self.assertTrue(j["interrupted"], j)
        self.assertEqual(j["threads"], 4)
        self.assertGreater(j["messages"], 0)
        self.assertLess(j["duration_s"], 10)
        self.assertEqual(j["errors"], 0)
        self.assertGroupGone(p)
        # SIGTERM too, before the load has even started: 7 connections
        # that never come up, no report of a run that did not happen
        p = self.start(fltest.Proc, [fltest.binary("bench"), "--json",
                                     "--threads", "2", "-c", "8", "-d", "60",
                                     self.slow(backlog=1, accept_after=60)],
                       stdout=subprocess.PIPE)
        self.assertTrue(fltest.wait_until(lambda: self.workers(p) == 2, 10))
        p.signal(signal.SIGTERM)
        self.assertEqual(p.wait(10), -signal.SIGTERM, p.stderr_text())
        j = json.loads(p.p.stdout.read())
        self.assertTrue(j["interrupted"], j)

    def test_threads_bad_values_are_usage(self):
        for v in ("0", "-1", "x", "100000"):
            p = self.bench("--threads", v, "127.0.0.1:1")
            self.assertEqual(p.returncode, 2, v)
            self.assertIn("forkloop-bench: bad --threads '%s' (1 to 256, or "
                          "auto)" % v, p.stderr.decode())
            self.assertIn("usage:", p.stderr.decode())
        p = self.bench("--threads", 3, "-c", 2, "127.0.0.1:1")
        self.assertEqual(p.returncode, 2)
        self.assertIn("more than the 2 connections", p.stderr.decode())
        # auto never exceeds the connections
        j, _ = self.bench_json("--threads", "auto", "-c", 1, "-n", 10,
                               self.pyecho())
        self.assertEqual((j["threads"], j["messages"]), (1, 10))

    def test_threads_share_one_setup_timeout(self):
        # The setup timeout counts from the last connect of every thread,
        # and the load starts in all of them at once: connections late on
        # either thread are counted, and carry their due messages.
        target = self.slow(backlog=1, accept_after=0.6)
        j, err = self.bench_json("--threads", 2, "-c", 8, "-d", 2,
                                 "--setup-timeout", "0.2", target)
        self.assertEqual(j["errors"], 0, j)
        self.assertGreaterEqual(j["late_conns"], 4, j)
        self.assertGreater(j["setup_ms"], 800, j)
        self.assertLess(j["load_start_ms"], 1000, j)
        self.assertEqual((j["connects"], j["unsent"]), (8, 0), j)
        self.assertGreater(j["latency_us"]["max"], 500000, j)
        self.assertRegex(err, r"warning: \d+ of 8 connections were not up")

    def test_threads_churn_and_connect_rate(self):
        srv = PyEcho()
        self.servers.append(srv)
        target = "127.0.0.1:%d" % srv.port
        j, _ = self.bench_json("--threads", 2, "--churn", "-c", 4, "-n", 201,
                               target)
        self.assertEqual((j["messages"], j["errors"]), (201, 0), j)
        self.assertGreaterEqual(j["connects"], 201)
        t0 = time.monotonic()
        j, _ = self.bench_json("--threads", 2, "-c", 20, "--connect-rate",
                               100, "-n", 100, target)
        # 20 connections at 100 a second, split: about 0.2 s, not at once
        self.assertGreater(time.monotonic() - t0, 0.15)
        self.assertEqual((j["connects"], j["messages"]), (20, 100), j)

    def test_threads_nothing_listening_said_once(self):
        port = self.free_port()
        p = self.bench("--threads", 4, "-c", 8, "-d", 1,
                       "127.0.0.1:%d" % port)
        self.assertEqual(p.returncode, 1)
        self.assertEqual(p.stdout, b"")
        self.assertEqual(p.stderr.decode(),
                         "forkloop-bench: cannot connect to 127.0.0.1:%d: "
                         "Connection refused\n" % port)

    def test_fd_limit_too_low_says_what_is_needed(self):
        p = self.bench("-c", 1000, "-d", 1, self.pyecho(),
                       preexec=nofile(64, 64))
        self.assertEqual(p.returncode, 1)
        self.assertIn("ulimit -n 1032", p.stderr.decode())

    def test_soft_fd_limit_is_raised(self):
        p = self.bench("--json", "-c", 200, "-n", 400,
                       self.pyecho(), preexec=nofile(64, 4096))
        self.assertEqual(p.returncode, 0, p.stderr.decode())
        self.assertEqual(json.loads(p.stdout)["messages"], 400)


if __name__ == "__main__":
    fltest.main()
