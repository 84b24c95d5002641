"""Self-Instruct, the pure part: prompts for the teacher, parsing its answers, and
the filters that decide which generated tasks and instances are kept.

Nothing here calls a model; the generation job feeds teacher text in and takes
kept tasks out, so every step can be tested on recorded answers.
"""

from __future__ import annotations

import json
import random
import re
import string
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from app.core.errors import InvalidInput
from app.data.rouge_novelty import NoveltyIndex

SEED_PATH = Path(__file__).resolve().parents[2] / "data" / "seed_tasks.jsonl"
MIN_SEEDS, MAX_SEEDS = 8, 10_000
MAX_SEED_CHARS, MAX_SEED_TEXT = 2_000, 5_000_000
N_SEEDS_IN_PROMPT = 6
N_GENERATED_IN_PROMPT = 2
MIN_WORDS, MAX_WORDS = 4, 150  # at most 3 words or more than 150: rejected
# Tasks a text-only model cannot do or check.
BLACKLIST = (
    "image", "images", "graph", "graphs", "picture", "pictures", "file", "files", "map", "maps",
    "draw", "plot", "go to", "video", "audio", "music", "flowchart", "diagram",
)
_BLACKLIST_RE = re.compile(r"\b(" + "|".join(re.escape(w) for w in BLACKLIST) + r")\b", re.I)
_PROGRAM_RE = re.compile(
    r"^\s*(write|create|implement|develop|generate|code)\b.{0,40}?\b"
    r"(program|function|script|code|algorithm|snippet)\b",
    re.I,
)
_NUMBERED_RE = re.compile(r"^\s*(\d+)\s*[.)]\s*", re.M)
REASONS = (
    "too_short", "too_long", "blacklist", "program", "punctuation_start", "non_ascii_start",
    "similar", "empty_output", "input_equals_output", "conflicting_outputs", "duplicate_instance",
)


@dataclass(frozen=True)
class Task:
    instruction: str
    input: str = ""
    output: str = ""
    is_classification: bool = False


def load_seeds(path: Path = SEED_PATH) -> list[Task]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [Task(r["instruction"], r.get("input", ""), r.get("output", ""),
                 bool(r.get("is_classification", False))) for r in rows]


def parse_seed_text(text: str) -> list[Task]:
    """A user's own seed tasks: one per line, either a JSON object like the shipped seeds
    (``instruction`` required; ``input``, ``output``, ``is_classification`` optional) or a
    plain instruction. Any unreadable line is an error that names it; nothing is guessed."""
    if len(text) > MAX_SEED_TEXT:
        raise InvalidInput(f"seed tasks are limited to {MAX_SEED_TEXT // 1_000_000} MB of text")
    tasks = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        if line.startswith(("{", "[")):  # JSON, not a task that starts with a bracket
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise InvalidInput(f"seed line {number} is not valid JSON: {e.msg}") from e
            if not isinstance(row, dict) or not str(row.get("instruction") or "").strip():
                raise InvalidInput(f"seed line {number} has no instruction")
            task = Task(" ".join(str(row["instruction"]).split()), str(row.get("input") or ""),
                        str(row.get("output") or ""), bool(row.get("is_classification", False)))
        else:
            task = Task(" ".join(line.split()))
        if len(task.instruction) > MAX_SEED_CHARS:
            raise InvalidInput(f"seed line {number} is longer than {MAX_SEED_CHARS} characters")
        tasks.append(task)
    if len(tasks) > MAX_SEEDS:
        raise InvalidInput(f"at most {MAX_SEEDS} seed tasks, got {len(tasks)}")
    return tasks


def choose_seeds(user_text: str = "", use_shipped: bool = True) -> list[Task]:
    """The seed pool of a run: the shipped tasks, the user's, or both (duplicates once)."""
    pool = (load_seeds() if use_shipped else []) + parse_seed_text(user_text or "")
    unique = list({t.instruction.lower(): t for t in reversed(pool)}.values())[::-1]
    if len(unique) < MIN_SEEDS:
        raise InvalidInput(f"Self-Instruct needs at least {MIN_SEEDS} different seed tasks "
                           f"(a prompt shows 8 examples), got {len(unique)}")
    return unique


# --- generating instructions -------------------------------------------------

def instruction_prompt(seeds: list[Task], generated: list[str], rng: random.Random) -> str:
    """Eight numbered tasks (6 seeds + 2 generated once there are any) for the teacher
    to continue at number 9."""
    n_gen = min(N_GENERATED_IN_PROMPT, len(generated))
    picked = [t.instruction for t in rng.sample(seeds, N_SEEDS_IN_PROMPT + N_GENERATED_IN_PROMPT - n_gen)]
    picked += rng.sample(generated, n_gen)
    rng.shuffle(picked)
    lines = [f"{i}. {' '.join(text.split())}" for i, text in enumerate(picked, 1)]
    return "Come up with a series of tasks:\n\n" + "\n".join(lines) + f"\n{len(lines) + 1}."


def parse_instructions(text: str, first_number: int = 9, truncated: bool = False) -> list[str]:
    """Tasks from a numbered list that continues the prompt at ``first_number``.

    The teacher may or may not repeat the first number; a last item cut off by the
    token limit (``truncated``) is dropped because it is probably incomplete."""
    body = text.strip()
    if not _NUMBERED_RE.match(body):
        body = f"{first_number}. {body}"
    parts = _NUMBERED_RE.split(body)  # ['', '9', 'task', '10', 'task', ...]
    items = [" ".join(p.split()) for p in parts[2::2]]
    if truncated and items:
        items = items[:-1]
    return [i for i in items if i]


def rejection_reason(instruction: str) -> str | None:
    """Why a generated instruction is unusable, or None when it passes."""
    words = instruction.split()
    if len(words) < MIN_WORDS:
        return "too_short"
    if len(words) > MAX_WORDS:
        return "too_long"
    if _BLACKLIST_RE.search(instruction):
        return "blacklist"
    if _PROGRAM_RE.search(instruction):
        return "program"
    if instruction[0] in string.punctuation:
        return "punctuation_start"
    if not instruction[0].isascii():
        return "non_ascii_start"
    return None


@dataclass
class InstructionFilter:
    """Keeps instructions that pass the rules and are novel by ROUGE-L; counts rejections."""

    index: NoveltyIndex = field(default_factory=NoveltyIndex)
    rejected: Counter = field(default_factory=Counter)
    kept: list[str] = field(default_factory=list)

    @classmethod
    def with_seeds(cls, seeds: list[Task]) -> InstructionFilter:
        f = cls()
        for s in seeds:
            f.index.add(s.instruction)
        return f

    def offer(self, instruction: str) -> bool:
        reason = rejection_reason(instruction)
        if reason is None and not self.index.add_if_novel(instruction)[0]:
            reason = "similar"
        if reason:
            self.rejected[reason] += 1
            return False
        self.kept.append(instruction)
        return True


# --- classification -------------------------------------------------------------

def classification_prompt(instruction: str, seeds: list[Task], rng: random.Random, k: int = 8) -> str:
    """Few-shot yes/no question: can the task be treated as classification?"""
    cls = [s for s in seeds if s.is_classification]
    other = [s for s in seeds if not s.is_classification]
    shots = rng.sample(cls, min(k // 2, len(cls))) + rng.sample(other, min(k - k // 2, len(other)))
    rng.shuffle(shots)
    lines = ["Can the following task be regarded as a classification task with finite output labels?", ""]
    for s in shots:
        answer = "Yes" if s.is_classification else "No"
        lines += [f"Task: {s.instruction}", f"Is it classification? {answer}", ""]
    lines += [f"Task: {instruction}", "Is it classification?"]
    return "\n".join(lines)


def parse_yes_no(text: str) -> bool:
    return text.strip().lower().lstrip(" :*").startswith("yes")


# --- generating instances ----------------------------------------------------------

def instance_prompt(task: str, is_classification: bool, seeds: list[Task], rng: random.Random,
                    k: int = 4) -> str:
    """Output-first for classification (labels, then an input per label, so labels are
    balanced); input-first otherwise."""
    # Examples need an output to show; a user's plain-line seeds have none.
    shown = [s for s in seeds if s.output] or seeds
    pool = [s for s in shown if s.is_classification == is_classification] or shown
    shots = rng.sample(pool, min(k, len(pool)))
    if is_classification:
        head = ("Given the classification task definition and the class labels, generate an input "
                "that corresponds to each of the class labels. If the task doesn't require input, "
                "just generate the correct class label.")
        blocks = [f"Task: {s.instruction}\nClass label: {s.output}\nInput: {s.input}".rstrip() for s in shots]
    else:
        head = ("Come up with examples for the following tasks. Try to generate multiple examples "
                "when possible. If the task doesn't require additional input, you can generate the "
                "output directly.")
        blocks = [f"Task: {s.instruction}\nExample 1\nInput: {s.input}\nOutput: {s.output}"
                  if s.input else f"Task: {s.instruction}\nOutput: {s.output}" for s in shots]
    return head + "\n\n" + "\n\n".join(blocks) + f"\n\nTask: {task}\n"


_FIELD_RE = re.compile(r"^\s*(Input|Output|Class label)\s*:\s*", re.I | re.M)


def _fields(block: str) -> dict[str, str]:
    parts = _FIELD_RE.split(block)
    out: dict[str, str] = {}
    for name, value in zip(parts[1::2], parts[2::2], strict=True):
        out.setdefault(name.lower(), value.strip())
    return out


def parse_instances(text: str, is_classification: bool) -> list[tuple[str, str]]:
    """(input, output) pairs from the teacher's answer; stops at a next 'Task:'."""
    text = re.split(r"^\s*Task\s*:", text, maxsplit=1, flags=re.M | re.I)[0]
    if is_classification:
        blocks = re.split(r"(?=^\s*Class label\s*:)", text, flags=re.M | re.I)
        pairs = [(f.get("input", ""), f.get("class label", "")) for f in map(_fields, blocks)
                 if "class label" in f]
    else:
        blocks = re.split(r"^\s*Example\s*\d+\s*[.:]?\s*$", text, flags=re.M | re.I)
        pairs = [(f.get("input", ""), f.get("output", "")) for f in map(_fields, blocks) if "output" in f]
    return pairs


def clean_instances(pairs: list[tuple[str, str]], rejected: Counter) -> list[tuple[str, str]]:
    """Drop empty outputs, inputs that equal their outputs, repeats, and inputs given
    conflicting outputs (the teacher contradicts itself: keep neither)."""
    kept: list[tuple[str, str]] = []
    outputs: dict[str, set[str]] = {}
    for inp, out in pairs:
        inp, out = inp.strip(), out.strip()
        if inp.lower() in ("", "none", "null", "n/a", "<noinput>"):
            inp = ""
        if not out:
            rejected["empty_output"] += 1
        elif inp and inp == out:
            rejected["input_equals_output"] += 1
        elif (inp, out) in kept:
            rejected["duplicate_instance"] += 1
        else:
            kept.append((inp, out))
            outputs.setdefault(inp, set()).add(out)
    conflicting = {inp for inp, outs in outputs.items() if len(outs) > 1}
    for inp, _ in kept:
        if inp in conflicting:
            rejected["conflicting_outputs"] += 1
    return [p for p in kept if p[0] not in conflicting]
