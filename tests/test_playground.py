"""The chat playground: one model's streamed answer, conversations kept as SFT examples,
and a battle started from one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlmodel import select

from app.arena import playground
from app.core.errors import InvalidInput
from app.core.tables import BattleTurn
from app.data import datasets
from app.inference.generation import Finish, GenSettings

GREEDY = GenSettings(temperature=0.0, max_new_tokens=16)


def test_a_local_model_streams_its_answer_and_bad_conversations_are_refused(wb, starter):
    pieces = list(playground.chat_stream(wb, starter.id, [{"role": "user", "content": "Hello!"}], GREEDY))
    assert isinstance(pieces[-1], Finish) and "".join(p for p in pieces if isinstance(p, str)).strip()
    user, assistant = {"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}
    for bad, words in [([], "empty"), ([assistant], "from the user"), ([user, assistant], "end with"),
                       ([{"role": "user", "content": "  "}], "no text")]:
        with pytest.raises(InvalidInput, match=words):
            list(playground.chat_stream(wb, starter.id, bad, GREEDY))


def test_conversations_become_sft_examples_without_rewriting_a_dataset(wb):
    talk = [{"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "Blue."}]
    first = playground.save_example(wb, talk, "kept", system_prompt="Be brief.")
    assert (first.name, first.kind, first.num_rows) == ("kept", "sft", 1)
    row = json.loads(Path(first.path).read_text().splitlines()[0])
    assert [m["role"] for m in row["messages"]] == ["system", "user", "assistant"]
    more = playground.save_example(wb, [{"role": "user", "content": "And another?"},
                                        {"role": "assistant", "content": "Green."}], "kept")
    assert (more.name, more.num_rows, more.meta["parent_id"]) == ("kept-2", 2, first.id)
    assert datasets.get_dataset(wb, first.id).num_rows == 1  # the first snapshot is untouched
    with pytest.raises(InvalidInput, match="end with the assistant"):
        playground.save_example(wb, talk[:1], "kept")
    with pytest.raises(InvalidInput, match="name"):
        playground.save_example(wb, talk, "  ")


def test_a_conversation_opens_a_battle_and_the_routes_answer(starter_server, sft_adapter_dir):
    from app.models import registry

    server, wb, base = starter_server
    tuned = registry.register_adapter(wb, "tuned", base.id, str(sft_adapter_dir))
    with TestClient(server) as client:
        hello = [{"role": "user", "content": "Hello!"}]
        said = client.post("/api/playground/chat",
                           json={"model_id": base.id, "temperature": 0, "messages": hello})
        assert said.status_code == 200 and said.json()["answer"]
        assert said.json()["finish"] in ("stop", "length")
        talk = [*hello, {"role": "assistant", "content": said.json()["answer"]}]
        kept = client.post("/api/playground/examples", json={"messages": talk, "dataset": "from-chat"})
        assert kept.status_code == 201 and kept.json()["rows"] == 1
        battle = client.post("/api/playground/arena", json={"model_id": base.id, "messages": talk,
                                                           "temperature": 0})
        assert battle.status_code == 201 and battle.json()["model_b_id"] == tuned.id
        with wb.session() as s:
            found = select(BattleTurn).where(BattleTurn.battle_id == battle.json()["battle_id"])
            turn = s.exec(found).one()
        assert turn.messages[-1]["content"] == "Hello!" and turn.answer_a and turn.answer_b
        bad = client.post("/api/playground/chat", json={"model_id": base.id, "messages": []})
        assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_input"
