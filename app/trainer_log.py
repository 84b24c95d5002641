"""Incremental reader for LLaMA-Factory's ``trainer_log.jsonl``.

It keeps a byte offset so each poll reads only what was appended, and holds back
a trailing partial line until the writer finishes it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TRAINER_LOG = "trainer_log.jsonl"


@dataclass
class TrainerLogTail:
    path: Path
    offset: int = 0
    records: list[dict[str, Any]] = field(default_factory=list)

    def poll(self) -> list[dict[str, Any]]:
        """Read new complete lines; return the records they hold."""
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                chunk = f.read()
        except FileNotFoundError:
            return []
        if not chunk:
            return []
        end = chunk.rfind(b"\n") + 1  # only whole lines
        new = []
        for line in chunk[:end].splitlines():
            if line.strip():
                try:
                    new.append(json.loads(line))
                except json.JSONDecodeError:
                    continue  # a torn line from a crashed writer; skip it
        self.offset += end
        self.records.extend(new)
        return new

    @property
    def last(self) -> dict[str, Any] | None:
        return self.records[-1] if self.records else None


def summarise(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Final metrics from a finished (or stopped) run's log records."""
    out: dict[str, Any] = {}
    losses = [r["loss"] for r in records if "loss" in r]
    if losses:
        out["first_loss"] = losses[0]
        out["final_loss"] = losses[-1]
    for key in ("eval_loss", "accuracy"):
        vals = [r[key] for r in records if key in r]
        if vals:
            out[f"final_{key}"] = vals[-1]
    if records:
        out["steps"] = records[-1].get("current_steps")
        out["total_steps"] = records[-1].get("total_steps")
    return out
