"""The chat playground: one model, any registered one, with the arena's generation
settings; a conversation worth keeping becomes an SFT example, or its opening message a
battle in the arena."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.arena import battles
from app.core.errors import InvalidInput
from app.core.tables import Battle, Dataset
from app.data import datasets
from app.inference.chat_engines import model_engines
from app.inference.generation import Finish, GenSettings
from app.models.registry import get_model, list_models

if TYPE_CHECKING:
    from app.core.workbench import Workbench


def check_turns(messages: list[dict[str, Any]], last: str) -> list[dict[str, str]]:
    """User/assistant turns that alternate, start with the user and end with ``last``."""
    if not messages:
        raise InvalidInput("the conversation is empty")
    turns = []
    for i, m in enumerate(messages):
        role, content = m.get("role"), m.get("content")
        want = "user" if i % 2 == 0 else "assistant"
        if role != want:
            raise InvalidInput(f"message {i + 1} should be from the {want}, not {role!r}")
        if not isinstance(content, str) or not content.strip():
            raise InvalidInput(f"message {i + 1} has no text")
        turns.append({"role": role, "content": content})
    if turns[-1]["role"] != last:
        raise InvalidInput(f"the conversation should end with the {last}'s message")
    return turns


def chat_stream(wb: Workbench, model_id: int, messages: list[dict[str, Any]], gen: GenSettings
                ) -> Iterator[str | Finish]:
    """The model's answer to the conversation, piece by piece, then its Finish."""
    turns = check_turns(messages, "user")
    yield from model_engines(wb).engine(get_model(wb, model_id)).stream(turns, gen)


def free_name(wb: Workbench, name: str) -> str:
    """``name``, or ``name-2``, ``name-3``… when taken (datasets are snapshots: never rewritten)."""
    taken = {d.name.lower() for d in datasets.list_datasets(wb)}
    if name.lower() not in taken:
        return name
    n = 2
    while f"{name}-{n}".lower() in taken:
        n += 1
    return f"{name}-{n}"


def save_example(wb: Workbench, messages: list[dict[str, Any]], dataset_name: str,
                 system_prompt: str = "") -> Dataset:
    """The conversation as an SFT row, in a new dataset ``dataset_name``; when that name is
    taken, a new dataset holding the earlier one's rows plus this one (``name-2``, …)."""
    name = (dataset_name or "").strip()
    if not name:
        raise InvalidInput("give the dataset a name")
    turns = check_turns(messages, "assistant")
    if system_prompt.strip():
        turns = [{"role": "system", "content": system_prompt}, *turns]
    rows: list[Any] = [{"messages": turns}]
    meta: dict[str, Any] = {"from": "playground"}
    earlier = next((d for d in datasets.list_datasets(wb) if d.name.lower() == name.lower()), None)
    if earlier is not None:
        if earlier.kind != "sft":
            raise InvalidInput(f"dataset {earlier.name!r} is for {earlier.kind}, not SFT examples")
        rows = datasets.read_rows(Path(earlier.path)) + rows
        meta.update(parent_id=earlier.id, parent_name=earlier.name)
    return datasets.register_rows(wb, free_name(wb, name), "sft", rows, source="generated", meta=meta)


def to_arena(wb: Workbench, model_id: int, messages: list[dict[str, Any]], gen: GenSettings,
             opponent_id: int | None = None) -> Battle:
    """A new battle of the model against ``opponent_id`` (default: another arena model)
    on the conversation's first message; answered in the Arena tab or through the API."""
    first = check_turns(messages[:1], "user")[0]["content"]
    if opponent_id is None:
        others = [m.id for m in list_models(wb) if m.in_arena and m.id != model_id]
        if not others:
            raise InvalidInput("no other model is in the arena to battle against")
        opponent_id = others[0]
    battle = battles.new_battle(wb, model_id, opponent_id, gen=gen)
    battles.play_turn(wb, battle.id, first)
    return battle
