"""Budget Ledger: one import package; its subpackages live in the repository's top folders.

`pyproject.toml` maps `budget_ledger.ledger` to `ledger/`, `budget_ledger.schemas` to `schemas/`,
and so on (see docs/architecture.md, "One import package").
"""

from importlib.metadata import PackageNotFoundError, version

from budget_ledger.native import check_fresh

try:
    __version__ = version("budget-ledger")
except PackageNotFoundError:  # running from a checkout that is not installed
    __version__ = "0+unknown"

# Compiled modules built from an older source would run that older code (budget_ledger.native).
check_fresh()
