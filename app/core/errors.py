"""Errors a user can act on. The UI and the API show their message as is.

Each class carries its HTTP ``status`` and a stable machine ``code``: the REST API
answers ``{"error": {"code": ..., "message": ...}}`` with that status (app/web/errors.py).
"""


class ForgeloopError(Exception):
    """Base class: the message is written for the user."""

    status: int = 400
    code: str = "error"


class InvalidInput(ForgeloopError):
    """The request or a file it names is malformed."""

    status = 422
    code = "invalid_input"


class NotFound(ForgeloopError):
    """A dataset, model, run or battle id that does not exist."""

    status = 404
    code = "not_found"


class Conflict(ForgeloopError):
    """The action clashes with the current state (a name taken, a job already running)."""

    status = 409
    code = "conflict"


class EngineError(ForgeloopError):
    """A model server or engine failed to answer (unreachable, unknown model, bad reply)."""

    status = 502
    code = "engine_error"


class RateLimited(ForgeloopError):
    """Too many requests from one voter; the message says when to try again."""

    status = 429
    code = "rate_limited"
