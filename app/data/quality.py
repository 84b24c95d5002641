"""The quality report of a dataset (duplicates, near-duplicates, empty and over-long rows,
languages, personal data) and the clean-up that writes a cleaned new version of it."""

from __future__ import annotations

import json
import zlib
from collections import Counter
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from sqlmodel import select

from app.core.errors import InvalidInput, NotFound
from app.core.tables import Dataset, ModelVersion
from app.data import datasets, pii

if TYPE_CHECKING:
    from app.core.workbench import Workbench

EXAMPLES = 5  # examples shown per finding
NUM_PERM = 128  # MinHash permutations: enough for a 0.05 error at these thresholds
SHINGLE = 5  # characters per shingle: robust for short rows, where word shingles are few
PiiAction = Literal["redact", "drop", "keep"]
PII_ACTIONS = ("redact", "drop", "keep")
# Called with the name of each stage as it starts ("near-duplicates", "tokens", ...).
StageFn = Callable[[str], None]


def _no_stage(name: str) -> None:
    pass


def row_text(row: dict[str, Any]) -> str:
    """All the text of a stored row, whatever its format, one field per line."""
    parts: list[str] = []

    def walk(v: Any) -> None:
        if isinstance(v, str):
            parts.append(v)
        elif isinstance(v, dict):
            for key, x in v.items():
                if key != "role":
                    walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)

    walk(row)
    return "\n".join(p for p in parts if p)


def read_stored(ds: Dataset) -> list[dict[str, Any]]:
    with open(ds.path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def normalise(text: str) -> str:
    """What makes two rows "the same": case and runs of white space do not count."""
    return " ".join(text.casefold().split())


def is_empty(text: str) -> bool:
    """No letter or digit at all ("", "...", "  - ")."""
    return not any(c.isalnum() for c in text)


@lru_cache(maxsize=4)
def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def tokenizer_path(wb: Workbench, model_id: int) -> str:
    """The folder of a registered local model's tokenizer (its base weights' folder)."""
    with wb.session() as s:
        mv = s.get(ModelVersion, model_id)
    if mv is None:
        raise NotFound(f"no model with id {model_id}")
    base = Path(mv.base_path)
    if mv.kind in ("ollama", "openai") or not (base / "tokenizer_config.json").is_file():
        raise InvalidInput(f"model {mv.name!r} has no local tokenizer; pick a model with local weights")
    return str(base)


def tokenizer_for(wb: Workbench, model_id: int):
    """The tokenizer of a registered local model."""
    return load_tokenizer(tokenizer_path(wb, model_id))


def check_options(threshold: float, max_tokens: int, pii_action: str = "redact") -> None:
    """Refuse options no analysis can use, before any work (or job) starts."""
    if not 0 < threshold <= 1:
        raise InvalidInput(f"threshold must be above 0 and at most 1, got {threshold}")
    if max_tokens < 1:
        raise InvalidInput(f"max_tokens must be at least 1, got {max_tokens}")
    if pii_action not in PII_ACTIONS:
        raise InvalidInput(f"pii_action must be redact, drop or keep, got {pii_action!r}")


def count_tokens(tok, texts: list[str]) -> list[int]:
    if not texts:
        return []
    return [len(ids) for ids in tok(texts, add_special_tokens=False, verbose=False)["input_ids"]]


def duplicates(texts: list[str], threshold: float) -> tuple[dict[int, int], dict[int, int]]:
    """({row: earlier row it repeats exactly}, {row: earlier row it nearly repeats}), by index.
    Near means an estimated Jaccard similarity of character shingles >= ``threshold``."""
    from datasketch import MinHash, MinHashLSH

    if not 0 < threshold <= 1:
        raise InvalidInput(f"threshold must be above 0 and at most 1, got {threshold}")
    exact: dict[int, int] = {}
    near: dict[int, int] = {}
    first: dict[str, int] = {}
    lsh = MinHashLSH(threshold=threshold, num_perm=NUM_PERM)
    # One set of permutations for all rows, and CRC32 for the shingles: building a MinHash
    # with fresh permutations and SHA-1 hashing took most of the time.
    seed = MinHash(num_perm=NUM_PERM)
    hashes: dict[int, MinHash] = {}
    for i, text in enumerate(texts):
        norm = normalise(text)
        if norm in first:
            exact[i] = first[norm]
            continue
        first[norm] = i
        if is_empty(norm):
            continue
        m = MinHash(num_perm=NUM_PERM, permutations=seed.permutations, scheme=seed.scheme,
                    hashfunc=zlib.crc32)
        grams = {norm[j:j + SHINGLE] for j in range(max(1, len(norm) - SHINGLE + 1))}
        m.update_batch([g.encode() for g in grams])
        # LSH gives candidates; keep those whose estimate passes, the earliest first.
        close = sorted(j for j in lsh.query(m) if hashes[j].jaccard(m) >= threshold)
        if close:
            near[i] = close[0]
            continue
        lsh.insert(i, m)
        hashes[i] = m
    return exact, near


def _languages(texts: list[str]) -> list[str]:
    """Each text's language code ("en"); "und" where it cannot be told or no detector loads."""
    try:
        import py3langid as langid
    except ImportError:
        return ["und"] * len(texts)
    return [langid.classify(t)[0] if not is_empty(t) else "und" for t in texts]


def _snippet(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def analyse(texts: list[str], threshold: float = 0.85, tok=None, max_tokens: int = 1024,
            stage: StageFn = _no_stage) -> dict[str, Any]:
    """The findings over ``texts`` (one per row); rows are numbered from 1 in the examples."""
    stage("near-duplicates")
    exact, near = duplicates(texts, threshold)
    empty = [i for i, t in enumerate(texts) if is_empty(t)]
    report: dict[str, Any] = {"rows": len(texts)}
    report["exact_duplicates"] = {
        "count": len(exact),
        "examples": [{"row": i + 1, "same_as": j + 1, "text": _snippet(texts[i])}
                     for i, j in list(exact.items())[:EXAMPLES]],
    }
    report["near_duplicates"] = {
        "count": len(near), "threshold": threshold,
        "examples": [{"row": i + 1, "like": j + 1, "text": _snippet(texts[i]), "other": _snippet(texts[j])}
                     for i, j in list(near.items())[:EXAMPLES]],
    }
    report["empty"] = {"count": len(empty),
                       "examples": [{"row": i + 1, "text": texts[i]} for i in empty[:EXAMPLES]]}
    if tok is None:
        report["tokens"] = report["over_long"] = None
    else:
        stage("tokens")
        counts = count_tokens(tok, texts)
        long_rows = [i for i, n in enumerate(counts) if n > max_tokens]
        report["tokens"] = {"total": sum(counts), "max": max(counts, default=0),
                            "mean": round(sum(counts) / len(counts), 1) if counts else 0}
        report["over_long"] = {
            "count": len(long_rows), "max_tokens": max_tokens,
            "examples": [{"row": i + 1, "tokens": counts[i], "text": _snippet(texts[i])}
                         for i in long_rows[:EXAMPLES]],
        }
    stage("language")
    langs = _languages(texts)
    report["languages"] = dict(Counter(langs).most_common())
    found: dict[str, dict[str, Any]] = {k: {"rows": 0, "matches": 0, "examples": []} for k in pii.KINDS}
    pii_rows = 0
    stage("PII")
    for i, text in enumerate(texts):
        hits = pii.find_pii(text)
        pii_rows += bool(hits)
        for kind in {h.kind for h in hits}:
            found[kind]["rows"] += 1
        for h in hits:
            found[h.kind]["matches"] += 1
            if len(found[h.kind]["examples"]) < EXAMPLES:
                found[h.kind]["examples"].append({"row": i + 1, "match": h.text})
    report["pii"] = found
    report["pii_rows"] = pii_rows
    return report


def quality_report(wb: Workbench, dataset_id: int, model_id: int | None = None, max_tokens: int = 1024,
                   threshold: float = 0.85) -> dict[str, Any]:
    """The quality report of a dataset; token counts and over-long rows need ``model_id``."""
    ds = datasets.get_dataset(wb, dataset_id)
    check_options(threshold, max_tokens)
    tok = tokenizer_for(wb, model_id) if model_id is not None else None
    texts = [row_text(r) for r in read_stored(ds)]
    report = analyse(texts, threshold, tok, max_tokens)
    return {"dataset_id": ds.id, "name": ds.name, "model_id": model_id, **report}


def _map_strings(value: Any, fn) -> Any:
    if isinstance(value, str):
        return fn(value)
    if isinstance(value, dict):
        return {k: (v if k == "role" else _map_strings(v, fn)) for k, v in value.items()}
    if isinstance(value, list):
        return [_map_strings(v, fn) for v in value]
    return value


def free_name(wb: Workbench, base: str) -> str:
    """``base``-clean, or -clean-2, -clean-3... the first name no dataset has."""
    with wb.session() as s:
        taken = {n.lower() for n in s.exec(select(Dataset.name))}
    stem = base[:52]
    for n in range(1, 1000):
        name = f"{stem}-clean" if n == 1 else f"{stem}-clean-{n}"
        if name.lower() not in taken:
            return name
    raise InvalidInput(f"no free name for a cleaned copy of {base!r}; give one")


def clean_rows(rows: list[dict[str, Any]], tok=None, dedup_exact: bool = True, dedup_near: bool = True,
               pii_action: PiiAction = "redact", drop_empty: bool = True, max_tokens: int = 1024,
               threshold: float = 0.85, stage: StageFn = _no_stage) -> tuple[list[dict[str, Any]], Counter]:
    """(the rows kept, redacted where asked; what was left out or changed, by reason)."""
    texts = [row_text(r) for r in rows]
    stage("near-duplicates")
    exact, near = duplicates(texts, threshold)
    if tok is not None:
        stage("tokens")
    counts = count_tokens(tok, texts) if tok is not None else [0] * len(rows)
    stage("PII")
    dropped: Counter = Counter()
    kept = []
    for i, (row, text) in enumerate(zip(rows, texts, strict=True)):
        if drop_empty and is_empty(text):
            dropped["empty"] += 1
        elif dedup_exact and i in exact:
            dropped["exact_duplicates"] += 1
        elif dedup_near and i in near:
            dropped["near_duplicates"] += 1
        elif tok is not None and counts[i] > max_tokens:
            dropped["over_long"] += 1
        elif pii_action == "drop" and pii.find_pii(text):
            dropped["pii"] += 1
        else:
            if pii_action == "redact" and pii.find_pii(text):
                dropped["pii_redacted_rows"] += 1
                row = _map_strings(row, pii.redact)
            kept.append(row)
    return kept, dropped


def clean_meta(parent: Dataset, dropped: dict[str, int], options: dict[str, Any]) -> dict[str, Any]:
    """A cleaned version's meta: the parent link and what the clean-up did."""
    return {"parent_id": parent.id, "parent_name": parent.name, "cleaned": {"options": options, **dropped}}


def nothing_left(name: str, dropped: dict[str, int]) -> InvalidInput:
    return InvalidInput(f"cleaning would leave no rows of {name!r} ({dict(dropped)}); relax the options")


def clean_dataset(
    wb: Workbench,
    dataset_id: int,
    name: str | None = None,
    dedup_exact: bool = True,
    dedup_near: bool = True,
    pii_action: PiiAction = "redact",
    drop_empty: bool = True,
    model_id: int | None = None,
    max_tokens: int = 1024,
    threshold: float = 0.85,
) -> Dataset:
    """Write a cleaned NEW dataset from ``dataset_id`` (which is left as it is): duplicates
    and near-duplicates left out, personal data redacted or its rows dropped, empty rows and
    (with ``model_id``) rows over ``max_tokens`` dropped. Its meta names the parent and counts."""
    if pii_action not in PII_ACTIONS:
        raise InvalidInput(f"pii_action must be redact, drop or keep, got {pii_action!r}")
    ds = datasets.get_dataset(wb, dataset_id)
    check_options(threshold, max_tokens, pii_action)
    if name is not None:
        datasets.check_name(name)
    tok = tokenizer_for(wb, model_id) if model_id is not None else None
    kept, dropped = clean_rows(read_stored(ds), tok, dedup_exact, dedup_near, pii_action, drop_empty,
                               max_tokens, threshold)
    if not kept:
        raise nothing_left(ds.name, dropped)
    options = {"dedup_exact": dedup_exact, "dedup_near": dedup_near, "pii": pii_action,
               "drop_empty": drop_empty, "model_id": model_id, "max_tokens": max_tokens,
               "threshold": threshold}
    return datasets.register_rows(wb, name or free_name(wb, ds.name), ds.kind, kept, fmt=ds.format,
                                  source="cleaned", meta=clean_meta(ds, dropped, options))
