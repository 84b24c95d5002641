"""User overrides of a recipe: only known LLaMA-Factory keys, and none that run code or
reach files outside Forgeloop's storage unless the settings allow it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from app.core.config import how_to_enable
from app.core.errors import InvalidInput

# LLaMA-Factory 0.9.5 training keys a user may set (tests check each still exists there).
ALLOWED_KEYS = frozenset({
    # optimisation
    "learning_rate", "num_train_epochs", "max_steps", "per_device_train_batch_size",
    "per_device_eval_batch_size", "gradient_accumulation_steps", "lr_scheduler_type",
    "warmup_ratio", "warmup_steps", "weight_decay", "max_grad_norm", "optim", "seed",
    "adam_beta1", "adam_beta2", "adam_epsilon",
    # logging, saving, evaluation
    "logging_steps", "save_steps", "save_total_limit", "save_strategy", "eval_steps",
    "eval_strategy", "val_size", "report_to", "plot_loss", "compute_accuracy",
    "resume_from_checkpoint", "overwrite_output_dir", "save_only_model",
    # data
    "cutoff_len", "max_samples", "packing", "neat_packing", "train_on_prompt", "mask_history",
    "preprocessing_num_workers", "dataloader_num_workers", "streaming", "buffer_size",
    "mix_strategy", "interleave_probs", "overwrite_cache", "template", "default_system",
    "enable_thinking",
    # fine-tuning method
    "finetuning_type", "lora_rank", "lora_alpha", "lora_dropout", "lora_target",
    "additional_target", "use_rslora", "use_dora", "pissa_init", "loraplus_lr_ratio",
    "create_new_adapter", "freeze_trainable_layers", "freeze_trainable_modules",
    "freeze_extra_modules", "train_from_scratch",
    # preference stages
    "pref_beta", "pref_loss", "pref_ftx", "dpo_label_smoothing", "simpo_gamma",
    "kto_chosen_weight", "kto_rejected_weight", "ref_model",
    # precision, quantisation and speed
    "bf16", "fp16", "pure_bf16", "quantization_bit", "quantization_method",
    "quantization_type", "double_quantization", "flash_attn", "rope_scaling",
    "disable_gradient_checkpointing", "use_unsloth", "enable_liger_kernel", "upcast_layernorm",
    "neftune_noise_alpha", "ddp_timeout", "deepspeed",
    # Ray, the path past one machine
    "ray_num_workers", "ray_init_kwargs", "master_addr", "master_port",
})
# Keys that execute code from the model repo; refused unless settings allow.
CODE_KEYS = frozenset({"trust_remote_code"})
# Keys Forgeloop sets itself from the form (model, datasets, output): never overridden.
MANAGED_KEYS = frozenset({
    "model_name_or_path", "adapter_name_or_path", "dataset", "dataset_dir", "eval_dataset",
    "output_dir", "stage", "do_train", "logging_dir",
})


def parse_advanced(text: str) -> dict[str, Any]:
    """The advanced box: YAML or JSON mapping of extra keys."""
    if not (text or "").strip():
        return {}
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise InvalidInput(f"advanced settings are not valid YAML/JSON: {e}") from e
    if not isinstance(data, dict):
        raise InvalidInput("advanced settings must be a mapping of key: value")
    return data


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
        return True
    except ValueError:
        return False


def validate_overrides(
    overrides: dict[str, Any], *, recipes_dir: Path, run_dir: Path, allow_unsafe: bool = False
) -> dict[str, Any]:
    """Return the overrides if every key is allowed, else raise one error naming all problems."""
    problems = []
    for key, value in overrides.items():
        if key in MANAGED_KEYS:
            problems.append(f"{key} is set by Forgeloop from the form; change it there")
        elif key in CODE_KEYS:
            if not allow_unsafe:
                problems.append(f"{key} runs code from the model repository; to allow it, start "
                                f"Forgeloop with {how_to_enable('allow_unsafe_overrides')}")
        elif key not in ALLOWED_KEYS:
            problems.append(f"{key} is not a LLaMA-Factory training key Forgeloop allows")
        elif key == "deepspeed" and not allow_unsafe:
            if not _inside(recipes_dir / str(value), recipes_dir):
                problems.append("deepspeed must name a config shipped in recipes/ "
                                "(e.g. ds_z2.json)")
        elif key == "resume_from_checkpoint" and value and not isinstance(value, bool):
            if not allow_unsafe and not _inside(Path(str(value)), run_dir):
                problems.append("resume_from_checkpoint must be a checkpoint inside this run")
    if problems:
        raise InvalidInput("refused overrides: " + "; ".join(problems))
    out = dict(overrides)
    if "deepspeed" in out and not Path(str(out["deepspeed"])).is_absolute():
        out["deepspeed"] = str((recipes_dir / str(out["deepspeed"])).resolve())
    return out
