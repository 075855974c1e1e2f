"""The wheel installs one import name, `budget_ledger` (docs/architecture.md).

The folders `ledger/`, `schemas/`, ... are mapped under `budget_ledger` by setuptools' package-dir
in pyproject.toml. These tests read that configuration and the tree: they fail when a new
subpackage or `.sql` file would be left out of the wheel, or when a module imports a folder by its
bare name (which works from a checkout, whose root is on sys.path, but not once installed).
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import json
import tomllib
from importlib import metadata, resources
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
TOP = "budget_ledger"
SETUPTOOLS = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
PACKAGE_DIR: dict[str, str] = SETUPTOOLS["package-dir"]
PACKAGES: list[str] = SETUPTOOLS["packages"]
PACKAGE_DATA: dict[str, list[str]] = SETUPTOOLS["package-data"]
# The mapped folders: {"budget_ledger.ledger": "ledger", ...}.
FOLDERS = {name: folder for name, folder in PACKAGE_DIR.items() if name != TOP}


def _source_dir(package: str) -> Path:
    """The folder setuptools reads `package` from: its nearest mapped parent, plus the rest."""
    parts = package.split(".")
    for i in range(len(parts), 0, -1):
        head = ".".join(parts[:i])
        if head in PACKAGE_DIR:
            return ROOT.joinpath(PACKAGE_DIR[head], *parts[i:])
    return ROOT.joinpath(*parts)


def _owner(path: Path) -> str:
    """The listed package whose folder holds `path` most closely."""
    candidates = [p for p in PACKAGES if path.is_relative_to(_source_dir(p))]
    return max(candidates, key=lambda p: len(_source_dir(p).parts))


def test_the_only_top_level_import_name_is_budget_ledger() -> None:
    assert {p.split(".")[0] for p in PACKAGES} == {TOP}
    assert {p.split(".")[0] for p in PACKAGE_DIR} == {TOP}
    assert {p.split(".")[0] for p in PACKAGE_DATA} == {TOP}
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    for target in scripts.values():
        module, _, attr = target.partition(":")
        assert module.startswith(f"{TOP}.")
        assert callable(getattr(importlib.import_module(module), attr))


def test_every_folder_with_an_init_is_a_listed_package() -> None:
    found = {TOP}
    for name, folder in FOLDERS.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            found.add(".".join((name, *init.parent.relative_to(ROOT / folder).parts)))
    assert not found - set(PACKAGES), "add to [tool.setuptools] packages in pyproject.toml"
    assert not set(PACKAGES) - found, "listed packages without a folder and __init__.py"


def test_every_sql_file_is_package_data() -> None:
    shipped = {
        path
        for package, patterns in PACKAGE_DATA.items()
        for pattern in patterns
        for path in _source_dir(package).glob(pattern)  # the glob setuptools applies
    }
    sql = {path for folder in FOLDERS.values() for path in (ROOT / folder).rglob("*.sql")}
    assert sql, "the walk found no .sql file"
    missing = sorted(f"{p.relative_to(ROOT)} (package {_owner(p)})" for p in sql - shipped)
    assert not missing, f"not in [tool.setuptools.package-data]: {missing}"


# Fixture generators run against the tree of the commit that made the fixture, old names included.
FIXTURES = ROOT / "tests" / "fixtures"


def test_no_module_imports_a_folder_by_its_bare_name() -> None:
    bare = {folder.split("/")[0] for folder in FOLDERS.values()}
    roots = [ROOT / TOP, *(ROOT / f for f in FOLDERS.values()), ROOT / "tests", ROOT / "bench"]
    paths = (p for root in roots if root.is_dir() for p in sorted(root.rglob("*.py")))
    found = []
    for path in (p for p in paths if not p.is_relative_to(FIXTURES)):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            found += [
                f"{path.relative_to(ROOT)}:{node.lineno} {name}"
                for name in names
                if name.split(".")[0] in bare
            ]
    assert not found, f"import these as {TOP}.<folder>...: {found}"


def test_the_installed_distribution_is_this_layout() -> None:
    # Fails on a virtualenv installed before the mapping: reinstall (`pip install -e .`).
    top_level = metadata.distribution("budget-ledger").read_text("top_level.txt") or ""
    assert top_level.split() == [TOP]
    assert (resources.files(f"{TOP}.ledger") / "queries.sql").is_file()


# The web console (docs/console.md): its static files ship in the wheel, and the committed bundle
# is the one deploy/local/console.sh built from the current sources and lock file.
CONSOLE_STATIC = ROOT / "entrypoints" / "api" / "console_static"


def _sha256sum_lines(base: Path, names: list[str]) -> bytes:
    """What `sha256sum NAMES` prints in `base` (console.sh hashes its inputs this way)."""
    return "".join(
        f"{hashlib.sha256((base / n).read_bytes()).hexdigest()}  {n}\n" for n in names
    ).encode()


def test_the_console_files_are_package_data() -> None:
    patterns = PACKAGE_DATA["budget_ledger.entrypoints.api"]
    shipped = {
        p
        for pattern in patterns
        for p in _source_dir("budget_ledger.entrypoints.api").glob(pattern)
    }
    for name in ["index.html", "console.js", "console.css"]:
        assert CONSOLE_STATIC / name in shipped, name
    assert (
        resources.files("budget_ledger.entrypoints.api") / "console_static" / "index.html"
    ).is_file()


def test_the_committed_console_bundle_matches_its_sources() -> None:
    console = ROOT / "console"
    sources = sorted(
        str(p.relative_to(console)) for p in (console / "src").rglob("*") if p.is_file()
    )
    inputs = _sha256sum_lines(console, ["package.json", "package-lock.json", *sources])
    outputs = _sha256sum_lines(CONSOLE_STATIC, ["console.js", "console.css"])
    stamp = (CONSOLE_STATIC / "bundle.sha256").read_text().splitlines()
    assert stamp[0] == f"inputs {hashlib.sha256(inputs).hexdigest()}", (
        "console/ changed since the bundle was built: run deploy/local/console.sh"
    )
    assert stamp[1] == f"outputs {hashlib.sha256(outputs).hexdigest()}", (
        "the committed bundle is not the one console.sh built: run deploy/local/console.sh"
    )


def test_the_console_lock_pins_exact_versions() -> None:
    package = json.loads((ROOT / "console" / "package.json").read_text())
    for deps in (package["dependencies"], package["devDependencies"]):
        for name, spec in deps.items():
            assert spec[0].isdigit(), f"{name}: pin an exact version, not {spec!r}"
