"""The Self-Instruct loop: ask a teacher for tasks, filter them, ask for instances.

``generate`` takes the teacher as a plain ``complete(prompt) -> (text, truncated)``
function, so the job process can hand it any engine. Teacher answers are cached in a
JSON-lines file keyed by prompt: the prompts are drawn from a seeded RNG and depend
only on earlier answers, so a resumed run replays the same prompts and pays for no
teacher call twice.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from app.data.self_instruct import (
    InstructionFilter,
    Task,
    classification_prompt,
    clean_instances,
    instance_prompt,
    instruction_prompt,
    parse_instances,
    parse_instructions,
    parse_yes_no,
)

Complete = Callable[[str], tuple[str, bool]]


class AnswerCache:
    """Teacher answers on disk, one JSON line per prompt, appended as they arrive."""

    def __init__(self, path: Path, complete: Complete) -> None:
        self.path, self._complete = path, complete
        self._answers: dict[str, tuple[str, bool]] = {}
        self.calls = self.hits = 0
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut off when the job was killed
                self._answers[rec["key"]] = (rec["answer"], rec["truncated"])

    def __call__(self, prompt: str) -> tuple[str, bool]:
        key = hashlib.sha256(prompt.encode()).hexdigest()
        if key in self._answers:
            self.hits += 1
            return self._answers[key]
        answer = self._complete(prompt)
        self.calls += 1
        self._answers[key] = answer
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps({"key": key, "answer": answer[0], "truncated": answer[1]}) + "\n")
        return answer


@dataclass
class RunState:
    rows: list[dict] = field(default_factory=list)
    generated: int = 0  # instructions parsed from teacher answers
    rounds: int = 0
    rejected: Counter = field(default_factory=Counter)

    def progress(self) -> dict:
        return {"kept": len(self.rows), "generated": self.generated,
                "rejected": dict(sorted(self.rejected.items()))}


def generate(seeds: list[Task], complete: Complete, target: int, max_rounds: int, seed: int = 0,
             on_round: Callable[[RunState], None] | None = None) -> RunState:
    """Rounds of: one instruction prompt, then per kept instruction a classification
    question and an instance prompt, until ``target`` rows or ``max_rounds``."""
    rng = random.Random(seed)
    flt = InstructionFilter.with_seeds(seeds)
    state = RunState(rejected=flt.rejected)
    while len(state.rows) < target and state.rounds < max_rounds:
        state.rounds += 1
        text, truncated = complete(instruction_prompt(seeds, flt.kept, rng))
        for instruction in parse_instructions(text, truncated=truncated):
            state.generated += 1
            if not flt.offer(instruction):
                continue
            is_cls = parse_yes_no(complete(classification_prompt(instruction, seeds, rng))[0])
            answer, _ = complete(instance_prompt(instruction, is_cls, seeds, rng))
            pairs = clean_instances(parse_instances(answer, is_cls), state.rejected)
            if not pairs:
                state.rejected["no_instances"] += 1
            for inp, out in pairs:
                state.rows.append({"instruction": instruction, "input": inp, "output": out,
                                   "is_classification": is_cls})
            if len(state.rows) >= target:
                break
        if on_round:
            on_round(state)
    return state
