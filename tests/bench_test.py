"""forkloop-bench against small echo servers on loopback: correct ones, and
ones that corrupt, cut short or reset, whose errors must be counted and make
the exit status non-zero."""

import json
import os
import resource
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
          "mbytes_per_sec", "errors", "connect_ms", "latency_us"]
PERCENTILES = ["p50", "p90", "p99", "p999", "max"]


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

    def test_rate_paces_messages(self):
        j, _ = self.bench_json("--rate", 200, "-c", 2, "-d", 1,
                               self.pyecho())
        self.assertEqual(j["errors"], 0)
        self.assertGreater(j["messages"], 0)
        # messages are due at 0, 5 ms, 10 ms ...: never more than scheduled
        self.assertLessEqual(j["messages"], 201)
        self.assertEqual(j["load"], "open")

    def test_rate_counts_a_stall_in_the_tail(self):
        # The server sits on its first message for 0.3 s. Messages due in
        # that time are late from their intended send times, so the tail
        # shows the stall instead of one slow message hiding it.
        j, _ = self.bench_json("--rate", 100, "-c", 1, "-d", 1,
                               self.pyecho("stall"))
        self.assertEqual(j["errors"], 0)
        self.assertGreaterEqual(j["latency_us"]["max"], 280000)
        self.assertGreaterEqual(j["latency_us"]["p90"], 100000)

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
        self.assertEqual(p.wait(10), 0, p.stderr_text())
        j = json.loads(p.p.stdout.read())
        self.assertTrue(j["interrupted"])
        self.assertGreater(j["messages"], 0)
        self.assertLess(j["duration_s"], 30)

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
