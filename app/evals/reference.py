"""Reference metrics through LLaMA-Factory itself, as jobs: a version's eval loss and
perplexity on a dataset (SFT rows, or a CPT corpus), or BLEU-4 and ROUGE-1/2/L of its
generated answers against an SFT dataset's answers (``do_predict``).

The numbers are LLaMA-Factory's (its ``eval_results.json`` / ``predict_results.json``), so
they compare with what its own web UI reports. Generation is greedy, for repeatable scores.
"""

from __future__ import annotations

import math
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from sqlmodel import select

from app.core.errors import InvalidInput
from app.core.hardware import precision
from app.core.job_models import attach_job
from app.core.jobs import JobKind, JobSpec, Outcome, default_finish
from app.core.progress_log import TRAINER_LOG
from app.core.tables import Dataset, Job, ModelVersion, ReferenceEval
from app.data.datasets import get_dataset
from app.models.registry import check_model_files, get_model, model_system_prompt
from app.train.training import cli_path

if TYPE_CHECKING:
    from sqlmodel import Session

    from app.core.workbench import Workbench

REFERENCE = "reference_eval"
METRICS = ("loss", "generation")
LOCAL_KINDS = ("base", "adapter", "full")
MAX_SAMPLES = 100_000
# What each metric keeps from LLaMA-Factory's result file (its names, prefix dropped).
KEEP = {"loss": ("eval_loss", "eval_perplexity", "eval_runtime", "eval_samples_per_second"),
        "generation": ("predict_bleu-4", "predict_rouge-1", "predict_rouge-2", "predict_rouge-l",
                       "predict_runtime", "predict_samples_per_second")}
RESULT_FILE = {"loss": "eval_results.json", "generation": "predict_results.json"}


def reference_config(wb: Workbench, model: ModelVersion, ds: Dataset, metric: str, max_samples: int,
                     max_new_tokens: int, output_dir: Path) -> dict[str, Any]:
    """The LLaMA-Factory YAML: no training, evaluation (or prediction) on ``ds``."""
    cfg: dict[str, Any] = {
        "model_name_or_path": model.base_path, "template": model.template, "trust_remote_code": False,
        "stage": "pt" if ds.kind == "cpt" else "sft", "do_train": False,
        "finetuning_type": "lora" if model.adapter_path else "full",
        "eval_dataset": ds.name, "dataset_dir": str(wb.settings.datasets_dir), "max_samples": max_samples,
        "cutoff_len": 1024, "per_device_eval_batch_size": 4, "output_dir": str(output_dir),
        "overwrite_cache": True, "report_to": "none", "logging_steps": 1,
    }
    if model.adapter_path:
        cfg["adapter_name_or_path"] = model.adapter_path
    if system := model_system_prompt(model):
        cfg["default_system"] = system
    if metric == "loss":
        cfg["do_eval"] = True
    else:  # greedy: the same model and data give the same scores
        cfg.update(do_predict=True, predict_with_generate=True, max_new_tokens=max_new_tokens,
                   do_sample=False)
    return cfg


def start_reference_eval(wb: Workbench, model_id: int, dataset_id: int, metric: str = "loss",
                         max_samples: int = 200, max_new_tokens: int = 128) -> ReferenceEval:
    """Queue LLaMA-Factory's evaluation of ``model_id`` on ``dataset_id``."""
    if metric not in METRICS:
        raise InvalidInput(f"metric must be one of {', '.join(METRICS)}; got {metric!r}")
    if not 1 <= max_samples <= MAX_SAMPLES:
        raise InvalidInput(f"max samples must be between 1 and {MAX_SAMPLES}")
    if not 1 <= max_new_tokens <= 8192:
        raise InvalidInput("max new tokens must be between 1 and 8192")
    model = get_model(wb, model_id)
    ds = get_dataset(wb, dataset_id)
    if model.kind not in LOCAL_KINDS:
        raise InvalidInput(f"{model.name!r} is served by {model.kind}: reference metrics need a local "
                           "version's weights")
    check_model_files(model)
    if ds.kind not in ("sft", "cpt"):
        raise InvalidInput(f"dataset {ds.name!r} holds {ds.kind} pairs: reference metrics take an SFT "
                           "dataset (or a CPT corpus for the loss)")
    if metric == "generation" and ds.kind != "sft":
        raise InvalidInput("BLEU/ROUGE compare generated answers with an SFT dataset's answers; "
                           f"{ds.name!r} is a {ds.kind} corpus (its loss can be measured)")
    folder = wb.settings.jobs_dir / f"reference-{secrets.token_hex(4)}"
    folder.mkdir(parents=True)
    cfg = reference_config(wb, model, ds, metric, max_samples, max_new_tokens, folder / "output")
    gpus = wb.hardware().gpus
    cfg.update(precision(gpus))
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    env = {"CUDA_VISIBLE_DEVICES": ",".join(str(g.index) for g in gpus[:1])} if gpus else {}
    with wb.write_lock, wb.session() as s:
        row = ReferenceEval(model_id=model.id, dataset_id=ds.id, metric=metric, max_samples=max_samples)
        s.add(row)
        s.commit()
        s.refresh(row)
    spec = JobSpec(command=[cli_path(), "train", str(folder / "config.yaml")], cwd=folder,
                   log_path=folder / "job.log", env=env, progress_path=folder / "output" / TRAINER_LOG,
                   resources=frozenset({f"gpu:{gpus[0].index}"} if gpus else {"cpu"}),
                   title=f"{'loss' if metric == 'loss' else 'BLEU/ROUGE'} of {model.name} on {ds.name}",
                   params={"reference_eval_id": row.id, "output_dir": str(folder / "output"),
                           "metric": metric})
    return attach_job(wb, ReferenceEval, row.id, wb.jobs.submit(REFERENCE, spec).id)


def read_metrics(output_dir: Path, metric: str) -> dict[str, float]:
    """LLaMA-Factory's figures, with the perplexity added where its SFT stage leaves it out."""
    import json

    raw = json.loads((output_dir / RESULT_FILE[metric]).read_text())
    out = {k.split("_", 1)[1]: float(raw[k]) for k in KEEP[metric] if k in raw}
    if metric == "loss" and "perplexity" not in out and "loss" in out:
        out["perplexity"] = math.exp(out["loss"]) if out["loss"] < 700 else float("inf")
    return out


def finish_reference(wb: Workbench, s: Session, job: Job, outcome: Outcome) -> None:
    """Store the metrics only when LLaMA-Factory finished and wrote them."""
    default_finish(wb, s, job, outcome)
    row = s.get(ReferenceEval, job.params["reference_eval_id"])
    if row is None or job.status != "succeeded":
        return
    try:
        row.metrics = read_metrics(Path(job.params["output_dir"]), job.params["metric"])
    except (OSError, ValueError, KeyError) as e:
        job.status, job.error = "failed", f"LLaMA-Factory wrote no readable results: {e}"
        return
    s.add(row)
    job.result = {"reference_eval_id": row.id, "metrics": row.metrics}


REFERENCE_KIND = JobKind(REFERENCE, finish=finish_reference)


def list_reference_evals(wb: Workbench, model_id: int | None = None) -> list[ReferenceEval]:
    q = select(ReferenceEval).order_by(ReferenceEval.id.desc())
    if model_id is not None:
        q = q.where(ReferenceEval.model_id == model_id)
    with wb.session() as s:
        return list(s.exec(q))


def get_reference_eval(wb: Workbench, reference_id: int) -> ReferenceEval:
    return wb.row(ReferenceEval, reference_id, "reference eval")


def reference_json(wb: Workbench, row: ReferenceEval) -> dict[str, Any]:
    with wb.session() as s:
        job = s.get(Job, row.job_id) if row.job_id else None
        model, ds = s.get(ModelVersion, row.model_id), s.get(Dataset, row.dataset_id)
    view = wb.jobs.view(job, log_lines=5) if job else {}
    return {"id": row.id, "model_id": row.model_id, "model": model.name if model else None,
            "dataset_id": row.dataset_id, "dataset": ds.name if ds else None, "metric": row.metric,
            "max_samples": row.max_samples, "job_id": row.job_id, "status": job.status if job else "unknown",
            "error": job.error if job else None, "percent": view.get("percent"), "metrics": row.metrics,
            "created_at": row.created_at.isoformat() if row.created_at else None}
