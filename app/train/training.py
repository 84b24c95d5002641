"""Training runs: recipes → LLaMA-Factory YAML → a queued job → a registered model.

Training is the ``train`` job kind: `start_run` plans the YAML and queues a
``llamafactory-cli train`` job; `finish_training` (run by the job runner when the trainer
ends, or on restart when it ended while the app was down) records the metrics and
registers the new model version in the same transaction as the job's outcome.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import signal
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from sqlmodel import Session, select

from app.core.errors import Conflict, InvalidInput, NotFound
from app.core.hardware import Hardware, precision
from app.core.jobs import JobKind, JobSpec, Outcome, default_finish, tool_path
from app.core.progress_log import TRAINER_LOG, ProgressTail, log_tail, summarise
from app.core.tables import Dataset, EvalSuite, Job, ModelVersion, Run
from app.models.registry import check_model_files, get_model, model_system_prompt
from app.train import memory
from app.train.overrides import validate_overrides

if TYPE_CHECKING:
    from app.core.workbench import Workbench

RECIPES_DIR = Path(__file__).resolve().parents[2] / "recipes"
# Our stage names → LLaMA-Factory's `stage` values.
LF_STAGE = {"cpt": "pt", "sft": "sft", "dpo": "dpo", "kto": "kto"}
# The hyper-parameters an experiment table shows next to the metrics.
KEY_PARAMS = ("finetuning_type", "learning_rate", "num_train_epochs", "per_device_train_batch_size",
              "gradient_accumulation_steps", "lora_rank", "pref_beta", "cutoff_len", "val_size")
LOG_NAME = "train.log"
ACTIVE = ("queued", "starting", "running")
RUN_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,80}$")


@dataclass(frozen=True)
class Recipe:
    name: str
    title: str
    description: str
    stage: str
    finetuning_type: str
    defaults: dict[str, Any]
    # Eval suites (names) to run on every version this recipe makes, unless the run says.
    eval_suites: list[str] = field(default_factory=list)


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
            eval_suites=[str(n) for n in raw.get("eval_suites") or []],
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
    # Eval suites (names) to run on the new version when the run succeeds; None = the
    # recipe's, [] = none. A judge is needed when a suite has rubric checks.
    eval_suites: list[str] | None = None
    eval_judge_id: int | None = None

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
    # The memory estimate and the micro-batch chosen, with the reason (app/train/memory.py).
    memory: dict[str, Any] = field(default_factory=dict)


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
    if system := model_system_prompt(model):
        # The version's system prompt is its default; a user's default_system override wins.
        cfg["default_system"] = system
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
    fitted = memory.fit_batch(cfg, memory.read_shape(model.base_path), gpus, req.overrides or {})
    packed = memory.plan_packing(cfg, recipe.stage, memory.row_tokens([d.path for d in datasets]),
                                 sum(d.num_rows for d in datasets), gpus, req.overrides or {})
    if packed:
        fitted = {**fitted, "packing": packed, "reason": f"{fitted['reason']}; {packed}"}
    env: dict[str, str] = {"TENSORBOARD_LOGGING_DIR": str(run_folder / "tensorboard")}
    if gpus:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g.index) for g in gpus)
    if len(gpus) > 1:
        env["FORCE_TORCHRUN"] = "1"  # one process per GPU through torchrun
    return RunPlan(cfg, env, tuple(g.index for g in gpus), recipe, model, datasets, fitted)


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
    check_eval_suites(wb, req.eval_suites if req.eval_suites is not None else recipe.eval_suites,
                      req.eval_judge_id)
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
        "memory": plan.memory,
    }
    (folder / "snapshot.json").write_text(json.dumps(snapshot, indent=2))
    run = Run(
        name=name,
        stage=recipe.stage,
        model_id=model.id,
        dataset_ids=[d.id for d in datasets],
        recipe=recipe.name,
        request=req.as_dict(),
        config=plan.config,
        output_dir=str(folder / "output"),
    )
    try:
        return queue_run(wb, run, job_spec(folder, name, plan.env, plan.gpus))
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


def check_eval_suites(wb: Workbench, names: list[str], judge_id: int | None) -> None:
    """Refuse, before anything trains, suites that do not exist or need a missing judge."""
    if not names:
        return
    with wb.session() as s:
        latest = {x.name: x for x in s.exec(select(EvalSuite).where(EvalSuite.name.in_(names))
                                              .order_by(EvalSuite.version))}
    missing = [n for n in names if n not in latest]
    if missing:
        raise InvalidInput(f"no eval suite named {', '.join(map(repr, missing))}")
    def has_rubric(suite: EvalSuite) -> bool:
        every = [*suite.checks, *(c for p in suite.prompts for c in p.get("checks", []))]
        return any(c.get("type") == "rubric" for c in every)

    rubric = [n for n, x in latest.items() if has_rubric(x)]
    if rubric and judge_id is None:
        raise InvalidInput(f"suite {rubric[0]!r} has rubric checks: pick a judge model for them")
    if judge_id is not None:
        get_model(wb, judge_id)


def queue_run(wb: Workbench, run: Run, spec: JobSpec) -> Run:
    """Store a run with its queued job: both appear together or not at all."""
    with wb.session() as s:
        run.job = wb.jobs.submit(TRAIN, spec, s)
        run.job_id = run.job.id
        s.add(run)
        s.commit()
    wb.jobs.poke()
    # As committed (queued): a fresh read could already see the runner starting it.
    return run


def job_spec(folder: Path, name: str, env: dict[str, str], gpus: tuple[int, ...]) -> JobSpec:
    """The trainer subprocess for a run folder; a CPU run holds the CPU, a GPU run its GPUs."""
    output = folder / "output"
    return JobSpec(
        command=[cli_path(), "train", str(folder / "config.yaml")],
        cwd=folder,
        log_path=folder / LOG_NAME,
        # LLAMABOARD_*: LLaMA-Factory's callback then turns SIGABRT into a clean stop that
        # still saves the model.
        env={**env, "LLAMABOARD_ENABLED": "1", "LLAMABOARD_WORKDIR": str(output)},
        progress_path=output / TRAINER_LOG,
        resources=frozenset(f"gpu:{g}" for g in gpus) or frozenset({"cpu"}),
        title=name,
    )


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
    step, last = _checkpoint_steps(ckpt)
    if last and step >= last:
        raise Conflict(f"run {run.name!r} already reached its last step ({step}) in {ckpt.name}; "
                       "nothing is left to train. Register that checkpoint as an adapter, or re-run.")
    _drop_progress_after(Path(run.output_dir) / TRAINER_LOG, step)
    cfg = dict(run.config)
    cfg["resume_from_checkpoint"] = str(ckpt)
    _write_yaml(run_dir(run) / "config.yaml", cfg)
    with wb.session() as s:
        row = s.get(Run, run_id)
        row.config = cfg
        s.add(row)
        s.commit()
    wb.jobs.requeue(run.job_id)
    return get_run(wb, run_id)


def _checkpoint_steps(ckpt: Path) -> tuple[int, int | None]:
    """(the checkpoint's step, the run's last step) from its trainer_state.json."""
    step = int(ckpt.name.split("-")[-1])
    try:
        state = json.loads((ckpt / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return step, None
    return int(state.get("global_step", step)), state.get("max_steps")


def _drop_progress_after(path: Path, step: int) -> None:
    """The trainer appends to its log on resume: forget the steps after the checkpoint, which
    will be trained again, so curves and metrics count each step once."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a torn last line from the stopped trainer
        if record.get("current_steps", 0) <= step:
            kept.append(line + "\n")
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(kept), encoding="utf-8")
    tmp.replace(path)


def rerun_half_batch(wb: Workbench, run_id: int) -> Run:
    """A new run like ``run_id`` at half its micro-batch and twice its accumulation (after
    the GPU ran out of memory)."""
    old = get_run(wb, run_id)
    if old.status in ("queued", "starting", "running"):
        raise Conflict(f"run {old.name!r} is {old.status}; cancel it first")
    return rerun(wb, run_id, overrides=memory.halved(old.config))


def preview_run(wb: Workbench, req: TrainRequest) -> dict[str, Any]:
    """What starting ``req`` would do, without starting it: the YAML, the environment, the
    GPUs and the memory plan (raises what starting would raise)."""
    plan = plan_run(wb, req, wb.settings.runs_dir / (req.name or "preview"))
    return {"config": plan.config, "env": plan.env, "gpus": list(plan.gpus), "memory": plan.memory}


def run_memory(run: Run) -> dict[str, Any]:
    """The memory plan a run was started with (from its snapshot; empty for older runs)."""
    try:
        return json.loads((run_dir(run) / "snapshot.json").read_text()).get("memory") or {}
    except (OSError, ValueError):
        return {}


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
    if run.status in ACTIVE:
        raise Conflict(f"run {run.name!r} is {run.status}; cancel it first")
    with wb.session() as s:
        model = s.exec(select(ModelVersion).where(ModelVersion.run_id == run_id)).first()
        if model is not None:
            raise Conflict(f"model {model.name!r} was trained by run {run.name!r}; "
                           "delete the model first")
        s.delete(s.get(Run, run_id))
        s.flush()
        if run.job_id is not None:
            wb.jobs.delete(run.job_id, s)
        s.commit()
    shutil.rmtree(run_dir(run), ignore_errors=True)


def run_dir(run: Run) -> Path:
    return Path(run.output_dir).parent


def cli_path() -> str:
    """``llamafactory-cli`` from the interpreter's own environment, else PATH."""
    return tool_path("llamafactory-cli")


def shell_command(run: Run) -> str:
    """The command a user can paste to rerun this exact run by hand."""
    env = [f"{k}={shlex.quote(v)}" for k, v in sorted(run.env.items()) if not k.startswith("LLAMABOARD_")]
    return " ".join(env + [shlex.join(["llamafactory-cli", "train", str(run_dir(run) / "config.yaml")])])


def tensorboard_command(run: Run) -> str:
    return shlex.join(["tensorboard", "--logdir", str(run_dir(run) / "tensorboard")])


def _saved_model(output_dir: Path, finetuning_type: str) -> bool:
    if finetuning_type == "lora":
        return (output_dir / "adapter_config.json").is_file()
    return (output_dir / "config.json").is_file()


def finish_training(wb: Workbench, s: Session, job: Job, outcome: Outcome) -> None:
    """Record how a trainer ended; a successful run becomes a new model version.

    Success is judged from the run folder, not only the exit code: a trainer that
    finished while Forgeloop was down (no exit code seen) succeeded when it saved its
    model and ``all_results.json``.
    """
    run = s.exec(select(Run).where(Run.job_id == job.id)).first()
    if run is None:  # the run row is gone: nothing to register
        default_finish(wb, s, job, outcome)
        return
    out = Path(run.output_dir)
    tail = ProgressTail(out / TRAINER_LOG)
    tail.poll()
    metrics = summarise(tail.records)
    results = out / "all_results.json"
    if results.is_file():
        metrics.update(json.loads(results.read_text()))
    run.metrics = metrics
    ft = run.config.get("finetuning_type", "lora")
    rc = outcome.returncode
    finished_ok = _saved_model(out, ft) and (rc == 0 or (rc is None and results.is_file()))
    if finished_ok and not outcome.cancelled:
        job.status = "succeeded"
        run.output_model_id = _register_output(s, run, ft, wb.settings.auto_arena)
    elif rc is None and not outcome.cancelled:
        log = log_tail(Path(job.log_path), 25)
        if "Traceback (most recent call last)" in log or "Error:" in log:
            job.status = "failed"
            job.error = "the trainer failed while Forgeloop was not running\n" + log
        else:
            job.status = "interrupted"
            job.error = "the trainer stopped while Forgeloop was not running, before it finished"
    elif rc == 0 and not outcome.cancelled:
        job.status = "failed"
        job.error = f"the trainer exited without saving a model in {out}"
    else:
        default_finish(wb, s, job, outcome)
        if job.status == "failed" and memory.out_of_memory(log_tail(Path(job.log_path), 60)):
            mb = run.config.get("per_device_train_batch_size", 1)
            job.error = (f"The GPU ran out of memory at micro-batch {mb}. Re-run at half the micro-batch "
                         "(the effective batch stays the same), or use LoRA/QLoRA or a shorter cutoff_len."
                         "\n\n" + (job.error or ""))
    s.add(run)


TRAIN = "train"
# SIGABRT: LLaMA-Factory's LLAMABOARD callback stops at the next step and saves the model.
TRAIN_KIND = JobKind(TRAIN, finish=finish_training, cancel_signal=signal.SIGABRT)


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
    meta: dict = {"metrics": run.metrics, "recipe": run.recipe}
    trained_system = (run.config or {}).get("default_system")
    if isinstance(trained_system, str) and trained_system.strip():
        meta["system_prompt"] = trained_system  # it chats with the prompt it was trained with
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
        meta=meta,
    )
    s.add(mv)
    s.flush()
    return mv.id


def list_runs(wb: Workbench) -> list[Run]:
    with wb.session() as s:
        return list(s.exec(select(Run).order_by(Run.id.desc())))


def active_run(wb: Workbench) -> Run | None:
    """The newest run still queued or training (what the Train tab re-attaches to)."""
    return next((r for r in list_runs(wb) if r.status in ACTIVE), None)


def get_run(wb: Workbench, run_id: int) -> Run:
    return wb.row(Run, run_id, "run")


def wait_run(wb: Workbench, run_id: int, timeout: float = 600.0) -> Run:
    """Block until the run's job has finished (for scripts and tests)."""
    wb.jobs.wait(get_run(wb, run_id).job_id, timeout)
    return get_run(wb, run_id)


def cancel_run(wb: Workbench, run_id: int) -> Run:
    wb.jobs.cancel(get_run(wb, run_id).job_id)
    return get_run(wb, run_id)


def run_view(wb: Workbench, run_id: int) -> dict[str, Any]:
    """Everything the live view shows for a run: status, progress, curves, log tail."""
    run = get_run(wb, run_id)
    tail = wb.jobs.progress(run.job)
    view = wb.jobs.view(run.job, tail=tail)
    points = [
        {"step": r["current_steps"], "value": r[key], "series": key}
        for r in tail.records
        for key in ("loss", "eval_loss", "accuracy")
        if key in r and "current_steps" in r
    ]
    view.update({
        "id": run.id,
        "name": run.name,
        "stage": run.stage,
        "points": points,
        "command": shell_command(run),
        "metrics": run.metrics,
        "output_model_id": run.output_model_id,
        "memory": run_memory(run),
    })
    return view
