"""Who may reach which path of a server: one gate in front of every route, mounted UIs included.

The gate is ASGI middleware on the outer app, so it also covers the routes of a UI
mounted at / that guards only some of its own routes. Everything needs a signed-in
user except a short public list: the health check and what a login page needs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from starlette.requests import HTTPConnection, Request
from starlette.routing import BaseRoute, Mount
from starlette.types import ASGIApp, Receive, Scope, Send

from app.core.settings import Settings
from app.web.auth import WRONG_LOGIN, basic_account
from app.web.errors import error_response

# Paths anyone may fetch: the health check, the login page, the login form and the
# page's static files. A mounted Gradio app serves its login page at / to strangers.
PUBLIC_PATHS = frozenset({"/healthz", "/", "/login", "/login/", "/logout", "/favicon.ico", "/theme.css",
                          "/gradio_api/theme.css", "/robots.txt", "/manifest.json", "/pwa_icon"})
PUBLIC_PREFIXES = ("/assets/", "/static/", "/svelte/", "/pwa_icon/")
API_PREFIX = "/api/"

# Who a connection is signed in as (None: nobody).
UserOf = Callable[[HTTPConnection], "str | None"]


def is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


class AccessGate:
    """ASGI middleware: a request to a path that is not public needs ``user_of`` to name
    someone, else it gets 401 in the error contract's shape (a websocket is closed)."""

    def __init__(self, app: ASGIApp, user_of: UserOf, message: str, challenge: str | None = None) -> None:
        self.app = app
        self.user_of = user_of
        self.message = message
        self.headers = {"WWW-Authenticate": challenge} if challenge else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or is_public(scope["path"]) or \
                self.user_of(HTTPConnection(scope)):
            await self.app(scope, receive, send)
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})  # policy violation
        else:
            message = WRONG_LOGIN if scope["path"].startswith(API_PREFIX) else self.message
            await error_response(401, "unauthorized", message, self.headers)(scope, receive, send)


def admin_of(accounts: Mapping[str, str], ui_user: UserOf) -> UserOf:
    """The --auth account of a connection: valid HTTP Basic credentials anywhere, or the
    UI's login cookie outside the REST API (a cookie there would let other sites post)."""

    def user_of(conn: HTTPConnection) -> str | None:
        user = basic_account(conn, accounts)
        if user is None and not conn.scope["path"].startswith(API_PREFIX):
            user = ui_user(conn)
        return user

    return user_of


def workbench_gate(settings: Settings, ui_user: UserOf) -> dict[str, Any] | None:
    """Keyword arguments for `AccessGate` on the workbench, or None without --auth (then
    the workbench is only for this machine: launch refuses other hosts)."""
    if not settings.auth:
        return None
    return {"user_of": admin_of(dict(settings.auth), ui_user), "challenge": "Basic",
            "message": "sign in first: log in at / or send an --auth account as HTTP Basic credentials"}


def as_dependency(user_of: UserOf) -> Callable[[Request], str | None]:
    """``user_of`` as a FastAPI dependency (FastAPI finds the request by its annotation)."""

    def current_user(request: Request) -> str | None:
        return user_of(request)

    return current_user


def walk_routes(routes: list[BaseRoute], prefix: str = "") -> Iterator[tuple[str, BaseRoute]]:
    """Every route with its full path, into mounted apps and included routers (newer
    FastAPI keeps an included router as one entry holding the original router)."""
    for route in routes:
        included = getattr(route, "original_router", None)
        if included is not None:
            context = getattr(route, "include_context", None)
            yield from walk_routes(included.routes, prefix + getattr(context, "prefix", ""))
        elif isinstance(route, Mount) and hasattr(route.app, "routes"):
            yield from walk_routes(route.app.routes, prefix + route.path)
        else:
            yield prefix + getattr(route, "path", ""), route
