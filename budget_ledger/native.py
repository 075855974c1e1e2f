"""Whether the compiled core is in use, and a refusal to run it when it is older than its source.

`deploy/local/compile.sh` compiles the modules `pyproject.toml` lists under
``[tool.budget_ledger] compiled`` with mypyc (docs/performance.md, "The compiled core"): each gets
a C extension beside its ``.py``, which Python imports instead of the ``.py``. An extension built
from an older version of its source would run that older code, silently; `check_fresh` compares
the sources recorded at build time (``_native.json``) with the ones on disk.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

_RECORD = Path(__file__).with_name("_native.json")


class StaleBuild(RuntimeError):
    """A compiled module's source changed after it was compiled."""


def _sources() -> dict[str, dict[str, str]]:
    """The last build's record, module -> its source's path and SHA-256 ({}: interpreted)."""
    if not _RECORD.exists() or not any(_RECORD.parent.glob("_native__mypyc.*")):
        return {}
    return dict(json.loads(_RECORD.read_text()))


def compiled_modules() -> list[str]:
    """The modules of the last build (empty when the core runs interpreted)."""
    return sorted(_sources())


def stale_modules() -> list[str]:
    """The compiled modules whose source differs from the one they were built from."""
    stale = []
    for module, source in _sources().items():
        path = Path(source["path"])
        if not path.exists() or hashlib.sha256(path.read_bytes()).hexdigest() != source["sha256"]:
            stale.append(module)
    return sorted(stale)


def check_fresh() -> None:
    """Raise `StaleBuild` naming every compiled module whose source differs from the build's."""
    if stale := stale_modules():
        raise StaleBuild(
            f"compiled modules older than their source: {', '.join(stale)}; run "
            "`bash deploy/local/compile.sh` (or `bash deploy/local/compile.sh --clean` to run "
            "interpreted)"
        )


if __name__ == "__main__":
    # compile.sh: exit 0 when the build is current for exactly the modules named (run as a
    # script, so that the package's own freshness check does not refuse first).
    current = compiled_modules() == sorted(sys.argv[1:]) and not stale_modules()
    sys.exit(0 if current else 1)
