"""Why a training run failed, from its log: the common trainer failures recognised by
their tell-tale lines, each with the fix in words. Unknown failures quote the lines
that look like the cause."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Finding:
    cause: str  # a stable key: oom, nan_loss, ...
    title: str
    fix: str
    lines: list[str]  # the log lines that gave it away

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Rule:
    cause: str
    title: str
    fix: str
    patterns: tuple[str, ...]


RULES = (
    Rule("oom", "The GPU ran out of memory",
         "Re-run at half the micro-batch (the button below keeps the effective batch), or lower "
         "cutoff_len, use QLoRA (quantization_bit 4) or a smaller model.",
         (r"CUDA out of memory", r"OutOfMemoryError", r"CUBLAS_STATUS_ALLOC_FAILED")),
    Rule("cpu_oom", "The machine ran out of memory (the process was killed)",
         "Lower cutoff_len or the micro-batch, or train a smaller model; close other programs.",
         (r"killed by signal 9", r"Killed\s*$", r"MemoryError")),
    Rule("nan_loss", "The loss became NaN or infinite",
         "Lower the learning rate (try a third of it), keep bf16 rather than fp16 on GPUs that "
         "support it, and set max_grad_norm 1.0.",
         (r"'loss': nan", r"\"loss\": NaN", r"loss[\"']?: (nan|inf)", r"Detected NaN", r"nan or inf")),
    Rule("template", "The chat template does not fit the tokenizer",
         "Set the version's template to the one its model was trained with (the Registry reads it "
         "from the tokenizer when the field is left empty).",
         (r"Template \S+ does not exist", r"Cannot find the template", r"does not have a chat template",
          r"unknown template")),
    Rule("skipped_rows", "LLaMA-Factory dropped rows of the dataset",
         "Check the rows it names: empty answers, turns that do not alternate user/assistant, or "
         "prompts longer than cutoff_len. The Data tab's quality report finds them.",
         (r"Dropped invalid example", r"Cannot find valid samples", r"Skipping .* example")),
    Rule("bitsandbytes", "QLoRA needs bitsandbytes and a CUDA GPU",
         "pip install bitsandbytes on a machine with an NVIDIA GPU, or pick a LoRA recipe.",
         (r"bitsandbytes>=", r"No module named 'bitsandbytes'",
          r"bitsandbytes.*(not installed|is required)")),
    Rule("no_cuda", "No usable CUDA device",
         "Check nvidia-smi and the CUDA_VISIBLE_DEVICES the run was given; on a CPU-only machine "
         "choose a recipe without QLoRA or bf16.",
         (r"Torch not compiled with CUDA", r"no CUDA GPUs are available",
          r"CUDA driver version is insufficient", r"Found no NVIDIA driver")),
    Rule("disk_full", "The disk is full",
         "Free space in the storage folder (old runs, GGUF files) or set save_total_limit lower.",
         (r"No space left on device", r"Errno 28")),
    Rule("offline_hub", "The run tried to download from the Hugging Face Hub while offline",
         "Register the model from a local folder (or pull it first in the Registry's Hub section); "
         "a Hub id only works with network access.",
         (r"HF_HUB_OFFLINE", r"offline mode is enabled", r"LocalEntryNotFoundError",
          r"We couldn't connect to 'https://huggingface.co'", r"OfflineModeIsEnabled")),
)
ERROR_LINE = re.compile(r"(Error|Exception|error:|Traceback|FAILED|Killed)")


def diagnose(log: str) -> list[Finding]:
    """Every known failure the log shows, most specific first; when none is known, one
    finding that quotes the last lines that look like errors."""
    lines = log.splitlines()
    found = []
    for rule in RULES:
        hits = [ln.strip() for ln in lines if any(re.search(p, ln, re.IGNORECASE) for p in rule.patterns)]
        if hits:
            found.append(Finding(rule.cause, rule.title, rule.fix, hits[-3:]))
    if found:
        return found
    errors = [ln.strip() for ln in lines if ERROR_LINE.search(ln)]
    quoted = errors[-5:] or [ln.strip() for ln in lines[-5:] if ln.strip()]
    return [Finding("unknown", "An error this assistant does not know",
                    "Read the quoted lines (the last is usually the cause); the full log is in the run's "
                    "folder.", quoted)]
