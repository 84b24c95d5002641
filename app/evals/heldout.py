"""Held-out eval suites: prompts taken aside before anything trains on them.

From the arena: battle prompts none of whose votes went into a vote snapshot yet; from then
on the votes on them stay out of every DPO/KTO snapshot (``app.arena.held_out``). From a
training set: rows split off into the suite, the rest registered as a new dataset version
to train on. Either way the sample is drawn with a seed, so it can be drawn again.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlmodel import select

from app.arena.held_out import first_prompt
from app.arena.judge import dataset_prompts
from app.core.errors import InvalidInput
from app.core.tables import BattleTurn, Dataset, EvalSuite, Vote
from app.data.datasets import get_dataset, read_rows, register_rows
from app.evals.suites import Sampling, SuiteRequest, save_suite

if TYPE_CHECKING:
    from app.core.workbench import Workbench

BATTLES_SOURCE = "battles:held-out"
SPLIT_KINDS = ("sft",)


def _save(wb: Workbench, name: str, prompts: list[str], checks: list[dict[str, Any]] | None,
          sampling: Sampling | None, source: str) -> EvalSuite:
    return save_suite(wb, SuiteRequest(name, list(prompts), list(checks or []), sampling or Sampling(),
                                       source=source))


def trained_vote_ids(wb: Workbench) -> set[int]:
    """Votes some vote snapshot (a DPO or KTO dataset) already used."""
    with wb.session() as s:
        snapshots = s.exec(select(Dataset).where(Dataset.source == "votes"))
        return {int(v) for d in snapshots for v in (d.meta or {}).get("vote_ids", [])}


def eligible_battle_prompts(wb: Workbench) -> list[str]:
    """Distinct first prompts of arena battles none of whose votes was used for training,
    sorted (so a seeded sample is repeatable)."""
    used = trained_vote_ids(wb)
    with wb.session() as s:
        turns = list(s.exec(select(BattleTurn).where(BattleTurn.turn == 0)))
        votes = list(s.exec(select(Vote.id, Vote.battle_id)))
    trained_battles = {battle for vote_id, battle in votes if vote_id in used}
    prompts: set[str] = set()
    trained: set[str] = set()
    for t in turns:
        prompt = first_prompt(t.messages)
        if prompt:
            (trained if t.battle_id in trained_battles else prompts).add(prompt)
    return sorted(prompts - trained)


def suite_from_battles(wb: Workbench, name: str, limit: int = 100, seed: int = 0,
                       checks: list[dict[str, Any]] | None = None,
                       sampling: Sampling | None = None) -> EvalSuite:
    """A suite of up to ``limit`` battle prompts never trained on, drawn with ``seed``;
    votes on them are kept out of vote snapshots from now on."""
    if limit < 1:
        raise InvalidInput("take at least one prompt")
    pool = eligible_battle_prompts(wb)
    if not pool:
        raise InvalidInput("no arena prompt is free to hold out: every battle prompt is in a vote snapshot "
                           "already, or there are no battles yet")
    picked = random.Random(seed).sample(pool, min(limit, len(pool)))
    return _save(wb, name, picked, checks, sampling, BATTLES_SOURCE)


def suite_from_dataset_split(wb: Workbench, dataset_id: int, name: str, count: int, seed: int = 0,
                             checks: list[dict[str, Any]] | None = None,
                             sampling: Sampling | None = None) -> tuple[EvalSuite, Dataset]:
    """Split ``count`` rows (drawn with ``seed``) off an SFT dataset into a suite of their
    prompts, and register the remaining rows as a new dataset version to train on."""
    ds = get_dataset(wb, dataset_id)
    if ds.kind not in SPLIT_KINDS:
        raise InvalidInput(f"dataset {ds.name!r} is a {ds.kind} dataset: hold out rows of an SFT dataset")
    rows = read_rows(Path(ds.path))
    if not 1 <= count < len(rows):
        raise InvalidInput(f"hold out between 1 and {len(rows) - 1} of the {len(rows)} rows of {ds.name!r}")
    prompts = dataset_prompts(wb, dataset_id)
    chosen = set(random.Random(seed).sample(range(len(rows)), count))
    held = [prompts[i] for i in sorted(chosen)]
    held_set = {p.strip() for p in held}
    # A row whose prompt repeats a held-out one would train on it after all: it goes too.
    kept = [r for i, r in enumerate(rows) if i not in chosen and prompts[i].strip() not in held_set]
    if not kept:
        raise InvalidInput(f"holding out those prompts leaves no row of {ds.name!r} to train on")
    suite = _save(wb, name, held, checks, sampling, f"dataset:{ds.id}:held-out")
    meta = {"parent_id": ds.id, "parent_name": ds.name,
            "held_out": {"suite_id": suite.id, "rows": len(rows) - len(kept)}}
    try:
        train = register_rows(wb, _free_name(wb, f"{ds.name[:50]}-train"), ds.kind, kept, fmt=ds.format,
                              source=ds.source, meta=meta)
    except BaseException:
        with wb.write_lock, wb.session() as s:  # no suite without the dataset it was split from
            s.delete(s.get(EvalSuite, suite.id))
            s.commit()
        raise
    return suite, train


def _free_name(wb: Workbench, base: str) -> str:
    with wb.session() as s:
        taken = {n.lower() for n in s.exec(select(Dataset.name))}
    for n in range(1, 1000):
        name = base if n == 1 else f"{base}-{n}"
        if name.lower() not in taken:
            return name
    raise InvalidInput(f"no free name for the training part of {base!r}")
