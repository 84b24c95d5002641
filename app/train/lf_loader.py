"""Run a registered dataset through LLaMA-Factory's own loader and preprocessor.

This is the ground truth for "would training see every row": LLaMA-Factory skips
malformed rows with only a warning, so a count lower than ``num_rows`` means loss.
Imports torch and llamafactory; call it off the request path.
"""

from __future__ import annotations

import tempfile
from typing import TYPE_CHECKING

from app.core.tables import Dataset, ModelVersion
from app.train.training import LF_STAGE

if TYPE_CHECKING:
    from app.core.workbench import Workbench

# LLaMA-Factory's data pipeline names the preference stage "rm".
_DATA_STAGE = {"pt": "pt", "sft": "sft", "dpo": "rm", "kto": "kto"}


def loadable_rows(wb: Workbench, ds: Dataset, model: ModelVersion, cutoff_len: int = 512) -> int:
    """How many rows of ``ds`` survive LLaMA-Factory's loading for its stage."""
    from llamafactory.data import get_dataset, get_template_and_fix_tokenizer
    from llamafactory.hparams import get_train_args
    from llamafactory.model import load_tokenizer

    stage = LF_STAGE[ds.kind]
    with tempfile.TemporaryDirectory() as out:
        args = {
            "model_name_or_path": model.base_path,
            "template": model.template,
            "stage": stage,
            "do_train": True,
            "finetuning_type": "lora",
            "dataset": ds.name,
            "dataset_dir": str(wb.settings.datasets_dir),
            "cutoff_len": cutoff_len,
            "output_dir": out,
            "overwrite_cache": True,
            "report_to": "none",
            "preprocessing_num_workers": None,
        }
        model_args, data_args, training_args, _, _ = get_train_args(args)
        tok = load_tokenizer(model_args)
        template = get_template_and_fix_tokenizer(tok["tokenizer"], data_args)
        module = get_dataset(template, model_args, data_args, training_args,
                             stage=_DATA_STAGE[stage], **tok)
        return len(module["train_dataset"])
