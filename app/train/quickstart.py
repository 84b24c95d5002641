"""The first hour's shortcut: one click from the starter model to a fine-tuned version of
it, trained on the shipped sample chat data, so the first battle has two models."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from app.core.errors import InvalidInput
from app.core.tables import Run
from app.data import datasets
from app.models.registry import list_models
from app.train import training

if TYPE_CHECKING:
    from app.core.workbench import Workbench

SAMPLE_SFT = Path(__file__).resolve().parents[2] / "data" / "samples" / "sft_starter.jsonl"
SAMPLE_NAME = "sample-sft"
# A tiny model learns the sample's short answers in a few epochs at a LoRA rate well above
# the recipe's (which suits 7B models).
STARTER_SFT = {"num_train_epochs": 3.0, "learning_rate": 1e-3}


def sample_dataset(wb: Workbench) -> int:
    """The shipped sample SFT data, registered once."""
    found = next((d for d in datasets.list_datasets(wb) if d.name == SAMPLE_NAME), None)
    return found.id if found else datasets.register_file(wb, SAMPLE_SFT, SAMPLE_NAME, "sft").id


def start_starter_sft(wb: Workbench) -> Run:
    starters = [m for m in list_models(wb) if (m.meta or {}).get("starter") and m.kind == "base"]
    if not starters:
        raise InvalidInput("create the starter model first")
    base = starters[-1]
    taken = {r.name for r in training.list_runs(wb)}
    name = next(f"{base.name}-sft" + (f"-{n}" if n > 1 else "") for n in range(1, 1000)
                if f"{base.name}-sft" + (f"-{n}" if n > 1 else "") not in taken)
    return training.start_run(wb, training.TrainRequest("sft_lora", base.id, [sample_dataset(wb)], name=name,
                                                        overrides=dict(STARTER_SFT)))
