"""Errors a user can act on. The UI and the API show their message as is."""


class ForgeloopError(Exception):
    """Base class: the message is written for the user."""


class InvalidInput(ForgeloopError):
    """The request or a file it names is malformed."""


class NotFound(ForgeloopError):
    """A dataset, model, run or battle id that does not exist."""


class Conflict(ForgeloopError):
    """The action clashes with the current state (a name taken, a job already running)."""


class EngineError(ForgeloopError):
    """A model server or engine failed to answer (unreachable, unknown model, bad reply)."""


class RateLimited(ForgeloopError):
    """Too many requests from one voter; the message says when to try again."""
