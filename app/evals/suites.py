"""Eval suites: named, versioned prompt sets with checks and sampling settings.

Saving under a name that exists makes the next version; earlier versions stay, so old runs
keep the exact prompts and checks they ran.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import func
from sqlmodel import select

from app.arena.judge import dataset_prompts
from app.core.errors import InvalidInput
from app.core.tables import EvalSuite
from app.evals import checks as checks_mod

if TYPE_CHECKING:
    from app.core.workbench import Workbench

MAX_PROMPTS = 2000
MAX_SAMPLES = 20


@dataclass(frozen=True)
class Sampling:
    """Greedy, one answer per prompt, unless asked: n samples at a temperature give a pass
    rate over n × prompts answers."""

    samples: int = 1
    temperature: float = 0.0
    max_new_tokens: int = 256
    # Sample k of prompt i is drawn with seed + i·samples + k (the baseline with the same
    # one), so a run can be repeated answer for answer. None: fresh randomness.
    seed: int | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.samples <= MAX_SAMPLES:
            raise InvalidInput(f"samples must be between 1 and {MAX_SAMPLES}")
        if self.samples > 1 and self.temperature == 0:
            raise InvalidInput("several samples per prompt need a temperature above 0 "
                               "(greedy repeats itself)")
        if not 0 <= self.temperature <= 2:
            raise InvalidInput("temperature must be between 0 and 2")
        if not 1 <= self.max_new_tokens <= 8192:
            raise InvalidInput("max new tokens must be between 1 and 8192")
        if self.seed is not None and not 0 <= self.seed < 2**31:
            raise InvalidInput("seed must be between 0 and 2147483647")

    def as_dict(self) -> dict[str, Any]:
        return {"samples": self.samples, "temperature": self.temperature,
                "max_new_tokens": self.max_new_tokens, "seed": self.seed}


@dataclass
class SuiteRequest:
    name: str
    prompts: list[str | dict[str, Any]] = field(default_factory=list)  # text, or {"prompt", "checks"}
    checks: list[dict[str, Any]] = field(default_factory=list)  # suite-wide
    sampling: Sampling = field(default_factory=Sampling)
    dataset_id: int | None = None  # its prompts, after the given ones
    source: str | None = None  # where the prompts came from, when not pasted or a dataset's


def parse_prompts(text: str) -> list[str]:
    """Pasted prompts: one per line, or blocks separated by a line holding only ``---`` when
    prompts span lines."""
    if "\n---\n" in f"\n{text.strip()}\n":
        parts = [p.strip() for p in ("\n" + text + "\n").split("\n---\n")]
    else:
        parts = [line.strip() for line in text.splitlines()]
    return [p for p in parts if p]


def _clean_prompts(wb: Workbench, req: SuiteRequest) -> tuple[list[dict[str, Any]], str]:
    items: list[dict[str, Any]] = []
    for p in req.prompts:
        item = p if isinstance(p, dict) else {"prompt": p}
        text = str(item.get("prompt") or "").strip()
        if text:
            own = [checks_mod.validate(c) for c in item.get("checks") or []]
            items.append({"prompt": text, "checks": own})
    source = "pasted"
    if req.dataset_id is not None:
        found = [p.strip() for p in dataset_prompts(wb, req.dataset_id)]
        items += [{"prompt": p, "checks": []} for p in found if p]
        source = f"dataset:{req.dataset_id}"
    if not items:
        raise InvalidInput("give at least one prompt")
    if len(items) > MAX_PROMPTS:
        raise InvalidInput(f"at most {MAX_PROMPTS} prompts per suite, got {len(items)}")
    return items, source


def save_suite(wb: Workbench, req: SuiteRequest) -> EvalSuite:
    """Store ``req`` as a new suite, or as the next version of the suite of that name."""
    name = req.name.strip()
    if not name:
        raise InvalidInput("give the suite a name")
    prompts, source = _clean_prompts(wb, req)
    suite_checks = [checks_mod.validate(c) for c in req.checks]
    with wb.write_lock, wb.session() as s:
        last = s.exec(select(func.max(EvalSuite.version)).where(EvalSuite.name == name)).one()
        suite = EvalSuite(name=name, version=(last or 0) + 1, prompts=prompts, checks=suite_checks,
                          sampling=req.sampling.as_dict(), source=req.source or source)
        s.add(suite)
        s.commit()
        s.refresh(suite)
        return suite


def edit_suite(wb: Workbench, suite_id: int, req: SuiteRequest) -> EvalSuite:
    """A new version of suite ``suite_id``'s name (the name in ``req`` is ignored)."""
    old = get_suite(wb, suite_id)
    req.name = old.name
    return save_suite(wb, req)


def get_suite(wb: Workbench, suite_id: int) -> EvalSuite:
    return wb.row(EvalSuite, suite_id, "eval suite")


def list_suites(wb: Workbench, latest_only: bool = True) -> list[EvalSuite]:
    """Suites, newest first; only each name's latest version unless asked."""
    with wb.session() as s:
        rows = list(s.exec(select(EvalSuite).order_by(EvalSuite.id.desc())))
    if not latest_only:
        return rows
    seen: set[str] = set()
    return [r for r in rows if not (r.name in seen or seen.add(r.name))]


def suite_json(suite: EvalSuite) -> dict[str, Any]:
    return {"id": suite.id, "name": suite.name, "version": suite.version, "prompts": suite.prompts,
            "checks": suite.checks, "sampling": suite.sampling, "source": suite.source,
            "created_at": suite.created_at.isoformat() if suite.created_at else None}
