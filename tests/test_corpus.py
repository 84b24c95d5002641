"""CPT corpus import: documents chunked by the starter's tokens, preview counts, and bad
inputs refused with clear errors and nothing stored."""

import gzip
import json

import pytest

from app.core.errors import InvalidInput, NotFound
from app.data import corpus, datasets, quality
from tests.test_datasets import nothing_stored

STORY = " ".join(f"Sentence {i} tells of the river, the mill and the miller's cat." for i in range(40))


def test_chunk_windows_overlap_and_cover_every_token():
    ids = list(range(25))
    windows = corpus.chunk_ids(ids, 10, 3)
    assert windows == [ids[0:10], ids[7:17], ids[14:24], ids[21:25]]
    assert corpus.chunk_ids(ids[:4], 10, 3) == [ids[:4]]
    assert corpus.chunk_ids(ids[:10], 10, 0) == [ids[:10]]
    assert corpus.chunk_ids([], 10, 0) == []
    for size, overlap in ((0, 0), (10, 10), (10, -1)):
        with pytest.raises(InvalidInput):
            corpus.chunk_ids(ids, size, overlap)


def test_folder_import_chunks_by_tokens(wb, starter, tmp_path):
    folder = tmp_path / "docs"
    (folder / "sub").mkdir(parents=True)
    (folder / "story.txt").write_text(STORY)
    (folder / "sub" / "notes.md").write_text("# Notes\n\nShort one.")
    (folder / "rows.jsonl").write_text(json.dumps({"text": "Row one text."}) + "\n"
                                       + json.dumps({"text": "Row two text."}) + "\n")
    (folder / "image.png").write_bytes(b"\x89PNG skipped")
    tok = quality.tokenizer_for(wb, starter.id)
    n_story = len(tok(STORY, add_special_tokens=False)["input_ids"])
    assert n_story > 128
    want_story_chunks = len(corpus.chunk_ids(list(range(n_story)), 64, 16))

    info = corpus.preview_corpus(wb, [folder], starter.id, chunk_tokens=64, overlap=16)
    files = {f["file"]: f for f in info["files"]}
    assert set(files) == {"story.txt", "notes.md", "rows.jsonl"}
    assert files["story.txt"]["chunks"] == want_story_chunks
    assert files["story.txt"]["tokens"] == n_story + 16 * (want_story_chunks - 1)
    assert files["rows.jsonl"]["documents"] == 2 and files["rows.jsonl"]["chunks"] == 2
    assert info["chunks"] == want_story_chunks + 3
    assert all(p["tokens"] <= 64 for p in info["preview"]) and len(info["preview"]) == 5
    assert nothing_stored(wb, "river")  # a preview stores nothing

    ds = corpus.import_corpus(wb, [folder], "river", starter.id, chunk_tokens=64, overlap=16)
    assert (ds.kind, ds.format, ds.num_rows, ds.source) == ("cpt", "text", info["chunks"], "corpus")
    assert ds.meta["tokens"] == info["tokens"] and ds.meta["chunk_tokens"] == 64
    stored = [json.loads(x)["text"] for x in open(ds.path)]
    assert stored[:2] == ["Row one text.", "Row two text."] and stored[2].startswith("Sentence 0")
    story_chunks = [t for t in stored if "river" in t]
    assert all(len(tok(t, add_special_tokens=False)["input_ids"]) <= 66 for t in story_chunks)
    assert json.loads(datasets.info_path(wb).read_text())["river"]["columns"] == {"prompt": "text"}


def test_uploaded_files_import(wb, starter, tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.md"
    a.write_text("Alpha document.")
    b.write_text("Beta document.")
    ds = corpus.import_corpus(wb, [a, b], "ab", starter.id, chunk_tokens=512, overlap=0)
    assert [json.loads(x)["text"] for x in open(ds.path)] == ["Alpha document.", "Beta document."]


@pytest.mark.parametrize("name, content, message", [
    ("bad.txt", b"caf\xe9 latin-1", "bad.txt: line 1 is not UTF-8"),
    ("zip.txt", gzip.compress(b"hello"), "zip.txt: it is gzip-compressed"),
    ("nul.md", b"text\x00more", "nul.md: it holds NUL bytes"),
    ("rows.jsonl", b'{"text": "ok"}\n{"body": "no text"}\n', "rows.jsonl row 2: each row needs a 'text'"),
    ("rows.jsonl", b'{"text": "ok"}\n{broken\n', "rows.jsonl line 2 is not valid JSON"),
    ("doc.pdf", b"%PDF-1.4", "doc.pdf: corpus files must be .txt, .md, .jsonl"),
])
def test_bad_files_are_refused_and_nothing_is_left(wb, starter, tmp_path, name, content, message):
    good = tmp_path / "good.txt"
    good.write_text("A good document.")
    bad = tmp_path / name
    bad.write_bytes(content)
    with pytest.raises(InvalidInput, match=message) as e:
        corpus.import_corpus(wb, [good, bad], "corp", starter.id)
    assert str(tmp_path) not in str(e.value)
    assert nothing_stored(wb, "corp") and datasets.list_datasets(wb) == []


def test_oversized_missing_and_bad_settings_are_refused(wb, starter, tmp_path, monkeypatch):
    big = tmp_path / "big.txt"
    big.write_text("x" * 2000)
    monkeypatch.setattr(corpus, "MAX_FILE_BYTES", 1000)
    with pytest.raises(InvalidInput, match="big.txt is 0 MiB; one file may be at most"):
        corpus.import_corpus(wb, [big], "corp", starter.id)
    monkeypatch.setattr(corpus, "MAX_FILE_BYTES", 10_000)
    monkeypatch.setattr(corpus, "MAX_TOTAL_BYTES", 3000)
    with pytest.raises(InvalidInput, match="one import takes at most"):
        corpus.import_corpus(wb, [big, big.with_name("big.txt")], "corp", starter.id)
    (tmp_path / "blank.txt").write_text("  \n\n ")
    with pytest.raises(InvalidInput, match="the files hold no text"):
        corpus.import_corpus(wb, [tmp_path / "blank.txt"], "corp", starter.id)
    with pytest.raises(InvalidInput, match="gone.txt does not exist"):
        corpus.import_corpus(wb, [tmp_path / "gone.txt"], "corp", starter.id)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidInput, match="folder empty holds no"):
        corpus.import_corpus(wb, [tmp_path / "empty"], "corp", starter.id)
    with pytest.raises(InvalidInput, match="overlap"):
        corpus.import_corpus(wb, [big], "corp", starter.id, chunk_tokens=8, overlap=8)
    with pytest.raises(NotFound):
        corpus.import_corpus(wb, [big], "corp", 999)
    with pytest.raises(InvalidInput, match="dataset name"):
        corpus.import_corpus(wb, [big], "../corp", starter.id)
    assert nothing_stored(wb, "corp") and datasets.list_datasets(wb) == []
