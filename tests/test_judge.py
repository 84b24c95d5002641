"""LLM-judge pairs judged in both orders, stored as votes that DPO snapshots use; the human
annotation queue over them and judge/human agreement. Answerers and judge are stand-in models."""

import json
import re

import pytest

from app.arena import annotation, judge, leaderboard, preference_export
from app.core.errors import Conflict, InvalidInput, NotFound
from app.core.tables import Vote
from app.inference.generation import GenSettings


def longer_wins(model: str, prompt: str) -> str:
    """A judge that reads its prompt: the answer with more words wins, equal lengths tie."""
    m = re.search(r"\[Answer 1\]\n(.*?)\n\n\[Answer 2\]\n(.*?)\n\nGive a short", prompt, re.S)
    one, two = (len(x.split()) for x in m.groups())
    verdict = "1" if one > two else "2" if two > one else "tie"
    return f"Answer {verdict} has {max(one, two)} words, more detail.\nVerdict: {verdict}"


def first_wins(model: str, prompt: str) -> str:
    return "The first answer reads better. Verdict: 1"


@pytest.fixture
def judged(wb, stub, served):
    alpha, beta, gamma = served
    stub.models["beta:1b"].brain = lambda m, p: "a longer and more detailed answer about " + p
    stub.models["gamma:1b"].brain = longer_wins
    return alpha, beta, gamma


@pytest.mark.parametrize("reply, verdict", [
    ("Answer 2 is clearer.\nVerdict: 2", "2"),
    ('Reply "Verdict: 1", "Verdict: 2" or "Verdict: tie".\nVerdict: **tie**', "tie"),
    ("My final verdict is [[1]]", "1"),
    ("Answer 2 is better because it explains why.", "2"),
    ("  1. ", "1"),
    ("Both are equally good.", "tie"),
    ("Verdict - answer two", "2"),
    ("I cannot decide.", None),
    ("", None),
])
def test_parse_verdict(reply, verdict):
    assert judge.parse_verdict(reply) == verdict


def test_both_orders_rule():
    assert judge.combine("1", "2") == ("a", True)  # A first, then A second: A both times
    assert judge.combine("2", "1") == ("b", True)
    assert judge.combine("tie", "tie") == ("tie", True)
    assert judge.combine("1", "1") == ("tie", False)  # position bias: the first one each time
    assert judge.combine("2", "tie") == ("tie", False)
    assert judge.combine(None, "2") == ("tie", False)


def test_judge_prompt_holds_question_and_both_answers():
    p = judge.judge_prompt(" why? ", "because", "no idea")
    assert "[Question]\nwhy?\n" in p and p.index("because") < p.index("no idea") and "Verdict: tie" in p


def test_judged_pairs_feed_dpo_not_the_leaderboard(wb, stub, judged):
    alpha, beta, gamma = judged
    summary = judge.judge_prompts(wb, ["name a colour", "what is rain", " "], alpha.id, beta.id, gamma.id)
    assert summary.as_dict() | {"battle_ids": []} == {
        "pairs": 2, "decisive": 2, "ties_dropped": 0, "consistent_ties": 0, "inconsistent": 0,
        "unparsed": 0, "unjudged": 0, "consistency_rate": 1.0, "battle_ids": []}
    ds = preference_export.build_dpo_dataset(wb, "judged")
    rows = [json.loads(x) for x in open(ds.path)]
    assert [r["messages"][0]["content"] for r in rows] == ["name a colour", "what is rain"]
    assert rows[0]["chosen"]["content"] == "a longer and more detailed answer about name a colour"
    assert rows[0]["rejected"]["content"] == "answer 8 colour a name"
    view = leaderboard.compute(wb, rounds=10, include_named=True)
    assert view.votes_used == 0 and view.excluded == {"judged": 2}

    # A position-biased judge contradicts itself once the answers swap: ties, no new pairs.
    stub.models["gamma:1b"].brain = first_wins
    biased = judge.judge_prompts(wb, ["why is the sky blue"], alpha.id, beta.id, gamma.id)
    assert (biased.inconsistent, biased.ties_dropped, biased.consistency_rate) == (1, 1, 0.0)
    assert preference_export.live_counts(wb)["dpo_pairs"] == 2


def test_one_model_at_two_temperatures_and_limits(wb, judged):
    alpha, _, gamma = judged
    with pytest.raises(InvalidInput, match="two different temperatures"):
        judge.judge_prompts(wb, ["hi"], alpha.id, alpha.id, gamma.id)
    with pytest.raises(InvalidInput, match="at most"):
        judge.judge_prompts(wb, ["q"] * (judge.MAX_JUDGE_PROMPTS + 1), alpha.id, gamma.id, gamma.id)
    hot = GenSettings(temperature=1.0)
    summary = judge.judge_prompts(wb, ["say hello"], alpha.id, alpha.id, gamma.id, GenSettings(0.0), hot)
    # The stand-in ignores temperature: equal answers, a consistent tie, no DPO pair.
    assert (summary.pairs, summary.consistent_ties, summary.consistency_rate) == (1, 1, 1.0)


def test_annotation_queue_labels_feed_dpo_and_agreement(wb, stub, judged):
    alpha, beta, gamma = judged
    ids = judge.judge_prompts(wb, ["first question", "second question"], alpha.id, beta.id,
                              gamma.id).battle_ids
    # Find annotators who see the pair in each order, to check the blind mapping both ways.
    plain = next(f"p{i}" for i in range(50) if not annotation.swapped(ids[0], f"p{i}"))
    swap = next(f"s{i}" for i in range(50) if annotation.swapped(ids[1], f"s{i}"))

    shown = annotation.next_pair(wb, plain)
    assert shown["remaining"] == 2 and shown["pair"]["battle_id"] == ids[0]
    assert shown["pair"]["answer_a"] == "answer 8 question first"  # alpha's, shown first
    # The person prefers alpha's short answer: the judge (who chose beta) is overruled.
    out = annotation.label_pair(wb, ids[0], "a", plain)
    assert out["choice"] == "a" and out["overruled_judge"]
    with pytest.raises(Conflict):
        annotation.label_pair(wb, ids[0], "b", swap)

    shown = annotation.next_pair(wb, swap)
    assert shown["pair"]["battle_id"] == ids[1] and shown["remaining"] == 1
    assert shown["pair"]["answer_a"].startswith("a longer")  # beta's answer, shown first
    out = annotation.label_pair(wb, ids[1], "a", swap)  # "a" as shown: beta's, B in the pair
    assert (out["choice"], out["overruled_judge"]) == ("b", False)
    assert annotation.next_pair(wb, plain) == {"pair": None, "remaining": 0}

    ds = preference_export.build_dpo_dataset(wb, "labelled")
    rows = [json.loads(x) for x in open(ds.path)]
    chosen = {r["messages"][0]["content"]: r["chosen"]["content"] for r in rows}
    # The person's pair replaces the overruled judge's; the agreeing pair appears once.
    assert chosen == {"first question": "answer 8 question first",
                      "second question": "a longer and more detailed answer about second question"}
    with wb.session() as s:
        voters = {s.get(Vote, i).voter for i in ds.meta["vote_ids"]}
    assert voters == {plain, "judge:gamma"}
    assert annotation.agreement(wb) == {"pairs": 2, "agree": 1, "rate": 0.5, "judged": 2, "labelled": 2}


def test_label_checks(wb, judged, served):
    alpha, beta, gamma = judged
    with pytest.raises(NotFound):
        annotation.label_pair(wb, 999, "a", "x")
    (bid,) = judge.judge_prompts(wb, ["q"], alpha.id, beta.id, gamma.id).battle_ids
    with pytest.raises(InvalidInput, match="must be one of"):
        annotation.label_pair(wb, bid, "left", "x")
    out = annotation.label_pair(wb, bid, "both_bad", "x")
    assert out["choice"] == "both_bad" and out["overruled_judge"]
    assert annotation.agreement(wb)["agree"] == 0


def test_judge_job_stores_pairs_from_a_dataset(wb, judged):
    from app.data import datasets
    from tests.conftest import ROOT

    alpha, beta, gamma = judged
    ds = datasets.register_file(wb, ROOT / "data/samples/sft_starter.jsonl", "sft", "sft")
    prompts = judge.dataset_prompts(wb, ds.id)
    assert prompts[1] == "Count up by one.\n\n15"  # instruction + input
    job = judge.start_judge_job(wb, prompts[:3], alpha.id, beta.id, gamma.id)
    job = wb.jobs.wait(job.id, 120)
    assert job.status == "succeeded", job.error
    summary = job.result["summary"]
    assert (summary["pairs"], summary["decisive"], summary["consistency_rate"]) == (3, 3, 1.0)
    rows, _ = preference_export.preference_rows(wb)
    assert [r["messages"][0]["content"] for r in rows] == prompts[:3]
    assert all(r["chosen"]["content"].startswith("a longer") for r in rows)


def test_judge_and_annotation_api(tmp_path, stub):
    from fastapi.testclient import TestClient

    import launch
    from app.core.settings import Settings
    from tests.conftest import home_with_served

    home = tmp_path / "home"
    alpha, beta, gamma = home_with_served(home, stub, ("alpha:1b", "beta:1b", "gamma:1b"))
    stub.models["beta:1b"].brain = lambda m, p: "a longer and more detailed answer about " + p
    stub.models["gamma:1b"].brain = longer_wins
    server, _, wb = launch.build_server(Settings(home=home))
    try:
        with TestClient(server) as c:
            r = c.post("/api/judge", json={"model_a_id": alpha.id, "model_b_id": beta.id,
                                           "judge_model_id": gamma.id, "prompts": ["one", "two"]})
            assert r.status_code == 202 and r.json()["kind"] == "judge"
            job = wb.jobs.wait(r.json()["id"], 120)
            assert job.status == "succeeded" and job.result["summary"]["decisive"] == 2, job.error
            bad = c.post("/api/judge", json={"model_a_id": alpha.id, "model_b_id": alpha.id,
                                             "judge_model_id": gamma.id, "prompts": ["x"]})
            assert bad.status_code == 422 and "temperatures" in bad.json()["error"]["message"]
            pair = c.get("/api/annotation/next").json()["pair"]
            # The caller prefers the longer answer, wherever it was shown.
            side = "a" if pair["answer_a"].startswith("a longer") else "b"
            r = c.post(f"/api/annotation/{pair['battle_id']}/label", json={"choice": side})
            assert r.status_code == 201 and r.json()["choice"] == "b"
            again = c.post(f"/api/annotation/{pair['battle_id']}/label", json={"choice": "a"})
            assert again.status_code == 409
            assert c.get("/api/annotation/next").json()["remaining"] == 1
            assert c.get("/api/annotation/agreement").json() == {
                "pairs": 1, "agree": 1, "rate": 1.0, "judged": 2, "labelled": 1}
    finally:
        wb.close()


def test_data_tab_judges_and_annotates_through_its_api_endpoints(tmp_path, stub):
    from gradio_client import Client

    import launch
    from app.core.settings import Settings
    from tests.conftest import ServerThread, home_with_served

    home = tmp_path / "home"
    alpha, beta, gamma = home_with_served(home, stub, ("alpha:1b", "beta:1b", "gamma:1b"))
    stub.models["gamma:1b"].brain = first_wins  # position bias: the swap exposes it
    server, _, wb = launch.build_server(Settings(home=home))
    try:
        with ServerThread(server) as srv:
            client = Client(srv.url, verbose=False)
            message, progress = client.predict(alpha.id, beta.id, gamma.id, 0.7, 0.7, 64, "hi\nbye", None,
                                               api_name="/judge_pairs")
            assert message.startswith("**2** pairs judged: 0 preference pairs, 2 ties left out")
            assert "Position consistency: 0%" in message and "data-status='succeeded'" in progress
            bid, prompt, first, second, note = client.predict(api_name="/annotation_next")
            assert prompt == "hi" and note == "2 pairs waiting."
            assert {first, second} == {"answer 8 hi", "answer 7 hi"}  # alpha:1b's and beta:1b's
            saved = client.predict(bid, "both_bad", api_name="/annotation_label")
            assert saved == f"Saved your label on pair {int(bid)}."
            assert client.predict(api_name="/annotation_agreement").startswith(
                "Judge and people agree on **1 of 1** pairs")
            assert client.predict(gamma.id, api_name="/check_judge").startswith(
                f"✓ gamma at {stub.url} answered in ")
    finally:
        wb.close()
