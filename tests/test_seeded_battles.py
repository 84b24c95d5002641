"""Seeds make a battle replayable; a model may battle itself to collect pairs, and such
battles give DPO pairs but never count on the leaderboard."""

import pytest
from fastapi.testclient import TestClient

from app.arena import battles, preference_export
from app.arena.leaderboard import leaderboard_cache
from app.core.errors import InvalidInput
from app.inference.generation import GenSettings

PROMPT = "What does a cat say?"


def test_seed_is_checked_and_kept():
    assert GenSettings(seed=7).as_dict()["seed"] == 7 and GenSettings().seed is None
    with pytest.raises(InvalidInput, match="seed must be between"):
        GenSettings(seed=-1)
    gen = GenSettings(temperature=1.0, seed=5)
    assert battles.side_seeds(gen, 0) == {"a": 5, "b": 6} and battles.side_seeds(gen, 2) == {"a": 9, "b": 10}
    assert battles.side_seeds(GenSettings(), 3) == {"a": None, "b": None}
    fresh = battles.side_seeds(gen, 0, fresh=True)
    assert fresh["b"] == fresh["a"] + 1


def test_a_model_against_itself_samples_twice_replays_exactly_and_stays_off_the_board(wb, starter):
    with pytest.raises(InvalidInput, match="needs sampling"):
        battles.new_battle(wb, starter.id, starter.id, gen=GenSettings(temperature=0.0))
    gen = GenSettings(temperature=1.2, max_new_tokens=24)
    answers, pair_battles = set(), []
    for _ in range(6):  # six self-battles: their sides sample with different seeds
        battle = battles.new_battle(wb, starter.id, starter.id, gen=gen)
        assert battle.gen_settings["seed"] is not None
        turn = battles.play_turn(wb, battle.id, PROMPT)
        seeds = turn.gen_settings["seeds"]
        assert seeds["b"] == seeds["a"] + 1
        answers |= {turn.answer_a, turn.answer_b}
        if turn.answer_a.strip() and turn.answer_b.strip() and turn.answer_a != turn.answer_b:
            pair_battles.append((battle.id, turn))
    assert len(answers) > 2  # not one answer over and over: the seeds differ
    battle_id, turn = pair_battles[0]
    again = battles.replay_turn(wb, battle_id, turn.turn)
    assert again == {"answer_a": turn.answer_a, "answer_b": turn.answer_b}
    battles.vote(wb, battle_id, "a")
    rows, _ = preference_export.preference_rows(wb)
    assert [r["chosen"]["content"] for r in rows] == [turn.answer_a]
    view = leaderboard_cache(wb).get()
    assert view.votes_used == 0 and view.excluded.get("self_battle") == 1


def test_battles_over_rest_replay_and_vote(tmp_path, starter_dir):
    import launch
    from app.core.settings import Settings
    from app.models import registry

    server, _, wb = launch.build_server(Settings(home=tmp_path / "home"))
    try:
        mv = registry.register_base_model(wb, "starter", str(starter_dir))
        with TestClient(server) as client:
            body = {"prompt": PROMPT, "mode": "named", "model_a_id": mv.id, "model_b_id": mv.id,
                    "temperature": 1.0, "max_new_tokens": 16, "seed": 11}
            r = client.post("/api/battles", json=body)
            assert r.status_code == 201, r.text
            made = r.json()
            assert made["seeds"] == {"a": 11, "b": 12} and "model_a" not in made
            replay = client.post(f"/api/battles/{made['battle_id']}/turns/0/replay").json()
            assert (replay["answer_a"], replay["answer_b"]) == (made["answer_a"], made["answer_b"])
            assert client.post("/api/feedback", json={"battle_id": made["battle_id"], "choice": "tie"}
                               ).status_code == 201
            nxt = client.post(f"/api/battles/{made['battle_id']}/turns", json={"prompt": "How are you?"})
            assert nxt.status_code == 201 and nxt.json()["turn"] == 1 and nxt.json()["seeds"]["a"] == 13
            assert client.post("/api/battles/999999/turns", json={"prompt": "hi"}).status_code == 404
            bad = client.post("/api/battles", json={**body, "temperature": 0})
            assert bad.status_code == 422 and "needs sampling" in bad.json()["error"]["message"]
    finally:
        wb.close()
