"""Records come from the outside world: what their data can make a template do.

A record's values are data, never templates; a value that would make a sandboxed operation
build gigabytes or compute a hundred-million-digit number is refused as that record's
error, in milliseconds: the record is dead-lettered with the reason and the others go on.
Each test reads its records from a real NDJSON file through the flow's source, the way
they arrive.
"""

from __future__ import annotations

import time

from engine import Engine
from tests.conftest import read_ndjson, write_flow


def _run(tmp_path, lines: list[str], set_fields: str, send_record: str = '"{{ record }}"'):
    (tmp_path / "in.ndjson").write_text("\n".join(lines) + "\n", encoding="utf-8")
    flow = write_flow(
        tmp_path,
        f"""
        flow: hostile_records
        connections:
          out: {{connector: file, base_dir: "{tmp_path}"}}
        source: {{connector: file, path: "{tmp_path}/in.ndjson", key: "{{{{ record.id }}}}"}}
        steps:
          - set: {set_fields}
          - name: write
            send: {{connection: out, path: out.ndjson, record: {send_record}}}
        """,
    )
    engine = Engine(state=tmp_path / "s.db")
    started = time.perf_counter()
    result = engine.run(flow)
    seconds = time.perf_counter() - started
    store = engine.store()
    letters = store.dead_letters()
    store.close()
    return result, letters, read_ndjson(tmp_path / "out.ndjson"), seconds


def test_a_template_in_record_data_stays_text(tmp_path):
    result, letters, out, _ = _run(
        tmp_path,
        [
            '{"id": 1, "note": "{{ 7 * 7 }}"}',
            '{"id": 2, "note": "{% for x in range(10) %}x{% endfor %}"}',
            '{"id": 3, "note": "{{ \'\'.__class__.__mro__ }}"}',
        ],
        '{label: "note: {{ record.note }}", copy: "{{ record.note }}"}',
    )
    assert result.counts["done"] == 3 and letters == []
    assert [r["copy"] for r in out] == [
        "{{ 7 * 7 }}",
        "{% for x in range(10) %}x{% endfor %}",
        "{{ ''.__class__.__mro__ }}",
    ]
    assert out[0]["label"] == "note: {{ 7 * 7 }}"


def test_a_number_with_a_huge_exponent_is_that_records_error_not_a_hang(tmp_path):
    # JSON reads 1e100000000 as Decimal('1E+100000000'); int() of it would compute
    # a hundred million digits (minutes of CPU, hundreds of MB) for one record
    result, letters, out, seconds = _run(
        tmp_path,
        ['{"id": 1, "qty": 2}', '{"id": 2, "qty": 1e100000000}', '{"id": 3, "qty": 5}'],
        '{units: "{{ record.qty | int }}", text: "{{ \'%d\' % record.qty }}"}',
    )
    assert result.counts["done"] == 2 and result.counts["dead_lettered"] == 1
    assert [r["units"] for r in out] == [2, 5]
    (letter,) = letters
    assert letter.record_key == "2"
    assert "template passed a sandbox limit" in letter.message
    assert "100,000,001 digits" in letter.message
    assert seconds < 10


def test_a_huge_field_value_cannot_be_multiplied_into_gigabytes(tmp_path):
    big = "x" * 200_000
    result, letters, out, seconds = _run(
        tmp_path,
        ['{"id": 1, "name": "ok", "sep": "-"}', f'{{"id": 2, "name": "ok", "sep": "{big}"}}'],
        "{line: \"{{ (['a'] * 10) | join(record.sep) }}\", "
        "padded: \"{{ record.name | replace('o', record.sep * 5) }}\"}",
    )
    assert result.counts["done"] == 1 and result.counts["dead_lettered"] == 1
    assert out[0]["line"] == "a-a-a-a-a-a-a-a-a-a"
    (letter,) = letters
    assert letter.record_key == "2" and "sandbox limit" in letter.message
    assert seconds < 10


def test_a_record_whose_lists_are_summed_is_linear(tmp_path):
    rows = ", ".join(["[1]"] * 200_000)
    result, letters, out, seconds = _run(
        tmp_path,
        [f'{{"id": 1, "rows": [{rows}]}}'],
        '{flat: "{{ record.rows | sum(start=[]) | length }}"}',
    )
    assert result.counts["done"] == 1 and out[0]["flat"] == 200_000
    assert seconds < 10  # Python's own sum() of lists: about a minute


def test_a_record_cannot_read_a_secret_by_writing_an_env_reference(tmp_path, monkeypatch):
    # a shop customer types ${env:STORE_TOKEN} into the order note
    monkeypatch.setenv("STORE_TOKEN", "s3cr3t-store-token")
    result, letters, out, _ = _run(
        tmp_path,
        ['{"id": 1, "note": "hello"}', '{"id": 2, "note": "leak: ${env:STORE_TOKEN}"}'],
        '{seen: "yes"}',
        send_record='{note: "{{ record.note }}", store: "${env:STORE_TOKEN}"}',
    )
    assert result.counts["done"] == 2
    assert [r["store"] for r in out] == ["s3cr3t-store-token"] * 2  # the flow's own use
    assert [r["note"] for r in out] == ["hello", "leak: ${env:STORE_TOKEN}"]
