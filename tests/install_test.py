"""meson install into a temporary DESTDIR installs exactly the expected files:
the three programs, their man pages and the example systemd units, all
inside DESTDIR, the programs runnable and the units pointing at the
installed programs, and systemd-analyze verify, run on DESTDIR as a root
directory, finding nothing to say about the units.

meson sets FORKLOOP_MESON (the meson command), FORKLOOP_BUILD_ROOT, the
absolute install directories FORKLOOP_BINDIR, FORKLOOP_MANDIR and
FORKLOOP_UNITDIR, and FORKLOOP_MAN_BUILT ("true" when scdoc was found). Without
scdoc or systemd-analyze the test fails: install them (Debian packages scdoc
and systemd).
"""

import os
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import unitfile  # noqa: E402

PROGRAMS = ["forkloop-echo", "forkloop-chat", "forkloop-bench"]
UNITS = ["forkloop-echo.service", "forkloop-echo.socket",
         "forkloop-relay.service", "forkloop-relay.socket"]
# The program each service runs.
SERVICES = {"forkloop-echo.service": "forkloop-echo",
            "forkloop-relay.service": "forkloop-chat"}


def env_path(name):
    v = os.environ.get(name)
    if not v:
        raise RuntimeError("%s is not set (run through meson test)" % name)
    return v


def under(destdir, path):
    """Where an absolute install path lands inside destdir."""
    return os.path.join(destdir, path.lstrip("/"))


def installed_files(destdir):
    out = set()
    for root, _, files in os.walk(destdir):
        for f in files:
            out.add("/" + os.path.relpath(os.path.join(root, f), destdir))
    return out


class InstallTest(unittest.TestCase):
    def setUp(self):
        self.destdir = tempfile.mkdtemp(prefix="forkloop-install-")

    def tearDown(self):
        shutil.rmtree(self.destdir, ignore_errors=True)

    def install(self):
        argv = [env_path("FORKLOOP_MESON"),
                "install", "-C", env_path("FORKLOOP_BUILD_ROOT"),
                "--destdir", self.destdir, "--no-rebuild"]
        p = subprocess.run(argv, capture_output=True, timeout=120,
                           stdin=subprocess.DEVNULL)
        out = (p.stdout + p.stderr).decode("utf-8", "replace")
        self.assertEqual(p.returncode, 0, "%s failed:\n%s" % (argv, out))

    def expected(self, man_built):
        bindir = env_path("FORKLOOP_BINDIR")
        mandir = env_path("FORKLOOP_MANDIR")
        unitdir = env_path("FORKLOOP_UNITDIR")
        files = {os.path.join(bindir, p) for p in PROGRAMS}
        files |= {os.path.join(unitdir, u) for u in UNITS}
        if man_built:
            files |= {os.path.join(mandir, "man1", p + ".1")
                      for p in PROGRAMS}
        return files

    def check_programs(self):
        bindir = env_path("FORKLOOP_BINDIR")
        for prog in PROGRAMS:
            path = under(self.destdir, os.path.join(bindir, prog))
            p = subprocess.run([path, "--version"], capture_output=True,
                               timeout=10)
            self.assertEqual(p.returncode, 0, "%s --version" % path)
            self.assertTrue(p.stdout.startswith(prog.encode() + b" "),
                            "%s --version printed %r" % (path, p.stdout))

    def check_man_pages(self):
        mandir = env_path("FORKLOOP_MANDIR")
        for prog in PROGRAMS:
            path = under(self.destdir, os.path.join(mandir, "man1",
                                                    prog + ".1"))
            with open(path, encoding="utf-8") as f:
                roff = f.read()
            self.assertIn('.TH "%s" "1"' % prog, roff, path)
            self.assertIn(".SH OPTIONS", roff, path)

    def check_units(self):
        unitdir = env_path("FORKLOOP_UNITDIR")
        bindir = env_path("FORKLOOP_BINDIR")
        for name, prog in SERVICES.items():
            unit = unitfile.parse(under(self.destdir, os.path.join(
                unitdir, name)))
            self.assertEqual(unitfile.exec_start(unit)[0],
                             os.path.join(bindir, prog),
                             "%s runs the installed program" % name)
        for name, port in [("forkloop-echo.socket", "6666"),
                           ("forkloop-relay.socket", "7000")]:
            unit = unitfile.parse(under(self.destdir, os.path.join(
                unitdir, name)))
            self.assertEqual(unitfile.values(unit, "Socket", "ListenStream"),
                             [port], name)

    def verify_units(self, man_built):
        """systemd-analyze verify --root=DESTDIR on the installed units: it
        finds the ExecStart= programs and, through MANPATH, the man pages of
        Documentation= inside DESTDIR. Any message fails."""
        unitdir = under(self.destdir, env_path("FORKLOOP_UNITDIR"))
        self.assertTrue(man_built, "man pages not built: scdoc not found "
                        "(Debian package scdoc), Documentation= unchecked")
        rc, out = unitfile.verify_root(
            self.destdir, [os.path.join(unitdir, u) for u in UNITS],
            env_path("FORKLOOP_MANDIR"))
        self.assertEqual((rc, out), (0, ""), "systemd-analyze verify")

    def test_destdir_has_every_file(self):
        man_built = os.environ.get("FORKLOOP_MAN_BUILT") == "true"
        self.install()
        want = self.expected(man_built)
        got = installed_files(self.destdir)
        self.assertFalse(want - got, "not installed under %s: %s" % (
            self.destdir, ", ".join(sorted(want - got))))
        self.assertFalse(got - want, "installed but not expected: %s" %
                         ", ".join(sorted(got - want)))
        self.check_programs()
        self.check_units()
        self.verify_units(man_built)
        self.assertTrue(man_built, "man pages not built: scdoc not found "
                        "(Debian package scdoc)")
        self.check_man_pages()


def main():
    unittest.main(verbosity=2)


if __name__ == "__main__":
    main()
