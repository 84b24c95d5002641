"""Registry REST routes: list versions, read one in full (rating, size, deployments…) and its
model card, compare two, export one (merge or GGUF, as a job)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter
from fastapi.params import Depends
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel

from app.arena.version_view import compare_versions, version_view
from app.core.errors import InvalidInput
from app.core.tables import ModelVersion
from app.inference.connection import check_connection
from app.inference.remote_engines import ollama_health
from app.models import export, registry
from app.models.card import model_card
from app.web.job_routes import job_json

if TYPE_CHECKING:
    from app.core.workbench import Workbench


class ExportBody(BaseModel):
    format: str  # merged | gguf
    name: str | None = None  # merged: the new version's name
    dtype: str = "float32"  # merged
    gguf_type: str = "f16"  # gguf


class EditBody(BaseModel):
    name: str | None = None
    tags: list[str] | None = None
    notes: str | None = None
    archived: bool | None = None
    system_prompt: str | None = None  # "" clears it
    worker_backend: str | None = None  # auto | huggingface | vllm | sglang


def model_json(mv: ModelVersion) -> dict[str, Any]:
    return {"id": mv.id, "name": mv.name, "kind": mv.kind, "parent_id": mv.parent_id, "run_id": mv.run_id,
            "template": mv.template, "in_arena": mv.in_arena, "base_path": mv.base_path,
            "adapter_path": mv.adapter_path, "gguf": (mv.meta or {}).get("gguf", []),
            "tags": (mv.meta or {}).get("tags", []), "notes": (mv.meta or {}).get("notes", ""),
            "archived": registry.is_archived(mv), "system_prompt": registry.model_system_prompt(mv),
            "worker_backend": (mv.meta or {}).get("worker_backend", "auto"),
            "created_at": mv.created_at.isoformat() if mv.created_at else None}


def models_router(wb: Workbench, dependencies: Sequence[Depends] = ()) -> APIRouter:
    """Model routes, each needing ``dependencies`` (the login check with --auth)."""
    r = APIRouter(prefix="/api", dependencies=list(dependencies))

    @r.get("/ollama/health")
    def ollama():
        return ollama_health(wb.settings.ollama_host)

    @r.get("/models")
    def models(include_archived: bool = False):
        return [model_json(m) for m in registry.list_models(wb, include_archived)]

    # Before /models/{model_id}, which would otherwise take "compare" for an id.
    @r.get("/models/compare")
    def compare(a: int, b: int, include_named: bool = False):
        return compare_versions(wb, a, b, include_named=include_named)

    @r.get("/models/{model_id}")
    def model(model_id: int):
        """The full version view, with the registry's list fields kept as they were."""
        return {**version_view(wb, model_id), **model_json(registry.get_model(wb, model_id))}

    @r.patch("/models/{model_id}")
    def edit(model_id: int, body: EditBody):
        registry.get_model(wb, model_id)  # an unknown id is a 404 whatever the body says
        return model_json(registry.edit_model(wb, model_id, **body.model_dump()))

    @r.post("/models/{model_id}/check")
    def check(model_id: int):
        return check_connection(wb, model_id)

    @r.get("/models/{model_id}/card", response_class=PlainTextResponse)
    def card(model_id: int):
        with wb.session() as s:
            return model_card(s, model_id)

    @r.post("/models/{model_id}/export", status_code=202)
    def export_model(model_id: int, body: ExportBody):
        registry.get_model(wb, model_id)  # an unknown id is a 404 whatever the body says
        if body.format == "merged":
            job = export.start_merge(wb, model_id, body.name, body.dtype)
        elif body.format == "gguf":
            job = export.start_gguf(wb, model_id, body.gguf_type)
        else:
            raise InvalidInput(f"format must be merged or gguf, got {body.format!r}")
        return job_json(job)

    return r
