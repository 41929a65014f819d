"""Integration tests for forkloop-echo's tls:// listeners: the real binary on
loopback, spoken to with Python's ssl module, openssl s_client and ncat
--ssl (Debian package ncat).

Each test method is one scenario; meson runs it once per mode (FORKLOOP_MODE,
and FORKLOOP_THREADS for event mode with several loops). Certificates are
made at test time with the openssl command in a temporary directory
(tlscerts.py: a CA, server pairs for 127.0.0.1 and localhost, client
certificates, a rogue CA). No key is ever committed.
"""

import os
import re
import select
import selectors
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fltest  # noqa: E402
import tlscerts  # noqa: E402
from fltest import Proc, Server, wait_until  # noqa: E402

MODE = fltest.mode()
THREADS = os.environ.get("FORKLOOP_THREADS")
KIB = 1024
TLS_LISTEN_RE = r"listening on (\S+):(\d+) \(tls, %s mode\)" % MODE
STATS_RE = r"stats: open=(\d+) accepted=(\d+)"
# Every byte value, then text: what the interop tests send (8 KiB).
ALL_BYTES = bytes(range(256)) * 16 + b"".join(
    b"line %04d of the interop test\n" % i for i in range(128))


def der(path):
    with open(path) as f:
        return ssl.PEM_cert_to_DER_cert(f.read())


def tls_roundtrip(s, data, timeout=60.0):
    """Send data over the TLS socket s while reading its echo (one thread,
    non-blocking, so the server's backpressure cannot deadlock it); return
    what came back, len(data) bytes unless the server closed first."""
    s.setblocking(False)
    sent, got = 0, bytearray()
    deadline = time.monotonic() + timeout
    while len(got) < len(data) and time.monotonic() < deadline:
        wantw = sent < len(data)
        if s.pending() == 0:
            r, w, _ = select.select([s], [s] if wantw else [], [], 1.0)
        else:
            r, w = [s], []
        if w:
            try:
                sent += s.send(data[sent:sent + 64 * KIB])
            except (ssl.SSLWantWriteError, ssl.SSLWantReadError):
                pass
        if r:
            try:
                b = s.recv(256 * KIB)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                continue
            if not b:
                break
            got += b
    s.setblocking(True)
    return bytes(got)


def closed_soon(s, timeout):
    """True if the server closed s (EOF, reset or an alert) within timeout."""
    s.settimeout(timeout)
    try:
        while True:
            b = s.recv(65536)
            if not b:
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False


def tls_refusal(s, data=b"not for you"):
    """Finish the handshake on s, send data and read: what a client whose
    certificate the server refuses meets. Returns the exception raised
    (TLS 1.2 fails the handshake; in TLS 1.3 the client's handshake is done
    before the server has checked its certificate, so the alert comes with
    the first read), or the bytes read if none was."""
    try:
        s.do_handshake()
        s.sendall(data)
        s.settimeout(10)
        return s.recv(65536)
    except (ssl.SSLError, ConnectionResetError, BrokenPipeError) as e:
        return e


class ManyTls:
    """n TLS connections to port, all open at once: connect and shake hands
    with at most `window` unfinished at a time (the listen queue and the
    server's CPU set the pace, not a burst of SYNs), then send payloads[i]
    on connection i while reading its echo, all through one selector."""

    def __init__(self, ctx, port, n, window=64, deadline=90.0):
        self.ctx, self.port, self.n, self.window = ctx, port, n, window
        self.end = time.monotonic() + deadline
        self.sel = selectors.DefaultSelector()
        self.conns = []

    def _left(self):
        left = self.end - time.monotonic()
        if left <= 0:
            raise AssertionError("ManyTls: out of time")
        return min(left, 1.0)

    def _open_one(self):
        raw = socket.create_connection(("127.0.0.1", self.port), 10)
        raw.setblocking(False)
        s = self.ctx.wrap_socket(raw, server_hostname="127.0.0.1",
                                 do_handshake_on_connect=False)
        self.conns.append(s)
        self.sel.register(s, selectors.EVENT_WRITE, len(self.conns) - 1)

    def handshake_all(self):
        """Open all n; returns when every handshake has finished."""
        busy = 0
        done = 0
        while done < self.n:
            while busy < self.window and len(self.conns) < self.n:
                self._open_one()
                busy += 1
            for key, _ in self.sel.select(self._left()):
                s = key.fileobj
                try:
                    s.do_handshake()
                except ssl.SSLWantReadError:
                    self.sel.modify(s, selectors.EVENT_READ, key.data)
                    continue
                except ssl.SSLWantWriteError:
                    self.sel.modify(s, selectors.EVENT_WRITE, key.data)
                    continue
                self.sel.unregister(s)
                busy -= 1
                done += 1

    def echo_all(self, payloads):
        """Send payloads[i] on connection i while reading; returns what
        came back on each, once every one has its length back."""
        sent = [0] * self.n
        got = [bytearray() for _ in range(self.n)]
        for i, s in enumerate(self.conns):
            self.sel.register(s, selectors.EVENT_READ | selectors.EVENT_WRITE,
                              i)
        left = self.n
        while left > 0:
            for key, ev in self.sel.select(self._left()):
                i, s = key.data, key.fileobj
                if ev & selectors.EVENT_WRITE and sent[i] < len(payloads[i]):
                    try:
                        sent[i] += s.send(payloads[i][sent[i]:])
                    except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                        pass
                    if sent[i] == len(payloads[i]):
                        self.sel.modify(s, selectors.EVENT_READ, i)
                if self._read(s, got[i]) or len(got[i]) >= len(payloads[i]):
                    self.sel.unregister(s)
                    left -= 1
        return [bytes(g) for g in got]

    @staticmethod
    def _read(s, buf):
        """Read what s has into buf; True at EOF."""
        while True:
            try:
                b = s.recv(65536)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                return False
            if not b:
                return True
            buf += b

    def close(self):
        self.sel.close()
        for s in self.conns:
            s.close()


class TlsTest(fltest.ProcTestCase):

    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="forkloop-tls-")
        tlscerts.make(cls.dir)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.dir, ignore_errors=True)

    def path(self, name):
        return os.path.join(self.dir, name)

    def argv(self, *extra, cert="server.pem", key="server.key"):
        argv = [fltest.binary("echo"), "--mode", MODE, "--listen",
                "tls://127.0.0.1:0", "--tls-cert", self.path(cert),
                "--tls-key", self.path(key)]
        if THREADS and MODE == "event":
            argv += ["--threads", THREADS]
        return argv + list(extra)

    def server(self, *extra, **kw):
        return self.start(Server, self.argv(*extra, **kw))

    def context(self):
        ctx = ssl.create_default_context(cafile=self.path("ca.pem"))
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        return ctx

    def connect(self, srv, port=None):
        raw = socket.create_connection(("127.0.0.1", port or srv.port),
                                       timeout=30)
        return self.context().wrap_socket(raw, server_hostname="127.0.0.1")

    def run_echo(self, argv):
        p = subprocess.run(argv, capture_output=True, timeout=30,
                           start_new_session=True)
        return p.returncode, p.stdout.decode(), p.stderr.decode()

    def test_echo_many_concurrent_payloads(self):
        srv = self.server()
        sizes = [1, 100, 16 * KIB, 300 * KIB, 70 * KIB, 400 * KIB]
        results = {}

        def one(i, n):
            data = os.urandom(n)
            with self.connect(srv) as s:
                results[i] = (data, tls_roundtrip(s, data))

        ts = [threading.Thread(target=one, args=(i, n))
              for i, n in enumerate(sizes)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(120)
        self.assertEqual(len(results), len(sizes))
        for i, (sent, got) in results.items():
            self.assertEqual(len(got), len(sent), "connection %d" % i)
            self.assertTrue(got == sent, "connection %d: bytes differ" % i)

    def s_client_echo(self, srv, data, *extra):
        """Send data through openssl s_client (extra: more of its options)
        and return what it printed back."""
        p = subprocess.Popen(
            ["timeout", "60", "openssl", "s_client", "-connect",
             "127.0.0.1:%d" % srv.port, "-quiet", "-no_ign_eof",
             "-nocommands", "-CAfile", self.path("ca.pem"),
             "-verify_return_error"] + list(extra),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            w = threading.Thread(target=p.stdin.write, args=(data,))
            w.start()
            got = bytearray()
            while len(got) < len(data):
                b = p.stdout.read1(65536)
                if not b:
                    break
                got += b
            w.join(30)
            p.stdin.close()
            p.wait(30)
        finally:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
            p.stdout.close()
        return bytes(got)

    def test_openssl_s_client_interop(self):
        srv = self.server()
        data = b"".join(b"line %05d of the s_client test\n" % i
                        for i in range(3000))
        self.assertEqual(self.s_client_echo(srv, data), data)

    def test_plain_and_tls_side_by_side(self):
        argv = self.argv("--listen", "127.0.0.1:0")
        srv = self.start(Server, argv, count=2)
        tls_port = int(srv.wait_line(TLS_LISTEN_RE)[0].group(2))
        plain = srv.wait_line(r"listening on 127\.0\.0\.1:(\d+) \(%s mode\)"
                              % MODE)
        plain_port = int(plain[0].group(1))
        self.assertNotEqual(tls_port, plain_port)
        with self.connect(srv, tls_port) as s:
            self.assertEqual(tls_roundtrip(s, b"over tls"), b"over tls")
        with socket.create_connection(("127.0.0.1", plain_port), 10) as s:
            s.sendall(b"in the clear")
            s.shutdown(socket.SHUT_WR)
            self.assertEqual(fltest.recv_all(s), b"in the clear")

    def test_bad_cert_or_key_is_a_start_error(self):
        cases = [
            (self.argv(cert="missing.pem"), "missing.pem",
             "No such file"),
            (self.argv(key="missing.key"), "missing.key", "No such file"),
            (self.argv(key="server2.key"), "server2.key", "mismatch"),
            # Files of the wrong kind are named as such.
            (self.argv(key="server.pem"), "server.pem",
             "no PEM private key in it"),
            (self.argv(cert="server.key"), "server.key",
             "no PEM certificate in it"),
            (self.argv(cert="."), "--tls-cert", "Is a directory"),
        ]
        for argv, name, reason in cases:
            status, out, err = self.run_echo(argv)
            self.assertEqual(status, 1, err)
            self.assertIn(name, err)
            self.assertIn(reason, err)
            self.assertNotIn("listening on", err)

    def test_tls_options_need_each_other(self):
        base = [fltest.binary("echo"), "--mode", MODE]
        cert = ["--tls-cert", self.path("server.pem"), "--tls-key",
                self.path("server.key")]
        bad = [
            base + ["--listen", "127.0.0.1:0"] + cert,
            base + ["--listen", "127.0.0.1:0", "--tls-handshake-timeout",
                    "1"],
            base + ["--listen", "tls://127.0.0.1:0"],
            base + ["--listen", "tls://127.0.0.1:0", "--tls-cert",
                    self.path("server.pem")],
            base + ["--listen", "tls://127.0.0.1:0", "--udp-only"] + cert,
            base + ["--listen", "tls://127.0.0.1:0", "--udp"] + cert,
            base + ["--listen", "tls://127.0.0.1:0",
                    "--tls-handshake-timeout", "0"] + cert,
            base + ["--listen", "tls://"] + cert,
            base + ["--listen", "127.0.0.1:0", "--tls-verify-client",
                    self.path("ca.pem")],
            base + ["--listen", "tls://127.0.0.1:0", "--tls-verify-client",
                    self.path("ca.pem")],
        ]
        for argv in bad:
            status, out, err = self.run_echo(argv)
            self.assertEqual(status, 2, "%r: %s" % (argv, err))
            self.assertIn("usage:", err)

    def test_plaintext_client_is_closed(self):
        srv = self.server("-v")
        with socket.create_connection(("127.0.0.1", srv.port), 10) as s:
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
            self.assertTrue(closed_soon(s, 10))
        srv.wait_line(r"event=refused peer=127\.0\.0\.1:\d+ (?:pid=\d+ )?"
                      r"reason=tls_handshake ")
        with self.connect(srv) as s:
            self.assertEqual(tls_roundtrip(s, b"still serving"),
                             b"still serving")

    def fill_unread(self, s, limit_s=5.0):
        """Write without reading until the server stops reading (its
        --max-pending), at most limit_s seconds; returns the bytes sent."""
        s.setblocking(False)
        sent, chunk, end = 0, b"m" * 16384, time.monotonic() + limit_s
        while time.monotonic() < end:
            if not select.select([], [s], [], 0.5)[1]:
                break
            try:
                sent += s.send(chunk)
            except ssl.SSLWantWriteError:
                pass
        return sent

    def test_end_of_input_with_echo_queued_gets_everything(self):
        """The client writes until the server stops reading, ends its input
        with a FIN (no close_notify: the server ignores that it is missing,
        tls.h), and only then reads: it gets every byte back and then the
        server's close."""
        srv = self.server("-v", "--max-pending", "256K")
        s = self.connect(srv)
        sent = self.fill_unread(s)
        self.assertGreater(sent, 256 * KIB)
        # The TCP socket's shutdown (SSLSocket.shutdown would also drop
        # the TLS session).
        socket.socket.shutdown(s, socket.SHUT_WR)
        got, eof, end = 0, False, time.monotonic() + 20
        while time.monotonic() < end and not eof:
            if not s.pending() and not select.select([s], [], [], 5)[0]:
                break
            try:
                d = s.recv(1 << 20)
                eof = not d
                got += len(d)
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLZeroReturnError:
                eof = True
        s.close()
        self.assertEqual((got, eof), (sent, True))

    def test_reset_client_with_echo_queued_is_closed(self):
        """A client that stops reading with echo queued, then resets, is
        closed at once and its slot freed, as on plain TCP."""
        srv = self.server("-v", "--max-pending", "256K")
        raw = socket.socket()
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        raw.connect(("127.0.0.1", srv.port))
        s = self.context().wrap_socket(raw, server_hostname="127.0.0.1")
        self.assertGreater(self.fill_unread(s, 2.0), 0)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                     struct.pack("ii", 1, 0))
        s.close()
        srv.wait_line(r"Connection reset by peer")
        # Fork mode counts the child out once it is reaped, just after.
        wait_until(lambda: self.stats(srv) == (0, 1), interval=0.1)
        self.assertEqual(self.stats(srv), (0, 1))

    def test_silent_client_closed_after_handshake_timeout(self):
        srv = self.server("-v", "--tls-handshake-timeout", "1")
        with socket.create_connection(("127.0.0.1", srv.port), 10) as s:
            t0 = time.monotonic()
            self.assertTrue(closed_soon(s, 10))
            took = time.monotonic() - t0
        self.assertGreater(took, 0.8)
        self.assertLess(took, 5)
        srv.wait_line(r"event=refused peer=127\.0\.0\.1:\d+ (?:pid=\d+ )?"
                      r"reason=tls_handshake_timeout ")

    def test_sighup_reloads_certificate(self):
        shutil.copy(self.path("server.pem"), self.path("cur.pem"))
        shutil.copy(self.path("server.key"), self.path("cur.key"))
        srv = self.server(cert="cur.pem", key="cur.key")
        old = self.connect(srv)
        self.assertEqual(old.getpeercert(binary_form=True),
                         der(self.path("server.pem")))
        self.assertEqual(tls_roundtrip(old, b"before"), b"before")

        shutil.copy(self.path("server2.pem"), self.path("cur.pem"))
        shutil.copy(self.path("server2.key"), self.path("cur.key"))
        srv.signal(signal.SIGHUP)
        srv.wait_line(r"SIGHUP: reloaded")
        self.assertEqual(tls_roundtrip(old, b"across"), b"across")
        with self.connect(srv) as s:
            self.assertEqual(s.getpeercert(binary_form=True),
                             der(self.path("server2.pem")))
            self.assertEqual(tls_roundtrip(s, b"new"), b"new")

        # A mismatched pair: logged, and b stays.
        shutil.copy(self.path("server.pem"), self.path("cur.pem"))
        srv.signal(signal.SIGHUP)
        srv.wait_line(r"cannot load --tls-key .*cur\.key: .*mismatch")
        srv.wait_line(r"SIGHUP: keeping the certificate")
        with self.connect(srv) as s:
            self.assertEqual(s.getpeercert(binary_form=True),
                             der(self.path("server2.pem")))
        self.assertEqual(tls_roundtrip(old, b"after"), b"after")
        old.close()
        self.assertIsNone(srv.p.poll())

    def test_sighup_without_tls_has_nothing_to_reload(self):
        argv = [fltest.binary("echo"), "--mode", MODE, "--listen",
                "127.0.0.1:0"]
        srv = self.start(Server, argv)
        srv.signal(signal.SIGHUP)
        srv.wait_line(r"SIGHUP: nothing to reload")

    def test_sigterm_drains_tls_connection(self):
        srv = self.server("--drain-timeout", "5")
        raw = socket.create_connection(("127.0.0.1", srv.port), timeout=30)
        # A FIN without close_notify then raises SSLEOFError.
        s = self.context().wrap_socket(raw, server_hostname="127.0.0.1",
                                       suppress_ragged_eofs=False)
        self.assertEqual(tls_roundtrip(s, b"x" * 50000), b"x" * 50000)
        silent = socket.create_connection(("127.0.0.1", srv.port), 10)
        srv.signal(signal.SIGTERM)
        self.assertEqual(srv.wait(15), 0, srv.stderr_text())
        s.settimeout(10)
        try:
            self.assertEqual(s.recv(100), b"")  # close_notify
        except (ssl.SSLEOFError, ConnectionResetError):
            self.fail("no close_notify before the close")
        s.close()
        silent.close()
        self.assertGroupGone(srv)

    # Mutual TLS (--tls-verify-client) and interop with other clients.

    def client_context(self, name=None):
        """A verifying context presenting name.pem/name.key, if name."""
        ctx = self.context()
        if name is not None:
            ctx.load_cert_chain(self.path(name + ".pem"),
                                self.path(name + ".key"))
        return ctx

    def mtls_server(self, *extra, ca="ca.pem"):
        return self.server("-v", "--tls-verify-client", self.path(ca),
                           *extra)

    def connect_as(self, srv, name, tls12=False):
        ctx = self.client_context(name)
        if tls12:
            ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        raw = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        return ctx.wrap_socket(raw, server_hostname="127.0.0.1",
                               do_handshake_on_connect=False)

    def test_client_cert_echoes_exactly(self):
        srv = self.mtls_server()
        data = ALL_BYTES + os.urandom(100 * KIB)
        with self.connect_as(srv, "client") as s:
            s.do_handshake()
            self.assertEqual(tls_roundtrip(s, data), data)
        with self.connect_as(srv, "client2", tls12=True) as s:
            s.do_handshake()
            self.assertEqual(tls_roundtrip(s, ALL_BYTES), ALL_BYTES)
        srv.wait_line(r"event=close ", count=2)
        self.assertNotIn("event=refused", srv.stderr_text())

    def assertRefused(self, srv, name, reason):
        """A client presenting name (None: no certificate) is refused in
        TLS 1.3 and in TLS 1.2, and the server logs reason for each."""
        for tls12 in (False, True):
            with self.connect_as(srv, name, tls12) as s:
                got = tls_refusal(s)
            self.assertIsInstance(got, OSError,
                                  "client cert %s, TLS 1.2 only %s: "
                                  "echoed %r" % (name, tls12, got))
            if tls12:  # the handshake itself failed
                self.assertIsInstance(got, ssl.SSLError, repr(got))
        srv.wait_line(r"reason=tls_handshake .*error=\"%s" % re.escape(reason),
                      count=2)

    def test_client_without_cert_is_refused(self):
        srv = self.mtls_server()
        self.assertRefused(srv, None, "peer did not return a certificate")
        with self.connect_as(srv, "client") as s:
            s.do_handshake()
            self.assertEqual(tls_roundtrip(s, b"alice"), b"alice")

    def test_rogue_client_cert_is_refused(self):
        srv = self.mtls_server()
        self.assertRefused(srv, "rogue-client",
                           "certificate verify failed: unable to get "
                           "local issuer certificate")
        with self.connect_as(srv, "client") as s:
            s.do_handshake()
            self.assertEqual(tls_roundtrip(s, b"alice"), b"alice")

    def test_sighup_reloads_client_ca(self):
        shutil.copy(self.path("ca.pem"), self.path("cur-ca.pem"))
        srv = self.mtls_server(ca="cur-ca.pem")
        with self.connect_as(srv, "client") as s:
            s.do_handshake()
            self.assertEqual(tls_roundtrip(s, b"alice"), b"alice")
        shutil.copy(self.path("rogue-ca.pem"), self.path("cur-ca.pem"))
        srv.signal(signal.SIGHUP)
        srv.wait_line(r"SIGHUP: reloaded")
        with self.connect_as(srv, "client") as s:
            self.assertIsInstance(tls_refusal(s), OSError)
        srv.wait_line(r"reason=tls_handshake .*error=\"certificate verify "
                      r"failed")
        # The server is still checked against ca.pem: only the CA that
        # vouches for clients changed.
        with self.connect_as(srv, "rogue-client") as s:
            s.do_handshake()
            self.assertEqual(tls_roundtrip(s, b"mallory"), b"mallory")

    def test_bad_verify_ca_is_a_start_error(self):
        cases = [("missing-ca.pem", "No such file"),
                 ("server.key", "no certificate")]
        for name, reason in cases:
            argv = self.argv("--tls-verify-client", self.path(name))
            status, out, err = self.run_echo(argv)
            self.assertEqual(status, 1, err)
            self.assertIn("cannot load --tls-verify-client %s: %s"
                          % (self.path(name), reason), err)
            self.assertNotIn("listening on", err)
        argv = [fltest.binary("echo"), "--mode", MODE, "--listen",
                "127.0.0.1:0", "--tls-verify-client", self.path("ca.pem")]
        status, out, err = self.run_echo(argv)
        self.assertEqual(status, 2, err)
        self.assertIn("need a tls:// --listen", err)

    def test_openssl_s_client_with_client_cert(self):
        srv = self.mtls_server()
        got = self.s_client_echo(srv, ALL_BYTES, "-cert",
                                 self.path("client.pem"), "-key",
                                 self.path("client.key"))
        self.assertEqual(got, ALL_BYTES)
        # Without one: nothing comes back, and the server says why.
        self.assertEqual(self.s_client_echo(srv, ALL_BYTES), b"")
        srv.wait_line(r"reason=tls_handshake .*error=\"peer did not return a "
                      r"certificate")

    def ncat_echo(self, srv, data, *args):
        """data through ncat --ssl (args: its options and the host); what
        it printed back."""
        p = subprocess.run(["ncat", "--ssl"] + list(args) +
                           [str(srv.port)], input=data, capture_output=True,
                           timeout=30, start_new_session=True)
        self.assertEqual(p.returncode, 0, p.stderr.decode())
        return p.stdout

    def test_ncat_interop(self):
        srv = self.server()
        self.assertEqual(self.ncat_echo(srv, ALL_BYTES, "127.0.0.1"),
                         ALL_BYTES)
        # ncat matches DNS names only: verify as localhost (over IPv4).
        self.assertEqual(self.ncat_echo(srv, ALL_BYTES, "-4", "--ssl-verify",
                                        "--ssl-trustfile",
                                        self.path("ca.pem"), "localhost"),
                         ALL_BYTES)

    def test_ncat_with_client_cert(self):
        srv = self.mtls_server()
        got = self.ncat_echo(srv, ALL_BYTES, "-4", "--ssl-verify",
                             "--ssl-trustfile", self.path("ca.pem"),
                             "--ssl-cert", self.path("client.pem"),
                             "--ssl-key", self.path("client.key"),
                             "localhost")
        self.assertEqual(got, ALL_BYTES)

    def stats(self, srv):
        """SIGUSR1; (open, accepted) from the stats line it logs."""
        with srv.cond:
            n = sum(1 for l in srv.lines
                    if l is not None and re.search(STATS_RE, l))
        srv.signal(signal.SIGUSR1)
        m = srv.wait_line(STATS_RE, count=n + 1)[-1]
        return int(m.group(1)), int(m.group(2))

    def test_500_concurrent_connections(self):
        n = 500
        srv = self.server()
        many = ManyTls(self.context(), srv.port, n)
        try:
            many.handshake_all()
            self.assertEqual(self.stats(srv), (n, n))
            payloads = [b"%03d|" % i + os.urandom(1000 + 7 * i) +
                        b"|%03d" % i for i in range(n)]
            got = many.echo_all(payloads)
            for i in range(n):
                self.assertTrue(got[i] == payloads[i],
                                "connection %d: %d bytes of %d back, or "
                                "different" % (i, len(got[i]),
                                               len(payloads[i])))
            self.assertEqual(self.stats(srv)[0], n)
        finally:
            many.close()
        wait_until(lambda: self.stats(srv)[0] == 0, 15, 0.2)
        self.assertEqual(self.stats(srv), (0, n))
        if MODE == "fork":
            wait_until(lambda: not fltest.children(srv.pid), 15)
            self.assertEqual(fltest.children(srv.pid), [])
        with self.connect(srv) as s:
            self.assertEqual(tls_roundtrip(s, b"still serving"),
                             b"still serving")


if __name__ == "__main__":
    fltest.main()
