"""One round of the loop through the REST API with an oracle voter (tests/loop_proof.py):
parent → 200 self-battles and votes → DPO snapshot → the pre-filled, schedule-sized DPO run
→ an eval suite of the oracle's rule on parent and child with the same seeds."""

import math

import pytest
from fastapi.testclient import TestClient

from app.train.schedule import MIN_PREFERENCE_STEPS
from tests.loop_proof import BATTLES, run_round

pytestmark = pytest.mark.slow


def test_one_round_of_votes_to_dpo_to_eval(tmp_path, starter_dir):
    import launch
    from app.core.settings import Settings

    server, _, wb = launch.build_server(Settings(home=tmp_path / "home", voter_messages_per_minute=0,
                                                 voter_votes_per_minute=0, job_env={"HF_HUB_OFFLINE": "1"}))
    try:
        with TestClient(server) as client:
            f = run_round(client, wb, starter_dir, samples=2)
    finally:
        wb.close()
    print(f)  # the figures, for the record (bench/loop.py prints them readably)
    assert sum(f["votes"].values()) == BATTLES and f["votes"]["a"] + f["votes"]["b"] > 20
    assert 0 < f["dpo_pairs"] <= f["votes"]["a"] + f["votes"]["b"]
    # the pre-filled request sized the schedule and scaled the starter's LoRA rate
    assert f["dpo_steps"] >= MIN_PREFERENCE_STEPS and f["overrides"]["learning_rate"] == 4e-4
    first, last = f["dpo_loss"]
    assert math.isclose(first, math.log(2), abs_tol=1e-3) and last < first - 0.03  # DPO learned
    # the parent shows the property about half of the time; every answer was checked
    assert 0.25 <= f["parent_rate"] <= 0.75 and f["answers_per_model"] == 2 * 45
    lo, hi = f["child_interval"]
    assert lo <= f["child_rate"] <= hi and f["pairwise"]["wins"] + f["pairwise"]["losses"] > 0
