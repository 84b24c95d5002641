"""Compare eval runs prompt by prompt (a prompts × runs matrix) and export it as CSV or JSONL."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.core.errors import InvalidInput
from app.evals.runs import get_run, run_json, run_results

if TYPE_CHECKING:
    from app.core.workbench import Workbench

MAX_COMPARE = 8
FORMATS = ("csv", "jsonl")


def compare_runs(wb: Workbench, run_ids: list[int]) -> dict[str, Any]:
    """``{"runs": [...], "rows": [{"prompt", "cells": [{"answer", "passed", ...} | None per run]}]}``.

    Rows are matched by prompt text, so runs of two versions of a suite line up where their
    prompts agree; a prompt one run lacks gets None in that run's cell. With several samples
    a cell shows the first answer and the share of samples that passed."""
    ids = list(dict.fromkeys(run_ids))
    if not ids:
        raise InvalidInput("give at least one eval run id (run_ids)")
    if len(ids) > MAX_COMPARE:
        raise InvalidInput(f"at most {MAX_COMPARE} runs side by side, got {len(ids)}")
    runs = [run_json(wb, get_run(wb, i)) for i in ids]  # 404 for any missing run first
    order: list[str] = []
    cells: dict[str, list[dict[str, Any] | None]] = {}
    for col, run_id in enumerate(ids):
        for r in run_results(wb, run_id):
            if r.prompt not in cells:
                order.append(r.prompt)
                cells[r.prompt] = [None] * len(ids)
            cell = cells[r.prompt][col]
            if cell is None:
                cells[r.prompt][col] = {"answer": r.answer, "passed": r.passed, "samples": 1,
                                        "passed_samples": int(r.passed), "checks": r.checks,
                                        "choice": r.choice}
            else:  # a later sample of the same prompt
                cell["samples"] += 1
                cell["passed_samples"] += int(r.passed)
                cell["passed"] = cell["passed_samples"] == cell["samples"]
    return {"runs": runs, "rows": [{"prompt": p, "cells": cells[p]} for p in order]}


def _label(run: dict[str, Any]) -> str:
    return f"run {run['id']} {run['model']}"


def export(wb: Workbench, run_ids: list[int], fmt: str) -> str:
    """The comparison as CSV (one row a prompt, answer and pass columns per run) or JSONL
    (one line a prompt × run cell, with every check's result)."""
    if fmt not in FORMATS:
        raise InvalidInput(f"format must be one of {', '.join(FORMATS)}; got {fmt!r}")
    matrix = compare_runs(wb, run_ids)
    runs = matrix["runs"]
    if fmt == "jsonl":
        lines = [json.dumps({"prompt": row["prompt"], "run_id": run["id"], "model": run["model"],
                             "suite": run["suite"], **(cell or {"answer": None, "passed": None})})
                 for row in matrix["rows"] for run, cell in zip(runs, row["cells"], strict=True)]
        return "".join(line + "\n" for line in lines)
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(["prompt", *[f"{_label(r)} {what}" for r in runs for what in ("answer", "passed")]])
    for row in matrix["rows"]:
        w.writerow([row["prompt"], *[v for cell in row["cells"] for v in
                                     ((cell["answer"], cell["passed"]) if cell else ("", ""))]])
    return out.getvalue()


def export_file(wb: Workbench, run_ids: list[int], fmt: str) -> Path:
    """The export written under the storage folder (for a download button)."""
    text = export(wb, run_ids, fmt)
    folder = wb.settings.jobs_dir / "eval-exports"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"eval-runs-{'-'.join(str(i) for i in dict.fromkeys(run_ids))}.{fmt}"
    path.write_text(text, encoding="utf-8")
    return path
