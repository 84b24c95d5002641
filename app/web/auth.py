"""Who calls the REST API: HTTP Basic logins when --auth is set, and the caller's name.

The name that votes and rate limits use comes only from credentials the login check
verified; a name in an unchecked header is never trusted."""

from __future__ import annotations

import base64
import binascii
import secrets
from collections.abc import Mapping

from fastapi import Depends, HTTPException, Request, params
from fastapi.security import HTTPBasic, HTTPBasicCredentials
from starlette.requests import HTTPConnection

from app.core.settings import Settings

# Without --auth every API caller is this one local identity, whatever it sends.
LOCAL_USER = "api"
WRONG_LOGIN = "wrong user or password"


def basic_credentials(conn: HTTPConnection) -> tuple[str, str] | None:
    """The user and password of an HTTP Basic header, unchecked (None: none or malformed)."""
    scheme, _, encoded = conn.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, sep, password = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (user, password) if sep else None


def account_matches(accounts: Mapping[str, str], user: str, password: str) -> bool:
    expected = accounts.get(user)
    # compare_digest on bytes: str arguments must be ASCII.
    return expected is not None and secrets.compare_digest(expected.encode(), password.encode())


def basic_account(conn: HTTPConnection, accounts: Mapping[str, str]) -> str | None:
    """The --auth account whose valid HTTP Basic credentials ``conn`` carries, else None."""
    creds = basic_credentials(conn)
    return creds[0] if creds and account_matches(accounts, *creds) else None


def api_auth(settings: Settings) -> list[params.Depends]:
    """With --auth, API calls need the same accounts, as HTTP Basic credentials; the
    verified name is kept on ``request.state`` for `api_user`."""
    if not settings.auth:
        return []
    accounts = dict(settings.auth)
    basic = HTTPBasic()

    def check(request: Request, creds: HTTPBasicCredentials = Depends(basic)) -> str:  # noqa: B008
        if not account_matches(accounts, creds.username, creds.password):
            raise HTTPException(401, WRONG_LOGIN, headers={"WWW-Authenticate": "Basic"})
        request.state.api_user = creds.username
        return creds.username

    return [Depends(check)]


def api_user(request: Request) -> str:
    """Who is calling: the account the login check verified, else the local identity."""
    return getattr(request.state, "api_user", LOCAL_USER)
