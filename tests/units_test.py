"""The example systemd units (dist/): hardened enough, limits that hold
together, and the programs of this build doing what each unit asks of them.

No service manager runs here, so each service is started as its .socket
would have systemd start it: systemd-socket-activate (Debian package
systemd) binds the unit's sockets (on 127.0.0.1 and a free port instead of
the unit's port) and execs the unit's ExecStart= command line, with the
program of this build, NOTIFY_SOCKET set and the unit's LimitNOFILE=
applied (prlimit, Debian package util-linux). The system calls test runs
the same command lines under strace (Debian package strace) and holds what
they call to the unit's SystemCallFilter=.

meson sets FORKLOOP_UNIT_DIRS (where the built .service files and the
.socket files are, colon-separated), FORKLOOP_ECHO and FORKLOOP_CHAT.
"""

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fltest  # noqa: E402
import unitfile  # noqa: E402
from fltest import Proc, wait_until  # noqa: E402

ACTIVATE = shutil.which("systemd-socket-activate")
PRLIMIT = shutil.which("prlimit")
STRACE = shutil.which("strace")
SERVICES = {"forkloop-echo.service": "echo", "forkloop-relay.service": "chat"}
# The option that caps connections, per service.
CONN_LIMIT = {"forkloop-echo.service": "--max-conns",
              "forkloop-relay.service": "--max-clients"}


def unit_path(name):
    dirs = os.environ.get("FORKLOOP_UNIT_DIRS")
    if not dirs:
        raise RuntimeError("FORKLOOP_UNIT_DIRS is not set (run through "
                           "meson test)")
    for d in dirs.split(":"):
        if os.path.exists(os.path.join(d, name)):
            return os.path.join(d, name)
    raise AssertionError("%s not found in %s" % (name, dirs))


def free_port():
    """A port free for both TCP and UDP on 127.0.0.1 just now."""
    for _ in range(50):
        t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            t.bind(("127.0.0.1", 0))
            port = t.getsockname()[1]
            u.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            t.close()
            u.close()
    raise AssertionError("no free port found")


def service_argv(name):
    """The service's ExecStart= with the program of this build."""
    argv = unitfile.exec_start(unitfile.parse(unit_path(name)))
    prog = os.path.basename(argv[0])
    want = "forkloop-" + SERVICES[name]
    if prog != want:
        raise AssertionError("%s runs %s, not %s" % (name, prog, want))
    return [fltest.binary(SERVICES[name])] + argv[1:]


def syscall_set(spec):
    """The system calls of a SystemCallFilter= list (names and @groups,
    nested groups expanded) as systemd-analyze syscall-filter lists them."""
    out = set()
    for item in spec.split():
        if not item.startswith("@"):
            out.add(item)
            continue
        p = subprocess.run([unitfile.analyze(), "syscall-filter", "--no-pager",
                            item], capture_output=True, text=True, timeout=30)
        if p.returncode != 0:
            raise AssertionError("systemd-analyze syscall-filter %s: %s"
                                 % (item, p.stderr))
        for line in p.stdout.splitlines()[1:]:
            line = line.strip()
            if line and not line.startswith("#"):
                out |= syscall_set(line) if line.startswith("@") else {line}
    return out


def allowed_syscalls(unit):
    """What SystemCallFilter= lets through: an allow list, then '~' lists
    taken out of it, in order."""
    allowed = None
    for spec in unitfile.values(unit, "Service", "SystemCallFilter"):
        if spec.startswith("~"):
            allowed -= syscall_set(spec[1:])
        else:
            allowed = syscall_set(spec) | (allowed or set())
    return allowed


class UnitsTest(fltest.ProcTestCase):

    def setUp(self):
        super().setUp()
        self.dir = tempfile.mkdtemp(prefix="forkloop-units-")
        self.socks = []

    def tearDown(self):
        for s in self.socks:
            s.close()
        super().tearDown()
        shutil.rmtree(self.dir, ignore_errors=True)

    def test_security_exposure_at_most_1_5(self):
        for name in SERVICES:
            level, rc, out = unitfile.security_exposure(unit_path(name))
            self.assertLessEqual(level, unitfile.EXPOSURE_MAX,
                                 "%s:\n%s" % (name, out))
            self.assertEqual(rc, 0, "%s over --threshold:\n%s" % (name, out))

    def test_descriptor_limit_covers_the_connection_limit(self):
        # A descriptor per connection, and room for the listeners, the
        # journal and connections accepted only to be refused.
        for name, opt in CONN_LIMIT.items():
            unit = unitfile.parse(unit_path(name))
            conns = unitfile.option(unitfile.exec_start(unit), opt)
            self.assertIsNotNone(conns, "%s sets no %s" % (name, opt))
            nofile = unitfile.value(unit, "Service", "LimitNOFILE")
            self.assertIsNotNone(nofile, "%s sets no LimitNOFILE=" % name)
            self.assertGreaterEqual(int(nofile), 2 * int(conns),
                                    "%s: LimitNOFILE=%s for %s %s"
                                    % (name, nofile, opt, conns))

    def test_services_are_watched_and_notify(self):
        for name in SERVICES:
            unit = unitfile.parse(unit_path(name))
            self.assertEqual(unitfile.value(unit, "Service", "Type"),
                             "notify", name)
            self.assertEqual(unitfile.value(unit, "Service", "NotifyAccess"),
                             "main", name)
            self.assertEqual(unitfile.value(unit, "Service", "WatchdogSec"),
                             "30s", name)
            socket_unit = name.replace(".service", ".socket")
            self.assertEqual(unitfile.values(unit, "Unit", "Requires"),
                             [socket_unit], name)
            self.assertEqual(unitfile.values(unit, "Install", "Also"),
                             [socket_unit], name)

    def activate(self, name, listen):
        """Start service name as its socket unit would, with listen the
        systemd-socket-activate options for its sockets; returns the Proc
        and the socket that receives its notifications."""
        self.assertIsNotNone(ACTIVATE, "systemd-socket-activate not found "
                             "(Debian package systemd)")
        self.assertIsNotNone(PRLIMIT, "prlimit not found (Debian package "
                             "util-linux)")
        unit = unitfile.parse(unit_path(name))
        notify_path = os.path.join(self.dir, "notify")
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(notify_path)
        notify.settimeout(10)
        self.socks.append(notify)
        nofile = unitfile.value(unit, "Service", "LimitNOFILE")
        argv = [PRLIMIT, "--nofile=%s" % nofile] + listen + service_argv(name)
        env = dict(os.environ, NOTIFY_SOCKET=notify_path)
        return self.start(Proc, argv, env=env), notify

    def connect(self, port):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.socks.append(s)
        return s

    def test_echo_service_serves_its_sockets(self):
        # As forkloop-echo.socket: a stream and a datagram socket on one
        # port (two systemd-socket-activate, the outer passing its socket
        # through the inner).
        port = free_port()
        addr = "127.0.0.1:%d" % port
        p, notify = self.activate("forkloop-echo.service", [
            ACTIVATE, "--datagram", "-l", addr, "-E", "NOTIFY_SOCKET",
            ACTIVATE, "-l", addr, "-E", "NOTIFY_SOCKET"])
        p.wait_line(r"Listening on 127\.0\.0\.1:%d as 3" % port)
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.socks.append(u)
        u.bind(("127.0.0.1", 0))
        u.settimeout(10)
        u.sendto(b"datagram", ("127.0.0.1", port))
        self.assertEqual(u.recvfrom(100), (b"datagram", ("127.0.0.1", port)))
        self.assertEqual(notify.recv(100), b"READY=1")
        p.wait_line(r"listening on 127\.0\.0\.1:%d \(activated fd 4"
                    % port)
        data = os.urandom(300000)
        s = self.connect(port)
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        self.assertEqual(fltest.recv_all(s, 10), data)
        p.signal(15)
        self.assertEqual(p.wait(), 0, p.stderr_text())

    def test_relay_service_serves_its_socket(self):
        port = free_port()
        p, notify = self.activate("forkloop-relay.service", [
            ACTIVATE, "-l", "127.0.0.1:%d" % port, "-E", "NOTIFY_SOCKET"])
        p.wait_line(r"Listening on 127\.0\.0\.1:%d as 3" % port)
        a = self.connect(port).makefile("rwb", buffering=0)
        self.assertRegex(a.readline(), rb"^\* you are user1; others here: 0")
        self.assertEqual(notify.recv(100), b"READY=1")
        p.wait_line(r"listening on 127\.0\.0\.1:%d \(activated fd 3"
                    % port)
        b = self.connect(port).makefile("rwb", buffering=0)
        self.assertRegex(b.readline(), rb"^\* you are user2; others here: 1")
        self.assertEqual(a.readline(), b"* user2 joined\n")
        b.write(b"hello from two\n")
        self.assertEqual(a.readline(), b"<user2> hello from two\n")
        p.signal(15)
        # The relay dies of SIGTERM, as systemd expects of a service.
        self.assertEqual(p.wait(), -15, p.stderr_text())

    def syscalls_of(self, name, extra, exercise, status):
        """The system calls the service's command line makes (listening
        itself with extra options: strace cannot pass sockets on) while
        exercise(port, pid) runs, then SIGTERM, which must end it with
        status."""
        self.assertIsNotNone(STRACE, "strace not found (Debian package "
                             "strace)")
        out = os.path.join(self.dir, name + ".trace")
        argv = service_argv(name)
        if "--listen" in argv:
            argv[argv.index("--listen") + 1] = "127.0.0.1:0"
        else:
            argv += ["--listen", "127.0.0.1:0"]
        argv = [STRACE, "-f", "-qq", "-o", out] + argv + extra
        p = self.start(Proc, argv)
        m = p.wait_line(r"listening on 127\.0\.0\.1:(\d+)", timeout=30)
        # strace's child, the daemon itself.
        daemon = wait_until(lambda: fltest.children(p.pid), 10)
        self.assertTrue(daemon, "no process under strace")
        pid = daemon[0][0]
        exercise(int(m[0].group(1)), pid)
        os.kill(pid, 15)
        self.assertEqual(p.wait(30), status, p.stderr_text())
        called = set()
        with open(out) as f:
            for line in f:
                m = re.match(r"\d+\s+([a-z0-9_]+)\(", line)
                if m:
                    called.add(m.group(1))
        # The program's own execve is strace's, before any filter.
        return called - {"execve"}

    def test_system_calls_pass_the_filter(self):
        def echo(port, pid):
            s = self.connect(port)
            s.sendall(b"x" * 100000)
            s.shutdown(socket.SHUT_WR)
            self.assertEqual(len(fltest.recv_all(s, 10)), 100000)
            u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.socks.append(u)
            u.settimeout(10)
            u.sendto(b"d", ("127.0.0.1", port))
            self.assertEqual(u.recv(10), b"d")
            os.kill(pid, 10)  # SIGUSR1: the statistics line

        def relay(port, pid):
            a = self.connect(port).makefile("rwb", buffering=0)
            a.readline()
            b = self.connect(port).makefile("rwb", buffering=0)
            b.readline()
            a.readline()
            b.write(b"hi\n")
            self.assertEqual(a.readline(), b"<user2> hi\n")
            os.kill(pid, 10)

        for name, extra, exercise, status in [
                ("forkloop-echo.service", ["--udp"], echo, 0),
                ("forkloop-relay.service", [], relay, -15)]:
            allowed = allowed_syscalls(unitfile.parse(unit_path(name)))
            called = self.syscalls_of(name, extra, exercise, status)
            self.assertIn("accept4", called, name)
            self.assertFalse(called - allowed, "%s calls what its "
                             "SystemCallFilter= refuses" % name)


if __name__ == "__main__":
    fltest.main()
