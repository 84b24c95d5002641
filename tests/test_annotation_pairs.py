"""Pairs without a judge: the pair job samples two answers per prompt (the real starter model
at two temperatures), the pairs wait in the annotation queue, and people's labels become
votes that DPO snapshots use. Judge/person agreement stays over pairs both labelled."""

import json

from sqlmodel import select

from app.arena import annotation, judge, leaderboard, preference_export
from app.arena.preference_export import VoteFilter
from app.core.tables import Battle, PairLabel, Vote
from app.inference.generation import GenSettings


def test_a_judgeless_pair_job_fills_the_queue_and_labels_reach_dpo(wb, starter):
    prompts = ["Count up by one.\n\n15", "Name a colour."]
    # Greedy against the hottest sampling: the two answers differ.
    gens = GenSettings(0.0, top_p=1.0, max_new_tokens=12), \
        GenSettings(2.0, top_p=1.0, max_new_tokens=12, seed=7)  # seeded: never greedy's answer by chance
    job = judge.start_judge_job(wb, prompts, starter.id, starter.id, None, *gens)
    assert job.title == "pair 2 prompts: starter vs starter for people to label"
    job = wb.jobs.wait(job.id, 180)
    assert job.status == "succeeded", job.error
    summary = job.result["summary"]
    assert (summary["pairs"], summary["unjudged"], summary["decisive"]) == (2, 2, 0)
    assert summary["consistency_rate"] is None  # no judge, no position consistency
    with wb.session() as s:
        battles = list(s.exec(select(Battle).order_by(Battle.id)))
        assert [b.mode for b in battles] == ["pair", "pair"]
        assert list(s.exec(select(Vote))) == [] and list(s.exec(select(PairLabel))) == []
    assert preference_export.live_counts(wb)["dpo_pairs"] == 0

    chosen = {}
    for want in ("a", "b"):  # the first pair: greedy's answer wins; the second: the hot one's
        shown = annotation.next_pair(wb, "ann")
        pair = shown["pair"]
        assert shown["remaining"] == 2 - len(chosen)
        assert pair["prompt"] == prompts[len(chosen)]
        first_is_a = not annotation.swapped(pair["battle_id"], "ann")
        side_shown = want if first_is_a else annotation.SWAP[want]
        out = annotation.label_pair(wb, pair["battle_id"], side_shown, "ann")
        assert (out["choice"], out["overruled_judge"]) == (want, False)
        answers = {"a": pair["answer_a"], "b": pair["answer_b"]}
        chosen[pair["prompt"]] = answers[side_shown]
    assert annotation.next_pair(wb, "ann") == {"pair": None, "remaining": 0}
    assert len(set(chosen.values())) == 2 and all(a.strip() for a in chosen.values())

    # Answers cut off at 12 tokens carry the usual "truncated" flag: count them in here.
    ds = preference_export.build_dpo_dataset(wb, "people-labelled", VoteFilter(include_flagged=True))
    rows = [json.loads(x) for x in open(ds.path)]
    assert {r["messages"][0]["content"]: r["chosen"]["content"] for r in rows} == chosen
    with wb.session() as s:
        assert {s.get(Vote, i).voter for i in ds.meta["vote_ids"]} == {"ann"}
    # People labelled, no judge did: nothing to agree on; and no leaderboard vote.
    assert annotation.agreement(wb) == {"pairs": 0, "agree": 0, "rate": None, "judged": 0, "labelled": 2}
    assert leaderboard.compute(wb, rounds=10, include_named=True).votes_used == 0
    # Asked to count people's labels, these two still do not: one model on both sides.
    board = leaderboard.compute(wb, rounds=10, include_annotations=True, include_flagged=True)
    assert board.votes_used == 0 and board.excluded == {"self_battle": 2}


def test_unjudged_and_judged_pairs_share_the_queue(wb, stub, served):
    from tests.test_judge import longer_wins

    alpha, beta, gamma = served
    stub.models["beta:1b"].brain = lambda m, p: "a longer and more detailed answer about " + p
    stub.models["gamma:1b"].brain = longer_wins
    (plain,) = judge.judge_prompts(wb, ["left alone"], alpha.id, beta.id, None).battle_ids
    (judged,) = judge.judge_prompts(wb, ["judged too"], alpha.id, beta.id, gamma.id).battle_ids
    assert annotation.next_pair(wb, "p")["remaining"] == 2
    annotation.label_pair(wb, plain, "tie", "p")
    # The judge-less pair has no judge's vote to overrule, and no agreement to count.
    assert annotation.agreement(wb) == {"pairs": 0, "agree": 0, "rate": None, "judged": 1, "labelled": 1}
    shown = annotation.next_pair(wb, "p")["pair"]
    assert shown["battle_id"] == judged
    side = "a" if shown["answer_a"].startswith("a longer") else "b"
    assert annotation.label_pair(wb, judged, side, "p")["choice"] == "b"
    assert annotation.agreement(wb)["pairs"] == 1
    # The leaderboard counts people's two labels only when asked, the judge's verdict never.
    assert leaderboard.compute(wb, rounds=10, include_named=True).excluded == {"judged": 3}
    board = leaderboard.compute(wb, rounds=10, include_annotations=True)
    assert board.votes_used == 2 and board.excluded == {"judged": 1}


def test_judgeless_pairs_through_the_api_and_the_data_tab_endpoint(tmp_path, stub):
    from fastapi.testclient import TestClient
    from gradio_client import Client

    import launch
    from app.core.settings import Settings
    from tabs.data_annotate import NO_JUDGE
    from tests.conftest import ServerThread, home_with_served

    home = tmp_path / "home"
    alpha, beta = home_with_served(home, stub)
    server, _, wb = launch.build_server(Settings(home=home))
    try:
        with TestClient(server) as c:
            r = c.post("/api/judge", json={"model_a_id": alpha.id, "model_b_id": beta.id, "prompts": ["one"]})
            assert r.status_code == 202 and r.json()["title"].startswith("pair 1 prompts"), r.json()
            job = wb.jobs.wait(r.json()["id"], 120)
            assert job.status == "succeeded" and job.result["summary"]["unjudged"] == 1, job.error
            missing = c.post("/api/judge", json={"model_a_id": 999, "model_b_id": beta.id, "prompts": ["x"]})
            assert missing.status_code == 404
            pair = c.get("/api/annotation/next").json()["pair"]
            r = c.post(f"/api/annotation/{pair['battle_id']}/label", json={"choice": "a"})
            assert r.status_code == 201 and r.json()["overruled_judge"] is False
        with ServerThread(server) as srv:
            client = Client(srv.url, verbose=False)
            message, progress = client.predict(alpha.id, beta.id, NO_JUDGE, 0.7, 0.7, 32, "two\nthree", None,
                                               api_name="/judge_pairs")
            assert message.startswith("**2** pairs answered without a judge") and "succeeded" in progress
            _, prompt, _, _, note = client.predict(api_name="/annotation_next")
            assert (prompt, note) == ("two", "2 pairs waiting.")
    finally:
        wb.close()
