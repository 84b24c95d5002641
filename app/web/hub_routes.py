"""Hugging Face Hub REST routes: push a version, pull a base model (both jobs), and the token
(whether one is set and from where; setting it; never reading it back)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from fastapi import APIRouter
from fastapi.params import Depends
from pydantic import BaseModel

from app.models import hub, registry
from app.web.job_routes import job_json

if TYPE_CHECKING:
    from app.core.workbench import Workbench


class PushBody(BaseModel):
    repo_id: str
    include_gguf: bool = False
    private: bool = True


class PullBody(BaseModel):
    repo_id: str
    name: str | None = None
    revision: str | None = None
    template: str | None = None


class TokenBody(BaseModel):
    token: str  # "" forgets the token set here (HF_TOKEN applies again)


def hub_router(wb: Workbench, dependencies: Sequence[Depends] = ()) -> APIRouter:
    """Hub routes, each needing ``dependencies`` (the login check with --auth)."""
    r = APIRouter(prefix="/api", dependencies=list(dependencies))

    @r.post("/models/{model_id}/push", status_code=202)
    def push(model_id: int, body: PushBody):
        registry.get_model(wb, model_id)  # an unknown id is a 404 whatever the body says
        return job_json(hub.start_push(wb, model_id, body.repo_id, body.include_gguf, body.private))

    @r.post("/hub/pull", status_code=202)
    def pull(body: PullBody):
        return job_json(hub.start_pull(wb, body.repo_id, body.name, body.revision, body.template))

    @r.get("/hub/token")
    def token():
        return hub.token_status(wb)

    @r.put("/hub/token")
    def set_token(body: TokenBody):
        return hub.set_hub_token(wb, body.token)

    return r
