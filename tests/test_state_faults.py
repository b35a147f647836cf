"""Faults of the state file and the run-log folder: one line naming the file, exit code 4.

Read-only folders and files, and a full disk, are made for real: as root (who ignores
permissions) with a read-only bind mount and a small tmpfs, as another user with chmod.
Where neither can be made, the test is skipped and says why.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from contextlib import closing
from pathlib import Path

import pytest

from engine import Engine, StateError
from tests.conftest import flowyard, read_ndjson, write_flow, write_ndjson

ROOT_USER = os.geteuid() == 0


@pytest.fixture
def mounts():
    """Mount points to undo after the test (root only)."""
    made: list[Path] = []
    yield made
    for point in reversed(made):
        subprocess.run(["umount", "-l", str(point)], capture_output=True)


def mount(mounts, *args: str) -> None:
    done = subprocess.run(["mount", *args], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount here ({done.stderr.strip()}): needs root with CAP_SYS_ADMIN")
    mounts.append(Path(args[-1]))


def make_read_only(mounts, path: Path) -> None:
    """``path`` (a file or folder) read-only even for root."""
    if ROOT_USER:
        mount(mounts, "--bind", str(path), str(path))
        mount(mounts, "-o", "remount,bind,ro", str(path))
    else:
        path.chmod(0o555 if path.is_dir() else 0o444)


def simple_flow(tmp_path, out: Path | None = None) -> Path:
    out = out or tmp_path / "out.ndjson"
    write_ndjson(tmp_path / "in.ndjson", [{"id": i} for i in range(1, 6)])
    return write_flow(
        tmp_path,
        f"""
        flow: faults
        connections:
          out: {{connector: file}}
        source: {{connector: file, path: in.ndjson}}
        steps:
          - send: {{connection: out, path: "{out}", record: "{{{{ record }}}}"}}
        """,
    )


def assert_one_line(done: subprocess.CompletedProcess, code: int, *words: str) -> str:
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr + done.stdout
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("flowyard: "), done.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def test_a_file_that_is_not_a_database_is_refused_and_left_alone(tmp_path):
    flow = simple_flow(tmp_path)
    state = tmp_path / "state.db"
    state.write_text("these are my notes\n")
    line = assert_one_line(
        flowyard("run", flow, "--state", state, cwd=tmp_path), 4, str(state), "not an SQLite"
    )
    assert "not a flowyard state" in line
    assert state.read_text() == "these are my notes\n"
    assert_one_line(flowyard("runs", "list", "--state", state), 4, "not an SQLite")
    assert not (tmp_path / "out.ndjson").exists()


def test_another_applications_database_is_refused_and_not_changed(tmp_path):
    flow = simple_flow(tmp_path)
    state = tmp_path / "shop.db"
    with closing(sqlite3.connect(state)) as conn:
        conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, email TEXT)")
        conn.commit()
    before = state.read_bytes()
    assert_one_line(
        flowyard("run", flow, "--state", state, cwd=tmp_path),
        4,
        "not a flowyard state",
        "customers",
    )
    assert state.read_bytes() == before


def real_state(tmp_path) -> tuple[Path, Path]:
    flow = simple_flow(tmp_path)
    state = tmp_path / "state.db"
    assert flowyard("run", flow, "--state", state, cwd=tmp_path).returncode == 0
    assert not Path(f"{state}-wal").exists()  # checkpointed when the run closed it
    return flow, state


def test_a_truncated_state_file_is_refused_at_start(tmp_path):
    flow, state = real_state(tmp_path)
    data = state.read_bytes()
    state.write_bytes(data[: len(data) // 2])
    assert_one_line(flowyard("run", flow, "--state", state, cwd=tmp_path), 4, "truncated")


def test_a_state_file_with_damaged_pages_fails_the_run_with_exit_4(tmp_path):
    flow, state = real_state(tmp_path)
    data = bytearray(state.read_bytes())
    page = int.from_bytes(data[16:18], "big")
    for offset in range(page, len(data), 7):  # every page but the first (the schema)
        data[offset] = (data[offset] * 31 + 7) % 256
    state.write_bytes(bytes(data))
    done = flowyard("run", flow, "--state", state, cwd=tmp_path)
    assert_one_line(done, 4, str(state), "restore it from a backup")


def test_a_read_only_state_folder_is_a_state_fault(tmp_path, mounts):
    flow, state = real_state(tmp_path)
    make_read_only(mounts, tmp_path)
    done = flowyard("run", flow, "--state", state, cwd=tmp_path)
    assert_one_line(done, 4, str(state))
    assert "read-only" in done.stderr or "cannot write" in done.stderr


def test_a_read_only_state_file_is_a_state_fault(tmp_path, mounts):
    flow, state = real_state(tmp_path)
    make_read_only(mounts, state)
    done = flowyard("run", flow, "--state", state, cwd=tmp_path)
    assert_one_line(done, 4, str(state), "read-only")


def test_a_read_only_run_log_folder_is_a_state_fault(tmp_path, mounts):
    flow, state = real_state(tmp_path)
    make_read_only(mounts, tmp_path / "runs")
    done = flowyard("run", flow, "--state", state, cwd=tmp_path)
    assert_one_line(done, 4, "run log", str(tmp_path / "runs"))
    runs = json.loads(flowyard("runs", "list", "--state", state, "-o", "json").stdout)
    assert len(runs) == 1  # the run that could not log never started


def test_a_full_disk_ends_the_run_with_exit_4_and_the_next_run_goes_on(tmp_path, mounts):
    if not ROOT_USER:
        pytest.skip("a small tmpfs needs root; no other way to fill a disk for real here")
    disk = tmp_path / "disk"
    disk.mkdir()
    mount(mounts, "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk))
    out = tmp_path / "out.ndjson"  # the target is on the big disk
    flow = simple_flow(tmp_path, out)
    write_ndjson(tmp_path / "in.ndjson", [{"id": i, "pad": "x" * 400} for i in range(3000)])
    state = disk / "state.db"
    done = flowyard("run", flow, "--state", state, "--output", "json", cwd=tmp_path)
    assert done.returncode == 4, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr + done.stdout
    assert "full" in done.stderr and str(disk) in done.stderr

    subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
    again = flowyard("run", flow, "--state", state, "--output", "json", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    runs = json.loads(flowyard("runs", "list", "--state", state, "-o", "json").stdout)
    assert runs[0]["status"] == "ok" and runs[1]["status"] in ("failed", "crashed")
    assert {r["id"] for r in read_ndjson(out)} == set(range(3000))


def test_the_library_raises_state_error_naming_the_file(tmp_path):
    flow = simple_flow(tmp_path)
    state = tmp_path / "state.db"
    state.write_bytes(b"\x00" * 4096)
    with pytest.raises(StateError, match="not an SQLite database") as caught:
        Engine(state=state).run(flow)
    assert caught.value.path == str(state)


# -- where the state file is -------------------------------------------------------------
def test_a_state_path_whose_folder_does_not_exist_is_refused_with_exit_2(tmp_path):
    flow = simple_flow(tmp_path)
    typo = tmp_path / "typo" / "dir" / "state.db"
    line = assert_one_line(flowyard("run", flow, "--state", typo, cwd=tmp_path), 2, "mkdir -p")
    assert str(typo.parent) in line
    by_env = flowyard("run", flow, cwd=tmp_path, env={"FLOWYARD_STATE": str(typo)})
    assert_one_line(by_env, 2, "does not exist")
    assert not (tmp_path / "typo").exists() and not (tmp_path / "out.ndjson").exists()
    with pytest.raises(FileNotFoundError, match="mkdir -p"):
        Engine(state=typo).run(flow)


def test_the_default_state_folder_is_made_where_the_command_runs(tmp_path):
    flow = simple_flow(tmp_path)
    done = flowyard("run", flow.name, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / ".flowyard" / "state.db").is_file()
    # a relative --state is read from the working directory, like any path on the command line
    (tmp_path / "elsewhere").mkdir()
    there = flowyard("run", str(flow), "--state", "mine.db", cwd=tmp_path / "elsewhere")
    assert there.returncode == 0, there.stderr
    assert (tmp_path / "elsewhere" / "mine.db").is_file()
