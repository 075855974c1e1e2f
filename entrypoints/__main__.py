"""`python -m budget_ledger.entrypoints`: the same as the `budget-ledger` console script."""

from budget_ledger.entrypoints.cli import main

raise SystemExit(main())
