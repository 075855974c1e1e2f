"""Budget Ledger: one import package; its subpackages live in the repository's top folders.

`pyproject.toml` maps `budget_ledger.ledger` to `ledger/`, `budget_ledger.schemas` to `schemas/`,
and so on (see docs/architecture.md, "One import package").
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("budget-ledger")
except PackageNotFoundError:  # running from a checkout that is not installed
    __version__ = "0+unknown"
