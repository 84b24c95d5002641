"""Model-worker REST routes: which local models are loaded where, and load / unload one."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from fastapi import APIRouter
from fastapi.params import Depends

from app.inference import workers

if TYPE_CHECKING:
    from app.core.workbench import Workbench


def workers_router(wb: Workbench, dependencies: Sequence[Depends] = ()) -> APIRouter:
    r = APIRouter(prefix="/api", dependencies=list(dependencies))

    @r.get("/workers")
    def all_workers():
        return workers.worker_status(wb)

    @r.get("/workers/{model_id}")
    def one(model_id: int):
        return workers.worker_status(wb, model_id)

    @r.post("/workers/{model_id}/load")
    def load(model_id: int):
        return workers.load_model(wb, model_id)

    @r.post("/workers/{model_id}/unload")
    def unload(model_id: int):
        return workers.unload_model(wb, model_id)

    return r
