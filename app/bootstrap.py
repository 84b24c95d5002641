"""Assemble a workbench with every job kind registered: the one place that knows them all.

`launch.py`, the benchmarks and the tests open their workbench here.
"""

from __future__ import annotations

from app.arena.judge import JUDGE_KIND
from app.core.jobs import JobKind
from app.core.settings import Settings
from app.core.workbench import Workbench
from app.data.quality_jobs import CLEAN_KIND, QUALITY_KIND
from app.datagen.self_instruct_jobs import SELFINSTRUCT_KIND
from app.evals.auto_eval import TRAIN_WITH_EVALS_KIND
from app.evals.reference import REFERENCE_KIND
from app.evals.runs import EVAL_KIND
from app.models.deploy import DEPLOY_KIND
from app.models.export import GGUF_KIND, MERGE_KIND
from app.models.hub import HUB_PULL_KIND, HUB_PUSH_KIND
from app.models.registry import STARTER_KIND

# Training is registered with its follow-up evals and gate (the train layer sits below evals).
JOB_KINDS: tuple[JobKind, ...] = (TRAIN_WITH_EVALS_KIND, STARTER_KIND, MERGE_KIND, GGUF_KIND,
                                  DEPLOY_KIND, HUB_PUSH_KIND, HUB_PULL_KIND, JUDGE_KIND,
                                  SELFINSTRUCT_KIND, QUALITY_KIND, CLEAN_KIND, EVAL_KIND,
                                  REFERENCE_KIND)


def open_workbench(settings: Settings, start_jobs: bool = True) -> Workbench:
    return Workbench(settings, kinds=JOB_KINDS, start_jobs=start_jobs)
