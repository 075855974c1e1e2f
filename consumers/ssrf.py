"""Server-side request forgery guard of webhook deliveries: which addresses may be called.

A tenant chooses the URL, so without a check the deliverer would POST, from inside the cluster,
to the cloud metadata service, the database or a pod's admin port. The host is resolved at
delivery time (a name may point anywhere later than at registration), every address it resolves
to must be public, and the connection goes to the address that was checked (consumers.webhook_http
pins it), so a second, rebinding answer cannot slip in between.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Cloud metadata services: link-local (IPv4) or unique-local (AWS's IPv6 endpoint), refused
# even with LEDGER_WEBHOOK_ALLOW_PRIVATE, which exists for loopback receivers in development.
METADATA = frozenset(
    {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
)


class RefusedTarget(Exception):
    """A URL or address the deliverer must not call (the message says why)."""


@dataclass(frozen=True, slots=True)
class Target:
    """A checked URL: scheme, host (for TLS and Host), port, path with query, and the address."""

    scheme: str
    host: str
    port: int
    path: str
    address: str


def address_problem(addr: IPAddress, allow_private: bool) -> str | None:
    """Why `addr` may not be called, or None when it may (pure)."""
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return address_problem(addr.ipv4_mapped, allow_private)
    if addr in METADATA:
        return "a cloud metadata address"
    if allow_private:
        return None
    for kind, flag in (
        ("loopback", addr.is_loopback),
        ("link-local", addr.is_link_local),
        ("multicast", addr.is_multicast),
        ("unspecified", addr.is_unspecified),
        ("private", addr.is_private),
        ("reserved", addr.is_reserved),
        ("not globally routable", not addr.is_global),
    ):
        if flag:
            return f"a {kind} address"
    return None


def url_problem(url: str, allow_private: bool) -> str | None:
    """What is wrong with a webhook URL before any resolution (scheme, host, port), or None."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"not a URL: {exc}"
    if parts.username or parts.password:
        return "credentials in the URL are not accepted"
    if not parts.hostname:
        return "the URL has no host"
    if parts.fragment:
        return "the URL has a fragment"
    if parts.scheme == "https":
        return None
    if parts.scheme == "http" and allow_private:
        # Development only: plain HTTP to this machine.
        host = parts.hostname
        if host == "localhost":
            return None
        try:
            if ipaddress.ip_address(host).is_loopback:
                return None
        except ValueError:
            pass
        return "http:// is accepted for loopback hosts only"
    del port
    return "the URL must use https"


def resolve(url: str, allow_private: bool) -> Target:
    """Check `url`, resolve its host now, and return the address to connect to; raise
    RefusedTarget when the URL or ANY of its addresses is refused (socket.gaierror when the
    name does not resolve: retryable)."""
    problem = url_problem(url, allow_private)
    if problem is not None:
        raise RefusedTarget(problem)
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    addresses: list[str] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        text = str(sockaddr[0]).split("%", 1)[0]  # an IPv6 zone id is not part of the address
        addr = ipaddress.ip_address(text)
        why = address_problem(addr, allow_private)
        if why is not None:
            raise RefusedTarget(f"{host} resolves to {addr}, {why}")
        addresses.append(text)
    if not addresses:
        raise RefusedTarget(f"{host} resolves to no address")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return Target(parts.scheme, host, port, path, addresses[0])


def registration_problem(url: str, allow_private: bool) -> str | None:
    """What refuses `url` at registration, without a DNS look-up (the resolved addresses are
    checked at every delivery): the URL's form, and a literal or `localhost` host."""
    problem = url_problem(url, allow_private)
    if problem is not None:
        return problem
    host = (urlsplit(url).hostname or "").rstrip(".").lower()
    if not allow_private and (host == "localhost" or host.endswith(".localhost")):
        return "a loopback host"
    try:
        addr = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    why = address_problem(addr, allow_private)
    return None if why is None else f"{host} is {why}"
