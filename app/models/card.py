"""A model card (Markdown with the Hub's YAML header) for any version, rendered from its
``version_record``: lineage, the recipe and hyper-parameters of each run, datasets with their
hashes, and the arena record. Merges write it beside the weights as README.md."""

from __future__ import annotations

from typing import Any

from sqlmodel import Session

from app.models.version_record import arena_record, version_record

__all__ = ["arena_record", "model_card"]

# Hyper-parameters a card lists for each run, when the run set them.
CARD_PARAMS = ("finetuning_type", "learning_rate", "num_train_epochs", "per_device_train_batch_size",
               "gradient_accumulation_steps", "lora_rank", "lora_alpha", "pref_beta", "cutoff_len")
CARD_METRICS = ("final_loss", "final_eval_loss", "final_accuracy", "steps")


def _run_lines(step: dict[str, Any]) -> list[str]:
    run = step.get("run")
    if run is None:
        return []
    params = ", ".join(f"`{k}`: {step['recipe'][k]}" for k in CARD_PARAMS if k in step["recipe"])
    lines = [f"  - trained by run `{run['name']}`: stage `{run['stage']}`, recipe `{run['recipe']}`"
             + (f"; {params}" if params else "")]
    for ds in step["datasets"]:
        lines.append(f"  - dataset `{ds['name']}` ({ds['kind']}, {ds['rows']} rows, from {ds['source']}), "
                     f"sha256 `{ds['sha256']}`")
    metrics = {k: run["metrics"][k] for k in CARD_METRICS if k in run["metrics"]}
    if metrics:
        lines.append("  - final metrics: " + ", ".join(f"{k} {v}" for k, v in metrics.items()))
    return lines


def model_card(s: Session, model_id: int) -> str:
    rec = version_record(s, model_id)
    root = rec["lineage"][-1]
    header: dict[str, Any] = {"library_name": "peft" if rec["adapter_path"] else "transformers",
                              "tags": ["forgeloop", "llama-factory"]}
    if "/" in root["base_path"] and not root["base_path"].startswith("/"):
        header["base_model"] = root["base_path"]  # a Hub id
    lines = ["---", *(f"{k}: {v}" for k, v in header.items()), "---", "", f"# {rec['name']}", "",
             f"A `{rec['kind']}` model version made with Forgeloop; chat template `{rec['template']}`.", "",
             "## Lineage", ""]
    for step in rec["lineage"]:
        lines.append(f"- **{step['name']}** ({step['kind']})")
        lines += _run_lines(step)
    record = rec["arena_record"]
    votes = sum(record.values())
    lines += ["", "## Arena record", ""]
    lines.append(f"{record['wins']} wins, {record['losses']} losses and {record['ties']} ties in {votes} "
                 "human votes in blind and named battles." if votes else "No arena votes yet.")
    lines += ["", "## Intended use", "",
              "Research and evaluation of the model-improvement loop (data, training, arena votes, "
              "preference training). Check its answers before relying on them: it was trained on the "
              "datasets above and judged by the votes above, nothing more.", ""]
    return "\n".join(lines)
