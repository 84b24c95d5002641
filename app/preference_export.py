"""Votes → preference datasets in LLaMA-Factory's sharegpt ranking format."""

from __future__ import annotations

import json

from sqlmodel import select

from app.datasets import register_rows
from app.errors import InvalidInput
from app.tables import BattleTurn, Dataset, Vote
from app.workbench import Workbench


def preference_rows(wb: Workbench) -> tuple[list[dict], list[int]]:
    """One chosen/rejected row per decisive, unflagged vote, deduplicated."""
    rows, vote_ids, seen = [], [], set()
    with wb.session() as s:
        q = (
            select(Vote, BattleTurn)
            .join(BattleTurn, (BattleTurn.battle_id == Vote.battle_id) & (BattleTurn.turn == Vote.turn))
            .where(Vote.choice.in_(("a", "b")))
            .order_by(Vote.id)
        )
        for v, t in s.exec(q):
            if v.flags:
                continue
            chosen, rejected = (t.answer_a, t.answer_b) if v.choice == "a" else (t.answer_b, t.answer_a)
            if chosen.strip() == rejected.strip():
                continue
            key = json.dumps([t.messages, chosen, rejected], sort_keys=True)
            if key in seen:
                continue
            seen.add(key)
            rows.append({
                "messages": t.messages,
                "chosen": {"role": "assistant", "content": chosen},
                "rejected": {"role": "assistant", "content": rejected},
            })
            vote_ids.append(v.id)
    return rows, vote_ids


def build_dpo_dataset(wb: Workbench, name: str) -> Dataset:
    """Snapshot the current votes as a registered DPO dataset listing its votes."""
    rows, vote_ids = preference_rows(wb)
    if not rows:
        raise InvalidInput("no usable votes yet: a DPO pair needs a vote for A or for B")
    return register_rows(
        wb, name, "dpo", rows, fmt="preference", source="votes", meta={"vote_ids": vote_ids}
    )
