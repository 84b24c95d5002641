"""A model card (Markdown with the Hub's YAML header) for any version, built from what the
registry knows: lineage, the recipe and hyper-parameters of each run, datasets with their
hashes, and the arena record. Merges write it beside the weights as README.md."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlmodel import Session

from app.core.errors import NotFound
from app.core.tables import Dataset, ModelVersion, Run

# Hyper-parameters a card lists for each run, when the run set them.
CARD_PARAMS = ("finetuning_type", "learning_rate", "num_train_epochs", "per_device_train_batch_size",
               "gradient_accumulation_steps", "lora_rank", "lora_alpha", "pref_beta", "cutoff_len")
RECORD_SQL = text(
    "SELECT b.model_a_id, b.model_b_id, v.choice FROM votes v JOIN battles b ON b.id = v.battle_id "
    "WHERE (b.model_a_id = :m OR b.model_b_id = :m) AND b.model_a_id != b.model_b_id"
)


def arena_record(s: Session, model_id: int) -> dict[str, int]:
    """Wins, losses and ties of a version over every vote it was in (both-bad counts as a tie)."""
    record = {"wins": 0, "losses": 0, "ties": 0}
    for a, _b, choice in s.connection().execute(RECORD_SQL, {"m": model_id}):
        if choice in ("tie", "both_bad"):
            record["ties"] += 1
        elif (choice == "a") == (a == model_id):
            record["wins"] += 1
        else:
            record["losses"] += 1
    return record


def _chain(s: Session, mv: ModelVersion) -> list[ModelVersion]:
    chain = [mv]
    while chain[-1].parent_id:
        parent = s.get(ModelVersion, chain[-1].parent_id)
        if parent is None:
            break
        chain.append(parent)
    return chain


def _run_lines(s: Session, step: ModelVersion) -> list[str]:
    if step.run_id is None:
        return []
    run = s.get(Run, step.run_id)
    if run is None:
        return []
    params = ", ".join(f"`{k}`: {run.config[k]}" for k in CARD_PARAMS if k in run.config)
    lines = [f"  - trained by run `{run.name}`: stage `{run.stage}`, recipe `{run.recipe}`"
             + (f"; {params}" if params else "")]
    for ds_id in run.dataset_ids:
        ds = s.get(Dataset, ds_id)
        if ds is not None:
            lines.append(f"  - dataset `{ds.name}` ({ds.kind}, {ds.num_rows} rows, from {ds.source}), "
                         f"sha256 `{ds.sha256}`")
    metrics = {k: v for k, v in (run.metrics or {}).items() if k in ("final_loss", "final_eval_loss",
                                                                      "final_accuracy", "steps")}
    if metrics:
        lines.append("  - final metrics: " + ", ".join(f"{k} {v}" for k, v in metrics.items()))
    return lines


def model_card(s: Session, model_id: int) -> str:
    mv = s.get(ModelVersion, model_id)
    if mv is None:
        raise NotFound(f"no model with id {model_id}")
    chain = _chain(s, mv)
    root = chain[-1]
    header: dict[str, Any] = {"library_name": "peft" if mv.adapter_path else "transformers",
                              "tags": ["forgeloop", "llama-factory"]}
    if "/" in root.base_path and not root.base_path.startswith("/"):
        header["base_model"] = root.base_path  # a Hub id
    lines = ["---", *(f"{k}: {v}" for k, v in header.items()), "---", "", f"# {mv.name}", "",
             f"A `{mv.kind}` model version made with Forgeloop; chat template `{mv.template}`.", "",
             "## Lineage", ""]
    for step in chain:
        lines.append(f"- **{step.name}** ({step.kind})")
        lines += _run_lines(s, step)
    record = arena_record(s, mv.id)
    votes = sum(record.values())
    lines += ["", "## Arena record", ""]
    lines.append(f"{record['wins']} wins, {record['losses']} losses and {record['ties']} ties in {votes} "
                 "human votes in blind and named battles." if votes else "No arena votes yet.")
    lines += ["", "## Intended use", "",
              "Research and evaluation of the model-improvement loop (data, training, arena votes, "
              "preference training). Check its answers before relying on them: it was trained on the "
              "datasets above and judged by the votes above, nothing more.", ""]
    return "\n".join(lines)
