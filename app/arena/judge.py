"""LLM-as-judge preference pairs: two answers to a prompt, judged in both orders.

A judge prefers whichever answer it reads first (or second) more often than it should; asking
it twice with the answers swapped and keeping only verdicts that survive the swap removes that
bias. An inconsistent pair becomes a tie, which DPO snapshots leave out. Each judged pair is
stored as a battle of mode ``judge`` with one turn and one vote, so the pairs feed the same
DPO/KTO snapshots as arena votes (``preference_export``) and stay off the leaderboard.

Without a judge the same job only samples the pairs: each becomes a battle of mode ``pair``
with no vote, waiting in the human annotation queue (``annotation``) for people to label it.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.arena.battles import quality_flags
from app.core import job_models
from app.core.errors import InvalidInput
from app.core.jobs import JobKind, JobSpec, Outcome, default_finish, python_command
from app.core.tables import Battle, BattleTurn, Job, ModelVersion, PairLabel, Vote
from app.inference.chat_engines import ModelEngines, model_engines
from app.inference.generation import Finish, GenSettings
from app.models.registry import get_model

if TYPE_CHECKING:
    from sqlmodel import Session

    from app.core.workbench import Workbench

# A synchronous call: keep it short enough to answer within a request.
MAX_JUDGE_PROMPTS = 50
MAX_JOB_PROMPTS = 5000
JUDGE = "judge"
PAIR_MODE = "pair"  # a sampled pair no judge saw: people label it in the annotation queue
KEYS_ENV = "FORGELOOP_JUDGE_KEYS"  # the models' API keys, JSON by role, for the job process
VERDICTS = ("1", "2", "tie")
JUDGE_GEN = GenSettings(temperature=0.0, max_new_tokens=256)

JUDGE_TEMPLATE = """You are judging two answers to the same question. Decide which answer is \
better: more helpful, more correct and clearer. Ignore the order they are shown in and their length.

[Question]
{question}

[Answer 1]
{answer_1}

[Answer 2]
{answer_2}

Give a short rationale (one or two sentences), then a last line that is exactly \
"Verdict: 1", "Verdict: 2" or "Verdict: tie"."""


def judge_prompt(question: str, answer_1: str, answer_2: str) -> str:
    return JUDGE_TEMPLATE.format(question=question.strip(), answer_1=answer_1.strip(),
                                 answer_2=answer_2.strip())


_TOKEN = r"(1|2|one|two|tie|draw)"
_WORDS = {"1": "1", "one": "1", "2": "2", "two": "2", "tie": "tie", "draw": "tie"}
# Most explicit first: "Verdict: 2", then MT-bench's "[[2]]", then "Answer 2 is better".
_PATTERNS = (
    re.compile(rf"verdict\W{{0,4}}(?:answer\s*)?{_TOKEN}\b", re.I),
    re.compile(rf"\[\[\s*{_TOKEN}\s*\]\]", re.I),
    re.compile(r"answer\s*(1|2)\s+is\s+(?:clearly\s+|slightly\s+|much\s+)?better", re.I),
)


def parse_verdict(reply: str) -> str | None:
    """"1", "2" or "tie" from a judge's reply; None when it names none. The last explicit
    verdict wins, since judges often restate the options before giving theirs."""
    for pattern in _PATTERNS:
        found = pattern.findall(reply)
        if found:
            return _WORDS[found[-1].lower()]
    bare = re.sub(r"[\s*_`.\"'!]+", " ", reply).strip().lower()
    if bare in _WORDS:  # a judge that answered with the verdict alone
        return _WORDS[bare]
    if re.search(r"\b(tie|equally good|equally bad|both (are )?equal)\b", reply, re.I):
        return "tie"
    return None


def combine(first: str | None, second: str | None) -> tuple[str, bool]:
    """Both orders' verdicts → (choice in A/B terms, consistent). ``first`` judged (A, B),
    ``second`` (B, A); a missing or contradicting verdict is an inconsistent tie."""
    if first is None or second is None:
        return "tie", False
    a_first = {"1": "a", "2": "b", "tie": "tie"}[first]
    a_second = {"1": "b", "2": "a", "tie": "tie"}[second]
    return (a_first, True) if a_first == a_second else ("tie", False)


@dataclass
class JudgeSummary:
    pairs: int = 0  # judged pairs stored
    decisive: int = 0  # consistent A or B: each one a DPO pair
    consistent_ties: int = 0
    inconsistent: int = 0  # stored as ties, so left out of DPO
    unparsed: int = 0  # judge replies without a verdict (counted among the inconsistent)
    unjudged: int = 0  # pairs sampled without a judge, left for people to label
    battle_ids: list[int] = field(default_factory=list)

    @property
    def ties_dropped(self) -> int:
        return self.consistent_ties + self.inconsistent

    @property
    def consistency_rate(self) -> float | None:
        """The share of judged pairs whose verdict survived swapping the answers."""
        judged = self.pairs - self.unjudged
        return (judged - self.inconsistent) / judged if judged else None

    def as_dict(self) -> dict[str, Any]:
        return {"pairs": self.pairs, "decisive": self.decisive, "ties_dropped": self.ties_dropped,
                "consistent_ties": self.consistent_ties, "inconsistent": self.inconsistent,
                "unparsed": self.unparsed, "unjudged": self.unjudged,
                "consistency_rate": self.consistency_rate,
                "battle_ids": self.battle_ids}


def _answer(cache: ModelEngines, mv: ModelVersion, prompt: str, gen: GenSettings) -> tuple[str, dict]:
    pieces, finish = [], "stop"
    for piece in cache.engine(mv).stream([{"role": "user", "content": prompt}], gen):
        if isinstance(piece, Finish):
            finish = piece.reason
        else:
            pieces.append(piece)
    return "".join(pieces), {"finish": finish, "tokens": len(pieces)}


def judge_pair(cache: ModelEngines, judge: ModelVersion, question: str, answer_a: str, answer_b: str,
               gen: GenSettings = JUDGE_GEN) -> dict[str, Any]:
    """Ask ``judge`` in both orders; returns choice, consistent, rationale and the record."""
    prompts = [judge_prompt(question, answer_a, answer_b), judge_prompt(question, answer_b, answer_a)]
    replies = [cache.complete(judge, [{"role": "user", "content": p}], gen) for p in prompts]
    verdicts = [parse_verdict(r) for r in replies]
    choice, consistent = combine(*verdicts)
    return {"choice": choice, "consistent": consistent, "rationale": replies[0].strip(),
            "meta": {"prompts": prompts, "replies": replies, "verdicts": verdicts,
                     "consistent": consistent}}


def judge_item(cache: ModelEngines, a: ModelVersion, b: ModelVersion, judge: ModelVersion | None,
               prompt: str, gens: tuple[GenSettings, GenSettings]) -> dict[str, Any]:
    """Sample both answers to ``prompt`` and judge them (no ``verdict`` without a judge):
    one JSON-ready item."""
    answer_a, timing_a = _answer(cache, a, prompt, gens[0])
    answer_b, timing_b = _answer(cache, b, prompt, gens[1])
    item = {"prompt": prompt, "answers": [answer_a, answer_b], "timings": {"a": timing_a, "b": timing_b}}
    if judge is not None:
        item["verdict"] = judge_pair(cache, judge, prompt, answer_a, answer_b)
    return item


def store_item(s: Session, a: ModelVersion, b: ModelVersion, judge_name: str | None,
               gens: tuple[dict, dict], item: dict[str, Any]) -> int:
    """One pair in ``s`` (the caller commits): battle + turn, and when judged (mode judge) the
    judge's vote and label; unjudged (mode pair), no vote until a person labels it."""
    verdict = item.get("verdict")
    labeler = f"judge:{judge_name}" if verdict is not None else "annotation"
    turn = BattleTurn(battle_id=0, turn=0, messages=[{"role": "user", "content": item["prompt"]}],
                      answer_a=item["answers"][0], answer_b=item["answers"][1], timings=item["timings"],
                      gen_settings={"a": gens[0], "b": gens[1]})
    flags = quality_flags(turn, {"a": a.name, "b": b.name})
    battle = Battle(model_a_id=a.id, model_b_id=b.id, mode=JUDGE if verdict is not None else PAIR_MODE,
                    voter=labeler, gen_settings=gens[0])
    s.add(battle)
    s.flush()
    turn.battle_id = battle.id
    if verdict is None:
        s.add(turn)
        return battle.id
    vote = Vote(battle_id=battle.id, turn=0, choice=verdict["choice"], voter=labeler, flags=flags)
    s.add_all([turn, vote])
    s.flush()
    s.add(PairLabel(battle_id=battle.id, source="judge", labeler=judge_name, choice=verdict["choice"],
                    vote_id=vote.id, rationale=verdict["rationale"], meta=verdict["meta"]))
    return battle.id


def tally(items: list[dict[str, Any]], battle_ids: list[int]) -> JudgeSummary:
    summary = JudgeSummary(pairs=len(items), battle_ids=battle_ids)
    for item in items:
        verdict = item.get("verdict")
        if verdict is None:
            summary.unjudged += 1
        elif not verdict["consistent"]:
            summary.inconsistent += 1
            if None in verdict["meta"]["verdicts"]:
                summary.unparsed += 1
        elif verdict["choice"] == "tie":
            summary.consistent_ties += 1
        else:
            summary.decisive += 1
    return summary


def check_request(wb: Workbench, prompts: list[str], model_a_id: int, model_b_id: int,
                  judge_model_id: int | None, gen_a: GenSettings, gen_b: GenSettings,
                  limit: int) -> tuple[list[str], list[ModelVersion]]:
    """The cleaned prompts and the models (the judge None without one), or the reason they
    cannot be paired."""
    models = [get_model(wb, i) for i in (model_a_id, model_b_id)]  # 404s first
    models.append(None if judge_model_id is None else get_model(wb, judge_model_id))
    prompts = [p.strip() for p in prompts if p and p.strip()]
    if not prompts:
        raise InvalidInput("give at least one prompt")
    if len(prompts) > limit:
        raise InvalidInput(f"at most {limit} prompts per call, got {len(prompts)}")
    if model_a_id == model_b_id and gen_a == gen_b:
        raise InvalidInput("one model against itself needs two different temperatures")
    return prompts, models


def judge_prompts(
    wb: Workbench,
    prompts: list[str],
    model_a_id: int,
    model_b_id: int,
    judge_model_id: int | None,
    gen_a: GenSettings | None = None,
    gen_b: GenSettings | None = None,
) -> JudgeSummary:
    """Answer each prompt with A and B (two models, or one model at two temperatures), judge
    both orders (unless ``judge_model_id`` is None: then people label them), store every pair;
    in-process, so at most MAX_JUDGE_PROMPTS (more: the job)."""
    gen_a, gen_b = gen_a or GenSettings(), gen_b or GenSettings()
    prompts, (a, b, judge) = check_request(wb, prompts, model_a_id, model_b_id, judge_model_id,
                                           gen_a, gen_b, MAX_JUDGE_PROMPTS)
    items, ids = [], []
    for prompt in prompts:
        item = judge_item(model_engines(wb), a, b, judge, prompt, (gen_a, gen_b))
        with wb.write_lock, wb.session() as s:
            ids.append(store_item(s, a, b, judge and judge.name, (gen_a.as_dict(), gen_b.as_dict()), item))
            s.commit()
        items.append(item)
    return tally(items, ids)


def dataset_prompts(wb: Workbench, dataset_id: int) -> list[str]:
    """The user prompts of an SFT/DPO/KTO dataset: alpaca instruction (+ input), else the
    first user message."""
    from app.data.datasets import get_dataset, read_rows

    ds = get_dataset(wb, dataset_id)
    if ds.format == "text":
        raise InvalidInput(f"dataset {ds.name!r} holds plain text, not prompts")
    prompts = []
    for row in read_rows(Path(ds.path)):
        if "instruction" in row:
            prompts.append("\n\n".join(p for p in (row["instruction"], row.get("input") or "") if p))
        else:
            users = [m["content"] for m in row.get("messages", []) if m.get("role") == "user"]
            prompts.append(users[0] if users else "")
    return prompts


def start_judge_job(
    wb: Workbench,
    prompts: list[str],
    model_a_id: int,
    model_b_id: int,
    judge_model_id: int | None,
    gen_a: GenSettings | None = None,
    gen_b: GenSettings | None = None,
) -> Job:
    """Queue a job that answers and judges up to MAX_JOB_PROMPTS prompts (without a judge, only
    answers them, for the annotation queue); its finish step stores the pairs and puts the
    summary in the job's result."""
    gen_a, gen_b = gen_a or GenSettings(), gen_b or GenSettings()
    prompts, models = check_request(wb, prompts, model_a_id, model_b_id, judge_model_id, gen_a, gen_b,
                                    MAX_JOB_PROMPTS)
    plan_models, keys = job_models.plan_models(dict(zip(("a", "b", "judge"), models, strict=True)))
    folder = wb.settings.jobs_dir / f"judge-{secrets.token_hex(4)}"
    folder.mkdir(parents=True)
    plan = {"prompts": prompts, "models": plan_models, "gens": [gen_a.as_dict(), gen_b.as_dict()]}
    (folder / "plan.json").write_text(json.dumps(plan, indent=1))
    a, b, judge = models
    spec = JobSpec(command=python_command("app.arena.judge_job", str(folder / "plan.json")),
                   cwd=folder, log_path=folder / "job.log", progress_path=folder / "progress.jsonl",
                   result_path=folder / "result.json",
                   title=(f"judge {len(prompts)} prompts: {a.name} vs {b.name} by {judge.name}" if judge
                          else f"pair {len(prompts)} prompts: {a.name} vs {b.name} for people to label"),
                   params={"model_a_id": a.id, "model_b_id": b.id, "judge": judge and judge.name,
                           "gens": plan["gens"], "prompts": len(prompts)},
                   secret_env={KEYS_ENV: json.dumps(keys)} if keys else {})
    return wb.jobs.submit(JUDGE, spec)


def finish_judge(wb: Workbench, s: Session, job: Job, outcome: Outcome) -> None:
    """Store the pairs the process finished, also when it stopped early (cancelled, or an
    engine failed part-way): each is complete on its own."""
    default_finish(wb, s, job, outcome)
    items = (job.result or {}).get("items") or []
    if not items:
        return
    p = job.params
    a, b = s.get(ModelVersion, p["model_a_id"]), s.get(ModelVersion, p["model_b_id"])
    if a is None or b is None:
        job.status, job.error = "failed", "a judged model was deleted meanwhile"
        return
    ids = [store_item(s, a, b, p["judge"], tuple(p["gens"]), item) for item in items]
    job.result = {"summary": tally(items, ids).as_dict()}  # the items live on as battles


JUDGE_KIND = JobKind(JUDGE, finish=finish_judge)
