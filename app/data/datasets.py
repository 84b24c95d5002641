"""Register datasets: validate rows, store a normalised copy, and name it in the
storage-side ``dataset_info.json`` that LLaMA-Factory reads."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlmodel import func, select

from app.core.errors import Conflict, InvalidInput
from app.core.tables import Dataset
from app.data.spreadsheet import looks_like_formula

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
# Columns each format reads; any other column of a file is dropped when it is stored.
USED_COLUMNS = {
    "alpaca": ("instruction", "input", "output"),
    "text": ("text",),
    "messages": ("messages",),
    "preference": ("messages", "prompt", "chosen", "rejected"),
    "kto": ("messages", "prompt", "completion", "label"),
}
MAX_DEPTH = 100  # levels of JSON arrays/objects in one row
MAX_CELL_CHARS = 1_000_000  # characters in one cell (all its strings together)


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


def _a(word: str) -> str:
    """``word`` with its indefinite article: "a user", "an assistant" (no "u": "a user")."""
    return f"{'an' if word[:1].lower() in 'aeio' else 'a'} {word}"


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def _describe(value: Any) -> str:
    """What a JSON value is, in words: "a number", "an array", "null"."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return _a(type(value).__name__)


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
        raise InvalidInput(f"{where}: the conversation must end with {_a(end_with)} message")
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
        raise InvalidInput(f"{where} is {_describe(row)}, not an object with columns")
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
            raise InvalidInput(f"{where}: chosen and rejected are the same answer")
        return out
    if fmt == "kto":
        label = _as_bool(row.get("label"))
        if label is None:
            raise InvalidInput(f"{where}: 'label' must be true or false")
        msgs = _check_turns(row.get("messages"), where, end_with="assistant")
        return {"messages": msgs, "label": label}
    raise InvalidInput(f"unknown dataset format {fmt!r}")


SUPPORTED_SUFFIXES = (".jsonl", ".ndjson", ".json", ".csv", ".parquet")
# Files that are not text, by their first bytes, and what to do about them.
_MAGIC = (
    (b"PAR1", "it looks like a Parquet file; give it the .parquet suffix"),
    (b"PK\x03\x04", "it looks like a zip archive or an Excel workbook; export the sheet as CSV"),
    (b"\x1f\x8b", "it is gzip-compressed; decompress it first"),
    (b"\xff\xfe", "it is UTF-16 text (it starts with a UTF-16 byte order mark); save it as UTF-8"),
    (b"\xfe\xff", "it is UTF-16 text (it starts with a UTF-16 byte order mark); save it as UTF-8"),
)
_JSON_SPACE = re.compile(r"[ \t\n\r]*")
_ABS_PATH = re.compile(r"(?<![\w.:/])(?:[A-Za-z]:)?[/\\](?:[^\s'\"/\\]+[/\\])+")


class _RowProblem(Exception):
    """Raised inside the JSON parser's hooks; the caller adds where it happened."""


class _NotJson(_RowProblem):
    """NaN or Infinity: Python's json accepts them, JSON does not."""


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _RowProblem(f"the key {key!r} appears twice in one object")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise _NotJson(f"{name} is not a JSON value")


def _decoder() -> json.JSONDecoder:
    """A strict decoder: duplicate keys and NaN/Infinity are errors (one per read: the
    C scanner keeps state, so threads do not share it)."""
    return json.JSONDecoder(object_pairs_hook=_unique_keys, parse_constant=_no_constant)


def _too_deep(place: str) -> InvalidInput:
    return InvalidInput(f"{place} is nested too deeply: more than {MAX_DEPTH} levels of arrays and objects")


def _measure(value: Any, limit_depth: int) -> tuple[int, int]:
    """(nesting depth, characters in all strings and keys) of a value, without recursion;
    stops early once the depth passes ``limit_depth`` or the size passes MAX_CELL_CHARS."""
    depth = chars = 0
    stack = [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, str):
            chars += len(v)
        elif isinstance(v, dict):
            depth = max(depth, d)
            chars += sum(len(k) for k in v if isinstance(k, str))
            stack.extend((x, d + 1) for x in v.values())
        elif isinstance(v, (list, tuple)):
            depth = max(depth, d)
            stack.extend((x, d + 1) for x in v)
        if depth > limit_depth or chars > MAX_CELL_CHARS:
            break
    return depth, chars


def _check_row(row: Any, place: str) -> Any:
    """Refuse a parsed row nested deeper than MAX_DEPTH or with a cell over MAX_CELL_CHARS."""
    if not isinstance(row, dict):
        if _measure(row, MAX_DEPTH)[0] > MAX_DEPTH:
            raise _too_deep(place)
        return row
    for column, value in row.items():
        depth, chars = _measure(value, MAX_DEPTH - 1)
        if depth > MAX_DEPTH - 1:
            raise _too_deep(f"{place}, column {column!r}")
        if chars > MAX_CELL_CHARS:
            raise InvalidInput(
                f"{place}, column {column!r}: the cell has more than {MAX_CELL_CHARS:,} characters, "
                "the limit for one cell"
            )
    return row


def _scrub(message: str, path: Path) -> str:
    """A parser's message on one line, with the file's directory (a server path) removed."""
    for full in {str(path), str(path.resolve()), str(path.absolute())}:
        message = message.replace(full, path.name)
    message = _ABS_PATH.sub("", message)
    return " ".join(message.split())


def _read_text(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise InvalidInput(f"cannot read {path.name}: {e.strerror or 'read error'}") from e
    for magic, why in _MAGIC:
        if data.startswith(magic):
            raise InvalidInput(f"cannot read {path.name}: {why}")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise InvalidInput(
            f"cannot read {path.name}: line {line} is not UTF-8 text (byte 0x{data[e.start]:02x}); "
            "save the file as UTF-8"
        ) from e


def _decode_at(
    dec: json.JSONDecoder, text: str, idx: int, place: str, line_place: str | None = None
) -> tuple[Any, int]:
    """One JSON value at ``idx``; row problems name ``place``, NaN/Infinity ``line_place``."""
    try:
        return dec.raw_decode(text, idx)
    except RecursionError as e:
        raise _too_deep(place) from e
    except _NotJson as e:
        raise InvalidInput(f"{line_place or place} is not valid JSON: {e}") from e
    except _RowProblem as e:
        raise InvalidInput(f"{place}: {e}") from e


def _jsonl_rows(text: str, name: str) -> list[Any]:
    dec, rows = _decoder(), []
    for n, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        place, line_place = f"{name} row {len(rows) + 1} (line {n})", f"{name} line {n}"
        try:
            value, end = _decode_at(dec, line, _JSON_SPACE.match(line).end(), place, line_place)
            if line[end:].strip():
                raise json.JSONDecodeError("Extra data", line, _JSON_SPACE.match(line, end).end())
        except json.JSONDecodeError as e:
            hint = ""
            if n == 1 and line.strip() in ("[", "{"):
                hint = " (it looks like one JSON document over several lines; give it the .json suffix)"
            raise InvalidInput(f"{line_place} is not valid JSON: {e.msg} at column {e.colno}{hint}") from e
        rows.append(_check_row(value, place))
    return rows


def _json_rows(text: str, name: str) -> list[Any]:
    """A JSON array of rows, read one row at a time so that problems name the row and line."""
    dec = _decoder()
    i = _JSON_SPACE.match(text).end()
    if i == len(text):
        return []
    try:
        if text[i:i + 1] != "[":
            value, end = _decode_at(dec, text, i, name)
            if text[_JSON_SPACE.match(text, end).end():]:
                raise json.JSONDecodeError("Extra data", text, _JSON_SPACE.match(text, end).end())
            what = _describe(value)
            if isinstance(value, dict):
                what = f"a single object with the keys {sorted(value)[:10]}"
            raise InvalidInput(f"{name}: expected a JSON array of rows, got {what}")
        rows: list[Any] = []
        i = _JSON_SPACE.match(text, i + 1).end()
        if text[i:i + 1] == "]":
            i += 1
        else:
            line, counted = 1, 0
            while True:
                line += text.count("\n", counted, i)
                counted = i
                place = f"{name} row {len(rows) + 1} (from line {line})"
                value, i = _decode_at(dec, text, i, place)
                rows.append(_check_row(value, place))
                i = _JSON_SPACE.match(text, i).end()
                if text[i:i + 1] == "]":
                    i += 1
                    break
                if text[i:i + 1] != ",":
                    raise json.JSONDecodeError("Expecting ',' delimiter", text, i)
                comma, i = i, _JSON_SPACE.match(text, i + 1).end()
                if text[i:i + 1] == "]":
                    raise json.JSONDecodeError("Illegal trailing comma before end of array", text, comma)
        end = _JSON_SPACE.match(text, i).end()
        if end < len(text):
            raise json.JSONDecodeError("Extra data", text, end)
        return rows
    except json.JSONDecodeError as e:
        hint = ""
        if e.msg == "Extra data" and text[e.pos - 1:e.pos] == "\n" and text.lstrip()[:1] == "{":
            hint = " (it looks like JSON Lines, one row per line; give it the .jsonl suffix)"
        raise InvalidInput(
            f"{name} is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}{hint}"
        ) from e


def _csv_cell(dec: json.JSONDecoder, value: str, place: str) -> Any:
    """A CSV cell holding a JSON list/object (e.g. a messages column) becomes a Python value;
    a cell that is not valid JSON stays text."""
    if value[:1] not in ("[", "{"):
        return value
    try:
        parsed, end = dec.raw_decode(value)
    except (json.JSONDecodeError, _NotJson):
        return value
    except RecursionError as e:
        raise _too_deep(place) from e
    except _RowProblem as e:
        raise InvalidInput(f"{place}: {e}") from e
    return parsed if not value[end:].strip() else value


def _csv_rows(text: str, name: str) -> list[dict[str, Any]]:
    if not text.strip():
        raise InvalidInput(f"cannot read {name} as CSV: the file is empty")
    # The csv module refuses cells over 128 KiB by default; the cell limit is checked below.
    csv.field_size_limit(max(csv.field_size_limit(), 2**31 - 1))
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    dec, header, rows, line = _decoder(), None, [], 1
    try:
        for fields in reader:  # ``line``: where the row starts (a quoted cell may span lines)
            start, line = line, reader.line_num + 1
            if not fields:
                continue
            if header is None:
                header = [f or f"Unnamed: {i}" for i, f in enumerate(fields)]
                twice = sorted({c for c in header if header.count(c) > 1})
                if twice:
                    raise InvalidInput(f"{name}: the header names the column {twice[0]!r} twice")
                continue
            if len(fields) != len(header):
                raise InvalidInput(
                    f"{name} line {start} has {_count(len(fields), 'cell')}, "
                    f"but the header has {_count(len(header), 'column')}"
                )
            place = f"{name} row {len(rows) + 1} (line {start})"
            cells = zip(header, fields, strict=True)
            row = {c: _csv_cell(dec, v, f"{place}, column {c!r}") for c, v in cells}
            rows.append(_check_row(row, place))
    except csv.Error as e:
        why = str(e)
        if why == "unexpected end of data":
            why = "a quoted cell is not closed before the end of the file"
        raise InvalidInput(f"cannot read {name} as CSV: line {line}: {why}") from e
    return rows


def _parquet_rows(path: Path) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    try:
        with pq.ParquetFile(path) as f:
            table = f.read()
        twice = sorted({c for c in table.column_names if table.column_names.count(c) > 1})
        if twice:
            raise InvalidInput(f"{path.name}: the column {twice[0]!r} appears twice")
        rows = table.to_pylist()
    except InvalidInput:
        raise
    except Exception as e:  # pyarrow raises several types (ArrowInvalid, OSError, ...) for a bad file
        raise InvalidInput(f"cannot read {path.name} as Parquet: {_scrub(str(e), path)}") from e
    return [_check_row(r, f"{path.name} row {n}") for n, r in enumerate(rows, start=1)]


def read_rows(path: Path) -> list[Any]:
    """Read JSONL, JSON, CSV or Parquet; any problem becomes an InvalidInput that names the
    file by its base name (never its server path) and the line or row where known."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInput(f"dataset file {path.name} does not exist or is not a file")
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise InvalidInput(f"{path.name}: supported files are {', '.join(SUPPORTED_SUFFIXES)}")
    if suffix == ".parquet":
        return _parquet_rows(path)
    text = _read_text(path)
    try:
        if suffix == ".csv":
            return _csv_rows(text, path.name)
        if suffix == ".json":
            return _json_rows(text, path.name)
        return _jsonl_rows(text, path.name)
    except RecursionError as e:  # a parser that recursed somewhere not caught above
        raise _too_deep(path.name) from e


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


def _mapped(rows: list[Any], path: Path, column_map: dict[str, str] | None) -> list[Any]:
    if not rows:
        raise InvalidInput(f"{path.name} has no rows")
    return apply_column_map(rows, column_map)


def _source_names(columns: tuple[str, ...], column_map: dict[str, str] | None) -> tuple[str, ...]:
    """Columns after mapping, named as in the file ({target: source})."""
    mapping = {t: src for t, src in (column_map or {}).items() if src}
    return tuple(sorted(mapping.get(c, c) for c in columns))


def inspect_file(
    path: Path | str,
    kind: str,
    column_map: dict[str, str] | None = None,
    limit: int = 5,
    dedup: bool = False,
) -> dict[str, Any]:
    """What registering would store: columns, format, row count, a preview, the notes
    (duplicate rows, dropped columns, formula-like cells), or the error."""
    path = Path(path)
    rows = read_rows(path)
    columns = sorted(set().union(*(r.keys() for r in rows if isinstance(r, dict)))) if rows else []
    info: dict[str, Any] = {"columns": columns, "total": len(rows)}
    try:
        prepared = prepare_rows(kind, _mapped(rows, path, column_map), dedup=dedup)
    except InvalidInput as e:
        info.update(format=None, preview=rows[:limit], error=str(e), duplicates=None,
                    duplicates_dropped=None, dropped_columns=[], formula_cells=None)
        return info
    preview = [json.loads(line) for line in prepared.body.split("\n", limit)[:limit] if line]
    notes = prepared.notes()
    notes["dropped_columns"] = list(_source_names(prepared.dropped_columns, column_map))
    info.update(format=prepared.format, preview=preview, error=None, **notes)
    return info


def validate_rows(rows: list[Any], kind: str, fmt: str | None = None) -> tuple[str, list[dict]]:
    """Return (format, normalised rows) or raise InvalidInput on the first bad row."""
    if kind not in KIND_FORMATS:
        raise InvalidInput(f"dataset kind must be one of {sorted(KIND_FORMATS)}, got {kind!r}")
    if not rows:
        raise InvalidInput("the dataset has no rows")
    if not isinstance(rows[0], dict):
        hint = ""
        if isinstance(rows[0], list) and rows[0] and all(isinstance(r, dict) for r in rows[0]):
            hint = " (it holds objects: a JSON array of rows belongs in a .json file)"
        raise InvalidInput(f"row 1 is {_describe(rows[0])}, not an object with columns{hint}")
    fmt = fmt or detect_format(rows[0])
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


def update_info(wb: Workbench, name: str, entry: dict[str, Any] | None) -> None:
    path = info_path(wb)
    info = json.loads(path.read_text()) if path.exists() else {}
    if entry is None:
        info.pop(name, None)
    else:
        info[name] = entry
    _atomic_write(path, json.dumps(info, indent=2, sort_keys=True))


@dataclass(frozen=True)
class PreparedRows:
    """Validated rows serialised exactly as they will be stored, with their hash, and what
    a user should know about them (recorded in the Dataset's ``meta`` on registration)."""

    kind: str
    format: str
    body: str
    num_rows: int
    sha256: str
    duplicates: int = 0  # rows stored the same as an earlier row
    duplicates_dropped: int = 0  # of those, how many were left out (dedup)
    dropped_columns: tuple[str, ...] = ()  # columns of the input the format does not use
    formula_cells: int = 0  # stored strings a spreadsheet would read as formulas

    def notes(self) -> dict[str, Any]:
        return {
            "duplicates": self.duplicates,
            "duplicates_dropped": self.duplicates_dropped,
            "dropped_columns": list(self.dropped_columns),
            "formula_cells": self.formula_cells,
        }


def _count_formulas(value: Any) -> int:
    if isinstance(value, dict):
        return sum(_count_formulas(v) for v in value.values())
    if isinstance(value, list):
        return sum(_count_formulas(v) for v in value)
    return int(looks_like_formula(value))


def prepare_rows(kind: str, rows: list[Any], fmt: str | None = None, dedup: bool = False) -> PreparedRows:
    """Validate and serialise ``rows``. Rows stored the same as an earlier row are counted,
    and left out with ``dedup``; a file that is one row repeated is refused without it."""
    fmt, clean = validate_rows(rows, kind, fmt)
    lines, seen, duplicates, formulas = [], set(), 0, 0
    for row in clean:
        line = json.dumps(row, ensure_ascii=False)
        if line in seen:
            duplicates += 1
            if dedup:
                continue
        seen.add(line)
        lines.append(line)
        formulas += _count_formulas(row)
    if duplicates and duplicates == len(clean) - 1 and not dedup:
        raise InvalidInput(
            f"all {len(clean):,} rows are the same row: {_count(duplicates, 'duplicate')} of row 1; "
            "drop duplicates to keep one row"
        )
    used = set(USED_COLUMNS.get(fmt, ()))
    present = set().union(*(r.keys() for r in rows if isinstance(r, dict)))
    body = "".join(line + "\n" for line in lines)
    return PreparedRows(
        kind, fmt, body, len(lines), hashlib.sha256(body.encode()).hexdigest(),
        duplicates=duplicates,
        duplicates_dropped=duplicates if dedup else 0,
        dropped_columns=tuple(sorted(str(c) for c in present - used)),
        formula_cells=formulas,
    )


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
    dedup: bool = False,
) -> Dataset:
    """Validate ``rows``, store them under ``name`` and return the new Dataset row.

    ``dedup`` leaves out rows stored the same as an earlier one (for PreparedRows,
    prepare_rows decided that). The Dataset's meta records the duplicates found and
    dropped, the input columns not stored and the formula-like cells (PreparedRows.notes).

    Nothing is left behind on failure: the file and the dataset_info entry are
    written only after every row passed, and rolled back if the DB insert fails.
    """
    check_name(name)
    prepared = rows if isinstance(rows, PreparedRows) else prepare_rows(kind, rows, fmt, dedup=dedup)
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
            update_info(wb, name, dataset_info_entry(prepared.format, file_name))
            ds = Dataset(
                name=name,
                kind=prepared.kind,
                format=prepared.format,
                path=str(target),
                num_rows=prepared.num_rows,
                sha256=prepared.sha256,
                source=source,
                meta={**(meta or {}), **prepared.notes()},
            )
            with wb.session() as s:
                s.add(ds)
                s.commit()
                s.refresh(ds)
        except BaseException:
            target.unlink(missing_ok=True)
            update_info(wb, name, None)
            raise
    return ds


def register_file(
    wb: Workbench,
    path: Path | str,
    name: str,
    kind: str,
    fmt: str | None = None,
    column_map: dict[str, str] | None = None,
    dedup: bool = False,
) -> Dataset:
    """Register a JSONL/JSON/CSV/Parquet file as a dataset of ``kind`` (sft, dpo, kto, cpt),
    renaming columns with ``column_map`` ({expected name: column in the file}); ``dedup``
    leaves out rows that repeat an earlier row. The file's columns that the format does not
    use are listed in meta["dropped_columns"], named as in the file."""
    path = Path(path)
    check_name(name)
    prepared = prepare_rows(kind, _mapped(read_rows(path), path, column_map), fmt, dedup=dedup)
    prepared = dataclasses.replace(
        prepared, dropped_columns=_source_names(prepared.dropped_columns, column_map)
    )
    meta = {"origin": path.name, "column_map": column_map or {}}
    return register_rows(wb, name, kind, prepared, meta=meta)


def default_name(path: Path | str) -> str:
    """A dataset name from a file's name ("My data (2).csv" -> "My-data-2")."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(str(path)).stem)
    name = re.sub(r"-*([_.])-*", r"\1", name)[:64].strip("-_.")
    return name or "dataset"


def list_datasets(wb: Workbench, kind: str | None = None) -> list[Dataset]:
    with wb.session() as s:
        q = select(Dataset).order_by(Dataset.id)
        if kind:
            q = q.where(Dataset.kind == kind)
        return list(s.exec(q))


def get_dataset(wb: Workbench, dataset_id: int) -> Dataset:
    return wb.row(Dataset, dataset_id, "dataset")


def preview(wb: Workbench, dataset_id: int, limit: int = 5) -> list[dict]:
    ds = get_dataset(wb, dataset_id)
    out = []
    with open(ds.path, encoding="utf-8") as f:
        for line in f:
            out.append(json.loads(line))
            if len(out) >= limit:
                break
    return out
