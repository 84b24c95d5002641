"""Job progress as JSON lines in LLaMA-Factory's ``trainer_log.jsonl`` format
(``current_steps, total_steps, percentage, elapsed_time, remaining_time`` and metrics).

Trainers write it themselves; Python jobs write it with `report`. `ProgressTail` keeps a
byte offset so each poll reads only what was appended, and holds back a trailing
partial line until the writer finishes it.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TRAINER_LOG = "trainer_log.jsonl"


@dataclass
class ProgressTail:
    path: Path | None
    offset: int = 0
    records: list[dict[str, Any]] = field(default_factory=list)

    def poll(self) -> list[dict[str, Any]]:
        """Read new complete lines; return the records they hold."""
        if self.path is None:
            return []
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


def log_tail(path: Path, lines: int = 20) -> str:
    """The last ``lines`` lines of a log file, read from its end."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 16384))
            data = f.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""
    # tqdm redraws with carriage returns; keep the last state of each line.
    cleaned = [ln.split("\r")[-1] for ln in data.splitlines()]
    return "\n".join(cleaned[-lines:])


def _clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def report(path: Path | str, current: int, total: int, started: float, **metrics) -> None:
    """Append one progress record (for Python jobs; ``started`` is a time.monotonic())."""
    elapsed = time.monotonic() - started
    remaining = elapsed / current * (total - current) if current else 0.0
    record = {"current_steps": current, "total_steps": total,
              "percentage": round(100.0 * current / total, 2) if total else 100.0,
              "elapsed_time": _clock(elapsed), "remaining_time": _clock(remaining), **metrics}
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
