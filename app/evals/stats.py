"""Interval maths for eval scores: a pass rate or a win rate with its 95% Wilson interval.

Wilson rather than the normal approximation because eval suites are small (ten prompts is
common) and rates near 0 or 1 are the interesting ones; the normal interval leaves [0, 1]
there and is far too narrow.
"""

from __future__ import annotations

import math
from typing import Any

Z95 = 1.959963984540054  # the two-sided 95% normal quantile


def wilson(successes: float, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of ``successes`` out of ``n`` (a half success allowed, for
    ties); (0.0, 1.0) when there is nothing to go on."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def rate(successes: float, n: int) -> dict[str, Any]:
    """A rate with its interval, JSON-ready."""
    low, high = wilson(successes, n)
    return {"successes": successes, "n": n, "rate": successes / n if n else None, "low": low, "high": high}


def win_rate(choices: list[str], consistent: list[bool]) -> dict[str, Any]:
    """Candidate ("a") against baseline ("b") over judged pairs: wins count 1, ties half, with
    the 95% interval, and how often the judge's verdict survived swapping the answers."""
    wins, ties = choices.count("a"), choices.count("tie")
    out = rate(wins + 0.5 * ties, len(choices))
    out.update(wins=wins, losses=choices.count("b"), ties=ties, ties_count_half=True,
               position_consistency=sum(consistent) / len(consistent) if consistent else None)
    return out
