"""Compile the modules named on the command line with mypyc, in place (run by compile.sh).

Usage: ``python native.py ROOT MODULE...``. ROOT holds the package as ``budget_ledger/...``
(compile.sh's view of the repository, or the image's link to the installed package; not
site-packages itself, where mypy takes every installed module for one of ours); each module
gets a C extension next to its ``.py``, all sharing one runtime, ``budget_ledger/_native__mypyc``.
``budget_ledger/_native.json`` records the SHA-256 of every compiled source, so that
`budget_ledger.native` can refuse to run extensions older than their source.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

from mypyc.build import mypycify
from setuptools import Distribution


def main(root: str, modules: list[str]) -> None:
    os.chdir(root)
    paths = [str(Path(*m.split(".")).with_suffix(".py")) for m in modules]
    extensions = mypycify(paths, opt_level="3", group_name="budget_ledger._native")
    dist = Distribution({"name": "budget-ledger-native", "ext_modules": extensions})
    build = dist.get_command_obj("build_ext")
    build.inplace = True  # type: ignore[attr-defined]
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
    main(sys.argv[1], sys.argv[2:])
