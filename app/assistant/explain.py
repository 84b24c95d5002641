"""What a run's curves say, in a few sentences with the numbers: converged, still
improving, diverging, over-fitting, signs of a learning rate too high or too low, and
for DPO what the reward accuracy and margins mean; then what to try next."""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, field
from typing import Any

LN2 = math.log(2)


@dataclass
class Explanation:
    verdict: str  # converged | improving | diverging | overfitting | not_learning | too_short | no_data
    sentences: list[str] = field(default_factory=list)
    next_steps: list[str] = field(default_factory=list)
    figures: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def text(self) -> str:
        lines = [" ".join(self.sentences)]
        if self.next_steps:
            lines.append("Next: " + " ".join(self.next_steps))
        return "\n\n".join(lines)


def _finite(values: list[Any]) -> list[float]:
    return [float(v) for v in values if isinstance(v, int | float) and math.isfinite(v)]


def _mean(values: list[float]) -> float:
    return statistics.fmean(values) if values else float("nan")


def explain_curves(records: list[dict[str, Any]], config: dict[str, Any]) -> Explanation:
    """Read ``trainer_log.jsonl`` records (LLaMA-Factory's) with the run's config."""
    stage = str(config.get("stage", "sft"))
    lr = config.get("learning_rate")
    train = [r for r in records if "loss" in r]
    losses = [r.get("loss") for r in train]
    evals = _finite([r.get("eval_loss") for r in records if "eval_loss" in r])
    bad = [v for v in losses if isinstance(v, int | float) and not math.isfinite(v)]
    finite = _finite(losses)
    if bad:
        step = next(r.get("current_steps") for r in train if not math.isfinite(float(r["loss"])))
        return Explanation("diverging", [f"The loss became {bad[0]} at step {step}: training diverged."],
                           [f"Lower the learning rate (now {lr}) to a third, keep max_grad_norm at 1.0, "
                            "and prefer bf16 to fp16."])
    if len(finite) < 3:
        return Explanation("too_short" if finite else "no_data",
                           [f"Only {len(finite)} loss values were logged: too few to read a trend."],
                           ["Log more often (logging_steps) or train for more steps."])
    k = max(1, len(finite) // 4)
    first, last = _mean(finite[:k]), _mean(finite[-k:])
    lowest = min(finite)
    change = (last - first) / first if first else 0.0
    tail = finite[-k:]
    spread = (max(tail) - min(tail)) / abs(last) if last else 0.0
    figures = {"first_loss": round(first, 4), "last_loss": round(last, 4), "lowest_loss": round(lowest, 4),
               "relative_change": round(change, 4)}
    ex = Explanation("improving", figures=figures)
    ex.sentences.append(f"The training loss went from {first:.3f} to {last:.3f} ({change:+.0%}) over "
                        f"{train[-1].get('current_steps', len(train))} steps.")
    if evals:
        figures["lowest_eval_loss"] = round(min(evals), 4)
        figures["last_eval_loss"] = round(evals[-1], 4)
    if stage == "dpo":
        return _explain_dpo(ex, records, first, last)
    if last > first * 1.05:
        ex.verdict = "diverging"
        ex.sentences.append("It ends higher than it started: the updates overshoot.")
        ex.next_steps.append(f"Lower the learning rate (now {lr}) to a third.")
    elif len(evals) >= 3 and evals[-1] > min(evals) * 1.03 and last < first:
        ex.verdict = "overfitting"
        best = min(evals)
        ex.sentences.append(f"The eval loss reached {best:.3f} and rose again to {evals[-1]:.3f} while the "
                            "training loss kept falling: the model is memorising the training rows.")
        ex.next_steps.append("Train fewer epochs (or keep the checkpoint at the lowest eval loss), add "
                             "data, or lower the LoRA rank.")
    elif abs(change) < 0.02:
        ex.verdict = "not_learning"
        ex.sentences.append("The loss barely moved: the model is not learning from these rows.")
        ex.next_steps.append(f"Raise the learning rate (now {lr}) threefold, or check that the dataset's "
                             "answers are not empty and fit cutoff_len.")
    elif _still_falling(finite):
        ex.verdict = "improving"
        ex.sentences.append("It was still falling at the end: more steps would likely help.")
        ex.next_steps.append("Train another epoch, or resume from the last checkpoint.")
    else:
        ex.verdict = "converged"
        ex.sentences.append("It flattened out by the end: the run converged.")
        ex.next_steps.append("Evaluate it against its parent; more epochs are unlikely to help.")
    if spread > 0.5 and ex.verdict in ("improving", "converged"):
        ex.sentences.append(f"The last values jump by {spread:.0%} of the loss: a noisy curve, often a "
                            "learning rate on the high side or a small batch.")
        ex.next_steps.append("A larger effective batch (gradient accumulation) smooths it.")
    return ex


def _still_falling(losses: list[float]) -> bool:
    """Whether the last third still trends down by more than 2 % of its level."""
    third = losses[-max(3, len(losses) // 3):]
    half = len(third) // 2
    early, late = _mean(third[:half]), _mean(third[half:])
    return early > 0 and (early - late) / early > 0.02


def _explain_dpo(ex: Explanation, records: list[dict[str, Any]], first: float, last: float) -> Explanation:
    accuracies = _finite([r.get("accuracy") for r in records if "accuracy" in r])
    rewards = _finite([r.get("reward") for r in records if "reward" in r])
    acc = _mean(accuracies[-max(1, len(accuracies) // 4):]) if accuracies else None
    if acc is not None:
        ex.figures["reward_accuracy"] = round(acc, 3)
        ex.sentences.append(f"At the end the model prefers the chosen answer over the rejected one in "
                            f"{acc:.0%} of pairs (chance is 50 %).")
    if rewards:
        ex.figures["last_reward_margin"] = round(rewards[-1], 4)
    near_chance = abs(last - LN2) < 0.03 and (acc is None or acc <= 0.55)
    if near_chance:
        ex.verdict = "not_learning"
        ex.sentences.append(f"The DPO loss stayed at ln 2 ≈ {LN2:.3f}, the value of a model that cannot "
                            "tell the answers apart: it did not learn the preferences.")
        ex.next_steps.append("Use more pairs or more steps (the planner asks for at least 100 optimizer "
                             "steps), a higher learning rate, or pairs whose answers really differ.")
    elif last < first and (acc or 0) > 0.6:
        falling = _still_falling(_finite([r.get("loss") for r in records]))
        ex.verdict = "improving" if falling else "converged"
        ex.sentences.append("The loss fell below ln 2 and the reward accuracy rose: it learned the "
                            "preferences.")
        ex.next_steps.append("Check in the arena that it also answers better, not only differently.")
    else:
        ex.verdict = "improving" if last < first else "diverging"
        ex.sentences.append("The preference signal is weak so far.")
        ex.next_steps.append("Train longer or on more pairs.")
    return ex
