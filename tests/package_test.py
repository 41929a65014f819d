"""The Debian package: built with dpkg-buildpackage from a copy of the source
tree (what a clone has: tracked files and new ones git does not ignore) in
a temporary directory, so that the .deb, .changes and .buildinfo land
there; checked by lintian; unpacked with dpkg -x into a temporary root,
whose programs, man pages and units are then checked where Debian puts
them, and whose forkloop-echo serves an echo on loopback.

The build skips the test suite (DEB_BUILD_OPTIONS=nocheck and the nocheck
profile): this suite has run it already. Needs the Debian packages
build-essential, dpkg-dev, debhelper and lintian besides the build's own
(.ci/run installs them: deb_packages); without them the test fails.

meson sets FORKLOOP_SOURCE_ROOT.
"""

import glob
import gzip
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

ROOT = os.environ.get("FORKLOOP_SOURCE_ROOT",
                      os.path.dirname(os.path.dirname(os.path.abspath(
                          __file__))))
PROGRAMS = ["forkloop-echo", "forkloop-chat", "forkloop-bench"]
UNITS = ["forkloop-echo.service", "forkloop-echo.socket",
         "forkloop-relay.service", "forkloop-relay.socket"]
# Debian 12's debhelper manages units in /lib/systemd/system (debian/rules
# says why); on its merged /usr that is /usr/lib/systemd/system.
UNIT_DIR = "/lib/systemd/system"
MAN_DIR = "/usr/share/man"
DOC_DIR = "/usr/share/doc/forkloop"


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
        dirs[:] = [x for x in dirs if not x.startswith(("build", "obj-"))
                   and x not in (".git", "__pycache__")]
        out += [os.path.relpath(os.path.join(d, f), root) for f in files]
    return out


def run(argv, timeout, **kw):
    p = subprocess.run(argv, capture_output=True, timeout=timeout,
                       stdin=subprocess.DEVNULL, **kw)
    return p.returncode, (p.stdout + p.stderr).decode("utf-8", "replace")


class PackageTest(fltest.ProcTestCase):

    @classmethod
    def setUpClass(cls):
        for tool in ("dpkg-buildpackage", "dh", "lintian"):
            if shutil.which(tool) is None:
                raise AssertionError("%s not found: install the Debian "
                                     "packages build-essential, dpkg-dev, "
                                     "debhelper and lintian" % tool)
        cls.beside_before = cls.beside()
        cls.tmp = tempfile.mkdtemp(prefix="forkloop-package-")
        src = os.path.join(cls.tmp, "forkloop")
        for f in repo_files(ROOT):
            dst = os.path.join(src, f)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            shutil.copy2(os.path.join(ROOT, f), dst)
        env = dict(os.environ, DEB_BUILD_OPTIONS="nocheck parallel=2")
        rc, out = run(["dpkg-buildpackage", "-us", "-uc", "-b", "-Pnocheck"],
                      420, cwd=src, env=env)
        cls.build_log = out
        if rc != 0:
            shutil.rmtree(cls.tmp, ignore_errors=True)
            raise AssertionError("dpkg-buildpackage failed:\n" + out[-6000:])
        debs = glob.glob(os.path.join(cls.tmp, "forkloop_*.deb"))
        changes = glob.glob(os.path.join(cls.tmp, "forkloop_*.changes"))
        if len(debs) != 1 or len(changes) != 1:
            shutil.rmtree(cls.tmp, ignore_errors=True)
            raise AssertionError("expected one .deb and one .changes, "
                                 "found %s" % os.listdir(cls.tmp))
        cls.deb, cls.changes = debs[0], changes[0]
        cls.root = os.path.join(cls.tmp, "root")
        rc, out = run(["dpkg", "-x", cls.deb, cls.root], 60)
        if rc != 0:
            shutil.rmtree(cls.tmp, ignore_errors=True)
            raise AssertionError("dpkg -x failed:\n" + out)

    @staticmethod
    def beside():
        """The package files beside the source tree."""
        return set(glob.glob(os.path.join(os.path.dirname(
            os.path.abspath(ROOT)), "forkloop*_*")))

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def path(self, *parts):
        return os.path.join(self.root, *(p.lstrip("/") for p in parts))

    def field(self, name):
        rc, out = run(["dpkg-deb", "--field", self.deb, name], 30)
        self.assertEqual(rc, 0, out)
        return out.strip()

    def test_built_in_the_temporary_directory_only(self):
        # What dpkg-buildpackage made is beside the copy, nothing beside
        # the source tree.
        self.assertEqual(self.beside(), self.beside_before)
        for pattern in ("forkloop_*.deb", "forkloop_*.changes",
                        "forkloop_*.buildinfo"):
            self.assertEqual(len(glob.glob(os.path.join(self.tmp, pattern))),
                             1, os.listdir(self.tmp))

    def test_lintian_no_errors_or_warnings(self):
        rc, out = run(["lintian", "--fail-on", "error,warning",
                       self.changes], 300)
        tags = [l for l in out.splitlines() if re.match(r"[EW]: ", l)]
        self.assertEqual(tags, [], out)
        self.assertEqual(rc, 0, out)

    def test_files_at_debian_paths(self):
        want = {"/usr/bin/" + p for p in PROGRAMS}
        want |= {MAN_DIR + "/man1/%s.1.gz" % p for p in PROGRAMS}
        want |= {UNIT_DIR + "/" + u for u in UNITS}
        want |= {DOC_DIR + "/copyright", DOC_DIR + "/changelog.gz"}
        got = set()
        for d, _, files in os.walk(self.root):
            got |= {"/" + os.path.relpath(os.path.join(d, f), self.root)
                    for f in files}
        self.assertEqual(sorted(want - got), [], "missing from the .deb")
        self.assertEqual(sorted(got - want), [], "not expected in the .deb")
        for p in PROGRAMS:
            self.assertTrue(os.access(self.path("/usr/bin", p), os.X_OK), p)
            with gzip.open(self.path(MAN_DIR, "man1", p + ".1.gz"), "rt",
                           encoding="utf-8") as f:
                roff = f.read()
            self.assertIn('.TH "%s" "1"' % p, roff)
            self.assertIn(".SH OPTIONS", roff)

    def test_programs_run_and_agree_with_the_package_version(self):
        version = self.field("Version")
        with open(os.path.join(ROOT, "meson.build"), encoding="utf-8") as f:
            m = re.search(r"version : '([^']+)'", f.read())
        self.assertEqual(version, m.group(1),
                         "debian/changelog and meson.build disagree")
        for p in PROGRAMS:
            rc, out = run([self.path("/usr/bin", p), "--version"], 10)
            self.assertEqual(rc, 0, out)
            self.assertEqual(out.strip(), "%s %s" % (p, version))

    def test_installed_echo_round_trip(self):
        s = self.start(fltest.Server, [self.path("/usr/bin/forkloop-echo"),
                                       "--listen", "127.0.0.1:0"])
        c = s.connect()
        data = os.urandom(200000)
        c.sendall(data)
        c.shutdown(socket.SHUT_WR)
        self.assertEqual(fltest.recv_all(c, 10), data)
        c.close()
        s.signal(15)
        self.assertEqual(s.wait(), 0, s.stderr_text())

    def test_units_verify_and_are_hardened_in_the_root(self):
        paths = [self.path(UNIT_DIR, u) for u in UNITS]
        rc, out = unitfile.verify_root(self.root, paths, MAN_DIR)
        self.assertEqual((rc, out), (0, ""), "systemd-analyze verify")
        for u in UNITS:
            unit = unitfile.parse(self.path(UNIT_DIR, u))
            if u.endswith(".service"):
                self.assertTrue(unitfile.exec_start(unit)[0].startswith(
                    "/usr/bin/forkloop-"), u)
                level, rc, out = unitfile.security_exposure(
                    self.path(UNIT_DIR, u))
                self.assertLessEqual(level, unitfile.EXPOSURE_MAX, out)

    def test_nothing_enabled_or_started_on_installation(self):
        ctl = os.path.join(self.tmp, "control")
        rc, out = run(["dpkg-deb", "--control", self.deb, ctl], 30)
        self.assertEqual(rc, 0, out)
        with open(os.path.join(ctl, "postinst")) as f:
            postinst = f.read()
        # dh_installsystemd --no-enable: a unit is enabled again only if
        # it was before (an upgrade); --no-start: nothing started, a unit
        # running before an upgrade restarted (try-restart).
        self.assertEqual(postinst.count("deb-systemd-helper enable"),
                         postinst.count("was-enabled"), postinst)
        for u in UNITS:
            self.assertIn("was-enabled '%s'" % u, postinst)
        self.assertNotRegex(postinst, r"deb-systemd-invoke (start|restart)")
        self.assertNotIn("systemctl start", postinst)
        with open(os.path.join(ctl, "prerm")) as f:
            prerm = f.read()
        self.assertRegex(prerm, r'"\$1" = remove')
        self.assertIn("deb-systemd-invoke stop", prerm)


if __name__ == "__main__":
    fltest.main()
