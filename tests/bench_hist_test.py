"""forkloop-bench --hist and forkloop-bench merge against forkloop-echo: the
.hgrm file holds the histogram the JSON reports, and results of processes
run at the same time add up exactly, bucket by bucket, into one report that
can itself be merged again. Bad input is refused with exit status 2 and a
message that names the file: not one result, the same result twice, another
load, counts that do not add up, or sums that overflow; no merge prints inf
or nan."""

import json
import os
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fltest  # noqa: E402

HEADER = "%12s %14s %10s %14s" % ("Value", "Percentile", "TotalCount",
                                  "1/(1-Percentile)")
# The JSON's percentiles have one decimal in us; the .hgrm's values six in ms.
ROUND_US = 0.051


def read_hgrm(path):
    """(rows of (value_ms, percentile, total), footer {name: number})."""
    with open(path, encoding="ascii") as f:
        lines = f.read().split("\n")
    assert lines[0] == HEADER, lines[0]
    assert lines[1] == "", lines[1]
    rows, footer = [], {}
    for line in lines[2:]:
        if line.startswith("#["):
            for part in line[2:-1].split(","):
                name, value = part.split("=")
                footer[name.strip()] = float(value)
        elif line:
            f = line.split()
            assert len(f) == (3 if float(f[1]) == 1.0 else 4), line
            rows.append((float(f[0]), float(f[1]), int(f[2])))
    return rows, footer


def buckets(lat):
    """{index: count} of a latency object's histogram."""
    return {i: c for i, c in lat["hist"]["buckets"]}


class BenchHistTest(fltest.ProcTestCase):

    def setUp(self):
        super().setUp()
        self.dir = tempfile.TemporaryDirectory()

    def tearDown(self):
        super().tearDown()
        self.dir.cleanup()

    def path(self, name):
        return os.path.join(self.dir.name, name)

    def echo(self):
        srv = self.start(fltest.Server, [fltest.binary("echo"), "--listen",
                                         "127.0.0.1:0"])
        return "127.0.0.1:%d" % srv.port

    def bench(self, *args, stdin=subprocess.DEVNULL):
        argv = [fltest.binary("bench")] + [str(a) for a in args]
        return subprocess.run(argv, capture_output=True, timeout=60,
                              start_new_session=True, stdin=stdin)

    def merge(self, *args, status=0, stdin=subprocess.DEVNULL):
        p = self.bench("merge", *args, stdin=stdin)
        self.assertEqual(p.returncode, status, p.stderr.decode())
        return p

    def write(self, name, result):
        """A result (a dict, or text as it is) into the file name; its
        path."""
        with open(self.path(name), "w") as f:
            f.write(result if isinstance(result, str) else
                    json.dumps(result) + "\n")
        return self.path(name)

    def refused(self, files, want):
        """merge of files exits 2, prints nothing, and says want."""
        p = self.merge(*files, status=2)
        self.assertIn(want, p.stderr.decode())
        self.assertEqual(p.stdout, b"")

    def merge_json(self, *files):
        p = self.merge("--json", *files)
        return json.loads(p.stdout), p.stderr.decode()

    def run_to(self, name, *args):
        """A run with --json into the file name; its result."""
        with open(self.path(name), "wb") as out:
            p = subprocess.run([fltest.binary("bench"), "--json"] +
                               [str(a) for a in args], stdout=out,
                               stderr=subprocess.PIPE, timeout=60,
                               start_new_session=True)
        self.assertEqual(p.returncode, 0, p.stderr.decode())
        with open(self.path(name)) as f:
            return json.load(f)

    def two_at_once(self, target):
        """Two forkloop-bench processes against target at the same time."""
        procs = []
        for name in ("a.json", "b.json"):
            out = open(self.path(name), "wb")
            procs.append((subprocess.Popen(
                [fltest.binary("bench"), "--json", "-c", "3", "-s", "100",
                 "-d", "1.5", target], stdout=out, stderr=subprocess.PIPE,
                start_new_session=True), out))
        for p, out in procs:
            _, err = p.communicate(timeout=60)
            out.close()
            self.assertEqual(p.returncode, 0, err.decode())
        res = []
        for name in ("a.json", "b.json"):
            with open(self.path(name)) as f:
                res.append(json.load(f))
        return res

    def test_hgrm_matches_the_json(self):
        target = self.echo()
        hgrm = self.path("run.hgrm")
        p = self.bench("--hist", hgrm, "--json", "-c", 4, "-d", 1, target)
        self.assertEqual(p.returncode, 0, p.stderr.decode())
        j = json.loads(p.stdout)
        lat = j["latency_us"]
        self.assertGreater(lat["count"], 100, j)
        self.assertEqual(sum(buckets(lat).values()), lat["count"])
        rows, footer = read_hgrm(hgrm)
        # Monotonic, ending at 100% with every value counted.
        for (v0, p0, t0), (v1, p1, t1) in zip(rows, rows[1:]):
            self.assertLessEqual(v0, v1)
            self.assertLess(p0, p1)
            self.assertLessEqual(t0, t1)
        self.assertEqual(rows[0][1], 0.0)
        self.assertEqual(rows[-1][1], 1.0)
        self.assertEqual(rows[-1][2], lat["count"])
        self.assertEqual(footer["Total count"], lat["count"])
        # Each row's count is where a bucket of the JSON's ends.
        ends, total = set(), 0
        for i in sorted(buckets(lat)):
            total += buckets(lat)[i]
            ends.add(total)
        for v, pct, t in rows:
            self.assertIn(t, ends, (v, pct, t))
        # The percentiles the JSON reports, at their rows.
        at = {pct: v * 1000 for v, pct, _ in rows}
        self.assertAlmostEqual(at[0.5], lat["p50"], delta=ROUND_US)
        self.assertAlmostEqual(at[0.9], lat["p90"], delta=ROUND_US)
        self.assertAlmostEqual(at[1.0], lat["max"], delta=ROUND_US)
        self.assertAlmostEqual(footer["Max"] * 1000, lat["max"],
                               delta=ROUND_US)
        self.assertAlmostEqual(footer["Mean"] * 1000, lat["mean"],
                               delta=ROUND_US)
        # No row falls at 99% exactly: it lies between the rows around it.
        k = next(i for i, r in enumerate(rows) if r[1] >= 0.99)
        self.assertLessEqual(rows[k - 1][0] * 1000, lat["p99"] + ROUND_US)
        self.assertGreaterEqual(rows[k][0] * 1000, lat["p99"] - ROUND_US)
        self.assertEqual(footer["SubBuckets"], 128)

    def test_hist_write_error_is_exit_1(self):
        target = self.echo()
        bad = self.path("nonexistent/x.hgrm")
        p = self.bench("--hist", bad, "-c", 2, "-n", 100, target)
        self.assertEqual(p.returncode, 1, p.stderr.decode())
        self.assertIn("cannot write %s" % bad, p.stderr.decode())
        self.assertIn("messages", p.stdout.decode())

    def test_report_write_error_is_exit_1(self):
        # /dev/full: every write fails with ENOSPC, as on a full disk.
        target = self.echo()
        for mode in ("--json", "--json-stream"):
            with open("/dev/full", "w") as full:
                argv = [fltest.binary("bench"), mode, "-c", "2", "-d",
                        "0.3", target]
                p = subprocess.run(argv, stdout=full, stderr=subprocess.PIPE,
                                   timeout=60, start_new_session=True)
            err = p.stderr.decode()
            self.assertEqual(p.returncode, 1, err)
            self.assertIn("cannot write the report: No space left on device",
                          err)

    def test_unix_path_with_a_quote_is_valid_json(self):
        # The target is a string the user chose: escaped, and read back
        # by merge as it was.
        sock = self.path('q"b\\s.sock')
        srv = self.start(fltest.Proc, [fltest.binary("echo"), "--listen",
                                       "unix:" + sock])
        srv.wait_line(r"listening on unix:")
        out = self.path("u.json")
        p = self.bench("--json", "-c", 2, "-n", 100, "unix:" + sock)
        self.assertEqual(p.returncode, 0, p.stderr.decode())
        r = json.loads(p.stdout)
        self.assertEqual(r["target"], "unix:" + sock)
        with open(out, "wb") as f:
            f.write(p.stdout)
        m, _ = self.merge_json(out)
        self.assertEqual(m["target"], "unix:" + sock)
        self.assertEqual(m["messages"], 100)

    def test_two_processes_merge_exactly(self):
        target = self.echo()
        a, b = self.two_at_once(target)
        hgrm = self.path("merged.hgrm")
        m, _ = self.merge_json("--hist", hgrm, self.path("a.json"),
                               self.path("b.json"))
        self.assertEqual(m["merged"], 2)
        for k in ("messages", "bytes", "errors", "connects", "conns",
                  "threads", "unanswered", "in_flight", "unsent"):
            self.assertEqual(m[k], a[k] + b[k], k)
        for k in m["error_kinds"]:
            self.assertEqual(m["error_kinds"][k],
                             a["error_kinds"][k] + b["error_kinds"][k], k)
        self.assertGreater(m["messages"], 0)
        for name in ("latency_us", "latency_uncorrected_us"):
            got, want = buckets(m[name]), buckets(a[name])
            for i, c in buckets(b[name]).items():
                want[i] = want.get(i, 0) + c
            self.assertEqual(got, want, name)
            ha, hb, hm = a[name]["hist"], b[name]["hist"], m[name]["hist"]
            self.assertEqual(hm["sum"], ha["sum"] + hb["sum"])
            self.assertEqual(hm["min"], min(ha["min"], hb["min"]))
            self.assertEqual(hm["max"], max(ha["max"], hb["max"]))
            self.assertEqual(m[name]["count"],
                             a[name]["count"] + b[name]["count"])
        # The rates add up; the window is the one both ran in.
        self.assertAlmostEqual(m["msgs_per_sec"],
                               a["msgs_per_sec"] + b["msgs_per_sec"],
                               delta=0.2)
        self.assertEqual(m["start_unix_s"],
                         max(a["start_unix_s"], b["start_unix_s"]))
        self.assertEqual(m["end_unix_s"],
                         min(a["end_unix_s"], b["end_unix_s"]))
        self.assertLessEqual(m["duration_s"],
                             min(a["duration_s"], b["duration_s"]) + 1e-5)
        rows, footer = read_hgrm(hgrm)
        self.assertEqual(rows[-1][2], m["latency_us"]["count"])
        self.assertEqual(footer["Total count"], m["latency_us"]["count"])
        # The table says the same.
        p = self.merge(self.path("a.json"), self.path("b.json"))
        table = p.stdout.decode()
        self.assertRegex(table, r"(?m)^merged\s+2$")
        self.assertRegex(table, r"(?m)^messages\s+%d$" % m["messages"])

    def test_merged_output_merges_again_unchanged(self):
        target = self.echo()
        self.two_at_once(target)
        m, _ = self.merge_json(self.path("a.json"), self.path("b.json"))
        with open(self.path("m.json"), "w") as f:
            json.dump(m, f)
        again, _ = self.merge_json(self.path("m.json"))
        self.assertEqual(again["merged"], 1)
        for k in ("messages", "bytes", "errors", "error_kinds", "connects",
                  "conns", "threads", "unanswered", "msgs_per_sec",
                  "mbytes_per_sec", "start_unix_s", "end_unix_s"):
            self.assertEqual(again[k], m[k], k)
        for name in ("latency_us", "latency_uncorrected_us"):
            self.assertEqual(again[name], m[name], name)

    def test_runs_apart_are_a_warning(self):
        # One after the other: they never ran together, so their rates
        # summed are no load that happened.
        target = self.echo()
        self.run_to("a.json", "-c", 2, "-d", 0.3, target)
        self.run_to("b.json", "-c", 2, "-d", 0.3, target)
        m, err = self.merge_json(self.path("a.json"), self.path("b.json"))
        self.assertEqual(m["duration_s"], 0)
        self.assertEqual(len(m["warnings"]), 1, m["warnings"])
        self.assertIn("ran together for 0%", m["warnings"][0])
        self.assertIn("warning: the 2 results ran together for 0%", err)

    def test_bad_inputs_exit_2_naming_the_file(self):
        target = self.echo()
        good = self.run_to("good.json", "-c", 2, "-n", 50, target)
        self.run_to("size.json", "-c", 2, "-n", 50, "-s", 100, target)
        missing = self.path("missing.json")
        p = self.merge(self.path("good.json"), missing, status=2)
        self.assertIn("%s: cannot read: No such file or directory" % missing,
                      p.stderr.decode())
        with open(self.path("text.json"), "w") as f:
            f.write("target 127.0.0.1:1, closed loop\n")
        p = self.merge(self.path("text.json"), status=2)
        self.assertIn("%s: not JSON" % self.path("text.json"),
                      p.stderr.decode())
        p = self.merge(self.path("good.json"), self.path("size.json"),
                       status=2)
        self.assertIn("%s: size 100, not 64 as in %s" % (
            self.path("size.json"), self.path("good.json")),
            p.stderr.decode())
        del good["latency_us"]["hist"]
        with open(self.path("old.json"), "w") as f:
            json.dump(good, f)
        p = self.merge(self.path("old.json"), status=2)
        self.assertIn("%s: latency_us has no hist" % self.path("old.json"),
                      p.stderr.decode())
        self.assertEqual(p.stdout, b"")
        p = self.merge(status=2)
        self.assertIn("no FILE to merge", p.stderr.decode())
        p = self.merge("--help")
        self.assertIn("merge [-h] [--json] [--hist FILE] FILE...",
                      p.stdout.decode())

    def test_several_results_in_one_file_are_refused(self):
        # --json >> results.json, or cat a.json b.json: two runs in one
        # file, of which merge must not quietly take one.
        target = self.echo()
        self.run_to("a.json", "-c", 2, "-n", 50, target)
        self.run_to("b.json", "-c", 2, "-n", 50, target)
        with open(self.path("a.json")) as f:
            a = f.read()
        with open(self.path("b.json")) as f:
            b = f.read()
        ab = self.write("ab.json", a + b)
        self.refused([ab], "%s: holds 2 results" % ab)
        self.refused([ab], "one result per file")
        untyped = [json.loads(x) for x in (a, b, a)]
        for x in untyped:
            del x["type"]
        aba = self.write("aba.json", "".join(json.dumps(x) + "\n"
                                             for x in untyped))
        self.refused([aba], "%s: holds 3 results" % aba)
        # A --json-stream: interval lines and one summary.
        p = self.bench("--json-stream", "-i", 0.1, "-c", 2, "-d", 0.5,
                       target)
        self.assertEqual(p.returncode, 0, p.stderr.decode())
        lines = [json.loads(x) for x in p.stdout.decode().splitlines()]
        self.assertGreater(len(lines), 2)
        summary = lines[-1]
        self.assertEqual(summary["type"], "summary")
        stream = self.write("stream.json", p.stdout.decode())
        m, _ = self.merge_json(stream)
        self.assertEqual(m["messages"], summary["messages"])
        twice = self.write("twice.json", p.stdout.decode() * 2)
        self.refused([twice], "%s: holds 2 results" % twice)

    def test_same_result_twice_is_refused(self):
        target = self.echo()
        self.run_to("a.json", "-c", 2, "-n", 50, target)
        self.run_to("b.json", "-c", 2, "-n", 50, target)
        a, b = self.path("a.json"), self.path("b.json")
        self.refused([a, b, a], "%s: the same result as %s" % (a, a))
        with open(a) as f:
            copy = self.write("copy.json", f.read())
        self.refused([a, copy], "%s: the same result as %s" % (copy, a))
        # Different runs merge, though they ran one after the other.
        m, _ = self.merge_json(a, b)
        self.assertEqual(m["merged"], 2)

    def test_absurd_inputs_are_refused(self):
        target = self.echo()
        good = self.run_to("good.json", "-c", 2, "-n", 50, target)
        messages = good["messages"]

        def variant(name, **fields):
            x = json.loads(json.dumps(good))
            for k, v in fields.items():
                x[k] = v
            return self.write(name, x)

        for field in ("conns", "pipeline", "size"):
            bad = variant(field + ".json", **{field: 0})
            self.refused([bad], "%s: %s is 0: not a result" % (bad, field))
        bad = variant("dur.json", duration_s=-1.5)
        self.refused([bad], "%s: duration_s is negative" % bad)
        bad = variant("neg.json", messages=-1)
        self.refused([bad], "%s: messages is not a count" % bad)
        bad = variant("errors.json", errors=good["errors"] + 1)
        self.refused([bad], "%s: errors is %d but error_kinds add up to %d"
                     % (bad, good["errors"] + 1, good["errors"]))
        # Four of 2^62 messages: 2^64, which wraps to 0 in 64 bits.
        four = [variant("m%d.json" % i, messages=2 ** 62,
                        start_unix_s=good["start_unix_s"] - i / 1e3)
                for i in range(4)]
        self.refused(four, "the sum of messages overflows")
        # Bucket counts that add up past what a JSON integer holds here.
        lat = json.loads(json.dumps(good["latency_us"]))
        lat["hist"]["buckets"][0][1] += 2 ** 62
        lat["count"] += 2 ** 62
        two = [variant("h%d.json" % i, latency_us=lat,
                       start_unix_s=good["start_unix_s"] - i / 1e3)
               for i in range(2)]
        self.refused(two, "the sum of latency_us.count overflows")
        # One of them is fine, and merges again.
        m, _ = self.merge_json(two[0])
        self.assertEqual(m["latency_us"]["count"], messages + 2 ** 62)
        # Extreme figures that are still a result print none of inf or
        # nan: each is refused, or its JSON reads back.
        extreme = [{"duration_s": 1e-310}, {"duration_s": 1e-300},
                   {"connect_ms": 1e300, "connects": 2 ** 62},
                   {"load": "open", "rate": 1.5e308},
                   {"load": "open", "rate": 1e300},
                   {"end_unix_s": 1.7e308}, {"setup_ms": 1.7e308},
                   {"conns": 2 ** 62, "pipeline": 2 ** 40}]
        for i, fields in enumerate(extreme):
            files = [variant("x%d-%d.json" % (i, k),
                             start_unix_s=good["start_unix_s"] - k / 1e3,
                             **fields) for k in range(2)]
            for args in (["--json"] + files, files):
                p = self.bench("merge", *args)
                out = p.stdout.decode()
                self.assertIn(p.returncode, (0, 2), (fields, out))
                self.assertNotRegex(out, r"(?i)\b-?(inf|nan)\b",
                                    (fields, out))
                if p.returncode == 2:
                    self.assertEqual(out, "", fields)
                elif args[0] == "--json":
                    json.loads(out, parse_constant=self.fail)

    def tls_result(self, plain, resume):
        """The plain result as if it had run over TLS."""
        x = json.loads(json.dumps(plain))
        x["target"] = "tls://" + plain["target"]
        x["tls"] = {"verify": False, "ca": None, "client_cert": False,
                    "resume": resume, "version": "TLSv1.3",
                    "cipher": "TLS_AES_256_GCM_SHA384",
                    "handshakes": plain["conns"], "resumed": 0,
                    "handshake_latency_us": plain["latency_us"],
                    "error": None}
        return x

    def test_tls_and_resume_must_agree(self):
        target = self.echo()
        good = self.run_to("plain.json", "-c", 2, "-n", 50, target)
        plain = self.path("plain.json")
        t1 = self.write("t1.json", self.tls_result(good, False))
        x = self.tls_result(good, False)
        x["start_unix_s"] -= 0.001
        t2 = self.write("t2.json", x)
        x = self.tls_result(good, True)
        x["start_unix_s"] -= 0.002
        resumed = self.write("resumed.json", x)
        self.refused([plain, t1], "%s: TLS, not plain as in %s" % (t1, plain))
        self.refused([t1, plain], "%s: plain, not TLS as in %s" % (plain, t1))
        self.refused([t1, resumed], "%s: tls.resume true, not false as in %s"
                     % (resumed, t1))
        m, _ = self.merge_json(t1, t2)
        self.assertEqual(m["tls"]["handshakes"], 2 * good["conns"])
        self.assertFalse(m["tls"]["resume"])
        p = self.merge("--help")
        self.assertIn("same target (TLS or plain), --tls-resume, size, "
                      "pipeline and load", " ".join(p.stdout.decode().split()))

    def test_standard_input_once(self):
        target = self.echo()
        good = self.run_to("a.json", "-c", 2, "-n", 50, target)
        with open(self.path("a.json"), "rb") as f:
            m = json.loads(self.merge("--json", "-", stdin=f).stdout)
        self.assertEqual(m["messages"], good["messages"])
        p = self.merge("-", "-", status=2)
        self.assertIn("standard input can be given once", p.stderr.decode())
        self.assertEqual(p.stdout, b"")
        text = " ".join(self.merge("--help").stdout.decode().split())
        self.assertIn("A FILE of - is standard input", text)
        self.assertIn("the overlap of their windows", text)
        self.assertNotIn("the interval they all ran in", text)


if __name__ == "__main__":
    fltest.main()
