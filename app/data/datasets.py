"""Register datasets: validate rows, store a normalised copy, and name it in the
storage-side ``dataset_info.json`` that LLaMA-Factory reads."""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlmodel import func, select

from app.core.errors import Conflict, InvalidInput, NotFound
from app.core.tables import Dataset

if TYPE_CHECKING:
    from app.core.workbench import Workbench

# Which formats each training kind accepts.
KIND_FORMATS = {
    "sft": ("alpaca", "messages"),
    "dpo": ("preference",),
    "kto": ("kto",),
    "cpt": ("text",),
}
MESSAGE_TAGS = {
    "role_tag": "role",
    "content_tag": "content",
    "user_tag": "user",
    "assistant_tag": "assistant",
    "system_tag": "system",
}
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# Device names Windows reserves, with or without an extension ("con", "CON.jsonl").
WINDOWS_DEVICES = frozenset(
    ["con", "prn", "aux", "nul"] + [f"{dev}{i}" for dev in ("com", "lpt") for i in range(10)]
)


def dataset_info_entry(fmt: str, file_name: str) -> dict[str, Any]:
    """The LLaMA-Factory ``dataset_info.json`` entry for a stored file of ``fmt``."""
    if fmt == "alpaca":
        cols = {"prompt": "instruction", "query": "input", "response": "output"}
        return {"file_name": file_name, "columns": cols}
    if fmt == "text":
        return {"file_name": file_name, "columns": {"prompt": "text"}}
    entry: dict[str, Any] = {
        "file_name": file_name,
        "formatting": "sharegpt",
        "columns": {"messages": "messages"},
        "tags": dict(MESSAGE_TAGS),
    }
    if fmt == "preference":
        entry["ranking"] = True
        entry["columns"].update(chosen="chosen", rejected="rejected")
    if fmt == "kto":
        entry["columns"]["kto_tag"] = "label"
    return entry


def detect_format(row: dict[str, Any]) -> str:
    if "chosen" in row and "rejected" in row:
        return "preference"
    if "label" in row and ("messages" in row or "completion" in row):
        return "kto"
    if "messages" in row:
        return "messages"
    if "instruction" in row:
        return "alpaca"
    if "text" in row:
        return "text"
    raise InvalidInput(
        f"cannot tell the dataset format from the columns {sorted(row)}; expected "
        "instruction/output, messages, prompt+chosen/rejected, prompt+completion+label or text "
        "(map your columns onto these names)"
    )


def _nonempty_str(value: Any) -> bool:
    return isinstance(value, str) and value.strip() != ""


def _check_message(msg: Any, where: str) -> dict[str, str]:
    if not isinstance(msg, dict) or not _nonempty_str(msg.get("content")):
        raise InvalidInput(f"{where}: each message needs a non-empty 'content'")
    if msg.get("role") not in ("system", "user", "assistant"):
        raise InvalidInput(f"{where}: role must be system, user or assistant, got {msg.get('role')!r}")
    return {"role": msg["role"], "content": msg["content"]}


def _check_turns(messages: Any, where: str, end_with: str) -> list[dict[str, str]]:
    """Check LLaMA-Factory's sharegpt rules, which otherwise skip a row with only a warning."""
    if not isinstance(messages, list) or not messages:
        raise InvalidInput(f"{where}: 'messages' must be a non-empty list")
    msgs = [_check_message(m, where) for m in messages]
    body = msgs[1:] if msgs[0]["role"] == "system" else msgs
    for i, m in enumerate(body):
        want = "user" if i % 2 == 0 else "assistant"
        if m["role"] != want:
            raise InvalidInput(f"{where}: message {i + 1} should be from {want}, not {m['role']}")
    if not body or body[-1]["role"] != end_with:
        raise InvalidInput(f"{where}: the conversation must end with a {end_with} message")
    return msgs


def _as_bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.strip().lower() in ("true", "1", "yes")
    return None


def normalise_row(row: Any, fmt: str, where: str) -> dict[str, Any]:
    """Validate one row of ``fmt`` and return it in the stored shape."""
    if not isinstance(row, dict):
        raise InvalidInput(f"{where}: expected a JSON object, got {type(row).__name__}")
    if fmt == "alpaca":
        if not _nonempty_str(row.get("instruction")) or not _nonempty_str(row.get("output")):
            raise InvalidInput(f"{where}: 'instruction' and 'output' must be non-empty strings")
        inp = row.get("input") or ""
        if not isinstance(inp, str):
            raise InvalidInput(f"{where}: 'input' must be a string")
        return {"instruction": row["instruction"], "input": inp, "output": row["output"]}
    if fmt == "text":
        if not _nonempty_str(row.get("text")):
            raise InvalidInput(f"{where}: 'text' must be a non-empty string")
        return {"text": row["text"]}
    if fmt == "messages":
        return {"messages": _check_turns(row.get("messages"), where, end_with="assistant")}
    if fmt in ("preference", "kto") and "messages" not in row and _nonempty_str(row.get("prompt")):
        # Flat rows (a prompt column) become a one-turn conversation.
        row = dict(row, messages=[{"role": "user", "content": row["prompt"]}])
        if fmt == "kto" and _nonempty_str(row.get("completion")):
            row["messages"].append({"role": "assistant", "content": row["completion"]})
    if fmt == "preference":
        out = {"messages": _check_turns(row.get("messages"), where, end_with="user")}
        for side in ("chosen", "rejected"):
            msg = row.get(side)
            if isinstance(msg, str):  # plain answers are accepted and wrapped
                msg = {"role": "assistant", "content": msg}
            msg = _check_message(msg, f"{where} ({side})")
            if msg["role"] != "assistant":
                raise InvalidInput(f"{where}: '{side}' must be an assistant message")
            out[side] = msg
        if out["chosen"]["content"] == out["rejected"]["content"]:
            raise InvalidInput(f"{where}: 'chosen' and 'rejected' are identical")
        return out
    if fmt == "kto":
        label = _as_bool(row.get("label"))
        if label is None:
            raise InvalidInput(f"{where}: 'label' must be true or false")
        msgs = _check_turns(row.get("messages"), where, end_with="assistant")
        return {"messages": msgs, "label": label}
    raise InvalidInput(f"unknown dataset format {fmt!r}")


SUPPORTED_SUFFIXES = (".jsonl", ".ndjson", ".json", ".csv", ".parquet")


def _decode_json_cells(row: dict[str, Any]) -> dict[str, Any]:
    """CSV cells holding JSON lists/objects (e.g. a messages column) become Python values."""
    out = {}
    for k, v in row.items():
        if isinstance(v, str) and v[:1] in "[{":
            try:
                v = json.loads(v)
            except json.JSONDecodeError:
                pass
        out[k] = v
    return out


def read_rows(path: Path) -> list[Any]:
    """Read JSONL, JSON, CSV or Parquet; any problem becomes an InvalidInput naming it."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInput(f"dataset file {path} does not exist or is not a file")
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise InvalidInput(f"{path.name}: supported files are {', '.join(SUPPORTED_SUFFIXES)}")
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            return pq.read_table(path).to_pylist()
        except Exception as e:  # pyarrow raises several types for a bad file
            raise InvalidInput(f"cannot read {path.name} as Parquet: {e}") from e
    if suffix == ".csv":
        import pandas as pd

        try:
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
        except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
            raise InvalidInput(f"cannot read {path.name} as CSV: {e}") from e
        return [_decode_json_cells(r) for r in frame.to_dict("records")]
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InvalidInput(f"cannot read {path.name}: {e}") from e
    if suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise InvalidInput(f"{path.name} is not valid JSON: {e}") from e
        if not isinstance(data, list):
            raise InvalidInput(f"{path.name}: expected a JSON list of rows")
        return data
    rows = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise InvalidInput(f"{path.name} line {n} is not valid JSON: {e.msg}") from e
    return rows


def apply_column_map(rows: list[Any], column_map: dict[str, str] | None) -> list[Any]:
    """Rename source columns to the names Forgeloop expects ({target: source})."""
    if not column_map:
        return rows
    column_map = {t: src for t, src in column_map.items() if src}
    present = set().union(*(r.keys() for r in rows if isinstance(r, dict))) if rows else set()
    missing = sorted(src for src in column_map.values() if src not in present)
    if missing:
        raise InvalidInput(f"columns not in the file: {', '.join(missing)} (it has {sorted(present)})")
    sources = set(column_map.values())
    out = []
    for r in rows:
        if not isinstance(r, dict):
            out.append(r)
            continue
        new = {k: v for k, v in r.items() if k not in sources}
        new.update({t: r.get(src) for t, src in column_map.items()})
        out.append(new)
    return out


def inspect_file(
    path: Path | str, kind: str, column_map: dict[str, str] | None = None, limit: int = 5
) -> dict[str, Any]:
    """What registering would store: columns, format, row count, a preview, or the error."""
    rows = read_rows(Path(path))
    columns = sorted(set().union(*(r.keys() for r in rows if isinstance(r, dict)))) if rows else []
    info: dict[str, Any] = {"columns": columns, "total": len(rows)}
    try:
        fmt, clean = validate_rows(apply_column_map(rows, column_map), kind)
        info.update(format=fmt, preview=clean[:limit], error=None)
    except InvalidInput as e:
        info.update(format=None, preview=rows[:limit], error=str(e))
    return info


def validate_rows(rows: list[Any], kind: str, fmt: str | None = None) -> tuple[str, list[dict]]:
    """Return (format, normalised rows) or raise InvalidInput on the first bad row."""
    if kind not in KIND_FORMATS:
        raise InvalidInput(f"dataset kind must be one of {sorted(KIND_FORMATS)}, got {kind!r}")
    if not rows:
        raise InvalidInput("the dataset has no rows")
    first = rows[0] if isinstance(rows[0], dict) else {}
    fmt = fmt or detect_format(first)
    if fmt not in KIND_FORMATS[kind]:
        raise InvalidInput(
            f"a {kind} dataset must be {' or '.join(KIND_FORMATS[kind])}, but the rows are {fmt}"
        )
    return fmt, [normalise_row(r, fmt, f"row {i + 1}") for i, r in enumerate(rows)]


def _atomic_write(path: Path, data: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def info_path(wb: Workbench) -> Path:
    return wb.settings.datasets_dir / "dataset_info.json"


def _update_info(wb: Workbench, name: str, entry: dict[str, Any] | None) -> None:
    path = info_path(wb)
    info = json.loads(path.read_text()) if path.exists() else {}
    if entry is None:
        info.pop(name, None)
    else:
        info[name] = entry
    _atomic_write(path, json.dumps(info, indent=2, sort_keys=True))


@dataclass(frozen=True)
class PreparedRows:
    """Validated rows serialised exactly as they will be stored, with their hash."""

    kind: str
    format: str
    body: str
    num_rows: int
    sha256: str


def prepare_rows(kind: str, rows: list[Any], fmt: str | None = None) -> PreparedRows:
    fmt, clean = validate_rows(rows, kind, fmt)
    body = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in clean)
    return PreparedRows(kind, fmt, body, len(clean), hashlib.sha256(body.encode()).hexdigest())


def check_name(name: str) -> None:
    """Refuse a dataset name that is not a safe, portable file name."""
    if name and set(name) == {"."}:
        raise InvalidInput(f"dataset name {name!r} is only dots; use letters or digits")
    if not NAME_RE.match(name or ""):
        raise InvalidInput(
            f"dataset name {name!r} must be 1-64 letters, digits, '_', '-' or '.', "
            "starting with a letter or digit"
        )
    stem = name.split(".")[0].lower()
    if stem in WINDOWS_DEVICES:
        raise InvalidInput(
            f"dataset name {name!r} is a device name Windows reserves "
            "(CON, PRN, AUX, NUL, COM0-9, LPT0-9); pick another name"
        )
    if stem == "dataset_info":
        raise InvalidInput(
            f"dataset name {name!r} is reserved: dataset_info.json lists the datasets; pick another name"
        )


def register_rows(
    wb: Workbench,
    name: str,
    kind: str,
    rows: list[Any] | PreparedRows,
    fmt: str | None = None,
    source: str = "upload",
    meta: dict[str, Any] | None = None,
) -> Dataset:
    """Validate ``rows``, store them under ``name`` and return the new Dataset row.

    Nothing is left behind on failure: the file and the dataset_info entry are
    written only after every row passed, and rolled back if the DB insert fails.
    """
    check_name(name)
    prepared = rows if isinstance(rows, PreparedRows) else prepare_rows(kind, rows, fmt)
    file_name = f"{name}.jsonl"
    target = wb.settings.datasets_dir / file_name
    with wb.files_lock:
        with wb.session() as s:
            q = select(Dataset).where(func.lower(Dataset.name) == name.lower())
            taken = s.exec(q).first()
        if taken is not None and taken.name == name:
            raise Conflict(f"a dataset named {name!r} already exists")
        if taken is not None:
            raise Conflict(
                f"a dataset named {taken.name!r} already exists; names that differ only in case "
                "clash on Windows and macOS, pick another name"
            )
        clash = [p.name for p in target.parent.iterdir() if p.name.lower() == file_name.lower()]
        if clash:
            raise Conflict(f"a file named {clash[0]} is already in the datasets folder; "
                           "pick another dataset name")
        _atomic_write(target, prepared.body)
        try:
            _update_info(wb, name, dataset_info_entry(prepared.format, file_name))
            ds = Dataset(
                name=name,
                kind=prepared.kind,
                format=prepared.format,
                path=str(target),
                num_rows=prepared.num_rows,
                sha256=prepared.sha256,
                source=source,
                meta=meta or {},
            )
            with wb.session() as s:
                s.add(ds)
                s.commit()
                s.refresh(ds)
        except BaseException:
            target.unlink(missing_ok=True)
            _update_info(wb, name, None)
            raise
    return ds


def register_file(
    wb: Workbench,
    path: Path | str,
    name: str,
    kind: str,
    fmt: str | None = None,
    column_map: dict[str, str] | None = None,
) -> Dataset:
    """Register a JSONL/JSON/CSV/Parquet file as a dataset of ``kind`` (sft, dpo, kto, cpt),
    renaming columns with ``column_map`` ({expected name: column in the file})."""
    check_name(name)
    rows = apply_column_map(read_rows(Path(path)), column_map)
    meta = {"origin": Path(path).name, "column_map": column_map or {}}
    return register_rows(wb, name, kind, rows, fmt=fmt, meta=meta)


def list_datasets(wb: Workbench, kind: str | None = None) -> list[Dataset]:
    with wb.session() as s:
        q = select(Dataset).order_by(Dataset.id)
        if kind:
            q = q.where(Dataset.kind == kind)
        return list(s.exec(q))


def get_dataset(wb: Workbench, dataset_id: int) -> Dataset:
    with wb.session() as s:
        ds = s.get(Dataset, dataset_id)
    if ds is None:
        raise NotFound(f"no dataset with id {dataset_id}")
    return ds


def preview(wb: Workbench, dataset_id: int, limit: int = 5) -> list[dict]:
    ds = get_dataset(wb, dataset_id)
    out = []
    with open(ds.path, encoding="utf-8") as f:
        for line in f:
            out.append(json.loads(line))
            if len(out) >= limit:
                break
    return out
