"""meson install into a temporary DESTDIR installs exactly the expected files:
the three programs, their man pages and the example systemd units, all
inside DESTDIR, the programs runnable and the unit pointing at the installed
program, and systemd-analyze (when installed) finding nothing wrong with the
units.

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

PROGRAMS = ["forkloop-echo", "forkloop-chat", "forkloop-bench"]
UNITS = ["forkloop-echo.service", "forkloop-echo.socket"]


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
        with open(under(self.destdir, os.path.join(
                unitdir, "forkloop-echo.service"))) as f:
            service = f.read().splitlines()
        execs = [l.split()[0] for l in service if l.startswith("ExecStart=")]
        self.assertEqual(execs, ["ExecStart=" + os.path.join(
            bindir, "forkloop-echo")], "the service runs the installed program")
        with open(under(self.destdir, os.path.join(
                unitdir, "forkloop-echo.socket"))) as f:
            socket = f.read().splitlines()
        self.assertIn("ListenStream=6666", socket)

    def verify_units(self, man_built):
        """systemd-analyze verify on copies of the units whose ExecStart runs
        the program installed in DESTDIR (it checks that the program exists),
        finding the man page of Documentation= in DESTDIR too."""
        analyze = shutil.which("systemd-analyze")
        self.assertIsNotNone(analyze, "systemd-analyze not found (Debian "
                             "package systemd): unit files not verified")
        unitdir = under(self.destdir, env_path("FORKLOOP_UNITDIR"))
        bindir = env_path("FORKLOOP_BINDIR")
        copies = os.path.join(self.destdir, "verify")
        os.mkdir(copies)
        for u in UNITS:
            with open(os.path.join(unitdir, u)) as f:
                text = f.read()
            text = text.replace("ExecStart=" + bindir,
                                "ExecStart=" + under(self.destdir, bindir))
            with open(os.path.join(copies, u), "w") as f:
                f.write(text)
        env = dict(os.environ)
        argv = [analyze, "verify"]
        if man_built:
            env["MANPATH"] = under(self.destdir, env_path("FORKLOOP_MANDIR"))
        else:
            argv.append("--man=no")
        argv += [os.path.join(copies, u) for u in UNITS]
        p = subprocess.run(argv, capture_output=True, timeout=60, env=env,
                           stdin=subprocess.DEVNULL)
        out = (p.stdout + p.stderr).decode("utf-8", "replace")
        self.assertEqual(p.returncode, 0, "systemd-analyze verify:\n" + out)
        # Unknown keys and bad values are only warnings, naming the file.
        warnings = [l for l in out.splitlines() if copies in l]
        self.assertFalse(warnings, "systemd-analyze verify:\n" + out)

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
