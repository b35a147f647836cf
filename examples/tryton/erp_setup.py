"""Build a demo Tryton ERP database on SQLite and run trytond on 127.0.0.1.

One place for the demo ERP: ``examples/tryton/start_tryton.py`` builds it for the
retail examples, and ``tests/support/tryton.py`` builds the same database once per
test session and gives each test a fresh copy. Nothing here imports flowyard.

What the database holds (ids are written to ``<dir>/<name>.json``):

* modules ``sale``, ``stock``, ``account`` and ``purchase`` (and their dependencies) activated;
* a company, *Flowyard Retail Ltd*, in USD, with the ``admin`` user working in it;
* a chart of accounts from ``account.account_template_root_en``, fiscal years for
  this calendar year and the next (monthly periods, invoice sequences);
* the taxes of :data:`TAXES`, the web shops' rates (a 10 % sales tax is the product
  category's own customer tax), rounded per line as the shops round them
  (``account.configuration`` ``tax_rounding: line``), a *Direct* payment term, a
  product category with accounts;
* the currencies of :data:`CURRENCIES` next to the company's USD, with a rate each;
* products whose codes are retail SKUs (see :data:`PRODUCTS`) with stock on the
  storage location ``STO`` from a confirmed inventory;
* a customer with an address (a sale needs one for quotation);
* for flows/replenishment.yaml: the stores of :data:`STORES`, each a storage location of
  its own, a supplier, the stocked goods made purchasable, and the open (confirmed)
  purchase orders of :data:`OPEN_PURCHASES` into the warehouse ``WH``.

Building runs ``trytond-admin`` and then a proteus script, each in a subprocess, so
the calling process never imports trytond (its configuration is process-global).
Run ``python erp_setup.py build DIR`` to build from the command line.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
from decimal import Decimal
from importlib.metadata import version
from pathlib import Path
from typing import Any

import httpx

DATABASE = "flowyard"
USER = "admin"
MODULES = ("sale", "stock", "account", "purchase")

#: (SKU, name, list price, quantity on STO or None for a service). The first four are the
#: examples' (three goods with stock, which examples/inventory_sync publishes); the others
#: are the SKUs of the web-shop fixtures (tests/fixtures/) and of bench/gen_orders.py,
#: sold by the order and refund flows. They are services, so that they hold no stock and
#: the inventory example's levels stay those three: a sale of them books the same money.
PRODUCTS = [
    ("TSHIRT-BLK-M", "T-shirt black M", "19.90", 100),
    ("MUG-LOGO", "Logo mug", "8.50", 40),
    ("CAP-RED", "Red cap", "12.00", 25),
    ("GIFT-WRAP", "Gift wrapping", "2.00", None),
    ("TEE-BLK-M", "Organic Tee Black / M", "24.90", None),
    ("TEE-WHT-L", "Organic Tee White / L", "24.90", None),
    ("HOOD-GRY-S", "Zip Hoodie Grey / S", "59.00", None),
    ("CAP-NAVY", "Canvas Cap", "19.50", None),
    ("SOCK-3PK", "Wool Socks 3-pack", "14.00", None),
    ("BOTTLE-750", "Steel Bottle 750 ml", "29.99", None),
    ("MUG-ENAMEL", "Enamel Mug", "12.00", None),
    ("TOTE-CANVAS", "Canvas Tote", "18.00", None),
    ("JACKET-RAIN-L", "Rain Jacket Olive / L", "129.00", None),
    ("BEANIE-RED", "Merino Beanie Red", "22.50", None),
]

#: The ERP's taxes (name, rate as a fraction), each a percentage on the net amount. Tryton
#: 8.2 has no tax-included prices on sales (only price lists that take a gross price to a
#: net one): a shop's tax-included order reaches it as net prices with these taxes. The
#: first is the product category's customer tax, the ERP's own default; the others are
#: the rates the web-shop fixtures and the generated orders charge.
TAXES = [
    ("Sales tax 10%", "0.10"),
    ("State tax 6%", "0.06"),
    ("County tax 2%", "0.02"),
    ("Sales tax 8.25%", "0.0825"),
    ("TX state tax 6.25%", "0.0625"),
    ("Austin city tax 2%", "0.02"),
    ("HST 13%", "0.13"),
    ("VAT 19%", "0.19"),
    ("VAT 20%", "0.20"),
]

#: Currencies besides the company's USD, with units of the currency per USD.
CURRENCIES = [
    ("EUR", "Euro", "0.92"),
    ("GBP", "Pound Sterling", "0.79"),
    ("CAD", "Canadian Dollar", "1.36"),
]

#: Stores the replenishment flow transfers stock to: (code, name), each a storage location.
STORES = [("ST01", "Store Downtown"), ("ST02", "Store Harbour")]
SUPPLIER = "Northwind Supply"
#: Open purchase orders into the warehouse WH: (SKU, quantity, days until delivery, price).
OPEN_PURCHASES = [("CAP-RED", 60, 12, "4.20"), ("MUG-LOGO", 24, 5, "3.10")]

CUSTOMER = {
    "name": "Ada Shopper",
    "code": "WEB-1001",
    "street": "1 Market Street",
    "postal_code": "10001",
    "city": "Springfield",
}


def setup_key() -> str:
    """A key for a built database: trytond's version, this file's hash, the year.

    The year is part of it because the fiscal years cover this year and the next.
    """
    digest = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:12]
    return f"trytond-{version('trytond')}-{digest}-{datetime.date.today().year}"


def write_config(directory: Path, port: int | None = None) -> Path:
    """Write ``trytond.conf`` for SQLite databases in ``directory`` (and a port to listen on)."""
    directory = Path(directory).resolve()
    lines = ["[database]", "uri = sqlite://", f"path = {directory}", ""]
    if port is not None:
        lines += ["[web]", f"listen = 127.0.0.1:{port}", ""]
    config = directory / "trytond.conf"
    config.write_text("\n".join(lines))
    return config


def _run(args: list[str], env: dict[str, str] | None = None) -> None:
    done = subprocess.run(args, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(args[:4])} … failed with exit code {done.returncode}:\n"
            f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )


def build_database(directory: Path, password_file: Path, name: str = DATABASE) -> dict[str, Any]:
    """Create ``directory/<name>.sqlite`` with the demo data; return the ids of what it holds.

    ``password_file`` holds the admin password (read by trytond-admin through
    ``TRYTONPASSFILE``); it is never passed on a command line.
    """
    directory = Path(directory).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    config = write_config(directory)
    database = directory / f"{name}.sqlite"
    database.unlink(missing_ok=True)
    database.touch()  # trytond-admin initialises an existing, empty SQLite file
    env = {**os.environ, "TRYTONPASSFILE": str(Path(password_file).resolve())}
    _run(
        [
            sys.executable,
            "-m",
            "trytond.cli.admin",
            "-c",
            str(config),
            "-d",
            name,
            "--email",
            "admin@example.com",
            "-u",
            *MODULES,
            "--activate-dependencies",
        ],
        env=env,
    )
    _run([sys.executable, str(Path(__file__).resolve()), "populate", str(config), name])
    return json.loads((directory / f"{name}.json").read_text())


def populate(config: Path, name: str) -> dict[str, Any]:
    """Create the company, accounting, products, stock and customer (proteus, in-process)."""
    from proteus import Model
    from proteus import config as proteus_config
    from trytond.modules.account.tests.tools import (
        create_chart,
        create_fiscalyear,
        create_tax,
        get_accounts,
    )
    from trytond.modules.account_invoice.tests.tools import (
        create_payment_term,
        set_fiscalyear_invoice_sequences,
    )
    from trytond.modules.company.tests.tools import create_company, get_company

    proteus_config.set_trytond(name, user=USER, config_file=str(config))
    Party = Model.get("party.party")

    company_party = Party(name="Flowyard Retail Ltd")
    company_party.save()
    create_company(party=company_party, currency="USD")
    company = get_company()
    create_chart(company)
    accounts = get_accounts(company)

    this_year = datetime.date.today().year
    for year in (this_year, this_year + 1):
        fiscalyear = create_fiscalyear(
            company, today=(datetime.date(year, 1, 1), datetime.date(year, 12, 31))
        )
        set_fiscalyear_invoice_sequences(fiscalyear)
        fiscalyear.click("create_period")

    taxes = {}
    for tax_name, rate in TAXES:
        tax = create_tax(Decimal(rate), company)
        tax.name = tax.description = tax_name
        tax.save()
        taxes[tax_name] = tax
    tax = taxes[TAXES[0][0]]
    # Shops compute tax per line and round it there; Tryton's default rounds per document.
    Configuration = Model.get("account.configuration")
    configuration = Configuration(1)
    configuration.tax_rounding = "line"
    configuration.save()

    Currency = Model.get("currency.currency")
    Rate = Model.get("currency.currency.rate")
    currencies = {}
    for code, currency_name, rate in CURRENCIES:
        currency = Currency(name=currency_name, code=code, symbol=code, rounding=Decimal("0.01"))
        currency.save()
        Rate(currency=currency, date=datetime.date(2000, 1, 1), rate=Decimal(rate)).save()
        currencies[code] = currency.id
    payment_term = create_payment_term()
    payment_term.save()

    category = Model.get("product.category")(name="Retail goods")
    category.accounting = True
    category.account_expense = accounts["expense"]
    category.account_revenue = accounts["revenue"]
    category.customer_taxes.append(tax)
    category.save()

    (unit,) = Model.get("product.uom").find([("name", "=", "Unit")])
    Template = Model.get("product.template")
    products = {}
    for sku, title, price, quantity in PRODUCTS:
        template = Template(name=title, code=sku, default_uom=unit, salable=True)
        template.type = "service" if quantity is None else "goods"
        template.list_price = Decimal(price)
        template.account_category = category
        template.save()
        (product,) = template.products
        products[sku] = product

    Location = Model.get("stock.location")
    (storage,) = Location.find([("code", "=", "STO")])
    (warehouse,) = Location.find([("code", "=", "WH")])
    inventory = Model.get("stock.inventory")(location=storage)
    for sku, _, _, quantity in PRODUCTS:
        if quantity is not None:
            line = inventory.lines.new(product=products[sku])
            line.quantity = float(quantity)
            line.expected_quantity = 0.0
    inventory.click("confirm")
    assert inventory.state == "done", inventory.state

    customer = Party(name=CUSTOMER["name"], code=CUSTOMER["code"])
    (address,) = customer.addresses
    address.street = CUSTOMER["street"]
    address.postal_code = CUSTOMER["postal_code"]
    address.city = CUSTOMER["city"]
    customer.save()

    replenishment = _populate_replenishment(Model, products, unit, warehouse, payment_term)

    ids = {
        "database": name,
        "user": USER,
        "company": company.id,
        "currency": company.currency.id,
        "customer": customer.id,
        "customer_address": customer.addresses[0].id,
        "tax": tax.id,
        "taxes": {tax_name: t.id for tax_name, t in taxes.items()},
        "currencies": {"USD": company.currency.id, **currencies},
        "payment_term": payment_term.id,
        "product_category": category.id,
        "unit": unit.id,
        "warehouse": warehouse.id,
        "storage": storage.id,
        "products": {sku: product.id for sku, product in products.items()},
        "stock": {sku: quantity for sku, _, _, quantity in PRODUCTS if quantity is not None},
        "list_prices": {sku: price for sku, _, price, _ in PRODUCTS},
        **replenishment,
    }
    Path(config).parent.joinpath(f"{name}.json").write_text(json.dumps(ids, indent=2) + "\n")
    return ids


def _populate_replenishment(
    Model: Any, products: dict[str, Any], unit: Any, warehouse: Any, payment_term: Any
) -> dict[str, Any]:
    """The stores, the supplier, purchasable goods and open purchase orders (proteus)."""
    # A store is a storage location of its own, not a second warehouse: with one warehouse
    # Tryton gives sales and purchases theirs by default, as the other flows expect.
    Location = Model.get("stock.location")
    stores = {}
    for code, store_name in STORES:
        store = Location(name=store_name, code=code, type="storage")
        store.save()
        stores[code] = store.id

    Party = Model.get("party.party")
    supplier = Party(name=SUPPLIER)
    supplier.save()
    for sku, _, _, quantity in PRODUCTS:
        if quantity is not None:
            template = products[sku].template
            template.purchasable = True
            template.purchase_uom = unit
            template.save()

    Purchase = Model.get("purchase.purchase")
    today = datetime.date.today()
    purchases = {}
    for sku, quantity, days, price in OPEN_PURCHASES:
        purchase = Purchase(party=supplier, payment_term=payment_term, invoice_method="order")
        purchase.warehouse = warehouse
        purchase.delivery_date = today + datetime.timedelta(days=days)
        line = purchase.lines.new(product=products[sku])
        line.quantity = float(quantity)
        line.unit_price = Decimal(price)
        purchase.click("quote")
        purchase.click("confirm")
        purchases[sku] = {"id": purchase.id, "number": purchase.number, "state": purchase.state}
    return {"stores": stores, "supplier": supplier.id, "purchases": purchases}


def copy_database(source: Path, target: Path) -> None:
    """Copy a SQLite database through SQLite's backup API (a file copy can miss WAL writes)."""
    Path(target).unlink(missing_ok=True)
    src = sqlite3.connect(f"file:{Path(source).resolve()}?mode=ro", uri=True)
    dst = sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class TrytonServer:
    """``trytond`` in a subprocess, serving the SQLite databases of one directory on 127.0.0.1."""

    def __init__(self, directory: Path, databases: list[str], port: int | None = None):
        self.directory = Path(directory).resolve()
        self.databases = list(databases)
        self.port = port or free_port()
        self.log_path = self.directory / "trytond.log"
        self._process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        """The server's base URL, e.g. ``http://127.0.0.1:8000``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        """True while the trytond process is alive."""
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 60.0) -> TrytonServer:
        """Start trytond and return once it answers RPC calls."""
        config = write_config(self.directory, self.port)
        with open(self.log_path, "wb") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "trytond.cli", "-c", str(config), "-d", *self.databases],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={
                    **os.environ,
                    "TRYTOND_LOGGING_LEVEL": os.environ.get("TRYTOND_LOGGING_LEVEL", "30"),
                },
            )
        deadline = time.monotonic() + timeout
        body = {"id": 0, "method": "common.server.version", "params": []}
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(f"trytond exited with {self._process.returncode}:\n{self.log()}")
            try:
                if httpx.post(f"{self.url}/rpc/", json=body, timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"trytond did not answer within {timeout} s:\n{self.log()}")
            time.sleep(0.1)

    def log(self, tail: int = 4000) -> str:
        """The end of the server's log."""
        try:
            return self.log_path.read_text(errors="replace")[-tail:]
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 10 s)."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def __enter__(self) -> TrytonServer:
        return self.start() if self._process is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="build the demo database in DIR")
    build.add_argument("directory", type=Path)
    build.add_argument("--password-file", type=Path, required=True)
    build.add_argument("--database", default=DATABASE)
    fill = commands.add_parser("populate", help="(internal) add the demo data with proteus")
    fill.add_argument("config", type=Path)
    fill.add_argument("database")
    args = parser.parse_args(argv)
    if args.command == "build":
        print(json.dumps(build_database(args.directory, args.password_file, args.database)))
    else:
        populate(args.config, args.database)
    return 0


if __name__ == "__main__":
    sys.exit(main())
