"""A real Tryton ERP for tests: one demo database per session, a fresh copy per test.

Use it from a test module with::

    from tests.support.tryton import TrytonInstance  # noqa: F401  (types, helpers)
    pytest_plugins = ["tests.support.tryton"]        # the fixtures below

and mark the tests ``@pytest.mark.tryton``. Fixtures:

* ``tryton_template`` (session): the demo database of ``examples/tryton/erp_setup.py``,
  built once and cached across runs in the pytest cache
  (``.pytest_cache/d/tryton/<key>/``), keyed by trytond's version, a hash of
  ``erp_setup.py`` and the year; set ``FLOWYARD_TRYTON_CACHE`` to put it elsewhere.
  Several pytest processes (xdist) share one build through a file lock. Checkouts whose
  ``erp_setup.py`` differ (two branches sharing one ``FLOWYARD_TRYTON_CACHE``) keep a
  template each: a build removes another key's only when it has not been used for a day
  (and interrupted builds), never one a session of another checkout is using.
* ``tryton`` (function): a private copy of that database (SQLite backup API) served by
  its own ``trytond`` subprocess on a free 127.0.0.1 port, stopped after the test. The
  admin password is in the environment variable ``TRYTON_PASSWORD`` for the test's
  duration, as a flow would read it with ``${env:TRYTON_PASSWORD}``.
* ``tryton_for_class`` (class): the same, shared by the tests of one class, for suites
  of short tests that do not depend on each other's writes (the contract suite).

Tests that need Tryton are skipped, with the reason, only when trytond or proteus
cannot be imported (``pip install -e '.[tryton]'`` installs them) outside CI. In CI
(``CI=true``, as GitHub Actions, GitLab CI and most others set it) or with
``FLOWYARD_REQUIRE_TRYTON=1`` a missing Tryton fails them instead: the ERP tests must
run there, not silently disappear.

Measured on 2 cores: installing the ``tryton`` extra ~17 s; the first template build
41-48 s on an idle machine (proteus data ~15 s, trytond-admin the rest; ~90 s seen
with other test runs competing), later sessions reuse it (~0 s); a fresh copy plus a
started server 1.5-2.5 s per test.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
import os
import secrets
import shutil
import sqlite3
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
PASSWORD_ENV = "TRYTON_PASSWORD"


def _load_erp_setup():
    # Shipped examples must not import from tests/, so the building code lives in
    # examples/tryton/ and is loaded from its file here (examples/ is no package).
    name = "flowyard_examples_tryton_erp_setup"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples/tryton/erp_setup.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


erp_setup = _load_erp_setup()


def _tryton_missing() -> str | None:
    for module in ("trytond", "proteus"):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed (pip install -e '.[tryton]')"
    return None


TRYTON_MISSING = _tryton_missing()


def _tryton_required() -> bool:
    return os.environ.get("CI", "").lower() == "true" or bool(
        os.environ.get("FLOWYARD_REQUIRE_TRYTON")
    )


@dataclass
class TrytonTemplate:
    """The built demo database: where it is, its password file, and the ids it holds."""

    directory: Path
    database: str
    password_file: Path
    ids: dict[str, Any]
    build_seconds: float

    @property
    def path(self) -> Path:
        return self.directory / f"{self.database}.sqlite"


@dataclass
class TrytonInstance:
    """One test's own Tryton: a server on 127.0.0.1 over a fresh copy of the demo database."""

    url: str
    database: str
    username: str
    ids: dict[str, Any]
    directory: Path
    start_seconds: float
    server: Any = field(repr=False)

    @property
    def path(self) -> Path:
        """The SQLite file the server works on (for checks a test makes behind its back)."""
        return self.directory / f"{self.database}.sqlite"

    def options(self, **extra: Any) -> dict[str, Any]:
        """Connection options for the tryton connector, the password resolved from the env."""
        return {
            "url": self.url,
            "database": self.database,
            "username": self.username,
            "password": os.environ[PASSWORD_ENV],
            "timeout": 30,
            **extra,
        }

    def query(self, sql: str, *params: Any) -> list[tuple]:
        """Run a read-only SQL query on the database, next to the running server."""
        connection = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
        try:
            return connection.execute(sql, params).fetchall()
        finally:
            connection.close()


def _cache_root(config: pytest.Config) -> Path:
    if os.environ.get("FLOWYARD_TRYTON_CACHE"):
        root = Path(os.environ["FLOWYARD_TRYTON_CACHE"])
        root.mkdir(parents=True, exist_ok=True)
        return root
    cache = getattr(config, "cache", None)  # None under -p no:cacheprovider
    if cache is not None:
        return Path(cache.mkdir("tryton"))
    root = Path(os.environ.get("TMPDIR", "/tmp")) / "flowyard-tryton-cache"
    root.mkdir(parents=True, exist_ok=True)
    return root


#: How long a template of another key (an older erp_setup.py, another branch's) is kept
#: after its last use before a build removes it.
KEEP_UNUSED_S = 24 * 3600


def prune_templates(root: Path) -> list[Path]:
    """Remove, from the cache folder ``root``, interrupted builds (``*.building``: called
    under the build lock, no build is under way) and templates unused for KEEP_UNUSED_S
    (their ``used`` file, else their folder, says when they were last used)."""
    removed = []
    for old in sorted(root.iterdir()):
        if not old.is_dir():
            continue
        used = old / "used"
        last = (used if used.exists() else old).stat().st_mtime
        if old.name.endswith(".building") or time.time() - last > KEEP_UNUSED_S:
            shutil.rmtree(old, ignore_errors=True)
            removed.append(old)
    return removed


def build_template(root: Path) -> TrytonTemplate:
    """The cached demo database under ``root``, built first if missing (under a file lock)."""
    key = erp_setup.setup_key()
    target = root / key
    with open(root / "build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        started = time.monotonic()
        if not (target / "ready").exists():
            prune_templates(root)
            building = root / f"{key}.building"
            building.mkdir(mode=0o700)
            password_file = building / "admin.pass"
            password_file.touch(mode=0o600)
            password_file.write_text(secrets.token_urlsafe(18))
            erp_setup.build_database(building, password_file)
            (building / "ready").touch()
            building.rename(target)
        build_seconds = time.monotonic() - started
        (target / "used").touch()  # in use: another key's build leaves it alone
    ids = json.loads((target / f"{erp_setup.DATABASE}.json").read_text())
    return TrytonTemplate(target, erp_setup.DATABASE, target / "admin.pass", ids, build_seconds)


@pytest.fixture(scope="session")
def tryton_template(request: pytest.FixtureRequest) -> TrytonTemplate:
    """The demo Tryton database, built once (and cached across runs)."""
    if TRYTON_MISSING:
        if _tryton_required():  # CI: a missing ERP is a failure, not a skip
            pytest.fail(f"the Tryton tests must run here (CI) but {TRYTON_MISSING}")
        pytest.skip(TRYTON_MISSING)
    return build_template(_cache_root(request.config))


@contextlib.contextmanager
def serve_copy(template: TrytonTemplate, directory: Path) -> Iterator[TrytonInstance]:
    """Copy the template into ``directory``, serve it, and stop the server on exit.

    The password is put in ``TRYTON_PASSWORD`` meanwhile, as a flow would read it.
    """
    directory.mkdir(parents=True)
    started = time.monotonic()
    erp_setup.copy_database(template.path, directory / f"{template.database}.sqlite")
    server = erp_setup.TrytonServer(directory, [template.database]).start()
    instance = TrytonInstance(
        url=server.url,
        database=template.database,
        username=erp_setup.USER,
        ids=template.ids,
        directory=directory,
        start_seconds=time.monotonic() - started,
        server=server,
    )
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv(PASSWORD_ENV, template.password_file.read_text().strip())
            yield instance
    finally:
        server.stop()


@pytest.fixture
def tryton(tryton_template: TrytonTemplate, tmp_path: Path) -> Iterator[TrytonInstance]:
    """A Tryton server of this test's own, over a fresh copy of the demo database."""
    with serve_copy(tryton_template, tmp_path / "tryton") as instance:
        yield instance


@pytest.fixture(scope="class")
def tryton_for_class(
    tryton_template: TrytonTemplate, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TrytonInstance]:
    """One Tryton server shared by the tests of a class (for tests that change little)."""
    with serve_copy(tryton_template, tmp_path_factory.mktemp("tryton") / "tryton") as instance:
        yield instance
