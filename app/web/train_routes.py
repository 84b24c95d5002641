"""Training REST routes: start, follow and cancel runs. They call the same functions as the Train tab."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter
from fastapi.params import Depends
from pydantic import BaseModel, Field

from app.core.errors import InvalidInput, NotFound
from app.train import presets, training

if TYPE_CHECKING:
    from app.core.workbench import Workbench

class RenameBody(BaseModel):
    name: str


class PresetBody(BaseModel):
    """A Train form: what a run request holds, without the run's name."""

    recipe: str
    model_id: int
    dataset_ids: list[int] = Field(default_factory=list)
    overrides: dict[str, Any] = Field(default_factory=dict)
    gpus: list[int] = Field(default_factory=list)
    deepspeed: str | None = None
    val_size: float = 0.0
    eval_suites: list[str] | None = None
    eval_judge_id: int | None = None


DEFAULT_RECIPES = {"cpt": "cpt_lora", "sft": "sft_lora", "dpo": "dpo_lora", "kto": "kto_lora"}


class TrainBody(BaseModel):
    model_id: int
    dataset_ids: list[int]
    recipe: str | None = None
    name: str | None = None
    overrides: dict[str, Any] = Field(default_factory=dict)
    gpus: list[int] = Field(default_factory=list)
    deepspeed: str | None = None
    val_size: float = 0.0
    eval_suites: list[str] | None = None  # run these suites on the new version; null = the recipe's
    eval_judge_id: int | None = None  # for suites with rubric checks


def run_json(run) -> dict[str, Any]:
    return {
        "id": run.id, "name": run.name, "stage": run.stage, "status": run.status,
        "recipe": run.recipe, "model_id": run.model_id, "dataset_ids": run.dataset_ids,
        "output_model_id": run.output_model_id, "metrics": run.metrics, "error": run.error,
        "gpus": run.gpus, "created_at": run.created_at.isoformat() if run.created_at else None,
        "command": training.shell_command(run), "actions": presets.run_actions(run),
    }


def training_router(wb: Workbench, dependencies: Sequence[Depends] = ()) -> APIRouter:
    """The routes, each needing ``dependencies`` (the login check with --auth)."""
    r = APIRouter(prefix="/api", dependencies=list(dependencies))

    def request(stage: str, body: TrainBody) -> training.TrainRequest:
        if stage not in DEFAULT_RECIPES:
            raise NotFound(f"unknown stage {stage!r}; use {', '.join(DEFAULT_RECIPES)}")
        recipe = body.recipe or DEFAULT_RECIPES[stage]
        if training.get_recipe(recipe).stage != stage:
            raise InvalidInput(f"recipe {recipe!r} is not a {stage} recipe")
        return training.TrainRequest(recipe=recipe, model_id=body.model_id, dataset_ids=body.dataset_ids,
                                     name=body.name, overrides=body.overrides, gpus=body.gpus,
                                     deepspeed=body.deepspeed, val_size=body.val_size,
                                     eval_suites=body.eval_suites, eval_judge_id=body.eval_judge_id)

    @r.post("/train/{stage}", status_code=201)
    def train(stage: str, body: TrainBody):
        return run_json(training.start_run(wb, request(stage, body)))

    @r.post("/train/{stage}/plan")
    def plan(stage: str, body: TrainBody):
        """What starting this run would do (YAML, GPUs, memory plan), without starting it."""
        return training.preview_run(wb, request(stage, body))

    @r.get("/runs")
    def runs():
        return [run_json(x) for x in training.list_runs(wb)]

    @r.get("/runs/{run_id}")
    def run(run_id: int):
        view = training.run_view(wb, run_id)
        view.pop("points")
        return view

    @r.post("/runs/{run_id}/cancel")
    def cancel(run_id: int):
        return run_json(training.cancel_run(wb, run_id))

    @r.post("/runs/{run_id}/rerun_half_batch", status_code=201)
    def rerun_half_batch(run_id: int):
        return run_json(training.rerun_half_batch(wb, run_id))

    @r.patch("/runs/{run_id}")
    def rename(run_id: int, body: RenameBody):
        return run_json(presets.rename_run(wb, run_id, body.name))

    @r.get("/train/presets")
    def preset_list():
        return [{"name": p.name, "request": p.request} for p in presets.list_presets(wb)]

    @r.put("/train/presets/{name}")
    def preset_save(name: str, body: PresetBody):
        row = presets.save_preset(wb, name, body.model_dump())
        return {"name": row.name, "request": row.request}

    @r.delete("/train/presets/{name}", status_code=204)
    def preset_delete(name: str):
        presets.delete_preset(wb, name)

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
        run = training.get_run(wb, run_id)
        return {"run_id": run_id, "records": wb.jobs.progress(run.job).records}

    return r
