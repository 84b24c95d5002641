"""The human annotation queue: blind, sides shuffled, one label a pair. It serves judged pairs
(mode ``judge``) and pairs sampled without a judge (mode ``pair``), oldest first.

A person's label is stored as a vote on a copy of the pair (a battle of mode ``annotation``),
so it feeds DPO/KTO snapshots like any vote. Where the person overrules the judge, the judge's
vote is flagged ``overruled`` and leaves the snapshots; where they agree, the snapshot's
deduplication keeps one pair. Judge/human agreement counts only pairs both labelled.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

from sqlmodel import select

from app.arena.battles import CHOICES, quality_flags
from app.arena.judge import JUDGE, PAIR_MODE
from app.core.errors import Conflict, InvalidInput, NotFound
from app.core.tables import Battle, BattleTurn, ModelVersion, PairLabel, Vote

if TYPE_CHECKING:
    from app.core.workbench import Workbench

QUEUE_MODES = (JUDGE, PAIR_MODE)
SWAP = {"a": "b", "b": "a", "tie": "tie", "both_bad": "both_bad"}


def swapped(battle_id: int, annotator: str) -> bool:
    """Whether this person sees B first: stable per person and pair, so the label's meaning
    needs no server state, yet not guessable from the pair alone."""
    return hashlib.sha256(f"{battle_id}:{annotator}".encode()).digest()[0] % 2 == 1


def _judged(s, battle_id: int) -> tuple[Battle, BattleTurn]:
    battle = s.get(Battle, battle_id)
    if battle is None or battle.mode not in QUEUE_MODES:
        raise NotFound(f"no pair to annotate with id {battle_id}")
    turn = s.exec(select(BattleTurn).where(BattleTurn.battle_id == battle_id, BattleTurn.turn == 0)).one()
    return battle, turn


def _human_labelled(s) -> set[int]:
    return set(s.exec(select(PairLabel.battle_id).where(PairLabel.source == "human")))


def next_pair(wb: Workbench, annotator: str) -> dict[str, Any]:
    """The oldest queued pair (judged or not) no person has labelled, shown blind (answer_a is what this
    person sees first); ``pair`` is None when the queue is empty."""
    with wb.session() as s:
        done = _human_labelled(s)
        ids = [i for i in s.exec(select(Battle.id).where(Battle.mode.in_(QUEUE_MODES)).order_by(Battle.id))
               if i not in done]
        if not ids:
            return {"pair": None, "remaining": 0}
        _, turn = _judged(s, ids[0])
    first, second = turn.answer_a, turn.answer_b
    if swapped(ids[0], annotator):
        first, second = second, first
    return {"pair": {"battle_id": ids[0], "prompt": turn.messages[-1]["content"],
                     "messages": turn.messages, "answer_a": first, "answer_b": second},
            "remaining": len(ids)}


def label_pair(wb: Workbench, battle_id: int, choice: str, annotator: str) -> dict[str, Any]:
    """Record a person's label (a | b | tie | both_bad, as the sides were shown to them)."""
    with wb.session() as s:
        battle, turn = _judged(s, battle_id)  # an unknown pair is a 404 before the choice is read
    if choice not in CHOICES:
        raise InvalidInput(f"a label must be one of {', '.join(CHOICES)}, got {choice!r}")
    is_swapped = swapped(battle_id, annotator)
    actual = SWAP[choice] if is_swapped else choice
    with wb.write_lock, wb.session() as s:
        if battle_id in _human_labelled(s):
            raise Conflict(f"pair {battle_id} is labelled already")
        names = {"a": s.get(ModelVersion, battle.model_a_id).name,
                 "b": s.get(ModelVersion, battle.model_b_id).name}
        copy = Battle(model_a_id=battle.model_a_id, model_b_id=battle.model_b_id, mode="annotation",
                      voter=annotator, gen_settings=battle.gen_settings)
        s.add(copy)
        s.flush()
        copied = BattleTurn(battle_id=copy.id, turn=0, messages=turn.messages, answer_a=turn.answer_a,
                            answer_b=turn.answer_b, timings=turn.timings, gen_settings=turn.gen_settings)
        vote = Vote(battle_id=copy.id, turn=0, choice=actual, voter=annotator,
                    flags=quality_flags(copied, names))
        s.add_all([copied, vote])
        s.flush()
        label = PairLabel(battle_id=battle_id, source="human", labeler=annotator, choice=actual,
                          vote_id=vote.id, meta={"shown_swapped": is_swapped,
                                                 "annotation_battle_id": copy.id})
        s.add(label)
        overruled = False
        judge_vote = s.exec(select(Vote).where(Vote.battle_id == battle_id, Vote.turn == 0)).first()
        if judge_vote is not None and judge_vote.choice in ("a", "b") and judge_vote.choice != actual:
            judge_vote.flags = [*judge_vote.flags, "overruled"]  # a new list: JSON columns track assignment
            s.add(judge_vote)
            overruled = True
        s.commit()
        return {"battle_id": battle_id, "choice": actual, "vote_id": vote.id, "overruled_judge": overruled}


def _comparable(choice: str) -> str:
    return "tie" if choice == "both_bad" else choice  # a judge cannot say both bad


def agreement(wb: Workbench) -> dict[str, Any]:
    """How often the judge and people chose the same on the pairs both labelled."""
    with wb.session() as s:
        labels = list(s.exec(select(PairLabel)))
    judge = {lb.battle_id: lb.choice for lb in labels if lb.source == "judge"}
    human = {lb.battle_id: lb.choice for lb in labels if lb.source == "human"}
    both = sorted(set(judge) & set(human))
    agree = sum(_comparable(judge[i]) == _comparable(human[i]) for i in both)
    return {"pairs": len(both), "agree": agree, "rate": agree / len(both) if both else None,
            "judged": len(judge), "labelled": len(human)}
