"""The product's claim, tested: one round of votes → DPO makes the model better, by a margin
chance cannot explain. Through the REST API with an oracle voter (tests/loop_proof.py):
parent → 200 self-battles and the oracle's votes → DPO snapshot → the pre-filled,
schedule-sized DPO run, unchanged → a gated eval suite of the oracle's rule on held-out
prompts, run by itself on child and parent with the same seeds → the child joins the arena."""

import math

import pytest
from fastapi.testclient import TestClient

from app.train.schedule import MIN_PREFERENCE_STEPS
from tests.loop_proof import BATTLES, run_round

pytestmark = pytest.mark.slow


def test_a_round_of_votes_makes_a_measurably_better_model(tmp_path, starter_dir):
    import launch
    from app.core.settings import Settings

    server, _, wb = launch.build_server(Settings(home=tmp_path / "home", voter_messages_per_minute=0,
                                                 voter_votes_per_minute=0, job_env={"HF_HUB_OFFLINE": "1"}))
    try:
        with TestClient(server) as client:
            f = run_round(client, wb, starter_dir, samples=4)
    finally:
        wb.close()
    print(f)  # the figures, for the record (bench/loop.py prints them readably)
    assert sum(f["votes"].values()) == BATTLES <= 200
    assert 0 < f["dpo_pairs"] <= f["votes"]["a"] + f["votes"]["b"]
    # the pre-filled request sized the schedule and scaled the starter's LoRA rate; nothing else
    assert f["dpo_steps"] >= MIN_PREFERENCE_STEPS and f["overrides"]["learning_rate"] == 4e-4
    assert set(f["overrides"]) <= {"num_train_epochs", "gradient_accumulation_steps", "learning_rate"}
    first, last = f["dpo_loss"]
    assert math.isclose(first, math.log(2), abs_tol=1e-3) and last < first
    # the parent shows the property about half of the time
    assert 0.3 <= f["parent_rate"] <= 0.7 and f["answers_per_model"] == 4 * 45
    # the rise cannot be chance: one-sided p < 0.001, and the intervals do not even overlap
    assert f["z"] > 3.1 and f["child_interval"][0] > f["parent_interval"][1]
    # and the child beats the parent, oracle-judged, with the 95% interval above one half
    assert f["pairwise"]["low"] > 0.5 and f["pairwise"]["wins"] > f["pairwise"]["losses"]
    # the gated suite ran by itself after the DPO run, and the child passed into the arena
    assert f["gate"] == "passed" and f["child_in_arena"], f["gate_reason"]
    assert "says-is: held at" in f["gate_reason"]
