"""systemd unit files for forkloop's tests: reading one as systemd does
(sections, repeated keys, backslash continuation lines, comments), and the
checks systemd-analyze makes of one without a running service manager.

systemd-analyze is in Debian package systemd; without it these checks fail
rather than pass unchecked.
"""

import os
import re
import shlex
import shutil
import subprocess

# systemd-analyze security --threshold counts in tenths: 15 is 1.5.
EXPOSURE_MAX = 1.5
EXPOSURE_RE = re.compile(r"Overall exposure level for \S+: (\d+\.\d+)")


def parse(path):
    """{section: [(key, value), ...]} in file order, as systemd.syntax(7)
    reads it: '#' and ';' lines are comments, a line ending in a backslash
    goes on with the next one (the backslash becoming a space)."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    out = {}
    section = None
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line[0] in "#;"):
            continue
        if pending and line[:1] in ("#", ";"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            out.setdefault(section, [])
            continue
        key, _, value = line.partition("=")
        if section is None:
            raise ValueError("%s: %r outside a section" % (path, line))
        out[section].append((key.strip(), value.strip()))
    return out


def values(unit, section, key):
    """Every value key has in section, in order."""
    return [v for k, v in unit.get(section, []) if k == key]


def value(unit, section, key):
    """The last value of key in section (the one systemd keeps), or None."""
    v = values(unit, section, key)
    return v[-1] if v else None


def exec_start(unit):
    """The argv of the service's one ExecStart= command."""
    starts = values(unit, "Service", "ExecStart")
    if len(starts) != 1:
        raise ValueError("expected one ExecStart=, found %r" % starts)
    return shlex.split(starts[0])


def option(argv, name):
    """The value of --name VALUE in argv, or None."""
    for i, a in enumerate(argv[:-1]):
        if a == name:
            return argv[i + 1]
    return None


def analyze():
    path = shutil.which("systemd-analyze")
    if path is None:
        raise AssertionError("systemd-analyze not found (Debian package "
                             "systemd): the units cannot be checked")
    return path


def security_exposure(path):
    """systemd-analyze security --offline on the unit file at path: (the
    overall exposure level, exit status under --threshold EXPOSURE_MAX, the
    whole output)."""
    argv = [analyze(), "security", "--offline=true", "--no-pager",
            "--threshold=%d" % round(EXPOSURE_MAX * 10), path]
    p = subprocess.run(argv, capture_output=True, timeout=60,
                       stdin=subprocess.DEVNULL)
    out = (p.stdout + p.stderr).decode("utf-8", "replace")
    m = EXPOSURE_RE.search(out)
    if m is None:
        raise AssertionError("no exposure level in:\n" + out)
    return float(m.group(1)), p.returncode, out


def verify_root(root, unit_paths, mandir):
    """systemd-analyze verify --root=root on unit files inside root (paths
    as seen from outside): every key, the ExecStart= program (looked up
    inside root) and, through MANPATH, the man page of Documentation=
    (inside root too). Only the units named are verified, not the system's
    targets they depend on, which a staging root does not have. Returns
    (exit status, output): any output at all is a problem found."""
    env = dict(os.environ, MANPATH=os.path.join(root, mandir.lstrip("/")),
               SYSTEMD_LOG_COLOR="0")
    argv = [analyze(), "verify", "--root=" + root,
            "--recursive-errors=no"] + list(unit_paths)
    p = subprocess.run(argv, capture_output=True, timeout=60, env=env,
                       stdin=subprocess.DEVNULL)
    return p.returncode, (p.stdout + p.stderr).decode("utf-8", "replace")
