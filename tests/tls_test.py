"""Integration tests for forkloop-echo's tls:// listeners: the real binary on
loopback, spoken to with Python's ssl module and openssl s_client.

Each test method is one scenario; meson runs it once per mode (FORKLOOP_MODE,
and FORKLOOP_THREADS for event mode with several loops). Certificates are
made at test time with the openssl command in a temporary directory: a CA, a
server pair for 127.0.0.1 and localhost, and a second pair for the reload
test. No key is ever committed.
"""

import os
import select
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fltest  # noqa: E402
from fltest import Proc, Server, wait_until  # noqa: E402

MODE = fltest.mode()
THREADS = os.environ.get("FORKLOOP_THREADS")
KIB = 1024
TLS_LISTEN_RE = r"listening on (\S+):(\d+) \(tls, %s mode\)" % MODE


def openssl(*args):
    subprocess.run(["openssl"] + list(args), check=True, timeout=60,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def make_certs(d):
    """ca.pem, and a.pem/a.key and b.pem/b.key signed by it for 127.0.0.1."""
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", "/CN=forkloop test CA", "-keyout",
            os.path.join(d, "ca.key"), "-out", os.path.join(d, "ca.pem"))
    ext = os.path.join(d, "ext")
    with open(ext, "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for n in ("a", "b"):
        p = os.path.join(d, n)
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj",
                "/CN=forkloop server " + n, "-keyout", p + ".key",
                "-out", p + ".csr")
        openssl("x509", "-req", "-in", p + ".csr", "-CA",
                os.path.join(d, "ca.pem"), "-CAkey",
                os.path.join(d, "ca.key"), "-CAcreateserial", "-days", "2",
                "-extfile", ext, "-out", p + ".pem")


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


class TlsTest(fltest.ProcTestCase):

    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="forkloop-tls-")
        make_certs(cls.dir)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.dir, ignore_errors=True)

    def path(self, name):
        return os.path.join(self.dir, name)

    def argv(self, *extra, cert="a.pem", key="a.key"):
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

    def test_openssl_s_client_interop(self):
        srv = self.server()
        data = b"".join(b"line %05d of the s_client test\n" % i
                        for i in range(3000))
        p = subprocess.Popen(
            ["timeout", "60", "openssl", "s_client", "-connect",
             "127.0.0.1:%d" % srv.port, "-quiet", "-no_ign_eof",
             "-nocommands", "-CAfile", self.path("ca.pem"),
             "-verify_return_error"],
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
        self.assertEqual(bytes(got), data)

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
            (self.argv(key="b.key"), "b.key", "mismatch"),
        ]
        for argv, name, reason in cases:
            status, out, err = self.run_echo(argv)
            self.assertEqual(status, 1, err)
            self.assertIn(name, err)
            self.assertIn(reason, err)
            self.assertNotIn("listening on", err)

    def test_tls_options_need_each_other(self):
        base = [fltest.binary("echo"), "--mode", MODE]
        cert = ["--tls-cert", self.path("a.pem"), "--tls-key",
                self.path("a.key")]
        bad = [
            base + ["--listen", "127.0.0.1:0"] + cert,
            base + ["--listen", "127.0.0.1:0", "--tls-handshake-timeout",
                    "1"],
            base + ["--listen", "tls://127.0.0.1:0"],
            base + ["--listen", "tls://127.0.0.1:0", "--tls-cert",
                    self.path("a.pem")],
            base + ["--listen", "tls://127.0.0.1:0", "--udp-only"] + cert,
            base + ["--listen", "tls://127.0.0.1:0", "--udp"] + cert,
            base + ["--listen", "tls://127.0.0.1:0",
                    "--tls-handshake-timeout", "0"] + cert,
            base + ["--listen", "tls://"] + cert,
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
        srv.wait_line(r"tls handshake failed")
        with self.connect(srv) as s:
            self.assertEqual(tls_roundtrip(s, b"still serving"),
                             b"still serving")

    def test_silent_client_closed_after_handshake_timeout(self):
        srv = self.server("-v", "--tls-handshake-timeout", "1")
        with socket.create_connection(("127.0.0.1", srv.port), 10) as s:
            t0 = time.monotonic()
            self.assertTrue(closed_soon(s, 10))
            took = time.monotonic() - t0
        self.assertGreater(took, 0.8)
        self.assertLess(took, 5)
        srv.wait_line(r"tls handshake timeout")

    def test_sighup_reloads_certificate(self):
        shutil.copy(self.path("a.pem"), self.path("cur.pem"))
        shutil.copy(self.path("a.key"), self.path("cur.key"))
        srv = self.server(cert="cur.pem", key="cur.key")
        old = self.connect(srv)
        self.assertEqual(old.getpeercert(binary_form=True),
                         der(self.path("a.pem")))
        self.assertEqual(tls_roundtrip(old, b"before"), b"before")

        shutil.copy(self.path("b.pem"), self.path("cur.pem"))
        shutil.copy(self.path("b.key"), self.path("cur.key"))
        srv.signal(signal.SIGHUP)
        srv.wait_line(r"SIGHUP: reloaded")
        self.assertEqual(tls_roundtrip(old, b"across"), b"across")
        with self.connect(srv) as s:
            self.assertEqual(s.getpeercert(binary_form=True),
                             der(self.path("b.pem")))
            self.assertEqual(tls_roundtrip(s, b"new"), b"new")

        # A mismatched pair: logged, and b stays.
        shutil.copy(self.path("a.pem"), self.path("cur.pem"))
        srv.signal(signal.SIGHUP)
        srv.wait_line(r"cannot load --tls-key .*cur\.key: .*mismatch")
        srv.wait_line(r"SIGHUP: keeping the certificate")
        with self.connect(srv) as s:
            self.assertEqual(s.getpeercert(binary_form=True),
                             der(self.path("b.pem")))
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


if __name__ == "__main__":
    fltest.main()
