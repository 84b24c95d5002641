"""The arena leaderboard: valid votes from the DB through the rating maths in ``ratings``."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from sqlalchemy import text
from sqlmodel import select

from app.arena import ratings
from app.core.tables import Battle, BattleTurn, ModelVersion, Vote

if TYPE_CHECKING:
    from app.core.workbench import Workbench

PRIOR_VOTES = 1.0


def vote_records(wb: Workbench, include_flagged: bool = False) -> list[dict[str, Any]]:
    """One dict per vote: model names, choice, the prompt history (the bootstrap cluster)
    and both answer lengths. Flagged votes are left out unless asked for."""
    with wb.session() as s:
        names = {m.id: m.name for m in s.exec(select(ModelVersion))}
        q = (select(Vote.choice, Vote.flags, Battle.model_a_id, Battle.model_b_id,
                    BattleTurn.messages, BattleTurn.answer_a, BattleTurn.answer_b)
             .join(Battle, Battle.id == Vote.battle_id)
             .join(BattleTurn, (BattleTurn.battle_id == Vote.battle_id) & (BattleTurn.turn == Vote.turn)))
        rows = s.exec(q).all()
    out = []
    for choice, flags, a, b, messages, ans_a, ans_b in rows:
        if flags and not include_flagged:
            continue
        out.append({"a": names[a], "b": names[b], "choice": choice,
                    "prompt": json.dumps(messages, sort_keys=True),
                    "len_a": len(ans_a), "len_b": len(ans_b)})
    return out


@dataclass
class LeaderboardView:
    table: pd.DataFrame  # model, rating, lower, upper, votes, rank
    win_rates: pd.DataFrame
    counts: pd.DataFrame
    position: dict[str, Any]
    length: dict[str, Any]
    separation: list[dict[str, Any]] = field(default_factory=list)
    votes_used: int = 0

    def widths(self) -> dict[str, float]:
        return {r.model: float(r.upper - r.lower) for r in self.table.itertuples()}


def compute(
    wb: Workbench, rounds: int = 200, include_flagged: bool = False, both_bad: str = "tie", seed: int = 0
) -> LeaderboardView:
    """Bradley–Terry ratings with 95% clustered-bootstrap intervals over every arena model."""
    records = vote_records(wb, include_flagged)
    with wb.session() as s:
        names = [m.name for m in s.exec(select(ModelVersion).order_by(ModelVersion.id)) if m.in_arena]
    names += sorted({r[k] for r in records for k in ("a", "b")} - set(names))
    table = ratings.VoteTable.from_records(records, both_bad=both_bad, names=names)
    # A weak prior worth about one vote keeps ratings finite and modest while votes are few
    # (a single win would otherwise push the MLE gap towards infinity); it fades as votes grow.
    board = ratings.leaderboard(table, rounds=rounds, seed=seed, l2=PRIOR_VOTES / max(len(table), 1))
    kept = [r for r in records if both_bad == "tie" or r["choice"] != "both_bad"]
    outcome = table.outcome
    length = ratings.length_bias([r["len_a"] for r in kept], [r["len_b"] for r in kept], outcome)
    separation = []
    ranked = board.dropna(subset=["lower"]).reset_index(drop=True)
    for hi, lo in zip(ranked.itertuples(), ranked.iloc[1:].itertuples(), strict=False):
        separation.append({"better": hi.model, "worse": lo.model, "gap": float(hi.rating - lo.rating),
                           "votes_needed": ratings.votes_needed(hi.rating, lo.rating)})
    return LeaderboardView(board, ratings.win_rate_matrix(table), ratings.battle_count_matrix(table),
                           ratings.position_bias(table), length, separation, len(table))


class LeaderboardCache:
    """The latest leaderboard, recomputed only when the votes or the arena's models changed.

    A cheap fingerprint query (vote count, newest vote, the models in the arena) tells
    whether the cached view is stale, so no writer anywhere has to remember to invalidate it.
    """

    def __init__(self, wb: Workbench) -> None:
        self._wb = wb
        self._lock = threading.Lock()
        self._cached: tuple[tuple, LeaderboardView] | None = None

    def _fingerprint(self) -> tuple:
        with self._wb.engine.connect() as conn:
            votes = conn.execute(text("SELECT count(*), max(id) FROM votes")).one()
            arena = conn.execute(text("SELECT id, name FROM models WHERE in_arena ORDER BY id")).all()
        return tuple(votes), tuple(map(tuple, arena))

    def get(self, rounds: int = 200) -> LeaderboardView:
        key = (self._fingerprint(), rounds)
        with self._lock:
            if self._cached is not None and self._cached[0] == key:
                return self._cached[1]
        view = compute(self._wb, rounds=rounds)
        with self._lock:
            self._cached = (key, view)
        return view

    def widths(self, model_ids: list[int]) -> list[float] | None:
        """Interval widths of the last computed leaderboard, for active pair sampling."""
        cached = self._cached
        if cached is None:
            return None
        by_name = cached[1].widths()
        with self._wb.session() as s:
            names = [s.get(ModelVersion, i).name for i in model_ids]
        widths = [by_name.get(n, np.nan) for n in names]
        return widths if any(np.isfinite(w) for w in widths) else None


def leaderboard_cache(wb: Workbench) -> LeaderboardCache:
    return wb.service(LeaderboardCache)


def leader(wb: Workbench, local_only: bool = True) -> ModelVersion | None:
    """The best-rated arena model (local ones only by default: they can be trained)."""
    view = leaderboard_cache(wb).get()
    with wb.session() as s:
        by_name = {m.name: m for m in s.exec(select(ModelVersion))}
    for row in view.table.itertuples():
        mv = by_name.get(row.model)
        if mv is not None and row.votes > 0 and (not local_only or mv.kind in ("base", "adapter", "full")):
            return mv
    return None
