"""Arena REST routes: chat with one model, vote, read the leaderboard and the battles."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import anyio
from fastapi import APIRouter, Request
from fastapi.params import Depends
from pydantic import BaseModel

from app.core.errors import InvalidInput
from app.web.json_safe import json_safe

if TYPE_CHECKING:
    from app.core.workbench import Workbench


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


def arena_router(
    wb: Workbench, user_of: Callable[[Request], str], dependencies: Sequence[Depends] = ()
) -> APIRouter:
    """Arena routes, each needing ``dependencies`` (the login check with --auth).
    ``user_of(request)`` names the caller for votes and rate limits."""
    from app.arena import battles
    from app.arena.leaderboard import leaderboard_cache
    from app.arena.voters import admit_message, admit_vote
    from app.inference.chat_engines import chat_cache
    from app.inference.generation import Finish, GenSettings
    from app.models import registry

    r = APIRouter(prefix="/api", dependencies=list(dependencies))

    @r.post("/predict")
    def predict(body: PredictBody, request: Request):
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

    # A few threads for votes: more only make SQLite writers queue behind each other.
    vote_threads = anyio.CapacityLimiter(4)

    def record(body: FeedbackBody, user: str) -> dict[str, Any]:
        with admit_vote(wb, user):  # a refused vote costs no budget
            v = battles.vote(wb, body.battle_id, body.choice, voter=user, turn=body.turn)
        return {"id": v.id, "battle_id": v.battle_id, "turn": v.turn, "choice": v.choice,
                "voter": v.voter, "flags": v.flags}

    @r.post("/feedback", status_code=201)
    async def feedback(body: FeedbackBody, request: Request):
        return await anyio.to_thread.run_sync(record, body, user_of(request), limiter=vote_threads)

    @r.get("/leaderboard")
    def board(include_flagged: bool = False, both_bad: str = "tie", include_named: bool = False):
        view = leaderboard_cache(wb).get(include_named=include_named, include_flagged=include_flagged,
                                         both_bad=both_bad)
        return json_safe({"models": view.table.astype(object).to_dict("records"), "votes": view.votes_used,
                          "position_bias": view.position, "length_bias": view.length,
                          "separation": view.separation, "excluded": view.excluded})

    @r.get("/battles")
    def battle_list(limit: int = 100, offset: int = 0):
        return battles.list_battles(wb, limit=min(max(limit, 1), 1000), offset=max(offset, 0))

    return r
