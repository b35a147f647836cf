"""The wheel carries the shipped flows, mappings and canonical schemas, and a user who
installs it, outside any checkout, can init, validate, test, draw and run a flow.

The wheel is built from a copy of the checkout (no build isolation, so offline: the build
backend comes from the test extra) and installed, without its dependencies, into a fresh
virtual environment in a temporary folder; the dependencies come from the environment
running the tests, through a path file, so the test needs no package index.
"""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.test_first_flow_doc import run_doc

pytestmark = pytest.mark.slow


def test_setup_cfg_lists_every_code_package():
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    listed = set(config["options"]["packages"].split())
    found = {
        ".".join(p.parent.relative_to(ROOT).parts)
        for top in ("engine", "connectors")
        for p in (ROOT / top).rglob("__init__.py")
    }
    assert found <= listed, f"add {sorted(found - listed)} to packages in setup.cfg"


def _run(args: list, **kw) -> subprocess.CompletedProcess:
    done = subprocess.run(args, capture_output=True, text=True, timeout=600, **kw)
    assert done.returncode == 0, f"{args}\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(wheel, venv, env): the built wheel installed in a fresh venv outside the repo."""
    base = tmp_path_factory.mktemp("packaging")
    source = base / "source"
    files = _run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=ROOT
    ).stdout.split("\0")
    for name in filter(None, files):
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(base / "dist"),
            str(source),
        ],
        cwd=base,
    )
    (wheel,) = (base / "dist").glob("flowyard-*.whl")
    venv = base / "venv"
    _run([sys.executable, "-m", "venv", str(venv)])
    purelib = Path(
        _run(
            [
                venv / "bin" / "python",
                "-c",
                "import sysconfig; print(sysconfig.get_path('purelib'))",
            ]
        ).stdout.strip()
    )
    # the dependencies, from the environment running the tests (after the venv's own)
    (purelib / "zz_flowyard_test_deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    _run([venv / "bin" / "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLOWYARD_", "PYTHON"))}
    env["PATH"] = f"{venv / 'bin'}:/usr/bin:/bin"
    env["VIRTUAL_ENV"] = str(venv)
    return wheel, venv, env


def test_the_wheel_holds_the_flows_mappings_schemas_and_starter(installed):
    wheel, _, _ = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    for path in (ROOT / "flows").rglob("*"):
        if path.is_file():
            assert f"engine/builtin/flows/{path.relative_to(ROOT / 'flows').as_posix()}" in names
    for path in (ROOT / "mappings").rglob("*.*"):
        assert f"engine/builtin/mappings/{path.relative_to(ROOT / 'mappings').as_posix()}" in names
    assert (
        "engine/starter/flow.yaml" in names
        and "engine/starter/mappings/order_to_pick_list.yaml" in names
    )
    assert {"engine/py.typed", "connectors/py.typed"} <= names, "the packages say they are typed"
    metadata = zipfile.ZipFile(wheel).read("flowyard-0.1.0.dist-info/METADATA").decode()
    assert "Requires-Dist: jinja2" in metadata and "Requires-Dist: fastjsonschema" in metadata


def test_init_validate_test_graph_and_run_outside_the_repository(installed, tmp_path):
    _, venv, env = installed
    where = _run(
        [venv / "bin" / "python", "-c", "import engine; print(engine.__file__)"],
        cwd=tmp_path,
        env=env,
    ).stdout
    assert where.startswith(str(venv)), where

    def flowyard(*args, cwd, code=0):
        done = subprocess.run(
            ["flowyard", *map(str, args)],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == code, f"flowyard {args}: {done.stdout}\n{done.stderr}"
        return done

    flowyard("init", "mine", cwd=tmp_path)
    project = tmp_path / "mine"
    assert "1 of 1 flow(s) valid" in flowyard("validate", "flow.yaml", cwd=project).stdout
    assert "3 passed" in flowyard("test", cwd=project).stdout
    assert flowyard("graph", "flow.yaml", cwd=project).stdout.startswith("flowchart TD")
    assert "done 2" in flowyard("run", "flow.yaml", cwd=project).stdout
    assert "skipped 2" in flowyard("run", "flow.yaml", cwd=project).stdout
    mapped = flowyard(
        "map", "shopify_order_to_canonical", "orders.ndjson", "--line", "2", cwd=project
    )
    assert str(venv) in mapped.stdout and "engine/builtin/mappings/canonical" in mapped.stdout

    flowyard("init", "erp", "--from", "order_to_erp", cwd=tmp_path)
    erp = tmp_path / "erp"
    assert (erp / "mappings" / "shopify_order_to_canonical.yaml").is_file()
    assert "mappings: [mappings]" in (erp / "order_to_erp.yaml").read_text()
    assert "1 of 1 flow(s) valid" in flowyard("validate", "order_to_erp.yaml", cwd=erp).stdout
    tested = flowyard("test", cwd=erp)
    assert " passed in " in tested.stdout and "failed" not in tested.stdout


def test_the_first_flow_page_from_pip_install(installed, tmp_path):
    wheel, venv, env = installed
    run_doc(
        tmp_path,
        env,
        {
            "python3 -m venv": f". {venv}/bin/activate",
            "pip install flowyard": f"pip install -q --no-deps --no-index {wheel}",
        },
    )
    assert (tmp_path / "shop-sync" / "out" / "pickups.ndjson").is_file()
