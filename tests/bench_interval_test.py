"""forkloop-bench -i and --json-stream against forkloop-echo: the intervals
cover the measured window without gaps, their messages, bytes and errors add
up to the report's exactly, and a server that stops answering shows in the
interval it stopped in: no messages, and the stall in its max."""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fltest  # noqa: E402

LAT_KEYS = {"p50", "p90", "p99", "p999", "max", "mean", "count"}
INTERVAL_KEYS = {"type", "start_s", "end_s", "messages", "bytes", "errors",
                 "error_kinds", "msgs_per_sec", "mbytes_per_sec",
                 "latency_us", "latency_uncorrected_us", "conns_open"}
# "0.50-1.00  messages  msgs/s  MB/s  p50 p99 max [p50 p99 max]  N (+M)  C"
TEXT_LINE = re.compile(r"^(\d+\.\d\d)-(\d+\.\d\d)\s+(\d+)\s+([\d.]+)\s+"
                       r"([\d.]+)((?:\s+[\d.]+){3,6})\s+(\d+) \(\+(\d+)\)"
                       r"\s+(\d+)$")
# Generous: the window's first worker may start measuring a little after
# the instant the intervals count from, and this machine is busy.
SLACK_S = 0.1


class BenchIntervalTest(fltest.ProcTestCase):

    def echo(self):
        srv = self.start(fltest.Server, [fltest.binary("echo"), "--listen",
                                         "127.0.0.1:0"])
        return srv, "127.0.0.1:%d" % srv.port

    def bench(self, *args, status=0):
        argv = [fltest.binary("bench")] + [str(a) for a in args]
        p = subprocess.run(argv, capture_output=True, timeout=60,
                           start_new_session=True)
        self.assertEqual(p.returncode, status,
                         "%s: %s" % (argv, p.stderr.decode()))
        return p.stdout.decode(), p.stderr.decode()

    def report_row(self, out, name):
        m = re.search(r"^%s\s+(\S+)" % name, out, re.M)
        self.assertIsNotNone(m, out)
        return m.group(1)

    def check_text(self, out, conns, interval, rate=False):
        """The interval lines, then the report: returns the lines parsed."""
        lines = [TEXT_LINE.match(l) for l in out.splitlines()]
        lines = [m for m in lines if m]
        self.assertTrue(lines, out)
        total = int(self.report_row(out, "messages"))
        duration = float(self.report_row(out, "duration_s"))
        errors = int(self.report_row(out, "errors"))
        self.assertEqual(sum(int(m.group(3)) for m in lines), total, out)
        self.assertEqual(sum(int(m.group(8)) for m in lines), errors, out)
        self.assertEqual(int(lines[-1].group(7)), errors, out)
        self.assertEqual(lines[0].group(1), "0.00", out)
        for a, b in zip(lines, lines[1:]):
            self.assertEqual(a.group(2), b.group(1), out)
            self.assertAlmostEqual(float(a.group(2)) - float(a.group(1)),
                                   interval, delta=0.011)
        self.assertAlmostEqual(float(lines[-1].group(2)), duration,
                               delta=SLACK_S)
        # p50, p99, max (and the same uncorrected in an open loop)
        lat = lines[0].group(6).split()
        self.assertEqual(len(lat), 6 if rate else 3, lines[0].group(0))
        for m in lines:
            self.assertEqual(int(m.group(9)), conns, m.group(0))
        # the report follows the intervals, apart
        self.assertIn("\n\ntarget ", out)
        return lines

    def check_stream(self, out, interval, duration=None):
        """Every line is JSON: the intervals, then the summary. Returns
        (intervals, summary)."""
        objs = [json.loads(l) for l in out.splitlines()]
        self.assertGreaterEqual(len(objs), 2, out)
        ivals, summary = objs[:-1], objs[-1]
        self.assertEqual(summary["type"], "summary", out)
        self.assertEqual(list(summary)[0], "type")
        for j in ivals:
            self.assertEqual(j["type"], "interval", j)
            self.assertEqual(set(j), INTERVAL_KEYS, j)
            self.assertTrue(LAT_KEYS <= set(j["latency_us"]), j)
            self.assertTrue(LAT_KEYS <= set(j["latency_uncorrected_us"]), j)
            self.assertEqual(set(j["error_kinds"]),
                             set(summary["error_kinds"]), j)
            # what completed in it, and what was owed at its end
            self.assertGreaterEqual(j["latency_us"]["count"], j["messages"])
            self.assertGreaterEqual(j["latency_us"]["count"],
                                    j["latency_uncorrected_us"]["count"])
        for k in ("messages", "bytes", "errors"):
            self.assertEqual(sum(j[k] for j in ivals), summary[k], k)
        for k in summary["error_kinds"]:
            self.assertEqual(sum(j["error_kinds"][k] for j in ivals),
                             summary["error_kinds"][k], k)
        self.assertEqual(ivals[0]["start_s"], 0)
        for a, b in zip(ivals, ivals[1:]):
            self.assertAlmostEqual(a["end_s"], b["start_s"], places=6)
            self.assertAlmostEqual(a["end_s"] - a["start_s"], interval,
                                   places=6)
        self.assertAlmostEqual(ivals[-1]["end_s"], summary["duration_s"],
                               delta=SLACK_S)
        if duration is not None:
            self.assertEqual(len(ivals), round(duration / interval))
        return ivals, summary

    def json_keys(self, target, *args):
        out, _ = self.bench("--json", "-c", 2, "-d", "0.3", *args, target)
        lines = out.splitlines()
        self.assertEqual(len(lines), 1, out)
        return list(json.loads(lines[0]))

    def test_interval_lines_add_up(self):
        _, target = self.echo()
        out, _ = self.bench("-i", "0.5", "-d", 3, "-c", 10, target)
        lines = self.check_text(out, 10, 0.5)
        self.assertEqual(len(lines), 6, out)

    def test_json_stream_adds_up(self):
        _, target = self.echo()
        out, _ = self.bench("--json-stream", "-i", "0.5", "-d", 3, "-c", 10,
                            target)
        ivals, summary = self.check_stream(out, 0.5, duration=3)
        self.assertGreater(summary["messages"], 0)
        self.assertEqual(list(summary), ["type"] + self.json_keys(target)[1:])
        self.assertEqual(self.json_keys(target)[0], "type")
        for j in ivals:
            self.assertEqual(j["conns_open"], 10, j)

    def test_json_stream_default_interval_and_warmup(self):
        # without -i, 1 s; the window starts after --warmup
        _, target = self.echo()
        out, _ = self.bench("--json-stream", "--warmup", "0.5", "-d", 2,
                            "-c", 4, target)
        ivals, summary = self.check_stream(out, 1.0, duration=2)
        self.assertAlmostEqual(summary["duration_s"], 2, delta=SLACK_S)

    def test_messages_alone_intervals_add_up(self):
        # -n without -d: intervals until the last echo, the last one partial
        _, target = self.echo()
        out, _ = self.bench("--json-stream", "-i", "0.2", "-n", 30000,
                            "-c", 4, target)
        ivals, summary = self.check_stream(out, 0.2)
        self.assertEqual(summary["messages"], 30000)

    def test_rate_shows_both_latencies(self):
        # open loop: each line has the latency from the due time and from
        # the send, side by side
        _, target = self.echo()
        out, _ = self.bench("-i", "0.5", "-d", 2, "-c", 4, "--rate", 2000,
                            target)
        self.assertRegex(out, r"-+ from due -+ -+ from send -+\n")
        lines = self.check_text(out, 4, 0.5, rate=True)
        self.assertEqual(len(lines), 4, out)
        out, _ = self.bench("--json-stream", "-i", "0.5", "-d", 2, "-c", 4,
                            "--rate", 2000, target)
        ivals, summary = self.check_stream(out, 0.5, duration=2)
        self.assertIsNotNone(summary["issue_lag_us"])
        self.assertGreater(summary["messages"], 3000)
        for j in ivals:
            # each value from the due time is one from the send or later
            self.assertGreaterEqual(j["latency_us"]["max"] * 1.02,
                                    j["latency_uncorrected_us"]["max"], j)

    def test_threads_interval_lines_add_up(self):
        _, target = self.echo()
        out, _ = self.bench("-i", "0.5", "-d", 3, "-c", 10, "--threads", 2,
                            target)
        lines = self.check_text(out, 10, 0.5)
        self.assertEqual(len(lines), 6, out)

    def test_threads_json_stream_adds_up(self):
        _, target = self.echo()
        out, _ = self.bench("--json-stream", "-i", "0.5", "-d", 3, "-c", 10,
                            "--threads", 2, target)
        ivals, summary = self.check_stream(out, 0.5, duration=3)
        self.assertEqual(summary["threads"], 2)
        self.assertGreater(summary["messages"], 0)
        for j in ivals:
            self.assertEqual(j["conns_open"], 10, j)

    def test_threads_rate_json_stream(self):
        _, target = self.echo()
        out, _ = self.bench("--json-stream", "-i", "0.5", "-d", 2, "-c", 4,
                            "--rate", 2000, "--threads", 2, target)
        ivals, summary = self.check_stream(out, 0.5, duration=2)
        self.assertGreater(summary["messages"], 3000)
        out, _ = self.bench("-i", "0.5", "-d", 1, "-c", 4, "--rate", 1000,
                            "--threads", 2, target)
        self.check_text(out, 4, 0.5, rate=True)

    def test_threads_messages_alone_intervals_add_up(self):
        # the threads' shares of -n end at different times
        _, target = self.echo()
        out, _ = self.bench("--json-stream", "-i", "0.2", "-n", 30000,
                            "-c", 5, "--threads", 3, target)
        ivals, summary = self.check_stream(out, 0.2)
        self.assertEqual(summary["messages"], 30000)

    def stall(self, *extra):
        """--json-stream while the server is stopped for a while: some
        interval has no messages and the stall in its max."""
        srv, target = self.echo()
        p = self.start(fltest.Proc, [fltest.binary("bench"), "--json-stream",
                                     "-i", "0.5", "-d", "4", "-c", "8"] +
                       list(extra) + [target], stdout=subprocess.PIPE)
        lines, first = [], threading.Event()

        def reader():
            for raw in p.p.stdout:
                lines.append(raw.decode())
                first.set()
            first.set()
        t = threading.Thread(target=reader, daemon=True)
        t.start()
        # each line is flushed as it is written: the first comes long
        # before the run ends
        self.assertTrue(first.wait(30), p.stderr_text())
        self.assertTrue(p.p.poll() is None, "the first interval came at "
                        "the end: %s" % lines)
        os.kill(srv.pid, signal.SIGSTOP)
        try:
            time.sleep(1.6)
        finally:
            os.kill(srv.pid, signal.SIGCONT)
        self.assertEqual(p.wait(60), 0, p.stderr_text())
        t.join(10)
        ivals, summary = self.check_stream("".join(lines), 0.5, duration=4)
        stalled = [j for j in ivals if j["messages"] == 0]
        self.assertTrue(stalled, ivals)
        for j in stalled:
            self.assertEqual(j["msgs_per_sec"], 0, j)
            self.assertEqual(j["mbytes_per_sec"], 0, j)
            # 8 messages owed, their ages lower bounds of their latency
            self.assertGreaterEqual(j["latency_us"]["count"], 8, j)
        self.assertGreaterEqual(max(j["latency_us"]["max"] for j in stalled),
                                400000, stalled)
        self.assertGreaterEqual(
            max(j["latency_uncorrected_us"]["max"] for j in stalled),
            400000, stalled)
        self.assertGreater(summary["messages"], 0)
        self.assertEqual(summary["errors"], 0)

    def test_stall_shows_in_an_interval(self):
        self.stall()

    def test_threads_stall_shows_in_an_interval(self):
        self.stall("--threads", "2")

    def test_bad_values_are_usage(self):
        _, target = self.echo()
        for args, msg in [
                (["-i", "0"], "bad --interval '0'"),
                (["-i", "-1"], "bad --interval '-1'"),
                (["-i", "abc"], "bad --interval 'abc'"),
                (["--interval", "3601"], "bad --interval '3601'"),
                (["--json", "-i", "1"], "use --json-stream"),
                (["--json", "--json-stream"], "drop --json"),
                (["--json-stream", "--json", "-i", "1"], "drop --json")]:
            out, err = self.bench(*(args + ["-d", "0.2", target]), status=2)
            self.assertIn(msg, err, args)
            self.assertIn("usage:", err, args)
            self.assertEqual(out, "", args)
        # a missing value, last on the line
        out, err = self.bench("-d", "0.2", target, "-i", status=2)
        self.assertIn("'-i' needs a value", err)


if __name__ == "__main__":
    fltest.main()
