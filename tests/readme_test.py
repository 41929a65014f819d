"""The README's first two commands install what the build and the tests need.

The second command (build and test) installs exactly the packages .ci/run
installs for the test suite (its "packages=" line), and the first (build and
run the daemon) installs nothing the second does not. A package added to one
place and not the other fails here, before a fresh machine finds it.

The source tree comes from FORKLOOP_SOURCE_ROOT (meson sets it).
"""

import os
import re
import unittest

ROOT = os.environ.get("FORKLOOP_SOURCE_ROOT",
                      os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
INSTALL = re.compile(r"apt-get install -y ([a-z0-9.+ -]+?) &&")


def readme_commands():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        text = f.read()
    blocks = re.findall(r"```sh\n(.*?)\n```", text, re.S)
    return blocks[:2]


def packages(command):
    m = INSTALL.search(command)
    if m is None:
        raise AssertionError("no 'apt-get install -y ... &&' in: " + command)
    return set(m.group(1).split())


def ci_packages():
    with open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8") as f:
        for line in f:
            m = re.match(r'^packages="([^"]*)"', line)
            if m:
                return set(m.group(1).split())
    raise AssertionError('.ci/run has no packages="..." line')


class ReadmeTest(unittest.TestCase):
    def test_commands_install_what_ci_installs(self):
        cmds = readme_commands()
        self.assertEqual(len(cmds), 2, "the README starts with two commands")
        run, test = (packages(c) for c in cmds)
        ci = ci_packages()
        self.assertEqual(sorted(ci - test), [],
                         ".ci/run installs these, the README's test command "
                         "does not")
        self.assertEqual(sorted(test - ci), [],
                         "the README's test command installs these, .ci/run "
                         "does not")
        self.assertEqual(sorted(run - test), [],
                         "the README's run command installs these, its test "
                         "command does not")
        self.assertIn("meson test", cmds[1])
        self.assertIn("forkloop-echo", cmds[0])


if __name__ == "__main__":
    unittest.main()
