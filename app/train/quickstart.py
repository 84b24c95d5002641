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

SAMPLES = Path(__file__).resolve().parents[2] / "data" / "samples"
SAMPLE_SFT = SAMPLES / "sft_starter.jsonl"
SAMPLE_NAME = "sample-sft"
# The starter's own chat data: SAMPLE_SFT plus other wordings of its questions and more
# greetings, so the fine-tune answers questions it was not shown in a sentence too.
STARTER_CHAT = SAMPLES / "sft_starter_chat.jsonl"
STARTER_CHAT_NAME = "sample-chat-sft"
# Full fine-tuning: on a 0.2M-parameter model it costs no more than LoRA and, unlike LoRA,
# also trains the embeddings of the chat markers the warm-up never saw in a whole dialogue.
STARTER_RECIPE = "sft_full"
# ~650 steps (about 30 s on 2 CPU cores): fewer left unseen wordings half-learned
# (answers with made-up words); the recipe's rate suits 7B models, not this one.
STARTER_SFT = {"num_train_epochs": 10.0, "learning_rate": 2e-3, "per_device_train_batch_size": 4,
               "gradient_accumulation_steps": 2}


def registered(wb: Workbench, path: Path, name: str) -> int:
    """A shipped sample file, registered once under ``name``."""
    found = next((d for d in datasets.list_datasets(wb) if d.name == name), None)
    return found.id if found else datasets.register_file(wb, path, name, "sft").id


def start_starter_sft(wb: Workbench) -> Run:
    starters = [m for m in list_models(wb) if (m.meta or {}).get("starter") and m.kind == "base"]
    if not starters:
        raise InvalidInput("create the starter model first")
    base = starters[-1]
    taken = {r.name for r in training.list_runs(wb)}
    name = next(f"{base.name}-sft" + (f"-{n}" if n > 1 else "") for n in range(1, 1000)
                if f"{base.name}-sft" + (f"-{n}" if n > 1 else "") not in taken)
    data = registered(wb, STARTER_CHAT, STARTER_CHAT_NAME)
    return training.start_run(wb, training.TrainRequest(STARTER_RECIPE, base.id, [data], name=name,
                                                        overrides=dict(STARTER_SFT)))
