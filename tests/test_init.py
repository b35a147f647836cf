"""`flowyard init`: a project to start from, never over existing files."""

from __future__ import annotations

import json

from tests.conftest import flowyard, invoke


def test_the_starter_project_validates_tests_and_runs(tmp_path):
    done = flowyard("init", tmp_path / "p")
    assert done.returncode == 0, done.stderr
    project = tmp_path / "p"
    assert (
        (project / "flow.yaml")
        .read_text()
        .startswith("# yaml-language-server: $schema=flow.schema.json\n")
    )
    assert json.loads((project / "flow.schema.json").read_text())["title"]
    assert json.loads((project / "flow-test.schema.json").read_text())["required"] == ["cases"]
    assert flowyard("validate", "flow.yaml", cwd=project).returncode == 0
    assert flowyard("test", cwd=project).returncode == 0
    assert flowyard("run", "flow.yaml", cwd=project).returncode == 0
    assert (project / ".gitignore").read_text() == "out/\n.flowyard/\n"


def test_from_a_shipped_flow_with_its_tests_samples_and_mappings(tmp_path):
    done = invoke("init", tmp_path / "r", "--from", "return_to_refund")
    assert done.returncode == 0, done.stderr
    project = tmp_path / "r"
    flow = (project / "return_to_refund.yaml").read_text()
    assert "mappings: [mappings]" in flow and "../examples/" not in flow
    assert (project / "samples" / "shopify_refunds.ndjson").is_file()
    assert (project / "mappings" / "canonical_return_to_tryton_credit_note.yaml").is_file()
    assert "export TRYTON_PASSWORD=..." in (project / "README.md").read_text()
    tested = invoke("test", cwd=project)
    assert tested.returncode == 0, tested.stdout


def test_existing_files_are_never_overwritten_and_names_are_checked(tmp_path):
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "flow.yaml").write_text("mine\n")
    done = invoke("init", tmp_path / "p")
    assert done.returncode == 2 and "has flow.yaml already" in done.stderr
    assert (tmp_path / "p" / "flow.yaml").read_text() == "mine\n"
    assert not (tmp_path / "p" / "flow.test.yaml").exists()
    unknown = invoke("init", tmp_path / "q", "--from", "order_to_ERP")
    assert unknown.returncode == 2
    assert "no shipped flow 'order_to_ERP'; the shipped flows: inventory_sync," in unknown.stderr
