"""The engine for any registered model.

Local models (a base plus optional adapters) are served by worker processes of their
own (``workers``); models served elsewhere are reached over HTTP (``remote_engines``).
Either way the app speaks to a server: nothing here loads weights or imports torch.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from app.core.errors import EngineError
from app.core.tables import ModelVersion
from app.inference.generation import GenSettings
from app.inference.workers import WorkerPool, worker_pool
from app.models.registry import model_system_prompt

if TYPE_CHECKING:
    from app.core.workbench import Workbench

REMOTE_KINDS = ("ollama", "openai")


def remote_engine(mv: ModelVersion):
    from app.inference.remote_engines import OllamaEngine, OpenAIEngine

    endpoint = (mv.meta or {}).get("endpoint")
    if not endpoint:
        raise EngineError(f"model {mv.name!r} has no endpoint URL")
    system = model_system_prompt(mv)
    if mv.kind == "ollama":
        return OllamaEngine(endpoint, mv.base_path, system_prompt=system)
    return OpenAIEngine(endpoint, mv.base_path, api_key=(mv.meta or {}).get("api_key"), system_prompt=system)


class ModelEngines:
    """Engines for models: local ones through the worker pool, the rest over HTTP."""

    def __init__(self, pool: WorkerPool) -> None:
        self.pool = pool

    def engine(self, mv: ModelVersion):
        if mv.kind in REMOTE_KINDS:
            return remote_engine(mv)
        return self.pool.engine(mv)

    def stream(self, mv: ModelVersion, messages: list[dict[str, str]], gen: GenSettings) -> Iterator[str]:
        """Text pieces only (the finish reason dropped)."""
        for piece in self.engine(mv).stream(messages, gen):
            if isinstance(piece, str):
                yield piece

    def complete(self, mv: ModelVersion, messages: list[dict[str, str]], gen: GenSettings) -> str:
        return "".join(self.stream(mv, messages, gen))

    def close(self) -> None:
        self.pool.close()


def model_engines(wb: Workbench) -> ModelEngines:
    """Engines over the workbench's worker pool."""
    return ModelEngines(worker_pool(wb))


def job_engines() -> ModelEngines:
    """Engines inside a job process: the app's workers are shared; those this process
    starts stop with ``close()``."""
    return ModelEngines(WorkerPool.for_job_process())
