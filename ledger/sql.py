"""Named SQL queries kept in `.sql` files: blocks introduced by `-- name: <query_name>`."""

from __future__ import annotations

from importlib import resources


def load_queries(package: str, filename: str = "queries.sql") -> dict[str, str]:
    """Parse `package/filename` into {name: sql}; a query runs to the next `-- name:` line."""
    text = (resources.files(package) / filename).read_text("utf-8")
    queries: dict[str, str] = {}
    name: str | None = None
    lines: list[str] = []
    for line in text.splitlines():
        if line.startswith("-- name:"):
            if name:
                queries[name] = "\n".join(lines).strip()
            name, lines = line.removeprefix("-- name:").strip(), []
        elif name is not None:
            lines.append(line)
    if name:
        queries[name] = "\n".join(lines).strip()
    return queries
