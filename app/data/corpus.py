"""Continued pre-training corpora: .txt/.md/.jsonl documents, from a folder or uploads,
chunked by a model's tokens into a text dataset for stage pt."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.core.errors import InvalidInput
from app.data import datasets
from app.data.quality import tokenizer_for

if TYPE_CHECKING:
    from app.core.tables import Dataset
    from app.core.workbench import Workbench

SUFFIXES = (".txt", ".md", ".jsonl")
MAX_FILE_BYTES = 64 * 1024 * 1024  # one document file
MAX_TOTAL_BYTES = 256 * 1024 * 1024  # all files of one import
MAX_FILES = 10_000
PREVIEW = 5


def chunk_ids(ids: list[int], size: int, overlap: int) -> list[list[int]]:
    """Windows of ``size`` tokens, each starting ``size - overlap`` after the last; the last
    window ends at the last token (a document shorter than ``size`` is one window)."""
    if size < 1:
        raise InvalidInput(f"chunk size must be at least 1 token, got {size}")
    if not 0 <= overlap < size:
        raise InvalidInput(f"overlap must be at least 0 and below the chunk size ({size}), got {overlap}")
    step, out = size - overlap, []
    for start in range(0, max(len(ids), 1), step):
        out.append(ids[start:start + size])
        if start + size >= len(ids):
            break
    return [w for w in out if w]


def collect_files(paths: list[str | Path]) -> list[Path]:
    """The document files named: files as given, folders searched recursively for .txt, .md
    and .jsonl (other files there are skipped). Problems name files by base name only."""
    if not paths:
        raise InvalidInput("give at least one file or folder")
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in SUFFIXES)
            if not found:
                raise InvalidInput(f"folder {p.name} holds no {', '.join(SUFFIXES)} files")
            files.extend(found)
        elif p.is_file():
            if p.suffix.lower() not in SUFFIXES:
                raise InvalidInput(f"{p.name}: corpus files must be {', '.join(SUFFIXES)}")
            files.append(p)
        else:
            raise InvalidInput(f"{p.name or p} does not exist or is not a file or folder")
    if len(files) > MAX_FILES:
        raise InvalidInput(f"{len(files):,} files; a corpus import takes at most {MAX_FILES:,}")
    total = 0
    for f in files:
        size = f.stat().st_size
        if size > MAX_FILE_BYTES:
            raise InvalidInput(f"{f.name} is {size / 2**20:.0f} MiB; one file may be at most "
                               f"{MAX_FILE_BYTES // 2**20} MiB (split it)")
        total += size
    if total > MAX_TOTAL_BYTES:
        raise InvalidInput(f"the files come to {total / 2**20:.0f} MiB; one import takes at most "
                           f"{MAX_TOTAL_BYTES // 2**20} MiB")
    return files


def read_documents(path: Path) -> list[str]:
    """A .txt/.md file is one document; a .jsonl file one per row, from its "text" column."""
    if path.suffix.lower() == ".jsonl":
        docs = []
        for n, row in enumerate(datasets.read_rows(path), start=1):
            if not isinstance(row, dict) or not isinstance(row.get("text"), str):
                raise InvalidInput(f"{path.name} row {n}: each row needs a 'text' string")
            docs.append(row["text"])
        return docs
    text = datasets._read_text(path)
    if "\x00" in text:
        raise InvalidInput(f"cannot read {path.name}: it holds NUL bytes, so it is not a text file")
    return [text]


def build_chunks(wb: Workbench, paths: list[str | Path], model_id: int, chunk_tokens: int = 512,
                 overlap: int = 64) -> dict[str, Any]:
    """Read and chunk the documents: {"chunks": [text...], "tokens": [count...], "files": [...]}."""
    chunk_ids([], chunk_tokens, overlap)  # checks the sizes before any reading
    files = collect_files(paths)
    tok = tokenizer_for(wb, model_id)
    chunks: list[str] = []
    counts: list[int] = []
    per_file = []
    for f in files:
        docs = [d for d in read_documents(f) if d.strip()]
        n_chunks = n_tokens = 0
        for ids in tok(docs, add_special_tokens=False, verbose=False)["input_ids"] if docs else []:
            for window in chunk_ids(ids, chunk_tokens, overlap):
                text = tok.decode(window)
                if text.strip():
                    chunks.append(text)
                    counts.append(len(window))
                    n_chunks += 1
                    n_tokens += len(window)
        per_file.append({"file": f.name, "documents": len(docs), "chunks": n_chunks, "tokens": n_tokens})
    if not chunks:
        raise InvalidInput("the files hold no text")
    return {"chunks": chunks, "tokens": counts, "files": per_file}


def preview_corpus(wb: Workbench, paths: list[str | Path], model_id: int, chunk_tokens: int = 512,
                   overlap: int = 64) -> dict[str, Any]:
    """What importing would store: counts per file, the total tokens and the first chunks."""
    built = build_chunks(wb, paths, model_id, chunk_tokens, overlap)
    return {"files": built["files"], "chunks": len(built["chunks"]), "tokens": sum(built["tokens"]),
            "preview": [{"text": t, "tokens": n} for t, n in
                        zip(built["chunks"][:PREVIEW], built["tokens"][:PREVIEW], strict=True)]}


def import_corpus(wb: Workbench, paths: list[str | Path], name: str, model_id: int,
                  chunk_tokens: int = 512, overlap: int = 64) -> Dataset:
    """Register the chunked documents as a cpt (stage pt) text dataset named ``name``;
    nothing is stored unless every file reads."""
    datasets.check_name(name)
    built = build_chunks(wb, paths, model_id, chunk_tokens, overlap)
    meta = {"origin": "corpus", "files": built["files"], "model_id": model_id,
            "chunk_tokens": chunk_tokens, "overlap": overlap, "tokens": sum(built["tokens"])}
    rows = [{"text": t} for t in built["chunks"]]
    return datasets.register_rows(wb, name, "cpt", rows, fmt="text", source="corpus", meta=meta)
