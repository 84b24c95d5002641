"""Votes → training data: DPO pairs (LLaMA-Factory sharegpt ranking), KTO examples and
TRL's conversational preference JSONL. Snapshots are immutable and content-hashed."""

from __future__ import annotations

import gc
import json
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import text
from sqlmodel import select

from app.arena.held_out import first_prompt, held_out_prompts
from app.core.errors import InvalidInput
from app.core.tables import Dataset, ModelVersion
from app.data.datasets import prepare_rows, register_rows

if TYPE_CHECKING:
    from app.core.workbench import Workbench


@dataclass
class VoteFilter:
    since: datetime | None = None
    until: datetime | None = None  # exclusive
    # Only battles where both models are among these ids (None: all models).
    model_ids: list[int] | None = None
    # Only models with at least this many valid votes in total.
    min_votes: int = 0
    include_flagged: bool = False
    # Votes on prompts a held-out eval suite reserved are kept out unless asked.
    include_held_out: bool = False


@dataclass
class VoteRow:
    vote_id: int
    choice: str
    flags: list[str]
    messages: list[dict[str, str]]
    answer_a: str
    answer_b: str
    model_a: int
    model_b: int
    extra: dict[str, Any] = field(default_factory=dict)


def _utc_naive(ts: datetime | str | None) -> datetime | None:
    """Compare times in UTC without tzinfo (SQLite hands stored times back as text)."""
    if ts is None:
        return None
    if isinstance(ts, str):
        ts = datetime.fromisoformat(ts)
    return ts.astimezone(UTC).replace(tzinfo=None) if ts.tzinfo else ts


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


# Plain SQL: 100k votes come back as tuples without ORM or type-processing overhead.
VOTES_SQL = text(
    "SELECT v.id, v.choice, v.flags, v.created_at, t.messages, t.answer_a, t.answer_b, "
    "b.model_a_id, b.model_b_id FROM votes v "
    "JOIN battle_turns t ON t.battle_id = v.battle_id AND t.turn = v.turn "
    "JOIN battles b ON b.id = v.battle_id ORDER BY v.id"
)


@contextmanager
def _gc_paused():
    """Building 100k rows creates millions of small objects; pausing the cyclic GC
    (nothing here makes cycles) saves about a third of the time."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def select_votes(wb: Workbench, flt: VoteFilter | None = None) -> list[VoteRow]:
    """Votes joined to the turn they judge, after the filter, oldest first. ``until`` is
    exclusive; ``messages`` keeps the stored JSON text in ``extra["messages_json"]``."""
    flt = flt or VoteFilter()
    with wb.engine.connect() as conn:
        raw = conn.execute(VOTES_SQL).all()
    since, until = _utc_naive(flt.since), _utc_naive(flt.until)
    allowed = set(flt.model_ids) if flt.model_ids else None
    held = set() if flt.include_held_out else held_out_prompts(wb)
    rows = []
    for vid, choice, flags, at, messages, a_text, b_text, a, b in raw:
        flags = _json(flags) or []
        if flags and not flt.include_flagged:
            continue
        if since or until:
            at = _utc_naive(at)
            if (since and at < since) or (until and at >= until):
                continue
        if allowed is not None and not (a in allowed and b in allowed):
            continue
        parsed = _json(messages)
        if held and first_prompt(parsed) in held:
            continue
        msg_json = messages if isinstance(messages, str) else json.dumps(messages)
        rows.append(VoteRow(vid, choice, flags, parsed, a_text, b_text, a, b, {"messages_json": msg_json}))
    if flt.min_votes > 0:
        per_model: dict[int, int] = {}
        for r in rows:
            per_model[r.model_a] = per_model.get(r.model_a, 0) + 1
            per_model[r.model_b] = per_model.get(r.model_b, 0) + 1
        rows = [r for r in rows if min(per_model[r.model_a], per_model[r.model_b]) >= flt.min_votes]
    return rows


def _assistant(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}


def preference_rows(wb: Workbench, flt: VoteFilter | None = None) -> tuple[list[dict], list[int]]:
    """One chosen/rejected row per decisive vote, deduplicated; ties and both-bad skipped."""
    rows, vote_ids, seen = [], [], set()
    for v in select_votes(wb, flt):
        if v.choice not in ("a", "b"):
            continue
        chosen, rejected = (v.answer_a, v.answer_b) if v.choice == "a" else (v.answer_b, v.answer_a)
        if not chosen.strip() or not rejected.strip() or chosen.strip() == rejected.strip():
            continue
        key = (v.extra["messages_json"], chosen, rejected)
        if key in seen:
            continue
        seen.add(key)
        rows.append({"messages": v.messages, "chosen": _assistant(chosen), "rejected": _assistant(rejected)})
        vote_ids.append(v.vote_id)
    return rows, vote_ids


TIES = ("skip", "good")


def kto_rows(wb: Workbench, flt: VoteFilter | None = None, ties: str = "skip"
             ) -> tuple[list[dict], list[int]]:
    """Single answers labelled good or bad: a decisive vote gives one of each, a
    both-bad vote two negatives, and with ``ties="good"`` a tie two positives (both
    answers were acceptable), so every vote teaches something."""
    if ties not in TIES:
        raise InvalidInput(f"ties must be one of {', '.join(TIES)}, got {ties!r}")
    rows, vote_ids, seen = [], [], set()
    for v in select_votes(wb, flt):
        labelled: list[tuple[str, bool]] = []
        if v.choice in ("a", "b"):
            good, bad = (v.answer_a, v.answer_b) if v.choice == "a" else (v.answer_b, v.answer_a)
            labelled = [(good, True), (bad, False)]
        elif v.choice == "both_bad":
            labelled = [(v.answer_a, False), (v.answer_b, False)]
        elif v.choice == "tie" and ties == "good":
            labelled = [(v.answer_a, True), (v.answer_b, True)]
        used = False
        for answer, label in labelled:
            key = (v.extra["messages_json"], answer, label)
            if not answer.strip() or key in seen:
                continue
            seen.add(key)
            rows.append({"messages": v.messages + [_assistant(answer)], "label": label})
            used = True
        if used:
            vote_ids.append(v.vote_id)
    return rows, vote_ids


def _snapshot(wb: Workbench, kind: str, fmt: str, rows: list[dict], vote_ids: list[int],
              name: str | None, flt: VoteFilter | None) -> Dataset:
    if not rows:
        what = "a vote for A or for B" if kind == "dpo" else "a vote"
        raise InvalidInput(f"no usable votes match: a {kind.upper()} example needs {what}")
    prepared = prepare_rows(kind, rows, fmt)
    with wb.session() as s:
        q = select(Dataset).where(Dataset.sha256 == prepared.sha256, Dataset.source == "votes",
                                  Dataset.kind == kind)
        existing = s.exec(q).first()
    if existing is not None:
        return existing  # the same votes were snapshotted already: snapshots are immutable
    flt = flt or VoteFilter()
    meta = {
        "vote_ids": vote_ids,
        "filter": {"since": flt.since.isoformat() if flt.since else None,
                   "until": flt.until.isoformat() if flt.until else None,
                   "model_ids": flt.model_ids, "min_votes": flt.min_votes,
                   "include_flagged": flt.include_flagged, "include_held_out": flt.include_held_out},
    }
    return register_rows(wb, name or f"votes-{kind}-{prepared.sha256[:8]}", kind, prepared,
                         source="votes", meta=meta)


def build_dpo_dataset(wb: Workbench, name: str | None = None, flt: VoteFilter | None = None) -> Dataset:
    """Snapshot the matching votes as a registered DPO dataset that lists its votes."""
    with _gc_paused():
        rows, vote_ids = preference_rows(wb, flt)
        return _snapshot(wb, "dpo", "preference", rows, vote_ids, name, flt)


def build_kto_dataset(wb: Workbench, name: str | None = None, flt: VoteFilter | None = None,
                      ties: str = "skip") -> Dataset:
    """Snapshot the matching votes as KTO examples; ``ties="good"`` uses every vote."""
    with _gc_paused():
        rows, vote_ids = kto_rows(wb, flt, ties)
        return _snapshot(wb, "kto", "kto", rows, vote_ids, name, flt)


def vote_usage(wb: Workbench, flt: VoteFilter | None = None) -> dict[str, Any]:
    """How many of the matching votes each kind of training data would use: DPO takes
    only decisive votes, KTO adds both-bad ones, "every vote" (KTO with ties as good) all;
    ``held_out`` counts the votes on held-out eval prompts, which none uses."""
    flt = flt or VoteFilter()
    with _gc_paused():
        total = len(select_votes(wb, flt))
        every = total if flt.include_held_out else len(select_votes(wb, replace(flt, include_held_out=True)))
        reserved = every - total
        options = {"dpo": preference_rows(wb, flt), "kto": kto_rows(wb, flt),
                   "every_vote": kto_rows(wb, flt, ties="good")}
    return {"votes": total, "held_out": reserved, **{
        key: {"examples": len(rows), "votes_used": len(ids),
              "fraction": round(len(ids) / total, 4) if total else 0.0}
        for key, (rows, ids) in options.items()}}


def export_trl_jsonl(wb: Workbench, path: Path, flt: VoteFilter | None = None) -> int:
    """Write TRL's conversational preference format (prompt/chosen/rejected message lists)."""
    rows, _ = preference_rows(wb, flt)
    path = Path(path)
    with path.open("w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps({"prompt": r["messages"], "chosen": [r["chosen"]],
                                "rejected": [r["rejected"]]}, ensure_ascii=False) + "\n")
    return len(rows)


def live_counts(wb: Workbench) -> dict[str, int]:
    """How the live preference data stands: every vote, the flagged ones, usable pairs."""
    all_votes = select_votes(wb, VoteFilter(include_flagged=True, include_held_out=True))
    pairs, _ = preference_rows(wb)
    return {"votes": len(all_votes), "flagged": sum(1 for v in all_votes if v.flags),
            "dpo_pairs": len(pairs)}


def suggest_vote_training(wb: Workbench, dataset_id: int, model_id: int | None = None) -> dict[str, Any]:
    """Pre-fill for "Train on these votes": the DPO or KTO LoRA recipe (by the dataset's
    kind); base = the chosen model, else the current leader, else the newest local model.
    The Train side sizes the schedule (``app.train.schedule``)."""
    from app.arena.leaderboard import leader
    from app.data.datasets import get_dataset

    ds = get_dataset(wb, dataset_id)
    if ds.kind not in ("dpo", "kto"):
        raise InvalidInput(f"dataset {ds.name!r} is {ds.kind} data; votes train with DPO or KTO")
    if model_id is None:
        best = leader(wb)
        if best is None:
            with wb.session() as s:
                local = s.exec(select(ModelVersion).where(ModelVersion.kind.in_(("base", "adapter", "full")))
                               .order_by(ModelVersion.id.desc())).first()
            if local is None:
                raise InvalidInput("no local model to train: register or create one first")
            best = local
        model_id = best.id
    return {"recipe": f"{ds.kind}_lora", "model_id": model_id, "dataset_ids": [dataset_id]}
