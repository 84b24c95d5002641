"""Which votes the leaderboard counts: blind battles by default, and how many each rule left out."""

import pytest
from sqlmodel import select

from app.arena import battles, leaderboard, preference_export
from app.arena.leaderboard import describe_exclusions, leaderboard_cache
from app.core.errors import InvalidInput
from app.core.tables import Battle, ModelVersion
from app.inference.generation import GenSettings
from app.models import registry
from tests.conftest import neutral_brain, register_served

GREEDY = GenSettings(temperature=0.0, max_new_tokens=24)
CUT_OFF = GenSettings(temperature=0.0, max_new_tokens=3)
ROUNDS = 20


def blind(wb, winner, prompt, choice=None, gen=GREEDY):
    """A blind battle (two models in the arena: always these two); votes for ``winner``."""
    battle = battles.new_battle(wb, mode="anonymous", gen=gen)
    battles.play_turn(wb, battle.id, prompt)
    side = "a" if battle.model_a_id == winner.id else "b"
    return battles.vote(wb, battle.id, choice or side)


def named(wb, a, b, prompt, choice):
    battle = battles.new_battle(wb, a.id, b.id, gen=GREEDY)
    battles.play_turn(wb, battle.id, prompt)
    return battles.vote(wb, battle.id, choice)


def legacy_self_battle(wb, model, prompt):
    """A battle with one model on both sides (new_battle refuses these; old data may hold them)."""
    battle = Battle(model_a_id=model.id, model_b_id=model.id, mode="anonymous", gen_settings=GREEDY.as_dict())
    with wb.session() as s:
        s.add(battle)
        s.commit()
        s.refresh(battle)
    battles.play_turn(wb, battle.id, prompt)
    return battles.vote(wb, battle.id, "a")


def rating(view, name):
    return float(view.table.set_index("model").loc[name, "rating"])


@pytest.fixture
def arena(wb, stub):
    """Votes where blind and named battles disagree, plus every kind of excluded vote."""
    alpha, beta = register_served(wb, stub, ("alpha:1b", "beta:1b"))
    for i in range(6):
        blind(wb, beta, f"blind {i}")  # voters who do not know the names prefer beta
    blind(wb, beta, "blind both bad", choice="both_bad")
    stub.models["alpha:1b"].brain = lambda m, p: "As ChatGPT, " + p
    blind(wb, beta, "leak one")  # flagged: identity
    blind(wb, beta, "leak two")
    blind(wb, beta, "a long question with many words in it", gen=CUT_OFF)  # truncated and identity
    named(wb, alpha, beta, "named leak", "a")  # flagged too, but counted as named (the earlier rule)
    stub.models["alpha:1b"].brain = neutral_brain
    for i in range(8):
        named(wb, alpha, beta, f"named {i}", "a")  # voters who see the names prefer alpha
    # The same weights under another name; taken out of the arena so sampling stays on alpha-beta.
    copy = registry.register_remote_model(wb, "alpha-copy", "ollama", stub.url, "alpha:1b")
    registry.set_in_arena(wb, copy.id, False)
    named(wb, alpha, copy, "self by weights", "a")
    legacy_self_battle(wb, beta, "self by id")
    return alpha, beta


def test_default_counts_blind_battles_only(wb, arena):
    alpha, beta = arena
    view = leaderboard.compute(wb, rounds=ROUNDS)
    assert view.votes_used == 7  # six wins for beta and a both-bad counted as a tie
    assert view.excluded == {"self_battle": 2, "named": 9, "flagged:truncated": 1, "flagged:identity": 2}
    assert rating(view, "beta") > rating(view, "alpha")
    assert view.counts.loc["alpha", "beta"] == 7
    assert view.votes_used + sum(view.excluded.values()) == 21  # every vote is accounted for once


def test_toggles_include_named_flagged_and_drop_both_bad(wb, arena):
    with_named = leaderboard.compute(wb, rounds=ROUNDS, include_named=True)
    assert with_named.votes_used == 15
    assert with_named.excluded == {"self_battle": 2, "flagged:truncated": 1, "flagged:identity": 3}
    assert rating(with_named, "alpha") > rating(with_named, "beta")  # eight named wins outweigh six

    dropped = leaderboard.compute(wb, rounds=ROUNDS, both_bad="drop")
    assert dropped.votes_used == 6
    assert dropped.excluded == {"self_battle": 2, "named": 9, "flagged:truncated": 1,
                                "flagged:identity": 2, "both_bad": 1}

    everything = leaderboard.compute(wb, rounds=ROUNDS, include_named=True, include_flagged=True)
    assert everything.votes_used == 19 and everything.excluded == {"self_battle": 2}
    assert "alpha-copy" not in set(everything.table["model"])  # out of the arena, and no counted vote
    with pytest.raises(InvalidInput, match="tie or drop"):
        leaderboard.compute(wb, both_bad="maybe")


def test_named_battles_still_give_dpo_pairs(wb, arena):
    rows = {r.vote_id: r for r in preference_export.select_votes(wb)}
    _, pair_ids = preference_export.preference_rows(wb)
    prompts = [rows[i].messages[-1]["content"] for i in pair_ids]
    assert sorted(p for p in prompts if p.startswith("named")) == [f"named {i}" for i in range(8)]
    assert len([p for p in prompts if p.startswith("blind ")]) == 6


def test_cache_keeps_each_view_and_samples_from_the_default(wb, arena):
    alpha, beta = arena
    cache = leaderboard_cache(wb)
    default = cache.get(rounds=ROUNDS)
    assert cache.get(rounds=ROUNDS) is default  # nothing changed: the cached view
    with_named = cache.get(rounds=ROUNDS, include_named=True)
    assert with_named.votes_used == 15 and cache.get(rounds=ROUNDS) is default
    by_name = default.widths()
    # Sampling reads the default view's intervals, even right after another view was computed.
    assert cache.widths([alpha.id, beta.id]) == [by_name["alpha"], by_name["beta"]]
    assert with_named.widths() != by_name
    blind(wb, beta, "one more")
    fresh = cache.get(rounds=ROUNDS)
    assert fresh is not default and fresh.votes_used == 8
    # A model's weights changing (here: its server tag) changes which battles are self-battles.
    with wb.session() as s:
        copy = s.exec(select(ModelVersion).where(ModelVersion.name == "alpha-copy")).one()
        copy.base_path = "gamma:1b"
        s.add(copy)
        s.commit()
    assert cache.get(rounds=ROUNDS, include_named=True).excluded["self_battle"] == 1


def test_sampling_never_pairs_the_same_weights(wb, stub):
    alpha, beta = register_served(wb, stub, ("alpha:1b", "beta:1b"))
    copy = registry.register_remote_model(wb, "alpha-copy", "ollama", stub.url, "alpha")  # :latest
    registry.register_remote_model(wb, "alpha-latest", "ollama", stub.url, "alpha:latest")
    keys = {registry.weights_key(m) for m in registry.list_models(wb)}
    assert len(keys) == 3
    latest = {copy.id, registry_id(wb, "alpha-latest")}
    seen = {frozenset(battles.sample_pair(wb)) for _ in range(200)}
    assert len(seen) == 5 and frozenset(latest) not in seen  # every pair but the one self-battle
    registry.set_in_arena(wb, beta.id, False)
    registry.set_in_arena(wb, alpha.id, False)
    with pytest.raises(InvalidInput, match="same weights"):
        battles.sample_pair(wb)


def test_exclusions_read_as_one_sentence():
    assert describe_exclusions({}) == "No votes were left out."
    text = describe_exclusions({"self_battle": 1, "named": 9, "flagged:identity": 2, "both_bad": 1})
    assert text == ("Votes left out: 1 from self-battles (the same weights on both sides), "
                    "9 from named battles, 2 flagged (a model named itself), 1 rated both bad.")


def registry_id(wb, name):
    return next(m.id for m in registry.list_models(wb) if m.name == name)


def test_arena_tab_toggle_and_sentence(wb, arena):
    from tabs.arena_tab import leaderboard_outputs

    table, _, _, notes = leaderboard_outputs(wb)
    assert notes.splitlines()[0] == (
        "**7 valid votes.** Votes left out: 2 from self-battles (the same weights on both sides), "
        "9 from named battles, 1 flagged (a cut-off answer), 2 flagged (a model named itself).")
    assert list(table["model"]) == ["beta", "alpha"]
    table, _, _, notes = leaderboard_outputs(wb, include_named=True)
    assert notes.startswith("**15 valid votes.** Votes left out: 2 from self-battles")
    assert "named battles" not in notes and list(table["model"]) == ["alpha", "beta"]
