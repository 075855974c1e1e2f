"""The demo's last part: the HTTP API in the background, a read key and a `curl` line that works.

The server outlives the demo (it is the part a reader keeps playing with): its pid is written
to `<state>/demo-api.pid` (LEDGER_STATE_DIR, else ~/.local/state/budget-ledger), and the next
demo stops that server before it starts its own, so reruns do not pile servers up.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psycopg

from budget_ledger.ledger.settings import Settings

HOST = "127.0.0.1"


def state_dir() -> Path:
    """Where the local scripts keep their state (deploy/local/kafka.sh uses the same)."""
    root = os.environ.get("LEDGER_STATE_DIR") or str(Path.home() / ".local/state/budget-ledger")
    return Path(root)


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def _any_free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def stop_previous(pid_file: Path) -> None:
    """Stop the API a previous demo left running (only if that pid is still a `serve`)."""
    try:
        pid = int(pid_file.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return
    if b"serve" not in cmdline:
        return  # the pid was reused by another process: not ours to stop
    os.kill(pid, signal.SIGTERM)
    for _ in range(100):
        if not Path(f"/proc/{pid}").exists():
            break
        time.sleep(0.1)


def start_api(port: int, log: Path) -> subprocess.Popen[bytes]:
    """`budget-ledger serve` on HOST:`port`, detached from the demo's session and terminal."""
    cmd = [sys.executable, "-m", "budget_ledger.entrypoints", "serve", "--host", HOST,
           "--port", str(port)]  # fmt: skip
    with log.open("ab") as out:
        return subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip


def _ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 30) -> bool:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    return False


def _try(curl: list[str], key: str, url: str, budget: str) -> str | None:
    """Run the curl line (or, without curl, the same request); the body when it answered the
    budget's utilization, else None."""
    if shutil.which("curl"):
        done = subprocess.run(curl, capture_output=True, text=True, timeout=30)
        body = done.stdout if done.returncode == 0 else ""
    else:
        import httpx

        body = httpx.get(url, headers={"Authorization": f"Bearer {key}"}, timeout=10).text
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    return body if isinstance(doc, dict) and doc.get("budget_id") == budget else None


def show_api(settings: Settings, tenant: str, budget: str, port: int) -> bool:
    """Make a read key of `tenant`, start the API, check the curl line, print how to use and
    stop it; False (and why) when the API did not answer the line."""
    from budget_ledger.entrypoints.api.keys import create_key

    with psycopg.connect(settings.database_url) as conn:
        key = create_key(conn, tenant, ("read",), "demo")[1]
    state = state_dir()
    state.mkdir(parents=True, exist_ok=True)
    pid_file, log = state / "demo-api.pid", state / "demo-api.log"
    stop_previous(pid_file)
    port = port if _port_free(port) else _any_free_port()
    proc = start_api(port, log)
    pid_file.write_text(f"{proc.pid}\n")
    base = f"http://{HOST}:{port}"
    url = f"{base}/v1/tenants/{tenant}/budgets/{budget}/utilization"
    curl = ["curl", "-sS", "-H", f"Authorization: Bearer {key}", url]
    body = _try(curl, key, url, budget) if _ready(base, proc) else None
    if body is None:
        print(f"the HTTP API did not answer the demo's request; see {log}")
        if proc.poll() is None:
            proc.terminate()
        return False
    print(f"HTTP API: {base} (docs {base}/docs), running in the background as pid {proc.pid}")
    print(f"read key of {tenant} (shown once): {key}")
    print(f"try: {shlex.join(curl)}")
    print(f"  -> {body.strip()}")
    print(f"web console: {base}/console/  (sign in with the read key above; docs/console.md)")
    print(f"stop it: kill $(cat {pid_file})   (log: {log})")
    return True
