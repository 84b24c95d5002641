"""The checks an eval suite applies to an answer: contains / not_contains / regex / equals /
valid_json / max_length, and ``rubric``, graded by a judge model that gives its rationale.

A check is a plain dict ``{"type": ..., "value": ...}`` so a suite stores it as JSON; it is
validated once when the suite is saved (``validate``) and trusted afterwards.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from app.core.errors import InvalidInput

TYPES = ("contains", "not_contains", "regex", "equals", "valid_json", "max_length", "rubric")
NEEDS_VALUE = {"contains", "not_contains", "regex", "equals", "max_length", "rubric"}

RUBRIC_TEMPLATE = """You are grading one answer against a rubric.

[Question]
{question}

[Answer]
{answer}

[Rubric]
{rubric}

Give a short rationale (one or two sentences), then a last line that is exactly \
"Verdict: PASS" or "Verdict: FAIL"."""

_RUBRIC_VERDICT = re.compile(r"verdict\W{0,4}(pass|fail)\b", re.I)


def validate(check: Any) -> dict[str, Any]:
    """A clean check dict, or InvalidInput naming what is wrong."""
    if not isinstance(check, dict) or check.get("type") not in TYPES:
        raise InvalidInput(f"a check needs a type, one of {', '.join(TYPES)}; got {check!r}")
    kind, value = check["type"], check.get("value")
    if kind in NEEDS_VALUE and (value is None or str(value).strip() == ""):
        raise InvalidInput(f"a {kind} check needs a value")
    if kind == "max_length":
        try:
            value = int(value)
        except (TypeError, ValueError):
            raise InvalidInput(f"max_length takes a number of characters, got {value!r}") from None
        if value < 1:
            raise InvalidInput("max_length must be at least 1")
    elif kind == "regex":
        try:
            re.compile(str(value))
        except re.error as e:
            raise InvalidInput(f"bad regex {value!r}: {e}") from None
    elif value is not None:
        value = str(value)
    return {"type": kind, "value": value} if kind != "valid_json" else {"type": kind}


def rubric_prompt(question: str, answer: str, rubric: str) -> str:
    return RUBRIC_TEMPLATE.format(question=question.strip(), answer=answer.strip(), rubric=rubric.strip())


def parse_rubric(reply: str) -> bool | None:
    """PASS → True, FAIL → False, the last verdict winning; None when the judge gave none."""
    found = _RUBRIC_VERDICT.findall(reply)
    if found:
        return found[-1].lower() == "pass"
    bare = re.sub(r"[\s*_`.\"'!]+", " ", reply).strip().lower()
    return {"pass": True, "fail": False}.get(bare)


def _valid_json(answer: str) -> bool:
    text = answer.strip()
    fenced = re.fullmatch(r"```(?:json)?\s*(.*?)\s*```", text, re.S)  # models often fence it
    try:
        json.loads(fenced.group(1) if fenced else text)
        return True
    except ValueError:
        return False


def apply(check: dict[str, Any], question: str, answer: str,
          grade: Callable[[str], str] | None = None) -> dict[str, Any]:
    """One check's result: the check, passed, and (rubric) the judge's rationale.
    ``grade(prompt) -> reply`` asks the judge model; a rubric check without one fails."""
    kind, value = check["type"], check.get("value")
    out: dict[str, Any] = {**check}
    if kind == "contains":
        out["passed"] = value.lower() in answer.lower()
    elif kind == "not_contains":
        out["passed"] = value.lower() not in answer.lower()
    elif kind == "regex":
        out["passed"] = re.search(value, answer) is not None
    elif kind == "equals":
        out["passed"] = answer.strip() == value.strip()
    elif kind == "valid_json":
        out["passed"] = _valid_json(answer)
    elif kind == "max_length":
        out["passed"] = len(answer) <= int(value)
    else:  # rubric
        if grade is None:
            return {**out, "passed": False, "rationale": "no judge model was given for the rubric"}
        reply = grade(rubric_prompt(question, answer, value))
        verdict = parse_rubric(reply)
        out.update(passed=bool(verdict), rationale=reply.strip(),
                   **({"unparsed": True} if verdict is None else {}))
    return out


def apply_all(checks: list[dict[str, Any]], question: str, answer: str,
              grade: Callable[[str], str] | None = None) -> tuple[bool, list[dict[str, Any]]]:
    """Every check on one answer; it passes when all do (an answer with no checks passes)."""
    results = [apply(c, question, answer, grade) for c in checks]
    return all(r["passed"] for r in results), results


def parse_checks(text: str) -> list[dict[str, Any]]:
    """Checks written one a line as ``type: value`` (``valid_json`` alone), e.g.
    ``contains: Paris`` or ``rubric: the answer is polite``; blank lines are skipped."""
    out = []
    for line in text.splitlines():
        if not line.strip():
            continue
        kind, _, value = line.partition(":")
        out.append(validate({"type": kind.strip().lower(), "value": value.strip() or None}))
    return out
