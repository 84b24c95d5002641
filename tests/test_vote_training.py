"""Votes that move the model: every vote can teach (KTO with ties and both-bad), the
share of votes each option uses, and a schedule sized so small vote sets get enough steps."""

import pytest

from app.arena import preference_export as pe
from app.core.errors import InvalidInput
from app.train.schedule import MAX_EPOCHS, MIN_PREFERENCE_STEPS, size_schedule, steps_per_epoch, with_schedule
from tests.test_arena_data import api, cast  # noqa: F401  (api: a fixture)

DEFAULTS = {"per_device_train_batch_size": 2, "gradient_accumulation_steps": 4, "num_train_epochs": 2}


def test_steps_are_counted_as_the_trainer_counts_them():
    assert steps_per_epoch(58, 2, 4) == 7  # 29 batches, whole groups of 4
    assert steps_per_epoch(3, 2, 4) == 1  # never zero
    assert steps_per_epoch(64, 2, 1) == 32


@pytest.mark.parametrize("rows", [1, 5, 20, 58, 100, 119, 120, 500, 5000])
def test_small_preference_sets_get_enough_steps_and_large_ones_keep_the_recipe(rows):
    extra, reason = size_schedule("dpo", rows, DEFAULTS)
    settings = {**DEFAULTS, **extra}
    steps = steps_per_epoch(rows, 2, settings["gradient_accumulation_steps"]) * settings["num_train_epochs"]
    default_steps = steps_per_epoch(rows, 2, 4) * 2
    if default_steps >= MIN_PREFERENCE_STEPS:
        assert extra == {} and "enough to learn from" in reason
    else:
        assert steps > default_steps and settings["num_train_epochs"] <= MAX_EPOCHS
        assert f"would be only {default_steps} optimizer steps" in reason and f"{steps} steps" in reason
        # enough steps whenever the rows allow it (MAX_EPOCHS epochs of single-batch steps)
        assert steps >= MIN_PREFERENCE_STEPS or steps == steps_per_epoch(rows, 2, 1) * MAX_EPOCHS
    assert size_schedule("sft", rows, DEFAULTS)[0] == {}  # only preference stages are resized


def test_user_choices_are_the_starting_point():
    extra, _ = size_schedule("kto", 400, {**DEFAULTS, "num_train_epochs": 3})
    assert extra == {}  # 50 × 3 = 150 steps already


def test_every_vote_teaches_with_kto_and_usage_says_how_much(wb, served, starter):
    alpha, beta, _ = served
    cast(wb, alpha, beta, "q1", "a")
    cast(wb, alpha, beta, "q2", "tie")
    cast(wb, alpha, beta, "q3", "both_bad")
    cast(wb, alpha, beta, "q4", "b")
    usage = pe.vote_usage(wb)
    assert usage["votes"] == 4
    assert [usage[k]["votes_used"] for k in ("dpo", "kto", "every_vote")] == [2, 3, 4]
    assert usage["dpo"]["fraction"] == 0.5 and usage["every_vote"]["fraction"] == 1.0
    every = pe.build_kto_dataset(wb, "every", ties="good")
    assert every.num_rows == usage["every_vote"]["examples"] == 8 and len(every.meta["vote_ids"]) == 4
    with pytest.raises(InvalidInput, match="ties must be one of"):
        pe.build_kto_dataset(wb, "x", ties="bad")
    req = with_schedule(wb, pe.suggest_vote_training(wb, every.id, starter.id))
    assert req["recipe"] == "kto_lora" and req["schedule"]["rows"] == 8
    over = req["overrides"]
    assert over["num_train_epochs"] == MAX_EPOCHS and over["gradient_accumulation_steps"] == 1  # 8 rows
    assert "too few for KTO" in req["schedule"]["reason"]
    # the starter is 64 wide: the recipe's 5e-5 (for 4096-wide models) × 8
    assert over["learning_rate"] == 4e-4 and "hidden size 64" in req["schedule"]["reason"]
    mine = with_schedule(wb, {**pe.suggest_vote_training(wb, every.id, starter.id),
                              "overrides": {"learning_rate": 1e-5}})
    assert mine["overrides"]["learning_rate"] == 1e-5  # a rate the user chose is kept


def test_narrow_models_get_a_larger_lora_rate(tmp_path):
    import json

    from app.train.schedule import lora_lr_scale, scale_learning_rate

    assert lora_lr_scale(4096) == 1.0 and lora_lr_scale(8192) == 1.0 and lora_lr_scale(16) == 10.0
    assert round(lora_lr_scale(896), 2) == 2.14
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 1024}))
    lr, why = scale_learning_rate("dpo", "lora", {"learning_rate": 5e-5}, str(tmp_path))
    assert lr == {"learning_rate": 1e-4} and "× 2" in why
    assert scale_learning_rate("sft", "lora", {"learning_rate": 5e-5}, str(tmp_path)) == ({}, "")
    assert scale_learning_rate("dpo", "full", {"learning_rate": 5e-5}, str(tmp_path)) == ({}, "")
    assert scale_learning_rate("dpo", "lora", {"learning_rate": 5e-5}, str(tmp_path / "nowhere")) == ({}, "")


def test_votes_routes(api):  # noqa: F811  (the fixture imported above)
    client, wb, (a, b) = api
    for prompt, choice in (("one", "a"), ("two", "both_bad"), ("three", "tie")):
        made = client.post("/api/battles", json={"prompt": prompt, "mode": "named", "model_a_id": a.id,
                                                 "model_b_id": b.id, "temperature": 0}).json()
        assert client.post("/api/feedback", json={"battle_id": made["battle_id"], "choice": choice}
                           ).status_code == 201
    usage = client.get("/api/votes/usage").json()
    assert usage["votes"] == 3 and usage["dpo"]["votes_used"] == 1 and usage["kto"]["votes_used"] == 2
    dpo = client.post("/api/votes/dpo", json={"name": "round-1"})
    assert dpo.status_code == 201 and dpo.json()["name"] == "round-1"
    req = client.post("/api/votes/training", json={"dataset_id": dpo.json()["id"], "model_id": a.id}).json()
    assert req["recipe"] == "dpo_lora" and req["overrides"]["num_train_epochs"] == MAX_EPOCHS
    kto = client.post("/api/votes/kto", json={"ties": "good", "model_ids": [a.id, b.id]})
    assert kto.status_code == 201 and kto.json()["num_rows"] == 6
    bad = client.post("/api/votes/kto", json={"ties": "maybe"})
    assert bad.status_code == 422 and "ties must be one of" in bad.json()["error"]["message"]
    sft = client.post("/api/votes/training", json={"dataset_id": 999999})
    assert sft.status_code == 404
