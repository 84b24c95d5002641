"""The hand-written Self-Instruct seed tasks are many, varied and clean."""

import json
from pathlib import Path

from app.data.self_instruct import SEED_PATH, load_seeds, rejection_reason

ROOT = Path(__file__).resolve().parent.parent


def test_seed_path_is_the_repo_file():
    assert SEED_PATH == ROOT / "data" / "seed_tasks.jsonl"


def test_seed_tasks_are_many_unique_and_complete():
    rows = [json.loads(line) for line in SEED_PATH.read_text(encoding="utf-8").splitlines()]
    assert len(rows) >= 150
    for r in rows:
        assert set(r) == {"instruction", "input", "output", "is_classification"}, r
        assert isinstance(r["is_classification"], bool)
        assert r["instruction"].strip() and r["output"].strip(), r
    instructions = [" ".join(r["instruction"].lower().split()) for r in rows]
    assert len(set(instructions)) == len(instructions)
    share_cls = sum(r["is_classification"] for r in rows) / len(rows)
    assert 0.15 <= share_cls <= 0.3
    assert sum(bool(r["input"]) for r in rows) >= 36


def test_seed_instructions_pass_the_filters_used_on_generated_ones():
    # Apart from the word-count rule (a few seeds are short questions), every seed
    # must pass what generated tasks must pass: no blacklisted words, no code tasks.
    for task in load_seeds():
        assert rejection_reason(task.instruction) in (None, "too_short"), task.instruction
