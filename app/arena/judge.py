"""LLM-as-judge preference pairs: two answers to a prompt, judged in both orders.

A judge prefers whichever answer it reads first (or second) more often than it should; asking
it twice with the answers swapped and keeping only verdicts that survive the swap removes that
bias. An inconsistent pair becomes a tie, which DPO snapshots leave out. Each judged pair is
stored as a battle of mode ``judge`` with one turn and one vote, so the pairs feed the same
DPO/KTO snapshots as arena votes (``preference_export``) and stay off the leaderboard.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from app.arena.battles import quality_flags
from app.core.errors import InvalidInput
from app.core.tables import Battle, BattleTurn, ModelVersion, PairLabel, Vote
from app.inference.chat_engines import chat_cache
from app.inference.generation import Finish, GenSettings
from app.models.registry import get_model

if TYPE_CHECKING:
    from app.core.workbench import Workbench

# A synchronous call: keep it short enough to answer within a request.
MAX_JUDGE_PROMPTS = 50
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
    battle_ids: list[int] = field(default_factory=list)

    @property
    def ties_dropped(self) -> int:
        return self.consistent_ties + self.inconsistent

    @property
    def consistency_rate(self) -> float | None:
        """The share of pairs whose verdict survived swapping the answers."""
        return (self.pairs - self.inconsistent) / self.pairs if self.pairs else None

    def as_dict(self) -> dict[str, Any]:
        return {"pairs": self.pairs, "decisive": self.decisive, "ties_dropped": self.ties_dropped,
                "consistent_ties": self.consistent_ties, "inconsistent": self.inconsistent,
                "unparsed": self.unparsed, "consistency_rate": self.consistency_rate,
                "battle_ids": self.battle_ids}


def _answer(wb: Workbench, mv: ModelVersion, prompt: str, gen: GenSettings) -> tuple[str, dict]:
    pieces, finish = [], "stop"
    for piece in chat_cache(wb).engine(mv).stream([{"role": "user", "content": prompt}], gen):
        if isinstance(piece, Finish):
            finish = piece.reason
        else:
            pieces.append(piece)
    return "".join(pieces), {"finish": finish, "tokens": len(pieces)}


def judge_pair(wb: Workbench, judge: ModelVersion, question: str, answer_a: str, answer_b: str,
               gen: GenSettings = JUDGE_GEN) -> dict[str, Any]:
    """Ask ``judge`` in both orders; returns choice, consistent, rationale and the record."""
    prompts = [judge_prompt(question, answer_a, answer_b), judge_prompt(question, answer_b, answer_a)]
    replies = [chat_cache(wb).complete(judge, [{"role": "user", "content": p}], gen) for p in prompts]
    verdicts = [parse_verdict(r) for r in replies]
    choice, consistent = combine(*verdicts)
    return {"choice": choice, "consistent": consistent, "rationale": replies[0].strip(),
            "meta": {"prompts": prompts, "replies": replies, "verdicts": verdicts,
                     "consistent": consistent}}


def _store(wb: Workbench, a: ModelVersion, b: ModelVersion, judge: ModelVersion, prompt: str,
           answers: tuple[str, str], timings: dict, gens: tuple[GenSettings, GenSettings],
           verdict: dict[str, Any]) -> int:
    """One judged pair: battle (mode judge) + turn + vote + the judge's label, together."""
    labeler = f"judge:{judge.name}"
    turn = BattleTurn(battle_id=0, turn=0, messages=[{"role": "user", "content": prompt}],
                      answer_a=answers[0], answer_b=answers[1], timings=timings,
                      gen_settings={"a": gens[0].as_dict(), "b": gens[1].as_dict()})
    flags = quality_flags(turn, {"a": a.name, "b": b.name})
    with wb.write_lock, wb.session() as s:
        battle = Battle(model_a_id=a.id, model_b_id=b.id, mode="judge", voter=labeler,
                        gen_settings=gens[0].as_dict())
        s.add(battle)
        s.flush()
        turn.battle_id = battle.id
        vote = Vote(battle_id=battle.id, turn=0, choice=verdict["choice"], voter=labeler, flags=flags)
        s.add_all([turn, vote])
        s.flush()
        s.add(PairLabel(battle_id=battle.id, source="judge", labeler=judge.name,
                        choice=verdict["choice"], vote_id=vote.id, rationale=verdict["rationale"],
                        meta=verdict["meta"]))
        s.commit()
        return battle.id


def judge_prompts(
    wb: Workbench,
    prompts: list[str],
    model_a_id: int,
    model_b_id: int,
    judge_model_id: int,
    gen_a: GenSettings | None = None,
    gen_b: GenSettings | None = None,
) -> JudgeSummary:
    """Answer each prompt with A and B (two models, or one model at two temperatures), judge
    both orders, store every pair. One model needs two different settings to differ."""
    prompts = [p.strip() for p in prompts if p and p.strip()]
    if not prompts:
        raise InvalidInput("give at least one prompt")
    if len(prompts) > MAX_JUDGE_PROMPTS:
        raise InvalidInput(f"at most {MAX_JUDGE_PROMPTS} prompts per call, got {len(prompts)}")
    gen_a, gen_b = gen_a or GenSettings(), gen_b or GenSettings()
    if model_a_id == model_b_id and gen_a == gen_b:
        raise InvalidInput("one model against itself needs two different temperatures")
    a, b, judge = (get_model(wb, i) for i in (model_a_id, model_b_id, judge_model_id))
    summary = JudgeSummary()
    for prompt in prompts:
        answer_a, timing_a = _answer(wb, a, prompt, gen_a)
        answer_b, timing_b = _answer(wb, b, prompt, gen_b)
        verdict = judge_pair(wb, judge, prompt, answer_a, answer_b)
        summary.battle_ids.append(_store(wb, a, b, judge, prompt, (answer_a, answer_b),
                                         {"a": timing_a, "b": timing_b}, (gen_a, gen_b), verdict))
        summary.pairs += 1
        if not verdict["consistent"]:
            summary.inconsistent += 1
            if None in verdict["meta"]["verdicts"]:
                summary.unparsed += 1
        elif verdict["choice"] == "tie":
            summary.consistent_ties += 1
        else:
            summary.decisive += 1
    return summary
