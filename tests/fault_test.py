"""forkloop-echo under injected system-call faults.

The server, and only the server, runs with the fault-injection library
(tests/fault/fault.c, FORKLOOP_FAULT_LIB) preloaded and a schedule in
FORKLOOP_FAULT; the library logs each fault it makes to a file, so a test
knows how many there were. Under every schedule each test asserts:

- every byte is echoed exactly once and in order on the connections that
  survive (several at once, random payloads from 1 byte to a few MB);
- a connection the server refuses or gives up is closed (EOF or reset seen
  within a deadline), never left hanging, and carries no byte it was not
  sent;
- no busy loop: the server's CPU time (its children's too in fork mode)
  over a 2 s idle window is small;
- no leak: the server's open descriptors are back to their count before
  the first connection; in fork mode every child has ended and been
  reaped (no zombie);
- SIGTERM ends it with exit status 0.

meson runs each scenario once per mode (FORKLOOP_MODE, FORKLOOP_THREADS).
The relay, the chat endpoint, forkloop-bench (there the client is the one
with the library) and the metrics port have scenarios of their own, run
once, each asserting that nothing waits for good.
"""

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fltest  # noqa: E402
from fltest import Server, wait_until  # noqa: E402

MODE = fltest.mode()
THREADS = os.environ.get("FORKLOOP_THREADS")
MIB = 1024 * 1024
# Payloads of one round of connections: small, a few reads' worth, and
# a few MB, which fills every buffer on the way and back.
SIZES = [1, 700, 65536 + 3, 300000, 3 * MIB + 17]
IDLE_WINDOW = 2.0
IDLE_CPU_MAX = 0.3
DEADLINE = 30.0
CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_cpu(pid, with_children):
    """utime+stime of pid in seconds; with cutime+cstime (children it
    reaped) if with_children."""
    with open("/proc/%d/stat" % pid) as f:
        stat = f.read()
    fields = stat[stat.rindex(")") + 2:].split()
    ticks = int(fields[11]) + int(fields[12])
    if with_children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / CLK_TCK


def server_cpu(pid):
    """The server's CPU time: in fork mode its children's too, the reaped
    ones and those still running."""
    total = proc_cpu(pid, MODE == "fork")
    if MODE == "fork":
        for child, _ in fltest.children(pid):
            try:
                total += proc_cpu(child, False)
            except OSError:
                pass
    return total


class Result:
    """What one client connection saw."""

    def __init__(self, data):
        self.data = data
        self.got = b""
        self.closed = False  # EOF or reset seen
        self.error = None

    @property
    def exact(self):
        return self.closed and self.got == self.data

    @property
    def refused(self):
        """Closed by the server with nothing echoed."""
        return self.closed and self.got == b"" and self.data != b""


def exchange(host, port, data, result):
    """Send data and half-close while reading until EOF or reset."""
    try:
        s = socket.create_connection((host, port), timeout=DEADLINE)
    except ConnectionResetError:
        # Reset between the handshake and connect's return: refused.
        result.closed = True
        return
    except OSError as e:
        result.error = e
        return
    s.settimeout(DEADLINE)

    def send():
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # reset: the reader sees it too

    t = threading.Thread(target=send, daemon=True)
    t.start()
    chunks = []
    try:
        while True:
            b = s.recv(1 << 20)
            if not b:
                result.closed = True
                break
            chunks.append(b)
    except (ConnectionResetError, BrokenPipeError):
        result.closed = True
    except OSError as e:  # a timeout: the connection hangs
        result.error = e
    result.got = b"".join(chunks)
    t.join(DEADLINE)
    s.close()


class FaultTest(fltest.ProcTestCase):

    def setUp(self):
        super().setUp()
        self.seed = random.randrange(1 << 32)
        self.rng = random.Random(self.seed)
        self.dir = tempfile.mkdtemp(prefix="forkloop-fault-")
        self.log = os.path.join(self.dir, "faults")

    def tearDown(self):
        super().tearDown()
        shutil.rmtree(self.dir, ignore_errors=True)

    def preload(self, schedule):
        """The environment of a program run under schedule."""
        env = dict(os.environ)
        env["LD_PRELOAD"] = fltest.binary("fault_lib")
        env["FORKLOOP_FAULT"] = schedule
        env["FORKLOOP_FAULT_LOG"] = self.log
        # A sanitizer build's runtime would want to be loaded first.
        asan = env.get("ASAN_OPTIONS", "")
        env["ASAN_OPTIONS"] = (asan + ":" if asan else "") + \
            "verify_asan_link_order=0"
        return env

    def server(self, schedule, *opts, udp=False):
        """forkloop-echo, in this run's mode, with the library preloaded."""
        env = self.preload(schedule)
        argv = [fltest.binary("echo"), "--listen", "127.0.0.1:0",
                "--mode", MODE] + list(opts)
        if THREADS:
            argv += ["--threads", THREADS]
        if udp:
            argv += ["--udp", "--udp-rate", "100000"]
        srv = self.start(Server, argv, env=env)
        srv.baseline = wait_until(lambda: fltest.fd_count(srv.pid), 5)
        return srv

    def faults(self, fn, fault):
        """How many faults the library made in fn (a function) so far."""
        try:
            with open(self.log) as f:
                lines = f.read().splitlines()
        except FileNotFoundError:
            return 0
        return sum(1 for l in lines if l.split()[1:] == [fn, fault])

    def msg(self, srv, what):
        return "%s (seed %d); stderr:\n%s" % (what, self.seed,
                                              srv.stderr_text())

    def transfer(self, srv, sizes=SIZES, may_refuse=False, may_cut=False):
        """One connection per size, all at once. Every one must end within
        the deadline; each must get its exact echo, or, where allowed,
        be refused (closed with nothing echoed) or cut (closed after a
        prefix of its echo). Returns the results."""
        results = [Result(self.rng.randbytes(n)) for n in sizes]
        threads = [threading.Thread(target=exchange,
                                    args=(srv.host, srv.port, r.data, r))
                   for r in results]
        for t in threads:
            t.start()
        for t in threads:
            t.join(DEADLINE * 2)
        for i, r in enumerate(results):
            what = "connection %d (%d bytes)" % (i, len(r.data))
            self.assertIsNone(r.error, self.msg(srv, what + " hung or failed"))
            self.assertTrue(r.closed, self.msg(srv, what + " not closed"))
            if r.exact:
                continue
            if may_refuse and r.refused:
                continue
            self.assertTrue(may_cut and r.data.startswith(r.got),
                            self.msg(srv, "%s: %d bytes echoed, not its own"
                                     % (what, len(r.got))))
        return results

    def probe(self, srv, n=1000):
        """One connection, then the next: a Result each."""
        r = Result(self.rng.randbytes(n))
        exchange(srv.host, srv.port, r.data, r)
        self.assertIsNone(r.error, self.msg(srv, "probe hung or failed"))
        self.assertTrue(r.exact or r.refused,
                        self.msg(srv, "probe neither echoed nor refused"))
        return r

    def assertIdle(self, srv):
        """No busy loop: little CPU over an idle window."""
        before = server_cpu(srv.pid)
        time.sleep(IDLE_WINDOW)
        used = server_cpu(srv.pid) - before
        self.assertLess(used, IDLE_CPU_MAX,
                        self.msg(srv, "%.2f s of CPU in %.0f s idle"
                                 % (used, IDLE_WINDOW)))

    def assertSettled(self, srv):
        """After every client closed: descriptors back to the baseline,
        no zombies, not spinning; then SIGTERM ends it with status 0."""
        ok = wait_until(lambda: fltest.fd_count(srv.pid) == srv.baseline, 10)
        self.assertTrue(ok, self.msg(srv, "%d descriptors open, %d before"
                                     % (fltest.fd_count(srv.pid),
                                        srv.baseline)))
        if MODE == "fork":
            # Every child has ended and been reaped: none serves on, no
            # zombie is left.
            wait_until(lambda: not fltest.children(srv.pid), 10)
            self.assertEqual(fltest.children(srv.pid), [],
                             self.msg(srv, "children left (pid, state)"))
        self.assertIdle(srv)
        srv.signal(signal.SIGTERM)
        self.assertEqual(srv.wait(15), 0,
                         self.msg(srv, "exit status after SIGTERM"))
        srv.t.join(5)
        self.assertGroupGone(srv)
        for bad in ("AddressSanitizer", "LeakSanitizer", "runtime error",
                    "ThreadSanitizer"):
            self.assertNotIn(bad, srv.stderr_text())

    # accept(2)

    def test_accept_emfile_pauses_without_spinning(self):
        # The first connection is served; then 25 accepts in a row fail,
        # with a second connection waiting in the backlog all along.
        srv = self.server("accept=EMFILE:after=1,count=25")
        self.assertTrue(self.probe(srv).exact)
        waiting = Result(self.rng.randbytes(5000))
        t = threading.Thread(target=exchange,
                             args=(srv.host, srv.port, waiting.data, waiting))
        start = time.monotonic()
        t.start()
        # Each failure pauses accepting for 100 ms: 2.4 s at least.
        time.sleep(0.2)
        before = server_cpu(srv.pid)
        time.sleep(1.5)
        used = server_cpu(srv.pid) - before
        self.assertLess(used, IDLE_CPU_MAX,
                        self.msg(srv, "%.2f s of CPU while accept failed"
                                 % used))
        t.join(DEADLINE)
        waited = time.monotonic() - start
        self.assertTrue(waiting.exact,
                        self.msg(srv, "the waiting connection was not served"))
        # Failures that did not pause would be spent at once, before the
        # CPU window above: the wait shows the pauses (a lower bound, which
        # a busy machine only lengthens).
        self.assertGreater(waited, 2.0,
                           self.msg(srv, "served after %.2f s: accept "
                                    "failures did not pause" % waited))
        self.assertEqual(self.faults("accept4", "EMFILE"), 25)
        self.transfer(srv)
        self.assertSettled(srv)

    def test_accept_enfile_every_other_call(self):
        srv = self.server("accept=ENFILE:every=2")
        for _ in range(3):
            self.assertTrue(self.probe(srv).exact)
        self.transfer(srv)
        self.assertGreater(self.faults("accept4", "ENFILE"), 0)
        self.assertSettled(srv)

    def test_accept_econnaborted_closes_the_connection(self):
        srv = self.server("accept=ECONNABORTED:every=3")
        probes = [self.probe(srv) for _ in range(9)]
        results = self.transfer(srv, may_refuse=True)
        refused = sum(r.refused for r in probes + results)
        self.assertGreater(refused, 0, self.msg(srv, "none refused"))
        self.assertGreater(sum(r.exact for r in probes), 0)
        # Each fault took one connection: each was seen closed.
        self.assertEqual(self.faults("accept4", "ECONNABORTED"), refused)
        self.assertSettled(srv)

    # fork(2), fork mode only

    def test_fork_eagain_closes_the_connection(self):
        srv = self.server("fork=EAGAIN:every=2")
        probes = [self.probe(srv) for _ in range(6)]
        results = self.transfer(srv, may_refuse=True)
        refused = sum(r.refused for r in probes + results)
        self.assertEqual([r.exact for r in probes],
                         [False, True] * 3, self.msg(srv, "probes"))
        self.assertEqual(self.faults("fork", "EAGAIN"), refused)
        self.assertSettled(srv)

    # read and write on the connections

    def _io(self, schedule, fn_faults):
        srv = self.server(schedule)
        self.transfer(srv)
        self.transfer(srv, [self.rng.randrange(1, 200000) for _ in range(6)])
        made = sum(self.faults(fn, f) for fn, f in fn_faults)
        self.assertGreater(made, 0, self.msg(srv, "no fault made"))
        self.assertSettled(srv)

    def test_read_eintr(self):
        self._io("read=EINTR:every=2",
                 [("read", "EINTR"), ("readv", "EINTR")])

    def test_read_short(self):
        self._io("read=short:every=2",
                 [("read", "short"), ("readv", "short")])

    def test_write_eintr(self):
        self._io("write=EINTR:every=2",
                 [("write", "EINTR"), ("writev", "EINTR")])

    def test_write_short(self):
        self._io("write=short:every=2",
                 [("write", "short"), ("writev", "short")])

    # UDP: recvmmsg and sendmsg

    def _udp(self, schedule, fn_faults):
        srv = self.server(schedule, udp=True)
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.settimeout(5)
        try:
            for burst in range(5):
                sent = [self.rng.randbytes(self.rng.randrange(1, 2000))
                        for _ in range(12)]
                for d in sent:
                    u.sendto(d, (srv.host, srv.port))
                got = []
                for _ in sent:
                    try:
                        got.append(u.recv(65536))
                    except socket.timeout:
                        break
                self.assertEqual(len(got), len(sent),
                                 self.msg(srv, "burst %d: datagrams lost"
                                          % burst))
                self.assertEqual(sorted(got), sorted(sent),
                                 "burst %d (seed %d)" % (burst, self.seed))
        finally:
            u.close()
        self.transfer(srv, SIZES[:3])
        made = sum(self.faults(fn, f) for fn, f in fn_faults)
        self.assertGreater(made, 0, self.msg(srv, "no fault made"))
        self.assertSettled(srv)

    def test_udp_eintr(self):
        self._udp("read=EINTR:every=3;write=EINTR:every=2",
                  [("recvmmsg", "EINTR"), ("sendmsg", "EINTR")])

    def test_udp_one_datagram_per_receive(self):
        self._udp("read=short:every=2", [("recvmmsg", "short")])

    # epoll_ctl(2): EPOLL_CTL_ADD after the first connection

    def test_epoll_ctl_enomem(self):
        # Every other registration fails: a connection's (event mode), and
        # the listeners' when accepting resumes after an EMFILE pause.
        srv = self.server("epoll_ctl=ENOMEM:from=accept,every=2;"
                          "accept=EMFILE:every=4")
        probes = [self.probe(srv) for _ in range(6)]
        results = self.transfer(srv, may_refuse=True, may_cut=True)
        self.assertGreater(self.faults("epoll_ctl", "ENOMEM"), 0,
                           self.msg(srv, "no fault made"))
        served = sum(r.exact for r in probes + results)
        if MODE == "fork":
            # Only the parent registers anything: every one is served.
            self.assertEqual(served, len(probes + results))
        else:
            self.assertGreater(served, 0)
            self.assertGreater(len(probes + results) - served, 0)
        self.assertSettled(srv)

    def test_epoll_ctl_enomem_once_anywhere(self):
        # One accept fails (EMFILE), so accepting pauses and resumes; one
        # registration fails, the first, second, ... after the first
        # connection: a connection's, or the listeners' on resuming.
        for after in range(4):
            open(self.log, "w").close()
            srv = self.server("accept=EMFILE:after=1,count=1;"
                              "epoll_ctl=ENOMEM:from=accept,after=%d,count=1"
                              % after)
            probes = [self.probe(srv) for _ in range(4)]
            self.assertGreaterEqual(sum(r.exact for r in probes), 3,
                                    self.msg(srv, "after=%d" % after))
            ok = wait_until(lambda: fltest.fd_count(srv.pid) ==
                            srv.baseline, 10)
            self.assertTrue(ok, self.msg(srv, "descriptors left open"))
            if after < 3:
                srv.signal(signal.SIGTERM)
                self.assertEqual(srv.wait(15), 0, srv.stderr_text())
                srv.t.join(5)
                self.assertGroupGone(srv)
        self.assertSettled(srv)

    # libevent's allocations (event mode: fork mode's children never
    # touch libevent)

    def test_alloc_enomem_closes_only_its_connection(self):
        srv = self.server("alloc=ENOMEM:from=accept,after=20,every=25,"
                          "count=4")
        made = lambda: (self.faults("malloc", "ENOMEM") +
                        self.faults("realloc", "ENOMEM"))
        for _ in range(10):
            self.transfer(srv, may_refuse=True, may_cut=True)
            if made() == 4:
                break
        self.assertEqual(made(), 4, self.msg(srv, "faults made"))
        # The faults are spent: everything is served again.
        self.transfer(srv)
        self.assertSettled(srv)

    def test_alloc_enomem_once_keeps_accepting(self):
        # One allocation fails, wherever it falls after the first accept
        # (with a burst of accepts: the timer that turns the listeners on
        # again); every connection after it is still served.
        srv = self.server("alloc=ENOMEM:from=accept,count=1")
        made = lambda: (self.faults("malloc", "ENOMEM") +
                        self.faults("realloc", "ENOMEM"))
        for _ in range(40):
            self.probe(srv)
            if made() == 1:
                break
        self.assertEqual(made(), 1, self.msg(srv, "faults made"))
        for _ in range(2 * 16 + 4):  # past two bursts of accepts
            self.assertTrue(self.probe(srv).exact,
                            self.msg(srv, "a connection after the fault"))
        self.transfer(srv)
        self.assertSettled(srv)

    # socket(2): a listener that cannot be made

    def test_socket_enomem_is_a_start_error(self):
        env = self.preload("socket=ENOMEM:after=1")
        argv = [fltest.binary("echo"), "--mode", MODE,
                "--listen", "127.0.0.1:0", "--listen", "127.0.0.2:0"]
        if THREADS:
            argv += ["--threads", THREADS]
        p = self.start(fltest.Proc, argv, env=env)
        self.assertEqual(p.wait(15), 1, p.stderr_text())
        p.t.join(5)
        self.assertIn("Cannot allocate memory", p.stderr_text())
        self.assertEqual(self.faults("socket", "ENOMEM"), 1)
        for bad in ("AddressSanitizer", "LeakSanitizer", "runtime error"):
            self.assertNotIn(bad, p.stderr_text())
        self.assertGroupGone(p)

    # The relay (forkloop-chat --broker; run once, it has one design)

    def test_relay_listener_survives_epoll_ctl_enomem(self):
        # One accept fails (EMFILE), so accepting pauses and resumes; one
        # registration fails, the first, second, ... after the first
        # client: a client's, or the listener's when accepting resumes.
        # Each client must be welcomed or closed, none left hanging.
        for after in range(4):
            open(self.log, "w").close()
            env = self.preload("accept=EMFILE:after=1,count=1;"
                               "epoll_ctl=ENOMEM:from=accept,after=%d,"
                               "count=1" % after)
            srv = self.start(Server, [fltest.binary("chat"), "--broker",
                                      "--listen", "127.0.0.1:0"], env=env)
            baseline = fltest.fd_count(srv.pid)
            for i in range(4):
                s = socket.create_connection((srv.host, srv.port),
                                             timeout=10)
                s.settimeout(10)
                try:
                    s.recv(200)
                except ConnectionResetError:
                    pass
                except OSError as e:
                    self.fail(self.msg(srv, "after=%d: client %d hung: %s"
                                       % (after, i, e)))
                s.close()
            self.assertEqual(self.faults("epoll_ctl", "ENOMEM"), 1,
                             self.msg(srv, "after=%d" % after))
            ok = wait_until(lambda: fltest.fd_count(srv.pid) == baseline, 10)
            self.assertTrue(ok, self.msg(srv, "descriptors left open"))
            if after == 3:
                self.assertIdle(srv)
            # The relay dies of SIGTERM, as a shell expects.
            srv.signal(signal.SIGTERM)
            self.assertEqual(srv.wait(15), -signal.SIGTERM,
                             srv.stderr_text())
            srv.t.join(5)
            self.assertGroupGone(srv)

    def test_relay_closes_a_leaving_client_it_cannot_watch(self):
        # One registration fails, the first, second, ... after the first
        # client: when a client is welcomed, or when it leaves (/quit) and
        # its last lines go out, or its FIN is waited for. Each client is
        # closed, none left hanging; then everything works again.
        for after in range(6):
            open(self.log, "w").close()
            env = self.preload("epoll_ctl=ENOMEM:from=accept,after=%d,"
                               "count=1" % after)
            srv = self.start(Server, [fltest.binary("chat"), "--broker",
                                      "--listen", "127.0.0.1:0"], env=env)
            baseline = fltest.fd_count(srv.pid)
            for i in range(4):
                s = socket.create_connection((srv.host, srv.port),
                                             timeout=DEADLINE)
                try:
                    s.sendall(b"/quit\n")
                    got = fltest.recv_all(s, DEADLINE)
                except (ConnectionResetError, BrokenPipeError):
                    got = None
                except OSError as e:
                    self.fail(self.msg(srv, "after=%d: client %d hung: %s"
                                       % (after, i, e)))
                finally:
                    s.close()
                if i == 3:  # the fault is spent
                    self.assertIn(b"* bye\n", got, self.msg(srv, "last"))
            self.assertEqual(self.faults("epoll_ctl", "ENOMEM"), 1,
                             self.msg(srv, "after=%d" % after))
            ok = wait_until(lambda: fltest.fd_count(srv.pid) == baseline, 10)
            self.assertTrue(ok, self.msg(srv, "descriptors left open"))
            srv.signal(signal.SIGTERM)
            self.assertEqual(srv.wait(15), -signal.SIGTERM,
                             srv.stderr_text())
            srv.t.join(5)
            self.assertGroupGone(srv)
            for bad in ("AddressSanitizer", "LeakSanitizer",
                        "runtime error"):
                self.assertNotIn(bad, srv.stderr_text())

    # forkloop-chat's endpoint (event mode): stdin and stdout are pipes,
    # the peer a socket, each slow to read at first, so that every watch
    # is added again after backpressure.

    def _chat_session(self, schedule, n=1 << 20):
        """One session of forkloop-chat --listen under schedule: n bytes
        each way. Returns (exit status, what the peer got, what stdout
        got, sent to the peer, sent by the peer, the process)."""
        to_peer, from_peer = self.rng.randbytes(n), self.rng.randbytes(n)
        p = self.start(Server, [fltest.binary("chat"), "--mode", "event",
                                "--listen", "127.0.0.1:0"],
                       stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                       env=self.preload(schedule))
        out = []

        def feed():
            try:
                p.p.stdin.write(to_peer)
                p.p.stdin.close()
            except OSError:
                pass

        def drain():
            time.sleep(0.3)
            out.append(p.p.stdout.read())

        s = socket.create_connection((p.host, p.port), timeout=DEADLINE)

        def send():
            try:
                s.sendall(from_peer)
                s.shutdown(socket.SHUT_WR)
            except OSError:
                pass

        ts = [threading.Thread(target=f, daemon=True)
              for f in (feed, drain, send)]
        for t in ts:
            t.start()
        time.sleep(0.3)
        got = []
        try:
            s.settimeout(DEADLINE)
            while True:
                b = s.recv(1 << 20)
                if not b:
                    break
                got.append(b)
        except (ConnectionResetError, BrokenPipeError):
            pass
        except OSError as e:
            self.fail(self.msg(p, "the peer waited for good: %s" % e))
        try:
            status = p.wait(DEADLINE)
        except subprocess.TimeoutExpired:
            self.fail(self.msg(p, "forkloop-chat did not end"))
        s.close()
        for t in ts:
            t.join(DEADLINE)
        return (status, b"".join(got), out[0] if out else b"", to_peer,
                from_peer, p)

    def test_chat_ends_when_it_cannot_watch(self):
        # One registration fails, the first, second, ... after the peer
        # connected: the socket's, stdin's or stdout's, at set-up or when
        # one is watched again after backpressure. The session ends every
        # time: complete (0), or with an error saying why (1); never waits.
        statuses = []
        for after in range(10):
            open(self.log, "w").close()
            status, got, out, to_peer, from_peer, p = self._chat_session(
                "epoll_ctl=ENOMEM:from=accept,after=%d,count=1" % after)
            what = "after=%d" % after
            self.assertTrue(to_peer.startswith(got), self.msg(p, what))
            self.assertTrue(from_peer.startswith(out), self.msg(p, what))
            if status == 0:
                self.assertEqual((got, out), (to_peer, from_peer),
                                 self.msg(p, what + ": bytes lost"))
            else:
                self.assertEqual(status, 1, self.msg(p, what))
                self.assertRegex(p.stderr_text(),
                                 "cannot (watch|set up).*: Cannot allocate "
                                 "memory", self.msg(p, what))
            # A run may register fewer than after+1 times.
            made = self.faults("epoll_ctl", "ENOMEM")
            self.assertIn(made, (0, 1) if status == 0 else (1,),
                          self.msg(p, what))
            for bad in ("AddressSanitizer", "LeakSanitizer",
                        "runtime error"):
                self.assertNotIn(bad, p.stderr_text())
            statuses.append(status)
        # Both outcomes were seen: the faults reached the session.
        self.assertIn(0, statuses)
        self.assertIn(1, statuses)

    # forkloop-bench: a connection it cannot watch is an error, not a
    # silent stall

    def test_bench_counts_a_connection_it_cannot_watch(self):
        echo = self.start(Server, [fltest.binary("echo"), "--listen",
                                   "127.0.0.1:0"])
        # Past start-up (signal, timer and notice events): three of the
        # connections' registrations fail, each one connection's.
        env = self.preload("epoll_ctl=ENOMEM:after=20,every=10,count=3")
        p = self.start(fltest.Proc,
                       [fltest.binary("bench"), "--churn", "-c", "8",
                        "-d", "2", "--connect-timeout", "60", "--json",
                        "127.0.0.1:%d" % echo.port],
                       stdout=subprocess.PIPE, env=env)
        out = []
        t = threading.Thread(target=lambda: out.append(p.p.stdout.read()),
                             daemon=True)
        t.start()
        try:
            p.wait(DEADLINE)
        except subprocess.TimeoutExpired:
            self.fail(self.msg(p, "forkloop-bench did not end"))
        t.join(5)
        p.t.join(5)
        self.assertEqual(self.faults("epoll_ctl", "ENOMEM"), 3)
        r = json.loads(out[0])
        self.assertEqual(p.p.returncode, 1, self.msg(p, "exit status"))
        self.assertEqual(r["errors"], 3, self.msg(p, "errors"))
        self.assertEqual(r["error_kinds"]["connect"] +
                         r["error_kinds"]["reset"], 3, self.msg(p, "kinds"))
        self.assertGreater(r["messages"], 0, self.msg(p, "no echo"))
        self.assertIn("3 errors", p.stderr_text())
        for bad in ("AddressSanitizer", "LeakSanitizer", "runtime error"):
            self.assertNotIn(bad, p.stderr_text())

    # --metrics: the port accepts again after a pause it could not end

    def test_metrics_port_recovers_after_epoll_ctl_enomem(self):
        # The accept after the first scrape fails (EMFILE): accepting
        # pauses; the listener's registration when it resumes fails three
        # times in a row; it is retried, logged once, until it works.
        srv = self.server("accept=EMFILE:after=1,count=1;"
                          "epoll_ctl=ENOMEM:from=accept,after=2,count=3",
                          "--metrics", "127.0.0.1:0")
        m = srv.wait_line(r"metrics on http://127\.0\.0\.1:(\d+)/")
        port = int(m[0].group(1))
        for i in range(4):
            s = socket.create_connection(("127.0.0.1", port),
                                         timeout=DEADLINE)
            s.settimeout(DEADLINE)
            try:
                s.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
                reply = fltest.recv_all(s, DEADLINE)
            except OSError as e:
                self.fail(self.msg(srv, "scrape %d hung: %s" % (i, e)))
            finally:
                s.close()
            self.assertTrue(reply.startswith(b"HTTP/1.0 200 OK"),
                            self.msg(srv, "scrape %d: %r" % (i, reply[:40])))
            time.sleep(0.3)
        self.assertEqual(self.faults("accept4", "EMFILE"), 1)
        self.assertEqual(self.faults("epoll_ctl", "ENOMEM"), 3)
        self.assertEqual(srv.stderr_text().count(
            "metrics: cannot accept: Cannot allocate memory; retrying"), 1,
            self.msg(srv, "logged once"))
        srv.signal(signal.SIGTERM)
        self.assertEqual(srv.wait(15), 0, srv.stderr_text())
        srv.t.join(5)
        self.assertGroupGone(srv)
        for bad in ("AddressSanitizer", "LeakSanitizer", "runtime error"):
            self.assertNotIn(bad, srv.stderr_text())

if __name__ == "__main__":
    fltest.main()
