"""Assistant REST routes: suggest training settings, detect a dataset's task, explain a run,
diagnose a failed one."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter
from fastapi.params import Depends
from pydantic import BaseModel

from app.assistant import service

if TYPE_CHECKING:
    from app.core.workbench import Workbench


class SuggestBody(BaseModel):
    model_id: int
    dataset_ids: list[int]
    stage: str | None = None  # sft | dpo | kto | pt; default: from the datasets' kind
    gpus: list[int] | None = None
    llm_model_id: int | None = None  # default: the first Ollama model, if any
    use_llm: bool = True


class DetectBody(BaseModel):
    dataset_id: int | None = None
    rows: list[Any] | None = None


def assistant_router(wb: Workbench, dependencies: Sequence[Depends] = ()) -> APIRouter:
    r = APIRouter(prefix="/api/assistant", dependencies=list(dependencies))

    @r.post("/suggest")
    def suggest(body: SuggestBody):
        return service.suggest(wb, **body.model_dump())

    @r.post("/detect")
    def detect(body: DetectBody):
        return service.detect(wb, body.dataset_id, body.rows)

    @r.get("/explain/{run_id}")
    def explain(run_id: int, llm_model_id: int | None = None, use_llm: bool = True):
        return service.explain_run(wb, run_id, llm_model_id, use_llm)

    @r.get("/diagnose/{run_id}")
    def diagnose(run_id: int, llm_model_id: int | None = None, use_llm: bool = True):
        return service.diagnose_run(wb, run_id, llm_model_id, use_llm)

    return r
