"""Integration tests for forkloop-chat --broker: the relay on loopback.

Each test method is one scenario, run once (the relay has only the event
design). Clients are Python sockets, each read by its own thread; every check
compares the exact bytes a client received.
"""

import os
import re
import signal
import socket
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fltest  # noqa: E402
from fltest import Proc, Server, wait_until  # noqa: E402

CHAT = fltest.binary("chat")
WELCOME = re.compile(rb"^\* you are (\S+); others here: (\d+)$")


class Client:
    """A connected socket whose bytes a thread collects, unless reading is
    off: then nothing ever reads it."""

    def __init__(self, port, read=True, rcvbuf=None):
        self.sock = socket.socket()
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(10)
        self.sock.connect(("127.0.0.1", port))
        self.buf = bytearray()
        self.eof = False
        self.cond = threading.Condition()
        self.name = None
        self.t = None
        if read:
            self.t = threading.Thread(target=self._read, daemon=True)
            self.t.start()

    def _read(self):
        while True:
            try:
                self.sock.settimeout(None)
                b = self.sock.recv(1 << 16)
            except OSError:
                b = b""
            with self.cond:
                if not b:
                    self.eof = True
                else:
                    self.buf += b
                self.cond.notify_all()
            if not b:
                return

    def send(self, data):
        self.sock.sendall(data)

    def data(self):
        with self.cond:
            return bytes(self.buf)

    def lines(self):
        """Complete lines received so far, without their newlines."""
        return self.data().split(b"\n")[:-1]

    def wait(self, pred, timeout=10.0, what="data"):
        """Wait until pred(the bytearray received so far, not a copy) is
        true; fail with the last bytes."""
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
        deadline = time.monotonic() + timeout
        with self.cond:
            while not self.eof:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("%s: no EOF" % self.name)
                self.cond.wait(min(left, 0.5))

    def welcome(self):
        """Wait for the relay's greeting and learn this client's name."""
        self.wait(lambda b: b"\n" in b, what="welcome")
        m = WELCOME.match(self.lines()[0])
        assert m, "no welcome: %r" % self.data()
        self.name = m.group(1)
        return int(m.group(2))

    def close(self):
        """Shut down first: a close() alone leaves the socket open while
        the reading thread sits in recv()."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            self.sock.close()
        except OSError:
            pass


class BrokerTest(fltest.ProcTestCase):

    def setUp(self):
        super().setUp()
        self.clients = []

    def tearDown(self):
        for c in self.clients:
            c.close()
        super().tearDown()

    def broker(self, *args):
        return self.start(Server, [CHAT, "--broker", "-v", "--listen",
                                   "127.0.0.1:0"] + list(args))

    def client(self, srv, **kw):
        c = Client(srv.port, **kw)
        self.clients.append(c)
        if c.t is not None:
            c.welcome()
        return c

    def room(self, srv, n):
        """n reading clients, each having seen every later one join."""
        cs = [self.client(srv) for _ in range(n)]
        for c in cs[:-1]:
            c.wait_line(b"* " + cs[-1].name + b" joined")
        return cs

    def marker(self, sender, others, text=b"marker"):
        """A line from sender that every other client has received: what
        came before it has arrived too."""
        sender.send(text + b"\n")
        for c in others:
            c.wait_line(b"<" + sender.name + b"> " + text)

    def assertExits(self, p, code, timeout=10.0):
        self.assertEqual(p.wait(timeout), code, p.stderr_text())
        p.t.join(5)
        self.assertGroupGone(p)

    def stop(self, srv, clients):
        """SIGTERM: exit 143, every client sees the end, no sanitizer
        report."""
        srv.signal(signal.SIGTERM)
        self.assertExits(srv, 143)
        for c in clients:
            if c.t is not None:
                c.wait_eof()
        self.assertNotIn("Sanitizer", srv.stderr_text())
        self.assertNotIn("runtime error", srv.stderr_text())

    # --- the 50-client room ---

    def test_fifty_clients_one_never_reading(self):
        """49 readers and one client that never reads. Lines arrive in
        pieces from everyone at once; each reader gets every other client's
        lines whole, once prefixed, in order, and never its own. Then a
        flood pushes the non-reader past --max-pending: it is dropped with a
        notice and the readers get the whole flood."""
        srv = self.broker("--max-pending", "16K", "--max-line", "1K")
        readers = [self.client(srv) for _ in range(49)]
        idle = self.client(srv, read=False, rcvbuf=4096)
        for k, c in enumerate(readers):
            c.wait(lambda b, n=49 - k: b.count(b" joined\n") == n,
                   what="%d joins" % (49 - k))
        idle.name = re.search(rb"\* (user\d+) joined\n$",
                              readers[0].data()).group(1)
        everyone = readers + [idle]
        nlines, pieces = 6, 3
        sent = {c.name: [] for c in everyone}
        for i in range(nlines):
            lines = {}
            for k, c in enumerate(everyone):
                line = ("c%02d line %d: zoë 日本 %s\r" % (k, i, "x" * k)).encode()
                lines[c] = line + b"\n"
                sent[c.name].append(line)
            for p in range(pieces):
                for c, line in lines.items():
                    step = -(-len(line) // pieces)
                    c.send(line[p * step:(p + 1) * step])
                time.sleep(0.01)
        expect = nlines * (len(everyone) - 1)
        for c in readers:
            c.wait(lambda b: b.count(b"> c") >= expect, 20, "%d lines" % expect)
        for c in readers:
            got = {}
            for line in c.lines():
                if line.startswith(b"* "):
                    continue
                m = re.match(rb"^<([^<> ]+)> (c\d\d line .*)$", line)
                self.assertIsNotNone(m, "bad line %r at %s" % (line, c.name))
                self.assertNotIn(b"<", m.group(2))
                got.setdefault(m.group(1), []).append(m.group(2))
            self.assertNotIn(c.name, got, "own lines came back")
            for other in everyone:
                if other is not c:
                    self.assertEqual(got.get(other.name), sent[other.name],
                                     "%s from %s" % (c.name, other.name))
        # The flood: 1,000-byte lines from one reader, each batch received
        # by every other reader before the next, until the idle one drops.
        flood, rest = readers[0], readers[1:]
        dropped = b"* " + idle.name + b" dropped: not reading\n"
        big = [(b"%05d " % i) + b"f" * 993 for i in range(8000)]
        prefix = b"<" + flood.name + b"> "
        target = {c: len(c.data()) for c in rest}
        n = 0
        while n < len(big) and dropped not in rest[0].data():
            batch = big[n:n + 64]
            flood.send(b"".join(l + b"\n" for l in batch))
            n += len(batch)
            for c in rest:
                target[c] += sum(len(prefix) + len(l) + 1 for l in batch)
                c.wait(lambda b, t=target[c]: len(b) >= t, 20,
                       "%d flood lines" % n)
        for c in [flood] + rest:
            c.wait_line(dropped[:-1])
            self.assertEqual(c.data().count(dropped), 1)
        self.marker(rest[-1], readers[:-1])
        want = b"".join(b"<" + flood.name + b"> " + l + b"\n" for l in big[:n])
        for c in rest:
            relayed = b"".join(l + b"\n" for l in c.lines()
                               if l.startswith(b"<" + flood.name + b"> 0"))
            self.assertEqual(relayed, want, c.name)
        srv.wait_line(idle.name.decode() + " dropped: not reading")
        self.assertNotIn(" left ", srv.stderr_text())
        self.stop(srv, readers)

    # --- names and notices ---

    def test_join_and_leave_notices(self):
        srv = self.broker()
        a = self.client(srv)
        self.assertEqual(a.welcome(), 0)
        b = self.client(srv)
        self.assertEqual(b.welcome(), 1)
        a.wait_line(b"* " + b.name + b" joined")
        c = self.client(srv)
        self.assertEqual(c.welcome(), 2)
        b.close()
        a.wait_line(b"* " + b.name + b" left")
        c.wait_line(b"* " + b.name + b" left")
        self.marker(c, [a])
        self.assertEqual(a.data().split(b"\n", 1)[1],
                         b"* %s joined\n* %s joined\n* %s left\n<%s> marker\n"
                         % (b.name, c.name, b.name, c.name))
        srv.wait_line(b.name.decode() + r" left \(end of input\)")

    def test_nick_renames_and_rejects(self):
        srv = self.broker()
        a, b = self.room(srv, 2)
        old, old_b = a.name, b.name
        a.send(b"/nick alice\n")
        a.wait_line(b"* you are now alice")
        b.wait_line(b"* " + old + b" is now alice")
        a.name = b"alice"
        a.send(b"hello\n/nick alice\n")
        b.wait_line(b"<alice> hello")
        a.wait_line(b"* you are already alice")
        bad = [b"/nick", b"/nick ", b"/nick a b", b"/nick <x>", b"/nick x>",
               b"/nick " + b"n" * 33, b"/nick \xff", b"/nick \xc3",
               b"/nick \xc0\xaf", b"/nick a\x01", b"/nick \xc2\x85",
               b"/nick " + b.name, b"/nick user99"]
        a.send(b"".join(l + b"\n" for l in bad))
        self.marker(a, [b], b"after")
        a.wait_line(b"* name taken: user99")
        b.send(("/nick zoë_" + "n" * 26 + "\r\n").encode())
        nick = ("zoë_" + "n" * 26).encode()
        self.assertEqual(len(nick), 31)
        b.wait_line(b"* you are now " + nick)
        a.wait_line(b"* " + b.name + b" is now " + nick)
        b.name = nick
        b.send(b"/nickname is a line\n")
        a.wait_line(b"<" + nick + b"> /nickname is a line")
        self.assertEqual(
            b.data().split(b"\n", 1)[1],
            b"* " + old + b" is now alice\n<alice> hello\n<alice> after\n"
            b"* you are now " + nick + b"\n")
        bad_name = b"* bad name: 1 to 32 printable bytes, no spaces, '<' or '>'\n"
        self.assertEqual(
            a.data().split(b"\n", 1)[1],
            b"* " + old_b + b" joined\n* you are now alice\n"
            b"* you are already alice\n" + b"* usage: /nick NAME\n" * 2
            + bad_name * 9 + b"* name taken: " + old_b + b"\n"
            b"* name taken: user99\n* " + old_b + b" is now " + nick + b"\n"
            b"<" + nick + b"> /nickname is a line\n")
        self.stop(srv, [a, b])

    # --- lines ---

    def test_max_line_cuts_with_notice(self):
        srv = self.broker("--max-line", "16")
        a, b = self.room(srv, 2)
        a.send(b"0123456789abcdef\n")
        b.wait_line(b"<" + a.name + b"> 0123456789abcdef")
        a.send(b"0123456789")
        time.sleep(0.05)
        a.send(b"ABCDEFGHIJ")
        time.sleep(0.05)
        a.send(b"rest of the line, dropped")
        time.sleep(0.05)
        a.send(b" still dropped\nnext\n")
        a.send(b"0123456789abcdefX\n")
        self.marker(a, [b], b"end")
        p = b"<" + a.name + b"> "
        self.assertEqual(b.data().split(b"\n", 1)[1],
                         p + b"0123456789abcdef\n" + p + b"0123456789ABCDEF\n"
                         + p + b"next\n" + p + b"0123456789abcdef\n"
                         + p + b"end\n")
        # The sender's notices travel on its own connection: the marker on
        # b's says nothing about when they arrive.
        fltest.wait_until(lambda: a.data().count(b"* line cut") >= 2, 10)
        self.assertEqual(a.data().split(b"\n", 2)[2],
                         b"* line cut at 16 bytes\n* line cut at 16 bytes\n")
        self.stop(srv, [a, b])

    def test_partial_line_at_eof(self):
        srv = self.broker()
        a, b, c = self.room(srv, 3)
        a.send(b"whole\nno newline")
        a.sock.shutdown(socket.SHUT_WR)
        b.wait_line(b"* " + a.name + b" left")
        c.send(b"no newline either")
        c.close()
        b.wait_line(b"* " + c.name + b" left")
        self.assertEqual(b.data().split(b"\n", 2)[2],
                         b"<%s> whole\n<%s> no newline\n* %s left\n"
                         b"<%s> no newline either\n* %s left\n"
                         % (a.name, a.name, a.name, c.name, c.name))
        a.wait_eof()
        self.stop(srv, [b])

    def test_utf8_and_every_byte_but_newline_untouched(self):
        srv = self.broker()
        a, b = self.room(srv, 2)
        text = "žluťoučký kůň 日本語 🎉 ".encode() + bytes(
            v for v in range(256) if v != 10)
        for i in range(0, len(text), 5):
            a.send(text[i:i + 5])
        a.send(b"\r\n")
        b.wait(lambda d: d.endswith(b"\r\n"), what="the line")
        self.assertEqual(b.lines()[-1], b"<" + a.name + b"> " + text + b"\r")

    # --- the process ---

    def test_sigterm_and_sigint_close_everything(self):
        for sig, code in ((signal.SIGTERM, 143), (signal.SIGINT, 130)):
            srv = self.broker()
            cs = self.room(srv, 3)
            cs[0].send(b"partial")
            srv.signal(sig)
            self.assertExits(srv, code)
            for c in cs:
                c.wait_eof()

    def test_fork_mode_refused(self):
        for args in (["--mode", "fork", "--broker", "-l", "127.0.0.1:0"],
                     ["--broker", "-l", "127.0.0.1:0", "-m", "fork"]):
            p = self.start(Proc, [CHAT] + args)
            self.assertExits(p, 2)
            self.assertIn("forkloop-chat: --broker runs in event mode only",
                          p.stderr_text())
            self.assertIn("usage:", p.stderr_text())

    def test_broker_needs_listen(self):
        for args in (["--broker"], ["--broker", "127.0.0.1", "7"],
                     ["--max-line", "10", "-l", "0"]):
            p = self.start(Proc, [CHAT] + args)
            self.assertExits(p, 2)
            self.assertIn("needs --", p.stderr_text())
        p = self.start(Proc, [CHAT, "--broker", "-l", "0",
                              "--max-pending", "1K"])
        self.assertExits(p, 2)
        self.assertIn("--max-pending must be at least --max-line",
                      p.stderr_text())


if __name__ == "__main__":
    fltest.main()
