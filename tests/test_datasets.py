import json

import pytest
from sqlmodel import select

from app.core.errors import Conflict, InvalidInput
from app.core.tables import Dataset
from app.data import datasets


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def nothing_stored(wb, name):
    info = datasets.info_path(wb)
    entries = json.loads(info.read_text()) if info.exists() else {}
    with wb.session() as s:
        row = s.exec(select(Dataset).where(Dataset.name == name)).first()
    return name not in entries and row is None and not (
        wb.settings.datasets_dir / f"{name}.jsonl").exists()


def test_register_alpaca_file_writes_file_info_and_row(wb, tmp_path):
    src = write_jsonl(tmp_path / "a.jsonl", [
        {"instruction": "Say hi", "output": "Hi"},
        {"instruction": "Add", "input": "1 and 2", "output": "3"},
    ])
    ds = datasets.register_file(wb, src, "greet", "sft")
    assert (ds.kind, ds.format, ds.num_rows) == ("sft", "alpaca", 2)
    stored = [json.loads(x) for x in open(ds.path)]
    assert stored[0] == {"instruction": "Say hi", "input": "", "output": "Hi"}
    info = json.loads(datasets.info_path(wb).read_text())
    assert info["greet"]["file_name"] == "greet.jsonl"
    assert info["greet"]["columns"]["response"] == "output"
    assert datasets.preview(wb, ds.id, limit=1) == stored[:1]


def test_messages_and_preference_formats(wb, tmp_path):
    chat = write_jsonl(tmp_path / "c.jsonl", [{"messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}])
    assert datasets.register_file(wb, chat, "chat", "sft").format == "messages"
    pref = write_jsonl(tmp_path / "p.jsonl", [{
        "messages": [{"role": "user", "content": "hi"}],
        "chosen": "hello there", "rejected": {"role": "assistant", "content": "go away"}}])
    ds = datasets.register_file(wb, pref, "pref", "dpo")
    row = json.loads(open(ds.path).readline())
    assert row["chosen"] == {"role": "assistant", "content": "hello there"}
    entry = json.loads(datasets.info_path(wb).read_text())["pref"]
    assert entry["ranking"] is True and entry["formatting"] == "sharegpt"


@pytest.mark.parametrize("content, message", [
    (b"\xff\xfe\x00binary", "cannot read"),
    (b'{"instruction": "a", "output": "b"}\n{broken\n', "line 2 is not valid JSON"),
    (b"", "no rows"),
    (b'{"instruction": "a", "output": ""}\n', "row 1"),
    (b'{"foo": 1}\n', "cannot tell the dataset format"),
])
def test_bad_files_are_refused_and_nothing_is_written(wb, tmp_path, content, message):
    src = tmp_path / "bad.jsonl"
    src.write_bytes(content)
    with pytest.raises(InvalidInput, match=message):
        datasets.register_file(wb, src, "bad", "sft")
    assert nothing_stored(wb, "bad")


def test_missing_file_and_wrong_suffix(wb, tmp_path):
    with pytest.raises(InvalidInput, match="does not exist"):
        datasets.register_file(wb, tmp_path / "nope.jsonl", "nope", "sft")
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(InvalidInput, match="supported files"):
        datasets.register_file(wb, tmp_path / "x.txt", "x", "sft")


@pytest.mark.parametrize("row, message", [
    # Rows LLaMA-Factory would skip with only a warning are errors here.
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
      "chosen": "x", "rejected": "y"}, "must end with a user message"),
    ({"messages": [{"role": "assistant", "content": "q"}], "chosen": "x", "rejected": "y"},
     "should be from user"),
    ({"messages": [{"role": "user", "content": "q"}], "chosen": "same", "rejected": "same"},
     "row 1: chosen and rejected are the same answer"),
    ({"messages": [{"role": "user", "content": "q"}], "chosen": {"role": "user", "content": "x"},
      "rejected": "y"}, "assistant message"),
])
def test_preference_rows_that_llamafactory_would_skip(wb, tmp_path, row, message):
    src = write_jsonl(tmp_path / "p.jsonl", [row])
    with pytest.raises(InvalidInput, match=message):
        datasets.register_file(wb, src, "p", "dpo")
    assert nothing_stored(wb, "p")


def test_kind_mismatch_bad_name_and_duplicates(wb, tmp_path):
    src = write_jsonl(tmp_path / "a.jsonl", [{"instruction": "a", "output": "b"}])
    with pytest.raises(InvalidInput, match="a dpo dataset must be preference"):
        datasets.register_file(wb, src, "a", "dpo")
    with pytest.raises(InvalidInput, match="dataset name"):
        datasets.register_file(wb, src, "../escape", "sft")
    datasets.register_file(wb, src, "a", "sft")
    with pytest.raises(Conflict, match="already exists"):
        datasets.register_file(wb, src, "a", "sft")
    assert len(datasets.list_datasets(wb)) == 1


def test_failed_db_insert_rolls_back_files(wb, tmp_path, monkeypatch):
    src = write_jsonl(tmp_path / "a.jsonl", [{"instruction": "a", "output": "b"}])

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(datasets, "Dataset", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        datasets.register_file(wb, src, "a", "sft")
    monkeypatch.undo()
    assert nothing_stored(wb, "a")
