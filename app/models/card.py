"""A model card (Markdown with the Hub's YAML header) for any version, rendered from its
``version_record``: lineage, the recipe and hyper-parameters of each run, datasets with their
hashes, and the arena record. Merges write it beside the weights as README.md."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlmodel import Session, select

from app.core.errors import NotFound
from app.core.tables import Deployment, ModelVersion
from app.models.version_record import arena_record, chain, version_record

__all__ = ["arena_record", "base_model", "hub_id", "model_card"]

# Hyper-parameters a card lists for each run, when the run set them.
CARD_PARAMS = ("finetuning_type", "learning_rate", "num_train_epochs", "per_device_train_batch_size",
               "gradient_accumulation_steps", "lora_rank", "lora_alpha", "pref_beta", "cutoff_len")
CARD_METRICS = ("final_loss", "final_eval_loss", "final_accuracy", "steps")


def _is_hub_id(ref: str) -> bool:
    return "/" in ref and not ref.startswith(("/", ".", "~")) and not Path(ref).exists()


def hub_id(s: Session, mv: ModelVersion, pushed: bool = True) -> str | None:
    """Where ``mv``'s weights are on the Hub: its Hub id, the repo it was pulled from or
    (``pushed``) the repo it was last pushed to; None for weights known only here."""
    if not mv.adapter_path and _is_hub_id(mv.base_path):
        return mv.base_path
    if repo := (mv.meta or {}).get("hub", {}).get("repo_id"):
        return repo
    if pushed:
        dep = s.exec(select(Deployment).where(Deployment.model_id == mv.id, Deployment.target == "hub",
                                              Deployment.status == "pushed")
                     .order_by(Deployment.id.desc())).first()
        return dep.name if dep else None
    return None


def base_model(s: Session, mv: ModelVersion) -> tuple[ModelVersion | None, str | None]:
    """The version a card names as ``base_model`` and its Hub id (None: not on the Hub). An
    adapter's base is the version whose weights it loads on; a full version's is its lineage
    root; a base version is its own, when it came from the Hub."""
    steps = chain(s, mv)
    if mv.adapter_path:
        holder = next((v for v in steps if not v.adapter_path), None)
        if holder is None:  # its base is no registered version: only a Hub id can name it
            return None, mv.base_path if _is_hub_id(mv.base_path) else None
        return holder, hub_id(s, holder)
    root = steps[-1]
    return root, hub_id(s, root, pushed=root is not mv)


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
    mv = s.get(ModelVersion, model_id)
    if mv is None:
        raise NotFound(f"no model with id {model_id}")
    rec = version_record(s, model_id)
    header: dict[str, Any] = {"library_name": "peft" if rec["adapter_path"] else "transformers",
                              "tags": ["forgeloop", "llama-factory"]}
    base, base_id = base_model(s, mv)
    if base_id:
        header["base_model"] = base_id
    lines = ["---", *(f"{k}: {v}" for k, v in header.items()), "---", "", f"# {rec['name']}", "",
             f"A `{rec['kind']}` model version made with Forgeloop; chat template `{rec['template']}`.", ""]
    if mv.adapter_path:
        on = f"[`{base_id}`](https://huggingface.co/{base_id})" if base_id else (
            f"the local model `{base.name if base else mv.base_path}`, which is not on the Hub")
        lines += [f"A LoRA adapter: load it on top of {on}.", ""]
    elif base_id and base is not mv:
        lines += [f"Fine-tuned from [`{base_id}`](https://huggingface.co/{base_id}).", ""]
    lines += ["## Lineage", ""]
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
