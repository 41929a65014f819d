"""forkloop-bench --tls: against forkloop-echo's tls:// listener, and
against small Python ssl servers that verify a client certificate, cut a
stream short without close_notify, or note whether the client sent one.

Certificates are made at test time (tlscerts.py) in a temporary directory,
once for the whole file; no key is committed. Each scenario is one meson
test; the threads_ ones run in the 'threads' suite too (TSan).
"""

import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fltest  # noqa: E402
import tlscerts  # noqa: E402

VERIFY_FAILED = ("certificate verify failed: unable to get local issuer "
                 "certificate")


class PyTlsServer:
    """A TLS server on 127.0.0.1, one thread per connection.

    how: "echo" echoes everything; "truncate" echoes the first message of
    size bytes whole, then half of the second, and closes the TCP
    connection without a close_notify. ctx is the server's SSLContext
    (CERT_REQUIRED for the client-certificate test). Notes, per connection,
    the client certificate's CN and how the client ended: "close_notify"
    (a clean TLS EOF), "eof" (TCP EOF without one) or the error."""

    def __init__(self, ctx, how="echo", size=64):
        self.ctx, self.how, self.size = ctx, how, size
        self.lsock = socket.socket()
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(128)
        self.port = self.lsock.getsockname()[1]
        self.lock = threading.Lock()
        self.ends, self.peers, self.threads = [], [], []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.accept, daemon=True)
        self.thread.start()

    def accept(self):
        self.lsock.settimeout(0.05)
        while not self.done.is_set():
            try:
                c, _ = self.lsock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            t = threading.Thread(target=self.serve, args=(c,), daemon=True)
            t.start()
            self.threads.append(t)

    def note(self, end, peer=None):
        with self.lock:
            self.ends.append(end)
            if peer is not None:
                self.peers.append(peer)

    def serve(self, raw):
        raw.settimeout(10)
        try:
            s = self.ctx.wrap_socket(raw, server_side=True,
                                     suppress_ragged_eofs=False)
        except (ssl.SSLError, OSError) as e:
            self.note("handshake: %s" % e)
            raw.close()
            return
        cert = s.getpeercert()
        cn = None
        if cert:
            cn = dict(x[0] for x in cert["subject"]).get("commonName")
        seen = 0
        try:
            while True:
                data = s.recv(65536)
                if not data:
                    self.note("close_notify", cn)
                    break
                if self.how == "truncate" and seen + len(data) > self.size:
                    k = self.size + (self.size // 2) - seen
                    s.sendall(data[:max(k, 0)])
                    # TCP FIN, no close_notify: what a truncation looks like
                    s.shutdown(socket.SHUT_RDWR)
                    self.note("truncated", cn)
                    break
                seen += len(data)
                s.sendall(data)
        except ssl.SSLEOFError:
            self.note("eof", cn)
        except (ssl.SSLError, OSError) as e:
            self.note("error: %s" % e, cn)
        finally:
            s.close()

    def stop(self):
        self.done.set()
        self.thread.join(timeout=5)
        self.lsock.close()
        for t in self.threads:
            t.join(timeout=5)


class BenchTlsTest(fltest.ProcTestCase):

    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="forkloop-bench-tls-")
        tlscerts.make(cls.dir)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.dir, ignore_errors=True)

    def setUp(self):
        super().setUp()
        self.servers = []

    def tearDown(self):
        for s in self.servers:
            s.stop()
        super().tearDown()

    def path(self, name):
        return tlscerts.path(self.dir, name)

    def echo(self, mode="event", cert="server", *extra):
        return self.start(fltest.Server, [
            fltest.binary("echo"), "--mode", mode, "--listen",
            "tls://127.0.0.1:0", "--tls-cert", self.path(cert + ".pem"),
            "--tls-key", self.path(cert + ".key")] + list(extra))

    def pyserver(self, how="echo", client_ca=None, size=64):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.path("server.pem"), self.path("server.key"))
        if client_ca:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(client_ca)
        srv = PyTlsServer(ctx, how, size)
        self.servers.append(srv)
        return srv

    def bench(self, *args):
        argv = [fltest.binary("bench")] + [str(a) for a in args]
        return subprocess.run(argv, capture_output=True, timeout=60,
                              start_new_session=True)

    def bench_json(self, *args, status=0):
        p = self.bench("--json", *args)
        self.assertEqual(p.returncode, status, p.stderr.decode())
        lines = p.stdout.decode().splitlines()
        self.assertEqual(len(lines), 1, p.stdout)
        return json.loads(lines[0]), p.stderr.decode()

    def assertHandshakes(self, t, n):
        self.assertEqual(t["handshakes"], n, t)
        lat = t["handshake_latency_us"]
        self.assertEqual(lat["count"], n, t)
        self.assertGreater(lat["p50"], 0, t)
        self.assertLessEqual(lat["p50"], lat["p99"])
        self.assertLessEqual(lat["p99"], lat["max"])

    def test_byte_exact_against_forkloop_echo(self):
        # Both designs, both ways of asking for TLS: every echo intact,
        # the handshakes counted apart from the messages, nothing verified.
        for mode, target in (("event", "--tls"), ("fork", "tls://")):
            srv = self.echo(mode)
            addr = "127.0.0.1:%d" % srv.port
            args = ["--tls", addr] if target == "--tls" else [target + addr]
            j, err = self.bench_json("-c", 4, "-s", 5000, "-n", 2000, *args)
            self.assertEqual((j["errors"], j["messages"], j["bytes"]),
                             (0, 2000, 2000 * 5000), j)
            self.assertEqual(j["target"], "tls://" + addr)
            t = j["tls"]
            self.assertIs(t["verify"], False)
            self.assertIn(t["version"], ("TLSv1.2", "TLSv1.3"))
            self.assertTrue(t["cipher"])
            self.assertEqual((t["resumed"], t["error"]), (0, None), t)
            self.assertHandshakes(t, 4)
            # message latency is its own histogram
            self.assertEqual(j["latency_us"]["count"], 2000)
            self.assertEqual(err, "")
            srv.kill_group()
        # Without TLS the field is there, and null.
        srv = self.echo("event")
        p = self.bench("--json", "-c", 1, "-n", 1, "127.0.0.1:%d" % srv.port)
        self.assertEqual(p.returncode, 1)  # a TLS listener, a plain client
        j = json.loads(p.stdout)
        self.assertIsNone(j["tls"])

    def test_verify_against_the_ca_and_a_rogue(self):
        srv = self.echo("event")
        for host in ("127.0.0.1", "localhost"):
            j, _ = self.bench_json("--tls", "--tls-verify", "--tls-ca",
                                   self.path("ca.pem"), "-c", 2, "-n", 200,
                                   "tls://%s:%d" % (host, srv.port))
            self.assertEqual(j["errors"], 0, j)
            self.assertIs(j["tls"]["verify"], True)
            self.assertEqual(j["tls"]["ca"], self.path("ca.pem"))
            self.assertHandshakes(j["tls"], 2)
        rogue = self.echo("event", cert="rogue")
        target = "tls://127.0.0.1:%d" % rogue.port
        verify = ["--tls-verify", "--tls-ca", self.path("ca.pem")]
        j, _ = self.bench_json(*verify, "-c", 3, "-n", 30, target, status=1)
        self.assertEqual(j["errors"], 3, j)
        self.assertEqual(j["error_kinds"]["handshake"], 3, j)
        self.assertEqual((j["messages"], j["tls"]["handshakes"]), (0, 0), j)
        self.assertEqual(j["tls"]["error"], VERIFY_FAILED)
        # The text report shows the reason once.
        p = self.bench(*verify, "-c", 3, "-n", 30, target)
        self.assertEqual(p.returncode, 1)
        out = p.stdout.decode()
        self.assertEqual(out.count(VERIFY_FAILED), 1, out)
        self.assertRegex(out, r"(?m)^tls_error +%s$" % re.escape(VERIFY_FAILED))
        self.assertIn("handshake 3", out)
        self.assertRegex(out, r"(?m)^tls +no handshake completed, "
                              r"server verified against --tls-ca$")
        # Unverified, the rogue is served like any other.
        j, _ = self.bench_json("--tls", "-c", 1, "-n", 10, target)
        self.assertEqual(j["errors"], 0)

    def test_verify_ignores_the_subject_common_name(self):
        """A certificate with CN=localhost but only IP:127.0.0.1 among its
        subjectAltNames verifies for 127.0.0.1, not for localhost: names
        come from subjectAltName only (RFC 9525 section 6.3)."""
        srv = self.echo("event", "cn-localhost")
        verify = ["--tls-verify", "--tls-ca", self.path("ca.pem")]
        j, _ = self.bench_json(*verify, "-c", 1, "-n", 10,
                               "tls://127.0.0.1:%d" % srv.port)
        self.assertEqual(j["errors"], 0, j)
        j, _ = self.bench_json(*verify, "-c", 1, "-n", 10,
                               "tls://localhost:%d" % srv.port, status=1)
        self.assertEqual(j["error_kinds"]["handshake"], 1, j)
        self.assertEqual(j["tls"]["error"],
                         "certificate verify failed: hostname mismatch")

    def test_churn_full_and_resumed_handshakes(self):
        srv = self.echo("event")
        target = "tls://127.0.0.1:%d" % srv.port
        j, _ = self.bench_json("--churn", "-c", 2, "-n", 150, target)
        t = j["tls"]
        self.assertEqual((j["errors"], j["messages"]), (0, 150), j)
        self.assertGreaterEqual(t["handshakes"], 150)
        self.assertEqual(t["resumed"], 0, t)
        self.assertIs(t["resume"], False)
        j, _ = self.bench_json("--churn", "--tls-resume", "-c", 2, "-n", 150,
                               target)
        t = j["tls"]
        self.assertEqual((j["errors"], j["messages"]), (0, 150), j)
        self.assertIs(t["resume"], True)
        # all but the first few (before a session had come back)
        self.assertGreaterEqual(t["resumed"], t["handshakes"] - 4, t)
        self.assertGreater(t["resumed"], 0.9 * t["handshakes"], t)

    def test_truncated_stream_is_an_error(self):
        srv = self.pyserver("truncate", size=64)
        j, _ = self.bench_json("--tls", "-c", 1, "-s", 64, "-n", 10,
                               "127.0.0.1:%d" % srv.port, status=1)
        self.assertEqual(j["messages"], 1, j)
        self.assertEqual(j["errors"], 1, j)
        self.assertEqual(j["error_kinds"]["truncated"], 1, j)
        self.assertIn("close_notify", j["tls"]["error"])

    def test_silent_server_is_a_handshake_timeout(self):
        # Accepts and never answers the ClientHello: --connect-timeout
        # covers the handshake, and each connection is a handshake error.
        lsock = socket.socket()
        self.addCleanup(lsock.close)
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(16)
        j, _ = self.bench_json("--tls", "-c", 2, "-n", 10,
                               "--connect-timeout", "0.3",
                               "127.0.0.1:%d" % lsock.getsockname()[1],
                               status=1)
        self.assertEqual((j["errors"], j["error_kinds"]["handshake"]),
                         (2, 2), j)
        self.assertIn("--connect-timeout", j["tls"]["error"])
        self.assertEqual(j["tls"]["handshakes"], 0)

    def test_close_notify_ends_every_connection(self):
        srv = self.pyserver("echo")
        j, _ = self.bench_json("--tls", "-c", 3, "-n", 30,
                               "127.0.0.1:%d" % srv.port)
        self.assertEqual(j["errors"], 0, j)
        self.assertTrue(fltest.wait_until(lambda: len(srv.ends) == 3), srv.ends)
        self.assertEqual(srv.ends, ["close_notify"] * 3)
        j, _ = self.bench_json("--tls", "--churn", "-c", 2, "-n", 20,
                               "127.0.0.1:%d" % srv.port)
        self.assertTrue(fltest.wait_until(lambda: len(srv.ends) >= 23),
                        srv.ends)
        self.assertEqual(set(srv.ends), {"close_notify"}, srv.ends)

    def test_client_certificate(self):
        srv = self.pyserver("echo", client_ca=self.path("ca.pem"))
        target = "tls://127.0.0.1:%d" % srv.port
        j, _ = self.bench_json("--tls-cert", self.path("client.pem"),
                               "--tls-key", self.path("client.key"),
                               "-c", 2, "-n", 100, target)
        self.assertEqual(j["errors"], 0, j)
        self.assertIs(j["tls"]["client_cert"], True)
        self.assertTrue(fltest.wait_until(lambda: len(srv.peers) == 2))
        self.assertEqual(srv.peers, ["alice", "alice"])
        # Without one the server refuses every connection: TLS 1.3 says so
        # with an alert after the client's Finished, which the bench counts
        # as a failed handshake before any echo.
        j, _ = self.bench_json("--tls", "-c", 2, "-n", 100, target, status=1)
        self.assertEqual(j["messages"], 0, j)
        self.assertEqual(j["errors"], 2, j)
        k = j["error_kinds"]
        self.assertEqual((k["handshake"], k["reset"]), (2, 0), j)
        self.assertIn("certificate required", j["tls"]["error"], j)
        self.assertIsNone(j["tls"]["version"], j)
        # Nor does a certificate from another CA pass.
        j, _ = self.bench_json("--tls-cert", self.path("rogue-client.pem"),
                               "--tls-key", self.path("rogue-client.key"),
                               "-c", 1, "-n", 10, target, status=1)
        self.assertEqual((j["messages"], j["errors"]), (0, 1), j)

    def test_refused_client_certificate_in_a_closed_loop(self):
        # forkloop-echo wants a client certificate and gets none: TLS 1.3
        # refuses it with an alert after the client's Finished. The
        # client's first write often meets the reset before it read the
        # alert; each connection is still a handshake error, with the
        # alert's reason, and the run ends once none is left.
        srv = self.echo("event", "server", "--tls-verify-client",
                        self.path("ca.pem"))
        target = "tls://127.0.0.1:%d" % srv.port
        j, err = self.bench_json("--tls", "-c", 10, "-d", 5, target,
                                 status=1)
        k = j["error_kinds"]
        self.assertEqual((j["messages"], j["errors"], k["handshake"],
                          k["reset"]), (0, 10, 10, 0), j)
        t = j["tls"]
        self.assertEqual(t["error"], "tlsv13 alert certificate required")
        self.assertEqual((t["version"], t["cipher"]), (None, None), t)
        self.assertLess(j["duration_s"], 4, j)
        self.assertIn("no echo came back: every connection failed", err)
        p = self.bench("--tls", "-c", 2, "-d", 5, target)
        self.assertEqual(p.returncode, 1)
        out = p.stdout.decode()
        self.assertRegex(out, r"(?m)^tls +no handshake accepted \(no echo "
                              r"came back\), server not verified$")
        self.assertIn("reset 0, closed 0, connect 0, handshake 2,", out)
        # With the certificate, the row shows what was negotiated.
        j, _ = self.bench_json("--tls-cert", self.path("client.pem"),
                               "--tls-key", self.path("client.key"),
                               "-c", 2, "-n", 50, target)
        self.assertEqual((j["errors"], j["tls"]["version"]),
                         (0, "TLSv1.3"), j)

    def test_threads_tls_byte_exact_and_resumed(self):
        # Two workers, each with its own SSL objects and session, one
        # SSL_CTX: byte-exact echoes, and the merged handshake counts.
        srv = self.echo("event")
        target = "tls://127.0.0.1:%d" % srv.port
        j, _ = self.bench_json("--threads", 2, "-c", 6, "-s", 3000, "-n",
                               3000, target)
        self.assertEqual((j["errors"], j["messages"], j["bytes"]),
                         (0, 3000, 3000 * 3000), j)
        self.assertEqual(j["threads"], 2)
        self.assertHandshakes(j["tls"], 6)
        j, _ = self.bench_json("--threads", 2, "--churn", "--tls-resume",
                               "-c", 4, "-n", 200, target)
        t = j["tls"]
        self.assertEqual((j["errors"], j["messages"]), (0, 200), j)
        self.assertGreater(t["resumed"], 0.9 * t["handshakes"], t)

    def test_tls_options_are_checked(self):
        for args, why in (
                (["--tls-verify", "127.0.0.1:1"], "need --tls"),
                (["--tls-resume", "127.0.0.1:1"], "need --tls"),
                (["--tls", "--tls-cert", "a", "127.0.0.1:1"], "go together"),
                (["--tls", "--tls-ca", "a", "127.0.0.1:1"],
                 "add --tls-verify")):
            p = self.bench(*args)
            self.assertEqual(p.returncode, 2, args)
            self.assertIn(why, p.stderr.decode())
        p = self.bench("--help")
        self.assertIn("130 or 143", p.stdout.decode())
        for opt in ("--tls ", "--tls-verify", "--tls-ca", "--tls-cert",
                    "--tls-key", "--tls-resume"):
            self.assertIn(opt, p.stdout.decode())
        # A missing CA file is said before anything connects.
        p = self.bench("--tls", "--tls-verify", "--tls-ca",
                       os.path.join(self.dir, "nope.pem"), "127.0.0.1:1")
        self.assertEqual(p.returncode, 1)
        self.assertIn("--tls-ca", p.stderr.decode())


if __name__ == "__main__":
    fltest.main()
