"""Guards for the voter server, the one strangers reach: a cap on request bodies, routes
voters never need switched off, and UI event calls checked before the UI framework sees them.

All are ASGI middleware and answer in the error contract's shape (app/web/errors.py).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.settings import Settings
from app.web.errors import error_response

# A voter's biggest request is a message: room for two texts of max_prompt_chars, each
# character at most 6 bytes once JSON-escaped, and the rest of the event.
MIN_BODY_BYTES = 64 * 1024
BYTES_PER_PROMPT_CHAR = 12
EVENT_OVERHEAD_BYTES = 16 * 1024

# Voters never send files and call events through the queue, as the page does.
NO_FILES = ("/gradio_api/upload", "/gradio_api/process_recording")
NOT_FOR_VOTERS = ("/openapi.json", "/docs", "/redoc", "/monitoring", "/gradio_api/openapi.json",
                  "/gradio_api/run/", "/gradio_api/api/", "/gradio_api/component_server",
                  "/gradio_api/stream/", "/gradio_api/dev/", "/gradio_api/proxy=", "/gradio_api/vibe-",
                  "/gradio_api/undo-vibe-")
# The routes that run an event: by its index (queue/join) or by its API name.
EVENT_CALL = re.compile(r"/gradio_api/(?:queue/join|call/(?P<name>[^/]+))/?")


def voter_body_limit(settings: Settings) -> int:
    """The largest request body the voter server reads, in bytes."""
    return max(MIN_BODY_BYTES, BYTES_PER_PROMPT_CHAR * settings.max_prompt_chars + EVENT_OVERHEAD_BYTES)


class _TooLarge(Exception):
    pass


class BodyLimit:
    """Refuse a request body over ``max_bytes`` with 413: at once when its declared length
    is too big, else as soon as the bytes read pass the limit, never reading it whole."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await self.refuse(scope, receive, send)
            return
        seen, refused, started = 0, False, False

        async def counted() -> Message:
            nonlocal seen, refused
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                refused = True
                raise _TooLarge
            return message

        async def sending(message: Message) -> None:
            nonlocal started
            if refused:
                return  # the app's answer to a body it never got whole; ours goes out below
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, sending)
        except Exception:
            if not refused:
                raise
        if refused and not started:
            await self.refuse(scope, receive, send)

    async def refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = f"the request body is larger than {self.max_bytes} bytes"
        await error_response(413, "too_large", message, {"Connection": "close"})(scope, receive, send)


@dataclass(frozen=True)
class Event:
    """One UI event as a caller may run it: its API name (None: hidden) and input count."""

    api_name: str | None
    inputs: int


def events_of(config: Mapping[str, Any]) -> dict[int, Event]:
    """The events of a Gradio Blocks config (``demo.config``), by index."""
    return {dep["id"]: Event(dep.get("api_name") or None, len(dep.get("inputs", ())))
            for dep in config.get("dependencies", [])}


def event_call_problem(events: Mapping[int, Event], name: str | None, raw: bytes) -> tuple[int, str] | None:
    """What is wrong with a call to an event (status and message), or None: a body that is
    not a JSON object, an unknown event, data that is not one value per input."""
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return 422, "the body is not valid JSON"
    if not isinstance(body, dict):
        return 422, "the body must be a JSON object"
    index = body.get("fn_index")
    if name is not None:  # a call by name: Gradio ignores any fn_index in the body
        found = [e for e in events.values() if e.api_name == name]
        if not found:
            return 404, f"no event named {name!r}"
        event = found[0]
    elif index is None:
        return 422, "fn_index is missing"
    elif isinstance(index, bool) or not isinstance(index, int) or index not in events:
        return 404, f"no event with fn_index {index!r}"
    else:
        event = events[index]
    data = body.get("data")
    if not isinstance(data, list) or len(data) != event.inputs:
        got = f"{len(data)} values" if isinstance(data, list) else "no list"
        return 422, f"data must be a list of {event.inputs} values, one per input; got {got}"
    return None


class VoterRules:
    """What voters may not do on the voter server: send files, reach routes they never
    need, or run an event with a malformed call (which the UI framework answers with a
    500 and, in debug mode, a traceback)."""

    def __init__(self, app: ASGIApp, events: Mapping[int, Event]) -> None:
        self.app = app
        self.events = dict(events)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "websocket" and path.startswith(NOT_FOR_VOTERS):
            await send({"type": "websocket.close", "code": 1008})
        elif scope["type"] == "http" and path.startswith(NO_FILES):
            await error_response(403, "forbidden", "the arena takes no files")(scope, receive, send)
        elif scope["type"] == "http" and path.startswith(NOT_FOR_VOTERS):
            await error_response(404, "not_found", f"no route {path} on the voter app")(scope, receive, send)
        elif scope["type"] == "http" and scope["method"] == "POST" and (call := EVENT_CALL.fullmatch(path)):
            await self.checked_call(scope, receive, send, call["name"])
        else:
            await self.app(scope, receive, send)

    async def checked_call(self, scope: Scope, receive: Receive, send: Send, name: str | None) -> None:
        raw, messages = await read_body(receive)  # small: BodyLimit caps it first
        problem = event_call_problem(self.events, name, raw)
        if problem is not None:
            status, message = problem
            code = {404: "not_found", 422: "invalid_input"}[status]
            await error_response(status, code, message)(scope, receive, send)
            return

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)


async def read_body(receive: Receive) -> tuple[bytes, list[Message]]:
    """The whole body, and the messages that carried it (to hand on unchanged)."""
    messages: list[Message] = []
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request" or not message.get("more_body", False):
            break
    return b"".join(m.get("body", b"") for m in messages), messages
