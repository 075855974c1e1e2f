"""Compile the core with mypyc, in place (run by compile.sh and by the image's build stage).

Usage: ``python native.py ROOT`` compiles the modules ``pyproject.toml`` lists under
``[tool.budget_ledger] compiled``; ``python native.py --list`` prints them. ROOT holds the
package as ``budget_ledger/...`` (compile.sh's view of the repository, or the image's link to the
installed package; not site-packages itself, where mypy takes every installed module for one of
ours); each module gets a C extension next to its ``.py``, all sharing one runtime,
``budget_ledger/_native__mypyc``. ``budget_ledger/_native.json`` records the SHA-256 of every
compiled source, so that `budget_ledger.native` can refuse to run extensions older than their
source.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def compiled_modules() -> list[str]:
    """The modules to compile, as `pyproject.toml` lists them."""
    return list(tomllib.loads(PYPROJECT.read_text())["tool"]["budget_ledger"]["compiled"])


def build(root: str, modules: list[str]) -> None:
    """Compile ``modules`` in place under ``root`` and record their sources."""
    from mypyc.build import mypycify  # the build's tools only: --list needs neither
    from setuptools import Distribution

    os.chdir(root)
    paths = [str(Path(*m.split(".")).with_suffix(".py")) for m in modules]
    extensions = mypycify(paths, opt_level="3", group_name="budget_ledger._native")
    dist = Distribution({"name": "budget-ledger-native", "ext_modules": extensions})
    build_ext = dist.get_command_obj("build_ext")
    build_ext.inplace = True  # type: ignore[attr-defined]
    dist.run_command("build_ext")
    sources = {
        m: {
            "path": os.path.realpath(p),
            "sha256": hashlib.sha256(Path(p).read_bytes()).hexdigest(),
        }
        for m, p in zip(modules, paths, strict=True)
    }
    Path("budget_ledger/_native.json").write_text(json.dumps(sources, indent=1) + "\n")


if __name__ == "__main__":
    if sys.argv[1:] == ["--list"]:
        print("\n".join(compiled_modules()))
    else:
        build(sys.argv[1], compiled_modules())
