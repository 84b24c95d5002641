"""Issue 8, bad files: malformed dataset files are refused with a message that names the file
(by its base name) and the line or row, and nothing is stored; parseable-but-odd files are
explained (duplicate keys and rows, dropped columns, huge cells, formula-like cells)."""

import json

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlmodel import select

from app.core.errors import Conflict, InvalidInput
from app.core.tables import Dataset
from app.data import datasets
from app.data.spreadsheet import csv_safe, looks_like_formula

ALPACA = b'{"instruction": "a", "output": "b"}\n'
DEEP = "more than 100 levels of arrays and objects"


def nothing_stored(wb):
    """No Dataset row, no file under storage/datasets, no dataset_info.json entry."""
    with wb.session() as s:
        rows = s.exec(select(Dataset)).all()
    return rows == [] and list(wb.settings.datasets_dir.iterdir()) == []


def refused(wb, path, kind="sft", name="bad", **kw) -> str:
    with pytest.raises(InvalidInput) as e:
        datasets.register_file(wb, path, name, kind, **kw)
    assert nothing_stored(wb)
    return str(e.value)


def jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("file_name, content, message", [
    ("deep.json", b"[" * 100000, f"deep.json row 1 (from line 1) is nested too deeply: {DEEP}"),
    ("deep.jsonl", ALPACA + b"[" * 100000 + b"\n", f"deep.jsonl row 2 (line 2) is nested too deeply: {DEEP}"),
    ("deep.jsonl", ALPACA + b'{"a": ' * 100000 + b"\n",
     f"deep.jsonl row 2 (line 2) is nested too deeply: {DEEP}"),
    # Parses (Python's json allows ~1000 levels) but is still refused, naming the column.
    ("deep.jsonl", b'{"instruction": "a", "output": "b", "x": ' + b"[" * 500 + b"]" * 500 + b"}\n",
     f"deep.jsonl row 1 (line 1), column 'x' is nested too deeply: {DEEP}"),
    ("deep.json", b'[{"text": "a"},\n ' + b"[" * 100000,
     f"deep.json row 2 (from line 2) is nested too deeply: {DEEP}"),
    ("deep.csv", b'instruction,output\na,"' + b"[" * 100000 + b'"\n',
     f"deep.csv row 1 (line 2), column 'output' is nested too deeply: {DEEP}"),
])
def test_deeply_nested_json_is_refused(wb, tmp_path, file_name, content, message):
    src = tmp_path / file_name
    src.write_bytes(content)
    assert refused(wb, src) == message


@pytest.mark.parametrize("file_name, content, message", [
    ("latin1.jsonl", '{"instruction": "café", "output": "b"}\n'.encode("latin-1"),
     "cannot read latin1.jsonl: line 1 is not UTF-8 text (byte 0xe9); save the file as UTF-8"),
    ("latin1.csv", "instruction,output\na,b\ncafé,c\n".encode("latin-1"),
     "cannot read latin1.csv: line 3 is not UTF-8 text (byte 0xe9); save the file as UTF-8"),
    ("wide.jsonl", '{"instruction": "a", "output": "b"}\n'.encode("utf-16"),
     "cannot read wide.jsonl: it is UTF-16 text (it starts with a UTF-16 byte order mark); "
     "save it as UTF-8"),
    ("book.csv", b"PK\x03\x04" + b"\x00" * 40,
     "cannot read book.csv: it looks like a zip archive or an Excel workbook; export the sheet as CSV"),
    ("rows.jsonl", b"\x1f\x8b\x08\x00" + b"\x00" * 40,
     "cannot read rows.jsonl: it is gzip-compressed; decompress it first"),
    ("rows.jsonl", b"PAR1\x15\x04\x15\x00",
     "cannot read rows.jsonl: it looks like a Parquet file; give it the .parquet suffix"),
    ("cut.json", b'[{"instruction": "a", "output": "b"},\n {"instruction": ',
     "cut.json is not valid JSON: Expecting value at line 2 column 18"),
    ("comma.json", b'[{"instruction": "a", "output": "b"},]',
     "comma.json is not valid JSON: Illegal trailing comma before end of array at line 1 column 37"),
    ("gap.json", b'[{"instruction": "a", "output": "b"} {"instruction": "c", "output": "d"}]',
     "gap.json is not valid JSON: Expecting ',' delimiter at line 1 column 38"),
    ("lines.json", ALPACA * 2,
     "lines.json is not valid JSON: Extra data at line 2 column 1 (it looks like JSON Lines, "
     "one row per line; give it the .jsonl suffix)"),
    ("doc.jsonl", b'[\n  {"instruction": "a", "output": "b"}\n]\n',
     "doc.jsonl line 1 is not valid JSON: Expecting value at column 2 (it looks like one JSON "
     "document over several lines; give it the .json suffix)"),
    ("two.jsonl", b'{"instruction": "a", "output": "b"} {"instruction": "c", "output": "d"}\n',
     "two.jsonl line 1 is not valid JSON: Extra data at column 37"),
    ("nan.jsonl", b'{"instruction": "a", "output": "b", "score": NaN}\n',
     "nan.jsonl line 1 is not valid JSON: NaN is not a JSON value"),
    ("inf.json", b'[{"instruction": "a", "output": "b", "score": -Infinity}]',
     "inf.json row 1 (from line 1) is not valid JSON: -Infinity is not a JSON value"),
    ("object.json", b'{"data": [{"instruction": "a", "output": "b"}]}',
     "object.json: expected a JSON array of rows, got a single object with the keys ['data']"),
    ("number.json", b"42", "number.json: expected a JSON array of rows, got a number"),
    ("empty.json", b"  \n", "empty.json has no rows"),
    ("blank.jsonl", b"\n \n\n", "blank.jsonl has no rows"),
    ("header.csv", b"instruction,output\n", "header.csv has no rows"),
    ("open.csv", b'instruction,output\na,b\n"c,d\n',
     "cannot read open.csv as CSV: line 3: a quoted cell is not closed before the end of the file"),
    ("quote.csv", b'instruction,output\n"a"x,b\n',
     "cannot read quote.csv as CSV: line 2: ',' expected after '\"'"),
    ("ragged.csv", b"instruction,output\na,b\nc,d,e\n",
     "ragged.csv line 3 has 3 cells, but the header has 2 columns"),
    ("short.csv", b"instruction,output\na\n", "short.csv line 2 has 1 cell, but the header has 2 columns"),
    ("twice.csv", b"instruction,output,output\na,b,c\n",
     "twice.csv: the header names the column 'output' twice"),
])
def test_unreadable_files_name_the_file_and_the_line(wb, tmp_path, file_name, content, message):
    src = tmp_path / file_name
    src.write_bytes(content)
    assert refused(wb, src) == message


def test_bad_parquet_never_shows_the_server_path(wb, tmp_path):
    # Gradio keeps uploads under /tmp/gradio/<hash>/: only the base name may be shown.
    folder = tmp_path / "gradio" / "0123abcd"
    folder.mkdir(parents=True)
    for file_name, content, message in [
        ("broken.parquet", b"PAR1 not really",
         "cannot read broken.parquet as Parquet: Parquet magic bytes not found in footer. Either the "
         "file is corrupted or this is not a parquet file."),
        ("zero.parquet", b"", "cannot read zero.parquet as Parquet: Parquet file size is 0 bytes"),
    ]:
        (folder / file_name).write_bytes(content)
        got = refused(wb, folder / file_name)
        assert got == message and str(tmp_path) not in got
    got = refused(wb, folder / "gone.jsonl")
    assert got == "dataset file gone.jsonl does not exist or is not a file"
    # Parser messages that quote the path (pyarrow's read_table does) lose the directories.
    path = folder / "x.parquet"
    assert datasets._scrub(f"Could not open source '{path}':\n bad footer in /srv/a/b/c.bin", path) == (
        "Could not open source 'x.parquet': bad footer in c.bin")


def test_parquet_with_a_column_twice_is_refused(wb, tmp_path):
    src = tmp_path / "twice.parquet"
    pq.write_table(pa.table([pa.array(["a"]), pa.array(["b"])], names=["text", "text"]), src)
    assert refused(wb, src, kind="cpt") == "twice.parquet: the column 'text' appears twice"


@pytest.mark.parametrize("file_name, content, message", [
    ("keys.jsonl", ALPACA + b'{"instruction": "a", "instruction": "b", "output": "c"}\n',
     "keys.jsonl row 2 (line 2): the key 'instruction' appears twice in one object"),
    ("keys.json", b'[\n  {"instruction": "a", "output": "b"},\n  {"instruction": "a",\n'
                  b'   "output": "b", "output": "c"}\n]',
     "keys.json row 2 (from line 3): the key 'output' appears twice in one object"),
    ("keys.jsonl", b'{"messages": [{"role": "user", "role": "assistant", "content": "x"}]}\n',
     "keys.jsonl row 1 (line 1): the key 'role' appears twice in one object"),
    ("keys.csv", b'messages\n"[{""role"": ""user"", ""content"": ""q"", ""content"": ""r""}]"\n',
     "keys.csv row 1 (line 2), column 'messages': the key 'content' appears twice in one object"),
])
def test_duplicate_json_keys_are_refused(wb, tmp_path, file_name, content, message):
    src = tmp_path / file_name
    src.write_bytes(content)
    assert refused(wb, src) == message


def test_cells_over_the_size_limit_are_refused(wb, tmp_path):
    big = "x" * (datasets.MAX_CELL_CHARS + 1)
    src = jsonl(tmp_path / "big.jsonl",
                [{"instruction": "a", "output": "b"}, {"instruction": "a", "output": big}])
    assert refused(wb, src) == ("big.jsonl row 2 (line 2), column 'output': the cell has more than "
                                "1,000,000 characters, the limit for one cell")
    csv = tmp_path / "big.csv"
    csv.write_text(f"instruction,output\na,{big}\n")
    assert refused(wb, csv) == ("big.csv row 1 (line 2), column 'output': the cell has more than "
                                "1,000,000 characters, the limit for one cell")
    # A messages cell counts all its strings together.
    half = "y" * (datasets.MAX_CELL_CHARS // 2 + 1)
    chat = jsonl(tmp_path / "chat.jsonl", [{"messages": [{"role": "user", "content": half},
                                                         {"role": "assistant", "content": half}]}])
    assert refused(wb, chat) == ("chat.jsonl row 1 (line 1), column 'messages': the cell has more than "
                                 "1,000,000 characters, the limit for one cell")
    # A cell at the limit is fine (CSV cells over the csv module's 128 KiB default too).
    ok = tmp_path / "ok.csv"
    ok.write_text(f"instruction,output\na,{big[1:]}\n")
    assert datasets.register_file(wb, ok, "ok", "sft").num_rows == 1


@pytest.mark.parametrize("file_name, content, message", [
    ("numbers.jsonl", b"1\n2\n3\n", "row 1 is a number, not an object with columns"),
    ("strings.jsonl", b'"hello"\n"world"\n', "row 1 is a string, not an object with columns"),
    ("nulls.jsonl", b"null\n", "row 1 is null, not an object with columns"),
    ("table.json", b'[["instruction", "output"], ["a", "b"]]',
     "row 1 is an array, not an object with columns"),
    ("mixed.jsonl", ALPACA + b"true\n", "row 2 is a boolean, not an object with columns"),
    ("array.jsonl", b'[{"instruction": "a", "output": "b"}]\n',
     "row 1 is an array, not an object with columns (it holds objects: a JSON array of rows "
     "belongs in a .json file)"),
])
def test_rows_that_are_not_objects_are_named(wb, tmp_path, file_name, content, message):
    src = tmp_path / file_name
    src.write_bytes(content)
    assert refused(wb, src) == message
    assert datasets.inspect_file(src, "sft")["error"] == message


@pytest.mark.parametrize("kind, row, message", [
    ("dpo", {"prompt": "q", "chosen": "same", "rejected": "same"},
     "row 2: chosen and rejected are the same answer"),
    ("dpo", {"messages": [{"role": "user", "content": "q"}], "chosen": "same",
             "rejected": {"role": "assistant", "content": "same"}},
     "row 2: chosen and rejected are the same answer"),
    ("sft", {"messages": [{"role": "user", "content": "q"}]},
     "row 2: the conversation must end with an assistant message"),
    ("kto", {"prompt": "q", "label": True}, "row 2: the conversation must end with an assistant message"),
])
def test_row_messages_say_what_is_wrong(wb, tmp_path, kind, row, message):
    good = {"dpo": {"prompt": "p", "chosen": "yes", "rejected": "no"},
            "sft": {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]},
            "kto": {"prompt": "p", "completion": "c", "label": True}}[kind]
    src = jsonl(tmp_path / "rows.jsonl", [good, row])
    assert refused(wb, src, kind=kind) == message


def test_duplicate_rows_are_counted_and_can_be_dropped(wb, tmp_path):
    rows = [{"instruction": "a", "output": "b"}, {"instruction": "c", "output": "d"},
            {"instruction": "a", "output": "b"}, {"instruction": "a", "input": "", "output": "b"}]
    src = jsonl(tmp_path / "dups.jsonl", rows)
    info = datasets.inspect_file(src, "sft")
    assert (info["error"], info["duplicates"], info["duplicates_dropped"]) == (None, 2, 0)
    assert datasets.inspect_file(src, "sft", dedup=True)["duplicates_dropped"] == 2

    kept = datasets.register_file(wb, src, "kept", "sft")
    assert kept.num_rows == 4 and kept.meta["duplicates"] == 2 and kept.meta["duplicates_dropped"] == 0
    deduped = datasets.register_file(wb, src, "deduped", "sft", dedup=True)
    assert deduped.num_rows == 2
    assert (deduped.meta["duplicates"], deduped.meta["duplicates_dropped"]) == (2, 2)
    assert [json.loads(x)["instruction"] for x in open(deduped.path)] == ["a", "c"]
    direct = datasets.register_rows(wb, "direct", "sft", rows, dedup=True)
    assert direct.num_rows == 2 and direct.sha256 == deduped.sha256


def test_a_file_of_one_row_repeated_is_refused_unless_deduplicated(wb, tmp_path):
    src = tmp_path / "same.jsonl"
    src.write_bytes(ALPACA * 5)
    message = "all 5 rows are the same row: 4 duplicates of row 1; drop duplicates to keep one row"
    assert refused(wb, src) == message
    assert datasets.inspect_file(src, "sft")["error"] == message
    two = tmp_path / "two.jsonl"
    two.write_bytes(ALPACA * 2)
    assert refused(wb, two) == (
        "all 2 rows are the same row: 1 duplicate of row 1; drop duplicates to keep one row")
    ds = datasets.register_file(wb, src, "one", "sft", dedup=True)
    assert ds.num_rows == 1 and ds.meta["duplicates_dropped"] == 4


def test_dropped_columns_are_listed_on_register(wb, tmp_path):
    src = jsonl(tmp_path / "extra.jsonl", [{"instruction": "a", "output": "b", "id": 1, "source": "web"},
                                           {"instruction": "c", "output": "d", "lang": "en"}])
    assert datasets.inspect_file(src, "sft")["dropped_columns"] == ["id", "lang", "source"]
    ds = datasets.register_file(wb, src, "extra", "sft")
    assert ds.meta["dropped_columns"] == ["id", "lang", "source"]
    # Named as in the file, also when a column map renamed them.
    csv = tmp_path / "qa.csv"
    pd.DataFrame({"q": ["hi"], "a": ["hello"], "ctx": ["x"], "note": ["y"]}).to_csv(csv, index=False)
    mapping = {"instruction": "q", "output": "a", "system": "ctx"}
    assert datasets.inspect_file(csv, "sft", mapping)["dropped_columns"] == ["ctx", "note"]
    assert datasets.register_file(wb, csv, "qa", "sft", column_map=mapping).meta["dropped_columns"] == [
        "ctx", "note"]
    clean = datasets.register_file(wb, jsonl(tmp_path / "c.jsonl", [{"text": "t"}]), "clean", "cpt")
    assert clean.meta == {"origin": "c.jsonl", "column_map": {}, "duplicates": 0, "duplicates_dropped": 0,
                          "dropped_columns": [], "formula_cells": 0}


def test_formula_like_cells_are_counted(wb, tmp_path):
    src = tmp_path / "sheet.csv"
    src.write_text("instruction,output,id\n=1+2,@SUM(A1),=x\nhi,-3,8\n+1 call now,fine,9\n")
    assert datasets.inspect_file(src, "sft")["formula_cells"] == 4  # the id column is not stored
    ds = datasets.register_file(wb, src, "sheet", "sft")
    assert ds.meta["formula_cells"] == 4
    chat = jsonl(tmp_path / "chat.jsonl", [{"messages": [{"role": "user", "content": "=cmd|' /C calc'!A0"},
                                                         {"role": "assistant", "content": "no"}]}])
    assert datasets.register_file(wb, chat, "chat", "sft").meta["formula_cells"] == 1


def test_csv_safe_escapes_formulas():
    assert [csv_safe(v) for v in ["=1+2", "+1", "-3", "@SUM(A1)", "\t=1", "\r=1"]] == [
        "'=1+2", "'+1", "'-3", "'@SUM(A1)", "'\t=1", "'\r=1"]
    plain = ["hello", "a=b", "", " =1", 3, -3, None, True]
    assert [csv_safe(v) for v in plain] == plain
    assert looks_like_formula("=A1") and not looks_like_formula("A1") and not looks_like_formula(-1)


def test_files_that_used_to_be_refused_by_mistake(wb, tmp_path):
    # A UTF-8 byte order mark (Windows Notepad) and U+2028 inside a string are valid.
    bom = tmp_path / "bom.jsonl"
    bom.write_bytes(b"\xef\xbb\xbf" + ALPACA)
    assert datasets.register_file(wb, bom, "bom", "sft").num_rows == 1
    sep = tmp_path / "sep.jsonl"
    sep.write_text(json.dumps({"text": "one\u2028two"}, ensure_ascii=False) + "\n", encoding="utf-8")
    ds = datasets.register_file(wb, sep, "sep", "cpt")
    assert datasets.preview(wb, ds.id) == [{"text": "one\u2028two"}]


@pytest.mark.parametrize("name, message", [
    ("con", "dataset name 'con' is a device name Windows reserves (CON, PRN, AUX, NUL, COM0-9, LPT0-9); "
            "pick another name"),
    ("NUL", "dataset name 'NUL' is a device name Windows reserves (CON, PRN, AUX, NUL, COM0-9, LPT0-9); "
            "pick another name"),
    ("Aux.jsonl", "dataset name 'Aux.jsonl' is a device name Windows reserves (CON, PRN, AUX, NUL, "
                  "COM0-9, LPT0-9); pick another name"),
    ("com1", "dataset name 'com1' is a device name Windows reserves (CON, PRN, AUX, NUL, COM0-9, LPT0-9); "
             "pick another name"),
    ("LPT9.data", "dataset name 'LPT9.data' is a device name Windows reserves (CON, PRN, AUX, NUL, "
                  "COM0-9, LPT0-9); pick another name"),
    ("prn", "dataset name 'prn' is a device name Windows reserves (CON, PRN, AUX, NUL, COM0-9, LPT0-9); "
            "pick another name"),
    ("...", "dataset name '...' is only dots; use letters or digits"),
    (".", "dataset name '.' is only dots; use letters or digits"),
    ("dataset_info", "dataset name 'dataset_info' is reserved: dataset_info.json lists the datasets; "
                     "pick another name"),
    ("Dataset_Info.json", "dataset name 'Dataset_Info.json' is reserved: dataset_info.json lists the "
                          "datasets; pick another name"),
])
def test_reserved_dataset_names_are_refused(wb, tmp_path, name, message):
    src = tmp_path / "a.jsonl"
    src.write_bytes(ALPACA)
    assert refused(wb, src, name=name) == message
    with pytest.raises(InvalidInput) as e:
        datasets.register_rows(wb, name, "sft", [{"instruction": "a", "output": "b"}])
    assert str(e.value) == message


def test_names_that_only_look_reserved_are_fine(wb, tmp_path):
    src = tmp_path / "a.jsonl"
    src.write_bytes(ALPACA)
    for name in ("console", "com10", "lpt", "nul-results", "dataset_infos", "my.dataset_info"):
        assert datasets.register_file(wb, src, name, "sft").name == name


def test_names_that_differ_only_in_case_clash(wb, tmp_path):
    src = tmp_path / "a.jsonl"
    src.write_bytes(ALPACA)
    datasets.register_file(wb, src, "Foo", "sft")
    with pytest.raises(Conflict) as e:
        datasets.register_file(wb, src, "foo", "sft")
    assert str(e.value) == ("a dataset named 'Foo' already exists; names that differ only in case clash "
                            "on Windows and macOS, pick another name")
    with pytest.raises(Conflict) as e:
        datasets.register_file(wb, src, "Foo", "sft")
    assert str(e.value) == "a dataset named 'Foo' already exists"
    # A stray file in the datasets folder: its name is shown, not the server path.
    (wb.settings.datasets_dir / "Stray.jsonl").write_text("{}\n")
    with pytest.raises(Conflict) as e:
        datasets.register_file(wb, src, "stray", "sft")
    assert str(e.value) == (
        "a file named Stray.jsonl is already in the datasets folder; pick another dataset name")
    assert [d.name for d in datasets.list_datasets(wb)] == ["Foo"]


def test_default_dataset_name_is_the_file_stem():
    assert datasets.default_name("/tmp/gradio/0123abcd/support-chats.jsonl") == "support-chats"
    assert datasets.default_name("/tmp/gradio/x/My data (2).v1.csv") == "My-data-2.v1"
    assert datasets.default_name("/tmp/gradio/x/__.json") == "dataset"
    assert len(datasets.default_name("/x/" + "a" * 100 + ".csv")) == 64


def data_tab_fns(wb):
    """The Data tab's event handlers by api name, as Gradio would call them."""
    import gradio as gr

    from tabs import data_tab

    with gr.Blocks() as demo:
        with gr.Tabs():
            data_tab.build(wb)
    return {f.api_name: f.fn for f in demo.fns.values() if f.api_name}, data_tab


def test_data_tab_shows_notes_and_defaults_the_name_to_the_file_stem(wb, tmp_path):
    import gradio as gr

    fns, data_tab = data_tab_fns(wb)
    folder = tmp_path / "gradio" / "0123abcd"
    folder.mkdir(parents=True)
    src = folder / "support chats.csv"
    src.write_text("instruction,output,id\n=1+2,b,1\n=1+2,b,2\nc,d,3\n")
    assert data_tab.name_for(str(src), "  ") == "support-chats"
    assert data_tab.name_for(str(src), " mine ") == "mine"
    assert data_tab.name_for(None, "") == ""
    # Uploads fill an empty name box, or replace the stem an earlier upload put there.
    assert data_tab.name_after_upload(str(src), "", "") == ("support-chats", "support-chats")
    assert data_tab.name_after_upload("/tmp/b.jsonl", "support-chats", "support-chats") == ("b", "b")
    assert data_tab.name_after_upload("/tmp/b.jsonl", "mine", "support-chats") == ("mine", "support-chats")

    message, _ = fns["preview_dataset"](str(src), "sft", "", False)
    assert message == (
        "3 rows · columns: id, instruction, output  \n✅ valid alpaca data  \n"
        "⚠️ 1 duplicate row (the same as an earlier row once stored); tick **Drop duplicates** to leave "
        "it out.  \nColumns not stored (the format does not use them): `id`.  \n"
        "⚠️ 2 cells start with =, +, - or @: a spreadsheet would run such cells as formulas.")
    message, frame = fns["register_dataset"](str(src), "", "sft", "", True)
    assert list(frame["name"]) == ["support-chats"]
    assert message == (
        "Registered **support-chats**: 2 alpaca rows.  \n1 duplicate row dropped.  \n"
        "Columns not stored (the format does not use them): `id`.  \n"
        "⚠️ 1 cell starts with =, +, - or @: a spreadsheet would run such cells as formulas.")
    # Errors show the file's base name only, never the upload folder.
    bad = folder / "deep.jsonl"
    bad.write_text("[" * 100000)
    with pytest.raises(gr.Error) as e:
        fns["register_dataset"](str(bad), "", "sft", "", False)
    assert e.value.message == f"deep.jsonl row 1 (line 1) is nested too deeply: {DEEP}"
    assert [d.name for d in datasets.list_datasets(wb)] == ["support-chats"]
