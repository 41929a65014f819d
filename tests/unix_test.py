"""Integration tests for Unix domain sockets (unix:/PATH, unix:@NAME): the
echo daemon in every mode (FORKLOOP_MODE, FORKLOOP_THREADS), forkloop-bench
against it, forkloop-chat both ways and the relay.

Each test method is one scenario. Socket files live in a fresh directory
under the system's temporary directory, removed afterwards.
"""

import json
import os
import random
import re
import selectors
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fltest  # noqa: E402
from fltest import Proc, recv_all, wait_until  # noqa: E402

MODE = fltest.mode()
THREADS = os.environ.get("FORKLOOP_THREADS")
STATS_RE = re.compile(r"stats: open=(\d+) accepted=(\d+) refused=(\d+) "
                      r"bytes_in=(\d+) bytes_out=(\d+)")


def mode_args():
    args = ["--mode", MODE]
    if THREADS:
        args += ["--threads", THREADS]
    return args


def unix_connect(path, timeout=10.0):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(path)
    return s


class UnixTest(fltest.ProcTestCase):

    def setUp(self):
        super().setUp()
        self.dir = tempfile.mkdtemp(prefix="fl-unix-")
        self.path = os.path.join(self.dir, "echo.sock")

    def tearDown(self):
        super().tearDown()
        shutil.rmtree(self.dir, ignore_errors=True)

    def echo(self, *args, listen=None):
        """forkloop-echo on unix:self.path (or listen), once it listens."""
        spec = listen if listen is not None else "unix:" + self.path
        p = self.start(Proc, [fltest.binary("echo")] + mode_args() +
                       ["--listen", spec] + [str(a) for a in args])
        p.wait_line(r"listening on unix:")
        return p

    def run_echo(self, *args):
        """forkloop-echo expected to exit at once: (status, stderr)."""
        p = subprocess.run([fltest.binary("echo")] + mode_args() +
                           [str(a) for a in args], capture_output=True,
                           timeout=20, start_new_session=True)
        return p.returncode, p.stderr.decode()

    def assertEchoes(self, path, data=b"ping over a unix socket"):
        s = unix_connect(path)
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        self.assertEqual(recv_all(s), data)
        s.close()

    def stop(self, p, status=0):
        p.signal(signal.SIGTERM)
        self.assertEqual(p.wait(timeout=20), status, p.stderr_text())

    # --- the echo daemon ---

    def test_many_concurrent_exact(self):
        """200 connections at once, each echoed byte for byte."""
        self.echo()
        rng = random.Random(862)
        sel = selectors.DefaultSelector()
        want, got = {}, {}
        for i in range(200):
            s = unix_connect(self.path)
            s.setblocking(False)
            want[s] = rng.randbytes(rng.randint(1, 32 * 1024))
            got[s] = bytearray()
            sel.register(s, selectors.EVENT_READ | selectors.EVENT_WRITE,
                         [0])
        deadline = time.monotonic() + 60
        open_ = len(want)
        while open_ > 0 and time.monotonic() < deadline:
            for key, ev in sel.select(timeout=1):
                s, sent = key.fileobj, key.data
                if ev & selectors.EVENT_WRITE:
                    try:
                        sent[0] += s.send(want[s][sent[0]:sent[0] + 65536])
                    except BlockingIOError:
                        pass
                    if sent[0] == len(want[s]):
                        s.shutdown(socket.SHUT_WR)
                        sel.modify(s, selectors.EVENT_READ, sent)
                if ev & selectors.EVENT_READ:
                    try:
                        b = s.recv(65536)
                    except BlockingIOError:
                        continue
                    if b:
                        got[s] += b
                    else:
                        sel.unregister(s)
                        open_ -= 1
        for s in want:
            self.assertEqual(bytes(got[s]), want[s])
            s.close()

    def test_halfclose_echoes_everything(self):
        """4 MiB, then SHUT_WR: every byte still comes back, in order,
        then EOF; the echo held back by backpressure is not cut by the
        FIN."""
        self.echo()
        data = random.Random(1).randbytes(4 << 20)
        s = unix_connect(self.path, timeout=30)
        got = []
        reader = threading.Thread(target=lambda: got.append(recv_all(s)))
        reader.start()
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        reader.join(timeout=60)
        self.assertEqual(got, [data])

    def test_stale_socket_file_replaced(self):
        dead = socket.socket(socket.AF_UNIX)
        dead.bind(self.path)
        dead.close()  # the file stays, nothing listens
        self.assertTrue(stat.S_ISSOCK(os.lstat(self.path).st_mode))
        p = self.echo()
        self.assertEchoes(self.path)
        self.stop(p)

    def test_live_socket_refused(self):
        first = self.echo()
        ino = os.lstat(self.path).st_ino
        status, err = self.run_echo("--listen", "unix:" + self.path)
        self.assertEqual(status, 1, err)
        self.assertIn("cannot listen on unix:%s: address in use" % self.path,
                      err)
        self.assertEqual(os.lstat(self.path).st_ino, ino)
        self.assertEchoes(self.path)
        self.stop(first)

    def test_bound_not_listening_is_in_use(self):
        """A socket bound at the path that does not listen yet (another
        daemon between bind and listen), or one of another type, refuses
        a stream connect like a stale file does, but holds the address:
        it is in use, and its file stays."""
        for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
            held = socket.socket(socket.AF_UNIX, kind)
            held.bind(self.path)
            ino = os.lstat(self.path).st_ino
            status, err = self.run_echo("--listen", "unix:" + self.path)
            self.assertEqual(status, 1, err)
            self.assertIn("cannot listen on unix:%s: address in use" %
                          self.path, err)
            self.assertEqual(os.lstat(self.path).st_ino, ino)
            held.close()
            os.unlink(self.path)

    def test_non_socket_file_left_alone(self):
        with open(self.path, "w") as f:
            f.write("precious\n")
        status, err = self.run_echo("--listen", "unix:" + self.path)
        self.assertEqual(status, 1, err)
        self.assertIn("exists and is not a socket", err)
        with open(self.path) as f:
            self.assertEqual(f.read(), "precious\n")

    def test_socket_file_removed_on_sigterm(self):
        p = self.echo()
        # A connection served and closed: in fork mode a child came and
        # went, and its exit left the file.
        self.assertEchoes(self.path)
        self.assertTrue(wait_until(lambda: not fltest.children(p.pid)))
        time.sleep(0.2)
        self.assertTrue(os.path.exists(self.path))
        self.assertEchoes(self.path)
        self.stop(p)
        self.assertFalse(os.path.exists(self.path))

    def test_unix_mode_sets_permissions(self):
        p = self.echo("--unix-mode", "0660")
        self.assertEqual(stat.S_IMODE(os.lstat(self.path).st_mode), 0o660)
        self.assertEchoes(self.path)
        self.stop(p)
        status, err = self.run_echo("--listen", "unix:@fl-%d" % os.getpid(),
                                    "--unix-mode", "0660")
        self.assertEqual(status, 2, err)
        self.assertIn("unix:@NAME has none", err)
        status, err = self.run_echo("--listen", "unix:" + self.path,
                                    "--unix-mode", "0999")
        self.assertEqual(status, 2, err)
        self.assertIn("bad --unix-mode", err)

    def test_abstract_name(self):
        name = "forkloop-test-%d-%d" % (os.getpid(), random.randrange(1 << 30))
        p = self.echo(listen="unix:@" + name)
        p.wait_line(r"listening on unix:@" + re.escape(name) + " ")
        self.assertEchoes("\0" + name)
        self.assertEqual(os.listdir(self.dir), [])
        self.stop(p)

    def test_path_too_long_is_usage(self):
        path = "/tmp/" + "x" * 103  # 108 bytes: one too many
        status, err = self.run_echo("--listen", "unix:" + path)
        self.assertEqual(status, 2, err)
        self.assertIn("path longer than 107 bytes", err)
        self.assertFalse(os.path.exists(path))

    def test_verbose_logs_peer_credentials(self):
        # TCP options do not apply, and must not log errors.
        p = self.echo("-v", "--keepalive", 30)
        self.assertEchoes(self.path)
        p.wait_line(r"unix:%s \(uid %d pid %d\)" %
                    (re.escape(self.path), os.getuid(), os.getpid()))
        self.stop(p)
        self.assertNotIn("cannot", p.stderr_text())
        self.assertNotIn("rror", p.stderr_text())

    def test_allow_uid_filters_peers(self):
        """--allow-uid admits the users given, by the peer's credentials
        (SO_PEERCRED); anyone else is closed at once, logged and counted
        as uid=; the rule needs a Unix listener."""
        me = os.getuid()
        p = self.echo("--allow-uid", me, "--allow-uid", me + 1)
        self.assertEchoes(self.path)
        self.stop(p)
        p = self.echo("--allow-uid", me + 1)
        s = unix_connect(self.path)
        s.sendall(b"not echoed")
        s.shutdown(socket.SHUT_WR)
        try:
            got = recv_all(s)
        except ConnectionResetError:
            got = b""
        s.close()
        self.assertEqual(got, b"")
        p.wait_line(r"refused unix:\S* \(uid %d pid %d\): uid not in "
                    r"--allow-uid$" % (me, os.getpid()))
        p.signal(signal.SIGUSR1)
        p.wait_line(r"stats: open=0 accepted=0 .* denied=0 per_source=0 "
                    r"rate=0 table_full=0 uid=1$")
        self.stop(p)
        status, err = self.run_echo("--listen", "127.0.0.1:0",
                                    "--allow-uid", me)
        self.assertEqual(status, 2, err)
        self.assertIn("--allow-uid is for unix: listeners", err)

    def test_udp_does_not_apply(self):
        status, err = self.run_echo("--listen", "unix:" + self.path,
                                    "--udp-only")
        self.assertEqual(status, 2, err)
        self.assertIn("not with --udp-only", err)
        status, err = self.run_echo("--listen", "unix:" + self.path, "--udp")
        self.assertEqual(status, 2, err)
        status, err = self.run_echo("--listen", "tls://unix:" + self.path)
        self.assertEqual(status, 2, err)
        self.assertIn("TLS is not spoken over Unix sockets", err)
        # beside an IP listener, UDP is served there only
        p = self.start(Proc, [fltest.binary("echo")] + mode_args() +
                       ["--listen", "unix:" + self.path, "--listen",
                        "127.0.0.1:0", "--udp"])
        p.wait_line(r"listening on 127\.0\.0\.1:\d+ \(udp")
        self.assertEqual(len([l for l in p.stderr_text().splitlines()
                              if "listening on unix:" in l]), 1)
        self.assertEchoes(self.path)

    def test_socket_activation(self):
        """An inherited listening Unix socket (ListenStream=/PATH) is
        served, and its file, the service manager's, stays at exit."""
        ls = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        ls.bind(self.path)
        ls.listen(16)
        os.set_inheritable(ls.fileno(), True)
        script = 'LISTEN_PID=$$ LISTEN_FDS=1 exec "$@" 3<&%d' % ls.fileno()
        p = self.start(Proc, ["sh", "-c", script, "sh",
                              fltest.binary("echo")] + mode_args() + ["-v"],
                       pass_fds=(ls.fileno(),))
        ls.close()
        p.wait_line(r"listening on unix:%s \(activated fd 3, %s mode\)" %
                    (re.escape(self.path), MODE))
        self.assertEchoes(self.path)
        p.wait_line(r"unix:%s \(uid %d pid %d\)" %
                    (re.escape(self.path), os.getuid(), os.getpid()))
        self.stop(p)
        self.assertTrue(stat.S_ISSOCK(os.lstat(self.path).st_mode))

    # --- forkloop-bench ---

    def bench_json(self, *args):
        p = subprocess.run([fltest.binary("bench"), "--json"] +
                           [str(a) for a in args], capture_output=True,
                           timeout=60, start_new_session=True)
        self.assertEqual(p.returncode, 0, p.stderr.decode())
        return json.loads(p.stdout.decode())

    def test_bench_exact_count(self):
        p = self.echo()
        target = "unix:" + self.path
        j = self.bench_json("-c", 10, "-s", 64, "-n", 2000, target)
        self.assertEqual(j["target"], target)
        self.assertEqual((j["messages"], j["errors"]), (2000, 0), j)
        # A fork-mode child adds its last write to the shared counts after
        # the write: poll the stats line until the counts settle.
        deadline = time.monotonic() + 10
        for n in range(1, 1000):
            p.signal(signal.SIGUSR1)
            m = p.wait_line(STATS_RE.pattern, count=n)[-1]
            if int(m.group(5)) == 2000 * 64 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        self.assertEqual(int(m.group(4)), 2000 * 64)
        self.assertEqual(int(m.group(5)), 2000 * 64)
        j = self.bench_json("--churn", "-c", 2, "-n", 100, target)
        self.assertEqual((j["messages"], j["errors"]), (100, 0), j)
        self.assertGreaterEqual(j["connects"], 100)
        j = self.bench_json("--threads", 2, "-c", 4, "-n", 400, target)
        self.assertEqual((j["messages"], j["errors"]), (400, 0), j)
        j = self.bench_json("--rate", 200, "-c", 2, "-d", 0.5, target)
        self.assertEqual(j["errors"], 0, j)
        self.assertGreater(j["messages"], 0, j)
        self.assertEqual(j["load"], "open")
        p2 = subprocess.run([fltest.binary("bench"), "--tls", target],
                            capture_output=True, timeout=20)
        self.assertEqual(p2.returncode, 2)
        self.assertIn(b"TLS is not spoken over Unix sockets", p2.stderr)

    # --- forkloop-chat ---

    def chat(self, *args):
        return self.start(Proc, [fltest.binary("chat"), "--mode", MODE] +
                          [str(a) for a in args], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE)

    def test_chat_listen_and_connect(self):
        target = "unix:" + self.path
        lst = self.chat("--listen", target, "--keepalive", 10)
        lst.wait_line(r"listening on unix:" + re.escape(self.path))
        con = self.chat(target, "--keepalive", 10)
        lst.wait_line(r"connected to unix:.*\(uid %d pid %d\)" %
                      (os.getuid(), con.pid))
        # One side at a time: the client's line arrives, then the
        # listener answers and both ends finish.
        con.p.stdin.write(b"from the client\n")
        con.p.stdin.close()
        self.assertEqual(lst.p.stdout.readline(), b"from the client\n")
        lst.p.stdin.write(b"from the listener\n")
        lst.p.stdin.close()
        self.assertEqual(con.p.stdout.read(), b"from the listener\n")
        self.assertEqual(lst.p.stdout.read(), b"")
        for p in (lst, con):
            self.assertEqual(p.wait(timeout=20), 0, p.stderr_text())
        self.assertFalse(os.path.exists(self.path))
        self.assertNotIn("keepalive", lst.stderr_text() + con.stderr_text())

    def test_relay_over_unix(self):
        b = self.start(Proc, [fltest.binary("chat"), "--broker", "-v",
                              "--listen", "unix:" + self.path])
        b.wait_line(r"listening on unix:")
        one, two = unix_connect(self.path), unix_connect(self.path)
        b.wait_line(r"event=join name=\S+ peer=\"unix:", count=2)
        one.sendall(b"hello over unix\n")
        got = b""
        deadline = time.monotonic() + 10
        while b"hello over unix\n" not in got and time.monotonic() < deadline:
            chunk = two.recv(4096)
            if not chunk:
                break
            got += chunk
        self.assertRegex(got, rb"<[^>]+> hello over unix\n")
        one.close()
        two.close()
        b.signal(signal.SIGTERM)
        b.wait(timeout=20)
        self.assertFalse(os.path.exists(self.path))


if __name__ == "__main__":
    fltest.main()
