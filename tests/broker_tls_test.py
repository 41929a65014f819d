"""Integration tests for forkloop-chat --broker over TLS (a tls:// --listen):
the relay on loopback, its clients Python ssl sockets.

Each test method is one scenario, run once (the relay has only the event
design). Certificates are made at test time with the openssl command in a
temporary directory (tlscerts.py); no key is ever committed. Every check
compares the exact bytes a client received, or the relay's log.
"""

import os
import re
import select
import shutil
import signal
import socket
import ssl
import struct
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fltest  # noqa: E402
import tlscerts  # noqa: E402
from fltest import Proc, Server, wait_until  # noqa: E402

CHAT = fltest.binary("chat")
WELCOME = re.compile(rb"^\* you are (\S+); others here: (\d+)$")
CHUNK = 16 * 1024


def closed_soon(s, timeout):
    """True if the relay closed s (EOF, reset or an alert) within timeout;
    nothing else may arrive."""
    s.settimeout(timeout)
    try:
        while True:
            b = s.recv(65536)
            if not b:
                return True
            if b[:1] != b"\x15":  # a TLS alert record
                raise AssertionError("unexpected bytes %r" % b[:200])
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False


def der(path):
    with open(path) as f:
        return ssl.PEM_cert_to_DER_cert(f.read())


class TlsClient:
    """A TLS connection to the relay, its handshake done, owned by one
    thread that reads (unless reading is off: then nothing reads until
    start()) and sends what send() queued: an SSL object is not used by two
    threads at once. A close_notify from the relay reads as the end; a FIN
    without one is an error (SSLEOFError, kept in .error). At the end it
    answers with its own close_notify and closes, as a TLS client should."""

    def __init__(self, port, ctx, read=True, rcvbuf=None):
        raw = socket.socket()
        if rcvbuf is not None:
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        raw.settimeout(10)
        raw.connect(("127.0.0.1", port))
        self.sock = ctx.wrap_socket(raw, server_hostname="127.0.0.1",
                                    suppress_ragged_eofs=False)
        self.sock.setblocking(False)
        self.wake_r, self.wake_w = os.pipe()
        self.buf = bytearray()
        self.out = bytearray()
        self.eof = False
        self.error = None
        self.reading = read
        self.stopping = False
        self.want_fin = False
        self.cond = threading.Condition()
        self.name = None
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def start(self):
        with self.cond:
            self.reading = True
        os.write(self.wake_w, b"x")

    def _run(self):
        try:
            while self._step():
                pass
        except (OSError, ssl.SSLError) as e:
            with self.cond:
                self.error = e
        with self.cond:
            self.eof = True
            self.cond.notify_all()
        try:
            self.sock.unwrap()  # our close_notify, after the relay's
        except (OSError, ssl.SSLError, ValueError):
            pass
        self.sock.close()

    def _step(self):
        """One round of reading and writing; False at the end."""
        with self.cond:
            if self.stopping:
                return False
            reading, wantw = self.reading, len(self.out) > 0
        if reading and self.sock.pending():
            r, w = [self.sock], []
        else:
            r, w, _ = select.select(
                [self.wake_r] + ([self.sock] if reading else []),
                [self.sock] if wantw else [], [], 0.5)
        if self.wake_r in r:
            os.read(self.wake_r, 4096)
        if w:
            with self.cond:
                chunk = bytes(self.out[:CHUNK])
            try:
                n = self.sock.send(chunk)
            except (ssl.SSLWantWriteError, ssl.SSLWantReadError):
                n = 0
            with self.cond:
                del self.out[:n]
        with self.cond:
            fin = self.want_fin and not self.out
        if fin:
            # A FIN without close_notify: the socket's own shutdown on a
            # duplicate, as the SSL object must stay able to read.
            with socket.socket(fileno=os.dup(self.sock.fileno())) as d:
                d.shutdown(socket.SHUT_WR)
            with self.cond:
                self.want_fin = False
        if self.sock in r:
            try:
                b = self.sock.recv(1 << 16)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                return True
            with self.cond:
                self.buf += b
                self.cond.notify_all()
            return len(b) > 0
        return True

    def send(self, data):
        with self.cond:
            self.out += data
        os.write(self.wake_w, b"x")

    def half_close(self):
        """Send TCP's FIN, after what send() queued, and go on reading."""
        with self.cond:
            self.want_fin = True
        os.write(self.wake_w, b"x")

    def data(self):
        with self.cond:
            return bytes(self.buf)

    def lines(self):
        return self.data().split(b"\n")[:-1]

    def wait(self, pred, timeout=10.0, what="data"):
        deadline = time.monotonic() + timeout
        with self.cond:
            while not pred(self.buf):
                left = deadline - time.monotonic()
                if left <= 0 or self.eof:
                    raise AssertionError("%s: waited for %s, got %r"
                                         % (self.name, what,
                                            bytes(self.buf[-2000:])))
                self.cond.wait(min(left, 0.5))

    def wait_line(self, line, timeout=10.0):
        self.wait(lambda b: line + b"\n" in b, timeout, repr(line))

    def wait_eof(self, timeout=10.0):
        self.t.join(timeout)
        if self.t.is_alive():
            raise AssertionError("%s: no end" % self.name)

    def welcome(self):
        """Wait for the relay's greeting and learn this client's name."""
        self.wait(lambda b: b"\n" in b, what="welcome")
        m = WELCOME.match(self.lines()[0])
        assert m, "no welcome: %r" % self.data()
        self.name = m.group(1)
        return int(m.group(2))

    def after_welcome(self):
        return self.data().split(b"\n", 1)[1]

    def close(self):
        """End the connection (close_notify, then close); again: nothing."""
        if self.wake_w is None:
            return
        with self.cond:
            self.stopping = True
        os.write(self.wake_w, b"x")
        self.t.join(10)
        os.close(self.wake_r)
        os.close(self.wake_w)
        self.wake_w = None


class BrokerTlsTest(fltest.ProcTestCase):

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix="forkloop-broker-tls-")
        tlscerts.make(cls.tmp.name)

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def setUp(self):
        super().setUp()
        self.clients = []

    def tearDown(self):
        for c in self.clients:
            c.close()
        super().tearDown()

    def path(self, name):
        return tlscerts.path(self.tmp.name, name)

    def broker(self, *args, cert="server.pem", key="server.key"):
        return self.start(Server, [
            CHAT, "--broker", "-v", "--listen", "tls://127.0.0.1:0",
            "--tls-cert", self.path(cert), "--tls-key", self.path(key)]
            + list(args))

    def mtls_broker(self, *args):
        return self.broker("--tls-verify-client", self.path("ca.pem"), *args)

    def context(self, cert=None):
        """A client context that verifies the relay against ca.pem and
        presents cert.pem/cert.key if cert is given."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(self.path("ca.pem"))
        if cert is not None:
            ctx.load_cert_chain(self.path(cert + ".pem"),
                                self.path(cert + ".key"))
        return ctx

    def client(self, srv, cert=None, **kw):
        c = TlsClient(srv.port, self.context(cert), **kw)
        self.clients.append(c)
        if c.reading:
            c.welcome()
        return c

    def room(self, srv, n, **kw):
        """n reading clients, each having seen every later one join."""
        cs = [self.client(srv, **kw) for _ in range(n)]
        for c in cs[:-1]:
            c.wait_line(b"* " + cs[-1].name + b" joined")
        return cs

    def marker(self, sender, others, text=b"marker"):
        sender.send(text + b"\n")
        for c in others:
            c.wait_line(b"<" + sender.name + b"> " + text)

    def stop(self, srv, clients):
        """SIGTERM: every client is told, gets close_notify, and the relay
        dies of the signal with no sanitizer report."""
        srv.signal(signal.SIGTERM)
        self.assertEqual(srv.wait(15), -signal.SIGTERM, srv.stderr_text())
        for c in clients:
            c.wait_eof()
            self.assertIsNone(c.error, c.name)
            self.assertTrue(c.data().endswith(
                b"* the relay is shutting down\n"), c.data()[-200:])
        srv.t.join(5)
        self.assertGroupGone(srv)
        self.assertNotIn("Sanitizer", srv.stderr_text())
        self.assertNotIn("runtime error", srv.stderr_text())

    def refused(self, srv, cert=None):
        """Connect presenting cert (or none) and finish the client's side
        of the handshake: the relay must close the connection without a
        byte of the room's. Returns what the client met."""
        raw = socket.create_connection(("127.0.0.1", srv.port), 10)
        s = self.context(cert).wrap_socket(raw, server_hostname="127.0.0.1",
                                           do_handshake_on_connect=False)
        try:
            # TLS 1.3: the client's handshake is done before the relay
            # checks its certificate; the alert comes with the first read.
            s.do_handshake()
            got = fltest.recv_all(s, 10)
        except (ssl.SSLError, ConnectionResetError, BrokenPipeError) as e:
            got = e
        finally:
            s.close()
        self.assertFalse(isinstance(got, bytes) and got, got)
        return got

    # --- the room over TLS ---

    def test_twenty_clients_over_tls(self):
        """20 TLS clients: each line reaches the 19 others exactly, with
        its sender's prefix, never its sender. A client certificate means
        nothing without --tls-verify-client. /quit gets "* bye" and
        close_notify; a client that closes is announced as left."""
        srv = self.broker()
        cs = [self.client(srv, cert="client" if k == 0 else None)
              for k in range(20)]
        for k, c in enumerate(cs):
            self.assertEqual(c.welcome(), k)
            self.assertEqual(c.name, b"user%d" % (k + 1))
            c.wait(lambda b, n=19 - k: b.count(b" joined\n") == n,
                   what="%d joins" % (19 - k))
        for k, c in enumerate(cs):
            self.assertEqual(c.after_welcome(), b"".join(
                b"* %s joined\n" % o.name for o in cs[k + 1:]))
        nlines = 5
        sent = {c.name: [] for c in cs}
        for i in range(nlines):
            for k, c in enumerate(cs):
                line = ("c%02d line %d: zoë 日本 %s" % (k, i, "x" * k * 50)
                        ).encode()
                sent[c.name].append(line)
                c.send(line + (b"\r\n" if i % 2 else b"\n"))
        want = nlines * 19
        whole = re.compile(rb"> c[^\n]*\n")  # a line and its end
        for c in cs:
            c.wait(lambda b: len(whole.findall(b)) >= want, 20,
                   "%d lines" % want)
        for c in cs:
            got = {}
            for line in c.after_welcome().split(b"\n")[:-1]:
                if line.startswith(b"* "):
                    continue
                m = re.match(rb"^<(user\d+)> (c\d\d line .*)$", line)
                self.assertIsNotNone(m, "bad line %r at %s" % (line, c.name))
                got.setdefault(m.group(1), []).append(m.group(2))
            self.assertNotIn(c.name, got, "own lines came back")
            for o in cs:
                if o is not c:
                    self.assertEqual(got.get(o.name), sent[o.name],
                                     "%s from %s" % (c.name, o.name))
        quitter, closer, rest = cs[-1], cs[-2], cs[:-2]
        quitter.send(b"/quit see you\n")
        quitter.wait_eof()
        self.assertIsNone(quitter.error)  # close_notify, not a bare FIN
        self.assertTrue(quitter.data().endswith(b"* bye\n"))
        for c in rest + [closer]:
            c.wait_line(b"* " + quitter.name + b" left: see you")
        closer.close()
        for c in rest:
            c.wait_line(b"* " + closer.name + b" left")
        srv.wait_line(r"event=leave name=%s .*reason=quit "
                      % quitter.name.decode())
        srv.wait_line(r"event=leave name=%s .*reason=eof "
                      % closer.name.decode())
        self.marker(rest[0], rest[1:])
        self.stop(srv, rest)

    def test_long_lines_cut_and_records_read_whole(self):
        """Lines longer than --max-line arrive in TLS records of up to 16
        KiB: each is cut with a notice, and the lines after them, in the
        same records, are relayed without waiting for more input."""
        srv = self.broker("--max-line", "1K")
        a, b = self.room(srv, 2)
        long = [(b"%02d " % i) + b"y" * 5000 for i in range(40)]
        a.send(b"".join(l + b"\n" + b"short %d\n" % i
                        for i, l in enumerate(long)))
        p = b"<" + a.name + b"> "
        b.wait_line(p + b"short 39")
        self.assertEqual(b.after_welcome(), b"".join(
            p + l[:1024] + b"\n" + p + b"short %d\n" % i
            for i, l in enumerate(long)))
        a.wait(lambda d: d.count(b"* line cut at 1024 bytes\n") == 40,
               what="40 notices")
        self.assertEqual(a.after_welcome().split(b"\n", 1)[1],
                         b"* line cut at 1024 bytes\n" * 40)
        self.stop(srv, [a, b])

    # --- handshakes that fail ---

    def test_mutual_tls_names_and_refusals(self):
        """With --tls-verify-client: no certificate, or one from a CA the
        relay does not trust, fails the handshake, logged with the reason,
        and nobody hears of it. A verified certificate's common name is the
        client's name, which it keeps; a name already held gives userN and
        a notice; nobody else may /nick it."""
        srv = self.mtls_broker()
        self.refused(srv)
        srv.wait_line(r"^forkloop-chat: \S+Z event=refused "
                      r"peer=127\.0\.0\.1:\d+ reason=tls_handshake "
                      r"duration_ms=\d+ error=\".*certificate")
        self.refused(srv, "rogue-client")
        srv.wait_line(r"event=refused peer=127\.0\.0\.1:\d+ "
                      r"reason=tls_handshake .*error=\"certificate verify "
                      r"failed: unable to get local issuer certificate\"$")
        alice = self.client(srv, "client")
        self.assertEqual(alice.data(), b"* you are alice; others here: 0\n")
        bob = self.client(srv, "client2")
        self.assertEqual(bob.name, b"bob")
        alice.wait_line(b"* bob joined")
        srv.wait_line(r"event=join name=alice peer=127\.0\.0\.1:\d+ "
                      r"name_from=certificate$")
        again = self.client(srv, "client")
        self.assertEqual(again.name, b"user1")
        again.wait_line(b"* certificate name not used: alice is taken")
        self.assertEqual(again.after_welcome(),
                         b"* certificate name not used: alice is taken\n")
        for c in (alice, bob):
            c.wait_line(b"* user1 joined")
        bob.send(b"/nick alice\n/nick robert\n")
        bob.wait(lambda b: b.count(b"from your certificate") == 2,
                 what="two refusals")
        again.send(b"/nick alice\n/nick ALICE\n/nick carol\n")
        again.wait_line(b"* you are now carol")
        self.assertEqual(again.after_welcome().split(b"\n", 1)[1],
                         b"* name taken: alice\n* name taken: ALICE\n"
                         b"* you are now carol\n")
        alice.wait_line(b"* user1 is now carol")
        alice.send(b"/who\n")
        alice.wait_line(b"* 3 here: alice (certificate) bob (certificate) "
                        b"carol")
        self.marker(bob, [alice, again], b"hello from bob")
        bob.wait_line(b"* user1 is now carol")
        self.assertEqual(bob.after_welcome(),
                         b"* user1 joined\n"
                         b"* your name comes from your certificate\n"
                         b"* your name comes from your certificate\n"
                         b"* user1 is now carol\n")
        self.assertEqual(srv.stderr_text().count("event=join "), 3)
        # Two common names (CN=alice, CN=bob): neither names the client.
        two = self.client(srv, "two-cn")
        self.assertEqual(two.name, b"user2")
        self.assertEqual(two.data(), b"* you are user2; others here: 3\n")
        self.stop(srv, [alice, bob, again, two])

    def test_plaintext_client_is_logged_and_closed(self):
        """A client speaking plain text on the TLS port fails the handshake,
        logged with the reason, and is closed; the room never hears of it,
        no name is spent on it, and the relay goes on serving TLS."""
        srv = self.broker()
        a = self.client(srv)
        with socket.create_connection(("127.0.0.1", srv.port), 10) as s:
            s.sendall(b"hello relay\n")
            self.assertTrue(closed_soon(s, 10))
        srv.wait_line(r"event=refused peer=127\.0\.0\.1:\d+ "
                      r"reason=tls_handshake duration_ms=\d+ "
                      r"error=\"wrong version number\"$")
        b = self.client(srv)
        self.assertEqual(b.data(), b"* you are user2; others here: 1\n")
        a.wait_line(b"* user2 joined")
        self.marker(b, [a])
        self.assertEqual(a.after_welcome(),
                         b"* user2 joined\n<user2> marker\n")
        self.stop(srv, [a, b])

    def test_stalled_handshake_closed_after_timeout(self):
        """A client that connects and says nothing is closed once
        --tls-handshake-timeout has passed, and logged."""
        srv = self.broker("--tls-handshake-timeout", "0.5")
        with socket.create_connection(("127.0.0.1", srv.port), 10) as s:
            t0 = time.monotonic()
            self.assertTrue(closed_soon(s, 10))
            took = time.monotonic() - t0
        self.assertGreater(took, 0.4)
        self.assertLess(took, 5)
        srv.wait_line(r"event=refused peer=127\.0\.0\.1:\d+ "
                      r"reason=tls_handshake_timeout duration_ms=\d+$")
        a = self.client(srv)
        self.assertEqual(a.name, b"user1")
        self.stop(srv, [a])

    # --- SIGHUP ---

    def test_sighup_reloads_certificate(self):
        """SIGHUP loads the certificate and key again: a client that
        connects afterwards is shown the new one; one connected across it
        goes on talking with it."""
        shutil.copy(self.path("server.pem"), self.path("cur.pem"))
        shutil.copy(self.path("server.key"), self.path("cur.key"))
        srv = self.broker(cert="cur.pem", key="cur.key")
        a = self.client(srv)
        self.assertEqual(a.sock.getpeercert(binary_form=True),
                         der(self.path("server.pem")))
        shutil.copy(self.path("server2.pem"), self.path("cur.pem"))
        shutil.copy(self.path("server2.key"), self.path("cur.key"))
        srv.signal(signal.SIGHUP)
        srv.wait_line(r"SIGHUP: reloaded --tls-cert .*cur\.pem")
        b = self.client(srv)
        self.assertEqual(b.sock.getpeercert(binary_form=True),
                         der(self.path("server2.pem")))
        a.wait_line(b"* " + b.name + b" joined")
        self.marker(a, [b], b"across the reload")
        self.marker(b, [a], b"after the reload")
        self.assertIsNone(srv.p.poll())
        # SIGTERM does not wait for a handshake that has not finished.
        fds = fltest.fd_count(srv.pid)
        with socket.create_connection(("127.0.0.1", srv.port), 10):
            self.assertTrue(wait_until(
                lambda: fltest.fd_count(srv.pid) > fds, 10))
            t0 = time.monotonic()
            self.stop(srv, [a, b])
            self.assertLess(time.monotonic() - t0, 5)
        self.assertRegex(srv.stderr_text(),
                         r"event=refused peer=127\.0\.0\.1:\d+ "
                         r"reason=shutdown ")

    def test_sighup_without_tls_has_nothing_to_reload(self):
        """Without TLS, SIGHUP is logged and the relay goes on."""
        srv = self.start(Server, [CHAT, "--broker", "--listen",
                                  "127.0.0.1:0"])
        with socket.create_connection(("127.0.0.1", srv.port), 10) as s:
            s.settimeout(10)
            welcome = b"* you are user1; others here: 0\n"
            self.assertEqual(fltest.recv_exactly(s, len(welcome), 10),
                             welcome)
            srv.signal(signal.SIGHUP)
            srv.wait_line(r"SIGHUP: nothing to reload")
            s.sendall(b"/who\n")
            who = b"* 1 here: user1\n"
            self.assertEqual(fltest.recv_exactly(s, len(who), 10), who)
        self.assertIsNone(srv.p.poll())

    # --- closing ---

    def test_half_closed_client_gets_everything_owed(self):
        """A TLS client that ends its input with a FIN (no close_notify)
        still gets every line it is owed, then close_notify; the others see
        its last line and that it left."""
        srv = self.broker("--max-pending", "64M")
        a, c = self.room(srv, 2)
        b = self.client(srv, read=False)
        a.wait(lambda d: d.count(b" joined\n") == 2, what="a join")
        b.name = re.findall(rb"\* (user\d+) joined\n", a.data())[-1]
        lines = [(b"%04d " % i) + b"x" * 1018 for i in range(3000)]
        a.send(b"".join(l + b"\n" for l in lines))
        self.marker(a, [c], b"done")
        b.send(b"bye from b\n")
        b.half_close()
        for o in (a, c):
            o.wait_line(b"<" + b.name + b"> bye from b")
        b.start()
        b.wait_eof(30)
        self.assertIsNone(b.error)
        p = b"<" + a.name + b"> "
        self.assertEqual(b.after_welcome(),
                         b"".join(p + l + b"\n" for l in lines)
                         + p + b"done\n")
        for o in (a, c):
            o.wait_line(b"* " + b.name + b" left")
            self.assertEqual(o.data().split(b"\n")[-3:],
                             [b"<" + b.name + b"> bye from b",
                              b"* " + b.name + b" left", b""])
        srv.wait_line(r"event=leave name=%s .*reason=eof " % b.name.decode())
        self.stop(srv, [a, c])

    def test_dropped_client_told_and_closed_cleanly(self):
        """A TLS client that does not read is dropped as on plain TCP: the
        others are told, and it gets the end of what it was sent, a notice
        and close_notify, though it sent more meanwhile."""
        srv = self.broker("--max-pending", "64K", "--max-line", "1K")
        a, c = self.room(srv, 2)
        before = c.data().count(b" joined\n")
        s = self.client(srv, read=False)
        c.wait(lambda d: d.count(b" joined\n") > before, what="a join")
        s.name = re.findall(rb"\* (user\d+) joined\n", c.data())[-1]
        dropped = b"* " + s.name + b" dropped: not reading"
        line = b"f" * 993
        n = 0
        while n < 20000 and dropped not in c.data():
            a.send((line + b"\n") * 64)
            n += 64
            c.wait(lambda d, n=n: d.count(b"> f") >= n, 20,
                   "%d lines" % n)
        c.wait_line(dropped)
        a.wait_line(dropped)
        s.send(b"late words\n" * 1000)
        s.start()
        s.wait_eof(20)
        self.assertIsNone(s.error)
        got = s.data().split(b"\n")
        self.assertEqual(got[0], b"* you are %s; others here: 2" % s.name)
        self.assertEqual(got[-2:], [b"* you were dropped: not reading", b""])
        self.assertEqual(set(got[1:-2]), {b"<" + a.name + b"> " + line})
        srv.wait_line(r"event=drop name=%s .*reason=not_reading "
                      % s.name.decode())
        self.marker(c, [a])
        self.stop(srv, [a, c])

    def test_reset_client_owed_output_leaves(self):
        """A client owed megabytes it never read resets its connection: it
        leaves at once, reported as a reset, and the others are told (it
        used to be written to forever, the reset taken for an end of
        input)."""
        srv = self.broker("-v", "--max-pending", "16M")
        raw = socket.socket()
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        raw.settimeout(10)
        raw.connect(("127.0.0.1", srv.port))
        a = self.context().wrap_socket(raw, server_hostname="127.0.0.1")
        name = srv.wait_line(r"event=join name=(user\d+) ")[-1].group(1)
        b = self.client(srv)
        line = b"z" * 999 + b"\n"
        for _ in range(6):
            b.send(line * 500)
        srv.wait_line(r"event=join name=%s " % re.escape(b.name.decode()))
        time.sleep(0.5)  # the relay has queued most of it for a
        a.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                     struct.pack("ii", 1, 0))
        a.close()
        srv.wait_line(r"event=leave name=%s .*reason=reset .*"
                      r"error=\"Connection reset by peer\"$" % re.escape(name))
        b.wait_line(b"* " + name.encode() + b" left")
        self.marker(b, [])
        self.stop(srv, [b])

    def test_bad_key_is_a_start_error(self):
        """A certificate and key that do not match: exit status 1 with
        tls.c's message, before listening."""
        p = self.start(Proc, [
            CHAT, "--broker", "--listen", "tls://127.0.0.1:0",
            "--tls-cert", self.path("server.pem"),
            "--tls-key", self.path("server2.key")])
        self.assertEqual(p.wait(10), 1)
        p.t.join(5)
        err = p.stderr_text()
        self.assertIn("cannot load --tls-key %s: key values mismatch"
                      % self.path("server2.key"), err)
        self.assertNotIn("listening on", err)


if __name__ == "__main__":
    unittest.main()
