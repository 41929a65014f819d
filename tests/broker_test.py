"""Integration tests for forkloop-chat --broker: the relay on loopback.

Each test method is one scenario, run once (the relay has only the event
design). Clients are Python sockets, each read by its own thread; every check
compares the exact bytes a client received.
"""

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fltest  # noqa: E402
from fltest import Proc, Server, wait_until  # noqa: E402

CHAT = fltest.binary("chat")
WELCOME = re.compile(rb"^\* you are (\S+); others here: (\d+)$")
# Shown as \\uXXXX: C1 controls, line and paragraph separators, the
# Bidi_Control characters, deprecated format characters and interlinear
# annotation.
ESCAPED = (set(range(0x80, 0xa0)) | {0x2028, 0x2029, 0x061c, 0x200e, 0x200f}
           | set(range(0x202a, 0x202f)) | set(range(0x2066, 0x2070))
           | set(range(0xfff9, 0xfffc)))


def shown(data):
    """data as the relay shows it to others: valid UTF-8 as it is but for
    controls (caret notation for C0 and DEL) and ESCAPED (as \\uXXXX),
    every other byte as \\xHH."""
    out = bytearray()
    i = 0
    while i < len(data):
        for k in (1, 2, 3, 4):
            try:
                ch = data[i:i + k].decode("utf-8")
            except UnicodeDecodeError:
                continue
            if len(ch) == 1 and i + k <= len(data):
                break
        else:
            out += b"\\x%02X" % data[i]
            i += 1
            continue
        cp = ord(ch)
        if cp == 9 or not (cp < 0x20 or cp == 0x7f or cp in ESCAPED):
            out += data[i:i + k]
        elif cp < 0x20:
            out += b"^" + bytes([cp + 0x40])
        elif cp == 0x7f:
            out += b"^?"
        else:
            out += b"\\u%04X" % cp
        i += k
    return bytes(out)


class Client:
    """A connected socket whose bytes a thread collects, unless reading is
    off: then nothing reads it until start(). Like forkloop-chat and nc, it
    ends its side once the relay has closed; error is what recv raised
    (a reset), if anything."""

    def __init__(self, port, read=True, rcvbuf=None):
        self.sock = socket.socket()
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(10)
        self.sock.connect(("127.0.0.1", port))
        self.buf = bytearray()
        self.eof = False
        self.error = None
        self.cond = threading.Condition()
        self.name = None
        self.t = None
        if read:
            self.start()

    def start(self):
        self.t = threading.Thread(target=self._read, daemon=True)
        self.t.start()

    def _read(self):
        while True:
            try:
                self.sock.settimeout(None)
                b = self.sock.recv(1 << 16)
            except OSError as e:
                self.error = e
                b = b""
            with self.cond:
                if not b:
                    self.eof = True
                else:
                    self.buf += b
                self.cond.notify_all()
            if not b:
                try:
                    self.sock.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
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

    def after_welcome(self):
        """What came after the greeting."""
        return self.data().split(b"\n", 1)[1]

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
        """SIGTERM: the relay dies of it, every client sees the end, no
        sanitizer report."""
        srv.signal(signal.SIGTERM)
        self.assertExits(srv, -signal.SIGTERM)
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
                sent[c.name].append(line[:-1])  # CR LF ends the line
            for p in range(pieces):
                for c, line in lines.items():
                    step = -(-len(line) // pieces)
                    c.send(line[p * step:(p + 1) * step])
                time.sleep(0.01)
        expect = nlines * (len(everyone) - 1)
        for c in readers:
            # The last line's start may arrive before its end: wait for it
            # whole.
            c.wait(lambda b: b.count(b"> c") >= expect and b.endswith(b"\n"),
                   20, "%d lines" % expect)
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
        srv.wait_line(r"event=drop name=%s peer=\S+ reason=not_reading "
                      r"pending=\d+ " % idle.name.decode())
        self.assertNotIn("event=leave", srv.stderr_text())
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
        srv.wait_line(r"event=leave name=%s .*reason=eof " % b.name.decode())

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
        a.wait_line(b"* name reserved: user99 (the relay names newcomers "
                    b"userN)")
        b.send(("/nick zoë_" + "n" * 26 + "\r\n").encode())
        nick = ("zoë_" + "n" * 26).encode()
        self.assertEqual(len(nick), 31)
        b.wait_line(b"* you are now " + nick)
        a.wait_line(b"* " + b.name + b" is now " + nick)
        b.name = nick
        b.send(b"/nickname is a command\n//nickname is a line\n")
        a.wait_line(b"<" + nick + b"> /nickname is a line")
        b.wait_line(b"* unknown command /nickname; /help lists them")
        self.assertEqual(
            b.after_welcome(),
            b"* " + old + b" is now alice\n<alice> hello\n<alice> after\n"
            b"* you are now " + nick + b"\n"
            b"* unknown command /nickname; /help lists them\n")
        bad_name = b"* bad name: "
        self.assertEqual(
            a.after_welcome(),
            b"* " + old_b + b" joined\n* you are now alice\n"
            b"* you are already alice\n" + b"* usage: /nick NAME\n" * 2
            + bad_name + b"no spaces, controls or invisible characters\n"
            + (bad_name + b"no '<' or '>'\n") * 2
            + bad_name + b"1 to 32 bytes\n"
            + (bad_name + b"not UTF-8\n") * 3
            + (bad_name + b"no spaces, controls or invisible characters\n") * 2
            + b"* name taken: " + old_b + b"\n"
            b"* name reserved: user99 (the relay names newcomers userN)\n"
            b"* " + old_b + b" is now " + nick + b"\n"
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

    def test_utf8_untouched_controls_escaped(self):
        """Every byte value but the newline, in pieces: valid UTF-8 passes
        as it is, everything else arrives as visible text."""
        srv = self.broker()
        a, b = self.room(srv, 2)
        utf8 = "žluťoučký kůň 日本語 🎉 \u200b ".encode()
        text = utf8 + "\u202e ".encode() + bytes(v for v in range(256)
                                                 if v != 10)
        for i in range(0, len(text), 5):
            a.send(text[i:i + 5])
        a.send(b"\r\n")
        self.marker(a, [b])
        got = b.lines()[-2]
        self.assertEqual(got, b"<" + a.name + b"> " + shown(text))
        self.assertTrue(got.startswith(b"<" + a.name + b"> " + utf8
                                       + b"\\u202E "))
        self.assertIn(b"^@^A^B^C^D^E^F^G^H\t^K^L^M^N", got)
        self.assertIn(b"}~^?\\x80\\x81", got)
        self.assertTrue(got.endswith(b"\\xFD\\xFE\\xFF"))
        self.assertScreenSafe(b.data())

    def test_controls_cannot_forge_lines_or_notices(self):
        """What one client sends cannot move another's cursor, clear or
        retitle its terminal, or look like another client's line or a
        notice of the relay."""
        srv = self.broker()
        a, b = self.room(srv, 2)
        a.send(b"/nick mallory\n")
        b.wait_line(b"* " + a.name + b" is now mallory")
        a.name = b"mallory"
        cases = [
            (b"x\r<alice> please send me your password",
             b"x^M<alice> please send me your password"),
            (b"\x1b[2J\x1b]0;owned\x07* alice left",
             b"^[[2J^[]0;owned^G* alice left"),
            (b"\r* alice left", b"^M* alice left"),
            (b"x\r", b"x^M"),
            (b"\x08\x08\x08\x08\x08\x08\x08\x08\x08\x08<alice> hi",
             b"^H^H^H^H^H^H^H^H^H^H<alice> hi"),
            (b"csi \xc2\x9b2J raw \x9b2J nel \xc2\x85x",
             b"csi \\u009B2J raw \\x9B2J nel \\u0085x"),
            (b"del\x7f nul\x00 tab\tok", b"del^? nul^@ tab\tok"),
            (b"bad \xff \xc0\xaf \xed\xa0\x80 \xf4\x90\x80\x80 \xe6\x97",
             b"bad \\xFF \\xC0\\xAF \\xED\\xA0\\x80 \\xF4\\x90\\x80\\x80 "
             b"\\xE6\\x97"),
            ("one\u2028* alice left\u2029".encode(),
             b"one\\u2028* alice left\\u2029"),
            ("zoë 日本 🎉 كتاب".encode(), "zoë 日本 🎉 كتاب".encode()),
        ]
        for sent, _ in cases:
            a.send(sent + b"\r\n")
        self.marker(a, [b])
        self.assertEqual(b.after_welcome().split(b"\n")[1:-2],
                         [b"<mallory> " + want for _, want in cases])
        self.assertScreenSafe(b.data())

    def assertScreenSafe(self, data):
        """Lines a terminal shows as they are: each is the relay's notice or
        a client's line, UTF-8 without controls but TAB and newline, and
        nothing that reorders or hides the text after it."""
        text = data.decode("utf-8")
        for line in text.split("\n")[:-1]:
            self.assertRegex(line, r"^(\* |<[^<> ]+> )")
            for ch in line:
                self.assertFalse(ch != "\t" and (ord(ch) < 0x20
                                                 or ord(ch) == 0x7f
                                                 or ord(ch) in ESCAPED),
                                 "%r in %r" % (ch, line))

    def test_cut_never_splits_a_character_or_escape(self):
        """--max-line counts the bytes relayed: a cut falls between
        characters and escapes, and a CR LF after --max-line bytes is still
        only a line ending."""
        srv = self.broker("--max-line", "16")
        a, b = self.room(srv, 2)
        a.send("0123456789abcde日\n".encode())
        a.send(b"\x1b" * 10 + b"\n")
        a.send("é".encode() * 9 + b"\n")
        a.send(b"0123456789abcdef\r\n")
        a.send(b"\xff" * 5 + b"\n")
        self.marker(a, [b], b"end")
        p = b"<" + a.name + b"> "
        self.assertEqual(b.after_welcome(),
                         p + b"0123456789abcde\n" + p + b"^[" * 8 + b"\n"
                         + p + "é".encode() * 8 + b"\n"
                         + p + b"0123456789abcdef\n"
                         + p + b"\\xFF" * 4 + b"\n" + p + b"end\n")
        a.wait(lambda d: d.count(b"* line cut") >= 4 and d.endswith(b"\n"),
               what="4 cuts")
        self.assertEqual(a.after_welcome().split(b"\n", 1)[1],
                         b"* line cut at 15 bytes\n* line cut at 8 bytes\n"
                         b"* line cut at 16 bytes\n* line cut at 4 bytes\n")
        self.stop(srv, [a, b])

    # --- names ---

    def test_nick_lookalikes_refused(self):
        """Names are judged by what they show: nothing invisible, no
        mark first or stacked, no scripts mixed, no styled ASCII, and no
        name that differs from another's or from a userN only in ASCII
        case."""
        srv = self.broker()
        a, b = self.room(srv, 2)
        b.send(b"/nick alice\n")
        a.wait_line(b"* " + b.name + b" is now alice")
        inv = b"no spaces, controls or invisible characters"
        cases = [
            ("user32\u200b", inv),
            ("alice\u00ad", inv),
            ("a\u00a0b", inv),
            ("\u3000x", inv),
            ("x\ufeff", inv),
            ("\u2800", inv),
            ("\u202eecila", inv),
            ("x\u2066y", inv),
            ("a\u034fb", inv),
            ("\u3164", inv),
            ("\U000e0041bc", inv),
            ("\ue000", inv),
            ("\u0301", b"combining accents: use the accented letter"),
            ("e\u0301", b"combining accents: use the accented letter"),
            ("\u0e49", b"it starts with a combining mark"),
            ("\u0e01\u0e49\u0e49", b"too many combining marks"),
            ("\u0430lice", b"letters of scripts that do not mix"),
            ("p\u03b1ypal", b"letters of scripts that do not mix"),
            ("\uff41\uff4c\uff49\uff43\uff45",
             b"fullwidth or mathematical letters: use plain ones"),
            ("\U0001d41a\U0001d425",
             b"fullwidth or mathematical letters: use plain ones"),
        ]
        for name, _ in cases:
            a.send(b"/nick " + name.encode() + b"\r\n")
        for name in (b"ALICE", b"Alice", b"User7", b"USER12"):
            a.send(b"/nick " + name + b"\r\n")
        a.send(b"/nick\r\n/nick \r\n")
        good = ["\u0e01\u0e49", "\u0391\u03b8\u03b7\u03bd\u03ac",
                "\u0410\u043b\u0438\u0441\u0430", "zo\u00eb", "\u00c9mile"]
        for name in good:
            a.send(("/nick %s\r\n" % name).encode())
        a.name = good[-1].encode()
        self.marker(a, [b], b"end")
        want = b"".join(b"* bad name: " + why + b"\n" for _, why in cases)
        want += b"".join(b"* name taken: " + n + b"\n"
                         for n in (b"ALICE", b"Alice"))
        want += b"".join(b"* name reserved: " + n + b" (the relay names "
                         b"newcomers userN)\n" for n in (b"User7", b"USER12"))
        want += b"* usage: /nick NAME\n" * 2
        want += b"".join(b"* you are now " + n.encode() + b"\n" for n in good)
        a.wait_line(b"* you are now " + good[-1].encode())
        self.assertEqual(a.after_welcome().split(b"\n", 2)[2], want)
        self.assertEqual(b.after_welcome().count(b"<"), 1)  # the marker
        self.stop(srv, [a, b])

    def test_nick_confusables_refused(self):
        """UTS #39: no name that looks like another client's (its
        confusable skeleton, in any ASCII case) or like a userN, and none
        made of what only imitates other characters (compatibility forms,
        letters for technical use, an invisible filler), not in NFC, or
        with Latin mixed with another script. /who never lists two names
        alike."""
        srv = self.broker()
        a, b = self.room(srv, 2)
        nfc = b"not in Unicode normalization form C (NFC)"
        limit = b"characters not recommended in names (UTS #39)"
        mix = b"letters of scripts that do not mix"
        looks = None  # "* name taken: NAME looks like A'S NAME"
        cases = [
            ("Kim", [("\u212aim", nfc)]),
            ("Asa\u00c5", [("Asa\u212b", nfc)]),
            ("\uac00", [("\u1100\u1161", nfc)]),
            ("\u304c", [("\u304b\u3099", nfc)]),
            ("cope", [("\u0441\u043e\u0440\u0435", looks)]),
            ("\u0441\u043e\u0440\u0435", [("cope", looks), ("COPE", looks)]),
            ("ABE", [("\u0391\u0392\u0395", looks)]),
            ("abe", [("\u0391\u0392\u0395", looks)]),
            ("alice", [("\u0251lice", limit), ("a\u01c0ice", limit),
                       ("a\u217cice", limit), ("a1ice", looks),
                       ("aIice", looks), ("AL1CE", looks)]),
            ("fiona", [("\ufb01ona", limit)]),
            ("Dzemal", [("\u01c5emal", limit)]),
            ("bob", [("b\u0585b", mix), ("b0b", looks)]),
            ("x", [("x\U00016fe4", limit), ("X", None)]),
            ("mary", [("rnary", looks), ("RNARY", looks)]),
            ("Ivan", [("lvan", looks), ("1van", looks)]),
        ]
        want_a, want_b = b"", b""
        old = a.name
        for first, seconds in cases:
            first = first.encode()
            a.send(b"/nick " + first + b"\n")
            want_a += b"* you are now " + first + b"\n"
            want_b += b"* " + old + b" is now " + first + b"\n"
            b.wait(lambda d, w=want_b: d.endswith(w), what=repr(want_b[-60:]))
            old = first
            for second, why in seconds:
                second = second.encode()
                if second.lower() == first.lower():
                    line = b"* name taken: " + second
                elif why is None:
                    line = (b"* name taken: " + second + b" looks like "
                            + first)
                else:
                    line = b"* bad name: " + why
                b.send(b"/nick " + second + b"\n")
                want_b += line + b"\n"
                b.wait(lambda d, w=want_b: d.endswith(w), what=repr(line))
        reserved = ["userl", "USER1O", "UsErI2", "u\u0455er1", "user"]
        for name in reserved[:3]:
            want_b += (b"* name reserved: " + name.encode()
                       + b" (the relay names newcomers userN)\n")
        want_b += b"* bad name: " + mix + b"\n"
        want_b += b"* you are now user\n"
        for name in reserved:
            b.send(b"/nick " + name.encode() + b"\n")
        b.send(b"/who\n")
        want_b += b"* 2 here: Ivan user\n"
        b.wait_line(b"* 2 here: Ivan user")
        self.assertEqual(b.after_welcome(), want_b)
        a.wait_line(b"* " + b.name + b" is now user")
        self.assertEqual(a.after_welcome().split(b"\n", 1)[1],
                         want_a + b"* " + b.name + b" is now user\n")
        self.stop(srv, [a, b])

    def test_bidi_controls_escaped_everywhere(self):
        """What reorders or hides the text after it reaches no terminal:
        the Bidi_Control characters, the deprecated format characters and
        interlinear annotation are escaped in lines, in /quit messages and
        in an unknown command quoted back; right-to-left text, ZWJ emoji,
        ZWNJ, tag sequences and zero width spaces pass as they are."""
        srv = self.broker()
        a, b, c = self.room(srv, 3)
        cases = [
            ("x\u202eevil", b"x\\u202Eevil"),
            ("\u2066iso\u2069 x", b"\\u2066iso\\u2069 x"),
            ("\u200fmark\u200e", b"\\u200Fmark\\u200E"),
            ("\u061cALM", b"\\u061CALM"),
            ("\u202a\u202b\u202c\u202d\u2067\u2068",
             b"\\u202A\\u202B\\u202C\\u202D\\u2067\\u2068"),
            ("\u206a\u206e123\u206f", b"\\u206A\\u206E123\\u206F"),
            ("\ufff9seen\ufffahidden\ufffb", b"\\uFFF9seen\\uFFFAhidden\\uFFFB"),
        ]
        untouched = [
            "\u05e9\u05dc\u05d5\u05dd \u05e2\u05d5\u05dc\u05dd",
            "\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627"
            "\u0644\u0645 123",
            "\U0001f469\u200d\U0001f4bb \U0001f468\u200d\U0001f469\u200d"
            "\U0001f467 \U0001f3f3\ufe0f\u200d\U0001f308",
            "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645",
            "\U0001f3f4\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074"
            "\U000e007f",
            "a\u200bb\u2060c",
        ]
        cases += [(t, t.encode()) for t in untouched]
        for sent, _ in cases:
            a.send(sent.encode() + b"\n")
        self.marker(a, [b, c])
        for o in (b, c):
            self.assertEqual([l for l in o.lines() if l.startswith(b"<")],
                             [b"<" + a.name + b"> " + want
                              for _, want in cases + [("", b"marker")]])
        a.send("/\u202ex\n".encode())
        a.wait_line(b"* unknown command /\\u202Ex; /help lists them")
        a.send("/quit \u202egnikaerb\u2069 \u05e9\u05dc\u05d5\u05dd\n"
               .encode())
        a.wait_eof()
        for o in (b, c):
            o.wait_line(b"* " + a.name + b" left: \\u202Egnikaerb\\u2069 "
                        + "\u05e9\u05dc\u05d5\u05dd".encode())
            self.assertScreenSafe(o.data())
        self.stop(srv, [b, c])

    # --- commands ---

    def test_commands_who_help_quit(self):
        """/who and /help answer the sender alone; an unknown command is an
        error to the sender; //TEXT is the line /TEXT; /quit leaves with a
        notice, and what follows it is discarded without a reset."""
        srv = self.broker()
        a, b, c = self.room(srv, 3)
        a.send(b"/nick alice\n")
        b.wait_line(b"* " + a.name + b" is now alice")
        c.wait_line(b"* " + a.name + b" is now alice")
        a.name = b"alice"
        a.send(b"/who\r\n/help\n/WHO\n/who me\n/bogus x y\n/\x1b[2J\n/\n"
               b"//etc/passwd is a path\n")
        self.marker(a, [b, c], b"end")
        here = b"* 3 here: alice " + b.name + b" " + c.name + b"\n"
        a.wait(lambda d: d.count(b"here:") >= 2, what="two /who")
        a.wait_line(b"* unknown command /; /help lists them")
        self.assertEqual(
            a.after_welcome().split(b"\n", 3)[3],
            here + b"* commands: /nick NAME, /who, /quit [MESSAGE], /help; "
            b"//TEXT sends /TEXT\n" + here + b"* usage: /who\n"
            b"* unknown command /bogus; /help lists them\n"
            b"* unknown command /^[[2J; /help lists them\n"
            b"* unknown command /; /help lists them\n")
        for o in (b, c):
            self.assertEqual(o.after_welcome().split(b"\n")[-3:],
                             [b"<alice> /etc/passwd is a path",
                              b"<alice> end", b""])
        c.send(b"/quit see \x1b[2Jyou\r\nnot relayed\n" + b"z" * 60000)
        c.wait_eof()
        self.assertIsNone(c.error)
        self.assertTrue(c.data().endswith(b"* bye\n"), c.data()[-200:])
        b.send(b"/quit\n")
        b.wait_eof()
        self.assertIsNone(b.error)
        a.wait_line(b"* " + b.name + b" left")
        a.send(b"/who\n")
        a.wait_line(b"* 1 here: alice")
        self.assertEqual(a.data().split(b"/; /help lists them\n")[-1],
                         b"* " + c.name + b" left: see ^[[2Jyou\n"
                         b"* " + b.name + b" left\n* 1 here: alice\n")
        srv.wait_line(r"event=leave name=%s .*reason=quit " % c.name.decode())
        self.stop(srv, [a])

    # --- closing ---

    def silent(self, srv, watchers, **kw):
        """A client that reads nothing until start(); its name is the one
        the watchers see join."""
        before = [w.data().count(b" joined\n") for w in watchers]
        s = self.client(srv, read=False, **kw)
        for w, k in zip(watchers, before):
            w.wait(lambda d, k=k: d.count(b" joined\n") > k, what="a join")
        s.name = re.findall(rb"\* (user\d+) joined\n", watchers[0].data())[-1]
        return s

    def test_half_closed_client_gets_everything_owed(self):
        """A client that stops sending still gets every line it is owed,
        then the relay closes."""
        srv = self.broker("--max-pending", "64M")
        a, c = self.room(srv, 2)
        b = self.silent(srv, [a, c], rcvbuf=4096)
        lines = [(b"%04d " % i) + b"x" * 1018 for i in range(6000)]
        a.send(b"".join(l + b"\n" for l in lines))
        self.marker(a, [c], b"done")
        b.send(b"bye from b\n")
        b.sock.shutdown(socket.SHUT_WR)
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
        self.stop(srv, [a, c])

    def test_dropped_client_told_and_closed_cleanly(self):
        """A client dropped for not reading gets the end of the line it was
        in, a notice, and a clean close, though it sent more meanwhile."""
        srv = self.broker("--max-pending", "64K", "--max-line", "1K")
        a, c = self.room(srv, 2)
        s = self.silent(srv, [a, c], rcvbuf=4096)
        dropped = b"* " + s.name + b" dropped: not reading"
        line = b"f" * 993
        n = 0
        while n < 20000 and dropped not in c.data():
            a.send((line + b"\n") * 64)
            n += 64
            c.wait(lambda d, n=n: d.count(b"> f") >= n, 20,
                   "%d lines" % n)
        c.wait_line(dropped)
        s.send(b"late words\n" * 1000)
        s.start()
        s.wait_eof()
        self.assertIsNone(s.error)
        got = s.after_welcome().split(b"\n")
        self.assertEqual(got[-2:], [b"* you were dropped: not reading", b""])
        self.assertEqual(set(got[:-2]), {b"<" + a.name + b"> " + line})
        srv.wait_line(r"event=drop name=%s .*reason=not_reading "
                      % s.name.decode())
        self.stop(srv, [a, c])

    def test_sigterm_sends_what_is_owed(self):
        """On SIGTERM every client gets what it is owed and a notice, then
        a clean close, and the relay dies of the signal (a shell reads 143)."""
        srv = self.broker("--max-pending", "64M")
        a, c = self.room(srv, 2)
        r = self.silent(srv, [a, c])
        lines = [(b"%04d " % i) + b"y" * 1018 for i in range(3000)]
        a.send(b"".join(l + b"\n" for l in lines))
        self.marker(a, [c], b"done")
        srv.signal(signal.SIGTERM)
        time.sleep(0.2)
        try:
            r.send(b"unread\n" * 1000)
        except OSError as e:
            self.fail("the relay closed at once: %s" % e)
        r.start()
        self.assertExits(srv, -signal.SIGTERM)
        r.wait_eof()
        self.assertIsNone(r.error)
        p = b"<" + a.name + b"> "
        bye = b"* the relay is shutting down\n"
        self.assertEqual(r.after_welcome(),
                         b"".join(p + l + b"\n" for l in lines)
                         + p + b"done\n" + bye)
        for o in (a, c):
            o.wait_eof()
            self.assertTrue(o.data().endswith(bye))

    def test_second_signal_exits_at_once(self):
        """SIGTERM waits for a client that does not read, up to the linger
        bound; a second signal ends the wait."""
        srv = self.broker()
        a, c = self.room(srv, 2)
        self.silent(srv, [a, c], rcvbuf=4096)
        a.send((b"w" * 1000 + b"\n") * 500)
        self.marker(a, [c])
        srv.signal(signal.SIGTERM)
        for o in (a, c):
            o.wait_eof()
        time.sleep(0.5)
        self.assertIsNone(srv.p.poll(), "exited without waiting")
        t = time.monotonic()
        srv.signal(signal.SIGINT)
        self.assertExits(srv, -signal.SIGTERM)
        self.assertLess(time.monotonic() - t, 1.0)

    def test_out_of_descriptors_said_once(self):
        """accept(2) out of descriptors: the relay pauses accepting, says so
        once, and when a client gets in, how long and how many waited."""
        srv = self.broker()
        self.client(srv)
        time.sleep(0.2)
        with fltest.out_of_descriptors(srv.pid):
            c = Client(srv.port)
            self.clients.append(c)
            srv.wait_line(r"accept: Too many open files; pausing accepts",
                          timeout=5)
            time.sleep(1.5)
            with srv.cond:
                n = sum(1 for l in srv.lines if l is not None and
                        ("pausing" in l or "Too many open files" in l))
            self.assertEqual(n, 1, srv.stderr_text())
        c.welcome()
        m = srv.wait_line(r"accepting again after (\d+\.\d) s; (\d+) "
                          r"attempts waited")[-1]
        self.assertGreaterEqual(float(m.group(1)), 1.4)
        self.assertGreaterEqual(int(m.group(2)), 10)
        self.stop(srv, self.clients)

    def test_accept_burst_yields_to_signals(self):
        """Connections queued while the relay was stopped, and SIGTERM: one
        wake-up takes a bounded burst of them, then the signal; the rest
        are never let in."""
        srv = self.broker()
        n = 100
        cs = []
        srv.signal(signal.SIGSTOP)
        try:
            self.assertTrue(wait_until(
                lambda: fltest.proc_state(srv.pid) == "T", 5))
            for _ in range(n):
                c = Client(srv.port)
                self.clients.append(c)
                cs.append(c)
            srv.signal(signal.SIGTERM)
        finally:
            srv.signal(signal.SIGCONT)
        self.assertExits(srv, -signal.SIGTERM)
        deadline = time.monotonic() + 10
        for c in cs:
            c.t.join(max(0.1, deadline - time.monotonic()))
        let_in = sum(1 for c in cs if b"* you are " in c.data())
        self.assertLess(let_in, 32, "%d of %d queued clients let in before "
                        "the signal's turn" % (let_in, n))

    def test_commands_read_whole_with_small_max_line(self):
        """--max-line cuts what is relayed, not the commands."""
        srv = self.broker("--max-line", "4", "--max-pending", "132")
        a, b = self.room(srv, 2)
        a.send(b"/nick alice\n/who\n/quit " + b"m" * 200 + b"\n")
        a.wait_eof()
        self.assertEqual(a.after_welcome(),
                         b"* " + b.name + b" joined\n* you are now alice\n"
                         b"* 2 here: alice " + b.name + b"\n* bye\n")
        b.wait_line(b"* alice left: mmmm")
        self.stop(srv, [b])

    def test_keepalive_on_every_client(self):
        """--keepalive SECONDS turns TCP keepalive on for the relay's side of
        every connection (ss shows its timer); without it, nothing does."""
        for args in (["--keepalive", "30"], []):
            srv = self.broker(*args)
            self.room(srv, 2)
            out = subprocess.run(
                ["ss", "-tnoH", "state", "established",
                 "( sport = :%d )" % srv.port],
                capture_output=True, text=True, timeout=10, check=True).stdout
            rows = [l for l in out.splitlines() if l.strip()]
            self.assertEqual(len(rows), 2, out)
            for row in rows:
                m = re.search(r"timer:\(keepalive,(\d+)sec,0\)", row)
                if args:
                    self.assertIsNotNone(m, row)
                    self.assertTrue(20 <= int(m.group(1)) <= 30, row)
                else:
                    self.assertNotIn("keepalive", row)
            self.stop(srv, self.clients[-2:])

    # --- the process ---

    def test_sigterm_and_sigint_close_everything(self):
        # The relay dies of the signal, so a shell reads 143 or 130 and
        # stops a loop that runs it.
        for sig, code in ((signal.SIGTERM, -signal.SIGTERM),
                          (signal.SIGINT, -signal.SIGINT)):
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
