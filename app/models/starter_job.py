"""The starter-model build as a job process: ``python -m app.models.starter_job OUT_DIR SPEC_JSON``.

It reports the warm-up through the job's progress file and writes the build summary
as the job's result; registering the model is the job kind's finish step.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from app.core.jobs import PROGRESS_ENV, RESULT_ENV
from app.core.progress_log import report
from app.models.starter_model import StarterSpec, build_starter_model


def main(argv: list[str]) -> int:
    out_dir, spec_json = Path(argv[0]), argv[1]
    spec = StarterSpec(**json.loads(spec_json))
    progress = os.environ.get(PROGRESS_ENV)
    started = time.monotonic()
    every = max(1, spec.pretrain_steps // 50)

    def on_step(step: int, steps: int, loss: float) -> None:
        if progress and (step % every == 0 or step == steps):
            report(progress, step, steps, started, loss=round(loss, 4))

    summary = build_starter_model(out_dir, spec, on_step=on_step)
    if result := os.environ.get(RESULT_ENV):
        Path(result).write_text(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
