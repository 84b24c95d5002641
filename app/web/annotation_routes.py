"""Judge and annotation REST routes: start an LLM-judge job (or a judge-less pair job), take
the next pair from the human annotation queue, label it, read judge/human agreement."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from fastapi import APIRouter, Request
from fastapi.params import Depends
from pydantic import BaseModel

from app.arena import annotation, judge
from app.inference.generation import GenSettings
from app.web.job_routes import job_json

if TYPE_CHECKING:
    from app.core.workbench import Workbench


class JudgeBody(BaseModel):
    model_a_id: int
    model_b_id: int  # the same model as A: give two temperatures
    judge_model_id: int | None = None  # none: the pairs wait in the annotation queue for people
    prompts: list[str] = []
    dataset_id: int | None = None  # its prompts, after those given
    temperature_a: float = 0.7
    temperature_b: float = 0.7
    max_new_tokens: int = 256


class LabelBody(BaseModel):
    choice: str  # a | b | tie | both_bad, as the sides were shown


def annotation_router(
    wb: Workbench, user_of: Callable[[Request], str], dependencies: Sequence[Depends] = ()
) -> APIRouter:
    """``user_of(request)`` names the annotator (it also fixes the order they see)."""
    r = APIRouter(prefix="/api", dependencies=list(dependencies))

    @r.post("/judge", status_code=202)
    def start_judge(body: JudgeBody):
        prompts = list(body.prompts)
        if body.dataset_id is not None:
            prompts += judge.dataset_prompts(wb, body.dataset_id)
        gens = (GenSettings(body.temperature_a, max_new_tokens=body.max_new_tokens),
                GenSettings(body.temperature_b, max_new_tokens=body.max_new_tokens))
        return job_json(judge.start_judge_job(wb, prompts, body.model_a_id, body.model_b_id,
                                              body.judge_model_id, *gens))

    @r.get("/annotation/next")
    def next_pair(request: Request):
        return annotation.next_pair(wb, user_of(request))

    @r.post("/annotation/{battle_id}/label", status_code=201)
    def label(battle_id: int, body: LabelBody, request: Request):
        return annotation.label_pair(wb, battle_id, body.choice, user_of(request))

    @r.get("/annotation/agreement")
    def agreement():
        return annotation.agreement(wb)

    return r
