"""`python -m entrypoints`: the same as the `budget-ledger` console script."""

from entrypoints.cli import main

raise SystemExit(main())
