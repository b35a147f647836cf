"""Programs of the operating system that a test needs: a browser, a database server.

``program("chromium", package="chromium")`` gives the path of the first of the names found
on PATH (or in the ``search`` folders). When none is there and the test runs as root on a
machine with ``apt-get``, as CI does (it starts from a clean Debian machine), the Debian
package that ships the program is installed, once per session, and its path given.

When the program cannot be had, the test is **skipped** with the reason and the command
that installs it: a developer without root or apt-get runs the rest of the suite. An
installation that was tried and did not give the program **fails** the test under CI
(``CI=true``) or with ``FLOWYARD_REQUIRE_SYSTEM=1``, where the test must run rather than
silently disappear, and skips it elsewhere, with apt-get's own last lines.

Concurrent sessions (xdist workers, two pytest runs) wait for each other on dpkg's lock
(``DPkg::Lock::Timeout``) instead of failing on it; the second finds the package there.
"""

from __future__ import annotations

import functools
import glob
import os
import re
import shutil
import subprocess
from collections.abc import Sequence

import pytest

#: How long an installation may take (a browser with its libraries: ~100 MB to fetch).
INSTALL_TIMEOUT_S = 900


def find_program(names: Sequence[str], search: Sequence[str] = ()) -> str | None:
    """The path of the first of ``names`` on PATH, else in the folders matching the globs
    of ``search`` (e.g. ``/usr/lib/postgresql/*/bin``, newest version first); None."""
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    for pattern in search:
        for folder in sorted(glob.glob(pattern), key=_version_order, reverse=True):
            for name in names:
                found = shutil.which(name, path=folder)
                if found:
                    return found
    return None


def _version_order(path: str) -> list[tuple[int, int | str]]:
    # /usr/lib/postgresql/16 after /usr/lib/postgresql/9: numbers compared as numbers
    return [(0, int(part)) if part.isdigit() else (1, part) for part in re.split(r"(\d+)", path)]


def program(*names: str, package: str, search: Sequence[str] = ()) -> str:
    """The path of a program the test needs, installed from its Debian ``package`` when it
    is missing and this process may install it; else the test is skipped (see above)."""
    found = find_program(names, search)
    if found:
        return found
    how = f"apt-get install -y {package}"
    if not can_install():
        pytest.skip(f"{names[0]} is not installed ({how} as root installs it)")
    problem = _install(package)
    found = find_program(names, search)
    if found:
        return found
    reason = (
        f"{names[0]} is not installed, and `{how}` did not give it: "
        f"{problem or f'the package {package} has no program named ' + ', '.join(names)}"
    )
    if _required():
        pytest.fail(f"this test must run here (CI): {reason}", pytrace=False)
    pytest.skip(reason)


def can_install() -> bool:
    """True when this process may install Debian packages: root, with apt-get on PATH."""
    return os.geteuid() == 0 and shutil.which("apt-get") is not None


def _required() -> bool:
    return os.environ.get("CI", "").lower() == "true" or bool(
        os.environ.get("FLOWYARD_REQUIRE_SYSTEM")
    )


@functools.cache  # once per package and session, whatever it gave
def _install(package: str) -> str | None:
    """Install ``package`` with apt-get; None when it worked, else what apt-get said last.

    A clean machine has no package lists (or stale ones): when the first attempt fails,
    the lists are fetched (``apt-get update``) and the package asked for again."""
    problem = _apt("install", "-y", package)
    if problem is None:
        return None
    return _apt("update") or _apt("install", "-y", package)


def _apt(*args: str) -> str | None:
    command = ["apt-get", "-q", "-o", "DPkg::Lock::Timeout=600", *args]
    try:
        done = subprocess.run(
            command,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
            capture_output=True,
            text=True,
            timeout=INSTALL_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        return f"`{' '.join(command)}` took longer than {INSTALL_TIMEOUT_S} s"
    if done.returncode == 0:
        return None
    tail = (done.stderr.strip() or done.stdout.strip()).splitlines()[-3:]
    return f"`{' '.join(command)}` exited {done.returncode}: " + " / ".join(tail)
