"""One error shape for the REST API: ``{"error": {"code": "...", "message": "..."}}``.

Routes only raise: a ForgeloopError carries its own status and code, FastAPI's
validation errors and HTTP exceptions (401, 404, 405, ...) are mapped here, so a
client reads every failure the same way.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.routing import Match

from app.core.errors import ForgeloopError, NotFound

# Codes for HTTP errors that FastAPI or Starlette raise themselves.
HTTP_CODES = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
    405: "method_not_allowed", 409: "conflict", 413: "too_large", 422: "invalid_input",
    429: "rate_limited",
}
ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None
                   ) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


def describe_validation(errors: list[dict[str, Any]]) -> str:
    """FastAPI's validation errors as one sentence naming each bad field."""
    where_names = {"body": "body field", "query": "query parameter", "path": "path parameter",
                   "header": "header", "cookie": "cookie"}
    parts = []
    for err in errors:
        loc = [str(x) for x in err.get("loc", ())]
        if err.get("type") == "json_invalid":
            parts.append("the body is not valid JSON")
            continue
        msg = str(err.get("msg", "is invalid"))
        msg = msg[:1].lower() + msg[1:]
        if len(loc) > 1:
            parts.append(f"{where_names.get(loc[0], loc[0])} {'.'.join(loc[1:])}: {msg}")
        else:
            parts.append(f"the request {loc[0] if loc else 'as a whole'}: {msg}")
    return "invalid request: " + "; ".join(parts or ["it does not match the expected form"])


# Each handler is registered for its own exception class (install_error_handlers).
async def _forgeloop_error(_: Request, exc: ForgeloopError) -> JSONResponse:
    return error_response(exc.status, exc.code, str(exc))


async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    return error_response(422, "invalid_input", describe_validation(list(exc.errors())))


async def _http_error(_: Request, exc: HTTPException) -> JSONResponse:
    status = exc.status_code
    code = HTTP_CODES.get(status, "error" if status < 500 else "internal_error")
    message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    return error_response(status, code, message, headers=dict(exc.headers or {}))


async def _unexpected_error(_: Request, exc: Exception) -> JSONResponse:
    # Starlette re-raises it after this answer, so the server logs the traceback; the client gets none.
    return error_response(500, "internal_error", "internal error; the server log has the details")


def install_error_handlers(app: FastAPI) -> None:
    """Answer every error raised by ``app``'s own routes in the one JSON shape."""
    app.add_exception_handler(ForgeloopError, _forgeloop_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)


def install_api_fallback(app: FastAPI, prefix: str = "/api") -> None:
    """A last route under ``prefix`` so unknown API paths answer in the JSON shape
    (a UI mounted at / would otherwise serve them). Register it after the API routes."""

    async def unknown(request: Request, path: str) -> None:
        # A known path with another method: 405 naming the methods it takes.
        allowed = set()
        for route in app.router.routes:
            if isinstance(route, APIRoute) and route.endpoint is not unknown:
                match, _ = route.matches({**request.scope, "method": "__none__"})
                if match is not Match.NONE:
                    allowed |= route.methods
        if allowed:
            raise HTTPException(405, f"{request.method} is not allowed on {request.url.path}; "
                                     f"use {', '.join(sorted(allowed))}",
                                headers={"Allow": ", ".join(sorted(allowed))})
        raise NotFound(f"no API route {request.url.path}")

    app.add_api_route(prefix + "/{path:path}", unknown, methods=ALL_METHODS, include_in_schema=False)
