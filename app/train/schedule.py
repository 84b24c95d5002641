"""Enough optimizer steps for small preference sets.

Recipe defaults are tuned for thousands of rows. A round of arena votes gives tens of
pairs: at batch 2 × accumulation 4 and 2 epochs, 58 pairs make about 14 optimizer
steps, and with warm-up and a cosine decay DPO's loss barely leaves ln 2 — the model
does not change. Trying it by hand, about 30 steps were the least that moved the
behaviour; so a DPO or KTO run on a small set gets more epochs (up to a cap) and then a
smaller gradient accumulation, until it has at least that many, and says why.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from app.core.workbench import Workbench

MIN_PREFERENCE_STEPS = 30
MAX_EPOCHS = 10
PREFERENCE_STAGES = ("dpo", "kto")


def steps_per_epoch(rows: int, batch: int, accumulation: int) -> int:
    """Optimizer steps in one epoch, as the Hugging Face Trainer counts them (whole
    accumulation groups of batches, at least one)."""
    return max(math.ceil(rows / batch) // accumulation, 1)


def size_schedule(stage: str, rows: int, settings: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """Overrides (maybe none) that give a ``stage`` run on ``rows`` examples at least
    MIN_PREFERENCE_STEPS optimizer steps, and the reason in words. ``settings``: the
    recipe's defaults with any overrides already chosen."""
    batch = int(settings.get("per_device_train_batch_size", 1))
    accumulation = int(settings.get("gradient_accumulation_steps", 1))
    epochs = float(settings.get("num_train_epochs", 1))
    steps = math.ceil(steps_per_epoch(rows, batch, accumulation) * epochs)
    plain = f"{rows} examples at batch {batch} × accumulation {accumulation} for {epochs:g} epochs"
    if stage not in PREFERENCE_STAGES or rows <= 0:
        return {}, f"{plain}: {steps} optimizer steps"
    if steps >= MIN_PREFERENCE_STEPS:
        return {}, f"{plain}: {steps} optimizer steps, enough to learn from (at least {MIN_PREFERENCE_STEPS})"
    new_epochs = epochs
    for acc in range(accumulation, 0, -1):
        per_epoch = steps_per_epoch(rows, batch, acc)
        new_epochs = max(epochs, min(MAX_EPOCHS, math.ceil(MIN_PREFERENCE_STEPS / per_epoch)))
        if per_epoch * new_epochs >= MIN_PREFERENCE_STEPS:
            break
    new_steps = math.ceil(per_epoch * new_epochs)
    overrides: dict[str, Any] = {"num_train_epochs": new_epochs}
    if acc != accumulation:
        overrides["gradient_accumulation_steps"] = acc
    reason = (f"{plain} would be only {steps} optimizer steps, too few for {stage.upper()} to move "
              f"the model; so {new_epochs:g} epochs"
              + (f" at accumulation {acc}" if acc != accumulation else "")
              + f": {new_steps} steps" + ("" if new_steps >= MIN_PREFERENCE_STEPS else
                                          f" (as many as {rows} examples allow)"))
    return overrides, reason


def with_schedule(wb: Workbench, request: dict[str, Any]) -> dict[str, Any]:
    """A training request (recipe, model, datasets, maybe overrides) with its schedule
    sized for the rows it will train on, plus ``schedule``: the steps and the reason."""
    from app.data.datasets import get_dataset
    from app.train.training import get_recipe

    recipe = get_recipe(request["recipe"])
    rows = sum(get_dataset(wb, i).num_rows for i in request["dataset_ids"])
    chosen = dict(request.get("overrides") or {})
    extra, reason = size_schedule(recipe.stage, rows, {**recipe.defaults, **chosen})
    return {**request, "overrides": {**chosen, **extra}, "schedule": {"rows": rows, "reason": reason}}
