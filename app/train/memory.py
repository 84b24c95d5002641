"""How much GPU memory a run needs, and the micro-batch that fills the GPU without overflowing it.

A recipe's micro-batch is sized for a small GPU; on a large one most of the memory stays idle
(on an H100, SFT-LoRA at micro-batch 4 ran at a third of the throughput of micro-batch 32).
On a GPU the planner keeps the effective batch the recipe asks for (micro-batch ×
accumulation) and picks the largest micro-batch whose estimate fits the free memory of
every chosen GPU, with the reason shown. The estimate is deliberately rough and on the high
side: weights, LoRA or full trainable parameters, their gradients and AdamW states, and
activations with gradient checkpointing (LLaMA-Factory's default), plus the logits.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.core.errors import InvalidInput

if TYPE_CHECKING:
    from app.core.hardware import Gpu

GIB = 1024**3
MIB = 1024**2
CUDA_CONTEXT = 600 * MIB  # the CUDA context and kernels, before any tensor
HEADROOM = 0.9  # of the free memory: the allocator fragments, and estimates err
MAX_MICRO_BATCH = 64
PAIRED_STAGES = ("dpo", "kto")  # two sequences a row (chosen + rejected; KTO's KL batch)


@dataclass(frozen=True)
class ModelShape:
    hidden: int
    layers: int
    intermediate: int
    vocab: int
    heads: int
    kv_heads: int
    tied: bool

    @property
    def kv_dim(self) -> int:
        return self.hidden // self.heads * self.kv_heads

    @property
    def params(self) -> int:
        h, i = self.hidden, self.intermediate
        per_layer = 2 * h * h + 2 * h * self.kv_dim + 3 * h * i + 2 * h
        return self.layers * per_layer + self.vocab * h * (1 if self.tied else 2) + h

    def lora_params(self, rank: int) -> int:
        """LoRA on every linear layer (``lora_target: all``): rank × (in + out) each."""
        h, i, kv = self.hidden, self.intermediate, self.kv_dim
        per_layer = rank * ((h + h) * 2 + (h + kv) * 2 + (h + i) * 2 + (i + h))
        return self.layers * per_layer


def read_shape(model_dir: str | Path) -> ModelShape | None:
    """The shape from a local model's config.json; None when it is not a local Llama-like
    model (a Hub id not downloaded, or an unusual config)."""
    path = Path(model_dir) / "config.json"
    try:
        cfg = json.loads(path.read_text())
        cfg = cfg.get("text_config", cfg)  # multimodal configs nest the language model
        heads = int(cfg["num_attention_heads"])
        return ModelShape(hidden=int(cfg["hidden_size"]), layers=int(cfg["num_hidden_layers"]),
                          intermediate=int(cfg.get("intermediate_size") or 4 * cfg["hidden_size"]),
                          vocab=int(cfg["vocab_size"]), heads=heads,
                          kv_heads=int(cfg.get("num_key_value_heads") or heads),
                          tied=bool(cfg.get("tie_word_embeddings", False)))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def estimate(shape: ModelShape, cfg: dict[str, Any], micro_batch: int) -> dict[str, int]:
    """Bytes per GPU for a LLaMA-Factory config at ``micro_batch``, by part."""
    b = 2 if cfg.get("bf16") or cfg.get("fp16") else 4
    lora = cfg.get("finetuning_type", "lora") == "lora"
    params = shape.params
    if cfg.get("quantization_bit"):
        embeddings = shape.vocab * shape.hidden * (1 if shape.tied else 2)
        weights = int((params - embeddings) * cfg["quantization_bit"] / 8 * 1.1) + embeddings * b
    else:
        weights = params * b
    if lora:
        trainable = shape.lora_params(int(cfg.get("lora_rank", 8)))
        grads, optimizer = trainable * 4, trainable * 12  # fp32 copies, AdamW's two moments
    else:
        trainable = params
        grads, optimizer = params * b, params * 2 * b
    reference = params * b if (cfg.get("stage") in PAIRED_STAGES and not lora) else 0
    tokens = micro_batch * int(cfg.get("cutoff_len", 1024))
    if cfg.get("stage") in PAIRED_STAGES:
        tokens *= 2
    per_token = ((shape.layers * shape.hidden + 10 * shape.hidden + 4 * shape.intermediate) * b
                 + shape.vocab * 8)  # checkpointed layer inputs, one layer recomputed, fp32 logits + grad
    parts = {"weights": weights, "reference_model": reference, "trainable_params": trainable,
             "gradients": grads, "optimizer": optimizer, "activations": tokens * per_token,
             "cuda_context": CUDA_CONTEXT}
    parts["total"] = sum(v for k, v in parts.items() if k != "trainable_params")
    return parts


def _gib(n: float) -> str:
    return f"{n / GIB:.1f} GiB"


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, min(n, MAX_MICRO_BATCH) + 1) if n % d == 0]


def fit_batch(cfg: dict[str, Any], shape: ModelShape | None, gpus: tuple[Gpu, ...],
              asked: dict[str, Any]) -> dict[str, Any]:
    """Choose the micro-batch on a GPU (unless the user set it) and check the run fits.

    Changes ``cfg`` in place; returns what the UI shows: the estimate by part at the chosen
    micro-batch, the free memory it was planned against, and the reason in words. Raises
    InvalidInput when even micro-batch 1 cannot fit one of the chosen GPUs."""
    mb = int(cfg.get("per_device_train_batch_size", 1))
    ga = int(cfg.get("gradient_accumulation_steps", 1))
    if shape is None:
        return {"estimate": None, "free_bytes": None,
                "reason": f"model size unknown (no local config.json): micro-batch {mb} × accumulation {ga} "
                          "as the recipe says"}
    if not gpus:
        return {"estimate": estimate(shape, cfg, mb), "free_bytes": None,
                "reason": f"on the CPU: micro-batch {mb} × accumulation {ga} as the recipe says"}
    free = min(g.memory_total_mib - g.memory_used_mib for g in gpus) * MIB
    budget = free * HEADROOM
    sharded = bool(cfg.get("deepspeed"))
    user_set = "per_device_train_batch_size" in asked or "gradient_accumulation_steps" in asked
    if not user_set:
        effective = mb * ga
        fitting = [d for d in _divisors(effective) if estimate(shape, cfg, d)["total"] <= budget]
        best = max(fitting, default=1)
        cfg["per_device_train_batch_size"], cfg["gradient_accumulation_steps"] = best, effective // best
        mb, ga = best, effective // best
    need = estimate(shape, cfg, mb)
    where = f"the {_gib(free)} free on the smallest chosen GPU"
    if need["total"] > budget and not sharded:
        raise InvalidInput(
            f"this run needs about {_gib(need['total'])} per GPU at micro-batch {mb} (weights "
            f"{_gib(need['weights'])}, activations {_gib(need['activations'])}, optimizer "
            f"{_gib(need['optimizer'])}) but only {where} can be used; try LoRA or QLoRA, a shorter "
            "cutoff_len, DeepSpeed ZeRO-3 or a smaller model")
    if user_set:
        reason = f"micro-batch {mb} × accumulation {ga} as you set it: about {_gib(need['total'])} of {where}"
    else:
        reason = (f"micro-batch {mb} × accumulation {ga} (effective batch {mb * ga}, as the recipe asks) "
                  f"is the largest that fits: about {_gib(need['total'])} of {where}")
    if sharded:
        reason += "; DeepSpeed shards the model, so the real need per GPU is lower"
    return {"estimate": need, "free_bytes": free, "reason": reason}


OOM_MARKERS = ("CUDA out of memory", "OutOfMemoryError", "CUBLAS_STATUS_ALLOC_FAILED")


def out_of_memory(log: str) -> bool:
    return any(m in log for m in OOM_MARKERS)


def halved(cfg: dict[str, Any]) -> dict[str, int]:
    """Overrides for a re-run after running out of memory: half the micro-batch, twice the
    accumulation, so the effective batch and the schedule stay the same."""
    mb, ga = int(cfg.get("per_device_train_batch_size", 1)), int(cfg.get("gradient_accumulation_steps", 1))
    if mb <= 1:
        raise InvalidInput("the run already used micro-batch 1: try QLoRA, a shorter cutoff_len, "
                           "DeepSpeed ZeRO-3 or a smaller model")
    half = mb // 2
    return {"per_device_train_batch_size": half,
            "gradient_accumulation_steps": mb * ga // half if mb * ga % half == 0 else ga * 2}


CHARS_PER_TOKEN = 4.0  # a rough English average; enough to tell short rows from long ones
PACK_BELOW = 0.25  # rows averaging under a quarter of cutoff_len are packed
MIN_PACKED_STEPS = 50  # ...unless packing would leave fewer optimizer steps than this an epoch


def _text_chars(value: Any) -> int:
    if isinstance(value, str):
        return len(value)
    if isinstance(value, dict):
        return sum(_text_chars(v) for v in value.values())
    if isinstance(value, list):
        return sum(_text_chars(v) for v in value)
    return 0


def row_tokens(paths: list[str], sample: int = 2000) -> float | None:
    """The mean length of a row in tokens, estimated from the text of up to ``sample`` rows
    of each JSON Lines file (None when there is nothing to read)."""
    chars, rows = 0, 0
    for path in paths:
        try:
            with open(path, encoding="utf-8") as f:
                for i, line in enumerate(f):
                    if i >= sample:
                        break
                    try:
                        chars += _text_chars(json.loads(line))
                    except ValueError:
                        continue
                    rows += 1
        except OSError:
            continue
    return chars / CHARS_PER_TOKEN / rows if rows else None


def plan_packing(cfg: dict[str, Any], stage: str, mean_tokens: float | None, rows: int,
                 gpus: tuple[Gpu, ...], asked: dict[str, Any]) -> str | None:
    """On a GPU, pack short SFT rows into full-length sequences (LLaMA-Factory's neat packing:
    each row still attends only to itself) so a micro-batch carries text, not padding.
    Changes ``cfg`` in place; returns why, or None when nothing was packed. Pre-training
    packs by itself; preference stages cannot (each row is a pair)."""
    if (not gpus or stage != "sft" or mean_tokens is None or mean_tokens <= 0
            or "packing" in asked or "neat_packing" in asked):
        return None
    cutoff = int(cfg.get("cutoff_len", 1024))
    per_sequence = cutoff / mean_tokens
    micro = int(cfg.get("per_device_train_batch_size", 1))
    effective = micro * int(cfg.get("gradient_accumulation_steps", 1)) * len(gpus)
    if mean_tokens > cutoff * PACK_BELOW or rows / per_sequence / effective < MIN_PACKED_STEPS:
        return None
    cfg["packing"] = cfg["neat_packing"] = True
    return (f"rows average about {mean_tokens:.0f} tokens against cutoff_len {cutoff}, so about "
            f"{per_sequence:.0f} are packed into each sequence (neat packing: each row sees only itself)")
