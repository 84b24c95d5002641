"""Self-Instruct REST routes: start a generation job from a registered teacher model, follow
it (counts, rejections by reason, newest kept tasks), resume one."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from fastapi import APIRouter
from fastapi.params import Depends
from pydantic import BaseModel

from app.datagen.self_instruct_jobs import resume_selfinstruct, selfinstruct_view, start_selfinstruct
from app.web.job_routes import job_json

if TYPE_CHECKING:
    from app.core.workbench import Workbench


class SelfInstructBody(BaseModel):
    teacher_id: int
    name: str
    target: int = 100
    max_rounds: int | None = None
    seed: int = 0
    temperature: float = 0.7
    max_new_tokens: int = 512
    concurrency: int = 2
    seed_tasks: str = ""  # the user's own seeds: JSON lines or one instruction per line
    use_shipped_seeds: bool = True


def selfinstruct_router(wb: Workbench, dependencies: Sequence[Depends] = ()) -> APIRouter:
    r = APIRouter(prefix="/api", dependencies=list(dependencies))

    @r.post("/datasets/selfinstruct", status_code=202)
    def selfinstruct(body: SelfInstructBody):
        return job_json(start_selfinstruct(wb, **body.model_dump()))

    @r.get("/datasets/selfinstruct/{job_id}")
    def view(job_id: int):
        return selfinstruct_view(wb, job_id)

    @r.post("/datasets/selfinstruct/{job_id}/resume", status_code=202)
    def resume(job_id: int):
        return job_json(resume_selfinstruct(wb, job_id))

    return r
