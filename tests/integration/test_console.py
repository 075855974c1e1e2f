"""The web console in headless Chromium (Debian's, driven by Playwright for Python) against the
real stack: Kafka, Postgres, a running consumer and the API served by uvicorn on an OS-chosen
port. Screenshots go to tests/artifacts/ (git-ignored); LEDGER_UPDATE_DOCS_SCREENSHOT=1 also
copies the live budget page to docs/console.png."""

from __future__ import annotations

import csv
import io
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
import pytest
import uvicorn
from confluent_kafka import Producer
from playwright.sync_api import Browser, ConsoleMessage, Page, expect, sync_playwright

from budget_ledger.consumers.kafka_config import producer_config
from budget_ledger.consumers.webhook_deliverer import Deliverer
from budget_ledger.entrypoints.api.app import create_app
from budget_ledger.entrypoints.api.keys import create_key
from budget_ledger.ledger.settings import Settings
from budget_ledger.schemas.codec import make_alert_id
from tests.conftest import _delete_topics, cloned_database, new_prefix, service_settings
from tests.integration.support import (
    fund,
    ledger_count,
    open_budget,
    produce,
    reserve,
    running_consumer,
    wait_for,
)

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ACME_BUDGETS = ["b0", "b1", "b2", "live"]


@dataclass
class World:
    """The stack's settings, the API's base URL, the database and one key per case."""

    settings: Settings
    url: str
    database_url: str
    keys: dict[str, str]


def _opened(tenant: str, budget: str, amount: str) -> list[dict[str, Any]]:
    return [
        open_budget(tenant, budget, f"{tenant}-{budget}-open"),
        fund(tenant, budget, f"{tenant}-{budget}-fund", amount),
    ]


def _stream() -> list[dict[str, Any]]:
    """acme: b0 at 50 % (below the soft cap), b1 at 85 % (soft cap exceeded), b2 at 96 % (hard
    cap approaching), `live` funded and idle (the live test reserves on it); globex: g1."""
    stream = [c for b in ACME_BUDGETS for c in _opened("acme", b, "100.00")]
    for budget, amount in [("b0", "50.00"), ("b1", "85.00"), ("b2", "96.00")]:
        stream.append(reserve("acme", budget, f"acme-{budget}-r", amount, "r"))
    return stream + _opened("globex", "g1", "100.00")


class ServerThread:
    """uvicorn serving `app` on 127.0.0.1 with a port the OS chose, in a thread."""

    def __init__(self, app: Any) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start within 30 s"
            time.sleep(0.05)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        self.sock.close()


@pytest.fixture(scope="module")
def world(
    kafka_bootstrap: str, pg_admin_dsn: str, template_database: str, app_login: tuple[str, str]
) -> Iterator[World]:
    prefix = new_prefix()
    with cloned_database(pg_admin_dsn, template_database) as db:
        settings = service_settings(
            kafka_bootstrap, db, prefix, app_login, webhook_allow_private=True
        )
        keys: dict[str, str] = {}
        with psycopg.connect(db) as conn:
            for label, tenant, scopes in [
                ("acme", "acme", ("read",)),
                ("acme-writer", "acme", ("read", "write")),
                ("globex", "globex", ("read",)),
                ("platform", None, ("read",)),
            ]:
                keys[label] = create_key(conn, tenant, scopes, label)[1]
        stream = _stream()
        try:
            with running_consumer(settings, relay=False):
                produce(settings, stream)
                wait_for(lambda: ledger_count(db) == len(stream), what="the commands")
                with ServerThread(create_app(settings)) as url:
                    yield World(settings, url, db, keys)
        finally:
            _delete_topics(kafka_bootstrap, prefix)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert Path(CHROMIUM).exists(), "run deploy/local/chromium.sh (CI installs Debian's chromium)"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh browser context (its own sessionStorage) on a 1280x900 window; fails the test on
    a Content-Security-Policy violation or a script error."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    p = context.new_page()
    problems: list[str] = []

    def on_console(msg: ConsoleMessage) -> None:
        if msg.type == "error" and "Content Security Policy" in msg.text:
            problems.append(msg.text)

    p.on("console", on_console)
    p.on("pageerror", lambda exc: problems.append(str(exc)))
    p.set_default_timeout(20_000)
    yield p
    context.close()
    assert not problems, problems


def shot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"console-{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def sign_in(page: Page, world: World, key: str, tenant: str = "") -> None:
    page.goto(f"{world.url}/console/")
    page.get_by_label("API key").fill(key)
    if tenant:
        page.get_by_label("Tenant").fill(tenant)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#budgets")).to_be_visible()


def test_sign_in_shows_the_budgets_with_bars_by_threshold(page: Page, world: World) -> None:
    sign_in(page, world, world.keys["acme"])
    rows = page.locator("#budgets tbody tr")
    expect(rows).to_have_count(len(ACME_BUDGETS))
    states = {
        b: page.locator(f'tr[data-budget="{b}"] .bar').get_attribute("data-state")
        for b in ["b0", "b1", "b2"]
    }
    assert states == {"b0": "ok", "b1": "soft", "b2": "hard"}
    expect(page.locator('tr[data-budget="b1"]')).to_contain_text("soft cap exceeded")
    # The key is in this tab's sessionStorage only: no cookie, no localStorage, not in the URL.
    stored = page.evaluate("() => Object.values(sessionStorage)")
    assert world.keys["acme"] in stored
    assert page.evaluate("() => localStorage.length") == 0
    assert page.evaluate("() => document.cookie") == ""
    assert world.keys["acme"] not in page.url
    shot(page, "budgets")


def test_budget_page_has_chart_ledger_and_alerts(page: Page, world: World) -> None:
    sign_in(page, world, world.keys["acme"])
    page.get_by_role("link", name="b2", exact=True).click()
    expect(page.get_by_role("heading", name="Budget b2")).to_be_visible()
    chart = page.locator("#chart")
    expect(chart.locator("canvas")).to_have_count(1)
    expect(chart).to_have_attribute("data-points", "3")  # opened, funded, reserved
    expect(chart).to_have_attribute("data-last", "96")
    expect(page.locator("#ledger-table tbody tr")).to_have_count(3)
    expect(page.locator("#alerts-table tbody tr")).to_have_count(2)  # soft, then hard
    shot(page, "budget")


def test_a_reserve_through_kafka_updates_the_chart_and_alerts_without_reload(
    page: Page, world: World
) -> None:
    sign_in(page, world, world.keys["acme"])
    page.get_by_role("link", name="live", exact=True).click()
    chart = page.locator("#chart")
    expect(chart).to_have_attribute("data-points", "2")
    expect(page.get_by_text("No alerts yet.")).to_be_visible()
    # A marker a reload would wipe out.
    page.evaluate("() => { window.notReloaded = true; }")
    # The module's consumer is still running: the reserve goes through Kafka to the ledger.
    produce(world.settings, [reserve("acme", "live", "acme-live-r", "85.00", "r")])
    expect(chart).to_have_attribute("data-points", "3", timeout=60_000)
    expect(chart).to_have_attribute("data-last", "85")
    expect(page.locator("#alerts-table tbody tr")).to_have_count(1)
    expect(page.locator("#alerts-table")).to_contain_text("soft")
    expect(page.locator("#budget-summary .bar")).to_have_attribute("data-state", "soft")
    expect(page.locator("#ledger-table tbody tr")).to_have_count(3)
    assert page.evaluate("() => window.notReloaded") is True
    path = shot(page, "live")
    if os.environ.get("LEDGER_UPDATE_DOCS_SCREENSHOT") == "1":
        shutil.copyfile(path, ROOT / "docs" / "console.png")


def test_the_csv_report_downloads_with_the_bearer_header(page: Page, world: World) -> None:
    sign_in(page, world, world.keys["acme"])
    page.get_by_role("link", name="b1", exact=True).click()
    expect(page.locator("#chart canvas")).to_have_count(1)
    with page.expect_download() as info:
        page.get_by_role("button", name="Download CSV report").click()
    download = info.value
    assert download.suggested_filename.endswith(".csv")
    rows = list(csv.DictReader(io.StringIO(Path(download.path()).read_text())))
    assert [(r["tenant_id"], r["budget_id"]) for r in rows] == [("acme", "b1")]
    with page.expect_download() as info:
        page.get_by_role("button", name="Download JSON report").click()
    assert info.value.suggested_filename.endswith(".json")


def test_tenant_a_key_never_shows_tenant_b_budgets(page: Page, world: World) -> None:
    sign_in(page, world, world.keys["globex"])
    expect(page.locator("#budgets tbody tr")).to_have_count(1)
    expect(page.locator('tr[data-budget="g1"]')).to_be_visible()
    for budget in ACME_BUDGETS:
        expect(page.locator(f'tr[data-budget="{budget}"]')).to_have_count(0)
    # Another tenant's budget by URL: the console asks under globex, which has no b2.
    page.goto(f"{world.url}/console/#/budget/b2")
    expect(page.get_by_role("alert")).to_contain_text("no such budget")
    expect(page.locator("#chart")).to_have_count(0)
    # And the key itself cannot read acme's paths from the page.
    status = page.evaluate(
        """async (key) => (await fetch('/v1/tenants/acme/budgets',
                 {headers: {Authorization: 'Bearer ' + key}})).status""",
        world.keys["globex"],
    )
    assert status == 403
    shot(page, "globex")


def test_a_platform_key_names_its_tenant(page: Page, world: World) -> None:
    page.goto(f"{world.url}/console/")
    page.get_by_label("API key").fill(world.keys["platform"])
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#login-error")).to_contain_text("platform key")
    page.get_by_label("Tenant").fill("globex")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator('tr[data-budget="g1"]')).to_be_visible()


def test_the_login_form_works_with_the_keyboard_alone(page: Page, world: World) -> None:
    page.goto(f"{world.url}/console/")
    page.get_by_label("API key").wait_for()

    def focused() -> str:
        return str(
            page.evaluate("() => document.activeElement.id || document.activeElement.className")
        )

    # The page puts the focus on the key; before it comes only the skip link.
    assert focused() == "api-key"
    page.keyboard.press("Shift+Tab")
    order = [focused()]
    for _ in range(3):
        page.keyboard.press("Tab")
        order.append(focused())
    assert order == ["skip", "api-key", "tenant", "sign-in"]
    # The focused button shows a visible outline.
    outline = page.evaluate("() => getComputedStyle(document.activeElement).outlineStyle")
    assert outline not in ("none", "")
    page.keyboard.press("Shift+Tab")
    page.keyboard.press("Shift+Tab")
    page.keyboard.type(world.keys["acme"])
    page.keyboard.press("Enter")
    expect(page.locator('tr[data-budget="b0"]')).to_be_visible()
    # The page's heading takes the focus, so a keyboard user starts from the new content.
    assert page.evaluate("() => document.activeElement.tagName") == "H1"
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    shot(page, "keyboard")


def test_a_wrong_key_is_refused_and_sign_out_forgets_the_key(page: Page, world: World) -> None:
    page.goto(f"{world.url}/console/")
    page.get_by_label("API key").fill("blk_0000000000000000_wrong")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#login-error")).to_contain_text("unknown or revoked")
    sign_in(page, world, world.keys["acme"])
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_label("API key")).to_be_visible()
    assert page.evaluate("() => sessionStorage.length") == 0


class _Ok(BaseHTTPRequestHandler):
    """A webhook receiver that answers 200 to every POST."""

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()


@contextmanager
def running_deliverer(settings: Settings) -> Iterator[None]:
    """`budget-ledger deliver` in a thread, with a consumer group of its own."""
    stop = threading.Event()
    deliverer = Deliverer(settings, stop=stop)
    thread = threading.Thread(target=deliverer.run, daemon=True)
    thread.start()
    try:
        assert deliverer.assigned.wait(60), "the deliverer got no partitions within 60 s"
        yield
    finally:
        stop.set()
        thread.join(30)


def publish_alert(settings: Settings, tenant: str, budget: str, sequence: int) -> None:
    """An alert on the alerts topic as the relay publishes it (the module runs no relay)."""
    kind = "hard_cap_reached"
    wire = {
        "alert_id": make_alert_id(tenant, budget, kind, sequence), "type": kind,
        "severity": "critical", "tenant_id": tenant, "budget_id": budget,
        "utilization_pct": "100.00", "threshold": "100.00", "sequence": sequence,
        "recorded_at": "2026-11-27T03:00:00.000000Z", "data": {},
    }  # fmt: skip
    producer = Producer(producer_config(settings))
    producer.produce(
        settings.topic_alerts, key=f"{tenant}:{budget}".encode(), value=orjson.dumps(wire)
    )
    assert producer.flush(30) == 0


def test_the_webhook_delivery_log_and_the_write_scope(page: Page, world: World) -> None:
    settings = world.settings.model_copy(
        update={"webhook_group": f"{world.settings.consumer_group}.console-webhooks"}
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    hook = f"http://127.0.0.1:{server.server_address[1]}/hook"
    try:
        made = httpx.post(
            f"{world.url}/v1/tenants/acme/webhooks",
            json={"url": hook},
            headers={"Authorization": f"Bearer {world.keys['acme-writer']}"},
            timeout=30,
        )
        assert made.status_code == 201, made.text
        with running_deliverer(settings):
            publish_alert(settings, "acme", "b2", 99)
            sign_in(page, world, world.keys["acme-writer"])
            page.get_by_role("link", name="Webhooks").click()
            link = page.get_by_role("link", name=hook)
            expect(link).to_be_visible()
            link.click()
            heading = f"Delivery log of {made.json()['id']}"
            expect(page.get_by_role("heading", name=heading)).to_be_visible()
            rows = page.locator("#deliveries-table tbody tr")
            # The log is read when the page opens: reopen it until the delivery is there.
            deadline = time.monotonic() + 60
            while not rows.count() and time.monotonic() < deadline:
                time.sleep(1)
                page.reload()
                expect(page.get_by_role("heading", name=heading)).to_be_visible()
            expect(rows).to_have_count(1)
            expect(rows.first).to_contain_text("hard_cap_reached")
            expect(rows.first).to_contain_text("delivered")
            expect(rows.first).to_contain_text("200")
            shot(page, "deliveries")
    finally:
        server.shutdown()
        server.server_close()
    # A read-only key is told what it lacks instead of seeing a broken page.
    page.get_by_role("button", name="Sign out").click()
    sign_in(page, world, world.keys["acme"])
    page.get_by_role("link", name="Webhooks").click()
    expect(page.get_by_role("alert")).to_contain_text("write")


def test_alert_history_page(page: Page, world: World) -> None:
    sign_in(page, world, world.keys["acme"])
    page.get_by_role("link", name="Alerts").click()
    table = page.locator("#alerts-table")
    expect(table).to_be_visible()
    expect(table).to_contain_text("b2")
    expect(table).not_to_contain_text("g1")


def test_the_console_fits_a_phone_width(browser: Browser, world: World) -> None:
    context = browser.new_context(viewport={"width": 375, "height": 812})
    p = context.new_page()
    try:
        sign_in(p, world, world.keys["acme"])
        p.get_by_role("link", name="b2", exact=True).click()
        expect(p.locator("#chart canvas")).to_have_count(1)
        expect(p.locator("#alerts-table tbody tr")).to_have_count(2)
        # Nothing wider than the screen: wide tables scroll inside their own box.
        width = p.evaluate("() => document.documentElement.scrollWidth")
        assert width <= 375, width
        p.screenshot(path=str(ARTIFACTS / "console-phone.png"), full_page=True)
    finally:
        context.close()


# The lowest text contrast on the page: each element with its own text against the first
# opaque background up its ancestors (WCAG 2 relative luminance).
LOWEST_CONTRAST_JS = """() => {
  const rgb = (c) => (c.match(/[\\d.]+/g) || []).map(Number);
  const lum = ([r, g, b]) => {
    const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  };
  const background = (el) => {
    for (let e = el; e; e = e.parentElement) {
      const c = rgb(getComputedStyle(e).backgroundColor);
      if (c.length === 3 || (c.length === 4 && c[3] === 1)) return c.slice(0, 3);
    }
    return [255, 255, 255];
  };
  let worst = { ratio: 99, text: "" };
  for (const el of document.querySelectorAll("body *")) {
    const own = [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
    if (!own || !el.getClientRects().length) continue;
    const style = getComputedStyle(el);
    if (style.visibility === "hidden") continue;
    const [a, b] = [lum(rgb(style.color).slice(0, 3)), lum(background(el))];
    const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    if (ratio < worst.ratio) worst = { ratio, text: el.textContent.trim().slice(0, 40) };
  }
  return worst;
}"""


def test_text_contrast_is_at_least_4_5_to_1(page: Page, world: World) -> None:
    page.goto(f"{world.url}/console/")
    page.get_by_label("API key").wait_for()
    views = {"login": page.evaluate(LOWEST_CONTRAST_JS)}
    sign_in(page, world, world.keys["acme"])
    views["budgets"] = page.evaluate(LOWEST_CONTRAST_JS)
    page.get_by_role("link", name="b2", exact=True).click()
    expect(page.locator("#alerts-table tbody tr")).to_have_count(2)
    views["budget"] = page.evaluate(LOWEST_CONTRAST_JS)
    low = {name: worst for name, worst in views.items() if worst["ratio"] < 4.5}
    assert not low, low


def test_console_responses_carry_the_content_security_policy(world: World) -> None:
    for path in ["/console/", "/console/assets/console.js", "/console/assets/console.css"]:
        r = httpx.get(f"{world.url}{path}", timeout=30)
        assert r.status_code == 200, path
        csp = r.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert r.headers["x-content-type-options"] == "nosniff"
    page_html = httpx.get(f"{world.url}/console/", timeout=30).text
    assert "<script>" not in page_html and " on" not in page_html.split("<body", 1)[1].split(">")[0]
    assert httpx.get(f"{world.url}/console/assets/..%2Fconsole.py", timeout=30).status_code == 404
    assert httpx.get(f"{world.url}/console/assets/bundle.sha256", timeout=30).status_code == 404
    r = httpx.get(f"{world.url}/console/session", timeout=30)
    assert r.status_code == 401


def test_the_committed_bundle_is_what_console_sh_builds() -> None:
    # npm ci into console/node_modules (exact versions of the lock file), esbuild into a
    # temporary folder, compare with the committed bundle.
    assert shutil.which("npm"), "node and npm are needed (CI installs Debian's nodejs and npm)"
    done = subprocess.run(
        ["bash", str(ROOT / "deploy/local/console.sh"), "--check"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr + done.stdout
