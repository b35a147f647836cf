"""Build the demo Tryton ERP (once) and serve it on 127.0.0.1 until Ctrl-C.

    pip install -e '.[tryton]'
    python examples/tryton/start_tryton.py            # .flowyard/tryton, port 8000
    python examples/tryton/start_tryton.py --port 8010 --dir /tmp/erp --rebuild

The admin password is ``$TRYTON_PASSWORD`` when set at the first build; otherwise one
is generated into ``<dir>/admin.pass`` (mode 600). It is never printed.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import erp_setup  # noqa: E402  (next to this script; examples/ is no package)


def password_file(directory: Path) -> Path:
    """``<dir>/admin.pass``, written from $TRYTON_PASSWORD or a new random password."""
    path = directory / "admin.pass"
    if not path.exists():
        path.touch(mode=0o600)
        path.write_text(os.environ.get("TRYTON_PASSWORD") or secrets.token_urlsafe(18))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path(".flowyard/tryton"))
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--rebuild", action="store_true", help="build the database again")
    args = parser.parse_args(argv)
    # SIGTERM (a service manager, a timeout) leaves through the `finally` blocks and
    # subprocess cleanup like Ctrl-C does, so no trytond or trytond-admin is left behind.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    directory = args.dir.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    name = erp_setup.DATABASE
    secret = password_file(directory)
    key_file = directory / "setup.key"
    key = erp_setup.setup_key()
    built = key_file.exists() and key_file.read_text() == key
    if args.rebuild or not built or not (directory / f"{name}.sqlite").exists():
        print(f"building the demo database in {directory} (about a minute) …", flush=True)
        started = time.monotonic()
        erp_setup.build_database(directory, secret, name)
        key_file.write_text(key)
        print(f"built in {time.monotonic() - started:.0f} s")
    stored = secret.read_text().strip()
    if os.environ.get("TRYTON_PASSWORD") not in (None, stored):
        print(f"note: $TRYTON_PASSWORD is not the password the database was built with ({secret})")

    server = erp_setup.TrytonServer(directory, [name], port=args.port)
    try:
        server.start()
    except RuntimeError as exc:
        print(f"trytond did not start: {exc}", file=sys.stderr)
        return 1
    ids = json.loads((directory / f"{name}.json").read_text())
    print(
        f"""
Tryton is serving on {server.url} (log: {server.log_path})
  database: {name}   user: {erp_setup.USER}   password: in {secret}
  export TRYTON_PASSWORD="$(cat {secret})"

A flow's connection:
  connections:
    erp:
      connector: tryton
      url: {server.url}
      database: {name}
      username: {erp_setup.USER}
      password: "${{env:TRYTON_PASSWORD}}"

Demo records (ids): customer {ids["customer"]} (address {ids["customer_address"]}), \
tax {ids["tax"]}, payment term {ids["payment_term"]}, unit {ids["unit"]}, \
storage location {ids["storage"]} (STO)
  products: {", ".join(f"{sku}={pid}" for sku, pid in ids["products"].items())}
  (all of them in {directory / (name + ".json")})

Ctrl-C stops the server; the database stays in {directory}.""",
        flush=True,
    )
    try:
        while server.running:
            time.sleep(0.5)
        print(f"trytond stopped by itself:\n{server.log()}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nstopping trytond")
        return 0
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
