"""The Self-Instruct loop: ask a teacher for tasks, filter them, ask for instances.

``generate`` takes the teacher as a plain ``complete(prompt) -> (text, truncated)``
function, so the job process can hand it any engine. Teacher answers are cached in a
JSON-lines file keyed by prompt: the prompts are drawn from a seeded RNG and depend
only on earlier answers, so a resumed run replays the same prompts and pays for no
teacher call twice.

Up to ``concurrency`` teacher calls run at once. Every prompt of a step is built first,
in order, from the one RNG; only the asking is parallel, and answers are used in prompt
order, so the result does not depend on which call returns first.
"""

from __future__ import annotations

import hashlib
import json
import random
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
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
        self._lock = threading.Lock()  # parallel teacher calls append to one file
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut off when the job was killed
                self._answers[rec["key"]] = (rec["answer"], rec["truncated"])

    def __call__(self, prompt: str) -> tuple[str, bool]:
        key = hashlib.sha256(prompt.encode()).hexdigest()
        with self._lock:
            if key in self._answers:
                self.hits += 1
                return self._answers[key]
        answer = self._complete(prompt)
        with self._lock:
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

    def progress(self, sample: int = 5) -> dict:
        """Counts, and the newest kept instructions for a live view."""
        recent = list(dict.fromkeys(r["instruction"] for r in reversed(self.rows)))[:sample]
        return {"kept": len(self.rows), "generated": self.generated,
                "rejected": dict(sorted(self.rejected.items())), "sample": recent}


def generate(seeds: list[Task], complete: Complete, target: int, max_rounds: int, seed: int = 0,
             on_round: Callable[[RunState], None] | None = None, concurrency: int = 1) -> RunState:
    """Steps of: ``concurrency`` instruction prompts (one teacher round each), then for the
    new instructions that passed the filters a classification question and an instance
    prompt each, until ``target`` rows or ``max_rounds`` rounds."""
    rng = random.Random(seed)
    flt = InstructionFilter.with_seeds(seeds)
    state = RunState(rejected=flt.rejected)
    with ThreadPoolExecutor(max(1, concurrency), thread_name_prefix="teacher") as pool:
        while len(state.rows) < target and state.rounds < max_rounds:
            batch = min(concurrency, max_rounds - state.rounds)
            prompts = [instruction_prompt(seeds, flt.kept, rng) for _ in range(batch)]
            state.rounds += batch
            fresh: list[str] = []
            for text, truncated in pool.map(complete, prompts):
                for instruction in parse_instructions(text, truncated=truncated):
                    if len(state.rows) + len(fresh) >= target:
                        break  # enough candidates: each kept one gives at least one row
                    state.generated += 1
                    if flt.offer(instruction):
                        fresh.append(instruction)
            cls_prompts = [classification_prompt(i, seeds, rng) for i in fresh]
            is_cls = [parse_yes_no(text) for text, _ in pool.map(complete, cls_prompts)]
            inst_prompts = [instance_prompt(i, c, seeds, rng) for i, c in zip(fresh, is_cls, strict=True)]
            for instruction, c, (answer, _) in zip(fresh, is_cls, pool.map(complete, inst_prompts),
                                                   strict=True):
                pairs = clean_instances(parse_instances(answer, c), state.rejected)
                if not pairs:
                    state.rejected["no_instances"] += 1
                for inp, out in pairs:
                    state.rows.append({"instruction": instruction, "input": inp, "output": out,
                                       "is_classification": c})
            del state.rows[target:]
            if on_round:
                on_round(state)
    return state
