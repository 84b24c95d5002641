"""Arena battles: the same conversation to two models, one vote per turn."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import select

from app.chat_engines import GenSettings
from app.errors import Conflict, InvalidInput, NotFound
from app.registry import get_model
from app.tables import Battle, BattleTurn, Vote
from app.workbench import Workbench

CHOICES = ("a", "b", "tie", "both_bad")
MAX_PROMPT_CHARS = 8000


def new_battle(
    wb: Workbench,
    model_a_id: int,
    model_b_id: int,
    gen: GenSettings | None = None,
    voter: str = "local",
    mode: str = "named",
) -> Battle:
    if model_a_id == model_b_id:
        raise InvalidInput("a battle needs two different models")
    for mid in (model_a_id, model_b_id):
        get_model(wb, mid)  # raises NotFound
    battle = Battle(
        model_a_id=model_a_id,
        model_b_id=model_b_id,
        mode=mode,
        voter=voter,
        gen_settings=(gen or GenSettings()).as_dict(),
    )
    with wb.session() as s:
        s.add(battle)
        s.commit()
        s.refresh(battle)
    return battle


def get_battle(wb: Workbench, battle_id: int) -> Battle:
    with wb.session() as s:
        battle = s.get(Battle, battle_id)
    if battle is None:
        raise NotFound(f"no battle with id {battle_id}")
    return battle


def turns(wb: Workbench, battle_id: int) -> list[BattleTurn]:
    with wb.session() as s:
        q = select(BattleTurn).where(BattleTurn.battle_id == battle_id).order_by(BattleTurn.turn)
        return list(s.exec(q))


def _answer(wb: Workbench, model_id: int, messages: list[dict], gen: GenSettings) -> tuple[str, dict]:
    mv = get_model(wb, model_id)
    start = time.perf_counter()
    first = None
    pieces = []
    for piece in wb.chat.stream(mv, messages, gen):
        if first is None:
            first = time.perf_counter() - start
        pieces.append(piece)
    total = time.perf_counter() - start
    return "".join(pieces), {"ttft_s": first, "total_s": total, "pieces": len(pieces)}


def play_turn(wb: Workbench, battle_id: int, prompt: str) -> BattleTurn:
    """Send ``prompt`` to both sides and store their answers as the next turn."""
    prompt = (prompt or "").strip()
    if not prompt:
        raise InvalidInput("type a message first")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise InvalidInput(f"the message is longer than {MAX_PROMPT_CHARS} characters")
    battle = get_battle(wb, battle_id)
    previous = turns(wb, battle_id)
    history: list[dict[str, str]] = []
    if previous:
        last = previous[-1]
        vote = _vote_for(wb, battle_id, last.turn)
        if vote is None:
            raise Conflict("vote on the current answers before the next message")
        if vote.choice == "both_bad":
            raise Conflict("both answers were rated bad; start a new battle")
        # The preferred answer becomes the shared history (tie keeps A's).
        chosen = last.answer_b if vote.choice == "b" else last.answer_a
        history = last.messages + [{"role": "assistant", "content": chosen}]
    messages = history + [{"role": "user", "content": prompt}]
    gen = GenSettings(**battle.gen_settings)
    answer_a, t_a = _answer(wb, battle.model_a_id, messages, gen)
    answer_b, t_b = _answer(wb, battle.model_b_id, messages, gen)
    turn = BattleTurn(
        battle_id=battle_id,
        turn=len(previous),
        messages=messages,
        answer_a=answer_a,
        answer_b=answer_b,
        timings={"a": t_a, "b": t_b},
    )
    with wb.session() as s:
        s.add(turn)
        s.commit()
        s.refresh(turn)
    return turn


def _vote_for(wb: Workbench, battle_id: int, turn: int) -> Vote | None:
    with wb.session() as s:
        q = select(Vote).where(Vote.battle_id == battle_id, Vote.turn == turn)
        return s.exec(q).first()


def quality_flags(turn: BattleTurn) -> list[str]:
    flags = []
    for side, text in (("a", turn.answer_a), ("b", turn.answer_b)):
        if not text.strip():
            flags.append(f"empty_{side}")
    return flags


def vote(
    wb: Workbench, battle_id: int, choice: str, voter: str = "local", turn: int | None = None
) -> Vote:
    """Record a vote on a turn (the latest by default). One vote per turn."""
    if choice not in CHOICES:
        raise InvalidInput(f"a vote must be one of {', '.join(CHOICES)}, got {choice!r}")
    existing = turns(wb, battle_id)
    if not existing:
        get_battle(wb, battle_id)
        raise InvalidInput("this battle has no answers to vote on yet")
    target = existing[-1] if turn is None else next((t for t in existing if t.turn == turn), None)
    if target is None:
        raise NotFound(f"battle {battle_id} has no turn {turn}")
    row = Vote(
        battle_id=battle_id, turn=target.turn, choice=choice, voter=voter,
        flags=quality_flags(target),
    )
    try:
        with wb.session() as s:
            s.add(row)
            s.commit()
            s.refresh(row)
    except IntegrityError as e:
        raise Conflict(f"turn {target.turn} of battle {battle_id} already has a vote") from e
    return row


def reveal(wb: Workbench, battle_id: int) -> dict[str, Any]:
    battle = get_battle(wb, battle_id)
    return {
        "a": get_model(wb, battle.model_a_id).name,
        "b": get_model(wb, battle.model_b_id).name,
    }
