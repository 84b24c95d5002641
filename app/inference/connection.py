"""Is this model reachable? One short greedy answer, timed, through the arena's engines.

Teachers and judges are often Ollama or OpenAI-compatible servers on other machines; a
user should learn that one is down (or the model name is wrong) before a long job does.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from app.inference.chat_engines import model_engines
from app.inference.generation import Finish, GenSettings
from app.models.registry import get_model

if TYPE_CHECKING:
    from app.core.workbench import Workbench

PROBE = "Reply with one short greeting."
PROBE_GEN = GenSettings(temperature=0.0, max_new_tokens=16)


def check_connection(wb: Workbench, model_id: int) -> dict[str, Any]:
    """The model's reply to a short probe and how long it took; an unreachable server or an
    unknown model name raises EngineError (502) with the engine's own explanation."""
    mv = get_model(wb, model_id)
    started = time.monotonic()
    pieces = [p for p in model_engines(wb).engine(mv).stream([{"role": "user", "content": PROBE}], PROBE_GEN)
              if not isinstance(p, Finish)]
    endpoint = (mv.meta or {}).get("endpoint")
    return {"model_id": mv.id, "model": mv.name, "kind": mv.kind, "endpoint": endpoint,
            "reachable": True, "reply": "".join(pieces).strip(),
            "seconds": round(time.monotonic() - started, 3)}

