"""Issue 8, bad files: malformed dataset files are refused with a message that names the file
(by its base name) and the line or row, and nothing is stored; parseable-but-odd files are
explained (duplicate keys and rows, dropped columns, huge cells, formula-like cells)."""

import json

import pytest
from sqlmodel import select

from app.core.errors import Conflict, InvalidInput
from app.core.tables import Dataset
from app.data import datasets

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
