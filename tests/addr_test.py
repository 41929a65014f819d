"""Integration tests for addresses: the forms every program takes, listening
on every address a spec stands for (IPv6 and IPv4 alike), and resolver
errors in the system resolver's words.

Scenarios named echo_* and chat_* run once per mode (FORKLOOP_MODE); the
others run once. No DNS: only literal addresses, a name the resolver
refuses without asking a server (a label longer than RFC 1035's 63 octets),
and names with several addresses, from a hosts(5) file the program sees in
a mount namespace of its own (unshare -m) in place of /etc/hosts.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fltest  # noqa: E402
from fltest import Proc, Server, recv_all  # noqa: E402

MODE = fltest.mode()
LISTEN_FORMS = "PORT, HOST:PORT or [IPV6]:PORT"
CONNECT_FORMS = "HOST:PORT or [IPV6]:PORT"
# Refused by the resolver itself: no query leaves the machine.
BAD_NAME = "a" * 64 + ".invalid"


def run(argv, data=b"", timeout=20.0):
    """Run argv in its own process group with data on stdin; return
    (status, stdout, stderr). Whatever is left is killed by group."""
    p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = p.communicate(data, timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        raise AssertionError("%r still running after %gs; stderr:\n%s"
                             % (argv, timeout, err.decode("utf-8", "replace")))
    finally:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return p.returncode, out, err.decode("utf-8", "replace")


def resolver_says(name):
    """The system resolver's own message for name, through Python's
    socket.getaddrinfo (gai_strerror)."""
    try:
        # Bytes: no IDNA encoding in Python, as in the C programs.
        socket.getaddrinfo(name.encode(), 7, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        return e.strerror
    raise AssertionError("%s resolves here" % name)


# A name with an address of each family, and two of IPv4.
MULTI = "multi.test"
MULTI_ADDRS = ["127.0.0.1", "127.0.0.2", "::1"]


def hosts_file(name, addrs):
    """A hosts(5) file giving name every address in addrs; removed at
    exit of the test process."""
    f = tempfile.NamedTemporaryFile("w", prefix="hosts.", delete=False)
    f.write("".join("%s %s\n" % (a, name) for a in addrs))
    f.close()
    return f.name


def with_hosts(path, argv):
    """argv run where /etc/hosts reads as path: a private mount namespace
    (unshare(1) -m) with path bind-mounted on it. Same pid (exec)."""
    return ["unshare", "-m", "--", "sh", "-c",
            'mount --bind "$0" /etc/hosts && exec "$@"', path] + argv


def roundtrip(host, port, data):
    with socket.create_connection((host, port), timeout=10) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        return recv_all(s, timeout=10)


class AddrTest(fltest.ProcTestCase):

    def multi_hosts(self, addrs=None):
        """(hosts file for MULTI, the addresses a program resolves MULTI
        to there), after checking that a mount namespace can be made here
        (the tests need root and util-linux). getent(1) ahosts asks as the
        programs do, with AI_ADDRCONFIG: a family the machine has no
        address of (other than loopback) is left out."""
        self.assertIsNotNone(shutil.which("unshare"),
                             "needs unshare (util-linux)")
        path = hosts_file(MULTI, addrs or MULTI_ADDRS)
        self.addCleanup(os.unlink, path)
        check = subprocess.run(with_hosts(path, ["getent", "ahosts", MULTI]),
                               capture_output=True, text=True, timeout=10)
        self.assertEqual(check.returncode, 0,
                         "a mount namespace with its own /etc/hosts: "
                         + check.stderr)
        got = [line.split()[0] for line in check.stdout.splitlines()
               if "STREAM" in line]
        self.assertIn((addrs or MULTI_ADDRS)[0], got)
        return path, got

    def assertEveryAddress(self, srv, addrs):
        """srv printed one socket per address, all on one port."""
        self.assertEqual(sorted(srv.addrs),
                         sorted((a, srv.port) for a in addrs))

    def echo(self, *listen, count=1):
        argv = [fltest.binary("echo"), "--mode", MODE]
        for spec in listen:
            argv += ["--listen", spec]
        return self.start(Server, argv, count=count)

    def assertBothFamilies(self, srv):
        """srv's one socket on [::] answers over IPv4 and IPv6."""
        self.assertEqual(srv.addrs, [("::", srv.port)])
        for host in ("127.0.0.1", "::1"):
            data = b"over %s\n" % host.encode()
            self.assertEqual(roundtrip(host, srv.port, data), data, host)

    # forkloop-echo

    def test_echo_port_alone_serves_both_families(self):
        srv = self.echo("0")
        self.assertBothFamilies(srv)

    def test_echo_ipv6_wildcard_is_dual_stack(self):
        srv = self.echo("[::]:0")
        self.assertBothFamilies(srv)

    def test_echo_both_wildcards_share_a_port(self):
        # [::] keeps to IPv6 when 0.0.0.0 is given too: both bind one port.
        probe = socket.socket(socket.AF_INET6)
        probe.bind(("::", 0))
        port = probe.getsockname()[1]
        probe.close()
        srv = self.echo("0.0.0.0:%d" % port, "[::]:%d" % port, count=2)
        self.assertEqual(sorted(srv.addrs), [("0.0.0.0", port), ("::", port)])
        for host in ("127.0.0.1", "::1"):
            self.assertEqual(roundtrip(host, port, b"x"), b"x", host)

    def test_echo_both_wildcards_udp_share_a_port(self):
        # UDP beside TCP keeps the TCP sockets' families: [::] stays IPv6
        # only beside 0.0.0.0, or its bind would take the IPv4 port too.
        probe = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        probe.bind(("::", 0))
        port = probe.getsockname()[1]
        probe.close()
        srv = self.start(Server, [fltest.binary("echo"), "--mode", MODE,
                                  "--listen", "0.0.0.0:%d" % port,
                                  "--listen", "[::]:%d" % port, "--udp"],
                         count=4)
        self.assertEqual(sorted(srv.addrs), [("0.0.0.0", port)] * 2
                         + [("::", port)] * 2)

    def test_echo_port_alone_udp_serves_both_families(self):
        srv = self.start(Server, [fltest.binary("echo"), "--mode", MODE,
                                  "--listen", "0", "--udp"], count=2)
        self.assertEqual(srv.addrs, [("::", srv.port)] * 2)
        for family, host in ((socket.AF_INET, "127.0.0.1"),
                             (socket.AF_INET6, "::1")):
            with socket.socket(family, socket.SOCK_DGRAM) as c:
                c.settimeout(5)
                c.sendto(b"datagram", (host, srv.port))
                data, peer = c.recvfrom(100)
                self.assertEqual((data, peer[1]), (b"datagram", srv.port),
                                 host)

    def test_echo_name_serves_every_address(self):
        hosts, addrs = self.multi_hosts()
        srv = self.start(Server, with_hosts(hosts, [
            fltest.binary("echo"), "--mode", MODE,
            "--listen", "%s:0" % MULTI]), count=len(addrs))
        self.assertEveryAddress(srv, addrs)
        for host in addrs:
            data = b"over %s\n" % host.encode()
            self.assertEqual(roundtrip(host, srv.port, data), data, host)

    # forkloop-chat

    def chat_listener(self, *opts):
        return self.start(Server, [fltest.binary("chat"), "--mode", MODE]
                          + list(opts), stdout=subprocess.PIPE)

    def test_chat_port_alone_serves_both_families(self):
        for host in ("127.0.0.1", "::1"):
            chat = self.chat_listener("--listen", "0")
            self.assertEqual(chat.addrs, [("::", chat.port)])
            data = b"hello over %s\n" % host.encode()
            self.assertEqual(roundtrip(host, chat.port, data), b"", host)
            self.assertEqual(chat.wait(), 0, chat.stderr_text())
            self.assertEqual(chat.p.stdout.read(), data, host)
            self.assertGroupGone(chat)

    def test_chat_name_serves_every_address(self):
        """A name with three addresses: one listener per address on one
        port; with -k, a peer on each in turn, each printed."""
        hosts, addrs = self.multi_hosts()
        chat = self.start(Server, with_hosts(hosts, [
            fltest.binary("chat"), "--mode", MODE, "-k",
            "--listen", "%s:0" % MULTI]), count=len(addrs),
            stdout=subprocess.PIPE)
        self.assertEveryAddress(chat, addrs)
        want = b""
        for host in addrs:
            data = b"hello over %s\n" % host.encode()
            self.assertEqual(roundtrip(host, chat.port, data), b"", host)
            want += data
            chat.wait_line("connected to", count=len(want.splitlines()))
        # Each session ends before the next peer is taken: all printed.
        got = b""
        while len(got) < len(want):
            piece = os.read(chat.p.stdout.fileno(), 4096)
            if not piece:
                break
            got += piece
        self.assertEqual(got, want, chat.stderr_text())
        chat.signal(signal.SIGTERM)
        self.assertEqual(chat.wait(), -signal.SIGTERM, chat.stderr_text())
        self.assertGroupGone(chat)

    def test_chat_connects_to_one_argument(self):
        for spec in ("127.0.0.1:0", "[::1]:0"):
            srv = self.echo(spec)
            host = srv.host if ":" not in srv.host else "[%s]" % srv.host
            target = "%s:%d" % (host, srv.port)
            status, out, err = run([fltest.binary("chat"), "--mode", MODE,
                                    target], b"ping\n")
            self.assertEqual((status, out), (0, b"ping\n"), err)
            self.assertIn("connected to %s" % target, err)

    def test_chat_resolve_error_names_the_lookup(self):
        status, out, err = run([fltest.binary("chat"), "--mode", MODE,
                                BAD_NAME, "7"])
        self.assertEqual(status, 1, err)
        self.assertIn("forkloop-chat: cannot resolve %s: %s\n"
                      % (BAD_NAME, resolver_says(BAD_NAME)), err)
        self.assertNotIn("cannot connect", err)

    # Once, whatever the mode.

    def test_broker_port_alone_serves_both_families(self):
        broker = self.start(Server, [fltest.binary("chat"), "--broker",
                                     "--listen", "0"])
        self.assertEqual(broker.addrs, [("::", broker.port)])
        a = socket.create_connection(("127.0.0.1", broker.port), timeout=10)
        b = socket.create_connection(("::1", broker.port), timeout=10)
        self.addCleanup(a.close)
        self.addCleanup(b.close)
        f = b.makefile("rb")
        self.assertTrue(f.readline().startswith(b"* you are "))
        a.sendall(b"hello\n")
        while True:
            line = f.readline()
            self.assertNotEqual(line, b"", "broker closed")
            if line.endswith(b"> hello\n"):
                break

    def test_broker_name_serves_every_address(self):
        hosts, addrs = self.multi_hosts()
        broker = self.start(Server, with_hosts(hosts, [
            fltest.binary("chat"), "--broker", "--listen", "%s:0" % MULTI]),
            count=len(addrs))
        self.assertEveryAddress(broker, addrs)
        clients = []
        for host in addrs:
            s = socket.create_connection((host, broker.port), timeout=10)
            self.addCleanup(s.close)
            f = s.makefile("rb")
            self.assertTrue(f.readline().startswith(b"* you are "), host)
            clients.append((s, f))
        clients[0][0].sendall(b"hello everyone\n")
        for host, (s, f) in zip(addrs[1:], clients[1:]):
            while True:
                line = f.readline()
                self.assertNotEqual(line, b"", "broker closed on " + host)
                if line.endswith(b"> hello everyone\n"):
                    break

    def test_name_with_too_many_addresses(self):
        # One more than forkloop-chat serves (CHAT_MAX_LISTEN): a clear
        # error, nothing left listening.
        addrs = ["127.0.0.%d" % i for i in range(1, 18)]
        hosts, _ = self.multi_hosts(addrs)
        for argv in ([fltest.binary("chat"), "--listen", MULTI + ":0"],
                     [fltest.binary("chat"), "--broker", "--listen",
                      MULTI + ":0"]):
            status, out, err = run(with_hosts(hosts, argv))
            self.assertEqual(status, 1, err)
            self.assertIn("cannot listen on %s:0: it resolves to 17 "
                          "addresses, and only 16 more can be served here"
                          % MULTI, err)
            self.assertNotIn("listening on", err)
        # forkloop-echo's 64 sockets: 33 addresses with --udp need 66.
        hosts, _ = self.multi_hosts(["127.0.0.%d" % i for i in range(1, 34)])
        status, out, err = run(with_hosts(hosts, [
            fltest.binary("echo"), "--udp", "--listen", MULTI + ":0"]))
        self.assertEqual(status, 1, err)
        self.assertIn("forkloop-echo serves at most 64 sockets", err)
        self.assertNotIn("resolves to 1 addresses", err)

    def test_name_with_both_wildcards(self):
        """A name for 0.0.0.0 and ::, and one for an address and its
        IPv4-mapped form: each listens, [::] keeping to IPv6 beside IPv4,
        and the mapped form left to its IPv4 socket."""
        hosts, _ = self.multi_hosts(["0.0.0.0", "::"])
        chat = self.start(Server, with_hosts(hosts, [
            fltest.binary("chat"), "--broker", "--listen", MULTI + ":0"]),
            count=2)
        self.assertEqual(sorted(chat.addrs),
                         [("0.0.0.0", chat.port), ("::", chat.port)])
        for host in ("127.0.0.1", "::1"):
            s = socket.create_connection((host, chat.port), timeout=10)
            self.addCleanup(s.close)
            self.assertTrue(s.makefile("rb").readline().startswith(
                b"* you are "), host)
        hosts, _ = self.multi_hosts(["127.0.0.2", "::ffff:127.0.0.2"])
        srv = self.start(Server, with_hosts(hosts, [
            fltest.binary("echo"), "--mode", "event", "--listen",
            MULTI + ":0"]))
        self.assertEqual(srv.addrs, [("127.0.0.2", srv.port)])
        self.assertEqual(roundtrip("127.0.0.2", srv.port, b"x"), b"x")

    def test_errors_name_the_forms(self):
        cases = [
            ([fltest.binary("echo"), "--listen", "nope"], LISTEN_FORMS),
            ([fltest.binary("chat"), "--listen", "nope"], LISTEN_FORMS),
            ([fltest.binary("chat"), "nope"], CONNECT_FORMS),
            ([fltest.binary("chat"), "6666"], CONNECT_FORMS),
            ([fltest.binary("bench"), "nope"], CONNECT_FORMS),
            ([fltest.binary("bench"), "6666"], CONNECT_FORMS),
            ([fltest.binary("bench"), "::1:6666"], "in brackets"),
            ([fltest.binary("echo"), "--listen", "https://127.0.0.1:0"],
             "unknown scheme: the only one is tls://"),
            ([fltest.binary("chat"), "http://127.0.0.1:7"],
             "unknown scheme: the only one is tls://"),
            ([fltest.binary("bench"), "ftp://127.0.0.1:7"],
             "unknown scheme: the only one is tls://"),
        ]
        for argv, forms in cases:
            status, out, err = run(argv)
            self.assertEqual(status, 2, "%r: %s" % (argv, err))
            self.assertIn(forms, err.splitlines()[0], argv)
            self.assertEqual(out, b"", argv)

    def test_same_forms_in_every_program(self):
        srv = self.echo("0")
        for target in ("127.0.0.1:%d" % srv.port, "[::1]:%d" % srv.port):
            status, out, err = run([fltest.binary("bench"), "-c", "1", "-n",
                                    "5", target])
            self.assertEqual(status, 0, "%s: %s" % (target, err))
            status, out, err = run([fltest.binary("chat"), target], b"a\n")
            self.assertEqual((status, out), (0, b"a\n"), err)

    def test_invalid_literal_is_not_a_name(self):
        cases = [
            [fltest.binary("echo"), "--listen", "256.1.1.1:0"],
            [fltest.binary("chat"), "--listen", "256.1.1.1:0"],
            [fltest.binary("chat"), "256.1.1.1", "7"],
            [fltest.binary("chat"), "256.1.1.1:7"],
            [fltest.binary("bench"), "256.1.1.1:7"],
            [fltest.binary("bench"), "[::g]:7"],
            # Octal, short, single-number and hex forms, which the
            # resolver reads as other addresses than they look like.
            [fltest.binary("chat"), "010.0.0.1", "7"],
            [fltest.binary("chat"), "1.2.3:7"],
            [fltest.binary("echo"), "--listen", "127.1:0"],
            [fltest.binary("bench"), "0177.0.0.1:7"],
            [fltest.binary("bench"), "2130706433:7"],
            [fltest.binary("chat"), "--listen", "0x7f.0.0.1:0"],
        ]
        for argv in cases:
            status, out, err = run(argv)
            self.assertEqual(status, 2, "%r: %s" % (argv, err))
            self.assertRegex(err, r"not a valid IPv[46] address", argv)

    def test_listen_resolve_error_names_the_lookup(self):
        status, out, err = run([fltest.binary("echo"), "--listen",
                                BAD_NAME + ":0"])
        self.assertEqual(status, 1, err)
        self.assertIn("forkloop-echo: cannot resolve %s: %s\n"
                      % (BAD_NAME, resolver_says(BAD_NAME)), err)


    def test_bench_resolve_error_names_the_lookup(self):
        status, out, err = run([fltest.binary("bench"), "-d", "1",
                                BAD_NAME + ":7"])
        self.assertEqual(status, 1, err)
        self.assertIn("forkloop-bench: cannot resolve %s: %s\n"
                      % (BAD_NAME, resolver_says(BAD_NAME)), err)

if __name__ == "__main__":
    fltest.main()
