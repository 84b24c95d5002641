"""The one data model: SQLModel tables for everything Forgeloop stores."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Column, UniqueConstraint
from sqlalchemy.orm import relationship
from sqlmodel import Field, Relationship, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


class SchemaInfo(SQLModel, table=True):
    __tablename__ = "schema_info"
    id: int = Field(default=1, primary_key=True)
    version: int


class Dataset(SQLModel, table=True):
    __tablename__ = "datasets"
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(unique=True, index=True)
    # What the rows are for: sft | dpo | kto | cpt
    kind: str
    # Row layout: alpaca | messages | preference | text
    format: str
    path: str
    num_rows: int
    sha256: str = Field(index=True)
    source: str = "upload"  # upload | votes | generated
    meta: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    created_at: datetime = Field(default_factory=utcnow)


class ModelVersion(SQLModel, table=True):
    __tablename__ = "models"
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(unique=True, index=True)
    # base | adapter | full (local weights) | ollama | openai (served elsewhere)
    kind: str
    # Root weights (a local dir or a Hub id); adapters are applied on top of it.
    # For ollama/openai models: the model name the server knows (meta["endpoint"] is its URL).
    base_path: str
    adapter_path: str | None = None
    template: str = "chatml"
    finetuning_type: str = "lora"
    parent_id: int | None = Field(default=None, foreign_key="models.id")
    run_id: int | None = Field(default=None, foreign_key="runs.id")
    in_arena: bool = True
    meta: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    created_at: datetime = Field(default_factory=utcnow)


class Job(SQLModel, table=True):
    """A long action run as a subprocess: its lifecycle, whatever its kind."""

    __tablename__ = "jobs"
    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(index=True)  # train | starter | ...
    title: str = ""
    # queued | starting | running | succeeded | failed | cancelled | interrupted
    status: str = Field(default="queued", index=True)
    command: list[str] = Field(default_factory=list, sa_column=Column(JSON))
    # Extra environment on top of os.environ and the settings' job_env.
    env: dict[str, str] = Field(default_factory=dict, sa_column=Column(JSON))
    cwd: str = ""
    log_path: str = ""
    progress_path: str | None = None
    result_path: str | None = None
    # Exclusive resources it holds while active ("gpu:0,gpu:1", "cpu"; "" = none).
    resources: str = ""
    pid: int | None = None
    # Process start time, so a reused pid is not mistaken for our process.
    pid_started: float | None = None
    returncode: int | None = None
    cancel_requested: bool = False
    # The last progress record's summary, kept once the job ended.
    progress: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    # Kind-specific inputs of the finish step (e.g. where to move the output).
    params: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    result: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    error: str | None = None
    created_at: datetime = Field(default_factory=utcnow)
    started_at: datetime | None = None
    finished_at: datetime | None = None


class Run(SQLModel, table=True):
    """A training run: what was asked and what it produced. Its lifecycle is its job's."""

    __tablename__ = "runs"
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(unique=True, index=True)
    stage: str  # pt | sft | dpo | kto
    model_id: int = Field(foreign_key="models.id")
    dataset_ids: list[int] = Field(default_factory=list, sa_column=Column(JSON))
    recipe: str | None = None
    # What the user asked for (recipe, overrides, GPUs): the basis of a re-run.
    request: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    # The exact LLaMA-Factory YAML, as written to config.yaml.
    config: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    output_dir: str
    metrics: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    output_model_id: int | None = None
    job_id: int | None = Field(default=None, foreign_key="jobs.id")
    job: Job | None = Relationship(sa_relationship=relationship("Job", lazy="joined"))
    created_at: datetime = Field(default_factory=utcnow)

    # The lifecycle, read through the job (a run always has one once it is stored).
    @property
    def status(self) -> str:
        return self.job.status if self.job else "created"

    @property
    def error(self) -> str | None:
        return self.job.error if self.job else None

    @property
    def returncode(self) -> int | None:
        return self.job.returncode if self.job else None

    @property
    def env(self) -> dict[str, str]:
        return self.job.env if self.job else {}

    @property
    def gpus(self) -> str:
        held = (self.job.resources if self.job else "").split(",")
        return ",".join(r.removeprefix("gpu:") for r in held if r.startswith("gpu:"))


class Battle(SQLModel, table=True):
    __tablename__ = "battles"
    id: int | None = Field(default=None, primary_key=True)
    # Side A and side B as the voter saw them (already randomised).
    model_a_id: int = Field(foreign_key="models.id")
    model_b_id: int = Field(foreign_key="models.id")
    mode: str = "named"  # named | anonymous | judge | pair | annotation (the last three: offline pairs)
    voter: str = "local"
    gen_settings: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    created_at: datetime = Field(default_factory=utcnow)


class BattleTurn(SQLModel, table=True):
    __tablename__ = "battle_turns"
    __table_args__ = (UniqueConstraint("battle_id", "turn"),)
    id: int | None = Field(default=None, primary_key=True)
    battle_id: int = Field(foreign_key="battles.id", index=True)
    turn: int
    # The identical history (ending with the user's message) both sides answered.
    messages: list[dict[str, str]] = Field(default_factory=list, sa_column=Column(JSON))
    answer_a: str = ""
    answer_b: str = ""
    # Per side: ttft_s, total_s, tokens, tokens_per_s, finish ("stop" | "length" | "error").
    timings: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    # Generation settings both sides used for this turn.
    gen_settings: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    created_at: datetime = Field(default_factory=utcnow)


class Vote(SQLModel, table=True):
    __tablename__ = "votes"
    # One vote per turn, enforced by the database.
    __table_args__ = (UniqueConstraint("battle_id", "turn"),)
    id: int | None = Field(default=None, primary_key=True)
    battle_id: int = Field(foreign_key="battles.id", index=True)
    turn: int
    choice: str  # a | b | tie | both_bad
    voter: str = "local"
    flags: list[str] = Field(default_factory=list, sa_column=Column(JSON))
    created_at: datetime = Field(default_factory=utcnow)


class Deployment(SQLModel, table=True):
    __tablename__ = "deployments"
    id: int | None = Field(default=None, primary_key=True)
    model_id: int = Field(foreign_key="models.id")
    target: str  # ollama | hub | openai
    name: str
    status: str = "pending"
    url: str | None = None
    meta: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    created_at: datetime = Field(default_factory=utcnow)


class VoterAccount(SQLModel, table=True):
    """A person allowed into the shared voter app (arena only)."""

    __tablename__ = "voter_accounts"
    id: int | None = Field(default=None, primary_key=True)
    username: str = Field(unique=True, index=True)
    # PBKDF2-SHA256 "iterations$salt$hash" (hex); never the password itself.
    password_hash: str
    invite_id: int | None = Field(default=None, foreign_key="voter_invites.id")
    disabled: bool = False
    created_at: datetime = Field(default_factory=utcnow)


class VoterInvite(SQLModel, table=True):
    """An invite code: a voter signs in with any new name and the code as password."""

    __tablename__ = "voter_invites"
    id: int | None = Field(default=None, primary_key=True)
    code: str = Field(unique=True, index=True)
    max_uses: int = 1
    uses: int = 0
    note: str = ""
    created_at: datetime = Field(default_factory=utcnow)


class PairLabel(SQLModel, table=True):
    """A label on a queued pair (a battle of mode ``judge``, or ``pair`` when no judge saw it):
    the LLM judge's or a person's from the annotation queue. ``vote_id`` is the Vote that
    carries it into DPO snapshots."""

    __tablename__ = "pair_labels"
    __table_args__ = (UniqueConstraint("battle_id", "source", "labeler"),)
    id: int | None = Field(default=None, primary_key=True)
    battle_id: int = Field(foreign_key="battles.id", index=True)
    source: str  # judge | human
    labeler: str  # the judge model's name, or the person
    choice: str  # a | b | tie | both_bad, in the battle's A/B terms
    vote_id: int | None = Field(default=None, foreign_key="votes.id")
    rationale: str = ""
    # Judge: both prompts, both raw replies and verdicts, consistent. Human: the shown order.
    meta: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    created_at: datetime = Field(default_factory=utcnow)


class EvalSuite(SQLModel, table=True):
    """One version of a named eval suite. Editing makes a new row (version + 1), so a run
    keeps pointing at exactly the prompts and checks it ran."""

    __tablename__ = "eval_suites"
    __table_args__ = (UniqueConstraint("name", "version"),)
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True)
    version: int = 1
    # [{"prompt": str, "checks": [check, ...]}]: a check is {"type", "value"} (app/evals/checks.py).
    prompts: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON))
    # Checks applied to every prompt, after its own.
    checks: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON))
    # {"samples": n, "temperature": t, "max_new_tokens": m}; greedy, one sample by default.
    sampling: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    source: str = "pasted"  # pasted | dataset:<id>
    created_at: datetime = Field(default_factory=utcnow)


class EvalRun(SQLModel, table=True):
    """A model version run on a suite version (mode ``checks``), and optionally judged against
    a baseline in both orders (mode ``pairwise``). Its lifecycle is its job's; its answers are
    EvalResult rows, written by the job's finish step all at once."""

    __tablename__ = "eval_runs"
    id: int | None = Field(default=None, primary_key=True)
    suite_id: int = Field(foreign_key="eval_suites.id", index=True)
    model_id: int = Field(foreign_key="models.id", index=True)
    mode: str = "checks"  # checks | pairwise
    baseline_id: int | None = Field(default=None, foreign_key="models.id")
    judge_model_id: int | None = Field(default=None, foreign_key="models.id")
    job_id: int | None = Field(default=None, foreign_key="jobs.id")
    # pass_rate (and win_rate in pairwise mode), each with its 95% interval; empty until done.
    summary: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    created_at: datetime = Field(default_factory=utcnow)


class EvalResult(SQLModel, table=True):
    """One sample's answer to one suite prompt in a run, with every check's result."""

    __tablename__ = "eval_results"
    __table_args__ = (UniqueConstraint("run_id", "prompt_index", "sample"),)
    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="eval_runs.id", index=True)
    prompt_index: int
    sample: int = 0
    prompt: str = ""
    answer: str = ""
    passed: bool = False
    checks: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON))
    # Pairwise: the baseline's answer and the judge's verdict (a = candidate, b = baseline).
    baseline_answer: str | None = None
    choice: str | None = None
    consistent: bool | None = None
    meta: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))


class EvalGate(SQLModel, table=True):
    """A gate on a suite (by name, so it outlives edits): a newly trained version joins the
    arena, or may be deployed, only if its pass rate on the suite is not below its parent's
    by more than ``margin``. Gated suites run on every new trained version."""

    __tablename__ = "eval_gates"
    suite_name: str = Field(primary_key=True)
    margin: float = 0.05
    created_at: datetime = Field(default_factory=utcnow)


class ReferenceEval(SQLModel, table=True):
    """LLaMA-Factory's own metrics of a version on a dataset: eval loss and perplexity, or
    BLEU-4 and ROUGE of generated answers. ``metrics`` stays empty unless the job succeeded."""

    __tablename__ = "reference_evals"
    id: int | None = Field(default=None, primary_key=True)
    model_id: int = Field(foreign_key="models.id", index=True)
    dataset_id: int = Field(foreign_key="datasets.id", index=True)
    metric: str = "loss"  # loss | generation
    max_samples: int = 200
    job_id: int | None = Field(default=None, foreign_key="jobs.id")
    metrics: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    created_at: datetime = Field(default_factory=utcnow)


class ModelWorker(SQLModel, table=True):
    """A worker process serving one local model over HTTP (app/inference/workers.py). Rows
    are shared by the app and its job processes, so each finds the workers the others
    started; ``owner_pid`` is the process that stops it on shutdown."""

    __tablename__ = "model_workers"
    id: int | None = Field(default=None, primary_key=True)
    # No foreign key: a deleted version's worker is stopped after its row is gone.
    model_id: int = Field(unique=True, index=True)
    served_name: str  # what its /v1/models must answer: id and a fingerprint of the weights
    port: int
    pid: int | None = None
    pid_started: float | None = None
    owner_pid: int | None = None
    state: str = "starting"  # starting | ready
    backend: str = "huggingface"
    gpu: int | None = None  # None: on the CPU
    memory_fraction: float | None = None
    memory_bytes: int = 0  # the estimate it was placed with
    threads: int | None = None
    log_path: str = ""
    restarts: int = 0
    last_error: str | None = None
    started_at: datetime = Field(default_factory=utcnow)
    last_used_at: datetime = Field(default_factory=utcnow)


class TrainPreset(SQLModel, table=True):
    """A named Train form: recipe, model, datasets and overrides, loaded back in one click."""

    __tablename__ = "train_presets"
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(unique=True, index=True)
    request: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    created_at: datetime = Field(default_factory=utcnow)
