"""The top floor: the `budget-ledger` command line and the process wiring; nothing imports it."""
