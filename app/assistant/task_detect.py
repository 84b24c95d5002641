"""What an uploaded dataset is for, from its columns and a sample of rows: chat,
instruction, preference (DPO), KTO, pre-training text or classification-like, with a
confidence and the map from its columns onto the names Forgeloop reads."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

# Column names people use for each field, most usual first.
NAMES: dict[str, tuple[str, ...]] = {
    "messages": ("messages", "conversations", "conversation", "chat", "dialog", "turns"),
    "instruction": ("instruction", "prompt", "question", "query", "input_text", "problem", "user"),
    "input": ("input", "context"),
    "output": ("output", "response", "answer", "completion", "target", "solution", "assistant"),
    "chosen": ("chosen", "preferred", "accepted", "winner", "good"),
    "rejected": ("rejected", "dispreferred", "loser", "bad"),
    "label": ("label", "kto_tag", "thumbs_up", "is_good", "desirable", "feedback"),
    "text": ("text", "content", "document", "body", "passage", "raw"),
}
# What each task stores, in the names validate_rows reads (app/data/datasets.py).
KIND_OF_TASK = {"chat": "sft", "instruction": "sft", "preference": "dpo", "kto": "kto", "pretraining": "cpt",
                "classification": "sft"}
TRUTHY = {True, False, "true", "false", "yes", "no", "1", "0", "good", "bad", "up", "down"}


@dataclass
class Detection:
    task: str  # chat | instruction | preference | kto | pretraining | classification | unknown
    kind: str | None  # the dataset kind to import it as
    confidence: float
    column_map: dict[str, str] = field(default_factory=dict)  # our name -> the file's column
    reasons: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _find(columns: list[str], want: str, taken: set[str]) -> str | None:
    lowered = {c.lower(): c for c in columns if c not in taken}
    for name in NAMES[want]:
        if name in lowered:
            return lowered[name]
    return None


def _share(rows: list[dict], test) -> float:
    return sum(1 for r in rows if test(r)) / len(rows) if rows else 0.0


def _is_turns(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(
        isinstance(m, dict) and ({"role", "content"} <= set(m) or {"from", "value"} <= set(m)) for m in value)


def _text(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def detect_task(rows: list[Any], sample: int = 200) -> Detection:
    rows = [r for r in rows[:sample] if isinstance(r, dict)]
    if not rows:
        return Detection("unknown", None, 0.0, reasons=["no rows with columns to look at"])
    columns = sorted({c for r in rows for c in r})
    taken: set[str] = set()

    def pick(want: str) -> str | None:
        found = _find(columns, want, taken)
        if found:
            taken.add(found)
        return found

    messages = pick("messages")
    chosen, rejected = pick("chosen"), pick("rejected")
    if chosen and rejected:
        prompt = messages or pick("instruction")
        mapping = {"chosen": chosen, "rejected": rejected, **({"prompt": prompt} if prompt else {})}
        differ = _share(rows, lambda r: r.get(chosen) != r.get(rejected))
        ok = _share(rows, lambda r: r.get(chosen) and r.get(rejected))
        reasons = [f"columns {chosen!r} and {rejected!r} hold two answers per prompt"]
        if differ < 1:
            reasons.append(f"{1 - differ:.0%} of sampled pairs have the same chosen and rejected answer")
        return Detection("preference", "dpo", round(ok * differ, 3), mapping, reasons)
    label = pick("label")
    if messages and _share(rows, lambda r: _is_turns(r.get(messages))) > 0.5:
        share = _share(rows, lambda r: _is_turns(r.get(messages)))
        if label and _share(rows, lambda r: r.get(label) in TRUTHY) > 0.9:
            return Detection("kto", "kto", round(share, 3), {"messages": messages, "label": label},
                             [f"conversations in {messages!r} with a yes/no verdict in {label!r}"])
        return Detection("chat", "sft", round(share, 3), {"messages": messages},
                         [f"column {messages!r} holds role/content turns"])
    instruction, output = pick("instruction"), pick("output")
    if instruction and output:
        if label and _share(rows, lambda r: r.get(label) in TRUTHY) > 0.9:
            return Detection("kto", "kto", 0.9, {"prompt": instruction, "completion": output, "label": label},
                             [f"prompt {instruction!r}, answer {output!r} and a yes/no verdict in {label!r}"])
        share = _share(rows, lambda r: _text(r.get(instruction)) and _text(r.get(output)))
        outputs = [str(r.get(output, "")) for r in rows]
        distinct = set(outputs)
        if len(rows) >= 20 and len(distinct) <= max(2, len(rows) // 10) and all(
                len(o.split()) <= 3 for o in distinct):
            return Detection("classification", "sft", round(share, 3),
                             {"instruction": instruction, "output": output},
                             [f"{output!r} takes only {len(distinct)} short values "
                              f"({', '.join(sorted(distinct)[:5])}): a classification set, trainable as SFT"])
        mapping = {"instruction": instruction, "output": output}
        extra = pick("input")
        if extra:
            mapping["input"] = extra
        return Detection("instruction", "sft", round(share, 3), mapping,
                         [f"a prompt in {instruction!r} and its answer in {output!r}"])
    text = pick("text") or (columns[0] if len(columns) == 1 else None)
    if text:
        share = _share(rows, lambda r: _text(r.get(text)))
        mean_words = sum(len(str(r.get(text, "")).split()) for r in rows) / len(rows)
        reasons = [f"one text column {text!r}, about {mean_words:.0f} words a row"]
        confidence = share * (1.0 if mean_words >= 20 else 0.6)
        return Detection("pretraining", "cpt", round(confidence, 3), {"text": text}, reasons)
    return Detection("unknown", None, 0.0,
                     reasons=[f"no known layout in the columns {columns}: map them onto instruction/output, "
                              "messages, prompt/chosen/rejected, prompt/completion/label or text"])

