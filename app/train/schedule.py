"""Enough optimizer steps for small preference sets.

Recipe defaults are tuned for thousands of rows. A round of arena votes gives tens of
pairs: at batch 2 × accumulation 4 and 2 epochs, 63 pairs make 16 optimizer steps, and
DPO's loss barely leaves ln 2 — the model does not change. Measured on the loop round
(bench/loop.py): 32 steps left the loss at 0.63 and the oracle's pass rate at 0.60 → 0.64;
96 steps brought the loss to 0.33 and the rate to 0.92. So a DPO or KTO run on a small set
gets more epochs (up to a cap), then a smaller gradient accumulation, until it has at
least MIN_PREFERENCE_STEPS, and says why. Large sets keep the recipe.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from app.core.workbench import Workbench

MIN_PREFERENCE_STEPS = 100
MAX_EPOCHS = 15
PREFERENCE_STAGES = ("dpo", "kto")
# The recipes' LoRA learning rates are the usual ones for 7B-class models (hidden size
# 4096). Adam's useful step shrinks with width, so a narrower model gets a larger rate:
# scaled by sqrt(4096 / hidden size), at most 10× (a 0.5B model with hidden size 896: ×2.1).
REFERENCE_WIDTH = 4096
MAX_LR_SCALE = 10.0


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


def lora_lr_scale(hidden_size: int) -> float:
    return min(MAX_LR_SCALE, max(1.0, math.sqrt(REFERENCE_WIDTH / hidden_size)))


def scale_learning_rate(stage: str, finetuning_type: str, settings: dict[str, Any], model_dir: str | None
                        ) -> tuple[dict[str, Any], str]:
    """A larger LoRA learning rate for a narrow model's preference run (see REFERENCE_WIDTH),
    and why; nothing for other runs, unknown widths or a rate the user chose."""
    if stage not in PREFERENCE_STAGES or finetuning_type != "lora" or not model_dir:
        return {}, ""
    config = Path(model_dir) / "config.json"
    try:
        hidden = int(json.loads(config.read_text(encoding="utf-8"))["hidden_size"])
    except (OSError, ValueError, KeyError, TypeError):
        return {}, ""
    scale, lr = lora_lr_scale(hidden), float(settings.get("learning_rate", 0) or 0)
    if scale == 1.0 or lr <= 0:
        return {}, ""
    new = float(f"{lr * scale:.3g}")
    why = (f"hidden size {hidden}: LoRA learning rate {lr:g} × {scale:.3g} = {new:g}, "
           f"since the recipe's rate suits {REFERENCE_WIDTH}-wide models")
    return {"learning_rate": new}, why


def with_schedule(wb: Workbench, request: dict[str, Any]) -> dict[str, Any]:
    """A training request (recipe, model, datasets, maybe overrides) with its schedule
    sized for the rows it will train on and the model's width, plus ``schedule``: the rows
    and the reasons."""
    from app.data.datasets import get_dataset
    from app.models.registry import get_model
    from app.train.training import get_recipe

    recipe = get_recipe(request["recipe"])
    rows = sum(get_dataset(wb, i).num_rows for i in request["dataset_ids"])
    chosen = dict(request.get("overrides") or {})
    extra, reason = size_schedule(recipe.stage, rows, {**recipe.defaults, **chosen})
    if "learning_rate" not in chosen:
        mv = get_model(wb, request["model_id"])
        lr, why = scale_learning_rate(recipe.stage, recipe.finetuning_type, recipe.defaults,
                                      mv.base_path if mv.kind in ("base", "adapter", "full") else None)
        extra.update(lr)
        reason = f"{reason}; {why}" if why else reason
    return {**request, "overrides": {**chosen, **extra}, "schedule": {"rows": rows, "reason": reason}}
