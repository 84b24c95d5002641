"""Battle history: past battles and their votes, filtered; one battle in full; a vote changed,
withdrawn, flagged or unflagged.

A vote is replaced rather than edited (the old row deleted, a new one written in the same
transaction), so the leaderboard's fingerprint (vote count and newest id) sees every
change. DPO/KTO snapshots already built keep their content; new ones follow the change.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlmodel import func, select

from app.arena.battles import CHOICES
from app.core.errors import InvalidInput, NotFound
from app.core.tables import Battle, BattleTurn, ModelVersion, Vote

if TYPE_CHECKING:
    from app.core.workbench import Workbench

REVIEW_FLAG = "flagged_by_reviewer"


def _day(text: str | None, name: str, end: bool = False) -> datetime | None:
    if not text:
        return None
    try:
        day = datetime.fromisoformat(text.strip())
    except ValueError as e:
        raise InvalidInput(f"{name}: dates are YYYY-MM-DD, got {text!r}") from e
    if end and len(text.strip()) <= 10:
        day = day.replace(hour=23, minute=59, second=59)
    return day if day.tzinfo else day.replace(tzinfo=UTC)


def battle_history(wb: Workbench, model_id: int | None = None, voter: str | None = None,
                   flagged: bool | None = None, since: str | None = None, until: str | None = None,
                   limit: int = 50, offset: int = 0) -> dict[str, Any]:
    """Battles newest first, each with its models, turns and votes; ``flagged``: only battles
    with (True) or without (False) a flagged vote; ``voter``: battles that voter voted in."""
    start, end = _day(since, "since"), _day(until, "until", end=True)
    with wb.session() as s:
        q = select(Battle).order_by(Battle.id.desc())
        if model_id is not None:
            q = q.where((Battle.model_a_id == model_id) | (Battle.model_b_id == model_id))
        found = list(s.exec(q))
        ids = [b.id for b in found]
        votes = list(s.exec(select(Vote).where(Vote.battle_id.in_(ids)))) if ids else []
        turn_counts: dict[int, int] = {}
        for t in (s.exec(select(BattleTurn.battle_id).where(BattleTurn.battle_id.in_(ids))) if ids else []):
            turn_counts[t] = turn_counts.get(t, 0) + 1
        names = {m.id: m.name for m in s.exec(select(ModelVersion))}
    by_battle: dict[int, list[Vote]] = {}
    for v in votes:
        by_battle.setdefault(v.battle_id, []).append(v)

    def keep(b: Battle) -> bool:
        created = b.created_at if b.created_at.tzinfo else b.created_at.replace(tzinfo=UTC)
        mine = by_battle.get(b.id, [])
        return ((start is None or created >= start) and (end is None or created <= end)
                and (not voter or any(v.voter == voter for v in mine))
                and (flagged is None or any(v.flags for v in mine) == flagged))

    kept = [b for b in found if keep(b)]
    rows = [{"id": b.id, "created_at": b.created_at.isoformat(), "mode": b.mode,
             "model_a": names.get(b.model_a_id), "model_b": names.get(b.model_b_id),
             "turns": turn_counts.get(b.id, 0),
             "votes": [{"turn": v.turn, "choice": v.choice, "voter": v.voter, "flags": v.flags}
                       for v in sorted(by_battle.get(b.id, []), key=lambda v: v.turn)]}
            for b in kept[offset:offset + limit]]
    return {"total": len(kept), "battles": rows}


def battle_detail(wb: Workbench, battle_id: int) -> dict[str, Any]:
    with wb.session() as s:
        b = s.get(Battle, battle_id)
        if b is None:
            raise NotFound(f"no battle with id {battle_id}")
        q = select(BattleTurn).where(BattleTurn.battle_id == battle_id).order_by(BattleTurn.turn)
        turns = list(s.exec(q))
        votes = {v.turn: v for v in s.exec(select(Vote).where(Vote.battle_id == battle_id))}
        names = {"a": s.get(ModelVersion, b.model_a_id).name, "b": s.get(ModelVersion, b.model_b_id).name}
    return {"id": b.id, "mode": b.mode, "voter": b.voter, "created_at": b.created_at.isoformat(),
            "models": names,
            "turns": [{"turn": t.turn, "prompt": t.messages[-1]["content"] if t.messages else "",
                       "answer_a": t.answer_a, "answer_b": t.answer_b,
                       "vote": None if (v := votes.get(t.turn)) is None else
                       {"choice": v.choice, "voter": v.voter, "flags": v.flags}} for t in turns]}


def _replace(wb: Workbench, battle_id: int, turn: int, change) -> Vote:
    """Delete the turn's vote and write ``change(old)`` in its place, in one transaction."""
    with wb.write_lock, wb.session() as s:
        old = s.exec(select(Vote).where(Vote.battle_id == battle_id, Vote.turn == turn)).first()
        if old is None:
            raise NotFound(f"turn {turn} of battle {battle_id} has no vote")
        new = change(old)
        # A fresh id above every other (SQLite would reuse the old one were it the newest), so
        # the leaderboard's fingerprint changes.
        new.id = s.exec(select(func.max(Vote.id))).one() + 1
        s.delete(old)
        s.flush()
        s.add(new)
        s.commit()
        s.refresh(new)
        return new


def change_vote(wb: Workbench, battle_id: int, turn: int, choice: str) -> Vote:
    if choice not in CHOICES:
        raise InvalidInput(f"a vote must be one of {', '.join(CHOICES)}, got {choice!r}")
    return _replace(wb, battle_id, turn, lambda old: Vote(
        battle_id=old.battle_id, turn=old.turn, choice=choice, voter=old.voter, flags=list(old.flags),
        created_at=old.created_at))


def flag_vote(wb: Workbench, battle_id: int, turn: int, flagged: bool) -> Vote:
    """Keep a vote out of the leaderboard and datasets (flagged) or let it back in (the
    automatic quality flags stay)."""
    def change(old: Vote) -> Vote:
        flags = [f for f in old.flags if f != REVIEW_FLAG] + ([REVIEW_FLAG] if flagged else [])
        return Vote(battle_id=old.battle_id, turn=old.turn, choice=old.choice, voter=old.voter, flags=flags,
                    created_at=old.created_at)

    return _replace(wb, battle_id, turn, change)


def withdraw_vote(wb: Workbench, battle_id: int, turn: int) -> None:
    with wb.write_lock, wb.session() as s:
        old = s.exec(select(Vote).where(Vote.battle_id == battle_id, Vote.turn == turn)).first()
        if old is None:
            raise NotFound(f"turn {turn} of battle {battle_id} has no vote")
        s.delete(old)
        s.commit()
