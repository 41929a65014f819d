"""The man pages say what --help says: for each program, the long options the
OPTIONS section of doc/<program>.1.scd defines are exactly those --help lists,
each with the same short option, and the SYNOPSIS names the long options the
usage line names.

The page source comes from FORKLOOP_DOC_DIR, the programs from FORKLOOP_ECHO,
FORKLOOP_CHAT and FORKLOOP_BENCH (meson sets them).
"""

import os
import re
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fltest  # noqa: E402

# An option line of --help: "  -m, --mode MODE ..." or "      --max-pending".
HELP_OPT = re.compile(r"^ {1,8}(?:-([A-Za-z0-9]), )?--([a-z0-9][a-z0-9-]*)")
# A term line of the page's OPTIONS section: "*-m*, *--mode* _MODE_".
MAN_LONG = re.compile(r"\*--([a-z0-9][a-z0-9-]*)\*")
MAN_SHORT = re.compile(r"\*-([A-Za-z0-9])\*")
LONG = re.compile(r"--([a-z0-9][a-z0-9-]*)")


def help_text(name):
    p = subprocess.run([fltest.binary(name), "--help"], capture_output=True,
                       timeout=10)
    if p.returncode != 0:
        raise AssertionError("%s --help exited %d: %s" % (
            name, p.returncode, p.stderr.decode("utf-8", "replace")))
    return p.stdout.decode("utf-8")


def help_options(text):
    """{long: short or None} for every option line of --help."""
    opts = {}
    for line in text.splitlines():
        m = HELP_OPT.match(line)
        if m:
            opts[m.group(2)] = m.group(1)
    return opts


def help_usage_longs(text):
    """Long options in the usage lines (up to the first blank line)."""
    usage = text.split("\n\n", 1)[0]
    return set(LONG.findall(usage))


def man_sections(src):
    """{section title: its lines} of an scdoc page."""
    sections, cur = {}, None
    for line in src.splitlines():
        if line.startswith("# "):
            cur = line[2:].strip()
            sections[cur] = []
        elif cur is not None:
            sections[cur].append(line)
    return sections


def man_options(lines):
    """{long: short or None} for every term line of the OPTIONS section.
    A term line is not indented and starts with the option in bold."""
    opts = {}
    for line in lines:
        if not line.startswith("*-"):
            continue
        longs = MAN_LONG.findall(line)
        shorts = MAN_SHORT.findall(line)
        for name in longs:
            opts[name] = shorts[0] if len(shorts) == 1 else None
    return opts


def man_source(program):
    path = os.path.join(os.environ["FORKLOOP_DOC_DIR"], program + ".1.scd")
    with open(path, encoding="utf-8") as f:
        return path, f.read()


def describe(only_help, only_man):
    out = []
    if only_help:
        out.append("in --help but not in the man page: " +
                   ", ".join("--" + o for o in sorted(only_help)))
    if only_man:
        out.append("in the man page but not in --help: " +
                   ", ".join("--" + o for o in sorted(only_man)))
    return "; ".join(out)


class ManTest(unittest.TestCase):
    def check(self, name):
        program = "forkloop-" + name
        text = help_text(name)
        path, src = man_source(program)
        sections = man_sections(src)
        for s in ("NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS",
                  "EXIT STATUS", "SIGNALS", "EXAMPLES", "SEE ALSO"):
            self.assertIn(s, sections, "%s has no %s section" % (path, s))

        want = help_options(text)
        got = man_options(sections["OPTIONS"])
        self.assertTrue(want, "no options found in %s --help" % program)
        only_help = set(want) - set(got)
        only_man = set(got) - set(want)
        self.assertFalse(only_help or only_man, "%s OPTIONS: %s" % (
            path, describe(only_help, only_man)))

        diff = ["--%s: -%s in --help, %s in the man page" % (
                    o, want[o], "-" + got[o] if got[o] else "none")
                for o in sorted(want) if want[o] != got[o]]
        self.assertFalse(diff, "%s short options: %s" % (path, "; ".join(diff)))

        usage = help_usage_longs(text)
        synopsis = set(LONG.findall("\n".join(sections["SYNOPSIS"])))
        self.assertEqual(usage, synopsis, "%s SYNOPSIS: %s" % (
            path, describe(usage - synopsis, synopsis - usage)))

    def test_echo(self):
        self.check("echo")

    def test_chat(self):
        self.check("chat")

    def test_bench(self):
        self.check("bench")


if __name__ == "__main__":
    fltest.main()
