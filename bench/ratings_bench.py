"""Time a Bradley–Terry fit plus 200 clustered bootstrap rounds on 100k simulated votes, 20 models."""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a plain script from anywhere: make the repo root importable before importing app.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import time  # noqa: E402

import numpy as np  # noqa: E402

from app.arena.ratings import VoteTable, leaderboard  # noqa: E402

N_VOTES = 100_000
N_MODELS = 20
N_PROMPTS = 25_000
ROUNDS = 200
TARGET_S = 2.0


def simulate(seed: int = 0) -> VoteTable:
    rng = np.random.default_rng(seed)
    true = rng.normal(1000, 150, N_MODELS)
    a = rng.integers(0, N_MODELS, N_VOTES)
    b = (a + rng.integers(1, N_MODELS, N_VOTES)) % N_MODELS  # never a self-battle
    p = 1.0 / (1.0 + 10 ** ((true[b] - true[a]) / 400))
    # Ties with probability p(1-p) and wins split so the expected score stays p.
    u = rng.random(N_VOTES)
    tie = p * (1 - p)
    outcome = np.where(u < p - tie / 2, 1.0, np.where(u < p + tie / 2, 0.5, 0.0))
    return VoteTable(
        model_a=a, model_b=b, outcome=outcome, prompt_id=rng.integers(0, N_PROMPTS, N_VOTES),
        names=[f"model-{k:02d}" for k in range(N_MODELS)],
    )


def main() -> None:
    table = simulate()
    leaderboard(table, rounds=2)  # warm-up: imports and first-call overheads are not the maths
    start = time.perf_counter()
    board = leaderboard(table, rounds=ROUNDS, seed=1)
    elapsed = time.perf_counter() - start
    assert len(board) == N_MODELS
    print(
        f"bt+{ROUNDS} bootstraps on {N_VOTES} votes, {N_MODELS} models: "
        f"{elapsed:.2f} s (target <= {TARGET_S:g} s)"
    )


if __name__ == "__main__":
    main()
