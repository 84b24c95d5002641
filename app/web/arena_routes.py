"""Arena REST routes: chat with one model, battle (blind, both answers at once), replay a
seeded turn, vote, read the leaderboard and the battles."""

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
    """One model's answer to a conversation (also the chat playground's body)."""

    model_id: int
    messages: list[dict[str, str]]
    temperature: float = 0.7
    top_p: float = 0.9
    max_new_tokens: int = 256
    system_prompt: str = ""

    def gen(self):
        from app.inference.generation import GenSettings

        return GenSettings(self.temperature, self.top_p, self.max_new_tokens, self.system_prompt)


class BattleBody(BaseModel):
    prompt: str
    mode: str = "anonymous"  # anonymous: the pair is sampled; named: give both model ids
    model_a_id: int | None = None
    model_b_id: int | None = None  # the same id twice: a model against itself (two samples)
    temperature: float = 0.7
    top_p: float = 0.9
    max_new_tokens: int = 256
    system_prompt: str = ""
    seed: int | None = None  # sides sample with seed + 2·turn and seed + 2·turn + 1


class TurnBody(BaseModel):
    prompt: str


class VoteChange(BaseModel):
    choice: str


class FlagBody(BaseModel):
    flagged: bool


class FeedbackBody(BaseModel):
    battle_id: int
    choice: str
    turn: int | None = None


def arena_router(
    wb: Workbench, user_of: Callable[[Request], str], dependencies: Sequence[Depends] = ()
) -> APIRouter:
    """Arena routes, each needing ``dependencies`` (the login check with --auth).
    ``user_of(request)`` names the caller for votes and rate limits."""
    from app.arena import battles, history
    from app.arena.leaderboard import leaderboard_cache
    from app.arena.voters import admit_message, admit_vote
    from app.inference.chat_engines import model_engines
    from app.inference.generation import Finish, GenSettings
    from app.models import registry

    r = APIRouter(prefix="/api", dependencies=list(dependencies))

    @r.post("/predict")
    def predict(body: PredictBody, request: Request):
        if not body.messages or body.messages[-1].get("role") != "user":
            raise InvalidInput("messages must end with a user message")
        gen = body.gen()
        mv = registry.get_model(wb, body.model_id)
        earlier = sum(m.get("role") == "user" for m in body.messages[:-1])
        pieces, finish = [], "stop"
        with admit_message(wb, user_of(request), body.messages[-1].get("content", ""), earlier):
            for piece in model_engines(wb).engine(mv).stream(body.messages, gen):
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

    def turn_json(turn) -> dict[str, Any]:  # blind: which model is which shows after the vote
        return {"battle_id": turn.battle_id, "turn": turn.turn, "answer_a": turn.answer_a,
                "answer_b": turn.answer_b, "finish": {k: v.get("finish") for k, v in turn.timings.items()},
                "seeds": (turn.gen_settings or {}).get("seeds")}

    @r.post("/battles", status_code=201)
    def start_battle(body: BattleBody, request: Request):
        gen = GenSettings(body.temperature, body.top_p, body.max_new_tokens, body.system_prompt, body.seed)
        with admit_message(wb, user_of(request), body.prompt, 0) as prompt:
            battle = battles.new_battle(wb, body.model_a_id, body.model_b_id, gen=gen,
                                        voter=user_of(request), mode=body.mode)
            return turn_json(battles.play_turn(wb, battle.id, prompt))

    @r.post("/battles/{battle_id}/turns", status_code=201)
    def next_turn(battle_id: int, body: TurnBody, request: Request):
        index = battles.next_turn(wb, battle_id)  # 404 for an unknown battle
        with admit_message(wb, user_of(request), body.prompt, index) as prompt:
            return turn_json(battles.play_turn(wb, battle_id, prompt))

    @r.post("/battles/{battle_id}/turns/{turn}/replay")
    def replay(battle_id: int, turn: int):
        return {"battle_id": battle_id, "turn": turn, **battles.replay_turn(wb, battle_id, turn)}

    @r.get("/leaderboard")
    def board(include_flagged: bool = False, both_bad: str = "tie", include_named: bool = False,
              include_annotations: bool = False):
        view = leaderboard_cache(wb).get(include_named=include_named, include_flagged=include_flagged,
                                         include_annotations=include_annotations,
                                         both_bad=both_bad)
        return json_safe({"models": view.table.astype(object).to_dict("records"), "votes": view.votes_used,
                          "position_bias": view.position, "length_bias": view.length,
                          "separation": view.separation, "excluded": view.excluded})

    @r.get("/battles")
    def battle_list(limit: int = 100, offset: int = 0):
        return battles.list_battles(wb, limit=min(max(limit, 1), 1000), offset=max(offset, 0))

    # Battle history (app/arena/history.py). A voter's own name is what the login gave, so
    # these stay workbench routes: the voter server has no API.
    @r.get("/battles/history")
    def battle_history(model_id: int | None = None, voter: str | None = None, flagged: bool | None = None,
                       since: str | None = None, until: str | None = None, limit: int = 50, offset: int = 0):
        return history.battle_history(wb, model_id, voter, flagged, since, until,
                                      min(max(limit, 1), 1000), max(offset, 0))

    @r.get("/battles/{battle_id}")
    def battle_detail(battle_id: int):
        return history.battle_detail(wb, battle_id)

    def vote_json(v) -> dict[str, Any]:
        return {"battle_id": v.battle_id, "turn": v.turn, "choice": v.choice, "voter": v.voter,
                "flags": v.flags}

    @r.put("/battles/{battle_id}/turns/{turn}/vote")
    def change_vote(battle_id: int, turn: int, body: VoteChange):
        return vote_json(history.change_vote(wb, battle_id, turn, body.choice))

    @r.delete("/battles/{battle_id}/turns/{turn}/vote", status_code=204)
    def withdraw_vote(battle_id: int, turn: int):
        history.withdraw_vote(wb, battle_id, turn)

    @r.put("/battles/{battle_id}/turns/{turn}/flag")
    def flag_vote(battle_id: int, turn: int, body: FlagBody):
        return vote_json(history.flag_vote(wb, battle_id, turn, body.flagged))

    return r
