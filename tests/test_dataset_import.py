"""CSV, JSON and Parquet import with column mapping, previews and flat preference rows."""

import json

import pandas as pd
import pytest

from app.core.errors import InvalidInput
from app.data import datasets


def test_csv_with_column_map(wb, tmp_path):
    src = tmp_path / "qa.csv"
    pd.DataFrame({"question": ["What is 1 plus 1?", "Say hi"], "answer": ["2", "hi"],
                  "extra": ["x", "y"]}).to_csv(src, index=False)
    info = datasets.inspect_file(src, "sft", {"instruction": "question", "output": "answer"})
    assert info["columns"] == ["answer", "extra", "question"] and info["total"] == 2
    assert info["format"] == "alpaca" and info["error"] is None
    assert info["preview"][0] == {"instruction": "What is 1 plus 1?", "input": "", "output": "2"}
    ds = datasets.register_file(wb, src, "qa", "sft", column_map={"instruction": "question",
                                                                  "output": "answer"})
    assert ds.num_rows == 2 and ds.meta["column_map"] == {"instruction": "question", "output": "answer"}
    # Without the map the preview explains what is wrong instead of raising.
    unmapped = datasets.inspect_file(src, "sft")
    assert unmapped["format"] is None and "cannot tell the dataset format" in unmapped["error"]
    with pytest.raises(InvalidInput, match="columns not in the file: nope"):
        datasets.register_file(wb, src, "qa2", "sft", column_map={"instruction": "nope"})


def test_parquet_messages_and_flat_preferences(wb, tmp_path):
    chat = tmp_path / "chat.parquet"
    pd.DataFrame({"messages": [[{"role": "user", "content": "hi"},
                                {"role": "assistant", "content": "hello"}]]}).to_parquet(chat)
    assert datasets.register_file(wb, chat, "chat", "sft").format == "messages"

    pref = tmp_path / "pref.csv"
    pd.DataFrame({"q": ["Name a fruit", "Name a color"], "good": ["An apple.", "Blue."],
                  "bad": ["A chair.", "Loud."]}).to_csv(pref, index=False)
    ds = datasets.register_file(wb, pref, "pref", "dpo",
                                column_map={"prompt": "q", "chosen": "good", "rejected": "bad"})
    row = json.loads(open(ds.path).readline())
    assert row == {"messages": [{"role": "user", "content": "Name a fruit"}],
                   "chosen": {"role": "assistant", "content": "An apple."},
                   "rejected": {"role": "assistant", "content": "A chair."}}


def test_json_list_and_csv_json_cells(wb, tmp_path):
    src = tmp_path / "rows.json"
    src.write_text(json.dumps([{"text": "one"}, {"text": "two"}]))
    assert datasets.register_file(wb, src, "cpt", "cpt").num_rows == 2
    csv = tmp_path / "msgs.csv"
    msgs = json.dumps([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}])
    pd.DataFrame({"messages": [msgs], "label": ["no"]}).to_csv(csv, index=False)
    ds = datasets.register_file(wb, csv, "kto", "kto")
    assert json.loads(open(ds.path).readline())["label"] is False


def test_unreadable_parquet_and_csv(wb, tmp_path):
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"PAR1 not really")
    with pytest.raises(InvalidInput, match="as Parquet"):
        datasets.register_file(wb, bad, "bad", "sft")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(InvalidInput, match="as CSV"):
        datasets.register_file(wb, empty, "empty", "sft")
    assert datasets.list_datasets(wb) == []
