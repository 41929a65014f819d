"""forkloop-bench --source: connections spread round-robin over local
addresses, each bound before its connect; the limits checked before a run
(local ports per source address, descriptors); bench/multi, several
forkloop-bench processes whose results forkloop-bench merge adds up: the
options it refuses, the errors it shows, how a signal stops it; and
bench/many-sources (root: a network namespace of its own).

The port limit is reached in a network namespace the test makes (unshare
-n, as root), whose ip_local_port_range is narrowed to 100 ports; a name
that resolves to IPv4 alone comes from an /etc/hosts bind-mounted in a
mount namespace of its own (unshare -m)."""

import collections
import json
import os
import re
import resource
import signal
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fltest  # noqa: E402

# forkloop-echo -v: "event=open peer=127.0.0.2:40001 loop=0",
# "event=open peer=[::1]:40001 loop=0".
PEER_RE = re.compile(r"event=open peer=(\[[0-9a-fA-F:.]+\]|[0-9.]+):\d+ ")
NS_PORTS = "40000 40099"  # 100 local ports in the namespace


def peers(server):
    """How many connections forkloop-echo -v logged from each address."""
    with server.cond:
        lines = [l for l in server.lines if l is not None]
    return collections.Counter(m.group(1).strip("[]")
                               for m in map(PEER_RE.search, lines) if m)


def session_pids(sid):
    """The processes of session sid that are not zombies."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[3]) == sid and fields[0] != "Z":
            out.append(int(entry))
    return out


def exe_of(pid):
    try:
        return os.readlink("/proc/%d/exe" % pid)
    except OSError:
        return None


def script(name):
    return os.path.join(os.environ["FORKLOOP_SOURCE_ROOT"], "bench", name)


def run_bench(*args, preexec=None, timeout=60):
    argv = [fltest.binary("bench")] + [str(a) for a in args]
    return subprocess.run(argv, capture_output=True, timeout=timeout,
                          preexec_fn=preexec, start_new_session=True)


def in_netns():
    """Inside `unshare -n`: loopback up, 100 local ports, forkloop-echo on
    it; 300 connections without --source, then over four sources. Prints
    what each run returned as one JSON object."""
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    with open("/proc/sys/net/ipv4/ip_local_port_range", "w") as f:
        f.write(NS_PORTS + "\n")
    srv = fltest.Server([fltest.binary("echo"), "--listen", "127.0.0.1:0"])
    try:
        target = "127.0.0.1:%d" % srv.port
        one = run_bench("-c", 300, "-n", 3000, target)
        four = run_bench("--json", "-c", 300, "-n", 3000,
                         "--source", "127.0.0.1-127.0.0.4", target)
    finally:
        srv.kill_group()
    print(json.dumps({
        "one": {"rc": one.returncode, "stderr": one.stderr.decode()},
        "four": {"rc": four.returncode, "stderr": four.stderr.decode(),
                 "stdout": four.stdout.decode()},
    }))


class BenchSourceTest(fltest.ProcTestCase):

    def echo(self, listen="127.0.0.1:0"):
        return self.start(fltest.Server, [fltest.binary("echo"), "-v",
                                          "--listen", listen])

    def bench_json(self, *args):
        p = run_bench("--json", *args)
        self.assertEqual(p.returncode, 0, p.stderr.decode())
        return json.loads(p.stdout)

    def wait_peers(self, srv, total):
        fltest.wait_until(lambda: sum(peers(srv).values()) >= total, 10)
        return peers(srv)

    def spread(self, *extra):
        srv = self.echo()
        j = self.bench_json("-c", 40, "-n", 400, "--source",
                            "127.0.0.2-127.0.0.9", *extra,
                            "127.0.0.1:%d" % srv.port)
        self.assertEqual(j["messages"], 400)
        self.assertEqual(j["errors"], 0)
        want = {"127.0.0.%d" % i: 5 for i in range(2, 10)}
        self.assertEqual(dict(self.wait_peers(srv, 40)), want)

    def test_spread_over_eight_addresses(self):
        self.spread()

    def test_threads_spread_over_eight_addresses(self):
        # Connection ids are index + k x threads: both threads together
        # still give each address 5.
        self.spread("--threads", 2)

    def test_lists_add_up_and_ranges_mix_with_addresses(self):
        srv = self.echo()
        j = self.bench_json("-c", 6, "-n", 60,
                            "--source", "127.0.0.2,127.0.0.5-127.0.0.6",
                            "--source", "127.0.0.9",
                            "127.0.0.1:%d" % srv.port)
        self.assertEqual(j["errors"], 0)
        self.assertEqual(dict(self.wait_peers(srv, 6)),
                         {"127.0.0.2": 2, "127.0.0.5": 2, "127.0.0.6": 1,
                          "127.0.0.9": 1})

    def test_ipv6_source(self):
        srv = self.echo("[::1]:0")
        for source in ["::1", "[::1]"]:
            j = self.bench_json("-c", 4, "-n", 40, "--source", source,
                                "[::1]:%d" % srv.port)
            self.assertEqual(j["messages"], 40)
            self.assertEqual(j["errors"], 0)
        self.assertEqual(dict(self.wait_peers(srv, 8)), {"::1": 8})

    def test_bad_values_are_usage(self):
        cases = [
            (["300.1.1.1"], "'300.1.1.1': not a valid IPv4 address"),
            (["127.0.0.9-127.0.0.2"],
             "'127.0.0.9-127.0.0.2': the range's first address is after "
             "its last"),
            (["127.0.0.2-::1"], "ends are of different families"),
            (["10.0.0.0-10.1.0.0"],
             "'10.0.0.0-10.1.0.0': a range holds at most 65536 addresses"),
            (["127.0.0.2,,127.0.0.3"], "an empty item"),
            (["127.0.0.2,"], "an empty item"),
            ([""], "an empty item"),
            (["127.0.0.2,::1"], "'::1': it is IPv6, but '127.0.0.2'"),
            (["127.0.0.2-127.0.0.5", "127.0.0.4"],
             "'127.0.0.4': it overlaps '127.0.0.2-127.0.0.5'"),
            (["fe80::1%lo"], "%scope is not taken"),
            (["[127.0.0.2]"], "brackets hold an IPv6 address"),
            (["example.org"], "not an IPv4 or IPv6 address"),
        ]
        for sources, why in cases:
            args = []
            for s in sources:
                args += ["--source", s]
            p = run_bench(*args, "-n", 1, "127.0.0.1:7")
            err = p.stderr.decode()
            self.assertEqual(p.returncode, 2, (sources, err))
            self.assertIn(why, err)
            self.assertIn("bad --source", err)
            self.assertIn("usage:", err)
        p = run_bench("--source", "127.0.0.2", "-n", 1, "unix:/tmp/x.sock")
        self.assertEqual(p.returncode, 2)
        self.assertIn("a unix: target has none", p.stderr.decode())
        p = run_bench("--source", "::1", "-n", 1, "127.0.0.1:7")
        self.assertEqual(p.returncode, 2)
        self.assertIn("the --source addresses are IPv6, but the target "
                      "127.0.0.1 is IPv4", p.stderr.decode())
        # 65536 is the cap, and allowed.
        p = run_bench("--source", "10.0.0.0-10.0.255.255", "-h")
        self.assertEqual(p.returncode, 0, p.stderr.decode())

    def test_family_of_a_name_is_checked_at_run_time(self):
        with tempfile.NamedTemporaryFile("w", suffix=".hosts") as hosts:
            hosts.write("127.0.0.1 forkloop-v4only\n")
            hosts.flush()
            p = subprocess.run(
                ["unshare", "-m", "-n", "sh", "-c",
                 'mount --bind "$1" /etc/hosts && ip link set lo up && '
                 'shift && exec "$@"', "sh", hosts.name,
                 fltest.binary("bench"), "--source", "::1", "-n", "1",
                 "forkloop-v4only:7"],
                capture_output=True, timeout=60)
        err = p.stderr.decode()
        self.assertEqual(p.returncode, 1, err)
        self.assertIn("the --source addresses are IPv6, but forkloop-v4only "
                      "has no IPv6 address", err)

    def test_bind_failure_names_the_address(self):
        # 192.0.2.1 (TEST-NET-1, RFC 5737) is on no interface: bind(2)
        # fails here with EADDRNOTAVAIL, and no packet is sent.
        srv = self.echo()
        p = run_bench("-c", 4, "--threads", 2, "-n", 10, "--source",
                      "192.0.2.1", "127.0.0.1:%d" % srv.port)
        err = p.stderr.decode()
        self.assertEqual(p.returncode, 1, err)
        self.assertIn("cannot bind to source address 192.0.2.1: Cannot "
                      "assign requested address: it is not an address of "
                      "this host", err)
        self.assertEqual(err.count("cannot bind"), 1, err)
        self.assertEqual(sum(peers(srv).values()), 0)

    def test_bind_failure_after_measuring_still_reports(self):
        # --churn measures from its first connect: connection 1's source,
        # 192.0.2.1, fails to bind after the window began, so the lines
        # already printed get their summary, and the exit status is 1.
        srv = self.echo()
        p = run_bench("-c", 3, "-d", 2, "--churn", "--json-stream", "-i",
                      0.1, "--source", "127.0.0.2,192.0.2.1",
                      "127.0.0.1:%d" % srv.port)
        err = p.stderr.decode()
        self.assertEqual(p.returncode, 1, err)
        self.assertEqual(err.count("cannot bind to source address "
                                   "192.0.2.1"), 1, err)
        lines = [json.loads(x) for x in p.stdout.decode().splitlines()]
        self.assertGreater(len(lines), 0)
        self.assertEqual(lines[-1]["type"], "summary")
        self.assertEqual(sum(x["messages"] for x in lines[:-1]),
                         lines[-1]["messages"])

    def test_port_limit_in_a_network_namespace(self):
        p = subprocess.run(["unshare", "-n", sys.executable,
                            os.path.abspath(__file__), "--in-netns"],
                           capture_output=True, timeout=100)
        self.assertEqual(p.returncode, 0, p.stderr.decode())
        r = json.loads(p.stdout)
        self.assertEqual(r["one"]["rc"], 1, r["one"]["stderr"])
        self.assertIn("300 connections need 300 local ports, but 1 source "
                      "address x 100 ports (net.ipv4.ip_local_port_range "
                      "40000-40099) allow 100: add addresses with --source, "
                      "or widen the range", r["one"]["stderr"])
        self.assertEqual(r["four"]["rc"], 0, r["four"]["stderr"])
        j = json.loads(r["four"]["stdout"])
        self.assertEqual(j["messages"], 3000)
        self.assertEqual(j["errors"], 0)
        self.assertEqual(j["connects"], 300)

    def test_descriptor_limit_names_rlimit_nofile(self):
        p = run_bench("-c", 1000, "-n", 1000, "127.0.0.1:7",
                      preexec=lambda: resource.setrlimit(
                          resource.RLIMIT_NOFILE, (64, 100)))
        err = p.stderr.decode()
        self.assertEqual(p.returncode, 1, err)
        self.assertIn("1000 connections need 1032 file descriptors, but "
                      "RLIMIT_NOFILE (ulimit -n) is 64, hard limit 100: "
                      "raise the hard limit", err)
        self.assertIn("split the load over several forkloop-bench "
                      "processes", err)

    def test_multi_merges_four_processes(self):
        root = os.environ["FORKLOOP_SOURCE_ROOT"]
        srv = self.echo()
        with tempfile.TemporaryDirectory() as out:
            p = subprocess.run(
                [os.path.join(root, "bench", "multi"), "-j", "4", "--out",
                 out, "--json", "--", "-c", "8", "-n", "200",
                 "--source", "127.0.0.1{#}", "127.0.0.1:%d" % srv.port],
                capture_output=True, timeout=100, start_new_session=True)
            self.assertEqual(p.returncode, 0, p.stderr.decode())
            merged = json.loads(p.stdout)
            runs = []
            for k in range(1, 5):
                with open(os.path.join(out, "run-%d.json" % k)) as f:
                    runs.append(json.load(f))
        self.assertEqual([r["messages"] for r in runs], [200] * 4)
        self.assertEqual(merged["messages"],
                         sum(r["messages"] for r in runs))
        self.assertEqual(merged["errors"], 0)
        # Run K's connections came from 127.0.0.1K alone.
        self.assertEqual(dict(self.wait_peers(srv, 32)),
                         {"127.0.0.1%d" % k: 8 for k in range(1, 5)})

    def test_multi_says_which_run_failed(self):
        root = os.environ["FORKLOOP_SOURCE_ROOT"]
        srv = self.echo()
        with tempfile.TemporaryDirectory() as out:
            # Run 2's source is on no interface: it fails, the others run.
            p = subprocess.run(
                [os.path.join(root, "bench", "multi"), "-j", "3", "--out",
                 out, "--", "-c", "2", "-n", "20", "--source",
                 "{= $_ = seq() == 2 ? '192.0.2.1' : '127.0.0.1' =}",
                 "127.0.0.1:%d" % srv.port],
                capture_output=True, timeout=100, start_new_session=True)
        err = p.stderr.decode()
        self.assertNotEqual(p.returncode, 0, err)
        self.assertRegex(err, r"run 2 .*exited 1")
        self.assertIn("cannot bind to source address 192.0.2.1", err)

    def test_multi_shows_the_error_not_the_usage_text(self):
        # Job 100 of --source 127.0.0.1{#} would get this address: each
        # process refuses it, then prints its usage text.
        with tempfile.TemporaryDirectory() as out:
            p = subprocess.run(
                [script("multi"), "-j", "2", "--out", out, "--", "-n", "1",
                 "--source", "127.0.0.1100", "127.0.0.1:7"],
                capture_output=True, timeout=100, start_new_session=True)
        err = p.stderr.decode()
        self.assertEqual(p.returncode, 1, err)
        for k in (1, 2):
            self.assertIn("bench/multi: run %d exited 2\n  forkloop-bench: "
                          "bad --source '127.0.0.1100': not a valid IPv4 "
                          "address" % k, err)
        self.assertNotIn("usage:", err)
        self.assertNotIn("HOST:PORT", err)

    def test_multi_refuses_options_that_break_the_results(self):
        with tempfile.TemporaryDirectory() as out:
            hgrm = os.path.join(out, "lat.hgrm")
            cases = [
                (["--json"], "'--json'"),
                (["--json-stream"], "'--json-stream'"),
                (["--json-s"], "'--json-s'"),
                (["-i0.5"], "'-i0.5'"),
                (["-i", "1"], "'-i'"),
                (["-s64", "-i3"], "'-i3'"),
                (["--interval=1"], "'--interval=1'"),
                (["--inter", "2"], "'--inter'"),
                (["--hist", hgrm], "'--hist %s'" % hgrm),
                (["--hist=" + hgrm], "'--hist=%s'" % hgrm),
                (["--hi", hgrm], "'--hi %s'" % hgrm),
                (["-h"], "'-h'"),
                (["--version"], "'--version'"),
            ]
            for args, named in cases:
                p = subprocess.run(
                    [script("multi"), "-j", "2", "--out", out, "--",
                     "-n", "10"] + args + ["127.0.0.1:7"],
                    capture_output=True, timeout=60, start_new_session=True)
                err = p.stderr.decode()
                self.assertEqual(p.returncode, 2, (args, err))
                self.assertIn("bench/multi: %s among forkloop-bench's "
                              "arguments: " % named, err)
                self.assertIn("usage: bench/multi", err)
                self.assertEqual(os.listdir(out), [], args)
            # An option's value is not taken for an option, and --hist
            # with the job number in it gives each process its own file.
            srv = self.echo()
            p = subprocess.run(
                [script("multi"), "-j", "2", "--out", out, "--",
                 "-c", "2", "-n", "20", "--source", "-i",
                 "127.0.0.1:%d" % srv.port],
                capture_output=True, timeout=60, start_new_session=True)
            self.assertEqual(p.returncode, 1, p.stderr.decode())
            self.assertIn("forkloop-bench: bad --source '-i'",
                          p.stderr.decode())
            p = subprocess.run(
                [script("multi"), "-j", "2", "--out", out, "--", "-c", "2",
                 "-n", "20", "--hist", os.path.join(out, "lat-{#}.hgrm"),
                 "127.0.0.1:%d" % srv.port],
                capture_output=True, timeout=60, start_new_session=True)
            self.assertEqual(p.returncode, 0, p.stderr.decode())
            for k in (1, 2):
                with open(os.path.join(out, "lat-%d.hgrm" % k)) as f:
                    self.assertIn("Value", f.readline())
        p = subprocess.run([script("multi"), "--help"], capture_output=True,
                           timeout=10)
        for opt in ["-i/--interval", "--json-stream", "--hist FILE",
                    "-h/--help", "{#}"]:
            self.assertIn(opt, p.stdout.decode())

    def test_multi_knows_every_bench_option(self):
        # bench/multi finds refused options the way getopt_long would,
        # abbreviations included, from its copy of forkloop-bench's
        # options: it must name each one --help does, and which take a
        # value.
        p = subprocess.run([fltest.binary("bench"), "--help"],
                           capture_output=True, timeout=10)
        opt_re = re.compile(r"^  (?:-(\w), |    )--([a-z][a-z-]*)( [^ ]+)?  ")
        longs, shorts = set(), set()
        for line in p.stdout.decode().splitlines():
            m = opt_re.match(line)
            if m:
                longs.add(m.group(2) + ("=" if m.group(3) else ""))
                if m.group(1) and m.group(3):
                    shorts.add(m.group(1))
        self.assertIn("interval=", longs)
        with open(script("multi")) as f:
            text = f.read()
        table = re.search(r"^bench_longopts=\(([^)]*)\)", text, re.M)
        short = re.search(r"^bench_shortargs=(\w+)$", text, re.M)
        self.assertEqual(set(table.group(1).split()), longs,
                         "bench/multi's bench_longopts differs from "
                         "forkloop-bench --help")
        self.assertEqual(set(short.group(1)), shorts,
                         "bench/multi's bench_shortargs differs from "
                         "forkloop-bench --help")

    def multi_stopped(self, sig, want_rc):
        """multi -d 20 stopped by sig to the script's pid alone: it stops
        parallel and every job, merges what they printed, and exits
        want_rc, with nothing of its session left."""
        srv = self.echo()
        with tempfile.TemporaryDirectory() as out:
            p = subprocess.Popen(
                [script("multi"), "-j", "2", "--out", out, "--json", "--",
                 "-c", "2", "-d", "20", "127.0.0.1:%d" % srv.port],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                start_new_session=True,
                preexec_fn=lambda: signal.signal(signal.SIGINT,
                                                 signal.SIG_DFL))
            sid = p.pid
            try:
                bench = os.path.realpath(fltest.binary("bench"))
                jobs = lambda: [q for q in session_pids(sid)
                                if exe_of(q) == bench]
                fltest.wait_until(lambda: len(jobs()) == 2 and
                                  sum(peers(srv).values()) >= 4, 30)
                self.assertEqual(len(jobs()), 2)
                self.assertEqual(sum(peers(srv).values()), 4)
                os.kill(p.pid, sig)
                stdout, stderr = p.communicate(timeout=12)
                left = fltest.wait_until(lambda: not session_pids(sid), 5)
                self.assertTrue(left, "left running: %s" % [
                    (q, exe_of(q)) for q in session_pids(sid)])
            finally:
                for q in session_pids(sid):
                    os.kill(q, signal.SIGKILL)
                p.kill()
                p.wait()
            err = stderr.decode()
            self.assertEqual(p.returncode, want_rc, err)
            self.assertIn("bench/multi: SIG%s: stopped GNU parallel, which "
                          "sent SIGTERM to the runs still going (1 2)"
                          % sig.name[3:], err)
            # Each job printed its report on SIGTERM; both are merged.
            runs = []
            for k in (1, 2):
                with open(os.path.join(out, "run-%d.json" % k)) as f:
                    runs.append(json.load(f))
            self.assertEqual([r["interrupted"] for r in runs], [True] * 2)
            merged = json.loads(stdout)
            self.assertIs(merged["interrupted"], True)
            self.assertEqual(merged["messages"],
                             sum(r["messages"] for r in runs))
            self.assertEqual(merged["errors"], 0)

    def test_multi_sigterm_stops_every_job(self):
        self.multi_stopped(signal.SIGTERM, 143)

    def test_multi_sigint_stops_every_job(self):
        self.multi_stopped(signal.SIGINT, 130)

    def test_multi_perl_replacement_gives_each_job_a_range(self):
        # The form bench/README.md gives for more than 99 jobs: job K's
        # connections come from 127.0.K.1 and 127.0.K.2.
        srv = self.echo()
        with tempfile.TemporaryDirectory() as out:
            p = subprocess.run(
                [script("multi"), "-j", "2", "--out", out, "--json", "--",
                 "-c", "4", "-n", "40", "--source",
                 "127.0.{= $_ = seq() =}.1-127.0.{= $_ = seq() =}.2",
                 "127.0.0.1:%d" % srv.port],
                capture_output=True, timeout=100, start_new_session=True)
        self.assertEqual(p.returncode, 0, p.stderr.decode())
        self.assertEqual(json.loads(p.stdout)["messages"], 80)
        self.assertEqual(dict(self.wait_peers(srv, 8)),
                         {"127.0.%d.%d" % (k, i): 2 for k in (1, 2)
                          for i in (1, 2)})

    def test_many_sources_refuses_conns_it_cannot_show(self):
        for c in ["1000", "4001", "0", "x"]:
            p = subprocess.run([script("many-sources"), "-c", c],
                               capture_output=True, timeout=10)
            err = p.stderr.decode()
            self.assertEqual(p.returncode, 2, (c, err))
            self.assertIn("bad -c '%s': it must be more than one source "
                          "address's 1000 ports and at most the 4000 that 4 "
                          "addresses allow" % c, err)
            self.assertIn("CONNS: more than one source address's 1000 "
                          "ports, at most 4000", err)

    def test_many_sources_no_write_prints_the_report_only(self):
        results = os.path.join(os.environ["FORKLOOP_SOURCE_ROOT"], "bench",
                               "results")
        before = set(os.listdir(results))
        p = subprocess.run([script("many-sources"), "-c", "1100", "-d", "1",
                            "--no-write"], capture_output=True, timeout=100,
                           start_new_session=True)
        out = p.stdout.decode()
        self.assertEqual(p.returncode, 0, p.stderr.decode())
        self.assertTrue(out.startswith("# 1100 connections from four source "
                                       "addresses: "), out)
        self.assertNotIn(".md\n", out)
        self.assertNotIn("conns_lost", out)
        for key in ["messages", "errors", "connects"]:
            self.assertRegex(out, r"\| `%s` \| \d" % key)
        self.assertIn("| `errors` | 0 |", out)
        new = set(os.listdir(results)) - before
        self.assertEqual([n for n in new if "many-sources" in n], [])


if __name__ == "__main__":
    if sys.argv[1:] == ["--in-netns"]:
        in_netns()
    else:
        fltest.main()
