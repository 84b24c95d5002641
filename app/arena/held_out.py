"""Prompts held out for evaluation are never trained on: the votes on them stay out of DPO
and KTO snapshots.

A held-out suite (``app.evals.heldout``) keeps its prompts in the ``eval_suites`` table
with a source ending in ``held-out``; this layer only reads them, so the arena needs
nothing from the evals package.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from sqlalchemy import text

if TYPE_CHECKING:
    from app.core.workbench import Workbench

HELD_OUT_SQL = text("SELECT prompts FROM eval_suites WHERE source LIKE '%held-out'")


def first_prompt(messages: list[dict[str, Any]]) -> str:
    """The conversation's first user message, stripped: what a battle was about."""
    for m in messages or []:
        if m.get("role") == "user":
            return str(m.get("content") or "").strip()
    return ""


def held_out_prompts(wb: Workbench) -> set[str]:
    """Every prompt of every held-out suite version."""
    with wb.engine.connect() as conn:
        rows = conn.execute(HELD_OUT_SQL).all()
    out: set[str] = set()
    for (prompts,) in rows:
        items = json.loads(prompts) if isinstance(prompts, str) else prompts
        out.update(str(p.get("prompt", "")).strip() for p in items or [])
    return out
