"""Arena battles through the app functions: streaming, turns, votes, flags, sampling."""

import random
import time
from collections import Counter

import pytest

from app.arena import battles
from app.core.errors import Conflict, InvalidInput, NotFound
from app.core.tables import Vote
from app.inference.chat_engines import model_engines
from app.inference.generation import GenSettings
from app.models import registry
from tests.conftest import register_served

GREEDY = GenSettings(temperature=0.0, max_new_tokens=24)


@pytest.mark.slow
def test_local_battle_streams_both_sides_and_records_everything(wb, duel):
    base, tuned = duel
    battle = battles.new_battle(wb, base.id, tuned.id, gen=GREEDY, voter="ann")
    updates = list(battles.stream_turn(wb, battle.id, "What does a cat say?"))
    final = updates[-1]
    assert final.turn is not None and final.done_a and final.done_b
    assert len(updates) > 4  # pieces arrived one by one, not as one block
    grew = [len(u.answer_a) + len(u.answer_b) for u in updates[:-1]]
    assert grew == sorted(grew)
    turn = final.turn
    assert turn.answer_a.strip() and turn.answer_b.strip() and turn.answer_a != turn.answer_b
    assert turn.gen_settings == GREEDY.as_dict()
    for side in "ab":
        t = turn.timings[side]
        assert t["ttft_s"] > 0 and t["total_s"] >= t["ttft_s"] and t["tokens"] > 0
        assert t["finish"] in ("stop", "length") and t["tokens_per_s"] > 0
    v = battles.vote(wb, battle.id, "b", voter="ann")
    assert (v.turn, v.choice, v.voter) == (0, "b", "ann")
    assert battles.reveal(wb, battle.id) == {"a": base.name, "b": tuned.name}


def test_both_sides_generate_at_the_same_time(wb, stub, served):
    stub.chunk_delay = 0.05
    a, b = served[0], served[1]
    prompt = "one two three four five six seven eight"
    start = time.perf_counter()
    alone = "".join(model_engines(wb).stream(a, [{"role": "user", "content": prompt}], GREEDY))
    single = time.perf_counter() - start
    battle = battles.new_battle(wb, a.id, b.id, gen=GREEDY)
    start = time.perf_counter()
    updates = list(battles.stream_turn(wb, battle.id, prompt))
    both = time.perf_counter() - start
    assert updates[-1].turn.answer_a == alone
    assert both < 1.5 * single  # not one after the other
    # Pieces of the two sides interleave while both are still streaming.
    assert any(u.answer_a and u.answer_b and not (u.done_a or u.done_b) for u in updates)


def test_multi_turn_history_follows_the_votes(wb, served):
    a, b, _ = served
    battle = battles.new_battle(wb, a.id, b.id, gen=GREEDY)
    t0 = battles.play_turn(wb, battle.id, "first question")
    with pytest.raises(Conflict, match="vote on the current answers"):
        battles.play_turn(wb, battle.id, "too early")
    assert battles.carried_answers(wb, battle.id) == {}  # nothing is shared before a vote
    battles.vote(wb, battle.id, "b")
    assert battles.carried_answers(wb, battle.id) == {0: t0.answer_b}
    with pytest.raises(Conflict, match="already has a vote"):
        battles.vote(wb, battle.id, "a")
    t1 = battles.play_turn(wb, battle.id, "second question")
    assert t1.messages == t0.messages + [{"role": "assistant", "content": t0.answer_b},
                                         {"role": "user", "content": "second question"}]
    battles.vote(wb, battle.id, "tie")
    t2 = battles.play_turn(wb, battle.id, "third")
    assert t2.messages[-2] == {"role": "assistant", "content": t1.answer_a}  # a tie keeps A's
    battles.vote(wb, battle.id, "both_bad")
    with pytest.raises(Conflict, match="write the answer you wanted"):
        battles.play_turn(wb, battle.id, "fourth")
    t3 = battles.play_turn(wb, battle.id, "fourth", edited_answer="a better answer")
    assert t3.messages[-2] == {"role": "assistant", "content": "a better answer"}
    assert [t.turn for t in battles.turns(wb, battle.id)] == [0, 1, 2, 3]
    # What both panels show for each voted turn is what the next turn was built on.
    assert battles.carried_answers(wb, battle.id) == {0: t0.answer_b, 1: t1.answer_a, 2: "a better answer"}


def test_regenerate_replaces_only_an_unvoted_turn(wb, served):
    a, b, _ = served
    battle = battles.new_battle(wb, a.id, b.id, gen=GREEDY)
    battles.play_turn(wb, battle.id, "hello there")
    *_, again = battles.regenerate(wb, battle.id)
    assert again.turn.turn == 0 and len(battles.turns(wb, battle.id)) == 1
    battles.vote(wb, battle.id, "a")
    with pytest.raises(Conflict, match="already has a vote"):
        list(battles.regenerate(wb, battle.id))


def test_bad_battles_and_votes(wb, served):
    a, b, _ = served
    with pytest.raises(InvalidInput, match="against itself needs sampling"):
        battles.new_battle(wb, a.id, a.id, gen=GREEDY)
    with pytest.raises(NotFound):
        battles.new_battle(wb, a.id, 999)
    battle = battles.new_battle(wb, a.id, b.id, gen=GREEDY)
    with pytest.raises(InvalidInput, match="no answers to vote on"):
        battles.vote(wb, battle.id, "a")
    with pytest.raises(InvalidInput, match="type a message"):
        battles.play_turn(wb, battle.id, "   ")
    with pytest.raises(InvalidInput, match=r"too long \(4001 characters; the limit is 4000\)"):
        battles.play_turn(wb, battle.id, "x" * (wb.settings.max_prompt_chars + 1))
    battles.play_turn(wb, battle.id, "hi")
    with pytest.raises(InvalidInput, match="a vote must be one of"):
        battles.vote(wb, battle.id, "c")
    with pytest.raises(InvalidInput, match="temperature"):
        GenSettings(temperature=5)


def test_turn_limit(tmp_path, stub):
    from app.bootstrap import open_workbench
    from app.core.settings import Settings

    wb = open_workbench(Settings(home=tmp_path, max_turns=2), start_jobs=False)
    try:
        a, b = register_served(wb, stub, ("alpha:1b", "beta:1b"))
        battle = battles.new_battle(wb, a.id, b.id, gen=GREEDY)
        for text in ("one", "two"):
            battles.play_turn(wb, battle.id, text)
            battles.vote(wb, battle.id, "a")
        with pytest.raises(InvalidInput, match="at most 2 turns"):
            battles.play_turn(wb, battle.id, "three")
    finally:
        wb.close()


def test_a_written_answer_after_both_bad_has_the_prompt_length_limit(tmp_path, stub):
    from app.bootstrap import open_workbench
    from app.core.settings import Settings

    wb = open_workbench(Settings(home=tmp_path, max_prompt_chars=20), start_jobs=False)
    try:
        a, b = register_served(wb, stub, ("alpha:1b", "beta:1b"))
        battle = battles.new_battle(wb, a.id, b.id, gen=GREEDY)
        battles.play_turn(wb, battle.id, "one")
        battles.vote(wb, battle.id, "both_bad")
        with pytest.raises(InvalidInput, match=r"the answer you wrote is too long \(30 characters; the "
                                                r"limit is 20\)"):
            battles.play_turn(wb, battle.id, "two", edited_answer="x" * 30)
        turn = battles.play_turn(wb, battle.id, "two", edited_answer="short and right")
        assert turn.messages[-2] == {"role": "assistant", "content": "short and right"}
    finally:
        wb.close()


def test_quality_flags_are_recorded_not_applied(wb, stub, served):
    a, b, _ = served
    stub.models["alpha:1b"].brain = lambda model, prompt: "As ChatGPT, I think " + prompt
    battle = battles.new_battle(wb, a.id, b.id, gen=GenSettings(temperature=0, max_new_tokens=3))
    battles.play_turn(wb, battle.id, "a long question with many words in it")
    v = battles.vote(wb, battle.id, "a")
    assert "identity_a" in v.flags and "truncated_b" in v.flags and "identity_b" not in v.flags
    with wb.session() as s:
        assert s.get(Vote, v.id).flags == v.flags  # the vote is kept, with its flags
    # An unreachable server is an errored answer, not a crash.
    gone = registry.register_remote_model(wb, "gone", "ollama", "http://127.0.0.1:9", "x:1b")
    battle = battles.new_battle(wb, gone.id, b.id, gen=GREEDY)
    turn = battles.play_turn(wb, battle.id, "hello")
    assert turn.timings["a"]["finish"] == "error" and "cannot reach" in turn.timings["a"]["error"]
    assert turn.answer_b
    assert "error_a" in battles.vote(wb, battle.id, "b").flags


def test_anonymous_sampling_prefers_thin_pairs(wb, served):
    a, b, c = served
    rng = random.Random(0)
    seen = Counter()
    for _ in range(300):
        x, y = battles.sample_pair(wb, rng)
        assert x != y
        seen[(x, y)] += 1
    assert len(seen) == 6  # every ordered pair shows up: sides are shuffled
    # Pile blind votes on (a, b) while c sits out, and named ones on (a, c), which sampling
    # ignores (they are not on the default leaderboard); sampling then favours the pairs with c.
    registry.set_in_arena(wb, c.id, False)
    for _ in range(12):
        blind = battles.new_battle(wb, mode="anonymous", gen=GREEDY)
        named = battles.new_battle(wb, a.id, c.id, gen=GREEDY)
        for battle in (blind, named):
            battles.play_turn(wb, battle.id, "q")
            battles.vote(wb, battle.id, "a")
    registry.set_in_arena(wb, c.id, True)
    assert battles.pair_vote_counts(wb) == {(min(a.id, b.id), max(a.id, b.id)): 12}
    picks = Counter(frozenset(battles.sample_pair(wb, rng)) for _ in range(600))
    assert picks[frozenset((a.id, b.id))] < picks[frozenset((a.id, c.id))]
    assert picks[frozenset((a.id, b.id))] < picks[frozenset((b.id, c.id))]
    anon = battles.new_battle(wb, mode="anonymous", gen=GREEDY)
    assert {anon.model_a_id, anon.model_b_id} <= {a.id, b.id, c.id} and anon.mode == "anonymous"
    registry.set_in_arena(wb, c.id, False)
    registry.set_in_arena(wb, b.id, False)
    with pytest.raises(InvalidInput, match="at least two models"):
        battles.sample_pair(wb)
