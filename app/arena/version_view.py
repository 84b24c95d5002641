"""The full view of one model version, and two versions compared side by side.

The split by layer: ``app.models.version_record`` gathers what the registry knows (run,
recipe, datasets with their votes and voters, losses, size on disk, deployments, lineage)
and is shared with the model card; it cannot see ratings, because ratings are computed in
the arena, a layer above. This module adds them: the version's Bradley–Terry rating with
its 95% interval from the cached default leaderboard (blind, unflagged votes), and for a
pair, the recipe diff, the metrics next to each other and their head-to-head record.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from sqlalchemy import text
from sqlmodel import select

from app.arena.leaderboard import VoteScreen, leaderboard_cache
from app.core.errors import InvalidInput
from app.core.tables import Battle, Vote
from app.models.registry import get_model, weights_key
from app.models.version_record import version_record

if TYPE_CHECKING:
    from app.core.workbench import Workbench

# Config keys that differ between any two runs without changing what was trained.
DIFF_IGNORED = frozenset({"output_dir"})
METRICS = ("final_loss", "eval_loss", "rating", "size_bytes")
BLIND_BATTLES_SQL = text(
    "SELECT count(DISTINCT b.id) FROM battles b JOIN votes v ON v.battle_id = b.id "
    "WHERE b.mode = 'anonymous' AND (b.model_a_id = :m OR b.model_b_id = :m) AND b.model_a_id != b.model_b_id"
)


def _number(value: Any) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def rating(wb: Workbench, model_id: int, name: str) -> dict[str, Any] | None:
    """Rating, 95% interval, rank and counted votes on the default leaderboard, plus the
    blind battles with a vote; None when no blind vote counts for the version."""
    table = leaderboard_cache(wb).get().table
    row = table[table["model"] == name]
    if row.empty or int(row["votes"].iloc[0]) == 0:
        return None
    r = row.iloc[0]
    with wb.engine.connect() as conn:
        battles = conn.execute(BLIND_BATTLES_SQL, {"m": model_id}).scalar_one()
    return {"rating": _number(r["rating"]), "lower": _number(r["lower"]), "upper": _number(r["upper"]),
            "rank": None if str(r["rank"]) == "<NA>" else int(r["rank"]), "votes": int(r["votes"]),
            "battles": int(battles)}


def version_view(wb: Workbench, model_id: int) -> dict[str, Any]:
    """Everything about a version: kind, parent, run, recipe, datasets (votes and voters for
    a votes dataset), losses, arena rating with its interval, size on disk, created time,
    tags, notes, deployments and lineage."""
    with wb.session() as s:
        view = version_record(s, model_id)
    view["rating"] = rating(wb, model_id, view["name"])
    return view


def flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts as dotted keys: {"a": {"b": 1}} → {"a.b": 1}."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def training_config(view: dict[str, Any]) -> dict[str, Any]:
    """What a version was trained with, flat: its run's recipe and stage and the exact YAML
    (empty for a version no run made)."""
    run = view.get("run")
    if run is None:
        return {}
    cfg = flatten({"recipe": run["recipe"], "stage": run["stage"], **run["config"]})
    return {k: v for k, v in cfg.items() if k not in DIFF_IGNORED}


def recipe_diff(a: dict[str, Any], b: dict[str, Any]) -> list[dict[str, Any]]:
    """The keys whose values differ (None where one side lacks the key), sorted by key."""
    return [{"key": k, "a": a.get(k), "b": b.get(k)} for k in sorted(a.keys() | b.keys())
            if a.get(k) != b.get(k) or (k in a) != (k in b)]


def head_to_head(wb: Workbench, a_id: int, b_id: int, include_named: bool = False,
                 include_flagged: bool = False) -> dict[str, Any]:
    """Votes on battles between exactly these two versions, from ``a``'s point of view,
    screened like the leaderboard (blind, unflagged votes by default): how many each won,
    ties, both bad, and how many each screening rule left out."""
    screen = VoteScreen(include_named=include_named, include_flagged=include_flagged)
    same_weights = weights_key(get_model(wb, a_id)) == weights_key(get_model(wb, b_id))
    pair = (Battle.model_a_id.in_((a_id, b_id))) & (Battle.model_b_id.in_((a_id, b_id)))
    with wb.session() as s:
        rows = s.exec(select(Vote.choice, Vote.flags, Battle.mode, Battle.model_a_id, Battle.model_b_id)
                      .join(Battle, Battle.id == Vote.battle_id).where(pair)).all()
    out: dict[str, Any] = {"a_wins": 0, "b_wins": 0, "ties": 0, "both_bad": 0, "votes": 0, "excluded": {}}
    for choice, flags, mode, side_a, side_b in rows:
        rule = screen.rule(side_a == side_b or same_weights, mode, flags or [], choice)
        if rule is not None:
            out["excluded"][rule] = out["excluded"].get(rule, 0) + 1
            continue
        out["votes"] += 1
        if choice in ("tie", "both_bad"):
            out["ties" if choice == "tie" else "both_bad"] += 1
        else:
            winner = side_a if choice == "a" else side_b
            out["a_wins" if winner == a_id else "b_wins"] += 1
    out["blind_only"] = not include_named
    return out


def compare_versions(wb: Workbench, a_id: int, b_id: int, include_named: bool = False) -> dict[str, Any]:
    """Two versions side by side: both views, the recipe diff over their flattened training
    configs, their metrics next to each other, and their head-to-head arena record."""
    get_model(wb, a_id)  # NotFound before anything else
    get_model(wb, b_id)
    if a_id == b_id:
        raise InvalidInput("pick two different versions to compare")
    a, b = version_view(wb, a_id), version_view(wb, b_id)

    def metrics(v: dict[str, Any]) -> dict[str, Any]:
        return {**v["losses"], "rating": (v["rating"] or {}).get("rating"), "size_bytes": v["size"]["bytes"]}

    ma, mb = metrics(a), metrics(b)
    return {"a": a, "b": b, "recipe_diff": recipe_diff(training_config(a), training_config(b)),
            "metrics": [{"key": k, "a": ma[k], "b": mb[k]} for k in METRICS],
            "head_to_head": head_to_head(wb, a_id, b_id, include_named=include_named)}
