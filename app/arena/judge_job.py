"""The judge job's process: ``python -m app.arena.judge_job PLAN_JSON``.

Answers and (when the plan names a judge) judges each planned prompt with its own engines (no
database access), rewriting result.json after every pair so a cancelled job still hands over the
pairs it finished; the job's finish step stores them (``judge.finish_judge``).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from app.arena.judge import KEYS_ENV, judge_item
from app.core.job_models import exit_job, load_plan_models, write_json_atomic
from app.core.jobs import PROGRESS_ENV, RESULT_ENV
from app.core.progress_log import report
from app.inference.chat_engines import job_engines
from app.inference.generation import GenSettings


def main(argv: list[str]) -> int:
    plan = json.loads(Path(argv[0]).read_text())
    models = load_plan_models(plan["models"], KEYS_ENV)
    gens = tuple(GenSettings(**g) for g in plan["gens"])
    progress, result_path = os.environ.get(PROGRESS_ENV), os.environ.get(RESULT_ENV)
    cache, items, started = job_engines(), [], time.monotonic()
    prompts = plan["prompts"]
    verb = "judged" if "judge" in models else "answered"
    try:
        for i, prompt in enumerate(prompts, 1):
            items.append(judge_item(cache, models["a"], models["b"], models.get("judge"), prompt, gens))
            write_json_atomic(result_path, {"items": items})
            if progress:
                report(progress, i, len(prompts), started, status=f"{verb} {i} of {len(prompts)}")
    finally:
        cache.close()
    return 0


if __name__ == "__main__":
    exit_job(main(sys.argv[1:]))
