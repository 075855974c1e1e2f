"""`/console`: the web console, static files shipped in the wheel (console_static/), served with
a Content-Security-Policy that allows only this origin's scripts; and `GET /console/session`,
which tells the console the tenant and scopes of the key it signed in with."""

from __future__ import annotations

from importlib import resources
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException
from fastapi.responses import RedirectResponse, Response
from pydantic import BaseModel

from budget_ledger.entrypoints.api.auth import authenticate
from budget_ledger.entrypoints.api.keys import ApiKey

STATIC = resources.files("budget_ledger.entrypoints.api") / "console_static"
# No inline script or style, no other origin: the key in sessionStorage is readable only by
# this origin's own files. frame-ancestors: the console cannot be framed (clickjacking).
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; font-src 'self'; form-action 'none'; base-uri 'none'; "
    "frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}
TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".png": "image/png",
    ".svg": "image/svg+xml",
}

router = APIRouter(tags=["console"])


class SessionOut(BaseModel):
    """Who the key is: its tenant (null for a platform key, which names one) and its scopes."""

    tenant_id: str | None
    name: str
    scopes: list[str]


def _asset(name: str) -> Response:
    """One file of console_static (404 for anything else: no path is built from the request)."""
    suffix = name[name.rfind(".") :] if "." in name else ""
    if "/" in name or name.startswith(".") or suffix not in TYPES:
        raise HTTPException(404, "no such console file")
    file = STATIC / name
    if not file.is_file():
        raise HTTPException(404, "no such console file")
    # The page is always re-read (a new release's bundle); the assets are revalidated.
    cache = "no-store" if suffix == ".html" else "no-cache"
    headers = {**SECURITY_HEADERS, "Cache-Control": cache}
    return Response(file.read_bytes(), media_type=TYPES[suffix], headers=headers)


@router.get("/console", include_in_schema=False)
def console_root() -> Response:
    """The console's page is at `/console/` (its relative asset links need the slash)."""
    return RedirectResponse("/console/", status_code=308, headers=SECURITY_HEADERS)


@router.get("/console/", include_in_schema=False)
def console_page() -> Response:
    """The console's single page."""
    return _asset("index.html")


@router.get("/console/assets/{name}", include_in_schema=False)
def console_asset(name: str) -> Response:
    """The console's scripts and styles."""
    return _asset(name)


# Left out of the OpenAPI document: the console's own call, not part of the versioned API.
@router.get("/console/session", response_model=SessionOut, include_in_schema=False)
def console_session(key: Annotated[ApiKey, Depends(authenticate)]) -> SessionOut:
    """The key's tenant, name and scopes; never its secret."""
    return SessionOut(tenant_id=key.tenant_id, name=key.name, scopes=sorted(key.scopes))
