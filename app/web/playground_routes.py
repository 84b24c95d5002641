"""Chat playground REST routes: one model's answer, save a conversation as an SFT example,
start a battle from it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from fastapi import APIRouter
from fastapi.params import Depends
from pydantic import BaseModel

from app.arena import playground
from app.inference.generation import Finish
from app.web.arena_routes import PredictBody

if TYPE_CHECKING:
    from app.core.workbench import Workbench


class Example(BaseModel):
    messages: list[dict[str, str]]
    dataset: str
    system_prompt: str = ""


class ToArena(PredictBody):
    opponent_id: int | None = None


def playground_router(wb: Workbench, dependencies: Sequence[Depends] = ()) -> APIRouter:
    r = APIRouter(prefix="/api/playground", dependencies=list(dependencies))

    @r.post("/chat")
    def chat(body: PredictBody):
        pieces, finish = [], "stop"
        for piece in playground.chat_stream(wb, body.model_id, body.messages, body.gen()):
            if isinstance(piece, Finish):
                finish = piece.reason
            else:
                pieces.append(piece)
        return {"model_id": body.model_id, "answer": "".join(pieces), "finish": finish}

    @r.post("/examples", status_code=201)
    def save(body: Example):
        ds = playground.save_example(wb, body.messages, body.dataset, body.system_prompt)
        return {"id": ds.id, "name": ds.name, "rows": ds.num_rows, "kind": ds.kind}

    @r.post("/arena", status_code=201)
    def arena(body: ToArena):
        battle = playground.to_arena(wb, body.model_id, body.messages, body.gen(), body.opponent_id)
        return {"battle_id": battle.id, "model_a_id": battle.model_a_id, "model_b_id": battle.model_b_id}

    return r
