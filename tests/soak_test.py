"""bench/soak: its growth test on made-up series (a flat, noisy process
passes; one descriptor or 4 KiB per connection fails), its verdict on a
stand-in server that leaks a descriptor or memory per connection, and the
CI run: every mode of forkloop-echo under the soak's load for 0.75 minutes
each, which must pass."""

import importlib.machinery
import importlib.util
import os
import random
import shutil
import subprocess
import sys
import tempfile
import types
import unittest

sys.dont_write_bytecode = True
ROOT = os.environ.get("FORKLOOP_SOURCE_ROOT") or os.path.dirname(
    os.path.dirname(os.path.abspath(__file__)))
SOAK = os.path.join(ROOT, "bench", "soak")
STAND_IN = os.path.join(ROOT, "tests", "soak_leaky_echo.py")
CHURN = 80.0            # connections a second, as bench/soak's churn
CI_MINUTES = "0.75"


def load_soak():
    loader = importlib.machinery.SourceFileLoader("soak", SOAK)
    spec = importlib.util.spec_from_loader("soak", loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


soak = load_soak()


def series(secs, level, per_s, noise, seed):
    """One sample a second: level + per_s * t + uniform noise."""
    r = random.Random(seed)
    ts = [float(t) for t in range(1, int(secs) + 1)]
    return ts, [level + per_s * t + r.uniform(-noise, noise) for t in ts]


def grows(name, ts, ys):
    return soak.growth(ts, ys, soak.RESOURCES[name][2])["grows"]


class GrowthTest(unittest.TestCase):
    def test_flat_noisy_process_passes(self):
        for seed in range(200):
            for secs in (12, 45, 600):
                ts, rss = series(secs, 8 * 1024, 0, 1024, seed)
                self.assertFalse(grows("rss", ts, rss), (seed, secs))
                ts, pss = series(secs, 6 * 1024, 0, 3 * 1024, seed)
                self.assertFalse(grows("pss_total", ts, pss), (seed, secs))
                ts, fds = series(secs, 13, 0, 2, seed)
                self.assertFalse(grows("fds", ts, [round(x) for x in fds]))
                ts, kids = series(secs, 5, 0, 2, seed)
                self.assertFalse(grows("children", ts,
                                       [round(x) for x in kids]))

    def test_warmup_rise_then_flat_passes(self):
        ts = [float(t) for t in range(1, 46)]
        rss = [8 * 1024 + min(t, 8) * 1024 for t in ts]
        self.assertFalse(grows("rss", ts, rss))

    def test_one_descriptor_per_connection_fails(self):
        for rate in (CHURN, 1.0):
            for secs in (12, 45):
                ts, fds = series(secs, 13, rate, 2, 1)
                self.assertTrue(grows("fds", ts, [round(x) for x in fds]),
                                (rate, secs))

    def test_four_kib_per_connection_fails_in_the_ci_run(self):
        secs = float(CI_MINUTES) * 60
        for seed in range(50):
            ts, rss = series(secs, 8 * 1024, 4 * CHURN, 1024, seed)
            self.assertTrue(grows("rss", ts, rss), seed)

    def test_a_child_left_every_four_seconds_fails(self):
        ts, kids = series(45, 5, 0.25, 0, 1)
        self.assertTrue(grows("children", ts, [int(x) for x in kids]))

    def test_quarters_alone_do_not_fail(self):
        # High just after the warm-up, low, then a step up at the end: the
        # last quarter's mean is above the second quarter's, the fit flat.
        ts = [float(t) for t in range(1, 41)]
        fds = [13] * 8 + [40] * 2 + [13] * 20 + [20] * 10
        g = soak.growth(ts, fds, soak.RESOURCES["fds"][2])
        self.assertGreater(g["quarter_rise"], g["bound"])
        self.assertLess(g["fitted_rise"], g["bound"])
        self.assertFalse(g["grows"])

    def test_too_few_samples_is_an_error(self):
        with self.assertRaises(ValueError):
            soak.growth([1.0] * 7, [1] * 7, soak.RESOURCES["fds"][2])

    def test_zombie_runs_follow_one_pid(self):
        # Under churn a sample always has some zombie, each one new.
        self.assertEqual(soak.zombie_run([{1}, {2, 3}, {4}, {5}]), 1)
        self.assertEqual(soak.zombie_run([{1}, {1, 2}, {2}, {2, 7}]), 3)
        self.assertEqual(soak.zombie_run([set(), set()]), 0)


def run_soak(args, env=None):
    e = dict(os.environ)
    e.update(env or {})
    p = subprocess.Popen([sys.executable, SOAK] + args, env=e, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        out = p.communicate(timeout=420)[0]
    except subprocess.TimeoutExpired:
        p.terminate()       # bench/soak stops its server on SIGTERM
        out = p.communicate(timeout=60)[0]
    return types.SimpleNamespace(returncode=p.returncode, stdout=out)


class StandInTest(unittest.TestCase):
    def leaky(self, leak):
        with tempfile.TemporaryDirectory() as out:
            p = run_soak(["--minutes", "0.2", "--modes", "event", "--echo",
                          STAND_IN, "--out", out], {"SOAK_LEAK": leak})
            print(p.stdout)
            csv = [f for f in os.listdir(out) if f.endswith("-event.csv")]
            self.assertEqual(len(csv), 1)
            with open(os.path.join(out, csv[0])) as f:
                self.assertGreaterEqual(len(f.readlines()), 1 + 8)
            return p

    def test_descriptor_leak_fails(self):
        p = self.leaky("fd")
        self.assertEqual(p.returncode, 1)
        self.assertIn("FAIL event: descriptors grew without bound", p.stdout)
        self.assertIn("FAIL event: descriptors after the load", p.stdout)
        self.assertNotIn("RSS grew", p.stdout)

    def test_memory_leak_fails(self):
        p = self.leaky("mem")
        self.assertEqual(p.returncode, 1)
        self.assertIn("FAIL event: RSS grew without bound", p.stdout)
        self.assertNotIn("descriptors grew", p.stdout)

    def test_bad_mode_is_usage(self):
        p = run_soak(["--modes", "event,poll", "--echo", STAND_IN])
        self.assertEqual(p.returncode, 2)
        self.assertIn("poll", p.stdout)
        p = run_soak(["--minutes", "0.1", "--echo", STAND_IN])
        self.assertEqual(p.returncode, 2)


def sanitizer_env():
    """AddressSanitizer holds freed memory in a quarantine of up to 256 MiB,
    which a soak would read as growth: keep it at 1 MiB."""
    if "address" not in os.environ.get("FORKLOOP_SANITIZE", ""):
        return {}
    opts = os.environ.get("ASAN_OPTIONS", "")
    return {"ASAN_OPTIONS": (opts + ":" if opts else "")
            + "quarantine_size_mb=1:thread_local_quarantine_size_kb=64"}


class CiRunTest(unittest.TestCase):
    """Every mode of the forkloop-echo under test, 0.75 minutes each."""

    def test_every_mode_passes(self):
        out = os.environ.get("FORKLOOP_SOAK_OUT")
        tmp = None
        if out:
            shutil.rmtree(out, ignore_errors=True)
        else:
            out = tmp = tempfile.mkdtemp()
        try:
            p = run_soak(["--minutes", CI_MINUTES, "--modes",
                          "event,threads,fork", "--echo",
                          os.environ["FORKLOOP_ECHO"], "--out", out],
                         sanitizer_env())
            print(p.stdout)
            md = [f for f in os.listdir(out) if f.endswith("-soak.md")]
            self.assertEqual(len(md), 1)
            with open(os.path.join(out, md[0])) as f:
                text = f.read()
            print(text)
            self.assertEqual(p.returncode, 0)
            for m in ("event", "threads", "fork"):
                self.assertIn("## %s mode: pass" % m, text)
                names = [f for f in os.listdir(out)
                         if f.endswith("-soak-%s.csv" % m)
                         or f.endswith("-soak-%s.png" % m)
                         or f.endswith("-soak-%s.svg" % m)]
                self.assertEqual(len(names), 2, names)
        finally:
            if tmp:
                shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    unittest.main(verbosity=2)
