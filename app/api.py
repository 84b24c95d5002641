"""REST routes next to the UI. They call the same app functions as the tabs."""

from __future__ import annotations

import secrets
from typing import Any

from fastapi import APIRouter, Depends, HTTPException
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBasic, HTTPBasicCredentials
from pydantic import BaseModel, Field

from app import training
from app.errors import Conflict, ForgeloopError, InvalidInput, NotFound
from app.workbench import Workbench

DEFAULT_RECIPES = {"cpt": "cpt_lora", "sft": "sft_lora", "dpo": "dpo_lora", "kto": "kto_lora"}
STATUS = {InvalidInput: 422, NotFound: 404, Conflict: 409}


class TrainBody(BaseModel):
    model_id: int
    dataset_ids: list[int]
    recipe: str | None = None
    name: str | None = None
    overrides: dict[str, Any] = Field(default_factory=dict)
    gpus: list[int] = Field(default_factory=list)
    deepspeed: str | None = None
    val_size: float = 0.0


def api_auth(settings) -> list:
    """With --auth, API calls need the same accounts, as HTTP Basic credentials."""
    if not settings.auth:
        return []
    accounts = dict(settings.auth)
    basic = HTTPBasic()

    def check(creds: HTTPBasicCredentials = Depends(basic)) -> str:  # noqa: B008
        expected = accounts.get(creds.username)
        if expected is None or not secrets.compare_digest(expected, creds.password):
            raise HTTPException(401, "wrong user or password", headers={"WWW-Authenticate": "Basic"})
        return creds.username

    return [Depends(check)]


def error_response(e: ForgeloopError) -> JSONResponse:
    return JSONResponse({"error": str(e)}, status_code=STATUS.get(type(e), 400))


def run_json(run) -> dict[str, Any]:
    return {
        "id": run.id, "name": run.name, "stage": run.stage, "status": run.status,
        "recipe": run.recipe, "model_id": run.model_id, "dataset_ids": run.dataset_ids,
        "output_model_id": run.output_model_id, "metrics": run.metrics, "error": run.error,
        "gpus": run.gpus, "created_at": run.created_at.isoformat() if run.created_at else None,
        "command": training.shell_command(run),
    }


def training_router(wb: Workbench) -> APIRouter:
    r = APIRouter(prefix="/api")

    @r.post("/train/{stage}", status_code=201)
    def train(stage: str, body: TrainBody):
        if stage not in DEFAULT_RECIPES:
            raise HTTPException(404, f"unknown stage {stage!r}; use {', '.join(DEFAULT_RECIPES)}")
        recipe = body.recipe or DEFAULT_RECIPES[stage]
        try:
            if training.get_recipe(recipe).stage != stage:
                raise InvalidInput(f"recipe {recipe!r} is not a {stage} recipe")
            req = training.TrainRequest(recipe=recipe, model_id=body.model_id,
                                        dataset_ids=body.dataset_ids, name=body.name,
                                        overrides=body.overrides, gpus=body.gpus,
                                        deepspeed=body.deepspeed, val_size=body.val_size)
            return run_json(training.start_run(wb, req))
        except ForgeloopError as e:
            return error_response(e)

    @r.get("/runs")
    def runs():
        return [run_json(x) for x in training.list_runs(wb)]

    @r.get("/runs/{run_id}")
    def run(run_id: int):
        try:
            view = training.run_view(wb, run_id)
        except ForgeloopError as e:
            return error_response(e)
        view.pop("points")
        return view

    @r.post("/runs/{run_id}/cancel")
    def cancel(run_id: int):
        try:
            return run_json(wb.jobs.cancel(run_id))
        except ForgeloopError as e:
            return error_response(e)

    @r.get("/experiments")
    def experiments():
        out = []
        for x in training.list_runs(wb):
            row = run_json(x)
            row["params"] = {k: x.config.get(k) for k in training.KEY_PARAMS if k in x.config}
            out.append(row)
        return out

    @r.get("/metrics/{run_id}")
    def metrics(run_id: int):
        try:
            run = training.get_run(wb, run_id)
        except ForgeloopError as e:
            return error_response(e)
        return {"run_id": run_id, "records": wb.jobs.progress(run).records}

    return r
