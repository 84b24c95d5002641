"""REST routes next to the UI. They call the same app functions as the tabs."""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any

import anyio
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBasic, HTTPBasicCredentials
from pydantic import BaseModel, Field

from app.core.errors import Conflict, ForgeloopError, InvalidInput, NotFound, RateLimited
from app.train import training

if TYPE_CHECKING:
    from app.core.workbench import Workbench

DEFAULT_RECIPES = {"cpt": "cpt_lora", "sft": "sft_lora", "dpo": "dpo_lora", "kto": "kto_lora"}
STATUS = {InvalidInput: 422, NotFound: 404, Conflict: 409, RateLimited: 429}


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
            return run_json(training.cancel_run(wb, run_id))
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
        return {"run_id": run_id, "records": wb.jobs.progress(run.job).records}

    return r


class PredictBody(BaseModel):
    model_id: int
    messages: list[dict[str, str]]
    temperature: float = 0.7
    top_p: float = 0.9
    max_new_tokens: int = 256
    system_prompt: str = ""


class FeedbackBody(BaseModel):
    battle_id: int
    choice: str
    turn: int | None = None


def arena_router(wb: Workbench, user_of) -> APIRouter:
    """Arena routes. ``user_of(request)`` names the caller for votes and rate limits."""
    from app.arena import battles
    from app.arena.leaderboard import leaderboard_cache
    from app.arena.voters import admit_message, admit_vote
    from app.inference.chat_engines import chat_cache
    from app.inference.generation import Finish, GenSettings
    from app.models import registry

    r = APIRouter(prefix="/api")

    @r.post("/predict")
    def predict(body: PredictBody, request: Request):
        try:
            if not body.messages or body.messages[-1].get("role") != "user":
                raise InvalidInput("messages must end with a user message")
            gen = GenSettings(body.temperature, body.top_p, body.max_new_tokens, body.system_prompt)
            mv = registry.get_model(wb, body.model_id)
            earlier = sum(m.get("role") == "user" for m in body.messages[:-1])
            pieces, finish = [], "stop"
            with admit_message(wb, user_of(request), body.messages[-1].get("content", ""), earlier):
                for piece in chat_cache(wb).engine(mv).stream(body.messages, gen):
                    if isinstance(piece, Finish):
                        finish = piece.reason
                    else:
                        pieces.append(piece)
            return {"model_id": mv.id, "answer": "".join(pieces), "finish": finish,
                    "gen_settings": gen.as_dict()}
        except ForgeloopError as e:
            return error_response(e)

    # A few threads for votes: more only make SQLite writers queue behind each other.
    vote_threads = anyio.CapacityLimiter(4)

    def record(body: FeedbackBody, user: str) -> dict[str, Any]:
        with admit_vote(wb, user):  # a refused vote costs no budget
            v = battles.vote(wb, body.battle_id, body.choice, voter=user, turn=body.turn)
        return {"id": v.id, "battle_id": v.battle_id, "turn": v.turn, "choice": v.choice,
                "voter": v.voter, "flags": v.flags}

    @r.post("/feedback", status_code=201)
    async def feedback(body: FeedbackBody, request: Request):
        try:
            return await anyio.to_thread.run_sync(record, body, user_of(request), limiter=vote_threads)
        except ForgeloopError as e:
            return error_response(e)

    @r.get("/leaderboard")
    def board(include_flagged: bool = False, both_bad: str = "tie", include_named: bool = False):
        if both_bad not in ("tie", "drop"):
            return error_response(InvalidInput("both_bad is tie or drop"))
        view = leaderboard_cache(wb).get(include_named=include_named, include_flagged=include_flagged,
                                         both_bad=both_bad)
        return json_safe({"models": view.table.astype(object).to_dict("records"), "votes": view.votes_used,
                          "position_bias": view.position, "length_bias": view.length,
                          "separation": view.separation, "excluded": view.excluded})

    @r.get("/battles")
    def battle_list(limit: int = 100, offset: int = 0):
        return battles.list_battles(wb, limit=min(max(limit, 1), 1000), offset=max(offset, 0))

    return r


def json_safe(value: Any) -> Any:
    """Plain JSON: numpy scalars become Python numbers, NaN/inf/NA become null."""
    import math

    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is not None and str(value) == "<NA>":
        return None
    return value


def api_user(request) -> str:
    """The caller's account name from HTTP Basic credentials, else "api"."""
    import base64

    header = request.headers.get("authorization", "")
    if header.lower().startswith("basic "):
        try:
            return base64.b64decode(header[6:]).decode().split(":", 1)[0] or "api"
        except (ValueError, UnicodeDecodeError):
            return "api"
    return "api"
