"""One round of the loop, end to end through the REST API, judged by an oracle.

The oracle is a rule of our own: it prefers answers that use the word "is" (a statement
such as "The opposite of hot is cold." over one without it). The parent is the starter model
fine-tuned on part of the shipped SFT sample, about half of whose answers are built that
way, so the parent shows the property about half of the time when sampling. Then, exactly
as a user would: self-battles of the parent (two samples each) in the arena, the oracle's votes,
a DPO snapshot of the votes, the training request "Train on these votes" pre-fills (no
hand-tuned overrides), and a gated eval suite whose check is the oracle's rule, which runs
by itself on child and parent with the same seeds once the child is registered.
``tests/test_loop_round.py`` asserts on the figures and ``bench/loop.py`` prints them.
"""

from __future__ import annotations

import json
import math
import random
import re
import time
from pathlib import Path
from typing import Any

from app.data.datasets import register_rows
from app.evals.stats import wilson, win_rate
from app.models import registry

ROOT = Path(__file__).resolve().parent.parent
CHECK = {"type": "regex", "value": r"\bis\b"}
BATTLES = 200
SAMPLING = {"temperature": 1.0, "max_new_tokens": 24}
# The parent's own fine-tune (all weights: a LoRA on the 64-wide starter leaves it opening
# a fifth of its answers with <|im_start|>, an empty answer, and votes against an empty
# answer are flagged and left out of DPO).
PARENT_SFT = {"num_train_epochs": 3, "learning_rate": 1e-3, "per_device_train_batch_size": 8,
              "gradient_accumulation_steps": 1, "warmup_ratio": 0.0, "save_steps": 100_000}


def has_property(answer: str) -> bool:
    return re.search(CHECK["value"], answer) is not None


def oracle_vote(answer_a: str, answer_b: str) -> str:
    a, b = has_property(answer_a), has_property(answer_b)
    return "a" if a and not b else "b" if b and not a else "tie" if a else "both_bad"


def prompt_of(row: dict[str, str]) -> str:
    return row["instruction"] + (f"\n{row['input']}" if row.get("input") else "")


def split_prompts(seed: int = 0) -> tuple[list[dict], list[str]]:
    """Rows the parent and the battles see, and prompts held out from both for the eval."""
    rows = [json.loads(line) for line in (ROOT / "data/samples/sft_starter.jsonl").read_text().splitlines()]
    random.Random(seed).shuffle(rows)
    return rows[:150], [prompt_of(r) for r in rows[150:]]


def two_proportion_z(k1: int, n1: int, k2: int, n2: int) -> float:
    """z of the rise from k1/n1 to k2/n2 under the pooled null of no change."""
    p = (k1 + k2) / (n1 + n2)
    se = math.sqrt(p * (1 - p) * (1 / n1 + 1 / n2))
    return (k2 / n2 - k1 / n1) / se if se else 0.0


def _wait_run(client, run_id: int, timeout: float = 900) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        run = client.get(f"/api/runs/{run_id}").json()
        if run["status"] in ("succeeded", "failed", "cancelled", "interrupted"):
            assert run["status"] == "succeeded", run["error"]
            return run
        assert time.monotonic() < deadline, f"training run {run_id} took too long"
        time.sleep(0.5)


def _queued_eval(client, model_id: int, timeout: float = 60.0) -> dict:
    """The one eval run queued for ``model_id``: the trainer's follow-up hook queues it just
    after the run is marked finished, so it may not be there at the first look."""
    deadline = time.monotonic() + timeout
    while not (found := client.get("/api/evals/runs", params={"model_id": model_id}).json()):
        assert time.monotonic() < deadline, f"no eval run was queued for model {model_id}"
        time.sleep(0.2)
    (run,) = found
    return run


def _wait_eval(client, run_id: int, timeout: float = 900) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        run = client.get(f"/api/evals/runs/{run_id}").json()
        if run["status"] in ("succeeded", "failed", "cancelled", "interrupted"):
            assert run["status"] == "succeeded", run
            return run
        assert time.monotonic() < deadline, f"eval run {run_id} took too long"
        time.sleep(0.5)


def run_round(client, wb, starter_dir: Path, samples: int = 4) -> dict[str, Any]:
    """Parent → votes → DPO child → eval; the figures and the wall time of each stage."""
    timings: dict[str, float] = {}
    train_rows, held_out = split_prompts()
    clock = time.monotonic()

    # The parent: the starter taught the sample's answers (about half of them use "is").
    base = registry.register_base_model(wb, "starter", str(starter_dir))
    data = register_rows(wb, "sample-sft", "sft", train_rows, fmt="alpaca")
    r = client.post("/api/train/sft", json={"model_id": base.id, "dataset_ids": [data.id], "name": "parent",
                                            "recipe": "sft_full", "overrides": PARENT_SFT})
    assert r.status_code == 201, r.text
    parent_id = _wait_run(client, r.json()["id"])["output_model_id"]
    timings["parent_sft_s"] = time.monotonic() - clock

    # The oracle's rule as an eval suite on held-out prompts, gated: a child that falls below
    # its parent on it stays out of the arena.
    suite = client.post("/api/evals/suites", json={"name": "says-is", "prompts": held_out,
                                                   "checks": [CHECK], "samples": samples, "seed": 7,
                                                   **SAMPLING}).json()
    r = client.put(f"/api/evals/suites/{suite['id']}/gate", json={"margin": 0.0})
    assert r.status_code == 200, r.text

    # Arena: the parent against itself, the oracle voting through the API.
    clock, votes = time.monotonic(), {"a": 0, "b": 0, "tie": 0, "both_bad": 0}
    for i in range(BATTLES):
        r = client.post("/api/battles", json={"prompt": prompt_of(train_rows[i % len(train_rows)]),
                                              "mode": "named", "model_a_id": parent_id,
                                              "model_b_id": parent_id, "seed": 10_000 + 2 * i, **SAMPLING})
        assert r.status_code == 201, r.text
        turn = r.json()
        choice = oracle_vote(turn["answer_a"], turn["answer_b"])
        votes[choice] += 1
        assert client.post("/api/feedback", json={"battle_id": turn["battle_id"], "choice": choice}
                           ).status_code == 201
    timings["battles_s"] = time.monotonic() - clock

    # Votes → DPO snapshot → the request the "Train on these votes" button pre-fills → child.
    clock = time.monotonic()
    snapshot = client.post("/api/votes/dpo", json={"name": "round-1"}).json()
    request = client.post("/api/votes/training",
                          json={"dataset_id": snapshot["id"], "model_id": parent_id}).json()
    stage = request["recipe"].split("_")[0]
    r = client.post(f"/api/train/{stage}", json={k: request[k] for k in ("recipe", "model_id", "dataset_ids",
                                                                          "overrides")})
    assert r.status_code == 201, r.text
    child_run = _wait_run(client, r.json()["id"])
    child_id = child_run["output_model_id"]
    timings["dpo_s"] = time.monotonic() - clock

    # The gated suite ran by itself once the child was registered, on the child and on the
    # parent (which had no score on it), with the same seeds.
    clock = time.monotonic()
    results, eval_runs = {}, {}
    for role, model_id in (("parent", parent_id), ("child", child_id)):
        found = _queued_eval(client, model_id)
        eval_runs[role] = _wait_eval(client, found["id"])
        results[role] = client.get(f"/api/evals/runs/{found['id']}/results").json()
    timings["eval_s"] = time.monotonic() - clock
    gate = client.get(f"/api/evals/gates/{child_id}").json()["gate"]
    in_arena = client.get(f"/api/models/{child_id}").json()["in_arena"]

    parent_pass = sum(x["passed"] for x in results["parent"])
    child_pass = sum(x["passed"] for x in results["child"])
    n = len(results["child"])
    # Oracle-judged pairwise: each child answer against the parent's answer to the same
    # prompt drawn with the same seed.
    parent_by = {(x["prompt_index"], x["sample"]): x["answer"] for x in results["parent"]}
    choices = [oracle_vote(x["answer"], parent_by[(x["prompt_index"], x["sample"])])
               for x in results["child"]]
    pairwise = win_rate([{"both_bad": "tie"}.get(c, c) for c in choices], [True] * len(choices))
    return {
        "votes": votes, "dpo_pairs": snapshot["num_rows"], "schedule": request["schedule"]["reason"],
        "overrides": request["overrides"], "dpo_steps": child_run["metrics"].get("steps"),
        "dpo_loss": [child_run["metrics"].get("first_loss"), child_run["metrics"].get("final_loss")],
        "answers_per_model": n, "parent_rate": parent_pass / n, "child_rate": child_pass / n,
        "parent_interval": wilson(parent_pass, n), "child_interval": wilson(child_pass, n),
        "z": two_proportion_z(parent_pass, n, child_pass, n), "pairwise": pairwise,
        "gate": gate["status"], "gate_reason": gate["reason"], "child_in_arena": in_arena,
        "eval_run_ids": {k: v["id"] for k, v in eval_runs.items()},
        "timings": {k: round(v, 1) for k, v in timings.items()},
    }
