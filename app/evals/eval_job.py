"""The eval job's process: ``python -m app.evals.eval_job PLAN_JSON``.

Answers every suite prompt with its own engines (no database access) and applies the
checks, reporting progress after each prompt; result.json is written once, at the end: the
job's finish step (``runs.finish_eval``) stores the records only if the whole run succeeded,
so a partial file would serve nobody.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from app.core.job_models import exit_job, load_plan_models, write_json_atomic
from app.core.jobs import PROGRESS_ENV, RESULT_ENV
from app.core.progress_log import report
from app.evals.runs import KEYS_ENV, eval_prompt
from app.inference.chat_engines import job_engines


def main(argv: list[str]) -> int:
    plan = json.loads(Path(argv[0]).read_text())
    models = load_plan_models(plan["models"], KEYS_ENV)
    suite = plan["suite"]
    progress, result_path = os.environ.get(PROGRESS_ENV), os.environ.get(RESULT_ENV)
    cache, records, started = job_engines(), [], time.monotonic()
    total = len(suite["prompts"])
    try:
        for i, item in enumerate(suite["prompts"]):
            records += eval_prompt(cache, models, i, item, suite["checks"], suite["sampling"])
            if progress:
                report(progress, i + 1, total, started, status=f"answered {i + 1} of {total} prompts")
    finally:
        cache.close()
    write_json_atomic(result_path, {"records": records})
    return 0


if __name__ == "__main__":
    exit_job(main(sys.argv[1:]))
