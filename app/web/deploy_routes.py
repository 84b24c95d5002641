"""Deploy REST routes: deploy a version to Ollama (a job), list deployments next to what
Ollama has, delete one, roll the stable tag back, and enter a deployment in the arena."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from fastapi import APIRouter
from fastapi.params import Depends
from pydantic import BaseModel

from app.models import deploy, registry
from app.web.job_routes import job_json
from app.web.model_routes import model_json

if TYPE_CHECKING:
    from app.core.workbench import Workbench


class DeployBody(BaseModel):
    model_id: int
    mode: str = "merged"  # merged | adapter (base GGUF + LoRA adapter)
    gguf_type: str | None = None  # which of the version's GGUF files; default: the lossless one
    quantize: str | None = None  # asked of Ollama at create time, e.g. q4_K_M
    stable_tag: bool = True  # also point <prefix>/<model>:latest at it


class RollbackBody(BaseModel):
    tag: str = deploy.STABLE_TAG


class ArenaBody(BaseModel):
    name: str | None = None


NO_ROLLBACK_BODY, NO_ARENA_BODY = RollbackBody(), ArenaBody()  # the bodies are optional


def deploy_router(wb: Workbench, dependencies: Sequence[Depends] = ()) -> APIRouter:
    r = APIRouter(prefix="/api", dependencies=list(dependencies))

    @r.post("/deploy", status_code=202)
    def start(body: DeployBody):
        registry.get_model(wb, body.model_id)  # an unknown model is a 404
        return job_json(deploy.start_deploy(wb, body.model_id, body.mode, body.gguf_type, body.quantize,
                                            body.stable_tag))

    @r.post("/deploy/{job_id}/retry", status_code=202)
    def retry(job_id: int):
        return job_json(deploy.retry_deploy(wb, job_id))

    @r.get("/deployments")
    def deployments(check_ollama: bool = True):
        return deploy.list_deployments(wb, check_ollama)

    @r.delete("/deployments/{deployment_id}")
    def delete(deployment_id: int):
        return deploy.delete_deployment(wb, deployment_id)

    @r.post("/deployments/{deployment_id}/rollback")
    def rollback(deployment_id: int, body: RollbackBody = NO_ROLLBACK_BODY):
        deploy.get_deployment(wb, deployment_id)  # an unknown id is a 404 whatever the body says
        return deploy.rollback(wb, deployment_id, body.tag)

    @r.post("/deployments/{deployment_id}/arena", status_code=201)
    def arena(deployment_id: int, body: ArenaBody = NO_ARENA_BODY):
        deploy.get_deployment(wb, deployment_id)
        return model_json(deploy.add_to_arena(wb, deployment_id, body.name))

    return r
