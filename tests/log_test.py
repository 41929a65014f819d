"""Integration tests for what forkloop-echo and the relay (forkloop-chat
--broker) write on standard error: syslog priorities when standard error is
the journal ($JOURNAL_STREAM, sd-daemon(3)), time stamps on -v lines
otherwise, per-connection lines as key=value pairs that a client's bytes
cannot forge, the final statistics line, and SIGHUP.

The echo scenarios run once per mode (FORKLOOP_MODE, FORKLOOP_THREADS); the
relay's (test_relay_*) once. Every program runs in its own process group,
killed by group afterwards.
"""

import datetime
import os
import re
import shutil
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
from fltest import Proc, recv_all, recv_exactly  # noqa: E402

MODE = fltest.mode()
THREADS = os.environ.get("FORKLOOP_THREADS")
ECHO = fltest.binary("echo")
CHAT = fltest.binary("chat")
KIB = 1024
STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
# "event=close" or "peer=\"unix:/x \\\"y\\\"\"": one pair, at the start of s.
PAIR = re.compile(r'([a-z_]+)=("(?:[ !#-\[\]-~]|\\["\\]|\\x[0-9a-f]{2})*"'
                  r'|[!#-<>-\[\]-~]+)(?: |$)')
ECHO_KEYS = {"event", "peer", "loop", "pid", "in", "out", "reason",
             "duration_ms", "error", "open", "max_conns", "not_logged"}
RELAY_KEYS = {"event", "name", "old", "peer", "name_from", "reason",
              "lines_in", "duration_ms", "pending", "error", "linger_ms"}


def pairs(text):
    """The key=value pairs of text, values unquoted (bytes); None if text
    is not wholly such pairs."""
    out, pos = [], 0
    while pos < len(text):
        m = PAIR.match(text, pos)
        if m is None:
            return None
        v = m.group(2)
        if v.startswith('"'):
            v = re.sub(r'\\x([0-9a-f]{2})|\\(["\\])',
                       lambda x: chr(int(x.group(1), 16)) if x.group(1)
                       else x.group(2), v[1:-1])
        out.append((m.group(1), v.encode("latin-1")))
        pos = m.end()
    return out


def mode_args():
    args = ["--mode", MODE]
    if THREADS is not None:
        args += ["--threads", THREADS]
    return args



def unix_name(path):
    """A Unix peer's name as the daemons write it (addr_format): each byte
    that does not print, and backslash and parentheses, as \\xNN."""
    if isinstance(path, str):
        path = os.fsencode(path)
    return b"".join(b"\\x%02x" % c if c < 0x20 or c > 0x7e or c in b"\\()"
                    else bytes([c]) for c in path)


class PipeProc(Proc):
    """A program whose standard error is a pipe made here, so that its
    device and inode are known before it starts. journal: "self" sets
    JOURNAL_STREAM to them, "other" to another inode, None removes it."""

    def __init__(self, argv, journal=None, pass_fds=()):
        r, w = os.pipe()
        st = os.fstat(w)
        env = dict(os.environ)
        env.pop("JOURNAL_STREAM", None)
        if journal == "self":
            env["JOURNAL_STREAM"] = "%d:%d" % (st.st_dev, st.st_ino)
        elif journal == "other":
            env["JOURNAL_STREAM"] = "%d:%d" % (st.st_dev, st.st_ino + 1)
        self.argv = argv
        self.p = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=w,
                                  start_new_session=True, env=env,
                                  pass_fds=pass_fds)
        os.close(w)
        self.pid = self.pgid = self.p.pid
        self.lines = []
        self.cond = threading.Condition()
        self.rfile = os.fdopen(r, "rb")
        self.t = threading.Thread(target=self._read, daemon=True)
        self.t.start()
        try:
            m = self.wait_line(r"listening on (?:unix:\S+|\S+:(\d+))")
        except AssertionError:
            self.kill_group()  # not yet the test's to clean up
            raise
        self.port = int(m[0].group(1)) if m[0].group(1) else None

    def _read(self):
        for raw in self.rfile:
            line = raw.decode("latin-1").rstrip("\n")
            with self.cond:
                self.lines.append(line)
                self.cond.notify_all()
        with self.cond:
            self.lines.append(None)
            self.cond.notify_all()

    def kill_group(self):
        super().kill_group()
        self.rfile.close()


def transfer(test, sock, data, chunk=64 * KIB, between=None):
    """Send data chunk by chunk, reading each chunk's echo before the next;
    between(i) runs after chunk i. Asserts every byte came back."""
    for i in range(0, len(data), chunk):
        part = data[i:i + chunk]
        sock.sendall(part)
        got = recv_exactly(sock, len(part), 30)
        test.assertEqual(got, part, "echo of bytes %d to %d" %
                         (i, i + len(part)))
        if between is not None:
            between(i // chunk)


class LogTest(fltest.ProcTestCase):

    certs = None

    def setUp(self):
        super().setUp()
        self.socks = []
        self.tmp = tempfile.TemporaryDirectory()

    def tearDown(self):
        for s in self.socks:
            s.close()
        super().tearDown()
        self.tmp.cleanup()

    @classmethod
    def tls_dir(cls):
        if cls.certs is None:
            cls.certs = tempfile.TemporaryDirectory()
            tlscerts.make(cls.certs.name)
        return cls.certs.name

    def echo(self, *opts, journal=None, listen="127.0.0.1:0"):
        return self.start(PipeProc, [ECHO] + mode_args() +
                          ["--listen", listen] + list(opts), journal=journal)

    def relay(self, *opts, listen="127.0.0.1:0"):
        return self.start(PipeProc, [CHAT, "--broker", "--listen", listen] +
                          list(opts))

    def connect(self, port):
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.socks.append(s)
        return s

    def stopped(self, p, sig=signal.SIGTERM):
        """Signal p, wait for its exit; its status."""
        p.signal(sig)
        status = p.wait(timeout=30)
        p.t.join(10)
        return status

    def kv_lines(self, p, prog, keys):
        """The key=value lines p wrote, as lists of pairs: every line must
        start with "PROG: ", a -v line with a time stamp, and no key may be
        outside keys."""
        out = []
        with p.cond:
            lines = [l for l in p.lines if l is not None]
        for line in lines:
            self.assertTrue(line.startswith(prog + ": "), repr(line))
            m = re.match(r"%s: %s (event=.*)$" % (prog, STAMP), line)
            if m is None:
                self.assertNotIn("event=", line)
                continue
            kv = pairs(m.group(1))
            self.assertIsNotNone(kv, "not key=value: %r" % line)
            self.assertTrue({k for k, _ in kv} <= keys, repr(line))
            self.assertEqual(len({k for k, _ in kv}), len(kv), repr(line))
            out.append(kv)
        return out

    # --- the journal ---

    def test_journal_stream_gets_priorities(self):
        """Standard error is the journal: every line starts with its
        priority, none with the program's name: an error <3>, a warning <4>
        (accepting paused for want of descriptors), information <6>, a -v
        line <7>."""
        srv = self.echo("-v", journal="self")
        srv.wait_line(r"^<6>listening on 127\.0\.0\.1:%d \(" % srv.port)
        with fltest.out_of_descriptors(srv.pid):
            s = self.connect(srv.port)
            srv.wait_line(r"^<4>accept: Too many open files; pausing "
                          r"accepts$", timeout=10)
        srv.wait_line(r"^<6>accepting again after ", timeout=10)
        transfer(self, s, b"journal" * 1000)
        s.shutdown(socket.SHUT_WR)
        self.assertEqual(recv_all(s), b"")
        srv.wait_line(r"^<7>event=close peer=127\.0\.0\.1:%d "
                      % s.getsockname()[1])
        srv.wait_line(r"^<7>event=open peer=127\.0\.0\.1:%d (loop|pid)="
                      % s.getsockname()[1])
        # A second daemon on the same port cannot start: an error.
        status, err = self.run_in_journal(
            [ECHO, "--listen", "127.0.0.1:%d" % srv.port])
        self.assertEqual(status, 1, err)
        self.assertRegex(err, r"^<3>cannot listen on 127\.0\.0\.1:%d: "
                         r"Address already in use\n$" % srv.port)
        self.assertEqual(self.stopped(srv), 0)
        lines = [l for l in srv.lines if l is not None]
        self.assertRegex(lines[-1], r"^<6>stats: open=0 accepted=1 ")
        for line in lines:
            self.assertRegex(line, r"^<[3467]>[^<]")
            self.assertNotIn("forkloop-echo", line)

    def run_in_journal(self, argv):
        """Run argv to its end with standard error a file that
        JOURNAL_STREAM names; (exit status, what it wrote)."""
        with open(os.path.join(self.tmp.name, "journal"), "w+b") as f:
            st = os.fstat(f.fileno())
            env = dict(os.environ)
            env["JOURNAL_STREAM"] = "%d:%d" % (st.st_dev, st.st_ino)
            p = subprocess.run(argv, stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=f, env=env,
                               timeout=20)
            f.seek(0)
            return p.returncode, f.read().decode("latin-1")

    def test_journal_stream_of_another_file_is_ignored(self):
        """JOURNAL_STREAM inherited, standard error elsewhere (another
        inode): the plain format, with the program's name."""
        srv = self.echo("-v", journal="other")
        s = self.connect(srv.port)
        transfer(self, s, b"x" * 100)
        s.close()
        srv.wait_line(r"^forkloop-echo: %s event=close " % STAMP)
        self.assertEqual(self.stopped(srv), 0)
        for line in (l for l in srv.lines if l is not None):
            self.assertTrue(line.startswith("forkloop-echo: "), line)

    def test_no_journal_stream_stamps_verbose_lines(self):
        """No JOURNAL_STREAM: "forkloop-echo: " on every line; -v lines
        carry the time, UTC, to the millisecond; the others do not."""
        srv = self.echo("-v")
        s = self.connect(srv.port)
        transfer(self, s, b"when" * 10)
        s.close()
        m = srv.wait_line(r"^forkloop-echo: (%s) event=close " % STAMP)[0]
        when = datetime.datetime.strptime(m.group(1),
                                          "%Y-%m-%dT%H:%M:%S.%fZ")
        now = datetime.datetime.now(datetime.timezone.utc).replace(
            tzinfo=None)
        self.assertLess(abs((now - when).total_seconds()), 300,
                        "the stamp is not this clock's UTC time")
        srv.wait_line(r"^forkloop-echo: %s event=open " % STAMP)
        self.assertEqual(self.stopped(srv), 0)
        srv.wait_line(r"^forkloop-echo: listening on 127\.0\.0\.1:")
        srv.wait_line(r"^forkloop-echo: stats: ")

    # --- per-connection lines ---

    def test_close_line_counts_bytes_exactly(self):
        """-v: one open and one close line per connection, as key=value
        pairs, the close line with the bytes read and echoed and why it
        ended: eof for a client that ended its input, reset for one that
        reset."""
        srv = self.echo("-v")
        s = self.connect(srv.port)
        port = s.getsockname()[1]
        data = os.urandom(300 * KIB + 17)
        transfer(self, s, data)
        s.shutdown(socket.SHUT_WR)
        self.assertEqual(recv_all(s), b"")
        m = srv.wait_line(r"event=close peer=127\.0\.0\.1:%d (?:pid=(\d+) )?"
                          r"in=(\d+) out=(\d+) reason=eof "
                          r"duration_ms=\d+$" % port)[0]
        self.assertEqual(int(m.group(2)), len(data))
        self.assertEqual(int(m.group(3)), len(data))
        key = "pid" if MODE == "fork" else "loop"
        o = srv.wait_line(r"event=open peer=127\.0\.0\.1:%d %s=(\d+)$"
                          % (port, key))[0]
        if MODE == "fork":
            self.assertEqual(o.group(1), m.group(1))
        elif THREADS is not None:
            self.assertLess(int(o.group(1)), int(THREADS))
        else:
            self.assertEqual(o.group(1), "0")

        r = self.connect(srv.port)
        rport = r.getsockname()[1]
        transfer(self, r, b"r" * 1000)
        r.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                     b"\x01\x00\x00\x00\x00\x00\x00\x00")
        r.close()
        self.socks.remove(r)
        srv.wait_line(r"event=close peer=127\.0\.0\.1:%d (?:pid=\d+ )?"
                      r"in=1000 out=1000 reason=reset duration_ms=\d+ "
                      r"error=\"Connection reset by peer\"$" % rport)
        self.assertEqual(self.stopped(srv), 0)
        kv = self.kv_lines(srv, "forkloop-echo", ECHO_KEYS)
        self.assertEqual([dict(x)["event"] for x in kv],
                         [b"open", b"close", b"open", b"close"])

    def test_drain_timeout_is_a_close_reason(self):
        """A client that never reads, still owed echo at the end of
        --drain-timeout: its close line says drain_timeout (fork mode: the
        parent's line for the child it kills, with the child's pid)."""
        srv = self.echo("-v", "--drain-timeout", "0.5")
        s = self.connect(srv.port)
        port = s.getsockname()[1]
        transfer(self, s, b"first")
        s.setblocking(False)
        sent, chunk = 0, b"z" * (64 * KIB)
        deadline = time.monotonic() + 20
        stalled = 0
        while stalled < 20 and time.monotonic() < deadline:
            try:
                sent += s.send(chunk)
                stalled = 0
            except BlockingIOError:
                stalled += 1
                time.sleep(0.05)
        self.assertGreater(sent, 0)
        self.assertEqual(self.stopped(srv), 0)
        m = srv.wait_line(r"event=close peer=127\.0\.0\.1:%d (?:pid=(\d+) )?"
                          r"(?:in=\d+ out=\d+ )?reason=drain_timeout"
                          % port)[0]
        o = srv.wait_line(r"event=open peer=127\.0\.0\.1:%d (?:pid|loop)="
                          r"(\d+)$" % port)[0]
        if MODE == "fork":
            self.assertEqual(m.group(1), o.group(1))

    def test_hostile_unix_peer_cannot_forge_a_field_or_line(self):
        """A Unix client bound to a path full of quotes, backslashes, '=',
        spaces and a newline is named in one quoted value that unquotes
        to that path: no extra key, no extra line."""
        path = os.path.join(self.tmp.name, "s")
        srv = self.echo("-v", listen="unix:" + path)
        evil = os.path.join(self.tmp.name,
                            'a" reason=eof \\x\nforkloop-echo: event=open=1')
        c = socket.socket(socket.AF_UNIX)
        self.socks.append(c)
        c.bind(evil)
        c.connect(path)
        c.settimeout(30)
        transfer(self, c, b"hostile" * 100)
        c.shutdown(socket.SHUT_WR)
        self.assertEqual(recv_all(c), b"")
        srv.wait_line(r"event=close peer=\"unix:")
        self.assertEqual(self.stopped(srv), 0)
        kv = self.kv_lines(srv, "forkloop-echo", ECHO_KEYS)
        self.assertEqual(len(kv), 2, srv.stderr_text())
        want = b"unix:%s (uid %d pid %d)" % (unix_name(evil), os.getuid(),
                                             os.getpid())
        for line in kv:
            d = dict(line)
            self.assertEqual(d["peer"], want)
        self.assertEqual(dict(kv[1])["in"], b"700")
        self.assertEqual(dict(kv[1])["reason"], b"eof")

    # --- the final statistics line ---

    def test_final_stats_line_after_sigterm(self):
        """SIGTERM: after the drain, the line SIGUSR1 logs, once, with the
        final counts, last."""
        srv = self.echo("--max-conns", "2")
        a, b = self.connect(srv.port), self.connect(srv.port)
        transfer(self, a, b"a" * 5000)
        transfer(self, b, b"b" * 7000)
        c = self.connect(srv.port)
        c.settimeout(10)
        try:
            self.assertEqual(c.recv(10), b"")
        except ConnectionResetError:
            pass
        a.shutdown(socket.SHUT_WR)
        self.assertEqual(recv_all(a), b"")
        self.assertEqual(self.stopped(srv), 0)
        self.assertEqual(recv_all(b), b"")
        lines = [l for l in srv.lines if l is not None]
        self.assertEqual(lines[-1], "forkloop-echo: stats: open=0 "
                         "accepted=2 refused=1 bytes_in=12000 "
                         "bytes_out=12000")
        self.assertEqual(sum(" stats: " in l for l in lines), 1, lines)

    # --- SIGHUP, SIGUSR1, SIGUSR2 ---

    def test_sighup_to_the_group_mid_transfer(self):
        """SIGHUP, SIGUSR1 and SIGUSR2 to the whole process group (a closed
        terminal, a stray kill): in fork mode the child echoing is hit too.
        The transfer goes on byte-exact, the daemon serves on."""
        srv = self.echo()
        s = self.connect(srv.port)
        data = os.urandom(2 * 1024 * KIB)

        def signals(i):
            if i in (3, 10):
                for sig in (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
                    os.killpg(srv.pgid, sig)
                    time.sleep(0.02)
        transfer(self, s, data, 32 * KIB, signals)
        srv.wait_line(r"SIGHUP: nothing to reload", count=2)
        srv.wait_line(r"SIGUSR2 ignored", count=2)
        srv.wait_line(r"stats: open=1 ", count=2)
        self.assertIsNone(srv.p.poll())
        s.shutdown(socket.SHUT_WR)
        self.assertEqual(recv_all(s), b"")
        t = self.connect(srv.port)
        transfer(self, t, b"after" * 1000)
        self.assertEqual(self.stopped(srv), 0)

    def test_tls_sighup_reloads_mid_transfer(self):
        """With TLS, SIGHUP to the group reloads the certificate while a
        TLS transfer goes on byte-exact; a client after it sees the new
        one. A bad pair is a warning, and the old pair stays. In the
        journal, to check the warnings' priority."""
        d = self.tls_dir()
        for a, b in (("server.pem", "cur.pem"), ("server.key", "cur.key")):
            shutil.copy(os.path.join(d, a), os.path.join(self.tmp.name, b))
        srv = self.echo("--tls-cert", os.path.join(self.tmp.name, "cur.pem"),
                        "--tls-key", os.path.join(self.tmp.name, "cur.key"),
                        journal="self", listen="tls://127.0.0.1:0")
        ctx = ssl.create_default_context(cafile=os.path.join(d, "ca.pem"))
        s = ctx.wrap_socket(self.connect(srv.port),
                            server_hostname="127.0.0.1")

        def hup(i):
            if i == 4:
                for a, b in (("server2.pem", "cur.pem"),
                             ("server2.key", "cur.key")):
                    shutil.copy(os.path.join(d, a),
                                os.path.join(self.tmp.name, b))
                os.killpg(srv.pgid, signal.SIGHUP)
                srv.wait_line(r"^<6>SIGHUP: reloaded --tls-cert ")
        transfer(self, s, os.urandom(1024 * KIB), 32 * KIB, hup)
        with ctx.wrap_socket(self.connect(srv.port),
                             server_hostname="127.0.0.1") as t:
            self.assertEqual(t.getpeercert(binary_form=True),
                             self.der(os.path.join(d, "server2.pem")))
            transfer(self, t, b"new" * 1000)
        shutil.copy(os.path.join(d, "server.pem"),
                    os.path.join(self.tmp.name, "cur.pem"))
        os.killpg(srv.pgid, signal.SIGHUP)
        srv.wait_line(r"^<4>cannot load --tls-key .*: .*mismatch")
        srv.wait_line(r"^<4>SIGHUP: keeping the certificate loaded before$")
        transfer(self, s, b"still" * 1000)
        s.close()
        self.assertIsNone(srv.p.poll())
        self.assertEqual(self.stopped(srv), 0)

    @staticmethod
    def der(path):
        with open(path) as f:
            return ssl.PEM_cert_to_DER_cert(f.read())

    # --- the relay ---

    def join(self, srv, sock_family=socket.AF_INET, path=None, bind=None):
        """A client of the relay; its name, from the welcome line."""
        if sock_family == socket.AF_UNIX:
            s = socket.socket(socket.AF_UNIX)
            self.socks.append(s)
            if bind is not None:
                s.bind(bind)
            s.connect(path)
        else:
            s = self.connect(srv.port)
        s.settimeout(10)
        f = s.makefile("rb")
        line = f.readline()
        m = re.match(rb"^\* you are (\S+); others here: \d+\n$", line)
        self.assertIsNotNone(m, line)
        return s, f, m.group(1)

    def read_until(self, f, want):
        """Lines from f up to and including want."""
        got = []
        while True:
            line = f.readline()
            self.assertNotEqual(line, b"", "EOF before %r: %r" % (want, got))
            got.append(line)
            if line == want:
                return got

    def test_relay_lines_are_key_value(self):
        """-v: join, nick and leave lines as key=value pairs, with the
        lines each client sent and why it left."""
        srv = self.relay("-v")
        a, af, an = self.join(srv)
        b, bf, bn = self.join(srv)
        self.read_until(af, b"* %s joined\n" % bn)
        a.sendall(b"/nick alice\n")
        self.read_until(bf, b"* %s is now alice\n" % an)
        b.sendall(b"one\ntwo\nthree\n/quit bye\n")
        self.read_until(af, b"* %s left: bye\n" % bn)
        self.read_until(bf, b"* bye\n")
        bf.close()
        b.close()
        a.shutdown(socket.SHUT_WR)
        self.assertEqual(recv_all(a), b"")
        srv.wait_line(r"event=leave name=alice ")
        kv = self.kv_lines(srv, "forkloop-chat", RELAY_KEYS)
        got = [(d["event"], d.get("name"), d.get("reason"),
                d.get("lines_in")) for d in map(dict, kv)
               if d["event"] != b"close"]
        self.assertEqual(got, [
            (b"join", an, None, None), (b"join", bn, None, None),
            (b"nick", b"alice", None, None),
            (b"leave", bn, b"quit", b"4"),
            (b"leave", b"alice", b"eof", b"1")])
        nick = dict(kv[2])
        self.assertEqual(nick["old"], an)
        self.assertRegex(nick["peer"].decode(), r"^127\.0\.0\.1:\d+$")
        self.assertEqual(dict(kv[0])["name_from"], b"relay")
        self.stopped(srv)

    def test_relay_hostile_names_cannot_forge_a_field_or_line(self):
        """Unix clients bound to hostile paths, and nicknames with quotes,
        backslashes, '=', spaces and control bytes: whatever the relay
        takes is logged in values that unquote to it, and no line or key
        is added."""
        path = os.path.join(self.tmp.name, "r")
        srv = self.relay("-v", listen="unix:" + path)
        evil = os.path.join(self.tmp.name,
                            'c" name=root \\ \nforkloop-chat: event=join')
        a, af, an = self.join(srv, socket.AF_UNIX, path, bind=evil)
        b, bf, bn = self.join(srv, socket.AF_UNIX, path)
        self.read_until(af, b"* %s joined\n" % bn)
        tries = [b'a"b', b"a\\b", b"x=y", b'q" name=root', b"t\x1bz",
                 b"e\x7f", b"n\x00l", b"r\rs", b"\xc3\xa9lan", b"o'k.j-s"]
        taken = []
        for nick in tries:
            a.sendall(b"/nick " + nick + b"\n")
            line = af.readline()
            if line.startswith(b"* you are now "):
                taken.append(nick)
                self.read_until(bf, b"* %s is now %s\n" % (an, nick))
                an = nick
            else:
                self.assertTrue(line.startswith(b"* "), line)
        a.sendall(b"/quit\n")
        self.read_until(bf, b"* %s left\n" % an)
        self.read_until(af, b"* bye\n")
        af.close()
        a.close()
        bf.close()
        b.close()
        self.stopped(srv)
        kv = self.kv_lines(srv, "forkloop-chat", RELAY_KEYS)
        events = [dict(x)["event"] for x in kv]
        self.assertEqual(events.count(b"join"), 2, srv.stderr_text())
        self.assertEqual(events.count(b"nick"), len(taken))
        self.assertEqual([dict(x)["name"] for x in kv
                          if dict(x)["event"] == b"nick"], taken)
        first = dict(kv[0])
        self.assertEqual(first["peer"], b"unix:%s (uid %d pid %d)" % (
            unix_name(evil), os.getuid(), os.getpid()))

    def test_relay_final_stats_line_after_sigterm(self):
        """SIGTERM: once every client is closed, the relay's SIGUSR1 line,
        once, with the final counts, last."""
        srv = self.relay("--max-clients", "2")
        a, af, an = self.join(srv)
        b, bf, bn = self.join(srv)
        c = self.connect(srv.port)
        c.settimeout(10)
        try:
            self.assertEqual(c.recv(100), b"")
        except ConnectionResetError:
            pass
        a.sendall(b"/quit\n")
        self.read_until(bf, b"* %s left\n" % an)
        self.read_until(af, b"* bye\n")
        af.close()
        a.close()
        srv.signal(signal.SIGTERM)
        self.read_until(bf, b"* the relay is shutting down\n")
        bf.close()
        b.close()
        self.assertEqual(srv.wait(timeout=30), -signal.SIGTERM)
        srv.t.join(10)
        lines = [l for l in srv.lines if l is not None]
        self.assertEqual(lines[-1], "forkloop-chat: stats: clients=0 "
                         "open=0 accepted=2 refused=1")
        self.assertEqual(sum(" stats: " in l for l in lines), 1, lines)

    def test_relay_sighup_usr1_usr2_keep_relaying(self):
        """SIGHUP, SIGUSR1 and SIGUSR2 to the relay's group: logged, and
        every line is still relayed whole."""
        srv = self.relay()
        a, af, an = self.join(srv)
        b, bf, bn = self.join(srv)
        self.read_until(af, b"* %s joined\n" % bn)
        for sig in (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
            os.killpg(srv.pgid, sig)
        srv.wait_line(r"SIGHUP: nothing to reload")
        srv.wait_line(r"stats: clients=2 open=2 ")
        srv.wait_line(r"SIGUSR2 ignored")
        lines = [b"line %d " % i + b"x" * 200 + b"\n" for i in range(200)]
        a.sendall(b"".join(lines))
        got = self.read_until(bf, b"<%s> " % an + lines[-1])
        self.assertEqual(got, [b"<%s> " % an + l for l in lines])
        self.assertIsNone(srv.p.poll())
        af.close()
        a.close()
        bf.close()
        b.close()
        self.stopped(srv)

    def test_relay_tls_sighup_reloads_and_keeps_relaying(self):
        """Over TLS, SIGHUP to the group reloads the certificate; clients
        connected across it go on relaying, a new one sees the new one."""
        d = self.tls_dir()
        for a, b in (("server.pem", "cur.pem"), ("server.key", "cur.key")):
            shutil.copy(os.path.join(d, a), os.path.join(self.tmp.name, b))
        srv = self.relay("--tls-cert", os.path.join(self.tmp.name, "cur.pem"),
                         "--tls-key", os.path.join(self.tmp.name, "cur.key"),
                         listen="tls://127.0.0.1:0")
        ctx = ssl.create_default_context(cafile=os.path.join(d, "ca.pem"))

        def tls_join():
            s = ctx.wrap_socket(self.connect(srv.port),
                                server_hostname="127.0.0.1")
            self.socks.append(s)
            s.settimeout(10)
            f = s.makefile("rb")
            m = re.match(rb"^\* you are (\S+);", f.readline())
            self.assertIsNotNone(m)
            return s, f, m.group(1)
        a, af, an = tls_join()
        for x, y in (("server2.pem", "cur.pem"), ("server2.key", "cur.key")):
            shutil.copy(os.path.join(d, x), os.path.join(self.tmp.name, y))
        os.killpg(srv.pgid, signal.SIGHUP)
        os.killpg(srv.pgid, signal.SIGUSR2)
        srv.wait_line(r"SIGHUP: reloaded --tls-cert ")
        srv.wait_line(r"SIGUSR2 ignored")
        b, bf, bn = tls_join()
        self.assertEqual(b.getpeercert(binary_form=True),
                         self.der(os.path.join(d, "server2.pem")))
        self.read_until(af, b"* %s joined\n" % bn)
        a.sendall(b"across the reload\n")
        self.read_until(bf, b"<%s> across the reload\n" % an)
        self.assertIsNone(srv.p.poll())
        af.close()
        a.close()
        bf.close()
        b.close()
        self.stopped(srv)


if __name__ == "__main__":
    fltest.main()
