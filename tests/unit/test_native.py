"""`budget_ledger.native`: a compiled module whose source changed after the build is refused."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from budget_ledger import native

pytestmark = pytest.mark.unit


def _build(tmp_path: Path, source: str) -> Path:
    """A build record of one module compiled from ``source``, and its shared runtime."""
    src = tmp_path / "mod.py"
    src.write_text(source)
    (tmp_path / "_native__mypyc.cpython-311-x86_64-linux-gnu.so").write_bytes(b"")
    digest = hashlib.sha256(source.encode()).hexdigest()
    record = tmp_path / "_native.json"
    record.write_text(json.dumps({"pkg.mod": {"path": str(src), "sha256": digest}}))
    return src


def test_a_source_changed_or_gone_after_the_build_is_stale(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = _build(tmp_path, "x = 1\n")
    monkeypatch.setattr(native, "_RECORD", tmp_path / "_native.json")
    assert native.compiled_modules() == ["pkg.mod"] and native.stale_modules() == []
    native.check_fresh()
    src.write_text("x = 2\n")
    assert native.stale_modules() == ["pkg.mod"]
    with pytest.raises(native.StaleBuild, match=r"pkg\.mod; run `bash deploy/local/compile.sh`"):
        native.check_fresh()
    src.unlink()
    assert native.stale_modules() == ["pkg.mod"]


def test_without_the_shared_runtime_nothing_counts_as_compiled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = _build(tmp_path, "x = 1\n")
    next(tmp_path.glob("_native__mypyc.*")).unlink()
    src.write_text("x = 2\n")
    monkeypatch.setattr(native, "_RECORD", tmp_path / "_native.json")
    assert native.compiled_modules() == [] and native.stale_modules() == []
    native.check_fresh()
