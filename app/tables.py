"""The one data model: SQLModel tables for everything Forgeloop stores."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Column, UniqueConstraint
from sqlmodel import Field, SQLModel


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


class Run(SQLModel, table=True):
    __tablename__ = "runs"
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(unique=True, index=True)
    stage: str  # pt | sft | dpo | kto
    # queued | running | succeeded | failed | cancelled | interrupted
    status: str = "queued"
    model_id: int = Field(foreign_key="models.id")
    dataset_ids: list[int] = Field(default_factory=list, sa_column=Column(JSON))
    recipe: str | None = None
    # What the user asked for (recipe, overrides, GPUs): the basis of a re-run.
    request: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    # The exact LLaMA-Factory YAML, as written to config.yaml.
    config: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    # Extra environment for the trainer (CUDA_VISIBLE_DEVICES, FORCE_TORCHRUN, ...).
    env: dict[str, str] = Field(default_factory=dict, sa_column=Column(JSON))
    # GPU indexes the run holds ("" = CPU); runs sharing a GPU never overlap.
    gpus: str = ""
    output_dir: str
    pid: int | None = None
    # Process start time, so a reused pid is not mistaken for our trainer.
    pid_started: float | None = None
    returncode: int | None = None
    error: str | None = None
    metrics: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    output_model_id: int | None = None
    created_at: datetime = Field(default_factory=utcnow)
    started_at: datetime | None = None
    finished_at: datetime | None = None


class Battle(SQLModel, table=True):
    __tablename__ = "battles"
    id: int | None = Field(default=None, primary_key=True)
    # Side A and side B as the voter saw them (already randomised).
    model_a_id: int = Field(foreign_key="models.id")
    model_b_id: int = Field(foreign_key="models.id")
    mode: str = "named"  # named | anonymous
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
