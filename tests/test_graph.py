"""`flowyard graph`: pictures of flows in Mermaid and DOT, and the ones in docs/retail.md."""

from __future__ import annotations

import re

import pytest

from engine import Engine
from engine.graph import embed, embedded
from engine.model import CallStep
from tests.conftest import ROOT, invoke

SHIPPED = sorted(p for p in (ROOT / "flows").glob("*.yaml") if not p.name.endswith(".test.yaml"))


@pytest.mark.parametrize("flow", SHIPPED, ids=lambda p: p.stem)
def test_the_picture_in_docs_retail_is_the_flow_as_it_is(flow):
    loaded = Engine().load(flow)
    shown = embedded((ROOT / "docs" / "retail.md").read_text(), loaded.name)
    assert shown is not None, f"docs/retail.md has no picture of {loaded.name}"
    assert shown == Engine().graph(loaded), (
        f"the picture of {loaded.name} in docs/retail.md is out of date: run "
        f"flowyard graph flows/{flow.name} --embed docs/retail.md"
    )


def test_every_step_branch_and_connection_is_drawn():
    eng = Engine()
    flow = eng.load(ROOT / "flows" / "order_to_erp.yaml")
    mermaid = eng.graph(flow)
    dot = eng.graph(flow, "dot")
    for step, _, _ in flow.walk():
        assert f"s_{step.name}" in mermaid and f"s_{step.name} " in dot
        if isinstance(step, CallStep):
            arrow = "send" if step.kind == "send" else "lookup"
            assert f'-. "{arrow}" .-> c_{step.connection}' in mermaid
            assert f's_{step.name} -> c_{step.connection} [label="{arrow}", style=dashed]' in dot
    # a route's branches carry their condition; a fail leads to the dead-letter queue, a
    # review to the review queue, a reconcile to either, a filter to "filtered"
    assert '-- "not record.erp_currencies" --> s_unknown_currency' in mermaid
    assert "s_unknown_currency --> t_dead_letter" in mermaid
    assert "s_unpaid_held --> t_review" in mermaid
    assert 's_sale_matches_order -- "differs" --> t_review' in mermaid
    assert 's_sale_matches_order -- "adds up" --> s_draft_to_quotation' in mermaid
    assert 's_not_charged -- "dropped" --> t_filtered' in mermaid
    assert 's_payment_policy -- "no branch" --> s_party_values' in mermaid
    assert mermaid.rstrip().endswith("--> t_done")


def test_conditions_with_quotes_are_escaped(tmp_path):
    flow = tmp_path / "flow.yaml"
    flow.write_text(
        "flow: quoting\nsource: {connector: file, path: in.ndjson}\nsteps:\n"
        '  - name: only_pickups\n    filter: record.method == "pick\\"up"\n'
    )
    eng = Engine()
    mermaid, dot = eng.graph(flow), eng.graph(flow, "dot")
    assert "#quot;" in mermaid and '"pick"up"' not in mermaid
    assert re.search(r'label="record.method == \\"pick\\\\\\"up\\""', dot)


def test_embed_replaces_only_the_flows_block_and_needs_its_markers():
    text = "a\n<!-- flowyard graph: x -->\nold\n<!-- /flowyard graph -->\nb\n"
    assert embed(text, "x", "flowchart TD\n") == (
        "a\n<!-- flowyard graph: x -->\n```mermaid\nflowchart TD\n```\n"
        "<!-- /flowyard graph -->\nb\n"
    )
    with pytest.raises(LookupError, match="flowyard graph: y"):
        embed(text, "y", "flowchart TD\n")


def test_the_cli_prints_and_embeds(tmp_path):
    flow = ROOT / "flows" / "invoice_match.yaml"
    printed = invoke("graph", flow, "--format", "dot")
    assert printed.returncode == 0 and printed.stdout.startswith('digraph "invoice_match"')
    doc = tmp_path / "doc.md"
    doc.write_text("# x\n<!-- flowyard graph: invoice_match -->\n<!-- /flowyard graph -->\n")
    done = invoke("graph", flow, "--embed", doc)
    assert done.returncode == 0, done.stderr
    assert embedded(doc.read_text(), "invoice_match") == Engine().graph(flow)
    missing = invoke("graph", ROOT / "flows" / "order_to_erp.yaml", "--embed", doc)
    assert missing.returncode == 2 and "<!-- flowyard graph: order_to_erp -->" in missing.stderr
    bad = invoke("graph", flow, "--format", "png")
    assert bad.returncode == 2
