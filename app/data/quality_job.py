"""The quality job's process: ``python -m app.data.quality_job PLAN_JSON``.

Reads the dataset file and (if the plan names one) the tokenizer, runs the same analysis as
``quality.quality_report`` / ``quality.clean_dataset`` without opening the database, and
writes result.json: the report itself, or for a clean-up the counts (the rows go to
rows.jsonl beside it, for the finish step to register). Each stage is a progress record
and a log line.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from app.core.jobs import PROGRESS_ENV, RESULT_ENV
from app.core.progress_log import report
from app.data import quality

REPORT_STAGES = ("reading", "near-duplicates", "tokens", "language", "PII", "done")
CLEAN_STAGES = ("reading", "near-duplicates", "tokens", "PII", "writing", "done")


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data), encoding="utf-8")
    tmp.replace(path)  # atomic: the finish step never reads half a file


class Stages:
    """Progress by stage: one record and one log line as each starts."""

    def __init__(self, names: tuple[str, ...], progress: str | None) -> None:
        self.names, self.progress, self.started = names, progress, time.monotonic()

    def __call__(self, name: str) -> None:
        i = self.names.index(name)
        print(f"[{time.monotonic() - self.started:7.1f}s] {name}", flush=True)
        if self.progress:
            report(self.progress, i, len(self.names) - 1, self.started, status=name)


def main(argv: list[str]) -> int:
    plan = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    folder = Path(argv[0]).parent
    result_path = Path(os.environ.get(RESULT_ENV) or folder / "result.json")
    mode, ds, opts = plan["mode"], plan["dataset"], plan["options"]
    stage = Stages(REPORT_STAGES if mode == "quality" else CLEAN_STAGES, os.environ.get(PROGRESS_ENV))
    stage("reading")
    with open(ds["path"], encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    print(f"{len(rows)} rows of {ds['name']!r}", flush=True)
    tok = quality.load_tokenizer(plan["tokenizer"]) if plan["tokenizer"] else None
    if mode == "quality":
        texts = [quality.row_text(r) for r in rows]
        found = quality.analyse(texts, opts["threshold"], tok, opts["max_tokens"], stage=stage)
        stage("done")
        _write_json(result_path, {"dataset_id": ds["id"], "name": ds["name"], "model_id": plan["model_id"],
                                  **found})
        return 0
    kept, dropped = quality.clean_rows(rows, tok, opts["dedup_exact"], opts["dedup_near"], opts["pii_action"],
                                       opts["drop_empty"], opts["max_tokens"], opts["threshold"], stage=stage)
    print("left out or changed: " + (", ".join(f"{k} {v}" for k, v in dropped.items()) or "nothing"),
          flush=True)
    if not kept:
        print(f"ERROR: {quality.nothing_left(ds['name'], dropped)}", flush=True)
        return 2
    stage("writing")
    body = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept)
    tmp = folder / "rows.tmp"
    tmp.write_text(body, encoding="utf-8")
    tmp.replace(folder / "rows.jsonl")
    stage("done")
    _write_json(result_path, {"rows": len(kept), "dropped": dict(dropped)})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
