"""Training settings for a model, datasets and stage, each with its reason.

Deterministic rules: the recipe by stage, cutoff_len from the rows' token lengths in the
model's own tokenizer, LoRA rank and epochs from the number of rows, the schedule and
learning-rate rules the planner uses (app/train/schedule.py), micro-batch and precision
from the GPUs (app/train/memory.py), QLoRA when LoRA would not fit; and warnings about
the data (too small, too long, duplicated, unbalanced pairs or labels).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.core.errors import InvalidInput
from app.core.hardware import Hardware, precision
from app.core.tables import Dataset, ModelVersion
from app.data.datasets import get_dataset, read_rows
from app.models.registry import get_model
from app.train import memory
from app.train.schedule import scale_learning_rate, size_schedule
from app.train.training import get_recipe

if TYPE_CHECKING:
    from app.core.workbench import Workbench

STAGE_OF_KIND = {"sft": "sft", "dpo": "dpo", "kto": "kto", "cpt": "pt"}
RECIPE_OF_STAGE = {"sft": "sft_lora", "dpo": "dpo_lora", "kto": "kto_lora", "pt": "cpt_lora"}
SAMPLE_ROWS = 1000
TOO_FEW = {"sft": 50, "dpo": 100, "kto": 100, "pt": 20}


@dataclass
class Suggestion:
    recipe: str
    stage: str
    values: dict[str, Any] = field(default_factory=dict)  # LLaMA-Factory keys
    reasons: dict[str, str] = field(default_factory=dict)  # key (or "recipe") -> why
    warnings: list[str] = field(default_factory=list)
    lengths: dict[str, int] = field(default_factory=dict)  # token lengths of the sampled rows
    rows: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def text(self) -> str:
        """The rule-based explanation, one line per setting."""
        lines = [f"- **recipe** `{self.recipe}`: {self.reasons.get('recipe', '')}"]
        lines += [f"- **{k}** `{v}`: {self.reasons.get(k, '')}" for k, v in self.values.items()]
        lines += [f"- ⚠ {w}" for w in self.warnings]
        return "\n".join(lines)


def _row_text(row: dict[str, Any]) -> str:
    """The text a row trains on, as one string (the longer answer of a pair)."""
    if isinstance(row.get("messages"), list):
        text = "\n".join(str(m.get("content", "")) for m in row["messages"] if isinstance(m, dict))
    else:
        text = "\n".join(str(row.get(k) or "") for k in ("instruction", "input", "prompt", "text"))
        text += "\n" + str(row.get("output") or row.get("completion") or "")
    answers = [row.get(k) for k in ("chosen", "rejected") if row.get(k) is not None]
    if answers:
        text += "\n" + max((json.dumps(a) if not isinstance(a, str) else a for a in answers), key=len)
    return text


def token_lengths(model_dir: str, texts: list[str]) -> tuple[list[int], str]:
    """Token counts in the model's tokenizer (characters / 4 when it cannot be loaded)."""
    try:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(model_dir)
        return [len(tok.encode(t, add_special_tokens=True)) for t in texts], "the model's tokenizer"
    except Exception:  # noqa: BLE001 - a Hub id offline, a folder without a tokenizer
        return [max(1, len(t) // 4) for t in texts], "an estimate of 4 characters a token"


def _percentile(values: list[int], q: float) -> int:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def _max_positions(model_dir: str) -> int | None:
    try:
        cfg = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
        return int(cfg.get("max_position_embeddings"))
    except (OSError, ValueError, TypeError):
        return None


def data_warnings(stage: str, rows: list[dict[str, Any]], total: int) -> list[str]:
    out = []
    if total < TOO_FEW[stage]:
        out.append(f"only {total} rows: {stage.upper()} usually needs at least {TOO_FEW[stage]} "
                   + ("(the planner adds epochs to reach 100 optimizer steps, but the model may memorise "
                      "them)" if stage in ("dpo", "kto") else "to learn more than the rows themselves"))
    keys = [json.dumps(r, sort_keys=True, ensure_ascii=False) for r in rows]
    dupes = len(keys) - len(set(keys))
    if dupes:
        out.append(f"{dupes} of {len(keys)} sampled rows are exact duplicates (the Data tab's clean-up "
                   "removes them)")
    if stage == "dpo":
        same = sum(1 for r in rows if r.get("chosen") == r.get("rejected"))
        if same:
            out.append(f"{same} of {len(rows)} sampled pairs have the same chosen and rejected answer: they "
                       "teach nothing")
    if stage == "kto":
        labels = [r.get("label") for r in rows]
        if labels and len({bool(x) for x in labels}) == 1:
            out.append(f"every sampled row has the label {bool(labels[0])}: KTO needs both desirable and "
                       "undesirable answers")
    return out


def suggest_settings(wb: Workbench, model_id: int, dataset_ids: list[int], stage: str | None = None,
                     gpus: list[int] | None = None, hardware: Hardware | None = None) -> Suggestion:
    model = get_model(wb, model_id)
    if model.kind in ("ollama", "openai"):
        raise InvalidInput(f"model {model.name!r} is served elsewhere: only local weights can be trained")
    if not dataset_ids:
        raise InvalidInput("choose at least one dataset")
    datasets = [get_dataset(wb, i) for i in dataset_ids]
    kinds = {d.kind for d in datasets}
    if len(kinds) > 1:
        raise InvalidInput(f"the datasets are of different kinds ({', '.join(sorted(kinds))}): pick one kind")
    stage = stage or STAGE_OF_KIND[kinds.pop()]
    if stage not in RECIPE_OF_STAGE:
        raise InvalidInput(f"unknown stage {stage!r} (choose from {', '.join(RECIPE_OF_STAGE)})")
    hw = hardware or wb.hardware()
    try:
        chosen_gpus = hw.select(gpus)
    except ValueError as e:
        raise InvalidInput(str(e)) from e
    total = sum(d.num_rows for d in datasets)
    sample = _sample(datasets)
    s = Suggestion(RECIPE_OF_STAGE[stage], stage, rows=total)
    s.reasons["recipe"] = f"the LoRA recipe for {stage.upper()}: small, fast and enough for most adaptations"
    _cutoff(s, model, sample)
    _capacity(s, total)
    recipe = get_recipe(s.recipe)
    settings = {**recipe.defaults, **s.values}
    extra, why = size_schedule(stage, total, settings)
    if extra:
        s.values.update(extra)
        for key in extra:
            s.reasons[key] = why
    lr, why = scale_learning_rate(stage, recipe.finetuning_type, settings, model.base_path)
    s.values["learning_rate"] = lr.get("learning_rate", recipe.defaults.get("learning_rate"))
    s.reasons["learning_rate"] = why or "the recipe's rate, usual for LoRA at this stage"
    _hardware(s, model, chosen_gpus, hw)
    s.warnings += data_warnings(stage, sample, total)
    return s


def _sample(datasets: list[Dataset]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for d in datasets:
        rows += [r for r in read_rows(Path(d.path))[:SAMPLE_ROWS] if isinstance(r, dict)]
    return rows[:SAMPLE_ROWS]


def _cutoff(s: Suggestion, model: ModelVersion, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    lengths, how = token_lengths(model.base_path, [_row_text(r) for r in rows])
    p50, p95, longest = _percentile(lengths, 0.5), _percentile(lengths, 0.95), max(lengths)
    s.lengths = {"p50": p50, "p95": p95, "max": longest}
    cutoff = max(128, math.ceil(p95 * 1.1 / 128) * 128)
    limit = _max_positions(model.base_path)
    capped = bool(limit and cutoff > limit)
    cutoff = limit if capped else cutoff
    s.values["cutoff_len"] = cutoff
    s.reasons["cutoff_len"] = (f"95 % of the sampled rows have at most {p95} tokens ({how}; median {p50}, "
                               f"longest {longest}), plus a margin"
                               + (f", capped at the model's {limit} positions" if capped else ""))
    over = sum(1 for n in lengths if n > cutoff)
    if over > len(lengths) * 0.05:
        s.warnings.append(f"{over} of {len(lengths)} sampled rows are longer than the model allows "
                          f"({cutoff} tokens) and will be cut")


def _capacity(s: Suggestion, rows: int) -> None:
    rank = 8 if rows < 2000 else 16 if rows < 20000 else 32
    s.values["lora_rank"], s.values["lora_alpha"] = rank, rank * 2
    s.reasons["lora_rank"] = (f"{rows} rows: rank {rank} has room for what they teach without memorising "
                              "them (more rows, more rank)")
    s.reasons["lora_alpha"] = "twice the rank, the usual scaling"
    if s.stage == "sft":
        epochs = 3.0 if rows < 1000 else 2.0 if rows < 10000 else 1.0
        s.values["num_train_epochs"] = epochs
        s.reasons["num_train_epochs"] = (f"{rows} rows: {epochs:g} passes (small sets need a few, large ones "
                                         "one)")


def _hardware(s: Suggestion, model: ModelVersion, gpus: tuple, hw: Hardware) -> None:
    recipe = get_recipe(s.recipe)
    cfg = {**recipe.defaults, **s.values, **precision(gpus)}
    shape = memory.read_shape(model.base_path)
    try:
        fitted = memory.fit_batch(cfg, shape, gpus, {})
    except InvalidInput as too_big:
        if s.stage != "sft" or not hw.has_bitsandbytes:
            s.warnings.append(str(too_big))
            return
        s.recipe = "sft_qlora"
        s.reasons["recipe"] = "LoRA would not fit the GPU's free memory; QLoRA (4-bit weights) does"
        cfg = {**get_recipe(s.recipe).defaults, **s.values, **precision(gpus)}
        try:
            fitted = memory.fit_batch(cfg, shape, gpus, {})
        except InvalidInput as still:
            s.warnings.append(str(still))
            return
    s.values["per_device_train_batch_size"] = cfg["per_device_train_batch_size"]
    s.values["gradient_accumulation_steps"] = cfg["gradient_accumulation_steps"]
    s.reasons["per_device_train_batch_size"] = fitted["reason"]
    s.reasons["gradient_accumulation_steps"] = "keeps the effective batch the recipe asks for"
    for key, value in precision(gpus).items():
        s.values[key] = value
        s.reasons[key] = ("every chosen GPU supports bfloat16 (compute 8.0+)" if key == "bf16"
                          else "these GPUs lack bfloat16: float16 with loss scaling")
