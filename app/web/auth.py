"""Who calls the REST API: HTTP Basic logins when --auth is set, and the caller's name."""

from __future__ import annotations

import base64
import secrets

from fastapi import Depends, HTTPException, Request, params
from fastapi.security import HTTPBasic, HTTPBasicCredentials

from app.core.settings import Settings


def api_auth(settings: Settings) -> list[params.Depends]:
    """With --auth, API calls need the same accounts, as HTTP Basic credentials."""
    if not settings.auth:
        return []
    accounts = dict(settings.auth)
    basic = HTTPBasic()

    def check(creds: HTTPBasicCredentials = Depends(basic)) -> str:  # noqa: B008
        expected = accounts.get(creds.username)
        if expected is None or not secrets.compare_digest(expected, creds.password):
            raise HTTPException(401, "wrong user or password", headers={"WWW-Authenticate": "Basic"})
        return creds.username

    return [Depends(check)]


def api_user(request: Request) -> str:
    """The caller's account name from HTTP Basic credentials, else "api"."""
    header = request.headers.get("authorization", "")
    if header.lower().startswith("basic "):
        try:
            return base64.b64decode(header[6:]).decode().split(":", 1)[0] or "api"
        except (ValueError, UnicodeDecodeError):
            return "api"
    return "api"
