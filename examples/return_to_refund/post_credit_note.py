"""Post a draft credit note in the demo Tryton, as a finance person would in the client.

    python examples/return_to_refund/post_credit_note.py 8
    python examples/return_to_refund/post_credit_note.py --url http://127.0.0.1:8000 8

The id is the one the review item names (``credit_note_draft``). Tryton asks before it
posts an invoice whose lines carry other taxes than their products' defaults; the
credit notes of return_to_refund carry the sale's taxes on purpose, so this answers
that question with Yes (and no other). The admin password comes from $TRYTON_PASSWORD.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root
from connectors.base import Request  # noqa: E402
from connectors.errors import ConnectorError  # noqa: E402
from connectors.tryton import TrytonConnector  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("invoice", type=int, help="the draft credit note's id")
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--database", default="flowyard")
    parser.add_argument("--user", default="admin")
    args = parser.parse_args(argv)
    if "TRYTON_PASSWORD" not in os.environ:
        parser.error("set TRYTON_PASSWORD (see examples/tryton/README.md)")
    options = {
        "url": args.url,
        "database": args.database,
        "username": args.user,
        "password": os.environ["TRYTON_PASSWORD"],
    }
    call = {
        "model": "account.invoice",
        "method": "post",
        "args": [[args.invoice]],
        "confirm_warnings": ["invoice_taxes"],
        "read_fields": ["number", "state", "total_amount"],
    }
    try:
        with TrytonConnector(options) as erp:
            [note] = erp.call(Request(options=call)).body["records"]
    except ConnectorError as exc:
        print(f"Tryton refused to post invoice {args.invoice}: {exc}", file=sys.stderr)
        return 1
    print(f"credit note {note['number']} ({note['total_amount']}) is {note['state']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
