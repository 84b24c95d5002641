"""Votes → training data: DPO pairs (LLaMA-Factory sharegpt ranking), KTO examples and
TRL's conversational preference JSONL. Snapshots are immutable and content-hashed."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlmodel import select

from app.datasets import register_rows
from app.errors import InvalidInput
from app.tables import Battle, BattleTurn, Dataset, ModelVersion, Vote
from app.workbench import Workbench


@dataclass
class VoteFilter:
    since: datetime | None = None
    until: datetime | None = None
    # Only battles where both models are among these ids (None: all models).
    model_ids: list[int] | None = None
    # Only models with at least this many valid votes in total.
    min_votes: int = 0
    include_flagged: bool = False


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


def _naive(ts: datetime | None) -> datetime | None:
    return None if ts is None else ts.replace(tzinfo=None)


def select_votes(wb: Workbench, flt: VoteFilter | None = None) -> list[VoteRow]:
    """Votes joined to the turn they judge, after the filter, oldest first."""
    flt = flt or VoteFilter()
    q = (select(Vote.id, Vote.choice, Vote.flags, Vote.created_at, BattleTurn.messages,
                BattleTurn.answer_a, BattleTurn.answer_b, Battle.model_a_id, Battle.model_b_id)
         .join(BattleTurn, (BattleTurn.battle_id == Vote.battle_id) & (BattleTurn.turn == Vote.turn))
         .join(Battle, Battle.id == Vote.battle_id)
         .order_by(Vote.id))
    with wb.session() as s:
        raw = s.exec(q).all()
    since, until = _naive(flt.since), _naive(flt.until)
    allowed = set(flt.model_ids) if flt.model_ids else None
    rows = []
    for vid, choice, flags, at, messages, a_text, b_text, a, b in raw:
        if flags and not flt.include_flagged:
            continue
        at = _naive(at)
        if (since and at < since) or (until and at > until):
            continue
        if allowed is not None and not (a in allowed and b in allowed):
            continue
        rows.append(VoteRow(vid, choice, flags or [], messages, a_text, b_text, a, b))
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
        key = json.dumps([v.messages, chosen, rejected], sort_keys=True)
        if key in seen:
            continue
        seen.add(key)
        rows.append({"messages": v.messages, "chosen": _assistant(chosen), "rejected": _assistant(rejected)})
        vote_ids.append(v.vote_id)
    return rows, vote_ids


def kto_rows(wb: Workbench, flt: VoteFilter | None = None) -> tuple[list[dict], list[int]]:
    """Single answers labelled good or bad: a decisive vote gives one of each, a
    both-bad vote two negatives."""
    rows, vote_ids, seen = [], [], set()
    for v in select_votes(wb, flt):
        labelled: list[tuple[str, bool]] = []
        if v.choice in ("a", "b"):
            good, bad = (v.answer_a, v.answer_b) if v.choice == "a" else (v.answer_b, v.answer_a)
            labelled = [(good, True), (bad, False)]
        elif v.choice == "both_bad":
            labelled = [(v.answer_a, False), (v.answer_b, False)]
        used = False
        for text, label in labelled:
            key = json.dumps([v.messages, text, label], sort_keys=True)
            if not text.strip() or key in seen:
                continue
            seen.add(key)
            rows.append({"messages": v.messages + [_assistant(text)], "label": label})
            used = True
        if used:
            vote_ids.append(v.vote_id)
    return rows, vote_ids


def _content_hash(rows: list[dict]) -> str:
    body = "".join(json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n" for r in rows)
    return hashlib.sha256(body.encode()).hexdigest()


def _snapshot(wb: Workbench, kind: str, fmt: str, rows: list[dict], vote_ids: list[int],
              name: str | None, flt: VoteFilter | None) -> Dataset:
    if not rows:
        what = "a vote for A or for B" if kind == "dpo" else "a vote"
        raise InvalidInput(f"no usable votes match: a {kind.upper()} example needs {what}")
    digest = _content_hash(rows)
    with wb.session() as s:
        for ds in s.exec(select(Dataset).where(Dataset.source == "votes", Dataset.kind == kind)):
            if ds.meta.get("content_sha256") == digest:
                return ds  # the same votes were snapshotted already: snapshots are immutable
    flt = flt or VoteFilter()
    meta = {
        "vote_ids": vote_ids,
        "content_sha256": digest,
        "filter": {"since": flt.since.isoformat() if flt.since else None,
                   "until": flt.until.isoformat() if flt.until else None,
                   "model_ids": flt.model_ids, "min_votes": flt.min_votes,
                   "include_flagged": flt.include_flagged},
    }
    return register_rows(wb, name or f"votes-{kind}-{digest[:8]}", kind, rows, fmt=fmt,
                         source="votes", meta=meta)


def build_dpo_dataset(wb: Workbench, name: str | None = None, flt: VoteFilter | None = None) -> Dataset:
    """Snapshot the matching votes as a registered DPO dataset that lists its votes."""
    rows, vote_ids = preference_rows(wb, flt)
    return _snapshot(wb, "dpo", "preference", rows, vote_ids, name, flt)


def build_kto_dataset(wb: Workbench, name: str | None = None, flt: VoteFilter | None = None) -> Dataset:
    rows, vote_ids = kto_rows(wb, flt)
    return _snapshot(wb, "kto", "kto", rows, vote_ids, name, flt)


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
    all_votes = select_votes(wb, VoteFilter(include_flagged=True))
    pairs, _ = preference_rows(wb)
    return {"votes": len(all_votes), "flagged": sum(1 for v in all_votes if v.flags),
            "dpo_pairs": len(pairs)}


def suggest_dpo_training(wb: Workbench, dataset_id: int, model_id: int | None = None) -> dict[str, Any]:
    """Pre-fill for "Train DPO on these votes": base = the chosen model, else the current
    leader, else the newest local model."""
    from app.leaderboard import leader

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
    return {"recipe": "dpo_lora", "model_id": model_id, "dataset_ids": [dataset_id]}
