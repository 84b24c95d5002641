"""The arena leaderboard: valid votes from the DB through the rating maths in ``ratings``."""

from __future__ import annotations

import json
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import text
from sqlmodel import select

from app.arena import ratings
from app.core.errors import InvalidInput
from app.core.tables import Battle, BattleTurn, ModelVersion, Vote
from app.models.registry import weights_key

if TYPE_CHECKING:
    import pandas as pd

    from app.core.workbench import Workbench

PRIOR_VOTES = 1.0


# Why a vote may be left out. Each left-out vote is counted once, under the first rule that
# removes it: self-battles, then judged pairs, then named battles, then quality flags (the first kind in
# FLAG_KINDS), then both-bad votes when those are dropped.
JUDGED_MODES = ("judge", "pair", "annotation")
FLAG_KINDS = ("error", "empty", "truncated", "identity")
RULES = ("self_battle", "judged", "named", *(f"flagged:{k}" for k in FLAG_KINDS), "both_bad")
RULE_TEXT = {"self_battle": "from self-battles (the same weights on both sides)",
             "named": "from named battles", "both_bad": "rated both bad",
             "judged": "on judged pairs (the LLM judge, and people's labels unless included)"}
FLAG_TEXT = {"error": "a side failed", "empty": "an empty answer", "truncated": "a cut-off answer",
             "identity": "a model named itself"}


@dataclass(frozen=True)
class VoteScreen:
    """Which votes count. By default only blind battles' unflagged votes, as in Chatbot Arena:
    in a named battle the voter knew who wrote what. A self-battle never counts."""

    include_named: bool = False
    include_flagged: bool = False
    both_bad: str = "tie"  # tie: a both-bad vote counts as a tie; drop: it is left out
    # People's labels in the annotation queue (blind, like a battle); an LLM judge's never count.
    include_annotations: bool = False

    def rule(self, self_battle: bool, mode: str, flags: list[str], choice: str) -> str | None:
        """The rule that leaves this vote out, or None when it counts."""
        if self_battle:
            return "self_battle"
        if mode == "annotation" and self.include_annotations:
            pass  # a person's blind label on a sampled pair, asked for
        elif mode in JUDGED_MODES:  # offline labels on sampled pairs, not arena battles
            return "judged"
        if mode == "named" and not self.include_named:
            return "named"
        if flags and not self.include_flagged:
            return f"flagged:{_flag_kind(flags)}"
        if choice == "both_bad" and self.both_bad == "drop":
            return "both_bad"
        return None


def _flag_kind(flags: list[str]) -> str:
    kinds = {f.rsplit("_", 1)[0] for f in flags}  # "identity_a" -> "identity"
    return min(kinds, key=lambda k: (FLAG_KINDS.index(k) if k in FLAG_KINDS else len(FLAG_KINDS), k))


def vote_records(
    wb: Workbench, screen: VoteScreen | None = None
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """The votes that count under ``screen``, one dict each (model names, choice, the prompt
    history as the bootstrap cluster, both answer lengths), and how many each rule left out."""
    screen = screen or VoteScreen()
    with wb.session() as s:
        models = list(s.exec(select(ModelVersion)))
        q = (select(Vote.choice, Vote.flags, Battle.mode, Battle.model_a_id, Battle.model_b_id,
                    BattleTurn.messages, BattleTurn.answer_a, BattleTurn.answer_b)
             .join(Battle, Battle.id == Vote.battle_id)
             .join(BattleTurn, (BattleTurn.battle_id == Vote.battle_id) & (BattleTurn.turn == Vote.turn)))
        rows = s.exec(q).all()
    names = {m.id: m.name for m in models}
    weights = {m.id: weights_key(m) for m in models}
    out, excluded = [], Counter()
    for choice, flags, mode, a, b, messages, ans_a, ans_b in rows:
        rule = screen.rule(a == b or weights[a] == weights[b], mode, flags or [], choice)
        if rule is not None:
            excluded[rule] += 1
            continue
        out.append({"a": names[a], "b": names[b], "choice": choice,
                    "prompt": json.dumps(messages, sort_keys=True),
                    "len_a": len(ans_a), "len_b": len(ans_b)})
    order = {rule: i for i, rule in enumerate(RULES)}  # unknown flag kinds go last
    return out, dict(sorted(excluded.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0])))


def describe_exclusions(excluded: dict[str, int]) -> str:
    """One sentence on the votes left out, for the leaderboard's readers."""
    if not excluded:
        return "No votes were left out."
    parts = []
    for rule, n in excluded.items():
        kind = rule.removeprefix("flagged:")
        text = RULE_TEXT.get(rule) or f"flagged ({FLAG_TEXT.get(kind, kind)})"
        parts.append(f"{n} {text}")
    return f"Votes left out: {', '.join(parts)}."


@dataclass
class LeaderboardView:
    table: pd.DataFrame  # model, rating, lower, upper, votes, rank
    win_rates: pd.DataFrame
    counts: pd.DataFrame
    position: dict[str, Any]
    length: dict[str, Any]
    separation: list[dict[str, Any]] = field(default_factory=list)
    votes_used: int = 0
    # Rule -> how many votes it left out (only rules that removed some; see VoteScreen.rule).
    excluded: dict[str, int] = field(default_factory=dict)

    def widths(self) -> dict[str, float]:
        return {r.model: float(r.upper - r.lower) for r in self.table.itertuples()}


def compute(
    wb: Workbench, rounds: int = 200, include_flagged: bool = False, both_bad: str = "tie", seed: int = 0,
    include_named: bool = False, include_annotations: bool = False,
) -> LeaderboardView:
    """Bradley–Terry ratings with 95% clustered-bootstrap intervals over every arena model,
    from the votes that pass the screen (blind, unflagged battles by default)."""
    if both_bad not in ("tie", "drop"):
        raise InvalidInput(f"both_bad is tie or drop, not {both_bad!r}")
    records, excluded = vote_records(wb, VoteScreen(include_named, include_flagged, both_bad,
                                                    include_annotations))
    with wb.session() as s:
        names = [m.name for m in s.exec(select(ModelVersion).order_by(ModelVersion.id)) if m.in_arena]
    names += sorted({r[k] for r in records for k in ("a", "b")} - set(names))
    table = ratings.VoteTable.from_records(records, both_bad=both_bad, names=names)
    # A weak prior worth about one vote keeps ratings finite and modest while votes are few
    # (a single win would otherwise push the MLE gap towards infinity); it fades as votes grow.
    board = ratings.leaderboard(table, rounds=rounds, seed=seed, l2=PRIOR_VOTES / max(len(table), 1))
    length = ratings.length_bias([r["len_a"] for r in records], [r["len_b"] for r in records], table.outcome)
    separation = []
    ranked = board.dropna(subset=["lower"]).reset_index(drop=True)
    for hi, lo in zip(ranked.itertuples(), ranked.iloc[1:].itertuples(), strict=False):
        separation.append({"better": hi.model, "worse": lo.model, "gap": float(hi.rating - lo.rating),
                           "votes_needed": ratings.votes_needed(hi.rating, lo.rating)})
    return LeaderboardView(board, ratings.win_rate_matrix(table), ratings.battle_count_matrix(table),
                           ratings.position_bias(table), length, separation, len(table), excluded)


class LeaderboardCache:
    """Leaderboards recomputed only when the votes or the models changed.

    A cheap fingerprint query (vote count, newest vote, every model's name, weights and arena
    status) tells whether a cached view is stale, so no writer anywhere has to remember to
    invalidate it. Views are kept per set of options; the default (blind-only) one also feeds
    active pair sampling.
    """

    MAX_VIEWS = 16

    def __init__(self, wb: Workbench) -> None:
        self._wb = wb
        self._lock = threading.Lock()
        self._views: dict[tuple, tuple[tuple, LeaderboardView]] = {}
        self._default: LeaderboardView | None = None

    def _fingerprint(self) -> tuple:
        # Votes are never edited in place (a change replaces the row: app/arena/history.py) and a
        # battle's mode and models are fixed, so every change shows up in count/max(id); model
        # rows decide names, the arena's members and self-battles.
        with self._wb.engine.connect() as conn:
            votes = conn.execute(text("SELECT count(*), max(id) FROM votes")).one()
            models = conn.execute(text("SELECT id, name, in_arena, kind, base_path, adapter_path, meta "
                                       "FROM models ORDER BY id")).all()
        return tuple(votes), tuple(map(tuple, models))

    def get(
        self, rounds: int = 200, include_named: bool = False, include_flagged: bool = False,
        both_bad: str = "tie", include_annotations: bool = False,
    ) -> LeaderboardView:
        options = (rounds, include_named, include_flagged, both_bad, include_annotations)
        fingerprint = self._fingerprint()
        with self._lock:
            hit = self._views.get(options)
            if hit is not None and hit[0] == fingerprint:
                return hit[1]
        view = compute(self._wb, rounds=rounds, include_flagged=include_flagged, both_bad=both_bad,
                       include_named=include_named, include_annotations=include_annotations)
        with self._lock:
            self._views.pop(options, None)
            self._views[options] = (fingerprint, view)
            while len(self._views) > self.MAX_VIEWS:
                self._views.pop(next(iter(self._views)))  # the least recently computed
            if options[1:] == (False, False, "tie", False):
                self._default = view
        return view

    def widths(self, model_ids: list[int]) -> list[float] | None:
        """Interval widths of the last computed default leaderboard, for active pair sampling."""
        view = self._default
        if view is None:
            return None
        by_name = view.widths()
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
