"""Secrets beyond the environment: ${file:PATH} (container and systemd secrets) and a .env
file, masked like ${env:NAME} wherever flowyard shows or stores anything."""

from __future__ import annotations

import json

from tests.conftest import invoke, write_flow, write_ndjson

TOKEN = "tok-9b1e44c0d2f7"


def make(tmp_path, target_url, auth_value):
    write_ndjson(tmp_path / "in.ndjson", [{"id": 1, "sku": "A"}])
    return write_flow(
        tmp_path,
        f"""
        flow: secret_files
        connections:
          shop:
            connector: http
            base_url: {target_url}
            auth: {{type: bearer, token: "{auth_value}"}}
            retry: {{attempts: 1}}
        source: {{connector: file, path: in.ndjson}}
        steps:
          - name: post
            send:
              connection: shop
              method: POST
              path: /items
              body: {{sku: "{{{{ record.sku }}}}", note: "sent with {auth_value}"}}
        """,
    )


def everything_shown(tmp_path, *outputs) -> str:
    logs = "".join(p.read_text() for p in (tmp_path / ".flowyard").rglob("*.jsonl"))
    import sqlite3

    db = sqlite3.connect(tmp_path / ".flowyard" / "state.db")
    rows = [str(r) for t in ("traces", "keys") for r in db.execute(f"SELECT * FROM {t}")]
    db.close()
    return logs + "".join(rows) + "".join(outputs)


def test_a_secret_file_relative_to_the_flow_is_sent_and_masked(tmp_path, target):
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "shop_token").write_text(TOKEN + "\n")  # as `echo` writes it
    flow = make(tmp_path, target.url, "${file:secrets/shop_token}")
    done = invoke("run", flow, "-o", "json", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    (request,) = [r for r in target.requests if r["method"] == "POST"]
    assert request["headers"]["authorization"] == f"Bearer {TOKEN}"  # no newline
    assert json.loads(request["body"])["note"] == f"sent with {TOKEN}"
    assert TOKEN not in everything_shown(tmp_path, done.stdout, done.stderr)
    write_ndjson(tmp_path / "in.ndjson", [{"id": 2, "sku": "B"}])
    dry = invoke("run", flow, "--dry-run", "-o", "json", cwd=tmp_path)
    assert TOKEN not in dry.stdout
    assert json.loads(dry.stdout)["would_send"][0]["request"]["body"]["note"] == "sent with ***"


def test_a_leading_variable_names_the_folder_as_systemd_gives_it(tmp_path, target):
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "shop_token").write_text(TOKEN)
    flow = make(tmp_path, target.url, "${file:$CREDENTIALS_DIRECTORY/shop_token}")
    done = invoke("run", flow, cwd=tmp_path, env={"CREDENTIALS_DIRECTORY": str(creds)})
    assert done.returncode == 0, done.stderr
    assert target.requests[-1]["headers"]["authorization"] == f"Bearer {TOKEN}"


def test_a_dotenv_file_beside_the_flow_and_the_environment_over_it(tmp_path, target):
    (tmp_path / ".env").write_text(
        f"# the shop\nexport SHOP_TOKEN='{TOKEN}'\nOTHER=1 # a comment\n"
    )
    flow = make(tmp_path, target.url, "${env:SHOP_TOKEN}")
    done = invoke("run", flow, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert target.requests[-1]["headers"]["authorization"] == f"Bearer {TOKEN}"
    assert TOKEN not in everything_shown(tmp_path, done.stdout, done.stderr)
    write_ndjson(tmp_path / "in.ndjson", [{"id": 2, "sku": "B"}])
    again = invoke("run", flow, cwd=tmp_path, env={"SHOP_TOKEN": "from-the-environment"})
    assert again.returncode == 0
    assert target.requests[-1]["headers"]["authorization"] == "Bearer from-the-environment"


def test_a_missing_secret_file_is_a_warning_for_validate_and_an_error_for_run(tmp_path):
    flow = make(tmp_path, "http://127.0.0.1:9", "${file:/run/secrets/flowyard_no_such}")
    checked = invoke("validate", flow, cwd=tmp_path)
    assert checked.returncode == 0
    assert (
        "warning at connections.shop.auth.token: secret file /run/secrets/flowyard_no_such "
        "cannot be read: No such file or directory" in checked.stdout
    )
    run = invoke("run", flow, cwd=tmp_path)
    assert run.returncode == 2
    assert "secret file /run/secrets/flowyard_no_such cannot be read" in run.stderr
    assert "the flow needs it to run" in run.stderr
    (tmp_path / "empty").write_text("")
    empty = make(tmp_path, "http://127.0.0.1:9", "${file:empty}")
    assert "is empty" in invoke("run", empty, cwd=tmp_path).stderr


def test_a_malformed_reference_is_refused(tmp_path):
    flow = make(tmp_path, "http://127.0.0.1:9", "${files:x}")
    done = invoke("validate", flow, cwd=tmp_path)
    assert done.returncode == 2
    assert "write ${env:NAME} (NAME of letters, digits and _) or ${file:PATH}" in done.stderr
