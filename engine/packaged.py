"""The shipped flows, mappings and canonical schemas: where they are, by name.

The repository keeps them at its top level (``flows/``, ``mappings/``: the design card's
layout). ``setup.cfg`` maps those folders into the distribution as the data packages
``engine.builtin.flows`` and ``engine.builtin.mappings``, so an installed flowyard carries
them inside ``engine/builtin/``. Run from a checkout (or an editable install) there is no
``engine/builtin/``, and the folders beside ``engine/`` are the same files. Either way
:func:`root` is the folder holding ``flows/`` and ``mappings/``.

The loader searches the built-in mapping folders after a flow's own (see
:func:`mapping_dirs`), so ``map: shopify_order_to_canonical`` and ``validate: order`` work
in a flow of one's own without copying anything.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

_ENGINE = Path(__file__).resolve().parent

#: the mapping folders of the built-in set, relative to :func:`root`; searched in this order
MAPPING_FOLDERS = ("mappings", "mappings/tryton")
#: what a flow's test file is called next to it: ``order_to_erp.yaml`` ->
#: ``order_to_erp.test.yaml``
TEST_SUFFIX = ".test.yaml"


@cache
def root() -> Path | None:
    """The folder holding the built-in ``flows/`` and ``mappings/``; None if neither the
    installed copy nor a checkout has them (a broken install)."""
    for candidate in (_ENGINE / "builtin", _ENGINE.parent):
        if (candidate / "flows").is_dir() and (candidate / "mappings" / "canonical").is_dir():
            return candidate
    return None


def mapping_dirs() -> list[Path]:
    """The built-in mapping folders (each may hold ``canonical/*.schema.json``)."""
    base = root()
    if base is None:
        return []
    return [base / folder for folder in MAPPING_FOLDERS if (base / folder).is_dir()]


def flows_dir() -> Path | None:
    """The folder of the shipped flows."""
    base = root()
    return base / "flows" if base is not None else None


def flow_names() -> list[str]:
    """The names of the shipped flows (their file names without ``.yaml``)."""
    folder = flows_dir()
    if folder is None:
        return []
    return sorted(p.stem for p in folder.glob("*.yaml") if not p.name.endswith(TEST_SUFFIX))


def flow_file(name: str) -> Path | None:
    """The shipped flow called ``name`` (``order_to_erp``), or None."""
    folder = flows_dir()
    if folder is None or "/" in name or name.startswith("."):
        return None
    path = folder / f"{name}.yaml"
    return path if path.is_file() else None


def flow_tests_file(flow: Path) -> Path:
    """Where the test file of the flow at ``flow`` is: ``<name>.test.yaml`` beside it."""
    return flow.with_name(flow.stem + TEST_SUFFIX)


def find_mapping(name: str) -> Path | None:
    """The built-in mapping called ``name``, or None."""
    for folder in mapping_dirs():
        path = folder / f"{name}.yaml"
        if path.is_file():
            return path
    return None


def find_schema(name: str) -> Path | None:
    """The built-in canonical schema called ``name`` (``order``), or None."""
    for folder in mapping_dirs():
        path = folder / "canonical" / f"{name}.schema.json"
        if path.is_file():
            return path
    return None


def mapping_names() -> list[str]:
    """Every built-in mapping's name."""
    return sorted({p.stem for folder in mapping_dirs() for p in folder.glob("*.yaml")})


def schema_names() -> list[str]:
    """Every built-in canonical schema's name (``order``, ``return`` ...)."""
    return sorted(
        {
            p.name[: -len(".schema.json")]
            for folder in mapping_dirs()
            for p in (folder / "canonical").glob("*.schema.json")
        }
    )
