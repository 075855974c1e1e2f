"""What every sub-command reports with: the one-line error and the process exit codes."""

from __future__ import annotations

EXIT_OK = 0
EXIT_DRIFT = 1  # reconcile found drift
EXIT_USAGE = 2  # bad arguments or settings, unreachable services, a CliError
EXIT_RELAY_DIED = 1  # consume --with-relay: the relay thread died
EXIT_POSITION_REFUSED = 3  # consume: a stored position does not fit its topic


class CliError(Exception):
    """A failure to report as one line on stderr with exit code 2."""


def one_line(exc: BaseException) -> str:
    """The exception's text with its line breaks and runs of spaces folded to single spaces."""
    return " ".join(str(exc).split())


def database_unreachable(exc: BaseException) -> CliError:
    """The CliError for a database that does not answer, naming the setting to check."""
    return CliError(f"cannot reach the database (LEDGER_DATABASE_URL): {one_line(exc)}")
