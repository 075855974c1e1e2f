"""The SSRF guard of webhook deliveries: which addresses and URLs are refused."""

from __future__ import annotations

import ipaddress

import pytest

from budget_ledger.consumers.ssrf import (
    RefusedTarget,
    address_problem,
    registration_problem,
    resolve,
    url_problem,
)

pytestmark = pytest.mark.unit

REFUSED = [
    "127.0.0.1", "127.8.9.10", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254",
    "169.254.1.1", "100.64.0.1", "0.0.0.0", "224.0.0.1", "240.0.0.1", "255.255.255.255",
    "192.0.2.1", "::1", "::", "fe80::1", "fc00::1", "fd00:ec2::254", "ff02::1",
    "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:169.254.169.254", "2001:db8::1",
    "64:ff9b::a00:1",
]  # fmt: skip
ALLOWED = ["93.184.215.14", "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8"]


@pytest.mark.parametrize("text", REFUSED)
def test_private_and_special_addresses_are_refused(text: str) -> None:
    assert address_problem(ipaddress.ip_address(text), allow_private=False) is not None


@pytest.mark.parametrize("text", ALLOWED)
def test_public_addresses_are_allowed(text: str) -> None:
    assert address_problem(ipaddress.ip_address(text), allow_private=False) is None


@pytest.mark.parametrize("text", ["169.254.169.254", "fd00:ec2::254", "::ffff:169.254.169.254"])
def test_metadata_is_refused_even_when_private_is_allowed(text: str) -> None:
    assert address_problem(ipaddress.ip_address(text), allow_private=True) is not None


def test_loopback_is_allowed_with_the_flag() -> None:
    assert address_problem(ipaddress.ip_address("127.0.0.1"), allow_private=True) is None


@pytest.mark.parametrize(
    ("url", "allow", "ok"),
    [
        ("https://example.com/hook", False, True),
        ("http://example.com/hook", False, False),
        ("http://127.0.0.1:8080/hook", False, False),
        ("http://127.0.0.1:8080/hook", True, True),
        ("http://localhost:8080/hook", True, True),
        ("http://example.com/hook", True, False),  # http to a non-loopback host: never
        ("ftp://example.com/", False, False),
        ("https://user:pw@example.com/", False, False),
        ("https:///nohost", False, False),
        ("https://example.com:99999/", False, False),
    ],
)
def test_url_form(url: str, allow: bool, ok: bool) -> None:
    assert (url_problem(url, allow) is None) is ok


@pytest.mark.parametrize(
    "url",
    ["https://127.0.0.1/", "https://localhost/", "https://a.localhost/", "https://[::1]/",
     "https://169.254.169.254/latest/meta-data", "https://[fd00:ec2::254]/", "https://10.0.0.7/"],
)  # fmt: skip
def test_registration_refuses_literal_private_hosts(url: str) -> None:
    assert registration_problem(url, allow_private=False) is not None


def test_registration_accepts_a_public_name_without_resolving_it() -> None:
    assert registration_problem("https://hooks.example.invalid/x", allow_private=False) is None


def test_resolve_refuses_a_name_that_resolves_to_loopback() -> None:
    # `localhost` resolves (from /etc/hosts) to loopback: refused at delivery time.
    with pytest.raises(RefusedTarget, match="loopback"):
        resolve("https://localhost:8443/hook", allow_private=False)


def test_resolve_pins_the_checked_address_and_keeps_path_and_query() -> None:
    t = resolve("http://127.0.0.1:8080/a/b?x=1", allow_private=True)
    assert (t.address, t.port, t.path, t.host, t.scheme) == ("127.0.0.1", 8080, "/a/b?x=1",
                                                            "127.0.0.1", "http")  # fmt: skip
