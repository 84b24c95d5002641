"""Voter limits: one gate, one wording, and a refused message costs no budget."""

import httpx
import pytest
from gradio_client import Client

from app.arena import battles, voters
from app.bootstrap import open_workbench
from app.core.errors import Conflict, EngineError, InvalidInput, NotFound, RateLimited
from app.core.settings import Settings
from app.inference.generation import GenSettings
from app.models import registry
from tests.conftest import ServerThread, home_with_served, register_served

GREEDY = GenSettings(temperature=0.0, max_new_tokens=24)
LIMITS = {"voter_messages_per_minute": 2, "max_prompt_chars": 20, "max_turns": 2}
TOO_LONG = "x" * 21
TOO_LONG_SAYS = "the message is too long (21 characters; the limit is 20)"
TOO_MANY_SAYS = "a conversation has at most 2 turns: start a new one"


def send(wb, voter, battle_id, text, edited=None):
    """A voter's message as the UI sends it: the gate, then both models."""
    with voters.admit_message(wb, voter, text, battles.next_turn(wb, battle_id)) as checked:
        return battles.play_turn(wb, battle_id, checked, edited)


def full_battle(wb, a, b):
    """A battle with its two turns used up (by the workbench's own user: no budget)."""
    battle = battles.new_battle(wb, a.id, b.id, gen=GREEDY)
    for text in ("one", "two"):
        battles.play_turn(wb, battle.id, text)
        battles.vote(wb, battle.id, "a")
    return battle


@pytest.fixture
def limited_wb(tmp_path, stub):
    wb = open_workbench(Settings(home=tmp_path / "home", **LIMITS), start_jobs=False)
    yield wb, register_served(wb, stub, ("alpha:1b", "beta:1b"))
    wb.close()


def test_refused_messages_cost_no_budget(limited_wb):
    wb, (a, b) = limited_wb
    full = full_battle(wb, a, b)
    fresh = battles.new_battle(wb, a.id, b.id, gen=GREEDY)
    gone = [registry.register_remote_model(wb, f"gone{i}", "ollama", "http://127.0.0.1:9", f"x{i}:1b")
            for i in (1, 2)]
    dead = battles.new_battle(wb, gone[0].id, gone[1].id, gen=GREEDY)
    refusals = [
        (fresh.id, TOO_LONG, InvalidInput, "too long"),
        (fresh.id, "   ", InvalidInput, "type a message first"),
        (full.id, "three", InvalidInput, "at most 2 turns"),
        (999, "hello", NotFound, "no battle with id 999"),
        (dead.id, "hello", EngineError, "neither model could answer"),
    ]
    for battle_id, text, error, words in refusals:
        with pytest.raises(error, match=words):
            send(wb, "ann", battle_id, text)
    assert battles.turns(wb, dead.id) == []  # two errors are not stored as a turn to vote on
    # A block that fails after the checks refunds too: an unknown battle, a vote still missing.
    with pytest.raises(NotFound), voters.admit_message(wb, "ann", "hi", 0):
        battles.play_turn(wb, 999, "hi")
    second = battles.new_battle(wb, a.id, b.id, gen=GREEDY)
    # Two messages a minute: both of these pass, however many were refused before.
    send(wb, "ann", fresh.id, "  hello  ")
    with pytest.raises(Conflict, match="vote on the current answers"):
        send(wb, "ann", fresh.id, "too early")
    assert send(wb, "ann", second.id, "hi").messages[-1]["content"] == "hi"
    with pytest.raises(RateLimited, match=r"^too many messages: try again in \d+ s$"):
        send(wb, "ann", battles.new_battle(wb, a.id, b.id, gen=GREEDY).id, "hi")


def test_refused_votes_cost_no_budget(tmp_path, stub):
    wb = open_workbench(Settings(home=tmp_path / "home", voter_votes_per_minute=1), start_jobs=False)
    try:
        a, b = register_served(wb, stub, ("alpha:1b", "beta:1b"))
        battle = battles.new_battle(wb, a.id, b.id, gen=GREEDY)
        for bid, choice, error in ((battle.id, "a", InvalidInput), (999, "a", NotFound),
                                   (battle.id, "maybe", InvalidInput)):
            with pytest.raises(error), voters.admit_vote(wb, "ann"):
                battles.vote(wb, bid, choice, voter="ann")
        battles.play_turn(wb, battle.id, "hi")
        with voters.admit_vote(wb, "ann"):
            battles.vote(wb, battle.id, "a", voter="ann")
        with pytest.raises(RateLimited, match="too many votes"), voters.admit_vote(wb, "ann"):
            pass
        with voters.admit_vote(wb, "ann", metered=False):  # the workbench's own user
            pass
    finally:
        wb.close()


@pytest.fixture
def servers(tmp_path, stub):
    """The workbench (UI and REST) and the voter app on one workbench with tight limits."""
    import launch

    home = tmp_path / "home"
    models = home_with_served(home, stub)
    server, _, wb = launch.build_server(Settings(home=home, **LIMITS))
    voters.create_voter(wb, "ann", "secret123")
    voter_app, _ = launch.build_voter_server(wb)
    with ServerThread(server) as main, ServerThread(voter_app) as shared:
        yield main.url, shared.url, wb, models
    wb.close()


def predict(client, model_id, *texts):
    messages = []
    for text in texts:
        messages += [{"role": "user", "content": text}, {"role": "assistant", "content": "ok"}]
    return client.post("/api/predict", json={"model_id": model_id, "messages": messages[:-1]})


def ui_send(client, text):
    return client.predict("anonymous", None, None, 0.7, 0.9, 64, None, "", text, "", api_name="/arena_send")


def ui_error(client, text) -> str:
    with pytest.raises(Exception) as refused:  # gradio_client's AppError carries the gr.Error text
        ui_send(client, text)
    return str(refused.value)


def test_the_api_charges_only_answered_predictions(servers):
    url, _, wb, (a, _) = servers
    gone = registry.register_remote_model(wb, "gone", "ollama", "http://127.0.0.1:9", "x:1b")
    with httpx.Client(base_url=url, timeout=30) as c:
        refused = [predict(c, a.id, TOO_LONG), predict(c, a.id, " "), predict(c, a.id, "1", "2", "3"),
                   predict(c, 999, "hi"), predict(c, gone.id, "hi")]
        assert [r.status_code for r in refused] == [422, 422, 422, 404, 502]
        assert [predict(c, a.id, "hi").status_code for _ in range(2)] == [200, 200]
        limited = predict(c, a.id, "hi")
        assert limited.status_code == 429
        assert limited.json()["error"]["message"].startswith("too many messages")


def test_the_voter_app_charges_only_answered_messages(servers):
    _, voter_url, _, _ = servers
    client = Client(voter_url, auth=("ann", "secret123"), verbose=False)
    assert TOO_LONG_SAYS in ui_error(client, TOO_LONG)
    assert "type a message first" in ui_error(client, "")
    assert "type a message first" in ui_error(client, "   ")
    for text in ("one", "two"):  # the refusals above cost nothing
        ui_send(client, text)
        client.predict(api_name="/arena_vote_a")
        with pytest.raises(Exception, match="already has a vote"):  # nor does a refused regenerate
            client.predict(api_name="/arena_regenerate")
    assert TOO_MANY_SAYS in ui_error(client, "three")  # checked before charging: no charge either
    client.predict(api_name="/arena_new")
    assert "too many messages: try again in" in ui_error(client, "three")


def test_limits_read_the_same_from_the_function_the_api_and_the_ui(servers):
    url, _, wb, (a, b) = servers
    with pytest.raises(InvalidInput) as too_long:
        battles.play_turn(wb, battles.new_battle(wb, a.id, b.id).id, TOO_LONG)
    with pytest.raises(InvalidInput) as too_many:
        battles.play_turn(wb, full_battle(wb, a, b).id, "three")
    assert (str(too_long.value), str(too_many.value)) == (TOO_LONG_SAYS, TOO_MANY_SAYS)
    with httpx.Client(base_url=url, timeout=30) as c:
        assert predict(c, a.id, TOO_LONG).json()["error"]["message"] == TOO_LONG_SAYS
        assert predict(c, a.id, "one", "two", "three").json()["error"]["message"] == TOO_MANY_SAYS
    client = Client(url, verbose=False)  # the workbench's Arena tab: same checks, no budget
    assert TOO_LONG_SAYS in ui_error(client, TOO_LONG)
    for text in ("one", "two"):
        ui_send(client, text)
        client.predict(api_name="/arena_vote_a")
    assert TOO_MANY_SAYS in ui_error(client, "three")
