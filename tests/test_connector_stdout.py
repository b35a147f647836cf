"""The stdout connector: one JSON line per record, whole lines even from many threads."""

from __future__ import annotations

import io
import json
import sys
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest

from connectors.base import Request
from connectors.errors import PermanentError
from connectors.stdout import StdoutConnector
from connectors.testing import ConnectorContract


class TestStdoutContract(ConnectorContract):
    connector_class = StdoutConnector

    def call_options(self, tmp_path):
        return {"record": {"id": 1}}

    def failing_call_options(self, tmp_path):
        return {"record": {"when": object()}}


def test_each_record_is_one_exact_json_line(capsys):
    with StdoutConnector() as out:
        out.call(Request({"record": {"id": 2**70, "total": Decimal("4.20"), "sku": "Käse"}}))
        out.call(Request({"record": "plain"}))
    assert (
        capsys.readouterr().out
        == '{"id":1180591620717411303424,"total":4.20,"sku":"Käse"}\n"plain"\n'
    )


def test_stdout_is_looked_up_at_call_time(monkeypatch):
    out = StdoutConnector()
    redirected = io.StringIO()
    monkeypatch.setattr(sys, "stdout", redirected)
    out.call(Request({"record": [1, 2]}))
    assert redirected.getvalue() == "[1,2]\n"


def test_lines_from_many_threads_never_interleave(capsys):
    out = StdoutConnector()
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(
            pool.map(
                lambda n: out.call(Request({"record": {"n": n, "pad": "x" * 2000}})), range(300)
            )
        )
    lines = capsys.readouterr().out.splitlines()
    assert sorted(json.loads(line)["n"] for line in lines) == list(range(300))


def test_a_value_json_cannot_hold_is_permanent(capsys):
    with pytest.raises(PermanentError):
        StdoutConnector().call(Request({"record": {"x": Decimal("NaN")}}))
    assert capsys.readouterr().out == ""
