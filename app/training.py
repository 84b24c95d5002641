"""Training runs: recipes → LLaMA-Factory YAML → a queued job → a registered model."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import sys
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from sqlmodel import select

from app.errors import Conflict, InvalidInput, NotFound
from app.hardware import Hardware, precision
from app.overrides import validate_overrides
from app.registry import check_model_files, get_model
from app.tables import Dataset, ModelVersion, Run, utcnow
from app.trainer_log import TRAINER_LOG, TrainerLogTail, summarise
from app.workbench import Workbench

RECIPES_DIR = Path(__file__).resolve().parent.parent / "recipes"
# Our stage names → LLaMA-Factory's `stage` values.
LF_STAGE = {"cpt": "pt", "sft": "sft", "dpo": "dpo", "kto": "kto"}
# The hyper-parameters an experiment table shows next to the metrics.
KEY_PARAMS = ("finetuning_type", "learning_rate", "num_train_epochs", "per_device_train_batch_size",
              "gradient_accumulation_steps", "lora_rank", "pref_beta", "cutoff_len", "val_size")
RUN_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,80}$")


@dataclass(frozen=True)
class Recipe:
    name: str
    title: str
    description: str
    stage: str
    finetuning_type: str
    defaults: dict[str, Any]


def load_recipes(recipes_dir: Path = RECIPES_DIR) -> dict[str, Recipe]:
    recipes = {}
    for path in sorted(recipes_dir.glob("*.yaml")):
        raw = yaml.safe_load(path.read_text()) or {}
        if "stage" not in raw:
            continue  # not a training recipe (e.g. a DeepSpeed config)
        if raw["stage"] not in LF_STAGE:
            raise ValueError(f"{path.name}: unknown stage {raw['stage']!r}")
        recipes[path.stem] = Recipe(
            name=path.stem,
            title=raw.get("title", path.stem),
            description=raw.get("description", ""),
            stage=raw["stage"],
            finetuning_type=raw.get("finetuning_type", "lora"),
            defaults=dict(raw.get("defaults") or {}),
        )
    return recipes


def get_recipe(name: str) -> Recipe:
    recipes = load_recipes()
    if name not in recipes:
        raise NotFound(f"no recipe {name!r}; available: {', '.join(sorted(recipes))}")
    return recipes[name]


@dataclass
class TrainRequest:
    recipe: str
    model_id: int
    dataset_ids: list[int]
    name: str | None = None
    # Extra LLaMA-Factory keys on top of the recipe defaults (validated).
    overrides: dict[str, Any] = field(default_factory=dict)
    # GPU indexes to train on; empty = every visible GPU (or the CPU when there is none).
    gpus: list[int] = field(default_factory=list)
    # A DeepSpeed config shipped in recipes/ (ds_z2.json, ds_z3.json) or None.
    deepspeed: str | None = None
    # Fraction of the data held out for evaluation (0 = none).
    val_size: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RunPlan:
    """A fully resolved run: the YAML, the trainer environment and the GPUs it holds."""

    config: dict[str, Any]
    env: dict[str, str]
    gpus: tuple[int, ...]
    recipe: Recipe
    model: ModelVersion
    datasets: list[Dataset]


def build_config(
    wb: Workbench, recipe: Recipe, model: ModelVersion, datasets: list[Dataset], output_dir: Path
) -> dict[str, Any]:
    """The LLaMA-Factory YAML for a run before hardware settings and user overrides."""
    cfg: dict[str, Any] = {
        "model_name_or_path": model.base_path,
        "template": model.template,
        "trust_remote_code": False,
        "stage": LF_STAGE[recipe.stage],
        "do_train": True,
        "finetuning_type": recipe.finetuning_type,
    }
    if model.adapter_path:
        if recipe.finetuning_type != "lora":
            raise InvalidInput(
                f"{model.name!r} is a LoRA adapter; merge it before a {recipe.finetuning_type} run"
            )
        # Earlier adapters are merged in memory and a fresh adapter is trained, so a
        # DPO reference model is the SFT model, not the raw base.
        cfg["adapter_name_or_path"] = model.adapter_path
        cfg["create_new_adapter"] = True
    cfg.update(recipe.defaults)
    cfg.update(
        {
            "dataset": ",".join(d.name for d in datasets),
            "dataset_dir": str(wb.settings.datasets_dir),
            "output_dir": str(output_dir),
            "logging_steps": 1,
            "overwrite_cache": True,
            "report_to": "tensorboard",
        }
    )
    return cfg


def _check_datasets(wb: Workbench, recipe: Recipe, ids: list[int]) -> list[Dataset]:
    if not ids:
        raise InvalidInput("pick at least one dataset")
    with wb.session() as s:
        out = []
        for ds_id in ids:
            ds = s.get(Dataset, ds_id)
            if ds is None:
                raise NotFound(f"no dataset with id {ds_id}")
            if ds.kind != recipe.stage:
                raise InvalidInput(
                    f"dataset {ds.name!r} is {ds.kind} data; a {recipe.stage} run needs {recipe.stage}"
                )
            if not Path(ds.path).is_file():
                raise InvalidInput(f"dataset {ds.name!r}: file {ds.path} is missing")
            out.append(ds)
    return out


def plan_run(
    wb: Workbench, req: TrainRequest, run_folder: Path, hardware: Hardware | None = None
) -> RunPlan:
    """Resolve a request into the exact YAML and environment, refusing what cannot run."""
    recipe = get_recipe(req.recipe)
    model = get_model(wb, req.model_id)
    check_model_files(model)
    datasets = _check_datasets(wb, recipe, req.dataset_ids)
    hw = hardware or wb.hardware()
    try:
        gpus = hw.select(req.gpus)
    except ValueError as e:
        raise InvalidInput(str(e)) from e
    overrides = dict(req.overrides or {})
    if req.deepspeed:
        overrides["deepspeed"] = req.deepspeed
    if req.val_size:
        if not 0 < req.val_size < 1:
            raise InvalidInput("val_size must be between 0 and 1 (a fraction of the rows)")
        overrides.setdefault("val_size", req.val_size)
        overrides.setdefault("eval_strategy", "steps")
        overrides.setdefault("eval_steps", max(1, int(overrides.get("logging_steps", 10))))
        overrides.setdefault("per_device_eval_batch_size", 4)
    overrides = validate_overrides(
        overrides, recipes_dir=RECIPES_DIR, run_dir=run_folder,
        allow_unsafe=wb.settings.allow_unsafe_overrides,
    )
    cfg = build_config(wb, recipe, model, datasets, run_folder / "output")
    if "bf16" not in overrides and "fp16" not in overrides:
        cfg.update(precision(gpus))
    cfg.update(overrides)
    if cfg.get("quantization_bit"):
        if cfg.get("finetuning_type") != "lora":
            raise InvalidInput("QLoRA (quantization_bit) works only with finetuning_type: lora")
        if not gpus:
            raise InvalidInput("QLoRA needs a CUDA GPU; this machine has none. "
                               "Pick a LoRA or full recipe to train on the CPU.")
        if cfg.get("quantization_method", "bnb") == "bnb" and not hw.has_bitsandbytes:
            raise InvalidInput("QLoRA needs the bitsandbytes package: pip install bitsandbytes")
    if cfg.get("deepspeed") and len(gpus) < 1:
        raise InvalidInput("DeepSpeed needs at least one CUDA GPU")
    env: dict[str, str] = {"TENSORBOARD_LOGGING_DIR": str(run_folder / "tensorboard")}
    if gpus:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g.index) for g in gpus)
    if len(gpus) > 1:
        env["FORCE_TORCHRUN"] = "1"  # one process per GPU through torchrun
    return RunPlan(cfg, env, tuple(g.index for g in gpus), recipe, model, datasets)


def _default_run_name(model: ModelVersion, recipe: Recipe) -> str:
    return f"{model.name}-{recipe.stage}-{datetime.now():%Y%m%d-%H%M%S}"


def _write_yaml(path: Path, cfg: dict[str, Any]) -> None:
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))


def start_run(wb: Workbench, req: TrainRequest) -> Run:
    """Validate a request, write the run folder and its YAML, and queue the job."""
    recipe = get_recipe(req.recipe)
    model = get_model(wb, req.model_id)
    name = req.name or _default_run_name(model, recipe)
    if not RUN_NAME_RE.match(name):
        raise InvalidInput(f"run name {name!r}: use letters, digits, '_', '-' or '.'")
    with wb.session() as s:
        if s.exec(select(Run).where(Run.name == name)).first():
            raise Conflict(f"a run named {name!r} already exists")
    folder = wb.settings.runs_dir / name
    plan = plan_run(wb, req, folder)
    if folder.exists():
        shutil.rmtree(folder)  # a folder with no DB row: debris of a failed start
    folder.mkdir(parents=True)
    _write_yaml(folder / "config.yaml", plan.config)
    datasets = plan.datasets
    snapshot = {
        "request": req.as_dict(),
        "model": {"id": model.id, "name": model.name, "base": model.base_path,
                  "adapter": model.adapter_path},
        "datasets": [{"id": d.id, "name": d.name, "sha256": d.sha256} for d in datasets],
        "env": plan.env,
    }
    (folder / "snapshot.json").write_text(json.dumps(snapshot, indent=2))
    run = Run(
        name=name,
        stage=recipe.stage,
        status="created",
        model_id=model.id,
        dataset_ids=[d.id for d in datasets],
        recipe=recipe.name,
        request=req.as_dict(),
        config=plan.config,
        env=plan.env,
        gpus=",".join(str(i) for i in plan.gpus),
        output_dir=str(folder / "output"),
    )
    try:
        with wb.session() as s:
            s.add(run)
            s.commit()
            s.refresh(run)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return wb.jobs.submit(run.id)


def newest_checkpoint(run: Run) -> Path | None:
    out = Path(run.output_dir)
    ckpts = [p for p in out.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()]
    return max(ckpts, key=lambda p: int(p.name.split("-")[-1]), default=None)


def resume_run(wb: Workbench, run_id: int) -> Run:
    """Continue a stopped run from its newest checkpoint, in the same folder."""
    run = get_run(wb, run_id)
    if run.status not in ("cancelled", "interrupted", "failed"):
        raise Conflict(f"run {run.name!r} is {run.status}; only stopped runs can be resumed")
    ckpt = newest_checkpoint(run)
    if ckpt is None:
        raise InvalidInput(f"run {run.name!r} saved no checkpoint to resume from; re-run it instead")
    cfg = dict(run.config)
    cfg["resume_from_checkpoint"] = str(ckpt)
    _write_yaml(run_dir(run) / "config.yaml", cfg)
    with wb.session() as s:
        row = s.get(Run, run_id)
        row.config = cfg
        row.finished_at = None
        row.returncode = None
        s.add(row)
        s.commit()
    return wb.jobs.submit(run_id)


def rerun(wb: Workbench, run_id: int, name: str | None = None, **changes: Any) -> Run:
    """Start a new run from an earlier run's request, with ``changes`` applied
    (``overrides`` are merged into the earlier overrides)."""
    old = get_run(wb, run_id)
    base = dict(old.request) or {"recipe": old.recipe, "model_id": old.model_id,
                                 "dataset_ids": old.dataset_ids}
    extra = changes.pop("overrides", None) or {}
    base.update(changes)
    base["overrides"] = {**(base.get("overrides") or {}), **extra}
    base["name"] = name
    return start_run(wb, TrainRequest(**base))


def delete_run(wb: Workbench, run_id: int) -> None:
    """Remove a finished run's folder and row. A run whose model is registered stays."""
    run = get_run(wb, run_id)
    if run.status in ("queued", "running"):
        raise Conflict(f"run {run.name!r} is {run.status}; cancel it first")
    with wb.session() as s:
        model = s.exec(select(ModelVersion).where(ModelVersion.run_id == run_id)).first()
        if model is not None:
            raise Conflict(f"model {model.name!r} was trained by run {run.name!r}; "
                           "delete the model first")
        s.delete(s.get(Run, run_id))
        s.commit()
    shutil.rmtree(run_dir(run), ignore_errors=True)


def run_dir(run: Run) -> Path:
    return Path(run.output_dir).parent


def cli_path() -> str:
    """``llamafactory-cli`` from the interpreter's own environment, else PATH."""
    local = Path(sys.executable).parent / "llamafactory-cli"
    return str(local) if local.exists() else (shutil.which("llamafactory-cli") or str(local))


def launch_command(run: Run) -> list[str]:
    return [cli_path(), "train", str(run_dir(run) / "config.yaml")]


def shell_command(run: Run) -> str:
    """The command a user can paste to rerun this exact run by hand."""
    env = [f"{k}={shlex.quote(v)}" for k, v in sorted(run.env.items())]
    return " ".join(env + [shlex.join(["llamafactory-cli", "train", str(run_dir(run) / "config.yaml")])])


def tensorboard_command(run: Run) -> str:
    return shlex.join(["tensorboard", "--logdir", str(run_dir(run) / "tensorboard")])


def launch_env(wb: Workbench, run: Run) -> dict[str, str]:
    env = dict(os.environ)
    env.update(wb.settings.job_env)
    env.update(run.env)
    # Makes SIGABRT a clean stop that still saves the model (LLaMA-Factory's callback).
    env["LLAMABOARD_ENABLED"] = "1"
    env["LLAMABOARD_WORKDIR"] = run.output_dir
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def _saved_model(output_dir: Path, finetuning_type: str) -> bool:
    if finetuning_type == "lora":
        return (output_dir / "adapter_config.json").is_file()
    return (output_dir / "config.json").is_file()


def finalize_run(
    wb: Workbench,
    run_id: int,
    returncode: int | None,
    cancelled: bool = False,
    error: str | None = None,
) -> Run:
    """Record how a run ended; a successful one becomes a new model version."""
    from app.jobs import LOG_NAME, log_tail

    with wb.session() as s:
        run = s.get(Run, run_id)
        out = Path(run.output_dir)
        tail = TrainerLogTail(out / TRAINER_LOG)
        tail.poll()
        metrics = summarise(tail.records)
        results = out / "all_results.json"
        if results.is_file():
            metrics.update(json.loads(results.read_text()))
        ft = run.config.get("finetuning_type", "lora")
        saved = _saved_model(out, ft)
        finished_ok = saved and (returncode == 0 or (returncode is None and results.is_file()))
        run.returncode = returncode
        run.metrics = metrics
        run.finished_at = utcnow()
        if cancelled:
            run.status = "cancelled"
        elif finished_ok and error is None:
            run.status = "succeeded"
        elif returncode is None and error is None:
            run.status = "interrupted"
            run.error = "the trainer stopped before finishing"
        elif returncode is not None and returncode < 0:
            run.status = "interrupted"  # killed from outside; resumable from a checkpoint
            run.error = f"the trainer was killed by signal {-returncode}\n" + log_tail(
                run_dir(run) / LOG_NAME, 10)
        else:
            run.status = "failed"
            run.error = error or (
                f"llamafactory-cli exited with code {returncode}\n"
                + log_tail(run_dir(run) / LOG_NAME, 25)
            )
        if run.status == "succeeded":
            run.output_model_id = _register_output(s, run, ft, wb.settings.auto_arena)
        s.add(run)
        s.commit()
        s.refresh(run)
    return run


def _register_output(s, run: Run, finetuning_type: str, in_arena: bool) -> int:
    parent = s.get(ModelVersion, run.model_id)
    name = run.name
    if s.exec(select(ModelVersion).where(ModelVersion.name == name)).first():
        name = f"{run.name}-run{run.id}"
    if finetuning_type == "lora":
        chain = [p for p in (parent.adapter_path or "").split(",") if p] + [run.output_dir]
        base, adapter = parent.base_path, ",".join(chain)
    else:
        base, adapter = run.output_dir, None
    mv = ModelVersion(
        name=name,
        kind="adapter" if adapter else "full",
        base_path=base,
        adapter_path=adapter,
        template=parent.template,
        finetuning_type=finetuning_type,
        parent_id=parent.id,
        run_id=run.id,
        in_arena=in_arena,
        meta={"metrics": run.metrics, "recipe": run.recipe},
    )
    s.add(mv)
    s.flush()
    return mv.id


def list_runs(wb: Workbench) -> list[Run]:
    with wb.session() as s:
        return list(s.exec(select(Run).order_by(Run.id.desc())))


def get_run(wb: Workbench, run_id: int) -> Run:
    with wb.session() as s:
        run = s.get(Run, run_id)
    if run is None:
        raise NotFound(f"no run with id {run_id}")
    return run


def run_view(wb: Workbench, run_id: int) -> dict[str, Any]:
    """Everything the live view shows for a run: status, progress, curves, log tail."""
    from app.jobs import LOG_NAME, log_tail

    run = get_run(wb, run_id)
    tail = wb.jobs.progress(run)
    last = tail.last or {}
    points = [
        {"step": r["current_steps"], "value": r[key], "series": key}
        for r in tail.records
        for key in ("loss", "eval_loss", "accuracy")
        if key in r and "current_steps" in r
    ]
    percent = last.get("percentage", 100.0 if run.status == "succeeded" else 0.0)
    return {
        "id": run.id,
        "name": run.name,
        "status": run.status,
        "stage": run.stage,
        "percent": float(percent),
        "step": last.get("current_steps", 0),
        "total_steps": last.get("total_steps", 0),
        "elapsed": last.get("elapsed_time", ""),
        "eta": last.get("remaining_time", ""),
        "points": points,
        "log": log_tail(run_dir(run) / LOG_NAME, 15),
        "command": shell_command(run),
        "error": run.error,
        "metrics": run.metrics,
        "output_model_id": run.output_model_id,
    }
