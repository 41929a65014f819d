"""Integration tests for forkloop-chat's TLS endpoint (--tls, tls://): the
real binary on loopback, against itself, openssl s_server and Python's ssl
module.

Each test method is one scenario; meson runs it once per mode
(FORKLOOP_MODE). Certificates are made at test time in a temporary
directory (tlscerts.py); no key is ever committed. Every program runs in its
own process group, killed by group at the end.
"""

import os
import random
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
import tlscerts  # noqa: E402
from fltest import Proc, Server, wait_until  # noqa: E402

MODE = fltest.mode()
KIB = 1024
TRUNCATED = r"^forkloop-chat: peer closed without close_notify: " \
            r"the stream may be truncated$"
VERIFY = r"^forkloop-chat: cannot connect to \S+: certificate verify " \
         r"failed: %s$"
CONNECTED = r"^forkloop-chat: connected to 127\.0\.0\.1:\d+ \(TLSv1\.3\)$"


def payload(n, seed):
    """n bytes: every byte value first, then reproducible random ones."""
    head = bytes(range(256)) * 4
    return (head + random.Random(seed).randbytes(n))[:n]


def write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class ChatTlsTest(fltest.ProcTestCase):

    @classmethod
    def setUpClass(cls):
        cls.certdir = tempfile.TemporaryDirectory()
        tlscerts.make(cls.certdir.name)

    @classmethod
    def tearDownClass(cls):
        cls.certdir.cleanup()

    def setUp(self):
        super().setUp()
        self.tmp = tempfile.TemporaryDirectory()
        self.addCleanup(self.tmp.cleanup)
        self.hold = None

    # --- helpers ---

    def cert(self, name):
        return tlscerts.path(self.certdir.name, name)

    def path(self, name):
        return os.path.join(self.tmp.name, name)

    def file_with(self, name, data):
        with open(self.path(name), "wb") as f:
            f.write(data)
        return self.path(name)

    def chat(self, *args):
        return [fltest.binary("chat"), "--mode", MODE] + list(args)

    def listener(self, *extra, cert="server", addr="tls://127.0.0.1:0",
                 stdin=None, stdout=subprocess.DEVNULL):
        """A TLS listener presenting cert; .port is what it printed. Its
        stdin, unless given, is a pipe that stays open until self.hold
        is closed: a connecting endpoint stops reading its own stdin once
        the listener has finished sending."""
        if stdin is None:
            stdin, self.hold = os.pipe()
            self.addCleanup(self.close_hold)
            try:
                return self.listener(*extra, cert=cert, addr=addr,
                                     stdin=stdin, stdout=stdout)
            finally:
                os.close(stdin)
        return self.start(Server, self.chat(
            "-l", addr, "--tls-cert", self.cert(cert + ".pem"),
            "--tls-key", self.cert(cert + ".key"), *extra),
            stdin=stdin, stdout=stdout)

    def client(self, port, *extra, host="127.0.0.1",
               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL):
        return self.start(Proc, self.chat("--tls", *extra, host, str(port)),
                          stdin=stdin, stdout=stdout)

    def assertExits(self, p, code, timeout=20):
        try:
            rc = p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.fail("still running; stderr:\n" + p.stderr_text())
        p.t.join(5)
        self.assertEqual(rc, code, "exit status; stderr:\n" + p.stderr_text())
        self.assertGroupGone(p)

    def assertLine(self, p, regex):
        self.assertRegex(p.stderr_text(), "(?m)" + regex)

    def exchange(self, size=384 * KIB, host="127.0.0.1",
                 addr="tls://127.0.0.1:0"):
        """Listener and client, each with size bytes on stdin: each prints
        exactly what the other read, both exit 0. A connecting endpoint
        stops reading stdin at the listener's close_notify, so the
        listener's stdin (a pipe) ends only once it has printed all."""
        a, b = payload(size, 1), payload(size + 17, 2)
        r, w = os.pipe()
        with open(self.file_with("b", b), "rb") as ib, \
                open(self.path("out-l"), "wb") as ol, \
                open(self.path("out-c"), "wb") as oc:
            lis = self.listener(addr=addr, stdin=r, stdout=ol)
            os.close(r)
            cli = self.client(lis.port, "--tls-ca", self.cert("ca.pem"),
                              host=host, stdin=ib, stdout=oc)
            t = threading.Thread(target=write_all, args=(w, a), daemon=True)
            t.start()
            t.join(30)
            self.assertTrue(wait_until(
                lambda: os.path.getsize(self.path("out-l")) >= len(b), 30))
            os.close(w)
            self.assertExits(cli, 0)
            self.assertExits(lis, 0)
        with open(self.path("out-l"), "rb") as f:
            self.assertEqual(f.read(), b)
        with open(self.path("out-c"), "rb") as f:
            self.assertEqual(f.read(), a)
        return lis, cli

    def python_server(self, serve):
        """A Python TLS server for server.pem on 127.0.0.1 running
        serve(ssl socket) for one client in a thread; returns its port."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.cert("server.pem"), self.cert("server.key"))
        ls = socket.socket()
        ls.bind(("127.0.0.1", 0))
        ls.listen(1)
        ls.settimeout(10)
        self.addCleanup(ls.close)

        def run():
            try:
                c, _ = ls.accept()
                c.settimeout(10)
                serve(ctx.wrap_socket(c, server_side=True))
            except OSError:
                pass
        t = threading.Thread(target=run, daemon=True)
        t.start()
        self.addCleanup(t.join, 10)
        return ls.getsockname()[1]

    # --- scenarios ---

    def test_chat_to_chat_every_byte_both_ways(self):
        lis, cli = self.exchange()
        self.assertLine(lis, r"^forkloop-chat: listening on "
                             r"127\.0\.0\.1:\d+ \(tls\)$")
        self.assertLine(lis, CONNECTED)
        self.assertLine(cli, CONNECTED)

    def test_ipv6_literal_verifies(self):
        self.exchange(size=8 * KIB, host="::1", addr="tls://[::1]:0")

    def test_openssl_s_server_interop(self):
        for attempt in range(5):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
            s.close()
            srv = subprocess.Popen(
                ["timeout", "30", "openssl", "s_server", "-accept",
                 "127.0.0.1:%d" % port, "-naccept", "1",
                 "-cert", self.cert("server.pem"),
                 "-key", self.cert("server.key")],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL, start_new_session=True)
            self.addCleanup(srv.stdout.close)
            self.addCleanup(srv.stdin.close)
            self.addCleanup(srv.wait, 10)
            self.addCleanup(self.killpg, srv.pid)
            # It says ACCEPT once it listens, or exits on a taken port.
            lines = [srv.stdout.readline() for _ in range(2)]
            if b"ACCEPT\n" in lines:
                break
            srv.stdin.close()
            srv.wait(30)
        else:
            self.fail("openssl s_server did not start")
        srv.stdin.write(b"from s_server\n")
        srv.stdin.flush()
        r, w = os.pipe()
        ro = os.pipe()
        cli = self.client(port, "--tls-ca", self.cert("ca.pem"),
                          stdin=r, stdout=ro[1])
        os.close(r)
        os.close(ro[1])
        os.write(w, b"from forkloop-chat\n")
        got = b""
        deadline = time.monotonic() + 10
        while len(got) < 14 and time.monotonic() < deadline:
            b = os.read(ro[0], 100)
            if not b:
                break
            got += b
        self.assertEqual(got, b"from s_server\n")
        os.close(w)
        self.assertExits(cli, 0)
        self.assertEqual(os.read(ro[0], 100), b"")
        os.close(ro[0])
        out = srv.stdout.read()
        srv.stdin.close()
        self.assertIn(b"from forkloop-chat\n", out)

    def close_hold(self):
        if self.hold is not None:
            os.close(self.hold)
            self.hold = None

    def killpg(self, pid):
        try:
            os.killpg(pid, 9)
        except ProcessLookupError:
            pass

    def verify_fails(self, cert, reason, host="127.0.0.1"):
        lis = self.listener(cert=cert)
        cli = self.client(lis.port, "--tls-ca", self.cert("ca.pem"),
                          host=host)
        self.assertExits(cli, 1)
        self.assertLine(cli, VERIFY % reason)
        self.assertExits(lis, 1)
        self.assertLine(lis, r"^forkloop-chat: 127\.0\.0\.1:\d+: tls handshake failed: ")
        # Connected means the handshake is done, on either side.
        self.assertNotIn("connected to", cli.stderr_text())
        self.assertNotIn("connected to", lis.stderr_text())

    def test_unknown_ca_refused(self):
        self.verify_fails("rogue", "unable to get local issuer certificate")

    def test_expired_refused(self):
        self.verify_fails("expired", "certificate has expired")

    def test_wrong_name_refused(self):
        self.verify_fails("other", "hostname mismatch", host="localhost")
        self.verify_fails("other", "IP address mismatch")

    def test_insecure_skips_verification(self):
        with open(self.path("out"), "wb") as out:
            lis = self.listener(cert="rogue", stdout=out)
            with open(self.file_with("in", b"hello\n"), "rb") as i:
                cli = self.client(lis.port, "--tls-insecure", stdin=i)
            self.assertTrue(wait_until(
                lambda: os.path.getsize(self.path("out")) == 6, 10))
            self.close_hold()
            self.assertExits(cli, 0)
            self.assertExits(lis, 0)
        self.assertEqual(cli.stderr_text().count("--tls-insecure"), 1)
        self.assertLine(cli, r"^forkloop-chat: --tls-insecure: not "
                             r"verifying the server's certificate$")
        with open(self.path("out"), "rb") as f:
            self.assertEqual(f.read(), b"hello\n")

    def test_mutual_tls(self):
        with open(self.path("out"), "wb") as out:
            lis = self.listener("-k", "--tls-verify-client",
                                self.cert("ca.pem"), stdout=out)
            anon = self.client(lis.port, "--tls-ca", self.cert("ca.pem"))
            self.assertExits(anon, 1)
            lis.wait_line(r"^forkloop-chat: 127\.0\.0\.1:\d+: tls handshake failed: peer did "
                          r"not return a certificate$")
            with open(self.file_with("in", b"alice here\n"), "rb") as i:
                alice = self.client(
                    lis.port, "--tls-ca", self.cert("ca.pem"),
                    "--tls-cert", self.cert("client.pem"),
                    "--tls-key", self.cert("client.key"), stdin=i)
            self.assertTrue(wait_until(
                lambda: os.path.getsize(self.path("out")) == 11, 10))
            self.close_hold()
            self.assertExits(alice, 0)
        with open(self.path("out"), "rb") as f:
            self.assertEqual(f.read(), b"alice here\n")
        # The refused peer was never connected; alice was, once.
        self.assertEqual(len(lis.wait_line(CONNECTED)), 1)

    def test_plaintext_client_then_tls_peer(self):
        with open(self.path("out"), "wb") as out:
            lis = self.listener("-k", stdout=out)
            s = socket.create_connection(("127.0.0.1", lis.port), 10)
            s.sendall(b"hello in the clear\n")
            lis.wait_line(r"^forkloop-chat: 127\.0\.0\.1:\d+: tls handshake failed: ")
            s.settimeout(10)
            try:  # an alert, then EOF; or a reset for what it left unread
                while s.recv(100):
                    pass
            except ConnectionResetError:
                pass
            s.close()
            with open(self.file_with("in", b"over tls\n"), "rb") as i:
                cli = self.client(lis.port, "--tls-ca", self.cert("ca.pem"),
                                  stdin=i)
            self.assertTrue(wait_until(
                lambda: os.path.getsize(self.path("out")) == 9, 10))
            self.close_hold()
            self.assertExits(cli, 0)
        self.assertIsNone(lis.p.poll())
        with open(self.path("out"), "rb") as f:
            self.assertEqual(f.read(), b"over tls\n")

    def test_stalled_handshake_times_out(self):
        lis = self.listener("--tls-handshake-timeout", "0.5")
        s = socket.create_connection(("127.0.0.1", lis.port), 10)
        self.addCleanup(s.close)
        t0 = time.monotonic()
        s.settimeout(10)
        self.assertEqual(s.recv(100), b"")
        took = time.monotonic() - t0
        self.assertGreater(took, 0.4)
        self.assertLess(took, 5)
        self.assertExits(lis, 1)
        self.assertLine(lis, r"^forkloop-chat: 127\.0\.0\.1:\d+: tls handshake timeout: not "
                             r"done in 0\.5 s$")
        self.assertNotIn("connected to", lis.stderr_text())

    def test_truncation_reported(self):
        def serve(c):
            c.sendall(b"a line\n")
            time.sleep(0.2)
            os.close(c.detach())  # no close_notify
        port = self.python_server(serve)
        r, w = os.pipe()
        self.addCleanup(os.close, w)
        with open(self.path("out"), "wb") as out:
            cli = self.client(port, "--tls-ca", self.cert("ca.pem"),
                              stdin=r, stdout=out)
            os.close(r)
            self.assertExits(cli, 1)
        self.assertLine(cli, TRUNCATED)
        with open(self.path("out"), "rb") as f:
            self.assertEqual(f.read(), b"a line\n")

    def refused_once(self, *cert, alert):
        """A client that forkloop-echo --tls-verify-client refuses after
        TLS 1.3's handshake, stdin still open with a line for it: exit 1
        within seconds, the reason said once."""
        r, w = os.pipe()
        self.addCleanup(os.close, w)
        os.write(w, b"refused\n")
        cli = self.client(self.echo_port, "--tls-ca", self.cert("ca.pem"),
                          *cert, stdin=r)
        os.close(r)
        self.assertExits(cli, 1, timeout=5)
        err = cli.stderr_text()
        self.assertLess(len(err.splitlines()), 10, err[:2000])
        self.assertNotIn("peer finished sending", err)
        if alert is not None:
            self.assertEqual(err.count(alert), 1, err)

    def test_refused_after_handshake_exits_once(self):
        echo = self.start(Server, [
            fltest.binary("echo"), "--mode", MODE, "-l", "tls://127.0.0.1:0",
            "--tls-cert", self.cert("server.pem"),
            "--tls-key", self.cert("server.key"),
            "--tls-verify-client", self.cert("ca.pem")])
        self.echo_port = echo.port
        self.refused_once(alert="connection to the peer: tlsv13 alert "
                                "certificate required")
        # The alert may come after a reset for the line sent: either way,
        # once.
        self.refused_once("--tls-cert", self.cert("rogue-client.pem"),
                          "--tls-key", self.cert("rogue-client.key"),
                          alert=None)

    def test_signal_sends_close_notify(self):
        """SIGINT on the client, SIGTERM on the listener: it dies of the
        signal after close_notify, and the other side ends as after a
        plain FIN (chat_test's sigint_kills_with_sigint_peer_sees_fin):
        no truncation, exit 0 with nothing owed."""
        for sig, victim in ((signal.SIGINT, "client"),
                            (signal.SIGTERM, "listener")):
            with open(self.path("out"), "wb") as out:
                lis = self.listener(stdout=out)
                r, w = os.pipe()
                cli = self.client(lis.port, "--tls-ca", self.cert("ca.pem"),
                                  stdin=r)
                os.close(r)
                os.write(w, b"hi\n")
                self.assertTrue(wait_until(
                    lambda: os.path.getsize(self.path("out")) == 3, 10))
                if MODE == "event":  # the session's mask: nothing blocked
                    with open("/proc/%d/status" % cli.pid) as f:
                        blk = [int(l.split()[1], 16) for l in f
                               if l.startswith("SigBlk:")][0]
                    self.assertEqual(blk & (1 << (signal.SIGINT - 1) |
                                            1 << (signal.SIGTERM - 1)), 0)
                p, other = (cli, lis) if victim == "client" else (lis, cli)
                p.signal(sig)
                self.assertExits(p, -sig)
                other.wait_line(r"^forkloop-chat: peer finished sending$")
                self.close_hold()
                self.assertExits(other, 0)
                os.close(w)
                self.assertNotIn("close_notify", other.stderr_text())


if __name__ == "__main__":
    fltest.main()
