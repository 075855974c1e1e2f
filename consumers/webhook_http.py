"""One webhook attempt over HTTP(S), connected to the address the SSRF guard checked.

The standard library's http.client, with `connect` pointed at the checked address: TLS still
verifies the certificate against the URL's host name (SNI and host name check), and no second
DNS look-up happens between the check and the connection (no rebinding window).
"""

from __future__ import annotations

import http.client
import socket
import ssl
import time
from dataclasses import dataclass

from budget_ledger.consumers.ssrf import Target

# What is kept of a receiver's answer: enough for a log line, never more.
MAX_ERROR_TEXT = 200


@dataclass(frozen=True, slots=True)
class AttemptResult:
    """How one attempt ended: the HTTP status (None: no answer), its latency, an error text and
    the receiver's Retry-After header."""

    status: int | None
    latency_ms: int
    error: str | None
    retry_after: str | None


class _PinnedHTTP(http.client.HTTPConnection):
    def __init__(self, target: Target, timeout: float) -> None:
        super().__init__(target.host, target.port, timeout=timeout)
        self._address = target.address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPS(http.client.HTTPSConnection):
    def __init__(self, target: Target, timeout: float, context: ssl.SSLContext) -> None:
        super().__init__(target.host, target.port, timeout=timeout, context=context)
        self._address = target.address
        self._ctx = context

    def connect(self) -> None:
        raw = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._ctx.wrap_socket(raw, server_hostname=self.host)


_TLS = ssl.create_default_context()


def post(target: Target, body: bytes, headers: dict[str, str], timeout: float) -> AttemptResult:
    """POST `body` to `target` once; connection errors and timeouts are results, not raised."""
    started = time.monotonic()
    conn: http.client.HTTPConnection = (
        _PinnedHTTPS(target, timeout, _TLS)
        if target.scheme == "https"
        else _PinnedHTTP(target, timeout)
    )
    try:
        conn.request(
            "POST",
            target.path,
            body=body,
            headers={**headers, "user-agent": "budget-ledger-webhooks"},
        )
        resp = conn.getresponse()
        resp.read(4096)  # drain a little so the receiver sees a clean close; ignore the rest
        status = resp.status
        error = None if 200 <= status < 300 else f"HTTP {status} {resp.reason}"[:MAX_ERROR_TEXT]
        return AttemptResult(status, _ms(started), error, resp.getheader("retry-after"))
    except TimeoutError:
        return AttemptResult(None, _ms(started), f"timed out after {timeout:g} s", None)
    except (OSError, http.client.HTTPException) as exc:
        text = f"{type(exc).__name__}: {exc}"[:MAX_ERROR_TEXT]
        return AttemptResult(None, _ms(started), text, None)
    finally:
        conn.close()


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
