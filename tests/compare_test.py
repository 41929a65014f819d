"""bench/compare: its arithmetic on made-up runs (spread, noise and repeats,
targets judged within a rotation, busy %, memory noise, the knee), its
reports, --cores (the affinity mask split into server and client CPUs, the
refusal of a core count that leaves the client short, what each design runs
as), the --threads-cpu judgement, --tls (TLS cells for event and fork mode
only, each beside its plaintext twin, and their report), and a run of
--quick, --curve --quick and --tls --quick from a copy of the repository
with nothing beside it."""

import contextlib
import glob
import importlib.machinery
import importlib.util
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.dont_write_bytecode = True
ROOT = os.environ.get("FORKLOOP_SOURCE_ROOT") or os.path.dirname(
    os.path.dirname(os.path.abspath(__file__)))
COMPARE = os.path.join(ROOT, "bench", "compare")


def load_compare():
    loader = importlib.machinery.SourceFileLoader("compare", COMPARE)
    spec = importlib.util.spec_from_loader("compare", loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


cmp = load_compare()


def run(msgs, **kw):
    """A made-up forkloop-bench run."""
    r = {"load": "closed", "conns": 100, "pipeline": 1, "size": 64,
         "msgs_per_sec": msgs, "duration_s": 2.0, "errors": 0,
         "connects": 100, "unanswered": 100,
         "latency_us": {"p50": 300.0, "p90": 400.0, "p99": 500.0,
                        "p999": 900.0, "max": 1000.0, "mean": 320.0},
         "server_cpu_pct": 99.0, "server_cpu_us_per_msg": 4.0,
         "server_procs": 1, "client_cpu_pct": 70.0}
    r.update(kw)
    return r


def point(pct, offered, achieved, p99, **kw):
    p = {"percent": pct, "offered": offered, "n": 1, "achieved": achieved,
         "shortfall_pct": max(0.0, 100.0 * (offered - achieved) / offered),
         "p50": p99 / 3, "p99": p99, "p999": p99 * 2,
         "server_cpu_pct": 50.0, "client_cpu_pct": 40.0,
         "listen_overflows": 0, "server_procs": 1, "unanswered": 0}
    p["short"] = p["shortfall_pct"] > cmp.KNEE_SHORT_PCT
    p.update(kw)
    return p


class SpreadTest(unittest.TestCase):
    def test_fewer_than_five_runs_use_the_range(self):
        st = cmp.spread([90.0, 100.0, 110.0])
        self.assertEqual(st["n"], 3)
        self.assertEqual(st["measure"], "range")
        self.assertEqual((st["min"], st["median"], st["max"]),
                         (90.0, 100.0, 110.0))
        self.assertAlmostEqual(st["spread"], 0.20)

    def test_five_runs_or_more_use_the_iqr(self):
        st = cmp.spread([100, 101, 102, 103, 200])
        self.assertEqual(st["measure"], "iqr")
        self.assertEqual((st["q1"], st["q3"]), (101, 103))
        self.assertAlmostEqual(st["spread"], 2 / 102)
        self.assertFalse(cmp.is_noisy(st))

    def test_failed_runs_are_left_out(self):
        st = cmp.spread([None, 100.0, None, 104.0])
        self.assertEqual(st["n"], 2)
        self.assertEqual(st["median"], 102.0)
        self.assertAlmostEqual(st["spread"], 4 / 102)

    def test_one_run_has_no_spread_and_is_not_noisy(self):
        st = cmp.spread([100.0])
        self.assertIsNone(st["spread"])
        self.assertFalse(cmp.is_noisy(st))
        self.assertEqual(cmp.spread([])["n"], 0)

    def test_noisy_is_strictly_above_ten_percent(self):
        self.assertFalse(cmp.is_noisy(cmp.spread([95.0, 100.0, 105.0])))
        self.assertTrue(cmp.is_noisy(cmp.spread([94.9, 100.0, 105.0])))


class RepeatTest(unittest.TestCase):
    def test_more_rotations(self):
        self.assertEqual(cmp.more_rotations(3, False, 9), 0)
        self.assertEqual(cmp.more_rotations(3, True, 9), 2)
        self.assertEqual(cmp.more_rotations(5, True, 9), 1)
        self.assertEqual(cmp.more_rotations(9, True, 9), 0)
        self.assertEqual(cmp.more_rotations(2, True, 3), 1)

    def script(self, table):
        """run_one answering from table[name][rotation]; records calls."""
        calls = []

        def one(name, rot):
            calls.append((name, rot))
            v = table[name][rot]
            return None if v is None else {"msgs_per_sec": v}
        return one, calls

    def test_a_quiet_cell_runs_reps_rotations_in_rotating_order(self):
        one, calls = self.script({"a": [100, 101, 102], "b": [50, 50, 51],
                                  "c": [10, 10, 10]})
        runs, rots = cmp.run_rotations(["a", "b", "c"], 3, 9, one)
        self.assertEqual(rots, 3)
        self.assertEqual([n for n, _ in calls],
                         ["a", "b", "c", "b", "c", "a", "c", "a", "b"])
        self.assertEqual(cmp.values(runs["a"]), [100, 101, 102])

    def test_a_noisy_cell_gets_whole_rotations_until_quiet(self):
        # b is noisy in its first 3 runs; 5 runs bring its IQR down.
        one, calls = self.script({"a": [100] * 9,
                                  "b": [50, 70, 50, 51, 50, 50, 50, 50, 50]})
        more = []
        runs, rots = cmp.run_rotations(["a", "b"], 3, 9, one,
                                       on_more=more.append)
        self.assertEqual(rots, 5)
        self.assertEqual(more, [2])
        self.assertEqual(len(runs["a"]), 5)
        self.assertEqual(len(runs["b"]), 5)
        self.assertEqual(cmp.noisy_servers(runs), [])

    def test_repeats_stop_at_max_reps_and_the_cell_stays_noisy(self):
        one, calls = self.script({"a": [100] * 9,
                                  "b": [50, 80, 30, 90, 20, 70, 40, 85, 25]})
        runs, rots = cmp.run_rotations(["a", "b"], 3, 9, one)
        self.assertEqual(rots, 9)
        self.assertEqual(len(calls), 18)
        self.assertEqual(cmp.noisy_servers(runs), ["b"])

    def test_failed_runs_keep_their_rotation_slot(self):
        one, _ = self.script({"a": [100, None, 100], "b": [50, 50, 50]})
        runs, rots = cmp.run_rotations(["a", "b"], 3, 3, one)
        self.assertEqual(cmp.values(runs["a"]), [100, None, 100])


class TargetTest(unittest.TestCase):
    def test_ratios_are_taken_within_each_rotation(self):
        # Medians give 100 / 100 = 1.00, but within each rotation event
        # trails the yardstick that ran beside it.
        ev = [80, 100, 120]
        ys = [100, 125, 100]
        j = cmp.judge_ratios(ev, ys, 0.90)
        self.assertEqual(j["ratios"], [0.8, 0.8, 1.2])
        self.assertAlmostEqual(j["median"], 0.8)
        self.assertEqual((j["k"], j["n"]), (1, 3))
        self.assertFalse(j["met"])

    def test_met_on_the_median_ratio_with_k_of_n(self):
        j = cmp.judge_ratios([95, 89, 92], [100, 100, 100], 0.90)
        self.assertTrue(j["met"])
        self.assertEqual((j["k"], j["n"]), (2, 3))
        self.assertTrue(cmp.judge_ratios([90], [100], 0.90)["met"])

    def test_rotations_with_a_failed_run_are_left_out(self):
        j = cmp.judge_ratios([None, 95, 96], [100, None, 100], 0.90)
        self.assertEqual(j["n"], 1)
        self.assertIsNone(cmp.judge_ratios([None], [100], 0.90))


class BusyTest(unittest.TestCase):
    def test_busy_is_clamped_at_100_and_the_raw_value_kept(self):
        busy, raw = cmp.busy_pct(2.51, 2.5)
        self.assertEqual(busy, 100.0)
        self.assertAlmostEqual(raw, 100.4)
        self.assertEqual(cmp.busy_pct(1.0, 2.0), (50.0, 50.0))
        self.assertEqual(cmp.busy_pct(1.0, 1.0, cpus=2)[0], 50.0)
        self.assertEqual(cmp.busy_pct(1.0, 0), (None, None))

    def test_wall_time_spans_both_cpu_readings_and_the_set_up(self):
        now = [100.0]
        clock = lambda: now[0]
        cpu = iter([5.0, 7.7])

        def read_cpu():
            now[0] += 0.01  # reading /proc takes time
            return next(cpu)

        def work():
            now[0] += 0.3  # connections set up, not in duration + warmup
            now[0] += 2.5  # warmup 0.5 s + 2 s measured
            now[0] += 0.2  # settling afterwards
            return "done"

        result, cpu_s, wall = cmp.bracketed(read_cpu, work, clock)
        self.assertEqual(result, "done")
        self.assertAlmostEqual(cpu_s, 2.7)
        self.assertAlmostEqual(wall, 3.02)
        # Over duration + warmup alone the same run read 108%.
        self.assertGreater(100 * cpu_s / 2.5, 100)
        self.assertLess(cmp.busy_pct(cpu_s, wall)[1], 100)


class MemoryTest(unittest.TestCase):
    def test_growth_within_noise_has_no_per_connection_number(self):
        self.assertIsNone(cmp.per_conn_bytes(1000, 990, 100))
        self.assertIsNone(cmp.per_conn_bytes(1000, 1000, 100))
        self.assertIsNone(cmp.per_conn_bytes(1000, 1004, 100))
        self.assertEqual(cmp.per_conn_bytes(1000, 1005, 100), 51)
        self.assertEqual(cmp.per_conn_bytes(1240, 13039, 10000), 1208)

    def test_noise_is_printed_in_words(self):
        self.assertEqual(cmp.fmt_per_conn(None), "below measurement noise")
        self.assertEqual(cmp.fmt_per_conn(1092), "1092 B/conn")


STAT0 = """cpu  100 0 50 800 10 0 5 35 0 0
cpu0 50 0 25 400 5 0 2 18 0 0
cpu1 50 0 25 400 5 0 3 17 0 0
intr 1 2 3
"""
STAT1 = """cpu  200 0 100 1600 20 0 10 70 0 0
cpu0 100 0 50 800 10 0 4 36 0 0
cpu1 150 0 75 1260 10 0 5 17 0 0
intr 1 2 3
"""


class MachineTest(unittest.TestCase):
    def test_steal_is_a_share_of_the_interval_jiffies(self):
        a, b = cmp.parse_cpu_stat(STAT0), cmp.parse_cpu_stat(STAT1)
        self.assertAlmostEqual(cmp.steal_pct(a, b, "cpu"), 3.5)
        self.assertAlmostEqual(cmp.steal_pct(a, b, "cpu0"), 3.6)
        self.assertEqual(cmp.steal_pct(a, b, "cpu1"), 0.0)
        self.assertIsNone(cmp.steal_pct(a, b, "cpu7"))
        self.assertIsNone(cmp.steal_pct(a, a, "cpu"))

    def test_listen_overflows_from_netstat(self):
        text0 = ("TcpExt: SyncookiesSent ListenOverflows ListenDrops\n"
                 "TcpExt: 0 3 4\nIpExt: InNoRoutes\nIpExt: 0\n")
        text1 = ("TcpExt: SyncookiesSent ListenOverflows ListenDrops\n"
                 "TcpExt: 0 10 12\nIpExt: InNoRoutes\nIpExt: 0\n")
        a, b = cmp.parse_netstat(text0), cmp.parse_netstat(text1)
        self.assertEqual(cmp.counter_delta(a, b, "TcpExt.ListenOverflows"),
                         7)
        self.assertEqual(cmp.counter_delta(a, b, "TcpExt.ListenDrops"), 8)
        self.assertIsNone(cmp.counter_delta(a, b, "TcpExt.Nope"))

    def test_machine_between_reads_both_pinned_cpus(self):
        a = {"t": 0.0, "loadavg": [0.5, 0.4, 0.3],
             "stat": cmp.parse_cpu_stat(STAT0)}
        b = {"t": 3.0, "loadavg": [1.5, 0.6, 0.3],
             "stat": cmp.parse_cpu_stat(STAT1)}
        m = cmp.machine_between(a, b)
        self.assertEqual(sorted(m["steal_pct"]), ["cpu", "cpu0", "cpu1"])
        self.assertEqual(cmp.fmt_load(m), "0.50 - 1.50")
        self.assertIn("cpu0 3.6%", cmp.fmt_steal(m["steal_pct"]))
        self.assertEqual(cmp.fmt_steal({"cpu": 0.0, "cpu0": 0.0,
                                        "cpu1": 0.0}), "-")


class LittleAndRateTest(unittest.TestCase):
    def test_little_ratio_from_the_bench_or_computed(self):
        self.assertEqual(cmp.little_ratio(run(1000, little_ratio=0.97)),
                         0.97)
        r = run(250000.0)  # 100 conns, mean 320 us
        self.assertAlmostEqual(cmp.little_ratio(r), 0.8)
        self.assertTrue(cmp.little_off(0.8))
        self.assertFalse(cmp.little_off(1.0))
        self.assertIsNone(cmp.little_ratio(run(1000, load="churn")))

    def test_unanswered_beyond_a_closed_loop_in_flight(self):
        self.assertEqual(cmp.unanswered_beyond(run(1000)), 0)
        self.assertEqual(cmp.unanswered_beyond(run(1000, unanswered=130)),
                         30)
        self.assertEqual(cmp.unanswered_beyond(
            run(1000, load="churn", conns=10, unanswered=10)), 0)
        self.assertEqual(cmp.unanswered_beyond(
            run(1000, load="open", unanswered=5)), 5)

    def test_shortfall_from_the_bench_or_computed(self):
        self.assertEqual(cmp.shortfall_pct(
            run(900, load="open", rate=1000, rate_shortfall_pct=10.0)), 10.0)
        self.assertAlmostEqual(cmp.shortfall_pct(
            run(900, load="open", rate=1000)), 10.0)
        self.assertEqual(cmp.shortfall_pct(
            run(990, load="open", rate=1000, rate_achieved=1000.0)), 0.0)
        self.assertEqual(cmp.curve_rates(200000, [10, 110]),
                         [20000, 220000])

    def test_a_point_is_short_only_beyond_one_percent(self):
        runs = [run(989, load="open", rate=1000),
                run(995, load="open", rate=1000),
                run(980, load="open", rate=1000)]
        p = cmp.point_summary(100, 1000, runs)
        self.assertAlmostEqual(p["shortfall_pct"], 1.1)
        self.assertTrue(p["short"])
        p = cmp.point_summary(100, 1000, [run(990, load="open", rate=1000)])
        self.assertFalse(p["short"])
        self.assertEqual(cmp.point_summary(100, 1000, [None])["n"], 0)


class KneeTest(unittest.TestCase):
    def test_knee_where_achieved_falls_short(self):
        pts = [point(10, 1000, 1000, 100), point(50, 5000, 5000, 200),
               point(90, 9000, 8500, 400), point(110, 11000, 9000, 900)]
        k = cmp.find_knee(pts)
        self.assertEqual(k["offered"], 9000)
        self.assertEqual(k["why"], ["short"])

    def test_knee_where_p99_passes_ten_times_the_lowest(self):
        pts = [point(110, 11000, 11000, 5000),
               point(10, 1000, 1000, 100), point(50, 5000, 5000, 1000),
               point(70, 7000, 7000, 1001)]
        k = cmp.find_knee(pts)
        self.assertEqual(k["offered"], 7000)
        self.assertEqual(k["why"], ["p99"])
        self.assertEqual(k["base_p99"], 100)

    def test_no_knee(self):
        pts = [point(10, 1000, 1000, 100), point(110, 11000, 10900, 999)]
        self.assertIsNone(cmp.find_knee(pts))
        self.assertIsNone(cmp.find_knee([]))

    def test_exactly_one_percent_short_or_ten_times_is_no_knee(self):
        pts = [point(10, 1000, 1000, 100), point(100, 10000, 9900, 1000)]
        self.assertFalse(pts[1]["short"])
        self.assertIsNone(cmp.find_knee(pts))
        pts[1]["p99"] = 1000.5
        self.assertEqual(cmp.find_knee(pts)["offered"], 10000)

    def test_limits_named_from_the_numbers(self):
        # The client fell behind its schedule for half the tail or more.
        p = point(90, 9000, 8000, 100, issue_lag_p99=50.0,
                  server_cpu_pct=60.0)
        kind, text = cmp.limiter("event", p)
        self.assertEqual(kind, "client")
        self.assertIn("the load generator, not the server", text)
        self.assertIn("50 us late at p99, of a 100 us latency p99", text)
        # A busy client that kept its schedule is not the limit.
        p = point(90, 9000, 8000, 100, issue_lag_p99=49.0,
                  client_cpu_pct=99.0, server_cpu_pct=60.0)
        self.assertNotEqual(cmp.limiter("event", p)[0], "client")
        p = point(90, 9000, 8000, 100, listen_overflows=12)
        self.assertEqual(cmp.limiter("event", p)[0], "backlog")
        p = point(90, 9000, 8000, 100, server_cpu_pct=99.5,
                  client_cpu_pct=95.0)
        kind, text = cmp.limiter("event", p)
        self.assertEqual(kind, "cpu")
        self.assertIn("100% of its one CPU", text)
        p = point(90, 9000, 8000, 100, server_cpu_pct=70.0,
                  server_procs=101)
        kind, text = cmp.limiter("fork", p)
        self.assertEqual(kind, "procs")
        self.assertIn("101 processes", text)
        p = point(90, 9000, 8000, 100,
                  machine={"load_after": [7.5, 3.0, 1.0]})
        kind, text = cmp.limiter("event", p)
        self.assertEqual(kind, "unknown")
        self.assertIn("the machine's load average 7.50", text)
        s = cmp.knee_sentence("event", cmp.find_knee([p]), [p])
        self.assertIn("; no measured limit explains it: ", s)

    def test_one_sentence_per_design(self):
        pts = [point(10, 1000, 1000, 100),
               point(90, 9000, 8000, 400, server_cpu_pct=99.0)]
        s = cmp.knee_sentence("event", cmp.find_knee(pts), pts)
        self.assertTrue(s.startswith("event: the knee is at 9.0k msgs/s"))
        self.assertIn("11.1% short", s)
        self.assertIn("99% of its one CPU", s)
        self.assertEqual(s.count(". "), 0)
        self.assertTrue(s.endswith("."))
        pts = [point(10, 1000, 1000, 100)]
        self.assertIn("no knee up to 1.0k msgs/s",
                      cmp.knee_sentence("fork", None, pts))


class ProgressTest(unittest.TestCase):
    def test_time_left_from_the_steps_so_far(self):
        self.assertIsNone(cmp.eta_s(5.0, 0, 0.0, 10))
        self.assertAlmostEqual(cmp.eta_s(30.0, 2, 0.0, 10), 120.0)
        self.assertAlmostEqual(cmp.eta_s(30.0, 2, 0.5, 10), 90.0)
        self.assertEqual(cmp.fmt_mmss(125.4), "2:05")
        self.assertEqual(cmp.progress_text("cell", 3, 11, 42, 130),
                         "cell 3 of 11, elapsed 0:42, about 2:10 left")

    def test_a_terminal_gets_one_updated_line(self):
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            p = cmp.Progress("cell", 2, tty=True)
            p.start_step(2)
            p.run_done("event 10c 64B 1000 msgs/s")
            p.finish()
        out = err.getvalue()
        self.assertIn("\r\033[Kcompare: cell 1 of 2, elapsed 0:00", out)
        self.assertIn("| event 10c 64B 1000 msgs/s", out)
        self.assertNotIn("\n", out)

    def test_a_log_gets_one_line_per_run(self):
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            p = cmp.Progress("cell", 2, tty=False)
            p.start_step(2)
            p.run_done("event 10c 64B 1000 msgs/s")
            p.run_done("fork 10c 64B 500 msgs/s")
        self.assertEqual(err.getvalue(),
                         "compare: event 10c 64B 1000 msgs/s\n"
                         "compare: fork 10c 64B 500 msgs/s\n")


def sweep_entry(server, cell, rates, **kw):
    kw = dict({"little_ratio": 1.0, "unanswered": cell["conns"]}, **kw)
    runs = [None if v is None else run(v, rotation=i, conns=cell["conns"],
                                       **kw)
            for i, v in enumerate(rates)]
    st = cmp.spread(rates)
    return {"server": server, "cell": cell, "runs": runs,
            "median": cmp.median_run(runs), "spread": st,
            "noisy": cmp.is_noisy(st), "rotations": len(rates)}


def made_up_data():
    c100 = {"load": "closed", "conns": 100, "size": 64}
    c10 = {"load": "closed", "conns": 10, "size": 64}
    mach = {"load_before": [0.5, 0.4, 0.3], "load_after": [1.5, 0.5, 0.3],
            "steal_pct": {"cpu": 0.0, "cpu0": 2.5, "cpu1": 0.0}}
    return {
        "date": "2026-01-01", "host": {
            "host": "box", "kernel": "6.1", "cpus": 2, "cpu_model": "x",
            "libevent": "2.1.12", "commit": "abc", "loadavg_start":
            [0.5, 0.4, 0.3], "loadavg_end": [1.0, 0.5, 0.3]},
        "config": {"secs": 2, "warmup": 0, "curve_warmup": 0.5, "reps": 3,
                   "max_reps": 9,
                   "noise_limit": 0.10, "nice": 0,
                   "yardstick": "bench/tools/epoll_echo.c"},
        "machine": dict(mach, steal_pct={"cpu": 0.0, "cpu0": 0.0,
                                         "cpu1": 0.0}),
        "missing": {}, "servers_run": ["yardstick", "event", "fork"],
        "memory": [{"server": "yardstick", "idle_conns": 100, "pss_kb": 430,
                    "pss_start_kb": 432, "rss_kb": 1600, "procs": 1,
                    "pss_per_conn_bytes": cmp.per_conn_bytes(432, 430, 100)},
                   {"server": "event", "idle_conns": 100, "pss_kb": 1290,
                    "pss_start_kb": 1170, "rss_kb": 3300, "procs": 1,
                    "pss_per_conn_bytes": cmp.per_conn_bytes(1170, 1290,
                                                             100)}],
        "client_check": [],
        "syscalls": [],
        "sweep": [sweep_entry("yardstick", c100, [100000, 125000, 100000]),
                  sweep_entry("event", c100, [80000, 100000, 120000]),
                  sweep_entry("fork", c100, [50000, 50000, 50000]),
                  sweep_entry("yardstick", c10, [90000, 91000, 92000]),
                  sweep_entry("event", c10, [88000, 89000, 90000],
                              little_ratio=1.3),
                  sweep_entry("fork", c10, [40000, 41000, 42000])],
        "machine_cells": [dict(mach, cell=c100, rotations=9,
                               noisy=["yardstick", "event"]),
                          dict(mach, cell=c10, rotations=3, noisy=[])],
        "elapsed_s": 60.0, "plot": cmp.NO_PLOT,
    }


class ReportTest(unittest.TestCase):
    def write(self, fn, data):
        d = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, d)
        path = os.path.join(d, "r.md")
        fn(path, data, None)
        with open(path) as f:
            return f.read()

    def test_targets_show_the_median_ratio_and_k_of_n(self):
        rows = cmp.targets(made_up_data())
        self.assertEqual(rows[0], ("event mode >= 0.90x yardstick, 100c 64B",
                                   "0.80x (0.80-1.20) ~", "1 of 3", "no"))

    def test_noisy_cells_are_marked_in_every_table(self):
        md = self.write(cmp.write_md, made_up_data())
        sections = md.split("\n## ")
        for title in ("Throughput", "Spread", "Latency", "Little",
                      "Server CPU", "forkloop-bench's own CPU"):
            sec = [s for s in sections if s.startswith(title)][0]
            row = [l for l in sec.splitlines() if l.startswith("| 100c 64B")]
            self.assertTrue(row, title)
            self.assertIn("| ~", row[0], title)
            self.assertIn("`~`: noisy", sec, title)
        self.assertNotIn("| ~", md.split("| 10c 64B", 1)[1].split("\n")[0])

    def test_report_words(self):
        md = self.write(cmp.write_md, made_up_data())
        self.assertIn("| yardstick | 100 | 430 | below measurement noise |",
                      md)
        self.assertIn("| event | 100 | 1290 | 1229 B |", md)
        self.assertNotRegex(md, r"\| -\d+ B \|")
        self.assertIn("| 10c 64B | 1.00 | 1.30 ! | 1.00 |", md)
        self.assertIn("| 100c 64B | 9 | 0.50 - 1.50 | all 0.0%, cpu0 2.5%, "
                      "cpu1 0.0% | yardstick, event |", md)
        self.assertIn("no plot: gnuplot was not installed", md)
        self.assertIn("IQR / median", md)
        self.assertNotIn("unanswered", md.split("## Throughput")[1]
                         .split("\n\n")[1])
        self.assertNotIn("### Unanswered", md)
        data = made_up_data()
        data["sweep"][2] = sweep_entry("fork", data["sweep"][2]["cell"],
                                       [50000, 50000, 50000],
                                       unanswered=130)
        md = self.write(cmp.write_md, data)
        self.assertIn("| 100c 64B | ~100.0k | ~100.0k (1.00) | 50.0k (0.50) "
                      "unanswered 130 |", md)
        self.assertIn("| 100c 64B | fork | 130 | 30 |", md)
        self.assertNotIn("shared", md)

    def test_curve_report_has_one_sentence_per_design(self):
        data = made_up_data()
        pts = {n: [dict(point(10, 1000, 1000, 100), runs=[],
                        machine=data["machine"]),
                   dict(point(90, 9000, 8000, 400, server_cpu_pct=99.0),
                        runs=[], machine=data["machine"])]
               for n in ("yardstick", "event", "fork")}
        knees = {n: cmp.find_knee(p) for n, p in pts.items()}
        data["curve"] = {
            "capacity": {n: {"median": 10000.0, "runs": [run(10000.0)]}
                         for n in pts},
            "C": 10000.0, "best": "yardstick", "percents": [10, 90],
            "rates": [1000, 9000], "points": pts,
            "knees": {n: {"offered": k["offered"]} for n, k in knees.items()},
            "sentences": {n: cmp.knee_sentence(n, knees[n], pts[n])
                          for n in pts}}
        md = self.write(cmp.write_curve_md, data)
        for n in pts:
            self.assertIn("- %s: the knee is at 9.0k msgs/s offered" % n, md)
        self.assertIn("| 90 knee | 9.0k | 8.0k | 11.1% |", md)
        self.assertIn("no plot: gnuplot was not installed", md)

    def test_missing_gnuplot_is_said_once(self):
        which = shutil.which
        err = io.StringIO()
        cmp.shutil.which = lambda name: None
        cmp.STATUS["gnuplot_said"] = False
        try:
            with contextlib.redirect_stderr(err):
                self.assertIsNone(cmp.write_png("/nonexistent/x.png", {}))
                self.assertIsNone(cmp.write_curve_png("/nonexistent/y.png",
                                                      {}))
        finally:
            cmp.shutil.which = which
        self.assertEqual(err.getvalue(),
                         "compare: no plot: install gnuplot\n")


class CoresTest(unittest.TestCase):
    def test_core_counts_from_repeats_and_comma_lists(self):
        self.assertEqual(cmp.parse_cores(None), [1])
        self.assertEqual(cmp.parse_cores(["1"]), [1])
        self.assertEqual(cmp.parse_cores(["4,1", "2", "1"]), [1, 2, 4])
        for bad in (["x"], ["0"], ["1,-2"], [","]):
            with self.assertRaises(ValueError):
                cmp.parse_cores(bad)

    def test_servers_first_n_cpus_of_the_mask_client_the_next_n(self):
        lay = cmp.core_layout({1, 0}, 1)
        self.assertEqual(lay, {"cores": 1, "server": [0], "client": [1],
                               "bench_threads": 1})
        self.assertEqual(lay, cmp.DEFAULT_LAYOUT)
        lay = cmp.core_layout(range(8), 3)
        self.assertEqual((lay["server"], lay["client"]),
                         ([0, 1, 2], [3, 4, 5]))
        self.assertEqual(lay["bench_threads"], 3)
        lay = cmp.core_layout([9, 2, 7, 5], 2)
        self.assertEqual((lay["server"], lay["client"]), ([2, 5], [7, 9]))
        lay = cmp.core_layout([4, 5, 6], 1)
        self.assertEqual((lay["server"], lay["client"]), ([4], [5]))

    def test_a_client_shorter_than_the_server_is_refused(self):
        with self.assertRaises(ValueError) as e:
            cmp.core_layout([0, 1], 2)
        msg = str(e.exception)
        self.assertIn("--cores 2 needs 4 CPUs", msg)
        self.assertIn("may use 2 (CPUs 0-1)", msg)
        self.assertIn("--cores 1 at most", msg)
        with self.assertRaises(ValueError):
            cmp.core_layout(range(3), 2)
        with self.assertRaises(ValueError) as e:
            cmp.core_layout([0], 1)
        self.assertIn("too few for any core count", str(e.exception))
        self.assertEqual(len(cmp.core_layouts(range(4), [1, 2])), 2)
        with self.assertRaises(ValueError):
            cmp.core_layouts(range(4), [1, 2, 3])

    def test_plan_refuses_before_anything_runs(self):
        c = cmp.config(cmp.parse_args(["--cores", "1,2"]))
        self.assertEqual(c["cores"], [1, 2])
        with self.assertRaises(ValueError):
            cmp.plan(c, [0, 1])
        self.assertEqual([l["cores"] for l in cmp.plan(c, range(4))], [1, 2])
        for only in ("--curve", "--threads-cpu"):
            c = cmp.config(cmp.parse_args([only, "--cores", "1",
                                           "--cores", "2"]))
            with self.assertRaises(ValueError) as e:
                cmp.plan(c, range(8))
            self.assertIn("one core count", str(e.exception))
            c = cmp.config(cmp.parse_args([only, "--cores", "2"]))
            self.assertEqual(cmp.plan(c, range(4))[0]["server"], [0, 1])

    def test_the_command_exits_2_on_a_core_count_it_cannot_give(self):
        n = len(os.sched_getaffinity(0)) // 2 + 1
        with tempfile.TemporaryDirectory() as d:
            p = subprocess.run([COMPARE, "--cores", "1,%d" % n, "--no-build",
                                "--build-dir", os.path.join(d, "none"),
                                "--out", d],
                               capture_output=True, text=True, timeout=60,
                               start_new_session=True)
            self.assertEqual(os.listdir(d), [])
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn("compare: --cores %d needs %d CPUs" % (n, 2 * n),
                      p.stderr)
        self.assertEqual(p.stdout, "")

    def test_bench_threads_one_per_client_cpu_at_most_the_connections(self):
        lay = cmp.core_layout(range(8), 4)
        self.assertEqual(cmp.bench_threads(lay, 1), 1)
        self.assertEqual(cmp.bench_threads(lay, 3), 3)
        self.assertEqual(cmp.bench_threads(lay, 100), 4)
        self.assertEqual(cmp.bench_threads(cmp.DEFAULT_LAYOUT, 1000), 1)
        exe = {"bench": "/b/forkloop-bench"}
        cell = {"load": "closed", "conns": 100, "size": 64}
        argv = cmp.bench_argv(exe, "127.0.0.1:1", cell, 2, 0,
                              layout=cmp.DEFAULT_LAYOUT)
        self.assertEqual(argv[:3], ["taskset", "-c", "1"])
        self.assertNotIn("--threads", argv)
        argv = cmp.bench_argv(exe, "127.0.0.1:1", cell, 2, 0,
                              layout=cmp.core_layout(range(4), 2))
        self.assertEqual(argv[:3], ["taskset", "-c", "2,3"])
        self.assertEqual(argv[argv.index("--threads") + 1], "2")

    def test_what_each_design_runs_as(self):
        exe = {"yardstick": "/b/epoll_echo", "echo": "/b/forkloop-echo"}
        one = cmp.DEFAULT_LAYOUT
        self.assertEqual(cmp.server_argv("yardstick", exe, one),
                         ([0], ["/b/epoll_echo", "0", "127.0.0.1"]))
        self.assertEqual(cmp.server_argv("event", exe, one),
                         ([0], ["/b/forkloop-echo", "--mode", "event",
                                "--listen", "127.0.0.1:0"]))
        self.assertEqual(cmp.server_instances("yardstick", one), 1)
        two = cmp.core_layout([0, 1, 2, 3], 2)
        self.assertEqual(cmp.server_instances("yardstick", two), 2)
        self.assertEqual(cmp.server_instances("event", two), 1)
        self.assertEqual(cmp.server_instances("fork", two), 1)
        self.assertEqual(cmp.server_argv("yardstick", exe, two, 0, 0),
                         ([0], ["/b/epoll_echo", "--reuseport", "0",
                                "127.0.0.1"]))
        self.assertEqual(cmp.server_argv("yardstick", exe, two, 1, 4321),
                         ([1], ["/b/epoll_echo", "--reuseport", "4321",
                                "127.0.0.1"]))
        cpus, argv = cmp.server_argv("event", exe, two)
        self.assertEqual(cpus, [0, 1])
        self.assertEqual(argv[-3:], ["--threads", "2", "--cpu-affinity"])
        cpus, argv = cmp.server_argv("fork", exe, two)
        self.assertEqual(cpus, [0, 1])
        self.assertNotIn("--threads", argv)
        cpus, argv = cmp.server_argv("event", exe, one, threads=2)
        self.assertEqual((cpus, argv[-2:]), ([0], ["--threads", "2"]))
        self.assertEqual(cmp.pinned([2, 0])[:3], ["taskset", "-c", "0,2"])

    def test_cpus_in_words_and_steal_per_cpu_of_the_layout(self):
        self.assertEqual(cmp.fmt_cpus([0]), "CPU 0")
        self.assertEqual(cmp.fmt_cpus([3, 2, 1, 0]), "CPUs 0-3")
        self.assertEqual(cmp.fmt_cpus([0, 2, 5]), "CPUs 0, 2, 5")
        stat = "cpu  1 0 0 1 0 0 0 0\n" + "".join(
            "cpu%d 1 0 0 1 0 0 0 %d\n" % (i, i) for i in range(12))
        stat2 = "cpu  1 0 0 5 0 0 0 4\n" + "".join(
            "cpu%d 1 0 0 5 0 0 0 %d\n" % (i, i + 4) for i in range(12))
        a = {"t": 0.0, "loadavg": None, "stat": cmp.parse_cpu_stat(stat)}
        b = {"t": 1.0, "loadavg": None, "stat": cmp.parse_cpu_stat(stat2)}
        m = cmp.machine_between(a, b, cmp.core_layout(range(12), 5))
        self.assertEqual(len(m["steal_pct"]), 11)
        self.assertEqual(cmp.fmt_steal(m["steal_pct"]).split(", ")[:3],
                         ["all 50.0%", "cpu0 50.0%", "cpu1 50.0%"])
        self.assertTrue(cmp.fmt_steal(m["steal_pct"]).endswith(
            "cpu9 50.0%"))
        self.assertEqual(cmp.its_cpus(cmp.DEFAULT_LAYOUT), "its one CPU")
        self.assertEqual(cmp.its_cpus(cmp.core_layout(range(4), 2)),
                         "its 2 CPUs")


def threads_runs(upms, msgs=100000.0):
    return [None if u is None else run(msgs, server_cpu_us_per_msg=u,
                                       server_threads=1, rotation=i)
            for i, u in enumerate(upms)]


class ThreadsCpuTest(unittest.TestCase):
    def test_at_most_is_judged_on_the_median_with_k_of_n(self):
        j = cmp.judge_ratios([10.5, 12.0, 11.0], [10, 10, 10], 1.10,
                             at_most=True)
        self.assertAlmostEqual(j["median"], 1.10)
        self.assertTrue(j["met"])
        self.assertEqual((j["k"], j["n"], j["direction"]), (2, 3, "<="))
        j = cmp.judge_ratios([12.0, 11.5, 10.0], [10, 10, 10], 1.10,
                             at_most=True)
        self.assertFalse(j["met"])
        self.assertEqual(j["k"], 1)
        self.assertEqual(cmp.judge_ratios([1], [1], 0.9)["direction"], ">=")

    def test_ratio_within_each_rotation_not_of_medians(self):
        # Medians 10 and 10.5 would say 1.05; rotation by rotation threads 2
        # spends 1.2x, 1.2x and 0.9x.
        names = cmp.THREADS_CPU_NAMES
        runs = {names[0]: threads_runs([10.0, 8.75, 11.667]),
                names[1]: threads_runs([12.0, 10.5, 10.5])}
        mach = {"load_before": [0.1] * 3, "load_after": [0.2] * 3,
                "steal_pct": {"cpu": 0.0}}
        e = cmp.threads_cpu_cell({"load": "closed", "conns": 100,
                                  "size": 64}, names, runs, 3, mach)
        j = e["judged"]
        self.assertAlmostEqual(j["median"], 1.2)
        self.assertEqual((j["k"], j["n"]), (1, 3))
        self.assertFalse(j["met"])
        self.assertEqual(e["designs"][names[1]]["cpu_us_per_msg"]["median"],
                         10.5)
        self.assertIn("not met", cmp.threads_cpu_sentence(e))

    def test_failed_runs_leave_their_rotation_out_and_noise_is_said(self):
        names = cmp.THREADS_CPU_NAMES
        runs = {names[0]: threads_runs([10.0, None, 10.0, 10.0, 10.0]),
                names[1]: threads_runs([10.5, 10.0, 14.0, 10.2, 10.4])}
        e = cmp.threads_cpu_cell({"load": "closed", "conns": 1000,
                                  "size": 64}, names, runs, 5,
                                 {"steal_pct": {}})
        self.assertEqual(e["judged"]["n"], 4)
        self.assertEqual(e["judged"]["k"], 3)
        self.assertTrue(e["judged"]["met"])
        self.assertEqual(e["noisy"], [])
        runs[names[1]] = threads_runs([10.5, 10.0, 14.0, 8.0, 12.4])
        e = cmp.threads_cpu_cell({"load": "closed", "conns": 1000,
                                  "size": 64}, names, runs, 5,
                                 {"steal_pct": {}})
        self.assertEqual(e["noisy"], [names[1]])
        self.assertIn("(noisy: threads 2)", cmp.threads_cpu_sentence(e))

    def test_rotations_repeat_while_cpu_per_message_is_noisy(self):
        table = {"a": [10.0, 10.1, 10.0, 10.0, 10.0],
                 "b": [10.0, 13.0, 10.0, 10.1, 10.0]}

        def one(n, rot):
            # Throughput steady, CPU per message not: only the latter counts.
            return {"msgs_per_sec": 1000.0,
                    "server_cpu_us_per_msg": table[n][rot]}
        runs, rots = cmp.run_rotations(["a", "b"], 2, 9, one,
                                       key="server_cpu_us_per_msg")
        self.assertEqual(rots, 5)
        runs, rots = cmp.run_rotations(["a", "b"], 2, 9, one)
        self.assertEqual(rots, 2)

    def test_report(self):
        names = cmp.THREADS_CPU_NAMES
        data = made_up_data()
        data["servers_run"] = names
        data["layouts"] = [dict(cmp.DEFAULT_LAYOUT, servers_run=names,
                                commands={n: ["taskset -c 0 x"]
                                          for n in names})]
        mach = dict(data["machine_cells"][0])
        cells = []
        for conns, t2 in ((100, [10.5, 10.0, 10.9]),
                          (1000, [13.0, 10.0, 20.0])):
            runs = {names[0]: threads_runs([10.0, 10.0, 10.0]),
                    names[1]: threads_runs(t2)}
            cells.append(cmp.threads_cpu_cell(
                {"load": "closed", "conns": conns, "size": 64}, names, runs,
                3, mach))
        data["threads_cpu"] = {"target": 1.10, "names": names,
                               "cells": cells}
        d = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, d)
        path = os.path.join(d, "t.md")
        cmp.write_threads_md(path, data)
        with open(path) as f:
            md = f.read()
        self.assertIn("| 100c 64B | 1.050x (1.000-1.090) | 3 of 3 | yes |",
                      md)
        self.assertIn("| 1000c 64B | 1.300x (1.000-2.000) ~ | 1 of 3 | no |",
                      md)
        self.assertIn("| 1000c 64B | threads 2 | 3 | ~13.00 | 10.00-20.00 "
                      "| 76.9% |", md)
        self.assertIn("| 1000c 64B | 3 | threads 1 | 10.00 | 20.00 | 2.000 "
                      "|", md)
        self.assertIn("on CPU 0, forkloop-bench on CPU 1", md)
        self.assertNotIn("The yardstick is", md)


def cores_data():
    """made_up_data measured at 1 and 2 cores."""
    data = made_up_data()
    two = cmp.core_layout(range(4), 2)
    data["layouts"] = [dict(cmp.DEFAULT_LAYOUT,
                            servers_run=["yardstick", "event", "fork"]),
                       dict(two, servers_run=["yardstick", "event", "fork"])]
    more = []
    for key in ("sweep", "memory", "machine_cells"):
        for x in data[key]:
            x["cores"] = 1
            y = json.loads(json.dumps(x))
            y["cores"] = 2
            more.append((key, y))
    for key, y in more:
        if key == "sweep" and y["median"]:
            y["spread"] = dict(y["spread"], median=2 * y["spread"]["median"])
            y["median"]["msgs_per_sec"] *= 2
        data[key].append(y)
    data["client_check"] = [{"cores": 1, "conns": 100, "size": 64,
                             "median": {"forkloop-bench": 95.0,
                                        "epoll_client": 100.0},
                             "runs": {"forkloop-bench": [95.0],
                                      "epoll_client": [100.0]},
                             "judged": cmp.judge_ratios([95.0], [100.0],
                                                        0.95)}]
    return data


class CoresReportTest(unittest.TestCase):
    def write(self, data, cores_png=None):
        d = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, d)
        path = os.path.join(d, "r.md")
        cmp.write_md(path, data, None, cores_png)
        with open(path) as f:
            return f.read()

    def test_one_core_report_is_as_before(self):
        md = self.write(made_up_data())
        self.assertNotIn("Against cores", md)
        self.assertNotIn("1 core:", md)
        self.assertIn("Servers on CPU 0, forkloop-bench on CPU 1.", md)
        self.assertIn("## Server CPU: us per message, median (min-max) over "
                      "runs; busy % of its one CPU", md)
        self.assertIn("| 100c 64B | ~4.00, 99.0% (1) |", md)

    def test_every_core_count_gets_its_sections_and_one_summary(self):
        md = self.write(cores_data())
        self.assertEqual(md.count("## Against cores"), 1)
        for n in ("1 core", "2 cores"):
            for title in ("Targets", "Throughput", "Spread", "Latency",
                          "Server CPU", "Memory"):
                self.assertIn("## %s: %s" % (n, title), md)
        self.assertIn("At 1 core: servers on CPU 0, forkloop-bench on CPU 1",
                      md)
        self.assertIn("At 2 cores: every server design on CPUs 0-1", md)
        self.assertIn("2 independent single-thread processes listening on "
                      "one port with SO_REUSEPORT", md)
        self.assertIn("forkloop-bench on CPUs 2-3 with `--threads 2`", md)
        self.assertIn("busy % of its 2 CPUs", md)
        self.assertIn("busy % of CPUs 2-3", md)
        self.assertIn("| 100c 64B | event | 1 | ~100.0k (80.0k-120.0k) | "
                      "300 / 500 | 4.00 | 99.0% |", md)
        self.assertIn("| 100c 64B | event | 2 | ~200.0k (80.0k-120.0k) | ",
                      md)
        self.assertIn("Not run at 2 cores: the minimal client", md)
        self.assertIn("forkloop-bench >= 0.95x raw-epoll client, 100c 64B",
                      md.split("## 1 core: Targets")[1].split("##")[0])
        self.assertIn("no plot: gnuplot was not installed", md)
        self.assertIn("not as a ratio measured in one rotation", md)

    def test_no_cores_plot_for_one_core_count(self):
        self.assertIsNone(cmp.write_cores_png("/nonexistent/c.png",
                                              made_up_data()))


def tls_entry(server, cell, rates, upms):
    """A made-up --tls cell: throughput and server CPU per message per
    run, and the TLS figures forkloop-bench reports over TLS."""
    e = sweep_entry(server, cell, rates)
    for r, u in zip(e["runs"], upms):
        r["server_cpu_us_per_msg"] = u
        if cell.get("tls"):
            r["tls"] = {"verify": False, "version": "TLSv1.3",
                        "cipher": "TLS_AES_256_GCM_SHA384",
                        "handshakes": 100, "resumed": 0,
                        "handshake_latency_us": {"p50": 900.0,
                                                 "p99": 2000.0}}
    e["median"] = cmp.median_run(e["runs"])
    e["cpu_us_per_msg"] = cmp.upm_spread(e["runs"])
    return e


class TlsTest(unittest.TestCase):
    def test_tls_listeners_for_event_and_fork_only(self):
        exe = {"echo": "/x/forkloop-echo", "yardstick": "/x/epoll_echo"}
        tls = {"cert": "/t/cert.pem", "key": "/t/key.pem"}
        for kind in ("event", "fork"):
            cpus, argv = cmp.server_argv(kind, exe, cmp.DEFAULT_LAYOUT,
                                         tls=tls)
            self.assertEqual(cpus, [0])
            self.assertEqual(argv[argv.index("--listen") + 1],
                             "tls://127.0.0.1:0")
            self.assertEqual(argv[argv.index("--tls-cert") + 1],
                             "/t/cert.pem")
            self.assertEqual(argv[argv.index("--tls-key") + 1], "/t/key.pem")
        _, argv = cmp.server_argv("event", exe, cmp.DEFAULT_LAYOUT)
        self.assertNotIn("--tls-cert", argv)
        self.assertEqual(argv[argv.index("--listen") + 1], "127.0.0.1:0")
        with self.assertRaises(ValueError):
            cmp.server_argv("yardstick", exe, cmp.DEFAULT_LAYOUT, tls=tls)

    def test_cells_each_beside_its_plaintext_twin(self):
        cells = cmp.tls_cells()
        self.assertEqual([cmp.cell_name(c) for c in cells],
                         ["churn 10c 64B", "tls churn 10c 64B",
                          "100c 4096B", "tls 100c 4096B"])
        exe = {"bench": "/x/forkloop-bench"}
        argv = cmp.bench_argv(exe, "127.0.0.1:9", cells[1], 2, 0)
        self.assertEqual(argv[:3], ["taskset", "-c", "1"])
        self.assertIn("--churn", argv)
        self.assertIn("--tls", argv)
        self.assertEqual(argv[-1], "127.0.0.1:9")
        self.assertNotIn("--tls", cmp.bench_argv(exe, "127.0.0.1:9",
                                                 cells[2], 2, 0))

    def test_options(self):
        c = cmp.config(cmp.parse_args(["--tls"]))
        self.assertTrue(c["tls"])
        self.assertEqual((c["reps"], c["max_reps"], c["secs"]), (3, 9, 2))
        self.assertTrue(c["out"].endswith(os.path.join("bench", "results")))
        c = cmp.config(cmp.parse_args(["--tls", "--quick"]))
        self.assertEqual((c["reps"], c["max_reps"], c["secs"]), (2, 3, 0.5))
        self.assertFalse(cmp.config(cmp.parse_args([]))["tls"])
        with self.assertRaises(ValueError):
            cmp.plan(cmp.config(cmp.parse_args(["--tls", "--cores", "1,2"])),
                     list(range(8)))
        for other in ("--curve", "--threads-cpu"):
            err = io.StringIO()
            with contextlib.redirect_stderr(err), \
                    self.assertRaises(SystemExit) as e:
                cmp.parse_args(["--tls", other])
            self.assertEqual(e.exception.code, 2)

    @unittest.skipUnless(shutil.which("openssl"), "needs openssl")
    def test_throwaway_certificate(self):
        d = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, d)
        with contextlib.redirect_stderr(io.StringIO()):
            t = cmp.make_cert(d)
        self.assertEqual(t, {"cert": os.path.join(d, "cert.pem"),
                             "key": os.path.join(d, "key.pem")})
        with open(t["cert"]) as f:
            self.assertIn("BEGIN CERTIFICATE", f.read())
        with open(t["key"]) as f:
            self.assertIn("PRIVATE KEY", f.read())

    def test_report(self):
        churn, bulk = cmp.TLS_SHAPES
        tchurn, tbulk = dict(churn, tls=True), dict(bulk, tls=True)
        sweep = [tls_entry("event", churn, [15000, 15500, 14500],
                           [50.0, 48.0, 52.0]),
                 tls_entry("fork", churn, [700, 690, 710],
                           [1500.0, 1400.0, 1600.0]),
                 tls_entry("event", tchurn, [1500, 1480, 1520],
                           [650.0, 600.0, 700.0]),
                 tls_entry("fork", tchurn, [100, 60, 110],
                           [10000.0, 12000.0, 11000.0]),
                 tls_entry("event", bulk, [60000, 61000, 59000],
                           [16.0, 16.0, 16.0]),
                 tls_entry("fork", bulk, [24000, 24000, 24000],
                           [60.0, 60.0, 60.0]),
                 tls_entry("event", tbulk, [27000, 27000, 27000],
                           [40.0, 40.0, 40.0]),
                 tls_entry("fork", tbulk, [13000, 13000, 13000],
                           [250.0, 250.0, 250.0])]
        data = made_up_data()
        data["servers_run"] = ["event", "fork"]
        data["missing"] = {"yardstick": cmp.TLS_NO_YARDSTICK}
        data["layouts"] = [dict(cmp.DEFAULT_LAYOUT,
                                servers_run=["event", "fork"],
                                commands={"event": ["taskset -c 0 x"]})]
        data["sweep"] = sweep
        data["machine_cells"] = [dict(data["machine_cells"][1], cell=c,
                                      noisy=[]) for c in cmp.tls_cells()]
        data["tls"] = {"fork_over_event": cmp.tls_ratios(sweep)}
        d = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, d)
        path = os.path.join(d, "t.md")
        cmp.write_tls_md(path, data)
        with open(path) as f:
            md = f.read()
        self.assertIn("Not measured: yardstick (it has no TLS", md)
        self.assertIn("Negotiated: TLSv1.3, TLS_AES_256_GCM_SHA384", md)
        # TLS's extra CPU per connection: 650 - 50 and 11000 - 1500
        self.assertIn("| tls churn 10c 64B | event | 1.5k (1.5k-1.5k) | "
                      "650.00 (600.00-700.00) | +600.0 | ", md)
        self.assertIn("| tls churn 10c 64B | fork | ~100 (60-110) | "
                      "11000.00 (10000.00-12000.00) | +9500.0 | ", md)
        self.assertIn("| 900 / 2000 |", md)
        self.assertIn("| churn 10c 64B | event | 15.0k (14.5k-15.5k) | "
                      "50.00 (48.00-52.00) | - |", md)
        # fork / event within each rotation: 10000/650, 12000/600, ...
        self.assertIn("| tls churn 10c 64B | server CPU us per message | "
                      "15.714 (15.385-20.000) | 3 |", md)
        self.assertIn("| tls 100c 4096B | msgs/s | 0.481 (0.481-0.481) | 3 |",
                      md)
        self.assertIn("CERT.pem and KEY.pem", md)
        self.assertNotIn("The yardstick is", md)


class UnixCellTest(unittest.TestCase):
    def test_every_design_listens_on_a_unix_socket_too(self):
        exe = {"echo": "/x/forkloop-echo", "yardstick": "/x/epoll_echo"}
        one = cmp.DEFAULT_LAYOUT
        self.assertEqual(cmp.server_argv("yardstick", exe, one, unix="/d/y"),
                         ([0], ["/x/epoll_echo", "--unix", "/d/y", "0",
                                "127.0.0.1"]))
        for kind in ("event", "fork"):
            _, argv = cmp.server_argv(kind, exe, one, unix="/d/e")
            self.assertEqual(argv[1:5], ["--mode", kind, "--listen",
                                         "127.0.0.1:0"])
            self.assertEqual(argv[5:7], ["--listen", "unix:/d/e"])
        _, argv = cmp.server_argv("event", exe, one)
        self.assertNotIn("unix:", " ".join(argv))

    def test_cell_name_and_target(self):
        self.assertEqual(cmp.cell_name(cmp.UNIX_CELL), "unix 100c 64B")
        self.assertEqual(cmp.cell_name(dict(cmp.UNIX_CELL, unix=False)),
                         "100c 64B")
        exe = {"bench": "/x/forkloop-bench"}
        argv = cmp.bench_argv(exe, "unix:/d/e.sock", cmp.UNIX_CELL, 2, 0)
        self.assertEqual(argv[-1], "unix:/d/e.sock")
        self.assertNotIn("--tls", argv)

    def test_report_gives_tcp_share(self):
        tcp = dict(cmp.UNIX_CELL, unix=False)
        ent = {}
        for s, t, u in (("event", 100000.0, 160000.0),
                        ("fork", 90000.0, 150000.0)):
            for cell, rate, upm in ((tcp, t, 8.0), (cmp.UNIX_CELL, u, 5.0)):
                e = tls_entry(s, cell, [rate] * 3, [upm] * 3)
                ent[(s, cmp.cell_name(cell))] = e
        text = "\n".join(cmp.unix_lines(ent, ["yardstick", "event", "fork"],
                                        ""))
        self.assertIn("## Unix socket against TCP, 100c 64B", text)
        self.assertIn("| event | 100.0k | 160.0k | 1.60 | 8.00 | 5.00 | "
                      "38% |", text)
        self.assertIn("| fork | 90.0k | 150.0k | 1.67 |", text)
        self.assertNotIn("yardstick", text)
        self.assertEqual(cmp.unix_lines({}, ["event"], ""), [])


class OptionsTest(unittest.TestCase):
    def test_threads_cpu_defaults_are_short(self):
        c = cmp.config(cmp.parse_args(["--threads-cpu"]))
        self.assertEqual((c["conns"], c["sizes"]), ([100, 1000], [64]))
        self.assertEqual((c["reps"], c["max_reps"], c["secs"]), (5, 9, 2))
        self.assertEqual(c["cores"], [1])
        self.assertTrue(c["out"].endswith(os.path.join("bench", "results")))
        c = cmp.config(cmp.parse_args(["--threads-cpu", "--quick"]))
        self.assertEqual((c["reps"], c["max_reps"], c["secs"]), (2, 3, 0.5))
        err = io.StringIO()
        with contextlib.redirect_stderr(err), \
                self.assertRaises(SystemExit) as e:
            cmp.parse_args(["--threads-cpu", "--curve"])
        self.assertEqual(e.exception.code, 2)

    def test_quick_curve_is_small_and_the_yardstick_is_in_the_repo(self):
        c = cmp.config(cmp.parse_args(["--curve", "--quick"]))
        self.assertEqual((c["reps"], c["secs"]), (1, 1))
        self.assertEqual(c["curve_percents"], [25, 50, 90, 110])
        self.assertEqual(c["yardstick"], "bench/tools/epoll_echo.c")
        c = cmp.config(cmp.parse_args(["--max-reps", "4"]))
        self.assertEqual((c["reps"], c["max_reps"]), (3, 4))
        self.assertEqual(cmp.config(cmp.parse_args([]))["max_reps"], 9)
        self.assertEqual(cmp.config(cmp.parse_args([]))["curve_percents"],
                         [10, 25, 50, 70, 80, 90, 95, 100, 110])


def two_cpus():
    try:
        cpus = os.sched_getaffinity(0)
    except AttributeError:
        return False
    return {0, 1} <= cpus and shutil.which("taskset") is not None


def repo_files(root):
    """The files a clone would have: tracked and not ignored (committed or
    not yet), or, outside a git checkout, everything but build output."""
    p = subprocess.run(["git", "-C", root, "ls-files", "-z", "--cached",
                        "--others", "--exclude-standard"],
                       capture_output=True)
    if p.returncode == 0 and p.stdout:
        return [f for f in p.stdout.decode().split("\0")
                if f and os.path.isfile(os.path.join(root, f))]
    out = []
    for d, dirs, files in os.walk(root):
        dirs[:] = [x for x in dirs if not x.startswith("build")
                   and x not in (".git", "__pycache__")]
        out += [os.path.relpath(os.path.join(d, f), root) for f in files]
    return out


@unittest.skipUnless(two_cpus(), "needs CPUs 0 and 1 and taskset")
class FreshCloneTest(unittest.TestCase):
    """bench/compare from a copy of the repository with no shared/ beside
    it: everything it needs is inside."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="forkloop-compare-")
        cls.repo = os.path.join(cls.tmp, "forkloop")
        for f in repo_files(ROOT):
            dst = os.path.join(cls.repo, f)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            shutil.copy2(os.path.join(ROOT, f), dst)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def compare(self, *args):
        env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
        p = subprocess.run([os.path.join("bench", "compare")] + list(args),
                           cwd=self.repo, capture_output=True, text=True,
                           timeout=240, env=env, start_new_session=True)
        self.assertEqual(p.returncode, 0, p.stderr[-3000:])
        return p

    def check_md(self, md):
        with open(md) as f:
            text = f.read()
        self.assertNotIn("../", text)
        self.assertNotIn("shared/", text)
        self.assertNotIn(self.tmp, text)
        return text

    def test_quick_and_quick_curve(self):
        self.assertFalse(os.path.exists(os.path.join(self.tmp, "shared")))
        self.assertTrue(os.path.exists(os.path.join(
            self.repo, "bench", "tools", "epoll_echo.c")))
        out = os.path.join(self.tmp, "q")
        self.compare("--quick", "--out", out)
        js = [f for f in glob.glob(os.path.join(out, "*.json"))
              if not f.endswith("-curve.json")]
        self.assertEqual(len(js), 1)
        self.assertTrue(os.path.exists(js[0][:-5] + ".md"))
        with open(js[0]) as f:
            data = json.load(f)
        self.assertEqual(data["servers_run"], ["yardstick", "event", "fork"])
        self.assertEqual({e["server"] for e in data["sweep"]},
                         {"yardstick", "event", "fork"})
        self.assertEqual(data["config"]["yardstick"],
                         "bench/tools/epoll_echo.c")
        for e in data["sweep"]:
            self.assertGreaterEqual(len(e["runs"]), 2)
            for r in e["runs"]:
                if r:
                    self.assertLessEqual(r["server_cpu_pct"], 100.0)
        text = self.check_md(js[0][:-5] + ".md")
        self.assertIn("## Spread of throughput", text)

        out = os.path.join(self.tmp, "c")
        self.compare("--curve", "--quick", "--out", out)
        js = glob.glob(os.path.join(out, "*-curve.json"))
        self.assertEqual(len(js), 1)
        with open(js[0]) as f:
            data = json.load(f)
        self.assertEqual(sorted(data["curve"]["points"]),
                         ["event", "fork", "yardstick"])
        for pts in data["curve"]["points"].values():
            self.assertEqual([p["percent"] for p in pts], [25, 50, 90, 110])
        text = self.check_md(js[0][:-5] + ".md")
        for n in ("yardstick", "event", "fork"):
            self.assertIn("\n- %s: " % n, text)
        self.assertNotIn("sweep", data)

    @unittest.skipUnless(shutil.which("openssl"), "needs openssl")
    def test_quick_tls(self):
        # After test_quick_and_quick_curve (alphabetical): the build is
        # there. Event and fork over TLS, no yardstick, no key left behind.
        out = os.path.join(self.tmp, "t")
        before = set(glob.glob(os.path.join(tempfile.gettempdir(),
                                            "forkloop-compare-tls-*")))
        self.compare("--tls", "--quick", "--reps", "1", "--secs", "0.3",
                     "--out", out)
        js = glob.glob(os.path.join(out, "*-tls.json"))
        self.assertEqual(len(js), 1)
        with open(js[0]) as f:
            data = json.load(f)
        self.assertEqual(data["servers_run"], ["event", "fork"])
        self.assertIn("yardstick", data["missing"])
        self.assertEqual({cmp.cell_name(e["cell"]) for e in data["sweep"]},
                         {"churn 10c 64B", "tls churn 10c 64B",
                          "100c 4096B", "tls 100c 4096B"})
        for e in data["sweep"]:
            for r in e["runs"]:
                self.assertIsNotNone(r)
                self.assertEqual(r["errors"], 0, r)
                if e["cell"].get("tls"):
                    self.assertGreater(r["tls"]["handshakes"], 0)
                    self.assertEqual(r["tls"]["resumed"], 0)
                else:
                    self.assertIsNone(r["tls"])
        text = self.check_md(js[0][:-5] + ".md")
        self.assertIn("## Full handshakes", text)
        self.assertIn("CERT.pem", text)
        after = set(glob.glob(os.path.join(tempfile.gettempdir(),
                                           "forkloop-compare-tls-*")))
        self.assertEqual(after - before, set())
        self.assertEqual(glob.glob(os.path.join(self.repo, "**", "*.pem"),
                                   recursive=True), [])


if __name__ == "__main__":
    unittest.main(verbosity=2)
